//! The node: its sandboxes, runtimes, access lists, pools, admission and lifecycle
//! tokens, built from the configuration, and the runtimes it resolves requests to.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use evaluator::access::catalog::{Catalog, CatalogError};
use evaluator::access::AccessList;
use evaluator::lang::EvaluatorKind;
use evaluator::pool::{Pool, PoolOptions, PoolSettings};
use evaluator::runtime::{Registry, Runtime};
use evaluator::sandbox::{Limits, Sandboxes};
use tokio_util::sync::CancellationToken;

use super::admission::Admission;
use super::error::ServiceError;
use super::pools::{self, Machine};
use crate::config::{Config, EvaluationConfig};
use crate::metrics::Metrics;

/// A pre-started sandbox waiting longer is replaced.
const POOLED_MAX_AGE: Duration = Duration::from_secs(600);

/// Why the node cannot serve the runtimes it was given.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The access list of a runtime cannot be loaded: the node does not start on it.
    #[error("runtime {runtime}")]
    AccessList {
        runtime: String,
        #[source]
        source: CatalogError,
    },
}

/// Shared state of the service.
#[derive(Debug)]
pub struct Node {
    pub sandboxes: Sandboxes,
    pub registry: RwLock<Arc<Registry>>,
    /// Runtime name → the access list its snippets are held to (absent: none).
    pub access_lists: RwLock<Arc<BTreeMap<String, Arc<AccessList>>>>,
    /// Fired once the runtimes are loaded; until then evaluations are UNAVAILABLE.
    pub ready: CancellationToken,
    pub config: EvaluationConfig,
    pub admission: Admission,
    pub service_id: String,
    /// Set when draining: new evaluations are refused.
    pub draining: CancellationToken,
    /// Fired after the grace period: running evaluations are killed.
    pub kill_all: CancellationToken,
    pub active: AtomicUsize,
    pub metrics: Arc<Metrics>,
    /// Runtime name → its pool of sandboxes started ahead of requests.
    pub pools: RwLock<Arc<BTreeMap<String, Pool>>>,
}

impl Node {
    /// A node of `config` on `sandboxes`, with no runtime yet: not ready until
    /// [`Node::load_runtimes`].
    pub fn new(config: &Config, sandboxes: Sandboxes) -> Node {
        let evaluation = &config.evaluation;
        Node {
            sandboxes,
            registry: RwLock::new(Arc::new(Registry::default())),
            access_lists: RwLock::new(Arc::new(Default::default())),
            ready: CancellationToken::new(),
            admission: Admission::new(
                evaluation.max_concurrent,
                evaluation.queue_size,
                Duration::from_millis(evaluation.queue_wait_ms),
                // Three quarters of what the node has (its cgroup's limit in a
                // container), so that load never pushes the node itself out of memory.
                super::pools::Machine::detect().memory_bytes / 4 * 3,
            ),
            config: evaluation.clone(),
            service_id: config.service.id.clone(),
            draining: CancellationToken::new(),
            kill_all: CancellationToken::new(),
            active: AtomicUsize::new(0),
            metrics: Metrics::new(&config.service.id),
            pools: RwLock::new(Arc::new(Default::default())),
        }
    }

    /// Takes the runtimes of `registry` with their access lists (configuration over the
    /// runtime's own), starts the configured pools, and from then on accepts
    /// evaluations. A list that cannot be loaded is an error and nothing is taken.
    pub fn load_runtimes(&self, registry: Registry) -> Result<(), NodeError> {
        let lists = access_lists(&registry, &self.config)?;
        let pools = self.start_pools(&registry, &lists);
        *self.pools.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pools);
        *self.access_lists.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(lists);
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry);
        self.ready.cancel();
        Ok(())
    }

    pub fn pools(&self) -> Arc<BTreeMap<String, Pool>> {
        self.pools.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn access_lists(&self) -> Arc<BTreeMap<String, Arc<AccessList>>> {
        self.access_lists
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves the requested runtime; empty means the configured default.
    pub fn runtime(&self, spec: &str) -> Result<Runtime, ServiceError> {
        let spec = if spec.is_empty() {
            self.config.default_runtime.as_str()
        } else {
            spec
        };
        self.registry()
            .resolve(spec)
            .cloned()
            .map_err(|e| ServiceError::NotFound(e.to_string()))
    }

    /// Starts the pools of [`pools::plan`] for the installed runtimes on this machine
    /// and logs what was chosen and why. Waiting sandboxes hold the maximum limits
    /// (the interpreter is sized for them) but their pool's idle memory, until a
    /// request's limits replace them.
    fn start_pools(
        &self,
        registry: &Registry,
        lists: &BTreeMap<String, Arc<AccessList>>,
    ) -> BTreeMap<String, Pool> {
        let installed: Vec<(String, EvaluatorKind)> = registry
            .list()
            .iter()
            .map(|r| (r.name().to_owned(), r.launch().kind))
            .collect();
        for (name, pool) in &self.config.pool {
            if pool.size > 0 && !installed.iter().any(|(n, _)| n == name) {
                tracing::warn!(runtime = %name, "evaluation.pool names a runtime that is not installed");
            }
        }
        let machine = Machine::detect();
        let plan = pools::plan(&self.config, &installed, machine);
        let why = match self.config.pool_memory_bytes {
            Some(_) => "evaluation.poolMemoryBytes",
            None => "a quarter of the node's memory",
        };
        let source = if !self.config.pool.is_empty() {
            "evaluation.pool"
        } else if self.config.pool_defaults {
            "defaults for the machine"
        } else {
            "none (evaluation.poolDefaults = false)"
        };
        tracing::info!(
            pools = source,
            cpus = machine.cpus,
            memory_mib = machine.memory_bytes >> 20,
            budget_mib = plan.budget >> 20,
            budget = why,
            used_mib = plan.total_bytes() >> 20,
            sandboxes = plan.total_size(),
            "pre-started sandboxes"
        );
        let mut pools = BTreeMap::new();
        for planned in &plan.pools {
            let name = &planned.runtime;
            if planned.size < planned.wanted {
                tracing::info!(
                    runtime = %name,
                    wanted = planned.wanted,
                    size = planned.size,
                    budget_mib = plan.budget >> 20,
                    "pool cut to fit the memory budget"
                );
            }
            if planned.size == 0 {
                continue;
            }
            let Some(runtime) = registry.get(name) else {
                continue;
            };
            let mut launch = runtime.launch();
            launch.access_list = lists.get(name).cloned();
            let max = &self.config.limits.maxima;
            let idle_limits = Limits {
                wall_time: Duration::from_millis(max.wall_time_ms),
                cpu_time: Duration::from_millis(max.cpu_time_ms),
                memory_bytes: max.memory_bytes.max(planned.idle_memory_bytes),
                max_processes: max.max_processes,
                output_bytes: max.output_bytes,
                ..Limits::default()
            };
            let settings = PoolSettings {
                size: planned.size,
                idle_limits,
                max_age: POOLED_MAX_AGE,
                zygote: true,
            };
            let options = PoolOptions {
                waiting_memory_bytes: Some(planned.idle_memory_bytes),
                max_starts: machine.cpus,
            };
            match Pool::start_with(self.sandboxes.clone(), launch, settings, options) {
                Ok(p) => {
                    tracing::info!(
                        runtime = %name,
                        size = planned.size,
                        idle_memory_mib = planned.idle_memory_bytes >> 20,
                        configured = planned.configured,
                        "pre-starting sandboxes"
                    );
                    pools.insert(name.clone(), p);
                }
                Err(e) => tracing::warn!(runtime = %name, error = %e, "not pre-starting sandboxes"),
            }
        }
        pools
    }
}

/// The access list of every runtime in `registry`: configuration over the runtime's
/// own. Any list that cannot be loaded is an error: the node does not start on it.
fn access_lists(
    registry: &Registry,
    config: &EvaluationConfig,
) -> Result<BTreeMap<String, Arc<AccessList>>, NodeError> {
    let catalog = Catalog::new(Some(config.access_lists_dir.clone()));
    let mut lists = BTreeMap::new();
    for runtime in registry.list() {
        let configured = config.access_lists.get(runtime.name()).map(String::as_str);
        match catalog.for_runtime(runtime.access_list(), configured) {
            Ok(Some(list)) => {
                tracing::info!(runtime = runtime.name(), list = list.name(), file = %list.file().display(), "access list");
                lists.insert(runtime.name().to_owned(), Arc::new(list));
            }
            Ok(None) => {
                tracing::warn!(
                    runtime = runtime.name(),
                    "no access list: snippets are held by the sandbox only"
                );
            }
            Err(source) => {
                return Err(NodeError::AccessList {
                    runtime: runtime.name().to_owned(),
                    source,
                })
            }
        }
    }
    for name in config.access_lists.keys() {
        if !registry.list().iter().any(|r| r.name() == name) {
            tracing::warn!(runtime = %name, "evaluation.accessLists names a runtime that is not installed");
        }
    }
    Ok(lists)
}
