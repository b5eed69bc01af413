//! The approximate-search index: an HNSW graph (`crate::ann`) kept in WAL-logged catalog-space
//! pages (format/graph.rs, FORMAT.md 14.13).
//!
//! # How it is kept
//!
//! A node is a vector slot: node id = vector page × slots per page + slot. Every insert or
//! upsert adds the new vector's node in the same operation (the same update record) as the
//! vector; an upsert or delete makes the old vector's node a tombstone there too. Every change
//! is an edit of that record with its before-image, so redo replays it and undo (a
//! transaction's abort, or recovery's) restores the pages exactly: with one writer at a time
//! nothing else has changed them since. Nothing is loaded at open: a search reads the graph
//! meta page and the pages it walks.
//!
//! A tombstone keeps its vector slot (the allocator asks [`held_vector_slots`]) so searches can
//! still traverse it, until a vacuum (`vacuum.rs`), run after a commit leaves more than one
//! tombstone per [`VACUUM_LIVE_PER_TOMBSTONE`] live nodes, repairs the lists that name
//! tombstones and frees them.
//!
//! # What readers see
//!
//! Readers walk pages the running transaction may be changing. They never return what it
//! wrote (nodes whose vector slot the mask hides), and they score what it deleted or replaced
//! from the mask, as the exact scan does (`search.rs`). Whether an index exists, and its
//! parameters, they learn from [`GraphShared`], which changes only when a commit or an undo
//! makes it so.

mod build;
pub(crate) mod check;
mod pages;
mod search;
mod vacuum;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::Inner;
use super::alloc::OpCtx;
use crate::ann::{Hnsw, NodeId, Params, Scratch};
use crate::format::graph::{GraphFields, METRIC_COSINE, METRIC_DOT, METRIC_L2};
use crate::format::index::LeafValue;
use crate::format::page::{PageId, Space};
use crate::search::Metric;
use crate::{Error, Result};
pub(crate) use check::check_index;
use pages::{PageWriter, Shape};

/// A vacuum runs after a commit that leaves more than one tombstone per this many live nodes
/// (and at least [`VACUUM_TOMBSTONES_MIN`]).
pub const VACUUM_LIVE_PER_TOMBSTONE: u64 = 8;
/// The fewest tombstones that make a vacuum worth its full pass over the graph.
pub const VACUUM_TOMBSTONES_MIN: u64 = 32;

/// How [`Store::create_index`](crate::Store::create_index) builds the approximate-search index.
/// New fields may be added: construct it with `..Default::default()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexOptions {
    /// The metric searches that use the index are by (a search by another metric scans).
    pub metric: Metric,
    /// Neighbours per node and layer (`2M` at layer 0): higher costs memory and build time and
    /// gains recall. Default 16.
    pub m: usize,
    /// The candidate list of each insert's search: higher builds slower and better. Default 128.
    pub ef_construction: usize,
}

impl Default for IndexOptions {
    fn default() -> IndexOptions {
        IndexOptions {
            metric: Metric::Cosine,
            m: 16,
            ef_construction: 128,
        }
    }
}

/// How [`Store::search_with`](crate::Store::search_with) searches. New fields may be added:
/// construct it with `..Default::default()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchOptions<'a> {
    /// The metric (default cosine).
    pub metric: Metric,
    /// Only vectors whose metadata holds this pair.
    pub filter: Option<(&'a str, &'a str)>,
    /// The candidate list of an index search (at least `k`; default: the index's, chosen when it
    /// was built to reach recall@10 = 0.95 on the store's own vectors). Higher gains recall and
    /// costs time.
    pub ef: Option<usize>,
    /// Scan every vector (exact) even when an index could answer.
    pub exact: bool,
}

impl Default for SearchOptions<'_> {
    fn default() -> Self {
        SearchOptions {
            metric: Metric::Cosine,
            filter: None,
            ef: None,
            exact: false,
        }
    }
}

/// The phases of an index build, in order, as
/// [`Store::create_index_watched`](crate::Store::create_index_watched) reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexBuildPhase {
    /// Inserting every vector into the graph, in memory, on every core (most of a build).
    /// Units: vectors.
    Linking,
    /// Measuring the default candidate list on the store's own vectors: an exact scan for each
    /// sampled query (up to 100), then their searches with each candidate list tried (up to
    /// 15, until one reaches the target). Units: queries scanned, then lists tried.
    Calibrating,
    /// Writing the graph's pages into the transaction (the log, then the pages). Units: pages.
    Writing,
}

/// How far an index build has come: `done` of `total` units of its `phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexBuildProgress {
    /// The phase running.
    pub phase: IndexBuildPhase,
    /// Units of it done.
    pub done: u64,
    /// Units in all (`done` reaches it when the phase ends).
    pub total: u64,
}

/// What [`Store::index_info`](crate::Store::index_info) reports of the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexInfo {
    /// The metric it answers.
    pub metric: Metric,
    /// Its M.
    pub m: usize,
    /// Its ef_construction.
    pub ef_construction: usize,
    /// The candidate list of a search that names none: measured at the build, the smallest
    /// that reached recall@10 = 0.96 on 100 of the store's vectors searched leave-one-out (64
    /// for an index built over fewer than 12 vectors); `u32::MAX` where none of the lists the
    /// calibration tried reached it: a search that names no `ef` then scans.
    pub ef_search: usize,
    /// Vectors in it.
    pub live: u64,
    /// Tombstones: deleted vectors lists may still name, until the next vacuum.
    pub deleted: u64,
    /// Pages of node records.
    pub node_pages: u64,
    /// Pages of upper-layer lists.
    pub upper_pages: u64,
    /// Bytes of all its pages (the graph meta page too).
    pub size_bytes: u64,
}

/// What readers know of the committed index: its shape and parameters, or that there is none.
#[derive(Default)]
pub(crate) struct GraphShared {
    published: RwLock<Option<Arc<Published>>>,
    /// Changes whenever pages a reader walks may stop being the index's (an undo, a drop): a
    /// reader that finds a page not as it expects tells damage from a change by it.
    generation: AtomicU64,
    /// Vector slots of freed tombstones, by node, with the epoch of their release: reusable
    /// once the readers that could still reach them have left.
    quarantine: Mutex<HashMap<NodeId, u64>>,
    /// The writer's search buffers (only the writer takes this lock).
    scratch: Mutex<Scratch>,
    /// A vacuum is running (the commit of its own transaction starts none).
    vacuuming: AtomicBool,
}

/// A committed index, as readers use it.
pub(crate) struct Published {
    pub shape: Shape,
    pub hnsw: Hnsw,
}

impl GraphShared {
    /// The committed index, if any.
    pub fn published(&self) -> Option<Arc<Published>> {
        self.published.read().clone()
    }

    /// The current generation (see the field).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Notes that pages readers may be walking can stop being the index's.
    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Keeps node `node`'s vector slot from reuse until epoch `epoch` is reclaimable.
    pub fn quarantine(&self, node: NodeId, epoch: u64) {
        self.quarantine.lock().insert(node, epoch);
    }
}

/// The parameters of the index whose fields are `fields`.
pub(crate) fn params_of(fields: &GraphFields) -> Result<Params> {
    let metric = match fields.metric {
        METRIC_COSINE => Metric::Cosine,
        METRIC_L2 => Metric::L2,
        METRIC_DOT => Metric::Dot,
        other => return Err(Error::corrupted_file("arena", format!("index metric {other}"))),
    };
    Ok(Params {
        metric,
        m: usize::from(fields.m.get()),
        ef_construction: fields.ef_construction.get() as usize,
        ef_search: fields.ef_search.get() as usize,
        seed: fields.seed.get(),
        keep_pruned: false,
    })
}

/// The metric's code in the graph fields.
pub(crate) fn metric_code(metric: Metric) -> u8 {
    match metric {
        Metric::Cosine => METRIC_COSINE,
        Metric::L2 => METRIC_L2,
        Metric::Dot => METRIC_DOT,
    }
}

/// Makes readers see the index whose graph meta page is catalog page `graph` (0: none), as the
/// pages hold it now (after a commit, an undo or recovery).
pub(crate) fn publish(inner: &Inner, graph: u32) -> Result<()> {
    let shared = &inner.graph;
    let current = shared.published();
    let wanted = (graph != 0).then(|| PageId::new(Space::Catalog, u64::from(graph)));
    if current.as_ref().map(|p| p.shape.meta_page) == wanted {
        return Ok(());
    }
    shared.bump_generation();
    let published = match wanted {
        None => None,
        Some(page) => {
            let snap = pages::read_snapshot(inner, page)?;
            let shape = Shape::new(page, &snap.fields, inner.arena.page_size_bytes())?;
            let hnsw = Hnsw::new(params_of(&snap.fields)?)
                .map_err(|e| inner.arena.corrupted(page, format!("index parameters: {e}")))?;
            Some(Arc::new(Published { shape, hnsw }))
        }
    };
    *shared.published.write() = published;
    Ok(())
}

/// At open, after recovery: publishes the index the meta page names (one page read).
pub(crate) fn load(inner: &Inner) -> Result<()> {
    let graph = inner.writer.lock().meta.graph.get();
    publish(inner, graph)
}

/// After a commit: publishes what it changed of the index.
pub(crate) fn after_commit(inner: &Inner, graph: u32) {
    // The pages were read when the index was made; a failure here is damage the next search
    // reports (and the published view stays the last good one).
    let _ = publish(inner, graph);
}

/// After an undo: pages readers walk may have gone back to what they were.
pub(crate) fn after_undo(inner: &Inner, graph: u32) {
    inner.graph.bump_generation();
    let _ = publish(inner, graph);
}

/// The node of the vector an index value names.
fn node_of_value(inner: &Inner, value: &LeafValue) -> Result<NodeId> {
    pages::node_of(
        u64::from(value.vector_page.get()),
        value.vector_slot.get(),
        inner.layout.slots_per_page,
    )
    .ok_or_else(|| Error::InvalidArgument("the vector's slot is beyond what the index addresses".into()))
}

/// In an insert or upsert's operation: the vector at `slot` (written by this operation)
/// joins the index; the one `old` names (replaced) becomes a tombstone. `earlier` are the
/// vectors earlier rows of the same record wrote (pending in it too).
pub(crate) fn on_put(
    ctx: &mut OpCtx<'_>,
    slot: (PageId, u32),
    vector: &[f32],
    old: Option<&LeafValue>,
    earlier: &[((PageId, u32), &[f32])],
) -> Result<()> {
    let inner = ctx.inner;
    let spp = inner.layout.slots_per_page;
    let node_at = |(page, slot): (PageId, u32)| {
        pages::node_of(page.page_no(), slot, spp).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the index addresses {} vector slots; this store has more",
                NodeId::MAX
            ))
        })
    };
    let node = node_at(slot)?;
    let old_node = old.map(|v| node_of_value(inner, v)).transpose()?;
    let Some(mut writer) = PageWriter::open(ctx)? else { return Ok(()) };
    for &(slot, vector) in earlier {
        writer = writer.with_new_vector(node_at(slot)?, vector);
    }
    let mut writer = writer.with_new_vector(node, vector);
    let hnsw = Hnsw::new(params_of(&writer.fields)?)?;
    if let Some(old) = old_node {
        hnsw.delete(&mut writer, old)?;
    }
    let mut scratch = inner.graph.scratch.lock();
    hnsw.insert(&mut writer, node, &mut scratch)
}

/// In a delete's operation: the vector `old` names becomes a tombstone.
pub(crate) fn on_delete(ctx: &mut OpCtx<'_>, old: &LeafValue) -> Result<()> {
    let node = node_of_value(ctx.inner, old)?;
    let Some(mut writer) = PageWriter::open(ctx)? else { return Ok(()) };
    let hnsw = Hnsw::new(params_of(&writer.fields)?)?;
    hnsw.delete(&mut writer, node)
}

/// Which of the `slots` vector slots of `page` the index keeps from reuse: a node or a
/// tombstone is there, or a tombstone a vacuum freed that readers may still reach. The
/// allocator treats them as quarantined slots: free, not reusable yet. `None`: none is (no
/// index and nothing quarantined: every insert of a store without one asks, and allocates
/// nothing for the answer).
pub(crate) fn held_vector_slots(ctx: &mut OpCtx<'_>, page: PageId, slots: u32) -> Result<Option<Vec<bool>>> {
    let inner = ctx.inner;
    let writer = PageWriter::open(ctx)?;
    let mut quarantine = inner.graph.quarantine.lock();
    if writer.is_none() && quarantine.is_empty() {
        return Ok(None);
    }
    let spp = inner.layout.slots_per_page;
    let nodes: Vec<Option<NodeId>> = (0..slots).map(|s| pages::node_of(page.page_no(), s, spp)).collect();
    let mut held = vec![false; slots as usize];
    {
        if !quarantine.is_empty() {
            for (hold, node) in held.iter_mut().zip(&nodes) {
                let Some(node) = node else { continue };
                match quarantine.get(node) {
                    Some(&epoch) if inner.epochs.is_reclaimable(epoch) => {
                        quarantine.remove(node);
                    }
                    Some(_) => *hold = true,
                    None => {}
                }
            }
        }
    }
    drop(quarantine);
    if let Some(writer) = writer {
        for (hold, node) in held.iter_mut().zip(&nodes) {
            if let Some(node) = node {
                *hold = *hold || writer.holds(*node)?;
            }
        }
    }
    Ok(Some(held))
}

/// After a commit (the writer lock released): a vacuum if tombstones have piled up.
pub(crate) fn maybe_vacuum(store: &crate::Store) {
    let inner = store.inner();
    let Some(published) = inner.graph.published() else { return };
    if inner.graph.vacuuming.load(Ordering::Acquire) {
        return;
    }
    let Ok(snap) = pages::read_snapshot(inner, published.shape.meta_page) else { return };
    let (live, deleted) = (snap.fields.live.get(), snap.fields.deleted.get());
    if deleted < VACUUM_TOMBSTONES_MIN || deleted * VACUUM_LIVE_PER_TOMBSTONE < live {
        return;
    }
    inner.graph.vacuuming.store(true, Ordering::Release);
    // The commit that triggered it is durable whatever the vacuum does; a vacuum that fails is
    // undone and tried again after a later commit.
    let _ = vacuum::run(store);
    inner.graph.vacuuming.store(false, Ordering::Release);
}

impl crate::Store {
    /// Builds an approximate-search (HNSW) index over every vector in the store, which every
    /// later insert, upsert and delete keeps current in its own transaction. [`Store::search`]
    /// and [`Store::search_filtered`] use it when their metric is the index's.
    ///
    /// The build uses every core and is one transaction: a crash during it leaves the store
    /// without an index. `Err(AlreadyExists)` if the store has one; `Err(InvalidArgument)` for
    /// an M the page size cannot hold (4 KiB pages hold M up to 66) or an ef_construction of 0;
    /// `Err(DiskFull)` before anything is built where the file system has less room than the
    /// graph's pages will take at least (in the arena and in the log).
    ///
    /// [`Store::search`]: crate::Store::search
    /// [`Store::search_filtered`]: crate::Store::search_filtered
    pub fn create_index(&self, options: IndexOptions) -> Result<()> {
        build::create(self, options, &mut |_| ControlFlow::Continue(()))
    }

    /// [`Store::create_index`], watched: `watch` is called on this thread, about every 100 ms
    /// while a phase runs and as each phase ends, with how far the build has come (for a
    /// progress bar, or to run a signal handler). If it returns `ControlFlow::Break`, the build
    /// stops within about that long (a phase's worker finishes the insert or scan it is in),
    /// its transaction is rolled back (nothing of it stays in the store, which stays without an
    /// index) and the call returns `Err(Interrupted)`. The watcher may read the store; it must
    /// not write to it or begin a transaction: the build holds the writer lock on this thread,
    /// and the call would wait for itself.
    ///
    /// [`Store::create_index`]: crate::Store::create_index
    pub fn create_index_watched(
        &self,
        options: IndexOptions,
        watch: &mut dyn FnMut(IndexBuildProgress) -> ControlFlow<()>,
    ) -> Result<()> {
        build::create(self, options, watch)
    }

    /// Drops the index (one transaction), giving its pages back. `Err(NotFound)` if there is none.
    pub fn drop_index(&self) -> Result<()> {
        build::drop(self)
    }

    /// The `k` vectors closest to `query`, best first, as `options` say: through the index when
    /// the store has one for `options.metric` and `exact` is false, else by an exact scan.
    /// Filtered searches return `min(k, matching)` results either way.
    pub fn search_with(&self, query: &[f32], k: usize, options: &SearchOptions<'_>) -> Result<Vec<(String, f32)>> {
        self.inner().check_process()?;
        search::search(self.inner(), query, k, options)
    }

    /// Checks every invariant of the index (`verify` does it on a store opened read-only):
    /// `None` if the store has none. For the project's tests.
    #[cfg(feature = "testing")]
    pub fn check_index(&self) -> Result<Option<check::IndexCheck>> {
        check_index(self.inner())
    }

    /// Runs a vacuum of the index now (one runs by itself after commits that leave many
    /// tombstones); returns how many tombstones it freed. For the project's tests.
    #[cfg(feature = "testing")]
    pub fn vacuum_index(&self) -> Result<usize> {
        vacuum::run(self)
    }

    /// The index's parameters and size, `None` if the store has none.
    pub fn index_info(&self) -> Result<Option<IndexInfo>> {
        let inner = self.inner();
        inner.check_process()?;
        let Some(published) = inner.graph.published() else { return Ok(None) };
        let snap = pages::read_snapshot(inner, published.shape.meta_page)?;
        let f = &snap.fields;
        let params = published.hnsw.params();
        let pages = 1 + u64::from(f.node_pages.get()) + u64::from(f.upper_pages.get());
        Ok(Some(IndexInfo {
            metric: params.metric,
            m: params.m,
            ef_construction: params.ef_construction,
            ef_search: params.ef_search,
            live: f.live.get(),
            deleted: f.deleted.get(),
            node_pages: u64::from(f.node_pages.get()),
            upper_pages: u64::from(f.upper_pages.get()),
            size_bytes: pages * u64::from(inner.arena.page_size_bytes()),
        }))
    }
}
