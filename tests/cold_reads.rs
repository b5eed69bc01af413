//! Reads from a cold page cache read what they need. The arena's mappings are read at random
//! (`MADV_RANDOM`): a fault reads its own 4 KiB, not the readahead window around it (8 MiB on
//! this machine's virtual disk: a cold `get` read 5-37 MiB and took 3-34 ms before). The first
//! check of a page asks for the page whole, one read rather than one per 4 KiB. Linux only:
//! the flags come from `/proc/self/smaps`, the bytes read from `/proc/thread-self/io`.
#![cfg(target_os = "linux")]

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use vellum::{Options, Row, Store};

const DIMENSION: usize = 256;

/// A store of `rows` vectors (1 KiB each) in `dir`, closed.
fn make_store(dir: &Path, rows: u64) {
    let store = Store::create(dir, DIMENSION as u32, Options::default()).expect("create");
    for batch in 0..rows.div_ceil(1000) {
        let ids: Vec<String> = (batch * 1000..((batch + 1) * 1000).min(rows))
            .map(|i| format!("id{i}"))
            .collect();
        let vectors: Vec<Vec<f32>> = (0..ids.len()).map(|i| vec![i as f32 * 0.001; DIMENSION]).collect();
        let batch: Vec<Row<'_>> = ids
            .iter()
            .zip(&vectors)
            .map(|(id, v)| (id.as_str(), v.as_slice(), &[][..]))
            .collect();
        store.insert_many(&batch).expect("insert_many");
    }
    store.close().expect("close");
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Drops the store's files from the page cache (synced first: only clean pages are dropped).
fn evict(dir: &Path) {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    for path in files {
        let file = std::fs::File::open(&path).expect("open");
        file.sync_all().expect("sync");
        // SAFETY: a valid descriptor; the advice changes no memory of ours.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// Bytes this thread caused to be read from storage so far.
fn thread_read_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
    let line = io
        .lines()
        .find(|l| l.starts_with("read_bytes:"))
        .expect("a read_bytes line");
    line["read_bytes:".len()..].trim().parse().expect("a number")
}

/// The `VmFlags` of every mapping of a file under `dir`, by path.
fn mapping_flags_under(dir: &Path) -> Vec<(String, String)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let prefix = dir.to_string_lossy().to_string();
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(path) = current.take() {
                found.push((path, flags.trim().to_string()));
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|range| range.contains('-') && !range.ends_with(':'))
        {
            current = line
                .split_whitespace()
                .nth(5)
                .filter(|path| path.starts_with(&prefix))
                .map(str::to_string);
        }
    }
    found
}

#[test]
fn every_arena_mapping_is_read_at_random() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("store");
    make_store(&dir, 3_000);
    let store = Store::open(&dir, Options::default()).expect("open");
    for i in [0, 1_500, 2_999] {
        assert!(store.get(&format!("id{i}")).expect("get").is_some(), "id{i} is stored");
    }
    let arena = std::fs::canonicalize(dir.join("arena")).expect("canonicalize");
    let mappings = mapping_flags_under(&arena);
    assert!(!mappings.is_empty(), "the reads mapped arena files");
    for (path, flags) in &mappings {
        assert!(
            flags.split_whitespace().any(|flag| flag == "rr"),
            "{path} is mapped without MADV_RANDOM (VmFlags: {flags}): a cold fault reads the readahead window around it"
        );
    }
    store.close().expect("close");
}

/// A store of `rows` vectors made in a temporary directory, dropped from the page cache and
/// opened read-only: every page a read meets comes from the disk.
fn cold_store(rows: u64) -> (tempfile::TempDir, Store) {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("store");
    make_store(&dir, rows);
    evict(&dir);
    let store = Store::open_read_only(&dir, Options::default()).expect("open");
    (temp, store)
}

/// Asserts that `reads` cold reads that made the device read `read_bytes` read their pages,
/// not the readahead window around them: each meets a few pages of 16 KiB (the tree's root,
/// branch and leaf, a catalog page, a vector page); a fault's window would read megabytes.
fn assert_each_read_its_pages(read_bytes: u64, reads: u64, what: &str) {
    if read_bytes == 0 {
        // A file system whose pages cannot be dropped (tmpfs) reads nothing: the count proves
        // nothing there, and the flags test above still holds the claim.
        eprintln!("the page cache could not be dropped here: no read to count");
        return;
    }
    let per_read_max_bytes = 512 << 10;
    assert!(
        read_bytes <= reads * per_read_max_bytes,
        "{reads} {what} read {} KiB from the disk: more than {} KiB each",
        read_bytes >> 10,
        per_read_max_bytes >> 10
    );
}

#[test]
fn a_cold_point_read_reads_its_pages_not_the_window_around_them() {
    // 48 MiB of vectors: three vector files, more than one readahead window of most disks.
    let rows = 48_000;
    let (_temp, store) = cold_store(rows);
    let gets = 20u64;
    let before = thread_read_bytes();
    for i in 0..gets {
        let id = format!("id{}", (i * 7_919) % rows);
        assert!(store.get(&id).expect("get").is_some(), "{id} is stored");
    }
    assert_each_read_its_pages(thread_read_bytes() - before, gets, "cold gets");
    store.close().expect("close");
}

#[test]
fn a_batch_read_from_a_cold_cache_returns_what_get_returns_and_reads_only_its_pages() {
    let rows = 48_000;
    let (_temp, store) = cold_store(rows);
    // More ids than a cold window and a warm one, some absent, some twice.
    let ids: Vec<String> = (0..300u64)
        .map(|i| match i % 50 {
            0 => format!("absent{i}"),
            1 => "id5".to_string(),
            _ => format!("id{}", (i * 7_919) % rows),
        })
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let before = thread_read_bytes();
    let mut found = vec![None; refs.len()];
    store
        .get_many(&refs, |i, vector| found[i] = vector.map(|v| v.to_vec()))
        .expect("get_many");
    let read_bytes = thread_read_bytes() - before;
    for (id, vector) in refs.iter().zip(&found) {
        let expected = id.strip_prefix("id").map(|n| {
            let n: usize = n.parse().expect("a row number");
            vec![(n % 1000) as f32 * 0.001; DIMENSION]
        });
        assert_eq!(vector, &expected, "{id}: as it was stored");
        let got = store.get(id).expect("get").map(|v| v.to_vec());
        assert_eq!(vector, &got, "{id}: what get returns");
    }
    // The pages a batch asks for ahead are those its reads then use: no more than a get's.
    assert_each_read_its_pages(read_bytes, refs.len() as u64, "cold reads in a batch");
    store.close().expect("close");
}
