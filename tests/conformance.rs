//! Conformance with the golden vectors in `format-spec/vectors/` (see its README.md).
//!
//! For every `<name>.bin` / `<name>.json` pair: decode the bytes with the engine's decoders and
//! compare with the JSON's `decoded` object exactly, or with its `error` class (the `message`
//! is informative and not compared); then, for every valid vector of a structure with an
//! encoder, encode again from the decoded JSON and compare byte for byte.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use support::golden;
use vellum::format::page::{PageId, Space};
use vellum::format::record::{self, Edit, EditKind, Payload};

fn vectors() -> Vec<(String, Value, Vec<u8>)> {
    let dir = golden::vectors_dir();
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("format-spec/vectors exists") {
        let path = entry.unwrap().path();
        if matches!(path.extension().and_then(|e| e.to_str()), Some("bin" | "json")) {
            names.insert(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    names
        .into_iter()
        .map(|name| {
            let json = std::fs::read_to_string(dir.join(format!("{name}.json")))
                .unwrap_or_else(|e| panic!("{name}.json: {e}"));
            let bin = std::fs::read(dir.join(format!("{name}.bin"))).unwrap_or_else(|e| panic!("{name}.bin: {e}"));
            let meta: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}.json: {e}"));
            (name, meta, bin)
        })
        .collect()
}

#[test]
fn every_vector_decodes_as_expected() {
    let all = vectors();
    assert!(all.len() >= 40, "only {} vectors", all.len());
    let mut failures = Vec::new();
    for (name, meta, bin) in &all {
        let got = golden::decode_vector(meta, bin);
        match (meta.get("decoded"), meta.get("error")) {
            (Some(want), None) => {
                if got.get("decoded") != Some(want) {
                    failures.push(format!(
                        "{name}: expected\n{}\ngot\n{}",
                        serde_json::to_string_pretty(want).unwrap(),
                        serde_json::to_string_pretty(&got).unwrap()
                    ));
                }
            }
            (None, Some(kind)) => {
                if got.get("error") != Some(kind) {
                    failures.push(format!("{name}: expected error {kind}, got {got}"));
                }
            }
            _ => failures.push(format!("{name}.json has neither `decoded` nor `error` (or both)")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors fail:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_vectors_encode_back_byte_for_byte() {
    let mut encoded = 0;
    let mut failures = Vec::new();
    for (name, meta, bin) in &vectors() {
        let Some(decoded) = meta.get("decoded") else { continue };
        let Some((bytes, range)) = golden::encode_vector(meta, decoded, bin) else {
            continue;
        };
        encoded += 1;
        if bytes.as_slice() != &bin[range.clone()] {
            let first = bytes.iter().zip(&bin[range.clone()]).position(|(a, b)| a != b);
            failures.push(format!(
                "{name}: re-encoding differs in bytes {range:?} (lengths {} and {}, first difference at {first:?})",
                bytes.len(),
                range.len()
            ));
        }
    }
    assert!(encoded >= 20, "only {encoded} vectors were re-encoded");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// In the engine-written logs, every record that lies within one page re-encodes to the bytes
/// at its LSN (records that span pages are split by page headers).
#[test]
fn logged_records_encode_back_at_their_lsn() {
    let mut checked = 0;
    for (name, meta, bin) in &vectors() {
        if meta["structure"] != "wal-log" {
            continue;
        }
        let Some(decoded) = meta.get("decoded") else { continue };
        let input = &meta["input"];
        let base = input["first_segment"].as_u64().unwrap() * input["segment_size"].as_u64().unwrap();
        let page = input["page_size"].as_u64().unwrap();
        for record in decoded["records"].as_array().unwrap() {
            let (lsn, end) = (record["lsn"].as_u64().unwrap(), record["end"].as_u64().unwrap());
            if lsn / page != (end - 1) / page {
                continue;
            }
            let at = (lsn - base) as usize..(end - base) as usize;
            assert_eq!(golden::encode_record(record), &bin[at], "{name}: record at {lsn}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} records checked");
}

/// Every structure the spec names has at least one valid and one damaged vector, and the
/// vectors stay small.
#[test]
fn the_vector_set_covers_every_structure() {
    let all = vectors();
    for structure in [
        "record-payload",
        "record",
        "wal-page-header",
        "segment-header",
        "wal-log",
        "control-file",
        "arena-page",
        "archive",
    ] {
        let of: Vec<_> = all.iter().filter(|v| v.1["structure"] == structure).collect();
        assert!(
            of.iter().any(|v| v.1.get("decoded").is_some()),
            "no valid {structure} vector"
        );
        assert!(
            structure == "wal-log" || of.iter().any(|v| v.1.get("error").is_some()),
            "no damaged {structure} vector"
        );
    }
    let total: usize = all.iter().map(|v| v.2.len()).sum();
    assert!(total < 1 << 20, "vectors hold {total} bytes");
}

/// The worked example of FORMAT.md section 9 and the CRC check value of section 1.
#[test]
fn spec_examples_match_the_vectors() {
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    let dir = golden::vectors_dir();
    let continuation = std::fs::read(dir.join("wal-page-header-continuation.bin")).unwrap();
    assert_eq!(
        golden::hex(&continuation),
        "56574c50040001000020000000000000a80300000100000002000000b67b4db0"
    );
    let first = std::fs::read(dir.join("wal-page-header.bin")).unwrap();
    assert_eq!(
        golden::hex(&first),
        "56574c50040000000010000000000000000000000100000002000000b30d91f7"
    );
}

/// Every record kind and every page kind has a valid golden vector: a new kind is not done until
/// the format's vectors show it (and the reference reader decodes it).
#[test]
fn every_record_kind_and_page_kind_has_a_golden_vector() {
    use vellum::format::page::PageKind;
    use vellum::format::record::Kind;
    let all = vectors();
    let valid = |structure: &'static str| -> Vec<(String, Value)> {
        all.iter()
            .filter(|(_, meta, _)| meta["structure"] == structure && meta.get("decoded").is_some())
            .map(|(name, meta, _)| (name.clone(), meta["decoded"].clone()))
            .collect()
    };
    let payload_kinds: BTreeSet<String> = valid("record-payload")
        .into_iter()
        .filter_map(|(_, d)| d["kind"].as_str().map(str::to_string))
        .collect();
    let init_kinds: BTreeSet<u64> = valid("record-payload")
        .into_iter()
        .filter(|(_, d)| d["kind"] == "page-init")
        .filter_map(|(_, d)| d["page_kind"].as_u64())
        .collect();
    let page_vectors = valid("arena-page");
    for code in 0..=u8::MAX {
        if let Some(kind) = Kind::from_u8(code) {
            assert!(
                payload_kinds.contains(kind.name()),
                "no valid payload vector of record kind {}",
                kind.name()
            );
        }
        if let Some(kind) = PageKind::from_u8(code) {
            assert!(
                init_kinds.contains(&u64::from(code)),
                "no page-init vector of page kind {}",
                kind.name()
            );
            let has_page = page_vectors.iter().any(|(_, d)| match kind {
                PageKind::Zero => d.get("zero").is_some(),
                _ => d["kind"].as_u64() == Some(u64::from(code)),
            });
            assert!(has_page, "no valid arena-page vector of page kind {}", kind.name());
        }
    }
}

/// Every page kind but zero has a damaged arena-page vector (named `page-<kind>-…`), and each
/// edit kind of FORMAT.md section 15 (write, insert, remove) is in a valid update and a valid
/// clr payload vector.
#[test]
fn every_page_kind_and_edit_kind_has_valid_and_damaged_vectors() {
    use vellum::format::page::PageKind;
    let all = vectors();
    for kind in PageKind::ALL.into_iter().filter(|k| *k != PageKind::Zero) {
        let prefix = format!("page-{}-", kind.name());
        assert!(
            all.iter()
                .any(|(name, meta, _)| name.starts_with(&prefix) && meta.get("error").is_some()),
            "no damaged vector of page kind {}",
            kind.name()
        );
    }
    for (record, edits) in [
        ("update", &["write", "insert", "remove", "stored"][..]),
        ("clr", &["write", "insert", "remove"][..]),
    ] {
        for &edit in edits {
            let found = all.iter().any(|(_, meta, _)| {
                meta["structure"] == "record-payload"
                    && meta["decoded"]["kind"] == record
                    && meta["decoded"]["edits"]
                        .as_array()
                        .is_some_and(|edits| edits.iter().any(|e| e["edit"] == edit))
            });
            assert!(found, "no valid {record} payload vector with a {edit} edit");
        }
    }
}

/// Applies `edits` to `pages` as FORMAT.md section 15 says: a write puts its after-image at its
/// offset; an insert shifts `[offset, end)` up by its length and writes its after-image; a
/// remove shifts `[offset + len, end)` down and zeroes the last `len` bytes of the range.
fn apply_as_specified(pages: &mut BTreeMap<u64, Vec<u8>>, edits: &[Edit<'_>]) {
    for edit in edits {
        let page = pages.get_mut(&edit.page.0).expect("a page of the golden arena");
        let o = edit.offset as usize;
        match edit.kind {
            EditKind::Write => page[o..o + edit.after.len()].copy_from_slice(edit.after),
            EditKind::Insert { end } => {
                let n = edit.after.len();
                page.copy_within(o..end as usize, o + n);
                page[o..o + n].copy_from_slice(edit.after);
            }
            EditKind::Remove { end, len } => {
                let (end, n) = (end as usize, len as usize);
                page.copy_within(o + n..end, o);
                page[end - n..end].fill(0);
            }
            // The bytes are in the page's file, not the record: redo changes none.
            EditKind::Stored { .. } => {}
        }
    }
}

/// An edit with its images owned.
type OwnedEdit = (PageId, u32, Vec<u8>, Option<Vec<u8>>, EditKind);

/// The edits of a valid update or clr payload.
fn owned_edits(payload: &[u8], kind: u8) -> Vec<OwnedEdit> {
    match record::decode(kind, payload, vellum::Lsn(4128), 4096).expect("a valid payload") {
        Payload::Update { edits, .. } | Payload::Clr { edits, .. } => edits
            .iter()
            .map(|e| (e.page, e.offset, e.after.to_vec(), e.before.map(<[u8]>::to_vec), e.kind))
            .collect(),
        other => panic!("not an update or clr: {other:?}"),
    }
}

fn borrowed(edits: &[OwnedEdit]) -> Vec<Edit<'_>> {
    edits
        .iter()
        .map(|(page, offset, after, before, kind)| Edit {
            page: *page,
            offset: *offset,
            after,
            before: before.as_deref(),
            kind: *kind,
        })
        .collect()
}

/// The keys of the golden leaf (catalog page 5), checked to form a valid node.
fn leaf_keys(pages: &BTreeMap<u64, Vec<u8>>) -> Vec<String> {
    let node = vellum::format::index::Node::parse(&pages[&PageId::new(Space::Catalog, 5).0]).expect("a node");
    node.check().expect("a valid node");
    (0..node.count)
        .map(|i| String::from_utf8(node.key(i).unwrap().to_vec()).unwrap())
        .collect()
}

/// The index edits of the golden vectors do what FORMAT.md says on the golden arena: the
/// insert puts "beth" between "beta" and "gamma" in the leaf, the remove takes "gamma" out,
/// and each clr vector (the engine's compensation) gives back every byte the update changed
/// except those it wrote into free space.
#[test]
fn index_edits_and_their_compensation_do_what_the_spec_says() {
    let all = vectors();
    let bin = |name: &str| {
        all.iter()
            .find(|v| v.0 == name)
            .unwrap_or_else(|| panic!("vector {name}"))
            .2
            .clone()
    };
    let mut arena = BTreeMap::new();
    for name in ["page-meta", "page-catalog", "page-index-leaf-two-cells", "page-vector"] {
        let page = bin(name);
        arena.insert(u64::from_le_bytes(page[8..16].try_into().unwrap()), page);
    }
    assert_eq!(leaf_keys(&arena), ["beta", "gamma"]);
    for (update, clr, keys) in [
        (
            "payload-update-index-insert",
            "payload-clr-index-insert",
            vec!["beta", "beth", "gamma"],
        ),
        ("payload-update-index-remove", "payload-clr-index-remove", vec!["beta"]),
    ] {
        let forward = owned_edits(&bin(update), 1);
        let mut pages = arena.clone();
        apply_as_specified(&mut pages, &borrowed(&forward));
        assert_eq!(leaf_keys(&pages), keys, "{update}: the leaf after redo");
        let undo = owned_edits(&bin(clr), 2);
        assert_eq!(
            borrowed(&undo),
            record::compensation(&borrowed(&forward)),
            "{clr} is the compensation of {update}"
        );
        apply_as_specified(&mut pages, &borrowed(&undo));
        let mut expected = arena.clone();
        for (page, offset, after, before, kind) in &forward {
            if before.is_none() && *kind == EditKind::Write {
                // Free space the update wrote: an undo leaves it.
                let page = expected.get_mut(&page.0).unwrap();
                page[*offset as usize..*offset as usize + after.len()].copy_from_slice(after);
            }
        }
        assert!(pages == expected, "{clr}: the undo gives back every byte in use");
    }
}
