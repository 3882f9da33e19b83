//! End to end: one program, many inputs, through a real node (the `jsheets-runtime
//! serve` binary, real sandboxes), the client library and the CLI. Needs root.

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use proto::jsheets::completion::Status;
use proto::jsheets::input_result::Match;
use proto::jsheets::{
    File, Input, InputResult, Limits, ListRuntimesRequest, OutputMatch, StartEvaluationRequest,
};
use support::*;
use tonic::Code;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Python 3.11 without its access list (the programs below use `os` and `open`).
const PYTHON_UNLISTED: (&str, &str) = (
    "JSHEETS_RUNTIME_EVALUATION_ACCESS_LISTS",
    "{\"python-3.11\" = \"none\"}",
);
/// Two runs at once, whatever the machine.
const TWO_AT_ONCE: (&str, &str) = ("JSHEETS_RUNTIME_EVALUATION_INPUT_PARALLELISM", "2");

fn input(stdin: &str, expected: Option<&str>) -> Input {
    Input {
        stdin: stdin.as_bytes().to_vec(),
        files: Vec::new(),
        expected_output: expected.map(|e| e.as_bytes().to_vec()),
    }
}

fn file(path: &str, content: &[u8]) -> File {
    File {
        path: path.into(),
        content: content.to_vec(),
        executable: false,
    }
}

fn with_inputs(runtime: &str, code: &str, inputs: Vec<Input>) -> StartEvaluationRequest {
    StartEvaluationRequest {
        inputs,
        ..start_code(runtime, code)
    }
}

/// The runs of a many-input transcript by index, each reported exactly once, in a
/// response of its own before the final one (which carries none).
fn runs_by_index(t: &Transcript, count: usize) -> BTreeMap<u32, InputResult> {
    let final_response = t.last();
    assert!(
        final_response.input_result.is_none(),
        "the final response carries a run: {t:#?}"
    );
    let mut runs = BTreeMap::new();
    for r in &t.responses {
        assert!(
            r.result.is_empty(),
            "live output in a many-input evaluation: {r:#?}"
        );
        if let Some(result) = &r.input_result {
            assert!(r.completion.is_none(), "{r:#?}");
            let index = result.index;
            assert!(
                runs.insert(index, result.clone()).is_none(),
                "input {index} reported twice: {t:#?}"
            );
        }
    }
    let expected: Vec<u32> = (0..count as u32).collect();
    assert_eq!(runs.keys().copied().collect::<Vec<_>>(), expected, "{t:#?}");
    runs
}

fn status(r: &InputResult) -> Status {
    r.completion.as_ref().unwrap().status()
}

fn error_kinds(r: &InputResult) -> Vec<&str> {
    r.error.iter().map(|e| e.kind.as_str()).collect()
}

async fn nothing_left(server: &Server) {
    if let Err(left) = wait_sandboxes_gone(server.pid, SECS(10)).await {
        panic!("left behind: {left:?}");
    }
}

/// Adds two numbers of its standard input (under the default access list).
const ADDER: &str = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))";

/// The `i`th input of the adder: `i` and `10 i`, so `11 i` comes out. Every fourth
/// expects a wrong sum, input 5 expects its sum with trailing whitespace, input 10
/// expects nothing.
fn adder_input(i: u32) -> (Input, Match) {
    let stdin = format!("{i} {}\n", 10 * i);
    let sum = 11 * i;
    let (expected, exact) = match i {
        5 => (Some(format!("{sum}   \n\n")), Match::Mismatched),
        10 => (None, Match::NotChecked),
        i if i % 4 == 3 => (Some(format!("{}\n", sum + 1)), Match::Mismatched),
        _ => (Some(format!("{sum}\n")), Match::Matched),
    };
    (input(&stdin, expected.as_deref()), exact)
}

#[tokio::test]
async fn python_runs_every_input_alone_and_checks_each_output() {
    // Pooled (zygote-forked where the node has the library) sandboxes, two at once.
    let mut server = Server::start(&[
        (
            "JSHEETS_RUNTIME_EVALUATION_POOL",
            "{\"python-3.11\" = {size = 2, idleMemoryBytes = 134217728}}",
        ),
        TWO_AT_ONCE,
    ]);
    let mut client = server.client().await;
    // The pool full first, so that runs are handed waiting sandboxes however busy the
    // machine is.
    let deadline = Instant::now() + SECS(60);
    while python_info(&mut client).await.pool_idle < 2 {
        assert!(Instant::now() < deadline, "the pool did not fill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = 20;
    let (inputs, wanted): (Vec<Input>, Vec<Match>) = (0..count).map(adder_input).unzip();
    let t = evaluate(
        &mut client,
        with_inputs("python-3.11", ADDER, inputs),
        SECS(120),
    )
    .await;
    let runs = runs_by_index(&t, count as usize);
    let c = t.completion();
    assert_eq!(c.status(), Status::Ok, "{t:#?}");
    for (i, r) in &runs {
        let rc = r.completion.as_ref().unwrap();
        assert_eq!(status(r), Status::Ok, "{r:#?}");
        assert_eq!(rc.exit_code, 0);
        assert_eq!(r.stdout, format!("{}\n", 11 * i).as_bytes(), "{r:#?}");
        assert!(r.stderr.is_empty(), "{r:#?}");
        assert!(r.error.is_empty(), "{r:#?}");
        assert_eq!(r.r#match(), wanted[*i as usize], "input {i}: {r:#?}");
        assert_eq!(rc.evaluation_id, format!("{}/{i}", c.evaluation_id));
        assert_eq!(rc.runtime.as_ref().unwrap().name, "python-3.11");
        assert_eq!(rc.service_id, server.service_id);
    }
    // The final completion sums the runs up: CPU time added (each run's rounded down
    // to the millisecond), the highest peak, the whole wall time.
    let cpu: u64 = runs
        .values()
        .map(|r| r.completion.as_ref().unwrap().cpu_time_ms)
        .sum();
    assert!(
        c.cpu_time_ms >= cpu && c.cpu_time_ms < cpu + count as u64,
        "final cpu {} ms, runs {cpu} ms",
        c.cpu_time_ms
    );
    assert!(cpu > 0, "{t:#?}");
    let peak = runs
        .values()
        .map(|r| r.completion.as_ref().unwrap().peak_memory_bytes)
        .max()
        .unwrap();
    assert_eq!(c.peak_memory_bytes, peak);
    let longest = runs
        .values()
        .map(|r| r.completion.as_ref().unwrap().wall_time_ms)
        .max()
        .unwrap();
    assert!(c.wall_time_ms >= longest, "{c:?}");
    assert_eq!(c.runtime.as_ref().unwrap().name, "python-3.11");

    // Ignoring trailing whitespace, input 5 matches; a wrong sum still does not.
    let picked = [5, 3, 0];
    let s = StartEvaluationRequest {
        output_match: OutputMatch::IgnoreTrailingWhitespace as i32,
        ..with_inputs(
            "python-3.11",
            ADDER,
            picked.iter().map(|&i| adder_input(i).0).collect(),
        )
    };
    let t = evaluate(&mut client, s, SECS(60)).await;
    let runs = runs_by_index(&t, picked.len());
    assert_eq!(t.completion().status(), Status::Ok, "{t:#?}");
    let matches: Vec<Match> = runs.values().map(|r| r.r#match()).collect();
    assert_eq!(
        matches,
        [Match::Matched, Match::Mismatched, Match::Matched],
        "{t:#?}"
    );

    // Every run was forked by a lane of its request (two at once: two lanes per
    // request), none asked the pool for a sandbox.
    let python = python_info(&mut client).await;
    assert_eq!(python.pool_lanes, 4, "{python:?}");
    assert_eq!(python.pool_taken + python.pool_misses, 0, "{python:?}");
    // The waiting sandboxes go with the node, and nothing else is left.
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit(SECS(20)).await.success());
    if let Err(left) = wait_sandbox_processes_gone(server.pid, false, SECS(5)).await {
        panic!("left behind 5 s after the node exited: {left:?}");
    }
}

/// python-3.11 as `ListRuntimes` shows it.
async fn python_info(
    client: &mut proto::jsheets::snippet_runtime_client::SnippetRuntimeClient<
        tonic::transport::Channel,
    >,
) -> proto::jsheets::RuntimeInfo {
    let runtimes = within(
        NET,
        "ListRuntimes",
        client.list_runtimes(ListRuntimesRequest {}),
    )
    .await
    .unwrap()
    .into_inner()
    .runtimes;
    runtimes
        .into_iter()
        .find(|r| r.name == "python-3.11")
        .unwrap()
}

/// Does what its standard input says.
const DOER: &str = r#"
import os, sys, time
what = sys.stdin.read().strip()
if what == "sleep":
    time.sleep(60)
elif what == "hog":
    blocks = []
    while True:
        blocks.append(bytearray(16 << 20))
elif what == "crash":
    os.abort()
elif what == "exit":
    sys.exit(3)
print("done", what)
"#;

#[tokio::test]
async fn a_run_hitting_a_limit_or_crashing_ends_alone() {
    let server = Server::start(&[PYTHON_UNLISTED, TWO_AT_ONCE]);
    let mut client = server.client().await;
    let s = StartEvaluationRequest {
        limits: Some(Limits {
            wall_time_ms: 3000,
            memory_bytes: 128 << 20,
            ..Default::default()
        }),
        ..with_inputs(
            "python-3.11",
            DOER,
            vec![
                input("a", Some("done a\n")),
                input("sleep", None),
                input("hog", None),
                input("crash", None),
                input("exit", None),
                input("b", Some("done b\n")),
            ],
        )
    };
    let t = evaluate(&mut client, s, SECS(60)).await;
    let runs = runs_by_index(&t, 6);
    let summary: Vec<(Status, Vec<&str>)> =
        runs.values().map(|r| (status(r), error_kinds(r))).collect();
    assert_eq!(
        summary,
        [
            (Status::Ok, vec![]),
            (Status::WallTimeout, vec!["timeout"]),
            (Status::MemoryLimit, vec!["memory"]),
            (Status::KilledBySignal, vec!["signal"]),
            (Status::ExitedNonzero, vec![]),
            (Status::Ok, vec![]),
        ],
        "{t:#?}"
    );
    for i in [0, 5] {
        assert_eq!(runs[&i].r#match(), Match::Matched, "{:#?}", runs[&i]);
    }
    assert_eq!(runs[&3].completion.as_ref().unwrap().signal, 6);
    assert_eq!(runs[&4].completion.as_ref().unwrap().exit_code, 3);
    let timeout = &runs[&1].error[0];
    assert!(
        timeout.message.contains("3000 ms") && timeout.component_id == "main",
        "{timeout:?}"
    );
    assert!(
        runs[&2].error[0]
            .message
            .contains(&(128u64 << 20).to_string()),
        "{:?}",
        runs[&2].error
    );
    // The first run by index that did not end ok gives the whole its status, though
    // the sleeper (two at once) ended after every later run.
    assert_eq!(t.completion().status(), Status::WallTimeout, "{t:#?}");
    let arrival: Vec<u32> = t
        .responses
        .iter()
        .filter_map(|r| r.input_result.as_ref().map(|r| r.index))
        .collect();
    assert_eq!(arrival.last(), Some(&1), "arrival order {arrival:?}");
    nothing_left(&server).await;

    // A limit is reported against the component that was running when it hit, as in
    // a single evaluation.
    let s = StartEvaluationRequest {
        limits: Some(Limits {
            wall_time_ms: 1000,
            ..Default::default()
        }),
        inputs: vec![input("x", None)],
        ..jsheets_start(vec![
            component("prints", 1, "import sys, time\nprint(sys.stdin.read())"),
            component("sleeps", 2, "time.sleep(30)"),
            component("never", 3, "print('c')"),
        ])
    };
    let t = evaluate(&mut client, s, SECS(30)).await;
    let run = runs_of(&t)[0];
    assert_eq!(status(run), Status::WallTimeout, "{t:#?}");
    assert_eq!(run.stdout, b"x\n");
    assert_eq!(run.error.len(), 1, "{run:#?}");
    assert_eq!(
        (
            run.error[0].kind.as_str(),
            run.error[0].component_id.as_str()
        ),
        ("timeout", "sleeps"),
        "{run:#?}"
    );
    nothing_left(&server).await;
}

/// The runs of a transcript in arrival order.
fn runs_of(t: &Transcript) -> Vec<&InputResult> {
    t.responses
        .iter()
        .filter_map(|r| r.input_result.as_ref())
        .collect()
}

#[tokio::test]
async fn java_compiles_once_and_runs_every_input() {
    let server = Server::start(&[TWO_AT_ONCE]);
    let mut client = server.client().await;
    let s = StartEvaluationRequest {
        runtime: "openjdk-17".into(),
        inputs: vec![
            input("1 2", Some("3\n")),
            input("3 4\n", Some("7\n")),
            input("10 20 30", Some("60\n")),
            input("", Some("0\n")),
            input("5", Some("6\n")),
        ],
        ..jsheets_start(vec![
            component("read", 1, "var in = new Scanner(System.in);"),
            component(
                "sum",
                2,
                "long sum = 0;\nwhile (in.hasNextLong()) sum += in.nextLong();\nSystem.out.println(sum);",
            ),
        ])
    };
    let t = evaluate(&mut client, s, SECS(180)).await;
    let runs = runs_by_index(&t, 5);
    assert_eq!(t.completion().status(), Status::Ok, "{t:#?}");
    let got: Vec<(String, Match)> = runs
        .values()
        .map(|r| (String::from_utf8_lossy(&r.stdout).into_owned(), r.r#match()))
        .collect();
    let want = [
        ("3\n", Match::Matched),
        ("7\n", Match::Matched),
        ("60\n", Match::Matched),
        ("0\n", Match::Matched),
        ("5\n", Match::Mismatched),
    ]
    .map(|(s, m)| (s.to_owned(), m));
    assert_eq!(got, want, "{t:#?}");
    for r in runs.values() {
        assert_eq!(status(r), Status::Ok, "{r:#?}");
        assert!(r.error.is_empty(), "{r:#?}");
    }

    // A call the runtime's access list denies: every run reports it, none ran.
    let s = StartEvaluationRequest {
        inputs: vec![input("1", None), input("2", None), input("3", None)],
        ..start_code(
            "openjdk-17",
            "System.out.println(\"ran\");\nSystem.exit(1);",
        )
    };
    let t = evaluate(&mut client, s, SECS(120)).await;
    let runs = runs_by_index(&t, 3);
    t.completion();
    for r in runs.values() {
        assert!(r.stdout.is_empty(), "a run ran: {r:#?}");
        let denials: Vec<_> = r.error.iter().filter(|e| e.kind == "sandbox").collect();
        assert_eq!(denials.len(), 1, "{r:#?}");
        assert!(
            denials[0]
                .message
                .contains("`java.lang.System#exit(int):void` is not allowed")
                && denials[0].message.contains("java-default"),
            "{r:#?}"
        );
    }
    nothing_left(&server).await;
}

#[tokio::test]
async fn each_run_has_the_shared_files_and_its_own_and_returns_its_own() {
    let server = Server::start(&[TWO_AT_ONCE]);
    let channel = server.channel().await;
    let count = 4;
    let mut req = client::EvalRequest::new("shell")
        .component(
            "main",
            "cd /work && read i && cat shared.txt in/mine.txt > \"out-$i.txt\"",
        )
        .file("shared.txt", b"shared\n".to_vec(), false)
        .get("*.txt")
        .get("in/*");
    for i in 0..count {
        req.inputs.push(Input {
            stdin: format!("{i}\n").into_bytes(),
            files: vec![file("in/mine.txt", format!("mine-{i}\n").as_bytes())],
            expected_output: None,
        });
    }
    let evaluated = within(
        SECS(60),
        "the many-input evaluation",
        client::evaluate(&channel, &req, SECS(60), |_| {}),
    )
    .await
    .unwrap();
    assert_eq!(evaluated.status(), Status::Ok, "{evaluated:#?}");
    assert!(evaluated.files.is_empty(), "{evaluated:#?}");
    assert_eq!(evaluated.runs.len(), count, "{evaluated:#?}");
    let mut seen = Vec::new();
    for run in &evaluated.runs {
        let i = run.result.index;
        seen.push(i);
        assert_eq!(status(&run.result), Status::Ok, "{run:#?}");
        let mut files: Vec<(&str, &[u8])> = run
            .files
            .iter()
            .map(|f| {
                assert!(f.error.is_none(), "{f:?}");
                (f.path.as_str(), f.content.as_slice())
            })
            .collect();
        files.sort();
        let out = format!("out-{i}.txt");
        let both = format!("shared\nmine-{i}\n");
        let mine = format!("mine-{i}\n");
        assert_eq!(
            files,
            [
                ("in/mine.txt", mine.as_bytes()),
                (out.as_str(), both.as_bytes()),
                ("shared.txt", &b"shared\n"[..]),
            ],
            "run {i} came back with other files"
        );
    }
    seen.sort();
    assert_eq!(seen, (0..count as u32).collect::<Vec<_>>());
    nothing_left(&server).await;
}

#[tokio::test]
async fn requests_beyond_the_bounds_or_ill_formed_are_refused() {
    let server = Server::start(&[
        ("JSHEETS_RUNTIME_EVALUATION_MAX_INPUTS", "3"),
        ("JSHEETS_RUNTIME_EVALUATION_MAX_INPUTS_BYTES", "100"),
    ]);
    let mut client = server.client().await;
    let shell = |inputs: Vec<Input>| with_inputs("shell", "cat", inputs);
    let invalid = |s: &tonic::Status, text: &str| {
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains(text), "{text:?} not in {s:?}");
    };

    let four = (0..4).map(|_| input("x", None)).collect();
    invalid(
        &refused(&mut client, shell(four)).await,
        "evaluation.maxInputs",
    );
    let big = vec![
        input(&"x".repeat(60), None),
        input("y", Some(&"y".repeat(40))),
    ];
    invalid(
        &refused(&mut client, shell(big)).await,
        "evaluation.maxInputsBytes",
    );
    let s = StartEvaluationRequest {
        stdin: b"x".to_vec(),
        ..shell(vec![input("a", None)])
    };
    invalid(&refused(&mut client, s).await, "stdin");
    let mut outside = vec![input("a", None), input("b", None)];
    outside[1].files.push(file("../x", b"x"));
    invalid(
        &refused(&mut client, shell(outside)).await,
        "inputs[1].files[0].path",
    );
    let mut clash = vec![input("a", None)];
    clash[0].files.push(file("ok.txt", b"x"));
    clash[0].files.push(file("data.txt", b"x"));
    let s = StartEvaluationRequest {
        files: vec![file("data.txt", b"shared")],
        ..shell(clash)
    };
    let s = refused(&mut client, s).await;
    invalid(&s, "inputs[0].files[1].path");
    invalid(&s, "also one of the request's files");
    let s = StartEvaluationRequest {
        output_match: 7,
        ..shell(vec![input("a", None)])
    };
    invalid(&refused(&mut client, s).await, "output_match");

    // Within the bounds, it runs.
    let t = evaluate(
        &mut client,
        shell((0..3).map(|i| input(&i.to_string(), None)).collect()),
        SECS(30),
    )
    .await;
    let runs = runs_by_index(&t, 3);
    assert_eq!(runs[&2].stdout, b"2", "{t:#?}");
    assert_eq!(t.completion().status(), Status::Ok);
}

/// The first input ends at once, every other sleeps.
fn sleepers(count: usize) -> StartEvaluationRequest {
    let mut inputs = vec![input("a", None)];
    inputs.extend((1..count).map(|_| input("sleep", None)));
    with_inputs("python-3.11", DOER, inputs)
}

/// Reads responses until input `index` has been reported.
async fn wait_for_run(call: &mut Call, index: u32) {
    loop {
        match call.next(SECS(30)).await {
            Ok(Some(r)) => {
                assert!(r.completion.is_none(), "finished early: {r:#?}");
                if r.input_result.as_ref().is_some_and(|r| r.index == index) {
                    return;
                }
            }
            other => panic!("no result for input {index}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn stopping_a_batch_ends_its_runs_and_starts_no_more() {
    let server = Server::start(&[PYTHON_UNLISTED, TWO_AT_ONCE]);
    let mut client = server.client().await;

    // `stop`: the runs going are cancelled, no other starts, the whole is cancelled.
    let mut call = Call::open(&mut client, Some(start(sleepers(8))))
        .await
        .unwrap();
    wait_for_run(&mut call, 0).await;
    let deadline = Instant::now() + SECS(20);
    while sandbox_processes(server.pid, true).len() < 2 {
        assert!(Instant::now() < deadline, "the sleepers did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = Instant::now();
    call.send(stop()).await;
    let t = call.until_completion(SECS(10)).await;
    let took = stopped.elapsed();
    assert!(
        took < SECS(5),
        "the final response took {took:?} after stop"
    );
    assert_eq!(t.completion().status(), Status::Cancelled, "{t:#?}");
    let ended = runs_of(&t);
    assert!(
        !ended.is_empty() && ended.len() <= 2,
        "runs after the stop: {t:#?}"
    );
    for r in ended {
        assert_eq!(status(r), Status::Cancelled, "{r:#?}");
        assert_eq!(error_kinds(r), ["cancelled"], "{r:#?}");
    }
    assert!(matches!(call.next(SECS(5)).await, Ok(None)));
    nothing_left(&server).await;

    // The client going away: the node ends the runs.
    let mut call = Call::open(&mut client, Some(start(sleepers(8))))
        .await
        .unwrap();
    wait_for_run(&mut call, 0).await;
    let deadline = Instant::now() + SECS(20);
    while sandbox_processes(server.pid, true).is_empty() {
        assert!(Instant::now() < deadline, "the sleepers did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(call);
    if let Err(left) = wait_sandboxes_gone(server.pid, SECS(5)).await {
        panic!("5 s after the client dropped the call, still running: {left:?}");
    }
    // No run starts afterwards either.
    tokio::time::sleep(Duration::from_secs(1)).await;
    nothing_left(&server).await;

    // The node is fine afterwards.
    let t = evaluate(
        &mut client,
        with_inputs("python-3.11", DOER, vec![input("c", Some("done c\n"))]),
        SECS(30),
    )
    .await;
    assert_eq!(runs_of(&t)[0].r#match(), Match::Matched, "{t:#?}");
}

#[tokio::test]
async fn eval_runs_each_input_and_reports_it_as_it_ends() {
    let server = Server::start(&[TWO_AT_ONCE]);
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let a = write("a.txt", "1 2\n");
    let a_expected = write("a.expected", "3\n");
    let b = write("b.txt", "4 5\n");
    let wrong = write("wrong.expected", "10\n");
    let loose = write("loose.expected", "3  \n\n");
    let out = tmp.path().join("got");
    let code = "read x y; echo $((x + y)); echo \"$x\" > /work/x.txt; echo err-$x >&2";
    let eval = |inputs: &[String], extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["eval", "--endpoint", &server.url(), "--runtime", "shell"])
            .args(["-e", code]);
        for i in inputs {
            cmd.args(["--input", i]);
        }
        cmd.args(extra)
            .env_clear()
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };

    let o = eval(
        &[format!("{a}:{a_expected}"), b.clone()],
        &["--get", "x.txt", "--output-dir", out.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, ["3", "9"], "{stdout}");
    assert!(header_in(&stderr, 0, "ok, matched ("), "{stderr}");
    assert!(header_in(&stderr, 1, "ok ("), "{stderr}");
    assert!(
        stderr.contains("err-1") && stderr.contains("err-4"),
        "{stderr}"
    );
    assert!(stderr.contains("status: ok"), "{stderr}");
    assert_eq!(std::fs::read(out.join("0/x.txt")).unwrap(), b"1\n");
    assert_eq!(std::fs::read(out.join("1/x.txt")).unwrap(), b"4\n");

    // A mismatch fails the command; trailing whitespace counts unless told otherwise.
    let o = eval(&[format!("{a}:{wrong}"), format!("{a}:{loose}")], &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(header_in(&stderr, 0, "ok, mismatched ("), "{stderr}");
    assert!(header_in(&stderr, 1, "ok, mismatched ("), "{stderr}");
    let o = eval(
        &[format!("{a}:{loose}")],
        &["--match", "trailing-whitespace"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(header_in(&stderr, 0, "ok, matched ("), "{stderr}");

    // A run that fails fails the command.
    let o = Command::new(BIN)
        .args(["eval", "--endpoint", &server.url(), "--runtime", "shell"])
        .args(["-e", "read x; exit $x"])
        .args(["--input", &write("zero.txt", "0\n")])
        .args(["--input", &write("three.txt", "3\n")])
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(header_in(&stderr, 1, "exited_nonzero"), "{stderr}");
    assert!(stderr.contains("status: exited_nonzero"), "{stderr}");
    nothing_left(&server).await;
}

fn header_in(stderr: &str, i: usize, rest: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.starts_with(&format!("input {i}: {rest}")))
}

#[tokio::test]
async fn eval_prints_each_run_while_the_others_go_on() {
    use std::io::{BufRead, BufReader};
    let server = Server::start(&[TWO_AT_ONCE]);
    let tmp = tempfile::tempdir().unwrap();
    let quick = tmp.path().join("quick.txt");
    std::fs::write(&quick, "quick\n").unwrap();
    let slow = tmp.path().join("slow.txt");
    std::fs::write(&slow, "slow\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["eval", "--endpoint", &server.url(), "--runtime", "shell"])
        .args(["-e", "read x; [ \"$x\" = slow ] && sleep 5; echo $x"])
        .args(["--input", quick.to_str().unwrap()])
        .args(["--input", slow.to_str().unwrap()])
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(SECS(20)).unwrap();
    assert!(first.starts_with("input 0: ok ("), "{first}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "eval ended before the slow run"
    );
    let status = within(SECS(30), "eval ending", async {
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success());
    let rest: Vec<String> = rx.iter().collect();
    assert!(rest[0].starts_with("input 1: ok ("), "{rest:?}");
    assert!(rest.iter().any(|l| l.starts_with("status: ok")), "{rest:?}");
}
