//! The graph in pages (format/graph.rs): where a node's record and lists are, the view
//! readers search through ([`PageReader`]), and the one the writer changes through the edits of
//! its operation's record ([`PageWriter`]).
//!
//! Readers take no lock but one page latch at a time: a record or an upper slot is copied out
//! under its page's shared latch, and a vector is read in place (the epoch pin keeps its slot
//! from reuse: a tombstone's slot is held by the graph until a vacuum frees it, and freed slots
//! are quarantined until the readers that could reach them are gone). What a reader finds that
//! disagrees with its snapshot of the meta page (a page of another kind, a page of another
//! index) it notes as stale instead of failing: a drop or an abort may have happened meanwhile,
//! and the caller decides (see `search.rs`).

use std::cell::RefCell;

use zerocopy::{FromBytes, IntoBytes};

use super::super::Inner;
use super::super::alloc::{List, OpCtx};
use crate::ann::{GraphStore, GraphView, DeleteStore, NodeId, NodeState};
use crate::format::graph::{
    self, Extents, GRAPH_EXTENTS_OFFSET, GRAPH_FIELDS_OFFSET, GRAPH_LEVEL_MAX, GraphFields, GraphGeometry, NODE_DELETED,
    NODE_FREE, NODE_HEADER_BYTES, NODE_LIVE, NodeHeader, UPPER_COUNT_BYTES,
};
use crate::format::page::{PAGE_A_OFFSET, PAGE_KIND_OFFSET, PageId, PageKind, Space};
use crate::format::record::PageInit;
use crate::{Error, Result};

/// What never changes while an index lives: its meta page and the sizes of its records.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub meta_page: PageId,
    pub geometry: GraphGeometry,
    pub page_size: usize,
}

impl Shape {
    /// The shape of the index whose meta page `meta_page` holds `fields` (checked).
    pub fn new(meta_page: PageId, fields: &GraphFields, page_size_bytes: u32) -> Result<Shape> {
        let geometry = GraphGeometry::new(page_size_bytes, usize::from(fields.m.get()))
            .map_err(|r| Error::corrupted_file("arena", format!("{meta_page}: {r}")))?;
        Ok(Shape {
            meta_page,
            geometry,
            page_size: page_size_bytes as usize,
        })
    }
}

/// The catalog page of page index `index` of the kind whose extents are `extents`.
pub(crate) fn page_of(extents: &Extents, index: u32) -> Option<PageId> {
    extents.locate(index).map(|page_no| PageId::new(Space::Catalog, page_no))
}

/// The graph meta page's fields and extent tables.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub fields: GraphFields,
    pub node_extents: Extents,
    pub upper_extents: Extents,
}

impl Snapshot {
    /// Decodes a graph meta page image (checked by `GraphFields::check`).
    pub fn decode(image: &[u8]) -> std::result::Result<Snapshot, String> {
        let fields = GraphFields::read(image).ok_or("a page too small for the graph fields")?;
        if let Some(reason) = fields.check(image) {
            return Err(reason);
        }
        let table = |offset: usize, count: u16| -> Vec<u32> {
            (0..usize::from(count))
                .map(|k| {
                    let at = offset + 4 * k;
                    u32::from_le_bytes(image[at..at + 4].try_into().expect("4 bytes"))
                })
                .collect()
        };
        let shift = fields.extent_shift;
        Ok(Snapshot {
            node_extents: Extents::new(table(GRAPH_EXTENTS_OFFSET, fields.node_extents.get()), shift),
            upper_extents: Extents::new(
                table(graph::upper_extent_offset(image.len(), 0), fields.upper_extents.get()),
                shift,
            ),
            fields,
        })
    }

    /// Node ids below this have records.
    pub fn slot_count(&self, geometry: &GraphGeometry) -> NodeId {
        (u64::from(self.fields.node_pages.get()) * geometry.nodes_per_page as u64).min(u64::from(NodeId::MAX)) as NodeId
    }
}

/// Reads and checks the graph meta page `page` (under its latch).
pub(crate) fn read_snapshot(inner: &Inner, page: PageId) -> Result<Snapshot> {
    check_catalog_page(inner, page)?;
    inner.arena.verify_in_use(page)?;
    let image = inner.arena.read_page(page);
    Snapshot::decode(&image).map_err(|r| inner.arena.corrupted(page, r))
}

/// `Err(Corrupted)` unless `page` is a catalog page inside the arena.
fn check_catalog_page(inner: &Inner, page: PageId) -> Result<()> {
    if page.page_no() == 0 || page.page_no() >= inner.arena.page_count(Space::Catalog) {
        return Err(Error::corrupted_file(
            "arena",
            format!("the index names {page}, beyond the arena's catalog pages"),
        ));
    }
    Ok(())
}

/// The node id of vector slot `slot` of vector page `page_no`, `None` beyond the id range.
pub(crate) fn node_of(page_no: u64, slot: u32, slots_per_page: u32) -> Option<NodeId> {
    NodeId::try_from(page_no * u64::from(slots_per_page) + u64::from(slot)).ok()
}

/// The vector of node `node`, in place: `Err(Corrupted)` if its page is not in use.
///
/// The caller guarantees the slot is not rewritten while the returned slice lives: a reader
/// holds an epoch pin and reached the node through the graph (its slot is owned, or held by the
/// graph as a tombstone, or quarantined since its release); the writer reads slots no write of
/// its operation is pending on.
pub(super) fn vector_of(inner: &Inner, node: NodeId) -> Result<&[f32]> {
    let layout = &inner.layout;
    let page_no = u64::from(node / layout.slots_per_page);
    let slot = node % layout.slots_per_page;
    if page_no >= inner.arena.page_count(Space::Vector) {
        return Err(Error::corrupted_file(
            "arena",
            format!("index node {node} names vector page {page_no}, beyond the arena"),
        ));
    }
    let page = PageId::new(Space::Vector, page_no);
    inner.arena.verify_in_use(page)?;
    let ptr = inner.arena.page_ptr(page, layout.slot_offset(slot)) as *const f32;
    // SAFETY: `dimension` f32s at a 16-byte aligned slot inside the arena mapping, which lives
    // as long as `inner`; the caller's guarantee (above) keeps the bytes from change while the
    // slice lives.
    Ok(unsafe { std::slice::from_raw_parts(ptr, inner.dimension as usize) })
}

fn node_state(raw: u8) -> Option<NodeState> {
    match raw {
        NODE_FREE => Some(NodeState::Free),
        NODE_LIVE => Some(NodeState::Live),
        NODE_DELETED => Some(NodeState::Deleted),
        _ => None,
    }
}

/// Decodes and checks a node header read from `page`.
fn decode_header(inner: &Inner, page: PageId, node: NodeId, bytes: &[u8]) -> Result<(NodeHeader, NodeState)> {
    let header = NodeHeader::read_from_bytes(bytes).expect("a node header's bytes");
    let state = node_state(header.state)
        .ok_or_else(|| inner.arena.corrupted(page, format!("index node {node}: state {}", header.state)))?;
    if header.level > GRAPH_LEVEL_MAX {
        return Err(inner.arena.corrupted(page, format!("index node {node}: level {}", header.level)));
    }
    Ok((header, state))
}

/// Decodes a list of `count` ids (checked against `capacity` and `slot_count`) into `out`.
fn decode_list(
    inner: &Inner,
    page: PageId,
    node: NodeId,
    (count, capacity, slot_count): (usize, usize, NodeId),
    bytes: &[u8],
    out: &mut Vec<NodeId>,
) -> Result<()> {
    if count > capacity {
        return Err(inner.arena.corrupted(
            page,
            format!("index node {node}: a list of {count} ids, more than {capacity}"),
        ));
    }
    out.clear();
    for chunk in bytes[..4 * count].chunks_exact(4) {
        let id = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        if id >= slot_count {
            return Err(inner.arena.corrupted(
                page,
                format!("index node {node}: neighbour {id} is beyond the index's {slot_count} nodes"),
            ));
        }
        out.push(id);
    }
    Ok(())
}

/// Where a list's ids start, given where its count is: a node record's count is at offset 2
/// of its header and its ids at 8; an upper slot's count is its first 4 bytes.
fn ids_offset(count_offset: usize, layer: u8) -> usize {
    if layer == 0 { count_offset + 6 } else { count_offset + 4 }
}

/// A reader's view of the graph: a snapshot of the meta page, pages read under their latches.
pub(crate) struct PageReader<'a> {
    pub inner: &'a Inner,
    pub shape: Shape,
    pub snap: Snapshot,
    slot_count: NodeId,
    /// The running transaction's changes were masked when the search began.
    mask_active: bool,
    /// The first disagreement between a page and the snapshot (see the module docs).
    stale: RefCell<Option<String>>,
}

impl<'a> PageReader<'a> {
    pub fn new(inner: &'a Inner, shape: Shape) -> Result<PageReader<'a>> {
        let snap = read_snapshot(inner, shape.meta_page)?;
        Ok(PageReader {
            inner,
            shape,
            slot_count: snap.slot_count(&shape.geometry),
            snap,
            mask_active: inner.mask.is_active(),
            stale: RefCell::new(None),
        })
    }

    /// What made the view stale, if anything did.
    pub fn stale(&self) -> Option<String> {
        self.stale.borrow().clone()
    }

    fn note_stale(&self, reason: String) {
        self.stale.borrow_mut().get_or_insert(reason);
    }

    /// Runs `f` on page index `index` of `kind` under the page latch; `None` (noted stale) if
    /// the page is not what the snapshot says.
    fn with_page<T>(&self, kind: PageKind, index: u32, f: impl FnOnce(PageId, &[u8]) -> Result<T>) -> Result<Option<T>> {
        let starts = match kind {
            PageKind::GraphNodes => &self.snap.node_extents,
            _ => &self.snap.upper_extents,
        };
        let Some(page) = page_of(starts, index) else {
            self.note_stale(format!("{} page {index} is beyond the snapshot's extents", kind.name()));
            return Ok(None);
        };
        check_catalog_page(self.inner, page)?;
        self.inner.arena.verify(page)?;
        let image = self.inner.arena.read_page(page);
        let a = u32::from_le_bytes(image[PAGE_A_OFFSET..PAGE_A_OFFSET + 4].try_into().expect("4 bytes"));
        if image[PAGE_KIND_OFFSET] != kind as u8 || a != index {
            drop(image);
            self.note_stale(format!("{page} is no longer {} page {index}", kind.name()));
            return Ok(None);
        }
        f(page, &image).map(Some)
    }

    /// Copies `out.len()` bytes at `offset` of page index `index` of `kind` out under the page
    /// latch; false (noted stale) if the page is not what the snapshot says.
    pub fn read(&self, kind: PageKind, index: u32, offset: usize, out: &mut [u8]) -> Result<bool> {
        let copied = self.with_page(kind, index, |_, image| {
            out.copy_from_slice(&image[offset..offset + out.len()]);
            Ok(())
        })?;
        Ok(copied.is_some())
    }

    /// Node `node`'s header; `None` if the view is stale there.
    fn header(&self, node: NodeId) -> Result<Option<(NodeHeader, NodeState)>> {
        if node >= self.slot_count {
            return Ok(None);
        }
        let (index, offset) = self.shape.geometry.node_place(node);
        self.with_page(PageKind::GraphNodes, index, |page, image| {
            decode_header(self.inner, page, node, &image[offset..offset + NODE_HEADER_BYTES])
        })
    }

    /// True if the running transaction wrote node `node`'s vector (not committed).
    fn hidden(&self, node: NodeId) -> bool {
        let spp = self.inner.layout.slots_per_page;
        self.mask_active && self.inner.mask.hides_slot(node / spp, node % spp)
    }
}

impl GraphView for PageReader<'_> {
    fn dimension(&self) -> usize {
        self.inner.dimension as usize
    }

    /// Asks for each node's vector page, and its node page, where the vector page was not
    /// checked since the open (after a cold start, one wait on the disk for a node's
    /// neighbours rather than one for each). A warm search pays one bit test a node.
    fn will_read(&self, nodes: &mut dyn Iterator<Item = NodeId>) {
        let arena = &self.inner.arena;
        let spp = self.inner.layout.slots_per_page;
        let vector_pages = arena.page_count(Space::Vector);
        for node in nodes.filter(|&node| node < self.slot_count) {
            let vector_page = PageId::new(Space::Vector, u64::from(node / spp));
            if vector_page.page_no() >= vector_pages || arena.is_verified(vector_page) {
                continue;
            }
            arena.ask_ahead(vector_page);
            let (index, _) = self.shape.geometry.node_place(node);
            if let Some(page) = page_of(&self.snap.node_extents, index) {
                arena.ask_ahead(page);
            }
        }
    }

    fn slot_count(&self) -> NodeId {
        self.slot_count
    }

    fn vector(&self, node: NodeId) -> Result<&[f32]> {
        vector_of(self.inner, node)
    }

    /// The state a reader sees: a node whose vector the running transaction wrote is a
    /// tombstone to it (traversed, never returned).
    fn state(&self, node: NodeId) -> Result<NodeState> {
        Ok(match self.header(node)? {
            None => NodeState::Free,
            Some((_, NodeState::Live)) if self.hidden(node) => NodeState::Deleted,
            Some((_, state)) => state,
        })
    }

    fn level(&self, node: NodeId) -> Result<u8> {
        Ok(self.header(node)?.map_or(0, |(h, _)| h.level))
    }

    fn neighbours(&self, node: NodeId, layer: u8, out: &mut Vec<NodeId>) -> Result<()> {
        out.clear();
        let g = self.shape.geometry;
        if node >= self.slot_count {
            return Ok(());
        }
        let (index, offset) = g.node_place(node);
        let slots = self.slot_count;
        let upper = self.with_page(PageKind::GraphNodes, index, |page, image| {
            let record = &image[offset..offset + g.record_bytes];
            let (header, state) = decode_header(self.inner, page, node, &record[..NODE_HEADER_BYTES])?;
            if state == NodeState::Free || layer > header.level {
                // A node freed or reused since the list that named it was read: nothing to follow.
                return Ok(None);
            }
            if layer > 0 {
                return Ok(Some(header.upper.get()));
            }
            let count = usize::from(header.count.get());
            decode_list(self.inner, page, node, (count, g.capacity(0), slots), &record[NODE_HEADER_BYTES..], out)?;
            Ok(None)
        })?;
        let Some(Some(upper)) = upper else { return Ok(()) };
        let slot = upper.checked_add(u32::from(layer) - 1);
        let Some(slot) = slot.filter(|&s| s < self.snap.fields.upper_next.get()) else {
            self.note_stale(format!("index node {node}: upper slot beyond those handed out"));
            return Ok(());
        };
        let (index, offset) = g.slot_place(slot);
        self.with_page(PageKind::GraphUpper, index, |page, image| {
            let bytes = &image[offset..offset + g.slot_bytes];
            let count = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
            decode_list(self.inner, page, node, (count, g.m, slots), &bytes[UPPER_COUNT_BYTES..], out)
        })?;
        Ok(())
    }

    fn entry_point(&self) -> Result<Option<NodeId>> {
        Ok(self
            .snap
            .fields
            .entry_node()
            .and_then(|e| NodeId::try_from(e).ok())
            .filter(|&e| e < self.slot_count))
    }
}

/// The writer's view of the graph within one operation: reads see the operation's pending
/// edits; every change is an edit of its record, with its before-image.
pub(crate) struct PageWriter<'c, 'a, 'v> {
    pub ctx: &'c mut OpCtx<'a>,
    pub shape: Shape,
    pub fields: GraphFields,
    node_extents: Extents,
    upper_extents: Extents,
    /// The nodes this record inserts and their vectors, not in their pages until the record
    /// is applied.
    new_vectors: Vec<(NodeId, &'v [f32])>,
    /// The epoch freed nodes are quarantined from (default: now).
    release_epoch: Option<u64>,
}

impl<'c, 'a, 'v> PageWriter<'c, 'a, 'v> {
    /// The writer's view of the store's index, `None` if it has none.
    pub fn open(ctx: &'c mut OpCtx<'a>) -> Result<Option<PageWriter<'c, 'a, 'v>>> {
        let graph = ctx.w.meta.graph.get();
        if graph == 0 {
            return Ok(None);
        }
        let meta_page = PageId::new(Space::Catalog, u64::from(graph));
        check_catalog_page(ctx.inner, meta_page)?;
        ctx.inner.arena.check_in_use(meta_page)?;
        let page_size = ctx.inner.arena.page_size_bytes() as usize;
        let mut image = vec![0u8; page_size];
        ctx.list.read(&ctx.inner.arena, meta_page, 0, &mut image);
        let snap = Snapshot::decode(&image).map_err(|r| ctx.inner.arena.corrupted(meta_page, r))?;
        let shape = Shape::new(meta_page, &snap.fields, page_size as u32)?;
        Ok(Some(PageWriter {
            ctx,
            shape,
            fields: snap.fields,
            node_extents: snap.node_extents,
            upper_extents: snap.upper_extents,
            new_vectors: Vec::new(),
            release_epoch: None,
        }))
    }

    /// The node pages' extents.
    pub fn node_extents(&self) -> &Extents {
        &self.node_extents
    }

    /// The upper pages' extents.
    pub fn upper_extents(&self) -> &Extents {
        &self.upper_extents
    }

    /// Nodes freed are quarantined from `epoch`: readers pinned in it or before may reach them.
    pub fn releasing_from(mut self, epoch: u64) -> Self {
        self.release_epoch = Some(epoch);
        self
    }

    /// Reads of node `node`'s vector return `vector` (its edit is pending in the record).
    pub fn with_new_vector(mut self, node: NodeId, vector: &'v [f32]) -> Self {
        self.new_vectors.push((node, vector));
        self
    }

    fn read(&self, page: PageId, offset: usize, out: &mut [u8]) {
        self.ctx.list.read(&self.ctx.inner.arena, page, offset, out);
    }

    fn write(&mut self, page: PageId, offset: usize, bytes: &[u8]) {
        self.ctx.list.push_change(&self.ctx.inner.arena, page, offset, bytes);
    }

    /// A node or upper page by index, checked in use.
    pub fn page(&self, kind: PageKind, index: u32) -> Result<PageId> {
        let starts = if kind == PageKind::GraphNodes { &self.node_extents } else { &self.upper_extents };
        let page = page_of(starts, index).ok_or_else(|| {
            self.ctx
                .inner
                .arena
                .corrupted(self.shape.meta_page, format!("{} page {index} is beyond the extents", kind.name()))
        })?;
        check_catalog_page(self.ctx.inner, page)?;
        self.ctx.inner.arena.verify_in_use(page)?;
        Ok(page)
    }

    /// Node ids below this have records.
    fn nodes(&self) -> NodeId {
        let snap_pages = u64::from(self.fields.node_pages.get());
        (snap_pages * self.shape.geometry.nodes_per_page as u64).min(u64::from(NodeId::MAX)) as NodeId
    }

    /// Changes the graph fields by `change`, as an edit of the 8-byte words that changed.
    pub fn set_fields(&mut self, change: impl FnOnce(&mut GraphFields)) {
        let before = self.fields;
        change(&mut self.fields);
        let (old, new) = (before.as_bytes(), self.fields.as_bytes());
        let Some(first) = old.iter().zip(new).position(|(a, b)| a != b) else { return };
        let last = old.iter().zip(new).rposition(|(a, b)| a != b).expect("a change");
        let (start, end) = (first / 8 * 8, (last / 8 + 1) * 8);
        let bytes = new[start..end].to_vec();
        let meta = self.shape.meta_page;
        self.write(meta, GRAPH_FIELDS_OFFSET + start, &bytes);
    }

    /// The meta page's count `name`, `count`, changed by `delta`: a count that would go below
    /// zero (or past `u64::MAX`) disagrees with the node records, and is damage of the meta page.
    fn count_changed(&self, name: &str, count: u64, delta: i64) -> Result<u64> {
        count.checked_add_signed(delta).ok_or_else(|| {
            self.ctx.inner.arena.corrupted(
                self.shape.meta_page,
                format!("graph meta page: its {name} node count {count} disagrees with the node records"),
            )
        })
    }

    /// Node `node`'s record page and offset, and its header.
    pub fn header(&self, node: NodeId) -> Result<(PageId, usize, NodeHeader, NodeState)> {
        if node >= self.nodes() {
            return Err(Error::corrupted_file(
                "arena",
                format!("index node {node} is beyond the index's {} nodes", self.nodes()),
            ));
        }
        let (index, offset) = self.shape.geometry.node_place(node);
        let page = self.page(PageKind::GraphNodes, index)?;
        let mut raw = [0u8; NODE_HEADER_BYTES];
        self.read(page, offset, &mut raw);
        let (header, state) = decode_header(self.ctx.inner, page, node, &raw)?;
        Ok((page, offset, header, state))
    }

    /// Where node `node`'s list at `layer` is: page, offset of its count, bytes of the count.
    fn list_place(&self, node: NodeId, layer: u8) -> Result<(PageId, usize, usize)> {
        let (page, offset, header, state) = self.header(node)?;
        if state == NodeState::Free || layer > header.level {
            return Err(self.ctx.inner.arena.corrupted(
                page,
                format!("index node {node} ({state:?}, level {}) has no list at layer {layer}", header.level),
            ));
        }
        if layer == 0 {
            return Ok((page, offset + 2, 2));
        }
        let slot = header.upper.get().checked_add(u32::from(layer) - 1).filter(|&s| s < self.fields.upper_next.get());
        let slot = slot.ok_or_else(|| {
            self.ctx
                .inner
                .arena
                .corrupted(page, format!("index node {node}: its upper slots were never handed out"))
        })?;
        let (index, slot_offset) = self.shape.geometry.slot_place(slot);
        Ok((self.page(PageKind::GraphUpper, index)?, slot_offset, 4))
    }

    /// Adds node pages until node `node` has a record (whole extents of fresh pages).
    pub fn ensure_nodes(&mut self, node: NodeId) -> Result<()> {
        while node >= self.nodes() {
            let start = self.add_extent(PageKind::GraphNodes)?;
            self.node_extents.push(start);
        }
        Ok(())
    }

    /// Adds upper pages until upper slot `slot` exists.
    fn ensure_upper(&mut self, slot: u32) -> Result<()> {
        let per_page = self.shape.geometry.slots_per_page as u64;
        while u64::from(slot) >= u64::from(self.fields.upper_pages.get()) * per_page {
            let start = self.add_extent(PageKind::GraphUpper)?;
            self.upper_extents.push(start);
        }
        Ok(())
    }

    /// Formats the next extent of `kind` in fresh catalog pages and records it in the meta
    /// page; returns its first catalog page number.
    fn add_extent(&mut self, kind: PageKind) -> Result<u32> {
        let page_size = self.shape.page_size;
        let extents = if kind == PageKind::GraphNodes { &self.node_extents } else { &self.upper_extents };
        let (k, first, pages) = (extents.starts.len(), extents.pages, extents.next_pages());
        if k >= graph::extents_max(page_size) {
            return Err(Error::InvalidArgument(format!(
                "the index is full: its extent table of {} {} extents cannot grow (larger pages address more)",
                graph::extents_max(page_size),
                kind.name()
            )));
        }
        let start = self.ctx.w.meta.catalog_pages.get().max(1);
        let start32 = u32::try_from(start + u64::from(pages))
            .map(|_| start as u32)
            .map_err(|_| Error::InvalidArgument("the catalog space has no page numbers left for the index".into()))?;
        let g = self.shape.geometry;
        for i in 0..pages {
            let init = match kind {
                PageKind::GraphNodes => PageInit::GraphNodes {
                    page_index: first + i,
                    record_bytes: g.record_bytes as u32,
                },
                _ => PageInit::GraphUpper {
                    page_index: first + i,
                    slot_bytes: g.slot_bytes as u32,
                },
            };
            self.ctx.inner.init_page(PageId::new(Space::Catalog, start + u64::from(i)), init)?;
        }
        self.ctx.set_meta(|m| m.catalog_pages = (start + u64::from(pages)).into());
        let offset = match kind {
            PageKind::GraphNodes => graph::node_extent_offset(k),
            _ => graph::upper_extent_offset(page_size, k),
        };
        let meta = self.shape.meta_page;
        self.write(meta, offset, &start32.to_le_bytes());
        self.set_fields(|f| match kind {
            PageKind::GraphNodes => {
                f.node_pages = (f.node_pages.get() + pages).into();
                f.node_extents = (f.node_extents.get() + 1).into();
            }
            _ => {
                f.upper_pages = (f.upper_pages.get() + pages).into();
                f.upper_extents = (f.upper_extents.get() + 1).into();
            }
        });
        Ok(start32)
    }

    /// A run of `len` upper slots in one page: a freed one, or new ones.
    pub fn take_run(&mut self, len: u8) -> Result<u32> {
        let head = self.fields.free_runs[usize::from(len)].get();
        if head != 0 {
            let slot = head - 1;
            let (page, offset) = self.slot_place(slot)?;
            let mut link = [0u8; 4];
            self.read(page, offset, &mut link);
            let next = u32::from_le_bytes(link);
            if next != 0 && next > self.fields.upper_next.get() {
                return Err(self.ctx.inner.arena.corrupted(page, format!("upper slot {slot}: free-run link {next}")));
            }
            self.set_fields(|f| f.free_runs[usize::from(len)] = next.into());
            return Ok(slot);
        }
        let per_page = self.shape.geometry.slots_per_page as u32;
        let mut slot = self.fields.upper_next.get();
        let room = per_page - slot % per_page;
        if room < u32::from(len) {
            // The page's tail cannot hold the run: it becomes a free run of its own length.
            self.ensure_upper(slot)?;
            self.free_run(slot, room as u8)?;
            slot += room;
        }
        let end = slot
            .checked_add(u32::from(len))
            .ok_or_else(|| Error::InvalidArgument("the index has no upper slot left".into()))?;
        self.ensure_upper(end - 1)?;
        self.set_fields(|f| f.upper_next = end.into());
        Ok(slot)
    }

    /// Puts the run of `len` slots at `slot` on its free list.
    fn free_run(&mut self, slot: u32, len: u8) -> Result<()> {
        let (page, offset) = self.slot_place(slot)?;
        let head = self.fields.free_runs[usize::from(len)].get();
        self.write(page, offset, &head.to_le_bytes());
        self.set_fields(|f| f.free_runs[usize::from(len)] = (slot + 1).into());
        Ok(())
    }

    /// Upper slot `slot`'s page and offset.
    fn slot_place(&self, slot: u32) -> Result<(PageId, usize)> {
        let (index, offset) = self.shape.geometry.slot_place(slot);
        Ok((self.page(PageKind::GraphUpper, index)?, offset))
    }

    /// True if node `node` is a node of the graph (live or a tombstone).
    pub fn holds(&self, node: NodeId) -> Result<bool> {
        if node >= self.nodes() {
            return Ok(false);
        }
        Ok(self.header(node)?.3 != NodeState::Free)
    }
}

impl GraphView for PageWriter<'_, '_, '_> {
    fn dimension(&self) -> usize {
        self.ctx.inner.dimension as usize
    }

    fn slot_count(&self) -> NodeId {
        self.nodes()
    }

    fn vector(&self, node: NodeId) -> Result<&[f32]> {
        match self.new_vectors.iter().find(|(new, _)| *new == node) {
            Some(&(_, vector)) => Ok(vector),
            None => vector_of(self.ctx.inner, node),
        }
    }

    fn state(&self, node: NodeId) -> Result<NodeState> {
        Ok(self.header(node)?.3)
    }

    fn level(&self, node: NodeId) -> Result<u8> {
        Ok(self.header(node)?.2.level)
    }

    fn neighbours(&self, node: NodeId, layer: u8, out: &mut Vec<NodeId>) -> Result<()> {
        let (page, offset, count_bytes) = self.list_place(node, layer)?;
        let capacity = self.shape.geometry.capacity(layer);
        let mut raw = [0u8; 4];
        self.read(page, offset, &mut raw[..count_bytes]);
        let count = u32::from_le_bytes(raw) as usize;
        let mut ids = vec![0u8; 4 * capacity];
        self.read(page, ids_offset(offset, layer), &mut ids);
        decode_list(self.ctx.inner, page, node, (count, capacity, self.nodes()), &ids, out)
    }

    fn entry_point(&self) -> Result<Option<NodeId>> {
        match self.fields.entry_node() {
            None => Ok(None),
            Some(entry) if entry < u64::from(self.nodes()) => Ok(Some(entry as NodeId)),
            Some(entry) => Err(self.ctx.inner.arena.corrupted(
                self.shape.meta_page,
                format!("the entry point {entry} is beyond the index's nodes"),
            )),
        }
    }
}

impl GraphStore for PageWriter<'_, '_, '_> {
    fn add_node(&mut self, node: NodeId, level: u8) -> Result<()> {
        assert!(level <= GRAPH_LEVEL_MAX, "levels are drawn at most {GRAPH_LEVEL_MAX}");
        self.ensure_nodes(node)?;
        let (page, offset, _, state) = self.header(node)?;
        if state != NodeState::Free {
            return Err(self
                .ctx
                .inner
                .arena
                .corrupted(page, format!("index node {node} is {state:?}, but its vector slot was free")));
        }
        let upper = if level > 0 { self.take_run(level)? } else { 0 };
        for layer in 1..=level {
            let (slot_page, slot_offset) = self.slot_place(upper + u32::from(layer) - 1)?;
            self.write(slot_page, slot_offset, &0u32.to_le_bytes());
        }
        let header = NodeHeader {
            state: NODE_LIVE,
            level,
            count: 0.into(),
            upper: upper.into(),
        };
        self.write(page, offset, header.as_bytes());
        let live = self.count_changed("live", self.fields.live.get(), 1)?;
        self.set_fields(|f| f.live = live.into());
        Ok(())
    }

    fn set_neighbours(&mut self, node: NodeId, layer: u8, neighbours: &[NodeId]) -> Result<()> {
        let capacity = self.shape.geometry.capacity(layer);
        assert!(neighbours.len() <= capacity, "a list of at most {capacity} ids");
        let mut old = Vec::with_capacity(capacity);
        self.neighbours(node, layer, &mut old)?;
        let (page, offset, count_bytes) = self.list_place(node, layer)?;
        let same = old.iter().zip(neighbours).take_while(|(a, b)| a == b).count();
        if same < neighbours.len() {
            let tail: Vec<u8> = neighbours[same..].iter().flat_map(|id| id.to_le_bytes()).collect();
            self.write(page, ids_offset(offset, layer) + 4 * same, &tail);
        }
        if old.len() != neighbours.len() {
            let count = neighbours.len() as u32;
            self.write(page, offset, &count.to_le_bytes()[..count_bytes]);
        }
        Ok(())
    }

    fn set_entry_point(&mut self, node: Option<NodeId>) -> Result<()> {
        self.set_fields(|f| f.entry = node.map_or(0, |n| u64::from(n) + 1).into());
        Ok(())
    }
}

impl DeleteStore for PageWriter<'_, '_, '_> {
    fn set_deleted(&mut self, node: NodeId) -> Result<()> {
        let (page, offset, _, state) = self.header(node)?;
        if state != NodeState::Live {
            return Err(self
                .ctx
                .inner
                .arena
                .corrupted(page, format!("index node {node} is {state:?}, but its vector was live")));
        }
        let live = self.count_changed("live", self.fields.live.get(), -1)?;
        let deleted = self.count_changed("deleted", self.fields.deleted.get(), 1)?;
        self.write(page, offset, &[NODE_DELETED]);
        self.set_fields(|f| {
            f.live = live.into();
            f.deleted = deleted.into();
        });
        Ok(())
    }

    /// Frees the tombstone `node`: its record cleared, its upper run on its free list, its
    /// vector slot quarantined (readers may still reach it) and then free for new vectors.
    fn free_node(&mut self, node: NodeId) -> Result<()> {
        let (page, offset, header, state) = self.header(node)?;
        if state != NodeState::Deleted {
            return Err(self
                .ctx
                .inner
                .arena
                .corrupted(page, format!("index node {node} is {state:?}, not a tombstone")));
        }
        let deleted = self.count_changed("deleted", self.fields.deleted.get(), -1)?;
        self.write(page, offset, NodeHeader::default().as_bytes());
        if header.level > 0 {
            self.free_run(header.upper.get(), header.level)?;
        }
        self.set_fields(|f| f.deleted = deleted.into());
        let inner = self.ctx.inner;
        inner.graph.quarantine(node, self.release_epoch.unwrap_or_else(|| inner.epochs.now()));
        let vector_page = PageId::new(Space::Vector, u64::from(node / inner.layout.slots_per_page));
        if self.ctx.link(vector_page) == 0 {
            self.ctx.list_push(List::Vector, vector_page)?;
        }
        Ok(())
    }
}
