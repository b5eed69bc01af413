//! The independent reader (`format-spec/reference/read_store.py`) against the golden vectors of
//! `format-spec/vectors/` and against the engine's decoders (`golden::decode_vector`).
//!
//! * Every valid vector: the reader decodes exactly the `decoded` object of its JSON.
//! * Every damaged vector: the reader reports the same class of failure (`invalid`, `damaged`,
//!   `stale`, `foreign`, `incompatible`) as the JSON and as the engine.
//! * Mutants of every vector (bit flips, also with the CRCs recomputed so that the flip reaches
//!   the checks behind them; truncations; at positions fixed by a seeded generator): the reader
//!   and the engine agree on each one, decoded fields or class of failure.
//!
//! The reader is run once per directory (`--vector-dir`). Skipped (with a notice) when `python3`
//! is not on `PATH`, unless `CI` is set.

mod support;
use support::{Rng, golden};

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value;

/// `read_store.py --vector-dir DIR`: vector name -> `{structure, decoded | error, message}`.
fn reader_over(dir: &Path) -> BTreeMap<String, Value> {
    let (status, all) = support::reference_reader(&[OsStr::new("--vector-dir"), dir.as_os_str()]);
    assert!(status.success(), "read_store.py --vector-dir exited with {status:?}");
    all.as_object()
        .expect("an object of vectors")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every vector: name, its JSON, its bytes.
fn vectors() -> Vec<(String, Value, Vec<u8>)> {
    let dir = golden::vectors_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("format-spec/vectors exists")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
                .unwrap_or_else(|e| panic!("{name}.json: {e}"));
            let bin = std::fs::read(dir.join(format!("{name}.bin"))).unwrap_or_else(|e| panic!("{name}.bin: {e}"));
            (name, meta, bin)
        })
        .collect()
}

/// `v` with every non-integer number rounded to `f32`: vector components are `f32` values, and
/// serde_json's default float parser may land one `f64` ulp away from the shortest decimal the
/// reader printed for a subnormal (both sides hold the same `f32`).
fn f32_canonical(v: &Value) -> Value {
    match v {
        Value::Number(n) if !(n.is_u64() || n.is_i64()) => {
            serde_json::json!(n.as_f64().map(|f| f64::from(f as f32)))
        }
        Value::Array(a) => Value::Array(a.iter().map(f32_canonical).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), f32_canonical(x))).collect()),
        other => other.clone(),
    }
}

/// What a verdict says, to compare: the decoded object, or the error class alone.
fn verdict(v: &Value) -> Value {
    match (v.get("decoded"), v.get("error")) {
        (Some(d), None) => serde_json::json!({ "decoded": f32_canonical(d) }),
        (None, Some(e)) => serde_json::json!({ "error": e }),
        _ => serde_json::json!({ "malformed": v }),
    }
}

#[test]
fn reader_decodes_every_golden_vector_as_its_json_says() {
    if !support::python_available("reference_vectors") {
        return;
    }
    let all = vectors();
    let got = reader_over(&golden::vectors_dir());
    assert_eq!(got.len(), all.len(), "the reader decoded every vector once");
    let mut failures = Vec::new();
    let (mut valid, mut damaged) = (0, 0);
    for (name, meta, _) in &all {
        let ours = &got[name];
        match (meta.get("decoded"), meta.get("error")) {
            (Some(want), None) => {
                valid += 1;
                if ours.get("decoded") != Some(want) {
                    failures.push(format!(
                        "{name}: expected\n{}\nthe reader says\n{}",
                        serde_json::to_string_pretty(want).unwrap(),
                        serde_json::to_string_pretty(ours).unwrap()
                    ));
                }
            }
            (None, Some(class)) => {
                damaged += 1;
                if ours.get("error") != Some(class) {
                    failures.push(format!("{name}: expected error {class}, the reader says {ours}"));
                }
            }
            _ => failures.push(format!("{name}.json has neither `decoded` nor `error`")),
        }
    }
    println!("reference_vectors: {valid} valid and {damaged} damaged vectors");
    assert!(
        valid >= 30 && damaged >= 25,
        "too few vectors: {valid} valid, {damaged} damaged"
    );
    assert!(
        failures.is_empty(),
        "{} vectors disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn reader_reports_the_same_damage_class_as_the_engine() {
    if !support::python_available("reference_vectors") {
        return;
    }
    let got = reader_over(&golden::vectors_dir());
    let mut failures = Vec::new();
    let mut classes = BTreeMap::<String, usize>::new();
    for (name, meta, bin) in &vectors() {
        let engine = verdict(&golden::decode_vector(meta, bin));
        let ours = verdict(&got[name]);
        if let Some(class) = engine.get("error").and_then(Value::as_str) {
            *classes.entry(class.to_owned()).or_default() += 1;
        }
        if engine != ours {
            failures.push(format!("{name}: engine {engine}, reader {ours}"));
        }
    }
    println!("reference_vectors: damage classes {classes:?}");
    for class in ["invalid", "damaged", "stale", "foreign", "incompatible"] {
        assert!(classes.contains_key(class), "no damaged vector of class {class}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Positions worth flipping in a vector: the whole of a small structure, the non-zero bytes
/// (and the first bytes) of a large one.
fn interesting_positions(bin: &[u8]) -> Vec<usize> {
    if bin.len() <= 4096 {
        return (0..bin.len()).collect();
    }
    let mut at: Vec<usize> = (0..bin.len()).filter(|&i| bin[i] != 0).collect();
    at.extend(0..256);
    at.sort_unstable();
    at.dedup();
    at
}

fn put_crc(bytes: &mut [u8], at: usize, covered: std::ops::Range<usize>) {
    if bytes.len() >= at + 4 && covered.end <= bytes.len() {
        let crc = crc32c::crc32c(&bytes[covered]);
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Recomputes the CRCs of a mutant, so that the flip reaches the checks behind them (the LZ4
/// and lane decoders, flags, versions, lengths) instead of stopping at the first CRC.
fn reseal(structure: &str, m: &mut [u8]) {
    let len = m.len();
    match structure {
        "archive" if len >= 192 => {
            put_crc(m, 100, 192..len);
            put_crc(m, 188, 0..188);
        }
        "record" => put_crc(m, 0, 4..len),
        "wal-page-header" => put_crc(m, 28, 0..28),
        "segment-header" => put_crc(m, 124, 0..124),
        "control-file" => {
            for slot in [0, 512] {
                if len >= slot + 512 {
                    put_crc(m, slot + 508, slot..slot + 508);
                }
            }
        }
        "arena-page" if m.iter().any(|&b| b != 0) => put_crc(m, 0, 4..len),
        _ => {}
    }
}

#[test]
fn reader_and_engine_agree_on_mutated_vectors() {
    if !support::python_available("reference_vectors") {
        return;
    }
    const FLIPS_PER_VECTOR: usize = 12;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::new(0x5645_4c4c_554d_0007);
    let mut mutants = Vec::new();
    for (name, meta, bin) in &vectors() {
        let positions = interesting_positions(bin);
        let mut variants = Vec::new();
        for _ in 0..FLIPS_PER_VECTOR {
            if positions.is_empty() {
                break;
            }
            let mut m = bin.clone();
            let at = positions[rng.below(positions.len() as u64) as usize];
            m[at] ^= 1 << rng.below(8);
            variants.push(m.clone());
            // The same flip with the CRCs made right again.
            reseal(meta["structure"].as_str().unwrap_or(""), &mut m);
            if !variants.contains(&m) {
                variants.push(m);
            }
        }
        // Two truncations and one extension of the structures whose length is not fixed:
        // lengths a decoder must not trust.
        let variable = matches!(
            meta["structure"].as_str(),
            Some("record-payload" | "record" | "archive")
        );
        if variable && !bin.is_empty() {
            variants.push(bin[..rng.below(bin.len() as u64) as usize].to_vec());
            variants.push(bin[..bin.len() - 1].to_vec());
        }
        if variable {
            let mut longer = bin.clone();
            longer.extend_from_slice(&[0x5a; 8]);
            variants.push(longer);
        }
        for (k, m) in variants.into_iter().enumerate() {
            let mname = format!("{name}~{k:02}");
            std::fs::write(tmp.path().join(format!("{mname}.bin")), &m).unwrap();
            std::fs::write(tmp.path().join(format!("{mname}.json")), meta.to_string()).unwrap();
            mutants.push((mname, meta.clone(), m));
        }
    }
    let got = reader_over(tmp.path());
    let mut failures = Vec::new();
    let mut agreed_errors = 0;
    for (name, meta, m) in &mutants {
        let engine = verdict(&golden::decode_vector(meta, m));
        let ours = verdict(&got[name]);
        if engine.get("error").is_some() && engine == ours {
            agreed_errors += 1;
        }
        if engine != ours {
            failures.push(format!(
                "{name}: engine {}, reader {}",
                engine.to_string().chars().take(400).collect::<String>(),
                got[name].to_string().chars().take(400).collect::<String>()
            ));
        }
    }
    println!(
        "reference_vectors: {} mutants, {agreed_errors} refused alike by both",
        mutants.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} mutants disagree:\n{}",
        failures.len(),
        mutants.len(),
        failures.join("\n")
    );
}
