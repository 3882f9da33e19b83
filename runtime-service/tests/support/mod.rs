//! Running the real `jsheets-runtime serve` binary for end-to-end tests: shared runtimes
//! built once, one server process per test configured through the environment, a Drop
//! guard that always stops it (and prints its stderr when the test failed), gRPC helpers
//! with a timeout around every network wait, and a look at the host's process table.

#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc as std_mpsc, OnceLock};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use proto::jsheets::evaluate_request::Message;
use proto::jsheets::snippet_runtime_client::SnippetRuntimeClient;
use proto::jsheets::{
    evaluation_result, snippet, snippet_sources, Completion, EvaluateRequest, EvaluateResponse,
    EvaluatedSnippet, SnippetSources, StartEvaluationRequest, StopEvaluationRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

pub const BIN: &str = env!("CARGO_BIN_EXE_jsheets-runtime");

/// How long any single network wait may take unless a test says otherwise.
pub const NET: Duration = Duration::from_secs(20);

/// The factor waits are multiplied by, from `JSHEETS_TEST_TIME_SCALE` (1 if unset): CI
/// also runs the suites in an emulated cgroup v2 guest, several times slower than a
/// host (scripts/ci-cgroup-v2).
pub fn time_scale() -> u32 {
    std::env::var("JSHEETS_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// Awaits `f`, failing the test if it takes longer than `limit` (times the
/// [`time_scale`]).
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    let limit = limit * time_scale();
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

// ---------------------------------------------------------------------------------------
// Runtimes, built once per target directory.

/// Runtimes the suites use.
const RUNTIMES: [&str; 3] = ["shell", "python-3.11", "openjdk-17"];

/// The directory holding the [`RUNTIMES`], built with
/// `jsheets-runtime runtime install` the first time (and again whenever the binary
/// changes). Test processes run in parallel, so building is done under a file lock.
pub fn runtimes_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("service-runtimes");
        fs::create_dir_all(&base).unwrap();
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join(".lock"))
            .unwrap();
        let _lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("locking the shared runtimes directory");
        let dir = base.join("runtimes");
        let marker = base.join("installed-by");
        let meta = fs::metadata(BIN).unwrap();
        let stamp = format!("{:?} {}", meta.modified().unwrap(), meta.len());
        let complete = RUNTIMES.iter().all(|r| dir.join(r).is_dir());
        if complete && fs::read_to_string(&marker).ok().as_deref() == Some(stamp.as_str()) {
            return dir;
        }
        let _ = fs::remove_file(&marker);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for name in RUNTIMES {
            let out = Command::new(BIN)
                .args(["runtime", "install", name])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("JSHEETS_RUNTIME_RUNTIMES_DIR", &dir)
                .env("JSHEETS_RUNTIME_STATE_DIR", base.join("state"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "`jsheets-runtime runtime install {name}` failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fs::write(&marker, stamp).unwrap();
        dir
    })
    .clone()
}

// ---------------------------------------------------------------------------------------
// The server process.

/// A running `jsheets-runtime serve`; dropping it stops it (SIGTERM, then SIGKILL), and
/// prints its stderr if the test is failing.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub service_id: String,
    stderr_path: PathBuf,
    exited: Option<ExitStatus>,
    // Last: removed after the process is gone.
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server on 127.0.0.1 with a free port, the shared runtimes, a state
    /// directory of its own, python-3.11 as the default runtime, no default pools and
    /// a 3 s shutdown grace;
    /// `env` adds or overrides `JSHEETS_RUNTIME_*` variables.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let runtimes = runtimes_dir();
        let dir = tempfile::Builder::new()
            .prefix("jsheets-service-test-")
            .tempdir()
            .unwrap();
        let state = dir.path().join("state");
        let config = dir.path().join("empty.toml");
        fs::write(&config, "").unwrap();
        let stderr_path = dir.path().join("stderr.log");
        // If the test process dies without unwinding (killed by a harness timeout), the
        // server must not outlive it: util-linux's setpriv sets the parent-death signal
        // (tied to the spawning thread, the test's own for the whole test).
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", BIN]);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("NO_COLOR", "1")
            // Hermetic: not /etc/jsheets-runtime/config.toml.
            .env("JSHEETS_RUNTIME_CONFIG", &config)
            .env("JSHEETS_RUNTIME_LOG_LEVEL", "info")
            .env("JSHEETS_RUNTIME_SERVER_PORT", "0")
            .env("JSHEETS_RUNTIME_SERVER_HOST", "127.0.0.1")
            .env("JSHEETS_RUNTIME_SERVER_SHUTDOWN_GRACE_SECONDS", "3")
            .env("JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR", &runtimes)
            .env("JSHEETS_RUNTIME_EVALUATION_STATE_DIR", &state)
            .env("JSHEETS_RUNTIME_EVALUATION_DEFAULT_RUNTIME", "python-3.11")
            // No pre-started sandboxes unless a test asks: suites run in parallel on
            // few CPUs, and most count the sandboxes a node has.
            .env("JSHEETS_RUNTIME_EVALUATION_POOL_DEFAULTS", "false");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).unwrap());
        let mut child = cmd.spawn().expect("starting jsheets-runtime serve");
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            pid,
            addr: "0.0.0.0:0".parse().unwrap(),
            service_id: String::new(),
            stderr_path,
            exited: None,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("jsheets-runtime listening on ") {
                        let (addr, id) = rest
                            .split_once(" as ")
                            .unwrap_or_else(|| panic!("unexpected listening line {line:?}"));
                        server.addr = addr.parse().unwrap();
                        server.service_id = id.trim().to_string();
                        return server;
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().unwrap();
                    server.exited = Some(status);
                    panic!(
                        "the server exited ({status}) before listening; stderr:\n{}",
                        server.stderr()
                    );
                }
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                server.exited = Some(status);
                panic!(
                    "the server exited ({status}) before listening; stderr:\n{}",
                    server.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the server did not print its listening line within 30 s; stderr:\n{}",
                server.stderr()
            );
        }
    }

    /// What the server wrote to stderr so far (its log).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        let endpoint = Endpoint::from_shared(self.url())
            .unwrap()
            .connect_timeout(Duration::from_secs(5));
        within(NET, "connecting to the server", endpoint.connect())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.addr))
    }

    pub async fn client(&self) -> SnippetRuntimeClient<Channel> {
        SnippetRuntimeClient::new(self.channel().await)
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid as i32), signal).unwrap();
    }

    /// Waits (without blocking the runtime) for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.exited = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server (pid {}) did not exit within {limit:?}",
                self.pid
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop_blocking(&mut self) {
        if self.exited.is_some() {
            return;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exited = Some(status);
            return;
        }
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "the server (pid {}) ignored SIGTERM for 10 s: killing it",
            self.pid
        );
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_blocking();
        if std::thread::panicking() {
            eprintln!(
                "---- stderr of the server (pid {}, {}) ----\n{}---- end of server stderr ----",
                self.pid,
                self.addr,
                self.stderr()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests.

pub fn component(id: &str, order: i32, code: &str) -> snippet_sources::CodeComponent {
    snippet_sources::CodeComponent {
        id: id.into(),
        order,
        code: code.into(),
    }
}

pub fn reference() -> snippet::Reference {
    snippet::Reference {
        sheet_id: "sheet-1".into(),
        snippet_id: "snippet-1".into(),
    }
}

/// The jsheets fields of a start request (`snippet` and `sources`) for `components`.
pub fn jsheets_start(components: Vec<snippet_sources::CodeComponent>) -> StartEvaluationRequest {
    StartEvaluationRequest {
        snippet: Some(EvaluatedSnippet {
            reference: Some(reference()),
            hash: "h1".into(),
            dependencies: vec![],
        }),
        sources: vec![SnippetSources {
            reference: Some(reference()),
            hash: "h1".into(),
            code_components: components,
        }],
        ..Default::default()
    }
}

/// A start request of one component `main` for `runtime` ("" = the default).
pub fn start_code(runtime: &str, code: &str) -> StartEvaluationRequest {
    StartEvaluationRequest {
        runtime: runtime.into(),
        ..jsheets_start(vec![component("main", 1, code)])
    }
}

pub fn start(s: StartEvaluationRequest) -> EvaluateRequest {
    EvaluateRequest {
        message: Some(Message::Start(s)),
    }
}

pub fn stop() -> EvaluateRequest {
    EvaluateRequest {
        message: Some(Message::Stop(StopEvaluationRequest {})),
    }
}

// ---------------------------------------------------------------------------------------
// Calls.

/// An open Evaluate stream: requests go through `tx` (dropping it half-closes).
#[derive(Debug)]
pub struct Call {
    pub tx: Option<mpsc::Sender<EvaluateRequest>>,
    pub stream: Streaming<EvaluateResponse>,
}

impl Call {
    /// Opens a stream, sending `first` (if any) right away.
    pub async fn open(
        client: &mut SnippetRuntimeClient<Channel>,
        first: Option<EvaluateRequest>,
    ) -> Result<Call, Status> {
        let (tx, rx) = mpsc::channel(8);
        if let Some(r) = first {
            tx.send(r).await.unwrap();
        }
        let response = within(NET, "opening an Evaluate stream", async {
            client.evaluate(ReceiverStream::new(rx)).await
        })
        .await?;
        Ok(Call {
            tx: Some(tx),
            stream: response.into_inner(),
        })
    }

    pub async fn send(&self, r: EvaluateRequest) {
        let tx = self.tx.as_ref().expect("the call is half-closed");
        within(NET, "sending a request", tx.send(r))
            .await
            .expect("the request stream is closed");
    }

    pub fn half_close(&mut self) {
        self.tx = None;
    }

    /// The next response, `Ok(None)` at the end of the stream.
    pub async fn next(&mut self, limit: Duration) -> Result<Option<EvaluateResponse>, Status> {
        within(limit, "waiting for a response", self.stream.message()).await
    }

    /// Responses up to and including the next one carrying a completion (or the end of
    /// the stream, or an error).
    pub async fn until_completion(&mut self, limit: Duration) -> Transcript {
        self.collect(limit, "waiting for the final response", true)
            .await
    }

    /// Every response until the stream ends.
    pub async fn until_end(&mut self, limit: Duration) -> Transcript {
        self.collect(limit, "waiting for the end of the stream", false)
            .await
    }

    async fn collect(
        &mut self,
        limit: Duration,
        what: &str,
        stop_at_completion: bool,
    ) -> Transcript {
        let deadline = tokio::time::Instant::now() + limit * time_scale();
        let mut t = Transcript::default();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match within(left, what, self.stream.message()).await {
                Ok(Some(r)) => {
                    let done = stop_at_completion && r.completion.is_some();
                    t.responses.push(r);
                    if done {
                        return t;
                    }
                }
                Ok(None) => {
                    t.ended = true;
                    return t;
                }
                Err(s) => {
                    t.status = Some(s);
                    return t;
                }
            }
        }
    }
}

/// Runs one start request on a fresh stream, half-closing after it, to the end.
pub async fn evaluate(
    client: &mut SnippetRuntimeClient<Channel>,
    s: StartEvaluationRequest,
    limit: Duration,
) -> Transcript {
    let mut call = match Call::open(client, Some(start(s))).await {
        Ok(c) => c,
        Err(status) => {
            return Transcript {
                status: Some(status),
                ..Default::default()
            }
        }
    };
    call.half_close();
    call.until_end(limit).await
}

/// What came back on a stream.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    pub responses: Vec<EvaluateResponse>,
    /// The stream ended normally.
    pub ended: bool,
    /// The stream ended with this status.
    pub status: Option<Status>,
}

impl Transcript {
    /// The error status the stream ended with; fails the test if it ended otherwise.
    pub fn error(&self) -> &Status {
        self.status
            .as_ref()
            .unwrap_or_else(|| panic!("expected an error status, got {self:#?}"))
    }

    /// The last response, which must carry the completion.
    pub fn last(&self) -> &EvaluateResponse {
        assert!(
            self.status.is_none(),
            "the stream failed: {:?}",
            self.status
        );
        self.responses
            .last()
            .unwrap_or_else(|| panic!("no response: {self:#?}"))
    }

    pub fn completion(&self) -> &Completion {
        let completions: Vec<_> = self
            .responses
            .iter()
            .filter_map(|r| r.completion.as_ref())
            .collect();
        assert_eq!(completions.len(), 1, "expected one completion: {self:#?}");
        self.last()
            .completion
            .as_ref()
            .unwrap_or_else(|| panic!("the completion is not in the last response: {self:#?}"))
    }

    pub fn status_name(&self) -> String {
        format!("{:?}", self.completion().status())
    }

    /// Live output of `component` of `kind` (all responses but the final one).
    pub fn live(&self, component: &str, kind: evaluation_result::Kind) -> String {
        let n = self.responses.len().saturating_sub(1);
        self.responses[..n]
            .iter()
            .flat_map(|r| &r.result)
            .filter(|r| r.component_id == component && r.kind() == kind)
            .map(|r| r.output.as_str())
            .collect()
    }

    /// All INFO output (live and final) concatenated.
    pub fn stdout(&self) -> String {
        self.responses
            .iter()
            .flat_map(|r| &r.result)
            .filter(|r| r.kind() == evaluation_result::Kind::Info)
            .map(|r| r.output.as_str())
            .collect()
    }

    pub fn errors(&self) -> Vec<&proto::jsheets::EvaluationError> {
        self.responses.iter().flat_map(|r| &r.error).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Host processes.

/// Processes in a sandbox cgroup of the server with pid `server_pid` (cgroups named
/// `sb-<server pid>-<n>`), zombies skipped; with `sandboxed_only`, only those running
/// under a non-root uid (user code), which leaves out the idle pre-spawned helpers.
/// Each entry is "pid uid comm".
pub fn sandbox_processes(server_pid: u32, sandboxed_only: bool) -> Vec<String> {
    let marker = format!("/sb-{server_pid}-");
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cgroup) = fs::read_to_string(e.path().join("cgroup")) else {
            continue;
        };
        if !cgroup.contains(&marker) {
            continue;
        }
        let Ok(status) = fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        if field("State:").starts_with('Z') {
            continue;
        }
        let uid: u32 = field("Uid:")
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        if sandboxed_only && uid == 0 {
            continue;
        }
        found.push(format!("{name} uid={uid} {}", field("Name:")));
    }
    found
}

/// Waits until no user-code process of the server's sandboxes is left.
pub async fn wait_sandboxes_gone(server_pid: u32, limit: Duration) -> Result<(), Vec<String>> {
    wait_sandbox_processes_gone(server_pid, true, limit).await
}

/// Waits until [`sandbox_processes`] finds none; what is left after `limit` otherwise.
pub async fn wait_sandbox_processes_gone(
    server_pid: u32,
    sandboxed_only: bool,
    limit: Duration,
) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + limit;
    loop {
        let left = sandbox_processes(server_pid, sandboxed_only);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(left);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// ZooKeeper (Debian's `zookeeper` package), one server per test on a free loopback port.

/// The jars a ZooKeeper 3.8 server needs, from Debian's `libzookeeper-java` and its
/// dependencies (the `Class-Path` of `zookeeper.jar`'s manifest, without the shell's
/// jline and the admin server's Jetty, plus what the Netty pieces need), with exactly
/// one SLF4J binding. Not `/usr/share/java/*`: that puts every binding there
/// (slf4j-simple, -jdk14, -log4j12, -nop, maven's provider, log4j-over-slf4j, ...) on
/// the classpath in directory order, and some orders stop ZooKeeper at start
/// (log4j-over-slf4j with slf4j-log4j12).
const ZOOKEEPER_JARS: &[&str] = &[
    "zookeeper.jar",
    "zookeeper-jute.jar",
    "slf4j-api.jar",
    // The one binding: writes to `zookeeper.log` in the server's directory.
    "slf4j-simple.jar",
    "commons-cli.jar",
    "commons-io.jar",
    "jackson-annotations.jar",
    "jackson-core.jar",
    "jackson-databind.jar",
    "metrics-core.jar",
    "snappy-java.jar",
    "netty-buffer.jar",
    "netty-codec.jar",
    "netty-common.jar",
    "netty-handler.jar",
    "netty-resolver.jar",
    "netty-transport.jar",
    "netty-transport-native-unix-common.jar",
    "netty-transport-native-epoll.jar",
];

/// [`ZOOKEEPER_JARS`] as a classpath; fails the test naming the missing jars.
fn zookeeper_classpath() -> String {
    let jars: Vec<PathBuf> = ZOOKEEPER_JARS
        .iter()
        .map(|j| Path::new("/usr/share/java").join(j))
        .collect();
    let missing: Vec<String> = jars
        .iter()
        .filter(|j| !j.is_file())
        .map(|j| j.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "ZooKeeper needs Debian's package zookeeper (libzookeeper-java); missing: {}",
        missing.join(", ")
    );
    let jars: Vec<String> = jars.iter().map(|j| j.display().to_string()).collect();
    jars.join(":")
}

/// A standalone ZooKeeper; dropping it kills it. `stop` and `start` keep its port and,
/// unless [`ZooKeeper::wipe`] is called, its data (sessions survive a restart).
#[derive(Debug)]
pub struct ZooKeeper {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ZooKeeper {
    pub fn start() -> ZooKeeper {
        ZooKeeper::start_on(free_port())
    }

    pub fn start_on(port: u16) -> ZooKeeper {
        let dir = tempfile::Builder::new()
            .prefix("jsheets-zk-")
            .tempdir()
            .unwrap();
        let mut zk = ZooKeeper {
            port,
            dir,
            child: None,
        };
        zk.run();
        zk
    }

    pub fn connection(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let data = self.dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let cfg = self.dir.path().join("zoo.cfg");
        fs::write(
            &cfg,
            format!(
                "tickTime=200\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\nminSessionTimeout=400\nmaxSessionTimeout=20000\n\
                 4lw.commands.whitelist=ruok\n",
                data.display(),
                self.port
            ),
        )
        .unwrap();
        let child = Command::new("setpriv")
            .args([
                "--pdeathsig",
                "KILL",
                "--",
                "java",
                "-Xmx128m",
                "-XX:+UseSerialGC",
            ])
            .args(["-cp", &zookeeper_classpath()])
            .arg(format!("-Dzookeeper.log.dir={}", self.dir.path().display()))
            .arg(format!(
                "-Dorg.slf4j.simpleLogger.logFile={}",
                self.log_path().display()
            ))
            .arg("-Dorg.slf4j.simpleLogger.showDateTime=true")
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(File::create(self.dir.path().join("out.log")).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting ZooKeeper (Debian package zookeeper)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.is_ok() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "ZooKeeper exited ({status}) before serving; its log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not start within 30 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    /// What ZooKeeper logged so far (and wrote to stdout).
    pub fn log(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let out = fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default();
        format!("{log}{out}")
    }

    fn is_ok(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = String::new();
        s.write_all(b"ruok").is_ok() && s.read_to_string(&mut answer).is_ok() && answer == "imok"
    }

    /// Kills the server (like a crash).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Forgets every session and znode (a server replaced by a new one).
    pub fn wipe(&mut self) {
        let _ = fs::remove_dir_all(self.dir.path().join("data"));
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn start_again(&mut self) {
        self.run();
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain ZooKeeper client for looking at what nodes registered.
pub async fn zk_client(zk: &ZooKeeper) -> zookeeper_client::Client {
    within(
        NET,
        "connecting to ZooKeeper",
        zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&zk.connection()),
    )
    .await
    .unwrap()
}

/// The data of `path`, once it exists (polling), within `limit`.
pub async fn wait_for_znode(
    client: &zookeeper_client::Client,
    path: &str,
    limit: Duration,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok((data, _)) = client.get_data(path).await {
            return Some(data);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `path` is gone within `limit`.
pub async fn wait_for_no_znode(
    client: &zookeeper_client::Client,
    path: &str,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if matches!(client.check_stat(path).await, Ok(None)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// An Influx-protocol server: Debian's `victoria-metrics`, which takes InfluxDB 1 and 2
// writes and gives them back through its export API.

#[derive(Debug)]
pub struct VictoriaMetrics {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl VictoriaMetrics {
    pub fn start() -> VictoriaMetrics {
        let mut vm = VictoriaMetrics {
            port: free_port(),
            dir: tempfile::Builder::new()
                .prefix("jsheets-vm-")
                .tempdir()
                .unwrap(),
            child: None,
        };
        vm.run();
        vm
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "victoria-metrics"])
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            .arg("-loggerLevel=ERROR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting victoria-metrics (Debian package victoria-metrics)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "victoria-metrics did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_again(&mut self) {
        self.run();
    }

    /// Every sample of every `jsheets*` series: (metric name, labels, values).
    pub fn export(&self) -> Vec<(String, serde_json::Map<String, serde_json::Value>, Vec<f64>)> {
        let get = |path: &str| -> String {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default()
        };
        get("/internal/force_flush");
        let body = get("/api/v1/export?match%5B%5D=%7B__name__%3D~%22jsheets.*%22%7D");
        body.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let mut labels = v["metric"].as_object().cloned().unwrap_or_default();
                let name = labels
                    .remove("__name__")
                    .and_then(|n| n.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let values = v["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                    .unwrap_or_default();
                (name, labels, values)
            })
            .collect()
    }

    /// Whether a series `name` with labels including `with` appears within `limit`.
    pub async fn wait_for_series(
        &self,
        name: &str,
        with: &[(&str, &str)],
        limit: Duration,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.export().iter().any(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).and_then(|x| x.as_str()) == Some(*v))
            });
            if found || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Sum of all samples of `name` whose labels include `with`, polling until it
    /// reaches at least `min` or `limit` passes; returns the last sum seen.
    pub async fn wait_sum(
        &self,
        name: &str,
        with: &[(&str, &str)],
        min: f64,
        limit: Duration,
    ) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let sum: f64 = self
                .export()
                .into_iter()
                .filter(|(n, labels, _)| {
                    n == name
                        && with
                            .iter()
                            .all(|(k, v)| labels.get(*k).and_then(|x| x.as_str()) == Some(*v))
                })
                .flat_map(|(_, _, values)| values)
                .sum();
            if sum >= min || Instant::now() > deadline {
                return sum;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `start` the node refuses before any response: the status it refused with.
pub async fn refused(
    client: &mut proto::jsheets::snippet_runtime_client::SnippetRuntimeClient<
        tonic::transport::Channel,
    >,
    s: proto::jsheets::StartEvaluationRequest,
) -> tonic::Status {
    let t = match Call::open(client, Some(start(s))).await {
        Ok(mut call) => {
            call.half_close();
            call.until_end(Duration::from_secs(10)).await
        }
        Err(status) => return status,
    };
    assert!(
        t.responses.is_empty(),
        "responses before the refusal: {t:#?}"
    );
    t.error().clone()
}
