//! Finding the end of the log on open, and telling a torn tail from real damage.
//!
//! The scan walks records from a known-good start until the first address where no valid
//! record begins (`E`). What lies after `E` decides what `E` is:
//!
//! | label | evidence after `E` | Strict | TolerateTornTail | SkipCorrupted |
//! |---|---|---|---|---|
//! | `CleanEnd` | nothing: zeros, stale pages | end at `E` | end at `E` | end at `E` |
//! | `TornTail` | garbage, no valid record after `E` | end at `E`, zero the tail | end at `E`, zero the tail | end at `E`, zero the tail |
//! | `TornTail` | valid records after `E`, none proving `E` durable | error | end at `E`, zero the tail | end at `E`, zero the tail |
//! | `MidLogDamage` | a valid record whose `durable_lsn > E` | error | error | skip to the next valid page, go on |
//! | `Refused` | (a header of a newer format, another store, other sizes at `E`) | error | error | error |
//!
//! `durable_lsn` is the proof: a record stores the WAL's durable point at its append, so a later
//! record with `durable_lsn > E` shows the bytes at `E` had been made durable (and were
//! acknowledged) before they went bad: that is damage, never a torn write. Strict also refuses
//! the ambiguous case of valid records after `E` that prove nothing. `Refused` changes nothing
//! on disk: those bytes are not ours to erase.

use std::fmt;

use super::view::{Decoded, LogView, Step};
use crate::{Error, Lsn, RecoveryMode, Result};

/// A torn tail found (and erased) on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The end of the valid log: the first address where no valid record began.
    pub lsn: Lsn,
    /// Bytes of garbage after it that were zeroed: to the end of the last page holding any.
    pub garbage_bytes: u64,
    /// What was wrong at `lsn`.
    pub reason: String,
}

/// A range of damaged log skipped under [`RecoveryMode::SkipCorrupted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRange {
    /// The first damaged address.
    pub from: Lsn,
    /// Where the log resumed: the next valid record.
    pub to: Lsn,
    /// What was wrong at `from`.
    pub reason: String,
}

/// What the open scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Where the scan started.
    pub start_lsn: Lsn,
    /// The end of the log: the next record is appended here.
    pub end_lsn: Lsn,
    /// The last valid record seen, if any.
    pub last_record_lsn: Option<Lsn>,
    /// Valid records seen.
    pub records: u64,
    /// The torn tail after the log's end, if any.
    pub torn_tail: Option<TornTail>,
    /// Damaged ranges skipped (only under `RecoveryMode::SkipCorrupted`).
    pub skipped: Vec<SkippedRange>,
    /// Zero the log from `end_lsn` to here before appending (garbage of the torn tail).
    pub zero_to: u64,
    /// The highest epoch of any valid header seen (the next open must use a higher one).
    pub max_epoch: u32,
}

impl fmt::Display for ScanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scanned {} records from {} to {}",
            self.records, self.start_lsn, self.end_lsn
        )?;
        if let Some(torn) = &self.torn_tail {
            write!(
                f,
                "; torn tail at {} ({} bytes: {})",
                torn.lsn, torn.garbage_bytes, torn.reason
            )?;
        }
        for skip in &self.skipped {
            write!(f, "; skipped {}..{} ({})", skip.from, skip.to, skip.reason)?;
        }
        Ok(())
    }
}

/// The three outcomes of the decision table.
enum TailVerdict {
    CleanEnd,
    TornTail { garbage_to: u64, max_epoch: u32 },
    MidLogDamage { proof: u64, resync: Option<(u64, u32)> },
}

/// What lies after the end candidate `end`.
struct Evidence {
    /// A later valid record with `durable_lsn > end`.
    proof: Option<u64>,
    /// Any later valid record at all.
    later_record: Option<u64>,
    /// The end of the last page after `end` holding a valid header or non-zero bytes.
    garbage_to: u64,
    /// The first record start after `end` found by resynchronising on a page header, and the
    /// epoch of that page.
    resync: Option<(u64, u32)>,
    /// The highest epoch of any valid page header after `end`.
    max_epoch: u32,
}

/// Scans from `start` (a record start or the end of one) to the end of the log.
pub fn scan(view: &LogView<'_>, start: u64, mode: RecoveryMode) -> Result<ScanReport> {
    let mut report = ScanReport {
        start_lsn: Lsn(start),
        ..ScanReport::default()
    };
    let mut pos = start;
    let mut floor = 0u32;
    loop {
        let (end, reason) = match view.step(pos, &mut floor) {
            // Only where records end is needed: a spanning payload is checked where it lies.
            Step::Start(at) => match view.check(at, floor) {
                Decoded::Record { end, header, .. } => {
                    report.records += 1;
                    report.last_record_lsn = Some(Lsn(at));
                    floor = header.epoch.get();
                    pos = end;
                    continue;
                }
                Decoded::End(at) => (at, None),
                Decoded::Invalid(at, reason) => (at, Some(reason)),
            },
            Step::End(at) => (at, None),
            Step::Invalid(at, reason) => (at, Some(reason)),
            Step::Refuse(at, reason) => {
                return Err(Error::Incompatible(format!(
                    "log at {at}: {reason}; nothing was changed"
                )));
            }
        };
        report.max_epoch = report.max_epoch.max(floor);
        match classify(view, end, reason.is_some(), mode)? {
            TailVerdict::CleanEnd => {
                report.end_lsn = Lsn(end);
                report.zero_to = end;
                return Ok(report);
            }
            TailVerdict::TornTail { garbage_to, max_epoch } => {
                report.end_lsn = Lsn(end);
                report.zero_to = garbage_to;
                report.max_epoch = report.max_epoch.max(max_epoch);
                report.torn_tail = Some(TornTail {
                    lsn: Lsn(end),
                    garbage_bytes: garbage_to - end,
                    reason: reason.unwrap_or_else(|| "valid records after a gap".into()),
                });
                return Ok(report);
            }
            TailVerdict::MidLogDamage { proof, resync } => {
                let reason = reason.unwrap_or_else(|| "log bytes missing (zeros)".into());
                let Some((resume, resume_floor)) = resync.filter(|_| mode == RecoveryMode::SkipCorrupted) else {
                    return Err(Error::corrupted_at(
                        Lsn(end),
                        format!("{reason}; the record at {proof} proves this part of the log was durable"),
                    ));
                };
                report.skipped.push(SkippedRange {
                    from: Lsn(end),
                    to: Lsn(resume),
                    reason,
                });
                pos = resume;
                floor = resume_floor;
            }
        }
    }
}

/// The decision table of this module's documentation.
fn classify(view: &LogView<'_>, end: u64, invalid_at_end: bool, mode: RecoveryMode) -> Result<TailVerdict> {
    let evidence = look_ahead(view, end);
    if let Some(proof) = evidence.proof {
        return Ok(TailVerdict::MidLogDamage {
            proof,
            resync: evidence.resync,
        });
    }
    if let Some(later) = evidence.later_record.filter(|_| mode == RecoveryMode::Strict) {
        return Err(Error::corrupted_at(
            Lsn(end),
            format!("valid record at {later} after the end of the log; Strict mode does not call it a torn tail"),
        ));
    }
    if invalid_at_end || evidence.garbage_to > end {
        return Ok(TailVerdict::TornTail {
            garbage_to: evidence.garbage_to.max(view.geometry.page_end(end).min(view.limit)),
            max_epoch: evidence.max_epoch,
        });
    }
    Ok(TailVerdict::CleanEnd)
}

/// Reads every data page after `end` (to the end of the segments present) for evidence.
fn look_ahead(view: &LogView<'_>, end: u64) -> Evidence {
    let mut evidence = Evidence {
        proof: None,
        later_record: None,
        garbage_to: end,
        resync: None,
        max_epoch: 0,
    };
    if end < view.limit && !view.geometry.is_segment_start(end) && !end.is_multiple_of(view.geometry.page_bytes()) {
        let in_page = (view.geometry.page_end(end) - end) as usize;
        if view
            .bytes(end, in_page)
            .is_some_and(|bytes| !crate::zeros::all_zero(bytes))
        {
            evidence.garbage_to = view.geometry.page_end(end);
        }
    }
    let mut page = first_page_to_inspect(view, end);
    while page < view.limit {
        if let Ok(header) = view.page_header(page, 0) {
            evidence.garbage_to = view.geometry.page_end(page);
            evidence.max_epoch = evidence.max_epoch.max(header.epoch.get());
            inspect_page(view, page, end, &mut evidence);
            if evidence.proof.is_some() {
                return evidence;
            }
        }
        page = view.geometry.next_data_page(page);
    }
    evidence
}

fn first_page_to_inspect(view: &LogView<'_>, end: u64) -> u64 {
    let g = &view.geometry;
    if g.is_segment_start(end) {
        end + g.page_bytes()
    } else if end.is_multiple_of(g.page_bytes()) {
        end
    } else {
        g.next_data_page(end)
    }
}

/// Decodes the records that start in `page` (after its continuation) for evidence.
fn inspect_page(view: &LogView<'_>, page: u64, end: u64, evidence: &mut Evidence) {
    let Some((mut pos, mut floor)) = view.resync_in_page(page) else {
        return;
    };
    evidence.resync.get_or_insert((pos, floor));
    while view.geometry.page_start(pos) == page {
        let Decoded::Record { header, end: next, .. } = view.check(pos, floor) else {
            return;
        };
        evidence.later_record.get_or_insert(pos);
        if header.durable_lsn.get() > end {
            evidence.proof = Some(pos);
            return;
        }
        floor = header.epoch.get();
        match view.step(next, &mut floor) {
            Step::Start(at) => pos = at,
            _ => return,
        }
    }
}
