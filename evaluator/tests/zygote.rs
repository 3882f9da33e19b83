//! Sandboxes forked from a zygote (root required; the zygote library must be built:
//! `cargo build -p zygote-lib`): each is a sandbox as fresh, confined and single-use
//! as a started one, and nothing of the zygote or of another request reaches it.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::Fixture;
use evaluator::access::catalog::Catalog;
use evaluator::lang::Launch;
use evaluator::pool::Pool;
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::{Component, Output};
use tokio_util::sync::CancellationToken;

fn one(code: &str) -> Vec<Component> {
    vec![Component {
        id: "c".into(),
        code: code.into(),
    }]
}

/// A pool of `size` forked Python sandboxes, with the `python-default` list or none
/// (the probes use what the list denies).
async fn zygote_pool(fx: &Fixture, size: usize, list: bool) -> (Pool, Launch) {
    assert!(
        common::zygote_library().is_some(),
        "the zygote library is not built: cargo build -p zygote-lib"
    );
    let python = fx.runtime("python-3.11").await;
    let mut launch = python.launch();
    launch.access_list = list.then(|| Arc::new(Catalog::new(None).load("python-default").unwrap()));
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(size, true),
    )
    .unwrap();
    (pool, launch)
}

async fn eval(fx: &Fixture, pool: &Pool, launch: &Launch, code: &str) -> common::Run {
    let w = common::take_waiting(pool).await;
    fx.run_in(
        Some(w),
        launch,
        one(code),
        Vec::new(),
        Limits::default(),
        CancellationToken::new(),
    )
    .await
}

/// What a forked sandbox shows of itself: who it runs as, its privileges, its
/// processes and cgroups, what of the host's paths it maps.
const PROBE: &str = r#"
import os
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
print("uid", os.getuid(), os.geteuid())
print("caps", status["CapEff"].strip(), status["CapPrm"].strip(), status["CapBnd"].strip())
print("seccomp", status["Seccomp"].strip(), "nnp", status["NoNewPrivs"].strip())
print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
print("cgroup", sorted(set(l.split(":", 2)[2] for l in open("/proc/self/cgroup").read().splitlines())))
maps = open("/proc/self/maps").read()
print("maps", "jsheets" in maps.replace("/zygote/libjsheets_zygote.so", ""), "/var/" in maps, "/tmp/" in maps)
print("fds", sorted(os.listdir("/proc/self/fd")))
print("work", os.listdir("/work"), "tmp", os.listdir("/tmp"))
print("comm", open("/proc/self/comm").read().strip(), open("/proc/1/comm").read().strip())
"#;

#[tokio::test]
async fn a_forked_sandbox_is_confined_as_a_started_one() {
    let fx = Fixture::new();
    let (pool, launch) = zygote_pool(&fx, 2, false).await;
    let run = eval(&fx, &pool, &launch, PROBE).await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    let out = run.stdout();
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} line in {out}: {run:#?}"))
            .to_string()
    };
    let uid: u32 = line("uid").split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        (fx.uid_base..fx.uid_base + fx.uid_count).contains(&uid),
        "uid {uid}: {out}"
    );
    assert_eq!(
        line("caps"),
        "caps 0000000000000000 0000000000000000 0000000000000000"
    );
    assert_eq!(line("seccomp"), "seccomp 2 nnp 1");
    // Its own pid namespace: init and the payload (the driver) only.
    assert_eq!(line("pids"), "pids [1, 2]", "{out}");
    assert_eq!(line("cgroup"), "cgroup ['/']", "{out}");
    assert_eq!(line("maps"), "maps False False False", "{out}");
    assert_eq!(line("work"), "work [] tmp []", "{out}");
    assert!(pool.stats().forked >= 1, "{:?}", pool.stats());
    // And everything shows as in a sandbox that started its interpreter, but the uid
    // and the number the driver put its event channel on (random).
    let cold = fx
        .run_in(
            None,
            &launch,
            one(PROBE),
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(cold.outcome.status, Status::Ok, "{cold:#?}");
    let same = |out: &str| {
        out.lines()
            .filter(|l| !l.starts_with("uid "))
            .map(|l| {
                if let Some(fds) = l.strip_prefix("fds ") {
                    let fds: Vec<u32> = fds
                        .trim_matches(['[', ']'])
                        .split(", ")
                        .map(|f| f.trim_matches('\'').parse().unwrap())
                        .collect();
                    let low: Vec<_> = fds.iter().filter(|&&f| f <= 3).collect();
                    format!("fds {low:?} and {} above 3", fds.len() - low.len())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        same(&out),
        same(&cold.stdout()),
        "forked:\n{out}\nstarted:\n{}",
        cold.stdout()
    );
    pool.shutdown().await;
    fx.assert_clean().await;
}

#[tokio::test]
async fn forked_sandboxes_share_nothing_and_each_is_used_once() {
    let fx = Fixture::new();
    let (pool, launch) = zygote_pool(&fx, 2, false).await;
    let mut uids = HashSet::new();
    let mut seeds = HashSet::new();
    for i in 0..6 {
        let code = format!(
            "import os, random\n\
             print('seen', sorted(os.listdir('/work')), 'mark' in globals())\n\
             open('/work/mine', 'w').write('{i}')\n\
             mark = {i}\n\
             print('uid', os.getuid())\n\
             print('random', random.random())"
        );
        let run = eval(&fx, &pool, &launch, &code).await;
        assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
        let out = run.stdout();
        assert!(
            out.contains("seen [] False"),
            "request {i} saw another's: {out}"
        );
        for l in out.lines() {
            if let Some(u) = l.strip_prefix("uid ") {
                uids.insert(u.to_string());
            }
            if let Some(r) = l.strip_prefix("random ") {
                seeds.insert(r.to_string());
            }
        }
    }
    assert_eq!(seeds.len(), 6, "random repeats across forks: {seeds:?}");
    assert!(pool.stats().forked >= 6, "{:?}", pool.stats());
    assert!(!uids.is_empty());
    pool.shutdown().await;
    fx.assert_clean().await;
}

#[tokio::test]
async fn a_forked_sandbox_keeps_the_access_list_and_the_limits() {
    let fx = Fixture::new();
    let (pool, launch) = zygote_pool(&fx, 2, true).await;
    let run = eval(&fx, &pool, &launch, "import os\nos.system('true')").await;
    assert!(
        run.outputs
            .iter()
            .any(|o| matches!(o, Output::Violation { .. })),
        "{run:#?}"
    );
    let run = eval(
        &fx,
        &pool,
        &launch,
        "x = bytearray(1 << 20)\nchunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
    )
    .await;
    assert_eq!(run.outcome.status, Status::MemoryLimit, "{run:#?}");
    let run = eval(&fx, &pool, &launch, "while True:\n    pass").await;
    assert!(
        matches!(run.outcome.status, Status::CpuLimit | Status::WallTimeout),
        "{run:#?}"
    );
    pool.shutdown().await;
    fx.assert_clean().await;
}

#[tokio::test]
async fn a_zygote_forks_waiting_sandboxes() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let launch = python.launch();
    let (job, preface) =
        evaluator::lang::zygote_job(&launch, common::pool_settings(1, true).idle_limits)
            .unwrap()
            .expect("Python has a zygote");
    let cancel = CancellationToken::new();
    let zygote = fx
        .sandboxes
        .start_zygote(job, preface, &cancel)
        .await
        .unwrap_or_else(|e| panic!("{}", evaluator::error::error_chain(&e)));
    let w = fx
        .sandboxes
        .start_forked(&zygote, &cancel)
        .await
        .unwrap_or_else(|e| panic!("{}", evaluator::error::error_chain(&e)));
    assert_eq!(zygote.forks(), 1);
    let run = fx
        .run_in(
            Some(w),
            &launch,
            one("print(6 * 7)"),
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_eq!(run.stdout(), "42\n");
    drop(zygote);
    fx.assert_clean().await;
}

/// The sandboxes a zygote forked are in its pid namespace until they make their own:
/// a pool shut down while one runs keeps the zygote until that one is gone, and
/// then nothing is left.
#[tokio::test]
async fn a_zygote_outlives_the_pool_while_its_sandboxes_run() {
    let fx = Fixture::new();
    let (pool, launch) = zygote_pool(&fx, 1, false).await;
    let w = common::take_waiting(&pool).await;
    assert!(pool.stats().forked >= 1, "{:?}", pool.stats());
    pool.shutdown().await;
    let run = fx
        .run_in(
            Some(w),
            &launch,
            one("import time\ntime.sleep(0.2)\nprint('still here')"),
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_eq!(run.stdout(), "still here\n");
    drop(pool);
    fx.assert_clean().await;
}

/// A request that finds its pool empty gets a sandbox forked for it at once, not a
/// cold start.
#[tokio::test]
async fn an_empty_pool_forks_a_sandbox_for_the_request() {
    let fx = Fixture::new();
    let (pool, launch) = zygote_pool(&fx, 1, false).await;
    while pool.idle() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // No refill from now on: once its one sandbox is taken, the pool stays empty.
    pool.set_paused(true);
    let first = common::take_waiting(&pool).await;
    drop(first);
    let w = pool
        .take_soon()
        .await
        .expect("a sandbox forked for the request");
    let stats = pool.stats();
    assert_eq!((stats.misses, stats.on_demand), (1, 1), "{stats:?}");
    let run = fx
        .run_in(
            Some(w),
            &launch,
            one("print('forked for me')"),
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_eq!(run.stdout(), "forked for me\n");
    pool.shutdown().await;
    fx.assert_clean().await;
}
