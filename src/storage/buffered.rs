//! A storage adapter without direct I/O: every write goes through the page cache
//! (`Options::direct_io = false`).
//!
//! Its files refuse [`StorageFile::write_direct`] and [`StorageFile::write_durable_direct`] (the
//! trait's defaults), so the log flushes with `pwrite` + `fdatasync` and archive files are
//! written through the cache, exactly as on a file system without direct I/O. Everything else
//! goes to the wrapped storage unchanged.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::{Mapping, Storage, StorageFile};

/// `inner`, with direct writes refused.
#[derive(Debug)]
pub struct BufferedOnly {
    inner: Arc<dyn Storage>,
}

impl BufferedOnly {
    /// `inner`, whose files take no direct writes.
    pub fn new(inner: Arc<dyn Storage>) -> BufferedOnly {
        BufferedOnly { inner }
    }
}

impl Storage for BufferedOnly {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(BufferedFile(self.inner.open(path, create)?)))
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

    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.inner.lock_shared(path)
    }

    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.inner.open_read_only(path)
    }

    fn available_bytes(&self, path: &Path) -> io::Result<Option<u64>> {
        self.inner.available_bytes(path)
    }
}

/// A file of [`BufferedOnly`]: every operation but the direct writes goes to the wrapped file.
#[derive(Debug)]
struct BufferedFile(Arc<dyn StorageFile>);

impl StorageFile for BufferedFile {
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
        self.0.sync_data()
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.start_writeback(offset, len)
    }

    fn will_need(&self, offset: u64, len: u64) {
        self.0.will_need(offset, len)
    }

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        self.0.read_cached(buf, offset)
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
    use crate::storage::{DIRECT_BLOCK_BYTES, SimConfig, SimStorage};

    #[test]
    fn its_files_refuse_direct_writes_that_the_wrapped_storage_takes() {
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
        let buffered = BufferedOnly::new(Arc::new(sim.clone()));
        let file = buffered.open(Path::new("/b"), true).unwrap();
        assert!(!file.write_durable_direct(&block, 0).unwrap(), "refused");
        assert!(!file.write_direct(&block, 0).unwrap(), "refused");
        file.write_at(&block, 0).unwrap();
        assert_eq!(
            sim.read_file(Path::new("/b")).unwrap(),
            block,
            "other writes go through"
        );
    }
}
