//! What a job's limits become: the cgroup's limits and the payload's rlimits, with
//! the allowances for the sandbox's own processes.

use std::time::Duration;

use super::cgroup;
use super::plan::Rlimits;
use super::{Filesystem, Job, Limits};

/// How often CPU usage is checked against the limit.
pub(super) const CPU_POLL: Duration = Duration::from_millis(20);

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
pub(super) fn rlimit_cpu_seconds(cpu_time: Duration) -> u64 {
    (cpu_time.as_secs_f64() * 2.0).ceil().max(1.0) as u64
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

/// The CPU weight of a sandbox whose limits say 0: cgroup v1's default shares. It is
/// always written, so that a sandbox started at a lower weight (one warming for a
/// pool) gets the normal one back when a request takes it. On v2 the same number goes
/// to `cpu.weight`: sandboxes are siblings under the node's cgroup, and only the
/// ratio between siblings counts.
pub(super) const NORMAL_CPU_SHARES: u64 = 1024;

/// The cgroup part of a job's limits.
pub(super) fn cgroup_limits(l: &Limits) -> cgroup::CgroupLimits {
    cgroup::CgroupLimits {
        memory_bytes: l.memory_bytes,
        // 0 leaves it unlimited.
        max_processes: match l.max_processes {
            0 => 0,
            n => n.saturating_add(SANDBOX_PROCESSES),
        },
        cpu_millis: l.cpu_millis,
        cpu_shares: match l.cpu_shares {
            0 => NORMAL_CPU_SHARES,
            n => n,
        },
    }
}

/// Every rlimit of the payload of `job`.
pub(super) fn rlimits(job: &Job) -> Rlimits {
    let l = &job.limits;
    let cpu_seconds = l.cpu_time.as_secs_f64().ceil().max(1.0) as u64;
    Rlimits {
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
    fn the_payload_process_limit_is_a_backstop_above_the_cgroup() {
        let mut job = Job::new(vec![], vec!["/bin/true".into()]);
        job.limits.max_processes = 5;
        assert_eq!(rlimits(&job).processes, Some(10));
        job.limits.max_processes = 0;
        assert_eq!(rlimits(&job).processes, None);
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
}
