//! Whether the running process is the one that opened a store, or a child of its `fork()`.
//!
//! A child of `fork()` gets a copy of its parent's memory (a store's log tail and its next
//! LSN, its dirty pages, its locks, held or not) and none of its threads, and it shares the
//! parent's open files. Its copy of a store opened for writing is the parent's state at the
//! fork: a commit from it lands in the same log at the same addresses as the parent's next
//! ones, and its close checkpoints its stale pages over the parent's. (Measured before this
//! check: a Python child of `os.fork()` that upserted and closed left a store that no longer
//! opened, "record checksum mismatch"; a child that upserted and exited had its commit
//! acknowledged and then lost.) So the store layer asks [`Origin::is_forked`] at each call of a
//! store opened for writing and refuses it in a child, and its drop there leaves the files
//! alone (`store/mod.rs`).
//!
//! How it knows: a `pthread_atfork` child handler, registered by the first [`Origin::here`],
//! counts the forks this process descends from (and closes the child's copies of the writers'
//! lock descriptors: [`LOCK_SLOTS`]); an origin remembers the count it was taken
//! at. A load of one atomic a call, where comparing process ids would be a system call (glibc
//! does not cache `getpid`). Where the handler could not be registered, the process ids are
//! compared instead.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// The forks between the first process that loaded the crate and this one (the child handler
/// adds one in each child; a parent's count never changes).
static FORKS: AtomicU64 = AtomicU64::new(0);
/// Whether the child handler is registered (else [`Origin::is_forked`] compares process ids).
static REGISTERED: AtomicBool = AtomicBool::new(false);
static REGISTER: Once = Once::new();

/// Slots for the descriptors that hold the writers' locks of this process's stores (`-1`: a
/// free slot). A child of `fork()` closes them at once: its copy of a store opened for writing
/// is refused every call, yet its copies of the descriptors would hold the parent's lock for
/// as long as the child lives, so that a parent that closed its store could not open it again
/// (measured: a Python parent's reopen was `StoreLockedError` until its forked child exited).
/// A lock is held by an open file description and ends when every descriptor of it is closed:
/// closing the child's copies leaves the parent's lock as it is. More writers than slots keep
/// their descriptors in a child, as before.
const LOCK_SLOTS: usize = 256;
static LOCK_FDS: [AtomicI32; LOCK_SLOTS] = [const { AtomicI32::new(-1) }; LOCK_SLOTS];

/// Runs in the child of every `fork()`, before `fork` returns there: only async-signal-safe
/// work is allowed, and atomics and `close` are.
extern "C" fn count_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    for slot in &LOCK_FDS {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: `fd` was open in the parent when the fork copied it (it is unregistered
            // before its owner closes it), so it is this child's own copy; the child never
            // closes it again (a forked child leaves its stores undropped: store/mod.rs).
            unsafe { libc::close(fd) };
        }
    }
}

/// A writer's lock descriptor registered to be closed in forked children; unregistered when
/// dropped, which must happen before the descriptor is closed.
#[derive(Debug)]
pub struct ClosedInChildren {
    slot: Option<usize>,
}

/// Registers `fd`, a descriptor that holds a writer's lock (see [`LOCK_SLOTS`]).
pub fn close_in_children(fd: i32) -> ClosedInChildren {
    register();
    let slot = LOCK_FDS.iter().position(|slot| {
        slot.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    ClosedInChildren { slot }
}

impl Drop for ClosedInChildren {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            LOCK_FDS[slot].store(-1, Ordering::Release);
        }
    }
}

fn register() {
    REGISTER.call_once(|| {
        // SAFETY: pthread_atfork only records the three function pointers; the one given is a
        // plain `extern "C" fn` of this crate that lives as long as the process and does only
        // async-signal-safe work, as a child handler must (static atomics and `close`).
        let code = unsafe { libc::pthread_atfork(None, None, Some(count_fork_in_child)) };
        REGISTERED.store(code == 0, Ordering::Release);
    });
}

/// The process a store was opened in: which fork it was, and its id.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    forks: u64,
    pid: u32,
}

impl Origin {
    /// The running process.
    pub fn here() -> Origin {
        register();
        Origin {
            forks: FORKS.load(Ordering::Relaxed),
            pid: std::process::id(),
        }
    }

    /// True in a child (or a later descendant) of a `fork()` of the process this origin was
    /// taken in; false in that process itself.
    pub fn is_forked(&self) -> bool {
        if REGISTERED.load(Ordering::Relaxed) {
            FORKS.load(Ordering::Relaxed) != self.forks
        } else {
            std::process::id() != self.pid
        }
    }

    /// The id of the process this origin was taken in.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_not_forked_in_its_own_process_or_thread() {
        let origin = Origin::here();
        assert!(
            !origin.is_forked(),
            "the process that took the origin is no fork of itself"
        );
        let elsewhere = std::thread::spawn(move || origin.is_forked())
            .join()
            .expect("the thread runs");
        assert!(!elsewhere, "another thread of the same process is no fork either");
        assert_eq!(origin.pid(), std::process::id());
    }
}
