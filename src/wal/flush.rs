//! Group commit and the log's background threads: one committer at a time leads a flush
//! (pwrite, then fdatasync of every segment touched) for everything appended so far, the others
//! wait for it; the preallocator keeps the next segment and a spare ready, the writer thread
//! takes write-outs off the appenders, the flusher makes the log durable every interval.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use super::*;

impl Wal {
    /// Applies the sync mode to a commit record at `lsn`: with `Always`, returns once it is
    /// durable (sharing one flush with concurrent committers); otherwise returns at once.
    pub fn commit(&self, lsn: Lsn) -> Result<()> {
        match self.shared.config.sync {
            SyncMode::Always => self.flush_through(lsn),
            SyncMode::Interval(_) | SyncMode::Never => Ok(()),
        }
    }

    /// Lets the writer thread start making the commit record at `lsn` durable while the caller
    /// does other work (a committer publishing its changes) before `commit(lsn)` waits for it.
    /// A hint: without background threads or with another sync mode it does nothing.
    pub fn start_commit(&self, lsn: Lsn) {
        let shared = &*self.shared;
        if !shared.config.background || shared.config.sync != SyncMode::Always {
            return;
        }
        if shared.sync_wanted.fetch_max(lsn.get() + 1, Ordering::AcqRel) <= lsn.get() {
            shared.wake_writer();
        }
    }

    /// Returns once the record at `lsn` (and everything before it) is durable.
    ///
    /// Group commit: one committer at a time leads a flush, taking everything appended so far;
    /// the others wait on a condition variable and all wake when it ends. Those it covered
    /// return; one of the rest leads the next flush, covering every record appended meanwhile.
    pub fn flush_through(&self, lsn: Lsn) -> Result<()> {
        let shared = &*self.shared;
        shared.committers.fetch_add(1, Ordering::AcqRel);
        let result = self.lead_or_follow(lsn);
        shared.committers.fetch_sub(1, Ordering::AcqRel);
        result
    }

    fn lead_or_follow(&self, lsn: Lsn) -> Result<()> {
        let shared = &*self.shared;
        loop {
            if shared.durable_lsn.load(Ordering::Acquire) > lsn.get() {
                return Ok(());
            }
            shared.check_open()?;
            {
                let mut leading = shared.flush_leader.lock();
                if shared.durable_lsn.load(Ordering::Acquire) > lsn.get() {
                    return Ok(());
                }
                if *leading {
                    shared.flush_done.wait(&mut leading);
                    continue;
                }
                *leading = true;
            }
            shared.gather_committers();
            let result = {
                let mut io = shared.io.lock();
                // The writer thread may have made it durable while this waited for `io`.
                if shared.durable_lsn.load(Ordering::Acquire) > lsn.get() {
                    Ok(())
                } else {
                    shared.flush_locked(&mut io, true)
                }
            };
            *shared.flush_leader.lock() = false;
            shared.flush_done.notify_all();
            result?;
        }
    }

    /// Stops the log as an I/O error does: every later append, flush and sync fails with
    /// `Error::Closed` until the store is reopened. For an owner whose state the log can no
    /// longer describe (a transaction whose rollback could not be logged).
    pub fn poison(&self) {
        self.shared.poisoned.store(true, Ordering::Release);
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

impl Shared {
    /// A new flush leader waits (at most `GATHER_MAX`) until the tail holds as many records as
    /// there are committers waiting, so committers that a flush just released can append their
    /// next record and share the next flush instead of forming a group of their own. A lone
    /// committer never waits: its own record already meets the count.
    fn gather_committers(&self) {
        const GATHER_MAX: Duration = Duration::from_micros(50);
        let started = std::time::Instant::now();
        while self.records_in_tail.load(Ordering::Acquire) < self.committers.load(Ordering::Acquire)
            && started.elapsed() < GATHER_MAX
        {
            std::thread::yield_now();
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
        !self.poisoned.load(Ordering::Acquire)
            && (self.write_out_wanted.load(Ordering::Acquire)
                || self.sync_wanted.load(Ordering::Acquire) > self.durable_lsn.load(Ordering::Acquire))
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
            self.records_in_tail.store(0, Ordering::Release);
            tail.take(spare)
        };
        let end = start + bytes.len() as u64;
        let result = self
            .ensure_epoch_durable(&bytes)
            .and_then(|()| self.write_and_sync(io, start, &bytes, sync));
        io.spare = bytes;
        io.spare.clear();
        if let Err(error) = result {
            self.poisoned.store(true, Ordering::Release);
            self.erase_unsynced(end);
            return Err(error);
        }
        self.written_lsn.store(end, Ordering::Release);
        if sync {
            self.durable_lsn.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Makes this open's epoch durable before the first bytes it appended are written.
    fn ensure_epoch_durable(&self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() || self.epoch_durable.load(Ordering::Acquire) {
            return Ok(());
        }
        epoch_file::write(
            self.dir.storage().as_ref(),
            self.dir.path(),
            self.epoch,
            self.config.identity.store_id,
        )?;
        self.epoch_durable.store(true, Ordering::Release);
        Ok(())
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

    fn write_and_sync(&self, io: &mut IoState, start: u64, bytes: &[u8], sync: bool) -> Result<()> {
        let geometry = &self.config.geometry;
        let segments = self.segments.read().clone();
        let mut pos = start;
        let mut rest = bytes;
        while !rest.is_empty() {
            let segment_no = geometry.segment_of(pos);
            let offset = geometry.offset_in_segment(pos);
            let n = rest.len().min((geometry.segment_size_bytes - offset) as usize);
            let segment = segments.get(&segment_no).expect("appends install their segments first");
            segment
                .file
                .write_at(&rest[..n], offset)
                .context(|| format!("writing {}", segment.path.display()))?;
            if !sync {
                // The commit that syncs these bytes later finds them on their way to the
                // device already (a hint: failures show up at that sync).
                let _ = segment.file.start_writeback(offset, n as u64);
            }
            io.unsynced.insert(segment_no);
            pos += n as u64;
            rest = &rest[n..];
        }
        if sync {
            for segment_no in std::mem::take(&mut io.unsynced) {
                if let Some(segment) = segments.get(&segment_no) {
                    segment
                        .file
                        .sync_data()
                        .context(|| format!("syncing {}", segment.path.display()))?;
                }
            }
        }
        Ok(())
    }
}

pub(super) fn spawn_named(
    name: &str,
    shared: &Arc<Shared>,
    body: impl FnOnce(Weak<Shared>) + Send + 'static,
) -> Result<JoinHandle<()>> {
    let weak = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || body(weak))
        .map_err(|e| Error::io("starting a WAL thread", e))
}

/// Keeps the next segment installed and one spare ready, so appends never wait for a file.
pub(super) fn preallocator(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        {
            let mut stop = shared.shutdown.lock();
            if *stop {
                return;
            }
            shared.wake.wait_for(&mut stop, Duration::from_millis(200));
            if *stop {
                return;
            }
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
        // Failures here (a full disk) surface on the append that needs the segment.
        if shared.install_through(wanted).is_ok() {
            let _ = shared.dir.ensure_spares(1);
        }
    }
}

/// Writes the tail out whenever an append finds `write_out_bytes` in it, so that appenders
/// never wait for a pwrite and the commit that syncs finds its bytes on their way to the device;
/// and starts the sync of a commit whose committer has other work first (`Wal::start_commit`).
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
        let write_out = shared.write_out_wanted.swap(false, Ordering::AcqRel);
        let sync_wanted = shared.sync_wanted.load(Ordering::Acquire);
        if sync_wanted > shared.durable_lsn.load(Ordering::Acquire) {
            let mut io = shared.io.lock();
            if sync_wanted > shared.durable_lsn.load(Ordering::Acquire) {
                let _ = shared.flush_locked(&mut io, true);
            }
        } else if write_out {
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
