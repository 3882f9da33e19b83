//! A fleet of nodes discovered in ZooKeeper (Curator's service-discovery layout, as the
//! nodes register themselves) or given as a list, with evaluations spread across them.
//!
//! - Choice: of two nodes picked at random among those not marked down, the one with
//!   fewer evaluations in flight from this client ("power of two choices"), which
//!   steers work away from slow or busy nodes better than round-robin.
//! - Failover: when a node fails before the evaluation produced anything (unreachable,
//!   `RESOURCE_EXHAUSTED`, `UNAVAILABLE` while draining, the connection dropping), the
//!   evaluation is retried on another node within the same deadline. Sandboxes are
//!   single-use and stateless, so such a retry cannot be observed by the snippet.
//!   Once output has been passed to the caller, an error is returned instead.
//! - A node that failed is marked down for a while (busy nodes only briefly) and not
//!   chosen while others are up; every call is bounded by its deadline, every
//!   connection attempt by the connect timeout.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use proto::jsheets::EvaluateResponse;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tonic::Code;
use zookeeper_client as zk;

use crate::{endpoint, evaluate, Channel, ClientError, ClientTls, EvalRequest, Evaluated};

/// Longest pause between two ZooKeeper connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How a fleet connects and fails over.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// TLS for nodes that advertise an `sslPort`.
    pub tls: Option<ClientTls>,
    pub connect_timeout: Duration,
    /// How long a node that failed is avoided.
    pub down_for: Duration,
    /// How long a node that answered `RESOURCE_EXHAUSTED` is avoided.
    pub busy_for: Duration,
    /// Attempts per evaluation, across nodes.
    pub max_attempts: usize,
    pub zookeeper_session_timeout: Duration,
    pub zookeeper_backoff: Duration,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            tls: None,
            connect_timeout: Duration::from_secs(2),
            down_for: Duration::from_secs(5),
            busy_for: Duration::from_millis(200),
            max_attempts: 5,
            zookeeper_session_timeout: Duration::from_secs(10),
            zookeeper_backoff: Duration::from_millis(500),
        }
    }
}

/// A node as the fleet knows it.
#[derive(Debug)]
struct Node {
    id: String,
    url: String,
    channel: Channel,
    in_flight: AtomicUsize,
    down_until: Mutex<Option<Instant>>,
}

impl Node {
    fn is_down(&self, now: Instant) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t > now)
    }

    fn mark_down(&self, for_: Duration) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + for_);
    }

    fn mark_up(&self) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// What [`Fleet::nodes`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: String,
    pub url: String,
    pub in_flight: usize,
    pub down: bool,
}

#[derive(Debug)]
struct Shared {
    nodes: RwLock<HashMap<String, Arc<Node>>>,
    options: FleetOptions,
    /// Fires whenever the node list changes.
    changed: tokio::sync::Notify,
}

/// Evaluations spread across live nodes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fleet {
    shared: Arc<Shared>,
    watcher: Option<Arc<WatcherHandle>>,
}

#[derive(Debug)]
struct WatcherHandle(JoinHandle<()>);

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Curator's `ServiceInstance`, the fields a client needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instance {
    id: String,
    address: String,
    port: Option<u16>,
    ssl_port: Option<u16>,
}

impl Fleet {
    /// A fixed set of node URLs (`http://host:port`).
    pub fn from_endpoints(urls: &[String], options: FleetOptions) -> Result<Fleet, ClientError> {
        let fleet = Fleet::empty(options);
        let mut nodes = HashMap::new();
        for url in urls {
            nodes.insert(url.clone(), fleet.node(url, url)?);
        }
        *fleet
            .shared
            .nodes
            .write()
            .unwrap_or_else(|p| p.into_inner()) = nodes;
        Ok(fleet)
    }

    /// Nodes registered under `base_path` (e.g. `/jsheets/services/runtime`) in the
    /// ZooKeeper ensemble `connection` (`zk1:2181,zk2:2181`), kept up to date by a
    /// background task (stopped when the last clone is dropped). Returns at once;
    /// see [`Fleet::wait_for_nodes`].
    pub fn from_zookeeper(connection: &str, base_path: &str, options: FleetOptions) -> Fleet {
        let mut fleet = Fleet::empty(options);
        let task = tokio::spawn(watch(
            Arc::downgrade(&fleet.shared),
            connection.to_owned(),
            base_path.trim_end_matches('/').to_owned(),
        ));
        fleet.watcher = Some(Arc::new(WatcherHandle(task)));
        fleet
    }

    fn empty(options: FleetOptions) -> Fleet {
        Fleet {
            shared: Arc::new(Shared {
                nodes: RwLock::new(HashMap::new()),
                options,
                changed: tokio::sync::Notify::new(),
            }),
            watcher: None,
        }
    }

    fn node(&self, id: &str, url: &str) -> Result<Arc<Node>, ClientError> {
        let o = &self.shared.options;
        let channel = endpoint(url, o.tls.as_ref(), o.connect_timeout)?.connect_lazy();
        Ok(Arc::new(Node {
            id: id.to_owned(),
            url: url.to_owned(),
            channel,
            in_flight: AtomicUsize::new(0),
            down_until: Mutex::new(None),
        }))
    }

    /// The nodes known now.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let now = Instant::now();
        let mut list: Vec<NodeStatus> = self
            .shared
            .nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|n| NodeStatus {
                id: n.id.clone(),
                url: n.url.clone(),
                in_flight: n.in_flight.load(Ordering::Relaxed),
                down: n.is_down(now),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Waits until at least `count` nodes are known, or `timeout` passes; returns how
    /// many are known.
    pub async fn wait_for_nodes(&self, count: usize, timeout: Duration) -> usize {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            let n = self
                .shared
                .nodes
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .len();
            if n >= count {
                return n;
            }
            if tokio::time::timeout_at(end, changed).await.is_err() {
                return self
                    .shared
                    .nodes
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .len();
            }
        }
    }

    /// Picks a node not in `tried`: two at random, the less loaded wins; nodes marked
    /// down only when no other is left.
    fn pick(&self, tried: &[String]) -> Option<Arc<Node>> {
        let now = Instant::now();
        let nodes = self.shared.nodes.read().unwrap_or_else(|p| p.into_inner());
        let fresh: Vec<&Arc<Node>> = nodes.values().filter(|n| !tried.contains(&n.id)).collect();
        let up: Vec<&Arc<Node>> = fresh.iter().copied().filter(|n| !n.is_down(now)).collect();
        let pool = if up.is_empty() { fresh } else { up };
        match pool.len() {
            0 => None,
            1 => Some(pool[0].clone()),
            n => {
                let a = random() as usize % n;
                let b = (a + 1 + random() as usize % (n - 1)) % n;
                let (x, y) = (pool[a], pool[b]);
                let load = |n: &Node| n.in_flight.load(Ordering::Relaxed);
                Some(if load(y) < load(x) {
                    y.clone()
                } else {
                    x.clone()
                })
            }
        }
    }

    /// Runs one evaluation on some node within `deadline`, failing over as described
    /// in the module documentation. `on_event` sees every response of the attempt
    /// that delivers them.
    pub async fn evaluate<F>(
        &self,
        request: &EvalRequest,
        deadline: Duration,
        mut on_event: F,
    ) -> Result<Evaluated, ClientError>
    where
        F: FnMut(&EvaluateResponse),
    {
        let end = Instant::now() + deadline;
        let options = &self.shared.options;
        let mut tried: Vec<String> = Vec::new();
        let mut last_error: Option<ClientError> = None;
        for _ in 0..options.max_attempts.max(1) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(node) = self.pick(&tried) else {
                break;
            };
            tried.push(node.id.clone());
            node.in_flight.fetch_add(1, Ordering::Relaxed);
            let mut delivered = false;
            let result = evaluate(&node.channel, request, left, |r| {
                delivered = true;
                on_event(r);
            })
            .await;
            node.in_flight.fetch_sub(1, Ordering::Relaxed);
            let error = match result {
                Ok(done) => {
                    node.mark_up();
                    return Ok(done);
                }
                Err(e) => e,
            };
            match failover(&error) {
                Some(Failure::Busy) => node.mark_down(options.busy_for),
                Some(Failure::Down) => node.mark_down(options.down_for),
                None => return Err(error),
            }
            tracing::debug!(node = %node.id, error = %error, delivered, "evaluation failed on a node");
            if delivered {
                return Err(error);
            }
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| ClientError::NoNode("no node is registered".into())))
    }
}

enum Failure {
    /// The node is overloaded: avoid it briefly.
    Busy,
    /// The node is unreachable, draining or died: avoid it for a while.
    Down,
}

/// Whether an error says the node (not the request) failed.
fn failover(error: &ClientError) -> Option<Failure> {
    match error {
        ClientError::Connect { .. } => Some(Failure::Down),
        ClientError::Status(s) => match s.code() {
            Code::ResourceExhausted => Some(Failure::Busy),
            // Draining, a dropped connection, a node killed mid-stream.
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted => {
                Some(Failure::Down)
            }
            _ => None,
        },
        ClientError::Protocol(_) => Some(Failure::Down),
        _ => None,
    }
}

/// A random number: every `RandomState` is freshly keyed, which is all the choice of
/// nodes needs (no cryptography).
fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// Keeps `shared.nodes` equal to the registrations under `base`.
async fn watch(shared: std::sync::Weak<Shared>, connection: String, base: String) {
    let Some(options) = shared.upgrade().map(|s| s.options.clone()) else {
        return;
    };
    let mut backoff = options.zookeeper_backoff;
    let mut warned = false;
    loop {
        let connect = zk::Client::connector()
            .with_session_timeout(options.zookeeper_session_timeout)
            .with_connection_timeout(options.connect_timeout)
            .connect(&connection)
            .await;
        let client = match connect {
            Ok(c) => c,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, %connection, "zookeeper unreachable; retrying");
                    warned = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        warned = false;
        backoff = options.zookeeper_backoff;
        loop {
            if shared.strong_count() == 0 {
                return;
            }
            let watcher = match client.get_and_watch_children(&base).await {
                Ok((children, _, watcher)) => {
                    let mut found = Vec::new();
                    for child in children {
                        if let Ok((data, _)) = client.get_data(&format!("{base}/{child}")).await {
                            if let Ok(i) = serde_json::from_slice::<Instance>(&data) {
                                found.push(i);
                            }
                        }
                    }
                    let Some(s) = shared.upgrade() else { return };
                    update(&s, found);
                    watcher
                }
                Err(zk::Error::NoNode) => match client.check_and_watch_stat(&base).await {
                    Ok((Some(_), _)) => continue,
                    Ok((None, watcher)) => {
                        let Some(s) = shared.upgrade() else { return };
                        update(&s, Vec::new());
                        watcher
                    }
                    Err(_) => break,
                },
                Err(_) => break,
            };
            let event = watcher.changed().await;
            if event.session_state.is_terminated() {
                break;
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Replaces the node list, keeping the channels and state of nodes still registered.
fn update(shared: &Arc<Shared>, found: Vec<Instance>) {
    let fleet = Fleet {
        shared: shared.clone(),
        watcher: None,
    };
    let mut next = HashMap::new();
    {
        let current = shared.nodes.read().unwrap_or_else(|p| p.into_inner());
        for i in found {
            let tls = shared.options.tls.as_ref().is_some_and(|t| !t.is_empty());
            let url = match (tls, i.ssl_port, i.port) {
                (true, Some(p), _) => format!("https://{}:{p}", bracket(&i.address)),
                (_, _, Some(p)) => format!("http://{}:{p}", bracket(&i.address)),
                _ => continue,
            };
            match current.get(&i.id) {
                Some(n) if n.url == url => {
                    next.insert(i.id.clone(), n.clone());
                }
                _ => match fleet.node(&i.id, &url) {
                    Ok(n) => {
                        next.insert(i.id.clone(), n);
                    }
                    Err(e) => tracing::warn!(node = %i.id, error = %e, "unusable registration"),
                },
            }
        }
    }
    *shared.nodes.write().unwrap_or_else(|p| p.into_inner()) = next;
    shared.changed.notify_waiters();
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}
