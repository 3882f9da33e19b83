//! `jsheets-runtime serve`: configuration checked before any port is bound, runtimes
//! loaded (built from the host first when none is installed), gRPC with health and
//! optional reflection and TLS, and a graceful shutdown on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use evaluator::runtime::Registry;

use crate::config::MonitoringBackend;
use crate::metrics::{self, Gauges, PoolGauge};
use crate::registration::{NodeDetails, Registration, RuntimeOffer, ServiceInstance, Target};
use evaluator::sandbox::{files, Sandboxes};
use proto::jsheets::snippet_runtime_server::SnippetRuntimeServer;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::config::{Config, Overrides};
use crate::service::{Node, RuntimeService, ServiceError};

/// The gRPC service name health is reported for (besides "").
const SERVICE_NAME: &str = "jsheets.SnippetRuntime";
/// Runtimes built at first start when none is installed, if the host has them.
const DEFAULT_RECIPES: &[&str] = &["openjdk-17", "python-3.11"];

/// Serves with the configuration from `file` (see [`crate::config::load`]) and the command
/// line's `flags` (`--runtimes-dir`, `--state-dir`), which override it.
pub async fn run(file: Option<&Path>, flags: &Overrides) -> Result<ExitCode> {
    let (config, warnings) = match crate::config::load(file, flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jsheets-runtime: {}", crate::report::error_chain(&e));
            return Ok(ExitCode::from(crate::report::EX_USAGE));
        }
    };
    crate::report::init_tracing(
        &config.log.level,
        config.log.format == crate::config::LogFormat::Json,
    );
    for w in warnings {
        tracing::warn!("{w}");
    }
    let addr: SocketAddr =
        match format!("{}:{}", bracket(&config.server.host), config.server.port).parse() {
            Ok(a) => a,
            Err(e) => {
                crate::report::failure(&format!(
                    "server.host: invalid value {:?}: {e}",
                    config.server.host
                ));
                return Ok(ExitCode::from(crate::report::EX_USAGE));
            }
        };
    let tls = match tls_config(&config) {
        Ok(t) => t,
        Err(e) => {
            crate::report::failure(&format!("server.tls: {e:#}"));
            return Ok(ExitCode::from(crate::report::EX_USAGE));
        }
    };
    if config.evaluation.sandbox.disable {
        anyhow::bail!(
            "evaluation.sandbox.disable is set: this node only evaluates in sandboxes; unset it to start"
        );
    }

    if let Err(e) = raise_nofile(&config) {
        crate::report::failure(&crate::report::error_chain(&e));
        return Ok(ExitCode::from(crate::report::EX_NOFILE));
    }

    let mut sandbox_config = crate::sandboxes::config(&config.evaluation.state_dir)?;
    sandbox_config.cpuset = config.evaluation.cpuset.clone();
    sandbox_config.uid_claim_dir = config.evaluation.uid_claim_dir.clone();
    let sandboxes = crate::sandboxes::start(sandbox_config)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    let set_health = |status: ServingStatus| {
        let health = health.clone();
        async move {
            health.set_service_status("", status).await;
            health.set_service_status(SERVICE_NAME, status).await;
        }
    };
    set_health(ServingStatus::NotServing).await;

    let node = Arc::new(Node::new(&config, sandboxes));
    let metrics_stop = CancellationToken::new();
    let metrics_task = start_metrics(&config, &node, metrics_stop.clone());

    let mut builder = Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("configuring TLS")?;
    }
    let allowed = config.server.tls.allowed_clients.clone();
    // Messages may carry the largest snippet plus stdin, the most input files (their
    // bytes, and a name of the longest kind each) and the most inputs (their bytes,
    // input files' names counted in them, and a little framing each); anything bigger is refused by the
    // transport before it is buffered.
    let e = &config.evaluation;
    let max_message = e
        .max_code_bytes
        .saturating_mul(2)
        .saturating_add(e.max_input_file_bytes)
        .saturating_add(u64::from(e.max_input_files) * (files::MAX_NAME_BYTES as u64 + 16))
        .saturating_add(e.max_inputs_bytes)
        .saturating_add(u64::from(e.max_inputs) * 64)
        .saturating_add(1 << 20);
    let max_message = usize::try_from(max_message).unwrap_or(usize::MAX / 4);
    let service = tonic::service::interceptor::InterceptedService::new(
        SnippetRuntimeServer::new(RuntimeService::new(node.clone()))
            .max_decoding_message_size(max_message),
        move |req: tonic::Request<()>| {
            crate::tls::check_client(&req, &allowed).map_err(ServiceError::from)?;
            Ok(req)
        },
    );
    let reflection = config.server.features.enable_grpc_reflection.then(|| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .build_v1()
    });
    let reflection = match reflection {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => anyhow::bail!("building gRPC reflection: {e}"),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut router = builder.add_service(service);
    if config.server.features.enable_health_check {
        router = router.add_service(health_service);
    }
    if let Some(r) = reflection {
        router = router.add_service(r);
    }
    let stop_accepting = shutdown.clone();
    // Without TCP_NODELAY, small final responses wait for delayed ACKs (~40 ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server =
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
            stop_accepting.cancelled().await
        }));
    // Reachable from here on, NOT_SERVING (and Evaluate UNAVAILABLE) until the runtimes
    // are loaded, which at first start includes building the default ones.
    tracing::info!(%local, "accepting connections; loading runtimes");
    let runtimes_dir = config.evaluation.runtimes_dir.clone();
    std::fs::create_dir_all(&runtimes_dir)
        .with_context(|| format!("creating {}", runtimes_dir.display()))?;
    let mut registry = Registry::load(&runtimes_dir);
    if registry.list().is_empty() {
        install_defaults(&runtimes_dir, &node.sandboxes).await;
        registry = Registry::load(&runtimes_dir);
    }
    for problem in registry.problems() {
        tracing::warn!("runtime {} not loaded: {}", problem.dir_name, problem.error);
    }
    if registry.list().is_empty() {
        shutdown.cancel();
        anyhow::bail!(
            "no runtime is installed in {} and none could be built; install one with `jsheets-runtime runtime install NAME`",
            runtimes_dir.display()
        );
    }
    tracing::info!(
        runtimes = %registry.list().iter().map(|r| format!("{}@{}", r.name(), r.version())).collect::<Vec<_>>().join(", "),
        "runtimes loaded"
    );

    if let Err(e) = node.load_runtimes(registry) {
        shutdown.cancel();
        return Err(anyhow::Error::new(e).context("access lists"));
    }
    set_health(ServingStatus::Serving).await;
    // Scripts and tests wait for this line (on stdout, a JSON event with log.format
    // json, its address and service id also as fields).
    if crate::report::json_output() {
        tracing::info!(
            target: crate::report::STDOUT_TARGET,
            %local,
            service_id = %config.service.id,
            "jsheets-runtime listening on {local} as {}",
            config.service.id
        );
    } else {
        println!(
            "jsheets-runtime listening on {local} as {}",
            config.service.id
        );
    }
    tracing::info!(%local, service_id = %config.service.id, "serving");
    let registration = register(&config, local.port(), &node);

    wait_for_signal().await;
    tracing::info!("shutdown requested: draining");
    // Backends stop choosing this node before it refuses work.
    if let Some(r) = registration {
        r.deregister().await;
    }
    set_health(ServingStatus::NotServing).await;
    node.draining.cancel();
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let drained = tokio::time::timeout(grace, async {
        while node.active.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            active = node.active.load(Ordering::SeqCst),
            "grace period over: killing the remaining evaluations"
        );
        node.kill_all.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while node.active.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    shutdown.cancel();
    // Streams still open (idle clients) must not hold the exit.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    node.sandboxes.drain_idle();
    for pool in node.pools().values() {
        pool.shutdown().await;
    }
    // A last push with the final counts, bounded.
    metrics_stop.cancel();
    if let Some(task) = metrics_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Starts pushing metrics when `monitoring.backend = influx`.
fn start_metrics(
    config: &Config,
    node: &Arc<Node>,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if config.monitoring.backend != MonitoringBackend::Influx {
        return None;
    }
    let influx = config.monitoring.influx.clone();
    tracing::info!(uri = %influx.uri, api = if influx.org.is_some() { "v2" } else { "v1" }, step_s = influx.step, "pushing metrics to influx");
    let weak = Arc::downgrade(node);
    let gauges = move || {
        let Some(n) = weak.upgrade() else {
            return (Gauges::default(), Vec::new());
        };
        let pools: Vec<PoolGauge> = n
            .pools()
            .iter()
            .map(|(runtime, p)| {
                let s = p.stats();
                PoolGauge {
                    runtime: runtime.clone(),
                    size: s.size,
                    idle: s.idle,
                    taken: s.taken,
                    misses: s.misses,
                    replaced: s.replaced,
                    lanes: s.lanes,
                    compiled: s.compiled,
                    compile_fallbacks: s.compile_fallbacks,
                    compile_host_starts: s.compile_host_starts,
                }
            })
            .collect();
        let gauges = Gauges {
            active_evaluations: n.active.load(Ordering::SeqCst),
            live_sandboxes: n.sandboxes.live(),
            idle_sandboxes: pools.iter().map(|p| p.idle).sum(),
        };
        (gauges, pools)
    };
    let metrics = node.metrics.clone();
    Some(tokio::spawn(async move {
        if let Err(e) = metrics::push_loop(metrics, influx, gauges, stop).await {
            tracing::error!(error = %e, "metrics disabled");
        }
    }))
}

/// Starts the ZooKeeper registration when `zookeeper.connectionString` and an address
/// to advertise are configured. Never fails the node: problems are logged.
fn register(config: &Config, port: u16, node: &Node) -> Option<Registration> {
    let connection = config.zookeeper.connection_string.clone()?;
    let address = match config.advertised_address(port) {
        Ok(Some(a)) => a,
        Ok(None) => {
            tracing::warn!("zookeeper.connectionString is set but service.advertisedHost is not: not registering");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "reading this host's name to advertise: not registering");
            return None;
        }
    };
    let registry = node.registry();
    let details = NodeDetails {
        id: config.service.id.clone(),
        runtimes: registry
            .list()
            .iter()
            .map(|r| RuntimeOffer {
                name: r.name().into(),
                version: r.version().into(),
                language: r.language().into(),
            })
            .collect(),
        default_runtime: config.evaluation.default_runtime.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        max_concurrent: config.evaluation.max_concurrent,
        queue_size: config.evaluation.queue_size,
        tls: config.server.tls.cert_file.is_some(),
    };
    let instance = match ServiceInstance::new(&config.service.id, &address, details.tls) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "not registering");
            return None;
        }
    };
    let target = Target {
        connection_string: connection,
        base_path: config.zookeeper.base_path.clone(),
        connect_backoff: Duration::from_millis(config.zookeeper.connect_backoff),
        session_timeout: Duration::from_millis(config.zookeeper.session_timeout_ms),
    };
    tracing::info!(%address, base_path = %target.base_path, "registering in zookeeper");
    match Registration::start(target, instance, details) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "not registering");
            None
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn tls_config(config: &Config) -> Result<Option<ServerTlsConfig>> {
    let t = &config.server.tls;
    let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
        return Ok(None);
    };
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &t.client_ca_file {
        // With a client CA, a client certificate signed by it is required.
        tls = tls
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(false);
    }
    Ok(Some(tls))
}

/// Descriptors the node holds per sandbox, running or pre-started: its control socket,
/// event and input pipes, the helper's stdin, stdout and stderr pipes, and the cgroup
/// and /proc files it opens while the sandbox runs: 7 to 8 measured, doubled.
const FDS_PER_SANDBOX: u64 = 16;
/// Descriptors besides sandboxes: the listener, the async runtime, the log, ZooKeeper,
/// InfluxDB, runtime and access-list files being read.
const BASE_FDS: u64 = 256;
/// Client connections the limit leaves room for (one descriptor each; a client's
/// evaluations share one HTTP/2 connection).
const CONNECTION_FDS: u64 = 1024;

/// The open-files limit (RLIMIT_NOFILE) this configuration needs: every sandbox that
/// can exist at once (`evaluation.maxConcurrent` running, the pools' pre-started ones)
/// times [`FDS_PER_SANDBOX`], plus [`BASE_FDS`] and [`CONNECTION_FDS`].
pub fn nofile_needed(config: &Config) -> u64 {
    let pooled = most_pooled(config);
    let sandboxes = (config.evaluation.max_concurrent + pooled) as u64;
    BASE_FDS + CONNECTION_FDS + FDS_PER_SANDBOX * sandboxes
}

/// The most pre-started sandboxes the configuration can ask for on this machine.
fn most_pooled(config: &Config) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::service::pools::most_pooled(&config.evaluation, cpus)
}

/// Why the node does not start on this host's open-files limit.
#[derive(Debug, thiserror::Error)]
enum NofileError {
    #[error("reading the open-files limit (RLIMIT_NOFILE)")]
    Read(#[source] nix::errno::Errno),
    #[error(
        "the open-files limit (RLIMIT_NOFILE, hard) is {hard}, below the {needed} this node needs \
         ({BASE_FDS} + {CONNECTION_FDS} for connections + {FDS_PER_SANDBOX} per sandbox for \
         evaluation.maxConcurrent {max_concurrent} and {pooled} pre-started): raise it (docker run \
         --ulimit nofile={needed}, compose ulimits.nofile, systemd LimitNOFILE={needed}) or lower \
         evaluation.maxConcurrent"
    )]
    TooLow {
        hard: u64,
        needed: u64,
        max_concurrent: usize,
        pooled: usize,
    },
}

/// Raises the soft open-files limit to the hard one, and refuses to start (one line)
/// when even that is below [`nofile_needed`]: nodes would otherwise fail evaluations
/// and connections at random under load.
fn raise_nofile(config: &Config) -> Result<(), NofileError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(NofileError::Read)?;
    if soft < hard {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::warn!(
                soft,
                hard,
                "cannot raise the open-files limit to its hard limit: {e}"
            );
        }
    }
    let needed = nofile_needed(config);
    if hard < needed {
        return Err(NofileError::TooLow {
            hard,
            needed,
            max_concurrent: config.evaluation.max_concurrent,
            pooled: most_pooled(config),
        });
    }
    tracing::debug!(limit = hard, needed, "open-files limit");
    Ok(())
}

/// Builds the default runtimes from the host, showing progress; missing interpreters
/// are skipped with a warning, not an error.
async fn install_defaults(runtimes_dir: &Path, sandboxes: &Sandboxes) {
    for name in DEFAULT_RECIPES {
        crate::report::stderr(&format!(
            "no runtime installed: building {name} from this host"
        ));
        match crate::install::install(runtimes_dir, sandboxes, name).await {
            Ok(r) => crate::report::stderr(&format!("built {}@{}", r.name(), r.version())),
            Err(e) => tracing::warn!("could not build {name}: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_open_files_limit_is_one_line_saying_what_to_raise() {
        let e = NofileError::TooLow {
            hard: 1024,
            needed: 1344,
            max_concurrent: 4,
            pooled: 0,
        };
        assert_eq!(
            e.to_string(),
            "the open-files limit (RLIMIT_NOFILE, hard) is 1024, below the 1344 this node needs \
             (256 + 1024 for connections + 16 per sandbox for evaluation.maxConcurrent 4 and 0 \
             pre-started): raise it (docker run --ulimit nofile=1344, compose ulimits.nofile, \
             systemd LimitNOFILE=1344) or lower evaluation.maxConcurrent"
        );
    }
}
