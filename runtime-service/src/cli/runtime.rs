//! `jsheets-runtime runtime …`: install, list, inspect, test, remove, pack and
//! unpack runtimes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use evaluator::install;
use evaluator::runtime::{self, Runtime};
use evaluator::sandbox::{Limits, Status};
use evaluator::snippet::Component;

use super::local::{evaluate_printing, load_registry, print_outcome};
use crate::report;
use crate::sandboxes::sandboxes;

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

pub async fn run(
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
            println!("{}", describe(r));
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
                Default::default(),
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
            install::remove(runtimes_dir, &name)?;
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

/// A runtime described for people (`runtime info`).
fn describe(runtime: &Runtime) -> String {
    let mut s = format!(
        "name: {}\nversion: {}\nlanguage: {}\ndescription: {}\nevaluator: {} ({})\ndirectory: {}\n",
        runtime.name(),
        runtime.version(),
        runtime.language(),
        runtime.description(),
        runtime.evaluator().kind,
        runtime.evaluator().program,
        runtime.dir().display()
    );
    if let Some(list) = runtime.access_list() {
        s.push_str(&format!("access list: {list}\n"));
    }
    s.push_str("mounts (read-only):\n");
    for m in runtime.mounts() {
        s.push_str(&format!(
            "  {} -> {}\n",
            m.source.display(),
            m.target.display()
        ));
    }
    s.push_str("environment:\n");
    for (k, v) in runtime.environment() {
        s.push_str(&format!("  {k}={v}\n"));
    }
    if !runtime.packages().is_empty() {
        s.push_str(&format!("packages: {}\n", runtime.packages().join(", ")));
    }
    s
}
