//! The archive's codec: byte shuffles, LZ4 blocks and lanes, and whole files in memory.

use std::path::Path;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::Error;
use crate::error::Result;
use crate::format::archive::*;

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
pub(super) fn unshuffle4_onto(bytes: &[u8], out: &mut Vec<u8>) {
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
pub(super) fn push_lz4(bytes: &[u8], out: &mut Vec<u8>) {
    let at = out.len();
    out.resize(at + lz4_flex::block::get_maximum_output_size(bytes.len()), 0);
    let written = lz4_flex::block::compress_into(bytes, &mut out[at..]).expect("the output holds the worst case");
    out.truncate(at + written);
}

/// Appends the four lanes of the shuffled block `shuffled` (each a lane header and its data),
/// then its 0..=3 tail bytes.
pub(super) fn push_lanes(shuffled: &[u8], out: &mut Vec<u8>) {
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
pub(super) fn lane_worth_compressing(lane: &[u8]) -> bool {
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

/// Where the blocks of an archive body come from, one at a time.
pub(super) trait BlockSource {
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

/// Decodes every block of `source` onto `out`, then calls `flush` with `out` (which may
/// empty it). Checks each block's lengths and filter and the total against `raw_len`;
/// returns the CRC32C of the decoded contents.
pub(super) fn decode_blocks(
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
pub(super) fn decompress_onto(data: &[u8], raw: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
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
pub(super) fn decode_lanes(mut data: &[u8], raw: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
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
pub(super) fn body_bytes_max(raw_len: usize) -> usize {
    let blocks = raw_len.div_ceil(BLOCK_RAW_MAX_BYTES);
    raw_len + blocks * (BLOCK_HEADER_BYTES + 4 * LANE_HEADER_BYTES + 64)
}

/// Fills in the fields of `header` that describe the body, then the header's own CRC.
pub(super) fn seal(header: &mut ArchiveHeader, raw_len: u64, raw_crc: u32, compressed_len: u64, compressed_crc: u32) {
    header.magic = ARCHIVE_MAGIC;
    header.version_major = U16::new(ARCHIVE_VERSION_MAJOR);
    header.version_minor = U16::new(ARCHIVE_VERSION_MINOR);
    header.raw_len = U64::new(raw_len);
    header.compressed_len = U64::new(compressed_len);
    header.raw_crc = U32::new(raw_crc);
    header.compressed_crc = U32::new(compressed_crc);
    header.crc = U32::new(crc32c::crc32c(&header.as_bytes()[..ARCHIVE_HEADER_BYTES - 4]));
}
