//! Fresh, single-use sandboxes, driven from a multi-threaded async server.
//!
//! [`Sandboxes::run`] validates a [`Job`] on the host, creates the sandbox's cgroup,
//! spawns the helper (see `helper.rs`), places it in the cgroup before it creates
//! any namespace (and tells it so, for it to check), hands it the plan, streams
//! stdout, stderr and driver events back as they come, enforces the wall-clock, CPU and output limits, and always ends with an
//! [`Outcome`] and with nothing left behind: the cgroup is killed and removed on
//! every path, including panics and a dropped future.

pub mod cgroup;
mod helper;
pub mod plan;
pub mod seccomp;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use helper::helper_main;
use plan::{BindPlan, Plan, Report, Rlimits, RootPlan, MAX_CONTROL_MESSAGE};

use crate::sys;

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
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
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
    /// CPUs every sandbox is pinned to (cpuset syntax, e.g. "1" or "0-3").
    pub cpuset: Option<String>,
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
            cpuset: None,
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
        }
    }
}

/// What a sandbox streams while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// One line the payload's driver wrote on fd 4 (without the newline), at most the
    /// job's line bound long (see [`crate::events::Framing`]).
    Driver(Vec<u8>),
    /// What the supervisor dropped from fd 4 instead of forwarding it.
    DriverDropped(crate::events::Dropped),
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
}

impl Outcome {
    fn failed(start: Instant, error: String) -> Self {
        Outcome {
            status: Status::SetupFailed,
            exit_code: None,
            signal: None,
            wall_time: start.elapsed(),
            cpu_time: Duration::ZERO,
            peak_memory: 0,
            setup_time: Duration::ZERO,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            error: Some(error),
        }
    }
}

/// Creates and supervises sandboxes. Clones share the same state.
#[derive(Debug, Clone)]
pub struct Sandboxes {
    inner: Arc<Inner>,
}

/// Numbers sandbox cgroups (`sb-<pid>-<n>`) for the whole process: two `Sandboxes`
/// in one process (a test, a service and its builder) must never name the same cgroup.
static CGROUP_SEQ: AtomicU64 = AtomicU64::new(0);

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
    /// Sandboxes whose outcome is out and whose processes and cgroup are still going.
    teardowns: Arc<AtomicUsize>,
}

/// A spawned helper that has not received its plan yet.
#[derive(Debug)]
struct Prepared {
    /// Dropped first (fields drop in order): the cgroup kills everything but the
    /// helper, which reaps init, and only then the helper (see
    /// [`cgroup::SandboxCgroup::destroy`]); the child's kill-on-drop comes after.
    cg: cgroup::SandboxCgroup,
    child: tokio::process::Child,
    control: OwnedFd,
    events: OwnedFd,
    /// Write end of the pipe a deferred input goes into.
    input: OwnedFd,
}

impl Prepared {
    /// Whether the helper is still there; if not, it has been reaped by now.
    fn is_alive(&mut self) -> bool {
        let alive = matches!(self.child.try_wait(), Ok(None));
        if !alive {
            self.cg.helper_reaped();
        }
        alive
    }
}

/// A sandbox started ahead of its request: the payload runs (its interpreter loaded
/// and warmed) and waits for its input on fd 3. Single use: [`Sandboxes::run_waiting`]
/// consumes it; dropping it kills it and removes its cgroup.
#[derive(Debug)]
pub struct Waiting {
    prepared: Prepared,
    job: Job,
    since: Instant,
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
}

/// How long a waiting sandbox may take to get warm.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// What [`Sandboxes::start_waiting`] says when cancelled.
const CANCELLED_WAITING: &str = "cancelled while the sandbox got ready";

/// Reads one line (without its newline) from a blocking pipe, byte by byte so that
/// nothing after it is consumed, within `timeout`.
fn read_line(fd: &OwnedFd, timeout: Duration) -> Result<Vec<u8>, String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let end = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the sandbox did not get ready in time".into());
        }
        let ms =
            PollTimeout::try_from(left.as_millis().min(10_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("waiting for the sandbox: {e}")),
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(fd, &mut byte) {
            Ok(0) => return Err("the sandbox ended while getting ready".into()),
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) if line.len() < 4096 => line.push(byte[0]),
            Ok(_) => return Err("the sandbox wrote too much while getting ready".into()),
            Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => {}
            Err(e) => return Err(format!("reading from the sandbox: {e}")),
        }
    }
}

/// How often CPU usage is checked against the limit.
const CPU_POLL: Duration = Duration::from_millis(20);

/// RLIMIT_CPU (soft, whole seconds) of a payload whose CPU limit is `cpu_time`.
///
/// The CPU limit is the supervisor's: every [`CPU_POLL`] it reads the cgroup's usage
/// (the scheduler's exact runtime of every process of the sandbox) and stops the
/// sandbox once the limit is used up, so the outcome's `cpu_time` is then at least the
/// limit. RLIMIT_CPU is only a backstop, for a supervisor that stopped looking, and
/// runs on another clock: the kernel checks it against utime + stime, which with tick
/// accounting (`CONFIG_TICK_CPU_ACCOUNTING`, the usual build) charge a whole tick to
/// whichever task runs when the tick fires. Sharing a CPU with tasks that run between
/// ticks, a busy loop is charged more than it ran: on a loaded 2-CPU host (250 Hz) that
/// clock ran 10-20% ahead of the exact one, and at the limit RLIMIT_CPU ended snippets
/// after about 850 ms of a 1 s limit, as `cpu_limit` with 850 ms of CPU time. At twice
/// the limit it ends a snippet first only if the tick clock ran more than twice as fast
/// as the exact one; otherwise the exact usage reaches the limit first.
fn rlimit_cpu_seconds(cpu_time: Duration) -> u64 {
    (cpu_time.as_secs_f64() * 2.0).ceil().max(1.0) as u64
}

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
        let cgroups = cgroup::Manager::start(config.cpuset.clone())?;
        Ok(Sandboxes {
            inner: Arc::new(Inner {
                uids: UidAllocator::new(config.uid_base, config.uid_count),
                config,
                cgroups,
                root_dir,
                idle: Mutex::new(Vec::new()),
                refilling: AtomicUsize::new(0),
                teardowns: Arc::new(AtomicUsize::new(0)),
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

    /// Sandboxes being torn down after their outcome was returned.
    pub fn pending_teardowns(&self) -> usize {
        self.inner.teardowns.load(Ordering::SeqCst)
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
    pub async fn run(
        &self,
        job: Job,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
    ) -> Outcome {
        let framing = crate::events::Bounds::for_job(&job).framing;
        self.run_with_stdin(job, framing, None, events, cancel)
            .await
    }

    /// [`Sandboxes::run`], with more stdin after `job.stdin`: whatever arrives on
    /// `more_stdin` is written to the payload's stdin until the sender goes away. This
    /// is how a driver inside the sandbox gets answers from outside (the JShell driver
    /// waits for the verdict on each class before loading it). `framing` bounds what
    /// is read from the driver's event channel.
    pub async fn run_with_stdin(
        &self,
        job: Job,
        framing: crate::events::Framing,
        more_stdin: Option<mpsc::Receiver<Vec<u8>>>,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
    ) -> Outcome {
        let start = Instant::now();
        let inner = &self.inner;
        let (uid, lease) = match inner.uid_for(&job) {
            Ok(x) => x,
            Err(e) => return Outcome::failed(start, e.to_string()),
        };
        let plan = match inner.plan(&job, uid) {
            Ok(plan) => plan,
            Err(e) => return Outcome::failed(start, e),
        };
        let limits = cgroup_limits(&job.limits);
        // Pre-spawned helpers have their network namespace already: builds, which use
        // the host network, always get a helper of their own.
        let taken = if job.isolate_network {
            let mut taken = inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            // A helper that died while waiting (killed from outside) is not used: the
            // request gets a fresh one instead of a setup failure.
            if let Some(p) = taken.as_mut() {
                if !p.is_alive() {
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
            None => match inner.prepare(job.isolate_network) {
                Ok(p) => p,
                Err(e) => return Outcome::failed(start, e),
            },
        };
        // The uid goes back only once the sandbox's cgroup is gone.
        if let Some(lease) = lease {
            prepared.cg.hold_uid(lease);
        }
        // The request's limits go on before the helper learns what to run.
        if let Err(e) = prepared.cg.apply_limits(&limits) {
            return Outcome::failed(start, format!("applying limits: {}", error_chain(&e)));
        }
        supervise(
            job,
            framing,
            Some(plan),
            prepared,
            None,
            more_stdin,
            events,
            cancel,
            start,
            self.inner.teardowns.clone(),
        )
        .await
    }

    /// Starts `job` in a fresh sandbox whose input (fd 3) comes later but for its
    /// `preface`, and leaves it waiting: the payload starts now, so an interpreter can
    /// load and warm up. The job's limits hold while it waits (pass generous ones; the
    /// request's are applied at hand-off, and its process limit may not be above the
    /// job's). `job.input` must be empty. When `cancel` fires while the payload gets
    /// warm, the sandbox is destroyed (killed, its cgroup removed) before this returns
    /// an error.
    pub async fn start_waiting(
        &self,
        job: Job,
        preface: Vec<u8>,
        cancel: &CancellationToken,
    ) -> Result<Waiting, String> {
        if job.input.is_some() {
            return Err("a waiting sandbox takes its input later".into());
        }
        if !job.isolate_network {
            return Err("only isolated sandboxes can wait".into());
        }
        let inner = self.inner.clone();
        let (uid, lease) = inner.uid_for(&job).map_err(|e| e.to_string())?;
        let mut plan = inner.plan(&job, uid)?;
        plan.deferred_input = true;
        let limits = cgroup_limits(&job.limits);
        let mut prepared = tokio::task::spawn_blocking(move || inner.prepare(true))
            .await
            .map_err(|e| format!("preparing a sandbox: {e}"))??;
        if let Some(lease) = lease {
            prepared.cg.hold_uid(lease);
        }
        prepared
            .cg
            .apply_limits(&limits)
            .map_err(|e| format!("applying limits: {}", error_chain(&e)))?;
        let mut bytes = serde_json::to_vec(&plan).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        let control = std::os::unix::net::UnixStream::from(
            prepared
                .control
                .try_clone()
                .map_err(|e| format!("sending the plan: {e}"))?,
        );
        let mut control = control;
        std::io::Write::write_all(&mut control, &bytes)
            .map_err(|e| format!("sending the plan: {e}"))?;
        // The part of the input known ahead (the driver, the list), written while the
        // payload starts; the pipe stays open for the rest.
        let pipe = prepared
            .input
            .try_clone()
            .map_err(|e| format!("writing the input: {e}"))?;
        tokio::task::spawn_blocking(move || {
            let mut pipe = std::fs::File::from(pipe);
            let _ = std::io::Write::write_all(&mut pipe, &preface);
        });
        // Offered only once running: the payload's exec is reported on the control
        // socket (a setup failure there ends it now)...
        let control = prepared
            .control
            .try_clone()
            .map_err(|e| format!("watching the sandbox: {e}"))?;
        // Cancelled, `prepared` goes at the return: the sandbox is killed and its
        // cgroup removed before the caller hears of it (the blocking read ends with the
        // sandbox's end of the socket).
        let line = tokio::select! {
            r = tokio::task::spawn_blocking(move || read_line(&control, WARM_UP_TIMEOUT)) => r,
            _ = cancel.cancelled() => return Err(CANCELLED_WAITING.into()),
        }
        .map_err(|e| format!("waiting for the sandbox: {e}"))??;
        match serde_json::from_slice::<Report>(&line) {
            Ok(Report::Started) => {}
            Ok(Report::SetupFailed {
                step,
                errno,
                detail,
            }) => return Err(format!("{step}: {detail} (errno {errno})")),
            _ => return Err("unexpected report from a waiting sandbox".into()),
        }
        // ...and, with a driver, once warm: it says so with one line on its event
        // channel (`{"event":"ready"}`) just before it waits for the rest of its input.
        if job.events {
            let events = prepared
                .events
                .try_clone()
                .map_err(|e| format!("watching the sandbox: {e}"))?;
            let line = tokio::select! {
                r = tokio::task::spawn_blocking(move || read_line(&events, WARM_UP_TIMEOUT)) => r,
                _ = cancel.cancelled() => return Err(CANCELLED_WAITING.into()),
            }
            .map_err(|e| format!("waiting for the sandbox: {e}"))??;
            let ready = serde_json::from_slice::<serde_json::Value>(&line)
                .is_ok_and(|v| v["event"] == "ready");
            if !ready {
                return Err(format!(
                    "the sandbox did not get ready: {}",
                    String::from_utf8_lossy(&line[..line.len().min(200)])
                ));
            }
        }
        Ok(Waiting {
            prepared,
            job,
            since: Instant::now(),
        })
    }

    /// Hands `input` to a waiting sandbox and supervises it like [`Sandboxes::run`]:
    /// `limits` (the request's) are applied before the input is written, wall time
    /// starts now, and CPU time counts from now. `framing` bounds what is read from
    /// the driver's event channel.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_waiting(
        &self,
        waiting: Waiting,
        input: Vec<u8>,
        stdin: Vec<u8>,
        limits: Limits,
        framing: crate::events::Framing,
        more_stdin: Option<mpsc::Receiver<Vec<u8>>>,
        events: mpsc::Sender<Event>,
        cancel: CancellationToken,
    ) -> Outcome {
        let start = Instant::now();
        let Waiting {
            mut prepared,
            mut job,
            ..
        } = waiting;
        if !prepared.is_alive() {
            return Outcome::failed(start, "the waiting sandbox died before its request".into());
        }
        // Its RLIMIT_NPROC was set for the process limit it started with (see
        // `payload_nproc`): under a higher one it could refuse forks before pids.max.
        let above = match (job.limits.max_processes, limits.max_processes) {
            (0, _) => false,
            (_, 0) => true,
            (started, asked) => asked > started,
        };
        if above {
            return Outcome::failed(
                start,
                "the request's process limit is above the waiting sandbox's".into(),
            );
        }
        let cg_limits = cgroup_limits(&limits);
        if let Err(e) = prepared.cg.apply_limits(&cg_limits) {
            return Outcome::failed(start, format!("applying limits: {}", error_chain(&e)));
        }
        job.limits = limits;
        job.stdin = stdin;
        supervise(
            job,
            framing,
            None,
            prepared,
            Some(input),
            more_stdin,
            events,
            cancel,
            start,
            self.inner.teardowns.clone(),
        )
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
                Err(e) => tracing::warn!(error = %e, "pre-spawning a sandbox helper"),
            }
            inner.refilling.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Processes in a sandbox's cgroup that are not the payload's: the helper and the
/// sandbox's init (PID 1), both single-threaded and in the cgroup for the sandbox's
/// whole life. The helper has to be there (it creates the cgroup namespace, whose
/// root is its own cgroup, and forks init into it), so instead of leaving them out
/// the cgroup's process limit is raised by exactly their number: a request's
/// `max_processes` is what the snippet itself may have.
pub const SANDBOX_PROCESSES: u64 = 2;

/// RLIMIT_NPROC of a payload whose process limit is `max_processes` (0: none): a
/// backstop that never refuses a fork before the cgroup's pids.max does, since only
/// pids.max counts what it refuses (pids.events), which is what `process_limit` is.
///
/// The kernel counts a new task against RLIMIT_NPROC (the tasks of the real uid) as
/// `copy_process` begins and charges it to pids.max only near its end
/// (`cgroup_can_fork`): forks in flight count against the first, not yet the second.
/// The uid's tasks are the payload's only (no other live sandbox has the uid, which
/// goes back only once every task of its sandbox is released; the helper and init run
/// as root); pids.max keeps them to `max_processes`, each with at most one fork in
/// flight, so RLIMIT_NPROC sees at most twice `max_processes`.
pub fn payload_nproc(max_processes: u64) -> Option<u64> {
    match max_processes {
        0 => None,
        n => Some(n.saturating_mul(2)),
    }
}

/// RLIMIT_MEMLOCK of the payload (bytes): a page or two for a library that locks a
/// secret, nothing to pin memory with.
pub const PAYLOAD_LOCKED_MEMORY: u64 = 64 << 10;
/// RLIMIT_SIGPENDING of the payload: queued signals of its uid.
pub const PAYLOAD_PENDING_SIGNALS: u64 = 1024;

/// The cgroup part of a job's limits.
fn cgroup_limits(l: &Limits) -> cgroup::CgroupLimits {
    cgroup::CgroupLimits {
        memory_bytes: l.memory_bytes,
        // 0 leaves it unlimited.
        max_processes: match l.max_processes {
            0 => 0,
            n => n.saturating_add(SANDBOX_PROCESSES),
        },
        cpu_millis: l.cpu_millis,
        cpu_shares: 0,
    }
}

/// Why no uid could be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error(
        "every sandbox uid ({first}..={last}) belongs to a live sandbox; \
         fewer sandboxes at once or a larger uid range (uid_count) are needed"
    )]
    Exhausted { first: u32, last: u32 },
}

/// Hands out the uids sandboxes run as, from `base .. base + count`, each to one live
/// sandbox at a time. A uid comes back (through its [`UidLease`]) only once its
/// sandbox is completely gone: the lease is held by the sandbox's cgroup and returned
/// after the cgroup was emptied, its tasks released and the cgroup removed (a cgroup
/// that cannot be removed keeps its uid forever). Uids never used go first, then the
/// least recently returned one.
///
/// Besides, each uid handed out is claimed host-wide (well, in the network namespace)
/// by binding an abstract unix socket named after it, held with the lease: a second
/// service or `jsheets-runtime run` on the same host with an overlapping range skips
/// the uids the other holds instead of sharing them.
#[derive(Debug)]
pub struct UidAllocator {
    base: u32,
    count: u32,
    state: Mutex<UidState>,
}

#[derive(Debug, Default)]
struct UidState {
    /// Offsets below this have been handed out at least once.
    fresh: u32,
    /// Returned offsets, least recently returned first.
    returned: VecDeque<u32>,
}

/// One uid of an [`UidAllocator`], held by one sandbox; dropping it gives it back.
#[derive(Debug)]
pub struct UidLease {
    uid: u32,
    allocator: Arc<UidAllocator>,
    /// The host-wide claim (see [`UidAllocator`]).
    claim: Option<OwnedFd>,
}

impl UidLease {
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Never gives the uid back (its sandbox could not be shown to be gone).
    pub fn quarantine(self) {
        tracing::error!(
            uid = self.uid,
            "sandbox uid withheld: its sandbox may not be gone"
        );
        std::mem::forget(self);
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        // The claim goes first: whoever gets the uid next can claim it.
        drop(self.claim.take());
        let mut state = self
            .allocator
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        state.returned.push_back(self.uid - self.allocator.base);
    }
}

impl UidAllocator {
    pub fn new(base: u32, count: u32) -> Arc<Self> {
        // Never past the last valid uid (u32::MAX is "no uid").
        let count = count.min(u32::MAX - 1 - base.min(u32::MAX - 1));
        Arc::new(UidAllocator {
            base,
            count,
            state: Mutex::new(UidState::default()),
        })
    }

    /// A uid no other live sandbox of this allocator (or of another process on the
    /// host) has.
    pub fn allocate(self: &Arc<Self>) -> Result<UidLease, UidError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut skipped = Vec::new();
        let result = loop {
            let offset = if state.fresh < self.count {
                state.fresh += 1;
                state.fresh - 1
            } else if let Some(offset) = state.returned.pop_front() {
                offset
            } else {
                break Err(UidError::Exhausted {
                    first: self.base,
                    last: self.base + self.count.saturating_sub(1),
                });
            };
            let uid = self.base + offset;
            match claim_uid(uid) {
                Some(claim) => {
                    break Ok(UidLease {
                        uid,
                        allocator: self.clone(),
                        claim: Some(claim),
                    })
                }
                // Another process holds it: try the others, and this one again later.
                None => skipped.push(offset),
            }
        };
        state.returned.extend(skipped);
        result
    }
}

/// Binds the abstract unix socket that says `uid` is in use on this host; `None` if
/// another process has it. A host where the claim cannot be made at all (no unix
/// sockets) relies on the ranges being disjoint: the uid is handed out unclaimed.
fn claim_uid(uid: u32) -> Option<OwnedFd> {
    use nix::sys::socket::{bind, socket, UnixAddr};
    let name = format!("jsheets-runtime/sandbox-uid/{uid}");
    let Ok(addr) = UnixAddr::new_abstract(name.as_bytes()) else {
        return None;
    };
    let Ok(sock) = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return None;
    };
    match bind(sock.as_raw_fd(), &addr) {
        Ok(()) => Some(sock),
        Err(nix::Error::EADDRINUSE) => None,
        Err(e) => {
            tracing::warn!(error = %e, "claiming a sandbox uid host-wide");
            Some(sock)
        }
    }
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

    /// Spawns a helper into a fresh cgroup of its own. The helper only waits for its
    /// plan; it is in the cgroup before it reads it, so every process it makes is
    /// counted and limited from the first instruction.
    fn prepare(&self, early_unshare: bool) -> Result<Prepared, String> {
        let seq = CGROUP_SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("sb-{}-{seq}", std::process::id());
        let mut cg = self
            .cgroups
            .create(&id, &cgroup::CgroupLimits::default())
            .map_err(|e| format!("creating the cgroup: {}", error_chain(&e)))?;
        let spawn = || -> std::io::Result<(tokio::process::Child, OwnedFd, OwnedFd, OwnedFd)> {
            let (parent_sock, child_sock) = socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            let (ev_read, ev_write) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
            let (in_read, in_write) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
            let child_sock = sys::dup_high(&child_sock)?;
            let ev_write = sys::dup_high(&ev_write)?;
            let in_read = sys::dup_high(&in_read)?;
            let mut cmd = tokio::process::Command::new(&self.config.helper);
            // Not the host path of the binary: the sandbox's init is a fork of the
            // helper, and its /proc/1/cmdline can be read from inside.
            cmd.arg0("jsheets-sandbox");
            cmd.args(&self.config.helper_args);
            if early_unshare {
                cmd.arg(helper::EARLY_UNSHARE_ARG);
            }
            cmd.env_clear()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            sys::map_fds_on_spawn(
                &mut cmd,
                [
                    (child_sock.as_raw_fd(), plan::HELPER_CONTROL_FD),
                    (ev_write.as_raw_fd(), plan::HELPER_EVENTS_FD),
                    (in_read.as_raw_fd(), plan::HELPER_INPUT_FD),
                ],
            );
            let child = cmd.spawn()?;
            // Our copies of the child's ends go now, so EOF means the sandbox is done.
            drop((child_sock, ev_write, in_read));
            Ok((child, parent_sock, ev_read, in_write))
        };
        let (child, control, events, input) =
            spawn().map_err(|e| format!("spawning the sandbox helper: {e}"))?;
        let pid = child.id().ok_or("the sandbox helper exited at once")?;
        cg.add(pid)
            .map_err(|e| format!("placing the helper in its cgroup: {}", error_chain(&e)))?;
        // Only now may the helper create its cgroup namespace: it waits for this, and
        // checks that /proc/self/cgroup says the same.
        let placement = plan::Placement {
            cgroups: self.cgroups.placement(&id),
        };
        let tell = || -> std::io::Result<()> {
            let mut line = serde_json::to_vec(&placement)?;
            line.push(b'\n');
            let mut socket = std::os::unix::net::UnixStream::from(control.try_clone()?);
            std::io::Write::write_all(&mut socket, &line)
        };
        tell().map_err(|e| format!("telling the helper its cgroup: {e}"))?;
        Ok(Prepared {
            cg,
            child,
            control,
            events,
            input,
        })
    }

    /// Validates the job on the host and turns it into the helper's plan.
    fn plan(&self, job: &Job, uid: u32) -> Result<Plan, String> {
        let program = job.argv.first().ok_or("argv is empty")?;
        if !program.starts_with('/') {
            return Err(format!("program {program:?} is not an absolute path"));
        }
        if job
            .argv
            .iter()
            .chain(job.env.iter().flat_map(|(k, v)| [k, v]))
            .any(|s| s.contains('\0'))
        {
            return Err("argv or environment contains a NUL byte".into());
        }
        if job.env.iter().any(|(k, _)| k.is_empty() || k.contains('=')) {
            return Err("environment variable names must be non-empty and contain no '='".into());
        }
        check_target(&job.cwd)?;
        let (root, writable_binds, hidden) = match &job.filesystem {
            Filesystem::Runtime(mounts) => {
                let mut binds = Vec::new();
                for (source, target) in mounts {
                    check_target(target)?;
                    if !source.is_absolute() || !source.exists() {
                        return Err(format!("mount source {} does not exist", source.display()));
                    }
                    binds.push(BindPlan {
                        source: source.clone(),
                        target: target.clone(),
                    });
                }
                (RootPlan::Runtime { mounts: binds }, vec![], vec![])
            }
            Filesystem::HostReadOnly { writable, hidden } => {
                for p in writable.iter().chain(hidden) {
                    check_target(p)?;
                }
                (RootPlan::HostReadOnly, writable.clone(), hidden.clone())
            }
        };
        let l = &job.limits;
        let cpu_seconds = l.cpu_time.as_secs_f64().ceil().max(1.0) as u64;
        Ok(Plan {
            root_dir: self.root_dir.clone(),
            root,
            writable_binds,
            hidden,
            isolate_network: job.isolate_network,
            hostname: "sandbox".into(),
            uid,
            gid: uid,
            work_bytes: l.work_bytes,
            tmp_bytes: l.tmp_bytes,
            shm_bytes: l.tmp_bytes.min(64 << 20),
            argv: job.argv.clone(),
            env: job.env.clone(),
            cwd: job.cwd.clone(),
            rlimits: Rlimits {
                cpu_seconds: rlimit_cpu_seconds(l.cpu_time),
                file_size: match job.filesystem {
                    Filesystem::Runtime(_) => None,
                    Filesystem::HostReadOnly { .. } => Some(l.file_size_bytes),
                },
                // Memory is the cgroup's to bound; the JVM reserves (and never uses)
                // far more address space than any sane limit.
                address_space: None,
                stack: l.stack_bytes,
                core: 0,
                rss: None,
                processes: payload_nproc(l.max_processes),
                open_files: l.open_files,
                locked_memory: PAYLOAD_LOCKED_MEMORY,
                file_locks: l.open_files,
                pending_signals: PAYLOAD_PENDING_SIGNALS,
                // POSIX message queues are not for snippets (seccomp denies mq_open).
                message_queue_bytes: 0,
                nice: 0,
                realtime_priority: 0,
                realtime_us: cpu_seconds.saturating_mul(1_000_000),
            },
            input_len: job.input.as_ref().map(|i| i.len() as u64),
            deferred_input: false,
            has_events: job.events,
        })
    }
}

/// Sandbox paths must be absolute and normalized: no `.`, `..` or empty components.
fn check_target(path: &Path) -> Result<(), String> {
    let ok = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path
            .as_os_str()
            .as_encoded_bytes()
            .windows(2)
            .any(|w| w == b"//");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "sandbox path {} is not absolute and normalized",
            path.display()
        ))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Why the supervisor stopped a sandbox itself.
#[derive(Debug, Clone, Copy)]
enum KillReason {
    Wall,
    Cpu,
    Output,
    Cancelled,
}

struct Streams {
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    events: Option<tokio::net::unix::pipe::Receiver>,
    control: Option<tokio::net::UnixStream>,
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    job: Job,
    framing: crate::events::Framing,
    plan: Option<Plan>,
    prepared: Prepared,
    deferred_input: Option<Vec<u8>>,
    mut more_stdin: Option<mpsc::Receiver<Vec<u8>>>,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    start: Instant,
    teardowns: Arc<AtomicUsize>,
) -> Outcome {
    let Prepared {
        mut child,
        control,
        events: ev_read,
        input: input_pipe,
        mut cg,
    } = prepared;
    // CPU the sandbox spent before its request (warming up) is not the request's.
    let cpu_base = if plan.is_none() {
        cg.cpu_time()
    } else {
        Duration::ZERO
    };
    match deferred_input {
        Some(input) => {
            let pipe = std::fs::File::from(input_pipe);
            // Written alongside supervision: a payload that reads slowly (or not at
            // all) cannot stall it; the pipe closes when the writer is done.
            tokio::task::spawn_blocking(move || {
                let mut pipe = pipe;
                let _ = std::io::Write::write_all(&mut pipe, &input);
            });
        }
        None => drop(input_pipe),
    }
    let connect = || -> std::io::Result<(tokio::net::UnixStream, Option<tokio::net::unix::pipe::Receiver>)> {
        let control = std::os::unix::net::UnixStream::from(control);
        control.set_nonblocking(true)?;
        let ev = if job.events { Some(tokio::net::unix::pipe::Receiver::from_owned_fd(ev_read)?) } else { None };
        Ok((tokio::net::UnixStream::from_std(control)?, ev))
    };
    let (mut control, ev_read) = match connect() {
        Ok(x) => x,
        Err(e) => return Outcome::failed(start, format!("watching the sandbox helper: {e}")),
    };
    // The plan, then the raw input bytes it announces (a waiting sandbox has its plan).
    let sent = async {
        let Some(plan) = &plan else {
            return Ok(());
        };
        let mut bytes = serde_json::to_vec(plan).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        control.write_all(&bytes).await?;
        if let Some(input) = &job.input {
            control.write_all(input).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    if let Err(e) = sent.await {
        return Outcome::failed(start, format!("sending the plan: {e}"));
    }
    if let Some(mut stdin) = child.stdin.take() {
        let data = job.stdin.clone();
        let mut more = more_stdin.take();
        tokio::spawn(async move {
            // A payload that never reads stdin is fine: the write just stops (and the
            // task ends with the pipe when the sandbox dies).
            if stdin.write_all(&data).await.is_err() {
                return;
            }
            if let Some(more) = more.as_mut() {
                while let Some(chunk) = more.recv().await {
                    if stdin.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let mut streams = Streams {
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        events: ev_read,
        control: Some(control),
    };

    let limits = &job.limits;
    let deadline = tokio::time::Instant::from_std(start + limits.wall_time);
    let mut cpu_tick = tokio::time::interval(CPU_POLL);
    cpu_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut kill: Option<KillReason> = None;
    let mut report: Option<Report> = None;
    let mut setup_error: Option<String> = None;
    let mut setup_time = Duration::ZERO;
    let mut helper_done = false;
    let (mut out_n, mut err_n) = (0u64, 0u64);
    let (mut out_trunc, mut err_trunc) = (false, false);
    // Nothing on the event channel is trusted: lines are bounded, one is held at most,
    // past the channel's budget everything is dropped, and a line the end (or a kill)
    // cuts is no event: the drivers end every line (see `crate::events`).
    let mut reader = crate::events::LineReader::new(framing);
    let mut buf_out = vec![0u8; 64 * 1024];
    let mut buf_err = vec![0u8; 64 * 1024];
    let mut buf_ev = vec![0u8; 64 * 1024];
    let mut buf_ctl = vec![0u8; 4096];
    let mut ctl_pending = Vec::new();
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut receiver_gone = false;

    let may_end_early = matches!(job.filesystem, Filesystem::Runtime(_));
    loop {
        let open = streams.stdout.is_some()
            || streams.stderr.is_some()
            || streams.events.is_some()
            || streams.control.is_some();
        if helper_done && !open {
            break;
        }
        // The payload has ended and its output is all read: the outcome is known. Its
        // init and the helper still exit and the namespaces go (about a millisecond);
        // that finishes after the outcome is returned. Not for a sandbox with host
        // paths bound writable (runtime builds): its caller works on them next, and
        // nothing of the sandbox may still run then.
        let ended = matches!(
            report,
            Some(Report::Exited { .. } | Report::Signaled { .. })
        );
        if ended
            && may_end_early
            && kill.is_none()
            && streams.stdout.is_none()
            && streams.stderr.is_none()
            && streams.events.is_none()
        {
            break;
        }
        if kill.is_some() && drain_deadline.is_none() {
            if let Err(e) = cg.kill() {
                tracing::error!(error = %e, "killing the sandbox");
            }
            // Pipes close as the processes die; never wait on them forever.
            drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
        }
        // Biased: output first. The driver flushes stdout and stderr before it writes an
        // event, so reading them first keeps output attributed to the right component.
        tokio::select! {
            biased;
            r = read_opt(&mut streams.stdout, &mut buf_out) => match r {
                Some(chunk) => {
                    if forward(chunk, &mut out_n, limits.output_bytes, &mut out_trunc, &events, Event::Stdout).await.is_err() { receiver_gone = true; }
                    if out_trunc && kill.is_none() { kill = Some(KillReason::Output); }
                }
                None => streams.stdout = None,
            },
            r = read_opt(&mut streams.stderr, &mut buf_err) => match r {
                Some(chunk) => {
                    if forward(chunk, &mut err_n, limits.output_bytes, &mut err_trunc, &events, Event::Stderr).await.is_err() { receiver_gone = true; }
                    if err_trunc && kill.is_none() { kill = Some(KillReason::Output); }
                }
                None => streams.stderr = None,
            },
            r = read_opt(&mut streams.events, &mut buf_ev) => match r {
                Some(mut chunk) => {
                    while let Some(frame) = reader.next_frame(&mut chunk) {
                        if events.send(driver_event(frame)).await.is_err() { receiver_gone = true; }
                    }
                    // Python-level output travels as events: past the channel's budget
                    // the sandbox is stopped, as for output over its limit.
                    if reader.over_budget() && kill.is_none() {
                        kill = Some(KillReason::Output);
                    }
                }
                None => streams.events = None,
            },
            r = read_opt(&mut streams.control, &mut buf_ctl) => match r {
                Some(chunk) => {
                    ctl_pending.extend_from_slice(chunk);
                    while let Some(pos) = ctl_pending.iter().position(|&b| b == b'\n') {
                        let msg: Vec<u8> = ctl_pending.drain(..=pos).collect();
                        match serde_json::from_slice::<Report>(&msg) {
                            Ok(Report::Started) => setup_time = start.elapsed(),
                            Ok(Report::SetupFailed { step, errno, detail }) => {
                                setup_error = Some(format!("{step}: {detail} (errno {errno})"));
                            }
                            Ok(r) => report = Some(r),
                            Err(e) => setup_error = Some(format!("unreadable report from the sandbox: {e}")),
                        }
                    }
                    if ctl_pending.len() > MAX_CONTROL_MESSAGE {
                        setup_error = Some("oversized report from the sandbox".into());
                        streams.control = None;
                    }
                }
                None => streams.control = None,
            },
            _ = child.wait(), if !helper_done => {
                // Reaped: it reaped init before it exited, so nothing of the sandbox is
                // left unless the helper was killed (then init's inheritor reaps it).
                helper_done = true;
                cg.helper_reaped();
            }
            _ = tokio::time::sleep_until(deadline), if kill.is_none() => kill = Some(KillReason::Wall),
            _ = cpu_tick.tick(), if kill.is_none() => {
                if cg.cpu_time().saturating_sub(cpu_base) >= limits.cpu_time { kill = Some(KillReason::Cpu); }
            },
            _ = cancel.cancelled(), if kill.is_none() => kill = Some(KillReason::Cancelled),
            _ = sleep_opt(drain_deadline) => {
                tracing::warn!("sandbox streams still open after the kill; closing them");
                break;
            }
        }
        if receiver_gone && kill.is_none() {
            kill = Some(KillReason::Cancelled);
        }
    }
    let mut usage;
    if helper_done {
        // Background processes of the payload die with its pid namespace; this also
        // covers anything still alive when a limit stopped the run.
        if let Err(e) = cg.kill() {
            tracing::error!(error = %e, "killing the sandbox");
        }
        usage = cg.usage();
        if let Err(e) = cg.destroy() {
            tracing::error!(error = %e, "removing the sandbox cgroup");
        }
    } else {
        // Ended early (see the loop): the usage is final, the rest goes in the
        // background, counted until it is done.
        usage = cg.usage();
        teardowns.fetch_add(1, Ordering::SeqCst);
        drop(streams);
        tokio::spawn(async move {
            // Waited for (or failing), the helper's pid is no longer known to be its own.
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_ok()
            {
                cg.helper_reaped();
            }
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = cg.destroy() {
                    tracing::error!(error = %e, "removing the sandbox cgroup");
                }
            })
            .await;
            teardowns.fetch_sub(1, Ordering::SeqCst);
        });
    }
    usage.cpu_time = usage.cpu_time.saturating_sub(cpu_base);
    let (exit_code, signal) = match report {
        Some(Report::Exited { code }) => (Some(code), None),
        Some(Report::Signaled { signal }) => (None, Some(signal)),
        _ => (None, None),
    };
    let status = if setup_error.is_some() {
        Status::SetupFailed
    } else if usage.pids_limit_hits > 0 && matches!(kill, Some(KillReason::Wall | KillReason::Cpu))
    {
        // A fork failed before the clock ran out (the kill stops every fork): the
        // process limit was the first limit hit, however long the snippet went on.
        Status::ProcessLimit
    } else if let Some(k) = kill {
        match k {
            KillReason::Wall => Status::WallTimeout,
            KillReason::Cpu => Status::CpuLimit,
            KillReason::Output => Status::OutputLimit,
            KillReason::Cancelled => Status::Cancelled,
        }
    } else if usage.oom_kills > 0 {
        Status::MemoryLimit
    } else if signal == Some(libc::SIGXCPU)
        || (signal == Some(libc::SIGKILL) && usage.cpu_time >= limits.cpu_time)
    {
        Status::CpuLimit
    } else if usage.pids_limit_hits > 0 {
        // Reported even when the payload coped with the failed fork: a limit was hit.
        Status::ProcessLimit
    } else {
        match (exit_code, signal) {
            (Some(0), _) => Status::Ok,
            (Some(_), _) => Status::ExitedNonZero,
            (None, Some(_)) => Status::Signaled,
            (None, None) => {
                setup_error =
                    Some("the sandbox ended without reporting the payload's status".into());
                Status::SetupFailed
            }
        }
    };
    Outcome {
        status,
        exit_code,
        signal,
        wall_time: start.elapsed(),
        cpu_time: usage.cpu_time,
        peak_memory: usage.peak_memory,
        setup_time,
        stdout_bytes: out_n,
        stderr_bytes: err_n,
        stdout_truncated: out_trunc,
        stderr_truncated: err_trunc,
        error: setup_error,
    }
}

fn driver_event(frame: crate::events::Frame) -> Event {
    match frame {
        crate::events::Frame::Line(line) => Event::Driver(line),
        crate::events::Frame::Dropped(d) => Event::DriverDropped(d),
    }
}

/// Sends what fits under `cap` and records whether anything was dropped.
async fn forward(
    chunk: &[u8],
    count: &mut u64,
    cap: u64,
    truncated: &mut bool,
    events: &mpsc::Sender<Event>,
    wrap: fn(Vec<u8>) -> Event,
) -> Result<(), ()> {
    let room = cap.saturating_sub(*count) as usize;
    let keep = &chunk[..chunk.len().min(room)];
    *count += keep.len() as u64;
    if keep.len() < chunk.len() {
        *truncated = true;
    }
    if keep.is_empty() {
        return Ok(());
    }
    events.send(wrap(keep.to_vec())).await.map_err(|_| ())
}

async fn read_opt<'a, R: tokio::io::AsyncRead + Unpin>(
    r: &mut Option<R>,
    buf: &'a mut [u8],
) -> Option<&'a [u8]> {
    match r {
        Some(r) => match r.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(&buf[..n]),
        },
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimit_cpu_is_a_backstop_at_twice_the_limit() {
        assert_eq!(rlimit_cpu_seconds(Duration::from_secs(1)), 2);
        assert_eq!(rlimit_cpu_seconds(Duration::from_millis(6500)), 13);
        assert_eq!(rlimit_cpu_seconds(Duration::from_millis(100)), 1);
        assert_eq!(rlimit_cpu_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn the_process_limit_allows_for_the_helper_and_init() {
        let limits = Limits {
            max_processes: 5,
            ..Limits::default()
        };
        assert_eq!(cgroup_limits(&limits).max_processes, 5 + SANDBOX_PROCESSES);
        let unlimited = Limits {
            max_processes: 0,
            ..Limits::default()
        };
        assert_eq!(cgroup_limits(&unlimited).max_processes, 0);
    }

    #[test]
    fn rlimit_nproc_covers_every_task_with_a_fork_in_flight() {
        let limits = Limits {
            max_processes: 16,
            ..Limits::default()
        };
        let payload = cgroup_limits(&limits).max_processes - SANDBOX_PROCESSES;
        assert_eq!(payload_nproc(limits.max_processes), Some(2 * payload));
        assert_eq!(payload_nproc(0), None);
        assert_eq!(payload_nproc(u64::MAX), Some(u64::MAX));
    }

    /// A range of `count` uids of its own per test (claims are host-wide), far above
    /// any service's.
    fn allocator(test: u32, count: u32) -> Arc<UidAllocator> {
        let base = 3_000_000_000 + (std::process::id() % 100_000) * 256 + test * 32;
        UidAllocator::new(base, count)
    }

    #[test]
    fn a_held_uid_is_never_handed_out_again() {
        let uids = allocator(0, 4);
        let held: Vec<UidLease> = (0..4).map(|_| uids.allocate().unwrap()).collect();
        let distinct: std::collections::HashSet<u32> = held.iter().map(UidLease::uid).collect();
        assert_eq!(distinct.len(), 4);
        assert!(distinct
            .iter()
            .all(|u| (uids.base..uids.base + 4).contains(u)));
        // All held: the next one is an error that says so, and stays one.
        for _ in 0..3 {
            let err = uids.allocate().unwrap_err();
            assert_eq!(
                err,
                UidError::Exhausted {
                    first: uids.base,
                    last: uids.base + 3
                }
            );
            assert!(err.to_string().contains("every sandbox uid"), "{err}");
        }
    }

    #[test]
    fn a_released_uid_comes_back_least_recently_released_first() {
        let uids = allocator(1, 3);
        let mut held: Vec<UidLease> = (0..3).map(|_| uids.allocate().unwrap()).collect();
        let second = held.remove(1);
        let first = held.remove(0);
        let (a, b) = (first.uid(), second.uid());
        drop(first);
        drop(second);
        assert_eq!(uids.allocate().map(|l| l.uid()), Ok(a));
        // The lease above went back at once; `b` was released before it.
        assert_eq!(uids.allocate().map(|l| l.uid()), Ok(b));
        let again = uids.allocate().unwrap();
        assert_eq!(again.uid(), a);
    }

    #[test]
    fn a_quarantined_uid_never_comes_back() {
        let uids = allocator(2, 2);
        let lost = uids.allocate().unwrap();
        let lost_uid = lost.uid();
        lost.quarantine();
        let other = uids.allocate().unwrap();
        assert_ne!(other.uid(), lost_uid);
        drop(other);
        for _ in 0..4 {
            assert_ne!(uids.allocate().unwrap().uid(), lost_uid);
        }
        let _held = uids.allocate().unwrap();
        assert!(uids.allocate().is_err());
    }

    #[test]
    fn uids_held_by_another_allocator_on_the_host_are_skipped() {
        // Two services with the same range (say `serve` and `run` on one host).
        let one = allocator(3, 4);
        let other = UidAllocator::new(one.base, 4);
        let a = one.allocate().unwrap();
        let b = other.allocate().unwrap();
        assert_ne!(a.uid(), b.uid());
        let rest: Vec<UidLease> = (0..2).map(|_| other.allocate().unwrap()).collect();
        // `other` holds three, `one` holds one: nothing left for either.
        assert!(one.allocate().is_err());
        assert!(other.allocate().is_err());
        drop(rest);
        let c = one.allocate().unwrap();
        assert!(![a.uid(), b.uid()].contains(&c.uid()));
    }
}
