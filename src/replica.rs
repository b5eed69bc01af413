//! A read replica (feature `object-store`): a directory restored from the remote archive a
//! primary ships to, on the primary's own timeline, that keeps fetching the log as it is
//! shipped. Readers use [`Replica::store`] (a read-only [`Store`], replaced by a newer one after
//! each change) or open the directory read-only from any process (`Store::open_read_only`, the
//! command line's `get`, `search`, `stats`). A replica never opens for writing.
//!
//! The directory is a store whose control file names the base image's checkpoint and whose
//! `wal/` holds the shipped log from it; an open replays that log in memory. Each new segment or
//! piece is written to a temporary file and renamed into place, oldest first, so any open sees
//! a prefix of the primary's log. When the remote holds a newer base image and the log to
//! replay has grown past `ReplicaOptions::rebase_log_bytes`, the replica is rebuilt from it
//! beside the old one and swapped in with one atomic exchange of the two directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::archive;
use crate::format::control::Control;
use crate::restore::Watch;
use crate::restore::remote::{self as fetch, Downloaded};
use crate::restore::scratch::Scratch;
use crate::ship::{Generation, REPLICA_OF, Remote};
use crate::storage::{RealStorage, Storage};
use crate::store::control_file::ControlFile;
use crate::store::settings;
use crate::wal::segment::{parse_segment_file_name, segment_file_name};
use crate::{Error, Lsn, Options, RecoveryMode, RestoreTarget, Result, Store};

/// The settings key naming the generation a replica follows.
const REPLICA_GENERATION: &str = "replica_generation";

/// How a replica follows.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// How often the remote is listed for new log. Default 1 s.
    pub poll: Duration,
    /// The generation to follow (`<store id>-<timeline>`); `None`: the one shipped to last.
    pub generation: Option<String>,
    /// Rebuild from a newer base image once this much log lies between the replica's base
    /// image and its end (every refresh replays it). Default 256 MiB.
    pub rebase_log_bytes: u64,
}

impl Default for ReplicaOptions {
    fn default() -> ReplicaOptions {
        ReplicaOptions {
            poll: Duration::from_secs(1),
            generation: None,
            rebase_log_bytes: 256 << 20,
        }
    }
}

/// Where a replica is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The archive URL followed.
    pub url: String,
    /// The generation followed (`<store id>-<timeline>`).
    pub generation: String,
    /// The base image the replica's log starts from.
    pub base_lsn: u64,
    /// The end of the log the current store replayed: every commit before it is visible.
    pub applied_lsn: u64,
    /// Polls of the remote done, successful or not.
    pub polls: u64,
    /// Times a newer store replaced the current one.
    pub refreshes: u64,
    /// Of those, rebuilds from a newer base image.
    pub rebases: u64,
    /// The last failure, until a poll succeeds.
    pub last_error: Option<String>,
    /// When a newer store last replaced the current one.
    pub last_refresh: Option<SystemTime>,
}

struct Follow {
    remote: Remote,
    generation: String,
    control: Control,
    base_lsn: u64,
    /// Local segments and how far each is filled (a whole one: to its end).
    local: BTreeMap<u64, u64>,
}

struct Shared {
    dir: PathBuf,
    options: ReplicaOptions,
    follow: Mutex<Follow>,
    current: RwLock<Arc<Store>>,
    status: Mutex<ReplicaStatus>,
    stopping: Mutex<bool>,
    wake: Condvar,
}

/// A read replica that follows a remote archive on a background thread.
pub struct Replica {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The process that made it: a forked child neither polls (it would write the parent's
    /// replica directory) nor joins the thread (which it does not have). See src/fork.rs.
    origin: crate::fork::Origin,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("dir", &self.shared.dir).finish()
    }
}

fn real_storage() -> std::sync::Arc<dyn crate::storage::Storage> {
    std::sync::Arc::new(RealStorage::new())
}

fn read_only_options() -> Options {
    Options {
        recovery: RecoveryMode::TolerateTornTail,
        ..Options::default()
    }
}

impl Replica {
    /// Makes `dir` a replica of the archive at `url` (restoring it from the bucket alone if `dir`
    /// does not exist; resuming if it is already a replica of `url`) and starts following.
    pub fn start(url: &str, dir: impl AsRef<Path>, options: ReplicaOptions) -> Result<Replica> {
        let replica = Replica::open(url, dir.as_ref(), options)?;
        let shared = replica.shared.clone();
        let handle = std::thread::Builder::new()
            .name("vellum-replica".into())
            .spawn(move || follow_loop(&shared))
            .map_err(|e| Error::io("starting the replica thread", e))?;
        *replica.thread.lock() = Some(handle);
        Ok(replica)
    }

    /// Like [`Replica::start`], without the background thread: call [`Replica::poll`].
    pub fn open(url: &str, dir: &Path, options: ReplicaOptions) -> Result<Replica> {
        let remote = Remote::new(url)?;
        if !dir.exists() {
            build(&remote, dir, dir, options.generation.as_deref(), false)?;
        }
        let stored = settings::read(&RealStorage::new(), dir)?;
        if stored.get(REPLICA_OF) != Some(remote.url()) {
            return Err(Error::InvalidArgument(format!(
                "{} exists and is not a replica of {}",
                dir.display(),
                remote.url()
            )));
        }
        let generation = stored.get(REPLICA_GENERATION).unwrap_or_default().to_string();
        let follow = resume(remote, dir, generation)?;
        let store = Store::open_read_only(dir, read_only_options())?;
        let status = ReplicaStatus {
            url: follow.remote.url().to_string(),
            generation: follow.generation.clone(),
            base_lsn: follow.base_lsn,
            applied_lsn: store.recovery_report().end_lsn.get(),
            ..ReplicaStatus::default()
        };
        Ok(Replica {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                options,
                follow: Mutex::new(follow),
                current: RwLock::new(Arc::new(store)),
                status: Mutex::new(status),
                stopping: Mutex::new(false),
                wake: Condvar::new(),
            }),
            thread: Mutex::new(None),
            origin: crate::fork::Origin::here(),
        })
    }

    /// The replica's store as of its last refresh (read-only).
    pub fn store(&self) -> Arc<Store> {
        self.shared.current.read().clone()
    }

    /// Where the replica is.
    pub fn status(&self) -> ReplicaStatus {
        self.shared.status.lock().clone()
    }

    /// Fetches what the remote holds beyond the replica now; true if the store was refreshed.
    pub fn poll(&self) -> Result<bool> {
        if self.origin.is_forked() {
            return Err(Error::Closed(format!(
                "the replica at {} was started by process {}, of which this process ({}) is a \
                 fork: only that process updates it (its store() still reads here)",
                self.shared.dir.display(),
                self.origin.pid(),
                std::process::id()
            )));
        }
        poll_and_record(&self.shared)
    }

    /// Stops following.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if self.origin.is_forked() {
            // No thread here to stop (the parent's goes on): its handle is not even detached.
            std::mem::forget(self.thread.lock().take());
            return;
        }
        *self.shared.stopping.lock() = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }
}

fn follow_loop(shared: &Shared) {
    loop {
        {
            let mut stopping = shared.stopping.lock();
            if !*stopping {
                shared.wake.wait_for(&mut stopping, shared.options.poll);
            }
            if *stopping {
                return;
            }
        }
        let _ = poll_and_record(shared);
    }
}

fn poll_and_record(shared: &Shared) -> Result<bool> {
    let result = poll(shared);
    let mut status = shared.status.lock();
    status.polls += 1;
    match &result {
        Ok(_) => status.last_error = None,
        Err(e) => status.last_error = Some(e.to_string()),
    }
    result
}

fn poll(shared: &Shared) -> Result<bool> {
    let mut follow = shared.follow.lock();
    let segment_bytes = follow.control.segment_size_bytes;
    let prefix = format!("{}/", follow.generation);
    let objects = follow.remote.list(&follow.generation)?;
    let generation = Generation::from_names(
        &follow.generation,
        objects.iter().filter_map(|o| o.name.strip_prefix(&prefix)),
    );
    let last_local = follow.local.keys().next_back().copied().unwrap_or(0);
    let (_, numbers) = generation.log_chain(last_local, segment_bytes);
    let applied = shared.status.lock().applied_lsn;
    let newer_base = generation
        .bases
        .keys()
        .next_back()
        .is_some_and(|&b| b > follow.base_lsn);
    let behind_retention = numbers.first() != Some(&last_local);
    if (newer_base && applied.saturating_sub(follow.base_lsn) > shared.options.rebase_log_bytes) || behind_retention {
        drop(follow);
        return rebase(shared);
    }
    let mut changed = false;
    for n in numbers {
        changed |= fetch_segment(&mut follow, &shared.dir, &generation, n)?;
    }
    drop(follow);
    if changed {
        refresh(shared, false)?;
    }
    Ok(changed)
}

/// Brings local segment `n` up to what the remote holds; true if it changed.
fn fetch_segment(follow: &mut Follow, dir: &Path, generation: &Generation, n: u64) -> Result<bool> {
    let segment_bytes = follow.control.segment_size_bytes;
    let have = follow.local.get(&n).copied().unwrap_or(n * segment_bytes);
    let whole_end = (n + 1) * segment_bytes;
    if have >= whole_end {
        return Ok(false);
    }
    let path = dir.join("wal").join(segment_file_name(n));
    let (bytes, end) = if let Some(name) = generation.segments.get(&n) {
        let object = format!("{}/{name}", generation.name);
        let url = PathBuf::from(follow.remote.object_url(&object));
        let file = archive::decode(&url, &follow.remote.get(&object)?)?;
        if file.contents.len() as u64 != segment_bytes || file.header.segment_no.get() != n {
            return Err(Error::corrupted_file(
                url,
                "archived segment has the wrong size or number",
            ));
        }
        (file.contents, whole_end)
    } else {
        let (_, chain_end) = generation.piece_chain(n, segment_bytes);
        if chain_end <= have {
            return Ok(false);
        }
        let onto = std::fs::read(&path)
            .ok()
            .filter(|b| b.len() as u64 == segment_bytes)
            .map(|b| (b, have));
        let (bytes, _, _) = fetch::assemble_pieces(&follow.remote, generation, &follow.control, n, onto)?;
        (bytes, chain_end)
    };
    replace_file(&path, &bytes)?;
    follow.local.insert(n, end);
    Ok(true)
}

/// Writes `path` whole through a temporary file and a rename (readers keep the old copy).
fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("wal.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Opens the directory afresh and makes it the current store.
fn refresh(shared: &Shared, rebased: bool) -> Result<()> {
    let store = Store::open_read_only(&shared.dir, read_only_options())?;
    let applied = store.recovery_report().end_lsn.get();
    *shared.current.write() = Arc::new(store);
    let base_lsn = shared.follow.lock().base_lsn;
    let mut status = shared.status.lock();
    status.applied_lsn = applied;
    status.base_lsn = base_lsn;
    status.refreshes += 1;
    status.rebases += u64::from(rebased);
    status.last_refresh = Some(SystemTime::now());
    Ok(())
}

/// Rebuilds the replica from the newest base image beside the old one, swaps the two
/// directories in one exchange and removes the old one.
fn rebase(shared: &Shared) -> Result<bool> {
    let mut follow = shared.follow.lock();
    let scratch = Scratch::beside(&real_storage(), &shared.dir, "rebase");
    let staging = scratch.path().to_path_buf();
    build(&follow.remote, &staging, &shared.dir, Some(&follow.generation), true)?;
    exchange(&staging, &shared.dir)?;
    let _ = std::fs::remove_dir_all(&staging);
    let remote = Remote::new(follow.remote.url())?;
    *follow = resume(remote, &shared.dir, follow.generation.clone())?;
    drop(follow);
    refresh(shared, true)?;
    Ok(true)
}

/// Swaps two directories atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidArgument(format!("{} holds a NUL byte", p.display())))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both pointers are NUL-terminated strings that live across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            format!("exchanging {} and {}", a.display(), b.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Restores the latest state of the remote into the new directory `dir` as a replica: the base
/// image's arena, the log from its checkpoint, a control file naming that checkpoint, and the
/// settings that mark it a replica.
/// Scratch directories are named after `owner`, the replica's directory (src/restore/scratch.rs):
/// those a killed replica left are removed by the next one.
fn build(remote: &Remote, dir: &Path, owner: &Path, generation: Option<&str>, rebase: bool) -> Result<Downloaded> {
    let generation = fetch::choose_generation(remote, generation)?;
    let storage = real_storage();
    let download = Scratch::beside(&storage, owner, "download");
    let source = download.path().to_path_buf();
    let replica = (!rebase).then(|| Scratch::beside(&storage, owner, "replica"));
    let staging = replica
        .as_ref()
        .map_or_else(|| dir.to_path_buf(), |s| s.path().to_path_buf());
    let result = (|| {
        for d in [&source, &staging.join("wal"), &staging.join("arena")] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        let downloaded = fetch::download_source(remote, &generation, RestoreTarget::Latest, &source)?;
        stage(&source, &staging, remote, &generation)
            .map_err(|e| fetch::rename_error(e, &source, remote, &generation))?;
        if !rebase {
            std::fs::rename(&staging, dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(downloaded)
    })();
    let _ = std::fs::remove_dir_all(&source);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn stage(source: &Path, staging: &Path, remote: &Remote, generation: &Generation) -> Result<()> {
    let storage: Arc<dyn Storage> = Arc::new(RealStorage::new());
    let (_, control) = ControlFile::open(storage.as_ref(), source)?;
    let listing = archive::list(storage.as_ref(), source, false)?;
    let base = crate::restore::pick_base(&listing, RestoreTarget::Latest, source)?;
    crate::restore::stage_arena(&storage, &Watch::new(), staging, &listing, &base, &control)?;
    let mut report = crate::RestoreReport::default();
    crate::restore::stage_log(
        &storage,
        &Watch::new(),
        source,
        staging,
        &listing,
        &base,
        &control,
        &mut report,
    )?;
    let staged = Control {
        sequence: 0,
        checkpoint_lsn: Lsn(base.first_lsn.get()),
        checkpoint_end_lsn: Lsn(base.end_lsn.get()),
        redo_lsn: Lsn(base.first_lsn.get()),
        next_txn_id: base.next_txn_id.get(),
        checkpoint_us: base.first_us.get(),
        truncate_lsn: Lsn(base.truncate_lsn.get()),
        extent: None,
        ..control
    };
    ControlFile::create(storage.as_ref(), staging, &staged)?;
    let mut marks = settings::Settings::default();
    marks.set(REPLICA_OF, remote.url())?;
    marks.set(REPLICA_GENERATION, &generation.name)?;
    settings::write(storage.as_ref(), staging, &marks)
}

/// The follower's state of an existing replica directory. The newest local segment is fetched
/// again in full at the first poll (how far its pieces reached is not recorded).
fn resume(remote: Remote, dir: &Path, generation: String) -> Result<Follow> {
    let storage = RealStorage::new();
    let (_, control) = ControlFile::open(&storage, dir)?;
    let wal_dir = dir.join("wal");
    let mut numbers: Vec<u64> = std::fs::read_dir(&wal_dir)
        .map_err(|e| Error::io(format!("listing {}", wal_dir.display()), e))?
        .filter_map(|e| e.ok()?.file_name().to_str().and_then(parse_segment_file_name))
        .collect();
    numbers.sort_unstable();
    let segment_bytes = control.segment_size_bytes;
    let last = numbers.last().copied();
    let local = numbers
        .into_iter()
        .map(|n| {
            (
                n,
                if Some(n) == last {
                    n * segment_bytes
                } else {
                    (n + 1) * segment_bytes
                },
            )
        })
        .collect();
    Ok(Follow {
        remote,
        generation,
        base_lsn: control.checkpoint_lsn.get(),
        control,
        local,
    })
}
