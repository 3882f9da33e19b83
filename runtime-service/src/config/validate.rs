//! Validation of a merged configuration, and the messages of every bad value: the key,
//! the value, where it came from (file, environment variable, flag or defaults) and
//! what was expected.

use std::fmt;
use std::net::IpAddr;

use figment::error::{Actual, Kind};
use figment::value::Value;
use figment::{Figment, Metadata, Profile, Source};

use super::keys::{find_key, TEXT};
use super::schema::{
    Config, EvaluationConfig, MonitoringBackend, MonitoringConfig, ServerConfig, ServiceConfig,
    ZookeeperConfig, ADVERTISE_AUTO, REDACTED,
};
use super::syntax::{
    is_cpu_list, is_dataset_name, is_host_name, is_host_port, is_http_url, is_runtime_name,
};

/// Metadata names of the layers, used to tell where a value came from.
pub(super) const DEFAULTS_LAYER: &str = "the built-in defaults";
pub(super) const ENV_LAYER: &str = "environment variables";
pub(super) const FLAGS_LAYER: &str = "command-line flags";

const RUNTIME_NAME: &str = "a runtime name matching ^[a-z0-9][a-z0-9._-]{0,63}$";

/// One line for one figment error: key, value, source, expectation.
pub(super) fn describe_error(error: &figment::Error) -> String {
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

/// Every problem of `config`, one line each; unsafe settings add `warnings`.
pub(super) fn validate(
    config: &Config,
    figment: &Figment,
    warnings: &mut Vec<String>,
) -> Vec<String> {
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
        (
            "evaluation.maxInputFiles",
            u64::from(evaluation.max_input_files),
        ),
        (
            "evaluation.maxInputFileBytes",
            evaluation.max_input_file_bytes,
        ),
        (
            "evaluation.maxReturnedFiles",
            u64::from(evaluation.max_returned_files),
        ),
        ("evaluation.maxInputs", u64::from(evaluation.max_inputs)),
        ("evaluation.maxInputsBytes", evaluation.max_inputs_bytes),
    ] {
        if value == 0 {
            check.bad(key, value, "expected at least 1");
        }
    }
    validate_returned_files(evaluation, check);
    validate_datasets(evaluation, check);
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
    if let Some(dir) = evaluation
        .uid_claim_dir
        .as_ref()
        .filter(|d| !d.is_absolute())
    {
        check.bad(
            "evaluation.uidClaimDir",
            dir,
            expected("evaluation.uidClaimDir"),
        );
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

/// The caps of returned files: each at least 1, each default at most its maximum.
fn validate_returned_files(evaluation: &EvaluationConfig, check: &mut Checker<'_>) {
    for ((default_key, default), (maximum_key, maximum)) in [
        (
            (
                "evaluation.defaultReturnedFileBytes",
                evaluation.default_returned_file_bytes,
            ),
            (
                "evaluation.maxReturnedFileBytes",
                evaluation.max_returned_file_bytes,
            ),
        ),
        (
            (
                "evaluation.defaultReturnedTotalBytes",
                evaluation.default_returned_total_bytes,
            ),
            (
                "evaluation.maxReturnedTotalBytes",
                evaluation.max_returned_total_bytes,
            ),
        ),
    ] {
        if default == 0 {
            check.bad(default_key, default, "expected at least 1");
        }
        if maximum == 0 {
            check.bad(maximum_key, maximum, "expected at least 1");
        }
        if default > maximum && maximum > 0 {
            check.bad(
                default_key,
                default,
                format!("expected at most {maximum_key} = {maximum}"),
            );
        }
    }
}

/// Datasets: plain names, absolute paths of directories that exist.
fn validate_datasets(evaluation: &EvaluationConfig, check: &mut Checker<'_>) {
    for (name, dir) in &evaluation.datasets {
        if !is_dataset_name(name) {
            check.bad_entry(
                "evaluation.datasets",
                name,
                name,
                "expected a dataset name matching ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
            );
        } else if !dir.is_absolute() {
            check.bad_entry(
                "evaluation.datasets",
                name,
                dir,
                "expected an absolute directory path",
            );
        } else if !dir.is_dir() {
            check.bad_entry(
                "evaluation.datasets",
                name,
                dir,
                "expected an existing directory",
            );
        }
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
    fn file_caps_checked_against_each_other() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "config.toml",
                "[evaluation]\ndefaultReturnedFileBytes = 100\nmaxReturnedFileBytes = 10\n\
                 maxReturnedTotalBytes = 0\nmaxInputFiles = 0\n",
            )?;
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_MAX_RETURNED_FILES", "0");
            let file = jail.directory().join("config.toml");
            let file = file.display();
            assert_eq!(
                problems(load(jail, Some("config.toml"))),
                [
                    format!("evaluation.maxInputFiles: invalid value 0 from {file}: expected at least 1"),
                    "evaluation.maxReturnedFiles: invalid value 0 from environment variable \
                     JSHEETS_RUNTIME_EVALUATION_MAX_RETURNED_FILES: expected at least 1"
                        .to_string(),
                    format!("evaluation.defaultReturnedFileBytes: invalid value 100 from {file}: \
                             expected at most evaluation.maxReturnedFileBytes = 10"),
                    format!("evaluation.maxReturnedTotalBytes: invalid value 0 from {file}: expected at least 1"),
                ]
            );
            Ok(())
        });
    }

    #[test]
    fn datasets_need_plain_names_and_existing_absolute_directories() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let dir = jail.directory().join("prices");
            std::fs::create_dir(&dir).unwrap();
            jail.create_file(
                "config.toml",
                &format!(
                    "[evaluation.datasets]\nprices = {:?}\n\"../up\" = {:?}\n\
                     logs = \"relative/logs\"\nmissing = \"/nonexistent/jsheets-dataset\"\n",
                    dir.display().to_string(),
                    dir.display().to_string()
                ),
            )?;
            let file = jail.directory().join("config.toml");
            let file = file.display();
            assert_eq!(
                problems(load(jail, Some("config.toml"))),
                [
                    format!("evaluation.datasets.../up: invalid value \"../up\" from {file}: \
                             expected a dataset name matching ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$"),
                    format!("evaluation.datasets.logs: invalid value \"relative/logs\" from {file}: \
                             expected an absolute directory path"),
                    format!("evaluation.datasets.missing: invalid value \"/nonexistent/jsheets-dataset\" \
                             from {file}: expected an existing directory"),
                ]
            );
            // The environment's `name=dir,name=dir` form.
            jail.set_env(
                "JSHEETS_RUNTIME_EVALUATION_DATASETS",
                format!("prices={}, other = {}", dir.display(), dir.display()),
            );
            let (config, _) = load(jail, None).unwrap();
            let names: Vec<&String> = config.evaluation.datasets.keys().collect();
            assert_eq!(names, ["other", "prices"]);
            assert_eq!(config.evaluation.datasets["prices"], dir);
            jail.set_env("JSHEETS_RUNTIME_EVALUATION_DATASETS", "nodir");
            assert_eq!(
                problems(load(jail, None)),
                [
                    "evaluation.datasets: invalid value \"nodir\" from environment variable \
                  JSHEETS_RUNTIME_EVALUATION_DATASETS: expected a table of dataset name = \
                  absolute directory, e.g. {prices = \"/srv/data/prices\"} or \
                  prices=/srv/data/prices,logs=/srv/logs"
                ]
            );
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
}
