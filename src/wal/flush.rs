//! Group commit and the log's background threads: one committer at a time leads a flush
//! (pwrite, then fdatasync of every segment touched) for everything appended so far, the others
//! wait for it; the preallocator keeps the next segment and a spare ready, the writer thread
//! takes write-outs off the appenders, the flusher makes the log durable every interval.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::*;
use super::horizon::horizon_past;

/// How many commits a flush covers, counted since the log was opened ([`Wal::commit_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Commits acknowledged through [`Wal::commit`] (in every sync mode).
    pub commits: u64,
    /// fdatasyncs of log segments (group-commit flushes, syncs, the close), and the durable
    /// writes past the page cache that stand in for a flush's pwrite and fdatasync.
    pub log_syncs: u64,
    /// Of `log_syncs`, the flushes written past the page cache (`O_DIRECT | O_DSYNC`, see
    /// src/wal/direct.rs).
    pub direct_flushes: u64,
    /// Moves of the horizon (a write and fdatasync of `EPOCH` each, not in `log_syncs`; see
    /// src/wal/horizon.rs).
    pub horizon_moves: u64,
}

/// A gathering leader waits at most this long for the commits it expects, however slow the
/// device's syncs are.
const GATHER_MAX: Duration = Duration::from_millis(1);
/// A follower yields its CPU for up to this long, checking, before it sleeps until the flush it
/// waits for ends: a flush on a fast device ends sooner than a sleeping thread is woken (and on a
/// virtual machine whose CPUs all sleep, the device's completion can wait for the host's next
/// tick, milliseconds).
const FOLLOW_SPIN: Duration = Duration::from_micros(100);
/// A yield that returns later than this gave the CPU to some other thread for a time slice: the
/// machine's CPUs are all busy (other processes, more threads than cores). Yielding then hands
/// each wait a slice of someone else's work (a durable commit beside a busy process took 3.9 ms
/// at the median instead of 0.15), so waiters sleep on a condition variable instead, for
/// [`CONTENDED_FOR`], and only then try yielding again.
const YIELD_SLOW: Duration = Duration::from_micros(250);
/// How long waiters sleep rather than yield after a slow yield.
const CONTENDED_FOR: Duration = Duration::from_millis(100);

/// The group-commit state, under `Shared::group`.
///
/// A committer whose record is not durable announces its LSN in `pending` and either leads
/// (if no one does) or follows: it waits for the leader's flush to end (yielding for
/// `FOLLOW_SPIN`, then asleep) and checks again. A leader first gathers: it yields until
/// `expected` commits are pending (itself included), for half a flush's time at most, then
/// flushes everything appended so far with one pwrite and one fdatasync per segment touched.
/// A lone committer finds `expected` met by its own commit and never waits. On a machine whose
/// CPUs are all busy (a yield came back late: `YIELD_SLOW`), followers and gatherers sleep on
/// condition variables instead of yielding, for `CONTENDED_FOR`.
///
/// `expected` is what the last flush learnt of the concurrency: the commits it covered plus
/// those that arrived while it ran. With four committers that each commit again as soon as
/// their last commit is durable, a flush covers all four and the next leader waits for four;
/// when one stops, one gather times out and the count drops to three.
#[derive(Debug)]
pub(super) struct Group {
    /// A leader is gathering or flushing.
    leading: bool,
    /// Flushes led so far: a follower waits for this to change.
    flushes: u64,
    /// Commit records announced (`start_commit`, `flush_through`) that were not durable then.
    /// Entries at or below the durable end are pruned by each leader.
    pending: Vec<u64>,
    /// How many pending commits the next leader waits for.
    expected: usize,
    /// A moving average of how long a leader's flush takes (pwrite and fdatasync).
    flush_ns: u64,
    /// Until when waiters sleep rather than yield (a yield came back late).
    contended_until: Option<Instant>,
}

impl Default for Group {
    fn default() -> Group {
        Group {
            leading: false,
            flushes: 0,
            pending: Vec::new(),
            expected: 1,
            flush_ns: 0,
            contended_until: None,
        }
    }
}

impl Group {
    /// Notes the commit record at `lsn`.
    fn announce(&mut self, lsn: u64) {
        if !self.pending.contains(&lsn) {
            self.pending.push(lsn);
        }
    }

    /// Whether waiters sleep rather than yield now (see [`YIELD_SLOW`]).
    fn contended(&self) -> bool {
        self.contended_until.is_some_and(|until| Instant::now() < until)
    }

    /// True once the commits the next flush expects are pending.
    fn complete(&self) -> bool {
        self.pending.len() >= self.expected
    }

    /// After a flush that made the log durable from `from` to `to` in `took`: learns how many
    /// commits to gather next, and forgets those now durable.
    fn learn(&mut self, from: u64, to: u64, took: Duration) {
        let covered = self.pending.iter().filter(|&&lsn| lsn >= from && lsn < to).count();
        self.pending.retain(|&lsn| lsn >= to);
        self.expected = (covered + self.pending.len()).max(1);
        let took_ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.flush_ns = if self.flush_ns == 0 {
            took_ns
        } else {
            self.flush_ns - self.flush_ns / 8 + took_ns / 8
        };
    }
}

impl Wal {
    /// Applies the sync mode to a commit record at `lsn`: with `Always`, returns once it is
    /// durable (sharing one flush with concurrent committers); otherwise returns at once.
    pub fn commit(&self, lsn: Lsn) -> Result<()> {
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        match self.shared.config.sync {
            SyncMode::Always => self.flush_through(lsn),
            SyncMode::Interval(_) | SyncMode::Never => Ok(()),
        }
    }

    /// Commits acknowledged and log fdatasyncs since the open: their ratio is how many commits
    /// one flush serves.
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            log_syncs: self.shared.log_syncs.load(Ordering::Relaxed),
            direct_flushes: self.shared.direct_flushes.load(Ordering::Relaxed),
            horizon_moves: self.shared.horizon_moves.load(Ordering::Relaxed),
        }
    }

    /// Announces the commit record at `lsn` before `commit(lsn)` waits for it, while the caller
    /// does other work (a committer publishing its changes): a gathering leader counts it at
    /// once. A hint: with another sync mode it does nothing.
    ///
    /// A lone committer's flush is not handed to the writer thread to overlap the publishing:
    /// measured, the two wake-ups of that handoff cost more than the work it overlapped (a
    /// durable single insert took 104-108 us with it, 87-88 us without, on a disk whose
    /// 4 KiB pwrite + fdatasync takes ~80 us): the committer flushes on its own thread.
    pub fn start_commit(&self, lsn: Lsn) {
        let shared = &*self.shared;
        if shared.config.sync != SyncMode::Always || shared.durable_lsn.load(Ordering::Acquire) > lsn.get() {
            return;
        }
        shared.announce(lsn.get());
    }

    /// Returns once the record at `lsn` (and everything before it) is durable.
    ///
    /// Group commit ([`Group`]): one committer at a time leads a flush, the others wait for it
    /// to end; those it covered return, one of the rest leads the next flush, which covers
    /// every record appended meanwhile.
    pub fn flush_through(&self, lsn: Lsn) -> Result<()> {
        let shared = &*self.shared;
        let target = lsn.get();
        if shared.durable_lsn.load(Ordering::Acquire) > target {
            return Ok(());
        }
        shared.announce(target);
        loop {
            if shared.durable_lsn.load(Ordering::Acquire) > target {
                return Ok(());
            }
            shared.check_open()?;
            let group = shared.group.lock();
            if group.leading {
                shared.follow(group, target);
                continue;
            }
            shared.lead(group, target, true)?;
        }
    }

    /// Stops the log as an I/O error does: every later append, flush and sync fails with
    /// `Error::Closed` until the store is reopened. For an owner whose state the log can no
    /// longer describe (a transaction whose rollback could not be logged).
    pub fn poison(&self, cause: &Error) {
        self.shared.poison(cause);
    }

    /// Makes `EPOCH` again if it was deleted while the log is open (a cleanup of files it did
    /// not know), as this open's first flush makes it: this open's epoch, with a horizon past
    /// everything written (the scan after a crash reads to it). Else the next open would refuse
    /// the store, its epoch file missing. (A horizon's move makes the file again too:
    /// `epoch_file::write_horizon`.) For the checkpoints and the close.
    pub fn relink_epoch_file(&self) -> Result<()> {
        let shared = &*self.shared;
        let storage = shared.dir.storage();
        if shared.read_only || storage.exists(&shared.dir.path().join(epoch_file::EPOCH_FILE_NAME)) {
            return Ok(());
        }
        let mut state = shared.horizon.lock();
        let written = shared.written_lsn.load(Ordering::Acquire);
        let past = horizon_past(&shared.config.geometry, written, state.step_bytes);
        let horizon = past.max(shared.horizon_durable.load(Ordering::Acquire));
        shared.write_epoch_file(&mut state, horizon)
    }

    /// `Err(Closed)` if the log takes no more records (poisoned by an I/O error, or read-only).
    pub fn check_appendable(&self) -> Result<()> {
        self.shared.check_open()
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<()> {
        let shared = &*self.shared;
        shared.check_open()?;
        let mut io = shared.io.lock();
        shared.flush_locked(&mut io, true)
    }

    /// Hands everything appended so far to the files (no sync), so readers see it.
    pub fn write_out(&self) -> Result<()> {
        let shared = &*self.shared;
        shared.check_open()?;
        let mut io = shared.io.lock();
        shared.flush_locked(&mut io, false)
    }
}

/// Yields the CPU once with the group lock released; a yield that comes back late marks the
/// machine contended (see [`YIELD_SLOW`]).
fn yield_once(group: &mut MutexGuard<'_, Group>) {
    let before = Instant::now();
    MutexGuard::unlocked(group, std::thread::yield_now);
    let now = Instant::now();
    if now - before > YIELD_SLOW {
        group.contended_until = Some(now + CONTENDED_FOR);
    }
}

impl Shared {
    /// Leads one group flush that makes `target` durable: gathers (if `gather`), flushes
    /// everything appended so far, learns from it and wakes the followers. Called with no
    /// leader; returns the group lock again.
    fn lead(&self, mut group: MutexGuard<'_, Group>, target: u64, gather: bool) -> Result<()> {
        group.leading = true;
        if gather {
            self.gather(&mut group);
        }
        drop(group);
        let from = self.durable_lsn.load(Ordering::Acquire);
        let started = Instant::now();
        let result = {
            let mut io = self.io.lock();
            // Another flush (the writer thread, a sync) may have covered it meanwhile.
            if self.durable_lsn.load(Ordering::Acquire) > target {
                Ok(())
            } else {
                self.flush_locked(&mut io, true)
            }
        };
        let took = started.elapsed();
        let mut group = self.group.lock();
        group.leading = false;
        group.flushes += 1;
        group.learn(from, self.durable_lsn.load(Ordering::Acquire), took);
        self.flush_done.notify_all();
        result
    }

    /// Waits (with `group` held, a leader leading) until the leader's flush ends or `target`
    /// is durable: yielding the CPU for `FOLLOW_SPIN` at most, then asleep.
    fn follow(&self, mut group: MutexGuard<'_, Group>, target: u64) {
        let flush = group.flushes;
        let started = Instant::now();
        while group.flushes == flush && self.durable_lsn.load(Ordering::Acquire) <= target {
            if group.contended() || started.elapsed() >= FOLLOW_SPIN {
                self.flush_done.wait(&mut group);
            } else {
                yield_once(&mut group);
            }
        }
    }

    /// A new leader waits until the group it expects is pending, for half a flush's time at
    /// most (`GATHER_MAX` at the most): the committers the last flush released append their
    /// next commits meanwhile, and one flush serves them all.
    fn gather(&self, group: &mut MutexGuard<'_, Group>) {
        let durable = self.durable_lsn.load(Ordering::Acquire);
        group.pending.retain(|&lsn| lsn >= durable);
        if group.complete() {
            return;
        }
        // Yielding, not sleeping: the committers it waits for need the CPU (a machine with
        // fewer cores than writers), and a timed sleep may last a whole scheduler tick.
        let budget = Duration::from_nanos(group.flush_ns / 2).min(GATHER_MAX);
        let started = Instant::now();
        while !group.complete() && started.elapsed() < budget {
            if group.contended() {
                let left = budget.saturating_sub(started.elapsed());
                self.announced.wait_for(group, left);
            } else {
                yield_once(group);
            }
        }
    }

    /// Notes the commit record at `target` in the group, waking a leader that gathers asleep.
    fn announce(&self, target: u64) {
        let mut group = self.group.lock();
        group.announce(target);
        if group.leading {
            self.announced.notify_all();
        }
    }

    /// Wakes the writer thread. The lock makes the wake-up impossible to miss: the writer
    /// checks what is wanted under it before it waits.
    fn wake_writer(&self) {
        let _writer_checks_under = self.shutdown.lock();
        self.write_out_wake.notify_one();
    }

    /// True if the writer thread has something to do (never once the log is poisoned: a sync
    /// that failed would otherwise be retried in a busy loop).
    fn writer_wanted(&self) -> bool {
        !self.poisoned.load(Ordering::Acquire) && self.write_out_wanted.load(Ordering::Acquire)
    }


    pub(super) fn after_append(&self, end: u64, tail_bytes: usize) -> Result<()> {
        let geometry = &self.config.geometry;
        let half = geometry.segment_size_bytes / 2;
        if geometry.offset_in_segment(end) >= half
            && self.installed_max.load(Ordering::Acquire) <= geometry.segment_of(end)
        {
            self.wake.notify_all();
        }
        if tail_bytes >= TAIL_MAX_BYTES {
            let mut io = self.io.lock();
            return self.flush_locked(&mut io, false);
        }
        if tail_bytes < self.config.write_out_bytes {
            return Ok(());
        }
        if self.config.background {
            // The writer thread takes it: appenders never wait for a pwrite.
            if !self.write_out_wanted.swap(true, Ordering::AcqRel) {
                self.wake_writer();
            }
            return Ok(());
        }
        if let Some(mut io) = self.io.try_lock() {
            return self.flush_locked(&mut io, false);
        }
        Ok(())
    }

    /// Writes the tail out and, with `sync`, makes it durable. Holds `io`; appends go on.
    fn flush_locked(&self, io: &mut IoState, sync: bool) -> Result<()> {
        self.check_open()?;
        let spare = std::mem::take(&mut io.spare);
        let (start, bytes) = {
            let mut tail = self.tail.lock();
            tail.take(spare)
        };
        let end = start + bytes.len() as u64;
        let result = self
            .ensure_epoch_durable(&bytes, end)
            .and_then(|()| self.ensure_horizon(&bytes, end))
            .and_then(|()| self.write_and_sync(io, start, &bytes, sync));
        io.spare = bytes;
        io.spare.clear();
        if let Err(error) = result {
            io.direct.forget();
            self.poison(&error);
            self.erase_unsynced(end);
            return Err(error);
        }
        self.written_lsn.store(end, Ordering::Release);
        if sync {
            self.durable_lsn.fetch_max(end, Ordering::AcqRel);
        }
        self.want_horizon_ahead(end);
        Ok(())
    }

    /// Makes this open's epoch durable, with a horizon past `end`, before the first bytes it
    /// appended are written.
    fn ensure_epoch_durable(&self, bytes: &[u8], end: u64) -> Result<()> {
        if bytes.is_empty() || self.epoch_durable.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut state = self.horizon.lock();
        let horizon = horizon_past(&self.config.geometry, end, state.step_bytes);
        self.write_epoch_file(&mut state, horizon)
    }

    /// Writes this open's epoch with `horizon` into both slots of `EPOCH` (made if missing),
    /// under the horizon's lock (`state`): the epoch is durable from here.
    fn write_epoch_file(&self, state: &mut super::horizon::HorizonState, horizon: u64) -> Result<()> {
        epoch_file::write(
            self.dir.storage().as_ref(),
            self.dir.path(),
            self.epoch,
            self.config.identity.store_id,
            horizon,
        )?;
        state.slot = 0;
        self.horizon_durable.store(horizon, Ordering::Release);
        self.epoch_durable.store(true, Ordering::Release);
        Ok(())
    }

    /// Moves the horizon past `end` before a flush writes log bytes up to it, where the
    /// horizon durable in `EPOCH` would not cover them (see [`Shared::move_horizon_past`]). With
    /// background threads the preallocator has usually moved it already (see
    /// [`Shared::want_horizon_ahead`]), and a commit never waits for `EPOCH`.
    fn ensure_horizon(&self, bytes: &[u8], end: u64) -> Result<()> {
        if bytes.is_empty() || end <= self.horizon_durable.load(Ordering::Acquire) {
            return Ok(());
        }
        assert!(
            self.epoch_durable.load(Ordering::Acquire),
            "a horizon moves only once this open's epoch is durable"
        );
        self.move_horizon_past(end)
    }

    /// Moves the horizon past `end` (by the step the log's pace calls for: see horizon.rs)
    /// unless a horizon as far is durable already: one slot written and synced, the slots taken
    /// in turn (see epoch_file.rs), under `horizon`, so a flush and the preallocator never write
    /// a slot at once.
    pub(super) fn move_horizon_past(&self, end: u64) -> Result<()> {
        let mut state = self.horizon.lock();
        let durable = self.horizon_durable.load(Ordering::Acquire);
        if horizon_past(&self.config.geometry, end, state.step_bytes) <= durable {
            return Ok(());
        }
        let step_bytes = state.step_for_move(self.log_syncs.load(Ordering::Relaxed));
        let horizon = horizon_past(&self.config.geometry, end, step_bytes);
        assert!(horizon > durable && horizon > end, "a move goes past the flush and the last horizon");
        epoch_file::write_horizon(
            self.dir.storage().as_ref(),
            self.dir.path(),
            state.slot,
            self.epoch,
            self.config.identity.store_id,
            horizon,
        )?;
        state.slot ^= 1;
        self.horizon_durable.store(horizon, Ordering::Release);
        self.horizon_step_bytes.store(step_bytes, Ordering::Release);
        self.horizon_moves.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// After a flush that wrote up to `end`: where half the room below the horizon is used,
    /// asks the preallocator thread to move it on now, off the commits' path (an `EPOCH`
    /// write and sync was one commit in ~170 of 1 KiB records paying two syncs, most of a
    /// single writer's 99th percentile).
    fn want_horizon_ahead(&self, end: u64) {
        let half_step = self.horizon_step_bytes.load(Ordering::Acquire) / 2;
        if self.config.background
            && end + half_step > self.horizon_durable.load(Ordering::Acquire)
            && !self.horizon_wanted.swap(true, Ordering::AcqRel)
        {
            let _preallocator_checks_under = self.shutdown.lock();
            self.wake.notify_all();
        }
    }

    /// After a failed flush: zeroes the log from the durable end to `end` in the files, best
    /// effort. Those bytes may sit in the page cache without being on disk — a failed sync
    /// loses them for good (the kernel marks them clean: the next sync does not write them), a
    /// failed write may have left a prefix — and an open of the store before a reboot would
    /// read them as log and append acknowledged commits after a hole the disk has. Zeros there
    /// end the log at the durable end instead (the next open syncs them).
    fn erase_unsynced(&self, end: u64) {
        let durable = self.durable_lsn.load(Ordering::Acquire);
        self.written_lsn.fetch_min(durable, Ordering::AcqRel);
        let segments = self.segments.read().clone();
        let _ = erase_garbage(&segments, &self.config.geometry, durable, end);
    }

    /// With `sync`, the flush is durable only once every segment it synced has its name: a
    /// segment deleted while open (a mistaken `rm`) is put back before the commits waiting on
    /// this flush return (see [`Shared::put_back_deleted`]), so that no acknowledged commit
    /// lives only in a file that goes with the process. One `statx` of the link count a segment
    /// synced, which costs the flush nothing measurable (storage/real.rs, `statx_narrow`).
    fn write_and_sync(&self, io: &mut IoState, start: u64, bytes: &[u8], sync: bool) -> Result<()> {
        // An O_DSYNC write makes its own range durable, not bytes written through the cache
        // before it: direct only where none wait for a sync.
        if sync
            && io.unsynced.is_empty()
            && let Some(segment) = self.write_direct(io, start, bytes)?
        {
            return self.put_back_synced(&[segment]);
        }
        let synced = self.write_through_cache(io, start, bytes, sync)?;
        io.direct.wrote(start, bytes);
        self.put_back_synced(&synced)
    }

    /// Puts back each of `synced` (segments a flush just synced) whose file was deleted while
    /// open. A check that fails reads as "not deleted" (as the preallocator's does): a failed
    /// `statx` must not fail a flush whose bytes are durable; a put-back that fails does.
    fn put_back_synced(&self, synced: &[Arc<Segment>]) -> Result<()> {
        if synced.iter().any(|segment| segment.looks_deleted()) {
            self.put_back_deleted(synced.iter())?;
        }
        Ok(())
    }

    /// A small sync flush written past the page cache, durable on return (see direct.rs): the
    /// segment written. `None` where it cannot go so: nothing was written.
    fn write_direct(&self, io: &mut IoState, start: u64, bytes: &[u8]) -> Result<Option<Arc<Segment>>> {
        let geometry = &self.config.geometry;
        let Some((at, blocks)) = io.direct.stage(start, bytes) else {
            return Ok(None);
        };
        let segment_no = geometry.segment_of(at);
        if geometry.segment_of(at + blocks.len() as u64 - 1) != segment_no {
            // One flush in a segment's worth runs on into the next: through the cache.
            return Ok(None);
        }
        let segment = self.segments.read().get(&segment_no).cloned();
        let segment = segment.expect("appends install their segments first");
        if segment.is_put_back() {
            // Written to two files (one without a name): through the cache, synced both.
            return Ok(None);
        }
        let wrote = segment
            .file
            .write_durable_direct(blocks, geometry.offset_in_segment(at))
            .context(|| format!("writing and syncing {}", segment.path.display()))?;
        if !wrote {
            return Ok(None);
        }
        self.log_syncs.fetch_add(1, Ordering::Relaxed);
        self.direct_flushes.fetch_add(1, Ordering::Relaxed);
        io.direct.wrote(start, bytes);
        Ok(Some(segment))
    }

    /// Puts back each of `segments` whose file was deleted while open (see
    /// [`Segment::put_back_if_deleted`]), then syncs the directory if one was; under the I/O
    /// lock. Returns how many.
    pub(super) fn put_back_deleted<'s>(&self, segments: impl Iterator<Item = &'s Arc<Segment>>) -> Result<usize> {
        let storage = self.dir.storage();
        let mut put_back = 0;
        for segment in segments {
            if segment.put_back_if_deleted(storage.as_ref())? {
                put_back += 1;
            }
        }
        if put_back > 0 {
            self.dir.sync_dir()?;
        }
        Ok(put_back)
    }

    /// Writes `bytes` at `start` through the page cache and, with `sync`, syncs every segment
    /// written since the last sync: returns those segments (none without `sync`).
    fn write_through_cache(&self, io: &mut IoState, start: u64, bytes: &[u8], sync: bool) -> Result<Vec<Arc<Segment>>> {
        let geometry = &self.config.geometry;
        let segments = self.segments.read().clone();
        let mut pos = start;
        let mut rest = bytes;
        while !rest.is_empty() {
            let segment_no = geometry.segment_of(pos);
            let offset = geometry.offset_in_segment(pos);
            let n = rest.len().min((geometry.segment_size_bytes - offset) as usize);
            let segment = segments.get(&segment_no).expect("appends install their segments first");
            segment.write_at(&rest[..n], offset)?;
            if !sync {
                // The commit that syncs these bytes later finds them on their way to the
                // device already (a hint: failures show up at that sync).
                let _ = segment.file.start_writeback(offset, n as u64);
            }
            io.unsynced.insert(segment_no);
            pos += n as u64;
            rest = &rest[n..];
        }
        let mut synced = Vec::new();
        if sync {
            for segment_no in std::mem::take(&mut io.unsynced) {
                if let Some(segment) = segments.get(&segment_no) {
                    self.log_syncs.fetch_add(1, Ordering::Relaxed);
                    segment.sync_data()?;
                    synced.push(segment.clone());
                }
            }
        }
        Ok(synced)
    }
}

/// Starts a thread of the log. `background`: at the lower priority of work handed off (see
/// src/background.rs); the threads a commit may wait on in its flush (the writer of the tail,
/// the interval flusher) keep the committers' priority.
pub(super) fn spawn_named(
    name: &str,
    shared: &Arc<Shared>,
    background: bool,
    body: impl FnOnce(Weak<Shared>) + Send + 'static,
) -> Result<JoinHandle<()>> {
    let weak = Arc::downgrade(shared);
    let spawned = if background {
        crate::background::spawn(name, move || body(weak))
    } else {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(weak))
            .map_err(|e| crate::address_space::with_limit(e, crate::address_space::THREAD_STACK))
    };
    spawned.map_err(|e| Error::io("starting a WAL thread", e))
}

/// Keeps the next segment installed and one spare ready, so appends never wait for a file.
pub(super) fn preallocator(weak: Weak<Shared>) {
    // The log's threads start with its first append: the pace of the log so far is measured
    // from here until the first install teaches it.
    let first_append = Instant::now();
    loop {
        let Some(shared) = weak.upgrade() else { return };
        {
            let mut stop = shared.shutdown.lock();
            if *stop {
                return;
            }
            // A horizon wanted is checked under the lock its asker notifies under: never missed.
            if !shared.horizon_wanted.load(Ordering::Acquire) {
                shared.wake.wait_for(&mut stop, Duration::from_millis(200));
            }
            if *stop {
                return;
            }
        }
        if shared.horizon_wanted.swap(false, Ordering::AcqRel) && shared.epoch_durable.load(Ordering::Acquire) {
            // Moved past what is written now, a horizon step ahead of the next flushes. A
            // failure here (a full disk) is met again, and reported, by the flush that needs it.
            let written = shared.written_lsn.load(Ordering::Acquire);
            let _ = shared.move_horizon_past(written);
        }
        let end = shared.tail.lock().pos;
        if end == shared.opened_at {
            // An open that appends nothing makes no files (a reader, or a full disk whose
            // owner freed room for this open alone).
            continue;
        }
        let geometry = shared.config.geometry;
        let wanted =
            geometry.segment_of(end) + u64::from(geometry.offset_in_segment(end) >= geometry.segment_size_bytes / 2);
        // Until an install has taught the log's pace, half a segment appended since the
        // first append estimates it, so that the next segment is made the right way (a log of
        // small commits gets zero-filled blocks, where allocated ones made every sync commit
        // an extent conversion: w1 commits in an allocated segment had a p90 of 127 us against
        // 69 at the median). Before that, no spare is made ahead (it would be zero-filled
        // blind); the install makes its own, allocated.
        let appended = end - shared.opened_at;
        if !shared.dir.pace_known() && appended >= geometry.segment_size_bytes / 2 {
            shared.dir.estimate_pace(appended, first_append.elapsed());
        }
        // Failures here (a full disk) surface on the append that needs the segment.
        if shared.dir.pace_known() {
            let _ = shared.dir.ensure_spares(1);
        }
        if shared.install_ahead(wanted).is_ok() && shared.dir.pace_known() {
            let _ = shared.dir.ensure_spares(1);
        }
        // A failure here (a full disk) is met again by the next checkpoint's call, which
        // reports it.
        let _ = put_back_deleted_segments(&shared);
    }
}

/// Puts back every live segment deleted while open (a mistaken `rm`), found by one `statx` of
/// the link count a segment: the preallocator does it at each wake (every 200 ms at most) for
/// the segments no flush syncs any more (a durable flush checks those it syncs itself: see
/// `Shared::write_and_sync`), where the next checkpoint (for an idle store, the close) was the
/// first to put them back.
fn put_back_deleted_segments(shared: &Shared) -> Result<usize> {
    let segments: Vec<Arc<Segment>> = shared.segments.read().values().cloned().collect();
    let deleted = segments.iter().any(|segment| segment.looks_deleted());
    if !deleted {
        return Ok(0);
    }
    // Under the I/O lock: no flush writes a segment while it is copied.
    let _io = shared.io.lock();
    shared.put_back_deleted(segments.iter())
}

/// Writes the tail out whenever an append finds `write_out_bytes` in it, so that appenders
/// never wait for a pwrite and the commit that syncs finds its bytes on their way to the device;
pub(super) fn writer(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        {
            let mut stop = shared.shutdown.lock();
            if !*stop && !shared.writer_wanted() {
                shared.write_out_wake.wait_for(&mut stop, Duration::from_millis(200));
            }
            if *stop {
                return;
            }
        }
        // A failure poisons the log (flush_locked); the next append or commit reports it.
        if shared.write_out_wanted.swap(false, Ordering::AcqRel) {
            let mut io = shared.io.lock();
            let _ = shared.flush_locked(&mut io, false);
        }
    }
}

/// `SyncMode::Interval`: makes the log durable every `every`.
pub(super) fn flusher(weak: Weak<Shared>, every: Duration) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        {
            let mut stop = shared.shutdown.lock();
            if *stop {
                return;
            }
            shared.wake.wait_for(&mut stop, every);
            if *stop {
                return;
            }
        }
        if shared.durable_lsn.load(Ordering::Acquire) < shared.tail.lock().pos {
            let mut io = shared.io.lock();
            let _ = shared.flush_locked(&mut io, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLUSH: Duration = Duration::from_micros(200);

    #[test]
    fn a_lone_committer_finds_its_group_complete_and_never_gathers() {
        let mut group = Group::default();
        assert_eq!(group.expected, 1, "a new log expects one commit per flush");
        group.announce(100);
        assert!(group.complete(), "its own commit completes the group");
        group.learn(0, 200, FLUSH);
        assert_eq!(group.expected, 1, "one commit served: still one expected");
        assert!(group.pending.is_empty(), "the durable commit is forgotten");
    }

    #[test]
    fn a_flush_that_served_four_commits_makes_the_next_leader_wait_for_four() {
        let mut group = Group::default();
        for lsn in [100, 200, 300, 400] {
            group.announce(lsn);
        }
        group.learn(0, 500, FLUSH);
        assert_eq!(group.expected, 4, "four commits shared the flush");
        group.announce(600);
        assert!(!group.complete(), "one of four: the leader keeps gathering");
        group.announce(600);
        assert_eq!(group.pending, vec![600], "an announcement counts once");
        group.announce(700);
        group.announce(800);
        assert!(!group.complete(), "three of four");
        group.announce(900);
        assert!(group.complete(), "the fourth completes the group");
    }

    #[test]
    fn commits_that_arrive_during_a_flush_count_toward_the_next_group() {
        let mut group = Group::default();
        group.announce(100);
        // Three more committers append while the flush of the first runs.
        for lsn in [600, 700, 800] {
            group.announce(lsn);
        }
        group.learn(0, 500, FLUSH);
        assert_eq!(group.expected, 4, "one served plus three waiting: four committers");
        assert_eq!(group.pending, vec![600, 700, 800], "the waiting ones stay pending");
    }

    #[test]
    fn a_gather_that_timed_out_lowers_the_expectation() {
        let mut group = Group::default();
        for lsn in [100, 200, 300, 400] {
            group.announce(lsn);
        }
        group.learn(0, 500, FLUSH);
        // One committer stopped: the next flush serves three after its gather timed out.
        for lsn in [600, 700, 800] {
            group.announce(lsn);
        }
        group.learn(500, 900, FLUSH);
        assert_eq!(group.expected, 3, "the next leader waits for the three that remain");
    }

    #[test]
    fn commits_made_durable_by_another_flush_are_not_counted_as_served() {
        let mut group = Group::default();
        // A sync outside the group protocol made 100 durable before this flush (from 500).
        for lsn in [100, 600] {
            group.announce(lsn);
        }
        group.learn(500, 700, FLUSH);
        assert_eq!(group.expected, 1, "only the commit at 600 was this flush's");
        assert!(group.pending.is_empty(), "both are durable and forgotten");
    }

    #[test]
    fn the_flush_time_is_a_moving_average() {
        let mut group = Group::default();
        group.learn(0, 1, Duration::from_micros(800));
        assert_eq!(group.flush_ns, 800_000, "the first flush sets it");
        group.learn(1, 2, Duration::ZERO);
        assert_eq!(group.flush_ns, 700_000, "each later flush moves it an eighth of the way");
    }

    #[test]
    fn a_late_yield_makes_waiters_sleep_for_a_while_then_yield_again() {
        let mut group = Group::default();
        assert!(!group.contended(), "a new group yields");
        group.contended_until = Some(Instant::now() + CONTENDED_FOR);
        assert!(group.contended(), "after a late yield, waiters sleep");
        group.contended_until = Some(Instant::now() - Duration::from_millis(1));
        assert!(!group.contended(), "once CONTENDED_FOR has passed, they yield again");
    }

}
