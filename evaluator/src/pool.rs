//! Sandboxes started ahead of their requests, per runtime.
//!
//! Each is a complete sandbox (every protection of a cold one) whose interpreter has
//! started, loaded its driver and access list and, for JShell, compiled and run a
//! statement; it waits for its input. A request takes one, its own limits are applied
//! before its code is written, it is used once and destroyed. A background task keeps
//! the pool full: several starts at once while the pool is less than half full, one
//! otherwise, each warming at a low CPU weight so that running evaluations win the
//! CPUs; a sandbox that died or waited too long is discarded and replaced. A request
//! that finds the pool empty may wait for a start in flight ([`Pool::take_soon`]),
//! otherwise it starts a cold sandbox. [`Pool::shutdown`] stops that task, the starts
//! in flight included, and returns once nothing of the pool exists.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::compile_host::CompileHost;
use crate::lang::{self, waiting_job, zygote_job, EvaluatorKind, JobError, Launch};
use crate::sandbox::zygote::Zygote;
use crate::sandbox::{Limits, Sandboxes, WaitError, Waiting};

/// How often the pool checks its sandboxes and refills.
const TICK: Duration = Duration::from_millis(100);
/// The CPU weight (cgroup shares) of a sandbox while it starts and waits: the least
/// cgroup v1 takes, against 1024 for a running evaluation. Warming then only uses
/// CPU time evaluations leave; at hand-off the request's limits restore the normal
/// weight.
const WARMING_CPU_SHARES: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("runtimes of kind {0} cannot be pre-started")]
    Unsupported(String),
    #[error(transparent)]
    Job(#[from] JobError),
    /// The sandbox did not start or did not get warm.
    #[error(transparent)]
    Start(#[from] WaitError),
}

/// What a pool is for and how it behaves.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    /// Limits a sandbox has while it waits (the request's replace them at hand-off).
    pub idle_limits: Limits,
    /// A sandbox waiting longer is replaced (its interpreter may have gone stale).
    pub max_age: Duration,
    /// Keep a warm process that never runs snippet code where the runtime has one, and
    /// make each sandbox from it: Python forks sandboxes from a zygote (see
    /// `sandbox::zygote`); JShell compiles in a compile host (see `compile_host`) and
    /// the pool's sandboxes are replay JVMs waiting for a compiled program.
    pub zygote: bool,
}

/// More of how a pool behaves, with defaults ([`Pool::start_with`]).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The memory limit of a waiting sandbox's cgroup, if below
    /// `idle_limits.memory_bytes`, which then only sizes the interpreter (a JVM's heap
    /// is fixed when it starts, before the request's limit is known).
    pub waiting_memory_bytes: Option<u64>,
    /// The most starts in flight at once (while the pool is less than half full).
    pub max_starts: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            waiting_memory_bytes: None,
            max_starts: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Starts in flight and the requests waiting for one of them.
#[derive(Debug, Default)]
struct Flight {
    starts: usize,
    waiters: usize,
}

struct Shared {
    sandboxes: Sandboxes,
    launch: Launch,
    settings: PoolSettings,
    options: PoolOptions,
    idle: Mutex<VecDeque<Waiting>>,
    flight: Mutex<Flight>,
    /// Set while the node is busy: no refills then.
    paused: AtomicBool,
    taken: AtomicU64,
    misses: AtomicU64,
    replaced: AtomicU64,
    /// Moving average of how long a start took until warm, in microseconds (0: none
    /// yet).
    start_micros: AtomicU64,
    /// Told when a sandbox was taken: the refilling task wakes at once.
    taken_signal: Arc<Notify>,
    /// Told when a start ended (ready or failed): waiting requests look again.
    started_signal: Notify,
    forked: AtomicU64,
    on_demand: AtomicU64,
    lanes: AtomicU64,
    /// The zygote sandboxes are forked from (replaced when used up or dead), and
    /// whether the runtime has none or it failed to start (then: plain starts).
    zygote: tokio::sync::Mutex<Option<Arc<Zygote>>>,
    no_zygote: AtomicBool,
    /// A JShell pool's compile host: its sandboxes are then replays.
    host: Option<CompileHost>,
    stop: CancellationToken,
    /// Cancelled once the refilling task has ended, and with it any start it had in
    /// flight (whose sandbox is then destroyed).
    stopped: CancellationToken,
}

impl Shared {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_flight(&self) -> std::sync::MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A live, fresh waiting sandbox, if there is one; dead and stale ones are counted
    /// as replaced and dropped on the way.
    fn pop_usable(&self) -> Option<Waiting> {
        let mut idle = self.lock_idle();
        while let Some(mut w) = idle.pop_front() {
            if w.is_alive() && w.age() < self.settings.max_age {
                return Some(w);
            }
            self.replaced.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    fn taken(&self, w: Waiting) -> Waiting {
        self.taken.fetch_add(1, Ordering::Relaxed);
        self.taken_signal.notify_one();
        w
    }

    fn missed(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.taken_signal.notify_one();
    }
}

/// A pool of waiting sandboxes for one runtime. Dropping the last clone stops it
/// and destroys the sandboxes waiting in it, in the background; [`Pool::shutdown`]
/// does it and waits.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    _guard: Arc<StopOnDrop>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.shared.settings.size)
            .field("idle", &self.idle())
            .finish()
    }
}

struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Counters of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub size: usize,
    pub idle: usize,
    /// Requests served from the pool.
    pub taken: u64,
    /// Requests that found it empty (cold starts).
    pub misses: u64,
    /// Sandboxes discarded because they died or waited too long.
    pub replaced: u64,
    /// Sandboxes forked from a zygote (the rest started their interpreter).
    pub forked: u64,
    /// Requests that found no waiting sandbox (misses) and got one forked for them at
    /// once instead of a cold start.
    pub on_demand: u64,
    /// Lanes started for many-input requests (see [`Pool::lane`]).
    pub lanes: u64,
    /// A JShell pool's compile host: requests it compiled, requests it gave no
    /// program for, hosts started (see `compile_host`).
    pub compiled: u64,
    pub compile_fallbacks: u64,
    pub compile_host_starts: u64,
}

impl Pool {
    /// Starts a pool (and its refilling task) for `launch` with the default
    /// [`PoolOptions`]; must run in a tokio runtime.
    pub fn start(
        sandboxes: Sandboxes,
        launch: Launch,
        settings: PoolSettings,
    ) -> Result<Pool, PoolError> {
        Pool::start_with(sandboxes, launch, settings, PoolOptions::default())
    }

    /// Starts a pool (and its refilling task) for `launch`; must run in a tokio runtime.
    pub fn start_with(
        sandboxes: Sandboxes,
        launch: Launch,
        settings: PoolSettings,
        options: PoolOptions,
    ) -> Result<Pool, PoolError> {
        // Checked once here: every later start uses the same job.
        if waiting_job(&launch, settings.idle_limits.clone())?.is_none() {
            return Err(PoolError::Unsupported(launch.kind.to_string()));
        }
        let stop = CancellationToken::new();
        let stopped = CancellationToken::new();
        let host = (settings.zygote && launch.kind == EvaluatorKind::Jshell).then(|| {
            CompileHost::start(
                sandboxes.clone(),
                launch.clone(),
                settings.idle_limits.clone(),
            )
        });
        let shared = Arc::new(Shared {
            sandboxes,
            launch,
            settings,
            options,
            idle: Mutex::new(VecDeque::new()),
            flight: Mutex::new(Flight::default()),
            paused: AtomicBool::new(false),
            taken: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            start_micros: AtomicU64::new(0),
            taken_signal: Arc::new(Notify::new()),
            started_signal: Notify::new(),
            forked: AtomicU64::new(0),
            on_demand: AtomicU64::new(0),
            lanes: AtomicU64::new(0),
            zygote: tokio::sync::Mutex::new(None),
            no_zygote: AtomicBool::new(false),
            host,
            stop: stop.clone(),
            stopped: stopped.clone(),
        });
        // However the task ends (returns, panics, or is dropped with its runtime), the
        // guard says so.
        let done = stopped.drop_guard();
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let _done = done;
            maintain(weak).await;
        });
        Ok(Pool {
            shared,
            _guard: Arc::new(StopOnDrop(stop)),
        })
    }

    /// A waiting sandbox for one request, or `None` (the caller starts a cold one).
    pub fn take(&self) -> Option<Waiting> {
        match self.shared.pop_usable() {
            Some(w) => Some(self.shared.taken(w)),
            None => {
                self.shared.missed();
                None
            }
        }
    }

    /// Like [`Pool::take`], but an empty pool with a start in flight is waited for,
    /// at most as long as a start takes on average.
    ///
    /// A start in flight began before the cold start this request would make and
    /// does the same work (sandbox, interpreter, driver, warm-up), so it is likely
    /// ready first, and waiting for it adds no CPU work to a busy node; a burst then
    /// gets warm sandboxes as they come instead of all going cold. If it is not ready
    /// within a start's average time (a busy node runs warming sandboxes last), the
    /// request starts cold after all. Each start in flight is waited for by one
    /// request at most: the others start cold at once. A pool with a zygote forks the
    /// request a sandbox of its own instead of leaving it to start cold (a fork is
    /// ready in a few milliseconds, an interpreter in tens).
    pub async fn take_soon(&self) -> Option<Waiting> {
        let s = &self.shared;
        if let Some(w) = s.pop_usable() {
            return Some(s.taken(w));
        }
        let patience = Duration::from_micros(s.start_micros.load(Ordering::Relaxed));
        let claimed = {
            let mut flight = s.lock_flight();
            let claim = !patience.is_zero() && flight.waiters < flight.starts;
            if claim {
                flight.waiters += 1;
            }
            claim
        };
        if !claimed {
            s.missed();
            return self.fork_now().await;
        }
        let deadline = tokio::time::Instant::now() + patience;
        let got = loop {
            let started = s.started_signal.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            if let Some(w) = s.pop_usable() {
                break Some(w);
            }
            if s.lock_flight().starts == 0 || s.stop.is_cancelled() {
                break None;
            }
            tokio::select! {
                _ = started => {}
                _ = tokio::time::sleep_until(deadline) => break s.pop_usable(),
            }
        };
        s.lock_flight().waiters -= 1;
        match got {
            Some(w) => Some(s.taken(w)),
            None => {
                s.missed();
                self.fork_now().await
            }
        }
    }

    /// A sandbox forked for one request now, from the pool's zygote if it has a
    /// usable one (none is started for it).
    async fn fork_now(&self) -> Option<Waiting> {
        let s = &self.shared;
        if !s.settings.zygote || s.no_zygote.load(Ordering::Relaxed) {
            return None;
        }
        let zygote = s.zygote.lock().await.clone().filter(|z| z.usable())?;
        let w = s.sandboxes.start_forked(&zygote, &s.stop).await.ok()?;
        s.on_demand.fetch_add(1, Ordering::Relaxed);
        Some(w)
    }

    /// Whether [`Pool::lane`] may give lanes: the pool forks from a zygote.
    pub fn has_lanes(&self) -> bool {
        self.shared.settings.zygote && !self.shared.no_zygote.load(Ordering::Relaxed)
    }

    /// A lane for one many-input request (see `sandbox::zygote`), forked from the
    /// pool's zygote; `None` if the pool has no usable zygote (then each input gets a
    /// sandbox of the pool's, or a cold one). Never starts a zygote: that is the
    /// refills' work, off the request path.
    pub async fn lane(&self) -> Option<Arc<Zygote>> {
        let s = &self.shared;
        if !self.has_lanes() {
            return None;
        }
        let zygote = s.zygote.lock().await.clone().filter(|z| z.usable())?;
        match s.sandboxes.start_lane(&zygote, &s.stop).await {
            Ok(lane) => {
                s.lanes.fetch_add(1, Ordering::Relaxed);
                Some(lane)
            }
            Err(e) => {
                tracing::warn!(error = &e as &dyn std::error::Error, "starting a lane");
                None
            }
        }
    }

    /// The pool's compile host, if it is a JShell pool with one: its sandboxes are
    /// then replays of a program the host compiled, never whole JShells.
    pub fn compile_host(&self) -> Option<&CompileHost> {
        self.shared.host.as_ref()
    }

    /// While paused (the node is busy), no sandbox is started for the pool.
    pub fn set_paused(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Relaxed);
        if !paused {
            self.shared.taken_signal.notify_one();
        }
    }

    /// Sandboxes ready for a request. A JShell pool's replays are ready only while
    /// its compile host is up (without it, a request runs a whole JShell).
    pub fn idle(&self) -> usize {
        if self.shared.host.as_ref().is_some_and(|h| !h.is_up()) {
            return 0;
        }
        self.shared.lock_idle().len()
    }

    pub fn stats(&self) -> PoolStats {
        let host = self
            .shared
            .host
            .as_ref()
            .map(CompileHost::stats)
            .unwrap_or_default();
        PoolStats {
            size: self.shared.settings.size,
            idle: self.idle(),
            taken: self.shared.taken.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
            replaced: self.shared.replaced.load(Ordering::Relaxed),
            forked: self.shared.forked.load(Ordering::Relaxed),
            on_demand: self.shared.on_demand.load(Ordering::Relaxed),
            lanes: self.shared.lanes.load(Ordering::Relaxed),
            compiled: host.compiled,
            compile_fallbacks: host.failed,
            compile_host_starts: host.starts,
        }
    }

    /// Stops refilling and destroys the waiting sandboxes; returns once nothing of the
    /// pool exists. Starts in flight are cancelled (their sandboxes killed and their
    /// cgroups removed) and waited for: otherwise they would finish after the shutdown
    /// and leave sandboxes behind until the pool noticed.
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        self.shared.stopped.cancelled().await;
        destroy_idle(&self.shared).await;
        if let Some(host) = &self.shared.host {
            host.shutdown().await;
        }
    }
}

/// Keeps the pool full: discards dead and stale sandboxes, and starts new ones, as
/// many at once as [`PoolOptions::max_starts`] while the pool is less than half full
/// (a burst emptied it: refill it fast, the starts' low CPU weight keeps them from
/// slowing evaluations down), one at a time otherwise.
async fn maintain(shared: std::sync::Weak<Shared>) {
    let mut starts: JoinSet<(Result<Waiting, PoolError>, Duration)> = JoinSet::new();
    let mut failures = 0u32;
    let mut next_start = Instant::now();
    loop {
        let Some(s) = shared.upgrade() else {
            end_starts(&mut starts).await;
            return;
        };
        if s.stop.is_cancelled() {
            end_starts(&mut starts).await;
            s.lock_flight().starts = 0;
            s.started_signal.notify_waiters();
            destroy_idle(&s).await;
            return;
        }
        {
            let mut idle = s.lock_idle();
            let before = idle.len();
            let max_age = s.settings.max_age;
            idle.retain_mut(|w| w.is_alive() && w.age() < max_age);
            s.replaced
                .fetch_add((before - idle.len()) as u64, Ordering::Relaxed);
        }
        let idle = s.lock_idle().len();
        let size = s.settings.size;
        // Forks from a zygote are cheap: as many as are missing, up to one per CPU.
        let forking = s.settings.zygote && !s.no_zygote.load(Ordering::Relaxed);
        let at_once = if forking || idle * 2 < size {
            s.options.max_starts.max(1)
        } else {
            1
        };
        if !s.paused.load(Ordering::Relaxed) && Instant::now() >= next_start {
            while starts.len() < at_once && idle + starts.len() < size {
                let one = s.clone();
                starts.spawn(async move {
                    let began = Instant::now();
                    (start_one(&one).await, began.elapsed())
                });
            }
        }
        s.lock_flight().starts = starts.len();
        // After a failure, until the next start is due; otherwise a tick (dead or
        // stale sandboxes to notice, a pause to end).
        let backoff = next_start.saturating_duration_since(Instant::now());
        let pause = if backoff.is_zero() { TICK } else { backoff };
        let stop = s.stop.clone();
        let taken = s.taken_signal.clone();
        drop(s);
        let ended = tokio::select! {
            r = starts.join_next(), if !starts.is_empty() => r,
            _ = tokio::time::sleep(pause) => None,
            _ = taken.notified() => None,
            _ = stop.cancelled() => None,
        };
        let Some(ended) = ended else { continue };
        let Some(s) = shared.upgrade() else {
            if let Ok((Ok(w), _)) = ended {
                w.destroy().await;
            }
            continue;
        };
        match ended {
            Ok((Ok(w), took)) if !s.stop.is_cancelled() => {
                failures = 0;
                // A moving average over about the last 8 starts.
                let micros = took.as_micros().min(u64::MAX.into()) as u64;
                let old = s.start_micros.load(Ordering::Relaxed);
                let new = if old == 0 {
                    micros
                } else {
                    (old * 7 + micros) / 8
                };
                s.start_micros.store(new, Ordering::Relaxed);
                s.lock_idle().push_back(w);
            }
            // Stopped while it started: given up (or done), it goes too.
            Ok((Ok(w), _)) => w.destroy().await,
            Ok((Err(e), _)) => {
                failures += 1;
                next_start = Instant::now() + TICK * failures.clamp(1, 50);
                if failures == 1 && !s.stop.is_cancelled() {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "starting a pooled sandbox; retrying"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "a pooled sandbox's start ended abnormally"),
        }
        s.lock_flight().starts = starts.len();
        s.started_signal.notify_waiters();
    }
}

/// Waits for every start in flight to end (they end once the pool stops, destroying
/// what they had started) and destroys those that got ready meanwhile.
async fn end_starts(starts: &mut JoinSet<(Result<Waiting, PoolError>, Duration)>) {
    while let Some(r) = starts.join_next().await {
        if let Ok((Ok(w), _)) = r {
            w.destroy().await;
        }
    }
}

/// Destroys the waiting sandboxes, and the zygote unless sandboxes it forked still
/// run (the last of them destroys it), and returns once they are gone.
async fn destroy_idle(s: &Shared) {
    let idle = std::mem::take(&mut *s.lock_idle());
    for w in idle {
        w.destroy().await;
    }
    if let Some(z) = s.zygote.lock().await.take() {
        if let Ok(z) = Arc::try_unwrap(z) {
            z.destroy().await;
        }
    }
}

/// One sandbox for the pool, at the low warming CPU weight and the waiting memory
/// limit; given up (and destroyed) as soon as the pool stops.
async fn start_one(s: &Shared) -> Result<Waiting, PoolError> {
    let mut limits = s.settings.idle_limits.clone();
    if let Some(bytes) = s.options.waiting_memory_bytes {
        limits.memory_bytes = limits.memory_bytes.min(bytes);
    }
    if s.settings.zygote && !s.no_zygote.load(Ordering::Relaxed) {
        // A fork costs a few milliseconds and a request may be waiting for it: at
        // the normal weight.
        match forked(s, &limits).await {
            Ok(Some(w)) => {
                s.forked.fetch_add(1, Ordering::Relaxed);
                return Ok(w);
            }
            Ok(None) => s.no_zygote.store(true, Ordering::Relaxed),
            Err(e @ PoolError::Start(WaitError::Cancelled)) => return Err(e),
            Err(e) => {
                // Plain starts from now on: slower, but every protection is the same.
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "starting a zygote; starting sandboxes one by one instead"
                );
                s.no_zygote.store(true, Ordering::Relaxed);
            }
        }
    }
    limits.cpu_shares = WARMING_CPU_SHARES;
    if s.host.is_some() {
        let (job, preface) = lang::jshell::replay_waiting_job(&s.launch, limits);
        return Ok(s.sandboxes.start_waiting(job, preface, &s.stop).await?);
    }
    let (job, preface) = waiting_job(&s.launch, limits)?
        .ok_or_else(|| PoolError::Unsupported(s.launch.kind.to_string()))?;
    Ok(s.sandboxes.start_waiting(job, preface, &s.stop).await?)
}

/// A sandbox forked from the pool's zygote (started, or replaced, first if need be);
/// `None` if the runtime has no zygote.
/// Its sandboxes (and the zygote itself) wait with `limits`.
async fn forked(s: &Shared, limits: &Limits) -> Result<Option<Waiting>, PoolError> {
    let mut zygote = s.zygote.lock().await;
    if !zygote.as_ref().is_some_and(|z| z.usable()) {
        // A used-up zygote lives on until the last sandbox it forked is gone.
        *zygote = None;
        let Some((job, preface)) = zygote_job(&s.launch, limits.clone())? else {
            return Ok(None);
        };
        *zygote = Some(s.sandboxes.start_zygote(job, preface, &s.stop).await?);
    }
    let Some(z) = zygote.clone() else {
        return Ok(None);
    };
    drop(zygote);
    Ok(Some(s.sandboxes.start_forked(&z, &s.stop).await?))
}
