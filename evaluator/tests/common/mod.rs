//! Shared fixture of the real-sandbox suites: sandboxes with a uid range private to
//! this test process, runtimes built once (under a lock) into the target directory,
//! and helpers that look at the host to prove nothing was left behind.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use evaluator::evaluate;
use evaluator::lang::Launch;
use evaluator::runtime::{Registry, Runtime};
use evaluator::sandbox::{Limits, Outcome, SandboxConfig, Sandboxes};
use evaluator::snippet::{Component, Output};
use tokio_util::sync::CancellationToken;

pub struct Fixture {
    pub sandboxes: Sandboxes,
    pub uid_base: u32,
    pub uid_count: u32,
}

/// Everything one evaluation produced.
#[derive(Debug)]
pub struct Run {
    pub outcome: Outcome,
    pub outputs: Vec<Output>,
}

impl Run {
    pub fn stdout_bytes(&self) -> Vec<u8> {
        self.outputs
            .iter()
            .flat_map(|o| match o {
                Output::Stdout { data, .. } => data.clone(),
                _ => vec![],
            })
            .collect()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout_bytes()).into_owned()
    }
}

/// Where test runtimes are built, shared by all test processes of this checkout.
pub fn runtimes_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-runtimes")
}

/// The factor wall-clock limits are multiplied by, from `JSHEETS_TEST_TIME_SCALE` (1 if
/// unset): CI also runs the suites in an emulated cgroup v2 guest, several times slower
/// than a host (scripts/ci-cgroup-v2).
pub fn time_scale() -> u32 {
    std::env::var("JSHEETS_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// The zygote library of this build (`cargo build -p zygote-lib` puts it beside the
/// test binaries' directory), if it was built.
pub fn zygote_library() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let lib = exe.parent()?.parent()?.join("libjsheets_zygote.so");
    lib.is_file().then_some(lib)
}

/// The settings of a test pool of `size`: 512 MiB while waiting, five minutes old at
/// most, forking from a zygote or not.
pub fn pool_settings(size: usize, zygote: bool) -> evaluator::pool::PoolSettings {
    evaluator::pool::PoolSettings {
        size,
        idle_limits: Limits {
            memory_bytes: 512 << 20,
            ..Limits::default()
        },
        max_age: std::time::Duration::from_secs(300),
        zygote,
    }
}

/// Everything `rx` gets until its senders are gone, gathered by a task of its own.
pub fn collect_all<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> tokio::task::JoinHandle<Vec<T>> {
    tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(r) = rx.recv().await {
            v.push(r);
        }
        v
    })
}

/// Waits (two minutes at most) until `pool` has forked from its zygote: lanes are
/// started only from a zygote that is up.
pub async fn wait_for_zygote(pool: &evaluator::pool::Pool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while pool.stats().forked == 0 {
        assert!(
            std::time::Instant::now() < end,
            "no zygote: {:?}",
            pool.stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A waiting sandbox from `pool`, once it has one (two minutes at most).
pub async fn take_waiting(pool: &evaluator::pool::Pool) -> evaluator::sandbox::Waiting {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if pool.idle() > 0 {
            if let Some(w) = pool.take() {
                return w;
            }
        }
        assert!(
            std::time::Instant::now() < end,
            "the pool did not fill: {:?}",
            pool.stats()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub fn recipes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes")
}

impl Fixture {
    pub fn new() -> Self {
        // A uid range of our own, so that looking for leftover processes by uid is not
        // confused by other test processes running at the same time.
        let uid_count = 64;
        let uid_base = 1_000_000 + (std::process::id() % 100_000) * uid_count;
        let mut config = SandboxConfig::with_helper(env!("CARGO_BIN_EXE_jsheets-sandbox"), vec![]);
        config.state_dir = std::env::temp_dir().join("jsheets-runtime-tests");
        config.uid_base = uid_base;
        config.uid_count = uid_count;
        config.zygote_library = zygote_library();
        let sandboxes = Sandboxes::start(config).expect("sandboxes (the suites need root)");
        Fixture {
            sandboxes,
            uid_base,
            uid_count,
        }
    }

    /// The runtime `name`, built from its recipe on first use.
    pub async fn runtime(&self, name: &str) -> Runtime {
        let dir = runtimes_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let lock = std::fs::File::create(dir.join(".lock")).unwrap();
        let _lock =
            nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).expect("lock");
        if let Ok(r) = Registry::load(&dir).resolve(name) {
            return r.clone();
        }
        let recipe = recipes_dir().join(format!("{name}.yml"));
        let runner = evaluator::install::SandboxBuilder::new(&self.sandboxes);
        evaluator::install::install(&recipe, &dir, &runner, &|_| {})
            .await
            .unwrap_or_else(|e| panic!("building {name}: {e:?}"))
    }

    pub async fn eval(&self, runtime: &Runtime, components: Vec<Component>, limits: Limits) -> Run {
        self.eval_cancellable(
            &runtime.launch(),
            components,
            limits,
            CancellationToken::new(),
        )
        .await
    }

    pub async fn eval_launch(
        &self,
        launch: &Launch,
        components: Vec<Component>,
        limits: Limits,
    ) -> Run {
        self.eval_cancellable(launch, components, limits, CancellationToken::new())
            .await
    }

    pub async fn eval_stdin(
        &self,
        runtime: &Runtime,
        components: Vec<Component>,
        stdin: Vec<u8>,
        limits: Limits,
    ) -> Run {
        self.run(
            &runtime.launch(),
            components,
            stdin,
            limits,
            CancellationToken::new(),
        )
        .await
    }

    pub async fn eval_cancellable(
        &self,
        launch: &Launch,
        components: Vec<Component>,
        limits: Limits,
        cancel: CancellationToken,
    ) -> Run {
        self.run(launch, components, Vec::new(), limits, cancel)
            .await
    }

    async fn run(
        &self,
        launch: &Launch,
        components: Vec<Component>,
        stdin: Vec<u8>,
        limits: Limits,
        cancel: CancellationToken,
    ) -> Run {
        self.run_in(None, launch, components, stdin, limits, cancel)
            .await
    }

    /// An evaluation in `waiting` (from a pool) if given.
    pub async fn run_in(
        &self,
        waiting: Option<evaluator::sandbox::Waiting>,
        launch: &Launch,
        components: Vec<Component>,
        stdin: Vec<u8>,
        limits: Limits,
        cancel: CancellationToken,
    ) -> Run {
        self.run_with(
            waiting,
            launch,
            components,
            stdin,
            limits,
            Default::default(),
            cancel,
        )
        .await
    }

    /// [`Fixture::run_in`] with files and datasets.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_with(
        &self,
        waiting: Option<evaluator::sandbox::Waiting>,
        launch: &Launch,
        components: Vec<Component>,
        stdin: Vec<u8>,
        limits: Limits,
        data: evaluate::RequestData,
        cancel: CancellationToken,
    ) -> Run {
        let mut limits = limits;
        limits.wall_time *= time_scale();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let collect = tokio::spawn(async move {
            let mut v = Vec::new();
            while let Some(o) = rx.recv().await {
                v.push(o);
            }
            v
        });
        let outcome = evaluate::evaluate_in(
            &self.sandboxes,
            waiting,
            launch,
            &components,
            stdin,
            limits,
            data,
            tx,
            cancel,
        )
        .await
        .expect("evaluation accepted");
        let outputs = collect.await.unwrap();
        Run { outcome, outputs }
    }

    /// Host processes running as one of this fixture's sandbox uids, zombies included:
    /// every such process is in its sandbox's pid namespace, whose init reaps it, and
    /// the sandbox is gone only once the kernel released them all (which it does before
    /// init's end, which the supervisor waits for).
    pub fn sandbox_processes(&self) -> usize {
        let range = self.uid_base..self.uid_base + self.uid_count;
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
            .filter(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|u| u.split_whitespace().next()?.parse::<u32>().ok())
                    .is_some_and(|uid| range.contains(&uid))
            })
            .count()
    }

    /// Sandbox cgroups beyond those of idle pre-spawned helpers, once refills settled.
    pub async fn busy_cgroups(&self) -> usize {
        self.settle().await;
        while self.sandboxes.pending_refills() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.sandboxes.live() - self.sandboxes.idle()
    }

    /// (sandbox processes, busy sandbox cgroups, mounts in our namespace).
    /// Waits for sandboxes whose outcome is out to finish going away.
    pub async fn settle(&self) {
        while self.sandboxes.pending_teardowns() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    pub async fn host_state(&self) -> (usize, usize, usize) {
        self.settle().await;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count();
        (self.sandbox_processes(), self.busy_cgroups().await, mounts)
    }

    pub async fn assert_clean(&self) {
        self.settle().await;
        assert_eq!(self.sandbox_processes(), 0, "sandbox processes left behind");
        assert_eq!(self.busy_cgroups().await, 0, "sandbox cgroups left behind");
    }
}

/// Components `c1`, `c2`, ... with `codes`, in order.
pub fn components(codes: &[&str]) -> Vec<Component> {
    codes
        .iter()
        .enumerate()
        .map(|(i, code)| Component {
            id: format!("c{}", i + 1),
            code: (*code).into(),
        })
        .collect()
}

/// The `openjdk-17` runtime's launch, held to `java-default` if `list`.
pub async fn java(fx: &Fixture, list: bool) -> Launch {
    let mut launch = fx.runtime("openjdk-17").await.launch();
    launch.access_list = list.then(|| {
        std::sync::Arc::new(
            evaluator::access::catalog::Catalog::new(None)
                .load("java-default")
                .unwrap(),
        )
    });
    launch
}

/// Values, exceptions (kind, message, traceback, line), diagnostics, violations and
/// internal errors, per component, in order.
pub fn results(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Value { component, text } => Some(format!("{component} value {text}")),
            Output::Exception {
                component,
                kind,
                message,
                traceback,
                line,
            } => Some(format!(
                "{component} exception {kind}: {message} at {line:?}\n{traceback}"
            )),
            Output::Diagnostic {
                component,
                kind,
                message,
                ..
            } => Some(format!("{component} diagnostic {kind} {message}")),
            Output::Violation {
                component,
                reference,
                ..
            } => Some(format!("{component} violation {reference}")),
            Output::Internal { component, message } => {
                Some(format!("{component} internal {message}"))
            }
            _ => None,
        })
        .collect()
}
