//! ARIES recovery: analysis, redo (repeating history), undo with CLRs.
//!
//! | pass | from | what it does |
//! |---|---|---|
//! | analysis | the last complete checkpoint's begin record (or the log's start) | rebuilds the transaction table (losers) and the dirty page table; finds the redo start; faults in the pages redo will change, a batch per `madvise` (`store/prefetch.rs`) |
//! | redo | the smallest recovery LSN in the dirty page table | applies every update, CLR and page-init whose page is older than the record; a page that fails its checksum is first repaired (doublewrite copy, or zero if it is initialised later in the range) |
//! | undo | the losers' last records, newest first | restores before-images, logging a CLR per record (undo-next = its prev-LSN) so a crash here never undoes anything twice; an `end` record closes each loser |
//!
//! Then the writer's state is read from the meta page. A checkpoint ends recovery only when one
//! is due (see `checkpoint_ends_recovery`): otherwise the pages recovery changed wait in the
//! dirty page table for the next checkpoint, as pages a transaction changed do. A crash anywhere
//! in recovery is safe: nothing it did is trusted until a checkpoint is durable, and the CLRs it
//! logged are redone, not redone-and-undone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::format::page::{self, PageId};
use crate::format::record::{self, Edit, EditKind, Kind, Payload};
use crate::store::state::{PageMap, PageSet};
use crate::store::{ActiveTxn, Inner, apply_edits, format_page, prefetch};
use crate::wal::{ScanReport, SkippedRange};
use crate::{Error, Lsn, RecoveryMode};

/// What recovery did on open. Returned by `Store::recovery_report`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The log scan that found the end of the log (torn tail, skipped damage).
    pub scan: ScanReport,
    /// Where analysis started (a checkpoint's begin record, or the log's first record).
    pub analysis_start: Lsn,
    /// Where redo started.
    pub redo_start: Lsn,
    /// The end of the log.
    pub end_lsn: Lsn,
    /// Records whose changes were applied again.
    pub records_redone: u64,
    /// Records whose pages already held them.
    pub records_skipped: u64,
    /// Transactions that were running at the crash and were rolled back.
    pub losers: Vec<u64>,
    /// Compensation records written while undoing them.
    pub clrs_written: u64,
    /// Pages restored before redo touched them, and from where.
    pub pages_repaired: Vec<String>,
    /// Damage skipped under `RecoveryMode::SkipCorrupted`.
    pub damage_skipped: Vec<String>,
    /// Time spent in the analysis pass.
    pub analysis_time: Duration,
    /// Time spent in the redo pass.
    pub redo_time: Duration,
    /// Time spent in the undo pass (and making its records durable).
    pub undo_time: Duration,
    /// Time spent in the checkpoint that ends recovery (none after a clean close).
    pub checkpoint_time: Duration,
    /// Pages the log formats that were made fresh memory before redo, a run at a time, rather
    /// than read from their files (their page-init records rebuild them).
    pub pages_made_fresh: u64,
    /// A checkpoint was due at the end of recovery and was left to the background
    /// checkpointer, which starts with the open: the open returned without writing the pages
    /// back.
    pub checkpoint_in_background: bool,
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "log: {}", self.scan)?;
        writeln!(
            f,
            "analysis from {} ({:?}); redo from {}: {} redone, {} already on their pages, {} pages made fresh ({:?})",
            self.analysis_start,
            self.analysis_time,
            self.redo_start,
            self.records_redone,
            self.records_skipped,
            self.pages_made_fresh,
            self.redo_time
        )?;
        writeln!(
            f,
            "undo: {} loser transactions, {} CLRs ({:?})",
            self.losers.len(),
            self.clrs_written,
            self.undo_time
        )?;
        for repair in &self.pages_repaired {
            writeln!(f, "repaired {repair}")?;
        }
        for skip in &self.damage_skipped {
            writeln!(f, "skipped {skip}")?;
        }
        write!(f, "end of log {}; checkpoint {:?}", self.end_lsn, self.checkpoint_time)?;
        if self.checkpoint_in_background {
            write!(f, " (a checkpoint was due: the background checkpointer runs it)")?;
        }
        Ok(())
    }
}

/// A transaction to roll back.
#[derive(Clone, Copy, Debug)]
struct Loser {
    last_lsn: Lsn,
    undo_next: Lsn,
}

/// A set of transaction ids (analysis looks one up for every commit it reads).
type TxnSet = HashSet<u64, crate::store::state::FastHash>;

struct Analysis {
    losers: BTreeMap<u64, Loser>,
    dirty: PageMap<Lsn>,
    inits: PageSet,
    /// Pages whose first record from the analysis start on is their page-init: candidates to
    /// be made fresh before redo (see [`prefresh`]).
    first_inits: Vec<PageId>,
    /// The candidates [`prefresh`] made fresh: redo formats them from their page-init record
    /// on, whatever their file held.
    prefreshed: PageSet,
    /// How many pages of each space (by [`Space::index`]) the redo range initialises.
    init_counts: [u64; 2],
    next_txn_id: u64,
    /// Transactions with a commit record from the analysis start on (an end alone is a
    /// rollback): a page older than a stored write of theirs is damage.
    committed: TxnSet,
    /// Pages with a stored write from the analysis start on: their bytes are in their files
    /// only, so none is made fresh and rebuilt from its page-init.
    stored: PageSet,
    /// Pages redo changes that are not made fresh, asked of the OS at the end of analysis and
    /// not faulted in yet (see `prefetch::Prefaulter::finish`).
    prefault: Vec<PageId>,
}

/// The page images of the doublewrite area, read the first time a page needs repair: a
/// recovery that finds every page it touches intact (every open after a clean close, most
/// after a crash) never reads them.
struct Repairs<'a> {
    inner: &'a Inner,
    images: std::cell::OnceCell<HashMap<PageId, Vec<u8>>>,
}

impl<'a> Repairs<'a> {
    fn new(inner: &'a Inner) -> Repairs<'a> {
        Repairs {
            inner,
            images: std::cell::OnceCell::new(),
        }
    }

    /// None: recovery rolls back only, and repairs nothing from the area (undo's pages were
    /// prepared by redo already, or are lost).
    fn none(inner: &'a Inner) -> Repairs<'a> {
        let repairs = Repairs::new(inner);
        let _ = repairs.images.set(HashMap::new());
        repairs
    }

    /// The intact image of `page` in the doublewrite area, if there is one.
    fn image(&self, page: PageId) -> Result<Option<&[u8]>> {
        if self.images.get().is_none() {
            let images = self.inner.doublewrite.lock().read_images()?;
            let _ = self.images.set(images);
        }
        Ok(self.images.get().and_then(|images| images.get(&page)).map(Vec::as_slice))
    }
}

/// Recovers the store; returns whether a checkpoint is due that the background checkpointer
/// is to run as soon as the store is open (see [`ending`]).
pub(crate) fn recover(inner: &Inner, scan: ScanReport) -> Result<bool> {
    let control = inner.control.lock().1.clone();
    let mut report = RecoveryReport {
        end_lsn: scan.end_lsn,
        ..RecoveryReport::default()
    };
    let skips = scan.skipped.clone();
    report.scan = scan;
    let started = Instant::now();
    report.analysis_start = if control.checkpoint_lsn.is_none() {
        inner.wal.first_lsn()
    } else {
        control.checkpoint_lsn
    };
    // The records' clock goes on from the latest time the control file holds (analysis raises
    // it to the records' own): a wall clock that stepped back stamps nothing earlier.
    inner.wal.raise_record_time(control.checkpoint_us);
    let checkpoint_start = (!control.checkpoint_lsn.is_none()).then_some(control.checkpoint_lsn);
    let mut analysis = analyze(
        inner,
        report.analysis_start,
        checkpoint_start,
        &skips,
        control.next_txn_id,
        &mut report,
    )?;
    report.analysis_time = started.elapsed();

    let started = Instant::now();
    let fresh_runs = prefresh(inner, &mut analysis, &skips, &mut report)?;
    report.redo_start = analysis.dirty.values().min().copied().unwrap_or(report.end_lsn);
    let mut lost = PageSet::default();
    let prefault = std::mem::take(&mut analysis.prefault);
    populate_beside(inner, &prefault, &fresh_runs, || {
        redo(inner, &analysis, &skips, &mut report, &mut lost)
    })?;
    report.redo_time = started.elapsed();

    let started = Instant::now();
    undo(inner, &analysis, &skips, &mut report, &mut lost)?;
    if !inner.read_only {
        inner.wal.sync()?;
    }
    report.undo_time = started.elapsed();

    // The writer's state and the readers' root come from the meta page: nothing else is read.
    let meta = read_meta(inner)?;
    inner
        .next_txn_id
        .store(analysis.next_txn_id, std::sync::atomic::Ordering::SeqCst);
    let fields = meta.unwrap_or_default();
    inner.index_root.store(fields.root.get(), std::sync::atomic::Ordering::Release);
    inner.count.store(fields.count.get(), std::sync::atomic::Ordering::Release);
    *inner.writer.lock() = crate::store::alloc::WriterState::new(analysis.next_txn_id, meta);

    let started = Instant::now();
    // A read-only store replays what the crash left in memory and never writes it back.
    let ending = if inner.read_only { Ending::Nothing } else { ending(inner, &control, &report) };
    if ending == Ending::Now {
        crate::store::checkpoint::run(inner)?;
    }
    report.checkpoint_time = started.elapsed();
    report.checkpoint_in_background = ending == Ending::Background;
    *inner.report.lock() = report;
    Ok(ending == Ending::Background)
}

/// What checkpoint ends a recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// None is needed.
    Nothing,
    /// One runs in the open, before it returns.
    Now,
    /// One is due: the background checkpointer runs it once the store is open.
    Background,
}

/// What checkpoint ends a recovery. One makes no recovery more correct: the pages redo and
/// undo changed stay in the dirty page table for the next checkpoint (background or closing),
/// and a crash before it redoes the same log again, undoing nothing twice (undo logged its
/// CLRs). It only shortens the next recovery.
///
/// | situation | ending |
/// |---|---|
/// | the store's first checkpoint is still to come | `Now` (the control file names none) |
/// | recovery skipped damage | `Now` (the next open starts past it) |
/// | a checkpoint is due (the log since the last passed `checkpoint_interval_bytes`, or the pages recovery dirtied passed the memory budget's writeback share), background I/O on | `Background`: the open returns, the checkpointer writes the pages back and gives their memory back while the store serves; writers over the budget wait for it as they wait for any checkpoint |
/// | a checkpoint is due, background I/O off | `Now` |
/// | otherwise (a crash after a few commits) | `Nothing`: the close or the next checkpoint writes the pages |
fn ending(inner: &Inner, control: &crate::format::control::Control, report: &RecoveryReport) -> Ending {
    let damage_skipped = !report.scan.skipped.is_empty() || !report.damage_skipped.is_empty();
    match (control.checkpoint_lsn.is_none() || damage_skipped, inner.checkpoint_due()) {
        (true, _) => Ending::Now,
        (false, Some(_)) if inner.options.background_io => Ending::Background,
        (false, Some(_)) => Ending::Now,
        (false, None) => Ending::Nothing,
    }
}

/// The meta page's fields after recovery, checked (`None`: the store has written nothing yet).
fn read_meta(inner: &Inner) -> Result<Option<crate::format::index::MetaFields>> {
    use crate::format::page::{PageKind, Space};
    if inner.arena.page_count(Space::Catalog) == 0 {
        return Ok(None);
    }
    let page = crate::store::alloc::meta_page();
    inner.arena.verify(page)?;
    if inner.arena.is_all_zero(page) {
        if inner.initialised_pages()[Space::Catalog.index()] > 0 {
            return Err(inner
                .arena
                .corrupted(page, "the meta page is empty, but the store had written it (its contents were lost)"));
        }
        return Ok(None);
    }
    let image = inner.arena.read_page(page);
    if image[crate::format::page::PAGE_KIND_OFFSET] != PageKind::Meta as u8 {
        return Err(inner.arena.corrupted(page, "catalog page 0 is not the meta page"));
    }
    let fields = crate::format::index::MetaFields::read(&image).expect("a page holds the meta fields");
    let reason = fields.check(&image).or_else(|| {
        let catalog = inner.arena.page_count(Space::Catalog);
        let vector = inner.arena.page_count(Space::Vector);
        (fields.catalog_pages.get() > catalog || fields.vector_pages.get() > vector).then(|| {
            format!(
                "the meta page counts {} catalog and {} vector pages, the arena holds {catalog} and {vector}",
                fields.catalog_pages.get(),
                fields.vector_pages.get()
            )
        })
    });
    match reason {
        Some(reason) => Err(inner.arena.corrupted(page, reason)),
        None => Ok(Some(fields)),
    }
}

/// Decodes a record's payload; damage is an error, or skipped under `SkipCorrupted`.
fn decode<'a>(
    inner: &Inner,
    kind: u8,
    payload: &'a [u8],
    lsn: Lsn,
    report: &mut RecoveryReport,
) -> Result<Option<Payload<'a>>> {
    match record::decode(kind, payload, lsn, inner.arena.page_size_bytes()) {
        Ok(decoded) => Ok(Some(decoded)),
        Err(error) if inner.options.recovery == RecoveryMode::SkipCorrupted => {
            report.damage_skipped.push(error.to_string());
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Analysis: reads the log from the checkpoint's begin record at `start` and rebuilds the
/// transaction table (the losers), the dirty page table and what redo needs to know of page
/// inits and stored writes.
///
/// `checkpoint_start` is `Some(start)` when `start` is the control file's checkpoint: the
/// first record there must be its checkpoint-begin record ([`check_checkpoint_begin`]).
fn analyze(
    inner: &Inner,
    start: Lsn,
    checkpoint_start: Option<Lsn>,
    skips: &[SkippedRange],
    next_txn_id: u64,
    report: &mut RecoveryReport,
) -> Result<Analysis> {
    let mut analysis = Analysis::new(next_txn_id);
    let mut finished = TxnSet::default();
    // Every page a record from here changes, redo changes (or finds changed already): it is
    // faulted in now, a batch at a time, rather than at redo's first touch.
    let mut prefaulter = prefetch::Prefaulter::new(&inner.arena);
    let mut reader = inner.wal.verified_reader(start).with_skips(skips);
    let mut first = checkpoint_start;
    let mut time_max_us = 0;
    while let Some(rec) = reader.next_record()? {
        if let Some(begin) = first.take() {
            check_checkpoint_begin(inner, begin, Some((rec.lsn, rec.header.kind)), report)?;
        }
        time_max_us = time_max_us.max(rec.header.timestamp_us.get());
        let (lsn, txn) = (rec.lsn, rec.header.txn_id.get());
        analysis.next_txn_id = analysis.next_txn_id.max(txn + 1);
        let Some(payload) = decode(inner, rec.header.kind, rec.payload, lsn, report)? else {
            continue;
        };
        let prev_lsn = Lsn(rec.header.prev_lsn.get());
        match payload {
            Payload::CheckpointEnd(checkpoint) if checkpoint.begin_lsn == start => {
                analysis.take_checkpoint(checkpoint, &finished);
            }
            payload => analysis.take(payload, lsn, txn, prev_lsn, &mut finished, &mut prefaulter),
        }
    }
    if let Some(begin) = first {
        check_checkpoint_begin(inner, begin, None, report)?;
    }
    inner.wal.raise_record_time(time_max_us);
    // A page the log formats is not read ahead (redo makes it fresh), unless it has a stored
    // write: its bytes are in its file only, read rather than rebuilt (see `prefresh`).
    let mut stored: Vec<PageId> = analysis.stored.iter().copied().collect();
    stored.sort_unstable();
    for page in stored {
        prefaulter.note(page);
    }
    analysis.prefault = prefaulter.finish();
    Ok(analysis)
}

/// Checks that the first record analysis reads, `first` (its LSN and kind; `None`: the log
/// has none from there), is the checkpoint-begin record at `begin` that the control file
/// names. It was durable before the control file named it (FORMAT.md 16.1): anything else is
/// a log that lost records or files from different moments, whose pages may hold changes the
/// log does not. Under `SkipCorrupted` it is reported and analysis goes on.
fn check_checkpoint_begin(
    inner: &Inner,
    begin: Lsn,
    first: Option<(Lsn, u8)>,
    report: &mut RecoveryReport,
) -> Result<()> {
    let found = match first {
        Some((lsn, kind)) if lsn == begin && kind == Kind::CheckpointBegin as u8 => return Ok(()),
        Some((lsn, kind)) => format!("the first record from there is of kind {kind} at {lsn}"),
        None => "the log holds no record from there".to_string(),
    };
    let damage = Error::corrupted_at(
        begin,
        format!("no checkpoint-begin record where the control file's checkpoint says ({found})"),
    );
    if inner.options.recovery != RecoveryMode::SkipCorrupted {
        return Err(damage);
    }
    report.damage_skipped.push(damage.to_string());
    Ok(())
}

impl Analysis {
    /// The tables before the first record: empty.
    fn new(next_txn_id: u64) -> Analysis {
        Analysis {
            losers: BTreeMap::new(),
            dirty: PageMap::default(),
            inits: PageSet::default(),
            first_inits: Vec::new(),
            prefreshed: PageSet::default(),
            init_counts: [0; 2],
            next_txn_id,
            committed: TxnSet::default(),
            stored: PageSet::default(),
            prefault: Vec::new(),
        }
    }

    /// Takes the record at `lsn` of transaction `txn` (whose previous record is at
    /// `prev_lsn`) into the tables; `finished` gathers the transactions that ended.
    fn take(
        &mut self,
        payload: Payload<'_>,
        lsn: Lsn,
        txn: u64,
        prev_lsn: Lsn,
        finished: &mut TxnSet,
        prefaulter: &mut prefetch::Prefaulter<'_>,
    ) {
        match payload {
            Payload::Update { edits, .. } => {
                self.losers.insert(txn, Loser { last_lsn: lsn, undo_next: lsn });
                note_dirty(&mut self.dirty, prefaulter, &self.inits, &edits, lsn);
                let stored = edits.iter().filter(|e| matches!(e.kind, EditKind::Stored { .. }));
                self.stored.extend(stored.map(|e| e.page));
            }
            Payload::Clr { undo_next, edits } => {
                self.losers.insert(txn, Loser { last_lsn: lsn, undo_next });
                note_dirty(&mut self.dirty, prefaulter, &self.inits, &edits, lsn);
            }
            Payload::PageInit { page, .. } => {
                // Not faulted in ahead: redo formats the page whole, in fresh memory where it
                // can (`Arena::reset_page`), and a copy of the file's page made now would be
                // thrown away unread.
                if let std::collections::hash_map::Entry::Vacant(entry) = self.dirty.entry(page) {
                    entry.insert(lsn);
                    self.first_inits.push(page);
                }
                if self.inits.insert(page) {
                    self.init_counts[page.space().index()] += 1;
                }
            }
            Payload::Abort => {
                let loser = self.losers.entry(txn).or_insert(Loser { last_lsn: lsn, undo_next: prev_lsn });
                loser.last_lsn = lsn;
            }
            Payload::Commit | Payload::End => {
                self.losers.remove(&txn);
                finished.insert(txn);
                if matches!(payload, Payload::Commit) {
                    self.committed.insert(txn);
                }
            }
            // Only the end of the checkpoint analysis starts from has tables to take
            // (`take_checkpoint`); any other is history.
            Payload::CheckpointBegin | Payload::CheckpointEnd(_) => {}
        }
    }

    /// Takes the tables of the checkpoint analysis starts from: its running transactions
    /// that did not end since (`finished`) are losers unless a later record says otherwise,
    /// and its dirty pages are dirty from the older of the two recovery LSNs.
    fn take_checkpoint(&mut self, checkpoint: record::Checkpoint, finished: &TxnSet) {
        self.next_txn_id = self.next_txn_id.max(checkpoint.next_txn_id);
        for entry in checkpoint.txns.iter().filter(|t| !finished.contains(&t.txn_id)) {
            self.losers.entry(entry.txn_id).or_insert(Loser {
                last_lsn: entry.last_lsn,
                undo_next: entry.undo_next,
            });
        }
        for page in checkpoint.dirty {
            let rec_lsn = self.dirty.entry(page.page).or_insert(page.rec_lsn);
            *rec_lsn = (*rec_lsn).min(page.rec_lsn);
        }
    }
}

/// Makes the pages of `analysis.first_inits` zeros in fresh memory before redo, one mapping
/// call per run of adjacent pages (`Arena::format_fresh_run`), so that redo's page-inits find
/// them fresh and cost no call each: a recovery formats most of the pages it touches (a bulk
/// load's vector pages), and one call per page was a quarter of its time.
///
/// Redo then formats each of them from its page-init record whatever its file held (as
/// PostgreSQL's redo zeroes a page an init record names without reading it): every record of
/// the page from the page-init on is in the log, so redoing them all repeats the page's
/// history, and a later state on disk (a checkpoint wrote the page after the init) is
/// rebuilt rather than read. Records of the page before its page-init can only lie before the
/// analysis start (analysis saw the init first): redo skips them, as the init wipes them.
/// Only where the log from the redo start on is whole (nothing skipped) and strict.
///
/// Returns the runs made fresh, `(first page, pages)`, for [`populate_beside`] to fault in.
fn prefresh(
    inner: &Inner,
    analysis: &mut Analysis,
    skips: &[SkippedRange],
    report: &mut RecoveryReport,
) -> Result<Vec<(PageId, usize)>> {
    let mut made = Vec::new();
    if !skips.is_empty() || inner.options.recovery == RecoveryMode::SkipCorrupted {
        return Ok(made);
    }
    let arena = &inner.arena;
    let mut pages = std::mem::take(&mut analysis.first_inits);
    // A page with a stored write holds bytes the log does not (FORMAT.md 17.1): read, not rebuilt.
    pages.retain(|page| !analysis.stored.contains(page));
    pages.sort_unstable();
    // The reach rule of `prepare_page`: a page past it is damage, reported by redo.
    pages.retain(|page| {
        let space = page.space();
        page.page_no() < arena.page_count(space) + analysis.init_counts[space.index()] + arena.pages_per_file()
    });
    let mut rest = pages.as_slice();
    while let Some(&first) = rest.first() {
        let adjacent = rest
            .iter()
            .enumerate()
            .take_while(|&(i, page)| page.space() == first.space() && page.page_no() == first.page_no() + i as u64)
            .count();
        let (run, next) = rest.split_at(arena.run_len(first, adjacent));
        arena.ensure_page(*run.last().expect("a run holds a page"))?;
        if arena.format_fresh_run_lazily(&arena.latch_run(first, run.len())) {
            analysis.prefreshed.extend(run.iter().copied());
            report.pages_made_fresh += run.len() as u64;
            made.push((first, run.len()));
        }
        rest = next;
    }
    Ok(made)
}

/// Fewer fresh pages than this are faulted in on redo's thread: a thread costs more to start
/// than faulting in 16 MiB of 16 KiB pages takes beside it (an open after a crash of a thousand
/// commits makes ~70 pages fresh), and two threads faulting in one process's memory slow each
/// other (measured: redo after such a crash took 1.13–1.17 ms beside a thread faulting in its
/// fresh pages from the far end, 0.76 ms after faulting them in itself first).
const POPULATE_THREAD_PAGES_MIN: usize = 1024;

/// Runs `redo` once what analysis found it will write is faulted in: the fresh `runs` (the
/// kernel zeroes their memory: a fifth of a recovery that formats most of the pages it
/// redoes), then the pages whose reads analysis asked for (`prefault`: after a cold start
/// those reads run while the fresh pages are made, rather than being waited for at once).
/// For many fresh pages, another thread faults them in, in log order, while redo runs: redo
/// then finds them in memory instead of faulting at every 4 KiB. Faulting in changes no byte,
/// so it races with no store of redo's. Without background I/O (reproducible runs), on this
/// thread first; where no thread can be started, not at all (redo's own stores fault the
/// pages in).
fn populate_beside<T>(inner: &Inner, prefault: &[PageId], runs: &[(PageId, usize)], redo: impl FnOnce() -> T) -> T {
    let populate = || {
        for &(first, count) in runs {
            inner.arena.populate(first, count);
        }
    };
    let pages: usize = runs.iter().map(|&(_, count)| count).sum();
    if !inner.options.background_io || pages < POPULATE_THREAD_PAGES_MIN {
        populate();
        inner.arena.populate_pages(prefault);
        return redo();
    }
    inner.arena.populate_pages(prefault);
    std::thread::scope(|scope| {
        // Where no thread can be had (a process at its limit), redo faults the pages in itself.
        let _ = std::thread::Builder::new()
            .name("vellum-populate".into())
            .spawn_scoped(scope, populate);
        redo()
    })
}

fn note_dirty(
    dirty: &mut PageMap<Lsn>,
    prefaulter: &mut prefetch::Prefaulter<'_>,
    inits: &PageSet,
    edits: &[Edit<'_>],
    lsn: Lsn,
) {
    for (i, edit) in edits.iter().enumerate() {
        // A record's edits of one page are usually adjacent: one lookup per run of them.
        if i == 0 || edits[i - 1].page != edit.page {
            dirty.entry(edit.page).or_insert(lsn);
            // A page the log formats is in memory by the time redo changes it (see PageInit).
            if !inits.contains(&edit.page) {
                prefaulter.note(edit.page);
            }
        }
    }
}

fn redo(
    inner: &Inner,
    analysis: &Analysis,
    skips: &[SkippedRange],
    report: &mut RecoveryReport,
    lost: &mut PageSet,
) -> Result<()> {
    let repairs = Repairs::new(inner);
    let mut reader = inner.wal.verified_reader(report.redo_start).with_skips(skips);
    while let Some(rec) = reader.next_record()? {
        let lsn = rec.lsn;
        let Some(payload) = decode(inner, rec.header.kind, rec.payload, lsn, report)? else {
            continue;
        };
        match payload {
            Payload::Update { mut edits, .. } | Payload::Clr { mut edits, .. } => {
                if lsn < report.analysis_start && !analysis.prefreshed.is_empty() {
                    // A made-fresh page's init comes later: these edits of it are wiped by it.
                    edits.retain(|e| !analysis.prefreshed.contains(&e.page));
                }
                let edits = usable_edits(inner, edits, analysis, &repairs, report, lost)?;
                let edits = check_stored(inner, edits, analysis, rec.header.txn_id.get(), lsn, report, lost)?;
                if apply_edits(&inner.arena, &inner.dirty, lsn, &edits, true) > 0 {
                    report.records_redone += 1;
                } else {
                    report.records_skipped += 1;
                }
                keep_dirty(inner, edits.iter().map(|e| e.page), lsn);
            }
            Payload::PageInit { page, init } => {
                if !prepare_page(inner, page, true, analysis, &repairs, report, lost)? {
                    continue;
                }
                inner.note_initialised(page);
                if inner.arena.page_lsn(page) < lsn {
                    format_page(&inner.arena, &inner.dirty, page, init, lsn, false);
                    report.records_redone += 1;
                } else {
                    report.records_skipped += 1;
                    keep_dirty(inner, [page].into_iter(), lsn);
                }
                inner.recent_inits.lock().insert(page, lsn);
            }
            // Nothing on a page: they change the transaction table, read by analysis and undo.
            Payload::Commit
            | Payload::Abort
            | Payload::End
            | Payload::CheckpointBegin
            | Payload::CheckpointEnd(_) => {}
        }
    }
    Ok(())
}

/// The redo rule of stored writes (FORMAT.md 17.3), for the edits `edits` of the update at
/// `lsn` of transaction `txn`, their pages prepared:
///
/// | page of a stored write | action |
/// |---|---|
/// | page LSN `>= lsn` | nothing to decide: the record is in the page (redo skips it) |
/// | older, the transaction committed, or the record precedes the analysis start | damage: the file lost a page synced before that commit |
/// | older, the transaction did not commit (a loser, or rolled back after its page write failed) | redo the record's other edits: the stored bytes are free after the undo |
///
/// Under `SkipCorrupted` a damaged page is reported, reset to empty and its changes skipped.
/// Every page with a stored write leaves the recent inits: a later write of it goes through
/// the doublewrite area (16.3).
fn check_stored<'a>(
    inner: &Inner,
    mut edits: Vec<Edit<'a>>,
    analysis: &Analysis,
    txn: u64,
    lsn: Lsn,
    report: &mut RecoveryReport,
    lost: &mut PageSet,
) -> Result<Vec<Edit<'a>>> {
    let committed = analysis.committed.contains(&txn) || lsn < report.analysis_start;
    let mut damaged: Vec<PageId> = Vec::new();
    for edit in edits.iter().filter(|e| matches!(e.kind, EditKind::Stored { .. })) {
        inner.recent_inits.lock().remove(&edit.page);
        let page_lsn = inner.arena.page_lsn(edit.page);
        if page_lsn >= lsn || !committed || damaged.contains(&edit.page) {
            continue;
        }
        let damage = Error::corrupted_file(
            "arena",
            format!(
                "{} (page LSN {page_lsn}) is older than a stored write of committed transaction {txn} at {lsn}: \
                 the file lost a page synced before that commit",
                edit.page
            ),
        );
        if inner.options.recovery != RecoveryMode::SkipCorrupted {
            return Err(damage);
        }
        damaged.push(edit.page);
    }
    if damaged.is_empty() {
        return Ok(edits);
    }
    for &page in &damaged {
        let _latch = inner.arena.latch(page);
        inner.arena.reset_page(page, &[]);
        lost.insert(page);
        report
            .damage_skipped
            .push(format!("{page} reset to empty, its changes skipped: its stored write is lost"));
    }
    edits.retain(|e| !damaged.contains(&e.page));
    Ok(edits)
}

/// Puts `pages`, which hold the record at `lsn` already, in the dirty page table (if they are
/// not there): a page read at open may hold it only in the page cache — a failed sync of an
/// earlier run loses pages for good while the cache keeps showing them — so the next
/// checkpoint writes it again rather than trusting the disk to hold it.
fn keep_dirty(inner: &Inner, pages: impl Iterator<Item = PageId>, lsn: Lsn) {
    let mut dirty = inner.dirty.lock();
    let mut last = None;
    for page in pages {
        // A record's edits of one page are usually adjacent: one lookup per run of them.
        if last != Some(page) {
            dirty.entry(page).or_insert(lsn);
            last = Some(page);
        }
    }
}

/// Makes page `page` exist and pass its checksum before redo or undo touches it; returns
/// whether its edits may be applied.
///
/// | page state | action |
/// |---|---|
/// | verified already, or passes its checksum | use it |
/// | page LSN at or past the end of the log (`Arena::verify`) | damaged (below): it comes from a later moment than the log |
/// | all zero, changed before any page-init of it in the redo range | damage: the page was lost |
/// | damaged, intact copy in the doublewrite area | restore the copy, in memory and on disk at once |
/// | damaged, initialised later in the redo range | start it from zero: redo rebuilds it |
/// | damaged otherwise, `SkipCorrupted` | reset it to empty, skip every edit of it, report it |
/// | damaged otherwise | `Corrupted` |
fn prepare_page(
    inner: &Inner,
    page: PageId,
    initialising: bool,
    analysis: &Analysis,
    repairs: &Repairs<'_>,
    report: &mut RecoveryReport,
    lost: &mut PageSet,
) -> Result<bool> {
    let arena = &inner.arena;
    if !lost.is_empty() && lost.contains(&page) {
        return Ok(false);
    }
    // The arena grows densely: a page past its end is one the redo range initialises, so no
    // valid log names a page beyond the end plus those (and a file of slack). Growing the
    // arena to a page number read from a damaged or forged record could fill the disk.
    let space = page.space();
    let reach = arena.page_count(space) + analysis.init_counts[space.index()] + arena.pages_per_file();
    if page.page_no() >= reach {
        let damage = Error::corrupted_file(
            "arena",
            format!("the log changes {page}, beyond the arena and every page it initialises"),
        );
        if inner.options.recovery != RecoveryMode::SkipCorrupted {
            return Err(damage);
        }
        lost.insert(page);
        report
            .damage_skipped
            .push(format!("{page}: its changes skipped: {damage}"));
        return Ok(false);
    }
    arena.ensure_page(page)?;
    if arena.is_verified(page) || (initialising && analysis.prefreshed.contains(&page)) {
        return Ok(true);
    }
    let damage = match arena.verify(page) {
        Ok(()) if initialising || analysis.inits.contains(&page) || !arena.is_all_zero(page) => return Ok(true),
        Ok(()) => Error::corrupted_file(
            "arena",
            format!("{page} is empty on disk, but the log changes it without initialising it"),
        ),
        Err(damage) => damage,
    };
    repair_page(inner, page, damage, analysis, repairs, report, lost)
}

/// The damaged rows of [`prepare_page`]'s table for `page`, which failed its check with
/// `damage`: restored from the doublewrite area, started from zero, reset and skipped, or
/// the damage returned. Returns whether the page's edits may be applied.
fn repair_page(
    inner: &Inner,
    page: PageId,
    damage: Error,
    analysis: &Analysis,
    repairs: &Repairs<'_>,
    report: &mut RecoveryReport,
    lost: &mut PageSet,
) -> Result<bool> {
    let arena = &inner.arena;
    // An image from a later moment than the log (see `Arena::verify`) repairs nothing.
    let repair = repairs
        .image(page)?
        .filter(|image| page::check_page_lsn_below(image, page, report.end_lsn.get()).is_none());
    let _latch = arena.latch(page);
    if let Some(image) = repair {
        arena.replace_page(page, image);
        // Made durable in place at once: the next checkpoint reuses the doublewrite area, and
        // a crash after that must not find this page torn with its only copy gone. (A
        // read-only store repairs its memory only: the copy stays where it is.)
        if !inner.read_only {
            arena.write_page(page, image)?;
            arena.sync()?;
        }
        report
            .pages_repaired
            .push(format!("{page} from the doublewrite area ({damage})"));
    } else if analysis.inits.contains(&page) {
        arena.reset_page(page, &[]);
        report.pages_repaired.push(format!(
            "{page} from zero: redo replays it from its page-init record ({damage})"
        ));
    } else if inner.options.recovery == RecoveryMode::SkipCorrupted {
        arena.reset_page(page, &[]);
        lost.insert(page);
        report
            .damage_skipped
            .push(format!("{page} reset to empty, its changes skipped: {damage}"));
        return Ok(false);
    } else {
        return Err(damage);
    }
    Ok(true)
}

/// The edits of `edits` whose pages are usable (prepared without being lost).
fn usable_edits<'a>(
    inner: &Inner,
    mut edits: Vec<Edit<'a>>,
    analysis: &Analysis,
    repairs: &Repairs<'_>,
    report: &mut RecoveryReport,
    lost: &mut PageSet,
) -> Result<Vec<Edit<'a>>> {
    // Preparing a page is idempotent: after the first call it is usable for good (verified or
    // repaired) or lost for good. So every edit's page is prepared (skipping the repeats of
    // the edit before), and the unusable ones are exactly those in `lost`.
    for (i, edit) in edits.iter().enumerate() {
        if i == 0 || edits[i - 1].page != edit.page {
            prepare_page(inner, edit.page, false, analysis, repairs, report, lost)?;
        }
    }
    if !lost.is_empty() {
        edits.retain(|e| !lost.contains(&e.page));
    }
    Ok(edits)
}

/// Undo: rolls back every loser, the one with the latest record to undo first, writing a clr
/// for each update it undoes (none in a read-only open) and an end record for each loser it
/// finishes.
fn undo(
    inner: &Inner,
    analysis: &Analysis,
    skips: &[SkippedRange],
    report: &mut RecoveryReport,
    lost: &mut PageSet,
) -> Result<()> {
    let mut losers = analysis.losers.clone();
    report.losers = losers.keys().copied().collect();
    let mut undoer = Undoer {
        inner,
        analysis,
        skips,
        repairs: Repairs::none(inner),
        // The end of the log before undo appends its clrs: every record undo reads lies below it.
        log_end: inner.wal.end_lsn(),
    };
    while let Some((&txn, &loser)) = losers.iter().max_by_key(|(_, l)| l.undo_next) {
        let mut active = ActiveTxn {
            txn_id: txn,
            first_lsn: loser.last_lsn,
            last_lsn: loser.last_lsn,
        };
        if loser.undo_next.is_none() {
            if !inner.read_only {
                inner.log_and_apply(Some(&mut active), Kind::End, &[], &[])?;
            }
            losers.remove(&txn);
            continue;
        }
        let next = undoer.step(txn, loser, &mut active, report, lost)?;
        losers.insert(txn, next);
    }
    *inner.apply.lock() = None;
    Ok(())
}

/// What every step of [`undo`] reads from.
struct Undoer<'a> {
    inner: &'a Inner,
    analysis: &'a Analysis,
    skips: &'a [SkippedRange],
    repairs: Repairs<'a>,
    /// The end of the log before the first clr.
    log_end: Lsn,
}

impl Undoer<'_> {
    /// Undoes the record at `loser.undo_next` of transaction `txn` (checking that the chain
    /// leads to a record of `txn`, below the log's end); returns where the loser stands after.
    fn step(
        &mut self,
        txn: u64,
        loser: Loser,
        active: &mut ActiveTxn,
        report: &mut RecoveryReport,
        lost: &mut PageSet,
    ) -> Result<Loser> {
        let (inner, log_end) = (self.inner, self.log_end);
        if loser.undo_next >= log_end {
            return Err(Error::corrupted_at(
                loser.undo_next,
                format!("transaction {txn}'s undo chain points past the end of the log ({log_end})"),
            ));
        }
        let mut reader = inner.wal.reader(loser.undo_next).with_skips(self.skips);
        let Some(rec) = reader.next_record()? else {
            return Err(Error::corrupted_at(
                loser.undo_next,
                format!("transaction {txn}'s undo chain points past the log"),
            ));
        };
        if rec.lsn != loser.undo_next || rec.header.txn_id.get() != txn {
            return Err(Error::corrupted_at(
                loser.undo_next,
                format!("transaction {txn}'s undo chain is broken"),
            ));
        }
        let prev = Lsn(rec.header.prev_lsn.get());
        let payload = decode(inner, rec.header.kind, rec.payload, rec.lsn, report)?;
        self.compensate(txn, rec.lsn, prev, payload, active, report, lost)
    }

    /// Undoes the record at `lsn` (whose previous record of `txn` is at `prev`), decoded as
    /// `payload` (`None`: skipped as damaged): an update is compensated, a clr sends the chain
    /// to its undo-next, anything else to the record before.
    #[allow(clippy::too_many_arguments)]
    fn compensate(
        &mut self,
        txn: u64,
        lsn: Lsn,
        prev: Lsn,
        payload: Option<Payload<'_>>,
        active: &mut ActiveTxn,
        report: &mut RecoveryReport,
        lost: &mut PageSet,
    ) -> Result<Loser> {
        let inner = self.inner;
        Ok(match payload {
            Some(Payload::Update { edits, .. }) => {
                let edits = usable_edits(inner, edits, self.analysis, &self.repairs, report, lost)?;
                let compensation = record::compensation(&edits);
                let last_lsn = if inner.read_only {
                    // Rolled back in memory only, with no record: the pages take the undone
                    // record's LSN, and nothing of this open ever reaches a file.
                    apply_edits(&inner.arena, &inner.dirty, lsn, &compensation, false);
                    lsn
                } else {
                    let clr = record::encode_clr(prev, &compensation);
                    report.clrs_written += 1;
                    inner.log_and_apply(Some(active), Kind::Clr, &[&clr], &compensation)?
                };
                Loser {
                    last_lsn,
                    undo_next: prev,
                }
            }
            Some(Payload::Clr { undo_next, .. }) => {
                // Every step of an undo moves backwards (FORMAT.md §17.3, step 5): a clr whose
                // undo-next is not below its own LSN would make the undo loop forever.
                if undo_next >= lsn {
                    return Err(Error::corrupted_at(
                        lsn,
                        format!("transaction {txn}'s undo chain does not move backwards (clr undo-next {undo_next})"),
                    ));
                }
                Loser {
                    last_lsn: active.last_lsn,
                    undo_next,
                }
            }
            // Nothing to compensate: the chain goes on from the record before (an abort record
            // of a rollback the crash interrupted; `None`: a payload skipped as damaged).
            Some(
                Payload::Commit
                | Payload::Abort
                | Payload::End
                | Payload::CheckpointBegin
                | Payload::CheckpointEnd(_)
                | Payload::PageInit { .. },
            )
            | None => Loser {
                last_lsn: active.last_lsn,
                undo_next: prev,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::storage::SimStorage;
    use crate::store::{Options, Store};
    use crate::SyncMode;

    fn options(sim: &SimStorage) -> Options {
        Options {
            storage: Arc::new(sim.clone()),
            background_io: false,
            sync: SyncMode::Always,
            ..Options::default()
        }
    }

    /// A store with `count` durable commits since its last checkpoint, crashed (power cut).
    fn crashed_store(sim: &SimStorage, count: usize) -> SimStorage {
        let store = Store::create(Path::new("/db"), 4, options(sim)).unwrap();
        for i in 0..count {
            store.insert(&format!("id-{i}"), &[i as f32; 4], &[]).unwrap();
        }
        sim.crash_now();
        drop(store);
        sim.reboot()
    }

    #[test]
    fn recovery_of_a_few_commits_writes_nothing_and_the_close_writes_its_pages_back() {
        let disk = crashed_store(&SimStorage::new(21), 30);
        let (_, before) = crate::store::control_file::ControlFile::open(&disk, Path::new("/db")).unwrap();
        let store = Store::open(Path::new("/db"), options(&disk)).unwrap();
        let report = store.recovery_report();
        assert!(report.records_redone > 0, "the commits are redone: {report}");
        assert_eq!(
            store.inner().control.lock().1.sequence,
            before.sequence,
            "no checkpoint ends the recovery (the control file is as the crash left it)"
        );
        assert_eq!(store.len(), 30, "every acknowledged commit is there");
        store.close().unwrap();
        let store = Store::open(Path::new("/db"), options(&disk)).unwrap();
        let report = store.recovery_report();
        assert_eq!(report.records_redone, 0, "the close wrote back what recovery redid: {report}");
        assert_eq!(store.len(), 30);
    }

    #[test]
    fn a_recovery_whose_pages_pass_the_memory_budget_ends_with_a_checkpoint() {
        let sim = SimStorage::new(22);
        let disk = crashed_store(&sim, 60);
        let tight = Options {
            memory_budget_bytes: 16 * 4096,
            ..options(&disk)
        };
        let store = Store::open(Path::new("/db"), tight.clone()).unwrap();
        assert!(
            store.recovery_report().checkpoint_time > std::time::Duration::ZERO,
            "the pages recovery dirtied are over the budget's writeback share: written back now"
        );
        drop(store);
        let store = Store::open(Path::new("/db"), tight).unwrap();
        assert_eq!(store.recovery_report().records_redone, 0, "the open's checkpoint made the next open clean");
    }

    #[test]
    fn pages_the_log_formats_are_made_fresh_before_redo_and_rebuilt_from_their_inits() {
        let disk = crashed_store(&SimStorage::new(24), 400);
        let store = Store::open(Path::new("/db"), options(&disk)).unwrap();
        let report = store.recovery_report();
        assert!(report.pages_made_fresh > 0, "the vector and index pages the log formats: {report}");
        assert_eq!(store.len(), 400, "every acknowledged commit is there");
        for i in [0, 199, 399] {
            let vector = store.get(&format!("id-{i}")).unwrap().expect("present");
            assert_eq!(&vector[..], &[i as f32; 4], "id-{i} holds its vector");
        }
        store.close().unwrap();
        let store = Store::open(Path::new("/db"), options(&disk)).unwrap();
        assert_eq!(store.len(), 400, "the close wrote the rebuilt pages back, and they read back");
        assert_eq!(&store.get("id-399").unwrap().expect("present")[..], &[399.0; 4]);
    }

    #[test]
    fn a_recovery_over_the_budget_returns_at_once_and_the_background_checkpointer_writes_its_pages() {
        let disk = crashed_store(&SimStorage::new(23), 60);
        let (_, before) = crate::store::control_file::ControlFile::open(&disk, Path::new("/db")).unwrap();
        let tight = Options {
            memory_budget_bytes: 16 * 4096,
            background_io: true,
            ..options(&disk)
        };
        let store = Store::open(Path::new("/db"), tight.clone()).unwrap();
        let report = store.recovery_report();
        assert!(report.checkpoint_in_background, "the checkpoint is left to the checkpointer: {report}");
        assert_eq!(store.len(), 60, "every acknowledged commit is there");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while store.inner().control.lock().1.sequence == before.sequence {
            assert!(std::time::Instant::now() < deadline, "the checkpointer never ran the due checkpoint");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(store);
        let store = Store::open(Path::new("/db"), tight).unwrap();
        let report = store.recovery_report();
        assert_eq!(report.records_redone, 0, "the background checkpoint made the next open clean: {report}");
        assert!(!report.checkpoint_in_background);
    }
}
