//! The generator of the golden vectors of the on-disk format (`format-spec/vectors/`,
//! described in its README.md), `regenerate_golden_vectors` (ignored): it builds every vector
//! deterministically (fixed store id, timestamps and seeds) and writes `<name>.bin` and
//! `<name>.json`, each checked against what the engine decodes (`tests/support/golden.rs`).
//! Run it with `cargo test --release --test golden -- --ignored` and review the diff.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use support::golden::{
    DIMENSION, PAGE, SEGMENT, STORE_ID, T0, control_json, decode_vector, encode_record, hex64, metadata_json,
    payload_json, vectors_dir,
};
use vellum::archive::{self, ArchiveHeader, BlockHeader, KIND_BASE_IMAGE, KIND_WAL_SEGMENT};
use vellum::format::control::{ArenaExtent, Control};
use vellum::format::index::{self, LeafValue, ListEnds, MetaFields};
use vellum::format::meta;
use vellum::format::page::{self, CatalogSlot, EntryHeader, LIST_END, PageId, PageKind, Space, VectorLayout};
use vellum::format::record::{self, Checkpoint, DirtyPage, Edit, EditKind, Op, TxnEntry};
use vellum::format::wal::{PageHeader as WalPageHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SegmentHeader};
use vellum::storage::{SimStorage, Storage};
use vellum::wal::segment::segment_file_name;
use vellum::wal::{Geometry, LogIdentity, RecordSpec, Wal, WalConfig};
use vellum::{Lsn, SyncMode};

struct Writer {
    dir: PathBuf,
    names: Vec<String>,
}

impl Writer {
    /// Writes `<name>.bin` and `<name>.json`; the expectation is what the engine decodes,
    /// checked against `expect` (the generator's own view: `Ok(decoded)` or `Err(error kind)`).
    fn put(
        &mut self,
        name: &str,
        description: &str,
        structure: &str,
        input: Value,
        bin: &[u8],
        expect: Result<Option<Value>, &str>,
    ) {
        assert!(!self.names.iter().any(|n| n == name), "duplicate vector {name}");
        let mut meta = json!({ "structure": structure, "description": description, "input": input });
        let outcome = decode_vector(&meta, bin);
        match (&expect, outcome.get("decoded")) {
            (Ok(Some(want)), Some(got)) => assert_eq!(got, want, "{name}: the engine decodes what was built"),
            (Ok(None), Some(_)) => {}
            (Err(kind), None) => assert_eq!(outcome["error"], json!(kind), "{name}: {outcome}"),
            _ => panic!("{name}: expected {expect:?}, the engine says {outcome}"),
        }
        let Value::Object(map) = &mut meta else { unreachable!() };
        let Value::Object(result) = outcome else { unreachable!() };
        map.extend(result);
        std::fs::write(self.dir.join(format!("{name}.bin")), bin).unwrap();
        std::fs::write(
            self.dir.join(format!("{name}.json")),
            serde_json::to_string_pretty(&meta).unwrap() + "\n",
        )
        .unwrap();
        self.names.push(name.to_string());
    }
}

fn catalog_id(n: u64) -> PageId {
    PageId::new(Space::Catalog, n)
}

fn vector_id(n: u64) -> PageId {
    PageId::new(Space::Vector, n)
}

fn floats(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn payload_input(kind: u8) -> Value {
    json!({ "kind": kind, "lsn": 4128, "page_size": PAGE })
}

fn log_input(first_segment: u64, timeline: u32, mode: &str) -> Value {
    json!({
        "first_segment": first_segment,
        "page_size": PAGE,
        "segment_size": SEGMENT,
        "store_id": hex64(STORE_ID),
        "timeline": timeline,
        "mode": mode,
    })
}

/// The arena every vector shares: a small store of format 2 (dimension 4, 4 KiB pages) that
/// holds "alpha" (its metadata in an overflow chain), "beta" and "gamma", and deleted "delta".
/// The index is two leaves under a branch; a leaf freed by the split that made them is on the
/// free list, and the vector page, with a free slot, on the vector list.
struct Arena {
    /// Catalog page 0.
    meta: Vec<u8>,
    /// Catalog page 1: the entries (the hot page).
    catalog: Vec<u8>,
    /// Catalog page 2: the metadata of "alpha".
    overflow: Vec<u8>,
    /// Catalog page 3: the leaf of "alpha".
    leaf_left: Vec<u8>,
    /// Catalog page 4: the root, a branch.
    branch: Vec<u8>,
    /// Catalog page 5: the leaf of "beta" and "gamma".
    leaf_right: Vec<u8>,
    /// Catalog page 6: a free page (the leaf of "alpha" and "beta" before the split).
    free: Vec<u8>,
    /// Vector page 0.
    vector: Vec<u8>,
    /// The metadata of "alpha".
    metadata: Vec<u8>,
    /// Where each id's entry lies in catalog page 1 (offset, length), in slot order
    /// ("alpha", "beta", "gamma", "delta").
    entries: Vec<(u32, u32)>,
}

impl Arena {
    /// Every page with its id, catalog space first.
    fn pages(&self) -> Vec<(PageId, &[u8])> {
        let catalog = [
            &self.meta,
            &self.catalog,
            &self.overflow,
            &self.leaf_left,
            &self.branch,
            &self.leaf_right,
            &self.free,
        ];
        let mut pages: Vec<(PageId, &[u8])> = catalog
            .iter()
            .enumerate()
            .map(|(n, p)| (catalog_id(n as u64), p.as_slice()))
            .collect();
        pages.push((vector_id(0), &self.vector));
        pages
    }

    /// The leaf value of the id whose entry is in slot `slot` of catalog page 1 (its vector in
    /// slot `slot` of vector page 0).
    fn value(&self, slot: u32) -> LeafValue {
        let (offset, len) = self.entries[slot as usize];
        LeafValue {
            vector_page: U32::new(0),
            vector_slot: U32::new(slot),
            catalog_page: U32::new(1),
            catalog_slot: U32::new(slot),
            entry_offset: U32::new(offset),
            entry_len: U32::new(len),
        }
    }
}

/// A sealed page of `kind` at `id`: header fields `a`, `b`, `c`, page LSN `lsn`, this store's id,
/// and `body` (from byte 64 on) laid out by `fill`.
fn sealed(kind: PageKind, id: PageId, (a, b, c): (u32, u32, u64), lsn: u64, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut page = vec![0u8; PAGE as usize];
    let mut header = page::new_header(kind, id, a, b);
    header.c = U64::new(c);
    header.page_lsn = U64::new(lsn);
    header.store_id = U64::new(STORE_ID);
    page[..64].copy_from_slice(header.as_bytes());
    fill(&mut page);
    page::seal(&mut page);
    page
}

/// A node page of `kind` holding `cells` (in key order); `c` is a branch's leftmost child.
fn node_page(kind: PageKind, id: PageId, c: u64, lsn: u64, cells: &[Vec<u8>]) -> Vec<u8> {
    let node_kind = if kind == PageKind::IndexLeaf {
        index::NodeKind::Leaf
    } else {
        index::NodeKind::Branch
    };
    let cells: Vec<&[u8]> = cells.iter().map(Vec::as_slice).collect();
    let layout = index::layout_node(PAGE as usize, node_kind, &cells).expect("cells fit");
    sealed(kind, id, (layout.count, layout.data_start, c), lsn, |p| {
        p[48..64].copy_from_slice(&layout.prefix_field);
        p[64..].copy_from_slice(&layout.body);
    })
}

/// A catalog entry's bytes: its header (vector slot `slot` of vector page 0), id and inline
/// metadata, or (`overflow`) the first page of its chain and `meta_len`.
fn entry_bytes(id: &str, slot: u32, inline: Option<&[u8]>, overflow: Option<(PageId, usize)>) -> Vec<u8> {
    let mut e = EntryHeader::new_zeroed();
    e.vector_page = U64::new(vector_id(0).0);
    e.vector_slot = U32::new(slot);
    e.id_len = U16::new(id.len() as u16);
    if let Some((first, meta_len)) = overflow {
        e.flags = U16::new(page::ENTRY_FLAG_OVERFLOW);
        e.meta_len = U32::new(meta_len as u32);
        e.overflow_page = U64::new(first.0);
    } else {
        e.meta_len = U32::new(inline.map_or(0, <[u8]>::len) as u32);
    }
    let mut v = e.as_bytes().to_vec();
    v.extend_from_slice(id.as_bytes());
    v.extend_from_slice(inline.unwrap_or(&[]));
    v
}

fn arena_pages() -> Arena {
    let p = PAGE as usize;
    let layout = VectorLayout::new(PAGE, DIMENSION);
    let mut metadata = Vec::new();
    meta::encode(&[("lang", "en"), ("source", "golden")], &mut metadata);
    let overflow = sealed(
        PageKind::Overflow,
        catalog_id(2),
        (metadata.len() as u32, 0, 0),
        4240,
        |pg| pg[64..64 + metadata.len()].copy_from_slice(&metadata),
    );
    // Catalog page 1: four entries packed down from the end; "delta" was deleted (its slot is
    // free, its bytes stay).
    let mut inline = Vec::new();
    meta::encode(&[("k", "v")], &mut inline);
    let ids = ["alpha", "beta", "gamma", "delta"];
    let bytes: Vec<Vec<u8>> = ids
        .iter()
        .enumerate()
        .map(|(slot, id)| match slot {
            0 => entry_bytes(id, 0, None, Some((catalog_id(2), metadata.len()))),
            _ => entry_bytes(id, slot as u32, Some(&inline), None),
        })
        .collect();
    let mut entries = Vec::new();
    let mut at = p;
    for e in &bytes {
        at -= e.len();
        entries.push((at as u32, e.len() as u32));
    }
    let catalog = sealed(PageKind::Catalog, catalog_id(1), (4, at as u32, 0), 4296, |pg| {
        for (slot, (e, &(offset, len))) in bytes.iter().zip(&entries).enumerate() {
            pg[offset as usize..offset as usize + e.len()].copy_from_slice(e);
            if slot < 3 {
                let dir = CatalogSlot {
                    offset: U32::new(offset),
                    len_bytes: U32::new(len),
                };
                pg[64 + 8 * slot..72 + 8 * slot].copy_from_slice(dir.as_bytes());
            }
        }
    });
    // Vector page 0: slots 0-2 owned; slot 3 free but still holding "delta"'s vector.
    let vectors = [
        [0.5, -1.0, 2.25, 0.0],
        [1.0, 2.0, 3.0, 4.0],
        [-0.125, 8.0, 0.0, 1e-3],
        [7.0, 7.0, 7.0, 7.0],
    ];
    let vector = sealed(PageKind::Vector, vector_id(0), (DIMENSION, 16, LIST_END), 4296, |pg| {
        for (slot, v) in vectors.iter().enumerate() {
            let at = layout.slot_offset(slot as u32);
            pg[at..at + 16].copy_from_slice(&floats(v));
            if slot < 3 {
                let owner = page::encode_owner(1, entries[slot].0);
                let at = layout.owner_offset(slot as u32);
                pg[at..at + 8].copy_from_slice(&owner.to_le_bytes());
            }
        }
    });
    let mut arena = Arena {
        meta: Vec::new(),
        catalog,
        overflow,
        leaf_left: Vec::new(),
        branch: Vec::new(),
        leaf_right: Vec::new(),
        free: Vec::new(),
        vector,
        metadata,
        entries,
    };
    let cell = |slot: u32| index::leaf_cell(ids[slot as usize].as_bytes(), &arena.value(slot));
    let (alpha, beta, gamma) = (cell(0), cell(1), cell(2));
    let leaf = PageKind::IndexLeaf;
    arena.leaf_left = node_page(leaf, catalog_id(3), 0, 4352, std::slice::from_ref(&alpha));
    arena.leaf_right = node_page(leaf, catalog_id(5), 0, 4352, &[beta.clone(), gamma]);
    let separator = index::separator(b"alpha", b"beta");
    let cells = [index::branch_cell(&separator, catalog_id(5).0)];
    arena.branch = node_page(PageKind::IndexBranch, catalog_id(4), catalog_id(3).0, 4352, &cells);
    // The freed leaf keeps its old cells, a and b; only its kind and c changed.
    let mut free = node_page(leaf, catalog_id(6), 0, 4352, &[alpha, beta]);
    free[4] = PageKind::Free as u8;
    free[32..40].copy_from_slice(&LIST_END.to_le_bytes());
    page::seal(&mut free);
    arena.free = free;
    let fields = MetaFields {
        root: U64::new(catalog_id(4).0),
        height: U32::new(2),
        graph: U32::ZERO,
        count: U64::new(3),
        vector_pages: U64::new(1),
        catalog_pages: U64::new(7),
        hot_catalog: U64::new(catalog_id(1).0),
        vector_list: ListEnds {
            head: U64::new(vector_id(0).0),
            tail: U64::new(vector_id(0).0),
        },
        roomy_list: ListEnds::default(),
        free_list: ListEnds {
            head: U64::new(catalog_id(6).0),
            tail: U64::new(catalog_id(6).0),
        },
    };
    arena.meta = sealed(PageKind::Meta, catalog_id(0), (0, 0, 0), 4352, |pg| {
        pg[64..64 + fields.as_bytes().len()].copy_from_slice(fields.as_bytes())
    });
    arena
}

/// Writes a log with the engine (`Wal::create_at` on `SimStorage`) and returns the bytes of
/// its segment files up to the one holding its end, and each record's (LSN, end). Segment
/// header times are fixed afterwards (the only time the engine chooses itself).
fn engine_log(first_segment: u64, timeline: u32, records: &[(RecordSpec, Vec<u8>)]) -> (Vec<u8>, Vec<(u64, u64)>) {
    engine_log_synced(first_segment, timeline, records, &[])
}

/// `engine_log`, making the log durable after each record whose index is in `sync_after` (so
/// that later records carry a `durable_lsn` past it).
fn engine_log_synced(
    first_segment: u64,
    timeline: u32,
    records: &[(RecordSpec, Vec<u8>)],
    sync_after: &[usize],
) -> (Vec<u8>, Vec<(u64, u64)>) {
    let sim = SimStorage::new(7);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let dir = Path::new("/golden/wal");
    let geometry = Geometry::new(PAGE, SEGMENT).unwrap();
    let mut config = WalConfig::new(
        geometry,
        LogIdentity {
            store_id: STORE_ID,
            timeline,
        },
        SyncMode::Never,
    );
    config.background = false;
    let wal = Wal::create_at(storage, dir, config, first_segment).unwrap();
    let mut placed = Vec::new();
    let mut last_of_txn = std::collections::HashMap::new();
    for (spec, payload) in records {
        let mut spec = *spec;
        if spec.txn_id != 0 {
            spec.prev_lsn = last_of_txn.get(&spec.txn_id).copied().unwrap_or(0);
        }
        let (lsn, end) = wal.append_with_end(&spec, &[payload]).unwrap();
        if spec.txn_id != 0 {
            last_of_txn.insert(spec.txn_id, lsn.0);
        }
        if sync_after.contains(&placed.len()) {
            wal.sync().unwrap();
        }
        placed.push((lsn.0, end));
    }
    wal.sync().unwrap();
    let end = placed.last().map_or(first_segment * SEGMENT, |p| p.1);
    wal.close().unwrap();
    let mut bytes = Vec::new();
    for segment_no in first_segment..=end / SEGMENT {
        let mut file = sim.read_file(&dir.join(segment_file_name(segment_no))).unwrap();
        assert_eq!(file.len() as u64, SEGMENT);
        if !file[..SEGMENT_HEADER_BYTES].iter().all(|&b| b == 0) {
            file[56..64].copy_from_slice(&T0.to_le_bytes());
            let crc = crc32c::crc32c(&file[..SEGMENT_HEADER_BYTES - 4]);
            file[SEGMENT_HEADER_BYTES - 4..SEGMENT_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        }
        bytes.extend_from_slice(&file);
    }
    (bytes, placed)
}

fn spec(kind: record::Kind, txn_id: u64, offset_us: u64) -> RecordSpec {
    RecordSpec {
        kind: kind as u8,
        flags: 0,
        txn_id,
        prev_lsn: 0,
        timestamp_us: T0 + offset_us,
    }
}

#[test]
#[ignore = "writes format-spec/vectors/; run on purpose and review the diff"]
fn regenerate_golden_vectors() {
    use record::Kind;
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if matches!(path.extension().and_then(|e| e.to_str()), Some("bin" | "json")) {
            std::fs::remove_file(path).unwrap();
        }
    }
    let mut w = Writer {
        dir: dir.clone(),
        names: Vec::new(),
    };
    let arena = arena_pages();
    let (cat0, cat1, vec0) = (catalog_id(0), catalog_id(1), vector_id(0));
    let slot0 = VectorLayout::new(PAGE, DIMENSION).slot_offset(0) as u32;

    // ---- Record payloads (section 15).
    let vector_bytes = floats(&[0.5, -1.0, 2.25, 0.0]);
    let slot_after = [0xd8u8, 0x0f, 0, 0, 0x2d, 0, 0, 0];
    let insert_edits = [
        Edit {
            page: vec0,
            offset: slot0,
            after: &vector_bytes,
            before: None,
            kind: EditKind::Write,
        },
        Edit {
            page: cat1,
            offset: 4051,
            after: b"alpha-entry-bytes",
            before: None,
            kind: EditKind::Write,
        },
        Edit {
            page: cat1,
            offset: 64,
            after: &slot_after,
            before: Some(&[0u8; 8]),
            kind: EditKind::Write,
        },
    ];
    let update = record::encode_update(Op::Insert, "alpha", &insert_edits[..2]);
    w.put(
        "payload-update-no-before",
        "update (insert) whose edits carry no before-images",
        "record-payload",
        payload_input(1),
        &update,
        Ok(None),
    );
    let update_mixed = record::encode_update(Op::Insert, "alpha", &insert_edits);
    w.put(
        "payload-update-before",
        "update (insert): two edits without and one with a before-image",
        "record-payload",
        payload_input(1),
        &update_mixed,
        Ok(None),
    );
    let delete = record::encode_update(
        Op::Delete,
        "alpha",
        &[Edit {
            page: cat1,
            offset: 64,
            after: &[0u8; 8],
            before: Some(&slot_after),
            kind: EditKind::Write,
        }],
    );
    w.put(
        "payload-update-delete",
        "update (delete): the slot zeroed, with its before-image",
        "record-payload",
        payload_input(1),
        &delete,
        Ok(None),
    );
    // A batch whose vector is a stored write (FORMAT.md 15, 16.5): 16 bytes at slot 0 of vector
    // page 0, with no image, beside a write of its owner entry.
    let stored_edits = [
        Edit {
            page: vec0,
            offset: 128,
            after: &[],
            before: None,
            kind: EditKind::Stored { len: 16 },
        },
        Edit {
            page: vec0,
            offset: 64,
            after: &slot_after,
            before: Some(&[0u8; 8]),
            kind: EditKind::Write,
        },
    ];
    let stored = record::encode_update(Op::Batch, "alpha", &stored_edits);
    w.put(
        "payload-update-stored",
        "update (batch): a stored write of 16 bytes at 128 of vector page 0 (no images) and a write with a before-image",
        "record-payload",
        payload_input(1),
        &stored,
        Ok(None),
    );
    let mut stored_with_before = stored.clone();
    // The first edit's flags (after op, id length, id, edit count, page, offset, length).
    let flags_at = 1 + 2 + 5 + 2 + 8 + 4 + 4;
    assert_eq!(stored_with_before[flags_at], 8, "the stored write's flags");
    stored_with_before[flags_at] = 9;
    w.put(
        "payload-update-stored-before",
        "the stored-write vector with flags 9 (a stored write with a before-image bit): invalid",
        "record-payload",
        payload_input(1),
        &stored_with_before,
        Err("invalid"),
    );
    let mut clr_stored = Lsn(4128).0.to_le_bytes().to_vec();
    clr_stored.extend_from_slice(&stored[1 + 2 + 5..1 + 2 + 5 + 2 + 17]);
    clr_stored[8] = 1; // one edit: the stored write alone
    w.put(
        "payload-clr-stored",
        "clr: undo_next 4128 and a stored write: invalid (a clr holds no stored write)",
        "record-payload",
        payload_input(2),
        &clr_stored,
        Err("invalid"),
    );
    let clr = record::encode_clr(
        Lsn(4128),
        &[Edit {
            page: cat1,
            offset: 64,
            after: &[0u8; 8],
            before: None,
            kind: EditKind::Write,
        }],
    );
    w.put(
        "payload-clr",
        "clr: undo_next 4128 and one edit (after-image only)",
        "record-payload",
        payload_input(2),
        &clr,
        Ok(None),
    );
    for (kind, name) in [(3u8, "commit"), (4, "abort"), (5, "end"), (6, "checkpoint-begin")] {
        w.put(
            &format!("payload-{name}"),
            &format!("{name}: empty payload"),
            "record-payload",
            payload_input(kind),
            &[],
            Ok(None),
        );
    }
    let checkpoint = record::encode_checkpoint(&Checkpoint {
        begin_lsn: Lsn(40960),
        next_txn_id: 9,
        txns: vec![TxnEntry {
            txn_id: 8,
            last_lsn: Lsn(40000),
            undo_next: Lsn(40000),
            state: 0,
        }],
        dirty: vec![
            DirtyPage {
                page: cat0,
                rec_lsn: Lsn(41000),
            },
            DirtyPage {
                page: vec0,
                rec_lsn: Lsn(41064),
            },
        ],
    });
    w.put(
        "payload-checkpoint-end",
        "checkpoint-end: one running transaction, two dirty pages",
        "record-payload",
        payload_input(7),
        &checkpoint,
        Ok(None),
    );
    let checkpoint_empty = record::encode_checkpoint(&Checkpoint {
        begin_lsn: Lsn(40960),
        next_txn_id: 9,
        ..Checkpoint::default()
    });
    w.put(
        "payload-checkpoint-end-empty",
        "checkpoint-end: no transactions, no dirty pages",
        "record-payload",
        payload_input(7),
        &checkpoint_empty,
        Ok(None),
    );
    let init = record::encode_page_init(cat1, record::PageInit::new(PageKind::Catalog, 0, PAGE));
    w.put(
        "payload-page-init",
        "page-init of catalog page 1 as a catalog page (a = 0, b = P)",
        "record-payload",
        payload_input(8),
        &init,
        Ok(None),
    );
    // One page-init vector per page kind (a test requires it of every kind).
    for (name, description, init) in [
        (
            "payload-page-init-vector",
            "page-init of vector page 0 (a = dimension 4, b = stride 16)",
            record::PageInit::new(PageKind::Vector, DIMENSION, 16),
        ),
        (
            "payload-page-init-overflow",
            "page-init of an overflow page (a = 300 bytes used, b = 0)",
            record::PageInit::new(PageKind::Overflow, 300, 0),
        ),
        (
            "payload-page-init-zero",
            "page-init of a zero page (a and b carried as they are)",
            record::PageInit::new(PageKind::Zero, 0, 0),
        ),
        (
            "payload-page-init-meta",
            "page-init of the meta page, catalog page 0 (a = b = 0)",
            record::PageInit::new(PageKind::Meta, 0, 0),
        ),
        (
            "payload-page-init-index-leaf",
            "page-init of an index leaf, catalog page 3 (a = 0 cells, b = P)",
            record::PageInit::new(PageKind::IndexLeaf, 0, PAGE),
        ),
        (
            "payload-page-init-index-branch",
            "page-init of an index branch, catalog page 4 (a = 0 cells, b = P)",
            record::PageInit::new(PageKind::IndexBranch, 0, PAGE),
        ),
        (
            "payload-page-init-free",
            "page-init of a free page, catalog page 6 (valid, though writers free pages by rewriting their kind)",
            record::PageInit::new(PageKind::Free, 0, 0),
        ),
        (
            "payload-page-init-graph-meta",
            "page-init of the approximate index's graph meta page, catalog page 8 (a = b = 0; its fields follow as edits)",
            record::PageInit::new(PageKind::GraphMeta, 0, 0),
        ),
        (
            "payload-page-init-graph-nodes",
            "page-init of a graph node page, catalog page 9 (a = node page index 0, b = 24-byte records: M = 2)",
            record::PageInit::new(PageKind::GraphNodes, 0, 24),
        ),
        (
            "payload-page-init-graph-upper",
            "page-init of a graph upper page, catalog page 10 (a = upper page index 0, b = 12-byte slots: M = 2)",
            record::PageInit::new(PageKind::GraphUpper, 0, 12),
        ),
    ] {
        let page = match init.kind() {
            PageKind::Vector => vec0,
            PageKind::Meta => cat0,
            PageKind::IndexLeaf => catalog_id(3),
            PageKind::IndexBranch => catalog_id(4),
            PageKind::Free => catalog_id(6),
            PageKind::GraphMeta => catalog_id(8),
            PageKind::GraphNodes => catalog_id(9),
            PageKind::GraphUpper => catalog_id(10),
            _ => catalog_id(2),
        };
        w.put(
            name,
            description,
            "record-payload",
            payload_input(8),
            &record::encode_page_init(page, init),
            Ok(None),
        );
    }
    w.put(
        "payload-update-truncated",
        "the update payload with its last byte cut",
        "record-payload",
        payload_input(1),
        &update[..update.len() - 1],
        Err("invalid"),
    );
    let past = record::encode_update(
        Op::Insert,
        "alpha",
        &[Edit {
            page: vec0,
            offset: 4090,
            after: &vector_bytes,
            before: None,
            kind: EditKind::Write,
        }],
    );
    w.put(
        "payload-edit-past-page",
        "an edit at offset 4090 of length 16 in a 4096-byte page",
        "record-payload",
        payload_input(1),
        &past,
        Err("invalid"),
    );
    let clr_before = record::encode_clr(
        Lsn(4128),
        &[Edit {
            page: cat0,
            offset: 64,
            after: &[0u8; 8],
            before: Some(&slot_after),
            kind: EditKind::Write,
        }],
    );
    w.put(
        "payload-clr-with-before",
        "a clr whose edit carries a before-image",
        "record-payload",
        payload_input(2),
        &clr_before,
        Err("invalid"),
    );
    w.put(
        "payload-commit-trailing",
        "a commit payload with one byte left over",
        "record-payload",
        payload_input(3),
        &[0],
        Err("invalid"),
    );
    let mut bad_page = init.clone();
    bad_page[7] = 0x07;
    w.put(
        "payload-page-init-bad-page-id",
        "a page-init whose page id names space 7",
        "record-payload",
        payload_input(8),
        &bad_page,
        Err("invalid"),
    );
    let mut bad_kind = init.clone();
    bad_kind[8] = 11;
    w.put(
        "payload-page-init-bad-kind",
        "a page-init of page kind 11 (kinds 0-10 are defined)",
        "record-payload",
        payload_input(8),
        &bad_kind,
        Err("invalid"),
    );
    let mut bad_op = update.clone();
    bad_op[0] = 9;
    w.put(
        "payload-update-bad-op",
        "an update with op 9",
        "record-payload",
        payload_input(1),
        &bad_op,
        Err("invalid"),
    );

    let index_edits = edit_kind_vectors(&mut w, &arena);

    // ---- A whole record: header and payload (section 9).
    let record_json = json!({
        "lsn": 4128, "prev_lsn": 0, "txn_id": 0, "timestamp_us": T0 + 1, "durable_lsn": 0,
        "kind": 8, "flags": 0, "epoch": 2,
        "payload": payload_json(&record::decode(8, &init, Lsn(4128), PAGE).unwrap()),
    });
    let rec = encode_record(&record_json);
    let rec_input = json!({ "lsn": 4128, "epoch_floor": 2, "page_size": PAGE });
    w.put(
        "record-page-init",
        "a page-init record at LSN 4128, epoch 2",
        "record",
        rec_input.clone(),
        &rec,
        Ok(None),
    );
    let update_record = encode_record(&json!({
        "lsn": 4184, "prev_lsn": 0, "txn_id": 1, "timestamp_us": T0 + 2, "durable_lsn": 0,
        "kind": 1, "flags": 0, "epoch": 2,
        "payload": payload_json(&record::decode(1, &update_mixed, Lsn(4184), PAGE).unwrap()),
    }));
    w.put(
        "record-update",
        "an update record at LSN 4184 (transaction 1)",
        "record",
        json!({ "lsn": 4184, "epoch_floor": 0, "page_size": PAGE }),
        &update_record,
        Ok(None),
    );
    let mut bad_crc = rec.clone();
    bad_crc[RECORD_HEADER_BYTES + 9] ^= 0x01;
    w.put(
        "record-bad-crc",
        "record-page-init with a payload bit flipped: the CRC fails",
        "record",
        rec_input.clone(),
        &bad_crc,
        Err("invalid"),
    );
    w.put(
        "record-stale-lsn",
        "record-page-init read at LSN 36896 (a recycled file): the lsn field says 4128",
        "record",
        json!({ "lsn": 36896, "epoch_floor": 0, "page_size": PAGE }),
        &rec,
        Err("invalid"),
    );
    w.put(
        "record-old-epoch",
        "record-page-init (epoch 2) read with epoch floor 3",
        "record",
        json!({ "lsn": 4128, "epoch_floor": 3, "page_size": PAGE }),
        &rec,
        Err("invalid"),
    );

    // ---- WAL page headers (section 8): the worked example of section 9.
    let ph = WalPageHeader::new(8192, 936, 1, 2);
    let ph_input = json!({ "address": 8192, "timeline": 1, "epoch_floor": 2 });
    w.put(
        "wal-page-header-continuation",
        "the page header at 8192 of the worked example (rem_len 936, flags 1)",
        "wal-page-header",
        ph_input.clone(),
        ph.as_bytes(),
        Ok(None),
    );
    let ph0 = WalPageHeader::new(4096, 0, 1, 2);
    w.put(
        "wal-page-header",
        "the page header at 4096 of the worked example",
        "wal-page-header",
        json!({ "address": 4096, "timeline": 1, "epoch_floor": 0 }),
        ph0.as_bytes(),
        Ok(None),
    );
    let mut bad_magic = ph.as_bytes().to_vec();
    bad_magic[0] = b'X';
    w.put(
        "wal-page-header-bad-magic",
        "the continuation header with its magic changed",
        "wal-page-header",
        ph_input.clone(),
        &bad_magic,
        Err("damaged"),
    );
    w.put(
        "wal-page-header-stale-address",
        "the continuation header read at 40960 (8192 + S: a recycled segment)",
        "wal-page-header",
        json!({ "address": 8192 + SEGMENT, "timeline": 1, "epoch_floor": 0 }),
        ph.as_bytes(),
        Err("stale"),
    );
    w.put(
        "wal-page-header-old-epoch",
        "the continuation header (epoch 2) with epoch floor 3",
        "wal-page-header",
        json!({ "address": 8192, "timeline": 1, "epoch_floor": 3 }),
        ph.as_bytes(),
        Err("stale"),
    );
    let mut bad_flags = WalPageHeader::new(4096, 0, 1, 2);
    bad_flags.flags = U16::new(1);
    bad_flags.crc = U32::new(crc32c::crc32c(&bad_flags.as_bytes()[..28]));
    w.put(
        "wal-page-header-bad-flags",
        "continuation flag set with rem_len 0 (CRC correct)",
        "wal-page-header",
        json!({ "address": 4096, "timeline": 1, "epoch_floor": 0 }),
        bad_flags.as_bytes(),
        Err("damaged"),
    );
    let mut newer = WalPageHeader::new(4096, 0, 1, 2);
    newer.version_major = U16::new(5);
    newer.flags = U16::new(0x8000);
    newer.crc = U32::new(crc32c::crc32c(&newer.as_bytes()[..28]));
    w.put(
        "wal-page-header-newer-major",
        "major version 5 with a flag bit version 4 does not define (CRC correct): foreign, not damaged",
        "wal-page-header",
        json!({ "address": 4096, "timeline": 1, "epoch_floor": 0 }),
        newer.as_bytes(),
        Err("foreign"),
    );
    let mut older = WalPageHeader::new(4096, 0, 1, 2);
    older.version_major = U16::new(1);
    older.crc = U32::new(crc32c::crc32c(&older.as_bytes()[..28]));
    w.put(
        "wal-page-header-major-1",
        "the page header at 4096 as format 1.x wrote it (major version 1, CRC correct): foreign to a reader of major 4",
        "wal-page-header",
        json!({ "address": 4096, "timeline": 1, "epoch_floor": 0 }),
        older.as_bytes(),
        Err("foreign"),
    );
    w.put(
        "wal-page-header-zero",
        "32 zero bytes: the log has not reached this page",
        "wal-page-header",
        json!({ "address": 4096, "timeline": 1, "epoch_floor": 0 }),
        &[0u8; 32],
        Ok(None),
    );

    // ---- Segment headers (section 7).
    let geometry = Geometry::new(PAGE, SEGMENT).unwrap();
    let identity = LogIdentity {
        store_id: STORE_ID,
        timeline: 1,
    };
    let seg_input = |segment_no: u64, store_id: u64| json!({ "segment_no": segment_no, "page_size": PAGE, "segment_size": SEGMENT, "store_id": hex64(store_id), "timeline": 1 });
    let sh = SegmentHeader::new(&geometry, &identity, 1, T0);
    w.put(
        "segment-header",
        "the header of segment 1 (base LSN 32768)",
        "segment-header",
        seg_input(1, STORE_ID),
        sh.as_bytes(),
        Ok(None),
    );
    let mut sh_bad = sh.as_bytes().to_vec();
    sh_bad[3] = b'w';
    w.put(
        "segment-header-bad-magic",
        "segment-header with its magic changed",
        "segment-header",
        seg_input(1, STORE_ID),
        &sh_bad,
        Err("damaged"),
    );
    w.put(
        "segment-header-foreign-store",
        "segment-header read by a log whose store id differs",
        "segment-header",
        seg_input(1, STORE_ID + 1),
        sh.as_bytes(),
        Err("foreign"),
    );
    let mut sh_v1 = sh;
    sh_v1.version_major = U16::new(1);
    sh_v1.crc = U32::new(crc32c::crc32c(&sh_v1.as_bytes()[..SEGMENT_HEADER_BYTES - 4]));
    w.put(
        "segment-header-major-1",
        "segment-header as format 1.x wrote it (major version 1, CRC correct): foreign",
        "segment-header",
        seg_input(1, STORE_ID),
        sh_v1.as_bytes(),
        Err("foreign"),
    );
    w.put(
        "segment-header-stale",
        "segment-header found in the file of segment 3 (recycled)",
        "segment-header",
        seg_input(3, STORE_ID),
        sh.as_bytes(),
        Err("stale"),
    );
    w.put(
        "segment-header-zero",
        "128 zero bytes: the segment has not been started",
        "segment-header",
        seg_input(1, STORE_ID),
        &[0u8; 128],
        Ok(None),
    );

    // ---- Small logs written by the engine (sections 9–12).
    let big_before = vec![0u8; 3000];
    let big_after: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let big = record::encode_update(
        Op::Upsert,
        "gamma",
        &[Edit {
            page: catalog_id(2),
            offset: 64,
            after: &big_after,
            before: Some(&big_before),
            kind: EditKind::Write,
        }],
    );
    let undo = record::encode_clr(
        Lsn(0),
        &[Edit {
            page: catalog_id(2),
            offset: 64,
            after: &big_before,
            before: None,
            kind: EditKind::Write,
        }],
    );
    let records = vec![
        (
            spec(Kind::PageInit, 0, 1),
            record::encode_page_init(cat0, record::PageInit::new(PageKind::Meta, 0, 0)),
        ),
        (
            spec(Kind::PageInit, 0, 2),
            record::encode_page_init(vec0, record::PageInit::new(PageKind::Vector, DIMENSION, 16)),
        ),
        (spec(Kind::Update, 1, 3), update_mixed.clone()),
        (spec(Kind::Commit, 1, 4), Vec::new()),
        (spec(Kind::Update, 2, 5), big.clone()),
        (spec(Kind::Abort, 2, 6), Vec::new()),
        (spec(Kind::Clr, 2, 7), undo.clone()),
        (spec(Kind::End, 2, 8), Vec::new()),
        (spec(Kind::Update, 3, 9), index_edits.insert.clone()),
        (spec(Kind::Update, 3, 10), index_edits.remove.clone()),
        (spec(Kind::Commit, 3, 11), Vec::new()),
        (spec(Kind::CheckpointBegin, 0, 12), Vec::new()),
    ];
    let (_, placed) = engine_log(0, 1, &records);
    let begin = placed.last().unwrap().0;
    let mut records = records;
    let checkpoint_end = record::encode_checkpoint(&Checkpoint {
        begin_lsn: Lsn(begin),
        next_txn_id: 4,
        txns: vec![],
        dirty: vec![DirtyPage {
            page: catalog_id(5),
            rec_lsn: Lsn(placed[8].0),
        }],
    });
    records.push((spec(Kind::CheckpointEnd, 0, 13), checkpoint_end));
    let (log, placed) = engine_log(0, 1, &records);
    assert!(placed[4].1 - placed[4].0 > PAGE as u64, "the big update spans pages");
    w.put(
        "wal-segment",
        "segment 0 (4 KiB pages x 8) with ten records written by Wal::create; the upsert spans two pages",
        "wal-log",
        log_input(0, 1, "tolerate-torn-tail"),
        &log,
        Ok(None),
    );
    let (last, last_end) = *placed.last().unwrap();
    let mut torn = log.clone();
    torn[last_end as usize - 8..last_end as usize].fill(0);
    w.put(
        "wal-segment-torn-tail",
        "wal-segment with the last 8 bytes of the checkpoint-end record zeroed: the log ends at its start",
        "wal-log",
        log_input(0, 1, "tolerate-torn-tail"),
        &torn,
        Ok(None),
    );
    assert!(
        decode_vector(
            &json!({"structure": "wal-log", "input": log_input(0, 1, "tolerate-torn-tail")}),
            &torn
        )["decoded"]["end_lsn"]
            == json!(last)
    );
    w.put(
        "wal-segment-torn-tail-strict",
        "wal-segment-torn-tail read in Strict mode: still a torn tail (no later record)",
        "wal-log",
        log_input(0, 1, "strict"),
        &torn,
        Ok(None),
    );
    // Damage before the durable point: a record after it, in a later page, proves it.
    let (synced, synced_placed) = engine_log_synced(0, 1, &records, &[4]);
    let victim = synced_placed[2];
    assert!(
        synced_placed
            .iter()
            .any(|&(lsn, _)| lsn / PAGE as u64 > victim.0 / PAGE as u64 + 1),
        "records after the damaged one lie in later pages"
    );
    let mut mid = synced.clone();
    mid[victim.0 as usize + 60] ^= 0x01;
    w.put(
        "wal-mid-log-damage",
        "wal-segment made durable after its fifth record, the third record's payload flipped: later records prove the bytes were durable (mid-log damage, an error)",
        "wal-log",
        log_input(0, 1, "tolerate-torn-tail"),
        &mid,
        Err("damaged"),
    );
    w.put(
        "wal-mid-log-damage-skip",
        "wal-mid-log-damage read under SkipCorrupted: the damaged range is skipped to the resync point",
        "wal-log",
        log_input(0, 1, "skip-corrupted"),
        &mid,
        Ok(None),
    );
    // A recycled file: segment 0 written over the old bytes of segment 1.
    let mut old_records = Vec::new();
    for i in 0..10u64 {
        let bytes: Vec<u8> = (0..1800u32).map(|k| (k as u64 * 7 + i) as u8).collect();
        let payload = record::encode_update(
            Op::Insert,
            &format!("old-{i}"),
            &[Edit {
                page: vec0,
                offset: 64,
                after: &bytes,
                before: None,
                kind: EditKind::Write,
            }],
        );
        old_records.push((spec(Kind::Update, 10 + i, 100 + 2 * i), payload));
        old_records.push((spec(Kind::Commit, 10 + i, 101 + 2 * i), Vec::new()));
    }
    let (old, old_placed) = engine_log(1, 1, &old_records);
    assert!(old_placed.last().unwrap().1 < 2 * SEGMENT);
    let new_records = records[..4].to_vec();
    let (new, new_placed) = engine_log(0, 1, &new_records);
    let new_end = new_placed.last().unwrap().1 as usize;
    let cut = new_end - new_end % PAGE as usize + PAGE as usize;
    let mut recycled = new[..cut].to_vec();
    recycled.extend_from_slice(&old[cut..SEGMENT as usize]);
    w.put("wal-segment-recycled", "segment 0 holding four records, its later pages stale bytes of an old segment 1 (page addresses and LSNs of segment 1): a clean end", "wal-log", log_input(0, 1, "strict"), &recycled, Ok(None));
    // A log on timeline 2 that starts at segment 2 (a restored store's new history).
    let (restored, _) = engine_log(2, 2, &records[11..]);
    w.put(
        "wal-timeline-2",
        "a log of timeline 2 whose first segment is 2 (Wal::create_at): a checkpoint-begin and checkpoint-end",
        "wal-log",
        log_input(2, 2, "strict"),
        &restored,
        Ok(None),
    );
    w.put(
        "wal-timeline-2-read-as-1",
        "wal-timeline-2 read by a reader expecting timeline 1: the segment header is stale, so the log is empty",
        "wal-log",
        log_input(2, 1, "strict"),
        &restored,
        Ok(None),
    );

    // ---- Control file (section 3).
    let control = Control {
        page_size_bytes: PAGE,
        segment_size_bytes: SEGMENT,
        dimension: DIMENSION,
        timeline: 1,
        store_id: STORE_ID,
        sequence: 4,
        checkpoint_lsn: Lsn(begin),
        checkpoint_end_lsn: Lsn(last),
        redo_lsn: Lsn(begin),
        next_txn_id: 4,
        created_us: T0,
        checkpoint_us: T0 + 13,
        truncate_lsn: Lsn(begin),
        extent: Some(ArenaExtent {
            pages: [7, 1],
            files: [1, 1],
        }),
    };
    let older = Control {
        sequence: 4,
        checkpoint_lsn: Lsn(4128),
        checkpoint_end_lsn: Lsn(4184),
        redo_lsn: Lsn(4128),
        truncate_lsn: Lsn(4128),
        checkpoint_us: T0 + 1,
        next_txn_id: 1,
        ..control.clone()
    };
    let newer = Control {
        sequence: 5,
        ..control.clone()
    };
    let mut file = older.to_slot().as_bytes().to_vec();
    file.extend_from_slice(newer.to_slot().as_bytes());
    w.put(
        "control",
        "both slots valid: slot 1 (sequence 5) is newer and in force",
        "control-file",
        json!({}),
        &file,
        Ok(Some(control_json(&newer))),
    );
    let mut torn_control = file.clone();
    torn_control[512 + 256..1024].fill(0);
    w.put(
        "control-newer-torn",
        "slot 1 (sequence 5) torn after 256 bytes: slot 0 (sequence 4) is in force",
        "control-file",
        json!({}),
        &torn_control,
        Ok(Some(control_json(&older))),
    );
    let mut both_bad = torn_control.clone();
    both_bad[40] ^= 0x10;
    w.put(
        "control-both-bad",
        "slot 0 with a flipped bit and slot 1 torn: damaged",
        "control-file",
        json!({}),
        &both_bad,
        Err("damaged"),
    );
    let with_major = |control: &Control, major: u16| {
        let mut slot = control.to_slot();
        slot.version_major = U16::new(major);
        slot.crc = U32::new(crc32c::crc32c(&slot.as_bytes()[..508]));
        slot.as_bytes().to_vec()
    };
    let v5 = with_major(&older, 5);
    let mut incompatible = v5.clone();
    incompatible.extend_from_slice(&torn_control[512..]);
    w.put(
        "control-incompatible",
        "slot 0 of major version 5 (CRC correct), slot 1 torn: incompatible",
        "control-file",
        json!({}),
        &incompatible,
        Err("incompatible"),
    );
    let mut beside_valid = v5;
    beside_valid.extend_from_slice(&file[512..]);
    w.put(
        "control-newer-major-beside-valid",
        "slot 0 of major version 5 (CRC correct), slot 1 a valid major-4 copy: still incompatible",
        "control-file",
        json!({}),
        &beside_valid,
        Err("incompatible"),
    );
    // A store of format 1.x: both slots intact, of major 1 (minor 1, with the extent).
    let mut v1 = with_major(&older, 1);
    v1.extend_from_slice(&with_major(&newer, 1));
    // A store of format 3.x: both slots intact, of major 3 (a log without stored writes).
    let mut v3 = with_major(&older, 3);
    v3.extend_from_slice(&with_major(&newer, 3));
    w.put(
        "control-major-3",
        "the control file of a store of format 3.1: both slots valid but of major version 3, which a reader of major 4 refuses (incompatible, never damaged)",
        "control-file",
        json!({}),
        &v3,
        Err("incompatible"),
    );
    // A store of format 2.x: both slots intact, of major 2 (the node layout before key heads).
    let mut v2 = with_major(&older, 2);
    v2.extend_from_slice(&with_major(&newer, 2));
    w.put(
        "control-major-2",
        "the control file of a store of format 2.3: both slots valid but of major version 2, which a reader of major 4 refuses (incompatible, never damaged)",
        "control-file",
        json!({}),
        &v2,
        Err("incompatible"),
    );
    w.put(
        "control-major-1",
        "the control file of a store of format 1.1: both slots valid but of major version 1, which a reader of major 4 refuses (incompatible, never damaged)",
        "control-file",
        json!({}),
        &v1,
        Err("incompatible"),
    );
    let minor0 = Control {
        extent: None,
        ..newer.clone()
    };
    let mut file_minor0 = older.to_slot().as_bytes().to_vec();
    file_minor0.extend_from_slice(minor0.to_slot().as_bytes());
    w.put(
        "control-minor-0",
        "slot 1 (in force) of major 4, minor 0: no arena extent (its bytes 104..128 are zero and mean nothing)",
        "control-file",
        json!({}),
        &file_minor0,
        Ok(Some(control_json(&minor0))),
    );

    arena_page_vectors(&mut w, &arena);

    // ---- Archive files (section "Archive files and base images").
    let mut wal_header = ArchiveHeader::new_zeroed();
    wal_header.kind = KIND_WAL_SEGMENT;
    wal_header.store_id = U64::new(STORE_ID);
    wal_header.timeline = U32::new(1);
    wal_header.page_size_bytes = U32::new(PAGE);
    wal_header.segment_size_bytes = U64::new(SEGMENT);
    wal_header.segment_no = U64::new(0);
    wal_header.first_lsn = U64::new(placed[0].0);
    wal_header.end_lsn = U64::new(last_end);
    wal_header.first_us = U64::new(T0 + 1);
    wal_header.last_us = U64::new(T0 + 13);
    let wal_archive = archive::encode(wal_header, &log);
    let wal_input = json!({ "file_name": archive::wal_file_name(0) });
    w.put(
        "archive-wal",
        "wal-segment archived as wal-0000000000000000.lz4",
        "archive",
        wal_input.clone(),
        &wal_archive,
        Ok(None),
    );
    let mut base_contents = vec![0u8; 2 * SEGMENT as usize];
    for (id, image) in arena.pages() {
        let file_start = if id.space() == Space::Vector {
            SEGMENT as usize
        } else {
            0
        };
        let at = file_start + id.page_no() as usize * PAGE as usize;
        base_contents[at..at + PAGE as usize].copy_from_slice(image);
    }
    let mut base_header = wal_header;
    base_header.kind = KIND_BASE_IMAGE;
    base_header.segment_no = U64::new(0);
    base_header.first_lsn = U64::new(begin);
    base_header.end_lsn = U64::new(last);
    base_header.first_us = U64::new(T0 + 13);
    base_header.last_us = U64::new(T0 + 13);
    base_header.truncate_lsn = U64::new(begin);
    base_header.next_txn_id = U64::new(4);
    base_header.dimension = U32::new(DIMENSION);
    base_header.catalog_files = U32::new(1);
    base_header.vector_files = U32::new(1);
    let base = archive::encode(base_header, &base_contents);
    w.put(
        "archive-base",
        "a base image: catalog-00000000.pages then vector-00000000.pages, S bytes each",
        "archive",
        json!({ "file_name": archive::base_file_name(Lsn(begin)) }),
        &base,
        Ok(None),
    );
    // Incompressible contents are stored.
    let mut rng = 0x1234_5678_9abc_def0u64;
    let noise: Vec<u8> = (0..1000)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    let mut stored_header = wal_header;
    stored_header.segment_no = U64::new(5);
    let stored = archive::encode(stored_header, &noise);
    w.put(
        "archive-stored-block",
        "1000 incompressible bytes: one block with filter 2 (stored)",
        "archive",
        json!({ "file_name": archive::wal_file_name(5) }),
        &stored,
        Ok(None),
    );
    w.put(
        "archive-truncated",
        "archive-wal cut in the middle of its blocks",
        "archive",
        wal_input.clone(),
        &wal_archive[..wal_archive.len() / 2],
        Err("damaged"),
    );
    w.put(
        "archive-truncated-header",
        "archive-wal cut to 100 bytes (inside the header)",
        "archive",
        wal_input.clone(),
        &wal_archive[..100],
        Err("damaged"),
    );
    let mut bad_body = wal_archive.clone();
    let at = archive::ARCHIVE_HEADER_BYTES + archive::BLOCK_HEADER_BYTES + 20;
    bad_body[at] ^= 0x20;
    w.put(
        "archive-bad-compressed-crc",
        "archive-wal with one compressed byte changed: the compressed CRC fails",
        "archive",
        wal_input.clone(),
        &bad_body,
        Err("damaged"),
    );
    archive_versions(&mut w, wal_header);
    let mut bad_header = wal_archive.clone();
    bad_header[60] ^= 1;
    w.put(
        "archive-bad-header-crc",
        "archive-wal with a header bit flipped: the header CRC fails",
        "archive",
        wal_input,
        &bad_header,
        Err("damaged"),
    );

    let total: u64 = w
        .names
        .iter()
        .map(|n| {
            std::fs::metadata(dir.join(format!("{n}.bin"))).unwrap().len()
                + std::fs::metadata(dir.join(format!("{n}.json"))).unwrap().len()
        })
        .sum();
    assert!(total < 1 << 20, "vectors total {total} bytes");
    eprintln!("wrote {} vectors, {total} bytes", w.names.len());
}

/// The edits of two operations on the golden arena that change the index in place (FORMAT.md
/// 14.10, 15): inserting "beth" into the right leaf (an insert edit in its directory) and
/// deleting "gamma" from it (a remove edit). Returns the two update payloads.
struct IndexEdits {
    insert: Vec<u8>,
    remove: Vec<u8>,
}

/// `len` bytes at `offset` of `page`.
fn at(page: &[u8], offset: usize, len: usize) -> &[u8] {
    &page[offset..offset + len]
}

/// Payload vectors of the insert and remove edits, valid and damaged: update records that
/// change an index leaf's directory, the clrs that undo them, and edits whose flags or ranges
/// are invalid.
fn edit_kind_vectors(w: &mut Writer, arena: &Arena) -> IndexEdits {
    let (meta, cat1, leaf, vec0) = (catalog_id(0), catalog_id(1), catalog_id(5), vector_id(0));
    let layout = VectorLayout::new(PAGE, DIMENSION);
    let node = index::Node::parse(&arena.leaf_right).unwrap();
    let (count, data_start) = (node.count, node.data_start);
    // Insert "beth" (vector slot 3, entry below the catalog page's entries, reusing directory
    // slot 3): the cell goes into the leaf's gap, its offset into the directory at position 1.
    let beth_entry = entry_bytes("beth", 3, Some(&[0, 0]), None);
    let catalog_start = u32::from_le_bytes(at(&arena.catalog, 28, 4).try_into().unwrap());
    let beth_at = catalog_start - beth_entry.len() as u32;
    let value = LeafValue {
        vector_slot: U32::new(3),
        catalog_slot: U32::new(3),
        entry_offset: U32::new(beth_at),
        entry_len: U32::new(beth_entry.len() as u32),
        ..arena.value(0)
    };
    let cell = index::leaf_cell(b"beth", &value);
    let cell_at = data_start - cell.len();
    let vector = floats(&[0.25, 0.5, 0.75, 1.0]);
    let owner = page::encode_owner(1, beth_at).to_le_bytes();
    let dir_slot = [beth_at.to_le_bytes(), (beth_entry.len() as u32).to_le_bytes()].concat();
    let counts = |n: usize, d: usize| [(n as u32).to_le_bytes(), (d as u32).to_le_bytes()].concat();
    let (new_counts, old_counts) = (counts(count + 1, cell_at), counts(count, data_start));
    let cell_entry = index::directory_entry(cell_at, b"beth", node.prefix.len());
    let (count_before, count_after) = (3u64.to_le_bytes(), 4u64.to_le_bytes());
    let beth_start = beth_at.to_le_bytes();
    let write = |page, offset: usize, after, before| Edit::write(page, offset as u32, after, before);
    let insert_edits = [
        write(vec0, layout.slot_offset(3), &vector[..], None),
        write(
            vec0,
            layout.owner_offset(3),
            &owner[..],
            Some(at(&arena.vector, layout.owner_offset(3), 8)),
        ),
        write(cat1, beth_at as usize, &beth_entry[..], None),
        write(cat1, 64 + 8 * 3, &dir_slot[..], Some(at(&arena.catalog, 64 + 24, 8))),
        write(cat1, 28, &beth_start[..], Some(at(&arena.catalog, 28, 4))),
        write(leaf, cell_at, &cell[..], None),
        Edit {
            page: leaf,
            offset: 64 + 8,
            after: &cell_entry,
            before: None,
            kind: EditKind::Insert {
                end: (64 + 8 * count) as u32,
            },
        },
        write(leaf, 24, &new_counts[..], Some(&old_counts[..])),
        write(meta, 80, &count_after[..], Some(&count_before[..])),
    ];
    let insert = record::encode_update(Op::Insert, "beth", &insert_edits);
    w.put(
        "payload-update-index-insert",
        "update (insert \"beth\"): the vector, its owner, the entry and its slot, the leaf cell written into the gap, its directory entry (offset and key head) inserted into the leaf's directory (an insert edit, flags 2), the leaf's a and b, the meta page's count",
        "record-payload",
        payload_input(1),
        &insert,
        Ok(None),
    );
    // Delete "gamma", cell 1 of the leaf: its directory entry removed (with the removed bytes).
    let gamma = arena.value(2);
    let zero8 = [0u8; 8];
    let removed_counts = counts(count - 1, data_start);
    let count_down = 2u64.to_le_bytes();
    let remove_edits = [
        Edit {
            page: leaf,
            offset: 64 + 8,
            after: &[],
            before: Some(at(&arena.leaf_right, 64 + 8, 8)),
            kind: EditKind::Remove {
                end: (64 + 8 * count) as u32,
                len: 8,
            },
        },
        write(leaf, 24, &removed_counts[..], Some(&old_counts[..])),
        write(cat1, 64 + 8 * 2, &zero8[..], Some(at(&arena.catalog, 64 + 16, 8))),
        write(
            vec0,
            layout.owner_offset(gamma.vector_slot.get()),
            &zero8[..],
            Some(at(&arena.vector, layout.owner_offset(2), 8)),
        ),
        write(meta, 80, &count_down[..], Some(&count_before[..])),
    ];
    let remove = record::encode_update(Op::Delete, "gamma", &remove_edits);
    w.put(
        "payload-update-index-remove",
        "update (delete \"gamma\"): its directory entry removed from the leaf (a remove edit with the removed bytes, flags 5), the leaf's a, the catalog slot and the owner zeroed, the meta page's count",
        "record-payload",
        payload_input(1),
        &remove,
        Ok(None),
    );
    for (name, description, edits, undo_next) in [
        (
            "payload-clr-index-insert",
            "clr of payload-update-index-insert: its compensation, newest first (the insert becomes a remove at end + 8; writes without before-image have none)",
            &insert_edits[..],
            4128,
        ),
        (
            "payload-clr-index-remove",
            "clr of payload-update-index-remove: its compensation (the remove becomes an insert of the removed bytes at end - 8, flags 2)",
            &remove_edits[..],
            0,
        ),
    ] {
        let compensation = record::compensation(edits);
        w.put(
            name,
            description,
            "record-payload",
            payload_input(2),
            &record::encode_clr(Lsn(undo_next), &compensation),
            Ok(None),
        );
    }
    damaged_edit_vectors(w);
    IndexEdits { insert, remove }
}

/// An update payload of op delete, id "x", with one edit built by hand: `flags`, the shifting
/// range's `end` when given, then `images` (before- and after-images as the flags say).
fn raw_update(page: PageId, offset: u32, len: u32, flags: u8, end: Option<u32>, images: &[u8]) -> Vec<u8> {
    let mut out = vec![Op::Delete as u8, 1, 0, b'x', 1, 0];
    out.extend_from_slice(&page.0.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.push(flags);
    if let Some(end) = end {
        out.extend_from_slice(&end.to_le_bytes());
    }
    out.extend_from_slice(images);
    out
}

/// Edits whose flags or ranges FORMAT.md section 15 makes invalid.
fn damaged_edit_vectors(w: &mut Writer) {
    let leaf = catalog_id(5);
    let cases: [(&str, &str, u8, Vec<u8>); 7] = [
        (
            "payload-edit-insert-with-before",
            "an insert edit with a before-image (flags 3)",
            1,
            raw_update(leaf, 68, 4, 3, Some(72), &[1, 2, 3, 4, 5, 6, 7, 8]),
        ),
        (
            "payload-edit-insert-past-page",
            "an insert of 4 bytes whose shifting range ends at 4094: end + 4 > P",
            1,
            raw_update(leaf, 68, 4, 2, Some(4094), &[1, 2, 3, 4]),
        ),
        (
            "payload-edit-insert-end-before-offset",
            "an insert at offset 72 whose shifting range ends at 68",
            1,
            raw_update(leaf, 72, 4, 2, Some(68), &[1, 2, 3, 4]),
        ),
        (
            "payload-edit-remove-past-end",
            "a remove of 8 bytes at offset 68 of a range ending at 72",
            1,
            raw_update(leaf, 68, 8, 5, Some(72), &[0; 8]),
        ),
        (
            "payload-update-remove-without-before",
            "an update whose remove edit carries no removed bytes (flags 4): undo could not put them back",
            1,
            raw_update(leaf, 68, 4, 4, Some(72), &[]),
        ),
        (
            "payload-edit-insert-and-remove",
            "an edit with both the insert and the remove bit (flags 6)",
            1,
            raw_update(leaf, 68, 4, 6, Some(72), &[1, 2, 3, 4]),
        ),
        (
            "payload-edit-unknown-flags",
            "an edit with flag bit 3 set (flags 8)",
            1,
            raw_update(leaf, 68, 4, 8, None, &[1, 2, 3, 4]),
        ),
    ];
    for (name, description, kind, payload) in cases {
        w.put(
            name,
            description,
            "record-payload",
            payload_input(kind),
            &payload,
            Err("invalid"),
        );
    }
    // A clr's remove with the removed bytes: a clr carries no before-image.
    let mut clr = 0u64.to_le_bytes().to_vec();
    clr.extend_from_slice(&raw_update(leaf, 68, 4, 5, Some(72), &[1, 2, 3, 4])[4..]);
    w.put(
        "payload-clr-remove-with-before",
        "a clr whose remove edit carries the removed bytes (flags 5)",
        "record-payload",
        payload_input(2),
        &clr,
        Err("invalid"),
    );
    // The valid raw edit, to show the hand-built bytes decode when their flags are right.
    w.put(
        "payload-update-raw-remove",
        "an update (delete \"x\") with one remove edit built by hand: 4 bytes at 68 of a range ending at 72, with the removed bytes",
        "record-payload",
        payload_input(1),
        &raw_update(leaf, 68, 4, 5, Some(72), &[1, 2, 3, 4]),
        Ok(None),
    );
}

/// Arena pages (FORMAT.md section 14): one valid vector of every page kind, from the golden
/// arena, and damaged ones: checksums, identities, and the rules of each kind.
fn arena_page_vectors(w: &mut Writer, arena: &Arena) {
    let input = |id: PageId| json!({ "page_id": hex64(id.0), "page_size": PAGE, "dimension": DIMENSION, "store_id": hex64(STORE_ID) });
    let valid: [(&str, &str, PageId, &[u8]); 9] = [
        (
            "page-meta",
            "the meta page (catalog page 0): root branch at catalog page 4, height 2, 3 ids, 1 vector page and 7 catalog pages in use, catalog page 1 hot, vector page 0 on the vector list, catalog page 6 on the free list",
            catalog_id(0),
            &arena.meta,
        ),
        (
            "page-catalog",
            "catalog page 1: \"alpha\" (metadata in overflow page 2), \"beta\" and \"gamma\" (inline metadata); slot 3 is free (\"delta\" was deleted, its bytes stay)",
            catalog_id(1),
            &arena.catalog,
        ),
        (
            "page-overflow",
            "overflow page (catalog page 2): the metadata of \"alpha\", last of its chain",
            catalog_id(2),
            &arena.overflow,
        ),
        (
            "page-index-leaf",
            "index leaf (catalog page 3): \"alpha\"",
            catalog_id(3),
            &arena.leaf_left,
        ),
        (
            "page-index-branch",
            "index branch (catalog page 4), the root: leftmost child catalog page 3, separator \"b\" for catalog page 5",
            catalog_id(4),
            &arena.branch,
        ),
        (
            "page-index-leaf-two-cells",
            "index leaf (catalog page 5): \"beta\" and \"gamma\"",
            catalog_id(5),
            &arena.leaf_right,
        ),
        (
            "page-free",
            "free page (catalog page 6), last of the free list: a leaf freed by a split, its a, b and cells left as they were",
            catalog_id(6),
            &arena.free,
        ),
        (
            "page-vector",
            "vector page 0, dimension 4: owner table of 168 entries at 64, slots from 1408; slots 0-2 owned by the entries of catalog page 1, slot 3 free but holding a deleted vector; last of the vector list",
            vector_id(0),
            &arena.vector,
        ),
        (
            "page-zero",
            "a never-written page (all zero): valid, of kind zero",
            catalog_id(7),
            &[0u8; PAGE as usize][..],
        ),
    ];
    for (name, description, id, bytes) in valid {
        w.put(name, description, "arena-page", input(id), bytes, Ok(None));
    }
    let damaged = |base: &[u8], change: &dyn Fn(&mut Vec<u8>)| {
        let mut page = base.to_vec();
        change(&mut page);
        page::seal(&mut page);
        page
    };
    let mut flipped = arena.catalog.clone();
    flipped[4000] ^= 0x04;
    let leaf_dir = |p: &mut Vec<u8>| {
        let (a, b) = (p[64..72].to_vec(), p[72..80].to_vec());
        p[64..72].copy_from_slice(&b);
        p[72..80].copy_from_slice(&a);
    };
    let cases: Vec<(&str, &str, PageId, Vec<u8>)> = vec![
        (
            "page-catalog-flipped-bit",
            "page-catalog with one bit flipped: the CRC fails",
            catalog_id(1),
            flipped,
        ),
        (
            "page-catalog-wrong-id",
            "page-catalog read at the position of catalog page 2",
            catalog_id(2),
            arena.catalog.clone(),
        ),
        (
            "page-overflow-in-vector-space",
            "page-overflow read as vector page 1 (wrong id and kind)",
            vector_id(1),
            arena.overflow.clone(),
        ),
        (
            "page-other-store",
            "page-index-leaf naming another store id at 40 (CRC correct): a page swapped in from another store",
            catalog_id(3),
            damaged(&arena.leaf_left, &|p| p[40] ^= 0x01),
        ),
        (
            "page-unknown-kind",
            "page-index-leaf with kind 11 (CRC correct)",
            catalog_id(3),
            damaged(&arena.leaf_left, &|p| p[4] = 11),
        ),
        (
            "page-meta-flipped-bit",
            "page-meta with one bit of its count flipped: the CRC fails",
            catalog_id(0),
            {
                let mut p = arena.meta.clone();
                p[80] ^= 0x01;
                p
            },
        ),
        (
            "page-meta-one-list-end",
            "page-meta whose free list has a head but no tail (CRC correct)",
            catalog_id(0),
            damaged(&arena.meta, &|p| p[152..160].fill(0)),
        ),
        (
            "page-meta-root-without-height",
            "page-meta with its height zeroed, the root left (CRC correct)",
            catalog_id(0),
            damaged(&arena.meta, &|p| p[72..76].fill(0)),
        ),
        (
            "page-meta-bytes-after-fields",
            "page-meta with a non-zero byte after its fields (CRC correct)",
            catalog_id(0),
            damaged(&arena.meta, &|p| p[200] = 1),
        ),
        (
            "page-meta-root-in-vector-space",
            "page-meta whose root names vector page 0 (CRC correct)",
            catalog_id(0),
            damaged(&arena.meta, &|p| {
                p[64..72].copy_from_slice(&vector_id(0).0.to_le_bytes())
            }),
        ),
        (
            "page-index-leaf-out-of-order",
            "page-index-leaf-two-cells with its two directory entries swapped: \"gamma\" before \"beta\" (CRC correct)",
            catalog_id(5),
            damaged(&arena.leaf_right, &leaf_dir),
        ),
        (
            "page-index-leaf-bad-head",
            "page-index-leaf-two-cells whose second directory entry heads \"gamma\" with \"gamn\" (CRC correct)",
            catalog_id(5),
            damaged(&arena.leaf_right, &|p| p[79] = b'n'),
        ),
        (
            "page-index-leaf-key-outside-prefix",
            "page-index-leaf (one cell, \"alpha\", key prefix \"alpha\") whose key prefix reads \"alphb\" (CRC correct)",
            catalog_id(3),
            damaged(&arena.leaf_left, &|p| p[53] = b'b'),
        ),
        (
            "page-index-leaf-prefix-length",
            "page-index-leaf with key prefix length 16, past the 15 bytes of the field (CRC correct)",
            catalog_id(3),
            damaged(&arena.leaf_left, &|p| p[48] = 16),
        ),
        (
            "page-index-leaf-prefix-field-tail",
            "page-index-leaf with a non-zero byte in its key prefix field after the prefix (CRC correct)",
            catalog_id(3),
            damaged(&arena.leaf_left, &|p| p[63] = 1),
        ),
        (
            "page-index-leaf-with-c",
            "page-index-leaf with header field c = 1 (CRC correct): a leaf has no child",
            catalog_id(3),
            damaged(&arena.leaf_left, &|p| p[32] = 1),
        ),
        (
            "page-index-leaf-cell-outside",
            "page-index-leaf whose directory entry points below the start of cell data (CRC correct)",
            catalog_id(3),
            damaged(&arena.leaf_left, &|p| p[64..68].copy_from_slice(&100u32.to_le_bytes())),
        ),
        (
            "page-index-leaf-empty-key",
            "page-index-leaf whose cell has key length 0 (CRC correct)",
            catalog_id(3),
            damaged(&arena.leaf_left, &|p| {
                let at = u32::from_le_bytes(p[64..68].try_into().unwrap()) as usize;
                p[at..at + 2].fill(0);
            }),
        ),
        (
            "page-index-leaf-directory-overlaps",
            "page-index-leaf whose cell count reaches past the start of cell data (CRC correct)",
            catalog_id(3),
            damaged(&arena.leaf_left, &|p| p[24..28].copy_from_slice(&2000u32.to_le_bytes())),
        ),
        (
            "page-index-branch-no-leftmost",
            "page-index-branch with header field c = 0 (CRC correct): a branch needs its leftmost child",
            catalog_id(4),
            damaged(&arena.branch, &|p| p[32..40].fill(0)),
        ),
        (
            "page-index-branch-child-in-vector-space",
            "page-index-branch whose cell's child names vector page 5 (CRC correct)",
            catalog_id(4),
            damaged(&arena.branch, &|p| {
                let at = u32::from_le_bytes(p[64..68].try_into().unwrap()) as usize;
                p[at + 2..at + 10].copy_from_slice(&vector_id(5).0.to_le_bytes());
            }),
        ),
        (
            "page-index-branch-child-meta",
            "page-index-branch whose leftmost child is catalog page 0, the meta page (CRC correct)",
            catalog_id(4),
            damaged(&arena.branch, &|p| {
                p[32..40].copy_from_slice(&catalog_id(0).0.to_le_bytes())
            }),
        ),
        (
            "page-free-flipped-bit",
            "page-free with one bit of its old cells flipped: the CRC fails",
            catalog_id(6),
            {
                let mut p = arena.free.clone();
                p[4090] ^= 0x40;
                p
            },
        ),
        (
            "page-free-in-vector-space",
            "page-free relabelled as vector page 1 (CRC correct): kind 7 belongs to the catalog space",
            vector_id(1),
            damaged(&arena.free, &|p| {
                p[8..16].copy_from_slice(&vector_id(1).0.to_le_bytes())
            }),
        ),
        (
            "page-vector-flipped-bit",
            "page-vector with one bit of a vector flipped: the CRC fails",
            vector_id(0),
            {
                let mut p = arena.vector.clone();
                p[1410] ^= 0x02;
                p
            },
        ),
        (
            "page-vector-owner-meta",
            "page-vector whose slot 0 owner names catalog page 0, the meta page (CRC correct)",
            vector_id(0),
            damaged(&arena.vector, &|p| p[68..72].fill(0)),
        ),
        (
            "page-vector-wrong-id",
            "page-vector read at the position of vector page 1",
            vector_id(1),
            arena.vector.clone(),
        ),
    ];
    for (name, description, id, bytes) in cases {
        w.put(name, description, "arena-page", input(id), &bytes, Err("invalid"));
    }
    graph_page_vectors(w, &input);
    assert_eq!(
        metadata_json(&arena.metadata).unwrap(),
        json!([["lang", "en"], ["source", "golden"]])
    );
}

/// The approximate index of the golden arena's vectors (FORMAT.md 14.13): M = 2, L2.
/// Nodes 0-3 are the slots of vector page 0: "alpha" (node 0, level 1, the entry point),
/// "beta", "gamma", and the tombstone of "delta" (node 3, its slot free but still holding its
/// vector), which node 1's list still names. Node 0's layer-1 list is upper slot 0 (empty: no
/// other node has layer 1); slot 1 is a free run of length 1.
struct GraphPages {
    meta: Vec<u8>,
    nodes: Vec<u8>,
    upper: Vec<u8>,
}

fn graph_pages() -> GraphPages {
    use vellum::format::graph::{self, GraphFields, NodeHeader};
    let fields = GraphFields {
        metric: graph::METRIC_L2,
        m: U16::new(2),
        ef_construction: U32::new(16),
        ef_search: U32::new(64),
        extent_shift: graph::EXTENT_SHIFT,
        seed: U64::new(0x00C0_FFEE_5EED),
        entry: U64::new(1),
        live: U64::new(3),
        deleted: U64::new(1),
        node_pages: U32::new(1),
        upper_pages: U32::new(1),
        upper_next: U32::new(2),
        node_extents: U16::new(1),
        upper_extents: U16::new(1),
        free_runs: std::array::from_fn(|len| U32::new(if len == 1 { 2 } else { 0 })),
        ..GraphFields::default()
    };
    let meta = sealed(PageKind::GraphMeta, catalog_id(8), (0, 0, 0), 4400, |pg| {
        pg[64..192].copy_from_slice(fields.as_bytes());
        pg[graph::node_extent_offset(0)..][..4].copy_from_slice(&9u32.to_le_bytes());
        pg[graph::upper_extent_offset(PAGE as usize, 0)..][..4].copy_from_slice(&10u32.to_le_bytes());
    });
    let records: [(u8, u8, &[u32]); 4] = [
        (graph::NODE_LIVE, 1, &[1, 2]),
        (graph::NODE_LIVE, 0, &[0, 2, 3]),
        (graph::NODE_LIVE, 0, &[0, 1]),
        (graph::NODE_DELETED, 0, &[1]),
    ];
    let nodes = sealed(PageKind::GraphNodes, catalog_id(9), (0, 24, 0), 4400, |pg| {
        for (n, (state, level, list)) in records.iter().enumerate() {
            let at = 64 + 24 * n;
            let header = NodeHeader {
                state: *state,
                level: *level,
                count: U16::new(list.len() as u16),
                upper: U32::ZERO,
            };
            pg[at..at + 8].copy_from_slice(header.as_bytes());
            pg[at + 8..at + 8 + 4 * list.len()].copy_from_slice(list.as_bytes());
        }
    });
    // Slot 0: node 0's empty layer-1 list; slot 1: a free run, the last of its list (link 0).
    let upper = sealed(PageKind::GraphUpper, catalog_id(10), (0, 12, 0), 4400, |_| {});
    GraphPages { meta, nodes, upper }
}

/// The graph pages, valid and damaged.
fn graph_page_vectors(w: &mut Writer, input: &dyn Fn(PageId) -> Value) {
    let g = graph_pages();
    let valid = [
        (
            "page-graph-meta",
            "the graph meta page of an approximate index (catalog page 8): L2, M 2, ef_construction 16, ef_search 64, entry point node 0, 3 live nodes and 1 tombstone, node pages in catalog page 9, upper pages in catalog page 10, upper slot 1 a free run of length 1",
            catalog_id(8),
            &g.meta,
        ),
        (
            "page-graph-nodes",
            "a graph node page (catalog page 9, node page 0, 24-byte records): node 0 level 1 [1, 2], node 1 [0, 2, 3], node 2 [0, 1], node 3 a tombstone [1]",
            catalog_id(9),
            &g.nodes,
        ),
        (
            "page-graph-upper",
            "a graph upper page (catalog page 10, upper page 0, 12-byte slots): all zero (node 0's empty layer-1 list, a free run whose link is 0)",
            catalog_id(10),
            &g.upper,
        ),
    ];
    for (name, description, id, bytes) in valid {
        w.put(name, description, "arena-page", input(id), bytes, Ok(None));
    }
    let damaged = |base: &[u8], change: &dyn Fn(&mut Vec<u8>)| {
        let mut page = base.to_vec();
        change(&mut page);
        page::seal(&mut page);
        page
    };
    let cases: Vec<(&str, &str, PageId, Vec<u8>)> = vec![
        (
            "page-graph-meta-unknown-metric",
            "page-graph-meta with metric 9 (CRC correct)",
            catalog_id(8),
            damaged(&g.meta, &|p| p[64] = 9),
        ),
        (
            "page-graph-meta-pages-disagree",
            "page-graph-meta counting 3 node pages in its one extent of 1 (CRC correct)",
            catalog_id(8),
            damaged(&g.meta, &|p| p[112..116].copy_from_slice(&3u32.to_le_bytes())),
        ),
        (
            "page-graph-meta-m-too-large",
            "page-graph-meta with M 100: 15 lists of 100 ids do not fit a 4 KiB page (CRC correct)",
            catalog_id(8),
            damaged(&g.meta, &|p| p[66..68].copy_from_slice(&100u16.to_le_bytes())),
        ),
        (
            "page-graph-nodes-bad-state",
            "page-graph-nodes whose node 2 has state 7 (CRC correct)",
            catalog_id(9),
            damaged(&g.nodes, &|p| p[64 + 48] = 7),
        ),
        (
            "page-graph-nodes-over-capacity",
            "page-graph-nodes whose node 1 counts 5 neighbours, more than 2M = 4 (CRC correct)",
            catalog_id(9),
            damaged(&g.nodes, &|p| {
                p[64 + 24 + 2..64 + 24 + 4].copy_from_slice(&5u16.to_le_bytes())
            }),
        ),
        (
            "page-graph-nodes-free-not-zero",
            "page-graph-nodes whose free record 5 has level 1 (CRC correct): a free record's header is zero",
            catalog_id(9),
            damaged(&g.nodes, &|p| p[64 + 5 * 24 + 1] = 1),
        ),
        (
            "page-graph-upper-bad-slot-size",
            "page-graph-upper with 13-byte slots, no 4 + 4M (CRC correct)",
            catalog_id(10),
            damaged(&g.upper, &|p| p[28..32].copy_from_slice(&13u32.to_le_bytes())),
        ),
    ];
    for (name, description, id, bytes) in cases {
        w.put(name, description, "arena-page", input(id), &bytes, Err("invalid"));
    }
}

/// Rewrites an archive file's header fields `at..` with `bytes` and reseals its checksums.
fn reseal_archive(file: &mut [u8], at: usize, bytes: &[u8]) {
    file[at..at + bytes.len()].copy_from_slice(bytes);
    let body_crc = crc32c::crc32c(&file[archive::ARCHIVE_HEADER_BYTES..]);
    file[100..104].copy_from_slice(&body_crc.to_le_bytes());
    let end = archive::ARCHIVE_HEADER_BYTES - 4;
    let crc = crc32c::crc32c(&file[..end]);
    file[end..end + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Float32 contents (filter 3, lanes), a major-1 file (filter 1, still read), a major-1 file
/// using filter 3 (unknown to major 1: damaged) and a major-3 file (incompatible).
fn archive_versions(w: &mut Writer, wal_header: ArchiveHeader) {
    let mut rng = 0x0bad_cafe_f00d_d00du64;
    let floats: Vec<u8> = (0..2500)
        .flat_map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) / 16.0).to_le_bytes()
        })
        .chain([1, 2, 3])
        .collect();
    let mut header = wal_header;
    header.segment_no = U64::new(6);
    let input = json!({ "file_name": archive::wal_file_name(6) });
    let lanes = archive::encode(header, &floats);
    let (block, _) = BlockHeader::read_from_prefix(&lanes[archive::ARCHIVE_HEADER_BYTES..]).unwrap();
    assert_eq!(block.filter, archive::FILTER_SHUFFLE4_LANES, "floats go into lanes");
    w.put(
        "archive-lanes",
        "10003 bytes of float32 values and a 3-byte tail: filter 3, random mantissa lanes stored, the exponent lane LZ4",
        "archive",
        input.clone(),
        &lanes,
        Ok(None),
    );
    let mut refused = lanes.clone();
    reseal_archive(&mut refused, 8, &1u16.to_le_bytes());
    w.put(
        "archive-v1-with-lanes",
        "archive-lanes relabelled major version 1, which has no filter 3: damaged",
        "archive",
        input.clone(),
        &refused,
        Err("damaged"),
    );
    let mut newer = lanes.clone();
    reseal_archive(&mut newer, 8, &3u16.to_le_bytes());
    w.put(
        "archive-newer-major",
        "archive-lanes relabelled major version 3: incompatible, not damaged",
        "archive",
        input.clone(),
        &newer,
        Err("incompatible"),
    );
    // A file as major 1 wrote it: one block, filter 1 (shuffle-4, then one LZ4 block).
    let mut shuffled = Vec::new();
    archive::shuffle4(&floats, &mut shuffled);
    let data = lz4_flex::block::compress(&shuffled);
    let mut v1 = archive::encode(header, &[]);
    let block = BlockHeader {
        filter: archive::FILTER_SHUFFLE4_LZ4,
        reserved0: [0; 3],
        raw_len: U32::new(floats.len() as u32),
        stored_len: U32::new(data.len() as u32),
        reserved1: U32::ZERO,
    };
    v1.extend_from_slice(block.as_bytes());
    v1.extend_from_slice(&data);
    let body_len = (v1.len() - archive::ARCHIVE_HEADER_BYTES) as u64;
    let mut fields = Vec::new();
    fields.extend_from_slice(&(floats.len() as u64).to_le_bytes());
    fields.extend_from_slice(&body_len.to_le_bytes());
    fields.extend_from_slice(&crc32c::crc32c(&floats).to_le_bytes());
    reseal_archive(&mut v1, 80, &fields);
    reseal_archive(&mut v1, 8, &1u16.to_le_bytes());
    w.put(
        "archive-v1-shuffle",
        "the floats of archive-lanes as major version 1 wrote them: filter 1, still read",
        "archive",
        input,
        &v1,
        Ok(None),
    );
}
