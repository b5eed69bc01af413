//! The narrow storage layer every byte of Vellum goes through.
//!
//! The engine never calls `std::fs` directly: it asks a [`Storage`] for files and mappings.
//! [`RealStorage`] is the operating system; `SimStorage` (compiled with the `testing` feature
//! only, for the project's own tests) is a deterministic crash simulator that keeps a volatile
//! and a durable image of every file, so tests can crash the engine at any instant and recover
//! from exactly what a real disk could have kept.
//!
//! # Assumptions about the medium (what both implementations model)
//! - A write is durable only after `sync_data` on its file returns. Before that, any subset of
//!   its 512-byte sectors may reach the disk, in any order (torn pages, reordered writes).
//! - A sector is written atomically: after a crash it holds either its old or its new bytes.
//! - Creating, renaming or removing a file is durable only after `sync_dir` on its directory.
//! - A file's length change (`set_len`) is durable after `sync_data` on the file.
//! - Mapped memory is coherent with `write_at` of the same file (Linux's unified page cache),
//!   and with `write_durable_direct` (a direct write drops the cached pages of its range, and
//!   the next access reads them back).
//! - A `write_durable_direct` (`O_DIRECT | O_DSYNC`) is durable when it returns, for its own
//!   blocks only; a crash during it may keep any subset of its sectors, as for any write.
//!
//! # Assumptions about I/O errors (what `SimStorage` injects)
//! - A `write_at` that fails may have written any prefix of its bytes that ends at a sector
//!   boundary (a short write, then the error): the caller may assume nothing about the range.
//! - A `sync_data` that fails (`EIO`) may have made any subset of the file's unsynced sectors
//!   durable, and the rest are lost *for good*: the kernel marks them clean, so the running
//!   program still reads the new bytes but a later `sync_data` that succeeds does not write
//!   them (Linux since the PostgreSQL "fsyncgate" of 2018). A failed sync is therefore never
//!   retried as if its data were safe: the data must be written again, or recovered from the
//!   log after a reboot.
//! - A `sync_dir` that fails makes nothing durable; a later successful one does (directory
//!   entries are journaled metadata).
//! - A `read_at` that fails returns `EIO` and fills nothing.
//! - `ENOSPC` comes only from an operation that grows a file (`write_at` past the end,
//!   `set_len`, `allocate`) and changes nothing.
//!
//! # Mappings
//! A [`Mapping`] is a fixed range of memory that never moves while it lives. Shared read-only
//! mappings show the file's current (volatile) bytes; private mappings are copy-on-write, so
//! stores into them never reach the file: only explicit `write_at` calls change a file. This is
//! how Vellum keeps the OS from writing pages back behind the WAL's back.
//!
//! A private mapping's copy of a page is memory of the process (anonymous memory) until
//! [`Mapping::release`] gives it back: the page then shows the file's bytes again, read from
//! the page cache at the next access. The caller releases only pages whose bytes the file
//! durably holds already, so nothing changes but where the bytes live.

mod adapter;
mod limits;
mod real;
#[cfg(feature = "testing")]
mod sim;
mod watch;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub use crate::address_space::{limit_bytes as address_space_limit_bytes, with_limit as with_address_space_limit};
pub use crate::exhausted::{is_exhaustion, os_error_code};
pub use adapter::Adapted;
pub use real::RealStorage;
#[cfg(feature = "testing")]
pub use sim::{FaultKind, FaultPlan, SimConfig, SimStorage};
pub use watch::{NameFilter, RemovalWatch};

/// A file system: the directory operations the engine needs.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `path` and its parents. Durable only after `sync_dir` of each parent.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens `path` for reading and writing. With `create`, the file must not exist yet
    /// (`ErrorKind::AlreadyExists` otherwise) and is created empty; without, it must exist
    /// (`ErrorKind::NotFound` otherwise).
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically replaces `to` with `from`. Durable only after `sync_dir`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable only after `sync_dir`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// The names (not paths) of the entries of directory `path`, sorted.
    fn list(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Makes the entries of directory `path` durable (creations, renames, removals).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// True if `path` names a file or directory.
    fn exists(&self, path: &Path) -> bool;
    /// Copies file `from` to `to`, which must not exist yet (`ErrorKind::AlreadyExists`),
    /// without a sync. This default reads and writes through `open`; a real file system copies
    /// inside the kernel.
    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        let source = self.open(from, false)?;
        let mut bytes = vec![0u8; usize::try_from(source.len()?).map_err(io::Error::other)?];
        source.read_at(&mut bytes, 0)?;
        self.open(to, true)?.write_at(&bytes, 0)
    }
    /// Takes an exclusive advisory lock on `path` (created if missing) for as long as the
    /// returned guard lives; `ErrorKind::WouldBlock` if another holder has it.
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let _ = path;
        Ok(Box::new(()))
    }
    /// Takes a shared advisory lock on `path` (which must exist; nothing is created) for as
    /// long as the returned guard lives: any number of shared holders, but none beside an
    /// exclusive one (`ErrorKind::WouldBlock` either way round).
    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let _ = path;
        Ok(Box::new(()))
    }
    /// Takes an advisory lock on the directory `path` itself (exclusive or shared, as
    /// [`Storage::lock_exclusive`] and [`Storage::lock_shared`]) for as long as the returned
    /// guard lives. Unlike a lock file, the directory cannot be deleted from under its holder
    /// while it holds the files the lock guards.
    fn lock_dir(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let _ = (path, exclusive);
        Ok(Box::new(()))
    }
    /// Opens an existing `path` for reading only: every write, resize or allocation through
    /// the returned file fails with `EBADF` and changes nothing, and nothing about the file
    /// (not even its access time, where the system allows) is changed by opening it. Private
    /// mappings of it are allowed (their stores never reach the file).
    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(ReadOnlyFile(self.open(path, false)?)))
    }
    /// The bytes free for an unprivileged writer on the file system holding `path`
    /// (`statvfs`), or `None` where that is not known.
    fn available_bytes(&self, path: &Path) -> io::Result<Option<u64>> {
        let _ = path;
        Ok(None)
    }
    /// The path a store in the directory `path` goes on using: `path` made absolute (joined to
    /// the working directory), and on a real file system with its symbolic links resolved
    /// where it exists, so that a store stays in the directory it was opened in whatever later
    /// happens to the working directory or to a link on the way. The default (a storage of
    /// its own paths) only makes it absolute.
    fn resolve_dir(&self, path: &Path) -> io::Result<std::path::PathBuf> {
        std::path::absolute(path)
    }
    /// The largest file this process may write (`RLIMIT_FSIZE`, `ulimit -f`), or `None` where
    /// there is no limit (the default) or it is not known. The real file system raises the
    /// process's soft limit to its hard one first.
    fn file_size_limit_bytes(&self) -> Option<u64> {
        None
    }
    /// When the file or directory `path` was last modified, where that is known (a directory's
    /// time moves as entries are made, renamed or removed in it). `None` by default.
    fn modified(&self, path: &Path) -> Option<std::time::SystemTime> {
        let _ = path;
        None
    }
    /// Starts counting what is removed from each directory `dirs` names, for as long as the
    /// returned watch lives: a file whose name its filter accepts removed or renamed away, and
    /// the directory itself removed or moved. `None` where this storage cannot watch (the
    /// default; on a real file system, no inotify or its watch limit reached): the caller looks
    /// for itself. A file replaced by a rename onto its name is not counted.
    fn watch_removals(&self, dirs: &[(&Path, NameFilter)]) -> Option<Box<dyn RemovalWatch>> {
        let _ = dirs;
        None
    }
    /// True once the work using this storage has been asked to stop (a stoppable
    /// [`Adapted`]): long loops that touch no file (a replay reading a mapped log) check it
    /// and return `Err(Interrupted)`.
    fn interrupted(&self) -> bool {
        false
    }
}

/// A file opened through [`Storage::open_read_only`] on a storage that has no read-only mode
/// of its own: reads pass through, every change fails with `EBADF`, as a real read-only file
/// descriptor does.
#[derive(Debug)]
struct ReadOnlyFile(Arc<dyn StorageFile>);

fn read_only_error() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

impl StorageFile for ReadOnlyFile {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, _len_bytes: u64) -> io::Result<()> {
        Err(read_only_error())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(read_only_error())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn allocate(&self, _len_bytes: u64) -> io::Result<bool> {
        Err(read_only_error())
    }
    fn map_shared(&self) -> io::Result<Mapping> {
        self.0.map_shared()
    }
    fn map_private(&self) -> io::Result<Mapping> {
        self.0.map_private()
    }
    fn map_private_detached(&self) -> io::Result<Mapping> {
        self.0.map_private_detached()
    }
}

/// The alignment of [`StorageFile::write_durable_direct`]'s memory, offset and length: the
/// largest logical block size of common devices (512-byte devices accept it too).
pub const DIRECT_BLOCK_BYTES: u64 = 4096;

/// Renames `from` onto `to` and syncs the directory of `to`: the name is durable on return,
/// and a crash at any point leaves `to` as it was or whole (rename(2) replaces a name
/// atomically; the directory's sync makes the replacement survive a power loss). Both paths
/// in one directory. Each failure names its step (`renaming a to b`, `syncing directory d`).
pub fn rename_durably(storage: &dyn Storage, from: &Path, to: &Path) -> crate::Result<()> {
    use crate::error::IoContext;
    let dir = to.parent().unwrap_or_else(|| Path::new("."));
    debug_assert_eq!(from.parent(), to.parent(), "a rename within one directory");
    storage
        .rename(from, to)
        .context(|| format!("renaming {} to {}", from.display(), to.display()))?;
    storage
        .sync_dir(dir)
        .context(|| format!("syncing directory {}", dir.display()))
}

/// Puts a file deleted while open back at `path`: if `file` has no name left
/// ([`StorageFile::is_unlinked`]), its bytes, read through the open descriptor, are written
/// whole to a new file beside `path`, synced, and renamed to `path` (the caller syncs the
/// directory). The descriptor stays the one written to: call again after later writes.
/// True if the file was put back.
pub fn restore_unlinked(storage: &dyn Storage, file: &dyn StorageFile, path: &Path) -> io::Result<bool> {
    if !file.is_unlinked()? {
        return Ok(false);
    }
    put_back(storage, file, path)?;
    Ok(true)
}

/// Writes the bytes of `file` (read through its descriptor) whole to a new file beside `path`,
/// syncs it and renames it to `path` (the caller syncs the directory); returns the new file.
pub(crate) fn put_back(storage: &dyn Storage, file: &dyn StorageFile, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
    // `NAME.tmp`: a crash during the copy leaves it for the next writer's open to remove
    // (`Arena::remove_leftovers` for `*.pages.tmp`, `lifecycle::remove_relink_leftovers`).
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let fresh_path = path.with_file_name(name);
    let _ = storage.remove_file(&fresh_path);
    let fresh = storage
        .open(&fresh_path, true)
        .map_err(|e| with_missing_directory(storage, e, path))?;
    let len_bytes = file.len()?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len_bytes {
        let n = chunk.len().min((len_bytes - offset) as usize);
        file.read_at(&mut chunk[..n], offset)?;
        fresh.write_at(&chunk[..n], offset)?;
        offset += n as u64;
    }
    fresh.sync_data()?;
    storage.rename(&fresh_path, path)?;
    Ok(fresh)
}

/// `e`, a failure to create a file beside `path`, saying so where `path`'s directory itself
/// is gone (a store's directory removed while it is open: nothing can be put back into it).
/// `e` stays its source: its kind and its OS error code are still found under the note.
fn with_missing_directory(storage: &dyn Storage, e: io::Error, path: &Path) -> io::Error {
    let Some(dir) = path.parent() else { return e };
    if e.kind() != io::ErrorKind::NotFound || storage.exists(dir) {
        return e;
    }
    let note = format!("the directory {} was removed while the store was open", dir.display());
    crate::exhausted::with_note(e, note)
}

/// Panics unless `blocks` and `offset` are whole blocks for a direct write (a caller's broken
/// invariant: the engine lays direct writes out itself). The memory's alignment is the real
/// file's concern (the simulator's writes are copies).
pub(crate) fn assert_direct_blocks(blocks: &[u8], offset: u64) {
    assert!(
        (blocks.len() as u64).is_multiple_of(DIRECT_BLOCK_BYTES) && offset.is_multiple_of(DIRECT_BLOCK_BYTES),
        "a direct write is of whole aligned blocks"
    );
}

/// Memory aligned for direct writes: `len_bytes` (a multiple of [`DIRECT_BLOCK_BYTES`]) at an
/// address that is a multiple of it, zeroed at first.
pub struct AlignedBlocks {
    memory: Vec<u8>,
    at: usize,
    len_bytes: usize,
}

impl AlignedBlocks {
    /// `len_bytes` of zeros, aligned.
    pub fn new(len_bytes: usize) -> AlignedBlocks {
        let block = DIRECT_BLOCK_BYTES as usize;
        assert!(len_bytes.is_multiple_of(block), "whole blocks");
        let memory = vec![0; len_bytes + block];
        let at = memory.as_ptr().align_offset(block);
        AlignedBlocks { memory, at, len_bytes }
    }

    /// The aligned bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.memory[self.at..self.at + self.len_bytes]
    }

    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.memory[self.at..self.at + self.len_bytes]
    }
}

impl fmt::Debug for AlignedBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBlocks({} bytes)", self.len_bytes)
    }
}

/// An open file.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The current (volatile) length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True if the file holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// True if the file has no name left: deleted (or renamed over) while open, so that what
    /// is written to it reaches no file a later open finds. A file of a store that cannot tell
    /// says false.
    fn is_unlinked(&self) -> io::Result<bool> {
        Ok(false)
    }
    /// Grows (with zeros) or shrinks the file. Must not be called while a mapping of the file
    /// lives: implementations may panic.
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write to this file so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Writes `blocks` at `offset` past the page cache and returns once they are durable
    /// (`O_DIRECT | O_DSYNC`): one device write and one cache flush. `blocks` starts at an
    /// address aligned to [`DIRECT_BLOCK_BYTES`], and its length and `offset` are multiples of
    /// it. Makes only these bytes durable, not earlier `write_at`s. Returns `Ok(false)` where
    /// this file cannot be written so (a file system without direct I/O, a device that refuses
    /// the alignment): the caller writes the same bytes through the page cache (which also
    /// covers any prefix a refused write may have left).
    fn write_durable_direct(&self, blocks: &[u8], offset: u64) -> io::Result<bool> {
        let _ = (blocks, offset);
        Ok(false)
    }
    /// Writes `blocks` at `offset` past the page cache (`O_DIRECT`), not durable until
    /// [`StorageFile::sync_data`], as any write: for files written once and seldom read (the
    /// archive), whose pages would only crowd the cache. Alignment as for
    /// [`StorageFile::write_durable_direct`]; `Ok(false)` where the file cannot be written so
    /// (the caller writes the same bytes through the cache).
    fn write_direct(&self, blocks: &[u8], offset: u64) -> io::Result<bool> {
        let _ = (blocks, offset);
        Ok(false)
    }
    /// Asks the OS to start writing `len` bytes at `offset` to the device now, without waiting
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). A hint only: it makes nothing durable, and a
    /// later [`StorageFile::sync_data`] still must be called; it lets that sync find the
    /// device work already done while the caller went on.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Asks the OS to start reading `len` bytes at `offset` into the page cache now, without
    /// waiting (`posix_fadvise(POSIX_FADV_WILLNEED)`): reads of several files asked for first
    /// and made after are served together rather than one disk wait each. A hint only.
    fn will_need(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
    /// Reads `buf.len()` bytes at `offset` only if the page cache holds them already, never
    /// waiting for the disk (`preadv2(RWF_NOWAIT)`): `Ok(true)` if `buf` is filled, `Ok(false)`
    /// if not (not cached, or the file system cannot say). An open then asks for reads ahead
    /// ([`StorageFile::will_need`]) only of what is not in memory already.
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let _ = (buf, offset);
        Ok(false)
    }
    /// Allocates the file's blocks up to `len_bytes` without writing them (`fallocate`), so a
    /// full disk is found now; the file reads as zeros there. Returns `Ok(false)` where the
    /// file system cannot, and the caller writes zeros instead.
    fn allocate(&self, len_bytes: u64) -> io::Result<bool> {
        let _ = len_bytes;
        Ok(false)
    }
    /// Maps the whole file (at its current length) shared and read-only: the mapping shows every
    /// later `write_at` to the file. The length must not change while the mapping lives.
    fn map_shared(&self) -> io::Result<Mapping>;
    /// Maps the whole file (at its current length) private and writable: copy-on-write, stores
    /// into it never reach the file. The mapping is read at random: a fault on a page not in
    /// the page cache reads that page only (`MADV_RANDOM`), not the readahead window around it
    /// (8 MiB on a common virtual disk: a cold point read of the arena read megabytes for each
    /// page it met). A caller that reads a range whole or in order asks for it first
    /// (`madvise(MADV_WILLNEED)` over the range, as `Arena::will_need` does).
    fn map_private(&self) -> io::Result<Mapping>;
    /// [`StorageFile::map_private`], keeping no descriptor of the file open for the mapping's
    /// sake (the mapping itself keeps the file's pages): a reader that maps many files then
    /// holds no descriptor for each. Such a mapping cannot show the file again over a range
    /// (`Mapping::release_fresh` fails with `Unsupported`); fresh memory (`zero_fresh`) still
    /// works.
    fn map_private_detached(&self) -> io::Result<Mapping> {
        self.map_private()
    }
}

/// Every non-empty [`Mapping`] starts at an address that is a multiple of this (the smallest
/// page size, as `mmap` gives), so values at aligned offsets (the arena's f32 vectors) are
/// aligned in memory too.
pub const MAPPING_ALIGN_BYTES: usize = 4096;

/// A memory range that stays at one address for as long as the `Mapping` lives.
///
/// The mapping hands out raw pointers only; the modules that read or write through it (the WAL
/// reader, the arena) state the invariant that makes each access sound. A non-empty mapping
/// starts at a multiple of [`MAPPING_ALIGN_BYTES`].
pub struct Mapping {
    ptr: *mut u8,
    len_bytes: usize,
    writable: bool,
    owner: Box<dyn Backing>,
}

/// What keeps a mapping's memory at its address, and gives a private mapping's own copy of
/// some of its pages back (see [`Mapping::release`]).
pub(crate) trait Backing: Send + Sync {
    /// Drops the mapping's private copy of the `len_bytes` at `ptr` (whole pages inside the
    /// mapping, checked by the caller), so that they show the file's bytes again.
    /// `Unsupported` where the mapping holds no private copy (a shared mapping).
    ///
    /// # Safety
    /// As for [`Mapping::release`].
    unsafe fn release(&self, ptr: *mut u8, len_bytes: usize) -> io::Result<()> {
        let _ = (ptr, len_bytes);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Replaces the `len_bytes` at `ptr` (whole pages inside the mapping, checked by the
    /// caller) with fresh zeroed memory of the process's own, without reading the file.
    /// `Unsupported` where the backing cannot (the caller then writes the zeros itself).
    ///
    /// # Safety
    /// As for [`Mapping::zero_fresh`].
    unsafe fn zero_fresh(&self, ptr: *mut u8, len_bytes: usize) -> io::Result<()> {
        let _ = (ptr, len_bytes);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// [`Backing::release`] of a range [`Backing::zero_fresh`] made (it must be mapped from
    /// the file again, not merely dropped).
    ///
    /// # Safety
    /// As for [`Mapping::release`].
    unsafe fn release_fresh(&self, ptr: *mut u8, len_bytes: usize) -> io::Result<()> {
        let _ = (ptr, len_bytes);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// An empty mapping holds nothing.
impl Backing for () {}

/// A read-only shared mapping of a real file: it is the page cache, nothing to give back.
impl Backing for memmap2::Mmap {}

/// A private mapping (of a file, or anonymous memory standing in for a file of zeros).
impl Backing for memmap2::MmapMut {
    unsafe fn release(&self, ptr: *mut u8, len_bytes: usize) -> io::Result<()> {
        // SAFETY: `ptr..ptr + len_bytes` is whole pages of this live private mapping (checked
        // by `Mapping::release`). MADV_DONTNEED drops the process's own copies of them: the
        // next access maps the file's page from the page cache (an anonymous mapping: a zero
        // page, which is what its file of zeros holds). No memory outside the range changes;
        // that the bytes inside it stay what readers expect is the caller's guarantee.
        let rc = unsafe { libc::madvise(ptr.cast(), len_bytes, libc::MADV_DONTNEED) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// The size of the operating system's memory pages (what `madvise` works in).
fn os_page_bytes() -> usize {
    static PAGE_BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE_BYTES.get_or_init(|| {
        // SAFETY: sysconf reads a configuration value; it touches no memory of ours.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(page)
            .ok()
            .filter(|&p| p > 0)
            .unwrap_or(MAPPING_ALIGN_BYTES)
    })
}

// SAFETY: a `Mapping` is a pointer into memory owned by `owner`, which is `Send + Sync` and
// keeps the memory at one address until dropped; all accesses through the pointer go through
// the unsafe accessors below, whose callers uphold the data-race rules.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: shared access only hands out raw pointers.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Wraps memory owned by `owner`. `ptr..ptr+len_bytes` must stay valid and fixed while
    /// `owner` lives.
    pub(crate) fn new(ptr: *mut u8, len_bytes: usize, writable: bool, owner: Box<dyn Backing>) -> Mapping {
        assert!(len_bytes == 0 || !ptr.is_null(), "a non-empty mapping needs memory");
        assert!(
            len_bytes == 0 || (ptr as usize).is_multiple_of(MAPPING_ALIGN_BYTES),
            "a mapping starts at a multiple of {MAPPING_ALIGN_BYTES} bytes"
        );
        Mapping {
            ptr,
            len_bytes,
            writable,
            owner,
        }
    }

    /// The length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len_bytes
    }

    /// True if the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// The bytes at `offset..offset + len_bytes`.
    ///
    /// # Safety
    /// No thread may write those bytes (through this mapping, or through `write_at` of a shared
    /// mapping's file) for as long as the returned slice lives.
    pub unsafe fn bytes(&self, offset: usize, len_bytes: usize) -> &[u8] {
        let end = offset.checked_add(len_bytes).expect("mapping range overflows");
        assert!(
            end <= self.len_bytes,
            "mapping read {offset}+{len_bytes} past {}",
            self.len_bytes
        );
        // SAFETY: the range is inside the mapping (asserted), the memory is valid while `self`
        // lives, and the caller guarantees no concurrent writer for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len_bytes) }
    }

    /// Copies `data` into the mapping at `offset` (private mappings only).
    ///
    /// # Safety
    /// No other thread may read or write those bytes during the copy, and no slice returned by
    /// [`Mapping::bytes`] may cover them while it lives.
    pub unsafe fn write(&self, offset: usize, data: &[u8]) {
        assert!(self.writable, "write into a read-only mapping");
        let end = offset.checked_add(data.len()).expect("mapping range overflows");
        assert!(
            end <= self.len_bytes,
            "mapping write {offset}+{} past {}",
            data.len(),
            self.len_bytes
        );
        // SAFETY: the range is inside the writable mapping (asserted); `data` cannot overlap it
        // because the caller holds no slice over it; exclusivity is the caller's guarantee.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) }
    }

    /// Gives back the mapping's private copy of `len_bytes` at `offset`: afterwards those
    /// bytes show the file's, read again from the page cache when next touched, and the memory
    /// the copy took is free. Private mappings only (`Unsupported` otherwise); the range must
    /// be whole pages of the operating system (`InvalidInput` otherwise, and nothing changes).
    ///
    /// # Safety
    /// The file durably holds the range's bytes: they were written to it with `write_at` and a
    /// `sync_data` of the file succeeded since (before that, a failed sync may let the page
    /// cache drop the new bytes, and the refault would read older ones). Any byte where the
    /// file and the mapping still differ changes to the file's: during the call no thread may
    /// hold a slice over such a byte, and a thread that copies it meanwhile may get either
    /// value and must not use it (the simulator stores the file's bytes over the copy's). Bytes
    /// that do not differ keep their value throughout, and may be read. No thread may write
    /// into the range during the call. Until a store into a released page copies it
    /// again, the mapping shows the file's page itself: a `write_at` of the range meanwhile
    /// would show through, so the caller writes a released range only after storing into it.
    /// (On Linux `MADV_DONTNEED`; elsewhere it may keep the copy, which changes nothing.)
    pub unsafe fn release(&self, offset: usize, len_bytes: usize) -> io::Result<()> {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.release_with(offset, len_bytes, false) }
    }

    /// [`Mapping::release`] of a range that [`Mapping::zero_fresh`] made and no release has
    /// given back since (its memory is not a copy of the file's page: it is mapped from the
    /// file again).
    ///
    /// # Safety
    /// As for [`Mapping::release`].
    pub unsafe fn release_fresh(&self, offset: usize, len_bytes: usize) -> io::Result<()> {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.release_with(offset, len_bytes, true) }
    }

    /// Asserts that `offset..offset + len_bytes` lies inside the mapping (callers compute it);
    /// `InvalidInput` unless it is whole pages of the operating system (`what` names the call).
    fn check_whole_pages(&self, offset: usize, len_bytes: usize, what: &str) -> io::Result<()> {
        let end = offset.checked_add(len_bytes).expect("mapping range overflows");
        assert!(
            end <= self.len_bytes,
            "mapping {what} {offset}+{len_bytes} past {}",
            self.len_bytes
        );
        let page = os_page_bytes();
        if !offset.is_multiple_of(page) || !len_bytes.is_multiple_of(page) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a {what} covers whole {page}-byte pages, not {offset}+{len_bytes}"),
            ));
        }
        Ok(())
    }

    /// # Safety
    /// As for [`Mapping::release`].
    unsafe fn release_with(&self, offset: usize, len_bytes: usize, fresh: bool) -> io::Result<()> {
        self.check_whole_pages(offset, len_bytes, "release")?;
        if len_bytes == 0 {
            return Ok(());
        }
        // SAFETY: the range is whole pages inside the mapping (checked above); the caller
        // upholds the contract on its bytes.
        unsafe {
            if fresh {
                self.owner.release_fresh(self.ptr.add(offset), len_bytes)
            } else {
                self.owner.release(self.ptr.add(offset), len_bytes)
            }
        }
    }

    /// Makes `len_bytes` at `offset` zeros held in the process's own memory, without reading
    /// the file's bytes there (a page about to be formatted whole: a store into a private
    /// mapping of a file otherwise first reads the file's page into the page cache, zeroing
    /// it there, then copies it: measured, that was a fifth of a bulk load's time). The range
    /// is then a private copy like any other: [`Mapping::release`] gives it back. Private
    /// mappings of real files only (`Unsupported` otherwise, and nothing changes); whole pages
    /// of the operating system (`InvalidInput` otherwise).
    ///
    /// # Safety
    /// As for [`Mapping::write`] over the range: no other thread reads or writes it during
    /// the call, and no slice returned by [`Mapping::bytes`] covers it.
    pub unsafe fn zero_fresh(&self, offset: usize, len_bytes: usize) -> io::Result<()> {
        assert!(self.writable, "zero_fresh in a read-only mapping");
        self.check_whole_pages(offset, len_bytes, "zero_fresh")?;
        if len_bytes == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: the range is whole pages inside the mapping (checked above); the caller
        // guarantees no other thread uses it meanwhile.
        unsafe { self.owner.zero_fresh(self.ptr.add(offset), len_bytes) }
    }

    /// Moves `len_bytes` bytes from `from` to `to` inside the mapping (the ranges may overlap).
    ///
    /// # Safety
    /// As for [`Mapping::write`], over both ranges.
    pub unsafe fn copy_within(&self, from: usize, to: usize, len_bytes: usize) {
        assert!(self.writable, "write into a read-only mapping");
        let end = from.max(to).checked_add(len_bytes).expect("mapping range overflows");
        assert!(end <= self.len_bytes, "mapping move to {end} past {}", self.len_bytes);
        // SAFETY: both ranges are inside the writable mapping (asserted); `ptr::copy` allows
        // overlap; exclusivity is the caller's guarantee.
        unsafe { std::ptr::copy(self.ptr.add(from), self.ptr.add(to), len_bytes) }
    }

    /// The address of byte `offset` (for readers that must not form a slice).
    pub fn ptr_at(&self, offset: usize) -> *mut u8 {
        assert!(
            offset <= self.len_bytes,
            "mapping offset {offset} past {}",
            self.len_bytes
        );
        // SAFETY: `offset` is within the allocation or one past its end (asserted).
        unsafe { self.ptr.add(offset) }
    }
}

/// A file of `len_bytes` zeros that exists only in memory and never changes: what a read-only
/// store stands in for an arena file the log needs but a crash lost (its pages are rebuilt by
/// redo into a private mapping). Reads give zeros; every change fails with `EBADF`.
pub fn memory_file(len_bytes: u64) -> Arc<dyn StorageFile> {
    Arc::new(MemoryFile { len_bytes })
}

#[derive(Debug)]
struct MemoryFile {
    len_bytes: u64,
}

impl StorageFile for MemoryFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.len_bytes)
    }
    fn set_len(&self, _len_bytes: u64) -> io::Result<()> {
        Err(read_only_error())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len_bytes) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.fill(0);
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(read_only_error())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn map_shared(&self) -> io::Result<Mapping> {
        Err(read_only_error())
    }
    fn map_private(&self) -> io::Result<Mapping> {
        let len_bytes = usize::try_from(self.len_bytes).map_err(io::Error::other)?;
        if len_bytes == 0 {
            return Ok(Mapping::new(std::ptr::null_mut(), 0, true, Box::new(())));
        }
        let mut map = memmap2::MmapOptions::new().len(len_bytes).map_anon()?;
        let ptr = map.as_mut_ptr();
        Ok(Mapping::new(ptr, len_bytes, true, Box::new(map)))
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("len_bytes", &self.len_bytes)
            .field("writable", &self.writable)
            .finish()
    }
}
