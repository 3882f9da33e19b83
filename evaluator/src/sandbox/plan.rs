//! What the supervisor tells the helper, and what the helper tells back.
//!
//! Both travel over the control socket (fd 3 of the helper) as JSON, one message
//! per datagram. The plan never travels through argv or the environment, so
//! nothing a client sends can set it.

use std::path::PathBuf;

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

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Rlimits {
    pub cpu_seconds: u64,
    /// RLIMIT_FSIZE; `None` leaves it unlimited (every writable filesystem is a
    /// size-limited tmpfs, which then reports ENOSPC when full).
    pub file_size: Option<u64>,
    pub open_files: u64,
    pub stack: u64,
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
    /// The payload was exec'd.
    Started,
    /// The payload ended.
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
}
