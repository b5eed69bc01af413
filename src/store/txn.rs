//! Write transactions: one at a time, holding the writer lock from `begin` to commit or abort.
//!
//! Each operation is one `update` record: the new vector and catalog entry go to free space
//! (no before-image needed); the vector page's owner table, the catalog page's directory and
//! header, the index nodes, the list links and the meta page change with before-images (or, for
//! a node's directory, as inserts and removes that undo each other). The record is applied as
//! it is logged; readers do not see it before the commit (`store::mask`). Abort undoes the
//! records newest first, logging a CLR for each, then an `end` record.

use std::ops::Range;
use std::sync::atomic::Ordering;

use parking_lot::MutexGuard;
use zerocopy::IntoBytes;
use zerocopy::little_endian::U32;

use super::alloc::{OpCtx, Release, WriterState};
use super::catalog::{EntryMeta, NewEntry, inline_fits, read_entry};
use super::edits::EditList;
use super::stored::{STORED_WRITE_PAGES, StoredWrites};
use super::{ActiveTxn, Store};
use crate::format::index::{LeafValue, MetaFields};
use crate::format::meta::{self, ID_MAX_BYTES, METADATA_MAX_BYTES};
use crate::format::page::{self, PageId, Space};
use crate::format::record::{self, Edit, EditKind, Kind, Op};
use crate::{Error, Lsn, Result};

/// What one record hides from readers for one id: the id, its value before, the vector slot
/// `(page number, slot)` it wrote.
type Masked<'a> = (&'a str, Option<LeafValue>, Option<(u32, u32)>);

/// One row of a bulk load: `(id, vector, metadata)`.
pub type Row<'a> = (&'a str, &'a [f32], &'a [(&'a str, &'a str)]);

/// About how many bytes of vectors one record of a bulk load holds.
pub const BATCH_RECORD_BYTES: usize = 256 << 10;

/// At most this many rows go in one record of a bulk load (whatever the dimension).
const BATCH_ROWS_MAX: usize = 1024;

/// A write transaction. Dropping it without `commit` aborts it.
pub struct Transaction<'s> {
    store: &'s Store,
    writer: MutexGuard<'s, WriterState>,
    active: ActiveTxn,
    /// What abort needs of each update record: its compensation edits.
    undo: UndoLog,
    /// What the transaction's operations freed (quarantined; reusable after the commit once
    /// readers are gone).
    released: Vec<Release>,
    /// Buffers reused by every operation, so that an insert allocates almost nothing: the
    /// edits being built, the encoded payload and the encoded metadata.
    edits: EditList,
    payload: Vec<u8>,
    meta_bytes: Vec<u8>,
    finished: bool,
    /// Why the transaction must not commit: the pages of its stored writes were not made
    /// durable (src/store/stored.rs). Its commit rolls it back instead.
    doomed: Option<String>,
}

/// How many of the pages the last edits touched a record's page check remembers
/// ([`Transaction::log_update_of`]).
const CHECKED_RECENT_PAGES: usize = 8;

/// After a commit is durable (per the sync mode): a checkpoint that fails here leaves its
/// pages dirty and is retried at the next trigger.
pub(super) fn after_durable(store: &Store) {
    let _ = store.inner().nudge_checkpointer();
    super::graph::maybe_vacuum(store); // Hook (approximate index)
}

impl<'s> Transaction<'s> {
    pub(super) fn begin(store: &'s Store) -> Result<Transaction<'s>> {
        store.inner().check_writable()?;
        store.ensure_checkpointer()?;
        let inner = store.inner();
        let mut writer = inner.writer.lock();
        inner.epochs.try_advance();
        reclaim(&mut writer, inner);
        writer.fill = None;
        let txn_id = writer.next_txn_id;
        writer.next_txn_id += 1;
        inner.next_txn_id.store(writer.next_txn_id, Ordering::SeqCst);
        let buffers = std::mem::take(&mut writer.buffers);
        Ok(Transaction {
            store,
            writer,
            active: ActiveTxn {
                txn_id,
                first_lsn: Lsn::NONE,
                last_lsn: Lsn::NONE,
            },
            undo: buffers.undo,
            released: Vec::new(),
            edits: buffers.edits,
            payload: buffers.payload,
            meta_bytes: buffers.meta_bytes,
            finished: false,
            doomed: None,
        })
    }

    /// This transaction's id.
    pub fn id(&self) -> u64 {
        self.active.txn_id
    }

    /// Inserts a vector; `Err(AlreadyExists)` if `id` is present.
    pub fn insert(&mut self, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<Lsn> {
        self.store.inner().check_process()?;
        self.check_input(id, vector, metadata)?;
        // The lookup runs inside the operation (`write_entry`), before it builds anything:
        // its descent is the one the index insert then starts from.
        self.write_entry(Op::Insert, id, vector, metadata)
    }

    /// Inserts or replaces a vector.
    pub fn upsert(&mut self, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<Lsn> {
        self.store.inner().check_process()?;
        self.check_input(id, vector, metadata)?;
        self.write_entry(Op::Upsert, id, vector, metadata)
    }

    /// Deletes a vector; returns whether it existed.
    pub fn delete(&mut self, id: &str) -> Result<bool> {
        self.store.inner().check_process()?;
        check_id(id)?;
        let Some(old) = self.lookup(id)? else { return Ok(false) };
        let mut list = self.take_edit_list();
        let built = self.op(&mut list, |ctx| {
            ctx.index_remove(id.as_bytes())?;
            free_value(ctx, &old)?;
            super::graph::on_delete(ctx, &old) // Hook (approximate index)
        });
        let logged = built.and_then(|()| self.log_update(Op::Delete, id, &list.edits(&[]), Some(old), None));
        self.edits = list;
        logged?;
        Ok(true)
    }

    /// Inserts every row `(id, vector, metadata)`; `Err(AlreadyExists)` if an id is present
    /// or appears twice, and then nothing changes. Rows are logged many to a record (the bulk
    /// path: see [`Transaction::upsert_many`]). Returns the LSN of the last record.
    pub fn insert_many(&mut self, rows: &[Row<'_>]) -> Result<Lsn> {
        self.store.inner().check_process()?;
        self.check_rows(rows)?;
        // foldhash, seeded per set: SipHash over every id was a twentieth of a bulk insert.
        let mut seen: std::collections::HashSet<&str, super::state::FastHash> =
            std::collections::HashSet::with_capacity_and_hasher(rows.len(), Default::default());
        // Nothing changes the index while the ids are looked up: each lookup starts from the
        // leaf the last one reached where the id lies in its keys.
        let (inner, root) = (self.store.inner(), self.writer.meta.root.get());
        let mut hint = super::tree::LeafHint::default();
        for (id, _, _) in rows {
            if !seen.insert(*id) || super::tree::writer_lookup_hinted(inner, root, id.as_bytes(), &mut hint)?.is_some() {
                return Err(Error::AlreadyExists);
            }
        }
        self.write_many(rows)
    }

    /// Inserts or replaces every row `(id, vector, metadata)` (an id given twice ends with its
    /// last row). Every row is checked before anything changes: one bad row (wrong dimension,
    /// NaN, an id or metadata too long) is an `InvalidArgument` naming it, and the
    /// transaction is as it was. The rows are logged many to a record, up to about
    /// [`BATCH_RECORD_BYTES`] each: one copy of each vector into the log and one into its
    /// page, one record header for the lot. An I/O error part way leaves the rows before it
    /// in the transaction (abort it to undo them; [`Store::upsert_many`] does).
    pub fn upsert_many(&mut self, rows: &[Row<'_>]) -> Result<Lsn> {
        self.store.inner().check_process()?;
        self.check_rows(rows)?;
        self.write_many(rows)
    }

    /// The vector `id` as this transaction sees it (its own writes included).
    pub fn get(&self, id: &str) -> Option<Vec<f32>> {
        let inner = self.store.inner();
        let value = self.lookup(id).ok()??;
        let pin = inner.epochs.pin();
        let entry = read_entry(&inner.arena, &inner.layout, &value).ok()?;
        Some(inner.vector_ref(&entry, pin).ok()?.to_vec())
    }

    /// Commits: the changes become visible to readers, and durable per the sync mode before
    /// this returns. Returns the commit record's LSN.
    pub fn commit(mut self) -> Result<Lsn> {
        self.check_process_or_forget()?;
        let store = self.store;
        let lsn = self.publish()?;
        // The writer lock is released: other writers proceed while this commit waits for its
        // flush, and share it (group commit).
        store.inner().wal.commit(lsn)?;
        // The commit is durable (per the sync mode) whatever happens next; a file of the store
        // deleted meanwhile is back before a durable commit returns (store/deletions.rs).
        let put_back = super::deletions::put_back_after_commit(store.inner());
        after_durable(store);
        put_back.map(|()| lsn)
    }

    /// Appends the commit record and publishes the transaction's changes (visible at once),
    /// releasing the writer lock; the commit is not yet durable: the caller makes it so
    /// (`Wal::commit`) and then calls [`after_durable`].
    pub(super) fn publish(mut self) -> Result<Lsn> {
        if let Some(why) = self.doomed.take() {
            self.rollback()?;
            return Err(Error::Closed(format!("the transaction was rolled back: {why}")));
        }
        let store = self.store;
        let inner = store.inner();
        let lsn = inner.log_and_apply(Some(&mut self.active), Kind::Commit, &[], &[])?;
        // The device works on the commit while its changes are published (they are visible
        // before they are durable, as with any committer that waits for a group's flush).
        inner.wal.start_commit(lsn);
        // The changes first, then the count: a reader that sees the new count finds every id
        // it counts (the other order let a reader that ran between the two count an id whose
        // slot the mask still hid: `get` said absent).
        inner.mask.clear();
        #[cfg(test)]
        tests::between_publications(inner);
        inner.count.store(self.writer.meta.count.get(), Ordering::Release);
        super::graph::after_commit(inner, self.writer.meta.graph.get()); // Hook (approximate index)
        let epoch = inner.epochs.now();
        let released = std::mem::take(&mut self.released);
        self.writer
            .quarantine
            .released
            .extend(released.into_iter().map(|r| (epoch, r)));
        *inner.apply.lock() = None;
        self.finished = true;
        drop(self);
        Ok(lsn)
    }

    /// Rolls back every change of this transaction.
    pub fn abort(mut self) -> Result<()> {
        self.check_process_or_forget()?;
        self.rollback()
    }

    /// In a forked child (src/fork.rs) the transaction is the parent's to finish: refused,
    /// and marked finished so that its drop does not roll it back into the parent's log.
    fn check_process_or_forget(&mut self) -> Result<()> {
        let checked = self.store.inner().check_process();
        if checked.is_err() {
            self.finished = true;
        }
        checked
    }

    fn rollback(&mut self) -> Result<()> {
        self.finished = true;
        let inner = self.store.inner();
        let result = self.undo_all();
        if let Err(error) = &result {
            // The log holds this transaction's changes but not their undoing, and so do the
            // pages in memory: nothing more may be logged (a checkpoint would record the
            // transaction as gone and write its changes out). The next open rolls it back;
            // until then readers see the committed state through the mask.
            inner.wal.poison(error);
            inner.mask.freeze();
        }
        *inner.apply.lock() = None;
        let writer = &mut *self.writer;
        for release in self.released.drain(..) {
            writer.quarantine.lift(&release);
        }
        if result.is_ok() {
            // The pages hold what they held before the transaction: so do the writer's views,
            // and readers may read the pages unmasked.
            reload_meta(inner, writer);
            inner.mask.clear();
            super::graph::after_undo(inner, writer.meta.graph.get()); // Hook (approximate index)
        }
        // Otherwise the pages still hold some of the transaction's changes: the mask stays, so
        // readers go on seeing the committed state until the store is closed (it is poisoned:
        // nothing more is written) and the next open rolls the transaction back.
        result
    }

    fn undo_all(&mut self) -> Result<()> {
        if self.undo.records.is_empty() {
            return Ok(());
        }
        let inner = self.store.inner();
        inner.log_and_apply(Some(&mut self.active), Kind::Abort, &[], &[])?;
        let undo = std::mem::take(&mut self.undo);
        for record in (0..undo.records.len()).rev() {
            let (undo_next, compensation) = undo.compensation(record);
            let clr = record::encode_clr(undo_next, &compensation);
            inner.log_and_apply(Some(&mut self.active), Kind::Clr, &[&clr], &compensation)?;
        }
        inner.log_and_apply(Some(&mut self.active), Kind::End, &[], &[])?;
        Ok(())
    }

    /// The value `id` has as this transaction sees it.
    fn lookup(&self, id: &str) -> Result<Option<LeafValue>> {
        super::tree::writer_lookup(self.store.inner(), self.writer.meta.root.get(), id.as_bytes())
    }

    fn check_input(&self, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<()> {
        check_input(self.store.dimension(), id, vector, metadata)
    }

    fn check_rows(&self, rows: &[Row<'_>]) -> Result<()> {
        check_rows(self.store.dimension(), rows)
    }

    /// Logs `rows` (checked) in records of up to [`BATCH_RECORD_BYTES`]; an id a record
    /// already holds starts the next one (its entry must be in the pages before it is
    /// replaced).
    fn write_many(&mut self, rows: &[Row<'_>]) -> Result<Lsn> {
        let row_bytes = self.store.dimension() * 4 + 64;
        let per_record = (BATCH_RECORD_BYTES / row_bytes).clamp(1, BATCH_ROWS_MAX);
        // Hook (approximate index): each row's graph insert reads through the record's pending
        // edits, so with an index rows go one to a record (the insert costs far more anyway).
        let per_record = if self.writer.meta.graph.get() != 0 { 1 } else { per_record };
        // Taken before the rows are built (the pages they format count as recent then), for the
        // whole call (src/store/stored.rs).
        let inner = self.store.inner();
        let Some(mut stored) = (rows.len() > 1 && per_record > 1).then(|| StoredWrites::begin(inner)).flatten() else {
            return self.write_records(rows, per_record, None, None);
        };
        // A call of several records writes each one's stored pages on a thread beside it while
        // it builds the next (where threads may be started: not in reproducible runs).
        let (logged, written) = if inner.options.background_io && rows.len() > per_record {
            std::thread::scope(|scope| {
                let (sender, received) = std::sync::mpsc::channel();
                let in_force = stored.in_force();
                let beside = std::thread::Builder::new()
                    .name("vellum-stored".into())
                    .spawn_scoped(scope, move || super::stored::write_each(inner, in_force, received));
                let Ok(beside) = beside else {
                    return (self.write_records(rows, per_record, Some(&mut stored), None), Ok(()));
                };
                let logged = self.write_records(rows, per_record, Some(&mut stored), Some(&sender));
                drop(sender);
                let written = beside.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (logged, written)
            })
        } else {
            (self.write_records(rows, per_record, Some(&mut stored), None), Ok(()))
        };
        let outcome = logged.and_then(|lsn| written.map(|()| lsn));
        if let Err(error) = &outcome
            && stored.any()
        {
            // Stored writes whose pages may not be durable: this transaction must not commit.
            self.doomed = Some(format!("the pages of a bulk write were not written: {error}"));
        }
        stored.finish(inner);
        outcome
    }

    /// Logs `rows` in records of `per_record` rows (an id a record already holds starts the
    /// next); with `stored`, writes the pages of their stored writes every
    /// [`STORED_WRITE_PAGES`] pages and after the last record, or hands each record's to
    /// `beside`.
    fn write_records(
        &mut self,
        rows: &[Row<'_>],
        per_record: usize,
        mut stored: Option<&mut StoredWrites<'_>>,
        beside: Option<&std::sync::mpsc::Sender<(Lsn, Vec<PageId>)>>,
    ) -> Result<Lsn> {
        let inner = self.store.inner();
        let mut lsn = self.active.last_lsn;
        let mut start = 0;
        let mut ids: std::collections::HashSet<&str, super::state::FastHash> = Default::default();
        while start < rows.len() {
            ids.clear();
            let mut end = start;
            while end < rows.len() && end - start < per_record && ids.insert(rows[end].0) {
                end += 1;
            }
            lsn = self.write_batch(&rows[start..end], stored.as_deref_mut())?;
            start = end;
            let Some(stored) = stored.as_deref_mut() else { continue };
            match beside {
                // A send fails only if the thread has stopped, which it does not before the
                // sender hangs up (it drains the channel after a failure too).
                Some(beside) => beside
                    .send((lsn, stored.take_pending()))
                    .expect("the stored-page writer waits for every record"),
                None if start == rows.len() || stored.pending() >= STORED_WRITE_PAGES => stored.write(inner, lsn)?,
                None => {}
            }
        }
        Ok(lsn)
    }

    /// `stored`: the right to log its vectors in fresh pages as stored writes (a batch only).
    fn write_batch(&mut self, rows: &[Row<'_>], mut stored: Option<&mut StoredWrites<'_>>) -> Result<Lsn> {
        let mut meta_bytes = std::mem::take(&mut self.meta_bytes);
        meta_bytes.clear();
        let mut meta_ends = Vec::with_capacity(rows.len());
        for (_, _, metadata) in rows {
            meta::encode(metadata, &mut meta_bytes);
            meta_ends.push(meta_bytes.len());
        }
        let inner = self.store.inner();
        let mut list = self.take_edit_list();
        let built = self.op(&mut list, |ctx| {
            let mut masked = Vec::with_capacity(rows.len());
            let mut written: Vec<((PageId, u32), &[f32])> = Vec::new();
            let mut from = 0;
            for (n, ((id, vector, _), &to)) in rows.iter().zip(&meta_ends).enumerate() {
                let (before, slot) = build_entry_of(ctx, n, id, &meta_bytes[from..to])?;
                // Hook (approximate index): the rows before it are pending in this record too.
                super::graph::on_put(ctx, slot, vector, before.as_ref(), &written)?;
                written.push((slot, vector));
                masked.push((*id, before, Some((slot.0.page_no() as u32, slot.1))));
                from = to;
            }
            Ok(masked)
        });
        let result = built.and_then(|masked| {
            let vectors: Vec<&[u8]> = rows.iter().map(|(_, v, _)| v.as_bytes()).collect();
            let op = if rows.len() == 1 { Op::Upsert } else { Op::Batch };
            let logged = (op == Op::Batch).then_some(&list);
            let mut edits = list.edits_of(&vectors);
            if let Some(stored) = stored.as_mut().filter(|_| op == Op::Batch) {
                stored.mark(inner, &mut edits, |index| list.is_vector(index));
            }
            self.log_update_of(op, rows[0].0, &edits, &masked, logged)
        });
        self.edits = list;
        self.meta_bytes = meta_bytes;
        result
    }

    /// Builds one operation's edits into `list` with `build`. On failure the writer's views
    /// are put back as they were: nothing of the operation was applied (page-init records it
    /// logged formatted pages beyond what the meta page accounts for, which later operations
    /// format again).
    pub(super) fn op<T>(&mut self, list: &mut EditList, build: impl FnOnce(&mut OpCtx<'_>) -> Result<T>) -> Result<T> {
        let inner = self.store.inner();
        let meta_before = self.writer.meta;
        let mut freed = Vec::new();
        self.writer.op_seq += 1;
        let mut ctx = OpCtx {
            inner,
            w: &mut self.writer,
            list,
            freed: &mut freed,
        };
        let built = build(&mut ctx);
        if built.is_err() {
            for release in &freed {
                self.writer.quarantine.lift(release);
            }
            self.writer.meta = meta_before;
            self.writer.catalog = Default::default();
            self.writer.slot_hint.clear();
            self.writer.fill = None;
        } else {
            self.released.append(&mut freed);
        }
        built
    }

    /// Logs one update record for this transaction and remembers its compensation for abort.
    /// `before` is the id's value before the operation and `slot` the vector slot it wrote:
    /// both are hidden from readers until the commit.
    fn log_update(
        &mut self,
        op: Op,
        id: &str,
        edits: &[Edit<'_>],
        before: Option<LeafValue>,
        slot: Option<(u32, u32)>,
    ) -> Result<Lsn> {
        self.log_update_of(op, id, edits, &[(id, before, slot)], None)
    }

    /// [`Transaction::log_update`] of a record that changes several ids: `masked` holds each
    /// one's value before and the vector slot it wrote.
    fn log_update_of(
        &mut self,
        op: Op,
        id: &str,
        edits: &[Edit<'_>],
        masked: &[Masked<'_>],
        runs_of: Option<&EditList>,
    ) -> Result<Lsn> {
        let inner = self.store.inner();
        // A page read from disk is checked before it is changed: a damaged page must not be
        // rewritten with a fresh checksum, nor a lost (all-zero) one written over. Each page
        // once per run of edits that touch it among a few others: a bulk record's edits go
        // round the same few pages row after row (a vector page, a catalog page, a leaf, the
        // meta page), and a check per change of page was a fifteenth of its building. (Looking
        // back through every earlier edit made a bulk record's check quadratic.)
        // PageId(0) names no page (no space is numbered 0): an empty slot of the ring.
        const _: () = assert!(crate::format::page::Space::Catalog as u64 != 0 && crate::format::page::Space::Vector as u64 != 0);
        let (mut recent, mut checked) = ([PageId(0); CHECKED_RECENT_PAGES], 0);
        for edit in edits {
            if !recent.contains(&edit.page) {
                inner.arena.check_in_use(edit.page)?;
                recent[checked % CHECKED_RECENT_PAGES] = edit.page;
                checked += 1;
            }
        }
        // A bulk record logs its edits in runs (`EditList::log_runs`); they are applied, and
        // kept for a rollback, as built: the same bytes either way.
        // Its vectors (and any image as long) are not copied into the payload buffer: the log
        // takes them from where they are (`record::encode_update_runs_gathered`).
        let parts = match runs_of {
            Some(list) => {
                let (ordered, runs) = list.log_runs(edits);
                Some(record::encode_update_runs_gathered(&mut self.payload, op, id, &ordered, &runs))
            }
            None => {
                record::encode_update_into(&mut self.payload, op, id, edits);
                None
            }
        };
        for (id, before, slot) in masked {
            inner.mask.record(id.as_bytes(), *before, *slot);
        }
        let prev = self.active.last_lsn;
        let (gathered, single);
        let payload: &[&[u8]] = match &parts {
            Some(parts) => {
                gathered = record::gathered(&self.payload, parts);
                &gathered
            }
            None => {
                single = [&self.payload[..]];
                &single
            }
        };
        let logged = inner.log_and_apply(Some(&mut self.active), Kind::Update, payload, edits);
        let lsn = match logged {
            Ok(lsn) => lsn,
            Err(error) => {
                // Nothing was applied: the writer's views go back to the pages'.
                reload_meta(inner, &mut self.writer);
                return Err(error);
            }
        };
        inner.index_root.store(self.writer.meta.root.get(), Ordering::Release);
        self.undo.push(prev, edits);
        Ok(lsn)
    }

    /// The reusable edit list, emptied (put back by the caller).
    fn take_edit_list(&mut self) -> EditList {
        let mut list = std::mem::take(&mut self.edits);
        list.clear();
        list
    }

    /// Builds one operation on the approximate index alone with `build` and logs it as one
    /// update record (op `index`, no id: nothing for the mask); logs nothing if it made no edit.
    pub(super) fn index_op<T>(&mut self, build: impl FnOnce(&mut OpCtx<'_>) -> Result<T>) -> Result<T> {
        let mut list = self.take_edit_list();
        let result = self.op(&mut list, build).and_then(|value| {
            if !list.is_empty() {
                self.log_update_of(Op::Index, "", &list.edits(&[]), &[], None)?;
            }
            Ok(value)
        });
        self.edits = list;
        result
    }

    fn write_entry(&mut self, op: Op, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<Lsn> {
        let mut meta_bytes = std::mem::take(&mut self.meta_bytes);
        meta_bytes.clear();
        meta::encode(metadata, &mut meta_bytes);
        let mut list = self.take_edit_list();
        let built = self.op(&mut list, |ctx| {
            if op == Op::Insert && ctx.index_get(id.as_bytes())?.is_some() {
                return Err(Error::AlreadyExists);
            }
            let (before, slot) = build_entry(ctx, id, &meta_bytes)?;
            super::graph::on_put(ctx, slot, vector, before.as_ref(), &[])?; // Hook (approximate index)
            Ok((before, slot))
        });
        let result = built.and_then(|(before, slot)| {
            let slot = Some((slot.0.page_no() as u32, slot.1));
            self.log_update(op, id, &list.edits(vector.as_bytes()), before, slot)
        });
        self.edits = list;
        self.meta_bytes = meta_bytes;
        result
    }
}

/// Builds the edits that store `id` with the vector the caller logs and metadata `meta_bytes`:
/// a vector slot, an entry, the index cell; the id's old entry, if any, freed. Returns the
/// id's value before and the vector slot taken.
fn build_entry(ctx: &mut OpCtx<'_>, id: &str, meta_bytes: &[u8]) -> Result<(Option<LeafValue>, (PageId, u32))> {
    build_entry_of(ctx, 0, id, meta_bytes)
}

/// [`build_entry`] of the caller's vector number `vector` (see `EditList::push_vector_of`).
fn build_entry_of(
    ctx: &mut OpCtx<'_>,
    vector: usize,
    id: &str,
    meta_bytes: &[u8],
) -> Result<(Option<LeafValue>, (PageId, u32))> {
    let layout = ctx.inner.layout;
    let (vector_page, vector_slot) = ctx.take_vector_slot(&layout)?;
    ctx.list.push_vector_of(
        vector,
        vector_page,
        layout.slot_offset(vector_slot),
        layout.dimension as usize * 4,
    );
    let page_size = ctx.inner.arena.page_size_bytes();
    let overflow = if inline_fits(page_size, id.len(), meta_bytes.len()) {
        None
    } else {
        Some(ctx.write_overflow(meta_bytes)?)
    };
    let entry = NewEntry {
        vector_page,
        vector_slot,
        id,
        meta_len: meta_bytes.len(),
        inline_meta: if overflow.is_some() { &[] } else { meta_bytes },
        overflow,
    };
    let placement = ctx.place_entry(entry.len_bytes() as u32)?;
    let owner = page::encode_owner(placement.page.page_no(), placement.offset);
    // The slot was taken free: its owner entry holds 0 as the list leaves it.
    ctx.list.push_change_over_zeros(
        &ctx.inner.arena,
        vector_page,
        layout.owner_offset(vector_slot),
        &owner.to_le_bytes(),
    );
    let value = LeafValue {
        vector_page: U32::new(vector_page.page_no() as u32),
        vector_slot: U32::new(vector_slot),
        catalog_page: U32::new(placement.page.page_no() as u32),
        catalog_slot: U32::new(placement.slot),
        entry_offset: U32::new(placement.offset),
        entry_len: U32::new(placement.len_bytes),
    };
    ctx.write_entry(placement, &entry);
    let before = ctx.index_put(id.as_bytes(), &value)?;
    if let Some(old) = &before {
        free_value(ctx, old)?;
    }
    Ok((before, (vector_page, vector_slot)))
}

/// Frees what the index value `value` held: its catalog entry (and overflow pages) and its
/// vector slot.
fn free_value(ctx: &mut OpCtx<'_>, value: &LeafValue) -> Result<()> {
    let layout = ctx.inner.layout;
    let entry = read_entry(&ctx.inner.arena, &layout, value)?;
    let (overflow, meta_len) = match entry.meta {
        EntryMeta::Inline { len, .. } => (None, len),
        EntryMeta::Chain { first, len } => (Some(first), len),
    };
    ctx.free_entry(value, overflow, meta_len)?;
    let vector_page = PageId::new(Space::Vector, u64::from(value.vector_page.get()));
    ctx.free_vector_slot(vector_page, value.vector_slot.get(), &layout)
}

/// Reads the meta page back into the writer's view (after an undo, or a record that failed).
fn reload_meta(inner: &super::Inner, writer: &mut WriterState) {
    let meta_page = super::alloc::meta_page();
    if inner.arena.page_count(Space::Catalog) > 0 {
        let image = inner.arena.read_page(meta_page);
        if let Some(fields) = MetaFields::read(&image)
            && image[page::PAGE_KIND_OFFSET] == page::PageKind::Meta as u8
        {
            writer.meta = fields;
            writer.meta_formatted = true;
        }
    }
    writer.catalog = Default::default();
    writer.slot_hint.clear();
    writer.fill = None;
    inner.index_root.store(writer.meta.root.get(), Ordering::Release);
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.finished && self.check_process_or_forget().is_ok() {
            // Dropping is abort. An error here (the log failed) leaves the store poisoned; the
            // next open's recovery undoes this transaction from the log.
            let _ = self.rollback();
        }
        let buffers = TxnBuffers {
            undo: std::mem::take(&mut self.undo),
            edits: std::mem::take(&mut self.edits),
            payload: std::mem::take(&mut self.payload),
            meta_bytes: std::mem::take(&mut self.meta_bytes),
        };
        self.writer.buffers = buffers.emptied();
    }
}

/// The buffers a transaction builds and keeps its records in, kept by the writer between
/// transactions (emptied, their room kept), so that a transaction of one insert allocates
/// almost nothing: its allocations and frees were ~10% of an insert's CPU.
#[derive(Default)]
pub(crate) struct TxnBuffers {
    undo: UndoLog,
    edits: EditList,
    payload: Vec<u8>,
    meta_bytes: Vec<u8>,
}

impl std::fmt::Debug for TxnBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnBuffers").finish_non_exhaustive()
    }
}

impl TxnBuffers {
    /// Room a transaction's buffers may keep for the next one: a bulk transaction's is given
    /// back rather than held by an idle store.
    const KEPT_BYTES_MAX: usize = 1 << 20;

    /// Empties the buffers for the next transaction, or drops the larger ones.
    fn emptied(mut self) -> TxnBuffers {
        self.undo.records.clear();
        self.undo.edits.clear();
        self.undo.bytes.clear();
        self.edits.clear();
        self.payload.clear();
        self.meta_bytes.clear();
        let kept = self.undo.bytes.capacity() + self.payload.capacity() + self.meta_bytes.capacity();
        if kept > Self::KEPT_BYTES_MAX || self.edits.room_bytes() > Self::KEPT_BYTES_MAX {
            return TxnBuffers::default();
        }
        self
    }
}

/// What abort needs of a transaction's update records: the compensation of each, newest edit
/// first, in one buffer for all, so an open transaction holds a few bytes per record, not a
/// copy of every vector it wrote.
#[derive(Default)]
struct UndoLog {
    /// Per update record: its prev-LSN (the undo-next of its CLR) and the end of its edits.
    records: Vec<(Lsn, usize)>,
    edits: Vec<(PageId, u32, EditKind, Range<usize>)>,
    bytes: Vec<u8>,
}

impl UndoLog {
    fn push(&mut self, prev_lsn: Lsn, edits: &[Edit<'_>]) {
        for edit in record::compensation_iter(edits) {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(edit.after);
            self.edits
                .push((edit.page, edit.offset, edit.kind, start..self.bytes.len()));
        }
        self.records.push((prev_lsn, self.edits.len()));
    }

    /// Record `index`'s undo-next LSN and compensation edits.
    fn compensation(&self, index: usize) -> (Lsn, Vec<Edit<'_>>) {
        let start = index.checked_sub(1).map_or(0, |i| self.records[i].1);
        let (undo_next, end) = self.records[index];
        let edits = self.edits[start..end]
            .iter()
            .map(|(page, offset, kind, range)| Edit {
                page: *page,
                offset: *offset,
                after: &self.bytes[range.clone()],
                before: None,
                kind: *kind,
            })
            .collect();
        (undo_next, edits)
    }
}

/// Checks one row for a store of `dimension`: its id, its vector's length and components, its
/// metadata's encoded length.
fn check_input(dimension: usize, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<()> {
    check_id(id)?;
    if vector.len() != dimension {
        return Err(Error::InvalidArgument(format!(
            "vector has {} components, the store holds {dimension}",
            vector.len()
        )));
    }
    if !all_finite(vector)
        && let Some(at) = vector.iter().position(|x| !x.is_finite())
    {
        return Err(Error::InvalidArgument(format!(
            "component {at} is {} (NaN and infinities are refused)",
            vector[at]
        )));
    }
    match meta::encoded_len(metadata) {
        Some(len) if len <= METADATA_MAX_BYTES => Ok(()),
        _ => Err(Error::InvalidArgument(format!(
            "metadata encodes to more than {METADATA_MAX_BYTES} bytes"
        ))),
    }
}

/// Checks every row for a store of `dimension`; the first bad one is an `InvalidArgument`
/// naming it ("row 12 (\"id\"): why").
pub(crate) fn check_rows(dimension: usize, rows: &[Row<'_>]) -> Result<()> {
    for (at, (id, vector, metadata)) in rows.iter().enumerate() {
        check_input(dimension, id, vector, metadata).map_err(|error| match error {
            Error::InvalidArgument(why) => Error::InvalidArgument(format!("row {at} ({id:?}): {why}")),
            other => other,
        })?;
    }
    Ok(())
}

/// True if no component is NaN or infinite (all exponent bits set). Branch-free on the bits
/// within each chunk, so the compiler checks a chunk in a few vector instructions; the
/// early-exit loop this replaced took ~6% of an insert's time, and `is_finite` per component
/// (a float compare each) 800 instructions of a 256-dimension bulk row.
fn all_finite(vector: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7F80_0000;
    vector.chunks(64).all(|chunk| {
        chunk
            .iter()
            .fold(0u32, |special, x| special | u32::from(x.to_bits() & EXPONENT == EXPONENT))
            == 0
    })
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > ID_MAX_BYTES {
        return Err(Error::InvalidArgument(format!(
            "an id must be 1..={ID_MAX_BYTES} bytes, not {}",
            id.len()
        )));
    }
    Ok(())
}

/// Moves releases whose readers are gone out of the quarantine.
fn reclaim(writer: &mut WriterState, inner: &super::Inner) {
    while let Some((epoch, _)) = writer.quarantine.released.front() {
        if !inner.epochs.is_reclaimable(*epoch) {
            break;
        }
        let (_, release) = writer.quarantine.released.pop_front().expect("front exists");
        writer.quarantine.lift(&release);
        if let Release::CatalogExtent { page_no, offset, len } = release {
            writer.catalog.reclaim(page_no, offset, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Inner;
    use super::*;

    /// A check run on the committing thread.
    type Hook = Option<Box<dyn Fn(&Inner)>>;

    thread_local! {
        /// Runs on the committing thread between a commit's two publications (the changes,
        /// then the count): what a reader could see if it ran there.
        static BETWEEN_PUBLICATIONS: std::cell::RefCell<Hook> = const { std::cell::RefCell::new(None) };
    }

    pub(super) fn between_publications(inner: &Inner) {
        BETWEEN_PUBLICATIONS.with(|hook| {
            if let Some(hook) = &*hook.borrow() {
                hook(inner);
            }
        });
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files")]
    fn a_reader_that_counts_a_committed_id_finds_it() {
        // Between the commit's publications of its changes and of the new count, a reader
        // that sees the count must find the id it counts (published the other way round, a
        // reader there counted "x" and `get` said it was absent).
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::create(dir.path(), 4, crate::Options::default()).unwrap();
        let ran = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen = std::rc::Rc::clone(&ran);
        BETWEEN_PUBLICATIONS.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move |inner: &Inner| {
                seen.set(seen.get() + 1);
                let counted = inner.count.load(Ordering::Acquire);
                let token = inner.mask.token();
                let found = crate::store::tree::lookup(inner, b"x").unwrap();
                let visible = inner.mask.visible_since(token, b"x", found);
                if counted == 1 {
                    assert!(matches!(visible, Some(Some(_))), "a reader that counts x finds it: {visible:?}");
                }
            }))
        });
        store.insert("x", &[1.0, 2.0, 3.0, 4.0], &[]).unwrap();
        BETWEEN_PUBLICATIONS.with(|hook| *hook.borrow_mut() = None);
        assert_eq!(ran.get(), 1, "the commit ran the check between its publications");
        assert_eq!(store.len(), 1);
        store.close().unwrap();
    }

    #[test]
    fn a_transactions_buffers_are_kept_emptied_unless_a_bulk_one_grew_them() {
        let mut small = TxnBuffers::default();
        small.payload.extend_from_slice(&[7u8; 2000]);
        small.undo.bytes.extend_from_slice(&[1u8; 300]);
        let kept = small.emptied();
        assert!(kept.payload.is_empty() && kept.undo.bytes.is_empty(), "emptied");
        assert!(kept.payload.capacity() >= 2000, "a small transaction's room is kept for the next");
        let mut bulk = TxnBuffers::default();
        bulk.payload.resize(TxnBuffers::KEPT_BYTES_MAX + 1, 0);
        assert_eq!(bulk.emptied().payload.capacity(), 0, "a bulk transaction's room is given back");
    }

    #[test]
    fn all_finite_finds_a_non_finite_component_at_any_position() {
        let finite = [0.0, -0.0, f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45, -1.5];
        for len in [1usize, 15, 16, 17, 33, 384] {
            let vector: Vec<f32> = (0..len).map(|i| finite[i % finite.len()]).collect();
            assert!(all_finite(&vector), "len {len}: extremes and subnormals are finite");
            // Long vectors: every 7th position (7 is prime to 16, so every lane of a chunk is
            // hit) and the last; short ones: every position.
            let step = if len > 64 { 7 } else { 1 };
            for at in (0..len).step_by(step).chain([len - 1]) {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                    let mut damaged = vector.clone();
                    damaged[at] = bad;
                    assert!(!all_finite(&damaged), "len {len}: {bad} at {at} must be refused");
                }
            }
        }
    }
}
