//! Vacuum: the lists that name tombstones are rebuilt around them (`ann::Hnsw::repair`), then
//! the tombstones are freed and their vector slots given back to the allocator. One
//! transaction, logged in records of a bounded number of repairs: a crash undoes it whole, and
//! the next commit that finds the tombstones piled up runs it again.

use super::pages::PageWriter;
use super::params_of;
use super::super::alloc::OpCtx;
use crate::ann::{GraphView, Hnsw, NodeId, NodeState};
use crate::{Result, Store};

/// Live nodes whose lists one record checks, at most.
const NODES_PER_RECORD: usize = 2048;
/// Lists one record rebuilds, at most (each with its links back).
const REPAIRS_PER_RECORD: usize = 64;
/// Tombstones one record frees, at most.
const FREES_PER_RECORD: usize = 512;

/// What a vacuum found: the tombstones, and the live nodes with their levels.
struct Plan {
    hnsw: Hnsw,
    dead: Vec<bool>,
    dead_nodes: Vec<NodeId>,
    live: Vec<(NodeId, u8)>,
}

/// Vacuums the store's index; returns how many tombstones it freed.
pub(super) fn run(store: &Store) -> Result<usize> {
    let inner = store.inner();
    let mut tx = store.begin()?;
    let plan = tx.index_op(find_tombstones)?;
    let Some(plan) = plan.filter(|p| !p.dead_nodes.is_empty()) else {
        tx.abort()?;
        return Ok(0);
    };
    // Readers pinned in this epoch or before may reach the tombstones until the repairs below
    // are applied; readers pinned after them cannot (they read the repaired lists).
    let reachable_until = inner.epochs.now();
    tx.index_op(|ctx| move_entry_point_off_tombstone(ctx, &plan))?;
    let mut next = 0;
    while next < plan.live.len() {
        next = tx.index_op(|ctx| repair_from(ctx, &plan, next))?;
    }
    // Two advances (when no reader holds them back) let the slots be reused at once after the
    // commit if no reader was pinned in the epochs that could reach them.
    inner.epochs.try_advance();
    inner.epochs.try_advance();
    for chunk in plan.dead_nodes.chunks(FREES_PER_RECORD) {
        tx.index_op(|ctx| free_tombstones(ctx, chunk, reachable_until))?;
    }
    // Nodes whose last in-links were the tombstones' are linked again.
    tx.index_op(|ctx| {
        let mut writer = PageWriter::open(ctx)?.expect("the index exists");
        let mut scratch = inner.graph.scratch.lock();
        plan.hnsw.reconnect(&mut writer, &mut scratch)
    })?;
    tx.commit()?;
    Ok(plan.dead_nodes.len())
}

/// The plan of a vacuum: reads every node's header and sorts the tombstones from the live
/// nodes; `None` if the store has no index.
fn find_tombstones(ctx: &mut OpCtx<'_>) -> Result<Option<Plan>> {
    let Some(writer) = PageWriter::open(ctx)? else { return Ok(None) };
    let hnsw = Hnsw::new(params_of(&writer.fields)?)?;
    let slots = writer.slot_count();
    let mut plan = Plan {
        hnsw,
        dead: vec![false; slots as usize],
        dead_nodes: Vec::new(),
        live: Vec::new(),
    };
    for node in 0..slots {
        let (_, _, header, state) = writer.header(node)?;
        match state {
            NodeState::Free => {}
            NodeState::Live => plan.live.push((node, header.level)),
            NodeState::Deleted => {
                plan.dead[node as usize] = true;
                plan.dead_nodes.push(node);
            }
        }
    }
    Ok(Some(plan))
}

/// If the index's entry point is a tombstone, makes the live node of the highest level its
/// entry point (none if no node is live).
fn move_entry_point_off_tombstone(ctx: &mut OpCtx<'_>, plan: &Plan) -> Result<()> {
    let mut writer = PageWriter::open(ctx)?.expect("the index exists");
    let entry = writer.entry_point()?;
    if entry.is_some_and(|e| plan.dead[e as usize]) {
        // The live node of the highest level (the lowest id among equals), or none.
        let best = plan.live.iter().fold(None::<(NodeId, u8)>, |best, &(node, level)| match best {
            Some((_, top)) if top >= level => best,
            _ => Some((node, level)),
        });
        writer.set_fields(|f| f.entry = best.map_or(0, |(n, _)| u64::from(n) + 1).into());
    }
    Ok(())
}

/// Frees the tombstones `nodes`, quarantined from epoch `reachable_until` (readers pinned in
/// it or before may reach them).
fn free_tombstones(ctx: &mut OpCtx<'_>, nodes: &[NodeId], reachable_until: u64) -> Result<()> {
    let writer = PageWriter::open(ctx)?.expect("the index exists");
    let mut writer = writer.releasing_from(reachable_until);
    for &node in nodes {
        crate::ann::DeleteStore::free_node(&mut writer, node)?;
    }
    Ok(())
}

/// Repairs the lists naming tombstones of the live nodes from `plan.live[first]` on, until a
/// record's worth; returns where the next record starts.
fn repair_from(ctx: &mut OpCtx<'_>, plan: &Plan, first: usize) -> Result<usize> {
    let inner = ctx.inner;
    let mut writer = PageWriter::open(ctx)?.expect("the index exists");
    let mut scratch = inner.graph.scratch.lock();
    let mut list = Vec::new();
    let mut repairs = 0;
    let mut at = first;
    while at < plan.live.len() && at - first < NODES_PER_RECORD && repairs < REPAIRS_PER_RECORD {
        let (node, level) = plan.live[at];
        for layer in 0..=level {
            writer.neighbours(node, layer, &mut list)?;
            if list.iter().any(|&n| plan.dead[n as usize]) {
                plan.hnsw.repair(&mut writer, node, layer, &list, &plan.dead, &mut scratch)?;
                repairs += 1;
            }
        }
        at += 1;
    }
    Ok(at)
}
