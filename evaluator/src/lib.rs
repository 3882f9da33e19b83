//! Fresh single-use sandboxes, self-contained runtimes and language evaluators.

pub mod evaluate;
pub mod sandbox;
mod sys;
