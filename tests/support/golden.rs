//! Golden vectors of the on-disk format (`format-spec/vectors/`, described in its README.md):
//! the **decoders** that turn a vector's bytes into its expected JSON with the engine's own
//! decoders (`decode_vector`) and the **encoders** that rebuild the bytes from that JSON
//! (`encode_vector`). Used by `tests/conformance.rs`, `tests/reference_vectors.rs` and the
//! generator of the vectors, `regenerate_golden_vectors` in `tests/golden.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use vellum::archive::{self, ArchiveHeader, BlockHeader, KIND_BASE_IMAGE, LaneHeader};
use vellum::format::control::{ArenaExtent, CONTROL_SLOT_BYTES, Control};
use vellum::format::graph::{self, GraphFields};
use vellum::format::index::{MetaFields, Node, NodeKind};
use vellum::format::meta;
use vellum::format::page::{self, PageId, PageKind, Space};
use vellum::format::record::{self, Checkpoint, DirtyPage, Edit, EditKind, Op, Payload, TxnEntry};
use vellum::format::wal::{
    HeaderFault, PageHeader as WalPageHeader, RECORD_HEADER_BYTES, RecordHeader, SEGMENT_HEADER_BYTES, SegmentHeader,
    record_crc,
};
use vellum::storage::{SimStorage, Storage};
use vellum::wal::segment::segment_file_name;
use vellum::wal::{Geometry, LogIdentity, Wal, WalConfig};
use vellum::{Error, Lsn, RecoveryMode, SyncMode};

/// Where the vectors live.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors")
}

// ---------------------------------------------------------------------------------------------
// Fixed parameters of every vector.

pub const PAGE: u32 = 4096;
pub const SEGMENT: u64 = 4096 * 8;
pub const STORE_ID: u64 = 0x5645_4C4C_554D_0001;
pub const DIMENSION: u32 = 4;
/// 2023-11-14T22:13:20Z in µs: every timestamp of every vector is this plus a small offset.
pub const T0: u64 = 1_700_000_000_000_000;

// ---------------------------------------------------------------------------------------------
// JSON helpers.

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "hex string of odd length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// A `u64` that may exceed 2^53 (page ids, store ids): `"0x"` and 16 hex digits.
pub fn hex64(value: u64) -> String {
    format!("{value:#018x}")
}

/// A CRC: `"0x"` and 8 hex digits.
pub fn hex32(value: u32) -> String {
    format!("{value:#010x}")
}

fn parse_hex_u64(value: &Value) -> u64 {
    let text = value.as_str().expect("hex string");
    u64::from_str_radix(text.strip_prefix("0x").expect("0x prefix"), 16).expect("hex number")
}

fn num(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("field {key} is not a number in {value}"))
}

fn hexnum(value: &Value, key: &str) -> u64 {
    parse_hex_u64(&value[key])
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("field {key} is not a string in {value}"))
}

/// The error classes a vector may expect (README.md).
pub fn error_value(kind: &str, message: impl std::fmt::Display) -> Value {
    json!({ "error": kind, "message": message.to_string() })
}

fn engine_error(error: &Error) -> Value {
    let kind = match error {
        Error::Corrupted { .. } => "damaged",
        Error::Incompatible(_) => "incompatible",
        Error::NotFound(_) => "not-found",
        _ => "other",
    };
    error_value(kind, error)
}

fn fault_value(fault: &HeaderFault) -> Value {
    let kind = match fault {
        HeaderFault::Damaged(_) => "damaged",
        HeaderFault::Stale(_) => "stale",
        HeaderFault::Foreign(_) => "foreign",
    };
    error_value(kind, fault)
}

fn decoded(value: Value) -> Value {
    json!({ "decoded": value })
}

// ---------------------------------------------------------------------------------------------
// Decoding: bytes -> {"decoded": …} or {"error": …, "message": …}.

/// Decodes `bytes` as the structure `meta["structure"]` with the parameters `meta["input"]`.
pub fn decode_vector(meta: &Value, bytes: &[u8]) -> Value {
    let input = &meta["input"];
    match text(meta, "structure") {
        "record-payload" => decode_payload_vector(input, bytes),
        "record" => decode_record_vector(input, bytes),
        "wal-page-header" => decode_wal_page_header(input, bytes),
        "segment-header" => decode_segment_header(input, bytes),
        "wal-log" => decode_wal_log(input, bytes),
        "control-file" => decode_control_file(bytes),
        "arena-page" => decode_arena_page(input, bytes),
        "archive" => decode_archive(input, bytes),
        other => panic!("unknown structure {other}"),
    }
}

fn edit_json(edit: &Edit<'_>) -> Value {
    let (name, end, length) = match edit.kind {
        EditKind::Write => ("write", None, edit.after.len()),
        EditKind::Insert { end } => ("insert", Some(end), edit.after.len()),
        EditKind::Remove { end, len } => ("remove", Some(end), len as usize),
        EditKind::Stored { len } => ("stored", None, len as usize),
    };
    let mut json = json!({
        "edit": name,
        "page": hex64(edit.page.0),
        "offset": edit.offset,
        "length": length,
        "before": edit.before.map(hex),
        "after": hex(edit.after),
    });
    if let Some(end) = end {
        json["end"] = json!(end);
    }
    json
}

pub fn payload_json(payload: &Payload<'_>) -> Value {
    match payload {
        Payload::Update { op, id, edits } => json!({
            "kind": "update",
            "op": op.name(),
            "id": id,
            "edits": edits.iter().map(edit_json).collect::<Vec<_>>(),
        }),
        Payload::Clr { undo_next, edits } => json!({
            "kind": "clr",
            "undo_next": undo_next.0,
            "edits": edits.iter().map(edit_json).collect::<Vec<_>>(),
        }),
        Payload::Commit => json!({ "kind": "commit" }),
        Payload::Abort => json!({ "kind": "abort" }),
        Payload::End => json!({ "kind": "end" }),
        Payload::CheckpointBegin => json!({ "kind": "checkpoint-begin" }),
        Payload::CheckpointEnd(c) => json!({
            "kind": "checkpoint-end",
            "begin_lsn": c.begin_lsn.0,
            "next_txn_id": c.next_txn_id,
            "txns": c.txns.iter().map(|t| json!({
                "txn_id": t.txn_id,
                "last_lsn": t.last_lsn.0,
                "undo_next": t.undo_next.0,
                "state": t.state,
            })).collect::<Vec<_>>(),
            "dirty": c.dirty.iter().map(|d| json!({
                "page": hex64(d.page.0),
                "rec_lsn": d.rec_lsn.0,
            })).collect::<Vec<_>>(),
        }),
        Payload::PageInit { page, init } => json!({
            "kind": "page-init",
            "page": hex64(page.0),
            "page_kind": init.kind() as u8,
            "a": init.fields().0,
            "b": init.fields().1,
        }),
    }
}

fn decode_payload_vector(input: &Value, bytes: &[u8]) -> Value {
    match record::decode(
        num(input, "kind") as u8,
        bytes,
        Lsn(num(input, "lsn")),
        num(input, "page_size") as u32,
    ) {
        Ok(payload) => decoded(payload_json(&payload)),
        Err(error) => error_value("invalid", error),
    }
}

fn record_header_json(header: &RecordHeader) -> Map<String, Value> {
    let value = json!({
        "crc": hex32(header.crc.get()),
        "total_len": header.total_len.get(),
        "lsn": header.lsn.get(),
        "prev_lsn": header.prev_lsn.get(),
        "txn_id": header.txn_id.get(),
        "timestamp_us": header.timestamp_us.get(),
        "durable_lsn": header.durable_lsn.get(),
        "kind": header.kind,
        "flags": header.flags,
        "epoch": header.epoch.get(),
    });
    let Value::Object(map) = value else { unreachable!() };
    map
}

/// One record's logical bytes (header and payload, contiguous) read at `input.lsn` with the
/// epoch floor `input.epoch_floor`: section 9's rules 1–6 and 8 (rule 7 needs pages).
fn decode_record_vector(input: &Value, bytes: &[u8]) -> Value {
    let Ok((header, payload)) = RecordHeader::read_from_prefix(bytes) else {
        return error_value("invalid", "shorter than a record header");
    };
    if let Some(reason) = header.check(num(input, "lsn"), num(input, "epoch_floor") as u32) {
        return error_value("invalid", reason);
    }
    if header.total_len.get() as usize != bytes.len() {
        return error_value(
            "invalid",
            format!("total_len {} but {} bytes", header.total_len.get(), bytes.len()),
        );
    }
    if record_crc(&header, &[payload]) != header.crc.get() {
        return error_value("invalid", "record checksum mismatch");
    }
    let mut map = record_header_json(&header);
    match record::decode(
        header.kind,
        payload,
        Lsn(header.lsn.get()),
        num(input, "page_size") as u32,
    ) {
        Ok(p) => map.insert("payload".into(), payload_json(&p)),
        Err(error) => return error_value("invalid", error),
    };
    decoded(Value::Object(map))
}

fn decode_wal_page_header(input: &Value, bytes: &[u8]) -> Value {
    let header = WalPageHeader::read_from_bytes(bytes).expect("32 bytes");
    if bytes.iter().all(|&b| b == 0) {
        return decoded(json!({ "zero": true }));
    }
    if let Err(fault) = header.check(
        num(input, "address"),
        num(input, "timeline") as u32,
        num(input, "epoch_floor") as u32,
    ) {
        return fault_value(&fault);
    }
    decoded(json!({
        "magic": hex(&header.magic.get().to_le_bytes()),
        "version_major": header.version_major.get(),
        "flags": header.flags.get(),
        "page_lsn": header.page_lsn.get(),
        "rem_len": header.rem_len.get(),
        "timeline": header.timeline.get(),
        "epoch": header.epoch.get(),
        "crc": hex32(header.crc.get()),
    }))
}

fn geometry_of(input: &Value) -> Geometry {
    Geometry::new(num(input, "page_size") as u32, num(input, "segment_size")).expect("valid geometry")
}

fn identity_of(input: &Value) -> LogIdentity {
    LogIdentity {
        store_id: hexnum(input, "store_id"),
        timeline: num(input, "timeline") as u32,
    }
}

fn segment_header_json(header: &SegmentHeader) -> Value {
    json!({
        "magic": hex(&header.magic),
        "version_major": header.version_major.get(),
        "version_minor": header.version_minor.get(),
        "page_size": header.page_size_bytes.get(),
        "segment_size": header.segment_size_bytes.get(),
        "segment_no": header.segment_no.get(),
        "base_lsn": header.base_lsn.get(),
        "timeline": header.timeline.get(),
        "store_id": hex64(header.store_id.get()),
        "created_us": header.created_us.get(),
        "crc": hex32(header.crc.get()),
    })
}

fn decode_segment_header(input: &Value, bytes: &[u8]) -> Value {
    let header = SegmentHeader::read_from_bytes(bytes).expect("128 bytes");
    if bytes.iter().all(|&b| b == 0) {
        return decoded(json!({ "not_started": true }));
    }
    match header.check(&geometry_of(input), &identity_of(input), num(input, "segment_no")) {
        Ok(()) => decoded(segment_header_json(&header)),
        Err(fault) => fault_value(&fault),
    }
}

fn mode_of(input: &Value) -> RecoveryMode {
    match text(input, "mode") {
        "strict" => RecoveryMode::Strict,
        "tolerate-torn-tail" => RecoveryMode::TolerateTornTail,
        "skip-corrupted" => RecoveryMode::SkipCorrupted,
        other => panic!("unknown mode {other}"),
    }
}

fn wal_config(input: &Value) -> WalConfig {
    let mut config = WalConfig::new(geometry_of(input), identity_of(input), SyncMode::Never);
    config.background = false;
    config
}

/// A log made of whole segment files, `first_segment`, `first_segment + 1`, … (the `.bin` is
/// their concatenation), read read-only from the oldest segment (section 11).
fn decode_wal_log(input: &Value, bytes: &[u8]) -> Value {
    let sim = SimStorage::new(0);
    let storage: Arc<dyn Storage> = Arc::new(sim);
    let dir = Path::new("/golden/wal");
    storage.create_dir_all(dir).expect("sim dir");
    let first = num(input, "first_segment");
    for (i, chunk) in bytes.chunks(num(input, "segment_size") as usize).enumerate() {
        let file = storage
            .open(&dir.join(segment_file_name(first + i as u64)), true)
            .expect("sim file");
        file.write_at(chunk, 0).expect("sim write");
        file.sync_data().expect("sim sync");
    }
    let (wal, report) = match Wal::open_read_only(storage, dir, wal_config(input), None, mode_of(input)) {
        Ok(opened) => opened,
        Err(error) => return engine_error(&error),
    };
    let page_size = num(input, "page_size") as u32;
    let mut records = Vec::new();
    {
        let mut reader = wal.reader(report.start_lsn).with_skips(&report.skipped);
        loop {
            match reader.next_record() {
                Ok(Some(r)) => {
                    let mut map = record_header_json(r.header);
                    map.insert("end".into(), json!(r.end));
                    let payload = match record::decode(r.header.kind, r.payload, r.lsn, page_size) {
                        Ok(p) => payload_json(&p),
                        Err(error) => error_value("invalid", error),
                    };
                    map.insert("payload".into(), payload);
                    records.push(Value::Object(map));
                }
                Ok(None) => break,
                Err(error) => return engine_error(&error),
            }
        }
    }
    wal.close().expect("closing a read-only log");
    decoded(json!({
        "start_lsn": report.start_lsn.0,
        "end_lsn": report.end_lsn.0,
        "verdict": if report.torn_tail.is_some() { "torn-tail" } else { "clean-end" },
        "torn_tail": report.torn_tail.as_ref().map(|t| json!({
            "lsn": t.lsn.0,
            "garbage_bytes": t.garbage_bytes,
        })),
        "skipped": report.skipped.iter().map(|s| json!({ "from": s.from.0, "to": s.to.0 })).collect::<Vec<_>>(),
        "max_epoch": report.max_epoch,
        "records": records,
    }))
}

pub fn control_json(control: &Control) -> Value {
    let mut value = json!({
        "page_size": control.page_size_bytes,
        "segment_size": control.segment_size_bytes,
        "dimension": control.dimension,
        "timeline": control.timeline,
        "store_id": hex64(control.store_id),
        "sequence": control.sequence,
        "checkpoint_lsn": control.checkpoint_lsn.0,
        "checkpoint_end_lsn": control.checkpoint_end_lsn.0,
        "redo_lsn": control.redo_lsn.0,
        "next_txn_id": control.next_txn_id,
        "created_us": control.created_us,
        "checkpoint_us": control.checkpoint_us,
        "truncate_lsn": control.truncate_lsn.0,
    });
    if let Some(extent) = control.extent {
        value["extent"] = json!({
            "catalog_pages": extent.pages[0],
            "vector_pages": extent.pages[1],
            "catalog_files": extent.files[0],
            "vector_files": extent.files[1],
        });
    }
    value
}

fn decode_control_file(bytes: &[u8]) -> Value {
    if bytes.len() < 2 * CONTROL_SLOT_BYTES {
        return error_value("damaged", "control file shorter than 1024 bytes");
    }
    match Control::newest(Path::new("CONTROL"), bytes) {
        Ok(control) => decoded(control_json(&control)),
        Err(error) => engine_error(&error),
    }
}

fn page_header_json(header: &page::PageHeader) -> Map<String, Value> {
    let value = json!({
        "crc": hex32(header.crc.get()),
        "kind": header.kind,
        "version_major": header.version_major.get(),
        "page_id": hex64(header.page_id.get()),
        "page_lsn": header.page_lsn.get(),
        "a": header.a.get(),
        "b": header.b.get(),
        "c": hex64(header.c.get()),
        "store_id": hex64(header.store_id.get()),
    });
    let Value::Object(map) = value else { unreachable!() };
    map
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

pub fn metadata_json(bytes: &[u8]) -> Result<Value, String> {
    meta::validate(bytes)?;
    let mut pairs = Vec::new();
    let count = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
    let mut at = 2;
    for _ in 0..count {
        let key_len = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
        let value_len = u32_at(bytes, at + 2) as usize;
        let key = std::str::from_utf8(&bytes[at + 6..at + 6 + key_len]).expect("validated");
        let value = std::str::from_utf8(&bytes[at + 6 + key_len..at + 6 + key_len + value_len]).expect("validated");
        pairs.push(json!([key, value]));
        at += 6 + key_len + value_len;
    }
    Ok(Value::Array(pairs))
}

/// A catalog page's slots and entries: the engine's `decode_catalog_page` (14.4, 14.5 rules
/// 1–4 and 7), and the rules of 14.5 one page can show: vector page ids of the vector space,
/// vector slots below the slots per page, an overflow field of the catalog space, no id or vector
/// slot twice.
fn catalog_json(bytes: &[u8], header: &page::PageHeader, dimension: u32) -> Result<Value, String> {
    let entries = page::decode_catalog_page(bytes)?;
    let per_page = page::vector_slots_per_page(bytes.len() as u32, dimension) as u32;
    let mut vector_slots = std::collections::BTreeSet::new();
    let mut slots = Vec::new();
    let mut entries = entries.iter().peekable();
    for i in 0..header.a.get() {
        let Some(entry) = entries.next_if(|e| e.slot == i) else {
            slots.push(json!({ "slot": i, "free": true }));
            continue;
        };
        let head = &entry.header;
        if PageId::from_raw(head.vector_page.get()).map(PageId::space) != Some(Space::Vector)
            || head.vector_slot.get() >= per_page
        {
            return Err(format!("slot {i}: no vector slot of the vector space"));
        }
        if !vector_slots.insert((head.vector_page.get(), head.vector_slot.get())) {
            return Err(format!("slot {i}: a vector slot named twice"));
        }
        let metadata = match entry.inline_meta {
            Some(inline) => metadata_json(inline)?,
            None if PageId::from_raw(head.overflow_page.get()).map(PageId::space) == Some(Space::Catalog) => {
                Value::Null
            }
            None => return Err(format!("slot {i}: overflow page id names no catalog page")),
        };
        slots.push(json!({
            "slot": i,
            "offset": entry.offset,
            "length": entry.len_bytes,
            "vector_page": hex64(head.vector_page.get()),
            "vector_slot": head.vector_slot.get(),
            "flags": head.flags.get(),
            "id": entry.id,
            "meta_len": head.meta_len.get(),
            "overflow_page": hex64(head.overflow_page.get()),
            "metadata": metadata,
        }));
    }
    Ok(json!({ "slot_count": header.a.get(), "entry_start": header.b.get(), "slots": slots }))
}

/// A vector page (14.3): the owner table's entries that are not 0, and the slots that are not
/// all zero. An owner names a catalog page other than the meta page.
fn vector_json(bytes: &[u8], dimension: u32) -> Result<Value, String> {
    let layout = page::VectorLayout::new(bytes.len() as u32, dimension);
    let mut owners = Vec::new();
    let mut nonzero = Vec::new();
    for slot in 0..layout.slots_per_page {
        let at = layout.owner_offset(slot);
        let raw = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        if let Some((catalog_page, entry_offset)) = page::decode_owner(raw) {
            if catalog_page == 0 {
                return Err(format!("slot {slot}: its owner names the meta page"));
            }
            owners.push(json!({ "slot": slot, "catalog_page": catalog_page, "entry_offset": entry_offset }));
        }
        let at = layout.slot_offset(slot);
        let vector = &bytes[at..at + layout.stride_bytes];
        if vector.iter().any(|&b| b != 0) {
            let values: Vec<f64> = vector[..4 * dimension as usize]
                .chunks(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect();
            nonzero.push(json!({ "slot": slot, "vector": values }));
        }
    }
    Ok(json!({
        "stride": layout.stride_bytes,
        "slots_per_page": layout.slots_per_page,
        "slots_offset": layout.slots_offset,
        "owners": owners,
        "nonzero_slots": nonzero,
    }))
}

/// A page id the index or a list names: 0 (none), or a page id of `space` (catalog-space pages
/// other than the meta page). The engine checks this where it follows the link.
fn link_ok(raw: u64, space: Space) -> bool {
    raw == 0 || PageId::from_raw(raw).is_some_and(|p| p.space() == space && (space == Space::Vector || p.page_no() > 0))
}

/// The meta page (14.9): the engine's `MetaFields::check`, and the spaces of the page ids it names.
fn meta_json(bytes: &[u8]) -> Result<Value, String> {
    let fields = MetaFields::read(bytes).ok_or("a page too small for the meta fields")?;
    if let Some(reason) = fields.check(bytes) {
        return Err(reason);
    }
    let named = [
        (fields.root.get(), Space::Catalog),
        (fields.hot_catalog.get(), Space::Catalog),
        (fields.vector_list.head.get(), Space::Vector),
        (fields.vector_list.tail.get(), Space::Vector),
        (fields.roomy_list.head.get(), Space::Catalog),
        (fields.roomy_list.tail.get(), Space::Catalog),
        (fields.free_list.head.get(), Space::Catalog),
        (fields.free_list.tail.get(), Space::Catalog),
    ];
    if let Some((raw, _)) = named.iter().find(|(raw, space)| !link_ok(*raw, *space)) {
        return Err(format!("meta page: {raw:#x} is no page of its space"));
    }
    let ends =
        |l: &vellum::format::index::ListEnds| json!({ "head": hex64(l.head.get()), "tail": hex64(l.tail.get()) });
    Ok(json!({
        "root": hex64(fields.root.get()),
        "height": fields.height.get(),
        "count": fields.count.get(),
        "vector_pages": fields.vector_pages.get(),
        "catalog_pages": fields.catalog_pages.get(),
        "graph": fields.graph.get(),
        "hot_catalog": hex64(fields.hot_catalog.get()),
        "vector_list": ends(&fields.vector_list),
        "roomy_list": ends(&fields.roomy_list),
        "free_list": ends(&fields.free_list),
    }))
}

/// An index node (14.10): the engine's `Node::parse` and `Node::check`, and child page ids of the
/// catalog space (the engine checks them where it follows them).
fn node_json(bytes: &[u8]) -> Result<Value, String> {
    let node = Node::parse(bytes)?;
    node.check()?;
    let mut cells = Vec::new();
    for i in 0..node.count {
        let offset = node.cell_offset(i)?;
        let key = hex(node.key(i)?);
        let head = hex(&node.head(i).to_be_bytes());
        cells.push(match node.kind {
            NodeKind::Leaf => {
                let v = node.value(i)?;
                json!({
                    "offset": offset,
                    "head": head,
                    "key": key,
                    "vector_page": v.vector_page.get(),
                    "vector_slot": v.vector_slot.get(),
                    "catalog_page": v.catalog_page.get(),
                    "catalog_slot": v.catalog_slot.get(),
                    "entry_offset": v.entry_offset.get(),
                    "entry_len": v.entry_len.get(),
                })
            }
            NodeKind::Branch => {
                let child = node.child(i + 1)?;
                if !link_ok(child, Space::Catalog) {
                    return Err(format!("cell {i}: child {child:#x} is no catalog page"));
                }
                json!({ "offset": offset, "head": head, "key": key, "child": hex64(child) })
            }
        });
    }
    if node.kind == NodeKind::Branch && !link_ok(node.leftmost, Space::Catalog) {
        return Err(format!("leftmost child {:#x} is no catalog page", node.leftmost));
    }
    let mut body = json!({
        "cell_count": node.count,
        "data_start": node.data_start,
        "key_prefix": hex(node.prefix),
        "cells": cells,
    });
    if node.kind == NodeKind::Branch {
        body["leftmost"] = json!(hex64(node.leftmost));
    }
    Ok(body)
}

/// The graph meta page's body (FORMAT.md 14.13).
fn graph_meta_json(bytes: &[u8]) -> Result<Value, String> {
    let fields = GraphFields::read(bytes).ok_or("a page too small for the graph fields")?;
    if let Some(reason) = fields.check(bytes) {
        return Err(reason);
    }
    let table = |offset: usize, count: u16| -> Vec<u32> {
        (0..usize::from(count))
            .map(|k| u32::from_le_bytes(bytes[offset + 4 * k..offset + 4 * k + 4].try_into().unwrap()))
            .collect()
    };
    let free_runs: Vec<Value> = (1..graph::FREE_RUN_LISTS)
        .filter(|&len| fields.free_runs[len].get() != 0)
        .map(|len| json!({ "length": len, "first_slot": fields.free_runs[len].get() - 1 }))
        .collect();
    Ok(json!({
        "metric": fields.metric,
        "m": fields.m.get(),
        "ef_construction": fields.ef_construction.get(),
        "ef_search": fields.ef_search.get(),
        "extent_shift": fields.extent_shift,
        "seed": hex64(fields.seed.get()),
        "entry_point": fields.entry_node(),
        "live": fields.live.get(),
        "tombstones": fields.deleted.get(),
        "node_pages": fields.node_pages.get(),
        "upper_pages": fields.upper_pages.get(),
        "upper_next": fields.upper_next.get(),
        "node_extents": table(graph::GRAPH_EXTENTS_OFFSET, fields.node_extents.get()),
        "upper_extents": table(graph::upper_extent_offset(bytes.len(), 0), fields.upper_extents.get()),
        "free_runs": free_runs,
    }))
}

/// A graph node page's body (FORMAT.md 14.13, node pages): its records that are not free.
fn graph_nodes_json(bytes: &[u8]) -> Result<Value, String> {
    let (m, records) = graph::decode_node_page(bytes)?;
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "record": r.index,
                "state": if r.state == graph::NODE_LIVE { "live" } else { "deleted" },
                "level": r.level,
                "upper": r.upper,
                "neighbours": r.neighbours,
            })
        })
        .collect();
    Ok(json!({ "m": m, "records": records }))
}

/// A graph upper page's body (FORMAT.md 14.13, upper pages): its slots that are not all zero.
fn graph_upper_json(bytes: &[u8]) -> Result<Value, String> {
    let (m, slots) = graph::decode_upper_page(bytes)?;
    let slots: Vec<Value> = slots
        .iter()
        .map(|(slot, count, ids)| json!({ "slot": slot, "count": count, "ids": ids }))
        .collect();
    Ok(json!({ "m": m, "slots": slots }))
}

/// One arena page read at the position of `input.page_id` of the store `input.store_id` (14.2),
/// and its body by kind.
fn decode_arena_page(input: &Value, bytes: &[u8]) -> Value {
    let id = PageId(hexnum(input, "page_id"));
    let page_size = bytes.len();
    let owner_check = || {
        input
            .get("store_id")
            .and_then(|_| page::check_owner(bytes, id, hexnum(input, "store_id")))
    };
    if let Some(reason) = page::check_page(bytes, id).or_else(owner_check) {
        return error_value("invalid", reason);
    }
    if bytes.iter().all(|&b| b == 0) {
        return decoded(json!({ "zero": true }));
    }
    let header = page::PageHeader::read_from_prefix(bytes).unwrap().0;
    let mut map = page_header_json(&header);
    let dimension = num(input, "dimension") as u32;
    let body = match PageKind::from_u8(header.kind) {
        Some(PageKind::Vector) => vector_json(bytes, dimension),
        Some(PageKind::Catalog) => catalog_json(bytes, &header, dimension),
        Some(PageKind::Overflow) => {
            let used = header.a.get() as usize;
            if used > page_size - 64 {
                Err("overflow page holds more than fits".to_string())
            } else if !link_ok(header.c.get(), Space::Catalog) {
                Err("overflow page: its next page is no catalog page".to_string())
            } else {
                Ok(json!({ "next": hex64(header.c.get()), "data": hex(&bytes[64..64 + used]) }))
            }
        }
        Some(PageKind::Meta) => meta_json(bytes),
        Some(PageKind::IndexLeaf | PageKind::IndexBranch) => node_json(bytes),
        Some(PageKind::GraphMeta) => graph_meta_json(bytes),
        Some(PageKind::GraphNodes) => graph_nodes_json(bytes),
        Some(PageKind::GraphUpper) => graph_upper_json(bytes),
        Some(PageKind::Zero | PageKind::Free) | None => Ok(Value::Null),
    };
    match body {
        Ok(body) => map.insert("body".into(), body),
        Err(reason) => return error_value("invalid", reason),
    };
    decoded(Value::Object(map))
}

pub fn archive_header_json(header: &ArchiveHeader) -> Map<String, Value> {
    let value = json!({
        "magic": hex(&header.magic),
        "version_major": header.version_major.get(),
        "version_minor": header.version_minor.get(),
        "kind": header.kind,
        "store_id": hex64(header.store_id.get()),
        "timeline": header.timeline.get(),
        "page_size": header.page_size_bytes.get(),
        "segment_size": header.segment_size_bytes.get(),
        "segment_no": header.segment_no.get(),
        "first_lsn": header.first_lsn.get(),
        "end_lsn": header.end_lsn.get(),
        "first_us": header.first_us.get(),
        "last_us": header.last_us.get(),
        "raw_len": header.raw_len.get(),
        "compressed_len": header.compressed_len.get(),
        "raw_crc": hex32(header.raw_crc.get()),
        "compressed_crc": hex32(header.compressed_crc.get()),
        "truncate_lsn": header.truncate_lsn.get(),
        "next_txn_id": header.next_txn_id.get(),
        "dimension": header.dimension.get(),
        "catalog_files": header.catalog_files.get(),
        "vector_files": header.vector_files.get(),
        "crc": hex32(header.crc.get()),
    });
    let Value::Object(map) = value else { unreachable!() };
    map
}

fn decode_archive(input: &Value, bytes: &[u8]) -> Value {
    let file = match archive::decode(Path::new(text(input, "file_name")), bytes) {
        Ok(file) => file,
        Err(error) => return engine_error(&error),
    };
    let mut map = archive_header_json(&file.header);
    let mut blocks = Vec::new();
    let mut body = &bytes[archive::ARCHIVE_HEADER_BYTES..];
    while !body.is_empty() {
        let (block, rest) = BlockHeader::read_from_prefix(body).expect("decoded already");
        let mut entry = json!({
            "filter": block.filter,
            "raw_len": block.raw_len.get(),
            "stored_len": block.stored_len.get(),
        });
        if block.filter == archive::FILTER_SHUFFLE4_LANES {
            let mut data = &rest[..block.stored_len.get() as usize];
            let mut lanes = Vec::new();
            for _ in 0..4 {
                let (lane, after) = LaneHeader::read_from_prefix(data).expect("decoded already");
                lanes.push(json!({ "filter": lane.filter, "stored_len": lane.stored_len.get() }));
                data = &after[lane.stored_len.get() as usize..];
            }
            entry["lanes"] = Value::Array(lanes);
        }
        blocks.push(entry);
        body = &rest[block.stored_len.get() as usize..];
    }
    map.insert("blocks".into(), Value::Array(blocks));
    // The contents, as a list of files and their non-zero pages.
    let segment_size = file.header.segment_size_bytes.get() as usize;
    let page_size = file.header.page_size_bytes.get() as usize;
    let names: Vec<String> = if file.header.kind == KIND_BASE_IMAGE {
        (0..file.header.catalog_files.get())
            .map(|n| format!("catalog-{n:08x}.pages"))
            .chain((0..file.header.vector_files.get()).map(|n| format!("vector-{n:08x}.pages")))
            .collect()
    } else {
        vec![segment_file_name(file.header.segment_no.get())]
    };
    let files: Vec<Value> = file
        .contents
        .chunks(segment_size)
        .zip(&names)
        .map(|(chunk, name)| {
            let pages: Vec<usize> = chunk
                .chunks(page_size)
                .enumerate()
                .filter(|(_, p)| !p.iter().all(|&b| b == 0))
                .map(|(i, _)| i)
                .collect();
            json!({ "name": name, "crc32c": hex32(crc32c::crc32c(chunk)), "nonzero_pages": pages })
        })
        .collect();
    map.insert("contents".into(), Value::Array(files));
    decoded(Value::Object(map))
}

// ---------------------------------------------------------------------------------------------
// Encoding: decoded JSON -> bytes (for the structures that have an encoder).

struct OwnedEdit {
    page: PageId,
    offset: u32,
    before: Option<Vec<u8>>,
    after: Vec<u8>,
    kind: EditKind,
}

fn owned_edits(value: &Value) -> Vec<OwnedEdit> {
    value
        .as_array()
        .expect("edit list")
        .iter()
        .map(|e| OwnedEdit {
            page: PageId(hexnum(e, "page")),
            offset: num(e, "offset") as u32,
            before: e["before"].as_str().map(unhex),
            after: unhex(text(e, "after")),
            kind: match e["edit"].as_str().unwrap_or("write") {
                "write" => EditKind::Write,
                "insert" => EditKind::Insert {
                    end: num(e, "end") as u32,
                },
                "remove" => EditKind::Remove {
                    end: num(e, "end") as u32,
                    len: num(e, "length") as u32,
                },
                "stored" => EditKind::Stored {
                    len: num(e, "length") as u32,
                },
                other => panic!("edit kind {other}"),
            },
        })
        .collect()
}

fn borrow_edits(edits: &[OwnedEdit]) -> Vec<Edit<'_>> {
    edits
        .iter()
        .map(|e| Edit {
            page: e.page,
            offset: e.offset,
            after: &e.after,
            before: e.before.as_deref(),
            kind: e.kind,
        })
        .collect()
}

/// The payload bytes of a decoded payload (record.rs encoders).
pub fn encode_payload(p: &Value) -> Vec<u8> {
    match text(p, "kind") {
        "update" => {
            let op = match text(p, "op") {
                "insert" => Op::Insert,
                "upsert" => Op::Upsert,
                "delete" => Op::Delete,
                "batch" => Op::Batch,
                "index" => Op::Index,
                other => panic!("op {other}"),
            };
            let edits = owned_edits(&p["edits"]);
            record::encode_update(op, text(p, "id"), &borrow_edits(&edits))
        }
        "clr" => {
            let edits = owned_edits(&p["edits"]);
            record::encode_clr(Lsn(num(p, "undo_next")), &borrow_edits(&edits))
        }
        "commit" | "abort" | "end" | "checkpoint-begin" => Vec::new(),
        "checkpoint-end" => record::encode_checkpoint(&Checkpoint {
            begin_lsn: Lsn(num(p, "begin_lsn")),
            next_txn_id: num(p, "next_txn_id"),
            txns: p["txns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| TxnEntry {
                    txn_id: num(t, "txn_id"),
                    last_lsn: Lsn(num(t, "last_lsn")),
                    undo_next: Lsn(num(t, "undo_next")),
                    state: num(t, "state") as u8,
                })
                .collect(),
            dirty: p["dirty"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| DirtyPage {
                    page: PageId(hexnum(d, "page")),
                    rec_lsn: Lsn(num(d, "rec_lsn")),
                })
                .collect(),
        }),
        "page-init" => record::encode_page_init(
            PageId(hexnum(p, "page")),
            record::PageInit::new(
                PageKind::from_u8(num(p, "page_kind") as u8).expect("a valid vector's page kind"),
                num(p, "a") as u32,
                num(p, "b") as u32,
            ),
        ),
        other => panic!("payload kind {other}"),
    }
}

/// A record's logical bytes from its decoded header fields and payload (the CRC recomputed).
pub fn encode_record(r: &Value) -> Vec<u8> {
    let payload = encode_payload(&r["payload"]);
    let mut header = RecordHeader {
        crc: U32::ZERO,
        total_len: U32::new((RECORD_HEADER_BYTES + payload.len()) as u32),
        lsn: U64::new(num(r, "lsn")),
        prev_lsn: U64::new(num(r, "prev_lsn")),
        txn_id: U64::new(num(r, "txn_id")),
        timestamp_us: U64::new(num(r, "timestamp_us")),
        durable_lsn: U64::new(num(r, "durable_lsn")),
        kind: num(r, "kind") as u8,
        flags: num(r, "flags") as u8,
        reserved0: U16::ZERO,
        epoch: U32::new(num(r, "epoch") as u32),
    };
    header.crc = U32::new(record_crc(&header, &[&payload]));
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

fn control_from_json(c: &Value) -> Control {
    Control {
        page_size_bytes: num(c, "page_size") as u32,
        segment_size_bytes: num(c, "segment_size"),
        dimension: num(c, "dimension") as u32,
        timeline: num(c, "timeline") as u32,
        store_id: hexnum(c, "store_id"),
        sequence: num(c, "sequence"),
        checkpoint_lsn: Lsn(num(c, "checkpoint_lsn")),
        checkpoint_end_lsn: Lsn(num(c, "checkpoint_end_lsn")),
        redo_lsn: Lsn(num(c, "redo_lsn")),
        next_txn_id: num(c, "next_txn_id"),
        created_us: num(c, "created_us"),
        checkpoint_us: num(c, "checkpoint_us"),
        truncate_lsn: Lsn(num(c, "truncate_lsn")),
        extent: c.get("extent").map(|e| ArenaExtent {
            pages: [num(e, "catalog_pages"), num(e, "vector_pages")],
            files: [num(e, "catalog_files") as u32, num(e, "vector_files") as u32],
        }),
    }
}

/// Re-encodes a valid vector from its decoded JSON, where an encoder exists. Returns the bytes
/// expected and the range of the `.bin` they must equal; `None` if the structure has none.
pub fn encode_vector(meta: &Value, decoded: &Value, bin: &[u8]) -> Option<(Vec<u8>, std::ops::Range<usize>)> {
    let input = &meta["input"];
    let whole = 0..bin.len();
    match text(meta, "structure") {
        "record-payload" => Some((encode_payload(decoded), whole)),
        "record" => Some((encode_record(decoded), whole)),
        "wal-page-header" if decoded.get("zero").is_none() => Some((
            WalPageHeader::new(
                num(decoded, "page_lsn"),
                num(decoded, "rem_len") as u32,
                num(decoded, "timeline") as u32,
                num(decoded, "epoch") as u32,
            )
            .as_bytes()
            .to_vec(),
            whole,
        )),
        "segment-header" if decoded.get("not_started").is_none() => {
            // The minor version records which writer made the segment (vectors of minor 0 stay
            // valid): it is taken from the vector, and the header resealed.
            let mut header = SegmentHeader::new(
                &geometry_of(input),
                &identity_of(input),
                num(decoded, "segment_no"),
                num(decoded, "created_us"),
            );
            header.version_minor = U16::new(num(decoded, "version_minor") as u16);
            header.crc = U32::new(crc32c::crc32c(&header.as_bytes()[..SEGMENT_HEADER_BYTES - 4]));
            Some((header.as_bytes().to_vec(), whole))
        }
        "control-file" => {
            // The slot in force is the one the writer wrote with that sequence number.
            let control = control_from_json(decoded);
            let slot = (control.sequence % 2) as usize * CONTROL_SLOT_BYTES;
            Some((control.to_slot().as_bytes().to_vec(), slot..slot + CONTROL_SLOT_BYTES))
        }
        "archive" if num(decoded, "version_major") == u64::from(archive::ARCHIVE_VERSION_MAJOR) => {
            // Encoding is deterministic given the header fields and the contents (older majors
            // are read, never written).
            let file = archive::decode(Path::new("x"), bin).expect("a valid vector");
            let mut header = ArchiveHeader::new_zeroed();
            header.kind = num(decoded, "kind") as u8;
            header.store_id = U64::new(hexnum(decoded, "store_id"));
            header.timeline = U32::new(num(decoded, "timeline") as u32);
            header.page_size_bytes = U32::new(num(decoded, "page_size") as u32);
            header.segment_size_bytes = U64::new(num(decoded, "segment_size"));
            header.segment_no = U64::new(num(decoded, "segment_no"));
            header.first_lsn = U64::new(num(decoded, "first_lsn"));
            header.end_lsn = U64::new(num(decoded, "end_lsn"));
            header.first_us = U64::new(num(decoded, "first_us"));
            header.last_us = U64::new(num(decoded, "last_us"));
            header.truncate_lsn = U64::new(num(decoded, "truncate_lsn"));
            header.next_txn_id = U64::new(num(decoded, "next_txn_id"));
            header.dimension = U32::new(num(decoded, "dimension") as u32);
            header.catalog_files = U32::new(num(decoded, "catalog_files") as u32);
            header.vector_files = U32::new(num(decoded, "vector_files") as u32);
            Some((archive::encode(header, &file.contents), whole))
        }
        "arena-page" if decoded.get("zero").is_none() => {
            // The page CRC is the encoder: resealing reproduces the page.
            let mut page = bin.to_vec();
            page[..4].fill(0);
            page::seal(&mut page);
            Some((page, whole))
        }
        _ => None,
    }
}
