//! The gRPC implementation of `jsheets.SnippetRuntime`: an Evaluate stream's starts,
//! stops, half-close and cancellation, one admitted evaluation per `start` with its
//! live output coalesced and flushed, the final response, and `ListRuntimes`.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use evaluator::access::AccessList;
use evaluator::evaluate::{self, RequestData};
use evaluator::runtime::Runtime;
use evaluator::sandbox::{Limits, Status as SandboxStatus};
use evaluator::snippet::{Component, Output};
use proto::jsheets::evaluate_request::Message;
use proto::jsheets::snippet_runtime_server::SnippetRuntime;
use proto::jsheets::{
    EvaluateRequest, EvaluateResponse, ListRuntimesRequest, ListRuntimesResponse,
    StartEvaluationRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

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
    let access_list = node.access_lists().get(runtime.name()).cloned();
    Ok(Prepared {
        runtime,
        components,
        limits,
        stdin: start.stdin,
        access_list,
        data: RequestData { files, datasets },
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
        let queued_at = std::time::Instant::now();
        let admitted = match node
            .admission
            .admit(p.runtime.name(), p.limits.memory_bytes)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                node.metrics.rejected();
                let _ = tx.send(Err(ServiceError::from(e).into())).await;
                return;
            }
        };
        let queue_wait = queued_at.elapsed();
        node.active.fetch_add(1, Ordering::SeqCst);
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
        // Datasets are mounted as a sandbox is built: a request with any never takes
        // a pooled sandbox (which would be destroyed unused, and count as a hit).
        let pool = node
            .pools()
            .get(p.runtime.name())
            .cloned()
            .filter(|_| p.data.datasets.is_empty());
        let waiting = match pool {
            Some(pool) => pool.take_soon().await,
            None => None,
        };
        let pooled = waiting.is_some();
        let run = evaluate::evaluate_in(
            &node.sandboxes,
            waiting,
            &launch,
            &p.components,
            p.stdin,
            p.limits.clone(),
            p.data,
            out_tx,
            cancel.clone(),
        );
        let (outcome, (mut finals, last_component)) = tokio::join!(run, forward);
        watcher.abort();
        node.active.fetch_sub(1, Ordering::SeqCst);
        drop(admitted);
        let mut outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = tx.send(Err(ServiceError::from(e).into())).await;
                return;
            }
        };
        let mut limit = None;
        if let Some(mut error) = wire::limit_error(&outcome, &p.limits, &last_component) {
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
        tracing::info!(
            wall_ms = outcome.wall_time.as_millis() as u64,
            cpu_ms = outcome.cpu_time.as_millis() as u64,
            pooled,
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
        let mut chunks = wire::FileChunks::new(std::mem::take(&mut outcome.files)).peekable();
        while let Some(group) = chunks.next() {
            if chunks.peek().is_none() {
                finals.files = group;
                break;
            }
            let only_files = EvaluateResponse {
                files: group,
                ..Default::default()
            };
            if tx.send(Ok(only_files)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(finals)).await;
    }
    .instrument(span)
    .await
}

static EVAL_SEQ: AtomicUsize = AtomicUsize::new(1);
