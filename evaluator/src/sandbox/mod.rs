//! Fresh, single-use sandboxes, driven from a multi-threaded async server: the API.
//!
//! [`Sandboxes::run`] validates a [`Job`] on the host, creates the sandbox's cgroup,
//! spawns the helper (see `helper.rs`), places it in the cgroup before it creates
//! any namespace (and tells it so, for it to check), hands it the plan, streams
//! stdout, stderr and driver events back as they come, enforces the wall-clock, CPU
//! and output limits, and always ends with an [`Outcome`] and with nothing left
//! behind: the cgroup is killed and removed on every path, including panics and a
//! dropped future.
//!
//! The steps live in their own files: `spawn.rs` (the job checked, the helper spawned
//! into its cgroup), `control.rs` (the one framing of the control socket),
//! `supervise.rs` (the run watched), `status.rs` (the one place a status is decided),
//! `limits.rs` (a job's limits as cgroup limits and rlimits), `uid.rs` (each live
//! sandbox's own uid), `framing.rs` (the driver event channel as read).

pub mod cgroup;
mod control;
mod favor;
pub mod files;
pub mod framing;
mod helper;
mod limits;
pub mod plan;
pub mod seccomp;
mod spawn;
mod status;
mod supervise;
mod uid;
pub mod zygote;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use framing::{Dropped, Framing};
pub use helper::{forked_main, helper_main};
use limits::cgroup_limits;
pub use limits::{
    payload_nproc, PAYLOAD_LOCKED_MEMORY, PAYLOAD_PENDING_SIGNALS, SANDBOX_PROCESSES,
};
use plan::Report;
pub use spawn::PlanError;
use spawn::Prepared;
pub use status::DriverFacts;
pub use supervise::Finished;
use supervise::Supervision;
pub use uid::{UidAllocator, UidError, UidLease};

/// Why a sandbox could not even be prepared on the host.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("creating the sandbox state directory {path}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sandbox helper {0} is not an executable file")]
    Helper(PathBuf),
    #[error("preparing the uid claim directory {path}")]
    ClaimDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
}

/// Why one sandbox was not set up, or its helper said what the supervisor cannot
/// read: the outcome's `setup_failed`, its text made in `status.rs`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Uid(#[from] UidError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("creating the cgroup")]
    CreateCgroup(#[source] cgroup::CgroupError),
    #[error("spawning the sandbox helper")]
    SpawnHelper(#[source] std::io::Error),
    #[error("forking a helper from the zygote")]
    Fork(#[source] std::io::Error),
    #[error("the sandbox helper exited at once")]
    HelperGone,
    #[error("placing the helper in its cgroup")]
    PlaceHelper(#[source] cgroup::CgroupError),
    #[error("telling the helper its cgroup")]
    TellPlacement(#[source] control::ControlError),
    #[error("applying limits")]
    ApplyLimits(#[source] cgroup::CgroupError),
    #[error("watching the sandbox helper")]
    Watch(#[source] std::io::Error),
    #[error("sending the plan")]
    SendPlan(#[source] control::ControlError),
    /// A step of the helper, its init or the payload failed (reported by the helper).
    #[error("{step}: {detail} (errno {errno})")]
    Step {
        step: String,
        errno: i32,
        detail: String,
    },
    #[error("unreadable report from the sandbox")]
    Report(#[source] serde_json::Error),
    #[error("oversized report from the sandbox")]
    OversizedReport,
    #[error("the sandbox ended without reporting the payload's status")]
    NoStatus,
    #[error("the waiting sandbox died before its request")]
    WaitingDied,
    #[error("the sandbox passed out no /work")]
    NoWork,
    #[error(transparent)]
    PlaceFiles(files::FilesError),
    /// The request asks for more processes than the waiting sandbox's RLIMIT_NPROC
    /// was set for (see [`payload_nproc`]): under a higher limit the rlimit could
    /// refuse forks before pids.max does.
    #[error("the request's process limit is above the waiting sandbox's")]
    ProcessLimitAboveWaiting,
}

/// Why no sandbox was left waiting ([`Sandboxes::start_waiting`]).
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("a waiting sandbox takes its input later")]
    InputGiven,
    #[error("only isolated sandboxes can wait")]
    HostNetwork,
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("preparing a sandbox")]
    Task(#[source] tokio::task::JoinError),
    #[error("cancelled while the sandbox got ready")]
    Cancelled,
    #[error("waiting for the sandbox")]
    Waiting(#[source] control::ControlError),
    #[error("unexpected report from a waiting sandbox")]
    Unexpected,
    #[error("the sandbox did not get ready: {0}")]
    NotReady(String),
    #[error("no zygote library is configured")]
    NoZygoteLibrary,
    #[error("a zygote runs on a runtime's files, not on the host's")]
    ZygoteOnHostFiles,
}

/// Host-side settings shared by every sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Program that runs `helper_main` (this crate's `jsheets-sandbox`, or the service
    /// binary re-executing itself with `helper_args`).
    pub helper: PathBuf,
    pub helper_args: Vec<String>,
    /// Directory for the empty root mount point; created 0700.
    pub state_dir: PathBuf,
    /// Sandboxes run as uids `uid_base .. uid_base + uid_count`: each live sandbox has
    /// one no other live sandbox has (see [`UidAllocator`]), so per-user limits and
    /// counts (processes, pending signals, locked memory, ...) are its own. A sandbox
    /// that finds them all in use fails to set up.
    pub uid_base: u32,
    pub uid_count: u32,
    /// A directory every node sharing the uid range can write (several containers on
    /// one host: one volume mounted into each): a uid is also claimed there, by a lock
    /// on a file named after it, which reaches across network namespaces where the
    /// abstract-socket claim does not.
    pub uid_claim_dir: Option<PathBuf>,
    /// CPUs every sandbox is pinned to (cpuset syntax, e.g. "1" or "0-3").
    pub cpuset: Option<String>,
    /// The zygote library (`libjsheets_zygote.so` of crate `zygote-lib`), which
    /// zygotes need (see [`zygote`]); none: no zygotes.
    pub zygote_library: Option<PathBuf>,
    /// Helpers kept spawned ahead of requests (0 disables). A waiting helper holds no
    /// namespace or mount yet; it saves the spawn and the cgroup migration, which on
    /// cgroup v1 waits for an RCU grace period.
    pub prestart: usize,
}

impl SandboxConfig {
    /// Defaults around a helper program.
    pub fn with_helper(helper: impl Into<PathBuf>, helper_args: Vec<String>) -> Self {
        SandboxConfig {
            helper: helper.into(),
            helper_args,
            state_dir: PathBuf::from("/run/jsheets-runtime"),
            uid_base: 200_000,
            uid_count: 10_000,
            uid_claim_dir: None,
            cpuset: None,
            zygote_library: None,
            prestart: 2,
        }
    }
}

/// Per-evaluation resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub wall_time: Duration,
    pub cpu_time: Duration,
    pub memory_bytes: u64,
    /// Processes (tasks: threads count) the payload and what it starts may have at
    /// once; the sandbox's own helper and init are not counted.
    pub max_processes: u64,
    /// Cap of stdout and of stderr, each; the overflow is dropped and the sandbox stopped.
    pub output_bytes: u64,
    /// CPU bandwidth in millicores (1000 = one core).
    pub cpu_millis: u64,
    /// CPU weight against other sandboxes (cgroup shares); 0 is the normal weight.
    pub cpu_shares: u64,
    pub work_bytes: u64,
    pub tmp_bytes: u64,
    /// RLIMIT_FSIZE where host paths are bound writable (runtime builds). Not applied
    /// to evaluations: all they can write is `/work`, `/tmp` and `/dev/shm`, tmpfs
    /// bounded by their sizes (and the memory limit), and a file size limit equal to
    /// one of them would turn "no space left on device" into "file too large".
    pub file_size_bytes: u64,
    pub open_files: u64,
    pub stack_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_time: Duration::from_secs(10),
            cpu_time: Duration::from_secs(10),
            memory_bytes: 256 << 20,
            max_processes: 64,
            output_bytes: 1 << 20,
            cpu_millis: 1000,
            cpu_shares: 0,
            work_bytes: 64 << 20,
            tmp_bytes: 64 << 20,
            file_size_bytes: 64 << 20,
            open_files: 256,
            stack_bytes: 8 << 20,
        }
    }
}

/// The filesystem a job sees.
#[derive(Debug, Clone)]
pub enum Filesystem {
    /// A tmpfs root with these read-only binds (host source, absolute target).
    Runtime(Vec<(PathBuf, PathBuf)>),
    /// The host root read-only, with `writable` bound read-write at the same paths and
    /// `hidden` covered by empty tmpfs. For runtime builds only.
    HostReadOnly {
        writable: Vec<PathBuf>,
        hidden: Vec<PathBuf>,
    },
}

/// One thing to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub filesystem: Filesystem,
    /// Absolute program path inside the sandbox first.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Given to the payload on fd 3 (sealed, read-only).
    pub input: Option<Vec<u8>>,
    /// Whether the payload writes driver events (JSON lines) on fd 4.
    pub events: bool,
    pub stdin: Vec<u8>,
    /// False only for runtime builds, which need the network (pip).
    pub isolate_network: bool,
    pub limits: Limits,
    /// Fixed uid (and gid) instead of the next one of the pool; runtime builds use one
    /// uid that owns the tree being built. Never taken from a request.
    pub run_as: Option<u32>,
    /// Read-only datasets: host directory (the operator's, never a request's) and the
    /// name it has under `/data`.
    pub datasets: Vec<(PathBuf, String)>,
    /// Files put in `/work` before the payload starts, and taken back after it ends.
    pub files: files::Files,
}

impl Job {
    /// A job on a runtime's read-only mounts with the default limits.
    pub fn new(mounts: Vec<(PathBuf, PathBuf)>, argv: Vec<String>) -> Self {
        Job {
            filesystem: Filesystem::Runtime(mounts),
            argv,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: PathBuf::from("/work"),
            input: None,
            events: false,
            stdin: Vec::new(),
            isolate_network: true,
            limits: Limits::default(),
            run_as: None,
            datasets: Vec::new(),
            files: files::Files::default(),
        }
    }
}

/// What a sandbox streams while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// One line the payload's driver wrote on fd 4 (without the newline), at most the
    /// job's line bound long (see [`Framing`]).
    Driver(Vec<u8>),
    /// What the supervisor dropped from fd 4 instead of forwarding it.
    DriverDropped(Dropped),
}

/// How an evaluation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    ExitedNonZero,
    Signaled,
    WallTimeout,
    CpuLimit,
    MemoryLimit,
    OutputLimit,
    ProcessLimit,
    Cancelled,
    SetupFailed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::ExitedNonZero => "exited_nonzero",
            Status::Signaled => "killed_by_signal",
            Status::WallTimeout => "wall_timeout",
            Status::CpuLimit => "cpu_limit",
            Status::MemoryLimit => "memory_limit",
            Status::OutputLimit => "output_limit",
            Status::ProcessLimit => "process_limit",
            Status::Cancelled => "cancelled",
            Status::SetupFailed => "setup_failed",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of every evaluation, whatever happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub wall_time: Duration,
    pub cpu_time: Duration,
    pub peak_memory: u64,
    /// Time from the request to the payload's exec.
    pub setup_time: Duration,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// For `SetupFailed`: the step and the OS error.
    pub error: Option<String>,
    /// The files asked for back (`Job::files`), in path order, refusals included.
    pub files: Vec<files::ReturnedFile>,
}

/// Creates and supervises sandboxes. Clones share the same state.
#[derive(Debug, Clone)]
pub struct Sandboxes {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SandboxConfig,
    cgroups: cgroup::Manager,
    root_dir: PathBuf,
    uids: Arc<UidAllocator>,
    /// Helpers spawned ahead of requests, each alone in a fresh empty cgroup, waiting
    /// for a plan. They hold no namespace, mount or state of any request: everything
    /// that makes a sandbox is still built per request, after the plan arrives.
    idle: Mutex<Vec<Prepared>>,
    refilling: AtomicUsize,
    /// cgroup v1: the `favordynmods` hierarchy that keeps migrations cheap (see
    /// [`favor`]), held while the sandboxes exist.
    _favored: Option<favor::Favored>,
}

/// A sandbox started ahead of its request: the payload runs (its interpreter loaded
/// and warmed) and waits for its input on fd 3. Single use: [`Sandboxes::run_waiting`]
/// consumes it; dropping it kills it and removes its cgroup.
#[derive(Debug)]
pub struct Waiting {
    prepared: Prepared,
    job: Job,
    since: Instant,
    /// Its `/work`, passed out by its init.
    work: Option<std::os::fd::OwnedFd>,
    /// The uid its payload runs as (who owns the files put in).
    uid: u32,
}

impl Waiting {
    /// How long it has been waiting.
    pub fn age(&self) -> Duration {
        self.since.elapsed()
    }

    /// Whether its helper is still there (a payload that died while waiting ends it).
    pub fn is_alive(&mut self) -> bool {
        self.prepared.is_alive()
    }

    /// Destroys it and returns once it is gone (dropping it does the same in the
    /// background).
    pub async fn destroy(self) {
        self.prepared.destroyed(()).await
    }
}

/// How long a waiting sandbox may take to get warm.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest line a waiting sandbox's driver may say it is ready with.
const READY_LINE: usize = 4096;

impl Sandboxes {
    /// Prepares the state directory and the cgroup subtree.
    pub fn start(config: SandboxConfig) -> Result<Self, SandboxError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !config.helper.is_file() {
            return Err(SandboxError::Helper(config.helper.clone()));
        }
        let root_dir = config.state_dir.join("root");
        let state = |path: &Path, source| SandboxError::StateDir {
            path: path.into(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root_dir)
            .map_err(|e| state(&root_dir, e))?;
        std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| state(&config.state_dir, e))?;
        if let Some(dir) = &config.uid_claim_dir {
            // Checked now, not at the first sandbox: a claim that cannot be made
            // hands out no uid.
            let claim_dir = |source| SandboxError::ClaimDir {
                path: dir.clone(),
                source,
            };
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(claim_dir)?;
            let probe = dir.join(format!(".probe-{}", std::process::id()));
            std::fs::write(&probe, b"")
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(claim_dir)?;
        }
        let cgroups = cgroup::Manager::start(config.cpuset.clone())?;
        // Only a cost without it (a grace period per migration), so not fatal.
        let favored = (cgroups.version() == cgroup::Version::V1)
            .then(|| favor::Favored::mount(&config.state_dir.join("cgroup-favor")))
            .and_then(|r| {
                r.inspect_err(|e| {
                    tracing::warn!(
                        error = e as &dyn std::error::Error,
                        "cgroup migrations stay slow"
                    )
                })
                .ok()
            });
        Ok(Sandboxes {
            inner: Arc::new(Inner {
                uids: UidAllocator::with_claim_dir(
                    config.uid_base,
                    config.uid_count,
                    config.uid_claim_dir.clone(),
                ),
                config,
                cgroups,
                root_dir,
                idle: Mutex::new(Vec::new()),
                refilling: AtomicUsize::new(0),
                _favored: favored,
            }),
        })
    }

    pub fn cgroup_version(&self) -> cgroup::Version {
        self.inner.cgroups.version()
    }

    /// Sandboxes of this process whose cgroup exists right now, idle helpers included.
    pub fn live(&self) -> usize {
        self.inner.cgroups.live_count()
    }

    /// Helpers waiting for a request right now.
    pub fn idle(&self) -> usize {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Helpers being spawned in the background right now.
    pub fn pending_refills(&self) -> usize {
        self.inner.refilling.load(Ordering::Relaxed)
    }

    /// Sandboxes being torn down after their outcome was returned (or after they were
    /// dropped).
    pub fn pending_teardowns(&self) -> usize {
        self.inner.cgroups.pending_teardowns()
    }

    /// Kills the idle helpers (they are respawned on the next request).
    pub fn drain_idle(&self) {
        let idle: Vec<Prepared> =
            std::mem::take(&mut *self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(idle);
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Runs `job` in a fresh sandbox, streaming output to `events`, until it ends, a
    /// limit is hit or `cancel` fires. Dropping the returned future kills the sandbox.
    /// `framing` bounds what is read from the driver's event channel
    /// (`crate::events::Bounds::for_job` has the bounds of a job on its own).
    pub async fn run(
        &self,
        job: Job,
        framing: Framing,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
    ) -> Outcome {
        self.run_with_stdin(job, framing, None, events, cancel)
            .await
            .outcome(&DriverFacts::default())
    }

    /// [`Sandboxes::run`], with more stdin after `job.stdin`: whatever arrives on
    /// `more_stdin` is written to the payload's stdin until the sender goes away. This
    /// is how a driver inside the sandbox gets answers from outside (the JShell driver
    /// waits for the verdict on each class before loading it). What it returns becomes
    /// the outcome with what the driver's events showed ([`Finished::outcome`]).
    pub async fn run_with_stdin(
        &self,
        job: Job,
        framing: Framing,
        more_stdin: Option<mpsc::Receiver<Vec<u8>>>,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
    ) -> Finished {
        let start = Instant::now();
        let prepared = match self.prepare_for(&job) {
            Ok(p) => p,
            Err(e) => return Finished::failed(start, e),
        };
        let (plan, prepared) = prepared;
        Supervision {
            job,
            framing,
            owner: plan.uid,
            plan: Some(plan),
            prepared,
            work: None,
            deferred_input: None,
            more_stdin,
            events,
            cancel,
            start,
            teardowns: self.inner.cgroups.teardowns(),
        }
        .run()
        .await
    }

    /// The plan of `job` and a helper for it with the job's limits on its cgroup.
    fn prepare_for(&self, job: &Job) -> Result<(plan::Plan, Prepared), SetupError> {
        let inner = &self.inner;
        let (uid, lease) = inner.uid_for(job)?;
        let plan = inner.plan(job, uid)?;
        let limits = cgroup_limits(&job.limits);
        // Pre-spawned helpers have their network namespace already: builds, which use
        // the host network, always get a helper of their own.
        let taken = if job.isolate_network {
            let mut taken = inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            // A helper that died while waiting (killed from outside) is not used: the
            // request gets a fresh one instead of a setup failure.
            if let Some(p) = taken.as_mut() {
                if !p.is_waiting() {
                    taken = None;
                }
            }
            self.refill();
            taken
        } else {
            None
        };
        let mut prepared = match taken {
            Some(p) => p,
            None => inner.prepare(job.isolate_network)?,
        };
        // The uid goes back only once the sandbox's cgroup is gone.
        if let Some(lease) = lease {
            prepared.cg.hold_uid(lease);
        }
        // The request's limits go on before the helper learns what to run.
        prepared
            .cg
            .apply_limits(&limits)
            .map_err(SetupError::ApplyLimits)?;
        Ok((plan, prepared))
    }

    /// Starts `job` in a fresh sandbox whose input (fd 3) comes later but for its
    /// `preface`, and leaves it waiting: the payload starts now, so an interpreter can
    /// load and warm up. The job's limits hold while it waits (pass generous ones; the
    /// request's are applied at hand-off, and its process limit may not be above the
    /// job's). `job.input` must be empty. When `cancel`
    /// fires while the payload gets warm, the sandbox is destroyed (killed, its cgroup
    /// removed) before this returns an error.
    pub async fn start_waiting(
        &self,
        job: Job,
        preface: Vec<u8>,
        cancel: &CancellationToken,
    ) -> Result<Waiting, WaitError> {
        if job.input.is_some() {
            return Err(WaitError::InputGiven);
        }
        if !job.isolate_network {
            return Err(WaitError::HostNetwork);
        }
        let inner = self.inner.clone();
        let (uid, lease) = inner.uid_for(&job).map_err(SetupError::from)?;
        let plan = inner.plan(&job, uid).map_err(SetupError::from)?;
        let prepared = tokio::task::spawn_blocking(move || inner.prepare(true))
            .await
            .map_err(WaitError::Task)??;
        warm(prepared, lease, plan, job, preface, cancel).await
    }

    /// Hands `input` to a waiting sandbox and supervises it like
    /// [`Sandboxes::run_with_stdin`]: `limits` (the request's) are applied before the
    /// input is written, wall time starts now, and CPU time counts from now. `framing`
    /// bounds what is read from the driver's event channel.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_waiting(
        &self,
        waiting: Waiting,
        input: Vec<u8>,
        stdin: Vec<u8>,
        limits: Limits,
        framing: Framing,
        more_stdin: Option<mpsc::Receiver<Vec<u8>>>,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
        files: files::Files,
    ) -> Finished {
        let start = Instant::now();
        let Waiting {
            mut prepared,
            mut job,
            work,
            uid,
            ..
        } = waiting;
        if !prepared.is_alive() {
            return Finished::failed(start, SetupError::WaitingDied);
        }
        let above = match (job.limits.max_processes, limits.max_processes) {
            (0, _) => false,
            (_, 0) => true,
            (started, asked) => asked > started,
        };
        if above {
            return Finished::failed(start, SetupError::ProcessLimitAboveWaiting);
        }
        let cg_limits = cgroup_limits(&limits);
        if let Err(e) = prepared.cg.apply_limits(&cg_limits) {
            return Finished::failed(start, SetupError::ApplyLimits(e));
        }
        job.limits = limits;
        job.stdin = stdin;
        job.files = files;
        Supervision {
            job,
            framing,
            plan: None,
            prepared,
            work,
            owner: uid,
            deferred_input: Some(input),
            more_stdin,
            events,
            cancel,
            start,
            teardowns: self.inner.cgroups.teardowns(),
        }
        .run()
        .await
    }

    /// Tops the pool of idle helpers up in the background.
    fn refill(&self) {
        let target = self.inner.config.prestart;
        let have = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        if have + self.inner.refilling.load(Ordering::Relaxed) >= target
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        self.inner.refilling.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            match inner.prepare(true) {
                Ok(p) => inner.idle.lock().unwrap_or_else(|p| p.into_inner()).push(p),
                Err(e) => tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "pre-spawning a sandbox helper"
                ),
            }
            inner.refilling.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Gets a sandbox prepared for `job` warm: the job's limits on its cgroup, the plan
/// sent (input deferred), `preface` written to its input; returns once its payload
/// runs and, with a driver, has said it is ready. When `cancel` fires meanwhile, the
/// sandbox is destroyed (killed, its cgroup removed) before this returns an error.
async fn warm(
    mut prepared: Prepared,
    lease: Option<UidLease>,
    mut plan: plan::Plan,
    job: Job,
    preface: Vec<u8>,
    cancel: &CancellationToken,
) -> Result<Waiting, WaitError> {
    plan.deferred_input = true;
    // A lane has no payload: it is running once its init says it is a lane.
    let lane = plan.lane;
    if let Some(lease) = lease {
        prepared.cg.hold_uid(lease);
    }
    prepared
        .cg
        .apply_limits(&cgroup_limits(&job.limits))
        .map_err(SetupError::ApplyLimits)?;
    control::send(&prepared.control, &plan).map_err(SetupError::SendPlan)?;
    // The part of the input known ahead (the driver, the list), written while the
    // payload starts; the pipe stays open for the rest.
    if !preface.is_empty() {
        let pipe = prepared.input.try_clone().map_err(SetupError::Watch)?;
        tokio::task::spawn_blocking(move || {
            let mut pipe = std::fs::File::from(pipe);
            let _ = std::io::Write::write_all(&mut pipe, &preface);
        });
    }
    // Offered only once running: init passes out `/work`, then the payload's exec is
    // reported on the control socket (a setup failure there ends it now), and, with a
    // driver, once warm: it says so with one line on its event channel
    // (`{"event":"ready"}`) just before it waits for the rest of its input. Both are
    // read on one blocking thread, one after the other.
    let control = prepared.control.try_clone().map_err(SetupError::Watch)?;
    let events = if job.events && !lane {
        Some(prepared.events.try_clone().map_err(SetupError::Watch)?)
    } else {
        None
    };
    let deadline = Instant::now() + WARM_UP_TIMEOUT;
    let uid = plan.uid;
    // Cancelled, `prepared` goes before the return: the sandbox is killed and its
    // cgroup removed before the caller hears of it (the blocking reads end with the
    // sandbox's end of the socket and pipe).
    let (report, work, line) = tokio::select! {
        r = tokio::task::spawn_blocking(move || {
            let mut work = None;
            let report = loop {
                let (report, fds) = control::read_report_with_fds_by(
                    &control,
                    plan::MAX_CONTROL_MESSAGE,
                    deadline,
                )?;
                match report {
                    Report::Work => work = work.or(fds.into_iter().next()),
                    other => break other,
                }
            };
            let line = match (&report, events) {
                (Report::Started, Some(events)) => {
                    Some(control::read_line_by(&events, READY_LINE, deadline)?)
                }
                _ => None,
            };
            Ok::<_, control::ControlError>((report, work, line))
        }) => r,
        _ = cancel.cancelled() => return Err(prepared.destroyed(WaitError::Cancelled).await),
    }
    .map_err(WaitError::Task)?
    .map_err(WaitError::Waiting)?;
    match report {
        Report::Started if !lane => {}
        Report::Lane if lane => {}
        Report::SetupFailed {
            step,
            errno,
            detail,
        } => {
            return Err(SetupError::Step {
                step,
                errno,
                detail,
            }
            .into())
        }
        _ => return Err(WaitError::Unexpected),
    }
    if let Some(line) = line {
        let ready =
            serde_json::from_slice::<serde_json::Value>(&line).is_ok_and(|v| v["event"] == "ready");
        if !ready {
            return Err(WaitError::NotReady(
                String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned(),
            ));
        }
    }
    Ok(Waiting {
        prepared,
        job,
        since: Instant::now(),
        work,
        uid,
    })
}

impl Inner {
    /// The uid a job runs as: its own (builds), or one of the range that no other live
    /// sandbox has, with the lease that keeps it so.
    fn uid_for(&self, job: &Job) -> Result<(u32, Option<UidLease>), UidError> {
        if let Some(uid) = job.run_as {
            return Ok((uid, None));
        }
        let lease = self.uids.allocate()?;
        Ok((lease.uid(), Some(lease)))
    }
}
