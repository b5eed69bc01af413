//! The exact scan: every committed vector, in place and zero-copy, page by page, scored by the
//! search kernels, keeping the best `k`. Readers never wait for the writer: the slot registry is
//! read a few pages at a time, and the epoch pin keeps every slot it names from reuse.

use std::collections::BinaryHeap;
use std::sync::Arc;

use super::Inner;
use super::state::Meta;
use crate::format::meta;
use crate::format::page::{self, PageId, Space};
use crate::search::{Candidate, Kernels, Metric, Query, push, score_key, score_of};
use crate::{Error, Result};

/// The committed owner of a vector slot: its id and metadata.
#[derive(Clone, Debug)]
pub struct SlotOwner {
    pub id: Arc<str>,
    pub meta: Meta,
}

/// Who owns each committed vector slot, by global slot number (page × slots per page + slot).
#[derive(Debug, Default)]
pub struct SlotRegistry {
    pub owners: Vec<Option<SlotOwner>>,
}

impl SlotRegistry {
    pub fn set(&mut self, global_slot: usize, owner: Option<SlotOwner>) {
        if global_slot >= self.owners.len() {
            self.owners.resize(global_slot + 1, None);
        }
        self.owners[global_slot] = owner;
    }
}

/// Pages scanned per hold of the registry's read lock.
const PAGES_PER_LOCK: u64 = 64;

/// Searches `inner` for the `k` vectors closest to `query`.
pub(super) fn search(
    inner: &Inner,
    query: &[f32],
    k: usize,
    metric: Metric,
    filter: Option<(&str, &str)>,
) -> Result<Vec<(String, f32)>> {
    check_query(inner, query, k)?;
    let _pin = inner.epochs.pin();
    let dimension = inner.dimension as usize;
    let stride = page::vector_stride_bytes(inner.dimension);
    let slots_per_page = page::vector_slots_per_page(inner.arena.page_size_bytes(), inner.dimension);
    let kernels = Kernels::detect();
    let prepared = Query::new(&kernels, query);
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k + 1);
    let pages = inner.arena.page_count(Space::Vector);
    let mut first = 0;
    while first < pages {
        let registry = inner.slots.read();
        for page_no in first..(first + PAGES_PER_LOCK).min(pages) {
            let base = page_no as usize * slots_per_page;
            if base >= registry.owners.len() {
                break;
            }
            let page = PageId::new(Space::Vector, page_no);
            let live = &registry.owners[base..(base + slots_per_page).min(registry.owners.len())];
            if live.iter().all(Option::is_none) {
                continue;
            }
            inner.arena.verify(page)?;
            let start = inner.arena.page_ptr(page, page::VECTOR_SLOTS_OFFSET) as *const f32;
            for (slot, owner) in live.iter().enumerate() {
                let Some(owner) = owner else { continue };
                if filter.is_some_and(|(k, v)| !has_pair(owner, k, v)) {
                    continue;
                }
                // SAFETY: slot `slot` of a vector page holds `dimension` f32s at a 16-byte-aligned
                // offset inside the arena mapping, which lives as long as `inner`. Its owner is
                // committed, so no writer touches it, and the epoch pin keeps it from reuse.
                let vector = unsafe { std::slice::from_raw_parts(start.byte_add(slot * stride), dimension) };
                let key = score_key(&kernels, metric, &prepared, vector);
                push(
                    &mut heap,
                    k,
                    Candidate {
                        key,
                        global_slot: base + slot,
                    },
                );
            }
        }
        drop(registry);
        first += PAGES_PER_LOCK;
    }
    Ok(resolve(inner, heap, metric))
}

fn check_query(inner: &Inner, query: &[f32], k: usize) -> Result<()> {
    if query.len() != inner.dimension as usize {
        return Err(Error::InvalidArgument(format!(
            "query has {} components, the store holds {}",
            query.len(),
            inner.dimension
        )));
    }
    if let Some(at) = query.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidArgument(format!("query component {at} is not finite")));
    }
    if k == 0 {
        return Err(Error::InvalidArgument("k must be at least 1".into()));
    }
    Ok(())
}

fn has_pair(owner: &SlotOwner, key: &str, value: &str) -> bool {
    let bytes: &[u8] = match &owner.meta {
        // SAFETY: inline metadata of a committed entry, immutable while the search's epoch pin
        // holds, inside a mapping that outlives the store.
        Meta::Inline { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len as usize) },
        Meta::Owned(bytes) => bytes,
    };
    meta::Pairs::new(bytes).is_some_and(|mut pairs| pairs.any(|(k, v)| k == key && v == value))
}

/// Turns heap keys back into scores, best first, with the owners' ids.
fn resolve(inner: &Inner, heap: BinaryHeap<Candidate>, metric: Metric) -> Vec<(String, f32)> {
    let registry = inner.slots.read();
    let mut found: Vec<Candidate> = heap.into_vec();
    found.sort();
    found
        .into_iter()
        .filter_map(|c| {
            let owner = registry.owners.get(c.global_slot)?.as_ref()?;
            Some((owner.id.to_string(), score_of(metric, c.key)))
        })
        .collect()
}
