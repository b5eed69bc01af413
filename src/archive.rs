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

use std::path::{Path, PathBuf};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

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
    let contents = decode_blocks(body, raw_len as usize, header.version_major.get()).map_err(damaged)?;
    if crc32c::crc32c(&contents) != header.raw_crc.get() {
        return Err(damaged("uncompressed contents fail their checksum".into()));
    }
    Ok(ArchiveFile { header, contents })
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

fn decode_blocks(mut body: &[u8], raw_len: usize, major: u16) -> std::result::Result<Vec<u8>, String> {
    // Grown as blocks decode, never reserved from the header's claim: a crafted length cannot
    // make a small file allocate more than its blocks really decompress to.
    let mut contents = Vec::new();
    let mut scratch = Vec::new();
    while !body.is_empty() {
        let Ok((block, rest)) = BlockHeader::read_from_prefix(body) else {
            return Err("block header cut short (truncated)".into());
        };
        let (raw, stored) = (block.raw_len.get() as usize, block.stored_len.get() as usize);
        if raw == 0 || raw > BLOCK_RAW_MAX_BYTES || stored > rest.len() || contents.len() + raw > raw_len {
            return Err(format!("block lengths {raw}/{stored} out of range"));
        }
        let data = &rest[..stored];
        match block.filter {
            FILTER_STORED if stored == raw => contents.extend_from_slice(data),
            FILTER_LZ4 => decompress_onto(data, raw, &mut contents)?,
            FILTER_SHUFFLE4_LZ4 => {
                scratch.clear();
                decompress_onto(data, raw, &mut scratch)?;
                unshuffle4_onto(&scratch, &mut contents);
            }
            FILTER_SHUFFLE4_LANES if major >= 2 => {
                scratch.clear();
                decode_lanes(data, raw, &mut scratch)?;
                unshuffle4_onto(&scratch, &mut contents);
            }
            other => return Err(format!("unknown block filter {other}")),
        }
        if contents.len() % BLOCK_RAW_MAX_BYTES != 0 && contents.len() != raw_len {
            return Err("a block other than the last is short".into());
        }
        body = &rest[stored..];
    }
    if contents.len() != raw_len {
        return Err(format!(
            "blocks hold {} bytes, expected {raw_len} (truncated)",
            contents.len()
        ));
    }
    Ok(contents)
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
pub fn encode(header: ArchiveHeader, contents: &[u8]) -> Vec<u8> {
    encode_with(header, contents, 1)
}

/// [`encode`] with the blocks compressed by up to `threads` threads. Blocks are independent:
/// each thread compresses a run of consecutive blocks into its own buffer, and the file is the
/// same byte for byte whatever the thread count.
pub fn encode_with(mut header: ArchiveHeader, contents: &[u8], threads: usize) -> Vec<u8> {
    let blocks = contents.len().div_ceil(BLOCK_RAW_MAX_BYTES);
    let parts = threads.clamp(1, blocks.max(1));
    let part_bytes = blocks.div_ceil(parts).max(1) * BLOCK_RAW_MAX_BYTES;
    // The header's room first, then the body; room for the worst case (every block stored) up
    // front: growing a 64 MiB buffer by doubling copies it and faults its pages in again.
    let mut file = Vec::with_capacity(ARCHIVE_HEADER_BYTES + body_bytes_max(contents.len()));
    file.resize(ARCHIVE_HEADER_BYTES, 0);
    let (first, rest) = contents.split_at(contents.len().min(part_bytes));
    let (raw_crc, later) = std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .chunks(part_bytes)
            .map(|part| {
                let compress = move || {
                    let mut out = Vec::with_capacity(body_bytes_max(part.len()));
                    let raw_crc = compress_blocks(part, &mut out);
                    (out, raw_crc, part.len())
                };
                // A thread that cannot be started leaves its part to this one.
                std::thread::Builder::new()
                    .name("vellum-compress".into())
                    .spawn_scoped(scope, compress)
                    .map_err(|_| part)
            })
            .collect();
        let mut raw_crc = compress_blocks(first, &mut file);
        let mut later = Vec::with_capacity(handles.len());
        for handle in handles {
            let (out, part_crc, part_len) = match handle {
                Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(part) => {
                    let mut out = Vec::new();
                    let part_crc = compress_blocks(part, &mut out);
                    (out, part_crc, part.len())
                }
            };
            raw_crc = crc32c::crc32c_combine(raw_crc, part_crc, part_len);
            later.push(out);
        }
        (raw_crc, later)
    });
    for out in &later {
        file.extend_from_slice(out);
    }
    let body = &file[ARCHIVE_HEADER_BYTES..];
    header.magic = ARCHIVE_MAGIC;
    header.version_major = U16::new(ARCHIVE_VERSION_MAJOR);
    header.version_minor = U16::new(crate::wal::format::FORMAT_VERSION_MINOR);
    header.raw_len = U64::new(contents.len() as u64);
    header.compressed_len = U64::new(body.len() as u64);
    header.raw_crc = U32::new(raw_crc);
    header.compressed_crc = U32::new(crc32c::crc32c(body));
    header.crc = U32::new(crc32c::crc32c(&header.as_bytes()[..ARCHIVE_HEADER_BYTES - 4]));
    file[..ARCHIVE_HEADER_BYTES].copy_from_slice(header.as_bytes());
    file
}

/// The largest body `raw_len` bytes can encode to: every block stored, lane headers included.
fn body_bytes_max(raw_len: usize) -> usize {
    let blocks = raw_len.div_ceil(BLOCK_RAW_MAX_BYTES);
    raw_len + blocks * (BLOCK_HEADER_BYTES + 4 * LANE_HEADER_BYTES + 64)
}

/// Writes `bytes` as `dir/name` atomically: temporary file, sync, rename, directory sync.
pub fn write_atomically(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let new_dir = !storage.exists(dir);
    storage
        .create_dir_all(dir)
        .context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let _ = storage.remove_file(&tmp);
    let file = storage
        .open(&tmp, true)
        .context(|| format!("creating {}", tmp.display()))?;
    file.write_at(bytes, 0)
        .context(|| format!("writing {}", tmp.display()))?;
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

/// Reads a whole file into `into`, which must be exactly its length.
pub fn read_file_into(storage: &dyn Storage, path: &Path, into: &mut [u8]) -> Result<()> {
    let file = open_to_read(storage, path)?;
    let len = file
        .len()
        .context(|| format!("reading the length of {}", path.display()))?;
    if len != into.len() as u64 {
        return Err(Error::corrupted_file(
            path,
            format!("{len} bytes, expected {}", into.len()),
        ));
    }
    file.read_at(into, 0).context(|| format!("reading {}", path.display()))
}

fn open_to_read(storage: &dyn Storage, path: &Path) -> Result<std::sync::Arc<dyn crate::storage::StorageFile>> {
    storage.open(path, false).map_err(|e| {
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
}

/// Lists `archive/` (headers of base images are read and checked; segments by name). Removes
/// leftover temporary files when `tidy`.
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
        let size = storage
            .open(&path, false)
            .and_then(|f| f.len())
            .context(|| format!("reading {}", path.display()))?;
        if let Some(hex) = name.strip_prefix("wal-").and_then(|n| n.strip_suffix(".lz4")) {
            let canonical = hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if let Some(segment_no) = canonical.then(|| u64::from_str_radix(hex, 16).ok()).flatten() {
                listing.segments.push((segment_no, path, size));
            }
        } else if name.starts_with("base-") && name.ends_with(".lz4") {
            let file = storage
                .open(&path, false)
                .context(|| format!("opening {}", path.display()))?;
            let mut head = vec![0u8; ARCHIVE_HEADER_BYTES.min(size as usize)];
            file.read_at(&mut head, 0)
                .context(|| format!("reading {}", path.display()))?;
            listing.bases.push((decode_header(&path, &head)?, path, size));
        }
    }
    listing.bases.sort_by_key(|b| b.0.first_lsn.get());
    listing.segments.sort_by_key(|s| s.0);
    Ok(listing)
}

/// Checks every archive file in full; returns each file with its damage, if any.
pub fn verify(storage: &dyn Storage, store_dir: &Path) -> Result<Vec<(PathBuf, Option<Error>)>> {
    let listing = list(storage, store_dir, false)?;
    let paths = listing
        .bases
        .iter()
        .map(|b| b.1.clone())
        .chain(listing.segments.iter().map(|s| s.1.clone()));
    Ok(paths
        .map(|path| {
            let outcome = read_file(storage, &path).and_then(|bytes| decode(&path, &bytes)).err();
            (path, outcome)
        })
        .collect())
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

    #[test]
    fn a_file_of_another_length_than_expected_is_damage_and_fills_nothing() {
        let sim = crate::storage::SimStorage::new(1);
        sim.create_dir_all(Path::new("/a")).unwrap();
        let path = Path::new("/a/f");
        sim.open(path, true).unwrap().write_at(&[5; 100], 0).unwrap();
        let mut into = [0u8; 64];
        let error = read_file_into(&sim, path, &mut into).unwrap_err();
        assert!(
            matches!(error, Error::Corrupted { .. }),
            "a short or long file is damage: {error}"
        );
        assert!(into == [0; 64], "nothing is read into the buffer");
        let mut exact = [0u8; 100];
        read_file_into(&sim, path, &mut exact).unwrap();
        assert!(exact == [5; 100], "a file of the expected length is read whole");
    }

    #[test]
    #[cfg_attr(miri, ignore = "megabytes of LZ4 take Miri too long")]
    fn the_thread_count_never_changes_the_file() {
        // Three and a half blocks of floats then zeros: parts of unequal size and kind.
        let mut contents = floats(BLOCK_RAW_MAX_BYTES / 4 * 2);
        contents.resize(BLOCK_RAW_MAX_BYTES * 7 / 2, 0);
        let mut header = ArchiveHeader::new_zeroed();
        header.kind = KIND_WAL_SEGMENT;
        for len in [0, 1000, BLOCK_RAW_MAX_BYTES, contents.len()] {
            let one = encode(header, &contents[..len]);
            for threads in [2, 3, 4, 64] {
                let many = encode_with(header, &contents[..len], threads);
                assert!(one == many, "{len} bytes with {threads} threads encode as with one");
            }
            let decoded = decode(Path::new("t"), &one).expect("decodes");
            assert!(decoded.contents == contents[..len], "{len} bytes round-trip");
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
