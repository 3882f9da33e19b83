//! End to end: the real `jsheets-runtime serve` binary as a subprocess, configured
//! through the environment, spoken to over real gRPC (plain, TLS and mutual TLS).
//! Needs root: every evaluation runs in a real sandbox.

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use proto::jsheets::evaluation_result::Kind;
use proto::jsheets::{EvaluateRequest, Limits, ListRuntimesRequest, StartEvaluationRequest};
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The node's runtimes, from `ListRuntimes`.
async fn list_runtimes(
    client: &mut proto::jsheets::snippet_runtime_client::SnippetRuntimeClient<Channel>,
) -> Vec<proto::jsheets::RuntimeInfo> {
    within(
        NET,
        "ListRuntimes",
        client.list_runtimes(ListRuntimesRequest {}),
    )
    .await
    .unwrap()
    .into_inner()
    .runtimes
}

/// The messages exactly as jsheets defined them, without any extension field: what an
/// unchanged jsheets backend encodes and decodes (it skips fields it does not know).
mod jsheets_only {
    use proto::jsheets::{
        EvaluatedSnippet, EvaluationError, EvaluationResult, MissingSources, SnippetSources, Text,
    };

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StartEvaluationRequest {
        #[prost(message, optional, tag = "1")]
        pub snippet: Option<EvaluatedSnippet>,
        #[prost(message, repeated, tag = "2")]
        pub sources: Vec<SnippetSources>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StopEvaluationRequest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EvaluateRequest {
        #[prost(oneof = "evaluate_request::Message", tags = "1, 2")]
        pub message: Option<evaluate_request::Message>,
    }

    pub mod evaluate_request {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Message {
            #[prost(message, tag = "1")]
            Start(super::StartEvaluationRequest),
            #[prost(message, tag = "2")]
            Stop(super::StopEvaluationRequest),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EvaluateResponse {
        #[prost(message, repeated, tag = "1")]
        pub missing_sources: Vec<MissingSources>,
        #[prost(message, repeated, tag = "2")]
        pub text: Vec<Text>,
        #[prost(message, repeated, tag = "3")]
        pub result: Vec<EvaluationResult>,
        #[prost(message, repeated, tag = "4")]
        pub error: Vec<EvaluationError>,
    }
}

// ---------------------------------------------------------------------------------------
// 1. A jsheets client.

#[tokio::test]
async fn jsheets_client_runs_components_in_order_with_shared_state_and_live_output() {
    let server = Server::start(&[("JSHEETS_RUNTIME_EVALUATION_DEFAULT_RUNTIME", "python-3.11")]);
    let channel = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    within(NET, "channel ready", grpc.ready()).await.unwrap();

    // Listed out of order; `order` decides (and need not be contiguous or positive).
    let components = vec![
        component("value", 7, "x * 2"),
        component(
            "warn",
            5,
            "from sys import stderr\nprint('careful', file=stderr)",
        ),
        component("assign", -1, "x = 40"),
        component("print", 3, "print(x + 2)"),
    ];
    let full = support::jsheets_start(components);
    let request = jsheets_only::EvaluateRequest {
        message: Some(jsheets_only::evaluate_request::Message::Start(
            jsheets_only::StartEvaluationRequest {
                snippet: full.snippet,
                sources: full.sources,
            },
        )),
    };
    let (tx, rx) = mpsc::channel::<jsheets_only::EvaluateRequest>(4);
    tx.send(request).await.unwrap();
    let codec = tonic_prost::ProstCodec::<
        jsheets_only::EvaluateRequest,
        jsheets_only::EvaluateResponse,
    >::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/jsheets.SnippetRuntime/Evaluate");
    let mut stream = within(
        NET,
        "Evaluate",
        grpc.streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec),
    )
    .await
    .unwrap()
    .into_inner();

    // The request stream stays open (`tx` is alive): the server must end the response
    // stream by itself after the final response.
    let mut responses = Vec::new();
    loop {
        match within(SECS(20), "a response", stream.message()).await {
            Ok(Some(r)) => responses.push(r),
            Ok(None) => break,
            Err(status) => panic!("the stream failed: {status:?} after {responses:#?}"),
        }
    }
    drop(tx);

    let (last, live) = responses.split_last().expect("no response at all");
    let info = Kind::Info as i32;
    let error = Kind::Error as i32;
    // Live output: stdout as INFO, stderr as ERROR, keyed by the component that printed.
    let mut live_results = Vec::new();
    for r in live {
        assert!(
            r.error.is_empty(),
            "errors in a live-output response: {r:#?}"
        );
        live_results.extend(r.result.iter().cloned());
    }
    let joined = |id: &str, kind: i32| -> String {
        live_results
            .iter()
            .filter(|r| r.component_id == id && r.kind == kind)
            .map(|r| r.output.as_str())
            .collect()
    };
    assert_eq!(joined("print", info), "42\n", "{responses:#?}");
    assert_eq!(joined("warn", error), "careful\n", "{responses:#?}");
    assert!(
        live_results
            .iter()
            .all(|r| (r.component_id == "print" && r.kind == info)
                || (r.component_id == "warn" && r.kind == error)),
        "unexpected live output: {responses:#?}"
    );
    // Output arrives in component order: everything of `print` before `warn`.
    let first_warn = live_results.iter().position(|r| r.component_id == "warn");
    let last_print = live_results.iter().rposition(|r| r.component_id == "print");
    assert!(last_print < first_warn, "{responses:#?}");

    // The final response: the trailing expression's value, as INFO, of its component.
    assert!(last.error.is_empty(), "{last:#?}");
    let values: Vec<_> = last
        .result
        .iter()
        .filter(|r| r.component_id == "value")
        .collect();
    assert_eq!(values.len(), 1, "{last:#?}");
    assert_eq!(values[0].kind, info);
    assert_eq!(values[0].output.trim(), "80");
    // No value shows up before the final response.
    assert!(live_results.iter().all(|r| r.component_id != "value"));
}

// ---------------------------------------------------------------------------------------
// 2. Diagnostics.

#[tokio::test]
async fn syntax_errors_and_exceptions_are_reported_and_later_components_run() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let broken = "z = 1\ny = (z +\n";
    let start = support::jsheets_start(vec![
        component("first", 1, "x = 1"),
        component("broken", 2, broken),
        component("raises", 3, "def f():\n    raise ValueError('boom')\nf()"),
        component("after", 4, "print('after', x)"),
    ]);
    let t = evaluate(&mut client, start, SECS(20)).await;
    let last = t.last();
    let errors = &last.error;

    let syntax: Vec<_> = errors
        .iter()
        .filter(|e| e.component_id == "broken")
        .collect();
    assert_eq!(syntax.len(), 1, "{t:#?}");
    assert_eq!(syntax[0].kind, "SyntaxError", "{t:#?}");
    assert!(!syntax[0].message.is_empty(), "{t:#?}");
    let span = syntax[0].span.expect("a syntax error has a span");
    let len = broken.chars().count() as i64;
    assert!(
        0 <= span.start && span.start <= span.end && span.end <= len,
        "span {span:?} is not inside the component ({len} characters): {t:#?}"
    );
    // The error is on the second line, and the span says so (offsets into this component,
    // not into the remaining text after its first statement).
    assert!(
        span.start >= "z = 1\n".len() as i64,
        "span {span:?}: {t:#?}"
    );

    let exceptions: Vec<_> = errors
        .iter()
        .filter(|e| e.component_id == "raises")
        .collect();
    assert_eq!(exceptions.len(), 1, "{t:#?}");
    assert_eq!(exceptions[0].kind, "exception");
    let m = &exceptions[0].message;
    assert!(
        m.contains("ValueError") && m.contains("boom"),
        "exception message without the exception: {m:?}"
    );
    assert!(
        m.contains("Traceback") && m.contains("raise ValueError('boom')") && m.contains("in f"),
        "exception message without the traceback: {m:?}"
    );

    // Later components still ran, with the state of the earlier ones.
    assert_eq!(t.live("after", Kind::Info), "after 1\n", "{t:#?}");
    assert_eq!(errors.len(), 2, "{t:#?}");
}

// ---------------------------------------------------------------------------------------
// 3. Extensions.

#[tokio::test]
async fn runtime_choice_stdin_limits_and_completion() {
    let server = Server::start(&[("JSHEETS_RUNTIME_EVALUATION_DEFAULT_RUNTIME", "python-3.11")]);
    let mut client = server.client().await;
    let runtimes = list_runtimes(&mut client).await;
    let shell_version = runtimes
        .iter()
        .find(|r| r.name == "shell")
        .map(|r| r.version.clone())
        .expect("shell listed");

    // The shell runtime, with stdin, doing a little CPU work.
    let mut s = start_code(
        "shell",
        "read first; echo \"got $first\"; cat; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo \"counted $i\" >&2",
    );
    s.stdin = b"hello\nworld\n".to_vec();
    let t = evaluate(&mut client, s, SECS(20)).await;
    let c = t.completion();
    assert_eq!(t.status_name(), "Ok", "{t:#?}");
    assert_eq!(c.exit_code, 0);
    assert_eq!(t.stdout(), "got hello\nworld\n", "{t:#?}");
    assert_eq!(t.live("main", Kind::Error), "counted 20000\n", "{t:#?}");
    let rt = c.runtime.as_ref().expect("completion.runtime");
    assert_eq!(rt.name, "shell");
    assert_eq!(rt.version, shell_version);
    assert!(!rt.version.is_empty());
    assert_eq!(c.service_id, server.service_id);
    assert!(c.wall_time_ms > 0, "{c:?}");
    assert!(c.cpu_time_ms > 0, "{c:?}");
    assert!(c.peak_memory_bytes > 0, "{c:?}");
    assert!(!c.evaluation_id.is_empty());
    assert!(!c.output_truncated);
    // Exactly one completion, in the final response (both checked by `completion()`);
    // no live-output response carries one.
    assert!(t.responses[..t.responses.len() - 1]
        .iter()
        .all(|r| r.completion.is_none()));
    let first_id = c.evaluation_id.clone();

    // No runtime named: the configured default (python-3.11).
    let t = evaluate(
        &mut client,
        start_code("", "from sys import version_info\nprint(version_info[:2])"),
        SECS(20),
    )
    .await;
    assert_eq!(t.stdout(), "(3, 11)\n", "{t:#?}");
    let c = t.completion();
    assert_eq!(c.runtime.as_ref().unwrap().name, "python-3.11");
    assert_ne!(c.evaluation_id, first_id, "evaluation ids repeat");

    // A nonzero exit.
    let t = evaluate(
        &mut client,
        start_code("shell", "echo bye; exit 3"),
        SECS(20),
    )
    .await;
    assert_eq!(t.status_name(), "ExitedNonzero", "{t:#?}");
    assert_eq!(t.completion().exit_code, 3);

    // The wall-clock limit.
    let mut s = start_code("shell", "sleep 30");
    s.limits = Some(Limits {
        wall_time_ms: 500,
        ..Default::default()
    });
    let began = Instant::now();
    let t = evaluate(&mut client, s, SECS(20)).await;
    let took = began.elapsed();
    assert_eq!(t.status_name(), "WallTimeout", "{t:#?}");
    let c = t.completion();
    assert!(c.wall_time_ms >= 450 && c.wall_time_ms < 5000, "{c:?}");
    assert!(took < SECS(5), "the 500 ms limit took {took:?}");
    let timeouts: Vec<_> = t
        .last()
        .error
        .iter()
        .filter(|e| e.kind == "timeout")
        .collect();
    assert_eq!(timeouts.len(), 1, "{t:#?}");
    assert!(!timeouts[0].message.is_empty());
}

/// A limit hit is reported against the component that was running when it hit, not
/// the last one that happened to print (jsheets reported timeouts nowhere, or as
/// `internal` errors of later components).
#[tokio::test]
async fn limit_errors_name_the_component_that_was_running() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut s = support::jsheets_start(vec![
        component("prints", 1, "print('a', flush=True)"),
        component("sleeps", 2, "import time\ntime.sleep(30)"),
        component("never", 3, "print('c')"),
    ]);
    s.limits = Some(Limits {
        wall_time_ms: 1000,
        ..Default::default()
    });
    let t = evaluate(&mut client, s, SECS(20)).await;
    assert_eq!(t.status_name(), "WallTimeout", "{t:#?}");
    assert_eq!(t.stdout(), "a\n", "{t:#?}");
    let errors = &t.last().error;
    assert_eq!(errors.len(), 1, "{t:#?}");
    assert_eq!(errors[0].kind, "timeout");
    assert_eq!(
        errors[0].component_id, "sleeps",
        "the timeout is reported against the wrong component: {t:#?}"
    );
}

fn shell_with_output_limit(code: &str, output_bytes: u64) -> StartEvaluationRequest {
    let mut s = start_code("shell", code);
    s.limits = Some(Limits {
        output_bytes,
        ..Default::default()
    });
    s
}

/// Output beyond `Limits.output_bytes` is dropped, the evaluation is stopped, and the
/// completion says so.
#[tokio::test]
async fn output_limit_stops_and_truncates() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let s = shell_with_output_limit(
        "i=0; while [ $i -lt 300 ]; do echo 0123456789; i=$((i+1)); done; sleep 30",
        1000,
    );
    let t = evaluate(&mut client, s, SECS(20)).await;
    assert_eq!(t.status_name(), "OutputLimit", "{t:#?}");
    assert!(t.completion().output_truncated, "{t:#?}");
    let delivered = t.stdout().len();
    assert!(
        delivered <= 1000,
        "{delivered} bytes delivered over a 1000-byte limit"
    );
    assert!(t.last().error.iter().any(|e| e.kind == "output"), "{t:#?}");
}

/// `Limits.output_bytes` caps stdout and stderr each (proto: "Cap of stdout and of
/// stderr, each").
#[tokio::test]
async fn output_limit_caps_each_stream() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    // 700 bytes on each stream: under a per-stream limit of 1000.
    let s = shell_with_output_limit(
        "i=0; while [ $i -lt 70 ]; do echo 012345678; echo 012345678 >&2; i=$((i+1)); done",
        1000,
    );
    let t = evaluate(&mut client, s, SECS(20)).await;
    let delivered = |kind: i32| -> usize {
        t.responses
            .iter()
            .flat_map(|r| &r.result)
            .filter(|r| r.kind == kind)
            .map(|r| r.output.len())
            .sum()
    };
    assert_eq!((delivered(1), delivered(2)), (700, 700), "{t:#?}");
    assert!(!t.completion().output_truncated, "{:?}", t.completion());
}

#[tokio::test]
async fn list_runtimes_shows_installed_runtimes_defaults_and_the_default() {
    let server = Server::start(&[
        ("JSHEETS_RUNTIME_EVALUATION_DEFAULT_RUNTIME", "shell"),
        (
            "JSHEETS_RUNTIME_EVALUATION_LIMITS_DEFAULTS_WALL_TIME_MS",
            "7000",
        ),
        (
            "JSHEETS_RUNTIME_EVALUATION_LIMITS_DEFAULTS_MEMORY_BYTES",
            "134217728",
        ),
    ]);
    let mut client = server.client().await;
    let mut runtimes = list_runtimes(&mut client).await;
    runtimes.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = runtimes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["openjdk-17", "python-3.11", "shell"],
        "{runtimes:#?}"
    );
    let (java, python, shell) = (&runtimes[0], &runtimes[1], &runtimes[2]);
    assert_eq!(java.access_list, "java-default");
    assert_eq!(python.access_list, "python-default");
    assert_eq!(shell.access_list, "");
    assert!(python.version.starts_with("3.11"), "{python:?}");
    assert!(!shell.version.is_empty(), "{shell:?}");
    assert_eq!(python.language, "python");
    assert_eq!(shell.language, "shell");
    assert!(shell.is_default && !python.is_default, "{runtimes:#?}");
    let expected = Limits {
        wall_time_ms: 7000,
        cpu_time_ms: 10_000,
        memory_bytes: 128 << 20,
        max_processes: 64,
        output_bytes: 1 << 20,
    };
    for r in &runtimes {
        assert_eq!(r.default_limits.as_ref(), Some(&expected), "{r:?}");
        assert!(!r.description.is_empty(), "{r:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 4. Stopping.

const SLEEPER: &str = "import time\nprint('up', flush=True)\ntime.sleep(60)";

/// Reads responses until the live output contains `text`.
async fn wait_for_output(call: &mut Call, text: &str) {
    let mut seen = String::new();
    while !seen.contains(text) {
        match call.next(SECS(20)).await {
            Ok(Some(r)) => {
                assert!(
                    r.completion.is_none(),
                    "finished early: {r:#?} (output {seen:?})"
                );
                seen.extend(r.result.iter().map(|r| r.output.as_str()));
            }
            other => panic!("no {text:?} in the output ({seen:?}): {other:?}"),
        }
    }
}

#[tokio::test]
async fn stop_kills_the_sandbox_and_ends_with_cancelled() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut call = Call::open(&mut client, Some(start(start_code("", SLEEPER))))
        .await
        .unwrap();
    wait_for_output(&mut call, "up").await;
    let running = sandbox_processes(server.pid, true);
    assert!(
        !running.is_empty(),
        "no user process found in a sb-{}-* cgroup while the evaluation runs (the check below would prove nothing)",
        server.pid
    );
    let stopped = Instant::now();
    call.send(stop()).await;
    let t = call.until_completion(SECS(10)).await;
    let took = stopped.elapsed();
    assert_eq!(t.status_name(), "Cancelled", "{t:#?}");
    assert!(
        took < SECS(3),
        "the final response took {took:?} after stop"
    );
    let left = sandbox_processes(server.pid, true);
    assert!(
        left.is_empty(),
        "after the final response, still running: {left:?} (was {running:?})"
    );
    // The stream completes after the final response.
    assert!(matches!(call.next(SECS(5)).await, Ok(None)));
}

#[tokio::test]
async fn client_cancellation_kills_the_sandbox() {
    let server = Server::start(&[]);
    let mut client = server.client().await;

    // Dropping the call (response stream and request sender).
    let mut call = Call::open(&mut client, Some(start(start_code("", SLEEPER))))
        .await
        .unwrap();
    wait_for_output(&mut call, "up").await;
    assert!(!sandbox_processes(server.pid, true).is_empty());
    drop(call);
    if let Err(left) = wait_sandboxes_gone(server.pid, SECS(5)).await {
        panic!("5 s after the client dropped the call, still running: {left:?}");
    }

    // Aborting the task that holds the call.
    let mut c = client.clone();
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut call = Call::open(&mut c, Some(start(start_code("", SLEEPER))))
            .await
            .unwrap();
        wait_for_output(&mut call, "up").await;
        up_tx.send(()).unwrap();
        std::future::pending::<()>().await;
        drop(call);
    });
    within(SECS(20), "the second evaluation starting", up_rx)
        .await
        .unwrap();
    assert!(!sandbox_processes(server.pid, true).is_empty());
    task.abort();
    let _ = task.await;
    if let Err(left) = wait_sandboxes_gone(server.pid, SECS(5)).await {
        panic!("5 s after the client task was aborted, still running: {left:?}");
    }

    // The node is fine afterwards.
    let t = evaluate(&mut client, start_code("", "print('still here')"), SECS(20)).await;
    assert_eq!(t.stdout(), "still here\n", "{t:#?}");
}

#[tokio::test]
async fn half_close_after_start_does_not_cancel() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut call = Call::open(
        &mut client,
        Some(start(start_code(
            "",
            "import time\ntime.sleep(1)\nprint('done', flush=True)",
        ))),
    )
    .await
    .unwrap();
    call.half_close();
    let t = call.until_end(SECS(20)).await;
    assert!(t.ended, "{t:#?}");
    assert_eq!(t.status_name(), "Ok", "{t:#?}");
    assert_eq!(t.stdout(), "done\n", "{t:#?}");
}

// ---------------------------------------------------------------------------------------
// 5. One evaluation at a time per stream.

#[tokio::test]
async fn second_start_while_running_is_failed_precondition() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut call = Call::open(
        &mut client,
        Some(start(start_code("shell", "echo up; sleep 60"))),
    )
    .await
    .unwrap();
    wait_for_output(&mut call, "up").await;
    call.send(start(start_code("shell", "echo second"))).await;
    let t = call.until_end(SECS(10)).await;
    let status = t.error();
    assert_eq!(status.code(), Code::FailedPrecondition, "{t:#?}");
    assert!(t.responses.iter().all(|r| r.completion.is_none()), "{t:#?}");
    // The stream is over, so nothing of the first evaluation can reach the client any
    // more: it must not keep running in the background.
    drop(call);
    if let Err(left) = wait_sandboxes_gone(server.pid, SECS(5)).await {
        panic!(
            "5 s after its stream failed with FAILED_PRECONDITION, the first evaluation still runs: {left:?}"
        );
    }
}

#[tokio::test]
async fn keep_stream_open_allows_another_start_on_the_same_stream() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let first = StartEvaluationRequest {
        keep_stream_open: true,
        ..start_code("shell", "echo one")
    };
    let mut call = Call::open(&mut client, Some(start(first))).await.unwrap();
    let t1 = call.until_completion(SECS(20)).await;
    assert_eq!(t1.status_name(), "Ok", "{t1:#?}");
    assert_eq!(t1.stdout(), "one\n");

    let second = StartEvaluationRequest {
        keep_stream_open: true,
        ..start_code("", "print('two')")
    };
    call.send(start(second)).await;
    let t2 = call.until_completion(SECS(20)).await;
    assert_eq!(t2.status_name(), "Ok", "{t2:#?}");
    assert_eq!(t2.stdout(), "two\n");
    assert_ne!(t1.completion().evaluation_id, t2.completion().evaluation_id);
    // Still open: a third start on the same stream is answered, and with nothing else
    // before its own output and completion.
    let third = StartEvaluationRequest {
        keep_stream_open: true,
        ..start_code("shell", "echo three")
    };
    call.send(start(third)).await;
    let t3 = call.until_completion(SECS(20)).await;
    assert_eq!(t3.status_name(), "Ok", "{t3:#?}");
    assert_eq!(t3.stdout(), "three\n", "{t3:#?}");
    assert_ne!(t2.completion().evaluation_id, t3.completion().evaluation_id);
    // Open until the client half-closes; then it completes.
    call.half_close();
    let rest = call.until_end(SECS(10)).await;
    assert!(rest.ended && rest.responses.is_empty(), "{rest:#?}");
}

// ---------------------------------------------------------------------------------------
// 6. Bad input.

async fn refused(
    client: &mut proto::jsheets::snippet_runtime_client::SnippetRuntimeClient<Channel>,
    r: EvaluateRequest,
) -> tonic::Status {
    let t = match Call::open(client, Some(r)).await {
        Ok(mut call) => {
            call.half_close();
            call.until_end(SECS(10)).await
        }
        Err(status) => return status,
    };
    assert!(
        t.responses.is_empty(),
        "responses before the refusal: {t:#?}"
    );
    t.error().clone()
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason() {
    let server = Server::start(&[
        ("JSHEETS_RUNTIME_EVALUATION_MAX_COMPONENTS", "3"),
        ("JSHEETS_RUNTIME_EVALUATION_MAX_CODE_BYTES", "1000"),
    ]);
    let mut client = server.client().await;

    let s = refused(&mut client, start(start_code("cobol-85", "DISPLAY 'HI'."))).await;
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert!(
        s.message().contains("shell") && s.message().contains("python-3.11"),
        "NOT_FOUND does not list the installed runtimes: {s:?}"
    );

    let with_limits = |l: Limits| StartEvaluationRequest {
        limits: Some(l),
        ..start_code("shell", "true")
    };
    let s = refused(
        &mut client,
        start(with_limits(Limits {
            memory_bytes: 64 << 30,
            ..Default::default()
        })),
    )
    .await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains("memory_bytes") && s.message().contains(&(2u64 << 30).to_string()),
        "{s:?}"
    );
    let s = refused(
        &mut client,
        start(with_limits(Limits {
            wall_time_ms: u64::MAX,
            ..Default::default()
        })),
    )
    .await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains("wall_time_ms") && s.message().contains("60000"),
        "{s:?}"
    );

    let four = support::jsheets_start(
        (1..=4)
            .map(|i| component(&format!("c{i}"), i, "true"))
            .collect(),
    );
    let s = refused(
        &mut client,
        start(StartEvaluationRequest {
            runtime: "shell".into(),
            ..four
        }),
    )
    .await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains('3'), "the bound is not named: {s:?}");

    let big = format!("echo {}", "x".repeat(1000));
    let s = refused(&mut client, start(start_code("shell", &big))).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains("1000"),
        "the bound is not named: {s:?}"
    );

    let empty = StartEvaluationRequest {
        sources: vec![],
        ..start_code("shell", "true")
    };
    let s = refused(&mut client, start(empty)).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    let s = refused(&mut client, EvaluateRequest { message: None }).await;
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");

    // None of that hurt the node.
    let t = evaluate(&mut client, start_code("shell", "echo fine"), SECS(20)).await;
    assert_eq!(t.stdout(), "fine\n", "{t:#?}");
}

// ---------------------------------------------------------------------------------------
// 7. Admission control.

#[derive(Debug)]
struct BurstResult {
    /// When the first output ("start") arrived, for evaluations that ran.
    started: Option<Duration>,
    /// When the stream ended (final response or error).
    ended: Duration,
    outcome: Result<String, tonic::Status>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_bounds_concurrency_and_refuses_quickly() {
    let server = Server::start(&[
        ("JSHEETS_RUNTIME_EVALUATION_MAX_CONCURRENT", "1"),
        ("JSHEETS_RUNTIME_EVALUATION_QUEUE_SIZE", "1"),
        ("JSHEETS_RUNTIME_EVALUATION_QUEUE_WAIT_MS", "500"),
    ]);
    let client = server.client().await;
    // Warm up (first sandbox of the node), so the burst measures admission only.
    let t = evaluate(&mut client.clone(), start_code("shell", "true"), SECS(20)).await;
    assert_eq!(t.status_name(), "Ok", "{t:#?}");

    let fired = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut call = Call::open(
                &mut c,
                Some(start(start_code("shell", "echo start; sleep 2; echo end"))),
            )
            .await
            .unwrap();
            call.half_close();
            let mut started = None;
            loop {
                match call.next(SECS(15)).await {
                    Ok(Some(r)) => {
                        if started.is_none() && r.result.iter().any(|x| x.output.contains("start"))
                        {
                            started = Some(fired.elapsed());
                        }
                        if let Some(c) = r.completion {
                            let _ = call.next(SECS(5)).await;
                            return BurstResult {
                                started,
                                ended: fired.elapsed(),
                                outcome: Ok(format!("{:?}", c.status())),
                            };
                        }
                    }
                    Ok(None) => panic!("stream ended without a completion or an error"),
                    Err(s) => {
                        return BurstResult {
                            started,
                            ended: fired.elapsed(),
                            outcome: Err(s),
                        }
                    }
                }
            }
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(within(SECS(20), "a burst evaluation", t).await.unwrap());
    }
    let ran: Vec<_> = results.iter().filter(|r| r.outcome.is_ok()).collect();
    let refusals: Vec<_> = results
        .iter()
        .filter(|r| {
            r.outcome
                .as_ref()
                .is_err_and(|s| s.code() == Code::ResourceExhausted)
        })
        .collect();
    assert_eq!(ran.len() + refusals.len(), 6, "{results:#?}");
    assert!(!ran.is_empty(), "nothing ran: {results:#?}");
    assert!(!refusals.is_empty(), "nothing was refused: {results:#?}");
    for r in &ran {
        assert_eq!(r.outcome.as_deref().unwrap(), "Ok", "{results:#?}");
    }
    for r in &refusals {
        assert!(
            r.ended < Duration::from_millis(1500),
            "a refusal came {:?} after the burst, not well before the 2 s sleeps end: {results:#?}",
            r.ended
        );
        assert!(!r.outcome.as_ref().unwrap_err().message().is_empty());
    }
    // At most one at a time: the running periods do not overlap.
    let mut periods: Vec<(Duration, Duration)> = ran
        .iter()
        .map(|r| (r.started.expect("ran without output"), r.ended))
        .collect();
    periods.sort();
    for w in periods.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping evaluations: {results:#?}");
    }

    // Still healthy, and the slot is free again.
    let mut health = HealthClient::new(server.channel().await);
    let h = within(
        NET,
        "health",
        health.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(h.status(), ServingStatus::Serving);
    let t = evaluate(
        &mut client.clone(),
        start_code("shell", "echo again"),
        SECS(20),
    )
    .await;
    assert_eq!(t.stdout(), "again\n", "{t:#?}");
}

// ---------------------------------------------------------------------------------------
// 8. Health and shutdown.

async fn health_of(
    h: &mut HealthClient<Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    within(
        NET,
        "health check",
        h.check(HealthCheckRequest {
            service: service.into(),
        }),
    )
    .await
    .map(|r| r.into_inner().status())
}

#[tokio::test]
async fn health_serving_then_drain_on_sigterm() {
    let mut server = Server::start(&[("JSHEETS_RUNTIME_SERVER_SHUTDOWN_GRACE_SECONDS", "20")]);
    let mut health = HealthClient::new(server.channel().await);
    let deadline = Instant::now() + SECS(10);
    for service in ["", "jsheets.SnippetRuntime"] {
        loop {
            if matches!(
                health_of(&mut health, service).await,
                Ok(ServingStatus::Serving)
            ) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{service:?} never became SERVING"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let mut client = server.client().await;
    let mut call = Call::open(
        &mut client,
        Some(start(start_code("shell", "echo up; sleep 2; echo done"))),
    )
    .await
    .unwrap();
    call.half_close();
    wait_for_output(&mut call, "up").await;
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);

    // Draining: reported NOT_SERVING, and new evaluations refused as UNAVAILABLE.
    let deadline = Instant::now() + SECS(2);
    for service in ["", "jsheets.SnippetRuntime"] {
        loop {
            let h = health_of(&mut health, service).await;
            if matches!(h, Ok(ServingStatus::NotServing)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{service:?} still {h:?} while draining"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let s = refused(&mut client, start(start_code("shell", "echo new"))).await;
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");

    // The running evaluation finishes normally.
    let t = call.until_end(SECS(10)).await;
    assert!(t.ended, "{t:#?}");
    assert_eq!(t.status_name(), "Ok", "{t:#?}");
    assert_eq!(t.stdout(), "done\n", "{t:#?}");

    let status = server.wait_exit(SECS(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        signalled.elapsed() < SECS(6),
        "exit took {:?} after SIGTERM",
        signalled.elapsed()
    );
    let left = sandbox_processes(server.pid, false);
    assert!(left.is_empty(), "left behind after exit: {left:?}");
}

#[tokio::test]
async fn grace_period_over_kills_running_evaluations_and_exits_zero() {
    let mut server = Server::start(&[("JSHEETS_RUNTIME_SERVER_SHUTDOWN_GRACE_SECONDS", "1")]);
    let mut client = server.client().await;
    let mut call = Call::open(
        &mut client,
        Some(start(start_code("shell", "echo up; sleep 60"))),
    )
    .await
    .unwrap();
    call.half_close();
    wait_for_output(&mut call, "up").await;
    assert!(!sandbox_processes(server.pid, true).is_empty());
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);

    let t = call.until_end(SECS(15)).await;
    let ended = signalled.elapsed();
    let status = server.wait_exit(SECS(15)).await;
    let exited = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        exited < SECS(5),
        "exit took {exited:?} after SIGTERM with a 1 s grace period"
    );
    assert!(
        ended >= Duration::from_millis(900) && ended < SECS(5),
        "the evaluation ended {ended:?} after SIGTERM (grace 1 s): {t:#?}"
    );
    // The client is told how it ended.
    assert_eq!(t.status_name(), "Cancelled", "{t:#?}");
    let left = sandbox_processes(server.pid, false);
    assert!(left.is_empty(), "left behind after exit: {left:?}");
}

// ---------------------------------------------------------------------------------------
// 9. TLS and mutual TLS.

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, ca) = Pki::authority("jsheets test CA");
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        Pki { dir, ca_pem, ca }
    }

    fn authority(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), rcgen::Issuer::new(params, key))
    }

    /// (certificate PEM, key PEM) signed by `issuer`.
    fn leaf(
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        cn: &str,
        sans: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn client(&self, cn: &str) -> Identity {
        let (cert, key) = Pki::leaf(
            &self.ca,
            cn,
            &[],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        );
        Identity::from_pem(cert, key)
    }

    /// Writes the server's certificate and key; returns their paths.
    fn server_files(&self) -> (String, String) {
        let (cert, key) = Pki::leaf(
            &self.ca,
            "jsheets-runtime",
            &["localhost"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        let c = self.dir.path().join("server.pem");
        let k = self.dir.path().join("server.key");
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (path(&c), path(&k))
    }

    fn ca_file(&self) -> String {
        path(&self.dir.path().join("ca.pem"))
    }
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A TLS channel trusting the test CA, checking the name `localhost`.
async fn tls_channel(
    server: &Server,
    ca_pem: &str,
    identity: Option<Identity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let endpoint = Endpoint::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .connect_timeout(SECS(5))
        .tls_config(tls)
        .unwrap();
    within(NET, "TLS connect", endpoint.connect()).await
}

async fn echo_over(channel: Channel) -> Transcript {
    let mut client = proto::jsheets::snippet_runtime_client::SnippetRuntimeClient::new(channel);
    evaluate(&mut client, start_code("shell", "echo secure"), SECS(20)).await
}

#[tokio::test]
async fn tls_server_evaluates_for_a_tls_client() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files();
    let server = Server::start(&[
        ("JSHEETS_RUNTIME_SERVER_TLS_CERT_FILE", &cert),
        ("JSHEETS_RUNTIME_SERVER_TLS_KEY_FILE", &key),
    ]);
    let channel = tls_channel(&server, &pki.ca_pem, None).await.unwrap();
    let t = echo_over(channel).await;
    assert_eq!(t.status_name(), "Ok", "{t:#?}");
    assert_eq!(t.stdout(), "secure\n");

    // Plaintext is not spoken.
    let plain = server.client().await;
    let mut plain = plain;
    let r = within(
        NET,
        "plaintext ListRuntimes",
        plain.list_runtimes(ListRuntimesRequest {}),
    )
    .await;
    assert!(
        r.is_err(),
        "a plaintext call succeeded on a TLS port: {r:?}"
    );
}

#[tokio::test]
async fn mutual_tls_requires_an_allowed_client_certificate() {
    let pki = Pki::new();
    let (cert, key) = pki.server_files();
    let ca = pki.ca_file();
    let server = Server::start(&[
        ("JSHEETS_RUNTIME_SERVER_TLS_CERT_FILE", &cert),
        ("JSHEETS_RUNTIME_SERVER_TLS_KEY_FILE", &key),
        ("JSHEETS_RUNTIME_SERVER_TLS_CLIENT_CA_FILE", &ca),
        ("JSHEETS_RUNTIME_SERVER_TLS_ALLOWED_CLIENTS", "backend-1"),
    ]);

    // No client certificate: refused (at the handshake or on the first call).
    match tls_channel(&server, &pki.ca_pem, None).await {
        Err(_) => {}
        Ok(channel) => {
            let t = echo_over(channel).await;
            assert!(
                t.status.is_some(),
                "a client without a certificate was served: {t:#?}"
            );
        }
    }

    // A certificate for an allowed name, but from another CA: refused.
    let (_, rogue_ca) = Pki::authority("rogue CA");
    let (rc, rk) = Pki::leaf(
        &rogue_ca,
        "backend-1",
        &[],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    match tls_channel(&server, &pki.ca_pem, Some(Identity::from_pem(rc, rk))).await {
        Err(_) => {}
        Ok(channel) => {
            let t = echo_over(channel).await;
            assert!(
                t.status.is_some(),
                "a certificate from a foreign CA was accepted: {t:#?}"
            );
        }
    }

    // Signed by the client CA, but not an allowed identity: PERMISSION_DENIED.
    let channel = tls_channel(&server, &pki.ca_pem, Some(pki.client("intruder")))
        .await
        .unwrap();
    let t = echo_over(channel.clone()).await;
    assert_eq!(t.error().code(), Code::PermissionDenied, "{t:#?}");
    assert!(t.error().message().contains("intruder"), "{t:#?}");
    let mut c = proto::jsheets::snippet_runtime_client::SnippetRuntimeClient::new(channel);
    let r = within(NET, "ListRuntimes", c.list_runtimes(ListRuntimesRequest {})).await;
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);

    // The allowed client.
    let channel = tls_channel(&server, &pki.ca_pem, Some(pki.client("backend-1")))
        .await
        .unwrap();
    let t = echo_over(channel).await;
    assert_eq!(t.status_name(), "Ok", "{t:#?}");
    assert_eq!(t.stdout(), "secure\n");
}

// ---------------------------------------------------------------------------------------
// 10. Reflection.

async fn reflection_call(
    server: &Server,
    request: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> Result<tonic_reflection::pb::v1::ServerReflectionResponse, tonic::Status> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = within(
        NET,
        "ServerReflectionInfo",
        client.server_reflection_info(tokio_stream::iter([request])),
    )
    .await?
    .into_inner();
    within(NET, "a reflection response", stream.message())
        .await?
        .ok_or_else(|| tonic::Status::unknown("no reflection response"))
}

#[tokio::test]
async fn reflection_only_when_enabled() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = Server::start(&[(
        "JSHEETS_RUNTIME_SERVER_FEATURES_ENABLE_GRPC_REFLECTION",
        "true",
    )]);
    let r = reflection_call(&server, MessageRequest::ListServices(String::new()))
        .await
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = r.message_response else {
        panic!("unexpected reflection response {r:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"jsheets.SnippetRuntime"), "{names:?}");
    let r = reflection_call(
        &server,
        MessageRequest::FileContainingSymbol("jsheets.SnippetRuntime".into()),
    )
    .await
    .unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = r.message_response else {
        panic!("unexpected reflection response {r:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    drop(server);

    let server = Server::start(&[]);
    let r = reflection_call(&server, MessageRequest::ListServices(String::new())).await;
    assert_eq!(r.unwrap_err().code(), Code::Unimplemented);
}

#[tokio::test]
async fn java_snippets_are_held_to_the_runtimes_access_list() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let t = evaluate(
        &mut client,
        start_code(
            "openjdk-17",
            "System.out.println(\"hi\");\nSystem.exit(3);\nIntConsumer quit = System::exit;",
        ),
        SECS(60),
    )
    .await;
    assert_eq!(t.stdout(), "hi\n", "{t:#?}");
    assert_eq!(t.status_name(), "Ok", "{t:#?}");
    let sandbox: Vec<_> = t
        .errors()
        .into_iter()
        .filter(|e| e.kind == "sandbox")
        .collect();
    assert_eq!(sandbox.len(), 2, "{t:#?}");
    for e in sandbox {
        assert!(
            e.message
                .contains("`java.lang.System#exit(int):void` is not allowed")
                && e.message.contains("java-default"),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn pooled_sandboxes_serve_requests_and_go_away_with_the_node() {
    let mut server = Server::start(&[(
        "JSHEETS_RUNTIME_EVALUATION_POOL",
        "{\"python-3.11\" = {size = 2, idleMemoryBytes = 134217728}}",
    )]);
    let mut client = server.client().await;
    let pool_of = |runtimes: &[proto::jsheets::RuntimeInfo]| {
        runtimes
            .iter()
            .find(|r| r.name == "python-3.11")
            .map(|r| (r.pool_size, r.pool_idle))
            .unwrap()
    };
    let deadline = std::time::Instant::now() + SECS(60);
    loop {
        let runtimes = list_runtimes(&mut client).await;
        let (size, idle) = pool_of(&runtimes);
        assert_eq!(size, 2);
        if idle == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not fill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..4 {
        let t = evaluate(
            &mut client,
            start_code("python-3.11", &format!("print({i})")),
            NET,
        )
        .await;
        assert_eq!(t.stdout(), format!("{i}\n"), "{t:#?}");
        assert_eq!(t.status_name(), "Ok");
    }
    // Every request counted as a hand-off or a miss; the first found the pool full.
    let runtimes = list_runtimes(&mut client).await;
    let python = runtimes.iter().find(|r| r.name == "python-3.11").unwrap();
    assert_eq!(python.pool_taken + python.pool_misses, 4, "{python:?}");
    assert!(python.pool_taken >= 1, "{python:?}");
    // Waiting sandboxes exist while the node runs, and none outlives it.
    assert!(!sandbox_processes(server.pid, false).is_empty());
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(SECS(20)).await.success());
    // Sandboxes torn down as the node exits may still be on their way out.
    if let Err(left) = wait_sandbox_processes_gone(server.pid, false, SECS(5)).await {
        panic!("left behind 5 s after the node exited: {left:?}");
    }
}

/// Pool size and idle count of `runtime` as `ListRuntimes` shows them.
async fn pool_of(
    client: &mut proto::jsheets::snippet_runtime_client::SnippetRuntimeClient<Channel>,
    runtime: &str,
) -> Option<(u32, u32)> {
    list_runtimes(client)
        .await
        .iter()
        .find(|r| r.name == runtime)
        .map(|r| (r.pool_size, r.pool_idle))
}

/// Waits until the pool of `runtime` is full; returns its size.
async fn wait_pool_full(
    client: &mut proto::jsheets::snippet_runtime_client::SnippetRuntimeClient<Channel>,
    runtime: &str,
) -> u32 {
    let deadline = Instant::now() + SECS(90);
    loop {
        let (size, idle) = pool_of(client, runtime).await.unwrap();
        if size > 0 && idle == size {
            return size;
        }
        assert!(
            Instant::now() < deadline,
            "the pool of {runtime} did not fill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many evaluations the node logged as served by a pre-started sandbox, and how
/// many as cold.
fn pooled_counts(server: &Server) -> (usize, usize) {
    let log = server.stderr();
    let finished = log.lines().filter(|l| l.contains("evaluation finished"));
    // A hit: a sandbox of the pool's (for Java, the compile host's program replayed in one).
    let (hits, misses): (Vec<&str>, Vec<&str>) = finished.partition(|l| {
        l.contains("path=Pooled")
            || (l.contains("path=Compiled") && !l.contains("path=CompiledCold"))
    });
    (hits.len(), misses.len())
}

#[tokio::test]
async fn default_config_pools_the_installed_runtimes_and_serves_from_them() {
    // The harness turns the defaults off; this node has the built-in configuration.
    let server = Server::start(&[("JSHEETS_RUNTIME_EVALUATION_POOL_DEFAULTS", "true")]);
    let mut client = server.client().await;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let size = wait_pool_full(&mut client, "python-3.11").await;
    let log = server.stderr();
    // The default size, unless the budget (a quarter of the machine's memory, with the
    // Java pool's compile host in it) cut it, which the node says.
    if log.contains("pool cut to fit the memory budget runtime=python-3.11") {
        assert!(
            (1..(2 * cpus).clamp(4, 16)).contains(&(size as usize)),
            "{size}"
        );
    } else {
        assert_eq!(size as usize, (2 * cpus).clamp(4, 16));
    }
    // Java too (installed and a default); `shell` is no default runtime here.
    let (java, _) = pool_of(&mut client, "openjdk-17").await.unwrap();
    if log.contains("pool cut to fit the memory budget runtime=openjdk-17") {
        assert!((0..cpus.clamp(2, 8)).contains(&(java as usize)), "{java}");
    } else {
        assert_eq!(java as usize, cpus.clamp(2, 8));
    }
    assert_eq!(pool_of(&mut client, "shell").await, Some((0, 0)));
    let log = server.stderr();
    assert!(
        log.contains("pre-started sandboxes")
            && log.contains("budget_mib=")
            && log.contains("a quarter of the node's memory"),
        "{log}"
    );
    let t = evaluate(&mut client, start_code("python-3.11", "print(6 * 7)"), NET).await;
    assert_eq!(t.stdout(), "42\n", "{t:#?}");
    assert_eq!(t.status_name(), "Ok");
    assert_eq!(pooled_counts(&server), (1, 0), "served from the pool");
}

#[tokio::test]
async fn default_java_pool_compiles_in_its_host_and_replays_in_its_sandboxes() {
    let server = Server::start(&[("JSHEETS_RUNTIME_EVALUATION_POOL_DEFAULTS", "true")]);
    let mut client = server.client().await;
    // Compiled by the pool's compile host once it is up (the pool counts no replay
    // ready before), replayed in one of the pool's sandboxes.
    wait_pool_full(&mut client, "openjdk-17").await;
    let t = evaluate(
        &mut client,
        start_code("openjdk-17", "System.out.println(6 * 7);"),
        NET,
    )
    .await;
    assert_eq!(t.stdout(), "42\n", "{t:#?}");
    assert_eq!(pooled_counts(&server), (1, 0), "served from the pool");
    let java = list_runtimes(&mut client)
        .await
        .into_iter()
        .find(|r| r.name == "openjdk-17")
        .unwrap();
    assert_eq!(
        (
            java.pool_compiled,
            java.pool_compile_fallbacks,
            java.pool_compile_host_starts
        ),
        (1, 0, 1),
        "{java:?}"
    );
}

#[tokio::test]
async fn a_burst_larger_than_the_pool_all_succeeds_with_few_cold_starts() {
    const BURST: usize = 8;
    const SIZE: usize = 2;
    let server = Server::start(&[
        (
            "JSHEETS_RUNTIME_EVALUATION_POOL",
            "{\"python-3.11\" = {size = 2}}",
        ),
        ("JSHEETS_RUNTIME_EVALUATION_MAX_CONCURRENT", "2"),
        ("JSHEETS_RUNTIME_EVALUATION_QUEUE_SIZE", "16"),
        ("JSHEETS_RUNTIME_EVALUATION_QUEUE_WAIT_MS", "60000"),
    ]);
    let mut client = server.client().await;
    assert_eq!(
        wait_pool_full(&mut client, "python-3.11").await as usize,
        SIZE
    );
    let mut burst = Vec::new();
    for i in 0..BURST {
        let mut client = server.client().await;
        burst.push(tokio::spawn(async move {
            let code = format!("print({i})");
            let t = evaluate(&mut client, start_code("python-3.11", &code), SECS(60)).await;
            (i, t)
        }));
    }
    for b in burst {
        let (i, t) = b.await.unwrap();
        assert_eq!(t.stdout(), format!("{i}\n"), "{t:#?}");
        assert_eq!(t.status_name(), "Ok");
    }
    let (hits, misses) = pooled_counts(&server);
    eprintln!("burst of {BURST}: {hits} from the pool, {misses} cold");
    assert_eq!(hits + misses, BURST);
    // The pool's sandboxes at least, and refills as they come: never all cold.
    assert!(hits >= SIZE, "{hits} from the pool, {misses} cold");
    assert!(
        misses <= BURST - SIZE,
        "{hits} from the pool, {misses} cold"
    );
    // It fills again after the burst.
    wait_pool_full(&mut client, "python-3.11").await;
}
