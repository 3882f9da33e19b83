//! The table of configuration keys: each key's path, its environment variables (the
//! path in SCREAMING_SNAKE, other spellings) and what a valid value looks like.

/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "JSHEETS_RUNTIME_";
/// Environment variable naming the configuration file (like `--config`).
pub const CONFIG_FILE_ENV: &str = "JSHEETS_RUNTIME_CONFIG";

/// Variables with the prefix that are not configuration keys (read by the command line),
/// so they are not reported as unknown.
pub(super) const NON_KEY_ENV_VARS: &[&str] = &[CONFIG_FILE_ENV, "JSHEETS_RUNTIME_LOG"];

/// How an environment variable's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvKind {
    /// Taken as it is (names, paths, secrets: `123456` stays a string).
    Text,
    /// `true` or `false`, any case.
    Bool,
    /// Parsed by figment (numbers).
    Number,
    /// `[a, b]` or `a,b`.
    List,
    /// A TOML inline table: `{openjdk-17 = "strict"}`, or `name=value,name=value`
    /// (each value a string).
    Table,
}

/// A configuration key and its environment variable.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key {
    /// Canonical camelCase dotted path.
    pub(super) path: &'static str,
    pub(super) kind: EnvKind,
    /// What a valid value looks like, for messages.
    pub(super) expect: &'static str,
    /// Other spellings, accepted in files and (converted) in the environment.
    pub(super) aliases: &'static [&'static str],
    /// Further environment variable names.
    pub(super) env_aliases: &'static [&'static str],
    /// Never shown.
    pub(super) secret: bool,
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
pub(super) const TEXT: &str = "a string";
const FILE: &str = "a file path";
const DIR: &str = "an absolute directory path";
const COUNT: &str = "a whole number of at least 1";
const MS: &str = "a whole number of milliseconds";
const SECONDS: &str = "a whole number of seconds";
const BYTES: &str = "a whole number of bytes";

use EnvKind::{Bool, List, Number, Table, Text};

/// Every configuration key; environment variables are derived from these paths.
pub(super) const KEYS: &[Key] = &[
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
    key("evaluation.maxInputFiles", Number, COUNT),
    key("evaluation.maxInputFileBytes", Number, BYTES),
    key("evaluation.defaultReturnedFileBytes", Number, BYTES),
    key("evaluation.maxReturnedFileBytes", Number, BYTES),
    key("evaluation.defaultReturnedTotalBytes", Number, BYTES),
    key("evaluation.maxReturnedTotalBytes", Number, BYTES),
    key("evaluation.maxReturnedFiles", Number, COUNT),
    key("evaluation.maxInputs", Number, COUNT),
    key("evaluation.maxInputsBytes", Number, BYTES),
    key("evaluation.inputParallelism", Number, "a whole number (0: the number of CPUs)"),
    key(
        "evaluation.datasets",
        Table,
        "a table of dataset name = absolute directory, e.g. {prices = \"/srv/data/prices\"} or prices=/srv/data/prices,logs=/srv/logs",
    ),
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
    key("evaluation.uidClaimDir", Text, DIR),
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
    key("evaluation.poolDefaults", Bool, BOOL),
    key("evaluation.poolMemoryBytes", Number, BYTES),
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
pub(super) fn env_name(path: &str) -> String {
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
pub(super) fn find_key(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use figment::value::{Dict, Value};

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
        let defaults = Value::serialize(Config::default()).unwrap();
        leaves(&defaults.into_dict().unwrap(), "", &mut from_config);
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
}
