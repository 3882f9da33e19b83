//! Shell-like runtimes: `program [args] /proc/self/fd/3` runs the code, all components
//! joined, as one script; no driver, so no events.

use super::{Language, Launch};
use crate::sandbox::Limits;

/// Where the payload finds its input (the code) inside the sandbox.
const INPUT_PATH: &str = "/proc/self/fd/3";

/// The command evaluator kind.
#[derive(Debug)]
pub(super) struct Command;

impl Language for Command {
    // The code travels as the input memfd, never in argv (which caps one argument at
    // 128 KiB).
    fn args(&self, _launch: &Launch, _limits: &Limits) -> Vec<String> {
        vec![INPUT_PATH.into()]
    }

    fn smoke_test(&self) -> (&'static str, &'static str) {
        ("echo $((1 + 1))", "2\n")
    }
}
