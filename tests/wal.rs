//! The write-ahead log's claims: round trips across pages and segments, reopen, torn tails,
//! stale recycled segments, damage told apart from torn tails, and group commit.

mod support;

use std::path::Path;
use std::sync::Arc;

use support::{Rng, seed_from_env};
use vellum::storage::{RealStorage, Storage};
use vellum::wal::{Geometry, LogIdentity, RecordSpec, Wal, WalConfig};
use vellum::{Error, Lsn, RecoveryMode, SyncMode};

const PAGE: u32 = 4096;

fn config(segment_pages: u64, sync: SyncMode) -> WalConfig {
    let geometry = Geometry::new(PAGE, u64::from(PAGE) * segment_pages).unwrap();
    WalConfig::new(
        geometry,
        LogIdentity {
            store_id: 42,
            timeline: 1,
        },
        sync,
    )
}

fn storage() -> Arc<dyn Storage> {
    Arc::new(RealStorage::new())
}

fn spec(txn_id: u64) -> RecordSpec {
    RecordSpec {
        kind: 7,
        flags: 0,
        txn_id,
        prev_lsn: 0,
        timestamp_us: 1_700_000_000_000_000 + txn_id,
    }
}

fn open(dir: &Path, cfg: &WalConfig, mode: RecoveryMode) -> vellum::Result<(Wal, vellum::wal::ScanReport)> {
    Wal::open(storage(), dir, cfg.clone(), None, mode)
}

/// Every record from the start: (lsn, txn, payload).
fn read_all(wal: &Wal) -> Vec<(Lsn, u64, Vec<u8>)> {
    let mut reader = wal.reader_from_start();
    let mut out = Vec::new();
    while let Some(record) = reader.next_record().expect("a clean log reads without error") {
        out.push((record.lsn, record.header.txn_id.get(), record.payload.to_vec()));
    }
    out
}

#[test]
fn records_of_0_bytes_to_1_mib_round_trip_across_pages_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(64, SyncMode::Never);
    let mut rng = Rng::new(seed_from_env("VELLUM_TEST_SEED", 1));
    let sizes = [
        0usize,
        1,
        7,
        8,
        55,
        56,
        57,
        4000,
        4040,
        4096,
        4097,
        10_000,
        65_536,
        300_000,
        1 << 20,
        3,
    ];
    let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
    let mut written = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let payload = rng.bytes(size);
        let lsn = wal.append(&spec(i as u64), &[&payload]).unwrap();
        written.push((lsn, i as u64, payload));
    }
    assert_eq!(
        read_all(&{
            wal.write_out().unwrap();
            wal
        }),
        written,
        "a live reader sees every record exactly"
    );
    let (wal, report) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
    assert!(
        report.torn_tail.is_none(),
        "a clean close leaves no torn tail: {report}"
    );
    assert_eq!(read_all(&wal), written, "reopened, every record reads back exactly");
    assert!(
        wal.segment_numbers().len() > 4,
        "the 1 MiB record crossed several 256 KiB segments"
    );
}

#[test]
fn reopen_continues_the_log_where_it_ended() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(16, SyncMode::Always);
    let mut expected = Vec::new();
    let mut wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
    for round in 0..5u64 {
        for i in 0..50u64 {
            let payload = format!("round {round} record {i}")
                .repeat(i as usize % 13 + 1)
                .into_bytes();
            let lsn = wal.append(&spec(round), &[&payload]).unwrap();
            wal.commit(lsn).unwrap();
            expected.push((lsn, round, payload));
        }
        wal.close().unwrap();
        let (reopened, report) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
        assert_eq!(
            report.records as usize,
            expected.len(),
            "the scan counts every record: {report}"
        );
        assert_eq!(
            read_all(&reopened),
            expected,
            "round {round}: the log continues exactly"
        );
        wal = reopened;
    }
}

/// Writes `count` records and returns them with the last record's end address.
fn write_log(dir: &Path, cfg: &WalConfig, count: u64, last_size: usize) -> (Vec<(Lsn, u64, Vec<u8>)>, u64) {
    let wal = Wal::create(storage(), dir, cfg.clone()).unwrap();
    let mut records = Vec::new();
    let mut end = 0;
    for i in 0..count {
        let size = if i + 1 == count {
            last_size
        } else {
            100 + (i as usize * 37) % 900
        };
        let payload: Vec<u8> = (0..size).map(|b| (b as u64 * 31 + i) as u8 | 1).collect();
        let (lsn, record_end) = wal.append_with_end(&spec(i), &[&payload]).unwrap();
        wal.commit(lsn).unwrap();
        records.push((lsn, i, payload));
        end = record_end;
    }
    wal.close().unwrap();
    (records, end)
}

fn segment_file(dir: &Path, segment_no: u64) -> std::path::PathBuf {
    dir.join(format!("{segment_no:016x}.wal"))
}

/// Overwrites `[from, to)` of the log (in segment 0) with `fill(offset)`.
fn overwrite(dir: &Path, from: u64, to: u64, fill: impl Fn(u64) -> u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_file(dir, 0))
        .unwrap();
    let bytes: Vec<u8> = (from..to).map(fill).collect();
    file.write_all_at(&bytes, from).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A directory for one of the ~3,000 opens of the test below: in RAM (`/dev/shm`) where there
/// is one, since what it checks is how the log is read, not what the device keeps, and each
/// open, commit and close syncs (on a loaded shared disk the test took 37-122 s, now ~3 s).
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

#[test]
fn torn_tail_at_every_byte_offset_of_the_last_record_recovers_exactly_the_prefix() {
    let original = tempfile::tempdir().unwrap();
    let cfg = config(8, SyncMode::Always);
    // The last record (1,500 bytes) starts near a page end, so it spans a page header.
    let (records, end) = write_log(original.path(), &cfg, 10, 1_500);
    let last = records.last().unwrap().0.get();
    assert!(
        end / u64::from(PAGE) > last / u64::from(PAGE),
        "the last record spans two pages"
    );
    let prefix = &records[..records.len() - 1];
    for cut in last..end {
        for scribble in [false, true] {
            let dir = scratch_dir();
            copy_dir(original.path(), dir.path());
            if scribble {
                overwrite(dir.path(), cut, end, |o| (o as u8).wrapping_mul(151) ^ 0x5a);
            } else {
                overwrite(dir.path(), cut, end, |_| 0);
            }
            let (wal, report) = open(dir.path(), &cfg, RecoveryMode::TolerateTornTail)
                .unwrap_or_else(|e| panic!("cut at {cut} (scribble: {scribble}) must recover: {e}"));
            assert_eq!(
                report.end_lsn.get(),
                last,
                "cut at {cut}: the log ends where the torn record began"
            );
            assert_eq!(
                read_all(&wal),
                prefix,
                "cut at {cut} (scribble: {scribble}): exactly the prefix survives"
            );
            let torn_expected = scribble || cut > last;
            assert_eq!(
                report.torn_tail.is_some(),
                torn_expected,
                "cut at {cut}: torn tail reported iff bytes remain: {report}"
            );
            // Appending after the repair never resurrects the torn bytes.
            let lsn = wal.append(&spec(99), &[b"after the crash"]).unwrap();
            wal.commit(lsn).unwrap();
            wal.close().unwrap();
            let (wal, report) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
            assert!(
                report.torn_tail.is_none(),
                "cut at {cut}: the torn tail was erased: {report}"
            );
            let all = read_all(&wal);
            assert_eq!(&all[..prefix.len()], prefix);
            assert_eq!(
                all.len(),
                prefix.len() + 1,
                "cut at {cut}: only the new record follows the prefix"
            );
            assert_eq!(all.last().unwrap().2, b"after the crash");
        }
    }
}

#[test]
fn recycled_segment_full_of_stale_records_is_never_read_as_live() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(8, SyncMode::Never);
    let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
    let mut records = Vec::new();
    let mut i = 0u64;
    while wal.end_lsn().get() < cfg.geometry.segment_base(1) + 3 * u64::from(PAGE) {
        let payload = vec![i as u8 | 1; 700];
        records.push((wal.append(&spec(i), &[&payload]).unwrap(), i, payload));
        i += 1;
    }
    wal.close().unwrap();
    // Segment 2 appears as a recycled copy of segment 0: a valid-looking header and records,
    // all stamped with segment 0's addresses.
    let _ = std::fs::remove_file(segment_file(dir.path(), 2));
    std::fs::copy(segment_file(dir.path(), 0), segment_file(dir.path(), 2)).unwrap();
    let (wal, report) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
    assert!(
        report.torn_tail.is_none(),
        "stale pages are not garbage of a torn tail: {report}"
    );
    assert_eq!(read_all(&wal), records, "no stale record is read as live");
    // Fill into segment 2 and beyond: the stale bytes are overwritten or skipped, never read.
    while wal.end_lsn().get() < cfg.geometry.segment_base(3) + u64::from(PAGE) {
        let payload = vec![i as u8 | 1; 900];
        records.push((wal.append(&spec(i), &[&payload]).unwrap(), i, payload));
        i += 1;
    }
    wal.close().unwrap();
    let (wal, _) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
    assert_eq!(
        read_all(&wal),
        records,
        "the log through the recycled segment reads exactly"
    );
}

#[test]
fn released_segments_are_recycled_and_the_log_reads_from_the_oldest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(8, SyncMode::Never);
    let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
    let mut records = Vec::new();
    for i in 0..400u64 {
        let payload = vec![i as u8 | 1; 500];
        records.push((wal.append(&spec(i), &[&payload]).unwrap(), i, payload));
    }
    wal.sync().unwrap();
    let keep_from = records[300].0;
    let released = wal.release_before(keep_from).unwrap();
    assert!(released > 0, "whole segments before the cut were released");
    let oldest = wal.segment_numbers()[0];
    assert_eq!(oldest, cfg.geometry.segment_of(keep_from.get()));
    let kept: Vec<_> = records
        .iter()
        .filter(|r| cfg.geometry.segment_of(r.0.get()) >= oldest)
        .cloned()
        .collect();
    for i in 400..800u64 {
        let payload = vec![i as u8 | 1; 500];
        records.push((wal.append(&spec(i), &[&payload]).unwrap(), i, payload));
    }
    wal.close().unwrap();
    let (wal, report) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
    let all = read_all(&wal);
    assert!(report.torn_tail.is_none(), "{report}");
    assert_eq!(
        all[..kept.len()],
        kept[..],
        "the oldest kept segment reads from its first whole record"
    );
    assert_eq!(
        all.last(),
        records.last(),
        "records written into recycled segments read back"
    );
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(
        files < 800 * 500 / (8 * 4096) + 4,
        "segment files are recycled, not accumulated ({files} files)"
    );
}

#[test]
fn damage_before_the_durable_point_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(16, SyncMode::Always);
    let (records, _) = write_log(dir.path(), &cfg, 40, 200);
    let victim = records[10].0.get();
    overwrite(dir.path(), victim + 20, victim + 24, |_| 0xEE);
    let error = open(dir.path(), &cfg, RecoveryMode::TolerateTornTail).unwrap_err();
    assert!(
        matches!(error, Error::Corrupted { lsn: Some(lsn), .. } if lsn.get() == victim),
        "later records prove the damaged one was durable: {error}"
    );
    let error = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap_err();
    assert!(
        matches!(error, Error::Corrupted { .. }),
        "Strict refuses it too: {error}"
    );
    let (wal, report) = open(dir.path(), &cfg, RecoveryMode::SkipCorrupted).unwrap();
    assert_eq!(
        report.skipped.len(),
        1,
        "one damaged range is skipped and reported: {report}"
    );
    assert_eq!(report.skipped[0].from.get(), victim);
    let read: Vec<_> = {
        let mut reader = wal.reader_from_start().with_skips(&report.skipped);
        let mut out = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            out.push(record.lsn);
        }
        out
    };
    assert!(!read.contains(&Lsn(victim)), "the damaged record is not served");
    assert_eq!(
        read.last(),
        Some(&records.last().unwrap().0),
        "records after the damage are kept"
    );
    assert!(
        read.len() >= records.len() - 12,
        "at most the damaged page's records are lost"
    );
}

#[test]
fn damage_deep_inside_a_record_spanning_many_pages_is_found_by_the_scan() {
    // The open's scan checks a spanning record where it lies, piece by piece, without copying
    // it: a byte changed in its sixth continuation page, where every page header is intact,
    // must still fail its checksum. Later records prove it was durable: damage, not a tail.
    let original = tempfile::tempdir().unwrap();
    let cfg = config(64, SyncMode::Always);
    let records = write_sizes(original.path(), &cfg, &[300, 40_000, 300, 40_000, 300]);
    let (victim, victim_end) = (records[1].0.get(), records[1].1);
    // The log ends where the next record would start: the last one's end, aligned to 8.
    let log_end = records[4].1.next_multiple_of(8);
    let sixth_continuation = (victim / u64::from(PAGE) + 6) * u64::from(PAGE);
    assert!(
        victim_end > sixth_continuation + u64::from(PAGE),
        "the record spans past that page"
    );
    let (wal, report) = open(original.path(), &cfg, RecoveryMode::Strict).unwrap();
    assert_eq!(
        report.end_lsn.get(),
        log_end,
        "the whole log scans clean before the damage"
    );
    drop(wal);
    for offset_in_page in [64, 2_000, u64::from(PAGE) - 1] {
        let dir = scratch_dir();
        copy_dir(original.path(), dir.path());
        let at = sixth_continuation + offset_in_page;
        overwrite(dir.path(), at, at + 1, |_| 0xEE);
        let error = open(dir.path(), &cfg, RecoveryMode::TolerateTornTail).unwrap_err();
        assert!(
            matches!(&error, Error::Corrupted { lsn: Some(lsn), .. } if lsn.get() == victim),
            "byte {offset_in_page} of a continuation page: the record fails its checksum: {error}"
        );
        let (wal, report) = open(dir.path(), &cfg, RecoveryMode::SkipCorrupted).unwrap();
        assert_eq!(report.skipped.len(), 1, "the damaged record is skipped: {report}");
        assert_eq!(report.skipped[0].from.get(), victim);
        assert_eq!(report.end_lsn.get(), log_end, "the records after it are kept: {report}");
        drop(wal);
    }
}

#[test]
fn strict_mode_refuses_an_ambiguous_tail_that_tolerate_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(16, SyncMode::Never);
    // Unsynced records: none carries a durable point past the damage.
    let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
    let mut lsns = Vec::new();
    for i in 0..40u64 {
        lsns.push(wal.append(&spec(i), &[&[i as u8 | 1; 300]]).unwrap());
    }
    wal.close().unwrap();
    overwrite(dir.path(), lsns[5].get() + 10, lsns[5].get() + 12, |_| 0xEE);
    let error = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap_err();
    assert!(
        matches!(error, Error::Corrupted { .. }),
        "valid records after damage: Strict refuses: {error}"
    );
    let (wal, report) = open(dir.path(), &cfg, RecoveryMode::TolerateTornTail).unwrap();
    assert_eq!(
        report.end_lsn, lsns[5],
        "nothing proves the damage durable: a torn tail"
    );
    assert_eq!(read_all(&wal).len(), 5);
}

#[test]
fn four_writers_with_sync_always_get_unique_ordered_lsns_and_all_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(32, SyncMode::Always);
    let wal = Arc::new(Wal::create(storage(), dir.path(), cfg.clone()).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..300u64 {
                    let payload = format!("writer {t} commit {i}").into_bytes();
                    let lsn = wal.append(&spec(t), &[&payload]).unwrap();
                    wal.commit(lsn).unwrap();
                    assert!(wal.durable_lsn() > lsn, "commit returns only once durable");
                    acked.push((lsn, t, payload));
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    for writer in 0..4 {
        let lsns: Vec<_> = acked.iter().filter(|r| r.1 == writer).map(|r| r.0).collect();
        assert!(lsns.windows(2).all(|w| w[0] < w[1]), "each writer's LSNs increase");
    }
    acked.sort();
    assert!(acked.windows(2).all(|w| w[0].0 < w[1].0), "LSNs are unique");
    Arc::try_unwrap(wal).unwrap().close().unwrap();
    let (wal, _) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
    assert_eq!(
        read_all(&wal),
        acked,
        "every acknowledged record is readable after reopen"
    );
}

#[test]
fn a_lone_committer_gets_one_fdatasync_per_commit_and_the_stats_count_both() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::create(storage(), dir.path(), config(32, SyncMode::Always)).unwrap();
    for i in 0..50u64 {
        let lsn = wal.append(&spec(i), &[b"one commit"]).unwrap();
        if i % 2 == 0 {
            // Half announce first, as a store's committer does (the writer thread may lead).
            wal.start_commit(lsn);
        }
        wal.commit(lsn).unwrap();
        assert!(wal.durable_lsn() > lsn, "commit returns only once durable");
    }
    let stats = wal.commit_stats();
    assert_eq!(stats.commits, 50, "every commit is counted");
    assert_eq!(
        stats.log_syncs, 50,
        "a lone committer's commits share nothing: one sync each"
    );
}

#[test]
fn oversized_record_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(16, SyncMode::Never);
    let wal = Wal::create(storage(), dir.path(), cfg).unwrap();
    let before = wal.end_lsn();
    let huge = vec![0u8; vellum::wal::RECORD_MAX_BYTES as usize];
    let error = wal.append(&spec(1), &[&huge]).unwrap_err();
    assert!(
        matches!(error, Error::InvalidArgument(_)),
        "too large for a record: {error}"
    );
    assert_eq!(wal.end_lsn(), before, "nothing was appended");
}

/// Writes records of the given payload sizes; returns (lsn, end) of each.
fn write_sizes(dir: &Path, cfg: &WalConfig, sizes: &[usize]) -> Vec<(Lsn, u64)> {
    let wal = Wal::create(storage(), dir, cfg.clone()).unwrap();
    let out = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let (lsn, end) = wal
                .append_with_end(&spec(i as u64), &[&vec![i as u8 | 1; size]])
                .unwrap();
            wal.commit(lsn).unwrap();
            (lsn, end)
        })
        .collect();
    wal.close().unwrap();
    out
}

#[test]
fn bytes_left_by_a_crashed_run_are_never_read_as_live() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(16, SyncMode::Always);
    // Ten records, then r10 spanning into the next page, then r11 right after it.
    let mut sizes = vec![300usize; 10];
    sizes.extend([4000, 100]);
    let written = write_sizes(dir.path(), &cfg, &sizes);
    let (r10, r10_end) = written[10];
    let (r11, _) = written[11];
    let next_page = (r10.get() / u64::from(PAGE) + 1) * u64::from(PAGE);
    assert!(
        r10_end > next_page && r11.get() == r10_end,
        "r10 spans into the page that holds r11"
    );
    // The crash tore r10 and the next page's header; r11 survived intact.
    overwrite(dir.path(), r10.get(), r10.get() + 64, |_| 0);
    overwrite(dir.path(), next_page, next_page + 32, |o| o as u8 | 0x80);
    let (wal, report) = open(dir.path(), &cfg, RecoveryMode::TolerateTornTail).unwrap();
    assert_eq!(report.end_lsn, r10, "{report}");
    // The next run writes a record laid out exactly like r10: it ends where r11 begins.
    let (lsn, end) = wal.append_with_end(&spec(50), &[&vec![0xAB; 4000]]).unwrap();
    assert_eq!((lsn, end), (r10, r11.get()), "the new record lines up with the old r11");
    wal.commit(lsn).unwrap();
    // Crash again (no clean close, which would zero the rest of the page).
    drop(wal);
    let (wal, report) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
    let all = read_all(&wal);
    assert_eq!(all.len(), 11, "r11 of the crashed run is not resurrected: {report}");
    assert_eq!(all.last().unwrap().1, 50);
}

#[test]
fn oldest_segment_starting_inside_a_released_record_opens_cleanly() {
    for sync in [SyncMode::Always, SyncMode::Never] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(8, sync);
        let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
        let segment = cfg.geometry.segment_size_bytes;
        let mut records = Vec::new();
        // Fill segment 0 almost up, then a record that covers the first two pages of segment 1
        // exactly, then more records.
        while wal.end_lsn().get() < segment - 2 * u64::from(PAGE) {
            records.push(wal.append_with_end(&spec(1), &[&[1u8; 1000]]).unwrap());
        }
        // The record starts at the current end (aligned, mid-page with room for a header).
        let start = wal.end_lsn().get();
        assert!(
            start.is_multiple_of(8) && start % u64::from(PAGE) >= 32 && u64::from(PAGE) - start % u64::from(PAGE) >= 56
        );
        // It must end exactly at the end of segment 1's second data page.
        let target_end = segment + 3 * u64::from(PAGE);
        let mut available = cfg.geometry.page_end(start) - start;
        let mut page = cfg.geometry.next_data_page(start);
        while page < target_end {
            available += u64::from(PAGE) - 32;
            page = cfg.geometry.next_data_page(page);
        }
        let payload = available - 56;
        let (lsn, end) = wal.append_with_end(&spec(2), &[&vec![2u8; payload as usize]]).unwrap();
        records.push((lsn, end));
        for _ in 0..20 {
            records.push(wal.append_with_end(&spec(3), &[&[3u8; 500]]).unwrap());
        }
        wal.sync().unwrap();
        assert_eq!(
            end, target_end,
            "the big record ends exactly at a page end in segment 1"
        );
        let expected: Vec<Lsn> = records.iter().filter(|r| r.0.get() >= segment).map(|r| r.0).collect();
        release_segment_0_and_reopen(wal, dir.path(), &cfg, &expected);
    }
}

/// Releases segment 0 of `wal` (synced), closes it, opens it again Strict and checks that the
/// records read back are exactly `expected`, with no torn tail.
fn release_segment_0_and_reopen(wal: Wal, dir: &Path, cfg: &WalConfig, expected: &[Lsn]) {
    let segment = cfg.geometry.segment_size_bytes;
    assert_eq!(wal.release_before(Lsn(segment)).unwrap(), 1, "segment 0 is released");
    wal.close().unwrap();
    let (wal, report) = open(dir, cfg, RecoveryMode::Strict).unwrap();
    assert!(report.torn_tail.is_none(), "{:?}: {report}", cfg.sync);
    let lsns: Vec<Lsn> = read_all(&wal).iter().map(|r| r.0).collect();
    assert_eq!(
        lsns, expected,
        "{:?}: every record after segment 0's reads back",
        cfg.sync
    );
}

#[test]
fn an_oldest_segment_wholly_inside_a_released_record_opens_at_the_next_record() {
    // A record longer than a segment, begun in segment 0: segment 1 is all continuation, and
    // once segment 0 is released the oldest segment holds no record start at all. Found with
    // 64 KiB segments: an archiver stopped by a shortage after archiving segment 0 left such a
    // log, and every reader from the oldest segment called it damage ("page continues a
    // record that never began").
    for sync in [SyncMode::Always, SyncMode::Never] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(8, sync);
        let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
        let segment = cfg.geometry.segment_size_bytes;
        let mut records = Vec::new();
        for _ in 0..3 {
            records.push(wal.append_with_end(&spec(1), &[&[1u8; 1000]]).unwrap());
        }
        let big = wal
            .append_with_end(&spec(2), &[&vec![2u8; 2 * segment as usize]])
            .unwrap();
        assert!(
            cfg.geometry.segment_of(big.0.get()) == 0 && cfg.geometry.segment_of(big.1) == 2,
            "the record runs from segment 0 through all of segment 1 into segment 2: {big:?}"
        );
        records.push(big);
        for _ in 0..10 {
            records.push(wal.append_with_end(&spec(3), &[&[3u8; 500]]).unwrap());
        }
        wal.sync().unwrap();
        let expected: Vec<Lsn> = records.iter().filter(|r| r.0 > big.0).map(|r| r.0).collect();
        release_segment_0_and_reopen(wal, dir.path(), &cfg, &expected);
    }
}

#[test]
fn a_segment_of_another_store_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(16, SyncMode::Always);
    write_sizes(dir.path(), &cfg, &[100; 20]);
    let before = std::fs::read(segment_file(dir.path(), 0)).unwrap();
    let stranger = WalConfig::new(
        cfg.geometry,
        LogIdentity {
            store_id: 43,
            timeline: 1,
        },
        SyncMode::Always,
    );
    for mode in [
        RecoveryMode::Strict,
        RecoveryMode::TolerateTornTail,
        RecoveryMode::SkipCorrupted,
    ] {
        let error = Wal::open(storage(), dir.path(), stranger.clone(), None, mode).unwrap_err();
        // Another store's file where this store's should be is damage to this store (a file
        // swapped in), named: not a newer format (Incompatible), and never a torn tail.
        assert!(
            matches!(&error, Error::Corrupted { file: Some(f), .. } if f.ends_with("0000000000000000.wal")),
            "{mode:?}: {error}"
        );
    }
    assert_eq!(
        std::fs::read(segment_file(dir.path(), 0)).unwrap(),
        before,
        "nothing was erased"
    );
    let (wal, _) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
    assert_eq!(read_all(&wal).len(), 20, "the owner still reads every record");
}

#[test]
fn a_record_continuing_into_a_segment_without_a_valid_header_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(8, SyncMode::Always);
    let mut sizes = vec![900usize; 30];
    sizes.push(20_000);
    let written = write_sizes(dir.path(), &cfg, &sizes);
    let segment = cfg.geometry.segment_size_bytes;
    let spanning = written
        .iter()
        .position(|&(lsn, end)| lsn.get() < segment && end > segment + u64::from(PAGE))
        .unwrap();
    // Damage segment 1's magic: the record that continues into it is torn.
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_file(dir.path(), 1))
        .unwrap();
    file.write_all_at(b"XXXXXXXX", 0).unwrap();
    let error = open(dir.path(), &cfg, RecoveryMode::TolerateTornTail).unwrap_err();
    assert!(
        matches!(error, Error::Corrupted { lsn: Some(lsn), .. } if lsn == written[spanning].0),
        "later durable records prove the damage is not a torn tail: {error}"
    );
    let (wal, report) = open(dir.path(), &cfg, RecoveryMode::SkipCorrupted).unwrap();
    assert_eq!(report.skipped[0].from, written[spanning].0, "{report}");
    let mut reader = wal.reader_from_start().with_skips(&report.skipped);
    let mut read = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        read.push(record.lsn);
    }
    assert!(!read.contains(&written[spanning].0), "the record is never served");
    assert_eq!(
        read.last(),
        written.last().map(|w| &w.0),
        "records after the damage are"
    );
}

#[test]
fn a_clean_close_inside_a_recycled_segment_is_no_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(8, SyncMode::Never);
    let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
    let segment = cfg.geometry.segment_size_bytes;
    while wal.end_lsn().get() < 3 * segment {
        wal.append(&spec(1), &[&[7u8; 700]]).unwrap();
    }
    wal.sync().unwrap();
    wal.release_before(Lsn(2 * segment)).unwrap();
    // Segments 0 and 1 are recycled as segments 4 and 5; stop inside the first of them.
    while wal.end_lsn().get() < 4 * segment + 2 * u64::from(PAGE) {
        wal.append(&spec(2), &[&[8u8; 700]]).unwrap();
    }
    wal.close().unwrap();
    let (_, report) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
    assert!(
        report.torn_tail.is_none(),
        "stale pages of a recycled segment are a clean end: {report}"
    );
}

#[test]
fn a_scan_start_inside_a_page_or_segment_header_is_corruption_not_a_panic() {
    // Found by the recovery fuzz target: a CONTROL file whose (re-checksummed) checkpoint LSN
    // pointed into a page header made the scan decode there and trip an assertion.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(8, SyncMode::Never);
    let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
    let mut lsns = Vec::new();
    for txn in 0..200 {
        lsns.push(wal.append(&spec(txn), &[&[txn as u8; 100]]).unwrap());
    }
    wal.close().unwrap();
    let page = u64::from(PAGE);
    let segment = cfg.geometry.segment_size_bytes;
    for bad in [8, page - 8, segment + 8, segment + page + 8, segment + 2 * page + 16] {
        for mode in [
            RecoveryMode::Strict,
            RecoveryMode::TolerateTornTail,
            RecoveryMode::SkipCorrupted,
        ] {
            let error = Wal::open(storage(), dir.path(), cfg.clone(), Some(Lsn(bad)), mode)
                .map(|_| ())
                .expect_err(&format!("start {bad} in {mode:?} is inside a header"));
            assert!(
                matches!(error, Error::Corrupted { .. }),
                "start {bad} in {mode:?}: {error}"
            );
        }
    }
    for from in [lsns[0], lsns[150]] {
        Wal::open(storage(), dir.path(), cfg.clone(), Some(from), RecoveryMode::Strict)
            .unwrap_or_else(|e| panic!("start {from}: {e}"));
    }
}

#[test]
fn a_new_logs_first_segment_is_zero_filled_for_small_commits() {
    let sim = vellum::storage::SimStorage::new(11);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let config = WalConfig {
        // No preallocator: the only spare made is the one the first segment comes from.
        background: false,
        ..config(64, SyncMode::Always)
    };
    let wal = Wal::create(storage, Path::new("/wal"), config).unwrap();
    assert!(
        sim.written_bytes() >= u64::from(PAGE) * 64,
        "every block of segment 0 written: a new store's small commits must not pay for extent \
         conversions at their syncs ({} bytes written)",
        sim.written_bytes()
    );
    wal.close().unwrap();
}

/// The larger horizon `EPOCH` holds in `dir` (the second slot is at byte 512).
fn durable_horizon(dir: &Path) -> u64 {
    let bytes = std::fs::read(dir.join("EPOCH")).unwrap();
    assert_eq!(bytes.len(), 560, "two slots of 48 bytes, the second at 512");
    [0usize, 512]
        .map(|at| u64::from_le_bytes(bytes[at + 32..at + 40].try_into().unwrap()))
        .into_iter()
        .max()
        .unwrap()
}

#[test]
fn with_background_threads_the_horizon_moves_on_before_a_commit_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(1024, SyncMode::Always);
    assert!(cfg.background, "the preallocator moves it");
    let wal = Wal::create(storage(), dir.path(), cfg).unwrap();
    let first = durable_horizon(dir.path());
    // Commits up to three quarters of the way to the first horizon (256 KiB past the start):
    // none of them has to move it, and the flushes past half the way ask the preallocator to.
    let mut end = 0;
    let mut i = 0u64;
    while end + (1 << 16) < first {
        let (lsn, record_end) = wal.append_with_end(&spec(i), &[&[i as u8 | 1; 1000]]).unwrap();
        wal.commit(lsn).unwrap();
        end = record_end;
        i += 1;
    }
    let waited = std::time::Instant::now();
    while durable_horizon(dir.path()) == first {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(10),
            "{i} commits ending at {end}, three quarters of the way to the horizon {first}: the \
             horizon never moved on ahead of them"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let moved = durable_horizon(dir.path());
    assert!(
        moved > first + (1 << 17),
        "at least half a step (128 KiB) further on: {moved} from {first}"
    );
    wal.close().unwrap();
}

#[test]
fn no_log_byte_is_written_at_or_past_the_horizon_the_epoch_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(64, SyncMode::Always);
    let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
    let read_horizon = || durable_horizon(dir.path());
    let first = read_horizon();
    let mut end = 0;
    for i in 0..3_000u64 {
        let (lsn, record_end) = wal.append_with_end(&spec(i), &[&[i as u8 | 1; 1000]]).unwrap();
        wal.commit(lsn).unwrap();
        end = record_end;
        let horizon = read_horizon();
        assert!(
            end <= horizon,
            "record {i} ends at {end}, past the durable horizon {horizon}"
        );
    }
    let horizon = read_horizon();
    assert!(horizon > first, "3 MB of log moved the horizon past its first, {first}");
    assert!(
        horizon <= end + u64::from(PAGE) + (1 << 20),
        "the horizon stays within a page and 1 MiB of the end: {horizon} for {end}"
    );
    // Every byte of the segment files at or past the horizon is as the spare was made: zero.
    let segment_bytes = u64::from(PAGE) * 64;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(hex) = name.strip_suffix(".wal") else { continue };
        let base = u64::from_str_radix(hex, 16).unwrap() * segment_bytes;
        let bytes = std::fs::read(dir.path().join(&name)).unwrap();
        let from = horizon.saturating_sub(base).min(segment_bytes) as usize;
        assert!(
            bytes[from..].iter().all(|&b| b == 0),
            "{name} holds bytes at or past the horizon {horizon}"
        );
    }
    wal.close().unwrap();
}

#[test]
fn a_bulk_load_moves_the_horizon_by_growing_steps_and_never_writes_past_it() {
    // Commits of 1 MiB each (256 records of 4 KiB): a fixed step of 256 KiB moved the horizon
    // (an EPOCH write and fdatasync) four times a commit. With and without the preallocator,
    // which moves it ahead of need in the first case and not at all in the second.
    const COMMITS: u64 = 32;
    for background in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(1024, SyncMode::Always);
        cfg.background = background;
        let wal = Wal::create(storage(), dir.path(), cfg).unwrap();
        let mut end = 0;
        for commit in 0..COMMITS {
            let mut last = Lsn(0);
            for i in 0..256u64 {
                let (lsn, record_end) = wal
                    .append_with_end(&spec(commit * 256 + i), &[&[commit as u8 | 1; 4096]])
                    .unwrap();
                (last, end) = (lsn, record_end);
            }
            wal.commit(last).unwrap();
            let horizon = durable_horizon(dir.path());
            assert!(
                end <= horizon,
                "background {background}: commit {commit} ends at {end}, past the horizon {horizon}"
            );
        }
        let moves = wal.commit_stats().horizon_moves;
        let fixed_step_moves = COMMITS * (1 << 20) / (256 << 10);
        assert!(
            moves > 0 && moves * 3 < fixed_step_moves,
            "background {background}: {moves} moves for {COMMITS} MiB, where a fixed step of 256 KiB makes {fixed_step_moves}"
        );
        let horizon = durable_horizon(dir.path());
        assert!(
            horizon - end <= (4 << 20) + 2 * u64::from(PAGE),
            "background {background}: the horizon {horizon} lies at most a 4 MiB step and a page past the end {end}"
        );
        wal.close().unwrap();
    }
}

/// True if files under `dir` can be opened for direct I/O (tmpfs cannot).
fn direct_io_works(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("direct-probe");
    std::fs::write(&probe, [0u8; 4096]).unwrap();
    let works = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    std::fs::remove_file(&probe).unwrap();
    works
}

#[test]
fn durable_commits_written_past_the_page_cache_reopen_byte_for_byte() {
    // Under the target directory: a real disk where the system's temporary directory may be
    // tmpfs, which has no direct I/O.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let direct_expected = direct_io_works(dir.path());
    let cfg = config(64, SyncMode::Always);
    let mut rng = Rng::new(seed_from_env("VELLUM_TEST_SEED", 11));
    let mut expected = Vec::new();
    let mut wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
    let mut direct_flushes = 0;
    for round in 0..4u64 {
        for i in 0..300u64 {
            // Mostly small commits (direct), some of several records, some too large for a
            // direct flush, which go through the cache between direct ones.
            let records = 1 + rng.below(3) * u64::from(rng.below(4) == 0);
            let mut last = Lsn(0);
            for r in 0..records {
                let size = match rng.below(20) {
                    0 => 70_000 + rng.below(30_000) as usize,
                    1 => 0,
                    _ => 1 + rng.below(3000) as usize,
                };
                let txn = round * 10_000 + i * 10 + r;
                let payload: Vec<u8> = (0..size).map(|b| (b as u64 * 131 + txn) as u8).collect();
                last = wal.append(&spec(txn), &[&payload]).unwrap();
                expected.push((last, txn, payload));
            }
            wal.commit(last).unwrap();
        }
        direct_flushes += wal.commit_stats().direct_flushes;
        // Reopen: the log ends mid-block, a block the new open has not written.
        wal.close().unwrap();
        let (reopened, _) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
        assert!(
            read_all(&reopened) == expected,
            "round {round}: every record reads back as appended"
        );
        wal = reopened;
    }
    assert_eq!(
        direct_flushes > 1000,
        direct_expected,
        "small durable commits go past the cache exactly where the file system has direct I/O \
         ({direct_flushes} direct flushes)"
    );
}

#[test]
fn a_direct_flush_after_bytes_written_through_the_cache_loses_no_commit_at_a_crash() {
    // Write-outs every 4 KiB put a commit's first records in the page cache before its small
    // flush: the flush must sync them, not only write its own bytes durably past the cache.
    let base = seed_from_env("VELLUM_TEST_SEED", 23);
    let mut direct_flushes = 0;
    for seed in base..base + 60 {
        let sim = vellum::storage::SimStorage::with_config(vellum::storage::SimConfig {
            seed,
            direct_io: true,
            ..Default::default()
        });
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let cfg = WalConfig {
            background: false,
            write_out_bytes: 4096,
            ..config(64, SyncMode::Always)
        };
        let wal = Wal::create(storage, Path::new("/wal"), cfg.clone()).unwrap();
        let mut rng = Rng::new(seed);
        let mut committed = Vec::new();
        for commit in 0..20 + rng.below(40) {
            let mut group = Vec::new();
            for r in 0..1 + rng.below(4) {
                let txn = commit * 10 + r;
                let payload = vec![txn as u8 | 1; 100 + rng.below(3000) as usize];
                group.push((wal.append(&spec(txn), &[&payload]).unwrap(), txn, payload));
            }
            wal.commit(group.last().unwrap().0).unwrap();
            committed.extend(group);
        }
        direct_flushes += wal.commit_stats().direct_flushes;
        sim.crash_now();
        drop(wal);
        let rebooted: Arc<dyn Storage> = Arc::new(sim.reboot());
        let (reopened, _) = Wal::open(rebooted, Path::new("/wal"), cfg, None, RecoveryMode::TolerateTornTail)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let read = read_all(&reopened);
        assert!(
            read.len() >= committed.len() && read[..committed.len()] == committed[..],
            "seed {seed}: every committed record survives the crash ({} of {} read)",
            read.len(),
            committed.len()
        );
    }
    assert!(direct_flushes > 100, "the flushes went direct ({direct_flushes})");
}

#[test]
fn crashes_during_bulk_commits_with_a_grown_horizon_lose_no_committed_record_over_three_epochs() {
    // Bulk commits (512 KiB each) grow the horizon's step to 4 MiB, as long as a whole segment
    // here: each epoch crashes at a random operation, the next recovers (its look-ahead and
    // repair reach one step past the end, into later segments), checks every acknowledged
    // record, and commits small records before its own crash.
    let base = seed_from_env("VELLUM_TEST_SEED", 41);
    println!("seeds {base}.. (VELLUM_TEST_SEED replays)");
    let mut grown = 0;
    for seed in base..base + 12 {
        let mut sim = vellum::storage::SimStorage::new(seed);
        let cfg = WalConfig {
            background: false,
            ..config(1024, SyncMode::Always)
        };
        let mut rng = Rng::new(seed);
        let mut acknowledged: Vec<(Lsn, u64, Vec<u8>)> = Vec::new();
        let mut wal = Wal::create(Arc::new(sim.clone()), Path::new("/wal"), cfg.clone()).unwrap();
        for epoch in 0..3u64 {
            let (commits, records, bytes) = if epoch == 1 { (40, 1, 900) } else { (24, 32, 16 << 10) };
            sim.crash_after_ops(sim.mutating_ops() + 20 + rng.below(600));
            let start = wal.end_lsn();
            'load: for commit in 0..commits {
                let mut group = Vec::new();
                for r in 0..records {
                    let txn = (epoch << 32) | (commit << 8) | r;
                    let payload = vec![txn as u8 | 1; bytes];
                    let Ok(lsn) = wal.append(&spec(txn), &[&payload]) else {
                        break 'load;
                    };
                    group.push((lsn, txn, payload));
                }
                if wal.commit(group.last().unwrap().0).is_err() {
                    break;
                }
                acknowledged.extend(group);
            }
            // A fixed step of 256 KiB makes one move per 256 KiB appended.
            let appended = wal.end_lsn().get() - start.get();
            let moves = wal.commit_stats().horizon_moves;
            if appended > 4 << 20 && moves * 3 < appended / (256 << 10) {
                grown += 1;
            }
            sim.crash_now();
            drop(wal);
            sim = sim.reboot();
            let (reopened, _) = Wal::open(
                Arc::new(sim.clone()),
                Path::new("/wal"),
                cfg.clone(),
                None,
                RecoveryMode::TolerateTornTail,
            )
            .unwrap_or_else(|e| panic!("seed {seed}, epoch {epoch}: {e}"));
            let read = read_all(&reopened);
            assert!(
                read.len() >= acknowledged.len() && read[..acknowledged.len()] == acknowledged[..],
                "seed {seed}, epoch {epoch}: every acknowledged record survives the crash ({} read, {} acknowledged)",
                read.len(),
                acknowledged.len()
            );
            // What the crash left beyond them was never acknowledged: the next epoch goes on
            // from all that was read.
            acknowledged = read;
            wal = reopened;
        }
    }
    assert!(
        grown > 0,
        "some epochs appended over 4 MiB with grown steps of the horizon"
    );
}

/// The `.wal` files in `dir` (spares are `spare-*`).
fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

/// Appends 1 KiB records until the end lies at or past `offset` bytes into segment 0.
fn fill_to(wal: &Wal, offset: u64) {
    let payload = vec![7u8; 1024];
    while wal.end_lsn().get() < offset {
        let lsn = wal.append(&spec(1), &[&payload]).unwrap();
        wal.commit(lsn).unwrap();
    }
}

/// Waits (up to 5 s) for the preallocator to install segment 1 ahead of the end.
fn wait_for_segment_1(dir: &Path) {
    let start = std::time::Instant::now();
    while !segment_file(dir, 1).exists() {
        assert!(
            start.elapsed().as_secs() < 5,
            "the preallocator installs the next segment once the end is half-way"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_clean_close_gives_back_the_segment_installed_ahead_unless_the_end_is_in_the_last_page() {
    // The preallocator installs segment n + 1 once the end is half-way through segment n. A
    // clean close (`finish`) takes it back, so a closed store holds the same files wherever its
    // end fell; but not when the end lies in the last page: the successor rule wants it then.
    let segment_bytes = u64::from(PAGE) * 64;
    for (end_at, kept) in [(segment_bytes * 3 / 4, 1), (segment_bytes - u64::from(PAGE) + 512, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(64, SyncMode::Always);
        let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
        fill_to(&wal, end_at);
        wait_for_segment_1(dir.path());
        let end = wal.end_lsn();
        wal.finish().unwrap();
        drop(wal);
        assert_eq!(
            segment_files(dir.path()).len(),
            kept,
            "end at {end}: segments {:?}",
            segment_files(dir.path())
        );
        let (reopened, report) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
        assert_eq!(reopened.end_lsn(), end, "the log ends where it did: {report}");
        // And it goes on past the segment it took back.
        fill_to(&reopened, segment_bytes + 4 * u64::from(PAGE));
        reopened.close().unwrap();
        let (reopened, _) = open(dir.path(), &cfg, RecoveryMode::Strict).unwrap();
        assert!(
            reopened.end_lsn().get() >= segment_bytes + 4 * u64::from(PAGE),
            "the log grew into segment 1"
        );
    }
}

#[test]
fn a_read_beside_the_writer_ends_with_the_segments_it_listed_where_any_other_open_refuses_the_missing_one() {
    // A reader beside a running writer (`verify`) lists the segments, then the writer goes on
    // into a segment made after the listing: a record that runs on past the last listed
    // segment is then the writer's tail, not a missing file. Any other open keeps the
    // successor rule and refuses it.
    let dir = scratch_dir();
    let cfg = WalConfig {
        required_files: true,
        background: false,
        ..config(16, SyncMode::Never)
    };
    let segment_bytes = 16 * u64::from(PAGE);
    let wal = Wal::create(storage(), dir.path(), cfg.clone()).unwrap();
    let mut last = None;
    for i in 0.. {
        let (lsn, end) = wal.append_with_end(&spec(i), &[&[i as u8 | 1; 3000]]).unwrap();
        wal.commit(lsn).unwrap();
        if end > segment_bytes {
            last = Some(lsn);
            break;
        }
    }
    wal.close().unwrap();
    let runs_on = last.expect("a record runs past segment 0");
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wal") && path != segment_file(dir.path(), 0) {
            std::fs::remove_file(path).unwrap();
        }
    }
    let refused = Wal::open_read_only(storage(), dir.path(), cfg.clone(), None, RecoveryMode::Strict);
    assert!(
        matches!(&refused, Err(Error::Corrupted { reason, .. }) if reason.contains("is missing")),
        "a reader that is not beside a writer refuses the missing successor: {:?}",
        refused.as_ref().err()
    );
    let beside = WalConfig {
        beside_writer: true,
        ..cfg
    };
    let (wal, scan) = Wal::open_read_only(storage(), dir.path(), beside, None, RecoveryMode::Strict)
        .unwrap_or_else(|e| panic!("beside a writer, the listed segments end the read: {e}"));
    assert!(
        scan.end_lsn <= runs_on,
        "the read ends before the record that runs on ({:?} against {runs_on:?})",
        scan.end_lsn
    );
    assert!(!read_all(&wal).is_empty(), "the records of the listed segment are read");
}
