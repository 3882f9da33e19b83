//! Builds a runtime from a declarative recipe (`recipes/*.yml`) and swaps it in.
//!
//! Steps: read the recipe; detect the version on the host; copy the listed host paths
//! into `isolated/` under the same paths; run `pip` and `post_install` through the
//! caller's [`BuildRunner`] (never as plain host processes: they run code from the
//! network); copy the shared-library closure of every ELF file; write runtime.yml
//! (sandbox paths) and runtime.yml.original (host paths, for audit); load it through
//! the strict loader; run the recipe's snippet in it; swap it into place.
//!
//! Everything happens in `<runtimes dir>/.staging-<name>-<random>` (dot-named, so the
//! registry never loads it), which is removed on any failure or cancellation: a failed
//! build leaves the installed version untouched.
//!
//! Recipe format (unknown fields are errors; a typo should not silently drop a step):
//!
//! ```yaml
//! name: python-3.11
//! description: Debian's Python 3.11
//! language: python
//! evaluator: {kind: python, program: /usr/bin/python3.11, args: []}
//! version: {command: [/usr/bin/python3.11, --version], regex: "Python (\\S+)"}   # or "3.11.2"
//! copy:                               # host paths (globs allowed), same paths inside
//!   - /usr/bin/python3.11
//!   - path: /usr/lib/python3.11
//!     exclude: [/test, __pycache__]   # `/x` anchored to the copied dir, `x` any depth
//!     dereference_external: false     # replace links leaving the dir by copies
//! exclude: []                         # added to every copy entry
//! elf_deps: true                      # copy the libraries every ELF file needs
//! pip: [numpy, pandas]                # or {requirements: [...], python: ..., target: ..., args: [...]}
//! post_install: [[/usr/bin/tool, "{isolated}/usr"]]   # {isolated}, {runtime} substituted
//! environment: {HOME: /work}
//! mounts: []                          # extra mounts, as in runtime.yml
//! access_list: default
//! requirements: {architectures: [amd64]}   # default: this host's
//! packages: [python3.11]
//! verify: {code: "print(1+1)", expect_stdout: "2\n"}
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod builder;
mod copy;
pub mod elf;

use crate::fsutil::{glob, has_wildcard, resolve_in_jail, swap_into_place};
use crate::lang::{jshell, EvaluatorKind};
use crate::runtime::config::{
    EvaluatorFile, MountFile, RequirementsFile, RuntimeFile, CONFIG_FILE, ISOLATED_DIR,
};
use crate::runtime::{
    canonical_arch, host_debian_arch, is_normal_absolute, parse_version, valid_name, ConfigError,
    Runtime,
};
use copy::{Copier, CopyError, CopyOptions};
use elf::{ElfError, Resolver};

pub use builder::{HostBuildRunner, SandboxBuilder};

/// The host-path view kept next to runtime.yml.
pub const ORIGINAL_FILE: &str = "runtime.yml.original";

/// Where pip installs by default: on Debian's default sys.path.
const DEFAULT_PIP_TARGET: &str = "/usr/lib/python3/dist-packages";
const VERSION_TIMEOUT: Duration = Duration::from_secs(60);

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
    #[error("`{command}` did not finish in {}s", VERSION_TIMEOUT.as_secs())]
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
    #[error("JShell runtimes need a JDK: no javac at {}", .0.display())]
    NoJavac(PathBuf),
    #[error("JShell runtimes need a JDK: no jar at {}", .0.display())]
    NoJar(PathBuf),
    #[error("build step `{argv}` failed: {message}")]
    BuildStep { argv: String, message: String },
    #[error("writing {}", path.display())]
    WriteConfig {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("the built runtime does not load")]
    Config(#[source] ConfigError),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("verification printed {got:?}, expected {expected:?}")]
    VerifyOutput { expected: String, got: String },
}

type Result<T> = std::result::Result<T, InstallError>;

fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> InstallError {
    let context = context.into();
    move |source| InstallError::Io { context, source }
}

/// Runs what a build cannot do itself. Implemented over the sandbox.
pub trait BuildRunner: Send + Sync {
    /// Runs `argv` in a builder sandbox: host filesystem visible read-only, `writable`
    /// (the runtime being built) bind-mounted read-write at the same path, the
    /// runtimes directory `hidden`, network allowed (pip needs it). Note that
    /// `writable` lies inside `hidden`: hide first, then bind.
    fn run_build_step<'a>(
        &'a self,
        argv: &'a [String],
        env: &'a [(String, String)],
        writable: &'a Path,
        hidden: &'a Path,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send + 'a>>;

    /// Runs `code` in the freshly built runtime (loaded from the staging dir) and
    /// returns its stdout.
    fn verify<'a>(
        &'a self,
        runtime: &'a Runtime,
        code: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send + 'a>>;
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

/// A recipe file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub language: String,
    pub evaluator: RecipeEvaluator,
    pub version: VersionSource,
    #[serde(default)]
    pub copy: Vec<CopyEntry>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub elf_deps: bool,
    #[serde(default)]
    pub pip: Option<Pip>,
    #[serde(default)]
    pub post_install: Vec<Vec<String>>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub mounts: Vec<RecipeMount>,
    #[serde(default)]
    pub access_list: Option<String>,
    #[serde(default)]
    pub requirements: Option<RecipeRequirements>,
    #[serde(default)]
    pub packages: Vec<String>,
    pub verify: Verify,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeEvaluator {
    pub kind: EvaluatorKind,
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
}

/// A fixed version, or a host command whose output a regex picks it from.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum VersionSource {
    Fixed(String),
    Command { command: Vec<String>, regex: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CopyEntry {
    Path(String),
    Detailed {
        path: String,
        #[serde(default)]
        exclude: Vec<String>,
        #[serde(default)]
        dereference_external: bool,
    },
}

impl CopyEntry {
    fn path(&self) -> &str {
        match self {
            CopyEntry::Path(p) | CopyEntry::Detailed { path: p, .. } => p,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Pip {
    Requirements(Vec<String>),
    Detailed {
        requirements: Vec<String>,
        /// Host interpreter running pip; default: the evaluator's program.
        #[serde(default)]
        python: Option<String>,
        /// Sandbox path to install into; default /usr/lib/python3/dist-packages.
        #[serde(default)]
        target: Option<String>,
        #[serde(default)]
        args: Vec<String>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeMount {
    pub source: String,
    pub target: String,
    #[serde(default = "yes")]
    pub readonly: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeRequirements {
    #[serde(default)]
    pub architectures: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub code: String,
    pub expect_stdout: String,
}

/// Reads and checks a recipe.
pub fn load_recipe(path: &Path) -> Result<Recipe> {
    let text = std::fs::read_to_string(path).map_err(|source| InstallError::ReadRecipe {
        path: path.to_owned(),
        source,
    })?;
    let recipe: Recipe =
        serde_norway::from_str(&text).map_err(|source| InstallError::ParseRecipe {
            path: path.to_owned(),
            source,
        })?;
    let invalid = |field: &str, problem: String| InstallError::InvalidRecipe {
        path: path.to_owned(),
        field: field.to_owned(),
        problem,
    };
    if !valid_name(&recipe.name) {
        return Err(invalid(
            "name",
            format!(
                "`{}` does not match ^[a-z0-9][a-z0-9._-]{{0,63}}$",
                recipe.name
            ),
        ));
    }
    if !is_normal_absolute(&recipe.evaluator.program) {
        return Err(invalid(
            "evaluator.program",
            format!(
                "`{}` must be a normalized absolute path",
                recipe.evaluator.program
            ),
        ));
    }
    for (i, entry) in recipe.copy.iter().enumerate() {
        if !Path::new(entry.path()).is_absolute() {
            return Err(invalid(
                &format!("copy[{i}]"),
                format!("`{}` must be an absolute host path", entry.path()),
            ));
        }
    }
    if let VersionSource::Command { command, .. } = &recipe.version {
        if command
            .first()
            .map(|p| !Path::new(p).is_absolute())
            .unwrap_or(true)
        {
            return Err(invalid(
                "version.command",
                "must start with an absolute program path".into(),
            ));
        }
    }
    for (i, argv) in recipe.post_install.iter().enumerate() {
        if argv
            .first()
            .map(|p| !Path::new(p).is_absolute())
            .unwrap_or(true)
        {
            return Err(invalid(
                &format!("post_install[{i}]"),
                "must start with an absolute program path".into(),
            ));
        }
    }
    if let Some(Pip::Detailed { python, target, .. }) = &recipe.pip {
        if python
            .as_deref()
            .is_some_and(|p| !Path::new(p).is_absolute())
        {
            return Err(invalid("pip.python", "must be an absolute path".into()));
        }
        if target
            .as_deref()
            .is_some_and(|t| !is_normal_absolute(t) || t == "/")
        {
            return Err(invalid(
                "pip.target",
                "must be a normalized absolute sandbox path".into(),
            ));
        }
    }
    Ok(recipe)
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
    progress(Progress::Started {
        step: Step::Recipe,
        detail: recipe_path.display().to_string(),
    });
    let recipe = load_recipe(recipe_path)?;
    let host_arch = std::env::consts::ARCH;
    let architectures = match &recipe.requirements {
        Some(r) if !r.architectures.is_empty() => r.architectures.clone(),
        _ => vec![host_debian_arch().to_owned()],
    };
    if !architectures.iter().any(|a| canonical_arch(a) == host_arch) {
        return Err(InstallError::InvalidRecipe {
            path: recipe_path.to_owned(),
            field: "requirements.architectures".into(),
            problem: format!(
                "{} does not include this host ({host_arch})",
                architectures.join(", ")
            ),
        });
    }
    progress(Progress::Finished {
        step: Step::Recipe,
        files: 0,
    });

    progress(Progress::Started {
        step: Step::Version,
        detail: String::new(),
    });
    let version =
        detect_version(&recipe.version)
            .await
            .map_err(|e| match (e, &recipe.version) {
                (
                    InstallError::VersionCommand { source, .. },
                    VersionSource::Command { command, .. },
                ) if source.kind() == io::ErrorKind::NotFound
                    && !Path::new(&command[0]).exists() =>
                {
                    missing_host_file(Path::new(&command[0]), &recipe.packages)
                }
                (e, _) => e,
            })?;
    progress(Progress::Note {
        step: Step::Version,
        message: version.clone(),
    });
    progress(Progress::Finished {
        step: Step::Version,
        files: 0,
    });

    std::fs::create_dir_all(runtimes_dir).map_err(io_context(format!(
        "cannot create {}",
        runtimes_dir.display()
    )))?;
    // TempDir removes the staging directory on every early return and on cancellation.
    let staging = tempfile::Builder::new()
        .prefix(&format!(".staging-{}-", recipe.name))
        .tempdir_in(runtimes_dir)
        .map_err(io_context(format!(
            "cannot create a staging directory in {}",
            runtimes_dir.display()
        )))?;

    build(
        &recipe,
        &version,
        &architectures,
        staging.path(),
        runtimes_dir,
        runner,
        progress,
    )
    .await?;

    progress(Progress::Started {
        step: Step::Swap,
        detail: recipe.name.clone(),
    });
    let staging = staging.keep();
    let dest = runtimes_dir.join(&recipe.name);
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
            progress(Progress::Warning {
                step: Step::Swap,
                message: format!(
                    "cannot remove the previous version at {}: {e}",
                    old.display()
                ),
            });
        }
    }
    let (runtime, _) = Runtime::load(&dest).map_err(InstallError::Config)?;
    progress(Progress::Finished {
        step: Step::Swap,
        files: 0,
    });
    Ok(runtime)
}

/// Everything up to and including verification, inside `staging`.
async fn build(
    recipe: &Recipe,
    version: &str,
    architectures: &[String],
    staging: &Path,
    runtimes_dir: &Path,
    runner: &dyn BuildRunner,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<()> {
    let isolated = staging.join(ISOLATED_DIR);
    std::fs::create_dir(&isolated)
        .map_err(io_context(format!("cannot create {}", isolated.display())))?;
    let on_copy = |count| {
        progress(Progress::Files {
            step: Step::Copy,
            count,
        })
    };
    let mut copier = Copier::new(&isolated, &on_copy);

    progress(Progress::Started {
        step: Step::Copy,
        detail: format!("{} entries", recipe.copy.len()),
    });
    let copied = blocking(|| copy_entries(recipe, &mut copier))?;
    for message in copier.take_warnings() {
        progress(Progress::Warning {
            step: Step::Copy,
            message,
        });
    }
    progress(Progress::Finished {
        step: Step::Copy,
        files: copier.files(),
    });

    let tmp = staging.join(".tmp");
    let env = |tmp: &Path| -> Vec<(String, String)> {
        vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOME".into(), tmp.display().to_string()),
            ("TMPDIR".into(), tmp.display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
        ]
    };
    if let Some(pip) = &recipe.pip {
        let (requirements, python, target, args) = match pip {
            Pip::Requirements(r) => (r.clone(), None, None, Vec::new()),
            Pip::Detailed {
                requirements,
                python,
                target,
                args,
            } => (
                requirements.clone(),
                python.clone(),
                target.clone(),
                args.clone(),
            ),
        };
        let python = python.unwrap_or_else(|| recipe.evaluator.program.clone());
        let target = target.unwrap_or_else(|| DEFAULT_PIP_TARGET.to_owned());
        let target = copier.dest(Path::new(&target));
        progress(Progress::Started {
            step: Step::Pip,
            detail: requirements.join(" "),
        });
        std::fs::create_dir_all(&target)
            .map_err(io_context(format!("cannot create {}", target.display())))?;
        std::fs::create_dir_all(&tmp)
            .map_err(io_context(format!("cannot create {}", tmp.display())))?;
        let mut argv: Vec<String> = [
            python.as_str(),
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--no-input",
            "--root-user-action=ignore",
            "--target",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        argv.push(target.display().to_string());
        argv.extend(args);
        argv.extend(requirements);
        run_step(runner, &argv, &env(&tmp), staging, runtimes_dir).await?;
        progress(Progress::Finished {
            step: Step::Pip,
            files: 0,
        });
    }
    if !recipe.post_install.is_empty() {
        progress(Progress::Started {
            step: Step::PostInstall,
            detail: format!("{} commands", recipe.post_install.len()),
        });
        std::fs::create_dir_all(&tmp)
            .map_err(io_context(format!("cannot create {}", tmp.display())))?;
        for argv in &recipe.post_install {
            let argv: Vec<String> = argv
                .iter()
                .map(|a| {
                    a.replace("{isolated}", &isolated.display().to_string())
                        .replace("{runtime}", &staging.display().to_string())
                })
                .collect();
            run_step(runner, &argv, &env(&tmp), staging, runtimes_dir).await?;
        }
        progress(Progress::Finished {
            step: Step::PostInstall,
            files: 0,
        });
    }
    if recipe.evaluator.kind == EvaluatorKind::Jshell {
        build_jshell_driver(
            recipe,
            &copier,
            &tmp,
            runner,
            &env(&tmp),
            staging,
            runtimes_dir,
            progress,
        )
        .await?;
    }
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .map_err(io_context(format!("cannot remove {}", tmp.display())))?;
    }

    if recipe.elf_deps {
        progress(Progress::Started {
            step: Step::ElfDeps,
            detail: String::new(),
        });
        let before = copier.files();
        let (libraries, warnings) = blocking(|| copy_elf_deps(&isolated, &mut copier))?;
        for message in warnings.into_iter().chain(copier.take_warnings()) {
            progress(Progress::Warning {
                step: Step::ElfDeps,
                message,
            });
        }
        progress(Progress::Note {
            step: Step::ElfDeps,
            message: format!("{libraries} libraries from the host"),
        });
        progress(Progress::Finished {
            step: Step::ElfDeps,
            files: copier.files() - before,
        });
    }

    progress(Progress::Started {
        step: Step::Config,
        detail: CONFIG_FILE.into(),
    });
    for message in blocking(|| dangling_links(&isolated))? {
        progress(Progress::Warning {
            step: Step::Config,
            message,
        });
    }
    let mounts = root_mounts(&isolated)?;
    let mut all_mounts = mounts.clone();
    all_mounts.extend(recipe.mounts.iter().map(|m| MountFile {
        source: m.source.clone(),
        target: m.target.clone(),
        readonly: m.readonly,
    }));
    let file = RuntimeFile {
        name: recipe.name.clone(),
        version: version.to_owned(),
        description: recipe.description.clone(),
        language: recipe.language.clone(),
        evaluator: EvaluatorFile {
            kind: recipe.evaluator.kind,
            program: recipe.evaluator.program.clone(),
            args: recipe.evaluator.args.clone(),
        },
        mounts: all_mounts,
        environment: recipe.environment.clone(),
        access_list: recipe.access_list.clone(),
        requirements: RequirementsFile {
            architectures: architectures.to_vec(),
        },
        packages: recipe.packages.clone(),
    };
    write_yaml(&staging.join(CONFIG_FILE), &file, "")?;
    let original = OriginalFile {
        runtime: RuntimeFile {
            mounts: file
                .mounts
                .iter()
                .map(|m| MountFile {
                    source: m.target.clone(),
                    target: m.target.clone(),
                    readonly: m.readonly,
                })
                .collect(),
            ..file.clone()
        },
        copied_from_host: copied,
    };
    write_yaml(
        &staging.join(ORIGINAL_FILE),
        &original,
        "# The host paths this runtime was copied from (for audit). Never loaded:\n\
         # runtime.yml mounts only the copies under isolated/.\n",
    )?;
    let (runtime, warnings) =
        Runtime::load_named(staging, &recipe.name).map_err(InstallError::Config)?;
    for w in warnings {
        progress(Progress::Warning {
            step: Step::Config,
            message: w.to_string(),
        });
    }
    progress(Progress::Finished {
        step: Step::Config,
        files: 0,
    });

    progress(Progress::Started {
        step: Step::Verify,
        detail: recipe.verify.code.clone(),
    });
    let stdout = runner
        .verify(&runtime, &recipe.verify.code)
        .await
        .map_err(InstallError::Verify)?;
    if stdout != recipe.verify.expect_stdout {
        return Err(InstallError::VerifyOutput {
            expected: recipe.verify.expect_stdout.clone(),
            got: stdout,
        });
    }
    progress(Progress::Finished {
        step: Step::Verify,
        files: 0,
    });
    Ok(())
}

#[derive(Debug, Serialize)]
struct OriginalFile {
    #[serde(flatten)]
    runtime: RuntimeFile,
    copied_from_host: Vec<String>,
}

fn write_yaml(path: &Path, value: &impl Serialize, header: &str) -> Result<()> {
    let text = serde_norway::to_string(value).map_err(|source| InstallError::WriteConfig {
        path: path.to_owned(),
        source,
    })?;
    std::fs::write(path, format!("{header}{text}"))
        .map_err(io_context(format!("cannot write {}", path.display())))
}

/// Compiles the JShell driver with the runtime's own javac (the copy in `isolated/`,
/// so the driver matches the JVM that runs it) into the runtime, next to its agent jar,
/// its class-data-sharing archive and a copy of its source by which a later version of
/// the service recognises a stale driver.
#[allow(clippy::too_many_arguments)]
async fn build_jshell_driver(
    recipe: &Recipe,
    copier: &Copier<'_>,
    tmp: &Path,
    runner: &dyn BuildRunner,
    env: &[(String, String)],
    staging: &Path,
    runtimes_dir: &Path,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<()> {
    progress(Progress::Started {
        step: Step::Driver,
        detail: "JShell driver".into(),
    });
    let javac = copier.dest(&Path::new(&recipe.evaluator.program).with_file_name("javac"));
    if !javac.is_file() {
        return Err(InstallError::NoJavac(javac));
    }
    let src_dir = tmp.join("jshell-driver");
    let out = copier.dest(Path::new(jshell::DRIVER_DIR));
    for dir in [&src_dir, &out] {
        std::fs::create_dir_all(dir)
            .map_err(io_context(format!("cannot create {}", dir.display())))?;
    }
    let source = src_dir.join(jshell::DRIVER_SOURCE_FILE);
    std::fs::write(&source, jshell::DRIVER)
        .map_err(io_context(format!("cannot write {}", source.display())))?;
    let argv: Vec<String> = vec![
        javac.display().to_string(),
        "-encoding".into(),
        "UTF-8".into(),
        "-d".into(),
        out.display().to_string(),
        source.display().to_string(),
    ];
    run_step(runner, &argv, env, staging, runtimes_dir).await?;

    // The agent jar: only a manifest, naming the driver (found on the class path) as
    // the agent that receives java.lang.instrument, through which it redefines classes
    // in place as JShell's default engine does (JVMTI RedefineClasses).
    let jar = copier.dest(&Path::new(&recipe.evaluator.program).with_file_name("jar"));
    if !jar.is_file() {
        return Err(InstallError::NoJar(jar));
    }
    let manifest = src_dir.join("agent.mf");
    std::fs::write(&manifest, jshell::AGENT_MANIFEST)
        .map_err(io_context(format!("cannot write {}", manifest.display())))?;
    let agent = out.join(jshell::AGENT_FILE);
    let argv: Vec<String> = vec![
        jar.display().to_string(),
        "--create".into(),
        "--file".into(),
        agent.display().to_string(),
        "--manifest".into(),
        manifest.display().to_string(),
    ];
    run_step(runner, &argv, env, staging, runtimes_dir).await?;

    // A class-data-sharing archive of the JDK classes a typical snippet loads (JShell,
    // javac, the agent's java.lang.instrument): recorded by a training run with the
    // agent, dumped without the driver's own classes so that it stays valid for the
    // driver's directory inside the sandbox. Starting a JShell evaluation is about a
    // third faster with it.
    let java = copier.dest(Path::new(&recipe.evaluator.program));
    let training = src_dir.join("training.bin");
    std::fs::write(&training, jshell::training_input())
        .map_err(io_context(format!("cannot write {}", training.display())))?;
    let recorded = src_dir.join("classes.recorded");
    let argv: Vec<String> = vec![
        java.display().to_string(),
        "-Xshare:off".into(),
        format!("-XX:DumpLoadedClassList={}", recorded.display()),
        "-XX:+UseSerialGC".into(),
        "--enable-preview".into(),
        format!("-javaagent:{}", agent.display()),
        "-cp".into(),
        out.display().to_string(),
        "JShellDriver".into(),
        training.display().to_string(),
        "/dev/null".into(),
    ];
    run_step(runner, &argv, env, staging, runtimes_dir).await?;
    let list = std::fs::read_to_string(&recorded)
        .map_err(io_context(format!("cannot read {}", recorded.display())))?;
    let jdk_only: String = list
        .lines()
        .filter(|l| !l.contains("JShellDriver") && !l.contains("REPL/"))
        .map(|l| format!("{l}\n"))
        .collect();
    let class_list = src_dir.join("classes.jdk");
    std::fs::write(&class_list, jdk_only)
        .map_err(io_context(format!("cannot write {}", class_list.display())))?;
    let archive = out.join(jshell::ARCHIVE_FILE);
    let argv: Vec<String> = vec![
        java.display().to_string(),
        "-Xshare:dump".into(),
        format!("-XX:SharedClassListFile={}", class_list.display()),
        format!("-XX:SharedArchiveFile={}", archive.display()),
        "-XX:+UseSerialGC".into(),
    ];
    run_step(runner, &argv, env, staging, runtimes_dir).await?;

    let stamp = out.join(jshell::DRIVER_SOURCE_FILE);
    std::fs::write(&stamp, jshell::DRIVER)
        .map_err(io_context(format!("cannot write {}", stamp.display())))?;
    progress(Progress::Finished {
        step: Step::Driver,
        files: 0,
    });
    Ok(())
}

async fn run_step(
    runner: &dyn BuildRunner,
    argv: &[String],
    env: &[(String, String)],
    staging: &Path,
    runtimes_dir: &Path,
) -> Result<()> {
    runner
        .run_build_step(argv, env, staging, runtimes_dir)
        .await
        .map_err(|message| InstallError::BuildStep {
            argv: argv.join(" "),
            message,
        })
}

/// Copies the recipe's entries; returns the host paths copied (after glob expansion).
fn copy_entries(recipe: &Recipe, copier: &mut Copier<'_>) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    for entry in &recipe.copy {
        let (exclude, dereference_external) = match entry {
            CopyEntry::Path(_) => (Vec::new(), false),
            CopyEntry::Detailed {
                exclude,
                dereference_external,
                ..
            } => (exclude.clone(), *dereference_external),
        };
        let options = CopyOptions {
            exclude: exclude
                .into_iter()
                .chain(recipe.exclude.iter().cloned())
                .collect(),
            dereference_external,
        };
        let pattern = Path::new(entry.path());
        let paths = if has_wildcard(entry.path()) {
            let found = glob(pattern)
                .map_err(io_context(format!("cannot expand {}", pattern.display())))?;
            if found.is_empty() {
                return Err(missing_host_file(pattern, &recipe.packages));
            }
            found
        } else {
            vec![pattern.to_owned()]
        };
        for path in paths {
            copier.copy(&path, &options).map_err(|e| match e {
                CopyError::Missing { path } => missing_host_file(&path, &recipe.packages),
                e => InstallError::Copy(e),
            })?;
            copied.push(path.display().to_string());
        }
    }
    Ok(copied)
}

/// The error for a host path a recipe needs that is not there, naming the Debian
/// package to install ([`debian_package`]), else the recipe's `packages:`.
fn missing_host_file(path: &Path, recipe_packages: &[String]) -> InstallError {
    let hint = match debian_package(path, recipe_packages) {
        Some(p) => format!("install the Debian package {p} (apt-get install {p})"),
        None if !recipe_packages.is_empty() => format!(
            "install the Debian package that provides it (the recipe's packages: {})",
            recipe_packages.join(", ")
        ),
        None => "install the package that provides it".to_owned(),
    };
    InstallError::MissingHostFile {
        path: path.to_owned(),
        hint,
    }
}

/// The Debian (12) package that provides `path`, for the host paths the shipped
/// recipes copy or run: what `dpkg -S` names, except where another package gives
/// the recipe the rest of what it copies too (`python3.11` for its interpreter,
/// the JDK for the JVM's files).
fn debian_package(path: &Path, recipe_packages: &[String]) -> Option<String> {
    const COREUTILS: &[&str] = &[
        "true", "false", "cat", "ls", "id", "env", "sleep", "head", "tail", "yes", "dd", "echo",
        "cp", "mv", "rm", "mkdir", "wc", "sort", "uniq", "cut", "tr", "date", "uname", "tee",
        "touch", "printf", "seq", "basename", "dirname", "timeout",
    ];
    let p = path.to_str()?;
    // Merged /usr: /bin/x is /usr/bin/x, /lib/x is /usr/lib/x.
    let merged;
    let p = if p.starts_with("/bin/") || p.starts_with("/lib/") || p.starts_with("/sbin/") {
        merged = format!("/usr{p}");
        merged.as_str()
    } else {
        p
    };
    // `3.11` in `python3.11`, `/usr/lib/python3.11/...`.
    let python_version = |rest: &str| {
        let v = rest.split('/').next().unwrap_or_default();
        let (major, minor) = v.split_once('.')?;
        (!major.is_empty()
            && !minor.is_empty()
            && major
                .bytes()
                .chain(minor.bytes())
                .all(|b| b.is_ascii_digit()))
        .then(|| v.to_owned())
    };
    let package = match p {
        "/usr/bin/sh" | "/usr/bin/dash" => "dash".to_owned(),
        "/usr/bin/python3" => "python3-minimal".to_owned(),
        "/usr/bin/node" | "/usr/bin/nodejs" => "nodejs".to_owned(),
        "/etc/ssl/certs/ca-certificates.crt" => "ca-certificates".to_owned(),
        "/etc/ssl/openssl.cnf" => "openssl".to_owned(),
        "/usr/bin/java" => recipe_packages
            .iter()
            .find(|p| p.starts_with("openjdk-"))
            .cloned()
            .unwrap_or_else(|| "default-jre-headless".to_owned()),
        _ if p == "/usr/lib/ssl" || p.starts_with("/usr/lib/ssl/") => "openssl".to_owned(),
        _ if p.ends_with("/libgcc_s.so.1") => "libgcc-s1".to_owned(),
        _ => {
            if let Some(tool) = p.strip_prefix("/usr/bin/") {
                if COREUTILS.contains(&tool) {
                    return Some("coreutils".to_owned());
                }
                return tool
                    .strip_prefix("python")
                    .and_then(python_version)
                    .map(|v| format!("python{v}"));
            }
            if let Some(rest) = p.strip_prefix("/usr/lib/python") {
                return python_version(rest).map(|v| format!("libpython{v}-stdlib"));
            }
            if let Some(rest) = p.strip_prefix("/etc/python") {
                return python_version(rest).map(|v| format!("libpython{v}-minimal"));
            }
            let rest = p.strip_prefix("/usr/lib/jvm/java-")?;
            let (major, _) = rest.split_once("-openjdk")?;
            if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            format!("openjdk-{major}-jdk-headless")
        }
    };
    Some(package)
}

/// Copies the libraries every native ELF file in `isolated` needs. Returns how many
/// libraries came from the host, and warnings.
fn copy_elf_deps(isolated: &Path, copier: &mut Copier<'_>) -> Result<(usize, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut roots = Vec::new();
    let native = elf::host_machine();
    for file in regular_files(isolated)
        .map_err(io_context(format!("cannot list {}", isolated.display())))?
    {
        if !elf::is_elf(&file).map_err(io_context(format!("cannot read {}", file.display())))? {
            continue;
        }
        match elf::read(&file) {
            Ok(info) if Some((info.machine, info.is_64)) == native => roots.push(file),
            Ok(_) => warnings.push(format!(
                "{}: not built for this machine, its libraries are not copied",
                file.display()
            )),
            Err(e) => warnings.push(format!(
                "{}: unreadable ELF file, its libraries are not copied ({e})",
                file.display()
            )),
        }
    }
    let resolver = Resolver::from_host()
        .map_err(InstallError::Elf)?
        .with_overlay(isolated);
    let closure = resolver.closure(&roots).map_err(InstallError::Elf)?;
    if !closure.missing.is_empty() {
        let list: Vec<String> = closure
            .missing
            .iter()
            .map(|m| {
                let by = m
                    .needed_by
                    .strip_prefix(isolated)
                    .map(|p| Path::new("/").join(p))
                    .unwrap_or(m.needed_by.clone());
                format!("{} (needed by {})", m.name, by.display())
            })
            .collect();
        return Err(InstallError::MissingLibraries(list.join(", ")));
    }
    let mut from_host = 0;
    for library in closure
        .libraries
        .iter()
        .filter(|l| !l.starts_with(isolated))
    {
        copier
            .copy(library, &CopyOptions::default())
            .map_err(InstallError::Copy)?;
        from_host += 1;
    }
    Ok((from_host, warnings))
}

/// Regular files below `dir` (symlinks not followed).
fn regular_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Warnings for symlinks in `isolated` that point nowhere (inside the sandbox).
fn dangling_links(isolated: &Path) -> Result<Vec<String>> {
    let mut dangling = Vec::new();
    let mut stack = vec![isolated.to_owned()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(io_context(format!("cannot list {}", d.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_context(format!("cannot list {}", d.display())))?;
            let kind = entry.file_type().map_err(io_context(format!(
                "cannot stat {}",
                entry.path().display()
            )))?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_symlink() {
                let rel = entry
                    .path()
                    .strip_prefix(isolated)
                    .map(Path::to_owned)
                    .unwrap_or_default();
                let ok = resolve_in_jail(isolated, &rel)
                    .map(|p| std::fs::symlink_metadata(isolated.join(p)).is_ok())
                    .unwrap_or(false);
                if !ok {
                    dangling.push(format!("/{}", rel.display()));
                }
            }
        }
    }
    dangling.sort();
    Ok(if dangling.is_empty() {
        Vec::new()
    } else {
        let shown: Vec<_> = dangling.iter().take(10).cloned().collect();
        let more = if dangling.len() > 10 {
            format!(" and {} more", dangling.len() - 10)
        } else {
            String::new()
        };
        vec![format!(
            "{} symlinks point nowhere in the sandbox: {}{more}",
            dangling.len(),
            shown.join(", ")
        )]
    })
}

/// One mount per top-level entry of `isolated`: directories as they are, symlinked
/// ones (merged /usr: lib -> usr/lib) as their target, since the sandbox root is
/// made of binds and cannot hold the symlink itself.
fn root_mounts(isolated: &Path) -> Result<Vec<MountFile>> {
    let mut names: Vec<String> = std::fs::read_dir(isolated)
        .map_err(io_context(format!("cannot list {}", isolated.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut mounts = Vec::new();
    for name in names {
        let resolved = match resolve_in_jail(isolated, Path::new(&name)) {
            Ok(p) if !p.as_os_str().is_empty() => p,
            _ => continue,
        };
        if !isolated.join(&resolved).is_dir() {
            continue;
        }
        mounts.push(MountFile {
            source: format!("{ISOLATED_DIR}/{}", resolved.display()),
            target: format!("/{name}"),
            readonly: true,
        });
    }
    Ok(mounts)
}

async fn detect_version(source: &VersionSource) -> Result<String> {
    let version = match source {
        VersionSource::Fixed(v) => v.clone(),
        VersionSource::Command { command, regex } => {
            let pattern =
                regex::Regex::new(regex).map_err(|source| InstallError::VersionRegex {
                    regex: regex.clone(),
                    source,
                })?;
            let shown = command.join(" ");
            // A read-only query of our own build host's interpreter; no recipe code runs.
            let mut cmd = tokio::process::Command::new(&command[0]);
            cmd.args(&command[1..])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("LANG", "C.UTF-8")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let output = tokio::time::timeout(VERSION_TIMEOUT, cmd.output())
                .await
                .map_err(|_| InstallError::VersionTimeout {
                    command: shown.clone(),
                })?
                .map_err(|source| InstallError::VersionCommand {
                    command: shown.clone(),
                    source,
                })?;
            // Java prints its version on stderr.
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            if !output.status.success() {
                return Err(InstallError::VersionStatus {
                    command: shown,
                    status: output.status.to_string(),
                    output: text.trim().to_owned(),
                });
            }
            let captures =
                pattern
                    .captures(&text)
                    .ok_or_else(|| InstallError::VersionNotFound {
                        regex: regex.clone(),
                        output: text.trim().to_owned(),
                    })?;
            captures
                .get(1)
                .or_else(|| captures.get(0))
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default()
        }
    };
    if parse_version(&version).is_none()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~_-".contains(c))
    {
        return Err(InstallError::BadVersion(version));
    }
    Ok(version)
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
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Stands in for the sandbox: build steps are refused, verification answers with
    /// a fixed result and records what it was asked.
    struct FakeRunner {
        verify_result: std::result::Result<String, String>,
        seen: Mutex<Vec<(String, PathBuf)>>,
        steps: Mutex<Vec<Vec<String>>>,
    }

    impl FakeRunner {
        fn answering(result: std::result::Result<&str, &str>) -> Self {
            FakeRunner {
                verify_result: result.map(str::to_owned).map_err(str::to_owned),
                seen: Mutex::new(Vec::new()),
                steps: Mutex::new(Vec::new()),
            }
        }
    }

    impl BuildRunner for FakeRunner {
        fn run_build_step<'a>(
            &'a self,
            argv: &'a [String],
            _env: &'a [(String, String)],
            writable: &'a Path,
            hidden: &'a Path,
        ) -> Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send + 'a>> {
            assert!(writable.starts_with(hidden));
            self.steps.lock().unwrap().push(argv.to_vec());
            Box::pin(async { Ok(()) })
        }

        fn verify<'a>(
            &'a self,
            runtime: &'a Runtime,
            code: &'a str,
        ) -> Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send + 'a>>
        {
            self.seen
                .lock()
                .unwrap()
                .push((code.to_owned(), runtime.dir().to_owned()));
            let result = self.verify_result.clone();
            Box::pin(async move { result })
        }
    }

    fn recipes_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes")
    }

    fn shell_recipe_with(tmp: &Path, replace: &str, by: &str) -> PathBuf {
        let text = std::fs::read_to_string(recipes_dir().join("shell.yml")).unwrap();
        assert!(text.contains(replace), "{replace}");
        let path = tmp.join("shell.yml");
        std::fs::write(&path, text.replace(replace, by)).unwrap();
        path
    }

    #[tokio::test]
    async fn installs_the_shell_recipe_and_keeps_the_old_version_on_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let runtimes = tmp.path().join("runtimes");
        let runner = FakeRunner::answering(Ok("2\n"));
        let events = Mutex::new(Vec::new());
        let record = |p: Progress| events.lock().unwrap().push(p);
        let rt = install(
            &recipes_dir().join("shell.yml"),
            &runtimes,
            &runner,
            &record,
        )
        .await
        .unwrap();

        assert_eq!(rt.name(), "shell");
        assert_eq!(rt.dir(), runtimes.join("shell"));
        assert_eq!(rt.evaluator().kind, EvaluatorKind::Command);
        assert_eq!(rt.evaluator().program, "/bin/sh");
        assert_eq!(
            rt.semver().major,
            parse_version(rt.version()).unwrap().major
        );
        let iso = runtimes.join("shell/isolated");
        // Merged /usr: canonical files, symlinks for the other names, mounts for both.
        assert_eq!(
            std::fs::read_link(iso.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert!(std::fs::symlink_metadata(iso.join("usr/bin/dash"))
            .unwrap()
            .is_file());
        assert_eq!(
            std::fs::read_link(iso.join("usr/bin/sh")).unwrap(),
            Path::new("dash")
        );
        assert!(iso.join("usr/lib/x86_64-linux-gnu/libc.so.6").is_file());
        assert!(iso.join("lib64/ld-linux-x86-64.so.2").exists());
        let targets: Vec<_> = rt
            .mounts()
            .iter()
            .map(|m| m.target.to_str().unwrap().to_owned())
            .collect();
        for t in ["/bin", "/lib", "/lib64", "/usr"] {
            assert!(targets.contains(&t.to_owned()), "{targets:?}");
        }
        let lib = rt
            .mounts()
            .iter()
            .find(|m| m.target == Path::new("/lib"))
            .unwrap();
        assert_eq!(lib.source, iso.join("usr/lib").canonicalize().unwrap());
        // Every link is relative and stays inside (the packer refuses anything else).
        assert!(dangling_links(&iso).unwrap().is_empty());
        let original = std::fs::read_to_string(runtimes.join("shell").join(ORIGINAL_FILE)).unwrap();
        assert!(
            original.contains("copied_from_host:") && original.contains("- /usr/bin/cat"),
            "{original}"
        );
        // Verification ran in the staging directory, not the final one.
        let seen = runner.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0]
            .1
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".staging-shell-"));
        assert_eq!(crate::fsutil::sorted_names(&runtimes), ["shell"]);
        let events = events.lock().unwrap().clone();
        assert!(events
            .iter()
            .any(|e| matches!(e, Progress::Finished { step: Step::Copy, files } if *files >= 10)));
        assert!(events
            .iter()
            .any(|e| matches!(e, Progress::Finished { step: Step::ElfDeps, files } if *files > 0)));
        assert!(events.contains(&Progress::Finished {
            step: Step::Verify,
            files: 0
        }));

        // A failing rebuild leaves the installed version untouched and no staging dir.
        std::fs::write(iso.join("marker"), "old").unwrap();
        let failing = FakeRunner::answering(Err("sandbox exploded"));
        let err = install(
            &recipes_dir().join("shell.yml"),
            &runtimes,
            &failing,
            &|_| {},
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, InstallError::Verify(m) if m == "sandbox exploded"),
            "{err}"
        );
        let wrong = FakeRunner::answering(Ok("3\n"));
        let err = install(&recipes_dir().join("shell.yml"), &runtimes, &wrong, &|_| {})
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "verification printed \"3\\n\", expected \"2\\n\""
        );
        assert_eq!(std::fs::read_to_string(iso.join("marker")).unwrap(), "old");
        assert_eq!(crate::fsutil::sorted_names(&runtimes), ["shell"]);

        // A successful rebuild replaces it.
        install(
            &recipes_dir().join("shell.yml"),
            &runtimes,
            &runner,
            &|_| {},
        )
        .await
        .unwrap();
        assert!(!iso.join("marker").exists());
        assert_eq!(crate::fsutil::sorted_names(&runtimes), ["shell"]);

        remove(&runtimes, "shell").unwrap();
        assert!(crate::fsutil::sorted_names(&runtimes).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn build_steps_go_through_the_runner_and_failures_clean_up() {
        let tmp = tempfile::tempdir().unwrap();
        let runtimes = tmp.path().join("runtimes");
        let recipe = shell_recipe_with(
            tmp.path(),
            "elf_deps: true\n",
            "elf_deps: true\npip: [six==1.16.0]\npost_install:\n  - [/usr/bin/true, \"{isolated}/x\"]\n",
        );
        let runner = FakeRunner::answering(Ok("2\n"));
        install(&recipe, &runtimes, &runner, &|_| {}).await.unwrap();
        let steps = runner.steps.lock().unwrap().clone();
        assert_eq!(steps.len(), 2);
        assert_eq!(&steps[0][..3], ["/bin/sh", "-m", "pip"]);
        assert!(
            steps[0]
                .iter()
                .any(|a| a.ends_with("/isolated/usr/lib/python3/dist-packages")),
            "{steps:?}"
        );
        assert_eq!(steps[0].last().unwrap(), "six==1.16.0");
        assert!(
            steps[1][1].contains("/.staging-shell-") && steps[1][1].ends_with("/isolated/x"),
            "{steps:?}"
        );

        struct FailingSteps;
        impl BuildRunner for FailingSteps {
            fn run_build_step<'a>(
                &'a self,
                _: &'a [String],
                _: &'a [(String, String)],
                _: &'a Path,
                _: &'a Path,
            ) -> Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send + 'a>>
            {
                Box::pin(async { Err("no network".to_owned()) })
            }
            fn verify<'a>(
                &'a self,
                _: &'a Runtime,
                _: &'a str,
            ) -> Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send + 'a>>
            {
                Box::pin(async { Ok("2\n".to_owned()) })
            }
        }
        let err = install(&recipe, &runtimes, &FailingSteps, &|_| {})
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("build step `/bin/sh -m pip install"),
            "{err}"
        );
        assert!(err.to_string().ends_with("failed: no network"), "{err}");
        assert_eq!(crate::fsutil::sorted_names(&runtimes), ["shell"]);
    }

    #[tokio::test]
    async fn recipe_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let runtimes = tmp.path().join("runtimes");
        let runner = FakeRunner::answering(Ok("2\n"));
        let cases = [
            (
                "name: shell",
                "name: ../etc",
                "name: `../etc` does not match",
            ),
            (
                "elf_deps: true",
                "elf_deps: true\nshell_script: x",
                "is not valid",
            ),
            (
                "  - /usr/bin/cat\n",
                "  - /usr/bin/no-such-tool\n",
                "/usr/bin/no-such-tool does not exist on this host: install the Debian package \
                 that provides it (the recipe's packages: dash, coreutils)",
            ),
            (
                "  - /usr/bin/cat\n",
                "  - usr/bin/cat\n",
                "copy[2]: `usr/bin/cat` must be an absolute host path",
            ),
            (
                "coreutils\\\\) (\\\\S+)",
                "nomatch (\\\\S+)",
                "version regex `nomatch (\\S+)` does not match",
            ),
            ("coreutils\\\\) (\\\\S+)", "(", "invalid version regex `(`"),
        ];
        for (from, to, expected) in cases {
            let recipe = shell_recipe_with(tmp.path(), from, to);
            let err = install(&recipe, &runtimes, &runner, &|_| {})
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{from} -> {to}: {err}");
            assert!(
                !runtimes.exists() || crate::fsutil::sorted_names(&runtimes).is_empty(),
                "{:?}",
                crate::fsutil::sorted_names(&runtimes)
            );
        }
        let other = if std::env::consts::ARCH == "s390x" {
            "riscv64"
        } else {
            "s390x"
        };
        let recipe = shell_recipe_with(
            tmp.path(),
            "architectures: [amd64, arm64]",
            &format!("architectures: [{other}]"),
        );
        let err = install(&recipe, &runtimes, &runner, &|_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "requirements.architectures: {other} does not include this host"
            )),
            "{err}"
        );
    }

    #[test]
    fn a_missing_host_file_names_its_debian_package() {
        let pkgs = |p: &str| debian_package(Path::new(p), &["openjdk-17-jdk-headless".into()]);
        for (path, package) in [
            ("/usr/bin/python3", "python3-minimal"),
            ("/usr/bin/python3.11", "python3.11"),
            ("/usr/lib/python3.11", "libpython3.11-stdlib"),
            (
                "/usr/lib/python3.11/json/__init__.py",
                "libpython3.11-stdlib",
            ),
            ("/etc/python3.11", "libpython3.11-minimal"),
            ("/usr/lib/ssl", "openssl"),
            ("/etc/ssl/openssl.cnf", "openssl"),
            ("/etc/ssl/certs/ca-certificates.crt", "ca-certificates"),
            ("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1", "libgcc-s1"),
            ("/bin/sh", "dash"),
            ("/bin/true", "coreutils"),
            ("/usr/bin/dd", "coreutils"),
            ("/usr/bin/java", "openjdk-17-jdk-headless"),
            (
                "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
                "openjdk-17-jdk-headless",
            ),
            ("/usr/bin/node", "nodejs"),
        ] {
            assert_eq!(pkgs(path).as_deref(), Some(package), "{path}");
        }
        assert_eq!(pkgs("/usr/lib/python3/dist-packages"), None);
        assert_eq!(pkgs("/opt/thing"), None);
        // Every path the shipped recipes copy or run has a package.
        for entry in std::fs::read_dir(recipes_dir()).unwrap() {
            let path = entry.unwrap().path();
            let recipe = load_recipe(&path).unwrap();
            let mut paths: Vec<String> = recipe.copy.iter().map(|c| c.path().to_owned()).collect();
            paths.push(recipe.evaluator.program.clone());
            if let VersionSource::Command { command, .. } = &recipe.version {
                paths.push(command[0].clone());
            }
            for p in paths {
                assert!(
                    debian_package(Path::new(&p), &recipe.packages).is_some(),
                    "{}: {p}",
                    path.display()
                );
            }
        }
        let err = missing_host_file(Path::new("/usr/bin/python3"), &[]);
        assert_eq!(
            err.to_string(),
            "/usr/bin/python3 does not exist on this host: install the Debian package \
             python3-minimal (apt-get install python3-minimal)"
        );
    }

    #[tokio::test]
    async fn a_recipe_copying_a_missing_file_names_the_package() {
        let tmp = tempfile::tempdir().unwrap();
        let recipe = shell_recipe_with(
            tmp.path(),
            "  - /usr/bin/dd\n",
            "  - /usr/bin/dd\n  - /usr/bin/python3.99\n",
        );
        let runner = FakeRunner::answering(Ok("2\n"));
        let err = install(&recipe, &tmp.path().join("runtimes"), &runner, &|_| {})
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/usr/bin/python3.99 does not exist on this host: install the Debian package \
             python3.99 (apt-get install python3.99)"
        );
        let recipe = shell_recipe_with(
            tmp.path(),
            "command: [/usr/bin/true, --version]",
            "command: [/usr/bin/python3.99, --version]",
        );
        let err = install(&recipe, &tmp.path().join("runtimes"), &runner, &|_| {})
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/usr/bin/python3.99 does not exist on this host"),
            "{err}"
        );
    }

    #[test]
    fn remove_checks_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        for bad in ["../etc", "/etc", "", ".staging-x", "a/b"] {
            assert!(
                matches!(remove(tmp.path(), bad), Err(InstallError::InvalidName(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            remove(tmp.path(), "missing"),
            Err(InstallError::NotInstalled(_))
        ));
        std::fs::create_dir_all(tmp.path().join("rt/isolated")).unwrap();
        remove(tmp.path(), "rt").unwrap();
        assert_eq!(crate::fsutil::sorted_names(tmp.path()), ["etc"]);
    }

    #[test]
    fn every_recipe_parses() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(recipes_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yml") {
                let recipe = load_recipe(&path)
                    .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)));
                assert_eq!(
                    Some(recipe.name.as_str()),
                    path.file_stem().and_then(|s| s.to_str())
                );
                names.push(recipe.name);
            }
        }
        names.sort();
        assert_eq!(
            names,
            [
                "node-20",
                "openjdk-17",
                "python-3.11",
                "python-3.11-ml",
                "shell"
            ]
        );
    }

    #[tokio::test]
    async fn installs_the_python_recipe() {
        // About a second: a real stdlib copy with lib-dynload's library closure.
        let tmp = tempfile::tempdir().unwrap();
        let runner = FakeRunner::answering(Ok("2\n"));
        let recipe = recipes_dir().join("python-3.11.yml");
        let rt = install(&recipe, tmp.path(), &runner, &|_| {})
            .await
            .unwrap();
        assert_eq!(rt.evaluator().kind, EvaluatorKind::Python);
        assert_eq!(rt.environment()["PYTHONDONTWRITEBYTECODE"], "1");
        let iso = tmp.path().join("python-3.11/isolated");
        let stdlib = iso.join("usr/lib/python3.11");
        assert!(stdlib.join("os.py").is_file());
        assert!(
            stdlib.join("__pycache__").is_dir(),
            "bytecode caches are kept"
        );
        assert!(!stdlib.join("test").exists() && !stdlib.join("ensurepip").exists());
        assert!(!stdlib.join("config-3.11-x86_64-linux-gnu").exists());
        assert!(stdlib.join("lib-dynload").read_dir().unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("_ssl.")
        }));
        // _ssl's libraries come along through elf_deps; so do the certificates.
        let multiarch = iso.join("usr/lib/x86_64-linux-gnu");
        assert!(
            multiarch.join("libssl.so.3").exists() && multiarch.join("libcrypto.so.3").exists()
        );
        assert!(iso.join("etc/ssl/certs/ca-certificates.crt").is_file());
        assert!(
            iso.join("usr/lib/ssl/cert.pem").exists(),
            "relative link resolves inside"
        );
        assert!(!iso.join("etc/passwd").exists());
        let targets: Vec<_> = rt
            .mounts()
            .iter()
            .map(|m| m.target.display().to_string())
            .collect();
        assert_eq!(targets, ["/etc", "/lib", "/lib64", "/usr"]);
    }

    #[test]
    fn install_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let runner = FakeRunner::answering(Ok(""));
        assert_send(install(Path::new("/x"), Path::new("/y"), &runner, &|_| {}));
    }
}
