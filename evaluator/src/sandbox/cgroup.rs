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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Hierarchy, MaxValue, Subsystem};
use cgroups_rs::CgroupPid;

/// Name of the subtree the service owns inside its own cgroup.
pub const SUBTREE: &str = "jsheets-runtime";
/// v2: where the service's own processes move so its cgroup may delegate controllers.
const SERVICE_LEAF: &str = "service";
const V2_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("the sandbox cgroup is torn down")]
    Gone,
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
    #[error("the service kept being moved to other cgroups while finding its own")]
    Unsettled,
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

/// The v1 hierarchies a sandbox joins: only the controllers it uses, each rooted at
/// our subtree's directory in it, so that a sandbox cgroup named `id` is
/// `<subtree>/<id>` in every hierarchy, the very directories [`Manager`] reads usage
/// from and sweeps. Each extra hierarchy costs a mkdir, a migration and an rmdir per
/// sandbox.
#[derive(Debug, Clone)]
struct SelectedV1 {
    subsystems: Vec<Subsystem>,
}

impl SelectedV1 {
    /// `dirs`: our subtree's directory per controller name.
    fn new(dirs: &HashMap<&'static str, PathBuf>) -> Self {
        let mut subsystems = Vec::new();
        // cgroups-rs' own order (memory before the others; see its V1::subsystems).
        for name in ["memory", "pids", "cpuset", "cpuacct", "cpu", "freezer"] {
            let Some(dir) = dirs.get(name) else {
                continue;
            };
            let (point, base) = (dir.clone(), dir.clone());
            subsystems.push(match name {
                "memory" => Subsystem::Mem(MemController::new(point, base, false)),
                "pids" => Subsystem::Pid(PidController::new(point, base, false)),
                "cpuset" => Subsystem::CpuSet(CpuSetController::new(point, base, false)),
                "cpuacct" => Subsystem::CpuAcct(CpuAcctController::new(point, base)),
                "cpu" => Subsystem::Cpu(CpuController::new(point, base, false)),
                _ => Subsystem::Freezer(FreezerController::new(point, base, false)),
            });
        }
        SelectedV1 { subsystems }
    }
}

impl Hierarchy for SelectedV1 {
    fn subsystems(&self) -> Vec<Subsystem> {
        self.subsystems.clone()
    }

    fn root(&self) -> PathBuf {
        self.subsystems
            .first()
            .map(|s| s.to_controller().path().to_path_buf())
            .unwrap_or_else(|| PathBuf::from(hierarchies::UNIFIED_MOUNTPOINT))
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        let parent = Path::new(path).parent().unwrap_or(Path::new(""));
        Cgroup::load(Box::new(self.clone()), parent)
    }

    fn v2(&self) -> bool {
        false
    }
}

/// The v2 hierarchy rooted at our subtree's directory: a sandbox cgroup `id` is
/// `<subtree>/<id>`, and creating one writes nothing above the subtree.
#[derive(Debug, Clone)]
struct SubtreeV2 {
    dir: PathBuf,
}

impl Hierarchy for SubtreeV2 {
    fn subsystems(&self) -> Vec<Subsystem> {
        let (point, base) = (self.dir.clone(), PathBuf::new());
        vec![
            Subsystem::Cpu(CpuController::new(point.clone(), base.clone(), true)),
            Subsystem::Mem(MemController::new(point.clone(), base.clone(), true)),
            Subsystem::Pid(PidController::new(point.clone(), base.clone(), true)),
            Subsystem::Freezer(FreezerController::new(point, base, true)),
        ]
    }

    fn root(&self) -> PathBuf {
        self.dir.clone()
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        let parent = Path::new(path).parent().unwrap_or(Path::new(""));
        Cgroup::load(Box::new(self.clone()), parent)
    }

    fn v2(&self) -> bool {
        true
    }
}

/// One cgroup filesystem mount, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    /// Where it is mounted.
    point: PathBuf,
    /// The cgroup of the hierarchy shown at `point`, as the reader's cgroup namespace
    /// names it (the mountinfo `root` field): `/` for a whole hierarchy, the
    /// container's cgroup for a bind-mounted subtree.
    root: String,
    v2: bool,
    /// v1: the controllers of the hierarchy (from the super options).
    controllers: Vec<String>,
}

/// The cgroup mounts that are visible (not covered by a later mount on the same place
/// or above it), in mountinfo order.
fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut all: Vec<(PathBuf, Option<CgroupMount>)> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point)) = (left.get(3), left.get(4)) else {
            continue;
        };
        let point = PathBuf::from(unescape_mountinfo(point));
        let mount = match right.first() {
            Some(&"cgroup") => Some(CgroupMount {
                point: point.clone(),
                root: unescape_mountinfo(root),
                v2: false,
                controllers: right
                    .get(2)
                    .map(|o| o.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            }),
            Some(&"cgroup2") => Some(CgroupMount {
                point: point.clone(),
                root: unescape_mountinfo(root),
                v2: true,
                controllers: Vec::new(),
            }),
            _ => None,
        };
        all.push((point, mount));
    }
    all.iter()
        .enumerate()
        .filter_map(|(i, (point, mount))| {
            // Mounted over by a later mount on the same place (a bind-mounted subtree).
            let covered = all[i + 1..].iter().any(|(later, _)| later == point);
            mount.clone().filter(|_| !covered)
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/cgroup`: the path per v1 controller (`name=` hierarchies included), and
/// the v2 path (the `0::` line).
fn proc_cgroup_paths(content: &str) -> (HashMap<String, String>, Option<String>) {
    let mut v1 = HashMap::new();
    let mut v2 = None;
    for line in content.lines() {
        // The path may itself contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            v2 = Some(path.trim().to_string());
        } else {
            for c in controllers.split(',') {
                v1.insert(c.to_string(), path.trim().to_string());
            }
        }
    }
    (v1, v2)
}

/// Where the cgroup that `/proc/self/cgroup` shows as `proc_path` is on disk, under a
/// mount of its hierarchy at `point` whose mountinfo root is `root`.
///
/// Both paths are relative to the root of the reader's cgroup namespace. Below a mount
/// of the whole hierarchy (root `/`) the cgroup is `point` + `proc_path`; below a
/// bind-mounted subtree (a container in the host's cgroup namespace: root
/// `/docker/abc`, `proc_path` `/docker/abc/x`) the part of `proc_path` the mount
/// already covers goes (`point/x`). A `proc_path` outside the mount's root means the
/// namespace's root is the mount's root (a container with a private cgroup namespace
/// and a subtree mounted from outside it: `proc_path` `/x` is `point/x`).
fn cgroup_dir(point: &Path, root: &str, proc_path: &str) -> PathBuf {
    let root = root.trim_end_matches('/');
    let rel = if root.is_empty() {
        proc_path
    } else if proc_path == root {
        ""
    } else {
        match proc_path.strip_prefix(root) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => proc_path,
        }
    };
    point.join(rel.trim_start_matches('/'))
}

/// The service's own cgroup in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Own {
    /// As `/proc/self/cgroup` shows it (what the sandbox helper checks).
    proc_path: String,
    /// Its directory.
    dir: PathBuf,
}

/// The service's own cgroup per hierarchy used (v1: per controller in `controllers`;
/// v2: one entry, "unified"), from `/proc/self/mountinfo` and `/proc/self/cgroup`
/// contents.
fn own_cgroups(
    version: Version,
    mountinfo: &str,
    proc_cgroup: &str,
    controllers: &[&'static str],
) -> Result<HashMap<&'static str, Own>> {
    let mounts = cgroup_mounts(mountinfo);
    let (v1_paths, v2_path) = proc_cgroup_paths(proc_cgroup);
    // Of several mounts of one hierarchy, the one where cgroups are usually mounted.
    let usual = |m: &&CgroupMount| m.point.starts_with(hierarchies::UNIFIED_MOUNTPOINT);
    let mut own = HashMap::new();
    match version {
        Version::V2 => {
            let v2: Vec<&CgroupMount> = mounts.iter().filter(|m| m.v2).collect();
            let mount = v2
                .iter()
                .find(|m| m.point == Path::new(hierarchies::UNIFIED_MOUNTPOINT))
                .or_else(|| v2.first())
                .ok_or(CgroupError::V1Missing("cgroup2"))?;
            let proc_path = v2_path.ok_or(CgroupError::OwnCgroup)?;
            let dir = cgroup_dir(&mount.point, &mount.root, &proc_path);
            own.insert("unified", Own { proc_path, dir });
        }
        Version::V1 => {
            for &name in controllers {
                let with: Vec<&CgroupMount> = mounts
                    .iter()
                    .filter(|m| !m.v2 && m.controllers.iter().any(|c| c == name))
                    .collect();
                let mount = with
                    .iter()
                    .find(|m| usual(m))
                    .or_else(|| with.first())
                    .ok_or(CgroupError::V1Missing(name))?;
                let proc_path = v1_paths.get(name).ok_or(CgroupError::OwnCgroup)?.clone();
                let dir = cgroup_dir(&mount.point, &mount.root, &proc_path);
                own.insert(name, Own { proc_path, dir });
            }
        }
    }
    Ok(own)
}

/// Whether `pid` is a member of the cgroup at `dir`.
fn has_member(dir: &Path, pid: u32) -> bool {
    let pid = pid.to_string();
    fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|procs| procs.lines().any(|l| l.trim() == pid))
}

/// The cgroup below `top` (breadth first, a few levels) that has `pid` as a member.
fn find_member(top: &Path, pid: u32) -> Option<PathBuf> {
    let mut level = vec![top.to_path_buf()];
    for _ in 0..8 {
        let mut next = Vec::new();
        for dir in level {
            if has_member(&dir, pid) {
                return Some(dir);
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            next.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    None
}

/// Checks every computed directory against the kernel (it must list us as a member);
/// one that does not is searched for below its mount (a mount root outside our
/// cgroup namespace, shown as `/..`, cannot be mapped by name).
fn confirm(own: &mut HashMap<&'static str, Own>, mountinfo: &str, pid: u32) {
    let mounts = cgroup_mounts(mountinfo);
    for (name, o) in own.iter_mut() {
        if has_member(&o.dir, pid) {
            continue;
        }
        let found = mounts
            .iter()
            .filter(|m| o.dir.starts_with(&m.point))
            .max_by_key(|m| m.point.as_os_str().len())
            .and_then(|m| find_member(&m.point, pid));
        match found {
            Some(dir) => {
                tracing::info!(
                    hierarchy = %name,
                    computed = %o.dir.display(),
                    found = %dir.display(),
                    "our cgroup is not where /proc/self/cgroup and mountinfo say; using where the kernel lists us"
                );
                o.dir = dir;
            }
            None => tracing::warn!(
                hierarchy = %name,
                dir = %o.dir.display(),
                "cannot confirm our own cgroup directory (not listed in its cgroup.procs)"
            ),
        }
    }
}

/// How many times our own cgroup is read again when we were moved while reading it.
const SETTLE_ATTEMPTS: usize = 20;

/// Our own cgroups (see [`own_cgroups`] and [`confirm`]), read with `read` (the
/// `/proc/self` files), each path (`/proc/self/cgroup`) naming the very cgroup of its
/// directory.
///
/// On v2 another process of our cgroup (another node or test process started at the
/// same moment, or another `Manager` of ours on another thread) may move us into the
/// `service` leaf at any moment (see [`prepare_v2_subtree`]). Reading the path before
/// that move and confirming the directory after it gave the cgroup's root as the path and
/// its leaf as the directory: sandbox cgroups were then created below the leaf while
/// their helpers were told they were below the root, and every helper refused its
/// placement. So `/proc/self/cgroup` is read again once the directories are confirmed,
/// and all of it is done again until nothing moved in between.
fn settled_own_cgroups(
    version: Version,
    controllers: &[&'static str],
    pid: u32,
    read: impl Fn(&str) -> Result<String>,
) -> Result<HashMap<&'static str, Own>> {
    let mountinfo = read("/proc/self/mountinfo")?;
    let mut seen = read("/proc/self/cgroup")?;
    for _ in 0..SETTLE_ATTEMPTS {
        let mut own = own_cgroups(version, &mountinfo, &seen, controllers)?;
        confirm(&mut own, &mountinfo, pid);
        let now = read("/proc/self/cgroup")?;
        if now == seen {
            return Ok(own);
        }
        tracing::debug!(before = %seen.trim(), after = %now.trim(), "moved to another cgroup while finding our own; finding it again");
        seen = now;
    }
    Err(CgroupError::Unsettled)
}

/// The service's subtree: creates, limits and removes sandbox cgroups.
#[derive(Debug)]
pub struct Manager {
    version: Version,
    /// Our subtree per hierarchy (v1: controller name; v2: "unified") as
    /// `/proc/self/cgroup` shows it, e.g. `/a/b/jsheets-runtime`.
    proc_paths: HashMap<&'static str, String>,
    /// The same subtrees' directories: where sandbox cgroups are created, limited, read
    /// and removed (`<dir>/<id>`).
    dirs: HashMap<&'static str, PathBuf>,
    cpuset: Option<String>,
    v1: Option<SelectedV1>,
    /// Sandbox cgroups being torn down in the background.
    teardowns: Arc<AtomicUsize>,
}

impl Manager {
    /// Detects the hierarchy, finds our own cgroup in it, prepares our subtree and
    /// removes sandboxes a previous run of the service left behind.
    pub fn start(cpuset: Option<String>) -> Result<Self> {
        let version = if hierarchies::is_cgroup2_unified_mode() {
            Version::V2
        } else {
            Version::V1
        };
        let own = settled_own_cgroups(
            version,
            v1_controllers(cpuset.is_some()),
            std::process::id(),
            |path| read(Path::new(path)),
        )?;
        let manager = Manager::with_own(version, own, cpuset, std::process::id())?;
        tracing::debug!(version = ?manager.version, dirs = ?manager.dirs, "cgroup subtree ready");
        manager.sweep();
        Ok(manager)
    }

    /// Prepares our subtree in each of our own cgroups.
    fn with_own(
        version: Version,
        own: HashMap<&'static str, Own>,
        cpuset: Option<String>,
        self_pid: u32,
    ) -> Result<Self> {
        let mut proc_paths = HashMap::new();
        let mut dirs = HashMap::new();
        for (name, o) in own {
            let (proc_path, dir) = match version {
                Version::V2 => {
                    // Restarted inside our own `service` leaf: the subtree is its sibling.
                    let (proc_path, own_dir) =
                        if o.dir.file_name().is_some_and(|n| n == SERVICE_LEAF)
                            && o.proc_path.rsplit('/').next() == Some(SERVICE_LEAF)
                        {
                            (
                                o.proc_path[..o.proc_path.len() - SERVICE_LEAF.len()].to_string(),
                                o.dir.parent().map(Path::to_path_buf).unwrap_or(o.dir),
                            )
                        } else {
                            (o.proc_path, o.dir)
                        };
                    (
                        proc_path,
                        prepare_v2_subtree(&own_dir, self_pid, cpuset.is_some())?,
                    )
                }
                Version::V1 => {
                    let dir = o.dir.join(SUBTREE);
                    fs::create_dir_all(&dir).map_err(|source| CgroupError::Write {
                        path: dir.clone(),
                        value: "mkdir".into(),
                        source,
                    })?;
                    (o.proc_path, dir)
                }
            };
            let proc_path = format!("{}/{SUBTREE}", proc_path.trim_end_matches('/'));
            proc_paths.insert(name, proc_path);
            dirs.insert(name, dir);
        }
        let v1 = (version == Version::V1).then(|| SelectedV1::new(&dirs));
        Ok(Manager {
            version,
            proc_paths,
            dirs,
            cpuset,
            v1,
            teardowns: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Creates the cgroup of sandbox `id` with `limits` applied, at `<subtree>/<id>` in
    /// every hierarchy used.
    pub fn create(&self, id: &str, limits: &CgroupLimits) -> Result<SandboxCgroup> {
        let cg = match (self.version, &self.v1) {
            (Version::V1, Some(v1)) => {
                Cgroup::new(Box::new(v1.clone()), id).map_err(|source| CgroupError::Cgroups {
                    op: "creating the sandbox cgroup",
                    source,
                })?
            }
            _ => {
                // The subtree already delegates the controllers to its children.
                let dir = self.dirs["unified"].join(id);
                fs::create_dir_all(&dir).map_err(|source| CgroupError::Write {
                    path: dir.clone(),
                    value: "mkdir".into(),
                    source,
                })?;
                Cgroup::load_with_specified_controllers(
                    Box::new(SubtreeV2 {
                        dir: self.dirs["unified"].clone(),
                    }),
                    id,
                    V2_CONTROLLERS.iter().map(|s| s.to_string()).collect(),
                )
            }
        };
        let sandbox = SandboxCgroup {
            cg: Some(cg),
            version: self.version,
            dirs: self.dirs.iter().map(|(k, v)| (*k, v.join(id))).collect(),
            removed: false,
            uid: None,
            helper: None,
            helper_pidfd: None,
            forked: AtomicBool::new(false),
            teardowns: self.teardowns.clone(),
        };
        sandbox.setup_cpuset(self.cpuset.as_deref())?;
        sandbox.apply_limits(limits)?;
        Ok(sandbox)
    }

    /// The count of sandboxes being torn down in the background, shared with whoever
    /// tears one down.
    pub fn teardowns(&self) -> Arc<AtomicUsize> {
        self.teardowns.clone()
    }

    /// Sandboxes being torn down in the background right now.
    pub fn pending_teardowns(&self) -> usize {
        self.teardowns.load(Ordering::SeqCst)
    }

    /// Where sandbox `id`'s helper is once added to its cgroup, as `/proc/self/cgroup`
    /// shows it (before any cgroup namespace): per hierarchy, one controller of it ("" for
    /// v2) and the path.
    pub fn placement(&self, id: &str) -> Vec<(String, String)> {
        let mut names: Vec<&str> = self.proc_paths.keys().copied().collect();
        names.sort_unstable();
        names
            .into_iter()
            .map(|name| {
                let controller = if name == "unified" { "" } else { name };
                (
                    controller.to_string(),
                    format!("{}/{id}", self.proc_paths[name]),
                )
            })
            .collect()
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

    /// Cgroups in our subtree, in any hierarchy, whose owner is gone (left by a crashed
    /// run), by name.
    fn stale(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .dirs
            .values()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != SERVICE_LEAF && !owner_alive(name))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Kills and removes every sandbox cgroup in our subtree left by a crashed run.
    fn sweep(&self) {
        for name in self.stale() {
            tracing::warn!(cgroup = %name, "removing a sandbox cgroup left by an earlier run");
            match self.create(&name, &CgroupLimits::default()) {
                Ok(mut cg) => {
                    if let Err(e) = cg.destroy() {
                        tracing::error!(cgroup = %name, error = %e, "cannot remove a stale sandbox cgroup");
                    }
                }
                Err(e) => {
                    tracing::error!(cgroup = %name, error = %e, "cannot open a stale sandbox cgroup")
                }
            }
        }
    }
}

/// The v1 controllers a sandbox uses.
fn v1_controllers(cpuset: bool) -> &'static [&'static str] {
    if cpuset {
        &["memory", "pids", "cpu", "cpuacct", "freezer", "cpuset"]
    } else {
        &["memory", "pids", "cpu", "cpuacct", "freezer"]
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
    /// `None` once torn down (or handed to a thread that does it).
    cg: Option<Cgroup>,
    version: Version,
    dirs: HashMap<&'static str, PathBuf>,
    removed: bool,
    /// The sandbox's uid, given back once the cgroup is gone.
    uid: Option<super::UidLease>,
    /// The helper (host pid) while it is not reaped, so that its pid is its own: it is
    /// killed last (see [`SandboxCgroup::destroy`]).
    helper: Option<u32>,
    /// A pidfd of the helper when it is not our child (forked from a zygote or a lane,
    /// whose parent reaps it at once): the last kill goes through it, never to a pid
    /// that may be another process's by then.
    helper_pidfd: Option<std::os::fd::OwnedFd>,
    /// Something besides the helper was seen in the cgroup: the helper has forked init
    /// and forks nothing more.
    forked: AtomicBool,
    /// See [`Manager::teardowns`].
    teardowns: Arc<AtomicUsize>,
}

impl SandboxCgroup {
    fn cg(&self) -> Result<&Cgroup> {
        self.cg.as_ref().ok_or(CgroupError::Gone)
    }

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
                .cg()?
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
                .cg()?
                .controller_of()
                .ok_or(CgroupError::V1Missing("pids"))?;
            cg(
                "setting the process limit",
                pids.set_pid_max(MaxValue::Value(limits.max_processes as i64)),
            )?;
        }
        let cpu: &CpuController = self
            .cg()?
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
                .cg()?
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
    /// cgroup. `pid` is a child of ours, not reaped until [`SandboxCgroup::helper_reaped`]
    /// says so.
    pub fn add(&mut self, pid: u32) -> Result<()> {
        // Also if only some hierarchies took it: it is spared and killed last as well.
        self.helper = Some(pid);
        let Some(cg) = &self.cg else {
            return Err(CgroupError::Gone);
        };
        cg.add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|source| CgroupError::Cgroups {
                op: "adding the helper to its cgroup",
                source,
            })
    }

    /// The helper is not our child: `pidfd` names it for the last kill.
    pub fn hold_helper_pidfd(&mut self, pidfd: std::os::fd::OwnedFd) {
        self.helper_pidfd = Some(pidfd);
    }

    /// The helper was reaped (its pid may be another process's from now on).
    pub fn helper_reaped(&mut self) {
        self.helper = None;
    }

    /// Kills every process in the cgroup (but the helper once it has forked init), and
    /// waits until none is left.
    ///
    /// The helper is spared once it has forked the sandbox's init, which it then reaps
    /// (it forks nothing else): init, PID 1 of the sandbox's pid namespace, ends only
    /// once the kernel has released every other process of the namespace, so the
    /// helper's reaping it is the sandbox's end. The cgroup looking empty says less: a
    /// task leaves `cgroup.procs` (and the cgroup may be removed) while it is still
    /// exiting, and init waits for the rest of its namespace after that (see
    /// [`SandboxCgroup::destroy`], which waits for the releases). A helper that has not
    /// forked init yet is killed with the rest: it could fork it after the kill.
    pub fn kill(&self) -> Result<()> {
        match self.version {
            Version::V2 => kill_v2(&self.dirs["unified"], self.helper, &self.forked),
            Version::V1 => {
                // Freeze first so a fork bomb cannot outrun the killing loop.
                let Some(cg) = &self.cg else {
                    return Ok(());
                };
                let freezer: Option<&FreezerController> = cg.controller_of();
                kill_loop(
                    self.helper,
                    &self.forked,
                    || {
                        cg.procs()
                            .into_iter()
                            .filter_map(|p| u32::try_from(p.pid).ok())
                            .collect()
                    },
                    |frozen| {
                        if let Some(f) = freezer {
                            let _ = if frozen { f.freeze() } else { f.thaw() };
                        }
                    },
                    || false,
                    &self.dirs["memory"],
                )
            }
        }
    }

    /// Number of processes in the cgroup.
    pub fn process_count(&self) -> usize {
        self.cg.as_ref().map_or(0, |cg| cg.procs().len())
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

    /// Waits until every task of the sandbox but its helper is released (reaped), that
    /// is, until none of them exists any more, not even as a zombie: a task is charged
    /// in pids.current from its fork to its release, also after it left `cgroup.procs`
    /// and also once the cgroup could be removed, and a zombie keeps its uid's per-user
    /// counts (RLIMIT_NPROC, pending signals). Call after [`SandboxCgroup::kill`]: init
    /// goes last (the kernel releases the rest of its pid namespace first) and the
    /// helper, still alive, reaps it. Only the helper may be left then, until the
    /// supervisor reaps it. False if that did not happen in time (or cannot be read).
    fn wait_released(&self) -> bool {
        let dir = match self.version {
            Version::V2 => &self.dirs["unified"],
            Version::V1 => &self.dirs["pids"],
        };
        let file = dir.join("pids.current");
        let deadline = Instant::now() + Duration::from_secs(5);
        let helper = u64::from(self.helper.is_some());
        loop {
            let Some(current) = read(&file).ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
                return false;
            };
            if current <= helper {
                return true;
            }
            if Instant::now() > deadline {
                tracing::error!(tasks = current, "sandbox tasks not released after the kill");
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills everything left, waits until it is released, and removes the cgroup; then,
    /// and only if every task of the sandbox was released, its uid goes back. Once this
    /// returns (and the uid went back), nothing of the sandbox exists but its helper, dead
    /// or dying, for the supervisor to reap.
    pub fn destroy(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        let killed = self.kill();
        let released = killed.is_ok() && self.wait_released();
        // The helper last: it has reaped init by now, or has none (waiting for a plan).
        if let Some(pidfd) = &self.helper_pidfd {
            let _ = crate::sys::pidfd_kill(pidfd);
        } else if let Some(pid) = self.helper {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        killed?;
        // Removal can race the kernel's last exit bookkeeping (the helper's exit, which
        // takes a while on a loaded or emulated machine after a large sandbox, a JVM of
        // many threads, was killed): retry for up to 5 s.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let deleted = match &self.cg {
                Some(cg) => cg.delete(),
                None => Ok(()),
            };
            match deleted {
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
                Err(source) if Instant::now() > deadline => {
                    return Err(CgroupError::Cgroups {
                        op: "removing the sandbox cgroup",
                        source,
                    })
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl SandboxCgroup {
    /// Destroys the cgroup here and now (blocking for up to seconds); if that fails,
    /// its uid is withheld for good.
    pub fn teardown(mut self) {
        self.teardown_here();
    }

    fn teardown_here(&mut self) {
        if self.removed || self.cg.is_none() {
            return;
        }
        if let Err(e) = self.destroy() {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                "sandbox cgroup could not be removed"
            );
            // Something of the sandbox may still run as its uid.
            if let Some(lease) = self.uid.take() {
                lease.quarantine();
            }
        }
        self.cg = None;
    }
}

/// A cgroup being torn down on a blocking thread, counted until it is done; dropped
/// without having run (its runtime shut down), it tears down where it is dropped.
struct Teardown(SandboxCgroup);

impl Drop for Teardown {
    fn drop(&mut self) {
        self.0.teardown_here();
        self.0.teardowns.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for SandboxCgroup {
    /// Kills and removes what is left. Killing and waiting for the release can take
    /// seconds, which no async worker may spend: within a tokio runtime, that goes to a
    /// blocking thread (counted in [`Manager::pending_teardowns`]).
    fn drop(&mut self) {
        if self.removed || self.cg.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.teardown_here();
            return;
        };
        let rest = SandboxCgroup {
            cg: self.cg.take(),
            version: self.version,
            dirs: std::mem::take(&mut self.dirs),
            removed: false,
            uid: self.uid.take(),
            helper: self.helper.take(),
            helper_pidfd: self.helper_pidfd.take(),
            forked: AtomicBool::new(self.forked.load(Ordering::Relaxed)),
            teardowns: self.teardowns.clone(),
        };
        self.teardowns.fetch_add(1, Ordering::SeqCst);
        let teardown = Teardown(rest);
        runtime.spawn_blocking(move || drop(teardown));
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

/// Makes `<own_dir>/jsheets-runtime` a cgroup that delegates cpu, memory and pids to
/// its children, and cpuset too with `cpuset` (sandboxes pinned to CPUs: a child has no
/// `cpuset.cpus` unless its parent delegates cpuset). A v2 cgroup with processes cannot
/// delegate ("no internal processes"), so the service first moves itself into a
/// `service` leaf of its own cgroup.
fn prepare_v2_subtree(own_dir: &Path, self_pid: u32, cpuset: bool) -> Result<PathBuf> {
    let mut controllers = V2_CONTROLLERS.to_vec();
    if cpuset {
        controllers.push("cpuset");
    }
    let enable = |dir: &Path| -> Result<()> {
        let available = read(&dir.join("cgroup.controllers"))?;
        for c in &controllers {
            if !available.split_whitespace().any(|a| a == *c) {
                return Err(CgroupError::V2Controller(c.to_string(), dir.into()));
            }
        }
        let value = controllers
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        write(&dir.join("cgroup.subtree_control"), &value)
    };
    // A process our cgroup's other processes fork before they are moved lands in it
    // after the move: moved in another round.
    let mut rounds = 0;
    while let Err(e) = enable(own_dir) {
        if rounds == 5 {
            return Err(e);
        }
        rounds += 1;
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

/// [`SandboxCgroup::kill`] on the v2 cgroup `dir`.
fn kill_v2(dir: &Path, helper: Option<u32>, forked: &AtomicBool) -> Result<()> {
    kill_loop(
        helper,
        forked,
        || {
            read(&dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|p| p.trim().parse().ok())
                .collect()
        },
        |frozen| {
            let _ = write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" });
        },
        // Kernels before 5.14 have no cgroup.kill.
        || write(&dir.join("cgroup.kill"), "1").is_ok(),
        dir,
    )
}

/// Of `procs`, the processes [`SandboxCgroup::kill`] kills: all of them, but `helper`
/// once it has forked init (any other process seen says so, and is remembered in
/// `forked`).
fn kill_targets(procs: &[u32], helper: Option<u32>, forked: &AtomicBool) -> Vec<u32> {
    if procs.iter().any(|&p| Some(p) != helper) {
        forked.store(true, Ordering::Relaxed);
    }
    let spare = helper.filter(|_| forked.load(Ordering::Relaxed));
    procs
        .iter()
        .copied()
        .filter(|&p| p > 0 && Some(p) != spare)
        .collect()
}

/// The loop of [`SandboxCgroup::kill`]: `procs` reads the cgroup's processes, `freeze`
/// freezes (true) or thaws it, `kill_all` kills all its processes at once if it can
/// (v2's cgroup.kill). Done once the processes to kill, read while frozen, are none.
fn kill_loop(
    helper: Option<u32>,
    forked: &AtomicBool,
    procs: impl Fn() -> Vec<u32>,
    freeze: impl Fn(bool),
    kill_all: impl Fn() -> bool,
    what: &Path,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    // The usual end: everything already exited, nothing to freeze.
    if kill_targets(&procs(), helper, forked).is_empty() {
        return Ok(());
    }
    loop {
        let spared = helper.is_some() && forked.load(Ordering::Relaxed);
        let left = if !spared && kill_all() {
            kill_targets(&procs(), helper, forked)
        } else {
            freeze(true);
            let left = kill_targets(&procs(), helper, forked);
            for &pid in &left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            freeze(false);
            left
        };
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CgroupError::NotEmpty(what.into()));
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
        let sub = prepare_v2_subtree(&own, 42, false).unwrap();
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
    fn v2_subtree_delegates_cpuset_when_sandboxes_are_pinned() {
        let tmp = tempfile::tempdir().unwrap();
        let own = fake_v2(tmp.path(), "system.slice/app.service");
        fs::create_dir_all(own.join(SUBTREE)).unwrap();
        fs::write(
            own.join(SUBTREE).join("cgroup.controllers"),
            "cpuset cpu memory pids\n",
        )
        .unwrap();
        let sub = prepare_v2_subtree(&own, 42, true).unwrap();
        for dir in [&own, &sub] {
            assert_eq!(
                fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap(),
                "+cpu +memory +pids +cpuset"
            );
        }
        // Not delegated to us: refused at start-up, not at every sandbox.
        let own = fake_v2(tmp.path(), "b");
        fs::write(own.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let err = prepare_v2_subtree(&own, 42, true).unwrap_err();
        assert!(
            matches!(err, CgroupError::V2Controller(ref c, _) if c == "cpuset"),
            "{err}"
        );
    }

    #[test]
    fn v2_subtree_refuses_missing_controller() {
        let tmp = tempfile::tempdir().unwrap();
        let own = fake_v2(tmp.path(), "a");
        fs::write(own.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let err = prepare_v2_subtree(&own, 42, false).unwrap_err();
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
        kill_v2(tmp.path(), None, &AtomicBool::new(false)).unwrap();
    }

    #[test]
    fn the_helper_is_spared_once_it_has_forked_init_and_only_then() {
        let forked = AtomicBool::new(false);
        // The helper alone, waiting for its plan or about to fork init: it goes too.
        assert_eq!(kill_targets(&[7], Some(7), &forked), [7]);
        assert!(!forked.load(Ordering::Relaxed));
        // Init is there: the helper stays, to reap it; and from now on.
        assert_eq!(kill_targets(&[7, 8, 9], Some(7), &forked), [8, 9]);
        assert!(kill_targets(&[7], Some(7), &forked).is_empty());
        // Reaped, the helper's pid is nobody's to spare.
        assert_eq!(kill_targets(&[7, 8], None, &forked), [7, 8]);
        assert!(kill_targets(&[0], None, &forked).is_empty());
    }

    // ---- Where our own cgroup is: fake /proc/self/mountinfo and /proc/self/cgroup in a
    // temp dir, `{T}` standing for the temp dir in mount points.

    /// A systemd host in hybrid mode: every v1 controller and a cgroup2 at unified.
    const HYBRID_MOUNTS: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 22 0:28 / {T}/sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / {T}/sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / {T}/sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
34 31 0:31 / {T}/sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
35 31 0:32 / {T}/sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
36 31 0:33 / {T}/sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
37 31 0:34 / {T}/sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,freezer
38 31 0:35 / {T}/sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,cpuset
";

    /// Docker on a v1 host: each hierarchy's mount is the container's own subtree.
    const DOCKER_V1_MOUNTS: &str = "\
700 650 0:60 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
710 700 0:63 / {T}/sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
711 710 0:30 /docker/abc {T}/sys/fs/cgroup/systemd ro,nosuid,nodev,noexec,relatime master:11 - cgroup cgroup rw,xattr,name=systemd
712 710 0:31 /docker/abc {T}/sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime master:14 - cgroup cgroup rw,memory
713 710 0:32 /docker/abc {T}/sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime master:15 - cgroup cgroup rw,cpu,cpuacct
714 710 0:33 /docker/abc {T}/sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,pids
715 710 0:34 /docker/abc {T}/sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime master:17 - cgroup cgroup rw,freezer
";

    const V2_MOUNTS: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / {T}/sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    /// `/proc/self/cgroup` of a v1 (or hybrid) process at `path` in every hierarchy.
    fn v1_proc(path: &str) -> String {
        [
            "12:cpuset",
            "11:freezer",
            "10:pids",
            "9:cpu,cpuacct",
            "8:memory",
            "1:name=systemd",
            "0:",
        ]
        .iter()
        .map(|h| format!("{h}:{path}\n"))
        .collect()
    }

    /// Writes the fake files into `tmp` and computes our cgroups from them.
    fn own_from_files(
        tmp: &Path,
        version: Version,
        mountinfo: &str,
        proc_cgroup: &str,
    ) -> HashMap<&'static str, Own> {
        let t = tmp.to_str().unwrap();
        fs::write(tmp.join("mountinfo"), mountinfo.replace("{T}", t)).unwrap();
        fs::write(tmp.join("cgroup"), proc_cgroup).unwrap();
        own_cgroups(
            version,
            &fs::read_to_string(tmp.join("mountinfo")).unwrap(),
            &fs::read_to_string(tmp.join("cgroup")).unwrap(),
            v1_controllers(false),
        )
        .unwrap()
    }

    /// `(proc path, directory below the temp dir)` per hierarchy, sorted.
    fn summary(tmp: &Path, own: &HashMap<&'static str, Own>) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = own
            .iter()
            .map(|(name, o)| {
                let dir = o
                    .dir
                    .strip_prefix(tmp)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (name.to_string(), o.proc_path.clone(), dir)
            })
            .collect();
        v.sort();
        v
    }

    fn expected(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        rows.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn own_cgroup_at_the_hierarchy_root() {
        let tmp = tempfile::tempdir().unwrap();
        let own = own_from_files(tmp.path(), Version::V1, HYBRID_MOUNTS, &v1_proc("/"));
        assert_eq!(
            summary(tmp.path(), &own),
            expected(&[
                ("cpu", "/", "sys/fs/cgroup/cpu,cpuacct"),
                ("cpuacct", "/", "sys/fs/cgroup/cpu,cpuacct"),
                ("freezer", "/", "sys/fs/cgroup/freezer"),
                ("memory", "/", "sys/fs/cgroup/memory"),
                ("pids", "/", "sys/fs/cgroup/pids"),
            ])
        );
    }

    #[test]
    fn own_cgroup_in_a_nested_slice() {
        let tmp = tempfile::tempdir().unwrap();
        let s = "/system.slice/jsheets-runtime.service";
        let own = own_from_files(tmp.path(), Version::V1, HYBRID_MOUNTS, &v1_proc(s));
        let d = |c: &str| format!("sys/fs/cgroup/{c}/system.slice/jsheets-runtime.service");
        assert_eq!(
            summary(tmp.path(), &own),
            expected(&[
                ("cpu", s, &d("cpu,cpuacct")),
                ("cpuacct", s, &d("cpu,cpuacct")),
                ("freezer", s, &d("freezer")),
                ("memory", s, &d("memory")),
                ("pids", s, &d("pids")),
            ])
        );
    }

    #[test]
    fn own_cgroup_in_a_container_with_a_private_cgroup_namespace() {
        // Paths relative to the namespace's root, which is the mounts' root.
        let tmp = tempfile::tempdir().unwrap();
        let own = own_from_files(tmp.path(), Version::V1, DOCKER_V1_MOUNTS, &v1_proc("/"));
        assert_eq!(
            summary(tmp.path(), &own),
            expected(&[
                ("cpu", "/", "sys/fs/cgroup/cpu,cpuacct"),
                ("cpuacct", "/", "sys/fs/cgroup/cpu,cpuacct"),
                ("freezer", "/", "sys/fs/cgroup/freezer"),
                ("memory", "/", "sys/fs/cgroup/memory"),
                ("pids", "/", "sys/fs/cgroup/pids"),
            ])
        );
        // A process below the container's root cgroup.
        let own = own_from_files(tmp.path(), Version::V1, DOCKER_V1_MOUNTS, &v1_proc("/x"));
        assert_eq!(own["memory"].dir, tmp.path().join("sys/fs/cgroup/memory/x"));
        assert_eq!(own["memory"].proc_path, "/x");
    }

    #[test]
    fn own_cgroup_in_a_container_in_the_hosts_cgroup_namespace() {
        // /proc/self/cgroup names the host's path; the mount shows only its subtree.
        let tmp = tempfile::tempdir().unwrap();
        let p = "/docker/abc/x";
        let own = own_from_files(tmp.path(), Version::V1, DOCKER_V1_MOUNTS, &v1_proc(p));
        assert_eq!(
            summary(tmp.path(), &own),
            expected(&[
                ("cpu", p, "sys/fs/cgroup/cpu,cpuacct/x"),
                ("cpuacct", p, "sys/fs/cgroup/cpu,cpuacct/x"),
                ("freezer", p, "sys/fs/cgroup/freezer/x"),
                ("memory", p, "sys/fs/cgroup/memory/x"),
                ("pids", p, "sys/fs/cgroup/pids/x"),
            ])
        );
        // At the container's own cgroup: the mount itself.
        let own = own_from_files(
            tmp.path(),
            Version::V1,
            DOCKER_V1_MOUNTS,
            &v1_proc("/docker/abc"),
        );
        assert_eq!(own["pids"].dir, tmp.path().join("sys/fs/cgroup/pids"));
        // A sibling whose name merely starts like the mount's root is not below it.
        assert_eq!(
            cgroup_dir(Path::new("/m"), "/docker/abc", "/docker/abcdef"),
            Path::new("/m/docker/abcdef")
        );
    }

    #[test]
    fn own_cgroup_on_v2() {
        let tmp = tempfile::tempdir().unwrap();
        let s = "/system.slice/jsheets-runtime.service";
        let own = own_from_files(tmp.path(), Version::V2, V2_MOUNTS, &format!("0::{s}\n"));
        assert_eq!(
            summary(tmp.path(), &own),
            expected(&[(
                "unified",
                s,
                "sys/fs/cgroup/system.slice/jsheets-runtime.service"
            )])
        );
        // A container in the host's cgroup namespace, its subtree bind-mounted.
        let scope = "/system.slice/docker-abc.scope";
        let mounts = V2_MOUNTS.replace("30 22 0:26 / ", &format!("30 22 0:26 {scope} "));
        let own = own_from_files(tmp.path(), Version::V2, &mounts, &format!("0::{scope}\n"));
        assert_eq!(own["unified"].dir, tmp.path().join("sys/fs/cgroup"));
        assert_eq!(own["unified"].proc_path, scope);
        // A private cgroup namespace and a fresh mount (the entrypoint's).
        let own = own_from_files(tmp.path(), Version::V2, V2_MOUNTS, "0::/\n");
        assert_eq!(own["unified"].dir, tmp.path().join("sys/fs/cgroup"));
    }

    #[test]
    fn own_cgroup_in_hybrid_mode_uses_the_v1_hierarchies() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_cgroup = "12:cpuset:/\n11:freezer:/f\n10:pids:/p\n9:cpu,cpuacct:/c\n\
                           8:memory:/process_api/ab:cd\n1:name=systemd:/user.slice/s\n0::/user.slice/u\n";
        let own = own_from_files(tmp.path(), Version::V1, HYBRID_MOUNTS, proc_cgroup);
        assert_eq!(
            summary(tmp.path(), &own),
            expected(&[
                ("cpu", "/c", "sys/fs/cgroup/cpu,cpuacct/c"),
                ("cpuacct", "/c", "sys/fs/cgroup/cpu,cpuacct/c"),
                ("freezer", "/f", "sys/fs/cgroup/freezer/f"),
                (
                    "memory",
                    "/process_api/ab:cd",
                    "sys/fs/cgroup/memory/process_api/ab:cd"
                ),
                ("pids", "/p", "sys/fs/cgroup/pids/p"),
            ])
        );
        // The unified hierarchy of a hybrid host, had it been asked for.
        let own = own_from_files(tmp.path(), Version::V2, HYBRID_MOUNTS, proc_cgroup);
        assert_eq!(
            own["unified"].dir,
            tmp.path().join("sys/fs/cgroup/unified/user.slice/u")
        );
    }

    #[test]
    fn a_mount_covered_by_a_later_one_is_not_used() {
        // A subtree bind-mounted over the whole hierarchy's mount point (what the
        // nested-cgroup test does to look like a container); escapes undone.
        let tmp = tempfile::tempdir().unwrap();
        let mounts = format!(
            "{HYBRID_MOUNTS}90 34 0:31 /j\\040k/slice {{T}}/sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        );
        let own = own_from_files(tmp.path(), Version::V1, &mounts, &v1_proc("/j k/slice"));
        assert_eq!(own["memory"].dir, tmp.path().join("sys/fs/cgroup/memory"));
        assert_eq!(
            own["pids"].dir,
            tmp.path().join("sys/fs/cgroup/pids/j k/slice")
        );
        assert_eq!(unescape_mountinfo("a\\040b\\134c\\011"), "a b\\c\t");
    }

    #[test]
    fn a_missing_controller_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().to_str().unwrap();
        let mounts = HYBRID_MOUNTS
            .replace("{T}", t)
            .replace("rw,pids", "rw,nopids");
        let err =
            own_cgroups(Version::V1, &mounts, &v1_proc("/"), v1_controllers(false)).unwrap_err();
        assert!(matches!(err, CgroupError::V1Missing("pids")), "{err}");
    }

    /// Another process of our v2 cgroup moves us into its `service` leaf between our
    /// reading `/proc/self/cgroup` and confirming the directory it names: the path and
    /// the directory are read again, and sandboxes are created where their helpers are
    /// told they are.
    #[test]
    fn a_move_while_our_cgroup_is_found_is_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let mountinfo = V2_MOUNTS.replace("{T}", t.to_str().unwrap());
        let root = fake_v2(t, "sys/fs/cgroup/x");
        fake_v2(t, "sys/fs/cgroup/x/jsheets-runtime");
        // Already moved: the kernel lists us in the leaf only.
        fs::write(root.join("cgroup.procs"), "").unwrap();
        fs::create_dir_all(root.join("service")).unwrap();
        fs::write(root.join("service/cgroup.procs"), "7\n4242\n").unwrap();
        // /proc/self/cgroup read before the move, then after it.
        let reads = std::cell::Cell::new(0);
        let read = |path: &str| -> Result<String> {
            Ok(match path {
                "/proc/self/mountinfo" => mountinfo.clone(),
                _ => {
                    reads.set(reads.get() + 1);
                    if reads.get() == 1 {
                        "0::/x\n"
                    } else {
                        "0::/x/service\n"
                    }
                    .to_string()
                }
            })
        };

        // What one reading gives: the root's path with the leaf's directory.
        let mut once = own_cgroups(Version::V2, &mountinfo, "0::/x\n", &[]).unwrap();
        confirm(&mut once, &mountinfo, 4242);
        assert_eq!(once["unified"].proc_path, "/x");
        assert_eq!(once["unified"].dir, root.join("service"));

        let own = settled_own_cgroups(Version::V2, &[], 4242, read).unwrap();
        assert_eq!(reads.get(), 3, "read before, after, and after again");
        assert_eq!(own["unified"].proc_path, "/x/service");
        assert_eq!(own["unified"].dir, root.join("service"));
        let manager = Manager::with_own(Version::V2, own, None, 4242).unwrap();
        assert_eq!(manager.dirs["unified"], root.join("jsheets-runtime"));
        let (_, path) = &manager.placement("sb-1-1")[0];
        assert_eq!(path, "/x/jsheets-runtime/sb-1-1");
        assert_eq!(
            t.join("sys/fs/cgroup").join(&path[1..]),
            manager.dirs["unified"].join("sb-1-1"),
            "the helper is told the cgroup it is put in"
        );

        // Moved again and again: no guess.
        let flip = std::cell::Cell::new(false);
        let restless = |path: &str| -> Result<String> {
            if path == "/proc/self/mountinfo" {
                return Ok(mountinfo.clone());
            }
            flip.set(!flip.get());
            Ok(if flip.get() {
                "0::/x\n"
            } else {
                "0::/x/service\n"
            }
            .into())
        };
        let err = settled_own_cgroups(Version::V2, &[], 4242, restless).unwrap_err();
        assert!(matches!(err, CgroupError::Unsettled), "{err}");
    }

    #[test]
    fn our_cgroup_is_found_where_the_kernel_lists_us() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let mounts = format!(
            "1 0 0:31 /.. {}/m rw - cgroup cgroup rw,memory\n",
            t.display()
        );
        fs::create_dir_all(t.join("m/a/b")).unwrap();
        fs::write(t.join("m/cgroup.procs"), "1\n").unwrap();
        fs::write(t.join("m/a/cgroup.procs"), "7\n").unwrap();
        fs::write(t.join("m/a/b/cgroup.procs"), "5\n4242\n").unwrap();
        let mut own = HashMap::from([(
            "memory",
            Own {
                proc_path: "/".into(),
                dir: t.join("m"),
            },
        )]);
        confirm(&mut own, &mounts, 4242);
        assert_eq!(own["memory"].dir, t.join("m/a/b"));
        confirm(&mut own, &mounts, 4242);
        assert_eq!(own["memory"].dir, t.join("m/a/b"));
    }

    /// A sandbox cgroup is created, limited and read in the same directories, wherever
    /// our own cgroup sits: here a v1 container in the host's cgroup namespace.
    #[test]
    fn sandbox_cgroups_are_limited_and_read_where_they_are_created_v1() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let own = own_from_files(t, Version::V1, DOCKER_V1_MOUNTS, &v1_proc("/docker/abc/x"));
        let manager = Manager::with_own(Version::V1, own, None, 1).unwrap();
        let mem = t.join("sys/fs/cgroup/memory/x/jsheets-runtime/sb-1-1");
        let cpu = t.join("sys/fs/cgroup/cpu,cpuacct/x/jsheets-runtime/sb-1-1");
        let pids = t.join("sys/fs/cgroup/pids/x/jsheets-runtime/sb-1-1");
        // Swap accounting and socket-buffer accounting are on in this fake kernel.
        fs::create_dir_all(&mem).unwrap();
        fs::write(mem.join("memory.memsw.limit_in_bytes"), "").unwrap();
        fs::write(mem.join("memory.kmem.tcp.limit_in_bytes"), "").unwrap();
        let limits = CgroupLimits {
            memory_bytes: 64 << 20,
            max_processes: 10,
            cpu_millis: 500,
            cpu_shares: 0,
        };
        let sb = manager.create("sb-1-1", &limits).unwrap();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(
            read(mem.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            read(mem.join("memory.memsw.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            read(mem.join("memory.kmem.tcp.limit_in_bytes")),
            (16u64 << 20).to_string()
        );
        assert_eq!(read(pids.join("pids.max")), "10");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
        assert!(t
            .join("sys/fs/cgroup/freezer/x/jsheets-runtime/sb-1-1")
            .is_dir());
        fs::write(cpu.join("cpuacct.usage"), "1500000\n").unwrap();
        fs::write(mem.join("memory.max_usage_in_bytes"), "7340032\n").unwrap();
        fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        fs::write(pids.join("pids.events"), "max 3\n").unwrap();
        assert_eq!(
            sb.usage(),
            Usage {
                cpu_time: Duration::from_micros(1500),
                peak_memory: 7 << 20,
                oom_kills: 1,
                pids_limit_hits: 3,
            }
        );
        assert_eq!(
            manager.placement("sb-1-1"),
            ["cpu", "cpuacct", "freezer", "memory", "pids"].map(|c| (
                c.to_string(),
                "/docker/abc/x/jsheets-runtime/sb-1-1".to_string()
            ))
        );
        // Not removed: rmdir of a plain directory holding files fails (and retries).
        std::mem::forget(sb);
        // A stale sandbox in any hierarchy is found for the sweep; live ones are not.
        fs::create_dir_all(t.join("sys/fs/cgroup/pids/x/jsheets-runtime/sb-999999999-1")).unwrap();
        let me = format!("sb-{}-1", std::process::id());
        fs::create_dir_all(t.join("sys/fs/cgroup/pids/x/jsheets-runtime").join(&me)).unwrap();
        // (sb-1-1's owner, pid 1, is alive; our own pid is a previous run's in a
        // container, where pids repeat across restarts.)
        assert_eq!(manager.stale(), [me, "sb-999999999-1".to_string()]);
    }

    #[test]
    fn sandbox_cgroups_are_limited_and_read_where_they_are_created_v2() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let scope = "/system.slice/docker-abc.scope";
        let mounts = V2_MOUNTS.replace("30 22 0:26 / ", &format!("30 22 0:26 {scope} "));
        let own = own_from_files(t, Version::V2, &mounts, &format!("0::{scope}\n"));
        let root = fake_v2(t, "sys/fs/cgroup");
        fake_v2(t, "sys/fs/cgroup/jsheets-runtime");
        let manager = Manager::with_own(Version::V2, own, None, 42).unwrap();
        // The kernel's interface file, read before it is written.
        let dir = root.join("jsheets-runtime/sb-1-2");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cpu.max"), "max 100000\n").unwrap();
        let limits = CgroupLimits {
            memory_bytes: 64 << 20,
            max_processes: 10,
            cpu_millis: 500,
            cpu_shares: 0,
        };
        let sb = manager.create("sb-1-2", &limits).unwrap();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(read(dir.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(dir.join("memory.swap.max")), "0");
        assert_eq!(read(dir.join("pids.max")), "10");
        assert_eq!(read(dir.join("cpu.max")), "50000 100000");
        fs::write(dir.join("memory.peak"), "4096\n").unwrap();
        assert_eq!(sb.usage().peak_memory, 4096);
        assert_eq!(
            manager.placement("sb-1-2"),
            [(
                String::new(),
                "/system.slice/docker-abc.scope/jsheets-runtime/sb-1-2".to_string()
            )]
        );
        std::mem::forget(sb);
    }

    #[test]
    fn the_placement_is_what_proc_self_cgroup_shows() {
        let v2 = Manager {
            version: Version::V2,
            proc_paths: HashMap::from([(
                "unified",
                "/system.slice/x.service/jsheets-runtime".into(),
            )]),
            dirs: HashMap::from([(
                "unified",
                PathBuf::from("/sys/fs/cgroup/system.slice/x.service/jsheets-runtime"),
            )]),
            cpuset: None,
            v1: None,
            teardowns: Arc::default(),
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
            proc_paths: HashMap::from([
                ("memory", "/a/b/jsheets-runtime".to_string()),
                ("pids", "/jsheets-runtime".to_string()),
                ("cpu", "/jsheets-runtime".to_string()),
            ]),
            dirs: HashMap::new(),
            cpuset: None,
            v1: None,
            teardowns: Arc::default(),
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
