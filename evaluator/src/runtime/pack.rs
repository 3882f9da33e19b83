//! Runtime archives: build once, then move `<name>-<version>.tar.gz` plus its
//! `.sha256` to hosts that have no compilers or package managers.
//!
//! Unpacking treats the archive as hostile: it is checked against its checksum, every
//! entry is inspected before it is written (paths, link targets, types, modes), the
//! symlinks are resolved again once everything is on disk (chains of individually
//! harmless links can still climb out), the result must load through the strict
//! runtime.yml loader, and only then is it swapped into place. What it installs is
//! owned by the unpacking user (root on a node) and writable by nobody else, whatever
//! modes the archive claims, and unpacking stops at [`UnpackLimits`] (bytes, entries,
//! expansion ratio) so a small archive cannot fill the disk.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::config::{ConfigError, Runtime, CONFIG_FILE};
use super::valid_name;
use crate::fsutil::{resolve_in_jail, swap_into_place, JailError};

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("`{0}` is not a valid runtime name")]
    InvalidName(String),
    #[error("the runtime does not load")]
    Runtime(#[source] ConfigError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot pack {entry}: {problem}")]
    Unpackable { entry: String, problem: String },
    #[error("no checksum given and {} cannot be read", path.display())]
    ChecksumMissing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} does not start with a sha256 hex digest", path.display())]
    ChecksumFormat { path: PathBuf },
    #[error("checksum mismatch for {}: expected {expected}, got {actual}", path.display())]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("refused archive entry `{entry}`: {problem}")]
    Refused { entry: String, problem: String },
    #[error("refused archive entry `{entry}`: cannot extract")]
    Extract {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("refused archive: {0}")]
    Layout(String),
    #[error("refused archive {}: {problem}", path.display())]
    Limit { path: PathBuf, problem: String },
}

/// Why a link in an archive is refused.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("symlink with an empty target")]
    EmptyTarget,
    #[error("symlink to absolute path {}", .0.display())]
    Absolute(PathBuf),
    #[error("symlink to {} escapes the runtime directory", .0.display())]
    Escapes(PathBuf),
    #[error("hard link to {} points outside the runtime", .0.display())]
    Outside(PathBuf),
}

/// Bounds on what unpacking one archive may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Bytes of the uncompressed tar stream (contents, headers and padding).
    pub max_bytes: u64,
    /// Entries (files, directories, links).
    pub max_entries: u64,
    /// Uncompressed bytes per compressed byte of the archive.
    pub max_ratio: u64,
}

impl Default for UnpackLimits {
    /// Room for a JDK or a Python with numpy and pandas (a few hundred MiB, tens of
    /// thousands of files, compressing 3 to 5 times), far below a decompression bomb.
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 4 << 30,
            max_entries: 200_000,
            max_ratio: 50,
        }
    }
}

/// Counts the uncompressed bytes read and fails the read past `limit`; `exceeded`
/// tells the caller why the tar reader failed.
struct Budget<R> {
    inner: R,
    read: u64,
    limit: u64,
    exceeded: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            self.exceeded.set(true);
            return Err(io::Error::other("archive expands past its limit"));
        }
        Ok(n)
    }
}

type Result<T> = std::result::Result<T, PackError>;

fn io_context(context: impl Into<String>) -> impl FnOnce(io::Error) -> PackError {
    let context = context.into();
    move |source| PackError::Io { context, source }
}

/// Hashes what passes through to the inner writer.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Packs `<runtimes_dir>/<name>` into `<out_dir>/<name>-<version>.tar.gz` and writes
/// `<that>.sha256` (sha256sum format). Returns the archive path and its sha256.
/// Refuses runtimes that [`unpack`] would refuse.
pub fn pack(runtimes_dir: &Path, name: &str, out_dir: &Path) -> Result<(PathBuf, String)> {
    if !valid_name(name) {
        return Err(PackError::InvalidName(name.to_owned()));
    }
    let dir = runtimes_dir.join(name);
    let (runtime, _) = Runtime::load(&dir).map_err(PackError::Runtime)?;
    check_tree(&dir, name)?;

    let file_name = format!("{name}-{}.tar.gz", runtime.version());
    let out = out_dir.join(&file_name);
    std::fs::create_dir_all(out_dir)
        .map_err(io_context(format!("cannot create {}", out_dir.display())))?;
    // Written under a temporary name so a half-written archive never has the real one.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}-"))
        .tempfile_in(out_dir)
        .map_err(io_context(format!(
            "cannot create a file in {}",
            out_dir.display()
        )))?;
    let digest = {
        let writer = HashWriter {
            inner: io::BufWriter::new(tmp.as_file()),
            hasher: Sha256::new(),
        };
        let mut builder = tar::Builder::new(GzEncoder::new(writer, flate2::Compression::default()));
        builder.follow_symlinks(false);
        // Complete headers keep modification times, which Python's bytecode cache checks.
        builder.mode(tar::HeaderMode::Complete);
        builder
            .append_dir_all(name, &dir)
            .map_err(io_context(format!("cannot archive {}", dir.display())))?;
        let gz = builder
            .into_inner()
            .map_err(io_context("cannot finish the archive"))?;
        let mut writer = gz
            .finish()
            .map_err(io_context("cannot finish the archive"))?;
        writer
            .flush()
            .map_err(io_context("cannot write the archive"))?;
        hex(&writer.hasher.finalize())
    };
    tmp.persist(&out)
        .map_err(|e| io_context(format!("cannot write {}", out.display()))(e.error))?;

    let sum_path = checksum_path(&out);
    std::fs::write(&sum_path, format!("{digest}  {file_name}\n"))
        .map_err(io_context(format!("cannot write {}", sum_path.display())))?;
    Ok((out, digest))
}

/// Checks what is about to be packed: only files, directories and symlinks that stay
/// inside, no setuid/setgid.
fn check_tree(dir: &Path, name: &str) -> Result<()> {
    restrict_mode(dir)?;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).map_err(io_context(format!("cannot list {}", d.display())))?
        {
            let entry = entry.map_err(io_context(format!("cannot list {}", d.display())))?;
            let path = entry.path();
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_owned();
            let shown = Path::new(name).join(&rel).display().to_string();
            let unpackable = |problem: &str| PackError::Unpackable {
                entry: shown.clone(),
                problem: problem.into(),
            };
            let meta = std::fs::symlink_metadata(&path)
                .map_err(io_context(format!("cannot stat {}", path.display())))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                match resolve_in_jail(dir, &rel) {
                    Ok(_) => {}
                    Err(JailError::Absolute(_)) => {
                        return Err(unpackable("symlink with an absolute target"))
                    }
                    Err(JailError::Escapes) => {
                        return Err(unpackable("symlink escapes the runtime directory"))
                    }
                    Err(JailError::Loop) => return Err(unpackable("symlink loop")),
                }
            } else if !kind.is_file() {
                return Err(unpackable("not a file, directory or symlink"));
            }
            if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o6000 != 0
                && !kind.is_symlink()
            {
                return Err(unpackable("setuid or setgid bit"));
            }
        }
    }
    Ok(())
}

/// `<archive>.sha256`.
fn checksum_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_owned();
    name.push(".sha256");
    archive.with_file_name(name)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = BufReader::new(
        File::open(path).map_err(io_context(format!("cannot open {}", path.display())))?,
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_context(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Verifies, extracts and installs a runtime archive into `runtimes_dir`, replacing an
/// installed runtime of the same name atomically. `expected_sha256` defaults to the
/// digest in `<archive>.sha256`.
pub fn unpack(
    archive: &Path,
    runtimes_dir: &Path,
    expected_sha256: Option<&str>,
) -> Result<Runtime> {
    unpack_with_limits(
        archive,
        runtimes_dir,
        expected_sha256,
        &UnpackLimits::default(),
    )
}

/// [`unpack`] with explicit bounds on what the archive may write.
pub fn unpack_with_limits(
    archive: &Path,
    runtimes_dir: &Path,
    expected_sha256: Option<&str>,
    limits: &UnpackLimits,
) -> Result<Runtime> {
    let expected = match expected_sha256 {
        Some(sum) => sum.trim().to_ascii_lowercase(),
        None => {
            let path = checksum_path(archive);
            let text =
                std::fs::read_to_string(&path).map_err(|source| PackError::ChecksumMissing {
                    path: path.clone(),
                    source,
                })?;
            text.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        }
    };
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PackError::ChecksumFormat {
            path: checksum_path(archive),
        });
    }
    let actual = sha256_file(archive)?;
    if actual != expected {
        return Err(PackError::ChecksumMismatch {
            path: archive.to_owned(),
            expected,
            actual,
        });
    }

    std::fs::create_dir_all(runtimes_dir).map_err(io_context(format!(
        "cannot create {}",
        runtimes_dir.display()
    )))?;
    // Dot-named: the registry skips it; TempDir removes it on every way out.
    let staging = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(runtimes_dir)
        .map_err(io_context(format!(
            "cannot create a staging directory in {}",
            runtimes_dir.display()
        )))?;
    let name = extract(archive, staging.path(), limits)?;
    let extracted = staging.path().join(&name);
    check_extracted(&extracted, &name)?;
    Runtime::load(&extracted).map_err(PackError::Runtime)?;

    let dest = runtimes_dir.join(&name);
    let old = swap_into_place(&extracted, &dest).map_err(io_context(format!(
        "cannot move the runtime to {}",
        dest.display()
    )))?;
    if let Some(old) = old {
        // Inside the staging directory unless the fallback renamed it aside.
        if !old.starts_with(staging.path()) {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    drop(staging);
    let (runtime, _) = Runtime::load(&dest).map_err(PackError::Runtime)?;
    Ok(runtime)
}

/// Extracts every entry after checking it; returns the single top-level directory.
fn extract(archive: &Path, staging: &Path, limits: &UnpackLimits) -> Result<String> {
    let file =
        File::open(archive).map_err(io_context(format!("cannot open {}", archive.display())))?;
    let compressed = file
        .metadata()
        .map_err(io_context(format!("cannot stat {}", archive.display())))?
        .len();
    let by_ratio = limits.max_ratio.saturating_mul(compressed.max(1));
    let (limit, bound) = if by_ratio < limits.max_bytes {
        (
            by_ratio,
            format!(
                "{} times its compressed size of {compressed} bytes",
                limits.max_ratio
            ),
        )
    } else {
        (limits.max_bytes, "the maximum size".to_owned())
    };
    let exceeded = std::rc::Rc::new(std::cell::Cell::new(false));
    let budget = Budget {
        inner: GzDecoder::new(BufReader::new(file)),
        read: 0,
        limit,
        exceeded: exceeded.clone(),
    };
    let too_big = || PackError::Limit {
        path: archive.to_owned(),
        problem: format!("it expands to more than {limit} bytes ({bound})"),
    };
    let mut tar = tar::Archive::new(budget);
    // Nothing installed is writable by group or others, whatever the archive says: every
    // sandbox binds and runs these files.
    tar.set_mask(0o022);
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    tar.set_preserve_ownerships(false);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(false);
    let read_err = || io_context(format!("cannot read {}", archive.display()));
    let mut top: Option<String> = None;
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut count: u64 = 0;
    for entry in tar.entries().map_err(read_err())? {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(_) if exceeded.get() => return Err(too_big()),
            Err(e) => return Err(read_err()(e)),
        };
        count += 1;
        if count > limits.max_entries {
            return Err(PackError::Limit {
                path: archive.to_owned(),
                problem: format!("it has more than {} entries", limits.max_entries),
            });
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |problem: &str| PackError::Refused {
            entry: raw.clone(),
            problem: problem.to_owned(),
        };

        let path = entry
            .path()
            .map_err(|_| refuse("path is not valid"))?
            .into_owned();
        let mut parts: Vec<String> = Vec::new();
        for c in path.components() {
            match c {
                Component::RootDir | Component::Prefix(_) => return Err(refuse("absolute path")),
                Component::ParentDir => return Err(refuse("`..` in the path")),
                Component::CurDir => {}
                Component::Normal(p) => parts.push(
                    p.to_str()
                        .ok_or_else(|| refuse("path is not UTF-8"))?
                        .to_owned(),
                ),
            }
        }
        let Some(first) = parts.first().cloned() else {
            return Err(refuse("empty path"));
        };
        match &top {
            None if !valid_name(&first) => {
                return Err(refuse("top-level directory is not a valid runtime name"))
            }
            None => top = Some(first.clone()),
            Some(t) if *t != first => {
                return Err(refuse(&format!(
                    "second top-level entry (the first was `{t}`)"
                )))
            }
            Some(_) => {}
        }
        let normalized: PathBuf = parts.iter().collect();
        if !seen.insert(normalized.clone()) {
            return Err(refuse("duplicate entry"));
        }

        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|_| refuse("unreadable mode"))?;
        if mode & 0o6000 != 0 && !kind.is_symlink() {
            return Err(refuse("setuid or setgid bit"));
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Directory => {
                if parts.len() == 1 && kind != tar::EntryType::Directory {
                    return Err(refuse("the top-level entry must be a directory"));
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|_| refuse("unreadable link target"))?;
                let target = target
                    .ok_or_else(|| refuse("symlink without a target"))?
                    .into_owned();
                check_symlink(&parts, &target).map_err(|e| refuse(&e.to_string()))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|_| refuse("unreadable link target"))?;
                let target = target
                    .ok_or_else(|| refuse("hard link without a target"))?
                    .into_owned();
                check_hard_link(&first, &target).map_err(|e| refuse(&e.to_string()))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => return Err(refuse("device file")),
            tar::EntryType::Fifo => return Err(refuse("fifo")),
            other => return Err(refuse(&format!("unsupported entry type {other:?}"))),
        }
        let unpacked = match entry.unpack_in(staging) {
            Ok(unpacked) => unpacked,
            Err(_) if exceeded.get() => return Err(too_big()),
            Err(source) => {
                return Err(PackError::Extract {
                    entry: raw.clone(),
                    source,
                })
            }
        };
        if !unpacked {
            return Err(refuse("path leaves the destination"));
        }
    }
    if exceeded.get() {
        return Err(too_big());
    }
    top.ok_or_else(|| PackError::Layout("the archive is empty".into()))
}

/// A symlink at `parts` (components from the top-level directory) may point only
/// relatively, and not above the top-level directory.
fn check_symlink(parts: &[String], target: &Path) -> std::result::Result<(), LinkError> {
    if target.as_os_str().is_empty() {
        return Err(LinkError::EmptyTarget);
    }
    // Depth of the link's directory below the top-level directory.
    let mut level = parts.len() as isize - 2;
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(LinkError::Absolute(target.to_owned()))
            }
            Component::ParentDir => level -= 1,
            Component::Normal(_) => level += 1,
            Component::CurDir => {}
        }
        if level < 0 {
            return Err(LinkError::Escapes(target.to_owned()));
        }
    }
    Ok(())
}

/// A hard link must name another entry of the same runtime.
fn check_hard_link(top: &str, target: &Path) -> std::result::Result<(), LinkError> {
    let mut components = target
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    let inside = components.next() == Some(Component::Normal(top.as_ref()))
        && components.all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(())
    } else {
        Err(LinkError::Outside(target.to_owned()))
    }
}

/// Closes `path` to writes by group and others. Directories tar made for entries
/// without their own escape the archive's mask; `path` is not a symlink (checked by the
/// caller or above), so chmod cannot be redirected, and the staging directory is ours.
fn restrict_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)
        .map_err(io_context(format!("cannot stat {}", path.display())))?;
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 && !meta.file_type().is_symlink() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7755)).map_err(
            io_context(format!("cannot restrict the mode of {}", path.display())),
        )?;
    }
    Ok(())
}

/// After extraction: runtime.yml where it belongs, and every symlink resolving inside
/// the runtime when followed for real (link chains can escape where each link alone
/// looked harmless).
fn check_extracted(dir: &Path, name: &str) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        _ => return Err(PackError::Layout(format!("`{name}` is not a directory"))),
    }
    match std::fs::symlink_metadata(dir.join(CONFIG_FILE)) {
        Ok(m) if m.is_file() => {}
        _ => return Err(PackError::Layout(format!("no {name}/{CONFIG_FILE}"))),
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).map_err(io_context(format!("cannot list {}", d.display())))?
        {
            let entry = entry.map_err(io_context(format!("cannot list {}", d.display())))?;
            let kind = entry.file_type().map_err(io_context(format!(
                "cannot stat {}",
                entry.path().display()
            )))?;
            let rel = entry
                .path()
                .strip_prefix(dir)
                .map(Path::to_owned)
                .unwrap_or_default();
            if !kind.is_symlink() {
                restrict_mode(&entry.path())?;
            }
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_symlink() {
                if let Err(e) = resolve_in_jail(dir, &rel) {
                    let problem = match e {
                        JailError::Absolute(t) => {
                            format!("symlink chain reaches absolute path {}", t.display())
                        }
                        JailError::Escapes => "symlink chain escapes the runtime directory".into(),
                        JailError::Loop => "symlink loop".into(),
                    };
                    return Err(PackError::Refused {
                        entry: Path::new(name).join(&rel).display().to_string(),
                        problem,
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::config::tests::{good_yml, make_runtime};
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    /// An installed runtime `rt` with a symlink, a hard-to-fake mtime and an executable.
    fn runtime(runtimes: &Path, version: &str) -> PathBuf {
        let dir = make_runtime(runtimes, "rt", &good_yml("rt", "shell", version));
        std::fs::create_dir_all(dir.join("isolated/usr/lib")).unwrap();
        symlink("usr/lib", dir.join("isolated/lib")).unwrap();
        symlink("../../etc", dir.join("isolated/usr/lib/etc")).unwrap();
        let tool = dir.join("isolated/usr/bin/tool");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let when =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        File::open(&tool).unwrap().set_modified(when).unwrap();
        dir
    }

    #[test]
    fn round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let built = tmp.path().join("built");
        runtime(&built, "1.2.3");
        let (archive, sum) = pack(&built, "rt", &tmp.path().join("out")).unwrap();
        assert_eq!(archive.file_name().unwrap(), "rt-1.2.3.tar.gz");
        let sum_file =
            std::fs::read_to_string(tmp.path().join("out/rt-1.2.3.tar.gz.sha256")).unwrap();
        assert_eq!(sum_file, format!("{sum}  rt-1.2.3.tar.gz\n"));
        assert_eq!(sha256_file(&archive).unwrap(), sum);

        let hosts = tmp.path().join("host");
        let rt = unpack(&archive, &hosts, None).unwrap();
        assert_eq!(rt.name(), "rt");
        assert_eq!(rt.version(), "1.2.3");
        assert_eq!(rt.dir(), hosts.join("rt"));
        let tool = hosts.join("rt/isolated/usr/bin/tool");
        let meta = std::fs::metadata(&tool).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o755);
        assert_eq!(meta.mtime(), 1_600_000_000);
        assert_eq!(
            std::fs::read_link(hosts.join("rt/isolated/lib")).unwrap(),
            Path::new("usr/lib")
        );
        assert_eq!(crate::fsutil::sorted_names(&hosts), ["rt"]);

        // A newer version replaces the installed one; explicit checksums work too.
        let built2 = tmp.path().join("built2");
        runtime(&built2, "1.3.0");
        let (archive2, sum2) = pack(&built2, "rt", &tmp.path().join("out")).unwrap();
        let rt = unpack(&archive2, &hosts, Some(&sum2.to_uppercase())).unwrap();
        assert_eq!(rt.version(), "1.3.0");
        assert_eq!(crate::fsutil::sorted_names(&hosts), ["rt"]);

        // Wrong checksum: refused, nothing changes.
        let err = unpack(&archive, &hosts, Some(&sum2))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("checksum mismatch for"), "{err}");
        assert_eq!(
            Runtime::load(&hosts.join("rt")).unwrap().0.version(),
            "1.3.0"
        );
        std::fs::remove_file(tmp.path().join("out/rt-1.2.3.tar.gz.sha256")).unwrap();
        let err = unpack(&archive, &hosts, None).unwrap_err().to_string();
        assert!(err.starts_with("no checksum given and"), "{err}");
        assert!(matches!(
            unpack(&archive, &hosts, Some("abc")),
            Err(PackError::ChecksumFormat { .. })
        ));
    }

    #[test]
    fn pack_refuses_what_unpack_would() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = runtime(tmp.path(), "1.0.0");
        symlink("/etc/passwd", dir.join("isolated/etc/passwd")).unwrap();
        let err = pack(tmp.path(), "rt", &tmp.path().join("out"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cannot pack rt/isolated/etc/passwd: symlink with an absolute target"
        );
        assert!(matches!(
            pack(tmp.path(), "../rt", tmp.path()),
            Err(PackError::InvalidName(_))
        ));
    }

    /// Entries for a hostile archive, written with raw headers so nothing is sanitized.
    enum E<'a> {
        Dir(&'a str),
        DirMode(&'a str, u32),
        File(&'a str, &'a [u8]),
        Mode(&'a str, u32),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        Special(&'a str, tar::EntryType),
    }

    fn hostile(dir: &Path, entries: &[E<'_>]) -> (PathBuf, String) {
        let path = dir.join("hostile.tar.gz");
        let mut builder = tar::Builder::new(GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        ));
        let yml = good_yml("rt", "shell", "1.0.0");
        for entry in entries {
            let (name, kind, mode, data, link): (&str, tar::EntryType, u32, &[u8], Option<&str>) =
                match entry {
                    E::Dir(n) => (n, tar::EntryType::Directory, 0o755, b"", None),
                    E::DirMode(n, m) => (n, tar::EntryType::Directory, *m, b"", None),
                    E::File(n, d) => (n, tar::EntryType::Regular, 0o644, d, None),
                    E::Mode(n, m) => (n, tar::EntryType::Regular, *m, b"x", None),
                    E::Symlink(n, t) => (n, tar::EntryType::Symlink, 0o777, b"", Some(t)),
                    E::HardLink(n, t) => (n, tar::EntryType::Link, 0o644, b"", Some(t)),
                    E::Special(n, k) => (n, *k, 0o644, b"", None),
                };
            let data = if data == b"YML" { yml.as_bytes() } else { data };
            let mut header = tar::Header::new_gnu();
            let raw = &mut header.as_old_mut().name;
            raw.fill(0);
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                let raw = &mut header.as_old_mut().linkname;
                raw.fill(0);
                raw[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        let sum = sha256_file(&path).unwrap();
        (path, sum)
    }

    /// The well-formed start of a runtime archive.
    fn base<'a>() -> Vec<E<'a>> {
        vec![
            E::Dir("rt"),
            E::File("rt/runtime.yml", b"YML"),
            E::Dir("rt/isolated"),
            E::Dir("rt/isolated/usr"),
            E::Dir("rt/isolated/usr/bin"),
            E::File("rt/isolated/usr/bin/tool", b"#!/bin/sh\n"),
            E::Dir("rt/isolated/etc"),
        ]
    }

    #[test]
    fn a_well_formed_hostile_helper_archive_unpacks() {
        let tmp = tempfile::tempdir().unwrap();
        let mut entries = base();
        entries.push(E::Symlink("rt/isolated/lib", "usr/bin"));
        entries.push(E::HardLink(
            "rt/isolated/etc/tool",
            "rt/isolated/usr/bin/tool",
        ));
        let (archive, sum) = hostile(tmp.path(), &entries);
        unpack(&archive, &tmp.path().join("runtimes"), Some(&sum)).unwrap();
    }

    #[test]
    fn hostile_archives_are_refused() {
        use tar::EntryType::{Block, Char, Fifo};
        let cases: Vec<(E<'_>, &str, &str)> = vec![
            (
                E::File("/etc/cron.d/x", b"x"),
                "/etc/cron.d/x",
                "absolute path",
            ),
            (
                E::File("rt/../../x", b"x"),
                "rt/../../x",
                "`..` in the path",
            ),
            (
                E::Symlink("rt/isolated/passwd", "/etc/passwd"),
                "rt/isolated/passwd",
                "symlink to absolute path /etc/passwd",
            ),
            (
                E::Symlink("rt/isolated/up", "../../.."),
                "rt/isolated/up",
                "escapes the runtime directory",
            ),
            (
                E::HardLink("rt/isolated/shadow", "/etc/shadow"),
                "rt/isolated/shadow",
                "points outside the runtime",
            ),
            (
                E::HardLink("rt/isolated/x", "rt/../other/x"),
                "rt/isolated/x",
                "points outside the runtime",
            ),
            (
                E::HardLink("rt/isolated/y", "other/x"),
                "rt/isolated/y",
                "points outside the runtime",
            ),
            (
                E::Special("rt/isolated/mem", Char),
                "rt/isolated/mem",
                "device file",
            ),
            (
                E::Special("rt/isolated/sda", Block),
                "rt/isolated/sda",
                "device file",
            ),
            (
                E::Special("rt/isolated/pipe", Fifo),
                "rt/isolated/pipe",
                "fifo",
            ),
            (
                E::Mode("rt/isolated/usr/bin/su", 0o4755),
                "rt/isolated/usr/bin/su",
                "setuid or setgid bit",
            ),
            (
                E::Mode("rt/isolated/usr/bin/sg", 0o2755),
                "rt/isolated/usr/bin/sg",
                "setuid or setgid bit",
            ),
            (
                E::Dir("other"),
                "other",
                "second top-level entry (the first was `rt`)",
            ),
            (
                E::File("rt/runtime.yml", b"again"),
                "rt/runtime.yml",
                "duplicate entry",
            ),
        ];
        for (bad, entry, problem) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let mut entries = base();
            entries.push(bad);
            let (archive, sum) = hostile(tmp.path(), &entries);
            let runtimes = tmp.path().join("runtimes");
            let err = unpack(&archive, &runtimes, Some(&sum))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("refused archive entry `{entry}`: ")),
                "{entry}: {err}"
            );
            assert!(err.contains(problem), "{entry}: {err}");
            // Nothing is left behind, and nothing was written outside.
            assert!(
                crate::fsutil::sorted_names(&runtimes).is_empty(),
                "{entry}: {:?}",
                crate::fsutil::sorted_names(&runtimes)
            );
            assert!(!tmp.path().join("x").exists() && !tmp.path().join("other").exists());
        }
    }

    #[test]
    fn link_chains_escaping_after_extraction_are_refused() {
        // Each link alone stays inside lexically; followed, `sneaky` climbs out.
        let tmp = tempfile::tempdir().unwrap();
        let mut entries = base();
        entries.push(E::Symlink("rt/isolated/usr/bin/up", "../.."));
        entries.push(E::Symlink("rt/isolated/usr/bin/sneaky", "up/../../.."));
        let (archive, sum) = hostile(tmp.path(), &entries);
        let err = unpack(&archive, &tmp.path().join("runtimes"), Some(&sum))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "refused archive entry `rt/isolated/usr/bin/sneaky`: symlink chain escapes the runtime directory");
        assert!(crate::fsutil::sorted_names(&tmp.path().join("runtimes")).is_empty());
    }

    #[test]
    fn layout_and_config_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let runtimes = tmp.path().join("runtimes");
        let (archive, sum) = hostile(tmp.path(), &[E::Dir("rt"), E::Dir("rt/isolated")]);
        let err = unpack(&archive, &runtimes, Some(&sum))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "refused archive: no rt/runtime.yml");
        let (archive, sum) = hostile(tmp.path(), &[E::File("rt", b"x")]);
        let err = unpack(&archive, &runtimes, Some(&sum))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the top-level entry must be a directory"),
            "{err}"
        );
        let (archive, sum) = hostile(tmp.path(), &[E::Dir("Bad Name")]);
        let err = unpack(&archive, &runtimes, Some(&sum))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid runtime name"), "{err}");
        let (archive, sum) = hostile(tmp.path(), &[]);
        let err = unpack(&archive, &runtimes, Some(&sum))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "refused archive: the archive is empty");
        // A runtime.yml the loader refuses (mount source missing: no isolated/etc).
        let mut entries = base();
        entries.retain(|e| !matches!(e, E::Dir("rt/isolated/etc")));
        let (archive, sum) = hostile(tmp.path(), &entries);
        let err = unpack(&archive, &runtimes, Some(&sum)).unwrap_err();
        assert_eq!(err.to_string(), "the runtime does not load");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            source.ends_with("mounts[1].source: `isolated/etc` does not exist"),
            "{source}"
        );
        assert!(crate::fsutil::sorted_names(&runtimes).is_empty());
    }

    #[test]
    fn installed_files_are_writable_by_nobody_but_the_owner() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let mut entries = base();
        entries[0] = E::DirMode("rt", 0o777);
        entries.push(E::DirMode("rt/isolated/share", 0o777));
        entries.push(E::Mode("rt/isolated/share/data", 0o666));
        entries.push(E::Mode("rt/isolated/usr/bin/run", 0o777));
        // A file whose parent directories have no entries of their own.
        entries.push(E::File("rt/isolated/deep/er/file", b"x"));
        let (archive, sum) = hostile(tmp.path(), &entries);
        let runtimes = tmp.path().join("runtimes");
        unpack(&archive, &runtimes, Some(&sum)).unwrap();
        let mode = |p: &str| std::fs::metadata(runtimes.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("rt"), 0o755);
        assert_eq!(mode("rt/isolated/share"), 0o755);
        assert_eq!(mode("rt/isolated/share/data"), 0o644);
        assert_eq!(mode("rt/isolated/usr/bin/run"), 0o755);
        for dir in ["rt/isolated/deep", "rt/isolated/deep/er"] {
            assert_eq!(mode(dir) & 0o022, 0, "{dir}");
        }
        let mut stack = vec![runtimes.join("rt")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    stack.push(path.clone());
                }
                if !meta.file_type().is_symlink() {
                    assert_eq!(meta.mode() & 0o022, 0, "{}", path.display());
                    assert_eq!(meta.uid(), own_uid(), "{}", path.display());
                }
            }
        }
    }

    /// The unpacking user's uid, read from a file it just made.
    fn own_uid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().metadata().unwrap().uid()
    }

    #[test]
    fn archives_past_their_limits_are_refused_and_leave_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let runtimes = tmp.path().join("runtimes");
        let check = |entries: &[E<'_>], limits: UnpackLimits, expected: &str| {
            let (archive, sum) = hostile(tmp.path(), entries);
            let err = unpack_with_limits(&archive, &runtimes, Some(&sum), &limits)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("refused archive {}: ", archive.display())),
                "{err}"
            );
            assert!(err.contains(expected), "{err}");
            assert!(crate::fsutil::sorted_names(&runtimes).is_empty());
        };

        // A bomb: 16 MiB of zeros compress to a few KiB.
        let zeros = vec![0u8; 16 << 20];
        let mut bomb = base();
        bomb.push(E::File("rt/isolated/zeros", &zeros));
        check(&bomb, UnpackLimits::default(), "times its compressed size");
        // The same archive under a byte limit below the ratio's.
        check(
            &bomb,
            UnpackLimits {
                max_bytes: 1 << 20,
                max_ratio: 1 << 20,
                ..UnpackLimits::default()
            },
            "it expands to more than 1048576 bytes (the maximum size)",
        );
        // Many small entries.
        let names: Vec<String> = (0..20).map(|i| format!("rt/isolated/f{i}")).collect();
        let mut many = base();
        many.extend(names.iter().map(|n| E::File(n, b"x")));
        check(
            &many,
            UnpackLimits {
                max_entries: 10,
                ..UnpackLimits::default()
            },
            "it has more than 10 entries",
        );
        // Within the limits it unpacks.
        let (archive, sum) = hostile(tmp.path(), &many);
        unpack(&archive, &runtimes, Some(&sum)).unwrap();
    }
}
