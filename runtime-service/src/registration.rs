//! Registration in ZooKeeper, in the layout of Apache Curator's service discovery, so
//! that Curator-based backends find this node unchanged: an ephemeral
//! `<basePath>/<serviceId>` holding a `ServiceInstance` JSON document.
//!
//! The node registers only once it serves; ZooKeeper being down (at start or later)
//! never stops it from serving: a background task reconnects with exponential backoff
//! and re-creates the znode after a reconnect, a session expiry, or its deletion by
//! someone else. Draining removes the znode first thing. State changes are logged
//! once each, not in a loop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long removing the znode on drain may take.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("service.advertisedHost `{0}` is not host:port")]
    Address(String),
    #[error("zookeeper.basePath `{0}` is not an absolute ZooKeeper path")]
    BasePath(String),
}

/// Curator's `ServiceInstance`, field for field; node details go in `payload`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstance {
    pub name: String,
    pub id: String,
    pub address: String,
    pub port: u16,
    pub ssl_port: Option<u16>,
    pub payload: NodeDetails,
    #[serde(rename = "registrationTimeUTC")]
    pub registration_time_utc: u64,
    pub service_type: &'static str,
    pub uri_spec: Option<String>,
}

/// What a backend may want to know about a node beyond Curator's keys.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDetails {
    /// `name@version` of every runtime offered.
    pub runtimes: Vec<String>,
    pub default_runtime: String,
    pub version: String,
    pub max_concurrent: usize,
    pub queue_size: usize,
    pub tls: bool,
}

impl ServiceInstance {
    /// The document for `address` (`host:port`), named `runtime` as jsheets' nodes are.
    pub fn new(
        id: &str,
        address: &str,
        tls: bool,
        payload: NodeDetails,
    ) -> Result<Self, RegistrationError> {
        let (host, port) = split_host_port(address)
            .ok_or_else(|| RegistrationError::Address(address.to_owned()))?;
        Ok(ServiceInstance {
            name: "runtime".into(),
            id: id.to_owned(),
            address: host,
            port,
            ssl_port: tls.then_some(port),
            payload,
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

impl Registration {
    /// Starts registering `instance` in the background.
    pub fn start(target: Target, instance: ServiceInstance) -> Result<Self, RegistrationError> {
        if !target.base_path.starts_with('/') || target.base_path.ends_with('/') {
            return Err(RegistrationError::BasePath(target.base_path));
        }
        let stop = CancellationToken::new();
        let (done_tx, done_rx) = oneshot::channel();
        let task = tokio::spawn(run(target, instance, stop.clone(), done_tx));
        Ok(Registration {
            stop,
            done: Some(done_rx),
            task,
        })
    }

    /// Removes the znode (if registered) and stops; bounded in time.
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

async fn run(
    target: Target,
    instance: ServiceInstance,
    stop: CancellationToken,
    done: oneshot::Sender<()>,
) {
    let path = format!("{}/{}", target.base_path, instance.id);
    let data = match serde_json::to_vec(&instance) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "zookeeper: encoding the service instance");
            let _ = done.send(());
            return;
        }
    };
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
        match session(&client, &path, &data, &stop, &mut quiet).await {
            SessionEnd::Stopped => {
                // Drain: the znode goes first, then the session (which would remove it
                // too, but only after the session timeout on a hard exit).
                let removed =
                    tokio::time::timeout(DEREGISTER_TIMEOUT, client.delete(&path, None)).await;
                match removed {
                    Ok(Ok(())) | Ok(Err(zk::Error::NoNode)) => {
                        tracing::info!(%path, "zookeeper: deregistered")
                    }
                    Ok(Err(e)) => tracing::warn!(%path, error = %e, "zookeeper: deregistering"),
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

/// Keeps the znode registered for the lifetime of one session.
async fn session(
    client: &zk::Client,
    path: &str,
    data: &[u8],
    stop: &CancellationToken,
    quiet: &mut Quiet,
) -> SessionEnd {
    let mut states = client.state_watcher();
    let parent = path.rsplit_once('/').map_or("/", |(p, _)| p);
    loop {
        // (Re-)create the znode; a leftover of our previous session (not yet expired)
        // is replaced so that it does not vanish later with that session.
        let registered = async {
            let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            match client.mkdir(parent, &persistent).await {
                Ok(()) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(e),
            }
            let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
            match client.create(path, data, &ephemeral).await {
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
        };
        let registered = tokio::select! {
            _ = stop.cancelled() => return SessionEnd::Stopped,
            r = registered => r,
        };
        if let Err(e) = registered {
            return SessionEnd::Lost(format!("registering {path}: {e}"));
        }
        quiet.info("registered", &path);
        // Watch the znode: deleted by someone else means register again.
        let watch = match client.check_and_watch_stat(path).await {
            Ok((_, w)) => w,
            Err(e) => return SessionEnd::Lost(format!("watching {path}: {e}")),
        };
        let mut watch = Box::pin(watch.changed());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return SessionEnd::Stopped,
                event = &mut watch => {
                    if event.event_type == zk::EventType::NodeDeleted {
                        break;
                    }
                    if event.session_state.is_terminated() {
                        return SessionEnd::Lost(format!("session {:?}", event.session_state));
                    }
                    // Any other change (data, re-creation): watch again.
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
            runtimes: vec!["python-3.11@3.11.2".into()],
            default_runtime: "python-3.11".into(),
            version: "0.1.0".into(),
            max_concurrent: 2,
            queue_size: 4,
            tls: false,
        }
    }

    #[test]
    fn instances_have_curators_keys() {
        let i = ServiceInstance::new("runtime-1", "node-a:8080", false, details()).unwrap();
        let v = serde_json::to_value(&i).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
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
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(v["address"], "node-a");
        assert_eq!(v["port"], 8080);
        assert!(v["sslPort"].is_null());
        assert_eq!(v["serviceType"], "DYNAMIC");
        assert_eq!(v["payload"]["runtimes"][0], "python-3.11@3.11.2");
        let tls = ServiceInstance::new("x", "[::1]:9443", true, details()).unwrap();
        assert_eq!((tls.address.as_str(), tls.ssl_port), ("::1", Some(9443)));
    }

    #[test]
    fn bad_addresses_are_refused() {
        for bad in ["node", "node:", ":80", "node:0", "node:http", "node:70000"] {
            assert!(
                ServiceInstance::new("x", bad, false, details()).is_err(),
                "{bad}"
            );
        }
    }
}
