//! The paged vector arena: two page spaces (catalog, vector), each a sequence of fixed-size
//! files of fixed-size pages, mapped private (copy-on-write).
//!
//! Invariants:
//! - A mapping never moves once made; the arena grows by adding files. Pointers into pages stay
//!   valid for the arena's lifetime.
//! - Stores into a private mapping never reach the file, so the OS cannot write an arena page
//!   back behind the WAL's back. Pages reach their files only through [`Arena::write_page`]
//!   (pwrite), called by the checkpointer (or a bulk call for the pages of its stored writes,
//!   store/stored.rs) after the WAL is durable through the page LSN.
//! - Every file is mapped from the file itself, so a page changed in memory (a private copy,
//!   anonymous memory) can give that memory back once its file durably holds the same bytes
//!   ([`Arena::release_page`], under the page's exclusive latch): it then reads from the page
//!   cache again. A page is written to its file only while it is dirty, that is while its
//!   memory is a private copy, so a released page never shows a later write.
//! - A page formatted whole may instead be fresh anonymous memory mapped over its range
//!   ([`Mapping::zero_fresh`]: no read and copy of the file's page of zeros); its bit in
//!   `ArenaFile::fresh` says so, and its release maps the file back over it. At most
//!   `FRESH_RUNS_MAX` runs of adjacent fresh pages exist at once (each run is a mapping of its
//!   own in the kernel's table, of which a process has a limited number).
//! - Page bytes are modified only under the page's latch; readers read committed slots without
//!   a latch, and the store guarantees no writer touches a reachable committed slot.
//! - A page read from its file is verified (checksum, own id) before first use.

pub mod doublewrite;
mod read_ahead;
mod runs;

pub use read_ahead::ReadAhead;
pub use runs::RUN_PAGES_MAX;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{IoContext, Result};
use crate::format::page::{self, PAGE_LSN_OFFSET, PageId, Space};
use crate::storage::{Mapping, Storage, StorageFile};
use crate::{Error, Lsn};

const LATCH_STRIPES: usize = 1024;

/// A page borrowed under its shared latch (see [`Arena::read_page`]).
pub struct PageRead<'a> {
    _latch: RwLockReadGuard<'a, ()>,
    bytes: &'a [u8],
}

impl std::ops::Deref for PageRead<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

/// A page checked in use and located in its file's mapping (see [`Arena::page_in_use`]).
#[derive(Clone, Copy)]
pub struct PageInUse<'a> {
    map: &'a Mapping,
    page_offset: usize,
    page_size_bytes: usize,
}

impl PageInUse<'_> {
    /// The address of byte `offset` of the page; stays valid for the arena's lifetime.
    pub fn ptr(&self, offset: usize) -> *mut u8 {
        assert!(offset <= self.page_size_bytes, "an offset inside the page");
        self.map.ptr_at(self.page_offset + offset)
    }

    /// Copies `buf.len()` bytes at `offset` out, as [`Arena::read`] does (the caller holds the
    /// latch or reads bytes no writer touches).
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(offset + buf.len() <= self.page_size_bytes, "read inside the page");
        // SAFETY: the range lies inside the page (asserted), inside a mapping that lives as
        // long as the arena; the caller excludes concurrent writes as for `Arena::read`.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(offset), buf.as_mut_ptr(), buf.len()) }
    }

    /// Asks the CPU to bring `len_bytes` from `offset` into its caches (a hint: no byte read).
    pub fn prefetch(&self, offset: usize, len_bytes: usize) {
        assert!(offset + len_bytes <= self.page_size_bytes, "a hint inside the page");
        let ptr = self.ptr(offset);
        for line in (0..len_bytes).step_by(64) {
            crate::hint::prefetch_line(ptr.wrapping_add(line));
        }
    }
}

/// One arena file, mapped private: a file the open found is mapped at the first use of one of
/// its pages, so that an open maps none of a large store's files but the few it reads (a
/// `mmap` was ~2 µs a file, 30 % of a warm open of 51 files). The open opens and checks the
/// first and the last file of each space; every other file it found is opened and checked at
/// that first use too, before any byte of it is mapped ([`ArenaFile::try_file`]): three system
/// calls a file were most of a warm open of a 1 GiB store's 78 files.
struct ArenaFile {
    path: PathBuf,
    /// The open file, checked: set when the open checks it or creates it, else at first use.
    file: OnceLock<Arc<dyn StorageFile>>,
    /// For a file left to its first use: its space and number, and how to check it then.
    deferred: Option<(Space, u64, Arc<FileCheck>)>,
    mapped: OnceLock<Mapping>,
    /// Bit `i` set: page `i` of the file has been verified (or written in memory) since open.
    verified: Box<[AtomicU64]>,
    /// Bit `i` set: page `i` is fresh memory (`Mapping::zero_fresh`) not yet given back.
    /// Changed only under the page's exclusive latch.
    fresh: Box<[AtomicU64]>,
    /// Bit `i` set: page `i` was asked for (`MADV_WILLNEED`) since the open or its last
    /// release, so neither a reader that asks ahead nor its first check asks again (a system
    /// call each, a tenth of a warm walk's time). A hint's bookkeeping only.
    asked: Box<[AtomicU64]>,
}

impl ArenaFile {
    /// Marks page `index` asked for; true if it was not yet (the caller asks for it now).
    fn take_ask(&self, index: u64) -> bool {
        let (word, bit) = (&self.asked[(index / 64) as usize], 1u64 << (index % 64));
        word.load(Ordering::Relaxed) & bit == 0 && word.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// Marks pages `from..from + count` asked for (a window asked for whole, or found read).
    fn mark_asked(&self, from: u64, count: u64) {
        for index in from..from + count {
            self.take_ask(index);
        }
    }

    /// The file's mapping, made now if no page of the file was used since the open (two
    /// threads may both map it: one mapping is kept, the other unmapped). A failure is the
    /// caller's to report: the gates every first use passes ([`Arena::verify`] for a page
    /// read, [`Arena::ensure_page`] for a page formatted) return it as an error.
    fn try_map(&self) -> Result<&Mapping> {
        if let Some(map) = self.mapped.get() {
            return Ok(map);
        }
        let map = if self.file.get().is_none() && self.reads_only() {
            // A reader keeps no descriptor of a file it maps at its first use: it never writes
            // the file, syncs it or maps it back over a page, and the mapping keeps its pages.
            // A search of a store of more files than the process may have open (a container's
            // `ulimit -n` of 1,024 against the 1,000 files of a 16 GiB store) read them all.
            self.checked_file()?.map_private_detached()
        } else {
            self.try_file()?.map_private()
        };
        let map = map.context(|| format!("mapping {}", self.path.display()))?;
        Ok(self.mapped.get_or_init(|| map))
    }

    /// The open file, opened and checked now (as the open checks the files it opens: length,
    /// identity, allocation) if the open left it to its first use; a short, renamed or foreign
    /// file is `Corrupted` here, before anything maps it. Two threads may both check it: one
    /// handle is kept.
    fn try_file(&self) -> Result<&Arc<dyn StorageFile>> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let file = self.checked_file()?;
        Ok(self.file.get_or_init(|| file))
    }

    /// The file the open left to its first use, opened and checked now, and kept by no one.
    fn checked_file(&self) -> Result<Arc<dyn StorageFile>> {
        let (space, file_no, check) = self
            .deferred
            .as_ref()
            .expect("a file without a handle is one the open left to its first use");
        check.check(check.open(&self.path)?, &self.path, *space, *file_no)
    }

    /// True if the file was left to its first use by an arena opened read-only.
    fn reads_only(&self) -> bool {
        self.deferred.as_ref().is_some_and(|(_, _, check)| check.read_only)
    }

    /// The open file, where it was opened (a file with a page written to it always was).
    fn opened(&self) -> Option<&Arc<dyn StorageFile>> {
        self.file.get()
    }

    /// Whether page `index` of the file has been verified (or written in memory) since open.
    #[inline]
    fn is_verified_at(&self, index: u64) -> bool {
        self.verified[(index / 64) as usize].load(Ordering::Relaxed) & (1 << (index % 64)) != 0
    }

    /// The file's mapping, which a gate made before this use (see [`ArenaFile::try_map`]).
    fn map(&self) -> &Mapping {
        self.try_map()
            .unwrap_or_else(|error| panic!("a page used before its gate mapped its file: {error}"))
    }
}

/// The most runs of adjacent pages formatted in fresh memory and not yet given back. Each run
/// is a mapping of its own in the kernel's table until its release maps the file back (and
/// splits the file's mapping around it), and a process has at most ~65,000 mappings
/// (`vm.max_map_count`): 4,096 runs keep far below that. A page that would start a run past
/// the limit is formatted through the file's mapping as before; one next to a fresh page
/// joins its run, so a bulk load or a recovery's redo, which format pages in order, makes
/// its pages fresh however many there are (their memory is dirty pages, under the budget).
const FRESH_RUNS_MAX: usize = 4096;

/// File slots of the first chunk of a [`FileTable`]; chunk `k` holds this many times `2^k`, so
/// a store of few files allocates few slots at its open (one chunk of 1,024 slots per space was
/// 224 KiB written at every open: a tenth of a warm open), and a store of millions of files
/// still finds each in one chunk.
const FIRST_CHUNK_FILES: usize = 16;
/// Chunks of a [`FileTable`]: room for [`FILES_MAX`] files, over two million (about 32 TiB of
/// 16 MiB files).
const FILE_CHUNKS: usize = 17;
/// The files a [`FileTable`] has room for.
const FILES_MAX: usize = FIRST_CHUNK_FILES * ((1 << FILE_CHUNKS) - 1);
/// A chunk of file slots, allocated when its first file is added.
type FileChunk = Box<[OnceLock<ArenaFile>]>;

/// The chunk holding file `file_no`, and its slot there.
#[inline]
fn chunk_of(file_no: usize) -> (usize, usize) {
    let n = file_no / FIRST_CHUNK_FILES + 1;
    let chunk = (usize::BITS - 1 - n.leading_zeros()) as usize;
    (chunk, file_no - FIRST_CHUNK_FILES * ((1 << chunk) - 1))
}

/// The files of one page space: an append-only table whose entries never change once set, so
/// a reader (every `get`) finds a file with two atomic loads, no lock and no reference count.
/// Files are added under `grow`, one at a time, in file-number order.
struct FileTable {
    chunks: [OnceLock<FileChunk>; FILE_CHUNKS],
    len: AtomicUsize,
    grow: Mutex<()>,
}

impl FileTable {
    fn new() -> FileTable {
        FileTable {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
            grow: Mutex::new(()),
        }
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    #[inline]
    fn get(&self, file_no: usize) -> Option<&ArenaFile> {
        let (chunk, slot) = chunk_of(file_no);
        self.chunks.get(chunk)?.get()?.get(slot)?.get()
    }

    /// Appends `file` as file number `len()`. The caller holds `grow`.
    fn push(&self, file: ArenaFile) {
        let file_no = self.len.load(Ordering::Acquire);
        let (chunk, slot) = chunk_of(file_no);
        assert!(chunk < FILE_CHUNKS, "map_file refuses a file past the table");
        let slots = self.chunks[chunk].get_or_init(|| (0..FIRST_CHUNK_FILES << chunk).map(|_| OnceLock::new()).collect());
        assert!(slots[slot].set(file).is_ok(), "file {file_no} added twice");
        self.len.store(file_no + 1, Ordering::Release);
    }

    fn iter(&self) -> impl Iterator<Item = &ArenaFile> {
        (0..self.len()).map(|n| self.get(n).expect("files below len are set"))
    }
}

/// How an arena is opened.
#[derive(Clone, Copy, Debug)]
pub struct ArenaOpen {
    /// Stamped into every page this arena formats, and checked in every page it reads.
    pub store_id: u64,
    /// Change no file: files the log needs that are missing (created after the last checkpoint
    /// and lost in a crash) are stood in for by anonymous memory.
    pub read_only: bool,
    /// The files each space must have at least (the checkpoint in force's count; files made
    /// since may be missing after a crash, and their pages are redone from the log).
    pub files_min: [u32; 2],
}

impl ArenaOpen {
    /// A writable arena of store 1 that requires no file (unit tests).
    #[cfg(test)]
    pub const TEST: ArenaOpen = ArenaOpen {
        store_id: 1,
        read_only: false,
        files_min: [0, 0],
    };
}

/// The arena of one store.
pub struct Arena {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    page_size_bytes: u32,
    pages_per_file: u64,
    /// `log2(pages_per_file)` where that is a power of two (see [`Arena::split`]).
    pages_per_file_shift: Option<u32>,
    spaces: [FileTable; 2],
    latches: Box<[RwLock<()>]>,
    /// Files were created since the directory was last synced.
    new_files: std::sync::atomic::AtomicBool,
    /// Runs of adjacent fresh pages (see [`FRESH_RUNS_MAX`]); held while a fresh bit changes.
    fresh_runs: Mutex<usize>,
    /// Temporary files an interrupted file creation left, as the open listed them (removed by
    /// [`Arena::remove_leftovers`] without listing the directory again).
    leftovers: Mutex<Vec<String>>,
    /// How an existing file is checked, at open or at its first use; also the arena's store id
    /// and whether it is read-only.
    file_check: Arc<FileCheck>,
    /// Every page in a file has a page LSN below this (0: not known yet): the end of the log
    /// the open found, raised to the durable LSN before each write of pages (see
    /// [`Arena::raise_lsn_bound`]).
    lsn_bound: AtomicU64,
    /// The file [`Arena::read_page_from_file`] read last, where the arena keeps no descriptor
    /// of it (a reader's), with its descriptor.
    last_read: Mutex<Option<(PathBuf, Arc<dyn StorageFile>)>>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena").field("dir", &self.dir).finish()
    }
}

/// The damage of a missing arena file.
fn missing_file(dir: &Path, space: Space, file_no: u64) -> Error {
    Error::corrupted_file(
        dir.join(arena_file_name(space, file_no)),
        format!("arena file {file_no} of the {} space is missing", space.name()),
    )
}

/// The file name of arena file `file_no` of `space`.
pub fn arena_file_name(space: Space, file_no: u64) -> String {
    match space {
        Space::Catalog => format!("catalog-{file_no:08x}.pages"),
        Space::Vector => format!("vector-{file_no:08x}.pages"),
    }
}

fn parse_arena_file_name(name: &str) -> Option<(Space, u64)> {
    let (space, rest) = if let Some(rest) = name.strip_prefix("catalog-") {
        (Space::Catalog, rest)
    } else {
        (Space::Vector, name.strip_prefix("vector-")?)
    };
    let hex = rest.strip_suffix(".pages")?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    Some((space, u64::from_str_radix(hex, 16).ok()?))
}

/// What checking an existing arena file takes (see [`FileCheck::check`]): shared by the arena
/// and the files it left to their first use.
struct FileCheck {
    storage: Arc<dyn Storage>,
    store_id: u64,
    read_only: bool,
    pages_per_file: u64,
    page_size_bytes: u32,
}

impl FileCheck {
    /// Opens existing arena file `path` (unchecked), its header not read.
    fn open(&self, path: &Path) -> Result<OpenedFile> {
        let file = if self.read_only {
            self.storage.open_read_only(path)
        } else {
            self.storage.open(path, false)
        }
        .context(|| format!("opening {}", path.display()))?;
        Ok(OpenedFile { file, header: None })
    }

    /// Checks existing arena file `file_no` of `space`, opened, for what can be checked without
    /// reading it all: its length, and that its first page, if ever written, is that page of
    /// this store (a file renamed or swapped in from another store is found here, at open or
    /// at the file's first use). A writer also makes sure every block of the file is
    /// allocated, so that no page of its mapping can ever lack backing (a hole read through a
    /// mapping on a full file system is a SIGBUS); files this version creates are allocated
    /// whole already, and then nothing changes.
    fn check(&self, opened: OpenedFile, path: &Path, space: Space, file_no: u64) -> Result<Arc<dyn StorageFile>> {
        let size_bytes = self.pages_per_file * u64::from(self.page_size_bytes);
        let OpenedFile { file, header: cached } = opened;
        let len_bytes = file
            .len()
            .context(|| format!("reading the length of {}", path.display()))?;
        if len_bytes != size_bytes {
            return Err(Error::corrupted_file(
                path,
                format!("arena file is {len_bytes} bytes, expected {size_bytes}"),
            ));
        }
        let first = PageId::new(space, file_no * self.pages_per_file);
        let header = match cached {
            Some(header) => header,
            None => {
                let mut header = [0u8; page::PAGE_HEADER_BYTES];
                file.read_at(&mut header, 0)
                    .context(|| format!("reading {}", path.display()))?;
                header
            }
        };
        if let Some(reason) = page::check_header_identity(&header, first, self.store_id) {
            return Err(Error::corrupted_file(path, reason));
        }
        if !self.read_only {
            file.allocate(size_bytes)
                .context(|| format!("allocating {}", path.display()))?;
        }
        Ok(file)
    }
}

/// How [`Arena::map_file`] comes by a file.
enum FileSource {
    /// An existing file the open opened, to check now.
    Opened(OpenedFile),
    /// An existing file the open found and left to its first use (see [`ArenaFile`]).
    Deferred,
    /// A new file the log needs.
    New,
}

/// An arena file the open found, with its first page's header if it was read already.
struct OpenedFile {
    file: Arc<dyn StorageFile>,
    header: Option<[u8; page::PAGE_HEADER_BYTES]>,
}

impl Arena {
    /// Opens (or starts) the arena in `dir` with files of `file_size_bytes`.
    ///
    /// Every file below `how.files_min` must be there at full length, and the first page of
    /// every file must, if it was ever written, name itself and this store: a missing, short,
    /// renamed or foreign file is damage (`Corrupted`, naming the file), never an empty space.
    /// A missing file is found here; the length and first page of the first and last file of
    /// each space are checked here, those of every other file at its first use (`ArenaFile`).
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        page_size_bytes: u32,
        file_size_bytes: u64,
        how: ArenaOpen,
    ) -> Result<Arena> {
        Self::prepare(storage, dir, page_size_bytes, file_size_bytes, how)?.finish()
    }

    /// The first half of [`Arena::open`]: lists the files, opens them and asks for the headers
    /// [`PreparedArena::finish`] checks. A store's open reads its log in between, so that
    /// after a cold start the disk serves both at once.
    pub fn prepare(
        storage: Arc<dyn Storage>,
        dir: &Path,
        page_size_bytes: u32,
        file_size_bytes: u64,
        how: ArenaOpen,
    ) -> Result<PreparedArena> {
        assert!(
            file_size_bytes.is_multiple_of(u64::from(page_size_bytes)),
            "arena files hold whole pages"
        );
        let pages_per_file = file_size_bytes / u64::from(page_size_bytes);
        let arena = Arena {
            storage: Arc::clone(&storage),
            dir: dir.to_path_buf(),
            page_size_bytes,
            pages_per_file,
            pages_per_file_shift: pages_per_file
                .is_power_of_two()
                .then(|| pages_per_file.trailing_zeros()),
            spaces: [FileTable::new(), FileTable::new()],
            latches: (0..LATCH_STRIPES).map(|_| RwLock::new(())).collect(),
            new_files: std::sync::atomic::AtomicBool::new(false),
            fresh_runs: Mutex::new(0),
            leftovers: Mutex::new(Vec::new()),
            file_check: Arc::new(FileCheck {
                storage,
                store_id: how.store_id,
                read_only: how.read_only,
                pages_per_file,
                page_size_bytes,
            }),
            lsn_bound: AtomicU64::new(0),
            last_read: Mutex::new(None),
        };
        let names = match arena.storage.list(dir) {
            // A missing directory is an arena of no files: damage if files were expected (the
            // check below names the first), else a store that has not written a page yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if how.files_min == [0, 0] && !how.read_only {
                    arena
                        .storage
                        .create_dir_all(dir)
                        .context(|| format!("creating {}", dir.display()))?;
                }
                Vec::new()
            }
            listed => listed.context(|| format!("listing {}", dir.display()))?,
        };
        *arena.leftovers.lock() = names.iter().filter(|n| n.ends_with(".pages.tmp")).cloned().collect();
        let mut found: Vec<(Space, u64)> = names.iter().filter_map(|n| parse_arena_file_name(n)).collect();
        found.sort();
        let mut expected = [0u64; 2];
        for &(space, file_no) in &found {
            if file_no != expected[space.index()] {
                return Err(missing_file(dir, space, expected[space.index()]));
            }
            expected[space.index()] += 1;
        }
        // The first and last file of each space are opened and checked now; the others at the
        // first use of one of their pages (see `ArenaFile`).
        let checked_now = |&(space, file_no): &(Space, u64)| file_no == 0 || file_no + 1 == expected[space.index()];
        let eager: Vec<(Space, u64)> = found.iter().copied().filter(checked_now).collect();
        let mut opened = arena.open_files(&eager)?.into_iter();
        let files = found
            .iter()
            .map(|file| {
                let source = if checked_now(file) {
                    FileSource::Opened(opened.next().expect("one opened file per file checked now"))
                } else {
                    FileSource::Deferred
                };
                (*file, source)
            })
            .collect();
        Ok(PreparedArena {
            arena,
            files,
            files_min: how.files_min,
        })
    }
}

/// An arena whose files are open and whose headers are asked for (see [`Arena::prepare`]).
pub struct PreparedArena {
    arena: Arena,
    files: Vec<((Space, u64), FileSource)>,
    files_min: [u32; 2],
}

impl PreparedArena {
    /// The second half of [`Arena::open`]: checks and maps every file.
    pub fn finish(self) -> Result<Arena> {
        let PreparedArena { arena, files, files_min } = self;
        for ((space, file_no), source) in files {
            arena.map_file(space, file_no, source)?;
        }
        for space in [Space::Catalog, Space::Vector] {
            let present = arena.file_count(space) as u64;
            if present < u64::from(files_min[space.index()]) {
                return Err(missing_file(&arena.dir, space, present));
            }
        }
        // A file found here may have been created by an open that never synced the directory
        // (it was dropped, or its checkpoint failed): its name is not known to be durable, so
        // the first checkpoint syncs the directory before it lets recovery start past the
        // file's page-init records.
        if arena.file_count(Space::Catalog) + arena.file_count(Space::Vector) > 0 {
            arena.new_files.store(true, Ordering::Release);
        }
        Ok(arena)
    }
}

impl Arena {
    /// The store id this arena stamps into the pages it formats.
    pub fn store_id(&self) -> u64 {
        self.file_check.store_id
    }

    pub fn page_size_bytes(&self) -> u32 {
        self.page_size_bytes
    }

    /// Pages per arena file.
    pub fn pages_per_file(&self) -> u64 {
        self.pages_per_file
    }

    /// How many pages of `space` exist.
    pub fn page_count(&self, space: Space) -> u64 {
        self.spaces[space.index()].len() as u64 * self.pages_per_file
    }

    /// Makes sure page `page_no` of `space` exists, adding zero-filled files as needed, and
    /// that its file is mapped (a failure to map it is this call's error).
    /// New files become durable at the next checkpoint (their pages are redone from the WAL
    /// until then).
    pub fn ensure_page(&self, id: PageId) -> Result<()> {
        let space = id.space();
        while self.page_count(space) <= id.page_no() {
            let file_no = self.spaces[space.index()].len() as u64;
            self.map_file(space, file_no, FileSource::New)?;
        }
        // A page formatted in a file the open found is the first use of that file, maybe.
        self.locate(id).0.try_map().map(|_| ())
    }

    /// Maps arena file `file_no` of `space` from `source` (see [`FileSource`]).
    fn map_file(&self, space: Space, file_no: u64, source: FileSource) -> Result<()> {
        let files = &self.spaces[space.index()];
        let _grow = files.grow.lock();
        if files.len() as u64 > file_no {
            return Ok(());
        }
        if file_no >= FILES_MAX as u64 {
            // A limit, not damage: the store cannot grow past it (about 32 TiB of 16 MiB files).
            return Err(Error::InvalidArgument(format!(
                "the {} space holds at most {FILES_MAX} arena files",
                space.name()
            )));
        }
        let path = self.dir.join(arena_file_name(space, file_no));
        let size_bytes = self.pages_per_file * u64::from(self.page_size_bytes);
        let (file, map) = if let FileSource::Opened(opened) = source {
            // Mapped at the first use of one of its pages (see `ArenaFile`).
            (Some(self.file_check.check(opened, &path, space, file_no)?), None)
        } else if let FileSource::Deferred = source {
            (None, None)
        } else if self.file_check.read_only {
            // A file the log needs but the checkpoint in force did not: it was lost in a crash
            // before its name was durable, and redo rebuilds its pages, in memory only here.
            let file = crate::storage::memory_file(size_bytes);
            let map = file.map_private().context(|| format!("mapping {}", path.display()))?;
            (Some(file), Some(map))
        } else {
            let file = self.create_file(&path, size_bytes)?;
            // Mapped from the file (allocated whole: no hole to fault on), not anonymous memory:
            // pages written back can then give their memory back (`release_page`).
            let map = file.map_private().context(|| format!("mapping {}", path.display()))?;
            (Some(file), Some(map))
        };
        let deferred = file.is_none().then(|| (space, file_no, Arc::clone(&self.file_check)));
        let mapped = map.map_or_else(OnceLock::new, OnceLock::from);
        let words = self.pages_per_file.div_ceil(64) as usize;
        files.push(ArenaFile {
            path,
            file: file.map_or_else(OnceLock::new, OnceLock::from),
            deferred,
            mapped,
            verified: (0..words).map(|_| AtomicU64::new(0)).collect(),
            fresh: (0..words).map(|_| AtomicU64::new(0)).collect(),
            asked: (0..words).map(|_| AtomicU64::new(0)).collect(),
        });
        Ok(())
    }

    /// Opens every existing arena file of `files` with its first page's header: read at once
    /// where the page cache holds it, else asked for (see [`StorageFile::will_need`]), so that
    /// after a cold start the reads [`FileCheck::check`] makes wait for the disk together, not
    /// one file after the other, and a warm open asks nothing more.
    fn open_files(&self, files: &[(Space, u64)]) -> Result<Vec<OpenedFile>> {
        let opened = files
            .iter()
            .map(|&(space, file_no)| {
                let path = self.dir.join(arena_file_name(space, file_no));
                self.file_check.open(&path).map(|opened| opened.file)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut with_headers = Vec::with_capacity(opened.len());
        // A read that misses the page cache starts the kernel's readahead of the file (128 KiB
        // or so), which would queue megabytes ahead of the reads the open needs next: once a
        // header is found not cached, the others are only asked for, a page each.
        let mut warm = true;
        for (file, &(space, file_no)) in opened.into_iter().zip(files) {
            let mut header = [0u8; page::PAGE_HEADER_BYTES];
            // An error here is met again, and reported, by FileCheck::check's own read.
            let cached = warm && file.read_cached(&mut header, 0).unwrap_or(false);
            if !cached {
                warm = false;
                // The first catalog page is the store's meta page, which the open reads whole
                // next: asked for whole.
                let first_page = space == Space::Catalog && file_no == 0;
                let len_bytes = if first_page { self.page_size_bytes as usize } else { page::PAGE_HEADER_BYTES };
                file.will_need(0, len_bytes as u64);
            }
            with_headers.push(OpenedFile {
                file,
                header: cached.then_some(header),
            });
        }
        Ok(with_headers)
    }

    /// Removes the files of each space from number `files[space]` on, best effort: files made
    /// ahead that no page used, past the extent a closing checkpoint recorded. Their mappings
    /// stay (nothing reads them: no page in them was initialised) until the arena is dropped.
    /// Only a close calls it, once the page preparer is stopped.
    pub fn remove_files_from(&self, files: [u32; 2]) {
        for space in [Space::Catalog, Space::Vector] {
            for file_no in u64::from(files[space.index()])..self.file_count(space) as u64 {
                let _ = self.storage.remove_file(&self.dir.join(arena_file_name(space, file_no)));
            }
        }
    }

    /// Removes files whose creation a crash interrupted (never renamed, so never used). Only a
    /// store opened for writing calls it: readers (`vellum verify`) change nothing.
    /// The open listed them; nothing creates an arena file before the caller removes them.
    pub fn remove_leftovers(&self) -> Result<()> {
        let mut leftovers = self.leftovers.lock();
        while let Some(tmp) = leftovers.last() {
            let path = self.dir.join(tmp);
            self.storage
                .remove_file(&path)
                .context(|| format!("removing {}", path.display()))?;
            leftovers.pop();
        }
        Ok(())
    }

    /// Creates the arena file `path` of `size_bytes` zero bytes. It is made under a temporary
    /// name, sized, synced and renamed, so a crash never leaves a file of the wrong size under
    /// an arena file's name (which open refuses as damage): the file is either absent (its
    /// pages are redone from the log) or whole. Its name is durable after the next directory
    /// sync (checkpoints do it).
    fn create_file(&self, path: &Path, size_bytes: u64) -> Result<Arc<dyn StorageFile>> {
        let tmp = path.with_extension("pages.tmp");
        let _ = self.storage.remove_file(&tmp);
        let result = self.create_tmp_file(&tmp, size_bytes).and_then(|file| {
            self.storage
                .rename(&tmp, path)
                .context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            Ok(file)
        });
        match result {
            Ok(file) => {
                self.new_files.store(true, Ordering::Release);
                Ok(file)
            }
            Err(error) => {
                // A full disk leaves nothing behind: the space a failed file took is given back.
                let _ = self.storage.remove_file(&tmp);
                Err(error)
            }
        }
    }

    /// Makes `tmp` a file of `size_bytes` zeros whose every block is allocated (`fallocate`, or
    /// zeros written where the file system cannot allocate): a full disk is `DiskFull` here,
    /// never a SIGBUS when a page of the mapping is first touched.
    fn create_tmp_file(&self, tmp: &Path, size_bytes: u64) -> Result<Arc<dyn StorageFile>> {
        let file = self
            .storage
            .open(tmp, true)
            .context(|| format!("creating {}", tmp.display()))?;
        let allocated = file
            .allocate(size_bytes)
            .context(|| format!("allocating {}", tmp.display()))?;
        if !allocated {
            static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
            let mut offset = 0;
            while offset < size_bytes {
                let n = (size_bytes - offset).min(ZEROS.len() as u64);
                file.write_at(&ZEROS[..n as usize], offset)
                    .context(|| format!("allocating {}", tmp.display()))?;
                offset += n;
            }
        }
        file.sync_data().context(|| format!("syncing {}", tmp.display()))?;
        Ok(file)
    }

    /// Page `page_no`'s file number and its index in that file: a shift and a mask where a
    /// file holds a power of two of pages (every default geometry). The two 64-bit divisions
    /// this replaces were ~7% of an insert's instructions (an insert locates ~20 pages).
    #[inline]
    fn split(&self, page_no: u64) -> (u64, u64) {
        match self.pages_per_file_shift {
            Some(shift) => (page_no >> shift, page_no & ((1u64 << shift) - 1)),
            None => (page_no / self.pages_per_file, page_no % self.pages_per_file),
        }
    }

    #[inline]
    fn locate(&self, id: PageId) -> (&ArenaFile, usize) {
        let (file_no, index) = self.split(id.page_no());
        let file = self.spaces[id.space().index()]
            .get(file_no as usize)
            .unwrap_or_else(|| panic!("{id} beyond the arena"));
        (file, index as usize * self.page_size_bytes as usize)
    }

    /// As [`Arena::page_ptr`] for a hint (a prefetch, a fault-in ahead): `None` where the page's
    /// file cannot be mapped now (the read or write that follows reports it).
    fn hint_ptr(&self, id: PageId, offset: usize) -> Option<*mut u8> {
        assert!(offset <= self.page_size_bytes as usize);
        let (file, page_offset) = self.locate(id);
        Some(file.try_map().ok()?.ptr_at(page_offset + offset))
    }

    /// The address of byte `offset` of page `id`; stays valid for the arena's lifetime.
    pub fn page_ptr(&self, id: PageId, offset: usize) -> *mut u8 {
        assert!(offset <= self.page_size_bytes as usize);
        let (file, page_offset) = self.locate(id);
        file.map().ptr_at(page_offset + offset)
    }

    /// The latch that serialises writes to page `id` (and whole-page copies of it), held
    /// exclusively. Latches are striped: one stripe covers many pages, so a holder takes no
    /// other latch while it holds one.
    pub fn latch(&self, id: PageId) -> RwLockWriteGuard<'_, ()> {
        self.latches[Self::stripe(id)].write()
    }

    fn stripe(id: PageId) -> usize {
        (id.0 ^ (id.0 >> 32)) as usize % LATCH_STRIPES
    }

    /// Page `id` as it is in memory, under its latch held shared: no write changes it while the
    /// returned guard lives. Readers of pages the writer changes in place (index nodes, owner
    /// tables) read them so. A reader holds one page at a time (see [`Arena::latch`]); the
    /// shared hold is recursive, so a writer waiting for the stripe never blocks it.
    pub fn read_page(&self, id: PageId) -> PageRead<'_> {
        let (file, page_offset) = self.locate(id);
        self.read_latched(id, file.map(), page_offset)
    }

    /// Page `id`, at `page_offset` of `map` (its file's mapping), under its shared latch.
    fn read_latched<'a>(&'a self, id: PageId, map: &'a Mapping, page_offset: usize) -> PageRead<'a> {
        let latch = self.latches[Self::stripe(id)].read_recursive();
        // SAFETY: the range is one page inside the mapping; every write to it happens under the
        // page's latch held exclusively (`Arena::write`, `Arena::move_within`), which cannot be
        // taken while `latch` is held, so the bytes do not change while the slice lives.
        let bytes = unsafe { map.bytes(page_offset, self.page_size_bytes as usize) };
        PageRead { _latch: latch, bytes }
    }

    /// Moves `len_bytes` bytes of page `id` from offset `from` to `to` (ranges may overlap).
    /// The caller holds the page latch.
    pub fn move_within(&self, id: PageId, from: usize, to: usize, len_bytes: usize) {
        assert!(
            from.max(to) + len_bytes <= self.page_size_bytes as usize,
            "move inside the page"
        );
        let (file, page_offset) = self.locate(id);
        self.mark_verified(file, id);
        // SAFETY: the caller holds the page latch (no concurrent writer, page copy or
        // `read_page` slice), and no reader borrows these bytes without it: readers borrow only
        // committed vector slots and catalog entries, never index nodes.
        unsafe { file.map().copy_within(page_offset + from, page_offset + to, len_bytes) }
    }

    /// Copies `buf.len()` bytes at `offset` of page `id` out.
    pub fn read(&self, id: PageId, offset: usize, buf: &mut [u8]) {
        assert!(
            offset + buf.len() <= self.page_size_bytes as usize,
            "read inside the page"
        );
        let ptr = self.page_ptr(id, offset);
        // SAFETY: the range lies inside the page (asserted) inside a live mapping; callers hold
        // the page latch or read bytes no writer touches (committed slots), so no write races.
        unsafe { std::ptr::copy_nonoverlapping(ptr, buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies `data` into page `id` at `offset`. The caller holds the page latch.
    pub fn write(&self, id: PageId, offset: usize, data: &[u8]) {
        assert!(
            offset + data.len() <= self.page_size_bytes as usize,
            "write inside the page"
        );
        let (file, page_offset) = self.locate(id);
        self.mark_verified(file, id);
        // SAFETY: the caller holds the page latch (no concurrent writer or page copy), and no
        // reader holds a slice over these bytes: readers only borrow committed slots, which
        // the store never writes while they are reachable.
        unsafe { file.map().write(page_offset + offset, data) }
    }

    /// The page LSN of page `id`.
    pub fn page_lsn(&self, id: PageId) -> Lsn {
        let mut bytes = [0u8; 8];
        self.read(id, PAGE_LSN_OFFSET, &mut bytes);
        Lsn(u64::from_le_bytes(bytes))
    }

    /// Sets the page LSN of page `id`. The caller holds the page latch.
    pub fn set_page_lsn(&self, id: PageId, lsn: Lsn) {
        self.write(id, PAGE_LSN_OFFSET, &lsn.0.to_le_bytes());
    }

    fn mark_verified(&self, file: &ArenaFile, id: PageId) {
        let (_, index) = self.split(id.page_no());
        let (word, bit) = (&file.verified[(index / 64) as usize], 1 << (index % 64));
        // A load first: the bit is set already for every write but a page's first, and a
        // read-modify-write of a word readers load was a few percent of a bulk insert.
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::Relaxed);
        }
    }

    /// Checks page `id` once after open: checksum, own id and owner store. Later calls are one
    /// atomic load. A never-written (all-zero) page passes but is not marked: it is checked
    /// again, so that [`Arena::verify_in_use`] can refuse it.
    pub fn verify(&self, id: PageId) -> Result<()> {
        let (file, _) = self.locate(id);
        if self.is_verified(id) {
            return Ok(());
        }
        // The first use of a page of a file the open found maps the file: a failure is this
        // read's error.
        file.try_map()?;
        // The mapping is read at random (`StorageFile::map_private`): the page's 4 KiB pieces
        // not in the page cache are asked for at once, one read, rather than a wait on the
        // disk for each as the check below meets it (unless a reader asked for it already).
        self.ask_ahead(id);
        // Under the shared latch: a writer that starts changing the page waits, so the
        // checksum is never taken over a page half written in memory.
        let image = self.read_page(id);
        // A writer that changed the page between the check above and the latch marked it
        // (under its exclusive latch): its checksum is stale in memory by design now.
        if self.is_verified(id) {
            return Ok(());
        }
        let reason = page::check_page(&image, id)
            .or_else(|| page::check_owner(&image, id, self.file_check.store_id))
            .or_else(|| page::check_page_lsn_below(&image, id, self.lsn_bound.load(Ordering::Acquire)));
        if let Some(reason) = reason {
            return Err(Error::corrupted_file(&file.path, reason));
        }
        if !page::is_all_zero(&image) {
            self.mark_verified(file, id);
        }
        Ok(())
    }

    /// Raises the LSN every page in a file lies below to `lsn`: the end of the log at open,
    /// then the durable LSN before each write of pages (the WAL rule: a page reaches its file
    /// only once the log is durable past its page LSN).
    pub fn raise_lsn_bound(&self, lsn: Lsn) {
        self.lsn_bound.fetch_max(lsn.get(), Ordering::AcqRel);
    }

    /// The damage `reason` of page `id`, naming its file.
    pub fn corrupted(&self, id: PageId, reason: impl Into<String>) -> Error {
        let space = id.space();
        let file_no = self.split(id.page_no()).0;
        Error::corrupted_file(self.dir.join(arena_file_name(space, file_no)), format!("{id}: {}", reason.into()))
    }

    /// Page `id`, checked as [`Arena::verify_in_use`] checks it, located once for the reads
    /// that follow (a point read uses each page it meets two or three times: its check, its
    /// latch, its bytes; locating each use again was a fifth of a read's instructions).
    pub fn page_in_use(&self, id: PageId) -> Result<PageInUse<'_>> {
        let (file, page_offset) = self.locate(id);
        let (_, index) = self.split(id.page_no());
        // A page is marked verified only after its file was mapped (its check read it through
        // the mapping, or a write went through it): the fast path finds the mapping made.
        let map = match (file.is_verified_at(index), file.mapped.get()) {
            (true, Some(map)) => map,
            _ => {
                self.verify_in_use(id)?;
                file.map()
            }
        };
        Ok(PageInUse {
            map,
            page_offset,
            page_size_bytes: self.page_size_bytes as usize,
        })
    }

    /// Page `id` under its shared latch, as [`Arena::read_page`], once checked as
    /// [`Arena::verify_in_use`] checks it.
    pub fn read_page_in_use(&self, id: PageId) -> Result<PageRead<'_>> {
        let page = self.page_in_use(id)?;
        Ok(self.read_latched(id, page.map, page.page_offset))
    }

    /// Like [`Arena::verify`], for a page the store holds data in (a vector a catalog entry
    /// points at): a page that reads as zero was lost, and is damage.
    pub fn verify_in_use(&self, id: PageId) -> Result<()> {
        if self.is_verified(id) {
            return Ok(());
        }
        self.verify(id)?;
        if !self.is_verified(id) {
            let (file, _) = self.locate(id);
            return Err(Error::corrupted_file(
                &file.path,
                format!("{id} is empty, but the store keeps data in it"),
            ));
        }
        Ok(())
    }

    /// True if page `id` is all zero in memory (never written).
    pub fn is_all_zero(&self, id: PageId) -> bool {
        crate::zeros::all_zero(&self.copy_page(id))
    }

    /// Checks that page `id`, about to be changed in place, is an initialised page naming
    /// itself: a page lost on disk (all zero) must not be written over as if it held data.
    pub fn check_in_use(&self, id: PageId) -> Result<()> {
        self.verify_in_use(id)?;
        let mut raw = [0u8; 8];
        self.read(id, page::PAGE_ID_OFFSET, &mut raw);
        if u64::from_le_bytes(raw) != id.0 {
            let (file, _) = self.locate(id);
            return Err(Error::corrupted_file(
                &file.path,
                format!("{id} is empty or not itself, but the store uses it"),
            ));
        }
        Ok(())
    }

    /// Faults pages `pages` (sorted, no repeats) into memory writable ahead of their first
    /// writes (recovery, `store::prefetch`): one `madvise(MADV_POPULATE_WRITE)` per run of adjacent pages
    /// of a file, where touching them would take a read fault and then a copy-on-write fault
    /// (and a TLB shootdown) per 4 KiB. Pages beyond the arena are left out. No byte of any
    /// page changes. A hint: on a kernel without it (Linux < 5.14), or elsewhere, it does
    /// nothing.
    pub fn prefault(&self, pages: &[PageId]) {
        // Every run is asked for first, so that the reads of pages not in the page cache are
        // queued together and each populate below finds its pages read (a populate of a page
        // not in the cache would read its whole readahead window, megabytes, and wait for it).
        self.will_need(pages);
        self.populate_pages(pages);
    }

    /// Asks the OS to start reading `pages` (sorted, no repeats) into the page cache, one
    /// `madvise(MADV_WILLNEED)` per run of adjacent pages; returns at once. A hint.
    pub fn will_need(&self, pages: &[PageId]) {
        self.for_each_run(pages, |ptr, len_bytes| advise(ptr, len_bytes, libc::MADV_WILLNEED));
    }

    /// Asks the OS to start reading pages `first..first + count` of `space` (those inside the
    /// arena) into the page cache, one `madvise(MADV_WILLNEED)` per file the range spans, and
    /// marks them asked for; returns at once. A hint (see [`ReadAhead`]).
    pub fn will_need_range(&self, space: Space, first: u64, count: u64) {
        let end = first.saturating_add(count).min(self.page_count(space));
        let mut page_no = first;
        while page_no < end {
            let (file, _) = self.locate(PageId::new(space, page_no));
            let (_, index) = self.split(page_no);
            let run = (self.pages_per_file - index).min(end - page_no);
            let len_bytes = run as usize * self.page_size_bytes as usize;
            // A range whose two ends are in memory is taken as read already (a pass over a
            // warm store): the advice would walk every page of it in the page cache, a fifth
            // of a warm exact search's time.
            if let Some(ptr) = self.hint_ptr(PageId::new(space, page_no), 0)
                && !ends_resident(ptr, len_bytes)
            {
                advise(ptr, len_bytes, libc::MADV_WILLNEED);
            }
            file.mark_asked(index, run);
            page_no += run;
        }
    }

    /// Faults `pages` (sorted, no repeats) in for writing, one call per run of adjacent pages,
    /// as [`Arena::prefault`] does; best after [`Arena::will_need`] asked for them.
    pub fn populate_pages(&self, pages: &[PageId]) {
        self.for_each_run(pages, populate_write);
    }

    /// Calls `f` with the address and length of each run of adjacent pages of one file in
    /// `pages` (sorted, no repeats); pages beyond the arena, or of a file that cannot be mapped
    /// now, are left out (every caller gives a hint).
    fn for_each_run(&self, pages: &[PageId], mut f: impl FnMut(*mut u8, usize)) {
        let page_bytes = self.page_size_bytes as usize;
        let mut i = 0;
        while i < pages.len() {
            let first = pages[i];
            let space = first.space();
            if first.page_no() >= self.page_count(space) {
                i += 1;
                continue;
            }
            let (file_no, _) = self.split(first.page_no());
            let mut run = 1;
            while let Some(next) = pages.get(i + run)
                && next.space() == space
                && next.page_no() == first.page_no() + run as u64
                && self.split(next.page_no()).0 == file_no
            {
                run += 1;
            }
            if let Some(ptr) = self.hint_ptr(first, 0) {
                f(ptr, run * page_bytes);
            }
            i += run;
        }
    }

    /// Asks the OS to start reading page `id` if it was not checked since the open: a reader
    /// that will meet it after another page (a point read's vector page, after its catalog
    /// page) waits for the disk once for both rather than once for each. Pages beyond the
    /// arena are left out. A hint.
    pub fn ask_ahead(&self, id: PageId) {
        if id.page_no() >= self.page_count(id.space()) {
            return;
        }
        let (file, _) = self.locate(id);
        let index = self.split(id.page_no()).1;
        if !file.is_verified_at(index) && file.take_ask(index) {
            self.will_need(std::slice::from_ref(&id));
        }
    }

    /// True if page `id` was verified or written since open.
    pub fn is_verified(&self, id: PageId) -> bool {
        let (file, _) = self.locate(id);
        file.is_verified_at(self.split(id.page_no()).1)
    }

    /// A copy of page `id` as it is in memory. Callers copying a page that may be written
    /// concurrently hold its latch.
    pub fn copy_page(&self, id: PageId) -> Vec<u8> {
        let mut image = vec![0u8; self.page_size_bytes as usize];
        self.read(id, 0, &mut image);
        image
    }

    /// Replaces page `id` in memory with `image` (a repair from the doublewrite area). The
    /// caller holds the latch.
    pub fn replace_page(&self, id: PageId, image: &[u8]) {
        assert_eq!(image.len(), self.page_size_bytes as usize);
        self.write(id, 0, image);
    }

    /// Writes `header` at the start of page `id`, which the caller knows holds only zeros (a
    /// page in fresh memory never written since it was made fresh): [`Arena::reset_page`]
    /// without the zeros. Checked in debug builds. The caller holds the latch.
    pub fn write_zeroed_page_header(&self, id: PageId, header: &[u8]) {
        debug_assert!(
            crate::zeros::all_zero(&self.copy_page(id)),
            "{id} is said to hold only zeros"
        );
        self.write(id, 0, header);
    }

    /// Formats page `id` in memory as `header` followed by zeros (an empty header: all zero).
    /// The caller holds the latch.
    /// Zeros come from a static block (the kernel's shared zero page backs it, so it stays in
    /// cache) rather than a page-sized buffer allocated, zeroed and copied for every format.
    pub fn reset_page(&self, id: PageId, header: &[u8]) {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let page_bytes = self.page_size_bytes as usize;
        assert!(header.len() <= page_bytes, "a page header fits its page");
        if self.format_fresh(id) {
            self.write(id, 0, header);
            return;
        }
        self.write(id, 0, header);
        let mut offset = header.len();
        while offset < page_bytes {
            let n = (page_bytes - offset).min(ZEROS.len());
            self.write(id, offset, &ZEROS[..n]);
            offset += n;
        }
    }

    /// Makes page `id` zeros in fresh memory, without the file's page being read and copied
    /// (`Mapping::zero_fresh`); false where the page is fresh already (zeros written into it
    /// cost less than a mapping call), the mapping cannot, or the page would start a run past
    /// [`FRESH_RUNS_MAX`]: the caller writes the zeros then. The caller holds the latch.
    fn format_fresh(&self, id: PageId) -> bool {
        let (file, page_offset) = self.locate(id);
        let (_, index) = self.split(id.page_no());
        let mut runs = self.fresh_runs.lock();
        if is_fresh(file, index) {
            return false;
        }
        let delta = self.fresh_runs_delta(file, index, 1, true);
        if delta > 0 && *runs + delta as usize > FRESH_RUNS_MAX {
            return false;
        }
        // SAFETY: the caller holds the page's latch exclusively: no write and no `PageRead` of
        // the page runs meanwhile, and a page being formatted holds nothing a latch-free
        // reader may read (it is new, or free and out of every reader's reach).
        if unsafe { file.map().zero_fresh(page_offset, self.page_size_bytes as usize) }.is_err() {
            return false;
        }
        self.set_fresh(file, index, 1, true, &mut runs);
        true
    }

    /// Gives back the memory of page `id`'s private copy: the page shows its file's bytes
    /// again, read from the page cache when next touched, and is verified again before its
    /// next use ([`Arena::verify`]). Returns false where the mapping
    /// could not (the page is not whole pages of the operating system, or the system refused):
    /// the copy stays as it was.
    ///
    /// # Safety
    /// - The caller holds the page's latch exclusively ([`Arena::latch`]): no write and no
    ///   [`PageRead`] of the page runs meanwhile.
    /// - The page's file durably holds the page's current bytes: a copy of them was written
    ///   with [`Arena::write_page`], a sync of the file succeeded after that write, and the page
    ///   has not changed since the copy. Only the checksum field may differ (it is stale in
    ///   memory by design), and only readers that ignore it may read it without the latch.
    /// - The page is not written to its file again before it is next stored into (only dirty
    ///   pages are written): until then the mapping shows the page-cache page itself.
    ///
    /// Readers that hold no latch (committed vector slots, catalog entries) may read the page
    /// during the call: every byte they use keeps its value.
    pub unsafe fn release_page(&self, id: PageId) -> bool {
        let (file, page_offset) = self.locate(id);
        let (_, index) = self.split(id.page_no());
        // The page's own bit changes only under its latch, which the caller holds.
        let fresh = is_fresh(file, index);
        let len_bytes = self.page_size_bytes as usize;
        let released = if fresh {
            // SAFETY: the caller's contract is `Mapping::release_fresh`'s for this page's
            // range (the same as `release`'s), and the page was made by `zero_fresh`.
            unsafe { file.map().release_fresh(page_offset, len_bytes) }.is_ok()
        } else {
            // SAFETY: the caller's contract is `Mapping::release`'s for this page's range.
            unsafe { file.map().release(page_offset, len_bytes) }.is_ok()
        };
        if released {
            self.after_release(file, index, 1, fresh);
        }
        released
    }

    /// Reads page `id` from its file (not from memory), for verification of what is on disk.
    /// An arena opened read-only reads a file it keeps no descriptor of through the one it
    /// opened last (verify reads the pages in order: one open a file).
    pub fn read_page_from_file(&self, id: PageId) -> Result<Vec<u8>> {
        let (file, page_offset) = self.locate(id);
        let mut image = vec![0u8; self.page_size_bytes as usize];
        let handle = match file.file.get() {
            Some(handle) => Arc::clone(handle),
            None if file.reads_only() => self.last_read_file(file)?,
            None => Arc::clone(file.try_file()?),
        };
        handle
            .read_at(&mut image, page_offset as u64)
            .context(|| format!("reading {id} from {}", file.path.display()))?;
        Ok(image)
    }

    /// The descriptor of `file` (one of a reader's, which keeps none) that
    /// [`Arena::read_page_from_file`] keeps between its calls, opened and checked now unless it
    /// was the last file read.
    fn last_read_file(&self, file: &ArenaFile) -> Result<Arc<dyn StorageFile>> {
        let mut last = self.last_read.lock();
        if let Some((path, handle)) = last.as_ref()
            && *path == file.path
        {
            return Ok(Arc::clone(handle));
        }
        // The one kept before is closed before the next is opened.
        *last = None;
        let handle = file.checked_file()?;
        *last = Some((file.path.clone(), Arc::clone(&handle)));
        Ok(handle)
    }

    /// Writes a sealed page image to its file (pwrite; made durable by [`Arena::sync`]).
    pub fn write_page(&self, id: PageId, image: &[u8]) -> Result<()> {
        assert_eq!(image.len(), self.page_size_bytes as usize);
        assert_eq!(
            page::check_page(image, id),
            None,
            "only sealed, valid pages are written"
        );
        let (file, page_offset) = self.locate(id);
        file.opened()
            .expect("a page written back was used, so its file was opened")
            .write_at(image, page_offset as u64)
            .context(|| format!("writing {id} to {}", file.path.display()))
    }

    /// The directory of the arena files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True if an arena file in use has no file at its path (deleted while the store is
    /// open): one `stat` a file.
    pub fn any_file_missing(&self) -> bool {
        self.spaces
            .iter()
            .flat_map(|space| space.iter())
            .any(|file| file.opened().is_some() && !self.storage.exists(&file.path))
    }

    /// Puts back every arena file deleted while the store is open (a cleanup of files it did
    /// not know, a mistaken `rm`), from its open descriptor: the pages written to it so far
    /// (call after they are synced). Without it the pages of such a file went with the process,
    /// and every later open refused the store ("arena file … is missing"). Returns how many.
    pub fn restore_unlinked_files(&self) -> Result<usize> {
        let mut restored = 0;
        for space in &self.spaces {
            for file in space.iter() {
                let Some(opened) = file.opened() else { continue };
                if crate::storage::restore_unlinked(self.storage.as_ref(), opened.as_ref(), &file.path)
                    .context(|| format!("putting back {}, deleted while open", file.path.display()))?
                {
                    restored += 1;
                }
            }
        }
        if restored > 0 {
            self.storage
                .sync_dir(&self.dir)
                .context(|| format!("syncing directory {}", self.dir.display()))?;
        }
        Ok(restored)
    }

    /// Makes every page write durable, and the arena files' names.
    pub fn sync(&self) -> Result<()> {
        for space in &self.spaces {
            // A file never opened since the open had nothing written to it.
            for file in space.iter() {
                let Some(opened) = file.opened() else { continue };
                opened
                    .sync_data()
                    .context(|| format!("syncing {}", file.path.display()))?;
            }
        }
        self.storage
            .sync_dir(&self.dir)
            .context(|| format!("syncing directory {}", self.dir.display()))
    }

    /// Asks the OS to start writing the pages `pages` (just written with [`Arena::write_page`])
    /// to the device, one range per file; a hint that makes nothing durable (see
    /// [`StorageFile::start_writeback`]): a later [`Arena::sync_pages`] finds less to wait for.
    pub fn start_writeback(&self, pages: &[PageId]) {
        let page_bytes = u64::from(self.page_size_bytes);
        let mut ranges: Vec<((usize, u64), u64, u64)> = Vec::new();
        for page in pages {
            let file = (page.space().index(), page.page_no() / self.pages_per_file);
            let offset = (page.page_no() % self.pages_per_file) * page_bytes;
            match ranges.iter_mut().find(|r| r.0 == file) {
                Some(range) => {
                    range.1 = range.1.min(offset);
                    range.2 = range.2.max(offset + page_bytes);
                }
                None => ranges.push((file, offset, offset + page_bytes)),
            }
        }
        for ((space, file_no), start, end) in ranges {
            if let Some(opened) = self.spaces[space].get(file_no as usize).and_then(ArenaFile::opened) {
                let _ = opened.start_writeback(start, end - start);
            }
        }
    }

    /// Makes the writes to the files holding `pages` durable, and the directory when files were
    /// created since it was last synced.
    pub fn sync_pages(&self, pages: &[PageId]) -> Result<()> {
        let mut files: Vec<(usize, u64)> = pages
            .iter()
            .map(|p| (p.space().index(), p.page_no() / self.pages_per_file))
            .collect();
        files.sort_unstable();
        files.dedup();
        for (space, file_no) in files {
            if let Some(file) = self.spaces[space].get(file_no as usize)
                && let Some(opened) = file.opened()
            {
                opened
                    .sync_data()
                    .context(|| format!("syncing {}", file.path.display()))?;
            }
        }
        if self.new_files.swap(false, Ordering::AcqRel)
            && let Err(error) = self.storage.sync_dir(&self.dir)
        {
            // Not synced: the next checkpoint must try again before it can count on the names.
            self.new_files.store(true, Ordering::Release);
            return Err(Error::io(format!("syncing directory {}", self.dir.display()), error));
        }
        Ok(())
    }

    /// How many files `space` has.
    pub fn file_count(&self, space: Space) -> usize {
        self.spaces[space.index()].len()
    }

    /// The paths of the arena files (catalog files, then vector files), for verification and
    /// backups.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.spaces
            .iter()
            .flat_map(|s| s.iter().map(|f| f.path.clone()))
            .collect()
    }

    /// The paths of the first `counts[i]` files of each space (by `Space::index`; catalog files,
    /// then vector files): the files of a base image. Every file counted must exist.
    pub fn file_paths_below(&self, counts: [usize; 2]) -> Vec<PathBuf> {
        self.spaces
            .iter()
            .zip(counts)
            .flat_map(|(space, count)| {
                assert!(count <= space.len(), "a base image holds files that exist");
                space.iter().take(count).map(|f| f.path.clone())
            })
            .collect()
    }

    /// True if page `id` lies in one of the first `counts[i]` files of its space.
    pub fn is_in_files_below(&self, id: PageId, counts: [usize; 2]) -> bool {
        let (file_no, _) = self.split(id.page_no());
        file_no < counts[id.space().index()] as u64
    }
}

/// Whether page `index` of `file` is fresh memory (read under `Arena::fresh_runs`).
fn is_fresh(file: &ArenaFile, index: u64) -> bool {
    file.fresh[(index / 64) as usize].load(Ordering::Acquire) & (1 << (index % 64)) != 0
}

/// `madvise(MADV_POPULATE_WRITE)` over `len_bytes` at `ptr`, which start whole pages of one live
/// mapping; failures are ignored (see [`Arena::prefault`]).
#[cfg(target_os = "linux")]
fn populate_write(ptr: *mut u8, len_bytes: usize) {
    // SAFETY: the range is whole pages inside one live private mapping of the arena (its
    // start is page-aligned, as every arena page is), which outlives the call. The advice only
    // fills page tables as write faults would; it reads and writes no byte of the range, so it
    // races with no reader or writer of those pages.
    let _ = unsafe { libc::madvise(ptr.cast(), len_bytes, libc::MADV_POPULATE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn populate_write(_ptr: *mut u8, _len_bytes: usize) {}

/// True if the first and the last 4 KiB of `len_bytes` at `ptr` (whole pages of one live
/// mapping) are in memory (`mincore`); false where it cannot say.
fn ends_resident(ptr: *mut u8, len_bytes: usize) -> bool {
    const OS_PAGE_BYTES: usize = 4096;
    assert!(
        (ptr as usize).is_multiple_of(OS_PAGE_BYTES) && len_bytes >= OS_PAGE_BYTES,
        "whole pages of a mapping"
    );
    if cfg!(miri) {
        return false; // no page tables to ask under Miri
    }
    let last = len_bytes - OS_PAGE_BYTES;
    [0, last].iter().all(|&offset| {
        let mut resident = 0u8;
        // SAFETY: `ptr + offset` is 4 KiB-aligned (arena pages are whole 4 KiB pages, and
        // `offset` is a multiple of 4 KiB) and lies in one live mapping that outlives the
        // call; mincore reads the page tables only and writes one byte to `resident`.
        let done = unsafe { libc::mincore(ptr.add(offset).cast(), OS_PAGE_BYTES, &mut resident) };
        done == 0 && resident & 1 == 1
    })
}

/// `madvise(advice)` over `len_bytes` at `ptr`, whole pages of one live mapping; a hint whose
/// failure is ignored. Only advice that changes no byte of the range may be given.
fn advise(ptr: *mut u8, len_bytes: usize, advice: libc::c_int) {
    // SAFETY: the range is whole pages inside one live mapping of the arena (page-aligned, as
    // every arena page is), which outlives the call; the callers' advice (MADV_WILLNEED) only
    // starts reads into the page cache and changes no byte of the range.
    let _ = unsafe { libc::madvise(ptr.cast(), len_bytes, advice) };
}

/// An arena of 4 KiB pages in files of 16 pages on real files in `dir` (tests of the fresh
/// memory, which the simulator's mappings only model).
#[cfg(test)]
pub(crate) fn real_arena(dir: &Path) -> Arena {
    let storage = Arc::new(crate::storage::RealStorage::new());
    Arena::open(storage, dir, 4096, 4096 * 16, ArenaOpen::TEST).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_number_has_one_slot_and_chunks_double() {
        let mut expected = (0usize, 0usize);
        for file_no in 0..FIRST_CHUNK_FILES * ((1 << 6) - 1) {
            assert_eq!(chunk_of(file_no), expected, "file {file_no}");
            expected.1 += 1;
            if expected.1 == FIRST_CHUNK_FILES << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
        let last = FILES_MAX - 1;
        assert_eq!(chunk_of(last), (FILE_CHUNKS - 1, (FIRST_CHUNK_FILES << (FILE_CHUNKS - 1)) - 1));
        assert_eq!(chunk_of(last + 1).0, FILE_CHUNKS, "the table is full past the last chunk");
        assert!(last + 1 > 2_000_000, "room for two million files, twice the earlier table's");
    }

    #[test]
    fn a_file_past_the_table_is_refused_as_a_limit_and_nothing_is_made() {
        let storage = Arc::new(crate::storage::SimStorage::new(3));
        let arena = Arena::open(storage.clone(), Path::new("/arena"), 4096, 4096 * 16, ArenaOpen::TEST).unwrap();
        let past = FILES_MAX as u64;
        let refused = arena.map_file(Space::Vector, past, FileSource::New);
        assert!(
            matches!(&refused, Err(Error::InvalidArgument(reason)) if reason.contains("at most")),
            "a limit, with its reason: {refused:?}"
        );
        assert!(storage.list(Path::new("/arena")).unwrap().is_empty(), "no file was made");
    }

    #[test]
    fn reset_page_leaves_the_header_then_zeros_over_any_old_bytes() {
        use crate::format::page::Space;
        for page_bytes in [4096u32, 16 << 10, 256 << 10] {
            let storage = Arc::new(crate::storage::SimStorage::new(u64::from(page_bytes)));
            let arena = Arena::open(
                storage,
                Path::new("/arena"),
                page_bytes,
                u64::from(page_bytes) * 4,
                crate::arena::ArenaOpen::TEST,
            )
            .unwrap();
            let id = PageId::new(Space::Vector, 2);
            arena.ensure_page(id).unwrap();
            arena.write(id, 0, &vec![0xAB; page_bytes as usize]);
            arena.reset_page(id, &[1, 2, 3]);
            let image = arena.copy_page(id);
            assert_eq!(&image[..3], &[1, 2, 3], "{page_bytes}: the header is written");
            assert!(
                image[3..].iter().all(|&b| b == 0),
                "{page_bytes}: every byte after the header is zero (no old byte survives a format)"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps a real file")]
    fn fresh_pages_are_counted_in_runs_and_a_released_one_reads_its_file() {
        use crate::format::page::{PageKind, Space};
        use zerocopy::IntoBytes;
        let dir = tempfile::tempdir().unwrap();
        let arena = real_arena(dir.path());
        let format = |page_no: u64| {
            let id = PageId::new(Space::Vector, page_no);
            arena.ensure_page(id).unwrap();
            let mut header = page::new_header(PageKind::Vector, id, 0, 0);
            header.store_id = arena.store_id().into();
            let _latch = arena.latch(id);
            arena.reset_page(id, header.as_bytes());
            arena.write(id, 1000, &[page_no as u8; 8]);
        };
        for page_no in [1, 2, 3, 4, 7] {
            format(page_no);
        }
        assert_eq!(*arena.fresh_runs.lock(), 2, "pages 1-4 are one run, page 7 another");
        let id = PageId::new(Space::Vector, 2);
        let latch = arena.latch(id);
        let mut image = arena.copy_page(id);
        page::seal(&mut image);
        arena.write_page(id, &image).unwrap();
        arena.sync().unwrap();
        // SAFETY: the latch is held; the file durably holds the page's bytes (written from a
        // sealed copy and synced, unchanged since).
        assert!(unsafe { arena.release_page(id) }, "a fresh page is released");
        assert_eq!(arena.copy_page(id)[1000..1008], [2; 8], "and reads its file back, not zeros");
        drop(latch);
        assert_eq!(*arena.fresh_runs.lock(), 3, "releasing page 2 split its run: 1 | 3-4 | 7");
        format(2);
        assert_eq!(*arena.fresh_runs.lock(), 2, "formatting it again joins them");
        assert_eq!(arena.copy_page(PageId::new(Space::Vector, 3))[1000..1008], [3; 8], "neighbours keep their bytes");
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps a real file")]
    fn hints_over_pages_beyond_the_arena_or_past_its_end_are_left_out() {
        use crate::format::page::Space;
        let dir = tempfile::tempdir().unwrap();
        let arena = real_arena(dir.path());
        let inside = PageId::new(Space::Vector, 1);
        arena.ensure_page(inside).unwrap();
        let count = arena.page_count(Space::Vector);
        // A damaged index may name any page: hints about it must not fault or panic.
        arena.ask_ahead(inside);
        arena.ask_ahead(PageId::new(Space::Vector, count));
        arena.ask_ahead(PageId::new(Space::Vector, u64::MAX >> 8));
        arena.will_need_range(Space::Vector, count - 1, 1_000);
        arena.will_need_range(Space::Catalog, u64::MAX >> 8, u64::MAX);
        let mut pass = ReadAhead::new(&arena, Space::Vector, 0, count + 100);
        for page_no in 0..count + 100 {
            pass.at(page_no);
        }
        assert_eq!(arena.page_count(Space::Vector), count, "hints add no page");
        let (file, _) = arena.locate(PageId::new(Space::Vector, count - 1));
        let index = arena.split(count - 1).1;
        assert!(!file.take_ask(index), "a page a pass asked for is not asked for again at its check");
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps a real file")]
    fn an_unchecked_page_is_asked_for_once_until_it_is_released() {
        use crate::format::page::{PageKind, Space};
        use zerocopy::IntoBytes;
        let dir = tempfile::tempdir().unwrap();
        let arena = real_arena(dir.path());
        let id = PageId::new(Space::Vector, 1);
        arena.ensure_page(id).unwrap();
        let mut header = page::new_header(PageKind::Vector, id, 0, 0);
        header.store_id = arena.store_id().into();
        let release = || {
            let _latch = arena.latch(id);
            // SAFETY: the latch is held; the file durably holds the page's bytes (written from
            // a sealed copy and synced below, unchanged since).
            assert!(unsafe { arena.release_page(id) }, "the page is released");
        };
        {
            let _latch = arena.latch(id);
            arena.reset_page(id, header.as_bytes());
            let mut image = arena.copy_page(id);
            page::seal(&mut image);
            arena.write_page(id, &image).unwrap();
            arena.sync().unwrap();
        }
        release();
        let (file, _) = arena.locate(id);
        let index = arena.split(id.page_no()).1;
        arena.ask_ahead(id);
        assert!(!file.take_ask(index), "a reader asked ahead: the page's check asks nothing more");
        arena.verify(id).unwrap();
        assert!(arena.is_verified(id), "checked from its file");
        release();
        assert!(file.take_ask(index), "a released page is asked for again before its next check");
    }

    #[test]
    fn a_released_page_shows_its_file_and_is_verified_again_before_its_next_use() {
        use crate::format::page::{PageKind, Space};
        use zerocopy::IntoBytes;
        let storage = Arc::new(crate::storage::SimStorage::new(9));
        let arena = Arena::open(
            storage.clone(),
            Path::new("/arena"),
            4096,
            4096 * 4,
            crate::arena::ArenaOpen::TEST,
        )
        .unwrap();
        let id = PageId::new(Space::Vector, 1);
        arena.ensure_page(id).unwrap();
        let mut header = page::new_header(PageKind::Vector, id, 0, 0);
        header.store_id = arena.store_id().into();
        let latch = arena.latch(id);
        arena.reset_page(id, header.as_bytes());
        arena.write(id, 1000, b"written back");
        let mut image = arena.copy_page(id);
        page::seal(&mut image);
        arena.write_page(id, &image).unwrap();
        arena.sync().unwrap();
        assert!(arena.is_verified(id), "a page written in memory counts as verified");
        // The medium changes a byte of the synced page before the release reads it back.
        let path = Path::new("/arena").join(arena_file_name(Space::Vector, 0));
        storage.damage(&path, 4096 + 2000, b"\xFF").unwrap();
        // SAFETY: the latch is held; the file durably holds the page's bytes (written from a
        // sealed copy and synced, no change since) but for the damage the test wants found.
        assert!(unsafe { arena.release_page(id) }, "the release succeeds");
        assert!(arena.copy_page(id)[1000..1012] == *b"written back", "the page reads its file back");
        assert!(!arena.is_verified(id), "a released page is read from its file again");
        drop(latch);
        let damage = arena.verify(id);
        assert!(
            matches!(&damage, Err(Error::Corrupted { .. })),
            "the damage is found at the next use: {damage:?}"
        );
    }

    #[test]
    fn split_agrees_with_division_for_any_pages_per_file() {
        for pages_per_file in [1u64, 5, 12, 16, 1024, 4096 + 3] {
            let storage = Arc::new(crate::storage::SimStorage::new(pages_per_file));
            let arena = Arena::open(
                storage,
                Path::new("/arena"),
                4096,
                pages_per_file * 4096,
                crate::arena::ArenaOpen::TEST,
            )
            .unwrap();
            assert_eq!(
                arena.pages_per_file_shift.is_some(),
                pages_per_file.is_power_of_two(),
                "the shift is used exactly where it is exact"
            );
            for page_no in (0..5000).chain([u64::MAX / 2, u64::MAX - 1]) {
                assert_eq!(
                    arena.split(page_no),
                    (page_no / pages_per_file, page_no % pages_per_file),
                    "page {page_no} with {pages_per_file} pages per file"
                );
            }
        }
    }

    #[test]
    fn arena_file_names_round_trip() {
        assert_eq!(arena_file_name(Space::Vector, 10), "vector-0000000a.pages");
        assert_eq!(
            parse_arena_file_name("vector-0000000a.pages"),
            Some((Space::Vector, 10))
        );
        assert_eq!(
            parse_arena_file_name("catalog-00000000.pages"),
            Some((Space::Catalog, 0))
        );
        assert_eq!(parse_arena_file_name("catalog-0000000A.pages"), None);
    }

    /// A file system that makes every new name durable at once (as a journal commit may, before
    /// any `sync_dir`): the worst case for files that are created and then sized.
    #[derive(Debug)]
    struct EagerNames(crate::storage::SimStorage);

    impl Storage for EagerNames {
        fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
            self.0.create_dir_all(path)
        }
        fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn StorageFile>> {
            let file = self.0.open(path, create)?;
            if create {
                self.0.sync_dir(path.parent().expect("a file in a directory"))?;
            }
            Ok(file)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.0.rename(from, to)?;
            self.0.sync_dir(to.parent().expect("a file in a directory"))
        }
        fn remove_file(&self, path: &Path) -> std::io::Result<()> {
            self.0.remove_file(path)
        }
        fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
            self.0.remove_dir(path)
        }
        fn list(&self, path: &Path) -> std::io::Result<Vec<String>> {
            self.0.list(path)
        }
        fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
            self.0.sync_dir(path)
        }
        fn exists(&self, path: &Path) -> bool {
            self.0.exists(path)
        }
    }

    #[test]
    fn a_crash_while_creating_an_arena_file_never_leaves_a_short_one() {
        let dir = Path::new("/store/arena");
        let (page_size, file_size) = (4096, 16 * 4096);
        for crash_after in 0..12 {
            let sim = crate::storage::SimStorage::new(crash_after);
            let storage: Arc<dyn Storage> = Arc::new(EagerNames(sim.clone()));
            let arena = Arena::open(
                storage.clone(),
                dir,
                page_size,
                file_size,
                crate::arena::ArenaOpen::TEST,
            )
            .unwrap();
            sim.crash_after_ops(crash_after);
            let created = arena.ensure_page(PageId::new(Space::Vector, 20));
            sim.crash_now();
            let sim = sim.reboot();
            let storage: Arc<dyn Storage> = Arc::new(EagerNames(sim.clone()));
            let reopened = Arena::open(storage, dir, page_size, file_size, crate::arena::ArenaOpen::TEST);
            assert!(
                reopened.is_ok(),
                "crash after {crash_after} ops (creation: {created:?}): {reopened:?}"
            );
            let reopened = reopened.unwrap();
            reopened.remove_leftovers().unwrap();
            assert!(reopened.file_count(Space::Vector) <= 2, "files 0 and 1 at most");
            assert!(
                sim.list(dir).unwrap().iter().all(|n| !n.ends_with(".tmp")),
                "leftovers are removed"
            );
        }
    }
}
