//! Archive files (`archive/`, FORMAT.md section 19): the file header, block and lane headers,
//! their constants, file names, and the check of a header.

use std::path::Path;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::Result;
use crate::{Error, Lsn};

/// Name of the archive directory in the store directory.
pub const ARCHIVE_DIR: &str = "archive";
/// The magic bytes that open every archive file.
pub const ARCHIVE_MAGIC: [u8; 8] = *b"VLMARCH\n";
/// Largest original length of a block: 1 MiB.
pub const BLOCK_RAW_MAX_BYTES: usize = 1 << 20;
pub(crate) const SAMPLE_BYTES: usize = 16 * 1024;

/// Archive file kind: a WAL segment (`wal-{segment:016x}.lz4`).
pub const KIND_WAL_SEGMENT: u8 = 1;
/// Archive file kind: a base image of the arena at a checkpoint (`base-{begin_lsn:016x}.lz4`).
pub const KIND_BASE_IMAGE: u8 = 2;

/// Block filter: the block LZ4-compressed.
pub const FILTER_LZ4: u8 = 0;
/// Block filter: the bytes shuffled in 4-byte words (every word's byte 0, then byte 1, …), then
/// LZ4-compressed as one block (written by archive major 1 only; still read).
pub const FILTER_SHUFFLE4_LZ4: u8 = 1;
/// Block filter: the block stored as is.
pub const FILTER_STORED: u8 = 2;
/// Shuffle-4, then each of the four lanes LZ4-compressed or stored on its own (archive major 2).
pub const FILTER_SHUFFLE4_LANES: u8 = 3;

/// The archive file's own major version: 2 added [`FILTER_SHUFFLE4_LANES`]. Files of major 1
/// (which never use it) are still read.
pub const ARCHIVE_VERSION_MAJOR: u16 = 2;
/// The archive format's minor version (its own numbering, like its major).
pub const ARCHIVE_VERSION_MINOR: u16 = 0;
/// The oldest archive major version this build reads.
pub const ARCHIVE_VERSION_MAJOR_MIN: u16 = 1;

/// The header before each lane of a [`FILTER_SHUFFLE4_LANES`] block.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | lane filter: 0 LZ4, 2 stored |
/// | 1 | 3 | reserved, zero |
/// | 4 | 4 | stored length (bytes that follow) |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct LaneHeader {
    /// Lane filter: [`FILTER_LZ4`] or [`FILTER_STORED`].
    pub filter: u8,
    /// Reserved, zero.
    pub reserved: [u8; 3],
    /// Length in bytes of the lane bytes that follow.
    pub stored_len: U32,
}

/// Size of a [`LaneHeader`] in bytes.
pub const LANE_HEADER_BYTES: usize = 8;
const _: () = assert!(size_of::<LaneHeader>() == LANE_HEADER_BYTES);
/// A lane is tried with LZ4 only if three samples of this size, taken at its start, middle and
/// end, compress to at most [`LANE_WORTH_PERCENT`] of their size: the low mantissa bytes of
/// float32 values are close to random and LZ4 would spend most of the time on them for nothing.
pub(crate) const LANE_SAMPLE_BYTES: usize = 4096;
pub(crate) const LANE_WORTH_PERCENT: usize = 94;

/// The header of every archive file.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `VLMARCH\n` |
/// | 8 | 2 | format version major |
/// | 10 | 2 | format version minor |
/// | 12 | 1 | kind: 1 WAL segment, 2 base image |
/// | 13 | 3 | reserved, zero |
/// | 16 | 8 | store id |
/// | 24 | 4 | timeline |
/// | 28 | 4 | page size |
/// | 32 | 8 | segment size (WAL segments and arena files) |
/// | 40 | 8 | WAL: segment number; base image: 0 |
/// | 48 | 8 | first LSN: WAL: first record starting in the segment (0: none); base: checkpoint begin |
/// | 56 | 8 | end LSN: WAL: end of the last record starting in it; base: checkpoint end record |
/// | 64 | 8 | first timestamp (µs): WAL: first record; base: checkpoint time |
/// | 72 | 8 | last timestamp (µs): WAL: last record; base: checkpoint time |
/// | 80 | 8 | uncompressed length of the contents |
/// | 88 | 8 | compressed length: bytes after the header (block headers and blocks) |
/// | 96 | 4 | CRC32C of the uncompressed contents |
/// | 100 | 4 | CRC32C of the bytes after the header |
/// | 104 | 8 | base: truncation LSN (the log needed starts in its segment); WAL: 0 |
/// | 112 | 8 | base: next transaction id; WAL: 0 |
/// | 120 | 4 | base: dimension; WAL: 0 |
/// | 124 | 4 | base: catalog files; WAL: 0 |
/// | 128 | 4 | base: vector files; WAL: 0 |
/// | 132 | 56 | reserved, zero |
/// | 188 | 4 | CRC32C of bytes 0..188 |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ArchiveHeader {
    /// [`ARCHIVE_MAGIC`].
    pub magic: [u8; 8],
    /// Archive format version major.
    pub version_major: U16,
    /// Archive format version minor.
    pub version_minor: U16,
    /// [`KIND_WAL_SEGMENT`] or [`KIND_BASE_IMAGE`].
    pub kind: u8,
    /// Reserved, zero.
    pub reserved0: [u8; 3],
    /// Id of the store the file comes from.
    pub store_id: U64,
    /// Timeline of the store when the file was written.
    pub timeline: U32,
    /// Page size of the store in bytes.
    pub page_size_bytes: U32,
    /// Segment size of the store in bytes (WAL segments and arena files).
    pub segment_size_bytes: U64,
    /// WAL: the segment number; base image: 0.
    pub segment_no: U64,
    /// WAL: LSN of the first record starting in the segment (0: none); base image: the checkpoint's
    /// begin record.
    pub first_lsn: U64,
    /// WAL: end LSN of the last record starting in the segment; base image: the checkpoint's end record.
    pub end_lsn: U64,
    /// WAL: time of the first record; base image: checkpoint time (µs since the Unix epoch).
    pub first_us: U64,
    /// WAL: time of the last record; base image: checkpoint time (µs since the Unix epoch).
    pub last_us: U64,
    /// Uncompressed length of the contents in bytes.
    pub raw_len: U64,
    /// Length in bytes of everything after the header (block headers and blocks).
    pub compressed_len: U64,
    /// CRC32C of the uncompressed contents.
    pub raw_crc: U32,
    /// CRC32C of the bytes after the header.
    pub compressed_crc: U32,
    /// Base image: the truncation LSN (the log needed starts in its segment); WAL: 0.
    pub truncate_lsn: U64,
    /// Base image: the next transaction id; WAL: 0.
    pub next_txn_id: U64,
    /// Base image: components of every vector; WAL: 0.
    pub dimension: U32,
    /// Base image: arena files of the catalog space; WAL: 0.
    pub catalog_files: U32,
    /// Base image: arena files of the vector space; WAL: 0.
    pub vector_files: U32,
    /// Reserved, zero.
    pub reserved1: [u8; 56],
    /// CRC32C of bytes 0..188.
    pub crc: U32,
}

/// Size of an [`ArchiveHeader`] in bytes.
pub const ARCHIVE_HEADER_BYTES: usize = 192;
const _: () = assert!(size_of::<ArchiveHeader>() == ARCHIVE_HEADER_BYTES);
const _: () = assert!(std::mem::offset_of!(ArchiveHeader, crc) == ARCHIVE_HEADER_BYTES - 4);
const _: () = assert!(std::mem::offset_of!(ArchiveHeader, truncate_lsn) == 104);

/// The header of every block.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | filter: 0 LZ4, 1 shuffle-4 then LZ4, 2 stored |
/// | 1 | 3 | reserved, zero |
/// | 4 | 4 | original length (1..=1 MiB) |
/// | 8 | 4 | stored length (bytes that follow) |
/// | 12 | 4 | reserved, zero |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BlockHeader {
    /// Block filter: [`FILTER_LZ4`], [`FILTER_SHUFFLE4_LZ4`], [`FILTER_STORED`] or
    /// [`FILTER_SHUFFLE4_LANES`].
    pub filter: u8,
    /// Reserved, zero.
    pub reserved0: [u8; 3],
    /// Original length of the block in bytes (1..=1 MiB).
    pub raw_len: U32,
    /// Length in bytes of the stored bytes that follow.
    pub stored_len: U32,
    /// Reserved, zero.
    pub reserved1: U32,
}

/// Size of a [`BlockHeader`] in bytes.
pub const BLOCK_HEADER_BYTES: usize = 16;
const _: () = assert!(size_of::<BlockHeader>() == BLOCK_HEADER_BYTES);

/// The file name of the archived segment `segment_no`.
pub fn wal_file_name(segment_no: u64) -> String {
    format!("wal-{segment_no:016x}.lz4")
}

/// The file name of the base image of the checkpoint that began at `begin_lsn`.
pub fn base_file_name(begin_lsn: Lsn) -> String {
    format!("base-{:016x}.lz4", begin_lsn.0)
}

/// Decodes and checks the header of an archive file.
pub fn decode_header(path: &Path, bytes: &[u8]) -> Result<ArchiveHeader> {
    let damaged = |reason: &str| Error::corrupted_file(path, reason.to_string());
    let Ok((header, _)) = ArchiveHeader::read_from_prefix(bytes) else {
        return Err(damaged("archive file shorter than its header (truncated)"));
    };
    if header.magic != ARCHIVE_MAGIC {
        return Err(damaged("bad archive magic"));
    }
    if crc32c::crc32c(&header.as_bytes()[..ARCHIVE_HEADER_BYTES - 4]) != header.crc.get() {
        return Err(damaged("archive header checksum mismatch"));
    }
    if !(ARCHIVE_VERSION_MAJOR_MIN..=ARCHIVE_VERSION_MAJOR).contains(&header.version_major.get()) {
        return Err(Error::Incompatible(format!(
            "{}: archive format version {}",
            path.display(),
            header.version_major.get()
        )));
    }
    if !matches!(header.kind, KIND_WAL_SEGMENT | KIND_BASE_IMAGE) {
        return Err(damaged("unknown archive kind"));
    }
    Ok(header)
}
