//! The node benchmark suite (`bench-node`): Python, Java, a mixed load and cold
//! sandboxes through the service, each beside its baseline measured in the same run,
//! in one table, on nodes it starts itself (one with pools, one without) or is given.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Channel, ClientError, EvalRequest};
use evaluator::runtime::{Registry, ResolveError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::bench::{bwrap_argv, find_in_path};
use crate::bench_service::{
    header, measure, not_ok_reason, wait_for_pools, PoolCounters, Row, Target,
};

/// Longest wait for a started node to listen (a first start may build runtimes).
const START_LIMIT: Duration = Duration::from_secs(300);
/// Longest wait, before a row, for the node's pools to fill.
const POOL_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for a started node to exit after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long to wait for a connection to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Debian's OpenJDK 17 puts jshell, for hosts without it on `PATH`.
const JSHELL_FALLBACK: &str = "/usr/lib/jvm/java-17-openjdk-amd64/bin/jshell";

/// What stops the suite before its table is complete.
#[derive(Debug, thiserror::Error)]
pub enum BenchNodeError {
    #[error("the bwrap baseline needs runtime {name} in {dir}")]
    Runtime {
        name: &'static str,
        dir: PathBuf,
        #[source]
        source: ResolveError,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {name} node did not start: {why}")]
    NodeStart { name: &'static str, why: String },
    #[error("node {endpoint}")]
    Node {
        endpoint: String,
        #[source]
        source: ClientError,
    },
}

/// A group of rows, selected with `--rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Section {
    /// Python `print(1)` on the node with pools, beside bwrap + python.
    Python,
    /// Java `System.out.println(1)` on the node with pools, beside host jshell.
    Java,
    /// Python and Java interleaved on the node with pools, a row each.
    Mixed,
    /// Python and a snippet doing nothing on the node without pools, beside bwrap.
    Cold,
    /// One small program (Python, then Java) against many inputs on the node with
    /// pools: one many-input request beside as many separate requests, at
    /// concurrency 1 and 2.
    Inputs,
}

/// What a row evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    Java,
    /// `:` in the shell runtime; its baseline runs `/bin/true`.
    Noop,
}

impl Lang {
    pub fn runtime(self) -> &'static str {
        match self {
            Lang::Python => "python-3.11",
            Lang::Java => "openjdk-17",
            Lang::Noop => "shell",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Python => "print(1)",
            Lang::Java => "System.out.println(1)",
            Lang::Noop => ":",
        }
    }

    fn baseline_label(self) -> &'static str {
        match self {
            Lang::Java => "host jshell",
            Lang::Python | Lang::Noop => "bwrap",
        }
    }
}

/// One measurement of the suite: one row, or one per language of a mixed load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Loops evaluating through a node (`cold`: the one without pools), the languages
    /// in turn.
    Node {
        what: &'static str,
        cold: bool,
        langs: Vec<Lang>,
        concurrency: usize,
    },
    /// The host baseline of `lang`.
    Baseline { lang: Lang, concurrency: usize },
    /// `lang`'s program against `count` inputs: one request, and `count` requests.
    Inputs { lang: Lang, count: usize },
}

/// The steps of `sections` (in their canonical order, once each): each node row right
/// before its baseline, at every level of `concurrency` (`cold_concurrency` for the cold
/// rows).
pub fn plan(
    sections: &[Section],
    concurrency: &[usize],
    cold_concurrency: &[usize],
    inputs: usize,
) -> Vec<Step> {
    let mut sections = sections.to_vec();
    sections.sort();
    sections.dedup();
    let node = |what, cold, langs: &[Lang], concurrency| Step::Node {
        what,
        cold,
        langs: langs.to_vec(),
        concurrency,
    };
    let mut steps = Vec::new();
    for section in sections {
        if section == Section::Inputs {
            for lang in [Lang::Python, Lang::Java] {
                steps.push(Step::Inputs {
                    lang,
                    count: inputs,
                });
            }
            continue;
        }
        let levels = if section == Section::Cold {
            cold_concurrency
        } else {
            concurrency
        };
        for &c in levels {
            match section {
                Section::Python | Section::Java => {
                    let lang = if section == Section::Python {
                        Lang::Python
                    } else {
                        Lang::Java
                    };
                    steps.push(node("node", false, &[lang], c));
                    steps.push(Step::Baseline {
                        lang,
                        concurrency: c,
                    });
                }
                Section::Mixed => {
                    steps.push(node("node mixed", false, &[Lang::Python, Lang::Java], c))
                }
                Section::Inputs => {}
                Section::Cold => {
                    for lang in [Lang::Python, Lang::Noop] {
                        steps.push(node("node cold", true, &[lang], c));
                        steps.push(Step::Baseline {
                            lang,
                            concurrency: c,
                        });
                    }
                }
            }
        }
    }
    steps
}

/// What the suite runs and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to measure, in order (see [`plan`]).
    pub steps: Vec<Step>,
    /// Of each row, and of each evaluation.
    pub duration: Duration,
    pub deadline: Duration,
    /// Runtimes of the started nodes and of the bwrap baselines.
    pub runtimes_dir: PathBuf,
    /// Running nodes to use instead of starting them: one with pools, one without.
    pub endpoints: [Option<String>; 2],
}

/// A node this suite started; dropping it stops it.
struct LocalNode {
    child: Child,
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        // SIGTERM first: the node drains and removes its sandboxes and cgroups.
        let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let until = Instant::now() + STOP_WAIT;
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.start_kill();
    }
}

/// The configuration of a started node: loopback, a free port, its own state
/// directory, and otherwise the defaults, with their pools or with pools off.
fn node_config(runtimes: &Path, state: &Path, pools: bool) -> String {
    let quoted = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\nshutdownGraceSeconds = 3\n\n\
         [evaluation]\nruntimesDir = {}\nstateDir = {}\npoolDefaults = {pools}\n",
        quoted(runtimes),
        quoted(state)
    )
}

/// Starts `jsheets-runtime serve` (this binary) with [`node_config`] in `dir`; returns
/// it and its endpoint once it listens.
async fn start_node(
    name: &'static str,
    dir: &Path,
    runtimes: &Path,
    pools: bool,
) -> Result<(LocalNode, String), BenchNodeError> {
    let io = |what: String| move |source| BenchNodeError::Io { what, source };
    let config = dir.join(format!("{name}.toml"));
    let state = dir.join(format!("{name}-state"));
    std::fs::write(&config, node_config(runtimes, &state, pools))
        .map_err(io(format!("writing {}", config.display())))?;
    let log = dir.join(format!("{name}.log"));
    let stderr = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
    let exe = std::env::current_exe().map_err(io("finding this program".into()))?;
    // util-linux's setpriv makes the node get SIGTERM if this process dies unannounced.
    let mut cmd = match find_in_path("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "TERM", "--"]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args(["serve", "--config"]).arg(&config);
    // The file alone configures the node, not this process's environment.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("JSHEETS_RUNTIME_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut node = LocalNode {
        child: cmd
            .spawn()
            .map_err(io(format!("starting {}", exe.display())))?,
    };
    let Some(stdout) = node.child.stdout.take() else {
        return Err(BenchNodeError::NodeStart {
            name,
            why: "no standard output".into(),
        });
    };
    let mut lines = BufReader::new(stdout).lines();
    let listening = tokio::time::timeout(START_LIMIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("jsheets-runtime listening on ") {
                return rest.split(' ').next().map(str::to_owned);
            }
        }
        None
    })
    .await;
    let Ok(Some(addr)) = listening else {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let why = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(BenchNodeError::NodeStart { name, why });
    };
    // Keeps its standard output drained.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((node, format!("http://{addr}")))
}

/// The host command each baseline runs: bwrap on the runtime's files, or jshell.
fn baseline_targets(
    options: &Options,
    dir: &Path,
    langs: &[Lang],
) -> Result<Vec<(Lang, Target, String)>, BenchNodeError> {
    let registry = Registry::load(&options.runtimes_dir);
    let mut targets = Vec::new();
    for &lang in langs {
        let argv = if lang == Lang::Java {
            let script = dir.join("one.jsh");
            std::fs::write(&script, "System.out.println(1)\n/exit\n").map_err(|source| {
                BenchNodeError::Io {
                    what: format!("writing {}", script.display()),
                    source,
                }
            })?;
            let jshell = find_in_path("jshell").unwrap_or_else(|| JSHELL_FALLBACK.into());
            vec![jshell.display().to_string(), script.display().to_string()]
        } else {
            let runtime =
                registry
                    .resolve(lang.runtime())
                    .map_err(|source| BenchNodeError::Runtime {
                        name: lang.runtime(),
                        dir: options.runtimes_dir.clone(),
                        source,
                    })?;
            let program = runtime.launch().program;
            let args: &[&str] = if lang == Lang::Python {
                &[&program, "-I", "-c", "print(1)"]
            } else {
                &["/bin/true"]
            };
            bwrap_argv(runtime, args)
        };
        let shown = argv.join(" ");
        targets.push((lang, Target::Host(Arc::from(argv)), shown));
    }
    Ok(targets)
}

/// A node of the suite: where it is and whether the suite started it.
struct NodeUnderTest {
    endpoint: String,
    channel: Channel,
}

/// Connects to `given`, or starts a node and connects to it.
async fn node_under_test(
    name: &'static str,
    given: Option<&String>,
    dir: &Path,
    options: &Options,
    pools: bool,
    started: &mut Vec<LocalNode>,
) -> Result<NodeUnderTest, BenchNodeError> {
    let endpoint = match given {
        Some(e) => e.clone(),
        None => {
            let (node, endpoint) = start_node(name, dir, &options.runtimes_dir, pools).await?;
            started.push(node);
            endpoint
        }
    };
    let channel = client::connect(&endpoint, None, CONNECT_TIMEOUT)
        .await
        .map_err(|source| BenchNodeError::Node {
            endpoint: endpoint.clone(),
            source,
        })?;
    let pools: Vec<String> = PoolCounters::read(&channel)
        .await
        .map(|c| c.0)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, p)| p.size > 0)
        .map(|(runtime, p)| format!("{runtime} {}", p.size))
        .collect();
    println!(
        "{name} node: {endpoint} ({}; {})",
        if given.is_some() { "given" } else { "started" },
        if pools.is_empty() {
            "no pools".to_string()
        } else {
            format!("pools: {}", pools.join(", "))
        }
    );
    Ok(NodeUnderTest { endpoint, channel })
}

/// The program of the `inputs` rows: it doubles the number on its stdin.
fn doubling(lang: Lang) -> EvalRequest {
    let code = match lang {
        Lang::Java => {
            "int n = new java.util.Scanner(System.in).nextInt();\nSystem.out.println(n * 2);"
        }
        Lang::Python | Lang::Noop => "import sys\nprint(int(sys.stdin.read()) * 2)",
    };
    EvalRequest::new(lang.runtime()).component("bench", code)
}

fn doubled(i: usize) -> Vec<u8> {
    format!("{}\n", i * 2).into_bytes()
}

/// The stdout of a finished evaluation (its live output).
fn stdout_of(e: &client::Evaluated) -> Vec<u8> {
    use proto::jsheets::evaluation_result::Kind;
    e.responses
        .iter()
        .filter(|r| r.completion.is_none())
        .flat_map(|r| r.result.iter())
        .filter(|r| r.kind() == Kind::Info)
        .flat_map(|r| r.output.bytes())
        .collect()
}

/// `count` separate requests of `lang`'s program, input `i` on stdin, `concurrency`
/// back to back; OK when a request succeeds with the doubled number.
async fn separate_requests(
    channel: &Channel,
    lang: Lang,
    count: usize,
    concurrency: usize,
    deadline: Duration,
) -> Row {
    use crate::bench_service::{Outcome, Sample};
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (channel, next) = (channel.clone(), next.clone());
        loops.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return samples;
                }
                let mut request = doubling(lang);
                request.stdin = i.to_string().into_bytes();
                let t = Instant::now();
                let outcome = match client::evaluate(&channel, &request, deadline, |_| {}).await {
                    Ok(e) if e.succeeded() && stdout_of(&e) == doubled(i) => Outcome::Ok,
                    Ok(e) if e.succeeded() => Outcome::NotOk(format!(
                        "input {i}: stdout {:?}",
                        String::from_utf8_lossy(&stdout_of(&e))
                    )),
                    Ok(e) => Outcome::NotOk(not_ok_reason(&e)),
                    Err(e) => Outcome::Other(e.to_string()),
                };
                samples.push(Sample::new(t.elapsed(), outcome));
            }
        });
    }
    let mut samples = Vec::new();
    while let Some(done) = loops.join_next().await {
        samples.extend(done.unwrap_or_default());
    }
    Row::new(concurrency, samples, started.elapsed())
}

/// One request of `lang`'s program with `count` inputs; a run is OK when it ends ok
/// with its output matched. Latencies are the runs' own wall times.
async fn one_request(channel: &Channel, lang: Lang, count: usize, deadline: Duration) -> Row {
    use crate::bench_service::{Outcome, Sample};
    use proto::jsheets::input_result::Match;
    let mut request = doubling(lang);
    for i in 0..count {
        request = request.input(i.to_string(), Some(doubled(i)));
    }
    let runs_at_once = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let result = client::evaluate(channel, &request, deadline, |_| {}).await;
    let elapsed = started.elapsed();
    let samples = match result {
        Ok(e) => e
            .runs
            .iter()
            .map(|run| {
                let c = run.result.completion.clone().unwrap_or_default();
                let latency = Duration::from_millis(c.wall_time_ms);
                let outcome = if c.status() == proto::jsheets::completion::Status::Ok
                    && run.result.r#match() == Match::Matched
                {
                    Outcome::Ok
                } else {
                    Outcome::NotOk(format!(
                        "input {}: status {}, {:?}, stdout {:?}",
                        run.result.index,
                        c.status().as_str_name().to_ascii_lowercase(),
                        run.result.r#match(),
                        String::from_utf8_lossy(&run.result.stdout)
                    ))
                };
                Sample::new(latency, outcome)
            })
            .collect(),
        Err(e) => vec![Sample::new(elapsed, Outcome::Other(e.to_string()))],
    };
    Row::new(runs_at_once, samples, elapsed)
}

/// The `inputs` rows of `lang`: one many-input request, then as many separate
/// requests at concurrency 1 and 2, and how many times faster the one request was.
async fn inputs_rows(channel: &Channel, lang: Lang, count: usize, deadline: Duration) -> bool {
    // A many-input request may take as long as its runs together.
    let long = deadline.saturating_mul(u32::try_from(count).unwrap_or(u32::MAX).max(1));
    let _ = wait_for_pools(channel, POOL_WAIT).await;
    let batch = one_request(channel, lang, count, long).await;
    batch.print(&format!("{count} inputs"), lang.runtime(), None);
    let mut ok = batch.latencies.len() == count;
    let mut speedups = Vec::new();
    for c in [1, 2] {
        let _ = wait_for_pools(channel, POOL_WAIT).await;
        let row = separate_requests(channel, lang, count, c, deadline).await;
        row.print(&format!("{count} requests"), lang.runtime(), None);
        ok &= row.latencies.len() == count;
        speedups.push(format!(
            "{:.1}x (against concurrency {c})",
            row.elapsed().as_secs_f64() / batch.elapsed().as_secs_f64().max(1e-9)
        ));
    }
    if ok {
        println!(
            "      {count} inputs of {} in one request: {:.2} s, {} faster than {count} requests",
            lang.runtime(),
            batch.elapsed().as_secs_f64(),
            speedups.join(", ")
        );
    }
    ok
}

fn request(lang: Lang) -> Arc<EvalRequest> {
    Arc::new(EvalRequest::new(lang.runtime()).component("bench", lang.code()))
}

/// Runs the suite and prints its table; returns whether every row had at least one
/// successful evaluation. Nodes it started are stopped when it returns or is dropped.
pub async fn run(options: &Options) -> Result<bool, BenchNodeError> {
    let steps = &options.steps;
    let dir = tempfile::Builder::new()
        .prefix("jsheets-bench-node-")
        .tempdir()
        .map_err(|source| BenchNodeError::Io {
            what: "creating a private directory".into(),
            source,
        })?;
    // Declared after `dir`, so dropped (the nodes stopped) before it is removed.
    let mut started = Vec::new();

    let mut baseline_langs = Vec::new();
    let (mut want_pooled, mut want_cold) = (false, false);
    for step in steps {
        match step {
            Step::Baseline { lang, .. } if !baseline_langs.contains(lang) => {
                baseline_langs.push(*lang)
            }
            Step::Node { cold, .. } => {
                want_pooled |= !cold;
                want_cold |= cold;
            }
            Step::Inputs { .. } => want_pooled = true,
            Step::Baseline { .. } => {}
        }
    }
    let baselines = baseline_targets(options, dir.path(), &baseline_langs)?;

    println!(
        "jsheets-runtime bench-node: {:.0} s per row, deadline {:.0} s, {} CPUs, runtimes {}",
        options.duration.as_secs_f64(),
        options.deadline.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        options.runtimes_dir.display()
    );
    // The node with pools, then the one without, each only if a row needs it.
    let mut nodes = Vec::new();
    let [with_pools, without] = &options.endpoints;
    for (name, given, pools, wanted) in [
        ("pooled", with_pools.as_ref(), true, want_pooled),
        ("cold", without.as_ref(), false, want_cold),
    ] {
        let node = if wanted {
            Some(node_under_test(name, given, dir.path(), options, pools, &mut started).await?)
        } else {
            None
        };
        nodes.push(node);
    }
    let (pooled, cold) = (&nodes[0], &nodes[1]);
    for (lang, _, shown) in &baselines {
        println!("baseline {}: {shown}", lang.runtime());
    }

    // One evaluation of each language on each node first: it checks the runtime and
    // warms the node.
    let mut warmed = Vec::new();
    for step in steps {
        let Step::Node { cold: c, langs, .. } = step else {
            continue;
        };
        let node = if *c { cold } else { pooled };
        let Some(node) = node else { continue };
        for &lang in langs {
            if warmed.contains(&(*c, lang)) {
                continue;
            }
            warmed.push((*c, lang));
            match client::evaluate(&node.channel, &request(lang), options.deadline, |_| {}).await {
                Ok(e) if e.succeeded() => {}
                Ok(e) => eprintln!(
                    "jsheets-runtime: warning: warm-up of {} on {}: {}",
                    lang.runtime(),
                    node.endpoint,
                    not_ok_reason(&e)
                ),
                Err(e) => eprintln!(
                    "jsheets-runtime: warning: warm-up of {} on {}: {}",
                    lang.runtime(),
                    node.endpoint,
                    crate::report::error_chain(&e)
                ),
            }
        }
    }

    println!("{}", header());
    let mut every_row_ok = true;
    for step in steps {
        match step {
            Step::Node {
                what,
                cold: c,
                langs,
                concurrency,
            } => {
                let Some(node) = (if *c { cold } else { pooled }) else {
                    continue;
                };
                let targets: Vec<Target> = langs
                    .iter()
                    .map(|&l| Target::Service(node.channel.clone(), request(l)))
                    .collect();
                // Each row starts with full pools; a node that cannot say is still
                // measured, without hit rates.
                let before = wait_for_pools(&node.channel, POOL_WAIT).await.ok();
                let rows = measure(
                    &targets,
                    *concurrency,
                    options.duration,
                    options.deadline,
                    Duration::ZERO,
                )
                .await;
                let after = PoolCounters::read(&node.channel).await.ok();
                for (lang, row) in langs.iter().zip(&rows) {
                    let hits = before
                        .as_ref()
                        .zip(after.as_ref())
                        .and_then(|(b, a)| b.hit_rate(a, lang.runtime(), row.requests()));
                    row.print(what, lang.runtime(), hits);
                    every_row_ok &= !row.latencies.is_empty();
                }
            }
            Step::Inputs { lang, count } => {
                let Some(node) = pooled else { continue };
                every_row_ok &= inputs_rows(&node.channel, *lang, *count, options.deadline).await;
            }
            Step::Baseline { lang, concurrency } => {
                let Some((_, target, _)) = baselines.iter().find(|(l, _, _)| l == lang) else {
                    continue;
                };
                let rows = measure(
                    std::slice::from_ref(target),
                    *concurrency,
                    options.duration,
                    options.deadline,
                    Duration::ZERO,
                )
                .await;
                rows[0].print(lang.baseline_label(), lang.runtime(), None);
                every_row_ok &= !rows[0].latencies.is_empty();
            }
        }
    }
    drop(started);
    Ok(every_row_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_row_comes_right_before_its_baseline() {
        let steps = plan(
            &[Section::Cold, Section::Python, Section::Cold],
            &[1, 4],
            &[2],
            100,
        );
        let python = |c| Step::Node {
            what: "node",
            cold: false,
            langs: vec![Lang::Python],
            concurrency: c,
        };
        let cold = |lang, c| Step::Node {
            what: "node cold",
            cold: true,
            langs: vec![lang],
            concurrency: c,
        };
        let baseline = |lang, concurrency| Step::Baseline { lang, concurrency };
        assert_eq!(
            steps,
            [
                python(1),
                baseline(Lang::Python, 1),
                python(4),
                baseline(Lang::Python, 4),
                cold(Lang::Python, 2),
                baseline(Lang::Python, 2),
                cold(Lang::Noop, 2),
                baseline(Lang::Noop, 2),
            ]
        );
        let mixed = plan(&[Section::Mixed], &[2], &[1], 100);
        assert_eq!(
            mixed,
            [Step::Node {
                what: "node mixed",
                cold: false,
                langs: vec![Lang::Python, Lang::Java],
                concurrency: 2,
            }]
        );
        let java = plan(&[Section::Java], &[1], &[1], 100);
        assert_eq!(java[1], baseline(Lang::Java, 1));
        let inputs = plan(&[Section::Inputs], &[1], &[1], 7);
        assert_eq!(
            inputs,
            [
                Step::Inputs {
                    lang: Lang::Python,
                    count: 7
                },
                Step::Inputs {
                    lang: Lang::Java,
                    count: 7
                }
            ]
        );
    }

    #[test]
    fn started_nodes_have_the_default_pools_or_none() {
        let config = node_config(Path::new("/rt \"x\""), Path::new("/st"), true);
        let parsed: toml::Value = toml::from_str(&config).unwrap();
        assert_eq!(
            parsed["evaluation"]["runtimesDir"].as_str(),
            Some("/rt \"x\"")
        );
        assert_eq!(parsed["server"]["port"].as_integer(), Some(0));
        assert_eq!(parsed["evaluation"]["poolDefaults"].as_bool(), Some(true));
        assert!(parsed["evaluation"].get("pool").is_none());
        let config = node_config(Path::new("/rt"), Path::new("/st"), false);
        let parsed: toml::Value = toml::from_str(&config).unwrap();
        assert_eq!(parsed["evaluation"]["poolDefaults"].as_bool(), Some(false));
    }
}
