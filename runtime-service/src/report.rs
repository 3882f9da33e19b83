//! How the binary reports: its exit codes, errors on one line, and where output and
//! logs go (plain text, or JSON lines with `log.format = json`).

use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code for a bad command line or configuration (sysexits EX_USAGE).
pub const EX_USAGE: u8 = 64;
/// Exit code when the node cannot be reached or cannot take the evaluation now
/// (sysexits EX_UNAVAILABLE).
pub const EX_UNAVAILABLE: u8 = 69;
/// Exit code when the sandbox could not be set up (sysexits EX_SOFTWARE).
pub const EX_SOFTWARE: u8 = 70;
/// Exit code when the open-files limit is too low (sysexits EX_OSERR).
pub const EX_NOFILE: u8 = 71;
/// Exit code after an interrupt (Ctrl-C twice).
pub const EX_INTERRUPTED: i32 = 130;

/// Target of the lines a command prints on stdout whatever the log level (the
/// listening line, `installed …`, `runtime … works`): with `log.format = json` they are
/// JSON events like every log line, still on stdout.
pub const STDOUT_TARGET: &str = "jsheets_runtime::stdout";
/// The same for what a command always reports on stderr (build progress, an
/// evaluation's status line, a fatal error).
pub const REPORT_TARGET: &str = "jsheets_runtime::report";

static JSON_OUTPUT: AtomicBool = AtomicBool::new(false);

/// An error and its causes on one line (the workspace's one formatting of a chain).
pub use evaluator::error::error_chain;

/// Whether output is JSON lines (`log.format = json`): then nothing is printed as plain
/// text, every line on stdout and stderr is a JSON object.
pub fn json_output() -> bool {
    JSON_OUTPUT.load(Ordering::Relaxed)
}

/// Sets up logging with `filter` (tracing syntax), as text or JSON; the first call
/// wins.
pub fn init_tracing(filter: &str, json: bool) {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let mut filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Printed whatever the level: these are output, not diagnostics.
    for target in [STDOUT_TARGET, REPORT_TARGET] {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    let writer = std::io::stdout
        .with_filter(|m: &tracing::Metadata<'_>| m.target() == STDOUT_TARGET)
        .or_else(std::io::stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let set = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if set.is_ok() {
        JSON_OUTPUT.store(json, Ordering::Relaxed);
    }
}

/// A line of a command's output on stdout: as is, or a JSON event.
pub fn stdout(line: &str) {
    if json_output() {
        tracing::info!(target: STDOUT_TARGET, "{line}");
    } else {
        println!("{line}");
    }
}

/// A line a command reports on stderr: as is, or a JSON event.
pub fn stderr(line: &str) {
    if json_output() {
        tracing::info!(target: REPORT_TARGET, "{line}");
    } else {
        eprintln!("{line}");
    }
}

/// A warning about the configuration: `warning: …`, or a JSON event.
pub fn warning(warning: &str) {
    if json_output() {
        tracing::warn!(target: REPORT_TARGET, "{warning}");
    } else {
        eprintln!("warning: {warning}");
    }
}

/// The line a failing command ends with: `jsheets-runtime: …`, or a JSON event.
pub fn failure(message: &str) {
    if json_output() {
        tracing::error!(target: REPORT_TARGET, "{message}");
    } else {
        eprintln!("jsheets-runtime: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_joins_every_cause() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
