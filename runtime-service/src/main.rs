//! `jsheets-runtime`: the runtime node of a jsheets-style snippet evaluation service.
#![forbid(unsafe_code)]

mod bench;
mod bench_node;
mod bench_service;
mod cli;
mod config;
mod install;
mod metrics;
mod registration;
mod report;
mod sandboxes;
mod service;
mod soak;
mod tls;

use std::process::ExitCode;

fn main() -> ExitCode {
    // The helper must run before anything starts a thread: it forks.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == sandboxes::SANDBOX_INIT)
    {
        evaluator::sandbox::helper_main();
    }
    cli::main()
}
