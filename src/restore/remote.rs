//! Reading a remote archive: choosing a generation, checking its chain of log for gaps before
//! anything is downloaded, and downloading what a restore needs into a local directory laid
//! out as a source store (`CONTROL`, `wal/EPOCH`, `archive/`, and each segment that exists
//! only in pieces assembled as a live `wal/` segment), which the local restore then reads with
//! all its checks. Damage and gaps are errors naming the remote object.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::archive::{self, ARCHIVE_DIR, ARCHIVE_HEADER_BYTES, ArchiveHeader};
use crate::format::control::Control;
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
    archive::write_atomically(&storage, dir, crate::format::control::CONTROL_FILE_NAME, &bytes)?;
    ControlFile::open(&storage, dir)
        .map(|(_, control)| control)
        .map_err(|e| rename_error(e, dir, remote, generation))
}

/// The base image a restore to `target` starts from (headers read with ranged downloads).
pub fn choose_base(remote: &Remote, generation: &Generation, target: RestoreTarget) -> Result<(ArchiveHeader, String)> {
    let mut listing = archive::Listing::default();
    for (lsn, name) in &generation.bases {
        let object_name = object(generation, name);
        let head = remote.get_range(&object_name, 0..ARCHIVE_HEADER_BYTES as u64)?;
        let url = PathBuf::from(remote.object_url(&object_name));
        let header = archive::decode_header(&url, &head)?;
        if header.first_lsn.get() != *lsn || header.kind != archive::KIND_BASE_IMAGE {
            return Err(Error::corrupted_file(
                url,
                "a base image whose header does not match its name",
            ));
        }
        listing.bases.push((header, url, 0));
    }
    let base = crate::restore::pick_base(&listing, target, Path::new(&remote.object_url(&generation.name)))?;
    let name = generation.bases[&base.first_lsn.get()].clone();
    Ok((base, name))
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
        write_file(&wal_dir.join("EPOCH"), &bytes)?;
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

/// A directory beside `dest` for scratch work, named after it.
pub fn scratch_beside(dest: &Path, what: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    dest.with_file_name(format!(".{name}.{what}-{}-{nonce}", std::process::id()))
}

/// Restores from the remote archive at `url` (the latest generation, or `generation`) into a
/// new store at `dest`, as a local restore does: same targets, same checks; a failed restore
/// leaves no `dest`. The report's phases start with "download".
pub fn restore_from_url(
    url: &str,
    generation: Option<&str>,
    dest: &Path,
    target: RestoreTarget,
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
    let scratch = scratch_beside(dest, "download");
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(format!("creating {}", scratch.display()), e))?;
    let result = download_source(&remote, &generation, target, &scratch).and_then(|_| {
        let download = started.elapsed();
        let storage: Arc<dyn Storage> = Arc::new(RealStorage::new());
        let mut report = crate::restore::restore_with(storage, &scratch, dest, target)
            .map_err(|e| rename_error(e, &scratch, &remote, &generation))?;
        report.phases.insert(0, ("download", download));
        report.duration = started.elapsed();
        Ok(report)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
