//! The control file on disk (`CONTROL`, its bytes in `format::control`): opened read-only by
//! readers and for writing by the store, and written one slot at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zerocopy::IntoBytes;

use crate::error::{IoContext, Result};
use crate::format::control::{CONTROL_FILE_BYTES, CONTROL_FILE_NAME, CONTROL_SLOT_BYTES, Control};
use crate::storage::{Storage, StorageFile};
use crate::Error;

/// The control file, open.
#[derive(Debug)]
pub struct ControlFile {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
}

impl ControlFile {
    /// Creates the control file of a new store with both slots written and synced, whole at
    /// once: written beside its name and renamed into place, so that an open racing the
    /// creation finds no control file or a whole one, never half of one (which it would call
    /// corrupted). The caller syncs the directory.
    pub fn create(storage: &dyn Storage, dir: &Path, control: &Control) -> Result<ControlFile> {
        let path = dir.join(CONTROL_FILE_NAME);
        let mut first = control.clone();
        first.sequence = 0;
        let mut second = control.clone();
        second.sequence = 1;
        let file = write_whole_beside(storage, &path, &first, &second)?;
        Ok(ControlFile { path, file })
    }

    /// Opens the control file read-only (nothing about the store changes; [`write_slot`]
    /// then fails) and returns the newest valid copy.
    ///
    /// [`write_slot`]: ControlFile::write_slot
    pub fn open(storage: &dyn Storage, dir: &Path) -> Result<(ControlFile, Control)> {
        Self::open_with(storage, dir, false)
    }

    /// Opens the control file for a writer and returns the newest valid copy.
    pub fn open_writable(storage: &dyn Storage, dir: &Path) -> Result<(ControlFile, Control)> {
        Self::open_with(storage, dir, true)
    }

    fn open_with(storage: &dyn Storage, dir: &Path, writable: bool) -> Result<(ControlFile, Control)> {
        let path = dir.join(CONTROL_FILE_NAME);
        let opened = if writable {
            storage.open(&path, false)
        } else {
            storage.open_read_only(&path)
        };
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if storage.exists(&dir.join("wal")) && storage.exists(&dir.join("arena")) {
                    if held_by_a_writer(storage, dir) {
                        // A store being made (the control file comes last), or a writer that
                        // puts back a control file deleted under it: not damage.
                        return Err(Error::Locked(format!(
                            "{} is held by another process (one making a store there, or a writer whose {CONTROL_FILE_NAME} it puts back)",
                            dir.display()
                        )));
                    }
                    if super::unfinished::remains(storage, dir)?.is_some() {
                        return Err(Error::NotFound(format!(
                            "no Vellum store at {} (only the remains of a creation that did not finish, which the next create clears)",
                            dir.display()
                        )));
                    }
                    if let Some(found) = Self::open_put_back(storage, dir, writable)? {
                        return Ok(found);
                    }
                    // A finished store's files without the file that makes them a store: the
                    // control file was lost, not never written (it is written last at creation).
                    return Err(Error::corrupted_file(
                        &path,
                        "the control file is missing, but the directory holds a store's log and arena",
                    ));
                }
                return Err(Error::NotFound(format!(
                    "no Vellum store at {} (no {CONTROL_FILE_NAME} file)",
                    dir.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Err(no_store_at_a_file(dir)),
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        let len_bytes = file
            .len()
            .context(|| format!("reading the length of {}", path.display()))?;
        if len_bytes < CONTROL_FILE_BYTES {
            return Err(Error::corrupted_file(
                &path,
                format!("control file is {len_bytes} bytes, expected {CONTROL_FILE_BYTES}"),
            ));
        }
        let mut bytes = vec![0u8; CONTROL_FILE_BYTES as usize];
        file.read_at(&mut bytes, 0)
            .context(|| format!("reading {}", path.display()))?;
        let control = Control::newest(&path, &bytes)?;
        Ok((ControlFile { path, file }, control))
    }

    /// The control file of a put-back that a crash cut short between writing it whole and
    /// renaming it into place ([`ControlFile::relink_if_unlinked`]): `CONTROL.tmp` of full
    /// length with a valid slot, and no `CONTROL`. A writer finishes the put-back (the rename,
    /// the directory's sync) and opens it; a reader reads it where it lies. `None`: there is no
    /// such file (one cut short while it was written is not taken: the store stays refused).
    fn open_put_back(storage: &dyn Storage, dir: &Path, writable: bool) -> Result<Option<(ControlFile, Control)>> {
        let path = dir.join(CONTROL_FILE_NAME);
        let fresh_path = path.with_extension("tmp");
        let Ok(file) = storage.open_read_only(&fresh_path) else {
            return Ok(None);
        };
        if file.len().ok() != Some(CONTROL_FILE_BYTES) {
            return Ok(None);
        }
        let mut bytes = vec![0u8; CONTROL_FILE_BYTES as usize];
        file.read_at(&mut bytes, 0)
            .context(|| format!("reading {}", fresh_path.display()))?;
        let Ok(control) = Control::newest(&fresh_path, &bytes) else {
            return Ok(None);
        };
        if !writable {
            return Ok(Some((ControlFile { path: fresh_path, file }, control)));
        }
        drop(file);
        crate::storage::rename_durably(storage, &fresh_path, &path)?;
        Self::open_with(storage, dir, true).map(Some)
    }

    /// Makes the control file again from `current` (the control data in force) if it was
    /// deleted, or replaced by another file, while the store is open: written whole beside
    /// it, synced, renamed into place, the directory synced; this handle then writes the new
    /// file. Without it every later slot would go to a file no open finds, and the store would
    /// not open again ("the control file is missing"). True if it was made again.
    pub fn relink_if_unlinked(&mut self, storage: &dyn Storage, current: &Control) -> Result<bool> {
        let unlinked = self
            .file
            .is_unlinked()
            .context(|| format!("reading the status of {}", self.path.display()))?;
        if !unlinked {
            return Ok(false);
        }
        let dir = self.path.parent().expect("the control file lies in the store's directory");
        // Both slots: the one in force, and the same data one sequence away in the other.
        let mut other = current.clone();
        other.sequence = if current.sequence == 0 { 1 } else { current.sequence - 1 };
        let file = write_whole_beside(storage, &self.path, &other, current)?;
        storage
            .sync_dir(dir)
            .context(|| format!("syncing directory {}", dir.display()))?;
        self.file = file;
        Ok(true)
    }

    /// Writes `control` (its sequence must be one more than the current) and syncs it.
    pub fn write_slot(&self, control: &Control) -> Result<()> {
        let slot = control.to_slot();
        let offset = (control.sequence % 2) * CONTROL_SLOT_BYTES as u64;
        self.file
            .write_at(slot.as_bytes(), offset)
            .context(|| format!("writing {}", self.path.display()))?;
        self.file
            .sync_data()
            .context(|| format!("syncing {}", self.path.display()))
    }
}

/// True if another holds the directory `dir` locked for writing (a creator or a writer), as
/// far as the storage can tell.
fn held_by_a_writer(storage: &dyn Storage, dir: &Path) -> bool {
    matches!(storage.lock_dir(dir, false), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Writes a control file of the slots `first` then `second` (each synced) at `path` + `.tmp`
/// and renames it onto `path` (not yet durable: the caller syncs the directory); the file,
/// open for writing.
fn write_whole_beside(storage: &dyn Storage, path: &Path, first: &Control, second: &Control) -> Result<Arc<dyn StorageFile>> {
    let fresh_path = path.with_extension("tmp");
    let _ = storage.remove_file(&fresh_path);
    let file = storage
        .open(&fresh_path, true)
        .context(|| format!("creating {}", fresh_path.display()))?;
    let fresh = ControlFile { path: fresh_path.clone(), file };
    fresh.write_slot(first)?;
    fresh.write_slot(second)?;
    storage
        .rename(&fresh_path, path)
        .context(|| format!("renaming {} to {}", fresh_path.display(), path.display()))?;
    Ok(fresh.file)
}

/// The store's path names a file, not a directory: no store there (an open's first look inside
/// it fails with `ENOTDIR`, which was an I/O error, exit 3, "opening …/SETTINGS: Not a
/// directory").
pub(crate) fn no_store_at_a_file(dir: &Path) -> Error {
    Error::NotFound(format!("no Vellum store at {} (a file, not a directory)", dir.display()))
}
