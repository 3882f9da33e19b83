//! The soak engine: a mix of evaluations (mixed runtimes, some hostile: limits hit,
//! access-list violations, floods) run against a node, each checked against the
//! outcome it must have, and what the node holds (resident memory, open files, child
//! processes, sandbox cgroups, mounts) sampled from /proc and the cgroup trees.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Channel, ClientError, EvalRequest};
use proto::jsheets::completion::Status;
use proto::jsheets::Limits;

/// Errors sampling what the node holds.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("node {pid} is not running")]
    NodeGone {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Proc(#[from] std::io::Error),
}

/// Why an evaluation was not what its case expects.
#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    #[error("status {status}{first}")]
    Outcome {
        status: String,
        /// The first error, `, kind: message`, or empty.
        first: String,
    },
    #[error("{}", crate::report::error_chain(.0))]
    Call(ClientError),
}

/// What an evaluation must end with.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Status OK and no error.
    Clean,
    /// This status (any errors).
    Status(Status),
    /// Some error of this kind (any status).
    Error(&'static str),
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub request: EvalRequest,
    pub expect: Expect,
    /// How often it comes up in one round of the mix.
    pub weight: usize,
}

fn limits(wall_ms: u64, memory: u64, processes: u32, output: u64) -> Option<Limits> {
    Some(Limits {
        wall_time_ms: wall_ms,
        cpu_time_ms: 0,
        memory_bytes: memory,
        max_processes: processes,
        output_bytes: output,
    })
}

/// The runtimes the mix is made for; cases of those the node does not offer are
/// left out.
#[derive(Debug, Clone, Copy)]
pub struct Runtimes<'a> {
    pub python: &'a str,
    pub java: &'a str,
    pub shell: &'a str,
}

/// The mix, for the runtimes the node offers.
pub fn cases(runtimes: Runtimes<'_>, offered: &[String]) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name, runtime: &str, code: &str, l: Option<Limits>, expect, weight| {
        if offered.iter().any(|r| r == runtime) {
            let mut request = EvalRequest::new(runtime).component("c1", code);
            request.limits = l;
            cases.push(Case {
                name,
                request,
                expect,
                weight,
            });
        }
    };
    let py = runtimes.python;
    add(
        "python ok",
        py,
        "print(sum(range(1000)))\n[1, 2] * 2",
        None,
        Expect::Clean,
        20,
    );
    add(
        "python denied import",
        py,
        "import os\nos.system('id')",
        None,
        Expect::Error("sandbox"),
        2,
    );
    add(
        "python exception",
        py,
        "1 / 0",
        None,
        Expect::Error("exception"),
        2,
    );
    add(
        "python wall timeout",
        py,
        "while True:\n    pass",
        limits(300, 0, 0, 0),
        Expect::Status(Status::WallTimeout),
        1,
    );
    add(
        "python memory hog",
        py,
        "b = bytearray(1 << 30)",
        limits(5_000, 64 << 20, 0, 0),
        Expect::Status(Status::MemoryLimit),
        1,
    );
    add(
        "python output flood",
        py,
        "while True:\n    print('x' * 4096)",
        limits(5_000, 0, 0, 64 << 10),
        Expect::Status(Status::OutputLimit),
        1,
    );
    add(
        "python huge value",
        py,
        "'y' * (8 << 20)",
        None,
        Expect::Clean,
        1,
    );
    let java = runtimes.java;
    add(
        "java ok",
        java,
        "System.out.println(6 * 7);\nint x = 41;",
        None,
        Expect::Clean,
        3,
    );
    add(
        "java denied",
        java,
        "System.exit(1);",
        None,
        Expect::Error("sandbox"),
        1,
    );
    add(
        "java compile error",
        java,
        "int x = \"a\";",
        None,
        Expect::Error("compiler.err.prob.found.req"),
        1,
    );
    add(
        "shell fork bomb",
        runtimes.shell,
        "f() { f & f & wait; }; f",
        limits(5_000, 0, 16, 0),
        Expect::Status(Status::ProcessLimit),
        1,
    );
    add(
        "shell background process",
        runtimes.shell,
        "sleep 1000 & echo started",
        None,
        Expect::Clean,
        1,
    );
    cases
}

/// What the node holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holdings {
    pub rss_kib: u64,
    pub fds: usize,
    /// Processes descended from the node (sandbox helpers, inits, payloads).
    pub processes: usize,
    /// Cgroup directories of the node's sandboxes, on every hierarchy.
    pub cgroups: usize,
    /// Mounts in the node's mount namespace.
    pub mounts: usize,
}

fn sample(pid: u32) -> Result<Holdings, SoakError> {
    let proc_dir = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{proc_dir}/status"))
        .map_err(|source| SoakError::NodeGone { pid, source })?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("{proc_dir}/fd"))?.count();
    let mounts = std::fs::read_to_string(format!("{proc_dir}/mountinfo"))?
        .lines()
        .count();
    Ok(Holdings {
        rss_kib,
        fds,
        processes: descendants(pid),
        cgroups: sandbox_cgroups(Path::new("/sys/fs/cgroup"), &format!("sb-{pid}-"), 0),
        mounts,
    })
}

/// Live processes whose chain of parents reaches `pid`.
fn descendants(pid: u32) -> usize {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold anything but ends at the last ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("Z");
            if state == "Z" {
                continue;
            }
            if let Some(pp) = fields.next().and_then(|v| v.parse().ok()) {
                parent.insert(p, pp);
            }
        }
    }
    parent
        .keys()
        .filter(|&&p| {
            let mut at = p;
            for _ in 0..64 {
                match parent.get(&at) {
                    Some(&pp) if pp == pid => return true,
                    Some(&pp) if pp > 1 => at = pp,
                    _ => return false,
                }
            }
            false
        })
        .count()
}

/// Directories named `prefix*` below `dir` (not following links).
fn sandbox_cgroups(dir: &Path, prefix: &str, depth: usize) -> usize {
    if depth > 8 {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name().to_string_lossy().starts_with(prefix) {
            n += 1;
        }
        n += sandbox_cgroups(&e.path(), prefix, depth + 1);
    }
    n
}

/// Whether `e` is what `expect` asks for; the reason when not.
fn check(expect: Expect, e: &client::Evaluated) -> Result<(), Mismatch> {
    let ok = match expect {
        Expect::Clean => e.succeeded(),
        Expect::Status(s) => e.status() == s,
        Expect::Error(kind) => e.errors.iter().any(|x| x.kind == kind),
    };
    if ok {
        return Ok(());
    }
    let first = e
        .errors
        .first()
        .map(|x| format!(", {}: {}", x.kind, x.message.lines().next().unwrap_or("")))
        .unwrap_or_default();
    Err(Mismatch::Outcome {
        status: e.status().as_str_name().to_ascii_lowercase(),
        first,
    })
}

/// One case's evaluations, how many were not as expected, and the first such.
#[derive(Debug, Default)]
pub struct CaseTally {
    pub runs: usize,
    pub mismatches: usize,
    pub first: Option<String>,
}

/// What [`run_many`] saw: evaluations done, and per case how they went.
#[derive(Debug, Default)]
pub struct Tally {
    pub done: AtomicUsize,
    pub per_case: Mutex<BTreeMap<&'static str, CaseTally>>,
}

/// Runs `count` evaluations of the mix, `concurrency` at a time, each checked.
pub async fn run_many(channel: &Channel, mix: &[Case], count: usize, concurrency: usize) -> Tally {
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicUsize::new(0));
    let order: Arc<Vec<usize>> = Arc::new(
        mix.iter()
            .enumerate()
            .flat_map(|(i, c)| std::iter::repeat_n(i, c.weight))
            .collect(),
    );
    let mix = Arc::new(mix.to_vec());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (channel, tally, next, order, mix) = (
            channel.clone(),
            tally.clone(),
            next.clone(),
            order.clone(),
            mix.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let case = &mix[order[i % order.len()]];
                let result =
                    client::evaluate(&channel, &case.request, Duration::from_secs(60), |_| {})
                        .await;
                let verdict = match result {
                    Ok(e) => check(case.expect, &e),
                    Err(e) => Err(Mismatch::Call(e)),
                };
                let mut per_case = tally.per_case.lock().unwrap_or_else(|p| p.into_inner());
                let entry = per_case.entry(case.name).or_default();
                entry.runs += 1;
                if let Err(why) = verdict {
                    entry.mismatches += 1;
                    entry.first.get_or_insert_with(|| why.to_string());
                }
                drop(per_case);
                tally.done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(tally).unwrap_or_default()
}

/// Samples once the node's sandboxes are torn down: with `baseline`, waits (up to
/// `limit`) until processes, cgroups, mounts and fds are back to it; without, until two
/// samples a moment apart agree.
pub async fn settled(
    pid: u32,
    baseline: Option<&Holdings>,
    limit: Duration,
) -> Result<Holdings, SoakError> {
    let deadline = Instant::now() + limit;
    let mut last = sample(pid)?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = sample(pid)?;
        let steady = match baseline {
            Some(b) => {
                now.processes <= b.processes
                    && now.cgroups <= b.cgroups
                    && now.mounts <= b.mounts
                    && now.fds <= b.fds
            }
            None => {
                (now.processes, now.cgroups, now.mounts, now.fds)
                    == (last.processes, last.cgroups, last.mounts, last.fds)
            }
        };
        if steady || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_counts_as_its_own_descendant_never() {
        let me = std::process::id();
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(descendants(me) >= 1);
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(descendants(child.id()), 0);
    }

    #[test]
    fn sandbox_cgroups_are_counted_by_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        for d in [
            "a/jsheets-runtime/sb-7-1",
            "a/jsheets-runtime/sb-7-2",
            "b/sb-8-1",
            "c/x",
        ] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        assert_eq!(sandbox_cgroups(tmp.path(), "sb-7-", 0), 2);
        assert_eq!(sandbox_cgroups(tmp.path(), "sb-9-", 0), 0);
    }
}
