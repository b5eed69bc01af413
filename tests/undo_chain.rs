//! Undo follows a loser's chain backwards (FORMAT.md §17.3, step 5). A clr whose `undo_next`
//! is not below its own LSN is well-formed bytes (its CRC matches) but would send undo back to
//! the same record forever: recovery must refuse it as damage instead of looping.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use vellum::format::record;
use vellum::storage::RealStorage;
use vellum::store::control_file::ControlFile;
use vellum::wal::{Geometry, LogIdentity, RecordSpec, Wal, WalConfig};
use vellum::{Error, Lsn, Options, RecoveryMode, Store, SyncMode};

const PAGE: u32 = 4096;

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// Where the writer will put the next record of a small payload, from the end of the log.
fn next_record_start(end: u64, page: u64) -> u64 {
    let mut at = (end + 7) & !7;
    if at.is_multiple_of(page) {
        at += 32;
    }
    if page - at % page < 56 {
        at = at - at % page + page + 32;
    }
    at
}

#[test]
fn recovery_refuses_a_clr_whose_undo_next_does_not_move_backwards() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let options = Options {
        page_size_bytes: PAGE,
        segment_size_bytes: 64 * u64::from(PAGE),
        sync: SyncMode::Always,
        background_io: false,
        archive: false,
        ..Default::default()
    };
    let store = Store::create(&dir, 4, options.clone()).unwrap();
    let mut tx = store.begin().unwrap();
    tx.upsert("loser", &[1.0, 2.0, 3.0, 4.0], &[]).unwrap();
    store.sync().unwrap();
    // A crash with the transaction open: the copy is what the disk holds (and its LOCK is free).
    let crashed = tmp.path().join("crashed");
    copy_dir(&dir, &crashed);
    std::mem::forget(tx);
    std::mem::forget(store);

    let (_, control) = ControlFile::open(&RealStorage::new(), &crashed).unwrap();
    let config = WalConfig::new(
        Geometry::new(control.page_size_bytes, control.segment_size_bytes).unwrap(),
        LogIdentity {
            store_id: control.store_id,
            timeline: control.timeline,
        },
        SyncMode::Never,
    );
    let (wal, _) = Wal::open(
        Arc::new(RealStorage::new()),
        &crashed.join("wal"),
        config,
        None,
        RecoveryMode::TolerateTornTail,
    )
    .unwrap();
    let (update_lsn, txn) = {
        let mut reader = wal.reader_from_start();
        let mut last = None;
        while let Some(r) = reader.next_record().unwrap() {
            if r.header.kind == record::Kind::Update as u8 {
                last = Some((r.lsn, r.header.txn_id.get()));
            }
        }
        last.expect("the loser's update is in the log")
    };
    let at = next_record_start(wal.end_lsn().0, u64::from(PAGE));
    let clr = record::encode_clr(Lsn(at), &[]);
    let spec = RecordSpec {
        kind: record::Kind::Clr as u8,
        flags: 0,
        txn_id: txn,
        prev_lsn: update_lsn.0,
        timestamp_us: 1,
    };
    let lsn = wal.append(&spec, &[&clr]).unwrap();
    assert_eq!(lsn.0, at, "the clr was placed where its undo_next points");
    wal.sync().unwrap();
    wal.close().unwrap();

    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(Store::open(&crashed, options).map(|_| ()));
    });
    let outcome = result
        .recv_timeout(Duration::from_secs(30))
        .expect("recovery finishes instead of looping over a clr that points at itself");
    let error = outcome.expect_err("a clr whose undo_next is its own LSN is damage");
    assert!(matches!(error, Error::Corrupted { .. }), "damage, not {error}");
}
