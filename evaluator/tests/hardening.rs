//! What a snippet must not reach, probed from inside real sandboxes (root required):
//! the operator's terminal, host paths, kernel memory outside its limits, another
//! sandbox's uid, inherited rlimits, the cgroups around it, and its own init.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

use common::Fixture;
use evaluator::evaluate;
use evaluator::pool::{Pool, PoolSettings};
use evaluator::runtime::Runtime;
use evaluator::sandbox::{Event, Job, Limits, Outcome, Sandboxes, Status};
use evaluator::snippet::{Component, Output};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long anything observable may take on a loaded machine before a test gives up.
const PATIENCE: Duration = Duration::from_secs(120);

fn one(code: &str) -> Vec<Component> {
    vec![Component {
        id: "c1".into(),
        code: code.into(),
    }]
}

/// A job running `code` with the runtime's bare interpreter: no driver and no access
/// list (a snippet may be any native code, so what holds is the kernel's part). The
/// code comes on fd 3, so it is in no argv.
fn python_job(python: &Runtime, code: &str, limits: Limits) -> Job {
    let launch = python.launch();
    let mut job = Job::new(
        launch.mounts.clone(),
        vec![
            launch.program.clone(),
            "-I".into(),
            "/proc/self/fd/3".into(),
        ],
    );
    job.env = launch.environment.clone();
    job.input = Some(code.as_bytes().to_vec());
    job.limits = limits;
    job
}

/// A sandbox running in the background, its output read as it comes; it ends when it
/// ends or is cancelled.
struct Live {
    events: mpsc::Receiver<Event>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Outcome>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Live {
    fn start(sandboxes: &Sandboxes, job: Job) -> Live {
        let (tx, events) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let sandboxes = sandboxes.clone();
        let stop = cancel.clone();
        let framing = evaluator::events::Bounds::for_job(&job).framing;
        let task = tokio::spawn(async move { sandboxes.run(job, framing, tx, stop).await });
        Live {
            events,
            cancel,
            task,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn take(&mut self, event: Event) {
        match event {
            Event::Stdout(d) => self.stdout.extend(d),
            Event::Stderr(d) => self.stderr.extend(d),
            _ => {}
        }
    }

    /// Everything on stdout so far, once it has a line `marker`.
    async fn until_line(&mut self, marker: &str) -> String {
        let wanted = format!("{marker}\n");
        let waiting = async {
            while !String::from_utf8_lossy(&self.stdout).contains(&wanted) {
                match self.events.recv().await {
                    Some(e) => self.take(e),
                    None => panic!(
                        "the sandbox ended before saying {marker:?}: stdout {:?} stderr {:?}",
                        String::from_utf8_lossy(&self.stdout),
                        String::from_utf8_lossy(&self.stderr)
                    ),
                }
            }
        };
        tokio::time::timeout(PATIENCE, waiting)
            .await
            .unwrap_or_else(|_| panic!("no {marker:?} from the sandbox in time"));
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Waits for the outcome.
    async fn finish(mut self) -> (Outcome, String, String) {
        let draining = async {
            while let Some(e) = self.events.recv().await {
                self.take(e);
            }
        };
        tokio::time::timeout(PATIENCE, draining)
            .await
            .expect("the sandbox ended in time");
        let outcome = self.task.await.unwrap();
        (
            outcome,
            String::from_utf8_lossy(&self.stdout).into_owned(),
            String::from_utf8_lossy(&self.stderr).into_owned(),
        )
    }

    /// Stops it and waits for the outcome.
    async fn stop(self) -> (Outcome, String, String) {
        self.cancel.cancel();
        self.finish().await
    }
}

async fn run_job(sandboxes: &Sandboxes, job: Job) -> (Outcome, String, String) {
    Live::start(sandboxes, job).finish().await
}

/// `name=True` lines of a probe; panics naming those that are not.
fn all_true(stdout: &str, at_least: usize, context: &dyn std::fmt::Debug) {
    let checks: Vec<&str> = stdout.lines().filter(|l| l.contains('=')).collect();
    assert!(
        checks.len() >= at_least,
        "the probe did not finish: {stdout}\n{context:?}"
    );
    let failed: Vec<&&str> = checks.iter().filter(|l| !l.ends_with("=True")).collect();
    assert!(failed.is_empty(), "failed: {failed:?}\n{context:?}");
}

/// Processes of this test process's sandboxes (helpers, inits, payloads), by cgroup.
fn our_sandbox_processes() -> Vec<i32> {
    let ours = format!("/sb-{}-", std::process::id());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&ours))
        })
        .collect()
}

/// Fields of `/proc/<pid>/stat` after the command name: state is 0, session 3, tty_nr 4.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

// --- 1. the operator's terminal -------------------------------------------------------

const TTY_CHILD: &str = "JSHEETS_HARDENING_TTY_CHILD";

/// Run in the sandbox: every way to a terminal fails, and nothing it does can leave a
/// mark on one. Prints `probe-done`, then waits to be stopped.
const TTY_PROBE: &str = r#"
import os, sys, errno, termios, fcntl
r = {}
def check(name, f):
    try:
        r[name] = bool(f())
    except Exception as e:
        r[name] = f"error {type(e).__name__}: {e}"
def errno_of(f):
    try:
        f()
        return 0
    except termios.error as e:
        return e.args[0]
    except OSError as e:
        return e.errno
for fd in (0, 1, 2):
    check(f"tcgetattr_{fd}_enotty", lambda fd=fd: errno_of(lambda: termios.tcgetattr(fd)) == errno.ENOTTY)
    check(f"tiocgwinsz_{fd}_enotty", lambda fd=fd: errno_of(lambda: fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)) == errno.ENOTTY)
    # ENOTTY from the kernel, or EPERM from the seccomp filter, which allows few ioctls.
    check(f"tiocgpgrp_{fd}_fails", lambda fd=fd: errno_of(lambda: fcntl.ioctl(fd, termios.TIOCGPGRP, b"\0" * 4)) in (errno.ENOTTY, errno.EPERM))
check("no_dev_tty", lambda: not os.path.lexists("/dev/tty"))
check("ctermid_does_not_open", lambda: errno_of(lambda: os.close(os.open(os.ctermid(), os.O_RDWR))) != 0)
check("no_terminal_devices", lambda: not any(os.path.lexists(p) for p in ["/dev/console", "/dev/ptmx", "/dev/pts", "/dev/tty0", "/dev/tty1"]))
check("no_fd_is_a_terminal", lambda: not any(os.isatty(fd) for fd in range(1024)))
def stat(pid):
    s = open(f"/proc/{pid}/stat").read()
    return s[s.rindex(")") + 2:].split()
check("no_controlling_terminal", lambda: stat("self")[4] == "0" and stat("self")[5] == "-1")
check("init_has_no_controlling_terminal", lambda: stat(1)[4] == "0")
check("own_session", lambda: os.getsid(0) == 1)
check("init_fds_out_of_reach", lambda: errno_of(lambda: os.listdir("/proc/1/fd")) == errno.EACCES)
# Try anyway: leave a mark and turn echo off on whatever terminal can be had.
mark = ("JSHEETS-" + "TTY-" + "MARK\n").encode()
reached = []
for fd in range(1024):
    try:
        if os.isatty(fd):
            reached.append(fd)
            os.write(fd, mark)
            attrs = termios.tcgetattr(fd)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except OSError:
        pass
for path in ["/dev/tty", "/proc/1/fd/0", "/proc/1/fd/1", "/proc/1/fd/2"]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        if os.isatty(fd):
            reached.append(path)
            os.write(fd, mark)
        os.close(fd)
    except OSError:
        pass
r["no_terminal_reached"] = not reached
for k, v in r.items():
    print(f"{k}={v}")
print("probe-done", flush=True)
import time
time.sleep(600)
"#;

/// The operator: a session leader whose controlling terminal is a pty, as
/// `jsheets-runtime run` in a terminal is, and which even leaks the terminal on fds
/// without close-on-exec. Runs only as the child of
/// `the_operators_terminal_is_out_of_reach`.
#[tokio::test]
async fn tty_child() {
    if std::env::var_os(TTY_CHILD).is_none() {
        return;
    }
    use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
    let me = std::process::id().to_string();
    let own = stat_fields("self").unwrap();
    assert_eq!(own[3], me, "the child leads its session");
    assert_ne!(own[4], "0", "the child has a controlling terminal");
    let tty = open("/dev/tty", OFlag::O_RDWR, nix::sys::stat::Mode::empty()).unwrap();
    for at in [4, 9, 40] {
        fcntl(&tty, FcntlArg::F_DUPFD(at)).unwrap();
    }

    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let limits = Limits {
        wall_time: PATIENCE * 2,
        ..Limits::default()
    };
    let mut live = Live::start(&fx.sandboxes, python_job(&python, TTY_PROBE, limits));
    live.until_line("probe-done").await;

    // From the host: no process of our sandboxes (the pre-spawned helpers included) is
    // in our session, has a controlling terminal, or holds a terminal. A helper spawned
    // a moment ago may not have closed what it inherited yet: wait for that, with a
    // deadline.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let pids = our_sandbox_processes();
        let mut problems = Vec::new();
        for pid in &pids {
            let Some(stat) = stat_fields(&pid.to_string()) else {
                continue;
            };
            if stat[3] == me || stat[4] != "0" {
                problems.push(format!("{pid}: session {} tty {}", stat[3], stat[4]));
            }
            for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let target = std::fs::read_link(fd.path()).unwrap_or_default();
                let t = target.to_string_lossy();
                if t.starts_with("/dev/pts") || t.starts_with("/dev/tty") || t == "/dev/ptmx" {
                    problems.push(format!("{pid}: {} -> {t}", fd.path().display()));
                }
            }
        }
        if problems.is_empty() && pids.len() >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sandbox processes {pids:?} reach the terminal: {problems:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (outcome, stdout, stderr) = live.stop().await;
    assert_eq!(outcome.status, Status::Cancelled, "{outcome:?} {stderr}");
    all_true(&stdout, 12, &(&outcome, &stderr));
    fx.assert_clean().await;
}

#[test]
fn the_operators_terminal_is_out_of_reach() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    use std::process::{Command, Stdio};
    if std::env::var_os(TTY_CHILD).is_some() {
        return;
    }
    // Built here (once, under its lock), so the child only resolves it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let fx = Fixture::new();
        fx.runtime("python-3.11").await;
    });

    let pty = nix::pty::openpty(None, None).unwrap();
    let before = tcgetattr(&pty.slave).unwrap();
    assert!(before.local_flags.contains(LocalFlags::ECHO));
    // What the operator typed: still unread at the end.
    nix::unistd::write(&pty.master, b"operator-secret\n").unwrap();
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once no slave end is open any more.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    // setsid(1) makes the pty the child's controlling terminal (--ctty), the way a
    // shell's session has its terminal.
    let status = Command::new("setsid")
        .args(["--ctty", "--wait"])
        .arg(std::env::current_exe().unwrap())
        .args(["tty_child", "--exact", "--nocapture", "--test-threads", "1"])
        .env(TTY_CHILD, "1")
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .status()
        .expect("setsid (util-linux) runs the child");

    let after = tcgetattr(&pty.slave).unwrap();
    // The typed line is still there: nobody read it.
    nix::fcntl::fcntl(
        &pty.slave,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut typed = [0u8; 64];
    let unread = nix::unistd::read(&pty.slave, &mut typed).unwrap_or(0);
    drop(pty.slave);
    let seen = reader.join().unwrap();
    let seen = String::from_utf8_lossy(&seen);
    println!("the terminal showed:\n{seen}");
    assert!(status.success(), "the child failed: {status}\n{seen}");
    assert!(
        seen.contains("test tty_child ... ok"),
        "the child did not run its test: {seen}"
    );
    assert!(
        !seen.contains("JSHEETS-TTY-MARK"),
        "the sandbox wrote to the terminal: {seen}"
    );
    assert_eq!(&typed[..unread], b"operator-secret\n", "{seen}");
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);
    assert_eq!(after.control_flags, before.control_flags);
    assert_eq!(
        after.local_flags, before.local_flags,
        "echo and the rest unchanged"
    );
    assert_eq!(after.control_chars, before.control_chars);
}

// --- 2. host paths --------------------------------------------------------------------

/// Every readable /proc file and link that could name a host path, searched for the
/// needles (given as hex, so that the probe's own code holds none of them).
const PATH_PROBE: &str = r#"
import os
needles = [bytes.fromhex(h) for h in NEEDLES]
found = []
read = 0
def scan(label, data):
    for n in needles:
        if n in data:
            found.append(f"{label} has {n.decode()}: {data[:300]!r}")
pids = [p for p in os.listdir("/proc") if p.isdigit()] + ["self", "thread-self"]
for p in pids:
    for name in ["cmdline", "environ", "mountinfo", "mounts", "mountstats", "maps", "stat", "status", "comm", "cgroup", "cpuset"]:
        try:
            with open(f"/proc/{p}/{name}", "rb") as f:
                scan(f"/proc/{p}/{name}", f.read())
            read += 1
        except OSError:
            pass
    links = ["exe", "cwd", "root"]
    try:
        links += [f"fd/{fd}" for fd in os.listdir(f"/proc/{p}/fd")]
    except OSError:
        pass
    for link in links:
        try:
            scan(f"/proc/{p}/{link}", os.readlink(f"/proc/{p}/{link}").encode())
            read += 1
        except OSError:
            pass
init_cmdline = open("/proc/1/cmdline", "rb").read()
print(f"init cmdline {init_cmdline!r}")
print(f"read {read}")
for line in open("/proc/self/mountinfo"):
    print("mountinfo", line.rstrip())
for f in found:
    print("FOUND", f)
print("probe-done")
"#;

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn host_paths() -> Vec<String> {
    let helper = env!("CARGO_BIN_EXE_jsheets-sandbox");
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().unwrap();
    let mut paths = vec![
        helper.to_string(),
        std::path::Path::new(helper)
            .parent()
            .unwrap()
            .display()
            .to_string(),
        common::runtimes_dir().display().to_string(),
        std::env::temp_dir()
            .join("jsheets-runtime-tests")
            .display()
            .to_string(),
        workspace.display().to_string(),
        env!("CARGO_TARGET_TMPDIR").to_string(),
        "/target/".to_string(),
        "jsheets-runtime-tests".to_string(),
        "test-runtimes".to_string(),
    ];
    paths.sort();
    paths.dedup();
    paths
}

fn check_no_host_paths(stdout: &str, context: &dyn std::fmt::Debug) {
    assert!(stdout.contains("probe-done"), "{stdout}\n{context:?}");
    let found: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FOUND")).collect();
    assert!(found.is_empty(), "host paths inside: {found:#?}\n{stdout}");
    let read: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("read "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(read >= 20, "the probe read too little: {stdout}");
    // Every runtime directory is a filesystem of its own (an overlay), not a bind
    // whose root field would be a host path.
    for line in stdout.lines().filter_map(|l| l.strip_prefix("mountinfo ")) {
        let fields: Vec<&str> = line.split(' ').collect();
        let (root, at) = (fields[3], fields[4]);
        if ["/usr", "/lib", "/lib64", "/etc"].contains(&at) {
            assert_eq!(root, "/", "{line}");
            assert!(line.contains(" - overlay "), "{line}");
        }
    }
}

#[tokio::test]
async fn no_host_path_is_visible_inside() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let needles = host_paths()
        .iter()
        .map(|p| format!("{:?}", hex(p)))
        .collect::<Vec<_>>()
        .join(", ");
    let code = PATH_PROBE.replace("NEEDLES", &format!("[{needles}]"));

    // Cold, and in a sandbox started ahead (whose helper got an extra argument).
    let (outcome, stdout, stderr) =
        run_job(&fx.sandboxes, python_job(&python, &code, Limits::default())).await;
    assert_eq!(outcome.status, Status::Ok, "{outcome:?} {stderr}");
    check_no_host_paths(&stdout, &(&outcome, &stderr));
    assert!(
        stdout.contains("init cmdline b'jsheets-sandbox\\x00"),
        "init's cmdline names no host path: {stdout}"
    );

    // And in sandboxes started ahead: whole, and forked from a zygote.
    let mut launch = python.launch();
    launch.access_list = None;
    for zygote in [false, true] {
        let pool = Pool::start(
            fx.sandboxes.clone(),
            launch.clone(),
            PoolSettings {
                size: 1,
                idle_limits: Limits::default(),
                max_age: Duration::from_secs(600),
                zygote,
            },
        )
        .unwrap();
        let waiting = take_from(&pool).await;
        assert_eq!(pool.stats().forked > 0, zygote, "{:?}", pool.stats());
        let run = fx
            .run_in(
                Some(waiting),
                &launch,
                one(&code),
                Vec::new(),
                Limits::default(),
                CancellationToken::new(),
            )
            .await;
        assert_eq!(run.outcome.status, Status::Ok, "zygote {zygote}: {run:?}");
        check_no_host_paths(&run.stdout(), &run);
        pool.shutdown().await;
    }
}

async fn take_from(pool: &Pool) -> evaluator::sandbox::Waiting {
    let waiting = async {
        loop {
            if let Some(w) = pool.take() {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("a pooled sandbox in time")
}

// --- 3. socket buffers ----------------------------------------------------------------

/// Loopback connection pairs whose senders fill their buffers and nobody reads: what
/// the kernel queues is socket memory. Says how much it has queued after each pair;
/// stops at 256 MiB queued, or when nothing more goes (the sandbox's socket memory is
/// used up).
const TCP_PROBE: &str = r#"
import socket, sys, errno
CAP = 256 << 20
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
srv.bind(("127.0.0.1", 0))
srv.listen(1024)
addr = srv.getsockname()
pairs = []
queued = 0
stalls = 0
errors = {}
chunk = b"x" * 65536
while queued < CAP and len(pairs) < 1500 and stalls < 40:
    try:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        c.settimeout(5)
        c.connect(addr)
        srv.settimeout(5)
        s, _ = srv.accept()
    except OSError as e:
        errors[errno.errorcode.get(e.errno, str(e))] = errors.get(errno.errorcode.get(e.errno, str(e)), 0) + 1
        stalls += 1
        continue
    c.setblocking(False)
    sent = 0
    while True:
        try:
            sent += c.send(chunk)
        except BlockingIOError:
            break
        except OSError as e:
            errors[errno.errorcode.get(e.errno, str(e))] = errors.get(errno.errorcode.get(e.errno, str(e)), 0) + 1
            break
    queued += sent
    stalls = stalls + 1 if sent < 65536 else 0
    pairs.append((c, s))
    print(f"queued {queued}", flush=True)
print(f"filled {queued} pairs {len(pairs)} errors {errors}", flush=True)
print("probe-done", flush=True)
import time
time.sleep(600)
"#;

/// The cgroup directory of `controller` (v1) or the unified one (v2) of our sandbox
/// whose tasks include a process named `comm`.
fn sandbox_cgroup_of(controller: &str, comm: &str) -> Option<std::path::PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let v1 = own.lines().find_map(|l| {
        let (_, rest) = l.split_once(':')?;
        let (controllers, path) = rest.split_once(':')?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| (controllers.to_string(), path.to_string()))
    });
    let subtree = match &v1 {
        Some((mount, path)) => std::path::Path::new("/sys/fs/cgroup")
            .join(mount)
            .join(path.trim_start_matches('/'))
            .join("jsheets-runtime"),
        None => {
            let path = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
            let mut dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            if dir.ends_with("service") {
                dir.pop();
            }
            dir.join("jsheets-runtime")
        }
    };
    let prefix = format!("sb-{}-", std::process::id());
    std::fs::read_dir(&subtree)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .find(|dir| {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .any(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == comm)
                })
        })
}

fn read_u64(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// (VmRSS, VmHWM) of this process, the node, in bytes.
fn node_memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A sandbox that fills socket buffers holds them against its own limits, never the
/// node's memory. On v1 they are charged apart from its memory limit, to a limit of
/// their own (`memory.kmem.tcp.limit_in_bytes`): the sandbox stalls there and lives
/// on. On v2 they are charged to memory.max with the rest of its memory: the kernel
/// ends it at that limit, which is `memory_limit`.
#[tokio::test]
async fn socket_buffers_count_against_the_sandbox() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let memory: u64 = 64 << 20;
    let limits = Limits {
        memory_bytes: memory,
        open_files: 4096,
        wall_time: Duration::from_secs(100),
        cpu_time: Duration::from_secs(60),
        ..Limits::default()
    };
    // What the sandbox may hold in all: its memory and, on v1 where socket buffers are
    // charged apart, their own allowance; a little over for the kernel's forced charges.
    let v1 = fx.sandboxes.cgroup_version() == evaluator::sandbox::cgroup::Version::V1;
    let allowance = if v1 {
        memory + evaluator::sandbox::cgroup::tcp_limit(memory)
    } else {
        memory
    };
    let slack = 8 << 20;
    // Nothing of what the sandbox queues is the node's (VmHWM from here on).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let (node_before, _) = node_memory();

    let mut live = Live::start(&fx.sandboxes, python_job(&python, TCP_PROBE, limits));
    let (said, detail) = if v1 {
        let said = live.until_line("probe-done").await;
        let dir = sandbox_cgroup_of("memory", "python3.11").expect("the sandbox's cgroup");
        let tcp_limit = read_u64(&dir.join("memory.kmem.tcp.limit_in_bytes"));
        assert_eq!(tcp_limit, evaluator::sandbox::cgroup::tcp_limit(memory));
        let user = read_u64(&dir.join("memory.usage_in_bytes"));
        let tcp = read_u64(&dir.join("memory.kmem.tcp.usage_in_bytes"));
        let tcp_peak = read_u64(&dir.join("memory.kmem.tcp.max_usage_in_bytes"));
        let detail = format!("memory {user} + sockets {tcp} (peak {tcp_peak})");
        assert!(
            tcp_peak <= tcp_limit + slack,
            "socket memory peaked at {tcp_peak}"
        );
        assert!(
            user + tcp <= allowance + slack,
            "the sandbox holds {detail}: {said}"
        );
        // Stalled at its socket limit, it lives on until stopped.
        let (outcome, _, stderr) = live.stop().await;
        assert_eq!(outcome.status, Status::Cancelled, "{outcome:?} {stderr}");
        (said, detail)
    } else {
        // The probe runs until the kernel ends it at memory.max, which its socket
        // buffers count against: everything it held is in the cgroup's peak.
        let (outcome, said, stderr) = live.finish().await;
        let detail = format!("peak memory {}", outcome.peak_memory);
        assert_eq!(
            outcome.status,
            Status::MemoryLimit,
            "{outcome:?} {said} {stderr}"
        );
        assert!(
            outcome.peak_memory <= allowance + slack,
            "the sandbox held {detail}: {said}"
        );
        (said, detail)
    };
    let last = said
        .lines()
        .rev()
        .find(|l| l.starts_with("filled") || l.starts_with("queued"));
    println!("{} {detail}", last.unwrap_or_default());
    let queued: u64 = said
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("queued "))
        .and_then(|n| n.parse().ok())
        .expect("the probe says how much it queued");
    assert!(queued > 1 << 20, "the probe queued hardly anything: {said}");
    assert!(
        queued <= allowance,
        "{queued} bytes queued on loopback with a {memory} byte limit: {said} ({detail})"
    );
    let (node_after, node_peak) = node_memory();
    assert!(
        node_peak.max(node_after) < node_before + (16 << 20),
        "the node grew from {node_before} to {node_after} (peak {node_peak}) bytes \
         while the sandbox queued {queued}"
    );
    // The node goes on.
    let (outcome, stdout, _) = run_job(
        &fx.sandboxes,
        python_job(&python, "print(6 * 7)", Limits::default()),
    )
    .await;
    assert_eq!((outcome.status, stdout.as_str()), (Status::Ok, "42\n"));
    fx.assert_clean().await;
}

// --- 4. uids --------------------------------------------------------------------------

/// Runs `script` in the shell runtime in `waiting` (or cold), forwarding its stdout.
#[allow(clippy::too_many_arguments)]
fn spawn_shell(
    sandboxes: &Sandboxes,
    waiting: Option<evaluator::sandbox::Waiting>,
    launch: &evaluator::lang::Launch,
    script: &str,
    index: usize,
    said: mpsc::Sender<(usize, String)>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<Outcome> {
    let (sandboxes, launch, script) = (sandboxes.clone(), launch.clone(), script.to_string());
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::channel(16);
        let forward = tokio::spawn(async move {
            while let Some(o) = rx.recv().await {
                if let Output::Stdout { data, .. } = o {
                    let _ = said
                        .send((index, String::from_utf8_lossy(&data).into_owned()))
                        .await;
                }
            }
        });
        let outcome = evaluate::evaluate_in(
            &sandboxes,
            waiting,
            &launch,
            &one(&script),
            Vec::new(),
            Limits::default(),
            Default::default(),
            tx,
            cancel,
        )
        .await
        .expect("evaluation accepted");
        let _ = forward.await;
        outcome
    })
}

/// The uids our live sandboxes' payloads run as, with the sandboxes (cgroups) of each.
fn uids_by_sandbox() -> std::collections::HashMap<u32, HashSet<String>> {
    let mut by_uid = std::collections::HashMap::<u32, HashSet<String>>::new();
    for pid in our_sandbox_processes() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|u| u.split_whitespace().next()?.parse::<u32>().ok());
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let sandbox = cgroup.lines().find_map(|l| {
            l.split('/')
                .find(|s| s.starts_with("sb-"))
                .map(str::to_string)
        });
        if let (Some(uid), Some(sandbox)) = (uid, sandbox) {
            if uid != 0 {
                by_uid.entry(uid).or_default().insert(sandbox);
            }
        }
    }
    by_uid
}

fn live_uids() -> HashSet<u32> {
    uids_by_sandbox().into_keys().collect()
}

#[tokio::test]
async fn live_sandboxes_never_share_a_uid() {
    let fx = Fixture::new();
    let shell = fx.runtime("shell").await;
    let launch = shell.launch();
    const POOLED: usize = 4;
    const COLD: usize = 16;
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        PoolSettings {
            size: POOLED,
            idle_limits: Limits::default(),
            max_age: Duration::from_secs(600),
            zygote: false,
        },
    )
    .unwrap();
    let mut waiting = Vec::new();
    for _ in 0..POOLED {
        waiting.push(take_from(&pool).await);
    }
    // While these wait, more sandboxes than the range has uids come and go: a uid
    // chosen by counting would come round to one of theirs.
    let held = live_uids();
    assert!(held.len() >= POOLED, "{held:?}");
    for i in 0..2 * fx.uid_count + 8 {
        let run = fx
            .run_in(
                None,
                &launch,
                one("id -u"),
                Vec::new(),
                Limits::default(),
                CancellationToken::new(),
            )
            .await;
        assert_eq!(run.outcome.status, Status::Ok, "{run:?}");
        let uid: u32 = run.stdout().trim().parse().unwrap();
        assert!(
            !held.contains(&uid),
            "run {i} got {uid}, a waiting sandbox's"
        );
    }
    let cancel = CancellationToken::new();
    let (said_tx, mut said) = mpsc::channel(64);
    let mut tasks = Vec::new();
    for i in 0..POOLED + COLD {
        let w = waiting.pop();
        tasks.push(spawn_shell(
            &fx.sandboxes,
            w,
            &launch,
            "id -u; exec sleep 600",
            i,
            said_tx.clone(),
            cancel.clone(),
        ));
    }
    drop(said_tx);
    let mut uids = std::collections::HashMap::new();
    let collecting = async {
        let mut partial = vec![String::new(); POOLED + COLD];
        while uids.len() < POOLED + COLD {
            let (i, text) = said.recv().await.expect("all report their uid");
            partial[i].push_str(&text);
            if let Some(line) = partial[i].strip_suffix('\n') {
                uids.insert(i, line.trim().parse::<u32>().expect("a uid"));
            }
        }
    };
    tokio::time::timeout(PATIENCE, collecting)
        .await
        .expect("every sandbox reported its uid in time");
    // All alive at once, each with its own uid from the range.
    let distinct: HashSet<u32> = uids.values().copied().collect();
    assert_eq!(distinct.len(), POOLED + COLD, "{uids:?}");
    let range = fx.uid_base..fx.uid_base + fx.uid_count;
    assert!(distinct.iter().all(|u| range.contains(u)), "{uids:?}");
    assert!(fx.sandbox_processes() >= POOLED + COLD);
    // The pool refilled meanwhile: its waiting sandboxes have uids of their own too,
    // so every live sandbox's payload runs as a uid no other has.
    let shared: Vec<_> = uids_by_sandbox()
        .into_iter()
        .filter(|(_, s)| s.len() > 1)
        .collect();
    assert!(
        shared.is_empty(),
        "uids shared by live sandboxes: {shared:?}"
    );
    cancel.cancel();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, Status::Cancelled);
    }
    pool.shutdown().await;
    drop(pool);
    fx.settle().await;
}

#[tokio::test]
async fn a_sandbox_gets_no_uid_while_all_are_in_use() {
    // A range of three, apart from the fixtures' ranges. The fixture only provides
    // the runtime: it runs nothing meanwhile (both name their cgroups sb-<pid>-<n>).
    let fx = Fixture::new();
    let shell = fx.runtime("shell").await;
    let launch = shell.launch();
    let mut config = fx.sandboxes.config().clone();
    config.uid_base = 8_000_000 + (std::process::id() % 100_000) * 4;
    config.uid_count = 3;
    config.prestart = 0;
    let sandboxes = Sandboxes::start(config.clone()).unwrap();
    let (said_tx, mut said) = mpsc::channel(16);
    let cancels: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
    let mut tasks: Vec<_> = (0..3)
        .map(|i| {
            spawn_shell(
                &sandboxes,
                None,
                &launch,
                "id -u; exec sleep 600",
                i,
                said_tx.clone(),
                cancels[i].clone(),
            )
        })
        .collect();
    let mut uids = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while uids.len() < 3 {
            let (_, text) = said.recv().await.unwrap();
            uids.push(text.trim().parse::<u32>().unwrap());
        }
    })
    .await
    .expect("three sandboxes running");
    uids.sort_unstable();
    let base = config.uid_base;
    assert_eq!(uids, [base, base + 1, base + 2]);

    // A fourth: a setup failure that says why, and nothing left of it.
    let (outcome, _, _) = run_job(
        &sandboxes,
        Job::new(launch.mounts.clone(), vec!["/bin/true".into()]),
    )
    .await;
    assert_eq!(outcome.status, Status::SetupFailed, "{outcome:?}");
    let error = outcome.error.unwrap();
    assert!(
        error.contains("every sandbox uid") && error.contains(&base.to_string()),
        "{error}"
    );

    // One ends: its uid is back once it is gone (when its outcome is out: a cancelled
    // sandbox is torn down before).
    cancels[1].cancel();
    let ended = tasks.remove(1).await.unwrap();
    assert_eq!(ended.status, Status::Cancelled);
    while sandboxes.pending_teardowns() > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (outcome, stdout, _) = run_job(&sandboxes, {
        let mut job = Job::new(
            launch.mounts.clone(),
            vec!["/bin/sh".into(), "-c".into(), "id -u".into()],
        );
        job.env = launch.environment.clone();
        job
    })
    .await;
    assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
    let reused: u32 = stdout.trim().parse().unwrap();
    assert!(uids.contains(&reused), "{reused} from {uids:?}");
    for c in &cancels {
        c.cancel();
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, Status::Cancelled);
    }
    while sandboxes.pending_teardowns() > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// --- 5. rlimits -----------------------------------------------------------------------

#[tokio::test]
async fn every_rlimit_of_the_payload_is_set() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let limits = Limits {
        cpu_time: Duration::from_millis(6500),
        max_processes: 20,
        open_files: 300,
        stack_bytes: 4 << 20,
        ..Limits::default()
    };
    let (outcome, stdout, stderr) = run_job(
        &fx.sandboxes,
        python_job(
            &python,
            "print(open('/proc/self/limits').read(), end='')",
            limits,
        ),
    )
    .await;
    assert_eq!(outcome.status, Status::Ok, "{outcome:?} {stderr}");
    let expected: [(&str, &str, &str); 16] = [
        // A backstop at twice the 6.5 s limit, which the supervisor enforces on the
        // cgroup's exact usage (RLIMIT_CPU's tick-sampled clock runs ahead under load).
        ("Max cpu time", "13", "14"),
        ("Max file size", "unlimited", "unlimited"),
        ("Max data size", "unlimited", "unlimited"),
        ("Max stack size", "4194304", "4194304"),
        ("Max core file size", "0", "0"),
        ("Max resident set", "unlimited", "unlimited"),
        // Twice the payload's 20: each of its tasks may have a fork in flight, which
        // RLIMIT_NPROC counts before pids.max (20 + helper + init) does; pids.max
        // bites first and is reported.
        ("Max processes", "40", "40"),
        ("Max open files", "300", "300"),
        ("Max locked memory", "65536", "65536"),
        ("Max address space", "unlimited", "unlimited"),
        ("Max file locks", "300", "300"),
        ("Max pending signals", "1024", "1024"),
        ("Max msgqueue size", "0", "0"),
        ("Max nice priority", "0", "0"),
        ("Max realtime priority", "0", "0"),
        // Real-time tasks only, which the payload cannot be; never 0, which the kernel
        // would enforce on any thread with a CPU-time timer.
        ("Max realtime timeout", "7000000", "7000000"),
    ];
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), expected.len(), "{stdout}");
    for (line, (name, soft, hard)) in lines.iter().zip(expected) {
        let (n, values) = line.split_at(26);
        let values: Vec<&str> = values.split_whitespace().collect();
        assert_eq!(
            (n.trim(), values[0], values[1]),
            (name, soft, hard),
            "{stdout}"
        );
    }
}

/// The payload at exactly `tasks` tasks (itself and `tasks - 1` children), each waiting
/// at a gate; each round the gate opens and every one of them forks at once, into a
/// full cgroup. Says how many forks were refused (EAGAIN) and how many were not.
fn forks_at_the_limit(tasks: u64, rounds: u64) -> String {
    format!(
        r#"
import os, time
TASKS, ROUNDS = {tasks}, {rounds}
gates = [os.pipe() for _ in range(ROUNDS)]
results_r, results_w = os.pipe()
def fork_once():
    try:
        pid = os.fork()
    except BlockingIOError:
        return b"E"
    except OSError:
        return b"O"
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return b"S"
children = []
for _ in range(TASKS - 1):
    pid = os.fork()
    if pid == 0:
        for _, w in gates:
            os.close(w)
        for r, _ in gates:
            os.read(r, 1)
            os.write(results_w, fork_once())
        os._exit(0)
    children.append(pid)
results = b""
for _, w in gates:
    os.close(w)
    got = fork_once()
    while len(got) < TASKS:
        got += os.read(results_r, TASKS - len(got))
    results += got
for pid in children:
    os.waitpid(pid, 0)
print(f"forks {{len(results)}} refused {{results.count(b'E')}} other {{len(results) - results.count(b'E')}}")
print("probe-done", flush=True)
time.sleep(600)
"#
    )
}

/// `process_limit` is decided on the cgroup's count of refused forks (pids.events), so
/// every fork refused at the process limit has to be refused by the cgroup, also when
/// all of the payload's tasks fork at once. The kernel checks RLIMIT_NPROC earlier in
/// fork than pids.max and counts the forks still in flight against it; were it the
/// tighter of the two for a moment, a fork would fail without an event.
#[tokio::test]
async fn every_fork_refused_at_the_process_limit_is_the_cgroups() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    const TASKS: u64 = 8;
    const ROUNDS: u64 = 100;
    let limits = Limits {
        max_processes: TASKS,
        wall_time: Duration::from_secs(100),
        cpu_time: Duration::from_secs(60),
        ..Limits::default()
    };
    let mut live = Live::start(
        &fx.sandboxes,
        python_job(&python, &forks_at_the_limit(TASKS, ROUNDS), limits),
    );
    let said = live.until_line("probe-done").await;
    let dir = sandbox_cgroup_of("pids", "python3.11").expect("the sandbox's cgroup");
    let events = std::fs::read_to_string(dir.join("pids.events")).unwrap();
    let events: u64 = events
        .trim()
        .strip_prefix("max ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("pids.events: {events}"));
    let (outcome, _, stderr) = live.stop().await;
    let refused: u64 = said
        .split_whitespace()
        .skip_while(|w| *w != "refused")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said} {stderr}"));
    assert_eq!(refused, TASKS * ROUNDS, "{said} {outcome:?} {stderr}");
    assert_eq!(
        events, refused,
        "forks refused without a pids event: {said} {outcome:?}"
    );
}

// --- 6. the cgroup namespace ----------------------------------------------------------

#[tokio::test]
async fn the_sandbox_sees_its_cgroup_as_the_root() {
    let fx = Fixture::new();
    let shell = fx.runtime("shell").await;
    let launch = shell.launch();
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        PoolSettings {
            size: 1,
            idle_limits: Limits::default(),
            max_age: Duration::from_secs(600),
            zygote: false,
        },
    )
    .unwrap();
    for pooled in [false, true] {
        let waiting = if pooled {
            Some(take_from(&pool).await)
        } else {
            None
        };
        let run = fx
            .run_in(
                waiting,
                &launch,
                one("cat /proc/self/cgroup"),
                Vec::new(),
                Limits::default(),
                CancellationToken::new(),
            )
            .await;
        assert_eq!(run.outcome.status, Status::Ok, "pooled {pooled}: {run:?}");
        let out = run.stdout();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(
            out.lines().count(),
            own.lines().count(),
            "pooled {pooled}: {out}"
        );
        for line in out.lines() {
            assert!(line.ends_with(":/"), "pooled {pooled}: {line} in\n{out}");
        }
    }
    pool.shutdown().await;
}

// --- 7. init --------------------------------------------------------------------------

const INIT_PROBE: &str = r#"
import os, errno, signal, ctypes, resource
r = {}
def check(name, f):
    try:
        r[name] = bool(f())
    except Exception as e:
        r[name] = f"error {type(e).__name__}: {e}"
def errno_of(f):
    try:
        f()
        return 0
    except OSError as e:
        return e.errno
status = dict(l.split(":\t", 1) for l in open("/proc/1/status").read().splitlines() if ":\t" in l)
print("init status:", {k: status[k].strip() for k in ["Name", "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"]})
check("init_is_init", lambda: status["Name"].strip() == "init")
check("init_keeps_only_cap_kill", lambda: int(status["CapEff"], 16) == 1 << 5 and int(status["CapPrm"], 16) == 1 << 5)
check("init_bounding_set_empty", lambda: int(status["CapBnd"], 16) == 0)
check("init_inheritable_and_ambient_empty", lambda: int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0)
check("init_no_new_privs", lambda: status["NoNewPrivs"].strip() == "1")
check("init_no_groups", lambda: status["Groups"].strip() == "")
check("init_is_not_our_uid", lambda: status["Uid"].split()[0] != str(os.getuid()))
check("init_proc_entries_are_roots", lambda: os.stat("/proc/1").st_uid == 0)
check("no_signal_to_init", lambda: errno_of(lambda: os.kill(1, 0)) == errno.EPERM)
check("no_kill_of_init", lambda: errno_of(lambda: os.kill(1, signal.SIGKILL)) == errno.EPERM)
check("no_prlimit_of_init", lambda: errno_of(lambda: resource.prlimit(1, resource.RLIMIT_NOFILE, (1, 1))) == errno.EPERM)
check("no_priority_of_init", lambda: errno_of(lambda: os.setpriority(os.PRIO_PROCESS, 1, 19)) in (errno.EPERM, errno.EACCES))
check("no_affinity_of_init", lambda: errno_of(lambda: os.sched_setaffinity(1, {0})) == errno.EPERM)
for name in ["mem", "environ", "maps", "auxv", "syscall", "stack"]:
    check(f"no_read_of_init_{name}", lambda name=name: errno_of(lambda: open(f"/proc/1/{name}", "rb").read()) in (errno.EACCES, errno.EPERM))
for name in ["exe", "cwd", "root"]:
    check(f"no_readlink_of_init_{name}", lambda name=name: errno_of(lambda: os.readlink(f"/proc/1/{name}")) in (errno.EACCES, errno.EPERM))
check("no_listing_of_init_fds", lambda: errno_of(lambda: os.listdir("/proc/1/fd")) in (errno.EACCES, errno.EPERM))
libc = ctypes.CDLL(None, use_errno=True)
def denied(nr, *args):
    rc = libc.syscall(nr, *args)
    return rc == -1 and ctypes.get_errno() in (errno.EPERM, errno.EACCES, errno.ENOSYS)
# x86_64: ptrace(PTRACE_ATTACH), ptrace(PTRACE_SEIZE), process_vm_readv, pidfd_open + pidfd_getfd
check("no_ptrace_attach_of_init", lambda: denied(101, 16, 1, 0, 0))
check("no_ptrace_seize_of_init", lambda: denied(101, 0x4206, 1, 0, 0))
buf = ctypes.create_string_buffer(8)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local = iovec(ctypes.cast(buf, ctypes.c_void_p), 8)
remote = iovec(0x400000, 8)
check("no_process_vm_readv_of_init", lambda: denied(310, 1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
for k, v in r.items():
    print(f"{k}={v}")
"#;

#[tokio::test]
async fn init_keeps_only_what_it_needs_and_is_out_of_the_payloads_reach() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let (outcome, stdout, stderr) = run_job(
        &fx.sandboxes,
        python_job(&python, INIT_PROBE, Limits::default()),
    )
    .await;
    // Init outlived every attempt and reported the payload's status.
    assert_eq!(outcome.status, Status::Ok, "{outcome:?} {stdout} {stderr}");
    all_true(&stdout, 25, &(&outcome, &stdout, &stderr));
}
