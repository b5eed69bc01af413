//! Memory claims, measured: archiving never holds a whole arena in memory; writing a store
//! many times larger than the memory budget keeps anonymous memory within it.
//!
//! This binary counts every heap allocation (a global allocator that wraps the system one) and
//! records the peak of live heap bytes over a window. Mapped arena pages are not heap: what is
//! measured is what base images and restores allocate on top of the store. The budget is
//! measured as the process's `RssAnon` (`/proc/self/status`): private copies of arena pages
//! and the heap together. The tests run one at a time (`ONE_AT_A_TIME`), as one's memory
//! would show in the other's measure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use std::io;
use std::path::Path;

use vellum::storage::{Mapping, RealStorage, SimStorage, Storage, StorageFile};
use vellum::{Options, RestoreTarget, Retention, Store, SyncMode, restore};

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator with the same arguments; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (the caller upholds `alloc`'s contract).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (the caller upholds `dealloc`'s contract).
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`; returns the peak of live heap bytes during it, above what was live before.
fn peak_growth_bytes(f: impl FnOnce()) -> usize {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(before, Ordering::Relaxed);
    f();
    PEAK_BYTES.load(Ordering::Relaxed).saturating_sub(before)
}

const MIB: usize = 1 << 20;

/// Held by every test of this binary: each measures the whole process.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn base_images_and_restores_hold_a_bounded_share_of_the_arena_in_memory() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let options = Options {
        sync: SyncMode::Never,
        segment_size_bytes: 8 << 20,
        checkpoint_interval_bytes: 0,
        base_image_every: 1,
        retention: Retention::KeepLast(1),
        ..Options::default()
    };
    // 4 KiB vectors: 16,384 of them fill 64 MiB of vector pages while the id index stays
    // small (a few MiB), so the arena dominates anything a whole-arena copy would allocate.
    let dimension = 1024;
    let store = Store::create(&src, dimension, options.clone()).unwrap();
    let mut vector = vec![0f32; dimension as usize];
    for batch in 0..16 {
        let mut tx = store.begin().unwrap();
        for i in 0..1024 {
            let n = batch * 1024 + i;
            for (j, x) in vector.iter_mut().enumerate() {
                *x = ((n * 31 + j * 7) % 1000) as f32 / 1000.0 - 0.5;
            }
            tx.insert(&format!("v{n}"), &vector, &[]).unwrap();
        }
        tx.commit().unwrap();
    }
    // Only the arena's page files: the store is open, and a file it is making (`.pages.tmp`,
    // the doublewrite area's replacement) may be renamed between the listing and its `stat`.
    let arena_bytes: u64 = std::fs::read_dir(src.join("arena"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pages"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(arena_bytes >= 64 * MIB as u64, "the arena holds {arena_bytes} bytes");

    let checkpoint_peak = peak_growth_bytes(|| {
        store.checkpoint().unwrap();
    });
    store.close().unwrap();
    let dest = root.path().join("dest");
    let restore_peak = peak_growth_bytes(|| {
        restore(&src, &dest, RestoreTarget::Latest).unwrap();
    });
    println!(
        "arena {} MiB; heap peak above the store: checkpoint with a base image {} MiB, restore {} MiB",
        arena_bytes >> 20,
        checkpoint_peak >> 20,
        restore_peak >> 20
    );
    // A checkpoint the caller waits for compresses on a thread per core, up to 8 (8 MiB read
    // and its compressed form each: 32 MiB with the 2 cores of CI); the restore compresses the
    // new history's base image on up to 8 threads (16 MiB each at most) and rebuilds a
    // 16,384-entry index. A copy of the arena alone would be its whole size (96 MiB of files here).
    let compress_threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let round_max = compress_threads * 16 * MIB;
    assert!(
        checkpoint_peak < round_max,
        "a base image holds at most a round of runs ({round_max} bytes), not the {arena_bytes}-byte arena: {checkpoint_peak} bytes"
    );
    assert!(
        restore_peak < 8 * 16 * MIB + 16 * MIB && restore_peak < arena_bytes as usize,
        "a restore decodes and encodes base images a block at a time: {restore_peak} bytes"
    );
    let restored = Store::open(&dest, options).unwrap();
    assert_eq!(restored.len(), 16 * 1024, "every vector is restored");
}

/// The process's anonymous memory in bytes (`RssAnon` of `/proc/self/status`).
fn rss_anon_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("RssAnon:"))
        .expect("a Linux kernel reports RssAnon");
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Samples `RssAnon` every few milliseconds until dropped; `peak_bytes` is the highest seen.
struct RssSampler {
    peak: std::sync::Arc<AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let peak = std::sync::Arc::new(AtomicUsize::new(rss_anon_bytes()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_anon_bytes(), Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            })
        };
        RssSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak_bytes(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.peak.load(Ordering::Relaxed).max(rss_anon_bytes())
    }
}

/// The real file system, with every write to an arena file 1 ms slower (at most 16 MB/s of
/// 16 KiB pages): the checkpointer falls behind a writer that waits for no flush.
#[derive(Debug)]
struct SlowArenaWrites(RealStorage);

#[derive(Debug)]
struct SlowFile {
    file: std::sync::Arc<dyn StorageFile>,
    slow: bool,
}

impl Storage for SlowArenaWrites {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.0.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<std::sync::Arc<dyn StorageFile>> {
        let file = self.0.open(path, create)?;
        let slow = path.parent().is_some_and(|dir| dir.ends_with("arena"));
        Ok(std::sync::Arc::new(SlowFile { file, slow }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.0.remove_dir(path)
    }
    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        self.0.list(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.0.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.exists(path)
    }
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.0.lock_exclusive(path)
    }
    fn available_bytes(&self, path: &Path) -> io::Result<Option<u64>> {
        self.0.available_bytes(path)
    }
}

impl StorageFile for SlowFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.slow {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.file.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        self.file.start_writeback(offset, len)
    }
    fn allocate(&self, len_bytes: u64) -> io::Result<bool> {
        self.file.allocate(len_bytes)
    }
    fn map_shared(&self) -> io::Result<Mapping> {
        self.file.map_shared()
    }
    fn map_private(&self) -> io::Result<Mapping> {
        self.file.map_private()
    }
}

/// Vector `n` of `dimension`: every component differs with `n` and its position, in all 32
/// bits, so a stale or zeroed page reads back wrong.
fn vector_for(n: u64, dimension: usize, out: &mut [f32]) {
    assert_eq!(out.len(), dimension);
    for (j, x) in out.iter_mut().enumerate() {
        let mut h = (n << 16 | j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        *x = f32::from_bits((h as u32 & 0x3FFF_FFFF) | 0x3000_0000);
    }
}

/// Inserts vectors `0..count` in transactions of `batch`.
fn load(store: &Store, count: u64, batch: u64) {
    let mut vector = vec![0f32; store.dimension()];
    let mut n = 0;
    while n < count {
        let mut tx = store.begin().unwrap();
        for _ in 0..batch.min(count - n) {
            vector_for(n, vector.len(), &mut vector);
            tx.insert(&format!("v{n}"), &vector, &[]).unwrap();
            n += 1;
        }
        tx.commit().unwrap();
    }
}

/// Checks that every vector `0..count` reads back bit for bit.
fn check_every_vector(store: &Store, count: u64, when: &str) {
    let mut expected = vec![0f32; store.dimension()];
    for n in 0..count {
        vector_for(n, expected.len(), &mut expected);
        let got = store.get(&format!("v{n}")).unwrap();
        let got = got.unwrap_or_else(|| panic!("{when}: v{n} is missing"));
        assert!(
            got.iter().map(|x| x.to_bits()).eq(expected.iter().map(|x| x.to_bits())),
            "{when}: v{n} does not read back bit for bit"
        );
    }
}

#[test]
fn a_store_many_times_the_memory_budget_is_written_in_bounded_anonymous_memory() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let budget = 16 * MIB;
    let options = Options {
        // The writer waits for no flush, and every page write of the checkpointer takes 1 ms
        // more: the checkpointer cannot keep up, and the writer must be held back for memory
        // to stay within the budget.
        sync: SyncMode::Never,
        storage: std::sync::Arc::new(SlowArenaWrites(RealStorage::new())),
        segment_size_bytes: 4 << 20,
        memory_budget_bytes: budget as u64,
        // An interval checkpoint every 64 MiB of log and a base image every second one: the
        // writer also goes on while base images are stored.
        checkpoint_interval_bytes: 64 << 20,
        base_image_every: 2,
        ..Options::default()
    };
    // 4 KiB vectors: 38,400 of them are 150 MiB (200 MiB of 16 KiB pages, three vectors a
    // page), over twelve times the budget.
    let dimension = 1024;
    let count = 38_400;
    let store = Store::create(root.path().join("store"), dimension, options).unwrap();
    let heap_before = LIVE_BYTES.load(Ordering::Relaxed);
    let before = rss_anon_bytes();
    let sampler = RssSampler::start();
    load(&store, count, 500);
    let peak = sampler.peak_bytes();
    let heap_after = LIVE_BYTES.load(Ordering::Relaxed);
    let growth = peak.saturating_sub(before);
    println!(
        "budget {} MiB, {} MiB of vectors: RssAnon {} MiB before, peak {} MiB (+{} MiB); live heap +{} MiB",
        budget / MIB,
        count as usize * dimension as usize * 4 / MIB,
        before / MIB,
        peak / MIB,
        growth / MIB,
        heap_after.saturating_sub(heap_before) / MIB
    );
    // The slack beside the budget: the heap, which the budget does not count (the
    // transaction being built, the log's write buffers, the archiver's compressed copy of a
    // 4 MiB segment, a background base image's run of 2 MiB and its compressed form), memory
    // the allocator keeps after frees, thread stacks: measured at 24-26 MiB (34-42 MiB while
    // that base image's runs were 8 MiB, one run in a dozen full suites past 48 MiB). Without the
    // releases, or with a writer never held back, the private copies of the arena's pages
    // alone grow towards 200 MiB here.
    let allowance = 48 * MIB;
    assert!(
        growth < budget + allowance,
        "anonymous memory grew by {} MiB writing {count} vectors, past the {} MiB budget and the {} MiB allowance",
        growth / MIB,
        budget / MIB,
        allowance / MIB
    );
    check_every_vector(&store, count, "after the load");
    store.close().unwrap();
}

#[test]
fn released_pages_read_back_bit_for_bit_while_the_writer_goes_on() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    // A budget of 4 MiB writes pages back every 256 KiB: background checkpoints copy, write
    // and release pages (the vector page being filled among them) while the writer changes
    // them, and a reader reads vectors committed earlier throughout.
    let options = Options {
        segment_size_bytes: 4 << 20,
        memory_budget_bytes: 4 << 20,
        sync: vellum::SyncMode::Never,
        ..Options::default()
    };
    let dimension = 256;
    let count = 40_000;
    let store = Store::create(&dir, dimension, options.clone()).unwrap();
    let committed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut expected = vec![0f32; dimension as usize];
            let mut n = 0u64;
            while committed.load(Ordering::Acquire) < count as usize {
                let upto = committed.load(Ordering::Acquire) as u64;
                if upto == 0 {
                    std::thread::yield_now();
                    continue;
                }
                n = (n + 7919) % upto;
                vector_for(n, expected.len(), &mut expected);
                let got = store
                    .get(&format!("v{n}"))
                    .unwrap()
                    .expect("a committed vector is there");
                assert!(
                    got.iter().map(|x| x.to_bits()).eq(expected.iter().map(|x| x.to_bits())),
                    "v{n} read during the load is not what was committed"
                );
            }
        });
        let mut vector = vec![0f32; dimension as usize];
        for n in 0..count {
            vector_for(n, vector.len(), &mut vector);
            store.insert(&format!("v{n}"), &vector, &[]).unwrap();
            committed.store(n as usize + 1, Ordering::Release);
        }
    });
    check_every_vector(&store, count, "after the load");
    store.checkpoint().unwrap();
    check_every_vector(&store, count, "after a checkpoint released every page");
    store.close().unwrap();
    let reopened = Store::open(&dir, options).unwrap();
    check_every_vector(&reopened, count, "after a reopen");
}

#[test]
fn base_images_stored_while_writers_write_pages_back_restore_every_commit_exactly() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    // A base image at every 4 MiB of log, 1 MiB arena files, and a 2 MiB budget: while each
    // base image is stored, the writer runs out of budget and writes back the pages of the
    // files made since, beside the image (which must not see them).
    let options = Options {
        segment_size_bytes: 1 << 20,
        memory_budget_bytes: 2 << 20,
        checkpoint_interval_bytes: 4 << 20,
        base_image_every: 1,
        retention: Retention::KeepAll,
        ..Options::default()
    };
    let dimension = 256;
    let (batch, batches) = (200u64, 120u64);
    let store = Store::create(&src, dimension, options).unwrap();
    let mut commits = Vec::new();
    let mut vector = vec![0f32; dimension as usize];
    for b in 0..batches {
        let mut tx = store.begin().unwrap();
        for n in b * batch..(b + 1) * batch {
            vector_for(n, vector.len(), &mut vector);
            tx.insert(&format!("v{n}"), &vector, &[]).unwrap();
        }
        commits.push(((b + 1) * batch, tx.commit().unwrap()));
    }
    store.close().unwrap();
    let mut bases = std::collections::BTreeSet::new();
    for (i, &(count, lsn)) in commits.iter().enumerate().step_by(9) {
        let dest = root.path().join(format!("at-{i}"));
        let report = restore(&src, &dest, RestoreTarget::Lsn(lsn)).unwrap();
        bases.insert(report.base_image_lsn);
        let restored = Store::open(&dest, Options::default()).unwrap();
        assert_eq!(
            restored.len() as u64,
            count,
            "restored to commit {i}: its vectors and no later one"
        );
        check_every_vector(&restored, count, &format!("restored to commit {i}"));
        restored.close().unwrap();
        std::fs::remove_dir_all(&dest).unwrap();
    }
    assert!(
        bases.len() >= 3,
        "the restores start from base images stored during the load: {bases:?}"
    );
}

/// Loads `count` vectors of 4 KiB into a new store on `sim` with `memory_budget_bytes` (and no
/// archive, so that a close writes only the store, and no stored writes, which would write
/// the pages in the load's calls), in transactions of 256 rows through the bulk path; then closes it
/// and returns the bytes the close wrote.
fn bytes_written_by_the_close_after_a_load(memory_budget_bytes: u64, count: u64) -> u64 {
    let sim = SimStorage::new(11);
    let options = Options {
        memory_budget_bytes,
        archive: false,
        stored_writes: false,
        background_io: false,
        storage: std::sync::Arc::new(sim.clone()),
        ..Options::default()
    };
    let store = Store::create(std::path::Path::new("/db"), 1024, options).unwrap();
    let mut vectors = vec![vec![0f32; 1024]; 256];
    for first in (0..count).step_by(256) {
        let ids: Vec<String> = (first..first + 256).map(|n| format!("v{n}")).collect();
        for (n, vector) in (first..).zip(&mut vectors) {
            vector_for(n, 1024, vector);
        }
        let rows: Vec<vellum::Row<'_>> = ids
            .iter()
            .zip(&vectors)
            .map(|(id, vector)| (id.as_str(), vector.as_slice(), &[][..]))
            .collect();
        let mut tx = store.begin().unwrap();
        tx.upsert_many(&rows).unwrap();
        tx.commit().unwrap();
    }
    let before = sim.written_bytes();
    store.close().unwrap();
    sim.written_bytes() - before
}

#[test]
fn a_close_after_a_bulk_load_writes_back_only_what_the_budget_left_dirty() {
    // Its simulated files are anonymous memory: it must not run beside a test that measures it.
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 8,192 vectors of 4 KiB: 32 MiB of vectors, 43 MiB of 16 KiB vector pages.
    let (count, load_bytes) = (8192, 32 * MIB as u64);
    let budget = 4 * MIB as u64;
    let with_budget = bytes_written_by_the_close_after_a_load(budget, count);
    let without = bytes_written_by_the_close_after_a_load(0, count);
    println!(
        "the close after a {} MiB load wrote {} KiB with a {} MiB budget, {} KiB without one",
        load_bytes >> 20,
        with_budget >> 10,
        budget >> 20,
        without >> 10
    );
    // Without a budget nothing is written back before the close (the log interval is not
    // reached): the close writes every page of the load.
    assert!(
        without >= load_bytes,
        "the control: without a budget the close writes the whole load ({without} bytes)"
    );
    // With one, background writeback keeps the dirty set under a sixteenth of the budget plus
    // the last commit's pages (256 KiB and about 1.4 MiB); the close writes those (twice,
    // through the doublewrite area, for the pages written before) and the log's last page.
    assert!(
        with_budget <= budget,
        "the close wrote {with_budget} bytes after a {load_bytes}-byte load, more than the {budget}-byte budget"
    );
}

/// The base images in the archive of the store at `/db` on `sim`.
fn base_images(sim: &SimStorage) -> usize {
    let names = sim.list(Path::new("/db/archive")).unwrap();
    names.iter().filter(|name| name.starts_with("base-")).count()
}

#[test]
fn a_close_stores_no_base_image_whatever_base_image_every_says() {
    // Its simulated files are anonymous memory: it must not run beside a test that measures it.
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sim = SimStorage::new(12);
    let options = Options {
        base_image_every: 1,
        retention: Retention::KeepAll,
        background_io: false,
        storage: std::sync::Arc::new(sim.clone()),
        ..Options::default()
    };
    let store = Store::create(Path::new("/db"), 8, options).unwrap();
    let created = base_images(&sim);
    store.insert("a", &[1.0; 8], &[]).unwrap();
    store.checkpoint().unwrap();
    assert_eq!(
        base_images(&sim),
        created + 1,
        "the control: a checkpoint stores one at every checkpoint"
    );
    store.insert("b", &[2.0; 8], &[]).unwrap();
    store.close().unwrap();
    assert_eq!(
        base_images(&sim),
        created + 1,
        "the close wrote back its changes without compressing the arena into a base image"
    );
}
