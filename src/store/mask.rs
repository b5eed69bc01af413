//! Read committed: what readers see of the running write transaction is nothing.
//!
//! The writer changes the index, the catalog and the vector pages in place as each operation
//! is logged; readers must not see those changes before the commit. Before an operation's
//! edits are applied, the writer records here the value the id had when the transaction
//! began (`None`: absent) and the vector slot it writes. A reader looks the id up in the index
//! first and then here: a recorded id shows its recorded value. The record is cleared once the
//! commit record is in the log (or the transaction's changes are undone), at which point every
//! change of the transaction becomes visible at once.
//!
//! Order matters: the writer records before it applies, and a reader reads the index before
//! the mask. A reader that saw a change in the index therefore sees its record (the page latch
//! orders the two), and one that finds no record read the index after the clear.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use super::state::FastHash;
use crate::format::index::LeafValue;

/// The running transaction's changes, hidden from readers.
#[derive(Debug, Default)]
pub struct Mask {
    active: AtomicBool,
    /// How many times the mask was cleared: a reader's token (see [`Mask::visible_since`]).
    clears: AtomicU64,
    /// An undo failed: the pages hold changes no commit published, for good (the store is
    /// poisoned), and the mask never clears again.
    frozen: AtomicBool,
    state: RwLock<Masked>,
}

#[derive(Debug, Default)]
struct Masked {
    /// Each id the transaction touched, and the value it had before.
    ids: BTreeMap<Box<[u8]>, Option<LeafValue>>,
    /// The vector slots the transaction wrote: `(page number, slot)` (one insert a row of a
    /// bulk load: SipHash was 3% of its time).
    slots: HashSet<(u32, u32), FastHash>,
    /// The metadata of each overflow chain the transaction freed, by the chain's first page
    /// (raw id): freeing marks the chain's pages free in place, and a reader that still sees
    /// the entry (through a recorded value, or one it found just before) reads it from here.
    chains: HashMap<u64, Arc<[u8]>, FastHash>,
}

impl Mask {
    /// Records, before its first change in this transaction, that `id` held `before`; and
    /// that vector slot `slot` (if any) now holds an uncommitted vector.
    ///
    /// An id absent when the transaction began that now names a slot the transaction wrote is
    /// not recorded: the slot is, and a reader that finds the id naming a hidden slot sees it
    /// absent (a bulk insert of fresh ids copies none of them here). So a value `before` that
    /// names a hidden slot is the transaction's own (the id was such an insert): the id was
    /// absent when it began.
    pub fn record(&self, id: &[u8], before: Option<LeafValue>, slot: Option<(u32, u32)>) {
        let mut state = self.state.write();
        if !state.ids.contains_key(id) {
            let before = before.filter(|value| !state.slots.contains(&slot_of(value)));
            if before.is_some() || slot.is_none() {
                state.ids.insert(id.into(), before);
            }
        }
        state.slots.extend(slot);
        self.active.store(true, Ordering::Release);
    }

    /// Records, before the pages of the overflow chain starting at `first` are freed, the
    /// metadata they hold.
    pub fn record_chain(&self, first: u64, meta: &[u8]) {
        let mut state = self.state.write();
        state.chains.entry(first).or_insert_with(|| meta.into());
        self.active.store(true, Ordering::Release);
    }

    /// The metadata of the chain starting at `first` if the running transaction freed it.
    pub fn chain(&self, first: u64) -> Option<Arc<[u8]>> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        self.state.read().chains.get(&first).cloned()
    }

    /// Makes the transaction's changes visible (or, after an undo, forgets them).
    pub fn clear(&self) {
        if !self.active.load(Ordering::Acquire) || self.frozen.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.state.write();
        state.ids.clear();
        state.slots.clear();
        state.chains.clear();
        // Counted before `active` falls: a reader that sees the mask inactive sees the count.
        self.clears.fetch_add(1, Ordering::Release);
        self.active.store(false, Ordering::Release);
    }

    /// Keeps what is masked masked for good: an undo failed and left the transaction's changes
    /// in the pages (the next open rolls them back).
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::Release);
    }

    /// What a reader that found `in_index` for `id` in the index sees.
    #[cfg(test)]
    pub fn visible(&self, id: &[u8], in_index: Option<LeafValue>) -> Option<LeafValue> {
        if !self.active.load(Ordering::Acquire) {
            return in_index;
        }
        self.state.read().visible(id, in_index).unwrap_or(in_index)
    }

    /// A reader's token, taken before it looks an id up in the index.
    pub fn token(&self) -> u64 {
        self.clears.load(Ordering::Acquire)
    }

    /// Like [`Mask::visible`], for a reader that took `token` before its lookup; `None` if
    /// the mask was cleared since and the id is not recorded now: the lookup may have seen
    /// the pages of an undo in progress (an id the undo had not yet put back) and must be
    /// done again. (A clear after a commit only makes the lookup's view the committed one,
    /// but the two are not told apart: looking again is cheap and rare.)
    pub fn visible_since(&self, token: u64, id: &[u8], in_index: Option<LeafValue>) -> Option<Option<LeafValue>> {
        if self.active.load(Ordering::Acquire)
            && let Some(visible) = self.state.read().visible(id, in_index)
        {
            return Some(visible);
        }
        (self.clears.load(Ordering::Acquire) == token).then_some(in_index)
    }

    /// True if vector slot `slot` of page `page_no` holds a vector no commit has published.
    pub fn hides_slot(&self, page_no: u32, slot: u32) -> bool {
        self.active.load(Ordering::Acquire) && self.state.read().slots.contains(&(page_no, slot))
    }


    /// The ids the transaction touched in `[from, to)` (`to` `None`: no bound) that readers
    /// see with a value, and those values, in id order (for scans that merge them in).
    pub fn visible_in(&self, from: &[u8], after: bool, to: Option<&[u8]>) -> Vec<(Vec<u8>, LeafValue)> {
        if !self.active.load(Ordering::Acquire) {
            return Vec::new();
        }
        let state = self.state.read();
        state
            .ids
            .range::<[u8], _>((
                if after {
                    std::ops::Bound::Excluded(from)
                } else {
                    std::ops::Bound::Included(from)
                },
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(id, _)| to.is_none_or(|to| &id[..] < to))
            .filter_map(|(id, value)| value.map(|v| (id.to_vec(), v)))
            .collect()
    }

    /// Every value the transaction hid (for a search, which scores them beside the slots).
    pub fn hidden_values(&self) -> Vec<LeafValue> {
        if !self.active.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.state.read().ids.values().filter_map(|v| *v).collect()
    }

    /// True if a transaction's changes are hidden now (a search through the approximate index
    /// checks the mask per node only then).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }
}

impl Masked {
    /// What a reader that found `in_index` for `id` sees, if the transaction hides it: the
    /// recorded value, or absent for an id naming a slot the transaction wrote (an insert,
    /// unrecorded: see [`Mask::record`]). `None`: not hidden.
    fn visible(&self, id: &[u8], in_index: Option<LeafValue>) -> Option<Option<LeafValue>> {
        if let Some(before) = self.ids.get(id) {
            return Some(*before);
        }
        in_index.filter(|value| self.slots.contains(&slot_of(value))).map(|_| None)
    }
}

/// The vector slot `value` names: `(page number, slot)`.
fn slot_of(value: &LeafValue) -> (u32, u32) {
    (value.vector_page.get(), value.vector_slot.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::little_endian::U32;

    fn value(n: u32) -> LeafValue {
        LeafValue {
            vector_page: U32::new(n),
            ..Default::default()
        }
    }

    #[test]
    fn a_recorded_id_shows_its_first_value_until_the_clear() {
        let mask = Mask::default();
        assert_eq!(mask.visible(b"a", Some(value(1))), Some(value(1)), "nothing masked");
        mask.record(b"a", Some(value(1)), Some((5, 2)));
        mask.record(b"a", Some(value(2)), Some((5, 3)));
        mask.record(b"new", None, Some((6, 0)));
        assert_eq!(mask.visible(b"a", Some(value(3))), Some(value(1)), "the value before the transaction");
        assert_eq!(mask.visible(b"new", Some(at(6, 0))), None, "an insert is hidden");
        assert!(mask.hides_slot(5, 3) && mask.hides_slot(6, 0) && !mask.hides_slot(5, 4));
        assert_eq!(mask.visible_in(b"a", false, None).len(), 1, "only ids with a value before");
        assert!(mask.visible_in(b"a", true, None).is_empty(), "after excludes the bound");
        mask.clear();
        assert_eq!(mask.visible(b"new", Some(at(6, 0))), Some(at(6, 0)), "committed: visible");
        assert!(!mask.hides_slot(6, 0));
    }

    fn at(page_no: u32, slot: u32) -> LeafValue {
        LeafValue {
            vector_page: U32::new(page_no),
            vector_slot: U32::new(slot),
            ..Default::default()
        }
    }

    #[test]
    fn an_id_inserted_by_the_transaction_stays_absent_through_later_changes() {
        let mask = Mask::default();
        mask.record(b"new", None, Some((6, 0)));
        assert!(mask.state.read().ids.is_empty(), "a fresh insert records its slot, not its id");
        assert_eq!(mask.visible(b"new", Some(at(6, 0))), None, "the slot hides it");
        mask.record(b"new", Some(at(6, 0)), Some((6, 1)));
        assert_eq!(mask.visible(b"new", Some(at(6, 1))), None, "updated in the transaction: still absent");
        mask.record(b"new", Some(at(6, 1)), None);
        assert_eq!(mask.visible(b"new", None), None, "deleted in the transaction: absent");
        assert!(mask.visible_in(b"", false, None).is_empty(), "a scan merges in no value for it");
        assert!(mask.hidden_values().is_empty(), "nor does a search");
        assert_eq!(mask.visible(b"old", Some(at(1, 1))), Some(at(1, 1)), "an untouched id shows");
    }
}
