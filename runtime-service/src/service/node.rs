//! The node: its sandboxes, runtimes, access lists, pools, admission and lifecycle
//! tokens, built from the configuration, and the runtimes it resolves requests to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use evaluator::access::catalog::{Catalog, CatalogError};
use evaluator::access::AccessList;
use evaluator::pool::{Pool, PoolSettings};
use evaluator::runtime::{Registry, Runtime};
use evaluator::sandbox::{Limits, Sandboxes};
use tokio_util::sync::CancellationToken;

use super::admission::Admission;
use super::error::ServiceError;
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
                Admission::machine_budget(),
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

    /// Refills compete with evaluations for the CPUs: none while every slot is busy.
    pub fn pace_pools(&self) {
        let busy = self.active.load(Ordering::SeqCst) >= self.config.max_concurrent;
        for pool in self.pools().values() {
            pool.set_paused(busy);
        }
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

    /// Starts the pools configured in `evaluation.pool` (runtimes that cannot be
    /// pre-started are reported and skipped). Waiting sandboxes hold the maximum limits
    /// (memory: `idleMemoryBytes` if set) until a request's replace them.
    fn start_pools(
        &self,
        registry: &Registry,
        lists: &BTreeMap<String, Arc<AccessList>>,
    ) -> BTreeMap<String, Pool> {
        let mut pools = BTreeMap::new();
        for (name, pool) in &self.config.pool {
            if pool.size == 0 {
                continue;
            }
            let Some(runtime) = registry.list().iter().find(|r| r.name() == name) else {
                tracing::warn!(runtime = %name, "evaluation.pool names a runtime that is not installed");
                continue;
            };
            let mut launch = runtime.launch();
            launch.access_list = lists.get(name).cloned();
            let max = &self.config.limits.maxima;
            let mut idle_limits = Limits {
                wall_time: Duration::from_millis(max.wall_time_ms),
                cpu_time: Duration::from_millis(max.cpu_time_ms),
                memory_bytes: pool.idle_memory_bytes.unwrap_or(max.memory_bytes),
                max_processes: max.max_processes,
                output_bytes: max.output_bytes,
                ..Limits::default()
            };
            idle_limits.memory_bytes = idle_limits.memory_bytes.max(64 << 20);
            let settings = PoolSettings {
                size: pool.size,
                idle_limits,
                max_age: POOLED_MAX_AGE,
                zygote: true,
            };
            match Pool::start(self.sandboxes.clone(), launch, settings) {
                Ok(p) => {
                    tracing::info!(runtime = %name, size = pool.size, "pre-starting sandboxes");
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
