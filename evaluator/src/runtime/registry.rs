//! The installed runtimes of one directory, and exact resolution of runtime specs.
//!
//! Specs: `name`, `name@version`, `language:version`, `language`. Versions match by
//! numeric components as a prefix (`3.11` matches 3.11.2, not 3.110.0) and the newest
//! by semver wins. Anything that does not resolve is an error listing what is
//! installed; there is no fallback to a near match.

use std::path::{Path, PathBuf};

use super::config::{ConfigError, Runtime, Warning, CONFIG_FILE};
use super::valid_name;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("`{spec}` is not a runtime spec (name, name@version, language or language:version)")]
    InvalidSpec { spec: String },
    #[error("no runtime matches `{spec}` (installed: {installed})")]
    NotFound { spec: String, installed: String },
    #[error("`{spec}` is ambiguous: {candidates} (name one of them)")]
    Ambiguous { spec: String, candidates: String },
}

/// A runtime directory that did not load.
#[derive(Debug)]
pub struct Problem {
    /// The directory's name under the runtimes directory.
    pub dir_name: String,
    pub error: ConfigError,
}

/// The runtimes of one directory, sorted by name.
#[derive(Debug, Default)]
pub struct Registry {
    dir: PathBuf,
    runtimes: Vec<Runtime>,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

impl Registry {
    /// Loads every subdirectory of `dir` that has a runtime.yml. Dot-directories
    /// (staging areas of installs in progress) are skipped; a broken runtime is
    /// recorded in [`Registry::problems`] and does not stop the others.
    pub fn load(dir: &Path) -> Registry {
        let mut registry = Registry {
            dir: dir.to_owned(),
            ..Registry::default()
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(source) => {
                registry.problems.push(Problem {
                    dir_name: String::new(),
                    error: ConfigError::Read {
                        file: dir.to_owned(),
                        source,
                    },
                });
                return registry;
            }
        };
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => names.push(entry.file_name().to_string_lossy().into_owned()),
                Err(source) => registry.problems.push(Problem {
                    dir_name: String::new(),
                    error: ConfigError::Read {
                        file: dir.to_owned(),
                        source,
                    },
                }),
            }
        }
        names.sort();
        for name in names {
            if name.starts_with('.') {
                continue;
            }
            let path = dir.join(&name);
            let is_dir = std::fs::symlink_metadata(&path)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if !is_dir {
                if path.is_dir() {
                    registry.problems.push(Problem {
                        dir_name: name,
                        error: ConfigError::Invalid {
                            file: path,
                            field: "(directory)".into(),
                            problem: "is a symlink; runtimes must be real directories".into(),
                        },
                    });
                }
                continue;
            }
            if std::fs::symlink_metadata(path.join(CONFIG_FILE)).is_err() {
                registry.warnings.push(Warning {
                    file: path,
                    field: "(directory)".into(),
                    message: format!("no {CONFIG_FILE}, skipped"),
                });
                continue;
            }
            if !valid_name(&name) {
                registry.problems.push(Problem {
                    dir_name: name.clone(),
                    error: ConfigError::Invalid {
                        file: path,
                        field: "(directory)".into(),
                        problem: format!("`{name}` is not a valid runtime name"),
                    },
                });
                continue;
            }
            match Runtime::load(&path) {
                Ok((runtime, warnings)) => {
                    registry.runtimes.push(runtime);
                    registry.warnings.extend(warnings);
                }
                Err(error) => registry.problems.push(Problem {
                    dir_name: name,
                    error,
                }),
            }
        }
        registry
    }

    /// The directory this registry was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The loaded runtimes, sorted by name.
    pub fn list(&self) -> &[Runtime] {
        &self.runtimes
    }

    pub fn get(&self, name: &str) -> Option<&Runtime> {
        self.runtimes.iter().find(|r| r.name() == name)
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// Resolves `name`, `name@version`, `language:version` or `language`.
    pub fn resolve(&self, spec: &str) -> Result<&Runtime, ResolveError> {
        let invalid = || ResolveError::InvalidSpec {
            spec: spec.to_owned(),
        };
        if spec.is_empty() || spec.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let found = if let Some((name, version)) = spec.split_once('@') {
            if name.is_empty() || version.is_empty() {
                return Err(invalid());
            }
            self.get(name).filter(|r| version_matches(r, version))
        } else if let Some((language, version)) = spec.split_once(':') {
            if language.is_empty() || version.is_empty() {
                return Err(invalid());
            }
            self.newest(spec, |r| {
                r.language() == language && version_matches(r, version)
            })?
        } else if let Some(runtime) = self.get(spec) {
            Some(runtime)
        } else {
            self.newest(spec, |r| r.language() == spec)?
        };
        found.ok_or_else(|| ResolveError::NotFound {
            spec: spec.to_owned(),
            installed: self.installed(),
        })
    }

    /// The newest matching runtime by semver; two at the same newest version are
    /// ambiguous rather than picked by name.
    fn newest(
        &self,
        spec: &str,
        matches: impl Fn(&Runtime) -> bool,
    ) -> Result<Option<&Runtime>, ResolveError> {
        let candidates: Vec<&Runtime> = self.runtimes.iter().filter(|r| matches(r)).collect();
        let Some(best) = candidates.iter().map(|r| r.semver()).max() else {
            return Ok(None);
        };
        let top: Vec<&Runtime> = candidates
            .into_iter()
            .filter(|r| r.semver() == best)
            .collect();
        if top.len() > 1 {
            let names: Vec<String> = top
                .iter()
                .map(|r| format!("{} {}", r.name(), r.version()))
                .collect();
            return Err(ResolveError::Ambiguous {
                spec: spec.to_owned(),
                candidates: names.join(", "),
            });
        }
        Ok(top.into_iter().next())
    }

    fn installed(&self) -> String {
        if self.runtimes.is_empty() {
            return "none".into();
        }
        let list: Vec<String> = self
            .runtimes
            .iter()
            .map(|r| format!("{} {} ({})", r.name(), r.version(), r.language()))
            .collect();
        list.join(", ")
    }
}

/// Whether `version` (from a spec) selects the runtime: the exact version string, or
/// up to three numeric components equal to the runtime's leading ones.
fn version_matches(runtime: &Runtime, version: &str) -> bool {
    if version == runtime.version() {
        return true;
    }
    let have = runtime.semver();
    let have = [have.major, have.minor, have.patch];
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() > 3 {
        return false;
    }
    parts.iter().zip(have).all(|(part, have)| {
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && part.parse::<u64>().ok() == Some(have)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::config::tests::{good_yml, make_runtime};

    fn registry(runtimes: &[(&str, &str, &str)]) -> (tempfile::TempDir, Registry) {
        let tmp = tempfile::tempdir().unwrap();
        for (name, language, version) in runtimes {
            make_runtime(tmp.path(), name, &good_yml(name, language, version));
        }
        let registry = Registry::load(tmp.path());
        assert!(registry.problems().is_empty(), "{:?}", registry.problems());
        (tmp, registry)
    }

    fn resolved(registry: &Registry, spec: &str) -> String {
        match registry.resolve(spec) {
            Ok(r) => r.name().to_owned(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn resolution() {
        let (_tmp, reg) = registry(&[
            ("python-3.9", "python", "3.9.0"),
            ("python-3.11", "python", "3.11.2"),
            ("openjdk-17", "java", "17.0.15+6"),
            ("node-20", "node", "20.19.2"),
        ]);
        assert_eq!(
            reg.list().iter().map(|r| r.name()).collect::<Vec<_>>(),
            ["node-20", "openjdk-17", "python-3.11", "python-3.9"]
        );
        // Exact name.
        assert_eq!(resolved(&reg, "python-3.9"), "python-3.9");
        // name@version, exact or by leading components.
        assert_eq!(resolved(&reg, "python-3.11@3.11.2"), "python-3.11");
        assert_eq!(resolved(&reg, "python-3.11@3.11"), "python-3.11");
        assert_eq!(resolved(&reg, "openjdk-17@17.0.15+6"), "openjdk-17");
        assert!(
            resolved(&reg, "python-3.11@3.9").starts_with("no runtime matches `python-3.11@3.9`")
        );
        // language:version.
        assert_eq!(resolved(&reg, "python:3.11"), "python-3.11");
        assert_eq!(resolved(&reg, "python:3"), "python-3.11");
        assert_eq!(resolved(&reg, "python:3.9"), "python-3.9");
        assert_eq!(resolved(&reg, "java:17"), "openjdk-17");
        assert!(
            resolved(&reg, "python:3.1").starts_with("no runtime matches"),
            "3.1 is not a prefix of 3.11"
        );
        // Bare language: newest by semver, not by name (3.9 sorts after 3.11 as text).
        assert_eq!(resolved(&reg, "python"), "python-3.11");
        assert_eq!(resolved(&reg, "node"), "node-20");
        // No fallback, and the error lists what is installed.
        let err = resolved(&reg, "pyhton");
        assert_eq!(
            err,
            "no runtime matches `pyhton` (installed: node-20 20.19.2 (node), openjdk-17 17.0.15+6 (java), \
             python-3.11 3.11.2 (python), python-3.9 3.9.0 (python))"
        );
        assert!(resolved(&reg, "python-3.12").starts_with("no runtime matches `python-3.12`"));
        assert!(resolved(&reg, "ruby:3").starts_with("no runtime matches"));
        for bad in ["", "python:", ":3", "@1", "py thon"] {
            assert!(
                matches!(reg.resolve(bad), Err(ResolveError::InvalidSpec { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn ties_are_ambiguous() {
        let (_tmp, reg) = registry(&[
            ("python-3.11", "python", "3.11.2"),
            ("python-3.11-ml", "python", "3.11.2"),
        ]);
        let err = resolved(&reg, "python:3.11");
        assert_eq!(err, "`python:3.11` is ambiguous: python-3.11 3.11.2, python-3.11-ml 3.11.2 (name one of them)");
        assert_eq!(resolved(&reg, "python-3.11-ml"), "python-3.11-ml");
        let (_tmp, empty) = registry(&[]);
        assert_eq!(
            resolved(&empty, "python"),
            "no runtime matches `python` (installed: none)"
        );
    }

    #[test]
    fn broken_runtimes_do_not_stop_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        make_runtime(tmp.path(), "good", &good_yml("good", "shell", "1.0.0"));
        make_runtime(
            tmp.path(),
            "bad",
            &good_yml("bad", "shell", "1.0.0").replace("readonly: true", "readonly: false"),
        );
        make_runtime(tmp.path(), "misnamed", &good_yml("other", "shell", "1.0.0"));
        make_runtime(tmp.path(), ".staging-good-x1", "not: [even yaml");
        make_runtime(tmp.path(), "Upper", &good_yml("Upper", "shell", "1"));
        make_runtime(
            tmp.path(),
            "warned",
            &good_yml("warned", "shell", "2.0.0")
                .replace("packages: [tool]", "packages: [tool]\nextra: 1"),
        );
        std::fs::create_dir(tmp.path().join("empty")).unwrap();
        std::fs::write(tmp.path().join("README"), "not a runtime").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("good"), tmp.path().join("linked")).unwrap();

        let reg = Registry::load(tmp.path());
        let names: Vec<_> = reg.list().iter().map(|r| r.name()).collect();
        assert_eq!(names, ["good", "warned"]);
        let problems: Vec<_> = reg.problems().iter().map(|p| p.dir_name.as_str()).collect();
        assert_eq!(problems, ["Upper", "bad", "linked", "misnamed"]);
        let bad = &reg.problems()[1].error.to_string();
        assert!(
            bad.ends_with("bad/runtime.yml: mounts[0].readonly: runtime mounts must be read-only"),
            "{bad}"
        );
        let warnings: Vec<_> = reg.warnings().iter().map(|w| w.to_string()).collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("empty: (directory): no runtime.yml")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.ends_with("warned/runtime.yml: extra: unknown field, ignored")),
            "{warnings:?}"
        );

        let missing = Registry::load(&tmp.path().join("nope"));
        assert!(missing.list().is_empty());
        assert_eq!(missing.problems().len(), 1);
    }
}
