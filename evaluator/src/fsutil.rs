//! Small filesystem helpers shared by the installer, the ELF resolver and the packer:
//! wildcard matching, path globbing, jailed symlink resolution and the atomic swap.

use std::io;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};

/// Matches `name` against a pattern with `*` (any run), `?` (one character) and
/// `[abc]` / `[a-z]` / `[!a]` classes. Nothing matches across `/`.
pub(crate) fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' if n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, len)) = class_match(&p[pi..], n[ni]) {
                        if matched {
                            pi += len;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] && c != '*' && c != '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) if n[sn] != '/' => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            _ => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Matches `c` against a `[...]` class at the start of `p`: (matched, class length),
/// or None when the bracket is not a well-formed class.
fn class_match(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

pub(crate) fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands an absolute path pattern component by component (wildcards in any
/// component; no `**`). Returns existing paths, sorted; hidden names match only a
/// pattern that starts with `.`.
pub(crate) fn glob(pattern: &Path) -> io::Result<Vec<PathBuf>> {
    if !pattern.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "glob pattern must be absolute",
        ));
    }
    let mut current = vec![PathBuf::from("/")];
    for component in pattern.components() {
        let part = match component {
            Component::RootDir | Component::Prefix(_) => continue,
            Component::CurDir => continue,
            Component::ParentDir => {
                current = current.into_iter().map(|p| p.join("..")).collect();
                continue;
            }
            Component::Normal(part) => part.to_string_lossy().into_owned(),
        };
        let mut next = Vec::new();
        for dir in &current {
            if !has_wildcard(&part) {
                let candidate = dir.join(&part);
                if std::fs::symlink_metadata(&candidate).is_ok() {
                    next.push(candidate);
                }
                continue;
            }
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            let mut matched = Vec::new();
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                if wildcard_match(&part, &name) {
                    matched.push(dir.join(name));
                }
            }
            matched.sort();
            next.extend(matched);
        }
        current = next;
    }
    Ok(current)
}

/// Why a path inside a jail does not resolve to a place inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JailError {
    /// A symlink on the way has an absolute target.
    Absolute(PathBuf),
    /// `..` climbs above the jail root.
    Escapes,
    /// More than 40 symlinks on the way.
    Loop,
}

/// Resolves `rel` inside `root` the way the kernel would if `root` were `/`, without
/// ever leaving `root`: returns the resolved path relative to `root`. Components that
/// do not exist are taken as they are (the result may not exist).
pub(crate) fn resolve_in_jail(root: &Path, rel: &Path) -> Result<PathBuf, JailError> {
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut pending, rel)?;
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            if resolved.pop().is_none() {
                return Err(JailError::Escapes);
            }
            continue;
        }
        let mut candidate: PathBuf = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(JailError::Loop);
                }
                let target = std::fs::read_link(&candidate).map_err(|_| JailError::Loop)?;
                if target.is_absolute() {
                    return Err(JailError::Absolute(target));
                }
                push_components(&mut pending, &target)?;
            }
            _ => resolved.push(part),
        }
    }
    Ok(resolved.iter().collect())
}

/// Pushes the components of `path` onto a stack so they pop in order.
fn push_components(stack: &mut Vec<std::ffi::OsString>, path: &Path) -> Result<(), JailError> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_owned()),
            Component::ParentDir => parts.push("..".into()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(JailError::Absolute(path.to_owned()))
            }
        }
    }
    stack.extend(parts.into_iter().rev());
    Ok(())
}

/// Puts the directory `staging` at `dest` atomically. If `dest` existed, returns the
/// path now holding the previous version (for the caller to delete).
pub(crate) fn swap_into_place(staging: &Path, dest: &Path) -> io::Result<Option<PathBuf>> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::rename(staging, dest)?;
            return Ok(None);
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    // One exchange: `dest` is never missing and never half-written.
    match renameat2(
        AT_FDCWD,
        staging,
        AT_FDCWD,
        dest,
        RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => Ok(Some(staging.to_owned())),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            // Filesystems without RENAME_EXCHANGE: rename the old one aside first.
            let aside = sibling(dest, ".old")?;
            std::fs::rename(dest, &aside)?;
            if let Err(e) = std::fs::rename(staging, dest) {
                let _ = std::fs::rename(&aside, dest);
                return Err(e);
            }
            Ok(Some(aside))
        }
        Err(errno) => Err(errno.into()),
    }
}

/// A fresh, unused name next to `path`: `<parent>/<prefix>-<file name>-<random>`.
/// Dot-prefixed so the registry never loads it.
pub(crate) fn sibling(path: &Path, prefix: &str) -> io::Result<PathBuf> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-{name}-"))
        .tempdir_in(parent)?;
    // Only the unique name is wanted; the empty directory is replaced by a rename.
    let path = dir.keep();
    std::fs::remove_dir(&path)?;
    Ok(path)
}

/// Sorted entry names of `dir` (tests).
#[cfg(test)]
pub(crate) fn sorted_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readable directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.so", "libc.so"));
        assert!(wildcard_match("lib*.so.*", "libz.so.1.2"));
        assert!(!wildcard_match("*.so", "libc.so.6"));
        assert!(wildcard_match(
            "config-3.11-*",
            "config-3.11-x86_64-linux-gnu"
        ));
        assert!(wildcard_match("?at", "cat"));
        assert!(!wildcard_match("?at", "at"));
        assert!(wildcard_match("[a-c]at", "bat"));
        assert!(!wildcard_match("[!a-c]at", "bat"));
        assert!(!wildcard_match("a*", "a/b"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("plain", "plain"));
        assert!(!wildcard_match("plain", "plainer"));
    }

    #[test]
    fn globbing() {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["a/x.conf", "a/y.conf", "a/.h.conf", "b/x.conf", "b/z.txt"] {
            let p = tmp.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let got = glob(&tmp.path().join("*/*.conf")).unwrap();
        let rel: Vec<_> = got
            .iter()
            .map(|p| {
                p.strip_prefix(tmp.path())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(rel, ["a/x.conf", "a/y.conf", "b/x.conf"]);
        assert_eq!(glob(&tmp.path().join("b/z.txt")).unwrap().len(), 1);
        assert!(glob(&tmp.path().join("c/*")).unwrap().is_empty());
    }

    #[test]
    fn jail() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("usr/lib/deep")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("../..", root.join("usr/lib/up")).unwrap();
        symlink("up/..", root.join("usr/lib/sneaky")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve_in_jail(root, Path::new("lib/x")).unwrap(),
            Path::new("usr/lib/x")
        );
        assert_eq!(
            resolve_in_jail(root, Path::new("usr/lib/up")).unwrap(),
            Path::new("")
        );
        // Lexically `usr/lib/deep/up/..` is inside; physically it climbs out.
        assert_eq!(
            resolve_in_jail(root, Path::new("usr/lib/deep/../up/..")),
            Err(JailError::Escapes)
        );
        assert_eq!(
            resolve_in_jail(root, Path::new("usr/lib/sneaky")),
            Err(JailError::Escapes)
        );
        assert_eq!(
            resolve_in_jail(root, Path::new("usr/lib/deep/..")).unwrap(),
            Path::new("usr/lib")
        );
        assert_eq!(
            resolve_in_jail(root, Path::new("abs/x")),
            Err(JailError::Absolute("/etc".into()))
        );
        assert_eq!(
            resolve_in_jail(root, Path::new("loop")),
            Err(JailError::Loop)
        );
        assert_eq!(
            resolve_in_jail(root, Path::new("..")),
            Err(JailError::Escapes)
        );
    }

    #[test]
    fn swap() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("rt");
        let new = tmp.path().join(".staging-1");
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("v"), "1").unwrap();
        assert_eq!(swap_into_place(&new, &dest).unwrap(), None);
        let new = tmp.path().join(".staging-2");
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("v"), "2").unwrap();
        let old = swap_into_place(&new, &dest).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("v")).unwrap(), "2");
        assert_eq!(std::fs::read_to_string(old.join("v")).unwrap(), "1");
        let aside = sibling(&dest, ".old").unwrap();
        assert!(!aside.exists());
        assert!(aside
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".old-rt-"));
    }
}
