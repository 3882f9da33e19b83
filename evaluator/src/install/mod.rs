//! Builds runtimes from declarative recipes (`recipes/*.yml`) and swaps them in;
//! removes installed ones.
//!
//! [`install`] reads the recipe ([`recipe`]), detects the version on the host, builds
//! the runtime in a staging directory (the named steps of `build.rs`: copy the host
//! paths into `isolated/`, pip, post-install commands, the language's driver, the
//! shared-library closure of every ELF file, runtime.yml, a snippet run in it) and
//! swaps it into place. Build commands and the snippet run through the caller's
//! [`BuildRunner`]: builder sandboxes ([`builder`]) on a node.
//!
//! Everything happens in `<runtimes dir>/.staging-<name>-<random>` (dot-named, so the
//! registry never loads it), which is removed on any failure or cancellation: a failed
//! build leaves the installed version untouched.

mod build;
pub mod builder;
mod copy;
pub mod elf;
mod packages;
pub mod recipe;
mod runtime_file;
mod version;

use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil::swap_into_place;
use crate::lang::jshell::build::DriverBuildError;
use crate::runtime::{canonical_arch, host_debian_arch, valid_name, ConfigError, Runtime};
use copy::CopyError;
use elf::ElfError;

pub use builder::{BuildError, BuildRunner, HostBuildRunner, SandboxBuilder};
pub use recipe::{load_recipe, Recipe};
pub use runtime_file::ORIGINAL_FILE;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot read recipe {}", path.display())]
    ReadRecipe {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("recipe {} is not valid", path.display())]
    ParseRecipe {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("recipe {}: {field}: {problem}", path.display())]
    InvalidRecipe {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("`{0}` is not a valid runtime name")]
    InvalidName(String),
    #[error("runtime `{0}` is not installed")]
    NotInstalled(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot run `{command}`")]
    VersionCommand {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` did not finish in {}s", version::TIMEOUT.as_secs())]
    VersionTimeout { command: String },
    #[error("`{command}` exited with {status}: {output}")]
    VersionStatus {
        command: String,
        status: String,
        output: String,
    },
    #[error("invalid version regex `{regex}`")]
    VersionRegex {
        regex: String,
        #[source]
        source: regex::Error,
    },
    #[error("version regex `{regex}` does not match `{output}`")]
    VersionNotFound { regex: String, output: String },
    #[error("detected version `{0}` is not a version")]
    BadVersion(String),
    #[error("copying files into the runtime")]
    Copy(#[source] CopyError),
    /// A host file the recipe copies (or runs) is not there: the line names the Debian
    /// package to install.
    #[error("{} does not exist on this host: {hint}", path.display())]
    MissingHostFile { path: PathBuf, hint: String },
    #[error("resolving shared libraries")]
    Elf(#[source] ElfError),
    #[error("shared libraries not found: {0}")]
    MissingLibraries(String),
    #[error(transparent)]
    Driver(#[from] DriverBuildError),
    #[error("build step `{argv}` failed")]
    BuildStep {
        argv: String,
        #[source]
        source: BuildError,
    },
    #[error("writing {}", path.display())]
    WriteConfig {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("the built runtime does not load")]
    Config(#[source] ConfigError),
    #[error("verification failed")]
    Verify(#[source] BuildError),
    #[error("verification printed {got:?}, expected {expected:?}")]
    VerifyOutput { expected: String, got: String },
}

type Result<T> = std::result::Result<T, InstallError>;

fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> InstallError {
    let context = context.into();
    move |source| InstallError::Io { context, source }
}

/// A step of [`install`], for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Recipe,
    Version,
    Copy,
    Pip,
    PostInstall,
    Driver,
    ElfDeps,
    Config,
    Verify,
    Swap,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Recipe => "recipe",
            Step::Version => "version",
            Step::Copy => "copy",
            Step::Pip => "pip",
            Step::PostInstall => "post-install",
            Step::Driver => "driver",
            Step::ElfDeps => "elf-deps",
            Step::Config => "config",
            Step::Verify => "verify",
            Step::Swap => "swap",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`install`] reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Started {
        step: Step,
        detail: String,
    },
    /// Files copied so far in this step.
    Files {
        step: Step,
        count: usize,
    },
    Finished {
        step: Step,
        files: usize,
    },
    /// Something learnt along the way (the detected version, a library count).
    Note {
        step: Step,
        message: String,
    },
    Warning {
        step: Step,
        message: String,
    },
}

/// Reports progress to the caller's callback.
#[derive(Clone, Copy)]
struct Report<'a>(&'a (dyn Fn(Progress) + Sync));

impl Report<'_> {
    fn started(&self, step: Step, detail: impl Into<String>) {
        (self.0)(Progress::Started {
            step,
            detail: detail.into(),
        });
    }

    fn files(&self, step: Step, count: usize) {
        (self.0)(Progress::Files { step, count });
    }

    fn finished(&self, step: Step, files: usize) {
        (self.0)(Progress::Finished { step, files });
    }

    fn note(&self, step: Step, message: impl Into<String>) {
        (self.0)(Progress::Note {
            step,
            message: message.into(),
        });
    }

    fn warning(&self, step: Step, message: impl Into<String>) {
        (self.0)(Progress::Warning {
            step,
            message: message.into(),
        });
    }
}

/// Runs blocking filesystem work without stalling other tasks on a multi-threaded
/// runtime (a current-thread runtime has no other worker to hand tasks to).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Builds the runtime described by `recipe_path` into `runtimes_dir` and returns it,
/// loaded from its final place. On any error the previously installed version (if
/// any) is untouched and nothing is left behind.
pub async fn install(
    recipe_path: &Path,
    runtimes_dir: &Path,
    runner: &dyn BuildRunner,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Runtime> {
    let report = Report(progress);
    let (recipe, architectures) = read_recipe(recipe_path, report)?;
    let version = detect_version(&recipe, report).await?;
    let staging = create_staging(runtimes_dir, &recipe.name)?;
    build::build(
        &recipe,
        &version,
        &architectures,
        staging.path(),
        runtimes_dir,
        runner,
        report,
    )
    .await?;
    swap(staging, runtimes_dir, &recipe.name, report)
}

/// Reads and checks the recipe, and the architectures it is for, which must include
/// this host's.
fn read_recipe(path: &Path, report: Report<'_>) -> Result<(Recipe, Vec<String>)> {
    report.started(Step::Recipe, path.display().to_string());
    let recipe = load_recipe(path)?;
    let host_arch = std::env::consts::ARCH;
    let architectures = match &recipe.requirements {
        Some(r) if !r.architectures.is_empty() => r.architectures.clone(),
        _ => vec![host_debian_arch().to_owned()],
    };
    if !architectures.iter().any(|a| canonical_arch(a) == host_arch) {
        return Err(InstallError::InvalidRecipe {
            path: path.to_owned(),
            field: "requirements.architectures".into(),
            problem: format!(
                "{} does not include this host ({host_arch})",
                architectures.join(", ")
            ),
        });
    }
    report.finished(Step::Recipe, 0);
    Ok((recipe, architectures))
}

async fn detect_version(recipe: &Recipe, report: Report<'_>) -> Result<String> {
    report.started(Step::Version, "");
    let version = version::detect(recipe).await?;
    report.note(Step::Version, version.clone());
    report.finished(Step::Version, 0);
    Ok(version)
}

/// The staging directory of a build of `name`. Dropping it (on every early return and
/// on cancellation) removes it.
fn create_staging(runtimes_dir: &Path, name: &str) -> Result<tempfile::TempDir> {
    std::fs::create_dir_all(runtimes_dir).map_err(io_context(format!(
        "cannot create {}",
        runtimes_dir.display()
    )))?;
    tempfile::Builder::new()
        .prefix(&format!(".staging-{name}-"))
        .tempdir_in(runtimes_dir)
        .map_err(io_context(format!(
            "cannot create a staging directory in {}",
            runtimes_dir.display()
        )))
}

/// Swaps the built runtime `name` into place and loads it from there; the previous
/// version, if any, is removed.
fn swap(
    staging: tempfile::TempDir,
    runtimes_dir: &Path,
    name: &str,
    report: Report<'_>,
) -> Result<Runtime> {
    report.started(Step::Swap, name);
    let staging = staging.keep();
    let dest = runtimes_dir.join(name);
    let old = match blocking(|| swap_into_place(&staging, &dest)) {
        Ok(old) => old,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(io_context(format!(
                "cannot move the new runtime to {}",
                dest.display()
            ))(e));
        }
    };
    if let Some(old) = old {
        if let Err(e) = blocking(|| std::fs::remove_dir_all(&old)) {
            report.warning(
                Step::Swap,
                format!(
                    "cannot remove the previous version at {}: {e}",
                    old.display()
                ),
            );
        }
    }
    let (runtime, _) = Runtime::load(&dest).map_err(InstallError::Config)?;
    report.finished(Step::Swap, 0);
    Ok(runtime)
}

/// Removes an installed runtime. The name is checked before it is joined into a path,
/// and the directory is renamed aside first so no half-deleted runtime is ever loaded.
pub fn remove(runtimes_dir: &Path, name: &str) -> Result<()> {
    if !valid_name(name) {
        return Err(InstallError::InvalidName(name.to_owned()));
    }
    let dir = runtimes_dir.join(name);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            // A stray symlink or file under a runtime's name: remove the entry itself only.
            return std::fs::remove_file(&dir)
                .map_err(io_context(format!("cannot remove {}", dir.display())));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(InstallError::NotInstalled(name.to_owned()))
        }
        Err(e) => return Err(io_context(format!("cannot inspect {}", dir.display()))(e)),
    }
    let aside = crate::fsutil::sibling(&dir, ".removing")
        .map_err(io_context("cannot pick a temporary name"))?;
    std::fs::rename(&dir, &aside)
        .map_err(io_context(format!("cannot move {} aside", dir.display())))?;
    std::fs::remove_dir_all(&aside)
        .map_err(io_context(format!("cannot remove {}", aside.display())))
}

#[cfg(test)]
mod tests;
