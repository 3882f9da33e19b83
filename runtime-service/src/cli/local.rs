//! What the local commands share: the installed runtimes with their problems
//! logged, and an evaluation in a fresh sandbox printed as it streams (`run`,
//! `runtime test`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use evaluator::access::AccessList;
use evaluator::evaluate::RequestData;
use evaluator::runtime::{Registry, Runtime};
use evaluator::sandbox::{Limits, Outcome, Sandboxes};
use evaluator::snippet::{Component, Output};
use tokio_util::sync::CancellationToken;

use crate::report::{self, json_output, REPORT_TARGET, STDOUT_TARGET};

/// The runtimes installed in `dir`; those that failed to load are logged.
pub fn load_registry(dir: &Path) -> Registry {
    let registry = Registry::load(dir);
    for problem in registry.problems() {
        tracing::warn!("runtime {} not loaded: {}", problem.dir_name, problem.error);
    }
    for warning in registry.warnings() {
        tracing::warn!("{warning}");
    }
    registry
}

/// Evaluates and prints everything as it streams; returns the outcome and whether the
/// snippet reported an error of its own (exception, diagnostic).
pub async fn evaluate_printing(
    sandboxes: &Sandboxes,
    runtime: &Runtime,
    access_list: Option<Arc<AccessList>>,
    components: Vec<Component>,
    stdin: Vec<u8>,
    limits: Limits,
    data: RequestData,
) -> Result<(Outcome, bool)> {
    let mut launch = runtime.launch();
    launch.access_list = access_list;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let cancel = CancellationToken::new();
    let ctrl_c = cancel.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.cancel();
        }
    });
    let printer = tokio::spawn(async move {
        let mut failed = false;
        let (mut out, mut err) = if json_output() {
            (Sink::json(true), Sink::json(false))
        } else {
            (
                Sink::Stdout(std::io::stdout()),
                Sink::Stderr(std::io::stderr()),
            )
        };
        while let Some(o) = rx.recv().await {
            match o {
                Output::Stdout { data, .. } => {
                    let _ = out.write_all(&data);
                    let _ = out.flush();
                }
                Output::Stderr { data, .. } => {
                    let _ = err.write_all(&data);
                    let _ = err.flush();
                }
                // The empty value of a statement or a void call: jshell shows nothing.
                Output::Value { text, .. } if text.is_empty() => {}
                Output::Value { text, .. } => {
                    let _ = writeln!(out, "{text}");
                }
                Output::Diagnostic {
                    component,
                    kind,
                    message,
                    line,
                    column,
                    ..
                } => {
                    failed = true;
                    let _ = writeln!(err, "{component}:{line}:{column}: {kind}: {message}");
                }
                Output::Exception { traceback, .. } => {
                    failed = true;
                    let _ = write!(err, "{traceback}");
                }
                Output::Started { .. } => {}
                Output::Violation {
                    component, message, ..
                } => {
                    failed = true;
                    let _ = writeln!(err, "{component}: sandbox: {message}");
                }
                Output::Internal { component, message } => {
                    failed = true;
                    let _ = writeln!(err, "{component}: internal error: {message}");
                }
            }
        }
        out.finish();
        err.finish();
        failed
    });
    let outcome = evaluator::evaluate::evaluate_in(
        sandboxes,
        None,
        &launch,
        &components,
        stdin,
        limits,
        data,
        tx,
        cancel,
    )
    .await?;
    watcher.abort();
    let failed = printer.await.unwrap_or(true);
    Ok((outcome, failed))
}

/// Where a snippet's output goes: stdout and stderr as they come, or with
/// `log.format = json` one JSON event per line.
enum Sink {
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
    Json { stdout: bool, pending: Vec<u8> },
}

impl Sink {
    fn json(stdout: bool) -> Sink {
        Sink::Json {
            stdout,
            pending: Vec::new(),
        }
    }

    fn emit(stdout: bool, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        if stdout {
            tracing::info!(target: STDOUT_TARGET, stream = "stdout", "{line}");
        } else {
            tracing::info!(target: REPORT_TARGET, stream = "stderr", "{line}");
        }
    }

    /// Emits a last line without its newline.
    fn finish(&mut self) {
        if let Sink::Json { stdout, pending } = self {
            if !pending.is_empty() {
                Sink::emit(*stdout, pending);
                pending.clear();
            }
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::Stderr(w) => w.write(buf),
            Sink::Json { stdout, pending } => {
                pending.extend_from_slice(buf);
                while let Some(at) = pending.iter().position(|&b| b == b'\n') {
                    let rest = pending.split_off(at + 1);
                    Sink::emit(*stdout, &pending[..at]);
                    *pending = rest;
                }
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::Stderr(w) => w.flush(),
            Sink::Json { .. } => Ok(()),
        }
    }
}

/// The status line of an evaluation, on stderr.
pub fn print_outcome(runtime: &Runtime, o: &Outcome) {
    let mut line = format!("status: {}", o.status);
    if let Some(code) = o.exit_code {
        line.push_str(&format!("  exit: {code}"));
    }
    if let Some(sig) = o.signal {
        line.push_str(&format!("  signal: {sig}"));
    }
    line.push_str(&format!(
        "  wall: {:.1} ms  cpu: {:.1} ms  peak memory: {:.1} MiB  runtime: {}@{}",
        o.wall_time.as_secs_f64() * 1e3,
        o.cpu_time.as_secs_f64() * 1e3,
        o.peak_memory as f64 / (1 << 20) as f64,
        runtime.name(),
        runtime.version(),
    ));
    if o.stdout_truncated || o.stderr_truncated {
        line.push_str("  (output truncated)");
    }
    if json_output() {
        tracing::info!(
            target: REPORT_TARGET,
            status = %o.status,
            exit_code = o.exit_code,
            signal = o.signal,
            wall_ms = o.wall_time.as_secs_f64() * 1e3,
            cpu_ms = o.cpu_time.as_secs_f64() * 1e3,
            peak_memory_bytes = o.peak_memory,
            runtime = %format!("{}@{}", runtime.name(), runtime.version()),
            "{line}"
        );
    } else {
        eprintln!("{line}");
    }
    if let Some(e) = &o.error {
        report::stderr(&format!("setup failed: {e}"));
    }
}
