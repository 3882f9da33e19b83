//! Java programs against many inputs (root required): compiled once, replayed per input,
//! each run in a fresh sandbox, with the results of a whole JShell per input (the
//! normal path is the oracle).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fixture, Run};
use evaluator::batch::{run_inputs, Input, MatchMode, Program, RunReport};
use evaluator::evaluate::RequestData;
use evaluator::lang::Launch;
use evaluator::sandbox::files::{Files, Oversize, Wanted};
use evaluator::sandbox::zygote::Zygote;
use evaluator::sandbox::{Limits, Status, Waiting};
use evaluator::snippet::{Component, Output};
use tokio_util::sync::CancellationToken;

use common::components;

fn input(stdin: &str) -> Input {
    Input {
        stdin: stdin.as_bytes().to_vec(),
        files: Vec::new(),
        expected: None,
    }
}

async fn batch(
    fx: &Fixture,
    launch: &Launch,
    components: &[Component],
    inputs: Vec<Input>,
    limits: Limits,
    data: RequestData,
) -> Vec<RunReport> {
    let count = inputs.len();
    let program = Program {
        launch,
        components,
        limits,
        data,
        mode: MatchMode::Exact,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<RunReport>(4);
    let collect = common::collect_all(rx);
    run_inputs(
        &fx.sandboxes,
        &program,
        inputs,
        2,
        || async { panic!("a JShell program takes no pre-started sandbox") as Option<Waiting> },
        || async { panic!("a JShell program takes no lane") as Option<std::sync::Arc<Zygote>> },
        None,
        tx,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut reports = collect.await.unwrap();
    reports.sort_by_key(|r| r.index);
    assert_eq!(reports.len(), count);
    reports
}

use common::results;

const READER: &str = r#"
var sc = new Scanner(System.in);
int sum = 0;
var doubled = new ArrayList<Integer>();
while (sc.hasNextInt()) { int v = sc.nextInt(); sum += v; doubled.add(v * 2); }
System.out.println("sum " + sum + " " + doubled);
"#;

#[tokio::test]
async fn each_input_gets_what_a_whole_jshell_gives_it() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let components = components(&[
        READER,
        "sum * 3",
        "int twice(int x) { return 2 * x; }\nint kept = twice(sum);",
        "int twice(int x) { return 4 * x; }\ntwice(sum)",
        "class Counter { static int n; }\nCounter.n++;\nCounter.n",
        "int f(int d) { return 100 / d; }\nSystem.out.println(\"before\");\nf(sum - sum)",
        "int broken = missing + 1;",
        "String s = \"done \" + kept; s",
    ]);
    let stdins: Vec<String> = (0..10)
        .map(|i| {
            (0..i)
                .map(|j| (j * 7 + i).to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let inputs = stdins.iter().map(|s| input(s)).collect();
    let reports = batch(
        &fx,
        &launch,
        &components,
        inputs,
        Limits::default(),
        RequestData::default(),
    )
    .await;
    for (r, stdin) in reports.iter().zip(&stdins) {
        let whole: Run = fx
            .run_in(
                None,
                &launch,
                components.clone(),
                stdin.as_bytes().to_vec(),
                Limits::default(),
                CancellationToken::new(),
            )
            .await;
        assert_eq!(whole.outcome.status, Status::Ok, "{whole:#?}");
        assert_eq!(r.outcome.status, Status::Ok, "{r:#?}");
        assert_eq!(
            String::from_utf8_lossy(&r.stdout),
            whole.stdout(),
            "input {stdin:?}: {r:#?}"
        );
        let mut want = results(&whole.outputs);
        let mut got = results(&r.outputs);
        // The compile pass's diagnostics come first in a run's outputs.
        want.sort();
        got.sort();
        assert_eq!(got, want, "input {stdin:?}");
        assert!(got
            .iter()
            .any(|g| g.starts_with("c6 exception java.lang.ArithmeticException")));
        assert!(got.contains(&"c5 value 1".to_owned()), "{got:?}");
    }
    fx.assert_clean().await;
}

#[tokio::test]
async fn a_denied_call_stops_every_run_before_anything_runs() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    for program in [
        vec!["System.out.println(\"ran\");", "System.exit(1);"],
        vec![
            "System.out.println(\"ran\");",
            "class Q { static void q() { Runtime.getRuntime().halt(2); } }",
        ],
    ] {
        let components = components(&program);
        let reports = batch(
            &fx,
            &launch,
            &components,
            vec![input("1"), input("2"), input("3")],
            Limits::default(),
            RequestData::default(),
        )
        .await;
        for r in &reports {
            assert!(r.stdout.is_empty(), "{r:#?}");
            assert!(
                r.outputs.iter().any(|o| matches!(o,
                    Output::Violation { component, .. } if component == "c2")),
                "{r:#?}"
            );
        }
    }
    fx.assert_clean().await;
}

#[tokio::test]
async fn runs_end_alone_and_share_nothing() {
    let fx = Fixture::new();
    // Without a list, so that a run can halt its JVM.
    let launch = common::java(&fx, false).await;
    let code = r#"
import java.nio.file.*;
class Seen { static int runs; }
Seen.runs++;
String what = new String(System.in.readAllBytes()).trim();
boolean traces = Files.exists(Path.of("/tmp/trace")) || Files.exists(Path.of("/work/trace"));
Files.writeString(Path.of("/tmp/trace"), what);
Files.writeString(Path.of("/work/trace"), what);
if (what.equals("sleep")) { while (true) {} }
if (what.equals("hog")) { long[] big = new long[1 << 30]; }
if (what.equals("grow")) { var l = new ArrayList<long[]>(); while (true) l.add(new long[1 << 20]); }
if (what.equals("crash")) { Runtime.getRuntime().halt(3); }
System.out.println(what + " " + Seen.runs + " " + traces);
"#;
    let components = components(&[code]);
    let stdins = [
        "a", "sleep", "b", "hog", "c", "crash", "d", "grow", "e", "f", "g",
    ];
    let data = RequestData {
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
    };
    let limits = Limits {
        wall_time: Duration::from_secs(6) * common::time_scale(),
        memory_bytes: 256 << 20,
        ..Limits::default()
    };
    let reports = batch(
        &fx,
        &launch,
        &components,
        stdins.iter().map(|s| input(s)).collect(),
        limits,
        data,
    )
    .await;
    for (r, what) in reports.iter().zip(stdins) {
        let want = match what {
            "sleep" => Status::WallTimeout,
            "hog" | "grow" => Status::MemoryLimit,
            "crash" => Status::ExitedNonZero,
            _ => Status::Ok,
        };
        assert_eq!(r.outcome.status, want, "{what}: {r:#?}");
        if want == Status::Ok {
            assert_eq!(
                String::from_utf8_lossy(&r.stdout),
                format!("{what} 1 false\n"),
                "{r:#?}"
            );
        }
        let trace = r.outcome.files.iter().find(|f| f.path == "trace").unwrap();
        assert_eq!(trace.content, what.as_bytes(), "{what}");
    }
    fx.assert_clean().await;
}

/// Not a check: how long 20 inputs take through `run_inputs` and as 20 whole JShells
/// (`cargo nextest run -p evaluator --test java_batch --run-ignored only --no-capture`).
#[tokio::test]
#[ignore]
async fn timing_twenty_inputs() {
    let fx = Fixture::new();
    let launch = common::java(&fx, true).await;
    let components = components(&[READER, "sum * 3"]);
    let inputs: Vec<Input> = (0..20).map(|i| input(&format!("{i} {i} 1"))).collect();
    let start = Instant::now();
    let reports = batch(
        &fx,
        &launch,
        &components,
        inputs.clone(),
        Limits::default(),
        RequestData::default(),
    )
    .await;
    let batched = start.elapsed();
    let batched_cpu: Duration = reports.iter().map(|r| r.outcome.cpu_time).sum();
    let start = Instant::now();
    let mut whole_cpu = Duration::ZERO;
    let mut tasks = Vec::new();
    let fx = Arc::new(fx);
    for chunk in inputs.chunks(10) {
        let (fx, launch, components, chunk) = (
            fx.clone(),
            launch.clone(),
            components.clone(),
            chunk.to_vec(),
        );
        // Two at a time, as run_inputs above.
        tasks.push(tokio::spawn(async move {
            let mut cpu = Duration::ZERO;
            for i in chunk {
                let run = fx
                    .run_in(
                        None,
                        &launch,
                        components.clone(),
                        i.stdin,
                        Limits::default(),
                        CancellationToken::new(),
                    )
                    .await;
                assert_eq!(run.outcome.status, Status::Ok);
                cpu += run.outcome.cpu_time;
            }
            cpu
        }));
    }
    for t in tasks {
        whole_cpu += t.await.unwrap();
    }
    let whole = start.elapsed();
    println!(
        "20 inputs, 2 at a time: run_inputs {batched:?} wall ({batched_cpu:?} CPU in the runs), \
         whole JShells {whole:?} wall ({whole_cpu:?} CPU)"
    );
}
