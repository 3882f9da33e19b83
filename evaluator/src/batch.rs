//! One program, many inputs: the components run once per input, each run an
//! evaluation of its own in a fresh sandbox (a pre-started one when the caller has
//! one), several at once, each run's outcome, output and match reported as it ends.
//!
//! Runs share nothing: every run is [`evaluate_in`] with its own sandbox, its own
//! stdin and files; what is shared is only what never runs snippet code (the warm
//! interpreter of a zygote the sandboxes are forked from).
//!
//! Java (a JShell launch) compiles once: a compile pass (the driver in record mode, in
//! a fresh sandbox with the request's limits) compiles the components without running
//! any of them, and the supervisor records the program ([`lang::jshell::record`]); then
//! every input is a replay of that program in a fresh cold sandbox of its own (the
//! driver in replay mode: a JVM loading the recorded classes and invoking the recorded
//! snippets, no JShell, no javac). Each run's outputs begin with the compile pass's
//! (its diagnostics). If the compile pass fails (setup, a denied class, a limit, a
//! program that does not check), every run reports its outcome and outputs and nothing
//! runs: the program is the same for every input, so each whole JShell would fail the
//! same way. Replays only ever load classes: a redeclared method or class is replaced
//! with newly named classes, as stock JShell does where its engine cannot redefine.
//!
//! Where a replay differs from a whole JShell per input: a redeclared class starts with
//! fresh static state (a whole JShell redefines it in place and keeps it); a batch the
//! access list denies stops every run (a whole JShell runs the other statements); an
//! unresolved reference's message does not name the snippet; and the heap holds the
//! snippet alone (no JShell or javac beside it).

use futures_util::stream::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::compile_host::CompileHost;
use crate::evaluate::{drive, evaluate_in, replay_run, EvaluateError, RequestData, Run};
use crate::events::{Bounds, Translator};
use crate::lang::jshell::record::{Failure, Program as Recorded, Recorder};
use crate::lang::jshell::vetting::Verdicts;
use crate::lang::{self, EvaluatorKind, Launch};
use std::sync::Arc;

use crate::sandbox::files::InputFile;
use crate::sandbox::zygote::Zygote;
use crate::sandbox::{Limits, Outcome, Sandboxes, Status, Waiting};
use crate::snippet::{Component, Output};

/// One input of a many-input request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    pub stdin: Vec<u8>,
    /// Put in `/work` after the request's own files.
    pub files: Vec<InputFile>,
    /// Compared with the run's stdout when given.
    pub expected: Option<Vec<u8>>,
}

/// How a run's stdout is compared with its expected output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MatchMode {
    #[default]
    Exact,
    /// Whitespace at the end of each line, and blank lines at the end, do not count.
    IgnoreTrailingWhitespace,
}

/// Whether `actual` matches `expected` under `mode`.
pub fn output_matches(mode: MatchMode, expected: &[u8], actual: &[u8]) -> bool {
    match mode {
        MatchMode::Exact => expected == actual,
        MatchMode::IgnoreTrailingWhitespace => {
            let lines = |b: &[u8]| -> Vec<Vec<u8>> {
                let mut lines: Vec<Vec<u8>> = b
                    .split(|&c| c == b'\n')
                    .map(|l| l.trim_ascii_end().to_vec())
                    .collect();
                while lines.last().is_some_and(|l| l.is_empty()) {
                    lines.pop();
                }
                lines
            };
            lines(expected) == lines(actual)
        }
    }
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The input's index in the request.
    pub index: usize,
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Everything else the driver reported, in order: components starting,
    /// diagnostics, exceptions, violations, values, problems of its own.
    pub outputs: Vec<Output>,
    /// `None` when the input had no expected output; `Some(false)` also when the run
    /// did not end well (a status other than ok, stdout cut at its limit, a
    /// diagnostic, exception, violation or driver problem), whatever it printed.
    pub matched: Option<bool>,
}

/// What the runs share: the program, its limits and the request's own files.
#[derive(Debug)]
pub struct Program<'a> {
    pub launch: &'a Launch,
    pub components: &'a [Component],
    /// Each run's limits.
    pub limits: Limits,
    /// The request's files (put before each input's), files to return, datasets.
    pub data: RequestData,
    pub mode: MatchMode,
}

/// Runs `program` once per input, at most `parallel` at a time, reporting every run
/// on `done` as it ends. Stops starting runs when `cancel` fires or `done` is gone; a
/// run already going is cancelled with it.
///
/// Each of the `parallel` workers asks `lane` for a lane of its own (see
/// `sandbox::zygote`) and runs its inputs one after another, each in a sandbox the
/// lane forks; without a lane (none given, one that fails, a request with datasets,
/// which a lane's root does not have) each input gets the sandbox `take` gives it, or
/// a fresh cold one. A JShell program is compiled once and replayed per input (see
/// the module): by `host` when given (a JShell pool's compile host, whose replays
/// `take` gives), else by a compile pass of its own with each replay in a fresh
/// sandbox; `lane` is not called for it.
#[allow(clippy::too_many_arguments)]
pub async fn run_inputs<F, Fut, L, LFut>(
    sandboxes: &Sandboxes,
    program: &Program<'_>,
    inputs: Vec<Input>,
    parallel: usize,
    take: F,
    lane: L,
    host: Option<&CompileHost>,
    done: mpsc::Sender<RunReport>,
    cancel: CancellationToken,
) -> Result<(), EvaluateError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Waiting>>,
    L: Fn() -> LFut,
    LFut: std::future::Future<Output = Option<Arc<Zygote>>>,
{
    if program.launch.kind == EvaluatorKind::Jshell {
        return run_replays(
            sandboxes, program, inputs, parallel, host, take, done, cancel,
        )
        .await;
    }
    let workers = parallel.max(1).min(inputs.len());
    let next = std::sync::Mutex::new(inputs.into_iter().enumerate());
    let pooled = program.data.datasets.is_empty();
    let worker = || async {
        let mut own = if pooled { lane().await } else { None };
        loop {
            if cancel.is_cancelled() || done.is_closed() {
                break;
            }
            let Some((index, input)) = next.lock().unwrap_or_else(|p| p.into_inner()).next() else {
                break;
            };
            let waiting = match &own {
                Some(l) => match sandboxes.start_forked(l, &cancel).await {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::warn!(
                            error = &e as &dyn std::error::Error,
                            "a lane failed; its inputs go on in sandboxes of their own"
                        );
                        own = None;
                        None
                    }
                },
                None => None,
            };
            let waiting = match waiting {
                Some(w) => Some(w),
                None if pooled => take().await,
                None => None,
            };
            let report = run_one(
                sandboxes,
                program,
                index,
                input,
                waiting,
                cancel.child_token(),
            )
            .await?;
            if done.send(report).await.is_err() {
                cancel.cancel();
            }
        }
        // Gone once its last sandbox is (each holds it).
        drop(own);
        Ok::<(), EvaluateError>(())
    };
    let results = futures_util::future::join_all((0..workers).map(|_| worker())).await;
    results.into_iter().collect()
}

async fn run_one(
    sandboxes: &Sandboxes,
    program: &Program<'_>,
    index: usize,
    mut input: Input,
    waiting: Option<Waiting>,
    cancel: CancellationToken,
) -> Result<RunReport, EvaluateError> {
    let mut data = program.data.clone();
    data.files.put.extend(std::mem::take(&mut input.files));
    let (tx, rx) = mpsc::channel::<Output>(64);
    let run = evaluate_in(
        sandboxes,
        waiting,
        program.launch,
        program.components,
        std::mem::take(&mut input.stdin),
        program.limits.clone(),
        data,
        tx,
        cancel,
    );
    let (outcome, (stdout, stderr, outputs)) = tokio::join!(run, collect(rx));
    let outcome = outcome?;
    Ok(report(
        program, index, &input, outcome, stdout, stderr, outputs,
    ))
}

/// A run's printed bytes and its other outputs, as they come.
async fn collect(mut rx: mpsc::Receiver<Output>) -> (Vec<u8>, Vec<u8>, Vec<Output>) {
    let (mut stdout, mut stderr, mut outputs) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(o) = rx.recv().await {
        match o {
            Output::Stdout { data, .. } => stdout.extend(data),
            Output::Stderr { data, .. } => stderr.extend(data),
            // Kept: which component was running when a limit hit is told by the last.
            other => outputs.push(other),
        }
    }
    (stdout, stderr, outputs)
}

fn report(
    program: &Program<'_>,
    index: usize,
    input: &Input,
    outcome: Outcome,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    outputs: Vec<Output>,
) -> RunReport {
    // Only a run that ended well can have produced its expected output: one stopped
    // by a limit, cut at the output limit, or that failed to compile, raised or was
    // denied, did not, whatever it printed first.
    let ended_well = outcome.status == crate::sandbox::Status::Ok
        && !outcome.stdout_truncated
        && !outputs.iter().any(|o| {
            matches!(
                o,
                Output::Diagnostic { .. }
                    | Output::Exception { .. }
                    | Output::Violation { .. }
                    | Output::Internal { .. }
            )
        });
    let matched = input
        .expected
        .as_deref()
        .map(|e| ended_well && output_matches(program.mode, e, &stdout));
    RunReport {
        index,
        outcome,
        stdout,
        stderr,
        outputs,
        matched,
    }
}

/// What a JShell program's compile pass left for its runs.
enum Compiled {
    /// The program, and the compile pass's outputs (diagnostics) every run begins with.
    Program(Recorded, Vec<Output>),
    /// The compile pass failed: every run reports this outcome and these outputs.
    Failed(Outcome, Vec<Output>),
}

/// A JShell program: compiled once, replayed per input (see the module).
#[allow(clippy::too_many_arguments)]
async fn run_replays<F, Fut>(
    sandboxes: &Sandboxes,
    program: &Program<'_>,
    inputs: Vec<Input>,
    parallel: usize,
    host: Option<&CompileHost>,
    take: F,
    done: mpsc::Sender<RunReport>,
    cancel: CancellationToken,
) -> Result<(), EvaluateError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Waiting>>,
{
    let hosted = match host {
        Some(host) => match host
            .compile(program.launch, program.components, &program.limits, &cancel)
            .await
        {
            Ok((recorded, outputs)) => Some(Compiled::Program(recorded, outputs)),
            Err(e) => {
                tracing::debug!(error = %e, "no program from the compile host; a compile pass of its own");
                None
            }
        },
        None => None,
    };
    // Replays started ahead are the host's pool's.
    let pooled = hosted.is_some() && program.data.datasets.is_empty();
    let compiled = match hosted {
        Some(c) => c,
        None => compile(sandboxes, program, cancel.child_token()).await?,
    };
    let take = &take;
    let compiled = &compiled;
    let done_ref = &done;
    let cancel_ref = &cancel;
    let mut runs = futures_util::stream::iter(inputs.into_iter().enumerate())
        .map(|(index, input)| async move {
            if cancel_ref.is_cancelled() || done_ref.is_closed() {
                return;
            }
            let report = match compiled {
                Compiled::Failed(outcome, outputs) => report(
                    program,
                    index,
                    &input,
                    outcome.clone(),
                    Vec::new(),
                    Vec::new(),
                    outputs.clone(),
                ),
                Compiled::Program(recorded, outputs) => {
                    let waiting = if pooled { take().await } else { None };
                    replay(
                        sandboxes,
                        program,
                        recorded,
                        outputs,
                        index,
                        input,
                        waiting,
                        cancel_ref.child_token(),
                    )
                    .await
                }
            };
            if done_ref.send(report).await.is_err() {
                cancel_ref.cancel();
            }
        })
        .buffer_unordered(parallel.max(1));
    while runs.next().await.is_some() {}
    Ok(())
}

/// The compile pass: the components compiled in record mode, in a fresh sandbox with
/// the request's limits, and the program recorded from what it says.
async fn compile(
    sandboxes: &Sandboxes,
    program: &Program<'_>,
    cancel: CancellationToken,
) -> Result<Compiled, EvaluateError> {
    let components = program.components;
    let job = lang::jshell::record_job(program.launch, components, program.limits.clone())?;
    let (mut recorder, verdicts) = Recorder::new(program.launch, components);
    let bounds = Bounds::for_request(components, &program.limits);
    let mut translator = Translator::new(components, bounds, true).recording();
    let (tx, rx) = mpsc::channel::<Output>(64);
    let run = drive(
        sandboxes,
        Run::Cold(Box::new(job)),
        &mut translator,
        &mut recorder,
        Some(verdicts),
        tx,
        cancel,
    );
    let (mut outcome, (_, _, mut outputs)) = tokio::join!(run, collect(rx));
    // Nothing of the snippet ran: an event that did not check is the driver's own
    // failure, and a program missing a step is no program.
    let d = translator.drops();
    let garbled = d.unreadable > 0
        || d.overlong > 0
        || d.foreign > 0
        || d.class_batches > 0
        || d.verdicts > 0
        || d.over_budget;
    let ended = outcome.status == Status::Ok && outcome.exit_code == Some(0);
    match recorder.finish() {
        Ok(recorded) if ended && !garbled => Ok(Compiled::Program(recorded, outputs)),
        Ok(_) | Err(Failure::Denied) => Ok(Compiled::Failed(outcome, outputs)),
        Err(Failure::Invalid(e)) => {
            outputs.push(Output::Internal {
                component: translator.running().to_owned(),
                message: format!("the compile pass failed: {e}"),
            });
            if outcome.status == Status::Ok {
                outcome.status = Status::ExitedNonZero;
            }
            Ok(Compiled::Failed(outcome, outputs))
        }
    }
}

/// One input's run: the recorded program replayed in `waiting` (a replay started
/// ahead) or a fresh sandbox with the input's stdin and files, its outputs after the
/// compile pass's.
#[allow(clippy::too_many_arguments)]
async fn replay(
    sandboxes: &Sandboxes,
    program: &Program<'_>,
    recorded: &Recorded,
    compiled: &[Output],
    index: usize,
    input: Input,
    waiting: Option<Waiting>,
    cancel: CancellationToken,
) -> RunReport {
    let mut data = program.data.clone();
    data.files.put.extend(input.files.iter().cloned());
    let run = replay_run(
        program.launch,
        recorded,
        &input.stdin,
        program.limits.clone(),
        data,
        waiting,
    );
    let components = program.components;
    let mut translator = Translator::new(
        components,
        Bounds::for_request(components, &program.limits),
        false,
    );
    let (tx, rx) = mpsc::channel::<Output>(64);
    // Nothing is asked in replay mode.
    let mut no_verdicts: Option<Verdicts> = None;
    let run = drive(
        sandboxes,
        run,
        &mut translator,
        &mut no_verdicts,
        None,
        tx,
        cancel,
    );
    let (outcome, (stdout, stderr, outputs)) = tokio::join!(run, collect(rx));
    let mut all = compiled.to_vec();
    all.extend(outputs);
    report(program, index, &input, outcome, stdout, stderr, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_match_exactly_or_up_to_trailing_whitespace() {
        use MatchMode::*;
        assert!(output_matches(Exact, b"1 2\n", b"1 2\n"));
        assert!(!output_matches(Exact, b"1 2\n", b"1 2"));
        assert!(!output_matches(Exact, b"1 2\n", b"1 2 \n"));
        let loose = IgnoreTrailingWhitespace;
        assert!(output_matches(loose, b"1 2\n3", b"1 2  \n3\n\n"));
        assert!(output_matches(loose, b"", b"\n \n"));
        assert!(output_matches(loose, b"a\r\n", b"a"));
        assert!(!output_matches(loose, b" 1", b"1"));
        assert!(!output_matches(loose, b"1\n\n2", b"1\n2"));
        assert!(!output_matches(loose, b"12", b"1 2"));
    }
}
