//! Node configuration: built-in defaults, then a TOML file, then `JSHEETS_RUNTIME_*`
//! environment variables, all validated before anything starts.
//!
//! Keys are camelCase dotted paths (`server.features.enableGrpcReflection`), as in jsheets.
//! A key's environment variable is [`ENV_PREFIX`] plus the path in SCREAMING_SNAKE with
//! dots as `_` (`JSHEETS_RUNTIME_SERVER_FEATURES_ENABLE_GRPC_REFLECTION`). Such names
//! cannot be split back into paths, so variables are mapped through the table of known
//! keys ([`KEYS`]); unknown `JSHEETS_RUNTIME_*` variables and unknown file keys are
//! warnings. Every bad value is reported on one line naming the key, the value and where
//! it came from.
//!
//! Settings that also have a command-line flag (`--runtimes-dir`, `--state-dir`) are one
//! key each; the flag, given to any command, is the top layer ([`Overrides`]), so every
//! command sees the same value: flag, then environment, then file, then default.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::error::{Actual, Kind};
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "JSHEETS_RUNTIME_";
/// Environment variable naming the configuration file (like `--config`).
pub const CONFIG_FILE_ENV: &str = "JSHEETS_RUNTIME_CONFIG";
/// Read when no file is named, and only if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/jsheets-runtime/config.toml";

/// Variables with the prefix that are not configuration keys (read by the command line),
/// so they are not reported as unknown.
const NON_KEY_ENV_VARS: &[&str] = &[CONFIG_FILE_ENV, "JSHEETS_RUNTIME_LOG"];

/// What secrets are shown as.
const REDACTED: &str = "<redacted>";
/// Metadata names of the layers, used to tell where a value came from.
const DEFAULTS_LAYER: &str = "the built-in defaults";
const ENV_LAYER: &str = "environment variables";
const FLAGS_LAYER: &str = "command-line flags";

const RUNTIME_NAME: &str = "a runtime name matching ^[a-z0-9][a-z0-9._-]{0,63}$";

/// A configuration that cannot be used; the binary prints it and exits with 64.
/// `service.advertisedHost` value that advertises this host's name.
pub const ADVERTISE_AUTO: &str = "auto";

/// Where operators put their own `<name>.access` files.
pub const DEFAULT_ACCESS_LISTS_DIR: &str = "/etc/jsheets-runtime/access-lists";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {} does not exist", path.display())]
    FileNotFound { path: PathBuf },
    #[error("cannot read configuration file {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<figment::Error>,
    },
    /// One line per bad value: key, value, source and what was expected; then the
    /// warnings (a misspelt variable often explains a bad value), one per line.
    #[error("{}", invalid_lines(problems, warnings))]
    Invalid {
        problems: Vec<String>,
        warnings: Vec<String>,
    },
    #[error("cannot represent the built-in defaults")]
    Defaults(#[source] Box<figment::Error>),
}

fn invalid_lines(problems: &[String], warnings: &[String]) -> String {
    let warnings = warnings.iter().map(|w| format!("warning: {w}"));
    problems
        .iter()
        .cloned()
        .chain(warnings)
        .collect::<Vec<_>>()
        .join("\n")
}

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
    pub limits: LimitsConfig,
    /// CPUs the sandboxes may use (cpuset syntax, e.g. `0-3,6`); all if unset.
    pub cpuset: Option<String>,
    /// Runtime name → access list name, overriding the runtime's own (`none`: off).
    pub access_lists: BTreeMap<String, String>,
    /// Where `<name>.access` files are looked up before the built-in lists.
    pub access_lists_dir: PathBuf,
    /// Runtime name → pre-started sandboxes.
    pub pool: BTreeMap<String, PoolConfig>,
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
            limits: LimitsConfig::default(),
            cpuset: None,
            access_lists: BTreeMap::new(),
            access_lists_dir: DEFAULT_ACCESS_LISTS_DIR.into(),
            pool: BTreeMap::new(),
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
    fn named(&self) -> [(&'static str, u64); 5] {
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

/// Configuration values given as command-line flags, which every command accepts;
/// they override the environment, the file and the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--runtimes-dir`: `evaluation.runtimesDir`.
    pub runtimes_dir: Option<PathBuf>,
    /// `--state-dir`: `evaluation.stateDir`.
    pub state_dir: Option<PathBuf>,
}

impl Overrides {
    /// (key, flag, value) of each flag given. A relative path is taken from the
    /// current directory, as usual for a command-line argument.
    fn entries(&self) -> Vec<(&'static str, &'static str, PathBuf)> {
        [
            (
                "evaluation.runtimesDir",
                "--runtimes-dir",
                &self.runtimes_dir,
            ),
            ("evaluation.stateDir", "--state-dir", &self.state_dir),
        ]
        .into_iter()
        .filter_map(|(key, flag, value)| {
            let value = value.as_ref()?;
            Some((
                key,
                flag,
                std::path::absolute(value).unwrap_or(value.clone()),
            ))
        })
        .collect()
    }
}

impl Config {
    /// Reads, merges and validates the configuration: built-in defaults, then `file`
    /// (else the file named by `JSHEETS_RUNTIME_CONFIG`, else [`DEFAULT_CONFIG_FILE`] if
    /// it exists), then the environment, then the command-line `flags`. A file named
    /// explicitly must exist. Returns the configuration and warnings (unknown keys and
    /// variables, unsafe settings).
    pub fn load(
        file: Option<&Path>,
        flags: &Overrides,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let from_env = std::env::var_os(CONFIG_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let explicit = file.map(Path::to_path_buf).or(from_env);
        load_from(
            explicit.as_deref(),
            Path::new(DEFAULT_CONFIG_FILE),
            std::env::vars_os(),
            flags,
        )
    }

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

fn load_from(
    explicit: Option<&Path>,
    default_path: &Path,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    flags: &Overrides,
) -> Result<(Config, Vec<String>), ConfigError> {
    let file = match explicit {
        Some(path) if !path.exists() => {
            return Err(ConfigError::FileNotFound {
                path: path.to_path_buf(),
            })
        }
        Some(path) => Some(path),
        None => Some(default_path).filter(|p| p.exists()),
    };
    let mut warnings = Vec::new();
    let mut problems = Vec::new();

    let mut figment = Figment::from(defaults_layer()?);
    if let Some(path) = file {
        figment = figment.merge(file_layer(path, &mut warnings)?);
    }
    figment = figment.merge(env_layer(vars, &mut warnings, &mut problems));
    figment = figment.merge(flags_layer(flags));

    let mut config = match extract(&figment) {
        Ok(config) => config,
        Err(mut type_problems) => {
            problems.append(&mut type_problems);
            return Err(ConfigError::Invalid { problems, warnings });
        }
    };
    if came_from_defaults(&figment, "evaluation.queueSize") {
        config.evaluation.queue_size = config.evaluation.max_concurrent.saturating_mul(2);
    }
    problems.extend(validate(&config, &figment, &mut warnings));
    if problems.is_empty() {
        Ok((config, warnings))
    } else {
        Err(ConfigError::Invalid { problems, warnings })
    }
}

// ---------------------------------------------------------------------------------------
// The table of keys.

/// How an environment variable's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvKind {
    /// Taken as it is (names, paths, secrets: `123456` stays a string).
    Text,
    /// `true` or `false`, any case.
    Bool,
    /// Parsed by figment (numbers).
    Number,
    /// `[a, b]` or `a,b`.
    List,
    /// A TOML inline table: `{openjdk-17 = "strict"}`.
    Table,
}

/// A configuration key and its environment variable.
#[derive(Debug, Clone, Copy)]
struct Key {
    /// Canonical camelCase dotted path.
    path: &'static str,
    kind: EnvKind,
    /// What a valid value looks like, for messages.
    expect: &'static str,
    /// Other spellings, accepted in files and (converted) in the environment.
    aliases: &'static [&'static str],
    /// Further environment variable names.
    env_aliases: &'static [&'static str],
    /// Never shown.
    secret: bool,
}

const fn key(path: &'static str, kind: EnvKind, expect: &'static str) -> Key {
    Key {
        path,
        kind,
        expect,
        aliases: &[],
        env_aliases: &[],
        secret: false,
    }
}

impl Key {
    const fn alias(mut self, aliases: &'static [&'static str]) -> Key {
        self.aliases = aliases;
        self
    }

    const fn env_alias(mut self, names: &'static [&'static str]) -> Key {
        self.env_aliases = names;
        self
    }

    const fn secret(mut self) -> Key {
        self.secret = true;
        self
    }
}

const PORT: &str = "a port number 0-65535 (0: any free port)";
const BOOL: &str = "true or false";
const TEXT: &str = "a string";
const FILE: &str = "a file path";
const DIR: &str = "an absolute directory path";
const COUNT: &str = "a whole number of at least 1";
const MS: &str = "a whole number of milliseconds";
const SECONDS: &str = "a whole number of seconds";
const BYTES: &str = "a whole number of bytes";

use EnvKind::{Bool, List, Number, Table, Text};

/// Every configuration key; environment variables are derived from these paths.
const KEYS: &[Key] = &[
    key("server.port", Number, PORT),
    key("server.host", Text, "an IP address or host name to bind"),
    key("server.features.enableHealthCheck", Bool, BOOL)
        .alias(&["server.features.enableHealthService"]),
    key("server.features.enableGrpcReflection", Bool, BOOL),
    key("server.tls.certFile", Text, FILE),
    key("server.tls.keyFile", Text, FILE),
    key("server.tls.clientCaFile", Text, FILE),
    key(
        "server.tls.allowedClients",
        List,
        "a list of client names, e.g. [\"backend-1\", \"backend-2\"] or backend-1,backend-2",
    ),
    key("server.shutdownGraceSeconds", Number, SECONDS),
    key("service.id", Text, TEXT).env_alias(&["JSHEETS_RUNTIME_SERVER_SERVICE_ID"]),
    key("service.advertisedHost", Text, "host:port, host, or auto"),
    key("service.advertiseHostname", Bool, BOOL),
    key("evaluation.sandbox.disable", Bool, BOOL),
    key("evaluation.sandbox.iKnowThisIsUnsafe", Bool, BOOL),
    // The older spellings, once read by the command line only, are aliases.
    key("evaluation.runtimesDir", Text, DIR).env_alias(&["JSHEETS_RUNTIME_RUNTIMES_DIR"]),
    key("evaluation.stateDir", Text, DIR).env_alias(&["JSHEETS_RUNTIME_STATE_DIR"]),
    key("evaluation.defaultRuntime", Text, TEXT),
    key("evaluation.maxConcurrent", Number, COUNT),
    key("evaluation.queueSize", Number, "a whole number"),
    key("evaluation.queueWaitMs", Number, MS),
    key("evaluation.flushIntervalMs", Number, MS),
    key("evaluation.maxCodeBytes", Number, BYTES),
    key("evaluation.maxComponents", Number, COUNT),
    key("evaluation.limits.defaults.wallTimeMs", Number, MS),
    key("evaluation.limits.defaults.cpuTimeMs", Number, MS),
    key("evaluation.limits.defaults.memoryBytes", Number, BYTES),
    key("evaluation.limits.defaults.maxProcesses", Number, COUNT),
    key("evaluation.limits.defaults.outputBytes", Number, BYTES),
    key("evaluation.limits.maxima.wallTimeMs", Number, MS),
    key("evaluation.limits.maxima.cpuTimeMs", Number, MS),
    key("evaluation.limits.maxima.memoryBytes", Number, BYTES),
    key("evaluation.limits.maxima.maxProcesses", Number, COUNT),
    key("evaluation.limits.maxima.outputBytes", Number, BYTES),
    key("evaluation.cpuset", Text, "a CPU list such as 0-3,6"),
    key(
        "evaluation.accessLists",
        Table,
        "a table of runtime name = access list name, e.g. {openjdk-17 = \"strict\"}",
    ),
    key("evaluation.accessListsDir", Text, DIR),
    key(
        "evaluation.pool",
        Table,
        "a table of runtime name = {size, idleMemoryBytes}, e.g. {openjdk-17 = {size = 2}}",
    ),
    key(
        "zookeeper.connectionString",
        Text,
        "host:port[,host:port...]",
    ),
    key("zookeeper.connectBackoff", Number, MS),
    key("zookeeper.sessionTimeoutMs", Number, MS),
    key("zookeeper.basePath", Text, "an absolute ZooKeeper path"),
    key("monitoring.backend", Text, "none or influx"),
    key("monitoring.influx.uri", Text, "an http:// or https:// URL"),
    key("monitoring.influx.org", Text, TEXT),
    key("monitoring.influx.bucket", Text, TEXT),
    key("monitoring.influx.db", Text, TEXT),
    key("monitoring.influx.userName", Text, TEXT),
    key("monitoring.influx.password", Text, TEXT).secret(),
    key("monitoring.influx.authToken", Text, TEXT)
        .alias(&["monitoring.influx.token"])
        .secret(),
    key("monitoring.influx.step", Number, SECONDS),
    key("monitoring.influx.bufferPoints", Number, COUNT),
    key("log.format", Text, "text or json"),
    key(
        "log.level",
        Text,
        "a log filter such as info or evaluator=debug",
    ),
];

/// The environment variable of a key path: `server.features.enableGrpcReflection` →
/// `JSHEETS_RUNTIME_SERVER_FEATURES_ENABLE_GRPC_REFLECTION`.
fn env_name(path: &str) -> String {
    let mut name = String::from(ENV_PREFIX);
    for c in path.chars() {
        match c {
            '.' => name.push('_'),
            c if c.is_ascii_uppercase() => {
                name.push('_');
                name.push(c);
            }
            c => name.push(c.to_ascii_uppercase()),
        }
    }
    name
}

/// The key a (canonical) path names, ignoring entries inside tables.
fn find_key(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

// ---------------------------------------------------------------------------------------
// Layers.

/// One source of values, already read, with the metadata that names it in messages.
#[derive(Debug)]
struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(Profile::Default, self.dict.clone())]))
    }
}

fn defaults_layer() -> Result<Layer, ConfigError> {
    let value =
        Value::serialize(Config::default()).map_err(|e| ConfigError::Defaults(Box::new(e)))?;
    let dict = value.into_dict().unwrap_or_default();
    Ok(Layer {
        metadata: Metadata::named(DEFAULTS_LAYER),
        dict,
    })
}

fn file_layer(path: &Path, warnings: &mut Vec<String>) -> Result<Layer, ConfigError> {
    let file_error = |source| ConfigError::File {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let mut data = Toml::file_exact(path).data().map_err(file_error)?;
    let mut dict = data.remove(&Profile::Default).unwrap_or_default();
    let origin = path.display().to_string();
    for key in KEYS {
        for alias in key.aliases {
            let Some(value) = dict_remove(&mut dict, alias) else {
                continue;
            };
            if dict_get(&dict, key.path).is_some() {
                warnings.push(format!(
                    "{origin}: both {} and {alias} are set; using {}",
                    key.path, key.path
                ));
            } else {
                dict_insert(&mut dict, key.path, value);
            }
        }
    }
    warn_unknown_keys(&dict, "", &origin, warnings);
    Ok(Layer {
        metadata: Metadata::named("TOML file").source(Source::File(path.to_path_buf())),
        dict,
    })
}

fn env_layer(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    warnings: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Layer {
    // Variable name → (key, whether it is another spelling).
    let mut names: HashMap<String, (&Key, bool)> = HashMap::new();
    for key in KEYS {
        names.insert(env_name(key.path), (key, false));
        for alias in key.aliases {
            names.insert(env_name(alias), (key, true));
        }
        for name in key.env_aliases {
            names.insert((*name).to_string(), (key, true));
        }
    }
    let mut vars: Vec<(String, OsString)> = vars
        .into_iter()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();

    let mut dict = Dict::new();
    // Key path → the variable that set it.
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    for (name, raw) in vars {
        // Empty counts as unset (`FOO=${FOO:-}` in compose files).
        if NON_KEY_ENV_VARS.contains(&name.as_str()) || raw.is_empty() {
            continue;
        }
        let Some(&(key, is_alias)) = names.get(&name) else {
            let hint = closest(&name, names.keys().map(String::as_str))
                .map(|n| format!(" (did you mean {n}?)"))
                .unwrap_or_default();
            warnings.push(format!(
                "ignoring unknown environment variable {name}{hint}"
            ));
            continue;
        };
        if let Some(previous) = sources.get(key.path) {
            let (used, ignored) = if is_alias {
                (previous.as_str(), name.as_str())
            } else {
                (name.as_str(), previous.as_str())
            };
            warnings.push(format!("both {used} and {ignored} are set; using {used}"));
            if is_alias {
                continue;
            }
        }
        let Some(raw) = raw.to_str() else {
            problems.push(format!(
                "{}: invalid value from environment variable {name}: expected UTF-8 text",
                key.path
            ));
            continue;
        };
        dict_insert(&mut dict, key.path, env_value(key.kind, raw));
        sources.insert(key.path.to_string(), name);
    }

    let sources = Arc::new(sources);
    let metadata = Metadata::named(ENV_LAYER).interpolater(move |_: &Profile, keys: &[&str]| {
        // The variable of the path or of the table it is in.
        (1..=keys.len())
            .rev()
            .find_map(|n| sources.get(&keys[..n].join(".")))
            .cloned()
            .unwrap_or_else(|| env_name(&keys.join(".")))
    });
    Layer { metadata, dict }
}

fn flags_layer(flags: &Overrides) -> Layer {
    let mut dict = Dict::new();
    let mut names: BTreeMap<String, &'static str> = BTreeMap::new();
    for (key, flag, value) in flags.entries() {
        dict_insert(
            &mut dict,
            key,
            Value::from(value.to_string_lossy().into_owned()),
        );
        names.insert(key.to_string(), flag);
    }
    let names = Arc::new(names);
    let metadata = Metadata::named(FLAGS_LAYER).interpolater(move |_: &Profile, keys: &[&str]| {
        names
            .get(&keys.join("."))
            .map_or_else(|| keys.join("."), |flag| (*flag).to_string())
    });
    Layer { metadata, dict }
}

fn env_value(kind: EnvKind, raw: &str) -> Value {
    let trimmed = raw.trim();
    match kind {
        EnvKind::Text => Value::from(raw),
        EnvKind::Bool if trimmed.eq_ignore_ascii_case("true") => Value::from(true),
        EnvKind::Bool if trimmed.eq_ignore_ascii_case("false") => Value::from(false),
        EnvKind::Bool => Value::from(raw),
        EnvKind::Number => trimmed.parse().unwrap_or_else(|e| match e {}),
        EnvKind::List if trimmed.starts_with('[') => trimmed.parse().unwrap_or_else(|e| match e {}),
        EnvKind::List => Value::from(
            trimmed
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>(),
        ),
        EnvKind::Table => toml::from_str::<toml::Table>(&format!("v = {trimmed}"))
            .ok()
            .and_then(|mut table| table.remove("v"))
            .and_then(|v| Value::serialize(v).ok())
            .unwrap_or_else(|| Value::from(raw)),
    }
}

/// Warns about file keys that are not in [`KEYS`] (entries of tables are not checked).
fn warn_unknown_keys(dict: &Dict, prefix: &str, origin: &str, warnings: &mut Vec<String>) {
    for (name, value) in dict {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if find_key(&path).is_some() {
            continue;
        }
        let is_section = KEYS.iter().any(|k| {
            k.path
                .strip_prefix(path.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
        });
        match value {
            Value::Dict(_, inner) if is_section => {
                warn_unknown_keys(inner, &path, origin, warnings);
            }
            // A section with a wrong type: extraction reports it.
            _ if is_section => {}
            _ => {
                let hint = closest(&path, KEYS.iter().map(|k| k.path))
                    .map(|p| format!(" (did you mean {p}?)"))
                    .unwrap_or_default();
                warnings.push(format!("{origin}: ignoring unknown key {path}{hint}"));
            }
        }
    }
}

/// The candidate within a small edit distance of `name`, ignoring case.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|&(d, _)| d <= 3)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

fn dict_get<'a>(dict: &'a Dict, path: &str) -> Option<&'a Value> {
    match path.split_once('.') {
        None => dict.get(path),
        Some((head, rest)) => match dict.get(head) {
            Some(Value::Dict(_, inner)) => dict_get(inner, rest),
            _ => None,
        },
    }
}

fn dict_remove(dict: &mut Dict, path: &str) -> Option<Value> {
    match path.split_once('.') {
        None => dict.remove(path),
        Some((head, rest)) => match dict.get_mut(head) {
            Some(Value::Dict(_, inner)) => dict_remove(inner, rest),
            _ => None,
        },
    }
}

fn dict_insert(dict: &mut Dict, path: &str, value: Value) {
    let Some((head, rest)) = path.split_once('.') else {
        dict.insert(path.to_string(), value);
        return;
    };
    let entry = dict
        .entry(head.to_string())
        .or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        dict_insert(inner, rest, value);
    }
}

// ---------------------------------------------------------------------------------------
// Extraction and messages.

/// Extracts section by section, so that one bad value per section is reported.
fn extract(figment: &Figment) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let server = section(figment, "server", &mut problems);
    let service = section(figment, "service", &mut problems);
    let evaluation = section(figment, "evaluation", &mut problems);
    let zookeeper = section(figment, "zookeeper", &mut problems);
    let monitoring = section(figment, "monitoring", &mut problems);
    let log = section(figment, "log", &mut problems);
    match (server, service, evaluation, zookeeper, monitoring, log) {
        (
            Some(server),
            Some(service),
            Some(evaluation),
            Some(zookeeper),
            Some(monitoring),
            Some(log),
        ) => Ok(Config {
            server,
            service,
            evaluation,
            zookeeper,
            monitoring,
            log,
        }),
        _ => Err(problems),
    }
}

fn section<T: DeserializeOwned>(
    figment: &Figment,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    match figment.extract_inner::<T>(name) {
        Ok(value) => Some(value),
        Err(errors) => {
            for mut error in errors {
                // figment 0.10 appends the section after the inner path.
                if error.path.first().map(String::as_str) != Some(name)
                    && error.path.last().map(String::as_str) == Some(name)
                {
                    error.path.pop();
                    error.path.insert(0, name.to_string());
                }
                problems.push(describe_error(&error));
            }
            None
        }
    }
}

/// One line for one figment error: key, value, source, expectation.
fn describe_error(error: &figment::Error) -> String {
    let path = error.path.join(".");
    let key = find_key(&path);
    let source = describe_source(error.metadata.as_ref(), &error.path);
    let secret = key.is_some_and(|k| k.secret);
    let value = |actual: &Actual| {
        if secret {
            REDACTED.to_string()
        } else {
            show_actual(actual)
        }
    };
    let shown = if path.is_empty() {
        "configuration"
    } else {
        path.as_str()
    };
    match &error.kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            let expected = key.map_or(expected.as_str(), |k| k.expect);
            format!(
                "{shown}: invalid value {} from {source}: expected {expected}",
                value(actual)
            )
        }
        Kind::UnknownVariant(variant, variants) => format!(
            "{shown}: invalid value {variant:?} from {source}: expected {}",
            variants.join(" or ")
        ),
        Kind::MissingField(field) => format!("{shown}.{field}: missing in {source}"),
        kind => format!("{shown}: {kind} (from {source})"),
    }
}

fn show_actual(actual: &Actual) -> String {
    match actual {
        Actual::Str(s) => format!("{s:?}"),
        Actual::Char(c) => format!("{c:?}"),
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Seq => "(a list)".into(),
        Actual::Map => "(a table)".into(),
        other => format!("({other})"),
    }
}

/// Where a value came from: a file path, `environment variable NAME` or the defaults.
fn describe_source<K: AsRef<str>>(metadata: Option<&Metadata>, path: &[K]) -> String {
    let Some(metadata) = metadata else {
        return DEFAULTS_LAYER.to_string();
    };
    match &metadata.source {
        Some(Source::File(file)) => file.display().to_string(),
        _ if metadata.name == ENV_LAYER => format!(
            "environment variable {}",
            metadata.interpolate(&Profile::Default, path)
        ),
        _ if metadata.name == FLAGS_LAYER => format!(
            "command-line flag {}",
            metadata.interpolate(&Profile::Default, path)
        ),
        _ => metadata.name.to_string(),
    }
}

fn came_from_defaults(figment: &Figment, key: &str) -> bool {
    figment
        .find_metadata(key)
        .is_none_or(|m| m.name == DEFAULTS_LAYER)
}

// ---------------------------------------------------------------------------------------
// Validation.

struct Checker<'a> {
    figment: &'a Figment,
    problems: Vec<String>,
}

impl Checker<'_> {
    fn bad(&mut self, key: &str, value: impl fmt::Debug, why: impl fmt::Display) {
        let path: Vec<&str> = key.split('.').collect();
        let source = describe_source(self.figment.find_metadata(key), &path);
        self.problems.push(format!(
            "{key}: invalid value {value:?} from {source}: {why}"
        ));
    }

    /// A bad entry `name` of the table at `key` (entry names may contain dots).
    fn bad_entry(&mut self, key: &str, name: &str, value: impl fmt::Debug, why: &str) {
        let tag = match self.figment.find_value(key) {
            Ok(Value::Dict(_, dict)) => dict.get(name).map(Value::tag),
            _ => None,
        };
        let metadata = tag
            .and_then(|t| self.figment.get_metadata(t))
            .or_else(|| self.figment.find_metadata(key));
        let mut path: Vec<&str> = key.split('.').collect();
        path.push(name);
        let source = describe_source(metadata, &path);
        self.problems.push(format!(
            "{key}.{name}: invalid value {value:?} from {source}: {why}"
        ));
    }
}

fn validate(config: &Config, figment: &Figment, warnings: &mut Vec<String>) -> Vec<String> {
    let mut check = Checker {
        figment,
        problems: Vec::new(),
    };
    validate_server(&config.server, &mut check);
    validate_service(&config.service, &mut check);
    validate_evaluation(&config.evaluation, &mut check, warnings);
    validate_zookeeper(&config.zookeeper, &mut check);
    validate_monitoring(&config.monitoring, &mut check, warnings);
    if config.log.level.trim().is_empty() {
        check.bad("log.level", &config.log.level, expected("log.level"));
    }
    check.problems
}

/// "expected …" from the key table.
fn expected(path: &str) -> String {
    format!("expected {}", find_key(path).map_or(TEXT, |k| k.expect))
}

fn validate_server(server: &ServerConfig, check: &mut Checker<'_>) {
    // Port 0 binds any free port; the address is printed at start (tests use it).
    if !(server.host.parse::<IpAddr>().is_ok() || is_host_name(&server.host)) {
        check.bad("server.host", &server.host, expected("server.host"));
    }
    let tls = &server.tls;
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), None) => check.bad(
            "server.tls.certFile",
            cert,
            "server.tls.keyFile must be set too (set both or neither)",
        ),
        (None, Some(key)) => check.bad(
            "server.tls.keyFile",
            key,
            "server.tls.certFile must be set too (set both or neither)",
        ),
        _ => {}
    }
    for (key, file) in [
        ("server.tls.certFile", &tls.cert_file),
        ("server.tls.keyFile", &tls.key_file),
        ("server.tls.clientCaFile", &tls.client_ca_file),
    ] {
        if let Some(file) = file.as_ref().filter(|f| !f.is_file()) {
            check.bad(key, file, "expected an existing file");
        }
    }
    if let (Some(ca), None) = (&tls.client_ca_file, &tls.cert_file) {
        check.bad(
            "server.tls.clientCaFile",
            ca,
            "client certificates need TLS: set server.tls.certFile and server.tls.keyFile too",
        );
    }
    if !tls.allowed_clients.is_empty() && tls.client_ca_file.is_none() {
        check.bad(
            "server.tls.allowedClients",
            &tls.allowed_clients,
            "clients are identified by their certificates: set server.tls.clientCaFile too",
        );
    }
    if tls.allowed_clients.iter().any(|c| c.trim().is_empty()) {
        check.bad(
            "server.tls.allowedClients",
            &tls.allowed_clients,
            "expected certificate names (subject CN or DNS SAN), not empty strings",
        );
    }
}

fn validate_service(service: &ServiceConfig, check: &mut Checker<'_>) {
    let id = &service.id;
    let id_ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 255
        && !id
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if !id_ok {
        check.bad(
            "service.id",
            id,
            "expected a ZooKeeper node name: not empty, no '/' or whitespace, not . or ..",
        );
    }
    if let Some(host) = &service.advertised_host {
        if host != ADVERTISE_AUTO && !is_host_port(host) && !is_host_name(host) {
            check.bad(
                "service.advertisedHost",
                host,
                "expected host:port (runtime-1:8080, [fd00::1]:8080), a host (the port is the one listened on), or auto (this host's name)",
            );
        }
        if service.advertise_hostname {
            check.bad(
                "service.advertiseHostname",
                true,
                "conflicts with service.advertisedHost: set only one",
            );
        }
    }
}

fn validate_evaluation(
    evaluation: &EvaluationConfig,
    check: &mut Checker<'_>,
    warnings: &mut Vec<String>,
) {
    if evaluation.sandbox.disable {
        if evaluation.sandbox.i_know_this_is_unsafe {
            warnings.push(
                "evaluation.sandbox.disable = true: user code runs WITHOUT the sandbox, \
                 as this node's user, with its files and its network"
                    .into(),
            );
        } else {
            check.bad(
                "evaluation.sandbox.disable",
                true,
                "refusing to run user code without the sandbox: it would run as this node's \
                 user, read and write its files and reach its network; set \
                 evaluation.sandbox.iKnowThisIsUnsafe = true as well only if every client \
                 is trusted",
            );
        }
    }
    for (key, dir) in [
        ("evaluation.runtimesDir", &evaluation.runtimes_dir),
        ("evaluation.stateDir", &evaluation.state_dir),
        ("evaluation.accessListsDir", &evaluation.access_lists_dir),
    ] {
        if !dir.is_absolute() {
            check.bad(key, dir, expected(key));
        }
    }
    if evaluation.default_runtime.trim().is_empty() {
        check.bad(
            "evaluation.defaultRuntime",
            &evaluation.default_runtime,
            "expected a runtime",
        );
    }
    for (key, value) in [
        ("evaluation.maxConcurrent", evaluation.max_concurrent as u64),
        ("evaluation.flushIntervalMs", evaluation.flush_interval_ms),
        ("evaluation.maxCodeBytes", evaluation.max_code_bytes),
        (
            "evaluation.maxComponents",
            u64::from(evaluation.max_components),
        ),
    ] {
        if value == 0 {
            check.bad(key, value, "expected at least 1");
        }
    }
    let limits = &evaluation.limits;
    for ((name, default), (_, maximum)) in limits
        .defaults
        .named()
        .into_iter()
        .zip(limits.maxima.named())
    {
        let default_key = format!("evaluation.limits.defaults.{name}");
        let maximum_key = format!("evaluation.limits.maxima.{name}");
        if default == 0 {
            check.bad(&default_key, default, "expected at least 1");
        }
        if maximum == 0 {
            check.bad(&maximum_key, maximum, "expected at least 1");
        }
        if default > maximum && maximum > 0 {
            check.bad(
                &default_key,
                default,
                format!("expected at most {maximum_key} = {maximum}"),
            );
        }
    }
    if let Some(cpus) = evaluation.cpuset.as_ref().filter(|c| !is_cpu_list(c)) {
        check.bad("evaluation.cpuset", cpus, expected("evaluation.cpuset"));
    }
    for (runtime, list) in &evaluation.access_lists {
        if !is_runtime_name(runtime) {
            check.bad_entry(
                "evaluation.accessLists",
                runtime,
                runtime,
                &format!("expected {RUNTIME_NAME}"),
            );
        }
        if list.trim().is_empty() {
            check.bad_entry(
                "evaluation.accessLists",
                runtime,
                list,
                "expected an access list name",
            );
        }
    }
    for runtime in evaluation.pool.keys().filter(|r| !is_runtime_name(r)) {
        check.bad_entry(
            "evaluation.pool",
            runtime,
            runtime,
            &format!("expected {RUNTIME_NAME}"),
        );
    }
}

fn validate_zookeeper(zookeeper: &ZookeeperConfig, check: &mut Checker<'_>) {
    if let Some(servers) = &zookeeper.connection_string {
        // The last server may carry a chroot suffix (`zk:2181/app`).
        let servers_ok = servers
            .split(',')
            .map(|s| s.split('/').next().unwrap_or_default().trim())
            .all(|s| is_host_port(s) || is_host_name(s));
        if !servers_ok {
            check.bad(
                "zookeeper.connectionString",
                servers,
                expected("zookeeper.connectionString"),
            );
        }
    }
    for (key, value) in [
        ("zookeeper.connectBackoff", zookeeper.connect_backoff),
        ("zookeeper.sessionTimeoutMs", zookeeper.session_timeout_ms),
    ] {
        if value == 0 {
            check.bad(key, value, "expected at least 1 ms");
        }
    }
    let base = &zookeeper.base_path;
    let base_ok =
        base.starts_with('/') && (base.len() == 1 || !base.ends_with('/')) && !base.contains("//");
    if !base_ok {
        check.bad(
            "zookeeper.basePath",
            base,
            "expected an absolute ZooKeeper path such as /jsheets/services/runtime",
        );
    }
}

fn validate_monitoring(
    monitoring: &MonitoringConfig,
    check: &mut Checker<'_>,
    warnings: &mut Vec<String>,
) {
    let influx = &monitoring.influx;
    if !is_http_url(&influx.uri) {
        check.bad(
            "monitoring.influx.uri",
            &influx.uri,
            expected("monitoring.influx.uri"),
        );
    }
    if influx.step == 0 {
        check.bad(
            "monitoring.influx.step",
            influx.step,
            "expected at least 1 second",
        );
    }
    if influx.buffer_points == 0 {
        check.bad(
            "monitoring.influx.bufferPoints",
            influx.buffer_points,
            "expected at least 1",
        );
    }
    for (key, name) in [
        ("monitoring.influx.bucket", &influx.bucket),
        ("monitoring.influx.db", &influx.db),
    ] {
        if name.trim().is_empty() {
            check.bad(key, name, "expected a name");
        }
    }
    if monitoring.backend == MonitoringBackend::Influx
        && influx.org.is_some()
        && influx.auth_token.is_none()
    {
        warnings.push(
            "monitoring.influx.org is set (InfluxDB 2 API) but monitoring.influx.authToken \
             is not: InfluxDB 2 will likely refuse the writes"
                .into(),
        );
    }
}

/// `^[a-z0-9][a-z0-9._-]{0,63}$`
fn is_runtime_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// A DNS name or IPv4 address (underscores allowed: Docker service names have them).
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// `host:port` or `[ipv6]:port`, port 1-65535.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => is_host_name(host),
    };
    port_ok && host_ok
}

/// `http://` or `https://`, then a host with an optional port.
fn is_http_url(uri: &str) -> bool {
    let Some(rest) = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !uri.chars().any(char::is_whitespace)
        && (is_host_port(authority)
            || is_host_name(authority)
            || authority
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|v6| v6.parse::<Ipv6Addr>().is_ok()))
}

/// cpuset syntax: `0-3,6`.
fn is_cpu_list(list: &str) -> bool {
    list.split(',').all(|item| {
        let (first, last) = item.split_once('-').unwrap_or((item, item));
        match (first.parse::<u32>(), last.parse::<u32>()) {
            (Ok(first), Ok(last)) => first <= last,
            _ => false,
        }
    })
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
    use super::*;
    use figment::Jail;

    /// Loads with the process environment of the jail and no default file.
    fn load(jail: &Jail, file: Option<&str>) -> Result<(Config, Vec<String>), ConfigError> {
        let file = file.map(|f| jail.directory().join(f));
        load_from(
            file.as_deref(),
            &jail.directory().join("absent.toml"),
            std::env::vars_os(),
            &Overrides::default(),
        )
    }

    fn problems(result: Result<(Config, Vec<String>), ConfigError>) -> Vec<String> {
        match result {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid configuration, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let (config, warnings) = load(jail, None).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(config.server.port, 8080);
            assert_eq!(config.server.host, "0.0.0.0");
            assert!(config.server.features.enable_health_check);
            assert!(!config.server.features.enable_grpc_reflection);
            assert_eq!(config.server.shutdown_grace_seconds, 30);
            assert!(config.service.id.starts_with("runtime-"));
            assert_eq!(config.service.id.len(), "runtime-".len() + 8);
            let e = &config.evaluation;
            assert!(e.max_concurrent >= 1);
            assert_eq!(e.queue_size, 2 * e.max_concurrent);
            assert_eq!(e.default_runtime, "openjdk-17");
            assert_eq!(e.limits.defaults.memory_bytes, 256 << 20);
            assert_eq!(e.limits.maxima.memory_bytes, 2 << 30);
            assert_eq!(config.zookeeper.connect_backoff, 1000);
            assert_eq!(config.zookeeper.base_path, "/jsheets/services/runtime");
            assert_eq!(config.monitoring.backend, MonitoringBackend::None);
            assert_eq!(config.monitoring.influx.uri, "http://localhost:8086");
            assert_eq!(config.monitoring.influx.step, 10);
            assert_eq!(config.log.format, LogFormat::Text);
            Ok(())
        });
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(generated_service_id(), generated_service_id());
    }

    #[test]
    fn toml_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "config.toml",
                r#"
                [server]
                port = 9090
                [server.features]
                enableGrpcReflection = true
                [service]
                id = "runtime-1"
                [evaluation]
                maxConcurrent = 3
                accessLists = { "openjdk-17" = "strict" }
                [evaluation.limits.defaults]
                wallTimeMs = 5000
                [evaluation.pool.python-3]
                size = 2
                [zookeeper]
                connectionString = "zk1:2181,zk2:2181"
                "#,
            )?;
            let (config, warnings) = load(jail, Some("config.toml")).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(config.server.port, 9090);
            assert!(config.server.features.enable_grpc_reflection);
            assert!(config.server.features.enable_health_check);
            assert_eq!(config.service.id, "runtime-1");
            assert_eq!(config.evaluation.max_concurrent, 3);
            // Derived from the configured maxConcurrent.
            assert_eq!(config.evaluation.queue_size, 6);
            assert_eq!(config.evaluation.limits.defaults.wall_time_ms, 5000);
            assert_eq!(config.evaluation.limits.defaults.cpu_time_ms, 10_000);
            assert_eq!(config.evaluation.access_lists["openjdk-17"], "strict");
            assert_eq!(config.evaluation.pool["python-3"].size, 2);
            assert_eq!(
                config.zookeeper.connection_string.as_deref(),
                Some("zk1:2181,zk2:2181")
            );
            Ok(())
        });
    }

    #[test]
    fn env_overrides_toml() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("config.toml", "[server]\nport = 9090\nhost = \"::\"\n")?;
            jail.set_env("JSHEETS_RUNTIME_SERVER_PORT", "7070");
            jail.set_env("JSHEETS_RUNTIME_ZOOKEEPER_CONNECTION_STRING", "zk:2181");
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_QUEUE_SIZE", "5");
            jail.set_env(
                "JSHEETS_RUNTIME_EVALUATION_ACCESS_LISTS",
                "{openjdk-17 = \"x\"}",
            );
            jail.set_env("JSHEETS_RUNTIME_MONITORING_INFLUX_PASSWORD", "123456");
            let (config, warnings) = load(jail, Some("config.toml")).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(config.server.port, 7070);
            assert_eq!(config.server.host, "::");
            assert_eq!(
                config.zookeeper.connection_string.as_deref(),
                Some("zk:2181")
            );
            assert_eq!(config.evaluation.queue_size, 5);
            assert_eq!(config.evaluation.access_lists["openjdk-17"], "x");
            // Taken as text, not as a number.
            let password = config.monitoring.influx.password.as_ref().unwrap();
            assert_eq!(password.expose(), "123456");
            Ok(())
        });
    }

    #[test]
    fn env_names_follow_jsheets() {
        assert_eq!(env_name("server.port"), "JSHEETS_RUNTIME_SERVER_PORT");
        assert_eq!(
            env_name("server.features.enableGrpcReflection"),
            "JSHEETS_RUNTIME_SERVER_FEATURES_ENABLE_GRPC_REFLECTION"
        );
        assert_eq!(
            env_name("zookeeper.connectionString"),
            "JSHEETS_RUNTIME_ZOOKEEPER_CONNECTION_STRING"
        );
        assert_eq!(
            env_name("monitoring.influx.authToken"),
            "JSHEETS_RUNTIME_MONITORING_INFLUX_AUTH_TOKEN"
        );
        assert_eq!(
            env_name("evaluation.sandbox.iKnowThisIsUnsafe"),
            "JSHEETS_RUNTIME_EVALUATION_SANDBOX_I_KNOW_THIS_IS_UNSAFE"
        );
    }

    /// Every field of `Config` has exactly one entry in `KEYS`, and no name is taken twice.
    #[test]
    fn key_table_matches_config() {
        fn leaves(dict: &Dict, prefix: &str, out: &mut Vec<String>) {
            for (name, value) in dict {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                match value {
                    Value::Dict(_, inner) if find_key(&path).is_none() => leaves(inner, &path, out),
                    _ => out.push(path),
                }
            }
        }
        let mut from_config = Vec::new();
        leaves(&defaults_layer().unwrap().dict, "", &mut from_config);
        from_config.sort();
        let mut from_table: Vec<String> = KEYS.iter().map(|k| k.path.to_string()).collect();
        from_table.sort();
        assert_eq!(from_config, from_table);

        let mut names: Vec<String> = KEYS
            .iter()
            .flat_map(|k| {
                std::iter::once(env_name(k.path))
                    .chain(k.aliases.iter().map(|a| env_name(a)))
                    .chain(k.env_aliases.iter().map(|n| n.to_string()))
            })
            .chain(NON_KEY_ENV_VARS.iter().map(|n| n.to_string()))
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "two keys share an environment variable");
    }

    #[test]
    fn both_spellings_accepted() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "config.toml",
                "[server.features]\nenableHealthService = false\n\
                 [monitoring.influx]\ntoken = \"file-token\"\n",
            )?;
            let (config, warnings) = load(jail, Some("config.toml")).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            assert!(!config.server.features.enable_health_check);
            let token = config.monitoring.influx.auth_token.as_ref().unwrap();
            assert_eq!(token.expose(), "file-token");

            jail.set_env(
                "JSHEETS_RUNTIME_SERVER_FEATURES_ENABLE_HEALTH_SERVICE",
                "true",
            );
            jail.set_env("JSHEETS_RUNTIME_MONITORING_INFLUX_TOKEN", "env-token");
            jail.set_env("JSHEETS_RUNTIME_SERVER_SERVICE_ID", "runtime-7");
            let (config, warnings) = load(jail, Some("config.toml")).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            assert!(config.server.features.enable_health_check);
            let token = config.monitoring.influx.auth_token.as_ref().unwrap();
            assert_eq!(token.expose(), "env-token");
            assert_eq!(config.service.id, "runtime-7");
            Ok(())
        });
    }

    #[test]
    fn canonical_spelling_wins_with_a_warning() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "config.toml",
                "[monitoring.influx]\ntoken = \"old\"\nauthToken = \"new\"\n",
            )?;
            jail.set_env("JSHEETS_RUNTIME_SERVICE_ID", "runtime-a");
            jail.set_env("JSHEETS_RUNTIME_SERVER_SERVICE_ID", "runtime-b");
            let (config, warnings) = load(jail, Some("config.toml")).unwrap();
            let token = config.monitoring.influx.auth_token.as_ref().unwrap();
            assert_eq!(token.expose(), "new");
            assert_eq!(config.service.id, "runtime-a");
            assert_eq!(warnings.len(), 2, "{warnings:?}");
            assert!(warnings[0]
                .contains("both monitoring.influx.authToken and monitoring.influx.token"));
            assert_eq!(
                warnings[1],
                "both JSHEETS_RUNTIME_SERVICE_ID and JSHEETS_RUNTIME_SERVER_SERVICE_ID are set; \
                 using JSHEETS_RUNTIME_SERVICE_ID"
            );
            Ok(())
        });
    }

    /// One setting, four sources: the flag, then the environment (the key's own
    /// variable, then the older spelling), then the file, then the default.
    #[test]
    fn runtimes_dir_precedence_flag_env_file_default() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let root = jail.directory().to_path_buf();
            let dir = |flags: &Overrides, file: Option<&str>| {
                let file = file.map(|f| root.join(f));
                let (config, warnings) = load_from(
                    file.as_deref(),
                    &root.join("absent.toml"),
                    std::env::vars_os(),
                    flags,
                )
                .unwrap();
                (config.evaluation.runtimes_dir, warnings)
            };
            let none = Overrides::default();
            let flag = Overrides {
                runtimes_dir: Some("/from/flag".into()),
                state_dir: None,
            };
            assert_eq!(
                dir(&none, None).0,
                Path::new("/var/lib/jsheets-runtime/runtimes")
            );
            jail.create_file("c.toml", "[evaluation]\nruntimesDir = \"/from/file\"\n")?;
            assert_eq!(dir(&none, Some("c.toml")).0, Path::new("/from/file"));
            jail.set_env("JSHEETS_RUNTIME_RUNTIMES_DIR", "/from/old-env");
            let (value, warnings) = dir(&none, Some("c.toml"));
            assert_eq!(value, Path::new("/from/old-env"));
            assert!(
                warnings.is_empty(),
                "the old spelling is known: {warnings:?}"
            );
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR", "/from/env");
            let (value, warnings) = dir(&none, Some("c.toml"));
            assert_eq!(value, Path::new("/from/env"));
            assert_eq!(
                warnings,
                ["both JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR and JSHEETS_RUNTIME_RUNTIMES_DIR \
                  are set; using JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR"]
            );
            assert_eq!(dir(&flag, Some("c.toml")).0, Path::new("/from/flag"));
            // A relative flag is taken from the current directory.
            let relative = Overrides {
                runtimes_dir: Some("rt".into()),
                state_dir: Some("st".into()),
            };
            let (config, _) = load_from(
                None,
                &jail.directory().join("absent.toml"),
                std::env::vars_os(),
                &relative,
            )
            .unwrap();
            let cwd = std::env::current_dir().unwrap();
            assert_eq!(config.evaluation.runtimes_dir, cwd.join("rt"));
            assert_eq!(config.evaluation.state_dir, cwd.join("st"));
            // A bad value names the variable it came from, in either spelling.
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR", "");
            jail.set_env("JSHEETS_RUNTIME_RUNTIMES_DIR", "relative/runtimes");
            assert_eq!(
                problems(load(jail, None)),
                [
                    "evaluation.runtimesDir: invalid value \"relative/runtimes\" from environment \
                  variable JSHEETS_RUNTIME_RUNTIMES_DIR: expected an absolute directory path"
                ]
            );
            Ok(())
        });
    }

    /// `ENABLE_GRPC_REFLECTION` cannot be split on `_`; the table maps it.
    #[test]
    fn ambiguous_env_name_maps_to_camel_case_key() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env(
                "JSHEETS_RUNTIME_SERVER_FEATURES_ENABLE_GRPC_REFLECTION",
                "TRUE",
            );
            jail.set_env(
                "JSHEETS_RUNTIME_EVALUATION_LIMITS_MAXIMA_WALL_TIME_MS",
                "90000",
            );
            jail.set_env(
                "JSHEETS_RUNTIME_EVALUATION_SANDBOX_I_KNOW_THIS_IS_UNSAFE",
                "true",
            );
            let (config, warnings) = load(jail, None).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            assert!(config.server.features.enable_grpc_reflection);
            assert_eq!(config.evaluation.limits.maxima.wall_time_ms, 90_000);
            assert!(config.evaluation.sandbox.i_know_this_is_unsafe);
            Ok(())
        });
    }

    #[test]
    fn bad_port_from_env_names_key_value_and_variable() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("JSHEETS_RUNTIME_SERVER_PORT", "abc");
            assert_eq!(
                problems(load(jail, None)),
                [
                    "server.port: invalid value \"abc\" from environment variable \
                  JSHEETS_RUNTIME_SERVER_PORT: expected a port number 0-65535 (0: any free port)"
                ]
            );
            jail.set_env("JSHEETS_RUNTIME_SERVER_PORT", "70000");
            assert_eq!(
                problems(load(jail, None)),
                [
                    "server.port: invalid value 70000 from environment variable \
                  JSHEETS_RUNTIME_SERVER_PORT: expected a port number 0-65535 (0: any free port)"
                ]
            );
            // 0 asks for any free port.
            jail.set_env("JSHEETS_RUNTIME_SERVER_PORT", "0");
            assert_eq!(load(jail, None).map(|(c, _)| c.server.port).ok(), Some(0));
            Ok(())
        });
    }

    #[test]
    fn bad_values_from_file_name_the_file() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "config.toml",
                "[server]\nport = \"abc\"\n[monitoring]\nbackend = \"prometheus\"\n\
                 [monitoring.influx]\nstep = 0\n[log]\nformat = \"xml\"\n",
            )?;
            let file = jail.directory().join("config.toml");
            let file = file.display();
            // Type errors stop extraction; one per section is reported.
            assert_eq!(
                problems(load(jail, Some("config.toml"))),
                [
                    format!("server.port: invalid value \"abc\" from {file}: expected a port number 0-65535 (0: any free port)"),
                    format!("monitoring.backend: invalid value \"prometheus\" from {file}: expected none or influx"),
                    format!("log.format: invalid value \"xml\" from {file}: expected text or json"),
                ]
            );
            jail.create_file(
                "config.toml",
                "[monitoring.influx]\nstep = 0\nuri = \"localhost:8086\"\n",
            )?;
            assert_eq!(
                problems(load(jail, Some("config.toml"))),
                [
                    format!("monitoring.influx.uri: invalid value \"localhost:8086\" from {file}: expected an http:// or https:// URL"),
                    format!("monitoring.influx.step: invalid value 0 from {file}: expected at least 1 second"),
                ]
            );
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error_default_file_is_optional() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            assert!(matches!(
                load(jail, Some("nope.toml")),
                Err(ConfigError::FileNotFound { .. })
            ));
            jail.create_file("default.toml", "[server]\nport = 1234\n")?;
            let default_path = jail.directory().join("default.toml");
            let vars = std::env::vars_os();
            let (config, _) = load_from(None, &default_path, vars, &Overrides::default()).unwrap();
            assert_eq!(config.server.port, 1234);

            jail.create_file("broken.toml", "[server\nport = 1\n")?;
            assert!(matches!(
                load(jail, Some("broken.toml")),
                Err(ConfigError::File { .. })
            ));
            Ok(())
        });
    }

    #[test]
    fn defaults_above_maxima_refused() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "config.toml",
                "[evaluation.limits.defaults]\nwallTimeMs = 100000\nmaxProcesses = 0\n",
            )?;
            jail.set_env(
                "JSHEETS_RUNTIME_EVALUATION_LIMITS_MAXIMA_MEMORY_BYTES",
                "1000",
            );
            let file = jail.directory().join("config.toml");
            let file = file.display();
            assert_eq!(
                problems(load(jail, Some("config.toml"))),
                [
                    format!("evaluation.limits.defaults.wallTimeMs: invalid value 100000 from {file}: expected at most evaluation.limits.maxima.wallTimeMs = 60000"),
                    "evaluation.limits.defaults.memoryBytes: invalid value 268435456 from the built-in defaults: expected at most evaluation.limits.maxima.memoryBytes = 1000".to_string(),
                    format!("evaluation.limits.defaults.maxProcesses: invalid value 0 from {file}: expected at least 1"),
                ]
            );
            Ok(())
        });
    }

    #[test]
    fn tls_half_configured_refused() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("cert.pem", "")?;
            jail.create_file("key.pem", "")?;
            jail.create_file("ca.pem", "")?;
            let dir = jail.directory().to_path_buf();
            let cert = dir.join("cert.pem");

            jail.set_env("JSHEETS_RUNTIME_SERVER_TLS_CERT_FILE", cert.display());
            assert_eq!(
                problems(load(jail, None)),
                [format!(
                    "server.tls.certFile: invalid value {cert:?} from environment variable \
                     JSHEETS_RUNTIME_SERVER_TLS_CERT_FILE: server.tls.keyFile must be set too \
                     (set both or neither)"
                )]
            );

            jail.set_env("JSHEETS_RUNTIME_SERVER_TLS_CERT_FILE", "");
            jail.set_env(
                "JSHEETS_RUNTIME_SERVER_TLS_CLIENT_CA_FILE",
                dir.join("ca.pem").display(),
            );
            jail.set_env("JSHEETS_RUNTIME_SERVER_TLS_ALLOWED_CLIENTS", "backend-1");
            let all = problems(load(jail, None));
            assert_eq!(all.len(), 1, "{all:?}");
            assert!(all[0].starts_with("server.tls.clientCaFile:"), "{all:?}");
            assert!(all[0].ends_with(
                "client certificates need TLS: set server.tls.certFile and server.tls.keyFile too"
            ));

            jail.set_env("JSHEETS_RUNTIME_SERVER_TLS_CERT_FILE", cert.display());
            jail.set_env(
                "JSHEETS_RUNTIME_SERVER_TLS_KEY_FILE",
                dir.join("missing.pem").display(),
            );
            assert_eq!(
                problems(load(jail, None)),
                [format!(
                    "server.tls.keyFile: invalid value {:?} from environment variable \
                     JSHEETS_RUNTIME_SERVER_TLS_KEY_FILE: expected an existing file",
                    dir.join("missing.pem")
                )]
            );

            jail.set_env(
                "JSHEETS_RUNTIME_SERVER_TLS_KEY_FILE",
                dir.join("key.pem").display(),
            );
            jail.set_env(
                "JSHEETS_RUNTIME_SERVER_TLS_ALLOWED_CLIENTS",
                "[\"backend-1\", backend-2]",
            );
            let (config, _) = load(jail, None).unwrap();
            assert_eq!(
                config.server.tls.allowed_clients,
                ["backend-1", "backend-2"]
            );
            assert_eq!(config.server.tls.key_file, Some(dir.join("key.pem")));

            jail.set_env("JSHEETS_RUNTIME_SERVER_TLS_CLIENT_CA_FILE", "");
            jail.set_env(
                "JSHEETS_RUNTIME_SERVER_TLS_ALLOWED_CLIENTS",
                "backend-1, backend-2",
            );
            let all = problems(load(jail, None));
            assert!(all.contains(&"server.tls.allowedClients: invalid value [\"backend-1\", \"backend-2\"] from environment variable JSHEETS_RUNTIME_SERVER_TLS_ALLOWED_CLIENTS: clients are identified by their certificates: set server.tls.clientCaFile too".to_string()), "{all:?}");
            Ok(())
        });
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

    #[test]
    fn unknown_names_warned() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "config.toml",
                "[server]\nprot = 1\n[extra]\na = 1\n[evaluation.accessLists]\nany-runtime = \"x\"\n",
            )?;
            jail.set_env("JSHEETS_RUNTIME_SERVER_PROT", "1");
            jail.set_env("JSHEETS_RUNTIME_LOG", "debug");
            jail.set_env("JSHEETS_RUNTIME_CONFIG", "ignored-here.toml");
            let file = jail.directory().join("config.toml");
            let file = file.display();
            let (_, warnings) = load(jail, Some("config.toml")).unwrap();
            assert_eq!(
                warnings,
                [
                    format!("{file}: ignoring unknown key extra"),
                    format!("{file}: ignoring unknown key server.prot (did you mean server.port?)"),
                    "ignoring unknown environment variable JSHEETS_RUNTIME_SERVER_PROT \
                     (did you mean JSHEETS_RUNTIME_SERVER_PORT?)"
                        .to_string(),
                ]
            );
            Ok(())
        });
    }

    #[test]
    fn invalid_configuration_shows_warnings_too() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("JSHEETS_RUNTIME_SERVER_PORT", "70000");
            jail.set_env("JSHEETS_RUNTIME_SEVRER_PORT", "8080");
            let error = load(jail, None).unwrap_err();
            assert_eq!(
                error.to_string(),
                "server.port: invalid value 70000 from environment variable \
                 JSHEETS_RUNTIME_SERVER_PORT: expected a port number 0-65535 (0: any free port)\n\
                 warning: ignoring unknown environment variable JSHEETS_RUNTIME_SEVRER_PORT \
                 (did you mean JSHEETS_RUNTIME_SERVER_PORT?)"
            );
            Ok(())
        });
    }

    #[test]
    fn sandbox_disable_needs_confirmation() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_SANDBOX_DISABLE", "true");
            let all = problems(load(jail, None));
            assert_eq!(all.len(), 1);
            assert!(
                all[0].starts_with(
                    "evaluation.sandbox.disable: invalid value true from environment variable \
                 JSHEETS_RUNTIME_EVALUATION_SANDBOX_DISABLE: refusing to run user code without \
                 the sandbox"
                ),
                "{all:?}"
            );
            assert!(all[0].contains("evaluation.sandbox.iKnowThisIsUnsafe = true"));

            jail.set_env(
                "JSHEETS_RUNTIME_EVALUATION_SANDBOX_I_KNOW_THIS_IS_UNSAFE",
                "true",
            );
            let (config, warnings) = load(jail, None).unwrap();
            assert!(config.evaluation.sandbox.disable);
            assert_eq!(warnings.len(), 1);
            assert!(warnings[0].contains("WITHOUT the sandbox"));
            Ok(())
        });
    }

    #[test]
    fn other_checks() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("JSHEETS_RUNTIME_SERVICE_ADVERTISED_HOST", "runtime 1:80");
            jail.set_env("JSHEETS_RUNTIME_SERVICE_ID", "a/b");
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_MAX_CONCURRENT", "0");
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_CPUSET", "3-1");
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_POOL", "{Bad_Name = {size = 1}}");
            jail.set_env("JSHEETS_RUNTIME_ZOOKEEPER_BASE_PATH", "jsheets/");
            jail.set_env("JSHEETS_RUNTIME_SERVER_HOST", "not a host");
            let all = problems(load(jail, None));
            let keys: Vec<&str> = all.iter().filter_map(|p| p.split(':').next()).collect();
            assert_eq!(
                keys,
                [
                    "server.host",
                    "service.id",
                    "service.advertisedHost",
                    "evaluation.maxConcurrent",
                    "evaluation.cpuset",
                    "evaluation.pool.Bad_Name",
                    "zookeeper.basePath",
                ],
                "{all:#?}"
            );
            assert!(all[5].contains("from environment variable JSHEETS_RUNTIME_EVALUATION_POOL"));

            jail.clear_env();
            jail.set_env("JSHEETS_RUNTIME_SERVICE_ADVERTISED_HOST", "[fd00::1]:8080");
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_CPUSET", "0-3,6");
            jail.set_env("JSHEETS_RUNTIME_MONITORING_BACKEND", "influx");
            jail.set_env(
                "JSHEETS_RUNTIME_MONITORING_INFLUX_URI",
                "https://influx.example:8086/",
            );
            jail.set_env("JSHEETS_RUNTIME_MONITORING_INFLUX_ORG", "acme");
            let (config, warnings) = load(jail, None).unwrap();
            assert_eq!(config.monitoring.backend, MonitoringBackend::Influx);
            assert_eq!(
                config.advertised_address(8080).unwrap().as_deref(),
                Some("[fd00::1]:8080")
            );
            // A bare host gets the port listened on; auto, this host's name.
            let mut bare = config.clone();
            bare.service.advertised_host = Some("runtime-1".into());
            assert_eq!(
                bare.advertised_address(9000).unwrap().as_deref(),
                Some("runtime-1:9000")
            );
            bare.service.advertised_host = Some(ADVERTISE_AUTO.into());
            let auto = bare.advertised_address(9000).unwrap().unwrap();
            assert!(auto.ends_with(":9000") && auto.len() > 5, "{auto}");
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].contains("authToken"));
            Ok(())
        });
    }

    #[test]
    fn validators() {
        assert!(is_runtime_name("openjdk-17"));
        assert!(is_runtime_name("python-3.12"));
        assert!(!is_runtime_name("-x"));
        assert!(!is_runtime_name("Openjdk"));
        assert!(!is_runtime_name(&"a".repeat(65)));
        assert!(is_host_port("runtime_1:8080"));
        assert!(!is_host_port("runtime:0"));
        assert!(!is_host_port(":8080"));
        assert!(is_http_url("http://localhost:8086"));
        assert!(is_http_url("http://[::1]:8086"));
        assert!(!is_http_url("http://"));
        assert!(!is_http_url("ftp://x"));
        assert!(is_cpu_list("0"));
        assert!(!is_cpu_list(""));
        assert!(!is_cpu_list("0,,1"));
    }
}
