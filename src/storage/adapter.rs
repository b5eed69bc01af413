//! A storage adapter: the wrapped storage, with some writes changed under a rule.
//!
//! - **Scratch files** ([`Adapted::scratch_under`]): under one directory, syncs do nothing. A
//!   restore replays a copy of the log that it deletes before the restored store appears, and a
//!   crash before then leaves only a staging directory that no store ever opens. Syncing that
//!   copy (recovery syncs every segment it read; checkpoints sync the log they append to) would
//!   make the device write every byte of it for nothing.
//! - **Buffered only** ([`Adapted::buffered_only`], `Options::direct_io = false`): files refuse
//!   [`StorageFile::write_direct`] and [`StorageFile::write_durable_direct`], so the log flushes
//!   with `pwrite` + `fdatasync` and archive files go through the page cache, as on a file
//!   system without direct I/O.
//! - **Stoppable** ([`Adapted::stoppable`]): once its flag is set, every operation (a read, a
//!   write, a sync, an open, a listing…) fails with an error saying so, and
//!   [`Storage::interrupted`] is true, which long in-memory loops check. A restore that its
//!   watcher stops (`restore_watched`) ends at the next file operation of its worker, and removes
//!   its staging directory through the wrapped storage.
//!
//! Every other operation goes to the wrapped storage unchanged.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Mapping, Storage, StorageFile};

/// `inner`, with the rule of its constructor.
#[derive(Debug)]
pub struct Adapted {
    inner: Arc<dyn Storage>,
    /// Files under this directory (and the directory itself) are never synced.
    scratch_dir: Option<PathBuf>,
    /// Files take direct writes where `inner`'s do.
    direct_io: bool,
    /// Once set, every operation fails (see [`Adapted::stoppable`]).
    stop: Option<Arc<AtomicBool>>,
}

impl Adapted {
    /// `inner`, with syncs of `dir` and of everything under it skipped.
    pub fn scratch_under(inner: Arc<dyn Storage>, dir: &Path) -> Adapted {
        Adapted {
            inner,
            scratch_dir: Some(dir.to_path_buf()),
            direct_io: true,
            stop: None,
        }
    }

    /// `inner`, whose files take no direct writes.
    pub fn buffered_only(inner: Arc<dyn Storage>) -> Adapted {
        Adapted {
            inner,
            scratch_dir: None,
            direct_io: false,
            stop: None,
        }
    }

    /// `inner`, whose every operation fails once `stop` is set (and whose files' too).
    pub fn stoppable(inner: Arc<dyn Storage>, stop: Arc<AtomicBool>) -> Adapted {
        Adapted {
            inner,
            scratch_dir: None,
            direct_io: true,
            stop: Some(stop),
        }
    }

    fn check(&self) -> io::Result<()> {
        check_stop(self.stop.as_ref())
    }

    fn is_scratch(&self, path: &Path) -> bool {
        self.scratch_dir.as_ref().is_some_and(|dir| path.starts_with(dir))
    }

    fn adapt(&self, path: &Path, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        let scratch = self.is_scratch(path);
        if !scratch && self.direct_io && self.stop.is_none() {
            return file;
        }
        Arc::new(AdaptedFile {
            inner: file,
            scratch,
            direct_io: self.direct_io,
            stop: self.stop.clone(),
        })
    }
}

/// `Err` once `stop` is set.
fn check_stop(stop: Option<&Arc<AtomicBool>>) -> io::Result<()> {
    if stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
        return Err(io::Error::other("stopped by its watcher"));
    }
    Ok(())
}

impl Storage for Adapted {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.create_dir_all(path)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        self.check()?;
        Ok(self.adapt(path, self.inner.open(path, create)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.remove_dir(path)
    }

    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        self.check()?;
        self.inner.list(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.check()?;
        if self.is_scratch(path) {
            return Ok(());
        }
        self.inner.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }

    fn modified(&self, path: &Path) -> Option<std::time::SystemTime> {
        self.inner.modified(path)
    }

    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check()?;
        self.inner.copy_file(from, to)
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.check()?;
        self.inner.lock_exclusive(path)
    }

    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.check()?;
        self.inner.lock_shared(path)
    }

    fn lock_dir(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.check()?;
        self.inner.lock_dir(path, exclusive)
    }

    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.check()?;
        let file = self.inner.open_read_only(path)?;
        // Read-only files take no writes of any kind: only a stop to adapt them to.
        Ok(match &self.stop {
            None => file,
            Some(stop) => Arc::new(AdaptedFile {
                inner: file,
                scratch: false,
                direct_io: true,
                stop: Some(stop.clone()),
            }),
        })
    }

    fn available_bytes(&self, path: &Path) -> io::Result<Option<u64>> {
        self.check()?;
        self.inner.available_bytes(path)
    }

    fn file_size_limit_bytes(&self) -> Option<u64> {
        self.inner.file_size_limit_bytes()
    }

    fn resolve_dir(&self, path: &Path) -> io::Result<std::path::PathBuf> {
        self.inner.resolve_dir(path)
    }

    fn watch_removals(&self, dirs: &[(&Path, super::NameFilter)]) -> Option<Box<dyn super::RemovalWatch>> {
        self.inner.watch_removals(dirs)
    }

    fn interrupted(&self) -> bool {
        self.check().is_err() || self.inner.interrupted()
    }
}

/// A file of [`Adapted`]: syncs skipped if it is scratch, direct writes refused unless allowed,
/// every operation refused once stopped; every other operation goes to the wrapped file.
#[derive(Debug)]
struct AdaptedFile {
    inner: Arc<dyn StorageFile>,
    scratch: bool,
    direct_io: bool,
    stop: Option<Arc<AtomicBool>>,
}

impl AdaptedFile {
    fn check(&self) -> io::Result<()> {
        check_stop(self.stop.as_ref())
    }
}

impl StorageFile for AdaptedFile {
    fn len(&self) -> io::Result<u64> {
        self.check()?;
        self.inner.len()
    }

    fn is_unlinked(&self) -> io::Result<bool> {
        self.check()?;
        self.inner.is_unlinked()
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.check()?;
        self.inner.set_len(len_bytes)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check()?;
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        self.inner.write_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        if self.scratch {
            return Ok(());
        }
        self.inner.sync_data()
    }

    fn write_durable_direct(&self, blocks: &[u8], offset: u64) -> io::Result<bool> {
        self.check()?;
        // A scratch file's writes need not be durable: through the cache, never synced.
        if self.scratch || !self.direct_io {
            return Ok(false);
        }
        self.inner.write_durable_direct(blocks, offset)
    }

    fn write_direct(&self, blocks: &[u8], offset: u64) -> io::Result<bool> {
        self.check()?;
        if !self.direct_io {
            return Ok(false);
        }
        self.inner.write_direct(blocks, offset)
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check()?;
        if self.scratch {
            return Ok(());
        }
        self.inner.start_writeback(offset, len)
    }

    fn will_need(&self, offset: u64, len: u64) {
        self.inner.will_need(offset, len)
    }

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        self.check()?;
        self.inner.read_cached(buf, offset)
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<bool> {
        self.check()?;
        self.inner.allocate(len_bytes)
    }

    fn map_shared(&self) -> io::Result<Mapping> {
        self.check()?;
        self.inner.map_shared()
    }

    fn map_private(&self) -> io::Result<Mapping> {
        self.check()?;
        self.inner.map_private()
    }

    fn map_private_detached(&self) -> io::Result<Mapping> {
        self.check()?;
        self.inner.map_private_detached()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{DIRECT_BLOCK_BYTES, SimConfig, SimStorage};

    #[test]
    fn only_files_under_the_scratch_directory_skip_their_syncs() {
        let sim = SimStorage::new(7);
        let storage = Adapted::scratch_under(Arc::new(sim.clone()), Path::new("/stage/wal"));
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

    #[test]
    fn buffered_only_files_refuse_direct_writes_that_the_wrapped_storage_takes() {
        let sim = SimStorage::with_config(SimConfig {
            direct_io: true,
            ..SimConfig::default()
        });
        let block = vec![7u8; DIRECT_BLOCK_BYTES as usize];
        let direct = sim.open(Path::new("/a"), true).unwrap();
        assert!(
            direct.write_durable_direct(&block, 0).unwrap(),
            "the simulator takes it"
        );
        let buffered = Adapted::buffered_only(Arc::new(sim.clone()));
        let file = buffered.open(Path::new("/b"), true).unwrap();
        assert!(!file.write_durable_direct(&block, 0).unwrap(), "refused");
        assert!(!file.write_direct(&block, 0).unwrap(), "refused");
        file.write_at(&block, 0).unwrap();
        file.sync_data().unwrap();
        assert_eq!(
            sim.read_file(Path::new("/b")).unwrap(),
            block,
            "other writes go through"
        );
    }
}
