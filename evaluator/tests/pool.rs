//! Sandboxes started ahead of their requests: single use, the request's limits,
//! replacement of dead ones, cold fallback, nothing left behind.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Fixture;
use evaluator::access::catalog::Catalog;
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

async fn filled(pool: &Pool, n: usize) {
    let end = Instant::now() + Duration::from_secs(60);
    while pool.idle() < n {
        assert!(
            Instant::now() < end,
            "the pool did not fill: {:?}",
            pool.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nothing of the fixture's sandboxes left once the pools are shut down: `shutdown`
/// returns once a start in flight is cancelled and destroyed, and evaluations' own
/// teardowns are waited for (`settle`).
async fn settled(fx: &Fixture) {
    fx.assert_clean().await;
}

#[tokio::test]
async fn pooled_python_is_single_use_and_takes_the_requests_limits() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let mut launch = python.launch();
    launch.access_list = Some(Arc::new(Catalog::new(None).load("python-default").unwrap()));
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(2, false),
    )
    .unwrap();
    filled(&pool, 2).await;

    // State written by one request is never seen by the next.
    let w = pool.take().expect("a waiting sandbox");
    let run = fx
        .run_in(
            Some(w),
            &launch,
            one("secret = 41\nprint(secret + 1)"),
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert!(run.stdout().contains("42"), "{run:#?}");
    filled(&pool, 1).await;
    let w = pool.take().expect("another waiting sandbox");
    let run = fx
        .run_in(
            Some(w),
            &launch,
            one("print('secret' in globals())"),
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.stdout(), "False\n", "{run:#?}");
    // The access list holds in a pooled sandbox too.
    filled(&pool, 1).await;
    let run = fx
        .run_in(
            pool.take(),
            &launch,
            one("import os"),
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert!(
        run.outputs
            .iter()
            .any(|o| matches!(o, Output::Violation { reference, .. } if reference == "os")),
        "{run:#?}"
    );

    // The request's limits, not the pool's (512 MiB while idle).
    filled(&pool, 1).await;
    let run = fx
        .run_in(
            pool.take(),
            &launch,
            one("x = bytearray(200 << 20)\nprint('survived')"),
            Vec::new(),
            Limits {
                memory_bytes: 64 << 20,
                ..Limits::default()
            },
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::MemoryLimit, "{run:#?}");
    filled(&pool, 1).await;
    let run = fx
        .run_in(
            pool.take(),
            &launch,
            one("import time\ntime.sleep(30)"),
            Vec::new(),
            Limits {
                wall_time: Duration::from_secs(1),
                ..Limits::default()
            },
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.outcome.status, Status::WallTimeout, "{run:#?}");
    assert!(run.outcome.wall_time < Duration::from_secs(3));
    // CPU time counts from the hand-off, not from the start-up.
    filled(&pool, 1).await;
    let run = fx
        .run_in(
            pool.take(),
            &launch,
            one("print(1)"),
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert!(
        run.outcome.cpu_time < Duration::from_millis(50),
        "{:?}",
        run.outcome
    );

    pool.shutdown().await;
    drop(pool);
    settled(&fx).await;
}

#[tokio::test]
async fn a_killed_pooled_sandbox_is_replaced_and_an_empty_pool_falls_back_to_cold() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let launch = python.launch();
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(1, false),
    )
    .unwrap();
    filled(&pool, 1).await;
    // Kill every process of the waiting sandbox from outside.
    let before = pool.stats();
    let uids = fx.uid_base..fx.uid_base + fx.uid_count;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let uid: Option<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse().ok());
        if uid.is_some_and(|u| uids.contains(&u)) {
            if let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let end = Instant::now() + Duration::from_secs(30);
    while pool.stats().replaced == before.replaced {
        assert!(
            Instant::now() < end,
            "the dead sandbox was not replaced: {:?}",
            pool.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    filled(&pool, 1).await;
    let run = fx
        .run_in(
            pool.take(),
            &launch,
            one("print(7)"),
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.stdout(), "7\n", "{run:#?}");

    // Size 0: never anything to take; requests run cold.
    let empty = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(0, false),
    )
    .unwrap();
    // Watched over a few of the pool's ticks: nothing is ever started for it.
    let watched = Instant::now() + Duration::from_millis(300);
    while Instant::now() < watched {
        assert_eq!(empty.idle(), 0, "a sandbox was started for a pool of none");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(empty.take().is_none());
    assert_eq!(empty.stats().misses, 1);
    let run = fx
        .run_in(
            empty.take(),
            &launch,
            one("print(8)"),
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    assert_eq!(run.stdout(), "8\n");
    pool.shutdown().await;
    empty.shutdown().await;
    drop((pool, empty));
    settled(&fx).await;
}

#[tokio::test]
async fn pooled_java_is_warm_and_checked() {
    let fx = Fixture::new();
    let java = fx.runtime("openjdk-17").await;
    let mut launch = java.launch();
    launch.access_list = Some(Arc::new(Catalog::new(None).load("java-default").unwrap()));
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(1, false),
    )
    .unwrap();
    filled(&pool, 1).await;
    let started = Instant::now();
    let run = fx
        .run_in(
            pool.take(),
            &launch,
            vec![
                Component {
                    id: "a".into(),
                    code: "System.out.println(1);".into(),
                },
                Component {
                    id: "b".into(),
                    code: "System.exit(2);".into(),
                },
                Component {
                    id: "c".into(),
                    code: "new StringBuilder(\"ab\").reverse()".into(),
                },
            ],
            Vec::new(),
            Limits::default(),
            CancellationToken::new(),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    assert_eq!(run.stdout(), "1\n");
    assert!(run
        .outputs
        .iter()
        .any(|o| matches!(o, Output::Violation { component, .. } if component == "b")));
    assert!(
        run.outputs
            .iter()
            .any(|o| matches!(o, Output::Value { text, .. } if text == "ba")),
        "{run:#?}"
    );
    println!(
        "pooled Java evaluation: {took:?}, CPU {:?}",
        run.outcome.cpu_time
    );
    // The JVM's start and warm-up (well over a CPU second) are not the request's.
    assert!(
        run.outcome.cpu_time < Duration::from_millis(400),
        "{:?}",
        run.outcome
    );
    pool.shutdown().await;
    drop(pool);
    settled(&fx).await;
}

/// Waits (a minute at most) until `ready` holds.
async fn until(what: &str, ready: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < end, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A pool shut down while it starts a sandbox: `shutdown` cancels the start and
/// returns once its sandbox is gone, whether the helper was still setting the sandbox
/// up or the interpreter was warming up.
#[tokio::test]
async fn shutdown_cancels_a_start_in_flight_and_leaves_nothing() {
    let fx = Fixture::new();
    let python = fx.runtime("python-3.11").await;
    let launch = python.launch();
    // Its cgroup is made: the first start is under way (nothing else of the fixture's
    // runs), the helper setting up.
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(1, false),
    )
    .unwrap();
    until("the start", || fx.sandboxes.live() > 0).await;
    pool.shutdown().await;
    assert_eq!(fx.sandboxes.live(), 0, "{:?}", pool.stats());
    fx.assert_clean().await;
    // The payload runs as its uid: the interpreter is warming up.
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch,
        common::pool_settings(1, false),
    )
    .unwrap();
    until("the warm-up", || fx.sandbox_processes() > 0).await;
    pool.shutdown().await;
    assert_eq!(fx.sandbox_processes(), 0, "{:?}", pool.stats());
    assert_eq!(fx.sandboxes.live(), 0, "{:?}", pool.stats());
    fx.assert_clean().await;
}
