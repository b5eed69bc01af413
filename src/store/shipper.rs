//! The shipper: a background thread of a writable store with an archive URL. It uploads every
//! file of `archive/` the remote lacks, and, once the remote has been behind the durable log
//! for `archive_timeout`, the durable bytes of the live segments as pieces. Commits never wait
//! for it; a failed round is retried with backoff and reported in the status; a local archive
//! file is deleted by retention only once its upload is confirmed, so nothing is lost to a
//! network that is down, and a shipper killed mid-upload starts over from the remote listing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use zerocopy::FromZeros;
use zerocopy::little_endian::{U32, U64};

use crate::ship::remote::Remote;
use crate::ship::{CONTROL, EPOCH, Generation, LEASE, ObjectKind, parse_object_name, piece_name};
use crate::archive::{self, ArchiveHeader, KIND_WAL_SEGMENT};
use crate::error::IoContext;
use crate::store::Inner;
use crate::{Error, Result};

/// The longest a round waits between looks at the archive and the log.
const TICK_MAX: Duration = Duration::from_millis(250);
/// Backoff after a failed round: from the first value, doubling, up to the second.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));
/// How long closing a store waits for the shipper to upload what is left.
const FINISH_WAIT: Duration = Duration::from_secs(15);
/// ... and while the remote fails.
const FINISH_WAIT_FAILING: Duration = Duration::from_secs(1);

/// What the shipper has done, for `stats` and callers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShipStatus {
    /// The archive URL shipped to.
    pub url: String,
    /// The generation shipped to (`<store id>-<timeline>`).
    pub generation: String,
    /// A restore of the latest state from the remote alone reaches this LSN (0: no base image
    /// is there yet).
    pub shipped_lsn: u64,
    /// The durable end of the local log.
    pub durable_lsn: u64,
    /// `durable_lsn - shipped_lsn`.
    pub lag_bytes: u64,
    /// How long the remote has been behind the durable log (0 when caught up).
    pub lag_seconds: f64,
    /// The last failure, until a round succeeds.
    pub last_error: Option<String>,
    /// Shipping was refused for this open (another primary holds the lease): nothing is
    /// uploaded and local archive files are kept.
    pub refused: bool,
    /// Local archive files not yet confirmed remote.
    pub pending_files: u64,
    /// Objects uploaded by this open.
    pub uploaded_objects: u64,
    /// Bytes uploaded by this open.
    pub uploaded_bytes: u64,
    /// Rounds completed without error.
    pub rounds: u64,
}

#[derive(Default)]
struct State {
    confirmed: BTreeSet<String>,
    established: bool,
    behind_since: Option<Instant>,
    status: ShipStatus,
    /// A caller waits for a round that starts after it asked (`ship_now`, close).
    round_wanted: u64,
    round_done: u64,
}

/// The shipper of one open store.
pub struct Shipper {
    url: String,
    timeout: Duration,
    generation: String,
    owner: String,
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    stopping: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper").field("url", &self.url).finish()
    }
}

impl Shipper {
    /// Starts shipping the archive of `inner` to `url`. The URL is checked now (no network).
    pub(crate) fn start(inner: &Arc<Inner>, url: &str, timeout: Duration) -> Result<Arc<Shipper>> {
        let remote = Remote::new(url)?;
        let (store_id, timeline) = {
            let control = &inner.control.lock().1;
            (control.store_id, control.timeline)
        };
        let generation = crate::ship::generation_name(store_id, timeline);
        let shipper = Arc::new(Shipper {
            url: remote.url().to_string(),
            timeout,
            owner: owner_of(&inner.dir),
            state: Mutex::new(State {
                status: ShipStatus {
                    url: remote.url().to_string(),
                    generation: generation.clone(),
                    ..ShipStatus::default()
                },
                ..State::default()
            }),
            generation,
            wake: Condvar::new(),
            done: Condvar::new(),
            stopping: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let (weak, me) = (Arc::downgrade(inner), shipper.clone());
        let handle = crate::background::spawn("vellum-shipper", move || run(&me, &remote, weak))
            .map_err(|e| Error::io("starting the shipper thread", e))?;
        *shipper.thread.lock() = Some(handle);
        Ok(shipper)
    }

    /// True if the local archive file `name` is confirmed remote (retention may delete it).
    pub fn confirmed(&self, name: &str) -> bool {
        self.state.lock().confirmed.contains(name)
    }

    /// The status now.
    pub fn status(&self) -> ShipStatus {
        self.state.lock().status.clone()
    }

    /// Asks for a round now and waits up to `wait` for one that started after this call.
    pub fn ship_now(&self, wait: Duration) -> ShipStatus {
        let deadline = Instant::now() + wait;
        let mut state = self.state.lock();
        let wanted = state.round_done + 2;
        state.round_wanted = state.round_wanted.max(wanted);
        self.wake.notify_all();
        while state.round_done < wanted && !self.stopping.load(Ordering::SeqCst) {
            if self.done.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        state.status.clone()
    }

    /// Uploads what is left (bounded wait), then stops the thread.
    pub fn finish(&self) {
        // A remote that is failing gets one more try, not the whole wait: closing a store never
        // hangs on a network that is down (what is left ships at the next open).
        let failing = self.state.lock().status.last_error.is_some();
        self.ship_now(if failing { FINISH_WAIT_FAILING } else { FINISH_WAIT });
        self.stop();
    }

    /// Stops the thread (after its current upload).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        {
            let _state = self.state.lock();
            self.wake.notify_all();
            self.done.notify_all();
        }
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }

    fn stopped(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Who ships: the host and the store's directory (a copy of the store elsewhere is another
/// primary).
fn owner_of(dir: &Path) -> String {
    let mut host = [0u8; 256];
    // SAFETY: `gethostname` writes at most `host.len()` bytes into the buffer it is given.
    let named = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) } == 0;
    let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
    let host = if named {
        String::from_utf8_lossy(&host[..end]).into_owned()
    } else {
        "?".into()
    };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!("{host}:{}", dir.display())
}

fn run(shipper: &Shipper, remote: &Remote, weak: Weak<Inner>) {
    let tick = (shipper.timeout / 4).clamp(Duration::from_millis(20), TICK_MAX);
    let mut backoff = BACKOFF.0;
    loop {
        let final_round = {
            let mut state = shipper.state.lock();
            if state.round_wanted <= state.round_done && !shipper.stopped() {
                shipper.wake.wait_for(&mut state, tick);
            }
            state.round_wanted > state.round_done
        };
        if shipper.stopped() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        let refused = shipper.state.lock().status.refused;
        let result = if refused {
            Ok(())
        } else {
            round(shipper, remote, &inner, final_round)
        };
        // The lag and what waits are reported whether the round worked or not.
        if let Ok(listing) = archive::list(inner.options.storage.as_ref(), &inner.dir, false) {
            update_status(shipper, &inner, &listing);
        }
        drop(inner);
        let mut state = shipper.state.lock();
        state.round_done += 1;
        shipper.done.notify_all();
        if refused {
            continue; // The refusal stays the last error: nothing ships in this open.
        }
        match result {
            Ok(()) => {
                state.status.last_error = None;
                state.status.rounds += 1;
                backoff = BACKOFF.0;
            }
            Err(error) => {
                state.status.last_error = Some(error.to_string());
                if !shipper.stopped() && state.round_wanted <= state.round_done {
                    shipper.wake.wait_for(&mut state, backoff);
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// One round: the lease and listing (first round), every pending archive file, pieces of the
/// live log when due, remote retention, the status.
fn round(shipper: &Shipper, remote: &Remote, inner: &Inner, final_round: bool) -> Result<()> {
    let storage = inner.options.storage.as_ref();
    if !shipper.state.lock().established {
        establish(shipper, remote, inner)?;
    }
    let listing = archive::list(storage, &inner.dir, false)?;
    let pending = pending_files(shipper, &listing);
    let live_due = live_due(shipper, inner, &listing, final_round);
    if !pending.is_empty() || live_due {
        check_lease(shipper, remote)?;
    }
    for (name, path) in &pending {
        if shipper.stopped() {
            return Ok(());
        }
        upload_file(shipper, remote, storage, name, path)?;
    }
    if !pending.is_empty() {
        // Files confirmed remote may now go, as the policy says.
        crate::store::archiver::apply_retention(inner)?;
    }
    if live_due {
        ship_live(shipper, remote, inner, &listing)?;
    }
    let listing = archive::list(storage, &inner.dir, false)?;
    prune_remote(shipper, remote, inner, &listing)
}

fn object(shipper: &Shipper, name: &str) -> String {
    format!("{}/{name}", shipper.generation)
}

/// Takes the lease (or finds it ours), uploads the control and epoch files, lists what the
/// remote holds.
fn establish(shipper: &Shipper, remote: &Remote, inner: &Inner) -> Result<()> {
    let lease = format!(
        "VLMLEASE1\nowner={}\ngeneration={}\n",
        shipper.owner, shipper.generation
    );
    if !remote.put_new(&object(shipper, LEASE), lease.into_bytes())? {
        check_lease(shipper, remote)?;
    }
    let storage = inner.options.storage.as_ref();
    for (name, path) in [
        (CONTROL, inner.dir.join(crate::format::control::CONTROL_FILE_NAME)),
        (EPOCH, inner.dir.join("wal").join("EPOCH")),
    ] {
        if storage.exists(&path) {
            remote.put(&object(shipper, name), archive::read_file(storage, &path)?)?;
        }
    }
    let prefix = format!("{}/", shipper.generation);
    let listed: BTreeSet<String> = remote
        .list(&shipper.generation)?
        .into_iter()
        .filter_map(|o| o.name.strip_prefix(&prefix).map(str::to_string))
        .collect();
    let mut state = shipper.state.lock();
    state.confirmed = listed;
    state.established = true;
    Ok(())
}

/// Refuses to ship (for the rest of this open) if another primary holds the lease.
fn check_lease(shipper: &Shipper, remote: &Remote) -> Result<()> {
    let name = object(shipper, LEASE);
    let text = remote.get(&name)?;
    let text = String::from_utf8_lossy(&text);
    let holder = text.lines().find_map(|l| l.strip_prefix("owner=")).unwrap_or("?");
    if holder == shipper.owner {
        return Ok(());
    }
    let why = format!(
        "{} is shipped to by another primary ({holder}); this store ({}) will not ship there. \
         If that primary is gone for good, delete {} and reopen",
        remote.object_url(&shipper.generation),
        shipper.owner,
        remote.object_url(&name)
    );
    shipper.state.lock().status.refused = true;
    Err(Error::Locked(why))
}

/// Local archive files the remote lacks: base images first, then segments, oldest first.
fn pending_files(shipper: &Shipper, listing: &archive::Listing) -> Vec<(String, std::path::PathBuf)> {
    let state = shipper.state.lock();
    let bases = listing.bases.iter().map(|b| &b.1);
    let segments = listing.segments.iter().map(|s| &s.1);
    bases
        .chain(segments)
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_string();
            (!state.confirmed.contains(&name)).then(|| (name, path.clone()))
        })
        .collect()
}

fn upload_file(
    shipper: &Shipper,
    remote: &Remote,
    storage: &dyn crate::storage::Storage,
    name: &str,
    path: &Path,
) -> Result<()> {
    let bytes = match archive::read_file(storage, path) {
        Ok(bytes) => bytes,
        // Gone meanwhile (a retention of another round): nothing to ship.
        Err(Error::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    // The file's own checksums travel with it; a damaged local file is never shipped.
    let header = archive::decode_header(path, &bytes)?;
    if bytes.len() as u64 != archive::ARCHIVE_HEADER_BYTES as u64 + header.compressed_len.get() {
        return Err(Error::corrupted_file(
            path,
            "archive file length does not match its header",
        ));
    }
    let size = bytes.len() as u64;
    remote.put(&object(shipper, name), bytes)?;
    let mut state = shipper.state.lock();
    state.confirmed.insert(name.to_string());
    state.status.uploaded_objects += 1;
    state.status.uploaded_bytes += size;
    Ok(())
}

/// The remote's view of the log: where the log from the truncation point of the newest base
/// image both here and there reaches without a gap (`None`: no base image is remote yet).
/// Also the end of that base image's checkpoint: a restore needs the log to reach it.
fn remote_end(shipper: &Shipper, inner: &Inner, listing: &archive::Listing) -> Option<(u64, u64)> {
    let segment_bytes = inner.wal.geometry().segment_size_bytes;
    let state = shipper.state.lock();
    let base = listing.bases.iter().rev().find(|b| {
        b.1.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| state.confirmed.contains(n))
    })?;
    let generation = Generation::from_names("", state.confirmed.iter().map(String::as_str));
    let first = base.0.truncate_lsn.get() / segment_bytes;
    Some((generation.log_chain(first, segment_bytes).0, base.0.end_lsn.get()))
}

/// What a restore of the latest state from the remote alone reaches (0: nothing yet, while the
/// log does not reach the end of the base image's checkpoint).
fn shipped_lsn(shipper: &Shipper, inner: &Inner, listing: &archive::Listing) -> u64 {
    match remote_end(shipper, inner, listing) {
        Some((end, base_end)) if end >= base_end => end,
        _ => 0,
    }
}

/// True when the live log is due to be shipped: the remote has been behind the durable log
/// for `archive_timeout` (or this is a final round).
fn live_due(shipper: &Shipper, inner: &Inner, listing: &archive::Listing, final_round: bool) -> bool {
    let durable = inner.wal.durable_lsn().get();
    let shipped = remote_end(shipper, inner, listing);
    let mut state = shipper.state.lock();
    let Some(_) = shipped.filter(|&(end, _)| end < durable) else {
        state.behind_since = None;
        return false;
    };
    let since = *state.behind_since.get_or_insert_with(Instant::now);
    final_round || since.elapsed() >= shipper.timeout
}

/// Uploads the durable bytes of the live segments beyond what the remote holds, as pieces.
fn ship_live(shipper: &Shipper, remote: &Remote, inner: &Inner, listing: &archive::Listing) -> Result<()> {
    let geometry = inner.wal.geometry();
    let segment_bytes = geometry.segment_size_bytes;
    let durable = inner.wal.durable_lsn().get();
    let Some((mut pos, _)) = remote_end(shipper, inner, listing) else {
        return Ok(());
    };
    while pos < durable && !shipper.stopped() {
        let segment_no = geometry.segment_of(pos);
        let base = geometry.segment_base(segment_no);
        let from = if pos == base { base } else { geometry.page_start(pos) };
        let to = durable.min(base + segment_bytes);
        let Some(bytes) = read_live(inner, segment_no, from - base, to - from)? else {
            break; // Retired meanwhile: its archived copy will follow.
        };
        let mut header = header_for(inner);
        header.segment_no = U64::new(segment_no);
        header.first_lsn = U64::new(from);
        header.end_lsn = U64::new(to);
        let file = archive::encode(header, &bytes);
        let (name, size) = (piece_name(segment_no, from, to), file.len() as u64);
        remote.put(&object(shipper, &name), file)?;
        let mut state = shipper.state.lock();
        state.confirmed.insert(name);
        state.status.uploaded_objects += 1;
        state.status.uploaded_bytes += size;
        pos = to;
    }
    let mut state = shipper.state.lock();
    state.behind_since = (inner.wal.durable_lsn().get() > pos).then(Instant::now);
    Ok(())
}

/// Reads `len` bytes at `offset` of live segment `segment_no`, or `None` if the segment has
/// left the live log (it may be recycled: its bytes are not to be trusted then).
fn read_live(inner: &Inner, segment_no: u64, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
    if !inner.wal.segment_numbers().contains(&segment_no) {
        return Ok(None);
    }
    let path = inner.wal.segment_path(segment_no);
    let file = match inner.options.storage.open_read_only(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let mut bytes = vec![0u8; usize::try_from(len).expect("a piece fits in memory")];
    file.read_at(&mut bytes, offset)
        .context(|| format!("reading {}", path.display()))?;
    // Still live after the read: it was not detached (and so not recycled) while it was read.
    Ok(inner.wal.segment_numbers().contains(&segment_no).then_some(bytes))
}

fn header_for(inner: &Inner) -> ArchiveHeader {
    let control = inner.control.lock().1.clone();
    let mut header = ArchiveHeader::new_zeroed();
    header.kind = KIND_WAL_SEGMENT;
    header.store_id = U64::new(control.store_id);
    header.timeline = U32::new(control.timeline);
    header.page_size_bytes = U32::new(control.page_size_bytes);
    header.segment_size_bytes = U64::new(control.segment_size_bytes);
    header
}

/// Applies retention to the remote: what local retention deleted (it deletes only what was
/// confirmed remote) goes there too, and pieces of segments shipped whole.
fn prune_remote(shipper: &Shipper, remote: &Remote, inner: &Inner, listing: &archive::Listing) -> Result<()> {
    let Some(oldest) = listing.bases.first() else {
        return Ok(());
    };
    let segment_bytes = inner.wal.geometry().segment_size_bytes;
    let (oldest_base, needed_segment) = (oldest.0.first_lsn.get(), oldest.0.truncate_lsn.get() / segment_bytes);
    let doomed: Vec<String> = {
        let state = shipper.state.lock();
        let whole = |n: u64| state.confirmed.contains(&archive::wal_file_name(n));
        state
            .confirmed
            .iter()
            .filter(|name| match parse_object_name(name) {
                Some(ObjectKind::Base(lsn)) => lsn < oldest_base,
                Some(ObjectKind::Segment(n)) => n < needed_segment,
                Some(ObjectKind::Piece { segment_no, .. }) => segment_no < needed_segment || whole(segment_no),
                _ => false,
            })
            .cloned()
            .collect()
    };
    for name in doomed {
        remote.delete(&object(shipper, &name))?;
        shipper.state.lock().confirmed.remove(&name);
    }
    Ok(())
}

fn update_status(shipper: &Shipper, inner: &Inner, listing: &archive::Listing) {
    let shipped = shipped_lsn(shipper, inner, listing);
    let durable = inner.wal.durable_lsn().get();
    let pending = pending_files(shipper, listing).len() as u64;
    let mut state = shipper.state.lock();
    let lag_seconds = state.behind_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let status = &mut state.status;
    status.shipped_lsn = shipped;
    status.durable_lsn = durable;
    status.lag_bytes = durable.saturating_sub(shipped);
    status.lag_seconds = if status.lag_bytes == 0 { 0.0 } else { lag_seconds };
    status.pending_files = pending;
}
