//! The index's invariants, checked over its committed pages (for `verify`).
//!
//! Beyond the graph's own (`ann::Hnsw::check`: every list within its capacity, of distinct
//! ids, each naming a live node or a tombstone that has the list's layer; the entry point a node
//! of the highest level), the pages': every vector in the store is a live node and every live
//! node is a stored vector; a tombstone's slot holds no vector; the counts of the graph meta
//! page are the nodes'; every node's upper run lies within the slots handed out, in one page,
//! apart from every other run and from the free runs.

use super::super::Inner;
use super::pages::{PageReader, node_of, page_of};
use crate::format::graph::{decode_node_page, decode_upper_page};
use crate::arena::ReadAhead;
use crate::ann::{CheckReport, GraphView, NodeId, NodeState};
use crate::format::graph::GRAPH_LEVEL_MAX;
use crate::format::page::{self, PageId, PageKind, Space, VECTOR_OWNER_BYTES, VECTOR_OWNERS_OFFSET};
use zerocopy::FromBytes;
use crate::Result;

/// Problems listed at most.
const PROBLEMS_MAX: usize = 100;

/// What checking the index found.
#[derive(Clone, Debug, Default)]
pub struct IndexCheck {
    /// Live nodes.
    pub live: u64,
    /// Tombstones.
    pub deleted: u64,
    /// Neighbour ids in all lists, and how many name tombstones.
    pub edges: usize,
    /// Of `edges`, those naming tombstones (allowed until a vacuum).
    pub edges_to_tombstones: usize,
    /// Live nodes a walk of layer 0 from the entry point does not reach.
    pub unreachable_live: usize,
    /// Broken invariants (the first [`PROBLEMS_MAX`]), and how many in all.
    pub problems: Vec<String>,
    /// How many problems.
    pub problem_count: usize,
}

impl IndexCheck {
    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < PROBLEMS_MAX {
            self.problems.push(text);
        }
    }
}

/// Checks the store's index; `None` if it has none.
pub(crate) fn check_index(inner: &Inner) -> Result<Option<IndexCheck>> {
    let Some(published) = inner.graph.published() else { return Ok(None) };
    let _pin = inner.epochs.pin();
    let reader = PageReader::new(inner, published.shape)?;
    let report: CheckReport = published.hnsw.check(&reader)?;
    let mut check = IndexCheck {
        edges: report.edges,
        edges_to_tombstones: report.edges_to_tombstones,
        unreachable_live: report.unreachable_live,
        ..IndexCheck::default()
    };
    for problem in report.problems {
        check.problem(problem);
    }
    check.problem_count += report.problem_count.saturating_sub(check.problems.len());
    check_pages(&reader, &mut check)?;
    check_nodes(&reader, &mut check)?;
    check_runs(&reader, &mut check)?;
    if let Some(reason) = reader.stale() {
        check.problem(format!("a page of the index is not what the graph meta page says: {reason}"));
    }
    Ok(Some(check))
}

/// Every node and upper page by the rules of its own bytes (`format::graph`): its kind, index
/// and record size, and each record or slot.
fn check_pages(reader: &PageReader<'_>, check: &mut IndexCheck) -> Result<()> {
    let inner = reader.inner;
    let g = reader.shape.geometry;
    for (kind, extents, size) in [
        (PageKind::GraphNodes, &reader.snap.node_extents, g.record_bytes),
        (PageKind::GraphUpper, &reader.snap.upper_extents, g.slot_bytes),
    ] {
        for index in 0..extents.pages {
            let Some(page) = page_of(extents, index) else { continue };
            if page.page_no() >= inner.arena.page_count(Space::Catalog) {
                check.problem(format!("{} page {index} is {page}, beyond the arena", kind.name()));
                continue;
            }
            inner.arena.verify(page)?;
            let image = inner.arena.read_page(page);
            let header = page::PageHeader::read_from_prefix(&image).expect("a page holds a header").0;
            let decoded = match kind {
                PageKind::GraphNodes => decode_node_page(&image).map(|_| ()),
                _ => decode_upper_page(&image).map(|_| ()),
            };
            let reason = if header.kind != kind as u8 || header.a.get() != index || header.b.get() as usize != size {
                Some(format!("kind {}, a {}, b {}", header.kind, header.a.get(), header.b.get()))
            } else {
                decoded.err()
            };
            if let Some(reason) = reason {
                check.problem(format!("{page}, {} page {index} of the index: {reason}", kind.name()));
            }
        }
    }
    Ok(())
}

/// Nodes against the vector pages' owner tables, and the counts.
fn check_nodes(reader: &PageReader<'_>, check: &mut IndexCheck) -> Result<()> {
    let inner = reader.inner;
    let spp = inner.layout.slots_per_page;
    let slots = reader.slot_count();
    let mut owners = vec![0u8; spp as usize * VECTOR_OWNER_BYTES];
    let pages = inner.arena.page_count(Space::Vector);
    let mut ahead = ReadAhead::new(&inner.arena, Space::Vector, 0, pages);
    for page_no in 0..pages {
        ahead.at(page_no);
        let page = PageId::new(Space::Vector, page_no);
        inner.arena.verify(page)?;
        let is_vector_page = {
            let image = inner.arena.read_page(page);
            let kind = image[page::PAGE_KIND_OFFSET];
            let len = owners.len();
            owners.copy_from_slice(&image[VECTOR_OWNERS_OFFSET..VECTOR_OWNERS_OFFSET + len]);
            kind == PageKind::Vector as u8
        };
        for slot in 0..spp {
            let owned = is_vector_page && owners[slot as usize * 8..][..8].iter().any(|&b| b != 0);
            let Some(node) = node_of(page_no, slot, spp) else { break };
            let state = if node < slots { reader.state(node)? } else { NodeState::Free };
            match (state, owned) {
                (NodeState::Live, false) => check.problem(format!("node {node} is live, but its vector slot is free")),
                (NodeState::Deleted, true) => {
                    check.problem(format!("node {node} is a tombstone, but its vector slot holds a vector"))
                }
                (NodeState::Free, true) => check.problem(format!(
                    "vector page {page_no} slot {slot} holds a vector the index does not hold (node {node})"
                )),
                _ => {}
            }
        }
    }
    for node in 0..slots {
        match reader.state(node)? {
            NodeState::Live => check.live += 1,
            NodeState::Deleted => check.deleted += 1,
            NodeState::Free => {}
        }
    }
    let fields = &reader.snap.fields;
    if (fields.live.get(), fields.deleted.get()) != (check.live, check.deleted) {
        check.problem(format!(
            "the graph meta page counts {} live nodes and {} tombstones, the nodes are {} and {}",
            fields.live.get(),
            fields.deleted.get(),
            check.live,
            check.deleted
        ));
    }
    Ok(())
}

/// Upper runs: within the slots handed out, each in one page, none overlapping another or a
/// free run.
fn check_runs(reader: &PageReader<'_>, check: &mut IndexCheck) -> Result<()> {
    let g = reader.shape.geometry;
    let handed_out = reader.snap.fields.upper_next.get();
    let mut used = vec![false; handed_out as usize];
    let mut claim = |check: &mut IndexCheck, start: u32, len: u32, what: String| {
        let end = u64::from(start) + u64::from(len);
        if len == 0 || end > u64::from(handed_out) {
            check.problem(format!("{what}: upper slots {start}..{end} beyond the {handed_out} handed out"));
            return;
        }
        if start as usize / g.slots_per_page != (end as usize - 1) / g.slots_per_page {
            check.problem(format!("{what}: upper slots {start}..{end} span two pages"));
        }
        for slot in start..end as u32 {
            if std::mem::replace(&mut used[slot as usize], true) {
                check.problem(format!("{what}: upper slot {slot} is also another run's"));
                return;
            }
        }
    };
    for node in 0..reader.slot_count() {
        if reader.state(node)? == NodeState::Free {
            continue;
        }
        let level = reader.level(node)?;
        if level > 0 {
            let upper = reader_upper(reader, node)?;
            claim(check, upper, u32::from(level), format!("node {node}"));
        }
    }
    for len in 1..=GRAPH_LEVEL_MAX {
        let mut next = reader.snap.fields.free_runs[usize::from(len)].get();
        let mut steps = 0u32;
        while next != 0 {
            let slot = next - 1;
            if steps > handed_out {
                check.problem(format!("the free list of runs of {len} loops"));
                break;
            }
            steps += 1;
            claim(check, slot, u32::from(len), format!("a free run of {len}"));
            if slot >= handed_out {
                break;
            }
            next = upper_count(reader, slot)?;
        }
    }
    Ok(())
}

/// The first upper slot of node `node`.
fn reader_upper(reader: &PageReader<'_>, node: NodeId) -> Result<u32> {
    let (index, offset) = reader.shape.geometry.node_place(node);
    let mut raw = [0u8; 8];
    reader.read(PageKind::GraphNodes, index, offset, &mut raw)?;
    Ok(u32::from_le_bytes(raw[4..8].try_into().expect("4 bytes")))
}

/// The count field of upper slot `slot` (a free run's link).
fn upper_count(reader: &PageReader<'_>, slot: u32) -> Result<u32> {
    let (index, offset) = reader.shape.geometry.slot_place(slot);
    let mut raw = [0u8; 4];
    reader.read(PageKind::GraphUpper, index, offset, &mut raw)?;
    Ok(u32::from_le_bytes(raw))
}
