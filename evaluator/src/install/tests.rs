//! The installer against a stand-in runner: the shipped recipes built for real
//! from this host, build steps and verification faked.

use std::sync::Mutex;

use super::packages::{debian_package, missing_host_file};
use super::recipe::VersionSource;
use super::runtime_file::dangling_links;
use super::*;
use crate::lang::EvaluatorKind;
use crate::runtime::parse_version;
use crate::sandbox::Status;
use std::future::Future;
use std::pin::Pin;

/// An error with its causes, as the CLI shows it.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}

/// Stands in for the sandbox: build steps are recorded and succeed, verification
/// answers with a fixed result (an error: a sandbox that failed to set up) and records
/// what it was asked.
struct FakeRunner {
    verify_result: std::result::Result<String, String>,
    seen: Mutex<Vec<(String, PathBuf)>>,
    steps: Mutex<Vec<Vec<String>>>,
}

impl FakeRunner {
    fn answering(result: std::result::Result<&str, &str>) -> Self {
        FakeRunner {
            verify_result: result.map(str::to_owned).map_err(str::to_owned),
            seen: Mutex::new(Vec::new()),
            steps: Mutex::new(Vec::new()),
        }
    }
}

impl BuildRunner for FakeRunner {
    fn run_build_step<'a>(
        &'a self,
        argv: &'a [String],
        _env: &'a [(String, String)],
        writable: &'a Path,
        hidden: &'a Path,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<(), BuildError>> + Send + 'a>> {
        assert!(writable.starts_with(hidden));
        self.steps.lock().unwrap().push(argv.to_vec());
        Box::pin(async { Ok(()) })
    }

    fn verify<'a>(
        &'a self,
        runtime: &'a Runtime,
        code: &'a str,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<String, BuildError>> + Send + 'a>> {
        self.seen
            .lock()
            .unwrap()
            .push((code.to_owned(), runtime.dir().to_owned()));
        let result = self
            .verify_result
            .clone()
            .map_err(|message| BuildError::Verification {
                status: Status::SetupFailed,
                error: Some(message),
                problems: Vec::new(),
            });
        Box::pin(async move { result })
    }
}

fn recipes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes")
}

fn shell_recipe_with(tmp: &Path, replace: &str, by: &str) -> PathBuf {
    let text = std::fs::read_to_string(recipes_dir().join("shell.yml")).unwrap();
    assert!(text.contains(replace), "{replace}");
    let path = tmp.join("shell.yml");
    std::fs::write(&path, text.replace(replace, by)).unwrap();
    path
}

#[tokio::test]
async fn installs_the_shell_recipe_and_keeps_the_old_version_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = tmp.path().join("runtimes");
    let runner = FakeRunner::answering(Ok("2\n"));
    let events = Mutex::new(Vec::new());
    let record = |p: Progress| events.lock().unwrap().push(p);
    let rt = install(
        &recipes_dir().join("shell.yml"),
        &runtimes,
        &runner,
        &record,
    )
    .await
    .unwrap();

    assert_eq!(rt.name(), "shell");
    assert_eq!(rt.dir(), runtimes.join("shell"));
    assert_eq!(rt.evaluator().kind, EvaluatorKind::Command);
    assert_eq!(rt.evaluator().program, "/bin/sh");
    assert_eq!(
        rt.semver().major,
        parse_version(rt.version()).unwrap().major
    );
    let iso = runtimes.join("shell/isolated");
    // Merged /usr: canonical files, symlinks for the other names, mounts for both.
    assert_eq!(
        std::fs::read_link(iso.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert!(std::fs::symlink_metadata(iso.join("usr/bin/dash"))
        .unwrap()
        .is_file());
    assert_eq!(
        std::fs::read_link(iso.join("usr/bin/sh")).unwrap(),
        Path::new("dash")
    );
    assert!(iso.join("usr/lib/x86_64-linux-gnu/libc.so.6").is_file());
    assert!(iso.join("lib64/ld-linux-x86-64.so.2").exists());
    let targets: Vec<_> = rt
        .mounts()
        .iter()
        .map(|m| m.target.to_str().unwrap().to_owned())
        .collect();
    for t in ["/bin", "/lib", "/lib64", "/usr"] {
        assert!(targets.contains(&t.to_owned()), "{targets:?}");
    }
    let lib = rt
        .mounts()
        .iter()
        .find(|m| m.target == Path::new("/lib"))
        .unwrap();
    assert_eq!(lib.source, iso.join("usr/lib").canonicalize().unwrap());
    // Every link is relative and stays inside (the packer refuses anything else).
    assert!(dangling_links(&iso).unwrap().is_empty());
    let original = std::fs::read_to_string(runtimes.join("shell").join(ORIGINAL_FILE)).unwrap();
    assert!(
        original.contains("copied_from_host:") && original.contains("- /usr/bin/cat"),
        "{original}"
    );
    // Verification ran in the staging directory, not the final one.
    let seen = runner.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0]
        .1
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(".staging-shell-"));
    assert_eq!(crate::fsutil::sorted_names(&runtimes), ["shell"]);
    let events = events.lock().unwrap().clone();
    assert!(events
        .iter()
        .any(|e| matches!(e, Progress::Finished { step: Step::Copy, files } if *files >= 10)));
    assert!(events
        .iter()
        .any(|e| matches!(e, Progress::Finished { step: Step::ElfDeps, files } if *files > 0)));
    assert!(events.contains(&Progress::Finished {
        step: Step::Verify,
        files: 0
    }));

    // A failing rebuild leaves the installed version untouched and no staging dir.
    std::fs::write(iso.join("marker"), "old").unwrap();
    let failing = FakeRunner::answering(Err("sandbox exploded"));
    let err = install(
        &recipes_dir().join("shell.yml"),
        &runtimes,
        &failing,
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            InstallError::Verify(BuildError::Verification { error: Some(m), .. })
                if m == "sandbox exploded"
        ),
        "{err}"
    );
    let wrong = FakeRunner::answering(Ok("3\n"));
    let err = install(&recipes_dir().join("shell.yml"), &runtimes, &wrong, &|_| {})
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "verification printed \"3\\n\", expected \"2\\n\""
    );
    assert_eq!(std::fs::read_to_string(iso.join("marker")).unwrap(), "old");
    assert_eq!(crate::fsutil::sorted_names(&runtimes), ["shell"]);

    // A successful rebuild replaces it.
    install(
        &recipes_dir().join("shell.yml"),
        &runtimes,
        &runner,
        &|_| {},
    )
    .await
    .unwrap();
    assert!(!iso.join("marker").exists());
    assert_eq!(crate::fsutil::sorted_names(&runtimes), ["shell"]);

    remove(&runtimes, "shell").unwrap();
    assert!(crate::fsutil::sorted_names(&runtimes).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_steps_go_through_the_runner_and_failures_clean_up() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = tmp.path().join("runtimes");
    let recipe = shell_recipe_with(
        tmp.path(),
        "elf_deps: true\n",
        "elf_deps: true\npip: [six==1.16.0]\npost_install:\n  - [/usr/bin/true, \"{isolated}/x\"]\n",
    );
    let runner = FakeRunner::answering(Ok("2\n"));
    install(&recipe, &runtimes, &runner, &|_| {}).await.unwrap();
    let steps = runner.steps.lock().unwrap().clone();
    assert_eq!(steps.len(), 2);
    assert_eq!(&steps[0][..3], ["/bin/sh", "-m", "pip"]);
    assert!(
        steps[0]
            .iter()
            .any(|a| a.ends_with("/isolated/usr/lib/python3/dist-packages")),
        "{steps:?}"
    );
    assert_eq!(steps[0].last().unwrap(), "six==1.16.0");
    assert!(
        steps[1][1].contains("/.staging-shell-") && steps[1][1].ends_with("/isolated/x"),
        "{steps:?}"
    );

    struct FailingSteps;
    impl BuildRunner for FailingSteps {
        fn run_build_step<'a>(
            &'a self,
            _: &'a [String],
            _: &'a [(String, String)],
            _: &'a Path,
            _: &'a Path,
        ) -> Pin<Box<dyn Future<Output = std::result::Result<(), BuildError>> + Send + 'a>>
        {
            Box::pin(async {
                Err(BuildError::Failed {
                    command: "pip".into(),
                    how: "exit status: 1".into(),
                    output: "no network".into(),
                })
            })
        }
        fn verify<'a>(
            &'a self,
            _: &'a Runtime,
            _: &'a str,
        ) -> Pin<Box<dyn Future<Output = std::result::Result<String, BuildError>> + Send + 'a>>
        {
            Box::pin(async { Ok("2\n".to_owned()) })
        }
    }
    let err = install(&recipe, &runtimes, &FailingSteps, &|_| {})
        .await
        .unwrap_err();
    let err = chain(&err);
    assert!(
        err.starts_with("build step `/bin/sh -m pip install"),
        "{err}"
    );
    assert!(
        err.ends_with("failed: pip ended with exit status: 1:\nno network"),
        "{err}"
    );
    assert_eq!(crate::fsutil::sorted_names(&runtimes), ["shell"]);
}

#[tokio::test]
async fn recipe_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let runtimes = tmp.path().join("runtimes");
    let runner = FakeRunner::answering(Ok("2\n"));
    let cases = [
        (
            "name: shell",
            "name: ../etc",
            "name: `../etc` does not match",
        ),
        (
            "elf_deps: true",
            "elf_deps: true\nshell_script: x",
            "is not valid",
        ),
        (
            "  - /usr/bin/cat\n",
            "  - /usr/bin/no-such-tool\n",
            "/usr/bin/no-such-tool does not exist on this host: install the Debian package \
             that provides it (the recipe's packages: dash, coreutils)",
        ),
        (
            "  - /usr/bin/cat\n",
            "  - usr/bin/cat\n",
            "copy[2]: `usr/bin/cat` must be an absolute host path",
        ),
        (
            "coreutils\\\\) (\\\\S+)",
            "nomatch (\\\\S+)",
            "version regex `nomatch (\\S+)` does not match",
        ),
        ("coreutils\\\\) (\\\\S+)", "(", "invalid version regex `(`"),
    ];
    for (from, to, expected) in cases {
        let recipe = shell_recipe_with(tmp.path(), from, to);
        let err = install(&recipe, &runtimes, &runner, &|_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{from} -> {to}: {err}");
        assert!(
            !runtimes.exists() || crate::fsutil::sorted_names(&runtimes).is_empty(),
            "{:?}",
            crate::fsutil::sorted_names(&runtimes)
        );
    }
    let other = if std::env::consts::ARCH == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    let recipe = shell_recipe_with(
        tmp.path(),
        "architectures: [amd64, arm64]",
        &format!("architectures: [{other}]"),
    );
    let err = install(&recipe, &runtimes, &runner, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "requirements.architectures: {other} does not include this host"
        )),
        "{err}"
    );
}

#[test]
fn a_missing_host_file_names_its_debian_package() {
    let pkgs = |p: &str| debian_package(Path::new(p), &["openjdk-17-jdk-headless".into()]);
    for (path, package) in [
        ("/usr/bin/python3", "python3-minimal"),
        ("/usr/bin/python3.11", "python3.11"),
        ("/usr/lib/python3.11", "libpython3.11-stdlib"),
        (
            "/usr/lib/python3.11/json/__init__.py",
            "libpython3.11-stdlib",
        ),
        ("/etc/python3.11", "libpython3.11-minimal"),
        ("/usr/lib/ssl", "openssl"),
        ("/etc/ssl/openssl.cnf", "openssl"),
        ("/etc/ssl/certs/ca-certificates.crt", "ca-certificates"),
        ("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1", "libgcc-s1"),
        ("/bin/sh", "dash"),
        ("/bin/true", "coreutils"),
        ("/usr/bin/dd", "coreutils"),
        ("/usr/bin/java", "openjdk-17-jdk-headless"),
        (
            "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
            "openjdk-17-jdk-headless",
        ),
        ("/usr/bin/node", "nodejs"),
    ] {
        assert_eq!(pkgs(path).as_deref(), Some(package), "{path}");
    }
    assert_eq!(pkgs("/usr/lib/python3/dist-packages"), None);
    assert_eq!(pkgs("/opt/thing"), None);
    // Every path the shipped recipes copy or run has a package.
    for entry in std::fs::read_dir(recipes_dir()).unwrap() {
        let path = entry.unwrap().path();
        let recipe = load_recipe(&path).unwrap();
        let mut paths: Vec<String> = recipe.copy.iter().map(|c| c.path().to_owned()).collect();
        paths.push(recipe.evaluator.program.clone());
        if let VersionSource::Command { command, .. } = &recipe.version {
            paths.push(command[0].clone());
        }
        for p in paths {
            assert!(
                debian_package(Path::new(&p), &recipe.packages).is_some(),
                "{}: {p}",
                path.display()
            );
        }
    }
    let err = missing_host_file(Path::new("/usr/bin/python3"), &[]);
    assert_eq!(
        err.to_string(),
        "/usr/bin/python3 does not exist on this host: install the Debian package \
         python3-minimal (apt-get install python3-minimal)"
    );
}

#[tokio::test]
async fn a_recipe_copying_a_missing_file_names_the_package() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = shell_recipe_with(
        tmp.path(),
        "  - /usr/bin/dd\n",
        "  - /usr/bin/dd\n  - /usr/bin/python3.99\n",
    );
    let runner = FakeRunner::answering(Ok("2\n"));
    let err = install(&recipe, &tmp.path().join("runtimes"), &runner, &|_| {})
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "/usr/bin/python3.99 does not exist on this host: install the Debian package \
         python3.99 (apt-get install python3.99)"
    );
    let recipe = shell_recipe_with(
        tmp.path(),
        "command: [/usr/bin/true, --version]",
        "command: [/usr/bin/python3.99, --version]",
    );
    let err = install(&recipe, &tmp.path().join("runtimes"), &runner, &|_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/usr/bin/python3.99 does not exist on this host"),
        "{err}"
    );
}

#[test]
fn remove_checks_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("etc")).unwrap();
    for bad in ["../etc", "/etc", "", ".staging-x", "a/b"] {
        assert!(
            matches!(remove(tmp.path(), bad), Err(InstallError::InvalidName(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        remove(tmp.path(), "missing"),
        Err(InstallError::NotInstalled(_))
    ));
    std::fs::create_dir_all(tmp.path().join("rt/isolated")).unwrap();
    remove(tmp.path(), "rt").unwrap();
    assert_eq!(crate::fsutil::sorted_names(tmp.path()), ["etc"]);
}

#[test]
fn every_recipe_parses() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(recipes_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml") {
            let recipe = load_recipe(&path)
                .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)));
            assert_eq!(
                Some(recipe.name.as_str()),
                path.file_stem().and_then(|s| s.to_str())
            );
            names.push(recipe.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "node-20",
            "openjdk-17",
            "python-3.11",
            "python-3.11-ml",
            "shell"
        ]
    );
}

#[tokio::test]
async fn installs_the_python_recipe() {
    // About a second: a real stdlib copy with lib-dynload's library closure.
    let tmp = tempfile::tempdir().unwrap();
    let runner = FakeRunner::answering(Ok("2\n"));
    let recipe = recipes_dir().join("python-3.11.yml");
    let rt = install(&recipe, tmp.path(), &runner, &|_| {})
        .await
        .unwrap();
    assert_eq!(rt.evaluator().kind, EvaluatorKind::Python);
    assert_eq!(rt.environment()["PYTHONDONTWRITEBYTECODE"], "1");
    let iso = tmp.path().join("python-3.11/isolated");
    let stdlib = iso.join("usr/lib/python3.11");
    assert!(stdlib.join("os.py").is_file());
    assert!(
        stdlib.join("__pycache__").is_dir(),
        "bytecode caches are kept"
    );
    assert!(!stdlib.join("test").exists() && !stdlib.join("ensurepip").exists());
    assert!(!stdlib.join("config-3.11-x86_64-linux-gnu").exists());
    assert!(stdlib.join("lib-dynload").read_dir().unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("_ssl.")
    }));
    // _ssl's libraries come along through elf_deps; so do the certificates.
    let multiarch = iso.join("usr/lib/x86_64-linux-gnu");
    assert!(multiarch.join("libssl.so.3").exists() && multiarch.join("libcrypto.so.3").exists());
    assert!(iso.join("etc/ssl/certs/ca-certificates.crt").is_file());
    assert!(
        iso.join("usr/lib/ssl/cert.pem").exists(),
        "relative link resolves inside"
    );
    assert!(!iso.join("etc/passwd").exists());
    let targets: Vec<_> = rt
        .mounts()
        .iter()
        .map(|m| m.target.display().to_string())
        .collect();
    assert_eq!(targets, ["/etc", "/lib", "/lib64", "/usr"]);
}

#[test]
fn install_future_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let runner = FakeRunner::answering(Ok(""));
    assert_send(install(Path::new("/x"), Path::new("/y"), &runner, &|_| {}));
}
