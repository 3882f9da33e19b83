//! The node where real deployments put it: not at the root of its cgroup hierarchies.
//! `jsheets-runtime serve` is started inside `<hierarchy>/jsheets-nested-test-<pid>/slice`
//! of every hierarchy it uses, in four placements:
//!
//! - `slice`: a nested cgroup of the host, as a systemd slice is;
//! - `container`: that subtree bind-mounted over the hierarchy's mount point in a mount
//!   namespace of its own, as Docker shows a container in the host's cgroup namespace
//!   its cgroup (`/proc/self/cgroup` names the host's path, mountinfo's root is it);
//! - `container-cgroupns`: the same in a private cgroup namespace (`cgroup: private`):
//!   `/proc/self/cgroup` shows `/`;
//! - `cgroupns-parent-mounted`: a private cgroup namespace whose mounts show a cgroup
//!   above the namespace's root (mountinfo root `/..`): found through `cgroup.procs`.
//!
//! In each: Python `print(1)` is `ok` with CPU time and peak memory, a memory hog hits
//! the memory limit (with its peak), a fork bomb the process limit and a busy loop the
//! CPU limit; while a sandbox runs its cgroup is in the node's subtree and nowhere else;
//! afterwards no sandbox cgroup is left. The test cgroups are removed on every path.
//! Needs root (cgroups, mounts, namespaces).

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use proto::jsheets::snippet_runtime_client::SnippetRuntimeClient;
use proto::jsheets::{Limits, StartEvaluationRequest};
use support::{evaluate, start_code, within, Transcript, BIN, NET};
use tonic::transport::Endpoint;

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// The v1 controllers the node uses (cpuset only when configured).
const V1_CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "freezer"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Slice,
    Container,
    ContainerCgroupns,
    CgroupnsParentMounted,
}

/// The cgroup hierarchies the node uses here: the distinct v1 mount points of
/// [`V1_CONTROLLERS`], or the v2 mount.
#[derive(Debug)]
struct Hierarchies {
    v2: bool,
    mounts: Vec<PathBuf>,
}

fn hierarchies() -> Hierarchies {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Hierarchies {
            v2: true,
            mounts: vec!["/sys/fs/cgroup".into()],
        };
    }
    let mut mounts: Vec<PathBuf> = Vec::new();
    for line in fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let right: Vec<&str> = right.split(' ').collect();
        if right.first() != Some(&"cgroup") {
            continue;
        }
        let options = right.get(2).copied().unwrap_or_default();
        if !options.split(',').any(|o| V1_CONTROLLERS.contains(&o)) {
            continue;
        }
        let point = PathBuf::from(left.split(' ').nth(4).unwrap());
        if !mounts.contains(&point) {
            mounts.push(point);
        }
    }
    assert!(!mounts.is_empty(), "no cgroup v1 controller mounted");
    Hierarchies { v2: false, mounts }
}

/// `<mount>/jsheets-nested-test-<pid>/slice` in every hierarchy; removed on drop
/// (processes left in them killed first).
#[derive(Debug)]
struct TestCgroups {
    mounts: Vec<PathBuf>,
    tops: Vec<PathBuf>,
}

impl TestCgroups {
    fn create(h: &Hierarchies) -> TestCgroups {
        let name = format!("jsheets-nested-test-{}", std::process::id());
        let tops: Vec<PathBuf> = h.mounts.iter().map(|m| m.join(&name)).collect();
        let cgroups = TestCgroups {
            mounts: h.mounts.clone(),
            tops,
        };
        for top in &cgroups.tops {
            fs::create_dir_all(top).unwrap();
            if h.v2 {
                // The node's own cgroup (the slice) must be able to get these.
                for dir in [top.parent().unwrap(), top.as_path()] {
                    let _ = fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory +pids");
                }
            }
            fs::create_dir_all(top.join("slice")).unwrap();
        }
        cgroups
    }

    fn slices(&self) -> Vec<PathBuf> {
        self.tops.iter().map(|t| t.join("slice")).collect()
    }

    /// Every directory below the test cgroups (host view), relative to its top.
    fn tree(&self) -> Vec<(usize, PathBuf)> {
        let mut out = Vec::new();
        for (i, top) in self.tops.iter().enumerate() {
            let mut stack = vec![top.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        out.push((i, e.path().strip_prefix(top).unwrap().to_path_buf()));
                        stack.push(e.path());
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Sandbox cgroups (`sb-*`) anywhere below the test cgroups.
    fn sandboxes(&self) -> Vec<(usize, PathBuf)> {
        self.tree()
            .into_iter()
            .filter(|(_, p)| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("sb-"))
            })
            .collect()
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        for top in &self.tops {
            let mut dirs = Vec::new();
            let mut stack = vec![top.clone()];
            while let Some(dir) = stack.pop() {
                if let Ok(entries) = fs::read_dir(&dir) {
                    stack.extend(
                        entries
                            .flatten()
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|e| e.path()),
                    );
                }
                dirs.push(dir);
            }
            // Deepest first; anything still running in them (a failed test) is killed.
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                let deadline = Instant::now() + SECS(5);
                while fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                    for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                if dir.exists() {
                    eprintln!("cannot remove test cgroup {}", dir.display());
                }
            }
        }
    }
}

/// `jsheets-runtime serve` started inside the test cgroups in `placement`; stopped
/// (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
struct NestedServer {
    child: Child,
    addr: String,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NestedServer {
    fn start(cgroups: &TestCgroups, placement: Placement) -> NestedServer {
        let runtimes = support::runtimes_dir();
        let dir = tempfile::Builder::new()
            .prefix("jsheets-nested-test-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("empty.toml");
        fs::write(&config, "").unwrap();
        let stderr_path = dir.path().join("stderr.log");
        // Into the slice of every hierarchy, then (except `slice`) a mount namespace
        // whose cgroup mounts show only a subtree, as a container's do.
        let mut outer = String::from("set -e\n");
        for slice in cgroups.slices() {
            outer.push_str(&format!("echo $$ > '{}/cgroup.procs'\n", slice.display()));
        }
        let mut inner = String::from("set -e\n");
        let bind_source = |i: usize| match placement {
            Placement::CgroupnsParentMounted => cgroups.tops[i].clone(),
            _ => cgroups.tops[i].join("slice"),
        };
        for (i, mount) in cgroups.mounts.iter().enumerate() {
            inner.push_str(&format!(
                "mount --bind '{}' '{}'\n",
                bind_source(i).display(),
                mount.display()
            ));
        }
        inner.push_str(&format!("exec '{BIN}' serve\n"));
        match placement {
            Placement::Slice => outer.push_str(&format!("exec '{BIN}' serve\n")),
            Placement::Container => outer.push_str(
                "exec unshare --mount --propagation private -- sh -c \"$NESTED_TEST_INNER\"\n",
            ),
            Placement::ContainerCgroupns | Placement::CgroupnsParentMounted => outer.push_str(
                "exec unshare --mount --propagation private --cgroup -- sh -c \"$NESTED_TEST_INNER\"\n",
            ),
        }
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", "sh", "-c", &outer])
            .env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("NO_COLOR", "1")
            .env("NESTED_TEST_INNER", &inner)
            .env("JSHEETS_RUNTIME_CONFIG", &config)
            .env("JSHEETS_RUNTIME_LOG_LEVEL", "info")
            .env("JSHEETS_RUNTIME_SERVER_PORT", "0")
            .env("JSHEETS_RUNTIME_SERVER_HOST", "127.0.0.1")
            .env("JSHEETS_RUNTIME_SERVER_SHUTDOWN_GRACE_SECONDS", "3")
            .env("JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR", &runtimes)
            .env(
                "JSHEETS_RUNTIME_EVALUATION_STATE_DIR",
                dir.path().join("state"),
            )
            .env("JSHEETS_RUNTIME_EVALUATION_DEFAULT_RUNTIME", "python-3.11")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).unwrap());
        let mut child = cmd.spawn().expect("starting the nested server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = NestedServer {
            child,
            addr: String::new(),
            stderr_path,
            _dir: dir,
        };
        let deadline = Instant::now() + SECS(60);
        while server.addr.is_empty() {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                if let Some(rest) = line.strip_prefix("jsheets-runtime listening on ") {
                    server.addr = rest.split(' ').next().unwrap().to_string();
                }
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "the server exited ({status}) before listening; stderr:\n{}",
                    server.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no listening line within 60 s; stderr:\n{}",
                server.stderr()
            );
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    async fn client(&self) -> SnippetRuntimeClient<tonic::transport::Channel> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr)).unwrap();
        SnippetRuntimeClient::new(within(NET, "connecting", endpoint.connect()).await.unwrap())
    }

    /// SIGTERM and the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + SECS(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NestedServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- stderr of the nested server ----\n{}---- end ----",
                self.stderr()
            );
        }
    }
}

fn with_limits(runtime: &str, code: &str, limits: Limits) -> StartEvaluationRequest {
    StartEvaluationRequest {
        limits: Some(limits),
        ..start_code(runtime, code)
    }
}

/// The figures of one evaluation, for the test's output.
fn figures(what: &str, t: &Transcript) -> String {
    let c = t.completion();
    format!(
        "{what}: {} cpu {} ms, peak memory {:.1} MiB, wall {} ms",
        t.status_name(),
        c.cpu_time_ms,
        c.peak_memory_bytes as f64 / f64::from(1 << 20),
        c.wall_time_ms
    )
}

async fn run_placement(placement: Placement) {
    let h = hierarchies();
    let cgroups = TestCgroups::create(&h);
    let mut server = NestedServer::start(&cgroups, placement);
    let mut client = server.client().await;
    let mut report = vec![format!(
        "{placement:?} (cgroup {}, {} hierarchies, server pid {})",
        if h.v2 { "v2" } else { "v1" },
        h.mounts.len(),
        server.pid()
    )];

    // 1. An ordinary snippet, with the usage read from its cgroup.
    let t = evaluate(&mut client, start_code("python-3.11", "print(1)"), SECS(30)).await;
    assert_eq!(t.status_name(), "Ok", "{t:#?}");
    assert_eq!(t.stdout(), "1\n", "{t:#?}");
    let c = t.completion();
    assert!(c.cpu_time_ms > 0, "no CPU time read back: {c:?}");
    assert!(c.peak_memory_bytes > 0, "no peak memory read back: {c:?}");
    report.push(figures("print(1)", &t));

    // 2. The memory limit, written where the snippet runs.
    let hog = with_limits(
        "python-3.11",
        "x = bytearray(512 << 20)\nprint('survived')",
        Limits {
            memory_bytes: 64 << 20,
            ..Default::default()
        },
    );
    let t = evaluate(&mut client, hog, SECS(30)).await;
    assert_eq!(t.status_name(), "MemoryLimit", "{t:#?}");
    assert!(!t.stdout().contains("survived"), "{t:#?}");
    assert!(
        t.completion().peak_memory_bytes > 32 << 20,
        "{:?}",
        t.completion()
    );
    report.push(figures("memory hog (64 MiB)", &t));

    // 3. The process limit.
    let bomb = with_limits(
        "shell",
        "while :; do sleep 100 & done",
        Limits {
            max_processes: 8,
            wall_time_ms: 5000,
            ..Default::default()
        },
    );
    let t = evaluate(&mut client, bomb, SECS(30)).await;
    assert_eq!(t.status_name(), "ProcessLimit", "{t:#?}");
    report.push(figures("fork bomb (8 processes)", &t));

    // 4. The CPU watchdog; meanwhile the sandbox's cgroup is in the node's subtree of
    // every hierarchy, and nowhere else.
    let busy = with_limits(
        "python-3.11",
        "while True:\n    pass",
        Limits {
            cpu_time_ms: 1000,
            wall_time_ms: 20_000,
            ..Default::default()
        },
    );
    let mut busy_client = client.clone();
    let running = tokio::spawn(async move { evaluate(&mut busy_client, busy, SECS(40)).await });
    let prefix = format!("sb-{}-", server.pid());
    let deadline = Instant::now() + SECS(15);
    let seen = loop {
        let found: Vec<(usize, PathBuf)> = cgroups
            .sandboxes()
            .into_iter()
            .filter(|(_, p)| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .collect();
        let hierarchies: std::collections::BTreeSet<usize> =
            found.iter().map(|(i, _)| *i).collect();
        if hierarchies.len() == cgroups.tops.len() {
            break found;
        }
        assert!(
            Instant::now() < deadline && !running.is_finished(),
            "the running sandbox's cgroup is not in every hierarchy: {found:?}\nall: {:?}",
            cgroups.tree()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for (i, path) in &seen {
        assert_eq!(
            path.parent(),
            Some(Path::new("slice/jsheets-runtime")),
            "sandbox cgroup outside the node's subtree in {}: {}",
            cgroups.mounts[*i].display(),
            path.display()
        );
    }
    let t = running.await.unwrap();
    assert_eq!(t.status_name(), "CpuLimit", "{t:#?}");
    assert!(t.completion().cpu_time_ms >= 900, "{:?}", t.completion());
    report.push(figures("busy loop (1 s CPU)", &t));

    drop(client);
    let status = server.stop();
    assert!(status.success(), "the node exited with {status}");
    // Nothing left: no sandbox cgroup, and nothing but the node's subtree (and on v2
    // its own leaf) below the slice.
    assert_eq!(cgroups.sandboxes(), [], "sandbox cgroups left behind");
    let mut expected = vec![
        PathBuf::from("slice"),
        PathBuf::from("slice/jsheets-runtime"),
    ];
    if h.v2 {
        expected.push(PathBuf::from("slice/service"));
    }
    for (i, _) in cgroups.tops.iter().enumerate() {
        let mut got: Vec<PathBuf> = cgroups
            .tree()
            .into_iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, p)| p)
            .collect();
        got.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(got, want, "in {}", cgroups.mounts[i].display());
    }
    drop(server);
    eprintln!("{}", report.join("\n  "));
}

#[tokio::test]
async fn in_a_nested_cgroup() {
    run_placement(Placement::Slice).await;
}

#[tokio::test]
async fn in_a_container_in_the_hosts_cgroup_namespace() {
    run_placement(Placement::Container).await;
}

#[tokio::test]
async fn in_a_container_with_a_private_cgroup_namespace() {
    run_placement(Placement::ContainerCgroupns).await;
}

#[tokio::test]
async fn in_a_cgroup_namespace_below_a_mounted_subtree() {
    run_placement(Placement::CgroupnsParentMounted).await;
}
