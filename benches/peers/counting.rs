//! Counts Vellum's log flushes without a library hook: a `Storage` that forwards every call to
//! the default one (`Options::default().storage`) and counts `sync_data` on log segment files
//! (`wal/<number>.wal`). Used only in w2's extra counting pass, never in a timed figure.

use std::any::Any;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vellum::storage::{Mapping, Storage, StorageFile};

/// What a [`CountingStorage`] saw.
#[derive(Debug, Default)]
pub struct SyncCounts {
    /// `sync_data` calls on log segments: the log's fdatasyncs.
    pub log_syncs: AtomicU64,
    /// `sync_data` calls on any other file (spare segments, arena, control, archive).
    pub other_syncs: AtomicU64,
}

impl SyncCounts {
    pub fn log(&self) -> u64 {
        self.log_syncs.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct CountingStorage {
    inner: Arc<dyn Storage>,
    counts: Arc<SyncCounts>,
}

impl CountingStorage {
    pub fn wrap(inner: Arc<dyn Storage>) -> (CountingStorage, Arc<SyncCounts>) {
        let counts = Arc::new(SyncCounts::default());
        (
            CountingStorage {
                inner,
                counts: counts.clone(),
            },
            counts,
        )
    }
}

/// A log segment: `<digits>.wal` in a directory named `wal` (spares are `spare-*`, renamed to
/// segments and reopened under the segment's name).
fn is_log_segment(path: &Path) -> bool {
    let in_wal = path.parent().and_then(Path::file_name).is_some_and(|d| d == "wal");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let numbered = name
        .strip_suffix(".wal")
        .is_some_and(|stem| !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()));
    in_wal && numbered
}

impl Storage for CountingStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.inner.open(path, create)?;
        Ok(Arc::new(CountingFile {
            inner,
            log: is_log_segment(path),
            counts: self.counts.clone(),
        }))
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
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        self.inner.lock_exclusive(path)
    }
}

#[derive(Debug)]
struct CountingFile {
    inner: Arc<dyn StorageFile>,
    log: bool,
    counts: Arc<SyncCounts>,
}

impl StorageFile for CountingFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn is_empty(&self) -> io::Result<bool> {
        self.inner.is_empty()
    }
    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.inner.set_len(len_bytes)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        let counter = if self.log {
            &self.counts.log_syncs
        } else {
            &self.counts.other_syncs
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.inner.sync_data()
    }
    fn write_durable_direct(&self, blocks: &[u8], offset: u64) -> io::Result<bool> {
        let wrote = self.inner.write_durable_direct(blocks, offset)?;
        if wrote {
            let counter = if self.log {
                &self.counts.log_syncs
            } else {
                &self.counts.other_syncs
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok(wrote)
    }
    fn write_direct(&self, blocks: &[u8], offset: u64) -> io::Result<bool> {
        self.inner.write_direct(blocks, offset)
    }
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.start_writeback(offset, len)
    }
    fn allocate(&self, len_bytes: u64) -> io::Result<bool> {
        self.inner.allocate(len_bytes)
    }
    fn map_shared(&self) -> io::Result<Mapping> {
        self.inner.map_shared()
    }
    fn map_private(&self) -> io::Result<Mapping> {
        self.inner.map_private()
    }
}
