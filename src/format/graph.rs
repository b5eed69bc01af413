//! The approximate-search index (FORMAT.md 14.13): an HNSW graph in catalog-space pages.
//!
//! Three page kinds hold it:
//!
//! * the **graph meta page** (one, named by the meta page's `graph` field): the index's
//!   parameters, its entry point and counts, the allocation state of its pages, and two extent
//!   tables that locate the other pages;
//! * **node pages**: one fixed-size [node record](NodeHeader) per vector slot, addressed by the
//!   slot's number (`node id = vector page × slots per page + slot`): its state, level, the
//!   layer-0 neighbour list and where its upper-layer lists are;
//! * **upper pages**: fixed-size upper-list slots (`count u32`, `M` ids); a node of level `L`
//!   owns a run of `L` consecutive slots in one page (layer `l`'s list in slot `upper + l - 1`).
//!
//! Node and upper pages are numbered (page index `0, 1, …` of each kind) and live in extents of
//! consecutive catalog pages: the extent after `n` pages of its kind holds
//! `max(1, n >> extent_shift)` pages (so at most 1/16 of them are spare, with the shift of 4
//! this build writes); the extent tables give each extent's first catalog page number. So a
//! page's catalog page is a search of a short table, and nothing is loaded to find it.
//!
//! Everything here is pure and never panics on page bytes.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::format::page::{PAGE_HEADER_BYTES, PageHeader, PageKind};

/// Metric codes of [`GraphFields::metric`].
pub const METRIC_COSINE: u8 = 1;
/// Euclidean distance.
pub const METRIC_L2: u8 = 2;
/// Dot product.
pub const METRIC_DOT: u8 = 3;

/// The highest level a node may have (its upper lists are `level` slots of one upper page).
pub const GRAPH_LEVEL_MAX: u8 = 15;
/// Runs of upper slots of length `1..=GRAPH_LEVEL_MAX` have a free list each.
pub const FREE_RUN_LISTS: usize = 16;

/// A node slot holds no node (never used, or freed by a vacuum): no list names it.
pub const NODE_FREE: u8 = 0;
/// A live node: searches return it.
pub const NODE_LIVE: u8 = 1;
/// A tombstone: its vector was deleted; lists may still name it until a vacuum repairs them.
pub const NODE_DELETED: u8 = 2;

/// The graph meta page's fields, at [`GRAPH_FIELDS_OFFSET`].
///
/// | offset | size | field |
/// |---|---|---|
/// | 64 | 1 | metric: 1 cosine, 2 L2, 3 dot |
/// | 65 | 1 | reserved, zero |
/// | 66 | 2 | M: neighbours per list above layer 0 (layer 0 holds 2M) |
/// | 68 | 4 | ef_construction |
/// | 72 | 4 | ef_search: the default candidate list of a search |
/// | 76 | 1 | extent_shift: the extent after `n` pages of its kind holds `max(1, n >> extent_shift)` pages (0..=16) |
/// | 77 | 3 | reserved, zero |
/// | 80 | 8 | seed of the level draw |
/// | 88 | 8 | entry point: node id + 1 (0 = the graph is empty) |
/// | 96 | 8 | live nodes |
/// | 104 | 8 | tombstones |
/// | 112 | 4 | node pages in use (page indexes `0..n`) |
/// | 116 | 4 | upper pages in use |
/// | 120 | 4 | upper_next: the first upper slot never handed out |
/// | 124 | 2 | node extents |
/// | 126 | 2 | upper extents |
/// | 128 | 64 | free runs: 16 × u32, entry `L` the first slot + 1 of the free list of runs of length `L` (0 = empty; entry 0 unused) |
/// | 192 | … | node extent table, then upper extent table: [`extents_max`] u32 each, catalog page numbers |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GraphFields {
    /// 1 cosine, 2 L2, 3 dot.
    pub metric: u8,
    /// Zero.
    pub reserved0: u8,
    /// Neighbours per list above layer 0.
    pub m: U16,
    /// The candidate list of an insert's search.
    pub ef_construction: U32,
    /// The default candidate list of a search.
    pub ef_search: U32,
    /// The extent after `n` pages of its kind holds `max(1, n >> extent_shift)` pages.
    pub extent_shift: u8,
    /// Zero.
    pub reserved1: [u8; 3],
    /// The seed of the level draw.
    pub seed: U64,
    /// The entry point's node id + 1; 0 when the graph has no node.
    pub entry: U64,
    /// Live nodes.
    pub live: U64,
    /// Tombstones.
    pub deleted: U64,
    /// Node pages in use.
    pub node_pages: U32,
    /// Upper pages in use.
    pub upper_pages: U32,
    /// The first upper slot never handed out.
    pub upper_next: U32,
    /// Extents of node pages.
    pub node_extents: U16,
    /// Extents of upper pages.
    pub upper_extents: U16,
    /// Heads of the free lists of upper runs, by run length (slot + 1; 0 = empty).
    pub free_runs: [U32; FREE_RUN_LISTS],
}

/// Where the graph fields start.
pub const GRAPH_FIELDS_OFFSET: usize = PAGE_HEADER_BYTES;
/// Bytes of the graph fields.
pub const GRAPH_FIELDS_BYTES: usize = 128;
/// Where the node extent table starts.
pub const GRAPH_EXTENTS_OFFSET: usize = GRAPH_FIELDS_OFFSET + GRAPH_FIELDS_BYTES;
const _: () = assert!(size_of::<GraphFields>() == GRAPH_FIELDS_BYTES);
const _: () = assert!(GRAPH_FIELDS_OFFSET + std::mem::offset_of!(GraphFields, free_runs) == 128);

/// Entries of each extent table in a graph meta page of `page_size_bytes`.
pub fn extents_max(page_size_bytes: usize) -> usize {
    page_size_bytes.saturating_sub(GRAPH_EXTENTS_OFFSET) / 8
}

/// Offset of entry `k` of the node extent table.
pub fn node_extent_offset(k: usize) -> usize {
    GRAPH_EXTENTS_OFFSET + 4 * k
}

/// Offset of entry `k` of the upper extent table.
pub fn upper_extent_offset(page_size_bytes: usize, k: usize) -> usize {
    GRAPH_EXTENTS_OFFSET + 4 * (extents_max(page_size_bytes) + k)
}

/// The extent shift this build writes: at most 1/16 of the pages of an index are spare.
pub const EXTENT_SHIFT: u8 = 4;
/// The largest extent shift a graph meta page may hold.
pub const EXTENT_SHIFT_MAX: u8 = 16;

/// Pages of the extent that follows `before` pages of its kind.
pub fn extent_pages(before: u32, shift: u8) -> u32 {
    (before >> shift).max(1)
}

/// Pages in the first `extents` extents of a kind.
pub fn pages_of_extents(extents: usize, shift: u8) -> u64 {
    let mut pages = 0u64;
    for _ in 0..extents {
        pages += u64::from(extent_pages(u32::try_from(pages).unwrap_or(u32::MAX), shift));
    }
    pages
}

/// The extents of one kind of page: where each starts, and the page indexes it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extents {
    /// The first catalog page number of each extent.
    pub starts: Vec<u32>,
    /// The first page index of each extent.
    firsts: Vec<u32>,
    /// Pages in all.
    pub pages: u32,
    shift: u8,
}

impl Extents {
    /// The extents that start at catalog pages `starts`.
    pub fn new(starts: Vec<u32>, shift: u8) -> Extents {
        let mut extents = Extents {
            starts: Vec::with_capacity(starts.len()),
            firsts: Vec::with_capacity(starts.len()),
            pages: 0,
            shift,
        };
        for start in starts {
            extents.push(start);
        }
        extents
    }

    /// Pages the next extent holds.
    pub fn next_pages(&self) -> u32 {
        extent_pages(self.pages, self.shift)
    }

    /// Adds an extent starting at catalog page `start`.
    pub fn push(&mut self, start: u32) {
        let pages = self.next_pages();
        self.starts.push(start);
        self.firsts.push(self.pages);
        self.pages = self.pages.saturating_add(pages);
    }

    /// The catalog page number of page index `index`, `None` beyond the extents.
    pub fn locate(&self, index: u32) -> Option<u64> {
        if index >= self.pages {
            return None;
        }
        let k = self.firsts.partition_point(|&first| first <= index) - 1;
        Some(u64::from(self.starts[k]) + u64::from(index - self.firsts[k]))
    }
}

/// The record of a node in a node page: this header, then the layer-0 list (`2M` u32 ids, the
/// first `count` of them in use).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | state: 0 free, 1 live, 2 deleted (a tombstone) |
/// | 1 | 1 | level (0 ..= 15) |
/// | 2 | 2 | count: layer-0 neighbours |
/// | 4 | 4 | upper: the node's first upper slot (level > 0), else 0 |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct NodeHeader {
    /// [`NODE_FREE`], [`NODE_LIVE`] or [`NODE_DELETED`].
    pub state: u8,
    /// The node's top layer.
    pub level: u8,
    /// Layer-0 neighbours in use.
    pub count: U16,
    /// The first of the node's `level` upper slots.
    pub upper: U32,
}

/// Bytes of a node record's header.
pub const NODE_HEADER_BYTES: usize = 8;
const _: () = assert!(size_of::<NodeHeader>() == NODE_HEADER_BYTES);
/// Bytes of an upper slot's count.
pub const UPPER_COUNT_BYTES: usize = 4;

/// The sizes of the graph's records for one M and page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphGeometry {
    /// Neighbours per upper list; layer 0 holds `2m`.
    pub m: usize,
    /// Bytes of a node record: 8 + 8M.
    pub record_bytes: usize,
    /// Node records per node page.
    pub nodes_per_page: usize,
    /// Bytes of an upper slot: 4 + 4M.
    pub slot_bytes: usize,
    /// Upper slots per upper page.
    pub slots_per_page: usize,
}

impl GraphGeometry {
    /// The geometry of M `m` in pages of `page_size_bytes`; `Err` if a page cannot hold one
    /// record, or a run of [`GRAPH_LEVEL_MAX`] upper slots.
    pub fn new(page_size_bytes: u32, m: usize) -> Result<GraphGeometry, String> {
        let room = (page_size_bytes as usize).saturating_sub(PAGE_HEADER_BYTES);
        let record_bytes = NODE_HEADER_BYTES + 8 * m;
        let slot_bytes = UPPER_COUNT_BYTES + 4 * m;
        let geometry = GraphGeometry {
            m,
            record_bytes,
            nodes_per_page: room / record_bytes,
            slot_bytes,
            slots_per_page: room / slot_bytes,
        };
        if m < 2 || geometry.slots_per_page < usize::from(GRAPH_LEVEL_MAX) {
            return Err(format!(
                "M = {m} does not suit pages of {page_size_bytes} bytes: M must be at least 2, and {} upper lists of M ids must fit a page (M at most {})",
                GRAPH_LEVEL_MAX,
                Self::m_max(page_size_bytes)
            ));
        }
        Ok(geometry)
    }

    /// The largest M pages of `page_size_bytes` hold.
    pub fn m_max(page_size_bytes: u32) -> usize {
        let room = (page_size_bytes as usize).saturating_sub(PAGE_HEADER_BYTES);
        (room / usize::from(GRAPH_LEVEL_MAX)).saturating_sub(UPPER_COUNT_BYTES) / 4
    }

    /// Node `node`'s page index and the offset of its record in that page.
    pub fn node_place(&self, node: u32) -> (u32, usize) {
        let node = node as usize;
        (
            (node / self.nodes_per_page) as u32,
            PAGE_HEADER_BYTES + (node % self.nodes_per_page) * self.record_bytes,
        )
    }

    /// Upper slot `slot`'s page index and offset in that page.
    pub fn slot_place(&self, slot: u32) -> (u32, usize) {
        let slot = slot as usize;
        (
            (slot / self.slots_per_page) as u32,
            PAGE_HEADER_BYTES + (slot % self.slots_per_page) * self.slot_bytes,
        )
    }

    /// The capacity of a list at `layer`.
    pub fn capacity(&self, layer: u8) -> usize {
        if layer == 0 { 2 * self.m } else { self.m }
    }
}

impl GraphFields {
    /// Reads the fields of a graph meta page image.
    pub fn read(image: &[u8]) -> Option<GraphFields> {
        let bytes = image.get(GRAPH_FIELDS_OFFSET..GRAPH_FIELDS_OFFSET + GRAPH_FIELDS_BYTES)?;
        GraphFields::read_from_bytes(bytes).ok()
    }

    /// The entry point's node id, if any.
    pub fn entry_node(&self) -> Option<u64> {
        self.entry.get().checked_sub(1)
    }

    /// Why the graph meta page `image` is not valid, or `None`: the rules that need nothing but
    /// the page (FORMAT.md 14.13, "The graph meta page").
    pub fn check(&self, image: &[u8]) -> Option<String> {
        let Ok((header, _)) = PageHeader::read_from_prefix(image) else {
            return Some(format!("a page of {} bytes holds no header", image.len()));
        };
        if header.kind != PageKind::GraphMeta as u8 {
            return Some(format!("page kind {} is not the graph meta page", header.kind));
        }
        if header.a.get() != 0 || header.b.get() != 0 || header.c.get() != 0 {
            return Some("graph meta page: header fields a, b, c are not zero".into());
        }
        if !(METRIC_COSINE..=METRIC_DOT).contains(&self.metric) {
            return Some(format!("graph meta page: unknown metric {}", self.metric));
        }
        if self.reserved0 != 0 || self.reserved1 != [0; 3] {
            return Some("graph meta page: reserved bytes are not zero".into());
        }
        let page_size = image.len() as u32;
        if let Err(reason) = GraphGeometry::new(page_size, usize::from(self.m.get())) {
            return Some(format!("graph meta page: {reason}"));
        }
        if self.ef_construction.get() == 0 || self.ef_search.get() == 0 {
            return Some("graph meta page: ef of zero".into());
        }
        if self.extent_shift > EXTENT_SHIFT_MAX {
            return Some(format!(
                "graph meta page: extent shift {} out of range",
                self.extent_shift
            ));
        }
        let max = extents_max(image.len());
        if usize::from(self.node_extents.get()) > max || usize::from(self.upper_extents.get()) > max {
            return Some("graph meta page: more extents than its tables hold".into());
        }
        let covered = |extents: u16| pages_of_extents(usize::from(extents), self.extent_shift);
        if u64::from(self.node_pages.get()) != covered(self.node_extents.get())
            || u64::from(self.upper_pages.get()) != covered(self.upper_extents.get())
        {
            return Some("graph meta page: page counts disagree with the extents".into());
        }
        if self.free_runs[0].get() != 0 {
            return Some("graph meta page: free run list 0 is not empty".into());
        }
        if self.entry.get() == 0 && (self.live.get() != 0 || self.deleted.get() != 0) {
            return Some("graph meta page: nodes but no entry point".into());
        }
        None
    }
}

/// One node record of a node page, as [`decode_node_page`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its index in the page (the node id is `page index × records per page + this`).
    pub index: usize,
    /// [`NODE_LIVE`] or [`NODE_DELETED`] (free records are not listed).
    pub state: u8,
    /// Its top layer.
    pub level: u8,
    /// Its first upper slot.
    pub upper: u32,
    /// Its layer-0 neighbours.
    pub neighbours: Vec<u32>,
}

/// M of node records of `record_bytes` (8 + 8M), `Err` unless it is a valid size for pages of
/// `page_size_bytes`.
fn m_of_records(record_bytes: usize, page_size_bytes: usize) -> Result<usize, String> {
    let m = record_bytes.saturating_sub(NODE_HEADER_BYTES) / 8;
    if record_bytes != NODE_HEADER_BYTES + 8 * m || GraphGeometry::new(page_size_bytes as u32, m).is_err() {
        return Err(format!(
            "node records of {record_bytes} bytes: no valid M for pages of {page_size_bytes} bytes"
        ));
    }
    Ok(m)
}

/// Decodes the records of the node page `image` (a whole page of kind graph nodes) by the
/// rules that need nothing but the page: the record size (header b) is `8 + 8M` for an M the
/// page size allows; every record's state is 0, 1 or 2, its level at most 15, its count at most
/// 2M, and a free record's header is zero (its list bytes are left as they were, never read).
/// Returns M and the records that are not free. Pure: never panics, whatever the bytes.
pub fn decode_node_page(image: &[u8]) -> Result<(usize, Vec<NodeRecord>), String> {
    let Ok((header, _)) = PageHeader::read_from_prefix(image) else {
        return Err(format!("a page of {} bytes holds no header", image.len()));
    };
    if header.kind != PageKind::GraphNodes as u8 || header.c.get() != 0 {
        return Err(format!(
            "page kind {} (c {}) is not a graph node page",
            header.kind,
            header.c.get()
        ));
    }
    let record_bytes = header.b.get() as usize;
    let m = m_of_records(record_bytes, image.len())?;
    let mut records = Vec::new();
    for (index, bytes) in image[PAGE_HEADER_BYTES..].chunks_exact(record_bytes).enumerate() {
        let node = NodeHeader::read_from_prefix(bytes)
            .expect("a record holds its header")
            .0;
        let count = usize::from(node.count.get());
        match node.state {
            NODE_FREE if bytes[..NODE_HEADER_BYTES].iter().any(|&b| b != 0) => {
                return Err(format!("record {index}: free, but its header is not zero"));
            }
            NODE_FREE => continue,
            NODE_LIVE | NODE_DELETED => {}
            other => return Err(format!("record {index}: state {other}")),
        }
        if node.level > GRAPH_LEVEL_MAX || count > 2 * m {
            return Err(format!(
                "record {index}: level {} and {count} neighbours (M = {m})",
                node.level
            ));
        }
        let ids = &bytes[NODE_HEADER_BYTES..NODE_HEADER_BYTES + 4 * count];
        records.push(NodeRecord {
            index,
            state: node.state,
            level: node.level,
            upper: node.upper.get(),
            neighbours: ids
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        });
    }
    Ok((m, records))
}

/// An upper slot that is not all zero, as [`decode_upper_page`] reads it: its index in the page,
/// its count field, and the ids of its first `min(count, M)` places.
pub type UpperSlot = (usize, u32, Vec<u32>);

/// Decodes the upper page `image` (a whole page of kind graph upper): the slot size (header b)
/// is `4 + 4M` for an M the page size allows. Returns M and, for every slot not all zero, its
/// index, its count field (a list's length, or a free run's link) and the ids of the first
/// `min(count, M)` places. Which slots are lists and which free runs, only the node pages and
/// the graph meta page tell. Pure: never panics.
pub fn decode_upper_page(image: &[u8]) -> Result<(usize, Vec<UpperSlot>), String> {
    let Ok((header, _)) = PageHeader::read_from_prefix(image) else {
        return Err(format!("a page of {} bytes holds no header", image.len()));
    };
    if header.kind != PageKind::GraphUpper as u8 || header.c.get() != 0 {
        return Err(format!(
            "page kind {} (c {}) is not a graph upper page",
            header.kind,
            header.c.get()
        ));
    }
    let slot_bytes = header.b.get() as usize;
    let m = slot_bytes.saturating_sub(UPPER_COUNT_BYTES) / 4;
    if slot_bytes != UPPER_COUNT_BYTES + 4 * m || GraphGeometry::new(image.len() as u32, m).is_err() {
        return Err(format!(
            "upper slots of {slot_bytes} bytes: no valid M for pages of {} bytes",
            image.len()
        ));
    }
    let mut slots = Vec::new();
    for (index, bytes) in image[PAGE_HEADER_BYTES..].chunks_exact(slot_bytes).enumerate() {
        if crate::zeros::all_zero(bytes) {
            continue;
        }
        let count = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let used = (count as usize).min(m);
        let ids = bytes[UPPER_COUNT_BYTES..UPPER_COUNT_BYTES + 4 * used]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        slots.push((index, count, ids));
    }
    Ok((m, slots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_grow_by_a_sixteenth_and_every_index_lands_in_one() {
        let mut extents = Extents::new(Vec::new(), EXTENT_SHIFT);
        let mut start = 100u32;
        while extents.pages < 5000 {
            let pages = extents.next_pages();
            assert!(pages == 1 || pages <= extents.pages / 16, "at most a sixteenth more");
            extents.push(start);
            start += pages + 7;
        }
        assert_eq!(
            u64::from(extents.pages),
            pages_of_extents(extents.starts.len(), EXTENT_SHIFT)
        );
        let again = Extents::new(extents.starts.clone(), EXTENT_SHIFT);
        assert_eq!(again, extents, "the table alone gives the extents back");
        let mut seen = std::collections::HashSet::new();
        for index in 0..extents.pages {
            let page = extents.locate(index).expect("inside the extents");
            assert!(seen.insert(page), "page index {index}: each lands on its own page");
        }
        assert_eq!(extents.locate(0), Some(100));
        assert_eq!(extents.locate(extents.pages), None);
        assert!(
            extents.starts.len() < 150,
            "{} extents for 5000 pages",
            extents.starts.len()
        );
    }

    #[test]
    fn geometry_places_records_inside_their_pages_and_refuses_m_too_large() {
        let g = GraphGeometry::new(16384, 16).unwrap();
        assert_eq!(
            (g.record_bytes, g.nodes_per_page, g.slot_bytes, g.slots_per_page),
            (136, 120, 68, 240)
        );
        let (page, offset) = g.node_place(121);
        assert_eq!((page, offset), (1, 64 + 136));
        let (page, offset) = g.slot_place(239);
        assert!(offset + g.slot_bytes <= 16384 && page == 0);
        let max = GraphGeometry::m_max(4096);
        assert!(GraphGeometry::new(4096, max).is_ok());
        assert!(GraphGeometry::new(4096, max + 1).is_err());
        assert!(GraphGeometry::new(4096, 1).is_err());
    }

    #[test]
    fn a_damaged_graph_meta_page_is_refused_with_a_reason() {
        use crate::format::page::{PageId, Space, new_header};
        let mut page = vec![0u8; 4096];
        let header = new_header(PageKind::GraphMeta, PageId::new(Space::Catalog, 3), 0, 0);
        page[..PAGE_HEADER_BYTES].copy_from_slice(header.as_bytes());
        let fields = GraphFields {
            metric: METRIC_L2,
            m: U16::new(16),
            ef_construction: U32::new(128),
            ef_search: U32::new(64),
            extent_shift: EXTENT_SHIFT,
            ..GraphFields::default()
        };
        page[GRAPH_FIELDS_OFFSET..GRAPH_FIELDS_OFFSET + GRAPH_FIELDS_BYTES].copy_from_slice(fields.as_bytes());
        assert_eq!(GraphFields::read(&page).unwrap().check(&page), None);
        let cases: Vec<(&str, GraphFields)> = vec![
            ("metric", GraphFields { metric: 9, ..fields }),
            (
                "M = 500",
                GraphFields {
                    m: U16::new(500),
                    ..fields
                },
            ),
            (
                "ef of zero",
                GraphFields {
                    ef_search: U32::ZERO,
                    ..fields
                },
            ),
            (
                "disagree",
                GraphFields {
                    node_pages: U32::new(3),
                    ..fields
                },
            ),
            (
                "entry point",
                GraphFields {
                    live: U64::new(1),
                    ..fields
                },
            ),
            (
                "reserved",
                GraphFields {
                    reserved1: [1, 0, 0],
                    ..fields
                },
            ),
        ];
        for (reason, bad) in cases {
            let found = bad.check(&page);
            assert!(
                found.as_ref().is_some_and(|f| f.contains(reason)),
                "expected {reason:?}, got {found:?}"
            );
        }
    }
}
