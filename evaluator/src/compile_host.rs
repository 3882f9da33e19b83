//! The compile host of a JShell runtime: one warm JVM in a sandbox of its own, the
//! driver in serve mode, compiling requests one after another in record mode. Nothing
//! of a snippet runs in it: each job is compiled by a JShell of its own, every class
//! JShell would load is sent here, vetted and recorded (the request's access list),
//! never defined in the host's JVM, and each invocation is recorded instead of run
//! ([`lang::jshell::record`]). The program is then replayed in a fresh sandbox of the
//! request's own (a pooled replay JVM, see `pool`), which is where the snippet runs.
//!
//! What the host says is hostile input like any sandbox's: every job is read through
//! the request's own bounds, and a job that does not end cleanly (a denial, a program
//! that does not check, garbled or too many events, a compile over its time, the
//! host's death) is no program: the caller runs the request the classic way, a whole
//! JShell in a sandbox of its own. Anything that leaves the host in doubt (a job cut
//! off, a protocol error) kills it; it is started again in the background, and
//! requests meanwhile go the classic way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{Bounds, Translator};
use crate::lang::jshell::record::{Program, Recorder};
use crate::lang::{self, Launch};
use crate::sandbox::framing::Framing;
use crate::sandbox::{Event, Limits, Sandboxes};
use crate::snippet::{Component, Output};

/// The longest a job may compile in the warm host (a normal snippet takes tens of
/// milliseconds); longer, and the host is killed and the request runs the classic way,
/// with its own limits.
pub const MAX_COMPILE: Duration = Duration::from_secs(5);
/// The longest a request waits for the host while it compiles another's job.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_millis(500);
/// Jobs a host compiles before it is replaced (whatever a JVM accumulates over many
/// JShells stays bounded).
pub const MAX_JOBS: u64 = 5000;
/// The host's memory limit (its cgroup's; the JVM's heap is three fifths of it).
pub const HOST_MEMORY: u64 = 640 << 20;
/// A host's own time limits: it lives for many jobs, each timed on its own.
const A_YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest the host may take to get warm.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest line the host may write: a class batch of the largest request.
const HOST_LINE_BYTES: usize = 64 << 20;

/// Why a job gave no program (the caller runs the request the classic way).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the compile host is not running")]
    NotRunning,
    #[error("the compile host is busy")]
    Busy,
    #[error("the compile host ended")]
    Died,
    #[error("the compile took longer than {0:?}")]
    Timeout(Duration),
    #[error("the compile was cancelled")]
    Cancelled,
    #[error("the compile host said what a compile job does not: {0}")]
    Protocol(&'static str),
    #[error("the access list denied a class")]
    Denied,
    #[error("the recorded program does not check: {0}")]
    Invalid(String),
    #[error("the compile host did not get warm: {0}")]
    Start(String),
}

/// A running host.
struct Running {
    stdin: mpsc::Sender<Vec<u8>>,
    events: mpsc::Receiver<Event>,
    kill: CancellationToken,
    /// The sandbox's task: ends once the host's sandbox is gone.
    task: Option<tokio::task::JoinHandle<()>>,
    jobs: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Whatever ends a host's use ends the host: its sandbox is killed and removed.
        self.kill.cancel();
    }
}

struct Shared {
    sandboxes: Sandboxes,
    launch: Launch,
    limits: Limits,
    running: tokio::sync::Mutex<Option<Running>>,
    /// Set while a start is in flight.
    starting: std::sync::atomic::AtomicBool,
    /// Set while a host runs (between its start and its end being noticed).
    up: std::sync::atomic::AtomicBool,
    /// When the running host got up, and how many hosts in a row ended within a
    /// minute of that.
    last_start: std::sync::Mutex<Option<std::time::Instant>>,
    short_lives: std::sync::atomic::AtomicU32,
    stop: CancellationToken,
    compiled: AtomicU64,
    failed: AtomicU64,
    starts: AtomicU64,
}

/// A compile host; clones share it. Dropping the last clone ends it.
#[derive(Clone)]
pub struct CompileHost {
    shared: Arc<Shared>,
    _guard: Arc<tokio_util::sync::DropGuard>,
}

impl std::fmt::Debug for CompileHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileHost")
            .field("compiled", &self.compiled())
            .finish()
    }
}

/// Counters of a host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Jobs that gave a program.
    pub compiled: u64,
    /// Jobs that gave none (the request ran the classic way).
    pub failed: u64,
    /// Hosts started (the first, and every replacement).
    pub starts: u64,
}

impl CompileHost {
    /// A host for `launch` (a JShell runtime), started in the background; `limits` are
    /// its sandbox's (its memory limit is [`HOST_MEMORY`], its times unbounded).
    pub fn start(sandboxes: Sandboxes, launch: Launch, limits: Limits) -> CompileHost {
        let stop = CancellationToken::new();
        let limits = Limits {
            memory_bytes: HOST_MEMORY,
            wall_time: A_YEAR,
            cpu_time: A_YEAR,
            ..limits
        };
        let host = CompileHost {
            shared: Arc::new(Shared {
                sandboxes,
                launch,
                limits,
                running: tokio::sync::Mutex::new(None),
                starting: false.into(),
                up: false.into(),
                last_start: std::sync::Mutex::new(None),
                short_lives: 0.into(),
                stop: stop.clone(),
                compiled: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                starts: AtomicU64::new(0),
            }),
            _guard: Arc::new(stop.drop_guard()),
        };
        host.restart();
        host
    }

    pub fn stats(&self) -> HostStats {
        let s = &self.shared;
        HostStats {
            compiled: s.compiled.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            starts: s.starts.load(Ordering::Relaxed),
        }
    }

    fn compiled(&self) -> u64 {
        self.shared.compiled.load(Ordering::Relaxed)
    }

    /// Whether a host is up (not starting, not replaced).
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// Starts a host in the background unless one runs or is starting.
    fn restart(&self) {
        let s = &self.shared;
        if s.stop.is_cancelled() || s.starting.swap(true, Ordering::AcqRel) {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            s.starting.store(false, Ordering::Release);
            return;
        }
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut failures = 0u32;
            // A host that lived less than a minute was killed by its requests (a
            // compile over its time, too much output, its memory): each such end in a
            // row doubles the wait before the next start, up to a minute, so that
            // requests built to kill it cannot keep the node busy starting hosts.
            let wait = weak.upgrade().map_or(Duration::ZERO, |s| {
                let mut last = s.last_start.lock().unwrap_or_else(|p| p.into_inner());
                let short = last.is_some_and(|t| t.elapsed() < Duration::from_secs(60));
                let n = if short {
                    s.short_lives.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    s.short_lives.store(0, Ordering::Relaxed);
                    0
                };
                *last = None;
                restart_wait(n)
            });
            if !wait.is_zero() {
                let Some(stop) = weak.upgrade().map(|s| s.stop.clone()) else {
                    return;
                };
                tracing::warn!(
                    wait_ms = wait.as_millis() as u64,
                    "the compile host ended soon after its start again; waiting before the next"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {}
                }
            }
            loop {
                let Some(s) = weak.upgrade() else { return };
                if s.stop.is_cancelled() {
                    s.starting.store(false, Ordering::Release);
                    return;
                }
                s.starts.fetch_add(1, Ordering::Relaxed);
                match start(&s).await {
                    Ok(r) => {
                        *s.last_start.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(std::time::Instant::now());
                        *s.running.lock().await = Some(r);
                        s.up.store(true, Ordering::Release);
                        s.starting.store(false, Ordering::Release);
                        return;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 {
                            tracing::warn!(
                                error = &e as &dyn std::error::Error,
                                "starting the compile host; Java requests run the classic way until it runs"
                            );
                        }
                        let stop = s.stop.clone();
                        drop(s);
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500) * failures.min(60)) => {}
                            _ = stop.cancelled() => {}
                        }
                    }
                }
            }
        });
    }

    /// Compiles `components` for a request on `launch` (its access list) with the
    /// request's `limits` bounding what the host may say: the recorded program and the
    /// compile's outputs (its diagnostics), or why there is none.
    pub async fn compile(
        &self,
        launch: &Launch,
        components: &[Component],
        limits: &Limits,
        cancel: &CancellationToken,
    ) -> Result<(Program, Vec<Output>), HostError> {
        let s = &self.shared;
        let result = match tokio::time::timeout(MAX_QUEUE_WAIT, s.running.lock()).await {
            Err(_) => Err(HostError::Busy),
            Ok(mut running) => {
                let result = match running.as_mut() {
                    None => Err(HostError::NotRunning),
                    Some(r) => job(r, launch, components, limits, cancel).await,
                };
                // A job that did not end cleanly leaves the host in doubt: it goes.
                let spent = running.as_ref().is_some_and(|r| r.jobs >= MAX_JOBS);
                let doubtful = matches!(
                    result,
                    Err(HostError::Died
                        | HostError::Timeout(_)
                        | HostError::Cancelled
                        | HostError::Protocol(_))
                );
                if running.is_some() && (spent || doubtful) {
                    *running = None;
                    s.up.store(false, Ordering::Release);
                    drop(running);
                    self.restart();
                } else if running.is_none() {
                    drop(running);
                    self.restart();
                }
                result
            }
        };
        match &result {
            Ok(_) => s.compiled.fetch_add(1, Ordering::Relaxed),
            Err(_) => s.failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    /// Ends the host and waits until its sandbox is gone.
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        self.shared.up.store(false, Ordering::Release);
        let running = self.shared.running.lock().await.take();
        if let Some(mut r) = running {
            r.kill.cancel();
            if let Some(task) = r.task.take() {
                let _ = task.await;
            }
        }
    }
}

/// How long to wait before starting a host after `short_lives` hosts in a row ended
/// within a minute of their start: nothing after one (a request killed it), then
/// half a second, doubling up to a minute.
fn restart_wait(short_lives: u32) -> Duration {
    match short_lives {
        0 | 1 => Duration::ZERO,
        n => (Duration::from_millis(500) * 2u32.pow(n.min(9) - 2)).min(Duration::from_secs(60)),
    }
}

/// Starts a host and waits until it is warm.
async fn start(s: &Shared) -> Result<Running, HostError> {
    let job = lang::jshell::host_job(&s.launch, s.limits.clone());
    let (stdin, stdin_rx) = mpsc::channel::<Vec<u8>>(16);
    let (events_tx, events) = mpsc::channel::<Event>(64);
    let kill = s.stop.child_token();
    let framing = Framing {
        line_bytes: HOST_LINE_BYTES,
        channel_bytes: u64::MAX,
        lines: u64::MAX,
    };
    let sandboxes = s.sandboxes.clone();
    let killed = kill.clone();
    let task = tokio::spawn(async move {
        sandboxes
            .run_with_stdin(job, framing, Some(stdin_rx), events_tx, killed)
            .await;
    });
    let mut running = Running {
        stdin,
        events,
        kill,
        task: Some(task),
        jobs: 0,
    };
    let ready = async {
        loop {
            match running.events.recv().await {
                None => return Err(HostError::Start("it ended".into())),
                Some(Event::Driver(line)) if line == b"{\"event\":\"ready\"}" => return Ok(()),
                Some(Event::Stdout(_) | Event::Stderr(_)) => {}
                Some(_) => return Err(HostError::Start("it wrote an event before ready".into())),
            }
        }
    };
    match tokio::time::timeout(START_TIMEOUT, ready).await {
        Ok(Ok(())) => Ok(running),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HostError::Start(format!(
            "not warm after {START_TIMEOUT:?}"
        ))),
    }
}

/// One job on a running host: the request's components in, its events through a
/// translator and recorder of the request's own, until `done`.
async fn job(
    r: &mut Running,
    launch: &Launch,
    components: &[Component],
    limits: &Limits,
    cancel: &CancellationToken,
) -> Result<(Program, Vec<Output>), HostError> {
    r.jobs += 1;
    let bounds = Bounds::for_request(components, limits);
    let (mut recorder, mut verdicts) = Recorder::new(launch, components);
    let mut translator = Translator::new(components, bounds, true).recording();
    if r.stdin
        .send(lang::jshell::host_request(components))
        .await
        .is_err()
    {
        return Err(HostError::Died);
    }
    let mut outputs = Vec::new();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let deadline = tokio::time::sleep(MAX_COMPILE.min(limits.wall_time));
    tokio::pin!(deadline);
    loop {
        let event = tokio::select! {
            e = r.events.recv() => e,
            () = &mut deadline => return Err(HostError::Timeout(MAX_COMPILE.min(limits.wall_time))),
            () = cancel.cancelled() => return Err(HostError::Cancelled),
        };
        let Some(event) = event else {
            return Err(HostError::Died);
        };
        let line = match &event {
            Event::Driver(line) => line,
            // Nothing of a job runs: output is the host's own failure.
            Event::Stdout(_) | Event::Stderr(_) | Event::DriverDropped(_) => {
                return Err(HostError::Protocol("output or a dropped line"));
            }
        };
        if line == b"{\"event\":\"done\"}" {
            break;
        }
        // The request's own bounds on its events.
        bytes = bytes.saturating_add(line.len() as u64 + 1);
        lines += 1;
        let framing = bounds.framing;
        if line.len() > framing.line_bytes || bytes > framing.channel_bytes || lines > framing.lines
        {
            return Err(HostError::Protocol("more than the request's bounds"));
        }
        if let Some(step) = translator.event(event) {
            recorder.step(step, &mut translator, &mut outputs);
        }
        while let Ok(answer) = verdicts.try_recv() {
            if r.stdin.send(answer).await.is_err() {
                return Err(HostError::Died);
            }
        }
    }
    let d = translator.drops();
    if d.unreadable > 0
        || d.overlong > 0
        || d.foreign > 0
        || d.class_batches > 0
        || d.verdicts > 0
        || d.over_budget
        || translator.output_exceeded()
    {
        return Err(HostError::Protocol("events that do not check"));
    }
    match recorder.finish() {
        Ok(program) => Ok((program, outputs)),
        Err(lang::jshell::record::Failure::Denied) => Err(HostError::Denied),
        Err(lang::jshell::record::Failure::Invalid(e)) => Err(HostError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_killed_soon_after_their_start_are_started_ever_later() {
        let waits: Vec<u64> = (0..12)
            .map(|n| restart_wait(n).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [0, 0, 500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
    }
}
