//! The archive (`archive/`): retired log segments and base images of the arena, compressed
//! with LZ4 (format-spec, "Archive files and base images").
//!
//! Every archive file is a 192-byte [`ArchiveHeader`] followed by blocks. A block is a 16-byte
//! block header and the block's compressed bytes; blocks hold at most 1 MiB of the original
//! bytes each. A block's filter is chosen on a sample: a 4-byte byte-shuffle (all first bytes
//! of each 4-byte word, then all second bytes, …, as Blosc does) groups float exponents and
//! mantissas so LZ4 finds repeats; text and metadata compress better unshuffled; incompressible
//! blocks are stored as they are.
//!
//! A file is written to `<name>.tmp`, synced, renamed and the directory synced: a crash leaves
//! either no file or a whole one (a leftover `.tmp` is removed at the next open).
//!
//! Segments are encoded and decoded in memory (a segment is mapped anyway). Base images are
//! as large as the arena: [`write_streamed`] and [`decode_streamed`] hold a round of runs or a
//! block at a time, whatever the arena's size.

use std::path::{Path, PathBuf};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use parking_lot::Mutex;

use crate::error::{IoContext, Result};
use crate::storage::Storage;
use crate::{Error, Lsn};

pub const ARCHIVE_DIR: &str = "archive";
pub const ARCHIVE_MAGIC: [u8; 8] = *b"VLMARCH\n";
pub const BLOCK_RAW_MAX_BYTES: usize = 1 << 20;
const SAMPLE_BYTES: usize = 16 * 1024;

/// Archive file kinds.
pub const KIND_WAL_SEGMENT: u8 = 1;
pub const KIND_BASE_IMAGE: u8 = 2;

/// Block filters.
pub const FILTER_LZ4: u8 = 0;
pub const FILTER_SHUFFLE4_LZ4: u8 = 1;
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
    pub filter: u8,
    pub reserved: [u8; 3],
    pub stored_len: U32,
}

pub const LANE_HEADER_BYTES: usize = 8;
const _: () = assert!(size_of::<LaneHeader>() == LANE_HEADER_BYTES);
/// A lane is tried with LZ4 only if three samples of this size, taken at its start, middle and
/// end, compress to at most [`LANE_WORTH_PERCENT`] of their size: the low mantissa bytes of
/// float32 values are close to random and LZ4 would spend most of the time on them for nothing.
const LANE_SAMPLE_BYTES: usize = 4096;
const LANE_WORTH_PERCENT: usize = 94;

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
    pub magic: [u8; 8],
    pub version_major: U16,
    pub version_minor: U16,
    pub kind: u8,
    pub reserved0: [u8; 3],
    pub store_id: U64,
    pub timeline: U32,
    pub page_size_bytes: U32,
    pub segment_size_bytes: U64,
    pub segment_no: U64,
    pub first_lsn: U64,
    pub end_lsn: U64,
    pub first_us: U64,
    pub last_us: U64,
    pub raw_len: U64,
    pub compressed_len: U64,
    pub raw_crc: U32,
    pub compressed_crc: U32,
    pub truncate_lsn: U64,
    pub next_txn_id: U64,
    pub dimension: U32,
    pub catalog_files: U32,
    pub vector_files: U32,
    pub reserved1: [u8; 56],
    pub crc: U32,
}

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
    pub filter: u8,
    pub reserved0: [u8; 3],
    pub raw_len: U32,
    pub stored_len: U32,
    pub reserved1: U32,
}

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

/// Shuffles `bytes` in 4-byte words: every word's byte 0, then byte 1, … (tail kept as is).
pub fn shuffle4(bytes: &[u8], out: &mut Vec<u8>) {
    let words = bytes.len() / 4;
    out.clear();
    out.resize(bytes.len(), 0);
    let (lanes, tail) = out.split_at_mut(words * 4);
    let (s0, rest) = lanes.split_at_mut(words);
    let (s1, rest) = rest.split_at_mut(words);
    let (s2, s3) = rest.split_at_mut(words);
    // Four words at a time: a 4x4 byte transpose in registers, one 4-byte store per lane.
    let quads = words / 4;
    let lanes = s0.chunks_exact_mut(4).zip(s1.chunks_exact_mut(4));
    let lanes = lanes.zip(s2.chunks_exact_mut(4)).zip(s3.chunks_exact_mut(4));
    for (quad, (((l0, l1), l2), l3)) in bytes.chunks_exact(16).zip(lanes) {
        let w = |k: usize| u32::from_le_bytes([quad[4 * k], quad[4 * k + 1], quad[4 * k + 2], quad[4 * k + 3]]);
        let (w0, w1, w2, w3) = (w(0), w(1), w(2), w(3));
        let lane = |shift: u32| {
            let byte = |word: u32| (word >> shift) & 0xff;
            (byte(w0) | byte(w1) << 8 | byte(w2) << 16 | byte(w3) << 24).to_le_bytes()
        };
        l0.copy_from_slice(&lane(0));
        l1.copy_from_slice(&lane(8));
        l2.copy_from_slice(&lane(16));
        l3.copy_from_slice(&lane(24));
    }
    for i in 4 * quads..words {
        let word = &bytes[4 * i..4 * i + 4];
        (s0[i], s1[i], s2[i], s3[i]) = (word[0], word[1], word[2], word[3]);
    }
    tail.copy_from_slice(&bytes[words * 4..]);
}

/// Undoes [`shuffle4`].
pub fn unshuffle4(bytes: &[u8], out: &mut Vec<u8>) {
    out.clear();
    unshuffle4_onto(bytes, out);
}

/// Appends the unshuffled `bytes` to `out`.
fn unshuffle4_onto(bytes: &[u8], out: &mut Vec<u8>) {
    let words = bytes.len() / 4;
    let at = out.len();
    out.resize(at + bytes.len(), 0);
    let (s0, rest) = bytes.split_at(words);
    let (s1, rest) = rest.split_at(words);
    let (s2, rest) = rest.split_at(words);
    let (s3, tail) = rest.split_at(words);
    let (unshuffled, out_tail) = out[at..].split_at_mut(words * 4);
    // Four words at a time, the transpose of `shuffle4`'s.
    let quads = words / 4;
    let lanes = s0.chunks_exact(4).zip(s1.chunks_exact(4));
    let lanes = lanes.zip(s2.chunks_exact(4)).zip(s3.chunks_exact(4));
    for (quad, (((l0, l1), l2), l3)) in unshuffled.chunks_exact_mut(16).zip(lanes) {
        let lane = |l: &[u8]| u32::from_le_bytes([l[0], l[1], l[2], l[3]]);
        let (v0, v1, v2, v3) = (lane(l0), lane(l1), lane(l2), lane(l3));
        for (k, word) in quad.chunks_exact_mut(4).enumerate() {
            let byte = |v: u32| (v >> (8 * k)) & 0xff;
            word.copy_from_slice(&(byte(v0) | byte(v1) << 8 | byte(v2) << 16 | byte(v3) << 24).to_le_bytes());
        }
    }
    for i in 4 * quads..words {
        unshuffled[4 * i..4 * i + 4].copy_from_slice(&[s0[i], s1[i], s2[i], s3[i]]);
    }
    out_tail.copy_from_slice(tail);
}

/// Compresses `raw` into blocks appended to `out`; returns the CRC32C of `raw`.
pub fn compress_blocks(raw: &[u8], out: &mut Vec<u8>) -> u32 {
    let mut shuffled = Vec::new();
    for chunk in raw.chunks(BLOCK_RAW_MAX_BYTES) {
        let header_at = out.len();
        out.extend_from_slice(&[0; BLOCK_HEADER_BYTES]);
        let sample = &chunk[..chunk.len().min(SAMPLE_BYTES)];
        shuffle4(sample, &mut shuffled);
        let plain_len = lz4_flex::block::compress(sample).len();
        let shuffled_len = lz4_flex::block::compress(&shuffled).len();
        let filter = if shuffled_len < plain_len {
            shuffle4(chunk, &mut shuffled);
            push_lanes(&shuffled, out);
            FILTER_SHUFFLE4_LANES
        } else {
            push_lz4(chunk, out);
            FILTER_LZ4
        };
        let filter = if out.len() - header_at - BLOCK_HEADER_BYTES >= chunk.len() {
            out.truncate(header_at + BLOCK_HEADER_BYTES);
            out.extend_from_slice(chunk);
            FILTER_STORED
        } else {
            filter
        };
        let header = BlockHeader {
            filter,
            reserved0: [0; 3],
            raw_len: U32::new(chunk.len() as u32),
            stored_len: U32::new((out.len() - header_at - BLOCK_HEADER_BYTES) as u32),
            reserved1: U32::ZERO,
        };
        out[header_at..header_at + BLOCK_HEADER_BYTES].copy_from_slice(header.as_bytes());
    }
    crc32c::crc32c(raw)
}

/// Appends the LZ4 block of `bytes` to `out`, compressing straight into it.
fn push_lz4(bytes: &[u8], out: &mut Vec<u8>) {
    let at = out.len();
    out.resize(at + lz4_flex::block::get_maximum_output_size(bytes.len()), 0);
    let written = lz4_flex::block::compress_into(bytes, &mut out[at..]).expect("the output holds the worst case");
    out.truncate(at + written);
}

/// Appends the four lanes of the shuffled block `shuffled` (each a lane header and its data),
/// then its 0..=3 tail bytes.
fn push_lanes(shuffled: &[u8], out: &mut Vec<u8>) {
    let words = shuffled.len() / 4;
    for lane_no in 0..4 {
        let lane = &shuffled[lane_no * words..(lane_no + 1) * words];
        let header_at = out.len();
        out.extend_from_slice(&[0; LANE_HEADER_BYTES]);
        let mut filter = FILTER_STORED;
        if lane_worth_compressing(lane) {
            push_lz4(lane, out);
            filter = FILTER_LZ4;
            if out.len() - header_at - LANE_HEADER_BYTES >= lane.len() {
                out.truncate(header_at + LANE_HEADER_BYTES);
                filter = FILTER_STORED;
            }
        }
        if filter == FILTER_STORED {
            out.extend_from_slice(lane);
        }
        let header = LaneHeader {
            filter,
            reserved: [0; 3],
            stored_len: U32::new((out.len() - header_at - LANE_HEADER_BYTES) as u32),
        };
        out[header_at..header_at + LANE_HEADER_BYTES].copy_from_slice(header.as_bytes());
    }
    out.extend_from_slice(&shuffled[4 * words..]);
}

/// Whether LZ4 is likely to shrink `lane`, judged on three samples.
fn lane_worth_compressing(lane: &[u8]) -> bool {
    if lane.len() <= 3 * LANE_SAMPLE_BYTES {
        return true;
    }
    let starts = [0, lane.len() / 2, lane.len() - LANE_SAMPLE_BYTES];
    let compressed: usize = starts
        .iter()
        .map(|&at| lz4_flex::block::compress(&lane[at..at + LANE_SAMPLE_BYTES]).len())
        .sum();
    compressed * 100 <= 3 * LANE_SAMPLE_BYTES * LANE_WORTH_PERCENT
}

/// A validated archive file: its header and original contents.
#[derive(Debug)]
pub struct ArchiveFile {
    pub header: ArchiveHeader,
    pub contents: Vec<u8>,
}

/// Decodes and checks a whole archive file read from `path`. Every length is checked before
/// anything is allocated or indexed; damage is `Corrupted` naming the file.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<ArchiveFile> {
    let damaged = |reason: String| Error::corrupted_file(path, reason);
    let header = decode_header(path, bytes)?;
    let body = &bytes[ARCHIVE_HEADER_BYTES..];
    if body.len() as u64 != header.compressed_len.get() {
        return Err(damaged(format!(
            "{} bytes after the header, expected {}",
            body.len(),
            header.compressed_len.get()
        )));
    }
    if crc32c::crc32c(body) != header.compressed_crc.get() {
        return Err(damaged("compressed bytes fail their checksum".into()));
    }
    let raw_len = header.raw_len.get();
    // Each block expands to at most 1 MiB and takes at least a block header: a length the
    // file cannot hold is refused before allocating.
    let blocks_max = (body.len() / BLOCK_HEADER_BYTES) as u64;
    if raw_len > blocks_max.saturating_mul(BLOCK_RAW_MAX_BYTES as u64) {
        return Err(damaged(format!(
            "uncompressed length {raw_len} is more than its blocks can hold"
        )));
    }
    // Grown as blocks decode, never reserved from the header's claim: a crafted length cannot
    // make a small file allocate more than its blocks really decompress to.
    let mut contents = Vec::new();
    let raw_crc = decode_blocks(
        &mut SliceBlocks { body },
        raw_len,
        header.version_major.get(),
        &mut contents,
        |_| Ok(()),
    )
    .map_err(damaged)?;
    if raw_crc != header.raw_crc.get() {
        return Err(damaged("uncompressed contents fail their checksum".into()));
    }
    Ok(ArchiveFile { header, contents })
}

/// Decodes the archive file at `path` block by block, handing each block's contents (at most
/// 1 MiB, in order) to `sink`: memory for one block, whatever the file's size. Returns the
/// header. The checks are those of [`decode`], but the compressed bytes' checksum can only be
/// checked at the end: `sink` may have been given contents of a file found damaged later, and
/// the caller must then discard what it made of them.
pub fn decode_streamed(
    storage: &dyn Storage,
    path: &Path,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<ArchiveHeader> {
    let damaged = |reason: String| Error::corrupted_file(path, reason);
    let file = open_to_read(storage, path)?;
    let file_len = file
        .len()
        .context(|| format!("reading the length of {}", path.display()))?;
    let mut header_bytes = [0u8; ARCHIVE_HEADER_BYTES];
    if file_len >= ARCHIVE_HEADER_BYTES as u64 {
        file.read_at(&mut header_bytes, 0)
            .context(|| format!("reading {}", path.display()))?;
    }
    let header = decode_header(
        path,
        &header_bytes[..file_len.min(ARCHIVE_HEADER_BYTES as u64) as usize],
    )?;
    let body_len = file_len - ARCHIVE_HEADER_BYTES as u64;
    if body_len != header.compressed_len.get() {
        return Err(damaged(format!(
            "{body_len} bytes after the header, expected {}",
            header.compressed_len.get()
        )));
    }
    let mut source = FileBlocks {
        file: file.as_ref(),
        path,
        at: ARCHIVE_HEADER_BYTES as u64,
        end: file_len,
        data: Vec::new(),
        crc: 0,
        io_error: None,
    };
    let mut sink_error = None;
    let decoded = decode_blocks(
        &mut source,
        header.raw_len.get(),
        header.version_major.get(),
        &mut Vec::new(),
        |block| {
            let outcome = sink(block);
            block.clear();
            outcome.map_err(|e| {
                let reason = e.to_string();
                sink_error = Some(e);
                reason
            })
        },
    );
    if let Some(error) = sink_error.or(source.io_error.take()) {
        return Err(error);
    }
    // Damaged stored bytes are reported as such, even where they made a block undecodable.
    let rest_crc = source.checksum_rest();
    if let Some(error) = source.io_error.take() {
        return Err(error);
    }
    if rest_crc != header.compressed_crc.get() {
        return Err(damaged("compressed bytes fail their checksum".into()));
    }
    let raw_crc = decoded.map_err(damaged)?;
    if raw_crc != header.raw_crc.get() {
        return Err(damaged("uncompressed contents fail their checksum".into()));
    }
    Ok(header)
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

/// Where the blocks of an archive body come from, one at a time.
trait BlockSource {
    /// The next block's header and stored bytes (checked to be within the body), or `None`
    /// at the end of the body.
    fn next_block(&mut self) -> std::result::Result<Option<(BlockHeader, &[u8])>, String>;
}

/// The blocks of a body in memory.
struct SliceBlocks<'a> {
    body: &'a [u8],
}

impl BlockSource for SliceBlocks<'_> {
    fn next_block(&mut self) -> std::result::Result<Option<(BlockHeader, &[u8])>, String> {
        if self.body.is_empty() {
            return Ok(None);
        }
        let Ok((block, rest)) = BlockHeader::read_from_prefix(self.body) else {
            return Err("block header cut short (truncated)".into());
        };
        let stored = block.stored_len.get() as usize;
        if stored > rest.len() {
            return Err(format!(
                "block of {stored} stored bytes, {} left (truncated)",
                rest.len()
            ));
        }
        let (data, after) = rest.split_at(stored);
        self.body = after;
        Ok(Some((block, data)))
    }
}

/// The blocks of a body read from a file into one reused buffer, checksummed as they are read.
struct FileBlocks<'a> {
    file: &'a dyn crate::storage::StorageFile,
    path: &'a Path,
    at: u64,
    end: u64,
    data: Vec<u8>,
    /// CRC32C of the body bytes read so far.
    crc: u32,
    /// A read that failed: an I/O error, not damage.
    io_error: Option<Error>,
}

impl FileBlocks<'_> {
    /// Reads the rest of the body (after a decoding error stopped early); returns the CRC32C
    /// of the whole body.
    fn checksum_rest(&mut self) -> u32 {
        while self.at < self.end && self.io_error.is_none() {
            let n = (self.end - self.at).min(BLOCK_RAW_MAX_BYTES as u64) as usize;
            let _ = self.read(n);
        }
        self.crc
    }

    /// Reads the next `len` bytes into `data[..len]` (the buffer only ever grows: no bytes are
    /// zeroed just to be overwritten).
    fn read(&mut self, len: usize) -> std::result::Result<(), String> {
        if self.data.len() < len {
            self.data.resize(len, 0);
        }
        let into = &mut self.data[..len];
        if let Err(error) = self.file.read_at(into, self.at) {
            let what = format!("reading {} at {}", self.path.display(), self.at);
            self.io_error = Some(Error::io(what.clone(), error));
            return Err(what);
        }
        self.crc = crc32c::crc32c_append(self.crc, into);
        self.at += len as u64;
        Ok(())
    }
}

impl BlockSource for FileBlocks<'_> {
    fn next_block(&mut self) -> std::result::Result<Option<(BlockHeader, &[u8])>, String> {
        if self.at == self.end {
            return Ok(None);
        }
        if self.end - self.at < BLOCK_HEADER_BYTES as u64 {
            return Err("block header cut short (truncated)".into());
        }
        self.read(BLOCK_HEADER_BYTES)?;
        let block = BlockHeader::read_from_bytes(&self.data[..BLOCK_HEADER_BYTES]).expect("a block header's length");
        let (raw, stored) = (block.raw_len.get() as usize, block.stored_len.get() as u64);
        // No block of a valid file stores more than LZ4's worst case for its length (literals
        // only: a length byte per 255), plus its lane headers: anything longer is refused
        // before the buffer is sized for it.
        if stored > self.end - self.at || stored > (raw + raw / 255 + 256) as u64 {
            return Err(format!("block lengths {raw}/{stored} out of range"));
        }
        self.read(stored as usize)?;
        Ok(Some((block, &self.data[..stored as usize])))
    }
}

/// Decodes every block of `source` onto `out`, then calls `flush` with `out` (which may
/// empty it). Checks each block's lengths and filter and the total against `raw_len`;
/// returns the CRC32C of the decoded contents.
fn decode_blocks(
    source: &mut impl BlockSource,
    raw_len: u64,
    major: u16,
    out: &mut Vec<u8>,
    mut flush: impl FnMut(&mut Vec<u8>) -> std::result::Result<(), String>,
) -> std::result::Result<u32, String> {
    let (mut decoded, mut crc) = (0u64, 0u32);
    let mut scratch = Vec::new();
    while let Some((block, data)) = source.next_block()? {
        let raw = block.raw_len.get() as usize;
        if raw == 0 || raw > BLOCK_RAW_MAX_BYTES || decoded + raw as u64 > raw_len {
            return Err(format!("block lengths {raw}/{} out of range", data.len()));
        }
        let at = out.len();
        match block.filter {
            FILTER_STORED if data.len() == raw => out.extend_from_slice(data),
            FILTER_LZ4 => decompress_onto(data, raw, out)?,
            FILTER_SHUFFLE4_LZ4 => {
                scratch.clear();
                decompress_onto(data, raw, &mut scratch)?;
                unshuffle4_onto(&scratch, out);
            }
            FILTER_SHUFFLE4_LANES if major >= 2 => {
                scratch.clear();
                decode_lanes(data, raw, &mut scratch)?;
                unshuffle4_onto(&scratch, out);
            }
            other => return Err(format!("unknown block filter {other}")),
        }
        decoded += raw as u64;
        if decoded % BLOCK_RAW_MAX_BYTES as u64 != 0 && decoded != raw_len {
            return Err("a block other than the last is short".into());
        }
        crc = crc32c::crc32c_append(crc, &out[at..]);
        flush(out)?;
    }
    if decoded != raw_len {
        return Err(format!("blocks hold {decoded} bytes, expected {raw_len} (truncated)"));
    }
    Ok(crc)
}

/// Decompresses the LZ4 block `data`, which must expand to exactly `raw` bytes, onto `out`.
fn decompress_onto(data: &[u8], raw: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    let at = out.len();
    out.resize(at + raw, 0);
    match lz4_flex::block::decompress_into(data, &mut out[at..]) {
        Ok(n) if n == raw => Ok(()),
        Ok(n) => Err(format!("LZ4 block expands to {n} bytes, expected {raw}")),
        Err(e) => Err(format!("LZ4 block: {e}")),
    }
}

/// Decodes the four lanes and the tail of a [`FILTER_SHUFFLE4_LANES`] block of `raw` bytes
/// onto `out` (still shuffled).
fn decode_lanes(mut data: &[u8], raw: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    let words = raw / 4;
    for lane in 0..4 {
        let Ok((header, rest)) = LaneHeader::read_from_prefix(data) else {
            return Err(format!("lane {lane} header cut short"));
        };
        let stored = header.stored_len.get() as usize;
        if stored > rest.len() {
            return Err(format!("lane {lane} holds {stored} bytes, the block {}", rest.len()));
        }
        match header.filter {
            FILTER_STORED if stored == words => out.extend_from_slice(&rest[..stored]),
            FILTER_LZ4 => decompress_onto(&rest[..stored], words, out)?,
            other => return Err(format!("lane {lane}: unknown filter {other} for {stored} bytes")),
        }
        data = &rest[stored..];
    }
    if data.len() != raw - 4 * words {
        return Err(format!(
            "block tail of {} bytes, expected {}",
            data.len(),
            raw - 4 * words
        ));
    }
    out.extend_from_slice(data);
    Ok(())
}

/// Seals `header` (lengths, CRCs, own CRC) for `contents` and returns the whole file.
pub fn encode(mut header: ArchiveHeader, contents: &[u8]) -> Vec<u8> {
    // Room for the worst case (every block stored) up front: growing a 64 MiB buffer by
    // doubling copies it and faults its pages in again.
    let mut file = Vec::with_capacity(ARCHIVE_HEADER_BYTES + body_bytes_max(contents.len()));
    file.resize(ARCHIVE_HEADER_BYTES, 0);
    let raw_crc = compress_blocks(contents, &mut file);
    let body = &file[ARCHIVE_HEADER_BYTES..];
    seal(
        &mut header,
        contents.len() as u64,
        raw_crc,
        body.len() as u64,
        crc32c::crc32c(body),
    );
    file[..ARCHIVE_HEADER_BYTES].copy_from_slice(header.as_bytes());
    file
}

/// The largest body `raw_len` bytes can encode to: every block stored, lane headers included.
fn body_bytes_max(raw_len: usize) -> usize {
    let blocks = raw_len.div_ceil(BLOCK_RAW_MAX_BYTES);
    raw_len + blocks * (BLOCK_HEADER_BYTES + 4 * LANE_HEADER_BYTES + 64)
}

/// Fills in the fields of `header` that describe the body, then the header's own CRC.
fn seal(header: &mut ArchiveHeader, raw_len: u64, raw_crc: u32, compressed_len: u64, compressed_crc: u32) {
    header.magic = ARCHIVE_MAGIC;
    header.version_major = U16::new(ARCHIVE_VERSION_MAJOR);
    header.version_minor = U16::new(ARCHIVE_VERSION_MINOR);
    header.raw_len = U64::new(raw_len);
    header.compressed_len = U64::new(compressed_len);
    header.raw_crc = U32::new(raw_crc);
    header.compressed_crc = U32::new(compressed_crc);
    header.crc = U32::new(crc32c::crc32c(&header.as_bytes()[..ARCHIVE_HEADER_BYTES - 4]));
}

/// Contents too large to hold in memory: the concatenation of whole files, each of a known
/// length (a base image's are the arena files).
pub struct FileContents {
    files: Vec<(PathBuf, std::sync::Arc<dyn crate::storage::StorageFile>, u64)>,
    len_bytes: u64,
}

impl FileContents {
    /// Opens `paths`; a file whose length is not `file_bytes` is damage, named.
    pub fn open(storage: &dyn Storage, paths: &[PathBuf], file_bytes: u64) -> Result<FileContents> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let file = open_to_read(storage, path)?;
            let len = file
                .len()
                .context(|| format!("reading the length of {}", path.display()))?;
            if len != file_bytes {
                return Err(Error::corrupted_file(
                    path,
                    format!("{len} bytes, expected {file_bytes}"),
                ));
            }
            files.push((path.clone(), file, len));
        }
        let len_bytes = file_bytes * paths.len() as u64;
        Ok(FileContents { files, len_bytes })
    }

    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Reads contents `[offset, offset + into.len())`, which may span files.
    fn read(&self, mut offset: u64, mut into: &mut [u8]) -> Result<()> {
        assert!(offset + into.len() as u64 <= self.len_bytes, "read past the contents");
        let mut file_start = 0;
        for (path, file, len) in &self.files {
            if into.is_empty() {
                break;
            }
            if offset < file_start + len {
                let n = (file_start + len - offset).min(into.len() as u64) as usize;
                let (now, later) = into.split_at_mut(n);
                file.read_at(now, offset - file_start)
                    .context(|| format!("reading {}", path.display()))?;
                (into, offset) = (later, offset + n as u64);
            }
            file_start += len;
        }
        Ok(())
    }
}

/// Raw bytes each thread compresses per round of [`write_streamed`].
const STREAM_RUN_BYTES: usize = 8 * BLOCK_RAW_MAX_BYTES;

/// Writes `contents` as the archive file `dir/name` (atomically, as [`write_atomically`]),
/// compressed by up to `threads` threads, with memory for one round of `threads` runs of
/// 8 MiB and their compressed forms instead of the whole contents: a base image of an arena
/// of any size. The file is byte for byte the one [`encode`] returns for the same contents
/// (blocks are independent, and every run is a whole number of blocks).
pub fn write_streamed(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    header: ArchiveHeader,
    contents: &FileContents,
    threads: usize,
) -> Result<()> {
    write_streamed_in_runs(storage, dir, name, header, contents, threads, STREAM_RUN_BYTES)
}

fn write_streamed_in_runs(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    mut header: ArchiveHeader,
    contents: &FileContents,
    threads: usize,
    run_bytes: usize,
) -> Result<()> {
    assert!(
        run_bytes > 0 && run_bytes.is_multiple_of(BLOCK_RAW_MAX_BYTES),
        "runs are whole blocks"
    );
    let (new_dir, tmp, file) = create_temporary(storage, dir, name)?;
    let mut runs: Vec<Mutex<Run>> = (0..threads.max(1)).map(|_| Mutex::default()).collect();
    let (mut raw_crc, mut compressed_crc) = (0u32, 0u32);
    let mut at = ARCHIVE_HEADER_BYTES as u64;
    let mut offset = 0u64;
    while offset < contents.len_bytes() {
        // The round's blocks shared evenly: a small arena still keeps every thread busy.
        let round_blocks = (contents.len_bytes() - offset)
            .div_ceil(BLOCK_RAW_MAX_BYTES as u64)
            .min((runs.len() * run_bytes / BLOCK_RAW_MAX_BYTES) as u64);
        let blocks_per_run = round_blocks.div_ceil(runs.len() as u64);
        let mut round_len = 0;
        for run in runs.iter_mut().map(Mutex::get_mut) {
            run.offset = offset + round_len;
            run.len = (contents.len_bytes() - run.offset).min(blocks_per_run * BLOCK_RAW_MAX_BYTES as u64) as usize;
            round_len += run.len as u64;
        }
        compress_round(contents, &runs)?;
        for run in runs.iter_mut().map(Mutex::get_mut).filter(|run| run.len > 0) {
            file.write_at(&run.out, at)
                .context(|| format!("writing {}", tmp.display()))?;
            at += run.out.len() as u64;
            compressed_crc = crc32c::crc32c_append(compressed_crc, &run.out);
            raw_crc = crc32c::crc32c_combine(raw_crc, run.raw_crc, run.len);
        }
        offset += round_len;
    }
    assert_eq!(offset, contents.len_bytes(), "every byte is in one run");
    let body_len = at - ARCHIVE_HEADER_BYTES as u64;
    seal(&mut header, offset, raw_crc, body_len, compressed_crc);
    file.write_at(header.as_bytes(), 0)
        .context(|| format!("writing {}", tmp.display()))?;
    publish_temporary(storage, dir, name, new_dir, file.as_ref())
}

/// One thread's share of a round of [`write_streamed`]: its buffers are kept between rounds.
#[derive(Default)]
struct Run {
    offset: u64,
    len: usize,
    raw: Vec<u8>,
    out: Vec<u8>,
    raw_crc: u32,
}

impl Run {
    fn compress(&mut self, contents: &FileContents) -> Result<()> {
        self.raw.resize(self.len, 0);
        self.out.clear();
        contents.read(self.offset, &mut self.raw)?;
        self.raw_crc = compress_blocks(&self.raw, &mut self.out);
        Ok(())
    }
}

/// Reads and compresses every non-empty run: the first on this thread, each other on a thread
/// of its own (a run whose thread cannot be started, on this one).
fn compress_round(contents: &FileContents, runs: &[Mutex<Run>]) -> Result<()> {
    let (first, rest) = runs.split_first().expect("at least one run");
    std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .iter()
            .filter(|run| run.lock().len > 0)
            .map(|run| {
                std::thread::Builder::new()
                    .name("vellum-compress".into())
                    .spawn_scoped(scope, move || run.lock().compress(contents))
                    .map_err(|_| run)
            })
            .collect();
        let mut result = first.lock().compress(contents);
        for handle in handles {
            let outcome = match handle {
                Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(run) => run.lock().compress(contents),
            };
            result = result.and(outcome);
        }
        result
    })
}

/// Writes `bytes` as `dir/name` atomically: temporary file, sync, rename, directory sync.
pub fn write_atomically(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let (new_dir, tmp, file) = create_temporary(storage, dir, name)?;
    file.write_at(bytes, 0)
        .context(|| format!("writing {}", tmp.display()))?;
    publish_temporary(storage, dir, name, new_dir, file.as_ref())
}

/// Creates `dir` (if missing; says so in the first value) and an empty `dir/name.tmp`.
fn create_temporary(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
) -> Result<(bool, PathBuf, std::sync::Arc<dyn crate::storage::StorageFile>)> {
    let new_dir = !storage.exists(dir);
    storage
        .create_dir_all(dir)
        .context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = storage.remove_file(&tmp);
    let file = storage
        .open(&tmp, true)
        .context(|| format!("creating {}", tmp.display()))?;
    Ok((new_dir, tmp, file))
}

/// Syncs the written `dir/name.tmp`, renames it to `dir/name` and syncs the directory (and its
/// parent if `new_dir`): a crash leaves the old state or the whole new file.
fn publish_temporary(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    new_dir: bool,
    file: &dyn crate::storage::StorageFile,
) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    file.sync_data().context(|| format!("syncing {}", tmp.display()))?;
    storage
        .rename(&tmp, &path)
        .context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    storage
        .sync_dir(dir)
        .context(|| format!("syncing directory {}", dir.display()))?;
    // A directory this call created is durable only once its parent is synced.
    match dir.parent() {
        Some(parent) if new_dir => storage
            .sync_dir(parent)
            .context(|| format!("syncing directory {}", parent.display())),
        _ => Ok(()),
    }
}

/// Reads a whole file.
pub fn read_file(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    let file = open_to_read(storage, path)?;
    let len = file
        .len()
        .context(|| format!("reading the length of {}", path.display()))?;
    let mut bytes = vec![0u8; usize::try_from(len).map_err(|_| Error::corrupted_file(path, "file too large"))?];
    file.read_at(&mut bytes, 0)
        .context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

fn open_to_read(storage: &dyn Storage, path: &Path) -> Result<std::sync::Arc<dyn crate::storage::StorageFile>> {
    storage.open_read_only(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(format!("{} is missing", path.display()))
        } else {
            Error::io(format!("opening {}", path.display()), e)
        }
    })
}

/// What `archive/` holds: base images by begin LSN and archived segments by number.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub bases: Vec<(ArchiveHeader, PathBuf, u64)>,
    pub segments: Vec<(u64, PathBuf, u64)>,
    /// Entries that are not archive files (directories, stray files): reported, never used.
    pub unknown: Vec<PathBuf>,
    /// Base images whose header is damaged, and why: reported, never used.
    pub damaged: Vec<(PathBuf, String)>,
}

/// Lists `archive/` (headers of base images are read and checked; segments by name). Removes
/// leftover temporary files when `tidy`.
///
/// Nothing in the directory makes the listing fail but an I/O error on the directory itself: an
/// entry that is not an archive file (a directory, a stray file, a name of another shape) is
/// listed in `unknown`, and a base image whose header is damaged in `damaged`, for `verify` and
/// `stats` to report; neither may stop a store from opening.
pub fn list(storage: &dyn Storage, store_dir: &Path, tidy: bool) -> Result<Listing> {
    let dir = store_dir.join(ARCHIVE_DIR);
    let mut listing = Listing::default();
    if !storage.exists(&dir) {
        return Ok(listing);
    }
    for name in storage.list(&dir).context(|| format!("listing {}", dir.display()))? {
        let path = dir.join(&name);
        if name.ends_with(".tmp") {
            if tidy {
                let _ = storage.remove_file(&path);
            }
            continue;
        }
        let Some(kind) = archive_name_kind(&name) else {
            listing.unknown.push(path);
            continue;
        };
        // A directory or an unreadable entry under an archive file's name is not one.
        let Ok(file) = storage.open_read_only(&path) else {
            listing.unknown.push(path);
            continue;
        };
        // A directory opens too (on Linux), but reads fail: it is no archive file either.
        let (Ok(size), Ok(())) = (file.len(), probe(&*file)) else {
            listing.unknown.push(path);
            continue;
        };
        match kind {
            ArchiveName::Segment(segment_no) => listing.segments.push((segment_no, path, size)),
            ArchiveName::Base => {
                let mut head = vec![0u8; ARCHIVE_HEADER_BYTES.min(size as usize)];
                file.read_at(&mut head, 0)
                    .context(|| format!("reading {}", path.display()))?;
                match decode_header(&path, &head) {
                    Ok(header) => listing.bases.push((header, path, size)),
                    Err(damage) => listing.damaged.push((path, damage.to_string())),
                }
            }
        }
    }
    listing.bases.sort_by_key(|b| b.0.first_lsn.get());
    listing.segments.sort_by_key(|s| s.0);
    Ok(listing)
}

/// Reads one byte of `file` if it has any: fails for a directory, which opens like a file.
fn probe(file: &dyn crate::storage::StorageFile) -> std::io::Result<()> {
    if file.len()? == 0 {
        return Ok(());
    }
    file.read_at(&mut [0u8; 1], 0)
}

/// What an archive file's name says it is.
enum ArchiveName {
    Segment(u64),
    Base,
}

fn archive_name_kind(name: &str) -> Option<ArchiveName> {
    if let Some(hex) = name.strip_prefix("wal-").and_then(|n| n.strip_suffix(".lz4")) {
        let canonical = hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        return canonical
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten()
            .map(ArchiveName::Segment);
    }
    (name.starts_with("base-") && name.ends_with(".lz4")).then_some(ArchiveName::Base)
}

/// Checks every archive file in full; returns each file with its damage, if any.
pub fn verify(storage: &dyn Storage, store_dir: &Path) -> Result<Vec<(PathBuf, Option<Error>)>> {
    let listing = list(storage, store_dir, false)?;
    let paths = listing
        .bases
        .iter()
        .map(|b| b.1.clone())
        .chain(listing.segments.iter().map(|s| s.1.clone()));
    let mut checked: Vec<(PathBuf, Option<Error>)> = paths
        .map(|path| {
            let outcome = decode_streamed(storage, &path, |_| Ok(())).err();
            (path, outcome)
        })
        .collect();
    checked.extend(listing.damaged.into_iter().map(|(path, reason)| {
        let damage = Error::corrupted_file(&path, reason);
        (path, Some(damage))
    }));
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn shuffle_round_trips_any_length() {
        for len in [0usize, 1, 3, 4, 5, 1000, 1027] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let (mut shuffled, mut back) = (Vec::new(), Vec::new());
            shuffle4(&bytes, &mut shuffled);
            unshuffle4(&shuffled, &mut back);
            assert_eq!(back, bytes, "length {len}");
        }
    }

    /// Unit-normalised-looking floats: random mantissas, a narrow range of exponents.
    fn floats(count: usize) -> Vec<u8> {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        (0..count)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) / 8.0).to_le_bytes()
            })
            .collect()
    }

    /// `count` files of `file_bytes` each in `/a` of a simulated storage: floats, zeros, text.
    fn arena_like_files(count: usize, file_bytes: usize) -> (crate::storage::SimStorage, Vec<PathBuf>, Vec<u8>) {
        let sim = crate::storage::SimStorage::new(1);
        sim.create_dir_all(Path::new("/a")).unwrap();
        let mut all = Vec::new();
        let mut paths = Vec::new();
        for i in 0..count {
            let mut bytes = match i % 3 {
                0 => floats(file_bytes / 4),
                1 => Vec::new(),
                _ => b"lang=en;title=a page of text;".repeat(file_bytes / 29),
            };
            bytes.resize(file_bytes, 0);
            let path = PathBuf::from(format!("/a/{i}"));
            sim.open(&path, true).unwrap().write_at(&bytes, 0).unwrap();
            all.extend_from_slice(&bytes);
            paths.push(path);
        }
        (sim, paths, all)
    }

    #[test]
    fn a_file_of_another_length_than_expected_is_damage_named() {
        let (sim, paths, _) = arena_like_files(3, 100);
        sim.open(&paths[1], false).unwrap().write_at(&[1], 100).unwrap();
        let error = FileContents::open(&sim, &paths, 100).err().expect("a long file");
        assert!(
            matches!(&error, Error::Corrupted { .. }) && error.to_string().contains("/a/1"),
            "a file longer than the others is damage, and the error names it: {error}"
        );
    }

    #[test]
    fn contents_read_across_files_are_their_concatenation() {
        let (sim, paths, all) = arena_like_files(3, 100);
        let contents = FileContents::open(&sim, &paths, 100).unwrap();
        assert_eq!(contents.len_bytes(), 300);
        for (offset, len) in [(0, 300), (0, 100), (99, 2), (150, 150), (200, 0), (37, 201)] {
            let mut into = vec![0u8; len];
            contents.read(offset as u64, &mut into).unwrap();
            assert!(into == all[offset..offset + len], "{len} bytes at {offset}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "megabytes of LZ4 take Miri too long")]
    fn a_streamed_file_is_the_encoded_file_whatever_the_threads_and_runs() {
        // Files of a block and a half: blocks straddle files, runs end inside files.
        let file_bytes = BLOCK_RAW_MAX_BYTES * 3 / 2 + 5;
        let mut header = ArchiveHeader::new_zeroed();
        header.kind = KIND_BASE_IMAGE;
        for count in [0, 1, 3] {
            let (sim, paths, all) = arena_like_files(count, file_bytes);
            let contents = FileContents::open(&sim, &paths, file_bytes as u64).unwrap();
            let expected = encode(header, &all);
            for (threads, runs) in [(1, 1), (2, 1), (3, 2), (4, 1)] {
                let dir = Path::new("/archive");
                let run_bytes = runs * BLOCK_RAW_MAX_BYTES;
                write_streamed_in_runs(&sim, dir, "base", header, &contents, threads, run_bytes).unwrap();
                let written = read_file(&sim, &dir.join("base")).unwrap();
                assert!(
                    written == expected,
                    "{count} files, {threads} threads, runs of {runs} blocks: the bytes of encode"
                );
                assert!(!sim.exists(&dir.join("base.tmp")), "the temporary name is gone");
            }
            let decoded = decode(Path::new("base"), &expected).expect("decodes");
            assert!(decoded.contents == all, "{count} files round-trip");
            let mut streamed = Vec::new();
            let header = decode_streamed(&sim, Path::new("/archive/base"), |block| {
                assert!(block.len() <= BLOCK_RAW_MAX_BYTES, "at most a block at a time");
                streamed.extend_from_slice(block);
                Ok(())
            })
            .expect("decodes streamed");
            assert!(
                streamed == all && header.as_bytes() == decoded.header.as_bytes(),
                "streamed too"
            );
        }
    }

    /// What decoding `bytes` whole and streamed from a file say: `Ok` or the error's kind.
    fn verdicts(bytes: &[u8]) -> (std::result::Result<(), String>, std::result::Result<(), String>) {
        let kind = |e: Error| match e {
            Error::Corrupted { .. } => "corrupted".to_string(),
            Error::Incompatible(_) => "incompatible".to_string(),
            other => format!("unexpected error {other}"),
        };
        let sim = crate::storage::SimStorage::new(1);
        sim.create_dir_all(Path::new("/a")).unwrap();
        let path = Path::new("/a/file");
        sim.open(path, true).unwrap().write_at(bytes, 0).unwrap();
        let whole = decode(path, bytes).map(|_| ()).map_err(kind);
        let streamed = decode_streamed(&sim, path, |_| Ok(())).map(|_| ()).map_err(kind);
        (whole, streamed)
    }

    #[test]
    #[cfg_attr(miri, ignore = "megabytes of LZ4 take Miri too long")]
    fn streamed_and_whole_decoding_agree_on_every_damage() {
        let mut contents = floats(BLOCK_RAW_MAX_BYTES / 4);
        contents.extend(b"text and metadata, ".repeat(4000));
        let mut header = ArchiveHeader::new_zeroed();
        header.kind = KIND_BASE_IMAGE;
        let file = encode(header, &contents);
        let second_block = ARCHIVE_HEADER_BYTES + BLOCK_HEADER_BYTES + blocks(&file)[0].stored_len.get() as usize;
        assert_eq!(verdicts(&file), (Ok(()), Ok(())), "the intact file decodes both ways");
        let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
        for at in [
            0,
            20,
            100,
            ARCHIVE_HEADER_BYTES,
            ARCHIVE_HEADER_BYTES + 5,
            ARCHIVE_HEADER_BYTES + 9000,
            second_block + 4,
            second_block + 30,
            file.len() - 1,
        ] {
            let mut bytes = file.clone();
            bytes[at] ^= 0x40;
            damaged.push((format!("a bit flipped at {at}"), bytes));
        }
        for len in [
            0,
            100,
            ARCHIVE_HEADER_BYTES,
            ARCHIVE_HEADER_BYTES + 7,
            second_block,
            file.len() - 1,
        ] {
            damaged.push((format!("cut to {len} bytes"), file[..len].to_vec()));
        }
        let mut longer = file.clone();
        longer.push(0);
        damaged.push(("a byte appended".into(), longer));
        for (what, bytes) in damaged {
            let (whole, streamed) = verdicts(&bytes);
            assert!(whole.is_err(), "{what}: damage is found");
            assert_eq!(whole, streamed, "{what}: both readers find the same kind of damage");
        }
    }

    fn blocks(file: &[u8]) -> Vec<BlockHeader> {
        let mut body = &file[ARCHIVE_HEADER_BYTES..];
        let mut headers = Vec::new();
        while let Ok((block, rest)) = BlockHeader::read_from_prefix(body) {
            headers.push(block);
            body = &rest[block.stored_len.get() as usize..];
        }
        headers
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "1.2 MB of LZ4 takes Miri too long; fuzz/miri.sh replays archive_decode inputs"
    )]
    fn float_blocks_use_lanes_and_store_the_random_ones() {
        let mut contents = floats(300_000);
        contents.extend_from_slice(&[7, 7, 7]);
        let mut header = ArchiveHeader::new_zeroed();
        header.kind = KIND_WAL_SEGMENT;
        let file = encode(header, &contents);
        assert_eq!(decode(Path::new("a"), &file).unwrap().contents, contents);
        let headers = blocks(&file);
        assert_eq!(headers.len(), 2, "1.2 MB is two blocks");
        assert!(
            headers.iter().all(|b| b.filter == FILTER_SHUFFLE4_LANES),
            "floats are shuffled into lanes"
        );
        let first = &file[ARCHIVE_HEADER_BYTES + BLOCK_HEADER_BYTES..];
        let (lane0, _) = LaneHeader::read_from_prefix(first).unwrap();
        assert_eq!(
            lane0.filter, FILTER_STORED,
            "the lowest mantissa bytes are random: stored"
        );
        assert!(file.len() < contents.len() * 95 / 100, "the exponent lane compresses");
    }

    #[test]
    fn lane_blocks_of_every_short_length_round_trip() {
        for len in 1..=9 {
            let mut shuffled = Vec::new();
            let contents: Vec<u8> = (0..len as u8).collect();
            shuffle4(&contents, &mut shuffled);
            let mut body = Vec::new();
            push_lanes(&shuffled, &mut body);
            let mut back = Vec::new();
            decode_lanes(&body, len, &mut back).unwrap();
            assert_eq!(back, shuffled, "length {len}");
        }
    }

    #[test]
    fn version_1_files_are_read_but_may_not_use_lanes() {
        let contents = floats(1000);
        let mut header = ArchiveHeader::new_zeroed();
        header.kind = KIND_WAL_SEGMENT;
        let reseal = |file: &mut Vec<u8>| {
            file[8..10].copy_from_slice(&1u16.to_le_bytes());
            let crc = crc32c::crc32c(&file[..ARCHIVE_HEADER_BYTES - 4]);
            file[ARCHIVE_HEADER_BYTES - 4..ARCHIVE_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        };
        let mut lanes = encode(header, &contents);
        assert_eq!(blocks(&lanes)[0].filter, FILTER_SHUFFLE4_LANES);
        reseal(&mut lanes);
        assert!(
            matches!(decode(Path::new("a"), &lanes), Err(Error::Corrupted { .. })),
            "filter 3 is unknown to major 1: damage"
        );
        let mut shuffled = Vec::new();
        shuffle4(&contents, &mut shuffled);
        let block = BlockHeader {
            filter: FILTER_SHUFFLE4_LZ4,
            reserved0: [0; 3],
            raw_len: U32::new(contents.len() as u32),
            stored_len: U32::ZERO,
            reserved1: U32::ZERO,
        };
        let data = lz4_flex::block::compress(&shuffled);
        let mut old = encode(header, &[]);
        let mut block = block;
        block.stored_len = U32::new(data.len() as u32);
        old.extend_from_slice(block.as_bytes());
        old.extend_from_slice(&data);
        let body_crc = crc32c::crc32c(&old[ARCHIVE_HEADER_BYTES..]);
        old[80..88].copy_from_slice(&(contents.len() as u64).to_le_bytes());
        let body_len = (old.len() - ARCHIVE_HEADER_BYTES) as u64;
        old[88..96].copy_from_slice(&body_len.to_le_bytes());
        old[96..100].copy_from_slice(&crc32c::crc32c(&contents).to_le_bytes());
        old[100..104].copy_from_slice(&body_crc.to_le_bytes());
        reseal(&mut old);
        assert_eq!(
            decode(Path::new("a"), &old).unwrap().contents,
            contents,
            "major 1 still reads"
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "1.5 MiB of LZ4 takes Miri too long; fuzz/miri.sh replays archive_decode inputs"
    )]
    fn archive_round_trips_and_every_truncation_is_refused() {
        let contents: Vec<u8> = (0..3 * BLOCK_RAW_MAX_BYTES / 2).map(|i| (i / 7) as u8).collect();
        let mut header = ArchiveHeader::new_zeroed();
        header.kind = KIND_WAL_SEGMENT;
        let file = encode(header, &contents);
        let decoded = decode(Path::new("a"), &file).unwrap();
        assert_eq!(decoded.contents, contents);
        assert!(file.len() < contents.len() / 4, "repetitive bytes compress");
        for cut in [
            0,
            10,
            ARCHIVE_HEADER_BYTES,
            ARCHIVE_HEADER_BYTES + 5,
            file.len() / 2,
            file.len() - 1,
        ] {
            let error = decode(Path::new("a"), &file[..cut]).unwrap_err();
            assert!(matches!(error, Error::Corrupted { .. }), "cut at {cut}: {error}");
        }
        let mut flipped = file.clone();
        flipped[file.len() / 2] ^= 1;
        assert!(
            matches!(decode(Path::new("a"), &flipped), Err(Error::Corrupted { .. })),
            "a flipped bit is damage"
        );
    }
}
