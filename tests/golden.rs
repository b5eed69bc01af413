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
use vellum::format::control::Control;
use vellum::format::meta;
use vellum::format::page::{self, CatalogSlot, EntryHeader, PageId, PageKind, Space};
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

/// The arena images every vector shares: (catalog page 0, overflow page 1, vector page 0).
struct Arena {
    catalog: Vec<u8>,
    overflow: Vec<u8>,
    vector: Vec<u8>,
    meta: Vec<u8>,
}

fn arena_pages() -> Arena {
    let p = PAGE as usize;
    let mut meta_bytes = Vec::new();
    meta::encode(&[("lang", "en"), ("source", "golden")], &mut meta_bytes);
    // Overflow page 1: the metadata of "alpha".
    let mut overflow = vec![0u8; p];
    let mut header = page::new_header(PageKind::Overflow, catalog_id(1), meta_bytes.len() as u32, 0);
    header.page_lsn = U64::new(4240);
    overflow[..64].copy_from_slice(header.as_bytes());
    overflow[64..64 + meta_bytes.len()].copy_from_slice(&meta_bytes);
    page::seal(&mut overflow);
    // Catalog page 0: "alpha" (metadata in the overflow chain) and "beta" (inline metadata).
    let mut catalog = vec![0u8; p];
    let alpha = {
        let mut e = EntryHeader::new_zeroed();
        e.vector_page = U64::new(vector_id(0).0);
        e.vector_slot = U32::new(0);
        e.flags = U16::new(page::ENTRY_FLAG_OVERFLOW);
        e.id_len = U16::new(5);
        e.meta_len = U32::new(meta_bytes.len() as u32);
        e.overflow_page = U64::new(catalog_id(1).0);
        let mut v = e.as_bytes().to_vec();
        v.extend_from_slice(b"alpha");
        v
    };
    let beta = {
        let mut inline = Vec::new();
        meta::encode(&[("k", "v")], &mut inline);
        let mut e = EntryHeader::new_zeroed();
        e.vector_page = U64::new(vector_id(0).0);
        e.vector_slot = U32::new(1);
        e.id_len = U16::new(4);
        e.meta_len = U32::new(inline.len() as u32);
        let mut v = e.as_bytes().to_vec();
        v.extend_from_slice(b"beta");
        v.extend_from_slice(&inline);
        v
    };
    let alpha_at = p - alpha.len();
    let beta_at = alpha_at - beta.len();
    catalog[alpha_at..].copy_from_slice(&alpha);
    catalog[beta_at..alpha_at].copy_from_slice(&beta);
    for (i, (at, len)) in [(alpha_at, alpha.len()), (beta_at, beta.len())].into_iter().enumerate() {
        let slot = CatalogSlot {
            offset: U32::new(at as u32),
            len_bytes: U32::new(len as u32),
        };
        catalog[64 + 8 * i..72 + 8 * i].copy_from_slice(slot.as_bytes());
    }
    let mut header = page::new_header(PageKind::Catalog, catalog_id(0), 2, beta_at as u32);
    header.page_lsn = U64::new(4296);
    catalog[..64].copy_from_slice(header.as_bytes());
    page::seal(&mut catalog);
    // Vector page 0: dimension 4, stride 16, two vectors.
    let mut vector = vec![0u8; p];
    let mut header = page::new_header(PageKind::Vector, vector_id(0), DIMENSION, 16);
    header.page_lsn = U64::new(4296);
    vector[..64].copy_from_slice(header.as_bytes());
    vector[64..80].copy_from_slice(&floats(&[0.5, -1.0, 2.25, 0.0]));
    vector[80..96].copy_from_slice(&floats(&[1.0, 2.0, 3.0, 4.0]));
    page::seal(&mut vector);
    Arena {
        catalog,
        overflow,
        vector,
        meta: meta_bytes,
    }
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

    // ---- Record payloads (section 15).
    let vector_bytes = floats(&[0.5, -1.0, 2.25, 0.0]);
    let slot_after = [0xd8u8, 0x0f, 0, 0, 0x2d, 0, 0, 0];
    let insert_edits = [
        Edit {
            page: vec0,
            offset: 64,
            after: &vector_bytes,
            before: None,
            kind: EditKind::Write,
        },
        Edit {
            page: cat0,
            offset: 4051,
            after: b"alpha-entry-bytes",
            before: None,
            kind: EditKind::Write,
        },
        Edit {
            page: cat0,
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
            page: cat0,
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
    let clr = record::encode_clr(
        Lsn(4128),
        &[Edit {
            page: cat0,
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
    let init = record::encode_page_init(cat0, record::PageInit::new(PageKind::Catalog, 0, PAGE));
    w.put(
        "payload-page-init",
        "page-init of catalog page 0 (a = 0, b = P)",
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
    ] {
        let page = if init.kind() == PageKind::Vector { vec0 } else { cat1 };
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
    bad_kind[8] = 6;
    w.put(
        "payload-page-init-bad-kind",
        "a page-init of page kind 6 (kinds 0-3 are defined)",
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
    newer.version_major = U16::new(2);
    newer.flags = U16::new(0x8000);
    newer.crc = U32::new(crc32c::crc32c(&newer.as_bytes()[..28]));
    w.put(
        "wal-page-header-newer-major",
        "major version 2 with a flag bit version 1 does not define (CRC correct): foreign, not damaged",
        "wal-page-header",
        json!({ "address": 4096, "timeline": 1, "epoch_floor": 0 }),
        newer.as_bytes(),
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
            page: vec0,
            offset: 96,
            after: &big_after,
            before: Some(&big_before),
            kind: EditKind::Write,
        }],
    );
    let undo = record::encode_clr(
        Lsn(0),
        &[Edit {
            page: vec0,
            offset: 96,
            after: &big_before,
            before: None,
            kind: EditKind::Write,
        }],
    );
    let records = vec![
        (
            spec(Kind::PageInit, 0, 1),
            record::encode_page_init(cat0, record::PageInit::new(PageKind::Catalog, 0, PAGE)),
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
        (spec(Kind::CheckpointBegin, 0, 9), Vec::new()),
    ];
    let (_, placed) = engine_log(0, 1, &records);
    let begin = placed.last().unwrap().0;
    let mut records = records;
    let checkpoint_end = record::encode_checkpoint(&Checkpoint {
        begin_lsn: Lsn(begin),
        next_txn_id: 3,
        txns: vec![],
        dirty: vec![DirtyPage {
            page: vec0,
            rec_lsn: Lsn(placed[4].0),
        }],
    });
    records.push((spec(Kind::CheckpointEnd, 0, 10), checkpoint_end));
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
    let (restored, _) = engine_log(2, 2, &records[8..]);
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
        next_txn_id: 3,
        created_us: T0,
        checkpoint_us: T0 + 10,
        truncate_lsn: Lsn(begin),
        extent: None,
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
    let mut v2 = older.to_slot();
    v2.version_major = U16::new(2);
    v2.crc = U32::new(crc32c::crc32c(&v2.as_bytes()[..508]));
    let mut incompatible = v2.as_bytes().to_vec();
    incompatible.extend_from_slice(&torn_control[512..]);
    w.put(
        "control-incompatible",
        "slot 0 of major version 2 (CRC correct), slot 1 torn: incompatible",
        "control-file",
        json!({}),
        &incompatible,
        Err("incompatible"),
    );
    let mut beside_valid = v2.as_bytes().to_vec();
    beside_valid.extend_from_slice(&file[512..]);
    w.put(
        "control-newer-major-beside-valid",
        "slot 0 of major version 2 (CRC correct), slot 1 a valid major-1 copy: still incompatible",
        "control-file",
        json!({}),
        &beside_valid,
        Err("incompatible"),
    );

    // ---- Arena pages (section 14).
    let page_input = |id: PageId| json!({ "page_id": hex64(id.0), "page_size": PAGE, "dimension": DIMENSION });
    w.put(
        "page-catalog",
        "sealed catalog page 0: \"alpha\" (metadata in overflow page 1) and \"beta\" (inline metadata)",
        "arena-page",
        page_input(cat0),
        &arena.catalog,
        Ok(None),
    );
    w.put(
        "page-vector",
        "sealed vector page 0, dimension 4: two vectors in slots 0 and 1",
        "arena-page",
        page_input(vec0),
        &arena.vector,
        Ok(None),
    );
    w.put(
        "page-zero",
        "a never-written page (all zero): valid, of kind zero",
        "arena-page",
        page_input(catalog_id(2)),
        &vec![0u8; PAGE as usize],
        Ok(None),
    );
    w.put(
        "page-overflow",
        "sealed overflow page (catalog page 1): the metadata of \"alpha\", last of its chain",
        "arena-page",
        page_input(cat1),
        &arena.overflow,
        Ok(None),
    );
    let mut flipped = arena.catalog.clone();
    flipped[4000] ^= 0x04;
    w.put(
        "page-catalog-flipped-bit",
        "page-catalog with one bit flipped: the CRC fails",
        "arena-page",
        page_input(cat0),
        &flipped,
        Err("invalid"),
    );
    w.put(
        "page-catalog-wrong-id",
        "page-catalog read at the position of catalog page 2",
        "arena-page",
        page_input(catalog_id(2)),
        &arena.catalog,
        Err("invalid"),
    );
    w.put(
        "page-overflow-in-vector-space",
        "page-overflow read as vector page 1 (wrong id and kind)",
        "arena-page",
        page_input(vector_id(1)),
        &arena.overflow,
        Err("invalid"),
    );
    assert_eq!(
        metadata_json(&arena.meta).unwrap(),
        json!([["lang", "en"], ["source", "golden"]])
    );

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
    wal_header.last_us = U64::new(T0 + 10);
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
    base_contents[..PAGE as usize].copy_from_slice(&arena.catalog);
    base_contents[PAGE as usize..2 * PAGE as usize].copy_from_slice(&arena.overflow);
    base_contents[SEGMENT as usize..SEGMENT as usize + PAGE as usize].copy_from_slice(&arena.vector);
    let mut base_header = wal_header;
    base_header.kind = KIND_BASE_IMAGE;
    base_header.segment_no = U64::new(0);
    base_header.first_lsn = U64::new(begin);
    base_header.end_lsn = U64::new(last);
    base_header.first_us = U64::new(T0 + 10);
    base_header.last_us = U64::new(T0 + 10);
    base_header.truncate_lsn = U64::new(begin);
    base_header.next_txn_id = U64::new(3);
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
