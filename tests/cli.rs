//! The command-line tool as scripts see it: every subcommand, its output shapes, its errors
//! and exit codes (0 ok, 1 not found or verification failed, 2 usage, 3 I/O or damage,
//! 4 bad input data, 5 busy, 6 no input file, 130 and 143 an import stopped by SIGINT or
//! SIGTERM).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_vellum");

/// What a run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn vellum_in(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the vellum binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A scratch directory with a store path and helpers.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Run {
        vellum_in(self.dir.path(), args, &[])
    }

    /// Starts the binary in the scratch directory, `stdin` its standard input, its output
    /// piped.
    fn spawn(&self, args: &[&str], stdin: Stdio) -> std::process::Child {
        Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the vellum binary runs")
    }

    /// Runs with `input` on stdin, a pipe (written by a thread while the binary reads it).
    fn run_piped(&self, args: &[&str], input: Vec<u8>) -> Run {
        let mut child = self.spawn(args, Stdio::piped());
        let mut stdin = child.stdin.take().expect("a pipe");
        // The binary may stop reading early (an error): a broken pipe is no failure here.
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
        let output = child.wait_with_output().expect("vellum exits");
        writer.join().expect("the writer thread");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs and insists on exit code 0.
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert!(run.code == 0, "vellum {args:?} should succeed: {run:?}");
        run
    }

    /// A small store (4 KiB pages, 256 KiB segments) of dimension `dim` at `name`.
    fn create(&self, name: &str, dim: u32) {
        self.ok(&[
            "create",
            name,
            "--dim",
            &dim.to_string(),
            "--page-size",
            "4096",
            "--segment-size",
            "262144",
        ]);
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        std::fs::write(self.path(name), contents).expect("write a scratch file");
        name.to_string()
    }

    /// A store "s" of dimension 4 holding a, b and c.
    fn with_abc(&self) {
        self.create("s", 4);
        self.write(
            "abc.jsonl",
            concat!(
                r#"{"id": "a", "vector": [1, 0, 0, 0], "metadata": {"lang": "en"}}"#,
                "\n",
                r#"{"id": "b", "vector": [0, 1, 0, 0], "metadata": {"lang": "fr", "n": 3}}"#,
                "\n",
                r#"{"id": "c", "vector": [0.6, 0.8, 0, 0]}"#,
                "\n"
            ),
        );
        self.ok(&["import", "s", "abc.jsonl"]);
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not one JSON value ({e}): {text:?}"))
}

fn jsonl(rows: &[&str]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

fn fvecs(rows: &[Vec<f32>]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        out.extend_from_slice(&(row.len() as i32).to_le_bytes());
        for x in row {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

fn npy(descr: &str, rows: &[Vec<f32>]) -> Vec<u8> {
    npy_ordered(descr, false, rows)
}

/// An .npy file of `rows`, in Fortran order (column by column, as NumPy saves a transposed
/// array) if `fortran`.
fn npy_ordered(descr: &str, fortran: bool, rows: &[Vec<f32>]) -> Vec<u8> {
    let cols = rows.first().map_or(0, Vec::len);
    let order = if fortran { "True" } else { "False" };
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {order}, 'shape': ({}, {cols}), }}",
        rows.len()
    );
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    if fortran {
        for column in 0..cols {
            for row in rows {
                out.extend_from_slice(&row[column].to_le_bytes());
            }
        }
    } else {
        for row in rows {
            for x in row {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    out
}

fn get_vector(scratch: &Scratch, store: &str, id: &str) -> Vec<f32> {
    let run = scratch.ok(&["get", store, id]);
    serde_json::from_value(json(&run.stdout)["vector"].clone()).expect("a vector of numbers")
}

/// Every object key in `value`, recursively.
fn keys(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.clone());
                // The keys of these maps are data (metadata keys, file extensions).
                if k != "metadata" && k != "by_extension" {
                    keys(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn create_makes_a_store_that_a_second_create_refuses() {
    let s = Scratch::new();
    let run = s.ok(&[
        "create",
        "s",
        "--dim",
        "8",
        "--page-size",
        "4KiB",
        "--segment-size",
        "256KiB",
    ]);
    assert!(run.stdout.contains("dimension 8"), "create says what it made: {run:?}");
    assert!(s.path("s/CONTROL").is_file(), "a store has a control file");
    let again = s.run(&["create", "s", "--dim", "8"]);
    assert!(again.code == 2, "a second create is a usage error: {again:?}");
    assert!(
        again.stderr.contains("already exists") && again.stderr.contains('s'),
        "the error names the store: {again:?}"
    );
}

#[test]
fn create_refuses_a_dimension_too_large_for_the_page() {
    let s = Scratch::new();
    let run = s.run(&[
        "create",
        "s",
        "--dim",
        "4000",
        "--page-size",
        "4096",
        "--segment-size",
        "262144",
    ]);
    assert!(run.code == 2, "{run:?}");
    assert!(
        run.stderr.contains("dimension 4000"),
        "the error names the dimension: {run:?}"
    );
    let run = s.run(&["create", "t", "--dim", "4", "--page-size", "5000"]);
    assert!(
        run.code == 2,
        "a page size that is not a power of two is refused: {run:?}"
    );
    assert!(run.stderr.contains("power of two"), "{run:?}");
}

#[test]
fn usage_errors_exit_2() {
    let s = Scratch::new();
    for args in [
        &["create", "s"][..],
        &["frobnicate"],
        &["restore", "a", "b"],
        &["restore", "a", "b", "--lsn", "5", "--latest"],
        &["search", "s"],
        &["import", "s", "x.jsonl", "--batch", "0"],
        &["create", "s", "--dim", "4", "--sync", "sometimes"],
        &["create", "s", "--dim", "4", "--sync", "never", "--sync-interval", "1s"],
        &["import", "s", "x.jsonl", "--sync", "always", "--sync-interval", "1s"],
        &["wal-dump", "s", "--from", "nine"],
    ] {
        let run = s.run(args);
        assert!(run.code == 2, "vellum {args:?} is a usage error: {run:?}");
        assert!(!run.stderr.is_empty(), "usage errors explain themselves: {args:?}");
    }
}

#[test]
fn a_missing_store_is_named_and_exits_1() {
    let s = Scratch::new();
    for args in [
        &["get", "nowhere", "a"][..],
        &["stats", "nowhere"],
        &["verify", "nowhere"],
        &["wal-dump", "nowhere"],
        &["import", "nowhere", "x.jsonl"],
    ] {
        let run = s.run(args);
        assert!(run.code == 1, "vellum {args:?} on a missing store exits 1: {run:?}");
        assert!(
            run.stderr.contains("nowhere") && run.stderr.lines().count() == 1,
            "one line naming the directory: {run:?}"
        );
    }
    // A path that names a file: no store there, said so (before: an I/O error, exit 3,
    // "opening …/SETTINGS: Not a directory").
    std::fs::write(s.path("afile"), b"not a store").unwrap();
    for args in [
        &["get", "afile", "a"][..],
        &["stats", "afile"],
        &["search", "afile", "--vector", "[1]"],
    ] {
        let run = s.run(args);
        assert!(run.code == 1, "vellum {args:?} on a file exits 1: {run:?}");
        assert!(
            run.stderr.contains("no Vellum store") && run.stderr.contains("not a directory"),
            "says there is no store there: {run:?}"
        );
    }
}

#[test]
fn imported_jsonl_reads_back_as_the_same_json() {
    let s = Scratch::new();
    s.with_abc();
    let run = s.ok(&["get", "s", "b"]);
    assert_eq!(run.stdout.lines().count(), 1, "get prints one line");
    let value = json(&run.stdout);
    assert_eq!(
        value,
        json(r#"{"id": "b", "vector": [0.0, 1.0, 0.0, 0.0], "metadata": {"lang": "fr", "n": "3"}}"#),
        "numbers in metadata become strings"
    );
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "vector", "metadata"], "the documented fields in order");
    assert_eq!(json(&s.ok(&["get", "s", "c"]).stdout)["metadata"], json("{}"));
}

#[test]
fn import_with_stored_writes_logs_the_vectors_without_their_bytes_and_reads_them_back() {
    let s = Scratch::new();
    s.create("s", 4);
    let rows: Vec<String> = (0..600)
        .map(|i| format!(r#"{{"id": "r{i}", "vector": [{i}, 1, 2, 3]}}"#))
        .collect();
    s.write("r.jsonl", jsonl(&rows.iter().map(String::as_str).collect::<Vec<_>>()));
    s.ok(&["import", "s", "r.jsonl", "--batch", "300", "--stored-writes"]);
    assert_eq!(get_vector(&s, "s", "r599"), [599.0, 1.0, 2.0, 3.0], "a row reads back");
    let dump = s.ok(&["wal-dump", "s", "--json"]).stdout;
    let stored = dump
        .lines()
        .map(json)
        .filter(|r| r["kind"] == "update")
        .flat_map(|r| r["edits"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["edit"] == "stored")
        .count();
    assert!(stored > 0, "the import logged stored writes");
    s.ok(&["verify", "s"]);
}

#[test]
fn get_prints_floats_that_parse_back_to_the_same_bits() {
    let s = Scratch::new();
    s.create("s", 4);
    let awkward = [0.1f32, -1.0e-7, 3.402_823_5e38, 1.0 / 3.0];
    let line = serde_json::json!({"id": "x", "vector": awkward}).to_string();
    s.write("x.jsonl", format!("{line}\n"));
    s.ok(&["import", "s", "x.jsonl"]);
    let back = get_vector(&s, "s", "x");
    assert!(
        back.iter().zip(&awkward).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{back:?} != {awkward:?}"
    );
}

#[test]
fn ack_prints_only_running_totals_one_line_per_durable_commit() {
    let s = Scratch::new();
    s.create("s", 2);
    let rows: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"id": "r{i}", "vector": [{i}, 1]}}"#))
        .collect();
    s.write("r.jsonl", jsonl(&rows.iter().map(String::as_str).collect::<Vec<_>>()));
    for sync in ["always", "interval", "never"] {
        let run = s.ok(&["import", "s", "r.jsonl", "--batch", "2", "--ack", "--sync", sync]);
        assert_eq!(
            run.stdout, "2\n4\n5\n",
            "running totals and nothing else (--sync {sync})"
        );
        assert!(run.stderr.is_empty(), "no progress bar off a terminal: {run:?}");
    }
    let quiet = s.ok(&["import", "s", "r.jsonl"]);
    assert!(
        quiet.stdout.starts_with("imported 5 records"),
        "without --ack a summary: {quiet:?}"
    );
}

#[test]
fn malformed_jsonl_line_is_named_and_earlier_batches_stay() {
    let s = Scratch::new();
    s.create("s", 2);
    s.write(
        "bad.jsonl",
        jsonl(&[
            r#"{"id": "1", "vector": [1, 0]}"#,
            r#"{"id": "2", "vector": [0, 1]}"#,
            "",
            r#"{"id": "3", "vector": [1, 1]}"#,
            r#"{"id": "4", "vector": [2, 1]}"#,
            r#"{"id": "5", "vector": [3, 1]}"#,
            r#"{"id": "6", "vector": [4, 1}"#,
            r#"{"id": "7", "vector": [5, 1]}"#,
        ]),
    );
    let run = s.run(&["import", "s", "bad.jsonl", "--batch", "2", "--ack"]);
    assert!(run.code == 4, "bad input data exits 4: {run:?}");
    assert!(
        run.stderr.contains("bad.jsonl line 7"),
        "the error names the file and line: {run:?}"
    );
    assert!(
        run.stderr.contains("4 records committed before it stay"),
        "and what stays: {run:?}"
    );
    assert_eq!(run.stdout, "2\n4\n", "two batches were acknowledged");
    for id in ["1", "2", "3", "4"] {
        assert!(s.run(&["get", "s", id]).code == 0, "{id} was in a committed batch");
    }
    for id in ["5", "6", "7"] {
        assert!(s.run(&["get", "s", id]).code == 1, "{id} was not committed");
    }
}

#[test]
fn batches_committed_before_a_bad_line_stay_in_every_sync_mode() {
    let s = Scratch::new();
    s.write(
        "bad.jsonl",
        jsonl(&[
            r#"{"id": "1", "vector": [1, 0]}"#,
            r#"{"id": "2", "vector": [0, 1]}"#,
            r#"{"id": "3", "vector": [1, 1]}"#,
            r#"{"id": "4", "vector": [2, 1]}"#,
            r#"{"id": "5", "vector": [3, 1}"#,
        ]),
    );
    for sync in ["always", "interval", "never"] {
        s.create(sync, 2);
        let run = s.run(&["import", sync, "bad.jsonl", "--batch", "2", "--ack", "--sync", sync]);
        assert!(
            run.code == 4 && run.stderr.contains("the 4 records committed before it stay"),
            "{run:?}"
        );
        assert_eq!(
            run.stdout, "2\n4\n",
            "both batches are acknowledged as durable (--sync {sync})"
        );
        assert_eq!(
            json(&s.ok(&["stats", sync, "--json"]).stdout)["vectors"],
            4,
            "and they are there (--sync {sync})"
        );
    }
}

#[test]
fn a_byte_order_mark_and_crlf_line_ends_are_read_as_jsonl() {
    let s = Scratch::new();
    s.create("s", 2);
    let bytes = b"\xEF\xBB\xBF{\"id\": \"a\", \"vector\": [1, 2]}\r\n{\"id\": \"b\", \"vector\": [3, 4]}\r\n";
    std::fs::write(s.path("bom.jsonl"), bytes).unwrap();
    let run = s.run(&["import", "s", "bom.jsonl"]);
    assert!(
        run.code == 0,
        "a UTF-8 byte order mark before the first line is skipped: {run:?}"
    );
    assert_eq!(get_vector(&s, "s", "a"), [1.0, 2.0], "the first record, after the mark");
    assert_eq!(get_vector(&s, "s", "b"), [3.0, 4.0], "and the next, after a CRLF");
    s.write(
        "late.jsonl",
        "{\"id\": \"c\", \"vector\": [1, 2]}\n\u{feff}{\"id\": \"d\", \"vector\": [1, 2]}\n",
    );
    let run = s.run(&["import", "s", "late.jsonl"]);
    assert!(
        run.code == 4 && run.stderr.contains("late.jsonl line 2"),
        "a mark anywhere else is bad input, named with its line: {run:?}"
    );
}

#[test]
fn unknown_fields_and_bad_ids_are_named_with_their_line() {
    let s = Scratch::new();
    s.create("s", 2);
    s.write(
        "typo.jsonl",
        jsonl(&[r#"{"id": "1", "vector": [1, 0], "metdata": {}}"#]),
    );
    let run = s.run(&["import", "s", "typo.jsonl"]);
    assert!(
        run.code == 4 && run.stderr.contains("line 1") && run.stderr.contains("metdata"),
        "{run:?}"
    );
    s.write("noid.jsonl", jsonl(&[r#"{"id": null, "vector": [1, 0]}"#]));
    let run = s.run(&["import", "s", "noid.jsonl"]);
    assert!(
        run.code == 4 && run.stderr.contains("\"id\" must be a string"),
        "{run:?}"
    );
}

#[test]
fn vector_of_the_wrong_dimension_is_named_with_its_line() {
    let s = Scratch::new();
    s.create("s", 4);
    s.write(
        "dims.jsonl",
        jsonl(&[
            r#"{"id": "ok", "vector": [1, 2, 3, 4]}"#,
            r#"{"id": "short", "vector": [1, 2, 3]}"#,
        ]),
    );
    let run = s.run(&["import", "s", "dims.jsonl"]);
    assert!(run.code == 4, "{run:?}");
    assert!(
        run.stderr.contains("dims.jsonl line 2") && run.stderr.contains("3 components"),
        "the line and the mismatch are named: {run:?}"
    );
    assert!(
        s.run(&["get", "s", "ok"]).code == 1,
        "the batch holding the bad record is rolled back whole"
    );
}

#[test]
fn fvecs_and_npy_rows_become_ids_by_row_number() {
    let s = Scratch::new();
    s.create("s", 3);
    let rows = vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.5], vec![-1.0, 0.25, 9.0]];
    s.write("v.fvecs", fvecs(&rows));
    let run = s.ok(&["import", "s", "v.fvecs", "--ack", "--batch", "2"]);
    assert_eq!(run.stdout, "2\n3\n");
    assert_eq!(get_vector(&s, "s", "2"), rows[2]);

    s.create("n", 3);
    s.write("v.npy", npy("<f4", &rows));
    s.ok(&["import", "n", "v.npy"]);
    assert_eq!(get_vector(&s, "n", "0"), rows[0]);
    assert_eq!(get_vector(&s, "n", "1"), rows[1]);

    s.write("v.bin", fvecs(&rows));
    s.ok(&["import", "n", "v.bin", "--format", "fvecs"]);
    let run = s.run(&["import", "n", "v.bin"]);
    assert!(
        run.code == 2 && run.stderr.contains("--format"),
        "an unknown extension needs --format: {run:?}"
    );
}

#[test]
fn npy_and_fvecs_that_do_not_fit_the_store_are_named() {
    let s = Scratch::new();
    s.create("s", 3);
    s.write("f8.npy", npy("<f8", &[vec![1.0, 2.0, 3.0]]));
    let run = s.run(&["import", "s", "f8.npy"]);
    assert!(
        run.code == 4 && run.stderr.contains("f8.npy") && run.stderr.contains("'<f8'"),
        "{run:?}"
    );
    s.write("wide.npy", npy("<f4", &[vec![1.0, 2.0, 3.0, 4.0]]));
    let run = s.run(&["import", "s", "wide.npy"]);
    assert!(run.code == 4 && run.stderr.contains("dimension 4"), "{run:?}");
    let mut truncated = npy("<f4", &[vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
    truncated.truncate(truncated.len() - 4);
    s.write("short.npy", truncated);
    let run = s.run(&["import", "s", "short.npy"]);
    assert!(run.code == 4 && run.stderr.contains("truncated"), "{run:?}");
    s.write("mixed.fvecs", fvecs(&[vec![1.0, 2.0, 3.0], vec![1.0, 2.0]]));
    let run = s.run(&["import", "s", "mixed.fvecs"]);
    assert!(
        run.code == 4 && run.stderr.contains("mixed.fvecs row 1") && run.stderr.contains("dimension 2"),
        "{run:?}"
    );
}

#[test]
fn get_of_an_absent_id_exits_1() {
    let s = Scratch::new();
    s.with_abc();
    let run = s.run(&["get", "s", "zz"]);
    assert!(run.code == 1, "{run:?}");
    assert!(run.stdout.is_empty() && run.stderr.contains("\"zz\""), "{run:?}");
}

#[test]
fn get_of_many_ids_prints_a_line_each_in_order_and_exits_1_naming_the_absent() {
    let s = Scratch::new();
    s.with_abc();
    let run = s.ok(&["get", "s", "c", "a", "c"]);
    let lines: Vec<Value> = run.stdout.lines().map(json).collect();
    let ids: Vec<&str> = lines.iter().map(|line| line["id"].as_str().expect("an id")).collect();
    assert_eq!(ids, ["c", "a", "c"], "one line an id, in the order given: {run:?}");
    assert_eq!(
        lines[1],
        json(&s.ok(&["get", "s", "a"]).stdout),
        "each line as a get of its id alone"
    );
    let run = s.run(&["get", "s", "a", "zz", "b", "yy"]);
    assert!(run.code == 1, "{run:?}");
    let printed: Vec<Value> = run.stdout.lines().map(json).collect();
    assert_eq!(printed.len(), 2, "the ids found are printed: {run:?}");
    assert!(
        run.stderr.contains("\"zz\", \"yy\""),
        "the absent ids are named: {run:?}"
    );
}

#[test]
fn delete_removes_a_vector_and_a_second_delete_exits_1() {
    let s = Scratch::new();
    s.with_abc();
    let run = s.ok(&["delete", "s", "a"]);
    assert!(run.stdout.contains("deleted \"a\""), "{run:?}");
    assert!(s.run(&["get", "s", "a"]).code == 1, "a is gone");
    let again = s.run(&["delete", "s", "a"]);
    assert!(again.code == 1 && again.stderr.contains("\"a\""), "{again:?}");
    assert!(s.run(&["get", "s", "b"]).code == 0, "b stays");
}

#[test]
fn search_prints_ids_and_scores_best_first() {
    let s = Scratch::new();
    s.with_abc();
    let run = s.ok(&["search", "s", "--vector", "[1, 0.1, 0, 0]", "-k", "2"]);
    let lines: Vec<(&str, f32)> = run
        .stdout
        .lines()
        .map(|l| {
            let (id, score) = l.split_once('\t').expect("id<TAB>score");
            (id, score.parse().expect("a number"))
        })
        .collect();
    assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), ["a", "c"], "{run:?}");
    assert!(lines[0].1 > lines[1].1, "cosine: higher is closer");

    let l2 = s.ok(&["search", "s", "--vector", "[0, 1, 0, 0]", "--metric", "l2", "-k", "1"]);
    assert_eq!(l2.stdout, "b\t0\n", "an exact hit is at distance 0");

    let filtered = s.ok(&["search", "s", "--vector", "[1,0,0,0]", "--filter", "lang=fr", "--json"]);
    let hits = json(&filtered.stdout);
    assert_eq!(hits, json(r#"[{"id": "b", "score": 0.0}]"#), "only b has lang=fr");

    let dot = s.ok(&["search", "s", "--vector", "[-1,0,0,0]", "--metric", "dot", "--json"]);
    assert_eq!(json(&dot.stdout).as_array().map(Vec::len), Some(3), "k defaults to 10");
}

#[test]
fn search_with_a_query_of_the_wrong_dimension_exits_2() {
    let s = Scratch::new();
    s.with_abc();
    let run = s.run(&["search", "s", "--vector", "[1, 0]"]);
    assert!(run.code == 2 && run.stderr.contains("2 components"), "{run:?}");
    let run = s.run(&["search", "s", "--vector", "one"]);
    assert!(run.code == 2 && run.stderr.contains("JSON array"), "{run:?}");
    let run = s.run(&["search", "s", "--vector", "[1,0,0,0]", "--filter", "lang"]);
    assert!(run.code == 2 && run.stderr.contains("key=value"), "{run:?}");
}

#[test]
fn checkpoint_prints_its_lsn() {
    let s = Scratch::new();
    s.with_abc();
    let run = s.ok(&["checkpoint", "s"]);
    let lsn: u64 = run
        .stdout
        .strip_prefix("checkpoint at LSN ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("checkpoint at LSN <n>: {run:?}"));
    let stats = json(&s.ok(&["stats", "s", "--json"]).stdout);
    let on_disk = stats["checkpoint"]["lsn"].as_u64().expect("a checkpoint");
    assert!(
        on_disk >= lsn,
        "stats shows the last checkpoint before its open: {on_disk} < {lsn}"
    );
}

/// The bytes of every file in `dir`, recursively, by relative path.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn verify_passes_a_clean_store_and_changes_no_file() {
    let s = Scratch::new();
    s.with_abc();
    let before = snapshot(&s.path("s"));
    let run = s.ok(&["verify", "s"]);
    assert!(run.stdout.lines().last() == Some("clean (0 warnings)"), "{run:?}");
    let report = json(&s.ok(&["verify", "s", "--json"]).stdout);
    assert!(matches!(report["clean"], Value::Bool(true)), "{report}");
    assert_eq!(report["failures"], 0);
    assert!(
        report["wal"]["records"].as_u64().unwrap() > 0,
        "records were read: {report}"
    );
    assert!(
        report["arena"]["vector_pages"].as_u64().unwrap() > 0,
        "pages were read: {report}"
    );
    assert_eq!(report["control"]["slots"].as_array().map(Vec::len), Some(2));
    assert!(snapshot(&s.path("s")) == before, "verify writes nothing");
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x5a;
    file.write_all_at(&byte, offset).unwrap();
}

#[test]
fn verify_names_a_corrupted_arena_page_and_exits_1() {
    let s = Scratch::new();
    s.with_abc();
    s.ok(&["checkpoint", "s"]);
    // Page 0 of the vector space holds a, b and c once the checkpoint has written it.
    flip_byte(&s.path("s/arena/vector-00000000.pages"), 100);
    let run = s.run(&["verify", "s"]);
    assert!(run.code == 1, "damage fails verification: {run:?}");
    assert!(
        run.stdout
            .contains("FAILURE arena/vector-00000000.pages page 0: vector page 0: checksum mismatch"),
        "the page is named: {run:?}"
    );
    assert!(
        run.stderr.contains("arena/vector-00000000.pages page 0"),
        "and the error line names it too: {run:?}"
    );
    let report = json(&s.run(&["verify", "s", "--json"]).stdout);
    let problem = &report["problems"][0];
    assert_eq!(problem["file"], "arena/vector-00000000.pages", "{report}");
    assert_eq!(problem["page"], 0, "{report}");
    assert_eq!(problem["severity"], "failure", "{report}");
    assert_eq!(report["arena"]["damaged_pages"], 1, "{report}");
}

/// Store `s` of dimension 16 with 4 KiB pages and 64 KiB segments (a few records retire
/// segments), holding `count` records `v<i>` (a `note` of `note` when not empty) imported in
/// batches of `batch`.
fn small_segment_store_with(s: &Scratch, count: usize, note: &str, batch: usize) {
    s.ok(&[
        "create",
        "s",
        "--dim",
        "16",
        "--page-size",
        "4096",
        "--segment-size",
        "65536",
    ]);
    let metadata = if note.is_empty() {
        String::new()
    } else {
        format!(r#", "metadata": {{"note": "{note}"}}"#)
    };
    let rows: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"id": "v{i}", "vector": [{}]{metadata}}}"#,
                vec![i.to_string(); 16].join(", ")
            )
        })
        .collect();
    s.write("v.jsonl", jsonl(&rows.iter().map(String::as_str).collect::<Vec<_>>()));
    s.ok(&["import", "s", "v.jsonl", "--batch", &batch.to_string()]);
}

#[test]
fn verify_names_a_damaged_archive_file_and_exits_1() {
    let s = Scratch::new();
    small_segment_store_with(&s, 300, "", 50);
    s.ok(&["checkpoint", "s"]);
    let clean = json(&s.ok(&["verify", "s", "--json"]).stdout);
    assert!(
        clean["archive"]["checked_files"].as_u64() > Some(1),
        "retired segments were archived and checked: {clean}"
    );
    let archived = s.path("s/archive/wal-0000000000000000.lz4");
    let len = std::fs::metadata(&archived).expect("segment 0 is archived").len();
    flip_byte(&archived, len / 2);
    let run = s.run(&["verify", "s"]);
    assert!(run.code == 1, "{run:?}");
    assert!(
        run.stdout.contains("FAILURE archive/wal-0000000000000000.lz4: "),
        "the archive file is named: {run:?}"
    );
}

#[test]
fn verify_names_a_damaged_log_record_by_its_lsn() {
    let s = Scratch::new();
    s.with_abc();
    let dump = s.ok(&["wal-dump", "s", "--json"]);
    let update = dump
        .stdout
        .lines()
        .map(json)
        .find(|r| r["kind"] == "update" && r["id"] == "a")
        .expect("the update of a");
    let lsn = update["lsn"].as_u64().unwrap();
    // Segment 0 starts at LSN 0: the record's payload lies at byte lsn + 56 of the file.
    flip_byte(&s.path("s/wal/0000000000000000.wal"), lsn + 60);
    let run = s.run(&["verify", "s"]);
    assert!(run.code == 1, "{run:?}");
    assert!(
        run.stdout.contains(&format!("LSN {lsn}")),
        "the damaged record is named by its LSN: {run:?}"
    );
}

#[test]
fn wal_dump_prints_one_record_a_line_in_lsn_order_within_from_to() {
    let s = Scratch::new();
    s.with_abc();
    let run = s.ok(&["wal-dump", "s"]);
    let lsns: Vec<u64> = run
        .stdout
        .lines()
        .map(|l| {
            assert!(
                l.starts_with("lsn=") && l.contains(" kind=") && l.contains(" ts="),
                "{l}"
            );
            l["lsn=".len()..].split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "in LSN order: {lsns:?}");
    let update_b = run
        .stdout
        .lines()
        // The import loads its rows through the bulk path: one record for the three, named
        // by its first id.
        .find(|l| l.contains(r#"kind=update op=batch id="a" edits="#))
        .unwrap_or_else(|| panic!("the update of a, b and c: {run:?}"));
    let lsn = &update_b["lsn=".len()..update_b.find(' ').unwrap()];
    let one = s.ok(&["wal-dump", "s", "--from", lsn, "--to", lsn]);
    assert_eq!(
        one.stdout.lines().collect::<Vec<_>>(),
        [update_b],
        "--from and --to are inclusive"
    );
    let after = s.ok(&["wal-dump", "s", "--from", lsn]);
    assert!(after.stdout.starts_with(update_b), "{after:?}");
    let commit = run
        .stdout
        .lines()
        .find(|l| l.contains("kind=commit"))
        .expect("a commit");
    assert!(commit.contains(" txn=") && !commit.contains("txn=0 "), "{commit}");
}

#[test]
fn wal_dump_json_lines_carry_the_documented_fields() {
    let s = Scratch::new();
    s.with_abc();
    let run = s.ok(&["wal-dump", "s", "--json"]);
    let records: Vec<Value> = run.stdout.lines().map(json).collect();
    for r in &records {
        for field in [
            "lsn",
            "end",
            "len",
            "txn",
            "prev",
            "kind",
            "timestamp_us",
            "epoch",
            "durable_lsn",
            "flags",
        ] {
            assert!(r.get(field).is_some(), "{field} in {r}");
        }
        assert_eq!(
            r["end"].as_u64().unwrap() - r["lsn"].as_u64().unwrap(),
            r["len"].as_u64().unwrap(),
            "end = lsn + len for records within a page: {r}"
        );
    }
    let update = records.iter().find(|r| r["kind"] == "update").expect("an update");
    assert_eq!(update["op"], "batch", "the import's bulk path");
    let edit = &update["edits"][0];
    for field in ["edit", "space", "page", "offset", "len", "before"] {
        assert!(edit.get(field).is_some(), "{field} in {edit}");
    }
    let end = records
        .iter()
        .find(|r| r["kind"] == "checkpoint-end")
        .expect("a checkpoint");
    for field in ["begin_lsn", "next_txn_id", "txns", "dirty"] {
        assert!(end.get(field).is_some(), "{field} in {end}");
    }
    let init = records.iter().find(|r| r["kind"] == "page-init").expect("a page init");
    for field in ["space", "page", "page_kind", "a", "b"] {
        assert!(init.get(field).is_some(), "{field} in {init}");
    }
}

#[test]
fn stats_counts_the_segments_a_session_left_for_the_archiver_until_a_checkpoint_archives_them() {
    let s = Scratch::new();
    small_segment_store_with(&s, 10, "", 10);
    let after_import = json(&s.ok(&["stats", "s", "--json"]).stdout);
    assert_eq!(
        after_import["wal"]["awaiting_archiver"], 0,
        "a close archives what it retires: {after_import}"
    );
    {
        // A session whose archiver is stopped, ended without a close (as a crash after a
        // checkpoint would end it): the segments its checkpoint released wait in the log.
        let options = vellum::Options {
            page_size_bytes: 4096,
            segment_size_bytes: 65536,
            ..vellum::Options::default()
        };
        let store = vellum::Store::open(s.path("s"), options).unwrap();
        vellum::testing::stop_archiver(&store);
        let note = "x".repeat(200);
        for i in 0..2000 {
            store
                .insert(&format!("w{i}"), &[i as f32; 16], &[("note", note.as_str())])
                .unwrap();
        }
        store.checkpoint().unwrap();
        drop(store);
    }
    let before = json(&s.ok(&["stats", "s", "--json"]).stdout);
    let waiting = before["wal"]["awaiting_archiver"].as_u64().unwrap();
    assert!(
        waiting > 0,
        "the session left released segments for the archiver: {before}"
    );
    assert_eq!(
        before["wal"]["awaiting_archiver_bytes"].as_u64(),
        Some(waiting * 65536),
        "{before}"
    );
    let text = s.ok(&["stats", "s"]).stdout;
    assert!(
        text.contains("waiting for the archiver"),
        "the text says so too: {text}"
    );
    s.ok(&["checkpoint", "s"]);
    let after = json(&s.ok(&["stats", "s", "--json"]).stdout);
    assert_eq!(
        after["wal"]["awaiting_archiver"], 0,
        "the checkpoint archived them: {after}"
    );
    assert!(after["archive"]["files"].as_u64().unwrap() > waiting, "{after}");
}

#[test]
fn stats_json_reports_counts_sizes_lsns_and_the_recovery() {
    let s = Scratch::new();
    s.with_abc();
    let stats = json(&s.ok(&["stats", "s", "--json"]).stdout);
    assert_eq!(stats["vectors"], 3);
    assert_eq!(stats["dimension"], 4);
    assert_eq!(stats["format"], "4.1", "the format version of FORMAT.md");
    assert_eq!(stats["page_size"], 4096);
    assert_eq!(stats["segment_size"], 262_144);
    assert_eq!(
        stats["wal"]["durable_lsn"], stats["wal"]["end_lsn"],
        "nothing pending after open"
    );
    assert!(stats["checkpoint"]["lsn"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["arena"]["vector_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["recovery"]["scan"]["records"].as_u64().is_some(), "{stats}");
    assert!(
        matches!(stats["recovery"]["losers"], Value::Array(ref l) if l.is_empty()),
        "{stats}"
    );
    let text = s.ok(&["stats", "s"]);
    assert!(text.stdout.contains("vectors:      3 of dimension 4"), "{text:?}");
}

#[test]
fn a_store_open_in_another_process_exits_5() {
    let s = Scratch::new();
    s.with_abc();
    let guard = vellum::storage::Storage::lock_exclusive(&vellum::storage::RealStorage::new(), &s.path("s/LOCK"))
        .expect("take the lock");
    let run = s.run(&["get", "s", "a"]);
    assert!(
        run.code == 5 && run.stderr.contains("open in another process"),
        "{run:?}"
    );
    let verify = s.run(&["verify", "s"]);
    assert!(
        verify.code == 0
            && verify
                .stdout
                .contains("WARNING store: the store is open in another process"),
        "verify warns and goes on: {verify:?}"
    );
    drop(guard);
    s.ok(&["get", "s", "a"]);
}

#[test]
fn json_fields_are_all_documented_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let s = Scratch::new();
    s.with_abc();
    s.ok(&["delete", "s", "c"]);
    let mut found = BTreeSet::new();
    for args in [
        &["get", "s", "a"][..],
        &["search", "s", "--vector", "[1,0,0,0]", "--json"],
        &["verify", "s", "--json"],
        &["stats", "s", "--json"],
    ] {
        keys(&json(&s.ok(args).stdout), &mut found);
    }
    for line in s.ok(&["wal-dump", "s", "--json"]).stdout.lines() {
        keys(&json(line), &mut found);
    }
    let undocumented: Vec<_> = found.iter().filter(|k| !readme.contains(&format!("`{k}`"))).collect();
    assert!(
        undocumented.is_empty(),
        "README.md must list these JSON fields: {undocumented:?}"
    );
}

#[test]
fn restore_refuses_an_existing_destination() {
    let s = Scratch::new();
    s.with_abc();
    std::fs::create_dir(s.path("taken")).unwrap();
    let run = s.run(&["restore", "s", "taken", "--latest"]);
    assert!(run.code == 2 && run.stderr.contains("taken"), "{run:?}");
    let run = s.run(&["restore", "s", "r", "--time", "2026-11-21 15:02"]);
    assert!(run.code == 2 && run.stderr.contains("RFC 3339"), "{run:?}");
}

/// Passes once `vellum::restore` lands (the archive work); until then restore reports
/// "restore is being implemented".
#[test]
fn restore_to_a_commit_lsn_keeps_exactly_the_commits_at_or_before_it() {
    let s = Scratch::new();
    s.create("s", 2);
    s.write(
        "r.jsonl",
        jsonl(&[
            r#"{"id": "1", "vector": [1, 0]}"#,
            r#"{"id": "2", "vector": [0, 1]}"#,
            r#"{"id": "3", "vector": [1, 1]}"#,
        ]),
    );
    let run = s.ok(&["import", "s", "r.jsonl", "--batch", "1", "--ack-lsn"]);
    let acks: Vec<(u64, u64)> = run
        .stdout
        .lines()
        .map(|l| {
            let (count, lsn) = l.split_once(' ').expect("<count> <lsn>");
            (count.parse().unwrap(), lsn.parse().unwrap())
        })
        .collect();
    assert_eq!(acks.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 2, 3]);
    let second = acks[1].1.to_string();
    let restored = s.run(&["restore", "s", "r", "--lsn", &second, "--json"]);
    assert!(restored.code == 0, "{restored:?}");
    let report = json(&restored.stdout);
    assert_eq!(report["target_lsn"].as_u64(), Some(acks[1].1), "{report}");
    for field in [
        "base_image_lsn",
        "wal_bytes",
        "records_redone",
        "rolled_back",
        "segments_from_archive",
        "segments_live",
        "timeline",
        "duration_us",
    ] {
        assert!(report.get(field).is_some(), "{field} in {report}");
    }
    assert!(s.run(&["get", "r", "2"]).code == 0, "the second commit is in");
    assert!(s.run(&["get", "r", "3"]).code == 1, "the third is not");
    let latest = s.run(&["restore", "s", "all", "--latest"]);
    assert!(latest.code == 0, "{latest:?}");
    assert!(s.run(&["get", "all", "3"]).code == 0, "--latest has everything");
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + std::time::Duration::from_secs(2));
    let timed = s.run(&["restore", "s", "t", "--time", &now.to_string()]);
    assert!(timed.code == 0, "{timed:?}");
    assert_eq!(json(&s.ok(&["stats", "t", "--json"]).stdout)["vectors"], 3);
}

#[test]
fn backup_copies_every_vector_into_a_new_store_and_refuses_an_existing_one() {
    let s = Scratch::new();
    s.with_abc();
    std::fs::create_dir(s.path("taken")).unwrap();
    let run = s.run(&["backup", "s", "taken"]);
    assert!(run.code == 2 && run.stderr.contains("taken"), "{run:?}");
    let run = s.ok(&["backup", "s", "copy"]);
    assert!(run.stdout.starts_with("backed up s into copy at LSN"), "{run:?}");
    for id in ["a", "b", "c"] {
        assert_eq!(
            get_vector(&s, "copy", id),
            get_vector(&s, "s", id),
            "{id} is copied bit for bit"
        );
    }
    let report = json(&s.ok(&["backup", "s", "copy2", "--json"]).stdout);
    assert!(
        report["timeline"].as_u64() > Some(1),
        "a backup starts its own history: {report}"
    );
    s.ok(&["delete", "copy", "a"]);
    assert!(s.run(&["get", "s", "a"]).code == 0, "the source is its own store");
}

/// The whole demo on a few hundred vectors (passes once `vellum::restore` lands).
#[test]
fn demo_runs_small_and_proves_its_claims() {
    let s = Scratch::new();
    let run = vellum_in(s.dir.path(), &["demo", "d"], &[("VELLUM_DEMO_VECTORS", "400")]);
    assert!(run.code == 0, "{run:?}");
    for claim in ["wholly", "bit for bit", "top hit \"", "verify: clean", "wall time"] {
        assert!(run.stdout.contains(claim), "the demo says {claim:?}: {}", run.stdout);
    }
    assert!(s.path("d/store/CONTROL").is_file() && !s.path("d/vectors.npy").exists());
    let again = vellum_in(s.dir.path(), &["demo", "d"], &[("VELLUM_DEMO_VECTORS", "400")]);
    assert!(again.code == 2, "the demo will not reuse a directory: {again:?}");
}

#[test]
fn search_prints_scores_beyond_the_f32_range_as_inf_and_never_nan() {
    let s = Scratch::new();
    s.create("s", 2);
    s.write(
        "big.jsonl",
        jsonl(&[
            r#"{"id": "huge", "vector": [3e38, 3e38]}"#,
            r#"{"id": "unit", "vector": [1, 0]}"#,
        ]),
    );
    s.ok(&["import", "s", "big.jsonl"]);
    let cosine = s.ok(&["search", "s", "--vector", "[3e38, 3e38]"]);
    assert_eq!(cosine.stdout, "huge\t1\nunit\t0.70710677\n", "{cosine:?}");
    let dot = s.ok(&["search", "s", "--vector", "[-3e38, -3e38]", "--metric", "dot"]);
    let lines: Vec<(&str, f32)> = dot
        .stdout
        .lines()
        .map(|l| l.split_once('\t').map(|(id, x)| (id, x.parse().unwrap())).unwrap())
        .collect();
    assert_eq!(lines, [("unit", -3e38), ("huge", f32::NEG_INFINITY)], "{dot:?}");
    let l2 = s.ok(&["search", "s", "--vector", "[-3e38, 0]", "--metric", "l2", "--json"]);
    let hits = json(&l2.stdout);
    assert_eq!(hits[0]["id"], "unit", "{hits}");
    assert_eq!(hits[0]["score"].as_f64().map(|x| x as f32), Some(3e38), "{hits}");
    assert_eq!(
        hits[1],
        json(r#"{"id": "huge", "score": "inf"}"#),
        "JSON has no infinity: the string stands for it"
    );
}

/// Rows of dimension 3 whose components say where they are (row i, column j: i * 10 + j).
fn numbered_rows(count: usize) -> Vec<Vec<f32>> {
    (0..count)
        .map(|i| (0..3).map(|j| (i * 10 + j) as f32).collect())
        .collect()
}

#[test]
fn npy_from_a_pipe_imports_in_either_order() {
    let s = Scratch::new();
    let rows = numbered_rows(5);
    for (name, fortran) in [("c", false), ("f", true)] {
        s.create(name, 3);
        let run = s.run_piped(
            &["import", name, "/dev/stdin", "--format", "npy", "--batch", "2", "--ack"],
            npy_ordered("<f4", fortran, &rows),
        );
        assert!(
            run.code == 0,
            "a pipe needs no seek and no length (Fortran: {fortran}): {run:?}"
        );
        assert_eq!(run.stdout, "2\n4\n5\n", "{run:?}");
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(
                &get_vector(&s, name, &i.to_string()),
                row,
                "row {i} is id {i} (Fortran: {fortran})"
            );
        }
    }
    let fvecs_run = s.run_piped(&["import", "c", "/dev/stdin", "--format", "fvecs"], fvecs(&rows));
    assert!(fvecs_run.code == 0, "{fvecs_run:?}");
}

#[test]
fn import_of_a_dash_reads_standard_input_as_jsonl_unless_told() {
    let s = Scratch::new();
    s.create("s", 4);
    let lines = concat!(
        r#"{"id": "a", "vector": [1, 0, 0, 0]}"#,
        "\n",
        r#"{"id": "b", "vector": [0, 1, 0, 0]}"#,
        "\n"
    );
    let run = s.run_piped(&["import", "s", "-"], lines.as_bytes().to_vec());
    assert!(run.code == 0, "a dash is standard input, JSONL by default: {run:?}");
    assert!(run.stdout.contains("from standard input"), "named as such: {run:?}");
    assert_eq!(get_vector(&s, "s", "b"), vec![0.0, 1.0, 0.0, 0.0]);
    let rows = numbered_rows(4)
        .into_iter()
        .map(|r| [r, vec![0.0]].concat())
        .collect::<Vec<_>>();
    let run = s.run_piped(&["import", "s", "-", "--format", "fvecs"], fvecs(&rows));
    assert!(run.code == 0, "--format applies to standard input: {run:?}");
    assert_eq!(get_vector(&s, "s", "3"), rows[3]);
    let bad = r#"{"id": "c", "vector": [1, 0, 0]}"#.as_bytes().to_vec();
    let run = s.run_piped(&["import", "s", "-"], bad);
    assert!(
        run.code == 4 && run.stderr.contains("standard input line 1"),
        "a bad line of standard input is named by its number: {run:?}"
    );
}

#[test]
fn fortran_order_npy_file_rows_are_its_rows() {
    let s = Scratch::new();
    s.create("s", 3);
    let rows = numbered_rows(9);
    s.write("t.npy", npy_ordered("<f4", true, &rows));
    s.ok(&["import", "s", "t.npy", "--batch", "4"]);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(&get_vector(&s, "s", &i.to_string()), row, "row {i} is id {i}");
    }
    assert_eq!(json(&s.ok(&["stats", "s", "--json"]).stdout)["vectors"], 9);
}

#[test]
fn npy_with_bytes_after_the_last_row_is_refused_from_a_file_or_a_pipe() {
    let s = Scratch::new();
    s.create("s", 3);
    for fortran in [false, true] {
        let mut bytes = npy_ordered("<f4", fortran, &numbered_rows(3));
        bytes.extend_from_slice(&[0, 0, 0, 0, 7]);
        s.write("extra.npy", &bytes);
        let from_file = s.run(&["import", "s", "extra.npy"]);
        let from_pipe = s.run_piped(&["import", "s", "/dev/stdin", "--format", "npy"], bytes);
        for run in [from_file, from_pipe] {
            assert!(
                run.code == 4,
                "trailing bytes are bad input (Fortran: {fortran}): {run:?}"
            );
            assert!(
                run.stderr
                    .contains("5 bytes follow the end of the array (after row 2, the last of 3 rows"),
                "the error says how many bytes follow which row: {run:?}"
            );
            assert!(s.run(&["get", "s", "0"]).code == 1, "nothing is imported: {run:?}");
        }
    }
}

#[test]
fn short_npy_is_an_error_naming_the_first_incomplete_row() {
    let s = Scratch::new();
    s.create("s", 3);
    // C order, cut 2 bytes into row 3; Fortran order, cut inside the last column at row 3;
    // Fortran order cut inside the first column: every row lacks its other columns.
    for (fortran, keep_bytes, row) in [(false, 3 * 12 + 2, 3), (true, 2 * 5 * 4 + 3 * 4 + 1, 3), (true, 8, 0)] {
        let bytes = npy_ordered("<f4", fortran, &numbered_rows(5));
        let data_offset = bytes.len() - 5 * 12;
        let cut = bytes[..data_offset + keep_bytes].to_vec();
        s.write("short.npy", &cut);
        let from_file = s.run(&["import", "s", "short.npy", "--batch", "1"]);
        let from_pipe = s.run_piped(&["import", "s", "/dev/stdin", "--format", "npy", "--batch", "1"], cut);
        for run in [from_file, from_pipe] {
            assert!(run.code == 4, "{run:?}");
            let expected = format!(
                " row {row}: truncated: the data ends after {keep_bytes} of the 60 bytes of 5 rows of 3 float32s"
            );
            assert!(
                run.stderr.contains(&expected),
                "{expected:?} (Fortran: {fortran}): {run:?}"
            );
        }
    }
}

/// Starts `vellum import` of a large fvecs file with `--ack`, sends `signal` once two batches
/// are acknowledged, and checks that it stops between batches, says how many records are
/// committed and durable, exits `code`, and that exactly those records are there after.
fn interrupted_import_keeps_exactly_what_it_reports(signal: libc::c_int, name: &str, code: i32) {
    let s = Scratch::new();
    s.create("s", 4);
    let (rows, batch) = (300_000usize, 500usize);
    let data: Vec<Vec<f32>> = (0..rows).map(|i| vec![i as f32, 1.0, 2.0, 3.0]).collect();
    s.write("big.fvecs", fvecs(&data));
    let mut child = s.spawn(
        &["import", "s", "big.fvecs", "--ack", "--batch", &batch.to_string()],
        Stdio::null(),
    );
    let mut acks = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut seen: Vec<usize> = Vec::new();
    while seen.len() < 2 {
        let line = acks.next().expect("an acknowledgement").unwrap();
        seen.push(line.parse().expect("a count"));
    }
    // SAFETY: `kill` of our own child, which has not been waited for, so its pid is still its own.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(sent, 0, "send {name}");
    seen.extend(acks.map(|l| l.unwrap().parse::<usize>().expect("a count")));
    let output = child.wait_with_output().expect("vellum exits");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{name} exits {code}: {stderr}");
    let committed: usize = stderr
        .strip_prefix(&format!(
            "vellum: interrupted by {name}: the import stopped between batches; "
        ))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("stderr says how many records are committed: {stderr:?}"));
    assert!(
        stderr.contains(&format!("{committed} records are committed and durable")) && stderr.lines().count() == 1,
        "{stderr:?}"
    );
    assert!(
        committed.is_multiple_of(batch) && committed >= 2 * batch && committed < rows,
        "stopped at a batch boundary after the acknowledged ones, before the end: {committed}"
    );
    assert_eq!(
        seen.last(),
        Some(&committed),
        "every acknowledgement was printed, the last says it all"
    );
    assert_eq!(json(&s.ok(&["stats", "s", "--json"]).stdout)["vectors"], committed);
    assert_eq!(get_vector(&s, "s", &(committed - 1).to_string()), data[committed - 1]);
    assert!(
        s.run(&["get", "s", &committed.to_string()]).code == 1,
        "nothing after it"
    );
}

#[test]
fn sigint_stops_an_import_between_batches_and_exits_130() {
    interrupted_import_keeps_exactly_what_it_reports(libc::SIGINT, "SIGINT", 130);
}

#[test]
fn sigterm_stops_an_import_between_batches_and_exits_143() {
    interrupted_import_keeps_exactly_what_it_reports(libc::SIGTERM, "SIGTERM", 143);
}

/// `vellum index create` on a store whose build takes seconds, sent SIGINT half a second in:
/// it stops, exits 130 saying that nothing of the build was kept, and the store verifies,
/// has no index and searches by a scan.
#[test]
fn sigint_stops_an_index_build_keeping_nothing_and_exits_130() {
    let s = Scratch::new();
    s.create("s", 32);
    let mut rng = 0x1234_5678_9abc_def1u64;
    let data: Vec<Vec<f32>> = (0..40_000)
        .map(|_| {
            (0..32)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    (rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        })
        .collect();
    s.write("rows.fvecs", fvecs(&data));
    s.ok(&["import", "s", "rows.fvecs"]);
    let child = s.spawn(&["index", "create", "s"], Stdio::null());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (code, stderr) = sigint_and_wait(child);
    assert_eq!(code, Some(130), "SIGINT exits 130: {stderr}");
    assert!(
        stderr.starts_with("vellum: interrupted by SIGINT: the index build stopped after ")
            && stderr.contains("nothing of it was kept"),
        "{stderr:?}"
    );
    let stats = json(&s.ok(&["stats", "s", "--json"]).stdout);
    assert!(stats["index"].is_null(), "no index: {stats}");
    assert_eq!(stats["vectors"], 40_000);
    s.ok(&["verify", "s"]);
    let query = "[0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4, \
                 0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4]";
    let found = s.ok(&["search", "s", "--vector", query, "-k", "3"]);
    assert_eq!(found.stdout.lines().count(), 3, "a scan answers: {found:?}");
}

/// Sends SIGINT to `child` and waits for it: its exit code and stderr.
fn sigint_and_wait(child: std::process::Child) -> (Option<i32>, String) {
    // SAFETY: `kill` of our own child, which has not been waited for, so its pid is still its own.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0, "send SIGINT");
    let output = child.wait_with_output().expect("vellum exits");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits until process `pid` catches SIGINT (its handler is installed: `SigCgt` in
/// /proc/PID/status has bit 2), so that a SIGINT sent then is the command's to handle.
fn wait_until_sigint_is_caught(pid: u32) {
    let started = std::time::Instant::now();
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|line| line.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0);
        if caught {
            return;
        }
        assert!(started.elapsed().as_secs() < 60, "process {pid} never caught SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn sigint_stops_a_restore_and_a_backup_keeping_nothing_and_exits_130() {
    let s = Scratch::new();
    s.create("s", 256);
    // 128 MiB of vectors: the restore (1.1 s here) and the backup (0.55 s) take several of
    // their watcher's 100 ms ticks.
    let data: Vec<Vec<f32>> = (0..131_072u32)
        .map(|i| (0..256u32).map(|j| ((i * 31 + j * 7) % 1000) as f32 / 1000.0).collect())
        .collect();
    s.write("rows.fvecs", fvecs(&data));
    s.ok(&["import", "s", "rows.fvecs", "--batch", "4096"]);
    for (command, what) in [
        (&["restore", "s", "r", "--latest"][..], "restore"),
        (&["backup", "s", "r"][..], "backup"),
    ] {
        let child = s.spawn(command, Stdio::null());
        wait_until_sigint_is_caught(child.id());
        let (code, stderr) = sigint_and_wait(child);
        assert_eq!(code, Some(130), "{what}: SIGINT exits 130: {stderr}");
        assert!(
            stderr.starts_with(&format!("vellum: interrupted by SIGINT: the {what} stopped after "))
                && stderr.contains("nothing of it was kept"),
            "{what}: {stderr:?}"
        );
        let left: Vec<String> = std::fs::read_dir(s.path("."))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".r.") || name == "r")
            .collect();
        assert!(left.is_empty(), "{what}: nothing of r is left: {left:?}");
    }
    s.ok(&["verify", "s"]);
    s.ok(&["restore", "s", "r", "--latest"]);
    let stats = json(&s.ok(&["stats", "r", "--json"]).stdout);
    assert_eq!(stats["vectors"], 131_072, "a restore after the stopped ones is whole");
}

#[test]
fn restore_to_an_lsn_beyond_the_end_of_the_log_exits_2_naming_the_end() {
    let s = Scratch::new();
    s.with_abc();
    let end = json(&s.ok(&["stats", "s", "--json"]).stdout)["wal"]["end_lsn"]
        .as_u64()
        .expect("an end LSN");
    let beyond = (end + 1_000_000).to_string();
    let run = s.run(&["restore", "s", "r", "--lsn", &beyond]);
    assert!(run.code == 2, "{run:?}");
    assert!(
        run.stderr.contains("beyond the end of the log, which is at LSN ") && run.stderr.contains(&beyond),
        "{run:?}"
    );
    assert!(!s.path("r").exists(), "nothing is restored");
}

#[test]
fn search_escapes_control_characters_in_ids_reversibly() {
    let s = Scratch::new();
    s.create("s", 2);
    let ids = [
        "tab\there",
        "new\nline",
        "back\\slash \"quoted\"",
        "bell\u{7}\r\u{7f}",
        "plain é",
    ];
    let lines: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| serde_json::json!({"id": id, "vector": [1.0, i as f32]}).to_string())
        .collect();
    s.write(
        "odd.jsonl",
        jsonl(&lines.iter().map(String::as_str).collect::<Vec<_>>()),
    );
    s.ok(&["import", "s", "odd.jsonl"]);
    let run = s.ok(&["search", "s", "--vector", "[1, 0]", "--metric", "l2"]);
    let printed: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(printed.len(), ids.len(), "one line per hit: {run:?}");
    let back: Vec<String> = printed
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 2, "two tab-separated fields: {line:?}");
            serde_json::from_str(&format!("\"{}\"", fields[0])).expect("the body of a JSON string")
        })
        .collect();
    assert_eq!(back, ids, "escaped reversibly, in L2 order");
    assert_eq!(printed[0], "tab\\there\t0", "{run:?}");
    assert_eq!(printed[3], "bell\\u0007\\r\\u007f\t3", "{run:?}");
    assert_eq!(printed[4], "plain é\t4", "nothing else changes");
    let hits = json(
        &s.ok(&["search", "s", "--vector", "[1, 0]", "--metric", "l2", "--json"])
            .stdout,
    );
    assert_eq!(hits[1]["id"], "new\nline", "--json prints ids as JSON strings");
}

#[test]
fn a_missing_input_file_exits_6() {
    let s = Scratch::new();
    s.create("s", 2);
    std::fs::create_dir(s.path("dir.jsonl")).unwrap();
    for file in ["missing.jsonl", "dir.jsonl"] {
        let run = s.run(&["import", "s", file]);
        assert!(run.code == 6, "{file}: {run:?}");
        assert!(
            run.stderr.contains(&format!("cannot open the input file {file}")),
            "{run:?}"
        );
    }
    let run = s.run(&["import", "nowhere", "missing.jsonl"]);
    assert!(run.code == 1, "a missing store is still 1: {run:?}");
}

#[test]
fn retention_given_to_create_or_prune_is_stored_for_every_later_open() {
    let s = Scratch::new();
    s.ok(&[
        "create",
        "s",
        "--dim",
        "4",
        "--page-size",
        "4096",
        "--segment-size",
        "262144",
        "--retention",
        "keep-all",
    ]);
    let settings = || std::fs::read_to_string(s.path("s/SETTINGS")).unwrap_or_default();
    assert!(settings().contains("retention=keep-all"), "{}", settings());
    let pruned = s.ok(&["archive", "prune", "s", "--retention", "max-bytes:1MiB"]);
    assert!(pruned.stdout.contains("max-bytes:1048576"), "{pruned:?}");
    assert!(settings().contains("retention=max-bytes:1048576"), "{}", settings());
    s.ok(&["archive", "prune", "s"]);
    let bad = s.run(&["archive", "prune", "s", "--retention", "keep-last:0"]);
    assert_eq!(bad.code, 2, "a policy that keeps nothing is refused: {bad:?}");
}

#[test]
fn create_refuses_a_segment_larger_than_the_free_space_and_leaves_nothing() {
    let s = Scratch::new();
    let run = s.run(&["create", "s", "--dim", "4", "--segment-size", "1024GiB"]);
    assert_eq!(run.code, 3, "a segment larger than the disk is refused: {run:?}");
    assert!(
        run.stderr.contains("disk full") && run.stderr.contains("are free"),
        "{run:?}"
    );
    assert!(
        !s.path("s/wal").exists() && !s.path("s/CONTROL").exists(),
        "nothing of a store is left behind"
    );
}

#[test]
fn with_vellum_direct_io_0_every_command_still_writes_and_reads() {
    let s = Scratch::new();
    let env = [("VELLUM_DIRECT_IO", "0")];
    let run = |args: &[&str]| vellum_in(s.dir.path(), args, &env);
    assert_eq!(run(&["create", "s", "--dim", "2"]).code, 0, "create");
    s.write(
        "v.jsonl",
        jsonl(&[r#"{"id": "a", "vector": [1, 2]}"#, r#"{"id": "b", "vector": [3, 4]}"#]),
    );
    let import = run(&["import", "s", "v.jsonl"]);
    assert_eq!(import.code, 0, "import: {import:?}");
    let get = run(&["get", "s", "b"]);
    assert!(get.code == 0 && get.stdout.contains("[3.0,4.0]"), "get: {get:?}");
    assert_eq!(run(&["checkpoint", "s"]).code, 0, "checkpoint");
    assert_eq!(run(&["verify", "s"]).code, 0, "verify");
}

#[test]
fn an_import_whose_store_is_deleted_under_it_says_the_store_is_gone_not_that_its_rows_stay() {
    // Before, the message said "the N records committed before stay" with the directory gone.
    use std::io::{BufRead, BufReader, Write};
    let s = Scratch::new();
    s.create("s", 2);
    let mut child = s.spawn(&["import", "s", "-", "--batch", "1", "--ack"], Stdio::piped());
    let mut stdin = child.stdin.take().expect("a pipe");
    let mut acks = BufReader::new(child.stdout.take().expect("a pipe")).lines();
    writeln!(stdin, r#"{{"id": "a", "vector": [1, 2]}}"#).unwrap();
    assert_eq!(acks.next().unwrap().unwrap(), "1", "the first row is durable");
    std::fs::remove_dir_all(s.path("s")).unwrap();
    // More rows: the next commit's flush finds its segment deleted and cannot put it back.
    for i in 0..20 {
        if writeln!(stdin, r#"{{"id": "b{i}", "vector": [{i}, 2]}}"#).is_err() {
            break;
        }
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("moved or deleted") && !stderr.contains("committed before it stay"),
        "the message says the store is gone: {stderr}"
    );
}
