//! Fresh single-use sandboxes, self-contained runtimes and language evaluators.

pub mod access;
pub mod batch;
pub mod classfile;
pub mod compile_host;
pub mod error;
pub mod evaluate;
pub mod events;
mod fsutil;
pub mod install;
pub mod lang;
pub mod pool;
pub mod runtime;
pub mod sandbox;
pub mod snippet;
mod sys;
