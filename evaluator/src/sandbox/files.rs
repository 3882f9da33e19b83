//! Files into and out of a sandbox's `/work`, through a descriptor of that directory
//! which the sandbox's init opened inside its own mount namespace and passed out
//! (nothing on the host names the directory by a path). Every name is resolved
//! beneath that descriptor by `openat2` with no symlink, no magic link and no mount
//! crossing, so a sandbox that planted a link, a FIFO or a device gets it refused,
//! never followed; a returned file is checked to be a regular file on the descriptor
//! actually opened, and read up to its cap.
//!
//! The node does all of it as the sandbox's user: the thread's filesystem uid and gid
//! are the sandbox's while it works ([`AsOwner`]), so it needs no capability over
//! files (in a container it has none), files it puts in belong to the sandbox, and
//! it can read and write nothing there that the sandbox's user could not.
//!
//! Names are checked before anything is placed ([`check_name`], [`check_pattern`]):
//! relative, no `.` or `..` or empty component, no NUL, bounded length and depth.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

/// Longest name of a file, in bytes, relative to `/work`.
pub const MAX_NAME_BYTES: usize = 1024;
/// Most directories a name may have above its file.
pub const MAX_DEPTH: usize = 16;
/// Longest component (Linux's NAME_MAX).
const MAX_COMPONENT_BYTES: usize = 255;
/// Most entries of `/work` looked at when patterns are matched: a sandbox that made
/// millions of files costs the node a bounded walk.
pub const MAX_ENTRIES_WALKED: usize = 100_000;
/// Most bytes of names held while `/work` is walked (each name is up to
/// [`MAX_NAME_BYTES`] long).
pub const MAX_NAMES_WALKED_BYTES: usize = 16 << 20;

/// A file a request puts in `/work` before its code runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Relative to `/work` (checked by [`check_name`]).
    pub path: String,
    pub content: Vec<u8>,
    pub executable: bool,
}

/// A request's files: put in `/work` before its code runs, and taken back after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    pub put: Vec<InputFile>,
    pub get: Option<Wanted>,
}

/// What to do with a returned file over its cap (or past the total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Oversize {
    /// Its first bytes, flagged as truncated.
    #[default]
    Truncate,
    /// None of it, with an error saying why.
    Refuse,
}

/// The files a request wants back from `/work` once its code has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Paths or glob patterns relative to `/work` (`*`, `?`, `[...]` within a
    /// component, `**` for any number of directories), checked by [`check_pattern`].
    pub patterns: Vec<String>,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    /// Most files returned (errors included).
    pub max_files: usize,
    pub oversize: Oversize,
}

/// One file (or one refusal) returned from `/work`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedFile {
    /// Relative to `/work`.
    pub path: String,
    /// Its size in the sandbox (as `stat` says; a sparse file's apparent size).
    pub size: u64,
    pub content: Vec<u8>,
    /// Only the first `content.len()` bytes are returned.
    pub truncated: bool,
    /// Why it is not returned (then `content` is empty): not a regular file, a
    /// symbolic link, over its cap, missing.
    pub error: Option<String>,
}

/// A name or pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("contains a NUL byte")]
    Nul,
    #[error("is absolute (names are relative to /work)")]
    Absolute,
    #[error("has an empty, `.` or `..` component")]
    BadComponent,
    #[error("has a component longer than {MAX_COMPONENT_BYTES} bytes")]
    LongComponent,
    #[error("is more than {MAX_DEPTH} directories deep")]
    TooDeep,
    #[error("has a wildcard (`*`, `?` or `[`), which only patterns may have")]
    Wildcard,
    #[error("uses `**` inside a component (it must be a whole component)")]
    DoubleStar,
}

/// Why placing or collecting files failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("placing {path} in /work: {source}")]
    Place { path: String, source: Errno },
    #[error("writing {path} in /work: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("reading /work: {0}")]
    Walk(Errno),
}

fn check_components(name: &str, allow_wildcards: bool) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    if name.contains('\0') {
        return Err(NameError::Nul);
    }
    if name.starts_with('/') {
        return Err(NameError::Absolute);
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > MAX_DEPTH + 1 {
        return Err(NameError::TooDeep);
    }
    for part in parts {
        if part.is_empty() || part == "." || part == ".." {
            return Err(NameError::BadComponent);
        }
        if part.len() > MAX_COMPONENT_BYTES {
            return Err(NameError::LongComponent);
        }
        if !allow_wildcards && crate::fsutil::has_wildcard(part) {
            return Err(NameError::Wildcard);
        }
        if allow_wildcards && part != "**" && part.contains("**") {
            return Err(NameError::DoubleStar);
        }
    }
    Ok(())
}

/// Checks a file's name (relative to `/work`, no wildcard).
pub fn check_name(name: &str) -> Result<(), NameError> {
    check_components(name, false)
}

/// Checks a pattern of files to return (relative to `/work`).
pub fn check_pattern(pattern: &str) -> Result<(), NameError> {
    check_components(pattern, true)
}

/// Whether `path` matches `pattern` (both relative to `/work`, `/`-separated): see
/// [`Wanted::patterns`]. Hidden names (`.x`) match only a component that names them
/// so, and `**` passes over none of them.
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    matches(&pattern, &path)
}

/// Whether `path` (components) matches `pattern` (components; `**` is any run of
/// whole components, possibly none). Dynamic programming over (pattern, path)
/// positions: linear in their product, however many `**` a pattern has.
fn matches(pattern: &[&str], path: &[&str]) -> bool {
    let hidden_ok = |p: &str, name: &str| !name.starts_with('.') || p.starts_with('.');
    // at[j]: pattern[..i] matches path[..j].
    let mut at = vec![false; path.len() + 1];
    at[0] = true;
    for p in pattern {
        let mut next = vec![false; path.len() + 1];
        if *p == "**" {
            // Any run of non-hidden components after a matched prefix.
            for j in 0..=path.len() {
                next[j] = at[j] || (j > 0 && next[j - 1] && !path[j - 1].starts_with('.'));
            }
        } else {
            for j in 1..=path.len() {
                let name = path[j - 1];
                next[j] = at[j - 1] && hidden_ok(p, name) && crate::fsutil::wildcard_match(p, name);
            }
        }
        at = next;
    }
    at[path.len()]
}

/// Resolution beneath a directory descriptor: no symlink (so no magic link), no
/// mount crossed, nothing above it.
fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

fn open_beneath(dir: impl AsFd, name: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY)
        .mode(mode)
        .resolve(beneath());
    loop {
        match openat2(dir.as_fd(), name, how) {
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            r => return r,
        }
    }
}

/// The calling thread acting on files as `uid`:`gid` (its filesystem ids; the other
/// threads of the process are untouched) until dropped, when it is root again.
struct AsOwner;

impl AsOwner {
    fn new(uid: u32, gid: u32) -> Result<AsOwner, Errno> {
        use nix::unistd::{setfsgid, setfsuid, Gid, Uid};
        setfsgid(Gid::from_raw(gid));
        setfsuid(Uid::from_raw(uid));
        // setfsuid says only what was before: asking again tells whether it took.
        let guard = AsOwner;
        let now_uid = setfsuid(Uid::from_raw(uid));
        let now_gid = setfsgid(Gid::from_raw(gid));
        if now_uid.as_raw() != uid || now_gid.as_raw() != gid {
            return Err(Errno::EPERM);
        }
        Ok(guard)
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        use nix::unistd::{setfsgid, setfsuid, Gid, Uid};
        setfsuid(Uid::from_raw(0));
        setfsgid(Gid::from_raw(0));
    }
}

/// Puts `files` in the `/work` of `work` as `uid`:`gid` (so theirs), directories
/// made as needed. Done before the sandbox's code runs; the names were checked.
pub fn place(work: &OwnedFd, files: &[InputFile], uid: u32, gid: u32) -> Result<(), FilesError> {
    let _owner = AsOwner::new(uid, gid).map_err(|source| FilesError::Place {
        path: String::new(),
        source,
    })?;
    for file in files {
        let place_err = |source| FilesError::Place {
            path: file.path.clone(),
            source,
        };
        let mut dir = work.try_clone().map_err(|e| FilesError::Write {
            path: file.path.clone(),
            source: e,
        })?;
        let parts: Vec<&str> = file.path.split('/').collect();
        let (name, parents) = parts.split_last().ok_or(place_err(Errno::EINVAL))?;
        for part in parents {
            match nix::sys::stat::mkdirat(&dir, *part, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(place_err(e)),
            }
            dir = open_beneath(
                &dir,
                part,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                Mode::empty(),
            )
            .map_err(place_err)?;
        }
        let mode = if file.executable { 0o755 } else { 0o644 };
        let fd = open_beneath(
            &dir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(mode),
        )
        .map_err(place_err)?;
        // The umask may have taken bits off.
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(place_err)?;
        std::fs::File::from(fd)
            .write_all(&file.content)
            .map_err(|e| FilesError::Write {
                path: file.path.clone(),
                source: e,
            })?;
    }
    Ok(())
}

/// What an entry of `/work` is, as the walk saw it (not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other(&'static str),
}

fn kind_of(mode: u32) -> Kind {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        SFlag::S_IFIFO => Kind::Other("a FIFO"),
        SFlag::S_IFSOCK => Kind::Other("a socket"),
        SFlag::S_IFCHR => Kind::Other("a character device"),
        SFlag::S_IFBLK => Kind::Other("a block device"),
        _ => Kind::Other("not a regular file"),
    }
}

/// Every entry under `work`, depth first, names sorted, at most
/// [`MAX_ENTRIES_WALKED`] and [`MAX_DEPTH`] deep; directories are entered only
/// through `openat2` beneath their parent (never through a link).
fn walk(work: &OwnedFd) -> Result<(Vec<(String, Kind)>, bool), FilesError> {
    let mut out = Vec::new();
    let mut names_bytes = 0usize;
    let mut cut = false;
    // Directories to list, by path: each is opened only when its turn comes, so the
    // walk holds one descriptor at a time however wide the tree.
    let mut stack: Vec<(String, usize)> = vec![(String::new(), 0)];
    while let Some((prefix, depth)) = stack.pop() {
        let at = if prefix.is_empty() {
            "."
        } else {
            prefix.as_str()
        };
        let fd = match open_beneath(
            work,
            at,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) if prefix.is_empty() => return Err(FilesError::Walk(e)),
            // Not a directory reachable without a link any more.
            Err(_) => continue,
        };
        let listed = fd.try_clone().map_err(|e| {
            FilesError::Walk(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
        })?;
        let mut dir = nix::dir::Dir::from_fd(listed).map_err(FilesError::Walk)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(FilesError::Walk)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            // A name that is not UTF-8 cannot be asked for or sent back as it is.
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            names_bytes += prefix.len() + 1 + name.len();
            if out.len() + names.len() >= MAX_ENTRIES_WALKED || names_bytes > MAX_NAMES_WALKED_BYTES
            {
                cut = true;
                break;
            }
            names.push(name.to_owned());
        }
        drop(dir);
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let stat = match nix::sys::stat::fstatat(
                &fd,
                name.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(s) => s,
                // Gone meanwhile.
                Err(_) => continue,
            };
            let kind = kind_of(stat.st_mode);
            out.push((path.clone(), kind));
            if kind == Kind::Dir {
                if depth + 1 > MAX_DEPTH {
                    cut = true;
                    continue;
                }
                subdirs.push((path, depth + 1));
            }
        }
        // Depth first, in name order.
        stack.extend(subdirs.into_iter().rev());
        if cut {
            break;
        }
    }
    Ok((out, cut))
}

/// Reads the files of `/work` that `wanted` names, after the sandbox's code ended, as
/// `uid`:`gid` (the sandbox's user).
pub fn collect(
    work: &OwnedFd,
    wanted: &Wanted,
    uid: u32,
    gid: u32,
) -> Result<Vec<ReturnedFile>, FilesError> {
    let _owner = AsOwner::new(uid, gid).map_err(FilesError::Walk)?;
    let (entries, cut) = walk(work)?;
    let patterns: Vec<Vec<&str>> = wanted
        .patterns
        .iter()
        .map(|p| p.split('/').collect())
        .collect();
    let mut out: Vec<ReturnedFile> = Vec::new();
    let mut total: u64 = 0;
    let refused = |path: &str, size: u64, why: String| ReturnedFile {
        path: path.to_string(),
        size,
        content: Vec::new(),
        truncated: false,
        error: Some(why),
    };
    for (path, kind) in &entries {
        if out.len() >= wanted.max_files {
            break;
        }
        let parts: Vec<&str> = path.split('/').collect();
        if !patterns.iter().any(|p| matches(p, &parts)) {
            continue;
        }
        match kind {
            Kind::Dir => continue,
            Kind::Symlink => {
                out.push(refused(path, 0, "a symbolic link (not followed)".into()));
                continue;
            }
            Kind::Other(what) => {
                out.push(refused(path, 0, format!("{what}, not a regular file")));
                continue;
            }
            Kind::File => {}
        }
        // Opened beneath /work without following anything, then checked on the
        // descriptor itself: what was planted between the walk and now is refused
        // the same way. Non-blocking, so that a FIFO swapped in cannot hold us.
        let fd = match open_beneath(
            work,
            path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => {
                out.push(refused(path, 0, "a symbolic link (not followed)".into()));
                continue;
            }
            Err(e) => {
                out.push(refused(path, 0, format!("cannot be opened: {e}")));
                continue;
            }
        };
        let stat = match fstat(&fd) {
            Ok(s) => s,
            Err(e) => {
                out.push(refused(path, 0, format!("cannot be read: {e}")));
                continue;
            }
        };
        if kind_of(stat.st_mode) != Kind::File {
            out.push(refused(path, 0, "not a regular file".into()));
            continue;
        }
        let size = stat.st_size.max(0) as u64;
        let left = wanted.max_total_bytes.saturating_sub(total);
        let cap = wanted.max_file_bytes.min(left);
        if size > cap && wanted.oversize == Oversize::Refuse {
            let why = if size > wanted.max_file_bytes {
                format!(
                    "{size} bytes, over the cap of {} bytes per file",
                    wanted.max_file_bytes
                )
            } else {
                format!(
                    "{size} bytes, over what is left of the total cap of {} bytes",
                    wanted.max_total_bytes
                )
            };
            out.push(refused(path, size, why));
            continue;
        }
        let mut content = Vec::with_capacity(size.min(cap) as usize);
        // At most the cap, whatever the size said: the file may have grown.
        if let Err(e) = std::fs::File::from(fd).take(cap).read_to_end(&mut content) {
            out.push(refused(path, size, format!("cannot be read: {e}")));
            continue;
        }
        total += content.len() as u64;
        let truncated = size > content.len() as u64;
        out.push(ReturnedFile {
            path: path.clone(),
            size,
            content,
            truncated,
            error: None,
        });
    }
    // Named files (no wildcard) that are not there say so.
    for pattern in &wanted.patterns {
        let named = !crate::fsutil::has_wildcard(pattern);
        if named && !out.iter().any(|f| &f.path == pattern) && out.len() < wanted.max_files {
            let is_dir = entries.iter().any(|(p, k)| p == pattern && *k == Kind::Dir);
            let why = if is_dir {
                "a directory"
            } else if cut {
                "not looked at: /work holds more than the walk reads"
            } else {
                "no such file"
            };
            out.push(refused(pattern, 0, why.into()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_relative_plain_and_bounded() {
        assert_eq!(check_name("a/b.csv"), Ok(()));
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name("/etc/passwd"), Err(NameError::Absolute));
        assert_eq!(check_name("a/../b"), Err(NameError::BadComponent));
        assert_eq!(check_name(".."), Err(NameError::BadComponent));
        assert_eq!(check_name("./a"), Err(NameError::BadComponent));
        assert_eq!(check_name("a//b"), Err(NameError::BadComponent));
        assert_eq!(check_name("a/"), Err(NameError::BadComponent));
        assert_eq!(check_name("a\0b"), Err(NameError::Nul));
        assert_eq!(check_name(&"x".repeat(256)), Err(NameError::LongComponent));
        assert_eq!(check_name(&"a/".repeat(600)), Err(NameError::TooLong));
        assert_eq!(check_name(&"a/".repeat(18)[..35]), Err(NameError::TooDeep));
        assert_eq!(check_name(&"a/".repeat(17)[..33]), Ok(()));
        assert_eq!(check_name("*.csv"), Err(NameError::Wildcard));
        assert_eq!(check_pattern("out/*.csv"), Ok(()));
        assert_eq!(check_pattern("**/*.png"), Ok(()));
        assert_eq!(check_pattern("a**"), Err(NameError::DoubleStar));
        assert_eq!(check_pattern("../x"), Err(NameError::BadComponent));
    }

    #[test]
    fn patterns_match_whole_components() {
        let m = pattern_matches;
        assert!(m("out.csv", "out.csv"));
        assert!(m("*.csv", "out.csv"));
        assert!(!m("*.csv", "d/out.csv"));
        assert!(m("**/*.csv", "out.csv"));
        assert!(m("**/*.csv", "a/b/out.csv"));
        assert!(m("a/**", "a/b/c"));
        assert!(!m("a/**", "b/c"));
        assert!(!m("*", ".hidden"));
        assert!(m(".*", ".hidden"));
        assert!(m("**", "a/b"));
        // `**` passes over no hidden name, unless named.
        assert!(!m("**", ".git/config"));
        assert!(!m("**/*.x", "a/.h/b.x"));
        assert!(m(".git/**", ".git/hooks/x"));
        assert!(m("**/.h/*.x", "a/.h/b.x"));
        // Many `**` against a deep path that does not match: at once.
        let deep = vec!["a"; 17].join("/");
        let pattern = format!("{}/nomatch", vec!["**"; 16].join("/"));
        let started = std::time::Instant::now();
        assert!(!m(&pattern, &deep));
        assert!(m(&vec!["**"; 16].join("/"), &deep));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
