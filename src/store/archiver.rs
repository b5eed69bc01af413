//! Archiving for a store: retired log segments are compressed into `archive/` (on a
//! background thread, or inline without background I/O) before their files are recycled;
//! checkpoints add base images of the arena; retention prunes what no retained base image
//! needs.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use zerocopy::FromZeros;
use zerocopy::little_endian::{U32, U64};

use crate::archive::{self, ARCHIVE_DIR, ArchiveHeader, KIND_BASE_IMAGE, KIND_WAL_SEGMENT};
use crate::error::{IoContext, Result};
use crate::store::{Inner, Retention};
use crate::wal::segment::Segment;
use crate::{Error, Lsn};

/// The archiving queue of one store.
#[derive(Default)]
pub struct Archiver {
    queue: Mutex<VecDeque<Arc<Segment>>>,
    wake: Condvar,
    stopping: Mutex<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Held while a segment is archived (by the thread or a drain): one at a time.
    archiving: Mutex<()>,
    /// The first error the background archiver met (reported by the next checkpoint, of its own
    /// kind: a full disk stays `DiskFull`, which a close survives).
    failure: Mutex<Option<Error>>,
    /// Retention runs one at a time (the archiver thread and checkpoints both apply it).
    retention: Mutex<()>,
    /// The store, for the thread the first retired segment starts (see [`start`]).
    store: std::sync::OnceLock<Weak<Inner>>,
    /// `archive/` was tidied this session (see [`tidy`]).
    tidied: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Archiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("queued", &self.queue.lock().len())
            .finish()
    }
}

/// Makes `inner` ready for a background archiver (when background I/O is on). The thread
/// starts with the first segment a checkpoint retires ([`retire`]): an open that never
/// retires one (a reader's, a short-lived process's) starts no thread.
pub(crate) fn start(inner: &Arc<Inner>) -> Result<()> {
    if !inner.options.archive || !inner.options.background_io {
        return Ok(());
    }
    let _ = inner.archiver.store.set(Arc::downgrade(inner));
    Ok(())
}

/// Starts the background archiver thread if it is not running and the store is not stopping.
/// The thread slot's lock orders this with [`stop`]: no thread starts once a stop has begun
/// (what is queued then is drained by the close, on its thread).
fn ensure_thread(inner: &Inner) -> Result<()> {
    let Some(weak) = inner.archiver.store.get() else {
        return Ok(());
    };
    let mut slot = inner.archiver.thread.lock();
    if slot.is_some() || *inner.archiver.stopping.lock() {
        return Ok(());
    }
    let weak = weak.clone();
    let handle = crate::background::spawn("vellum-archiver", move || run(weak))
        .map_err(|e| Error::io("starting the archiver thread", e))?;
    *slot = Some(handle);
    Ok(())
}

/// Stops the background archiver once the segment it is archiving is done, or gives that one
/// up before its sync. Segments still queued are left where they are, in the log directory and
/// whole: a close then archives them on its own thread (`Store::close`, after its checkpoint);
/// a session that ends without a close (a crash) leaves them, the next session that writes
/// hands them to its archiver ([`resume_backlog`]), `Store::archive_now` archives them at once,
/// and a restore reads them from the live log meanwhile.
pub(crate) fn stop(inner: &Inner) {
    let handle = {
        let mut slot = inner.archiver.thread.lock();
        // Set under the queue's lock, which the thread holds from its check to its wait.
        let _queue = inner.archiver.queue.lock();
        *inner.archiver.stopping.lock() = true;
        slot.take()
    };
    inner.archiver.wake.notify_all();
    if let Some(handle) = handle {
        let _ = handle.join();
    }
}

/// Queues what the last checkpoint released and nobody queued yet (what an open left for the
/// archiver), then archives the whole queue on the caller's thread (`Store::archive_now`).
pub(crate) fn catch_up(inner: &Inner) -> Result<()> {
    if !inner.options.archive {
        return Ok(());
    }
    let truncate_lsn = inner.control.lock().1.truncate_lsn;
    queue_before(inner, truncate_lsn)?;
    drain(inner)
}

/// Archives whatever is still queued before it returns (on the caller's thread, helped by up to
/// three more with background I/O): a store without background I/O archives the segments a
/// checkpoint retires before the checkpoint returns, [`catch_up`] the rest, and a close what
/// its checkpoint released.
pub(crate) fn drain(inner: &Inner) -> Result<()> {
    // Threads only with background I/O: without, every storage operation stays on the caller's
    // thread, in the order a seed reproduces (crash simulation).
    let threads = match inner.options.background_io {
        true => std::thread::available_parallelism().map_or(1, |n| n.get()).min(DRAIN_THREADS_MAX),
        false => 1,
    };
    let _one_at_a_time = inner.archiver.archiving.lock();
    tidy_once(inner);
    loop {
        let batch: Vec<Arc<Segment>> = inner.archiver.queue.lock().iter().take(threads).cloned().collect();
        if batch.is_empty() {
            return Ok(());
        }
        // The batch's archive files are encoded and written side by side under their temporary
        // names (a close's backlog: the compression is most of the work), then published,
        // recycled and taken off the queue in order, so the archive only ever gains a segment
        // after the one before it. The first failure stops there: that segment and those after
        // it stay queued, and their temporary files go.
        let staged: Vec<Result<Staging<'_>>> = match &batch[..] {
            [segment] => vec![stage_file(inner, segment, &|| false)],
            _ => std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|segment| scope.spawn(move || stage_file(inner, segment, &|| false)))
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                    .collect()
            }),
        };
        for (segment, staging) in batch.iter().zip(staged) {
            match staging? {
                Staging::Already => {}
                Staging::Staged(file) => file.publish()?,
                Staging::GivenUp => unreachable!("a drain gives nothing up"),
            }
            recycle_and_pop(inner, segment)?;
        }
    }
}

/// How many segments a drain archives at once, at most.
const DRAIN_THREADS_MAX: usize = 4;

/// Temporary files of segments an interrupted archiving left are removed before the session
/// archives its first segment (under the archiving lock: a drain that follows finds it done),
/// rather than by every open (a listing of `archive/` each; none is ever read as an archive
/// file meanwhile). Only the segments' (`wal-*`): a base image may be under way meanwhile, in a
/// checkpoint, which removes the base images' leftovers itself ([`write_base_image`]).
fn tidy_once(inner: &Inner) {
    if !inner.archiver.tidied.swap(true, std::sync::atomic::Ordering::AcqRel) {
        let _ = tidy(inner.options.storage.as_ref(), &inner.dir, "wal-");
    }
}

/// Recycles an archived segment at the front of the queue and takes it off. Off the queue as
/// soon as it is renamed to a spare, whatever fails after: a segment left queued would be
/// recycled again (a rename of a name that is gone).
fn recycle_and_pop(inner: &Inner, segment: &Arc<Segment>) -> Result<()> {
    inner.wal.recycle(segment.clone())?;
    let popped = inner.archiver.queue.lock().pop_front();
    assert!(popped.is_some_and(|s| Arc::ptr_eq(&s, segment)), "only the archiver takes segments off");
    // A failed sync leaves the rename to the next one (an install's, the close's): until
    // then a crash may show the segment under its name again, before the truncation point,
    // where an open leaves it to the archiver, which finds it archived.
    inner.wal.sync_dir()?;
    apply_retention(inner)
}

/// Archives and recycles the segment at the front of the queue, then takes it off: `None` if
/// the queue is empty, `Some(false)` if `give_up` stopped it (the segment stays queued). One
/// caller at a time (the thread and a drain may both run), so no segment is archived twice.
fn archive_front(inner: &Inner, give_up: &dyn Fn() -> bool) -> Result<Option<bool>> {
    let _one_at_a_time = inner.archiver.archiving.lock();
    let Some(segment) = inner.archiver.queue.lock().front().cloned() else {
        return Ok(None);
    };
    tidy_once(inner);
    // A segment leaves the queue only once archived and recycled: the live log must never
    // lose a segment while an earlier one is still in it (a reopen would find a hole), so a
    // failure keeps it, and every one after it, queued.
    let archived = archive_file(inner, &segment, give_up)?;
    if archived {
        recycle_and_pop(inner, &segment)?;
    }
    Ok(Some(archived))
}

fn run(weak: Weak<Inner>) {
    let mut failing = false;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        {
            let mut queue = inner.archiver.queue.lock();
            if *inner.archiver.stopping.lock() {
                // What is left (queued, or kept after a failure) waits for the next session.
                return;
            }
            if queue.is_empty() || failing {
                inner
                    .archiver
                    .wake
                    .wait_for(&mut queue, std::time::Duration::from_millis(200));
            }
        }
        // A close stops the thread: it gives the segment up rather than wait for its sync.
        let stopping = || *inner.archiver.stopping.lock();
        match archive_front(&inner, &stopping) {
            Ok(None) => {}
            Ok(Some(false)) => return,
            Ok(Some(true)) => {
                failing = false;
                // A shortage met before is over: nothing is left to report. (Any other
                // failure is reported even so: its archive file may be missing.)
                let mut failure = inner.archiver.failure.lock();
                if failure.as_ref().is_some_and(Error::is_exhaustion) {
                    *failure = None;
                }
            }
            // Retried after a pause (the disk may have room again); segments after it wait.
            Err(error) => {
                failing = true;
                inner.archiver.failure.lock().get_or_insert(error);
            }
        }
    }
}

/// Hands the archiver, in the background, the segments an earlier session left waiting for it
/// (before the last checkpoint's truncation point, still in the log directory: see [`stop`]).
/// Called by the checkpointer thread (which a session's first write starts) after its first
/// wait; an open that only reads leaves them for later. A failure is reported as the
/// archiver's are, by the next checkpoint.
pub(crate) fn resume_backlog(inner: &Inner) {
    if !inner.options.archive || !inner.options.background_io || inner.read_only {
        return;
    }
    let truncate_lsn = inner.control.lock().1.truncate_lsn;
    let resumed = queue_before(inner, truncate_lsn).and_then(|queued| {
        if !queued {
            return Ok(());
        }
        ensure_thread(inner)?;
        inner.archiver.wake.notify_all();
        Ok(())
    });
    if let Err(error) = resumed {
        inner.archiver.failure.lock().get_or_insert(error);
    }
}

/// Detaches every segment before `lsn` (those the open left for the archiver first) and queues
/// them, behind any queued before (or kept after a failure): in log order, for they are archived
/// and recycled in order or not at all (a segment recycled before an older one is archived
/// would leave a hole in `wal/`). The queue's lock is held across both steps, so two callers (a
/// checkpoint's retire and the checkpointer's resume of the backlog) never interleave.
/// Whether it queued any.
fn queue_before(inner: &Inner, lsn: Lsn) -> Result<bool> {
    let mut queue = inner.archiver.queue.lock();
    let segments = inner.wal.detach_before(lsn)?;
    let queued = !segments.is_empty();
    queue.extend(segments);
    Ok(queued)
}

/// Hands the segments a checkpoint retired to the archiver, or recycles them if archiving is
/// off. Returns the background archiver's first failure, if any.
pub(crate) fn retire(inner: &Inner, truncate_lsn: Lsn) -> Result<()> {
    if !inner.options.archive {
        inner.wal.release_before(truncate_lsn)?;
        return Ok(());
    }
    if let Some(failure) = inner.archiver.failure.lock().take()
        && !(failure.is_exhaustion() && shortage_is_over(inner))
    {
        return Err(failure);
    }
    queue_before(inner, truncate_lsn)?;
    if inner.options.background_io {
        ensure_thread(inner)?;
        inner.archiver.wake.notify_all();
        return Ok(());
    }
    drain(inner)
}

/// True if a shortage the archiver thread met (of descriptors, of memory) is over: `archive/`
/// can be opened and synced now. The thread retries on its own, and stores a failure again if
/// it fails again; a checkpoint (a close's among them) must not fail for a shortage that has
/// passed.
fn shortage_is_over(inner: &Inner) -> bool {
    let dir = inner.dir.join(ARCHIVE_DIR);
    inner.options.storage.sync_dir(&dir).is_ok()
}

/// Writes the archive file of one retired segment (unless a whole copy is there already);
/// `Ok(false)` if `give_up()` said so before the archive file's sync.
fn archive_file(inner: &Inner, segment: &Arc<Segment>, give_up: &dyn Fn() -> bool) -> Result<bool> {
    match stage_file(inner, segment, give_up)? {
        Staging::Already => Ok(true),
        Staging::Staged(staged) => staged.publish().map(|()| true),
        Staging::GivenUp => Ok(false),
    }
}

/// What [`stage_file`] did.
enum Staging<'a> {
    /// A whole archive file of the segment is there already.
    Already,
    /// Written and synced under its temporary name, to publish.
    Staged(archive::Staged<'a>),
    /// `give_up()` said so first; nothing is left.
    GivenUp,
}

/// The archive file of one retired segment written and synced under its temporary name, unless
/// a whole copy is there already.
fn stage_file<'a>(inner: &'a Inner, segment: &Arc<Segment>, give_up: &dyn Fn() -> bool) -> Result<Staging<'a>> {
    let storage = inner.options.storage.as_ref();
    let dir = inner.dir.join(ARCHIVE_DIR);
    let name = archive::wal_file_name(segment.segment_no);
    let path = dir.join(&name);
    if storage.exists(&path) && archive::decode_streamed(storage, &path, |_| Ok(())).is_ok() {
        return Ok(Staging::Already);
    }
    let size = segment.map.len();
    // SAFETY: a retired segment lies wholly before the checkpoint's truncation point: no
    // writer touches it any more, and this `Arc` keeps its mapping alive.
    let contents = unsafe { segment.map.bytes(0, size) };
    let summary = inner.wal.segment_summary(segment);
    let mut header = header_for(inner, KIND_WAL_SEGMENT);
    header.segment_no = U64::new(segment.segment_no);
    if let Some(s) = summary {
        header.first_lsn = U64::new(s.first_lsn.0);
        header.end_lsn = U64::new(s.end_lsn.0);
        header.first_us = U64::new(s.first_us);
        header.last_us = U64::new(s.last_us);
    }
    if give_up() {
        return Ok(Staging::GivenUp);
    }
    let staged = archive::stage_unless(storage, &dir, &name, &archive::encode(header, contents), give_up)?;
    Ok(staged.map_or(Staging::GivenUp, Staging::Staged))
}

fn header_for(inner: &Inner, kind: u8) -> ArchiveHeader {
    let control = inner.control.lock().1.clone();
    let mut header = ArchiveHeader::new_zeroed();
    header.kind = kind;
    header.store_id = U64::new(control.store_id);
    header.timeline = U32::new(control.timeline);
    header.page_size_bytes = U32::new(control.page_size_bytes);
    header.segment_size_bytes = U64::new(control.segment_size_bytes);
    header
}

/// What a checkpoint records in a base image.
pub(crate) struct BaseImageInfo {
    pub begin_lsn: Lsn,
    pub end_lsn: Lsn,
    pub truncate_lsn: Lsn,
    pub next_txn_id: u64,
    pub time_us: u64,
    /// The arena files the image holds, per space (by `Space::index`): those there when the
    /// checkpoint ended. Later files are not read: their pages may be written meanwhile
    /// (checkpoint.rs, `clean_during_base_image`), and a restore redoes them from the log.
    pub files: [usize; 2],
}

/// After a checkpoint: writes a base image if one is due. Runs under the checkpoint lock, so
/// the arena files on disk are exactly what the checkpoint left (no other writer). An image
/// `give_up` stops is not counted: the next checkpoint that may store one does.
pub(crate) fn maybe_base_image(
    inner: &Inner,
    info: &BaseImageInfo,
    force: bool,
    threads: usize,
    give_up: &dyn Fn() -> bool,
) -> Result<()> {
    if !inner.options.archive && !force {
        return Ok(());
    }
    let since = inner
        .checkpoints_since_base
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        + 1;
    let every = inner.options.base_image_every;
    // Before the listing: the archiver may publish and take off a segment meanwhile, which
    // the listing then holds (read after, the queue could start past a listing without it).
    let to_archive = first_to_archive(inner);
    let listing = archive::list(inner.options.storage.as_ref(), &inner.dir, false)?;
    let none_yet = listing.bases.is_empty();
    let cut_off = !none_yet && !reaches(inner, &listing, to_archive);
    if !(force || none_yet || cut_off || (every > 0 && since >= every)) {
        return Ok(());
    }
    if !write_base_image(inner, info, threads, give_up)? {
        return Ok(());
    }
    inner
        .checkpoints_since_base
        .store(0, std::sync::atomic::Ordering::SeqCst);
    apply_retention(inner)
}

/// The first segment of the log still to be archived: the first queued for the archiver, or
/// else the oldest in the live log.
fn first_to_archive(inner: &Inner) -> Option<u64> {
    let queued = inner.archiver.queue.lock().front().map(|segment| segment.segment_no);
    queued.or_else(|| inner.wal.segment_numbers().first().copied())
}

/// Whether the log the archive holds, from the first segment its newest base image needs,
/// runs on without a hole to `to_archive` ([`first_to_archive`]). Not so after a session with
/// the archive off: it recycled the segments its checkpoints retired, and until a base image
/// is stored past them a restore fails for want of them.
fn reaches(inner: &Inner, listing: &archive::Listing, to_archive: Option<u64>) -> bool {
    let Some((newest, _, _)) = listing.bases.last() else {
        return false;
    };
    let mut archived_end = inner.wal.geometry().segment_of(newest.truncate_lsn.get());
    for &(segment_no, _, _) in &listing.segments {
        if segment_no == archived_end {
            archived_end += 1;
        }
    }
    to_archive.is_none_or(|first| first <= archived_end)
}

fn write_base_image(inner: &Inner, info: &BaseImageInfo, threads: usize, give_up: &dyn Fn() -> bool) -> Result<bool> {
    let storage = inner.options.storage.as_ref();
    let [catalog_files, vector_files] = info.files;
    // The files as the checkpoint left them (no other checkpoint writes them meanwhile: the
    // caller holds the checkpoint lock), streamed: an arena need not fit in memory.
    let file_bytes = inner.arena.pages_per_file() * u64::from(inner.arena.page_size_bytes());
    let contents = archive::FileContents::open(storage, &inner.arena.file_paths_below(info.files), file_bytes)?;
    let mut header = header_for(inner, KIND_BASE_IMAGE);
    header.first_lsn = U64::new(info.begin_lsn.0);
    header.end_lsn = U64::new(info.end_lsn.0);
    header.first_us = U64::new(info.time_us);
    header.last_us = U64::new(info.time_us);
    header.truncate_lsn = U64::new(info.truncate_lsn.0);
    header.next_txn_id = U64::new(info.next_txn_id);
    header.dimension = U32::new(inner.dimension);
    header.catalog_files = U32::new(catalog_files as u32);
    header.vector_files = U32::new(vector_files as u32);
    let dir = inner.dir.join(ARCHIVE_DIR);
    // Under the checkpoint lock, no other base image is being written: any `base-*.tmp` is a
    // leftover of an interrupted one.
    tidy(storage, &inner.dir, "base-")?;
    archive::write_streamed_unless(
        storage,
        &dir,
        &archive::base_file_name(info.begin_lsn),
        header,
        &contents,
        threads,
        give_up,
    )
}

/// Deletes base images the retention policy does not keep and archived segments no retained
/// base image needs. The newest base image is always kept.
pub(crate) fn apply_retention(inner: &Inner) -> Result<()> {
    let _one_at_a_time = inner.archiver.retention.lock();
    let storage = inner.options.storage.as_ref();
    let listing = archive::list(storage, &inner.dir, false)?;
    let segment_size_bytes = inner.control.lock().1.segment_size_bytes;
    let retention = *inner.retention.lock();
    let Some(keep_from) = first_kept(&listing, retention, segment_size_bytes) else {
        return Ok(());
    };
    let needed_segment = listing.bases[keep_from].0.truncate_lsn.get() / segment_size_bytes;
    let doomed = listing.bases[..keep_from].iter().map(|b| &b.1);
    let doomed = doomed.chain(listing.segments.iter().filter(|s| s.0 < needed_segment).map(|s| &s.1));
    // Hook (shipping): a file not yet confirmed remote stays until its upload is.
    let doomed = doomed.filter(|path| crate::store::shipping::may_delete(inner, path));
    for path in doomed {
        match storage.remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
    let dir = inner.dir.join(ARCHIVE_DIR);
    storage
        .sync_dir(&dir)
        .context(|| format!("syncing directory {}", dir.display()))
}

/// The index of the oldest base image to keep, or `None` to keep everything.
fn first_kept(listing: &archive::Listing, retention: Retention, segment_size_bytes: u64) -> Option<usize> {
    let count = listing.bases.len();
    if count == 0 {
        return None;
    }
    match retention {
        Retention::Stored => first_kept(listing, Retention::DEFAULT, segment_size_bytes),
        Retention::KeepAll => None,
        Retention::KeepLast(n) => Some(count.saturating_sub(n.max(1) as usize)),
        Retention::MaxBytes(max_bytes) => {
            let mut keep = count - 1;
            while keep > 0 {
                let candidate = keep - 1;
                let needed_segment = listing.bases[candidate].0.truncate_lsn.get() / segment_size_bytes;
                let image_bytes: u64 = listing.bases[candidate..].iter().map(|b| b.2).sum();
                let log_bytes: u64 = listing
                    .segments
                    .iter()
                    .filter(|s| s.0 >= needed_segment)
                    .map(|s| s.2)
                    .sum();
                if image_bytes + log_bytes > max_bytes {
                    break;
                }
                keep = candidate;
            }
            Some(keep)
        }
    }
}

/// Removes the temporary files (`{prefix}….tmp`) an interrupted archiving left. Only the
/// directory is read: no archive file is opened (this would otherwise read a byte of every file
/// of the archive, from the disk when the page cache is cold, for nothing it needs). A leftover
/// that cannot be removed is tried again by the next session's archiver.
pub(crate) fn tidy(storage: &dyn crate::storage::Storage, store_dir: &Path, prefix: &str) -> Result<()> {
    let dir = store_dir.join(ARCHIVE_DIR);
    let names = match storage.list(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        listed => listed.context(|| format!("listing {}", dir.display()))?,
    };
    for name in names.iter().filter(|n| n.starts_with(prefix) && n.ends_with(".tmp")) {
        // As `archive::list` tidies: a leftover that cannot be removed now is tried again at
        // the next open, and never read as an archive file meanwhile.
        let _ = storage.remove_file(&dir.join(name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::{Options, Store};

    /// Small pages and segments: a few hundred inserts retire segments.
    fn small_options() -> Options {
        Options {
            page_size_bytes: 4096,
            segment_size_bytes: 16 * 4096,
            ..Options::default()
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn a_leftover_temporary_archive_file_outlives_an_open_and_goes_with_the_first_archiving() {
        let dir = tempfile::tempdir().unwrap();
        let options = small_options();
        Store::create(dir.path(), 8, options.clone()).unwrap().close().unwrap();
        let leftover = dir.path().join(super::ARCHIVE_DIR).join("wal-0000000000000009.lz4.tmp");
        std::fs::write(&leftover, b"an interrupted copy").unwrap();
        let store = Store::open(dir.path(), options).unwrap();
        assert!(leftover.exists(), "an open reads no more of archive/ than it needs: it is still there");
        for i in 0..200 {
            store.insert(&format!("id-{i}"), &[i as f32; 8], &[("k", &"v".repeat(200))]).unwrap();
        }
        store.checkpoint().unwrap();
        store.archive_now().unwrap();
        assert!(!leftover.exists(), "the session's first archiving removed it");
        store.close().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn the_archivers_tidying_leaves_a_base_image_being_written_and_the_next_base_image_removes_a_leftover() {
        // Before, the archiver's first archiving of a session removed every `*.tmp` of
        // `archive/`, a base image a checkpoint was writing meanwhile among them: its rename
        // then failed ("renaming …/base-….lz4.tmp …: No such file or directory"). Found by
        // tests/hostile.rs's shortage test with the background threads running.
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            base_image_every: 1,
            ..small_options()
        };
        let store = Store::create(dir.path(), 8, options).unwrap();
        let archive = dir.path().join(super::ARCHIVE_DIR);
        let being_written = archive.join("base-00000000000000ff.lz4.tmp");
        let segment_leftover = archive.join("wal-0000000000000009.lz4.tmp");
        std::fs::write(&being_written, b"a base image under way").unwrap();
        std::fs::write(&segment_leftover, b"an interrupted copy").unwrap();
        super::tidy_once(store.inner());
        assert!(being_written.exists(), "a base image's file is the checkpoint's to tidy");
        assert!(!segment_leftover.exists(), "a segment's leftover goes");
        store.insert("a", &[1.0; 8], &[]).unwrap();
        store.checkpoint().unwrap();
        assert!(!being_written.exists(), "the next base image removed the leftover");
        store.close().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn the_archiver_thread_starts_with_the_first_retired_segment_not_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let options = small_options();
        let store = Store::create(dir.path(), 8, options.clone()).unwrap();
        store.close().unwrap();
        let store = Store::open(dir.path(), options).unwrap();
        let archiver = &store.inner().archiver;
        assert!(archiver.thread.lock().is_none(), "an open starts no archiver thread");
        for i in 0..200 {
            store.insert(&format!("id-{i}"), &[i as f32; 8], &[("k", &"v".repeat(200))]).unwrap();
        }
        store.checkpoint().unwrap();
        assert!(
            store.log_info().segments.len() <= 2,
            "the checkpoint retired the segments before it: {:?}",
            store.log_info()
        );
        assert!(archiver.thread.lock().is_some(), "the first retired segment starts the thread");
        store.archive_now().unwrap();
        store.close().unwrap();
        let archived = std::fs::read_dir(dir.path().join(super::ARCHIVE_DIR)).unwrap().count();
        assert!(archived >= 2, "the retired segments were archived: {archived} files");
    }

    fn small_segments() -> Options {
        Options {
            page_size_bytes: 4096,
            segment_size_bytes: 16 * 4096,
            ..Options::default()
        }
    }

    fn archived(dir: &std::path::Path, segment_no: u64) -> bool {
        dir.join(super::ARCHIVE_DIR)
            .join(crate::archive::wal_file_name(segment_no))
            .exists()
    }

    /// A session whose archiver is stopped retires segments that nobody archives; `close` or
    /// not at its end. Returns the store and their numbers.
    fn retire_unarchived(dir: &std::path::Path) -> (Store, Vec<u64>) {
        let store = Store::create(dir, 8, small_segments()).unwrap();
        super::stop(store.inner());
        for i in 0..300 {
            store.insert(&format!("id-{i}"), &[i as f32; 8], &[("k", &"v".repeat(200))]).unwrap();
        }
        crate::store::checkpoint::run(store.inner()).unwrap();
        let backlog: Vec<u64> = store.inner().archiver.queue.lock().iter().map(|s| s.segment_no).collect();
        assert!(backlog.len() >= 2, "the checkpoint retired segments: {backlog:?}");
        (store, backlog)
    }

    /// What a session that ends without a close (a crash after a checkpoint) leaves when the
    /// archive is behind: segments waiting for the archiver.
    fn leave_a_backlog(dir: &std::path::Path) -> Vec<u64> {
        let (store, backlog) = retire_unarchived(dir);
        drop(store);
        backlog
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn a_close_archives_the_segments_waiting_for_the_archiver_and_keeps_one_spare() {
        let dir = tempfile::tempdir().unwrap();
        let (store, backlog) = retire_unarchived(dir.path());
        store.close().unwrap();
        assert!(backlog.iter().all(|&n| archived(dir.path(), n)), "the close archived {backlog:?}");
        let names = std::fs::read_dir(dir.path().join("wal")).unwrap();
        let names: Vec<String> = names.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        let segments = names.iter().filter(|n| n.ends_with(".wal")).count();
        let spares = names.iter().filter(|n| n.starts_with("spare-")).count();
        assert!(segments <= 2 && spares <= 1, "the active segment (and its successor) and one spare: {names:?}");
        let store = Store::open(dir.path(), small_segments()).unwrap();
        assert_eq!(store.len(), 300, "nothing is lost");
        assert_eq!(store.wal().backlog_segments(), 0, "nothing left for the next session");
        store.close().unwrap();
        let report = crate::inspect::verify_store(dir.path(), &()).unwrap();
        assert!(report.clean(), "the store and its archive verify: {report:?}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn a_full_disk_the_background_archiver_met_is_reported_as_a_full_disk_which_a_close_survives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path(), 8, small_segments()).unwrap();
        store.insert("a", &[1.0; 8], &[]).unwrap();
        let full = || crate::Error::DiskFull {
            context: "writing archive/wal-0000000000000000.lz4.tmp".into(),
        };
        *store.inner().archiver.failure.lock() = Some(full());
        let reported = store.checkpoint();
        assert!(
            matches!(reported, Err(crate::Error::DiskFull { .. })),
            "the archiver's failure keeps its kind: {reported:?}"
        );
        *store.inner().archiver.failure.lock() = Some(full());
        store.insert("b", &[2.0; 8], &[]).unwrap();
        store.close().expect("a close survives a full disk once the log is durable");
        let store = Store::open(dir.path(), small_segments()).unwrap();
        assert_eq!(store.len(), 2, "both commits are there");
        store.close().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn a_drain_that_fails_on_a_segment_publishes_no_archive_file_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, backlog) = retire_unarchived(dir.path());
        // A directory where the first segment's temporary archive file goes: its write fails,
        // while the next segment's is written beside it.
        let archive_dir = dir.path().join(super::ARCHIVE_DIR);
        let blocker = archive_dir.join(format!("{}.tmp", crate::archive::wal_file_name(backlog[0])));
        std::fs::create_dir_all(&blocker).unwrap();
        let failed = super::drain(store.inner());
        assert!(failed.is_err(), "the first segment cannot be archived: {failed:?}");
        assert!(backlog.iter().all(|&n| !archived(dir.path(), n)), "nothing published after it");
        let names: Vec<String> = std::fs::read_dir(&archive_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("wal-"))
            .collect();
        assert_eq!(names.len(), 1, "of the log's, only the blocker: the other temporary files are gone: {names:?}");
        assert_eq!(store.inner().archiver.queue.lock().len(), backlog.len(), "all stay queued");
        std::fs::remove_dir(&blocker).unwrap();
        super::drain(store.inner()).unwrap();
        assert!(backlog.iter().all(|&n| archived(dir.path(), n)), "archived once it can be");
        store.close().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn a_session_ended_without_a_close_leaves_segments_waiting_for_the_archiver_in_the_log_whole() {
        let dir = tempfile::tempdir().unwrap();
        let backlog = leave_a_backlog(dir.path());
        for &n in &backlog {
            assert!(!archived(dir.path(), n), "segment {n} was not archived");
            let file = dir.path().join("wal").join(crate::wal::segment::segment_file_name(n));
            assert!(file.exists(), "segment {n} stays in the log directory: {}", file.display());
        }
        let store = Store::open(dir.path(), small_segments()).unwrap();
        assert_eq!(store.len(), 300, "nothing is lost");
        let in_log: Vec<u64> = store.log_info().segments;
        assert!(backlog.iter().all(|n| !in_log.contains(n)), "{backlog:?} are left unopened: {in_log:?}");
        assert_eq!(store.wal().backlog_segments(), backlog.len(), "the open left them for the archiver");
        // Store::archive_now returns once the archive has caught up.
        store.archive_now().unwrap();
        assert!(backlog.iter().all(|&n| archived(dir.path(), n)), "archive_now archived {backlog:?}");
        store.close().unwrap();
        let report = crate::inspect::verify_store(dir.path(), &()).unwrap();
        assert!(report.clean(), "the store and its archive verify: {report:?}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn a_foreign_segment_left_for_the_archiver_is_refused_when_taken_and_nothing_after_it_is_recycled() {
        let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let backlog = leave_a_backlog(dir.path());
        leave_a_backlog(other.path());
        let name = crate::wal::segment::segment_file_name(backlog[0]);
        std::fs::copy(other.path().join("wal").join(&name), dir.path().join("wal").join(&name)).unwrap();
        let store = Store::open(dir.path(), small_segments()).unwrap();
        assert_eq!(store.len(), 300, "the open reads no segment it left for the archiver");
        let refused = store.archive_now();
        assert!(
            matches!(&refused, Err(crate::Error::Corrupted { .. })) && refused.as_ref().unwrap_err().to_string().contains(&name),
            "the archiver refuses the other store's segment, naming it: {refused:?}"
        );
        store.close().unwrap(); // nothing changed: the close writes nothing, takes nothing
        let store = Store::open(dir.path(), small_segments()).unwrap();
        assert_eq!(store.len(), 300, "no segment after it was recycled: the log opens whole");
        assert!(backlog.iter().all(|&n| !archived(dir.path(), n)), "nothing was archived out of order");
        store.close().unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files and threads")]
    fn a_session_that_writes_hands_the_backlog_to_the_archiver_thread() {
        let dir = tempfile::tempdir().unwrap();
        let backlog = leave_a_backlog(dir.path());
        let store = Store::open(dir.path(), small_segments()).unwrap();
        assert!(store.inner().archiver.thread.lock().is_none(), "an open that reads archives nothing");
        store.insert("one-more", &[1.0; 8], &[]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !backlog.iter().all(|&n| archived(dir.path(), n)) {
            assert!(std::time::Instant::now() < deadline, "the archiver thread archived {backlog:?}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        store.close().unwrap();
    }
}
