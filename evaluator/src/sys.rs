//! The kernel-facing corner of the crate: every `unsafe` block of the workspace lives
//! here, each with the invariants it relies on. Everything else calls these wrappers.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Lowest fd number `dup_high` hands out, so that mapping fds onto 3, 4, 5 in the
/// child can never overwrite a source that has not been mapped yet.
const HIGH_FD: RawFd = 100;

/// Duplicates `fd` to a number >= 100 with close-on-exec set.
pub fn dup_high(fd: impl AsFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a valid borrowed fd returns a new fd or -1; the
    // new fd is owned by nobody else, so wrapping it in OwnedFd is sound.
    unsafe {
        let new = libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD);
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(new))
    }
}

/// Arranges for each (source, target) of `fds` to appear at `target` in the spawned process.
///
/// The closure runs between fork and exec of a multi-threaded process, so it only makes
/// async-signal-safe `dup2` calls: no allocation, no locks. Sources must come from
/// `dup_high`, so they never collide with a target.
pub fn map_fds_on_spawn<const N: usize>(
    cmd: &mut tokio::process::Command,
    fds: [(RawFd, RawFd); N],
) {
    // SAFETY: the closure only calls dup2(2), which is async-signal-safe, on fds that stay
    // open in the parent until spawn returns (the caller keeps the OwnedFds alive). dup2
    // clears close-on-exec on the target, which is what lets the helper inherit it.
    unsafe {
        cmd.pre_exec(move || {
            for (src, dst) in fds {
                if libc::dup2(src, dst) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Which side of a fork we are on.
#[derive(Debug)]
pub enum Fork {
    Child,
    Parent(libc::pid_t),
}

/// fork(2) for the single-threaded helper.
pub fn fork_single_threaded() -> io::Result<Fork> {
    // SAFETY: only called by the sandbox helper, a freshly exec'd single-threaded
    // process, so the child inherits no lock held by another thread and may allocate.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// fork(2) into new namespaces (`flags`: `CLONE_NEW*` only, `CLONE_NEWPID` among
/// them) for a lane's init: the child is created in them at once, PID 1 of a pid
/// namespace of its own (which `unshare` could give only one child). Refused unless
/// the caller is PID 1 of its own pid namespace and single-threaded (see the SAFETY
/// note).
pub fn fork_into_namespaces(flags: nix::sched::CloneFlags) -> io::Result<Fork> {
    if !flags.contains(nix::sched::CloneFlags::CLONE_NEWPID) || std::process::id() != 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: raw clone(2) without CLONE_VM and with a null stack is fork(2): the child
    // gets a copy-on-write copy of the address space and continues on its copy of this
    // stack. What glibc's fork() would also do, and why it is not needed here: the
    // caller is single-threaded (a lane's init), so no lock is held by another
    // thread; glibc's cached thread id, which the raw clone does not update, is 1 in
    // the parent (PID 1 of its namespace) and right in the child, PID 1 of its own
    // (checked above); the child registers no robust futex list and runs no atfork
    // handler, and the payload it forks uses glibc's fork(), which does both.
    match unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid as libc::pid_t)),
    }
}

/// Makes `src` available at fd `dst` (clearing close-on-exec there).
pub fn dup_onto(src: RawFd, dst: RawFd) -> io::Result<()> {
    if src == dst {
        return clear_cloexec(dst);
    }
    // SAFETY: dup2 on plain fd numbers has no memory-safety impact; the caller owns the
    // numbering of its fd table (single-threaded helper).
    if unsafe { libc::dup2(src, dst) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the file behind fd number `fd` (a pipe of the sandbox) to `uid`/`gid`.
pub fn fchown_fd(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: fchown(2) on a plain fd number reads no memory; a closed fd is EBADF.
    if unsafe { libc::fchown(fd, uid, gid) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD with 0 only changes the fd's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every fd >= `from` close-on-exec, so the payload inherits nothing else.
pub fn cloexec_from(from: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags; no fd is closed
    // under anybody's feet.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            from,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> io::Result<()> {
    let sock = socket_dgram()?;
    // SAFETY: ifreq is plain old data, zero is a valid bit pattern for it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own and pass by
    // pointer; the union member used is ifru_flags, as the ioctls define.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn socket_dgram() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a fresh fd we take ownership of, or -1.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Makes the mount at `path` and everything below it read-only, nosuid and nodev.
pub fn make_tree_readonly(path: &Path) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const AT_RECURSIVE: libc::c_int = 0x8000;
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size` bytes from a live, properly laid out struct and
    // a NUL-terminated path that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a sealed-able anonymous file holding `data`, for passing input to a sandbox.
pub fn memfd_with(name: &str, data: &[u8]) -> io::Result<OwnedFd> {
    use std::io::Write;
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: memfd_create returns a fresh fd (or -1) that we own from here on.
    let fd = unsafe {
        let fd = libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    std::io::Seek::rewind(&mut file)?;
    // The sandbox gets a read-only view: seal so nothing can change what it reads.
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS only changes the seals of the memfd we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// Takes ownership of an fd the helper inherited by contract (3, 4, 5).
pub fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD checks the fd is open; the helper is exec'd with these numbers
    // mapped by the supervisor and nothing else in the process refers to them.
    unsafe {
        if libc::fcntl(fd, libc::F_GETFD) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Takes ownership of an fd that `recvmsg` just installed from an `SCM_RIGHTS`
/// message.
pub fn received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed this fd for the recvmsg call that returned it; no
    // other owner knows its number yet.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Closes every fd from `from` up: the sandbox helper keeps nothing it did not get by
/// contract (a terminal its parent leaked, above all).
pub fn close_from(from: u32) -> io::Result<()> {
    // SAFETY: close_range closes fds of this single-threaded process; nothing in it
    // owns an fd in that range (the helper calls this first thing, before opening any;
    // a payload returning to a zygote's interpreter after its owners let go of theirs).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether fd number `fd` is open and refers to a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty(3) only queries the fd (an ioctl); a closed fd is just "no".
    unsafe { libc::isatty(fd) == 1 }
}

/// Drops every capability from the bounding set and clears the ambient set.
fn drop_bounding_and_ambient() -> io::Result<()> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    for cap in 0..=last {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            let err = io::Error::last_os_error();
            // Capabilities this kernel does not know are fine to skip.
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err);
            }
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn capget() -> io::Result<[CapData; 2]> {
    let header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two v3 data structs into the array we own.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &header as *const CapHeader,
            data.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

fn capset(data: &[CapData; 2]) -> io::Result<()> {
    let header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: capset reads a v3 header and two data structs, both live and repr(C).
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops every capability from the bounding set and clears the inheritable set, so
/// nothing exec'd later can regain one.
pub fn drop_capabilities() -> io::Result<()> {
    drop_bounding_and_ambient()?;
    let mut data = capget()?;
    // Effective and permitted stay until setresuid to a non-root uid clears them (the
    // uid change still needs CAP_SETUID); inheritable goes now.
    for d in &mut data {
        d.inheritable = 0;
    }
    capset(&data)
}

/// CAP_KILL, from linux/capability.h.
pub const CAP_KILL: u32 = 5;

/// Keeps capability `cap` (effective and permitted) and nothing else: the bounding,
/// inheritable and ambient sets end up empty. For the sandbox's init, which only
/// signals and reaps once the payload runs.
pub fn keep_only_capability(cap: u32) -> io::Result<()> {
    if cap >= 64 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    drop_bounding_and_ambient()?;
    let mut data = [CapData::default(); 2];
    let word = &mut data[(cap / 32) as usize];
    word.effective = 1 << (cap % 32);
    word.permitted = 1 << (cap % 32);
    capset(&data)
}

/// A pidfd for process `pid` (of our pid namespace): it names that process only, even
/// after its pid is reused.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd (close-on-exec
    // always) or -1; the new fd is owned by nobody else.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0u32);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as RawFd))
    }
}

/// SIGKILL to the process of `pidfd` (nothing if it has exited).
pub fn pidfd_kill(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: pidfd_send_signal on a valid pidfd with no siginfo (NULL) and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process of `pidfd` has exited (its pidfd is readable).
pub fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Waits (async) until the process of `pidfd` has exited.
pub async fn pidfd_exit(pidfd: &OwnedFd) -> io::Result<()> {
    let own = pidfd.try_clone()?;
    // SAFETY: `own` is an OwnedFd moved into the AsyncFd: it stays open and names the
    // same file description until the AsyncFd is dropped, and its as_raw_fd never
    // changes.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(own, tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into_parts().1)?;
    fd.readable().await?.retain_ready();
    Ok(())
}
