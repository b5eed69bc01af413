//! Recomputing the checksums of WAL images, so fuzz input reaches the code behind them.

use zerocopy::FromBytes;

use super::{all_zero, u32_at};
use crate::format::wal::{
    Geometry, PAGE_HEADER_BYTES, PAGE_HEADER_CRC_OFFSET, RECORD_HEADER_BYTES, RECORD_MAX_BYTES, RecordHeader,
    SEGMENT_HEADER_BYTES, SEGMENT_HEADER_CRC_OFFSET, align_up, record_crc,
};

/// Which checksums [`repair_log`] recomputes.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Repair {
    pub(super) segment_headers: bool,
    pub(super) page_headers: bool,
    pub(super) records: bool,
    /// Also set each record header's `lsn` to its address (before its CRC is recomputed).
    pub(super) record_lsns: bool,
}

impl Repair {
    pub(super) const ALL: Repair = Repair {
        segment_headers: true,
        page_headers: true,
        records: true,
        record_lsns: false,
    };

    pub(super) fn any(self) -> bool {
        self.segment_headers || self.page_headers || self.records || self.record_lsns
    }
}

/// Recomputes the checksums of the log bytes `log`, whose first byte is the first byte of
/// segment `first_segment` (so `log` holds whole or partial consecutive segments). Never panics,
/// whatever the bytes; bounded by the length of `log`.
pub(super) fn repair_log(log: &mut [u8], first_segment: u64, geometry: &Geometry, repair: Repair) {
    let page = geometry.page_bytes() as usize;
    let segment = geometry.segment_size_bytes as usize;
    let base = geometry.segment_base(first_segment);
    let pages = log.len() / page;
    for index in 0..pages {
        let at = index * page;
        if at.is_multiple_of(segment) {
            let header = &mut log[at..at + SEGMENT_HEADER_BYTES];
            if repair.segment_headers && !all_zero(header) {
                let crc = crc32c::crc32c(&header[..SEGMENT_HEADER_CRC_OFFSET]);
                header[SEGMENT_HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
            }
        } else {
            let header = &mut log[at..at + PAGE_HEADER_BYTES];
            if repair.page_headers && !all_zero(header) {
                let crc = crc32c::crc32c(&header[..PAGE_HEADER_CRC_OFFSET]);
                header[PAGE_HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
    if !(repair.records || repair.record_lsns) {
        return;
    }
    let capacity = page - PAGE_HEADER_BYTES;
    for index in 0..pages {
        let page_at = index * page;
        if page_at.is_multiple_of(segment) || all_zero(&log[page_at..page_at + PAGE_HEADER_BYTES]) {
            continue;
        }
        let rem_len = u32_at(log, page_at + 16) as usize;
        if rem_len >= capacity {
            continue;
        }
        let mut pos = align_up((page_at + PAGE_HEADER_BYTES + rem_len) as u64) as usize;
        while pos + RECORD_HEADER_BYTES <= page_at + page {
            if all_zero(&log[pos..pos + RECORD_HEADER_BYTES]) {
                break;
            }
            let total_len = u32_at(log, pos + 4) as usize;
            if total_len < RECORD_HEADER_BYTES || total_len > RECORD_MAX_BYTES as usize {
                break;
            }
            if repair.record_lsns {
                log[pos + 8..pos + 16].copy_from_slice(&(base + pos as u64).to_le_bytes());
            }
            let Some((payload, end)) = gather_payload(
                log,
                pos + RECORD_HEADER_BYTES,
                total_len - RECORD_HEADER_BYTES,
                page,
                segment,
            ) else {
                break;
            };
            if repair.records {
                let header = RecordHeader::read_from_bytes(&log[pos..pos + RECORD_HEADER_BYTES]).expect("56 bytes");
                let crc = record_crc(&header, &[&payload]);
                log[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
            }
            if end / page != index {
                break;
            }
            pos = align_up(end as u64) as usize;
        }
    }
}

/// The `len` payload bytes of a record starting at offset `from` of `log`, continuing across
/// page headers and segment header pages; and the offset just past them. `None` if the log
/// ends first.
fn gather_payload(log: &[u8], from: usize, len: usize, page: usize, segment: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(len.min(log.len()));
    let mut pos = from;
    while out.len() < len {
        if pos.is_multiple_of(page) {
            if pos.is_multiple_of(segment) {
                pos += page;
            }
            pos += PAGE_HEADER_BYTES;
        }
        if pos >= log.len() {
            return None;
        }
        let page_end = (pos / page + 1) * page;
        let n = (len - out.len()).min(page_end - pos);
        out.extend_from_slice(log.get(pos..pos + n)?);
        pos += n;
    }
    Some((out, pos))
}
