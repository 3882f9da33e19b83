//! The command line: its clap definitions and the dispatch of each command to its
//! module. Nothing here is used by the commands themselves.

mod access_list;
mod bench;
mod bench_node;
mod bench_service;
mod config;
mod eval;
mod files;
mod local;
mod remote;
mod run;
mod runtime;
mod serve;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::{LogFormat, Overrides};
use crate::report::{self, error_chain, init_tracing, EX_SOFTWARE, EX_USAGE};
use access_list::AccessListCommand;
use runtime::RuntimeCommand;

#[derive(Debug, Parser)]
#[command(
    name = "jsheets-runtime",
    version,
    about = "Evaluates code snippets in fresh single-use Linux sandboxes"
)]
pub struct Cli {
    /// Configuration file (TOML), read by serve, run, runtime, bench, bench-node and
    /// config; default $JSHEETS_RUNTIME_CONFIG, then /etc/jsheets-runtime/config.toml if
    /// it exists.
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
    Eval(eval::EvalArgs),
    /// Drive a running node at a given concurrency and print latency percentiles.
    BenchService(bench_service::ServiceBenchArgs),
    /// Every row of the performance goals in one table: Python, Java, a mixed load and
    /// cold sandboxes through nodes it starts (or is given), beside baselines.
    BenchNode(bench_node::NodeBenchArgs),
    /// Many mixed and hostile evaluations against a running node, checking each
    /// outcome and what the node holds before and after.
    Soak(soak::SoakArgs),
    /// Evaluate a snippet locally in a fresh sandbox and print the outcome.
    Run(run::RunArgs),
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
    let dirs = || match crate::config::load(file, &flags) {
        Ok((config, warnings)) => {
            if configured {
                init_tracing(&log_filter, config.log.format == LogFormat::Json);
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
        Command::Serve => serve::run(file, &flags).await,
        Command::Eval(args) => eval::run(args).await,
        Command::BenchService(args) => bench_service::run(args).await,
        Command::Soak(args) => soak::run(args).await,
        Command::Run(args) => match dirs() {
            Ok((runtimes, state)) => run::run(&runtimes, &state, args).await,
            Err(code) => Ok(code),
        },
        Command::Runtime { command } => match dirs() {
            Ok((runtimes, state)) => runtime::run(&runtimes, &state, command).await,
            Err(code) => Ok(code),
        },
        Command::BenchNode(args) => match dirs() {
            Ok((runtimes, _)) => bench_node::run(&runtimes, args).await,
            Err(code) => Ok(code),
        },
        Command::Bench(args) => match dirs() {
            Ok((runtimes, state)) => bench::run(&runtimes, &state, args).await,
            Err(code) => Ok(code),
        },
        Command::Config => Ok(config::show(file, &flags)),
        Command::AccessList {
            command: AccessListCommand::Check { files },
        } => Ok(access_list::check(&files)),
    }
}
