//! Runtimes: self-contained root fragments that snippets run on.
//!
//! A runtime is `<runtimes dir>/<name>/runtime.yml` plus `<name>/isolated/`, a copy of
//! everything the interpreter needs (binaries, libraries, certificates). The sandbox
//! binds parts of `isolated/` read-only into a fresh root; nothing from the host is
//! ever mounted.
//!
//! - [`config`] loads and strictly validates one runtime.yml ([`Runtime`]).
//! - [`registry`] loads a runtimes directory and resolves specs like `python:3.11`.
//! - [`pack`](mod@pack) moves built runtimes between hosts as checksummed archives.
//!
//! Runtimes are built from recipes by [`crate::install`].

pub mod config;
pub mod pack;
pub mod registry;

pub use config::{ConfigError, Evaluator, Mount, Runtime, Warning};
pub use pack::{pack, unpack, unpack_with_limits, PackError, UnpackLimits};
pub use registry::{Problem, Registry, ResolveError};

/// Whether `name` is a valid runtime name: `^[a-z0-9][a-z0-9._-]{0,63}$`.
///
/// Names are joined into host paths, so this is checked before every join.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        _ => return false,
    }
    bytes.len() <= 64
        && bytes[1..].iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// One spelling per architecture, so Debian's (`amd64`) and Rust's (`x86_64`) names compare equal.
pub fn canonical_arch(arch: &str) -> String {
    let arch = arch.trim().to_ascii_lowercase();
    match arch.as_str() {
        "amd64" | "x86-64" | "x64" => "x86_64".into(),
        "arm64" => "aarch64".into(),
        "i386" | "i686" | "x86_32" => "x86".into(),
        "armhf" | "armel" => "arm".into(),
        "ppc64el" | "ppc64le" => "powerpc64".into(),
        _ => arch,
    }
}

/// The host architecture as Debian names it (what recipes write into runtime.yml).
pub fn host_debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        other => other,
    }
}

/// Parses a version leniently into semver for ordering: `3.11` is 3.11.0, `17.0.15+6`
/// keeps its build metadata, and Debian suffixes like `+6-1~deb12u1` are sanitized.
pub fn parse_version(version: &str) -> Option<semver::Version> {
    let v = version.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    if let Ok(parsed) = semver::Version::parse(v) {
        return Some(parsed);
    }
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (numbers, rest) = v.split_at(end);
    let numbers = numbers.trim_end_matches('.');
    let mut parts = Vec::new();
    for part in numbers.split('.') {
        parts.push(part.parse::<u64>().ok()?);
    }
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut parsed = semver::Version::new(
        parts[0],
        *parts.get(1).unwrap_or(&0),
        *parts.get(2).unwrap_or(&0),
    );
    // A fourth component and anything after the numbers become build metadata, which
    // still breaks ties in `Ord` without pretending to be a pre-release.
    let mut build = parts.get(3).map(|p| p.to_string()).unwrap_or_default();
    let sanitized: String = rest
        .trim_start_matches(['+', '-', '.', '~', '_'])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let sanitized = sanitized.trim_matches(['.', '-']);
    if !sanitized.is_empty() {
        if !build.is_empty() {
            build.push('.');
        }
        build.push_str(sanitized);
    }
    if !build.is_empty() {
        let build = build
            .split('.')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(".");
        parsed.build = semver::BuildMetadata::new(&build).unwrap_or(semver::BuildMetadata::EMPTY);
    }
    if rest.starts_with('-') {
        // `1.2.3-rc1` style suffixes sort before the release, as in semver.
        if let Ok(pre) = semver::Prerelease::new(sanitized) {
            parsed.pre = pre;
            parsed.build = semver::BuildMetadata::EMPTY;
        }
    }
    Some(parsed)
}

/// Whether `path` is an absolute sandbox path in normal form: `/a/b`, no `.`, `..`,
/// empty components or trailing slash. Sandbox paths are compared as strings, so only
/// one spelling is accepted.
pub(crate) fn is_normal_absolute(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    !path.contains('\0')
        && rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "python-3.11",
            "a",
            "0",
            "node-20",
            "x.y_z-1",
            &"a".repeat(64),
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "A",
            "a/b",
            "a b",
            "..",
            "_x",
            &"a".repeat(65),
            "py\0",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn versions_parse_leniently() {
        let v = |s: &str| parse_version(s).unwrap();
        assert_eq!(v("3.11.2"), semver::Version::new(3, 11, 2));
        assert_eq!(v("3.11"), semver::Version::new(3, 11, 0));
        assert_eq!(v("20.19.2").major, 20);
        assert_eq!(v("17.0.15+6").build.as_str(), "6");
        assert_eq!(v("17.0.15+6-1~deb12u1").patch, 15);
        assert_eq!(v("v20.1.0"), semver::Version::new(20, 1, 0));
        assert_eq!(v("9.1"), semver::Version::new(9, 1, 0));
        assert!(v("3.11.2") > v("3.9.0"));
        assert!(v("17.0.15+6") > v("17.0.9"));
        assert!(v("1.0.0-rc1") < v("1.0.0"));
        assert!(parse_version("latest").is_none());
        assert!(parse_version("").is_none());
    }

    #[test]
    fn sandbox_paths() {
        for ok in ["/", "/usr", "/usr/lib/x86_64-linux-gnu"] {
            assert!(is_normal_absolute(ok), "{ok}");
        }
        for bad in [
            "usr",
            "",
            "/usr/",
            "//usr",
            "/usr/../etc",
            "/./usr",
            "/usr/.",
        ] {
            assert!(!is_normal_absolute(bad), "{bad}");
        }
    }

    #[test]
    fn arch_names() {
        assert_eq!(canonical_arch("amd64"), canonical_arch("x86_64"));
        assert_eq!(canonical_arch("ARM64"), canonical_arch("aarch64"));
        assert_eq!(canonical_arch(host_debian_arch()), std::env::consts::ARCH);
    }
}
