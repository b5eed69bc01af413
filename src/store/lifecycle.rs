//! Creating a store's files, and what opening one checks first: options, geometry, the lock,
//! free space.

use std::path::{Path, PathBuf};
use std::sync::Arc;


use crate::arena::doublewrite::{Doublewrite, DoublewriteOpen};
use crate::error::{IoContext, Result};
use crate::storage::Storage;
use crate::format::wal::{Geometry, LogIdentity};
use crate::wal::{Wal, WalConfig, now_us};
use crate::{Error, SyncMode};
use crate::format::control::Control;
use super::control_file::ControlFile;
use super::{Options, Retention};


pub(super) fn check_creation_options(dimension: u32, options: &Options) -> Result<()> {
    Geometry::new(options.page_size_bytes, options.segment_size_bytes).map_err(Error::InvalidArgument)?;
    if let Some(url) = options.archive_url.as_deref().filter(|u| !u.is_empty()) {
        crate::store::shipping::check_url(url)?; // Hook (shipping)
    }
    let max_dimension = crate::format::page::vector_slots_max_dimension(options.page_size_bytes);
    if dimension == 0 || dimension > max_dimension {
        return Err(Error::InvalidArgument(format!(
            "dimension {dimension} must be in 1..={max_dimension} for {}-byte pages",
            options.page_size_bytes
        )));
    }
    Ok(())
}

pub(super) fn wal_config(control: &Control, options: &Options) -> Result<WalConfig> {
    let geometry = Geometry::new(control.page_size_bytes, control.segment_size_bytes)
        .map_err(|reason| Error::corrupted_file(crate::format::control::CONTROL_FILE_NAME, reason))?;
    let identity = LogIdentity {
        store_id: control.store_id,
        timeline: control.timeline,
    };
    let mut config = WalConfig::new(geometry, identity, options.sync);
    config.background = options.background_io;
    if !options.background_io && matches!(options.sync, SyncMode::Interval(_)) {
        return Err(Error::InvalidArgument("SyncMode::Interval needs background_io".into()));
    }
    Ok(config)
}

/// Takes the store's locks: exclusive for a writer, so two processes never write one store;
/// shared for a reader, so readers share a store but never beside a writer. Two locks, each
/// enough alone: the `LOCK` file (what every release takes), and the store's directory itself,
/// which unlike `LOCK` cannot be deleted from under a running writer (with `LOCK` alone, a
/// second writer whose open found `LOCK` deleted made a new one and took it, and the two
/// writers destroyed the store). A reader that cannot take a lock because `LOCK` is missing
/// or may not be opened (read-only media, another user's store) reads without it: no writer
/// can have opened the store there, or the reader could not keep one out anyway. The
/// directory's lock is a second line: a file system that cannot lock a directory (NFS takes
/// `flock` as a byte-range lock, which a directory opened for reading cannot hold
/// exclusively) leaves the store to `LOCK`.
pub(super) fn lock_store(dir: &Path, storage: &Arc<dyn Storage>, read_only: bool) -> Result<Box<dyn std::any::Any + Send + Sync>> {
    lock_store_waiting(dir, storage, read_only, HELD_WAIT_MAX)
}

/// [`lock_store`], waiting up to `wait` for a holder to let go.
fn lock_store_waiting(
    dir: &Path,
    storage: &Arc<dyn Storage>,
    read_only: bool,
    wait: std::time::Duration,
) -> Result<Box<dyn std::any::Any + Send + Sync>> {
    let path = dir.join("LOCK");
    let taken = retry_while_held(wait, &|| {
        if read_only {
            storage.lock_shared(&path)
        } else {
            storage.lock_exclusive(&path)
        }
    });
    let file_guard = match taken {
        Ok(guard) => guard,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(locked(dir, read_only)),
        Err(e) if read_only && matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) => {
            Box::new(())
        }
        Err(e) => return Err(Error::io(format!("locking {}", path.display()), e)),
    };
    let dir_guard = match retry_while_held(wait, &|| storage.lock_dir(dir, !read_only)) {
        Ok(guard) => guard,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(locked(dir, read_only)),
        Err(_) => Box::new(()),
    };
    // A writer's lock descriptors are closed in forked children (src/fork.rs), so that a
    // child does not hold the store locked after the parent closed it. First in the tuple:
    // unregistered before the descriptors close.
    let in_children: Vec<crate::fork::ClosedInChildren> = if read_only {
        Vec::new()
    } else {
        [&file_guard, &dir_guard]
            .iter()
            .filter_map(|guard| guard.downcast_ref::<std::fs::File>())
            .map(|file| crate::fork::close_in_children(std::os::fd::AsRawFd::as_raw_fd(file)))
            .collect()
    };
    Ok(Box::new((in_children, file_guard, dir_guard)))
}

/// How long an open waits for the store's locks: a lock is held by an open file description,
/// and a process that forks (to run a command) shares its descriptors with the child until the
/// child's exec closes them, so a store closed in one thread while another forks can stay
/// locked for that instant. A holder that has the store open holds it far longer.
const HELD_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// Tries `take` until it does not find the lock held, for up to `wait`.
fn retry_while_held<T>(
    wait: std::time::Duration,
    take: &dyn Fn() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let started = std::time::Instant::now();
    let mut taken = take();
    while matches!(&taken, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) && started.elapsed() < wait {
        std::thread::sleep(std::time::Duration::from_millis(2));
        taken = take();
    }
    taken
}

/// `dir` as the store goes on using it ([`Storage::resolve_dir`]: absolute, its symbolic links
/// resolved). A store keeps its directory's path for every file it makes or looks at later.
/// A relative one followed the process's working directory: after a `chdir` the next write
/// failed ("creating s/arena/catalog-00000000.pages.tmp: No such file or directory") and so
/// did the close. One through a symbolic link followed the link: a deploy that swapped
/// `current` to a new release while the old process wrote sent the old store's new log
/// segments into the new release's store, and neither opened again ("the log has no segments",
/// "segment belongs to store …"), though every write and the close had succeeded.
pub(super) fn absolute_dir(storage: &dyn Storage, dir: &Path) -> Result<std::path::PathBuf> {
    storage
        .resolve_dir(dir)
        .map_err(|e| Error::io(format!("resolving the path {}", dir.display()), e))
}

/// How long a creator waits for another that is making a store in the same directory: a
/// creation writes and syncs a log segment (tens of milliseconds), then opens the store.
const CREATION_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the store's own locks (as a writer's open does: `LOCK` and the directory) on the
/// directory `dir` in which a store is about to be made, waiting up to [`CREATION_WAIT_MAX`]
/// for a creator that holds them; the create hands them to its open, so no other process can
/// come between the files made and the store opened. One creator at a time: a second finds the
/// store made (`AlreadyExists`) instead of colliding with the first's files. Before, two
/// `vellum create` of one directory at once both failed, 13 times in 20 here ("renaming
/// …/wal/spare-1 …: No such file or directory", "creating …/wal/spare-1: File exists"), and
/// left the remains of a store that every later create refused.
///
/// While it waits it looks for `CONTROL` between tries: a creator that made the store holds
/// the locks for as long as it keeps the store open, and the one waiting is told the store
/// exists once it does (`AlreadyExists`), not, two seconds later, that the directory is held.
pub(super) fn lock_for_creation(storage: &Arc<dyn Storage>, dir: &Path) -> Result<Box<dyn std::any::Any + Send + Sync>> {
    let started = std::time::Instant::now();
    loop {
        match lock_store_waiting(dir, storage, false, HELD_WAIT_MAX) {
            Err(Error::Locked(_)) if storage.exists(&dir.join(crate::format::control::CONTROL_FILE_NAME)) => {
                return Err(Error::AlreadyExists);
            }
            Err(Error::Locked(_)) if started.elapsed() < CREATION_WAIT_MAX => continue,
            Err(Error::Locked(_)) => {
                return Err(Error::Locked(format!(
                    "{} is held by another process (one making a store there, or one that has a store there open)",
                    dir.display()
                )));
            }
            taken => return taken,
        }
    }
}

fn locked(dir: &Path, read_only: bool) -> Error {
    Error::Locked(format!(
        "{} is open for writing{} (in this process or another)",
        dir.display(),
        if read_only { "" } else { " or reading" }
    ))
}

/// Refuses a log segment larger than the free space of the file system (`statvfs`), before
/// anything is written: preallocating it would fill the disk and fail anyway.
pub(super) fn check_room_for_segment(storage: &dyn Storage, dir: &Path, segment_size_bytes: u64) -> Result<()> {
    let available = storage
        .available_bytes(dir)
        .context(|| format!("reading the free space of {}", dir.display()))?;
    match available {
        Some(free) if free < segment_size_bytes => Err(Error::DiskFull {
            context: format!(
                "creating a store in {}: a log segment takes {segment_size_bytes} bytes, and only {free} are free",
                dir.display()
            ),
        }),
        _ => Ok(()),
    }
}

/// Refuses, before anything is written, a store whose files of fixed size (a log segment, an
/// arena file: `segment_size_bytes` each; the doublewrite file) are larger than the process
/// may write (`ulimit -f`): the first of them would fail part-way instead (or the process be
/// killed, where `SIGXFSZ` keeps its default action).
pub(super) fn check_file_size_limit(
    storage: &dyn Storage,
    doing: &str,
    page_size_bytes: u32,
    segment_size_bytes: u64,
) -> Result<()> {
    let Some(limit_bytes) = storage.file_size_limit_bytes() else {
        return Ok(());
    };
    let doublewrite_bytes = crate::format::doublewrite::DOUBLEWRITE_FILE_PAGES * u64::from(page_size_bytes);
    let needed_bytes = segment_size_bytes.max(doublewrite_bytes);
    if needed_bytes <= limit_bytes {
        return Ok(());
    }
    Err(Error::Io {
        context: format!(
            "{doing}: this process may write files of at most {limit_bytes} bytes \
             (its file size limit, `ulimit -f`), and the store's log segments and arena files take \
             {needed_bytes} bytes each; nothing was written. Raise the limit (`ulimit -f unlimited`), \
             or create the store with a smaller segment size (`--segment-size`, \
             `Options::segment_size_bytes`)"
        ),
        source: std::io::Error::from_raw_os_error(libc::EFBIG),
    })
}

/// Writes a new store's files, in the order FORMAT.md gives (section 2): the log, the arena
/// directory, the doublewrite file with its header page, and the control file last (a store
/// exists once it is durable).
pub(super) fn create_files(storage: &dyn Storage, dir: &Path, control: &Control, options: &Options) -> Result<()> {
    let config = wal_config(control, options)?;
    Wal::create(options.storage.clone(), &dir.join("wal"), config)?.close()?;
    storage
        .create_dir_all(&dir.join("arena"))
        .context(|| format!("creating {}/arena", dir.display()))?;
    let how = DoublewriteOpen {
        store_id: control.store_id,
        required: false,
        read_only: false,
    };
    Doublewrite::open(storage, dir, control.page_size_bytes, how)?.ensure_whole()?;
    let mut stored = super::settings::Settings::default();
    if options.retention != Retention::Stored {
        stored.set(super::settings::RETENTION, &options.retention.to_string())?;
    }
    crate::store::shipping::store_creation_settings(options, &mut stored)?; // Hook (shipping)
    if stored != super::settings::Settings::default() {
        super::settings::write(storage, dir, &stored)?;
    }
    storage
        .sync_dir(dir)
        .context(|| format!("syncing directory {}", dir.display()))?;
    ControlFile::create(storage, dir, control)?;
    storage
        .sync_dir(dir)
        .context(|| format!("syncing directory {}", dir.display()))
}

/// A random 64-bit number (store ids), from the standard library's per-process random keys.
pub(super) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_us());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Removes what a writer killed while it put back a file deleted under it left (see
/// `storage::restore_unlinked`, `ControlFile::relink_if_unlinked`,
/// `Doublewrite::relink_if_unlinked`): `CONTROL.tmp`, `DOUBLEWRITE.tmp` and `wal/*.wal.tmp`.
/// (Arena files' `*.pages.tmp` go with `Arena::remove_leftovers`.) For a writer's open.
pub(super) fn remove_relink_leftovers(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let mut leftovers: Vec<PathBuf> = ["CONTROL.tmp", "DOUBLEWRITE.tmp"].iter().map(|n| dir.join(n)).collect();
    let wal = dir.join("wal");
    if let Ok(names) = storage.list(&wal) {
        leftovers.extend(names.iter().filter(|n| n.ends_with(".wal.tmp")).map(|n| wal.join(n)));
    }
    for path in leftovers.iter().filter(|p| storage.exists(p)) {
        storage
            .remove_file(path)
            .context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}
