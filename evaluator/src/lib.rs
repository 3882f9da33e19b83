//! Fresh single-use sandboxes, self-contained runtimes and language evaluators.

pub mod access;
pub mod builder;
pub mod classfile;
pub mod evaluate;
pub mod events;
pub mod lang;
pub mod pool;
pub mod runtime;
pub mod sandbox;
pub mod snippet;
mod sys;
