//! A fleet of nodes discovered in ZooKeeper (Curator's service-discovery layout, as the
//! nodes register themselves) or given as a list, with evaluations spread across them.
//!
//! - Discovery: every child of the base path (`/jsheets/services/runtime`) is a Curator
//!   `ServiceInstance` (whose `payload` is `null`); a node's own [`NodeDetails`]
//!   (runtimes, capacity, TLS) are read from a znode of the same name under
//!   [`details_path`] (`/jsheets/runtime-nodes/<id>`), outside Curator's tree. A node
//!   without details (registered by another implementation, or not written yet) is
//!   used as if it offered every runtime, its `sslPort` deciding TLS.
//! - Runtimes: an evaluation asking for a runtime goes to nodes whose details offer it
//!   (or have no details); only when no known node offers it is any node chosen, so that
//!   the node's own error reaches the caller.
//! - Choice: of two nodes picked at random among those not marked down, the one with
//!   fewer evaluations in flight from this client ("power of two choices"), which
//!   steers work away from slow or busy nodes better than round-robin.
//! - Failover: when a node fails before the evaluation produced anything (unreachable,
//!   `RESOURCE_EXHAUSTED`, `UNAVAILABLE` while draining, the connection dropping), the
//!   evaluation is retried on another node within the same deadline. Sandboxes are
//!   single-use and stateless, so such a retry cannot be observed by the snippet.
//!   Once output has been passed to the caller, an error is returned instead, unless
//!   `FleetOptions::deliver_on_completion` holds responses until an attempt completes,
//!   which makes every such failure retryable.
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
use serde::{Deserialize, Serialize};
use tokio::task::{JoinHandle, JoinSet};
use tonic::Code;
use zookeeper_client as zk;

use crate::{endpoint, evaluate, Channel, ClientError, ClientTls, EvalRequest, Evaluated};

/// Longest pause between two ZooKeeper connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Where the nodes registered under the service path `base_path` keep their
/// [`NodeDetails`]: one ephemeral znode `<details_path>/<id>` per node, next to its
/// `ServiceInstance` `<base_path>/<id>`.
///
/// The rule: for `base_path` = `<root>/<services>/<name>` (Curator's discovery base
/// path `<root>/<services>` and service name `<name>`), the details live in
/// `<root>/<name>-nodes`, a sibling of the discovery base path: the default
/// `/jsheets/services/runtime` gives `/jsheets/runtime-nodes`, `/prod/svc/java` gives
/// `/prod/java-nodes`. Curator reads every child of `<base_path>` as an instance and
/// lists the children of `<root>/<services>` as service names, so nothing there may be
/// ours. With a one-level `base_path` (`/runtime`, discovery base `/`) the details go
/// to `/runtime-nodes`, which a Curator reader asked for all service names under `/`
/// lists as a name (nothing better exists in that layout). `None` when no such place
/// exists: `base_path` is `/`, or its parent is named `<name>-nodes` itself.
pub fn details_path(base_path: &str) -> Option<String> {
    let base = base_path.trim_end_matches('/');
    let (discovery, name) = base.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    let dir = format!("{name}-nodes");
    let (root, services) = discovery.rsplit_once('/').unwrap_or(("", ""));
    if services == dir {
        return None;
    }
    Some(format!("{root}/{dir}"))
}

/// What a node publishes about itself at `<`[`details_path`]`>/<id>`, beyond Curator's
/// `ServiceInstance` keys (whose `payload` must stay `null` for Curator readers built
/// with `Void` payloads, as jsheets' backend is). Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDetails {
    /// The service id: the instance's `id` and the name of both znodes.
    pub id: String,
    /// Every runtime offered.
    pub runtimes: Vec<RuntimeOffer>,
    /// The runtime an evaluation naming none runs in.
    pub default_runtime: String,
    /// The jsheets-runtime version of the node.
    pub version: String,
    /// Evaluations run at once.
    pub max_concurrent: usize,
    /// Evaluations waiting for a slot beyond those.
    pub queue_size: usize,
    /// Whether the node serves TLS only (then the instance's `sslPort` is its port).
    pub tls: bool,
}

/// One runtime a node offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeOffer {
    /// Its name as `ListRuntimes` gives it (`python-3.11`).
    pub name: String,
    /// Its version as written in its `runtime.yml` (`3.11.2`).
    pub version: String,
    /// Its language (`python`).
    pub language: String,
}

impl NodeDetails {
    /// Whether the node offers a runtime for `spec` as a node resolves it: `name`,
    /// `name@version`, `language:version` or `language` (a version matching exactly
    /// or by its leading numeric components); an empty `spec` means the node's default.
    pub fn offers(&self, spec: &str) -> bool {
        if spec.is_empty() {
            return true;
        }
        self.runtimes.iter().any(|r| {
            if let Some((name, version)) = spec.split_once('@') {
                r.name == name && version_matches(&r.version, version)
            } else if let Some((language, version)) = spec.split_once(':') {
                r.language == language && version_matches(&r.version, version)
            } else {
                r.name == spec || r.language == spec
            }
        })
    }
}

/// `wanted` is `have`, or up to three numbers equal to the leading numbers of `have`
/// (`3.11` matches `3.11.2`, `17` matches `17.0.15+6`).
fn version_matches(have: &str, wanted: &str) -> bool {
    if wanted == have {
        return true;
    }
    let parts: Vec<&str> = wanted.split('.').collect();
    if parts.len() > 3 {
        return false;
    }
    let mut leading = have.split('.').map(|p| {
        let digits = p.len() - p.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        p[..digits].parse::<u64>().ok()
    });
    parts.iter().all(|part| {
        let have = leading.next().unwrap_or(Some(0));
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && part.parse::<u64>().ok().is_some_and(|p| Some(p) == have)
    })
}

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
    /// Hold each attempt's responses until it completes, then hand them on: output
    /// arrives at the end instead of live, but a node dying mid-evaluation is always
    /// retried on another (sandboxes keep nothing, so running a snippet again is
    /// harmless). Live delivery can fail over only before the first response.
    pub deliver_on_completion: bool,
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
            deliver_on_completion: false,
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
    /// `None`: the node published none (it is taken to offer everything).
    details: Mutex<Option<Arc<NodeDetails>>>,
}

impl Node {
    fn details(&self) -> Option<Arc<NodeDetails>> {
        self.details
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the node offers `runtime` (see [`NodeDetails::offers`]).
    fn offers(&self, runtime: &str) -> bool {
        self.details().is_none_or(|d| d.offers(runtime))
    }

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
    /// What the node published about itself; `None` if nothing (or nothing readable).
    pub details: Option<NodeDetails>,
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

/// Curator's `ServiceInstance`, the fields a client needs (`payload` is ignored).
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
    /// ZooKeeper ensemble `connection` (`zk1:2181,zk2:2181`), with their details from
    /// [`details_path`] when they published any, kept up to date by a background task
    /// (stopped when the last clone is dropped). Returns at once; see
    /// [`Fleet::wait_for_nodes`].
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
            details: Mutex::new(None),
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
                details: n.details().map(|d| (*d).clone()),
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

    /// Picks a node for `runtime` not in `tried`: two at random among those offering
    /// it (all nodes if none does), the less loaded wins; nodes marked down only when
    /// no other is left.
    fn pick(&self, runtime: &str, tried: &[String]) -> Option<Arc<Node>> {
        let now = Instant::now();
        let nodes = self.shared.nodes.read().unwrap_or_else(|p| p.into_inner());
        let offering: Vec<&Arc<Node>> = nodes.values().filter(|n| n.offers(runtime)).collect();
        let candidates = if offering.is_empty() {
            nodes.values().collect()
        } else {
            offering
        };
        let fresh: Vec<&Arc<Node>> = candidates
            .into_iter()
            .filter(|n| !tried.contains(&n.id))
            .collect();
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
            let Some(node) = self.pick(&request.runtime, &tried) else {
                break;
            };
            tried.push(node.id.clone());
            node.in_flight.fetch_add(1, Ordering::Relaxed);
            let mut delivered = false;
            let mut held: Vec<EvaluateResponse> = Vec::new();
            let result = evaluate(&node.channel, request, left, |r| {
                if options.deliver_on_completion {
                    held.push(r.clone());
                } else {
                    delivered = true;
                    on_event(r);
                }
            })
            .await;
            node.in_flight.fetch_sub(1, Ordering::Relaxed);
            let error = match result {
                Ok(done) => {
                    node.mark_up();
                    held.iter().for_each(&mut on_event);
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

/// Keeps `shared.nodes` equal to the registrations under `base`, with their details.
async fn watch(shared: std::sync::Weak<Shared>, connection: String, base: String) {
    let Some(options) = shared.upgrade().map(|s| s.options.clone()) else {
        return;
    };
    let details_dir = details_path(&base);
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
            // Every watch of this round: the first to fire starts the next one (the
            // others are dropped with the set).
            let mut watches = JoinSet::new();
            match client.get_and_watch_children(&base).await {
                Ok((children, _, watcher)) => {
                    watches.spawn(watcher.changed());
                    let mut found = Vec::new();
                    for child in children {
                        let Ok((data, _)) = client.get_data(&format!("{base}/{child}")).await
                        else {
                            continue;
                        };
                        let Ok(instance) = serde_json::from_slice::<Instance>(&data) else {
                            continue;
                        };
                        let details = match &details_dir {
                            Some(dir) => {
                                let path = format!("{dir}/{child}");
                                read_details(&client, &path, &mut watches).await
                            }
                            None => None,
                        };
                        found.push((instance, details));
                    }
                    let Some(s) = shared.upgrade() else { return };
                    update(&s, found);
                }
                Err(zk::Error::NoNode) => match client.check_and_watch_stat(&base).await {
                    Ok((Some(_), _)) => continue,
                    Ok((None, watcher)) => {
                        watches.spawn(watcher.changed());
                        let Some(s) = shared.upgrade() else { return };
                        update(&s, Vec::new());
                    }
                    Err(_) => break,
                },
                Err(_) => break,
            };
            match watches.join_next().await {
                Some(Ok(event)) if !event.session_state.is_terminated() => {}
                _ => break,
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// The details at `path`, watched (for creation, change and deletion) through
/// `watches`; `None` when there are none or they cannot be read.
async fn read_details(
    client: &zk::Client,
    path: &str,
    watches: &mut JoinSet<zk::WatchedEvent>,
) -> Option<Arc<NodeDetails>> {
    let (stat, watcher) = client.check_and_watch_stat(path).await.ok()?;
    watches.spawn(watcher.changed());
    stat?;
    let (data, _) = client.get_data(path).await.ok()?;
    match serde_json::from_slice::<NodeDetails>(&data) {
        Ok(d) => Some(Arc::new(d)),
        Err(e) => {
            tracing::debug!(%path, error = %e, "unreadable node details: ignored");
            None
        }
    }
}

/// Replaces the node list, keeping the channels and state of nodes still registered.
fn update(shared: &Arc<Shared>, found: Vec<(Instance, Option<Arc<NodeDetails>>)>) {
    let fleet = Fleet {
        shared: shared.clone(),
        watcher: None,
    };
    let client_tls = shared.options.tls.as_ref().is_some_and(|t| !t.is_empty());
    let mut next = HashMap::new();
    {
        let current = shared.nodes.read().unwrap_or_else(|p| p.into_inner());
        for (i, details) in found {
            let url = match node_url(&i, details.as_deref(), client_tls) {
                Some(url) => url,
                None => continue,
            };
            let node = match current.get(&i.id) {
                Some(n) if n.url == url => n.clone(),
                _ => match fleet.node(&i.id, &url) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(node = %i.id, error = %e, "unusable registration");
                        continue;
                    }
                },
            };
            *node.details.lock().unwrap_or_else(|p| p.into_inner()) = details;
            next.insert(i.id.clone(), node);
        }
    }
    *shared.nodes.write().unwrap_or_else(|p| p.into_inner()) = next;
    shared.changed.notify_waiters();
}

/// The URL of a registered node: `https://` to its `sslPort` (or, if the details
/// say it serves TLS only and there is no `sslPort`, its `port`) when this client has
/// TLS options; `http://` to its `port` otherwise.
fn node_url(i: &Instance, details: Option<&NodeDetails>, client_tls: bool) -> Option<String> {
    let host = bracket(&i.address);
    let tls_port = i.ssl_port.or_else(|| details.filter(|d| d.tls).and(i.port));
    match (client_tls, tls_port, i.port) {
        (true, Some(p), _) => Some(format!("https://{host}:{p}")),
        (_, _, Some(p)) => Some(format!("http://{host}:{p}")),
        _ => None,
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(runtimes: &[(&str, &str, &str)]) -> NodeDetails {
        NodeDetails {
            id: "runtime-1".into(),
            runtimes: runtimes
                .iter()
                .map(|(name, version, language)| RuntimeOffer {
                    name: (*name).into(),
                    version: (*version).into(),
                    language: (*language).into(),
                })
                .collect(),
            default_runtime: "python-3.11".into(),
            version: "0.1.0".into(),
            max_concurrent: 2,
            queue_size: 4,
            tls: false,
        }
    }

    #[test]
    fn details_live_beside_curators_base_path() {
        let cases = [
            ("/jsheets/services/runtime", Some("/jsheets/runtime-nodes")),
            ("/jsheets/services/runtime/", Some("/jsheets/runtime-nodes")),
            ("/prod/jsheets/svc/java", Some("/prod/jsheets/java-nodes")),
            ("/services/runtime", Some("/runtime-nodes")),
            ("/runtime", Some("/runtime-nodes")),
            ("/x/runtime-nodes/runtime", None),
            ("/", None),
            ("", None),
        ];
        for (base, expected) in cases {
            let got = details_path(base);
            assert_eq!(got.as_deref(), expected, "{base}");
            // Never inside Curator's discovery base path (the base path's parent).
            if let Some(got) = got {
                let discovery = base.trim_end_matches('/').rsplit_once('/').unwrap().0;
                if !discovery.is_empty() {
                    assert!(!got.starts_with(&format!("{discovery}/")), "{base} {got}");
                }
            }
        }
    }

    #[test]
    fn runtimes_are_matched_as_nodes_resolve_them() {
        let d = details(&[
            ("python-3.11", "3.11.2", "python"),
            ("openjdk-17", "17.0.15+6", "java"),
        ]);
        for spec in [
            "",
            "python-3.11",
            "python-3.11@3.11.2",
            "python-3.11@3.11",
            "python-3.11@3",
            "python",
            "python:3.11",
            "java",
            "java:17",
            "java:17.0.15",
            "openjdk-17@17.0.15+6",
        ] {
            assert!(d.offers(spec), "{spec}");
        }
        for spec in [
            "python-3.9",
            "python-3.11@3.10",
            "python:3.9",
            "node",
            "java:21",
            "openjdk-17@17.0.15.1",
            "python-3.11@",
        ] {
            assert!(!d.offers(spec), "{spec}");
        }
    }

    #[test]
    fn details_parse_ignoring_unknown_keys() {
        let json = r#"{"id":"runtime-1","runtimes":[{"name":"shell","version":"5.2","language":"shell","extra":1}],
            "defaultRuntime":"shell","version":"0.1.0","maxConcurrent":2,"queueSize":4,"tls":true,"load":0.5}"#;
        let d: NodeDetails = serde_json::from_str(json).unwrap();
        assert!(d.tls && d.offers("shell") && !d.offers("python"));
        let back = serde_json::to_value(&d).unwrap();
        assert_eq!(back["defaultRuntime"], "shell");
        assert_eq!(back["runtimes"][0]["language"], "shell");
    }

    fn instance(ssl_port: Option<u16>) -> Instance {
        Instance {
            id: "runtime-1".into(),
            address: "::1".into(),
            port: Some(8080),
            ssl_port,
        }
    }

    #[test]
    fn urls_follow_ssl_port_and_details() {
        let plain = details(&[]);
        let tls = NodeDetails {
            tls: true,
            ..details(&[])
        };
        let url =
            |ssl, d: Option<&NodeDetails>, client_tls| node_url(&instance(ssl), d, client_tls);
        assert_eq!(url(None, None, false).unwrap(), "http://[::1]:8080");
        assert_eq!(url(None, None, true).unwrap(), "http://[::1]:8080");
        assert_eq!(url(Some(8443), None, true).unwrap(), "https://[::1]:8443");
        assert_eq!(url(Some(8443), None, false).unwrap(), "http://[::1]:8080");
        assert_eq!(url(None, Some(&plain), true).unwrap(), "http://[::1]:8080");
        assert_eq!(url(None, Some(&tls), true).unwrap(), "https://[::1]:8080");
    }

    #[tokio::test]
    async fn picks_prefer_nodes_offering_the_runtime() {
        let fleet = Fleet::from_endpoints(
            &[
                "http://127.0.0.1:1".to_owned(),
                "http://127.0.0.1:2".to_owned(),
                "http://127.0.0.1:3".to_owned(),
            ],
            FleetOptions::default(),
        )
        .unwrap();
        let set = |url: &str, d: Option<NodeDetails>| {
            let nodes = fleet.shared.nodes.read().unwrap();
            *nodes[url].details.lock().unwrap() = d.map(Arc::new);
        };
        set(
            "http://127.0.0.1:1",
            Some(details(&[("python-3.11", "3.11.2", "python")])),
        );
        set(
            "http://127.0.0.1:2",
            Some(details(&[("shell", "5.2", "shell")])),
        );
        // Node 3 published nothing: it may offer anything.
        for _ in 0..50 {
            let id = fleet.pick("python-3.11", &[]).unwrap().id.clone();
            assert_ne!(id, "http://127.0.0.1:2");
            let id = fleet.pick("shell", &[]).unwrap().id.clone();
            assert_ne!(id, "http://127.0.0.1:1");
        }
        assert_eq!(
            fleet
                .pick("python", &["http://127.0.0.1:1".into()])
                .unwrap()
                .id,
            "http://127.0.0.1:3"
        );
        // Nobody else offers it: no node.
        assert!(fleet
            .pick(
                "python",
                &["http://127.0.0.1:1".into(), "http://127.0.0.1:3".into()]
            )
            .is_none());
        // Offered by no node with details and no node without: any node.
        set("http://127.0.0.1:3", Some(details(&[])));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.insert(fleet.pick("node-20", &[]).unwrap().id.clone());
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(
            fleet.nodes()[1].details.as_ref().unwrap().runtimes[0].name,
            "shell"
        );
    }
}
