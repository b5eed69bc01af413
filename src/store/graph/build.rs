//! Making and dropping the index, each one transaction.
//!
//! A build runs HNSW on every core in memory (`ann::Hnsw::build_watched`) over the vectors in
//! place, then writes each node and upper page once, whole: the record carries the page's
//! image (no before-image: the pages are fresh, formatted beyond the catalog's high-water mark,
//! which an undo moves back), so the log holds one image per page rather than one edit per
//! list. A crash before the commit leaves the store as it was, without an index.
//!
//! The default candidate list of searches is measured then, not fixed: the smallest that
//! reaches recall@10 = 0.96 on 100 of the store's own vectors searched leave-one-out (how long
//! a list a given recall needs depends on the data).

use std::collections::HashMap;
use std::ops::ControlFlow;

use zerocopy::IntoBytes;

use super::super::Inner;
use super::super::alloc::OpCtx;
use super::pages::{PageWriter, Snapshot, node_of, page_of, vector_of};
use super::{IndexBuildPhase, IndexBuildProgress, IndexOptions, metric_code};
use crate::arena::ReadAhead;
use crate::ann::{Built, Hnsw, NodeId, Params, VectorSource};
use crate::format::graph::{
    self, GRAPH_FIELDS_OFFSET, GraphFields, GraphGeometry, NODE_DELETED, NODE_HEADER_BYTES, NODE_LIVE, NodeHeader,
    UPPER_COUNT_BYTES,
};
use crate::format::page::{PAGE_HEADER_BYTES, PageId, PageKind, Space, VECTOR_OWNER_BYTES, VECTOR_OWNERS_OFFSET};
use crate::format::record::PageInit;
use crate::{Error, Result, Store};

/// The candidate list of a search that names none, in an index built over too few vectors to
/// calibrate one.
pub const EF_SEARCH_DEFAULT: usize = 64;
/// The recall@10 the default candidate list is chosen to reach (`ann::Hnsw::calibrate_ef`):
/// 0.95 with a margin for the sample's error.
const EF_RECALL_TARGET: f64 = 0.96;
/// The `ef_search` of an index whose calibration reached [`EF_RECALL_TARGET`] with no candidate
/// list it tried: a search that names no list scans (exact), rather than answer with a recall
/// the index cannot reach on this data (random vectors of dimension 128 beyond some 300,000:
/// 0.67 at ef 2,048 on a million, for hnsw_rs as for this index). A search that names its `ef`
/// still goes through the graph. A reader sees an ordinary value (FORMAT.md 14.13).
pub const EF_SEARCH_SCAN: usize = u32::MAX as usize;
/// Queries the calibration draws from the indexed vectors.
const CALIBRATION_QUERIES: usize = 100;
/// The k of the recall it measures.
const CALIBRATION_K: usize = 10;
/// Bytes of page images per record of a build (records stay far below the log's maximum).
const IMAGE_BYTES_PER_RECORD: usize = 1 << 20;
/// Pages freed per record of a drop.
const PAGES_FREED_PER_RECORD: usize = 256;

/// The vectors of a store, in place, by node id (the writer holds the store: none changes).
struct ArenaVectors<'a> {
    inner: &'a Inner,
    count: NodeId,
}

impl VectorSource for ArenaVectors<'_> {
    fn source_dimension(&self) -> usize {
        self.inner.dimension as usize
    }

    fn source_count(&self) -> NodeId {
        self.count
    }

    fn source_vector(&self, node: NodeId) -> Result<&[f32]> {
        vector_of(self.inner, node)
    }
}

/// `Store::create_index` and `Store::create_index_watched`. A build `watch` stops returns
/// `Interrupted`; its transaction, dropped, rolls back.
pub(super) fn create(
    store: &Store,
    options: IndexOptions,
    watch: &mut dyn FnMut(IndexBuildProgress) -> ControlFlow<()>,
) -> Result<()> {
    let inner = store.inner();
    inner.check_writable()?;
    let params = check_options(inner, &options)?;
    let hnsw = Hnsw::new(params)?;
    let mut tx = store.begin()?;
    let (members, slots, high_water) = tx.index_op(|ctx| {
        if ctx.w.meta.graph.get() != 0 {
            return Err(Error::AlreadyExists);
        }
        let (members, slots) = live_slots(ctx)?;
        Ok((members, slots, ctx.w.meta.catalog_pages.get()))
    })?;
    // Without background I/O a store runs reproducibly (crash simulation): one thread builds
    // the same graph every time.
    let threads = if inner.options.background_io {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    room_for_the_graph(inner, &hnsw, &members, slots, high_water)?;
    let vectors = ArenaVectors { inner, count: slots };
    let mut linking = |done, total| report(watch, IndexBuildPhase::Linking, done, total);
    let built = hnsw.build_watched(&vectors, &members, threads, &mut linking)?.ok_or_else(stopped)?;
    let calibration = (CALIBRATION_QUERIES, CALIBRATION_K, EF_RECALL_TARGET);
    let mut calibrating = |done, total| report(watch, IndexBuildPhase::Calibrating, done, total);
    let view = built.view(&vectors);
    let calibrated = hnsw
        .calibrate_watched(&view, &members, calibration, threads, &mut calibrating)?
        .ok_or_else(stopped)?;
    let params = Params {
        ef_search: default_ef(calibrated),
        ..params
    };
    let runs = tx.index_op(|ctx| start(ctx, &params, &built))?;
    let page_size = inner.arena.page_size_bytes() as usize;
    let (node_pages, upper_pages) = tx.index_op(|ctx| {
        let writer = PageWriter::open(ctx)?.expect("the index was just made");
        Ok((writer.fields.node_pages.get(), writer.fields.upper_pages.get()))
    })?;
    let per_record = (IMAGE_BYTES_PER_RECORD / page_size).max(1) as u32;
    let total_pages = (node_pages + upper_pages) as usize;
    let kinds = [(PageKind::GraphNodes, node_pages, 0), (PageKind::GraphUpper, upper_pages, node_pages)];
    for (kind, pages, before) in kinds {
        for first in (0..pages).step_by(per_record as usize) {
            if !report(watch, IndexBuildPhase::Writing, (before + first) as usize, total_pages) {
                return Err(stopped());
            }
            let last = (first + per_record).min(pages);
            tx.index_op(|ctx| write_pages(ctx, kind, first..last, &built, &runs))?;
        }
    }
    if !report(watch, IndexBuildPhase::Writing, total_pages, total_pages) {
        return Err(stopped());
    }
    tx.commit()?;
    Ok(())
}

/// `Err(DiskFull)` before the build if the file system the store is on (where it says how much
/// is free) has less room than the graph's pages will take at least: the arena files they
/// need beyond those there now (`high_water`: the catalog's pages in use), and their images in
/// the log (less a segment the log may have ready). An estimate from below (upper
/// lists counted as if packed), so that it never refuses a build that would fit; without it a
/// build that does not fit failed only when it wrote its pages, after the whole build in
/// memory (minutes on a large store).
fn room_for_the_graph(inner: &Inner, hnsw: &Hnsw, members: &[NodeId], slots: NodeId, high_water: u64) -> Result<()> {
    let Ok(Some(free_bytes)) = inner.options.storage.available_bytes(&inner.dir) else {
        return Ok(());
    };
    let page_size = u64::from(inner.arena.page_size_bytes());
    let g = GraphGeometry::new(inner.arena.page_size_bytes(), hnsw.params().m).map_err(Error::InvalidArgument)?;
    let upper_slots: u64 = members.iter().map(|&n| u64::from(hnsw.level_for(n))).sum();
    let node_pages = u64::from(slots).div_ceil(g.nodes_per_page as u64);
    let graph_pages = 1 + node_pages + upper_slots.div_ceil(g.slots_per_page as u64);
    // Arena files and log segments are of one size, and a file is allocated whole.
    let file_bytes = inner.arena.pages_per_file() * page_size;
    let arena_growth = (high_water + graph_pages).saturating_sub(inner.arena.page_count(Space::Catalog));
    let arena_bytes = arena_growth.div_ceil(inner.arena.pages_per_file()) * file_bytes;
    let log_bytes = (graph_pages * page_size).saturating_sub(file_bytes);
    let needed_bytes = arena_bytes + log_bytes;
    if free_bytes >= needed_bytes {
        return Ok(());
    }
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    Err(Error::DiskFull {
        context: format!(
            "checking the room for the index: its {graph_pages} pages need at least {:.1} MiB more on disk (in the \
             arena and in the log); {:.1} MiB are free",
            mib(needed_bytes),
            mib(free_bytes)
        ),
    })
}

/// The error of a build its watcher stopped (its transaction is dropped: rolled back).
fn stopped() -> Error {
    Error::Interrupted("the index build was stopped by its watcher; nothing of it was kept".into())
}

/// Tells `watch` that `done` of `total` units of `phase` are done; `true` if it lets the build
/// go on (the `ann` layer's watchers answer so).
fn report(
    watch: &mut dyn FnMut(IndexBuildProgress) -> ControlFlow<()>,
    phase: IndexBuildPhase,
    done: usize,
    total: usize,
) -> bool {
    let progress = IndexBuildProgress {
        phase,
        done: done as u64,
        total: total as u64,
    };
    watch(progress).is_continue()
}

/// The default candidate list from a calibration's `(ef, recall)`: that list where it reached
/// the target, else [`EF_SEARCH_SCAN`].
fn default_ef((ef, recall): (usize, f64)) -> usize {
    if recall >= EF_RECALL_TARGET { ef } else { EF_SEARCH_SCAN }
}

/// The parameters of an index made with `options`, or why they do not suit this store.
fn check_options(inner: &Inner, options: &IndexOptions) -> Result<Params> {
    let page_size = inner.arena.page_size_bytes();
    GraphGeometry::new(page_size, options.m).map_err(Error::InvalidArgument)?;
    if options.ef_construction == 0 || options.ef_construction > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "ef_construction must be 1..={}, not {}",
            u32::MAX,
            options.ef_construction
        )));
    }
    Ok(Params {
        metric: options.metric,
        m: options.m,
        ef_construction: options.ef_construction,
        ef_search: EF_SEARCH_DEFAULT,
        ..Params::default()
    })
}

/// The nodes of the vectors in the store (every owned slot), and the slots the index must
/// address (every slot of every vector page).
fn live_slots(ctx: &mut OpCtx<'_>) -> Result<(Vec<NodeId>, NodeId)> {
    let inner = ctx.inner;
    let spp = inner.layout.slots_per_page;
    let pages = ctx.w.meta.vector_pages.get();
    let slots = node_of(pages, 0, spp)
        .ok_or_else(|| Error::InvalidArgument(format!("the index addresses {} vector slots; this store has more", NodeId::MAX)))?;
    let mut members = Vec::new();
    let mut owners = vec![0u8; spp as usize * VECTOR_OWNER_BYTES];
    let mut ahead = ReadAhead::new(&inner.arena, Space::Vector, 0, pages);
    for page_no in 0..pages {
        ahead.at(page_no);
        let page = PageId::new(Space::Vector, page_no);
        inner.arena.check_in_use(page)?;
        ctx.list.read(&inner.arena, page, VECTOR_OWNERS_OFFSET, &mut owners);
        for (slot, owner) in owners.chunks_exact(VECTOR_OWNER_BYTES).enumerate() {
            if owner.iter().any(|&b| b != 0) {
                members.push(node_of(page_no, slot as u32, spp).expect("below the slot count"));
            }
        }
    }
    Ok((members, slots))
}

/// Makes the graph meta page and every extent and upper run the built graph needs; returns
/// each node's first upper slot.
fn start(ctx: &mut OpCtx<'_>, params: &Params, built: &Built) -> Result<HashMap<NodeId, u32>> {
    let inner = ctx.inner;
    let page_size = inner.arena.page_size_bytes();
    let (page, reused) = ctx.take_catalog_page(PageInit::GraphMeta {
        a_unused: 0,
        b_unused: 0,
    })?;
    if reused {
        ctx.rewrite_header(page, PageKind::GraphMeta, 0, 0, 0);
    }
    let fields = GraphFields {
        metric: metric_code(params.metric),
        m: (params.m as u16).into(),
        ef_construction: (params.ef_construction as u32).into(),
        ef_search: (params.ef_search as u32).into(),
        extent_shift: graph::EXTENT_SHIFT,
        seed: params.seed.into(),
        ..GraphFields::default()
    };
    let mut body = vec![0u8; page_size as usize - PAGE_HEADER_BYTES];
    body[GRAPH_FIELDS_OFFSET - PAGE_HEADER_BYTES..][..fields.as_bytes().len()].copy_from_slice(fields.as_bytes());
    ctx.list.push_new(page, PAGE_HEADER_BYTES, &body);
    ctx.set_meta(|m| m.graph = (page.page_no() as u32).into());
    let mut writer = PageWriter::open(ctx)?.expect("the index was just made");
    let mut runs = HashMap::new();
    if built.slot_count() > 0 {
        writer.ensure_nodes(built.slot_count() - 1)?;
    }
    let mut live = 0u64;
    for node in (0..built.slot_count()).filter(|&n| built.is_node(n)) {
        live += 1;
        let level = built.level(node);
        if level > 0 {
            runs.insert(node, writer.take_run(level)?);
        }
    }
    let entry = built.entry().map_or(0, |e| u64::from(e) + 1);
    writer.set_fields(|f| {
        f.live = live.into();
        f.entry = entry.into();
    });
    Ok(runs)
}

/// Writes node or upper pages `indexes` of the built graph whole, into fresh pages.
fn write_pages(
    ctx: &mut OpCtx<'_>,
    kind: PageKind,
    indexes: std::ops::Range<u32>,
    built: &Built,
    runs: &HashMap<NodeId, u32>,
) -> Result<()> {
    let writer = PageWriter::open(ctx)?.expect("the index was just made");
    let g = writer.shape.geometry;
    let page_size = writer.shape.page_size;
    for index in indexes {
        let page = writer.page(kind, index)?;
        // The page as it is (fresh, or holding the free-run links of page tails), then the lists.
        let mut image = writer.ctx.inner.arena.copy_page(page);
        match kind {
            PageKind::GraphNodes => {
                let first = index as usize * g.nodes_per_page;
                for i in 0..g.nodes_per_page {
                    let Ok(node) = NodeId::try_from(first + i) else { break };
                    if !built.is_node(node) {
                        continue;
                    }
                    let at = PAGE_HEADER_BYTES + i * g.record_bytes;
                    let list = built.neighbours(node, 0);
                    let header = NodeHeader {
                        state: NODE_LIVE,
                        level: built.level(node),
                        count: (list.len() as u16).into(),
                        upper: runs.get(&node).copied().unwrap_or(0).into(),
                    };
                    image[at..at + NODE_HEADER_BYTES].copy_from_slice(header.as_bytes());
                    image[at + NODE_HEADER_BYTES..][..4 * list.len()].copy_from_slice(list.as_bytes());
                }
            }
            _ => {
                let first = index as usize * g.slots_per_page;
                let last = first + g.slots_per_page;
                for (&node, &run) in runs.iter().filter(|(_, r)| (first..last).contains(&(**r as usize))) {
                    for layer in 1..=built.level(node) {
                        let slot = run as usize + usize::from(layer) - 1;
                        let at = PAGE_HEADER_BYTES + (slot - first) * g.slot_bytes;
                        let list = built.neighbours(node, layer);
                        image[at..at + UPPER_COUNT_BYTES].copy_from_slice(&(list.len() as u32).to_le_bytes());
                        image[at + UPPER_COUNT_BYTES..][..4 * list.len()].copy_from_slice(list.as_bytes());
                    }
                }
            }
        }
        writer.ctx.list.push_new(page, PAGE_HEADER_BYTES, &image[PAGE_HEADER_BYTES..page_size]);
    }
    Ok(())
}

/// `Store::drop_index`.
pub(super) fn drop(store: &Store) -> Result<()> {
    let inner = store.inner();
    inner.check_writable()?;
    let mut tx = store.begin()?;
    let found = tx.index_op(|ctx| {
        let Some(writer) = PageWriter::open(ctx)? else {
            return Err(Error::NotFound("the store has no approximate index".into()));
        };
        let snap = Snapshot {
            fields: writer.fields,
            node_extents: writer.node_extents().clone(),
            upper_extents: writer.upper_extents().clone(),
        };
        let shape = writer.shape;
        let pages = index_pages(ctx, &snap, shape.meta_page)?;
        Ok((shape, snap, pages))
    })?;
    let (shape, snap, pages) = found;
    // Readers walking these pages must tell their freeing from damage.
    inner.graph.bump_generation();
    tx.index_op(|ctx| release_tombstones(ctx, shape.geometry, &snap, &pages))?;
    for chunk in pages.chunks(PAGES_FREED_PER_RECORD) {
        inner.graph.bump_generation();
        tx.index_op(|ctx| {
            for &page in chunk {
                ctx.free_catalog_page(page)?;
            }
            Ok(())
        })?;
    }
    tx.index_op(|ctx| {
        ctx.set_meta(|m| m.graph = 0.into());
        Ok(())
    })?;
    tx.commit()?;
    Ok(())
}

/// Every page of the index: its node pages in index order, then its upper pages, then its
/// graph meta page; `Err(Corrupted)` if one is not a catalog page in use.
fn index_pages(ctx: &OpCtx<'_>, snap: &Snapshot, meta_page: PageId) -> Result<Vec<PageId>> {
    let in_use = ctx.w.meta.catalog_pages.get().min(ctx.inner.arena.page_count(Space::Catalog));
    let mut pages: Vec<PageId> = Vec::new();
    for (extents, count) in [
        (&snap.node_extents, snap.fields.node_pages.get()),
        (&snap.upper_extents, snap.fields.upper_pages.get()),
    ] {
        pages.extend((0..count).filter_map(|index| page_of(extents, index)));
    }
    pages.push(meta_page);
    match pages.iter().find(|p| p.page_no() == 0 || p.page_no() >= in_use) {
        Some(page) => Err(ctx
            .inner
            .arena
            .corrupted(meta_page, format!("the index names {page}, no catalog page in use"))),
        None => Ok(pages),
    }
}

/// Gives the slots of the index's tombstones back to the vector allocator (quarantined while
/// readers may still reach them). `pages` are the index's pages, node pages first.
fn release_tombstones(ctx: &mut OpCtx<'_>, geometry: GraphGeometry, snap: &Snapshot, pages: &[PageId]) -> Result<()> {
    let inner = ctx.inner;
    let epoch = inner.epochs.now();
    let spp = inner.layout.slots_per_page;
    for (index, &page) in pages.iter().take(snap.fields.node_pages.get() as usize).enumerate() {
        let index = index as u32;
        inner.arena.check_in_use(page)?;
        let image = inner.arena.copy_page(page);
        for i in 0..geometry.nodes_per_page {
            let at = PAGE_HEADER_BYTES + i * geometry.record_bytes;
            if image[at] != NODE_DELETED {
                continue;
            }
            let node = (index as usize * geometry.nodes_per_page + i) as NodeId;
            inner.graph.quarantine(node, epoch);
            let vector_page = PageId::new(Space::Vector, u64::from(node / spp));
            if vector_page.page_no() < inner.arena.page_count(Space::Vector) && ctx.link(vector_page) == 0 {
                ctx.list_push(super::super::alloc::List::Vector, vector_page)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_whose_calibration_missed_the_target_scans_by_default() {
        assert_eq!(default_ef((48, 0.973)), 48, "the list that reached the target");
        assert_eq!(default_ef((48, EF_RECALL_TARGET)), 48);
        assert_eq!(
            default_ef((2048, 0.67)),
            EF_SEARCH_SCAN,
            "no list reached it: a default search scans rather than answer with a recall of 0.67"
        );
        assert!(u32::try_from(EF_SEARCH_SCAN).is_ok(), "the value fits the meta page's u32");
    }
}
