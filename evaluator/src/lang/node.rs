//! Node: the code, all components joined, is read from the input (fd 3) and run as one
//! script; no driver, so no events.

use super::{Language, Launch};
use crate::sandbox::Limits;

/// The Node evaluator kind.
#[derive(Debug)]
pub(super) struct Node;

impl Language for Node {
    // The code travels as the input memfd, never in argv (which caps one argument at
    // 128 KiB).
    fn args(&self, _launch: &Launch, _limits: &Limits) -> Vec<String> {
        vec![
            "-e".into(),
            "require('vm').runInThisContext(require('fs').readFileSync(3, 'utf8'), { filename: 'snippet.js' })"
                .into(),
        ]
    }

    fn smoke_test(&self) -> (&'static str, &'static str) {
        ("console.log(1 + 1)", "2\n")
    }
}
