//! Archive files too large for memory: base images written from the arena files in rounds of
//! runs, and any archive file decoded a block at a time.

use std::io::Read;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use zerocopy::{FromBytes, IntoBytes};

use super::codec::{BlockSource, compress_blocks, decode_blocks, seal};
use super::files::{DirectAppender, create_temporary, open_to_read, publish_temporary};
use crate::Error;
use crate::error::{IoContext, Result};
use crate::format::archive::*;
use crate::storage::Storage;

/// Decodes the archive file at `path` block by block, handing each block's contents (at most
/// 1 MiB, in order) to `sink`: memory for one block, whatever the file's size. Returns the
/// header. The checks are those of [`decode`], but the compressed bytes' checksum can only be
/// checked at the end: `sink` may have been given contents of a file found damaged later, and
/// the caller must then discard what it made of them.
pub fn decode_streamed(
    storage: &dyn Storage,
    path: &Path,
    sink: impl FnMut(&[u8]) -> Result<()>,
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
    decode_body(&mut AtFile(file.as_ref()), path, header, sink)
}

/// [`decode_streamed`] of an archive file read front to back from `reader` (a download as it
/// arrives), `path` naming it in errors. The same checks, and also that the reader ends where
/// the header says the file does: a short or padded file is damage. A failing read is an
/// `Error::Io`.
pub fn decode_streamed_from(
    reader: &mut dyn std::io::Read,
    path: &Path,
    sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<ArchiveHeader> {
    let damaged = |reason: &str| Error::corrupted_file(path, reason);
    let mut header_bytes = Vec::with_capacity(ARCHIVE_HEADER_BYTES);
    std::io::Read::take(&mut *reader, ARCHIVE_HEADER_BYTES as u64)
        .read_to_end(&mut header_bytes)
        .context(|| format!("reading {}", path.display()))?;
    let header = decode_header(path, &header_bytes)?;
    let mut sequential = Sequential {
        reader: &mut *reader,
        truncated: false,
    };
    let decoded = decode_body(&mut sequential, path, header, sink);
    if sequential.truncated {
        return Err(damaged("the file ends before its header's length (truncated)"));
    }
    let header = decoded?;
    let mut byte = [0u8; 1];
    match reader.read(&mut byte) {
        Ok(0) => Ok(header),
        Ok(_) => Err(damaged("bytes after the header's length (padded)")),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// Decodes the body after `header` (whose length the caller has checked or will check).
fn decode_body(
    reader: &mut dyn BodyReader,
    path: &Path,
    header: ArchiveHeader,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<ArchiveHeader> {
    let damaged = |reason: String| Error::corrupted_file(path, reason);
    let mut source = FileBlocks {
        reader,
        path,
        at: ARCHIVE_HEADER_BYTES as u64,
        end: ARCHIVE_HEADER_BYTES as u64 + header.compressed_len.get(),
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

/// Where a body's bytes are read: `into.len()` bytes at offset `at` of the file, read in
/// order (each read starts where the one before ended).
trait BodyReader {
    fn read_body(&mut self, into: &mut [u8], at: u64) -> std::io::Result<()>;
}

/// A file, read at offsets.
struct AtFile<'a>(&'a dyn crate::storage::StorageFile);

impl BodyReader for AtFile<'_> {
    fn read_body(&mut self, into: &mut [u8], at: u64) -> std::io::Result<()> {
        self.0.read_at(into, at)
    }
}

/// A stream read front to back; notes if it ended early.
struct Sequential<'a> {
    reader: &'a mut dyn std::io::Read,
    truncated: bool,
}

impl BodyReader for Sequential<'_> {
    fn read_body(&mut self, into: &mut [u8], _at: u64) -> std::io::Result<()> {
        let outcome = self.reader.read_exact(into);
        if outcome
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof)
        {
            self.truncated = true;
        }
        outcome
    }
}

/// The blocks of a body read into one reused buffer, checksummed as they are read.
struct FileBlocks<'a> {
    reader: &'a mut dyn BodyReader,
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
    pub(super) fn read(&mut self, len: usize) -> std::result::Result<(), String> {
        if self.data.len() < len {
            self.data.resize(len, 0);
        }
        let into = &mut self.data[..len];
        if let Err(error) = self.reader.read_body(into, self.at) {
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
    pub(super) fn read(&self, mut offset: u64, mut into: &mut [u8]) -> Result<()> {
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

/// Raw bytes each thread compresses per round of [`write_streamed_unless`] with more than one
/// thread: long enough that starting a round's threads costs nothing beside compressing it.
const STREAM_RUN_BYTES: usize = 8 * BLOCK_RAW_MAX_BYTES;

/// Raw bytes a round of [`write_streamed_unless`] on one thread reads and compresses: with no
/// thread to start, a longer run gains nothing and holds more memory (a background checkpoint's
/// base image runs on one thread beside a writer whose memory the budget bounds: runs of 8 MiB
/// held 16 MiB of the heap, read and compressed, at once).
const SINGLE_THREAD_RUN_BYTES: usize = 2 * BLOCK_RAW_MAX_BYTES;

/// Writes `contents` as the archive file `dir/name` (atomically, as
/// [`write_atomically_unless`](super::files::write_atomically_unless)), compressed by up to `threads`
/// threads, with memory for one round of `threads` runs of 8 MiB (one run of 2 MiB on one
/// thread) and their compressed forms instead of the whole contents: a base image of an arena
/// of any size. The file is byte for byte the one [`encode`] returns for the same contents
/// (blocks are independent, and every run is a whole number of blocks). Returns `Ok(true)`,
/// unless `give_up()` says so before a round of blocks (or before the sync): then the
/// temporary file is removed, nothing is published, and `Ok(false)` says so (a close does not
/// wait for a base image the next checkpoint takes).
pub fn write_streamed_unless(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    header: ArchiveHeader,
    contents: &FileContents,
    threads: usize,
    give_up: &dyn Fn() -> bool,
) -> Result<bool> {
    let run_bytes = match threads {
        0 | 1 => SINGLE_THREAD_RUN_BYTES,
        _ => STREAM_RUN_BYTES,
    };
    let runs = StreamRuns { threads, run_bytes };
    write_streamed_in_runs(storage, dir, name, header, contents, runs, give_up)
}

/// How [`write_streamed_unless`] cuts its work: `threads` runs of `run_bytes` a round.
#[derive(Clone, Copy, Debug)]
pub(super) struct StreamRuns {
    pub threads: usize,
    pub run_bytes: usize,
}

pub(super) fn write_streamed_in_runs(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    mut header: ArchiveHeader,
    contents: &FileContents,
    StreamRuns { threads, run_bytes }: StreamRuns,
    give_up: &dyn Fn() -> bool,
) -> Result<bool> {
    assert!(
        run_bytes > 0 && run_bytes.is_multiple_of(BLOCK_RAW_MAX_BYTES),
        "runs are whole blocks"
    );
    let (new_dir, tmp, file) = create_temporary(storage, dir, name)?;
    let mut runs: Vec<Mutex<Run>> = (0..threads.max(1)).map(|_| Mutex::default()).collect();
    let (mut raw_crc, mut compressed_crc) = (0u32, 0u32);
    // The header's place held by zeros until the body is known (then written through the
    // cache), so that the body goes out in whole blocks from offset 0.
    let mut appender = DirectAppender::new(file.as_ref());
    appender
        .append(&[0; ARCHIVE_HEADER_BYTES])
        .context(|| format!("writing {}", tmp.display()))?;
    let mut at = ARCHIVE_HEADER_BYTES as u64;
    let mut offset = 0u64;
    let given_up = || {
        let now = give_up();
        if now {
            // A leftover that cannot be removed now is removed by a later session's archiver.
            let _ = storage.remove_file(&tmp);
        }
        now
    };
    while offset < contents.len_bytes() {
        if given_up() {
            return Ok(false);
        }
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
            appender
                .append(&run.out)
                .context(|| format!("writing {}", tmp.display()))?;
            at += run.out.len() as u64;
            compressed_crc = crc32c::crc32c_append(compressed_crc, &run.out);
            raw_crc = crc32c::crc32c_combine(raw_crc, run.raw_crc, run.len);
        }
        offset += round_len;
    }
    assert_eq!(offset, contents.len_bytes(), "every byte is in one run");
    appender.finish().context(|| format!("writing {}", tmp.display()))?;
    let body_len = at - ARCHIVE_HEADER_BYTES as u64;
    seal(&mut header, offset, raw_crc, body_len, compressed_crc);
    file.write_at(header.as_bytes(), 0)
        .context(|| format!("writing {}", tmp.display()))?;
    if given_up() {
        return Ok(false);
    }
    publish_temporary(storage, dir, name, new_dir, file.as_ref())?;
    Ok(true)
}

/// One thread's share of a round of [`write_streamed_unless`]: its buffers are kept between rounds.
#[derive(Default)]
pub(super) struct Run {
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
pub(super) fn compress_round(contents: &FileContents, runs: &[Mutex<Run>]) -> Result<()> {
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
