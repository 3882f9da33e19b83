//! One runtime's `runtime.yml`: loading with strict validation, and the written form.
//!
//! The file is walked as a YAML value rather than deserialized into structs so every
//! error can name the field (`mounts[2].source`) and unknown keys become warnings
//! instead of failures. A [`Runtime`] only exists once everything checked out; its
//! mount sources are canonical host paths inside the runtime's `isolated/` directory.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use serde_norway::{Mapping, Value};

use super::{canonical_arch, is_normal_absolute, parse_version, valid_name};
use crate::lang::{jshell, EvaluatorKind, Launch};

/// The configuration file inside a runtime directory.
pub const CONFIG_FILE: &str = "runtime.yml";
/// The directory inside a runtime directory that mounts may come from.
pub const ISOLATED_DIR: &str = "isolated";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not valid yaml", file.display())]
    Yaml {
        file: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{}: {field}: {problem}", file.display())]
    Invalid {
        file: PathBuf,
        field: String,
        problem: String,
    },
    #[error("{}: {field}: cannot resolve `{path}`", file.display())]
    Resolve {
        file: PathBuf,
        field: String,
        path: String,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, ConfigError>;

/// A problem that does not stop a runtime from loading (an unknown field, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.field,
            self.message
        )
    }
}

/// The interpreter inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluator {
    pub kind: EvaluatorKind,
    /// Absolute path inside the sandbox.
    pub program: String,
    pub args: Vec<String>,
}

/// A validated read-only bind: canonical host source inside `isolated/`, sandbox target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
}

/// A loaded, validated runtime. Only [`Runtime::load`] makes one.
#[derive(Debug, Clone)]
pub struct Runtime {
    name: String,
    version: String,
    semver: semver::Version,
    description: String,
    language: String,
    evaluator: Evaluator,
    mounts: Vec<Mount>,
    environment: BTreeMap<String, String>,
    access_list: Option<String>,
    architectures: Vec<String>,
    packages: Vec<String>,
    dir: PathBuf,
}

impl Runtime {
    /// Loads `<dir>/runtime.yml`; the runtime's name must equal the directory's name.
    pub fn load(dir: &Path) -> Result<(Runtime, Vec<Warning>)> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        Self::load_named(dir, &name)
    }

    /// Loads `<dir>/runtime.yml` for a runtime that must be called `expected_name`
    /// (a runtime still in its staging directory has a different directory name).
    pub fn load_named(dir: &Path, expected_name: &str) -> Result<(Runtime, Vec<Warning>)> {
        let file = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let value: Value = serde_norway::from_str(&text).map_err(|source| ConfigError::Yaml {
            file: file.clone(),
            source,
        })?;
        let mut warnings = Vec::new();
        let runtime = Loader {
            file: &file,
            dir,
            warnings: &mut warnings,
        }
        .runtime(value, expected_name)?;
        Ok((runtime, warnings))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// The version as written in runtime.yml.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// The version parsed leniently, for ordering.
    pub fn semver(&self) -> &semver::Version {
        &self.semver
    }
    pub fn description(&self) -> &str {
        &self.description
    }
    pub fn language(&self) -> &str {
        &self.language
    }
    pub fn evaluator(&self) -> &Evaluator {
        &self.evaluator
    }
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }
    /// (canonical host source, sandbox target) pairs, all read-only.
    pub fn mount_pairs(&self) -> Vec<(PathBuf, PathBuf)> {
        self.mounts
            .iter()
            .map(|m| (m.source.clone(), m.target.clone()))
            .collect()
    }
    /// What the sandbox needs to run snippets on this runtime.
    pub fn launch(&self) -> Launch {
        Launch {
            kind: self.evaluator.kind,
            program: self.evaluator.program.clone(),
            args: self.evaluator.args.clone(),
            mounts: self.mount_pairs(),
            environment: self
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            access_list: None,
        }
    }
    /// A snippet that proves the runtime works, and the stdout it must print.
    pub fn smoke_test(&self) -> (&'static str, &'static str) {
        self.evaluator.kind.smoke_test()
    }
    pub fn environment(&self) -> &BTreeMap<String, String> {
        &self.environment
    }
    /// Name of a file in access-lists/ (without extension).
    pub fn access_list(&self) -> Option<&str> {
        self.access_list.as_deref()
    }
    pub fn architectures(&self) -> &[String] {
        &self.architectures
    }
    /// Informational list of what the runtime contains.
    pub fn packages(&self) -> &[String] {
        &self.packages
    }
    /// The runtime directory (holding runtime.yml and isolated/).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// runtime.yml as the installer writes it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RuntimeFile {
    pub name: String,
    pub version: String,
    pub description: String,
    pub language: String,
    pub evaluator: EvaluatorFile,
    pub mounts: Vec<MountFile>,
    pub environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_list: Option<String>,
    pub requirements: RequirementsFile,
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EvaluatorFile {
    pub kind: EvaluatorKind,
    pub program: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct MountFile {
    pub source: String,
    pub target: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequirementsFile {
    pub architectures: Vec<String>,
}

/// Walks the YAML value of one runtime.yml, collecting warnings.
struct Loader<'a> {
    file: &'a Path,
    dir: &'a Path,
    warnings: &'a mut Vec<Warning>,
}

/// The keys of one YAML mapping, taken one by one; what is left over is unknown.
struct Fields {
    map: Mapping,
    prefix: String,
}

impl Loader<'_> {
    fn invalid(&self, field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn fields(&self, value: Value, field: &str) -> Result<Fields> {
        match value {
            Value::Mapping(map) => {
                if let Some(key) = map.keys().find(|k| !k.is_string()) {
                    return Err(self.invalid(
                        field_or_root(field),
                        format!("key {} is not a string", show(key)),
                    ));
                }
                let prefix = if field.is_empty() {
                    String::new()
                } else {
                    format!("{field}.")
                };
                Ok(Fields { map, prefix })
            }
            other => Err(self.invalid(
                field_or_root(field),
                format!("must be a mapping, not {}", kind_of(&other)),
            )),
        }
    }

    fn finish(&mut self, fields: Fields) {
        for key in fields.map.keys() {
            let key = key.as_str().unwrap_or_default();
            self.warnings.push(Warning {
                file: self.file.to_owned(),
                field: format!("{}{key}", fields.prefix),
                message: "unknown field, ignored".into(),
            });
        }
    }

    fn required(&self, fields: &mut Fields, key: &str) -> Result<(String, Value)> {
        let field = format!("{}{key}", fields.prefix);
        match fields.map.remove(key) {
            Some(Value::Null) | None => Err(self.invalid(field, "missing")),
            Some(v) => Ok((field, v)),
        }
    }

    fn optional(&self, fields: &mut Fields, key: &str) -> Option<(String, Value)> {
        let field = format!("{}{key}", fields.prefix);
        match fields.map.remove(key) {
            Some(Value::Null) | None => None,
            Some(v) => Some((field, v)),
        }
    }

    fn string(&self, field: &str, value: Value) -> Result<String> {
        match value {
            Value::String(s) if s.contains('\0') => Err(self.invalid(field, "contains a NUL byte")),
            Value::String(s) => Ok(s),
            // A bare `3.10` is the float 3.1: insist on quotes instead of guessing.
            other => Err(self.invalid(field, format!("must be a string, not {}", kind_of(&other)))),
        }
    }

    fn strings(&self, field: &str, value: Value) -> Result<Vec<String>> {
        match value {
            Value::Sequence(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| self.string(&format!("{field}[{i}]"), v))
                .collect(),
            other => Err(self.invalid(field, format!("must be a list, not {}", kind_of(&other)))),
        }
    }

    fn runtime(mut self, value: Value, expected_name: &str) -> Result<Runtime> {
        let mut top = self.fields(value, "")?;

        let (field, v) = self.required(&mut top, "name")?;
        let name = self.string(&field, v)?;
        if !valid_name(&name) {
            return Err(self.invalid(
                field,
                format!("`{name}` does not match ^[a-z0-9][a-z0-9._-]{{0,63}}$"),
            ));
        }
        if name != expected_name {
            return Err(self.invalid(
                field,
                format!("`{name}` does not match the directory name `{expected_name}`"),
            ));
        }

        let (field, v) = self.required(&mut top, "version")?;
        let version = self.string(&field, v)?;
        if version.is_empty()
            || version.len() > 64
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+~_-".contains(c))
        {
            return Err(self.invalid(
                field,
                format!("`{version}` has characters other than [A-Za-z0-9.+~_-]"),
            ));
        }
        let Some(semver) = parse_version(&version) else {
            return Err(self.invalid(field, format!("`{version}` is not a version")));
        };

        let description = match self.optional(&mut top, "description") {
            Some((field, v)) => self.string(&field, v)?,
            None => String::new(),
        };
        let (field, v) = self.required(&mut top, "language")?;
        let language = self.string(&field, v)?;
        if language.is_empty()
            || !language
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(self.invalid(field, format!("`{language}` is not a language name")));
        }

        // Architecture first: a runtime for another machine fails on that, not on details.
        let architectures = self.requirements(&mut top)?;
        let isolated = self.isolated()?;
        let mounts = self.mounts(&mut top, &isolated)?;
        let evaluator = self.evaluator(&mut top, &mounts)?;
        if evaluator.kind == EvaluatorKind::Jshell {
            self.jshell_driver()?;
        }
        let environment = self.environment(&mut top)?;

        let access_list = match self.optional(&mut top, "access_list") {
            Some((field, v)) => {
                let list = self.string(&field, v)?;
                // Joined into a path under access-lists/ later: a plain file stem only.
                if list.is_empty()
                    || list.starts_with('.')
                    || !list
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    return Err(self.invalid(
                        field,
                        format!("`{list}` is not a file name in access-lists/"),
                    ));
                }
                Some(list)
            }
            None => None,
        };
        let packages = match self.optional(&mut top, "packages") {
            Some((field, v)) => self.strings(&field, v)?,
            None => Vec::new(),
        };
        self.finish(top);

        Ok(Runtime {
            name,
            version,
            semver,
            description,
            language,
            evaluator,
            mounts,
            environment,
            access_list,
            architectures,
            packages,
            dir: self.dir.to_owned(),
        })
    }

    /// A JShell runtime carries the driver it was built with; one built by another
    /// version of the service would speak another protocol.
    fn jshell_driver(&mut self) -> Result<()> {
        let relative = format!(
            "{ISOLATED_DIR}{}/{}",
            jshell::DRIVER_DIR,
            jshell::DRIVER_SOURCE_FILE
        );
        match std::fs::read_to_string(self.dir.join(&relative)) {
            Ok(text) if text == jshell::DRIVER => Ok(()),
            Ok(_) => Err(self.invalid(
                "evaluator.kind",
                format!("{relative} is from another version of jsheets-runtime: reinstall the runtime"),
            )),
            Err(_) => Err(self.invalid(
                "evaluator.kind",
                format!("{relative} is missing (a JShell runtime carries its driver): reinstall the runtime"),
            )),
        }
    }

    fn requirements(&mut self, top: &mut Fields) -> Result<Vec<String>> {
        let missing = |loader: &mut Self| {
            loader.warnings.push(Warning {
                file: loader.file.to_owned(),
                field: "requirements.architectures".into(),
                message: "missing; assuming the runtime was built for this host".into(),
            });
            Ok(Vec::new())
        };
        let Some((field, v)) = self.optional(top, "requirements") else {
            return missing(self);
        };
        let mut req = self.fields(v, &field)?;
        let Some((field, v)) = self.optional(&mut req, "architectures") else {
            self.finish(req);
            return missing(self);
        };
        let architectures = self.strings(&field, v)?;
        let host = std::env::consts::ARCH;
        if !architectures.iter().any(|a| canonical_arch(a) == host) {
            return Err(self.invalid(
                field,
                format!(
                    "built for {} and this host is {host}",
                    architectures.join(", ")
                ),
            ));
        }
        self.finish(req);
        Ok(architectures)
    }

    /// The canonical `isolated/` directory, which must be a real directory: were it a
    /// symlink to `/`, every "inside isolated/" check below would pass for the host root.
    fn isolated(&self) -> Result<PathBuf> {
        let path = self.dir.join(ISOLATED_DIR);
        let field = format!("{ISOLATED_DIR}/");
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(self.invalid(field, "must be a directory, not a symlink or file")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(self.invalid(field, "does not exist"))
            }
            Err(source) => {
                return Err(ConfigError::Resolve {
                    file: self.file.to_owned(),
                    field,
                    path: path.display().to_string(),
                    source,
                })
            }
        }
        path.canonicalize().map_err(|source| ConfigError::Resolve {
            file: self.file.to_owned(),
            field: format!("{ISOLATED_DIR}/"),
            path: path.display().to_string(),
            source,
        })
    }

    fn mounts(&mut self, top: &mut Fields, isolated: &Path) -> Result<Vec<Mount>> {
        let (field, v) = self.required(top, "mounts")?;
        let Value::Sequence(items) = v else {
            return Err(self.invalid(field, format!("must be a list, not {}", kind_of(&v))));
        };
        if items.is_empty() {
            return Err(self.invalid(field, "must list at least one mount"));
        }
        let mut mounts: Vec<Mount> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("{field}[{i}]");
            let mut m = self.fields(item, &at)?;

            let (sfield, v) = self.required(&mut m, "source")?;
            let source = self.string(&sfield, v)?;
            let source = self.mount_source(&sfield, &source, isolated)?;

            let (tfield, v) = self.required(&mut m, "target")?;
            let target = self.string(&tfield, v)?;
            if !is_normal_absolute(&target) {
                return Err(self.invalid(
                    tfield,
                    format!("`{target}` must be an absolute path without `.`, `..` or `//`"),
                ));
            }
            if target == "/" {
                return Err(self.invalid(tfield, "must not be the sandbox root"));
            }
            if mounts
                .iter()
                .any(|other| other.target == Path::new(&target))
            {
                return Err(self.invalid(tfield, format!("`{target}` is mounted twice")));
            }

            if let Some((rfield, v)) = self.optional(&mut m, "readonly") {
                match v {
                    Value::Bool(true) => {}
                    Value::Bool(false) => {
                        return Err(self.invalid(rfield, "runtime mounts must be read-only"))
                    }
                    other => {
                        return Err(
                            self.invalid(rfield, format!("must be true, not {}", kind_of(&other)))
                        )
                    }
                }
            }
            self.finish(m);
            mounts.push(Mount {
                source,
                target: PathBuf::from(target),
            });
        }
        Ok(mounts)
    }

    fn mount_source(&self, field: &str, source: &str, isolated: &Path) -> Result<PathBuf> {
        let escapes = || self.invalid(field, format!("`{source}` escapes {ISOLATED_DIR}/"));
        if source.is_empty() {
            return Err(self.invalid(field, "must not be empty"));
        }
        if Path::new(source).is_absolute() {
            return Err(self.invalid(
                field,
                format!("`{source}` must be relative to the runtime directory"),
            ));
        }
        // Lexically first, so `isolated/../etc` is reported as what it is even when it
        // happens not to exist.
        let mut lexical: Vec<&std::ffi::OsStr> = Vec::new();
        for c in Path::new(source).components() {
            match c {
                Component::Normal(part) => lexical.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    if lexical.pop().is_none() {
                        return Err(escapes());
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(escapes()),
            }
        }
        if lexical.first().map(|c| *c != ISOLATED_DIR).unwrap_or(true) {
            return Err(escapes());
        }
        let path = self.dir.join(source);
        let canonical = match path.canonicalize() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(self.invalid(field, format!("`{source}` does not exist")))
            }
            Err(source_err) => {
                return Err(ConfigError::Resolve {
                    file: self.file.to_owned(),
                    field: field.to_owned(),
                    path: source.to_owned(),
                    source: source_err,
                })
            }
        };
        // Symlinks inside isolated/ may point anywhere on the host; only the resolved
        // path counts.
        if !canonical.starts_with(isolated) {
            return Err(self.invalid(
                field,
                format!(
                    "`{source}` escapes {ISOLATED_DIR}/ (resolves to {})",
                    canonical.display()
                ),
            ));
        }
        Ok(canonical)
    }

    fn evaluator(&mut self, top: &mut Fields, mounts: &[Mount]) -> Result<Evaluator> {
        let (field, v) = self.required(top, "evaluator")?;
        let mut e = self.fields(v, &field)?;

        let (kfield, v) = self.required(&mut e, "kind")?;
        let kind = self.string(&kfield, v)?;
        let Some(kind) = EvaluatorKind::parse(&kind) else {
            let known: Vec<_> = EvaluatorKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(self.invalid(
                kfield,
                format!("`{kind}` is not one of {}", known.join(", ")),
            ));
        };

        let (pfield, v) = self.required(&mut e, "program")?;
        let program = self.string(&pfield, v)?;
        if !is_normal_absolute(&program) || program == "/" {
            return Err(self.invalid(
                pfield,
                format!("`{program}` must be an absolute path without `.`, `..` or `//`"),
            ));
        }
        if !provided_by(mounts, &program) {
            return Err(self.invalid(pfield, format!("`{program}` is not provided by any mount")));
        }

        let args = match self.optional(&mut e, "args") {
            Some((field, v)) => self.strings(&field, v)?,
            None => Vec::new(),
        };
        self.finish(e);
        Ok(Evaluator {
            kind,
            program,
            args,
        })
    }

    fn environment(&mut self, top: &mut Fields) -> Result<BTreeMap<String, String>> {
        let Some((field, v)) = self.optional(top, "environment") else {
            return Ok(BTreeMap::new());
        };
        let mut env = self.fields(v, &field)?;
        let mut out = BTreeMap::new();
        for (key, value) in std::mem::take(&mut env.map) {
            let key = key.as_str().unwrap_or_default().to_owned();
            let at = format!("{field}.{key}");
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(self.invalid(at, "is not a valid variable name"));
            }
            let value = self.string(&at, value)?;
            out.insert(key, value);
        }
        Ok(out)
    }
}

/// Whether `program` exists under the mount with the longest matching target.
fn provided_by(mounts: &[Mount], program: &str) -> bool {
    let program = Path::new(program);
    let Some(mount) = mounts
        .iter()
        .filter(|m| program.starts_with(&m.target))
        .max_by_key(|m| m.target.components().count())
    else {
        return false;
    };
    let Ok(rest) = program.strip_prefix(&mount.target) else {
        return false;
    };
    // symlink_metadata: a relative symlink chain is checked by the sandbox when it execs.
    std::fs::symlink_metadata(mount.source.join(rest)).is_ok()
}

fn field_or_root(field: &str) -> String {
    if field.is_empty() {
        "(top level)".into()
    } else {
        field.into()
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn show(v: &Value) -> String {
    serde_norway::to_string(v)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| kind_of(v).into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    pub(crate) fn host_arch_debian() -> &'static str {
        super::super::host_debian_arch()
    }

    /// A runtime directory `<root>/<name>` with isolated/usr/bin/tool and the given yml.
    pub(crate) fn make_runtime(root: &Path, name: &str, yml: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("isolated/usr/bin")).unwrap();
        std::fs::create_dir_all(dir.join("isolated/etc")).unwrap();
        std::fs::write(dir.join("isolated/usr/bin/tool"), "#!/bin/sh\n").unwrap();
        std::fs::write(dir.join(CONFIG_FILE), yml).unwrap();
        dir
    }

    pub(crate) fn good_yml(name: &str, language: &str, version: &str) -> String {
        format!(
            r#"name: {name}
version: "{version}"
description: test runtime
language: {language}
evaluator:
  kind: command
  program: /usr/bin/tool
  args: ["-e"]
mounts:
  - source: isolated/usr
    target: /usr
    readonly: true
  - source: isolated/etc
    target: /etc
environment:
  PATH: /usr/bin
  HOME: /work
access_list: default
requirements:
  architectures: [{arch}]
packages: [tool]
"#,
            arch = host_arch_debian()
        )
    }

    fn load_err(yml: &str) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let dir = make_runtime(tmp.path(), "rt", yml);
        let err = Runtime::load(&dir).expect_err("must fail").to_string();
        let file = dir.join(CONFIG_FILE).display().to_string();
        assert!(
            err.starts_with(&format!("{file}: ")),
            "{err} does not name {file}"
        );
        err
    }

    fn with(replace: &str, by: &str) -> String {
        let yml = good_yml("rt", "shell", "1.2.3");
        assert!(yml.contains(replace), "{replace}");
        yml.replace(replace, by)
    }

    #[test]
    fn loads_a_good_runtime() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = make_runtime(tmp.path(), "rt", &good_yml("rt", "shell", "17.0.15+6"));
        let (rt, warnings) = Runtime::load(&dir).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(rt.name(), "rt");
        assert_eq!(rt.version(), "17.0.15+6");
        assert_eq!(rt.semver().minor, 0);
        assert_eq!(rt.language(), "shell");
        assert_eq!(rt.description(), "test runtime");
        assert_eq!(rt.evaluator().kind, EvaluatorKind::Command);
        assert_eq!(rt.evaluator().program, "/usr/bin/tool");
        assert_eq!(rt.evaluator().args, ["-e"]);
        let canon = dir.join("isolated").canonicalize().unwrap();
        assert_eq!(
            rt.mounts()[0],
            Mount {
                source: canon.join("usr"),
                target: "/usr".into()
            }
        );
        assert_eq!(
            rt.mount_pairs()[1],
            (canon.join("etc"), PathBuf::from("/etc"))
        );
        assert_eq!(rt.environment()["HOME"], "/work");
        assert_eq!(rt.access_list(), Some("default"));
        assert_eq!(rt.packages(), ["tool"]);
        assert_eq!(rt.dir(), dir);
    }

    #[test]
    fn unknown_fields_are_warnings() {
        let tmp = tempfile::tempdir().unwrap();
        let yml = good_yml("rt", "shell", "1.0")
            .replace("packages: [tool]", "packages: [tool]\ncolour: blue")
            .replace("    readonly: true", "    readonly: true\n    shared: yes");
        let dir = make_runtime(tmp.path(), "rt", &yml);
        let (_, warnings) = Runtime::load(&dir).unwrap();
        let fields: Vec<_> = warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(fields, ["mounts[0].shared", "colour"]);
        assert!(warnings[0]
            .to_string()
            .contains("runtime.yml: mounts[0].shared: unknown field"));
    }

    #[test]
    fn mount_source_escaping_lexically() {
        let err = load_err(&with("source: isolated/etc", "source: isolated/../etc"));
        assert!(
            err.ends_with("mounts[1].source: `isolated/../etc` escapes isolated/"),
            "{err}"
        );
        let err = load_err(&with("source: isolated/etc", "source: etc"));
        assert!(
            err.contains("mounts[1].source: `etc` escapes isolated/"),
            "{err}"
        );
        let err = load_err(&with("source: isolated/etc", "source: /etc"));
        assert!(
            err.contains("mounts[1].source: `/etc` must be relative"),
            "{err}"
        );
    }

    #[test]
    fn mount_source_escaping_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let yml = good_yml("rt", "shell", "1")
            .replace("source: isolated/etc", "source: isolated/hostetc");
        let dir = make_runtime(tmp.path(), "rt", &yml);
        symlink("/etc", dir.join("isolated/hostetc")).unwrap();
        let err = Runtime::load(&dir).unwrap_err().to_string();
        assert!(err.contains("runtime.yml: mounts[1].source: `isolated/hostetc` escapes isolated/ (resolves to /etc)"), "{err}");

        // isolated/ itself a symlink to / would make everything "inside".
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rt");
        std::fs::create_dir(&dir).unwrap();
        symlink("/", dir.join("isolated")).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), good_yml("rt", "shell", "1")).unwrap();
        let err = Runtime::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("runtime.yml: isolated/: must be a directory, not a symlink"),
            "{err}"
        );
    }

    #[test]
    fn mount_source_missing() {
        let err = load_err(&with("source: isolated/etc", "source: isolated/nothing"));
        assert!(
            err.ends_with("mounts[1].source: `isolated/nothing` does not exist"),
            "{err}"
        );
    }

    #[test]
    fn mount_targets() {
        for (target, problem) in [
            ("etc", "must be an absolute path"),
            ("/usr/../etc", "must be an absolute path"),
            ("/etc/", "must be an absolute path"),
            ("//etc", "must be an absolute path"),
            ("/", "must not be the sandbox root"),
            ("/usr", "`/usr` is mounted twice"),
        ] {
            let err = load_err(&with("target: /etc", &format!("target: \"{target}\"")));
            assert!(
                err.contains("mounts[1].target: ") && err.contains(problem),
                "{target}: {err}"
            );
        }
    }

    #[test]
    fn writable_mount() {
        let err = load_err(&with("readonly: true", "readonly: false"));
        assert!(
            err.ends_with("mounts[0].readonly: runtime mounts must be read-only"),
            "{err}"
        );
        let err = load_err(&with("readonly: true", "readonly: \"yes\""));
        assert!(
            err.contains("mounts[0].readonly: must be true, not a string"),
            "{err}"
        );
    }

    #[test]
    fn other_architecture() {
        let other = if std::env::consts::ARCH == "s390x" {
            "riscv64"
        } else {
            "s390x"
        };
        let err = load_err(&with(
            &format!("[{}]", host_arch_debian()),
            &format!("[{other}]"),
        ));
        assert!(
            err.contains(&format!(
                "requirements.architectures: built for {other} and this host is"
            )),
            "{err}"
        );
        // Both spellings of the host architecture are accepted.
        let tmp = tempfile::tempdir().unwrap();
        let alias = std::env::consts::ARCH;
        let dir = make_runtime(
            tmp.path(),
            "rt",
            &with(
                &format!("[{}]", host_arch_debian()),
                &format!("[{other}, {alias}]"),
            ),
        );
        Runtime::load(&dir).unwrap();
    }

    #[test]
    fn missing_architectures_is_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let arch = format!("requirements:\n  architectures: [{}]\n", host_arch_debian());
        let dir = make_runtime(tmp.path(), "rt", &with(&arch, ""));
        let (rt, warnings) = Runtime::load(&dir).unwrap();
        assert!(rt.architectures().is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].to_string().ends_with("runtime.yml: requirements.architectures: missing; assuming the runtime was built for this host"));
    }

    #[test]
    fn names() {
        let err = load_err(&with("name: rt", "name: Rt"));
        assert!(err.contains("name: `Rt` does not match ^[a-z0-9]"), "{err}");
        let err = load_err(&with("name: rt", "name: other"));
        assert!(
            err.ends_with("name: `other` does not match the directory name `rt`"),
            "{err}"
        );
        let err = load_err(&with("name: rt\n", ""));
        assert!(err.ends_with("name: missing"), "{err}");
    }

    #[test]
    fn evaluator() {
        let err = load_err(&with("program: /usr/bin/tool", "program: usr/bin/tool"));
        assert!(
            err.contains("evaluator.program: `usr/bin/tool` must be an absolute path"),
            "{err}"
        );
        let err = load_err(&with("program: /usr/bin/tool", "program: /opt/tool"));
        assert!(
            err.contains("evaluator.program: `/opt/tool` is not provided by any mount"),
            "{err}"
        );
        let err = load_err(&with("kind: command", "kind: ruby"));
        assert!(
            err.contains("evaluator.kind: `ruby` is not one of python, jshell, node, command"),
            "{err}"
        );
        let err = load_err(&with("  args: [\"-e\"]\n", "  args: -e\n"));
        assert!(
            err.contains("evaluator.args: must be a list, not a string"),
            "{err}"
        );
    }

    #[test]
    fn scalar_types_and_yaml() {
        let err = load_err(&with("version: \"1.2.3\"", "version: 3.10"));
        assert!(
            err.contains("version: must be a string, not a number"),
            "{err}"
        );
        let err = load_err(&with("version: \"1.2.3\"", "version: \"../1\""));
        assert!(err.contains("version: `../1` has characters"), "{err}");
        let err = load_err(&with("version: \"1.2.3\"", "version: latest"));
        assert!(err.contains("version: `latest` is not a version"), "{err}");
        let err = load_err(&with("HOME: /work", "HOME: 1"));
        assert!(
            err.contains("environment.HOME: must be a string, not a number"),
            "{err}"
        );
        let err = load_err(&with(
            "access_list: default",
            "access_list: ../../etc/passwd",
        ));
        assert!(
            err.contains("access_list: `../../etc/passwd` is not a file name"),
            "{err}"
        );
        let err = load_err("name: [unclosed");
        assert!(err.ends_with("not valid yaml"), "{err}");
        let err = load_err("- a list");
        assert!(
            err.contains("(top level): must be a mapping, not a list"),
            "{err}"
        );
        let err = load_err(&with("mounts:\n", "mounts: []\nold_mounts:\n"));
        assert!(
            err.contains("mounts: must list at least one mount"),
            "{err}"
        );
    }
}
