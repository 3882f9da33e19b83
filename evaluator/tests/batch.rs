//! One program, many inputs (root required): each run in a fresh sandbox of its own,
//! several at once; a run that times out, runs out of memory or crashes ends alone,
//! the others still report, matches are checked, and nothing is left behind.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::Fixture;
use evaluator::batch::{run_inputs, Input, MatchMode, Program, RunReport};
use evaluator::pool::Pool;
use evaluator::sandbox::files::{Files, InputFile, Oversize, Wanted};
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::Component;
use tokio_util::sync::CancellationToken;

/// Reads a command from stdin and does it; leaves traces where a later run would see
/// them if runs shared anything.
const PROGRAM: &str = r#"
import os, sys, time
what = sys.stdin.read().strip()
seen = sorted(os.listdir("/tmp")) + sorted(n for n in os.listdir("/work") if n != "in.txt")
open("/tmp/trace", "w").write(what)
open("/work/trace", "w").write(what)
if what == "sleep":
    time.sleep(60)
elif what == "hog":
    blocks = []
    while True:
        blocks.append(bytearray(16 << 20))
elif what == "crash":
    os.abort()
elif what == "file":
    print(open("in.txt").read().strip(), seen)
else:
    print(int(what) * 2, seen)
"#;

fn input(stdin: &str, expected: Option<&str>) -> Input {
    Input {
        stdin: stdin.as_bytes().to_vec(),
        files: Vec::new(),
        expected: expected.map(|e| e.as_bytes().to_vec()),
    }
}

#[tokio::test]
async fn every_input_runs_alone_and_reports_whatever_the_others_do() {
    many_inputs(false).await;
}

#[tokio::test]
async fn in_lanes_every_input_runs_alone_and_reports_whatever_the_others_do() {
    assert!(
        common::zygote_library().is_some(),
        "the zygote library is not built: cargo build -p zygote-lib"
    );
    many_inputs(true).await;
}

/// Timeouts, memory, crashes, files, matches: with sandboxes of the pool (or cold
/// ones), or forked by lanes (a lane's runs follow one another: a run that hit a
/// limit leaves nothing to the next).
async fn many_inputs(lanes: bool) {
    let fx = Fixture::new();
    let mut launch = fx.runtime("python-3.11").await.launch();
    launch.access_list = None;
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(2, common::zygote_library().is_some()),
    )
    .unwrap();
    let components = vec![Component {
        id: "c".into(),
        code: PROGRAM.into(),
    }];
    let limits = Limits {
        wall_time: Duration::from_secs(3) * common::time_scale(),
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let mut inputs = vec![
        input("1", Some("2 []\n")),
        input("sleep", None),
        input("2", Some("4 []  \n\n")),
        input("hog", None),
        input("3", Some("7 []\n")),
        input("crash", None),
    ];
    inputs.push(Input {
        stdin: b"file".to_vec(),
        files: vec![InputFile {
            path: "in.txt".into(),
            content: b"from the input".to_vec(),
            executable: false,
        }],
        expected: Some(b"from the input []\n".to_vec()),
    });
    for i in 0..8 {
        inputs.push(input(&i.to_string(), Some(&format!("{} []\n", i * 2))));
    }
    let count = inputs.len();
    if lanes {
        common::wait_for_zygote(&pool).await;
    }
    let program = Program {
        launch: &launch,
        components: &components,
        limits,
        data: evaluator::evaluate::RequestData {
            files: Files {
                put: Vec::new(),
                get: Some(Wanted {
                    patterns: vec!["trace".into()],
                    max_file_bytes: 1024,
                    max_total_bytes: 1024,
                    max_files: 10,
                    oversize: Oversize::Truncate,
                }),
            },
            datasets: Vec::new(),
        },
        mode: MatchMode::IgnoreTrailingWhitespace,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<RunReport>(4);
    let collect = common::collect_all(rx);
    let pool_ref = &pool;
    run_inputs(
        &fx.sandboxes,
        &program,
        inputs,
        2,
        || async move {
            assert!(!lanes, "a lane failed");
            pool_ref.take_soon().await
        },
        || async move {
            if lanes {
                let lane = pool_ref.lane().await;
                assert!(lane.is_some(), "no lane");
                lane
            } else {
                None
            }
        },
        None,
        tx,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut reports = collect.await.unwrap();
    reports.sort_by_key(|r| r.index);
    assert_eq!(reports.len(), count);
    assert_eq!(
        reports
            .iter()
            .map(|r| r.index)
            .collect::<HashSet<_>>()
            .len(),
        count
    );
    let status = |i: usize| reports[i].outcome.status;
    assert_eq!(status(1), Status::WallTimeout, "{:?}", reports[1].outcome);
    assert_eq!(status(3), Status::MemoryLimit, "{:?}", reports[3].outcome);
    assert_eq!(status(5), Status::Signaled, "{:?}", reports[5].outcome);
    for i in [0, 2, 4, 6] {
        assert_eq!(status(i), Status::Ok, "{:?}", reports[i]);
    }
    assert_eq!(reports[0].matched, Some(true));
    assert_eq!(
        reports[2].matched,
        Some(true),
        "trailing whitespace ignored"
    );
    assert_eq!(reports[4].matched, Some(false), "6 is not 7");
    assert_eq!(reports[6].matched, Some(true), "{:?}", reports[6]);
    assert_eq!(reports[1].matched, None);
    for r in &reports[7..] {
        assert_eq!(r.outcome.status, Status::Ok);
        assert_eq!(r.matched, Some(true), "{r:?}");
    }
    // Each run's own file came back, and it saw no trace of any other run.
    for r in &reports {
        let trace = r.outcome.files.iter().find(|f| f.path == "trace").unwrap();
        assert_eq!(trace.content, &pool_free_stdin(r)[..], "run {}", r.index);
    }
    pool.shutdown().await;
    fx.assert_clean().await;
}

/// What run `r` wrote as its trace: its own stdin.
fn pool_free_stdin(r: &RunReport) -> Vec<u8> {
    match r.index {
        1 => b"sleep".to_vec(),
        3 => b"hog".to_vec(),
        5 => b"crash".to_vec(),
        6 => b"file".to_vec(),
        0 => b"1".to_vec(),
        2 => b"2".to_vec(),
        4 => b"3".to_vec(),
        i => (i - 7).to_string().into_bytes(),
    }
}

/// What a run of a lane shows of itself, and what it leaves for the next one: files in
/// /tmp, /work and /dev/shm, a process left running, a port in TIME_WAIT and traffic
/// counted on loopback. (System V and POSIX message queues are denied by the seccomp
/// filter; each run has an ipc namespace anyway.)
const LANE_PROBE: &str = r#"
import os, random, socket, sys, time
ns = {n: os.readlink(f"/proc/self/ns/{n}") for n in ("net", "pid", "mnt", "ipc", "uts")}
print("ns", " ".join(f"{k}={v}" for k, v in sorted(ns.items())))
lo = [l for l in open("/proc/net/dev") if l.strip().startswith("lo:")]
print("lo", lo[0].split(":")[1].split()[0])
server = socket.socket()
server.bind(("127.0.0.1", 8000))
server.listen()
client = socket.create_connection(("127.0.0.1", 8000))
accepted, _ = server.accept()
accepted.sendall(b"x" * 1000)
client.recv(1000)
# The server's side closes first: port 8000 stays in TIME_WAIT for a minute.
accepted.close()
client.close()
server.close()
print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print("seen", sorted(os.listdir("/tmp")), sorted(os.listdir("/work")), sorted(os.listdir("/dev/shm")))
print("random", random.random())
print("cgroup", sorted(set(l.split(":", 2)[2] for l in open("/proc/self/cgroup").read().splitlines())))
for path in ("/tmp/t", "/work/w", "/dev/shm/s"):
    open(path, "w").write("left")
sys.stdout.flush()
if os.fork() == 0:
    time.sleep(60)
    os._exit(0)
"#;

#[tokio::test]
async fn the_runs_of_a_lane_share_nothing_a_run_could_change() {
    assert!(
        common::zygote_library().is_some(),
        "the zygote library is not built: cargo build -p zygote-lib"
    );
    let fx = Fixture::new();
    let mut launch = fx.runtime("python-3.11").await.launch();
    launch.access_list = None;
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(1, true),
    )
    .unwrap();
    common::wait_for_zygote(&pool).await;
    let components = vec![Component {
        id: "c".into(),
        code: LANE_PROBE.into(),
    }];
    let count = 8;
    let inputs = (0..count).map(|_| input("", None)).collect::<Vec<_>>();
    let program = Program {
        launch: &launch,
        components: &components,
        limits: Limits::default(),
        data: evaluator::evaluate::RequestData::default(),
        mode: MatchMode::Exact,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<RunReport>(4);
    let collect = common::collect_all(rx);
    let pool_ref = &pool;
    run_inputs(
        &fx.sandboxes,
        &program,
        inputs,
        2,
        || async { panic!("a lane failed") as Option<evaluator::sandbox::Waiting> },
        || async move {
            let lane = pool_ref.lane().await;
            assert!(lane.is_some(), "no lane");
            lane
        },
        None,
        tx,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let reports = collect.await.unwrap();
    assert_eq!(reports.len(), count);
    let mut namespaces: std::collections::HashMap<String, HashSet<String>> = Default::default();
    let mut randoms = HashSet::new();
    for r in &reports {
        assert_eq!(r.outcome.status, Status::Ok, "{r:#?}");
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        let line = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{key} ")))
                .unwrap_or_else(|| panic!("no {key} in {out}"))
                .to_string()
        };
        for pair in line("ns").split(' ') {
            let (kind, id) = pair.split_once('=').unwrap();
            namespaces.entry(kind.into()).or_default().insert(id.into());
        }
        // Its init and itself: nothing of the lane, nothing an earlier run left; a
        // network namespace of its own (port 8000 free, nothing counted on loopback).
        assert_eq!(line("pids"), "[1, 2]", "{out}");
        assert_eq!(line("lo"), "0", "{out}");
        assert_eq!(line("seen"), "[] [] []", "{out}");
        assert_eq!(
            line("cgroup"),
            "['/']",
            "a cgroup namespace of its own: {out}"
        );
        randoms.insert(line("random"));
    }
    // Two lanes: runs of one lane share its uts namespace (a hostname none can
    // change). (The kernel reuses a freed namespace's number, so `pids`, `seen` and
    // `lo` above, not the numbers, show that each run's pid, mount and network
    // namespaces are new.) Each run draws its own random numbers.
    assert!(namespaces["uts"].len() <= 2, "{namespaces:?}");
    assert_eq!(randoms.len(), count, "{randoms:?}");
    pool.shutdown().await;
    fx.assert_clean().await;
}
