//! Decoding the log at an address: the "valid if and only if" rules of FORMAT.md, in code.
//!
//! A [`LogView`] reads the segments' read-only mappings below a `limit` address (bytes at and
//! above it may be in flight). [`LogView::step`] walks from any position to the next record
//! start, checking every segment and page header it crosses; [`LogView::decode`] validates one
//! record and returns its payload, borrowed from the mapping when contiguous.

use std::collections::BTreeMap;
use std::sync::Arc;

use zerocopy::FromBytes;

use super::format::{
    Geometry, LogIdentity, PAGE_HEADER_BYTES, PageHeader, RECORD_HEADER_BYTES, RecordHeader, SEGMENT_HEADER_BYTES,
    SegmentHeader, align_up, record_crc,
};
use super::segment::Segment;

/// Where the walk from a position led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A record may start here (its header fits in the page).
    Start(u64),
    /// The log ends here: zeros, a segment not yet started, or the read limit.
    End(u64),
    /// A header at this address is damaged or stale.
    Invalid(u64, String),
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
}

/// Read access to the log's segments below `limit`.
pub struct LogView<'a> {
    pub geometry: Geometry,
    pub identity: LogIdentity,
    pub segments: &'a BTreeMap<u64, Arc<Segment>>,
    pub limit: u64,
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
    /// to the next place a record may start, validating each header crossed on the way.
    pub fn step(&self, mut pos: u64) -> Step {
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
                match self.check_page_header(pos) {
                    Ok(0) => pos += PAGE_HEADER_BYTES as u64,
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

    fn check_segment_header(&self, pos: u64) -> Result<(), Step> {
        let segment_no = self.geometry.segment_of(pos);
        let Some(bytes) = self.bytes(pos, SEGMENT_HEADER_BYTES) else {
            return Err(Step::End(pos));
        };
        if bytes.iter().all(|&b| b == 0) {
            return Err(Step::End(pos));
        }
        let header = SegmentHeader::read_from_bytes(bytes).expect("exact size");
        match header.check(&self.geometry, &self.identity, segment_no) {
            None => Ok(()),
            Some(reason) => Err(Step::Invalid(pos, reason)),
        }
    }

    /// Validates the page header at `page_lsn` and returns its `rem_len`.
    pub fn check_page_header(&self, page_lsn: u64) -> Result<u32, Step> {
        if page_lsn + PAGE_HEADER_BYTES as u64 > self.limit {
            return Err(Step::End(page_lsn));
        }
        let Some(bytes) = self.bytes(page_lsn, PAGE_HEADER_BYTES) else {
            return Err(Step::End(page_lsn));
        };
        if bytes.iter().all(|&b| b == 0) {
            return Err(Step::End(page_lsn));
        }
        let header = PageHeader::read_from_bytes(bytes).expect("exact size");
        match header.check(page_lsn, self.identity.timeline) {
            None => Ok(header.rem_len.get()),
            Some(reason) => Err(Step::Invalid(page_lsn, reason.into())),
        }
    }

    /// Decodes the record starting at `start` (a `Step::Start`), copying a spanning payload
    /// into `scratch`.
    pub fn decode(&self, start: u64, scratch: &mut Vec<u8>) -> Decoded {
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
        if header_bytes.iter().all(|&b| b == 0) {
            return Decoded::End(start);
        }
        let header = RecordHeader::read_from_bytes(header_bytes).expect("exact size");
        if let Some(reason) = header.check(start) {
            return Decoded::Invalid(start, reason.into());
        }
        let payload_len = header.total_len.get() as usize - RECORD_HEADER_BYTES;
        let payload_start = start + RECORD_HEADER_BYTES as u64;
        let room = (self.geometry.page_end(start) - payload_start) as usize;
        let (payload, end) = if payload_len <= room {
            let at = PayloadAt::Mapped {
                segment_no: self.geometry.segment_of(start),
                offset: self.geometry.offset_in_segment(payload_start) as usize,
                len: payload_len,
            };
            (at, payload_start + payload_len as u64)
        } else {
            match self.gather(start, payload_len, room, scratch) {
                Ok(end) => (PayloadAt::Scratch { len: payload_len }, end),
                Err((lsn, reason)) => return Decoded::Invalid(lsn, reason),
            }
        };
        let crc = record_crc(&header, &[self.payload(payload, scratch)]);
        if crc != header.crc.get() {
            return Decoded::Invalid(start, "record checksum mismatch".into());
        }
        Decoded::Record { header, payload, end }
    }

    /// Copies a payload that spans pages into `scratch`; returns the record's end address.
    /// Every continuation page must carry a valid header whose `rem_len` is exactly the number
    /// of the record's bytes still to come.
    fn gather(
        &self,
        start: u64,
        payload_len: usize,
        first_room: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<u64, (u64, String)> {
        let capacity = self.geometry.page_bytes() - PAGE_HEADER_BYTES as u64;
        let mut last_page = self.geometry.next_data_page(start);
        let mut left = (payload_len - first_room) as u64;
        while left > capacity {
            last_page = self.geometry.next_data_page(last_page);
            left -= capacity;
        }
        if last_page + PAGE_HEADER_BYTES as u64 + left > self.limit {
            // Checked before allocating: a length field cannot make us reserve more than the
            // log holds. The loop is bounded by RECORD_MAX_BYTES / page capacity.
            return Err((start, "record torn: it runs past the end of the log".into()));
        }
        scratch.clear();
        scratch.reserve(payload_len);
        let payload_start = start + RECORD_HEADER_BYTES as u64;
        let first = self
            .bytes(payload_start, first_room)
            .ok_or((start, "segment missing".to_string()))?;
        scratch.extend_from_slice(first);
        let mut page = self.geometry.next_data_page(start);
        while scratch.len() < payload_len {
            let remaining = payload_len - scratch.len();
            match self.check_page_header(page) {
                Ok(rem_len) if rem_len as usize == remaining => {}
                Ok(_) => return Err((start, "continuation length does not match the record".into())),
                Err(Step::End(_)) => return Err((start, "record torn: a continuation page is missing".into())),
                Err(Step::Invalid(lsn, reason)) => return Err((start, format!("continuation page {lsn}: {reason}"))),
                Err(Step::Start(_)) => unreachable!("check_page_header never yields Start"),
            }
            let chunk = remaining.min(capacity as usize);
            let data_start = page + PAGE_HEADER_BYTES as u64;
            if data_start + chunk as u64 > self.limit {
                return Err((start, "record torn: it runs past the end of the log".into()));
            }
            let bytes = self
                .bytes(data_start, chunk)
                .ok_or((start, "segment missing".to_string()))?;
            scratch.extend_from_slice(bytes);
            if scratch.len() == payload_len {
                return Ok(data_start + chunk as u64);
            }
            page = self.geometry.next_data_page(page);
        }
        unreachable!("first_room < payload_len, so the loop returns")
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
        }
    }

    /// The first record start at or after the data page `page_lsn` whose header is valid, for
    /// resynchronising after damage: the page's continuation (`rem_len`) is skipped.
    pub fn resync_in_page(&self, page_lsn: u64) -> Option<u64> {
        let rem_len = self.check_page_header(page_lsn).ok()?;
        let capacity = self.geometry.page_bytes() - PAGE_HEADER_BYTES as u64;
        if u64::from(rem_len) >= capacity {
            return None;
        }
        let start = align_up(page_lsn + PAGE_HEADER_BYTES as u64 + u64::from(rem_len));
        (self.geometry.page_end(page_lsn) - start >= RECORD_HEADER_BYTES as u64).then_some(start)
    }
}
