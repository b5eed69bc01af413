//! `verify` checks the paged id index in full (issue 17): every class of damage a checksum
//! cannot see (the page is resealed after it is damaged, so only the index checks can catch
//! it) is reported as a failure of component `index` naming the damaged page, never a panic;
//! and a store after a random workload verifies clean, its index holding exactly the ids of
//! the model, in order.
//!
//! The damage is done to the page files of a closed store, as a buggy writer or a foreign tool
//! would leave them.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vellum::format::index::{LeafValue, MetaFields, Node, NodeKind, branch_cell, layout_node, leaf_cell};
use vellum::format::page::{self, LIST_END, PageHeader, PageId, PageKind, Space};
use vellum::inspect::{self, Report, Severity};
use vellum::{Error, Options, Store, SyncMode};
use zerocopy::{FromBytes, IntoBytes};

use support::{Rng, seed_from_env};

const PAGE_BYTES: usize = 4096;
const SEGMENT_BYTES: u64 = 1 << 20;
const DIMENSION: u32 = 8;
const IDS: u64 = 3000;

fn options() -> Options {
    Options {
        page_size_bytes: PAGE_BYTES as u32,
        segment_size_bytes: SEGMENT_BYTES,
        ..Options::default()
    }
}

fn id_of(n: u64) -> String {
    format!("id-{n:05}")
}

fn vector_of(n: u64, version: u64) -> Vec<f32> {
    (0..DIMENSION)
        .map(|c| (n * 7 + version) as f32 + c as f32 * 0.5)
        .collect()
}

/// Metadata of id `n`: every 97th long enough for an overflow chain.
fn meta_of(n: u64, version: u64) -> String {
    if n.is_multiple_of(97) {
        format!("{version}-{}", "L".repeat(5000))
    } else {
        format!("v{version}")
    }
}

/// Writes `IDS` ids in shuffled order (transactions of 250), upserts and deletes some at random,
/// then deletes a contiguous run of ids last (emptied leaves are freed: the free list holds
/// pages at the close). Returns the ids left.
fn build(dir: &Path) -> BTreeMap<String, u64> {
    let mut rng = Rng::new(0x17);
    let store = Store::create(dir, DIMENSION, options()).unwrap();
    let mut order: Vec<u64> = (0..IDS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut model = BTreeMap::new();
    for chunk in order.chunks(250) {
        let mut tx = store.begin().unwrap();
        for &n in chunk {
            tx.insert(&id_of(n), &vector_of(n, 0), &[("m", &meta_of(n, 0))])
                .unwrap();
            model.insert(id_of(n), 0);
        }
        tx.commit().unwrap();
    }
    for version in 1..=400 {
        let n = rng.below(IDS);
        if rng.below(2) == 0 {
            store
                .upsert(&id_of(n), &vector_of(n, version), &[("m", &meta_of(n, version))])
                .unwrap();
            model.insert(id_of(n), version);
        } else {
            store.delete(&id_of(n)).unwrap();
            model.remove(&id_of(n));
        }
    }
    let mut tx = store.begin().unwrap();
    for n in 1000..1400 {
        tx.delete(&id_of(n)).unwrap();
        model.remove(&id_of(n));
    }
    tx.commit().unwrap();
    store.close().unwrap();
    model
}

/// The closed store every damage case copies.
fn pristine() -> &'static Path {
    static STORE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, dir) = STORE.get_or_init(|| {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("store");
        build(&dir);
        (scratch, dir)
    });
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The arena pages of a closed store, read and written in its files (written pages resealed).
struct Pages {
    dir: PathBuf,
}

impl Pages {
    fn place(&self, id: PageId) -> (PathBuf, u64) {
        let per_file = SEGMENT_BYTES / PAGE_BYTES as u64;
        let name = format!("{}-{:08x}.pages", id.space().name(), id.page_no() / per_file);
        (
            self.dir.join("arena").join(name),
            id.page_no() % per_file * PAGE_BYTES as u64,
        )
    }

    fn read(&self, id: PageId) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let (path, offset) = self.place(id);
        let mut image = vec![0u8; PAGE_BYTES];
        std::fs::File::open(path)
            .unwrap()
            .read_exact_at(&mut image, offset)
            .unwrap();
        assert_eq!(page::check_page(&image, id), None, "{id} is sound before the damage");
        image
    }

    fn edit(&self, id: PageId, change: impl FnOnce(&mut Vec<u8>)) {
        use std::os::unix::fs::FileExt;
        let mut image = self.read(id);
        change(&mut image);
        page::seal(&mut image);
        let (path, offset) = self.place(id);
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&image, offset).unwrap();
    }

    fn header(&self, id: PageId) -> PageHeader {
        PageHeader::read_from_prefix(&self.read(id)).unwrap().0
    }

    fn meta(&self) -> MetaFields {
        MetaFields::read(&self.read(meta_page())).unwrap()
    }

    fn set_meta(&self, change: impl FnOnce(&mut MetaFields)) {
        self.edit(meta_page(), |image| {
            let mut meta = MetaFields::read(image).unwrap();
            change(&mut meta);
            image[64..64 + size_of::<MetaFields>()].copy_from_slice(meta.as_bytes());
        });
    }

    fn set_link(&self, id: PageId, link: u64) {
        self.edit(id, |image| image[32..40].copy_from_slice(&link.to_le_bytes()));
    }

    /// The members of the list whose head is `head`, in order.
    fn list(&self, head: u64) -> Vec<PageId> {
        let mut pages = Vec::new();
        let mut next = head;
        while next != 0 && next != LIST_END {
            let id = PageId::from_raw(next).unwrap();
            pages.push(id);
            next = self.header(id).c.get();
        }
        pages
    }

    /// The nodes of the tree in depth-first order: page, kind, cells (whole), leftmost child.
    fn nodes(&self) -> Vec<NodeCopy> {
        let mut out = Vec::new();
        let mut stack = vec![self.meta().root.get()];
        while let Some(raw) = stack.pop() {
            let id = PageId::from_raw(raw).unwrap();
            let image = self.read(id);
            let node = Node::parse(&image).unwrap();
            let cells: Vec<Vec<u8>> = (0..node.count).map(|i| node.cell(i).unwrap().to_vec()).collect();
            if node.kind == NodeKind::Branch {
                for j in (0..=node.count).rev() {
                    stack.push(node.child(j).unwrap());
                }
            }
            out.push(NodeCopy {
                id,
                kind: node.kind,
                cells,
                leftmost: node.leftmost,
            });
        }
        out
    }

    /// Rewrites node `node` to hold `cells` (laid out afresh).
    fn write_node(&self, node: &NodeCopy, cells: &[Vec<u8>]) {
        let cells: Vec<&[u8]> = cells.iter().map(Vec::as_slice).collect();
        let layout = layout_node(PAGE_BYTES, node.kind, &cells).unwrap();
        self.edit(node.id, |image| {
            image[24..28].copy_from_slice(&layout.count.to_le_bytes());
            image[28..32].copy_from_slice(&layout.data_start.to_le_bytes());
            image[48..64].copy_from_slice(&layout.prefix_field);
            image[64..].copy_from_slice(&layout.body);
        });
    }
}

struct NodeCopy {
    id: PageId,
    kind: NodeKind,
    cells: Vec<Vec<u8>>,
    leftmost: u64,
}

impl NodeCopy {
    fn key(&self, i: usize) -> &[u8] {
        let extra = match self.kind {
            NodeKind::Leaf => 24,
            NodeKind::Branch => 8,
        };
        &self.cells[i][2 + extra..]
    }

    fn value(&self, i: usize) -> LeafValue {
        LeafValue::read_from_bytes(&self.cells[i][2..26]).unwrap()
    }

    fn child(&self, j: usize) -> u64 {
        if j == 0 {
            return self.leftmost;
        }
        u64::from_le_bytes(self.cells[j - 1][2..10].try_into().unwrap())
    }
}

fn meta_page() -> PageId {
    PageId::new(Space::Catalog, 0)
}

/// A copy of the pristine store to damage.
fn damaged_copy() -> (tempfile::TempDir, Pages) {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    copy_tree(pristine(), &dir);
    (scratch, Pages { dir })
}

fn verify(pages: &Pages) -> Report {
    inspect::verify_store(&pages.dir, &()).unwrap()
}

/// True if `text` names `page` ("catalog page 7", not "catalog page 70").
fn names(text: &str, page: PageId) -> bool {
    let name = page.to_string();
    text.match_indices(&name)
        .any(|(at, _)| !text[at + name.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// The report fails, every failure is the index check's (the checksums are all valid), and one
/// failure says `what` about `page`: the problem's page (its file and number in the file), or
/// named in its words when `in_words`.
fn assert_reported(report: &Report, page: PageId, in_words: bool, what: &str, case: &str) {
    let failures: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Failure)
        .collect();
    let described: Vec<String> = failures.iter().map(|p| p.describe()).collect();
    assert!(!failures.is_empty(), "{case}: verify passes a damaged index");
    assert!(
        failures.iter().all(|p| p.component == "index"),
        "{case}: only the index checks can see this damage: {described:#?}"
    );
    let per_file = SEGMENT_BYTES / PAGE_BYTES as u64;
    let about = |p: &&&inspect::Problem| {
        let here = p.page == Some(page.page_no() % per_file)
            && p.file
                .as_deref()
                .is_some_and(|f| f.starts_with(&format!("arena/{}-", page.space().name())))
            && p.reason.starts_with(&format!("{page}: "));
        (here || (in_words && names(&p.reason, page))) && p.reason.contains(what)
    };
    assert!(
        failures.iter().any(|p| about(&p)),
        "{case}: no failure says {what:?} about {page}: {described:#?}"
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_clean_store_of_a_few_thousand_ids_verifies_clean_with_a_tree_of_height_two_or_more() {
    let pages = Pages {
        dir: pristine().to_path_buf(),
    };
    let report = verify(&pages);
    let described: Vec<String> = report.problems.iter().map(|p| p.describe()).collect();
    assert!(report.clean(), "the pristine store: {described:#?}");
    let index = report.index.clone().expect("verify checked the index");
    assert!(index.height >= 2, "the tree has branches: {index:?}");
    assert_eq!(index.entries, pages.meta().count.get());
    assert!(
        index.overflow_pages > 0 && index.free_pages > 0,
        "chains and free pages: {index:?}"
    );
    assert!(index.entries >= 2000 && index.owned_slots == index.entries, "{index:?}");
    let store = Store::open_read_only(&pages.dir, options()).unwrap();
    assert_eq!(
        store.recovery_report().records_redone,
        0,
        "a clean close: pages are the files'"
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn swapped_keys_in_a_leaf_are_reported_naming_the_leaf() {
    let (_scratch, pages) = damaged_copy();
    let leaf = pages
        .nodes()
        .into_iter()
        .find(|n| n.kind == NodeKind::Leaf && n.cells.len() >= 2)
        .unwrap();
    pages.edit(leaf.id, |image| {
        // Whole directory entries (offset and head): the keys, not the heads, are out of order.
        let (first, second) = (image[64..72].to_vec(), image[72..80].to_vec());
        image[64..72].copy_from_slice(&second);
        image[72..80].copy_from_slice(&first);
    });
    assert_reported(&verify(&pages), leaf.id, false, "out of order", "swapped keys");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_separator_its_left_subtree_reaches_is_reported_naming_its_branch() {
    let (_scratch, pages) = damaged_copy();
    let nodes = pages.nodes();
    let root = &nodes[0];
    assert_eq!(root.kind, NodeKind::Branch);
    // The largest key of the leftmost subtree: its rightmost leaf's last key.
    let mut page = root.leftmost;
    let largest = loop {
        let node = nodes.iter().find(|n| n.id.0 == page).unwrap();
        match node.kind {
            NodeKind::Branch => page = node.child(node.cells.len()),
            NodeKind::Leaf => break node.key(node.cells.len() - 1).to_vec(),
        }
    };
    let mut cells = root.cells.clone();
    cells[0] = branch_cell(&largest, root.child(1));
    pages.write_node(root, &cells);
    assert_reported(&verify(&pages), root.id, true, "separator", "broken separator");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_leaf_value_naming_another_vector_slot_is_reported_naming_the_leaf() {
    let (_scratch, pages) = damaged_copy();
    let leaf = pages.nodes().into_iter().find(|n| n.kind == NodeKind::Leaf).unwrap();
    let mut value = leaf.value(0);
    value.vector_slot = (value.vector_slot.get() ^ 1).into();
    let mut cells = leaf.cells.clone();
    cells[0] = leaf_cell(leaf.key(0), &value);
    pages.write_node(&leaf, &cells);
    assert_reported(
        &verify(&pages),
        leaf.id,
        false,
        "its entry (slot",
        "leaf value to a wrong slot",
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_zeroed_owner_entry_is_reported_naming_the_vector_page() {
    let (_scratch, pages) = damaged_copy();
    let leaf = pages.nodes().into_iter().find(|n| n.kind == NodeKind::Leaf).unwrap();
    let value = leaf.value(0);
    let vector = PageId::new(Space::Vector, u64::from(value.vector_page.get()));
    let at = 64 + 8 * value.vector_slot.get() as usize;
    pages.edit(vector, |image| image[at..at + 8].fill(0));
    assert_reported(&verify(&pages), vector, false, "names no owner", "zeroed owner entry");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_catalog_entry_no_leaf_reaches_is_reported_as_an_orphan_naming_its_page() {
    let (_scratch, pages) = damaged_copy();
    let leaf = pages
        .nodes()
        .into_iter()
        .find(|n| n.kind == NodeKind::Leaf && n.cells.len() >= 2)
        .unwrap();
    let catalog = PageId::new(Space::Catalog, u64::from(leaf.value(1).catalog_page.get()));
    let mut cells = leaf.cells.clone();
    cells.remove(1);
    pages.write_node(&leaf, &cells);
    let report = verify(&pages);
    assert_reported(&report, catalog, false, "orphan", "orphan catalog entry");
    assert_reported(
        &report,
        meta_page(),
        false,
        "counts",
        "the meta page's count is one too many",
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_cycle_in_the_free_or_vector_list_is_reported_naming_the_page_reached_twice() {
    for which in ["free", "vector"] {
        let (_scratch, pages) = damaged_copy();
        let meta = pages.meta();
        let ends = if which == "free" {
            meta.free_list
        } else {
            meta.vector_list
        };
        let members = pages.list(ends.head.get());
        assert!(!members.is_empty(), "the {which} list has members");
        pages.set_link(*members.last().unwrap(), members[0].0);
        assert_reported(
            &verify(&pages),
            members[0],
            false,
            "twice",
            &format!("cycle in the {which} list"),
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_list_tail_that_is_not_its_last_member_is_reported_naming_the_meta_page() {
    let (_scratch, pages) = damaged_copy();
    let members = pages.list(pages.meta().vector_list.head.get());
    assert!(members.len() >= 2, "the vector list has several members");
    pages.set_meta(|m| m.vector_list.tail = members[0].0.into());
    assert_reported(&verify(&pages), meta_page(), false, "tail field", "wrong tail");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_wrong_meta_count_is_reported_naming_the_meta_page() {
    let (_scratch, pages) = damaged_copy();
    pages.set_meta(|m| m.count = (m.count.get() + 1).into());
    assert_reported(&verify(&pages), meta_page(), false, "counts", "meta count");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_delete_under_a_meta_count_of_zero_is_corruption_and_changes_nothing() {
    let (_scratch, pages) = damaged_copy();
    pages.set_meta(|m| m.count = 0.into());
    let store = Store::open(&pages.dir, options()).unwrap();
    let first = store.ids(vellum::ListOptions::default()).next().unwrap().unwrap();
    let deleted = store.delete(&first);
    assert!(
        matches!(&deleted, Err(Error::Corrupted { reason, .. }) if reason.contains("counts none")),
        "the damaged count is damage, not an overflow: {deleted:?}"
    );
    assert!(store.get(&first).unwrap().is_some(), "the id is still there");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn an_insert_over_a_meta_count_that_cannot_grow_is_corruption_and_changes_nothing() {
    let (_scratch, pages) = damaged_copy();
    pages.set_meta(|m| m.count = u64::MAX.into());
    let store = Store::open(&pages.dir, options()).unwrap();
    let inserted = store.insert("one-more", &vector_of(1, 1), &[]);
    assert!(
        matches!(&inserted, Err(Error::Corrupted { reason, .. }) if reason.contains("count is damaged")),
        "the damaged count is damage, not an overflow: {inserted:?}"
    );
    assert!(store.get("one-more").unwrap().is_none(), "the id was not inserted");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_freed_page_still_linked_in_the_tree_is_reported_naming_it() {
    let (_scratch, pages) = damaged_copy();
    let leaf = pages.nodes().into_iter().find(|n| n.kind == NodeKind::Leaf).unwrap();
    // Freed as the writer frees a node (kind free, appended to the free list), but still linked.
    pages.edit(leaf.id, |image| image[4] = PageKind::Free as u8);
    let tail = PageId::from_raw(pages.meta().free_list.tail.get()).unwrap();
    pages.set_link(tail, leaf.id.0);
    pages.set_link(leaf.id, LIST_END);
    pages.set_meta(|m| m.free_list.tail = leaf.id.0.into());
    assert_reported(
        &verify(&pages),
        leaf.id,
        false,
        "a free page is linked in the index",
        "free page in the tree",
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_free_page_off_the_free_list_is_reported_as_leaked_naming_it() {
    let (_scratch, pages) = damaged_copy();
    let members = pages.list(pages.meta().free_list.head.get());
    let first = members[0];
    match members.get(1) {
        Some(second) => pages.set_meta(|m| m.free_list.head = second.0.into()),
        None => pages.set_meta(|m| m.free_list = Default::default()),
    }
    pages.set_link(first, 0);
    assert_reported(&verify(&pages), first, false, "leaked", "leaked free page");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_vector_page_with_free_slots_off_the_vector_list_is_reported_naming_it() {
    let (_scratch, pages) = damaged_copy();
    let members = pages.list(pages.meta().vector_list.head.get());
    assert!(members.len() >= 2, "the vector list has several members");
    pages.set_meta(|m| m.vector_list.head = members[1].0.into());
    pages.set_link(members[0], 0);
    assert_reported(
        &verify(&pages),
        members[0],
        false,
        "not on the vector list",
        "vector page off its list",
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_node_linked_twice_is_reported_naming_it() {
    let (_scratch, pages) = damaged_copy();
    let nodes = pages.nodes();
    let root = &nodes[0];
    let twice = PageId::from_raw(root.child(0)).unwrap();
    let mut cells = root.cells.clone();
    cells[0] = branch_cell(root.key(0), twice.0);
    pages.write_node(root, &cells);
    assert_reported(
        &verify(&pages),
        twice,
        false,
        "reached already as an index node",
        "node linked twice",
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn an_overflow_page_in_two_chains_is_reported_naming_it() {
    let (_scratch, pages) = damaged_copy();
    // Two entries with overflow chains: the second is pointed at the first's chain.
    let mut chains = Vec::new();
    for page_no in 1..pages.meta().catalog_pages.get() {
        let id = PageId::new(Space::Catalog, page_no);
        let image = pages.read(id);
        let Ok(entries) = page::decode_catalog_page(&image) else {
            continue;
        };
        for entry in entries.iter().filter(|e| e.inline_meta.is_none()) {
            chains.push((id, entry.offset as usize, entry.header.overflow_page.get()));
        }
    }
    assert!(chains.len() >= 2, "the store has several overflow chains");
    let (first, (catalog, offset, _)) = (chains[0].2, chains[1]);
    pages.edit(catalog, |image| {
        image[offset + 24..offset + 32].copy_from_slice(&first.to_le_bytes())
    });
    assert_reported(
        &verify(&pages),
        PageId::from_raw(first).unwrap(),
        false,
        "reached already as an overflow page",
        "shared overflow page",
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_leaf_value_beyond_the_vector_high_water_mark_is_reported_naming_the_leaf() {
    let (_scratch, pages) = damaged_copy();
    let last = pages.meta().vector_pages.get() - 1;
    pages.set_meta(|m| m.vector_pages = last.into());
    let leaf = pages
        .nodes()
        .into_iter()
        .find(|n| {
            n.kind == NodeKind::Leaf && (0..n.cells.len()).any(|i| u64::from(n.value(i).vector_page.get()) == last)
        })
        .expect("a leaf names the last vector page");
    let report = verify(&pages);
    assert_reported(&report, leaf.id, false, "high-water mark", "vector high-water mark");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn random_resealed_damage_to_index_pages_is_reported_never_a_panic() {
    let seed = seed_from_env("VELLUM_VERIFY_INDEX_DAMAGE_SEED", 0xda3a6e);
    let mut rng = Rng::new(seed);
    let (_scratch, pages) = damaged_copy();
    let meta = pages.meta();
    let nodes: Vec<PageId> = pages.nodes().iter().map(|n| n.id).collect();
    let vectors = meta.vector_pages.get();
    for round in 0..150 {
        // Mostly the meta page and the nodes; sometimes any page below a high-water mark.
        let page = match rng.below(4) {
            0 => meta_page(),
            1 => PageId::new(Space::Vector, rng.below(vectors)),
            2 => PageId::new(Space::Catalog, 1 + rng.below(meta.catalog_pages.get() - 1)),
            _ => nodes[rng.below(nodes.len() as u64) as usize],
        };
        let original = pages.read(page);
        pages.edit(page, |image| {
            for _ in 0..1 + rng.below(4) {
                // Not the checksum, kind, version, page id or store id: the checks of every page
                // see those. The rest only the index checks can see.
                let mut at = 16 + rng.below(PAGE_BYTES as u64 - 24) as usize;
                if at >= 40 {
                    at += 8;
                }
                image[at] = match rng.below(3) {
                    0 => image[at] ^ (1 << rng.below(8)),
                    1 => 0,
                    _ => rng.below(256) as u8,
                };
            }
        });
        let report = verify(&pages);
        let changed = pages.read(page) != original;
        let others: Vec<String> = report
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Failure && !matches!(p.component, "index" | "store"))
            .map(|p| p.describe())
            .collect();
        assert!(others.is_empty(), "seed {seed}, round {round}, {page}: {others:#?}");
        if changed && !report.clean() {
            assert!(
                report
                    .problems
                    .iter()
                    .all(|p| p.component != "index" || p.page.is_some() || p.reason.contains("not listed")),
                "seed {seed}, round {round}: every index finding names a page"
            );
        }
        pages.edit(page, |image| image.copy_from_slice(&original));
    }
    assert!(verify(&pages).clean(), "seed {seed}: the store is whole again");
}

/// One random workload step against the store and the model.
fn random_step(store: &Store, model: &mut BTreeMap<String, u64>, rng: &mut Rng, version: u64) {
    let id_count = 1 + rng.below(6);
    let mut tx = store.begin().unwrap();
    let mut scratch = model.clone();
    for _ in 0..id_count {
        // Ids of varied lengths, so separators and splits vary.
        let n = rng.below(1500);
        let id = format!("{}{n}", "k".repeat(rng.below(40) as usize));
        match rng.below(5) {
            0 | 1 => {
                tx.delete(&id).unwrap();
                scratch.remove(&id);
            }
            _ => {
                let meta = if rng.below(30) == 0 {
                    "L".repeat(3000)
                } else {
                    format!("v{version}")
                };
                tx.upsert(&id, &vector_of(n, version), &[("m", &meta)]).unwrap();
                scratch.insert(id, version);
            }
        }
    }
    if rng.below(8) == 0 {
        tx.abort().unwrap();
    } else {
        tx.commit().unwrap();
        *model = scratch;
    }
}

/// The ids the index of `store` holds, in order, after checking it is clean.
fn index_ids(store: &Store) -> Vec<String> {
    let mut ids = Vec::new();
    let check = inspect::index_report(store, &mut |id| ids.push(String::from_utf8(id.to_vec()).unwrap()));
    assert!(check.clean(), "{:#?}", check.damage);
    assert!(inspect::check_index(store).is_ok());
    ids
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_store_after_a_random_workload_verifies_clean_and_its_index_holds_the_models_ids_in_order() {
    let seed = seed_from_env("VELLUM_VERIFY_INDEX_SEED", 0x1d5);
    let mut rng = Rng::new(seed);
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let mut model = BTreeMap::new();
    // Commits are made durable by a sync before each drop (fsyncs per commit would be slow).
    let unsynced = || Options {
        sync: SyncMode::Never,
        ..options()
    };
    let mut store = Store::create(&dir, DIMENSION, unsynced()).unwrap();
    for round in 0..6u64 {
        for step in 0..300 {
            random_step(&store, &mut model, &mut rng, round * 1000 + step);
        }
        let ids = index_ids(&store);
        assert!(
            ids.iter().eq(model.keys()),
            "seed {seed}, round {round}: the index holds the model's ids in order"
        );
        if round % 2 == 0 {
            store.checkpoint().unwrap();
        }
        // A close, or a drop without one (the next open redoes the log since the checkpoint).
        if rng.below(2) == 0 {
            store.close().unwrap();
        } else {
            store.sync().unwrap();
            drop(store);
        }
        let report = inspect::verify_store(&dir, &()).unwrap();
        let described: Vec<String> = report.problems.iter().map(|p| p.describe()).collect();
        assert!(report.clean(), "seed {seed}, round {round}: {described:#?}");
        assert_eq!(
            report.index.as_ref().map(|i| i.entries),
            Some(model.len() as u64),
            "seed {seed}"
        );
        store = Store::open(&dir, unsynced()).unwrap();
        assert!(
            index_ids(&store).iter().eq(model.keys()),
            "seed {seed}, round {round}: after the reopen"
        );
    }
    store.close().unwrap();
}

/// Ids written in order, each in its own transaction, start leaves whose few keys share long
/// prefixes: every id that does not begin with a node's key prefix shortens it in place (its
/// directory heads rewritten in the same record), ids written below a node's first key too.
/// Every id stays found, before and after a reopen, the store verifies clean, and the nodes'
/// prefixes are the long ones such ids share.
#[test]
#[cfg_attr(miri, ignore = "real files")]
fn ids_outside_a_nodes_key_prefix_shorten_it_and_every_id_stays_found() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    let store = Store::create(&dir, DIMENSION, options()).unwrap();
    let mut ids: Vec<String> = (1..=1500u64).map(|n| format!("doc:{n:010}")).collect();
    ids.extend((1501..=2500u64).rev().map(|n| format!("doc:{n:010}")));
    ids.extend([
        "a".to_string(),
        "doc:".to_string(),
        "doc:9".to_string(),
        "zz".to_string(),
    ]);
    for (n, id) in ids.iter().enumerate() {
        store.insert(id, &vector_of(n as u64, 0), &[]).unwrap();
    }
    let check = |store: &Store, when: &str| {
        for (n, id) in ids.iter().enumerate() {
            let got = store
                .get(id)
                .unwrap()
                .unwrap_or_else(|| panic!("{when}: {id} is found"));
            assert_eq!(&*got, vector_of(n as u64, 0).as_slice(), "{when}: {id}");
        }
        assert!(
            store.get("doc:0000000000").unwrap().is_none(),
            "{when}: an id never written"
        );
        assert_eq!(store.len(), ids.len(), "{when}");
    };
    check(&store, "written");
    store.close().unwrap();
    let pages = Pages { dir: dir.clone() };
    let report = verify(&pages);
    let described: Vec<String> = report.problems.iter().map(|p| p.describe()).collect();
    assert!(report.clean(), "{described:#?}");
    let longest = pages
        .nodes()
        .iter()
        .map(|n| Node::parse(&pages.read(n.id)).unwrap().prefix.len())
        .max()
        .unwrap();
    assert!(
        longest >= 10,
        "leaves of ids \"doc:00000012..\" share their first 12 bytes: {longest}"
    );
    let store = Store::open(&dir, options()).unwrap();
    check(&store, "reopened");
}
