//! Command-line interface: local evaluation and runtime management.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use evaluator::access::catalog::Catalog;
use evaluator::access::AccessList;
use evaluator::evaluate::{Component, Output};
use evaluator::runtime::{self, Registry, Runtime};
use evaluator::sandbox::{Limits, Outcome, Sandboxes, Status};
use tokio_util::sync::CancellationToken;

use crate::bench;
use crate::config::{Config, Overrides, DEFAULT_ACCESS_LISTS_DIR};
use crate::report::{
    self, error_chain, init_tracing, json_output, EX_SOFTWARE, EX_USAGE, REPORT_TARGET,
    STDOUT_TARGET,
};
use crate::sandboxes::sandboxes;

#[derive(Debug, Parser)]
#[command(
    name = "jsheets-runtime",
    version,
    about = "Evaluates code snippets in fresh single-use Linux sandboxes"
)]
pub struct Cli {
    /// Configuration file (TOML), read by serve, run, runtime, bench and config; default
    /// $JSHEETS_RUNTIME_CONFIG, then /etc/jsheets-runtime/config.toml if it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where installed runtimes live, for every command: overrides
    /// evaluation.runtimesDir (environment JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR, or
    /// JSHEETS_RUNTIME_RUNTIMES_DIR), default /var/lib/jsheets-runtime/runtimes.
    #[arg(long, global = true, value_name = "DIR")]
    pub runtimes_dir: Option<PathBuf>,
    /// Private state directory (sandbox mount point), for every command: overrides
    /// evaluation.stateDir (environment JSHEETS_RUNTIME_EVALUATION_STATE_DIR, or
    /// JSHEETS_RUNTIME_STATE_DIR), default /run/jsheets-runtime.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log filter (tracing syntax), e.g. `info` or `evaluator=debug`.
    #[arg(
        long,
        global = true,
        env = "JSHEETS_RUNTIME_LOG",
        default_value = "warn"
    )]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC node (the main command).
    Serve,
    /// Evaluate a snippet on a running node over gRPC.
    Eval(crate::eval::EvalArgs),
    /// Drive a running node at a given concurrency and print latency percentiles.
    BenchService(crate::bench_service::ServiceBenchArgs),
    /// Many mixed and hostile evaluations against a running node, checking each
    /// outcome and what the node holds before and after.
    Soak(crate::soak::SoakArgs),
    /// Evaluate a snippet locally in a fresh sandbox and print the outcome.
    Run(RunArgs),
    /// Install, inspect, test, remove, pack and unpack runtimes.
    Runtime {
        #[command(subcommand)]
        command: RuntimeCommand,
    },
    /// Measure sandbox latency and throughput against bubblewrap.
    Bench(bench::BenchArgs),
    /// Check access lists.
    AccessList {
        #[command(subcommand)]
        command: AccessListCommand,
    },
    /// Print the effective configuration (defaults, file, environment, flags), secrets
    /// redacted.
    Config,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Runtime: a name, name@version, language:version or a bare language.
    #[arg(long, short)]
    pub runtime: String,
    /// Code of one component; repeat for several components.
    #[arg(long = "code", short = 'e')]
    pub code: Vec<String>,
    /// Files whose contents are further components, in order.
    pub files: Vec<PathBuf>,
    /// File fed to the snippet's standard input.
    #[arg(long)]
    pub stdin: Option<PathBuf>,
    /// Access list: a name (looked up in /etc/jsheets-runtime/access-lists, then among
    /// the built-in lists), a FILE.access, or `none`. Default: the runtime's own.
    #[arg(long)]
    pub access_list: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// Wall-clock limit in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub wall_time: f64,
    /// CPU-time limit in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub cpu_time: f64,
    /// Memory limit in MiB (no swap).
    #[arg(long, default_value_t = 256)]
    pub memory: u64,
    /// Maximum number of processes and threads.
    #[arg(long, default_value_t = 64)]
    pub processes: u64,
    /// Cap of stdout and of stderr, each, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub output: u64,
}

impl LimitArgs {
    pub fn to_limits(&self) -> Result<Limits> {
        let secs = |v: f64, what: &str| {
            if v.is_finite() && v > 0.0 && v <= 3600.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                bail!("--{what} must be between 0 and 3600 seconds, got {v}")
            }
        };
        if self.memory < 8 {
            bail!("--memory must be at least 8 MiB, got {}", self.memory);
        }
        if self.processes == 0 {
            bail!("--processes must be at least 1");
        }
        Ok(Limits {
            wall_time: secs(self.wall_time, "wall-time")?,
            cpu_time: secs(self.cpu_time, "cpu-time")?,
            memory_bytes: self.memory << 20,
            max_processes: self.processes,
            output_bytes: self.output,
            ..Limits::default()
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum AccessListCommand {
    /// Report syntax errors (file, line, column) and rules that can never decide
    /// anything (duplicated, shadowed, redundant). Exits 1 when there is any.
    Check { files: Vec<PathBuf> },
}

#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Build a runtime from a recipe (a shipped recipe name or a recipe file).
    Install {
        recipe: String,
        /// Run the build steps (pip, javac, a JVM training run) as plain child
        /// processes instead of builder sandboxes, and skip the snippet verification
        /// (only the evaluator program is checked). Only for building container images
        /// (`docker build` cannot create sandboxes), where the build container is the
        /// isolation; never on a host that serves untrusted code. Test the runtime
        /// where sandboxes work: `jsheets-runtime runtime test NAME`.
        #[arg(long)]
        unsandboxed_build: bool,
    },
    /// List installed runtimes (and any that failed to load).
    List,
    /// Show one runtime's configuration.
    Info { runtime: String },
    /// Run a snippet in a runtime to check that it works.
    Test { runtime: String },
    /// Remove an installed runtime.
    Remove { name: String },
    /// Pack an installed runtime into NAME-VERSION.tar.gz plus a .sha256 file.
    Pack {
        name: String,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Unpack a packed runtime after verifying its checksum.
    Unpack {
        archive: PathBuf,
        /// Expected SHA-256 (hex); defaults to the .sha256 file beside the archive.
        #[arg(long)]
        sha256: Option<String>,
        /// Most bytes the archive may expand to (default 4 GiB).
        #[arg(long, value_name = "BYTES")]
        max_bytes: Option<u64>,
        /// Most entries (files, directories, links) it may hold (default 200000).
        #[arg(long, value_name = "N")]
        max_entries: Option<u64>,
        /// Most uncompressed bytes per compressed byte (default 50).
        #[arg(long, value_name = "N")]
        max_ratio: Option<u64>,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // `serve`, `runtime install` and `runtime test` log as their configuration says
    // (text or JSON), once it is loaded.
    if !logs_as_configured(&cli.command) {
        init_tracing(&cli.log, false);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jsheets-runtime: starting the async runtime: {e}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            report::failure(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Commands whose output follows `log.format` from the configuration.
fn logs_as_configured(command: &Command) -> bool {
    matches!(
        command,
        Command::Serve
            | Command::Runtime {
                command: RuntimeCommand::Install { .. } | RuntimeCommand::Test { .. }
            }
    )
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let flags = Overrides {
        runtimes_dir: cli.runtimes_dir,
        state_dir: cli.state_dir,
    };
    let file = cli.config.as_deref();
    let configured = logs_as_configured(&cli.command);
    let log_filter = cli.log.clone();
    // The directories of the local commands: the same settings `serve` uses.
    let dirs = || match Config::load(file, &flags) {
        Ok((config, warnings)) => {
            if configured {
                init_tracing(
                    &log_filter,
                    config.log.format == crate::config::LogFormat::Json,
                );
            }
            for w in warnings {
                report::warning(&w.to_string());
            }
            Ok((config.evaluation.runtimes_dir, config.evaluation.state_dir))
        }
        Err(e) => {
            if configured {
                init_tracing(&log_filter, false);
            }
            eprintln!("jsheets-runtime: {}", error_chain(&e));
            Err(ExitCode::from(EX_USAGE))
        }
    };
    match cli.command {
        Command::Serve => crate::serve::run(file, &flags).await,
        Command::Eval(args) => crate::eval::run(args).await,
        Command::BenchService(args) => crate::bench_service::run(args).await,
        Command::Soak(args) => crate::soak::run(args).await,
        Command::Run(args) => match dirs() {
            Ok((runtimes, state)) => run(&runtimes, &state, args).await,
            Err(code) => Ok(code),
        },
        Command::Runtime { command } => match dirs() {
            Ok((runtimes, state)) => runtime_command(&runtimes, &state, command).await,
            Err(code) => Ok(code),
        },
        Command::Bench(args) => match dirs() {
            Ok((runtimes, state)) => bench::run(&runtimes, &state, args).await,
            Err(code) => Ok(code),
        },
        Command::Config => Ok(show_config(file, &flags)),
        Command::AccessList {
            command: AccessListCommand::Check { files },
        } => Ok(check_access_lists(&files)),
    }
}

/// `access-list check`: every problem of every file, one per line.
fn check_access_lists(files: &[PathBuf]) -> ExitCode {
    if files.is_empty() {
        eprintln!("jsheets-runtime: access-list check needs at least one FILE");
        return ExitCode::from(EX_USAGE);
    }
    let mut problems = 0;
    for file in files {
        match evaluator::access::AccessList::load(file) {
            Ok(list) => {
                let findings = evaluator::access::lint(&list);
                for f in &findings {
                    println!("{f}");
                }
                problems += findings.len();
                // API that instantiates or invokes classes named by data: allowed on
                // purpose in some lists (jsheets-original), so a warning, not a failure.
                let warnings = evaluator::access::lint::reflective_factories(&list);
                for w in &warnings {
                    println!("warning: {w}");
                }
                if findings.is_empty() {
                    println!(
                        "{}: {} rules, no problems{}",
                        file.display(),
                        list.rules().len(),
                        match warnings.len() {
                            0 => String::new(),
                            n => format!(", {n} warnings"),
                        }
                    );
                }
            }
            Err(e) => {
                println!("{}", error_chain(&e));
                problems += 1;
            }
        }
    }
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Loads and validates the configuration; a bad value is one line and exit code 64.
fn show_config(file: Option<&Path>, flags: &Overrides) -> ExitCode {
    match Config::load(file, flags) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            print!("{}", config.redacted_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jsheets-runtime: {}", error_chain(&e));
            ExitCode::from(EX_USAGE)
        }
    }
}

fn load_registry(dir: &Path) -> Registry {
    let registry = Registry::load(dir);
    for problem in registry.problems() {
        tracing::warn!("runtime {} not loaded: {}", problem.dir_name, problem.error);
    }
    for warning in registry.warnings() {
        tracing::warn!("{warning}");
    }
    registry
}

async fn run(runtimes_dir: &Path, state_dir: &Path, args: RunArgs) -> Result<ExitCode> {
    let limits = match args.limits.to_limits() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("jsheets-runtime: {e}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let mut components: Vec<Component> = args
        .code
        .iter()
        .enumerate()
        .map(|(i, code)| Component {
            id: format!("e{}", i + 1),
            code: code.clone(),
        })
        .collect();
    for file in &args.files {
        let code =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        components.push(Component {
            id: file.display().to_string(),
            code,
        });
    }
    if components.is_empty() {
        eprintln!("jsheets-runtime: nothing to run: give -e CODE or a FILE");
        return Ok(ExitCode::from(EX_USAGE));
    }
    let stdin = match &args.stdin {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => Vec::new(),
    };
    let registry = load_registry(runtimes_dir);
    let runtime = match registry.resolve(&args.runtime) {
        Ok(r) => r.clone(),
        Err(e) => {
            eprintln!("jsheets-runtime: {e}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let access_list = match cli_access_list(&runtime, args.access_list.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("jsheets-runtime: {e:#}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let sandboxes = sandboxes(state_dir)?;
    let (outcome, failed) =
        evaluate_printing(&sandboxes, &runtime, access_list, components, stdin, limits).await?;
    print_outcome(&runtime, &outcome);
    Ok(match outcome.status {
        Status::Ok if !failed => ExitCode::SUCCESS,
        Status::SetupFailed => ExitCode::from(EX_SOFTWARE),
        _ => ExitCode::FAILURE,
    })
}

/// The list `run` holds a snippet to: `--access-list` (name, file or `none`) over
/// the runtime's own.
fn cli_access_list(runtime: &Runtime, flag: Option<&str>) -> Result<Option<Arc<AccessList>>> {
    if let Some(path) = flag.filter(|f| f.contains('/') || f.ends_with(".access")) {
        return Ok(Some(Arc::new(AccessList::load(Path::new(path))?)));
    }
    let catalog = Catalog::new(Some(PathBuf::from(DEFAULT_ACCESS_LISTS_DIR)));
    Ok(catalog
        .for_runtime(runtime.access_list(), flag)
        .with_context(|| format!("access list of runtime {}", runtime.name()))?
        .map(Arc::new))
}

/// Evaluates and prints everything as it streams; returns the outcome and whether the
/// snippet reported an error of its own (exception, diagnostic).
pub async fn evaluate_printing(
    sandboxes: &Sandboxes,
    runtime: &Runtime,
    access_list: Option<Arc<AccessList>>,
    components: Vec<Component>,
    stdin: Vec<u8>,
    limits: Limits,
) -> Result<(Outcome, bool)> {
    let mut launch = runtime.launch();
    launch.access_list = access_list;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let cancel = CancellationToken::new();
    let ctrl_c = cancel.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.cancel();
        }
    });
    let printer = tokio::spawn(async move {
        let mut failed = false;
        let (mut out, mut err) = if json_output() {
            (Sink::json(true), Sink::json(false))
        } else {
            (
                Sink::Stdout(std::io::stdout()),
                Sink::Stderr(std::io::stderr()),
            )
        };
        while let Some(o) = rx.recv().await {
            match o {
                Output::Stdout { data, .. } => {
                    let _ = out.write_all(&data);
                    let _ = out.flush();
                }
                Output::Stderr { data, .. } => {
                    let _ = err.write_all(&data);
                    let _ = err.flush();
                }
                // The empty value of a statement or a void call: jshell shows nothing.
                Output::Value { text, .. } if text.is_empty() => {}
                Output::Value { text, .. } => {
                    let _ = writeln!(out, "{text}");
                }
                Output::Diagnostic {
                    component,
                    kind,
                    message,
                    line,
                    column,
                    ..
                } => {
                    failed = true;
                    let _ = writeln!(err, "{component}:{line}:{column}: {kind}: {message}");
                }
                Output::Exception { traceback, .. } => {
                    failed = true;
                    let _ = write!(err, "{traceback}");
                }
                Output::Started { .. } => {}
                Output::Violation {
                    component, message, ..
                } => {
                    failed = true;
                    let _ = writeln!(err, "{component}: sandbox: {message}");
                }
                Output::Internal { component, message } => {
                    failed = true;
                    let _ = writeln!(err, "{component}: internal error: {message}");
                }
            }
        }
        out.finish();
        err.finish();
        failed
    });
    let outcome =
        evaluator::evaluate::evaluate(sandboxes, &launch, &components, stdin, limits, tx, cancel)
            .await?;
    watcher.abort();
    let failed = printer.await.unwrap_or(true);
    Ok((outcome, failed))
}

/// Where a snippet's output goes: stdout and stderr as they come, or with
/// `log.format = json` one JSON event per line.
enum Sink {
    Stdout(std::io::Stdout),
    Stderr(std::io::Stderr),
    Json { stdout: bool, pending: Vec<u8> },
}

impl Sink {
    fn json(stdout: bool) -> Sink {
        Sink::Json {
            stdout,
            pending: Vec::new(),
        }
    }

    fn emit(stdout: bool, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        if stdout {
            tracing::info!(target: STDOUT_TARGET, stream = "stdout", "{line}");
        } else {
            tracing::info!(target: REPORT_TARGET, stream = "stderr", "{line}");
        }
    }

    /// Emits a last line without its newline.
    fn finish(&mut self) {
        if let Sink::Json { stdout, pending } = self {
            if !pending.is_empty() {
                Sink::emit(*stdout, pending);
                pending.clear();
            }
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::Stderr(w) => w.write(buf),
            Sink::Json { stdout, pending } => {
                pending.extend_from_slice(buf);
                while let Some(at) = pending.iter().position(|&b| b == b'\n') {
                    let rest = pending.split_off(at + 1);
                    Sink::emit(*stdout, &pending[..at]);
                    *pending = rest;
                }
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::Stderr(w) => w.flush(),
            Sink::Json { .. } => Ok(()),
        }
    }
}

fn print_outcome(runtime: &Runtime, o: &Outcome) {
    let mut line = format!("status: {}", o.status);
    if let Some(code) = o.exit_code {
        line.push_str(&format!("  exit: {code}"));
    }
    if let Some(sig) = o.signal {
        line.push_str(&format!("  signal: {sig}"));
    }
    line.push_str(&format!(
        "  wall: {:.1} ms  cpu: {:.1} ms  peak memory: {:.1} MiB  runtime: {}@{}",
        o.wall_time.as_secs_f64() * 1e3,
        o.cpu_time.as_secs_f64() * 1e3,
        o.peak_memory as f64 / (1 << 20) as f64,
        runtime.name(),
        runtime.version(),
    ));
    if o.stdout_truncated || o.stderr_truncated {
        line.push_str("  (output truncated)");
    }
    if json_output() {
        tracing::info!(
            target: REPORT_TARGET,
            status = %o.status,
            exit_code = o.exit_code,
            signal = o.signal,
            wall_ms = o.wall_time.as_secs_f64() * 1e3,
            cpu_ms = o.cpu_time.as_secs_f64() * 1e3,
            peak_memory_bytes = o.peak_memory,
            runtime = %format!("{}@{}", runtime.name(), runtime.version()),
            "{line}"
        );
    } else {
        eprintln!("{line}");
    }
    if let Some(e) = &o.error {
        report::stderr(&format!("setup failed: {e}"));
    }
}

async fn runtime_command(
    runtimes_dir: &Path,
    state_dir: &Path,
    command: RuntimeCommand,
) -> Result<ExitCode> {
    match command {
        RuntimeCommand::Install {
            recipe,
            unsandboxed_build,
        } => {
            let installed = if unsandboxed_build {
                report::stderr(
                    "jsheets-runtime: --unsandboxed-build: build steps run as plain processes \
                     (for container image builds only) and the runtime is not verified",
                );
                crate::install::install_unsandboxed(runtimes_dir, &recipe).await?
            } else {
                let sandboxes = sandboxes(state_dir)?;
                crate::install::install(runtimes_dir, &sandboxes, &recipe).await?
            };
            report::stdout(&format!(
                "installed {}@{} into {}",
                installed.name(),
                installed.version(),
                installed.dir().display()
            ));
            if unsandboxed_build {
                report::stdout(&format!(
                    "not verified: run `jsheets-runtime runtime test {}` where sandboxes work",
                    installed.name()
                ));
            }
        }
        RuntimeCommand::List => {
            let registry = load_registry(runtimes_dir);
            println!(
                "{:<20} {:<12} {:<10} DESCRIPTION",
                "NAME", "VERSION", "LANGUAGE"
            );
            for r in registry.list() {
                println!(
                    "{:<20} {:<12} {:<10} {}",
                    r.name(),
                    r.version(),
                    r.language(),
                    r.description()
                );
            }
            for problem in registry.problems() {
                println!("broken: {}: {}", problem.dir_name, problem.error);
            }
        }
        RuntimeCommand::Info { runtime } => {
            let registry = load_registry(runtimes_dir);
            let r = registry.resolve(&runtime)?;
            println!("{}", r.describe());
        }
        RuntimeCommand::Test { runtime } => {
            let registry = load_registry(runtimes_dir);
            let r = registry.resolve(&runtime)?.clone();
            let sandboxes = sandboxes(state_dir)?;
            let (code, expected) = r.smoke_test();
            let (outcome, failed) = evaluate_printing(
                &sandboxes,
                &r,
                None,
                vec![Component {
                    id: "test".into(),
                    code: code.into(),
                }],
                Vec::new(),
                Limits::default(),
            )
            .await?;
            print_outcome(&r, &outcome);
            if outcome.status != Status::Ok || failed {
                bail!(
                    "runtime {} failed its test (expected output {expected:?})",
                    r.name()
                );
            }
            report::stdout(&format!("runtime {}@{} works", r.name(), r.version()));
        }
        RuntimeCommand::Remove { name } => {
            runtime::remove(runtimes_dir, &name)?;
            println!("removed {name}");
        }
        RuntimeCommand::Pack { name, out } => {
            let (archive, sha) = runtime::pack(runtimes_dir, &name, &out)?;
            println!("{sha}  {}", archive.display());
        }
        RuntimeCommand::Unpack {
            archive,
            sha256,
            max_bytes,
            max_entries,
            max_ratio,
        } => {
            let defaults = runtime::UnpackLimits::default();
            let limits = runtime::UnpackLimits {
                max_bytes: max_bytes.unwrap_or(defaults.max_bytes),
                max_entries: max_entries.unwrap_or(defaults.max_entries),
                max_ratio: max_ratio.unwrap_or(defaults.max_ratio),
            };
            let r =
                runtime::unpack_with_limits(&archive, runtimes_dir, sha256.as_deref(), &limits)?;
            println!(
                "unpacked {}@{} into {}",
                r.name(),
                r.version(),
                r.dir().display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
