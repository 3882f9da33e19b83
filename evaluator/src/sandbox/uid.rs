//! The uids sandboxes run as: each live sandbox has one no other live sandbox has.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{AddressFamily, SockFlag, SockType};

/// Why no uid could be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error(
        "every sandbox uid ({first}..={last}) belongs to a live sandbox; \
         fewer sandboxes at once or a larger uid range (uid_count) are needed"
    )]
    Exhausted { first: u32, last: u32 },
}

/// Hands out the uids sandboxes run as, from `base .. base + count`, each to one live
/// sandbox at a time. A uid comes back (through its [`UidLease`]) only once its
/// sandbox is completely gone: the lease is held by the sandbox's cgroup and returned
/// after the cgroup was emptied, its tasks released and the cgroup removed (a cgroup
/// that cannot be removed keeps its uid forever). Uids never used go first, then the
/// least recently returned one.
///
/// Besides, each uid handed out is claimed host-wide (well, in the network namespace)
/// by binding an abstract unix socket named after it, held with the lease: a second
/// service or `jsheets-runtime run` on the same host with an overlapping range skips
/// the uids the other holds instead of sharing them.
#[derive(Debug)]
pub struct UidAllocator {
    base: u32,
    count: u32,
    state: Mutex<UidState>,
}

#[derive(Debug, Default)]
struct UidState {
    /// Offsets below this have been handed out at least once.
    fresh: u32,
    /// Returned offsets, least recently returned first.
    returned: VecDeque<u32>,
}

/// One uid of an [`UidAllocator`], held by one sandbox; dropping it gives it back.
#[derive(Debug)]
pub struct UidLease {
    uid: u32,
    allocator: Arc<UidAllocator>,
    /// The host-wide claim (see [`UidAllocator`]).
    claim: Option<OwnedFd>,
}

impl UidLease {
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Never gives the uid back (its sandbox could not be shown to be gone).
    pub fn quarantine(self) {
        tracing::error!(
            uid = self.uid,
            "sandbox uid withheld: its sandbox may not be gone"
        );
        std::mem::forget(self);
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        // The claim goes first: whoever gets the uid next can claim it.
        drop(self.claim.take());
        let mut state = self
            .allocator
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        state.returned.push_back(self.uid - self.allocator.base);
    }
}

impl UidAllocator {
    pub fn new(base: u32, count: u32) -> Arc<Self> {
        // Never past the last valid uid (u32::MAX is "no uid").
        let count = count.min(u32::MAX - 1 - base.min(u32::MAX - 1));
        Arc::new(UidAllocator {
            base,
            count,
            state: Mutex::new(UidState::default()),
        })
    }

    /// A uid no other live sandbox of this allocator (or of another process on the
    /// host) has.
    pub fn allocate(self: &Arc<Self>) -> Result<UidLease, UidError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut skipped = Vec::new();
        let result = loop {
            let offset = if state.fresh < self.count {
                state.fresh += 1;
                state.fresh - 1
            } else if let Some(offset) = state.returned.pop_front() {
                offset
            } else {
                break Err(UidError::Exhausted {
                    first: self.base,
                    last: self.base + self.count.saturating_sub(1),
                });
            };
            let uid = self.base + offset;
            match claim_uid(uid) {
                Some(claim) => {
                    break Ok(UidLease {
                        uid,
                        allocator: self.clone(),
                        claim: Some(claim),
                    })
                }
                // Another process holds it: try the others, and this one again later.
                None => skipped.push(offset),
            }
        };
        state.returned.extend(skipped);
        result
    }
}

/// Binds the abstract unix socket that says `uid` is in use on this host; `None` if
/// another process has it. A host where the claim cannot be made at all (no unix
/// sockets) relies on the ranges being disjoint: the uid is handed out unclaimed.
fn claim_uid(uid: u32) -> Option<OwnedFd> {
    use nix::sys::socket::{bind, socket, UnixAddr};
    let name = format!("jsheets-runtime/sandbox-uid/{uid}");
    let Ok(addr) = UnixAddr::new_abstract(name.as_bytes()) else {
        return None;
    };
    let Ok(sock) = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return None;
    };
    match bind(sock.as_raw_fd(), &addr) {
        Ok(()) => Some(sock),
        Err(nix::Error::EADDRINUSE) => None,
        Err(e) => {
            tracing::warn!(error = %e, "claiming a sandbox uid host-wide");
            Some(sock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A range of `count` uids of its own per test (claims are host-wide), far above
    /// any service's.
    fn allocator(test: u32, count: u32) -> Arc<UidAllocator> {
        let base = 3_000_000_000 + (std::process::id() % 100_000) * 256 + test * 32;
        UidAllocator::new(base, count)
    }

    #[test]
    fn a_held_uid_is_never_handed_out_again() {
        let uids = allocator(0, 4);
        let held: Vec<UidLease> = (0..4).map(|_| uids.allocate().unwrap()).collect();
        let distinct: std::collections::HashSet<u32> = held.iter().map(UidLease::uid).collect();
        assert_eq!(distinct.len(), 4);
        assert!(distinct
            .iter()
            .all(|u| (uids.base..uids.base + 4).contains(u)));
        // All held: the next one is an error that says so, and stays one.
        for _ in 0..3 {
            let err = uids.allocate().unwrap_err();
            assert_eq!(
                err,
                UidError::Exhausted {
                    first: uids.base,
                    last: uids.base + 3
                }
            );
            assert!(err.to_string().contains("every sandbox uid"), "{err}");
        }
    }

    #[test]
    fn a_released_uid_comes_back_least_recently_released_first() {
        let uids = allocator(1, 3);
        let mut held: Vec<UidLease> = (0..3).map(|_| uids.allocate().unwrap()).collect();
        let second = held.remove(1);
        let first = held.remove(0);
        let (a, b) = (first.uid(), second.uid());
        drop(first);
        drop(second);
        assert_eq!(uids.allocate().map(|l| l.uid()), Ok(a));
        // The lease above went back at once; `b` was released before it.
        assert_eq!(uids.allocate().map(|l| l.uid()), Ok(b));
        let again = uids.allocate().unwrap();
        assert_eq!(again.uid(), a);
    }

    #[test]
    fn a_quarantined_uid_never_comes_back() {
        let uids = allocator(2, 2);
        let lost = uids.allocate().unwrap();
        let lost_uid = lost.uid();
        lost.quarantine();
        let other = uids.allocate().unwrap();
        assert_ne!(other.uid(), lost_uid);
        drop(other);
        for _ in 0..4 {
            assert_ne!(uids.allocate().unwrap().uid(), lost_uid);
        }
        let _held = uids.allocate().unwrap();
        assert!(uids.allocate().is_err());
    }

    #[test]
    fn uids_held_by_another_allocator_on_the_host_are_skipped() {
        // Two services with the same range (say `serve` and `run` on one host).
        let one = allocator(3, 4);
        let other = UidAllocator::new(one.base, 4);
        let a = one.allocate().unwrap();
        let b = other.allocate().unwrap();
        assert_ne!(a.uid(), b.uid());
        let rest: Vec<UidLease> = (0..2).map(|_| other.allocate().unwrap()).collect();
        // `other` holds three, `one` holds one: nothing left for either.
        assert!(one.allocate().is_err());
        assert!(other.allocate().is_err());
        drop(rest);
        let c = one.allocate().unwrap();
        assert!(![a.uid(), b.uid()].contains(&c.uid()));
    }
}
