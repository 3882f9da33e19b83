//! Client for jsheets-runtime nodes.
//!
//! A small library for backend services and for the `jsheets-runtime` CLI:
//!
//! - [`connect`] (or [`endpoint`] for a lazily connecting channel) opens a gRPC
//!   channel to a node, over plain HTTP/2 (`http://`) or TLS (`https://`, see
//!   [`ClientTls`]);
//! - [`evaluate`] and [`evaluate_with_stop`] run one evaluation over the
//!   bidirectional `jsheets.SnippetRuntime/Evaluate` stream, reporting every
//!   response as it arrives and returning the collected outcome
//!   ([`Evaluated`]);
//! - [`list_runtimes`] calls `ListRuntimes`.
//!
//! A request may put files in the sandbox's `/work`, ask for files back (returned
//! reassembled from the node's chunks in [`Evaluated::files`], within a bound of what
//! this side holds) and name datasets of the node.
//!
//! Every call takes a deadline and is bounded by it, so a dead or stuck node
//! never hangs the caller: the call fails with [`ClientError::Timeout`] and the
//! stream is cancelled (which stops the evaluation on the node).

use std::future::{pending, Future};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::jsheets::snippet_runtime_client::SnippetRuntimeClient;
use proto::jsheets::{
    completion, evaluate_request, snippet, snippet_sources, Completion, EvaluateRequest,
    EvaluateResponse, EvaluatedSnippet, EvaluationError, EvaluationResult, File, FileCaps, Input,
    InputResult, Limits, ListRuntimesRequest, OutputMatch, RuntimeInfo, SnippetSources,
    StartEvaluationRequest, StopEvaluationRequest,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Uri};

pub use tonic::transport::Channel;
pub use tonic::{Code, Status};

/// Largest response message accepted from a node (tonic's default is 4 MiB;
/// a final response carries all values and may carry buffered output).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Interval of HTTP/2 keepalive pings while a call is in progress, so that a
/// node that vanished without closing the connection is noticed before the
/// call's deadline.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Added to a call's deadline in its `grpc-timeout` header: the node (and
/// tonic's own timer) learn about the deadline, but the local timer fires
/// first, so an expired call is always [`ClientError::Timeout`].
const DEADLINE_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for a keepalive ping's answer.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not an `http://` or `https://` URL with a host.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    /// The TLS options are inconsistent or unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The transport refused the TLS configuration (the cause says why).
    #[error("TLS configuration")]
    TlsTransport(#[source] tonic::transport::Error),
    /// A certificate or key file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The connection (TCP, TLS or HTTP/2) could not be established.
    /// Its causes (e.g. "connection refused") are its `source()` chain.
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The node answered with a gRPC error status.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
    /// The call did not finish within its deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The node broke the protocol, e.g. the stream ended without a completion.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A fleet has no node to send the evaluation to.
    #[error("no node available: {0}")]
    NoNode(String),
}

impl ClientError {
    /// The gRPC status code, if the node answered with an error status.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }

    /// True if the node could not be reached or did not answer in time, or
    /// answered that it cannot take the call now (`UNAVAILABLE`,
    /// `RESOURCE_EXHAUSTED`): another node, or a later retry, may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Timeout(_) | ClientError::NoNode(_) => true,
            ClientError::Status(s) => {
                matches!(s.code(), Code::Unavailable | Code::ResourceExhausted)
            }
            _ => false,
        }
    }

    /// True if the request itself was rejected (`INVALID_ARGUMENT`,
    /// `NOT_FOUND`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`) or the client was
    /// misconfigured (endpoint, TLS files): retrying will not help.
    pub fn is_bad_request(&self) -> bool {
        match self {
            ClientError::InvalidEndpoint { .. }
            | ClientError::Tls(_)
            | ClientError::ReadFile { .. } => true,
            ClientError::Status(s) => matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::NotFound
                    | Code::FailedPrecondition
                    | Code::OutOfRange
            ),
            _ => false,
        }
    }
}

/// The canonical gRPC name of a status code, e.g. `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

/// TLS options of a connection (PEM files).
///
/// `ca` is required for `https://` endpoints: this build has no system trust
/// roots. `cert` and `key` (a client identity, for mutual TLS) go together.
/// `domain` overrides the name the server certificate is checked against
/// (default: the endpoint's host).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub domain: Option<String>,
}

impl ClientTls {
    /// True if no option is set.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none() && self.domain.is_none()
    }

    /// Reads the files and builds tonic's TLS configuration.
    pub fn to_tls_config(&self) -> Result<ClientTlsConfig, ClientError> {
        let mut config = ClientTlsConfig::new();
        match &self.ca {
            Some(ca) => {
                let pem = read_pem(ca, "CA certificate", "CERTIFICATE-----")?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            None => {
                return Err(ClientError::Tls(
                    "a CA certificate is required for https:// (this build has no system trust \
                     roots)"
                        .into(),
                ))
            }
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(
                    read_pem(cert, "client certificate", "CERTIFICATE-----")?,
                    read_pem(key, "client key", "PRIVATE KEY-----")?,
                ));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(ClientError::Tls(
                    "a client certificate needs its key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(ClientError::Tls(
                    "a client key needs its certificate".into(),
                ))
            }
        }
        if let Some(domain) = &self.domain {
            if domain.is_empty() {
                return Err(ClientError::Tls("the TLS domain name is empty".into()));
            }
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

/// Reads a PEM file and checks that it holds a block whose label ends with
/// `label_end` (tonic silently ignores files without one).
fn read_pem(path: &Path, what: &'static str, label_end: &str) -> Result<Vec<u8>, ClientError> {
    let data = std::fs::read(path).map_err(|source| ClientError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8_lossy(&data);
    let found = text
        .lines()
        .any(|l| l.trim().starts_with("-----BEGIN ") && l.trim().ends_with(label_end));
    if !found {
        return Err(ClientError::Tls(format!(
            "{} is not a PEM {what} file",
            path.display()
        )));
    }
    Ok(data)
}

/// Builds the endpoint of a node without connecting: checks the URL
/// (`http://host:port` or `https://host:port`), applies TLS (required for
/// `https://`, refused for `http://`), the connect timeout, keepalive and
/// `TCP_NODELAY`. Use [`Endpoint::connect_lazy`] on the result for a channel
/// that connects (and reconnects) on demand, or [`connect`] to connect now.
pub fn endpoint(
    endpoint: &str,
    tls: Option<&ClientTls>,
    connect_timeout: Duration,
) -> Result<Endpoint, ClientError> {
    let invalid = |reason: String| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let uri: Uri = endpoint.parse().map_err(|e| {
        invalid(format!(
            "{e} (expected a URL such as http://127.0.0.1:8080)"
        ))
    })?;
    let secure = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => {
            return Err(invalid(format!(
                "unsupported scheme {other:?}; use http:// or https://"
            )))
        }
        None => {
            return Err(invalid(format!(
                "missing scheme; use http://{endpoint} or https://{endpoint}"
            )))
        }
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("missing host".into()));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(invalid(
            "a gRPC endpoint has no path or query; give only scheme, host and port".into(),
        ));
    }
    let tls = tls.filter(|t| !t.is_empty());
    let mut ep = Endpoint::from(uri)
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    match (secure, tls) {
        (true, Some(tls)) => {
            let config = tls.to_tls_config()?.timeout(connect_timeout);
            ep = ep.tls_config(config).map_err(ClientError::TlsTransport)?;
        }
        (true, None) => {
            return Err(ClientError::Tls(
                "an https:// endpoint needs a CA certificate (this build has no system trust \
                 roots)"
                    .into(),
            ))
        }
        (false, Some(_)) => {
            return Err(ClientError::Tls(format!(
                "TLS options given for the plain-text endpoint {endpoint}; use https://"
            )))
        }
        (false, None) => {}
    }
    Ok(ep)
}

/// Connects to a node: see [`endpoint`] for the accepted URLs and TLS rules.
/// Connecting (TCP, TLS and HTTP/2 handshakes) is bounded by
/// `connect_timeout`.
///
/// The returned channel is cheap to clone and multiplexes concurrent calls
/// over one connection; it reconnects on demand if the connection drops.
pub async fn connect(
    endpoint_url: &str,
    tls: Option<&ClientTls>,
    connect_timeout: Duration,
) -> Result<Channel, ClientError> {
    let ep = endpoint(endpoint_url, tls, connect_timeout)?;
    match tokio::time::timeout(connect_timeout, ep.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(source)) => Err(ClientError::Connect {
            endpoint: endpoint_url.to_string(),
            source,
        }),
        Err(_) => Err(ClientError::Timeout(connect_timeout)),
    }
}

fn client(channel: &Channel) -> SnippetRuntimeClient<Channel> {
    SnippetRuntimeClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Runs `fut` within `deadline`.
async fn bounded<T>(
    deadline: Duration,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(deadline, fut)
        .await
        .map_err(|_| ClientError::Timeout(deadline))?
}

// ---------------------------------------------------------------------------
// ListRuntimes
// ---------------------------------------------------------------------------

/// Lists the runtimes installed on a node (`ListRuntimes`), within `deadline`.
pub async fn list_runtimes(
    channel: &Channel,
    deadline: Duration,
) -> Result<Vec<RuntimeInfo>, ClientError> {
    let mut request = tonic::Request::new(ListRuntimesRequest {});
    request.set_timeout(deadline + DEADLINE_GRACE);
    let mut client = client(channel);
    bounded(deadline, async move {
        Ok(client.list_runtimes(request).await?.into_inner().runtimes)
    })
    .await
}

// ---------------------------------------------------------------------------
// Evaluate
// ---------------------------------------------------------------------------

/// One evaluation to run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalRequest {
    /// Runtime name as listed by `ListRuntimes`; empty selects the node's
    /// default runtime.
    pub runtime: String,
    /// Code components as `(id, code)`, run in this order and sharing state.
    /// Ids key the output and errors of each component.
    pub components: Vec<(String, String)>,
    /// Resource limits; `None`, or a field left at 0, means the node's default.
    pub limits: Option<Limits>,
    /// Bytes given on standard input, followed by end-of-file.
    pub stdin: Vec<u8>,
    /// Files put in `/work` before the code runs (names relative to `/work`).
    pub files: Vec<File>,
    /// Paths or glob patterns (relative to `/work`) of files to return.
    pub get_files: Vec<String>,
    /// Caps of returned files; `None`, or a field left at 0, means the node's default.
    pub file_caps: Option<FileCaps>,
    /// Datasets of the node to mount read-only at `/data/<name>`.
    pub datasets: Vec<String>,
    /// One program, many inputs: the components run once per input, each in a fresh
    /// sandbox ([`Evaluated::runs`]); `stdin` is then left empty.
    pub inputs: Vec<Input>,
    /// How each run's stdout is compared with its input's expected output.
    pub output_match: OutputMatch,
}

impl EvalRequest {
    /// A request for `runtime` (empty: the node's default) with no components.
    pub fn new(runtime: impl Into<String>) -> Self {
        EvalRequest {
            runtime: runtime.into(),
            ..EvalRequest::default()
        }
    }

    /// Appends a component.
    pub fn component(mut self, id: impl Into<String>, code: impl Into<String>) -> Self {
        self.components.push((id.into(), code.into()));
        self
    }

    /// Appends a file to put in `/work` (mode 0755 if `executable`, else 0644).
    pub fn file(
        mut self,
        path: impl Into<String>,
        content: impl Into<Vec<u8>>,
        executable: bool,
    ) -> Self {
        self.files.push(File {
            path: path.into(),
            content: content.into(),
            executable,
        });
        self
    }

    /// Asks for the files matching `pattern` (relative to `/work`) back.
    pub fn get(mut self, pattern: impl Into<String>) -> Self {
        self.get_files.push(pattern.into());
        self
    }

    /// Sets the caps of returned files.
    pub fn file_caps(mut self, caps: FileCaps) -> Self {
        self.file_caps = Some(caps);
        self
    }

    /// Appends a dataset of the node to mount.
    pub fn dataset(mut self, name: impl Into<String>) -> Self {
        self.datasets.push(name.into());
        self
    }

    /// Appends an input: the program runs once more, with this stdin, and its stdout
    /// is compared with `expected` if given.
    pub fn input(mut self, stdin: impl Into<Vec<u8>>, expected: Option<Vec<u8>>) -> Self {
        self.inputs.push(Input {
            stdin: stdin.into(),
            files: Vec::new(),
            expected_output: expected,
        });
        self
    }

    /// The most file content this client holds for this request: its total cap (or,
    /// at 0, [`RETURNED_BYTES_LIMIT`]) plus one chunk of slack.
    fn returned_bytes_limit(&self) -> u64 {
        let total = self
            .file_caps
            .map(|c| c.max_total_bytes)
            .filter(|&t| t > 0)
            .unwrap_or(RETURNED_BYTES_LIMIT);
        total.saturating_add(1 << 20)
    }

    /// The `start` message of this evaluation: one `SnippetSources` whose code
    /// components keep their ids and are ordered by their index.
    pub fn to_start(&self) -> StartEvaluationRequest {
        let code_components = self
            .components
            .iter()
            .enumerate()
            .map(|(i, (id, code))| snippet_sources::CodeComponent {
                id: id.clone(),
                order: i32::try_from(i).unwrap_or(i32::MAX),
                code: code.clone(),
            })
            .collect();
        // jsheets names the evaluated snippet and its sources by reference; an
        // empty reference on both keeps jsheets-style nodes matching them up.
        let reference = snippet::Reference::default();
        StartEvaluationRequest {
            snippet: Some(EvaluatedSnippet {
                reference: Some(reference.clone()),
                hash: String::new(),
                dependencies: Vec::new(),
            }),
            sources: vec![SnippetSources {
                reference: Some(reference),
                hash: String::new(),
                code_components,
            }],
            runtime: self.runtime.clone(),
            limits: self.limits,
            stdin: self.stdin.clone(),
            // One evaluation per stream: the node completes the stream right
            // after the final response.
            keep_stream_open: false,
            files: self.files.clone(),
            get_files: self.get_files.clone(),
            file_caps: self.file_caps,
            datasets: self.datasets.clone(),
            inputs: self.inputs.clone(),
            output_match: self.output_match as i32,
        }
    }
}

/// The `EvaluateRequest` that starts `req`.
fn start_message(req: &EvalRequest) -> EvaluateRequest {
    EvaluateRequest {
        message: Some(evaluate_request::Message::Start(req.to_start())),
    }
}

/// The `EvaluateRequest` that stops the running evaluation.
fn stop_message() -> EvaluateRequest {
    EvaluateRequest {
        message: Some(evaluate_request::Message::Stop(StopEvaluationRequest {})),
    }
}

/// Returned file content held for a request that names no total cap: the node's
/// default maximum (`evaluation.maxReturnedTotalBytes`). A request asking for more
/// must name its cap ([`EvalRequest::file_caps`]).
pub const RETURNED_BYTES_LIMIT: u64 = 64 << 20;
/// Longest name (or error text) of a returned file accepted from a node.
pub const RETURNED_NAME_LIMIT: usize = 4096;
/// Most returned files held for one request.
pub const RETURNED_FILES_LIMIT: usize = 100_000;

/// A file returned from the sandbox's `/work`, reassembled from its chunks. Its path
/// comes from the node: check it before using it as a path (the CLI's writer does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedFile {
    /// Relative to `/work`, as the node says.
    pub path: String,
    /// Its size in the sandbox.
    pub size: u64,
    pub content: Vec<u8>,
    /// Only the first `content.len()` bytes were returned.
    pub truncated: bool,
    /// Why the node did not return it (then `content` is empty).
    pub error: Option<String>,
}

/// One run of a many-input evaluation: its result and the files it returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub result: InputResult,
    pub files: Vec<ReturnedFile>,
}

/// Content of returned files held across all the runs of one evaluation, at most.
pub const RETURNED_BYTES_ALL_RUNS: u64 = 4 * RETURNED_BYTES_LIMIT;

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    /// Every response, in order of arrival; the last one carries the completion.
    /// Their `files` entries are left out (they are in [`Evaluated::files`]).
    pub responses: Vec<EvaluateResponse>,
    /// How the evaluation ended, from the final response.
    pub completion: Completion,
    /// Results of the final response: expression values (`INFO`) and any
    /// output reported with them. Live output is only in `responses`.
    pub results: Vec<EvaluationResult>,
    /// Errors of all responses (diagnostics, exceptions, `sandbox`,
    /// `internal`, ...), in order.
    pub errors: Vec<EvaluationError>,
    /// The files asked for, in the order the node sent them, refusals included (of a
    /// many-input evaluation: in each of its [`Evaluated::runs`]).
    pub files: Vec<ReturnedFile>,
    /// The runs of a many-input evaluation, in the order they ended.
    pub runs: Vec<Run>,
}

impl Evaluated {
    /// The completion status.
    pub fn status(&self) -> completion::Status {
        self.completion.status()
    }

    /// True if the evaluation ran to the end with status `OK` and reported no
    /// errors.
    pub fn succeeded(&self) -> bool {
        self.status() == completion::Status::Ok && self.errors.is_empty()
    }
}

/// True if `response` is live output (stdout as `INFO`, stderr as `ERROR`
/// results), i.e. not the final response.
pub fn is_live_output(response: &EvaluateResponse) -> bool {
    response.completion.is_none()
}

/// Gathers the responses of one evaluation and checks their order.
#[derive(Debug)]
struct Collector {
    responses: Vec<EvaluateResponse>,
    completion: Option<Completion>,
    results: Vec<EvaluationResult>,
    errors: Vec<EvaluationError>,
    files: Files,
    runs: Vec<Run>,
    /// Inputs of the request: the most runs there can be.
    inputs: usize,
    /// File content of finished runs.
    runs_held: u64,
}

impl Collector {
    fn new(returned_bytes_limit: u64, inputs: usize) -> Self {
        Collector {
            responses: Vec::new(),
            completion: None,
            results: Vec::new(),
            errors: Vec::new(),
            files: Files {
                limit: returned_bytes_limit,
                ..Files::default()
            },
            runs: Vec::new(),
            inputs,
            runs_held: 0,
        }
    }

    fn push(&mut self, mut response: EvaluateResponse) -> Result<(), ClientError> {
        if self.completion.is_some() {
            return Err(ClientError::Protocol(
                "a response arrived after the final one (the one with the completion)".into(),
            ));
        }
        for chunk in std::mem::take(&mut response.files) {
            self.files.push(chunk)?;
        }
        if let Some(result) = response.input_result.take() {
            self.run_ended(result)?;
        }
        if let Some(c) = &response.completion {
            self.completion = Some(c.clone());
            self.results = response.result.clone();
        }
        self.errors.extend(response.error.iter().cloned());
        self.responses.push(response);
        Ok(())
    }

    /// A run's result: the files since the previous one are its own.
    fn run_ended(&mut self, result: InputResult) -> Result<(), ClientError> {
        let bad = |what: String| Err(ClientError::Protocol(what));
        if result.index as usize >= self.inputs {
            return bad(format!(
                "a result for input {} of {}",
                result.index, self.inputs
            ));
        }
        if self.runs.iter().any(|r| r.result.index == result.index) {
            return bad(format!("input {} ended twice", result.index));
        }
        let limit = self.files.limit;
        let files = std::mem::replace(
            &mut self.files,
            Files {
                limit,
                ..Files::default()
            },
        );
        let files = files.finish()?;
        let held: u64 = files.iter().map(|f| f.content.len() as u64).sum::<u64>()
            + (result.stdout.len() + result.stderr.len()) as u64;
        self.runs_held = self.runs_held.saturating_add(held);
        if self.runs_held > RETURNED_BYTES_ALL_RUNS {
            return bad(format!(
                "the runs returned more than {RETURNED_BYTES_ALL_RUNS} bytes of output and files"
            ));
        }
        self.runs.push(Run { result, files });
        Ok(())
    }

    fn finish(self) -> Result<Evaluated, ClientError> {
        let completion = self.completion.ok_or_else(|| {
            ClientError::Protocol(format!(
                "the stream ended without a completion (after {} responses)",
                self.responses.len()
            ))
        })?;
        Ok(Evaluated {
            responses: self.responses,
            completion,
            results: self.results,
            errors: self.errors,
            files: self.files.finish()?,
            runs: self.runs,
        })
    }
}

/// Returned files reassembled from their chunks: each file's chunks at contiguous
/// offsets from 0, up to the one marked `last`; no file twice; no more content than
/// `limit` and no more than [`RETURNED_FILES_LIMIT`] files, whatever the node sends.
#[derive(Debug, Default)]
struct Files {
    done: Vec<ReturnedFile>,
    /// Files whose last chunk has not come yet, by path.
    open: std::collections::HashMap<String, ReturnedFile>,
    /// Paths seen, finished or not.
    seen: std::collections::HashSet<String>,
    held: u64,
    limit: u64,
}

impl Files {
    fn push(&mut self, chunk: proto::jsheets::ReturnedFile) -> Result<(), ClientError> {
        let bad = |what: String| Err(ClientError::Protocol(what));
        if chunk.path.len() > RETURNED_NAME_LIMIT || chunk.error.len() > RETURNED_NAME_LIMIT {
            return bad(format!(
                "a returned file's name or error is over {RETURNED_NAME_LIMIT} bytes"
            ));
        }
        let path = chunk.path;
        self.held = self
            .held
            .saturating_add((chunk.content.len() + path.len() + chunk.error.len()) as u64);
        if self.held > self.limit {
            return bad(format!(
                "the node returned more than {} bytes of files (at {path:?})",
                self.limit
            ));
        }
        let mut file = match self.open.remove(&path) {
            Some(file) => file,
            None if self.seen.contains(&path) => {
                return bad(format!("file {path:?} was returned twice"));
            }
            None => {
                if self.seen.len() >= RETURNED_FILES_LIMIT {
                    return bad(format!(
                        "the node returned more than {RETURNED_FILES_LIMIT} files"
                    ));
                }
                self.seen.insert(path.clone());
                ReturnedFile {
                    path: path.clone(),
                    size: chunk.size,
                    content: Vec::new(),
                    truncated: chunk.truncated,
                    error: None,
                }
            }
        };
        let expected = file.content.len() as u64;
        if chunk.offset != expected {
            return bad(format!(
                "a chunk of file {path:?} at offset {}, expected {expected} (a gap or chunks out of order)",
                chunk.offset
            ));
        }
        file.content.extend_from_slice(&chunk.content);
        file.truncated |= chunk.truncated;
        if !chunk.error.is_empty() {
            file.error = Some(chunk.error);
        }
        if chunk.last {
            self.done.push(file);
        } else {
            self.open.insert(path, file);
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<ReturnedFile>, ClientError> {
        let mut open: Vec<&String> = self.open.keys().collect();
        open.sort();
        match open.first() {
            Some(path) => Err(ClientError::Protocol(format!(
                "file {path:?} ended without its last chunk"
            ))),
            None => Ok(self.done),
        }
    }
}

/// Runs one evaluation within `deadline`.
///
/// Opens the `Evaluate` stream, sends one `start` built from `req`, and keeps
/// the request side open until the node completes the response stream.
/// `on_event` is called with every response as it arrives (live output
/// first, see [`is_live_output`], then the final response). Fails with
/// [`ClientError::Status`] if the node answers with an error status,
/// [`ClientError::Timeout`] after `deadline` (the stream is then cancelled,
/// which stops the evaluation on the node), and [`ClientError::Protocol`] if
/// the stream ends without a final response.
pub async fn evaluate<F>(
    channel: &Channel,
    req: &EvalRequest,
    deadline: Duration,
    on_event: F,
) -> Result<Evaluated, ClientError>
where
    F: FnMut(&EvaluateResponse),
{
    run(channel, req, deadline, None, on_event).await
}

/// Like [`evaluate`], and sends `stop` when `stop` fires (a value is sent on
/// its sender); the node then ends the evaluation, normally with status
/// `CANCELLED`, and the call returns as usual. Dropping the sender without
/// sending does not stop the evaluation.
pub async fn evaluate_with_stop<F>(
    channel: &Channel,
    req: &EvalRequest,
    deadline: Duration,
    stop: oneshot::Receiver<()>,
    on_event: F,
) -> Result<Evaluated, ClientError>
where
    F: FnMut(&EvaluateResponse),
{
    run(channel, req, deadline, Some(stop), on_event).await
}

/// Resolves when `stop` fires: true if a value was sent, false if the sender
/// was dropped. Never resolves for `None`.
async fn stop_fired(stop: &mut Option<oneshot::Receiver<()>>) -> bool {
    match stop {
        Some(rx) => rx.await.is_ok(),
        None => pending().await,
    }
}

async fn run<F>(
    channel: &Channel,
    req: &EvalRequest,
    deadline: Duration,
    mut stop: Option<oneshot::Receiver<()>>,
    mut on_event: F,
) -> Result<Evaluated, ClientError>
where
    F: FnMut(&EvaluateResponse),
{
    // Room for the start and the stop message: sending never waits.
    let (tx, rx) = mpsc::channel(2);
    tx.try_send(start_message(req))
        .map_err(|e| ClientError::Protocol(format!("queueing the start message: {e}")))?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.set_timeout(deadline + DEADLINE_GRACE);
    let mut client = client(channel);
    bounded(deadline, async move {
        let mut responses = client.evaluate(request).await?.into_inner();
        let mut collector = Collector::new(req.returned_bytes_limit(), req.inputs.len());
        loop {
            tokio::select! {
                fired = stop_fired(&mut stop), if stop.is_some() => {
                    stop = None;
                    if fired {
                        tracing::debug!("stopping the evaluation");
                        // Fails only if the request stream is already gone,
                        // and then the response stream ends by itself.
                        let _ = tx.try_send(stop_message());
                    }
                }
                message = responses.message() => match message? {
                    Some(response) => {
                        on_event(&response);
                        collector.push(response)?;
                    }
                    None => break,
                },
            }
        }
        // The request side stays open until the node has completed the
        // response stream; dropping it now half-closes it.
        drop(tx);
        collector.finish()
    })
    .await
}

pub mod fleet;
pub use fleet::{Fleet, FleetOptions, NodeStatus};

#[cfg(test)]
mod tests;
