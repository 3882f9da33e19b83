//! Runs runtime builds in builder sandboxes: the host filesystem read-only, only the
//! runtime being built writable, the runtimes directory hidden, network allowed (pip).
//!
//! Build steps run as a dedicated unprivileged uid that owns the tree being built for
//! the duration of the step; root-owned files are never writable from a build, and
//! uid 0 without capabilities is avoided because it can still write root-owned
//! files such as many `/proc/sys` entries.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::evaluate::{self, Component, Output};
use crate::runtime::{BuildRunner, Runtime};
use crate::sandbox::{Event, Filesystem, Job, Limits, Sandboxes, Status};

/// How much of a failed step's output goes into the error.
const ERROR_TAIL: usize = 4000;

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
    ) -> Result<(), String> {
        chown_tree(writable, self.uid, self.uid)
            .map_err(|e| format!("handing {} to the build uid: {e}", writable.display()))?;
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
                work_bytes: 64 << 20,
                tmp_bytes: 2 << 30,
                file_size_bytes: 2 << 30,
                open_files: 4096,
                stack_bytes: 8 << 20,
            },
            run_as: Some(self.uid),
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
        let outcome = self.sandboxes.run(job, tx, CancellationToken::new()).await;
        let tail = collect.await.unwrap_or_default();
        // The sandbox is gone: nothing can race this walk any more.
        chown_tree(writable, 0, 0)
            .map_err(|e| format!("taking {} back from the build uid: {e}", writable.display()))?;
        if outcome.status == Status::Ok {
            return Ok(());
        }
        let tail =
            String::from_utf8_lossy(&tail[tail.len().saturating_sub(ERROR_TAIL)..]).into_owned();
        Err(format!(
            "{} ended with {}{}{}",
            argv.join(" "),
            outcome.status,
            outcome.error.map(|e| format!(" ({e})")).unwrap_or_default(),
            if tail.is_empty() {
                String::new()
            } else {
                format!(":\n{tail}")
            }
        ))
    }

    async fn check(&self, runtime: &Runtime, code: &str) -> Result<String, String> {
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
        .await
        .map_err(|e| e.to_string())?;
        let (out, problems) = collect.await.map_err(|e| e.to_string())?;
        if outcome.status != Status::Ok || !problems.is_empty() {
            return Err(format!(
                "verification ended with {}{}: {}",
                outcome.status,
                outcome.error.map(|e| format!(" ({e})")).unwrap_or_default(),
                problems.join("\n")
            ));
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
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(self.step(argv, env, writable, hidden))
    }

    fn verify<'a>(
        &'a self,
        runtime: &'a Runtime,
        code: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(self.check(runtime, code))
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
