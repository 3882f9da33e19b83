//! Node: the code, all components joined, is read from the input (fd 3) and run as one
//! script; no driver, so no events.

use super::{joined, Input, JobError, Language, Launch};
use crate::sandbox::Limits;
use crate::snippet::Component;

/// The Node evaluator kind.
#[derive(Debug)]
pub(super) struct Node;

impl Language for Node {
    fn events(&self) -> bool {
        false
    }

    // The code travels as the input memfd, never in argv (which caps one argument at
    // 128 KiB).
    fn args(&self, _launch: &Launch, _limits: &Limits) -> Vec<String> {
        vec![
            "-e".into(),
            "require('vm').runInThisContext(require('fs').readFileSync(3, 'utf8'), { filename: 'snippet.js' })"
                .into(),
        ]
    }

    fn input(
        &self,
        _launch: &Launch,
        components: &[Component],
        stdin: Vec<u8>,
    ) -> Result<Input, JobError> {
        Ok(Input {
            input: joined(components).into_bytes(),
            stdin,
        })
    }

    // Node starts and reads its code from the pipe as it comes.
    fn preface(&self, _launch: &Launch) -> Result<Vec<u8>, JobError> {
        Ok(Vec::new())
    }

    fn rest(
        &self,
        launch: &Launch,
        components: &[Component],
        stdin: Vec<u8>,
    ) -> Result<Input, JobError> {
        self.input(launch, components, stdin)
    }

    fn smoke_test(&self) -> (&'static str, &'static str) {
        ("console.log(1 + 1)", "2\n")
    }
}
