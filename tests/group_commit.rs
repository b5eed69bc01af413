//! Group commit with concurrent committers, on the crash simulator: four threads each commit one
//! insert at a time with `SyncMode::Always` on a disk whose log fdatasyncs are slow, so the
//! committers that arrive while a flush runs must share the next one. The disk crashes under
//! them, at a seeded point (and with a seeded choice of which unsynced sectors it keeps); then
//! every commit acknowledged before the crash must be in the recovered store.
//!
//! `VELLUM_GROUP_SEED=S` replays the crash's seed (the threads' interleaving is the scheduler's).

mod support;

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::Rng;
use vellum::storage::{Mapping, SimStorage, Storage, StorageFile};
use vellum::{Options, RecoveryMode, Store, SyncMode};

const DIMENSION: usize = 8;
const WRITERS: usize = 4;
/// Inserts each writer tries before the crash stops it.
const PER_WRITER: usize = 60;
/// How long a log segment's `sync_data` takes: long beside a commit's CPU work, as on a disk.
const LOG_SYNC_DELAY: Duration = Duration::from_millis(2);

/// The simulator behind log fdatasyncs that take [`LOG_SYNC_DELAY`], counted.
#[derive(Debug)]
struct SlowLogSyncs {
    sim: SimStorage,
    log_syncs: Arc<AtomicU64>,
}

/// A log segment: `<digits>.wal` in `wal/` (spares are `spare-*` until renamed and reopened).
fn is_log_segment(path: &Path) -> bool {
    let in_wal = path.parent().and_then(Path::file_name).is_some_and(|d| d == "wal");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    in_wal
        && name
            .strip_suffix(".wal")
            .is_some_and(|stem| !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Storage for SlowLogSyncs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.sim.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.sim.open(path, create)?;
        if !is_log_segment(path) {
            return Ok(inner);
        }
        Ok(Arc::new(SlowFile {
            inner,
            log_syncs: self.log_syncs.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.sim.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.sim.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.sim.remove_dir(path)
    }
    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        self.sim.list(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.sim.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.sim.exists(path)
    }
}

#[derive(Debug)]
struct SlowFile {
    inner: Arc<dyn StorageFile>,
    log_syncs: Arc<AtomicU64>,
}

impl StorageFile for SlowFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.inner.set_len(len_bytes)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(LOG_SYNC_DELAY);
        self.log_syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync_data()
    }
    fn allocate(&self, len_bytes: u64) -> io::Result<bool> {
        self.inner.allocate(len_bytes)
    }
    fn map_shared(&self) -> io::Result<Mapping> {
        self.inner.map_shared()
    }
    fn map_private(&self) -> io::Result<Mapping> {
        self.inner.map_private()
    }
}

fn options(storage: Arc<dyn Storage>, background_io: bool) -> Options {
    Options {
        sync: SyncMode::Always,
        recovery: RecoveryMode::TolerateTornTail,
        page_size_bytes: 4096,
        segment_size_bytes: 4096 * 64,
        storage,
        background_io,
        ..Options::default()
    }
}

fn vector_of(writer: usize, seq: usize) -> Vec<f32> {
    vec![(writer * 1000 + seq) as f32; DIMENSION]
}

/// What the writers did before the crash stopped them.
struct Run {
    /// Ids whose commit returned `Ok`.
    acknowledged: BTreeSet<String>,
    /// Ids whose insert was tried (acknowledged or not).
    tried: BTreeSet<String>,
    commits: u64,
    log_syncs_counted_by_store: u64,
    log_syncs_counted_by_disk: u64,
}

/// Counts a writer thread out when it ends, however it ends.
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Four writers commit one insert at a time until the disk crashes after `crash_after`
/// acknowledged commits (or they run out of inserts).
fn run_writers(sim: &SimStorage, background_io: bool, crash_after: usize) -> Run {
    let log_syncs = Arc::new(AtomicU64::new(0));
    let storage = Arc::new(SlowLogSyncs {
        sim: sim.clone(),
        log_syncs: log_syncs.clone(),
    });
    let store = Store::create(Path::new("/db"), DIMENSION as u32, options(storage, background_io)).unwrap();
    let (acked, finished) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let acknowledged = Mutex::new(BTreeSet::new());
    let tried = Mutex::new(BTreeSet::new());
    let before = store.log_info();
    let stats = std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let (store, acked, acknowledged, tried) = (&store, &acked, &acknowledged, &tried);
            let finished = &finished;
            scope.spawn(move || {
                let _done = Finished(finished);
                for seq in 0..PER_WRITER {
                    let id = format!("w{writer}-{seq}");
                    tried.lock().unwrap().insert(id.clone());
                    if store.insert(&id, &vector_of(writer, seq), &[]).is_err() {
                        return; // The disk crashed.
                    }
                    acknowledged.lock().unwrap().insert(id);
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // The crash comes while the writers run (or when they are done).
        while acked.load(Ordering::SeqCst) < crash_after && finished.load(Ordering::SeqCst) < WRITERS {
            std::thread::sleep(Duration::from_micros(200));
        }
        let stats = store.log_info();
        sim.crash_now();
        stats
    });
    drop(store);
    Run {
        acknowledged: acknowledged.into_inner().unwrap(),
        tried: tried.into_inner().unwrap(),
        commits: stats.commits - before.commits,
        log_syncs_counted_by_store: stats.log_syncs - before.log_syncs,
        log_syncs_counted_by_disk: log_syncs.load(Ordering::Relaxed),
    }
}

#[test]
fn concurrent_committers_share_fdatasyncs_and_every_acknowledged_commit_survives_a_crash() {
    let seed = support::seed_from_env("VELLUM_GROUP_SEED", 18);
    let mut rng = Rng::new(seed);
    for background_io in [false, true] {
        let sim = SimStorage::new(rng.next_u64());
        let crash_after = WRITERS * PER_WRITER / 2 + rng.below((WRITERS * PER_WRITER / 2) as u64) as usize;
        let run = run_writers(&sim, background_io, crash_after);
        let what = format!("background_io {background_io}, crash after {crash_after} acknowledged commits");
        eprintln!(
            "{what}: {} commits, {} log fdatasyncs (store), {} (disk)",
            run.commits, run.log_syncs_counted_by_store, run.log_syncs_counted_by_disk
        );
        assert!(
            run.commits >= crash_after as u64,
            "{what}: the store counts every acknowledged commit ({} counted)",
            run.commits
        );
        assert!(
            run.log_syncs_counted_by_store < run.commits,
            "{what}: concurrent committers share fdatasyncs ({} for {} commits)",
            run.log_syncs_counted_by_store,
            run.commits
        );
        assert!(
            run.log_syncs_counted_by_disk < run.commits,
            "{what}: the disk saw fewer log fdatasyncs ({}) than commits ({})",
            run.log_syncs_counted_by_disk,
            run.commits
        );
        let disk = sim.reboot();
        let store = Store::open(Path::new("/db"), options(Arc::new(disk), false))
            .unwrap_or_else(|e| panic!("{what}: recovery failed: {e} (seed {seed})"));
        for id in &run.acknowledged {
            let (writer, seq) = id[1..].split_once('-').unwrap();
            let expected = vector_of(writer.parse().unwrap(), seq.parse().unwrap());
            let found = store.get(id).unwrap();
            assert!(
                found.as_deref() == Some(&expected[..]),
                "{what}: acknowledged commit {id} survives the crash (seed {seed})"
            );
        }
        let present = store.len();
        assert!(
            present >= run.acknowledged.len() && present <= run.tried.len(),
            "{what}: {present} ids after recovery: every acknowledged one ({}), none never tried ({})",
            run.acknowledged.len(),
            run.tried.len()
        );
        store.close().unwrap();
    }
}
