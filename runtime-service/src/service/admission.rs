//! Admission control: a gate of evaluation slots and a memory budget, before which
//! requests wait in a bounded queue for a bounded time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why an evaluation is not admitted: the node is at capacity.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("the evaluation's memory limit ({mib} MiB) exceeds this node's whole budget ({budget_mib} MiB)")]
    OverBudget { mib: u32, budget_mib: u32 },
    #[error("node at capacity: {running} evaluations running and {queue_size} waiting; retry later or on another node")]
    QueueFull { running: usize, queue_size: usize },
    #[error("node at capacity: no slot within {} ms; retry later or on another node", wait.as_millis())]
    NoSlot { wait: Duration },
}

/// At most `max_concurrent` evaluations at once, a bounded queue waiting a bounded
/// time, and a memory budget so that the sum of the admitted evaluations' memory
/// limits always fits the node.
#[derive(Debug)]
pub struct Admission {
    max_concurrent: usize,
    slots: Arc<Semaphore>,
    memory_mib: Arc<Semaphore>,
    budget_mib: u32,
    queue_size: usize,
    waiting: AtomicUsize,
    wait: Duration,
}

/// What an admitted evaluation holds until it ends.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(
        max_concurrent: usize,
        queue_size: usize,
        wait: Duration,
        budget_bytes: u64,
    ) -> Self {
        let budget_mib = u32::try_from(budget_bytes >> 20).unwrap_or(u32::MAX).max(1);
        Admission {
            max_concurrent: max_concurrent.max(1),
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            memory_mib: Arc::new(Semaphore::new(budget_mib as usize)),
            budget_mib,
            queue_size,
            waiting: AtomicUsize::new(0),
            wait,
        }
    }

    /// Memory budget: three quarters of what the machine has, so that load never
    /// pushes the node itself out of memory.
    pub fn machine_budget() -> u64 {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(4 << 20);
        total * 1024 / 4 * 3
    }

    /// Waits for a slot and `memory_bytes` of the budget, within the queue's bounds.
    pub async fn admit(&self, memory_bytes: u64) -> Result<Admitted, AdmissionError> {
        let mib = u32::try_from(memory_bytes.div_ceil(1 << 20))
            .unwrap_or(u32::MAX)
            .max(1);
        if mib > self.budget_mib {
            return Err(AdmissionError::OverBudget {
                mib,
                budget_mib: self.budget_mib,
            });
        }
        let immediate = (
            self.slots.clone().try_acquire_owned(),
            self.memory_mib.clone().try_acquire_many_owned(mib),
        );
        if let (Ok(slot), Ok(memory)) = immediate {
            return Ok(Admitted {
                _slot: slot,
                _memory: memory,
            });
        }
        drop(immediate);
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue_size {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(AdmissionError::QueueFull {
                running: self.slots_in_use(),
                queue_size: self.queue_size,
            });
        }
        let acquired = tokio::time::timeout(self.wait, async {
            let slot = self.slots.clone().acquire_owned().await;
            let memory = self.memory_mib.clone().acquire_many_owned(mib).await;
            (slot, memory)
        })
        .await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match acquired {
            Ok((Ok(slot), Ok(memory))) => Ok(Admitted {
                _slot: slot,
                _memory: memory,
            }),
            _ => Err(AdmissionError::NoSlot { wait: self.wait }),
        }
    }

    fn slots_in_use(&self) -> usize {
        self.max_concurrent - self.slots.available_permits()
    }
}
