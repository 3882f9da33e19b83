//! What `run` and `eval` share about files: `--file LOCAL[:REMOTE]` read into a file
//! for `/work`, `--dataset NAME=DIR` for `run`, and returned files written under the
//! output directory. The returned names come from a sandbox (through a node, for
//! `eval`), so they are hostile input: each is checked like the node checks a request's
//! names (`evaluator::sandbox::files::check_name`), and written by descriptors opened
//! beneath the output directory without following any symbolic link
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `O_NOFOLLOW`): a name
//! with `..`, an absolute one, or one through a link planted in the output directory
//! is refused, and nothing is written outside it. Only names matching a `--get`
//! pattern are written (a hidden name only where a pattern names it so), and never
//! over a file that is already there: a hostile node cannot drop a `.bashrc` or a
//! `.git/config` into the directory the command runs in.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use evaluator::sandbox::files::{check_name, pattern_matches};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// The file options `run` and `eval` share.
#[derive(Debug, Args, Clone, Default)]
pub struct FileArgs {
    /// A file put in /work before the code runs: LOCAL[:REMOTE] (REMOTE defaults to
    /// LOCAL's file name; executable if LOCAL is); repeatable.
    #[arg(long = "file", value_name = "LOCAL[:REMOTE]")]
    pub put: Vec<String>,
    /// Files taken back from /work once the code has ended: a path or glob pattern
    /// (`*`, `?`, `[...]`, `**`) relative to /work; repeatable.
    #[arg(long = "get", value_name = "PATTERN")]
    pub get: Vec<String>,
    /// Where returned files are written (made if missing); links in it are never
    /// followed, and files already there are never overwritten.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub output_dir: PathBuf,
}

impl FileArgs {
    /// The `--file`s, read, and the `--get` patterns, checked.
    pub fn inputs(&self) -> Result<Vec<InputSpec>> {
        for p in &self.get {
            if let Err(e) = evaluator::sandbox::files::check_pattern(p) {
                bail!("--get {p}: the pattern {e}");
            }
        }
        self.put.iter().map(|s| read_input(s)).collect()
    }
}

/// A file given with `--file LOCAL[:REMOTE]`: its name in `/work` (REMOTE, or LOCAL's
/// file name), its content, and whether LOCAL is executable (any `x` bit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub remote: String,
    pub content: Vec<u8>,
    pub executable: bool,
}

/// Reads `--file LOCAL[:REMOTE]` (split at the first `:`).
pub fn read_input(spec: &str) -> Result<InputSpec> {
    let (local, remote) = match spec.split_once(':') {
        Some((local, remote)) => (local, Some(remote)),
        None => (spec, None),
    };
    let local = Path::new(local);
    let remote = match remote {
        Some(r) => r.to_string(),
        None => local
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("--file {spec}: {} has no file name", local.display()))?
            .to_string(),
    };
    if let Err(e) = check_name(&remote) {
        bail!("--file {spec}: the name in /work {remote:?} {e}");
    }
    let meta = std::fs::metadata(local).with_context(|| format!("reading {}", local.display()))?;
    if !meta.is_file() {
        bail!("--file {spec}: {} is not a regular file", local.display());
    }
    let content = std::fs::read(local).with_context(|| format!("reading {}", local.display()))?;
    Ok(InputSpec {
        remote,
        content,
        executable: meta.permissions().mode() & 0o111 != 0,
    })
}

/// Reads `--dataset NAME=DIR` (for `run`): DIR made absolute, and a directory.
pub fn local_dataset(spec: &str) -> Result<(PathBuf, String)> {
    let Some((name, dir)) = spec.split_once('=') else {
        bail!("--dataset {spec}: expected NAME=DIR");
    };
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !plain {
        bail!(
            "--dataset {spec}: {name:?} is not a dataset name ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}})"
        );
    }
    let dir = std::fs::canonicalize(dir).with_context(|| format!("--dataset {spec}"))?;
    if !dir.is_dir() {
        bail!("--dataset {spec}: {} is not a directory", dir.display());
    }
    Ok((dir, name.to_string()))
}

/// What became of one returned file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written: its bytes written, its size in the sandbox, whether it was truncated.
    File {
        path: String,
        bytes: u64,
        size: u64,
        truncated: bool,
    },
    /// The node (or the sandbox) did not return it.
    NotReturned { path: String, error: String },
    /// Returned, but not written here.
    Refused { path: String, why: String },
}

/// Writes `files` under `dir` (created if missing), those whose name matches one of
/// `patterns` (what was asked for), and prints one line for each on stderr; refusals
/// are lines too, not errors (the exit code follows the evaluation).
pub fn write_returned(
    dir: &Path,
    patterns: &[String],
    files: &[client::ReturnedFile],
) -> Result<Vec<Written>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", dir.display()))?;
    let mut written = Vec::with_capacity(files.len());
    for f in files {
        let asked = patterns.iter().any(|p| pattern_matches(p, &f.path));
        let result = match &f.error {
            _ if !asked => Written::Refused {
                path: f.path.clone(),
                why: "not asked for (no --get pattern matches it)".into(),
            },
            Some(error) => Written::NotReturned {
                path: f.path.clone(),
                error: error.clone(),
            },
            None => match write_one(&root, &f.path, &f.content) {
                Ok(()) => Written::File {
                    path: f.path.clone(),
                    bytes: f.content.len() as u64,
                    size: f.size,
                    truncated: f.truncated,
                },
                Err(why) => Written::Refused {
                    path: f.path.clone(),
                    why,
                },
            },
        };
        report(dir, &result);
        written.push(result);
    }
    Ok(written)
}

fn report(dir: &Path, w: &Written) {
    let mut err = std::io::stderr().lock();
    let _ = match w {
        Written::File {
            path,
            bytes,
            size,
            truncated: true,
        } => writeln!(
            err,
            "file: {} ({bytes} of {size} bytes, truncated)",
            dir.join(path).display()
        ),
        Written::File { path, bytes, .. } => {
            writeln!(err, "file: {} ({bytes} bytes)", dir.join(path).display())
        }
        Written::NotReturned { path, error } => {
            writeln!(err, "jsheets-runtime: file {path:?} not returned: {error}")
        }
        Written::Refused { path, why } => {
            writeln!(err, "jsheets-runtime: file {path:?} not written: {why}")
        }
    };
}

/// Resolution beneath the output directory, never through a link or a mount.
fn beneath(flags: OFlag, mode: Mode) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY)
        .mode(mode)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        )
}

fn open_beneath(dir: impl AsFd, name: &str, how: OpenHow) -> Result<OwnedFd, Errno> {
    loop {
        match openat2(dir.as_fd(), name, how) {
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
            r => return r,
        }
    }
}

/// Writes one file at `path` beneath `root`: directories made as needed, each opened
/// without following links; the file created, never opened if something of that name
/// is there already (`O_EXCL`: no file is overwritten, no FIFO waited on).
fn write_one(root: &OwnedFd, path: &str, content: &[u8]) -> Result<(), String> {
    check_name(path).map_err(|e| format!("the name {e}"))?;
    let parts: Vec<&str> = path.split('/').collect();
    let (name, parents) = parts.split_last().ok_or("the name is empty")?;
    let mut dir = root.try_clone().map_err(|e| e.to_string())?;
    for (i, part) in parents.iter().enumerate() {
        let shown = parts[..=i].join("/");
        match nix::sys::stat::mkdirat(&dir, *part, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(format!("making directory {shown}: {e}")),
        }
        dir = open_beneath(
            &dir,
            part,
            beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()),
        )
        .map_err(|e| format!("opening directory {shown}: {}", why(e)))?;
    }
    let fd = open_beneath(
        &dir,
        name,
        beneath(
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NONBLOCK,
            Mode::from_bits_truncate(0o644),
        ),
    )
    .map_err(|e| match e {
        Errno::EEXIST => "something of that name is already there (not overwritten)".into(),
        e => format!("creating it: {}", why(e)),
    })?;
    let mut file = std::fs::File::from(fd);
    file.write_all(content).map_err(|e| e.to_string())?;
    Ok(())
}

/// An errno, with the link cases said in words.
fn why(e: Errno) -> String {
    match e {
        Errno::ELOOP => "a symbolic link is in the way (links are not followed)".into(),
        Errno::EXDEV => "it leads outside the output directory".into(),
        Errno::ENOTDIR => "a file that is not a directory is in the way".into(),
        e => e.to_string(),
    }
}

/// The evaluator's returned files as the client's.
pub fn from_evaluator(
    files: Vec<evaluator::sandbox::files::ReturnedFile>,
) -> Vec<client::ReturnedFile> {
    files
        .into_iter()
        .map(|f| client::ReturnedFile {
            path: f.path,
            size: f.size,
            content: f.content,
            truncated: f.truncated,
            error: f.error,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn returned(path: &str, content: &[u8]) -> client::ReturnedFile {
        client::ReturnedFile {
            path: path.into(),
            size: content.len() as u64,
            content: content.to_vec(),
            truncated: false,
            error: None,
        }
    }

    #[test]
    fn hostile_names_and_planted_links_write_nothing_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"keep").unwrap();
        // Links planted in the output directory, to a directory and to a file outside.
        std::os::unix::fs::symlink(&outside, out.join("linkdir")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), out.join("linkfile")).unwrap();
        let files = vec![
            returned("../x", b"escape"),
            returned("/abs", b"escape"),
            returned(
                format!("{}/abs2", outside.display()).trim_start_matches('/'),
                b"inside",
            ),
            returned("linkdir/x", b"escape"),
            returned("linkfile", b"escape"),
            returned("a/../../x", b"escape"),
            returned("good/one.txt", b"hello"),
            client::ReturnedFile {
                error: Some("over its cap".into()),
                ..returned("refused", b"")
            },
        ];
        let written = write_returned(&out, &["**".into(), "**/.*/**".into()], &files).unwrap();
        let refused: Vec<&str> = written
            .iter()
            .filter_map(|w| match w {
                Written::Refused { path, .. } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            refused,
            ["../x", "/abs", "linkdir/x", "linkfile", "a/../../x"]
        );
        assert!(
            matches!(&written[7], Written::NotReturned { error, .. } if error == "over its cap")
        );
        // Nothing outside changed or appeared.
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        let names: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["victim"]);
        assert!(!tmp.path().join("x").exists());
        assert!(!Path::new("/abs").exists());
        // The links are still links, and the good file is written.
        assert!(out
            .join("linkfile")
            .symlink_metadata()
            .unwrap()
            .is_symlink());
        assert_eq!(std::fs::read(out.join("good/one.txt")).unwrap(), b"hello");
        // A name that merely spells an outside path is a plain name inside.
        let inside = out.join(format!("{}/abs2", outside.display()).trim_start_matches('/'));
        assert_eq!(std::fs::read(inside).unwrap(), b"inside");
    }

    #[test]
    fn no_file_is_overwritten_and_a_fifo_is_not_waited_on() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("old"), b"a much longer old content").unwrap();
        nix::unistd::mkfifo(&tmp.path().join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let written = write_returned(
            tmp.path(),
            &["*".into()],
            &[returned("old", b"new"), returned("fifo", b"x")],
        )
        .unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("old")).unwrap(),
            b"a much longer old content"
        );
        assert!(
            matches!(&written[0], Written::Refused { path, why } if path == "old" && why.contains("not overwritten"))
        );
        assert!(matches!(&written[1], Written::Refused { path, .. } if path == "fifo"));
    }

    #[test]
    fn only_what_was_asked_for_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let patterns = ["out/**".to_string(), "*.csv".to_string()];
        let written = write_returned(
            tmp.path(),
            &patterns,
            &[
                returned("out/a.txt", b"a"),
                returned("b.csv", b"b"),
                returned(".bashrc", b"evil"),
                returned("out/.git/config", b"evil"),
                returned("other.txt", b"c"),
            ],
        )
        .unwrap();
        assert!(tmp.path().join("out/a.txt").exists());
        assert!(tmp.path().join("b.csv").exists());
        for (i, path) in [(2, ".bashrc"), (3, "out/.git/config"), (4, "other.txt")] {
            assert!(!tmp.path().join(path).exists(), "{path} written");
            assert!(
                matches!(&written[i], Written::Refused { why, .. } if why.contains("not asked for")),
                "{path}: {:?}",
                written[i]
            );
        }
    }

    #[test]
    fn input_files_take_their_name_and_executable_bit() {
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("run.sh");
        std::fs::write(&script, b"echo hi\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = read_input(script.to_str().unwrap()).unwrap();
        assert_eq!(spec.remote, "run.sh");
        assert!(spec.executable);
        let spec = read_input(&format!("{}:bin/go", script.display())).unwrap();
        assert_eq!(spec.remote, "bin/go");
        let err = read_input(&format!("{}:../x", script.display())).unwrap_err();
        assert!(
            err.to_string()
                .contains("has an empty, `.` or `..` component"),
            "{err}"
        );
        assert!(local_dataset("x").is_err());
        assert!(local_dataset("../x=/tmp").is_err());
        let (dir, name) = local_dataset(&format!("d={}", tmp.path().display())).unwrap();
        assert_eq!((dir.is_absolute(), name.as_str()), (true, "d"));
    }
}
