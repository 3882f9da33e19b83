//! The build of one runtime in its staging directory, one named step after the other:
//! copy the host files, pip, post-install commands, the language's driver, the
//! shared-library closure, runtime.yml, verification.
//!
//! Steps that run code (pip, post-install, the driver build) go through the caller's
//! [`BuildRunner`], never as plain host processes: they run code from the network.

use std::io;
use std::path::{Path, PathBuf};

use super::copy::{Copier, CopyError, CopyOptions};
use super::elf::{self, Resolver};
use super::packages::missing_host_file;
use super::recipe::{CopyEntry, Pip, Recipe};
use super::{blocking, io_context, runtime_file, BuildRunner, InstallError, Report, Result, Step};
use crate::fsutil::{glob, has_wildcard};
use crate::lang::jshell::build::DriverBuild;
use crate::lang::EvaluatorKind;
use crate::runtime::config::{CONFIG_FILE, ISOLATED_DIR};
use crate::runtime::Runtime;

/// Where pip installs by default: on Debian's default sys.path.
const DEFAULT_PIP_TARGET: &str = "/usr/lib/python3/dist-packages";

/// A runtime being built in its staging directory.
struct Build<'a> {
    recipe: &'a Recipe,
    staging: &'a Path,
    /// `isolated/` in the staging directory: the runtime's files.
    isolated: PathBuf,
    /// HOME and TMPDIR of the build steps, removed before runtime.yml is written.
    tmp: PathBuf,
    runtimes_dir: &'a Path,
    runner: &'a dyn BuildRunner,
    report: Report<'a>,
}

/// Everything up to and including verification, inside `staging`.
pub(super) async fn build(
    recipe: &Recipe,
    version: &str,
    architectures: &[String],
    staging: &Path,
    runtimes_dir: &Path,
    runner: &dyn BuildRunner,
    report: Report<'_>,
) -> Result<()> {
    let build = Build {
        recipe,
        staging,
        isolated: staging.join(ISOLATED_DIR),
        tmp: staging.join(".tmp"),
        runtimes_dir,
        runner,
        report,
    };
    std::fs::create_dir(&build.isolated).map_err(io_context(format!(
        "cannot create {}",
        build.isolated.display()
    )))?;
    let on_copy = |count| report.files(Step::Copy, count);
    let mut copier = Copier::new(&build.isolated, &on_copy);

    let copied = build.copy(&mut copier)?;
    build.pip(&copier).await?;
    build.post_install().await?;
    build.driver(&copier).await?;
    build.remove_tmp()?;
    build.elf_deps(&mut copier)?;
    let runtime = build.config(version, architectures, copied)?;
    build.verify(&runtime).await
}

impl Build<'_> {
    /// Copies the recipe's host paths into `isolated/`; returns the host paths copied.
    fn copy(&self, copier: &mut Copier<'_>) -> Result<Vec<String>> {
        self.report
            .started(Step::Copy, format!("{} entries", self.recipe.copy.len()));
        let copied = blocking(|| copy_entries(self.recipe, copier))?;
        for message in copier.take_warnings() {
            self.report.warning(Step::Copy, message);
        }
        self.report.finished(Step::Copy, copier.files());
        Ok(copied)
    }

    /// Installs the recipe's pip requirements into the runtime.
    async fn pip(&self, copier: &Copier<'_>) -> Result<()> {
        let Some(pip) = &self.recipe.pip else {
            return Ok(());
        };
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
        let python = python.unwrap_or_else(|| self.recipe.evaluator.program.clone());
        let target = target.unwrap_or_else(|| DEFAULT_PIP_TARGET.to_owned());
        let target = copier.dest(Path::new(&target));
        self.report.started(Step::Pip, requirements.join(" "));
        std::fs::create_dir_all(&target)
            .map_err(io_context(format!("cannot create {}", target.display())))?;
        self.make_tmp()?;
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
        self.run(&argv).await?;
        self.report.finished(Step::Pip, 0);
        Ok(())
    }

    /// Runs the recipe's post-install commands, `{isolated}` and `{runtime}` substituted.
    async fn post_install(&self) -> Result<()> {
        if self.recipe.post_install.is_empty() {
            return Ok(());
        }
        self.report.started(
            Step::PostInstall,
            format!("{} commands", self.recipe.post_install.len()),
        );
        self.make_tmp()?;
        for argv in &self.recipe.post_install {
            let argv: Vec<String> = argv
                .iter()
                .map(|a| {
                    a.replace("{isolated}", &self.isolated.display().to_string())
                        .replace("{runtime}", &self.staging.display().to_string())
                })
                .collect();
            self.run(&argv).await?;
        }
        self.report.finished(Step::PostInstall, 0);
        Ok(())
    }

    /// Builds the language's driver into the runtime, for the kinds that have one
    /// built at install.
    async fn driver(&self, copier: &Copier<'_>) -> Result<()> {
        if self.recipe.evaluator.kind != EvaluatorKind::Jshell {
            return Ok(());
        }
        self.report.started(Step::Driver, "JShell driver");
        let driver = DriverBuild::new(
            &self.recipe.evaluator.program,
            |path| copier.dest(path),
            &self.tmp,
        );
        driver
            .run(|argv| async move { self.run(&argv).await })
            .await?;
        self.report.finished(Step::Driver, 0);
        Ok(())
    }

    fn make_tmp(&self) -> Result<()> {
        std::fs::create_dir_all(&self.tmp)
            .map_err(io_context(format!("cannot create {}", self.tmp.display())))
    }

    fn remove_tmp(&self) -> Result<()> {
        if self.tmp.exists() {
            std::fs::remove_dir_all(&self.tmp)
                .map_err(io_context(format!("cannot remove {}", self.tmp.display())))?;
        }
        Ok(())
    }

    /// Copies the libraries the runtime's ELF files need from the host.
    fn elf_deps(&self, copier: &mut Copier<'_>) -> Result<()> {
        if !self.recipe.elf_deps {
            return Ok(());
        }
        self.report.started(Step::ElfDeps, "");
        let before = copier.files();
        let (libraries, warnings) = blocking(|| copy_elf_deps(&self.isolated, copier))?;
        for message in warnings.into_iter().chain(copier.take_warnings()) {
            self.report.warning(Step::ElfDeps, message);
        }
        self.report.note(
            Step::ElfDeps,
            format!("{libraries} libraries from the host"),
        );
        self.report.finished(Step::ElfDeps, copier.files() - before);
        Ok(())
    }

    /// Writes runtime.yml (and its host-path twin) and loads the runtime through the
    /// strict loader, from the staging directory.
    fn config(
        &self,
        version: &str,
        architectures: &[String],
        copied: Vec<String>,
    ) -> Result<Runtime> {
        self.report.started(Step::Config, CONFIG_FILE);
        for message in blocking(|| runtime_file::dangling_links(&self.isolated))? {
            self.report.warning(Step::Config, message);
        }
        let file = runtime_file::runtime_file(self.recipe, version, architectures, &self.isolated)?;
        runtime_file::write(self.staging, &file, copied)?;
        let (runtime, warnings) =
            Runtime::load_named(self.staging, &self.recipe.name).map_err(InstallError::Config)?;
        for w in warnings {
            self.report.warning(Step::Config, w.to_string());
        }
        self.report.finished(Step::Config, 0);
        Ok(runtime)
    }

    /// Runs the recipe's snippet in the built runtime; it must print what the recipe
    /// expects.
    async fn verify(&self, runtime: &Runtime) -> Result<()> {
        let verify = &self.recipe.verify;
        self.report.started(Step::Verify, verify.code.clone());
        let stdout = self
            .runner
            .verify(runtime, &verify.code)
            .await
            .map_err(InstallError::Verify)?;
        if stdout != verify.expect_stdout {
            return Err(InstallError::VerifyOutput {
                expected: verify.expect_stdout.clone(),
                got: stdout,
            });
        }
        self.report.finished(Step::Verify, 0);
        Ok(())
    }

    /// Runs one build command through the runner: the staging directory writable,
    /// the runtimes directory hidden.
    async fn run(&self, argv: &[String]) -> Result<()> {
        let env = self.env();
        self.runner
            .run_build_step(argv, &env, self.staging, self.runtimes_dir)
            .await
            .map_err(|source| InstallError::BuildStep {
                argv: argv.join(" "),
                source,
            })
    }

    /// The environment of build commands.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOME".into(), self.tmp.display().to_string()),
            ("TMPDIR".into(), self.tmp.display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
        ]
    }
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
