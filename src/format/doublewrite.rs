//! The doublewrite file's header (`DOUBLEWRITE`, FORMAT.md section 16.2): page 0 of the file;
//! images of arena pages follow at `(1 + i) * page_size`.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Name of the doublewrite file in the store directory.
pub const DOUBLEWRITE_FILE_NAME: &str = "DOUBLEWRITE";
/// The magic bytes that open the doublewrite file.
pub const DOUBLEWRITE_MAGIC: [u8; 8] = *b"VLMDWBF\n";
/// Pages per batch.
pub const DOUBLEWRITE_BATCH_PAGES: usize = 64;
/// The file's length in pages from format minor 1 on: made whole at creation (zeros, synced),
/// so its length never changes afterwards and a shorter file is damage, never a torn growth.
pub const DOUBLEWRITE_FILE_PAGES: u64 = 1 + DOUBLEWRITE_BATCH_PAGES as u64;

/// The header in page 0.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `VLMDWBF\n` |
/// | 8 | 2 | format version major |
/// | 10 | 2 | reserved, zero |
/// | 12 | 4 | page size in bytes |
/// | 16 | 4 | number of images in the batch |
/// | 20 | 4 | reserved, zero |
/// | 24 | 8 | batch sequence number |
/// | 32 | 8 | store id (format minor ≥ 1; 0 before) |
/// | 40 | 20 | reserved, zero |
/// | 60 | 4 | CRC32C of bytes 0..60 |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DoublewriteHeader {
    /// [`DOUBLEWRITE_MAGIC`].
    pub magic: [u8; 8],
    /// Format version major.
    pub version_major: U16,
    /// Reserved, zero.
    pub reserved0: U16,
    /// Page size of the images, in bytes.
    pub page_size_bytes: U32,
    /// Number of page images in the batch.
    pub count: U32,
    /// Reserved, zero.
    pub reserved1: U32,
    /// Sequence number of the batch.
    pub batch_seq: U64,
    /// Id of the store that wrote the file (0 for format minor 0).
    pub store_id: U64,
    /// Reserved, zero.
    pub reserved2: [u8; 20],
    /// CRC32C of bytes 0..60.
    pub crc: U32,
}

/// Size of a [`DoublewriteHeader`] in bytes.
pub const DOUBLEWRITE_HEADER_BYTES: usize = 64;
const _: () = assert!(size_of::<DoublewriteHeader>() == DOUBLEWRITE_HEADER_BYTES);
