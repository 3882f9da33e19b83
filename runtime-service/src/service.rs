//! The `jsheets.SnippetRuntime` gRPC service: requests validated against the node's
//! bounds, admission control, one sandbox per `start`, live output coalesced and
//! streamed, a final response with values, diagnostics, exceptions, limit hits and
//! the completion message. Every error becomes a gRPC status in one place
//! ([`ServiceError`] → [`Status`]).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use evaluator::access::catalog::Catalog;
use evaluator::access::AccessList;
use evaluator::evaluate::{self, Component, Output};
use evaluator::pool::{Pool, PoolSettings};
use evaluator::runtime::{Registry, Runtime};
use evaluator::sandbox::{Limits, Outcome, Sandboxes, Status as SandboxStatus};
use proto::jsheets::completion::Status as WireStatus;
use proto::jsheets::evaluate_request::Message;
use proto::jsheets::evaluation_result::Kind as ResultKind;
use proto::jsheets::snippet_runtime_server::SnippetRuntime;
use proto::jsheets::{
    CodeSpan, Completion, EvaluateRequest, EvaluateResponse, EvaluationError, EvaluationResult,
    ListRuntimesRequest, ListRuntimesResponse, RuntimeInfo, RuntimeRef, StartEvaluationRequest,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::config::{EvaluationConfig, LimitValues};
use crate::metrics::{EvaluationRecord, Metrics, Verdict};

/// Everything that can go wrong before or around an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("an evaluation is already running on this stream; send `stop` or wait for its final response")]
    AlreadyRunning,
    #[error("{0}")]
    Exhausted(String),
    #[error("the node is shutting down")]
    Draining,
    #[error("the node is still loading its runtimes")]
    NotReady,
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        let message = e.to_string();
        match e {
            ServiceError::InvalidArgument(_) => Status::invalid_argument(message),
            ServiceError::NotFound(_) => Status::not_found(message),
            ServiceError::AlreadyRunning => Status::failed_precondition(message),
            ServiceError::Exhausted(_) => Status::resource_exhausted(message),
            ServiceError::Draining | ServiceError::NotReady => Status::unavailable(message),
        }
    }
}

/// At most `max_concurrent` evaluations at once, a bounded queue waiting a bounded
/// time, and a memory budget so that the sum of the admitted evaluations' memory
/// limits always fits the node.
#[derive(Debug)]
pub struct Admission {
    max_concurrent: usize,
    slots: Arc<Semaphore>,
    memory_mib: Arc<Semaphore>,
    budget_mib: u32,
    queue_size: usize,
    waiting: AtomicUsize,
    wait: Duration,
}

/// What an admitted evaluation holds until it ends.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(
        max_concurrent: usize,
        queue_size: usize,
        wait: Duration,
        budget_bytes: u64,
    ) -> Self {
        let budget_mib = u32::try_from(budget_bytes >> 20).unwrap_or(u32::MAX).max(1);
        Admission {
            max_concurrent: max_concurrent.max(1),
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            memory_mib: Arc::new(Semaphore::new(budget_mib as usize)),
            budget_mib,
            queue_size,
            waiting: AtomicUsize::new(0),
            wait,
        }
    }

    /// Memory budget: three quarters of what the machine has, so that load never
    /// pushes the node itself out of memory.
    pub fn machine_budget() -> u64 {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(4 << 20);
        total * 1024 / 4 * 3
    }

    pub async fn admit(&self, memory_bytes: u64) -> Result<Admitted, ServiceError> {
        let mib = u32::try_from(memory_bytes.div_ceil(1 << 20))
            .unwrap_or(u32::MAX)
            .max(1);
        if mib > self.budget_mib {
            return Err(ServiceError::Exhausted(format!(
                "the evaluation's memory limit ({mib} MiB) exceeds this node's whole budget ({} MiB)",
                self.budget_mib
            )));
        }
        let immediate = (
            self.slots.clone().try_acquire_owned(),
            self.memory_mib.clone().try_acquire_many_owned(mib),
        );
        if let (Ok(slot), Ok(memory)) = immediate {
            return Ok(Admitted {
                _slot: slot,
                _memory: memory,
            });
        }
        drop(immediate);
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue_size {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ServiceError::Exhausted(format!(
                "node at capacity: {} evaluations running and {} waiting; retry later or on another node",
                self.slots_in_use(),
                self.queue_size
            )));
        }
        let acquired = tokio::time::timeout(self.wait, async {
            let slot = self.slots.clone().acquire_owned().await;
            let memory = self.memory_mib.clone().acquire_many_owned(mib).await;
            (slot, memory)
        })
        .await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match acquired {
            Ok((Ok(slot), Ok(memory))) => Ok(Admitted {
                _slot: slot,
                _memory: memory,
            }),
            _ => Err(ServiceError::Exhausted(format!(
                "node at capacity: no slot within {} ms; retry later or on another node",
                self.wait.as_millis()
            ))),
        }
    }

    fn slots_in_use(&self) -> usize {
        self.max_concurrent - self.slots.available_permits()
    }
}

/// Shared state of the service.
#[derive(Debug)]
pub struct Node {
    pub sandboxes: Sandboxes,
    pub registry: RwLock<Arc<Registry>>,
    /// Runtime name → the access list its snippets are held to (absent: none).
    pub access_lists: RwLock<Arc<BTreeMap<String, Arc<AccessList>>>>,
    /// Fired once the runtimes are loaded; until then evaluations are UNAVAILABLE.
    pub ready: CancellationToken,
    pub config: EvaluationConfig,
    pub admission: Admission,
    pub service_id: String,
    /// Set when draining: new evaluations are refused.
    pub draining: CancellationToken,
    /// Fired after the grace period: running evaluations are killed.
    pub kill_all: CancellationToken,
    pub active: AtomicUsize,
    pub metrics: Arc<Metrics>,
    /// Runtime name → its pool of sandboxes started ahead of requests.
    pub pools: RwLock<Arc<BTreeMap<String, Pool>>>,
}

impl Node {
    pub fn pools(&self) -> Arc<BTreeMap<String, Pool>> {
        self.pools.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Refills compete with evaluations for the CPUs: none while every slot is busy.
    fn pace_pools(&self) {
        let busy = self.active.load(Ordering::SeqCst) >= self.config.max_concurrent;
        for pool in self.pools().values() {
            pool.set_paused(busy);
        }
    }

    fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves the requested runtime; empty means the configured default.
    fn runtime(&self, spec: &str) -> Result<Runtime, ServiceError> {
        let spec = if spec.is_empty() {
            self.config.default_runtime.as_str()
        } else {
            spec
        };
        self.registry()
            .resolve(spec)
            .cloned()
            .map_err(|e| ServiceError::NotFound(e.to_string()))
    }

    /// The request's limits over the node's defaults, each checked against its maximum.
    fn limits(&self, requested: Option<&proto::jsheets::Limits>) -> Result<Limits, ServiceError> {
        let d = &self.config.limits.defaults;
        let max = &self.config.limits.maxima;
        let r = requested.cloned().unwrap_or_default();
        let pick = |name: &str, asked: u64, default: u64, maximum: u64| {
            if asked > maximum {
                Err(ServiceError::InvalidArgument(format!(
                    "limits.{name} is {asked}, above this node's maximum of {maximum}"
                )))
            } else if asked == 0 {
                Ok(default)
            } else {
                Ok(asked)
            }
        };
        let wall = pick(
            "wall_time_ms",
            r.wall_time_ms,
            d.wall_time_ms,
            max.wall_time_ms,
        )?;
        let cpu = pick("cpu_time_ms", r.cpu_time_ms, d.cpu_time_ms, max.cpu_time_ms)?;
        let memory = pick(
            "memory_bytes",
            r.memory_bytes,
            d.memory_bytes,
            max.memory_bytes,
        )?;
        if memory < 8 << 20 {
            return Err(ServiceError::InvalidArgument(format!(
                "limits.memory_bytes is {memory}, below the minimum of {}",
                8u64 << 20
            )));
        }
        let processes = pick(
            "max_processes",
            u64::from(r.max_processes),
            d.max_processes,
            max.max_processes,
        )?;
        let output = pick(
            "output_bytes",
            r.output_bytes,
            d.output_bytes,
            max.output_bytes,
        )?;
        Ok(Limits {
            wall_time: Duration::from_millis(wall),
            cpu_time: Duration::from_millis(cpu),
            memory_bytes: memory,
            max_processes: processes,
            output_bytes: output,
            ..Limits::default()
        })
    }

    /// Components of every source, each source's in ascending `order`, sources in list
    /// order; bounded in count and size.
    fn components(&self, start: &StartEvaluationRequest) -> Result<Vec<Component>, ServiceError> {
        let max_components = self.config.max_components as usize;
        let max_bytes = self.config.max_code_bytes;
        let mut components = Vec::new();
        let mut bytes = 0u64;
        for (i, source) in start.sources.iter().enumerate() {
            let mut parts: Vec<_> = source.code_components.iter().collect();
            parts.sort_by_key(|c| c.order);
            for c in parts {
                bytes += c.code.len() as u64;
                components.push(Component {
                    id: c.id.clone(),
                    code: c.code.clone(),
                });
                if components.len() > max_components {
                    return Err(ServiceError::InvalidArgument(format!(
                        "the request has more than {max_components} code components (this node's maximum)"
                    )));
                }
                if bytes > max_bytes {
                    return Err(ServiceError::InvalidArgument(format!(
                        "the request's code exceeds {max_bytes} bytes (this node's maximum) at sources[{i}] component {:?}",
                        c.id
                    )));
                }
            }
        }
        if components.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "the start request has no code components (sources[].code_components is empty)"
                    .into(),
            ));
        }
        Ok(components)
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct RuntimeService {
    node: Arc<Node>,
}

impl RuntimeService {
    pub fn new(node: Arc<Node>) -> Self {
        RuntimeService { node }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EvaluateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SnippetRuntime for RuntimeService {
    type EvaluateStream = ResponseStream;

    async fn evaluate(
        &self,
        request: Request<Streaming<EvaluateRequest>>,
    ) -> Result<Response<Self::EvaluateStream>, Status> {
        if self.node.draining.is_cancelled() {
            return Err(ServiceError::Draining.into());
        }
        if !self.node.ready.is_cancelled() {
            return Err(ServiceError::NotReady.into());
        }
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(32);
        let node = self.node.clone();
        tokio::spawn(async move {
            let reply = tx.clone();
            if let Err(status) = serve_stream(node, inbound, tx).await {
                let _ = reply.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_runtimes(
        &self,
        _: Request<ListRuntimesRequest>,
    ) -> Result<Response<ListRuntimesResponse>, Status> {
        let registry = self.node.registry();
        let d = &self.node.config.limits.defaults;
        let default = self.node.runtime("").ok().map(|r| r.name().to_string());
        let pools = self.node.pools();
        let lists = self
            .node
            .access_lists
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let runtimes = registry
            .list()
            .iter()
            .map(|r| RuntimeInfo {
                name: r.name().into(),
                version: r.version().into(),
                language: r.language().into(),
                description: r.description().into(),
                default_limits: Some(wire_limits(d)),
                // The list in effect (configuration over the runtime's own).
                access_list: lists
                    .get(r.name())
                    .map(|l| l.name().to_owned())
                    .unwrap_or_default(),
                is_default: default.as_deref() == Some(r.name()),
                pool_size: pools.get(r.name()).map_or(0, |p| p.stats().size as u32),
                pool_idle: pools.get(r.name()).map_or(0, |p| p.idle() as u32),
            })
            .collect();
        Ok(Response::new(ListRuntimesResponse { runtimes }))
    }
}

fn wire_limits(v: &LimitValues) -> proto::jsheets::Limits {
    proto::jsheets::Limits {
        wall_time_ms: v.wall_time_ms,
        cpu_time_ms: v.cpu_time_ms,
        memory_bytes: v.memory_bytes,
        max_processes: u32::try_from(v.max_processes).unwrap_or(u32::MAX),
        output_bytes: v.output_bytes,
    }
}

type Reply = mpsc::Sender<Result<EvaluateResponse, Status>>;

/// One Evaluate stream: starts, stops, half-close and cancellation.
async fn serve_stream(
    node: Arc<Node>,
    mut inbound: Streaming<EvaluateRequest>,
    tx: Reply,
) -> Result<(), Status> {
    // Whatever way this function ends, an evaluation it started is stopped.
    let stream_cancel = CancellationToken::new();
    let _stop_on_exit = stream_cancel.clone().drop_guard();
    let mut inbound_open = true;
    let mut running: Option<(tokio::task::JoinHandle<()>, CancellationToken, bool)> = None;
    loop {
        tokio::select! {
            msg = inbound.message(), if inbound_open => match msg {
                Ok(Some(EvaluateRequest { message: Some(Message::Start(start)) })) => {
                    if running.is_some() {
                        return Err(ServiceError::AlreadyRunning.into());
                    }
                    let keep_open = start.keep_stream_open;
                    let prepared = prepare(&node, start)?;
                    let cancel = stream_cancel.child_token();
                    let handle = tokio::spawn(run_evaluation(node.clone(), prepared, tx.clone(), cancel.clone()));
                    running = Some((handle, cancel, keep_open));
                }
                Ok(Some(EvaluateRequest { message: Some(Message::Stop(_)) })) => {
                    // Nothing running is fine: jsheets clients may send stop late.
                    if let Some((_, cancel, _)) = &running {
                        cancel.cancel();
                    }
                }
                Ok(Some(EvaluateRequest { message: None })) => {
                    return Err(ServiceError::InvalidArgument("an EvaluateRequest must carry `start` or `stop`".into()).into());
                }
                // Half-close: normal after `start`; the evaluation goes on.
                Ok(None) => {
                    inbound_open = false;
                    if running.is_none() {
                        return Ok(());
                    }
                }
                // The client cancelled or went away.
                Err(_) => {
                    if let Some((handle, cancel, _)) = running.take() {
                        cancel.cancel();
                        let _ = handle.await;
                    }
                    return Ok(());
                }
            },
            done = async { running.as_mut().map(|(h, _, _)| h) .expect("guarded").await }, if running.is_some() => {
                let keep_open = running.take().map(|(_, _, k)| k).unwrap_or(false);
                if done.is_err() {
                    return Err(Status::internal("the evaluation task failed"));
                }
                if !inbound_open || !keep_open {
                    return Ok(());
                }
            },
            _ = tx.closed() => {
                if let Some((handle, cancel, _)) = running.take() {
                    cancel.cancel();
                    let _ = handle.await;
                }
                return Ok(());
            }
        }
    }
}

/// A validated start request.
#[derive(Debug)]
struct Prepared {
    runtime: Runtime,
    components: Vec<Component>,
    limits: Limits,
    stdin: Vec<u8>,
    access_list: Option<Arc<AccessList>>,
}

/// Starts the pools configured in `evaluation.pool` (runtimes that cannot be
/// pre-started are reported and skipped). Waiting sandboxes hold the maximum limits
/// (memory: `idleMemoryBytes` if set) until a request's replace them.
pub fn start_pools(
    node: &Node,
    registry: &Registry,
    lists: &BTreeMap<String, Arc<AccessList>>,
) -> BTreeMap<String, Pool> {
    let mut pools = BTreeMap::new();
    for (name, pool) in &node.config.pool {
        if pool.size == 0 {
            continue;
        }
        let Some(runtime) = registry.list().iter().find(|r| r.name() == name) else {
            tracing::warn!(runtime = %name, "evaluation.pool names a runtime that is not installed");
            continue;
        };
        let mut launch = runtime.launch();
        launch.access_list = lists.get(name).cloned();
        let max = &node.config.limits.maxima;
        let mut idle_limits = Limits {
            wall_time: Duration::from_millis(max.wall_time_ms),
            cpu_time: Duration::from_millis(max.cpu_time_ms),
            memory_bytes: pool.idle_memory_bytes.unwrap_or(max.memory_bytes),
            max_processes: max.max_processes,
            output_bytes: max.output_bytes,
            ..Limits::default()
        };
        idle_limits.memory_bytes = idle_limits.memory_bytes.max(64 << 20);
        let settings = PoolSettings {
            size: pool.size,
            idle_limits,
            max_age: POOLED_MAX_AGE,
        };
        match Pool::start(node.sandboxes.clone(), launch, settings) {
            Ok(p) => {
                tracing::info!(runtime = %name, size = pool.size, "pre-starting sandboxes");
                pools.insert(name.clone(), p);
            }
            Err(e) => tracing::warn!(runtime = %name, error = %e, "not pre-starting sandboxes"),
        }
    }
    pools
}

/// A pre-started sandbox waiting longer is replaced.
const POOLED_MAX_AGE: Duration = Duration::from_secs(600);

/// The access list of every runtime in `registry`: configuration over the runtime's
/// own. Any list that cannot be loaded is an error: the node does not start on it.
pub fn access_lists(
    registry: &Registry,
    config: &EvaluationConfig,
) -> Result<BTreeMap<String, Arc<AccessList>>, String> {
    let catalog = Catalog::new(Some(config.access_lists_dir.clone()));
    let mut lists = BTreeMap::new();
    for runtime in registry.list() {
        let configured = config.access_lists.get(runtime.name()).map(String::as_str);
        match catalog.for_runtime(runtime.access_list(), configured) {
            Ok(Some(list)) => {
                tracing::info!(runtime = runtime.name(), list = list.name(), file = %list.file().display(), "access list");
                lists.insert(runtime.name().to_owned(), Arc::new(list));
            }
            Ok(None) => {
                tracing::warn!(
                    runtime = runtime.name(),
                    "no access list: snippets are held by the sandbox only"
                );
            }
            Err(e) => return Err(format!("runtime {}: {e}", runtime.name())),
        }
    }
    for name in config.access_lists.keys() {
        if !registry.list().iter().any(|r| r.name() == name) {
            tracing::warn!(runtime = %name, "evaluation.accessLists names a runtime that is not installed");
        }
    }
    Ok(lists)
}

fn prepare(node: &Node, start: StartEvaluationRequest) -> Result<Prepared, Status> {
    if node.draining.is_cancelled() {
        return Err(ServiceError::Draining.into());
    }
    let components = node.components(&start)?;
    if start.stdin.len() as u64 > node.config.max_code_bytes {
        return Err(ServiceError::InvalidArgument(format!(
            "stdin is {} bytes, above this node's maximum of {}",
            start.stdin.len(),
            node.config.max_code_bytes
        ))
        .into());
    }
    let runtime = node.runtime(&start.runtime)?;
    let limits = node.limits(start.limits.as_ref())?;
    let access_list = node
        .access_lists
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(runtime.name())
        .cloned();
    Ok(Prepared {
        runtime,
        components,
        limits,
        stdin: start.stdin,
        access_list,
    })
}

/// Live output waiting to be flushed, per component and stream, in arrival order.
#[derive(Default)]
struct Pending {
    order: Vec<(String, bool)>,
    data: HashMap<(String, bool), Vec<u8>>,
    bytes: usize,
}

impl Pending {
    fn push(&mut self, component: String, stdout: bool, data: Vec<u8>) {
        self.bytes += data.len();
        let key = (component, stdout);
        match self.data.get_mut(&key) {
            Some(buf) => buf.extend_from_slice(&data),
            None => {
                self.order.push(key.clone());
                self.data.insert(key, data);
            }
        }
    }

    fn take(&mut self) -> Option<EvaluateResponse> {
        if self.order.is_empty() {
            return None;
        }
        let mut result = Vec::new();
        for key in self.order.drain(..) {
            if let Some(data) = self.data.remove(&key) {
                result.push(EvaluationResult {
                    component_id: key.0,
                    kind: if key.1 {
                        ResultKind::Info
                    } else {
                        ResultKind::Error
                    } as i32,
                    output: String::from_utf8_lossy(&data).into_owned(),
                });
            }
        }
        self.bytes = 0;
        Some(EvaluateResponse {
            result,
            ..Default::default()
        })
    }
}

/// Coalesced output is flushed at least this often while it keeps coming.
const FLUSH_BYTES: usize = 64 * 1024;

async fn run_evaluation(node: Arc<Node>, p: Prepared, tx: Reply, cancel: CancellationToken) {
    let id = format!(
        "{}-{}",
        node.service_id,
        EVAL_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let span = tracing::info_span!("evaluation", id = %id, runtime = %p.runtime.name(), status = tracing::field::Empty);
    async move {
        let queued_at = std::time::Instant::now();
        let admitted = match node.admission.admit(p.limits.memory_bytes).await {
            Ok(a) => a,
            Err(e) => {
                node.metrics.rejected();
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let queue_wait = queued_at.elapsed();
        node.active.fetch_add(1, Ordering::SeqCst);
        node.pace_pools();
        node.metrics.sandbox_started();
        // Killing on shutdown, stop, or the client going away.
        let kill = cancel.clone();
        let kill_all = node.kill_all.clone();
        let watcher = tokio::spawn(async move {
            kill_all.cancelled().await;
            kill.cancel();
        });
        let (out_tx, mut out_rx) = mpsc::channel::<Output>(64);
        let mut launch = p.runtime.launch();
        launch.access_list = p.access_list.clone();
        let flush_every = Duration::from_millis(node.config.flush_interval_ms.max(1));
        let forward = async {
            let mut pending = Pending::default();
            let mut finals = EvaluateResponse::default();
            let mut last_component = p.components[0].id.clone();
            let mut tick = tokio::time::interval(flush_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    o = out_rx.recv() => {
                        let Some(o) = o else { break };
                        match o {
                            Output::Stdout { component, data } => { last_component.clone_from(&component); pending.push(component, true, data) }
                            Output::Stderr { component, data } => { last_component.clone_from(&component); pending.push(component, false, data) }
                            Output::Value { component, text } => finals.result.push(EvaluationResult {
                                component_id: component,
                                kind: ResultKind::Info as i32,
                                output: text,
                            }),
                            Output::Diagnostic { component, kind, message, start, end, .. } => finals.error.push(EvaluationError {
                                component_id: component,
                                kind,
                                message,
                                span: Some(CodeSpan { start: start as i64, end: end as i64 }),
                            }),
                            Output::Exception { component, kind, message, traceback, .. } => finals.error.push(EvaluationError {
                                component_id: component,
                                kind: "exception".into(),
                                message: format!("{kind}: {message}\n{traceback}"),
                                span: None,
                            }),
                            Output::Started { component } => last_component = component,
                            Output::Violation { component, message, .. } => finals.error.push(EvaluationError {
                                component_id: component,
                                kind: "sandbox".into(),
                                message,
                                span: None,
                            }),
                            Output::Internal { component, message } => finals.error.push(EvaluationError {
                                component_id: component,
                                kind: "internal".into(),
                                message,
                                span: None,
                            }),
                        }
                        if pending.bytes >= FLUSH_BYTES {
                            if let Some(r) = pending.take() {
                                if tx.send(Ok(r)).await.is_err() { break; }
                            }
                        }
                    }
                    _ = tick.tick() => {
                        if let Some(r) = pending.take() {
                            if tx.send(Ok(r)).await.is_err() { break; }
                        }
                    }
                }
            }
            if let Some(r) = pending.take() {
                let _ = tx.send(Ok(r)).await;
            }
            (finals, last_component)
        };
        let waiting = node.pools().get(p.runtime.name()).and_then(Pool::take);
        let run = evaluate::evaluate_in(&node.sandboxes, waiting, &launch, &p.components, p.stdin, p.limits.clone(), out_tx, cancel.clone());
        let (outcome, (mut finals, last_component)) = tokio::join!(run, forward);
        watcher.abort();
        node.active.fetch_sub(1, Ordering::SeqCst);
        node.pace_pools();
        drop(admitted);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = tx.send(Err(ServiceError::InvalidArgument(e.to_string()).into())).await;
                return;
            }
        };
        let mut limit = None;
        if let Some(mut error) = limit_error(&outcome, &p.limits, &last_component) {
            if outcome.status == SandboxStatus::Cancelled && node.kill_all.is_cancelled() {
                error.message = "the node shut down before the evaluation finished".into();
            }
            limit = LIMIT_KINDS.iter().copied().find(|k| *k == error.kind);
            finals.error.push(error);
        }
        let denials = finals.error.iter().filter(|e| e.kind == "sandbox").count() as u64;
        let verdict = if outcome.status == SandboxStatus::SetupFailed
            || denials > 0
            || finals.error.iter().any(|e| e.kind == "internal")
        {
            Verdict::Failed
        } else if outcome.status == SandboxStatus::Ok && finals.error.is_empty() {
            Verdict::Successful
        } else {
            Verdict::Erroneous
        };
        node.metrics.record(&EvaluationRecord {
            runtime: p.runtime.name().to_owned(),
            status: outcome.status.as_str(),
            outcome: verdict,
            wall: outcome.wall_time,
            cpu: outcome.cpu_time,
            peak_memory: outcome.peak_memory,
            queue_wait,
            setup: outcome.setup_time,
            access_denials: denials,
            limit,
        });
        tracing::Span::current().record("status", outcome.status.as_str());
        tracing::info!(wall_ms = outcome.wall_time.as_millis() as u64, cpu_ms = outcome.cpu_time.as_millis() as u64, "evaluation finished");
        finals.completion = Some(Completion {
            status: wire_status(outcome.status) as i32,
            exit_code: outcome.exit_code.unwrap_or(0),
            signal: outcome.signal.unwrap_or(0),
            wall_time_ms: outcome.wall_time.as_millis() as u64,
            cpu_time_ms: outcome.cpu_time.as_millis() as u64,
            peak_memory_bytes: outcome.peak_memory,
            runtime: Some(RuntimeRef { name: p.runtime.name().into(), version: p.runtime.version().into() }),
            service_id: node.service_id.clone(),
            output_truncated: outcome.stdout_truncated || outcome.stderr_truncated,
            evaluation_id: id.clone(),
        });
        let _ = tx.send(Ok(finals)).await;
    }
    .instrument(span)
    .await
}

static EVAL_SEQ: AtomicUsize = AtomicUsize::new(1);

/// The `kind`s of [`limit_error`] that are limits (for metrics).
const LIMIT_KINDS: [&str; 5] = ["timeout", "cpu", "memory", "output", "processes"];

/// The error a limit hit adds to the final response, in jsheets' `kind` vocabulary.
fn limit_error(o: &Outcome, l: &Limits, component: &str) -> Option<EvaluationError> {
    let (kind, message) = match o.status {
        SandboxStatus::WallTimeout => (
            "timeout",
            format!(
                "the evaluation exceeded its wall-clock limit of {} ms",
                l.wall_time.as_millis()
            ),
        ),
        SandboxStatus::CpuLimit => (
            "cpu",
            format!(
                "the evaluation exceeded its CPU-time limit of {} ms",
                l.cpu_time.as_millis()
            ),
        ),
        SandboxStatus::MemoryLimit => (
            "memory",
            format!(
                "the evaluation exceeded its memory limit of {} bytes",
                l.memory_bytes
            ),
        ),
        SandboxStatus::OutputLimit => (
            "output",
            format!(
                "the output exceeded its limit of {} bytes per stream; the rest was dropped",
                l.output_bytes
            ),
        ),
        SandboxStatus::ProcessLimit => (
            "processes",
            format!(
                "the evaluation hit its limit of {} processes",
                l.max_processes
            ),
        ),
        SandboxStatus::SetupFailed => (
            "internal",
            format!(
                "the sandbox could not be set up: {}",
                o.error.clone().unwrap_or_default()
            ),
        ),
        SandboxStatus::Cancelled => ("cancelled", "the evaluation was stopped".to_string()),
        SandboxStatus::Signaled => (
            "signal",
            format!(
                "the evaluation was killed by signal {}",
                o.signal.unwrap_or(0)
            ),
        ),
        SandboxStatus::Ok | SandboxStatus::ExitedNonZero => return None,
    };
    Some(EvaluationError {
        component_id: component.into(),
        kind: kind.into(),
        message,
        span: None,
    })
}

fn wire_status(s: SandboxStatus) -> WireStatus {
    match s {
        SandboxStatus::Ok => WireStatus::Ok,
        SandboxStatus::ExitedNonZero => WireStatus::ExitedNonzero,
        SandboxStatus::Signaled => WireStatus::KilledBySignal,
        SandboxStatus::WallTimeout => WireStatus::WallTimeout,
        SandboxStatus::CpuLimit => WireStatus::CpuLimit,
        SandboxStatus::MemoryLimit => WireStatus::MemoryLimit,
        SandboxStatus::OutputLimit => WireStatus::OutputLimit,
        SandboxStatus::ProcessLimit => WireStatus::ProcessLimit,
        SandboxStatus::Cancelled => WireStatus::Cancelled,
        SandboxStatus::SetupFailed => WireStatus::SetupFailed,
    }
}
