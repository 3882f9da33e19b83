//! Access lists: which library classes and members (Java) or modules and attributes
//! (Python) a snippet may use.
//!
//! The format and its meaning are specified in the access-lists guide; in short:
//!
//! ```text
//! # comment
//! java.util                                  # a package, its classes, nested classes, subpackages
//! !java.util.concurrent                      # '!' denies
//! java.lang.System.out                       # a member written with '.'
//! java.lang.Object#equals(java.lang.Object):boolean
//! java.util.Formatter#<init>(java.io.File)   # a constructor
//! !builtins.open                             # Python: dotted module paths
//! ```
//!
//! Names are split into segments at `.`, `$` and `#`. A rule covers a reference when its
//! segments are a prefix of the reference's and its parameter and return types, where
//! given, equal the method's (`*` matches anything). Of the covering rules the most
//! specific decides: more segments first, then a rule with both parameter and return
//! types, then one with either, then one with neither; between equals the later line.
//! A reference no rule covers is denied.
//!
//! Because matching works on segments, the parser never needs to know whether the last
//! segment of `java.lang.System.out` is a class or a member. A rule with parameter or
//! return types covers methods only, and, by the same prefix rule, `a.B(int)` covers
//! every method of `a.B` and its nested classes that takes one `int`.
//!
//! - [`parser`]: [`AccessList::parse`] and [`AccessList::load`]; a list with any syntax
//!   error is refused as a whole, and every error is reported with file, line, column.
//! - [`matcher`]: [`Reference`], [`AccessList::check`] and [`Verdict`].
//! - [`jvm`]: JVM internal names and descriptors turned into the list's source form,
//!   for the class-file checker (hostile input: bounds checked, size capped).
//! - [`mod@lint`]: [`lint()`], rules that can never change a verdict.

pub mod catalog;
pub mod java;
pub mod jvm;
pub mod lint;
pub mod matcher;
pub mod parser;

#[cfg(test)]
mod shipped_tests;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use jvm::{binary_name, field_type, method_signature, DescriptorError};
pub use lint::{lint, Finding, FindingKind};
pub use matcher::{Reference, Signature, Verdict};
pub use parser::{ParseError, ParseErrors, SyntaxError};

/// Why an access list could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read access list {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Syntax(#[from] ParseErrors),
}

/// A parameter type in a rule's signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TypePattern {
    /// `*`: any one type.
    Any,
    /// A type in Java source form: `int`, `java.lang.String[]`, `java.util.Map$Entry`.
    Type(String),
}

impl TypePattern {
    /// Whether this pattern matches the source-form type `ty`.
    pub fn matches(&self, ty: &str) -> bool {
        match self {
            TypePattern::Any => true,
            TypePattern::Type(t) => t == ty,
        }
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypePattern::Any => f.write_str("*"),
            TypePattern::Type(t) => f.write_str(t),
        }
    }
}

/// One rule of an access list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    line: usize,
    text: String,
    deny: bool,
    segments: Vec<String>,
    /// `None`: any parameters (not written, or written `(*)`).
    params: Option<Vec<TypePattern>>,
    /// `None`: any return type (not written, or written `:*`).
    ret: Option<String>,
}

impl Rule {
    /// The 1-based line the rule is on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The rule as written, without surrounding whitespace or trailing comment.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the rule denies (`!`) rather than allows.
    pub fn is_deny(&self) -> bool {
        self.deny
    }

    /// The rule's name split at `.`, `$` and `#`.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The parameter types, or `None` for any parameters.
    pub fn params(&self) -> Option<&[TypePattern]> {
        self.params.as_deref()
    }

    /// The return type, or `None` for any return type.
    pub fn return_type(&self) -> Option<&str> {
        self.ret.as_deref()
    }

    /// How many of parameter and return types the rule gives: 0, 1 or 2.
    pub fn signature_rank(&self) -> u8 {
        u8::from(self.params.is_some()) + u8::from(self.ret.is_some())
    }

    /// Specificity without the line tie-break: `(segments, signature rank)`.
    pub fn specificity(&self) -> (usize, u8) {
        (self.segments.len(), self.signature_rank())
    }

    /// Full precedence: a higher key decides over a lower one.
    fn precedence(&self) -> (usize, u8, usize) {
        (self.segments.len(), self.signature_rank(), self.line)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A parsed, valid access list.
#[derive(Debug, Clone)]
pub struct AccessList {
    file: PathBuf,
    rules: Vec<Rule>,
    /// Rule indices by their exact segments, in line order.
    index: HashMap<Vec<String>, Vec<usize>>,
}

impl AccessList {
    /// Parses `source`; `file` is only used to name the list in errors and findings.
    ///
    /// Every syntax error of the list is returned, not just the first.
    pub fn parse(source: &str, file: &Path) -> Result<AccessList, ParseErrors> {
        parser::parse(source, file)
    }

    /// Reads and parses the list at `path`.
    pub fn load(path: &Path) -> Result<AccessList, AccessError> {
        let source = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(AccessList::parse(&source, path)?)
    }

    fn new(file: PathBuf, rules: Vec<Rule>) -> AccessList {
        let mut index: HashMap<Vec<String>, Vec<usize>> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            index.entry(rule.segments.clone()).or_default().push(i);
        }
        AccessList { file, rules, index }
    }

    /// The file the list was read from (or named after).
    /// The list's name: its file name without `.access`.
    pub fn name(&self) -> &str {
        self.file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("the access list")
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The rules in line order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether the list has no rules (and so denies everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}
