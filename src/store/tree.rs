//! The id index: a B+tree over id bytes in catalog-space pages (format/index.rs), read by any
//! number of readers while the single writer changes it.
//!
//! # How readers and the writer share nodes
//!
//! A node changes in place only in ways a reader sees whole, under the page latch the writer
//! holds while it applies a record's edits to that page: a cell appended into the gap with its
//! directory entry, a directory entry removed, a leaf value replaced, a child pointer switched.
//! Every other change (a node too full for its new cell, a split) writes new nodes into free
//! pages, then switches the one pointer above them, then frees the old nodes: the record lists
//! its edits in that order and `apply_edits` applies pages in the order of their first edit.
//! A reader holds one page's latch at a time, and:
//!
//! - a node it reaches is either still linked (its key range unchanged: ranges change only by
//!   rewriting into new pages) or freed (kind `free`, not yet reused: freed pages are
//!   quarantined until every reader that could hold them has left), and then it starts again
//!   from the root;
//! - the root comes from an atomic the writer sets after each record is applied; a reader that
//!   read the old root finds it still valid or freed, as any other node.
//!
//! What a reader sees of a transaction that has not committed is masked by `store::mask`.

use std::ops::Range;
use std::sync::atomic::Ordering;

use zerocopy::IntoBytes;

use super::Inner;
use super::alloc::OpCtx;
use super::edits::EditList;
use crate::format::index::{
    self, HEIGHT_MAX, LeafValue, NODE_DIR_ENTRY_BYTES, NODE_DIR_OFFSET, NODE_PREFIX_MAX_BYTES, NODE_PREFIX_OFFSET,
    Node, NodeKind, directory_entry, layout_node, prefix_field,
};
use crate::format::page::{PAGE_A_OFFSET, PAGE_B_OFFSET, PAGE_C_OFFSET, PageId, PageKind, Space};
use crate::format::record::PageInit;
use crate::{Error, Result};

/// How often a reader starts again from the root before it calls the index damaged (a freed
/// node is reachable only for the moment between a record's application and the root's
/// update, so a live index never needs more than a few).
const RESTARTS_MAX: usize = 10_000;

/// A node page id read from the index, checked to name a catalog-space page in the arena.
fn node_page(inner: &Inner, raw: u64, from: &dyn std::fmt::Display) -> Result<PageId> {
    // `from` is formatted only for the error: a descent formats nothing.
    PageId::from_raw(raw)
        .filter(|p| p.space() == Space::Catalog && p.page_no() > 0 && p.page_no() < inner.arena.page_count(Space::Catalog))
        .ok_or_else(|| Error::corrupted_file("arena", format!("{from} links to {raw:#x}, no node page")))
}

/// What a reader found at a node.
enum Step<T> {
    Down(PageId),
    Done(T),
    Restart,
}

/// Descends from the root to the leaf for `key`, calling `at_leaf` on it under its latch; `None`
/// if the index is empty. `at_branch` sees each branch on the way.
fn descend<T>(
    inner: &Inner,
    key: &[u8],
    mut at_branch: impl FnMut(&Node<'_>, usize),
    mut at_leaf: impl FnMut(&Node<'_>) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    'restart: for _ in 0..RESTARTS_MAX {
        let applying = inner.applying.load(Ordering::Acquire);
        let root = inner.index_root.load(Ordering::Acquire);
        if root == 0 {
            return Ok(None);
        }
        let mut page = node_page(inner, root, &"the root")?;
        for _ in 0..=HEIGHT_MAX {
            let step = {
                let image = inner.arena.read_page_in_use(page)?;
                if image[crate::format::page::PAGE_KIND_OFFSET] == PageKind::Free as u8 {
                    Step::Restart
                } else {
                    match step_node(&image, key, &mut at_branch, &mut at_leaf) {
                        Ok(NodeStep::Down(child)) => Step::Down(node_page(inner, child, &page)?),
                        Ok(NodeStep::Done(found)) => Step::Done(found),
                        // A record applied since the descent began may have changed the path
                        // under it (an undo takes a node back to the empty page its page-init
                        // made before it unlinks it): look again. Otherwise it is damage.
                        Err(_) if changed_since(inner, applying) => Step::Restart,
                        Err(reason) => return Err(inner.arena.corrupted(page, reason)),
                    }
                }
            };
            match step {
                Step::Down(child) => page = child,
                Step::Done(found) => return Ok(Some(found)),
                Step::Restart => {
                    std::thread::yield_now();
                    continue 'restart;
                }
            }
        }
        return Err(inner.arena.corrupted(page, format!("the index is deeper than {HEIGHT_MAX} levels")));
    }
    Err(Error::corrupted_file("arena", "a freed index node stays reachable"))
}

enum NodeStep<T> {
    Down(u64),
    Done(T),
}

/// One node of a descent: the child to go down to, or what the leaf gives.
fn step_node<T>(
    image: &[u8],
    key: &[u8],
    at_branch: &mut impl FnMut(&Node<'_>, usize),
    at_leaf: &mut impl FnMut(&Node<'_>) -> std::result::Result<T, String>,
) -> std::result::Result<NodeStep<T>, String> {
    let node = Node::parse(image)?;
    match node.kind {
        NodeKind::Branch => {
            let (j, child) = node.child_for(key)?;
            at_branch(&node, j);
            Ok(NodeStep::Down(child))
        }
        NodeKind::Leaf => at_leaf(&node).map(NodeStep::Done),
    }
}

/// True if a record was applied (or is being applied) since a reader read `applying`.
fn changed_since(inner: &Inner, applying: u64) -> bool {
    applying % 2 == 1 || inner.applying.load(Ordering::Acquire) != applying
}

/// The value the index holds for `key` (committed or not: see `store::mask`).
pub fn lookup(inner: &Inner, key: &[u8]) -> Result<Option<LeafValue>> {
    let found = descend(inner, key, |_, _| {}, |leaf| {
        Ok(match leaf.search(key)? {
            Ok(i) => Some(leaf.value(i)?),
            Err(_) => None,
        })
    })?;
    Ok(found.flatten())
}

/// Asks the OS for the first page on `key`'s path that was not read since the open, walking
/// down the nodes that were (a hint, for a batch of reads from a cold cache: the leaves of a
/// window of ids are asked for together, and their lookups wait for the disk once rather than
/// once each; see `Store::get_many`). Stops at a node it cannot read or parse: the lookup
/// reports it.
pub fn ask_ahead_path(inner: &Inner, key: &[u8]) {
    let root = inner.index_root.load(Ordering::Acquire);
    let Ok(mut page) = node_page(inner, root, &"the root") else { return };
    for _ in 0..=HEIGHT_MAX {
        if !inner.arena.is_verified(page) {
            inner.arena.ask_ahead(page);
            return;
        }
        let child = {
            let Ok(image) = inner.arena.read_page_in_use(page) else { return };
            match Node::parse(&image) {
                Ok(node) if node.kind == NodeKind::Branch => node.child_for(key).map(|(_, child)| child),
                _ => return,
            }
        };
        match child.ok().map(|child| node_page(inner, child, &page)) {
            Some(Ok(next)) => page = next,
            _ => return,
        }
    }
}

/// Up to `max` entries in key order from `from` (inclusive, or exclusive when `after`), all from
/// one leaf, and where the next leaf's keys start (`None`: this was the last leaf).
/// How many leaves right of the one it reads a [`scan_leaf`] asks for.
const LEAVES_AHEAD: usize = 8;

/// What [`scan_leaf`] found: `(id, value)` pairs in id order, and the bound to go on from.
pub type LeafScan = (Vec<(Vec<u8>, LeafValue)>, Option<Vec<u8>>);

pub fn scan_leaf(inner: &Inner, from: &[u8], after: bool, max: usize) -> Result<LeafScan> {
    let mut upper: Option<Vec<u8>> = None;
    let mut ahead = [0u64; LEAVES_AHEAD];
    let found = descend(
        inner,
        from,
        |branch, j| {
            // The separator right of the child taken is the tightest upper bound of this leaf.
            if j < branch.count
                && let Ok(key) = branch.key(j)
            {
                upper = Some(key.to_vec());
            }
            // The children right of it: the next leaves of a walk, when this is their parent
            // (the last branch of the descent).
            for (k, slot) in ahead.iter_mut().enumerate() {
                let c = j + 1 + k;
                *slot = if c <= branch.count { branch.child(c).unwrap_or(0) } else { 0 };
            }
        },
        |leaf| {
            let start = match leaf.search(from)? {
                Ok(i) if after => i + 1,
                Ok(i) | Err(i) => i,
            };
            let mut entries = Vec::new();
            for i in start..leaf.count.min(start + max) {
                entries.push((leaf.key(i)?.to_vec(), leaf.value(i)?));
            }
            Ok((entries, leaf.count > start + max))
        },
    )?;
    // After a cold start, the walk's next leaves are read while it converts this one's
    // entries, not one wait on the disk a leaf (a hint: a page beyond the arena is left out).
    let leaves = ahead.into_iter().filter_map(PageId::from_raw);
    for page in leaves.filter(|page| page.space() == Space::Catalog && page.page_no() > 0) {
        inner.arena.ask_ahead(page);
    }
    match found {
        None => Ok((Vec::new(), None)),
        Some((entries, more_here)) => {
            let next = if more_here {
                entries.last().map(|(k, _)| k.clone()).map(|mut k| {
                    k.push(0);
                    k
                })
            } else {
                upper
            };
            Ok((entries, next))
        }
    }
}

/// The leaf the writer's last descent in the running operation reached, with the keys it
/// covers: a bulk record's rows in id order land in the same leaf row after row, and skip the
/// descent to it (the descents were a quarter of a bulk insert). It stands while the index
/// keeps its shape: an insert into a leaf's gap or a value replaced changes no separator and
/// no path; a node written (a split, a rewrite, a new root) or a removal drops it, and so does
/// the next operation (`WriterState::op_seq`), whose edits start from the pages.
pub struct LeafHint {
    /// The operation it belongs to; 0: none.
    op_seq: u64,
    root: u64,
    path: Path,
    leaf: PageId,
    bounds: LeafBounds,
    /// A run of lookups ([`writer_lookup_hinted`]): a key found absent past the last key of
    /// the rightmost leaf of the index of root `above_all_root`, so above every key it holds.
    above_all: KeyBound,
    above_all_root: u64,
}

impl std::fmt::Debug for LeafHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafHint")
            .field("op_seq", &self.op_seq)
            .field("leaf", &self.leaf)
            .finish()
    }
}

impl Default for LeafHint {
    fn default() -> LeafHint {
        LeafHint {
            op_seq: 0,
            root: 0,
            path: Path::new(),
            leaf: PageId(0),
            bounds: LeafBounds::default(),
            above_all: KeyBound::default(),
            above_all_root: 0,
        }
    }
}

impl LeafHint {
    /// Where `key` is in the hinted leaf, if the hint is operation `op_seq`'s in the index of
    /// root `root` and covers `key`; `None` otherwise.
    fn leaf_for(&self, inner: &Inner, list: &EditList, op_seq: u64, root: u64, key: &[u8]) -> Result<Option<LeafAt>> {
        if root == 0 || self.op_seq != op_seq || self.root != root || !self.bounds.covers(key) {
            return Ok(None);
        }
        let leaf = self.leaf;
        with_node(inner, list, leaf, |node| {
            // The hinted page is a leaf while the hint stands: a branch there is a hint kept
            // past a change of the index's shape.
            assert_eq!(node.kind, NodeKind::Leaf, "a leaf hint names a leaf");
            leaf_at(leaf, node, key)
        })
        .map(Some)
    }

    /// Descends from `root` to the leaf for `key` and makes that leaf operation `op_seq`'s hint.
    fn descend(
        &mut self,
        inner: &Inner,
        list: &EditList,
        op_seq: u64,
        root: u64,
        key: &[u8],
    ) -> Result<Option<(Path, LeafAt)>> {
        self.op_seq = 0;
        let found = path_to(inner, list, root, key, Some(&mut self.bounds))?;
        if let Some((path, leaf)) = &found {
            (self.op_seq, self.root, self.leaf) = (op_seq, root, leaf.head.page);
            self.path = path.clone();
        }
        Ok(found)
    }
}

/// The keys a leaf covers: from `low` (inclusive) to `high` (exclusive); an unset bound is no
/// bound (the leftmost or rightmost leaf).
#[derive(Default)]
struct LeafBounds {
    low: KeyBound,
    high: KeyBound,
}

impl LeafBounds {
    fn covers(&self, key: &[u8]) -> bool {
        let above_low = !self.low.set || index::compare_keys(&self.low.key, key).is_le();
        let below_high = !self.high.set || index::compare_keys(key, &self.high.key).is_lt();
        above_low && below_high
    }
}

/// A bound's key, in a buffer kept between descents.
#[derive(Default)]
struct KeyBound {
    set: bool,
    key: Vec<u8>,
}

impl KeyBound {
    fn clear(&mut self) {
        self.set = false;
    }

    fn set(&mut self, key: &[u8]) {
        self.key.clear();
        self.key.extend_from_slice(key);
        self.set = true;
    }
}

/// One step of the writer's path to a leaf: a branch and the child taken.
#[derive(Clone, Copy, Debug)]
struct PathStep {
    page: PageId,
    child: usize,
}

/// The writer's path from the root to a leaf, the root's step first: at most [`HEIGHT_MAX`]
/// branches, kept in place (a descent per operation allocated a vector each).
#[derive(Clone)]
struct Path {
    steps: [PathStep; HEIGHT_MAX as usize],
    len: usize,
}

impl Path {
    fn new() -> Path {
        Path {
            steps: [PathStep { page: PageId(0), child: 0 }; HEIGHT_MAX as usize],
            len: 0,
        }
    }

    /// Appends a step; `false` if the path already holds [`HEIGHT_MAX`] (a deeper index is
    /// damage the caller reports).
    fn push(&mut self, step: PathStep) -> bool {
        let Some(slot) = self.steps.get_mut(self.len) else { return false };
        *slot = step;
        self.len += 1;
        true
    }
}

impl std::ops::Deref for Path {
    type Target = [PathStep];

    fn deref(&self) -> &[PathStep] {
        &self.steps[..self.len]
    }
}

/// A node's header as the writer sees it: enough to change it in place.
#[derive(Clone, Copy, Debug)]
struct NodeHead {
    page: PageId,
    kind: NodeKind,
    count: usize,
    data_start: usize,
    prefix_len: usize,
    prefix_bytes: [u8; NODE_PREFIX_MAX_BYTES],
}

impl NodeHead {
    fn of(page: PageId, node: &Node<'_>) -> NodeHead {
        let mut prefix_bytes = [0u8; NODE_PREFIX_MAX_BYTES];
        prefix_bytes[..node.prefix.len()].copy_from_slice(node.prefix);
        NodeHead {
            page,
            kind: node.kind,
            count: node.count,
            data_start: node.data_start,
            prefix_len: node.prefix.len(),
            prefix_bytes,
        }
    }

    /// The key prefix every key of the node begins with.
    fn prefix(&self) -> &[u8] {
        &self.prefix_bytes[..self.prefix_len]
    }

    fn directory_end(&self) -> usize {
        NODE_DIR_OFFSET + self.count * NODE_DIR_ENTRY_BYTES
    }

    fn gap_bytes(&self) -> usize {
        self.data_start - self.directory_end()
    }
}

/// Where the writer's descent ended: the leaf, and the key's cell in it (its position, offset
/// and value) or the position it would take.
struct LeafAt {
    head: NodeHead,
    at: std::result::Result<(usize, usize, LeafValue), usize>,
}

/// A node as the writer copied it: its cells whole, in key order (only for a rewrite into new
/// pages, which needs them all; the common in-place changes read the page where it lies). The
/// cells' bytes sit in one buffer (a vector per cell made a split a hundred allocations).
struct NodeCopy {
    page: PageId,
    kind: NodeKind,
    leftmost: u64,
    /// Every cell's bytes, in no order.
    bytes: Vec<u8>,
    /// Each cell's range of `bytes`, in key order.
    cells: Vec<Range<usize>>,
}

impl NodeCopy {
    fn cell(&self, i: usize) -> &[u8] {
        &self.bytes[self.cells[i].clone()]
    }

    /// The cells `range` (by position), borrowed.
    fn cell_refs(&self, range: Range<usize>) -> Vec<&[u8]> {
        self.cells[range].iter().map(|r| &self.bytes[r.clone()]).collect()
    }

    fn key(&self, i: usize) -> &[u8] {
        index::cell_key(self.kind, self.cell(i))
    }

    fn child(&self, j: usize) -> u64 {
        if j == 0 {
            return self.leftmost;
        }
        let cell = self.cell(j - 1);
        u64::from_le_bytes(cell[2..10].try_into().expect("a branch cell's child"))
    }

    /// Inserts `cell` as cell `i`.
    fn insert(&mut self, i: usize, cell: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(cell);
        self.cells.insert(i, start..self.bytes.len());
    }

    /// Points child `j` (0: the leftmost) at `child`.
    fn set_child(&mut self, j: usize, child: u64) {
        if j == 0 {
            self.leftmost = child;
        } else {
            let range = self.cells[j - 1].clone();
            self.bytes[range][2..10].copy_from_slice(&child.to_le_bytes());
        }
    }
}

/// Runs `read` over node `page` as the writer sees it (the page with `list`'s edits applied),
/// in place: no copy of a page the list has not changed.
fn with_node<T>(
    inner: &Inner,
    list: &EditList,
    page: PageId,
    read: impl FnOnce(&Node<'_>) -> std::result::Result<T, String>,
) -> Result<T> {
    // Checked as a reader's descent checks it (verified since the open, not all zero): a page
    // the operation then changes is checked whole before its record is logged
    // (`Transaction::log_update_of`), once, rather than at every read of it.
    inner.arena.verify_in_use(page)?;
    list.with_page(&inner.arena, page, |image| Node::parse(image).and_then(|node| read(&node)))
        .map_err(|reason| inner.arena.corrupted(page, reason))
}

/// Node `page` as the writer sees it, copied.
fn read_node(inner: &Inner, list: &EditList, page: PageId) -> Result<NodeCopy> {
    with_node(inner, list, page, |node| {
        let mut copy = NodeCopy {
            page,
            kind: node.kind,
            leftmost: node.leftmost,
            bytes: Vec::with_capacity(inner.arena.page_size_bytes() as usize),
            cells: Vec::with_capacity(node.count + 1),
        };
        for i in 0..node.count {
            copy.insert(i, node.cell(i)?);
        }
        Ok(copy)
    })
}

/// What the writer found at one node of its descent.
enum WriterStep {
    Down(usize, u64),
    Leaf(LeafAt),
}

/// Where `key` is or would go in leaf `node` (page `page`).
fn leaf_at(page: PageId, node: &Node<'_>, key: &[u8]) -> std::result::Result<LeafAt, String> {
    let at = match node.search(key)? {
        Ok(i) => Ok((i, node.cell_offset(i)?, node.value(i)?)),
        Err(i) => Err(i),
    };
    Ok(LeafAt {
        head: NodeHead::of(page, node),
        at,
    })
}

/// The writer's path from `root` to the leaf for `key`: the branches and the leaf. With
/// `bounds`, also the keys the leaf covers (see [`LeafHint`]).
fn path_to(
    inner: &Inner,
    list: &EditList,
    root: u64,
    key: &[u8],
    mut bounds: Option<&mut LeafBounds>,
) -> Result<Option<(Path, LeafAt)>> {
    if root == 0 {
        return Ok(None);
    }
    let mut page = node_page(inner, root, &"the root")?;
    let mut path = Path::new();
    if let Some(bounds) = bounds.as_deref_mut() {
        bounds.low.clear();
        bounds.high.clear();
    }
    for _ in 0..=HEIGHT_MAX {
        let level_bounds = bounds.as_deref_mut();
        let step = with_node(inner, list, page, |node| match node.kind {
            NodeKind::Branch => {
                let (j, child) = node.child_for(key)?;
                // Child `j` holds the keys from cell `j - 1`'s key up to cell `j`'s: each
                // level's bounds are at least as tight as those above it.
                if let Some(bounds) = level_bounds {
                    if j > 0 {
                        bounds.low.set(node.key(j - 1)?);
                    }
                    if j < node.count {
                        bounds.high.set(node.key(j)?);
                    }
                }
                Ok(WriterStep::Down(j, child))
            }
            NodeKind::Leaf => leaf_at(page, node, key).map(WriterStep::Leaf),
        })?;
        match step {
            WriterStep::Leaf(leaf) => return Ok(Some((path, leaf))),
            WriterStep::Down(j, child) => {
                if !path.push(PathStep { page, child: j }) {
                    break;
                }
                page = node_page(inner, child, &page)?;
            }
        }
    }
    Err(inner.arena.corrupted(page, format!("the index is deeper than {HEIGHT_MAX} levels")))
}

/// The value `key` maps to in the index whose root is `root`, as the writer sees it (changes of
/// its transaction included).
pub fn writer_lookup(inner: &Inner, root: u64, key: &[u8]) -> Result<Option<LeafValue>> {
    let Some((_, leaf)) = path_to(inner, &EditList::default(), root, key, None)? else { return Ok(None) };
    Ok(leaf.at.ok().map(|(_, _, value)| value))
}

/// [`writer_lookup`] for a caller that looks up many ids while the index does not change (a
/// bulk insert checking its ids before it writes any): an id inside the keys of the leaf the
/// last lookup reached is looked for there, without a descent. `hint` starts as
/// `LeafHint::default()` and must not outlive the caller's run of lookups.
pub fn writer_lookup_hinted(inner: &Inner, root: u64, key: &[u8], hint: &mut LeafHint) -> Result<Option<LeafValue>> {
    const LOOKUPS: u64 = 1;
    // Ids in ascending order past every key the index holds (a load of new, increasing ids)
    // are absent without a search: above a key found absent past the rightmost leaf's last.
    let above_all = hint.above_all_root == root && hint.above_all.set;
    if above_all && index::compare_keys(key, &hint.above_all.key).is_gt() {
        return Ok(None);
    }
    let list = EditList::default();
    let leaf = match hint.leaf_for(inner, &list, LOOKUPS, root, key)? {
        Some(leaf) => leaf,
        None => match hint.descend(inner, &list, LOOKUPS, root, key)? {
            Some((_, leaf)) => leaf,
            None => return Ok(None),
        },
    };
    if matches!(leaf.at, Err(at) if at == leaf.head.count) && !hint.bounds.high.set {
        hint.above_all_root = root;
        hint.above_all.set(key);
    }
    Ok(leaf.at.ok().map(|(_, _, value)| value))
}

/// The largest encoded leaf cell.
const LEAF_CELL_MAX_BYTES: usize = index::CELL_KEY_LEN_BYTES + index::LEAF_VALUE_BYTES + index::KEY_MAX_BYTES;

impl OpCtx<'_> {
    fn read_node(&self, page: PageId) -> Result<NodeCopy> {
        read_node(self.inner, self.list, page)
    }

    /// The writer's path to the leaf for `key`: the leaf the last descent of this operation
    /// reached when `key` lies in the keys it covers and the index kept its shape since (see
    /// [`LeafHint`]), else a descent from the root, which leaves its leaf as the hint.
    fn path_to(&mut self, key: &[u8]) -> Result<Option<(Path, LeafAt)>> {
        let (root, op_seq) = (self.w.meta.root.get(), self.w.op_seq);
        let hint = &mut self.w.leaf_hint;
        if let Some(leaf) = hint.leaf_for(self.inner, self.list, op_seq, root, key)? {
            return Ok(Some((hint.path.clone(), leaf)));
        }
        hint.descend(self.inner, self.list, op_seq, root, key)
    }

    /// Forgets the leaf hint: the index changes shape (a node written or removed; a cell
    /// inserted into or removed from a leaf in place keeps it).
    fn drop_leaf_hint(&mut self) {
        self.w.leaf_hint.op_seq = 0;
    }

    /// The value `key` maps to as this operation's edits leave the index. Leaves the leaf it
    /// reached as the hint a later [`OpCtx::index_put`] of this operation starts from.
    pub fn index_get(&mut self, key: &[u8]) -> Result<Option<LeafValue>> {
        Ok(self.path_to(key)?.and_then(|(_, leaf)| leaf.at.ok().map(|(_, _, value)| value)))
    }

    /// Maps `key` to `value`; returns the value it replaced.
    pub fn index_put(&mut self, key: &[u8], value: &LeafValue) -> Result<Option<LeafValue>> {
        let Some((path, leaf)) = self.path_to(key)? else {
            let count = self.count_after_put()?;
            let cell = index::leaf_cell(key, value);
            let root = self.write_node(NodeKind::Leaf, 0, &[&cell])?;
            self.set_meta(|m| {
                m.root = root.0.into();
                m.height = 1.into();
                m.count = count.into();
            });
            return Ok(None);
        };
        match leaf.at {
            Ok((_, cell_offset, old)) => {
                let offset = cell_offset + index::CELL_KEY_LEN_BYTES;
                self.list
                    .push_change(&self.inner.arena, leaf.head.page, offset, value.as_bytes());
                Ok(Some(old))
            }
            Err(i) => {
                let count = self.count_after_put()?;
                let mut buf = [0u8; LEAF_CELL_MAX_BYTES];
                let cell = index::encode_leaf_cell_into(&mut buf, key, value);
                self.insert_cell(&path, leaf.head, i, cell)?;
                self.set_meta(|m| m.count = count.into());
                Ok(None)
            }
        }
    }

    /// The meta page's id count after one more id; a count that cannot grow is a damaged meta
    /// page (no store holds 2^64 ids), not an overflow.
    fn count_after_put(&self) -> Result<u64> {
        self.w.meta.count.get().checked_add(1).ok_or_else(|| {
            self.inner.arena.corrupted(
                super::alloc::meta_page(),
                "the meta page counts 2^64 - 1 ids: its count is damaged",
            )
        })
    }

    /// Removes `key`; returns the value it mapped to.
    pub fn index_remove(&mut self, key: &[u8]) -> Result<Option<LeafValue>> {
        let Some((path, leaf)) = self.path_to(key)? else { return Ok(None) };
        let Ok((i, _, old)) = leaf.at else { return Ok(None) };
        // A count of 0 with an id in the index is a damaged meta page, not an invariant.
        let Some(count) = self.w.meta.count.get().checked_sub(1) else {
            return Err(self.inner.arena.corrupted(
                super::alloc::meta_page(),
                "the index holds an id but the meta page counts none",
            ));
        };
        self.remove_cell(&path, &leaf.head, i)?;
        self.set_meta(|m| m.count = count.into());
        Ok(Some(old))
    }

    /// Inserts `cell` as cell `i` of node `head` (reached by `path`): in place when the gap
    /// holds it, else by rewriting the node into new pages.
    fn insert_cell(&mut self, path: &[PathStep], head: NodeHead, i: usize, cell: &[u8]) -> Result<()> {
        if head.gap_bytes() >= cell.len() + NODE_DIR_ENTRY_BYTES {
            let page = head.page;
            let key = index::cell_key(head.kind, cell);
            let prefix_len = if key.starts_with(head.prefix()) {
                head.prefix_len
            } else {
                self.shorten_prefix(&head, key)?
            };
            let offset = head.data_start - cell.len();
            // The counts first: they lie in the header, which neither the cell nor the shift
            // of the directory touches (the edits commute), and their before-image is read
            // before the insert makes the page one a read must replay whole (a copy of the
            // page: 40% of a single insert's instructions).
            self.set_counts(page, head.count + 1, offset);
            self.list.push_new(page, offset, cell);
            self.list.push_insert(
                page,
                NODE_DIR_OFFSET + i * NODE_DIR_ENTRY_BYTES,
                head.directory_end(),
                &directory_entry(offset, key, prefix_len),
            );
            return Ok(());
        }
        if i == head.count && head.count > 0 && head.kind == NodeKind::Leaf {
            // Ids arriving in order fill a leaf to the brim and start the next with one cell.
            let last = with_node(self.inner, self.list, head.page, |node| node.key(head.count - 1).map(<[u8]>::to_vec))?;
            let separator = index::separator(&last, index::cell_key(NodeKind::Leaf, cell));
            let right = self.write_node(NodeKind::Leaf, 0, &[cell])?;
            return self.link_right(path, head.page, separator, right.0);
        }
        let mut node = self.read_node(head.page)?;
        node.insert(i, cell);
        self.rewrite(path, node)
    }

    /// Shortens node `head`'s key prefix to the bytes it shares with `key`, a key about to join
    /// it that does not begin with it, and rewrites every head of its directory to match (the
    /// node's keys lie in the node's range, and so does `key`: they share at least what the
    /// range's bounds share, so this is rare once a node has keys across its range). Returns
    /// the new prefix length.
    fn shorten_prefix(&mut self, head: &NodeHead, key: &[u8]) -> Result<usize> {
        let prefix = head.prefix();
        let shared = index::common_prefix(prefix, key).len();
        assert!(shared < head.prefix_len, "only a key outside the prefix shortens it");
        let directory = with_node(self.inner, self.list, head.page, |node| {
            let mut directory = Vec::with_capacity(node.count * NODE_DIR_ENTRY_BYTES);
            for i in 0..node.count {
                directory.extend_from_slice(&directory_entry(node.cell_offset(i)?, node.key(i)?, shared));
            }
            Ok(directory)
        })?;
        let arena = &self.inner.arena;
        if !directory.is_empty() {
            self.list.push_change(arena, head.page, NODE_DIR_OFFSET, &directory);
        }
        self.list
            .push_change(arena, head.page, NODE_PREFIX_OFFSET, &prefix_field(&prefix[..shared]));
        Ok(shared)
    }

    /// Rewrites `node` (its cells changed, too many for its gap) into one new page or two, links
    /// it in where the old node was, and frees the old node.
    fn rewrite(&mut self, path: &[PathStep], node: NodeCopy) -> Result<()> {
        let capacity = self.inner.arena.page_size_bytes() as usize - NODE_DIR_OFFSET;
        let count = node.cells.len();
        let cells = node.cell_refs(0..count);
        let total: usize = cells.iter().map(|c| c.len() + NODE_DIR_ENTRY_BYTES).sum();
        if total <= capacity {
            let new = self.write_node(node.kind, node.leftmost, &cells)?;
            self.switch_child(path, node.page, new)?;
            return self.free_catalog_page(node.page);
        }
        let s = split_point(node.kind, &cells, capacity);
        let (left, right, separator, right_leftmost) = match node.kind {
            NodeKind::Leaf => {
                let separator = index::separator(node.key(s - 1), node.key(s));
                (&cells[..s], &cells[s..], separator, 0)
            }
            NodeKind::Branch => (&cells[..s], &cells[s + 1..], node.key(s).to_vec(), node.child(s + 1)),
        };
        let left_page = self.write_node(node.kind, node.leftmost, left)?;
        let right_page = self.write_node(node.kind, right_leftmost, right)?;
        match path.split_last() {
            None => {
                let cell = index::branch_cell(&separator, right_page.0);
                let root = self.write_node(NodeKind::Branch, left_page.0, &[&cell])?;
                self.set_meta(|m| {
                    m.root = root.0.into();
                    m.height = (m.height.get() + 1).into();
                });
            }
            Some((parent, above)) => {
                let cell = index::branch_cell(&separator, right_page.0);
                let parent_head = self.node_head(parent.page)?;
                if parent_head.gap_bytes() >= cell.len() + NODE_DIR_ENTRY_BYTES {
                    // Relinking the child changes a pointer, not the head read above.
                    self.switch_child(path, node.page, left_page)?;
                    self.insert_cell(above, parent_head, parent.child, &cell)?;
                } else {
                    let mut parent_node = self.read_node(parent.page)?;
                    parent_node.set_child(parent.child, left_page.0);
                    parent_node.insert(parent.child, &cell);
                    self.rewrite(above, parent_node)?;
                }
            }
        }
        self.free_catalog_page(node.page)
    }

    /// Links a new right sibling `right` of `left` (reached by `path`) under `separator`.
    fn link_right(&mut self, path: &[PathStep], left: PageId, separator: Vec<u8>, right: u64) -> Result<()> {
        let cell = index::branch_cell(&separator, right);
        match path.split_last() {
            None => {
                let root = self.write_node(NodeKind::Branch, left.0, &[&cell])?;
                self.set_meta(|m| {
                    m.root = root.0.into();
                    m.height = (m.height.get() + 1).into();
                });
                Ok(())
            }
            Some((parent, above)) => {
                let parent_node = self.node_head(parent.page)?;
                self.insert_cell(above, parent_node, parent.child, &cell)
            }
        }
    }

    /// Points the parent's link to `old` (the root, or the child the path took) at `new`.
    fn switch_child(&mut self, path: &[PathStep], old: PageId, new: PageId) -> Result<()> {
        let Some(parent) = path.last() else {
            assert_eq!(self.w.meta.root.get(), old.0, "the node without a parent is the root");
            self.set_meta(|m| m.root = new.0.into());
            return Ok(());
        };
        // Read in place: a copy of the parent's cells was most of a split's allocations.
        let (child, offset) = with_node(self.inner, self.list, parent.page, |node| {
            let offset = match parent.child {
                0 => PAGE_C_OFFSET,
                j => node.payload_offset(j - 1)?,
            };
            Ok((node.child(parent.child)?, offset))
        })?;
        assert_eq!(child, old.0, "the path names the child");
        self.list
            .push_change(&self.inner.arena, parent.page, offset, &new.0.to_le_bytes());
        Ok(())
    }

    /// Node `page`'s header as the writer sees it.
    fn node_head(&self, page: PageId) -> Result<NodeHead> {
        with_node(self.inner, self.list, page, |node| Ok(NodeHead::of(page, node)))
    }

    /// Removes cell `i` of leaf `node`; a leaf left empty is unlinked and freed.
    fn remove_cell(&mut self, path: &[PathStep], node: &NodeHead, i: usize) -> Result<()> {
        assert_eq!(node.kind, NodeKind::Leaf, "cells are removed from leaves");
        if node.count == 1 {
            return self.remove_node(path, node.page);
        }
        let directory_end = node.directory_end();
        self.list.push_remove(
            &self.inner.arena,
            node.page,
            NODE_DIR_OFFSET + i * NODE_DIR_ENTRY_BYTES,
            directory_end,
            NODE_DIR_ENTRY_BYTES,
        );
        self.set_counts(node.page, node.count - 1, node.data_start);
        Ok(())
    }

    /// Unlinks the (empty) node `page` from its parent and frees it. A parent left with no
    /// child goes too; a root left with one child hands the root to it.
    fn remove_node(&mut self, path: &[PathStep], page: PageId) -> Result<()> {
        self.drop_leaf_hint();
        let Some((parent, above)) = path.split_last() else {
            self.set_meta(|m| {
                m.root = 0.into();
                m.height = 0.into();
            });
            return self.free_catalog_page(page);
        };
        let (parent_node, leftmost, second_child) = with_node(self.inner, self.list, parent.page, |node| {
            let second_child = if node.count > 0 { node.child(1)? } else { 0 };
            Ok((NodeHead::of(parent.page, node), node.leftmost, second_child))
        })?;
        if parent_node.count == 0 {
            self.remove_node(above, parent.page)?;
            return self.free_catalog_page(page);
        }
        if above.is_empty() && parent_node.count == 1 {
            let only = if parent.child == 0 { second_child } else { leftmost };
            self.set_meta(|m| {
                m.root = only.into();
                m.height = (m.height.get() - 1).into();
            });
            self.free_catalog_page(parent.page)?;
            return self.free_catalog_page(page);
        }
        // Child 0 is the leftmost: the first cell's child takes its place and the cell goes.
        let cell = parent.child.saturating_sub(1);
        if parent.child == 0 {
            let new_leftmost = second_child;
            self.list
                .push_change(&self.inner.arena, parent.page, PAGE_C_OFFSET, &new_leftmost.to_le_bytes());
        }
        self.list.push_remove(
            &self.inner.arena,
            parent.page,
            NODE_DIR_OFFSET + cell * NODE_DIR_ENTRY_BYTES,
            parent_node.directory_end(),
            NODE_DIR_ENTRY_BYTES,
        );
        self.set_counts(parent.page, parent_node.count - 1, parent_node.data_start);
        self.free_catalog_page(page)
    }

    /// Sets a node's cell count and start of cell data (header fields `a`, `b`).
    fn set_counts(&mut self, page: PageId, count: usize, data_start: usize) {
        let mut fields = [0u8; 8];
        fields[..4].copy_from_slice(&(count as u32).to_le_bytes());
        fields[4..].copy_from_slice(&(data_start as u32).to_le_bytes());
        self.list.push_change(&self.inner.arena, page, PAGE_A_OFFSET, &fields);
        debug_assert_eq!(PAGE_B_OFFSET, PAGE_A_OFFSET + 4);
    }

    /// Writes a node of `kind` holding `cells` into a new page; returns it.
    fn write_node(&mut self, kind: NodeKind, leftmost: u64, cells: &[&[u8]]) -> Result<PageId> {
        self.drop_leaf_hint();
        let page_size = self.inner.arena.page_size_bytes();
        let init = match kind {
            NodeKind::Leaf => PageInit::IndexLeaf {
                cell_count: 0,
                data_start: page_size,
            },
            NodeKind::Branch => PageInit::IndexBranch {
                cell_count: 0,
                data_start: page_size,
            },
        };
        let layout =
            layout_node(page_size as usize, kind, cells).expect("the caller sized the node to fit a page");
        let (a, b) = (layout.count, layout.data_start);
        let (page, reused) = self.take_catalog_page(init)?;
        if reused {
            self.rewrite_header(page, kind.page_kind(), a, b, leftmost);
        } else {
            let mut fields = [0u8; 16];
            fields[..4].copy_from_slice(&a.to_le_bytes());
            fields[4..8].copy_from_slice(&b.to_le_bytes());
            fields[8..].copy_from_slice(&leftmost.to_le_bytes());
            self.list.push_change(&self.inner.arena, page, PAGE_A_OFFSET, &fields);
        }
        if layout.prefix_field[0] > 0 {
            // A fresh page's field is zero, and a reused page's header was zeroed there.
            self.list
                .push_change(&self.inner.arena, page, NODE_PREFIX_OFFSET, &layout.prefix_field);
        }
        let directory_bytes = cells.len() * NODE_DIR_ENTRY_BYTES;
        if directory_bytes > 0 {
            let body = &layout.body;
            self.list.push_new(page, NODE_DIR_OFFSET, &body[..directory_bytes]);
            self.list.push_new(page, b as usize, &body[b as usize - NODE_DIR_OFFSET..]);
        }
        Ok(page)
    }
}

/// Where to split `cells` of a node of `kind` that overflow one page of `capacity` bytes: the
/// split that balances the two halves' bytes best among those whose halves both fit. A leaf's
/// halves are `[..s]` and `[s..]`; a branch's `[..s]` and `[s + 1..]` (cell `s` moves up).
fn split_point(kind: NodeKind, cells: &[&[u8]], capacity: usize) -> usize {
    let bytes = |i: usize| cells[i].len() + NODE_DIR_ENTRY_BYTES;
    let total: usize = (0..cells.len()).map(bytes).sum();
    let mut best = None;
    let mut left = 0;
    for s in 1..cells.len() {
        left += bytes(s - 1);
        let right = match kind {
            NodeKind::Leaf => total - left,
            NodeKind::Branch => total - left - bytes(s),
        };
        if left <= capacity && right <= capacity {
            let imbalance = left.abs_diff(right);
            if best.is_none_or(|(_, b)| imbalance < b) {
                best = Some((s, imbalance));
            }
        }
    }
    best.expect("a node of at least three cells of at most a third of a page splits").0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_balance_bytes_and_both_halves_fit() {
        let cells: Vec<Vec<u8>> = (0..10u8).map(|i| index::leaf_cell(&[b'a' + i; 100], &LeafValue::default())).collect();
        let refs: Vec<&[u8]> = cells.iter().map(Vec::as_slice).collect();
        let s = split_point(NodeKind::Leaf, &refs, 700);
        assert_eq!(s, 5, "ten equal cells split in the middle");
        let mut skewed = cells.clone();
        skewed[9] = index::leaf_cell(&[b'z'; 600], &LeafValue::default());
        let skewed_refs: Vec<&[u8]> = skewed.iter().map(Vec::as_slice).collect();
        let s = split_point(NodeKind::Leaf, &skewed_refs, 1000);
        let left: usize = skewed[..s].iter().map(|c| c.len() + 4).sum();
        let right: usize = skewed[s..].iter().map(|c| c.len() + 4).sum();
        assert!(left <= 1000 && right <= 1000, "both halves fit: {left} {right}");
        let s = split_point(NodeKind::Branch, &refs, 700);
        assert!((4..=5).contains(&s), "a branch moves its middle cell up");
    }
}
