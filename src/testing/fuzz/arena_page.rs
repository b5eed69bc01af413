//! The `arena_page` target.

use std::path::Path;
use std::sync::OnceLock;

use zerocopy::FromBytes;

use super::{DIMENSION, PAGE_BYTES, STORE_DIR, all_zero, meta_of, probe, store_options, u32_at, vector_of};
use crate::format::page::{self, PageId, Space};
use crate::storage::SimStorage;
use crate::testing::StoreImage;
use crate::{RecoveryMode, Store, SyncMode};

/// The ids the arena_page base store holds.
const ARENA_BASE_IDS: [&str; 3] = ["a", "b", "long"];

/// A closed store with three entries (one with metadata in an overflow chain), 4 KiB pages.
fn arena_base() -> &'static StoreImage {
    static BASE: OnceLock<StoreImage> = OnceLock::new();
    BASE.get_or_init(|| {
        let sim = SimStorage::new(7);
        let options = store_options(&sim, RecoveryMode::TolerateTornTail, SyncMode::Always);
        let store = Store::create(STORE_DIR, DIMENSION as u32, options).expect("creating the arena_page base store");
        store.insert("a", &vector_of(1), &[("k", "v1")]).expect("insert a");
        store.insert("b", &vector_of(2), &[]).expect("insert b");
        store
            .insert("long", &vector_of(3), &[("m", &meta_of(3, 0xff))])
            .expect("insert long");
        store.close().expect("closing the arena_page base store");
        StoreImage::of(&sim, Path::new(STORE_DIR))
    })
}

/// [`arena_base`] on a crashed (so bootable) disk: each input boots a copy of it with
/// [`SimStorage::reboot_with_seed`], much cheaper than writing the files again.
fn arena_base_disk() -> &'static SimStorage {
    static DISK: OnceLock<SimStorage> = OnceLock::new();
    DISK.get_or_init(|| arena_base().boot_disk())
}

/// **arena_page**: the input (zero-padded or cut to 4096 bytes) is one arena page.
///
/// Invariants:
/// - `page::check_page` never panics, for catalog pages 0 and 1, vector pages 0 and 3 and the
///   id the header names; when it accepts a page that is not all zero, the checksum, the id,
///   the version and the kind-for-its-space rules hold;
/// - `page::decode_catalog_page` never panics; the entries it returns lie inside the entry
///   data without overlapping, with ids of 1 to 1024 bytes, no id twice, and inline metadata
///   of the length their header gives;
/// - the same for the page sealed (checksum recomputed);
/// - when the page (as given or sealed) is a valid catalog page 0, written over catalog page 0
///   of a real closed store (4 KiB pages, in SimStorage): the store opens in Strict mode only
///   if `decode_catalog_page` accepts the page (when it is of kind catalog), and then holds
///   exactly the page's entries; when Strict refuses, SkipCorrupted opens it or returns an
///   error, never a panic; on the store that opened, `get` of every id the page names (and of
///   the store's own ids) returns a vector of the store's dimension, `None` or an error, and a
///   write transaction, a checkpoint and a close return `Ok` or an error; a store that opened
///   in Strict mode and closed cleanly reopens (Strict). (TolerateTornTail differs from Strict
///   only at a torn log tail, which this target leaves intact, so it is not opened.)
pub fn arena_page(data: &[u8]) {
    let mut page = data[..data.len().min(PAGE_BYTES)].to_vec();
    page.resize(PAGE_BYTES, 0);
    arena_page_variant(&page);
    let mut sealed = page.clone();
    page::seal(&mut sealed);
    if sealed != page {
        arena_page_variant(&sealed);
    }
}

fn arena_page_variant(image: &[u8]) {
    let header = page::PageHeader::read_from_prefix(image)
        .expect("a page holds a header")
        .0;
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
    let decoded = page::decode_catalog_page(image);
    if let Ok(entries) = &decoded {
        check_catalog_entries(&header, entries);
    }
    let catalog0 = PageId::new(Space::Catalog, 0);
    if page::check_page(image, catalog0).is_some() {
        return;
    }
    let catalog_path = Path::new(STORE_DIR)
        .join("arena")
        .join(crate::arena::arena_file_name(Space::Catalog, 0));
    let boot = || {
        let sim = arena_base_disk().reboot_with_seed(7);
        sim.damage(&catalog_path, 0, image)
            .expect("the base store has a catalog file");
        sim
    };
    let mut ids: Vec<String> = ARENA_BASE_IDS.iter().map(|s| s.to_string()).collect();
    match &decoded {
        Ok(entries) => ids.extend(entries.iter().map(|e| e.id.to_string())),
        Err(_) => ids.extend(catalog_page_ids(image)),
    }
    let is_catalog = header.kind == page::PageKind::Catalog as u8;
    let mut sim = boot();
    let (store, strict) = match Store::open(STORE_DIR, store_options(&sim, RecoveryMode::Strict, SyncMode::Always)) {
        Ok(store) => {
            if is_catalog {
                let entries = decoded.as_ref().unwrap_or_else(|reason| {
                    panic!("the store loaded a catalog page decode_catalog_page refuses: {reason}")
                });
                assert_eq!(
                    store.len(),
                    entries.len(),
                    "the store holds other entries than the page"
                );
                for entry in entries {
                    assert!(
                        matches!(store.get(entry.id), Ok(Some(_))),
                        "entry {:?} of the page is not in the store",
                        entry.id
                    );
                }
            }
            (store, true)
        }
        Err(_) => {
            sim = boot();
            match Store::open(
                STORE_DIR,
                store_options(&sim, RecoveryMode::SkipCorrupted, SyncMode::Always),
            ) {
                Ok(store) => (store, false),
                Err(_) => return,
            }
        }
    };
    for id in &ids {
        probe(&store, id);
    }
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
    for id in &ids {
        probe(&store, id);
    }
    if written.is_ok() && store.close().is_ok() {
        let mode = if strict {
            RecoveryMode::Strict
        } else {
            RecoveryMode::SkipCorrupted
        };
        match Store::open(STORE_DIR, store_options(&sim, mode, SyncMode::Always)) {
            Ok(store) => {
                for id in &ids {
                    probe(&store, id);
                }
            }
            Err(e) => assert!(
                !strict,
                "a store that accepted writes and closed cleanly does not reopen: {e}"
            ),
        }
    }
}

/// The rules [`page::decode_catalog_page`] promises for the entries it returns.
fn check_catalog_entries(header: &page::PageHeader, entries: &[page::CatalogEntry<'_>]) {
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

/// The ids the entries of a catalog page name (best effort, bounded; no validation implied).
fn catalog_page_ids(image: &[u8]) -> Vec<String> {
    let header = page::PageHeader::read_from_prefix(image)
        .expect("a page holds a header")
        .0;
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
