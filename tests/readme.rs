//! README.md is tested: its Rust example is compiled and run here (and must match the copy
//! below, and the crate documentation's in src/lib.rs, which `cargo test --doc` runs), and every ```sh block is run by bash (`set -eo pipefail`), in order, in one scratch
//! directory, with `vellum` and `cargo run --release --` meaning the binary built for these
//! tests and the demo shrunk by `VELLUM_DEMO_VECTORS`. `cargo test --release` (this suite) is
//! the only command not run; any other command the harness cannot run fails the test.

use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../README.md");

// README example begin
use vellum::{Metric, Options, Store};

fn example(dir: &std::path::Path) -> vellum::Result<()> {
    let store = Store::create(dir, 3, Options::default())?;
    store.insert("a", &[1.0, 0.0, 0.0], &[("lang", "en")])?;

    let mut tx = store.begin()?;
    tx.upsert("b", &[0.0, 1.0, 0.0], &[])?;
    tx.upsert("c", &[0.6, 0.8, 0.0], &[("lang", "fr")])?;
    let commit_lsn = tx.commit()?; // durable when it returns (SyncMode::Always)
    assert!(commit_lsn.get() > 0);

    let hits = store.search(&[1.0, 0.1, 0.0], 2, Metric::Cosine)?;
    assert_eq!(hits[0].0, "a");
    let french = store.search_filtered(&[1.0, 0.0, 0.0], 10, Metric::Cosine, Some(("lang", "fr")))?;
    assert_eq!(french.len(), 1);

    let a = store.get("a")?.expect("a is there");
    assert_eq!(&*a, &[1.0, 0.0, 0.0]);
    assert_eq!(a.metadata().collect::<Vec<_>>(), [("lang", "en")]);
    drop(a);
    store.close()?;

    let store = Store::open(dir, Options::default())?;
    println!("{}", store.recovery_report());
    assert_eq!(store.len(), 3);
    Ok(())
}
// README example end

/// The fenced blocks of `lang` in `text`, in order.
fn blocks<'a>(text: &'a str, lang: &str) -> Vec<&'a str> {
    let fence = format!("```{lang}\n");
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("\n```").expect("a closed fence");
        found.push(&body[..=end]);
        rest = &body[end + 4..];
    }
    found
}

#[test]
fn the_readme_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    example(&dir.path().join("store")).expect("the README example succeeds");
}

#[test]
fn the_readme_example_is_the_one_tested_here() {
    let source = include_str!("readme.rs");
    let begin = source.find("// README example begin\n").unwrap() + "// README example begin\n".len();
    let end = source.find("// README example end").unwrap();
    let tested = &source[begin..end];
    let shown = blocks(README, "rust");
    assert_eq!(shown.len(), 1, "README.md has one Rust example");
    assert_eq!(
        shown[0], tested,
        "README.md's Rust example differs from tests/readme.rs"
    );
}

/// The text of the `//!` lines of `source`, without the comment markers.
fn crate_docs(source: &str) -> String {
    let mut text = String::new();
    for line in source.lines().filter_map(|line| line.strip_prefix("//!")) {
        text.push_str(line.strip_prefix(' ').unwrap_or(line));
        text.push('\n');
    }
    text
}

#[test]
fn the_crate_docs_show_the_readme_example() {
    let docs = crate_docs(include_str!("../src/lib.rs"));
    let examples = blocks(&docs, "rust");
    assert_eq!(examples.len(), 1, "src/lib.rs's crate docs have one Rust example");
    // Lines rustdoc hides (`# ...`) run the example; the rest is what a reader sees.
    let shown: String = examples[0]
        .lines()
        .filter(|line| *line != "#" && !line.starts_with("# "))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        shown,
        blocks(README, "rust")[0],
        "src/lib.rs's quick start differs from README.md's Rust example"
    );
}

/// Splits a sh block into its commands (lines joined at trailing backslashes).
fn commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        current.push_str(line);
        if let Some(stripped) = current.strip_suffix('\\') {
            current = format!("{stripped} ");
            continue;
        }
        let command = current.trim().to_string();
        current.clear();
        if !command.is_empty() && !command.starts_with('#') {
            commands.push(command);
        }
    }
    commands
}

#[test]
fn every_readme_shell_command_runs() {
    let scratch = tempfile::tempdir().unwrap();
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vellum"), bin.join("vellum")).unwrap();
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let sh_blocks = blocks(README, "sh");
    assert!(!sh_blocks.is_empty(), "README.md has shell blocks");
    let all: Vec<String> = sh_blocks.iter().flat_map(|b| commands(b)).collect();
    assert!(
        all.iter().any(|c| c == "cargo test --release"),
        "README.md gives the test command CI runs: cargo test --release"
    );
    assert!(
        all.iter().any(|c| c == "cargo run --release -- demo"),
        "README.md's first command is the demo"
    );
    for command in &all {
        if command == "cargo test --release" {
            continue; // This suite: running it here would recurse.
        }
        let command = command.replace("cargo run --release --", "vellum");
        assert!(
            !command.split_whitespace().any(|w| w == "cargo"),
            "README command {command:?} cannot be run by tests/readme.rs: add support there"
        );
        run_sh(&command, &work, &path, scratch.path());
    }
}

fn run_sh(command: &str, cwd: &Path, path: &str, tmp: &Path) {
    let output = Command::new("bash")
        .args(["-c", &format!("set -eo pipefail\n{command}")])
        .current_dir(cwd)
        .env("PATH", path)
        .env("TMPDIR", tmp)
        .env("VELLUM_DEMO_VECTORS", "400")
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "README command failed: {command}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
