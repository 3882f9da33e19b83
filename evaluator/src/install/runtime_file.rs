//! The built runtime's runtime.yml (sandbox paths) and runtime.yml.original (host
//! paths, for audit), derived from the recipe and from what `isolated/` holds.

use std::path::Path;

use serde::Serialize;

use super::recipe::Recipe;
use super::{io_context, InstallError, Result};
use crate::fsutil::resolve_in_jail;
use crate::runtime::config::{
    EvaluatorFile, MountFile, RequirementsFile, RuntimeFile, CONFIG_FILE, ISOLATED_DIR,
};

/// The host-path view kept next to runtime.yml.
pub const ORIGINAL_FILE: &str = "runtime.yml.original";

/// runtime.yml of the runtime `recipe` builds in `isolated`: a read-only mount per
/// top-level entry of `isolated/`, then the recipe's own.
pub(super) fn runtime_file(
    recipe: &Recipe,
    version: &str,
    architectures: &[String],
    isolated: &Path,
) -> Result<RuntimeFile> {
    let mut mounts = root_mounts(isolated)?;
    mounts.extend(recipe.mounts.iter().map(|m| MountFile {
        source: m.source.clone(),
        target: m.target.clone(),
        readonly: m.readonly,
    }));
    Ok(RuntimeFile {
        name: recipe.name.clone(),
        version: version.to_owned(),
        description: recipe.description.clone(),
        language: recipe.language.clone(),
        evaluator: EvaluatorFile {
            kind: recipe.evaluator.kind,
            program: recipe.evaluator.program.clone(),
            args: recipe.evaluator.args.clone(),
        },
        mounts,
        environment: recipe.environment.clone(),
        access_list: recipe.access_list.clone(),
        requirements: RequirementsFile {
            architectures: architectures.to_vec(),
        },
        packages: recipe.packages.clone(),
    })
}

/// Writes `file` as `staging`'s runtime.yml, and next to it the same with host paths
/// and the host paths `copied` from.
pub(super) fn write(staging: &Path, file: &RuntimeFile, copied: Vec<String>) -> Result<()> {
    write_yaml(&staging.join(CONFIG_FILE), file, "")?;
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
    )
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

/// Warnings for symlinks in `isolated` that point nowhere (inside the sandbox).
pub(super) fn dangling_links(isolated: &Path) -> Result<Vec<String>> {
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
