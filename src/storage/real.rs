//! The operating system as a [`Storage`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::limits::with_descriptor_room;
use super::{Mapping, Storage, StorageFile};

/// Files and mappings of the real file system (`std::fs` + memmap2).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

impl RealStorage {
    /// The real file system.
    pub fn new() -> RealStorage {
        RealStorage
    }
}

#[derive(Debug)]
struct RealFile {
    /// Shared with private mappings of it (a release maps the file back over a range).
    file: Arc<File>,
    /// The length and allocated bytes as last read, so that an open's checks (length, blocks)
    /// and its mapping stat the file once. Cleared, under its lock, after every call that may
    /// change them: a value read before such a call completes is never kept past it.
    stat: parking_lot::Mutex<Option<Stat>>,
    /// The same file opened again for direct writes, at the first one of each kind: `[0]`
    /// `O_DIRECT` (`write_direct`), `[1]` `O_DIRECT | O_DSYNC` (`write_durable_direct`); `None`
    /// inside where the file system refuses direct I/O (tmpfs, some network file systems), and
    /// the caller goes through the cache.
    direct: [std::sync::OnceLock<Option<File>>; 2],
    /// A direct write was refused for its alignment: no more are tried.
    direct_refused: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Copy, Debug)]
struct Stat {
    len_bytes: u64,
    allocated_bytes: u64,
}

/// `statx(2)` of the open `file`, or else of `path` (following symbolic links, as
/// `std::fs::metadata` does), asking the kernel for the fields in `mask` only; `Ok(None)` where
/// the call is not there (an old kernel, a sandbox that refuses it) or cannot give them: the
/// caller asks `std` instead.
///
/// Never for the timestamps. On a file system with multigrain timestamps (ext4, XFS, Btrfs and
/// tmpfs since Linux 6.13) a query of a file's change or modification time makes its next
/// write stamp a fine-grained time, which dirties the inode: a durable write of a log segment
/// then waits for a synchronous write of the inode too. `std`'s `metadata` asks for every field:
/// measured here, an `fstat` after each `O_DSYNC` write of 4 KiB took it from 120-126 us to
/// 180-189 us, a `statx` of the link count alone from 119-126 to 119-129.
fn statx_narrow(file: Option<&File>, path: Option<&Path>, mask: libc::c_uint) -> io::Result<Option<libc::statx>> {
    use std::os::unix::ffi::OsStrExt;
    // A descriptor is named by the empty path (no allocation: a durable flush asks this).
    let owned_path;
    let (fd, c_path, flags): (_, &std::ffi::CStr, _) = match (file, path) {
        (Some(file), _) => (std::os::fd::AsRawFd::as_raw_fd(file), c"", libc::AT_EMPTY_PATH),
        (None, Some(path)) => {
            owned_path = std::ffi::CString::new(path.as_os_str().as_bytes())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            (libc::AT_FDCWD, &owned_path, 0)
        }
        (None, None) => panic!("statx_narrow names a file or a path"),
    };
    // SAFETY: every field of `statx` is a plain integer (or an array of them): all zeros is a
    // valid value.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call (empty, with
    // AT_EMPTY_PATH, for the descriptor itself), and `stat` is a writable `statx` the kernel
    // fills; the call reads nothing else of ours.
    let rc = unsafe { libc::statx(fd, c_path.as_ptr(), flags, mask, &mut stat) };
    if rc != 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENOSYS | libc::EPERM) => Ok(None),
            _ => Err(error),
        };
    }
    Ok((stat.stx_mask & mask == mask).then_some(stat))
}

impl RealFile {
    fn new(file: File) -> RealFile {
        RealFile {
            file: Arc::new(file),
            stat: parking_lot::Mutex::new(None),
            direct: [std::sync::OnceLock::new(), std::sync::OnceLock::new()],
            direct_refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// This file opened anew for direct writes (`O_DIRECT`, and `O_DSYNC` if `durable`), through
    /// `/proc/self/fd` (the path it was opened by may have been renamed since). `None` where that
    /// open fails.
    fn open_direct(&self, durable: bool) -> Option<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.file);
        let flags = if durable {
            libc::O_DIRECT | libc::O_DSYNC
        } else {
            libc::O_DIRECT
        };
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(format!("/proc/self/fd/{fd}"))
            .ok()
    }

    /// A direct write of whole aligned blocks; `Ok(false)` where it cannot be made.
    fn write_direct_with(&self, blocks: &[u8], offset: u64, durable: bool) -> io::Result<bool> {
        use std::sync::atomic::Ordering;
        super::assert_direct_blocks(blocks, offset);
        assert!(
            (blocks.as_ptr() as u64).is_multiple_of(super::DIRECT_BLOCK_BYTES),
            "a direct write's memory is aligned"
        );
        if self.direct_refused.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let Some(direct) = self.direct[usize::from(durable)].get_or_init(|| self.open_direct(durable)) else {
            return Ok(false);
        };
        let result = direct.write_all_at(blocks, offset);
        self.wrote(offset, blocks.len());
        match result {
            Ok(()) => Ok(true),
            // Refused: this device wants another alignment, or the file system opens files for
            // direct I/O but does not write them so. (Refused at once in practice; a prefix
            // written before it would be written again by the caller through the cache.)
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                self.direct_refused.store(true, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn stat(&self) -> io::Result<Stat> {
        let mut cached = self.stat.lock();
        if let Some(stat) = *cached {
            return Ok(stat);
        }
        let (len_bytes, blocks) = match statx_narrow(Some(&self.file), None, libc::STATX_SIZE | libc::STATX_BLOCKS)? {
            Some(stat) => (stat.stx_size, stat.stx_blocks),
            None => {
                let metadata = self.file.metadata()?;
                (metadata.len(), std::os::unix::fs::MetadataExt::blocks(&metadata))
            }
        };
        let stat = Stat {
            len_bytes,
            allocated_bytes: blocks.saturating_mul(512),
        };
        *cached = Some(stat);
        Ok(stat)
    }

    /// After a write of `len_bytes` at `offset` (done or failed): one that may have grown the
    /// file changed its length and blocks. (A write inside the length may fill a hole: the
    /// allocated bytes kept are then too few, which only makes `allocate` ask the kernel.)
    fn wrote(&self, offset: u64, len_bytes: usize) {
        let mut stat = self.stat.lock();
        if stat.is_some_and(|s| offset.saturating_add(len_bytes as u64) > s.len_bytes) {
            *stat = None;
        }
    }

    /// After a call that may have changed the length or the blocks.
    fn forget_stat(&self) {
        *self.stat.lock() = None;
    }
}

impl Storage for RealStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn watch_removals(&self, dirs: &[(&Path, super::NameFilter)]) -> Option<Box<dyn super::RemovalWatch>> {
        super::watch::watch(dirs)
    }

    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut source = with_descriptor_room(|| fs::File::open(from))?;
        let mut dest = with_descriptor_room(|| fs::OpenOptions::new().write(true).create_new(true).open(to))?;
        // Between two files, `io::copy` copies inside the kernel (copy_file_range on Linux).
        io::copy(&mut source, &mut dest).map(|_| ())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if create {
            options.create_new(true);
        }
        Ok(Arc::new(RealFile::new(with_descriptor_room(|| options.open(path))?)))
    }

    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = OpenOptions::new();
        // O_NOATIME is refused for files the caller does not own: fall back without it.
        options.read(true).custom_flags(libc::O_NOATIME);
        let file = match with_descriptor_room(|| options.open(path)) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                with_descriptor_room(|| OpenOptions::new().read(true).open(path))?
            }
            other => other?,
        };
        Ok(Arc::new(RealFile::new(file)))
    }

    fn resolve_dir(&self, path: &Path) -> io::Result<std::path::PathBuf> {
        match std::fs::canonicalize(path) {
            Ok(resolved) => Ok(resolved),
            // Not there (yet): what the open or create finds next says so.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                std::path::absolute(path)
            }
            Err(e) => Err(e),
        }
    }

    fn file_size_limit_bytes(&self) -> Option<u64> {
        static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
        *LIMIT.get_or_init(file_size_limit)
    }

    // The statvfs counts are u64 on 64-bit Linux but not on every target.
    #[allow(clippy::useless_conversion)]
    fn available_bytes(&self, path: &Path) -> io::Result<Option<u64>> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stat` points
        // at writable memory of the size statvfs fills in.
        let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statvfs returned 0, so it filled every field.
        let stat = unsafe { stat.assume_init() };
        Ok(Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize))))
    }

    fn lock_shared(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        flock(
            with_descriptor_room(|| OpenOptions::new().read(true).open(path))?,
            libc::LOCK_SH,
        )
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in with_descriptor_room(|| fs::read_dir(path))? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        with_descriptor_room(|| File::open(path))?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        match statx_narrow(None, Some(path), libc::STATX_TYPE) {
            Ok(Some(_)) => true,
            Ok(None) => path.exists(),
            Err(_) => false,
        }
    }

    fn modified(&self, path: &Path) -> Option<std::time::SystemTime> {
        fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let file = with_descriptor_room(|| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
        })?;
        flock(file, libc::LOCK_EX)
    }

    fn lock_dir(&self, path: &Path, exclusive: bool) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        flock(
            with_descriptor_room(|| File::open(path))?,
            if exclusive { libc::LOCK_EX } else { libc::LOCK_SH },
        )
    }
}

/// A mapping of `len_bytes` that failed with `e` (see [`crate::address_space::with_limit`]).
fn mapping_error(e: io::Error, len_bytes: usize) -> io::Error {
    let mib = len_bytes as f64 / f64::from(1u32 << 20);
    crate::address_space::with_limit(
        e,
        &format!("a store maps each of its files whole ({mib:.1} MiB this one)"),
    )
}

/// The largest file this process may write (`RLIMIT_FSIZE`), once per process: the soft limit
/// is raised to the hard one first, as the open-file limit is above. `None`: no limit. Where a
/// finite limit remains, `SIGXFSZ` is ignored unless the program set a handler for it: a write
/// past the limit then fails with `EFBIG`, a typed error, where the signal's default action
/// killed the process mid-write (`ulimit -f 8192` and `vellum create` left a half-made store
/// and "File size limit exceeded"). PostgreSQL's server ignores the signal for the same
/// reason.
fn file_size_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`, a local of that type.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from `raised`, a local of that type.
        if unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    ignore_file_size_signal();
    Some(limit.rlim_cur)
}

/// Sets `SIGXFSZ` to be ignored if it has its default action (see [`file_size_limit`]).
fn ignore_file_size_signal() {
    // SAFETY: a zeroed sigaction is a valid value of the type (no handler, empty mask).
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, sigaction only writes the current one into `current`,
    // a local of that type.
    if unsafe { libc::sigaction(libc::SIGXFSZ, std::ptr::null(), &mut current) } != 0 {
        return;
    }
    if current.sa_sigaction != libc::SIG_DFL {
        return;
    }
    // SAFETY: as above; the new action (ignore) is read from a local of the type.
    let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
    ignore.sa_sigaction = libc::SIG_IGN;
    // SAFETY: sigaction reads the new action from `ignore`, a local of the type; the old one
    // is not asked for.
    unsafe { libc::sigaction(libc::SIGXFSZ, &ignore, std::ptr::null_mut()) };
}

/// Takes `flock(operation | LOCK_NB)` on `file`; the lock lives as long as the open file
/// description, so the returned guard is the file itself.
fn flock(file: File, operation: libc::c_int) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Box::new(file))
}

impl StorageFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.stat()?.len_bytes)
    }

    fn is_unlinked(&self) -> io::Result<bool> {
        // A fresh statx (not the cached stat): the link count changes behind our back. Asking
        // for the link count alone costs a durable commit nothing (see `statx_narrow`).
        let nlink = match statx_narrow(Some(&self.file), None, libc::STATX_NLINK)? {
            Some(stat) => u64::from(stat.stx_nlink),
            None => std::os::unix::fs::MetadataExt::nlink(&self.file.metadata()?),
        };
        Ok(nlink == 0)
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        let result = self.file.set_len(len_bytes);
        self.forget_stat();
        result
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let result = self.file.write_all_at(buf, offset);
        self.wrote(offset, buf.len());
        result
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<bool> {
        let Ok(len) = i64::try_from(len_bytes) else {
            return Ok(false);
        };
        // A file whose blocks cover its length already (every arena file and segment this
        // version made) needs no call: one stat instead of an fallocate per file at every open.
        let stat = self.stat()?;
        if stat.len_bytes >= len_bytes && stat.allocated_bytes >= len_bytes {
            return Ok(true);
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        // SAFETY: a plain system call on a descriptor this value owns; it reads no memory of
        // ours, and mode 0 only adds blocks that read as zeros (it never changes a byte).
        let rc = unsafe { libc::fallocate(fd, 0, 0, len) };
        self.forget_stat();
        if rc == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(false),
            _ => Err(error),
        }
    }

    fn write_durable_direct(&self, blocks: &[u8], offset: u64) -> io::Result<bool> {
        self.write_direct_with(blocks, offset, true)
    }

    fn write_direct(&self, blocks: &[u8], offset: u64) -> io::Result<bool> {
        self.write_direct_with(blocks, offset, false)
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(());
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        // SAFETY: a plain system call on a descriptor this value owns; it reads no memory of
        // ours and cannot change what the file holds.
        let rc = unsafe { libc::sync_file_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn will_need(&self, offset: u64, len: u64) {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        // SAFETY: a plain system call on a descriptor this value owns; advice reads no memory
        // of ours and changes nothing the file holds.
        let _ = unsafe { libc::posix_fadvise(fd, offset, len, libc::POSIX_FADV_WILLNEED) };
    }

    fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let Ok(offset) = i64::try_from(offset) else {
            return Ok(false);
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.file);
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `iov` describes `buf`, memory this call may write of exactly its length,
        // borrowed mutably for the whole call.
        let read = unsafe { libc::preadv2(fd, &iov, 1, offset, libc::RWF_NOWAIT) };
        if read >= 0 {
            return Ok(read as usize == buf.len());
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            // Not cached, or no RWF_NOWAIT here (older kernels, some file systems).
            Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => Ok(false),
            _ => Err(error),
        }
    }

    fn map_shared(&self) -> io::Result<Mapping> {
        let len_bytes = usize::try_from(self.len()?).map_err(io::Error::other)?;
        if len_bytes == 0 {
            return Ok(Mapping::new(std::ptr::null_mut(), 0, false, Box::new(())));
        }
        // SAFETY: Vellum never truncates a file while a mapping of it lives (the `set_len`
        // contract), so the mapped range stays backed by the file; concurrent changes through
        // `write_at` are visible through the mapping and the readers' invariants (see
        // `Mapping::bytes`) keep them off bytes that are being read.
        let map = unsafe { memmap2::MmapOptions::new().len(len_bytes).map(&self.file) };
        let map = map.map_err(|e| mapping_error(e, len_bytes))?;
        let ptr = map.as_ptr().cast_mut();
        Ok(Mapping::new(ptr, len_bytes, false, Box::new(map)))
    }

    fn map_private(&self) -> io::Result<Mapping> {
        self.map_copy(true)
    }

    fn map_private_detached(&self) -> io::Result<Mapping> {
        self.map_copy(false)
    }
}

impl RealFile {
    /// A private mapping of the whole file, keeping a descriptor of it for ranges mapped back
    /// from the file later (`keep_file`) or not.
    fn map_copy(&self, keep_file: bool) -> io::Result<Mapping> {
        let len_bytes = usize::try_from(self.len()?).map_err(io::Error::other)?;
        if len_bytes == 0 {
            return Ok(Mapping::new(std::ptr::null_mut(), 0, true, Box::new(())));
        }
        // SAFETY: a copy-on-write mapping: stores stay in this process's private pages and never
        // reach the file. The file is not truncated while mapped (the `set_len` contract). The
        // mapping stays valid after the descriptor is closed (the kernel keeps the file).
        let map = unsafe { memmap2::MmapOptions::new().len(len_bytes).map_copy(&self.file) };
        let mut map = map.map_err(|e| mapping_error(e, len_bytes))?;
        let ptr = map.as_mut_ptr();
        advise_random(ptr, len_bytes);
        let file = keep_file.then(|| self.file.clone());
        Ok(Mapping::new(
            ptr,
            len_bytes,
            true,
            Box::new(PrivateFileMap { map, file }),
        ))
    }
}

/// A private mapping of a real file, with the file it maps: a range may be replaced by fresh
/// anonymous memory (`zero_fresh`), and a release maps the file back over it (only where the
/// mapping kept the file: `None` for [`StorageFile::map_private_detached`]).
struct PrivateFileMap {
    map: memmap2::MmapMut,
    file: Option<Arc<File>>,
}

impl PrivateFileMap {
    /// Maps `len_bytes` at `ptr` anew, in place (`MAP_FIXED`): from the file (`anonymous`
    /// false) or as fresh zeros. The kernel replaces the old pages and maps the new ones in
    /// one step under the process's address-space lock, so another thread never sees the range
    /// unmapped: an access meanwhile waits, then faults in the new pages.
    ///
    /// # Safety
    /// `ptr..ptr + len_bytes` is whole pages inside `self.map`.
    unsafe fn remap(&self, ptr: *mut u8, len_bytes: usize, anonymous: bool) -> io::Result<()> {
        use std::os::unix::io::AsRawFd;
        let offset = ptr as usize - self.map.as_ptr() as usize;
        let (flags, fd, file_offset) = if anonymous {
            (libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_ANONYMOUS, -1, 0)
        } else {
            let Some(file) = &self.file else {
                return Err(io::ErrorKind::Unsupported.into());
            };
            let file_offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
            (libc::MAP_PRIVATE | libc::MAP_FIXED, file.as_raw_fd(), file_offset)
        };
        // SAFETY: the range lies inside `self.map` (the caller's contract), so MAP_FIXED
        // replaces only memory this mapping owns, and `self.map`'s munmap at drop still covers
        // exactly the pages mapped here. Protection and privacy are the mapping's own.
        let mapped = unsafe {
            libc::mmap(
                ptr.cast(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                file_offset,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        assert_eq!(mapped.cast::<u8>(), ptr, "MAP_FIXED maps at the address given");
        if !anonymous {
            // A mapping made anew has no advice: the file's pages are read at random again.
            advise_random(ptr, len_bytes);
        }
        Ok(())
    }
}

/// Advises that the pages of `len_bytes` at `ptr`, whole pages of a live private file mapping,
/// are read at random (`MADV_RANDOM`, see [`StorageFile::map_private`]). A hint: a kernel that
/// declines it reads ahead as before.
fn advise_random(ptr: *mut u8, len_bytes: usize) {
    // SAFETY: the range is whole pages of a live mapping this file's code just made (page-
    // aligned: a mapping starts at a page and `remap` takes whole pages). The advice changes
    // how later faults read the file, never a byte of the range.
    let _ = unsafe { libc::madvise(ptr.cast(), len_bytes, libc::MADV_RANDOM) };
}

impl super::Backing for PrivateFileMap {
    unsafe fn release(&self, ptr: *mut u8, len_bytes: usize) -> io::Result<()> {
        // SAFETY: the caller's contract (`Mapping::release`) over whole pages of this mapping.
        unsafe { super::Backing::release(&self.map, ptr, len_bytes) }
    }

    unsafe fn release_fresh(&self, ptr: *mut u8, len_bytes: usize) -> io::Result<()> {
        // SAFETY: the caller's contract (`Mapping::release_fresh`): whole pages of this mapping
        // whose bytes the file durably holds. Mapping the file back drops the fresh memory,
        // where MADV_DONTNEED would leave the range reading as zeros rather than the file.
        unsafe { self.remap(ptr, len_bytes, false) }
    }

    unsafe fn zero_fresh(&self, ptr: *mut u8, len_bytes: usize) -> io::Result<()> {
        // SAFETY: the caller's contract (`Mapping::zero_fresh`): whole pages of this mapping
        // that no other thread uses meanwhile.
        unsafe { self.remap(ptr, len_bytes, true) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "copies a real file")]
    fn copy_file_copies_every_byte_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let storage = RealStorage::new();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        storage.open(&from, true).unwrap().write_at(&bytes, 0).unwrap();
        storage.copy_file(&from, &to).unwrap();
        assert!(fs::read(&to).unwrap() == bytes, "the copy holds the same bytes");
        let again = storage.copy_file(&from, &to).unwrap_err();
        assert_eq!(
            again.kind(),
            io::ErrorKind::AlreadyExists,
            "an existing file is never replaced"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "allocates a real file")]
    fn the_length_a_file_reports_follows_every_call_that_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = RealStorage::new().open(&dir.path().join("f"), true).unwrap();
        assert_eq!(file.len().unwrap(), 0, "new");
        file.write_at(&[1; 100], 0).unwrap();
        assert_eq!(file.len().unwrap(), 100, "a write past the end grows it");
        file.write_at(&[2; 10], 20).unwrap();
        assert_eq!(file.len().unwrap(), 100, "a write inside it does not");
        file.set_len(50).unwrap();
        assert_eq!(file.len().unwrap(), 50, "set_len shrinks it");
        if file.allocate(8192).unwrap() {
            assert_eq!(file.len().unwrap(), 8192, "allocate grows it");
            assert!(file.allocate(8192).unwrap(), "and then covers it");
        }
        file.write_at(&[3; 10], 9000).unwrap();
        assert_eq!(file.len().unwrap(), 9010, "a write far past the end grows it");
        let map = file.map_private().unwrap();
        assert_eq!(map.len(), 9010, "the mapping takes the length as it is now");
    }

    #[test]
    #[cfg_attr(miri, ignore = "real files")]
    fn a_cached_read_gives_the_file_s_bytes_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = RealStorage::new().open(&dir.path().join("f"), true).unwrap();
        let bytes: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        file.write_at(&bytes, 0).unwrap();
        let mut buf = [0u8; 64];
        if file.read_cached(&mut buf, 4096).unwrap() {
            assert_eq!(
                &buf[..],
                &bytes[4096..4160],
                "the bytes just written, from the page cache"
            );
        }
        let mut past = [0u8; 64];
        assert!(
            !file.read_cached(&mut past, 8160).unwrap(),
            "a read running past the end fills nothing whole"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "allocates a real file")]
    fn allocate_reserves_a_full_length_of_zeros_or_declines_without_a_change() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spare");
        let file = RealStorage::new().open(&path, true).unwrap();
        let len_bytes = 3 << 20;
        if file.allocate(len_bytes).unwrap() {
            assert_eq!(file.len().unwrap(), len_bytes, "allocation sets the length");
            assert!(
                fs::metadata(&path).unwrap().blocks() * 512 >= len_bytes,
                "every block is reserved (a full disk shows up now, not at a later write)"
            );
            assert!(
                fs::read(&path).unwrap().iter().all(|&b| b == 0),
                "the file reads as zeros"
            );
        } else {
            assert_eq!(
                file.len().unwrap(),
                0,
                "a file system that cannot allocate changes nothing"
            );
        }
    }

    /// The `Anonymous:` kilobytes of the mapping holding `ptr`, from `/proc/self/smaps`: the
    /// private copies its pages hold.
    fn anonymous_kib_at(ptr: *const u8) -> u64 {
        smaps_field_at(ptr, "Anonymous:")
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// True if the mapping holding `ptr` reads its file at random (`MADV_RANDOM`: `rr`).
    fn is_read_at_random(ptr: *const u8) -> bool {
        smaps_field_at(ptr, "VmFlags:")
            .split_whitespace()
            .any(|flag| flag == "rr")
    }

    /// The value of `field` in `/proc/self/smaps` for the mapping holding `ptr`.
    fn smaps_field_at(ptr: *const u8, field: &str) -> String {
        let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
        let address = ptr as usize;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((start, end)) = first.split_once('-')
                && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
            {
                inside = (start..end).contains(&address);
            } else if inside && first == field {
                return line[field.len()..].trim().to_string();
            }
        }
        panic!("no mapping holds {ptr:?}");
    }

    /// A file of eight OS pages of 0xAA, synced, mapped private; its directory, and the page size.
    fn private_map_of_eight_pages_of_0xaa() -> (tempfile::TempDir, Arc<dyn StorageFile>, Mapping, usize) {
        let dir = tempfile::tempdir().unwrap();
        let file = RealStorage::new().open(&dir.path().join("f"), true).unwrap();
        let page = super::super::os_page_bytes();
        file.write_at(&vec![0xAA; 8 * page], 0).unwrap();
        file.sync_data().unwrap();
        let map = file.map_private().unwrap();
        (dir, file, map, page)
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps a real file")]
    fn a_released_page_shows_the_file_and_its_private_copy_is_freed() {
        let (_dir, file, map, page) = private_map_of_eight_pages_of_0xaa();
        // SAFETY: the mapping lives for the whole test, and only this thread touches it.
        unsafe { map.write(0, &vec![0xBB; 8 * page]) };
        assert!(
            anonymous_kib_at(map.ptr_at(0)) >= 8 * page as u64 / 1024,
            "every page stored into is a private copy"
        );
        // The file now holds different bytes for pages 2..6, durably: a release must show
        // them (the refault reads the file, not the copy it drops).
        file.write_at(&vec![0xCC; 4 * page], 2 * page as u64).unwrap();
        file.sync_data().unwrap();
        // SAFETY: no thread reads or writes the range, and the test wants the file's bytes.
        unsafe { map.release(2 * page, 4 * page) }.unwrap();
        // SAFETY: nothing writes the mapping while these slices live.
        let (head, released, tail) = unsafe {
            (
                map.bytes(0, 2 * page),
                map.bytes(2 * page, 4 * page),
                map.bytes(6 * page, 2 * page),
            )
        };
        assert!(released.iter().all(|&b| b == 0xCC), "released pages read the file");
        assert!(
            head.iter().chain(tail).all(|&b| b == 0xBB),
            "pages outside the range keep their copies"
        );
        let anonymous_kib = anonymous_kib_at(map.ptr_at(0));
        assert!(
            anonymous_kib <= 4 * page as u64 / 1024,
            "the released copies are freed: {anonymous_kib} KiB of private pages left"
        );
        let mut on_disk = vec![0u8; 8 * page];
        file.read_at(&mut on_disk, 0).unwrap();
        assert!(
            on_disk[..2 * page].iter().all(|&b| b == 0xAA),
            "stores into the mapping never reach the file"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps a real file")]
    fn a_fresh_range_reads_zeros_without_the_file_and_its_release_maps_the_file_back() {
        let (_dir, file, map, page) = private_map_of_eight_pages_of_0xaa();
        assert!(
            is_read_at_random(map.ptr_at(0)),
            "a private mapping reads its file at random"
        );
        // SAFETY: the mapping lives for the whole test, and only this thread touches it.
        unsafe { map.zero_fresh(2 * page, 4 * page) }.unwrap();
        // SAFETY: nothing writes the mapping while these slices live.
        let (head, fresh) = unsafe { (map.bytes(0, 2 * page), map.bytes(2 * page, 4 * page)) };
        assert!(fresh.iter().all(|&b| b == 0), "a fresh range reads zeros, not the file");
        assert!(
            head.iter().all(|&b| b == 0xAA),
            "the rest of the mapping still shows the file"
        );
        // SAFETY: as above.
        unsafe { map.write(2 * page, &vec![0xDD; 4 * page]) };
        file.write_at(&vec![0xEE; 4 * page], 2 * page as u64).unwrap();
        file.sync_data().unwrap();
        // SAFETY: no thread reads or writes the range, and the test wants the file's bytes.
        unsafe { map.release_fresh(2 * page, 4 * page) }.unwrap();
        // SAFETY: nothing writes the mapping while this slice lives.
        let released = unsafe { map.bytes(2 * page, 4 * page) };
        assert!(
            released.iter().all(|&b| b == 0xEE),
            "a released fresh range reads the file again (MADV_DONTNEED would leave zeros)"
        );
        assert_eq!(anonymous_kib_at(map.ptr_at(2 * page)), 0, "its fresh memory is freed");
        assert!(
            is_read_at_random(map.ptr_at(2 * page)),
            "the file mapped back over the range is read at random too"
        );
        let mut on_disk = vec![0u8; 2 * page];
        file.read_at(&mut on_disk, 0).unwrap();
        assert!(
            on_disk.iter().all(|&b| b == 0xAA),
            "nothing of this reached the file by itself"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps a real file")]
    fn a_release_of_part_of_a_page_or_of_a_shared_mapping_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = RealStorage::new().open(&dir.path().join("f"), true).unwrap();
        let page = super::super::os_page_bytes();
        file.write_at(&vec![0xAA; 2 * page], 0).unwrap();
        let map = file.map_private().unwrap();
        // SAFETY: only this thread touches the mapping.
        unsafe { map.write(0, &vec![0xBB; 2 * page]) };
        // SAFETY: the call must refuse before it changes anything.
        let partial = unsafe { map.release(page / 2, page) };
        assert!(
            matches!(&partial, Err(e) if e.kind() == io::ErrorKind::InvalidInput),
            "{partial:?}"
        );
        // SAFETY: nothing writes the mapping while the slice lives.
        let bytes = unsafe { map.bytes(0, 2 * page) };
        assert!(bytes.iter().all(|&b| b == 0xBB), "nothing changed");
        let shared = file.map_shared().unwrap();
        // SAFETY: a shared mapping has no private copy; nothing is changed.
        let refused = unsafe { shared.release(0, page) };
        assert!(
            matches!(&refused, Err(e) if e.kind() == io::ErrorKind::Unsupported),
            "{refused:?}"
        );
    }
}
