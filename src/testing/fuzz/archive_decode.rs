//! The `archive_decode` target.

use std::path::Path;

use zerocopy::IntoBytes;

use crate::Error;
use crate::storage::Storage;

/// **archive_decode**: the input is an archive file (`archive/`), and an LZ4 block.
///
/// This target was written as a placeholder before `src/archive.rs` existed: its first part
/// fuzzes what the archive format builds on, LZ4 blocks with a prepended uncompressed size
/// (`lz4_flex::block`), and will be dropped now that the archive module has landed. The second
/// part fuzzes the archive decoder itself (`archive::decode`), as given and with the header
/// and compressed-bytes checksums recomputed.
///
/// Invariants:
/// - (placeholder) `decompress_size_prepended` of the input, when the prepended size is at most
///   1 MiB (the cap a reader must enforce before allocating), returns `Ok` with at most that
///   many bytes, or an error; decompressing into a fixed 64 KiB buffer never panics;
///   compressing the input and decompressing it gives the input back;
/// - `archive::decode` returns `Ok` or `Err(Corrupted)`/`Err(Incompatible)`, never panics,
///   and never allocates more than a bounded multiple of the input (libFuzzer's malloc limit);
/// - on `Ok`, the contents have the header's uncompressed length, and encoding them again with
///   the same header (`archive::encode`) decodes to the same contents;
/// - reading the same bytes from a file block by block (`archive::decode_streamed`) agrees:
///   the same contents, or an error of the same kind.
pub fn archive_decode(data: &[u8]) {
    const SIZE_CAP_BYTES: usize = 1 << 20;
    if let Ok((size, _)) = lz4_flex::block::uncompressed_size(data)
        && size <= SIZE_CAP_BYTES
        && let Ok(out) = lz4_flex::block::decompress_size_prepended(data)
    {
        assert!(
            out.len() <= size,
            "decompressed {} bytes, more than the {size} announced",
            out.len()
        );
    }
    let mut buffer = vec![0u8; 64 << 10];
    if let Ok(len) = lz4_flex::block::decompress_into(data, &mut buffer) {
        assert!(len <= buffer.len());
    }
    let packed = lz4_flex::block::compress_prepend_size(data);
    let unpacked = lz4_flex::block::decompress_size_prepended(&packed).expect("lz4 round trip");
    assert_eq!(unpacked, data, "lz4 round trip changed the bytes");

    decode_archive_checked(data);
    let header_bytes = crate::archive::ARCHIVE_HEADER_BYTES;
    if data.len() >= header_bytes {
        let mut repaired = data.to_vec();
        let body_crc = crc32c::crc32c(&repaired[header_bytes..]);
        // The CRC of the bytes after the header is at offset 100; the header CRC is its last field.
        repaired[100..104].copy_from_slice(&body_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&repaired[..header_bytes - 4]);
        repaired[header_bytes - 4..header_bytes].copy_from_slice(&header_crc.to_le_bytes());
        if repaired != data {
            decode_archive_checked(&repaired);
        }
    }
}

fn decode_archive_checked(bytes: &[u8]) {
    let path = Path::new("archive/fuzz");
    let sim = crate::storage::SimStorage::new(1);
    sim.create_dir_all(Path::new("archive")).expect("a simulated directory");
    let file = sim.open(path, true).expect("a simulated file");
    file.write_at(bytes, 0).expect("writing a simulated file");
    let mut streamed = Vec::new();
    let streamed_outcome = crate::archive::decode_streamed(&sim, path, |block| {
        streamed.extend_from_slice(block);
        Ok(())
    });
    match (crate::archive::decode(path, bytes), streamed_outcome) {
        (Ok(file), Ok(header)) => {
            assert_eq!(file.contents.len() as u64, file.header.raw_len.get(), "contents length");
            assert!(streamed == file.contents, "streamed decoding gave other contents");
            assert_eq!(header.as_bytes(), file.header.as_bytes(), "streamed decoding's header");
            let again = crate::archive::encode(file.header, &file.contents);
            let decoded = crate::archive::decode(path, &again).expect("a re-encoded archive decodes");
            assert_eq!(decoded.contents, file.contents, "re-encoding changed the contents");
        }
        (Err(Error::Corrupted { .. }), Err(Error::Corrupted { .. }))
        | (Err(Error::Incompatible(_)), Err(Error::Incompatible(_))) => {}
        (whole, streamed) => panic!("archive::decode returned {whole:?}, decode_streamed {streamed:?}"),
    }
}
