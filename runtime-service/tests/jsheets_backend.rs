//! A real jsheets backend against our nodes: `tests/jsheets-backend/JsheetsBackend.java`,
//! built here with Debian's jars (Curator, ZooKeeper, gRPC, protobuf) and stubs generated
//! by protoc + grpc_java_plugin from jsheets' own proto (no extension fields), finds
//! nodes in a real ZooKeeper exactly as jsheets' backend does (`builder(Void.class)`,
//! `/jsheets/services`, service `runtime`, round robin) and evaluates Java snippets the
//! way jsheets does (one `start`, responses until the server completes the stream, never
//! a half-close; `stop` mid-run). Each case prints its outcome and the time the Java
//! client measured from sending `start` to the end of the stream (see them with
//! `cargo nextest run -p runtime-service --test jsheets_backend --success-output immediate`).

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::*;

/// The Java client's sources: `JsheetsBackend.java` and `proto/`.
const SOURCES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jsheets-backend");

/// jsheets' proto files, relative to `SOURCES/proto`.
const PROTOS: [&str; 3] = [
    "jsheets/api/snippet.proto",
    "jsheets/api/sheet.proto",
    "jsheets/api/snippet_runtime.proto",
];

/// The jars (in /usr/share/java) the client runs with, each with the Debian package that
/// ships it. Named one by one: `/usr/share/java/*` comes in directory order and holds
/// several SLF4J bindings. This is the closure `jdeps -R` finds from the client's classes
/// (what is left "not found" is annotations and optional parts: tcnative, epoll, log4j,
/// metrics, snappy), plus what gRPC loads through `ServiceLoader` (grpc-core, grpc-netty
/// and the Netty codecs it needs, perfmark); each was checked by leaving it out. Some of
/// Debian's jars name their dependencies in their manifest's `Class-Path` too (Curator,
/// ZooKeeper, jackson-databind); listing them here keeps the classpath explicit.
const JARS: &[(&str, &str)] = &[
    // gRPC over Netty, protobuf messages.
    ("grpc-api", "libgrpc-java"),
    ("grpc-context", "libgrpc-java"),
    ("grpc-core", "libgrpc-java"),
    ("grpc-netty", "libgrpc-java"),
    ("grpc-protobuf", "libgrpc-java"),
    ("grpc-protobuf-lite", "libgrpc-java"),
    ("grpc-stub", "libgrpc-java"),
    ("perfmark-api", "libperfmark-java"),
    ("protobuf", "libprotobuf-java"),
    ("guava", "libguava-java"),
    ("netty-buffer", "libnetty-java"),
    ("netty-codec", "libnetty-java"),
    ("netty-codec-http", "libnetty-java"),
    ("netty-codec-http2", "libnetty-java"),
    ("netty-common", "libnetty-java"),
    ("netty-handler", "libnetty-java"),
    ("netty-resolver", "libnetty-java"),
    ("netty-transport", "libnetty-java"),
    // Curator service discovery (which reads instances with Jackson) over ZooKeeper.
    ("curator-client", "libcurator-client-java"),
    ("curator-framework", "libcurator-framework-java"),
    ("curator-recipes", "libcurator-recipes-java"),
    ("curator-x-discovery", "libcurator-discovery-java"),
    ("zookeeper", "libzookeeper-java"),
    ("zookeeper-jute", "libzookeeper-java"),
    ("jackson-annotations", "libjackson2-annotations-java"),
    ("jackson-core", "libjackson2-core-java"),
    ("jackson-databind", "libjackson2-databind-java"),
    // Logging: one binding, to standard error.
    ("slf4j-api", "libslf4j-java"),
    ("slf4j-simple", "libslf4j-java"),
];

/// For javac only: Debian's grpc_java_plugin (1.41) annotates the stubs with
/// `@javax.annotation.Generated`, gone from the JDK since 11 (source retention, so not
/// needed to run).
const COMPILE_ONLY_JARS: &[(&str, &str)] = &[(
    "geronimo-annotation-1.3-spec",
    "libgeronimo-annotation-1.3-spec-java",
)];

/// Tools and files the build needs, with their Debian packages.
const TOOLS: &[(&str, &str)] = &[
    ("/usr/bin/protoc", "protobuf-compiler"),
    (
        "/usr/bin/grpc_java_plugin",
        "protobuf-compiler-grpc-java-plugin",
    ),
    (
        "/usr/include/google/protobuf/timestamp.proto",
        "libprotobuf-dev",
    ),
    ("/usr/bin/javac", "openjdk-17-jdk-headless"),
    ("/usr/bin/java", "openjdk-17-jdk-headless"),
];

fn jar(name: &str) -> PathBuf {
    Path::new("/usr/share/java").join(format!("{name}.jar"))
}

fn classpath(jars: &[(&str, &str)]) -> String {
    jars.iter()
        .map(|(name, _)| jar(name).display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------------------
// Building the client, once per target directory and again when a source changes.

/// The compiled client's class directory. Built under a file lock (test processes run
/// in parallel) into `target/tmp/jsheets-backend/classes`, and rebuilt when a source
/// file or a jar changes.
fn client_classes() -> PathBuf {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES
        .get_or_init(|| {
            for (name, package) in JARS.iter().chain(COMPILE_ONLY_JARS) {
                assert!(
                    jar(name).is_file(),
                    "{} is missing: install Debian's {package} (.ci/run lists it)",
                    jar(name).display()
                );
            }
            for (path, package) in TOOLS {
                assert!(
                    Path::new(path).exists(),
                    "{path} is missing: install Debian's {package} (.ci/run lists it)"
                );
            }
            let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jsheets-backend");
            fs::create_dir_all(&base).unwrap();
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(base.join(".lock"))
                .unwrap();
            let _lock = Flock::lock(lock, FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .expect("locking the jsheets backend's build directory");

            // What the build depends on: every source, and the jars' real (versioned) paths.
            let sources = Path::new(SOURCES);
            let mut files = vec![sources.join("JsheetsBackend.java")];
            files.extend(PROTOS.iter().map(|p| sources.join("proto").join(p)));
            let mut stamp = String::new();
            for f in &files {
                let text = fs::read_to_string(f)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
                write!(stamp, "== {}\n{text}\n", f.display()).unwrap();
            }
            for (name, _) in JARS.iter().chain(COMPILE_ONLY_JARS) {
                let real = fs::canonicalize(jar(name)).unwrap();
                writeln!(stamp, "jar {}", real.display()).unwrap();
            }
            let classes = base.join("classes");
            let stamp_file = base.join("built-from");
            if classes.is_dir()
                && fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str())
            {
                return classes;
            }

            let started = Instant::now();
            let _ = fs::remove_file(&stamp_file);
            let _ = fs::remove_dir_all(&classes);
            let build = base.join("build");
            let _ = fs::remove_dir_all(&build);
            let generated = build.join("generated");
            let compiled = build.join("classes");
            fs::create_dir_all(&generated).unwrap();
            fs::create_dir_all(&compiled).unwrap();
            run(Command::new("protoc")
                .current_dir(sources.join("proto"))
                .args(["-I", ".", "-I", "/usr/include"])
                .arg("--plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin")
                .arg(format!("--java_out={}", generated.display()))
                .arg(format!("--grpc-java_out={}", generated.display()))
                .args(PROTOS));
            let mut java_files = vec![sources.join("JsheetsBackend.java")];
            collect_java(&generated, &mut java_files);
            let compile_cp = format!(
                "{}:{}",
                classpath(JARS),
                classpath(COMPILE_ONLY_JARS)
            );
            run(Command::new("javac")
                .args(["-nowarn", "-encoding", "UTF-8", "-d"])
                .arg(&compiled)
                .args(["-cp", &compile_cp])
                .args(&java_files));
            fs::rename(&compiled, &classes).unwrap();
            let _ = fs::remove_dir_all(&build);
            fs::write(&stamp_file, stamp).unwrap();
            println!(
                "built the jsheets backend (protoc + grpc_java_plugin + javac, {} files) in {:.1} s",
                java_files.len(),
                started.elapsed().as_secs_f64()
            );
            classes
        })
        .clone()
}

fn collect_java(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            collect_java(&path, out);
        } else if path.extension().is_some_and(|x| x == "java") {
            out.push(path);
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// The running client.

/// A runtime node as Curator's ServiceProvider sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Instance {
    id: String,
    address: String,
    port: u16,
}

impl Instance {
    fn from_json(v: &Value) -> Instance {
        Instance {
            id: v["id"].as_str().unwrap_or_default().to_owned(),
            address: v["address"].as_str().unwrap_or_default().to_owned(),
            port: v["port"].as_u64().unwrap_or_default() as u16,
        }
    }
}

/// One `JsheetsBackend` JVM, driven through its standard input; dropping it closes its
/// input (it shuts down), kills it if it does not exit, and prints its standard error
/// if the test is failing.
struct Backend {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr_path: PathBuf,
    zookeeper: String,
    // Last: removed after the process is gone.
    _dir: tempfile::TempDir,
}

impl Backend {
    /// Starts the client against `zk` and waits until its discovery has started.
    fn start(zk: &ZooKeeper) -> Backend {
        let classes = client_classes();
        let dir = tempfile::Builder::new()
            .prefix("jsheets-backend-")
            .tempdir()
            .unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let cp = format!("{}:{}", classes.display(), classpath(JARS));
        let started = Instant::now();
        // Killed with the test's thread if the test process dies without unwinding.
        let mut child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "java"])
            .args(["-Xmx128m", "-XX:+UseSerialGC"])
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .args(["-cp", &cp, "JsheetsBackend", &zk.connection()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).unwrap())
            .spawn()
            .expect("starting the jsheets backend (java)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut backend = Backend {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            stderr_path,
            zookeeper: zk.connection(),
            _dir: dir,
        };
        let ready = backend.next(Instant::now() + Duration::from_secs(60), "its start");
        assert_eq!(ready["type"], "ready", "{ready}");
        println!(
            "jsheets backend (Curator discovery) started in {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        backend
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn send(&mut self, command: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .expect("writing to the jsheets backend");
    }

    /// The client's next output line, parsed.
    fn next(&mut self, deadline: Instant, what: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the backend printed {line:?}: {e}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the jsheets backend did not answer in time: {what}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().unwrap();
                panic!("the jsheets backend exited ({status}) while waiting for {what}")
            }
        }
    }

    /// What its discovery sees now: the service names under `/jsheets/services` and the
    /// instances its ServiceProvider holds.
    fn discovered(&mut self) -> (Vec<String>, Vec<Instance>) {
        self.send(&json!({"cmd": "instances"}));
        let answer = self.next(Instant::now() + NET, "its instances");
        assert_eq!(answer["type"], "instances", "{answer}");
        let names = answer["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        let mut list: Vec<_> = answer["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(Instance::from_json)
            .collect();
        list.sort();
        (names, list)
    }

    /// Polls the instances until `ok` holds, within `limit`; returns them and how long
    /// it took.
    fn wait_for_instances(
        &mut self,
        what: &str,
        limit: Duration,
        ok: impl Fn(&[Instance]) -> bool,
    ) -> (Vec<Instance>, Duration) {
        let started = Instant::now();
        loop {
            let (_, list) = self.discovered();
            if ok(&list) {
                return (list, started.elapsed());
            }
            // What `builder(Void.class)` does with a non-null `payload`: the instance
            // never enters the cache, however long one waits.
            let stderr = self.stderr();
            assert!(
                !stderr.contains("ClassCastException"),
                "the jsheets backend cannot read a registration (Curator's \
                 JsonInstanceSerializer with Void payloads needs `\"payload\":null`).\n\
                 Registrations in ZooKeeper:\n{}\nThe backend's stderr:\n{stderr}",
                registrations(&self.zookeeper)
            );
            assert!(
                started.elapsed() < limit,
                "the jsheets backend's discovery did not see {what} within {limit:?}; it \
                 sees {list:?}.\nRegistrations in ZooKeeper:\n{}\nThe backend's stderr:\n{}",
                registrations(&self.zookeeper),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one evaluation as jsheets does and returns everything the client saw.
    fn evaluate(&mut self, case: &Case) -> Evaluation {
        let components: Vec<Value> = case
            .components
            .iter()
            .map(|(id, code)| json!({"id": id, "code": code}))
            .collect();
        let timeout_ms = 90_000;
        self.send(&json!({
            "cmd": "evaluate",
            "case": case.name,
            "components": components,
            "stopAfterOutput": case.stop_after_output,
            "timeoutMs": timeout_ms,
        }));
        let deadline = Instant::now() + Duration::from_millis(timeout_ms) + NET;
        let mut responses = Vec::new();
        loop {
            let line = self.next(deadline, &format!("case {}", case.name));
            assert_eq!(line["case"], case.name, "{line}");
            match line["type"].as_str() {
                Some("response") => responses.push(line),
                Some("end") => {
                    let e = Evaluation {
                        name: case.name.to_owned(),
                        responses,
                        end: line,
                    };
                    e.report();
                    return e;
                }
                _ => panic!("unexpected line from the backend: {line}"),
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // End of input: it closes its channels, discovery and ZooKeeper client and exits.
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- stderr of the jsheets backend ----\n{}---- end of its stderr ----",
                self.stderr()
            );
        }
    }
}

/// What `/jsheets/services/runtime` holds: each child and its data (for failures).
fn registrations(connection: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let connect = zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(connection);
        let client = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return format!("(could not connect to ZooKeeper: {e})"),
            Err(_) => return "(could not connect to ZooKeeper in 10 s)".into(),
        };
        let base = "/jsheets/services/runtime";
        let children = match client.list_children(base).await {
            Ok(c) => c,
            Err(e) => return format!("(listing {base}: {e})"),
        };
        let mut out = String::new();
        for child in children {
            let path = format!("{base}/{child}");
            let data = match client.get_data(&path).await {
                Ok((data, _)) => String::from_utf8_lossy(&data).into_owned(),
                Err(e) => format!("({e})"),
            };
            writeln!(out, "  {path}: {data}").unwrap();
        }
        if out.is_empty() {
            out = format!("  (nothing under {base})");
        }
        out
    })
}

// ---------------------------------------------------------------------------------------
// Cases and what came back.

struct Case {
    name: &'static str,
    components: Vec<(&'static str, &'static str)>,
    stop_after_output: bool,
}

fn case(name: &'static str, components: &[(&'static str, &'static str)]) -> Case {
    Case {
        name,
        components: components.to_vec(),
        stop_after_output: false,
    }
}

/// The responses of one Evaluate call and the client's summary line.
struct Evaluation {
    name: String,
    responses: Vec<Value>,
    end: Value,
}

impl Evaluation {
    /// "OK" when the server completed the stream normally, else the gRPC code or the
    /// client's own failure.
    fn status(&self) -> &str {
        self.end["status"].as_str().unwrap_or_default()
    }

    /// Milliseconds from sending `start` to the end of the stream.
    fn ms(&self) -> f64 {
        self.end["ms"].as_f64().unwrap_or(f64::NAN)
    }

    fn instance(&self) -> Instance {
        Instance::from_json(&self.end["instance"])
    }

    /// Every result, in order: (component id, kind, output).
    fn results(&self) -> Vec<(String, String, String)> {
        self.responses
            .iter()
            .flat_map(|r| r["results"].as_array().unwrap().iter())
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                (s("componentId"), s("kind"), s("output"))
            })
            .collect()
    }

    /// Whether an INFO result of `component` says exactly `output`.
    fn has_info(&self, component: &str, output: &str) -> bool {
        self.results()
            .iter()
            .any(|(c, k, o)| c == component && k == "INFO" && o == output)
    }

    /// All INFO output of `component`, concatenated (stdout comes in pieces).
    fn info(&self, component: &str) -> String {
        self.results()
            .into_iter()
            .filter(|(c, k, _)| c == component && k == "INFO")
            .map(|(_, _, o)| o)
            .collect()
    }

    fn errors(&self) -> Vec<&Value> {
        self.responses
            .iter()
            .flat_map(|r| r["errors"].as_array().unwrap().iter())
            .collect()
    }

    fn error_of_kind(&self, kind: &str) -> Option<&Value> {
        self.errors().into_iter().find(|e| e["kind"] == kind)
    }

    /// The stream must have completed normally (the server called onCompleted).
    fn assert_completed(&self) {
        assert_eq!(
            self.status(),
            "OK",
            "case {}: the stream did not complete normally: {}\n{self:#?}",
            self.name,
            self.end
        );
    }

    /// One line for the test's output: outcome, where, and the client's timing.
    fn report(&self) {
        let results: Vec<String> = self
            .results()
            .iter()
            .map(|(c, k, o)| format!("{c}:{k}:{o:?}"))
            .collect();
        let errors: Vec<String> = self
            .errors()
            .iter()
            .map(|e| {
                let message = e["message"].as_str().unwrap_or_default();
                let first = message.lines().next().unwrap_or_default();
                let span = if e["span"].is_null() {
                    String::new()
                } else {
                    format!(" span {}..{}", e["span"]["start"], e["span"]["end"])
                };
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                format!("{}:{}{span} {first:?}", s("componentId"), s("kind"))
            })
            .collect();
        println!(
            "case {:<22} stream {:<14} {:>8.1} ms (first response {} ms{}) on {} | results [{}] | errors [{}]",
            self.name,
            self.status(),
            self.ms(),
            self.end["firstResponseMs"],
            self.end
                .get("stopSentMs")
                .map(|s| format!(", stop sent at {s} ms"))
                .unwrap_or_default(),
            self.end["instance"]["id"].as_str().unwrap_or("-"),
            results.join(", "),
            errors.join(", "),
        );
    }
}

impl std::fmt::Debug for Evaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "case {}:", self.name)?;
        for r in &self.responses {
            writeln!(f, "  {r}")?;
        }
        write!(f, "  {}", self.end)
    }
}

// ---------------------------------------------------------------------------------------
// Nodes.

/// A node registered in `zk` under 127.0.0.1, with Java (`openjdk-17`) as its default
/// runtime (what a jsheets backend, which never names a runtime, gets), a short
/// ZooKeeper session, and `extra` settings.
fn start_node(zk: &ZooKeeper, extra: &[(&str, &str)]) -> Server {
    let connection = zk.connection();
    let mut env = vec![
        (
            "JSHEETS_RUNTIME_ZOOKEEPER_CONNECTION_STRING",
            connection.as_str(),
        ),
        ("JSHEETS_RUNTIME_ZOOKEEPER_CONNECT_BACKOFF", "200"),
        ("JSHEETS_RUNTIME_ZOOKEEPER_SESSION_TIMEOUT_MS", "2000"),
        ("JSHEETS_RUNTIME_SERVICE_ADVERTISED_HOST", "127.0.0.1"),
        ("JSHEETS_RUNTIME_EVALUATION_DEFAULT_RUNTIME", "openjdk-17"),
    ];
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// Waits until the backend's discovery holds `server`, as registered, and checks it.
fn discover(backend: &mut Backend, server: &Server) -> Duration {
    let (list, took) = backend.wait_for_instances(
        &format!("node {}", server.service_id),
        Duration::from_secs(60),
        |l| l.iter().any(|i| i.id == server.service_id),
    );
    let found = list.iter().find(|i| i.id == server.service_id).unwrap();
    assert_eq!(found.address, "127.0.0.1", "{list:?}");
    assert_eq!(found.port, server.addr.port(), "{list:?}");
    // The node's own details live outside Curator's base path: its only service is ours.
    let (names, _) = backend.discovered();
    assert_eq!(names, ["runtime"], "service names under /jsheets/services");
    println!(
        "node {} ({}) found through Curator discovery after {:.0} ms of polling",
        server.service_id,
        server.addr,
        took.as_secs_f64() * 1e3
    );
    took
}

/// The extension fields of our final response (`completion` = 5) reach jsheets' client
/// as unknown fields, skipped; nothing else it does not know arrives.
fn assert_extensions_unknown(e: &Evaluation) {
    let last = e.responses.last().expect("no response at all");
    assert_eq!(last["unknownFields"], json!([5]), "{e:#?}");
    for r in &e.responses[..e.responses.len() - 1] {
        assert_eq!(r["unknownFields"], json!([]), "{e:#?}");
    }
}

// ---------------------------------------------------------------------------------------
// The cases.

#[test]
fn a_jsheets_backend_finds_a_node_in_zookeeper_and_evaluates_java() {
    let zk = ZooKeeper::start();
    let node = start_node(&zk, &[]);
    let mut backend = Backend::start(&zk);
    discover(&mut backend, &node);
    let on_node = |e: &Evaluation| {
        assert_eq!(e.instance().id, node.service_id, "{e:#?}");
        e.assert_completed();
        assert_extensions_unknown(e);
    };

    // Output, live or final, as INFO of the component that printed it.
    let e = backend.evaluate(&case("output", &[("c1", "System.out.println(\"hi\");")]));
    on_node(&e);
    assert_eq!(e.info("c1"), "hi\n", "{e:#?}");
    assert!(e.errors().is_empty(), "{e:#?}");

    // The value of an expression.
    let e = backend.evaluate(&case("value", &[("c1", "6 * 7")]));
    on_node(&e);
    assert!(e.has_info("c1", "42"), "{e:#?}");
    assert!(e.errors().is_empty(), "{e:#?}");

    // Components run in order and share state.
    let e = backend.evaluate(&case(
        "shared state",
        &[
            ("c1", "int base = 40;"),
            ("c2", "System.out.println(\"from c2\");"),
            ("c3", "base + 2"),
        ],
    ));
    on_node(&e);
    assert_eq!(e.info("c2"), "from c2\n", "{e:#?}");
    assert!(e.has_info("c3", "42"), "{e:#?}");
    assert!(e.errors().is_empty(), "{e:#?}");

    // A compile error: javac's code and a span of character offsets into the component
    // (the second statement's, not into the text after the first statement).
    let code = "int y = 1;\nint x = \"a\";";
    let e = backend.evaluate(&case("compile error", &[("c1", code)]));
    on_node(&e);
    let error = e
        .error_of_kind("compiler.err.prob.found.req")
        .unwrap_or_else(|| panic!("no compiler.err.prob.found.req: {e:#?}"));
    assert_eq!(error["componentId"], "c1", "{e:#?}");
    let (start, end) = (
        error["span"]["start"].as_u64().unwrap() as usize,
        error["span"]["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&code[start..end], "\"a\"", "span {start}..{end}: {e:#?}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("incompatible types"),
        "{e:#?}"
    );

    // An uncaught exception.
    let e = backend.evaluate(&case(
        "exception",
        &[("c1", "throw new RuntimeException(\"boom\");")],
    ));
    on_node(&e);
    let error = e
        .error_of_kind("exception")
        .unwrap_or_else(|| panic!("no exception error: {e:#?}"));
    assert_eq!(error["componentId"], "c1", "{e:#?}");
    assert!(
        error["message"].as_str().unwrap().contains("boom"),
        "{e:#?}"
    );

    // An access-list violation; the later component still runs.
    let e = backend.evaluate(&case(
        "access list",
        &[
            ("c1", "System.exit(1);"),
            ("c2", "System.out.println(\"after\");"),
        ],
    ));
    on_node(&e);
    let error = e
        .error_of_kind("sandbox")
        .unwrap_or_else(|| panic!("no sandbox error: {e:#?}"));
    assert_eq!(error["componentId"], "c1", "{e:#?}");
    assert!(
        error["message"].as_str().unwrap().contains("System#exit"),
        "{e:#?}"
    );
    assert_eq!(e.info("c2"), "after\n", "{e:#?}");

    // `stop` mid-run (sent after the first output; Thread.sleep is not on the access
    // list, so it spins): the evaluation is stopped and the stream completes promptly.
    // The loop is the statement after the print, so no value (as `long n = 0;` would
    // have, if it completed before the stop) races the stop.
    let e = backend.evaluate(&Case {
        stop_after_output: true,
        ..case(
            "stop",
            &[(
                "c1",
                "System.out.println(\"started\");\nfor (long n = 0; ; n++) { }",
            )],
        )
    });
    on_node(&e);
    assert_eq!(e.info("c1"), "started\n", "{e:#?}");
    let stop_sent = e.end["stopSentMs"]
        .as_f64()
        .unwrap_or_else(|| panic!("no stop was sent: {e:#?}"));
    let stop_to_end = e.ms() - stop_sent;
    println!("stop: the stream completed {stop_to_end:.1} ms after the stop was sent");
    assert!(
        stop_to_end < 5_000.0,
        "the stream completed {stop_to_end} ms after the stop: {e:#?}"
    );
    assert!(e.error_of_kind("cancelled").is_some(), "{e:#?}");
    assert!(e.error_of_kind("timeout").is_none(), "{e:#?}");

    // The node left nothing running behind the stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sandbox_processes(node.pid, true).is_empty() {
        assert!(
            Instant::now() < deadline,
            "sandboxes left after the stop: {:?}",
            sandbox_processes(node.pid, true)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_jsheets_backend_gets_an_error_when_an_evaluation_times_out() {
    let zk = ZooKeeper::start();
    // The node's default wall-clock limit, lowered so the case is quick (a jsheets
    // backend cannot ask for a limit).
    let node = start_node(
        &zk,
        &[(
            "JSHEETS_RUNTIME_EVALUATION_LIMITS_DEFAULTS_WALL_TIME_MS",
            "3000",
        )],
    );
    let mut backend = Backend::start(&zk);
    discover(&mut backend, &node);

    let e = backend.evaluate(&case(
        "timeout",
        &[
            ("c1", "while (true) {}"),
            ("c2", "System.out.println(\"never\");"),
        ],
    ));
    assert_eq!(e.instance().id, node.service_id, "{e:#?}");
    // Seen on jsheets' fields only: an error saying so, then the stream completes.
    e.assert_completed();
    assert_extensions_unknown(&e);
    let error = e
        .error_of_kind("timeout")
        .unwrap_or_else(|| panic!("no timeout error: {e:#?}"));
    assert!(
        error["message"].as_str().unwrap().contains("3000 ms"),
        "{e:#?}"
    );
    assert_eq!(e.info("c2"), "", "{e:#?}");
    assert!(
        e.ms() >= 3_000.0 && e.ms() < 30_000.0,
        "the timeout took {} ms: {e:#?}",
        e.ms()
    );
}

#[test]
fn a_jsheets_backend_gets_the_value_of_a_declaration() {
    let zk = ZooKeeper::start();
    let node = start_node(&zk, &[]);
    let mut backend = Backend::start(&zk);
    discover(&mut backend, &node);

    // jsheets reports the value of every JShell event that has one.
    let e = backend.evaluate(&case(
        "declaration",
        &[("c1", "int x = 41;"), ("c2", "x + 1")],
    ));
    e.assert_completed();
    assert!(e.has_info("c2", "42"), "{e:#?}");
    assert!(e.has_info("c1", "41"), "{e:#?}");
}

#[test]
fn a_jsheets_backend_keeps_working_when_a_node_is_killed() {
    let zk = ZooKeeper::start();
    let first = start_node(&zk, &[]);
    let second = start_node(&zk, &[]);
    let mut backend = Backend::start(&zk);
    discover(&mut backend, &first);
    discover(&mut backend, &second);

    // Round robin over both.
    let mut used = BTreeSet::new();
    for _ in 0..2 {
        let e = backend.evaluate(&case(
            "round robin",
            &[("c1", "System.out.println(\"hi\");")],
        ));
        e.assert_completed();
        assert_eq!(e.info("c1"), "hi\n", "{e:#?}");
        used.insert(e.instance().id);
    }
    let both: BTreeSet<_> = [first.service_id.clone(), second.service_id.clone()].into();
    assert_eq!(used, both, "round robin did not use both nodes");

    // SIGKILL: no deregistration; the znode goes when ZooKeeper expires the session.
    let dead = first.service_id.clone();
    first.signal(Signal::SIGKILL);
    let (list, took) =
        backend.wait_for_instances(&format!("node {dead} gone"), Duration::from_secs(30), |l| {
            !l.iter().any(|i| i.id == dead)
        });
    println!(
        "the killed node left the backend's discovery {:.0} ms after the SIGKILL",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(
        list.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [second.service_id.as_str()]
    );
    for _ in 0..2 {
        let e = backend.evaluate(&case(
            "after the kill",
            &[("c1", "System.out.println(\"still here\");")],
        ));
        e.assert_completed();
        assert_eq!(e.instance().id, second.service_id, "{e:#?}");
        assert_eq!(e.info("c1"), "still here\n", "{e:#?}");
    }
}
