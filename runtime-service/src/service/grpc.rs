//! The gRPC implementation of `jsheets.SnippetRuntime`: an Evaluate stream's starts,
//! stops, half-close and cancellation, one admitted evaluation per `start` with its
//! live output coalesced and flushed (or, for a many-input `start`, one result per run
//! as it ends), the final response, and `ListRuntimes`.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use evaluator::access::AccessList;
use evaluator::batch::{self, MatchMode};
use evaluator::evaluate::{self, RequestData};
use evaluator::runtime::Runtime;
use evaluator::sandbox::files::ReturnedFile;
use evaluator::sandbox::Outcome;
use evaluator::sandbox::{Limits, Status as SandboxStatus};
use evaluator::snippet::{Component, Output};
use proto::jsheets::evaluate_request::Message;
use proto::jsheets::snippet_runtime_server::SnippetRuntime;
use proto::jsheets::{
    EvaluateRequest, EvaluateResponse, EvaluationError, ListRuntimesRequest, ListRuntimesResponse,
    StartEvaluationRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::admission::Admitted;
use super::error::ServiceError;
use super::node::Node;
use super::wire::{self, Pending, LIMIT_KINDS};
use crate::metrics::{EvaluationRecord, Verdict};

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
        let lists = self.node.access_lists();
        let runtimes = registry
            .list()
            .iter()
            .map(|r| {
                wire::runtime_info(
                    r,
                    d,
                    lists.get(r.name()).map(|l| l.name()),
                    default.as_deref() == Some(r.name()),
                    pools.get(r.name()),
                )
            })
            .collect();
        Ok(Response::new(ListRuntimesResponse { runtimes }))
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
                    let handle = if prepared.inputs.is_empty() {
                        tokio::spawn(run_evaluation(node.clone(), prepared, tx.clone(), cancel.clone()))
                    } else {
                        tokio::spawn(run_inputs(node.clone(), prepared, tx.clone(), cancel.clone()))
                    };
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
                    return Err(ServiceError::TaskFailed.into());
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
    data: RequestData,
    /// A many-input request's inputs (none: one evaluation).
    inputs: Vec<batch::Input>,
    mode: MatchMode,
}

fn prepare(node: &Node, mut start: StartEvaluationRequest) -> Result<Prepared, ServiceError> {
    if node.draining.is_cancelled() {
        return Err(ServiceError::Draining);
    }
    let components = wire::components(&start, &node.config)?;
    if start.stdin.len() as u64 > node.config.max_code_bytes {
        return Err(ServiceError::InvalidArgument(format!(
            "stdin is {} bytes, above this node's maximum of {}",
            start.stdin.len(),
            node.config.max_code_bytes
        )));
    }
    let runtime = node.runtime(&start.runtime)?;
    let limits = wire::limits(start.limits.as_ref(), &node.config)?;
    let files = wire::files(&mut start, &node.config)?;
    let datasets = wire::datasets(&start.datasets, &node.config.datasets)?;
    let (inputs, mode) = wire::inputs(&mut start, &files.put, &node.config)?;
    let access_list = node.access_lists().get(runtime.name()).cloned();
    Ok(Prepared {
        runtime,
        components,
        limits,
        stdin: start.stdin,
        access_list,
        data: RequestData { files, datasets },
        inputs,
        mode,
    })
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
        let Some(running) =
            admit(&node, p.runtime.name(), p.limits.memory_bytes, &tx, &cancel).await
        else {
            return;
        };
        let queue_wait = running.queue_wait;
        node.metrics.sandbox_started();
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
                        wire::record(o, &mut pending, &mut finals, &mut last_component);
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
        let pool = node.pools().get(p.runtime.name()).cloned();
        let run = evaluate::evaluate_pooled(
            &node.sandboxes,
            pool.as_ref(),
            &launch,
            &p.components,
            p.stdin,
            p.limits.clone(),
            p.data,
            out_tx,
            cancel.clone(),
        );
        let (outcome, (mut finals, last_component)) = tokio::join!(run, forward);
        drop(running);
        let (mut outcome, path) = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = tx.send(Err(ServiceError::from(e).into())).await;
                return;
            }
        };
        if let Some(mut error) = wire::limit_error(&outcome, &p.limits, &last_component) {
            if outcome.status == SandboxStatus::Cancelled && node.kill_all.is_cancelled() {
                error.message = "the node shut down before the evaluation finished".into();
            }
            finals.error.push(error);
        }
        record_metrics(&node, p.runtime.name(), &outcome, &finals.error, queue_wait);
        tracing::Span::current().record("status", outcome.status.as_str());
        tracing::info!(
            wall_ms = outcome.wall_time.as_millis() as u64,
            cpu_ms = outcome.cpu_time.as_millis() as u64,
            path = ?path,
            "evaluation finished"
        );
        finals.completion = Some(wire::completion(
            &outcome,
            &p.runtime,
            &node.service_id,
            &id,
        ));
        // Returned files after the live output, in responses of their own but for the
        // last group, which the final response carries.
        match send_files(&tx, std::mem::take(&mut outcome.files)).await {
            Some(last) => finals.files = last,
            None => return,
        }
        let _ = tx.send(Ok(finals)).await;
    }
    .instrument(span)
    .await
}

/// An admitted evaluation: its slot, its place in the node's count of active ones,
/// and the watcher that cancels it when the node kills everything; given back when
/// dropped.
struct Running {
    _admitted: Admitted,
    node: Arc<Node>,
    watcher: tokio::task::JoinHandle<()>,
    /// How long it waited for its slot.
    queue_wait: Duration,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.watcher.abort();
        self.node.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Admits an evaluation of `runtime` needing `memory` bytes; `None` when it was
/// refused, which the client and the metrics have been told.
async fn admit(
    node: &Arc<Node>,
    runtime: &str,
    memory: u64,
    tx: &Reply,
    cancel: &CancellationToken,
) -> Option<Running> {
    let queued_at = std::time::Instant::now();
    let admitted = match node.admission.admit(runtime, memory).await {
        Ok(a) => a,
        Err(e) => {
            node.metrics.rejected();
            let _ = tx.send(Err(ServiceError::from(e).into())).await;
            return None;
        }
    };
    let queue_wait = queued_at.elapsed();
    node.active.fetch_add(1, Ordering::SeqCst);
    // Killing on shutdown, stop, or the client going away.
    let kill = cancel.clone();
    let kill_all = node.kill_all.clone();
    let watcher = tokio::spawn(async move {
        kill_all.cancelled().await;
        kill.cancel();
    });
    Some(Running {
        _admitted: admitted,
        node: node.clone(),
        watcher,
        queue_wait,
    })
}

/// One evaluation (or one run of a many-input one) in the node's metrics, in jsheets'
/// three-way verdict.
fn record_metrics(
    node: &Node,
    runtime: &str,
    outcome: &Outcome,
    errors: &[EvaluationError],
    queue_wait: Duration,
) {
    let denials = errors.iter().filter(|e| e.kind == "sandbox").count() as u64;
    let verdict = if outcome.status == SandboxStatus::SetupFailed
        || denials > 0
        || errors.iter().any(|e| e.kind == "internal")
    {
        Verdict::Failed
    } else if outcome.status == SandboxStatus::Ok && errors.is_empty() {
        Verdict::Successful
    } else {
        Verdict::Erroneous
    };
    let limit = LIMIT_KINDS
        .iter()
        .copied()
        .find(|k| errors.iter().any(|e| e.kind == *k));
    node.metrics.record(&EvaluationRecord {
        runtime: runtime.to_owned(),
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
}

/// Sends `files` in responses of their own but for the last group, which is returned
/// for the caller's last response to carry. `None` when the client went away.
async fn send_files(
    tx: &Reply,
    files: Vec<ReturnedFile>,
) -> Option<Vec<proto::jsheets::ReturnedFile>> {
    let mut chunks = wire::FileChunks::new(files).peekable();
    while let Some(group) = chunks.next() {
        if chunks.peek().is_none() {
            return Some(group);
        }
        let only_files = EvaluateResponse {
            files: group,
            ..Default::default()
        };
        tx.send(Ok(only_files)).await.ok()?;
    }
    Some(Vec::new())
}

/// Runs of a many-input request at once: the configured number, else the CPUs, never
/// more than its inputs, nor more sandboxes of `memory_bytes` than the node's memory
/// budget holds (the request is admitted for all of them at once: asking for more
/// would refuse a request that fits when run fewer at a time).
fn parallelism(node: &Node, inputs: usize, memory_bytes: u64) -> usize {
    let configured = node.config.input_parallelism as usize;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = if configured == 0 { cpus } else { configured };
    wanted
        .min(node.admission.fitting(memory_bytes))
        .clamp(1, inputs.max(1))
}

/// A many-input evaluation: admitted once, for as many sandboxes' memory as it runs at
/// once; each run's result streamed when it ends (its files first), then a final
/// response whose completion sums the runs up: the status of the first run (by index)
/// that did not end `ok`, else `ok`; the whole wall time; CPU time added up; the
/// highest peak.
async fn run_inputs(node: Arc<Node>, mut p: Prepared, tx: Reply, cancel: CancellationToken) {
    let id = format!(
        "{}-{}",
        node.service_id,
        EVAL_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let span = tracing::info_span!("evaluation", id = %id, runtime = %p.runtime.name(), inputs = p.inputs.len(), status = tracing::field::Empty);
    async move {
        let inputs = std::mem::take(&mut p.inputs);
        let count = inputs.len();
        let pool = node.pools().get(p.runtime.name()).cloned();
        // Each run at once holds its sandbox, a copy of the files it is given, and,
        // where the runs go through lanes, its lane.
        let files: u64 = p
            .data
            .files
            .put
            .iter()
            .map(|f| f.content.len() as u64)
            .sum();
        let lane = if pool.as_ref().is_some_and(|p| p.has_lanes()) && p.data.datasets.is_empty() {
            evaluator::sandbox::zygote::LANE_MEMORY
        } else {
            0
        };
        let each = p
            .limits
            .memory_bytes
            .saturating_add(files)
            .saturating_add(lane);
        let parallel = parallelism(&node, count, each);
        let memory = each.saturating_mul(parallel as u64);
        let Some(running) = admit(&node, p.runtime.name(), memory, &tx, &cancel).await else {
            return;
        };
        let queue_wait = running.queue_wait;
        let started = std::time::Instant::now();
        let mut launch = p.runtime.launch();
        launch.access_list = p.access_list.clone();
        let program = batch::Program {
            launch: &launch,
            components: &p.components,
            limits: p.limits.clone(),
            data: std::mem::take(&mut p.data),
            mode: p.mode,
        };
        let take = || {
            let pool = pool.clone();
            async move {
                match pool {
                    Some(pool) => pool.take_soon().await,
                    None => None,
                }
            }
        };
        let lane = || {
            let pool = pool.clone();
            async move {
                match pool {
                    Some(pool) => pool.lane().await,
                    None => None,
                }
            }
        };
        let (done_tx, mut done_rx) = mpsc::channel::<batch::RunReport>(parallel);
        let run = batch::run_inputs(
            &node.sandboxes,
            &program,
            inputs,
            parallel,
            take,
            lane,
            pool.as_ref().and_then(|p| p.compile_host()),
            done_tx,
            cancel.clone(),
        );
        let first_component = p.components[0].id.clone();
        let forward = async {
            // (index, status) of the first run by index that did not end ok.
            let mut worst: Option<(usize, SandboxStatus)> = None;
            // Runs that did not end well, by index: what the final response says.
            let mut failed: Vec<(u32, String)> = Vec::new();
            let (mut cpu, mut peak, mut runs) = (Duration::ZERO, 0u64, 0usize);
            while let Some(report) = done_rx.recv().await {
                node.metrics.sandbox_started();
                runs += 1;
                let outcome = &report.outcome;
                cpu += outcome.cpu_time;
                peak = peak.max(outcome.peak_memory);
                if outcome.status != SandboxStatus::Ok
                    && worst.is_none_or(|(i, _)| report.index < i)
                {
                    worst = Some((report.index, outcome.status));
                }
                let outcome = report.outcome.clone();
                let (result, files) = wire::input_result(
                    report,
                    &p.limits,
                    &p.runtime,
                    &node.service_id,
                    &id,
                    &first_component,
                );
                record_metrics(&node, p.runtime.name(), &outcome, &result.error, queue_wait);
                if let Some(why) = wire::run_problem(&result) {
                    failed.push((result.index, why));
                }
                let Some(last_files) = send_files(&tx, files).await else {
                    cancel.cancel();
                    break;
                };
                let response = EvaluateResponse {
                    files: last_files,
                    input_result: Some(result),
                    ..Default::default()
                };
                if tx.send(Ok(response)).await.is_err() {
                    cancel.cancel();
                    break;
                }
            }
            (worst, cpu, peak, runs, failed)
        };
        let (ran, (worst, cpu, peak, runs, mut failed)) = tokio::join!(run, forward);
        drop(running);
        if let Err(e) = ran {
            let _ = tx.send(Err(ServiceError::from(e).into())).await;
            return;
        }
        // Runs that never started (cancelled, the node shutting down) leave the whole
        // cancelled.
        let status = match worst {
            Some((_, s)) => s,
            None if runs < count => SandboxStatus::Cancelled,
            None => SandboxStatus::Ok,
        };
        let summary = Outcome {
            status,
            exit_code: None,
            signal: None,
            wall_time: started.elapsed(),
            cpu_time: cpu,
            peak_memory: peak,
            setup_time: Duration::ZERO,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            error: None,
            files: Vec::new(),
        };
        tracing::Span::current().record("status", status.as_str());
        tracing::info!(
            wall_ms = summary.wall_time.as_millis() as u64,
            cpu_ms = cpu.as_millis() as u64,
            runs,
            "many-input evaluation finished"
        );
        // Each run that did not end well is an error of the whole, so that a client
        // looking only at the final response sees it.
        failed.sort();
        let finals = EvaluateResponse {
            completion: Some(wire::completion(
                &summary,
                &p.runtime,
                &node.service_id,
                &id,
            )),
            error: failed
                .into_iter()
                .map(|(index, why)| EvaluationError {
                    component_id: String::new(),
                    kind: "input".into(),
                    message: format!("input {index}: {why}"),
                    span: None,
                })
                .collect(),
            ..Default::default()
        };
        let _ = tx.send(Ok(finals)).await;
    }
    .instrument(span)
    .await
}

static EVAL_SEQ: AtomicUsize = AtomicUsize::new(1);
