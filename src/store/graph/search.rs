//! Searches through the index, with the exact scan behind them.
//!
//! A search walks the graph (read committed: nodes the running transaction wrote are never
//! returned, and the vectors it deleted or replaced are scored from the mask, as the scan does),
//! rescores its candidates with the exact kernels (so scores and ties are the scan's), and
//! resolves ids through the vector pages' owner tables. The exact scan answers instead when
//! the caller asks for it, when the index's metric is another, when fewer than `min(k, len)`
//! results come back (a filter that the graph cannot satisfy, a transaction's undo in the
//! middle of the walk), and for filters so selective that scanning their matches is cheaper.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use super::super::Inner;
use super::super::catalog::{EntryPlace, read_entry, read_entry_at};
use super::pages::{PageReader, node_of};
use super::{Published, SearchOptions};
use crate::ann::{Admit, GraphView, Hnsw, NodeId, NodeState, Scratch};
use crate::format::index::LeafValue;
use crate::format::page::{self, PageId, PageKind, Space};
use crate::{Error, Result};

/// Nodes sampled to estimate how many match a filter.
const FILTER_SAMPLE: u32 = 64;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// `Store::search_with`.
pub(super) fn search(inner: &Inner, query: &[f32], k: usize, options: &SearchOptions<'_>) -> Result<Vec<(String, f32)>> {
    let exact = || super::super::scan::search(inner, query, k, options.metric, options.filter);
    let published = match inner.graph.published() {
        Some(p) if !options.exact && p.hnsw.params().metric == options.metric => p,
        _ => return exact(),
    };
    if options.ef.is_none() && published.hnsw.params().ef_search == super::build::EF_SEARCH_SCAN {
        // The build found no candidate list reaching the recall a default search promises.
        return exact();
    }
    super::super::scan::check_query(inner, query, k)?;
    let _pin = inner.epochs.pin();
    let generation = inner.graph.generation();
    let reader = PageReader::new(inner, published.shape)?;
    let found = SCRATCH.with_borrow_mut(|scratch| match options.filter {
        None => unfiltered(&reader, &published, query, k, options.ef, scratch),
        Some(filter) => filtered(&reader, &published, query, k, options.ef, filter, scratch),
    });
    if let Some(reason) = reader.stale() {
        if inner.graph.generation() == generation {
            return Err(Error::corrupted_file("arena", format!("the approximate index: {reason}")));
        }
        // The index changed under the walk (an undo, a drop): the scan answers.
        return exact();
    }
    match found? {
        Some(results) => Ok(results),
        None => exact(),
    }
}

/// The graph's answer, `None` if it found fewer than it should.
fn unfiltered(
    reader: &PageReader<'_>,
    published: &Published,
    query: &[f32],
    k: usize,
    ef: Option<usize>,
    scratch: &mut Scratch,
) -> Result<Option<Vec<(String, f32)>>> {
    let hnsw = &published.hnsw;
    let ef = ef.unwrap_or(hnsw.params().ef_search).max(k);
    let found = hnsw.search_graph(reader, query, ef, Admit::Live, scratch)?;
    let ranked = rank(reader, hnsw, query, found.iter().map(|c| c.node), None)?;
    let results = resolve(reader, hnsw, ranked, k)?;
    let wanted = k.min(reader.inner.count.load(Ordering::Acquire) as usize);
    Ok((results.len() >= wanted).then_some(results))
}

/// The graph's answer to a filtered search, `None` where the scan answers (few matches
/// expected, or the graph found fewer than `k`).
fn filtered(
    reader: &PageReader<'_>,
    published: &Published,
    query: &[f32],
    k: usize,
    ef: Option<usize>,
    (key, value): (&str, &str),
    scratch: &mut Scratch,
) -> Result<Option<Vec<(String, f32)>>> {
    let hnsw = &published.hnsw;
    let ef = ef.unwrap_or(hnsw.params().ef_search).max(k);
    let matcher = Matcher::new(reader.inner, key, value);
    let estimate = estimate_matches(reader, &matcher)?;
    if hnsw.scan_is_cheaper(reader.slot_count(), ef, estimate) {
        return Ok(None);
    }
    let accepts = |node: NodeId| matcher.node(node);
    let found = hnsw.search_graph(reader, query, ef, Admit::Filter(&accepts), scratch)?;
    matcher.error()?;
    let ranked = rank(reader, hnsw, query, found.iter().map(|c| c.node), Some(&matcher))?;
    let results = resolve(reader, hnsw, ranked, k)?;
    Ok((results.len() >= k).then_some(results))
}

/// About how many live nodes match: the fraction of a sample, times the live count.
fn estimate_matches(reader: &PageReader<'_>, matcher: &Matcher<'_>) -> Result<usize> {
    let slots = reader.slot_count();
    let (mut live, mut matching) = (0u64, 0u64);
    for i in 0..FILTER_SAMPLE.min(slots) {
        let node = (u64::from(i) * u64::from(slots) / u64::from(FILTER_SAMPLE.min(slots))) as NodeId;
        if reader.state(node)? == NodeState::Live {
            live += 1;
            matching += u64::from(matcher.node(node));
        }
    }
    matcher.error()?;
    if live == 0 {
        return Ok(0);
    }
    Ok((reader.snap.fields.live.get() * matching / live) as usize)
}

/// A candidate: its exact key (lower is better), its node, and the mask's value when the
/// running transaction hid it (the committed entry is that one).
type Ranked = (f64, NodeId, Option<LeafValue>);

/// `nodes` and the vectors the running transaction deleted or replaced (that match the
/// filter), by exact key, best first.
fn rank(
    reader: &PageReader<'_>,
    hnsw: &Hnsw,
    query: &[f32],
    nodes: impl Iterator<Item = NodeId>,
    filter: Option<&Matcher<'_>>,
) -> Result<Vec<Ranked>> {
    let inner = reader.inner;
    let space = hnsw.space();
    let exact = space.exact_query(query);
    let mut ranked: Vec<Ranked> = Vec::new();
    let mut at: HashMap<NodeId, usize> = HashMap::new();
    for node in nodes {
        at.insert(node, ranked.len());
        ranked.push((space.exact_key(&exact, reader.vector(node)?), node, None));
    }
    for value in inner.mask.hidden_values() {
        let Some(node) = node_of(
            u64::from(value.vector_page.get()),
            value.vector_slot.get(),
            inner.layout.slots_per_page,
        ) else {
            continue;
        };
        if let Some(&i) = at.get(&node) {
            ranked[i].2 = Some(value);
            continue;
        }
        if let Some(filter) = filter
            && !filter.value(&value)?
        {
            continue;
        }
        let entry = read_entry(&inner.arena, &inner.layout, &value)?;
        // SAFETY: the slot of an entry the running transaction replaced or deleted, committed
        // state still: it is freed only after the commit and the search's pin.
        let vector = unsafe { std::slice::from_raw_parts(entry.vector, inner.dimension as usize) };
        ranked.push((space.exact_key(&exact, vector), node, Some(value)));
    }
    ranked.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    Ok(ranked)
}

/// The first `k` candidates readers may see, with their ids and scores (each id once).
fn resolve(reader: &PageReader<'_>, hnsw: &Hnsw, ranked: Vec<Ranked>, k: usize) -> Result<Vec<(String, f32)>> {
    let inner = reader.inner;
    let mut seen = HashSet::new();
    let mut results = Vec::with_capacity(k.min(ranked.len()));
    for (key, node, value) in ranked {
        if results.len() == k {
            break;
        }
        let place = match value {
            Some(value) => EntryPlace::of(&value),
            None => match committed_place(inner, node)? {
                Some(place) => place,
                None => continue,
            },
        };
        let (entry, _) = read_entry_at(&inner.arena, &inner.layout, &place)?;
        // SAFETY: the search holds its epoch pin, taken before it found the entry.
        let id = unsafe { entry.id_bytes() };
        let id = std::str::from_utf8(id).map_err(|_| {
            inner
                .arena
                .corrupted(PageId::new(Space::Catalog, place.catalog_page), "an id is not UTF-8")
        })?;
        if seen.insert(id) {
            results.push((id.to_string(), hnsw.space().score(key)));
        }
    }
    Ok(results)
}

/// Where the committed entry that owns node `node`'s vector slot is; `None` if no committed
/// entry owns it (deleted, or written by the running transaction).
fn committed_place(inner: &Inner, node: NodeId) -> Result<Option<EntryPlace>> {
    let spp = inner.layout.slots_per_page;
    let (page_no, slot) = (u64::from(node / spp), node % spp);
    if page_no >= inner.arena.page_count(Space::Vector) {
        return Ok(None);
    }
    let page = PageId::new(Space::Vector, page_no);
    inner.arena.verify(page)?;
    let owner = {
        let image = inner.arena.read_page(page);
        if image[page::PAGE_KIND_OFFSET] != PageKind::Vector as u8 {
            return Ok(None);
        }
        let at = inner.layout.owner_offset(slot);
        u64::from_le_bytes(image[at..at + 8].try_into().expect("8 bytes"))
    };
    // The owner first, then the mask: a slot the running transaction wrote is recorded in the
    // mask before its owner entry is written (see `store::mask`).
    if inner.mask.hides_slot(page_no as u32, slot) {
        return Ok(None);
    }
    Ok(page::decode_owner(owner).map(|(catalog_page, offset)| EntryPlace {
        catalog_page,
        offset,
        vector_page: page_no,
        vector_slot: slot,
    }))
}

/// Whether nodes' committed entries hold a metadata pair, remembered per node, with the first
/// error met (the graph's admission test cannot return one).
struct Matcher<'a> {
    inner: &'a Inner,
    key: &'a str,
    value: &'a str,
    seen: RefCell<HashMap<NodeId, bool>>,
    error: RefCell<Option<Error>>,
}

impl<'a> Matcher<'a> {
    fn new(inner: &'a Inner, key: &'a str, value: &'a str) -> Matcher<'a> {
        Matcher {
            inner,
            key,
            value,
            seen: RefCell::new(HashMap::new()),
            error: RefCell::new(None),
        }
    }

    /// True if node `node`'s committed entry holds the pair (false on an error, kept).
    fn node(&self, node: NodeId) -> bool {
        if let Some(&known) = self.seen.borrow().get(&node) {
            return known;
        }
        let outcome = committed_place(self.inner, node).and_then(|place| match place {
            None => Ok(false),
            Some(place) => self.place(&place),
        });
        let matches = outcome.unwrap_or_else(|e| {
            self.error.borrow_mut().get_or_insert(e);
            false
        });
        self.seen.borrow_mut().insert(node, matches);
        matches
    }

    /// True if the entry `value` names holds the pair.
    fn value(&self, value: &LeafValue) -> Result<bool> {
        self.place(&EntryPlace::of(value))
    }

    fn place(&self, place: &EntryPlace) -> Result<bool> {
        let (entry, _) = read_entry_at(&self.inner.arena, &self.inner.layout, place)?;
        Ok(super::super::scan::has_pair(self.inner, &entry, self.key, self.value))
    }

    /// The first error met, if any.
    fn error(&self) -> Result<()> {
        match self.error.borrow_mut().take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
