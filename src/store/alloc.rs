//! The single writer's state and the allocators it draws pages and slots from.
//!
//! Nothing here is rebuilt at open: what is free is found from pages. The meta page (catalog
//! page 0) holds the high-water marks of both spaces and the ends of three lists linked
//! through header field `c`: vector pages with a free slot, catalog pages with freed space
//! (the "roomy" list), and free catalog-space pages. Every change to them is an edit of the
//! operation's update record, so redo and undo keep them exact.
//!
//! What a commit frees may still be read by a reader that looked it up before (a vector slot,
//! a catalog entry, an index node): it goes on its list at once, but is quarantined in memory
//! until every reader that could hold it has left (see `readers`). After a restart there are
//! no such readers, so the quarantine starts empty.

use std::collections::{HashMap, HashSet, VecDeque};

use zerocopy::IntoBytes;

use super::Inner;
use super::edits::EditList;
use crate::format::index::{self, META_FIELDS_OFFSET, META_PAGE_NO, MetaFields};
use crate::format::page::{LIST_END, PAGE_C_OFFSET, PAGE_KIND_OFFSET, PageId, PageKind, Space, VectorLayout};
use crate::format::record::PageInit;
use crate::{Error, Result};

/// Something freed, reusable once no reader can hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    /// A vector slot: page number and slot.
    VectorSlot(u64, u32),
    /// A catalog entry's bytes.
    CatalogExtent {
        /// The catalog page.
        page_no: u64,
        /// Where the entry starts.
        offset: u32,
        /// Its length.
        len: u32,
    },
    /// A catalog-space page (an index node or an overflow page).
    Page(u64),
}

/// What is freed but may still be read: kept from reuse until its readers are gone.
#[derive(Debug, Default)]
pub struct Quarantine {
    /// Committed releases and the epoch of their commit, oldest first.
    pub released: VecDeque<(u64, Release)>,
    slots: HashSet<(u64, u32)>,
    pages: HashSet<u64>,
    extents: HashMap<u64, Vec<(u32, u32)>>,
}

impl Quarantine {
    /// Keeps `release` from reuse (until [`Quarantine::lift`]).
    pub fn hold(&mut self, release: &Release) {
        match *release {
            Release::VectorSlot(page_no, slot) => {
                self.slots.insert((page_no, slot));
            }
            Release::CatalogExtent { page_no, offset, len } => {
                self.extents.entry(page_no).or_default().push((offset, len));
            }
            Release::Page(page_no) => {
                self.pages.insert(page_no);
            }
        }
    }

    /// Lets `release` be reused.
    pub fn lift(&mut self, release: &Release) {
        match *release {
            Release::VectorSlot(page_no, slot) => {
                self.slots.remove(&(page_no, slot));
            }
            Release::CatalogExtent { page_no, offset, len } => {
                if let Some(extents) = self.extents.get_mut(&page_no) {
                    extents.retain(|&e| e != (offset, len));
                    if extents.is_empty() {
                        self.extents.remove(&page_no);
                    }
                }
            }
            Release::Page(page_no) => {
                self.pages.remove(&page_no);
            }
        }
    }

    /// True if vector slot `slot` of page `page_no` is held.
    pub fn holds_slot(&self, page_no: u64, slot: u32) -> bool {
        self.slots.contains(&(page_no, slot))
    }

    /// True if catalog-space page `page_no` is held.
    pub fn holds_page(&self, page_no: u64) -> bool {
        self.pages.contains(&page_no)
    }

    /// The held extents of catalog page `page_no`.
    pub fn extents(&self, page_no: u64) -> &[(u32, u32)] {
        self.extents.get(&page_no).map_or(&[], Vec::as_slice)
    }
}

/// The writer's state, under the writer lock.
#[derive(Debug)]
pub struct WriterState {
    /// The next transaction id.
    pub next_txn_id: u64,
    /// The meta fields as the writer sees them: the page's, with the current operation's
    /// edits applied.
    pub meta: MetaFields,
    /// The meta page is formatted.
    pub meta_formatted: bool,
    /// What was freed but may still be read.
    pub quarantine: Quarantine,
    /// Free space of the catalog pages the writer placed entries in, by page number.
    pub catalog: super::catalog::CatalogCache,
    /// Where the next search for a free slot in a vector page starts, by page number.
    pub slot_hint: HashMap<u64, u32, super::state::FastHash>,
    /// The vector page this transaction formatted last while the vector list was empty, and
    /// its next slot: while that page heads the list, the slot a search would find (every slot
    /// from it on is free, none held), taken without reading the list or the page (see
    /// [`OpCtx::take_vector_slot`]). Cleared wherever `slot_hint` is, and at each begin.
    pub fill: Option<(PageId, u32)>,
    /// A vector page's slot owners as a free-slot search reads them (kept, not allocated per
    /// search: every insert makes one).
    pub owners: Vec<u8>,
    /// The last transaction's buffers, emptied, for the next.
    pub buffers: super::txn::TxnBuffers,
    /// Counts the operations built ([`super::txn::Transaction::op`]): what the leaf hint
    /// belongs to.
    pub op_seq: u64,
    /// The leaf the last descent of the running operation reached (see `store/tree.rs`).
    pub leaf_hint: super::tree::LeafHint,
}

impl WriterState {
    /// The state of a store whose meta page reads `meta` (`None`: not formatted yet).
    pub fn new(next_txn_id: u64, meta: Option<MetaFields>) -> WriterState {
        WriterState {
            next_txn_id,
            meta: meta.unwrap_or_default(),
            meta_formatted: meta.is_some(),
            quarantine: Quarantine::default(),
            catalog: Default::default(),
            slot_hint: HashMap::default(),
            fill: None,
            owners: Vec::new(),
            buffers: Default::default(),
            op_seq: 0,
            leaf_hint: Default::default(),
        }
    }
}

/// The three lists of the meta page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    /// Vector pages with a free slot.
    Vector,
    /// Catalog pages with freed space.
    Roomy,
    /// Free catalog-space pages.
    Free,
}

impl List {
    fn ends(self, meta: &MetaFields) -> index::ListEnds {
        match self {
            List::Vector => meta.vector_list,
            List::Roomy => meta.roomy_list,
            List::Free => meta.free_list,
        }
    }

    fn ends_mut(self, meta: &mut MetaFields) -> &mut index::ListEnds {
        match self {
            List::Vector => &mut meta.vector_list,
            List::Roomy => &mut meta.roomy_list,
            List::Free => &mut meta.free_list,
        }
    }
}

/// One operation being built: the store, the writer's state and the record's edits.
pub struct OpCtx<'a> {
    /// The store.
    pub inner: &'a Inner,
    /// The writer's state.
    pub w: &'a mut WriterState,
    /// The edits of the operation's record.
    pub list: &'a mut EditList,
    /// What the operation frees (quarantined at once, released for reuse after commit).
    pub freed: &'a mut Vec<Release>,
}

/// The meta page's id.
pub fn meta_page() -> PageId {
    PageId::new(Space::Catalog, META_PAGE_NO)
}

impl OpCtx<'_> {
    /// Frees `release` in this operation: quarantined now, reusable after commit and readers.
    pub fn free(&mut self, release: Release) {
        self.w.quarantine.hold(&release);
        self.freed.push(release);
    }

    /// Formats the meta page if the store has none yet (its first write).
    pub fn ensure_meta(&mut self) -> Result<()> {
        if self.w.meta_formatted {
            return Ok(());
        }
        self.inner.init_page(
            meta_page(),
            PageInit::Meta {
                a_unused: 0,
                b_unused: 0,
            },
        )?;
        self.w.meta_formatted = true;
        self.w.meta = MetaFields::default();
        self.set_meta(|m| m.catalog_pages = 1.into());
        Ok(())
    }

    /// Changes the meta fields by `change`, as an edit of the bytes that changed.
    pub fn set_meta(&mut self, change: impl FnOnce(&mut MetaFields)) {
        let before = self.w.meta;
        change(&mut self.w.meta);
        let (old, new) = (before.as_bytes(), self.w.meta.as_bytes());
        let Some(first) = old.iter().zip(new).position(|(a, b)| a != b) else {
            return;
        };
        let last = old.iter().zip(new).rposition(|(a, b)| a != b).expect("a change");
        // Whole 8-byte words, so edits stay aligned with the fields.
        let (start, end) = (first / 8 * 8, (last / 8 + 1) * 8);
        let meta = meta_page();
        self.list
            .push_change(&self.inner.arena, meta, META_FIELDS_OFFSET + start, &new[start..end]);
    }

    /// Header field `c` of `page` (a list link) as the record will leave it.
    pub fn link(&self, page: PageId) -> u64 {
        let mut raw = [0u8; 8];
        self.list.read(&self.inner.arena, page, PAGE_C_OFFSET, &mut raw);
        u64::from_le_bytes(raw)
    }

    fn set_link(&mut self, page: PageId, link: u64) {
        self.list
            .push_change(&self.inner.arena, page, PAGE_C_OFFSET, &link.to_le_bytes());
    }

    /// The page a list link or end names, checked to be a page of `space` below the extent.
    fn linked_page(&self, raw: u64, space: Space, what: &str) -> Result<PageId> {
        PageId::from_raw(raw)
            .filter(|p| p.space() == space && p.page_no() < self.inner.arena.page_count(space))
            .ok_or_else(|| {
                Error::corrupted_file(
                    "arena",
                    format!("the {what} list links to {raw:#x}, no page of the {} space", space.name()),
                )
            })
    }

    /// Appends `page` (on no list) to `list`.
    pub fn list_push(&mut self, list: List, page: PageId) -> Result<()> {
        if self.link(page) != 0 {
            return Err(Error::corrupted_file(
                "arena",
                format!("{page} is on a list already ({list:?} list push)"),
            ));
        }
        let tail = list.ends(&self.w.meta).tail.get();
        self.set_link(page, LIST_END);
        if tail == 0 {
            self.set_meta(|m| {
                let ends = list.ends_mut(m);
                ends.head = page.0.into();
                ends.tail = page.0.into();
            });
        } else {
            let tail = self.linked_page(tail, page.space(), "list tail")?;
            self.set_link(tail, page.0);
            self.set_meta(|m| list.ends_mut(m).tail = page.0.into());
        }
        Ok(())
    }

    /// The first `N` pages of `list` (fewer if it is shorter), in order.
    pub fn list_first<const N: usize>(&self, list: List, space: Space) -> Result<FirstPages<N>> {
        let mut first = FirstPages {
            pages: [PageId(0); N],
            len: 0,
        };
        let mut next = list.ends(&self.w.meta).head.get();
        while next != 0 && next != LIST_END && first.len < N {
            let page = self.linked_page(next, space, "list")?;
            first.pages[first.len] = page;
            first.len += 1;
            next = self.link(page);
        }
        Ok(first)
    }

    /// Takes `page` off `list`; `prev` is the page before it (`None`: it is the head).
    pub fn list_unlink(&mut self, list: List, prev: Option<PageId>, page: PageId) -> Result<()> {
        let next = self.link(page);
        if next == 0 {
            return Err(Error::corrupted_file("arena", format!("{page} is on no list ({list:?} unlink)")));
        }
        match prev {
            None => {
                assert_eq!(list.ends(&self.w.meta).head.get(), page.0, "unlinking the head");
                if next == LIST_END {
                    self.set_meta(|m| *list.ends_mut(m) = Default::default());
                } else {
                    self.set_meta(|m| list.ends_mut(m).head = next.into());
                }
            }
            Some(prev) => {
                self.set_link(prev, next);
                if next == LIST_END {
                    self.set_meta(|m| list.ends_mut(m).tail = prev.0.into());
                }
            }
        }
        self.set_link(page, 0);
        Ok(())
    }

    /// A catalog-space page for a new node or overflow page: a free page whose readers are
    /// gone, or a fresh one formatted by `init`. Returns it and whether it was reused (its
    /// header must then be rewritten with before-images; a fresh page is formatted already).
    pub fn take_catalog_page(&mut self, init: PageInit) -> Result<(PageId, bool)> {
        self.ensure_meta()?;
        if let Some(&head) = self.list_first::<1>(List::Free, Space::Catalog)?.first()
            && !self.w.quarantine.holds_page(head.page_no())
        {
            self.list_unlink(List::Free, None, head)?;
            return Ok((head, true));
        }
        let page_no = self.w.meta.catalog_pages.get().max(1);
        let page = PageId::new(Space::Catalog, page_no);
        self.inner.init_page(page, init)?;
        self.set_meta(|m| m.catalog_pages = (page_no + 1).into());
        Ok((page, false))
    }

    /// Frees catalog-space page `page` (no longer reachable): kind free, on the free list,
    /// quarantined.
    pub fn free_catalog_page(&mut self, page: PageId) -> Result<()> {
        self.list
            .push_change(&self.inner.arena, page, PAGE_KIND_OFFSET, &[PageKind::Free as u8]);
        // Field `c` meant something else to the page's last use (an overflow chain's link, a
        // branch's leftmost child): it is on no list.
        self.set_link(page, 0);
        self.list_push(List::Free, page)?;
        self.free(Release::Page(page.page_no()));
        Ok(())
    }

    /// Takes a free vector slot: from the first pages of the vector list, or a fresh page.
    pub fn take_vector_slot(&mut self, layout: &VectorLayout) -> Result<(PageId, u32)> {
        if let Some(taken) = self.take_fill_slot(layout)? {
            return Ok(taken);
        }
        self.ensure_meta()?;
        let candidates = self.list_first::<4>(List::Vector, Space::Vector)?;
        let mut prev = None;
        for &page in candidates.iter() {
            if let Some((slot, last)) = self.free_slot_in(page, layout)? {
                if last {
                    self.list_unlink(List::Vector, prev, page)?;
                }
                return Ok((page, slot));
            }
            prev = Some(page);
        }
        let page_no = self.w.meta.vector_pages.get();
        let page = PageId::new(Space::Vector, page_no);
        self.inner.init_page(
            page,
            PageInit::Vector {
                dimension: layout.dimension,
                stride_bytes: layout.stride_bytes as u32,
            },
        )?;
        self.set_meta(|m| m.vector_pages = (page_no + 1).into());
        if layout.slots_per_page > 1 {
            let list_was_empty = self.w.meta.vector_list.head.get() == 0;
            self.list_push(List::Vector, page)?;
            // A bulk insert fills page after page: with the page alone on the list, the next
            // searches would find its slots in order. (With an approximate index, a slot's
            // freedom also depends on the index: always search.)
            if list_was_empty && self.w.meta.graph.get() == 0 {
                self.w.fill = Some((page, 1));
            }
        }
        self.w.slot_hint.insert(page_no, 1);
        Ok((page, 0))
    }

    /// The next slot of the page being filled (`WriterState::fill`), if it still heads the
    /// vector list: the slot [`OpCtx::free_slot_in`] would choose, since the page was fresh
    /// when the fill began and its slots were taken in order since (the search starts at the
    /// hint, the slot after the last taken). Not the page's last slot.
    fn take_fill_slot(&mut self, layout: &VectorLayout) -> Result<Option<(PageId, u32)>> {
        let Some((page, slot)) = self.w.fill else {
            return Ok(None);
        };
        // The last slot is left to the search: whether the page leaves the list depends on
        // slots freed meanwhile (a row of this transaction replaced), which the fill does not
        // track.
        if self.w.meta.vector_list.head.get() != page.0 || slot + 1 >= layout.slots_per_page {
            self.w.fill = None;
            return Ok(None);
        }
        debug_assert_eq!(
            self.free_slot_in_uncached(page, layout)?.map(|(found, _)| found),
            Some(slot),
            "the fill takes the slot a search finds"
        );
        self.w.fill = Some((page, slot + 1));
        self.w.slot_hint.insert(page.page_no(), slot + 1);
        Ok(Some((page, slot)))
    }

    /// [`OpCtx::free_slot_in`] without moving the page's search hint (debug checks).
    fn free_slot_in_uncached(&mut self, page: PageId, layout: &VectorLayout) -> Result<Option<(u32, bool)>> {
        let hint = self.w.slot_hint.get(&page.page_no()).copied();
        let found = self.free_slot_in(page, layout);
        match hint {
            Some(hint) => self.w.slot_hint.insert(page.page_no(), hint),
            None => self.w.slot_hint.remove(&page.page_no()),
        };
        found
    }

    /// A free slot of vector page `page` that no reader can hold, and whether it was the page's
    /// last free slot (held ones included).
    fn free_slot_in(&mut self, page: PageId, layout: &VectorLayout) -> Result<Option<(u32, bool)>> {
        self.inner.arena.check_in_use(page)?;
        let n = layout.slots_per_page;
        let start = self.w.slot_hint.get(&page.page_no()).copied().unwrap_or(0) % n.max(1);
        let mut owners = std::mem::take(&mut self.w.owners);
        owners.clear();
        owners.resize(n as usize * crate::format::page::VECTOR_OWNER_BYTES, 0);
        self.list
            .read(&self.inner.arena, page, crate::format::page::VECTOR_OWNERS_OFFSET, &mut owners);
        let owner = |slot: u32| {
            let at = slot as usize * 8;
            u64::from_le_bytes(owners[at..at + 8].try_into().expect("8 bytes"))
        };
        // Hook (approximate index): a slot the index holds (a tombstone's, until a vacuum frees
        // it) is free but not reusable yet, as a quarantined one.
        let held = super::graph::held_vector_slots(self, page, n)?;
        let mut chosen = None;
        let mut other_free = false;
        for k in 0..n {
            let slot = (start + k) % n;
            if owner(slot) != 0 {
                continue;
            }
            let held = held.as_ref().is_some_and(|held| held[slot as usize]);
            if chosen.is_none() && !self.w.quarantine.holds_slot(page.page_no(), slot) && !held {
                chosen = Some(slot);
            } else {
                other_free = true;
                if chosen.is_some() {
                    break;
                }
            }
        }
        self.w.owners = owners;
        Ok(chosen.map(|slot| {
            self.w.slot_hint.insert(page.page_no(), slot + 1);
            (slot, !other_free)
        }))
    }

    /// Frees vector slot `slot` of `page`: its owner entry cleared, the page on the vector
    /// list, the slot quarantined.
    pub fn free_vector_slot(&mut self, page: PageId, slot: u32, layout: &VectorLayout) -> Result<()> {
        self.list
            .push_change(&self.inner.arena, page, layout.owner_offset(slot), &0u64.to_le_bytes());
        if self.link(page) == 0 {
            self.list_push(List::Vector, page)?;
        }
        self.free(Release::VectorSlot(page.page_no(), slot));
        Ok(())
    }
}

/// The first pages of a list ([`OpCtx::list_first`]), held in place: an insert looks at the
/// vector list's first pages for a free slot, and a vector of them was one allocation each.
pub struct FirstPages<const N: usize> {
    pages: [PageId; N],
    len: usize,
}

impl<const N: usize> std::ops::Deref for FirstPages<N> {
    type Target = [PageId];

    fn deref(&self) -> &[PageId] {
        &self.pages[..self.len]
    }
}
