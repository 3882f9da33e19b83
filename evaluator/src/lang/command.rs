//! Shell-like runtimes: `program [args] /proc/self/fd/3` runs the code, all components
//! joined, as one script; no driver, so no events.

use super::{joined, Input, JobError, Language, Launch};
use crate::sandbox::Limits;
use crate::snippet::Component;

/// Where the payload finds its input (the code) inside the sandbox.
const INPUT_PATH: &str = "/proc/self/fd/3";

/// The command evaluator kind.
#[derive(Debug)]
pub(super) struct Command;

impl Language for Command {
    fn events(&self) -> bool {
        false
    }

    // The code travels as the input memfd, never in argv (which caps one argument at
    // 128 KiB).
    fn args(&self, _launch: &Launch, _limits: &Limits) -> Vec<String> {
        vec![INPUT_PATH.into()]
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

    // The interpreter starts and reads its code from the pipe as it comes.
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
        ("echo $((1 + 1))", "2\n")
    }
}
