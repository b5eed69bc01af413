//! Durable single-row writes from many threads at once (src/store/combine.rs): each thread gets
//! its own row's result, refused rows fail alone, and the rows share log flushes.

use std::path::Path;
use std::sync::Barrier;

use vellum::{Error, Options, Store, SyncMode};

const WRITERS: usize = 4;
const PER_WRITER: usize = 150;

fn vector_of(writer: usize, seq: usize) -> Vec<f32> {
    vec![(writer * 1000 + seq) as f32, 1.0, -1.0, 0.5]
}

fn open(dir: &Path) -> Store {
    let options = Options {
        sync: SyncMode::Always,
        ..Options::default()
    };
    Store::open(dir, options).unwrap()
}

#[test]
fn concurrent_single_row_writes_each_get_their_own_result_and_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: SyncMode::Always,
        ..Options::default()
    };
    Store::create(dir.path(), 4, options).unwrap().close().unwrap();
    let store = open(dir.path());
    let before = store.log_info();
    let start = Barrier::new(WRITERS);
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let (store, start) = (&store, &start);
            scope.spawn(move || {
                start.wait();
                for seq in 0..PER_WRITER {
                    let id = format!("w{writer}-{seq}");
                    let lsn = store.insert(&id, &vector_of(writer, seq), &[("writer", "x")]);
                    assert!(lsn.is_ok(), "{id}: a fresh id is inserted ({lsn:?})");
                    assert!(store.durable_lsn() > lsn.unwrap(), "{id}: durable when insert returns");
                    if seq % 10 == 0 {
                        // Its own id again: refused alone, whatever shares its round.
                        let again = store.insert(&id, &vector_of(writer, seq), &[]);
                        let refused = matches!(again, Err(Error::AlreadyExists));
                        assert!(refused, "{id} again: refused ({again:?})");
                        // An id every writer upserts: each upsert commits, one of them stays.
                        let shared = format!("shared-{seq}");
                        let upserted = store.upsert(&shared, &vector_of(writer, seq), &[]);
                        assert!(upserted.is_ok(), "{shared}: an upsert commits ({upserted:?})");
                    }
                }
            });
        }
    });
    let after = store.log_info();
    let commits = after.commits - before.commits;
    let syncs = after.log_syncs - before.log_syncs;
    eprintln!("{commits} commits, {syncs} log syncs");
    assert!(
        syncs < commits,
        "concurrent single-row writes share log flushes ({syncs} for {commits} commits)"
    );
    let rows = WRITERS * PER_WRITER + PER_WRITER.div_ceil(10);
    assert_eq!(store.len(), rows, "every inserted row once, and each shared id once");
    store.close().unwrap();
    let store = open(dir.path());
    assert_eq!(store.len(), rows, "all of them after a reopen");
    for writer in 0..WRITERS {
        let id = format!("w{writer}-1");
        let found = store.get(&id).unwrap();
        assert!(
            found.as_deref() == Some(&vector_of(writer, 1)[..]),
            "{id} holds its writer's vector"
        );
    }
    store.close().unwrap();
}
