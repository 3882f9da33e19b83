//! The `jsheets-runtime` command line, run as a user would (root needed: it builds and
//! runs real sandboxes).

use std::path::Path;
use std::process::{Command, Output};

fn cli(runtimes: &Path, state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jsheets-runtime"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("JSHEETS_RUNTIME_RUNTIMES_DIR", runtimes)
        .env("JSHEETS_RUNTIME_STATE_DIR", state)
        .output()
        .expect("running jsheets-runtime")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn install_run_inspect_pack_unpack_remove() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let runtimes = tmp.path().join("runtimes");
    let state = std::env::temp_dir().join("jsheets-runtime-cli-tests");

    let out = cli(&runtimes, &state, &["runtime", "install", "shell"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("installed shell@"),
        "{}",
        text(&out.stdout)
    );

    let out = cli(
        &runtimes,
        &state,
        &[
            "run",
            "--runtime",
            "shell",
            "-e",
            "echo hello; echo oops >&2",
            "-e",
            "echo second",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\nsecond\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("oops") && err.contains("status: ok  exit: 0"),
        "{err}"
    );

    // Failure exit codes: the snippet failed (1); a limit hit (1); an unknown runtime (64).
    let out = cli(&runtimes, &state, &["run", "-r", "shell", "-e", "exit 7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("status: exited_nonzero  exit: 7"));
    let out = cli(
        &runtimes,
        &state,
        &["run", "-r", "shell", "--wall-time", "0.5", "-e", "sleep 30"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("status: wall_timeout"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(
        &runtimes,
        &state,
        &["run", "-r", "pyhton", "-e", "print(1)"],
    );
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(
        err.contains("pyhton") && err.contains("shell"),
        "the error lists what is installed: {err}"
    );
    let out = cli(&runtimes, &state, &["run", "-r", "shell"]);
    assert_eq!(out.status.code(), Some(64), "nothing to run");

    let code_file = tmp.path().join("snippet.sh");
    std::fs::write(&code_file, "echo from a file\n").unwrap();
    let out = cli(
        &runtimes,
        &state,
        &["run", "-r", "shell", code_file.to_str().unwrap()],
    );
    assert_eq!(text(&out.stdout), "from a file\n");

    let out = cli(&runtimes, &state, &["runtime", "list"]);
    assert!(
        text(&out.stdout).lines().any(|l| l.starts_with("shell ")),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&runtimes, &state, &["runtime", "info", "shell"]);
    assert!(
        text(&out.stdout).contains("evaluator: command (/bin/sh)"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&runtimes, &state, &["runtime", "test", "shell"]);
    assert!(
        out.status.success() && text(&out.stdout).contains("works"),
        "{}",
        text(&out.stderr)
    );

    let packed = tmp.path().join("packed");
    std::fs::create_dir_all(&packed).unwrap();
    let out = cli(
        &runtimes,
        &state,
        &[
            "runtime",
            "pack",
            "shell",
            "--out",
            packed.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    let (sha, archive) = line.trim().split_once("  ").expect("sha256sum format");
    assert_eq!(sha.len(), 64);

    let out = cli(&runtimes, &state, &["runtime", "remove", "../shell"]);
    assert!(!out.status.success(), "names are validated before use");
    let out = cli(&runtimes, &state, &["runtime", "remove", "shell"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&runtimes, &state, &["run", "-r", "shell", "-e", "true"]);
    assert_eq!(out.status.code(), Some(64), "removed");

    let wrong = "0".repeat(64);
    let out = cli(
        &runtimes,
        &state,
        &["runtime", "unpack", archive, "--sha256", &wrong],
    );
    assert!(!out.status.success(), "a wrong checksum is refused");
    let out = cli(&runtimes, &state, &["runtime", "unpack", archive]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(
        &runtimes,
        &state,
        &["run", "-r", "shell", "-e", "echo unpacked"],
    );
    assert_eq!(text(&out.stdout), "unpacked\n");
}

#[test]
fn bad_configuration_exits_64_naming_key_value_and_source() {
    let out = Command::new(env!("CARGO_BIN_EXE_jsheets-runtime"))
        .arg("config")
        .env_clear()
        .env("JSHEETS_RUNTIME_SERVER_PORT", "99999")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(
        err.contains("server.port")
            && err.contains("99999")
            && err.contains("JSHEETS_RUNTIME_SERVER_PORT"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_jsheets-runtime"))
        .arg("config")
        .env_clear()
        .env("JSHEETS_RUNTIME_MONITORING_INFLUX_PASSWORD", "hunter2")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        !text(&out.stdout).contains("hunter2"),
        "secrets are redacted"
    );
}

#[test]
fn access_list_check_reports_errors_and_dead_rules() {
    let lists = Path::new(env!("CARGO_MANIFEST_DIR")).join("../access-lists");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_jsheets-runtime"))
            .args(args)
            .output()
            .unwrap()
    };
    for name in [
        "java-default.access",
        "python-default.access",
        "jsheets-original.access",
    ] {
        let path = lists.join(name);
        let out = run(&["access-list", "check", path.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", text(&out.stdout));
        assert!(text(&out.stdout).contains("no problems"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.access");
    std::fs::write(&bad, "java.util\n!foo bar\n").unwrap();
    let out = run(&["access-list", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("bad.access:2:6:"),
        "file, line and column: {}",
        text(&out.stdout)
    );
    let dup = tmp.path().join("dup.access");
    std::fs::write(&dup, "java.util\njava.util # again\n").unwrap();
    let out = run(&["access-list", "check", dup.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("dup.access:1:"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_example_configuration_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_jsheets-runtime"))
        .args(["config", "--config", example.to_str().unwrap()])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("port = 8080"));
}
