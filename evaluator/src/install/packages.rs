//! Which Debian package provides a host path a recipe needs, for the error that names
//! it when the path is missing.

use std::path::Path;

use super::InstallError;

/// The error for a host path a recipe needs that is not there, naming the Debian
/// package to install ([`debian_package`]), else the recipe's `packages:`.
pub(super) fn missing_host_file(path: &Path, recipe_packages: &[String]) -> InstallError {
    let hint = match debian_package(path, recipe_packages) {
        Some(p) => format!("install the Debian package {p} (apt-get install {p})"),
        None if !recipe_packages.is_empty() => format!(
            "install the Debian package that provides it (the recipe's packages: {})",
            recipe_packages.join(", ")
        ),
        None => "install the package that provides it".to_owned(),
    };
    InstallError::MissingHostFile {
        path: path.to_owned(),
        hint,
    }
}

/// The Debian (12) package that provides `path`, for the host paths the shipped
/// recipes copy or run: what `dpkg -S` names, except where another package gives
/// the recipe the rest of what it copies too (`python3.11` for its interpreter,
/// the JDK for the JVM's files).
pub(super) fn debian_package(path: &Path, recipe_packages: &[String]) -> Option<String> {
    const COREUTILS: &[&str] = &[
        "true", "false", "cat", "ls", "id", "env", "sleep", "head", "tail", "yes", "dd", "echo",
        "cp", "mv", "rm", "mkdir", "wc", "sort", "uniq", "cut", "tr", "date", "uname", "tee",
        "touch", "printf", "seq", "basename", "dirname", "timeout",
    ];
    let p = path.to_str()?;
    // Merged /usr: /bin/x is /usr/bin/x, /lib/x is /usr/lib/x.
    let merged;
    let p = if p.starts_with("/bin/") || p.starts_with("/lib/") || p.starts_with("/sbin/") {
        merged = format!("/usr{p}");
        merged.as_str()
    } else {
        p
    };
    // `3.11` in `python3.11`, `/usr/lib/python3.11/...`.
    let python_version = |rest: &str| {
        let v = rest.split('/').next().unwrap_or_default();
        let (major, minor) = v.split_once('.')?;
        (!major.is_empty()
            && !minor.is_empty()
            && major
                .bytes()
                .chain(minor.bytes())
                .all(|b| b.is_ascii_digit()))
        .then(|| v.to_owned())
    };
    let package = match p {
        "/usr/bin/sh" | "/usr/bin/dash" => "dash".to_owned(),
        "/usr/bin/python3" => "python3-minimal".to_owned(),
        "/usr/bin/node" | "/usr/bin/nodejs" => "nodejs".to_owned(),
        "/etc/ssl/certs/ca-certificates.crt" => "ca-certificates".to_owned(),
        "/etc/ssl/openssl.cnf" => "openssl".to_owned(),
        "/usr/bin/java" => recipe_packages
            .iter()
            .find(|p| p.starts_with("openjdk-"))
            .cloned()
            .unwrap_or_else(|| "default-jre-headless".to_owned()),
        _ if p == "/usr/lib/ssl" || p.starts_with("/usr/lib/ssl/") => "openssl".to_owned(),
        _ if p.ends_with("/libgcc_s.so.1") => "libgcc-s1".to_owned(),
        _ => {
            if let Some(tool) = p.strip_prefix("/usr/bin/") {
                if COREUTILS.contains(&tool) {
                    return Some("coreutils".to_owned());
                }
                return tool
                    .strip_prefix("python")
                    .and_then(python_version)
                    .map(|v| format!("python{v}"));
            }
            if let Some(rest) = p.strip_prefix("/usr/lib/python") {
                return python_version(rest).map(|v| format!("libpython{v}-stdlib"));
            }
            if let Some(rest) = p.strip_prefix("/etc/python") {
                return python_version(rest).map(|v| format!("libpython{v}-minimal"));
            }
            let rest = p.strip_prefix("/usr/lib/jvm/java-")?;
            let (major, _) = rest.split_once("-openjdk")?;
            if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            format!("openjdk-{major}-jdk-headless")
        }
    };
    Some(package)
}
