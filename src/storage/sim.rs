//! A deterministic, seeded, in-memory crash simulator of a file system.
//!
//! [`SimStorage`] keeps two images of the disk: the *volatile* one that a running program sees
//! (the page cache) and the *durable* one that survives a power cut. Tests crash it at any
//! mutating operation ([`SimStorage::crash_after_ops`]) and then [`SimStorage::reboot`] to
//! exactly what a real disk could have kept under the medium assumptions of [`super`].
//!
//! # The crash model
//! - **Namespace.** Paths are normalised keys (`.` and `..` are resolved lexically, there are no
//!   symlinks). Directories exist explicitly; the root (`/`, or the empty path for relative
//!   paths) always exists and is always durable. Creating, renaming and removing files and
//!   directories changes only the volatile namespace; `sync_dir(dir)` copies the volatile
//!   entries whose parent is `dir` (files and subdirectories, including removals and renames
//!   into or out of `dir`) into the durable namespace. A rename across directories becomes
//!   durable side by side, each with its own directory's sync. Directories are renamed
//!   nowhere: `rename` of a directory fails with `ErrorKind::Unsupported`.
//! - **New top-level trees are durable at once.** `create_dir_all` stands for the test's
//!   environment (a temporary directory) when it creates a directory directly under the root:
//!   that directory and every directory the same call creates beneath it are durable at once,
//!   so `create_dir_all("/store")` needs no `sync_dir("/")`. A directory created inside an
//!   already existing directory is durable only after `sync_dir` of its parent.
//! - **Contents.** Every file has volatile bytes, durable bytes and the set of sectors dirtied
//!   since its last `sync_data` (`write_at` dirties every sector it touches, `set_len` the
//!   sectors whose bytes it adds or removes). `sync_data` makes the volatile bytes and length
//!   durable and clears the set. (Only a failed `sync_data` lets a clean sector's volatile and
//!   durable bytes differ: see the fault model.)
//! - **Direct writes** ([`StorageFile::write_durable_direct`], where [`SimConfig::direct_io`]
//!   allows them) are two steps: a `write_at`, then the sectors it wrote made durable (and
//!   clean), the file's other dirty sectors left as they are. A crash between the two keeps any
//!   subset of the written sectors, as a torn write would; a `SyncEio` fault in the second
//!   fails it as a failed `sync_data` of the file.
//! - **Crash.** The armed operation fails before taking effect, and the post-crash image is
//!   computed at once (so the dying program cannot change it): every file reachable through the
//!   durable namespace holds its durable bytes plus each dirty sector's volatile bytes with
//!   probability `p`, where `p` is drawn per crash among {0, ½, 1, uniform(0, 1)}: some crashes
//!   keep nothing unsynced, some everything, some a random subset (torn pages, reordered
//!   writes). A file's length after the crash is its durable length, or the end of the last
//!   kept sector if that lies beyond (gaps read as zeros); an unsynced shrink is never kept.
//! - **After a crash** every operation of the old storage and of its open files returns
//!   `Err(io::Error::other("simulated crash"))` (`exists` returns false), but the memory of live
//!   mappings stays valid.
//! - **Determinism.** The same seed and the same sequence of operations give the same image.
//!
//! # The fault model
//! [`SimStorage::inject`] arms a [`FaultPlan`]: the `n`-th operation of one class from now
//! fails (and, if the plan is persistent, every later one of that class too). Each class
//! counts its operations whether or not a plan is armed ([`SimStorage::fault_class_ops`]), so
//! a test can run a workload once and draw a fault point among them, as it draws crash points.
//! - **[`FaultKind::WriteEio`]** (`write_at`): fails with `EIO` after a seeded prefix of its
//!   bytes that ends at a sector boundary (possibly none, never all) reached the volatile
//!   image, as a `write_all` that got a short write and then an error would. The prefix is
//!   unsynced, like any write.
//! - **[`FaultKind::SyncEio`]** (`sync_data`, `sync_dir`): a failed `sync_data` makes a seeded
//!   subset of the file's unsynced sectors durable (drawn as a crash draws them) and forgets
//!   the rest: the dirty set is cleared, the volatile bytes stay. Those sectors are *lost* — the
//!   running program still reads its new bytes, but no later `sync_data` writes them again
//!   (only a new write of the sector does) and a crash gives back their durable bytes. This is
//!   Linux: a failed `fsync` marks the pages clean, so retrying it reports success for data
//!   that never reached the disk. A failed `sync_dir` makes nothing durable and changes
//!   nothing; a later successful one makes the volatile entries durable (directory entries are
//!   journaled metadata, not cached pages).
//! - **[`FaultKind::ReadEio`]** (`read_at`): fails with `EIO`; the buffer is left as it was.
//! - **[`FaultKind::NoSpace`]** (operations that grow a file: `write_at` past the end,
//!   `set_len` up, `allocate` up): fails with `ENOSPC` and changes nothing, as the capacity
//!   limit does.
//! - **[`FaultKind::NoDescriptors`]** (operations that need a new descriptor: `open`, `list`,
//!   `sync_dir`): fails with `EMFILE` and changes nothing, as a process at its limit of open
//!   files would.
//!
//! Faults are checked after the crash point: an operation that crashes does not count.
//!
//! # Watches
//! [`Storage::watch_removals`] counts, as inotify would, each `remove_file` and each `rename`
//! away of a name in a watched directory that its filter accepts, at once (the simulator sees
//! every call); a watched directory removed loses its watch. A rename onto a watched name
//! counts nothing, as there.
//! A reboot starts a new disk with no plan armed.
//!
//! # Mappings
//! A shared mapping points into the file's volatile buffer itself, so later `write_at` calls are
//! visible through it (Linux's unified page cache). The buffer is a fixed heap allocation shared
//! through an `Arc`, so it outlives the file's removal and the crash. While a shared mapping
//! lives the file's length must not change; while any mapping (shared or private) lives,
//! `set_len` must not change it: both are broken engine invariants and panic. A private
//! mapping is a copy: stores into it never reach the file. Empty files map to empty mappings
//! that hold nothing, as in [`super::RealStorage`]. Releasing pages of a private mapping
//! (`Mapping::release`) models the kernel's refault after `MADV_DONTNEED` at its worst: the
//! copy takes the file's durable bytes. A page cache may still hold newer ones then, but the
//! refault comes whenever the page is next touched, and a failed sync or an eviction before
//! that leaves only what the disk holds: a page released before the file durably held its
//! bytes loses them here as it could there.

use std::alloc::{self, Layout};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::ops::Bound;
use std::path::{Component, Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use parking_lot::Mutex;

use super::watch::Counted;
use super::{MAPPING_ALIGN_BYTES, Mapping, NameFilter, RemovalWatch, Storage, StorageFile};
use crate::rng::{GOLDEN_GAMMA, SplitMix64};

/// The settings of a [`SimStorage`].
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every random choice of a crash (which unsynced sectors reach the disk).
    pub seed: u64,
    /// The unit a crash keeps or loses as a whole (512 by default). Must be positive.
    pub sector_size_bytes: usize,
    /// The total volatile length of all live files (linked or open); an operation that would
    /// grow a file beyond it fails with `ENOSPC` and changes nothing. `None`: no limit.
    pub capacity_bytes: Option<u64>,
    /// Files take durable direct writes ([`StorageFile::write_durable_direct`]), as a file
    /// system with `O_DIRECT` does; without, they refuse them, as tmpfs does.
    pub direct_io: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 0,
            sector_size_bytes: 512,
            capacity_bytes: None,
            direct_io: false,
        }
    }
}

/// The class of operation an injected fault hits, and how it fails (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `write_at` fails with `EIO` after writing a seeded prefix of its bytes (whole sectors).
    WriteEio,
    /// `sync_data` or `sync_dir` fails with `EIO`; a failed `sync_data` loses a seeded subset
    /// of the file's unsynced sectors for good.
    SyncEio,
    /// `read_at` fails with `EIO`.
    ReadEio,
    /// An operation that grows a file fails with `ENOSPC` and changes nothing.
    NoSpace,
    /// An operation that needs a new descriptor (`open`, `list`, `sync_dir`) fails with
    /// `EMFILE` and changes nothing: a shortage of the process, not an I/O error (not in
    /// [`FaultKind::ALL`]).
    NoDescriptors,
}

impl FaultKind {
    /// Every kind of I/O error, for tests that draw one.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::WriteEio,
        FaultKind::SyncEio,
        FaultKind::ReadEio,
        FaultKind::NoSpace,
    ];

    /// How many kinds there are (the I/O errors of [`FaultKind::ALL`] and the shortage).
    const COUNT: usize = FaultKind::NoDescriptors as usize + 1;

    fn index(self) -> usize {
        self as usize
    }
}

/// An injected fault: the `after_ops`-th operation of `kind`'s class from now fails (`1` is
/// the next one); with `persistent`, so does every later one of that class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// The fault, and so the class of operations it hits.
    pub kind: FaultKind,
    /// Which operation of the class fails: `1` is the next one.
    pub after_ops: u64,
    /// Every later operation of the class fails too.
    pub persistent: bool,
}

/// A deterministic in-memory crash simulator of a file system (see the module docs).
///
/// Clones share the same simulated disk; [`SimStorage::reboot`] makes a new, independent one.
#[derive(Clone)]
pub struct SimStorage {
    disk: Arc<Mutex<Disk>>,
}

impl SimStorage {
    /// An empty disk with the default configuration and `seed`; odd seeds have direct I/O
    /// ([`SimConfig::direct_io`]), so that seeded tests cover both kinds of file system.
    pub fn new(seed: u64) -> SimStorage {
        SimStorage::with_config(SimConfig {
            seed,
            direct_io: seed % 2 == 1,
            ..SimConfig::default()
        })
    }

    /// An empty disk with `config`. Panics if `config.sector_size_bytes` is zero.
    pub fn with_config(config: SimConfig) -> SimStorage {
        assert!(
            config.sector_size_bytes > 0,
            "SimConfig::sector_size_bytes must be positive"
        );
        SimStorage::from_disk(Disk::new(config))
    }

    fn from_disk(disk: Disk) -> SimStorage {
        SimStorage {
            disk: Arc::new(Mutex::new(disk)),
        }
    }

    /// Arms a crash: the `n`-th mutating operation from now fails and crashes the disk before
    /// taking effect (`n == 0` crashes now). Mutating operations: `open` with create,
    /// `write_at`, `set_len`, `sync_data`, `sync_dir`, `rename`, `remove_file`, `remove_dir`,
    /// `create_dir_all`, and `write_durable_direct` (twice: its write, its sync); each call
    /// counts, including calls that fail. Re-arming replaces the
    /// previous crash point; on a crashed disk it does nothing.
    pub fn crash_after_ops(&self, n: u64) {
        self.disk.lock().arm_crash(n);
    }

    /// Crashes the disk now (does nothing if it has crashed already).
    pub fn crash_now(&self) {
        self.disk.lock().crash();
    }

    /// True once the disk has crashed.
    pub fn is_crashed(&self) -> bool {
        self.disk.lock().image.is_some()
    }

    /// The number of mutating operations so far, including the one that crashed (so a test can
    /// run a workload once and then pick crash points in `1..=mutating_ops()`).
    pub fn mutating_ops(&self) -> u64 {
        self.disk.lock().mutating_ops
    }

    /// The disk after a reboot: a new, independent storage holding, for every file reachable
    /// through the durable namespace, its durable bytes plus a seeded random subset of the
    /// sectors written since its last `sync_data`. Crashes this disk first if it has not
    /// crashed. Rebooting the same crashed disk twice gives the same image. The new disk's seed
    /// is derived from this one's, so repeated crashes of a rebooted disk differ.
    pub fn reboot(&self) -> SimStorage {
        let mut disk = self.disk.lock();
        disk.crash();
        let image = disk.image.clone().expect("a crashed disk has an image");
        let mut config = disk.config.clone();
        drop(disk);
        config.seed = config.seed.wrapping_mul(GOLDEN_GAMMA).wrapping_add(1);
        SimStorage::from_disk(Disk::from_image(config, &image))
    }

    /// As [`SimStorage::reboot`], but the new disk's random choices come from `seed` instead of
    /// a seed derived from this disk's, and it has direct I/O on odd seeds as
    /// [`SimStorage::new`]'s disks do: one crashed image can be booted many times, each with its
    /// own future crashes (the fuzz targets boot one cached store per input this way).
    pub fn reboot_with_seed(&self, seed: u64) -> SimStorage {
        let mut disk = self.disk.lock();
        disk.crash();
        let image = disk.image.clone().expect("a crashed disk has an image");
        let config = SimConfig {
            seed,
            direct_io: seed % 2 == 1,
            ..disk.config.clone()
        };
        drop(disk);
        SimStorage::from_disk(Disk::from_image(config, &image))
    }

    /// The bytes counted against the capacity now (files linked or open).
    pub fn used_bytes(&self) -> u64 {
        self.disk.lock().used_bytes()
    }

    /// Changes the capacity limit (see [`SimConfig::capacity_bytes`]). Lowering it below the
    /// bytes in use makes only later growth fail.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.disk.lock().config.capacity_bytes = capacity_bytes;
    }

    /// Arms `plan`, replacing any plan armed before (see the fault model in the module docs).
    /// Panics if `plan.after_ops` is zero. On a crashed disk it does nothing.
    pub fn inject(&self, plan: FaultPlan) {
        assert!(plan.after_ops > 0, "FaultPlan::after_ops counts from 1");
        let mut disk = self.disk.lock();
        let at = disk.faults.ops[plan.kind.index()].saturating_add(plan.after_ops);
        disk.faults.armed = Some(ArmedFault { plan, at });
    }

    /// Disarms the fault plan: later operations succeed (faults already injected stay done).
    pub fn clear_faults(&self) {
        self.disk.lock().faults.armed = None;
    }

    /// How many operations of `kind`'s class this disk has seen (failed ones included).
    pub fn fault_class_ops(&self, kind: FaultKind) -> u64 {
        self.disk.lock().faults.ops[kind.index()]
    }

    /// How many operations an injected fault has failed so far.
    pub fn faults_injected(&self) -> u64 {
        self.disk.lock().faults.injected
    }

    /// Test hook: the current (volatile) bytes of the file at `path`. `NotFound` if absent.
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.disk.lock().read_file(path)
    }

    /// Test hook for damage injection: overwrites the file's bytes at `offset` in both the
    /// volatile and the durable image, as if the medium changed (each image only within its
    /// length). `NotFound` if absent, `InvalidInput` if the range ends past both lengths.
    /// Not a mutating operation: it neither counts nor triggers an armed crash.
    pub fn damage(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.disk.lock().damage(path, offset, bytes)
    }

    /// Test hook: sets the file's volatile and durable length to `len_bytes` (zero-filling
    /// growth), as if the medium lost its tail. Ignores the capacity limit; fails (rather than
    /// panics) if a mapping of the file lives and the length would change. `NotFound` if absent.
    pub fn truncate_durably(&self, path: &Path, len_bytes: u64) -> io::Result<()> {
        self.disk.lock().truncate_durably(path, len_bytes)
    }

    /// The bytes passed to `write_at` so far (failed calls excluded).
    pub fn written_bytes(&self) -> u64 {
        self.disk.lock().written_bytes
    }

    /// The bytes of private mappings released so far (`Mapping::release`, failed calls
    /// excluded): how a test knows its workload gave memory back.
    pub fn released_bytes(&self) -> u64 {
        self.disk.lock().released_bytes
    }

    /// The bytes copied to the durable image by `sync_data` so far.
    pub fn synced_bytes(&self) -> u64 {
        self.disk.lock().synced_bytes
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(disk) = self.disk.try_lock() else {
            return f.write_str("SimStorage { <busy> }");
        };
        f.debug_struct("SimStorage")
            .field("config", &disk.config)
            .field("mutating_ops", &disk.mutating_ops)
            .field("crashed", &disk.image.is_some())
            .field("files", &disk.volatile.files.len())
            .finish()
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.disk.lock().create_dir_all(path)
    }

    fn available_bytes(&self, _path: &Path) -> io::Result<Option<u64>> {
        let disk = self.disk.lock();
        Ok(disk
            .config
            .capacity_bytes
            .map(|capacity| capacity.saturating_sub(disk.used_bytes())))
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let id = self.disk.lock().open(path, create)?;
        Ok(Arc::new(SimFile {
            disk: Arc::clone(&self.disk),
            id,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.lock().rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.disk.lock().remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.disk.lock().remove_dir(path)
    }

    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        self.disk.lock().list(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.disk.lock().sync_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.disk.lock().exists(path)
    }

    fn watch_removals(&self, dirs: &[(&Path, NameFilter)]) -> Option<Box<dyn RemovalWatch>> {
        let counted = Arc::new(Counted::default());
        let mut disk = self.disk.lock();
        for &(dir, names) in dirs {
            disk.watches.push(SimWatched {
                dir: normalize(dir),
                names,
                counted: Arc::downgrade(&counted),
            });
        }
        Some(Box::new(SimWatch(counted)))
    }
}

/// An open file of a [`SimStorage`]: a handle on one inode, which lives while the handle does.
struct SimFile {
    disk: Arc<Mutex<Disk>>,
    id: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile").field("inode", &self.id).finish()
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.disk.lock().close(self.id);
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.disk.lock().live_inode(self.id)?.len_bytes as u64)
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.disk.lock().set_len(self.id, len_bytes)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.disk.lock().read_at(self.id, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.disk.lock().write_at(self.id, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.lock().sync_data(self.id)
    }

    /// True once no name of the volatile namespace leads to the file (removed, or renamed
    /// over, while open).
    fn is_unlinked(&self) -> io::Result<bool> {
        let disk = self.disk.lock();
        disk.live_inode(self.id)?;
        Ok(!disk.volatile.files.values().any(|&id| id == self.id))
    }

    fn write_durable_direct(&self, blocks: &[u8], offset: u64) -> io::Result<bool> {
        self.disk.lock().write_durable_direct(self.id, blocks, offset)
    }

    /// A direct write that is not durable is, for a crash, any write: its sectors stay
    /// unsynced until `sync_data`.
    fn write_direct(&self, blocks: &[u8], offset: u64) -> io::Result<bool> {
        let mut disk = self.disk.lock();
        super::assert_direct_blocks(blocks, offset);
        if !disk.config.direct_io {
            return Ok(false);
        }
        disk.write_at(self.id, blocks, offset).map(|()| true)
    }

    /// As `fallocate` (mode 0): the file grows to `len_bytes` of zeros, counted against the
    /// capacity now; like any growth, the length is durable only once synced.
    fn allocate(&self, len_bytes: u64) -> io::Result<bool> {
        let mut disk = self.disk.lock();
        if len_bytes > disk.live_inode(self.id)?.len_bytes as u64 {
            disk.set_len(self.id, len_bytes)?;
        }
        Ok(true)
    }

    fn map_shared(&self) -> io::Result<Mapping> {
        self.disk.lock().map_shared(self.id)
    }

    fn map_private(&self) -> io::Result<Mapping> {
        self.disk.lock().map_private(&self.disk, self.id)
    }
}

/// The whole simulated disk, behind one mutex.
struct Disk {
    config: SimConfig,
    mutating_ops: u64,
    crash_at_op: Option<u64>,
    /// Set at the crash; from then on every operation fails.
    image: Option<Arc<CrashImage>>,
    next_id: u64,
    /// Every inode linked in either namespace or open.
    inodes: BTreeMap<u64, Inode>,
    volatile: Namespace,
    durable: Namespace,
    written_bytes: u64,
    released_bytes: u64,
    synced_bytes: u64,
    faults: Faults,
    /// The live watches of removals (see the module docs).
    watches: Vec<SimWatched>,
}

/// A directory watched for removals, and the count of the watch.
struct SimWatched {
    dir: PathBuf,
    names: NameFilter,
    counted: std::sync::Weak<Counted>,
}

/// A watch of a [`SimStorage`]: its count lives while it does.
#[derive(Debug)]
struct SimWatch(Arc<Counted>);

impl RemovalWatch for SimWatch {
    fn removals(&self) -> Option<u64> {
        self.0.get()
    }
}

/// The fault plan of a disk and the operations counted per fault class.
#[derive(Default)]
struct Faults {
    armed: Option<ArmedFault>,
    ops: [u64; FaultKind::COUNT],
    injected: u64,
}

/// A plan armed at an absolute operation count of its class.
struct ArmedFault {
    plan: FaultPlan,
    at: u64,
}

/// What a disk holds after a crash: the reachable durable namespace and each file's bytes.
struct CrashImage {
    namespace: Namespace,
    contents: BTreeMap<u64, Vec<u8>>,
}

impl Disk {
    fn new(config: SimConfig) -> Disk {
        Disk {
            config,
            mutating_ops: 0,
            crash_at_op: None,
            image: None,
            next_id: 1,
            inodes: BTreeMap::new(),
            volatile: Namespace::default(),
            durable: Namespace::default(),
            written_bytes: 0,
            released_bytes: 0,
            synced_bytes: 0,
            faults: Faults::default(),
            watches: Vec::new(),
        }
    }

    /// Counts the removal of `path` (a file removed or renamed away, or, with `dir`, a
    /// directory removed) for the watches it concerns.
    fn note_removal(&mut self, path: &Path, dir: bool) {
        self.watches.retain(|watched| watched.counted.strong_count() > 0);
        for watched in &self.watches {
            let Some(counted) = watched.counted.upgrade() else {
                continue;
            };
            if dir && watched.dir == path {
                counted.lose();
            } else if !dir
                && path.parent() == Some(watched.dir.as_path())
                && path.file_name().and_then(|n| n.to_str()).is_some_and(watched.names)
            {
                counted.removed();
            }
        }
    }

    /// A freshly booted disk whose volatile and durable images are both `image`.
    fn from_image(config: SimConfig, image: &CrashImage) -> Disk {
        let mut disk = Disk::new(config);
        for (&id, bytes) in &image.contents {
            disk.inodes.insert(id, Inode::from_bytes(bytes));
        }
        let max_dir_id = image.namespace.dirs.values().copied().max().unwrap_or(0);
        let max_file_id = image.contents.keys().copied().max().unwrap_or(0);
        disk.next_id = max_dir_id.max(max_file_id) + 1;
        disk.volatile = image.namespace.clone();
        disk.durable = image.namespace.clone();
        disk
    }

    fn check_alive(&self) -> io::Result<()> {
        match self.image {
            Some(_) => Err(crashed()),
            None => Ok(()),
        }
    }

    /// Counts one mutating operation, crashing instead if it is the armed one.
    fn begin_mutation(&mut self) -> io::Result<()> {
        self.check_alive()?;
        self.mutating_ops += 1;
        if self.crash_at_op.is_some_and(|at| self.mutating_ops >= at) {
            self.crash();
            return Err(crashed());
        }
        Ok(())
    }

    /// Counts one operation of `kind`'s class; true if the armed plan fails it.
    fn fault(&mut self, kind: FaultKind) -> bool {
        let count = &mut self.faults.ops[kind.index()];
        *count += 1;
        let hit = self.faults.armed.as_ref().is_some_and(|armed| {
            armed.plan.kind == kind && (*count == armed.at || (armed.plan.persistent && *count > armed.at))
        });
        self.faults.injected += u64::from(hit);
        hit
    }

    /// A generator for the random choices of an injected fault, salted by where it strikes.
    fn fault_rng(&self, kind: FaultKind) -> SplitMix64 {
        let salt = self.faults.ops[kind.index()].wrapping_mul(GOLDEN_GAMMA) ^ (kind.index() as u64 + 1) << 56;
        SplitMix64::new(self.config.seed ^ salt ^ 0xFA17)
    }

    fn arm_crash(&mut self, n: u64) {
        if self.image.is_some() {
            return;
        }
        if n == 0 {
            self.crash();
        } else {
            self.crash_at_op = Some(self.mutating_ops.saturating_add(n));
        }
    }

    /// Computes the post-crash image and drops the volatile state (live mappings keep their
    /// memory through their own `Arc`s).
    fn crash(&mut self) {
        if self.image.is_some() {
            return;
        }
        let op_salt = self.mutating_ops.wrapping_mul(GOLDEN_GAMMA);
        let mut rng = SplitMix64::new(self.config.seed ^ op_salt);
        let keep_probability = draw_keep_probability(&mut rng);
        let namespace = self.durable.reachable();
        let ids: BTreeSet<u64> = namespace.files.values().copied().collect();
        let sector_size_bytes = self.config.sector_size_bytes;
        let contents = ids
            .into_iter()
            .map(|id| {
                let inode = &self.inodes[&id];
                (id, inode.crash_bytes(&mut rng, keep_probability, sector_size_bytes))
            })
            .collect();
        self.image = Some(Arc::new(CrashImage { namespace, contents }));
        self.inodes.clear();
        self.volatile = Namespace::default();
        self.durable = Namespace::default();
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Forgets inodes that no namespace links and no handle holds open.
    fn sweep(&mut self) {
        let linked: BTreeSet<u64> = self
            .volatile
            .files
            .values()
            .chain(self.durable.files.values())
            .copied()
            .collect();
        self.inodes
            .retain(|id, inode| inode.open_handles > 0 || linked.contains(id));
    }

    /// The bytes counted against the capacity: files linked in the volatile namespace or open.
    fn used_bytes(&self) -> u64 {
        let linked: BTreeSet<u64> = self.volatile.files.values().copied().collect();
        self.inodes
            .iter()
            .filter(|(id, inode)| inode.open_handles > 0 || linked.contains(id))
            .map(|(_, inode)| inode.len_bytes as u64)
            .sum()
    }

    /// `ENOSPC` unless one file may go from `old_len` to `new_len` bytes.
    fn check_capacity(&self, old_len: usize, new_len: usize) -> io::Result<()> {
        let Some(capacity_bytes) = self.config.capacity_bytes else {
            return Ok(());
        };
        let after = self
            .used_bytes()
            .saturating_sub(old_len as u64)
            .saturating_add(new_len as u64);
        if after > capacity_bytes {
            return Err(os_error(libc::ENOSPC));
        }
        Ok(())
    }

    fn live_inode(&self, id: u64) -> io::Result<&Inode> {
        self.check_alive()?;
        self.inodes.get(&id).ok_or_else(vanished)
    }

    fn live_inode_mut(&mut self, id: u64) -> io::Result<&mut Inode> {
        self.check_alive()?;
        self.inodes.get_mut(&id).ok_or_else(vanished)
    }

    /// The inode of the file at `path` in the volatile namespace (for the test hooks).
    fn file_at(&self, path: &Path) -> io::Result<u64> {
        self.check_alive()?;
        self.volatile
            .files
            .get(&normalize(path))
            .copied()
            .ok_or_else(|| os_error(libc::ENOENT))
    }

    fn close(&mut self, id: u64) {
        if let Some(inode) = self.inodes.get_mut(&id) {
            inode.open_handles -= 1;
            if inode.open_handles == 0 {
                self.sweep();
            }
        }
    }
}

/// The directory operations.
impl Disk {
    fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        self.begin_mutation()?;
        let path = normalize(path);
        let mut chain: Vec<&Path> = path.ancestors().filter(|dir| !is_root(dir)).collect();
        chain.reverse();
        for (index, dir) in chain.iter().enumerate() {
            if self.volatile.files.contains_key(*dir) {
                let last = index + 1 == chain.len();
                return Err(os_error(if last { libc::EEXIST } else { libc::ENOTDIR }));
            }
        }
        let mut new_top_level_tree = true;
        for dir in chain {
            if self.volatile.dirs.contains_key(dir) {
                new_top_level_tree = false;
                continue;
            }
            let id = self.allocate_id();
            self.volatile.dirs.insert(dir.to_path_buf(), id);
            if new_top_level_tree {
                self.durable.replace_dir(dir, id);
            }
        }
        Ok(())
    }

    fn open(&mut self, path: &Path, create: bool) -> io::Result<u64> {
        if create {
            self.begin_mutation()?;
        } else {
            self.check_alive()?;
        }
        if self.fault(FaultKind::NoDescriptors) {
            return Err(os_error(libc::EMFILE));
        }
        let path = normalize(path);
        if self.volatile.is_dir(&path) {
            return Err(os_error(if create { libc::EEXIST } else { libc::EISDIR }));
        }
        let id = match (self.volatile.files.get(&path), create) {
            (Some(_), true) => return Err(os_error(libc::EEXIST)),
            (Some(&id), false) => id,
            (None, false) => return Err(os_error(libc::ENOENT)),
            (None, true) => {
                self.volatile.check_parent_dir(&path)?;
                let id = self.allocate_id();
                self.inodes.insert(id, Inode::empty());
                self.volatile.files.insert(path, id);
                id
            }
        };
        self.inodes.get_mut(&id).ok_or_else(vanished)?.open_handles += 1;
        Ok(id)
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.begin_mutation()?;
        let (from, to) = (normalize(from), normalize(to));
        if self.volatile.is_dir(&from) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SimStorage renames files only",
            ));
        }
        let id = *self.volatile.files.get(&from).ok_or_else(|| os_error(libc::ENOENT))?;
        if self.volatile.is_dir(&to) {
            return Err(os_error(libc::EISDIR));
        }
        self.volatile.check_parent_dir(&to)?;
        if from != to {
            self.volatile.files.remove(&from);
            self.volatile.files.insert(to, id);
            self.sweep();
            self.note_removal(&from, false);
        }
        Ok(())
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        self.begin_mutation()?;
        let path = normalize(path);
        if self.volatile.is_dir(&path) {
            return Err(os_error(libc::EISDIR));
        }
        self.volatile
            .files
            .remove(&path)
            .ok_or_else(|| os_error(libc::ENOENT))?;
        self.sweep();
        self.note_removal(&path, false);
        Ok(())
    }

    fn remove_dir(&mut self, path: &Path) -> io::Result<()> {
        self.begin_mutation()?;
        let path = normalize(path);
        if is_root(&path) {
            return Err(os_error(libc::EBUSY));
        }
        self.volatile.check_is_dir(&path)?;
        if self.volatile.has_children(&path) {
            return Err(os_error(libc::ENOTEMPTY));
        }
        self.volatile.dirs.remove(&path);
        self.note_removal(&path, true);
        Ok(())
    }

    fn list(&mut self, path: &Path) -> io::Result<Vec<String>> {
        self.check_alive()?;
        let path = normalize(path);
        self.volatile.check_is_dir(&path)?;
        if self.fault(FaultKind::NoDescriptors) {
            return Err(os_error(libc::EMFILE));
        }
        Ok(self.volatile.child_names(&path))
    }

    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        self.begin_mutation()?;
        let path = normalize(path);
        self.volatile.check_is_dir(&path)?;
        if self.fault(FaultKind::NoDescriptors) {
            return Err(os_error(libc::EMFILE));
        }
        if self.fault(FaultKind::SyncEio) {
            return Err(os_error(libc::EIO));
        }
        self.durable.sync_children(&self.volatile, &path);
        self.sweep();
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let path = normalize(path);
        self.image.is_none() && (self.volatile.is_dir(&path) || self.volatile.files.contains_key(&path))
    }
}

/// The file operations.
impl Disk {
    fn set_len(&mut self, id: u64, len_bytes: u64) -> io::Result<()> {
        self.begin_mutation()?;
        let new_len = usize::try_from(len_bytes).map_err(|_| os_error(libc::EFBIG))?;
        let sector_size_bytes = self.config.sector_size_bytes;
        let old_len = self.live_inode(id)?.len_bytes;
        if new_len == old_len {
            return Ok(());
        }
        let mappings = self.live_inode(id)?.mapping_count();
        assert!(
            mappings == 0,
            "SimStorage: set_len({new_len}) of a {old_len}-byte file while {mappings} mapping(s) \
             of it live: the length must not change while mapped"
        );
        if new_len > old_len {
            if self.fault(FaultKind::NoSpace) {
                return Err(os_error(libc::ENOSPC));
            }
            self.check_capacity(old_len, new_len)?;
        }
        let inode = self.live_inode_mut(id)?;
        inode.resize_volatile(new_len)?;
        inode.mark_dirty(old_len.min(new_len), old_len.max(new_len), sector_size_bytes);
        Ok(())
    }

    fn read_at(&mut self, id: u64, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.live_inode(id)?;
        if self.fault(FaultKind::ReadEio) {
            return Err(os_error(libc::EIO));
        }
        let inode = self.live_inode(id)?;
        let end = usize::try_from(offset)
            .ok()
            .and_then(|offset| offset.checked_add(buf.len()));
        match end {
            Some(end) if end <= inode.len_bytes => {
                inode.buf.read(end - buf.len(), buf);
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            )),
        }
    }

    fn write_at(&mut self, id: u64, buf: &[u8], offset: u64) -> io::Result<()> {
        self.begin_mutation()?;
        let offset = usize::try_from(offset).map_err(|_| os_error(libc::EFBIG))?;
        let end = offset.checked_add(buf.len()).ok_or_else(|| os_error(libc::EFBIG))?;
        let old_len = self.live_inode(id)?.len_bytes;
        if buf.is_empty() {
            return Ok(());
        }
        if end > old_len {
            let shared = self.live_inode(id)?.shared_mapping_count();
            assert!(
                shared == 0,
                "SimStorage: write_at would grow a {old_len}-byte file to {end} bytes while \
                 {shared} shared mapping(s) of it live: the length must not change while mapped"
            );
            if self.fault(FaultKind::NoSpace) {
                return Err(os_error(libc::ENOSPC));
            }
            self.check_capacity(old_len, end)?;
        }
        if self.fault(FaultKind::WriteEio) {
            // A short write, then the error: a seeded prefix of whole sectors (never all of
            // the write) landed.
            let mut rng = self.fault_rng(FaultKind::WriteEio);
            let sector = self.config.sector_size_bytes;
            let boundaries = (offset / sector + 1..end.div_ceil(sector)).map(|s| s * sector - offset);
            let prefixes: Vec<usize> = std::iter::once(0).chain(boundaries).collect();
            let prefix = prefixes[(rng.next_u64() % prefixes.len() as u64) as usize];
            if prefix > 0 {
                self.apply_write(id, &buf[..prefix], offset, old_len)?;
            }
            return Err(os_error(libc::EIO));
        }
        self.apply_write(id, buf, offset, old_len)
    }

    /// The effect of a `write_at` of `buf` (non-empty, room checked) to a file of `old_len`.
    fn apply_write(&mut self, id: u64, buf: &[u8], offset: usize, old_len: usize) -> io::Result<()> {
        let sector_size_bytes = self.config.sector_size_bytes;
        let end = offset + buf.len();
        let inode = self.live_inode_mut(id)?;
        if end > old_len {
            inode.resize_volatile(end)?;
        }
        inode.buf.write(offset, buf);
        inode.mark_dirty(offset.min(old_len), end, sector_size_bytes);
        self.written_bytes += buf.len() as u64;
        Ok(())
    }

    fn sync_data(&mut self, id: u64) -> io::Result<()> {
        self.begin_mutation()?;
        let sector_size_bytes = self.config.sector_size_bytes;
        self.live_inode(id)?;
        if self.fault(FaultKind::SyncEio) {
            return Err(self.fail_sync(id)?);
        }
        let synced = self.live_inode_mut(id)?.sync(sector_size_bytes);
        self.synced_bytes += synced;
        Ok(())
    }

    /// A failed sync of file `id`: some unsynced sectors reached the disk, the rest are lost for
    /// good (module docs). Returns the error the sync reports.
    fn fail_sync(&mut self, id: u64) -> io::Result<io::Error> {
        let mut rng = self.fault_rng(FaultKind::SyncEio);
        let keep_probability = draw_keep_probability(&mut rng);
        let sector_size_bytes = self.config.sector_size_bytes;
        let inode = self.live_inode_mut(id)?;
        inode.durable = inode.crash_bytes(&mut rng, keep_probability, sector_size_bytes);
        inode.dirty.clear();
        Ok(os_error(libc::EIO))
    }

    /// A durable direct write: the write (as `write_at`: a crash before it, a failed write's
    /// prefix), then its sectors made durable, a second step, so that a crash between the two
    /// keeps any subset of them (a torn write) and a failed one is a failed sync of the file.
    fn write_durable_direct(&mut self, id: u64, blocks: &[u8], offset: u64) -> io::Result<bool> {
        super::assert_direct_blocks(blocks, offset);
        if !self.config.direct_io {
            return Ok(false);
        }
        self.write_at(id, blocks, offset)?;
        self.begin_mutation()?;
        if self.fault(FaultKind::SyncEio) {
            return Err(self.fail_sync(id)?);
        }
        let start = usize::try_from(offset).map_err(|_| os_error(libc::EFBIG))?;
        let sector_size_bytes = self.config.sector_size_bytes;
        let synced = self
            .live_inode_mut(id)?
            .sync_range(start, start + blocks.len(), sector_size_bytes);
        self.synced_bytes += synced;
        Ok(true)
    }

    fn map_shared(&self, id: u64) -> io::Result<Mapping> {
        let inode = self.live_inode(id)?;
        if inode.len_bytes == 0 {
            return Ok(Mapping::new(ptr::null_mut(), 0, false, Box::new(())));
        }
        let owner = Arc::clone(&inode.buf);
        Ok(Mapping::new(owner.ptr(), inode.len_bytes, false, Box::new(owner)))
    }

    fn map_private(&self, disk: &Arc<Mutex<Disk>>, id: u64) -> io::Result<Mapping> {
        let inode = self.live_inode(id)?;
        let len_bytes = inode.len_bytes;
        if len_bytes == 0 {
            return Ok(Mapping::new(ptr::null_mut(), 0, true, Box::new(())));
        }
        let copy = VolatileBuf::zeroed(len_bytes)?;
        copy.copy_prefix_from(&inode.buf, len_bytes);
        let ptr = copy.ptr();
        let owner = PrivateOwner {
            copy,
            disk: Arc::clone(disk),
            id,
            _token: Arc::clone(&inode.private_maps),
        };
        Ok(Mapping::new(ptr, len_bytes, true, Box::new(owner)))
    }

    /// What a private mapping's page shows once its copy is dropped (see `PrivateOwner`): the
    /// file's durable bytes (zeros past their end). A release promises that the file durably
    /// holds the range; where it does not, the page cache may still hold newer bytes at the
    /// release, but a failed sync or an eviction later can drop them, and the refault, which
    /// comes whenever the page is next touched, then reads what the disk held. The model shows
    /// that outcome at once.
    fn refault_bytes(&self, id: u64, offset: usize, out: &mut [u8]) -> io::Result<()> {
        let durable = &self.live_inode(id)?.durable;
        out.fill(0);
        let from = offset.min(durable.len());
        let to = (offset + out.len()).min(durable.len());
        out[..to - from].copy_from_slice(&durable[from..to]);
        Ok(())
    }
}

/// The test hooks.
impl Disk {
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let id = self.file_at(path)?;
        Ok(self.live_inode(id)?.volatile_bytes())
    }

    fn damage(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let id = self.file_at(path)?;
        let inode = self.live_inode_mut(id)?;
        let limit = inode.len_bytes.max(inode.durable.len());
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = offset.checked_add(bytes.len()).filter(|&end| end <= limit);
        let Some(end) = end else {
            let message = format!("damage at {offset}+{} past the file's {limit} bytes", bytes.len());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        };
        let volatile_end = end.min(inode.len_bytes).max(offset);
        inode.buf.write(offset, &bytes[..volatile_end - offset]);
        let durable_end = end.min(inode.durable.len()).max(offset);
        inode.durable[offset..durable_end].copy_from_slice(&bytes[..durable_end - offset]);
        Ok(())
    }

    fn truncate_durably(&mut self, path: &Path, len_bytes: u64) -> io::Result<()> {
        let id = self.file_at(path)?;
        let sector_size_bytes = self.config.sector_size_bytes;
        let inode = self.live_inode_mut(id)?;
        let new_len = usize::try_from(len_bytes).map_err(|_| os_error(libc::EFBIG))?;
        if new_len != inode.len_bytes && inode.mapping_count() > 0 {
            return Err(io::Error::other("truncate_durably of a mapped file"));
        }
        inode.resize_volatile(new_len)?;
        inode.durable.resize(new_len, 0);
        inode.dirty.retain_below(new_len.div_ceil(sector_size_bytes));
        Ok(())
    }
}

/// A namespace: directories and files by normalised path, each with its inode id.
#[derive(Clone, Default)]
struct Namespace {
    dirs: BTreeMap<PathBuf, u64>,
    files: BTreeMap<PathBuf, u64>,
}

impl Namespace {
    fn is_dir(&self, path: &Path) -> bool {
        is_root(path) || self.dirs.contains_key(path)
    }

    /// `ENOTDIR` if `path` is a file, `ENOENT` if it is absent.
    fn check_is_dir(&self, path: &Path) -> io::Result<()> {
        if self.is_dir(path) {
            Ok(())
        } else if self.files.contains_key(path) {
            Err(os_error(libc::ENOTDIR))
        } else {
            Err(os_error(libc::ENOENT))
        }
    }

    /// Checks that the parent of the non-root `path` is a directory.
    fn check_parent_dir(&self, path: &Path) -> io::Result<()> {
        self.check_is_dir(path.parent().unwrap_or(Path::new("")))
    }

    fn has_children(&self, dir: &Path) -> bool {
        children(&self.dirs, dir).next().is_some() || children(&self.files, dir).next().is_some()
    }

    fn child_names(&self, dir: &Path) -> Vec<String> {
        let dirs = children(&self.dirs, dir).map(|(path, _)| path);
        let files = children(&self.files, dir).map(|(path, _)| path);
        let mut names: Vec<String> = dirs
            .chain(files)
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Makes the children of `dir` in this (durable) namespace those of `source`.
    fn sync_children(&mut self, source: &Namespace, dir: &Path) {
        let old_dirs: Vec<PathBuf> = children(&self.dirs, dir).map(|(path, _)| path.clone()).collect();
        for path in old_dirs {
            match source.dirs.get(&path) {
                Some(&id) => self.replace_dir(&path, id),
                None => self.remove_dir_tree(&path),
            }
        }
        let old_files: Vec<PathBuf> = children(&self.files, dir).map(|(path, _)| path.clone()).collect();
        for path in old_files {
            self.files.remove(&path);
        }
        for (path, &id) in children(&source.dirs, dir) {
            self.replace_dir(path, id);
        }
        for (path, &id) in children(&source.files, dir) {
            self.files.insert(path.clone(), id);
        }
    }

    /// Links directory `id` at `path`; if another directory was there, its entries go with it.
    fn replace_dir(&mut self, path: &Path, id: u64) {
        if self.dirs.get(path).is_some_and(|&old| old != id) {
            self.remove_dir_tree(path);
        }
        self.dirs.insert(path.to_path_buf(), id);
    }

    /// Removes the directory `path` and everything beneath it.
    fn remove_dir_tree(&mut self, path: &Path) {
        let dirs: Vec<PathBuf> = descendants(&self.dirs, path).map(|(path, _)| path.clone()).collect();
        let files: Vec<PathBuf> = descendants(&self.files, path).map(|(path, _)| path.clone()).collect();
        for dir in dirs {
            self.dirs.remove(&dir);
        }
        for file in files {
            self.files.remove(&file);
        }
        self.dirs.remove(path);
    }

    /// The entries whose every ancestor directory is in this namespace.
    fn reachable(&self) -> Namespace {
        let dirs: BTreeMap<PathBuf, u64> = self
            .dirs
            .iter()
            .filter(|(path, _)| path.ancestors().skip(1).all(|dir| self.is_dir(dir)))
            .map(|(path, &id)| (path.clone(), id))
            .collect();
        let files = self
            .files
            .iter()
            .filter(|(path, _)| path.parent().is_none_or(|dir| is_root(dir) || dirs.contains_key(dir)))
            .map(|(path, &id)| (path.clone(), id))
            .collect();
        Namespace { dirs, files }
    }
}

/// The entries strictly beneath `dir`, in order (a path's descendants sort right after it).
fn descendants<'a, V>(map: &'a BTreeMap<PathBuf, V>, dir: &'a Path) -> impl Iterator<Item = (&'a PathBuf, &'a V)> {
    map.range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
        .take_while(move |(path, _)| path.starts_with(dir))
}

/// The entries directly in `dir`.
fn children<'a, V>(map: &'a BTreeMap<PathBuf, V>, dir: &'a Path) -> impl Iterator<Item = (&'a PathBuf, &'a V)> {
    descendants(map, dir).filter(move |(path, _)| path.parent() == Some(dir))
}

/// `path` with `.` dropped and `..` applied lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other.as_os_str()),
        }
    }
    normal
}

/// True for the root of absolute (`/`) or relative (empty) paths, which always exist.
fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

/// One file: its volatile and durable images and the sectors where they may differ.
struct Inode {
    /// The volatile bytes `0..len_bytes`; the rest of the buffer is zero.
    buf: Arc<VolatileBuf>,
    len_bytes: usize,
    durable: Vec<u8>,
    /// Sectors written or resized since the last `sync_data`. Outside them, the volatile and
    /// durable images agree, except in sectors a failed `sync_data` lost.
    dirty: SectorSet,
    open_handles: usize,
    /// Cloned into every private mapping, to count them.
    private_maps: Arc<()>,
}

impl Inode {
    fn empty() -> Inode {
        Inode {
            buf: Arc::new(VolatileBuf::empty()),
            len_bytes: 0,
            durable: Vec::new(),
            dirty: SectorSet::default(),
            open_handles: 0,
            private_maps: Arc::new(()),
        }
    }

    /// A synced file holding `bytes`. Panics if memory for them cannot be allocated.
    fn from_bytes(bytes: &[u8]) -> Inode {
        let buf = VolatileBuf::zeroed(bytes.len()).expect("SimStorage: out of memory at reboot");
        buf.write(0, bytes);
        Inode {
            buf: Arc::new(buf),
            len_bytes: bytes.len(),
            durable: bytes.to_vec(),
            ..Inode::empty()
        }
    }

    fn shared_mapping_count(&self) -> usize {
        Arc::strong_count(&self.buf) - 1
    }

    fn mapping_count(&self) -> usize {
        self.shared_mapping_count() + Arc::strong_count(&self.private_maps) - 1
    }

    fn volatile_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.len_bytes];
        self.buf.read(0, &mut bytes);
        bytes
    }

    /// Changes the volatile length (zero-filling growth) without marking anything dirty. Moves
    /// the buffer if it must grow, so no shared mapping may live then.
    fn resize_volatile(&mut self, new_len: usize) -> io::Result<()> {
        let old_len = self.len_bytes;
        if new_len > self.buf.capacity_bytes {
            assert!(
                self.shared_mapping_count() == 0,
                "SimStorage: moving a mapped file's memory"
            );
            let doubled = self.buf.capacity_bytes.saturating_mul(2).max(new_len);
            let grown = VolatileBuf::zeroed(doubled).or_else(|_| VolatileBuf::zeroed(new_len))?;
            grown.copy_prefix_from(&self.buf, old_len);
            self.buf = Arc::new(grown);
        } else if new_len < old_len {
            self.buf.zero(new_len, old_len);
        }
        self.len_bytes = new_len;
        Ok(())
    }

    /// Marks the sectors that bytes `start..end` touch as dirty.
    fn mark_dirty(&mut self, start: usize, end: usize, sector_size_bytes: usize) {
        if start < end {
            self.dirty
                .insert_range(start / sector_size_bytes, (end - 1) / sector_size_bytes);
        }
    }

    /// `sync_data`: the durable image becomes the volatile one. Returns the bytes copied.
    fn sync(&mut self, sector_size_bytes: usize) -> u64 {
        let len_bytes = self.len_bytes;
        self.durable.resize(len_bytes, 0);
        let mut synced_bytes = 0;
        for sector in self.dirty.iter() {
            let start = sector * sector_size_bytes;
            if start >= len_bytes {
                break;
            }
            let end = (start + sector_size_bytes).min(len_bytes);
            self.buf.read(start, &mut self.durable[start..end]);
            synced_bytes += (end - start) as u64;
        }
        self.dirty.clear();
        synced_bytes
    }

    /// A durable direct write's second step: the sectors of `start..end` (inside the file)
    /// become durable, the others stay as they are. Returns the bytes copied.
    fn sync_range(&mut self, start: usize, end: usize, sector_size_bytes: usize) -> u64 {
        assert!(
            start < end && end <= self.len_bytes,
            "a direct write lies inside the file"
        );
        if self.durable.len() < end {
            self.durable.resize(end, 0);
        }
        self.buf.read(start, &mut self.durable[start..end]);
        self.dirty
            .remove_range(start / sector_size_bytes, (end - 1) / sector_size_bytes);
        (end - start) as u64
    }

    /// The bytes a crash leaves: the durable image plus each dirty sector's volatile bytes with
    /// probability `keep_probability`.
    fn crash_bytes(&self, rng: &mut SplitMix64, keep_probability: f64, sector_size_bytes: usize) -> Vec<u8> {
        let mut bytes = self.durable.clone();
        for sector in self.dirty.iter() {
            let keep = rng.next_f64() < keep_probability;
            let start = sector * sector_size_bytes;
            let end = (start.saturating_add(sector_size_bytes)).min(self.len_bytes);
            if !keep || start >= end {
                continue;
            }
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            self.buf.read(start, &mut bytes[start..end]);
        }
        bytes
    }
}

/// A zeroed heap allocation that never moves: a file's volatile bytes, or a private mapping's
/// copy of them.
///
/// Accessed only through raw pointers. The methods below run only under the disk lock (the
/// buffer is reachable only through `Disk`, or is a private copy not yet handed out), so they
/// never race each other; concurrent accesses through a [`Mapping`] are governed by its
/// unsafe accessors' contracts, and so are a private copy's releases (`Mapping::release`:
/// no thread writes the range meanwhile).
struct VolatileBuf {
    ptr: NonNull<u8>,
    capacity_bytes: usize,
}

// SAFETY: `VolatileBuf` owns its allocation (freed only in `Drop`); moving it between threads
// moves ownership of plain bytes.
unsafe impl Send for VolatileBuf {}
// SAFETY: shared access only copies bytes through raw pointers: the methods run under the disk
// lock, and mapping readers uphold `Mapping::bytes`' no-concurrent-writer contract.
unsafe impl Sync for VolatileBuf {}

impl VolatileBuf {
    fn empty() -> VolatileBuf {
        VolatileBuf {
            ptr: NonNull::dangling(),
            capacity_bytes: 0,
        }
    }

    /// A zeroed buffer; `ENOMEM` if it cannot be allocated.
    fn zeroed(capacity_bytes: usize) -> io::Result<VolatileBuf> {
        if capacity_bytes == 0 {
            return Ok(VolatileBuf::empty());
        }
        // Page-aligned like a real mapping: the arena reads f32 vectors in place.
        let layout = Layout::from_size_align(capacity_bytes, MAPPING_ALIGN_BYTES).map_err(|_| os_error(libc::EFBIG))?;
        // SAFETY: the layout has a non-zero size (`capacity_bytes > 0`).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| os_error(libc::ENOMEM))?;
        Ok(VolatileBuf { ptr, capacity_bytes })
    }

    fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn check_range(&self, offset: usize, len_bytes: usize) {
        let end = offset.checked_add(len_bytes);
        assert!(
            end.is_some_and(|end| end <= self.capacity_bytes),
            "SimStorage: buffer access {offset}+{len_bytes} past {}",
            self.capacity_bytes
        );
    }

    fn write(&self, offset: usize, data: &[u8]) {
        self.check_range(offset, data.len());
        // SAFETY: the range is inside the allocation (checked); `data` is a Rust slice, so it
        // cannot overlap memory only reachable through raw pointers; no other method runs
        // concurrently (disk lock) and mapping readers keep off bytes being written.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.ptr().add(offset), data.len()) }
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        self.check_range(offset, out.len());
        // SAFETY: the range is inside the allocation (checked); `out` is an exclusive Rust
        // slice, so it does not overlap; writers of the buffer hold the disk lock, as we do.
        unsafe { ptr::copy_nonoverlapping(self.ptr().add(offset), out.as_mut_ptr(), out.len()) }
    }

    fn zero(&self, start: usize, end: usize) {
        self.check_range(start, end - start);
        // SAFETY: the range is inside the allocation (checked); only called with no mapping of
        // the file alive, under the disk lock.
        unsafe { ptr::write_bytes(self.ptr().add(start), 0, end - start) }
    }

    /// Copies the first `len_bytes` of `source` into this (distinct) buffer.
    fn copy_prefix_from(&self, source: &VolatileBuf, len_bytes: usize) {
        self.check_range(0, len_bytes);
        source.check_range(0, len_bytes);
        // SAFETY: both ranges are inside their allocations (checked) and the buffers are
        // distinct allocations; the disk lock excludes concurrent writers of `source`.
        unsafe { ptr::copy_nonoverlapping(source.ptr(), self.ptr(), len_bytes) }
    }
}

impl Drop for VolatileBuf {
    fn drop(&mut self) {
        if self.capacity_bytes > 0 {
            let layout =
                Layout::from_size_align(self.capacity_bytes, MAPPING_ALIGN_BYTES).expect("allocated with this layout");
            // SAFETY: `ptr` was allocated by `alloc_zeroed` with this layout and is freed once,
            // here; no mapping points into it any more (mappings hold an `Arc` to it).
            unsafe { alloc::dealloc(self.ptr(), layout) }
        }
    }
}

/// What a private mapping keeps alive: its copy, and a token counting it on the inode; and
/// how to reach the inode again when pages of the copy are released.
struct PrivateOwner {
    copy: VolatileBuf,
    disk: Arc<Mutex<Disk>>,
    id: u64,
    _token: Arc<()>,
}

/// The volatile buffer behind shared mappings: the page cache itself, nothing to give back.
impl super::Backing for Arc<VolatileBuf> {}

/// Releasing pages of a private mapping models the kernel's refault after `MADV_DONTNEED`:
/// the copy takes the bytes the file can be read back with ([`Disk::refault_bytes`]), so a
/// page released before its bytes were durably in the file loses what the disk lacks, and the
/// engine's tests see it. Only bytes that differ are written, so concurrent readers of bytes
/// that do not change race with nothing. After a crash it fails and changes nothing.
impl super::Backing for PrivateOwner {
    unsafe fn release(&self, ptr: *mut u8, len_bytes: usize) -> io::Result<()> {
        let offset = (ptr as usize)
            .checked_sub(self.copy.ptr() as usize)
            .expect("a release inside the mapping");
        let mut file_bytes = vec![0u8; len_bytes];
        {
            let mut disk = self.disk.lock();
            disk.refault_bytes(self.id, offset, &mut file_bytes)?;
            disk.released_bytes += len_bytes as u64;
        }
        let mut current = vec![0u8; len_bytes];
        self.copy.read(offset, &mut current);
        let mut at = 0;
        while at < len_bytes {
            if current[at] == file_bytes[at] {
                at += 1;
                continue;
            }
            let run = current[at..]
                .iter()
                .zip(&file_bytes[at..])
                .take_while(|(a, b)| a != b)
                .count();
            self.copy.write(offset + at, &file_bytes[at..at + run]);
            at += run;
        }
        Ok(())
    }

    /// Fresh memory reads zeros and holds nothing of the file: the copy's range is zeroed.
    unsafe fn zero_fresh(&self, ptr: *mut u8, len_bytes: usize) -> io::Result<()> {
        let offset = (ptr as usize)
            .checked_sub(self.copy.ptr() as usize)
            .expect("a zero_fresh inside the mapping");
        self.copy.write(offset, &vec![0u8; len_bytes]);
        Ok(())
    }

    /// Mapping the file back over fresh memory refaults it as a release of a copy does.
    unsafe fn release_fresh(&self, ptr: *mut u8, len_bytes: usize) -> io::Result<()> {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.release(ptr, len_bytes) }
    }
}

/// A set of sector indices, as a bitset (iterates in increasing order).
#[derive(Default)]
struct SectorSet {
    words: Vec<u64>,
}

impl SectorSet {
    /// Inserts `first..=last`.
    fn insert_range(&mut self, first: usize, last: usize) {
        let needed_words = last / 64 + 1;
        if self.words.len() < needed_words {
            self.words.resize(needed_words, 0);
        }
        for sector in first..=last {
            self.words[sector / 64] |= 1 << (sector % 64);
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let first = (word != 0).then_some(word);
            let next = |&bits: &u64| Some(bits & bits.wrapping_sub(1)).filter(|&rest| rest != 0);
            std::iter::successors(first, next).map(move |bits| index * 64 + bits.trailing_zeros() as usize)
        })
    }

    /// Removes `first..=last`.
    fn remove_range(&mut self, first: usize, last: usize) {
        for sector in first..=last {
            if let Some(word) = self.words.get_mut(sector / 64) {
                *word &= !(1 << (sector % 64));
            }
        }
    }

    fn clear(&mut self) {
        self.words.clear();
    }

    /// Keeps only the sectors below `end`.
    fn retain_below(&mut self, end: usize) {
        self.words.truncate(end.div_ceil(64));
        if !end.is_multiple_of(64)
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1 << (end % 64)) - 1;
        }
    }
}

/// The probability that a crash keeps each unsynced sector: 0, ½, 1 or uniform, equally likely.
fn draw_keep_probability(rng: &mut SplitMix64) -> f64 {
    match rng.next_u64() % 4 {
        0 => 0.0,
        1 => 0.5,
        2 => 1.0,
        _ => rng.next_f64(),
    }
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash")
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn vanished() -> io::Error {
    io::Error::other("SimStorage: the file's inode is gone")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTOR: usize = 512;

    fn path(text: &str) -> &Path {
        Path::new(text)
    }

    /// The base seed of a randomised test: `VELLUM_SIM_SEED` if set, else `default`; printed.
    fn test_seed(default: u64) -> u64 {
        crate::rng::seed_from_env("VELLUM_SIM_SEED", default)
    }

    /// Creates `/store/name` holding `bytes`, synced and linked durably.
    fn durable_file(storage: &SimStorage, name: &str, bytes: &[u8]) -> Arc<dyn StorageFile> {
        storage.create_dir_all(path("/store")).unwrap();
        let file = storage.open(&Path::new("/store").join(name), true).unwrap();
        file.write_at(bytes, 0).unwrap();
        file.sync_data().unwrap();
        storage.sync_dir(path("/store")).unwrap();
        file
    }

    /// For each sector of `bytes`: Some(true) if it is all `new`, Some(false) if all `old`.
    fn sector_outcomes(bytes: &[u8], old: u8, new: u8) -> Vec<Option<bool>> {
        bytes
            .chunks(SECTOR)
            .map(|sector| match sector {
                s if s.iter().all(|&b| b == new) => Some(true),
                s if s.iter().all(|&b| b == old) => Some(false),
                _ => None,
            })
            .collect()
    }

    fn is_crash(result: &io::Result<impl fmt::Debug>) -> bool {
        matches!(result, Err(error) if error.to_string() == "simulated crash")
    }

    #[test]
    fn synced_write_survives_reboot() {
        let base = test_seed(1);
        for seed in base..base + 20 {
            let storage = SimStorage::new(seed);
            let bytes: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
            let file = durable_file(&storage, "data", &bytes);
            file.set_len(2000).unwrap();
            file.sync_data().unwrap();
            let rebooted = storage.reboot();
            let survived = rebooted.read_file(path("/store/data")).unwrap();
            assert_eq!(survived, bytes[..2000], "seed {seed}: synced bytes and length survive");
            assert_eq!(rebooted.list(path("/store")).unwrap(), ["data"]);
        }
    }

    #[test]
    fn unsynced_write_may_be_lost_or_kept_per_sector() {
        let base = test_seed(2);
        let (mut kept, mut lost, mut torn) = (0, 0, 0);
        for seed in base..base + 100 {
            let storage = SimStorage::new(seed);
            let file = durable_file(&storage, "data", &[0xAA; 4 * SECTOR]);
            file.write_at(&[0xBB; 4 * SECTOR], 0).unwrap();
            let image = storage.reboot().read_file(path("/store/data")).unwrap();
            assert_eq!(image.len(), 4 * SECTOR, "seed {seed}: an overwrite keeps the length");
            let outcomes = sector_outcomes(&image, 0xAA, 0xBB);
            assert!(
                outcomes.iter().all(Option::is_some),
                "seed {seed}: sectors are atomic: {outcomes:?}"
            );
            kept += outcomes.iter().filter(|&&o| o == Some(true)).count();
            lost += outcomes.iter().filter(|&&o| o == Some(false)).count();
            torn += usize::from(outcomes.contains(&Some(true)) && outcomes.contains(&Some(false)));
        }
        assert!(kept > 0 && lost > 0, "both outcomes occur: kept {kept}, lost {lost}");
        assert!(
            torn > 0,
            "some crashes keep a strict subset of the sectors of one write"
        );
    }

    #[test]
    fn partial_sector_write_is_kept_or_lost_whole() {
        let base = test_seed(3);
        for seed in base..base + 50 {
            let storage = SimStorage::new(seed);
            let file = durable_file(&storage, "data", &[0xAA; SECTOR]);
            file.write_at(&[0xBB; 100], 10).unwrap();
            let image = storage.reboot().read_file(path("/store/data")).unwrap();
            let mut new = vec![0xAA; SECTOR];
            new[10..110].fill(0xBB);
            assert!(
                image == new || image == [0xAA; SECTOR],
                "seed {seed}: the sector is old or new"
            );
        }
    }

    #[test]
    fn unsynced_growth_keeps_durable_length_or_a_zero_filled_tail() {
        let base = test_seed(4);
        let mut lengths = BTreeSet::new();
        for seed in base..base + 100 {
            let storage = SimStorage::new(seed);
            let file = durable_file(&storage, "data", &[0xAA; SECTOR]);
            file.write_at(&[0xBB; SECTOR], 3 * SECTOR as u64).unwrap();
            file.set_len(10).unwrap();
            file.write_at(&[0xCC; SECTOR], 3 * SECTOR as u64).unwrap();
            let image = storage.reboot().read_file(path("/store/data")).unwrap();
            assert!(
                image.len() >= SECTOR && image.len().is_multiple_of(SECTOR),
                "seed {seed}: {} bytes",
                image.len()
            );
            let mut shrunk_then_regrown = vec![0; SECTOR];
            shrunk_then_regrown[..10].fill(0xAA);
            for (index, sector) in image.chunks(SECTOR).enumerate() {
                let allowed: Vec<Vec<u8>> = match index {
                    0 => vec![vec![0xAA; SECTOR], shrunk_then_regrown.clone()],
                    3 => vec![vec![0xCC; SECTOR], vec![0; SECTOR]],
                    _ => vec![vec![0; SECTOR]],
                };
                assert!(
                    allowed.iter().any(|a| a == sector),
                    "seed {seed}: sector {index} is old or new"
                );
            }
            lengths.insert(image.len());
        }
        assert!(
            lengths.contains(&SECTOR) && lengths.contains(&(4 * SECTOR)),
            "lengths seen: {lengths:?}"
        );
    }

    #[test]
    fn unsynced_shrink_is_never_kept() {
        let base = test_seed(5);
        for seed in base..base + 20 {
            let storage = SimStorage::new(seed);
            let file = durable_file(&storage, "data", &[7; 3 * SECTOR]);
            file.set_len(100).unwrap();
            let image = storage.reboot().read_file(path("/store/data")).unwrap();
            assert_eq!(
                image,
                [7; 3 * SECTOR],
                "seed {seed}: only sync_data makes a shrink durable"
            );
        }
    }

    #[test]
    fn file_creation_is_lost_without_dir_sync() {
        for seed in 0..20 {
            let storage = SimStorage::new(seed);
            storage.create_dir_all(path("/store")).unwrap();
            let file = storage.open(path("/store/new"), true).unwrap();
            file.write_at(b"hello", 0).unwrap();
            file.sync_data().unwrap();
            let rebooted = storage.reboot();
            assert!(!rebooted.exists(path("/store/new")), "seed {seed}: not linked durably");
            assert!(
                rebooted.exists(path("/store")),
                "a new top-level tree is durable at once"
            );
            assert!(rebooted.list(path("/store")).unwrap().is_empty());
        }
    }

    #[test]
    fn file_removal_is_durable_only_after_dir_sync() {
        let storage = SimStorage::new(6);
        drop(durable_file(&storage, "a", b"alpha"));
        drop(durable_file(&storage, "b", b"beta"));
        storage.remove_file(path("/store/a")).unwrap();
        storage.remove_file(path("/store/b")).unwrap();
        let unsynced = storage.reboot();
        assert_eq!(
            unsynced.read_file(path("/store/a")).unwrap(),
            b"alpha",
            "removal not durable yet"
        );
        assert_eq!(unsynced.read_file(path("/store/b")).unwrap(), b"beta");
        let synced = SimStorage::new(6);
        drop(durable_file(&synced, "a", b"alpha"));
        synced.remove_file(path("/store/a")).unwrap();
        synced.sync_dir(path("/store")).unwrap();
        assert!(
            !synced.reboot().exists(path("/store/a")),
            "removal durable after sync_dir"
        );
    }

    #[test]
    fn rename_is_durable_only_after_dir_sync() {
        let storage = SimStorage::new(7);
        drop(durable_file(&storage, "final", b"old"));
        drop(durable_file(&storage, "tmp", b"new"));
        storage.rename(path("/store/tmp"), path("/store/final")).unwrap();
        assert_eq!(
            storage.read_file(path("/store/final")).unwrap(),
            b"new",
            "visible at once"
        );
        let before = storage.reboot();
        assert_eq!(before.read_file(path("/store/final")).unwrap(), b"old");
        assert_eq!(before.read_file(path("/store/tmp")).unwrap(), b"new");
        let storage = before;
        storage.rename(path("/store/tmp"), path("/store/final")).unwrap();
        storage.sync_dir(path("/store")).unwrap();
        let after = storage.reboot();
        assert_eq!(after.read_file(path("/store/final")).unwrap(), b"new");
        assert!(
            !after.exists(path("/store/tmp")),
            "the old name went with the same sync"
        );
    }

    #[test]
    fn a_durable_rename_survives_a_crash_and_a_failed_directory_sync_names_the_directory() {
        let storage = SimStorage::new(9);
        drop(durable_file(&storage, "final", b"old"));
        drop(durable_file(&storage, "tmp", b"new"));
        crate::storage::rename_durably(&storage, path("/store/tmp"), path("/store/final")).unwrap();
        let after = storage.reboot();
        assert_eq!(
            after.read_file(path("/store/final")).unwrap(),
            b"new",
            "the new file under the name"
        );
        assert!(!after.exists(path("/store/tmp")), "the old name gone with it");

        drop(durable_file(&after, "tmp", b"newer"));
        after.inject(plan(FaultKind::SyncEio, 1, false));
        let failed = crate::storage::rename_durably(&after, path("/store/tmp"), path("/store/final"));
        let message = failed.expect_err("the directory's sync failed").to_string();
        assert!(
            message.contains("syncing directory /store"),
            "the step named: {message}"
        );
        assert_eq!(
            after.reboot().read_file(path("/store/final")).unwrap(),
            b"new",
            "not durable: a crash keeps the file the name had"
        );
    }

    #[test]
    fn cross_directory_rename_becomes_durable_side_by_side() {
        let storage = SimStorage::new(8);
        drop(durable_file(&storage, "f", b"data"));
        storage.create_dir_all(path("/store/sub")).unwrap();
        storage.sync_dir(path("/store")).unwrap();
        storage.rename(path("/store/f"), path("/store/sub/f")).unwrap();
        storage.sync_dir(path("/store/sub")).unwrap();
        let only_target = storage.reboot();
        assert!(
            only_target.exists(path("/store/f")),
            "the source side is not synced yet"
        );
        assert!(only_target.exists(path("/store/sub/f")), "the target side is synced");
        let storage = SimStorage::new(8);
        drop(durable_file(&storage, "f", b"data"));
        storage.create_dir_all(path("/store/sub")).unwrap();
        storage.sync_dir(path("/store")).unwrap();
        storage.rename(path("/store/f"), path("/store/sub/f")).unwrap();
        storage.sync_dir(path("/store")).unwrap();
        let only_source = storage.reboot();
        assert!(!only_source.exists(path("/store/f")) && !only_source.exists(path("/store/sub/f")));
    }

    #[test]
    fn subdirectory_needs_its_parent_synced() {
        let storage = SimStorage::new(9);
        storage.create_dir_all(path("/store")).unwrap();
        storage.create_dir_all(path("/store/seg/deep")).unwrap();
        assert!(
            !storage.reboot().exists(path("/store/seg")),
            "created in an existing directory"
        );
        let storage = SimStorage::new(9);
        storage.create_dir_all(path("/store")).unwrap();
        storage.create_dir_all(path("/store/seg/deep")).unwrap();
        storage.sync_dir(path("/store")).unwrap();
        let rebooted = storage.reboot();
        assert!(rebooted.exists(path("/store/seg")));
        assert!(
            !rebooted.exists(path("/store/seg/deep")),
            "deep needs sync_dir(/store/seg)"
        );
    }

    #[test]
    fn removed_directory_does_not_resurrect_its_old_entries() {
        let storage = SimStorage::new(10);
        storage.create_dir_all(path("/store/sub")).unwrap();
        storage.sync_dir(path("/store")).unwrap();
        drop(storage.open(path("/store/sub/f"), true).unwrap());
        storage.sync_dir(path("/store/sub")).unwrap();
        storage.remove_file(path("/store/sub/f")).unwrap();
        storage.remove_dir(path("/store/sub")).unwrap();
        storage.create_dir_all(path("/store/sub")).unwrap();
        storage.sync_dir(path("/store")).unwrap();
        let rebooted = storage.reboot();
        assert!(rebooted.exists(path("/store/sub")));
        assert!(!rebooted.exists(path("/store/sub/f")), "the new directory is empty");
    }

    #[test]
    fn shared_mapping_sees_later_write_at() {
        let storage = SimStorage::new(11);
        let file = durable_file(&storage, "data", &[0; 2 * SECTOR]);
        let mapping = file.map_shared().unwrap();
        file.write_at(b"fresh", 600).unwrap();
        // SAFETY: no thread writes these bytes while the slice lives.
        let seen = unsafe { mapping.bytes(600, 5) };
        assert_eq!(seen, b"fresh", "the mapping is the page cache");
    }

    #[test]
    fn private_mapping_stores_never_reach_the_file() {
        let storage = SimStorage::new(12);
        let file = durable_file(&storage, "data", b"original");
        let mapping = file.map_private().unwrap();
        // SAFETY: this thread is the only user of the private mapping.
        unsafe { mapping.write(0, b"SCRIBBLE") };
        // SAFETY: as above.
        assert_eq!(unsafe { mapping.bytes(0, 8) }, b"SCRIBBLE");
        let mut read = [0; 8];
        file.read_at(&mut read, 0).unwrap();
        assert_eq!(&read, b"original", "the file is unchanged");
        file.sync_data().unwrap();
        assert_eq!(storage.reboot().read_file(path("/store/data")).unwrap(), b"original");
    }

    #[test]
    fn crash_after_ops_fails_that_op_and_all_later() {
        let storage = SimStorage::new(13);
        let file = durable_file(&storage, "data", b"synced");
        let ops_before = storage.mutating_ops();
        storage.crash_after_ops(2);
        file.write_at(b"SYNCED", 0).unwrap();
        assert!(!storage.is_crashed());
        assert!(is_crash(&file.sync_data()), "the second mutating op crashes");
        assert!(storage.is_crashed());
        assert_eq!(
            storage.mutating_ops(),
            ops_before + 2,
            "the crashing op counts, later ones do not"
        );
        assert!(is_crash(&file.write_at(b"x", 0)));
        assert!(is_crash(&file.read_at(&mut [0; 1], 0)), "reads fail too");
        assert!(is_crash(&file.len()));
        assert!(is_crash(&file.map_shared()));
        assert!(is_crash(&storage.open(path("/store/data"), false)));
        assert!(is_crash(&storage.list(path("/store"))));
        assert!(!storage.exists(path("/store/data")), "a crashed disk shows nothing");
        assert_eq!(storage.mutating_ops(), ops_before + 2);
        let image = storage.reboot().read_file(path("/store/data")).unwrap();
        assert!(
            image == b"synced" || image == b"SYNCED",
            "the failed sync took no effect: {image:?}"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "minutes under Miri; the other tests cover the same code")]
    fn reboot_is_deterministic_for_a_seed() {
        fn workload(seed: u64) -> (Vec<u8>, Vec<String>) {
            let storage = SimStorage::new(seed);
            let file = durable_file(&storage, "data", &[1; 8 * SECTOR]);
            for i in 0..8u8 {
                file.write_at(&[i + 10; SECTOR], u64::from(i) * SECTOR as u64).unwrap();
            }
            drop(durable_file(&storage, "other", &[2; SECTOR]));
            let rebooted = storage.reboot();
            let again = storage.reboot();
            let image = rebooted.read_file(path("/store/data")).unwrap();
            assert_eq!(
                image,
                again.read_file(path("/store/data")).unwrap(),
                "one crash, one image"
            );
            (image, rebooted.list(path("/store")).unwrap())
        }
        let base = test_seed(14);
        let mut first_sector = BTreeSet::new();
        for seed in base..base + 100 {
            let image = workload(seed);
            assert_eq!(image, workload(seed), "seed {seed}: same ops, same image");
            first_sector.insert(image.0[0]);
        }
        assert_eq!(
            first_sector,
            BTreeSet::from([1, 10]),
            "across seeds both outcomes occur"
        );
    }

    #[test]
    fn mappings_are_page_aligned_like_real_ones() {
        // Found by Miri: the volatile buffers were allocated with alignment 1, so an arena
        // vector read in place (`&[f32]`) could be unaligned, which is undefined behaviour.
        let storage = SimStorage::new(test_seed(17));
        for len in [1usize, 100, 4096, 3 * 4096 + 5] {
            let file = durable_file(&storage, &format!("f{len}"), &vec![7; len]);
            for mapping in [file.map_shared().unwrap(), file.map_private().unwrap()] {
                assert_eq!(mapping.ptr_at(0) as usize % MAPPING_ALIGN_BYTES, 0, "{len} bytes");
            }
        }
    }

    #[test]
    fn reboot_with_seed_boots_the_same_image_with_that_seed() {
        let storage = SimStorage::new(test_seed(16));
        let file = durable_file(&storage, "data", &[1; 16 * SECTOR]);
        file.write_at(&[2; 16 * SECTOR], 0).unwrap();
        let image = storage.reboot().read_file(path("/store/data")).unwrap();
        let crash_of = |disk: SimStorage| {
            let file = disk.open(path("/store/data"), false).unwrap();
            file.write_at(&[3; 16 * SECTOR], 0).unwrap();
            disk.reboot().read_file(path("/store/data")).unwrap()
        };
        let mut later = BTreeSet::new();
        for seed in 0..20 {
            let booted = storage.reboot_with_seed(seed);
            assert_eq!(
                booted.read_file(path("/store/data")).unwrap(),
                image,
                "seed {seed}: the one image"
            );
            let crashed = crash_of(booted);
            assert_eq!(
                crashed,
                crash_of(storage.reboot_with_seed(seed)),
                "seed {seed}: same seed, same crash"
            );
            later.insert(crashed);
        }
        assert!(later.len() > 5, "the seeds give varied crashes: {} images", later.len());
    }

    #[test]
    fn repeated_crashes_of_a_rebooted_disk_differ() {
        let mut storage = SimStorage::new(test_seed(15));
        let mut images = BTreeSet::new();
        drop(durable_file(&storage, "data", &[0; 16 * SECTOR]));
        for round in 0..20u8 {
            let file = storage.open(path("/store/data"), false).unwrap();
            file.write_at(&[round + 1; 16 * SECTOR], 0).unwrap();
            storage = storage.reboot();
            images.insert(storage.read_file(path("/store/data")).unwrap());
        }
        assert!(
            images.len() > 5,
            "derived seeds give varied crashes: {} images",
            images.len()
        );
    }

    #[test]
    fn capacity_limit_gives_enospc_and_changes_nothing() {
        let storage = SimStorage::with_config(SimConfig {
            capacity_bytes: Some(4096),
            ..SimConfig::default()
        });
        storage.create_dir_all(path("/store")).unwrap();
        let a = storage.open(path("/store/a"), true).unwrap();
        let b = storage.open(path("/store/b"), true).unwrap();
        a.write_at(&[1; 3000], 0).unwrap();
        let written = storage.written_bytes();
        let is_enospc = |result: io::Result<()>| matches!(result, Err(e) if e.raw_os_error() == Some(libc::ENOSPC));
        assert!(is_enospc(b.write_at(&[2; 1097], 0)), "3000 + 1097 bytes exceed 4096");
        assert!(is_enospc(a.set_len(5000)), "growing by set_len counts too");
        assert_eq!(b.len().unwrap(), 0, "the failed write changed nothing");
        assert_eq!(a.len().unwrap(), 3000);
        assert_eq!(storage.written_bytes(), written);
        b.write_at(&[2; 1096], 0).unwrap();
        a.write_at(&[3; 3000], 0).unwrap();
        assert!(matches!(a.set_len(10), Ok(())), "shrinking is always allowed");
        drop(a);
        storage.remove_file(path("/store/a")).unwrap();
        b.write_at(&[4; 3000], 1096).unwrap();
        storage.set_capacity(None);
        b.write_at(&[5; 10_000], 0).unwrap();
        assert_eq!(b.len().unwrap(), 10_000);
    }

    #[test]
    fn mapping_memory_outlives_file_removal() {
        let storage = SimStorage::new(16);
        let file = durable_file(&storage, "data", b"still here");
        let shared = file.map_shared().unwrap();
        let private = file.map_private().unwrap();
        drop(file);
        storage.remove_file(path("/store/data")).unwrap();
        storage.sync_dir(path("/store")).unwrap();
        storage.crash_now();
        drop(storage);
        // SAFETY: nothing writes these bytes any more.
        let (shared_bytes, private_bytes) = unsafe { (shared.bytes(0, 10), private.bytes(0, 10)) };
        assert_eq!(shared_bytes, b"still here");
        assert_eq!(private_bytes, b"still here");
    }

    #[test]
    #[should_panic(expected = "the length must not change while mapped")]
    fn length_change_while_mapped_panics() {
        let storage = SimStorage::new(17);
        let file = durable_file(&storage, "data", &[0; SECTOR]);
        let _mapping = file.map_shared().unwrap();
        let _ = file.write_at(b"past the end", SECTOR as u64);
    }

    #[test]
    #[should_panic(expected = "the length must not change while mapped")]
    fn set_len_while_privately_mapped_panics() {
        let storage = SimStorage::new(18);
        let file = durable_file(&storage, "data", &[0; SECTOR]);
        let _mapping = file.map_private().unwrap();
        let _ = file.set_len(10);
    }

    #[test]
    fn length_may_change_once_mappings_are_dropped() {
        let storage = SimStorage::new(19);
        let file = durable_file(&storage, "data", &[0; SECTOR]);
        drop(file.map_shared().unwrap());
        drop(file.map_private().unwrap());
        let empty = storage.open(path("/store/empty"), true).unwrap();
        let _empty_mapping = empty.map_shared().unwrap();
        empty.write_at(b"an empty mapping holds nothing", 0).unwrap();
        file.set_len(100 * SECTOR as u64).unwrap();
        let private = file.map_private().unwrap();
        file.write_at(b"growth beside a private copy", 100 * SECTOR as u64)
            .unwrap();
        assert_eq!(private.len(), 100 * SECTOR);
    }

    fn kind_of<T: fmt::Debug>(result: io::Result<T>) -> io::ErrorKind {
        result.unwrap_err().kind()
    }

    #[test]
    fn namespace_errors_mirror_std() {
        use io::ErrorKind::*;
        let storage = SimStorage::new(20);
        storage.create_dir_all(path("/store")).unwrap();
        drop(storage.open(path("/store/f"), true).unwrap());
        let cases = [
            (
                kind_of(storage.open(path("/store/none"), false)),
                NotFound,
                "open missing",
            ),
            (
                kind_of(storage.open(path("/store/f"), true)),
                AlreadyExists,
                "create existing",
            ),
            (
                kind_of(storage.open(path("/none/f"), true)),
                NotFound,
                "create in missing dir",
            ),
            (kind_of(storage.open(path("/store"), false)), IsADirectory, "open a dir"),
            (
                kind_of(storage.rename(path("/store/none"), path("/store/g"))),
                NotFound,
                "rename missing",
            ),
            (
                kind_of(storage.rename(path("/store"), path("/x"))),
                Unsupported,
                "rename a dir",
            ),
            (
                kind_of(storage.remove_file(path("/store/none"))),
                NotFound,
                "remove missing",
            ),
            (
                kind_of(storage.remove_file(path("/store"))),
                IsADirectory,
                "remove_file of a dir",
            ),
            (
                kind_of(storage.remove_dir(path("/store"))),
                DirectoryNotEmpty,
                "remove_dir non-empty",
            ),
            (
                kind_of(storage.remove_dir(path("/store/f"))),
                NotADirectory,
                "remove_dir of a file",
            ),
            (kind_of(storage.list(path("/none"))), NotFound, "list missing"),
            (
                kind_of(storage.create_dir_all(path("/store/f"))),
                AlreadyExists,
                "mkdir over a file",
            ),
            (
                kind_of(storage.create_dir_all(path("/store/f/x"))),
                NotADirectory,
                "mkdir under a file",
            ),
            (kind_of(storage.sync_dir(path("/none"))), NotFound, "sync missing dir"),
            (kind_of(storage.read_file(path("/none"))), NotFound, "read_file missing"),
            (
                kind_of(storage.damage(path("/none"), 0, b"x")),
                NotFound,
                "damage missing",
            ),
        ];
        for (got, want, what) in cases {
            assert_eq!(got, want, "{what}");
        }
        assert_eq!(storage.list(path("/")).unwrap(), ["store"]);
        let normalised = storage.list(path("/store/./x/..")).unwrap();
        assert_eq!(normalised, ["f"], "paths are normalised");
    }

    #[test]
    fn file_errors_mirror_std() {
        let storage = SimStorage::new(20);
        let file = durable_file(&storage, "f", b"abc");
        let eof = io::ErrorKind::UnexpectedEof;
        assert_eq!(kind_of(file.read_at(&mut [0; 2], 2)), eof, "read past the end");
        assert_eq!(
            kind_of(file.read_at(&mut [0; 1], u64::MAX)),
            eof,
            "read at a huge offset"
        );
        let efbig = file.write_at(b"x", u64::MAX).unwrap_err();
        assert_eq!(efbig.raw_os_error(), Some(libc::EFBIG), "a write past any length");
        let mut all = [0; 3];
        file.read_at(&mut all, 0).unwrap();
        assert_eq!(&all, b"abc", "failed calls changed nothing");
    }

    #[test]
    fn damage_and_truncate_change_both_images() {
        let storage = SimStorage::new(21);
        let file = durable_file(&storage, "data", &[0; 2 * SECTOR]);
        storage.damage(path("/store/data"), 5, &[0xFF]).unwrap();
        let mut byte = [0];
        file.read_at(&mut byte, 5).unwrap();
        assert_eq!(byte, [0xFF], "the running program sees the damage");
        storage.truncate_durably(path("/store/data"), 700).unwrap();
        assert_eq!(file.len().unwrap(), 700);
        assert!(storage.damage(path("/store/data"), 700, b"x").is_err(), "past the end");
        let image = storage.reboot().read_file(path("/store/data")).unwrap();
        assert_eq!(image.len(), 700, "the truncation is durable");
        assert_eq!(image[5], 0xFF, "the damage is durable");
    }

    #[test]
    fn written_and_synced_bytes_are_counted() {
        let storage = SimStorage::new(22);
        storage.create_dir_all(path("/store")).unwrap();
        let file = storage.open(path("/store/f"), true).unwrap();
        file.write_at(&[1; 100], 0).unwrap();
        file.write_at(&[1; 100], 50).unwrap();
        assert_eq!(storage.written_bytes(), 200);
        file.sync_data().unwrap();
        assert_eq!(storage.synced_bytes(), 150, "the file's 150 bytes became durable");
        file.sync_data().unwrap();
        assert_eq!(storage.synced_bytes(), 150, "a clean file syncs nothing");
    }

    #[test]
    fn atomic_rename_protocol_survives_every_crash_point() {
        fn workload(storage: &SimStorage) -> io::Result<()> {
            storage.create_dir_all(path("/store"))?;
            let tmp = storage.open(path("/store/manifest.tmp"), true)?;
            tmp.write_at(&[9; 3 * SECTOR], 0)?;
            tmp.sync_data()?;
            storage.rename(path("/store/manifest.tmp"), path("/store/manifest"))?;
            storage.sync_dir(path("/store"))
        }
        let seed = test_seed(23);
        let total_ops = {
            let storage = SimStorage::new(seed);
            workload(&storage).unwrap();
            storage.mutating_ops()
        };
        for crash_at in 1..=total_ops + 1 {
            let storage = SimStorage::new(seed.wrapping_add(crash_at));
            storage.crash_after_ops(crash_at);
            let finished = workload(&storage).is_ok();
            let rebooted = storage.reboot();
            match rebooted.read_file(path("/store/manifest")) {
                Ok(bytes) => assert_eq!(bytes, [9; 3 * SECTOR], "crash at op {crash_at}: complete"),
                Err(error) => assert!(!finished, "crash at op {crash_at}: lost after success: {error}"),
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "minutes under Miri; the other tests cover the same code")]
    fn random_workload_keeps_each_sector_durable_or_latest() {
        let base = test_seed(24);
        for seed in base..base + 200 {
            let storage = SimStorage::new(seed);
            let file = durable_file(&storage, "data", &[]);
            let mut rng = SplitMix64::new(seed);
            let mut durable: Vec<u8> = Vec::new();
            for step in 0..40u8 {
                if rng.next_u64().is_multiple_of(5) {
                    file.sync_data().unwrap();
                    durable = storage.read_file(path("/store/data")).unwrap();
                } else {
                    let offset = rng.next_u64() % (8 * SECTOR as u64);
                    let len = 1 + (rng.next_u64() % (2 * SECTOR as u64)) as usize;
                    file.write_at(&vec![step + 1; len], offset).unwrap();
                }
            }
            let latest = storage.read_file(path("/store/data")).unwrap();
            let image = storage.reboot().read_file(path("/store/data")).unwrap();
            check_sectors(seed, &image, &durable, &latest);
        }
    }

    /// Every sector of `image` equals the latest volatile sector or the durable one, zero-filled
    /// past the durable length (the gap a kept later sector leaves).
    fn check_sectors(seed: u64, image: &[u8], durable: &[u8], latest: &[u8]) {
        let longest = latest.len().max(durable.len());
        assert!(
            image.len() >= durable.len() && image.len() <= longest,
            "seed {seed}: length"
        );
        let mut old = durable.to_vec();
        old.resize(image.len(), 0);
        for (index, sector) in image.chunks(SECTOR).enumerate() {
            let range = index * SECTOR..index * SECTOR + sector.len();
            let from = |bytes: &[u8]| bytes.get(range.clone()).is_some_and(|b| b == sector);
            assert!(from(&old) || from(latest), "seed {seed}: sector {index} is torn");
        }
    }

    #[test]
    fn storage_and_files_are_send_and_sync_under_concurrent_writers() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SimStorage>();
        assert_send_sync::<SimFile>();
        let storage = SimStorage::new(25);
        let file = durable_file(&storage, "data", &[0; 4 * SECTOR]);
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let file = Arc::clone(&file);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        file.write_at(&[t + 1; SECTOR], u64::from(t) * SECTOR as u64).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let bytes = storage.read_file(path("/store/data")).unwrap();
        assert!(
            bytes
                .chunks(SECTOR)
                .enumerate()
                .all(|(t, s)| s.iter().all(|&b| usize::from(b) == t + 1))
        );
    }

    fn is_os_error<T>(result: &io::Result<T>, code: i32) -> bool {
        matches!(result, Err(error) if error.raw_os_error() == Some(code))
    }

    fn plan(kind: FaultKind, after_ops: u64, persistent: bool) -> FaultPlan {
        FaultPlan {
            kind,
            after_ops,
            persistent,
        }
    }

    #[test]
    fn a_direct_write_is_durable_alone_and_a_crash_inside_it_keeps_any_subset_of_its_sectors() {
        const BLOCK_SECTORS: usize = crate::storage::DIRECT_BLOCK_BYTES as usize / SECTOR;
        let base = test_seed(40);
        let (mut torn, mut whole, mut beside_lost) = (0, 0, 0);
        for seed in base..base + 100 {
            let config = SimConfig {
                seed,
                direct_io: true,
                ..SimConfig::default()
            };
            let storage = SimStorage::with_config(config);
            let file = durable_file(&storage, "data", &[0xAA; 2 * BLOCK_SECTORS * SECTOR]);
            // Unsynced bytes beside the direct write: it does not make them durable.
            file.write_at(&[0xCC; SECTOR], (2 * BLOCK_SECTORS as u64 - 1) * SECTOR as u64)
                .unwrap();
            let blocks = vec![0xBB; BLOCK_SECTORS * SECTOR];
            let completed = seed % 2 == 0;
            if completed {
                assert!(file.write_durable_direct(&blocks, 0).unwrap(), "seed {seed}: taken");
                storage.crash_now();
            } else {
                // The write lands; the crash comes before its sync.
                storage.crash_after_ops(2);
                assert!(file.write_durable_direct(&blocks, 0).is_err(), "seed {seed}: crashed");
            }
            let image = storage.reboot().read_file(path("/store/data")).unwrap();
            let outcomes = sector_outcomes(&image[..BLOCK_SECTORS * SECTOR], 0xAA, 0xBB);
            assert!(outcomes.iter().all(Option::is_some), "seed {seed}: sectors are atomic");
            let kept = outcomes.iter().filter(|&&o| o == Some(true)).count();
            if completed {
                assert_eq!(kept, BLOCK_SECTORS, "seed {seed}: a completed direct write is durable");
                // Still unsynced: a crash keeps it or not.
                beside_lost += usize::from(image[image.len() - SECTOR..].iter().all(|&b| b == 0xAA));
            } else if kept == BLOCK_SECTORS {
                whole += 1;
            } else if kept > 0 {
                torn += 1;
            }
        }
        assert!(
            torn > 0 && whole > 0,
            "a crash inside a direct write tears it: torn {torn}, whole {whole}"
        );
        assert!(
            beside_lost > 0,
            "the unsynced sector beside a direct write is not made durable by it"
        );
        let plain = SimStorage::with_config(SimConfig::default());
        let file = durable_file(&plain, "data", &[0xAA; BLOCK_SECTORS * SECTOR]);
        let refused = file.write_durable_direct(&[0xBB; BLOCK_SECTORS * SECTOR], 0).unwrap();
        assert!(!refused, "a disk without direct I/O refuses direct writes");
        assert_eq!(
            plain.read_file(path("/store/data")).unwrap(),
            [0xAA; BLOCK_SECTORS * SECTOR],
            "unchanged"
        );
    }

    #[test]
    fn failed_sync_loses_unsynced_sectors_for_good_even_after_a_later_sync() {
        let base = test_seed(30);
        let (mut lost, mut kept) = (0, 0);
        for seed in base..base + 100 {
            let storage = SimStorage::new(seed);
            let file = durable_file(&storage, "data", &[0xAA; 4 * SECTOR]);
            file.write_at(&[0xBB; 4 * SECTOR], 0).unwrap();
            storage.inject(plan(FaultKind::SyncEio, 1, false));
            let failed = file.sync_data();
            assert!(is_os_error(&failed, libc::EIO), "seed {seed}: the armed sync fails");
            assert_eq!(
                storage.read_file(path("/store/data")).unwrap(),
                [0xBB; 4 * SECTOR],
                "seed {seed}: the program still reads its new bytes"
            );
            file.sync_data().unwrap();
            let image = storage.reboot().read_file(path("/store/data")).unwrap();
            let outcomes = sector_outcomes(&image, 0xAA, 0xBB);
            assert!(outcomes.iter().all(Option::is_some), "seed {seed}: sectors are atomic");
            lost += outcomes.iter().filter(|&&o| o == Some(false)).count();
            kept += outcomes.iter().filter(|&&o| o == Some(true)).count();
        }
        assert!(
            lost > 0 && kept > 0,
            "the retried sync wrote nothing back: lost {lost}, kept {kept}"
        );
    }

    #[test]
    fn rewriting_a_lost_sector_makes_it_durable_again() {
        let storage = SimStorage::new(test_seed(31));
        let file = durable_file(&storage, "data", &[0xAA; SECTOR]);
        file.write_at(&[0xBB; SECTOR], 0).unwrap();
        storage.inject(plan(FaultKind::SyncEio, 1, false));
        assert!(file.sync_data().is_err());
        file.write_at(&[0xBB; SECTOR], 0).unwrap();
        file.sync_data().unwrap();
        let image = storage.reboot().read_file(path("/store/data")).unwrap();
        assert_eq!(image, [0xBB; SECTOR], "the rewritten sector was synced");
    }

    #[test]
    fn failed_write_lands_a_strict_prefix_and_reports_eio() {
        let base = test_seed(32);
        let mut prefixes = BTreeSet::new();
        for seed in base..base + 40 {
            let storage = SimStorage::new(seed);
            let file = durable_file(&storage, "data", &[0; 8 * SECTOR]);
            storage.inject(plan(FaultKind::WriteEio, 1, false));
            let failed = file.write_at(&[7; 8 * SECTOR], 0);
            assert!(is_os_error(&failed, libc::EIO), "seed {seed}");
            let bytes = storage.read_file(path("/store/data")).unwrap();
            let prefix = bytes.iter().take_while(|&&b| b == 7).count();
            assert!(prefix < 8 * SECTOR, "seed {seed}: never all of it");
            assert!(prefix.is_multiple_of(SECTOR), "seed {seed}: whole sectors");
            assert!(bytes[prefix..].iter().all(|&b| b == 0), "seed {seed}: a prefix only");
            prefixes.insert(prefix);
            file.write_at(&[9; 10], 0).unwrap();
            assert_eq!(storage.faults_injected(), 1, "a one-shot fault fails one write");
        }
        assert!(
            prefixes.contains(&0) && prefixes.len() > 5,
            "varied prefixes: {prefixes:?}"
        );
    }

    #[test]
    fn faults_strike_the_nth_operation_of_their_class_once_or_for_good() {
        let storage = SimStorage::new(33);
        let file = durable_file(&storage, "f", &[1; 100]);
        let reads_before = storage.fault_class_ops(FaultKind::ReadEio);
        storage.inject(plan(FaultKind::ReadEio, 3, false));
        let mut buf = [0; 10];
        let results: Vec<bool> = (0..5).map(|_| file.read_at(&mut buf, 0).is_ok()).collect();
        assert_eq!(results, [true, true, false, true, true], "the third read fails, once");
        assert_eq!(storage.fault_class_ops(FaultKind::ReadEio), reads_before + 5);
        storage.inject(plan(FaultKind::ReadEio, 2, true));
        let results: Vec<bool> = (0..4).map(|_| file.read_at(&mut buf, 0).is_ok()).collect();
        assert_eq!(results, [true, false, false, false], "from the second read on");
        storage.clear_faults();
        assert!(file.read_at(&mut buf, 0).is_ok(), "cleared");
        assert_eq!(storage.faults_injected(), 4);
        assert_eq!(
            storage.reboot().fault_class_ops(FaultKind::ReadEio),
            0,
            "a rebooted disk counts afresh"
        );
    }

    #[test]
    fn no_space_fault_hits_only_growth_and_changes_nothing() {
        let storage = SimStorage::new(34);
        let file = durable_file(&storage, "f", &[1; 100]);
        storage.inject(plan(FaultKind::NoSpace, 1, true));
        file.write_at(&[2; 50], 0).unwrap();
        file.set_len(60).unwrap();
        assert!(
            is_os_error(&file.write_at(&[3; 50], 40), libc::ENOSPC),
            "a growing write"
        );
        assert!(is_os_error(&file.set_len(61), libc::ENOSPC), "a growing set_len");
        assert!(is_os_error(&file.allocate(4096), libc::ENOSPC), "a growing allocate");
        let mut expected = vec![2; 50];
        expected.extend([1; 10]);
        assert_eq!(
            storage.read_file(path("/store/f")).unwrap(),
            expected,
            "nothing changed"
        );
        storage.clear_faults();
        file.set_len(61).unwrap();
    }

    #[test]
    fn failed_sync_dir_makes_nothing_durable_until_a_later_one() {
        let storage = SimStorage::new(35);
        storage.create_dir_all(path("/store")).unwrap();
        drop(storage.open(path("/store/new"), true).unwrap());
        storage.inject(plan(FaultKind::SyncEio, 1, false));
        assert!(is_os_error(&storage.sync_dir(path("/store")), libc::EIO));
        let image = storage.reboot();
        assert!(
            image.list(path("/store")).unwrap().is_empty(),
            "the entry is not durable"
        );
        let later = SimStorage::new(35);
        later.create_dir_all(path("/store")).unwrap();
        drop(later.open(path("/store/new"), true).unwrap());
        later.inject(plan(FaultKind::SyncEio, 1, false));
        assert!(later.sync_dir(path("/store")).is_err());
        later.sync_dir(path("/store")).unwrap();
        assert_eq!(
            later.reboot().list(path("/store")).unwrap(),
            ["new"],
            "the retry syncs it"
        );
    }

    #[test]
    fn a_shortage_of_descriptors_fails_open_list_and_sync_dir_and_changes_nothing() {
        let storage = SimStorage::new(36);
        storage.create_dir_all(path("/store")).unwrap();
        drop(storage.open(path("/store/old"), true).unwrap());
        let ops_before = storage.fault_class_ops(FaultKind::NoDescriptors);
        storage.inject(plan(FaultKind::NoDescriptors, 1, true));
        assert!(is_os_error(&storage.open(path("/store/new"), true), libc::EMFILE));
        assert!(is_os_error(&storage.open(path("/store/old"), false), libc::EMFILE));
        assert!(is_os_error(&storage.list(path("/store")), libc::EMFILE));
        assert!(is_os_error(&storage.sync_dir(path("/store")), libc::EMFILE));
        assert_eq!(
            storage.fault_class_ops(FaultKind::NoDescriptors) - ops_before,
            4,
            "each call counts"
        );
        storage.clear_faults();
        assert_eq!(
            storage.list(path("/store")).unwrap(),
            ["old"],
            "the refused create made nothing"
        );
        storage.sync_dir(path("/store")).unwrap();
        assert_eq!(storage.reboot().list(path("/store")).unwrap(), ["old"]);
    }

    /// A file of `pages` OS pages of 0xAA, durable, and a private mapping of it.
    fn mapped_file(storage: &SimStorage, pages: usize) -> (Arc<dyn StorageFile>, Mapping) {
        let file = durable_file(storage, "mapped", &vec![0xAA; pages * 4096]);
        let map = file.map_private().unwrap();
        (file, map)
    }

    /// Page `page` of `map` (4096 bytes).
    fn page_of(map: &Mapping, page: usize) -> Vec<u8> {
        // SAFETY: nothing writes the mapping while the slice is copied out.
        unsafe { map.bytes(page * 4096, 4096) }.to_vec()
    }

    /// Stores `byte` over page `page` of `map`, as the arena does into its private mapping.
    fn store_page(map: &Mapping, page: usize, byte: u8) {
        // SAFETY: no other thread touches the mapping, and no slice over it lives.
        unsafe { map.write(page * 4096, &[byte; 4096]) }
    }

    #[test]
    fn a_released_private_page_shows_its_durable_write() {
        let storage = SimStorage::new(40);
        let (file, map) = mapped_file(&storage, 3);
        store_page(&map, 1, 0xBB);
        file.write_at(&[0xBB; 4096], 4096).unwrap();
        file.sync_data().unwrap();
        // SAFETY: the file durably holds the page's bytes; no thread reads or writes it.
        unsafe { map.release(4096, 4096) }.unwrap();
        assert!(
            page_of(&map, 1) == [0xBB; 4096],
            "the released page reads its bytes back"
        );
        store_page(&map, 2, 0xCC);
        // SAFETY: as above (page 0 never changed).
        unsafe { map.release(0, 4096) }.unwrap();
        assert!(page_of(&map, 0) == [0xAA; 4096], "an unchanged page is unchanged");
        assert_eq!(storage.released_bytes(), 2 * 4096, "both releases are counted");
        assert!(
            page_of(&map, 2) == [0xCC; 4096],
            "pages outside the range keep their copy"
        );
    }

    #[test]
    fn a_page_released_before_its_write_loses_the_stores_the_file_lacks() {
        let storage = SimStorage::new(41);
        let (file, map) = mapped_file(&storage, 2);
        store_page(&map, 0, 0xBB);
        // SAFETY: (the contract is broken on purpose: the model must show what that costs) no
        // thread reads or writes the page meanwhile.
        unsafe { map.release(0, 4096) }.unwrap();
        assert!(page_of(&map, 0) == [0xAA; 4096], "stores never written are lost");
        store_page(&map, 1, 0xBB);
        file.write_at(&[0xBB; 4096], 4096).unwrap();
        // SAFETY: as above.
        unsafe { map.release(4096, 4096) }.unwrap();
        assert!(
            page_of(&map, 1) == [0xAA; 4096],
            "written but not synced: a failed sync may drop the new bytes before the refault"
        );
    }

    #[test]
    fn a_page_released_after_a_failed_sync_reads_what_the_disk_kept() {
        let base = test_seed(42);
        let (mut lost, mut kept) = (0, 0);
        for seed in base..base + 40 {
            let storage = SimStorage::new(seed);
            let (file, map) = mapped_file(&storage, 1);
            store_page(&map, 0, 0xBB);
            file.write_at(&[0xBB; 4096], 0).unwrap();
            storage.inject(plan(FaultKind::SyncEio, 1, false));
            assert!(
                is_os_error(&file.sync_data(), libc::EIO),
                "seed {seed}: the armed sync fails"
            );
            // SAFETY: (the contract is broken on purpose) no thread touches the page meanwhile.
            unsafe { map.release(0, 4096) }.unwrap();
            let durable = storage.reboot().read_file(path("/store/mapped")).unwrap();
            assert!(
                page_of(&map, 0) == durable,
                "seed {seed}: the refault reads the disk, where the failed sync lost sectors"
            );
            let outcomes = sector_outcomes(&durable, 0xAA, 0xBB);
            lost += outcomes.iter().filter(|&&o| o == Some(false)).count();
            kept += outcomes.iter().filter(|&&o| o == Some(true)).count();
        }
        assert!(lost > 0 && kept > 0, "some sectors lost, some kept: {lost}, {kept}");
    }

    #[test]
    fn a_release_after_a_crash_or_of_partial_pages_changes_nothing() {
        let storage = SimStorage::new(43);
        let (_file, map) = mapped_file(&storage, 2);
        store_page(&map, 0, 0xBB);
        // SAFETY: no thread touches the mapping; the call must refuse before changing anything.
        let partial = unsafe { map.release(512, 4096) };
        assert!(
            matches!(&partial, Err(e) if e.kind() == io::ErrorKind::InvalidInput),
            "{partial:?}"
        );
        storage.crash_now();
        // SAFETY: as above.
        let after_crash = unsafe { map.release(0, 4096) };
        assert!(is_crash(&after_crash), "{after_crash:?}");
        assert!(page_of(&map, 0) == [0xBB; 4096], "the copy is untouched");
        let shared = durable_file(&SimStorage::new(44), "shared", &[0; 4096])
            .map_shared()
            .unwrap();
        // SAFETY: a shared mapping has nothing to release; nothing is changed.
        let unsupported = unsafe { shared.release(0, 4096) };
        assert!(
            matches!(&unsupported, Err(e) if e.kind() == io::ErrorKind::Unsupported),
            "{unsupported:?}"
        );
    }

    #[test]
    fn sector_set_iterates_in_order() {
        let mut set = SectorSet::default();
        set.insert_range(3, 5);
        set.insert_range(63, 65);
        set.insert_range(200, 200);
        assert_eq!(set.iter().collect::<Vec<_>>(), [3, 4, 5, 63, 64, 65, 200]);
        set.retain_below(64);
        assert_eq!(set.iter().collect::<Vec<_>>(), [3, 4, 5, 63]);
        set.clear();
        assert_eq!(set.iter().count(), 0);
    }
}
