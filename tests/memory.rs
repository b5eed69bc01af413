//! Memory claims, measured: archiving never holds a whole arena in memory.
//!
//! This binary counts every heap allocation (a global allocator that wraps the system one) and
//! records the peak of live heap bytes over a window. Mapped arena pages are not heap: what is
//! measured is what base images and restores allocate on top of the store.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

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

#[test]
fn base_images_and_restores_hold_a_bounded_share_of_the_arena_in_memory() {
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
    let arena_bytes: u64 = std::fs::read_dir(src.join("arena"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
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
    // A checkpoint compresses on one thread (8 MiB read, its compressed form); the restore
    // compresses the new history's base image on up to 8 threads (16 MiB each at most) and
    // rebuilds a 16,384-entry index. A copy of the arena alone would be its whole size (96 MiB of files here).
    assert!(
        checkpoint_peak < 32 * MIB,
        "a base image holds at most a round of runs, not the {arena_bytes}-byte arena: {checkpoint_peak} bytes"
    );
    assert!(
        restore_peak < 8 * 16 * MIB + 16 * MIB && restore_peak < arena_bytes as usize,
        "a restore decodes and encodes base images a block at a time: {restore_peak} bytes"
    );
    let restored = Store::open(&dest, options).unwrap();
    assert_eq!(restored.len(), 16 * 1024, "every vector is restored");
}
