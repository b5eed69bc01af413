//! Real hostile media: a read-only bind mount, an unprivileged user, a size-limited tmpfs and a
//! small loop-mounted ext4. These need root (CI runs as root); where the test cannot mount or
//! switch users it says so and skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vellum_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vellum")
}

fn run(args: &[&str]) -> Output {
    Command::new(vellum_bin()).args(args).output().expect("run vellum")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// A mount point that is unmounted (lazily) when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(point: &Path, args: &[&str]) -> Option<Mount> {
        std::fs::create_dir_all(point).unwrap();
        let status = Command::new("mount").args(args).arg(point).status().ok()?;
        status.success().then(|| Mount(point.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn skip(test: &str, why: &str) {
    println!("{test}: SKIPPED: {why}");
}

/// A tmpfs of `size` (as `mount -o size=` takes it) mounted in a new temporary directory: the
/// mount point, the directory and the mount, in that order so that bindings of them drop the
/// mount first. `None` (the test skipped, saying why) where this process cannot mount one.
fn small_tmpfs(test: &str, size: &str) -> Option<(PathBuf, tempfile::TempDir, Mount)> {
    if !is_root() {
        skip(test, "needs root to mount a tmpfs");
        return None;
    }
    let scratch = tempfile::tempdir().unwrap();
    let point = scratch.path().join("small");
    let Some(tmpfs) = Mount::new(&point, &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]) else {
        skip(test, "mount -t tmpfs failed");
        return None;
    };
    Some((point, scratch, tmpfs))
}

/// Options of 4 KiB pages and segments (and arena files) of `segment_size_bytes`: a store that
/// fills a small file system in few rows.
fn small_pages(segment_size_bytes: u64) -> vellum::Options {
    vellum::Options {
        page_size_bytes: 4096,
        segment_size_bytes,
        ..vellum::Options::default()
    }
}

fn make_store(dir: &Path, rows: usize) {
    let store = dir.to_str().unwrap();
    let created = run(&[
        "create",
        store,
        "--dim",
        "8",
        "--page-size",
        "4096",
        "--segment-size",
        "256KiB",
    ]);
    assert!(created.status.success(), "{}", text(&created));
    let input = dir.with_extension("jsonl");
    let lines: String = (0..rows)
        .map(|i| format!("{{\"id\": \"v{i}\", \"vector\": [{i}, 1, 2, 3, 4, 5, 6, 7]}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let imported = run(&["import", store, input.to_str().unwrap(), "--batch", "500"]);
    assert!(imported.status.success(), "{}", text(&imported));
}

/// Every reading command succeeds on `store`.
fn reading_commands_work(store: &str, how: &str) {
    let query = "[1, 1, 2, 3, 4, 5, 6, 7]";
    for args in [
        vec!["verify", store],
        vec!["wal-dump", store],
        vec!["stats", store],
        vec!["get", store, "v1"],
        vec!["search", store, "--vector", query, "-k", "3"],
        vec!["list", store, "--limit", "5"],
        vec!["export", store, "--prefix", "v1"],
    ] {
        let out = run(&args);
        assert!(out.status.success(), "{how}: vellum {args:?}: {}", text(&out));
    }
    let verify = run(&["verify", store]);
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("clean"),
        "{how}: a healthy store verifies clean: {}",
        text(&verify)
    );
}

#[test]
fn reading_commands_work_on_a_read_only_bind_mount() {
    let test = "reading_commands_work_on_a_read_only_bind_mount";
    if !is_root() {
        return skip(test, "needs root to bind-mount");
    }
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("s");
    make_store(&store, 2000);
    let point = scratch.path().join("ro");
    let Some(_bind) = Mount::new(&point, &["--bind", store.to_str().unwrap()]) else {
        return skip(test, "mount --bind failed");
    };
    let remounted = Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(&point)
        .status()
        .unwrap();
    assert!(remounted.success(), "remount read-only");
    assert!(
        std::fs::write(point.join("probe"), b"x").is_err(),
        "the bind mount is read-only"
    );
    reading_commands_work(point.to_str().unwrap(), "read-only bind mount");
    let insert = run(&["delete", point.to_str().unwrap(), "v1"]);
    assert!(
        !insert.status.success(),
        "a write on read-only media fails: {}",
        text(&insert)
    );
    assert!(
        text(&insert).contains("opens the store without writing"),
        "the failure points at the commands that still work: {}",
        text(&insert)
    );
}

#[test]
fn reading_commands_work_for_a_user_who_may_not_write() {
    let test = "reading_commands_work_for_a_user_who_may_not_write";
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        return skip(test, "needs root and setpriv to run as nobody");
    }
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("s");
    make_store(&store, 500);
    // The binary, the directories and files readable (not writable) by others.
    let bin = scratch.path().join("vellum");
    std::fs::copy(vellum_bin(), &bin).unwrap();
    for path in [scratch.path().to_path_buf(), store.clone()] {
        Command::new("chmod").args(["-R", "a+rX"]).arg(&path).status().unwrap();
    }
    let as_nobody = |args: &[&str]| -> Output {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin)
            .args(args)
            .output()
            .expect("run setpriv")
    };
    let s = store.to_str().unwrap();
    for args in [
        vec!["verify", s],
        vec!["wal-dump", s],
        vec!["stats", s],
        vec!["get", s, "v1"],
        vec!["search", s, "--vector", "[1, 1, 2, 3, 4, 5, 6, 7]"],
    ] {
        let out = as_nobody(&args);
        assert!(out.status.success(), "as nobody: vellum {args:?}: {}", text(&out));
    }
    let delete = as_nobody(&["delete", s, "v1"]);
    assert!(
        !delete.status.success() && text(&delete).contains("opens the store without writing"),
        "as nobody, a write fails and points at the commands that still work: {}",
        text(&delete)
    );
}

#[test]
fn a_full_tmpfs_is_disk_full_and_never_a_signal() {
    let test = "a_full_tmpfs_is_disk_full_and_never_a_signal";
    let Some((point, _scratch, _tmpfs)) = small_tmpfs(test, "10m") else {
        return;
    };
    disk_fills_up_cleanly(&point, "tmpfs");
}

#[test]
fn a_full_loop_mounted_ext4_is_disk_full_and_never_a_signal() {
    let test = "a_full_loop_mounted_ext4_is_disk_full_and_never_a_signal";
    if !is_root() || Command::new("mkfs.ext4").arg("-V").output().is_err() {
        return skip(test, "needs root and mkfs.ext4");
    }
    let scratch = tempfile::tempdir().unwrap();
    let image = scratch.path().join("disk.img");
    std::fs::File::create(&image).unwrap().set_len(16 << 20).unwrap();
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(made.status.success(), "mkfs.ext4: {}", text(&made));
    let point = scratch.path().join("ext4");
    let Some(_ext4) = Mount::new(&point, &["-o", "loop", image.to_str().unwrap()]) else {
        return skip(test, "mount -o loop failed (no loop devices here?)");
    };
    disk_fills_up_cleanly(&point, "ext4");
}

/// Imports into a store on a small file system until it is full: every command ends with an
/// exit code (DiskFull is 3), never a signal; what was acknowledged stays readable; freeing room
/// lets the store go on.
fn disk_fills_up_cleanly(point: &Path, fs: &str) {
    let store = point.join("s");
    let s = store.to_str().unwrap();
    let created = run(&[
        "create",
        s,
        "--dim",
        "256",
        "--page-size",
        "4096",
        "--segment-size",
        "1MiB",
    ]);
    assert!(created.status.success(), "{fs}: {}", text(&created));
    let input = point.parent().unwrap().join(format!("{fs}-in.jsonl"));
    let row = vec!["0.5"; 256].join(", ");
    let lines: String = (0..20_000)
        .map(|i| format!("{{\"id\": \"v{i}\", \"vector\": [{row}]}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let imported = run(&["import", s, input.to_str().unwrap(), "--batch", "250", "--ack"]);
    assert!(
        imported.status.code().is_some(),
        "{fs}: the import ended by a signal: {}",
        text(&imported)
    );
    assert!(
        !imported.status.success(),
        "{fs}: 20,000 × 1 KiB cannot fit in the file system"
    );
    assert!(
        String::from_utf8_lossy(&imported.stderr).contains("disk full"),
        "{fs}: the import says the disk is full: {}",
        text(&imported)
    );
    let acked: usize = String::from_utf8_lossy(&imported.stdout)
        .lines()
        .last()
        .map_or(0, |l| l.trim().parse().unwrap());
    // Fill what is left, so every later command meets a full disk.
    let _ = std::fs::write(point.join("filler"), vec![1u8; 64 << 20]);
    let mut deleted = 0;
    let mut log = String::new();
    for args in [
        vec!["get", s, "v0"],
        vec!["stats", s],
        vec!["search", s, "--vector", &format!("[{row}]"), "-k", "2"],
        vec!["verify", s],
        vec!["delete", s, "v0"],
    ] {
        let out = run(&args);
        assert!(
            out.status.code().is_some(),
            "{fs}: vellum {args:?} on a full disk died by a signal: {}",
            text(&out)
        );
        log.push_str(&format!("vellum {:?}: {}\n", args[0], text(&out)));
        // A delete needs no new space while the log's preallocated segment has room; it
        // says so on stdout once committed, even if the close after it fails (the archiver
        // meets the full disk).
        if args[0] == "delete" && String::from_utf8_lossy(&out.stdout).contains("deleted") {
            deleted = 1;
        }
    }
    std::fs::remove_file(point.join("filler")).unwrap();
    let stats = run(&["stats", s, "--json"]);
    assert!(stats.status.success(), "{fs}: {}", text(&stats));
    let count = serde_json::from_slice::<serde_json::Value>(&stats.stdout).unwrap()["vectors"]
        .as_u64()
        .unwrap() as usize;
    assert!(
        count + deleted >= acked,
        "{fs}: {acked} acknowledged, {deleted} deleted since, {count} present; import: {}; on the full disk:\n{log}",
        text(&imported)
    );
    let verify = run(&["verify", s]);
    assert!(
        verify.status.success(),
        "{fs}: the store verifies clean: {}",
        text(&verify)
    );
}

#[test]
fn a_close_on_a_full_disk_returns_ok_only_with_a_deleted_control_file_made_again() {
    let test = "a_close_on_a_full_disk_returns_ok_only_with_a_deleted_control_file_made_again";
    let Some((point, _scratch, _tmpfs)) = small_tmpfs(test, "20m") else {
        return;
    };
    let options = small_pages(1 << 20);
    let path = point.join("s");
    let store = vellum::Store::create(&path, 64, options).unwrap();
    for i in 0..2_000 {
        store.insert(&format!("v{i}"), &[i as f32; 64], &[]).unwrap();
    }
    std::fs::remove_file(path.join("CONTROL")).unwrap();
    // Fill what is left of the file system.
    let mut filler = std::fs::File::create(point.join("filler")).unwrap();
    for block_bytes in [1 << 16, 4096, 1] {
        let block = vec![7u8; block_bytes];
        while std::io::Write::write_all(&mut filler, &block).is_ok() {}
    }
    drop(filler);
    let closed = store.close();
    // The closing checkpoint, which makes CONTROL again, finds no room. The full-disk rule
    // lets a close succeed when only its checkpoint failed (the next open redoes the log), but
    // without CONTROL no open would take the store: a close that returns Ok must leave one
    // (here the close frees a spare segment, and makes CONTROL in that room), and one that
    // cannot must say so. Before, the close returned Ok with CONTROL missing.
    std::fs::remove_file(point.join("filler")).unwrap();
    match closed {
        Ok(()) => {
            let reopened = vellum::Store::open(&path, vellum::Options::default())
                .unwrap_or_else(|e| panic!("a close that returned Ok left a store that opens: {e}"));
            assert_eq!(reopened.len(), 2_000, "with every row");
        }
        Err(error) => assert!(
            matches!(error, vellum::Error::DiskFull { .. }),
            "a close that could not make CONTROL again says the disk was full: {error:?}"
        ),
    }
}

/// Bytes free for an unprivileged writer on the file system holding `path` (`statvfs`).
fn free_bytes(path: &Path) -> u64 {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated path and `stat` points at writable memory of the
    // size statvfs fills in.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    assert_eq!(rc, 0, "statvfs {}", path.display());
    // SAFETY: statvfs returned 0, so it filled every field.
    let stat = unsafe { stat.assume_init() };
    stat.f_bavail * stat.f_frsize
}

/// An index build that cannot fit the disk is refused before it builds anything (its watcher is
/// never called), naming what it needs and what is free, and changes nothing; once there is
/// room the same build succeeds.
#[test]
fn an_index_build_that_cannot_fit_the_disk_is_refused_before_it_starts() {
    let test = "an_index_build_that_cannot_fit_the_disk_is_refused_before_it_starts";
    let Some((point, _scratch, _tmpfs)) = small_tmpfs(test, "24m") else {
        return;
    };
    let options = small_pages(256 << 10);
    let store = vellum::Store::create(point.join("s"), 8, options.clone()).unwrap();
    let (ids, vectors): (Vec<String>, Vec<[f32; 8]>) = (0..20_000)
        .map(|i| (format!("v{i}"), [i as f32, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]))
        .unzip();
    let rows: Vec<vellum::Row<'_>> = ids
        .iter()
        .zip(&vectors)
        .map(|(id, v)| (id.as_str(), &v[..], &[][..]))
        .collect();
    store.insert_many(&rows).unwrap();
    store.checkpoint().unwrap();
    // Leave 1 MiB: the graph of 20,000 nodes takes some 2.7 MiB of pages, and their images.
    let filler = point.join("filler");
    let left = free_bytes(&point).saturating_sub(1 << 20);
    std::fs::write(&filler, vec![7u8; left as usize]).unwrap();
    let mut called = false;
    let refused = store.create_index_watched(vellum::IndexOptions::default(), &mut |_| {
        called = true;
        std::ops::ControlFlow::Continue(())
    });
    let Err(vellum::Error::DiskFull { context }) = refused else {
        panic!("refused as disk full: {refused:?}")
    };
    assert!(
        context.contains("need at least") && context.contains("MiB are free"),
        "says what it needs and what is free: {context}"
    );
    assert!(!called, "refused before the build began");
    assert!(store.index_info().unwrap().is_none(), "no index");
    std::fs::remove_file(&filler).unwrap();
    store.create_index(vellum::IndexOptions::default()).unwrap();
    assert_eq!(store.index_info().unwrap().unwrap().live, 20_000);
    store.close().unwrap();
    let store = vellum::Store::open(point.join("s"), options).unwrap();
    assert_eq!(store.len(), 20_000);
    store.close().unwrap();
}

#[test]
fn a_restore_that_cannot_fit_the_disk_is_refused_before_it_writes() {
    let test = "a_restore_that_cannot_fit_the_disk_is_refused_before_it_writes";
    let Some((point, _scratch, _tmpfs)) = small_tmpfs(test, "128m") else {
        return;
    };
    let source = tempfile::tempdir().unwrap();
    let src = source.path().join("s");
    let store = vellum::Store::create(&src, 8, vellum::Options::default()).unwrap();
    for i in 0..1000 {
        store.upsert(&format!("v{i}"), &[i as f32; 8], &[]).unwrap();
    }
    store.close().unwrap();
    // The base image's arena is two files of 16 MiB: leave 20 MiB.
    let filler = point.join("filler");
    let left = free_bytes(&point).saturating_sub(20 << 20);
    std::fs::write(&filler, vec![7u8; left as usize]).unwrap();
    let refused = vellum::restore(&src, point.join("r"), vellum::RestoreTarget::Latest);
    let Err(vellum::Error::DiskFull { context }) = refused else {
        panic!("refused as disk full: {refused:?}")
    };
    assert!(
        context.contains("needs at least 32.0 MiB") && context.contains("MiB are free"),
        "refused before writing, saying what it needs and what is free: {context}"
    );
    let left: Vec<_> = std::fs::read_dir(&point)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("filler")],
        "nothing of the restore is left"
    );
    std::fs::remove_file(&filler).unwrap();
    vellum::restore(&src, point.join("r"), vellum::RestoreTarget::Latest).unwrap();
    let restored = vellum::Store::open(point.join("r"), vellum::Options::default()).unwrap();
    assert_eq!(restored.len(), 1000);
    restored.close().unwrap();
}
