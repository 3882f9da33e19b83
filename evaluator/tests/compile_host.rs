//! The compile host (root required): Java requests through a pool with one are
//! compiled in its warm JShell, where nothing of them runs, and replayed in a sandbox
//! of their own with what a whole JShell gives them (the classic path is the oracle);
//! nothing one request compiled is there for the next; a denial or a compile over its
//! time goes the classic way, and a host killed for it comes back.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Fixture, Run};
use evaluator::evaluate::{evaluate_pooled, Path};
use evaluator::lang::Launch;
use evaluator::pool::Pool;
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::{Component, Output};
use tokio_util::sync::CancellationToken;

use common::components;

/// A pool of two replays and its compile host, once the host is up and a replay waits.
async fn pool(fx: &Fixture, launch: &Launch) -> Pool {
    let pool = Pool::start(
        fx.sandboxes.clone(),
        launch.clone(),
        common::pool_settings(2, true),
    )
    .unwrap();
    wait_until_up(&pool).await;
    pool
}

async fn wait_until_up(pool: &Pool) {
    let host = pool
        .compile_host()
        .expect("a JShell pool has a compile host");
    let end = Instant::now() + Duration::from_secs(120 * u64::from(common::time_scale()));
    while !(host.is_up() && pool.idle() > 0) {
        assert!(
            Instant::now() < end,
            "the compile host never got up: {:?}",
            host.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request through `pool`, and how it ran.
async fn pooled(
    fx: &Fixture,
    pool: &Pool,
    launch: &Launch,
    components: &[Component],
    stdin: &str,
    limits: Limits,
) -> (Run, Path) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let collect = common::collect_all(rx);
    let (outcome, path) = evaluate_pooled(
        &fx.sandboxes,
        Some(pool),
        launch,
        components,
        stdin.as_bytes().to_vec(),
        limits,
        Default::default(),
        tx,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let outputs = collect.await.unwrap();
    (Run { outcome, outputs }, path)
}

/// The request the classic way: a whole JShell in a fresh sandbox.
async fn whole(fx: &Fixture, launch: &Launch, components: &[Component], stdin: &str) -> Run {
    fx.run_in(
        None,
        launch,
        components.to_vec(),
        stdin.as_bytes().to_vec(),
        Limits::default(),
        CancellationToken::new(),
    )
    .await
}

/// [`common::results`] in order of component, kind and text (a compiled request's
/// diagnostics come first).
fn results(outputs: &[Output]) -> Vec<String> {
    let mut v = common::results(outputs);
    v.sort();
    v
}

fn compiled(path: Path) -> bool {
    matches!(path, Path::Compiled | Path::CompiledCold)
}

#[tokio::test]
async fn requests_compiled_by_the_host_get_what_a_whole_jshell_gives_them() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let pool = pool(&fx, &launch).await;
    let programs: Vec<(Vec<&str>, &str)> = vec![
        (vec!["System.out.println(1 + 1);"], ""),
        (
            vec![
                "var sc = new Scanner(System.in);\nint sum = 0;\nwhile (sc.hasNextInt()) sum += sc.nextInt();",
                "System.out.println(\"sum \" + sum);",
                "sum * 3",
            ],
            "4 5 6",
        ),
        (
            vec!["int x = 5;", "x * 2", "String s = \"a\" + x; s"],
            "",
        ),
        (
            vec!["int f(int d) { return 100 / d; }\nSystem.out.println(\"before\");\nf(0)"],
            "",
        ),
        (
            vec!["int broken = missing + 1;", "System.out.println(2);"],
            "",
        ),
        (
            vec!["class Counter { static int n; }\nCounter.n++;\nCounter.n", "record P(int a) {}\nnew P(3).a()"],
            "",
        ),
    ];
    let mut paths = Vec::new();
    for (codes, stdin) in &programs {
        let components = components(codes);
        let (got, path) = pooled(&fx, &pool, &launch, &components, stdin, Limits::default()).await;
        let want = whole(&fx, &launch, &components, stdin).await;
        assert_eq!(
            got.outcome.status, want.outcome.status,
            "{codes:?}: {got:#?}"
        );
        assert_eq!(got.stdout(), want.stdout(), "{codes:?}");
        assert_eq!(results(&got.outputs), results(&want.outputs), "{codes:?}");
        paths.push(path);
    }
    assert!(paths.iter().all(|&p| compiled(p)), "{paths:?}");
    // Pooled replays served them (the pool refills between requests).
    assert!(paths.contains(&Path::Compiled), "{paths:?}");
    let stats = pool.compile_host().unwrap().stats();
    assert_eq!(stats.compiled, programs.len() as u64, "{stats:?}");
    assert_eq!(stats.starts, 1, "{stats:?}");
    pool.shutdown().await;
    fx.assert_clean().await;
}

#[tokio::test]
async fn nothing_one_request_compiled_is_there_for_the_next() {
    let fx = Fixture::new();
    let launch = common::java(&fx, false).await;
    let pool = pool(&fx, &launch).await;
    let first = components(&[
        "class Secret { static int v = 42; }",
        "int leaked = 7;",
        "import java.util.concurrent.*;",
        "int secret() { return 9; }",
    ]);
    let (run, path) = pooled(&fx, &pool, &launch, &first, "", Limits::default()).await;
    assert!(compiled(path), "{path:?}");
    assert_eq!(run.outcome.status, Status::Ok, "{run:#?}");
    let next = components(&[
        "Secret.v",
        "leaked",
        "new ConcurrentHashMap<String, Integer>()",
        "secret()",
        "System.out.println(\"next ran\");",
    ]);
    let (got, path) = pooled(&fx, &pool, &launch, &next, "", Limits::default()).await;
    assert!(compiled(path), "{path:?}");
    let want = whole(&fx, &launch, &next, "").await;
    assert_eq!(got.stdout(), "next ran\n");
    let got = results(&got.outputs);
    assert_eq!(got, results(&want.outputs));
    // Every name of the first request is unknown to the second.
    for c in ["c1", "c2", "c3", "c4"] {
        assert!(
            got.iter()
                .any(|r| r.starts_with(&format!("{c} diagnostic"))
                    && r.contains("cannot find symbol")),
            "{c}: {got:#?}"
        );
    }
    pool.shutdown().await;
    fx.assert_clean().await;
}

#[tokio::test]
async fn a_denied_class_runs_the_classic_way() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let pool = pool(&fx, &launch).await;
    let components = components(&["System.out.println(\"ran\");", "System.exit(1);"]);
    let (got, path) = pooled(&fx, &pool, &launch, &components, "", Limits::default()).await;
    assert_eq!(path, Path::Cold);
    let want = whole(&fx, &launch, &components, "").await;
    assert_eq!(got.outcome.status, want.outcome.status);
    assert_eq!(got.stdout(), "ran\n");
    let got = results(&got.outputs);
    assert_eq!(got, results(&want.outputs));
    assert!(
        got.iter().any(|r| r.starts_with("c2 violation")),
        "{got:#?}"
    );
    let stats = pool.compile_host().unwrap().stats();
    assert_eq!((stats.failed, stats.starts), (1, 1), "{stats:?}");
    pool.shutdown().await;
    fx.assert_clean().await;
}

/// Nested `List.of` calls: javac's inference takes seconds (about four times longer
/// per level).
fn slow_to_compile(levels: usize) -> String {
    let mut e = "1".to_string();
    for _ in 0..levels {
        e = format!("List.of({e}, {})", e.replace('1', "2"));
    }
    format!("var v = {e};")
}

#[tokio::test]
async fn a_compile_over_its_time_kills_the_host_which_comes_back() {
    let fx = Fixture::new();
    let launch = common::java(&fx, false).await;
    let pool = pool(&fx, &launch).await;
    let host = pool.compile_host().unwrap().clone();
    let limits = Limits {
        wall_time: Duration::from_secs(2) * common::time_scale(),
        ..Limits::default()
    };
    let slow = components(&[&slow_to_compile(10)]);
    let began = Instant::now();
    let (got, path) = pooled(&fx, &pool, &launch, &slow, "", limits.clone()).await;
    // The host gave up at the request's wall time, and the classic way too.
    assert_eq!(path, Path::Cold);
    assert_eq!(got.outcome.status, Status::WallTimeout, "{got:#?}");
    assert!(
        began.elapsed() < limits.wall_time * 4,
        "{:?}",
        began.elapsed()
    );
    assert_eq!(host.stats().failed, 1);
    // The host compiled on, to its own limit: killed then, and a new one started.
    let end = Instant::now() + Duration::from_secs(120 * u64::from(common::time_scale()));
    while host.stats().starts < 2 {
        assert!(Instant::now() < end, "{:?}", host.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until_up(&pool).await;
    assert_eq!(host.stats().starts, 2, "{:?}", host.stats());
    let (got, path) = pooled(
        &fx,
        &pool,
        &launch,
        &components(&["System.out.println(3);"]),
        "",
        Limits::default(),
    )
    .await;
    assert!(compiled(path), "{path:?}");
    assert_eq!(got.stdout(), "3\n");
    pool.shutdown().await;
    fx.assert_clean().await;
}

#[tokio::test]
async fn many_inputs_compile_in_the_host_and_replay_in_the_pools_sandboxes() {
    use evaluator::batch::{MatchMode, Program};
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let pool = pool(&fx, &launch).await;
    let components = components(&[
        "var sc = new Scanner(System.in);\nint sum = 0;\nwhile (sc.hasNextInt()) sum += sc.nextInt();",
        "System.out.println(\"sum \" + sum);",
        "sum * 3",
        "int f(int d) { return 100 / d; }\nf(sum - 6)",
    ]);
    let stdins = ["1 2 3", "4 5", "", "6", "7 8 9 10"];
    let inputs = |expected: bool| -> Vec<evaluator::batch::Input> {
        stdins
            .iter()
            .map(|s| evaluator::batch::Input {
                stdin: s.as_bytes().to_vec(),
                files: Vec::new(),
                expected: expected.then(Vec::new),
            })
            .collect()
    };
    let program = Program {
        launch: &launch,
        components: &components,
        limits: Limits::default(),
        data: Default::default(),
        mode: MatchMode::Exact,
    };
    let before = pool.stats().taken;
    let hosted = batch(&fx, &program, inputs(false), Some(&pool)).await;
    assert_eq!(pool.compile_host().unwrap().stats().compiled, 1);
    // The replays were the pool's (as many as it had ready as they came, at least one).
    assert!(pool.stats().taken > before, "{:?}", pool.stats());
    let own = batch(&fx, &program, inputs(false), None).await;
    assert_eq!(hosted.len(), stdins.len());
    for (h, o) in hosted.iter().zip(&own) {
        assert_eq!(h.outcome.status, o.outcome.status, "{h:#?}");
        assert_eq!(h.stdout, o.stdout, "input {}", h.index);
        assert_eq!(
            results(&h.outputs),
            results(&o.outputs),
            "input {}",
            h.index
        );
    }
    assert!(String::from_utf8_lossy(&hosted[0].stdout).contains("sum 6"));
    assert!(results(&hosted[0].outputs)
        .iter()
        .any(|r| r.starts_with("c4 exception java.lang.ArithmeticException")));
    pool.shutdown().await;
    fx.assert_clean().await;
}

/// The runs of `program` against `inputs`, in order: compiled by `host`'s compile host
/// and replayed in its sandboxes if given, else by a compile pass of their own.
async fn batch(
    fx: &Fixture,
    program: &evaluator::batch::Program<'_>,
    inputs: Vec<evaluator::batch::Input>,
    host: Option<&Pool>,
) -> Vec<evaluator::batch::RunReport> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let collect = common::collect_all(rx);
    evaluator::batch::run_inputs(
        &fx.sandboxes,
        program,
        inputs,
        2,
        || async move {
            match host {
                Some(p) => p.take_soon().await,
                None => None,
            }
        },
        || async { None },
        host.and_then(|p| p.compile_host()),
        tx,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut reports: Vec<evaluator::batch::RunReport> = collect.await.unwrap();
    reports.sort_by_key(|r| r.index);
    reports
}

#[tokio::test]
async fn a_request_that_gives_up_leaves_the_host_to_finish_its_job() {
    let fx = Fixture::new();
    let launch = common::java(&fx, false).await;
    let pool = pool(&fx, &launch).await;
    let host = pool.compile_host().unwrap().clone();
    // A wall time too short for any compile: the request ends, the host goes on.
    let limits = Limits {
        wall_time: Duration::from_millis(1),
        ..Limits::default()
    };
    let (got, path) = pooled(
        &fx,
        &pool,
        &launch,
        &components(&["System.out.println(1);"]),
        "",
        limits,
    )
    .await;
    assert_eq!(path, Path::Cold);
    assert_eq!(got.outcome.status, Status::WallTimeout, "{got:#?}");
    let (got, path) = pooled(
        &fx,
        &pool,
        &launch,
        &components(&["System.out.println(2);"]),
        "",
        Limits::default(),
    )
    .await;
    assert!(compiled(path), "{path:?}");
    assert_eq!(got.stdout(), "2\n");
    let stats = host.stats();
    assert_eq!(
        (stats.failed, stats.compiled, stats.starts),
        (1, 1, 1),
        "{stats:?}"
    );
    pool.shutdown().await;
    fx.assert_clean().await;
}

#[tokio::test]
async fn a_program_that_redefines_a_class_runs_as_a_whole_jshell() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let pool = pool(&fx, &launch).await;
    // JShell redefines A in place and `a` keeps its object; a replay would replace A.
    let components = components(&[
        "class A { int f() { return 1; } }",
        "A a = new A();",
        "class A { int f() { return 2; } }",
        "a.f()",
    ]);
    let (got, path) = pooled(&fx, &pool, &launch, &components, "", Limits::default()).await;
    assert_eq!(path, Path::Cold);
    let want = whole(&fx, &launch, &components, "").await;
    assert_eq!(results(&got.outputs), results(&want.outputs));
    assert!(
        results(&got.outputs).contains(&"c4 value 2".to_owned()),
        "{got:#?}"
    );
    pool.shutdown().await;
    fx.assert_clean().await;
}
