//! A storage adapter for scratch files: under one directory, syncs do nothing.
//!
//! A restore replays a copy of the log that it deletes before the restored store appears, and
//! a crash before then leaves only a staging directory that no store ever opens. Syncing that
//! copy (recovery syncs every segment it read; checkpoints sync the log they append to) would
//! make the device write every byte of it for nothing. Everything outside the directory, and
//! every operation other than a sync, goes to the wrapped storage unchanged.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Mapping, Storage, StorageFile};

/// `inner`, except that files under `dir` (and `dir` itself) are never synced.
#[derive(Debug)]
pub struct ScratchUnder {
    inner: Arc<dyn Storage>,
    dir: PathBuf,
}

impl ScratchUnder {
    /// `inner`, with syncs of `dir` and of everything under it skipped.
    pub fn new(inner: Arc<dyn Storage>, dir: &Path) -> ScratchUnder {
        ScratchUnder {
            inner,
            dir: dir.to_path_buf(),
        }
    }

    fn is_scratch(&self, path: &Path) -> bool {
        path.starts_with(&self.dir)
    }
}

impl Storage for ScratchUnder {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = self.inner.open(path, create)?;
        Ok(if self.is_scratch(path) {
            Arc::new(ScratchFile(file))
        } else {
            file
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir(path)
    }

    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if self.is_scratch(path) {
            return Ok(());
        }
        self.inner.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }

    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.copy_file(from, to)
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.inner.lock_exclusive(path)
    }
}

/// A scratch file: every operation but the syncs goes to the wrapped file.
#[derive(Debug)]
struct ScratchFile(Arc<dyn StorageFile>);

impl StorageFile for ScratchFile {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.0.set_len(len_bytes)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn start_writeback(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<bool> {
        self.0.allocate(len_bytes)
    }

    fn map_shared(&self) -> io::Result<Mapping> {
        self.0.map_shared()
    }

    fn map_private(&self) -> io::Result<Mapping> {
        self.0.map_private()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;

    #[test]
    fn only_files_under_the_scratch_directory_skip_their_syncs() {
        let sim = SimStorage::new(7);
        let storage = ScratchUnder::new(Arc::new(sim.clone()), Path::new("/stage/wal"));
        for dir in ["/stage/wal", "/stage/arena"] {
            storage.create_dir_all(Path::new(dir)).unwrap();
            storage.sync_dir(Path::new(dir)).unwrap();
        }
        sim.sync_dir(Path::new("/stage")).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        let (kept, scratch) = (Path::new("/stage/arena/a"), Path::new("/stage/wal/0"));
        for path in [kept, scratch] {
            let file = storage.open(path, true).unwrap();
            file.write_at(&[7; 4096], 0).unwrap();
            file.sync_data().unwrap();
            storage.sync_dir(path.parent().unwrap()).unwrap();
        }
        sim.crash_now();
        let disk = sim.reboot();
        let mut bytes = [0u8; 4096];
        disk.open(kept, false).unwrap().read_at(&mut bytes, 0).unwrap();
        assert!(bytes == [7; 4096], "a file outside the scratch directory is synced");
        assert!(
            !disk.exists(scratch),
            "a scratch file was never synced, nor its directory entry"
        );
    }
}
