//! The `graph_page` target: one page of the approximate index (FORMAT.md 14.13).

use std::path::Path;
use std::sync::OnceLock;

use zerocopy::FromBytes;

use super::{DIMENSION, PAGE_BYTES, STORE_DIR, store_options, u32_at, vector_of};
use crate::format::graph::{self, GraphFields, GraphGeometry};
use crate::format::page::{self, PageId, Space};
use crate::storage::SimStorage;
use crate::testing::StoreImage;
use crate::{IndexOptions, Metric, RecoveryMode, SearchOptions, Store, SyncMode};

/// Vectors in the base store: `g0` … `g39`, `g0` … `g4` deleted (tombstones in the index).
const GRAPH_BASE_VECTORS: u32 = 40;

/// A closed store with an index (L2, M 4) over 35 vectors and 5 tombstones, 4 KiB pages.
fn graph_base() -> &'static StoreImage {
    static BASE: OnceLock<StoreImage> = OnceLock::new();
    BASE.get_or_init(|| {
        let sim = SimStorage::new(19);
        let options = store_options(&sim, RecoveryMode::TolerateTornTail, SyncMode::Always);
        let store = Store::create(STORE_DIR, DIMENSION as u32, options).expect("creating the graph_page base store");
        for n in 0..GRAPH_BASE_VECTORS {
            store.insert(&format!("g{n}"), &vector_of(n), &[]).expect("insert");
        }
        let index = IndexOptions {
            metric: Metric::L2,
            m: 4,
            ef_construction: 16,
        };
        store.create_index(index).expect("the base store's index");
        for n in 0..5 {
            store.delete(&format!("g{n}")).expect("delete");
        }
        store.close().expect("closing the graph_page base store");
        StoreImage::of(&sim, Path::new(STORE_DIR))
    })
}

fn graph_base_disk() -> &'static SimStorage {
    static DISK: OnceLock<SimStorage> = OnceLock::new();
    DISK.get_or_init(|| graph_base().boot_disk())
}

/// The base store's catalog file.
fn catalog_file() -> &'static [u8] {
    let path = Path::new(STORE_DIR)
        .join("arena")
        .join(crate::arena::arena_file_name(Space::Catalog, 0));
    &graph_base().files[&path]
}

/// The catalog page numbers of the base store's graph meta page, first node page and first
/// upper page.
fn graph_pages() -> [u64; 3] {
    static PAGES: OnceLock<[u64; 3]> = OnceLock::new();
    *PAGES.get_or_init(|| {
        let file = catalog_file();
        let meta = u32_at(file, 76) as usize;
        let at = meta * PAGE_BYTES;
        let nodes = u32_at(file, at + graph::node_extent_offset(0));
        let upper = u32_at(file, at + graph::upper_extent_offset(PAGE_BYTES, 0));
        [meta as u64, u64::from(nodes), u64::from(upper)]
    })
}

/// **graph_page**: the input (zero-padded or cut to 4096 bytes) is one page of the index.
///
/// Invariants:
/// - `GraphFields::check`, `decode_node_page` and `decode_upper_page` never panic, on the page
///   as given and sealed; what they accept keeps their promises (an M a 4 KiB page holds,
///   counts within the lists' capacities, levels of at most 15);
/// - the page, sealed with the id of the base store's graph meta page, first node page or
///   first upper page (the first input byte picks which), written over it in a real closed
///   store with an index (4 KiB pages, in SimStorage): an open (Strict) returns `Ok` or an
///   error, never panics; on the store that opened, a search through the index returns `Ok`
///   with `min(k, len)` results or `Err(Corrupted)`, `check_index` returns `Ok` or an error,
///   and an upsert, a delete, a vacuum, a drop of the index and a close each return `Ok` or an
///   error: damage in the index's pages is an error, never a panic or a wrong answer count.
pub fn graph_page(data: &[u8]) {
    let mut page = data[..data.len().min(PAGE_BYTES)].to_vec();
    page.resize(PAGE_BYTES, 0);
    decoders_keep_their_promises(&page);
    let mut sealed = page.clone();
    page::seal(&mut sealed);
    decoders_keep_their_promises(&sealed);
    let target = graph_pages()[usize::from(data.first().copied().unwrap_or(0) % 3)];
    let id = PageId::new(Space::Catalog, target);
    let mut placed = page;
    placed[page::PAGE_ID_OFFSET..page::PAGE_ID_OFFSET + 8].copy_from_slice(&id.0.to_le_bytes());
    page::seal(&mut placed);
    in_a_store(&placed, target);
}

fn decoders_keep_their_promises(image: &[u8]) {
    if let Some(fields) = GraphFields::read(image)
        && fields.check(image).is_none()
    {
        assert!(
            GraphGeometry::new(PAGE_BYTES as u32, usize::from(fields.m.get())).is_ok(),
            "an M the page cannot hold"
        );
        assert!(usize::from(fields.node_extents.get()) <= graph::extents_max(PAGE_BYTES));
    }
    if let Ok((m, records)) = graph::decode_node_page(image) {
        assert!(
            GraphGeometry::new(PAGE_BYTES as u32, m).is_ok(),
            "node records of an M the page cannot hold"
        );
        for record in records {
            assert!(record.neighbours.len() <= 2 * m && record.level <= graph::GRAPH_LEVEL_MAX);
        }
    }
    if let Ok((m, slots)) = graph::decode_upper_page(image) {
        assert!(
            GraphGeometry::new(PAGE_BYTES as u32, m).is_ok(),
            "upper slots of an M the page cannot hold"
        );
        assert!(slots.iter().all(|(_, _, ids)| ids.len() <= m));
    }
    let _ = page::PageHeader::read_from_prefix(image);
}

fn in_a_store(image: &[u8], page_no: u64) {
    let path = Path::new(STORE_DIR)
        .join("arena")
        .join(crate::arena::arena_file_name(Space::Catalog, 0));
    let sim = graph_base_disk().reboot_with_seed(19);
    sim.damage(&path, page_no * PAGE_BYTES as u64, image)
        .expect("the base store has a catalog file");
    let Ok(store) = Store::open(STORE_DIR, store_options(&sim, RecoveryMode::Strict, SyncMode::Always)) else {
        return;
    };
    let options = SearchOptions {
        metric: Metric::L2,
        ef: Some(16),
        ..SearchOptions::default()
    };
    for n in [0, 7, 20, 39] {
        match store.search_with(&vector_of(n), 5, &options) {
            Ok(hits) => assert_eq!(
                hits.len(),
                5.min(store.len()),
                "a search returned fewer than min(k, len)"
            ),
            Err(e) => assert!(matches!(e, crate::Error::Corrupted { .. }), "a search failed with {e}"),
        }
    }
    let _ = store.check_index();
    let _ = store.upsert("g9", &vector_of(99), &[]);
    let _ = store.delete("g20");
    let _ = store.vacuum_index();
    let _ = store.drop_index();
    let _ = store.close();
}

/// Seeds of the target: the base store's own graph meta, node and upper pages.
pub fn graph_page_seeds() -> Vec<(String, Vec<u8>)> {
    let file = catalog_file();
    ["meta", "nodes", "upper"]
        .iter()
        .zip(graph_pages())
        .map(|(name, page_no)| {
            let at = page_no as usize * PAGE_BYTES;
            (format!("store-{name}"), file[at..at + PAGE_BYTES].to_vec())
        })
        .collect()
}
