//! Fresh single-use sandboxes, self-contained runtimes and language evaluators.

pub mod sandbox;
mod sys;
