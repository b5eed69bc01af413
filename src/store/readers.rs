//! Reader epochs: when freed slots may be reused.
//!
//! Readers borrow committed vector slots and catalog entries straight from the arena. A slot
//! freed by a commit may still be borrowed by a reader that looked it up before the commit, so
//! it is reused only after every reader pinned at or before the epoch of its release has left.
//!
//! Two counters of pinned readers, for even and odd epochs. The epoch advances from `e` to
//! `e + 1` only when no reader is pinned in `e - 1` (same counter as `e + 1`). A slot released in
//! epoch `e` may be reused once the epoch is `e + 2`: every reader pinned in `e` had to leave
//! before the advance to `e + 2`, and readers pinned later looked it up after the release.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The epoch clock of one store.
#[derive(Debug, Default)]
pub struct Epochs {
    current: AtomicU64,
    pinned: [AtomicUsize; 2],
}

/// A pinned reader; unpins on drop.
#[derive(Debug)]
pub struct Pin<'a> {
    epochs: &'a Epochs,
    epoch: u64,
}

impl Epochs {
    /// Pins the calling reader in the current epoch.
    pub fn pin(&self) -> Pin<'_> {
        loop {
            let epoch = self.current.load(Ordering::SeqCst);
            self.pinned[(epoch & 1) as usize].fetch_add(1, Ordering::SeqCst);
            if self.current.load(Ordering::SeqCst) == epoch {
                return Pin { epochs: self, epoch };
            }
            self.pinned[(epoch & 1) as usize].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The current epoch: stamp a release with it.
    pub fn now(&self) -> u64 {
        self.current.load(Ordering::SeqCst)
    }

    /// Advances the epoch if no reader is pinned in the previous one; returns the epoch.
    /// Called by the single writer only.
    pub fn try_advance(&self) -> u64 {
        let epoch = self.current.load(Ordering::SeqCst);
        let previous_parity = ((epoch + 1) & 1) as usize;
        if epoch == 0 || self.pinned[previous_parity].load(Ordering::SeqCst) == 0 {
            self.current.store(epoch + 1, Ordering::SeqCst);
            return epoch + 1;
        }
        epoch
    }

    /// True if something released in `epoch` may be reused now.
    pub fn is_reclaimable(&self, released_epoch: u64) -> bool {
        self.current.load(Ordering::SeqCst) >= released_epoch + 2
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        self.epochs.pinned[(self.epoch & 1) as usize].fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_reader_holds_back_reclamation_of_what_it_may_see() {
        let epochs = Epochs::default();
        let pin = epochs.pin();
        let released = epochs.now();
        for _ in 0..10 {
            epochs.try_advance();
        }
        assert!(
            !epochs.is_reclaimable(released),
            "the reader pinned at the release may still borrow it"
        );
        drop(pin);
        for _ in 0..3 {
            epochs.try_advance();
        }
        assert!(
            epochs.is_reclaimable(released),
            "after the reader left, two advances free it"
        );
    }
}
