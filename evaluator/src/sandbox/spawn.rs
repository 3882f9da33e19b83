//! Before a sandbox runs: a job checked on the host and turned into the helper's plan,
//! and a helper spawned into a fresh cgroup of its own, told where it is.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::plan::{self, BindPlan, Plan, RootPlan};
use super::{cgroup, control, helper, limits, Filesystem, Inner, Job, SetupError};
use crate::sys;

/// Why a job cannot run, found on the host before anything is spawned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("argv is empty")]
    EmptyArgv,
    #[error("program {0:?} is not an absolute path")]
    RelativeProgram(String),
    #[error("argv or environment contains a NUL byte")]
    Nul,
    #[error("environment variable names must be non-empty and contain no '='")]
    EnvName,
    #[error("sandbox path {} is not absolute and normalized", .0.display())]
    Target(PathBuf),
    #[error("mount source {} does not exist", .0.display())]
    MountSource(PathBuf),
    #[error("dataset name {0:?} is not one plain path component")]
    DatasetName(String),
    #[error("datasets and files need a sandbox of a runtime's files")]
    FilesOnHost,
}

/// Numbers sandbox cgroups (`sb-<pid>-<n>`) for the whole process: two `Sandboxes`
/// in one process (a test, a service and its builder) must never name the same cgroup.
static CGROUP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A spawned helper that has not received its plan yet.
#[derive(Debug)]
pub(super) struct Prepared {
    /// Dropped first (fields drop in order): the cgroup kills everything but the
    /// helper, which reaps init, and only then the helper (see
    /// [`cgroup::SandboxCgroup::destroy`]); the child's kill-on-drop comes after.
    pub cg: cgroup::SandboxCgroup,
    pub child: HelperProcess,
    pub control: OwnedFd,
    pub events: OwnedFd,
    /// Write end of the pipe a deferred input goes into.
    pub input: OwnedFd,
}

impl Prepared {
    /// Whether the helper is still there; if not, it has been reaped by now.
    pub fn is_alive(&mut self) -> bool {
        let alive = self.child.is_alive();
        if !alive {
            self.cg.helper_reaped();
        }
        alive
    }

    /// Whether a helper spawned ahead is still waiting for its plan: alive, and silent
    /// (a waiting helper says nothing before its plan; one that said something, a
    /// failed step, or whose end of the socket closed, is on its way out).
    pub fn is_waiting(&mut self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        if !self.is_alive() {
            return false;
        }
        let mut fds = [PollFd::new(self.control.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }

    /// Kills the sandbox, removes its cgroup and waits until that is done, off the
    /// async workers; then hands `then` back.
    pub async fn destroyed<T>(self, then: T) -> T {
        let Prepared { cg, child, .. } = self;
        let _ = tokio::task::spawn_blocking(move || cg.teardown()).await;
        // The helper's kill-on-drop after the cgroup, as when dropped.
        drop(child);
        then
    }
}

impl Inner {
    /// Spawns a helper into a fresh cgroup of its own. The helper only waits for its
    /// plan; it is in the cgroup before it reads it, so every process it makes is
    /// counted and limited from the first instruction.
    pub(super) fn prepare(&self, early_unshare: bool) -> Result<Prepared, SetupError> {
        self.prepare_with(early_unshare, None)
    }

    /// [`Inner::prepare`], with `stdin` as the helper's stdin instead of a pipe (a
    /// zygote's request socket).
    pub(super) fn prepare_with(
        &self,
        early_unshare: bool,
        stdin: Option<OwnedFd>,
    ) -> Result<Prepared, SetupError> {
        let (id, cg) = self.new_cgroup()?;
        let (child, control, events, input) = self
            .spawn_helper(early_unshare, stdin)
            .map_err(SetupError::SpawnHelper)?;
        let pid = child.id().ok_or(SetupError::HelperGone)?;
        self.place(
            Prepared {
                cg,
                child: HelperProcess::Spawned(child),
                control,
                events,
                input,
            },
            &id,
            pid,
        )
    }

    /// A fresh empty cgroup of its own for a sandbox, and its name.
    pub(super) fn new_cgroup(&self) -> Result<(String, cgroup::SandboxCgroup), SetupError> {
        let seq = CGROUP_SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("sb-{}-{seq}", std::process::id());
        let cg = self
            .cgroups
            .create(&id, &cgroup::CgroupLimits::default())
            .map_err(SetupError::CreateCgroup)?;
        Ok((id, cg))
    }

    /// Moves helper `pid` into the cgroup `id` of `prepared` and tells it so. Only now
    /// may the helper create its cgroup namespace: it waits for this, and checks that
    /// /proc/self/cgroup says the same.
    pub(super) fn place(
        &self,
        mut prepared: Prepared,
        id: &str,
        pid: u32,
    ) -> Result<Prepared, SetupError> {
        prepared.cg.add(pid).map_err(SetupError::PlaceHelper)?;
        let placement = plan::Placement {
            cgroups: self.cgroups.placement(id),
        };
        control::send(&prepared.control, &placement).map_err(SetupError::TellPlacement)?;
        Ok(prepared)
    }

    /// The helper process, with the control socket, the event pipe and the input pipe
    /// on its fixed fds; returns the child and the supervisor's ends of those three.
    fn spawn_helper(
        &self,
        early_unshare: bool,
        stdin: Option<OwnedFd>,
    ) -> std::io::Result<(tokio::process::Child, OwnedFd, OwnedFd, OwnedFd)> {
        let (parent_sock, child_sock) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let (ev_read, ev_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let (in_read, in_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let child_sock = sys::dup_high(&child_sock)?;
        let ev_write = sys::dup_high(&ev_write)?;
        let in_read = sys::dup_high(&in_read)?;
        let mut cmd = tokio::process::Command::new(&self.config.helper);
        // Not the host path of the binary: the sandbox's init is a fork of the
        // helper, and its /proc/1/cmdline can be read from inside.
        cmd.arg0("jsheets-sandbox");
        cmd.args(&self.config.helper_args);
        if early_unshare {
            cmd.arg(helper::EARLY_UNSHARE_ARG);
        }
        cmd.env_clear()
            .stdin(stdin.map_or_else(Stdio::piped, Stdio::from))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        sys::map_fds_on_spawn(
            &mut cmd,
            [
                (child_sock.as_raw_fd(), plan::HELPER_CONTROL_FD),
                (ev_write.as_raw_fd(), plan::HELPER_EVENTS_FD),
                (in_read.as_raw_fd(), plan::HELPER_INPUT_FD),
            ],
        );
        let child = cmd.spawn()?;
        // Our copies of the child's ends go now, so EOF means the sandbox is done.
        drop((child_sock, ev_write, in_read));
        Ok((child, parent_sock, ev_read, in_write))
    }

    /// Validates the job on the host and turns it into the helper's plan.
    pub(super) fn plan(&self, job: &Job, uid: u32) -> Result<Plan, PlanError> {
        plan_for(job, uid, &self.root_dir)
    }
}

/// The helper's process: spawned by us, or forked by a zygote (not our child: the
/// zygote reaps it; we watch it through a pidfd). Either is killed when dropped.
#[derive(Debug)]
pub(super) enum HelperProcess {
    Spawned(tokio::process::Child),
    Forked(Forked),
}

/// A helper forked by a zygote, and our ends of its stdio pipes.
#[derive(Debug)]
pub(super) struct Forked {
    pub pidfd: OwnedFd,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Kept until the helper is gone: it is in the zygote's pid namespace.
    pub _zygote: std::sync::Arc<super::zygote::Zygote>,
}

impl Drop for Forked {
    fn drop(&mut self) {
        let _ = sys::pidfd_kill(&self.pidfd);
    }
}

impl HelperProcess {
    fn is_alive(&mut self) -> bool {
        match self {
            HelperProcess::Spawned(c) => matches!(c.try_wait(), Ok(None)),
            HelperProcess::Forked(f) => !sys::pidfd_exited(&f.pidfd),
        }
    }

    /// Our end of its stdin, once.
    pub fn take_stdin(&mut self) -> Option<tokio::net::unix::pipe::Sender> {
        let fd = match self {
            HelperProcess::Spawned(c) => c.stdin.take()?.into_owned_fd().ok()?,
            HelperProcess::Forked(f) => f.stdin.take()?,
        };
        tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok()
    }

    /// Our ends of its stdout and stderr, once.
    pub fn take_output(
        &mut self,
    ) -> (
        Option<tokio::net::unix::pipe::Receiver>,
        Option<tokio::net::unix::pipe::Receiver>,
    ) {
        let (out, err) = match self {
            HelperProcess::Spawned(c) => (
                c.stdout.take().and_then(|o| o.into_owned_fd().ok()),
                c.stderr.take().and_then(|e| e.into_owned_fd().ok()),
            ),
            HelperProcess::Forked(f) => (f.stdout.take(), f.stderr.take()),
        };
        let receiver = |fd: Option<OwnedFd>| {
            fd.and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok())
        };
        (receiver(out), receiver(err))
    }

    /// Returns once it has exited (and, if it is ours, been reaped).
    pub async fn wait(&mut self) {
        match self {
            HelperProcess::Spawned(c) => {
                let _ = c.wait().await;
            }
            HelperProcess::Forked(f) => {
                // A pidfd turns readable when its process exits.
                if sys::pidfd_exit(&f.pidfd).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// [`Inner::plan`], with the root mount point `root_dir`.
fn plan_for(job: &Job, uid: u32, root_dir: &Path) -> Result<Plan, PlanError> {
    let program = job.argv.first().ok_or(PlanError::EmptyArgv)?;
    if !program.starts_with('/') {
        return Err(PlanError::RelativeProgram(program.clone()));
    }
    if job
        .argv
        .iter()
        .chain(job.env.iter().flat_map(|(k, v)| [k, v]))
        .any(|s| s.contains('\0'))
    {
        return Err(PlanError::Nul);
    }
    if job.env.iter().any(|(k, _)| k.is_empty() || k.contains('=')) {
        return Err(PlanError::EnvName);
    }
    check_target(&job.cwd)?;
    let (root, writable_binds, hidden) = match &job.filesystem {
        Filesystem::Runtime(mounts) => {
            let mut binds = Vec::new();
            for (source, target) in mounts {
                check_target(target)?;
                if !source.is_absolute() || !source.exists() {
                    return Err(PlanError::MountSource(source.clone()));
                }
                binds.push(BindPlan {
                    source: source.clone(),
                    target: target.clone(),
                });
            }
            (RootPlan::Runtime { mounts: binds }, vec![], vec![])
        }
        Filesystem::HostReadOnly { writable, hidden } => {
            for p in writable.iter().chain(hidden) {
                check_target(p)?;
            }
            (RootPlan::HostReadOnly, writable.clone(), hidden.clone())
        }
    };
    let mut datasets = Vec::new();
    for (source, name) in &job.datasets {
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains(['/', '\0'])
            && name.len() <= 255;
        if !plain {
            return Err(PlanError::DatasetName(name.clone()));
        }
        if !source.is_absolute() || !source.is_dir() {
            return Err(PlanError::MountSource(source.clone()));
        }
        datasets.push(BindPlan {
            source: source.clone(),
            target: Path::new("/data").join(name),
        });
    }
    let on_host = matches!(job.filesystem, Filesystem::HostReadOnly { .. });
    if on_host && (!datasets.is_empty() || job.files != Default::default()) {
        return Err(PlanError::FilesOnHost);
    }
    let l = &job.limits;
    Ok(Plan {
        root_dir: root_dir.to_path_buf(),
        root,
        writable_binds,
        hidden,
        isolate_network: job.isolate_network,
        hostname: "sandbox".into(),
        uid,
        gid: uid,
        work_bytes: l.work_bytes,
        tmp_bytes: l.tmp_bytes,
        shm_bytes: l.tmp_bytes.min(64 << 20),
        argv: job.argv.clone(),
        env: job.env.clone(),
        cwd: job.cwd.clone(),
        rlimits: limits::rlimits(job),
        input_len: job.input.as_ref().map(|i| i.len() as u64),
        deferred_input: false,
        has_events: job.events,
        payload: plan::Payload::Exec,
        datasets,
        await_files: !job.files.put.is_empty(),
        lane: false,
    })
}

/// Sandbox paths must be absolute and normalized: no `.`, `..` or empty components.
fn check_target(path: &Path) -> Result<(), PlanError> {
    let ok = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path
            .as_os_str()
            .as_encoded_bytes()
            .windows(2)
            .any(|w| w == b"//");
    if ok {
        Ok(())
    } else {
        Err(PlanError::Target(path.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(argv: &[&str]) -> Job {
        Job::new(vec![], argv.iter().map(|s| s.to_string()).collect())
    }

    fn plan(job: &Job) -> Result<Plan, PlanError> {
        plan_for(job, 1234, Path::new("/run/x/root"))
    }

    #[test]
    fn only_normalized_absolute_paths_are_sandbox_paths() {
        for ok in ["/", "/work", "/usr/lib/python3"] {
            assert_eq!(check_target(Path::new(ok)), Ok(()), "{ok}");
        }
        for bad in ["work", "/work/../etc", "//work", "/a//b", ""] {
            assert_eq!(
                check_target(Path::new(bad)),
                Err(PlanError::Target(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_job_is_checked_before_it_becomes_a_plan() {
        assert_eq!(plan(&job(&[])).unwrap_err(), PlanError::EmptyArgv);
        assert_eq!(
            plan(&job(&["true"])).unwrap_err(),
            PlanError::RelativeProgram("true".into())
        );
        assert_eq!(plan(&job(&["/bin/x", "a\0b"])).unwrap_err(), PlanError::Nul);
        let mut bad_env = job(&["/bin/x"]);
        bad_env.env.push(("A=B".into(), "c".into()));
        assert_eq!(plan(&bad_env).unwrap_err(), PlanError::EnvName);
        let mut bad_cwd = job(&["/bin/x"]);
        bad_cwd.cwd = "/work/../etc".into();
        assert!(plan(&bad_cwd)
            .unwrap_err()
            .to_string()
            .contains("not absolute and normalized"));
        let missing = Job::new(
            vec![("/no/such/dir/anywhere".into(), "/usr".into())],
            vec!["/bin/x".into()],
        );
        assert_eq!(
            plan(&missing).unwrap_err(),
            PlanError::MountSource("/no/such/dir/anywhere".into())
        );
    }

    #[test]
    fn a_plan_carries_the_job() {
        let mut j = job(&["/bin/x", "-c"]);
        j.input = Some(b"print(1)".to_vec());
        j.events = true;
        let p = plan(&j).unwrap();
        assert_eq!((p.uid, p.gid), (1234, 1234));
        assert_eq!(p.argv, ["/bin/x", "-c"]);
        assert_eq!(p.input_len, Some(8));
        assert!(p.has_events && p.isolate_network && !p.deferred_input);
        assert_eq!(p.rlimits, limits::rlimits(&j));
    }
}
