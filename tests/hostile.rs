//! Hostile environments: files deleted, truncated or swapped in from another store; read-only
//! media; opens that must write nothing.
//!
//! The damage matrix runs every damage case through both `Store::open` (every recovery mode)
//! and `vellum verify`, and requires: open refuses ⇒ verify fails; nothing is written into
//! the damaged store; putting the file back brings every vector back, bit for bit.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use vellum::{Error, Options, RecoveryMode, Store};

const DIMENSION: u32 = 64;
const VECTORS: usize = 700;

fn options() -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 64 * 1024,
        ..Options::default()
    }
}

fn vector_of(i: usize, salt: f32) -> Vec<f32> {
    (0..DIMENSION as usize)
        .map(|c| (i * 31 + c) as f32 * 0.001 + salt)
        .collect()
}

/// A closed store of `VECTORS` vectors with metadata large enough to fill several catalog and
/// vector files, and log segments past the first.
fn build_store(dir: &Path, salt: f32) {
    let store = Store::create(dir, DIMENSION, options()).unwrap();
    let note = "x".repeat(300);
    for chunk in (0..VECTORS).collect::<Vec<_>>().chunks(100) {
        let mut tx = store.begin().unwrap();
        for &i in chunk {
            tx.upsert(&format!("id-{i}"), &vector_of(i, salt), &[("note", &note)])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    // A checkpoint, then the archive made to hold every released segment (a session that
    // ends without a close leaves those the archiver has not copied yet in the live log): the files below are then one
    // live segment and an archive of the rest.
    store.checkpoint().unwrap();
    store.archive_now().unwrap();
    store.close().unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file of a store with its bytes, to show that a refused open wrote nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "LOCK") {
                files.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    files
}

fn vellum(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(args)
        .output()
        .expect("run vellum")
}

fn assert_every_vector_is_there(dir: &Path, salt: f32, case: &str) {
    let store = Store::open(dir, options()).unwrap_or_else(|e| panic!("{case}: the repaired store opens: {e}"));
    assert_eq!(store.len(), VECTORS, "{case}: every vector is back");
    for i in 0..VECTORS {
        let got = store.get(&format!("id-{i}")).unwrap().expect("present");
        assert!(
            got.iter()
                .map(|x| x.to_bits())
                .eq(vector_of(i, salt).iter().map(|x| x.to_bits())),
            "{case}: id-{i} bit for bit"
        );
    }
    store.close().unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Delete,
    Truncate,
    Swap,
}

/// The store's files of each kind that the damage matrix covers (relative paths).
fn files_to_damage(dir: &Path) -> Vec<String> {
    let mut files = vec!["CONTROL".to_string(), "DOUBLEWRITE".into(), "wal/EPOCH".into()];
    let listed = |sub: &str, prefix: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names.into_iter().map(|n| format!("{sub}/{n}")).collect()
    };
    for (sub, prefix) in [("arena", "catalog-"), ("arena", "vector-")] {
        let names = listed(sub, prefix);
        assert!(names.len() >= 2, "the store has several {prefix} files: {names:?}");
        files.push(names[0].clone());
        files.push(names[names.len() - 1].clone());
    }
    // The live log: after a close, one segment holds the checkpoint and the end of the log.
    let segments = listed("wal", "0");
    assert_eq!(segments.len(), 1, "the live log after a close: {segments:?}");
    files.extend(segments);
    files
}

/// After a damage case: `verify` fails, the store's files are as `before` (nothing was written
/// into it), and copying `file` back from `original` brings every vector back. Removes `dir`.
fn verify_fails_nothing_is_written_and_putting_it_back_repairs(
    dir: &Path,
    original: &Path,
    file: &str,
    before: &BTreeMap<PathBuf, Vec<u8>>,
    case: &str,
) {
    let verify = vellum(&["verify", dir.to_str().unwrap()]);
    assert!(
        !verify.status.success(),
        "{case}: verify fails on the damaged store:\n{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(
        snapshot(dir) == *before,
        "{case}: nothing is written into a store whose files are damaged"
    );
    std::fs::copy(original.join(file), dir.join(file)).unwrap();
    assert_every_vector_is_there(dir, 0.0, case);
    std::fs::remove_dir_all(dir).unwrap();
}

fn damage(dir: &Path, other: &Path, file: &str, how: Damage) -> bool {
    let path = dir.join(file);
    match how {
        Damage::Delete => std::fs::remove_file(&path).unwrap(),
        Damage::Truncate => {
            let len = std::fs::metadata(&path).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(len / 2).unwrap();
        }
        Damage::Swap => {
            if !other.join(file).exists() {
                return false;
            }
            std::fs::copy(other.join(file), &path).unwrap();
        }
    }
    true
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_missing_short_or_swapped_file_of_any_kind_is_refused_by_open_and_verify_and_nothing_is_lost() {
    let scratch = tempfile::tempdir().unwrap();
    let (original, other) = (scratch.path().join("original"), scratch.path().join("other"));
    build_store(&original, 0.0);
    build_store(&other, 0.5);
    let mut cases = 0;
    for file in files_to_damage(&original) {
        for how in [Damage::Delete, Damage::Truncate, Damage::Swap] {
            let case = format!("{how:?} {file}");
            let dir = scratch.path().join(format!("case-{cases}"));
            copy_tree(&original, &dir);
            if !damage(&dir, &other, &file, how) {
                continue;
            }
            cases += 1;
            let before = snapshot(&dir);
            for mode in [
                RecoveryMode::Strict,
                RecoveryMode::TolerateTornTail,
                RecoveryMode::SkipCorrupted,
            ] {
                let opened = Store::open(
                    &dir,
                    Options {
                        recovery: mode,
                        ..options()
                    },
                );
                assert!(
                    matches!(opened, Err(Error::Corrupted { .. } | Error::Incompatible(_))),
                    "{case}, {mode:?}: open must refuse the store as damaged: {:?}",
                    opened.map(|s| s.len())
                );
                let read_only = Store::open_read_only(&dir, options());
                assert!(read_only.is_err(), "{case}: a read-only open refuses it too");
            }
            verify_fails_nothing_is_written_and_putting_it_back_repairs(&dir, &original, &file, &before, &case);
        }
    }
    assert!(cases >= 24, "{cases} damage cases ran");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_deleted_arena_directory_is_damage_not_an_empty_store() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    build_store(&dir, 0.0);
    let saved = scratch.path().join("saved-arena");
    copy_tree(&dir.join("arena"), &saved);
    std::fs::remove_dir_all(dir.join("arena")).unwrap();
    let error = Store::open(&dir, options()).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupted { file: Some(f), .. } if f.ends_with("catalog-00000000.pages")),
        "the first missing file is named: {error}"
    );
    assert!(!dir.join("arena").exists(), "the refused open made nothing");
    assert!(
        !vellum(&["verify", dir.to_str().unwrap()]).status.success(),
        "verify fails"
    );
    copy_tree(&saved, &dir.join("arena"));
    assert_every_vector_is_there(&dir, 0.0, "arena put back");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn one_damaged_copy_of_the_epoch_never_makes_a_store_unopenable() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    build_store(&dir, 0.0);
    let epoch = dir.join("wal/EPOCH");
    let mut bytes = std::fs::read(&epoch).unwrap();
    bytes[5] ^= 0x01;
    std::fs::write(&epoch, &bytes).unwrap();
    let verify = vellum(&["verify", dir.to_str().unwrap()]);
    assert!(
        verify.status.success(),
        "one flipped bit in the epoch file is survivable:\n{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert_every_vector_is_there(&dir, 0.0, "one epoch copy damaged");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn an_open_with_nothing_to_recover_writes_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    build_store(&dir, 0.0);
    // A first open may tidy what the building run left (spares it made); from then on, an open
    // that recovers nothing and changes nothing leaves every byte and every file as it was.
    Store::open(&dir, options()).unwrap().close().unwrap();
    let before = snapshot(&dir);
    let store = Store::open(&dir, options()).unwrap();
    assert_eq!(store.len(), VECTORS);
    std::thread::sleep(std::time::Duration::from_millis(300)); // the background threads' turn
    store.close().unwrap();
    let after = snapshot(&dir);
    let changed: Vec<_> = after
        .iter()
        .filter(|(path, bytes)| before.get(*path) != Some(*bytes))
        .map(|(path, _)| path.clone())
        .chain(before.keys().filter(|p| !after.contains_key(*p)).cloned())
        .collect();
    assert!(
        changed.is_empty(),
        "an open and close that changed nothing wrote {changed:?}"
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_read_only_store_reads_everything_writes_nothing_and_refuses_writes() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    build_store(&dir, 0.0);
    let before = snapshot(&dir);
    let first = Store::open_read_only(&dir, options()).unwrap();
    let second = Store::open_read_only(&dir, options()).unwrap();
    assert_eq!(first.len(), VECTORS, "readers share a store");
    assert_eq!(&*second.get("id-7").unwrap().unwrap(), vector_of(7, 0.0).as_slice());
    let writer = Store::open(&dir, options());
    assert!(
        matches!(writer, Err(Error::Locked(_))),
        "no writer beside readers: {:?}",
        writer.map(|s| s.len())
    );
    let refused = [
        first.insert("new", &vector_of(1, 0.0), &[]).map(|_| ()),
        first.delete("id-1").map(|_| ()),
        first.checkpoint().map(|_| ()),
        first.begin().map(|_| ()),
        first.backup(scratch.path().join("b")).map(|_| ()),
    ];
    for result in refused {
        assert!(
            format!("{result:?}").contains("ReadOnly"),
            "every write is refused with ReadOnly: {result:?}"
        );
    }
    assert!(first.search(&vector_of(3, 0.0), 1, vellum::Metric::L2).unwrap()[0].0 == "id-3");
    first.close().unwrap();
    second.close().unwrap();
    assert!(snapshot(&dir) == before, "a read-only store writes no byte");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_read_only_open_replays_a_crash_in_memory_and_leaves_the_files_alone() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    let store = Store::create(&dir, DIMENSION, options()).unwrap();
    store.insert("kept", &vector_of(1, 0.0), &[]).unwrap();
    let mut tx = store.begin().unwrap();
    tx.upsert("in-flight", &vector_of(2, 0.0), &[]).unwrap();
    tx.upsert("kept", &vector_of(3, 0.0), &[]).unwrap();
    store.wal().sync().unwrap();
    // A process crash: what its files hold now, with the transaction still open.
    let crashed = scratch.path().join("crashed");
    copy_tree(&dir, &crashed);
    drop(tx);
    drop(store);
    let dir = crashed;
    let before = snapshot(&dir);
    let reader = Store::open_read_only(&dir, options()).unwrap();
    assert_eq!(reader.len(), 1, "the loser is rolled back in memory");
    assert_eq!(&*reader.get("kept").unwrap().unwrap(), vector_of(1, 0.0).as_slice());
    assert!(reader.get("in-flight").unwrap().is_none());
    drop(reader);
    assert!(snapshot(&dir) == before, "recovery ran in memory only");
}

#[test]
fn a_space_quota_is_disk_full_at_the_write_that_needs_room_and_changes_nothing() {
    // Quotas a few KiB apart: the full disk meets a transaction at different writes (a log
    // segment's spare, an arena file, a page), a segment boundary among them.
    for quota_kib in (560..=680).step_by(8) {
        transaction_stopped_by_a_quota_changes_nothing_and_the_store_goes_on(quota_kib, 25);
    }
}

#[test]
fn a_transaction_of_several_segments_stopped_by_a_quota_rolls_back_and_the_store_goes_on() {
    // 600 rows of ~0.4 KiB: each transaction's log spans three to four 64 KiB segments, and so
    // does the room its undo holds back.
    for quota_kib in (1600..=2800).step_by(200) {
        transaction_stopped_by_a_quota_changes_nothing_and_the_store_goes_on(quota_kib, 600);
    }
}

fn transaction_stopped_by_a_quota_changes_nothing_and_the_store_goes_on(quota_kib: u64, rows: usize) {
    use vellum::storage::SimStorage;
    let sim = SimStorage::new(11);
    let options = || Options {
        page_size_bytes: 4096,
        segment_size_bytes: 64 * 1024,
        storage: std::sync::Arc::new(sim.clone()),
        background_io: false,
        ..Options::default()
    };
    let dir = Path::new("/quota");
    let store = Store::create(dir, DIMENSION, options()).unwrap();
    sim.set_capacity(Some(sim.used_bytes() + quota_kib * 1024));
    let mut acknowledged = 0usize;
    let error = loop {
        let mut tx = store.begin().unwrap();
        let added = (0..rows).try_for_each(|j| {
            let i = acknowledged + j;
            tx.insert(&format!("id-{i}"), &vector_of(i, 0.0), &[]).map(|_| ())
        });
        match added.and_then(|()| tx.commit().map(|_| ())) {
            Ok(()) => acknowledged += rows,
            Err(error) => break error,
        }
        assert!(acknowledged < 100_000, "the quota is reached");
    };
    assert!(
        matches!(error, Error::DiskFull { .. }),
        "quota {quota_kib} KiB: running out of room is DiskFull at the write that needed it: {error}"
    );
    assert_eq!(
        store.len(),
        acknowledged,
        "quota {quota_kib} KiB: the failed transaction changed nothing"
    );
    assert!(
        acknowledged > 0,
        "quota {quota_kib} KiB: a transaction commits before the disk is full"
    );
    for i in [0, acknowledged - 1] {
        assert_eq!(
            &*store.get(&format!("id-{i}")).unwrap().unwrap(),
            vector_of(i, 0.0).as_slice()
        );
    }
    sim.set_capacity(None);
    store
        .insert("after", &vector_of(1, 0.5), &[])
        .unwrap_or_else(|e| panic!("quota {quota_kib} KiB: once there is room the store writes on: {e}"));
    store.close().unwrap();
    let store = Store::open(dir, options()).unwrap();
    assert_eq!(
        store.len(),
        acknowledged + 1,
        "quota {quota_kib} KiB: every acknowledged vector is there after reopen"
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn entries_of_the_archive_that_are_no_archive_files_are_warnings_and_never_stop_an_open() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    build_store(&dir, 0.0);
    std::fs::create_dir_all(dir.join("archive/some-directory/inner")).unwrap();
    std::fs::write(dir.join("archive/notes.txt"), b"a user's file").unwrap();
    std::fs::create_dir(dir.join("archive/base-0000000000000001.lz4")).unwrap();
    assert_every_vector_is_there(&dir, 0.0, "stray entries in archive/");
    let verify = vellum(&["verify", dir.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "stray entries are warnings, not failures:\n{out}"
    );
    for name in ["some-directory", "notes.txt", "base-0000000000000001.lz4"] {
        assert!(
            out.contains(&format!("WARNING archive/{name}")),
            "verify names {name}:\n{out}"
        );
    }
    let stats = vellum(&["stats", dir.to_str().unwrap(), "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["archive"]["unknown"].as_array().map(Vec::len), Some(3), "{stats}");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn restore_and_backup_refuse_a_destination_inside_the_source() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    build_store(&dir, 0.0);
    let s = dir.to_str().unwrap();
    for dest in ["archive/r", "r", "arena/../x"] {
        let inside = format!("{s}/{dest}");
        let restore = vellum(&["restore", s, &inside, "--latest"]);
        assert_eq!(restore.status.code(), Some(2), "restore into {dest}: {restore:?}");
        let backup = vellum(&["backup", s, &inside]);
        assert_eq!(backup.status.code(), Some(2), "backup into {dest}: {backup:?}");
    }
    assert_every_vector_is_there(&dir, 0.0, "after refused restores into itself");
    assert!(
        vellum(&["verify", s]).status.success(),
        "the source is untouched and clean"
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn an_archived_segment_a_restore_needs_is_missed_by_verify_and_refused_by_restore() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    build_store(&dir, 0.0);
    let archived: Vec<PathBuf> = std::fs::read_dir(dir.join("archive"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .collect();
    assert!(archived.len() >= 3, "the build archived segments: {archived:?}");
    let victim = archived.iter().min().unwrap().clone();
    let saved = std::fs::read(&victim).unwrap();
    for how in [Damage::Delete, Damage::Truncate] {
        match how {
            Damage::Delete => std::fs::remove_file(&victim).unwrap(),
            _ => std::fs::write(&victim, &saved[..saved.len() / 2]).unwrap(),
        }
        let verify = vellum(&["verify", dir.to_str().unwrap()]);
        assert!(!verify.status.success(), "{how:?}: verify fails");
        let restore = vellum(&[
            "restore",
            dir.to_str().unwrap(),
            scratch.path().join("r").to_str().unwrap(),
            "--lsn",
            "5000",
        ]);
        assert!(
            !restore.status.success(),
            "{how:?}: a restore that needs it refuses: {restore:?}"
        );
        assert!(
            !scratch.path().join("r").exists(),
            "{how:?}: a failed restore leaves nothing"
        );
        std::fs::write(&victim, &saved).unwrap();
        assert!(
            vellum(&["verify", dir.to_str().unwrap()]).status.success(),
            "{how:?}: put back, clean"
        );
    }
}

/// Every file of a store (relative paths), the lock file aside.
fn store_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir).into_keys().collect()
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn wherever_an_open_refuses_a_damaged_store_verify_fails_too() {
    let seed = support::seed_from_env("VELLUM_DAMAGE_SEED", 0x5EED_0015);
    let cases: u64 = std::env::var("VELLUM_DAMAGE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    let mut rng = support::Rng::new(seed);
    let scratch = tempfile::tempdir().unwrap();
    let original = scratch.path().join("original");
    build_store(&original, 0.0);
    let files = store_files(&original);
    let mut refused = 0;
    for case in 0..cases {
        let dir = scratch.path().join(format!("case-{case}"));
        copy_tree(&original, &dir);
        let file = &files[rng.below(files.len() as u64) as usize];
        let path = dir.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let what = match rng.below(4) {
            0 if !bytes.is_empty() => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                }
                "flipped bits"
            }
            1 => {
                bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
                "truncated"
            }
            2 if bytes.len() >= 4096 => {
                let block = rng.below(bytes.len() as u64 / 4096) as usize * 4096;
                bytes[block..block + 4096].fill(0);
                "a 4 KiB block zeroed"
            }
            _ => {
                std::fs::remove_file(&path).unwrap();
                bytes.clear();
                "deleted"
            }
        };
        if what != "deleted" {
            std::fs::write(&path, &bytes).unwrap();
        }
        let case = format!("seed {seed} case {case}: {what} {}", file.display());
        let verify = vellum(&["verify", dir.to_str().unwrap()]);
        let open = Store::open(&dir, options());
        if let Err(error) = &open {
            refused += 1;
            assert!(
                !verify.status.success(),
                "{case}: open refuses ({error}) but verify passes:\n{}",
                String::from_utf8_lossy(&verify.stdout)
            );
        }
        drop(open);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!("{cases} random damages, {refused} refused by open (and failed by verify)");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_short_or_swapped_middle_arena_file_is_refused_at_its_first_use_and_by_verify() {
    // The open checks the first and last file of each space; a file between them is opened and
    // checked at the first use of one of its pages, before anything maps it: the reads that
    // need it fail as damage (never a SIGBUS past a short file's end), the others go on.
    let scratch = tempfile::tempdir().unwrap();
    let (original, other) = (scratch.path().join("original"), scratch.path().join("other"));
    build_store(&original, 0.0);
    build_store(&other, 0.5);
    let mut cases = 0;
    for prefix in ["catalog-", "vector-"] {
        let mut names: Vec<String> = std::fs::read_dir(original.join("arena"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        assert!(
            names.len() >= 3,
            "the store has a {prefix} file between its first and last: {names:?}"
        );
        let file = format!("arena/{}", names[names.len() / 2]);
        for how in [Damage::Truncate, Damage::Swap] {
            let case = format!("{how:?} {file}");
            let dir = scratch.path().join(format!("middle-{cases}"));
            copy_tree(&original, &dir);
            assert!(damage(&dir, &other, &file, how), "{case}: damaged");
            cases += 1;
            let before = snapshot(&dir);
            let store = Store::open_read_only(&dir, options())
                .unwrap_or_else(|e| panic!("{case}: the open reads no page of the middle file: {e}"));
            let mut refused = 0;
            for i in 0..VECTORS {
                match store.get(&format!("id-{i}")) {
                    Ok(Some(vector)) => {
                        assert_eq!(&*vector, vector_of(i, 0.0).as_slice(), "{case}: id-{i} reads right")
                    }
                    Err(Error::Corrupted { file: Some(f), .. }) => {
                        assert!(f.ends_with(&file), "{case}: the damaged file is named, not {f:?}");
                        refused += 1;
                    }
                    other => panic!("{case}: id-{i}: {other:?}"),
                }
            }
            assert!(
                refused > 0,
                "{case}: the reads that need the file are refused as damage"
            );
            drop(store);
            verify_fails_nothing_is_written_and_putting_it_back_repairs(&dir, &original, &file, &before, &case);
        }
    }
    assert_eq!(cases, 4, "two files, two kinds of damage");
}

/// The store in `dir` with its `wal/` (and, if `control` is set, its `CONTROL`) taken back to
/// what they were before a later session (a few upserts and a checkpoint, then a close) changed
/// it: a copy of a running store made file by file, or a log that lost its tail.
fn with_files_from_before_a_later_session(dir: &Path, scratch: &Path, control: bool) {
    let earlier = scratch.join("earlier");
    copy_tree(&dir.join("wal"), &earlier.join("wal"));
    std::fs::copy(dir.join("CONTROL"), earlier.join("CONTROL")).unwrap();
    let store = Store::open(dir, options()).unwrap();
    for i in 0..5 {
        store.upsert(&format!("late-{i}"), &vector_of(i, 0.5), &[]).unwrap();
    }
    store.checkpoint().unwrap();
    store.close().unwrap();
    std::fs::remove_dir_all(dir.join("wal")).unwrap();
    copy_tree(&earlier.join("wal"), &dir.join("wal"));
    if control {
        std::fs::copy(earlier.join("CONTROL"), dir.join("CONTROL")).unwrap();
    }
}

/// Every open (each recovery mode but `SkipCorrupted`, writable and read-only) refuses the
/// store in `dir` as `Corrupted` naming `why`, writes nothing, and verify fails.
fn refused_by_every_open_and_verify(dir: &Path, why: &str, case: &str) {
    let before = snapshot(dir);
    for recovery in [RecoveryMode::Strict, RecoveryMode::TolerateTornTail] {
        let options = Options { recovery, ..options() };
        for read_only in [false, true] {
            let opened = if read_only {
                Store::open_read_only(dir, options.clone())
            } else {
                Store::open(dir, options.clone())
            };
            assert!(
                matches!(&opened, Err(e @ Error::Corrupted { .. }) if e.to_string().contains(why)),
                "{case}: an open ({recovery:?}, read-only {read_only}) refuses it naming {why:?}: {:?}",
                opened.map(|s| s.len())
            );
        }
    }
    assert!(snapshot(dir) == before, "{case}: a refused open writes nothing");
    let verify = vellum(&["verify", dir.to_str().unwrap()]);
    assert!(
        !verify.status.success() && String::from_utf8_lossy(&verify.stdout).contains(why),
        "{case}: verify fails naming {why:?}: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_log_older_than_its_control_file_is_refused_and_nothing_is_written() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    build_store(&dir, 0.0);
    with_files_from_before_a_later_session(&dir, scratch.path(), false);
    // The control file names the later checkpoint, whose begin record the log does not hold.
    refused_by_every_open_and_verify(&dir, "checkpoint", "a log from before the control file's checkpoint");
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_page_newer_than_the_log_is_damage_and_nothing_is_written() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("s");
    build_store(&dir, 0.0);
    with_files_from_before_a_later_session(&dir, scratch.path(), true);
    // The control file and the log agree, but the arena holds what the later session's
    // checkpoints wrote: pages whose LSNs lie past the log's end.
    refused_by_every_open_and_verify(&dir, "different moments", "an arena from after the log's end");
}

#[test]
fn a_lock_file_deleted_under_a_writer_lets_no_second_process_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let writer = Store::create(&path, DIMENSION, options()).unwrap();
    writer.insert("a", &vector_of(1, 0.0), &[]).unwrap();
    // A cleanup script, or a user, removes what looks like a stale lock file.
    std::fs::remove_file(path.join("LOCK")).unwrap();
    // (flock locks belong to open file descriptions: a second open in this process is kept
    // out exactly as one in another process is.)
    for read_only in [false, true] {
        let second = if read_only {
            Store::open_read_only(&path, options())
        } else {
            Store::open(&path, options())
        };
        assert!(
            matches!(&second, Err(Error::Locked(_))),
            "read_only {read_only}: the store's directory is still locked by its writer, though LOCK is gone: {:?}",
            second.as_ref().map(|_| ())
        );
    }
    let out = vellum(&["import", path.to_str().unwrap(), "/nonexistent.jsonl"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "the command line finds the store busy: {out:?}"
    );
    let report = vellum::inspect::verify_store(&path, &()).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("open in another process")),
        "verify knows a writer has the store: {:?}",
        report.problems
    );
    writer.insert("b", &vector_of(2, 0.0), &[]).unwrap();
    writer.close().unwrap();
    let reopened = Store::open(&path, options()).unwrap();
    assert_eq!(reopened.len(), 2, "the writer's rows, and only its");
    assert!(path.join("LOCK").is_file(), "the next open makes LOCK again");
}

/// Runs `vellum args` under `sh -c 'ulimit FLAG VALUE; exec vellum …'` (`-n`: open files,
/// `-f`: file size in 512-byte blocks; `-S` before the letter sets the soft limit alone).
fn vellum_under_ulimit(flag: &str, value: u64, args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit {flag} {value} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_vellum"))
        .args(args)
        .output()
        .expect("run vellum under sh")
}

/// Runs `vellum args` with the soft (and, if `hard_too`, the hard) limit on open files set to
/// `limit`.
fn vellum_with_open_files(limit: u32, hard_too: bool, args: &[&str]) -> std::process::Output {
    vellum_under_ulimit(if hard_too { "-n" } else { "-Sn" }, u64::from(limit), args)
}

/// True (and a note printed) if the hard limit on open files here is below what the tests of
/// the limit need: they raise soft limits to it.
fn hard_open_file_limit_too_low() -> bool {
    let hard = Command::new("sh").arg("-c").arg("ulimit -Hn").output().unwrap();
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_string();
    let low = hard != "unlimited" && hard.parse::<u64>().is_ok_and(|h| h < 4096);
    if low {
        eprintln!("skipped: the hard limit on open files here is {hard}, below what the test needs");
    }
    low
}

/// 20,000 rows of 64 dimensions as a JSON-lines file in `dir`, for `vellum import`.
fn rows_file(dir: &Path) -> PathBuf {
    let rows_path = dir.join("rows.jsonl");
    let mut rows = String::new();
    for i in 0..20_000 {
        let vector: Vec<String> = vector_of(i, 0.5).iter().map(|x| x.to_string()).collect();
        rows.push_str(&format!("{{\"id\": \"r{i}\", \"vector\": [{}]}}\n", vector.join(",")));
    }
    std::fs::write(&rows_path, rows).unwrap();
    rows_path
}

/// Creates an empty store of 64 dimensions at `store` in small files (4 KiB pages, 64 KiB
/// segments and arena files): 20,000 rows take hundreds of arena files.
fn create_in_small_files(store: &Path) {
    let made = vellum(&[
        "create",
        store.to_str().unwrap(),
        "--dim",
        "64",
        "--page-size",
        "4096",
        "--segment-size",
        "64KiB",
    ]);
    assert!(made.status.success(), "{made:?}");
}

#[test]
fn a_store_outgrows_a_low_soft_limit_on_open_files_and_a_hard_one_is_a_typed_stop() {
    if hard_open_file_limit_too_low() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rows_path = rows_file(dir.path());
    let rows_arg = rows_path.to_str().unwrap();
    // Small files: the store holds a descriptor for each arena file and log segment in use,
    // far more than 64 here.
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    create_in_small_files(&store);
    let out = vellum_with_open_files(64, false, &["import", store_arg, rows_arg]);
    assert!(
        out.status.success(),
        "with only the soft limit low, the store raises it and grows on: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arena_files = std::fs::read_dir(store.join("arena")).unwrap().count();
    assert!(
        arena_files > 64,
        "the store outgrew the soft limit ({arena_files} arena files)"
    );
    // A hard limit it cannot raise: a typed stop, and everything committed before it stays.
    let second = dir.path().join("second");
    let second_arg = second.to_str().unwrap();
    create_in_small_files(&second);
    let out = vellum_with_open_files(64, true, &["import", second_arg, rows_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a store error, not a crash: {stderr}");
    assert!(stderr.contains("Too many open files"), "the cause is named: {stderr}");
    assert!(
        stderr.contains("at most 64 files open")
            && stderr.contains("`ulimit -n`")
            && stderr.contains("raise the limit"),
        "the limit and the way out are named: {stderr}"
    );
    let reopened = Store::open(&second, Options::default()).unwrap();
    let kept = reopened.len();
    assert!(
        kept > 0 && kept < 20_000,
        "the batches committed before the stop stay ({kept})"
    );
    drop(reopened);
    let report = vellum::inspect::verify_store(&second, &()).unwrap();
    assert!(report.clean(), "{:?}", report.problems);
}

#[test]
fn readers_of_a_store_of_more_files_than_the_process_may_open_read_it_all_and_verify_never_calls_it_damaged() {
    if hard_open_file_limit_too_low() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    create_in_small_files(&store);
    let imported = vellum(&["import", store_arg, rows_file(dir.path()).to_str().unwrap()]);
    assert!(imported.status.success(), "{imported:?}");
    let arena_files = std::fs::read_dir(store.join("arena")).unwrap().count();
    assert!(arena_files > 100, "over a hundred arena files ({arena_files})");
    // Before, a reader kept a descriptor for each arena file it mapped: under this hard limit
    // the search failed ("Too many open files") and verify called the store damaged ("NOT
    // CLEAN: 4069 failures", exit 1).
    let query = format!("[{}]", vec!["0.5"; 64].join(","));
    let readers: [&[&str]; 4] = [
        &["search", store_arg, "--vector", &query, "-k", "3"],
        &["get", store_arg, "r19999"],
        &["export", store_arg],
        &["verify", store_arg],
    ];
    for args in readers {
        let out = vellum_with_open_files(32, true, args);
        assert!(
            out.status.success(),
            "{:?} reads all {arena_files} files under a hard limit of 32: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let exported = vellum_with_open_files(32, true, &["export", store_arg]);
    let lines = String::from_utf8_lossy(&exported.stdout).lines().count();
    assert_eq!(lines, 20_000, "every row is exported");
    // Below what even a reader needs: verify says it could not check, never that the store is
    // damaged (exit 1 is a failed verification).
    let mut stopped = 0;
    for limit in 6..=16 {
        let out = vellum_with_open_files(limit, true, &["verify", store_arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(3) => {
                assert!(
                    stderr.contains("Too many open files") && stderr.contains("`ulimit -n`"),
                    "a shortage, named, at {limit}: {stderr}"
                );
                stopped += 1;
            }
            other => panic!("verify under a limit of {limit} open files exited {other:?}: {stderr}"),
        }
    }
    assert!(stopped > 0, "some limit was too low to verify, and said so");
    let report = vellum::inspect::verify_store(&store, &()).unwrap();
    assert!(report.clean(), "nothing was written: {:?}", report.problems);
}

#[test]
fn a_store_file_deleted_under_a_running_writer_is_made_again_or_put_back() {
    // A cleanup of files it does not know (CONTROL, DOUBLEWRITE, wal/EPOCH look like nothing
    // to keep), or a mistaken `rm` of an arena file or the log's active segment, while a writer
    // runs: the writer makes each again (or puts it back from its open descriptor), so the
    // store opens after its close, with every row. Before, each left a store no open would
    // take ("the control file is missing", "arena file 0 of the vector space is missing",
    // "segment 5 is missing between 4 and 6"; EPOCH stopped the log at its next horizon).
    for file in [
        "CONTROL",
        "DOUBLEWRITE",
        "wal/EPOCH",
        "arena/vector-00000000.pages",
        "arena/catalog-00000000.pages",
        "active segment",
    ] {
        for writes_after in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store");
            let store = Store::create(&path, DIMENSION, options()).unwrap();
            let row = |store: &Store, i: usize| {
                store.insert(&format!("v{i}"), &vector_of(i, 0.25), &[]).unwrap();
            };
            (0..300).for_each(|i| row(&store, i));
            store.checkpoint().unwrap();
            let file = match file {
                // The segment the log appends to: the one holding its end.
                "active segment" => {
                    let end = store.log_info().end_lsn.get();
                    let segment_bytes = options().segment_size_bytes;
                    format!("wal/{:016x}.wal", (end - 1) / segment_bytes)
                }
                other => other.to_string(),
            };
            std::fs::remove_file(path.join(&file)).unwrap();
            let rows = if writes_after {
                // Past several log horizons (one a 256 KiB of log), and a checkpoint.
                (300..2_000).for_each(|i| row(&store, i));
                store.checkpoint().unwrap();
                (2_000..2_100).for_each(|i| row(&store, i));
                2_100
            } else {
                300
            };
            store
                .close()
                .unwrap_or_else(|e| panic!("{file}, writes {writes_after}: close: {e}"));
            // (A segment the log moved past may since have been retired, legitimately.)
            let retired = file.starts_with("wal/0") && writes_after;
            assert!(
                retired || path.join(&file).is_file(),
                "{file}, writes {writes_after}: made again"
            );
            let store = Store::open(&path, options())
                .unwrap_or_else(|e| panic!("{file}, writes {writes_after}: the store opens: {e}"));
            assert_eq!(store.len(), rows, "{file}, writes {writes_after}: every row");
            assert_eq!(
                &*store.get(&format!("v{}", rows - 1)).unwrap().unwrap(),
                &vector_of(rows - 1, 0.25)[..]
            );
            drop(store);
            let report = vellum::inspect::verify_store(&path, &()).unwrap();
            assert!(report.clean(), "{file}, writes {writes_after}: {:?}", report.problems);
        }
    }
}

#[test]
fn what_a_writer_killed_while_putting_a_file_back_left_goes_at_the_next_writers_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    build_store(&path, 0.5);
    let segment = std::fs::read_dir(path.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".wal"))
        .unwrap();
    let leftovers = [
        "CONTROL.tmp".to_string(),
        "DOUBLEWRITE.tmp".to_string(),
        "arena/vector-00000000.pages.tmp".to_string(),
        format!("wal/{segment}.tmp"),
    ];
    for leftover in &leftovers {
        std::fs::write(path.join(leftover), vec![1u8; 4096]).unwrap();
    }
    drop(Store::open_read_only(&path, options()).unwrap());
    for leftover in &leftovers {
        assert!(
            path.join(leftover).exists(),
            "{leftover}: a read-only open writes (and removes) nothing"
        );
    }
    drop(Store::open(&path, options()).unwrap());
    for leftover in &leftovers {
        assert!(
            !path.join(leftover).exists(),
            "{leftover}: removed by the writer's open"
        );
    }
    assert_every_vector_is_there(&path, 0.5, "after the sweep");
}

/// The child of `a_file_deleted_under_a_writer_is_put_back_before_a_kill_half_a_second_later`
/// and `a_segment_deleted_under_a_writer_is_back_before_the_next_commit_returns` (run only with
/// `VELLUM_DELETED_FILE_CHILD` set to a directory): deletes the store's file
/// `VELLUM_DELETED_FILE` names ("active segment": the one its log appends to), commits 20 more
/// rows (each durable when it returns), says so, and `VELLUM_DELETED_FILE_WAIT_MS` later (500
/// if unset) dies as a `kill -9` would have it: no close, no checkpoint, no destructor.
#[test]
fn deleted_file_child_entry() {
    let Ok(dir) = std::env::var("VELLUM_DELETED_FILE_CHILD") else {
        return;
    };
    let file = std::env::var("VELLUM_DELETED_FILE").unwrap();
    let path = Path::new(&dir).join("store");
    let store = Store::create(&path, DIMENSION, options()).unwrap();
    for i in 0..300 {
        store.insert(&format!("v{i}"), &vector_of(i, 0.25), &[]).unwrap();
    }
    store.checkpoint().unwrap();
    let file = match file.as_str() {
        "active segment" => {
            let end = store.log_info().end_lsn.get();
            format!("wal/{:016x}.wal", (end - 1) / options().segment_size_bytes)
        }
        other => other.to_string(),
    };
    std::fs::remove_file(path.join(&file)).unwrap();
    for i in 300..320 {
        store.insert(&format!("v{i}"), &vector_of(i, 0.25), &[]).unwrap();
    }
    println!("acknowledged 320 rows after deleting {file}");
    // The writer puts a deleted file back within 250 ms (the log's preallocator, the
    // checkpointer); a deleted segment, at the first durable commit after the `rm`.
    let wait_ms: u64 = std::env::var("VELLUM_DELETED_FILE_WAIT_MS").map_or(500, |v| v.parse().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(wait_ms));
    std::process::abort();
}

/// Runs `deleted_file_child_entry` on `file`, waiting `wait_ms` before it dies, and checks that
/// the store opens after the kill with every row the child acknowledged.
fn assert_a_kill_after_deleting_loses_no_acknowledged_row(file: &str, wait_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "deleted_file_child_entry", "--nocapture", "--test-threads=1"])
        .env("VELLUM_DELETED_FILE_CHILD", dir.path())
        .env("VELLUM_DELETED_FILE", file)
        .env("VELLUM_DELETED_FILE_WAIT_MS", wait_ms.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("acknowledged 320 rows"),
        "{file}: the child acknowledged its rows: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{file}: the child died without closing");
    let path = dir.path().join("store");
    let store = Store::open(&path, options())
        .unwrap_or_else(|e| panic!("{file}, killed {wait_ms} ms after: the store opens: {e}"));
    assert_eq!(
        store.len(),
        320,
        "{file}, killed {wait_ms} ms after: every acknowledged row"
    );
    assert_eq!(&*store.get("v319").unwrap().unwrap(), &vector_of(319, 0.25)[..]);
    drop(store);
    let report = vellum::inspect::verify_store(&path, &()).unwrap();
    assert!(report.clean(), "{file}: {:?}", report.problems);
}

#[test]
fn a_segment_deleted_under_a_writer_is_back_before_the_next_commit_returns() {
    // A mistaken `rm` of the segment the log appends to, 20 durable commits, and a kill at
    // once: each commit's flush finds its segment without a name and puts it back before it
    // returns. Before, the preallocator put it back within 200 ms, and a kill sooner lost the
    // segment with the process ("segment 3 is missing between 2 and 4").
    assert_a_kill_after_deleting_loses_no_acknowledged_row("active segment", 0);
}

#[test]
fn a_segment_that_cannot_be_put_back_fails_the_commit_that_needed_it() {
    // The active segment deleted under a writer on a disk with no room left for its copy: the
    // commit whose flush finds it gone cannot make its bytes durable under the segment's name,
    // so it must fail (DiskFull), not return as if durable; and the log takes no commit after
    // it (as after a failed sync). Seeds of both kinds: writes through the cache, direct.
    use vellum::storage::{SimStorage, Storage};
    for seed in [12, 13] {
        let sim = SimStorage::new(seed);
        let options = Options {
            storage: std::sync::Arc::new(sim.clone()),
            background_io: false,
            ..Options::default()
        };
        let dir = Path::new("/gone");
        let store = Store::create(dir, DIMENSION, options.clone()).unwrap();
        for i in 0..10 {
            store.insert(&format!("v{i}"), &vector_of(i, 0.25), &[]).unwrap();
        }
        let end = store.log_info().end_lsn.get();
        let segment = dir.join(format!("wal/{:016x}.wal", (end - 1) / options.segment_size_bytes));
        sim.remove_file(&segment).unwrap();
        sim.set_capacity(Some(sim.used_bytes()));
        let error = store.insert("v10", &vector_of(10, 0.25), &[]).unwrap_err();
        assert!(
            matches!(error, Error::DiskFull { .. }),
            "seed {seed}: the commit that could not put its segment back is DiskFull: {error}"
        );
        sim.set_capacity(None);
        assert!(
            store.insert("v11", &vector_of(11, 0.25), &[]).is_err(),
            "seed {seed}: no later commit is acknowledged over bytes in a file with no name"
        );
    }
}

#[test]
fn a_store_directory_removed_under_a_writer_fails_the_next_commit_naming_it() {
    // `rm -rf` of the whole store while a writer runs: nothing can be put back, so the commit
    // that finds its segment gone must fail, say the directory was removed (not just "No such
    // file or directory"), and no later commit may be acknowledged into files with no name.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let store = Store::create(&dir, DIMENSION, Options::default()).unwrap();
    store.insert("v0", &vector_of(0, 0.25), &[]).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let error = store.insert("v1", &vector_of(1, 0.25), &[]).unwrap_err();
    assert!(
        error.to_string().contains("was removed while the store was open"),
        "the commit names what happened: {error}"
    );
    let Error::Io { source, .. } = &error else {
        panic!("a failed file operation is an I/O error: {error:?}");
    };
    assert_eq!(
        vellum::storage::os_error_code(source),
        Some(libc::ENOENT),
        "what the OS said stays under the note: {error:?}"
    );
    assert!(
        store.insert("v2", &vector_of(2, 0.25), &[]).is_err(),
        "no later commit is acknowledged into a removed store"
    );
    assert!(store.close().is_err(), "the close reports the loss too");
    assert!(!dir.exists(), "nothing is made again at the removed path");
}

#[test]
fn a_file_deleted_under_a_writer_is_put_back_before_a_kill_half_a_second_later() {
    // A mistaken `rm` under a running writer, commits, then a crash half a second later,
    // before the next checkpoint (which used to be the first to put the file back: for an idle
    // store, the close). The log's preallocator now puts a deleted segment back within 200 ms
    // and writes it under its name from then on; the checkpointer notices a deleted arena
    // file, CONTROL or DOUBLEWRITE within 250 ms and runs a checkpoint, which puts it back.
    // Before, the next open refused the store ("segment 3 is missing between 2 and 4", "arena
    // file 0 of the vector space is missing", "the control file is missing").
    for file in [
        "active segment",
        "arena/vector-00000000.pages",
        "arena/catalog-00000000.pages",
        "CONTROL",
        "DOUBLEWRITE",
    ] {
        assert_a_kill_after_deleting_loses_no_acknowledged_row(file, 500);
    }
}

#[test]
fn a_store_file_deleted_under_a_writer_is_back_before_the_next_commit_returns() {
    // A mistaken `rm` of an arena file, CONTROL or DOUBLEWRITE, 20 durable commits, and a kill
    // at once: the first durable commit after the `rm` puts the file back (synced, renamed,
    // its directory synced) before it returns.
    for file in [
        "arena/vector-00000000.pages",
        "arena/catalog-00000000.pages",
        "CONTROL",
        "DOUBLEWRITE",
    ] {
        assert_a_kill_after_deleting_loses_no_acknowledged_row(file, 0);
    }
}

/// Each failure `report` holds, described.
fn verify_failures(report: &vellum::inspect::Report) -> Vec<String> {
    report
        .problems
        .iter()
        .filter(|p| p.severity == vellum::inspect::Severity::Failure)
        .map(|p| p.describe())
        .collect()
}

#[test]
fn verify_beside_a_running_writer_finds_no_damage_in_a_sound_store() {
    // A writer that checkpoints and retires segments all the time, while verify runs again and
    // again: what changes under verify's reads is a store moving on, not damage.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::create(&path, DIMENSION, options()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut tx = store.begin().unwrap();
                for _ in 0..20 {
                    tx.upsert(&format!("id-{}", i % 3_000), &vector_of(i, 0.5), &[])
                        .unwrap();
                    i += 1;
                }
                tx.commit().unwrap();
                if i.is_multiple_of(200) {
                    store.checkpoint().unwrap();
                }
            }
            store.close().unwrap();
            i
        })
    };
    let mut failed = Vec::new();
    for attempt in 0..40 {
        let failures = verify_failures(&vellum::inspect::verify_store(&path, &()).unwrap());
        if !failures.is_empty() {
            failed.push((attempt, failures));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rows = writer.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of 40 verifies beside a writer ({rows} rows) failed: {failed:#?}",
        failed.len()
    );
}

#[test]
fn verify_beside_a_writer_still_reports_damage_found_on_every_read() {
    // The rereads beside a writer must not hide damage: a flipped byte in an arena page, in an
    // archived segment and in the live log is found on every read and reported.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    build_store(&path, 0.0);
    let flip = |file: &Path, offset: u64| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(file).unwrap();
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, offset).unwrap();
        f.write_all_at(&[byte[0] ^ 0x40], offset).unwrap();
    };
    let archived = std::fs::read_dir(path.join("archive"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .expect("build_store archives segments");
    flip(&archived, std::fs::metadata(&archived).unwrap().len() / 2);
    flip(&path.join("arena/vector-00000000.pages"), 4096 + 100);
    let writer = Store::open(&path, options()).unwrap();
    let report = vellum::inspect::verify_store(&path, &()).unwrap();
    let failures = verify_failures(&report);
    assert!(
        failures
            .iter()
            .any(|f| f.starts_with("arena/vector-00000000.pages page 1")),
        "the damaged page is reported beside a writer: {failures:?}"
    );
    assert!(
        failures.iter().any(|f| f.starts_with("archive/wal-")),
        "the damaged archive file is reported beside a writer: {failures:?}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("open in another process")),
        "verify saw the writer: {:?}",
        report.problems
    );
    drop(writer);
}

/// Runs `vellum args` with the soft (and, if `hard_too`, the hard) file size limit set to
/// `blocks` 512-byte blocks.
fn vellum_with_file_size_limit(blocks: u64, hard_too: bool, args: &[&str]) -> std::process::Output {
    vellum_under_ulimit(if hard_too { "-f" } else { "-Sf" }, blocks, args)
}

#[test]
fn an_address_space_limit_lets_a_store_through_above_what_it_maps_and_is_named_below() {
    // `ulimit -v`: before, an import of one row failed under 200 or 250 MB ("Cannot allocate
    // memory" mapping its first arena file: glibc's malloc had reserved 64 MiB of address space
    // for each thread's arena) and passed under 100 MB. The command line now shares one malloc
    // arena under a limit, and a mapping or a thread's stack that the limit refuses says so.
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("rows.jsonl");
    std::fs::write(&rows, "{\"id\": \"a\", \"vector\": [1, 2, 3, 4, 5, 6, 7, 8]}\n").unwrap();
    for limit_kib in [150_000u64, 200_000, 250_000] {
        let store = dir.path().join(format!("store-{limit_kib}"));
        let (store_arg, rows_arg) = (store.to_str().unwrap(), rows.to_str().unwrap());
        let created = vellum_under_ulimit("-v", limit_kib, &["create", store_arg, "--dim", "8"]);
        assert!(created.status.success(), "{limit_kib} KiB: created: {created:?}");
        let imported = vellum_under_ulimit("-v", limit_kib, &["import", store_arg, rows_arg]);
        assert!(imported.status.success(), "{limit_kib} KiB: imported: {imported:?}");
        assert_eq!(Store::open(&store, Options::default()).unwrap().len(), 1);
    }
    let store = dir.path().join("store-low");
    let (store_arg, rows_arg) = (store.to_str().unwrap(), rows.to_str().unwrap());
    Store::create(&store, 8, Options::default()).unwrap().close().unwrap();
    let refused = vellum_under_ulimit("-v", 50_000, &["import", store_arg, rows_arg]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        refused.status.code(),
        Some(3),
        "a typed error, not an abort: {refused:?}"
    );
    assert!(
        stderr.contains("address space limit, `ulimit -v`") && stderr.contains("raise the limit"),
        "the limit is named, with the way out: {stderr}"
    );
    let report = vellum::inspect::verify_store(&store, &()).unwrap();
    assert!(report.clean(), "the store is left as it was: {:?}", report.problems);
    assert_eq!(Store::open(&store, Options::default()).unwrap().len(), 0);
}

#[test]
fn a_file_size_limit_below_the_stores_files_is_a_typed_refusal_that_writes_nothing() {
    // `ulimit -f 8192` (4 MiB) below the default 16 MiB segments: before, `vellum create` was
    // killed by SIGXFSZ part-way ("File size limit exceeded", a half-made store left behind).
    let hard = Command::new("sh").arg("-c").arg("ulimit -Hf").output().unwrap();
    let hard = String::from_utf8_lossy(&hard.stdout).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    let out = vellum_with_file_size_limit(8192, true, &["create", store_arg, "--dim", "8"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a typed error, not a signal: {out:?}");
    assert!(stderr.contains("ulimit -f"), "the limit is named: {stderr}");
    assert!(
        !store.exists(),
        "nothing was written: {:?}",
        std::fs::read_dir(dir.path()).unwrap().count()
    );
    // An existing store: its writer's open is refused the same way, and nothing changes.
    assert!(vellum(&["create", store_arg, "--dim", "8"]).status.success());
    let rows = dir.path().join("rows.jsonl");
    std::fs::write(&rows, "{\"id\": \"a\", \"vector\": [1,2,3,4,5,6,7,8]}\n").unwrap();
    let before = snapshot(&store);
    let out = vellum_with_file_size_limit(8192, true, &["import", store_arg, rows.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(snapshot(&store) == before, "a refused open writes nothing");
    // Readers write nothing: `stats` reads on under the limit.
    let out = vellum_with_file_size_limit(8192, true, &["stats", store_arg]);
    assert!(out.status.success(), "{out:?}");
    // Only the soft limit low: the store raises it to the hard one and goes on.
    if hard == "unlimited" || hard.parse::<u64>().is_ok_and(|h| h >= 1 << 20) {
        let out = vellum_with_file_size_limit(8192, false, &["import", store_arg, rows.to_str().unwrap()]);
        assert!(out.status.success(), "the soft limit is raised: {out:?}");
        assert_eq!(Store::open(&store, Options::default()).unwrap().len(), 1);
    } else {
        eprintln!("the soft-limit half skipped: the hard file size limit here is {hard}");
    }
}

#[test]
fn creates_racing_for_one_directory_make_one_store_and_the_others_find_it_made() {
    // Before, two `vellum create` of one directory at once both failed about two times in
    // three (each removing or finding the other's half-made log segment) and left remains that
    // every later create refused.
    let scratch = tempfile::tempdir().unwrap();
    for round in 0..8 {
        let store = scratch.path().join(format!("store-{round}"));
        let children: Vec<_> = (0..3)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_vellum"))
                    .args(["create", store.to_str().unwrap(), "--dim", "8"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        let made = outputs.iter().filter(|o| o.status.success()).count();
        assert_eq!(made, 1, "round {round}: one creator makes the store: {outputs:?}");
        for refused in outputs.iter().filter(|o| !o.status.success()) {
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(
                stderr.contains("already exists"),
                "round {round}: the others find it made: {stderr}"
            );
        }
        let report = vellum::inspect::verify_store(&store, &()).unwrap();
        assert!(report.clean(), "round {round}: {:?}", report.problems);
    }
}

/// The real file system with its faults of the environment, for the tests below:
///
/// - `slow_dir_syncs`: directory syncs take [`Hooked::DELAY`]: all of them (`Some(true)`), or
///   those of a store's directory once it holds `CONTROL` (`Some(false)`: the create's last
///   step, syncing the directory that now names `CONTROL`, then lasts long enough for an opener
///   to find the store made);
/// - `short_of_descriptors_in`: opening or creating a file in the store's directory named there
///   (`wal` or `arena`; `EPOCH` aside) fails with `EMFILE` ("Too many open files") while the
///   flag is set: a process out of descriptors when its log needs its next segment, or its
///   arena its next file;
/// - `short_everywhere`: every open, listing and directory sync fails with `EMFILE` while the
///   flag is set, wherever it is.
#[derive(Debug, Default)]
struct Hooked {
    real: vellum::storage::RealStorage,
    slow_dir_syncs: Option<bool>,
    short_of_descriptors_in: Option<(&'static str, std::sync::Arc<std::sync::atomic::AtomicBool>)>,
    short_everywhere: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Hooked {
    /// `EMFILE` if the process is short of descriptors everywhere now.
    fn check_everywhere(&self) -> std::io::Result<()> {
        match &self.short_everywhere {
            Some(short) if short.load(std::sync::atomic::Ordering::SeqCst) => {
                Err(std::io::Error::from_raw_os_error(libc::EMFILE))
            }
            _ => Ok(()),
        }
    }
}

impl Hooked {
    const DELAY: std::time::Duration = std::time::Duration::from_millis(40);

    fn slow_dir_syncs(every: bool) -> Hooked {
        Hooked {
            slow_dir_syncs: Some(every),
            ..Hooked::default()
        }
    }
}

impl vellum::storage::Storage for Hooked {
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.real.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> std::io::Result<std::sync::Arc<dyn vellum::storage::StorageFile>> {
        self.check_everywhere()?;
        if let Some((dir, short)) = &self.short_of_descriptors_in {
            let inside = path.parent().and_then(Path::file_name).is_some_and(|d| d == *dir);
            let epoch = path.file_name().is_some_and(|n| n == "EPOCH");
            if inside && !epoch && short.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
            }
        }
        self.real.open(path, create)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.real.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.real.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        self.real.remove_dir(path)
    }
    fn list(&self, path: &Path) -> std::io::Result<Vec<String>> {
        self.check_everywhere()?;
        self.real.list(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        self.check_everywhere()?;
        if let Some(every) = self.slow_dir_syncs
            && (every || path.join("CONTROL").exists())
        {
            std::thread::sleep(Self::DELAY);
        }
        self.real.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.real.exists(path)
    }
    fn lock_exclusive(&self, path: &Path) -> std::io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.real.lock_exclusive(path)
    }
    fn lock_shared(&self, path: &Path) -> std::io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.real.lock_shared(path)
    }
    fn lock_dir(&self, path: &Path, exclusive: bool) -> std::io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.real.lock_dir(path, exclusive)
    }
    fn resolve_dir(&self, path: &Path) -> std::io::Result<PathBuf> {
        self.real.resolve_dir(path)
    }
    fn available_bytes(&self, path: &Path) -> std::io::Result<Option<u64>> {
        self.real.available_bytes(path)
    }
}

#[test]
fn an_open_racing_a_create_neither_fails_it_nor_finds_the_store_damaged() {
    // Before, the create let go of the directory's lock once its files were made and took the
    // store's locks again in its own open: an open by another that came in between (here, while
    // the create syncs the directory naming `CONTROL`) held the store, and the create failed
    // `Locked` although it had made the store; and the opener, looking while the create wrote,
    // found the store corrupted ("control file is 512 bytes, expected 1024", "the control
    // file is missing, but the directory holds a store's log and arena").
    let scratch = tempfile::tempdir().unwrap();
    let slow = Options {
        storage: std::sync::Arc::new(Hooked::slow_dir_syncs(false)),
        ..options()
    };
    for round in 0..4 {
        let store = scratch.path().join(format!("store-{round}"));
        let opener = {
            let store = store.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                while started.elapsed() < std::time::Duration::from_secs(10) {
                    match Store::open(&store, options()) {
                        Ok(opened) => {
                            std::thread::sleep(std::time::Duration::from_millis(150));
                            opened.close().unwrap();
                            return true;
                        }
                        Err(e) => assert!(
                            matches!(e, Error::NotFound(_) | Error::Locked(_)),
                            "round {round}: a store being made is not there yet, or held, never damaged: {e}"
                        ),
                    }
                }
                false
            })
        };
        let created = Store::create(&store, 8, slow.clone());
        let created = created.unwrap_or_else(|e| panic!("round {round}: the create stands: {e}"));
        created.close().unwrap();
        assert!(
            opener.join().unwrap(),
            "round {round}: the opener opens the store once it is made"
        );
    }
}

#[test]
fn a_create_waiting_for_another_is_told_the_store_exists_while_the_other_keeps_it_open() {
    // The first creator makes the store (slowly) and keeps it open; the second arrives while it
    // is being made and waits for the lock, which the first then holds as long as its store is
    // open. Before, the second was told after two seconds that the directory was held; it now
    // finds the store made.
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("store");
    let slow = Options {
        storage: std::sync::Arc::new(Hooked::slow_dir_syncs(true)),
        ..options()
    };
    let first = {
        let store = store.clone();
        std::thread::spawn(move || {
            let created = Store::create(&store, 8, slow).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(3));
            created.close().unwrap();
        })
    };
    while !store.join("wal").exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(
        !store.join("CONTROL").exists(),
        "the second create arrives before the store is made"
    );
    // The first holds its store open for longer than a creator waits (two seconds): only a
    // create that looks for CONTROL while it waits can tell.
    let second = Store::create(&store, 8, options());
    assert!(
        matches!(second, Err(Error::AlreadyExists)),
        "the second create finds the store made: {second:?}"
    );
    first.join().unwrap();
}

/// The child half of `a_store_opened_by_a_relative_path_stays_itself_when_the_working_directory_changes`
/// (runs only with `VELLUM_CWD_CHILD` set to a directory holding `first/` and `second/`, each
/// with a store `s`): opens `first/s` by a relative path, changes the working directory to
/// `second/`, writes past several new files and closes. A test of its own process: it changes
/// the working directory, which every thread of a test binary shares.
#[test]
fn relative_path_child_entry() {
    let Ok(dir) = std::env::var("VELLUM_CWD_CHILD") else {
        return;
    };
    std::env::set_current_dir(Path::new(&dir).join("first")).unwrap();
    let store = Store::open("s", options()).unwrap();
    std::env::set_current_dir(Path::new(&dir).join("second")).unwrap();
    for i in 0..2_000 {
        store.insert(&format!("moved-{i}"), &vector_of(i, 0.75), &[]).unwrap();
    }
    store.checkpoint().unwrap();
    store.close().unwrap();
}

#[test]
fn a_store_opened_by_a_relative_path_stays_itself_when_the_working_directory_changes() {
    // Before, the store kept the relative path: after the `chdir` its first write failed
    // ("creating s/arena/catalog-00000000.pages.tmp: No such file or directory"), or, with a
    // store `s` in the new working directory, went into that other store.
    let dir = tempfile::tempdir().unwrap();
    for side in ["first", "second"] {
        build_store(&dir.path().join(side).join("s"), 0.0);
    }
    let second_before = snapshot(&dir.path().join("second/s"));
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "relative_path_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VELLUM_CWD_CHILD", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the child wrote and closed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = Store::open(dir.path().join("first/s"), options()).unwrap();
    assert_eq!(
        first.len(),
        VECTORS + 2_000,
        "every row went to the store that was opened"
    );
    drop(first);
    assert!(
        snapshot(&dir.path().join("second/s")) == second_before,
        "the store in the new working directory was not touched"
    );
}

#[test]
fn a_store_opened_through_a_symlink_stays_in_its_directory_when_the_link_is_swapped() {
    // A deploy that swaps `current` from one release to the next while the old process still
    // writes. Before, the old writer's new log segments and arena files went through the link
    // into the new release's store: every write and the close succeeded, and neither store
    // opened again ("the log has no segments", "segment belongs to store …").
    let base = tempfile::tempdir().unwrap();
    let (r1, r2, current) = (
        base.path().join("r1"),
        base.path().join("r2"),
        base.path().join("current"),
    );
    std::fs::create_dir_all(&r1).unwrap();
    std::os::unix::fs::symlink(&r1, &current).unwrap();
    let store = Store::create(current.join("store"), DIMENSION, options()).unwrap();
    assert_eq!(
        store.path(),
        r1.join("store").canonicalize().unwrap(),
        "the open resolved the link"
    );
    build_store(&r2.join("store"), 0.5);
    let r2_before = snapshot(&r2.join("store"));
    std::fs::remove_file(&current).unwrap();
    std::os::unix::fs::symlink(&r2, &current).unwrap();
    // Past many new log segments and arena files.
    for i in 0..3_000 {
        store.insert(&format!("old-{i}"), &vector_of(i, 0.25), &[]).unwrap();
    }
    store.close().unwrap();
    let old = Store::open(r1.join("store"), options()).unwrap();
    assert_eq!(old.len(), 3_000, "every row is in the store that was opened");
    drop(old);
    assert!(
        snapshot(&r2.join("store")) == r2_before,
        "the new release's store was not touched"
    );
}

#[test]
fn a_store_that_lost_its_control_file_is_never_taken_for_an_unfinished_creation() {
    // A create clears the remains of a creation a crash cut short (a log with no record, an
    // arena with no file); a store whose CONTROL was lost has records in its log (its first
    // checkpoint's at least, even with no row), and a create must leave it for a restore.
    for rows in [0usize, 50] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = Store::create(&path, DIMENSION, options()).unwrap();
        (0..rows).for_each(|i| {
            store.insert(&format!("v{i}"), &vector_of(i, 0.5), &[]).unwrap();
        });
        store.close().unwrap();
        std::fs::remove_file(path.join("CONTROL")).unwrap();
        let before = files_under(&path);
        let refused = Store::create(&path, DIMENSION, options());
        assert!(
            matches!(&refused, Err(Error::InvalidArgument(reason)) if reason.contains("not an unfinished creation")),
            "{rows} rows: the create refuses, saying why: {refused:?}"
        );
        let opened = Store::open(&path, options());
        assert!(
            matches!(&opened, Err(Error::Corrupted { .. })),
            "{rows} rows: the open calls the lost control file damage: {opened:?}"
        );
        assert_eq!(files_under(&path), before, "{rows} rows: nothing was removed");
    }
}

#[test]
fn a_control_file_put_back_whole_but_not_renamed_is_taken_by_the_next_open() {
    // A writer puts back a CONTROL deleted under it by writing CONTROL.tmp whole and renaming
    // it; a crash between the two left a store every open refused ("the control file is
    // missing"), its control data whole beside the name. A reader now reads it there; a
    // writer finishes the rename.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::create(&path, DIMENSION, options()).unwrap();
    (0..50).for_each(|i| {
        store.insert(&format!("v{i}"), &vector_of(i, 0.5), &[]).unwrap();
    });
    store.close().unwrap();
    std::fs::rename(path.join("CONTROL"), path.join("CONTROL.tmp")).unwrap();
    let before = files_under(&path);
    let reader = Store::open_read_only(&path, options()).unwrap();
    assert_eq!(reader.len(), 50, "a reader reads the control data where it lies");
    drop(reader);
    assert_eq!(files_under(&path), before, "and changes nothing");
    let writer = Store::open(&path, options()).unwrap();
    assert_eq!(writer.len(), 50, "a writer finishes the put-back and opens the store");
    writer.close().unwrap();
    assert!(
        path.join("CONTROL").exists() && !path.join("CONTROL.tmp").exists(),
        "renamed into place"
    );
    let report = vellum::inspect::verify_store(&path, &()).unwrap();
    assert!(report.clean(), "{:?}", report.problems);
    // One cut short while it was written is not taken.
    std::fs::rename(path.join("CONTROL"), path.join("CONTROL.tmp")).unwrap();
    let tmp = std::fs::OpenOptions::new()
        .write(true)
        .open(path.join("CONTROL.tmp"))
        .unwrap();
    tmp.set_len(512).unwrap();
    let opened = Store::open(&path, options());
    assert!(
        matches!(&opened, Err(Error::Corrupted { .. })),
        "a partial put-back leaves the store refused: {opened:?}"
    );
}

/// Every file below `dir`, relative to it, with its length.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                found.insert(entry.path().strip_prefix(dir).unwrap().to_path_buf(), meta.len());
            }
        }
    }
    found
}

#[test]
fn a_writer_short_of_descriptors_at_random_moments_with_its_threads_never_stops_and_loses_nothing() {
    // The simulation's shortage claim (tests/simulation.rs) on the real file system, with the
    // background threads (preallocator, checkpointer, archiver) running: spans of rows during
    // which every open, listing and directory sync fails with `EMFILE`, wherever it is. Each
    // failure must say so; once descriptors are back the store commits, checkpoints and closes
    // without a reopen, and every acknowledged row is there after it.
    let seed = vellum::rng::seed_from_env("VELLUM_HOSTILE_SEED", 0x5407);
    let mut rng = vellum::rng::SplitMix64::new(seed);
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("store");
    let short = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storage = Hooked {
        short_everywhere: Some(short.clone()),
        ..Hooked::default()
    };
    let hooked = Options {
        storage: std::sync::Arc::new(storage),
        checkpoint_interval_bytes: 256 * 1024,
        ..options()
    };
    let store = Store::create(&path, DIMENSION, hooked).unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for span in 0..12 {
        let shortage = span % 2 == 1;
        short.store(shortage, std::sync::atomic::Ordering::SeqCst);
        for i in 0..50 + rng.below(150) as usize {
            let id = format!("{span}-{i}");
            let checkpoint = rng.below(8) == 0;
            let result = if checkpoint {
                store.checkpoint().map(|_| ())
            } else {
                store.insert(&id, &vector_of(i, span as f32), &[]).map(|_| ())
            };
            match result {
                Ok(()) if !checkpoint => acknowledged.push(id),
                Ok(()) => {}
                Err(error) => {
                    // Not even a background thread's (the archiver's reported by the next
                    // checkpoint): a shortage that has passed is not reported.
                    assert!(shortage, "span {span}: a failure with descriptors to spare: {error}");
                    assert!(
                        error.to_string().contains("Too many open files") && !matches!(error, Error::Closed(_)),
                        "span {span}: a shortage fails the call that met it, naming it, and never stops the store: {error}"
                    );
                    refused += 1;
                }
            }
        }
    }
    short.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(refused > 0, "the shortages were met ({} rows)", acknowledged.len());
    store
        .insert("after", &vector_of(0, 9.0), &[])
        .expect("a commit once descriptors are back");
    store.checkpoint().expect("a checkpoint once descriptors are back");
    store.close().expect("the close once descriptors are back");
    let reopened = Store::open(&path, options()).unwrap();
    for id in &acknowledged {
        assert!(reopened.get(id).unwrap().is_some(), "{id} was acknowledged");
    }
    drop(reopened);
    let report = vellum::inspect::verify_store(&path, &()).unwrap();
    assert!(report.clean(), "{:?}", report.problems);
}

#[test]
fn a_log_segment_out_of_descriptors_fails_its_commit_and_the_log_goes_on_once_they_are_back() {
    // Before, the next segment was opened after it took its name: a process out of
    // descriptors there stopped the log ("the WAL stopped after an error …; reopen the
    // store"), and every later commit failed although the descriptors came back.
    a_file_out_of_descriptors_fails_its_commit_and_the_store_goes_on("wal");
}

#[test]
fn an_arena_file_out_of_descriptors_fails_its_commit_and_the_store_goes_on_once_they_are_back() {
    a_file_out_of_descriptors_fails_its_commit_and_the_store_goes_on("arena");
}

fn a_file_out_of_descriptors_fails_its_commit_and_the_store_goes_on(dir: &'static str) {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("store");
    let short = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storage = Hooked {
        short_of_descriptors_in: Some((dir, short.clone())),
        ..Hooked::default()
    };
    // 64 KiB segments and arena files (`options`): the store needs a new one every few dozen
    // rows.
    let short_of_descriptors = Options {
        storage: std::sync::Arc::new(storage),
        ..options()
    };
    let store = Store::create(&path, DIMENSION, short_of_descriptors).unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..100 {
        store.insert(&format!("before-{i}"), &vector_of(i, 0.5), &[]).unwrap();
        acknowledged.push(format!("before-{i}"));
    }
    short.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut failed = None;
    for i in 0..2_000 {
        match store.insert(&format!("short-{i}"), &vector_of(i, 0.25), &[]) {
            Ok(_) => acknowledged.push(format!("short-{i}")),
            Err(e) => {
                failed = Some((i, e));
                break;
            }
        }
    }
    let (i, error) = failed.expect("the store needed a file within 2,000 rows of 64 KiB files");
    assert!(
        error.to_string().contains("Too many open files"),
        "the commit that needed the segment fails, naming why: {error}"
    );
    short.store(false, std::sync::atomic::Ordering::SeqCst);
    for j in 0..200 {
        store
            .insert(&format!("after-{j}"), &vector_of(j, 0.75), &[])
            .unwrap_or_else(|e| panic!("{dir}: row {j} after the descriptors came back: {e}"));
        acknowledged.push(format!("after-{j}"));
    }
    assert!(
        store.get(&format!("short-{i}")).unwrap().is_none(),
        "the failed row is not there"
    );
    store.close().unwrap();
    let reopened = Store::open(&path, options()).unwrap();
    assert_eq!(
        reopened.len(),
        acknowledged.len(),
        "every acknowledged row, and no other"
    );
    for id in &acknowledged {
        assert!(reopened.get(id).unwrap().is_some(), "{id} was acknowledged");
    }
    drop(reopened);
    let report = vellum::inspect::verify_store(&path, &()).unwrap();
    assert!(report.clean(), "{:?}", report.problems);
}
