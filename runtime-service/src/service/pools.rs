//! Which pools of pre-started sandboxes a node keeps: the default ones sized for the
//! machine, the configured ones, and the memory budget they all fit in.

use evaluator::lang::EvaluatorKind;

use crate::config::EvaluationConfig;

/// Runtimes that get a pool by default besides the default runtime: the ones `serve`
/// builds when none is installed.
pub const DEFAULT_POOLED: &[(&str, EvaluatorKind)] = &[
    ("openjdk-17", EvaluatorKind::Jshell),
    ("python-3.11", EvaluatorKind::Python),
];

/// A memory limit at or above this means none (cgroup v1 writes "unlimited" as a
/// number near `i64::MAX`).
const NO_LIMIT: u64 = 1 << 62;

/// What the node has to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// CPUs this process may use (affinity and cgroup quota included).
    pub cpus: usize,
    /// Bytes of memory the node may use: the machine's, or its cgroup's limit if lower.
    pub memory_bytes: u64,
}

impl Machine {
    /// This process's machine: [`std::thread::available_parallelism`], and the lower of
    /// `MemTotal` and the memory limit of the node's cgroup and its ancestors (in a
    /// container the container's limit is what the node has).
    pub fn detect() -> Machine {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(4 << 30, |kib| kib * 1024);
        Machine {
            cpus,
            memory_bytes: total.min(cgroup_memory_limit().unwrap_or(u64::MAX)),
        }
    }
}

/// The lowest memory limit on the way from the node's own memory cgroup up to the
/// root of its mount (v2 `memory.max`, v1 `memory.limit_in_bytes`), if any.
fn cgroup_memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // v1: "N:memory[,…]:/path"; v2: "0::/path".
    let (v2, path) = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if controllers.split(',').any(|c| c == "memory") {
                Some((false, path))
            } else {
                None
            }
        })
        .or_else(|| {
            cgroups
                .lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| (true, p)))
        })?;
    // The mount of that hierarchy: "… root mountpoint … - fstype source options".
    let (root, point) = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut fs = right.split_whitespace();
        let (fstype, _, options) = (fs.next()?, fs.next()?, fs.next()?);
        let ours = if v2 {
            fstype == "cgroup2"
        } else {
            fstype == "cgroup" && options.split(',').any(|o| o == "memory")
        };
        let fields: Vec<&str> = left.split_whitespace().collect();
        ours.then(|| (fields.get(3).copied(), fields.get(4).copied()))
            .and_then(|(r, p)| Some((r?, p?)))
    })?;
    let below = path.strip_prefix(root).unwrap_or(path).trim_matches('/');
    let file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let mut dir = std::path::PathBuf::from(point).join(below);
    let mut lowest: Option<u64> = None;
    loop {
        let limit = std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&v| v < NO_LIMIT);
        if let Some(v) = limit {
            lowest = Some(lowest.map_or(v, |l| l.min(v)));
        }
        if dir == std::path::Path::new(point) || !dir.pop() {
            return lowest;
        }
    }
}

/// Sandboxes a default pool of a runtime of `kind` keeps on a machine with `cpus`.
///
/// Evaluation slots default to one per CPU. A Python sandbox is forked from a zygote
/// (about 5 ms) and its memory is mostly the zygote's, shared (see
/// [`idle_memory_estimate`]): two per CPU, at least 4 and at most 16, let every slot
/// take a warm one at once while as many refill, and absorb a burst. A shell sandbox
/// starts in about 5 ms: one per CPU, at least 2 so that one waits while the other
/// refills, at most 8. A JShell sandbox is a replay JVM waiting for a program the
/// pool's compile host compiles (no JShell or javac in it, ready in about 150 ms):
/// one per CPU, at least 2 so that one waits while another starts, at most 8. A Node
/// sandbox starts its interpreter: one per two CPUs, at least 1, at most 4.
pub fn default_size(kind: EvaluatorKind, cpus: usize) -> usize {
    match kind {
        EvaluatorKind::Python => (2 * cpus).clamp(4, 16),
        EvaluatorKind::Command => cpus.clamp(2, 8),
        EvaluatorKind::Jshell => cpus.clamp(2, 8),
        EvaluatorKind::Node => (cpus / 2).clamp(1, 4),
    }
}

/// Memory a waiting sandbox of `kind` may hold (its cgroup's limit while it waits),
/// when its pool sets no `idleMemoryBytes`: the peak measured while one starts and
/// waits (cgroup v1 `memory.max_usage_in_bytes`, 2-CPU development machine, default
/// access lists: Python 9 to 20 MiB, a JShell replay 25 MiB, the first sandbox of a
/// runtime also charged its files' page cache) with room to spare, since a start above
/// it is killed and retried. A JShell pool's compile host has a limit of its own
/// (`evaluator::compile_host::HOST_MEMORY`). Node and shell-like runtimes are not measured: guesses.
pub fn idle_memory_estimate(kind: EvaluatorKind) -> u64 {
    match kind {
        EvaluatorKind::Python => 64 << 20,
        EvaluatorKind::Jshell => 96 << 20,
        EvaluatorKind::Node => 128 << 20,
        EvaluatorKind::Command => 16 << 20,
    }
}

/// The least memory a waiting sandbox is given, whatever is configured: below it an
/// interpreter may not get warm at all.
pub const MIN_IDLE_MEMORY: u64 = 16 << 20;

/// One pool as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPool {
    pub runtime: String,
    pub kind: EvaluatorKind,
    /// Sandboxes kept, after the budget.
    pub size: usize,
    /// Sandboxes asked for (configured, or the default for the machine).
    pub wanted: usize,
    /// The memory limit of each waiting sandbox.
    pub idle_memory_bytes: u64,
    /// From `evaluation.pool` rather than the defaults.
    pub configured: bool,
}

impl PlannedPool {
    fn bytes(&self) -> u64 {
        // A JShell pool's sandboxes are replays of what its compile host compiles
        // (see `evaluator::compile_host`): the host comes with any of them.
        let host = match self.kind {
            EvaluatorKind::Jshell if self.size > 0 => evaluator::compile_host::HOST_MEMORY,
            _ => 0,
        };
        (self.size as u64 * self.idle_memory_bytes).saturating_add(host)
    }
}

/// The pools a node keeps and the budget they fit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPlan {
    /// Pools of size 0 (cut by the budget) included, so that the log can say so.
    pub pools: Vec<PlannedPool>,
    pub budget: u64,
}

impl PoolPlan {
    /// Memory all waiting sandboxes may hold together.
    pub fn total_bytes(&self) -> u64 {
        self.pools.iter().map(PlannedPool::bytes).sum()
    }

    pub fn total_size(&self) -> usize {
        self.pools.iter().map(|p| p.size).sum()
    }
}

/// The pools for the `installed` runtimes (name, kind) on `machine`: those of
/// `evaluation.pool` if it has any (a table replaces the defaults), otherwise, with
/// `evaluation.poolDefaults`, the default runtime and [`DEFAULT_POOLED`], sized by
/// [`default_size`]; then cut to `evaluation.poolMemoryBytes` (default a quarter of
/// the machine's memory) by [`fit_budget`]. Runtimes not installed are left out
/// (the node warns about configured ones).
pub fn plan(
    config: &EvaluationConfig,
    installed: &[(String, EvaluatorKind)],
    machine: Machine,
) -> PoolPlan {
    let kind_of = |name: &str| installed.iter().find(|(n, _)| n == name).map(|(_, k)| *k);
    let mut pools = Vec::new();
    if !config.pool.is_empty() {
        for (name, p) in &config.pool {
            let Some(kind) = kind_of(name) else { continue };
            if p.size == 0 {
                continue;
            }
            pools.push(PlannedPool {
                runtime: name.clone(),
                kind,
                size: p.size,
                wanted: p.size,
                idle_memory_bytes: p
                    .idle_memory_bytes
                    .unwrap_or_else(|| idle_memory_estimate(kind))
                    .max(MIN_IDLE_MEMORY),
                configured: true,
            });
        }
    } else if config.pool_defaults {
        let names = std::iter::once(config.default_runtime.as_str())
            .chain(DEFAULT_POOLED.iter().map(|(n, _)| *n));
        for name in names {
            let Some(kind) = kind_of(name) else { continue };
            if pools.iter().any(|p: &PlannedPool| p.runtime == name) {
                continue;
            }
            let size = default_size(kind, machine.cpus);
            pools.push(PlannedPool {
                runtime: name.to_owned(),
                kind,
                size,
                wanted: size,
                idle_memory_bytes: idle_memory_estimate(kind),
                configured: false,
            });
        }
    }
    let budget = config.pool_memory_bytes.unwrap_or(machine.memory_bytes / 4);
    fit_budget(&mut pools, budget);
    PoolPlan { pools, budget }
}

/// The most sandboxes the pools of `config` can hold on `cpus` CPUs, whatever turns
/// out to be installed (the budget not counted): what the open-files limit must allow
/// for before the runtimes are loaded. A default runtime of unknown kind counts as
/// Python, the kind with the largest default pool. Each pool counts one more sandbox:
/// its zygote or compile host.
pub fn most_pooled(config: &EvaluationConfig, cpus: usize) -> usize {
    if config.pool_memory_bytes == Some(0) {
        return 0;
    }
    if !config.pool.is_empty() {
        return config
            .pool
            .values()
            .filter(|p| p.size > 0)
            .map(|p| p.size + 1)
            .sum();
    }
    if !config.pool_defaults {
        return 0;
    }
    let kind_of = |name: &str| {
        DEFAULT_POOLED
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(EvaluatorKind::Python, |(_, k)| *k)
    };
    let mut names = vec![config.default_runtime.as_str()];
    names.extend(DEFAULT_POOLED.iter().map(|(n, _)| *n));
    names.sort_unstable();
    names.dedup();
    // Each pool may also keep a warm process of its own: a zygote or a compile host.
    names
        .iter()
        .map(|n| default_size(kind_of(n), cpus) + 1)
        .sum()
}

/// Cuts pool sizes until all waiting sandboxes fit in `budget` bytes: one sandbox at a
/// time from the pool holding the most memory, first down to one sandbox each (a
/// runtime keeps one warm sandbox as long as any other keeps two), then to none.
pub fn fit_budget(pools: &mut [PlannedPool], budget: u64) {
    while pools.iter().map(PlannedPool::bytes).sum::<u64>() > budget {
        let largest = |floor: usize| {
            (0..pools.len())
                .filter(|&i| pools[i].size > floor)
                .max_by_key(|&i| (pools[i].bytes(), pools[i].idle_memory_bytes))
        };
        let Some(i) = largest(1).or_else(|| largest(0)) else {
            return;
        };
        pools[i].size -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolConfig;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn installed() -> Vec<(String, EvaluatorKind)> {
        vec![
            ("openjdk-17".into(), EvaluatorKind::Jshell),
            ("python-3.11".into(), EvaluatorKind::Python),
            ("python-3.11-ml".into(), EvaluatorKind::Python),
            ("shell".into(), EvaluatorKind::Command),
        ]
    }

    fn sizes(plan: &PoolPlan) -> Vec<(&str, usize)> {
        plan.pools
            .iter()
            .map(|p| (p.runtime.as_str(), p.size))
            .collect()
    }

    #[test]
    fn default_sizes_follow_the_cpus() {
        use EvaluatorKind::{Jshell, Python};
        let table = [
            (1, 4, 2),
            (2, 4, 2),
            (4, 8, 4),
            (8, 16, 8),
            (16, 16, 8),
            (64, 16, 8),
        ];
        for (cpus, python, java) in table {
            assert_eq!(default_size(Python, cpus), python, "{cpus} CPUs");
            assert_eq!(default_size(Jshell, cpus), java, "{cpus} CPUs");
        }
    }

    #[test]
    fn defaults_are_the_default_runtime_java_and_python_installed() {
        let config = EvaluationConfig {
            default_runtime: "shell".into(),
            ..EvaluationConfig::default()
        };
        let machine = Machine {
            cpus: 4,
            memory_bytes: 16 * GIB,
        };
        let plan = plan(&config, &installed(), machine);
        assert_eq!(
            sizes(&plan),
            [("shell", 4), ("openjdk-17", 4), ("python-3.11", 8)]
        );
        assert_eq!(plan.budget, 4 * GIB);
        assert!(plan
            .pools
            .iter()
            .all(|p| !p.configured && p.size == p.wanted));
        // Only what is installed.
        let only_python = [("python-3.11".to_string(), EvaluatorKind::Python)];
        let plan = super::plan(&EvaluationConfig::default(), &only_python, machine);
        assert_eq!(sizes(&plan), [("python-3.11", 8)]);
        assert_eq!(plan.pools[0].idle_memory_bytes, 64 * MIB);
    }

    #[test]
    fn a_table_replaces_the_defaults_and_size_0_or_the_switch_turns_pools_off() {
        let machine = Machine {
            cpus: 2,
            memory_bytes: 8 * GIB,
        };
        let mut config = EvaluationConfig::default();
        config.pool.insert(
            "python-3.11-ml".into(),
            PoolConfig {
                size: 3,
                idle_memory_bytes: Some(100 * MIB),
            },
        );
        config.pool.insert(
            "python-3.11".into(),
            PoolConfig {
                size: 0,
                idle_memory_bytes: None,
            },
        );
        config.pool.insert(
            "not-installed".into(),
            PoolConfig {
                size: 1,
                idle_memory_bytes: None,
            },
        );
        let plan = plan(&config, &installed(), machine);
        assert_eq!(sizes(&plan), [("python-3.11-ml", 3)]);
        assert!(plan.pools[0].configured);
        assert_eq!(plan.pools[0].idle_memory_bytes, 100 * MIB);

        let off = EvaluationConfig {
            pool_defaults: false,
            ..EvaluationConfig::default()
        };
        assert!(super::plan(&off, &installed(), machine).pools.is_empty());
        let no_budget = EvaluationConfig {
            pool_memory_bytes: Some(0),
            ..EvaluationConfig::default()
        };
        let plan = super::plan(&no_budget, &installed(), machine);
        assert_eq!(plan.total_size(), 0);
        assert_eq!(most_pooled(&no_budget, 2), 0);
        assert_eq!(most_pooled(&off, 2), 0);
        // python-3.11-ml's 3 and the configured one not installed, each with its own
        // zygote or compile host.
        assert_eq!(most_pooled(&config, 2), 6);
    }

    #[test]
    fn most_pooled_counts_every_default_as_if_installed() {
        // openjdk-17 is the default runtime: 2 + python-3.11's 4 on 2 CPUs, and a
        // compile host and a zygote.
        assert_eq!(most_pooled(&EvaluationConfig::default(), 2), 8);
        let shell = EvaluationConfig {
            default_runtime: "shell".into(),
            ..EvaluationConfig::default()
        };
        // A default runtime of unknown kind counts as the largest pool (Python's).
        assert_eq!(most_pooled(&shell, 8), 17 + 9 + 17);
    }

    #[test]
    fn the_budget_is_a_quarter_of_the_machine_and_cuts_the_largest_first() {
        // 2 CPUs: openjdk-17 (the default runtime) 2 × 96 MiB and its compile host's
        // 640 MiB, python-3.11 4 × 64 MiB.
        let machine = |memory_bytes| Machine {
            cpus: 2,
            memory_bytes,
        };
        let config = EvaluationConfig::default();
        let fits = plan(&config, &installed(), machine(8 * GIB));
        assert_eq!(sizes(&fits), [("openjdk-17", 2), ("python-3.11", 4)]);
        assert_eq!(fits.total_bytes(), 1088 * MIB);
        // 1 GiB of budget: Java, the largest, down to one replay (736)...
        let tight = plan(&config, &installed(), machine(4 * GIB));
        assert_eq!(sizes(&tight), [("openjdk-17", 1), ("python-3.11", 4)]);
        assert!(tight.total_bytes() <= tight.budget);
        // ...and with 768 MiB, Python down to one, then Java goes.
        let tighter = plan(&config, &installed(), machine(3 * GIB));
        assert_eq!(sizes(&tighter), [("openjdk-17", 0), ("python-3.11", 1)]);
    }

    #[test]
    fn fit_budget_keeps_one_each_as_long_as_it_can() {
        let pool = |runtime: &str, size, idle_memory_bytes| PlannedPool {
            runtime: runtime.into(),
            kind: EvaluatorKind::Python,
            size,
            wanted: size,
            idle_memory_bytes,
            configured: true,
        };
        let mut pools = vec![pool("a", 4, 100), pool("b", 8, 10), pool("c", 2, 50)];
        fit_budget(&mut pools, 1000);
        assert_eq!(pools.iter().map(|p| p.size).collect::<Vec<_>>(), [4, 8, 2]);
        fit_budget(&mut pools, 300);
        // a, the largest each time: 400 → 100, and 280 fit.
        assert_eq!(pools.iter().map(|p| p.size).collect::<Vec<_>>(), [1, 8, 2]);
        // c to one, b to one, and only then a to none.
        fit_budget(&mut pools, 120);
        assert_eq!(pools.iter().map(|p| p.size).collect::<Vec<_>>(), [0, 1, 1]);
        fit_budget(&mut pools, 0);
        assert!(pools.iter().all(|p| p.size == 0));
    }
}
