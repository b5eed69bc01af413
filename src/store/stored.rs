//! Stored writes: a bulk record whose vectors reach the disk once (FORMAT.md 15, 16.3, 16.5,
//! 17.3), with the archive off and `Options::stored_writes` on.
//!
//! A bulk record (op `batch`) logs every vector it writes, and a checkpoint later writes the
//! vector page too: each byte of a bulk load reaches the disk twice (plus the archive's copy).
//! A bulk call may instead log a vector slot of a fresh page as a **stored write**, an edit
//! without its bytes, and write the page to its file itself before the transaction can commit
//! (PostgreSQL's `wal_level = minimal`):
//!
//! 1. Under the checkpoint lock, held for one `insert_many` / `upsert_many` call (a call that
//!    finds a checkpoint or a copy holding it for longer than [`CHECKPOINT_WAIT`] logs its
//!    vectors as usual), so that no checkpoint completes and the checkpoint in force `F` stays
//!    where it is until step 4:
//! 2. in each record of the call, the vector slots of pages whose page-init lies at or after
//!    `F` become stored writes (a page with a stored write of an earlier call left the recent
//!    inits at that call's step 4: its committed bytes are in no log record);
//! 3. the records are appended and applied; the log is made durable through each record before
//!    its pages are written in place (the WAL rule), skipping the doublewrite area as every
//!    page initialised since `F` may (a torn write is rebuilt from zero, and the transaction is
//!    a loser: its commit is not written yet); the arena files are synced every
//!    [`STORED_WRITE_PAGES`] pages and at the call's end. A call of several records (with
//!    background I/O) has a thread beside the writer write each record's pages while the writer
//!    builds the next ([`write_each`]); otherwise the writer writes them itself;
//! 4. the pages leave the recent inits: every later write of them goes through the doublewrite
//!    area, since their committed bytes are not in the log to rebuild them from.
//!
//! Only then can the transaction commit. If step 3 fails, the transaction must not commit
//! (`Transaction` rolls it back at its commit): redo treats a page older than a stored write of
//! a committed transaction as damage, and one of any other transaction as free bytes.
//!
//! Not with the archive on (a restore replays the archived log over a base image, which may
//! be older than the page), nor while a copy is held (it holds the checkpoint lock). Measured
//! slower than logging the vectors on the reference disk (the call waits for its pages' sync,
//! where the logged path leaves the page writes to the background checkpointer): off by
//! default.

use parking_lot::MutexGuard;

use crate::Lsn;
use crate::error::Result;
use crate::format::page::{PageId, Space};
use crate::format::record::{Edit, EditKind};
use crate::store::Inner;
use crate::store::checkpoint::{self, StoredPages};

/// How many pages with stored writes a bulk call writes at once (16 MiB of 16 KiB pages): its
/// records share one sync of the arena files, and its memory stays bounded.
pub(crate) const STORED_WRITE_PAGES: usize = 1024;

/// How long a bulk call waits for a checkpoint that holds the checkpoint lock before it logs its
/// vectors instead: the memory budget's writeback checkpoints (a sixteenth of the budget, tens
/// of milliseconds) run between bulk calls, and a call that gave up at once logged its vectors,
/// whose pages the next checkpoint then wrote: each byte twice again, and the next writeback
/// sooner (measured: most of a 256 MiB load's calls gave up). A copy of the store holds the
/// lock for as long as it takes: the call gives up after this.
const CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The right to make stored writes in the records of one bulk call: the checkpoint lock, held
/// from before the first record is built until the last one's pages are durable.
pub(crate) struct StoredWrites<'a> {
    _no_checkpoint: MutexGuard<'a, ()>,
    in_force: Lsn,
    /// Pages with stored writes not yet handed to a write, in page order.
    pending: Vec<PageId>,
    /// Every page with a stored write in this call, in page order.
    marked: Vec<PageId>,
}

impl<'a> StoredWrites<'a> {
    /// The right for one bulk call, if this store may make stored writes and no checkpoint (or
    /// copy) runs now.
    pub(crate) fn begin(inner: &'a Inner) -> Option<StoredWrites<'a>> {
        if inner.options.archive || inner.read_only || !inner.options.stored_writes {
            return None;
        }
        let no_checkpoint = inner.checkpoint_lock.try_lock_for(CHECKPOINT_WAIT)?;
        let in_force = inner.control.lock().1.checkpoint_lsn;
        Some(StoredWrites {
            _no_checkpoint: no_checkpoint,
            in_force,
            pending: Vec::new(),
            marked: Vec::new(),
        })
    }

    /// The checkpoint in force, which stays so while this is held.
    pub(crate) fn in_force(&self) -> Lsn {
        self.in_force
    }

    /// Makes the vector writes of `edits` (those `is_vector` names) that fall in pages
    /// initialised since the checkpoint in force stored writes, and notes their pages. (A page
    /// written already in this call may take more: the transaction has not committed, so a
    /// torn rewrite of it loses nothing committed.)
    pub(crate) fn mark(&mut self, inner: &Inner, edits: &mut [Edit<'_>], is_vector: impl Fn(usize) -> bool) {
        let recent = inner.recent_inits.lock();
        for (index, edit) in edits.iter_mut().enumerate() {
            let eligible = is_vector(index)
                && edit.kind == EditKind::Write
                && edit.before.is_none()
                && edit.page.space() == Space::Vector
                && recent.get(&edit.page).is_some_and(|&init| init >= self.in_force);
            if !eligible {
                continue;
            }
            edit.kind = EditKind::Stored {
                len: u32::try_from(edit.after.len()).expect("an edit lies in a page"),
            };
            for pages in [&mut self.pending, &mut self.marked] {
                if let Err(at) = pages.binary_search(&edit.page) {
                    pages.insert(at, edit.page);
                }
            }
        }
    }

    /// Whether this call made any stored write.
    pub(crate) fn any(&self) -> bool {
        !self.marked.is_empty()
    }

    /// How many pages have stored writes not yet handed to a write.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The pages with stored writes not yet handed to a write, for [`write_each`].
    pub(crate) fn take_pending(&mut self) -> Vec<PageId> {
        std::mem::take(&mut self.pending)
    }

    /// Step 3 for the pending pages, whose stored writes lie in records up to `lsn`: makes the
    /// log durable through it, writes the pages in place and syncs them.
    pub(crate) fn write(&mut self, inner: &Inner, lsn: Lsn) -> Result<()> {
        let pages = self.take_pending();
        write_pages(inner, self.in_force, lsn, &pages)
    }

    /// Step 4, whatever the outcome of the writes: every page with a stored write in this call
    /// leaves the recent inits (a later write of it goes through the doublewrite area); then
    /// checkpoints may run again.
    pub(crate) fn finish(self, inner: &Inner) {
        let mut recent = inner.recent_inits.lock();
        for page in &self.marked {
            recent.remove(page);
        }
    }
}

/// Step 3 for `pages`, whose stored writes lie in records up to `lsn`: the log made durable
/// through it, the pages written in place and synced.
fn write_pages(inner: &Inner, in_force: Lsn, lsn: Lsn, pages: &[PageId]) -> Result<()> {
    let mut written = StoredPages::default();
    write_unsynced(inner, in_force, lsn, pages, &mut written)?;
    checkpoint::sync_stored(inner, written)
}

/// [`write_pages`] without the sync: what it wrote goes to `written`.
fn write_unsynced(inner: &Inner, in_force: Lsn, lsn: Lsn, pages: &[PageId], written: &mut StoredPages) -> Result<()> {
    if pages.is_empty() {
        return Ok(());
    }
    inner.wal.flush_through(lsn)?;
    checkpoint::write_stored(inner, pages, in_force, written)
}

/// Step 3 on a thread beside the writer: writes the pages of each `(lsn, pages)` received, in
/// order, while the writer builds the next record (the device starts on them at once), and
/// syncs them all once the writer hangs up. After the first failure it writes nothing more;
/// it returns that failure.
pub(crate) fn write_each(inner: &Inner, in_force: Lsn, received: std::sync::mpsc::Receiver<(Lsn, Vec<PageId>)>) -> Result<()> {
    let mut written = StoredPages::default();
    let mut outcome = Ok(());
    while let Ok((mut lsn, mut pages)) = received.recv() {
        // Records that queued up meanwhile go together: one flush of the log for them all.
        while let Ok((later, more)) = received.try_recv() {
            lsn = later;
            pages.extend(more);
        }
        if outcome.is_ok() {
            pages.sort_unstable();
            pages.dedup();
            outcome = write_unsynced(inner, in_force, lsn, &pages, &mut written);
        }
        // Written pages keep their private memory until a sync lets them give it back: a long
        // call syncs every `STORED_WRITE_PAGES`, as the writer's own writes do.
        if outcome.is_ok() && written.len() >= STORED_WRITE_PAGES {
            outcome = checkpoint::sync_stored(inner, std::mem::take(&mut written));
        }
    }
    outcome.and_then(|()| checkpoint::sync_stored(inner, written))
}
