//! Version detection: the version a recipe fixes, or the one a host command prints.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::packages::missing_host_file;
use super::recipe::{Recipe, VersionSource};
use super::{InstallError, Result};
use crate::runtime::parse_version;

/// Longest a version command may run.
pub(super) const TIMEOUT: Duration = Duration::from_secs(60);

/// The version of the runtime `recipe` builds. A version command missing from the host
/// is reported with the package that provides it.
pub(super) async fn detect(recipe: &Recipe) -> Result<String> {
    detect_version(&recipe.version)
        .await
        .map_err(|e| match (e, &recipe.version) {
            (
                InstallError::VersionCommand { source, .. },
                VersionSource::Command { command, .. },
            ) if source.kind() == io::ErrorKind::NotFound && !Path::new(&command[0]).exists() => {
                missing_host_file(Path::new(&command[0]), &recipe.packages)
            }
            (e, _) => e,
        })
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
            let output = tokio::time::timeout(TIMEOUT, cmd.output())
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
