//! The recipe model: what a recipe file (`recipes/*.yml`) says, read and checked.
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
use std::path::Path;

use serde::Deserialize;

use super::{InstallError, Result};
use crate::lang::EvaluatorKind;
use crate::runtime::{is_normal_absolute, valid_name};

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
    pub(super) fn path(&self) -> &str {
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
