//! `jsheets-runtime bench`: the sandbox benchmark's arguments, and the runtimes and
//! sandboxes it runs with.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use evaluator::runtime::Registry;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Evaluations per scenario and concurrency level.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub concurrency: Vec<usize>,
    /// Runtime for the `/bin/true` scenario.
    #[arg(long, default_value = "shell")]
    pub shell_runtime: String,
    /// Runtime for the Python scenario.
    #[arg(long, default_value = "python-3.11")]
    pub python_runtime: String,
}

pub async fn run(runtimes_dir: &Path, state_dir: &Path, args: BenchArgs) -> Result<ExitCode> {
    if args.iterations == 0 || args.concurrency.contains(&0) {
        bail!("--iterations and every --concurrency level must be at least 1");
    }
    let registry = Registry::load(runtimes_dir);
    let shell = registry.resolve(&args.shell_runtime).context("the /bin/true scenario needs the shell runtime (jsheets-runtime runtime install shell)")?.clone();
    let python = registry
        .resolve(&args.python_runtime)
        .context("the Python scenario needs a Python runtime")?
        .clone();
    let sandboxes = Arc::new(crate::sandboxes::sandboxes(state_dir)?);
    crate::bench::run(
        sandboxes,
        &shell,
        &python,
        args.iterations,
        &args.concurrency,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
