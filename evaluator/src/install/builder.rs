//! What runs a build's commands and its verification ([`BuildRunner`]): builder
//! sandboxes ([`SandboxBuilder`]), the host filesystem read-only, only the runtime
//! being built writable, the runtimes directory hidden, network allowed (pip).
//!
//! Build steps run as a dedicated unprivileged uid that owns the tree being built for
//! the duration of the step; root-owned files are never writable from a build, and
//! uid 0 without capabilities is avoided because it can still write root-owned
//! files such as many `/proc/sys` entries.
//!
//! [`HostBuildRunner`] runs the same steps as plain child processes, for image builds
//! (`docker build`), where the build container is the isolation and no sandbox can be
//! created.

use std::future::Future;
use std::io;
use std::path::{Component as PathComponent, Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Recipe;
use crate::evaluate::{self, EvaluateError};
use crate::runtime::Runtime;
use crate::sandbox::{Event, Filesystem, Job, Limits, Sandboxes, Status};
use crate::snippet::{Component, Output};

/// How much of a failed step's output goes into the error.
const ERROR_TAIL: usize = 4000;
/// Longest a build step may run (the builder sandboxes' wall-time limit).
const STEP_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("handing {} to the build uid", path.display())]
    HandOver {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("taking {} back from the build uid", path.display())]
    TakeBack {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A command that ran and failed: how it ended, and the end of its output.
    #[error("{command} ended with {how}{}", tail(output))]
    Failed {
        command: String,
        how: String,
        output: String,
    },
    #[error("empty build command")]
    EmptyCommand,
    #[error("cannot start {program}")]
    Start {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for {program}")]
    Wait {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} did not finish in {} s", STEP_TIMEOUT.as_secs())]
    Timeout { command: String },
    #[error(transparent)]
    Evaluate(#[from] EvaluateError),
    #[error(transparent)]
    Collect(#[from] tokio::task::JoinError),
    /// The verification snippet failed or reported problems.
    #[error(
        "verification ended with {status}{}: {}",
        .error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default(),
        .problems.join("\n")
    )]
    Verification {
        status: Status,
        error: Option<String>,
        problems: Vec<String>,
    },
    #[error("evaluator {program} ({}) of runtime {runtime}", host.display())]
    Evaluator {
        program: String,
        host: PathBuf,
        runtime: String,
        #[source]
        source: io::Error,
    },
    #[error("evaluator {program} ({}) of runtime {runtime} is not an executable file", host.display())]
    NotExecutable {
        program: String,
        host: PathBuf,
        runtime: String,
    },
    #[error("{} of runtime {runtime} is not provided by any of its mounts", path.display())]
    NotProvided { path: PathBuf, runtime: String },
    #[error("{} ({})", path.display(), host.display())]
    Inspect {
        path: PathBuf,
        host: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: too many symlinks", path.display())]
    TooManyLinks { path: PathBuf },
    #[error("reading link {}", path.display())]
    ReadLink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, BuildError>;

/// Runs what a build cannot do itself. Implemented over the sandbox.
pub trait BuildRunner: Send + Sync {
    /// Runs `argv` in a builder sandbox: host filesystem visible read-only, `writable`
    /// (the runtime being built) bind-mounted read-write at the same path, the
    /// runtimes directory `hidden`, network allowed (pip needs it). Note that
    /// `writable` lies inside `hidden`: hide first, then bind.
    fn run_build_step<'a>(
        &'a self,
        argv: &'a [String],
        env: &'a [(String, String)],
        writable: &'a Path,
        hidden: &'a Path,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

    /// Runs `code` in the freshly built runtime (loaded from the staging dir) and
    /// returns its stdout.
    fn verify<'a>(
        &'a self,
        runtime: &'a Runtime,
        code: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String>> + Send + 'a>>;
}

/// A [`BuildRunner`] on real sandboxes.
#[derive(Debug)]
pub struct SandboxBuilder<'a> {
    sandboxes: &'a Sandboxes,
    uid: u32,
}

impl<'a> SandboxBuilder<'a> {
    pub fn new(sandboxes: &'a Sandboxes) -> Self {
        // Just below the evaluation uids, so it is never one of them.
        let uid = sandboxes.config().uid_base.saturating_sub(1).max(1);
        SandboxBuilder { sandboxes, uid }
    }

    async fn step(
        &self,
        argv: &[String],
        env: &[(String, String)],
        writable: &Path,
        hidden: &Path,
    ) -> Result<()> {
        chown_tree(writable, self.uid, self.uid).map_err(|source| BuildError::HandOver {
            path: writable.to_owned(),
            source,
        })?;
        let mut full_env = vec![
            (
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            ),
            ("HOME".to_string(), "/tmp".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
        ];
        full_env.extend(env.iter().cloned());
        let job = Job {
            filesystem: Filesystem::HostReadOnly {
                writable: vec![writable.to_path_buf()],
                hidden: vec![hidden.to_path_buf()],
            },
            argv: argv.to_vec(),
            env: full_env,
            cwd: writable.to_path_buf(),
            input: None,
            events: false,
            stdin: Vec::new(),
            isolate_network: false,
            limits: Limits {
                wall_time: Duration::from_secs(1800),
                cpu_time: Duration::from_secs(1800),
                memory_bytes: 4 << 30,
                max_processes: 512,
                output_bytes: 16 << 20,
                cpu_millis: 0,
                cpu_shares: 0,
                work_bytes: 64 << 20,
                tmp_bytes: 2 << 30,
                file_size_bytes: 2 << 30,
                open_files: 4096,
                stack_bytes: 8 << 20,
            },
            run_as: Some(self.uid),
            datasets: Vec::new(),
            files: Default::default(),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let collect = tokio::spawn(async move {
            let mut tail = Vec::new();
            while let Some(e) = rx.recv().await {
                if let Event::Stdout(d) | Event::Stderr(d) = e {
                    tail.extend_from_slice(&d);
                    if tail.len() > 2 * ERROR_TAIL {
                        tail.drain(..tail.len() - ERROR_TAIL);
                    }
                }
            }
            tail
        });
        let framing = crate::events::Bounds::for_job(&job).framing;
        let outcome = self
            .sandboxes
            .run(job, framing, tx, CancellationToken::new())
            .await;
        let tail = collect.await.unwrap_or_default();
        // The sandbox is gone: nothing can race this walk any more.
        chown_tree(writable, 0, 0).map_err(|source| BuildError::TakeBack {
            path: writable.to_owned(),
            source,
        })?;
        if outcome.status == Status::Ok {
            return Ok(());
        }
        let how = format!(
            "{}{}",
            outcome.status,
            outcome.error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
        Err(step_failed(argv, how, &tail))
    }

    async fn check(&self, runtime: &Runtime, code: &str) -> Result<String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let collect = tokio::spawn(async move {
            let (mut out, mut problems) = (Vec::new(), Vec::new());
            while let Some(o) = rx.recv().await {
                match o {
                    Output::Stdout { data, .. } => out.extend_from_slice(&data),
                    Output::Stderr { data, .. } => {
                        problems.push(String::from_utf8_lossy(&data).into_owned())
                    }
                    Output::Exception { traceback, .. } => problems.push(traceback),
                    Output::Diagnostic { message, .. }
                    | Output::Internal { message, .. }
                    | Output::Violation { message, .. } => problems.push(message),
                    Output::Value { .. } | Output::Started { .. } => {}
                }
            }
            (out, problems)
        });
        let components = [Component {
            id: "verify".into(),
            code: code.into(),
        }];
        let outcome = evaluate::evaluate(
            self.sandboxes,
            &runtime.launch(),
            &components,
            Vec::new(),
            Limits {
                wall_time: Duration::from_secs(120),
                cpu_time: Duration::from_secs(120),
                memory_bytes: 1 << 30,
                ..Limits::default()
            },
            tx,
            CancellationToken::new(),
        )
        .await?;
        let (out, problems) = collect.await?;
        if outcome.status != Status::Ok || !problems.is_empty() {
            return Err(BuildError::Verification {
                status: outcome.status,
                error: outcome.error,
                problems,
            });
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl BuildRunner for SandboxBuilder<'_> {
    fn run_build_step<'a>(
        &'a self,
        argv: &'a [String],
        env: &'a [(String, String)],
        writable: &'a Path,
        hidden: &'a Path,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.step(argv, env, writable, hidden))
    }

    fn verify<'a>(
        &'a self,
        runtime: &'a Runtime,
        code: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String>> + Send + 'a>> {
        Box::pin(self.check(runtime, code))
    }
}

/// A [`BuildRunner`] without sandboxes, **only for building container images**: the
/// build container (`docker build`) is the isolation, and it cannot give the
/// namespaces, mounts and cgroups a builder sandbox needs. Never use it on a host that
/// serves untrusted code: build steps (pip, javac, a JVM training run) then run as
/// plain processes of the caller, with its privileges, its view of the filesystem
/// (the runtimes directory is not hidden) and its network.
///
/// Each step runs as a child process with the environment cleared and then set to the
/// step's own, in the directory being built, with stdin closed and stdout and stderr
/// captured; a failure reports how the step ended and the tail of its output.
///
/// [`verify`](BuildRunner::verify) cannot run the recipe's snippet without a sandbox.
/// It checks that the runtime's evaluator program exists in the staging tree (a
/// regular, executable file, symlinks followed inside the runtime, as the sandbox
/// would) and then answers with the output the recipe expects. The real verification
/// happens where sandboxes exist: run `jsheets-runtime runtime test NAME` when the
/// container starts (`deploy/entrypoint.sh` does with
/// `JSHEETS_RUNTIME_TEST_RUNTIMES_AT_START=1`).
#[derive(Debug, Clone)]
pub struct HostBuildRunner {
    expect_stdout: String,
}

impl HostBuildRunner {
    /// A runner for `recipe`, whose `verify.expect_stdout` stands in for the output of
    /// the verification snippet.
    pub fn for_recipe(recipe: &Recipe) -> Self {
        HostBuildRunner::expecting(recipe.verify.expect_stdout.clone())
    }

    /// A runner whose verification answers `expect_stdout` once the evaluator exists.
    pub fn expecting(expect_stdout: impl Into<String>) -> Self {
        HostBuildRunner {
            expect_stdout: expect_stdout.into(),
        }
    }

    async fn step(&self, argv: &[String], env: &[(String, String)], writable: &Path) -> Result<()> {
        let (program, args) = argv.split_first().ok_or(BuildError::EmptyCommand)?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(writable)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A cancelled install (dropped future) takes its step with it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BuildError::Start {
                program: program.clone(),
                source,
            })?;
        let output = match tokio::time::timeout(STEP_TIMEOUT, child.wait_with_output()).await {
            Ok(result) => result.map_err(|source| BuildError::Wait {
                program: program.clone(),
                source,
            })?,
            Err(_) => {
                return Err(BuildError::Timeout {
                    command: argv.join(" "),
                })
            }
        };
        if output.status.success() {
            return Ok(());
        }
        let mut all = output.stdout;
        all.extend_from_slice(&output.stderr);
        Err(step_failed(argv, output.status.to_string(), &all))
    }

    fn check(&self, runtime: &Runtime) -> Result<String> {
        let program = &runtime.evaluator().program;
        let host = resolve_in_runtime(runtime, Path::new(program))?;
        let meta = match std::fs::metadata(&host) {
            Ok(meta) => meta,
            Err(source) => {
                return Err(BuildError::Evaluator {
                    program: program.clone(),
                    host,
                    runtime: runtime.name().to_owned(),
                    source,
                })
            }
        };
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(BuildError::NotExecutable {
                program: program.clone(),
                host,
                runtime: runtime.name().to_owned(),
            });
        }
        Ok(self.expect_stdout.clone())
    }
}

impl BuildRunner for HostBuildRunner {
    fn run_build_step<'a>(
        &'a self,
        argv: &'a [String],
        env: &'a [(String, String)],
        writable: &'a Path,
        _hidden: &'a Path,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.step(argv, env, writable))
    }

    fn verify<'a>(
        &'a self,
        runtime: &'a Runtime,
        _code: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String>> + Send + 'a>> {
        let result = self.check(runtime);
        Box::pin(async move { result })
    }
}

/// The host path of sandbox path `path` in `runtime`, following symlinks the way the
/// sandbox would see them: absolute targets inside the runtime's mounts, never on the
/// host.
fn resolve_in_runtime(runtime: &Runtime, path: &Path) -> Result<PathBuf> {
    let mounts = runtime.mount_pairs();
    let to_host = |sandbox: &Path| -> Option<PathBuf> {
        let (source, target) = mounts
            .iter()
            .filter(|(_, target)| sandbox.starts_with(target))
            .max_by_key(|(_, target)| target.components().count())?;
        let rest = sandbox.strip_prefix(target).ok()?;
        Some(if rest.as_os_str().is_empty() {
            source.clone()
        } else {
            source.join(rest)
        })
    };
    let not_provided = |p: &Path| BuildError::NotProvided {
        path: p.to_owned(),
        runtime: runtime.name().to_owned(),
    };
    // Names still to resolve, the next one last; `resolved` is a sandbox path.
    let mut pending = reversed_names(path);
    let mut resolved = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let host = to_host(&candidate).ok_or_else(|| not_provided(&candidate))?;
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(meta) => meta,
            Err(source) => {
                return Err(BuildError::Inspect {
                    path: candidate,
                    host,
                    source,
                })
            }
        };
        if !meta.file_type().is_symlink() {
            resolved = candidate;
            continue;
        }
        links += 1;
        if links > 40 {
            return Err(BuildError::TooManyLinks {
                path: path.to_owned(),
            });
        }
        let target = std::fs::read_link(&host).map_err(|source| BuildError::ReadLink {
            path: host.clone(),
            source,
        })?;
        if target.is_absolute() {
            resolved = PathBuf::from("/");
        }
        pending.extend(reversed_names(&target));
    }
    to_host(&resolved).ok_or_else(|| not_provided(&resolved))
}

/// The names and `..` of `path`, last first (`.` and the root dropped).
fn reversed_names(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .rev()
        .filter_map(|c| match c {
            PathComponent::Normal(n) => Some(n.to_owned()),
            PathComponent::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// A failed build step: the command, how it ended, and the end of its output.
fn step_failed(argv: &[String], how: String, output: &[u8]) -> BuildError {
    BuildError::Failed {
        command: argv.join(" "),
        how,
        output: String::from_utf8_lossy(&output[output.len().saturating_sub(ERROR_TAIL)..])
            .into_owned(),
    }
}

/// The end of a failed step's output as its error shows it.
fn tail(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(":\n{output}")
    }
}

/// Changes the owner of every entry under `root`, never following symlinks.
fn chown_tree(root: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    std::os::unix::fs::lchown(root, Some(uid), Some(gid))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(root)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::config::tests::{good_yml, make_runtime};
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[tokio::test]
    async fn host_step_runs_in_the_writable_dir_with_only_the_given_env() {
        let tmp = tempfile::tempdir().unwrap();
        let runner = HostBuildRunner::expecting("2\n");
        let env = vec![
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("GREETING".to_owned(), "hello".to_owned()),
        ];
        // HOME is set in any test environment; it must not reach the step.
        let script = r#"test -z "${HOME:-}" && echo "$GREETING" > out && env > env.txt"#;
        runner
            .run_build_step(
                &argv(&["/bin/sh", "-c", script]),
                &env,
                tmp.path(),
                Path::new("/nonexistent-hidden"),
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("out")).unwrap(),
            "hello\n"
        );
        let seen = std::fs::read_to_string(tmp.path().join("env.txt")).unwrap();
        let mut names: Vec<&str> = seen
            .lines()
            .filter_map(|l| l.split('=').next())
            .filter(|n| *n != "PWD" && *n != "SHLVL" && *n != "_")
            .collect();
        names.sort();
        assert_eq!(names, ["GREETING", "PATH"], "{seen}");
    }

    #[tokio::test]
    async fn host_step_failure_names_the_command_status_and_output_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let runner = HostBuildRunner::expecting("2\n");
        let script = "echo building; echo 'no such package: nonsense' >&2; exit 3";
        let err = runner
            .run_build_step(
                &argv(&["/bin/sh", "-c", script]),
                &[],
                tmp.path(),
                tmp.path(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/bin/sh -c echo building;"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("building\n"), "{err}");
        assert!(err.contains("no such package: nonsense"), "{err}");

        let err = runner
            .run_build_step(&argv(&["/nonexistent/pip"]), &[], tmp.path(), tmp.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot start /nonexistent/pip"), "{err}");

        // Only the tail of a long output is kept.
        let err = runner
            .run_build_step(
                &argv(&[
                    "/bin/sh",
                    "-c",
                    "yes chatty | head -n 100000; echo LAST; false",
                ]),
                &[("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
                tmp.path(),
                tmp.path(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(err.len() < ERROR_TAIL + 200, "{}", err.len());
        assert!(err.ends_with("LAST\n"), "{err}");
    }

    #[tokio::test]
    async fn host_verify_checks_the_evaluator_inside_the_runtime() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = make_runtime(tmp.path(), "rt", &good_yml("rt", "shell", "1.0.0"));
        let tool = dir.join("isolated/usr/bin/tool");
        let runner = HostBuildRunner::expecting("2\n");

        // Not executable yet.
        let (rt, _) = Runtime::load(&dir).unwrap();
        let err = runner.verify(&rt, "echo 2").await.unwrap_err().to_string();
        assert!(err.contains("is not an executable file"), "{err}");

        // An absolute symlink resolves inside the runtime, as in the sandbox, not on
        // the host (where /usr/lib/real-tool does not exist).
        std::fs::create_dir_all(dir.join("isolated/usr/lib")).unwrap();
        let real = dir.join("isolated/usr/lib/real-tool");
        std::fs::write(&real, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_file(&tool).unwrap();
        symlink("/usr/lib/../lib/real-tool", &tool).unwrap();
        let (rt, _) = Runtime::load(&dir).unwrap();
        assert_eq!(runner.verify(&rt, "echo 2").await.unwrap(), "2\n");

        // A link leaving the runtime's mounts is not followed on the host.
        std::fs::remove_file(&tool).unwrap();
        symlink("/bin/sh", &tool).unwrap();
        let (rt, _) = Runtime::load(&dir).unwrap();
        let err = runner.verify(&rt, "echo 2").await.unwrap_err().to_string();
        assert!(err.contains("not provided by any of its mounts"), "{err}");
    }
}
