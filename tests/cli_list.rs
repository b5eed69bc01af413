//! `vellum list` and `vellum export` as scripts see them: byte order, the prefix/after/limit
//! window, escaping that round-trips, export → import → export byte for byte and bit for bit,
//! read-only stores.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vellum::{Entry, ListOptions, Options, Store};

const BIN: &str = env!("CARGO_BIN_EXE_vellum");

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }
}

fn vellum(cwd: &Path, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("the vellum binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ok(cwd: &Path, args: &[&str]) -> Run {
    let run = vellum(cwd, args);
    assert!(run.code == 0, "vellum {args:?} should succeed: {run:?}");
    run
}

fn small_options() -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 20,
        ..Options::default()
    }
}

/// A closed store of dimension `dim` at `path` holding `records`, written through the library
/// (so that any float32 bit pattern and any metadata can be stored).
fn store_with(path: &Path, dim: u32, records: &[Entry]) {
    let store = Store::create(path, dim, small_options()).unwrap();
    let mut tx = store.begin().unwrap();
    for record in records {
        let pairs: Vec<(&str, &str)> = record.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        tx.insert(&record.id, &record.vector, &pairs).unwrap();
    }
    tx.commit().unwrap();
    store.close().unwrap();
}

fn plain(id: &str) -> Entry {
    Entry {
        id: id.to_string(),
        vector: vec![id.len() as f32, 1.0],
        metadata: Vec::new(),
    }
}

/// Ids in an order that is not byte order, some with bytes >= 0x80.
fn some_ids() -> Vec<String> {
    let mut ids: Vec<String> = (0..120).map(|i| format!("doc-{}", (i * 37) % 120)).collect();
    ids.extend(["img-1", "img-02", "é", "z", "Z", "doc", "do", "ü-x", "😀"].map(String::from));
    ids
}

#[test]
fn list_prints_every_id_in_byte_order_one_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let ids = some_ids();
    store_with(
        &dir.path().join("s"),
        2,
        &ids.iter().map(|id| plain(id)).collect::<Vec<_>>(),
    );
    let sorted: Vec<String> = ids.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    assert_eq!(ok(dir.path(), &["list", "s"]).lines(), sorted);
    let empty = dir.path().join("empty");
    store_with(&empty, 2, &[]);
    assert!(
        ok(dir.path(), &["list", "empty"]).stdout.is_empty(),
        "an empty store lists nothing"
    );
}

#[test]
fn list_takes_prefix_after_and_limit_alone_and_together() {
    let dir = tempfile::tempdir().unwrap();
    let ids = some_ids();
    store_with(
        &dir.path().join("s"),
        2,
        &ids.iter().map(|id| plain(id)).collect::<Vec<_>>(),
    );
    let all: BTreeSet<String> = ids.into_iter().collect();
    let window = |prefix: &str, after: Option<&str>, limit: Option<usize>| -> Vec<String> {
        all.iter()
            .filter(|id| id.starts_with(prefix) && after.is_none_or(|a| id.as_str() > a))
            .take(limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    };
    let cases: [(&[&str], Vec<String>); 8] = [
        (&["--prefix", "img-"], window("img-", None, None)),
        (&["--prefix", "doc-1"], window("doc-1", None, None)),
        (&["--after", "doc-5"], window("", Some("doc-5"), None)),
        (&["--after", "do"], window("", Some("do"), None)),
        (&["--limit", "3"], window("", None, Some(3))),
        (&["--limit", "0"], Vec::new()),
        (
            &["--prefix", "doc-", "--after", "doc-50", "--limit", "4"],
            window("doc-", Some("doc-50"), Some(4)),
        ),
        (&["--prefix", "none"], Vec::new()),
    ];
    for (flags, expected) in cases {
        let args: Vec<&str> = ["list", "s"].iter().chain(flags).copied().collect();
        assert_eq!(ok(dir.path(), &args).lines(), expected, "vellum {args:?}");
    }
    assert_eq!(
        ok(
            dir.path(),
            &["list", "s", "--prefix", "doc-", "--after", "doc-50", "--limit", "4"]
        )
        .lines(),
        ["doc-51", "doc-52", "doc-53", "doc-54"],
    );
    let bad = vellum(dir.path(), &["list", "s", "--limit", "-1"]);
    assert_eq!(bad.code, 2, "a negative limit is a usage error: {bad:?}");
    let missing = vellum(dir.path(), &["list", "nowhere"]);
    assert_eq!(missing.code, 1, "a missing store: {missing:?}");
}

/// Ids a terminal or a line-based script would mangle.
fn unprintable_ids() -> Vec<String> {
    [
        "new\nline",
        "tab\tbed",
        "nul\0",
        "bell\u{7}",
        "del\u{7f}",
        "c1\u{85}",
        "quote\"",
        "back\\slash",
        "plain",
        "é",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn list_escapes_ids_so_that_every_line_unescapes_to_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let ids = unprintable_ids();
    store_with(
        &dir.path().join("s"),
        2,
        &ids.iter().map(|id| plain(id)).collect::<Vec<_>>(),
    );
    let sorted: Vec<String> = ids.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let lines = ok(dir.path(), &["list", "s"]).lines();
    assert_eq!(lines.len(), sorted.len(), "one line per id, whatever it holds");
    for (line, id) in lines.iter().zip(&sorted) {
        assert!(!line.chars().any(char::is_control), "{line:?}: no control character");
        let back: String = serde_json::from_str(&format!("\"{line}\"")).expect("the inside of a JSON string");
        assert_eq!(&back, id);
    }
    assert!(
        lines.contains(&"plain".to_string()) && lines.contains(&"é".to_string()),
        "printable ids as they are"
    );
    let json = ok(dir.path(), &["list", "s", "--json"]).lines();
    let parsed: Vec<String> = json
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON string"))
        .collect();
    assert_eq!(parsed, sorted, "--json: one JSON string a line");
}

/// Vectors of every awkward kind: subnormals, -0.0, the largest exponents, random bit patterns.
fn awkward_records(dim: usize) -> Vec<Entry> {
    let specials: Vec<f32> = [
        1u32,
        2,
        0x007f_ffff,
        0x0080_0000,
        0x8000_0000,
        0x8000_0001,
        0x7f7f_ffff,
        0xff7f_ffff,
    ]
    .iter()
    .map(|&b| f32::from_bits(b))
    .chain([0.1, 1.0 / 3.0, 16_777_217.0, 3.0e38, -1.0e-40, 0.0])
    .collect();
    let mut state = 7u64;
    let mut random = move || loop {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let x = f32::from_bits((state >> 32) as u32);
        if x.is_finite() {
            return x;
        }
    };
    let mut ids = unprintable_ids();
    ids.extend((0..300).map(|i| format!("r{i:03}")));
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let vector = (0..dim)
                .map(|j| {
                    if i < 20 {
                        specials[(i + j) % specials.len()]
                    } else {
                        random()
                    }
                })
                .collect();
            let mut metadata = vec![
                ("z".to_string(), format!("{i}")),
                ("a\n\"".to_string(), "ü\t\u{0}".to_string()),
            ];
            if i % 100 == 7 {
                metadata.push(("long".to_string(), "x".repeat(6000))); // an overflow chain
            }
            Entry {
                id: id.clone(),
                vector,
                metadata,
            }
        })
        .collect()
}

fn entries(path: &Path) -> Vec<Entry> {
    let store = Store::open_read_only(path, Options::default()).unwrap();
    store.entries(ListOptions::default()).map(Result::unwrap).collect()
}

/// An entry with its vector as bit patterns (so that -0.0 and NaN payloads compare exactly).
type Bits = (String, Vec<u32>, Vec<(String, String)>);

fn bits(entries: &[Entry]) -> Vec<Bits> {
    entries
        .iter()
        .map(|e| {
            (
                e.id.clone(),
                e.vector.iter().map(|x| x.to_bits()).collect(),
                e.metadata.clone(),
            )
        })
        .collect()
}

#[test]
fn export_import_export_is_byte_identical_and_every_vector_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let records = awkward_records(16);
    store_with(&dir.path().join("s"), 16, &records);
    let first = ok(dir.path(), &["export", "s"]).stdout;
    assert_eq!(
        first.iter().filter(|&&b| b == b'\n').count(),
        records.len(),
        "one line per record"
    );
    std::fs::write(dir.path().join("first.jsonl"), &first).unwrap();
    ok(
        dir.path(),
        &[
            "create",
            "copy",
            "--dim",
            "16",
            "--page-size",
            "4096",
            "--segment-size",
            "1MiB",
        ],
    );
    ok(dir.path(), &["import", "copy", "first.jsonl", "--batch", "64"]);
    let second = ok(dir.path(), &["export", "copy"]).stdout;
    assert!(first == second, "the second export is byte for byte the first");
    let (original, copy) = (entries(&dir.path().join("s")), entries(&dir.path().join("copy")));
    let mut expected = bits(&records);
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(bits(&original), expected, "the export's source holds what was stored");
    assert_eq!(
        bits(&copy),
        expected,
        "the import holds the same bits and metadata in order"
    );
    let line: serde_json::Value = serde_json::from_slice(first.split(|&b| b == b'\n').next().unwrap()).unwrap();
    let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "vector", "metadata"], "the shape import reads: {line}");
}

#[test]
fn export_with_a_prefix_to_a_file_replaces_it_only_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let ids = some_ids();
    store_with(
        &dir.path().join("s"),
        2,
        &ids.iter().map(|id| plain(id)).collect::<Vec<_>>(),
    );
    std::fs::write(dir.path().join("out.jsonl"), "old contents\n").unwrap();
    let run = ok(
        dir.path(),
        &[
            "export",
            "s",
            "--prefix",
            "img-",
            "--format",
            "jsonl",
            "--output",
            "out.jsonl",
        ],
    );
    assert!(
        run.text().contains("exported 2 records"),
        "a summary on stdout: {run:?}"
    );
    let written = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let exported: Vec<String> = written
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(exported, ["img-02", "img-1"], "only the prefix, in byte order");
    let missing_dir = vellum(dir.path(), &["export", "s", "--output", "no/such/dir/out.jsonl"]);
    assert_ne!(missing_dir.code, 0, "{missing_dir:?}");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "no partial file is left: {leftovers:?}");
}

#[test]
fn export_refuses_metadata_with_a_key_twice_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut twice = plain("b-twice");
    twice.metadata = vec![("k".into(), "1".into()), ("k".into(), "2".into())];
    store_with(&dir.path().join("s"), 2, &[plain("a-fine"), twice]);
    let run = vellum(dir.path(), &["export", "s", "--output", "out.jsonl"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains("b-twice") && run.stderr.contains("twice"),
        "names the id: {run:?}"
    );
    assert!(!dir.path().join("out.jsonl").exists(), "no output file");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "and no partial file");
}

/// Every file of a directory tree and its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn list_and_export_read_a_store_beside_other_readers_and_change_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    store_with(&path, 16, &awkward_records(16));
    let before = snapshot(&path);
    let reader = Store::open_read_only(&path, Options::default()).unwrap();
    let listed = ok(dir.path(), &["list", "s"]).lines();
    let exported = ok(dir.path(), &["export", "s"]).stdout;
    assert_eq!(listed.len(), reader.len());
    assert_eq!(exported.iter().filter(|&&b| b == b'\n').count(), reader.len());
    drop(reader);
    assert!(snapshot(&path) == before, "no byte of the store changed");
    let writer = Store::open(&path, small_options()).unwrap();
    let busy = vellum(dir.path(), &["export", "s"]);
    assert_eq!(busy.code, 5, "a writer has the store: {busy:?}");
    drop(writer);
}

#[test]
fn list_and_export_work_on_a_read_only_bind_mount() {
    // SAFETY: geteuid has no preconditions and touches no memory of ours.
    if unsafe { libc::geteuid() } != 0 {
        println!("list_and_export_work_on_a_read_only_bind_mount: SKIPPED: needs root to bind-mount");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    store_with(&path, 16, &awkward_records(16));
    let expected = ok(dir.path(), &["export", "s"]).stdout;
    let point = dir.path().join("ro");
    std::fs::create_dir(&point).unwrap();
    let bound = Command::new("mount").arg("--bind").arg(&path).arg(&point).status();
    if !bound.is_ok_and(|s| s.success()) {
        println!("list_and_export_work_on_a_read_only_bind_mount: SKIPPED: mount --bind failed");
        return;
    }
    let _unmount = Unmount(point.clone());
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(&point)
        .status();
    assert!(remounted.is_ok_and(|s| s.success()), "remount read-only");
    assert!(
        std::fs::write(point.join("probe"), b"x").is_err(),
        "the mount is read-only"
    );
    assert!(
        ok(dir.path(), &["export", "ro"]).stdout == expected,
        "the same export from read-only media"
    );
    assert_eq!(ok(dir.path(), &["list", "ro", "--limit", "2"]).lines().len(), 2);
}

/// Unmounts (lazily) when dropped, whether the test passed or not.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
