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
    // Each unpacking limit is a flag, and a refusal names the bound it hit.
    for (flag, value, says) in [
        ("--max-entries", "3", "it has more than 3 entries"),
        (
            "--max-bytes",
            "4096",
            "it expands to more than 4096 bytes (the maximum size)",
        ),
        ("--max-ratio", "1", "times its compressed size"),
    ] {
        let out = cli(
            &runtimes,
            &state,
            &["runtime", "unpack", archive, flag, value],
        );
        assert_eq!(out.status.code(), Some(1), "{flag}");
        assert!(
            text(&out.stderr).contains(says),
            "{flag}: {}",
            text(&out.stderr)
        );
    }
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
        // jsheets' own list allows API that makes classes named by data; ours do not.
        let warned = text(&out.stdout).contains("warning: ");
        assert_eq!(
            warned,
            name == "jsheets-original.access",
            "{name}: {}",
            text(&out.stdout)
        );
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

/// `jsheets-runtime config` (no other setting than `env`), hermetic: no default file.
fn config_output(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let empty = tempfile::NamedTempFile::new().expect("a temporary file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jsheets-runtime"));
    cmd.args(args)
        .env_clear()
        .env("JSHEETS_RUNTIME_CONFIG", empty.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running jsheets-runtime")
}

/// The `runtimesDir = "…"` line of `config`'s output.
fn shown_runtimes_dir(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("runtimesDir = "))
        .unwrap_or_else(|| panic!("no runtimesDir in {}", text(&out.stdout)))
        .trim_matches('"')
        .to_string()
}

#[test]
fn one_runtimes_dir_setting_in_every_spelling_and_its_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.toml");
    std::fs::write(&file, "[evaluation]\nruntimesDir = \"/from/file\"\n").unwrap();
    let file = file.to_str().unwrap();
    let old = Path::new("/from/old-env");
    let new = Path::new("/from/env");

    let out = config_output(&["config"], &[]);
    assert_eq!(
        shown_runtimes_dir(&out),
        "/var/lib/jsheets-runtime/runtimes"
    );
    let out = config_output(&["config", "--config", file], &[]);
    assert_eq!(shown_runtimes_dir(&out), "/from/file");
    // The older variable is an alias of the key's own, and beats the file.
    let out = config_output(
        &["config", "--config", file],
        &[("JSHEETS_RUNTIME_RUNTIMES_DIR", old)],
    );
    assert_eq!(shown_runtimes_dir(&out), "/from/old-env");
    assert!(
        !text(&out.stderr).contains("unknown"),
        "{}",
        text(&out.stderr)
    );
    let both = [
        ("JSHEETS_RUNTIME_RUNTIMES_DIR", old),
        ("JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR", new),
    ];
    let out = config_output(&["config", "--config", file], &both);
    assert_eq!(shown_runtimes_dir(&out), "/from/env");
    assert!(
        text(&out.stderr).contains(
            "both JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR and JSHEETS_RUNTIME_RUNTIMES_DIR are set"
        ),
        "{}",
        text(&out.stderr)
    );
    // The flag beats everything, before or after the command.
    for args in [
        ["--runtimes-dir", "/from/flag", "config", "--config", file],
        ["config", "--config", file, "--runtimes-dir", "/from/flag"],
    ] {
        let out = config_output(&args, &both);
        assert_eq!(shown_runtimes_dir(&out), "/from/flag", "{args:?}");
    }
    // A bad value names its source, in the old spelling too.
    let out = config_output(
        &["config"],
        &[("JSHEETS_RUNTIME_RUNTIMES_DIR", Path::new("relative"))],
    );
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(
        err.contains("evaluation.runtimesDir")
            && err.contains("\"relative\"")
            && err.contains("JSHEETS_RUNTIME_RUNTIMES_DIR"),
        "{err}"
    );
}

/// A `serve` process, killed if the test ends before it is stopped.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_and_the_local_commands_use_the_same_runtimes_dir() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let runtimes = tmp.path().join("runtimes");
    let state = std::env::temp_dir().join("jsheets-runtime-cli-tests");
    let empty = tmp.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    // A directory that cannot be created (its parent is a file): whoever uses it fails.
    std::fs::write(tmp.path().join("file"), "").unwrap();
    let unusable = tmp.path().join("file/runtimes");
    let bin = env!("CARGO_BIN_EXE_jsheets-runtime");
    let command = |args: &[&str], env: &[(&str, &Path)]| {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("JSHEETS_RUNTIME_CONFIG", &empty)
            .env("JSHEETS_RUNTIME_STATE_DIR", &state);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    };
    let runtimes_arg = runtimes.to_str().unwrap();

    // Installed through the flag (the environment says otherwise)...
    let out = command(
        &[
            "runtime",
            "install",
            "shell",
            "--runtimes-dir",
            runtimes_arg,
        ],
        &[("JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR", &unusable)],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(runtimes.join("shell/runtime.yml").is_file());
    // ...found through the key's variable, and through the configuration file.
    let out = command(
        &["runtime", "list"],
        &[("JSHEETS_RUNTIME_EVALUATION_RUNTIMES_DIR", &runtimes)],
    )
    .output()
    .unwrap();
    assert!(
        text(&out.stdout).lines().any(|l| l.starts_with("shell ")),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let file = tmp.path().join("config.toml");
    std::fs::write(
        &file,
        format!("[evaluation]\nruntimesDir = {runtimes_arg:?}\n"),
    )
    .unwrap();
    let out = command(
        &[
            "run",
            "-r",
            "shell",
            "-e",
            "echo from the configured directory",
        ],
        &[("JSHEETS_RUNTIME_CONFIG", &file)],
    )
    .output()
    .unwrap();
    assert_eq!(
        text(&out.stdout),
        "from the configured directory\n",
        "{}",
        text(&out.stderr)
    );

    // `serve` takes the old variable...
    let serve_env: [(&str, &Path); 3] = [
        ("JSHEETS_RUNTIME_SERVER_PORT", Path::new("0")),
        ("JSHEETS_RUNTIME_SERVER_HOST", Path::new("127.0.0.1")),
        (
            "JSHEETS_RUNTIME_EVALUATION_DEFAULT_RUNTIME",
            Path::new("shell"),
        ),
    ];
    let mut env = serve_env.to_vec();
    env.push(("JSHEETS_RUNTIME_RUNTIMES_DIR", &unusable));
    let out = command(&["serve"], &env).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("creating {}", unusable.display())),
        "{}",
        text(&out.stderr)
    );

    // ...and the flag over it: it serves the runtime installed there.
    let mut child = command(&["serve", "--runtimes-dir", runtimes_arg], &env);
    child
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut serve = Serve(child.spawn().unwrap());
    let stdout = serve.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("serve prints where it listens");
    let addr = line
        .strip_prefix("jsheets-runtime listening on ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let out = command(
        &[
            "eval",
            "--endpoint",
            &format!("http://{addr}"),
            "-r",
            "shell",
            "-e",
            "echo served",
        ],
        &[],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("served\n"),
        "{}",
        text(&out.stdout)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(serve.0.wait().unwrap().success(), "a drained serve exits 0");
}

/// Every line of `out` parses as a JSON object with a level and a message; returns them.
fn json_lines(what: &str, out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: not a JSON line ({e}): {line:?}\n{out}"));
            assert!(
                v["level"].is_string() && v["fields"]["message"].is_string(),
                "{what}: no level or message: {line}"
            );
            v
        })
        .collect()
}

fn message(v: &serde_json::Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or_default()
}

/// With `log.format = json`, `runtime install`, `runtime test` and `serve` write nothing
/// but JSON lines, on stdout and stderr, up to `serve`'s exit on SIGTERM; the listening
/// line is one of them, on stdout, with the address as a field.
#[test]
fn json_log_format_makes_every_line_json() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let runtimes = tmp.path().join("runtimes");
    let state = std::env::temp_dir().join("jsheets-runtime-cli-tests");
    let empty = tmp.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let bin = env!("CARGO_BIN_EXE_jsheets-runtime");
    let environment = |cmd: &mut Command| {
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("JSHEETS_RUNTIME_CONFIG", &empty)
            .env("JSHEETS_RUNTIME_RUNTIMES_DIR", &runtimes)
            .env("JSHEETS_RUNTIME_STATE_DIR", &state)
            .env("JSHEETS_RUNTIME_LOG_FORMAT", "json");
    };
    let command = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        environment(&mut cmd);
        cmd
    };

    let out = command(&["runtime", "install", "shell"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = json_lines("install stdout", &text(&out.stdout));
    assert!(
        stdout
            .iter()
            .any(|v| message(v).starts_with("installed shell@")),
        "{stdout:?}"
    );
    json_lines("install stderr", &text(&out.stderr));

    let out = command(&["runtime", "test", "shell"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = json_lines("test stdout", &text(&out.stdout));
    assert!(
        stdout
            .iter()
            .any(|v| message(v).starts_with("runtime shell@") && message(v).ends_with(" works")),
        "{stdout:?}"
    );
    // The snippet's own output ("2"), one event per line.
    assert!(stdout.iter().any(|v| message(v) == "2"), "{stdout:?}");
    let stderr = json_lines("test stderr", &text(&out.stderr));
    let status = stderr
        .iter()
        .find(|v| message(v).starts_with("status: ok"))
        .unwrap_or_else(|| panic!("no status line: {stderr:?}"));
    assert_eq!(status["fields"]["status"], "ok", "{status}");
    assert!(
        status["fields"]["peak_memory_bytes"].as_u64() > Some(0),
        "{status}"
    );

    // A file a recipe copies is missing: one JSON error line naming the package.
    let recipe = tmp.path().join("broken.yml");
    let shell =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/shell.yml"))
            .unwrap();
    std::fs::write(
        &recipe,
        shell.replace("name: shell", "name: broken").replace(
            "  - /usr/bin/dd\n",
            "  - /usr/bin/dd\n  - /usr/bin/python3.99\n",
        ),
    )
    .unwrap();
    let out = command(&["runtime", "install", recipe.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = json_lines("failed install stderr", &text(&out.stderr));
    let last = stderr.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        message(last).ends_with(
            "/usr/bin/python3.99 does not exist on this host: install the Debian package \
             python3.99 (apt-get install python3.99)"
        ),
        "{last}"
    );

    // serve, its soft open-files limit below the hard one.
    let stderr_path = tmp.path().join("serve.stderr");
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=1024:8192", "--", bin, "serve"]);
    environment(&mut cmd);
    cmd.env("JSHEETS_RUNTIME_SERVER_PORT", "0")
        .env("JSHEETS_RUNTIME_SERVER_HOST", "127.0.0.1")
        .env("JSHEETS_RUNTIME_EVALUATION_DEFAULT_RUNTIME", "shell")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut serve = Serve(cmd.spawn().unwrap());
    let stdout = serve.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "no listening line; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            )
        });
    let listening: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    let addr = listening["fields"]["local"].as_str().unwrap().to_string();
    assert_eq!(
        message(&listening),
        format!(
            "jsheets-runtime listening on {addr} as {}",
            listening["fields"]["service_id"].as_str().unwrap()
        )
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", serve.0.id())).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(nofile, ["8192", "8192"], "the soft limit was not raised");
    // An evaluation, so that the node logs a little more.
    let out = Command::new(env!("CARGO_BIN_EXE_jsheets-runtime"))
        .args([
            "eval",
            "--endpoint",
            &format!("http://{addr}"),
            "-r",
            "shell",
            "-e",
            "echo served",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(serve.0.wait().unwrap().success(), "a drained serve exits 0");
    let rest: Vec<String> = rx.try_iter().collect();
    json_lines("serve stdout", &rest.join("\n"));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let events = json_lines("serve stderr", &stderr);
    assert!(events.len() >= 3, "{stderr}");
}

/// A hard open-files limit below what the configuration needs: one line, exit 71,
/// before anything is bound.
#[test]
fn serve_refuses_an_open_files_limit_below_its_needs() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let empty = tmp.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let out = Command::new("prlimit")
        .args(["--nofile=512:1024", "--"])
        .arg(env!("CARGO_BIN_EXE_jsheets-runtime"))
        .arg("serve")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("JSHEETS_RUNTIME_CONFIG", &empty)
        .env("JSHEETS_RUNTIME_RUNTIMES_DIR", tmp.path().join("runtimes"))
        .env("JSHEETS_RUNTIME_STATE_DIR", tmp.path().join("state"))
        .env("JSHEETS_RUNTIME_SERVER_PORT", "0")
        .env("JSHEETS_RUNTIME_EVALUATION_MAX_CONCURRENT", "4")
        // The default pools depend on the machine's CPUs; none keeps the figure fixed.
        .env("JSHEETS_RUNTIME_EVALUATION_POOL_DEFAULTS", "false")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(71), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "jsheets-runtime: the open-files limit (RLIMIT_NOFILE, hard) is 1024, below the 1344 "
        ),
        "{err}"
    );
    assert!(text(&out.stdout).is_empty());
}
