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
/// The longest line the host may write (a class batch of a large request is a few
/// MiB; a longer line is skipped, and its batch denied), and what one job may write in
/// all: more is no compile, and the host is killed.
const HOST_LINE_BYTES: usize = 8 << 20;
const HOST_JOB_BYTES: u64 = 256 << 20;
const HOST_JOB_LINES: u64 = 1 << 20;
/// Lines in flight from the host's sandbox to its job (with the line bound, what the
/// node may hold of them).
const HOST_QUEUE: usize = 8;

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
    #[error("the program redefines a class, which a replay would replace")]
    Redefined,
    #[error("the compile host did not get warm: {0}")]
    Start(String),
}

/// A running host.
struct Running {
    stdin: mpsc::Sender<Vec<u8>>,
    events: mpsc::Receiver<Event>,
    kill: CancellationToken,
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
    running: Arc<tokio::sync::Mutex<Option<Running>>>,
    /// The hosts' sandbox tasks and jobs in flight, which shutdown waits for.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
                running: Arc::new(tokio::sync::Mutex::new(None)),
                tasks: std::sync::Mutex::new(Vec::new()),
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
    /// compile's outputs (its diagnostics), or why there is none. The job runs in a
    /// task of its own, to its end: a request that gives up (its wall time, `cancel`)
    /// gets its answer at once, and the host finishes the job before the next (or is
    /// killed at [`MAX_COMPILE`]), so no request can leave the host in doubt.
    pub async fn compile(
        &self,
        launch: &Launch,
        components: &[Component],
        limits: &Limits,
        cancel: &CancellationToken,
    ) -> Result<(Program, Vec<Output>), HostError> {
        let s = &self.shared;
        let result = match tokio::time::timeout(MAX_QUEUE_WAIT, s.running.clone().lock_owned())
            .await
        {
            Err(_) => Err(HostError::Busy),
            Ok(running) if running.is_none() => {
                drop(running);
                self.restart();
                Err(HostError::NotRunning)
            }
            Ok(running) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let host = self.clone();
                let (launch, components, limits2) =
                    (launch.clone(), components.to_vec(), limits.clone());
                let task = tokio::spawn(async move {
                    let mut running = running;
                    let result = match running.as_mut() {
                        Some(r) => job(r, &launch, &components, &limits2).await,
                        None => Err(HostError::NotRunning),
                    };
                    // A job that did not end cleanly leaves the host in doubt: it goes.
                    let spent = running.as_ref().is_some_and(|r| r.jobs >= MAX_JOBS);
                    let doubtful = matches!(
                        result,
                        Err(HostError::Died | HostError::Timeout(_) | HostError::Protocol(_))
                    );
                    if spent || doubtful {
                        *running = None;
                        host.shared.up.store(false, Ordering::Release);
                        drop(running);
                        host.restart();
                    }
                    let _ = tx.send(result);
                });
                s.track(task);
                tokio::select! {
                    r = rx => r.unwrap_or(Err(HostError::Died)),
                    () = tokio::time::sleep(limits.wall_time) => Err(HostError::Timeout(limits.wall_time)),
                    () = cancel.cancelled() => Err(HostError::Cancelled),
                }
            }
        };
        match &result {
            Ok(_) => s.compiled.fetch_add(1, Ordering::Relaxed),
            Err(_) => s.failed.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    /// Ends the host and waits until its sandbox is gone, and every job and start in
    /// flight has ended.
    pub async fn shutdown(&self) {
        let s = &self.shared;
        s.stop.cancel();
        s.up.store(false, Ordering::Release);
        loop {
            let tasks = std::mem::take(&mut *s.tasks.lock().unwrap_or_else(|p| p.into_inner()));
            if tasks.is_empty() && !s.starting.load(Ordering::Acquire) {
                break;
            }
            for t in tasks {
                let _ = t.await;
            }
            if let Some(r) = s.running.lock().await.take() {
                drop(r);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Shared {
    /// Keeps `task` for shutdown to wait for (dropping those that ended).
    fn track(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
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
    let (events_tx, events) = mpsc::channel::<Event>(HOST_QUEUE);
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
    s.track(task);
    let mut running = Running {
        stdin,
        events,
        kill,
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
/// translator and recorder of the request's own, until `done`. Only what a job cannot
/// do is the host's failure (an error that leaves the host in doubt): output, an
/// internal error, a memory limit, more than [`HOST_JOB_BYTES`] or [`MAX_COMPILE`];
/// what a request's bounds refuse is the request's (a batch over its line bound is
/// denied), and the job runs to its end.
async fn job(
    r: &mut Running,
    launch: &Launch,
    components: &[Component],
    limits: &Limits,
) -> Result<(Program, Vec<Output>), HostError> {
    r.jobs += 1;
    let bounds = Bounds::for_request(components, limits);
    let (mut recorder, mut verdicts) = Recorder::new(launch, components);
    let mut translator = Translator::new(components, bounds, true).recording();
    let deadline = tokio::time::Instant::now() + MAX_COMPILE;
    let send = |stdin: &mpsc::Sender<Vec<u8>>, line: Vec<u8>| {
        let stdin = stdin.clone();
        async move {
            match tokio::time::timeout_at(deadline, stdin.send(line)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(HostError::Died),
                Err(_) => Err(HostError::Timeout(MAX_COMPILE)),
            }
        }
    };
    send(&r.stdin, lang::jshell::host_request(components)).await?;
    let mut outputs = Vec::new();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let redefined = loop {
        let event = match tokio::time::timeout_at(deadline, r.events.recv()).await {
            Err(_) => return Err(HostError::Timeout(MAX_COMPILE)),
            Ok(None) => return Err(HostError::Died),
            Ok(Some(e)) => e,
        };
        let line = match event {
            Event::Driver(line) => line,
            // Nothing of a job runs: output is the host's own failure.
            Event::Stdout(_) | Event::Stderr(_) | Event::DriverDropped(_) => {
                return Err(HostError::Protocol(
                    "output or a line over the host's bound",
                ));
            }
        };
        match line.as_slice() {
            b"{\"event\":\"done\"}" => break false,
            b"{\"event\":\"done\",\"redefined\":true}" => break true,
            l if l.starts_with(b"{\"event\":\"output\"")
                || l.starts_with(b"{\"event\":\"internal\"")
                || l.starts_with(b"{\"event\":\"memory_limit\"") =>
            {
                return Err(HostError::Protocol(
                    "output, an internal error or a memory limit",
                ));
            }
            _ => {}
        }
        bytes = bytes.saturating_add(line.len() as u64 + 1);
        lines += 1;
        if bytes > HOST_JOB_BYTES || lines > HOST_JOB_LINES {
            return Err(HostError::Protocol("more than a compile job writes"));
        }
        let event = if line.len() > bounds.framing.line_bytes {
            // Over the request's line bound: a batch this large is denied (the
            // driver waits for its answer), and the request is no program.
            if let Some(seq) = classes_seq(&line) {
                send(&r.stdin, format!("{seq} deny\n").into_bytes()).await?;
            }
            let prefix = line[..line.len().min(64)].to_vec();
            Event::DriverDropped(crate::sandbox::framing::Dropped::Overlong { prefix })
        } else {
            Event::Driver(line)
        };
        if let Some(step) = translator.event(event) {
            recorder.step(step, &mut translator, &mut outputs);
        }
        while let Ok(answer) = verdicts.try_recv() {
            send(&r.stdin, answer).await?;
        }
    };
    let d = translator.drops();
    if d.unreadable > 0
        || d.overlong > 0
        || d.foreign > 0
        || d.class_batches > 0
        || d.verdicts > 0
        || d.records > 0
        || d.over_budget
        || translator.output_exceeded()
    {
        return Err(HostError::Invalid(
            "events over the request's bounds".into(),
        ));
    }
    if redefined {
        return Err(HostError::Redefined);
    }
    match recorder.finish() {
        Ok(program) => Ok((program, outputs)),
        Err(lang::jshell::record::Failure::Denied) => Err(HostError::Denied),
        Err(lang::jshell::record::Failure::Invalid(e)) => Err(HostError::Invalid(e.to_string())),
    }
}

/// The batch number of a `classes` event line, read from its head as the driver
/// writes it (`{"event":"classes","seq":N,...`).
fn classes_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"event\":\"classes\",\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
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

    #[test]
    fn a_batch_number_is_read_from_the_head_of_its_line_only() {
        assert_eq!(
            classes_seq(br#"{"event":"classes","seq":17,"id":"c1","classes":[]}"#),
            Some(17)
        );
        assert_eq!(classes_seq(br#"{"event":"classes","seq":x}"#), None);
        assert_eq!(classes_seq(br#"{"event":"invoke","seq":3}"#), None);
        assert_eq!(
            classes_seq(br#"{"event":"classes","seq":99999999999999999999999}"#),
            None
        );
    }
}
