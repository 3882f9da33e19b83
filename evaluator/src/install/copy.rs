//! Copies host paths into a runtime's `isolated/` under the same paths.
//!
//! Symlinks stay symlinks, with their whole chain: copying `/lib/x86_64-linux-gnu/libc.so.6`
//! on merged /usr creates `isolated/lib -> usr/lib` and the file at its canonical place,
//! so both names resolve inside the sandbox. Absolute link targets are rewritten as
//! relative ones (the archive format refuses absolute links, and a relative link
//! resolves the same way once `isolated/` is the sandbox's root). Modes are kept
//! except setuid/setgid, and modification times are kept so Python's cached bytecode
//! stays valid.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::fsutil::wildcard_match;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{} does not exist on this host", path.display())]
    Missing { path: PathBuf },
    #[error("{} must be an absolute path", path.display())]
    Relative { path: PathBuf },
    #[error("too many symlinks resolving {}", path.display())]
    Loop { path: PathBuf },
    #[error("copying {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, CopyError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How one host path (a file or a whole directory) is copied.
#[derive(Debug, Clone, Default)]
pub(crate) struct CopyOptions {
    /// Patterns for entries below a copied directory. Without a `/` a pattern matches
    /// a name at any depth (`__pycache__`); with a leading `/` it is anchored to the
    /// copied directory (`/test`, `/config-3.11-*`). Excluded directories are skipped whole.
    pub exclude: Vec<String>,
    /// Replace symlinks inside the copied directory whose target lies outside it by a
    /// copy of what they point to (the JDK's conf/ links into /etc/java-17-openjdk).
    pub dereference_external: bool,
}

impl CopyOptions {
    fn excluded(&self, rel: &Path) -> bool {
        let rel_str = rel.to_string_lossy();
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        self.exclude
            .iter()
            .any(|pattern| match pattern.strip_prefix('/') {
                Some(anchored) => {
                    let want: Vec<&str> = anchored.split('/').collect();
                    let have: Vec<&str> = rel_str.split('/').collect();
                    want.len() == have.len()
                        && want.iter().zip(&have).all(|(p, n)| wildcard_match(p, n))
                }
                None if pattern.contains('/') => wildcard_match(pattern, &rel_str),
                None => wildcard_match(pattern, &name),
            })
    }
}

/// Copies host paths into one `isolated/` directory, each at most once.
pub(crate) struct Copier<'a> {
    isolated: PathBuf,
    /// Host objects (canonical) copied completely; directories included.
    done: HashSet<PathBuf>,
    files: usize,
    warnings: Vec<String>,
    on_file: &'a (dyn Fn(usize) + Sync),
}

impl std::fmt::Debug for Copier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Copier")
            .field("isolated", &self.isolated)
            .field("files", &self.files)
            .finish()
    }
}

impl<'a> Copier<'a> {
    /// `on_file` is called with the running file count now and then.
    pub fn new(isolated: &Path, on_file: &'a (dyn Fn(usize) + Sync)) -> Copier<'a> {
        Copier {
            isolated: isolated.to_owned(),
            done: HashSet::new(),
            files: 0,
            warnings: Vec::new(),
            on_file,
        }
    }

    pub fn files(&self) -> usize {
        self.files
    }

    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Where a host path lands inside `isolated/`.
    pub fn dest(&self, host: &Path) -> PathBuf {
        self.isolated.join(host.strip_prefix("/").unwrap_or(host))
    }

    /// Copies `host` (absolute), following and recreating every symlink on the way.
    pub fn copy(&mut self, host: &Path, options: &CopyOptions) -> Result<()> {
        if !host.is_absolute() {
            return Err(CopyError::Relative {
                path: host.to_owned(),
            });
        }
        self.copy_chain(host, host, options, 0)
    }

    /// Walks `path` component by component from `/`. `cur` is always a physical
    /// (symlink-free) directory, so `..` is resolved the way the kernel would.
    fn copy_chain(
        &mut self,
        original: &Path,
        path: &Path,
        options: &CopyOptions,
        depth: usize,
    ) -> Result<()> {
        if depth > 40 {
            return Err(CopyError::Loop {
                path: original.to_owned(),
            });
        }
        let parts: Vec<Component<'_>> = path.components().collect();
        let mut cur = PathBuf::from("/");
        for (i, part) in parts.iter().enumerate() {
            let name = match part {
                Component::RootDir | Component::Prefix(_) | Component::CurDir => continue,
                Component::ParentDir => {
                    cur.pop();
                    continue;
                }
                Component::Normal(name) => name,
            };
            let next = cur.join(name);
            let meta = match fs::symlink_metadata(&next) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(CopyError::Missing {
                        path: original.to_owned(),
                    })
                }
                Err(e) => return Err(io_err(&next)(e)),
            };
            let last = parts[i + 1..]
                .iter()
                .all(|c| matches!(c, Component::CurDir));
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&next).map_err(io_err(&next))?;
                self.link(&next, &target)?;
                let mut rest = if target.is_absolute() {
                    target
                } else {
                    cur.join(target)
                };
                rest.extend(&parts[i + 1..]);
                return self.copy_chain(original, &rest, options, depth + 1);
            }
            if last {
                return self.copy_object(&next, &next, options);
            }
            if !meta.is_dir() {
                return Err(CopyError::Missing {
                    path: original.to_owned(),
                });
            }
            self.ensure_dir(&next)?;
            cur = next;
        }
        Ok(())
    }

    /// Copies a non-symlink host object `src` to the place of host path `at`.
    fn copy_object(&mut self, src: &Path, at: &Path, options: &CopyOptions) -> Result<()> {
        let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
        if meta.is_dir() {
            if !self.done.insert(at.to_owned()) {
                return Ok(());
            }
            self.copy_tree(src, at, Path::new(""), src, options)
        } else if meta.is_file() {
            self.copy_file(src, at, &meta)
        } else {
            self.warnings.push(format!(
                "skipped {}: not a file, directory or symlink",
                src.display()
            ));
            Ok(())
        }
    }

    /// Copies directory `src` to the place of host path `at`; `rel` is the path below
    /// the copied root (for exclusions) and `root` that root (for external links).
    fn copy_tree(
        &mut self,
        src: &Path,
        at: &Path,
        rel: &Path,
        root: &Path,
        options: &CopyOptions,
    ) -> Result<()> {
        self.ensure_dir(at)?;
        let mode = fs::metadata(src).map_err(io_err(src))?.permissions().mode() & 0o7777;
        fs::set_permissions(self.dest(at), fs::Permissions::from_mode(mode & 0o1777))
            .map_err(io_err(at))?;
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(io_err(src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(io_err(src))?;
        entries.sort();
        for name in entries {
            let entry_rel = rel.join(&name);
            if options.excluded(&entry_rel) {
                continue;
            }
            let entry_src = src.join(&name);
            let entry_at = at.join(&name);
            let meta = fs::symlink_metadata(&entry_src).map_err(io_err(&entry_src))?;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&entry_src).map_err(io_err(&entry_src))?;
                if options.dereference_external {
                    if let Ok(resolved) = entry_src.canonicalize() {
                        let canonical_root = root.canonicalize().map_err(io_err(root))?;
                        if !resolved.starts_with(&canonical_root) {
                            self.copy_object(&resolved, &entry_at, &CopyOptions::default())?;
                            continue;
                        }
                    }
                }
                self.link(&entry_at, &target)?;
            } else if meta.is_dir() {
                self.copy_tree(&entry_src, &entry_at, &entry_rel, root, options)?;
            } else if meta.is_file() {
                self.copy_file(&entry_src, &entry_at, &meta)?;
            } else {
                self.warnings.push(format!(
                    "skipped {}: not a file, directory or symlink",
                    entry_src.display()
                ));
            }
        }
        Ok(())
    }

    fn copy_file(&mut self, src: &Path, at: &Path, meta: &fs::Metadata) -> Result<()> {
        let dest = self.dest(at);
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(());
        }
        if let Some(parent) = at.parent() {
            self.ensure_dir(parent)?;
        }
        fs::copy(src, &dest).map_err(io_err(src))?;
        // futimens on a read-only descriptor: works for the owner whatever the mode.
        let file = fs::File::open(&dest).map_err(io_err(&dest))?;
        if let Ok(modified) = meta.modified() {
            file.set_modified(modified).map_err(io_err(&dest))?;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o6000 != 0 {
            self.warnings
                .push(format!("{}: setuid/setgid bits dropped", src.display()));
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o1777))
            .map_err(io_err(&dest))?;
        self.files += 1;
        if self.files.is_multiple_of(200) {
            (self.on_file)(self.files);
        }
        Ok(())
    }

    /// Creates the directories of host path `dir` inside isolated/ (for components
    /// that are real directories on the host; symlinked ones are made by `link`).
    fn ensure_dir(&mut self, dir: &Path) -> Result<()> {
        let dest = self.dest(dir);
        match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(CopyError::Io {
                    path: dir.to_owned(),
                    source: io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a non-directory is in the way",
                    ),
                })
            }
            Err(_) => {}
        }
        fs::create_dir_all(&dest).map_err(io_err(&dest))
    }

    /// Recreates the host symlink at `at` (with target `target`) inside isolated/.
    fn link(&mut self, at: &Path, target: &Path) -> Result<()> {
        let dest = self.dest(at);
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(());
        }
        if let Some(parent) = at.parent() {
            self.ensure_dir(parent)?;
        }
        let target = relative_target(at, target);
        symlink(&target, &dest).map_err(io_err(&dest))
    }
}

/// The link text to use at host path `at` (absolute) for a host symlink to `target`:
/// relative targets that stay below `/` are kept verbatim; absolute ones, and relative
/// ones that climb above `/` (which the host clamps), become relative from `at`'s directory.
pub(crate) fn relative_target(at: &Path, target: &Path) -> PathBuf {
    let parent = at.parent().unwrap_or(Path::new("/"));
    let depth = parent
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    if !target.is_absolute() {
        let mut level = depth as isize;
        let mut stays = true;
        for c in target.components() {
            match c {
                Component::ParentDir => level -= 1,
                Component::Normal(_) => level += 1,
                _ => {}
            }
            if level < 0 {
                stays = false;
                break;
            }
        }
        if stays {
            return target.to_owned();
        }
    }
    // Lexically normalize the absolute target, clamping `..` at `/`.
    let joined = if target.is_absolute() {
        target.to_owned()
    } else {
        parent.join(target)
    };
    let mut abs: Vec<&std::ffi::OsStr> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(p) => abs.push(p),
            Component::ParentDir => {
                abs.pop();
            }
            _ => {}
        }
    }
    let mut out = PathBuf::new();
    for _ in 0..depth {
        out.push("..");
    }
    out.extend(abs);
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn noop(_: usize) {}

    #[test]
    fn relative_targets() {
        let r = |at: &str, t: &str| {
            relative_target(Path::new(at), Path::new(t))
                .to_string_lossy()
                .into_owned()
        };
        assert_eq!(r("/lib", "usr/lib"), "usr/lib");
        assert_eq!(
            r("/usr/lib/ssl/cert.pem", "/etc/ssl/certs/ca.crt"),
            "../../../etc/ssl/certs/ca.crt"
        );
        assert_eq!(r("/usr/bin/python3", "python3.11"), "python3.11");
        assert_eq!(r("/a/b", "../../../x"), "../x");
        assert_eq!(r("/x", "/"), ".");
    }

    #[test]
    fn merged_usr_chain() {
        // Copying through /lib (a symlink on merged /usr) keeps the link and stores
        // the file at its canonical place.
        let tmp = tempfile::tempdir().unwrap();
        let mut copier = Copier::new(tmp.path(), &noop);
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !fs::symlink_metadata("/lib")
            .unwrap()
            .file_type()
            .is_symlink()
            || !libc.exists()
        {
            panic!("this test expects a merged-/usr Debian x86_64 host");
        }
        copier.copy(libc, &CopyOptions::default()).unwrap();
        assert_eq!(
            fs::read_link(tmp.path().join("lib")).unwrap(),
            Path::new("usr/lib")
        );
        let canonical = libc.canonicalize().unwrap();
        let stored = tmp.path().join(canonical.strip_prefix("/").unwrap());
        assert!(fs::symlink_metadata(&stored).unwrap().is_file());
        // Both names resolve inside the copy.
        assert_eq!(
            fs::read(tmp.path().join("lib/x86_64-linux-gnu/libc.so.6")).unwrap(),
            fs::read(libc).unwrap()
        );
        let src_meta = fs::metadata(&canonical).unwrap();
        let dst_meta = fs::metadata(&stored).unwrap();
        assert_eq!(src_meta.mode(), dst_meta.mode());
        assert_eq!(src_meta.mtime(), dst_meta.mtime());
    }

    #[test]
    fn trees_links_excludes_and_dereference() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path().canonicalize().unwrap();
        fs::create_dir_all(h.join("app/keep/__pycache__")).unwrap();
        fs::create_dir_all(h.join("app/test")).unwrap();
        fs::create_dir_all(h.join("app/sub/test")).unwrap();
        fs::create_dir_all(h.join("etc")).unwrap();
        fs::write(h.join("app/keep/a.py"), "a").unwrap();
        fs::write(h.join("app/keep/__pycache__/a.pyc"), "c").unwrap();
        fs::write(h.join("app/test/t.py"), "t").unwrap();
        fs::write(h.join("app/sub/test/t.py"), "t").unwrap();
        fs::write(h.join("etc/conf"), "conf").unwrap();
        fs::set_permissions(h.join("etc/conf"), fs::Permissions::from_mode(0o4755)).unwrap();
        symlink(h.join("etc/conf"), h.join("app/conf")).unwrap();
        symlink("keep/a.py", h.join("app/inside")).unwrap();

        let iso = tempfile::tempdir().unwrap();
        let mut copier = Copier::new(iso.path(), &noop);
        let options = CopyOptions {
            exclude: vec!["/test".into(), "__pycache__".into()],
            dereference_external: true,
        };
        copier.copy(&h.join("app"), &options).unwrap();
        let d = copier.dest(&h.join("app"));
        assert!(d.join("keep/a.py").is_file());
        assert!(!d.join("keep/__pycache__").exists());
        assert!(!d.join("test").exists());
        assert!(
            d.join("sub/test/t.py").exists(),
            "anchored pattern only at the top"
        );
        // External link became a file, without its setuid bit; internal one stays a link.
        let conf = fs::symlink_metadata(d.join("conf")).unwrap();
        assert!(conf.is_file());
        assert_eq!(conf.mode() & 0o7777, 0o755);
        assert!(copier.take_warnings().iter().any(|w| w.contains("setuid")));
        assert_eq!(
            fs::read_link(d.join("inside")).unwrap(),
            Path::new("keep/a.py")
        );

        // Without dereferencing, the absolute link is rewritten relative and the
        // target is not copied (links inside trees are not followed).
        let iso = tempfile::tempdir().unwrap();
        let mut copier = Copier::new(iso.path(), &noop);
        copier
            .copy(&h.join("app"), &CopyOptions::default())
            .unwrap();
        let link = fs::read_link(copier.dest(&h.join("app/conf"))).unwrap();
        assert!(
            !link.is_absolute() && link.ends_with("etc/conf"),
            "{link:?}"
        );

        // A named symlink brings its target along.
        let iso = tempfile::tempdir().unwrap();
        let mut copier = Copier::new(iso.path(), &noop);
        copier
            .copy(&h.join("app/conf"), &CopyOptions::default())
            .unwrap();
        assert_eq!(
            fs::read_to_string(copier.dest(&h.join("app/conf"))).unwrap(),
            "conf"
        );
        assert!(copier.dest(&h.join("etc/conf")).is_file());
        assert_eq!(copier.files(), 1);

        let err = copier
            .copy(&h.join("nothing"), &CopyOptions::default())
            .unwrap_err();
        assert!(matches!(err, CopyError::Missing { .. }), "{err}");
    }
}
