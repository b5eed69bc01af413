//! On-disk structures of the write-ahead log (format-spec/FORMAT.md, "WAL segment files").
//!
//! Every multi-byte integer is little-endian; the structs below are read and written zero-copy
//! with `zerocopy`, and every size and offset is pinned by a compile-time assert.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use super::{FORMAT_VERSION_MAJOR, FORMAT_VERSION_MINOR};

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"VLMWAL\r\n";
/// Magic at the start of every WAL data page: the bytes "VWLP".
pub const PAGE_MAGIC: u32 = u32::from_le_bytes(*b"VWLP");

/// Smallest and largest page sizes accepted (powers of two).
pub const PAGE_SIZE_MIN_BYTES: u32 = 4096;
/// Largest page size accepted: 1 MiB.
pub const PAGE_SIZE_MAX_BYTES: u32 = 1 << 20;
/// A segment holds its header page and at least this many data pages.
pub const SEGMENT_DATA_PAGES_MIN: u64 = 4;
/// Largest segment accepted (1 TiB keeps offsets far from overflow).
pub const SEGMENT_SIZE_MAX_BYTES: u64 = 1 << 40;

/// Records start at addresses that are multiples of this.
pub const RECORD_ALIGN_BYTES: u64 = 8;
/// The largest record (header + payload) a writer may append and a reader will accept.
/// A reader checks this before it allocates anything for a record that spans pages.
pub const RECORD_MAX_BYTES: u32 = 32 << 20;

/// Page 0 of every segment file. The rest of page 0 is zero.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `VLMWAL\r\n` |
/// | 8 | 2 | format version major |
/// | 10 | 2 | format version minor |
/// | 12 | 4 | page size in bytes |
/// | 16 | 8 | segment size in bytes |
/// | 24 | 8 | segment number |
/// | 32 | 8 | base LSN = segment number × segment size |
/// | 40 | 4 | timeline |
/// | 44 | 4 | reserved, zero |
/// | 48 | 8 | store id |
/// | 56 | 8 | creation time, µs since the Unix epoch |
/// | 64 | 60 | reserved, zero |
/// | 124 | 4 | CRC32C of bytes 0..124 |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SegmentHeader {
    /// [`SEGMENT_MAGIC`].
    pub magic: [u8; 8],
    /// Format version major.
    pub version_major: U16,
    /// Format version minor.
    pub version_minor: U16,
    /// Log page size in bytes.
    pub page_size_bytes: U32,
    /// Segment size in bytes.
    pub segment_size_bytes: U64,
    /// Number of this segment.
    pub segment_no: U64,
    /// LSN of the segment's first byte (segment number × segment size).
    pub base_lsn: U64,
    /// Timeline of the log: 1 for a new store, the source's plus 1 for a restored copy.
    pub timeline: U32,
    /// Reserved, zero.
    pub reserved0: U32,
    /// Id of the store the segment belongs to.
    pub store_id: U64,
    /// Creation time, µs since the Unix epoch.
    pub created_us: U64,
    /// Reserved, zero.
    pub reserved1: [u8; 60],
    /// CRC32C of bytes 0..124.
    pub crc: U32,
}

/// Size of a [`SegmentHeader`] in bytes.
pub const SEGMENT_HEADER_BYTES: usize = 128;
/// Offset of the checksum in a [`SegmentHeader`].
pub const SEGMENT_HEADER_CRC_OFFSET: usize = SEGMENT_HEADER_BYTES - 4;
const _: () = assert!(size_of::<SegmentHeader>() == SEGMENT_HEADER_BYTES);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, crc) == SEGMENT_HEADER_CRC_OFFSET);
const _: () = assert!(std::mem::offset_of!(SegmentHeader, store_id) == 48);

/// Flag of [`PageHeader::flags`]: the payload area starts with the continuation of a record
/// begun in an earlier page (`rem_len > 0`).
pub const PAGE_FLAG_CONTINUATION: u16 = 1;
/// All flags a version-1 reader understands.
pub const PAGE_FLAGS_KNOWN: u16 = PAGE_FLAG_CONTINUATION;

/// The first bytes of every WAL data page (pages 1.. of a segment).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `VWLP` |
/// | 4 | 2 | format version major |
/// | 6 | 2 | flags (bit 0: continuation) |
/// | 8 | 8 | page address: the LSN of this page's first byte |
/// | 16 | 4 | rem_len: bytes of a record begun in an earlier page still to come |
/// | 20 | 4 | timeline |
/// | 24 | 4 | epoch: the open of the log that wrote the page |
/// | 28 | 4 | CRC32C of bytes 0..28 |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PageHeader {
    /// [`PAGE_MAGIC`].
    pub magic: U32,
    /// Format version major.
    pub version_major: U16,
    /// Flags: [`PAGE_FLAG_CONTINUATION`] or 0.
    pub flags: U16,
    /// Page address: the LSN of the page's first byte.
    pub page_lsn: U64,
    /// Bytes of a record begun in an earlier page still to come in this one and later ones.
    pub rem_len: U32,
    /// Timeline of the log: 1 for a new store, the source's plus 1 for a restored copy.
    pub timeline: U32,
    /// The open of the log that wrote the page.
    pub epoch: U32,
    /// CRC32C of bytes 0..28.
    pub crc: U32,
}

/// Size of a log [`PageHeader`] in bytes.
pub const PAGE_HEADER_BYTES: usize = 32;
/// Offset of the checksum in a log [`PageHeader`].
pub const PAGE_HEADER_CRC_OFFSET: usize = 28;
const _: () = assert!(size_of::<PageHeader>() == PAGE_HEADER_BYTES);
const _: () = assert!(std::mem::offset_of!(PageHeader, crc) == PAGE_HEADER_CRC_OFFSET);
const _: () = assert!((PAGE_HEADER_BYTES as u64).is_multiple_of(RECORD_ALIGN_BYTES));

/// Record flag (bit 0) of a checkpoint-end record written by a closing checkpoint: the open
/// of the log that wrote it (its epoch) appended nothing after it (FORMAT.md section 12).
pub const RECORD_FLAG_CLOSING: u8 = 0x01;

/// The header of every log record. A record is this header followed by `total_len - 56`
/// payload bytes; it may continue across page and segment boundaries, but the header itself
/// never does (a writer starts a record on the next page when fewer than 56 bytes remain).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | CRC32C of the record's bytes 4..total_len (header after this field, then payload) |
/// | 4 | 4 | total_len: header + payload bytes, 56 ..= RECORD_MAX_BYTES |
/// | 8 | 8 | lsn: must equal the record's own address |
/// | 16 | 8 | prev_lsn: the previous record of the same transaction, 0 if none |
/// | 24 | 8 | txn_id: 0 for records outside any transaction |
/// | 32 | 8 | timestamp, µs since the Unix epoch |
/// | 40 | 8 | durable_lsn: every log byte below it was durable when the record was appended |
/// | 48 | 1 | kind (non-zero) |
/// | 49 | 1 | flags |
/// | 50 | 2 | reserved, zero |
/// | 52 | 4 | epoch: the open of the log that wrote the record |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RecordHeader {
    /// CRC32C of the record's bytes 4..total_len (see [`record_crc`]).
    pub crc: U32,
    /// Length of header and payload in bytes (56..=[`RECORD_MAX_BYTES`]).
    pub total_len: U32,
    /// The record's own address.
    pub lsn: U64,
    /// LSN of the previous record of the same transaction, 0 if none.
    pub prev_lsn: U64,
    /// Transaction id, 0 for records outside any transaction.
    pub txn_id: U64,
    /// Append time, µs since the Unix epoch.
    pub timestamp_us: U64,
    /// Every log byte below this LSN was durable when the record was appended.
    pub durable_lsn: U64,
    /// Record kind (non-zero; see [`crate::format::record`]).
    pub kind: u8,
    /// Flags: 0, or [`RECORD_FLAG_CLOSING`] on a closing checkpoint-end record; readers
    /// ignore them (an opening writer may use the closing flag to bound its look-ahead).
    pub flags: u8,
    /// Reserved, zero.
    pub reserved0: U16,
    /// The open of the log that wrote the record.
    pub epoch: U32,
}

/// Size of a [`RecordHeader`] in bytes.
pub const RECORD_HEADER_BYTES: usize = 56;
/// The CRC covers the record from this offset on.
pub const RECORD_CRC_START: usize = 4;
const _: () = assert!(size_of::<RecordHeader>() == RECORD_HEADER_BYTES);
const _: () = assert!(std::mem::offset_of!(RecordHeader, kind) == 48);
const _: () = assert!((RECORD_HEADER_BYTES as u64).is_multiple_of(RECORD_ALIGN_BYTES));

/// Why a header does not belong at its place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderFault {
    /// Bad magic, checksum, flags or reserved bytes: torn or damaged.
    Damaged(String),
    /// A well-formed header left over from earlier use of the space (a recycled segment, an
    /// older timeline or epoch): the log does not continue here.
    Stale(String),
    /// A header this reader must not interpret or overwrite: a newer format version, another
    /// store, other page or segment sizes.
    Foreign(String),
}

impl std::fmt::Display for HeaderFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderFault::Damaged(r) | HeaderFault::Stale(r) | HeaderFault::Foreign(r) => f.write_str(r),
        }
    }
}

impl SegmentHeader {
    /// A header for segment `segment_no` of a log with the given geometry.
    pub fn new(geometry: &Geometry, identity: &LogIdentity, segment_no: u64, created_us: u64) -> SegmentHeader {
        let mut header = SegmentHeader {
            magic: SEGMENT_MAGIC,
            version_major: U16::new(FORMAT_VERSION_MAJOR),
            version_minor: U16::new(FORMAT_VERSION_MINOR),
            page_size_bytes: U32::new(geometry.page_size_bytes),
            segment_size_bytes: U64::new(geometry.segment_size_bytes),
            segment_no: U64::new(segment_no),
            base_lsn: U64::new(geometry.segment_base(segment_no)),
            timeline: U32::new(identity.timeline),
            reserved0: U32::ZERO,
            store_id: U64::new(identity.store_id),
            created_us: U64::new(created_us),
            reserved1: [0; 60],
            crc: U32::ZERO,
        };
        header.crc = U32::new(crc32c::crc32c(&header.as_bytes()[..SEGMENT_HEADER_CRC_OFFSET]));
        header
    }

    /// Checks this is the valid header of `segment_no` in this log.
    pub fn check(&self, geometry: &Geometry, identity: &LogIdentity, segment_no: u64) -> Result<(), HeaderFault> {
        if self.magic != SEGMENT_MAGIC {
            return Err(HeaderFault::Damaged("bad segment magic".into()));
        }
        if crc32c::crc32c(&self.as_bytes()[..SEGMENT_HEADER_CRC_OFFSET]) != self.crc.get() {
            return Err(HeaderFault::Damaged("segment header checksum mismatch".into()));
        }
        if self.version_major.get() != FORMAT_VERSION_MAJOR {
            return Err(HeaderFault::Foreign(format!(
                "segment format version {} unsupported",
                self.version_major.get()
            )));
        }
        if self.store_id.get() != identity.store_id {
            return Err(HeaderFault::Foreign(format!(
                "segment belongs to store {:#x}",
                self.store_id.get()
            )));
        }
        if self.page_size_bytes.get() != geometry.page_size_bytes
            || self.segment_size_bytes.get() != geometry.segment_size_bytes
        {
            return Err(HeaderFault::Foreign("segment geometry differs from the log's".into()));
        }
        if self.segment_no.get() != segment_no || self.base_lsn.get() != geometry.segment_base(segment_no) {
            return Err(HeaderFault::Stale(format!(
                "segment header names segment {}",
                self.segment_no.get()
            )));
        }
        if self.timeline.get() != identity.timeline {
            return Err(HeaderFault::Stale(format!(
                "segment of timeline {}",
                self.timeline.get()
            )));
        }
        Ok(())
    }
}

impl PageHeader {
    /// The header of the data page at address `page_lsn`.
    pub fn new(page_lsn: u64, rem_len: u32, timeline: u32, epoch: u32) -> PageHeader {
        let flags = if rem_len > 0 { PAGE_FLAG_CONTINUATION } else { 0 };
        let mut header = PageHeader {
            magic: U32::new(PAGE_MAGIC),
            version_major: U16::new(FORMAT_VERSION_MAJOR),
            flags: U16::new(flags),
            page_lsn: U64::new(page_lsn),
            rem_len: U32::new(rem_len),
            timeline: U32::new(timeline),
            epoch: U32::new(epoch),
            crc: U32::ZERO,
        };
        header.crc = U32::new(crc32c::crc32c(&header.as_bytes()[..PAGE_HEADER_CRC_OFFSET]));
        header
    }

    /// Checks this is the valid header of the page at `page_lsn`, continuing a log whose last
    /// epoch is `epoch_floor`.
    pub fn check(&self, page_lsn: u64, timeline: u32, epoch_floor: u32) -> Result<(), HeaderFault> {
        let damaged = |reason: &str| Err(HeaderFault::Damaged(reason.into()));
        if self.magic.get() != PAGE_MAGIC {
            return damaged("bad page magic");
        }
        if crc32c::crc32c(&self.as_bytes()[..PAGE_HEADER_CRC_OFFSET]) != self.crc.get() {
            return damaged("page header checksum mismatch");
        }
        // The version before the flags: another major version may define other flags, and its
        // page must be refused as foreign, never taken for damage (a torn tail).
        if self.version_major.get() != FORMAT_VERSION_MAJOR {
            return Err(HeaderFault::Foreign(format!(
                "page format version {} unsupported",
                self.version_major.get()
            )));
        }
        let continuation = self.flags.get() & PAGE_FLAG_CONTINUATION != 0;
        if self.flags.get() & !PAGE_FLAGS_KNOWN != 0 || continuation != (self.rem_len.get() > 0) {
            return damaged("bad page flags");
        }
        if self.page_lsn.get() != page_lsn {
            return Err(HeaderFault::Stale(format!(
                "page written for address {} (recycled)",
                self.page_lsn.get()
            )));
        }
        if self.timeline.get() != timeline {
            return Err(HeaderFault::Stale(format!("page of timeline {}", self.timeline.get())));
        }
        if self.epoch.get() < epoch_floor {
            return Err(HeaderFault::Stale(format!(
                "page of epoch {} after epoch {epoch_floor}",
                self.epoch.get()
            )));
        }
        Ok(())
    }
}

impl RecordHeader {
    /// Why this header cannot start a record at `lsn` after a record of epoch `epoch_floor`,
    /// or `None` (the CRC is checked later, once the payload has been gathered).
    pub fn check(&self, lsn: u64, epoch_floor: u32) -> Option<&'static str> {
        let total_len = self.total_len.get();
        if (total_len as usize) < RECORD_HEADER_BYTES || total_len > RECORD_MAX_BYTES {
            return Some("record length out of range");
        }
        if self.lsn.get() != lsn {
            return Some("record LSN differs from its address (stale record)");
        }
        if self.kind == 0 {
            return Some("record kind is zero");
        }
        if self.reserved0.get() != 0 {
            return Some("reserved record header bytes are not zero");
        }
        if self.epoch.get() < epoch_floor {
            return Some("record of an older epoch than the log before it (left from before a crash)");
        }
        if self.prev_lsn.get() >= lsn || self.durable_lsn.get() > lsn {
            return Some("record back-pointer points forward");
        }
        None
    }
}

/// The sizes that fix every address in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Log page size in bytes (a power of two, [`PAGE_SIZE_MIN_BYTES`]..=[`PAGE_SIZE_MAX_BYTES`]).
    pub page_size_bytes: u32,
    /// Segment size in bytes (a multiple of the page size).
    pub segment_size_bytes: u64,
}

/// What ties a segment to one store and one history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogIdentity {
    /// Id of the store the log belongs to.
    pub store_id: u64,
    /// Timeline of the log: 1 for a new store, the source's plus 1 for a restored copy.
    pub timeline: u32,
}

impl Geometry {
    /// Checks the sizes a user asked for; the error says which rule failed.
    pub fn new(page_size_bytes: u32, segment_size_bytes: u64) -> Result<Geometry, String> {
        if !page_size_bytes.is_power_of_two() || !(PAGE_SIZE_MIN_BYTES..=PAGE_SIZE_MAX_BYTES).contains(&page_size_bytes)
        {
            return Err(format!(
                "page size {page_size_bytes} must be a power of two in {PAGE_SIZE_MIN_BYTES}..={PAGE_SIZE_MAX_BYTES}"
            ));
        }
        let page = u64::from(page_size_bytes);
        if !segment_size_bytes.is_multiple_of(page)
            || segment_size_bytes < page * (1 + SEGMENT_DATA_PAGES_MIN)
            || segment_size_bytes > SEGMENT_SIZE_MAX_BYTES
        {
            return Err(format!(
                "segment size {segment_size_bytes} must be a multiple of the page size {page_size_bytes}, \
                 hold at least {} pages and be at most {SEGMENT_SIZE_MAX_BYTES}",
                1 + SEGMENT_DATA_PAGES_MIN
            ));
        }
        Ok(Geometry {
            page_size_bytes,
            segment_size_bytes,
        })
    }

    /// The page size in bytes, as `u64`.
    pub fn page_bytes(&self) -> u64 {
        u64::from(self.page_size_bytes)
    }

    /// Number of the segment holding `lsn`.
    pub fn segment_of(&self, lsn: u64) -> u64 {
        lsn / self.segment_size_bytes
    }

    /// LSN of the first byte of segment `segment_no`.
    pub fn segment_base(&self, segment_no: u64) -> u64 {
        segment_no * self.segment_size_bytes
    }

    /// Offset of `lsn` in its segment file, in bytes.
    pub fn offset_in_segment(&self, lsn: u64) -> u64 {
        lsn % self.segment_size_bytes
    }

    /// LSN of the first byte of the page holding `lsn`.
    pub fn page_start(&self, lsn: u64) -> u64 {
        lsn - lsn % self.page_bytes()
    }

    /// LSN just past the page holding `lsn`.
    pub fn page_end(&self, lsn: u64) -> u64 {
        self.page_start(lsn) + self.page_bytes()
    }

    /// True if `lsn` is the first byte of the segment header page.
    pub fn is_segment_start(&self, lsn: u64) -> bool {
        self.offset_in_segment(lsn) == 0
    }

    /// The address of the first payload byte of the first data page of `segment_no`.
    pub fn first_payload(&self, segment_no: u64) -> u64 {
        self.segment_base(segment_no) + self.page_bytes() + PAGE_HEADER_BYTES as u64
    }

    /// True if `lsn` lies in the payload area of a data page (not in any header).
    pub fn in_payload(&self, lsn: u64) -> bool {
        let in_page = lsn % self.page_bytes();
        self.offset_in_segment(lsn) >= self.page_bytes() && in_page >= PAGE_HEADER_BYTES as u64
    }

    /// The address of the page following the one holding `lsn`, skipping segment header pages.
    pub fn next_data_page(&self, lsn: u64) -> u64 {
        let next = self.page_end(lsn);
        if self.is_segment_start(next) {
            next + self.page_bytes()
        } else {
            next
        }
    }
}

/// Rounds `lsn` up to the record alignment.
pub fn align_up(lsn: u64) -> u64 {
    lsn.div_ceil(RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES
}

/// The record CRC: CRC32C over header bytes 4..56 followed by the payload.
pub fn record_crc(header: &RecordHeader, payload_parts: &[&[u8]]) -> u32 {
    let mut crc = crc32c::crc32c(&header.as_bytes()[RECORD_CRC_START..]);
    for part in payload_parts {
        crc = crc32c::crc32c_append(crc, part);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry::new(4096, 4096 * 8).unwrap()
    }

    #[test]
    fn lsn_arithmetic_splits_segment_and_offset() {
        let g = geometry();
        assert_eq!(g.segment_of(4096 * 8 + 5), 1);
        assert_eq!(g.offset_in_segment(4096 * 8 + 5), 5);
        assert_eq!(g.first_payload(1), 4096 * 9 + 32);
        assert_eq!(
            g.next_data_page(4096 * 7 + 100),
            4096 * 9,
            "skips the header page of segment 1"
        );
        assert!(
            !g.in_payload(4096 * 8 + 100),
            "the segment header page holds no payload"
        );
        assert!(!g.in_payload(4096 * 2 + 31), "a page header holds no payload");
        assert!(g.in_payload(4096 * 2 + 32));
    }

    #[test]
    fn geometry_rejects_bad_sizes() {
        assert!(Geometry::new(3000, 3000 * 8).is_err(), "not a power of two");
        assert!(Geometry::new(4096, 4096 * 4).is_err(), "too few data pages");
        assert!(Geometry::new(4096, 4096 * 8 + 1).is_err(), "not a page multiple");
        assert!(Geometry::new(4096, 1 << 20).is_ok(), "1 MiB segments are accepted");
    }

    #[test]
    fn page_header_round_trips_and_detects_staleness() {
        let header = PageHeader::new(8192, 17, 3, 5);
        let bytes = header.as_bytes().to_vec();
        let read = PageHeader::read_from_bytes(&bytes).unwrap();
        assert_eq!(read.check(8192, 3, 5), Ok(()));
        assert!(
            matches!(read.check(8192 + 4096, 3, 5), Err(HeaderFault::Stale(_))),
            "a page names its address"
        );
        assert!(
            matches!(read.check(8192, 4, 5), Err(HeaderFault::Stale(_))),
            "a page names its timeline"
        );
        assert!(
            matches!(read.check(8192, 3, 6), Err(HeaderFault::Stale(_))),
            "epochs never go back"
        );
        let mut flipped = bytes.clone();
        flipped[17] ^= 1;
        let read = PageHeader::read_from_bytes(&flipped).unwrap();
        assert!(
            matches!(read.check(8192, 3, 0), Err(HeaderFault::Damaged(_))),
            "a flipped bit is damage"
        );
    }

    #[test]
    fn page_header_of_a_newer_major_with_unknown_flags_is_foreign_not_damaged() {
        let mut header = PageHeader::new(8192, 0, 3, 5);
        header.version_major = U16::new(FORMAT_VERSION_MAJOR + 1);
        header.flags = U16::new(0x8000);
        header.crc = U32::new(crc32c::crc32c(&header.as_bytes()[..PAGE_HEADER_CRC_OFFSET]));
        assert!(
            matches!(header.check(8192, 3, 5), Err(HeaderFault::Foreign(_))),
            "FORMAT.md §8: the version is checked before the flags"
        );
    }

    #[test]
    fn segment_header_round_trips() {
        let g = geometry();
        let id = LogIdentity {
            store_id: 77,
            timeline: 1,
        };
        let header = SegmentHeader::new(&g, &id, 5, 123);
        let read = SegmentHeader::read_from_bytes(header.as_bytes()).unwrap();
        assert_eq!(read.check(&g, &id, 5), Ok(()));
        assert!(
            matches!(read.check(&g, &id, 6), Err(HeaderFault::Stale(_))),
            "a header names exactly one segment"
        );
        let other = LogIdentity {
            store_id: 78,
            timeline: 1,
        };
        assert!(
            matches!(read.check(&g, &other, 5), Err(HeaderFault::Foreign(_))),
            "another store's segment is refused"
        );
    }
}
