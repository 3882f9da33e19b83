//! The payload's seccomp filter: an ALLOW list. A sandboxed program (and everything it
//! starts) may make only the syscalls listed in `syscalls.allow`, reviewed data with a
//! reason and the runtimes that need it for every group, derived from `strace -f` of
//! what python-3.11(-ml), openjdk-17, node-20 and the shell actually call. Calls that
//! are needed only in part are allowed only for some arguments ([`argument_rules`]):
//! `socket` for AF_UNIX, AF_INET, AF_INET6 and NETLINK_ROUTE, `socketpair` for
//! AF_UNIX, `clone` without namespace flags, `ioctl` and `prctl` for a few requests,
//! `mknod(at)` for FIFOs, `setsockopt` but for TCP_ULP and classic BPF filters. Anything else fails with EPERM, so programs that probe for
//! a feature degrade instead of dying. A hand-written prologue kills a foreign
//! architecture, refuses the x32 ABI with EPERM and answers `clone3` with ENOSYS
//! (glibc then falls back to `clone`, whose flags the filter can read).
//!
//! The same filter holds runtime builds (pip, javac, the class-data-sharing dump).
//! Unconditional allows cost nothing per call: the kernel caches the verdict of
//! syscalls whose outcome depends on the number alone.

use std::collections::{BTreeMap, HashMap};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unsupported architecture {0}")]
    Arch(&'static str),
    #[error("the syscall allow list: {0}")]
    List(String),
    #[error("building the seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    #[error("installing the seccomp filter")]
    Install(#[source] seccompiler::Error),
}

/// The reviewed allow list, compiled in.
const ALLOW_LIST: &str = include_str!("syscalls.allow");

/// One group of the allow list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Which runtimes need it.
    pub who: String,
    /// Why.
    pub why: String,
    pub syscalls: Vec<Allowed>,
}

/// One allowed syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub name: String,
    /// Allowed only for the arguments [`argument_rules`] accepts.
    pub checked: bool,
    /// Its line in the list.
    pub line: usize,
}

/// The allow list, parsed and checked (names known, none twice, every group with
/// its `who:` and `why:`).
pub fn allow_list() -> Result<Vec<Group>, SeccompError> {
    parse(ALLOW_LIST).map_err(|errors| SeccompError::List(errors.join("; ")))
}

/// Parses the allow list's format (see the header of `syscalls.allow`); every error
/// names its line.
fn parse(text: &str) -> Result<Vec<Group>, Vec<String>> {
    let known = known_syscalls();
    let mut groups: Vec<Group> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                errors.push(format!("line {n}: bad group name `{name}`"));
            } else if groups.iter().any(|g| g.name == name) {
                errors.push(format!("line {n}: group `{name}` twice"));
            }
            groups.push(Group {
                name: name.into(),
                who: String::new(),
                why: String::new(),
                syscalls: Vec::new(),
            });
            continue;
        }
        let Some(group) = groups.last_mut() else {
            errors.push(format!("line {n}: `{line}` before the first [group]"));
            continue;
        };
        let field = |prefix: &str| line.strip_prefix(prefix).map(str::trim);
        if let Some(text) = field("who:").or_else(|| field("why:")) {
            let target = if line.starts_with("who:") {
                &mut group.who
            } else {
                &mut group.why
            };
            if !group.syscalls.is_empty() {
                errors.push(format!(
                    "line {n}: `who:` and `why:` go before the syscalls"
                ));
            }
            if !target.is_empty() {
                target.push(' ');
            }
            target.push_str(text);
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        let checked = match (words.next(), words.next()) {
            (None, _) => false,
            (Some("?"), None) => true,
            _ => {
                errors.push(format!(
                    "line {n}: expected `name` or `name ?`, got `{line}`"
                ));
                continue;
            }
        };
        if group.who.is_empty() || group.why.is_empty() {
            errors.push(format!(
                "line {n}: group `{}` needs `who:` and `why:` before its syscalls",
                group.name
            ));
        }
        if !known.contains_key(name) {
            errors.push(format!("line {n}: unknown syscall `{name}`"));
        }
        if checked && !CHECKED.contains(&name) {
            errors.push(format!(
                "line {n}: `{name}` is marked `?` but seccomp.rs has no argument rules for it"
            ));
        }
        if let Some(first) = seen.insert(name.into(), n) {
            errors.push(format!("line {n}: `{name}` already listed on line {first}"));
        }
        group.syscalls.push(Allowed {
            name: name.into(),
            checked,
            line: n,
        });
    }
    for g in &groups {
        if g.syscalls.is_empty() {
            errors.push(format!("group `{}` lists no syscall", g.name));
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

/// Namespace flags a `clone` may not carry (`CLONE_NEWTIME` shares its bit with the
/// exit signal in `clone`; only `clone3` and `unshare` take it, both refused).
const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

/// Socket families a payload may open (any type and protocol, bar netlink).
const SOCKET_FAMILIES: &[i32] = &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];

/// `ioctl` requests a payload may make, each with who makes it (from the traces).
/// Everything else (TIOCSTI above all, which pushes input into a terminal) is EPERM.
// The request constants are `c_ulong`, which is `u64` here but not by definition.
#[allow(clippy::unnecessary_cast)]
const IOCTL_REQUESTS: &[(u64, &str)] = &[
    (
        libc::TCGETS as u64,
        "isatty/tcgetattr: glibc, CPython, the JVM, libuv, dash",
    ),
    (
        libc::TIOCGWINSZ as u64,
        "terminal size: ls, Python shutil, pip's progress",
    ),
    (
        libc::FIONREAD as u64,
        "bytes available: the JVM's InputStream.available",
    ),
    (
        libc::FIONBIO as u64,
        "non-blocking mode: libuv, CPython sockets",
    ),
    (libc::FIOCLEX as u64, "close-on-exec: libuv, CPython"),
    (
        libc::FIONCLEX as u64,
        "clear close-on-exec: libuv (peer of FIOCLEX)",
    ),
    // Read-only interface queries inside the sandbox's own network namespace: Java's
    // NetworkInterface (and glibc's if_nametoindex / if_indextoname).
    (
        libc::SIOCGIFCONF as u64,
        "interface list: Java NetworkInterface",
    ),
    (
        libc::SIOCGIFFLAGS as u64,
        "interface flags: Java NetworkInterface",
    ),
    (
        libc::SIOCGIFINDEX as u64,
        "interface index: Java, glibc if_nametoindex",
    ),
    (
        libc::SIOCGIFNAME as u64,
        "interface name: glibc if_indextoname (peer)",
    ),
    (
        libc::SIOCGIFADDR as u64,
        "interface address: Java NetworkInterface (peer)",
    ),
    (
        libc::SIOCGIFNETMASK as u64,
        "interface netmask: Java NetworkInterface",
    ),
    (
        libc::SIOCGIFBRDADDR as u64,
        "interface broadcast address: Java NetworkInterface",
    ),
    (
        libc::SIOCGIFHWADDR as u64,
        "interface MAC: Java getHardwareAddress (peer)",
    ),
    (libc::SIOCGIFMTU as u64, "interface MTU: Java getMTU (peer)"),
];

/// `prctl` options a payload may use, each with who uses it. Not PR_SET_SECCOMP,
/// PR_SET_MM, PR_SET_DUMPABLE, PR_SET_PTRACER, PR_SET_CHILD_SUBREAPER, ...
const PRCTL_OPTIONS: &[(i32, &str)] = &[
    (
        libc::PR_SET_NAME,
        "thread names: the JVM, glibc pthread_setname_np",
    ),
    (libc::PR_GET_NAME, "thread names: pthread_getname_np (peer)"),
    (
        libc::PR_CAPBSET_READ,
        "the JVM (javac, the CDS dump) reading the bounding set",
    ),
    (
        libc::PR_SET_PDEATHSIG,
        "parent-death signal: process libraries (peer)",
    ),
    (libc::PR_GET_PDEATHSIG, "parent-death signal (peer)"),
    #[cfg(target_arch = "aarch64")]
    (libc::PR_SVE_GET_VL, "the aarch64 JVM's SVE vector length"),
    #[cfg(target_arch = "aarch64")]
    (libc::PR_SVE_SET_VL, "the aarch64 JVM's SVE vector length"),
];

/// Socket options no runtime sets and that only widen the kernel surface: a TCP
/// upper-layer protocol (kTLS and the like: attachable without privilege once the
/// module is loaded) and classic BPF socket filters. Every other option is allowed.
const SOL_SOCKET: u64 = libc::SOL_SOCKET as u64;
const SOL_TCP: u64 = libc::SOL_TCP as u64;
const TCP_ULP: u64 = libc::TCP_ULP as u64;
/// From the kernel's asm-generic/socket.h (libc has no Linux definitions).
const SO_ATTACH_FILTER: u64 = 26;
const SO_ATTACH_REUSEPORT_CBPF: u64 = 51;

/// The syscalls [`argument_rules`] has rules for; each must be marked `?` in the list.
const CHECKED: &[&str] = &[
    "clone",
    "ioctl",
    "mknod",
    "mknodat",
    "prctl",
    "setsockopt",
    "socket",
    "socketpair",
];

/// The rules under which a `?`-marked syscall is allowed (any one suffices).
fn argument_rules(name: &str) -> Result<Vec<SeccompRule>, SeccompError> {
    // Most of these arguments are C ints: the kernel reads their low 32 bits only, so
    // the checks compare those (Dword) and ignore whatever the upper half holds.
    let cond = |arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, len, op, value).map_err(SeccompError::Build)
    };
    let int_eq = |arg: u8, value: u64| cond(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value);
    let rule = |conds: Vec<SeccompCondition>| SeccompRule::new(conds).map_err(SeccompError::Build);
    match name {
        "socket" => {
            let mut rules = SOCKET_FAMILIES
                .iter()
                .map(|&f| rule(vec![int_eq(0, f as u64)?]))
                .collect::<Result<Vec<_>, _>>()?;
            // Netlink only for NETLINK_ROUTE, which glibc's getaddrinfo and getifaddrs
            // (and so Python's if_nameindex, libuv's interface list) use.
            rules.push(rule(vec![
                int_eq(0, libc::AF_NETLINK as u64)?,
                int_eq(2, libc::NETLINK_ROUTE as u64)?,
            ])?);
            Ok(rules)
        }
        // The kernel pairs AF_UNIX sockets only.
        "socketpair" => Ok(vec![rule(vec![int_eq(0, libc::AF_UNIX as u64)?])?]),
        "clone" => {
            // flags is an unsigned long: all 64 bits are compared.
            let mask = NAMESPACE_FLAGS.iter().fold(0u64, |m, &f| m | f as u64);
            Ok(vec![rule(vec![cond(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(mask),
                0,
            )?])?])
        }
        "setsockopt" => {
            // Allowed unless (level, option) is one of the refused pairs, spelled as
            // alternatives: another level; TCP but not TCP_ULP; socket level but not
            // a classic BPF filter.
            let int_ne =
                |arg: u8, value: u64| cond(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, value);
            Ok(vec![
                rule(vec![int_ne(1, SOL_SOCKET)?, int_ne(1, SOL_TCP)?])?,
                rule(vec![int_eq(1, SOL_TCP)?, int_ne(2, TCP_ULP)?])?,
                rule(vec![
                    int_eq(1, SOL_SOCKET)?,
                    int_ne(2, SO_ATTACH_FILTER)?,
                    int_ne(2, SO_ATTACH_REUSEPORT_CBPF)?,
                ])?,
            ])
        }
        "ioctl" => IOCTL_REQUESTS
            .iter()
            .map(|&(request, _)| rule(vec![int_eq(1, request)?]))
            .collect(),
        "prctl" => PRCTL_OPTIONS
            .iter()
            .map(|&(option, _)| rule(vec![int_eq(0, option as u64)?]))
            .collect(),
        "mknod" | "mknodat" => {
            let mode_arg = if name == "mknod" { 1 } else { 2 };
            Ok(vec![rule(vec![cond(
                mode_arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(libc::S_IFMT as u64),
                libc::S_IFIFO as u64,
            )?])?])
        }
        other => Err(SeccompError::List(format!(
            "`{other}` is marked `?` but has no argument rules"
        ))),
    }
}

/// Compiles the filter for the running architecture.
pub fn payload_filter() -> Result<BpfProgram, SeccompError> {
    let arch = std::env::consts::ARCH;
    let target = arch.try_into().map_err(|_| SeccompError::Arch(arch))?;
    let known = known_syscalls();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for allowed in allow_list()?.iter().flat_map(|g| &g.syscalls) {
        // A name this architecture lacks (x86_64's legacy calls) is skipped.
        let Some(&Some(nr)) = known.get(allowed.name.as_str()) else {
            continue;
        };
        let syscall_rules = if allowed.checked {
            argument_rules(&allowed.name)?
        } else {
            // No rule: allowed whatever the arguments.
            Vec::new()
        };
        rules.insert(nr, syscall_rules);
    }

    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        target,
    )
    .map_err(SeccompError::Build)?;
    let mut program: BpfProgram = filter.try_into().map_err(SeccompError::Build)?;

    // clone3 passes its flags in memory a filter cannot read: answer ENOSYS so libc
    // falls back to clone(2), whose flags the rules above do check.
    let mut prefix = deny_clone3_and_foreign_abis();
    prefix.append(&mut program);
    Ok(prefix)
}

/// Installs `program` on the calling thread; the last step before exec.
pub fn install(program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(SeccompError::Install)
}

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// Syscall numbers with this bit set are the x32 ABI's.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Hand-written prologue: kill on a foreign architecture, EPERM for the x32 ABI
/// (syscall numbers with bit 30 set), ENOSYS for clone3.
fn deny_clone3_and_foreign_abis() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const OFF_NR: u32 = 0;
    const OFF_ARCH: u32 = 4;
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
        jump(JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32),
    ]
}

/// Calls that must never be on the list, whatever a future trace shows: they reach
/// beyond the sandbox (namespaces, mounts, other processes' memory, the kernel's
/// keyrings, modules, clocks, BPF, perf, io_uring, handles to host files) or widen
/// the kernel surface for nothing (modify_ldt, fanotify, userfaultfd). The unit tests
/// check the list against it, and against the prefixes and suffixes below.
pub const NEVER_ALLOWED: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "modify_ldt",
    "fanotify_init",
    "fanotify_mark",
    "open_by_handle_at",
    "name_to_handle_at",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "vhangup",
    "lookup_dcookie",
    "nfsservctl",
    "iopl",
    "ioperm",
    "uselib",
    "_sysctl",
    "sysfs",
    "ustat",
    "personality",
    "seccomp",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "setgroups",
    "capset",
    "sethostname",
    "setdomainname",
    "memfd_secret",
    "migrate_pages",
    "move_pages",
    "mbind",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "vmsplice",
    "clone3",
];

/// Name prefixes and suffixes no listed syscall may have.
pub const NEVER_PREFIXES: &[&str] = &["io_uring_", "kexec_", "fanotify_", "landlock_"];
pub const NEVER_SUFFIXES: &[&str] = &["_module", "_key", "_handle_at"];

/// Every syscall name the list may use, with its number here (`None`: this
/// architecture lacks it). From libc's tables for x86_64 and aarch64.
fn known_syscalls() -> HashMap<&'static str, Option<i64>> {
    let mut known: HashMap<&'static str, Option<i64>> = COMMON_SYSCALLS
        .iter()
        .map(|&(name, nr)| (strip_sys(name), Some(nr)))
        .collect();
    for &name in X86_64_ONLY_NAMES {
        known.insert(strip_sys(name), None);
    }
    #[cfg(target_arch = "x86_64")]
    for &(name, nr) in X86_64_ONLY_SYSCALLS {
        known.insert(strip_sys(name), Some(nr));
    }
    known
}

fn strip_sys(name: &'static str) -> &'static str {
    name.strip_prefix("SYS_").unwrap_or(name)
}

macro_rules! common_syscalls {
    ($($name:ident)*) => {
        /// Syscalls both x86_64 and aarch64 have.
        const COMMON_SYSCALLS: &[(&str, i64)] = &[$((stringify!($name), libc::$name)),*];
    };
}

macro_rules! x86_64_only_syscalls {
    ($($name:ident)*) => {
        /// Syscalls only x86_64 has (legacy forms the generic table dropped).
        const X86_64_ONLY_NAMES: &[&str] = &[$(stringify!($name)),*];
        #[cfg(target_arch = "x86_64")]
        const X86_64_ONLY_SYSCALLS: &[(&str, i64)] = &[$((stringify!($name), libc::$name)),*];
    };
}

common_syscalls! {
    SYS_accept SYS_accept4 SYS_acct SYS_add_key SYS_adjtimex SYS_bind SYS_bpf SYS_brk
    SYS_capget SYS_capset SYS_chdir SYS_chroot SYS_clock_adjtime SYS_clock_getres
    SYS_clock_gettime SYS_clock_nanosleep SYS_clock_settime SYS_clone SYS_clone3
    SYS_close SYS_close_range SYS_connect SYS_copy_file_range SYS_delete_module SYS_dup
    SYS_dup3 SYS_epoll_create1 SYS_epoll_ctl SYS_epoll_pwait SYS_epoll_pwait2
    SYS_eventfd2 SYS_execve SYS_execveat SYS_exit SYS_exit_group SYS_faccessat
    SYS_faccessat2 SYS_fadvise64 SYS_fallocate SYS_fanotify_init SYS_fanotify_mark
    SYS_fchdir SYS_fchmod SYS_fchmodat SYS_fchown SYS_fchownat SYS_fcntl SYS_fdatasync
    SYS_fgetxattr SYS_finit_module SYS_flistxattr SYS_flock SYS_fremovexattr
    SYS_fsconfig SYS_fsetxattr SYS_fsmount SYS_fsopen SYS_fspick SYS_fstat SYS_fstatfs
    SYS_fsync SYS_ftruncate SYS_futex SYS_futex_waitv SYS_get_mempolicy
    SYS_get_robust_list SYS_getcpu SYS_getcwd SYS_getdents64 SYS_getegid SYS_geteuid
    SYS_getgid SYS_getgroups SYS_getitimer SYS_getpeername SYS_getpgid SYS_getpid
    SYS_getppid SYS_getpriority SYS_getrandom SYS_getresgid SYS_getresuid SYS_getrusage
    SYS_getsid SYS_getsockname SYS_getsockopt SYS_gettid SYS_gettimeofday SYS_getuid
    SYS_getxattr SYS_init_module SYS_inotify_add_watch SYS_inotify_init1
    SYS_inotify_rm_watch SYS_io_cancel SYS_io_destroy SYS_io_getevents SYS_io_setup
    SYS_io_submit SYS_io_uring_enter SYS_io_uring_register SYS_io_uring_setup SYS_ioctl
    SYS_ioprio_get SYS_ioprio_set SYS_kcmp SYS_kexec_file_load SYS_kexec_load SYS_keyctl
    SYS_kill SYS_landlock_add_rule SYS_landlock_create_ruleset
    SYS_landlock_restrict_self SYS_lgetxattr SYS_linkat SYS_listen SYS_listxattr
    SYS_llistxattr SYS_lookup_dcookie SYS_lremovexattr SYS_lseek SYS_lsetxattr
    SYS_madvise SYS_mbind SYS_membarrier SYS_memfd_create SYS_memfd_secret
    SYS_migrate_pages SYS_mincore SYS_mkdirat SYS_mknodat SYS_mlock SYS_mlock2
    SYS_mlockall SYS_mmap SYS_mount SYS_mount_setattr SYS_move_mount SYS_move_pages
    SYS_mprotect SYS_mq_getsetattr SYS_mq_notify SYS_mq_open SYS_mq_timedreceive
    SYS_mq_timedsend SYS_mq_unlink SYS_mremap SYS_mseal SYS_msgctl SYS_msgget SYS_msgrcv
    SYS_msgsnd SYS_msync SYS_munlock SYS_munlockall SYS_munmap SYS_name_to_handle_at
    SYS_nanosleep SYS_newfstatat SYS_nfsservctl SYS_open_by_handle_at SYS_open_tree
    SYS_openat SYS_openat2 SYS_perf_event_open SYS_personality SYS_pidfd_getfd
    SYS_pidfd_open SYS_pidfd_send_signal SYS_pipe2 SYS_pivot_root SYS_pkey_alloc
    SYS_pkey_free SYS_pkey_mprotect SYS_ppoll SYS_prctl SYS_pread64 SYS_preadv
    SYS_preadv2 SYS_prlimit64 SYS_process_madvise SYS_process_mrelease
    SYS_process_vm_readv SYS_process_vm_writev SYS_pselect6 SYS_ptrace SYS_pwrite64
    SYS_pwritev SYS_pwritev2 SYS_quotactl SYS_quotactl_fd SYS_read SYS_readahead
    SYS_readlinkat SYS_readv SYS_reboot SYS_recvfrom SYS_recvmmsg SYS_recvmsg
    SYS_remap_file_pages SYS_removexattr SYS_renameat2 SYS_request_key
    SYS_restart_syscall SYS_rseq SYS_rt_sigaction SYS_rt_sigpending SYS_rt_sigprocmask
    SYS_rt_sigqueueinfo SYS_rt_sigreturn SYS_rt_sigsuspend SYS_rt_sigtimedwait
    SYS_rt_tgsigqueueinfo SYS_sched_get_priority_max SYS_sched_get_priority_min
    SYS_sched_getaffinity SYS_sched_getattr SYS_sched_getparam SYS_sched_getscheduler
    SYS_sched_rr_get_interval SYS_sched_setaffinity SYS_sched_setattr SYS_sched_setparam
    SYS_sched_setscheduler SYS_sched_yield SYS_seccomp SYS_semctl SYS_semget SYS_semop
    SYS_semtimedop SYS_sendfile SYS_sendmmsg SYS_sendmsg SYS_sendto SYS_set_mempolicy
    SYS_set_mempolicy_home_node SYS_set_robust_list SYS_set_tid_address
    SYS_setdomainname SYS_setfsgid SYS_setfsuid SYS_setgid SYS_setgroups SYS_sethostname
    SYS_setitimer SYS_setns SYS_setpgid SYS_setpriority SYS_setregid SYS_setresgid
    SYS_setresuid SYS_setreuid SYS_setsid SYS_setsockopt SYS_settimeofday SYS_setuid
    SYS_setxattr SYS_shmat SYS_shmctl SYS_shmdt SYS_shmget SYS_shutdown SYS_sigaltstack
    SYS_signalfd4 SYS_socket SYS_socketpair SYS_splice SYS_statfs SYS_statx SYS_swapoff
    SYS_swapon SYS_symlinkat SYS_sync SYS_syncfs SYS_sysinfo SYS_syslog SYS_tee
    SYS_tgkill SYS_timer_create SYS_timer_delete SYS_timer_getoverrun SYS_timer_gettime
    SYS_timer_settime SYS_timerfd_create SYS_timerfd_gettime SYS_timerfd_settime
    SYS_times SYS_tkill SYS_truncate SYS_umask SYS_umount2 SYS_uname SYS_unlinkat
    SYS_unshare SYS_userfaultfd SYS_utimensat SYS_vhangup SYS_vmsplice SYS_wait4
    SYS_waitid SYS_write SYS_writev
}

x86_64_only_syscalls! {
    SYS__sysctl SYS_access SYS_afs_syscall SYS_alarm SYS_arch_prctl SYS_chmod SYS_chown
    SYS_creat SYS_dup2 SYS_epoll_create SYS_epoll_ctl_old SYS_epoll_wait
    SYS_epoll_wait_old SYS_eventfd SYS_fchmodat2 SYS_fork SYS_futimesat
    SYS_get_thread_area SYS_getdents SYS_getpgrp SYS_getpmsg SYS_getrlimit
    SYS_inotify_init SYS_ioperm SYS_iopl SYS_lchown SYS_link SYS_lstat SYS_mkdir
    SYS_mknod SYS_modify_ldt SYS_open SYS_pause SYS_pipe SYS_poll SYS_putpmsg
    SYS_readlink SYS_rename SYS_renameat SYS_rmdir SYS_security SYS_select
    SYS_set_thread_area SYS_setrlimit SYS_signalfd SYS_stat SYS_symlink
    SYS_sync_file_range SYS_sysfs SYS_time SYS_tuxcall SYS_unlink SYS_uselib SYS_ustat
    SYS_utime SYS_utimes SYS_vfork SYS_vserver
}

#[cfg(test)]
mod tests {
    use super::*;

    const RET_ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

    /// Runs a classic BPF seccomp program the way the kernel does, on a
    /// `struct seccomp_data` for (`arch`, `nr`, `args`).
    fn verdict_for(program: &BpfProgram, arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let ins = &program[pc];
            pc += 1;
            let k = ins.k;
            match ins.code {
                0x20 => {
                    // LD | W | ABS
                    let k = k as usize;
                    a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                0x54 => a &= k,           // ALU | AND | K
                0x05 => pc += k as usize, // JMP | JA
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match ins.code {
                        0x15 => a == k,
                        0x25 => a > k,
                        0x35 => a >= k,
                        _ => a & k != 0,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                0x06 => return k, // RET | K
                code => panic!("unexpected BPF instruction {code:#x} at {}", pc - 1),
            }
        }
    }

    fn verdict(nr: i64, args: [u64; 6]) -> u32 {
        let program = payload_filter().expect("filter");
        verdict_for(&program, AUDIT_ARCH, nr, args)
    }

    fn args(a: &[u64]) -> [u64; 6] {
        let mut all = [0; 6];
        all[..a.len()].copy_from_slice(a);
        all
    }

    fn listed() -> Vec<String> {
        allow_list()
            .expect("the allow list parses")
            .into_iter()
            .flat_map(|g| g.syscalls)
            .map(|s| s.name)
            .collect()
    }

    #[test]
    fn the_list_parses_with_a_reason_for_every_group() {
        let groups = allow_list().unwrap_or_else(|e| panic!("{e}"));
        assert!(groups.len() >= 10, "{groups:#?}");
        for g in &groups {
            assert!(g.who.len() > 10 && g.why.len() > 20, "{g:#?}");
        }
        let n = listed().len();
        assert!((120..260).contains(&n), "{n} syscalls listed");
    }

    #[test]
    fn duplicates_unknown_names_and_groups_without_reasons_are_refused() {
        let dup = "[a]\nwho: x\nwhy: y\nread\n[b]\nwho: x\nwhy: y\nwrite\nread\n";
        let errors = parse(dup).unwrap_err();
        assert_eq!(errors, ["line 9: `read` already listed on line 4"]);
        let unknown = "[a]\nwho: x\nwhy: y\nread\nsocket_alg\nopen_at\n";
        let errors = parse(unknown).unwrap_err();
        assert_eq!(
            errors,
            [
                "line 5: unknown syscall `socket_alg`",
                "line 6: unknown syscall `open_at`"
            ]
        );
        let errors = parse("[a]\nwhy: y\nread\n[b]\nwho: x\nwhy: y\n").unwrap_err();
        assert_eq!(
            errors,
            [
                "line 3: group `a` needs `who:` and `why:` before its syscalls",
                "group `b` lists no syscall"
            ]
        );
        assert!(parse("read\n").is_err());
        assert!(parse("[a]\nwho: x\nwhy: y\nread !\n").is_err());
        assert_eq!(
            parse("[a]\nwho: x\nwhy: y\nread ?\n").unwrap_err(),
            ["line 4: `read` is marked `?` but seccomp.rs has no argument rules for it"]
        );
        // A legacy name some architecture lacks is known everywhere.
        assert!(parse("[a]\nwho: x\nwhy: y\nopen\nopenat\n").is_ok());
    }

    #[test]
    fn the_dangerous_calls_are_not_listed() {
        let known = known_syscalls();
        let listed = listed();
        for name in NEVER_ALLOWED {
            assert!(known.contains_key(name), "`{name}` is not a syscall name");
            assert!(
                !listed.iter().any(|l| l == name),
                "`{name}` is on the allow list"
            );
        }
        for name in &listed {
            for p in NEVER_PREFIXES {
                assert!(!name.starts_with(p), "`{name}` is on the allow list");
            }
            for s in NEVER_SUFFIXES {
                assert!(!name.ends_with(s), "`{name}` is on the allow list");
            }
        }
    }

    #[test]
    fn argument_checks_and_question_marks_agree() {
        let marked: Vec<String> = allow_list()
            .unwrap()
            .into_iter()
            .flat_map(|g| g.syscalls)
            .filter(|s| s.checked)
            .map(|s| s.name)
            .collect();
        let mut marked_sorted = marked.clone();
        marked_sorted.sort();
        assert_eq!(marked_sorted, CHECKED);
        for name in CHECKED {
            assert!(!argument_rules(name).unwrap().is_empty(), "{name}");
        }
        assert!(argument_rules("read").is_err());
    }

    #[test]
    fn the_filter_allows_the_list_and_nothing_else() {
        let known = known_syscalls();
        let listed = listed();
        for (name, nr) in &known {
            let Some(nr) = *nr else { continue };
            let v = verdict(nr, [0; 6]);
            if *name == "clone3" {
                assert_eq!(v, ENOSYS, "clone3");
            } else if listed.iter().any(|l| l == name) {
                // Checked calls with all-zero arguments: allowed unless zero is refused.
                let zero_refused = ["socket", "socketpair", "ioctl", "prctl", "mknod", "mknodat"];
                let want = if zero_refused.contains(name) {
                    EPERM
                } else {
                    RET_ALLOW
                };
                assert_eq!(v, want, "{name}");
            } else {
                assert_eq!(v, EPERM, "{name} is not listed but not refused");
            }
        }
        // Numbers no table knows, and the x32 ABI.
        assert_eq!(verdict(1000, [0; 6]), EPERM);
        assert_eq!(verdict(0x4000_0000 | libc::SYS_getpid, [0; 6]), EPERM);
        let program = payload_filter().unwrap();
        assert_eq!(
            verdict_for(&program, 0x4000_0003, libc::SYS_getpid, [0; 6]),
            RET_KILL_PROCESS,
            "a foreign architecture"
        );
    }

    #[test]
    fn sockets_only_of_the_listed_families() {
        let socket = |family: u64, protocol: u64| {
            verdict(
                libc::SYS_socket,
                args(&[family, libc::SOCK_RAW as u64, protocol]),
            )
        };
        for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
            assert_eq!(socket(family as u64, 0), RET_ALLOW, "{family}");
        }
        assert_eq!(
            socket(libc::AF_NETLINK as u64, libc::NETLINK_ROUTE as u64),
            RET_ALLOW
        );
        for family in [
            libc::AF_ALG,
            libc::AF_PACKET,
            libc::AF_VSOCK,
            libc::AF_KEY,
            libc::AF_BLUETOOTH,
            libc::AF_TIPC,
            libc::AF_RDS,
            libc::AF_XDP,
            libc::AF_CAN,
        ] {
            assert_eq!(socket(family as u64, 0), EPERM, "{family}");
        }
        for protocol in [
            libc::NETLINK_KOBJECT_UEVENT,
            libc::NETLINK_AUDIT,
            libc::NETLINK_GENERIC,
            libc::NETLINK_SOCK_DIAG,
            libc::NETLINK_NETFILTER,
        ] {
            assert_eq!(
                socket(libc::AF_NETLINK as u64, protocol as u64),
                EPERM,
                "{protocol}"
            );
        }
        // The kernel reads an int: garbage in the upper half changes nothing.
        assert_eq!(socket((1 << 32) | libc::AF_ALG as u64, 0), EPERM);
        assert_eq!(socket((1 << 32) | libc::AF_INET as u64, 0), RET_ALLOW);
        assert_eq!(
            socket(
                libc::AF_NETLINK as u64,
                (1 << 32) | libc::NETLINK_AUDIT as u64
            ),
            EPERM
        );
        let pair = |family: i32| verdict(libc::SYS_socketpair, args(&[family as u64, 1, 0]));
        assert_eq!(pair(libc::AF_UNIX), RET_ALLOW);
        assert_eq!(pair(libc::AF_INET), EPERM);
        assert_eq!(pair(libc::AF_ALG), EPERM);
    }

    #[test]
    fn clone_without_namespaces_ioctl_prctl_and_mknod_in_part() {
        let clone = |flags: i32| verdict(libc::SYS_clone, args(&[flags as u64]));
        let thread = libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID;
        assert_eq!(clone(thread), RET_ALLOW);
        assert_eq!(clone(libc::SIGCHLD), RET_ALLOW);
        assert_eq!(
            clone(libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD),
            RET_ALLOW
        );
        for &ns in NAMESPACE_FLAGS {
            assert_eq!(clone(ns | libc::SIGCHLD), EPERM, "{ns:#x}");
        }
        assert_eq!(verdict(libc::SYS_clone3, [0; 6]), ENOSYS);

        let ioctl = |request: libc::c_ulong| verdict(libc::SYS_ioctl, args(&[1, request, 0]));
        for &(request, why) in IOCTL_REQUESTS {
            assert_eq!(ioctl(request), RET_ALLOW, "{why}");
        }
        assert_eq!(ioctl(libc::TIOCSTI), EPERM);
        assert_eq!(ioctl((1 << 32) | libc::TIOCSTI), EPERM);
        assert_eq!(ioctl((1 << 32) | libc::TCGETS), RET_ALLOW);
        for request in [
            libc::TIOCSETD,
            libc::TIOCLINUX,
            libc::TIOCSCTTY,
            libc::TCSETS,
        ] {
            assert_eq!(ioctl(request), EPERM, "{request:#x}");
        }

        let prctl = |option: i32| verdict(libc::SYS_prctl, args(&[option as u64, 0]));
        for &(option, why) in PRCTL_OPTIONS {
            assert_eq!(prctl(option), RET_ALLOW, "{why}");
        }
        for option in [
            libc::PR_SET_SECCOMP,
            libc::PR_SET_MM,
            libc::PR_SET_DUMPABLE,
            libc::PR_SET_PTRACER,
            libc::PR_SET_CHILD_SUBREAPER,
            libc::PR_CAP_AMBIENT,
        ] {
            assert_eq!(prctl(option), EPERM, "{option}");
        }

        let setsockopt =
            |level: u64, option: u64| verdict(libc::SYS_setsockopt, args(&[3, level, option]));
        for (level, option) in [
            (SOL_SOCKET, libc::SO_REUSEADDR as u64),
            (SOL_SOCKET, libc::SO_KEEPALIVE as u64),
            (SOL_TCP, libc::TCP_NODELAY as u64),
            (libc::SOL_IPV6 as u64, libc::IPV6_V6ONLY as u64),
            (libc::SOL_IP as u64, TCP_ULP),
        ] {
            assert_eq!(setsockopt(level, option), RET_ALLOW, "{level} {option}");
        }
        for (level, option) in [
            (SOL_TCP, TCP_ULP),
            (SOL_SOCKET, SO_ATTACH_FILTER),
            (SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF),
            ((1 << 32) | SOL_TCP, TCP_ULP),
        ] {
            assert_eq!(setsockopt(level, option), EPERM, "{level} {option}");
        }

        let mknodat = |mode: u32| verdict(libc::SYS_mknodat, args(&[0, 0, mode as u64, 0]));
        assert_eq!(mknodat(libc::S_IFIFO | 0o666), RET_ALLOW);
        for kind in [libc::S_IFCHR, libc::S_IFBLK, libc::S_IFREG, libc::S_IFSOCK] {
            assert_eq!(mknodat(kind | 0o666), EPERM, "{kind:o}");
        }
    }
}
