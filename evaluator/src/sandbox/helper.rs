//! The sandbox helper: a freshly exec'd, single-threaded process that builds one
//! sandbox from a plan and runs the payload in it.
//!
//! The supervisor (a multi-threaded tokio server) never forks itself into setup code:
//! it spawns this helper as an ordinary program, moves it into the sandbox's cgroup,
//! and sends the plan over fd 3. The helper then reads top to bottom:
//!
//! 1. new mount, pid, net, ipc, uts and cgroup namespaces;
//! 2. fork the sandbox's init (PID 1), which builds the root: tmpfs, read-only runtime
//!    binds, size-limited `/work`, `/tmp`, `/dev/shm`, a minimal `/dev`, fresh `/proc`,
//!    `pivot_root`, hostname, loopback up;
//! 3. init forks the payload, which sets rlimits, drops to an unprivileged uid with no
//!    capabilities and `no_new_privs`, installs seccomp last, and execs;
//! 4. init reaps, reports the payload's status, and exits, which kills whatever the
//!    payload left behind (the kernel ends a pid namespace with its init).
//!
//! Every failure is reported back as the step that failed and its errno.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, pivot_root, setgroups, sethostname, setresgid, setresuid, Gid, Pid, Uid};

use super::plan::{
    Plan, Report, RootPlan, HELPER_CONTROL_FD, HELPER_EVENTS_FD, HELPER_INPUT_FD,
    MAX_CONTROL_MESSAGE, MAX_INPUT, PAYLOAD_EVENTS_FD, PAYLOAD_INPUT_FD,
};
use super::seccomp;
use crate::sys;

/// A setup step that failed: which one, and the OS error.
#[derive(Debug)]
struct StepError {
    step: String,
    errno: i32,
    detail: String,
}

trait Step<T> {
    fn step(self, step: impl Into<String>) -> Result<T, StepError>;
}

impl<T, E: Into<io::Error>> Step<T> for Result<T, E> {
    fn step(self, step: impl Into<String>) -> Result<T, StepError> {
        self.map_err(|e| {
            let e: io::Error = e.into();
            StepError {
                step: step.into(),
                errno: e.raw_os_error().unwrap_or(0),
                detail: e.to_string(),
            }
        })
    }
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

trait NixStep<T> {
    fn nstep(self, step: impl Into<String>) -> Result<T, StepError>;
}

impl<T> NixStep<T> for nix::Result<T> {
    fn nstep(self, step: impl Into<String>) -> Result<T, StepError> {
        self.map_err(nix_io).step(step)
    }
}

/// Entry point of the helper process. Never returns.
pub fn helper_main() -> ! {
    let control = match sys::inherited_fd(HELPER_CONTROL_FD) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("jsheets sandbox helper: fd 3 is not a control socket ({e}); this program is started by jsheets-runtime only");
            std::process::exit(64);
        }
    };
    let code = match run(&control) {
        Ok(code) => code,
        Err(e) => {
            report(
                &control,
                &Report::SetupFailed {
                    step: e.step,
                    errno: e.errno,
                    detail: e.detail,
                },
            );
            1
        }
    };
    std::process::exit(code)
}

fn report(control: &OwnedFd, msg: &Report) {
    if let Ok(bytes) = serde_json::to_vec(msg) {
        // A supervisor that went away cannot be told anything; init then dies with it.
        let mut line = bytes;
        line.push(b'\n');
        let _ = nix::unistd::write(control, &line);
    }
}

/// Reads the plan (one JSON line) and the input bytes it announces.
fn receive_plan(control: &OwnedFd) -> Result<(Plan, Option<OwnedFd>), StepError> {
    let invalid = |detail: &str| StepError {
        step: "reading the plan".into(),
        errno: libc::EINVAL,
        detail: detail.into(),
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let newline = loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            break pos;
        }
        let n = nix::unistd::read(control, &mut chunk).nstep("reading the plan")?;
        if n == 0 || buf.len() + n > MAX_CONTROL_MESSAGE + chunk.len() {
            return Err(invalid("truncated or oversized"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let plan: Plan = serde_json::from_slice(&buf[..newline]).map_err(|e| StepError {
        step: "decoding the plan".into(),
        errno: libc::EINVAL,
        detail: e.to_string(),
    })?;
    let Some(len) = plan.input_len else {
        return Ok((plan, None));
    };
    if plan.deferred_input {
        return Err(invalid("input both announced and deferred"));
    }
    if len > MAX_INPUT {
        return Err(invalid("input too large"));
    }
    let mut input = buf.split_off(newline + 1);
    while (input.len() as u64) < len {
        let n = nix::unistd::read(control, &mut chunk).nstep("reading the input")?;
        if n == 0 {
            return Err(invalid("input truncated"));
        }
        input.extend_from_slice(&chunk[..n]);
    }
    if input.len() as u64 != len {
        return Err(invalid("more input than announced"));
    }
    // In a memfd created here, its memory is charged to the sandbox's cgroup.
    let fd = sys::memfd_with("jsheets-input", &input).step("storing the input")?;
    Ok((plan, Some(fd)))
}

/// Argument with which pre-spawned helpers are started: they create their namespaces
/// while waiting for a plan, so that (network namespace creation above all) is off the
/// request path. Such a helper only takes plans that isolate the network.
pub const EARLY_UNSHARE_ARG: &str = "--unshare-early";

fn namespace_flags(isolate_network: bool) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP;
    if isolate_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

fn run(control: &OwnedFd) -> Result<i32, StepError> {
    // The cgroup namespace root is our cgroup: the supervisor moved us into it before
    // starting us, so unsharing before the plan arrives is as good as after.
    let early = std::env::args_os().any(|a| a == EARLY_UNSHARE_ARG);
    if early {
        unshare(namespace_flags(true)).nstep("creating namespaces")?;
    }
    let (plan, input) = receive_plan(control)?;
    if early && !plan.isolate_network {
        return Err(StepError {
            step: "checking the plan".into(),
            errno: libc::EINVAL,
            detail: "a pre-spawned helper cannot run a job that uses the host network".into(),
        });
    }
    // Always inherited; dropped at once when the payload has no driver to speak.
    let events = sys::inherited_fd(HELPER_EVENTS_FD).step("taking the events fd")?;
    let events = plan.has_events.then_some(events);
    // Likewise the pipe of a deferred input.
    let pipe = sys::inherited_fd(HELPER_INPUT_FD).step("taking the input pipe")?;
    let input = if plan.deferred_input {
        Some(pipe)
    } else {
        input
    };

    if !early {
        unshare(namespace_flags(plan.isolate_network)).nstep("creating namespaces")?;
    }

    match sys::fork_single_threaded().step("forking the sandbox init")? {
        sys::Fork::Child => {
            let code = match init(&plan, control, input, events) {
                Ok(code) => code,
                Err(e) => {
                    report(
                        control,
                        &Report::SetupFailed {
                            step: e.step,
                            errno: e.errno,
                            detail: e.detail,
                        },
                    );
                    1
                }
            };
            std::process::exit(code)
        }
        sys::Fork::Parent(pid) => {
            drop(input);
            drop(events);
            // Release our copies of the output pipes so the supervisor sees EOF as soon
            // as the sandbox is gone.
            let null = File::open("/dev/null").step("opening /dev/null")?;
            for fd in 0..3 {
                sys::dup_onto(null.as_raw_fd(), fd).step("detaching stdio")?;
            }
            loop {
                match waitpid(Pid::from_raw(pid), None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(e).nstep("waiting for the sandbox init"),
                }
            }
        }
    }
}

/// PID 1 of the sandbox.
fn init(
    plan: &Plan,
    control: &OwnedFd,
    input: Option<OwnedFd>,
    events: Option<OwnedFd>,
) -> Result<i32, StepError> {
    build_root(plan)?;
    sethostname(&plan.hostname).nstep("setting the hostname")?;
    if plan.isolate_network {
        sys::loopback_up().step("bringing loopback up")?;
    }

    // Everything the payload needs is prepared here, before the fork.
    let filter = seccomp::payload_filter().map_err(|e| StepError {
        step: "building the seccomp filter".into(),
        errno: libc::EINVAL,
        detail: e.to_string(),
    })?;
    let cstr = |s: &str, what: &str| {
        CString::new(s).map_err(|_| StepError {
            step: format!("encoding {what}"),
            errno: libc::EINVAL,
            detail: "contains a NUL byte".into(),
        })
    };
    let argv = plan
        .argv
        .iter()
        .map(|a| cstr(a, "argv"))
        .collect::<Result<Vec<_>, _>>()?;
    let env = plan
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}"), "the environment"))
        .collect::<Result<Vec<_>, _>>()?;
    let program = argv.first().cloned().ok_or_else(|| StepError {
        step: "reading argv".into(),
        errno: libc::EINVAL,
        detail: "empty".into(),
    })?;

    let mut sigchld = SigSet::empty();
    sigchld.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigchld), None).nstep("blocking SIGCHLD")?;
    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).nstep("creating the exec pipe")?;

    let payload = match sys::fork_single_threaded().step("forking the payload")? {
        sys::Fork::Child => {
            drop(err_read);
            let e = payload_exec(
                plan,
                input.as_ref(),
                events.as_ref(),
                &filter,
                &program,
                &argv,
                &env,
            );
            let msg = format!("{}\0{}\0{}", e.step, e.errno, e.detail);
            let _ = nix::unistd::write(&err_write, msg.as_bytes());
            std::process::exit(127);
        }
        sys::Fork::Parent(pid) => Pid::from_raw(pid),
    };
    drop(err_write);
    drop(input);
    drop(events);

    let mut failure = Vec::new();
    File::from(err_read)
        .read_to_end(&mut failure)
        .step("reading the exec pipe")?;
    if !failure.is_empty() {
        let text = String::from_utf8_lossy(&failure);
        let mut parts = text.splitn(3, '\0');
        let step = parts.next().unwrap_or("payload").to_string();
        let errno = parts.next().and_then(|e| e.parse().ok()).unwrap_or(0);
        let detail = parts.next().unwrap_or("").to_string();
        let _ = waitpid(payload, None);
        return Err(StepError {
            step,
            errno,
            detail,
        });
    }
    report(control, &Report::Started);

    // Init keeps nothing the payload could use: no stdio, no privileges.
    let null = File::open("/dev/null").step("opening /dev/null")?;
    for fd in 0..3 {
        sys::dup_onto(null.as_raw_fd(), fd).step("detaching init's stdio")?;
    }
    drop(null);
    setresgid(
        Gid::from_raw(plan.gid),
        Gid::from_raw(plan.gid),
        Gid::from_raw(plan.gid),
    )
    .nstep("init setresgid")?;
    setresuid(
        Uid::from_raw(plan.uid),
        Uid::from_raw(plan.uid),
        Uid::from_raw(plan.uid),
    )
    .nstep("init setresuid")?;

    let status = reap_until(payload, control)?;
    // Whatever the payload left running ends with it.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    report(control, &status);
    Ok(0)
}

/// Waits for the payload, reaping orphans meanwhile. If the supervisor goes away,
/// everything is killed.
fn reap_until(payload: Pid, control: &OwnedFd) -> Result<Report, StepError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).nstep("creating the signalfd")?;
    loop {
        // Reap first: the payload may have exited before the signalfd existed.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == payload => {
                    return Ok(Report::Exited { code })
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == payload => {
                    return Ok(Report::Signaled { signal: sig as i32 })
                }
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => break,
                Ok(_) | Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e).nstep("reaping"),
            }
        }
        let mut fds = [
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e).nstep("waiting for the payload"),
        }
        let control_event = fds[1].revents().unwrap_or(PollFlags::empty());
        if !control_event.is_empty() {
            // The supervisor closed its end (or died): nobody wants the result.
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            std::process::exit(1);
        }
        let _ = sfd.read_signal();
    }
}

/// The payload's last steps before exec; returns only on failure.
fn payload_exec(
    plan: &Plan,
    input: Option<&OwnedFd>,
    events: Option<&OwnedFd>,
    filter: &seccompiler::BpfProgram,
    program: &CString,
    argv: &[CString],
    env: &[CString],
) -> StepError {
    let run = || -> Result<std::convert::Infallible, StepError> {
        // fd 3 is the control socket until here: replace or close it.
        match input {
            Some(fd) => {
                sys::dup_onto(fd.as_raw_fd(), PAYLOAD_INPUT_FD).step("passing the input fd")?
            }
            None => nix::unistd::close(PAYLOAD_INPUT_FD).nstep("closing the control socket")?,
        }
        match events {
            Some(fd) => {
                sys::dup_onto(fd.as_raw_fd(), PAYLOAD_EVENTS_FD).step("passing the events fd")?
            }
            None => {
                let _ = nix::unistd::close(PAYLOAD_EVENTS_FD);
            }
        }
        sys::cloexec_from(PAYLOAD_EVENTS_FD as u32 + 1).step("closing inherited fds")?;
        // The payload's pipes become its own, so that it may reopen them through
        // /proc/self/fd (the JVM can only name a descriptor that way).
        for fd in [0, 1, 2, PAYLOAD_INPUT_FD, PAYLOAD_EVENTS_FD] {
            if (fd == PAYLOAD_EVENTS_FD && events.is_none())
                || (fd == PAYLOAD_INPUT_FD && input.is_none())
            {
                continue;
            }
            sys::fchown_fd(fd, plan.uid, plan.gid).step("handing the pipes to the payload")?;
        }

        let limits = &plan.rlimits;
        setrlimit(
            Resource::RLIMIT_CPU,
            limits.cpu_seconds,
            limits.cpu_seconds + 1,
        )
        .nstep("setrlimit cpu")?;
        let file_size = limits.file_size.unwrap_or(libc::RLIM_INFINITY);
        setrlimit(Resource::RLIMIT_FSIZE, file_size, file_size).nstep("setrlimit fsize")?;
        setrlimit(
            Resource::RLIMIT_NOFILE,
            limits.open_files,
            limits.open_files,
        )
        .nstep("setrlimit nofile")?;
        setrlimit(Resource::RLIMIT_CORE, 0, 0).nstep("setrlimit core")?;
        // No RLIMIT_NPROC: it would count every process of the uid, init included
        // once it drops to it. The process limit is the cgroup's pids.max, which
        // allows for the helper and init (`SANDBOX_PROCESSES`).
        setrlimit(Resource::RLIMIT_STACK, limits.stack, limits.stack).nstep("setrlimit stack")?;

        sys::drop_capabilities().step("dropping the capability bounding set")?;
        let gid = Gid::from_raw(plan.gid);
        let uid = Uid::from_raw(plan.uid);
        setgroups(&[gid]).nstep("setgroups")?;
        setresgid(gid, gid, gid).nstep("setresgid")?;
        setresuid(uid, uid, uid).nstep("setresuid")?;
        nix::sys::prctl::set_no_new_privs().nstep("setting no_new_privs")?;
        chdir(&plan.cwd).nstep(format!("chdir {}", plan.cwd.display()))?;
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .nstep("unblocking signals")?;
        // Seccomp last: everything above needs syscalls the filter denies.
        seccomp::install(filter).map_err(|e| StepError {
            step: "installing the seccomp filter".into(),
            errno: libc::EPERM,
            detail: e.to_string(),
        })?;
        nix::unistd::execve(program, argv, env).nstep(format!("exec {}", program.to_string_lossy()))
    };
    match run() {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// Builds the sandbox's root filesystem and switches into it. Any failure aborts.
fn build_root(plan: &Plan) -> Result<(), StepError> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .nstep("making mounts private")?;
    let root = &plan.root_dir;
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;

    match &plan.root {
        RootPlan::Runtime { mounts } => {
            mount(
                Some("tmpfs"),
                root,
                Some("tmpfs"),
                nosuid_nodev,
                Some("size=1m,mode=0755"),
            )
            .nstep("mounting the root tmpfs")?;
            let mut mounts = mounts.clone();
            // Parents before children, so nested targets land on top.
            mounts.sort_by_key(|m| m.target.components().count());
            for m in &mounts {
                let target = inside(root, &m.target)?;
                bind_readonly(&m.source, &target, &m.target)?;
            }
            tmpfs(
                root,
                "/work",
                plan.work_bytes,
                "0700",
                Some((plan.uid, plan.gid)),
            )?;
        }
        RootPlan::HostReadOnly => {
            mount(
                Some("/"),
                root,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .nstep("binding the host root")?;
            sys::make_tree_readonly(root).step("making the host root read-only")?;
            // A fresh /tmp first: the tree being built may itself live under /tmp, and
            // its bind must land on top of the new tmpfs, not under it.
            tmpfs(root, "/tmp", plan.tmp_bytes, "1777", None)?;
            // Hidden paths get an empty tmpfs; writable binds may lie inside one (the
            // runtime being built sits in the hidden runtimes directory), so their
            // mount points are made first and the tmpfs turns read-only afterwards.
            let mut hidden_mounts = Vec::new();
            for path in &plan.hidden {
                let target = inside(root, path)?;
                if target.exists() {
                    mount(
                        Some("tmpfs"),
                        &target,
                        Some("tmpfs"),
                        nosuid_nodev,
                        Some("size=64k,mode=0755"),
                    )
                    .nstep(format!("hiding {}", path.display()))?;
                    hidden_mounts.push(target);
                }
            }
            for path in &plan.writable_binds {
                let target = inside(root, path)?;
                if !target.exists() {
                    fs::create_dir_all(&target)
                        .step(format!("creating mount point {}", path.display()))?;
                }
                mount(Some(path), &target, none, MsFlags::MS_BIND, none)
                    .nstep(format!("binding {} writable", path.display()))?;
                mount(
                    none,
                    &target,
                    none,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | nosuid_nodev,
                    none,
                )
                .nstep(format!("remounting {}", path.display()))?;
            }
            for target in &hidden_mounts {
                mount(
                    none,
                    target,
                    none,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid_nodev,
                    Some("size=64k,mode=0755"),
                )
                .nstep(format!("making {} read-only", target.display()))?;
            }
        }
    }
    if matches!(plan.root, RootPlan::Runtime { .. }) {
        tmpfs(root, "/tmp", plan.tmp_bytes, "1777", None)?;
    }
    build_dev(root, plan.shm_bytes)?;
    let proc_dir = inside(root, Path::new("/proc"))?;
    fs::create_dir_all(&proc_dir).step("creating /proc")?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        nosuid_nodev | MsFlags::MS_NOEXEC,
        none,
    )
    .nstep("mounting /proc")?;

    // pivot_root rather than chroot: the old root becomes unreachable once detached.
    chdir(root).nstep("entering the new root")?;
    pivot_root(".", ".").nstep("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).nstep("detaching the old root")?;
    chdir("/").nstep("chdir /")?;
    if matches!(plan.root, RootPlan::Runtime { .. }) {
        mount(
            none,
            "/",
            none,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid_nodev,
            none,
        )
        .nstep("making the root read-only")?;
    }
    Ok(())
}

/// `target` (absolute, normalized) placed under `root`.
fn inside(root: &Path, target: &Path) -> Result<PathBuf, StepError> {
    let mut out = root.to_path_buf();
    for c in target.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(StepError {
                    step: format!("placing {}", target.display()),
                    errno: libc::EINVAL,
                    detail: "not an absolute normalized path".into(),
                })
            }
        }
    }
    Ok(out)
}

fn bind_readonly(source: &Path, target: &Path, shown: &Path) -> Result<(), StepError> {
    let none: Option<&str> = None;
    let meta = fs::metadata(source).step(format!("reading mount source {}", source.display()))?;
    if meta.is_dir() {
        if !target.exists() {
            fs::create_dir_all(target).step(format!("creating mount point {}", shown.display()))?;
        }
    } else if !target.exists() {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).step(format!("creating mount point {}", shown.display()))?;
        }
        File::create(target).step(format!("creating mount point {}", shown.display()))?;
    }
    mount(Some(source), target, none, MsFlags::MS_BIND, none)
        .nstep(format!("binding {}", shown.display()))?;
    mount(
        none,
        target,
        none,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        none,
    )
    .nstep(format!("making {} read-only", shown.display()))
}

fn tmpfs(
    root: &Path,
    at: &str,
    bytes: u64,
    mode: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), StepError> {
    let target = inside(root, Path::new(at))?;
    fs::create_dir_all(&target).step(format!("creating {at}"))?;
    let mut opts = format!("size={bytes},mode={mode}");
    if let Some((uid, gid)) = owner {
        opts.push_str(&format!(",uid={uid},gid={gid}"));
    }
    mount(
        Some("tmpfs"),
        &target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .nstep(format!("mounting {at}"))
}

/// A minimal `/dev`: the harmless character devices bound from the host, a fresh
/// size-limited `/dev/shm`, and the usual fd symlinks.
fn build_dev(root: &Path, shm_bytes: u64) -> Result<(), StepError> {
    let none: Option<&str> = None;
    let dev = inside(root, Path::new("/dev"))?;
    fs::create_dir_all(&dev).step("creating /dev")?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )
    .nstep("mounting /dev")?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        File::create(&target).step(format!("creating /dev/{name}"))?;
        let source = Path::new("/dev").join(name);
        mount(Some(&source), &target, none, MsFlags::MS_BIND, none)
            .nstep(format!("binding /dev/{name}"))?;
        mount(
            none,
            &target,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            none,
        )
        .nstep(format!("remounting /dev/{name}"))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link)).step(format!("linking /dev/{link}"))?;
    }
    let shm = dev.join("shm");
    fs::create_dir(&shm).step("creating /dev/shm")?;
    fs::set_permissions(&shm, fs::Permissions::from_mode(0o1777)).step("chmod /dev/shm")?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("size={shm_bytes},mode=1777").as_str()),
    )
    .nstep("mounting /dev/shm")?;
    // Nothing may be added to /dev afterwards.
    mount(
        none,
        &dev,
        none,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )
    .nstep("making /dev read-only")
}
