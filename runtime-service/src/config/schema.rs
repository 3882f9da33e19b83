//! The configuration's types, their built-in defaults and how they are (de)serialized;
//! secrets are never shown.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use super::syntax::is_host_port;

/// What secrets are shown as.
pub(super) const REDACTED: &str = "<redacted>";

/// `service.advertisedHost` value that advertises this host's name.
pub const ADVERTISE_AUTO: &str = "auto";

/// Where operators put their own `<name>.access` files.
pub const DEFAULT_ACCESS_LISTS_DIR: &str = "/etc/jsheets-runtime/access-lists";

/// The effective configuration of a node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub server: ServerConfig,
    pub service: ServiceConfig,
    pub evaluation: EvaluationConfig,
    pub zookeeper: ZookeeperConfig,
    pub monitoring: MonitoringConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    /// gRPC port.
    pub port: u16,
    /// Address to bind.
    pub host: String,
    pub features: FeaturesConfig,
    pub tls: TlsConfig,
    /// How long in-flight evaluations may finish after a shutdown signal.
    pub shutdown_grace_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port: 8080,
            host: "0.0.0.0".into(),
            features: FeaturesConfig::default(),
            tls: TlsConfig::default(),
            shutdown_grace_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeaturesConfig {
    /// grpc.health.v1 for `jsheets.SnippetRuntime` (also spelled `enableHealthService`).
    pub enable_health_check: bool,
    pub enable_grpc_reflection: bool,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            enable_health_check: true,
            enable_grpc_reflection: false,
        }
    }
}

/// TLS is on when `cert_file` and `key_file` are set; client certificates are required
/// when `client_ca_file` is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    /// Client identities allowed (certificate subject CN or a DNS SAN); empty: any client
    /// with a certificate signed by the client CA.
    pub allowed_clients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConfig {
    /// The id advertised in ZooKeeper (`runtime-` and 8 random hex digits if not set).
    pub id: String,
    /// `host:port` advertised in ZooKeeper; no registration without an address.
    pub advertised_host: Option<String>,
    /// Advertise this machine's host name and `server.port` (for `docker compose --scale`).
    pub advertise_hostname: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            id: generated_service_id(),
            advertised_host: None,
            advertise_hostname: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationConfig {
    pub sandbox: SandboxSettings,
    pub runtimes_dir: PathBuf,
    pub state_dir: PathBuf,
    pub default_runtime: String,
    /// Evaluations running at once (default: the number of CPUs).
    pub max_concurrent: usize,
    /// Evaluations waiting for a slot (default: twice `max_concurrent`).
    pub queue_size: usize,
    /// How long a queued evaluation waits for a slot before it is refused.
    pub queue_wait_ms: u64,
    /// How often live output is flushed to the client.
    pub flush_interval_ms: u64,
    pub max_code_bytes: u64,
    pub max_components: u32,
    /// Most files a request may put in `/work`.
    pub max_input_files: u32,
    /// Most bytes of all the files a request puts in `/work`.
    pub max_input_file_bytes: u64,
    /// Bytes returned of one file when the request names no cap.
    pub default_returned_file_bytes: u64,
    /// The most a request may ask for of one returned file.
    pub max_returned_file_bytes: u64,
    /// Bytes returned of all files together when the request names no cap.
    pub default_returned_total_bytes: u64,
    /// The most a request may ask for of all returned files together.
    pub max_returned_total_bytes: u64,
    /// Most files returned to one request (refusals included).
    pub max_returned_files: u32,
    /// Most inputs of one many-input request.
    pub max_inputs: u32,
    /// Most bytes of all the inputs of one request together (stdin, files, expected
    /// outputs).
    pub max_inputs_bytes: u64,
    /// Runs of one many-input request at once (0: the number of CPUs).
    pub input_parallelism: u32,
    /// Dataset name → an absolute directory on the host, mounted read-only (and
    /// noexec) at `/data/<name>` in the sandboxes of the requests that name it.
    pub datasets: BTreeMap<String, PathBuf>,
    pub limits: LimitsConfig,
    /// CPUs the sandboxes may use (cpuset syntax, e.g. `0-3,6`); all if unset.
    pub cpuset: Option<String>,
    /// A directory shared by every node that draws sandbox uids from the same range
    /// on one host but has its own network namespace (containers): uids are claimed
    /// there too, so no two live sandboxes of those nodes share one.
    pub uid_claim_dir: Option<PathBuf>,
    /// Runtime name → access list name, overriding the runtime's own (`none`: off).
    pub access_lists: BTreeMap<String, String>,
    /// Where `<name>.access` files are looked up before the built-in lists.
    pub access_lists_dir: PathBuf,
    /// Runtime name → pre-started sandboxes. A non-empty table replaces the default
    /// pools (see `service::pools`); `size = 0` leaves a runtime without one.
    pub pool: BTreeMap<String, PoolConfig>,
    /// Whether runtimes without an entry in `pool` get pools sized for the machine
    /// (the default runtime, `openjdk-17` and `python-3.11`, those installed).
    pub pool_defaults: bool,
    /// The most memory all waiting sandboxes may hold together (sizes are cut to
    /// fit; 0: no pools). Default: a quarter of the node's memory.
    pub pool_memory_bytes: Option<u64>,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        let max_concurrent = std::thread::available_parallelism().map_or(1, |n| n.get());
        EvaluationConfig {
            sandbox: SandboxSettings::default(),
            runtimes_dir: "/var/lib/jsheets-runtime/runtimes".into(),
            state_dir: "/run/jsheets-runtime".into(),
            default_runtime: "openjdk-17".into(),
            max_concurrent,
            queue_size: max_concurrent.saturating_mul(2),
            queue_wait_ms: 2000,
            flush_interval_ms: 20,
            max_code_bytes: 1 << 20,
            max_components: 64,
            max_input_files: 1000,
            max_input_file_bytes: 32 << 20,
            default_returned_file_bytes: 1 << 20,
            max_returned_file_bytes: 16 << 20,
            default_returned_total_bytes: 4 << 20,
            max_returned_total_bytes: 64 << 20,
            max_returned_files: 1000,
            max_inputs: 1000,
            max_inputs_bytes: 32 << 20,
            input_parallelism: 0,
            datasets: BTreeMap::new(),
            limits: LimitsConfig::default(),
            cpuset: None,
            uid_claim_dir: None,
            access_lists: BTreeMap::new(),
            access_lists_dir: DEFAULT_ACCESS_LISTS_DIR.into(),
            pool: BTreeMap::new(),
            pool_defaults: true,
            pool_memory_bytes: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSettings {
    /// Run user code without the sandbox; refused unless `i_know_this_is_unsafe`.
    pub disable: bool,
    pub i_know_this_is_unsafe: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsConfig {
    /// Applied when a request asks for nothing else.
    pub defaults: LimitValues,
    /// The most a request may ask for.
    pub maxima: LimitValues,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            defaults: LimitValues {
                wall_time_ms: 10_000,
                cpu_time_ms: 10_000,
                memory_bytes: 256 << 20,
                max_processes: 64,
                output_bytes: 1 << 20,
            },
            maxima: LimitValues {
                wall_time_ms: 60_000,
                cpu_time_ms: 60_000,
                memory_bytes: 2 << 30,
                max_processes: 256,
                output_bytes: 16 << 20,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitValues {
    pub wall_time_ms: u64,
    pub cpu_time_ms: u64,
    pub memory_bytes: u64,
    pub max_processes: u64,
    /// Cap of stdout and of stderr, each.
    pub output_bytes: u64,
}

impl LimitValues {
    /// (key name, value) pairs, in the order of the fields.
    pub(super) fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("wallTimeMs", self.wall_time_ms),
            ("cpuTimeMs", self.cpu_time_ms),
            ("memoryBytes", self.memory_bytes),
            ("maxProcesses", self.max_processes),
            ("outputBytes", self.output_bytes),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolConfig {
    pub size: usize,
    pub idle_memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZookeeperConfig {
    /// e.g. `zk1:2181,zk2:2181`; no registration without it.
    pub connection_string: Option<String>,
    /// Milliseconds, base of the exponential reconnect backoff (jsheets' name).
    pub connect_backoff: u64,
    pub session_timeout_ms: u64,
    /// Parent of the service znodes.
    pub base_path: String,
}

impl Default for ZookeeperConfig {
    fn default() -> Self {
        ZookeeperConfig {
            connection_string: None,
            connect_backoff: 1000,
            session_timeout_ms: 10_000,
            base_path: "/jsheets/services/runtime".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringConfig {
    pub backend: MonitoringBackend,
    pub influx: InfluxConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitoringBackend {
    #[default]
    None,
    Influx,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfluxConfig {
    pub uri: String,
    /// Set: the InfluxDB 2 API (`org`, `bucket`, token); unset: the InfluxDB 1 API (`db`).
    pub org: Option<String>,
    pub bucket: String,
    pub db: String,
    pub user_name: Option<String>,
    pub password: Option<Secret>,
    /// Also spelled `token`.
    pub auth_token: Option<Secret>,
    /// Seconds between pushes.
    pub step: u64,
    /// Points kept while InfluxDB is unreachable; the oldest are dropped beyond.
    pub buffer_points: usize,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            uri: "http://localhost:8086".into(),
            org: None,
            bucket: "jsheets".into(),
            db: "jsheets".into(),
            user_name: None,
            password: None,
            auth_token: None,
            step: 10,
            buffer_points: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `evaluator=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A credential: shown and serialized as `<redacted>`, readable only through
/// [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    #[allow(dead_code, reason = "read by the monitoring exporter")]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl Config {
    /// The configuration as TOML, with secrets that are set shown as `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        // `Secret` serializes redacted, so plain serialization is safe to show.
        toml::to_string(self)
            .unwrap_or_else(|e| format!("# the configuration cannot be shown as TOML: {e}\n"))
    }

    /// The `host:port` to advertise in ZooKeeper: `service.advertisedHost`, or with
    /// `service.advertisedHost = auto` (or `service.advertiseHostname`) this machine's
    /// host name and the port the server listens on; `None` when the node should not
    /// register.
    pub fn advertised_address(&self, listening_port: u16) -> std::io::Result<Option<String>> {
        match self.service.advertised_host.as_deref() {
            Some(ADVERTISE_AUTO) => {}
            Some(host) if is_host_port(host) => return Ok(Some(host.to_owned())),
            Some(host) => return Ok(Some(format!("{host}:{listening_port}"))),
            None if self.service.advertise_hostname => {}
            None => return Ok(None),
        }
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
        Ok(Some(format!("{}:{listening_port}", name.trim())))
    }
}

/// `runtime-` and 8 random hex digits.
fn generated_service_id() -> String {
    let mut bytes = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map(|()| u32::from_ne_bytes(bytes));
    let n = random.unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            hasher.write_u128(t.as_nanos());
        }
        hasher.finish() as u32
    });
    format!("runtime-{n:08x}")
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "`Jail` closures return `figment::Result`"
)]
mod tests {
    use super::super::load::testing::{load, problems};
    use super::*;
    use figment::Jail;

    #[test]
    fn generated_ids_differ() {
        assert_ne!(generated_service_id(), generated_service_id());
    }

    #[test]
    fn secrets_redacted() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "config.toml",
                "[monitoring.influx]\npassword = \"hunter2\"\nuserName = \"jsheets\"\n",
            )?;
            jail.set_env(
                "JSHEETS_RUNTIME_MONITORING_INFLUX_AUTH_TOKEN",
                "s3cr3t-token",
            );
            let (config, _) = load(jail, Some("config.toml")).unwrap();
            let shown = config.redacted_toml();
            assert!(shown.contains("password = \"<redacted>\""), "{shown}");
            assert!(shown.contains("authToken = \"<redacted>\""), "{shown}");
            assert!(shown.contains("userName = \"jsheets\""), "{shown}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("s3cr3t"),
                "{shown}"
            );
            let debug = format!("{config:?}");
            assert!(
                !debug.contains("hunter2") && !debug.contains("s3cr3t"),
                "{debug}"
            );
            // The output is TOML that reads back.
            let back: toml::Table = toml::from_str(&shown).unwrap();
            assert_eq!(back["server"]["port"].as_integer(), Some(8080));

            // Unset secrets stay unset.
            jail.clear_env();
            let (config, _) = load(jail, None).unwrap();
            let shown = config.redacted_toml();
            assert!(!shown.contains("<redacted>"), "{shown}");

            // A secret of the wrong type is not echoed in the message.
            jail.create_file(
                "config.toml",
                "[monitoring.influx]\npassword = [\"hunter2\"]\n",
            )?;
            let all = problems(load(jail, Some("config.toml")));
            assert!(
                all[0].starts_with("monitoring.influx.password: invalid value <redacted> from"),
                "{all:?}"
            );
            Ok(())
        });
    }
}
