//! Decoding the log at an address: the "valid if and only if" rules of FORMAT.md, in code.
//!
//! A [`LogView`] reads the segments' read-only mappings below a `limit` address (bytes at and
//! above it may be in flight). [`LogView::step`] walks from a position to the next record
//! start, checking every segment and page header it crosses; [`LogView::decode`] validates one
//! record and returns where its payload lies (borrowed from the mapping when contiguous).
//!
//! A walk carries an epoch floor: the epoch of the last valid record or page header. Epochs
//! never decrease along the log, so bytes left by a run that crashed (an older epoch) are never
//! read as live, wherever they lie after the end a later run recovered to.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use zerocopy::FromBytes;

use crate::format::wal::{
    Geometry, HeaderFault, LogIdentity, PAGE_HEADER_BYTES, PageHeader, RECORD_HEADER_BYTES, RecordHeader,
    SEGMENT_HEADER_BYTES, SegmentHeader, align_up, record_crc,
};
use super::segment::Segment;

/// Where the walk from a position led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A record may start here (its header fits in the page).
    Start(u64),
    /// The log ends here: zeros, stale bytes, a segment not yet started, or the read limit.
    End(u64),
    /// A header at this address is damaged.
    Invalid(u64, String),
    /// A header at this address must not be read or overwritten (newer version, other store).
    Refuse(u64, String),
}

/// The outcome of decoding at a record start.
#[derive(Debug)]
pub enum Decoded {
    Record {
        header: RecordHeader,
        payload: PayloadAt,
        end: u64,
    },
    End(u64),
    Invalid(u64, String),
}

/// Where a decoded record's payload lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadAt {
    /// Contiguous in segment `segment_no` at `offset`.
    Mapped { segment_no: u64, offset: usize, len: usize },
    /// Spanned pages: copied into the caller's scratch buffer.
    Scratch { len: usize },
    /// Spanned pages, left where they lie: [`LogView::check`] took their checksum piece by
    /// piece and copied nothing. Only the header and the end of such a record are read.
    Spanning { len: usize },
}

/// Read access to the log's segments below `limit`.
pub struct LogView<'a> {
    pub geometry: Geometry,
    pub identity: LogIdentity,
    pub segments: &'a BTreeMap<u64, Arc<Segment>>,
    pub limit: u64,
    /// Records lying wholly in this range passed every check, their checksum included, in the
    /// scan that opened the log, and the bytes have not changed since (see
    /// `Wal::verified_reader`): their checksum is not computed again. Empty almost everywhere.
    pub crc_checked: Range<u64>,
}

fn fault_step(at: u64, fault: HeaderFault) -> Step {
    match fault {
        HeaderFault::Damaged(reason) => Step::Invalid(at, reason),
        HeaderFault::Stale(_) => Step::End(at),
        HeaderFault::Foreign(reason) => Step::Refuse(at, reason),
    }
}

impl<'a> LogView<'a> {
    /// `len` bytes at `lsn`, which must lie within one page below the limit; `None` if that
    /// segment is absent.
    pub fn bytes(&self, lsn: u64, len: usize) -> Option<&'a [u8]> {
        assert!(lsn + len as u64 <= self.limit, "read past the limit");
        assert!(len == 0 || self.geometry.page_start(lsn) == self.geometry.page_start(lsn + len as u64 - 1));
        let segment = self.segments.get(&self.geometry.segment_of(lsn))?;
        let offset = self.geometry.offset_in_segment(lsn) as usize;
        // SAFETY: bytes below `limit` are never written while a view exists: the writer only
        // writes at or above the written watermark (the limit of every reader), and a segment is
        // recycled only when no `Arc` of it is held; this view's map borrows them.
        Some(unsafe { segment.map.bytes(offset, len) })
    }

    /// Walks from `pos` (the end of the previous record, or any address inside a payload area)
    /// to the next place a record may start, validating each header crossed and raising
    /// `floor` to the epoch of each page header crossed.
    pub fn step(&self, mut pos: u64, floor: &mut u32) -> Step {
        let page_bytes = self.geometry.page_bytes();
        loop {
            pos = align_up(pos);
            if pos >= self.limit {
                return Step::End(pos);
            }
            if self.geometry.is_segment_start(pos) {
                match self.check_segment_header(pos) {
                    Ok(()) => pos += page_bytes,
                    Err(step) => return step,
                }
                continue;
            }
            if pos.is_multiple_of(page_bytes) {
                match self.page_header(pos, *floor) {
                    Ok(header) if header.rem_len.get() == 0 => {
                        *floor = header.epoch.get();
                        pos += PAGE_HEADER_BYTES as u64;
                    }
                    Ok(_) => return Step::Invalid(pos, "page continues a record that never began".into()),
                    Err(step) => return step,
                }
                continue;
            }
            if self.geometry.page_end(pos) - pos < RECORD_HEADER_BYTES as u64 {
                pos = self.geometry.page_end(pos);
                continue;
            }
            return Step::Start(pos);
        }
    }

    /// Checks the header of the segment starting at `pos`.
    pub fn check_segment_header(&self, pos: u64) -> Result<(), Step> {
        let segment_no = self.geometry.segment_of(pos);
        let Some(bytes) = self.bytes(pos, SEGMENT_HEADER_BYTES) else {
            return Err(Step::End(pos));
        };
        if crate::zeros::all_zero(bytes) {
            return Err(Step::End(pos));
        }
        let header = SegmentHeader::read_from_bytes(bytes).expect("exact size");
        header
            .check(&self.geometry, &self.identity, segment_no)
            .map_err(|fault| fault_step(pos, fault))
    }

    /// The valid header of the page at `page_lsn` (epoch at least `floor`).
    pub fn page_header(&self, page_lsn: u64, floor: u32) -> Result<PageHeader, Step> {
        if page_lsn + PAGE_HEADER_BYTES as u64 > self.limit {
            return Err(Step::End(page_lsn));
        }
        let Some(bytes) = self.bytes(page_lsn, PAGE_HEADER_BYTES) else {
            return Err(Step::End(page_lsn));
        };
        if crate::zeros::all_zero(bytes) {
            return Err(Step::End(page_lsn));
        }
        let header = PageHeader::read_from_bytes(bytes).expect("exact size");
        match header.check(page_lsn, self.identity.timeline, floor) {
            Ok(()) => Ok(header),
            Err(fault) => Err(fault_step(page_lsn, fault)),
        }
    }

    /// Decodes the record starting at `start` (a `Step::Start`) of epoch at least `floor`,
    /// copying a spanning payload into `scratch`.
    pub fn decode(&self, start: u64, floor: u32, scratch: &mut Vec<u8>) -> Decoded {
        self.decode_into(start, floor, Some(scratch))
    }

    /// Validates the record starting at `start` as [`LogView::decode`] does, every check
    /// the same, without copying a spanning payload: its checksum is taken piece by piece from
    /// the mappings ([`PayloadAt::Spanning`]). For walks that need only where records end (the
    /// open's scan: a bulk load's records span many pages, and gathering them was a copy of
    /// the whole log).
    pub fn check(&self, start: u64, floor: u32) -> Decoded {
        self.decode_into(start, floor, None)
    }

    /// [`LogView::decode`] with a scratch buffer, [`LogView::check`] without.
    fn decode_into(&self, start: u64, floor: u32, mut scratch: Option<&mut Vec<u8>>) -> Decoded {
        assert!(
            self.geometry.in_payload(start) && start.is_multiple_of(8),
            "decode at a record start"
        );
        if start + RECORD_HEADER_BYTES as u64 > self.limit {
            return Decoded::End(start);
        }
        let Some(header_bytes) = self.bytes(start, RECORD_HEADER_BYTES) else {
            return Decoded::End(start);
        };
        if crate::zeros::all_zero(header_bytes) {
            return Decoded::End(start);
        }
        let header = RecordHeader::read_from_bytes(header_bytes).expect("exact size");
        if let Some(reason) = header.check(start, floor) {
            return Decoded::Invalid(start, reason.into());
        }
        let payload_len = header.total_len.get() as usize - RECORD_HEADER_BYTES;
        let payload_start = start + RECORD_HEADER_BYTES as u64;
        let room = (self.geometry.page_end(start) - payload_start) as usize;
        let (payload, end, crc) = if payload_len <= room {
            let at = PayloadAt::Mapped {
                segment_no: self.geometry.segment_of(start),
                offset: self.geometry.offset_in_segment(payload_start) as usize,
                len: payload_len,
            };
            (at, payload_start + payload_len as u64, None)
        } else {
            let epoch = header.epoch.get();
            let walked = match scratch.as_deref_mut() {
                Some(scratch) => self
                    .gather(start, epoch, payload_len, room, scratch)
                    .map(|end| (PayloadAt::Scratch { len: payload_len }, end, None)),
                None => {
                    // The pieces are not kept: their checksum is taken on the way.
                    let mut crc = record_crc(&header, &[]);
                    self.for_each_piece(start, epoch, payload_len, room, |piece| {
                        crc = crc32c::crc32c_append(crc, piece);
                    })
                    .map(|end| (PayloadAt::Spanning { len: payload_len }, end, Some(crc)))
                }
            };
            match walked {
                Ok(walked) => walked,
                Err(reason) => return Decoded::Invalid(start, reason),
            }
        };
        let checked = self.crc_checked.start <= start && end <= self.crc_checked.end;
        if !checked {
            let scratch = scratch.as_deref().map_or(&[][..], Vec::as_slice);
            let crc = crc.unwrap_or_else(|| record_crc(&header, &[self.payload(payload, scratch)]));
            if crc != header.crc.get() {
                return Decoded::Invalid(start, "record checksum mismatch".into());
            }
        }
        Decoded::Record { header, payload, end }
    }

    /// True if a record with a valid header starts at `start` and its length runs past the
    /// limit (the end of the segments present).
    pub fn record_runs_past_limit(&self, start: u64) -> bool {
        if !self.geometry.in_payload(start)
            || !start.is_multiple_of(8)
            || start + RECORD_HEADER_BYTES as u64 > self.limit
        {
            return false;
        }
        let Some(bytes) = self.bytes(start, RECORD_HEADER_BYTES) else {
            return false;
        };
        let header = RecordHeader::read_from_bytes(bytes).expect("exact size");
        if header.check(start, 0).is_some() {
            return false;
        }
        let payload_len = header.total_len.get() as u64 - RECORD_HEADER_BYTES as u64;
        let room = self.geometry.page_end(start) - start - RECORD_HEADER_BYTES as u64;
        payload_len > room && self.spanning_end(start, payload_len - room).is_none()
    }

    /// The end address of a record whose payload starts at `start + 56` and overflows the
    /// first page by `overflow` bytes; `None` if it would pass the limit. Bounded by
    /// RECORD_MAX_BYTES / page capacity steps.
    fn spanning_end(&self, start: u64, overflow: u64) -> Option<u64> {
        let capacity = self.geometry.page_bytes() - PAGE_HEADER_BYTES as u64;
        let mut page = self.geometry.next_data_page(start);
        let mut left = overflow;
        while left > capacity {
            page = self.geometry.next_data_page(page);
            left -= capacity;
        }
        let end = page + PAGE_HEADER_BYTES as u64 + left;
        (end <= self.limit).then_some(end)
    }

    /// Copies a payload that spans pages into `scratch`; returns the record's end address.
    fn gather(
        &self,
        start: u64,
        epoch: u32,
        payload_len: usize,
        first_room: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<u64, String> {
        scratch.clear();
        self.for_each_piece(start, epoch, payload_len, first_room, |piece| {
            // Reserved at the first piece: after the length was checked against the log.
            if scratch.is_empty() {
                scratch.reserve(payload_len);
            }
            scratch.extend_from_slice(piece);
        })
    }

    /// Hands a payload that spans pages to `visit` piece by piece, as it lies in the mappings
    /// (the first page's part, then each continuation page's); returns the record's end address.
    /// Every continuation page must carry a valid header of the record's own epoch whose
    /// `rem_len` is exactly the number of the record's bytes still to come, and every segment
    /// the record continues into must carry its valid header.
    fn for_each_piece(
        &self,
        start: u64,
        epoch: u32,
        payload_len: usize,
        first_room: usize,
        mut visit: impl FnMut(&'a [u8]),
    ) -> Result<u64, String> {
        // Checked before any piece is visited (and a gather allocates): a length field cannot
        // make a reader walk or reserve more than the log holds.
        let end = self
            .spanning_end(start, (payload_len - first_room) as u64)
            .ok_or("record torn: it runs past the end of the log")?;
        let capacity = (self.geometry.page_bytes() - PAGE_HEADER_BYTES as u64) as usize;
        let payload_start = start + RECORD_HEADER_BYTES as u64;
        visit(self.bytes(payload_start, first_room).ok_or("segment missing")?);
        let mut visited = first_room;
        let mut page = self.geometry.next_data_page(start);
        while visited < payload_len {
            if self.geometry.offset_in_segment(page) == self.geometry.page_bytes() {
                let base = self.geometry.segment_base(self.geometry.segment_of(page));
                if let Err(step) = self.check_segment_header(base) {
                    return Err(format!(
                        "record continues into segment at {base} without a valid header ({step:?})"
                    ));
                }
            }
            let remaining = payload_len - visited;
            let header = match self.page_header(page, epoch) {
                Ok(header) => header,
                Err(Step::End(_)) => return Err("record torn: a continuation page is missing".into()),
                Err(step) => return Err(format!("continuation page {page}: {step:?}")),
            };
            if header.rem_len.get() as usize != remaining || header.epoch.get() != epoch {
                return Err("continuation page does not continue this record".into());
            }
            let chunk = remaining.min(capacity);
            visit(
                self.bytes(page + PAGE_HEADER_BYTES as u64, chunk)
                    .ok_or("segment missing")?,
            );
            visited += chunk;
            page = self.geometry.next_data_page(page);
        }
        assert_eq!(visited, payload_len, "the pieces make up the payload");
        Ok(end)
    }

    /// The payload bytes described by `at`.
    pub fn payload<'s>(&self, at: PayloadAt, scratch: &'s [u8]) -> &'s [u8]
    where
        'a: 's,
    {
        match at {
            PayloadAt::Mapped {
                segment_no,
                offset,
                len,
            } => {
                let lsn = self.geometry.segment_base(segment_no) + offset as u64;
                self.bytes(lsn, len).expect("decoded from this segment")
            }
            PayloadAt::Scratch { len } => &scratch[..len],
            PayloadAt::Spanning { .. } => panic!("a checked record's spanning payload is read with `decode`"),
        }
    }

    /// Resynchronises on the data page `page_lsn`: if its header is valid (any epoch), the
    /// first record start after its continuation and the page's epoch.
    pub fn resync_in_page(&self, page_lsn: u64) -> Option<(u64, u32)> {
        let header = self.page_header(page_lsn, 0).ok()?;
        let capacity = self.geometry.page_bytes() - PAGE_HEADER_BYTES as u64;
        let rem_len = u64::from(header.rem_len.get());
        if rem_len >= capacity {
            return None;
        }
        let start = align_up(page_lsn + PAGE_HEADER_BYTES as u64 + rem_len);
        (self.geometry.page_end(page_lsn) - start >= RECORD_HEADER_BYTES as u64).then_some((start, header.epoch.get()))
    }
}
