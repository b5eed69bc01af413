//! Conformance with the golden vectors in `format-spec/vectors/` (see its README.md).
//!
//! For every `<name>.bin` / `<name>.json` pair: decode the bytes with the engine's decoders and
//! compare with the JSON's `decoded` object exactly, or with its `error` class (the `message`
//! is informative and not compared); then, for every valid vector of a structure with an
//! encoder, encode again from the decoded JSON and compare byte for byte.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::golden;

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
        "56574c50010001000020000000000000a80300000100000002000000e25ee5e8"
    );
    let first = std::fs::read(dir.join("wal-page-header.bin")).unwrap();
    assert_eq!(
        golden::hex(&first),
        "56574c50010000000010000000000000000000000100000002000000e72839af"
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
