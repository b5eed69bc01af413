//! Iterating the log: records with headers and payloads borrowed from the segment mappings,
//! copied only when a record spans pages.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use zerocopy::FromBytes;

use super::Shared;
use crate::format::wal::{RECORD_HEADER_BYTES, RecordHeader};
use super::scan::SkippedRange;
use super::segment::Segment;
use super::view::{Decoded, LogView, Step};
use crate::{Error, Lsn, Result};

/// One record read from the log.
#[derive(Debug, Clone, Copy)]
pub struct Record<'r> {
    /// The record's address.
    pub lsn: Lsn,
    /// The header, borrowed from the mapping.
    pub header: &'r RecordHeader,
    /// The payload: borrowed from the mapping, or from the reader's scratch if it spanned pages.
    pub payload: &'r [u8],
    /// The address just past the record.
    pub end: u64,
}

/// Reads records from a start address up to a limit fixed at creation.
pub struct WalReader {
    shared: Arc<Shared>,
    segments: BTreeMap<u64, Arc<Segment>>,
    pos: u64,
    limit: u64,
    scratch: Vec<u8>,
    skips: Vec<SkippedRange>,
    floor: u32,
    crc_checked: Range<u64>,
    /// Records returned so far: every [`STOP_CHECK_RECORDS`] the storage is asked whether
    /// the work reading was stopped (a replay reads a mapped log and touches no file).
    records_read: u32,
}

/// How often (in records) a reader checks [`Storage::interrupted`](crate::storage::Storage::interrupted).
const STOP_CHECK_RECORDS: u32 = 1024;

impl WalReader {
    pub(super) fn new(shared: Arc<Shared>, pos: u64, limit: u64) -> WalReader {
        let segments = shared.segments.read().clone();
        WalReader {
            shared,
            segments,
            pos,
            limit,
            scratch: Vec::new(),
            skips: Vec::new(),
            floor: 0,
            crc_checked: 0..0,
            records_read: 0,
        }
    }

    /// Records wholly in `range` were checked whole by the open scan (`Wal::verified_reader`).
    pub(super) fn with_crc_checked(mut self, range: Range<u64>) -> WalReader {
        self.crc_checked = range;
        self
    }

    /// Damaged ranges to jump over (from the open scan under `SkipCorrupted`).
    pub fn with_skips(mut self, skips: &[SkippedRange]) -> WalReader {
        self.skips = skips.to_vec();
        self
    }

    /// Where the next record is looked for.
    pub fn position(&self) -> Lsn {
        Lsn(self.pos)
    }

    /// The address reading stops at.
    pub fn limit(&self) -> Lsn {
        Lsn(self.limit)
    }

    /// The next record, `None` at the end of the log, or `Corrupted` where a record that must
    /// be there is damaged.
    #[allow(clippy::should_implement_trait)]
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        self.records_read = self.records_read.wrapping_add(1);
        if self.records_read.is_multiple_of(STOP_CHECK_RECORDS) && self.shared.dir.storage().interrupted() {
            return Err(Error::Interrupted("reading the log was stopped by its watcher".into()));
        }
        let view = LogView {
            geometry: self.shared.config.geometry,
            identity: self.shared.config.identity,
            segments: &self.segments,
            limit: self.limit,
            crc_checked: self.crc_checked.clone(),
        };
        loop {
            let failure = match view.step(self.pos, &mut self.floor) {
                Step::End(at) => match skip_from(&self.skips, at) {
                    Some(to) => {
                        (self.pos, self.floor) = (to, 0);
                        continue;
                    }
                    None => return Ok(None),
                },
                Step::Invalid(at, reason) => (at, reason),
                Step::Refuse(at, reason) => return Err(Error::Incompatible(format!("log at {at}: {reason}"))),
                Step::Start(at) => match view.decode(at, self.floor, &mut self.scratch) {
                    Decoded::Record { payload, end, header } => {
                        self.pos = end;
                        self.floor = header.epoch.get();
                        prefetch_after(&view, end);
                        let header_bytes = view.bytes(at, RECORD_HEADER_BYTES).expect("just decoded");
                        let header = RecordHeader::ref_from_bytes(header_bytes).expect("exact size, align 1");
                        let payload = view.payload(payload, &self.scratch);
                        return Ok(Some(Record {
                            lsn: Lsn(at),
                            header,
                            payload,
                            end,
                        }));
                    }
                    Decoded::End(at) => match skip_from(&self.skips, at) {
                        Some(to) => {
                            (self.pos, self.floor) = (to, 0);
                            continue;
                        }
                        None => return Ok(None),
                    },
                    Decoded::Invalid(at, reason) => (at, reason),
                },
            };
            match self.skips.iter().find(|skip| skip.from.get() == failure.0) {
                Some(skip) => {
                    self.pos = skip.to.get();
                    self.floor = 0;
                }
                None => return Err(Error::corrupted_at(Lsn(failure.0), failure.1)),
            }
        }
    }
}

/// How much of the log after a record the reader asks the CPU to fetch into its caches.
const PREFETCH_BYTES: u64 = 2048;

/// Asks the CPU to start fetching the log bytes after `end` (to the end of that page, at most
/// [`PREFETCH_BYTES`]) while the caller works on the record it just got: the next record's
/// decoding then finds them in cache. A record of page edits is read in jumps (an edit's header,
/// then past its after-image to the next header), which the hardware's sequential prefetchers
/// miss, so without this each jump over a large image waits for memory.
fn prefetch_after(view: &LogView<'_>, end: u64) {
    let len = PREFETCH_BYTES
        .min(view.geometry.page_end(end) - end)
        .min(view.limit.saturating_sub(end));
    if len == 0 {
        return;
    }
    let Some(bytes) = view.bytes(end, len as usize) else {
        return;
    };
    for line in bytes.chunks(64) {
        crate::hint::prefetch_line(line.as_ptr());
    }
}

/// Where a damaged range skipped by the open scan that starts at `at` ends, if one does (zeros
/// inside the durable log end a walk just as damage does).
fn skip_from(skips: &[SkippedRange], at: u64) -> Option<u64> {
    skips
        .iter()
        .find(|skip| skip.from.get() == at)
        .map(|skip| skip.to.get())
}
