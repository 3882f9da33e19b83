//! Access lists by name: `<name>.access` in the operator's directory, else one of the
//! lists built into the binary (`access-lists/` of the source tree).

use std::path::{Path, PathBuf};

use super::{AccessError, AccessList};

/// The lists every node has, by name.
const BUILT_IN: [(&str, &str); 3] = [
    (
        "java-default",
        include_str!("../../../access-lists/java-default.access"),
    ),
    (
        "python-default",
        include_str!("../../../access-lists/python-default.access"),
    ),
    (
        "jsheets-original",
        include_str!("../../../access-lists/jsheets-original.access"),
    ),
];

/// The name that turns a runtime's list off in configuration.
pub const NO_LIST: &str = "none";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("`{0}` is not an access list name (letters, digits, `.`, `_` and `-` only)")]
    BadName(String),
    #[error("access list `{name}` is neither {} nor built in (built in: {})", .path.display(), built_in_names())]
    Unknown { name: String, path: PathBuf },
    #[error(transparent)]
    Invalid(#[from] AccessError),
}

fn built_in_names() -> String {
    BUILT_IN.map(|(n, _)| n).join(", ")
}

/// Where lists are looked up.
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: Option<PathBuf>,
}

impl Catalog {
    /// Lists in `dir` (if given) come first, shadowing built-in lists of the same name.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Catalog { dir }
    }

    /// Loads and parses the list called `name`; a list with any error is refused whole.
    pub fn load(&self, name: &str) -> Result<AccessList, CatalogError> {
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(CatalogError::BadName(name.to_owned()));
        }
        let file = format!("{name}.access");
        if let Some(dir) = &self.dir {
            let path = dir.join(&file);
            if path.exists() {
                return Ok(AccessList::load(&path)?);
            }
        }
        match BUILT_IN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => AccessList::parse(text, Path::new(&format!("built-in/{file}")))
                .map_err(|e| CatalogError::Invalid(AccessError::Syntax(e))),
            None => Err(CatalogError::Unknown {
                name: name.to_owned(),
                path: self
                    .dir
                    .as_deref()
                    .unwrap_or(Path::new("access-lists"))
                    .join(file),
            }),
        }
    }

    /// The list for a runtime: `configured` (from configuration) over the runtime's
    /// own; [`NO_LIST`] or no name at all means snippets run unchecked.
    pub fn for_runtime(
        &self,
        own: Option<&str>,
        configured: Option<&str>,
    ) -> Result<Option<AccessList>, CatalogError> {
        match configured.or(own) {
            None | Some(NO_LIST) => Ok(None),
            Some(name) => self.load(name).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_lists_load_and_a_directory_shadows_them() {
        let catalog = Catalog::new(None);
        for (name, _) in BUILT_IN {
            let list = catalog.load(name).unwrap();
            assert_eq!(list.name(), name);
            assert!(!list.is_empty());
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("java-default.access"), "java.lang\n").unwrap();
        std::fs::write(dir.path().join("broken.access"), "java..lang\n").unwrap();
        let catalog = Catalog::new(Some(dir.path().to_owned()));
        assert_eq!(catalog.load("java-default").unwrap().rules().len(), 1);
        let err = catalog.load("broken").unwrap_err().to_string();
        assert!(err.contains("broken.access"), "{err}");
        let err = catalog.load("missing").unwrap_err().to_string();
        assert!(
            err.contains("missing.access") && err.contains("java-default"),
            "{err}"
        );
        assert!(matches!(
            catalog.load("../etc/passwd"),
            Err(CatalogError::BadName(_))
        ));
    }

    #[test]
    fn configuration_overrides_the_runtime_and_none_turns_the_list_off() {
        let catalog = Catalog::new(None);
        let own = catalog
            .for_runtime(Some("python-default"), None)
            .unwrap()
            .unwrap();
        assert_eq!(own.name(), "python-default");
        let over = catalog
            .for_runtime(Some("python-default"), Some("jsheets-original"))
            .unwrap()
            .unwrap();
        assert_eq!(over.name(), "jsheets-original");
        assert!(catalog
            .for_runtime(Some("python-default"), Some(NO_LIST))
            .unwrap()
            .is_none());
        assert!(catalog.for_runtime(None, None).unwrap().is_none());
    }
}
