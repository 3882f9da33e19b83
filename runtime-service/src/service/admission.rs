//! Admission control: a gate of evaluation slots and a memory budget, before which
//! requests wait in a bounded queue for a bounded time. Slots are shared fairly
//! between runtimes: a freed slot goes to the waiting request of the runtime with the
//! fewest evaluations running (the oldest among equals), so that one whose
//! evaluations are long (a JVM starting) cannot hold every slot while another's short
//! ones queue behind it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

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
    slots: Arc<Slots>,
    memory_mib: Arc<Semaphore>,
    budget_mib: u32,
    queue_size: usize,
    wait: Duration,
}

/// What an admitted evaluation holds until it ends.
#[derive(Debug)]
pub struct Admitted {
    _slot: Slot,
    _memory: OwnedSemaphorePermit,
}

/// The evaluation slots and who waits for them.
#[derive(Debug)]
struct Slots {
    max: usize,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Slots in use, in all and per runtime.
    used: usize,
    running: HashMap<String, usize>,
    /// In arrival order.
    waiting: VecDeque<Waiter>,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    runtime: String,
    /// Told once the slot is its own (already counted as used).
    given: oneshot::Sender<()>,
}

/// One slot in use; given back (to a waiter, if any) when dropped.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    runtime: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.slots.lock();
        st.give_back(&self.runtime);
        self.slots.dispatch(&mut st);
    }
}

impl SlotState {
    fn take(&mut self, runtime: &str) {
        self.used += 1;
        *self.running.entry(runtime.to_string()).or_default() += 1;
    }

    fn give_back(&mut self, runtime: &str) {
        self.used -= 1;
        if let Some(n) = self.running.get_mut(runtime) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(runtime);
            }
        }
    }
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives free slots to waiters: each to the oldest waiter of the runtime with the
    /// fewest evaluations running.
    fn dispatch(&self, st: &mut SlotState) {
        while st.used < self.max && !st.waiting.is_empty() {
            let pick = st
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(i, w)| (st.running.get(&w.runtime).copied().unwrap_or(0), *i))
                .map(|(i, _)| i);
            let Some(w) = pick.and_then(|i| st.waiting.remove(i)) else {
                return;
            };
            st.take(&w.runtime);
            if w.given.send(()).is_err() {
                // Gone (its request ended): the slot goes to the next one.
                st.give_back(&w.runtime);
            }
        }
    }
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
            slots: Arc::new(Slots {
                max: max_concurrent.max(1),
                state: Mutex::new(SlotState::default()),
            }),
            memory_mib: Arc::new(Semaphore::new(budget_mib as usize)),
            budget_mib,
            queue_size,
            wait,
        }
    }

    /// How many evaluations of `memory_bytes` each the whole memory budget holds at
    /// once; at least 1 (one over the budget is then refused by [`Admission::admit`]).
    pub fn fitting(&self, memory_bytes: u64) -> usize {
        let mib = memory_bytes.div_ceil(1 << 20).max(1);
        usize::try_from(u64::from(self.budget_mib) / mib)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// Waits for a slot for an evaluation on `runtime` and `memory_bytes` of the
    /// budget, within the queue's bounds.
    pub async fn admit(
        &self,
        runtime: &str,
        memory_bytes: u64,
    ) -> Result<Admitted, AdmissionError> {
        let mib = u32::try_from(memory_bytes.div_ceil(1 << 20))
            .unwrap_or(u32::MAX)
            .max(1);
        if mib > self.budget_mib {
            return Err(AdmissionError::OverBudget {
                mib,
                budget_mib: self.budget_mib,
            });
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        let slot = self.slot(runtime, deadline).await?;
        let memory = match self.memory_mib.clone().try_acquire_many_owned(mib) {
            Ok(m) => m,
            Err(_) => {
                tokio::time::timeout_at(deadline, self.memory_mib.clone().acquire_many_owned(mib))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .ok_or(AdmissionError::NoSlot { wait: self.wait })?
            }
        };
        Ok(Admitted {
            _slot: slot,
            _memory: memory,
        })
    }

    /// A slot for `runtime`: at once if one is free and nobody waits, else in the queue
    /// until `deadline`.
    async fn slot(
        &self,
        runtime: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Slot, AdmissionError> {
        let slot = || Slot {
            slots: self.slots.clone(),
            runtime: runtime.to_string(),
        };
        let (id, mut given) = {
            let mut st = self.slots.lock();
            if st.used < self.slots.max && st.waiting.is_empty() {
                st.take(runtime);
                return Ok(slot());
            }
            if st.waiting.len() >= self.queue_size {
                return Err(AdmissionError::QueueFull {
                    running: st.used,
                    queue_size: self.queue_size,
                });
            }
            let (tx, rx) = oneshot::channel();
            let id = st.next_id;
            st.next_id += 1;
            st.waiting.push_back(Waiter {
                id,
                runtime: runtime.to_string(),
                given: tx,
            });
            (id, rx)
        };
        if tokio::time::timeout_at(deadline, &mut given)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            return Ok(slot());
        }
        // Out of time: out of the queue, unless the slot was given meanwhile.
        let mut st = self.slots.lock();
        if let Some(i) = st.waiting.iter().position(|w| w.id == id) {
            st.waiting.remove(i);
            return Err(AdmissionError::NoSlot { wait: self.wait });
        }
        drop(st);
        match given.try_recv() {
            Ok(()) => Ok(slot()),
            Err(_) => Err(AdmissionError::NoSlot { wait: self.wait }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(slots: usize, queue: usize, wait_ms: u64) -> Arc<Admission> {
        Arc::new(Admission::new(
            slots,
            queue,
            Duration::from_millis(wait_ms),
            1 << 40,
        ))
    }

    /// A request for `runtime` waiting in the background; says its name once admitted
    /// and holds the slot until told to let go.
    fn waiter(
        a: &Arc<Admission>,
        runtime: &'static str,
        admitted: tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> oneshot::Sender<()> {
        let (release, released) = oneshot::channel::<()>();
        let a = a.clone();
        tokio::spawn(async move {
            let held = a.admit(runtime, 1 << 20).await.expect("admitted");
            let _ = admitted.send(runtime);
            let _ = released.await;
            drop(held);
        });
        release
    }

    #[test]
    fn fitting_counts_whole_evaluations_in_the_budget() {
        let a = Admission::new(1, 1, Duration::ZERO, 1 << 30);
        assert_eq!(a.fitting(256 << 20), 4);
        assert_eq!(a.fitting((256 << 20) + 1), 3);
        assert_eq!(a.fitting(1), 1024);
        assert_eq!(a.fitting(2 << 30), 1);
    }

    async fn queued(a: &Admission, n: usize) {
        while a.slots.lock().waiting.len() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_runtime_with_the_fewest_running() {
        let a = admission(2, 8, 60_000);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let java1 = waiter(&a, "java", tx.clone());
        let java2 = waiter(&a, "java", tx.clone());
        assert_eq!(rx.recv().await, Some("java"));
        assert_eq!(rx.recv().await, Some("java"));
        // A third Java request comes first, then two Python ones.
        let _java3 = waiter(&a, "java", tx.clone());
        queued(&a, 1).await;
        let python1 = waiter(&a, "python", tx.clone());
        queued(&a, 2).await;
        let _python2 = waiter(&a, "python", tx.clone());
        queued(&a, 3).await;
        // Java holds both slots: the one freed goes to Python, the runtime with none.
        let _ = java1.send(());
        assert_eq!(rx.recv().await, Some("python"));
        // One each now. Python's ends: its waiter goes first, though Java's waited
        // longer (Java has one running, Python none)...
        let _ = python1.send(());
        assert_eq!(rx.recv().await, Some("python"));
        // ...and when Java's ends, Java's.
        let _ = java2.send(());
        assert_eq!(rx.recv().await, Some("java"));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_wait_times_out_leaving_no_trace() {
        let a = admission(1, 1, 50);
        let held = a.admit("python", 1 << 20).await.unwrap();
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.admit("python", 1 << 20).await })
        };
        queued(&a, 1).await;
        assert!(matches!(
            a.admit("java", 1 << 20).await,
            Err(AdmissionError::QueueFull {
                running: 1,
                queue_size: 1
            })
        ));
        assert!(matches!(
            waiting.await.unwrap(),
            Err(AdmissionError::NoSlot { .. })
        ));
        assert!(a.slots.lock().waiting.is_empty());
        drop(held);
        // The slot is free again, and nothing counts as running.
        let again = a.admit("java", 1 << 20).await.unwrap();
        assert_eq!(a.slots.lock().used, 1);
        drop(again);
        assert_eq!(a.slots.lock().used, 0);
        assert!(a.slots.lock().running.is_empty());
    }
}
