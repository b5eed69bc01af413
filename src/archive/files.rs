//! The archive directory: files written atomically, read whole, listed and verified.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::error::{IoContext, Result};
use crate::format::archive::*;
use crate::storage::{AlignedBlocks, DIRECT_BLOCK_BYTES, Storage, StorageFile};

use super::streaming::decode_streamed;

/// How much of a file [`write_atomically_unless`] writes before it asks again.
const GIVE_UP_CHUNK_BYTES: usize = 1 << 20;

/// Writes `bytes` as `dir/name` atomically (temporary file, sync, rename, directory sync) and
/// returns `Ok(true)`, unless `give_up()` says so before the sync (it is asked before each MiB
/// written): then the temporary file is removed, nothing is published, and `Ok(false)` says
/// so. (A close does not wait for the sync of an archive file its next session writes again.)
pub fn write_atomically_unless(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    give_up: &dyn Fn() -> bool,
) -> Result<bool> {
    match stage_unless(storage, dir, name, bytes, give_up)? {
        Some(staged) => staged.publish().map(|()| true),
        None => Ok(false),
    }
}

/// A file written and synced under its temporary name `dir/name.tmp`, not yet in place:
/// [`Staged::publish`] renames it to `dir/name`; dropped unpublished, it is removed (a leftover
/// that cannot be removed then is removed by a later session's archiver: `.tmp` files are never
/// read as archive files). Files staged side by side are published in the order they must
/// appear.
pub struct Staged<'a> {
    storage: &'a dyn Storage,
    dir: PathBuf,
    name: String,
    new_dir: bool,
    published: bool,
}

impl Staged<'_> {
    /// Renames the file into place and syncs the directory (and its parent if it was made).
    pub fn publish(mut self) -> Result<()> {
        rename_into_place(self.storage, &self.dir, &self.name, self.new_dir)?;
        self.published = true;
        Ok(())
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.published {
            let _ = self.storage.remove_file(&self.dir.join(format!("{}.tmp", self.name)));
        }
    }
}

/// The first half of [`write_atomically_unless`]: `bytes` written and synced as `dir/name.tmp`;
/// `Ok(None)` (and no file) if `give_up()` says so first.
pub fn stage_unless<'a>(
    storage: &'a dyn Storage,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    give_up: &dyn Fn() -> bool,
) -> Result<Option<Staged<'a>>> {
    let (new_dir, tmp, file) = create_temporary(storage, dir, name)?;
    let staged = Staged {
        storage,
        dir: dir.to_path_buf(),
        name: name.to_string(),
        new_dir,
        published: false,
    };
    // In chunks, asking between them: a write waits for the disk once the kernel holds enough
    // dirty pages (or, direct, for each chunk).
    let mut chunks = bytes.chunks(GIVE_UP_CHUNK_BYTES);
    let mut writer = DirectAppender::new(file.as_ref());
    loop {
        if give_up() {
            drop(writer);
            drop(file);
            return Ok(None); // `staged` removes the temporary file
        }
        let Some(chunk) = chunks.next() else { break };
        writer.append(chunk).context(|| format!("writing {}", tmp.display()))?;
    }
    writer.finish().context(|| format!("writing {}", tmp.display()))?;
    file.sync_data().context(|| format!("syncing {}", tmp.display()))?;
    Ok(Some(staged))
}

/// Writes a file front to back past the page cache where the file system allows
/// ([`StorageFile::write_direct`]): an archive file is written once and read only by a
/// restore, and its pages in the cache would only push out the store's (copying them in was a
/// fifth of a bulk load's CPU here). Bytes gather in an aligned staging buffer and go out a
/// megabyte of whole blocks at a time; the last partial block goes through the cache at
/// [`DirectAppender::finish`], as does everything where the file refuses direct writes. No
/// block is written both ways by the appender (a base image's header is written over its first
/// block through the cache afterwards: the kernel reads that block back first).
///
/// [`StorageFile::write_direct`]: crate::storage::StorageFile::write_direct
pub(super) struct DirectAppender<'a> {
    file: &'a dyn StorageFile,
    /// Made at the first append that goes direct.
    staging: Option<AlignedBlocks>,
    /// Bytes of `staging` filled.
    filled: usize,
    /// The file offset of `staging[0]` (or of the next byte, through the cache).
    start: u64,
    /// False once the file refused a direct write: everything goes through the cache.
    direct: bool,
}

/// How much a [`DirectAppender`] gathers before it writes.
const STAGING_BYTES: usize = 1 << 20;

impl<'a> DirectAppender<'a> {
    /// An appender writing `file` from offset 0.
    pub(super) fn new(file: &'a dyn StorageFile) -> DirectAppender<'a> {
        DirectAppender {
            file,
            staging: None,
            filled: 0,
            start: 0,
            direct: true,
        }
    }

    /// Appends `bytes` to what was written.
    pub(super) fn append(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            if !self.direct {
                self.file.write_at(bytes, self.start)?;
                self.start += bytes.len() as u64;
                return Ok(());
            }
            let staging = self.staging.get_or_insert_with(|| AlignedBlocks::new(STAGING_BYTES));
            let n = (STAGING_BYTES - self.filled).min(bytes.len());
            staging.as_mut_slice()[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == STAGING_BYTES {
                self.write_blocks()?;
            }
        }
        Ok(())
    }

    /// Writes the whole blocks gathered (direct, or through the cache once refused) and keeps
    /// the partial last block at the front of the staging buffer.
    fn write_blocks(&mut self) -> std::io::Result<()> {
        let block = DIRECT_BLOCK_BYTES as usize;
        let whole = self.filled / block * block;
        let Some(staging) = self.staging.as_mut() else { return Ok(()) };
        if whole == 0 {
            return Ok(());
        }
        assert!(self.start.is_multiple_of(DIRECT_BLOCK_BYTES), "direct writes start on a block");
        if !self.file.write_direct(&staging.as_slice()[..whole], self.start)? {
            // Refused: all that is gathered goes through the cache, and so does the rest.
            self.direct = false;
            self.file.write_at(&staging.as_slice()[..self.filled], self.start)?;
            self.start += self.filled as u64;
            self.filled = 0;
            return Ok(());
        }
        staging.as_mut_slice().copy_within(whole..self.filled, 0);
        self.start += whole as u64;
        self.filled -= whole;
        Ok(())
    }

    /// Writes what is left (the last partial block through the cache).
    pub(super) fn finish(mut self) -> std::io::Result<()> {
        self.write_blocks()?;
        if let Some(staging) = &self.staging
            && self.filled > 0
        {
            self.file.write_at(&staging.as_slice()[..self.filled], self.start)?;
        }
        Ok(())
    }
}

/// Creates `dir` (if missing; says so in the first value) and an empty `dir/name.tmp`.
pub(super) fn create_temporary(
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
pub(super) fn publish_temporary(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    new_dir: bool,
    file: &dyn crate::storage::StorageFile,
) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    file.sync_data().context(|| format!("syncing {}", tmp.display()))?;
    rename_into_place(storage, dir, name, new_dir)
}

/// Renames the synced `dir/name.tmp` to `dir/name` and syncs the directory (and its parent if
/// `new_dir`).
fn rename_into_place(storage: &dyn Storage, dir: &Path, name: &str, new_dir: bool) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    crate::storage::rename_durably(storage, &tmp, &path)?;
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

pub(super) fn open_to_read(storage: &dyn Storage, path: &Path) -> Result<std::sync::Arc<dyn crate::storage::StorageFile>> {
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
pub(super) fn probe(file: &dyn crate::storage::StorageFile) -> std::io::Result<()> {
    if file.len()? == 0 {
        return Ok(());
    }
    file.read_at(&mut [0u8; 1], 0)
}

/// What an archive file's name says it is.
pub(super) enum ArchiveName {
    Segment(u64),
    Base,
}

pub(super) fn archive_name_kind(name: &str) -> Option<ArchiveName> {
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

