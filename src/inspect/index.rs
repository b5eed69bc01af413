//! The full check of the id index and of the allocation state around it (format 2): what
//! `vellum verify` runs after its read-only open, and what the fuzz targets run after every
//! operation. An open reads none of this (the index is read lazily), so this is where damage
//! that keeps every checksum valid shows.
//!
//! From the meta page (catalog page 0) it walks:
//!
//! - the tree: every node of the right kind for its depth (branches above, all leaves at the
//!   meta page's height) and whole by [`Node::check`]; keys strictly increasing within a node and
//!   across leaves, and each subtree's keys between the separators above it;
//! - every leaf value: a live catalog entry in the slot it names, of the same id and length,
//!   naming the same vector slot, whose owner-table entry names that catalog entry back; an
//!   overflow chain of the entry's metadata length;
//! - the three lists (vector pages with a free slot, roomy catalog pages, free pages): no
//!   cycle, every member of the right kind, the tail field naming the last member;
//!
//! then sweeps every page below the high-water marks: no orphan (a catalog entry, an owned
//! vector slot, a node, an overflow page or a free page that nothing reaches), no page reached
//! twice or in two roles, list links only on list members, no vector page with a free slot
//! off the vector list, and the meta page's count equal to the leaf values.
//!
//! Every finding names its page; nothing here panics on page bytes, follows a link it has not
//! bounded by a high-water mark, or sizes an allocation from a length read from a page before
//! checking it. Memory is a few bits per page and per slot of the arena.

use zerocopy::FromBytes;

use crate::arena::Arena;
use crate::format::index::{LeafValue, ListEnds, MetaFields, Node, NodeKind};
use crate::format::meta::{self, ID_MAX_BYTES, METADATA_MAX_BYTES};
use crate::format::page::{
    self, CATALOG_SLOT_BYTES, CATALOG_SLOTS_OFFSET, CatalogSlot, ENTRY_FLAG_OVERFLOW, ENTRY_HEADER_BYTES, EntryHeader,
    LIST_END, OVERFLOW_DATA_OFFSET, PAGE_HEADER_BYTES, PageHeader, PageId, PageKind, Space, VECTOR_OWNER_BYTES,
    VectorLayout,
};
use crate::store::Inner;
use crate::{Error, Result, Store};

/// Findings kept in full; more are counted only.
pub const INDEX_DAMAGE_KEPT_MAX: usize = 100;

/// What a clean index holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSummary {
    /// Entries reached from the leaves.
    pub entries: u64,
    /// Levels of the tree (0: empty).
    pub height: u32,
    /// Leaf nodes.
    pub leaf_pages: u64,
    /// Branch nodes.
    pub branch_pages: u64,
    /// Catalog pages (pages of catalog entries).
    pub catalog_pages: u64,
    /// Overflow pages (metadata chains).
    pub overflow_pages: u64,
    /// Free catalog-space pages, all on the free list.
    pub free_pages: u64,
    /// Vector pages below the high-water mark.
    pub vector_pages: u64,
    /// Vector slots owned by an entry.
    pub owned_slots: u64,
}

/// One finding: the page it concerns and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDamage {
    /// The page.
    pub page: PageId,
    /// What is wrong, in words.
    pub reason: String,
}

/// What [`index_report`] found.
#[derive(Clone, Debug, Default)]
pub struct IndexCheck {
    /// The shape of the index and of the pages around it.
    pub summary: IndexSummary,
    /// The first [`INDEX_DAMAGE_KEPT_MAX`] findings, in the order found.
    pub damage: Vec<IndexDamage>,
    /// All findings, kept or not.
    pub damage_count: u64,
    /// The first error that kept a page from being read for want of descriptors or memory
    /// (see [`crate::storage::is_exhaustion`]), if any: no finding, but the check is
    /// incomplete.
    pub unread: Option<String>,
}

impl IndexCheck {
    /// True if nothing was found wrong.
    pub fn clean(&self) -> bool {
        self.damage_count == 0
    }
}

/// Checks the index of `store` and everything it reaches (see the module documentation):
/// `Ok` with its shape if all holds, else `Err(Corrupted)` naming the arena file and the page
/// of the first finding (and how many more there are).
///
/// Waits for a running write transaction to end (do not call it from a thread that holds
/// one), and reads the pages as they are in memory: a read-only store shows what its open
/// recovered.
pub fn check_index(store: &Store) -> Result<IndexSummary> {
    let check = index_report(store, &mut |_| {});
    match check.damage.first() {
        None => Ok(check.summary),
        Some(first) => {
            let more = match check.damage_count - 1 {
                0 => String::new(),
                n => format!(" (and {n} more findings)"),
            };
            Err(store
                .inner()
                .arena
                .corrupted(first.page, format!("{}{more}", first.reason)))
        }
    }
}

/// Like [`check_index`], with every finding; `visit` sees every id the leaves hold, in key
/// (byte) order.
pub fn index_report(store: &Store, visit: &mut dyn FnMut(&[u8])) -> IndexCheck {
    let inner = store.inner();
    let _writer = inner.writer.lock();
    check_locked(inner, visit)
}

fn check_locked(inner: &Inner, visit: &mut dyn FnMut(&[u8])) -> IndexCheck {
    let arena = &inner.arena;
    let mut check = IndexCheck::default();
    let meta = match read_meta(arena) {
        Ok(None) => return check,
        Ok(Some(meta)) => meta,
        Err(damage) => {
            check.damage_count = 1;
            check.damage.push(damage);
            return check;
        }
    };
    let mut checker = Checker::new(arena, inner.layout, meta);
    checker.walk_tree(visit);
    checker.walk_graph(); // Hook (approximate index): its pages have their role
    checker.walk_lists();
    checker.check_hot_page();
    checker.sweep_catalog_space();
    checker.sweep_vector_space();
    if checker.summary.entries != meta.count.get() {
        let reason = format!(
            "the meta page counts {} entries, the leaves hold {}",
            meta.count.get(),
            checker.summary.entries
        );
        checker.damage(meta_page(), reason);
    }
    check.summary = checker.summary;
    check.damage = checker.damage;
    check.damage_count = checker.damage_count;
    check.unread = checker.unread;
    check
}

fn meta_page() -> PageId {
    PageId::new(Space::Catalog, crate::format::index::META_PAGE_NO)
}

/// The meta fields, checked on their own page and against the arena; `None` if the store has
/// written nothing yet.
fn read_meta(arena: &Arena) -> std::result::Result<Option<MetaFields>, IndexDamage> {
    let page = meta_page();
    if arena.page_count(Space::Catalog) == 0 {
        return Ok(None);
    }
    let damaged = |reason: String| IndexDamage { page, reason };
    arena.verify(page).map_err(|e| damaged(reason_of(e, page)))?;
    let image = arena.read_page(page).to_vec();
    if page::is_all_zero(&image) {
        return Ok(None);
    }
    if image[page::PAGE_KIND_OFFSET] != PageKind::Meta as u8 {
        return Err(damaged(format!(
            "catalog page 0 is a {} page, not the meta page",
            kind_name(image[page::PAGE_KIND_OFFSET])
        )));
    }
    let meta = MetaFields::read(&image).expect("a page holds the meta fields");
    if let Some(reason) = meta.check(&image) {
        return Err(damaged(reason));
    }
    let (catalog, vector) = (arena.page_count(Space::Catalog), arena.page_count(Space::Vector));
    if meta.catalog_pages.get() > catalog || meta.vector_pages.get() > vector {
        return Err(damaged(format!(
            "high-water marks of {} catalog and {} vector pages, the arena holds {catalog} and {vector}",
            meta.catalog_pages.get(),
            meta.vector_pages.get()
        )));
    }
    Ok(Some(meta))
}

/// The reason of a page's damage, without the page id the arena puts first.
fn reason_of(error: Error, page: PageId) -> String {
    let reason = match error {
        Error::Corrupted { reason, .. } => reason,
        other => other.to_string(),
    };
    let prefix = format!("{page}: ");
    reason.strip_prefix(&prefix).map(str::to_string).unwrap_or(reason)
}

fn kind_name(kind: u8) -> String {
    PageKind::from_u8(kind).map_or_else(|| format!("kind-{kind}"), |k| k.name().to_string())
}

/// An id for a message: its first bytes, escaped.
fn show(key: &[u8]) -> String {
    const SHOWN_MAX: usize = 48;
    let text = String::from_utf8_lossy(&key[..key.len().min(SHOWN_MAX)]).into_owned();
    let more = if key.len() > SHOWN_MAX { "…" } else { "" };
    format!("{text:?}{more}")
}

/// "1 entry", "2 entries".
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The first few of `items`, joined, and how many more there are.
fn listing(items: &[String]) -> String {
    const LISTED_MAX: usize = 4;
    let mut text = items[..items.len().min(LISTED_MAX)].join(", ");
    if items.len() > LISTED_MAX {
        text.push_str(&format!(" and {} more", items.len() - LISTED_MAX));
    }
    text
}

/// A set of small integers below a bound fixed at creation.
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: u64) -> Bits {
        Bits(vec![0; len.div_ceil(64) as usize])
    }

    fn get(&self, i: u64) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Adds `i`; true if it was there already.
    fn set(&mut self, i: u64) -> bool {
        let word = &mut self.0[(i / 64) as usize];
        let was = *word & (1 << (i % 64)) != 0;
        *word |= 1 << (i % 64);
        was
    }
}

/// What reached a catalog-space page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Unreached,
    Node,
    Overflow,
    FreeList,
    Graph,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Unreached => "nothing",
            Role::Node => "an index node",
            Role::Overflow => "an overflow page",
            Role::FreeList => "a member of the free list",
            Role::Graph => "a page of the approximate index",
        }
    }
}

/// The three lists of the meta page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    Vector,
    Roomy,
    Free,
}

impl List {
    fn name(self) -> &'static str {
        match self {
            List::Vector => "vector",
            List::Roomy => "roomy",
            List::Free => "free",
        }
    }

    fn member_kind(self) -> PageKind {
        match self {
            List::Vector => PageKind::Vector,
            List::Roomy => PageKind::Catalog,
            List::Free => PageKind::Free,
        }
    }

    fn space(self) -> Space {
        match self {
            List::Vector => Space::Vector,
            List::Roomy | List::Free => Space::Catalog,
        }
    }

    fn ends(self, meta: &MetaFields) -> ListEnds {
        match self {
            List::Vector => meta.vector_list,
            List::Roomy => meta.roomy_list,
            List::Free => meta.free_list,
        }
    }
}

/// The bounds of a subtree's keys, `low <= key < high` (`None`: unbounded), each a separator
/// and the branch it is in.
#[derive(Clone, Copy)]
struct Range<'k> {
    low: Option<(&'k [u8], PageId)>,
    high: Option<(&'k [u8], PageId)>,
}

struct Checker<'a> {
    arena: &'a Arena,
    layout: VectorLayout,
    page_size: usize,
    meta: MetaFields,
    catalog_hw: u64,
    vector_hw: u64,
    /// What reached each catalog-space page below the high-water mark.
    roles: Vec<Role>,
    on_roomy_list: Bits,
    on_vector_list: Bits,
    /// Catalog entries reached from a leaf: page number × [`Checker::slots_max`] + slot.
    entries: Bits,
    /// Catalog slots a page can hold at most.
    slots_max: u64,
    /// Vector slots reached from a leaf: page number × slots per page + slot.
    slots: Bits,
    /// Pages that failed their checksum (reported once).
    unreadable: [Bits; 2],
    /// The last key of the last leaf walked.
    last_key: Option<Vec<u8>>,
    /// Nodes whose damage kept the walk from going below them.
    skipped_nodes: u64,
    summary: IndexSummary,
    damage: Vec<IndexDamage>,
    damage_count: u64,
    /// See [`IndexCheck::unread`].
    unread: Option<String>,
}

impl<'a> Checker<'a> {
    fn new(arena: &'a Arena, layout: VectorLayout, meta: MetaFields) -> Checker<'a> {
        // Both marks are bounded by the arena's page counts (`read_meta`).
        let catalog_hw = meta.catalog_pages.get();
        let vector_hw = meta.vector_pages.get();
        let page_size = arena.page_size_bytes() as usize;
        let slots_max = ((page_size - CATALOG_SLOTS_OFFSET) / CATALOG_SLOT_BYTES) as u64;
        Checker {
            arena,
            layout,
            page_size,
            meta,
            catalog_hw,
            vector_hw,
            roles: vec![Role::Unreached; catalog_hw as usize],
            on_roomy_list: Bits::new(catalog_hw),
            on_vector_list: Bits::new(vector_hw),
            entries: Bits::new(catalog_hw * slots_max),
            slots_max,
            slots: Bits::new(vector_hw * u64::from(layout.slots_per_page)),
            unreadable: [Bits::new(catalog_hw.max(1)), Bits::new(vector_hw)],
            last_key: None,
            skipped_nodes: 0,
            summary: IndexSummary {
                height: meta.height.get(),
                ..IndexSummary::default()
            },
            damage: Vec::new(),
            damage_count: 0,
            unread: None,
        }
    }

    fn damage(&mut self, page: PageId, reason: impl Into<String>) {
        self.damage_count += 1;
        if self.damage.len() < INDEX_DAMAGE_KEPT_MAX {
            self.damage.push(IndexDamage {
                page,
                reason: reason.into(),
            });
        }
    }

    fn high_water(&self, space: Space) -> u64 {
        match space {
            Space::Catalog => self.catalog_hw,
            Space::Vector => self.vector_hw,
        }
    }

    /// The page `raw` (read in `from`) names, if it is a page of `space` below the high-water
    /// mark (and not the meta page); else the damage is noted at `from`.
    fn link(&mut self, from: PageId, raw: u64, space: Space, what: &str) -> Option<PageId> {
        let hw = self.high_water(space);
        let first = u64::from(space == Space::Catalog);
        let page = PageId::from_raw(raw).filter(|p| p.space() == space && (first..hw).contains(&p.page_no()));
        if page.is_none() {
            self.damage(
                from,
                format!(
                    "{what} {raw:#x}, no {} page below the high-water mark of {hw}",
                    space.name()
                ),
            );
        }
        page
    }

    /// Checks page `id` (below its high-water mark) once: false (damage noted the first time)
    /// if it fails its checksum or names another page.
    fn readable(&mut self, id: PageId) -> bool {
        let index = id.page_no();
        if self.unreadable[id.space().index()].get(index) {
            return false;
        }
        match self.arena.verify(id) {
            Ok(()) => true,
            Err(crate::Error::Io { context, source }) if crate::storage::is_exhaustion(&source) => {
                // Not damage: the process could not open or map the page's file.
                self.unreadable[id.space().index()].set(index);
                self.unread.get_or_insert_with(|| format!("{context}: {source}"));
                false
            }
            Err(e) => {
                self.unreadable[id.space().index()].set(index);
                let reason = reason_of(e, id);
                self.damage(id, reason);
                false
            }
        }
    }

    /// A copy of page `id`, if readable.
    fn page(&mut self, id: PageId) -> Option<Vec<u8>> {
        self.readable(id).then(|| self.arena.read_page(id).to_vec())
    }

    /// The header of page `id`, if readable.
    fn header(&mut self, id: PageId) -> Option<PageHeader> {
        if !self.readable(id) {
            return None;
        }
        let mut raw = [0u8; PAGE_HEADER_BYTES];
        self.arena.read(id, 0, &mut raw);
        Some(PageHeader::read_from_bytes(&raw).expect("header size"))
    }

    fn read_u64(&self, id: PageId, offset: usize) -> u64 {
        let mut raw = [0u8; 8];
        self.arena.read(id, offset, &mut raw);
        u64::from_le_bytes(raw)
    }

    fn walk_tree(&mut self, visit: &mut dyn FnMut(&[u8])) {
        let root = self.meta.root.get();
        if root == 0 {
            return;
        }
        let unbounded = Range { low: None, high: None };
        self.walk_node(meta_page(), root, 1, unbounded, visit);
    }

    /// Checks the subtree whose root `raw` is linked from `from`, at `depth` (the root is 1).
    /// The recursion is as deep as the meta page's height, at most `HEIGHT_MAX`.
    fn walk_node(&mut self, from: PageId, raw: u64, depth: u32, range: Range<'_>, visit: &mut dyn FnMut(&[u8])) {
        let Some((id, image)) = self.enter_node(from, raw, depth, range) else {
            self.skipped_nodes += 1;
            return;
        };
        let node = Node::parse(&image).expect("checked by enter_node");
        match node.kind {
            NodeKind::Leaf => self.walk_leaf(id, &node, visit),
            NodeKind::Branch => {
                self.summary.branch_pages += 1;
                for j in 0..=node.count {
                    let child = node.child(j).expect("checked by Node::check");
                    let separator = |i: usize| Some((node.key(i).expect("checked by Node::check"), id));
                    let low = if j == 0 { range.low } else { separator(j - 1) };
                    let high = if j == node.count { range.high } else { separator(j) };
                    self.walk_node(id, child, depth + 1, Range { low, high }, visit);
                }
            }
        }
    }

    /// The node `raw` (linked from `from`, at `depth`, its keys bounded by `range`): its page
    /// and a copy of it, if it is reached for the first time, readable, whole, of the kind its
    /// depth needs and with its keys in range. Else the damage is noted and `None` returned.
    fn enter_node(&mut self, from: PageId, raw: u64, depth: u32, range: Range<'_>) -> Option<(PageId, Vec<u8>)> {
        let id = self.link(from, raw, Space::Catalog, "links to index node")?;
        let role = &mut self.roles[id.page_no() as usize];
        if *role != Role::Unreached {
            let was = role.name();
            self.damage(
                id,
                format!("linked in the index from {from}, but reached already as {was}"),
            );
            return None;
        }
        *role = Role::Node;
        let image = self.page(id)?;
        let kind = image[page::PAGE_KIND_OFFSET];
        if kind == PageKind::Free as u8 {
            self.damage(id, format!("a free page is linked in the index (from {from})"));
            return None;
        }
        let node = match Node::parse(&image).and_then(|node| node.check().map(|()| node)) {
            Ok(node) => node,
            Err(reason) => {
                self.damage(id, reason);
                return None;
            }
        };
        let height = self.meta.height.get();
        let expected = if depth == height {
            NodeKind::Leaf
        } else {
            NodeKind::Branch
        };
        if node.kind != expected {
            let reason = format!(
                "a {} at depth {depth} of an index of height {height} (leaves are at depth {height} only)",
                kind_name(kind)
            );
            self.damage(id, reason);
            return None;
        }
        if !self.keys_in_range(id, &node, range) {
            return None;
        }
        Some((id, image))
    }

    /// True if every key of `node` (checked by `Node::check`) lies in `range`, and a leaf's keys
    /// follow the last leaf's.
    fn keys_in_range(&mut self, id: PageId, node: &Node<'_>, range: Range<'_>) -> bool {
        for i in 0..node.count {
            let key = node.key(i).expect("checked by Node::check");
            if let Some((low, branch)) = range.low.filter(|(low, _)| key < *low) {
                let reason = format!(
                    "cell {i}: key {} is below the separator {} of its subtree in {branch}",
                    show(key),
                    show(low)
                );
                self.damage(id, reason);
                return false;
            }
            if let Some((high, branch)) = range.high.filter(|(high, _)| key >= *high) {
                let reason = format!(
                    "cell {i}: key {} is not below the separator {} after its subtree in {branch}",
                    show(key),
                    show(high)
                );
                self.damage(id, reason);
                return false;
            }
        }
        if node.kind == NodeKind::Leaf && node.count > 0 {
            let first = node.key(0).expect("checked");
            if let Some(last) = self.last_key.as_deref().filter(|last| first <= *last) {
                let reason = format!(
                    "first key {} does not follow the previous leaf's last key {}",
                    show(first),
                    show(last)
                );
                self.damage(id, reason);
                return false;
            }
            self.last_key = Some(node.key(node.count - 1).expect("checked").to_vec());
        }
        true
    }

    fn walk_leaf(&mut self, id: PageId, leaf: &Node<'_>, visit: &mut dyn FnMut(&[u8])) {
        self.summary.leaf_pages += 1;
        for i in 0..leaf.count {
            let key = leaf.key(i).expect("checked by Node::check");
            let value = leaf.value(i).expect("checked by Node::check");
            visit(key);
            self.summary.entries += 1;
            self.check_value(id, i, key, &value);
        }
    }

    /// The catalog entry and the vector slot leaf `leaf`'s cell `cell` (of `key`) names.
    fn check_value(&mut self, leaf: PageId, cell: usize, key: &[u8], value: &LeafValue) {
        let at = |reason: String| format!("cell {cell} (id {}): {reason}", show(key));
        let catalog_no = u64::from(value.catalog_page.get());
        if catalog_no == 0 || catalog_no >= self.catalog_hw {
            let reason = format!(
                "its value names catalog page {catalog_no}, beyond the high-water mark of {}",
                self.catalog_hw
            );
            return self.damage(leaf, at(reason));
        }
        let catalog = PageId::new(Space::Catalog, catalog_no);
        let Some(header) = self.header(catalog) else { return };
        if header.kind != PageKind::Catalog as u8 {
            let reason = format!("its value names {catalog}, a {} page", kind_name(header.kind));
            return self.damage(leaf, at(reason));
        }
        let slot = value.catalog_slot.get();
        if slot >= header.a.get() || CATALOG_SLOTS_OFFSET + (slot as usize + 1) * CATALOG_SLOT_BYTES > self.page_size {
            let reason = format!("its value names slot {slot} of {catalog}, of {} slots", header.a.get());
            return self.damage(leaf, at(reason));
        }
        let mut raw = [0u8; CATALOG_SLOT_BYTES];
        self.arena.read(
            catalog,
            CATALOG_SLOTS_OFFSET + slot as usize * CATALOG_SLOT_BYTES,
            &mut raw,
        );
        let directory = CatalogSlot::read_from_bytes(&raw).expect("slot size");
        let (offset, len) = (directory.offset.get(), directory.len_bytes.get());
        if len == 0 {
            return self.damage(leaf, at(format!("its value names free slot {slot} of {catalog}")));
        }
        if (offset, len) != (value.entry_offset.get(), value.entry_len.get()) {
            let reason = format!(
                "its value names an entry of {} bytes at {} of {catalog}, slot {slot} holds {len} at {offset}",
                value.entry_len.get(),
                value.entry_offset.get()
            );
            return self.damage(leaf, at(reason));
        }
        let Some(entry) = self.entry_header(catalog, slot, offset, len) else {
            return;
        };
        if !self.entry_has_id(catalog, offset, &entry, key) {
            return self.damage(
                leaf,
                at(format!("slot {slot} of {catalog} holds the entry of another id")),
            );
        }
        let vector = PageId::new(Space::Vector, u64::from(value.vector_page.get()));
        if entry.vector_page.get() != vector.0 || entry.vector_slot.get() != value.vector_slot.get() {
            let reason = format!(
                "its value names slot {} of {vector}, its entry (slot {slot} of {catalog}) names slot {} of page id {:#x}",
                value.vector_slot.get(),
                entry.vector_slot.get(),
                entry.vector_page.get()
            );
            return self.damage(leaf, at(reason));
        }
        if self.entries.set(catalog_no * self.slots_max + u64::from(slot)) {
            return self.damage(
                catalog,
                format!("slot {slot}: its entry is reached from two index cells"),
            );
        }
        if entry.flags.get() == ENTRY_FLAG_OVERFLOW {
            self.walk_chain(catalog, slot, entry.overflow_page.get(), entry.meta_len.get());
        }
        self.check_owner(leaf, cell, key, value);
    }

    /// The fixed part of the entry at `offset` (`len` bytes) of `catalog`, if it fits the page
    /// and its lengths are in range (damage noted at `catalog` otherwise).
    fn entry_header(&mut self, catalog: PageId, slot: u32, offset: u32, len: u32) -> Option<EntryHeader> {
        let (start, end) = (offset as usize, offset as usize + len as usize);
        if start < PAGE_HEADER_BYTES || end > self.page_size || (len as usize) < ENTRY_HEADER_BYTES {
            self.damage(
                catalog,
                format!("slot {slot}: an entry of {len} bytes at {offset} does not fit"),
            );
            return None;
        }
        let mut raw = [0u8; ENTRY_HEADER_BYTES];
        self.arena.read(catalog, start, &mut raw);
        let entry = EntryHeader::read_from_bytes(&raw).expect("entry header size");
        let id_len = entry.id_len.get() as usize;
        let meta_len = entry.meta_len.get() as usize;
        let fixed = ENTRY_HEADER_BYTES + id_len;
        let expected_len = match entry.flags.get() {
            0 => Some(fixed + meta_len),
            ENTRY_FLAG_OVERFLOW => Some(fixed),
            _ => None,
        };
        if id_len == 0 || id_len > ID_MAX_BYTES || meta_len > METADATA_MAX_BYTES || expected_len != Some(len as usize) {
            self.damage(
                catalog,
                format!("slot {slot}: an entry of {len} bytes with id length {id_len}, metadata length {meta_len}"),
            );
            return None;
        }
        Some(entry)
    }

    /// True if the entry (checked by [`Checker::entry_header`]) holds id `key`.
    fn entry_has_id(&self, catalog: PageId, offset: u32, entry: &EntryHeader, key: &[u8]) -> bool {
        let id_len = entry.id_len.get() as usize;
        if id_len != key.len() {
            return false;
        }
        let mut id = [0u8; ID_MAX_BYTES];
        self.arena
            .read(catalog, offset as usize + ENTRY_HEADER_BYTES, &mut id[..id_len]);
        id[..id_len] == *key
    }

    /// The owner-table entry of the vector slot a leaf value names must name the value's
    /// catalog entry; a slot is reached once.
    fn check_owner(&mut self, leaf: PageId, cell: usize, key: &[u8], value: &LeafValue) {
        let (page_no, slot) = (u64::from(value.vector_page.get()), value.vector_slot.get());
        if page_no >= self.vector_hw || slot >= self.layout.slots_per_page {
            let reason = format!(
                "cell {cell} (id {}): its value names slot {slot} of vector page {page_no}, beyond the high-water mark of {} vector pages of {} slots",
                show(key),
                self.vector_hw,
                self.layout.slots_per_page
            );
            return self.damage(leaf, reason);
        }
        let vector = PageId::new(Space::Vector, page_no);
        let Some(header) = self.header(vector) else { return };
        if header.kind != PageKind::Vector as u8 {
            let reason = format!(
                "cell {cell} (id {}): its value names {vector}, a {} page",
                show(key),
                kind_name(header.kind)
            );
            return self.damage(leaf, reason);
        }
        let owner = self.read_u64(vector, self.layout.owner_offset(slot));
        let catalog_no = u64::from(value.catalog_page.get());
        let expected = page::encode_owner(catalog_no, value.entry_offset.get());
        if owner != expected {
            let named = match page::decode_owner(owner) {
                None => "no owner (a free slot)".to_string(),
                Some((page_no, offset)) => format!("the entry at {offset} of catalog page {page_no}"),
            };
            let reason = format!(
                "slot {slot}: its owner table names {named}, but the entry of id {} at {} of catalog page {catalog_no} holds it",
                show(key),
                value.entry_offset.get()
            );
            return self.damage(vector, reason);
        }
        let bit = page_no * u64::from(self.layout.slots_per_page) + u64::from(slot);
        if self.slots.set(bit) {
            self.damage(vector, format!("slot {slot} is reached from two index cells"));
        }
    }

    /// Walks the overflow chain of the entry in `slot` of `catalog`: pages of kind overflow
    /// below the high-water mark, each reached once, holding `meta_len` bytes of valid metadata.
    fn walk_chain(&mut self, catalog: PageId, slot: u32, first: u64, meta_len: u32) {
        let capacity = self.page_size - OVERFLOW_DATA_OFFSET;
        let pages_max = (meta_len as usize).div_ceil(capacity).max(1);
        // `entry_header` bounded meta_len by METADATA_MAX_BYTES.
        let mut bytes = Vec::with_capacity(meta_len as usize);
        let (mut from, mut raw) = (catalog, first);
        let what = format!("slot {slot}: its overflow chain links to");
        for _ in 0..pages_max {
            let Some(id) = self.link(from, raw, Space::Catalog, &what) else {
                return;
            };
            let role = &mut self.roles[id.page_no() as usize];
            if *role != Role::Unreached {
                let was = role.name();
                let reason = format!("in the overflow chain of slot {slot} of {catalog}, but reached already as {was}");
                return self.damage(id, reason);
            }
            *role = Role::Overflow;
            let Some(image) = self.page(id) else { return };
            let header = PageHeader::read_from_prefix(&image).expect("a page holds a header").0;
            let used = header.a.get() as usize;
            if header.kind != PageKind::Overflow as u8 || used > capacity || bytes.len() + used > meta_len as usize {
                let reason = format!(
                    "in the overflow chain of slot {slot} of {catalog} ({meta_len} bytes), but a {} page of {used} bytes",
                    kind_name(header.kind)
                );
                return self.damage(id, reason);
            }
            self.summary.overflow_pages += 1;
            bytes.extend_from_slice(&image[OVERFLOW_DATA_OFFSET..OVERFLOW_DATA_OFFSET + used]);
            match header.c.get() {
                0 => {
                    if bytes.len() != meta_len as usize {
                        let reason = format!(
                            "slot {slot}: its overflow chain holds {} bytes of {meta_len}",
                            bytes.len()
                        );
                        return self.damage(catalog, reason);
                    }
                    if let Err(reason) = meta::validate(&bytes) {
                        self.damage(
                            catalog,
                            format!("slot {slot}: the metadata of its overflow chain: {reason}"),
                        );
                    }
                    return;
                }
                next => (from, raw) = (id, next),
            }
        }
        self.damage(
            catalog,
            format!("slot {slot}: its overflow chain is longer than {pages_max} pages"),
        );
    }

    fn walk_lists(&mut self) {
        for list in [List::Free, List::Roomy, List::Vector] {
            self.walk_list(list);
        }
    }

    /// Walks `list` from its head: members of its kind and space below the high-water mark, no
    /// page twice (so at most a high-water mark of steps), ending at its tail.
    fn walk_list(&mut self, list: List) {
        let ends = list.ends(&self.meta);
        let (head, tail) = (ends.head.get(), ends.tail.get());
        if head == 0 {
            return;
        }
        let name = list.name();
        let what = format!("the {name} list links to");
        let (mut from, mut raw) = (meta_page(), head);
        loop {
            let Some(id) = self.link(from, raw, list.space(), &what) else {
                return;
            };
            if !self.mark_listed(list, id, from) {
                return;
            }
            let Some(header) = self.header(id) else { return };
            if header.kind != list.member_kind() as u8 {
                let reason = format!("on the {name} list, but a {} page", kind_name(header.kind));
                return self.damage(id, reason);
            }
            match header.c.get() {
                LIST_END => {
                    if tail != id.0 {
                        let reason = format!("the {name} list ends at {id}, but its tail field names {tail:#x}");
                        self.damage(meta_page(), reason);
                    }
                    return;
                }
                0 => return self.damage(id, format!("on the {name} list, but its link is 0 (on no list)")),
                next => (from, raw) = (id, next),
            }
        }
    }

    /// Notes that `id` is on `list`; false (damage noted) if it was reached already: a cycle,
    /// or a page in two roles.
    fn mark_listed(&mut self, list: List, id: PageId, from: PageId) -> bool {
        let name = list.name();
        let again = match list {
            List::Vector => self.on_vector_list.set(id.page_no()),
            List::Roomy => self.on_roomy_list.set(id.page_no()),
            List::Free => {
                let role = &mut self.roles[id.page_no() as usize];
                let was = *role;
                if was == Role::Unreached {
                    *role = Role::FreeList;
                    false
                } else if was == Role::FreeList {
                    true
                } else {
                    let reason = format!("on the free list (after {from}), but reached already as {}", was.name());
                    self.damage(id, reason);
                    return false;
                }
            }
        };
        if again {
            self.damage(
                id,
                format!("on the {name} list twice (the list has a cycle through {from})"),
            );
        }
        !again
    }

    /// The approximate index's pages (FORMAT.md 14.13): the graph meta page the meta page
    /// names and every page of its extents, each reached in the role `Graph`. What they hold
    /// is `store::graph::check_index`'s to check.
    fn walk_graph(&mut self) {
        use crate::format::graph::{self, Extents, GraphFields};
        let raw = u64::from(self.meta.graph.get());
        if raw == 0 {
            return;
        }
        let meta = PageId::new(Space::Catalog, raw);
        if !self.reach_graph_page(meta_page(), meta) {
            return;
        }
        let Some(image) = self.page(meta) else { return };
        let fields = match GraphFields::read(&image).ok_or("no graph fields") {
            Ok(fields) => fields,
            Err(reason) => return self.damage(meta, reason),
        };
        if let Some(reason) = fields.check(&image) {
            return self.damage(meta, reason);
        }
        let table = |offset: usize, count: u16| -> Vec<u32> {
            (0..usize::from(count))
                .map(|k| u32::from_le_bytes(image[offset + 4 * k..offset + 4 * k + 4].try_into().expect("4 bytes")))
                .collect()
        };
        let page_size = image.len();
        let kinds = [
            table(graph::GRAPH_EXTENTS_OFFSET, fields.node_extents.get()),
            table(graph::upper_extent_offset(page_size, 0), fields.upper_extents.get()),
        ];
        for starts in kinds {
            let extents = Extents::new(starts, fields.extent_shift);
            for index in 0..extents.pages {
                let page_no = extents.locate(index).expect("an index below the extents' pages");
                if !self.reach_graph_page(meta, PageId::new(Space::Catalog, page_no)) {
                    return;
                }
            }
        }
    }

    /// Reaches catalog page `id` from `from` as a page of the approximate index; false if it
    /// is beyond the high-water mark or reached already (reported).
    fn reach_graph_page(&mut self, from: PageId, id: PageId) -> bool {
        if id.page_no() == 0 || id.page_no() >= self.catalog_hw {
            let reason = format!("names {id} for the approximate index, beyond the catalog high-water mark");
            self.damage(from, reason);
            return false;
        }
        let role = &mut self.roles[id.page_no() as usize];
        if *role != Role::Unreached {
            let reason = format!(
                "a page of the approximate index, but reached already as {}",
                role.name()
            );
            self.damage(id, reason);
            return false;
        }
        *role = Role::Graph;
        true
    }

    /// The hot catalog page, if any, is a catalog page below the high-water mark.
    fn check_hot_page(&mut self) {
        let raw = self.meta.hot_catalog.get();
        if raw == 0 {
            return;
        }
        let Some(id) = self.link(meta_page(), raw, Space::Catalog, "the hot catalog page is") else {
            return;
        };
        if let Some(header) = self.header(id)
            && header.kind != PageKind::Catalog as u8
        {
            let reason = format!(
                "the meta page's hot catalog page, but a {} page",
                kind_name(header.kind)
            );
            self.damage(id, reason);
        }
    }

    /// Every catalog-space page below the high-water mark: reached in the role its kind says,
    /// every catalog entry reached from a leaf, list links only on list members.
    fn sweep_catalog_space(&mut self) {
        for page_no in 1..self.catalog_hw {
            let id = PageId::new(Space::Catalog, page_no);
            let Some(header) = self.header(id) else { continue };
            let role = self.roles[page_no as usize];
            let expected = match PageKind::from_u8(header.kind) {
                Some(PageKind::IndexLeaf | PageKind::IndexBranch) => Role::Node,
                Some(PageKind::GraphMeta | PageKind::GraphNodes | PageKind::GraphUpper) => Role::Graph,
                Some(PageKind::Overflow) => Role::Overflow,
                Some(PageKind::Free) => {
                    self.summary.free_pages += 1;
                    Role::FreeList
                }
                Some(PageKind::Catalog) => {
                    self.summary.catalog_pages += 1;
                    self.sweep_catalog_page(id, &header);
                    Role::Unreached
                }
                Some(PageKind::Zero) => {
                    self.damage(id, "never formatted, but below the high-water mark");
                    continue;
                }
                _ => {
                    self.damage(id, format!("a {} page in the catalog space", kind_name(header.kind)));
                    continue;
                }
            };
            // A page reached in another role was reported when it was reached.
            if role == Role::Unreached && expected != Role::Unreached {
                let reason = format!(
                    "leaked: nothing links to this page of kind {} (it should be reached as {}){}",
                    kind_name(header.kind),
                    expected.name(),
                    self.skipped_note()
                );
                self.damage(id, reason);
            }
        }
    }

    /// Every entry of catalog page `id` is reached from a leaf; its roomy-list link is 0 unless
    /// it is on the roomy list.
    fn sweep_catalog_page(&mut self, id: PageId, header: &PageHeader) {
        let link = header.c.get();
        if link != 0 && !self.on_roomy_list.get(id.page_no()) {
            self.damage(id, format!("links to the roomy list ({link:#x}), but is not on it"));
        }
        let Some(image) = self.page(id) else { return };
        let entries = match page::decode_catalog_page(&image) {
            Ok(entries) => entries,
            Err(reason) => return self.damage(id, reason),
        };
        let base = id.page_no() * self.slots_max;
        let orphans: Vec<String> = entries
            .iter()
            .filter(|e| !self.entries.get(base + u64::from(e.slot)))
            .map(|e| format!("slot {} (id {})", e.slot, show(e.id.as_bytes())))
            .collect();
        if !orphans.is_empty() {
            let reason = format!(
                "{} reached from no index leaf (orphans): {}{}",
                counted(orphans.len(), "entry", "entries"),
                listing(&orphans),
                self.skipped_note()
            );
            self.damage(id, reason);
        }
    }

    /// Why orphans may be no damage of their own: the walk skipped damaged nodes.
    fn skipped_note(&self) -> String {
        match self.skipped_nodes {
            0 => String::new(),
            n => format!(
                " (the walk skipped {}, which may reach them)",
                counted(n as usize, "damaged node", "damaged nodes")
            ),
        }
    }

    /// Every vector page below the high-water mark: formatted for the store's layout, every
    /// owned slot reached from a leaf, on the vector list exactly when it has a free slot.
    fn sweep_vector_space(&mut self) {
        let slots_per_page = self.layout.slots_per_page;
        let mut owners = vec![0u8; slots_per_page as usize * VECTOR_OWNER_BYTES];
        for page_no in 0..self.vector_hw {
            let id = PageId::new(Space::Vector, page_no);
            let Some(header) = self.header(id) else { continue };
            self.summary.vector_pages += 1;
            let (dimension, stride) = (header.a.get(), header.b.get() as usize);
            if header.kind != PageKind::Vector as u8
                || dimension != self.layout.dimension
                || stride != self.layout.stride_bytes
            {
                let reason = format!(
                    "a {} page of dimension {dimension} and stride {stride} below the vector high-water mark (expected vector pages of {} and {})",
                    kind_name(header.kind),
                    self.layout.dimension,
                    self.layout.stride_bytes
                );
                self.damage(id, reason);
                continue;
            }
            self.arena.read(id, page::VECTOR_OWNERS_OFFSET, &mut owners);
            let mut free_slots = 0u32;
            let mut orphans = Vec::new();
            for slot in 0..slots_per_page {
                let at = slot as usize * VECTOR_OWNER_BYTES;
                let owner = u64::from_le_bytes(owners[at..at + VECTOR_OWNER_BYTES].try_into().expect("8 bytes"));
                let Some((catalog_no, offset)) = page::decode_owner(owner) else {
                    free_slots += 1;
                    continue;
                };
                if self.slots.get(page_no * u64::from(slots_per_page) + u64::from(slot)) {
                    self.summary.owned_slots += 1;
                } else {
                    orphans.push(format!(
                        "slot {slot} (owner: catalog page {catalog_no}, offset {offset})"
                    ));
                }
            }
            if !orphans.is_empty() {
                let reason = format!(
                    "{} reached from no index leaf (orphans): {}{}",
                    counted(orphans.len(), "owned slot", "owned slots"),
                    listing(&orphans),
                    self.skipped_note()
                );
                self.damage(id, reason);
            }
            let listed = self.on_vector_list.get(page_no);
            let link = header.c.get();
            if free_slots > 0 && !listed {
                let reason = format!(
                    "{}, but not on the vector list (never reused)",
                    counted(free_slots as usize, "free slot", "free slots")
                );
                self.damage(id, reason);
            } else if link != 0 && !listed {
                self.damage(id, format!("links to the vector list ({link:#x}), but is not on it"));
            }
        }
    }
}
