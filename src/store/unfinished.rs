//! The remains of a creation that a crash cut short before it made `CONTROL` (FORMAT.md
//! section 2, "A writer creates a store in this order", steps 2 to 4): a log with no record, an
//! arena with no file, `DOUBLEWRITE`, perhaps `SETTINGS` and `CONTROL.tmp`. No row was ever
//! in them (a store takes its first record only once `CONTROL` makes it one), so the next
//! create clears them and makes the store, and an open says there is no store, where both used
//! to refuse the directory until someone removed them by hand.
//!
//! Remains are recognised if and only if all of these hold; anything else (a store whose
//! `CONTROL` was lost: its log holds at least its first checkpoint's records) is left alone:
//!
//! | entry | what it may be |
//! |---|---|
//! | `CONTROL` | absent |
//! | `wal/` | present, holding only segment 0 (`0000000000000000.wal`), `EPOCH`, spares (`spare-N`) and `*.tmp` files, segment 0 zero past its header |
//! | `arena/` | absent, or an empty directory |
//! | `archive/` | absent |

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::format::control::CONTROL_FILE_NAME;
use crate::format::doublewrite::DOUBLEWRITE_FILE_NAME;
use crate::format::wal::SEGMENT_HEADER_BYTES;
use crate::storage::Storage;
use crate::wal::segment::segment_file_name;
use crate::wal::EPOCH_FILE_NAME;

use super::settings::SETTINGS_FILE_NAME;

/// How much of segment 0 is read at a time to see that it holds no record.
const READ_CHUNK_BYTES: u64 = 1 << 20;

/// The files of the remains of an unfinished creation in `dir` (see the module's table), in
/// the order they are removed; `None`: `dir` holds no such remains.
pub(super) fn remains(storage: &dyn Storage, dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let wal = dir.join("wal");
    if storage.exists(&dir.join(CONTROL_FILE_NAME)) || !storage.exists(&wal) || storage.exists(&dir.join("archive")) {
        return Ok(None);
    }
    let arena = dir.join("arena");
    if storage.exists(&arena) && !list(storage, &arena)?.is_empty() {
        return Ok(None);
    }
    let first_segment = segment_file_name(0);
    let mut files = Vec::new();
    for name in list(storage, &wal)? {
        let known = name == first_segment
            || name == EPOCH_FILE_NAME
            || name.starts_with("spare-")
            || name.ends_with(".tmp");
        if !known {
            return Ok(None);
        }
        if name == first_segment && !holds_no_record(storage, &wal.join(&name))? {
            return Ok(None);
        }
        files.push(wal.join(name));
    }
    files.push(wal);
    if storage.exists(&arena) {
        files.push(arena);
    }
    let beside = [DOUBLEWRITE_FILE_NAME, "DOUBLEWRITE.tmp", "CONTROL.tmp", SETTINGS_FILE_NAME, "SETTINGS.tmp"];
    files.extend(beside.iter().map(|name| dir.join(name)).filter(|path| storage.exists(path)));
    Ok(Some(files))
}

/// Removes the remains of an unfinished creation in `dir`, if that is what it holds (see
/// [`remains`]), and makes their removal durable. True if there were remains.
pub(super) fn clear(storage: &dyn Storage, dir: &Path) -> Result<bool> {
    let Some(files) = remains(storage, dir)? else {
        return Ok(false);
    };
    for path in &files {
        let removed = if path.ends_with("wal") || path.ends_with("arena") {
            storage.remove_dir(path)
        } else {
            storage.remove_file(path)
        };
        removed.context(|| format!("removing {} (the remains of an unfinished creation)", path.display()))?;
    }
    storage
        .sync_dir(dir)
        .context(|| format!("syncing directory {}", dir.display()))?;
    Ok(true)
}

fn list(storage: &dyn Storage, dir: &Path) -> Result<Vec<String>> {
    storage.list(dir).context(|| format!("listing {}", dir.display()))
}

/// True if every byte of the segment at `path` past its header is zero: no record was ever
/// written to it.
fn holds_no_record(storage: &dyn Storage, path: &Path) -> Result<bool> {
    let file = storage
        .open_read_only(path)
        .context(|| format!("opening {}", path.display()))?;
    let len_bytes = file
        .len()
        .context(|| format!("reading the length of {}", path.display()))?;
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let mut chunk = vec![0u8; READ_CHUNK_BYTES as usize];
    while offset < len_bytes {
        let take = (len_bytes - offset).min(READ_CHUNK_BYTES) as usize;
        file.read_at(&mut chunk[..take], offset)
            .context(|| format!("reading {}", path.display()))?;
        if chunk[..take].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        offset += take as u64;
    }
    Ok(true)
}
