//! The `arena_page` target.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use zerocopy::{FromBytes, IntoBytes};

use super::{DIMENSION, PAGE, PAGE_BYTES, STORE_DIR, all_zero, meta_of, store_options, u32_at, vector_of};
use crate::format::index::{HEIGHT_MAX, META_FIELDS_OFFSET, MetaFields, Node, NodeKind, layout_node};
use crate::format::page::{self, PageHeader, PageId, PageKind, Space, VectorLayout};
use crate::inspect::{check_index, index_report};
use crate::storage::SimStorage;
use crate::testing::StoreImage;
use crate::{RecoveryMode, Store, SyncMode};

/// Ids the base store wrote: long enough that they fill several leaves (a tree of two levels).
const ARENA_BASE_IDS: u32 = 180;

fn arena_id(n: u32) -> String {
    format!("page-{n:03}-{}", "p".repeat(24))
}

/// Pages per arena file of the targets' stores (8-page segments).
const PAGES_PER_FILE: u64 = 8;

/// A closed store on a crashed (so bootable) disk, and its pages of each kind.
struct ArenaBase {
    disk: SimStorage,
    /// Pages of each kind (by kind byte), in page order.
    pages: Vec<Vec<PageId>>,
    /// Catalog-space pages in use.
    catalog_pages: u64,
    /// The ids it holds.
    ids: Vec<String>,
}

/// The base store: `ARENA_BASE_IDS` ids (every 40th with metadata in an overflow chain) and
/// then a run of them and a few others deleted, so that it has pages of every kind: the meta
/// page, leaves, a branch, catalog, overflow and free pages, vector pages with owners and free
/// slots; 4 KiB pages.
fn arena_base() -> &'static ArenaBase {
    static BASE: OnceLock<ArenaBase> = OnceLock::new();
    BASE.get_or_init(|| {
        let sim = SimStorage::new(7);
        let options = store_options(&sim, RecoveryMode::TolerateTornTail, SyncMode::Always);
        let store = Store::create(STORE_DIR, DIMENSION as u32, options).expect("creating the arena_page base store");
        let mut tx = store.begin().expect("begin");
        for n in 0..ARENA_BASE_IDS {
            let meta = meta_of(n, if n % 40 == 0 { 0x81 } else { 0 });
            tx.insert(&arena_id(n), &vector_of(n), &[("m", &meta)]).expect("insert");
        }
        tx.commit().expect("commit");
        let deleted: Vec<u32> = (60..110).chain([3, 17, 150]).collect();
        let mut tx = store.begin().expect("begin");
        for &n in &deleted {
            tx.delete(&arena_id(n)).expect("delete");
        }
        tx.commit().expect("commit");
        store.close().expect("closing the arena_page base store");
        let image = StoreImage::of(&sim, Path::new(STORE_DIR));
        let (pages, catalog_pages) = pages_by_kind(&image);
        // The approximate index's pages have their own target (`graph_page`), over a store
        // that has an index.
        let graph = [PageKind::GraphMeta, PageKind::GraphNodes, PageKind::GraphUpper];
        for kind in PageKind::ALL.iter().skip(1).filter(|k| !graph.contains(k)) {
            assert!(
                !pages[*kind as usize].is_empty(),
                "the arena_page base store has no {} page",
                kind.name()
            );
        }
        let ids = (0..ARENA_BASE_IDS)
            .filter(|n| !deleted.contains(n))
            .map(arena_id)
            .collect();
        ArenaBase {
            disk: image.boot_disk(),
            pages,
            catalog_pages,
            ids,
        }
    })
}

/// The file and offset of arena page `id` of the targets' stores.
fn page_place(id: PageId) -> (PathBuf, u64) {
    let file = crate::arena::arena_file_name(id.space(), id.page_no() / PAGES_PER_FILE);
    let path = Path::new(STORE_DIR).join("arena").join(file);
    (path, id.page_no() % PAGES_PER_FILE * PAGE as u64)
}

/// The pages of `image` by kind byte, and how many catalog-space pages there are.
fn pages_by_kind(image: &StoreImage) -> (Vec<Vec<PageId>>, u64) {
    let mut pages = vec![Vec::new(); PageKind::ALL.len()];
    let mut catalog_pages = 0;
    for space in [Space::Catalog, Space::Vector] {
        for page_no in 0.. {
            let (path, offset) = page_place(PageId::new(space, page_no));
            let Some(bytes) = image.files.get(&path) else { break };
            let Some(page) = bytes.get(offset as usize..offset as usize + PAGE_BYTES) else {
                break;
            };
            if let Some(kind) = PageKind::from_u8(page[page::PAGE_KIND_OFFSET])
                && !all_zero(page)
            {
                pages[kind as usize].push(PageId::new(space, page_no));
                if space == Space::Catalog {
                    catalog_pages = page_no + 1;
                }
            }
        }
    }
    (pages, catalog_pages)
}

/// **arena_page**: the input (zero-padded or cut to 4096 bytes) is one arena page.
///
/// Invariants of the page's own rules, for the page as given and sealed (checksum recomputed):
/// - `page::check_page` never panics, for catalog pages 0 and 1, vector pages 0 and 3 and the
///   id the header names; when it accepts a page that is not all zero, the checksum, the id,
///   the version and the kind-for-its-space rules hold;
/// - `page::decode_catalog_page` never panics; the entries it returns lie inside the entry
///   data without overlapping, with ids of 1 to 1024 bytes, no id twice, and inline metadata
///   of the length their header gives;
/// - `Node::parse` and every accessor of the node never panic; a node `Node::check` accepts
///   has its cells inside the cell data without overlapping, keys strictly increasing, no
///   child 0, finds each of its keys by `search` (and a branch routes it right), and
///   round-trips: its cells laid out afresh by `layout_node` parse to the same node;
/// - `MetaFields::check` never panics, and the fields it accepts keep its rules (kind meta,
///   root and height both or neither, no entries without a root, a height of at most
///   `HEIGHT_MAX`, list ends both or neither) and stay valid on a fresh meta page;
/// - every owner-table entry of a vector page decodes, and one naming a catalog page
///   round-trips through `encode_owner`.
///
/// Invariants of the page in a store: the page, given the id and the store id of a page of
/// the same kind in a closed store (the header's reserved byte 5 picks which; see
/// [`arena_base`]) and sealed, is written over that page. Then:
/// - an open (Strict) reads nothing but the meta page and the log (the index is read lazily):
///   it succeeds unless the page replaced the meta page, and then only if it is a valid meta
///   page;
/// - `inspect::index_report` and `check_index` never panic;
/// - when the index checks clean: `get` of every id the index holds returns it and of every
///   other id of the base store `None`, never an error; the length is the index's; a write
///   transaction and a checkpoint succeed and leave the index clean; the store closes and
///   reopens (Strict) with a clean index;
/// - in any case `get` of every id returns a vector of the store's dimension, `None` or an
///   error, and a write, a checkpoint and a close return `Ok` or an error.
pub fn arena_page(data: &[u8]) {
    let mut page = data[..data.len().min(PAGE_BYTES)].to_vec();
    page.resize(PAGE_BYTES, 0);
    check_page_rules(&page);
    let mut sealed = page.clone();
    page::seal(&mut sealed);
    if sealed != page {
        check_page_rules(&sealed);
    }
    check_in_store(&page);
}

/// The rules of the page itself, by every decoder that may read it.
fn check_page_rules(image: &[u8]) {
    let header = PageHeader::read_from_prefix(image).expect("a page holds a header").0;
    let mut ids = vec![
        PageId::new(Space::Catalog, 0),
        PageId::new(Space::Catalog, 1),
        PageId::new(Space::Vector, 0),
        PageId::new(Space::Vector, 3),
    ];
    ids.extend(PageId::from_raw(header.page_id.get()));
    for id in ids {
        if page::check_page(image, id).is_none() && !all_zero(image) {
            assert_eq!(
                page::page_crc(image),
                header.crc.get(),
                "check_page accepted a bad checksum"
            );
            assert_eq!(header.page_id.get(), id.0, "check_page accepted another page's id");
            assert_eq!(header.version_major.get(), crate::format::wal::FORMAT_VERSION_MAJOR);
        }
    }
    if let Ok(entries) = page::decode_catalog_page(image) {
        check_catalog_entries(&header, &entries);
    }
    check_node(image);
    check_meta(image, &header);
    check_owners(image, &header);
}

/// The rules [`page::decode_catalog_page`] promises for the entries it returns.
fn check_catalog_entries(header: &PageHeader, entries: &[page::CatalogEntry<'_>]) {
    let mut extents = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for entry in entries {
        assert!(entry.slot < header.a.get(), "an entry from beyond the directory");
        assert!(
            entry.offset >= header.b.get() && entry.offset as usize + entry.len_bytes as usize <= PAGE_BYTES,
            "an entry outside the entry data"
        );
        assert!(
            (1..=1024).contains(&entry.id.len()),
            "an id of {} bytes",
            entry.id.len()
        );
        assert!(ids.insert(entry.id), "id {:?} twice", entry.id);
        if let Some(meta) = entry.inline_meta {
            assert_eq!(
                meta.len(),
                entry.header.meta_len.get() as usize,
                "inline metadata length"
            );
            assert_eq!(
                page::ENTRY_HEADER_BYTES + entry.id.len() + meta.len(),
                entry.len_bytes as usize,
                "an inline entry with other bytes"
            );
        }
        extents.push((entry.offset, entry.offset + entry.len_bytes));
    }
    extents.sort_unstable();
    assert!(extents.windows(2).all(|w| w[0].1 <= w[1].0), "entries overlap");
}

/// An index node: accessors never panic; a checked node keeps what `Node::check` promises and
/// round-trips through `layout_node`.
fn check_node(image: &[u8]) {
    let Ok(node) = Node::parse(image) else { return };
    for i in 0..node.count {
        let _ = (node.key(i), node.cell(i), node.payload_offset(i));
        match node.kind {
            NodeKind::Leaf => drop(node.value(i)),
            NodeKind::Branch => drop(node.child(i + 1)),
        }
    }
    let _ = (node.used_bytes(), node.search(b"page-100"), node.gap_bytes());
    if node.kind == NodeKind::Branch {
        let _ = node.child_for(b"page-100");
    }
    if node.check().is_err() {
        return;
    }
    let cells: Vec<&[u8]> = (0..node.count)
        .map(|i| node.cell(i).expect("a checked node's cells read"))
        .collect();
    let mut extents: Vec<(usize, usize)> = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        let offset = node.cell_offset(i).expect("checked");
        assert!(
            offset >= node.data_start && offset + cell.len() <= PAGE_BYTES,
            "cell {i} outside the cell data"
        );
        extents.push((offset, offset + cell.len()));
        let key = node.key(i).expect("checked");
        assert!((1..=1024).contains(&key.len()), "a key of {} bytes", key.len());
        assert!(i == 0 || node.key(i - 1).expect("checked") < key, "keys out of order");
        assert_eq!(node.search(key), Ok(Ok(i)), "search does not find key {i}");
        if node.kind == NodeKind::Branch {
            let child = node.child(i + 1).expect("checked");
            assert_ne!(child, 0, "a checked branch with child 0");
            assert_eq!(node.child_for(key), Ok((i + 1, child)), "key {i} routed elsewhere");
        }
    }
    extents.sort_unstable();
    assert!(extents.windows(2).all(|w| w[0].1 <= w[1].0), "cells overlap");
    let layout = layout_node(PAGE_BYTES, node.kind, &cells).expect("a checked node's cells fit a page");
    let mut copy = image.to_vec();
    copy[page::PAGE_A_OFFSET..page::PAGE_A_OFFSET + 4].copy_from_slice(&layout.count.to_le_bytes());
    copy[page::PAGE_B_OFFSET..page::PAGE_B_OFFSET + 4].copy_from_slice(&layout.data_start.to_le_bytes());
    copy[page::PAGE_D_OFFSET..page::PAGE_HEADER_BYTES].copy_from_slice(&layout.prefix_field);
    copy[page::PAGE_HEADER_BYTES..].copy_from_slice(&layout.body);
    let again = Node::parse(&copy).expect("a node laid out afresh parses");
    assert_eq!(again.check(), Ok(()), "a node laid out afresh checks");
    assert_eq!(
        (again.kind, again.count, again.leftmost),
        (node.kind, node.count, node.leftmost)
    );
    for (i, cell) in cells.iter().enumerate() {
        assert_eq!(again.cell(i), Ok(*cell), "cell {i} changed in the round trip");
    }
    assert_eq!(again.used_bytes(), node.used_bytes());
}

/// The meta page's fields: the check never panics, and what it accepts keeps its rules and
/// stays valid on a fresh meta page.
fn check_meta(image: &[u8], header: &PageHeader) {
    let fields = MetaFields::read(image).expect("a page holds the meta fields");
    if fields.check(image).is_some() {
        return;
    }
    assert_eq!(
        header.kind,
        PageKind::Meta as u8,
        "the meta check accepted another kind"
    );
    assert_eq!(
        (fields.root.get() == 0),
        (fields.height.get() == 0),
        "root without height"
    );
    assert!(
        fields.root.get() != 0 || fields.count.get() == 0,
        "entries without a root"
    );
    assert!(fields.height.get() <= HEIGHT_MAX, "height {}", fields.height.get());
    for ends in [fields.vector_list, fields.roomy_list, fields.free_list] {
        assert_eq!(ends.head.get() == 0, ends.tail.get() == 0, "a list with one end");
    }
    let end = META_FIELDS_OFFSET + size_of::<MetaFields>();
    assert!(all_zero(&image[end..]), "bytes after the meta fields");
    let mut fresh = vec![0u8; PAGE_BYTES];
    let new = page::new_header(PageKind::Meta, PageId::new(Space::Catalog, 0), 0, 0);
    fresh[..page::PAGE_HEADER_BYTES].copy_from_slice(new.as_bytes());
    fresh[META_FIELDS_OFFSET..end].copy_from_slice(fields.as_bytes());
    assert_eq!(fields.check(&fresh), None, "valid fields on a fresh meta page");
    assert_eq!(MetaFields::read(&fresh), Some(fields), "the fields round-trip");
}

/// A vector page's owner table, for the page's own dimension and for the targets' stores'.
fn check_owners(image: &[u8], header: &PageHeader) {
    if header.kind != PageKind::Vector as u8 {
        return;
    }
    let dimension = header.a.get();
    let mut layouts = vec![VectorLayout::new(PAGE, DIMENSION as u32)];
    if (1..=page::vector_slots_max_dimension(PAGE)).contains(&dimension) {
        layouts.push(VectorLayout::new(PAGE, dimension));
    }
    for layout in layouts {
        for slot in 0..layout.slots_per_page {
            let at = layout.owner_offset(slot);
            assert!(
                layout.slot_offset(slot) + layout.stride_bytes <= PAGE_BYTES,
                "slot {slot} past the page"
            );
            let raw = u64::from_le_bytes(image[at..at + 8].try_into().expect("8 bytes"));
            match page::decode_owner(raw) {
                None => assert_eq!(raw, 0, "an owner decoded as none"),
                Some((0, _)) => {} // names the meta page: damage the index check reports
                Some((page_no, offset)) => assert_eq!(page::encode_owner(page_no, offset), raw, "owner round trip"),
            }
        }
    }
}

/// The page placed in the base store (see [`arena_page`]); returns whether its index checked
/// clean.
fn check_in_store(image: &[u8]) -> bool {
    let base = arena_base();
    let (target, placed) = place_page(base, image);
    let sim = base.disk.reboot_with_seed(7);
    let (path, offset) = page_place(target);
    sim.damage(&path, offset, &placed)
        .expect("the base store has the page's file");
    let is_meta = target == PageId::new(Space::Catalog, 0);
    let store = match Store::open(STORE_DIR, store_options(&sim, RecoveryMode::Strict, SyncMode::Always)) {
        Ok(store) => store,
        Err(e) => {
            assert!(is_meta, "the open read {target}, which is not the meta page: {e}");
            return false;
        }
    };
    if is_meta {
        let fields = MetaFields::read(&placed).expect("a page holds the meta fields");
        assert_eq!(
            fields.check(&placed),
            None,
            "the open accepted a meta page its check refuses"
        );
    }
    let mut visited = Vec::new();
    let check = index_report(&store, &mut |id| visited.push(id.to_vec()));
    let clean = check.clean();
    assert_eq!(
        clean,
        check_index(&store).is_ok(),
        "check_index disagrees with index_report"
    );
    let mut ids: Vec<String> = base.ids.clone();
    ids.extend(visited.iter().map(|id| String::from_utf8_lossy(id).into_owned()));
    ids.extend(catalog_page_ids(&placed));
    probe_all(&store, &ids, clean.then_some(&visited));
    if clean {
        assert_eq!(
            store.len() as u64,
            check.summary.entries,
            "len is not the index's count"
        );
    }
    check_writes_and_reopen(store, &sim, &ids, clean);
    clean
}

/// The page of the base store that `image` replaces (by its kind and its reserved byte, or its
/// page id for a kind the store has none of), and `image` made that page: its id, a zero
/// store id and byte 5, sealed.
fn place_page(base: &ArenaBase, image: &[u8]) -> (PageId, Vec<u8>) {
    let header = PageHeader::read_from_prefix(image).expect("a page holds a header").0;
    let target = match base.pages.get(usize::from(header.kind)).filter(|p| !p.is_empty()) {
        Some(pages) => pages[usize::from(header.reserved0) % pages.len()],
        None => PageId::new(Space::Catalog, header.page_id.get() % base.catalog_pages),
    };
    let mut placed = image.to_vec();
    placed[5] = 0;
    placed[page::PAGE_ID_OFFSET..page::PAGE_ID_OFFSET + 8].copy_from_slice(&target.0.to_le_bytes());
    placed[page::PAGE_STORE_ID_OFFSET..page::PAGE_STORE_ID_OFFSET + 8].fill(0);
    page::seal(&mut placed);
    (target, placed)
}

/// Writes to the store holding the placed page (an upsert, and a delete and upsert of one of
/// `ids`) and checkpoints; a store whose index checked `clean` must take them and stay
/// clean. Then `get` of every id, and, if the writes and a close succeeded, the same after
/// a reopen.
fn check_writes_and_reopen(store: Store, sim: &SimStorage, ids: &[String], clean: bool) {
    let written = (|| -> crate::Result<()> {
        let mut tx = store.begin()?;
        tx.upsert("fresh", &vector_of(9), &[("k", "fresh")])?;
        if let Some(id) = ids.iter().find(|id| !id.is_empty() && id.len() <= 1024) {
            tx.delete(id)?;
            tx.upsert(id, &vector_of(10), &[("m", &meta_of(10, 0x90))])?;
        }
        tx.commit()?;
        store.checkpoint()?;
        Ok(())
    })();
    if clean {
        if let Err(e) = &written {
            panic!("a write to a store whose index checks clean failed: {e}");
        }
        if let Err(e) = check_index(&store) {
            panic!("a write left a clean index damaged: {e}");
        }
    }
    probe_all(&store, ids, None);
    if written.is_ok() && store.close().is_ok() {
        match Store::open(STORE_DIR, store_options(sim, RecoveryMode::Strict, SyncMode::Always)) {
            Ok(store) => {
                if clean && let Err(e) = check_index(&store) {
                    panic!("a clean index is damaged after a close and an open: {e}");
                }
                probe_all(&store, ids, None);
            }
            Err(e) => panic!("a store that opened, took writes and closed cleanly does not reopen: {e}"),
        }
    }
}

/// `get` of every id: a vector of the store's dimension, `None` or an error, never a panic.
/// With `held` (the ids of an index that checks clean, in order), no error, and a vector for
/// exactly the ids it holds.
fn probe_all(store: &Store, ids: &[String], held: Option<&Vec<Vec<u8>>>) {
    for id in ids {
        let got = store.get(id);
        if let Ok(Some(vector)) = &got {
            assert_eq!(
                vector.len(),
                store.dimension(),
                "get returned a vector of another dimension"
            );
            let _ = vector.metadata().take(1024).count();
        }
        if let Some(held) = held {
            let expected = held.binary_search_by(|h| h.as_slice().cmp(id.as_bytes())).is_ok();
            match got {
                Ok(found) => assert_eq!(found.is_some(), expected, "get of {id:?} disagrees with a clean index"),
                Err(e) => panic!("get of {id:?} failed on a store whose index checks clean: {e}"),
            }
        }
    }
}

/// The ids of the entries of a catalog page (best effort, bounded; no validation implied).
fn catalog_page_ids(image: &[u8]) -> Vec<String> {
    let header = PageHeader::read_from_prefix(image).expect("a page holds a header").0;
    let slots = (header.a.get() as usize).min((PAGE_BYTES - page::CATALOG_SLOTS_OFFSET) / page::CATALOG_SLOT_BYTES);
    let mut ids = Vec::new();
    for slot in 0..slots.min(64) {
        let at = page::CATALOG_SLOTS_OFFSET + slot * page::CATALOG_SLOT_BYTES;
        let offset = u32_at(image, at) as usize;
        let len = u32_at(image, at + 4) as usize;
        let Some(entry) = image.get(offset..offset.saturating_add(len)) else {
            continue;
        };
        if entry.len() < page::ENTRY_HEADER_BYTES {
            continue;
        }
        let id_len = u16::from_le_bytes([entry[14], entry[15]]) as usize;
        if let Some(id) = entry.get(page::ENTRY_HEADER_BYTES..page::ENTRY_HEADER_BYTES + id_len)
            && let Ok(id) = std::str::from_utf8(id)
        {
            ids.push(id.to_string());
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Page `id` of the base store.
    fn base_page(id: PageId) -> Vec<u8> {
        let disk = arena_base().disk.reboot_with_seed(1);
        let (path, offset) = page_place(id);
        let file = disk.read_file(&path).expect("the base store's page file");
        file[offset as usize..offset as usize + PAGE_BYTES].to_vec()
    }

    #[test]
    #[cfg_attr(miri, ignore = "builds and opens whole stores: minutes under Miri")]
    fn every_page_of_the_base_store_placed_over_itself_leaves_a_clean_index() {
        let base = arena_base();
        for (kind, pages) in base.pages.iter().enumerate() {
            for (i, &id) in pages.iter().enumerate() {
                let mut image = base_page(id);
                image[5] = i as u8; // picks this page among those of its kind
                check_page_rules(&image);
                assert!(check_in_store(&image), "{id} (kind {kind}) placed over itself");
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "builds and opens whole stores: minutes under Miri")]
    fn a_leaf_with_two_keys_swapped_placed_in_the_store_is_damage_not_a_panic() {
        let base = arena_base();
        let mut image = base_page(base.pages[PageKind::IndexLeaf as usize][0]);
        let (first, second) = (image[64..68].to_vec(), image[68..72].to_vec());
        image[64..68].copy_from_slice(&second);
        image[68..72].copy_from_slice(&first);
        assert!(!check_in_store(&image), "the index check sees the swap");
    }
}
