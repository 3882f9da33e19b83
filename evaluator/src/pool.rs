//! Sandboxes started ahead of their requests, per runtime.
//!
//! Each is a complete sandbox (every protection of a cold one) whose interpreter has
//! started, loaded its driver and access list and, for JShell, compiled and run a
//! statement; it waits for its input. A request takes one, its own limits are applied
//! before its code is written, it is used once and destroyed. A background task keeps
//! the pool full, one start at a time, pausing while the node is busy; a sandbox that
//! died or waited too long is discarded and replaced. An empty pool means a cold start.
//! [`Pool::shutdown`] stops that task, a start in flight included, and returns once
//! nothing of the pool exists.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::lang::{waiting_job, zygote_job, JobError, Launch};
use crate::sandbox::zygote::Zygote;
use crate::sandbox::{Limits, Sandboxes, WaitError, Waiting};

/// How often the pool checks its sandboxes and refills.
const TICK: Duration = Duration::from_millis(100);

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
    /// Fork sandboxes from a zygote where the runtime has one (Python; see
    /// `sandbox::zygote`) instead of starting each interpreter.
    pub zygote: bool,
}

struct Shared {
    sandboxes: Sandboxes,
    launch: Launch,
    settings: PoolSettings,
    idle: Mutex<VecDeque<Waiting>>,
    /// Set while the node is busy: no refills then.
    paused: AtomicBool,
    taken: AtomicU64,
    misses: AtomicU64,
    replaced: AtomicU64,
    forked: AtomicU64,
    /// The zygote sandboxes are forked from (replaced when used up or dead), and
    /// whether the runtime has none or it failed to start (then: plain starts).
    zygote: tokio::sync::Mutex<Option<Arc<Zygote>>>,
    no_zygote: AtomicBool,
    stop: CancellationToken,
    /// Cancelled once the refilling task has ended, and with it any start it had in
    /// flight (whose sandbox is then destroyed).
    stopped: CancellationToken,
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
}

impl Pool {
    /// Starts a pool (and its refilling task) for `launch`; must run in a tokio runtime.
    pub fn start(
        sandboxes: Sandboxes,
        launch: Launch,
        settings: PoolSettings,
    ) -> Result<Pool, PoolError> {
        // Checked once here: every later start uses the same job.
        if waiting_job(&launch, settings.idle_limits.clone())?.is_none() {
            return Err(PoolError::Unsupported(launch.kind.to_string()));
        }
        let stop = CancellationToken::new();
        let stopped = CancellationToken::new();
        let shared = Arc::new(Shared {
            sandboxes,
            launch,
            settings,
            idle: Mutex::new(VecDeque::new()),
            paused: AtomicBool::new(false),
            taken: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            forked: AtomicU64::new(0),
            zygote: tokio::sync::Mutex::new(None),
            no_zygote: AtomicBool::new(false),
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
        let mut idle = self.shared.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut w) = idle.pop_front() {
            if w.is_alive() && w.age() < self.shared.settings.max_age {
                self.shared.taken.fetch_add(1, Ordering::Relaxed);
                return Some(w);
            }
            self.shared.replaced.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// While paused (the node is busy), no sandbox is started for the pool.
    pub fn set_paused(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Relaxed);
    }

    pub fn idle(&self) -> usize {
        self.shared
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.shared.settings.size,
            idle: self.idle(),
            taken: self.shared.taken.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
            replaced: self.shared.replaced.load(Ordering::Relaxed),
            forked: self.shared.forked.load(Ordering::Relaxed),
        }
    }

    /// Stops refilling and destroys the waiting sandboxes; returns once nothing of the
    /// pool exists. A start in flight is cancelled (its sandbox killed and its cgroup
    /// removed) and waited for: otherwise it would finish after the shutdown and leave
    /// a sandbox behind until the pool noticed.
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        self.shared.stopped.cancelled().await;
        destroy_idle(&self.shared).await;
    }
}

/// Keeps the pool full: discards dead and stale sandboxes, starts one at a time.
async fn maintain(shared: std::sync::Weak<Shared>) {
    let mut failures = 0u32;
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.stop.is_cancelled() {
            destroy_idle(&s).await;
            return;
        }
        {
            let mut idle = s.idle.lock().unwrap_or_else(|p| p.into_inner());
            let before = idle.len();
            let max_age = s.settings.max_age;
            idle.retain_mut(|w| w.is_alive() && w.age() < max_age);
            s.replaced
                .fetch_add((before - idle.len()) as u64, Ordering::Relaxed);
        }
        let want = s.idle.lock().unwrap_or_else(|p| p.into_inner()).len() < s.settings.size;
        if want && !s.paused.load(Ordering::Relaxed) {
            let started = start_one(&s).await;
            if s.stop.is_cancelled() {
                // Stopped while it started: given up (or done), it goes too.
                if let Ok(w) = started {
                    w.destroy().await;
                }
                destroy_idle(&s).await;
                return;
            }
            match started {
                Ok(w) => {
                    failures = 0;
                    s.idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back(w);
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(
                            error = &e as &dyn std::error::Error,
                            "starting a pooled sandbox; retrying"
                        );
                    }
                }
            }
        }
        let pause = TICK * failures.clamp(1, 50);
        let stop = s.stop.clone();
        drop(s);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// Destroys the waiting sandboxes, and the zygote unless sandboxes it forked still
/// run (the last of them destroys it), and returns once they are gone.
async fn destroy_idle(s: &Shared) {
    let idle = std::mem::take(&mut *s.idle.lock().unwrap_or_else(|p| p.into_inner()));
    for w in idle {
        w.destroy().await;
    }
    if let Some(z) = s.zygote.lock().await.take() {
        if let Ok(z) = Arc::try_unwrap(z) {
            z.destroy().await;
        }
    }
}

/// One sandbox for the pool; given up (and destroyed) as soon as the pool stops.
async fn start_one(s: &Shared) -> Result<Waiting, PoolError> {
    if s.settings.zygote && !s.no_zygote.load(Ordering::Relaxed) {
        match forked(s).await {
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
    let (job, preface) = waiting_job(&s.launch, s.settings.idle_limits.clone())?
        .ok_or_else(|| PoolError::Unsupported(s.launch.kind.to_string()))?;
    Ok(s.sandboxes.start_waiting(job, preface, &s.stop).await?)
}

/// A sandbox forked from the pool's zygote (started, or replaced, first if need be);
/// `None` if the runtime has no zygote.
async fn forked(s: &Shared) -> Result<Option<Waiting>, PoolError> {
    let mut zygote = s.zygote.lock().await;
    if !zygote.as_ref().is_some_and(|z| z.usable()) {
        // A used-up zygote lives on until the last sandbox it forked is gone.
        *zygote = None;
        let Some((job, preface)) = zygote_job(&s.launch, s.settings.idle_limits.clone())? else {
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
