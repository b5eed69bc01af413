//! Stored writes: a bulk record whose vectors reach the disk once (FORMAT.md 15, 16.3, 17.3).
//!
//! A bulk record (op `batch`) logs every vector it writes, and a checkpoint later writes the
//! vector page too: each byte of a bulk load reached the disk twice (plus the archive's copy).
//! Without an archive, a batch may instead log a vector slot of a fresh page as a **stored
//! write**, an edit without its bytes, and write the page to its file itself before the
//! transaction can commit (PostgreSQL's `wal_level = minimal`):
//!
//! 1. Under the checkpoint lock, held for one `insert_many` / `upsert_many` call (taken without
//!    waiting: a call that finds a checkpoint or a copy running logs its vectors as usual), so
//!    that no checkpoint completes and the checkpoint in force `F` stays where it is until
//!    step 4:
//! 2. the vector slots of pages whose page-init lies at or after `F` (and that had no stored
//!    write made durable since: such a page leaves the recent inits at step 4) become stored
//!    writes, in each record of the call;
//! 3. the records are appended and applied; then, every [`STORED_WRITE_PAGES`] pages and at
//!    the call's end, the log is made durable through the last (the WAL rule for the pages
//!    written next); each such page is written in place, skipping the doublewrite area as every
//!    page initialised since `F` may (a torn write is rebuilt from zero, and the transaction is
//!    a loser: its commit is not written yet), and the arena files are synced once;
//! 4. the pages leave the recent inits: every later write of them goes through the doublewrite
//!    area, since their committed bytes are not in the log to rebuild them from.
//!
//! Only then can the transaction commit. If step 3 fails, the transaction must not commit
//! (`Transaction` rolls it back at its commit): redo treats a page older than a stored write of
//! a committed transaction as damage, and one of any other transaction as free bytes.
//!
//! Not with the archive on (a restore replays the archived log over a base image, which may
//! be older than the page), nor while a copy is held (it holds the checkpoint lock).

use parking_lot::MutexGuard;

use crate::Lsn;
use crate::error::Result;
use crate::format::page::{PageId, Space};
use crate::format::record::{Edit, EditKind};
use crate::store::Inner;

/// How many pages with stored writes a bulk call writes at once (16 MiB of 16 KiB pages): its
/// records share one sync of the arena files, and its memory stays bounded.
pub(crate) const STORED_WRITE_PAGES: usize = 1024;

/// The right to make stored writes in the records of one bulk call: the checkpoint lock, held
/// from before the first record is built until the last one's pages are durable.
pub(crate) struct StoredWrites<'a> {
    _no_checkpoint: MutexGuard<'a, ()>,
    in_force: Lsn,
    pages: Vec<PageId>,
}

impl<'a> StoredWrites<'a> {
    /// The right for one bulk call, if this store may make stored writes and no checkpoint (or
    /// copy) runs now.
    pub(crate) fn begin(inner: &'a Inner) -> Option<StoredWrites<'a>> {
        if inner.options.archive || inner.read_only || !inner.options.stored_writes {
            return None;
        }
        let no_checkpoint = inner.checkpoint_lock.try_lock()?;
        let in_force = inner.control.lock().1.checkpoint_lsn;
        Some(StoredWrites {
            _no_checkpoint: no_checkpoint,
            in_force,
            pages: Vec::new(),
        })
    }

    /// Makes the vector writes of `edits` (those `is_vector` names) that fall in pages
    /// initialised since the checkpoint in force stored writes, and notes their pages.
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
            if let Err(at) = self.pages.binary_search(&edit.page) {
                self.pages.insert(at, edit.page);
            }
        }
    }

    /// Whether stored writes were made since the last [`StoredWrites::write`].
    pub(crate) fn any(&self) -> bool {
        !self.pages.is_empty()
    }

    /// The pages with stored writes made since the last [`StoredWrites::write`].
    pub(crate) fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Steps 3 and 4 for the records up to `lsn`, which hold the stored writes: makes the log
    /// durable through it, writes the pages in place and syncs them. The pages leave the recent
    /// inits whatever the outcome (a later write of them then goes through the doublewrite
    /// area; and a page partly filled gets no stored write in a later record, whose pages are
    /// written after its own).
    pub(crate) fn write(&mut self, inner: &Inner, lsn: Lsn) -> Result<()> {
        if self.pages.is_empty() {
            return Ok(());
        }
        let written = inner
            .wal
            .flush_through(lsn)
            .and_then(|()| crate::store::checkpoint::write_stored(inner, &self.pages, self.in_force));
        let mut recent = inner.recent_inits.lock();
        for page in self.pages.drain(..) {
            recent.remove(&page);
        }
        written
    }
}
