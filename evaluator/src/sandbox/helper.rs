//! The sandbox helper: a freshly exec'd, single-threaded process that builds one
//! sandbox from a plan and runs the payload in it.
//!
//! The supervisor (a multi-threaded tokio server) never forks itself into setup code:
//! it spawns this helper as an ordinary program, moves it into the sandbox's cgroup,
//! and sends the plan over fd 3. The helper then reads top to bottom:
//!
//! 0. a session of its own (no controlling terminal), every fd it did not get by
//!    contract closed;
//! 1. new mount, pid, net, ipc and uts namespaces; once the supervisor said where it
//!    put the helper and `/proc/self/cgroup` agrees, a new cgroup namespace;
//! 2. fork the sandbox's init (PID 1), which builds the root: tmpfs, read-only runtime
//!    overlays, size-limited `/work`, `/tmp`, `/dev/shm`, a minimal `/dev` (no tty),
//!    fresh `/proc`, `pivot_root`, hostname, loopback up;
//! 3. init forks the payload and drops its own privileges (only CAP_KILL left, not
//!    dumpable, `no_new_privs`) before the payload may go on; the payload sets every
//!    rlimit, drops to an unprivileged uid with no capabilities and `no_new_privs`,
//!    installs seccomp last, and execs;
//! 4. init reaps, reports the payload's status, and exits, which kills whatever the
//!    payload left behind (the kernel ends a pid namespace with its init).
//!
//! Every failure is reported back as the step that failed and its errno.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::setrlimit;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{
    chdir, pivot_root, setgroups, sethostname, setresgid, setresuid, setsid, Gid, Pid, Uid,
};

use super::control::{self, ControlError, Receiver};
use super::plan::{
    FilesPlaced, Payload, Placement, Plan, Report, RootPlan, HELPER_CONTROL_FD, HELPER_EVENTS_FD,
    HELPER_INPUT_FD, MAX_CONTROL_MESSAGE, MAX_INPUT, PAYLOAD_EVENTS_FD, PAYLOAD_INPUT_FD,
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
    let early = std::env::args_os().any(|a| a == EARLY_UNSHARE_ARG);
    let code = match detach().and_then(|()| run(&control, early, false)) {
        Ok(Become::Exit(code)) => code,
        // `run` refuses, in a helper that was exec'd, a plan whose payload returns.
        Ok(Become::Payload) => 1,
        Err(e) => failed(&control, e),
    };
    std::process::exit(code)
}

/// Entry point of a helper forked from a zygote (a warm interpreter, single-threaded,
/// with the helper's fds in place: 0-2, the control socket on 3, the events pipe on 5,
/// the input pipe on 6). It tells the supervisor its pid (the zygote runs in a pid
/// namespace of its own, so only the kernel can say which pid the supervisor sees),
/// then builds the sandbox as an exec'd helper does. Returns only in the payload,
/// which is then unprivileged, confined and in its sandbox: the caller's interpreter
/// goes on as the payload. Every other process of the sandbox exits in here.
pub fn forked_main() {
    let control = match sys::inherited_fd(HELPER_CONTROL_FD) {
        Ok(fd) => fd,
        Err(_) => std::process::exit(64),
    };
    if tell_pid(&control).is_err() {
        std::process::exit(65);
    }
    match detach().and_then(|()| run(&control, true, true)) {
        Ok(Become::Payload) => {
            // fd 3 is the payload's input now, not the control socket.
            let _ = control.into_raw_fd();
        }
        Ok(Become::Exit(code)) => std::process::exit(code),
        Err(e) => std::process::exit(failed(&control, e)),
    }
}

/// Tells the supervisor our pid: a forked process's pid is known only to the kernel,
/// which translates the credentials' pid into the receiver's pid namespace.
fn tell_pid(control: &OwnedFd) -> nix::Result<usize> {
    nix::sys::socket::sendmsg::<()>(
        control.as_raw_fd(),
        &[std::io::IoSlice::new(b"p")],
        &[nix::sys::socket::ControlMessage::ScmCredentials(
            &nix::sys::socket::UnixCredentials::new(),
        )],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
}

/// What a helper process (or one of its forks) does once `run` returned in it.
enum Become {
    /// It exits with this code.
    Exit(i32),
    /// It is the payload of a forked helper, ready to go on in its caller.
    Payload,
}

/// Reports a failed step to the supervisor; the exit code of the helper then.
fn failed(control: &OwnedFd, e: StepError) -> i32 {
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

fn report(control: &OwnedFd, msg: &Report) {
    // A supervisor that went away cannot be told anything; init then dies with it.
    let _ = control::send(control, msg);
}

/// First thing the helper does, before it reads anything: it leaves the session (and
/// so the controlling terminal) of whoever started the supervisor, closes every fd it
/// did not get by contract (0-2 and 3, 5, 6: a parent may leak anything else, a
/// terminal above all), and refuses to go on if one of those it keeps is a terminal.
/// Nothing of the sandbox can then reach the operator's terminal: there is no
/// controlling terminal to open as `/dev/tty` (which the sandbox's `/dev` does not have
/// either) and no terminal fd to inherit.
fn detach() -> Result<(), StepError> {
    setsid().nstep("leaving the terminal's session")?;
    sys::close_from(HELPER_INPUT_FD as u32 + 1).step("closing inherited fds")?;
    match nix::unistd::close(4) {
        Ok(()) | Err(nix::Error::EBADF) => {}
        Err(e) => return Err(e).nstep("closing inherited fds"),
    }
    for fd in 0..=HELPER_INPUT_FD {
        if sys::is_terminal(fd) {
            return Err(StepError {
                step: "checking the inherited fds".into(),
                errno: libc::EINVAL,
                detail: format!("fd {fd} is a terminal"),
            });
        }
    }
    Ok(())
}

/// A message from the supervisor, received: `what` names it in the failed step.
fn receive<T: serde::de::DeserializeOwned>(
    control: &OwnedFd,
    reader: &mut Receiver,
    what: &str,
) -> Result<T, StepError> {
    reader.recv(control).map_err(|e| {
        let (step, errno) = match &e {
            ControlError::Garbage(_) => (format!("decoding {what}"), libc::EINVAL),
            ControlError::Io(io) => (
                format!("reading {what}"),
                io.raw_os_error().unwrap_or(libc::EIO),
            ),
            _ => (format!("reading {what}"), libc::EINVAL),
        };
        StepError {
            step,
            errno,
            detail: detail(&e),
        }
    })
}

/// The detail of a failed step: the error and what caused it.
fn detail(e: &ControlError) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The hierarchies of `/proc/self/cgroup` content: (controllers, path) per line.
fn cgroup_lines(content: &str) -> Vec<(Vec<&str>, &str)> {
    content
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some((controllers.split(',').collect(), path))
        })
        .collect()
}

/// What `/proc/self/cgroup` shows that it must not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum CgroupCheck {
    #[error("no cgroup given")]
    NoneGiven,
    #[error("in cgroup {path} for {controller:?}, not in {expected}")]
    Elsewhere {
        controller: String,
        path: String,
        expected: String,
    },
    #[error("no {0:?} hierarchy in /proc/self/cgroup")]
    NoHierarchy(String),
    #[error("no hierarchy in /proc/self/cgroup")]
    NoHierarchies,
    #[error("{controllers} shows {path}, not the namespace's root")]
    NotRoot { controllers: String, path: String },
}

/// Checks that `/proc/self/cgroup` puts us where the supervisor says it did. Our cgroup
/// namespace will be rooted at the cgroup we are in when we create it: being anywhere
/// else (not moved yet, or moved away) would show the sandbox the cgroups around it.
fn check_placement(placement: &Placement, content: &str) -> Result<(), CgroupCheck> {
    if placement.cgroups.is_empty() {
        return Err(CgroupCheck::NoneGiven);
    }
    let lines = cgroup_lines(content);
    for (controller, expected) in &placement.cgroups {
        let found = lines
            .iter()
            .find(|(controllers, _)| controllers.iter().any(|c| c == controller));
        match found {
            Some((_, path)) if path == expected => {}
            Some((_, path)) => {
                return Err(CgroupCheck::Elsewhere {
                    controller: controller.clone(),
                    path: path.to_string(),
                    expected: expected.clone(),
                })
            }
            None => return Err(CgroupCheck::NoHierarchy(controller.clone())),
        }
    }
    Ok(())
}

/// After unshare(CLONE_NEWCGROUP): every hierarchy must show the namespace's root.
fn check_cgroup_root(content: &str) -> Result<(), CgroupCheck> {
    let lines = cgroup_lines(content);
    if lines.is_empty() {
        return Err(CgroupCheck::NoHierarchies);
    }
    match lines.iter().find(|(_, path)| *path != "/") {
        Some((controllers, path)) => Err(CgroupCheck::NotRoot {
            controllers: controllers.join(","),
            path: path.to_string(),
        }),
        None => Ok(()),
    }
}

/// Waits for the supervisor's word that we are in our cgroup, and checks it.
fn receive_placement(control: &OwnedFd, reader: &mut Receiver) -> Result<(), StepError> {
    let placement: Placement = receive(control, reader, "the cgroup placement")?;
    let own = fs::read_to_string("/proc/self/cgroup").step("reading /proc/self/cgroup")?;
    check_placement(&placement, &own).map_err(|e| StepError {
        step: "checking the sandbox's cgroup".into(),
        errno: libc::EINVAL,
        detail: e.to_string(),
    })
}

/// Creates the cgroup namespace (once `receive_placement` checked where we are), then
/// checks that it is rooted at our cgroup.
fn create_cgroup_namespace() -> Result<(), StepError> {
    unshare(CloneFlags::CLONE_NEWCGROUP).nstep("creating the cgroup namespace")?;
    let own = fs::read_to_string("/proc/self/cgroup").step("reading /proc/self/cgroup")?;
    check_cgroup_root(&own).map_err(|e| StepError {
        step: "checking the cgroup namespace".into(),
        errno: libc::EINVAL,
        detail: e.to_string(),
    })
}

/// Reads the plan (one JSON line) and the input bytes it announces.
fn receive_plan(
    control: &OwnedFd,
    mut reader: Receiver,
) -> Result<(Plan, Option<OwnedFd>), StepError> {
    let invalid = |detail: &str| StepError {
        step: "reading the plan".into(),
        errno: libc::EINVAL,
        detail: detail.into(),
    };
    let mut chunk = vec![0u8; 64 * 1024];
    let plan: Plan = receive(control, &mut reader, "the plan")?;
    let Some(len) = plan.input_len else {
        return Ok((plan, None));
    };
    if plan.deferred_input {
        return Err(invalid("input both announced and deferred"));
    }
    if len > MAX_INPUT {
        return Err(invalid("input too large"));
    }
    let mut input = reader.into_rest();
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

/// Builds the sandbox. `early`: the namespaces are made while the supervisor places
/// us; `forked`: we are a fork of a zygote (see [`forked_main`]), the only helper whose
/// payload may return instead of exec'ing.
fn run(control: &OwnedFd, early: bool, forked: bool) -> Result<Become, StepError> {
    // The cgroup namespace root is our cgroup: the supervisor moves us into it, then
    // says where it put us; the cgroup namespace is created only once we checked that
    // we are there, and nothing of a request is read before.
    if early {
        // The namespaces whose root does not depend on our cgroup (the network one is
        // the slow one) are made while the supervisor moves us.
        unshare(namespace_flags(true) - CloneFlags::CLONE_NEWCGROUP)
            .nstep("creating namespaces")?;
    }
    let mut reader = Receiver::new(MAX_CONTROL_MESSAGE);
    receive_placement(control, &mut reader)?;
    let (plan, input) = receive_plan(control, reader)?;
    let invalid = |detail: &str| StepError {
        step: "checking the plan".into(),
        errno: libc::EINVAL,
        detail: detail.into(),
    };
    if early && !plan.isolate_network {
        return Err(invalid(
            "a pre-spawned helper cannot run a job that uses the host network",
        ));
    }
    match (plan.payload, forked) {
        (Payload::Return, false) => {
            return Err(invalid("only a helper forked from a zygote can return"))
        }
        (Payload::Exec | Payload::Zygote, true) => {
            return Err(invalid("a helper forked from a zygote only returns"))
        }
        _ => {}
    }
    if plan.lane
        && !(forked && plan.isolate_network && matches!(plan.root, RootPlan::Runtime { .. }))
    {
        return Err(invalid(
            "a lane is a forked helper's, on a runtime root, with a network of its own",
        ));
    }
    // A zygote (and a lane) sees the cgroups as the supervisor does: the sandboxes it
    // forks are placed (and check their placement) by the host's paths.
    let cgroup_namespace = plan.payload != Payload::Zygote && !plan.lane;
    if early && cgroup_namespace {
        create_cgroup_namespace()?;
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
        unshare(namespace_flags(plan.isolate_network) - CloneFlags::CLONE_NEWCGROUP)
            .nstep("creating namespaces")?;
        if cgroup_namespace {
            create_cgroup_namespace()?;
        }
    }

    match sys::fork_single_threaded().step("forking the sandbox init")? {
        sys::Fork::Child => {
            let code = match init(&plan, control, input, events, None) {
                Ok(Become::Payload) => return Ok(Become::Payload),
                Ok(Become::Exit(code)) => code,
                Err(e) => failed(control, e),
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
                    Ok(WaitStatus::Exited(_, code)) => return Ok(Become::Exit(code)),
                    Ok(WaitStatus::Signaled(_, sig, _)) => {
                        return Ok(Become::Exit(128 + sig as i32))
                    }
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(e).nstep("waiting for the sandbox init"),
                }
            }
        }
    }
}

/// PID 1 of the sandbox. `lane`: a sandbox of a lane, on the lane's root (see
/// [`lane_sandbox`]), with the lane's seccomp filter, built once.
fn init(
    plan: &Plan,
    control: &OwnedFd,
    input: Option<OwnedFd>,
    events: Option<OwnedFd>,
    lane: Option<&seccompiler::BpfProgram>,
) -> Result<Become, StepError> {
    if lane.is_some() {
        refresh_root(plan)?;
        sys::loopback_up().step("bringing loopback up")?;
    } else {
        build_root(plan)?;
        sethostname(&plan.hostname).nstep("setting the hostname")?;
        if plan.isolate_network {
            sys::loopback_up().step("bringing loopback up")?;
        }
        if plan.lane {
            drop(input);
            drop(events);
            return serve_lane(control);
        }
    }
    pass_out_work(plan, control)?;

    // Everything the payload needs is prepared here, before the fork.
    let built;
    let filter = match lane {
        Some(filter) => filter,
        None => {
            built = payload_filter()?;
            &built
        }
    };
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
    // The sandbox's own session, led by init: the payload's session id is 1, and no
    // terminal is the controlling one of anything in the sandbox.
    setsid().nstep("starting the sandbox's session")?;
    nix::sys::prctl::set_name(c"init").nstep("naming init")?;
    // Not dumpable: the payload can neither ptrace init nor read its memory, fds or
    // environment through /proc (init's /proc entries belong to root). The payload
    // inherits both until its exec, which sets its own dumpability.
    nix::sys::prctl::set_dumpable(false).nstep("making init non-dumpable")?;
    nix::sys::prctl::set_no_new_privs().nstep("setting init's no_new_privs")?;
    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).nstep("creating the exec pipe")?;
    let (go_read, go_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).nstep("creating the go pipe")?;

    let payload = match sys::fork_single_threaded().step("forking the payload")? {
        sys::Fork::Child => {
            drop(err_read);
            drop(go_write);
            let e = match payload_setup(go_read, plan, input.as_ref(), events.as_ref(), filter) {
                Ok(()) if plan.payload == Payload::Return => {
                    // What an exec would do: every fd but 0-4 closed (the exec pipe
                    // among them, so init hears of the start). Their owners let go
                    // first, so nothing is closed twice on the way back to the caller.
                    let _ = err_write.into_raw_fd();
                    let _ = input.map(IntoRawFd::into_raw_fd);
                    let _ = events.map(IntoRawFd::into_raw_fd);
                    if sys::close_from(PAYLOAD_EVENTS_FD as u32 + 1).is_err() {
                        std::process::exit(127);
                    }
                    return Ok(Become::Payload);
                }
                Ok(()) => nix::unistd::execve(&program, &argv, &env)
                    .nstep(format!("exec {}", program.to_string_lossy()))
                    .err()
                    .unwrap_or_else(|| unreachable!("execve returned")),
                Err(e) => e,
            };
            let msg = format!("{}\0{}\0{}", e.step, e.errno, e.detail);
            let _ = nix::unistd::write(&err_write, msg.as_bytes());
            std::process::exit(127);
        }
        sys::Fork::Parent(pid) => Pid::from_raw(pid),
    };
    drop(go_read);
    drop(err_write);
    drop(input);
    drop(events);
    // Init drops what it no longer needs before the payload may go on (it waits for
    // this byte): it stays root, so the payload's uid can neither signal it nor change
    // its limits or priority, with only CAP_KILL (to end the payload's processes) and
    // nothing in its bounding set. Reaping needs no privilege. If this fails, the
    // payload sees the pipe close and stops.
    setgroups(&[]).nstep("dropping init's groups")?;
    sys::keep_only_capability(sys::CAP_KILL).step("dropping init's capabilities")?;
    nix::unistd::write(&go_write, b"g").nstep("letting the payload go on")?;
    drop(go_write);

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

    let status = reap_until(payload, control)?;
    // Whatever the payload left running ends with it.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    report(control, &status);
    Ok(Become::Exit(0))
}

/// A lane's init (see [`Plan::lane`]): root, with its capabilities, in the lane's
/// namespaces and on its root, running nothing of any request. For each request
/// (`fork` and the six descriptors a zygote gets), it forks a light sandbox in new
/// pid, mount, ipc and network namespaces (see [`lane_sandbox`]) and reaps it before
/// the next. Returns in a sandbox's payload; exits when the supervisor closes the
/// socket.
fn serve_lane(control: &OwnedFd) -> Result<Become, StepError> {
    nix::sys::prctl::set_name(c"lane").nstep("naming the lane")?;
    nix::sys::prctl::set_dumpable(false).nstep("making the lane non-dumpable")?;
    let null = File::open("/dev/null").step("opening /dev/null")?;
    for fd in 0..3 {
        sys::dup_onto(null.as_raw_fd(), fd).step("detaching the lane's stdio")?;
    }
    drop(null);
    let filter = payload_filter()?;
    report(control, &Report::Lane);
    // A network namespace of its own too: sockets in TIME_WAIT, used ports and the
    // counters in /proc/net outlive a run's processes.
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET;
    loop {
        let Some(fds) = receive_request(control)? else {
            return Ok(Become::Exit(0));
        };
        match sys::fork_into_namespaces(flags).step("forking a sandbox of the lane")? {
            sys::Fork::Child => return Ok(lane_sandbox(fds, &filter)),
            sys::Fork::Parent(pid) => {
                // Before the wait: the supervisor trusts the child's pid only while
                // the child's end of its control socket is open, which it must hold
                // alone (see `zygote::fork_from`).
                drop(fds);
                loop {
                    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
                        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
                        | Err(nix::Error::ECHILD) => break,
                        Ok(_) | Err(nix::Error::EINTR) => continue,
                        Err(e) => return Err(e).nstep("waiting for a sandbox of the lane"),
                    }
                }
            }
        }
    }
}

/// The next request of a lane: `fork` with the control socket, event pipe, input pipe,
/// stdin, stdout and stderr of a sandbox; `None` once the supervisor closed the socket.
fn receive_request(control: &OwnedFd) -> Result<Option<Vec<OwnedFd>>, StepError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let bad = |detail: String| StepError {
        step: "reading a request of the lane".into(),
        errno: libc::EINVAL,
        detail,
    };
    let mut word = [0u8; 4];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 6]);
    let (bytes, fds) = loop {
        let mut iov = [std::io::IoSliceMut::new(&mut word)];
        match recvmsg::<()>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_WAITALL,
        ) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e).nstep("reading a request of the lane"),
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs().nstep("reading a request of the lane")? {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        fds.extend(received.into_iter().map(sys::received_fd));
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Err(bad("more descriptors than a request has".into()));
                }
                break (msg.bytes, fds);
            }
        }
    };
    if bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if &word[..bytes] != b"fork" || fds.len() != 6 {
        return Err(bad(format!(
            "{bytes} bytes and {} descriptors, not `fork` and 6",
            fds.len()
        )));
    }
    Ok(Some(fds))
}

/// A sandbox of a lane, forked by the lane's init as PID 1 of new pid, mount, ipc and
/// network namespaces. It takes the request's descriptors (its control socket replaces the
/// lane's on fd 3), tells the supervisor its pid, is placed in a cgroup of its own and
/// gets its plan like any helper forked from a zygote, makes its cgroup namespace, and
/// is then the sandbox's init on the lane's root with fresh writable filesystems and
/// `/proc` ([`refresh_root`]) and loopback up: a uid, cgroup, processes, files,
/// sockets and System V objects of its own. Returns only in the payload.
fn lane_sandbox(fds: Vec<OwnedFd>, filter: &seccompiler::BpfProgram) -> Become {
    // Above every target first, and the received ones (low numbers, maybe a target's)
    // closed, so that none is overwritten before it is placed or closed after.
    let high = fds
        .iter()
        .map(sys::dup_high)
        .collect::<io::Result<Vec<_>>>();
    drop(fds);
    let placed = high.and_then(|high| {
        let targets = [
            HELPER_CONTROL_FD,
            HELPER_EVENTS_FD,
            HELPER_INPUT_FD,
            0,
            1,
            2,
        ];
        for (fd, target) in high.iter().zip(targets) {
            sys::dup_onto(fd.as_raw_fd(), target)?;
        }
        Ok(())
    });
    let control = match (placed, sys::inherited_fd(HELPER_CONTROL_FD)) {
        (Ok(()), Ok(fd)) => fd,
        _ => std::process::exit(64),
    };
    if tell_pid(&control).is_err() {
        std::process::exit(65);
    }
    match lane_sandbox_steps(&control, filter) {
        Ok(Become::Payload) => {
            // fd 3 is the payload's input now, not the control socket.
            let _ = control.into_raw_fd();
            Become::Payload
        }
        Ok(Become::Exit(code)) => std::process::exit(code),
        Err(e) => std::process::exit(failed(&control, e)),
    }
}

fn lane_sandbox_steps(
    control: &OwnedFd,
    filter: &seccompiler::BpfProgram,
) -> Result<Become, StepError> {
    let mut reader = Receiver::new(MAX_CONTROL_MESSAGE);
    receive_placement(control, &mut reader)?;
    let (plan, input) = receive_plan(control, reader)?;
    if plan.payload != Payload::Return || plan.lane || !plan.deferred_input || input.is_some() {
        return Err(StepError {
            step: "checking the plan".into(),
            errno: libc::EINVAL,
            detail: "a lane's sandbox returns, with its input deferred".into(),
        });
    }
    create_cgroup_namespace()?;
    let events = sys::inherited_fd(HELPER_EVENTS_FD).step("taking the events fd")?;
    let events = plan.has_events.then_some(events);
    let input = sys::inherited_fd(HELPER_INPUT_FD).step("taking the input pipe")?;
    init(&plan, control, Some(input), events, Some(filter))
}

/// The root of a lane's sandbox: the lane's (read-only, a copy in the sandbox's own
/// mount namespace), with fresh `/work`, `/tmp` and `/dev/shm` and a `/proc` of its
/// pid namespace over the lane's (empty, never written: the lane runs nothing),
/// which stay under them unreachable; nothing an earlier sandbox of the lane wrote is
/// there. Mounted over rather than unmounted first: each unmount waits for an RCU
/// grace period, the sandbox's end frees them all at once.
fn refresh_root(plan: &Plan) -> Result<(), StepError> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .nstep("making mounts private")?;
    let root = Path::new("/");
    mount_work(root, plan)?;
    tmpfs(root, "/tmp", plan.tmp_bytes, "1777", None)?;
    mount_shm(Path::new("/dev/shm"), plan.shm_bytes)?;
    mount_proc(Path::new("/proc"))
}

/// The payload's seccomp filter, compiled.
fn payload_filter() -> Result<seccompiler::BpfProgram, StepError> {
    seccomp::payload_filter().map_err(|e| StepError {
        step: "building the seccomp filter".into(),
        errno: libc::EINVAL,
        detail: e.to_string(),
    })
}

/// Opens the sandbox's `/work` here, inside its mount namespace, and passes the
/// descriptor out, so that the supervisor never names it by a path; with files to
/// come, waits until they are in.
fn pass_out_work(plan: &Plan, control: &OwnedFd) -> Result<(), StepError> {
    if !matches!(plan.root, RootPlan::Runtime { .. }) {
        return Ok(());
    }
    use nix::fcntl::{open, OFlag};
    // A path descriptor: it needs no permission on /work itself (0700, the sandbox
    // user's), which init, root without CAP_DAC_OVERRIDE in a container, lacks.
    let work = open(
        "/work",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .nstep("opening /work")?;
    control::send_with_fd(control, &Report::Work, &work).map_err(|e| StepError {
        step: "passing out /work".into(),
        errno: libc::EIO,
        detail: detail(&e),
    })?;
    drop(work);
    if plan.await_files {
        let mut reader = Receiver::new(MAX_CONTROL_MESSAGE);
        let placed: FilesPlaced = receive(control, &mut reader, "the files' placement")?;
        if !placed.placed {
            return Err(StepError {
                step: "waiting for the request's files".into(),
                errno: libc::EIO,
                detail: "the supervisor could not place them".into(),
            });
        }
    }
    Ok(())
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
#[allow(clippy::too_many_arguments)]
fn payload_setup(
    go: OwnedFd,
    plan: &Plan,
    input: Option<&OwnedFd>,
    events: Option<&OwnedFd>,
    filter: &seccompiler::BpfProgram,
) -> Result<(), StepError> {
    {
        // Init drops its privileges first (see `init`).
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(&go, &mut byte) {
                Ok(1) => break,
                Ok(_) => {
                    return Err(StepError {
                        step: "waiting for init".into(),
                        errno: libc::EPERM,
                        detail: "init could not drop its privileges".into(),
                    })
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e).nstep("waiting for init"),
            }
        }
        drop(go);
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

        // Every rlimit, none inherited from root (see `Rlimits`).
        for limit in plan.rlimits.entries() {
            let value = |v: Option<u64>| v.unwrap_or(libc::RLIM_INFINITY);
            setrlimit(limit.resource, value(limit.soft), value(limit.hard))
                .nstep(format!("setrlimit {}", limit.name.to_lowercase()))?;
        }
        if plan.payload == Payload::Zygote {
            // Root, with its capabilities and no filter: it builds the sandboxes of
            // requests (and runs none of their code).
            chdir(&plan.cwd).nstep(format!("chdir {}", plan.cwd.display()))?;
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .nstep("unblocking signals")?;
            return Ok(());
        }

        sys::drop_capabilities().step("dropping the capability bounding set")?;
        let gid = Gid::from_raw(plan.gid);
        let uid = Uid::from_raw(plan.uid);
        setgroups(&[gid]).nstep("setgroups")?;
        setresgid(gid, gid, gid).nstep("setresgid")?;
        setresuid(uid, uid, uid).nstep("setresuid")?;
        nix::sys::prctl::set_no_new_privs().nstep("setting no_new_privs")?;
        if plan.payload == Payload::Return {
            // What an exec would do: dumpable again (init made it not), so that its
            // own uid may read its /proc entries, and named after its program (it has
            // init's name since the fork).
            nix::sys::prctl::set_dumpable(true).nstep("making the payload dumpable")?;
            let name = plan
                .argv
                .first()
                .and_then(|p| Path::new(p).file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = CString::new(name).unwrap_or_default();
            nix::sys::prctl::set_name(&name).nstep("naming the payload")?;
        }
        chdir(&plan.cwd).nstep(format!("chdir {}", plan.cwd.display()))?;
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .nstep("unblocking signals")?;
        // Seccomp last: everything above needs syscalls the filter denies.
        seccomp::install(filter).map_err(|e| StepError {
            step: "installing the seccomp filter".into(),
            errno: libc::EPERM,
            detail: e.to_string(),
        })?;
        Ok(())
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
            // The empty lower layer of every overlay: the mount point of /proc, which
            // proc covers later.
            let empty = inside(root, Path::new("/proc"))?;
            fs::create_dir_all(&empty).step("creating /proc")?;
            let empty = open_dir(&empty, Path::new("/proc"))?;
            for m in &mounts {
                let target = inside(root, &m.target)?;
                overlay_readonly(&m.source, &target, &m.target, &empty, MsFlags::empty())?;
            }
            // Data only: nothing on them runs, whatever its mode bits say.
            for m in &plan.datasets {
                let target = inside(root, &m.target)?;
                overlay_readonly(&m.source, &target, &m.target, &empty, MsFlags::MS_NOEXEC)?;
            }
            drop(empty);
            mount_work(root, plan)?;
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
    // Made already for evaluations (it is the overlays' empty layer).
    let proc_dir = inside(root, Path::new("/proc"))?;
    fs::create_dir_all(&proc_dir).step("creating /proc")?;
    mount_proc(&proc_dir)?;

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

fn open_dir(path: &Path, shown: &Path) -> Result<OwnedFd, StepError> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .nstep(format!("opening {}", shown.display()))
}

/// A runtime directory, read-only, as an overlay of it (and an empty directory: an
/// overlay without an upper layer needs two lower ones) rather than a bind mount. A
/// bind shows its source's host path in `/proc/self/mountinfo` (the mount's root
/// within its filesystem); an overlay is a filesystem of its own, rooted at `/`, and
/// its layers are named through `/proc/self/fd`, so its options show no host path
/// either. Where the kernel refuses the overlay (a runtimes directory on an overlay
/// that is itself stacked), and for single files, a bind it is.
fn overlay_readonly(
    source: &Path,
    target: &Path,
    shown: &Path,
    empty: &OwnedFd,
    extra: MsFlags,
) -> Result<(), StepError> {
    let meta = fs::metadata(source).step(format!("reading mount source {}", source.display()))?;
    if !meta.is_dir() {
        return bind_readonly(source, target, shown, extra);
    }
    if !target.exists() {
        fs::create_dir_all(target).step(format!("creating mount point {}", shown.display()))?;
    }
    let layer = open_dir(source, shown)?;
    let options = format!(
        "lowerdir=/proc/self/fd/{}:/proc/self/fd/{}",
        layer.as_raw_fd(),
        empty.as_raw_fd()
    );
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra;
    match mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(options.as_str()),
    ) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) | Err(nix::Error::ENODEV) => {
            bind_readonly(source, target, shown, extra)
        }
        Err(e) => Err(e).nstep(format!("mounting {}", shown.display())),
    }
}

fn bind_readonly(
    source: &Path,
    target: &Path,
    shown: &Path,
    extra: MsFlags,
) -> Result<(), StepError> {
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
            | MsFlags::MS_NODEV
            | extra,
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

/// A fresh `/work` under `root`, the payload's.
fn mount_work(root: &Path, plan: &Plan) -> Result<(), StepError> {
    tmpfs(
        root,
        "/work",
        plan.work_bytes,
        "0700",
        Some((plan.uid, plan.gid)),
    )
}

/// A `/proc` of the pid namespace we are in.
fn mount_proc(at: &Path) -> Result<(), StepError> {
    let none: Option<&str> = None;
    mount(
        Some("proc"),
        at,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .nstep("mounting /proc")
}

/// A fresh, size-limited `/dev/shm`.
fn mount_shm(at: &Path, bytes: u64) -> Result<(), StepError> {
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("size={bytes},mode=1777").as_str()),
    )
    .nstep("mounting /dev/shm")
}

/// A minimal `/dev`: the harmless character devices bound from the host, a fresh
/// size-limited `/dev/shm`, and the usual fd symlinks. No `tty`, `console`, `ptmx` or
/// `pts`: no terminal can be opened in the sandbox.
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
    for name in ["null", "zero", "full", "random", "urandom"] {
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
    mount_shm(&shm, shm_bytes)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "9:name=systemd:/\n8:pids:/a/jsheets-runtime/sb-1-2\n4:memory:/a/jsheets-runtime/sb-1-2\n2:cpu,cpuacct:/a/jsheets-runtime/sb-1-2\n0::/\n";

    fn placement(lines: &[(&str, &str)]) -> Placement {
        Placement {
            cgroups: lines
                .iter()
                .map(|(c, p)| (c.to_string(), p.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_helper_goes_on_only_where_it_was_put() {
        let at = "/a/jsheets-runtime/sb-1-2";
        let ok = placement(&[("memory", at), ("pids", at), ("cpuacct", at)]);
        assert_eq!(check_placement(&ok, V1), Ok(()));
        let v2 = placement(&[("", "/a/jsheets-runtime/sb-1-2")]);
        assert_eq!(
            check_placement(&v2, "0::/a/jsheets-runtime/sb-1-2\n"),
            Ok(())
        );

        // Not moved yet: still in the service's cgroup.
        let before = V1.replace("/a/jsheets-runtime/sb-1-2", "/a");
        let err = check_placement(&ok, &before).unwrap_err();
        assert!(
            err.to_string().contains("not in /a/jsheets-runtime/sb-1-2"),
            "{err}"
        );
        // Another sandbox's cgroup, a hierarchy missing, nothing to check against.
        let other = placement(&[("memory", "/a/jsheets-runtime/sb-1-3")]);
        assert!(check_placement(&other, V1).is_err());
        let missing = placement(&[("freezer", at)]);
        assert!(check_placement(&missing, V1).is_err());
        assert!(check_placement(&placement(&[]), V1).is_err());
        assert!(check_placement(&v2, "0::/a\n").is_err());
    }

    #[test]
    fn inside_the_namespace_every_hierarchy_is_its_root() {
        assert_eq!(
            check_cgroup_root("9:name=systemd:/\n4:memory:/\n0::/\n"),
            Ok(())
        );
        let err = check_cgroup_root("4:memory:/\n5:devices:/..\n").unwrap_err();
        assert!(err.to_string().contains("devices"), "{err}");
        assert!(check_cgroup_root("").is_err());
    }
}
