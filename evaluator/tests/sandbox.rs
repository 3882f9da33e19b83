//! Real sandboxes (root required): isolation probed from inside, every limit, cleanup,
//! and bad input. The Python runtime is built from the host by the installer once.

mod common;

use std::time::Duration;

use common::Fixture;
use evaluator::sandbox::{Event, Job, Limits, Status};
use evaluator::snippet::{Component, Output};
use tokio_util::sync::CancellationToken;

fn one(code: &str) -> Vec<Component> {
    vec![Component {
        id: "c1".into(),
        code: code.into(),
    }]
}

/// Checks from inside the sandbox; each prints `name=True|False`.
const PROBE: &str = r#"
import os, socket, ctypes, errno
r = {}
def check(name, f):
    try:
        r[name] = bool(f())
    except Exception as e:
        r[name] = f"error {type(e).__name__}: {e}"

def raises(f, *types):
    try:
        f()
    except types:
        return True
    return False

top = set(os.listdir("/"))
check("root_has_only_sandbox_dirs", lambda: top <= {"usr", "lib", "lib64", "bin", "etc", "work", "tmp", "dev", "proc"})
check("host_files_invisible", lambda: not any(os.path.exists(p) for p in ["/etc/passwd", "/etc/shadow", "/root", "/home", "/var", "/boot", "/sys", "/run", os.environ.get("HOST_PROBE_PATH", "/nonexistent-host-path")]))
check("runtime_is_readonly", lambda: raises(lambda: open("/usr/probe", "w"), OSError))
check("root_is_readonly", lambda: raises(lambda: open("/probe", "w"), OSError))
check("proc_is_not_writable", lambda: raises(lambda: open("/proc/sys/kernel/hostname", "w").write("x"), OSError))
def write_ok(path):
    with open(path, "w") as f:
        f.write("x")
    return open(path).read() == "x"
check("work_writable", lambda: write_ok("/work/probe"))
check("tmp_writable", lambda: write_ok("/tmp/probe"))
def tcp(host, port):
    s = socket.socket(); s.settimeout(1)
    try:
        s.connect((host, port))
    finally:
        s.close()
check("no_tcp_out", lambda: raises(lambda: tcp("1.1.1.1", 443), OSError))
check("no_host_loopback", lambda: raises(lambda: tcp("127.0.0.1", int(os.environ["HOST_PORT"])), OSError))
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("8.8.8.8", 53))
check("no_udp_out", lambda: raises(udp, OSError))
check("no_dns", lambda: raises(lambda: socket.getaddrinfo("example.com", 80), OSError))
def own_loopback():
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=1); c.close(); srv.close()
    return True
check("loopback_works", own_loopback)
check("pid1_is_init", lambda: os.getpid() != 1 and os.getppid() == 1 and open("/proc/1/status").read().split("\n")[0] != "Name:\tpython3.11")
check("few_processes", lambda: len([p for p in os.listdir("/proc") if p.isdigit()]) <= 3)
check("not_root", lambda: os.getuid() != 0 and os.geteuid() != 0 and os.getgid() != 0)
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
check("no_capabilities", lambda: all(int(status[k], 16) == 0 for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]))
check("no_new_privs", lambda: status["NoNewPrivs"].strip() == "1")
check("seccomp_filter", lambda: status["Seccomp"].strip() == "2")
check("hostname", lambda: socket.gethostname() == "sandbox")
libc = ctypes.CDLL(None, use_errno=True)
def denied(nr, *args):
    rc = libc.syscall(nr, *args)
    return rc == -1 and ctypes.get_errno() in (errno.EPERM, errno.ENOSYS)
# x86_64 syscall numbers
check("mount_denied", lambda: denied(165, b"none", b"/tmp", b"tmpfs", 0, None))
check("unshare_denied", lambda: denied(272, 0x10000000))
check("ptrace_denied", lambda: denied(101, 16, 1, 0, 0))
check("keyctl_denied", lambda: denied(250, 0, 0, 0, 0))
check("io_uring_denied", lambda: denied(425, 8, 0))
check("bpf_denied", lambda: denied(321, 0, 0, 0))
check("new_userns_denied", lambda: denied(56, 0x10000000 | 17, 0, 0, 0, 0))
for k, v in r.items():
    print(f"{k}={v}")
"#;

#[tokio::test]
async fn isolation_holds_from_inside() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    // A service on the host's loopback the sandbox must not reach.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut launch = python.launch();
    launch
        .environment
        .push(("HOST_PORT".into(), port.to_string()));
    launch
        .environment
        .push(("HOST_PROBE_PATH".into(), env!("CARGO_MANIFEST_DIR").into()));
    let run = fx.eval_launch(&launch, one(PROBE), Limits::default()).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:?}");
    let stdout = run.stdout();
    let checks: Vec<&str> = stdout.lines().collect();
    assert!(checks.len() >= 25, "probe did not finish: {run:?}");
    let failed: Vec<&&str> = checks.iter().filter(|l| !l.ends_with("=True")).collect();
    assert!(
        failed.is_empty(),
        "isolation checks failed: {failed:?}\n{run:?}"
    );
}

#[tokio::test]
async fn fork_bomb_hits_the_process_limit() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let limits = Limits {
        max_processes: 16,
        wall_time: Duration::from_secs(20),
        ..Limits::default()
    };
    let run = fx
        .eval(
            &python,
            one("import os\nwhile True:\n    os.fork()"),
            limits,
        )
        .await;
    assert_eq!(run.outcome.status, Status::ProcessLimit, "{run:?}");
    fx.assert_clean().await;
}

/// The status names the limit hit first every time: a shell fork bomb, run after run,
/// several at once (the forks of a bomb race each other at the limit, and more so on
/// busy CPUs), each one `process_limit`.
#[tokio::test]
async fn a_fork_bomb_is_the_process_limit_every_time() {
    let fx = std::sync::Arc::new(Fixture::new());
    let shell = fx.runtime("shell").await;
    let limits = Limits {
        max_processes: 16,
        wall_time: Duration::from_secs(20),
        ..Limits::default()
    };
    // Where everything is slower (an emulated CI guest), 40 runs two at once, not to
    // starve the tests that run beside this one.
    let (runs, at_once) = if common::time_scale() > 1 {
        (40, 2)
    } else {
        (300, 8)
    };
    let mut outcomes = Vec::new();
    let mut running = tokio::task::JoinSet::<common::Run>::new();
    for _ in 0..runs {
        if running.len() == at_once {
            outcomes.push(running.join_next().await.unwrap().unwrap().outcome);
        }
        let (fx, shell, limits) = (fx.clone(), shell.clone(), limits.clone());
        running.spawn(async move {
            fx.eval(&shell, one("f() { f & f & wait; }; f"), limits)
                .await
        });
    }
    while let Some(run) = running.join_next().await {
        outcomes.push(run.unwrap().outcome);
    }
    let wrong: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status != Status::ProcessLimit)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {runs} runs: {wrong:#?}",
        wrong.len()
    );
    fx.assert_clean().await;
}

/// Forks that run out of memory, far below the process limit: the memory limit is the
/// one hit and reported, however the forks and children fared.
#[tokio::test]
async fn forks_that_run_out_of_memory_are_the_memory_limit() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let limits = Limits {
        memory_bytes: 64 << 20,
        max_processes: 64,
        wall_time: Duration::from_secs(20),
        ..Limits::default()
    };
    // 24 children of 8 MiB each, written to: three times the memory limit.
    let code = "import os, time\nkids = 0\nfor _ in range(24):\n    try:\n        pid = os.fork()\n    except OSError as e:\n        print('fork failed', e.errno, flush=True)\n        continue\n    if pid == 0:\n        b = b'x' * (8 << 20)\n        time.sleep(2)\n        os._exit(0)\n    kids += 1\nfor _ in range(kids):\n    os.wait()";
    let run = fx.eval(&python, one(code), limits).await;
    assert_eq!(run.outcome.status, Status::MemoryLimit, "{run:?}");
    fx.assert_clean().await;
}

/// A bomb that keeps trying after its forks fail, until the wall clock stops it: the
/// status names the limit that was hit first, the process limit.
#[tokio::test]
async fn a_fork_bomb_stopped_by_the_wall_clock_reports_the_process_limit() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let limits = Limits {
        max_processes: 8,
        wall_time: Duration::from_secs(2),
        ..Limits::default()
    };
    let code = "import os, time\nwhile True:\n    try:\n        if os.fork() == 0:\n            time.sleep(100)\n    except OSError:\n        pass";
    let run = fx.eval(&python, one(code), limits).await;
    assert_eq!(run.outcome.status, Status::ProcessLimit, "{run:?}");
    assert!(run.outcome.wall_time >= Duration::from_secs(2), "{run:?}");
    fx.assert_clean().await;
}

/// A shell snippet that has `total` processes alive at once: itself and `total - 1`
/// `sleep`s, each seen running `sleep` before it says so (builtins and redirections
/// only, so that the shell forks nothing else).
fn processes_script(total: u64) -> String {
    format!(
        r#"pids=""
i=1
while [ $i -lt {total} ]; do
  sleep 100 &
  pids="$pids $!"
  i=$((i + 1))
done
for p in $pids; do
  c=""
  while [ "$c" != sleep ]; do read -r c < /proc/$p/comm; done
done
n=0
for d in /proc/[0-9]*; do n=$((n + 1)); done
echo "alive $((n - 1))"
kill $pids
wait
"#
    )
}

#[tokio::test]
async fn the_process_limit_counts_only_the_snippets_processes() {
    use evaluator::pool::{Pool, PoolSettings};
    let fx = Fixture::new();
    let shell = fx.runtime("shell").await;
    let launch = shell.launch();
    const N: u64 = 5;
    let limits = Limits {
        max_processes: N,
        wall_time: Duration::from_secs(20),
        ..Limits::default()
    };
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        PoolSettings {
            size: 2,
            idle_limits: Limits::default(),
            max_age: Duration::from_secs(300),
            zygote: false,
        },
    )
    .unwrap();
    for pooled in [false, true] {
        let waiting = || async {
            if !pooled {
                return None;
            }
            loop {
                if let Some(w) = pool.take() {
                    return Some(w);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        // Exactly N: the shell and N - 1 sleeps, all running (init is not counted).
        let run = fx
            .run_in(
                waiting().await,
                &launch,
                one(&processes_script(N)),
                Vec::new(),
                limits.clone(),
                CancellationToken::new(),
            )
            .await;
        assert_eq!(run.outcome.status, Status::Ok, "pooled {pooled}: {run:?}");
        assert_eq!(run.stdout(), format!("alive {N}\n"), "pooled {pooled}");
        // One more is the process limit.
        let run = fx
            .run_in(
                waiting().await,
                &launch,
                one(&processes_script(N + 1)),
                Vec::new(),
                limits.clone(),
                CancellationToken::new(),
            )
            .await;
        assert_eq!(
            run.outcome.status,
            Status::ProcessLimit,
            "pooled {pooled}: {run:?}"
        );
        assert!(!run.stdout().contains("alive"), "pooled {pooled}: {run:?}");
    }
    assert!(pool.stats().taken >= 2, "{:?}", pool.stats());
    pool.shutdown().await;
    drop(pool);
    fx.settle().await;
}

/// A pre-started sandbox's RLIMIT_NPROC is set when it starts, from its own process
/// limit: a request with a higher one is refused rather than cut short by it.
#[tokio::test]
async fn a_waiting_sandbox_takes_no_higher_process_limit_than_it_started_with() {
    use evaluator::pool::{Pool, PoolSettings};
    let fx = Fixture::new();
    let shell = fx.runtime("shell").await;
    let launch = shell.launch();
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        PoolSettings {
            size: 1,
            idle_limits: Limits {
                max_processes: 8,
                ..Limits::default()
            },
            max_age: Duration::from_secs(300),
            zygote: false,
        },
    )
    .unwrap();
    let waiting = async {
        loop {
            if let Some(w) = pool.take() {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let limits = Limits {
        max_processes: 9,
        ..Limits::default()
    };
    let run = fx
        .run_in(
            Some(waiting.await),
            &launch,
            one("echo ran"),
            Vec::new(),
            limits,
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::SetupFailed, "{run:?}");
    let error = run.outcome.error.clone().unwrap_or_default();
    assert!(error.contains("process limit"), "{run:?}");
    assert!(!run.stdout().contains("ran"), "{run:?}");
    pool.shutdown().await;
    drop(pool);
    fx.settle().await;
}

#[tokio::test]
async fn memory_hog_hits_the_memory_limit() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let run = fx
        .eval(
            &python,
            one("x = bytearray(512 << 20)\nprint('survived')"),
            limits,
        )
        .await;
    assert_eq!(run.outcome.status, Status::MemoryLimit, "{run:?}");
    assert!(!run.stdout().contains("survived"));
    assert!(
        run.outcome.peak_memory > 32 << 20,
        "peak memory {}",
        run.outcome.peak_memory
    );
}

#[tokio::test]
async fn busy_loop_hits_the_cpu_limit() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let limits = Limits {
        cpu_time: Duration::from_secs(1),
        wall_time: Duration::from_secs(20),
        ..Limits::default()
    };
    let run = fx.eval(&python, one("while True:\n    pass"), limits).await;
    assert_eq!(run.outcome.status, Status::CpuLimit, "{run:?}");
    // The supervisor stops it on the cgroup's exact usage: the limit was used up, however
    // loaded the host (RLIMIT_CPU, whose tick-sampled clock runs ahead of the exact one
    // under load, is only a backstop at twice the limit).
    assert!(run.outcome.cpu_time >= Duration::from_secs(1), "{run:?}");
}

#[tokio::test]
async fn sleeping_hits_the_wall_clock_limit() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    // The wall clock runs from the request: the sandbox's setup and Python's start come
    // out of it before the snippet prints. Those take ~100 ms, but on a loaded 2-CPU CI
    // host setup alone has taken over a second (the payload never started: setup_time
    // 0 at 1.1 s), so a 1 s limit could end the run before there was any output.
    let limits = Limits {
        wall_time: Duration::from_secs(3),
        ..Limits::default()
    };
    let run = fx
        .eval(
            &python,
            one("import time\nprint('before', flush=True)\ntime.sleep(600)"),
            limits,
        )
        .await;
    assert_eq!(run.outcome.status, Status::WallTimeout, "{run:?}");
    assert_eq!(
        run.stdout(),
        "before\n",
        "output before the timeout is delivered: {run:?}"
    );
    fx.assert_clean().await;
}

#[tokio::test]
async fn output_flood_hits_the_output_limit_and_keeps_the_head() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let limits = Limits {
        output_bytes: 100_000,
        ..Limits::default()
    };
    let run = fx
        .eval(
            &python,
            one("i = 0\nwhile True:\n    print(f'line {i:08d}')\n    i += 1"),
            limits,
        )
        .await;
    assert_eq!(run.outcome.status, Status::OutputLimit, "{run:?}");
    assert!(run.outcome.stdout_truncated);
    let out = run.stdout();
    assert_eq!(out.len(), 100_000);
    assert!(
        out.starts_with("line 00000000\nline 00000001\n"),
        "head of the output delivered"
    );
}

#[tokio::test]
async fn filling_tmp_stops_at_its_size() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let limits = Limits {
        tmp_bytes: 8 << 20,
        memory_bytes: 256 << 20,
        ..Limits::default()
    };
    let code = "import errno\nn = 0\ntry:\n    with open('/tmp/fill', 'wb') as f:\n        while True:\n            f.write(b'x' * 65536); f.flush(); n += 65536\nexcept OSError as e:\n    print(errno.errorcode[e.errno], n)";
    let run = fx.eval(&python, one(code), limits).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:?}");
    let out = run.stdout();
    let (err, n) = out.trim().split_once(' ').expect("an errno and a count");
    assert_eq!(err, "ENOSPC");
    assert!(n.parse::<u64>().unwrap() <= 8 << 20, "{out}");
}

#[tokio::test]
async fn filling_work_or_shm_says_no_space_left() {
    let fx = Fixture::new();
    // The default limits: /work and /dev/shm are 64 MiB each, like the file size
    // limit used to be.
    let limits = Limits::default();
    let python = fx.runtime("python-3.11").await;
    let code = r#"import os, errno
def fill(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    n = 0
    try:
        while True:
            n += os.write(fd, b'x' * 65536)
    except OSError as e:
        return f"{path}: {errno.errorcode[e.errno]}: {e.strerror}: {n}"
    finally:
        os.close(fd)
        os.unlink(path)
for p in ['/work/fill', '/dev/shm/fill']:
    print(fill(p))"#;
    let run = fx.eval(&python, one(code), limits.clone()).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:?}");
    let out = run.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    for (line, dir, size) in [
        (lines[0], "/work/fill", limits.work_bytes),
        (lines[1], "/dev/shm/fill", limits.tmp_bytes.min(64 << 20)),
    ] {
        let parts: Vec<&str> = line.split(": ").collect();
        assert_eq!(
            parts[..3],
            [dir, "ENOSPC", "No space left on device"],
            "{line}"
        );
        let written: u64 = parts[3].parse().unwrap();
        assert!(
            written > size / 2 && written <= size,
            "{line}: {written} of {size}"
        );
    }

    // A program that does not ignore SIGXFSZ (dd) is not killed by it either.
    let shell = fx.runtime("shell").await;
    for dir in ["/work", "/dev/shm"] {
        let job = Job::new(
            shell.launch().mounts,
            vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("dd if=/dev/zero of={dir}/fill bs=65536"),
            ],
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let collect = tokio::spawn(async move {
            let mut stderr = Vec::new();
            while let Some(e) = rx.recv().await {
                if let Event::Stderr(data) = e {
                    stderr.extend(data);
                }
            }
            String::from_utf8_lossy(&stderr).into_owned()
        });
        let framing = evaluator::events::Bounds::for_job(&job).framing;
        let outcome = fx
            .sandboxes
            .run(job, framing, tx, CancellationToken::new())
            .await;
        let stderr = collect.await.unwrap();
        assert_eq!(
            (outcome.status, outcome.exit_code),
            (Status::ExitedNonZero, Some(1)),
            "{dir}: {outcome:?} {stderr}"
        );
        assert!(
            stderr.contains("No space left on device"),
            "{dir}: {stderr}"
        );
    }
    fx.assert_clean().await;
}

#[tokio::test]
async fn background_processes_are_killed_at_the_end() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)\nprint('parent done')";
    let run = fx.eval(&python, one(code), Limits::default()).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:?}");
    // The outcome may come while the sandbox is still going away (counted as a
    // pending teardown); once that is done, nothing of it is left.
    fx.settle().await;
    assert_eq!(
        fx.sandbox_processes(),
        0,
        "a sandbox process outlived its evaluation"
    );
}

/// cgroup v1: while the sandboxes exist, the `favordynmods` hierarchy that keeps
/// migrations cheap exists (every process lists it), and nothing of it is mounted.
#[tokio::test]
async fn cgroup_migrations_are_favored_and_nothing_stays_mounted() {
    let fx = Fixture::new();
    let hierarchy = "name=jsheets-favordynmods";
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(hierarchy),
        "the hierarchy is left mounted: {mounts}"
    );
    let listed = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .contains(hierarchy);
    let v1 = fx.sandboxes.cgroup_version() == evaluator::sandbox::cgroup::Version::V1;
    assert_eq!(listed, v1, "the favored hierarchy exists only on cgroup v1");
}

#[tokio::test]
async fn two_hundred_evaluations_leave_nothing_behind() {
    let fx = Fixture::new();
    let shell = fx.runtime("shell").await;
    let before = fx.host_state().await;
    for i in 0..200 {
        let job = Job::new(
            shell.launch().mounts,
            vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo {i}; (sleep 100 &) ; true"),
            ],
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let framing = evaluator::events::Bounds::for_job(&job).framing;
        let outcome = fx
            .sandboxes
            .run(job, framing, tx, CancellationToken::new())
            .await;
        drain.await.unwrap();
        assert_eq!(outcome.status, Status::Ok, "evaluation {i}: {outcome:?}");
    }
    assert_eq!(
        fx.host_state().await,
        before,
        "processes, cgroups or mounts changed"
    );
}

#[tokio::test]
async fn cancellation_kills_everything() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let cancel = CancellationToken::new();
    let code =
        "import os, time\nos.fork()\nos.fork()\nprint('running', flush=True)\ntime.sleep(600)";
    // Cancelled once all four run (they print after the forks), not after a guess.
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let trigger = cancel.clone();
    let watch = tokio::spawn(async move {
        let mut seen = String::new();
        while let Some(o) = rx.recv().await {
            if let Output::Stdout { data, .. } = o {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
            if seen.matches("running").count() == 4 {
                trigger.cancel();
            }
        }
    });
    let launch = python.launch();
    let components = one(code);
    let evaluation = evaluator::evaluate::evaluate(
        &fx.sandboxes,
        &launch,
        &components,
        Vec::new(),
        Limits::default(),
        tx,
        cancel.clone(),
    );
    let outcome = tokio::time::timeout(Duration::from_secs(60), evaluation)
        .await
        .expect("the evaluation ended")
        .unwrap();
    watch.await.unwrap();
    assert!(cancel.is_cancelled(), "{outcome:?}");
    assert_eq!(outcome.status, Status::Cancelled, "{outcome:?}");
    assert!(outcome.wall_time < Duration::from_secs(5), "{outcome:?}");
    // All four processes, zombies included. Usually gone before the outcome (the
    // supervisor waits for the helper, which reaps init, which the kernel ends after
    // the rest of its namespace), but if the pipes stay open two seconds after the kill
    // the teardown goes on in the background, counted: `assert_clean` waits for it.
    fx.assert_clean().await;
}

#[tokio::test]
async fn dropping_the_evaluation_kills_it() {
    let fx = std::sync::Arc::new(Fixture::new());
    let python = fx.runtime("python-3.11").await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let job = evaluator::lang::job(
        &python.launch(),
        &one("import time\nprint('up', flush=True)\ntime.sleep(600)"),
        vec![],
        Limits::default(),
    )
    .unwrap();
    let fx2 = fx.clone();
    let framing = evaluator::events::Bounds::for_job(&job).framing;
    let task = tokio::spawn(async move {
        fx2.sandboxes
            .run(job, framing, tx, CancellationToken::new())
            .await
    });
    // Wait until it runs, then drop the future.
    while let Some(e) = rx.recv().await {
        // Python's print travels as a driver event.
        if matches!(&e, Event::Driver(line) if line.starts_with(br#"{"event":"output""#)) {
            break;
        }
    }
    assert!(fx.sandbox_processes() > 0);
    task.abort();
    let _ = task.await;
    // The kill goes on on a blocking thread (never on an async worker), counted in
    // `pending_teardowns` until it is done.
    fx.settle().await;
    assert_eq!(
        fx.sandbox_processes(),
        0,
        "processes survived a dropped evaluation"
    );
    fx.assert_clean().await;
}

#[tokio::test]
async fn notebook_semantics_across_components() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let comps = vec![
        Component {
            id: "a".into(),
            code: "x = 40\nprint('hi')".into(),
        },
        Component {
            id: "b".into(),
            code: "x + 2".into(),
        },
        Component {
            id: "c".into(),
            code: "y = 1\n1/0".into(),
        },
        Component {
            id: "d".into(),
            code: "def f(:\n  pass".into(),
        },
        Component {
            id: "e".into(),
            code: "import sys\nprint(sys.stdin.read().upper(), end='')\ny".into(),
        },
    ];
    let run = fx
        .eval_stdin(&python, comps, b"from stdin".to_vec(), Limits::default())
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:?}");
    let values: Vec<_> = run
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Value { component, text } => Some((component.as_str(), text.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(values, [("b", "42"), ("e", "1")]);
    assert!(
        run.outputs.contains(&Output::Stdout {
            component: "a".into(),
            data: b"hi\n".to_vec()
        }),
        "{run:?}"
    );
    assert!(
        run.outputs.contains(&Output::Stdout {
            component: "e".into(),
            data: b"FROM STDIN".to_vec()
        }),
        "{run:?}"
    );
    let exc = run
        .outputs
        .iter()
        .find_map(|o| match o {
            Output::Exception {
                component,
                kind,
                traceback,
                line,
                ..
            } => Some((component, kind, traceback, line)),
            _ => None,
        })
        .expect("an exception");
    assert_eq!(
        (exc.0.as_str(), exc.1.as_str(), *exc.3),
        ("c", "ZeroDivisionError", Some(2))
    );
    assert!(
        exc.2.contains("File \"<c>\", line 2") && !exc.2.contains("jsheets-driver"),
        "{}",
        exc.2
    );
    let diag = run
        .outputs
        .iter()
        .find_map(|o| match o {
            Output::Diagnostic {
                component,
                kind,
                line,
                column,
                start,
                ..
            } => Some((component.as_str(), kind.as_str(), *line, *column, *start)),
            _ => None,
        })
        .expect("a diagnostic");
    assert_eq!(diag, ("d", "SyntaxError", 1, 7, 6));
}

#[tokio::test]
async fn invalid_utf8_output_is_passed_through() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let run = fx
        .eval(
            &python,
            one("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe ok\\n')"),
            Limits::default(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:?}");
    assert_eq!(run.stdout_bytes(), b"\xff\xfe ok\n");
}

#[tokio::test]
async fn a_ten_megabyte_snippet_is_evaluated() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let mut code = "# padding\n".repeat(1_048_576);
    code.push_str("len('done')");
    assert!(code.len() >= 10 << 20);
    let run = fx.eval(&python, one(&code), Limits::default()).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:?}");
    assert!(
        run.outputs.contains(&Output::Value {
            component: "c1".into(),
            text: "4".into()
        }),
        "{run:?}"
    );
}

#[tokio::test]
async fn empty_snippet_is_refused() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let err = evaluator::lang::job(&python.launch(), &[], vec![], Limits::default()).unwrap_err();
    assert_eq!(err.to_string(), "the snippet has no code components");
    let _ = fx;
}

#[tokio::test]
async fn setup_failures_name_the_step() {
    let fx = Fixture::new();
    let shell = fx.runtime("shell").await;
    let job = Job::new(shell.launch().mounts, vec!["/bin/no-such-program".into()]);
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let framing = evaluator::events::Bounds::for_job(&job).framing;
    let outcome = fx
        .sandboxes
        .run(job, framing, tx, CancellationToken::new())
        .await;
    assert_eq!(outcome.status, Status::SetupFailed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("exec /bin/no-such-program") && error.contains("errno 2"),
        "{error}"
    );

    let mut job = Job::new(shell.launch().mounts, vec!["/bin/true".into()]);
    job.cwd = "/work/../etc".into();
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let framing = evaluator::events::Bounds::for_job(&job).framing;
    let outcome = fx
        .sandboxes
        .run(job, framing, tx, CancellationToken::new())
        .await;
    assert_eq!(outcome.status, Status::SetupFailed);
    assert!(outcome
        .error
        .unwrap()
        .contains("not absolute and normalized"));
    fx.assert_clean().await;
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let fx = Fixture::new();
    let shell = fx.runtime("shell").await;
    for (script, status, code, signal) in [
        ("exit 0", Status::Ok, Some(0), None),
        ("exit 3", Status::ExitedNonZero, Some(3), None),
        ("kill -TERM $$", Status::Signaled, None, Some(15)),
    ] {
        let job = Job::new(
            shell.launch().mounts,
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        );
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let framing = evaluator::events::Bounds::for_job(&job).framing;
        let outcome = fx
            .sandboxes
            .run(job, framing, tx, CancellationToken::new())
            .await;
        assert_eq!(
            (outcome.status, outcome.exit_code, outcome.signal),
            (status, code, signal),
            "{script}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn build_steps_see_the_host_read_only_and_only_their_runtime() {
    use evaluator::install::BuildRunner;
    use std::os::unix::fs::MetadataExt;
    let fx = Fixture::new();
    // Outside /tmp (which builds get fresh), so hiding the runtimes directory is exercised.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let runtimes = tmp.path().join("runtimes");
    let staging = runtimes.join(".staging-probe");
    let other = runtimes.join("other");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("secret"), "service state").unwrap();
    let script = format!(
        "cd {staging}; \
         (echo x > /etc/jsheets-probe) 2>/dev/null && echo etc-writable >> findings; \
         (echo x > /usr/jsheets-probe) 2>/dev/null && echo usr-writable >> findings; \
         test -e {other}/secret && echo other-runtime-visible >> findings; \
         test -r /etc/os-release || echo host-invisible >> findings; \
         echo built > artifact; id -u > uid",
        staging = staging.display(),
        other = other.display()
    );
    let runner = evaluator::install::SandboxBuilder::new(&fx.sandboxes);
    let argv = ["/bin/sh".to_string(), "-c".to_string(), script];
    runner
        .run_build_step(&argv, &[], &staging, &runtimes)
        .await
        .expect("build step");
    assert!(
        !staging.join("findings").exists(),
        "{}",
        std::fs::read_to_string(staging.join("findings")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(staging.join("artifact")).unwrap(),
        "built\n"
    );
    let uid: u32 = std::fs::read_to_string(staging.join("uid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(uid, 0, "build steps run unprivileged");
    // The tree is handed back to root once the step is over.
    assert_eq!(
        std::fs::metadata(staging.join("artifact")).unwrap().uid(),
        0
    );
    assert!(!std::path::Path::new("/etc/jsheets-probe").exists());
    // Its caller works on the tree next: nothing of the sandbox may still be there.
    assert_eq!(fx.sandboxes.pending_teardowns(), 0);

    // A failing step reports its status and output.
    let argv = [
        "/bin/sh".to_string(),
        "-c".to_string(),
        "echo broken recipe >&2; exit 3".to_string(),
    ];
    let err = runner
        .run_build_step(&argv, &[], &staging, &runtimes)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exited_nonzero") && err.contains("broken recipe"),
        "{err}"
    );
    fx.assert_clean().await;
}

#[tokio::test]
async fn a_dead_pre_spawned_helper_is_replaced_not_used() {
    let fx = Fixture::new();
    let shell = fx.runtime("shell").await;
    let run = || async {
        let job = Job::new(shell.launch().mounts, vec!["/bin/true".into()]);
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let framing = evaluator::events::Bounds::for_job(&job).framing;
        fx.sandboxes
            .run(job, framing, tx, CancellationToken::new())
            .await
    };
    assert_eq!(run().await.status, Status::Ok);
    while fx.sandboxes.pending_refills() > 0 || fx.sandboxes.idle() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Kill every idle helper from outside (they are root-owned helpers waiting in read()).
    let ours = format!("sb-{}-", std::process::id());
    let mut killed = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let pid: i32 = entry.file_name().to_string_lossy().parse().unwrap_or(0);
        if pid > 0 && cgroup.contains(&ours) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed.push(pid);
        }
    }
    // Dead means exited (a zombie until reaped, or gone): a SIGKILL is not instant, and
    // on a slow CPU a fixed pause was not long enough.
    let dead = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !killed.iter().all(dead) {
        assert!(
            std::time::Instant::now() < deadline,
            "killed helpers still run"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let outcome = run().await;
    assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
}

// --- cgroup v2: nodes starting together in one cgroup ---------------------------------

/// Set for the children of `nodes_starting_together_put_sandboxes_where_they_say`: the
/// cgroup they were put in.
const TOGETHER_CHILD: &str = "JSHEETS_TEST_TOGETHER_CHILD";

/// On cgroup v2 a node moves every process of its cgroup into a `service` leaf before it
/// can delegate controllers to sandboxes. Several nodes (or test processes) starting at
/// the same moment in one cgroup, as a Delegate=yes service's do, must each still create
/// a sandbox's cgroup where they tell its helper it is: one that read its cgroup before
/// another moved it and found the directory after put sandboxes under the leaf while
/// naming the root, and each of its helpers refused its placement (seen in the v2 stage
/// as a batch test's cold helpers failing when it started together with another suite's
/// test). Rounds of children put in a fresh cgroup of our subtree and started together;
/// each places a process in a sandbox cgroup and checks that the kernel shows it where a
/// helper would be told it is. v2 only.
#[test]
fn nodes_starting_together_put_sandboxes_where_they_say() {
    use evaluator::sandbox::cgroup::{Manager, Version};
    use std::process::{Command, Stdio};
    const ROUNDS: usize = 6;
    const CHILDREN: usize = 6;
    let manager = Manager::start(None).expect("starting the cgroup manager");
    if manager.version() != Version::V2 {
        println!("cgroup v1: no node moves another");
        return;
    }
    for round in 0..ROUNDS {
        // Named as a sandbox of ours, so that no other process's sweep removes it.
        let name = format!("sb-{}-together-{round}", std::process::id());
        let (_, path) = manager.placement(&name).remove(0);
        let fresh = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        std::fs::create_dir(&fresh).unwrap_or_else(|e| panic!("mkdir {}: {e}", fresh.display()));
        let _remove = RemoveCgroup(fresh.clone());
        let mut children: Vec<std::process::Child> = (0..CHILDREN)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["node_starting_together", "--exact", "--nocapture"])
                    .args(["--test-threads", "1"])
                    .env(TOGETHER_CHILD, &fresh)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in &children {
            std::fs::write(fresh.join("cgroup.procs"), child.id().to_string()).unwrap();
        }
        // Each starts when its stdin closes: all at once.
        for child in &mut children {
            drop(child.stdin.take());
        }
        for child in children {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && text.contains("test node_starting_together ... ok"),
                "round {round}: a child failed ({}):\n{text}",
                out.status
            );
        }
    }
}

/// A node of `nodes_starting_together_put_sandboxes_where_they_say`, in the cgroup it
/// names: starts its cgroup manager once its stdin closes, places a process in a sandbox
/// cgroup, and compares.
#[test]
fn node_starting_together() {
    use evaluator::sandbox::cgroup::{CgroupLimits, Manager};
    use std::io::Read;
    let Some(fresh) = std::env::var_os(TOGETHER_CHILD) else {
        return;
    };
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    let manager = Manager::start(None).expect("starting the cgroup manager");
    let id = format!("sb-{}-1", std::process::id());
    let mut cg = manager
        .create(&id, &CgroupLimits::default())
        .expect("creating a sandbox cgroup");
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let placed = cg.add(sleeper.id());
    let seen = std::fs::read_to_string(format!("/proc/{}/cgroup", sleeper.id())).unwrap();
    let destroyed = cg.destroy();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    placed.expect("placing a process");
    destroyed.expect("removing the sandbox cgroup");
    let (_, told) = manager.placement(&id).remove(0);
    let fresh = std::path::Path::new(&fresh)
        .strip_prefix("/sys/fs/cgroup")
        .unwrap()
        .to_owned();
    assert!(
        told.starts_with(&format!("/{}/", fresh.display())),
        "{told} is not below our cgroup {}",
        fresh.display()
    );
    assert_eq!(
        seen.trim(),
        format!("0::{told}"),
        "the kernel shows the process in one cgroup, a helper would be told another"
    );
}

/// Kills whatever is left in a cgroup and removes it with every cgroup below it.
struct RemoveCgroup(std::path::PathBuf);

impl Drop for RemoveCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Err(e) = remove_cgroup_tree(&self.0) {
            if std::time::Instant::now() > deadline {
                eprintln!("cannot remove {}: {e}", self.0.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn remove_cgroup_tree(dir: &std::path::Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
