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
//! either no file or a whole one (a leftover `.tmp` is removed before the next session archives a segment).
//!
//! Segments are encoded and decoded in memory (a segment is mapped anyway). Base images are
//! as large as the arena: [`write_streamed_unless`] and [`decode_streamed`] hold a round of runs or a
//! block at a time, whatever the arena's size.

mod codec;
mod files;
mod streaming;

pub use crate::format::archive::*;
pub use codec::{decode, encode};
#[cfg(feature = "testing")]
pub use codec::{ArchiveFile, compress_blocks, shuffle4, unshuffle4};
pub use files::{Listing, Staged, list, read_file, stage_unless, verify};
// A restore from the bucket writes the files it downloads so; the archiver stages and publishes.
#[cfg(feature = "object-store")]
pub use files::write_atomically_unless;
// Read by restores from a bucket (and the project's own tests).
#[cfg(any(feature = "object-store", feature = "testing"))]
pub use streaming::decode_streamed_from;
pub use streaming::{FileContents, decode_streamed, write_streamed_unless};

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::codec::*;
    use super::files::*;
    use super::streaming::*;
    use super::*;
    use crate::Error;
    use crate::storage::Storage;
    use zerocopy::little_endian::U32;
    use zerocopy::{FromBytes, IntoBytes};
    use zerocopy::FromZeros;

    #[test]
    fn a_write_given_up_before_its_sync_publishes_nothing_and_leaves_no_temporary() {
        let sim = crate::storage::SimStorage::new(1);
        let dir = Path::new("/archive");
        let bytes = vec![7u8; 3 << 20];
        let asked = std::cell::Cell::new(0);
        let give_up_at_the_third_question = || {
            asked.set(asked.get() + 1);
            asked.get() == 3
        };
        let published = write_atomically_unless(&sim, dir, "f", &bytes, &give_up_at_the_third_question).unwrap();
        assert!(!published, "given up");
        assert_eq!(asked.get(), 3, "asked before each MiB");
        assert_eq!(sim.list(dir).unwrap(), Vec::<String>::new(), "neither the file nor its temporary");
        let published = write_atomically_unless(&sim, dir, "f", &bytes, &|| false).unwrap();
        assert!(published, "not given up");
        assert_eq!(read_file(&sim, &dir.join("f")).unwrap(), bytes, "published whole");
    }

    #[test]
    fn a_file_written_past_the_cache_reads_back_whole_at_every_length() {
        let block = crate::storage::DIRECT_BLOCK_BYTES as usize;
        for direct_io in [false, true] {
            for len in [0, 1, block - 1, block, block + 1, (1 << 20) - 3, 1 << 20, (1 << 20) + block + 5, 3 << 20] {
                let sim = crate::storage::SimStorage::with_config(crate::storage::SimConfig {
                    direct_io,
                    ..Default::default()
                });
                let dir = Path::new("/archive");
                let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4099) as u8).collect();
                assert!(write_atomically_unless(&sim, dir, "f", &bytes, &|| false).unwrap(), "written");
                let read = read_file(&sim.reboot(), &dir.join("f")).unwrap();
                assert!(read == bytes, "direct I/O {direct_io}, {len} bytes: durable and whole");
            }
        }
    }

    #[test]
    fn a_streamed_file_given_up_between_rounds_publishes_nothing() {
        let file_bytes = BLOCK_RAW_MAX_BYTES * 3;
        let (sim, paths, _) = arena_like_files(2, file_bytes);
        let contents = FileContents::open(&sim, &paths, file_bytes as u64).unwrap();
        let dir = Path::new("/archive");
        let rounds = std::cell::Cell::new(0);
        let give_up_in_the_second_round = || {
            rounds.set(rounds.get() + 1);
            rounds.get() == 2
        };
        let cut = StreamRuns {
            threads: 1,
            run_bytes: BLOCK_RAW_MAX_BYTES,
        };
        let header = ArchiveHeader::new_zeroed();
        let written = write_streamed_in_runs(&sim, dir, "base", header, &contents, cut, &give_up_in_the_second_round);
        assert!(!written.unwrap(), "given up");
        assert_eq!(sim.list(dir).unwrap(), Vec::<String>::new(), "neither the file nor its temporary");
    }

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
        let mut rng = crate::rng::SplitMix64::new(0x2545_F491_4F6C_DD1D);
        (0..count)
            .flat_map(|_| ((rng.next_f32() - 0.5) / 8.0).to_le_bytes())
            .collect()
    }

    /// `count` files of `file_bytes` each in `/a` of a simulated storage: floats, zeros, text.
    fn arena_like_files(count: usize, file_bytes: usize) -> (crate::storage::SimStorage, Vec<PathBuf>, Vec<u8>) {
        arena_like_files_on(1, count, file_bytes)
    }

    /// As [`arena_like_files`] on a disk of `seed` (odd seeds have direct I/O).
    fn arena_like_files_on(
        seed: u64,
        count: usize,
        file_bytes: usize,
    ) -> (crate::storage::SimStorage, Vec<PathBuf>, Vec<u8>) {
        let sim = crate::storage::SimStorage::new(seed);
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
        for (seed, count) in [(1, 0), (1, 1), (1, 3), (2, 3)] {
            // Seed 1 has direct I/O, seed 2 not: the file goes past the cache or through it.
            let (sim, paths, all) = arena_like_files_on(seed, count, file_bytes);
            let contents = FileContents::open(&sim, &paths, file_bytes as u64).unwrap();
            let expected = encode(header, &all);
            for (threads, runs) in [(1, 1), (2, 1), (3, 2), (4, 1)] {
                let dir = Path::new("/archive");
                let run_bytes = runs * BLOCK_RAW_MAX_BYTES;
                let cut = StreamRuns { threads, run_bytes };
                assert!(write_streamed_in_runs(&sim, dir, "base", header, &contents, cut, &|| false).unwrap());
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

    type Verdict = std::result::Result<(), String>;

    /// What decoding `bytes` whole, streamed from a file and streamed from a reader (as a
    /// download arrives) say: `Ok` or the error's kind.
    fn verdicts(bytes: &[u8]) -> (Verdict, Verdict, Verdict) {
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
        let mut reader = bytes;
        let read = decode_streamed_from(&mut reader, path, |_| Ok(()))
            .map(|_| ())
            .map_err(kind);
        (whole, streamed, read)
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
        assert_eq!(
            verdicts(&file),
            (Ok(()), Ok(()), Ok(())),
            "the intact file decodes every way"
        );
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
            let (whole, streamed, read) = verdicts(&bytes);
            assert!(whole.is_err(), "{what}: damage is found");
            assert_eq!(whole, streamed, "{what}: both readers find the same kind of damage");
            assert_eq!(whole, read, "{what}: a reader read front to back finds it too");
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

