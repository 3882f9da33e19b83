//! Python: `python -I -c BOOTSTRAP` reads the driver and the snippet as JSON documents
//! from its input, and the driver reports on the event channel.
//!
//! The first document carries the driver's source, its bounds and the access list
//! (as rules the driver's audit hook applies); the components follow in the same
//! document, or in a second one for a sandbox that waited for its request.

use super::{Input, JobError, Language, Launch};
use crate::access::AccessList;
use crate::events::{MAX_TRACEBACK_CHARS, MAX_VALUE_CHARS};
use crate::sandbox::Limits;
use crate::snippet::Component;

/// The Python driver, run inside the sandbox by `python -I -c BOOTSTRAP`.
const DRIVER: &str = include_str!("../drivers/python_driver.py");
const BOOTSTRAP: &str = include_str!("../drivers/python_bootstrap.txt");

/// The Python evaluator kind.
#[derive(Debug)]
pub(super) struct Python;

impl Language for Python {
    fn events(&self) -> bool {
        true
    }

    fn args(&self, _launch: &Launch, _limits: &Limits) -> Vec<String> {
        vec!["-I".into(), "-c".into(), BOOTSTRAP.trim().into()]
    }

    fn input(
        &self,
        launch: &Launch,
        components: &[Component],
        stdin: Vec<u8>,
    ) -> Result<Input, JobError> {
        let mut doc = preface(launch, false);
        doc["components"] = components_json(components);
        Ok(Input {
            input: serde_json::to_vec(&doc).map_err(JobError::Encode)?,
            stdin,
        })
    }

    fn preface(&self, launch: &Launch) -> Result<Vec<u8>, JobError> {
        let mut line = serde_json::to_vec(&preface(launch, true)).map_err(JobError::Encode)?;
        line.push(b'\n');
        Ok(line)
    }

    fn zygote_preface(&self, launch: &Launch) -> Result<Option<Vec<u8>>, JobError> {
        let mut doc = preface(launch, true);
        doc["zygote"] = serde_json::Value::Bool(true);
        let mut line = serde_json::to_vec(&doc).map_err(JobError::Encode)?;
        line.push(b'\n');
        Ok(Some(line))
    }

    fn rest(
        &self,
        _launch: &Launch,
        components: &[Component],
        stdin: Vec<u8>,
    ) -> Result<Input, JobError> {
        let doc = serde_json::json!({ "components": components_json(components) });
        Ok(Input {
            input: serde_json::to_vec(&doc).map_err(JobError::Encode)?,
            stdin,
        })
    }

    fn smoke_test(&self) -> (&'static str, &'static str) {
        ("print(1 + 1)", "2\n")
    }
}

/// The driver's first document: everything but the components.
fn preface(launch: &Launch, deferred: bool) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "driver": DRIVER,
        "max_value_chars": MAX_VALUE_CHARS,
        "max_traceback_chars": MAX_TRACEBACK_CHARS,
    });
    if let Some(list) = &launch.access_list {
        doc["access"] = rules(list);
    }
    if deferred {
        doc["deferred"] = serde_json::Value::Bool(true);
    }
    doc
}

fn components_json(components: &[Component]) -> serde_json::Value {
    serde_json::Value::Array(
        components
            .iter()
            .map(|c| serde_json::json!({"id": c.id, "code": c.code}))
            .collect(),
    )
}

/// A list's rules as the driver takes them: `[segments, allow]` in file order.
fn rules(list: &AccessList) -> serde_json::Value {
    serde_json::json!({
        "list": list.name(),
        "rules": list
            .rules()
            .iter()
            .filter(|r| r.params().is_none() && r.return_type().is_none())
            .map(|r| serde_json::json!([r.segments(), !r.is_deny()]))
            .collect::<Vec<_>>(),
    })
}
