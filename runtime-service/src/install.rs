//! Building a runtime from a recipe (a file, or one shipped inside the binary) with a
//! progress display, for `runtime install` and a first `serve`: in builder sandboxes
//! or, for image builds only (`--unsandboxed-build`), as plain processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use evaluator::install::builder::{HostBuildRunner, SandboxBuilder};
use evaluator::install::{self, BuildRunner, Progress};
use evaluator::runtime::Runtime;
use evaluator::sandbox::Sandboxes;
use indicatif::{ProgressBar, ProgressStyle};

/// Recipes shipped with the binary, so `runtime install python-3.11` works anywhere.
pub const SHIPPED: &[(&str, &str)] = &[
    ("shell", include_str!("../../recipes/shell.yml")),
    ("python-3.11", include_str!("../../recipes/python-3.11.yml")),
    (
        "python-3.11-ml",
        include_str!("../../recipes/python-3.11-ml.yml"),
    ),
    ("openjdk-17", include_str!("../../recipes/openjdk-17.yml")),
    ("node-20", include_str!("../../recipes/node-20.yml")),
];

/// Builds `recipe` with its build steps and verification in builder sandboxes.
pub async fn install(runtimes_dir: &Path, sandboxes: &Sandboxes, recipe: &str) -> Result<Runtime> {
    let (path, _scratch) = recipe_file(recipe)?;
    build(runtimes_dir, &SandboxBuilder::new(sandboxes), &path).await
}

/// Builds `recipe` with its build steps run as plain child processes
/// ([`HostBuildRunner`]): only for building container images, where the build
/// container is the isolation. The snippet verification cannot run; the runtime must
/// be tested (`runtime test NAME`) where sandboxes work, e.g. when the container starts.
pub async fn install_unsandboxed(runtimes_dir: &Path, recipe: &str) -> Result<Runtime> {
    let (path, _scratch) = recipe_file(recipe)?;
    let parsed = install::load_recipe(&path)?;
    build(runtimes_dir, &HostBuildRunner::for_recipe(&parsed), &path).await
}

/// The recipe file: `recipe` itself, or a shipped recipe written to a scratch
/// directory that lives as long as the returned guard.
fn recipe_file(recipe: &str) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    if Path::new(recipe).is_file() {
        return Ok((Path::new(recipe).to_path_buf(), None));
    }
    let Some((name, text)) = SHIPPED.iter().find(|(n, _)| *n == recipe) else {
        let names: Vec<_> = SHIPPED.iter().map(|(n, _)| *n).collect();
        bail!(
            "no recipe {recipe:?}: give a recipe file or one of {}",
            names.join(", ")
        );
    };
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let path = scratch.path().join(format!("{name}.yml"));
    std::fs::write(&path, text).context("writing the shipped recipe")?;
    Ok((path, Some(scratch)))
}

async fn build(runtimes_dir: &Path, runner: &dyn BuildRunner, path: &Path) -> Result<Runtime> {
    std::fs::create_dir_all(runtimes_dir)
        .with_context(|| format!("creating {}", runtimes_dir.display()))?;
    if crate::report::json_output() {
        // No progress display: one JSON event per step.
        return Ok(install::install(path, runtimes_dir, runner, &progress_events).await?);
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>12} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let show = |p: Progress| match p {
        Progress::Started { step, detail } => {
            bar.set_prefix(step.to_string());
            bar.set_message(detail);
        }
        Progress::Files { step, count } => {
            bar.set_prefix(step.to_string());
            bar.set_message(format!("{count} files"));
        }
        Progress::Finished { step, files } => {
            bar.println(format!("{step:>12} done ({files} files)"))
        }
        Progress::Note { step, message } => bar.println(format!("{step:>12} {message}")),
        Progress::Warning { step, message } => {
            bar.println(format!("{step:>12} warning: {message}"))
        }
    };
    let result = install::install(path, runtimes_dir, runner, &show).await;
    bar.finish_and_clear();
    Ok(result?)
}

/// Build progress as events (`log.format = json`); file counts are left out.
fn progress_events(p: Progress) {
    use crate::report::REPORT_TARGET;
    match p {
        Progress::Started { step, detail } if detail.is_empty() => {
            tracing::info!(target: REPORT_TARGET, step = %step, "{step}")
        }
        Progress::Started { step, detail } => {
            tracing::info!(target: REPORT_TARGET, step = %step, "{step}: {detail}")
        }
        Progress::Files { .. } => {}
        Progress::Finished { step, files } => {
            tracing::info!(target: REPORT_TARGET, step = %step, files, "{step}: done ({files} files)")
        }
        Progress::Note { step, message } => {
            tracing::info!(target: REPORT_TARGET, step = %step, "{step}: {message}")
        }
        Progress::Warning { step, message } => {
            tracing::warn!(target: REPORT_TARGET, step = %step, "{step}: warning: {message}")
        }
    }
}
