//! Zygotes: a warm interpreter that forks a fresh sandbox per request.
//!
//! Starting an interpreter is most of what a sandbox costs (Python: two thirds of the
//! CPU of an evaluation). A zygote is a sandbox whose payload is the interpreter with
//! its driver loaded and the access list's hooks installed, which never runs snippet
//! code: it runs as root with its capabilities and no seccomp filter, in its own mount,
//! pid, network, ipc and uts namespaces, with the same runtime files mounted where a
//! sandbox has them, and the zygote library (`zygote-lib`, the sandbox helper as a
//! shared object) at [`LIBRARY`].
//!
//! For each sandbox the supervisor makes the helper's fds as for a spawned helper and
//! sends them to the zygote (`fork`, over the seqpacket socket on its fd 0). The zygote
//! forks; the child puts them on the helper's numbers and calls the library, which is
//! the helper: it tells the supervisor its pid (SCM_CREDENTIALS: the kernel translates
//! it), is moved into a fresh cgroup, creates fresh namespaces, builds the root from the
//! zygote's view of the runtime files, forks init, and the payload drops to a uid of
//! its own with no capabilities, every rlimit and the seccomp filter, exactly as for an
//! exec'd payload, then returns into the interpreter, which waits for its request as a
//! pre-started sandbox does. Nothing runs between the fork and the payload's drop of
//! privileges but the driver's own code and the helper's.
//!
//! What forking shares, and why it is acceptable: the child's memory is a copy of the
//! zygote's (copy-on-write), so every child of one zygote has the same address-space
//! layout and the same interpreter state up to the fork. The state is the driver's,
//! loaded from the runtime's files, and holds nothing of any request; Python's hash
//! seed is fixed by the runtime anyway (`PYTHONHASHSEED`), and the `random` module
//! reseeds in every child (`os.register_at_fork`). The shared layout weakens ASLR only
//! between children of one zygote, and a child cannot reach another (other pid, mount
//! and network namespaces, uids and cgroups) nor the zygote, which reads only what the
//! supervisor sends; zygotes are also replaced after [`MAX_FORKS`] forks.
//!
//! A zygote's children are in its pid namespace until they make their own, so the
//! zygote sandbox must outlive them: each child holds the zygote (an `Arc`), and the
//! zygote is destroyed when the last of them and its pool let go of it.
//!
//! Lanes: the runs of one many-input request ([`Sandboxes::start_lane`]). A lane is a
//! sandbox forked from a zygote for that request alone, whose init builds the root,
//! sets the hostname and brings loopback up as any, then keeps its privileges and runs
//! nothing: it is a zygote of light sandboxes (`Plan::lane`). For each run the
//! supervisor sends it what it sends a zygote; the lane's init forks the run as PID 1
//! of new pid, mount, ipc and network namespaces on the lane's root, with fresh
//! `/work`, `/tmp`, `/dev/shm` and `/proc` mounted over the lane's and loopback up,
//! and from there on the run is a forked sandbox like any: its own cgroup (with the
//! request's limits) and uid, placed and checked, its own cgroup namespace, init,
//! payload, seccomp filter and rlimits, supervised as one. What the runs of a lane
//! share is what none of them can change: the lane's root (read-only), its uts
//! namespace (the hostname) and the zygote's warm interpreter. The lane forks one run
//! at a time and reaps it (and so everything in its pid namespace) before the next.
//! Not built per run: the root and its overlays.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use tokio_util::sync::CancellationToken;

use super::plan::{Payload, Plan, RootPlan};
use super::spawn::{Forked, HelperProcess, Prepared};
use super::{warm, Filesystem, Inner, Job, Sandboxes, SetupError, WaitError, Waiting};
use crate::sys;

/// Where the zygote library is in a zygote's root.
pub const LIBRARY: &str = "/zygote/libjsheets_zygote.so";
/// A zygote forks at most this many sandboxes, then is replaced (a fresh layout): about
/// once a minute at full load on two CPUs; a replacement holds forks up for one
/// interpreter start.
pub const MAX_FORKS: u64 = 10_000;
/// The memory limit of a lane's own cgroup (its init, and what a run costs it while
/// it is forked: page tables, namespaces), counted in a many-input request's
/// admission per lane.
pub const LANE_MEMORY: u64 = 128 << 20;
/// How long a fork may take to say which pid it is.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

/// A zygote sandbox, ready to fork.
#[derive(Debug)]
pub struct Zygote {
    /// The zygote's own sandbox; destroyed when the zygote is dropped.
    sandbox: Mutex<Waiting>,
    /// Our end of its request socket.
    requests: OwnedFd,
    /// The children's job (the runtime's files as mounted on the host).
    job: Job,
    forks: AtomicU64,
}

impl Zygote {
    /// Whether it can still fork: alive, and not used up.
    pub fn usable(&self) -> bool {
        self.forks.load(Ordering::Relaxed) < MAX_FORKS
            && self
                .sandbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_alive()
    }

    /// Destroys its sandbox and returns once it is gone (dropping it does the same in
    /// the background).
    pub async fn destroy(self) {
        self.sandbox
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .destroy()
            .await
    }

    /// Sandboxes forked so far.
    pub fn forks(&self) -> u64 {
        self.forks.load(Ordering::Relaxed)
    }
}

impl Sandboxes {
    /// Starts a zygote for `job` (a Python driver's job, see `lang::zygote_job`):
    /// `preface` is its driver's input, which makes the driver a zygote. Returns once
    /// it is ready to fork. Needs [`super::SandboxConfig::zygote_library`].
    pub async fn start_zygote(
        &self,
        job: Job,
        preface: Vec<u8>,
        cancel: &CancellationToken,
    ) -> Result<Arc<Zygote>, WaitError> {
        let library = self
            .inner
            .config
            .zygote_library
            .clone()
            .ok_or(WaitError::NoZygoteLibrary)?;
        if job.input.is_some() {
            return Err(WaitError::InputGiven);
        }
        let mut own = job.clone();
        let Filesystem::Runtime(mounts) = &mut own.filesystem else {
            return Err(WaitError::ZygoteOnHostFiles);
        };
        mounts.push((library, PathBuf::from(LIBRARY)));
        // Root in its sandbox; every child drops to a uid of its own.
        own.run_as = Some(0);
        let inner = self.inner.clone();
        let mut plan = inner.plan(&own, 0).map_err(SetupError::from)?;
        plan.payload = Payload::Zygote;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| SetupError::Watch(e.into()))?;
        let prepared = tokio::task::spawn_blocking(move || inner.prepare_with(true, Some(theirs)))
            .await
            .map_err(WaitError::Task)??;
        let sandbox = warm(prepared, None, plan, own, preface, cancel).await?;
        Ok(Arc::new(Zygote {
            sandbox: Mutex::new(sandbox),
            requests: ours,
            job,
            forks: AtomicU64::new(0),
        }))
    }

    /// A lane for `zygote`'s job, forked from it: a sandbox of a request's own whose
    /// init forks a light sandbox per [`Sandboxes::start_forked`] on it, one at a time
    /// (see the module). Use it for one request only, one sandbox after another.
    pub async fn start_lane(
        &self,
        zygote: &Arc<Zygote>,
        cancel: &CancellationToken,
    ) -> Result<Arc<Zygote>, WaitError> {
        let inner = self.inner.clone();
        let job = zygote.job.clone();
        let (uid, lease) = inner.uid_for(&job).map_err(SetupError::from)?;
        let plan = forked_plan(&inner, &job, uid)?;
        let plan = Plan { lane: true, ..plan };
        // The lane's own limits; its runs get the zygote's job, then the request's.
        let mut own = job.clone();
        own.limits.memory_bytes = own.limits.memory_bytes.min(LANE_MEMORY);
        let z = zygote.clone();
        let prepared = tokio::task::spawn_blocking(move || inner.fork_from(&z))
            .await
            .map_err(WaitError::Task)??;
        let requests = prepared.control.try_clone().map_err(SetupError::Fork)?;
        let sandbox = warm(prepared, lease, plan, own, Vec::new(), cancel).await?;
        Ok(Arc::new(Zygote {
            sandbox: Mutex::new(sandbox),
            requests,
            job,
            forks: AtomicU64::new(0),
        }))
    }

    /// A sandbox for `zygote`'s job forked from it, warm and waiting for its request
    /// like one from [`Sandboxes::start_waiting`] (the job's limits hold while it
    /// waits). When `cancel` fires meanwhile, it is destroyed before this returns.
    pub async fn start_forked(
        &self,
        zygote: &Arc<Zygote>,
        cancel: &CancellationToken,
    ) -> Result<Waiting, WaitError> {
        let inner = self.inner.clone();
        let job = zygote.job.clone();
        let (uid, lease) = inner.uid_for(&job).map_err(SetupError::from)?;
        let plan = forked_plan(&inner, &job, uid)?;
        let z = zygote.clone();
        let prepared = tokio::task::spawn_blocking(move || inner.fork_from(&z))
            .await
            .map_err(WaitError::Task)??;
        warm(prepared, lease, plan, job, Vec::new(), cancel).await
    }
}

/// The plan of a sandbox forked from a zygote: its payload returns into the zygote's
/// interpreter, its root is built from the zygote's view (the runtime's files where
/// the zygote's sandbox has them, the new root on its /work, an empty mount point
/// there). A lane's sandboxes take the lane's root instead.
fn forked_plan(inner: &Inner, job: &Job, uid: u32) -> Result<Plan, SetupError> {
    let mut plan = inner.plan(job, uid)?;
    plan.payload = Payload::Return;
    if let RootPlan::Runtime { mounts } = &mut plan.root {
        for m in mounts.iter_mut() {
            m.source = m.target.clone();
        }
    }
    plan.root_dir = PathBuf::from("/work");
    Ok(plan)
}

impl Inner {
    /// A helper forked by `zygote`, in a fresh cgroup of its own, told where it is.
    fn fork_from(&self, zygote: &Arc<Zygote>) -> Result<Prepared, SetupError> {
        let fail = |e: nix::Error| SetupError::Fork(e.into());
        let (id, mut cg) = self.new_cgroup()?;
        let (control, child_control) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(fail)?;
        // The child's pid comes as credentials, which only a socket asking for them gets.
        setsockopt(&control, sockopt::PassCred, &true).map_err(fail)?;
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(fail);
        let (events, events_w) = pipe()?;
        let (input_r, input) = pipe()?;
        let (stdin_r, stdin) = pipe()?;
        let (stdout, stdout_w) = pipe()?;
        let (stderr, stderr_w) = pipe()?;
        let theirs = [
            child_control.as_raw_fd(),
            events_w.as_raw_fd(),
            input_r.as_raw_fd(),
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ];
        sendmsg::<()>(
            zygote.requests.as_raw_fd(),
            &[std::io::IoSlice::new(b"fork")],
            &[ControlMessage::ScmRights(&theirs)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(fail)?;
        zygote.forks.fetch_add(1, Ordering::Relaxed);
        // Ours go now: EOF on any of them means the child is gone.
        drop((
            child_control,
            events_w,
            input_r,
            stdin_r,
            stdout_w,
            stderr_w,
        ));
        let pid = forked_pid(&control)?;
        let pidfd = sys::pidfd_open(pid).map_err(SetupError::Fork)?;
        // The zygote (or lane) reaps its children at once, so the pid could have been
        // reused had the child died before the pidfd was opened. The child holds the
        // only other end of the control socket (it forks nothing before it is placed;
        // a lane's init closes its copy before it waits for the child): still open
        // now, the child was alive when its pidfd was opened, which names it for good.
        if peer_gone(&control) {
            return Err(SetupError::Fork(std::io::Error::other(
                "the forked helper exited at once",
            )));
        }
        cg.hold_helper_pidfd(pidfd.try_clone().map_err(SetupError::Fork)?);
        let prepared = Prepared {
            cg,
            child: HelperProcess::Forked(Forked {
                pidfd,
                stdin: Some(stdin),
                stdout: Some(stdout),
                stderr: Some(stderr),
                _zygote: zygote.clone(),
            }),
            control,
            events,
            input,
        };
        self.place(prepared, &id, pid)
    }
}

/// Whether the other end of `control` is closed.
fn peer_gone(control: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(control),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => fds[0].revents().is_none_or(|r| {
            r.intersects(
                nix::poll::PollFlags::POLLHUP
                    | nix::poll::PollFlags::POLLERR
                    | nix::poll::PollFlags::POLLIN,
            )
        }),
        Err(_) => true,
    }
}

/// The pid a forked helper says it has (its first message on the control socket).
fn forked_pid(control: &OwnedFd) -> Result<u32, SetupError> {
    let gone = || SetupError::Fork(std::io::Error::other("the zygote did not fork"));
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(control),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = u16::try_from(FORK_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
        Ok(n) if n > 0 => {}
        _ => return Err(gone()),
    }
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    let msg = recvmsg::<()>(
        control.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| SetupError::Fork(e.into()))?;
    if msg.bytes != 1 {
        return Err(gone());
    }
    let pid = msg
        .cmsgs()
        .map_err(|e| SetupError::Fork(e.into()))?
        .find_map(|c| match c {
            ControlMessageOwned::ScmCredentials(c) => Some(c.pid()),
            _ => None,
        });
    match pid {
        Some(pid) if pid > 0 => Ok(pid as u32),
        _ => Err(gone()),
    }
}
