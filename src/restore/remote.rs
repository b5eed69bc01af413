//! Reading a remote archive: choosing a generation, checking its chain of log for gaps before
//! anything is downloaded, and downloading what a restore needs into a local directory laid
//! out as a source store (`CONTROL`, `wal/EPOCH`, `archive/`, and each segment that exists
//! only in pieces assembled as a live `wal/` segment), which the local restore then reads with
//! all its checks. Damage and gaps are errors naming the remote object.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::archive::{self, ARCHIVE_DIR, ARCHIVE_HEADER_BYTES, ArchiveHeader};
use crate::format::control::{CONTROL_FILE_BYTES, Control};
use crate::restore::{RestorePhase, Watch};
use crate::ship::remote::Remote;
use crate::ship::{CONTROL, EPOCH, Generation};
use crate::storage::{RealStorage, Storage};
use crate::store::control_file::ControlFile;
use crate::wal::segment::segment_file_name;
use crate::{Error, RestoreReport, RestoreTarget, Result};

/// Lists the remote and picks a generation: `wanted` by name, else the one whose newest object
/// is the most recent (the history shipped to last).
pub fn choose_generation(remote: &Remote, wanted: Option<&str>) -> Result<Generation> {
    let objects = remote.list("")?;
    let mut generations: std::collections::BTreeMap<&str, (Vec<&str>, Option<SystemTime>)> = Default::default();
    for object in &objects {
        let Some((generation, name)) = object.name.split_once('/') else {
            continue;
        };
        let entry = generations.entry(generation).or_default();
        entry.0.push(name);
        entry.1 = entry.1.max(Some(object.modified));
    }
    let chosen = match wanted {
        Some(name) => generations
            .get_key_value(name)
            .ok_or_else(|| Error::NotFound(format!("{} holds no generation {name}", remote.url())))?,
        None => generations
            .iter()
            .filter(|(_, (names, _))| names.contains(&CONTROL))
            .max_by_key(|(name, (_, modified))| (*modified, *name))
            .ok_or_else(|| Error::NotFound(format!("{} holds no shipped archive", remote.url())))?,
    };
    let mut generation = Generation::from_names(chosen.0, chosen.1.0.iter().copied());
    generation.newest_modified = chosen.1.1;
    Ok(generation)
}

fn object(generation: &Generation, name: &str) -> String {
    format!("{}/{name}", generation.name)
}

/// The control data of a generation (its shipped `CONTROL`), written into `dir`.
pub fn fetch_control(remote: &Remote, generation: &Generation, dir: &Path) -> Result<Control> {
    let name = object(generation, CONTROL);
    let bytes = remote.get(&name)?;
    let storage = RealStorage::new();
    let written = archive::write_atomically_unless(
        &storage,
        dir,
        crate::format::control::CONTROL_FILE_NAME,
        &bytes,
        &|| false,
    )?;
    assert!(written, "nothing gives the write up");
    ControlFile::open(&storage, dir)
        .map(|(_, control)| control)
        .map_err(|e| rename_error(e, dir, remote, generation))
}

/// The base image a restore to `target` starts from: the newest that fits, its header read
/// with a ranged download, newest first until one fits (a restore to the latest point reads
/// one header, not one per base image).
pub fn choose_base(remote: &Remote, generation: &Generation, target: RestoreTarget) -> Result<(ArchiveHeader, String)> {
    let listed = |lsn: u64, name: &str| -> Result<archive::Listing> {
        let object_name = object(generation, name);
        let head = remote.get_range(&object_name, 0..ARCHIVE_HEADER_BYTES as u64)?;
        let url = PathBuf::from(remote.object_url(&object_name));
        let header = archive::decode_header(&url, &head)?;
        if header.first_lsn.get() != lsn || header.kind != archive::KIND_BASE_IMAGE {
            return Err(Error::corrupted_file(
                url,
                "a base image whose header does not match its name",
            ));
        }
        let mut listing = archive::Listing::default();
        listing.bases.push((header, url, 0));
        Ok(listing)
    };
    let src = PathBuf::from(remote.object_url(&generation.name));
    for (lsn, name) in generation.bases.iter().rev() {
        if let Ok(base) = crate::restore::pick_base(&listed(*lsn, name)?, target, &src) {
            return Ok((base, name.clone()));
        }
    }
    // None fits: the error names the oldest (or says there is none).
    let oldest = match generation.bases.iter().next() {
        Some((lsn, name)) => listed(*lsn, name)?,
        None => archive::Listing::default(),
    };
    let base = crate::restore::pick_base(&oldest, target, &src)?;
    unreachable!(
        "the oldest base image {} fits when no base image did",
        base.first_lsn.get()
    )
}

/// Checks that the log from segment `first` reaches the newest log the generation holds
/// without a gap; the error names the first missing object.
pub fn check_chain(
    remote: &Remote,
    generation: &Generation,
    first: u64,
    segment_bytes: u64,
) -> Result<(u64, Vec<u64>)> {
    let (end, numbers) = generation.log_chain(first, segment_bytes);
    let last = generation.last_segment().unwrap_or(first).max(first);
    let reached = numbers.last().copied();
    let gap_in_pieces = reached.is_some_and(|n| {
        generation
            .pieces
            .get(&n)
            .is_some_and(|pieces| pieces.iter().any(|(from, _, _)| *from > end))
    });
    let missing = match reached {
        None => Some(first),
        Some(n) if n < last || gap_in_pieces => Some(if end % segment_bytes == 0 {
            end / segment_bytes
        } else {
            n
        }),
        Some(_) => None,
    };
    if let Some(n) = missing {
        let what = if end % segment_bytes == 0 {
            format!(
                "log segment {n} is missing from the remote archive (no {} and no piece from its start)",
                archive::wal_file_name(n)
            )
        } else {
            format!("log segment {n} is missing a piece from LSN {end} in the remote archive")
        };
        return Err(Error::corrupted_file(
            remote.object_url(&object(generation, &archive::wal_file_name(n))),
            what,
        ));
    }
    Ok((end, numbers))
}

/// What a download fetched (all of it reported by the tests; objects and bytes by restores).
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub struct Downloaded {
    pub control: Control,
    pub base_lsn: u64,
    pub objects: u64,
    pub bytes: u64,
    /// Where the downloaded log ends (the remote's shipped point).
    pub end_lsn: u64,
    /// The segments downloaded, in order.
    pub segments: Vec<u64>,
}

/// Downloads into `dir` (which must exist) everything a restore to `target` needs, as a source
/// store: `CONTROL`, `wal/EPOCH`, the base image and whole segments in `archive/`, segments
/// shipped in pieces as live `wal/` segments. The chain is checked first.
pub fn download_source(
    remote: &Remote,
    generation: &Generation,
    target: RestoreTarget,
    dir: &Path,
) -> Result<Downloaded> {
    let control = fetch_control(remote, generation, dir)?;
    let segment_bytes = control.segment_size_bytes;
    let (base, base_name) = choose_base(remote, generation, target)?;
    let first = base.truncate_lsn.get() / segment_bytes;
    let (end, numbers) = check_chain(remote, generation, first, segment_bytes)?;
    let archive_dir = dir.join(ARCHIVE_DIR);
    let wal_dir = dir.join("wal");
    for d in [&archive_dir, &wal_dir] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
    }
    let mut fetched = Downloaded {
        control: control.clone(),
        base_lsn: base.first_lsn.get(),
        objects: 0,
        bytes: 0,
        end_lsn: end,
        segments: numbers.clone(),
    };
    if generation.has_epoch {
        let bytes = remote.get(&object(generation, EPOCH))?;
        write_file(&wal_dir.join("EPOCH"), &crate::wal::epoch_without_horizon(&bytes))?;
    }
    let base_path = archive_dir.join(&base_name);
    fetched.bytes += remote.download_to(&object(generation, &base_name), &base_path)?;
    fetched.objects += 1;
    let whole: Vec<String> = numbers
        .iter()
        .filter_map(|n| generation.segments.get(n))
        .map(|name| object(generation, name))
        .collect();
    remote.get_each(&whole, |name, bytes| {
        let url = PathBuf::from(remote.object_url(name));
        check_whole_file(&url, &bytes)?;
        fetched.bytes += bytes.len() as u64;
        fetched.objects += 1;
        let file_name = name.rsplit('/').next().unwrap_or(name);
        write_file(&archive_dir.join(file_name), &bytes)
    })?;
    for &n in numbers.iter().filter(|n| !generation.segments.contains_key(n)) {
        let (bytes, count, size) = assemble_pieces(remote, generation, &control, n, None)?;
        fetched.objects += count;
        fetched.bytes += size;
        write_file(&wal_dir.join(segment_file_name(n)), &bytes)?;
    }
    Ok(fetched)
}

/// Checks what can be checked of an archive file without decoding it: its header, and that its
/// length is the header's (the rest is checked as it is decoded).
fn check_whole_file(url: &Path, bytes: &[u8]) -> Result<ArchiveHeader> {
    let header = archive::decode_header(url, bytes)?;
    if bytes.len() as u64 != ARCHIVE_HEADER_BYTES as u64 + header.compressed_len.get() {
        return Err(Error::corrupted_file(
            url,
            "object length does not match its header (truncated or padded)",
        ));
    }
    Ok(header)
}

/// Segment `n` of `segment_bytes` assembled from its piece chain (zeros past its end), over
/// `onto` if given (a copy that holds the earlier pieces already): the bytes, how many objects
/// and bytes were downloaded.
pub fn assemble_pieces(
    remote: &Remote,
    generation: &Generation,
    control: &Control,
    n: u64,
    onto: Option<(Vec<u8>, u64)>,
) -> Result<(Vec<u8>, u64, u64)> {
    let segment_bytes = control.segment_size_bytes;
    let base = n * segment_bytes;
    let (chain, _) = generation.piece_chain(n, segment_bytes);
    let (mut segment, have_to) = onto.unwrap_or_else(|| (vec![0u8; segment_bytes as usize], base));
    let names: Vec<String> = chain
        .iter()
        .filter(|(_, to, _)| *to > have_to)
        .map(|(_, _, name)| object(generation, name))
        .collect();
    let (mut count, mut size) = (0, 0);
    let mut at = 0;
    let wanted: Vec<&(u64, u64, String)> = chain.iter().filter(|(_, to, _)| *to > have_to).collect();
    remote.get_each(&names, |name, bytes| {
        let (from, to, _) = wanted[at];
        at += 1;
        let url = PathBuf::from(remote.object_url(name));
        let file = archive::decode(&url, &bytes)?;
        let h = &file.header;
        let fits = h.kind == archive::KIND_WAL_SEGMENT
            && h.segment_no.get() == n
            && h.first_lsn.get() == *from
            && h.end_lsn.get() == *to
            && file.contents.len() as u64 == to - from
            && h.store_id.get() == control.store_id
            && h.timeline.get() == control.timeline
            && h.segment_size_bytes.get() == segment_bytes;
        if !fits {
            return Err(Error::corrupted_file(
                url,
                "a log piece whose header does not match its name or store",
            ));
        }
        let offset = (from - base) as usize;
        segment[offset..offset + file.contents.len()].copy_from_slice(&file.contents);
        count += 1;
        size += bytes.len() as u64;
        Ok(())
    })?;
    Ok((segment, count, size))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Names the remote object instead of the downloaded copy in an error about a file of `dir`.
pub fn rename_error(error: Error, dir: &Path, remote: &Remote, generation: &Generation) -> Error {
    match error {
        Error::Corrupted {
            lsn,
            file: Some(file),
            reason,
        } if file.starts_with(dir) => {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let remote_name = match name.as_str() {
                n if n.ends_with(".wal") => format!("{} (assembled from its pieces)", n),
                n => n.to_string(),
            };
            Error::Corrupted {
                lsn,
                file: Some(PathBuf::from(remote.object_url(&object(generation, &remote_name)))),
                reason,
            }
        }
        other => other,
    }
}

/// How many chunks of a base image's download wait for the decoder (chunks are the HTTP
/// client's, kilobytes each).
const BASE_CHUNKS_AHEAD: usize = 1024;
/// How many downloaded segments wait for the decoder, besides those still downloading.
const SEGMENTS_AHEAD: usize = 2;

/// Restores from the remote archive at `url` (the latest generation, or `generation`) into a
/// new store at `dest`, as a local restore does: same targets, same checks; a failed restore
/// leaves no `dest`. Nothing is downloaded to a file first: the base image is decoded into the
/// arena as it arrives, and the log segments download a few ahead while it and they are
/// decoded. The report's phases start with "download" (listing, control, base image headers,
/// the chain check); "stage arena" and "stage log" include the rest of the download.
pub(crate) fn restore_from_url(
    url: &str,
    generation: Option<&str>,
    dest: &Path,
    target: RestoreTarget,
    watch: &Watch,
) -> Result<RestoreReport> {
    if dest.exists() {
        return Err(Error::InvalidArgument(format!(
            "restore destination {} already exists",
            dest.display()
        )));
    }
    let started = Instant::now();
    let remote = Remote::new(url)?;
    let generation = choose_generation(&remote, generation)?;
    let storage: Arc<dyn Storage> = Arc::new(RealStorage::new());
    crate::restore::restore_staged(&storage, dest, target, started, watch, |working, staging, report| {
        let mut clock = started;
        let (control, base, base_name) = plan(&remote, &generation, target)?;
        report.phase_done("download", &mut clock);
        let segment_bytes = control.segment_size_bytes;
        let (_, numbers) = generation.log_chain(base.truncate_lsn.get() / segment_bytes, segment_bytes);
        let log_bytes = numbers.len() as u64 * segment_bytes;
        crate::restore::room_for_the_restore(working, staging, &base, &control, target, log_bytes)?;
        stage_streamed(
            working,
            watch,
            &remote,
            &generation,
            staging,
            (&control, &base, &base_name),
            report,
        )?;
        Ok((control, base))
    })
}

/// The control data of a generation, the base image a restore to `target` starts from, and
/// its object name; the chain of log after that base image checked for gaps.
fn plan(remote: &Remote, generation: &Generation, target: RestoreTarget) -> Result<(Control, ArchiveHeader, String)> {
    let name = object(generation, CONTROL);
    let bytes = remote.get(&name)?;
    let url = PathBuf::from(remote.object_url(&name));
    if (bytes.len() as u64) < CONTROL_FILE_BYTES {
        return Err(Error::corrupted_file(
            url,
            format!("control file is {} bytes, expected {CONTROL_FILE_BYTES}", bytes.len()),
        ));
    }
    let control = Control::newest(&url, &bytes[..CONTROL_FILE_BYTES as usize])?;
    let (base, base_name) = choose_base(remote, generation, target)?;
    let segment_bytes = control.segment_size_bytes;
    check_chain(
        remote,
        generation,
        base.truncate_lsn.get() / segment_bytes,
        segment_bytes,
    )?;
    Ok((control, base, base_name))
}

/// Stages the arena and the log of a restore from the bucket: the base image streamed from
/// one thread and the whole segments from another, both decoded here as they arrive; then the
/// segments that exist only in pieces, and the epoch.
fn stage_streamed(
    storage: &Arc<dyn Storage>,
    watch: &Watch,
    remote: &Remote,
    generation: &Generation,
    staging: &Path,
    (control, base, base_name): (&Control, &ArchiveHeader, &str),
    report: &mut RestoreReport,
) -> Result<()> {
    let segment_bytes = control.segment_size_bytes;
    let (_, numbers) = generation.log_chain(base.truncate_lsn.get() / segment_bytes, segment_bytes);
    let whole: Vec<(u64, String)> = numbers
        .iter()
        .filter_map(|n| generation.segments.get(n).map(|name| (*n, object(generation, name))))
        .collect();
    let names: Vec<String> = whole.iter().map(|(_, name)| name.clone()).collect();
    let (base_remote, log_remote) = (remote.twin()?, remote.twin()?);
    let base_object = object(generation, base_name);
    let url = PathBuf::from(remote.object_url(&base_object));
    let mut clock = Instant::now();
    std::thread::scope(|scope| {
        let (chunks, chunks_in) = std::sync::mpsc::sync_channel(BASE_CHUNKS_AHEAD);
        let (segments, segments_in) = std::sync::mpsc::sync_channel(SEGMENTS_AHEAD);
        scope.spawn(move || base_remote.stream_to(&base_object, &chunks));
        scope.spawn(move || {
            let sent = log_remote.get_each(&names, |_, bytes| {
                segments
                    .send(Ok(bytes))
                    .map_err(|_| Error::InvalidArgument("the restore stopped".into()))
            });
            if let Err(error) = sent {
                let _ = segments.send(Err(error));
            }
        });
        let mut reader = Chunks {
            from: chunks_in,
            chunk: Vec::new(),
            at: 0,
            failure: None,
        };
        let staged = crate::restore::stage_arena_from(storage, watch, staging, base, control, &url, |sink| {
            archive::decode_streamed_from(&mut reader, &url, sink)
        });
        // A failed download ends the stream early: its error, not the truncation, is the news.
        staged.map_err(|e| reader.failure.take().unwrap_or(e))?;
        drop(reader);
        report.phase_done("stage arena", &mut clock);
        watch.enter(RestorePhase::StageLog, whole.len() as u64 * segment_bytes);
        let mut received = 0;
        for ((n, name), bytes) in whole.iter().zip(segments_in.iter()) {
            stage_segment(storage, staging, &remote.object_url(name), *n, segment_bytes, &bytes?)?;
            received += 1;
            watch.add(segment_bytes);
        }
        assert_eq!(received, whole.len(), "every segment is sent or an error is");
        report.segments_from_archive += received as u64;
        Ok::<(), Error>(())
    })?;
    let wal_dir = staging.join("wal");
    for &n in numbers.iter().filter(|n| !generation.segments.contains_key(n)) {
        let (bytes, _, _) = assemble_pieces(remote, generation, control, n, None)?;
        crate::restore::write_scratch_file(storage, &wal_dir.join(segment_file_name(n)), &bytes)?;
        report.segments_live += 1;
    }
    if generation.has_epoch {
        let bytes = remote.get(&object(generation, EPOCH))?;
        let bytes = crate::wal::epoch_without_horizon(&bytes);
        crate::restore::write_scratch_file(storage, &wal_dir.join("EPOCH"), &bytes)?;
    }
    report.phase_done("stage log", &mut clock);
    Ok(())
}

/// Decodes the downloaded archived segment `n` into the staged log, with the checks of a local
/// restore (and the length of the object).
fn stage_segment(
    storage: &Arc<dyn Storage>,
    staging: &Path,
    url: &str,
    n: u64,
    segment_bytes: u64,
    bytes: &[u8],
) -> Result<()> {
    let url = Path::new(url);
    check_whole_file(url, bytes)?;
    let file = archive::decode(url, bytes)?;
    if file.contents.len() as u64 != segment_bytes || file.header.segment_no.get() != n {
        return Err(Error::corrupted_file(
            url,
            "archived segment has the wrong size or number",
        ));
    }
    let path = staging.join("wal").join(segment_file_name(n));
    crate::restore::write_scratch_file(storage, &path, &file.contents).map(|_| ())
}

/// A download read as it arrives: the chunks another thread sends, then the end (the sender
/// gone). A failed download's error is kept for the caller, the read failing meanwhile.
struct Chunks {
    from: std::sync::mpsc::Receiver<Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    failure: Option<Error>,
}

impl std::io::Read for Chunks {
    fn read(&mut self, into: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.failure.is_some() {
                return Err(std::io::Error::other("the download failed"));
            }
            match self.from.recv() {
                Ok(Ok(chunk)) => (self.chunk, self.at) = (chunk, 0),
                Ok(Err(error)) => {
                    let message = error.to_string();
                    self.failure = Some(error);
                    return Err(std::io::Error::other(message));
                }
                Err(std::sync::mpsc::RecvError) => return Ok(0),
            }
        }
        let n = into.len().min(self.chunk.len() - self.at);
        into[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
