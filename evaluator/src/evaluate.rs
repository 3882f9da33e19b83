//! One evaluation, start to end: a runtime's [`Launch`] and the request's components
//! become a job ([`crate::lang`]), the job runs in a sandbox (fresh, or one started
//! ahead of the request), the driver's events become per-component [`Output`]s
//! ([`crate::events`]), and the sandbox's outcome is the evaluation's.
//!
//! Components run in order in one sandbox and share state (jsheets semantics). The
//! driver inside the sandbox reports on fd 4 (JSON lines); the snippet can write there
//! too, so nothing it says is trusted: [`crate::events`] bounds, frames, parses and
//! checks it against the request, and reports what it dropped once.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{Bounds, Step, Translator};
use crate::lang::{self, JobError};
use crate::pool::Pool;
use crate::sandbox::files::Files;
use crate::sandbox::{DriverFacts, Event, Job, Limits, Outcome, Sandboxes, Waiting};

// The old paths of the snippet's types and of job building, kept until runtime-service
// imports them from `crate::snippet` and `crate::lang` (they double as this module's
// imports of them).
use crate::lang::Launch;
use crate::snippet::{Component, Output};

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Job(#[from] JobError),
}

/// What a request hands its sandbox besides code and stdin.
#[derive(Debug, Clone, Default)]
pub struct RequestData {
    /// Files put in `/work` before the code runs, and those taken back after.
    pub files: Files,
    /// Read-only datasets: the operator's directory and its name under `/data`.
    pub datasets: Vec<(std::path::PathBuf, String)>,
}

/// Runs `components` in a fresh sandbox of `launch`, streaming [`Output`]s.
pub async fn evaluate(
    sandboxes: &Sandboxes,
    launch: &Launch,
    components: &[Component],
    stdin: Vec<u8>,
    limits: Limits,
    out: mpsc::Sender<Output>,
    cancel: CancellationToken,
) -> Result<Outcome, EvaluateError> {
    evaluate_in(
        sandboxes,
        None,
        launch,
        components,
        stdin,
        limits,
        RequestData::default(),
        out,
        cancel,
    )
    .await
}

/// [`evaluate`] in `waiting` (a sandbox of `launch` started ahead by
/// [`lang::waiting_job`]) if given, else in a fresh cold one, with `data`. Datasets
/// are mounted as a sandbox is built, so a request with datasets never takes a
/// sandbox started ahead (it is destroyed, and a fresh one built).
#[allow(clippy::too_many_arguments)]
pub async fn evaluate_in(
    sandboxes: &Sandboxes,
    waiting: Option<Waiting>,
    launch: &Launch,
    components: &[Component],
    stdin: Vec<u8>,
    limits: Limits,
    data: RequestData,
    out: mpsc::Sender<Output>,
    cancel: CancellationToken,
) -> Result<Outcome, EvaluateError> {
    let waiting = waiting.filter(|_| data.datasets.is_empty());
    if components.is_empty() {
        return Err(JobError::Empty.into());
    }
    // Everything the sandbox says is held to bounds derived from this request.
    let bounds = Bounds::for_request(components, &limits);
    let run = match waiting {
        Some(w) => {
            let (input, stdin) = lang::waiting_input(launch, components, stdin)?;
            Run::Waiting(Box::new(Handoff {
                waiting: w,
                input,
                stdin,
                limits,
                files: data.files,
            }))
        }
        None => {
            let mut job = lang::job(launch, components, stdin, limits)?;
            job.files = data.files;
            job.datasets = data.datasets;
            Run::Cold(Box::new(job))
        }
    };
    // A driver that asks before it loads code (`lang::verdicts`) gets its verdicts on
    // its stdin.
    let (mut verdicts, verdict_rx) = match lang::verdicts(launch, components) {
        Some((verdicts, rx)) => (Some(verdicts), Some(rx)),
        None => (None, None),
    };
    let mut translator = Translator::new(components, bounds, verdicts.is_some());
    Ok(drive(
        sandboxes,
        run,
        &mut translator,
        &mut verdicts,
        verdict_rx,
        out,
        cancel,
    )
    .await)
}

/// How [`evaluate_pooled`] ran a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// In a sandbox of the pool's (started ahead, or forked for it).
    Pooled,
    /// Compiled by the pool's compile host, replayed in a sandbox of the pool's.
    Compiled,
    /// Compiled by the compile host, replayed in a fresh sandbox (the pool was empty).
    CompiledCold,
    /// In a fresh sandbox (no pool, an empty one, or the compile host gave no program).
    Cold,
}

/// [`evaluate_in`] with a sandbox from `pool` where it has one. A JShell pool with a
/// compile host (see [`crate::compile_host`]) compiles the request there and replays
/// the program in a sandbox of the pool's (a replay JVM started ahead), the compile's
/// diagnostics first; a request the host gives no program for (a denial, a compile
/// over its time, the host down or busy) runs as a whole JShell in a fresh sandbox,
/// exactly as without a pool.
#[allow(clippy::too_many_arguments)]
pub async fn evaluate_pooled(
    sandboxes: &Sandboxes,
    pool: Option<&Pool>,
    launch: &Launch,
    components: &[Component],
    stdin: Vec<u8>,
    limits: Limits,
    data: RequestData,
    out: mpsc::Sender<Output>,
    cancel: CancellationToken,
) -> Result<(Outcome, Path), EvaluateError> {
    if components.is_empty() {
        return Err(JobError::Empty.into());
    }
    // Datasets are mounted as a sandbox is built: never a pooled one.
    let waiting = match pool.filter(|_| data.datasets.is_empty()) {
        None => None,
        Some(pool) => match pool.compile_host() {
            None => pool.take_soon().await,
            Some(host) => {
                let began = std::time::Instant::now();
                match host.compile(launch, components, &limits, &cancel).await {
                    Ok(compiled) => {
                        let ran = replay_compiled(
                            sandboxes, pool, launch, components, compiled, began, stdin, limits,
                            data, out, cancel,
                        );
                        return Ok(ran.await);
                    }
                    // A whole JShell in a fresh sandbox: the pool's are replays.
                    Err(e) => {
                        tracing::debug!(error = %e, "no program from the compile host; a whole JShell runs");
                        None
                    }
                }
            }
        },
    };
    let path = if waiting.is_some() {
        Path::Pooled
    } else {
        Path::Cold
    };
    let outcome = evaluate_in(
        sandboxes, waiting, launch, components, stdin, limits, data, out, cancel,
    )
    .await?;
    Ok((outcome, path))
}

/// A request the compile host compiled (`compiled`: the program and the compile's
/// diagnostics, begun at `began`), replayed in a sandbox of `pool`'s if one is ready,
/// else in a fresh one.
#[allow(clippy::too_many_arguments)]
async fn replay_compiled(
    sandboxes: &Sandboxes,
    pool: &Pool,
    launch: &Launch,
    components: &[Component],
    (program, diagnostics): (lang::jshell::record::Program, Vec<Output>),
    began: std::time::Instant,
    stdin: Vec<u8>,
    mut limits: Limits,
    data: RequestData,
    out: mpsc::Sender<Output>,
    cancel: CancellationToken,
) -> (Outcome, Path) {
    tracing::debug!(
        compile_ms = began.elapsed().as_secs_f64() * 1e3,
        "compiled by the compile host"
    );
    // The compile counts against the request's wall time.
    limits.wall_time = limits.wall_time.saturating_sub(began.elapsed());
    let waiting = pool.take_soon().await;
    let path = if waiting.is_some() {
        Path::Compiled
    } else {
        Path::CompiledCold
    };
    for d in diagnostics {
        if out.send(d).await.is_err() {
            break;
        }
    }
    let bounds = Bounds::for_request(components, &limits);
    let run = replay_run(launch, &program, &stdin, limits, data, waiting);
    let mut translator = Translator::new(components, bounds, false);
    // Nothing is asked in replay mode: the classes were vetted as they were compiled.
    let mut no_verdicts: Option<lang::jshell::vetting::Verdicts> = None;
    let outcome = drive(
        sandboxes,
        run,
        &mut translator,
        &mut no_verdicts,
        None,
        out,
        cancel,
    )
    .await;
    (outcome, path)
}

/// A replay of `program` with `stdin` for the snippet: in `waiting` (a replay started
/// ahead) if given, else in a fresh sandbox with `data` (files, and datasets, which a
/// sandbox started ahead never has).
pub(crate) fn replay_run(
    launch: &Launch,
    program: &lang::jshell::record::Program,
    stdin: &[u8],
    limits: Limits,
    data: RequestData,
    waiting: Option<Waiting>,
) -> Run {
    match waiting.filter(|_| data.datasets.is_empty()) {
        Some(w) => Run::Waiting(Box::new(Handoff {
            input: lang::jshell::replay_rest(program, stdin),
            waiting: w,
            stdin: Vec::new(),
            limits,
            files: data.files,
        })),
        None => {
            let mut job = lang::jshell::replay_job(launch, program, stdin, limits);
            job.files = data.files;
            job.datasets = data.datasets;
            Run::Cold(Box::new(job))
        }
    }
}

/// What an evaluation does with the driver's steps (see [`Step`]).
pub(crate) trait Steps {
    fn step(&mut self, step: Step, translator: &mut Translator<'_>, outputs: &mut Vec<Output>);
}

/// A run's steps: outputs, and class batches vetted when a list applies.
impl Steps for Option<lang::jshell::vetting::Verdicts> {
    fn step(&mut self, step: Step, translator: &mut Translator<'_>, outputs: &mut Vec<Output>) {
        match step {
            Step::Output(o) => outputs.push(o),
            Step::Vet { seq, classes } => {
                if let Some(verdicts) = self.as_mut() {
                    verdicts.vet(seq, &classes, translator, outputs);
                }
            }
            Step::Deny { seq } => {
                if let Some(verdicts) = self {
                    verdicts.deny(seq, translator);
                }
            }
            // Only a recording driver's (the translator drops them from any other).
            Step::Invoke { .. } | Step::Lines { .. } => {}
        }
    }
}

/// A compile pass's steps: recorded (see [`lang::jshell::record`]).
impl Steps for lang::jshell::record::Recorder {
    fn step(&mut self, step: Step, translator: &mut Translator<'_>, outputs: &mut Vec<Output>) {
        lang::jshell::record::Recorder::step(self, step, translator, outputs);
    }
}

/// Runs `run` to its end: the driver's events through `translator` become outputs on
/// `out` and `steps` (answers on the payload's stdin through `more_stdin`), and the
/// sandbox's facts with the driver's the outcome.
pub(crate) async fn drive(
    sandboxes: &Sandboxes,
    run: Run,
    translator: &mut Translator<'_>,
    steps: &mut impl Steps,
    verdict_rx: Option<mpsc::Receiver<Vec<u8>>>,
    out: mpsc::Sender<Output>,
    cancel: CancellationToken,
) -> Outcome {
    let framing = translator.bounds().framing;
    // The queue holds a bounded number of bounded events.
    let (tx, mut rx) = mpsc::channel::<Event>(translator.bounds().queue);
    // Output reaches us on the pipes and, from writes inside a driver, as its events;
    // the per-stream cap counts both, and going over stops the sandbox.
    let stop = cancel.child_token();
    let stopper = stop.clone();
    let translator_ref = &mut *translator;
    let translate = async move {
        let translator = translator_ref;
        let mut outputs = Vec::new();
        while let Some(event) = rx.recv().await {
            if let Some(step) = translator.event(event) {
                steps.step(step, translator, &mut outputs);
            }
            if translator.output_exceeded() {
                stopper.cancel();
            }
            for o in outputs.drain(..) {
                if out.send(o).await.is_err() {
                    // The caller went away: dropping rx makes the sandbox cancel itself.
                    return;
                }
            }
        }
        // What was dropped, once.
        if let Some(report) = translator.finish() {
            let _ = out.send(report).await;
        }
    };
    let running = async move {
        match run {
            Run::Cold(job) => {
                sandboxes
                    .run_with_stdin(*job, framing, verdict_rx, tx, stop)
                    .await
            }
            Run::Waiting(waiting) => {
                let Handoff {
                    waiting: w,
                    input,
                    stdin,
                    limits,
                    files,
                } = *waiting;
                sandboxes
                    .run_waiting(
                        w, input, stdin, limits, framing, verdict_rx, tx, stop, files,
                    )
                    .await
            }
        }
    };
    let (finished, ()) = tokio::join!(running, translate);
    // What the driver's events showed goes to the one place a status is decided
    // (`sandbox::status`), which lets it only make the driver's own result worse.
    let mut outcome = finished.outcome(&DriverFacts {
        memory_limit: translator.memory_limit(),
        output_exceeded: translator.output_exceeded(),
        caller_cancelled: cancel.is_cancelled(),
    });
    // Output events count with the pipes.
    let ((stdout, stdout_truncated), (stderr, stderr_truncated)) = translator.output_counts();
    outcome.stdout_truncated |= stdout_truncated;
    outcome.stderr_truncated |= stderr_truncated;
    outcome.stdout_bytes = outcome.stdout_bytes.max(stdout);
    outcome.stderr_bytes = outcome.stderr_bytes.max(stderr);
    outcome
}

/// A sandbox to run: a fresh one for a job, or one started ahead.
pub(crate) enum Run {
    Cold(Box<Job>),
    Waiting(Box<Handoff>),
}

/// What a sandbox started ahead gets at hand-off.
pub(crate) struct Handoff {
    waiting: Waiting,
    input: Vec<u8>,
    stdin: Vec<u8>,
    limits: Limits,
    files: Files,
}
