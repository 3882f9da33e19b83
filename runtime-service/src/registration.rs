//! Registration in ZooKeeper, in the layout of Apache Curator's service discovery, so
//! that Curator-based backends find this node unchanged, plus the node's own details
//! beside it:
//!
//! - `<basePath>/<serviceId>` (default `/jsheets/services/runtime/<serviceId>`):
//!   ephemeral, Curator's `ServiceInstance` JSON with exactly Curator's keys and
//!   `payload` `null`. jsheets' backend reads with `ServiceDiscoveryBuilder
//!   .builder(Void.class)`; Curator's `JsonInstanceSerializer` casts any non-null
//!   payload to `Void`, fails, and drops the instance, so nothing may go there.
//! - `<detailsPath>/<serviceId>` (default `/jsheets/runtime-nodes/<serviceId>`):
//!   ephemeral, [`NodeDetails`] JSON (runtimes offered, default runtime, version,
//!   capacity, TLS), read by `client::Fleet`. `detailsPath` is derived from the base
//!   path by [`client::fleet::details_path`]: for `<root>/<services>/<name>` it is
//!   `<root>/<name>-nodes`, a sibling of Curator's discovery base path
//!   `<root>/<services>`, because Curator parses every child of `<basePath>` as an
//!   instance and lists every child of `<root>/<services>` as a service name. A base
//!   path whose parent is itself named `<name>-nodes`, or `/`, has no such place and
//!   is refused.
//!
//! Both znodes share one lifecycle: the details are written first (so that a reader
//! who sees the instance can normally read them), both are re-created after a
//! reconnect, a session expiry, or the deletion of either by someone else, and
//! draining removes the instance first thing, then the details. Missing parents are
//! created as container znodes, as Curator creates them (ZooKeeper removes them once
//! empty).
//!
//! The node registers only once it serves; ZooKeeper being down (at start or later)
//! never stops it from serving: a background task reconnects with exponential backoff.
//! State changes are logged once each, not in a loop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long removing the znodes on drain may take.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("service.advertisedHost `{0}` is not host:port")]
    Address(String),
    #[error("zookeeper.basePath `{0}` is not an absolute ZooKeeper path with room for node details beside it")]
    BasePath(String),
    #[error("encoding the registration: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What the node publishes about itself at `<detailsPath>/<serviceId>`; the schema
/// belongs to the client, which reads it.
pub use client::fleet::{NodeDetails, RuntimeOffer};

/// Curator's `ServiceInstance`, field for field.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstance {
    pub name: String,
    pub id: String,
    pub address: String,
    pub port: u16,
    pub ssl_port: Option<u16>,
    /// Always `null`: Curator readers built with `Void` payloads (jsheets' backend)
    /// drop an instance with anything else. The node's details have their own znode.
    pub payload: (),
    #[serde(rename = "registrationTimeUTC")]
    pub registration_time_utc: u64,
    pub service_type: &'static str,
    pub uri_spec: Option<String>,
}

impl ServiceInstance {
    /// The document for `address` (`host:port`), named `runtime` as jsheets' nodes are.
    pub fn new(id: &str, address: &str, tls: bool) -> Result<Self, RegistrationError> {
        let (host, port) = split_host_port(address)
            .ok_or_else(|| RegistrationError::Address(address.to_owned()))?;
        Ok(ServiceInstance {
            name: "runtime".into(),
            id: id.to_owned(),
            address: host,
            port,
            ssl_port: tls.then_some(port),
            payload: (),
            registration_time_utc: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            service_type: "DYNAMIC",
            uri_spec: None,
        })
    }
}

/// `host:port` or `[v6]:port`.
fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// Where and how to register.
#[derive(Debug, Clone)]
pub struct Target {
    pub connection_string: String,
    pub base_path: String,
    pub connect_backoff: Duration,
    pub session_timeout: Duration,
}

/// The running registration; [`Registration::deregister`] removes it.
#[derive(Debug)]
pub struct Registration {
    stop: CancellationToken,
    done: Option<oneshot::Receiver<()>>,
    task: JoinHandle<()>,
}

/// The two znodes of a registration and their contents.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Znodes {
    /// `<basePath>/<id>`: the `ServiceInstance`.
    instance: String,
    instance_data: Vec<u8>,
    /// `<detailsPath>/<id>`: the [`NodeDetails`].
    details: String,
    details_data: Vec<u8>,
}

impl Znodes {
    /// Where `instance` and `details` (whose `id` is set to the instance's) go.
    fn new(
        base_path: &str,
        instance: &ServiceInstance,
        mut details: NodeDetails,
    ) -> Result<Znodes, RegistrationError> {
        let bad = || RegistrationError::BasePath(base_path.to_owned());
        if !base_path.starts_with('/') || base_path.ends_with('/') {
            return Err(bad());
        }
        let details_dir = client::fleet::details_path(base_path).ok_or_else(bad)?;
        details.id.clone_from(&instance.id);
        Ok(Znodes {
            instance: format!("{base_path}/{}", instance.id),
            instance_data: serde_json::to_vec(instance)?,
            details: format!("{details_dir}/{}", instance.id),
            details_data: serde_json::to_vec(&details)?,
        })
    }
}

impl Registration {
    /// Starts registering `instance`, with `details` beside it, in the background.
    pub fn start(
        target: Target,
        instance: ServiceInstance,
        details: NodeDetails,
    ) -> Result<Self, RegistrationError> {
        let znodes = Znodes::new(&target.base_path, &instance, details)?;
        let stop = CancellationToken::new();
        let (done_tx, done_rx) = oneshot::channel();
        let task = tokio::spawn(run(target, znodes, stop.clone(), done_tx));
        Ok(Registration {
            stop,
            done: Some(done_rx),
            task,
        })
    }

    /// Removes the znodes (if registered) and stops; bounded in time.
    pub async fn deregister(mut self) {
        self.stop.cancel();
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(DEREGISTER_TIMEOUT + Duration::from_secs(1), done).await;
        }
        self.task.abort();
    }
}

/// Logs each kind of trouble once until things are well again.
#[derive(Default)]
struct Quiet {
    last: Option<&'static str>,
}

impl Quiet {
    fn warn(&mut self, what: &'static str, detail: &dyn std::fmt::Display) {
        if self.last != Some(what) {
            tracing::warn!(%detail, "zookeeper: {what}");
            self.last = Some(what);
        }
    }

    fn info(&mut self, what: &'static str, detail: &dyn std::fmt::Display) {
        if self.last != Some(what) {
            tracing::info!(%detail, "zookeeper: {what}");
            self.last = Some(what);
        }
    }
}

async fn run(target: Target, znodes: Znodes, stop: CancellationToken, done: oneshot::Sender<()>) {
    let mut quiet = Quiet::default();
    let mut backoff = target.connect_backoff.max(Duration::from_millis(10));
    loop {
        let connect = zk::Client::connector()
            .with_session_timeout(target.session_timeout)
            .with_connection_timeout(target.session_timeout.min(Duration::from_secs(5)))
            .connect(&target.connection_string);
        let client = tokio::select! {
            _ = stop.cancelled() => break,
            c = connect => c,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                quiet.warn("unreachable; registration retries in the background", &e);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = target.connect_backoff.max(Duration::from_millis(10));
        match session(&client, &znodes, &stop, &mut quiet).await {
            SessionEnd::Stopped => {
                // Drain: the znodes go first (the instance, so that backends stop
                // choosing this node, then its details), then the session (which would
                // remove them too, but only after the session timeout on a hard exit).
                let removed = tokio::time::timeout(DEREGISTER_TIMEOUT, async {
                    for path in [&znodes.instance, &znodes.details] {
                        match client.delete(path, None).await {
                            Ok(()) | Err(zk::Error::NoNode) => {}
                            Err(e) => return Err((path, e)),
                        }
                    }
                    Ok(())
                })
                .await;
                let path = &znodes.instance;
                match removed {
                    Ok(Ok(())) => tracing::info!(%path, "zookeeper: deregistered"),
                    Ok(Err((path, e))) => {
                        tracing::warn!(%path, error = %e, "zookeeper: deregistering")
                    }
                    Err(_) => tracing::warn!(%path, "zookeeper: deregistering timed out"),
                }
                break;
            }
            SessionEnd::Lost(why) => quiet.warn("session lost; reconnecting", &why),
        }
    }
    let _ = done.send(());
}

enum SessionEnd {
    Stopped,
    Lost(String),
}

/// Creates `path` (ephemeral, with its parents) holding `data`, unless this session
/// already owns it; a leftover of another session (our previous one, not yet expired)
/// is replaced so that it does not vanish later with that session.
async fn ensure(client: &zk::Client, path: &str, data: &[u8]) -> Result<(), zk::Error> {
    let parent = path.rsplit_once('/').map_or("/", |(p, _)| p);
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    // Parents are container znodes, as Curator makes them: ZooKeeper removes them once
    // empty, so one can vanish between mkdir and create; then make it again (twice at
    // most: a parent that keeps vanishing is someone else's doing, and the session
    // loop retries).
    let mut attempts = 0;
    let created = loop {
        if !parent.is_empty() {
            let container = zk::CreateMode::Container.with_acls(zk::Acls::anyone_all());
            match client.mkdir(parent, &container).await {
                Ok(()) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
        match client.create(path, data, &ephemeral).await {
            Err(zk::Error::NoNode) if attempts < 2 => attempts += 1,
            other => break other,
        }
    };
    match created {
        Ok(_) => Ok(()),
        Err(zk::Error::NodeExists) => {
            let (_, stat) = client.get_data(path).await?;
            if stat.ephemeral_owner != client.session_id().0 {
                match client.delete(path, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(e),
                }
                client.create(path, data, &ephemeral).await?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Keeps both znodes registered for the lifetime of one session.
async fn session(
    client: &zk::Client,
    znodes: &Znodes,
    stop: &CancellationToken,
    quiet: &mut Quiet,
) -> SessionEnd {
    let mut states = client.state_watcher();
    let path = znodes.instance.as_str();
    loop {
        // (Re-)create the znodes: the details first, so that whoever sees the instance
        // finds them.
        let registered = async {
            ensure(client, &znodes.details, &znodes.details_data)
                .await
                .map_err(|e| (&znodes.details, e))?;
            ensure(client, &znodes.instance, &znodes.instance_data)
                .await
                .map_err(|e| (&znodes.instance, e))
        };
        let registered = tokio::select! {
            _ = stop.cancelled() => return SessionEnd::Stopped,
            r = registered => r,
        };
        if let Err((p, e)) = registered {
            return SessionEnd::Lost(format!("registering {p}: {e}"));
        }
        quiet.info("registered", &path);
        // Watch both znodes: either deleted (or changed) by someone else means
        // register again.
        let instance_watch = match client.check_and_watch_stat(&znodes.instance).await {
            Ok((_, w)) => w,
            Err(e) => return SessionEnd::Lost(format!("watching {}: {e}", znodes.instance)),
        };
        let details_watch = match client.check_and_watch_stat(&znodes.details).await {
            Ok((_, w)) => w,
            Err(e) => return SessionEnd::Lost(format!("watching {}: {e}", znodes.details)),
        };
        let mut watch = Box::pin(async move {
            tokio::select! {
                e = instance_watch.changed() => e,
                e = details_watch.changed() => e,
            }
        });
        loop {
            tokio::select! {
                _ = stop.cancelled() => return SessionEnd::Stopped,
                event = &mut watch => {
                    if event.session_state.is_terminated() {
                        return SessionEnd::Lost(format!("session {:?}", event.session_state));
                    }
                    // Deleted, changed or re-created: check both and watch again.
                    break;
                }
                state = states.changed() => match state {
                    zk::SessionState::Disconnected => {
                        quiet.warn("disconnected; the session lives on until it times out", &path);
                        // A session that cannot reconnect within its timeout is expired
                        // on the server: start a new one rather than wait forever.
                        let timeout = client.session_timeout();
                        let back = async { loop { if states.changed().await != zk::SessionState::Disconnected { break; } } };
                        tokio::select! {
                            _ = stop.cancelled() => return SessionEnd::Stopped,
                            _ = tokio::time::sleep(timeout) => return SessionEnd::Lost("no reconnection within the session timeout".into()),
                            _ = back => {}
                        }
                        if client.state().is_terminated() {
                            return SessionEnd::Lost(format!("session {:?}", client.state()));
                        }
                        quiet.info("reconnected", &path);
                    }
                    s if s.is_terminated() => return SessionEnd::Lost(format!("session {s:?}")),
                    _ => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details() -> NodeDetails {
        NodeDetails {
            id: String::new(),
            runtimes: vec![RuntimeOffer {
                name: "python-3.11".into(),
                version: "3.11.2".into(),
                language: "python".into(),
            }],
            default_runtime: "python-3.11".into(),
            version: "0.1.0".into(),
            max_concurrent: 2,
            queue_size: 4,
            tls: false,
        }
    }

    #[test]
    fn instances_have_curators_keys_and_a_null_payload() {
        let i = ServiceInstance::new("runtime-1", "node-a:8080", false).unwrap();
        let v = serde_json::to_value(&i).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "name",
            "id",
            "address",
            "port",
            "sslPort",
            "payload",
            "registrationTimeUTC",
            "serviceType",
            "uriSpec",
        ];
        expected.sort_unstable();
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(v["name"], "runtime");
        assert_eq!(v["id"], "runtime-1");
        assert_eq!(v["address"], "node-a");
        assert_eq!(v["port"], 8080);
        assert!(v["sslPort"].is_null());
        assert!(v["payload"].is_null());
        assert!(v["uriSpec"].is_null());
        assert_eq!(v["serviceType"], "DYNAMIC");
        // Literally `"payload":null`, as Curator's `Void` readers need.
        let text = serde_json::to_string(&i).unwrap();
        assert!(text.contains(r#""payload":null"#), "{text}");
        let tls = ServiceInstance::new("x", "[::1]:9443", true).unwrap();
        assert_eq!((tls.address.as_str(), tls.ssl_port), ("::1", Some(9443)));
    }

    #[test]
    fn details_go_beside_curators_tree() {
        let i = ServiceInstance::new("runtime-1", "node-a:8080", false).unwrap();
        let z = Znodes::new("/jsheets/services/runtime", &i, details()).unwrap();
        assert_eq!(z.instance, "/jsheets/services/runtime/runtime-1");
        assert_eq!(z.details, "/jsheets/runtime-nodes/runtime-1");
        let instance: serde_json::Value = serde_json::from_slice(&z.instance_data).unwrap();
        assert!(instance["payload"].is_null());
        let d: serde_json::Value = serde_json::from_slice(&z.details_data).unwrap();
        // The id is the instance's, whatever the caller put there.
        assert_eq!(d["id"], "runtime-1");
        assert_eq!(d["runtimes"][0]["name"], "python-3.11");
        assert_eq!(d["runtimes"][0]["version"], "3.11.2");
        assert_eq!(d["runtimes"][0]["language"], "python");
        assert_eq!(d["defaultRuntime"], "python-3.11");
        assert_eq!(d["version"], "0.1.0");
        assert_eq!(d["maxConcurrent"], 2);
        assert_eq!(d["queueSize"], 4);
        assert_eq!(d["tls"], false);

        let z = Znodes::new("/prod/discovery/java", &i, details()).unwrap();
        assert_eq!(z.instance, "/prod/discovery/java/runtime-1");
        assert_eq!(z.details, "/prod/java-nodes/runtime-1");
        let z = Znodes::new("/runtime", &i, details()).unwrap();
        assert_eq!(z.details, "/runtime-nodes/runtime-1");
        for bad in [
            "",
            "/",
            "relative/path",
            "/jsheets/services/",
            "/x/runtime-nodes/runtime",
        ] {
            assert!(
                matches!(
                    Registration::start(
                        Target {
                            connection_string: "127.0.0.1:1".into(),
                            base_path: bad.into(),
                            connect_backoff: Duration::from_secs(1),
                            session_timeout: Duration::from_secs(1),
                        },
                        i.clone(),
                        details(),
                    ),
                    Err(RegistrationError::BasePath(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_addresses_are_refused() {
        for bad in ["node", "node:", ":80", "node:0", "node:http", "node:70000"] {
            assert!(ServiceInstance::new("x", bad, false).is_err(), "{bad}");
        }
    }
}
