//! One cgroup per sandbox, on cgroup v1 or v2 (detected at start-up), created under
//! the service's own cgroup so that nothing outside our subtree is ever written.
//!
//! Limits and membership go through cgroups-rs; usage and the few v2 files it does
//! not model (`memory.peak`, `memory.events`, `cgroup.kill`) are read and written
//! here against a root path, so the v2 logic is testable against a temp dir.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::hierarchies::{self, V1, V2};
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Controllers, Hierarchy, MaxValue, Subsystem};
use cgroups_rs::CgroupPid;

/// Name of the subtree the service owns inside its own cgroup.
pub const SUBTREE: &str = "jsheets-runtime";
/// v2: where the service's own processes move so its cgroup may delegate controllers.
const SERVICE_LEAF: &str = "service";
const V2_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cgroup v1 controller {0} is not mounted")]
    V1Missing(&'static str),
    #[error("cgroup v2 controller {0} cannot be delegated to {1}")]
    V2Controller(String, PathBuf),
    #[error("{op} failed")]
    Cgroups {
        op: &'static str,
        source: cgroups_rs::fs::error::Error,
    },
    #[error("cgroup {0} still has processes after being killed")]
    NotEmpty(PathBuf),
    #[error("cannot find the service's own cgroup in /proc/self/cgroup")]
    OwnCgroup,
}

type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// Which cgroup hierarchy the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Resource limits written to a sandbox's cgroup.
#[derive(Debug, Clone, Default)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    /// `pids.max`: every task in the cgroup, the sandbox's helper and init included.
    pub max_processes: u64,
    /// CPU bandwidth in millicores (1000 = one core); 0 leaves it unlimited.
    pub cpu_millis: u64,
    /// Relative CPU weight (v1 shares); 0 keeps the default.
    pub cpu_shares: u64,
}

/// Usage read back from a sandbox's cgroup before it is removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_time: Duration,
    pub peak_memory: u64,
    pub oom_kills: u64,
    pub pids_limit_hits: u64,
}

/// The v1 hierarchies a sandbox joins: only the controllers it uses. Each extra
/// hierarchy costs a mkdir, a migration and an rmdir per sandbox. Built once, as
/// cgroups-rs would otherwise parse /proc/self/mountinfo for every sandbox.
#[derive(Debug, Clone)]
struct SelectedV1 {
    inner: V1,
    subsystems: Vec<Subsystem>,
}

impl SelectedV1 {
    fn new(cpuset: bool) -> Self {
        let inner = V1::new();
        let wanted: &[&str] = if cpuset {
            &["memory", "pids", "cpu", "cpuacct", "freezer", "cpuset"]
        } else {
            &["memory", "pids", "cpu", "cpuacct", "freezer"]
        };
        let subsystems = inner
            .subsystems()
            .into_iter()
            .filter(|s| wanted.contains(&s.controller_name().as_str()))
            .collect();
        SelectedV1 { inner, subsystems }
    }
}

impl Hierarchy for SelectedV1 {
    fn subsystems(&self) -> Vec<Subsystem> {
        self.subsystems.clone()
    }

    fn root(&self) -> PathBuf {
        self.inner.root()
    }

    fn root_control_group(&self) -> Cgroup {
        self.inner.root_control_group()
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        self.inner.parent_control_group(path)
    }

    fn v2(&self) -> bool {
        false
    }
}

/// The service's subtree: creates, limits and removes sandbox cgroups.
#[derive(Debug)]
pub struct Manager {
    version: Version,
    /// v1: our own path per controller; v2: unused.
    relative: HashMap<String, String>,
    /// Absolute directory of each controller's subtree (v2: one entry, "unified").
    dirs: HashMap<&'static str, PathBuf>,
    cpuset: Option<String>,
    v1: Option<SelectedV1>,
}

impl Manager {
    /// Detects the hierarchy, prepares our subtree and removes sandboxes a previous
    /// run of the service left behind.
    pub fn start(cpuset: Option<String>) -> Result<Self> {
        let manager = if hierarchies::is_cgroup2_unified_mode() {
            let own = own_v2_path(&fs::read_to_string("/proc/self/cgroup").map_err(|source| {
                CgroupError::Read {
                    path: "/proc/self/cgroup".into(),
                    source,
                }
            })?)
            .ok_or(CgroupError::OwnCgroup)?;
            let root = PathBuf::from(hierarchies::UNIFIED_MOUNTPOINT);
            let dir = prepare_v2_subtree(&root, &own, std::process::id())?;
            Manager {
                version: Version::V2,
                relative: HashMap::new(),
                dirs: HashMap::from([("unified", dir)]),
                cpuset,
                v1: None,
            }
        } else {
            let relative =
                cgroups_rs::fs::cgroup::get_cgroups_relative_paths().map_err(|source| {
                    CgroupError::Cgroups {
                        op: "reading /proc/self/cgroup",
                        source,
                    }
                })?;
            let v1 = V1::new();
            let mut dirs = HashMap::new();
            for (name, controller) in [
                ("memory", Controllers::Mem),
                ("cpu", Controllers::Cpu),
                ("cpuacct", Controllers::CpuAcct),
                ("pids", Controllers::Pids),
                ("freezer", Controllers::Freezer),
                ("cpuset", Controllers::CpuSet),
            ] {
                if name == "cpuset" && cpuset.is_none() {
                    continue;
                }
                let (mount, root) = v1
                    .get_mount_point(controller)
                    .ok_or(CgroupError::V1Missing(name))?;
                let own = relative.get(name).map(String::as_str).unwrap_or("/");
                let own = own.strip_prefix(root.to_str().unwrap_or("")).unwrap_or(own);
                let dir = mount.join(own.trim_start_matches('/')).join(SUBTREE);
                fs::create_dir_all(&dir).map_err(|source| CgroupError::Write {
                    path: dir.clone(),
                    value: "mkdir".into(),
                    source,
                })?;
                dirs.insert(name, dir);
            }
            let selected = SelectedV1::new(cpuset.is_some());
            Manager {
                version: Version::V1,
                relative,
                dirs,
                cpuset,
                v1: Some(selected),
            }
        };
        manager.sweep();
        Ok(manager)
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Creates the cgroup of sandbox `id` with `limits` applied.
    pub fn create(&self, id: &str, limits: &CgroupLimits) -> Result<SandboxCgroup> {
        let path = format!("{SUBTREE}/{id}");
        let cg = match self.version {
            Version::V2 => {
                let own = self.dirs["unified"]
                    .strip_prefix(hierarchies::UNIFIED_MOUNTPOINT)
                    .unwrap_or(Path::new(""))
                    .join(id);
                let controllers = V2_CONTROLLERS.iter().map(|s| s.to_string()).collect();
                Cgroup::new_with_specified_controllers(
                    Box::new(V2::new()),
                    own.to_string_lossy().trim_start_matches('/'),
                    Some(controllers),
                )
            }
            Version::V1 => Cgroup::new_with_relative_paths(
                Box::new(
                    self.v1
                        .clone()
                        .unwrap_or_else(|| SelectedV1::new(self.cpuset.is_some())),
                ),
                &path,
                self.relative.clone(),
            ),
        }
        .map_err(|source| CgroupError::Cgroups {
            op: "creating the sandbox cgroup",
            source,
        })?;
        let sandbox = SandboxCgroup {
            cg,
            version: self.version,
            dirs: self.dirs.iter().map(|(k, v)| (*k, v.join(id))).collect(),
            removed: false,
            uid: None,
        };
        sandbox.setup_cpuset(self.cpuset.as_deref())?;
        sandbox.apply_limits(limits)?;
        Ok(sandbox)
    }

    /// Where sandbox `id`'s helper is once added to its cgroup, as `/proc/self/cgroup`
    /// shows it (before any cgroup namespace): per hierarchy, one controller of it ("" for
    /// v2) and the path.
    pub fn placement(&self, id: &str) -> Vec<(String, String)> {
        match self.version {
            Version::V2 => {
                let own = self.dirs["unified"]
                    .strip_prefix(hierarchies::UNIFIED_MOUNTPOINT)
                    .unwrap_or(Path::new(""))
                    .join(id);
                vec![(
                    String::new(),
                    format!("/{}", own.to_string_lossy().trim_start_matches('/')),
                )]
            }
            Version::V1 => {
                let mut names: Vec<&str> = self.dirs.keys().copied().collect();
                names.sort_unstable();
                names
                    .into_iter()
                    .map(|name| {
                        let own = self.relative.get(name).map(String::as_str).unwrap_or("/");
                        let path = format!("{}/{SUBTREE}/{id}", own.trim_end_matches('/'));
                        (name.to_string(), path)
                    })
                    .collect()
            }
        }
    }

    /// Number of sandbox cgroups this process has in the subtree right now.
    pub fn live_count(&self) -> usize {
        let key = if self.version == Version::V2 {
            "unified"
        } else {
            "memory"
        };
        let prefix = format!("sb-{}-", std::process::id());
        std::fs::read_dir(&self.dirs[key])
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Kills and removes every sandbox cgroup in our subtree (left by a crashed run).
    fn sweep(&self) {
        let Some(dir) = self.dirs.get(if self.version == Version::V2 {
            "unified"
        } else {
            "memory"
        }) else {
            return;
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == SERVICE_LEAF || !entry.path().is_dir() || owner_alive(&name) {
                continue;
            }
            tracing::warn!(cgroup = %name, "removing a sandbox cgroup left by an earlier run");
            if let Ok(mut cg) = self.create(&name, &CgroupLimits::default()) {
                let _ = cg.destroy();
            }
        }
    }
}

/// Sandbox cgroups are named `sb-<service pid>-<n>`: several services (or test
/// processes) may share the subtree, and each leaves the others' sandboxes alone.
fn owner_alive(name: &str) -> bool {
    let pid = name
        .strip_prefix("sb-")
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) => pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

/// The cgroup of one sandbox. Dropping it kills whatever runs in it and removes it.
#[derive(Debug)]
pub struct SandboxCgroup {
    cg: Cgroup,
    version: Version,
    dirs: HashMap<&'static str, PathBuf>,
    removed: bool,
    /// The sandbox's uid, given back once the cgroup is gone.
    uid: Option<super::UidLease>,
}

/// Tasks of a sandbox that run as root, not as its uid: the helper and init. They may
/// still be zombies when the sandbox is otherwise gone (the helper until the supervisor
/// reaps it; init until the helper does, or whoever inherits it if the helper was
/// killed first).
const ROOT_TASKS: u64 = 2;

impl SandboxCgroup {
    /// Gives `lease` back once the cgroup is gone (see [`SandboxCgroup::destroy`]).
    pub fn hold_uid(&mut self, lease: super::UidLease) {
        self.uid = Some(lease);
    }

    /// Writes memory (without swap), process and CPU limits; zero leaves one unset.
    ///
    /// On v1, socket buffers are not charged to the memory limit (v2 charges them to
    /// memory.max): `memory.kmem.tcp.limit_in_bytes`, which also turns their accounting
    /// on, bounds them to a quarter of the memory limit, so a sandbox holds at most 1.25
    /// times its memory limit. The rest of its kernel memory (slab, page tables, pipe
    /// buffers) is charged to its memory limit on v1 as well on every kernel we run
    /// on (5.12 and later); a separate `memory.kmem.limit_in_bytes` is deprecated and
    /// ignored since 5.16, so it is not written.
    pub fn apply_limits(&self, limits: &CgroupLimits) -> Result<()> {
        let cg = |op, r: Result<(), cgroups_rs::fs::error::Error>| {
            r.map_err(|source| CgroupError::Cgroups { op, source })
        };
        if limits.memory_bytes > 0 {
            let mem: &MemController = self
                .cg
                .controller_of()
                .ok_or(CgroupError::V1Missing("memory"))?;
            match self.version {
                Version::V2 => {
                    cg(
                        "setting the memory limit",
                        mem.set_limit(limits.memory_bytes as i64),
                    )?;
                    write(&self.dirs["unified"].join("memory.swap.max"), "0")?;
                    write(&self.dirs["unified"].join("memory.oom.group"), "1")?;
                }
                Version::V1 => {
                    // Without swap accounting there is no memsw file; swappiness 0 then
                    // keeps the sandbox from being swapped out instead of limited.
                    // memory+swap may never be below memory: raising a limit (a waiting
                    // sandbox handed to a request) sets memory+swap first, lowering it
                    // memory first; trying both orders covers both without reading.
                    let memsw = self.dirs["memory"].join("memory.memsw.limit_in_bytes");
                    let bytes = limits.memory_bytes as i64;
                    if memsw.exists() {
                        let set_mem = || mem.set_limit(bytes);
                        let set_memsw = || mem.set_memswap_limit(bytes);
                        if set_mem().is_ok() {
                            cg("setting the memory+swap limit", set_memsw())?;
                        } else {
                            cg("setting the memory+swap limit", set_memsw())?;
                            cg("setting the memory limit", set_mem())?;
                        }
                    } else {
                        cg("setting the memory limit", mem.set_limit(bytes))?;
                        let _ = mem.set_swappiness(0);
                    }
                    let tcp = self.dirs["memory"].join("memory.kmem.tcp.limit_in_bytes");
                    if tcp.exists() {
                        write(&tcp, &tcp_limit(limits.memory_bytes).to_string())?;
                    }
                }
            }
        }
        if limits.max_processes > 0 {
            let pids: &PidController = self
                .cg
                .controller_of()
                .ok_or(CgroupError::V1Missing("pids"))?;
            cg(
                "setting the process limit",
                pids.set_pid_max(MaxValue::Value(limits.max_processes as i64)),
            )?;
        }
        let cpu: &CpuController = self
            .cg
            .controller_of()
            .ok_or(CgroupError::V1Missing("cpu"))?;
        if limits.cpu_millis > 0 {
            let period = 100_000u64;
            let quota = (limits.cpu_millis * period / 1000).max(1000) as i64;
            cg(
                "setting the CPU quota",
                cpu.set_cfs_quota_and_period(Some(quota), Some(period)),
            )?;
        }
        if limits.cpu_shares > 0 {
            cg("setting the CPU shares", cpu.set_shares(limits.cpu_shares))?;
        }
        Ok(())
    }

    fn setup_cpuset(&self, cpuset: Option<&str>) -> Result<()> {
        let cg = |op, r: Result<(), cgroups_rs::fs::error::Error>| {
            r.map_err(|source| CgroupError::Cgroups { op, source })
        };
        if self.version == Version::V1 && self.dirs.contains_key("cpuset") {
            // A new v1 cpuset starts with no CPUs and no memory nodes: copy the parent's
            // (or the configured set) or no task could join it.
            let set: &CpuSetController = self
                .cg
                .controller_of()
                .ok_or(CgroupError::V1Missing("cpuset"))?;
            let parent = self.dirs["cpuset"]
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let cpus = match cpuset {
                Some(c) => c.to_string(),
                None => read(&parent.join("cpuset.cpus"))?.trim().to_string(),
            };
            let mems = read(&parent.join("cpuset.mems"))?.trim().to_string();
            cg("setting cpuset.cpus", set.set_cpus(&cpus))?;
            cg("setting cpuset.mems", set.set_mems(&mems))?;
        } else if let Some(cpus) = cpuset {
            write(&self.dirs["unified"].join("cpuset.cpus"), cpus)?;
        }
        Ok(())
    }

    /// Moves process `pid`, the sandbox's helper (and its future children), into the
    /// cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|source| CgroupError::Cgroups {
                op: "adding the helper to its cgroup",
                source,
            })
    }

    /// Kills every process in the cgroup and waits until it is empty.
    pub fn kill(&self) -> Result<()> {
        match self.version {
            Version::V2 => kill_v2(&self.dirs["unified"]),
            Version::V1 => {
                // Freeze first so a fork bomb cannot outrun the killing loop.
                let freezer: Option<&FreezerController> = self.cg.controller_of();
                let deadline = Instant::now() + Duration::from_secs(5);
                // The usual end: everything already exited, nothing to freeze.
                if self.cg.procs().is_empty() {
                    return Ok(());
                }
                loop {
                    if let Some(f) = freezer {
                        let _ = f.freeze();
                    }
                    let procs = self.cg.procs();
                    for pid in &procs {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid.pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    if let Some(f) = freezer {
                        let _ = f.thaw();
                    }
                    if procs.is_empty() {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(CgroupError::NotEmpty(self.dirs["memory"].clone()));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// Number of processes in the cgroup.
    pub fn process_count(&self) -> usize {
        self.cg.procs().len()
    }

    /// CPU time used so far.
    pub fn cpu_time(&self) -> Duration {
        match self.version {
            Version::V2 => read(&self.dirs["unified"].join("cpu.stat"))
                .ok()
                .and_then(|s| keyed(&s, "usage_usec"))
                .map(Duration::from_micros),
            Version::V1 => read(&self.dirs["cpuacct"].join("cpuacct.usage"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map(Duration::from_nanos),
        }
        .unwrap_or_default()
    }

    /// Reads what the sandbox used.
    pub fn usage(&self) -> Usage {
        match self.version {
            Version::V2 => usage_v2(&self.dirs["unified"]),
            Version::V1 => {
                let mem = &self.dirs["memory"];
                Usage {
                    cpu_time: self.cpu_time(),
                    peak_memory: read(&mem.join("memory.max_usage_in_bytes"))
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0),
                    oom_kills: read(&mem.join("memory.oom_control"))
                        .ok()
                        .and_then(|s| keyed(&s, "oom_kill"))
                        .unwrap_or(0),
                    pids_limit_hits: read(&self.dirs["pids"].join("pids.events"))
                        .ok()
                        .and_then(|s| keyed(&s, "max"))
                        .unwrap_or(0),
                }
            }
        }
    }

    /// Waits until every task of the sandbox's uid is released (reaped): a zombie keeps
    /// its uid's per-user counts (RLIMIT_NPROC, pending signals) and is charged in
    /// pids.current until then. Call after [`SandboxCgroup::kill`]. False if that did not
    /// happen in time (or cannot be read).
    fn wait_released(&self) -> bool {
        let dir = match self.version {
            Version::V2 => &self.dirs["unified"],
            Version::V1 => &self.dirs["pids"],
        };
        let file = dir.join("pids.current");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let Some(current) = read(&file).ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
                return false;
            };
            // The payload's tasks are reaped by init (or by the kernel while init
            // exits) before init is a zombie: what may remain then is root's.
            if current <= ROOT_TASKS {
                return true;
            }
            if Instant::now() > deadline {
                tracing::error!(tasks = current, "sandbox tasks not released after the kill");
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills everything left and removes the cgroup; then, and only if every task of the
    /// sandbox's uid was released, its uid goes back.
    pub fn destroy(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        self.kill()?;
        let released = self.uid.is_none() || self.wait_released();
        // Removal can race the kernel's last exit bookkeeping: retry briefly.
        let mut attempt = 0;
        loop {
            match self.cg.delete() {
                Ok(()) => {
                    self.removed = true;
                    if let Some(lease) = self.uid.take() {
                        if released {
                            drop(lease);
                        } else {
                            lease.quarantine();
                        }
                    }
                    return Ok(());
                }
                Err(source) if attempt >= 200 => {
                    return Err(CgroupError::Cgroups {
                        op: "removing the sandbox cgroup",
                        source,
                    })
                }
                Err(_) => attempt += 1,
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.destroy() {
            tracing::error!(error = %e, "sandbox cgroup could not be removed");
            // Something of the sandbox may still run as its uid.
            if let Some(lease) = self.uid.take() {
                lease.quarantine();
            }
        }
    }
}

/// v1: the bound on a sandbox's socket buffers, from its memory limit (see
/// [`SandboxCgroup::apply_limits`]).
pub fn tcp_limit(memory_bytes: u64) -> u64 {
    (memory_bytes / 4).max(1 << 20)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.into(),
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.into(),
        value: value.into(),
        source,
    })
}

/// Value of `key` in a flat-keyed cgroup file (`key value` lines).
fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The v2 path of the current process, from `/proc/self/cgroup` content.
fn own_v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

/// Makes `<root><own>/jsheets-runtime` a cgroup that delegates cpu, memory and pids to
/// its children. A v2 cgroup with processes cannot delegate ("no internal processes"),
/// so the service first moves itself into a `service` leaf of its own cgroup.
fn prepare_v2_subtree(root: &Path, own: &str, self_pid: u32) -> Result<PathBuf> {
    let own_dir = root.join(own.trim_start_matches('/'));
    let own_dir = if own_dir.file_name().is_some_and(|n| n == SERVICE_LEAF) {
        // Restarted inside our own leaf: delegate from the parent.
        own_dir.parent().map(Path::to_path_buf).unwrap_or(own_dir)
    } else {
        own_dir
    };
    let enable = |dir: &Path| -> Result<()> {
        let available = read(&dir.join("cgroup.controllers"))?;
        for c in V2_CONTROLLERS {
            if !available.split_whitespace().any(|a| a == *c) {
                return Err(CgroupError::V2Controller(c.to_string(), dir.into()));
            }
        }
        let value = V2_CONTROLLERS
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        write(&dir.join("cgroup.subtree_control"), &value)
    };
    if enable(&own_dir).is_err() {
        let leaf = own_dir.join(SERVICE_LEAF);
        fs::create_dir_all(&leaf).map_err(|source| CgroupError::Write {
            path: leaf.clone(),
            value: "mkdir".into(),
            source,
        })?;
        // Move every process of our cgroup (ours and, in a container, its init).
        let procs = read(&own_dir.join("cgroup.procs")).unwrap_or_default();
        let mut pids: Vec<String> = procs.lines().map(str::to_string).collect();
        if pids.is_empty() {
            pids.push(self_pid.to_string());
        }
        for pid in pids {
            let _ = write(&leaf.join("cgroup.procs"), &pid);
        }
        enable(&own_dir)?;
    }
    let sub = own_dir.join(SUBTREE);
    fs::create_dir_all(&sub).map_err(|source| CgroupError::Write {
        path: sub.clone(),
        value: "mkdir".into(),
        source,
    })?;
    enable(&sub)?;
    Ok(sub)
}

fn kill_v2(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = read(&dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            return Ok(());
        }
        if write(&dir.join("cgroup.kill"), "1").is_err() {
            // Kernels before 5.14: freeze, signal every task, thaw.
            let _ = write(&dir.join("cgroup.freeze"), "1");
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = write(&dir.join("cgroup.freeze"), "0");
        }
        if Instant::now() > deadline {
            return Err(CgroupError::NotEmpty(dir.into()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn usage_v2(dir: &Path) -> Usage {
    Usage {
        cpu_time: read(&dir.join("cpu.stat"))
            .ok()
            .and_then(|s| keyed(&s, "usage_usec"))
            .map(Duration::from_micros)
            .unwrap_or_default(),
        peak_memory: read(&dir.join("memory.peak"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
        oom_kills: read(&dir.join("memory.events"))
            .ok()
            .and_then(|s| keyed(&s, "oom_kill"))
            .unwrap_or(0),
        pids_limit_hits: read(&dir.join("pids.events"))
            .ok()
            .and_then(|s| keyed(&s, "max"))
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v2(root: &Path, own: &str) -> PathBuf {
        let dir = root.join(own);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma\n",
        )
        .unwrap();
        fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
        fs::write(dir.join("cgroup.procs"), "42\n").unwrap();
        dir
    }

    #[test]
    fn v2_subtree_delegates_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let own = fake_v2(tmp.path(), "system.slice/app.service");
        // The fake subtree needs its own controllers file before `enable` reads it.
        fs::create_dir_all(own.join(SUBTREE)).unwrap();
        fs::write(
            own.join(SUBTREE).join("cgroup.controllers"),
            "cpu memory pids\n",
        )
        .unwrap();
        let sub = prepare_v2_subtree(tmp.path(), "/system.slice/app.service", 42).unwrap();
        assert_eq!(sub, own.join(SUBTREE));
        assert_eq!(
            fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids"
        );
        assert_eq!(
            fs::read_to_string(sub.join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids"
        );
    }

    #[test]
    fn v2_subtree_refuses_missing_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let own = fake_v2(tmp.path(), "a");
        fs::write(own.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let err = prepare_v2_subtree(tmp.path(), "/a", 42).unwrap_err();
        assert!(
            matches!(err, CgroupError::V2Controller(ref c, _) if c == "pids"),
            "{err}"
        );
    }

    #[test]
    fn v2_usage_is_read_from_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::write(
            d.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        )
        .unwrap();
        fs::write(d.join("memory.peak"), "1048576\n").unwrap();
        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        fs::write(d.join("pids.events"), "max 7\n").unwrap();
        assert_eq!(
            usage_v2(d),
            Usage {
                cpu_time: Duration::from_micros(1500),
                peak_memory: 1 << 20,
                oom_kills: 1,
                pids_limit_hits: 7
            }
        );
    }

    #[test]
    fn v2_kill_of_an_empty_cgroup_returns_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("cgroup.procs"), "").unwrap();
        kill_v2(tmp.path()).unwrap();
    }

    #[test]
    fn own_path_is_parsed() {
        assert_eq!(
            own_v2_path("0::/user.slice/x.scope\n").as_deref(),
            Some("/user.slice/x.scope")
        );
        assert_eq!(own_v2_path("4:memory:/a\n"), None);
    }

    #[test]
    fn the_placement_is_what_proc_self_cgroup_shows() {
        let v2 = Manager {
            version: Version::V2,
            relative: HashMap::new(),
            dirs: HashMap::from([(
                "unified",
                PathBuf::from(hierarchies::UNIFIED_MOUNTPOINT)
                    .join("system.slice/x.service/jsheets-runtime"),
            )]),
            cpuset: None,
            v1: None,
        };
        assert_eq!(
            v2.placement("sb-1-2"),
            [(
                String::new(),
                "/system.slice/x.service/jsheets-runtime/sb-1-2".to_string()
            )]
        );
        let v1 = Manager {
            version: Version::V1,
            relative: HashMap::from([
                ("memory".to_string(), "/a/b".to_string()),
                ("pids".to_string(), "/".to_string()),
            ]),
            dirs: HashMap::from([
                (
                    "memory",
                    PathBuf::from("/sys/fs/cgroup/memory/a/b/jsheets-runtime"),
                ),
                ("pids", PathBuf::from("/sys/fs/cgroup/pids/jsheets-runtime")),
                ("cpu", PathBuf::from("/sys/fs/cgroup/cpu/jsheets-runtime")),
            ]),
            cpuset: None,
            v1: None,
        };
        assert_eq!(
            v1.placement("sb-1-2"),
            [
                ("cpu".to_string(), "/jsheets-runtime/sb-1-2".to_string()),
                (
                    "memory".to_string(),
                    "/a/b/jsheets-runtime/sb-1-2".to_string()
                ),
                ("pids".to_string(), "/jsheets-runtime/sb-1-2".to_string()),
            ]
        );
    }

    #[test]
    fn socket_buffers_get_a_quarter_of_the_memory_limit() {
        assert_eq!(tcp_limit(64 << 20), 16 << 20);
        assert_eq!(tcp_limit(1 << 20), 1 << 20);
    }
}
