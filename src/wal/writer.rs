//! The append path: records are laid out into an in-memory tail buffer under a short lock,
//! exactly as they will sit in the segment files (segment header pages, page headers,
//! continuations, alignment padding). A flush hands the buffer to `write_at` (pwrite) and, for
//! durability, `sync_data` (fdatasync); many committers share one flush (group commit).

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use crate::format::wal::{
    Geometry, LogIdentity, PageHeader, RECORD_HEADER_BYTES, RECORD_MAX_BYTES, RecordHeader, SegmentHeader, align_up,
    record_crc,
};

/// What a caller appends: everything of the header but the fields the WAL fills in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordSpec {
    pub kind: u8,
    pub flags: u8,
    pub txn_id: u64,
    pub prev_lsn: u64,
    pub timestamp_us: u64,
}

/// The tail of the log not yet handed to the files: bytes `[buf_start, pos)`.
#[derive(Debug)]
pub struct Tail {
    /// The next byte to be written: the end of the log.
    pub pos: u64,
    pub buf_start: u64,
    pub buf: Vec<u8>,
}

impl Tail {
    pub fn new(pos: u64) -> Tail {
        Tail {
            pos,
            buf_start: pos,
            buf: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pos += bytes.len() as u64;
    }

    fn push_zeros(&mut self, len: u64) {
        self.buf.resize(self.buf.len() + len as usize, 0);
        self.pos += len;
    }

    /// Rolls the tail back to `pos` (an append that could not get its segments).
    pub fn truncate_to(&mut self, pos: u64) {
        assert!(pos >= self.buf_start && pos <= self.pos, "rollback inside the buffer");
        self.buf.truncate((pos - self.buf_start) as usize);
        self.pos = pos;
    }

    /// Takes the buffered bytes: returns their start address and the bytes.
    pub fn take(&mut self, spare: Vec<u8>) -> (u64, Vec<u8>) {
        let start = self.buf_start;
        let bytes = std::mem::replace(&mut self.buf, spare);
        self.buf_start = self.pos;
        (start, bytes)
    }
}

/// Lays out records into a [`Tail`].
pub struct Layout<'a> {
    pub geometry: &'a Geometry,
    pub identity: &'a LogIdentity,
    /// The epoch of this open of the log, stamped on every page header and record.
    pub epoch: u32,
}

impl Layout<'_> {
    /// Pads `tail` to the next address where a record may start: aligned, in a payload area,
    /// with room for a whole header; writing segment and page headers on the way.
    pub fn advance_to_record_start(&self, tail: &mut Tail) {
        let page_bytes = self.geometry.page_bytes();
        loop {
            let aligned = align_up(tail.pos);
            tail.push_zeros(aligned - tail.pos);
            if self.geometry.is_segment_start(tail.pos) {
                self.push_segment_header(tail);
            } else if tail.pos.is_multiple_of(page_bytes) {
                let header = PageHeader::new(tail.pos, 0, self.identity.timeline, self.epoch);
                tail.push(header.as_bytes());
            } else if self.geometry.page_end(tail.pos) - tail.pos < RECORD_HEADER_BYTES as u64 {
                let gap = self.geometry.page_end(tail.pos) - tail.pos;
                tail.push_zeros(gap);
            } else {
                return;
            }
        }
    }

    fn push_segment_header(&self, tail: &mut Tail) {
        let segment_no = self.geometry.segment_of(tail.pos);
        let header = SegmentHeader::new(self.geometry, self.identity, segment_no, super::now_us());
        tail.push(header.as_bytes());
        tail.push_zeros(self.geometry.page_bytes() - header.as_bytes().len() as u64);
    }

    /// Appends one record at `tail.pos` (a record start) and returns its end address.
    pub fn put_record(&self, tail: &mut Tail, spec: &RecordSpec, durable_lsn: u64, payload: &[&[u8]]) -> u64 {
        let start = tail.pos;
        assert!(
            self.geometry.in_payload(start) && start.is_multiple_of(8),
            "records start aligned in a payload area"
        );
        let payload_len: usize = payload.iter().map(|part| part.len()).sum();
        let total_len = RECORD_HEADER_BYTES + payload_len;
        assert!(total_len <= RECORD_MAX_BYTES as usize, "caller checks the record size");
        let mut header = RecordHeader {
            crc: U32::ZERO,
            total_len: U32::new(total_len as u32),
            lsn: U64::new(start),
            prev_lsn: U64::new(spec.prev_lsn),
            txn_id: U64::new(spec.txn_id),
            timestamp_us: U64::new(spec.timestamp_us),
            durable_lsn: U64::new(durable_lsn),
            kind: spec.kind,
            flags: spec.flags,
            reserved0: U16::ZERO,
            epoch: U32::new(self.epoch),
        };
        header.crc = U32::new(record_crc(&header, payload));
        let mut remaining = total_len;
        for part in std::iter::once(header.as_bytes()).chain(payload.iter().copied()) {
            remaining = self.put_spanning(tail, part, remaining);
        }
        assert_eq!(remaining, 0, "every byte of the record was laid out");
        tail.pos
    }

    /// Copies `data`, the next bytes of a record with `remaining` bytes left, breaking it at
    /// page ends: each continuation page starts with a header whose `rem_len` is what is left.
    fn put_spanning(&self, tail: &mut Tail, mut data: &[u8], mut remaining: usize) -> usize {
        let page_bytes = self.geometry.page_bytes();
        while !data.is_empty() {
            if self.geometry.is_segment_start(tail.pos) {
                self.push_segment_header(tail);
            }
            if tail.pos.is_multiple_of(page_bytes) {
                let header = PageHeader::new(tail.pos, remaining as u32, self.identity.timeline, self.epoch);
                tail.push(header.as_bytes());
            }
            let room = (self.geometry.page_end(tail.pos) - tail.pos) as usize;
            let n = room.min(data.len());
            tail.push(&data[..n]);
            data = &data[n..];
            remaining -= n;
        }
        remaining
    }
}
