//! Shared-library closures computed from ELF files, the way `ld.so` would search.
//!
//! `ldd` runs the dynamic loader on the file, which executes code from it; reading
//! `DT_NEEDED`, `DT_RPATH`/`DT_RUNPATH` and `PT_INTERP` with goblin does not.
//! Search order per dependency: the requester's RPATH and its loaders' RPATHs (only
//! when it has no RUNPATH), RUNPATH, the directories of /etc/ld.so.conf, then the
//! default directories for the requester's machine. A candidate of another machine or
//! class (a 32-bit library in a shared directory) is skipped, as ld.so does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use goblin::elf::header::{EM_386, EM_AARCH64, EM_ARM, EM_PPC64, EM_RISCV, EM_S390, EM_X86_64};

use crate::fsutil::glob;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid elf file", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: goblin::error::Error,
    },
    #[error("cannot read {}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, ElfError>;

/// What the dynamic loader needs to know about one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub machine: u16,
    pub is_64: bool,
    /// DT_NEEDED entries.
    pub needed: Vec<String>,
    /// DT_RPATH entries, split at `:`, unexpanded.
    pub rpath: Vec<String>,
    /// DT_RUNPATH entries, split at `:`, unexpanded.
    pub runpath: Vec<String>,
    /// PT_INTERP.
    pub interpreter: Option<String>,
    pub soname: Option<String>,
}

/// Whether `path` starts with the ELF magic (cheap: reads four bytes).
pub fn is_elf(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path)?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == *b"\x7fELF"),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads the dynamic-linking facts of one ELF file.
pub fn read(path: &Path) -> Result<ElfInfo> {
    let bytes = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_owned(),
        source,
    })?;
    let elf = goblin::elf::Elf::parse(&bytes).map_err(|source| ElfError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let split = |entries: &[&str]| -> Vec<String> {
        entries
            .iter()
            .flat_map(|e| e.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(ElfInfo {
        machine: elf.header.e_machine,
        is_64: elf.is_64,
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        interpreter: elf.interpreter.map(str::to_owned),
        soname: elf.soname.map(str::to_owned),
    })
}

/// The ELF machine of this host, for telling native files from foreign ones.
pub fn host_machine() -> Option<(u16, bool)> {
    Some(match std::env::consts::ARCH {
        "x86_64" => (EM_X86_64, true),
        "aarch64" => (EM_AARCH64, true),
        "x86" => (EM_386, false),
        "arm" => (EM_ARM, false),
        "riscv64" => (EM_RISCV, true),
        "powerpc64" => (EM_PPC64, true),
        "s390x" => (EM_S390, true),
        _ => return None,
    })
}

/// The Debian multiarch triplet for a machine, as in /usr/lib/<triplet>.
fn triplet(machine: u16, is_64: bool) -> Option<&'static str> {
    Some(match (machine, is_64) {
        (EM_X86_64, true) => "x86_64-linux-gnu",
        (EM_X86_64, false) => "x86_64-linux-gnux32",
        (EM_AARCH64, _) => "aarch64-linux-gnu",
        (EM_386, _) => "i386-linux-gnu",
        (EM_ARM, _) => "arm-linux-gnueabihf",
        (EM_RISCV, true) => "riscv64-linux-gnu",
        (EM_PPC64, _) => "powerpc64le-linux-gnu",
        (EM_S390, true) => "s390x-linux-gnu",
        _ => return None,
    })
}

/// The loader's built-in search path for a machine (Debian's glibc, multiarch first).
pub fn default_dirs(machine: u16, is_64: bool) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(t) = triplet(machine, is_64) {
        dirs.push(PathBuf::from(format!("/lib/{t}")));
        dirs.push(PathBuf::from(format!("/usr/lib/{t}")));
    }
    match (machine, is_64) {
        (EM_X86_64 | EM_AARCH64 | EM_RISCV | EM_PPC64 | EM_S390, true) => {
            dirs.push("/lib64".into());
            dirs.push("/usr/lib64".into());
        }
        (EM_386, _) => {
            dirs.push("/lib32".into());
            dirs.push("/usr/lib32".into());
        }
        _ => {}
    }
    dirs.push("/lib".into());
    dirs.push("/usr/lib".into());
    dirs
}

/// Directories listed by an ld.so.conf, following `include` globs (relative ones are
/// relative to the including file's directory). A missing file lists nothing.
pub fn ld_so_conf_dirs(path: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let mut seen = HashSet::new();
    read_conf(path, &mut dirs, &mut seen, 0)?;
    Ok(dirs)
}

fn read_conf(
    path: &Path,
    dirs: &mut Vec<PathBuf>,
    seen: &mut HashSet<PathBuf>,
    depth: usize,
) -> Result<()> {
    // Canonical, so `d/../ld.so.conf` is recognised as the file already being read.
    let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    if depth > 10 || !seen.insert(key) {
        return Ok(());
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ElfError::Config {
                path: path.to_owned(),
                source,
            })
        }
    };
    let base = path.parent().unwrap_or(Path::new("/"));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(pattern) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with(char::is_whitespace))
        {
            for pattern in pattern.split_whitespace() {
                let pattern = base.join(pattern);
                let files = glob(&pattern).map_err(|source| ElfError::Config {
                    path: pattern.clone(),
                    source,
                })?;
                for file in files {
                    read_conf(&file, dirs, seen, depth + 1)?;
                }
            }
        } else if line.starts_with("hwcap") {
            continue;
        } else {
            for dir in line.split(|c: char| c.is_whitespace() || c == ':' || c == ',') {
                // Old `dir=TYPE` syntax.
                let dir = dir.split('=').next().unwrap_or_default();
                if dir.starts_with('/') && !dirs.iter().any(|d| d == Path::new(dir)) {
                    dirs.push(PathBuf::from(dir));
                }
            }
        }
    }
    Ok(())
}

/// A dependency the search did not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub needed_by: PathBuf,
    pub name: String,
}

/// The result of [`Resolver::closure`].
#[derive(Debug, Clone, Default)]
pub struct Closure {
    /// Libraries and interpreters as the loader would open them (paths through
    /// symlinked directories kept, e.g. /lib/x86_64-linux-gnu/libc.so.6), in discovery
    /// order, without the roots.
    pub libraries: Vec<PathBuf>,
    pub missing: Vec<Missing>,
}

/// Finds libraries on this host, optionally looking inside a runtime being built first.
#[derive(Debug, Clone)]
pub struct Resolver {
    conf_dirs: Vec<PathBuf>,
    overlay: Option<PathBuf>,
}

/// One object waiting to be scanned.
struct Pending {
    path: PathBuf,
    /// RPATHs of the objects that loaded it (ld.so consults them for its lookups too).
    inherited_rpath: Vec<PathBuf>,
}

impl Resolver {
    /// Uses the host's /etc/ld.so.conf.
    pub fn from_host() -> Result<Resolver> {
        Ok(Self::with_conf_dirs(ld_so_conf_dirs(Path::new(
            "/etc/ld.so.conf",
        ))?))
    }

    pub fn with_conf_dirs(conf_dirs: Vec<PathBuf>) -> Resolver {
        Resolver {
            conf_dirs,
            overlay: None,
        }
    }

    /// Looks in `<overlay>/<dir>` before `<dir>` for every search directory, so
    /// libraries already copied into (or installed in) a runtime win.
    pub fn with_overlay(mut self, overlay: &Path) -> Resolver {
        self.overlay = Some(overlay.to_owned());
        self
    }

    /// The transitive closure of libraries (and interpreters) the `roots` need. A
    /// missing dependency is reported unless some object in the set is that library
    /// (file name or soname): programs like the JVM load those themselves by path
    /// before anything needs them.
    pub fn closure(&self, roots: &[PathBuf]) -> Result<Closure> {
        let mut closure = Closure::default();
        let mut scanned: HashSet<PathBuf> = HashSet::new();
        let mut listed: HashSet<PathBuf> = roots.iter().cloned().collect();
        let mut provided: HashSet<String> = HashSet::new();
        let mut missing: Vec<Missing> = Vec::new();
        let mut cache: HashMap<PathBuf, Option<(u16, bool)>> = HashMap::new();
        let mut queue: VecDeque<Pending> = roots
            .iter()
            .map(|p| Pending {
                path: p.clone(),
                inherited_rpath: Vec::new(),
            })
            .collect();

        while let Some(Pending {
            path,
            inherited_rpath,
        }) = queue.pop_front()
        {
            let canonical = path.canonicalize().map_err(|source| ElfError::Read {
                path: path.clone(),
                source,
            })?;
            if !scanned.insert(canonical.clone()) {
                continue;
            }
            let info = read(&canonical)?;
            for name in [path.file_name(), canonical.file_name()]
                .into_iter()
                .flatten()
            {
                provided.insert(name.to_string_lossy().into_owned());
            }
            if let Some(soname) = &info.soname {
                provided.insert(soname.clone());
            }
            // $ORIGIN is the directory the object was loaded from; for the main program
            // the kernel-resolved one (ld.so takes it from /proc/self/exe).
            let origin_path = if roots.contains(&path) {
                &canonical
            } else {
                &path
            };
            let origin = origin_path.parent().unwrap_or(Path::new("/"));
            let expand = |entries: &[String]| -> Vec<PathBuf> {
                entries
                    .iter()
                    .filter_map(|e| expand_tokens(e, origin, info.machine, info.is_64))
                    .collect()
            };
            let own_rpath = expand(&info.rpath);
            let runpath = expand(&info.runpath);

            let mut dirs: Vec<PathBuf> = Vec::new();
            let mut child_rpath = Vec::new();
            if runpath.is_empty() {
                child_rpath.extend(own_rpath.iter().cloned());
                child_rpath.extend(inherited_rpath.iter().cloned());
                dirs.extend(child_rpath.iter().cloned());
            }
            dirs.extend(runpath);
            dirs.extend(self.conf_dirs.iter().cloned());
            dirs.extend(default_dirs(info.machine, info.is_64));

            let mut wanted: Vec<PathBuf> = Vec::new();
            if let Some(interp) = &info.interpreter {
                let interp = PathBuf::from(interp);
                match self.locate_path(&interp) {
                    Some(found) => wanted.push(found),
                    None => missing.push(Missing {
                        needed_by: path.clone(),
                        name: interp.display().to_string(),
                    }),
                }
            }
            for name in &info.needed {
                if name.contains('/') {
                    match self.locate_path(Path::new(name)) {
                        Some(found) => wanted.push(found),
                        None => missing.push(Missing {
                            needed_by: path.clone(),
                            name: name.clone(),
                        }),
                    }
                    continue;
                }
                match self.search(&dirs, name, (info.machine, info.is_64), &mut cache) {
                    Some(found) => wanted.push(found),
                    None => missing.push(Missing {
                        needed_by: path.clone(),
                        name: name.clone(),
                    }),
                }
            }
            for found in wanted {
                if listed.insert(found.clone()) {
                    closure.libraries.push(found.clone());
                }
                queue.push_back(Pending {
                    path: found,
                    inherited_rpath: child_rpath.clone(),
                });
            }
        }
        missing.retain(|m| {
            let base = Path::new(&m.name)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            !provided.contains(&m.name) && !provided.contains(&base)
        });
        missing.dedup();
        closure.missing = missing;
        Ok(closure)
    }

    /// An absolute path (PT_INTERP, a DT_NEEDED with a slash), overlay first.
    fn locate_path(&self, path: &Path) -> Option<PathBuf> {
        if !path.is_absolute() {
            return None;
        }
        self.candidates(path).into_iter().find(|c| c.exists())
    }

    fn candidates(&self, path: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(overlay) = &self.overlay {
            if !path.starts_with(overlay) {
                out.push(overlay.join(path.strip_prefix("/").unwrap_or(path)));
            }
        }
        out.push(path.to_owned());
        out
    }

    fn search(
        &self,
        dirs: &[PathBuf],
        name: &str,
        want: (u16, bool),
        cache: &mut HashMap<PathBuf, Option<(u16, bool)>>,
    ) -> Option<PathBuf> {
        for dir in dirs {
            for candidate in self.candidates(&dir.join(name)) {
                let kind = cache
                    .entry(candidate.clone())
                    .or_insert_with(|| machine_of(&candidate));
                if *kind == Some(want) {
                    return Some(candidate);
                }
            }
        }
        None
    }
}

/// (machine, is_64) of an ELF file, or None when it is missing or not ELF.
fn machine_of(path: &Path) -> Option<(u16, bool)> {
    let mut header = [0u8; 64];
    let mut file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let n = file.read(&mut header).ok()?;
    let header = goblin::elf::Elf::parse_header(&header[..n]).ok()?;
    Some((
        header.e_machine,
        header.e_ident[goblin::elf::header::EI_CLASS] == goblin::elf::header::ELFCLASS64,
    ))
}

/// Expands `$ORIGIN`, `$LIB` and `$PLATFORM` (also in `${...}` form) in one search
/// entry; relative entries are dropped (they would depend on the working directory).
fn expand_tokens(entry: &str, origin: &Path, machine: u16, is_64: bool) -> Option<PathBuf> {
    let lib = match triplet(machine, is_64) {
        Some(t) => format!("lib/{t}"),
        None => "lib".to_owned(),
    };
    let platform = match machine {
        EM_X86_64 => "x86_64",
        EM_AARCH64 => "aarch64",
        EM_386 => "i686",
        _ => "",
    };
    let mut out = entry.to_owned();
    for (token, value) in [
        ("ORIGIN", origin.to_string_lossy().as_ref()),
        ("LIB", lib.as_str()),
        ("PLATFORM", platform),
    ] {
        out = out
            .replace(&format!("${{{token}}}"), value)
            .replace(&format!("${token}"), value);
    }
    let path = PathBuf::from(out);
    path.is_absolute().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn python_needs_libc_and_the_interpreter() {
        let python = PathBuf::from("/usr/bin/python3.11");
        let info = read(&python).unwrap();
        assert!(info.needed.iter().any(|n| n == "libc.so.6"), "{info:?}");
        let interp = info.interpreter.clone().expect("dynamically linked");

        let closure = Resolver::from_host().unwrap().closure(&[python]).unwrap();
        assert!(closure.missing.is_empty(), "{:?}", closure.missing);
        let names = file_names(&closure.libraries);
        assert!(names.iter().any(|n| n == "libc.so.6"), "{names:?}");
        assert!(
            closure.libraries.contains(&PathBuf::from(&interp)),
            "{:?} lacks {interp}",
            closure.libraries
        );
        // The loader's path is kept, not the canonical one: /lib is a symlink on merged /usr.
        if std::env::consts::ARCH == "x86_64" {
            assert!(
                closure
                    .libraries
                    .contains(&PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")),
                "{:?}",
                closure.libraries
            );
        }
    }

    #[test]
    fn not_elf() {
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("s");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(!is_elf(&script).unwrap());
        assert!(is_elf(Path::new("/usr/bin/python3.11")).unwrap());
        assert!(matches!(read(&script), Err(ElfError::Parse { .. })));
        std::fs::write(&script, "").unwrap();
        assert!(!is_elf(&script).unwrap());
    }

    #[test]
    fn origin_runpath_and_overlay() {
        // A copy of python in an "overlay" finds libraries through RUNPATH=$ORIGIN
        // equivalents only if they exist; here: the overlay holds a fake libm.so.6 that
        // is not ELF, so the host one is used, and a real ELF copy wins.
        let tmp = tempfile::tempdir().unwrap();
        let overlay = tmp.path();
        let libdir = default_dirs(EM_X86_64, true)[0].clone();
        let in_overlay = overlay.join(libdir.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&in_overlay).unwrap();
        std::fs::write(in_overlay.join("libm.so.6"), "not elf").unwrap();
        let resolver = Resolver::from_host().unwrap().with_overlay(overlay);
        let closure = resolver
            .closure(&[PathBuf::from("/usr/bin/python3.11")])
            .unwrap();
        assert!(
            !closure.libraries.iter().any(|p| p.starts_with(overlay)),
            "{:?}",
            closure.libraries
        );

        let host_libz = closure
            .libraries
            .iter()
            .find(|p| p.ends_with("libz.so.1"))
            .unwrap()
            .clone();
        std::fs::copy(&host_libz, in_overlay.join("libz.so.1")).unwrap();
        let closure = resolver
            .closure(&[PathBuf::from("/usr/bin/python3.11")])
            .unwrap();
        assert!(
            closure.libraries.contains(&in_overlay.join("libz.so.1")),
            "{:?}",
            closure.libraries
        );

        assert_eq!(
            expand_tokens("$ORIGIN/../lib", Path::new("/opt/x/bin"), EM_X86_64, true),
            Some(PathBuf::from("/opt/x/bin/../lib"))
        );
        assert_eq!(
            expand_tokens("${ORIGIN}/$LIB", Path::new("/o"), EM_X86_64, true),
            Some(PathBuf::from("/o/lib/x86_64-linux-gnu"))
        );
        assert_eq!(
            expand_tokens("relative", Path::new("/o"), EM_X86_64, true),
            None
        );
    }

    #[test]
    fn a_library_in_the_set_satisfies_its_dependents() {
        // Like the JDK's libjava.so, which needs libjvm.so without any search path
        // finding it (the JVM loaded it by path before): a copy of python whose
        // DT_NEEDED libexpat.so.1 is renamed to a library that exists nowhere.
        let tmp = tempfile::tempdir().unwrap();
        let mut bytes = std::fs::read("/usr/bin/python3.11").unwrap();
        let (from, to) = (b"libexpat.so.1\0", b"libjvmxx.so.1\0");
        let mut replaced = 0;
        for i in 0..bytes.len() - from.len() {
            if &bytes[i..i + from.len()] == from {
                bytes[i..i + to.len()].copy_from_slice(to);
                replaced += 1;
            }
        }
        assert!(replaced > 0);
        let program = tmp.path().join("program");
        std::fs::write(&program, bytes).unwrap();
        let resolver = Resolver::from_host().unwrap();
        let alone = resolver.closure(std::slice::from_ref(&program)).unwrap();
        assert_eq!(
            alone.missing,
            [Missing {
                needed_by: program.clone(),
                name: "libjvmxx.so.1".into()
            }]
        );
        let provider = tmp.path().join("sub/libjvmxx.so.1");
        std::fs::create_dir(provider.parent().unwrap()).unwrap();
        std::fs::copy("/usr/bin/python3.11", &provider).unwrap();
        let together = resolver.closure(&[program, provider]).unwrap();
        assert!(together.missing.is_empty(), "{:?}", together.missing);
    }

    #[test]
    fn ld_so_conf_includes() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("ld.so.conf");
        std::fs::create_dir(tmp.path().join("ld.so.conf.d")).unwrap();
        std::fs::write(
            &conf,
            "# comment\ninclude ld.so.conf.d/*.conf\n/opt/first\nhwcap 0 nosegneg\n",
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("ld.so.conf.d/a.conf"),
            "/opt/a # trailing\n/opt/b:/opt/c\n",
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("ld.so.conf.d/b.conf"),
            "include ../ld.so.conf\n/opt/d\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("ld.so.conf.d/ignored.txt"), "/opt/no\n").unwrap();
        let dirs = ld_so_conf_dirs(&conf).unwrap();
        let dirs: Vec<_> = dirs.iter().map(|d| d.to_str().unwrap()).collect();
        assert_eq!(dirs, ["/opt/a", "/opt/b", "/opt/c", "/opt/d", "/opt/first"]);
        assert!(ld_so_conf_dirs(&tmp.path().join("none"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn default_dirs_follow_the_machine() {
        let x86 = default_dirs(EM_X86_64, true);
        assert_eq!(x86[0], Path::new("/lib/x86_64-linux-gnu"));
        assert!(x86.contains(&PathBuf::from("/usr/lib64")));
        let arm = default_dirs(EM_AARCH64, true);
        assert_eq!(arm[1], Path::new("/usr/lib/aarch64-linux-gnu"));
        let i386 = default_dirs(EM_386, false);
        assert!(!i386.contains(&PathBuf::from("/lib64")));
    }
}
