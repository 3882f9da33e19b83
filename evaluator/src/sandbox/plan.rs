//! What the supervisor tells the helper, and what the helper tells back.
//!
//! Both travel over the control socket (fd 3 of the helper) as JSON, one message
//! per datagram. The plan never travels through argv or the environment, so
//! nothing a client sends can set it.

use std::path::PathBuf;

use nix::sys::resource::Resource;
use serde::{Deserialize, Serialize};

/// File descriptor numbers inside the helper process.
pub const HELPER_CONTROL_FD: i32 = 3;
pub const HELPER_EVENTS_FD: i32 = 5;
/// Read end of a pipe the supervisor may write the input into later (pooled sandboxes).
pub const HELPER_INPUT_FD: i32 = 6;
/// File descriptor numbers the payload sees.
pub const PAYLOAD_INPUT_FD: i32 = 3;
pub const PAYLOAD_EVENTS_FD: i32 = 4;

/// Largest plan; plans are small because code travels as input after it.
pub const MAX_CONTROL_MESSAGE: usize = 256 * 1024;
/// Largest input the helper accepts.
pub const MAX_INPUT: u64 = 256 << 20;

/// Everything the helper needs to build one sandbox, already validated by the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Empty directory the new root tmpfs is mounted on (inside the new mount namespace).
    pub root_dir: PathBuf,
    pub root: RootPlan,
    /// Extra read-write binds (builder sandboxes only): host path, same path inside.
    pub writable_binds: Vec<PathBuf>,
    /// Paths hidden under an empty read-only tmpfs (builder sandboxes only).
    pub hidden: Vec<PathBuf>,
    /// New network namespace with only loopback up; false only for builder sandboxes.
    pub isolate_network: bool,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    pub work_bytes: u64,
    pub tmp_bytes: u64,
    pub shm_bytes: u64,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub rlimits: Rlimits,
    /// Length of the input that follows the plan on the control socket; the helper
    /// puts it in a sealed memfd the payload gets as fd 3.
    pub input_len: Option<u64>,
    /// The input comes later, through the pipe on the helper's fd 6, which the payload
    /// gets as fd 3 (a sandbox started ahead of its request).
    #[serde(default)]
    pub deferred_input: bool,
    /// Whether fd 5 of the helper (driver events) is passed on as the payload's fd 4.
    pub has_events: bool,
    #[serde(default)]
    pub payload: Payload,
    /// Read-only datasets (host directory, `/data/<name>` inside), mounted nosuid,
    /// nodev and noexec.
    #[serde(default)]
    pub datasets: Vec<BindPlan>,
    /// Init waits for [`FilesPlaced`] after it passed out `/work` ([`Report::Work`]),
    /// before the payload may start: the request's files go in first.
    #[serde(default)]
    pub await_files: bool,
    /// A lane (see `sandbox::zygote`): init builds the root, then, instead of a
    /// payload, forks one light sandbox per request the supervisor sends, each in a
    /// pid, mount and ipc namespace of its own on this root, with fresh `/work`,
    /// `/tmp`, `/dev/shm` and `/proc`. Only for a helper forked from a zygote.
    #[serde(default)]
    pub lane: bool,
}

/// The supervisor's word that a request's files are in `/work` (see
/// [`Plan::await_files`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesPlaced {
    pub placed: bool,
}

/// What the payload becomes once its sandbox is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// It execs `argv` unprivileged: every sandbox but a zygote.
    #[default]
    Exec,
    /// It execs `argv` as root with its capabilities and no seccomp filter, in no
    /// cgroup namespace of its own: a zygote, which builds sandboxes for requests and
    /// never runs their code (see `sandbox::zygote`).
    Zygote,
    /// It drops every privilege like `Exec` and returns to the helper's caller
    /// instead of exec'ing: a helper forked from a zygote, whose warm interpreter
    /// becomes the payload. Refused by a helper that was exec'd.
    Return,
}

/// The filesystem the payload sees.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RootPlan {
    /// A tmpfs root holding only these read-only binds (evaluations).
    Runtime { mounts: Vec<BindPlan> },
    /// The host root, recursively read-only (runtime builds).
    HostReadOnly,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindPlan {
    pub source: PathBuf,
    pub target: PathBuf,
}

/// Every resource limit of the payload, each set explicitly (soft = hard unless said):
/// nothing is inherited from the root that started the sandbox. `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimits {
    /// RLIMIT_CPU soft limit; the hard limit is one second more (SIGXCPU, then SIGKILL).
    /// A backstop at twice the job's CPU limit: the limit itself is the supervisor's,
    /// on the cgroup's exact usage (see `rlimit_cpu_seconds` in the supervisor).
    pub cpu_seconds: u64,
    /// RLIMIT_FSIZE; `None` leaves it unlimited (every writable filesystem is a
    /// size-limited tmpfs, which then reports ENOSPC when full).
    pub file_size: Option<u64>,
    /// RLIMIT_DATA and RLIMIT_AS: `None`; memory is bounded by the cgroup, and the JVM
    /// reserves far more address space than it ever uses.
    pub address_space: Option<u64>,
    pub stack: u64,
    /// RLIMIT_CORE: 0, no core dumps.
    pub core: u64,
    /// RLIMIT_RSS: ignored by Linux; `None`.
    pub rss: Option<u64>,
    /// RLIMIT_NPROC: tasks of the sandbox's uid, which no other live sandbox has; a
    /// backstop above the cgroup's pids.max (`None`: no process limit).
    pub processes: Option<u64>,
    pub open_files: u64,
    /// RLIMIT_MEMLOCK in bytes.
    pub locked_memory: u64,
    /// RLIMIT_LOCKS (ignored by Linux since 2.4.25).
    pub file_locks: u64,
    /// RLIMIT_SIGPENDING: queued signals of the uid.
    pub pending_signals: u64,
    /// RLIMIT_MSGQUEUE: bytes in POSIX message queues of the uid.
    pub message_queue_bytes: u64,
    /// RLIMIT_NICE (a ceiling of 20 - n on the nice value; 0: no raising priority).
    pub nice: u64,
    /// RLIMIT_RTPRIO: 0, no real-time scheduling.
    pub realtime_priority: u64,
    /// RLIMIT_RTTIME in microseconds: only real-time tasks use it up, which the payload
    /// cannot be, but never 0: the kernel checks it on any thread with a CPU-time timer,
    /// where 0 is an immediate SIGKILL.
    pub realtime_us: u64,
}

/// One of the rlimits a payload gets: the resource, the name `/proc/<pid>/limits`
/// shows it under, and its soft and hard values (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlimitEntry {
    pub resource: Resource,
    pub name: &'static str,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl Rlimits {
    /// All sixteen rlimits of Linux, in `/proc/<pid>/limits` order.
    pub fn entries(&self) -> [RlimitEntry; 16] {
        let same = |resource: Resource, name, value: Option<u64>| RlimitEntry {
            resource,
            name,
            soft: value,
            hard: value,
        };
        [
            RlimitEntry {
                resource: Resource::RLIMIT_CPU,
                name: "Max cpu time",
                soft: Some(self.cpu_seconds),
                hard: Some(self.cpu_seconds.saturating_add(1)),
            },
            same(Resource::RLIMIT_FSIZE, "Max file size", self.file_size),
            same(Resource::RLIMIT_DATA, "Max data size", self.address_space),
            same(Resource::RLIMIT_STACK, "Max stack size", Some(self.stack)),
            same(Resource::RLIMIT_CORE, "Max core file size", Some(self.core)),
            same(Resource::RLIMIT_RSS, "Max resident set", self.rss),
            same(Resource::RLIMIT_NPROC, "Max processes", self.processes),
            same(
                Resource::RLIMIT_NOFILE,
                "Max open files",
                Some(self.open_files),
            ),
            same(
                Resource::RLIMIT_MEMLOCK,
                "Max locked memory",
                Some(self.locked_memory),
            ),
            same(Resource::RLIMIT_AS, "Max address space", self.address_space),
            same(
                Resource::RLIMIT_LOCKS,
                "Max file locks",
                Some(self.file_locks),
            ),
            same(
                Resource::RLIMIT_SIGPENDING,
                "Max pending signals",
                Some(self.pending_signals),
            ),
            same(
                Resource::RLIMIT_MSGQUEUE,
                "Max msgqueue size",
                Some(self.message_queue_bytes),
            ),
            same(Resource::RLIMIT_NICE, "Max nice priority", Some(self.nice)),
            same(
                Resource::RLIMIT_RTPRIO,
                "Max realtime priority",
                Some(self.realtime_priority),
            ),
            same(
                Resource::RLIMIT_RTTIME,
                "Max realtime timeout",
                Some(self.realtime_us),
            ),
        ]
    }
}

/// Where the supervisor put the helper: the first message on the control socket, sent
/// once the helper is in its cgroup. The helper checks `/proc/self/cgroup` against it
/// before it creates its cgroup namespace, whose root is the cgroup it is in then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Per hierarchy the helper must be in: one of its controllers ("" for the v2
    /// unified hierarchy) and the path `/proc/self/cgroup` must show for it.
    pub cgroups: Vec<(String, String)>,
}

/// Messages from the helper, its init and the payload's pre-exec steps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    /// A setup step failed; the payload never ran.
    SetupFailed {
        step: String,
        errno: i32,
        detail: String,
    },
    /// Init's `/work`, opened inside the sandbox, travels with this report
    /// (`SCM_RIGHTS`): the supervisor puts files in and reads them back through it.
    Work,
    /// The payload was exec'd.
    Started,
    /// A lane's init is ready for its first request (see [`Plan::lane`]).
    Lane,
    /// The payload ended.
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
}
