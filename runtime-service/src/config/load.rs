//! Loading the configuration: built-in defaults, then a TOML file, then
//! `JSHEETS_RUNTIME_*` environment variables, then command-line flags, merged with
//! figment, each value remembering where it came from, then validated.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;

use super::keys::{
    env_name, find_key, EnvKind, Key, CONFIG_FILE_ENV, ENV_PREFIX, KEYS, NON_KEY_ENV_VARS,
};
use super::schema::Config;
use super::validate::{describe_error, validate, DEFAULTS_LAYER, ENV_LAYER, FLAGS_LAYER};

/// Read when no file is named, and only if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/jsheets-runtime/config.toml";

/// A configuration that cannot be used; the binary prints it and exits with 64.
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

/// Reads, merges and validates the configuration: built-in defaults, then `file`
/// (else the file named by `JSHEETS_RUNTIME_CONFIG`, else [`DEFAULT_CONFIG_FILE`] if
/// it exists), then the environment, then the command-line `flags`. A file named
/// explicitly must exist. Returns the configuration and warnings (unknown keys and
/// variables, unsafe settings).
pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<(Config, Vec<String>), ConfigError> {
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
        EnvKind::Table if trimmed.starts_with('{') => {
            toml::from_str::<toml::Table>(&format!("v = {trimmed}"))
                .ok()
                .and_then(|mut table| table.remove("v"))
                .and_then(|v| Value::serialize(v).ok())
                .unwrap_or_else(|| Value::from(raw))
        }
        // `name=value,name=value`: every value a string (a value with a comma or an
        // entry whose value is a table needs the inline-table form).
        EnvKind::Table => {
            let mut table = std::collections::BTreeMap::new();
            for entry in trimmed.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                match entry.split_once('=') {
                    Some((name, value)) => {
                        table.insert(name.trim().to_string(), value.trim().to_string());
                    }
                    // Not a table: shown as it is in the message about it.
                    None => return Value::from(raw),
                }
            }
            Value::serialize(table).unwrap_or_else(|_| Value::from(raw))
        }
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

fn came_from_defaults(figment: &Figment, key: &str) -> bool {
    figment
        .find_metadata(key)
        .is_none_or(|m| m.name == DEFAULTS_LAYER)
}

/// Loading in tests: with the process environment of a figment `Jail`, no default file.
#[cfg(test)]
pub(super) mod testing {
    use super::*;
    use figment::Jail;

    /// Loads with the process environment of the jail and no default file.
    pub fn load(jail: &Jail, file: Option<&str>) -> Result<(Config, Vec<String>), ConfigError> {
        let file = file.map(|f| jail.directory().join(f));
        load_from(
            file.as_deref(),
            &jail.directory().join("absent.toml"),
            std::env::vars_os(),
            &Overrides::default(),
        )
    }

    pub fn problems(result: Result<(Config, Vec<String>), ConfigError>) -> Vec<String> {
        match result {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid configuration, got {other:?}"),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "`Jail` closures return `figment::Result`"
)]
mod tests {
    use super::testing::{load, problems};
    use super::*;
    use crate::config::{LogFormat, MonitoringBackend};
    use figment::Jail;

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
    fn pools_default_on_a_table_replaces_them_and_a_switch_turns_them_off() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let (config, _) = load(jail, None).unwrap();
            let e = &config.evaluation;
            assert!(e.pool.is_empty());
            assert!(e.pool_defaults, "default pools are on");
            assert_eq!(e.pool_memory_bytes, None);

            jail.create_file(
                "config.toml",
                "[evaluation]\npoolMemoryBytes = 1073741824\n\
                 [evaluation.pool]\n\"python-3.11\" = { size = 0 }\n\
                 \"openjdk-17\" = { size = 3, idleMemoryBytes = 200000000 }\n",
            )?;
            let (config, warnings) = load(jail, Some("config.toml")).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            let e = &config.evaluation;
            assert_eq!(e.pool["python-3.11"].size, 0);
            assert_eq!(e.pool["openjdk-17"].size, 3);
            assert_eq!(e.pool["openjdk-17"].idle_memory_bytes, Some(200_000_000));
            assert_eq!(e.pool_memory_bytes, Some(1 << 30));

            jail.create_file("off.toml", "[evaluation]\npoolDefaults = false\n")?;
            let (config, _) = load(jail, Some("off.toml")).unwrap();
            assert!(!config.evaluation.pool_defaults);

            // The environment forms.
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_POOL_DEFAULTS", "true");
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_POOL_MEMORY_BYTES", "0");
            jail.set_env(
                "JSHEETS_RUNTIME_EVALUATION_POOL",
                "{\"python-3.11\" = {size = 5}}",
            );
            let (config, warnings) = load(jail, Some("off.toml")).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            let e = &config.evaluation;
            assert!(e.pool_defaults);
            assert_eq!(e.pool_memory_bytes, Some(0));
            assert_eq!(e.pool["python-3.11"].size, 5);
            Ok(())
        });
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
}
