//! The uids sandboxes run as: each live sandbox has one no other live sandbox has.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{Flock, FlockArg};
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
/// the uids the other holds instead of sharing them. Nodes in network namespaces of
/// their own (containers) also claim in a shared directory, when one is given: an
/// exclusive `flock` on a file named after the uid, removed when it is given back.
#[derive(Debug)]
pub struct UidAllocator {
    base: u32,
    count: u32,
    claim_dir: Option<PathBuf>,
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
    claim: Option<Claim>,
}

/// What says a uid is in use: the bound abstract socket, and the locked file in the
/// shared claim directory.
#[derive(Debug)]
struct Claim {
    _socket: OwnedFd,
    file: Option<(PathBuf, Flock<File>)>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Removed while still locked, then unlocked by the close: whoever opened the
        // old file meanwhile sees that the path no longer names it and starts over.
        if let Some((path, _)) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
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
        Self::with_claim_dir(base, count, None)
    }

    /// Like [`UidAllocator::new`], also claiming uids in `claim_dir` (see above).
    pub fn with_claim_dir(base: u32, count: u32, claim_dir: Option<PathBuf>) -> Arc<Self> {
        // Never past the last valid uid (u32::MAX is "no uid").
        let count = count.min(u32::MAX - 1 - base.min(u32::MAX - 1));
        Arc::new(UidAllocator {
            base,
            count,
            claim_dir,
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
            match claim_uid(uid, self.claim_dir.as_deref()) {
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
fn claim_uid(uid: u32, dir: Option<&Path>) -> Option<Claim> {
    let socket = claim_socket(uid)?;
    let file = match dir {
        Some(dir) => Some(claim_file(dir, uid)?),
        None => None,
    };
    Some(Claim {
        _socket: socket,
        file,
    })
}

/// Locks `dir/<uid>`, creating it; `None` if another node holds it. A directory that
/// cannot be used at all fails closed: the uid is not handed out (and the sandbox
/// fails to set up naming the exhausted range), since sharing it is what the
/// directory is there to prevent.
fn claim_file(dir: &Path, uid: u32) -> Option<(PathBuf, Flock<File>)> {
    let path = dir.join(uid.to_string());
    loop {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "claiming a sandbox uid");
                return None;
            }
        };
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, nix::Error::EWOULDBLOCK)) => return None,
            Err((_, e)) => {
                tracing::error!(error = %e, path = %path.display(), "claiming a sandbox uid");
                return None;
            }
        };
        // The previous holder may have removed the file between our open and lock.
        let held = file.metadata().ok().map(|m| (m.dev(), m.ino()));
        let named = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if held.is_some() && held == named {
            return Some((path, file));
        }
    }
}

/// Binds the abstract socket of `uid`; `None` if another process has it.
fn claim_socket(uid: u32) -> Option<OwnedFd> {
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

    #[test]
    fn a_uid_locked_in_the_claim_directory_is_taken_until_given_back() {
        // What nodes in network namespaces of their own share: the file lock alone.
        let dir = tempfile::tempdir().unwrap();
        let first = claim_file(dir.path(), 4_000_123).expect("a free uid");
        assert!(claim_file(dir.path(), 4_000_123).is_none(), "claimed twice");
        assert!(
            claim_file(dir.path(), 4_000_124).is_some(),
            "another uid is free"
        );
        let claim = Claim {
            _socket: claim_socket(4_000_123).unwrap(),
            file: Some(first),
        };
        drop(claim);
        assert!(
            !dir.path().join("4000123").exists(),
            "a given-back claim leaves no file"
        );
        assert!(claim_file(dir.path(), 4_000_123).is_some(), "free again");
    }

    #[test]
    fn a_stale_open_of_a_removed_claim_file_is_no_claim() {
        // Opened before the holder removed and unlocked it: locking that old file must
        // not count, since a newcomer creates and locks a new one at the same path.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("4000125");
        let held = claim_file(dir.path(), 4_000_125).unwrap();
        let stale = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(held);
        let stale = Flock::lock(stale, FlockArg::LockExclusiveNonblock).unwrap();
        let fresh = claim_file(dir.path(), 4_000_125).expect("the path is free");
        assert_ne!(
            stale.metadata().unwrap().ino(),
            fresh.1.metadata().unwrap().ino()
        );
    }
}
