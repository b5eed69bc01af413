//! `vellum index create|drop` and `vellum search --ef/--exact` as scripts see them: output,
//! errors and exit codes (0 ok, 1 not found, 2 usage), and `stats`, `verify` and `wal-dump`
//! with an index.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_vellum");

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
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
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ok(cwd: &Path, args: &[&str]) -> Run {
    let run = vellum(cwd, args);
    assert!(run.code == 0, "vellum {args:?} should succeed: {run:?}");
    run
}

/// A store "s" of dimension 4 holding `v0` … `v199` (points on a spiral) and an index.
fn store_with_index(cwd: &Path) {
    ok(
        cwd,
        &[
            "create",
            "s",
            "--dim",
            "4",
            "--page-size",
            "4096",
            "--segment-size",
            "262144",
        ],
    );
    let lines: String = (0..200)
        .map(|i| {
            let t = i as f32 / 10.0;
            format!("{{\"id\": \"v{i}\", \"vector\": [{}, {}, {t}, 1]}}\n", t.cos(), t.sin())
        })
        .collect();
    std::fs::write(cwd.join("rows.jsonl"), lines).unwrap();
    ok(cwd, &["import", "s", "rows.jsonl"]);
    let built = ok(
        cwd,
        &[
            "index",
            "create",
            "s",
            "--metric",
            "l2",
            "--m",
            "8",
            "--ef-construction",
            "64",
        ],
    );
    assert!(
        built.stdout.starts_with("index built: 200 vectors, metric L2, M 8"),
        "{built:?}"
    );
}

#[test]
fn search_uses_the_index_and_its_flags_and_stats_verify_and_wal_dump_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    store_with_index(cwd);
    let query = "[1, 0, 0, 1]";
    let indexed = ok(
        cwd,
        &[
            "search", "s", "--vector", query, "-k", "3", "--metric", "l2", "--ef", "40",
        ],
    );
    let exact = ok(
        cwd,
        &["search", "s", "--vector", query, "-k", "3", "--metric", "l2", "--exact"],
    );
    assert_eq!(
        indexed.stdout, exact.stdout,
        "an easy query: the index finds the exact answer"
    );
    assert!(indexed.stdout.starts_with("v0\t0"), "{indexed:?}");
    let stats: Value = serde_json::from_str(&ok(cwd, &["stats", "s", "--json"]).stdout).unwrap();
    let index = &stats["index"];
    assert_eq!(
        (index["metric"].as_str(), index["m"].as_u64(), index["live"].as_u64()),
        (Some("l2"), Some(8), Some(200))
    );
    assert!(
        index["bytes"].as_u64().unwrap() > 0 && index["ef_search"].as_u64().unwrap() > 0,
        "{index}"
    );
    let text = ok(cwd, &["stats", "s"]).stdout;
    assert!(text.contains("index:        HNSW, l2 M 8"), "{text}");
    let verify = ok(cwd, &["verify", "s"]);
    assert!(
        verify.stdout.contains("approximate index: 200 live nodes"),
        "{verify:?}"
    );
    let dump = ok(cwd, &["wal-dump", "s"]).stdout;
    assert!(
        dump.contains("op=index") && dump.contains("page_kind=graph-nodes"),
        "the build's records: {dump}"
    );
    ok(cwd, &["delete", "s", "v0"]);
    let after = ok(cwd, &["search", "s", "--vector", query, "-k", "1", "--metric", "l2"]);
    assert!(
        !after.stdout.starts_with("v0\t"),
        "a deleted vector is not found: {after:?}"
    );
    ok(cwd, &["index", "drop", "s"]);
    let stats: Value = serde_json::from_str(&ok(cwd, &["stats", "s", "--json"]).stdout).unwrap();
    assert!(stats["index"].is_null(), "{stats}");
    ok(cwd, &["verify", "s"]);
}

#[test]
fn index_errors_have_their_exit_codes_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    store_with_index(cwd);
    let twice = vellum(cwd, &["index", "create", "s"]);
    assert!(
        twice.code == 2
            && twice
                .stderr
                .contains("already exists: s has an index (`vellum index drop s` drops it)"),
        "{twice:?}"
    );
    let wide = vellum(cwd, &["index", "create", "t", "--m", "1"]);
    assert_eq!(wide.code, 1, "no store t: {wide:?}");
    let no_ef = vellum(cwd, &["search", "s", "--vector", "[1, 0, 0, 1]", "--ef", "0"]);
    assert_eq!(no_ef.code, 2, "{no_ef:?}");
    ok(cwd, &["index", "drop", "s"]);
    let again = vellum(cwd, &["index", "drop", "s"]);
    assert!(
        again.code == 1 && again.stderr.contains("no approximate index"),
        "{again:?}"
    );
    let m = vellum(cwd, &["index", "create", "s", "--m", "200"]);
    assert!(
        m.code == 2 && m.stderr.contains("M = 200"),
        "4 KiB pages hold M up to 66: {m:?}"
    );
    let stats: Value = serde_json::from_str(&ok(cwd, &["stats", "s", "--json"]).stdout).unwrap();
    assert!(stats["index"].is_null(), "a refused build leaves no index: {stats}");
}
