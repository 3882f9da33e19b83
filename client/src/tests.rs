//! Tests: request building and configuration checks, then calls against an
//! in-process mock node (plain and TLS).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use proto::jsheets::evaluation_result::Kind;
use proto::jsheets::snippet_runtime_server::{SnippetRuntime, SnippetRuntimeServer};
use proto::jsheets::{ListRuntimesResponse, RuntimeRef};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::transport::{Server, ServerTlsConfig};

use super::*;

const SECOND: Duration = Duration::from_secs(1);

// --- request building -------------------------------------------------------

#[test]
fn start_message_keeps_component_ids_and_order() {
    let req = EvalRequest {
        runtime: "python-3.11".into(),
        components: vec![
            ("b".into(), "x = 1".into()),
            ("a".into(), "print(x)".into()),
            ("c".into(), String::new()),
        ],
        limits: Some(Limits {
            wall_time_ms: 5000,
            memory_bytes: 64 << 20,
            ..Limits::default()
        }),
        stdin: b"input\n".to_vec(),
        ..EvalRequest::default()
    };
    let Some(evaluate_request::Message::Start(start)) = start_message(&req).message else {
        panic!("not a start message");
    };
    assert_eq!(start.runtime, "python-3.11");
    assert_eq!(start.limits, req.limits);
    assert_eq!(start.stdin, b"input\n");
    assert_eq!(start.sources.len(), 1);
    let got: Vec<(&str, i32, &str)> = start.sources[0]
        .code_components
        .iter()
        .map(|c| (c.id.as_str(), c.order, c.code.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![("b", 0, "x = 1"), ("a", 1, "print(x)"), ("c", 2, "")]
    );
    assert_eq!(
        start.snippet.and_then(|s| s.reference),
        start.sources[0].reference
    );
}

#[test]
fn builder_appends_components() {
    let req = EvalRequest::new("")
        .component("e1", "1")
        .component("e2", "2");
    assert_eq!(req.runtime, "");
    assert_eq!(
        req.components,
        vec![("e1".into(), "1".into()), ("e2".into(), "2".into())]
    );
    assert!(req.limits.is_none());
    assert!(matches!(
        stop_message().message,
        Some(evaluate_request::Message::Stop(_))
    ));
}

// --- endpoints and TLS ------------------------------------------------------

fn endpoint_err(url: &str, tls: Option<&ClientTls>) -> ClientError {
    match endpoint(url, tls, SECOND) {
        Ok(_) => panic!("{url} accepted"),
        Err(e) => e,
    }
}

#[test]
fn endpoint_urls() {
    assert!(endpoint("http://127.0.0.1:8080", None, SECOND).is_ok());
    assert!(endpoint("http://runtime-1:8080/", None, SECOND).is_ok());
    assert!(endpoint("http://[::1]:8080", None, SECOND).is_ok());
    // An all-empty TLS configuration is no TLS configuration.
    assert!(endpoint("http://localhost:8080", Some(&ClientTls::default()), SECOND).is_ok());
    for url in [
        "127.0.0.1:8080",
        "localhost:8080",
        "ftp://host:21",
        "unix:///run/x.sock",
        "http://host:8080/jsheets",
        "http://host:8080/?x=1",
        "",
        "http://",
    ] {
        let e = endpoint_err(url, None);
        assert!(
            matches!(e, ClientError::InvalidEndpoint { .. }),
            "{url}: {e}"
        );
        assert!(e.is_bad_request());
    }
    let e = endpoint_err("localhost:8080", None);
    assert!(e.to_string().contains("http://localhost:8080"), "{e}");
}

#[test]
fn tls_rules() {
    // https needs a CA; http refuses TLS options.
    assert!(matches!(
        endpoint_err("https://host:8443", None),
        ClientError::Tls(_)
    ));
    let only_domain = ClientTls {
        domain: Some("runtime".into()),
        ..ClientTls::default()
    };
    assert!(matches!(
        endpoint_err("https://host:8443", Some(&only_domain)),
        ClientError::Tls(_)
    ));
    let e = endpoint_err("http://host:8080", Some(&only_domain));
    assert!(matches!(e, ClientError::Tls(_)) && e.to_string().contains("https://"));
}

#[test]
fn tls_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let tls = ClientTls {
        ca: Some(missing.clone()),
        ..ClientTls::default()
    };
    match endpoint_err("https://host:8443", Some(&tls)) {
        ClientError::ReadFile { what, path, .. } => {
            assert_eq!(what, "CA certificate");
            assert_eq!(path, missing);
        }
        e => panic!("unexpected {e}"),
    }

    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, generate_ca().0).unwrap();
    let cert_only = ClientTls {
        ca: Some(ca.clone()),
        cert: Some(ca.clone()),
        ..ClientTls::default()
    };
    assert!(matches!(
        endpoint_err("https://host:8443", Some(&cert_only)),
        ClientError::Tls(_)
    ));
    let key_only = ClientTls {
        ca: Some(ca.clone()),
        key: Some(ca.clone()),
        ..ClientTls::default()
    };
    assert!(matches!(
        endpoint_err("https://host:8443", Some(&key_only)),
        ClientError::Tls(_)
    ));
    let missing_key = ClientTls {
        ca: Some(ca.clone()),
        cert: Some(ca.clone()),
        key: Some(missing),
        ..ClientTls::default()
    };
    assert!(matches!(
        endpoint_err("https://host:8443", Some(&missing_key)),
        ClientError::ReadFile {
            what: "client key",
            ..
        }
    ));
    let good = ClientTls {
        ca: Some(ca),
        ..ClientTls::default()
    };
    assert!(endpoint("https://host:8443", Some(&good), SECOND).is_ok());
}

#[test]
fn garbage_ca_is_a_tls_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let tls = ClientTls {
        ca: Some(ca),
        ..ClientTls::default()
    };
    assert!(matches!(
        endpoint_err("https://host:8443", Some(&tls)),
        ClientError::Tls(_)
    ));
}

// --- response collection ----------------------------------------------------

fn result(component: &str, kind: Kind, output: &str) -> EvaluationResult {
    EvaluationResult {
        component_id: component.into(),
        kind: kind.into(),
        output: output.into(),
    }
}

fn live(component: &str, kind: Kind, output: &str) -> EvaluateResponse {
    EvaluateResponse {
        result: vec![result(component, kind, output)],
        ..EvaluateResponse::default()
    }
}

fn completion(status: completion::Status) -> Completion {
    Completion {
        status: status.into(),
        service_id: "node-1".into(),
        runtime: Some(RuntimeRef {
            name: "python-3.11".into(),
            version: "3.11.2".into(),
        }),
        ..Completion::default()
    }
}

fn error(component: &str, kind: &str) -> EvaluationError {
    EvaluationError {
        component_id: component.into(),
        kind: kind.into(),
        message: "boom".into(),
        span: None,
    }
}

fn final_response(status: completion::Status) -> EvaluateResponse {
    EvaluateResponse {
        result: vec![result("e2", Kind::Info, "2")],
        error: vec![error("e2", "exception")],
        completion: Some(completion(status)),
        ..EvaluateResponse::default()
    }
}

#[test]
fn collector_keeps_final_results_and_all_errors() {
    let mut c = Collector::new(RETURNED_BYTES_LIMIT, 0);
    c.push(live("e1", Kind::Info, "out\n")).unwrap();
    let mut with_error = live("e1", Kind::Error, "err\n");
    with_error.error.push(error("e1", "internal"));
    c.push(with_error).unwrap();
    c.push(final_response(completion::Status::Ok)).unwrap();
    let e = c.finish().unwrap();
    assert_eq!(e.responses.len(), 3);
    assert_eq!(e.results, vec![result("e2", Kind::Info, "2")]);
    let kinds: Vec<&str> = e.errors.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["internal", "exception"]);
    assert_eq!(e.status(), completion::Status::Ok);
    assert!(!e.succeeded());
}

#[test]
fn collector_protocol_errors() {
    let mut c = Collector::new(RETURNED_BYTES_LIMIT, 0);
    c.push(live("e1", Kind::Info, "out")).unwrap();
    assert!(matches!(c.finish(), Err(ClientError::Protocol(_))));
    assert!(matches!(
        Collector::new(RETURNED_BYTES_LIMIT, 0).finish(),
        Err(ClientError::Protocol(_))
    ));
    let mut c = Collector::new(RETURNED_BYTES_LIMIT, 0);
    c.push(final_response(completion::Status::Ok)).unwrap();
    assert!(matches!(
        c.push(live("e1", Kind::Info, "late")),
        Err(ClientError::Protocol(_))
    ));
}

#[test]
fn builder_carries_files_patterns_caps_and_datasets() {
    let req = EvalRequest::new("shell")
        .component("e1", "true")
        .file("in/run.sh", b"echo hi\n".to_vec(), true)
        .get("out/*.txt")
        .file_caps(proto::jsheets::FileCaps {
            max_file_bytes: 10,
            max_total_bytes: 100,
            refuse_oversized: true,
        })
        .dataset("prices");
    let start = req.to_start();
    assert_eq!(start.files.len(), 1);
    assert_eq!(start.files[0].path, "in/run.sh");
    assert!(start.files[0].executable);
    assert_eq!(start.get_files, ["out/*.txt"]);
    assert_eq!(start.file_caps.unwrap().max_total_bytes, 100);
    assert_eq!(start.datasets, ["prices"]);
    assert_eq!(req.returned_bytes_limit(), 100 + (1 << 20));
    assert_eq!(
        EvalRequest::new("").returned_bytes_limit(),
        RETURNED_BYTES_LIMIT + (1 << 20)
    );
}

fn chunk(path: &str, offset: u64, content: &[u8], last: bool) -> proto::jsheets::ReturnedFile {
    proto::jsheets::ReturnedFile {
        path: path.into(),
        size: 6,
        content: content.to_vec(),
        offset,
        truncated: false,
        error: String::new(),
        last,
    }
}

fn files_response(chunks: Vec<proto::jsheets::ReturnedFile>) -> EvaluateResponse {
    EvaluateResponse {
        files: chunks,
        ..EvaluateResponse::default()
    }
}

#[test]
fn collector_reassembles_returned_files_and_keeps_them_out_of_responses() {
    let mut c = Collector::new(RETURNED_BYTES_LIMIT, 0);
    c.push(live("e1", Kind::Info, "out\n")).unwrap();
    c.push(files_response(vec![chunk("a", 0, b"abc", false)]))
        .unwrap();
    let mut refused = chunk("b", 0, b"", true);
    refused.error = "over its cap".into();
    let mut last = final_response(completion::Status::Ok);
    last.files = vec![chunk("a", 3, b"def", true), refused];
    c.push(last).unwrap();
    let e = c.finish().unwrap();
    assert_eq!(e.files.len(), 2);
    assert_eq!(e.files[0].path, "a");
    assert_eq!(e.files[0].content, b"abcdef");
    assert_eq!(e.files[1].error.as_deref(), Some("over its cap"));
    assert!(e.responses.iter().all(|r| r.files.is_empty()));
}

#[test]
fn collector_refuses_gaps_repeats_unfinished_files_and_too_much() {
    let protocol = |r: Result<(), ClientError>| match r {
        Err(ClientError::Protocol(m)) => m,
        other => panic!("expected a protocol error, got {other:?}"),
    };
    let mut c = Collector::new(RETURNED_BYTES_LIMIT, 0);
    c.push(files_response(vec![chunk("a", 0, b"abc", false)]))
        .unwrap();
    assert_eq!(
        protocol(c.push(files_response(vec![chunk("a", 4, b"ef", true)]))),
        "a chunk of file \"a\" at offset 4, expected 3 (a gap or chunks out of order)"
    );
    let mut c = Collector::new(RETURNED_BYTES_LIMIT, 0);
    c.push(files_response(vec![chunk("a", 0, b"abc", true)]))
        .unwrap();
    assert_eq!(
        protocol(c.push(files_response(vec![chunk("a", 0, b"abc", true)]))),
        "file \"a\" was returned twice"
    );
    let mut c = Collector::new(RETURNED_BYTES_LIMIT, 0);
    c.push(files_response(vec![chunk("a", 0, b"abc", false)]))
        .unwrap();
    c.push(final_response(completion::Status::Ok)).unwrap();
    match c.finish() {
        Err(ClientError::Protocol(m)) => assert_eq!(m, "file \"a\" ended without its last chunk"),
        other => panic!("{other:?}"),
    }
    let mut c = Collector::new(5, 0);
    assert_eq!(
        protocol(c.push(files_response(vec![
            chunk("a", 0, b"abc", true),
            chunk("b", 0, b"abc", true)
        ]))),
        "the node returned more than 5 bytes of files (at \"b\")"
    );
}

#[test]
fn error_classification() {
    let s = ClientError::from(Status::resource_exhausted("busy"));
    assert_eq!(s.code(), Some(Code::ResourceExhausted));
    assert!(s.is_unavailable() && !s.is_bad_request());
    let s = ClientError::from(Status::not_found("no runtime \"x\""));
    assert!(s.is_bad_request() && !s.is_unavailable());
    assert_eq!(s.to_string(), "NOT_FOUND: no runtime \"x\"");
    assert!(ClientError::Timeout(SECOND).is_unavailable());
    assert!(!ClientError::Protocol("x".into()).is_unavailable());
}

// --- mock node --------------------------------------------------------------

/// What the mock node does with an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Script {
    /// Live output, then a final response; reports in `evaluation_id` whether
    /// the client had half-closed before the final response ("open" or
    /// "half-closed").
    Normal,
    /// Waits for `stop`, then completes with CANCELLED.
    UntilStop,
    /// Never answers.
    Hang,
    /// Rejects the start with INVALID_ARGUMENT.
    Reject,
    /// Ends the stream after live output, without a completion.
    NoCompletion,
}

#[derive(Debug)]
struct Mock {
    script: Script,
    /// Start requests received.
    starts: Arc<Mutex<Vec<StartEvaluationRequest>>>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EvaluateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SnippetRuntime for Mock {
    type EvaluateStream = ResponseStream;

    async fn evaluate(
        &self,
        request: tonic::Request<tonic::Streaming<EvaluateRequest>>,
    ) -> Result<tonic::Response<ResponseStream>, Status> {
        let mut inbound = request.into_inner();
        let start = match inbound.message().await? {
            Some(EvaluateRequest {
                message: Some(evaluate_request::Message::Start(start)),
            }) => start,
            _ => return Err(Status::invalid_argument("expected start")),
        };
        self.starts.lock().unwrap().push(start);
        let script = self.script;
        if script == Script::Reject {
            return Err(Status::invalid_argument("unknown runtime \"nope\""));
        }
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            match script {
                Script::Normal => {
                    let _ = tx.send(Ok(live("e1", Kind::Info, "hello\n"))).await;
                    let _ = tx.send(Ok(live("e1", Kind::Error, "warn\n"))).await;
                    let next =
                        tokio::time::timeout(Duration::from_millis(100), inbound.message()).await;
                    let state = match next {
                        Err(_) => "open",
                        Ok(_) => "half-closed",
                    };
                    let mut last = final_response(completion::Status::Ok);
                    last.error.clear();
                    if let Some(c) = &mut last.completion {
                        c.evaluation_id = state.into();
                    }
                    let _ = tx.send(Ok(last)).await;
                }
                Script::UntilStop => {
                    let _ = tx.send(Ok(live("e1", Kind::Info, "running\n"))).await;
                    let got_stop = matches!(
                        inbound.message().await,
                        Ok(Some(EvaluateRequest {
                            message: Some(evaluate_request::Message::Stop(_))
                        }))
                    );
                    let mut c = completion(if got_stop {
                        completion::Status::Cancelled
                    } else {
                        completion::Status::InternalError
                    });
                    c.evaluation_id = "stopped".into();
                    let _ = tx
                        .send(Ok(EvaluateResponse {
                            completion: Some(c),
                            ..EvaluateResponse::default()
                        }))
                        .await;
                }
                Script::Hang => {
                    // Keep the stream open until the client goes away.
                    tx.closed().await;
                }
                Script::NoCompletion => {
                    let _ = tx.send(Ok(live("e1", Kind::Info, "partial\n"))).await;
                }
                Script::Reject => {}
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_runtimes(
        &self,
        _request: tonic::Request<ListRuntimesRequest>,
    ) -> Result<tonic::Response<ListRuntimesResponse>, Status> {
        if self.script == Script::Hang {
            pending::<()>().await;
        }
        Ok(tonic::Response::new(ListRuntimesResponse {
            runtimes: vec![RuntimeInfo {
                name: "python-3.11".into(),
                version: "3.11.2".into(),
                language: "python".into(),
                is_default: true,
                ..RuntimeInfo::default()
            }],
        }))
    }
}

/// Starts a mock node on a free local port.
async fn serve(
    script: Script,
    tls: Option<ServerTlsConfig>,
) -> (SocketAddr, Arc<Mutex<Vec<StartEvaluationRequest>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let mock = Mock {
        script,
        starts: starts.clone(),
    };
    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).unwrap();
    }
    tokio::spawn(
        server
            .add_service(SnippetRuntimeServer::new(mock))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, starts)
}

async fn channel(script: Script) -> (Channel, Arc<Mutex<Vec<StartEvaluationRequest>>>) {
    let (addr, starts) = serve(script, None).await;
    let channel = connect(&format!("http://{addr}"), None, SECOND)
        .await
        .unwrap();
    (channel, starts)
}

fn request() -> EvalRequest {
    EvalRequest::new("python-3.11")
        .component("e1", "print('hello')")
        .component("e2", "1 + 1")
}

#[tokio::test]
async fn evaluates_and_reports_every_response() {
    let (channel, starts) = channel(Script::Normal).await;
    let mut seen = Vec::new();
    let e = evaluate(&channel, &request(), 5 * SECOND, |r| {
        seen.push((
            is_live_output(r),
            r.result.first().map(|x| x.output.clone()),
        ))
    })
    .await
    .unwrap();
    assert_eq!(
        seen,
        vec![
            (true, Some("hello\n".into())),
            (true, Some("warn\n".into())),
            (false, Some("2".into())),
        ]
    );
    assert!(e.succeeded());
    assert_eq!(e.results, vec![result("e2", Kind::Info, "2")]);
    assert_eq!(e.responses.len(), 3);
    assert_eq!(e.completion.service_id, "node-1");
    // The request stream stayed open while the node was working.
    assert_eq!(e.completion.evaluation_id, "open");
    let starts = starts.lock().unwrap();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].runtime, "python-3.11");
    assert_eq!(starts[0].sources[0].code_components.len(), 2);
}

#[tokio::test]
async fn stop_is_sent_when_triggered() {
    let (channel, _) = channel(Script::UntilStop).await;
    let (stop_tx, stop_rx) = oneshot::channel();
    let mut stop_tx = Some(stop_tx);
    let e = evaluate_with_stop(&channel, &request(), 5 * SECOND, stop_rx, |r| {
        if is_live_output(r) {
            if let Some(tx) = stop_tx.take() {
                tx.send(()).unwrap();
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(e.status(), completion::Status::Cancelled);
    assert_eq!(e.completion.evaluation_id, "stopped");
}

#[tokio::test]
async fn dropped_stop_sender_does_not_stop() {
    let (channel, _) = channel(Script::UntilStop).await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    drop(stop_tx);
    let e = evaluate_with_stop(
        &channel,
        &request(),
        Duration::from_millis(500),
        stop_rx,
        |_| {},
    )
    .await;
    assert!(matches!(e, Err(ClientError::Timeout(_))), "{e:?}");
}

#[tokio::test]
async fn a_hanging_node_times_out() {
    let (channel, _) = channel(Script::Hang).await;
    let started = std::time::Instant::now();
    let deadline = Duration::from_millis(300);
    let e = evaluate(&channel, &request(), deadline, |_| {}).await;
    assert!(
        matches!(e, Err(ClientError::Timeout(d)) if d == deadline),
        "{e:?}"
    );
    assert!(started.elapsed() < 3 * SECOND);
    let e = list_runtimes(&channel, deadline).await;
    assert!(matches!(e, Err(ClientError::Timeout(_))), "{e:?}");
}

#[tokio::test]
async fn status_codes_are_kept() {
    let (channel, _) = channel(Script::Reject).await;
    let e = evaluate(&channel, &request(), 5 * SECOND, |_| {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument));
    assert!(e.to_string().contains("unknown runtime"), "{e}");
}

#[tokio::test]
async fn missing_completion_is_a_protocol_error() {
    let (channel, _) = channel(Script::NoCompletion).await;
    let mut events = 0;
    let e = evaluate(&channel, &request(), 5 * SECOND, |_| events += 1).await;
    assert!(matches!(e, Err(ClientError::Protocol(_))), "{e:?}");
    assert_eq!(events, 1);
}

#[tokio::test]
async fn lists_runtimes() {
    let (channel, _) = channel(Script::Normal).await;
    let runtimes = list_runtimes(&channel, 5 * SECOND).await.unwrap();
    assert_eq!(runtimes.len(), 1);
    assert_eq!(runtimes[0].name, "python-3.11");
    assert!(runtimes[0].is_default);
}

#[tokio::test]
async fn refused_connection_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let e = connect(&format!("http://{addr}"), None, SECOND)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e.is_unavailable());
}

// --- TLS --------------------------------------------------------------------

/// A CA certificate and key (PEM).
fn generate_ca() -> (String, rcgen::KeyPair, rcgen::CertificateParams) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key, params)
}

/// A certificate for `names` signed by the CA, and its key (PEM).
fn generate_leaf(
    ca_key: &rcgen::KeyPair,
    ca_params: &rcgen::CertificateParams,
    names: &[&str],
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let issuer = rcgen::Issuer::from_params(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, ca_key, ca_params) = generate_ca();
    let (server_cert, server_key) = generate_leaf(&ca_key, &ca_params, &["runtime.test"]);
    let (client_cert, client_key) = generate_leaf(&ca_key, &ca_params, &["backend"]);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let tls = ClientTls {
        ca: Some(write("ca.pem", &ca_pem)),
        cert: Some(write("client.pem", &client_cert)),
        key: Some(write("client.key", &client_key)),
        domain: Some("runtime.test".into()),
    };
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server_cert, &server_key))
        .client_ca_root(Certificate::from_pem(&ca_pem));
    let (addr, _) = serve(Script::Normal, Some(server_tls)).await;
    let url = format!("https://{addr}");

    let channel = connect(&url, Some(&tls), 5 * SECOND).await.unwrap();
    let e = evaluate(&channel, &request(), 5 * SECOND, |_| {})
        .await
        .unwrap();
    assert!(e.succeeded());

    // The server's certificate does not name 127.0.0.1.
    let no_domain = ClientTls {
        domain: None,
        ..tls.clone()
    };
    let e = connect(&url, Some(&no_domain), 5 * SECOND)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");

    // The server requires a client certificate.
    let anonymous = ClientTls {
        cert: None,
        key: None,
        ..tls.clone()
    };
    let outcome = match connect(&url, Some(&anonymous), 5 * SECOND).await {
        Err(e) => Err(e),
        // TLS 1.3 reports the rejected client certificate only on first use.
        Ok(channel) => evaluate(&channel, &request(), 5 * SECOND, |_| {}).await,
    };
    assert!(outcome.is_err(), "{outcome:?}");
}
