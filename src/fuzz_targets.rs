//! The bodies of the fuzz targets of `fuzz/` (cargo-fuzz), one plain function per target.
//!
//! Each `pub fn <target>(data: &[u8])` takes arbitrary bytes and returns, or panics: a panic is
//! a finding (a broken invariant of Vellum, written in the doc comment of each target). The
//! files in `fuzz/fuzz_targets/` only call these functions, so the targets are ordinary library
//! code: `tests/fuzz_corpus.rs` replays every corpus and regression input through them on the
//! stable toolchain, and a crash found by libFuzzer can be debugged with a plain test.
//!
//! The functions use only what an outside user of the crate can reach (the public API and the
//! crash-simulating [`SimStorage`]); nothing here touches a real file system.
//!
//! **Checksums.** Random bytes almost never carry a valid CRC32C, so a fuzzer that only feeds
//! raw bytes stops at the first checksum. Most targets therefore run their input twice: as
//! given, and *repaired* (every checksum the input's structure allows recomputed), so the
//! fuzzer also reaches the code behind the checks. A finding that needs the repaired variant is
//! reachable only with bytes whose checksums are valid: a buggy or foreign writer, not random
//! media damage. The reports say which variant a finding came from.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use zerocopy::{FromBytes, IntoBytes};

use crate::format::control::{CONTROL_FILE_BYTES, CONTROL_SLOT_BYTES, Control};
use crate::format::page::{self, PageId, Space};
use crate::format::record::{self, Kind, Payload};
use crate::format::wal::{
    Geometry, LogIdentity, PAGE_HEADER_BYTES, RECORD_HEADER_BYTES, RECORD_MAX_BYTES, RecordHeader,
    SEGMENT_HEADER_BYTES, SegmentHeader, align_up, record_crc,
};
use crate::storage::{SimStorage, Storage};
use crate::store::control_file::ControlFile;
use crate::wal::segment::{SegmentDir, segment_file_name};
use crate::wal::view::{Decoded, LogView, Step};
use crate::wal::{RecordSpec, Wal, WalConfig};
use crate::{Error, Lsn, Options, RecoveryMode, Store, SyncMode};

/// The page size every target uses (the smallest the format allows).
const PAGE: u32 = 4096;
const PAGE_BYTES: usize = PAGE as usize;
/// The store id of the logs the WAL targets build (and of the WAL seeds in `fuzz/corpus`).
pub const FUZZ_STORE_ID: u64 = 0x5645_4c4c_554d_465a;
/// The timeline of those logs.
pub const FUZZ_TIMELINE: u32 = 1;
const MODES: [RecoveryMode; 3] = [
    RecoveryMode::Strict,
    RecoveryMode::TolerateTornTail,
    RecoveryMode::SkipCorrupted,
];

// ---------------------------------------------------------------------------------------------
// record_decode
// ---------------------------------------------------------------------------------------------

/// **record_decode**: the first byte is a record kind, the rest its payload.
///
/// Invariants:
/// - `record::decode(kind, payload, lsn, page_size)` returns `Ok` or `Err(Corrupted)`, never
///   panics and never another error, for page sizes 4 KiB and 1 MiB;
/// - a decoded payload is canonical: encoding it again (`record::encode_*`) gives back exactly
///   `payload`, its variant matches `kind`, and every edit lies inside the page with before- and
///   after-images of one length;
/// - `RecordHeader::read_from_bytes` of the first 56 bytes never fails, and when
///   `RecordHeader::check` accepts a header, every rule it documents holds; a header it accepts
///   frames a payload (`total_len - 56` bytes after it) that decodes as above.
pub fn record_decode(data: &[u8]) {
    if let Some((&kind, payload)) = data.split_first() {
        for page_size in [PAGE, crate::format::wal::PAGE_SIZE_MAX_BYTES] {
            decode_payload_checked(kind, payload, Lsn(PAGE as u64 + PAGE_HEADER_BYTES as u64), page_size);
        }
    }
    if data.len() >= RECORD_HEADER_BYTES {
        let header = RecordHeader::read_from_bytes(&data[..RECORD_HEADER_BYTES]).expect("56 bytes make a header");
        let own_lsn = header.lsn.get();
        let candidates = [
            (own_lsn, 0),
            (own_lsn, header.epoch.get()),
            (own_lsn, u32::MAX),
            (PAGE as u64 + PAGE_HEADER_BYTES as u64, 0),
        ];
        for (lsn, floor) in candidates {
            if header.check(lsn, floor).is_none() {
                assert_record_header_valid(&header, lsn, floor);
                let total_len = header.total_len.get() as usize;
                if data.len() >= total_len {
                    let payload = &data[RECORD_HEADER_BYTES..total_len];
                    let _ = record_crc(&header, &[payload]);
                    decode_payload_checked(header.kind, payload, Lsn(lsn), PAGE);
                }
            }
        }
    }
}

fn assert_record_header_valid(header: &RecordHeader, lsn: u64, floor: u32) {
    let total_len = header.total_len.get();
    assert!(
        (RECORD_HEADER_BYTES as u32..=RECORD_MAX_BYTES).contains(&total_len),
        "check accepted total_len {total_len}"
    );
    assert_eq!(header.lsn.get(), lsn, "check accepted a record naming another address");
    assert_ne!(header.kind, 0, "check accepted kind 0");
    assert_eq!(header.reserved0.get(), 0, "check accepted non-zero reserved bytes");
    assert!(header.epoch.get() >= floor, "check accepted an epoch below the floor");
    assert!(
        header.prev_lsn.get() < lsn && header.durable_lsn.get() <= lsn,
        "check accepted a forward back-pointer"
    );
}

/// Decodes a payload; panics unless the result is `Ok` (canonical) or `Err(Corrupted)`.
fn decode_payload_checked(kind: u8, payload: &[u8], lsn: Lsn, page_size: u32) {
    match record::decode(kind, payload, lsn, page_size) {
        Ok(decoded) => assert_canonical(kind, payload, &decoded, page_size),
        Err(Error::Corrupted { .. }) => {}
        Err(other) => panic!("record::decode returned a non-corruption error: {other:?}"),
    }
}

fn assert_canonical(kind: u8, payload: &[u8], decoded: &Payload<'_>, page_size: u32) {
    let kind = Kind::from_u8(kind).expect("decode accepted an unknown kind");
    let check_edits = |edits: &[record::Edit<'_>]| {
        for edit in edits {
            assert!(
                u64::from(edit.offset) + edit.after.len() as u64 <= u64::from(page_size),
                "decoded edit runs past the page"
            );
            assert!(PageId::from_raw(edit.page.0).is_some(), "decoded edit names no space");
            if let Some(before) = edit.before {
                assert_eq!(before.len(), edit.after.len(), "before/after images differ in length");
            }
        }
    };
    let encoded = match (kind, decoded) {
        (Kind::Update, Payload::Update { op, id, edits }) => {
            check_edits(edits);
            record::encode_update(*op, id, edits)
        }
        (Kind::Clr, Payload::Clr { undo_next, edits }) => {
            check_edits(edits);
            assert!(
                edits.iter().all(|e| e.before.is_none()),
                "a CLR decoded with before-images"
            );
            record::encode_clr(*undo_next, edits)
        }
        (Kind::Commit, Payload::Commit)
        | (Kind::Abort, Payload::Abort)
        | (Kind::End, Payload::End)
        | (Kind::CheckpointBegin, Payload::CheckpointBegin) => Vec::new(),
        (Kind::CheckpointEnd, Payload::CheckpointEnd(checkpoint)) => record::encode_checkpoint(checkpoint),
        (Kind::PageInit, Payload::PageInit { page, init }) => record::encode_page_init(*page, *init),
        (kind, decoded) => panic!("kind {kind:?} decoded as {decoded:?}"),
    };
    assert_eq!(
        encoded, payload,
        "decoded {kind:?} payload does not re-encode to its bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers for WAL images
// ---------------------------------------------------------------------------------------------

fn fuzz_identity() -> LogIdentity {
    LogIdentity {
        store_id: FUZZ_STORE_ID,
        timeline: FUZZ_TIMELINE,
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn all_zero(bytes: &[u8]) -> bool {
    page::is_all_zero(bytes)
}

/// Which checksums [`repair_log`] recomputes.
#[derive(Clone, Copy, Debug, Default)]
struct Repair {
    segment_headers: bool,
    page_headers: bool,
    records: bool,
    /// Also set each record header's `lsn` to its address (before its CRC is recomputed).
    record_lsns: bool,
}

impl Repair {
    const ALL: Repair = Repair {
        segment_headers: true,
        page_headers: true,
        records: true,
        record_lsns: false,
    };

    fn any(self) -> bool {
        self.segment_headers || self.page_headers || self.records || self.record_lsns
    }
}

/// Recomputes the checksums of the log bytes `log`, whose first byte is the first byte of
/// segment `first_segment` (so `log` holds whole or partial consecutive segments). Never panics,
/// whatever the bytes; bounded by the length of `log`.
fn repair_log(log: &mut [u8], first_segment: u64, geometry: &Geometry, repair: Repair) {
    let page = geometry.page_bytes() as usize;
    let segment = geometry.segment_size_bytes as usize;
    let base = geometry.segment_base(first_segment);
    let pages = log.len() / page;
    for index in 0..pages {
        let at = index * page;
        if at.is_multiple_of(segment) {
            let header = &mut log[at..at + SEGMENT_HEADER_BYTES];
            if repair.segment_headers && !all_zero(header) {
                let crc = crc32c::crc32c(&header[..crate::format::wal::SEGMENT_HEADER_CRC_OFFSET]);
                header[crate::format::wal::SEGMENT_HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
            }
        } else {
            let header = &mut log[at..at + PAGE_HEADER_BYTES];
            if repair.page_headers && !all_zero(header) {
                let crc = crc32c::crc32c(&header[..crate::format::wal::PAGE_HEADER_CRC_OFFSET]);
                header[crate::format::wal::PAGE_HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
    if !(repair.records || repair.record_lsns) {
        return;
    }
    let capacity = page - PAGE_HEADER_BYTES;
    for index in 0..pages {
        let page_at = index * page;
        if page_at.is_multiple_of(segment) || all_zero(&log[page_at..page_at + PAGE_HEADER_BYTES]) {
            continue;
        }
        let rem_len = u32_at(log, page_at + 16) as usize;
        if rem_len >= capacity {
            continue;
        }
        let mut pos = align_up((page_at + PAGE_HEADER_BYTES + rem_len) as u64) as usize;
        while pos + RECORD_HEADER_BYTES <= page_at + page {
            if all_zero(&log[pos..pos + RECORD_HEADER_BYTES]) {
                break;
            }
            let total_len = u32_at(log, pos + 4) as usize;
            if total_len < RECORD_HEADER_BYTES || total_len > RECORD_MAX_BYTES as usize {
                break;
            }
            if repair.record_lsns {
                log[pos + 8..pos + 16].copy_from_slice(&(base + pos as u64).to_le_bytes());
            }
            let Some((payload, end)) = gather_payload(
                log,
                pos + RECORD_HEADER_BYTES,
                total_len - RECORD_HEADER_BYTES,
                page,
                segment,
            ) else {
                break;
            };
            if repair.records {
                let header = RecordHeader::read_from_bytes(&log[pos..pos + RECORD_HEADER_BYTES]).expect("56 bytes");
                let crc = record_crc(&header, &[&payload]);
                log[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
            }
            if end / page != index {
                break;
            }
            pos = align_up(end as u64) as usize;
        }
    }
}

/// The `len` payload bytes of a record starting at offset `from` of `log`, continuing across
/// page headers and segment header pages; and the offset just past them. `None` if the log
/// ends first.
fn gather_payload(log: &[u8], from: usize, len: usize, page: usize, segment: usize) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::with_capacity(len.min(log.len()));
    let mut pos = from;
    while out.len() < len {
        if pos.is_multiple_of(page) {
            if pos.is_multiple_of(segment) {
                pos += page;
            }
            pos += PAGE_HEADER_BYTES;
        }
        if pos >= log.len() {
            return None;
        }
        let page_end = (pos / page + 1) * page;
        let n = (len - out.len()).min(page_end - pos);
        out.extend_from_slice(log.get(pos..pos + n)?);
        pos += n;
    }
    Some((out, pos))
}

/// Walks the log in `view` from `start`, decoding every record it finds until the walk ends.
/// Panics if the walk goes backwards, decodes a record outside the view, or does not end
/// within a step count bounded by the log size.
fn walk_view(view: &LogView<'_>, start: u64, floor: u32) -> u64 {
    let max_steps = view.limit / RECORD_HEADER_BYTES as u64 + 16;
    let mut pos = start;
    let mut floor = floor;
    let mut scratch = Vec::new();
    let mut records = 0;
    for _ in 0..max_steps {
        let at = match view.step(pos, &mut floor) {
            Step::Start(at) => at,
            Step::End(_) | Step::Invalid(..) | Step::Refuse(..) => return records,
        };
        assert!(
            at >= pos && at.is_multiple_of(8) && view.geometry.in_payload(at),
            "step from {pos} gave a bad record start {at}"
        );
        match view.decode(at, floor, &mut scratch) {
            Decoded::Record { header, payload, end } => {
                assert!(end > at && end <= view.limit, "record at {at} ends at {end}");
                assert!(header.epoch.get() >= floor, "record of an epoch below the floor");
                floor = header.epoch.get();
                let bytes = view.payload(payload, &scratch);
                assert_eq!(
                    bytes.len() + RECORD_HEADER_BYTES,
                    header.total_len.get() as usize,
                    "payload length"
                );
                decode_payload_checked(header.kind, bytes, Lsn(at), view.geometry.page_size_bytes);
                records += 1;
                pos = end;
            }
            Decoded::End(_) | Decoded::Invalid(..) => return records,
        }
    }
    panic!("the walk from {start} did not end within {max_steps} steps");
}

/// Writes `files` (path → bytes) into a new simulated disk, every file and directory durable.
fn materialize(dirs: &[PathBuf], files: &BTreeMap<PathBuf, Vec<u8>>) -> SimStorage {
    let sim = SimStorage::new(0x5eed);
    for dir in dirs {
        sim.create_dir_all(dir)
            .expect("creating a directory in a fresh SimStorage");
    }
    for (path, bytes) in files {
        if let Some(parent) = path.parent() {
            sim.create_dir_all(parent)
                .expect("creating a directory in a fresh SimStorage");
        }
        let file = sim.open(path, true).expect("creating a file in a fresh SimStorage");
        if !bytes.is_empty() {
            file.write_at(bytes, 0).expect("writing a file in a fresh SimStorage");
        }
        file.sync_data().expect("syncing a file in a fresh SimStorage");
    }
    for dir in dirs {
        sim.sync_dir(dir).expect("syncing a directory in a fresh SimStorage");
    }
    sim
}

/// The directories and files under `root` on `sim` (volatile contents).
fn snapshot(sim: &SimStorage, root: &Path) -> (Vec<PathBuf>, BTreeMap<PathBuf, Vec<u8>>) {
    let mut dirs = Vec::new();
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let names = sim.list(&dir).expect("listing a directory of the snapshot");
        dirs.push(dir.clone());
        for name in names {
            let path = dir.join(name);
            if sim.list(&path).is_ok() {
                pending.push(path);
            } else {
                files.insert(
                    path.clone(),
                    sim.read_file(&path).expect("reading a file of the snapshot"),
                );
            }
        }
    }
    dirs.sort();
    (dirs, files)
}

// ---------------------------------------------------------------------------------------------
// wal_page
// ---------------------------------------------------------------------------------------------

/// **wal_page**: the input (zero-padded or cut to 4096 bytes) is one WAL data page.
///
/// Invariants:
/// - `PageHeader::read_from_bytes` of its first 32 bytes never fails; when `PageHeader::check`
///   accepts the header, every rule it documents holds (magic, flags consistent with
///   `rem_len`, version, address, timeline, epoch floor);
/// - placed as page 1 of a one-segment log (a valid segment header, zeros after it) and read
///   through a public [`LogView`], walking the log from its start and resynchronising on the
///   page (`resync_in_page`) never panics, never goes backwards, ends within a bounded number of
///   steps, and every record it yields has a payload of its header's length that
///   `record::decode` accepts or rejects as `Corrupted`;
/// - the same holds for the page with its header and record checksums recomputed.
pub fn wal_page(data: &[u8]) {
    let mut page = data[..data.len().min(PAGE_BYTES)].to_vec();
    page.resize(PAGE_BYTES, 0);
    let header =
        crate::format::wal::PageHeader::read_from_bytes(&page[..PAGE_HEADER_BYTES]).expect("32 bytes make a header");
    let address = PAGE as u64;
    for (lsn, timeline, floor) in [
        (header.page_lsn.get(), header.timeline.get(), 0),
        (address, FUZZ_TIMELINE, 0),
        (address, FUZZ_TIMELINE, header.epoch.get()),
        (address, FUZZ_TIMELINE, u32::MAX),
    ] {
        if header.check(lsn, timeline, floor).is_ok() {
            assert_eq!(header.magic.get(), crate::format::wal::PAGE_MAGIC);
            assert_eq!(header.version_major.get(), crate::format::wal::FORMAT_VERSION_MAJOR);
            let continuation = header.flags.get() & crate::format::wal::PAGE_FLAG_CONTINUATION != 0;
            assert_eq!(
                continuation,
                header.rem_len.get() > 0,
                "check accepted inconsistent flags"
            );
            assert_eq!(
                header.flags.get() & !crate::format::wal::PAGE_FLAGS_KNOWN,
                0,
                "check accepted unknown flags"
            );
            assert_eq!(header.page_lsn.get(), lsn);
            assert_eq!(header.timeline.get(), timeline);
            assert!(header.epoch.get() >= floor);
        }
    }
    walk_one_page_log(&page);
    let geometry = wal_page_geometry();
    let mut log = vec![0u8; 2 * PAGE_BYTES];
    log[PAGE_BYTES..].copy_from_slice(&page);
    repair_log(&mut log, 0, &geometry, Repair::ALL);
    if log[PAGE_BYTES..] != page[..] {
        walk_one_page_log(&log[PAGE_BYTES..]);
    }
}

fn wal_page_geometry() -> Geometry {
    Geometry::new(PAGE, PAGE as u64 * (1 + crate::format::wal::SEGMENT_DATA_PAGES_MIN)).expect("valid geometry")
}

fn walk_one_page_log(page: &[u8]) {
    let geometry = wal_page_geometry();
    let identity = fuzz_identity();
    let mut segment = vec![0u8; geometry.segment_size_bytes as usize];
    segment[..SEGMENT_HEADER_BYTES].copy_from_slice(SegmentHeader::new(&geometry, &identity, 0, 0).as_bytes());
    segment[PAGE_BYTES..2 * PAGE_BYTES].copy_from_slice(page);
    let dir = Path::new("/wal");
    let files = BTreeMap::from([(dir.join(segment_file_name(0)), segment)]);
    let storage: Arc<dyn Storage> = Arc::new(materialize(&[dir.to_path_buf()], &files));
    let segment_dir = SegmentDir::new(storage, dir, geometry).expect("a segment directory in SimStorage");
    let segment = segment_dir.open_segment(0).expect("opening a full-length segment");
    let segments = BTreeMap::from([(0u64, segment)]);
    let view = LogView {
        geometry,
        identity,
        segments: &segments,
        limit: geometry.segment_size_bytes,
        crc_checked: 0..0,
    };
    walk_view(&view, 0, 0);
    let page_lsn = PAGE as u64;
    if let Some((start, epoch)) = view.resync_in_page(page_lsn) {
        assert_eq!(geometry.page_start(start), page_lsn, "resync left its page");
        assert!(
            geometry.in_payload(start) && start.is_multiple_of(8),
            "resync gave a bad start {start}"
        );
        walk_view(&view, start, epoch);
    }
}

// ---------------------------------------------------------------------------------------------
// control_file
// ---------------------------------------------------------------------------------------------

/// **control_file**: the input (zero-padded or cut to 1024 bytes) is a `CONTROL` file.
///
/// Invariants:
/// - `Control::newest` returns the valid slot with the highest sequence number if its
///   geometry is one FORMAT.md §5 allows; else `Err(Incompatible)` if a slot is intact but of
///   another major version, or `Err(Corrupted)` if neither slot is valid or the chosen one's
///   geometry is impossible: never panics, never another error;
/// - a slot it returns survives `Control::to_slot` → `Control::from_slot` unchanged;
/// - the same holds with both slots' checksums recomputed (so the fuzzer reaches the fields);
/// - `ControlFile::open` of the unpadded input as `CONTROL` in a simulated directory agrees:
///   `Err(Corrupted)` when shorter than 1024 bytes, else what `newest` returns.
pub fn control_file(data: &[u8]) {
    let mut bytes = data[..data.len().min(CONTROL_FILE_BYTES as usize)].to_vec();
    bytes.resize(CONTROL_FILE_BYTES as usize, 0);
    check_newest(&bytes);
    let mut repaired = bytes.clone();
    for slot in repaired.chunks_exact_mut(CONTROL_SLOT_BYTES) {
        let crc = crc32c::crc32c(&slot[..crate::format::control::CONTROL_CRC_OFFSET]);
        slot[crate::format::control::CONTROL_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    }
    if repaired != bytes {
        check_newest(&repaired);
    }
    let dir = Path::new("/db");
    let files = BTreeMap::from([(dir.join(crate::format::control::CONTROL_FILE_NAME), data.to_vec())]);
    let sim = materialize(&[dir.to_path_buf()], &files);
    let expected = Control::newest(Path::new("CONTROL"), &bytes);
    match ControlFile::open(&sim, dir) {
        Ok((_, control)) => {
            assert!(data.len() >= CONTROL_FILE_BYTES as usize, "a short control file opened");
            assert_eq!(Some(&control), expected.as_ref().ok(), "open and newest disagree");
        }
        Err(Error::Corrupted { .. } | Error::Incompatible(_)) => {
            assert!(
                data.len() < CONTROL_FILE_BYTES as usize || expected.is_err(),
                "open failed where newest succeeds"
            );
        }
        Err(other) => panic!("ControlFile::open returned {other:?}"),
    }
}

fn check_newest(bytes: &[u8]) {
    let slots = [
        Control::from_slot(&bytes[..CONTROL_SLOT_BYTES]),
        Control::from_slot(&bytes[CONTROL_SLOT_BYTES..]),
    ];
    match Control::newest(Path::new("CONTROL"), bytes) {
        Ok(control) => {
            assert!(
                Geometry::new(control.page_size_bytes, control.segment_size_bytes).is_ok(),
                "newest returned an impossible geometry"
            );
            let best = slots
                .iter()
                .filter_map(|s| s.as_ref().ok())
                .map(|c| c.sequence)
                .max()
                .expect("newest returned a slot although none is valid");
            assert_eq!(control.sequence, best, "newest did not pick the highest sequence");
            assert!(
                slots.iter().any(|s| s.as_ref() == Ok(&control)),
                "newest returned a control that is neither slot"
            );
            let round_trip = Control::from_slot(control.to_slot().as_bytes());
            assert_eq!(round_trip.as_ref(), Ok(&control), "control does not round-trip");
        }
        Err(Error::Incompatible(_)) => {
            assert!(
                slots
                    .iter()
                    .any(|s| matches!(s, Err(r) if r.starts_with("format version"))),
                "incompatible without an intact slot of another major version"
            );
        }
        Err(Error::Corrupted { .. }) => {
            let best = match (slots[0].as_ref().ok(), slots[1].as_ref().ok()) {
                (Some(a), Some(b)) => Some(if a.sequence >= b.sequence { a } else { b }),
                (a, b) => a.or(b),
            };
            assert!(
                best.is_none_or(|c| Geometry::new(c.page_size_bytes, c.segment_size_bytes).is_err()),
                "newest failed although the newest valid slot has a possible geometry"
            );
        }
        Err(other) => panic!("Control::newest returned {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Small stores in SimStorage
// ---------------------------------------------------------------------------------------------

const STORE_DIR: &str = "/db";
const DIMENSION: usize = 4;

fn store_options(sim: &SimStorage, mode: RecoveryMode, sync: SyncMode) -> Options {
    Options {
        sync,
        recovery: mode,
        page_size_bytes: PAGE,
        segment_size_bytes: PAGE as u64 * 8,
        checkpoint_interval_bytes: 0,
        storage: Arc::new(sim.clone()),
        background_io: false,
        ..Options::default()
    }
}

/// A vector that encodes `version` in every component, so a torn or foreign read shows.
fn vector_of(version: u32) -> Vec<f32> {
    (0..DIMENSION).map(|i| version as f32 + i as f32 * 0.25).collect()
}

fn version_of(vector: &[f32]) -> Option<u32> {
    let version = *vector.first()? as u32;
    (vector == vector_of(version).as_slice()).then_some(version)
}

/// Metadata of `len_class`: short (inline) or long enough for an overflow chain.
fn meta_of(version: u32, len_class: u8) -> String {
    if len_class & 0x80 != 0 {
        "L".repeat(2000 + usize::from(len_class & 0x7f) * 40)
    } else {
        format!("v{version}")
    }
}

/// Reads a store's answer for `id`: every `get` returns a vector of the store's dimension with
/// readable metadata, `None`, or an error; never panics.
/// What [`probe`] read: the version the vector encodes (if any) and the metadata pairs.
type Probed = (Option<u32>, Vec<(String, String)>);

fn probe(store: &Store, id: &str) -> Option<Probed> {
    match store.get(id) {
        Ok(Some(vector)) => {
            assert_eq!(
                vector.len(),
                store.dimension(),
                "get returned a vector of another dimension"
            );
            let meta: Vec<(String, String)> = vector
                .metadata()
                .take(1024)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some((version_of(&vector), meta))
        }
        Ok(None) | Err(_) => None,
    }
}

/// A store image: the directories and files of a store directory.
#[derive(Clone)]
struct StoreImage {
    dirs: Vec<PathBuf>,
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl StoreImage {
    fn of(sim: &SimStorage) -> StoreImage {
        let (dirs, files) = snapshot(sim, Path::new(STORE_DIR));
        StoreImage { dirs, files }
    }

    fn materialize(&self) -> SimStorage {
        materialize(&self.dirs, &self.files)
    }

    /// The image on a crashed disk, ready for [`SimStorage::reboot_with_seed`] (every file was
    /// synced, so the crash keeps exactly the image).
    fn boot_disk(&self) -> SimStorage {
        let sim = self.materialize();
        sim.crash_now();
        sim
    }
}

// ---------------------------------------------------------------------------------------------
// arena_page
// ---------------------------------------------------------------------------------------------

/// The ids the arena_page base store holds.
const ARENA_BASE_IDS: [&str; 3] = ["a", "b", "long"];

/// A closed store with three entries (one with metadata in an overflow chain), 4 KiB pages.
fn arena_base() -> &'static StoreImage {
    static BASE: OnceLock<StoreImage> = OnceLock::new();
    BASE.get_or_init(|| {
        let sim = SimStorage::new(7);
        let options = store_options(&sim, RecoveryMode::TolerateTornTail, SyncMode::Always);
        let store = Store::create(STORE_DIR, DIMENSION as u32, options).expect("creating the arena_page base store");
        store.insert("a", &vector_of(1), &[("k", "v1")]).expect("insert a");
        store.insert("b", &vector_of(2), &[]).expect("insert b");
        store
            .insert("long", &vector_of(3), &[("m", &meta_of(3, 0xff))])
            .expect("insert long");
        store.close().expect("closing the arena_page base store");
        StoreImage::of(&sim)
    })
}

/// [`arena_base`] on a crashed (so bootable) disk: each input boots a copy of it with
/// [`SimStorage::reboot_with_seed`], much cheaper than writing the files again.
fn arena_base_disk() -> &'static SimStorage {
    static DISK: OnceLock<SimStorage> = OnceLock::new();
    DISK.get_or_init(|| arena_base().boot_disk())
}

/// **arena_page**: the input (zero-padded or cut to 4096 bytes) is one arena page.
///
/// Invariants:
/// - `page::check_page` never panics, for catalog pages 0 and 1, vector pages 0 and 3 and the
///   id the header names; when it accepts a page that is not all zero, the checksum, the id,
///   the version and the kind-for-its-space rules hold;
/// - `page::decode_catalog_page` never panics; the entries it returns lie inside the entry
///   data without overlapping, with ids of 1 to 1024 bytes, no id twice, and inline metadata
///   of the length their header gives;
/// - the same for the page sealed (checksum recomputed);
/// - when the page (as given or sealed) is a valid catalog page 0, written over catalog page 0
///   of a real closed store (4 KiB pages, in SimStorage): the store opens in Strict mode only
///   if `decode_catalog_page` accepts the page (when it is of kind catalog), and then holds
///   exactly the page's entries; when Strict refuses, SkipCorrupted opens it or returns an
///   error, never a panic; on the store that opened, `get` of every id the page names (and of
///   the store's own ids) returns a vector of the store's dimension, `None` or an error, and a
///   write transaction, a checkpoint and a close return `Ok` or an error; a store that opened
///   in Strict mode and closed cleanly reopens (Strict). (TolerateTornTail differs from Strict
///   only at a torn log tail, which this target leaves intact, so it is not opened.)
pub fn arena_page(data: &[u8]) {
    let mut page = data[..data.len().min(PAGE_BYTES)].to_vec();
    page.resize(PAGE_BYTES, 0);
    arena_page_variant(&page);
    let mut sealed = page.clone();
    page::seal(&mut sealed);
    if sealed != page {
        arena_page_variant(&sealed);
    }
}

fn arena_page_variant(image: &[u8]) {
    let header = page::PageHeader::read_from_prefix(image)
        .expect("a page holds a header")
        .0;
    let mut ids = vec![
        PageId::new(Space::Catalog, 0),
        PageId::new(Space::Catalog, 1),
        PageId::new(Space::Vector, 0),
        PageId::new(Space::Vector, 3),
    ];
    ids.extend(PageId::from_raw(header.page_id.get()));
    for id in ids {
        if page::check_page(image, id).is_none() && !all_zero(image) {
            assert_eq!(
                page::page_crc(image),
                header.crc.get(),
                "check_page accepted a bad checksum"
            );
            assert_eq!(header.page_id.get(), id.0, "check_page accepted another page's id");
            assert_eq!(header.version_major.get(), crate::format::wal::FORMAT_VERSION_MAJOR);
        }
    }
    let decoded = page::decode_catalog_page(image);
    if let Ok(entries) = &decoded {
        check_catalog_entries(&header, entries);
    }
    let catalog0 = PageId::new(Space::Catalog, 0);
    if page::check_page(image, catalog0).is_some() {
        return;
    }
    let catalog_path = Path::new(STORE_DIR)
        .join("arena")
        .join(crate::arena::arena_file_name(Space::Catalog, 0));
    let boot = || {
        let sim = arena_base_disk().reboot_with_seed(7);
        sim.damage(&catalog_path, 0, image)
            .expect("the base store has a catalog file");
        sim
    };
    let mut ids: Vec<String> = ARENA_BASE_IDS.iter().map(|s| s.to_string()).collect();
    match &decoded {
        Ok(entries) => ids.extend(entries.iter().map(|e| e.id.to_string())),
        Err(_) => ids.extend(catalog_page_ids(image)),
    }
    let is_catalog = header.kind == page::PageKind::Catalog as u8;
    let mut sim = boot();
    let (store, strict) = match Store::open(STORE_DIR, store_options(&sim, RecoveryMode::Strict, SyncMode::Always)) {
        Ok(store) => {
            if is_catalog {
                let entries = decoded.as_ref().unwrap_or_else(|reason| {
                    panic!("the store loaded a catalog page decode_catalog_page refuses: {reason}")
                });
                assert_eq!(
                    store.len(),
                    entries.len(),
                    "the store holds other entries than the page"
                );
                for entry in entries {
                    assert!(
                        matches!(store.get(entry.id), Ok(Some(_))),
                        "entry {:?} of the page is not in the store",
                        entry.id
                    );
                }
            }
            (store, true)
        }
        Err(_) => {
            sim = boot();
            match Store::open(
                STORE_DIR,
                store_options(&sim, RecoveryMode::SkipCorrupted, SyncMode::Always),
            ) {
                Ok(store) => (store, false),
                Err(_) => return,
            }
        }
    };
    for id in &ids {
        probe(&store, id);
    }
    let written = (|| -> crate::Result<()> {
        let mut tx = store.begin()?;
        tx.upsert("fresh", &vector_of(9), &[("k", "fresh")])?;
        if let Some(id) = ids.iter().find(|id| !id.is_empty() && id.len() <= 1024) {
            tx.delete(id)?;
            tx.upsert(id, &vector_of(10), &[("m", &meta_of(10, 0x90))])?;
        }
        tx.commit()?;
        store.checkpoint()?;
        Ok(())
    })();
    for id in &ids {
        probe(&store, id);
    }
    if written.is_ok() && store.close().is_ok() {
        let mode = if strict {
            RecoveryMode::Strict
        } else {
            RecoveryMode::SkipCorrupted
        };
        match Store::open(STORE_DIR, store_options(&sim, mode, SyncMode::Always)) {
            Ok(store) => {
                for id in &ids {
                    probe(&store, id);
                }
            }
            Err(e) => assert!(
                !strict,
                "a store that accepted writes and closed cleanly does not reopen: {e}"
            ),
        }
    }
}

/// The rules [`page::decode_catalog_page`] promises for the entries it returns.
fn check_catalog_entries(header: &page::PageHeader, entries: &[page::CatalogEntry<'_>]) {
    let mut extents = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for entry in entries {
        assert!(entry.slot < header.a.get(), "an entry from beyond the directory");
        assert!(
            entry.offset >= header.b.get() && entry.offset as usize + entry.len_bytes as usize <= PAGE_BYTES,
            "an entry outside the entry data"
        );
        assert!(
            (1..=1024).contains(&entry.id.len()),
            "an id of {} bytes",
            entry.id.len()
        );
        assert!(ids.insert(entry.id), "id {:?} twice", entry.id);
        if let Some(meta) = entry.inline_meta {
            assert_eq!(
                meta.len(),
                entry.header.meta_len.get() as usize,
                "inline metadata length"
            );
            assert_eq!(
                page::ENTRY_HEADER_BYTES + entry.id.len() + meta.len(),
                entry.len_bytes as usize,
                "an inline entry with other bytes"
            );
        }
        extents.push((entry.offset, entry.offset + entry.len_bytes));
    }
    extents.sort_unstable();
    assert!(extents.windows(2).all(|w| w[0].1 <= w[1].0), "entries overlap");
}

/// The ids the entries of a catalog page name (best effort, bounded; no validation implied).
fn catalog_page_ids(image: &[u8]) -> Vec<String> {
    let header = page::PageHeader::read_from_prefix(image)
        .expect("a page holds a header")
        .0;
    let slots = (header.a.get() as usize).min((PAGE_BYTES - page::CATALOG_SLOTS_OFFSET) / page::CATALOG_SLOT_BYTES);
    let mut ids = Vec::new();
    for slot in 0..slots.min(64) {
        let at = page::CATALOG_SLOTS_OFFSET + slot * page::CATALOG_SLOT_BYTES;
        let offset = u32_at(image, at) as usize;
        let len = u32_at(image, at + 4) as usize;
        let Some(entry) = image.get(offset..offset.saturating_add(len)) else {
            continue;
        };
        if entry.len() < page::ENTRY_HEADER_BYTES {
            continue;
        }
        let id_len = u16::from_le_bytes([entry[14], entry[15]]) as usize;
        if let Some(id) = entry.get(page::ENTRY_HEADER_BYTES..page::ENTRY_HEADER_BYTES + id_len)
            && let Ok(id) = std::str::from_utf8(id)
        {
            ids.push(id.to_string());
        }
    }
    ids
}

// ---------------------------------------------------------------------------------------------
// archive_decode
// ---------------------------------------------------------------------------------------------

/// **archive_decode**: the input is an archive file (`archive/`), and an LZ4 block.
///
/// This target was written as a placeholder before `src/archive.rs` existed: its first part
/// fuzzes what the archive format builds on, LZ4 blocks with a prepended uncompressed size
/// (`lz4_flex::block`), and will be dropped now that the archive module has landed. The second
/// part fuzzes the archive decoder itself (`archive::decode`), as given and with the header
/// and compressed-bytes checksums recomputed.
///
/// Invariants:
/// - (placeholder) `decompress_size_prepended` of the input, when the prepended size is at most
///   1 MiB (the cap a reader must enforce before allocating), returns `Ok` with at most that
///   many bytes, or an error; decompressing into a fixed 64 KiB buffer never panics;
///   compressing the input and decompressing it gives the input back;
/// - `archive::decode` returns `Ok` or `Err(Corrupted)`/`Err(Incompatible)`, never panics,
///   and never allocates more than a bounded multiple of the input (libFuzzer's malloc limit);
/// - on `Ok`, the contents have the header's uncompressed length, and encoding them again with
///   the same header (`archive::encode`) decodes to the same contents;
/// - reading the same bytes from a file block by block (`archive::decode_streamed`) agrees:
///   the same contents, or an error of the same kind.
pub fn archive_decode(data: &[u8]) {
    const SIZE_CAP_BYTES: usize = 1 << 20;
    if let Ok((size, _)) = lz4_flex::block::uncompressed_size(data)
        && size <= SIZE_CAP_BYTES
        && let Ok(out) = lz4_flex::block::decompress_size_prepended(data)
    {
        assert!(
            out.len() <= size,
            "decompressed {} bytes, more than the {size} announced",
            out.len()
        );
    }
    let mut buffer = vec![0u8; 64 << 10];
    if let Ok(len) = lz4_flex::block::decompress_into(data, &mut buffer) {
        assert!(len <= buffer.len());
    }
    let packed = lz4_flex::block::compress_prepend_size(data);
    let unpacked = lz4_flex::block::decompress_size_prepended(&packed).expect("lz4 round trip");
    assert_eq!(unpacked, data, "lz4 round trip changed the bytes");

    decode_archive_checked(data);
    let header_bytes = crate::archive::ARCHIVE_HEADER_BYTES;
    if data.len() >= header_bytes {
        let mut repaired = data.to_vec();
        let body_crc = crc32c::crc32c(&repaired[header_bytes..]);
        // The CRC of the bytes after the header is at offset 100; the header CRC is its last field.
        repaired[100..104].copy_from_slice(&body_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&repaired[..header_bytes - 4]);
        repaired[header_bytes - 4..header_bytes].copy_from_slice(&header_crc.to_le_bytes());
        if repaired != data {
            decode_archive_checked(&repaired);
        }
    }
}

fn decode_archive_checked(bytes: &[u8]) {
    let path = Path::new("archive/fuzz");
    let sim = crate::storage::SimStorage::new(1);
    sim.create_dir_all(Path::new("archive")).expect("a simulated directory");
    let file = sim.open(path, true).expect("a simulated file");
    file.write_at(bytes, 0).expect("writing a simulated file");
    let mut streamed = Vec::new();
    let streamed_outcome = crate::archive::decode_streamed(&sim, path, |block| {
        streamed.extend_from_slice(block);
        Ok(())
    });
    match (crate::archive::decode(path, bytes), streamed_outcome) {
        (Ok(file), Ok(header)) => {
            assert_eq!(file.contents.len() as u64, file.header.raw_len.get(), "contents length");
            assert!(streamed == file.contents, "streamed decoding gave other contents");
            assert_eq!(header.as_bytes(), file.header.as_bytes(), "streamed decoding's header");
            let again = crate::archive::encode(file.header, &file.contents);
            let decoded = crate::archive::decode(path, &again).expect("a re-encoded archive decodes");
            assert_eq!(decoded.contents, file.contents, "re-encoding changed the contents");
        }
        (Err(Error::Corrupted { .. }), Err(Error::Corrupted { .. }))
        | (Err(Error::Incompatible(_)), Err(Error::Incompatible(_))) => {}
        (whole, streamed) => panic!("archive::decode returned {whole:?}, decode_streamed {streamed:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// wal_scan
// ---------------------------------------------------------------------------------------------

/// A little-endian reader of fuzz input that yields zeros once the input is exhausted.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The 16-byte `wal/EPOCH` file holding `epoch` (format of `wal/epoch.rs`).
fn epoch_file(epoch: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(b"VEPC");
    bytes.extend_from_slice(&epoch.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes
}

/// A decoded wal_scan input: the segment files of a log and how to open it.
#[derive(Debug)]
pub struct WalScanInput {
    pub geometry: Geometry,
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Which record read by the first open (if any) to reopen from as `scan_from`.
    pub scan_from_pick: Option<u8>,
}

/// The directory the wal_scan target places its segments in.
pub const WAL_SCAN_DIR: &str = "/db/wal";

/// Decodes a wal_scan input (see [`wal_scan`] for the layout).
pub fn decode_wal_scan(data: &[u8]) -> WalScanInput {
    let mut input = Bytes(data);
    let layout = input.u8();
    let flags = input.u8();
    let epoch = input.u8();
    let pages = 5 + u64::from(layout & 3);
    let count = 1 + usize::from((layout >> 2) & 3).min(2);
    let first = u64::from((layout >> 4) & 3);
    let short_last = layout & 0x40 != 0;
    let spare = layout & 0x80 != 0;
    let geometry = Geometry::new(PAGE, PAGE as u64 * pages).expect("5 to 8 pages of 4 KiB are a valid geometry");
    let segment_bytes = geometry.segment_size_bytes as usize;
    let mut log = vec![0u8; count * segment_bytes];
    for index in 0..count {
        let chunk = if index + 1 == count {
            input.take(usize::MAX)
        } else {
            let len = usize::from(input.u16());
            input.take(len)
        };
        let segment = &mut log[index * segment_bytes..(index + 1) * segment_bytes];
        let (header, rest) = chunk.split_at(chunk.len().min(SEGMENT_HEADER_BYTES));
        segment[..header.len()].copy_from_slice(header);
        let rest = &rest[..rest.len().min(segment_bytes - PAGE_BYTES)];
        segment[PAGE_BYTES..PAGE_BYTES + rest.len()].copy_from_slice(rest);
    }
    let repair = Repair {
        segment_headers: flags & 1 != 0,
        page_headers: flags & 2 != 0,
        records: flags & 4 != 0,
        record_lsns: flags & 8 != 0,
    };
    if repair.any() {
        repair_log(&mut log, first, &geometry, repair);
    }
    let dir = Path::new(WAL_SCAN_DIR);
    let mut files = BTreeMap::new();
    for (index, segment) in log.chunks_exact(segment_bytes).enumerate() {
        let mut bytes = segment.to_vec();
        if short_last && index + 1 == count {
            bytes.truncate(segment_bytes - PAGE_BYTES);
        }
        files.insert(dir.join(segment_file_name(first + index as u64)), bytes);
    }
    if spare {
        // A leftover spare: a full-length file that holds the first segment's bytes.
        files.insert(dir.join("spare-9"), log[..segment_bytes].to_vec());
    }
    match epoch {
        // A store's log always has its epoch file (a missing one is refused as damage, tested
        // by the store's own tests): 0 gives a file of epoch 0, so such inputs still open.
        0 => {
            files.insert(dir.join("EPOCH"), epoch_file(0));
        }
        0xff => {
            files.insert(dir.join("EPOCH"), vec![0xa5; 16]);
        }
        e => {
            files.insert(dir.join("EPOCH"), epoch_file(u32::from(e)));
        }
    }
    WalScanInput {
        geometry,
        files,
        scan_from_pick: (flags & 0x10 != 0).then_some(flags >> 5),
    }
}

/// Encodes segment files as a wal_scan input that [`decode_wal_scan`] turns back into them
/// (for seeds): `segments` are consecutive segment images starting at `first` (0..=3).
pub fn encode_wal_scan(segments: &[Vec<u8>], pages_per_segment: u64, first: u64, flags: u8, epoch: u8) -> Vec<u8> {
    assert!((5..=8).contains(&pages_per_segment) && (1..=3).contains(&segments.len()) && first <= 3);
    let layout = (pages_per_segment - 5) as u8 | ((segments.len() as u8 - 1) << 2) | ((first as u8) << 4);
    let mut out = vec![layout, flags, epoch];
    for (index, segment) in segments.iter().enumerate() {
        let mut chunk = segment[..SEGMENT_HEADER_BYTES].to_vec();
        chunk.extend_from_slice(&segment[PAGE_BYTES..]);
        if index + 1 < segments.len() {
            assert!(chunk.len() <= u16::MAX as usize, "segment too large for a seed");
            out.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
        } else {
            while chunk.last() == Some(&0) {
                chunk.pop();
            }
        }
        out.extend_from_slice(&chunk);
    }
    out
}

fn wal_config(geometry: Geometry) -> WalConfig {
    let mut config = WalConfig::new(geometry, fuzz_identity(), SyncMode::Never);
    config.background = false;
    config
}

/// **wal_scan**: the input is a WAL directory: one to three segment files of 4 KiB pages (5 to
/// 8 pages each) in a simulated `wal/` directory, opened with `Wal::open` in every
/// `RecoveryMode`.
///
/// Layout: byte 0 = pages per segment − 5 (bits 0–1), segment count − 1 (bits 2–3, at most 2),
/// first segment number (bits 4–5), last file cut short (bit 6), a leftover spare file (bit 7);
/// byte 1 = checksums to recompute (bit 0 segment headers, bit 1 page headers, bit 2 records,
/// bit 3 also set record LSNs to their addresses), bit 4 reopen from a record found (which one:
/// bits 5–7); byte 2 = the `EPOCH` file (255 garbage, else a valid file of that epoch).
/// Then each segment but the last as `u16` length + bytes, the last as the rest; each segment's
/// bytes fill its header (first 128 bytes), then its pages from page 1 on (page 0 holds nothing
/// else), zero-padded.
///
/// Invariants, in each mode:
/// - `Wal::open` returns `Ok` or an error, never panics nor loops;
/// - on `Ok`, reading from the scan's start with its skipped ranges yields exactly the
///   `records` the scan counted, each ending after it starts and at or before the end of the
///   log, with payloads `record::decode` accepts or rejects as `Corrupted`;
/// - reopening from a record read (`scan_from`) succeeds and reads a suffix of those records;
/// - except when ranges were skipped, the opened log is repaired: after appending a record,
///   syncing and closing, a Strict reopen succeeds and reads the same records plus the new one.
pub fn wal_scan(data: &[u8]) {
    let input = decode_wal_scan(data);
    let dir = Path::new(WAL_SCAN_DIR);
    let dirs = [dir.to_path_buf()];
    for mode in MODES {
        let sim = materialize(&dirs, &input.files);
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let Ok((wal, report)) = Wal::open(storage.clone(), dir, wal_config(input.geometry), None, mode) else {
            continue;
        };
        assert_eq!(
            wal.end_lsn(),
            report.end_lsn,
            "the log does not continue at the scan's end"
        );
        let records = read_records(&wal, report.start_lsn, &report.skipped);
        assert_eq!(
            records.len() as u64,
            report.records,
            "the reader and the scan disagree on the records ({mode:?}, {report})"
        );
        if let Some(pick) = input.scan_from_pick
            && !records.is_empty()
        {
            let from = records[usize::from(pick) % records.len()].0;
            let sim = materialize(&dirs, &input.files);
            let storage: Arc<dyn Storage> = Arc::new(sim);
            let (again, again_report) = Wal::open(storage, dir, wal_config(input.geometry), Some(from), mode)
                .unwrap_or_else(|e| panic!("reopening from record {from} that a scan found: {e}"));
            let suffix = read_records(&again, again_report.start_lsn, &again_report.skipped);
            let at = records
                .iter()
                .position(|r| r.0 == from)
                .expect("picked from the records");
            assert!(
                suffix == records[at..],
                "reopening from record {from} does not read the records from it on ({mode:?})"
            );
        }
        if !report.skipped.is_empty() {
            continue;
        }
        let spec = RecordSpec {
            kind: Kind::Commit as u8,
            flags: 0,
            txn_id: 1,
            prev_lsn: 0,
            timestamp_us: 1,
        };
        let appended = wal.append(&spec, &[b"fuzz"]);
        let closed = appended.and_then(|lsn| wal.close().map(|()| lsn));
        let Ok(lsn) = closed else { continue };
        let (again, again_report) = Wal::open(storage, dir, wal_config(input.geometry), None, RecoveryMode::Strict)
            .unwrap_or_else(|e| panic!("a log opened in {mode:?}, appended to and closed does not reopen Strict: {e}"));
        let reread = read_records(&again, again_report.start_lsn, &again_report.skipped);
        assert_eq!(
            reread.last().map(|r| r.0),
            Some(lsn),
            "the appended record is not the last one"
        );
        assert!(
            reread[..reread.len() - 1].ends_with(&records),
            "a Strict reopen reads other records than the first open ({mode:?})"
        );
    }
}

/// Every record from `from` (lsn, end, kind, payload); panics on a reader error, an endless
/// read, or a record out of order.
fn read_records(wal: &Wal, from: Lsn, skips: &[crate::wal::SkippedRange]) -> Vec<(Lsn, u64, u8, Vec<u8>)> {
    let mut reader = wal.reader(from).with_skips(skips);
    let limit = reader.limit().get();
    let mut out: Vec<(Lsn, u64, u8, Vec<u8>)> = Vec::new();
    loop {
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => return out,
            Err(e) => panic!("reading a log that opened fails: {e}"),
        };
        assert!(
            record.end > record.lsn.get() && record.end <= limit,
            "record ends outside the log"
        );
        if let Some(last) = out.last() {
            assert!(record.lsn.get() >= last.1, "records out of order");
        }
        decode_payload_checked(
            record.header.kind,
            record.payload,
            record.lsn,
            wal.geometry().page_size_bytes,
        );
        out.push((record.lsn, record.end, record.header.kind, record.payload.to_vec()));
        assert!(
            out.len() as u64 <= limit / RECORD_HEADER_BYTES as u64 + 1,
            "the reader does not end"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// recovery
// ---------------------------------------------------------------------------------------------

/// A small deterministic PRNG (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The ids the recovery workload uses: `id-0` … `id-7`.
const RECOVERY_IDS: u64 = 8;
/// How many different base stores the recovery target builds (its seeds, modulo this).
pub const RECOVERY_SEEDS: u64 = 256;
type State = BTreeMap<String, (u32, String)>;

/// A crashed store built from a seed, and the state it must recover to.
struct RecoveryBase {
    image: StoreImage,
    /// The image on a crashed disk, booted as it is by inputs without mutations.
    disk: SimStorage,
    state: State,
}

/// Builds the store of `seed`: some autocommit operations and transactions (some aborted), a
/// checkpoint, more of them, maybe a transaction left running, then a crash. Commits are
/// durable (`SyncMode::Always`), so recovery must return exactly the last committed state.
/// Built once per process and seed, and [`RECOVERY_SEEDS`] seeds at most: the input's seed
/// is reduced modulo that, so after a warm-up every input finds its store in the cache.
fn recovery_base(seed: u64) -> Arc<RecoveryBase> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Arc<RecoveryBase>>>> = OnceLock::new();
    assert!(
        seed < RECOVERY_SEEDS,
        "recovery seeds are reduced modulo RECOVERY_SEEDS"
    );
    let cache = CACHE.get_or_init(Default::default);
    if let Some(base) = cache.lock().expect("cache lock").get(&seed) {
        return base.clone();
    }
    let mut rng = Rng(seed);
    let sim = SimStorage::new(seed);
    let options = store_options(&sim, RecoveryMode::TolerateTornTail, SyncMode::Always);
    let store = Store::create(STORE_DIR, DIMENSION as u32, options).expect("creating the recovery base store");
    let mut state = State::new();
    let mut version = 0u32;
    let mut phase = |store: &Store, state: &mut State, rng: &mut Rng, steps: u64| {
        for _ in 0..steps {
            let mut tx = store.begin().expect("begin");
            let mut scratch = state.clone();
            for _ in 0..1 + rng.below(3) {
                let id = format!("id-{}", rng.below(RECOVERY_IDS));
                if rng.below(4) == 0 {
                    tx.delete(&id).expect("delete");
                    scratch.remove(&id);
                } else {
                    version += 1;
                    let meta = meta_of(version, if rng.below(6) == 0 { 0x80 } else { 0 });
                    tx.upsert(&id, &vector_of(version), &[("m", &meta)]).expect("upsert");
                    scratch.insert(id, (version, meta));
                }
            }
            if rng.below(5) == 0 {
                tx.abort().expect("abort");
            } else {
                tx.commit().expect("commit");
                *state = scratch;
            }
        }
    };
    let steps = 2 + rng.below(5);
    phase(&store, &mut state, &mut rng, steps);
    store.checkpoint().expect("checkpoint");
    let steps = 1 + rng.below(4);
    phase(&store, &mut state, &mut rng, steps);
    if rng.below(2) == 0 {
        // A transaction running at the crash: recovery must undo it.
        let mut tx = store.begin().expect("begin");
        tx.upsert("id-0", &vector_of(999_999), &[("m", "loser")])
            .expect("upsert");
        tx.delete("id-1").expect("delete");
        sim.crash_now();
        drop(tx);
    }
    sim.crash_now();
    drop(store);
    let disk = sim.reboot();
    let image = StoreImage::of(&disk);
    let base = Arc::new(RecoveryBase {
        disk: image.boot_disk(),
        image,
        state,
    });
    cache.lock().expect("cache lock").insert(seed, base.clone());
    base
}

/// One step of a recovery mutation program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    FlipBit {
        file: u8,
        offset: u32,
        bit: u8,
    },
    SetByte {
        file: u8,
        offset: u32,
        value: u8,
    },
    SetU32 {
        file: u8,
        offset: u32,
        value: u32,
    },
    SetU64 {
        file: u8,
        offset: u32,
        value: u64,
    },
    Truncate {
        file: u8,
        len: u32,
    },
    ZeroPage {
        file: u8,
        page: u16,
    },
    SwapPages {
        file: u8,
        a: u16,
        b: u16,
    },
    CopyPage {
        from: u8,
        page: u16,
        to: u8,
        at: u16,
    },
    Remove {
        file: u8,
    },
    /// Recomputes the checksums of the file's structure (page `page` for page files).
    Reseal {
        file: u8,
        page: u16,
    },
}

/// Decodes a recovery mutation program: at most 16 steps, each a tag byte and its arguments.
pub fn decode_mutations(data: &[u8]) -> Vec<Mutation> {
    let mut input = Bytes(data);
    let mut out = Vec::new();
    while !input.is_empty() && out.len() < 16 {
        let mutation = match input.u8() % 10 {
            0 => Mutation::FlipBit {
                file: input.u8(),
                offset: input.u32(),
                bit: input.u8(),
            },
            1 => Mutation::SetByte {
                file: input.u8(),
                offset: input.u32(),
                value: input.u8(),
            },
            2 => Mutation::SetU32 {
                file: input.u8(),
                offset: input.u32(),
                value: input.u32(),
            },
            3 => Mutation::SetU64 {
                file: input.u8(),
                offset: input.u32(),
                value: input.u64(),
            },
            4 => Mutation::Truncate {
                file: input.u8(),
                len: input.u32(),
            },
            5 => Mutation::ZeroPage {
                file: input.u8(),
                page: input.u16(),
            },
            6 => Mutation::SwapPages {
                file: input.u8(),
                a: input.u16(),
                b: input.u16(),
            },
            7 => Mutation::CopyPage {
                from: input.u8(),
                page: input.u16(),
                to: input.u8(),
                at: input.u16(),
            },
            8 => Mutation::Remove { file: input.u8() },
            _ => Mutation::Reseal {
                file: input.u8(),
                page: input.u16(),
            },
        };
        out.push(mutation);
    }
    out
}

/// Encodes a mutation program as [`decode_mutations`] reads it (for seeds).
pub fn encode_mutations(program: &[Mutation]) -> Vec<u8> {
    let mut out = Vec::new();
    for mutation in program {
        match *mutation {
            Mutation::FlipBit { file, offset, bit } => {
                out.extend([0, file]);
                out.extend(offset.to_le_bytes());
                out.push(bit);
            }
            Mutation::SetByte { file, offset, value } => {
                out.extend([1, file]);
                out.extend(offset.to_le_bytes());
                out.push(value);
            }
            Mutation::SetU32 { file, offset, value } => {
                out.extend([2, file]);
                out.extend(offset.to_le_bytes());
                out.extend(value.to_le_bytes());
            }
            Mutation::SetU64 { file, offset, value } => {
                out.extend([3, file]);
                out.extend(offset.to_le_bytes());
                out.extend(value.to_le_bytes());
            }
            Mutation::Truncate { file, len } => {
                out.extend([4, file]);
                out.extend(len.to_le_bytes());
            }
            Mutation::ZeroPage { file, page } => {
                out.extend([5, file]);
                out.extend(page.to_le_bytes());
            }
            Mutation::SwapPages { file, a, b } => {
                out.extend([6, file]);
                out.extend(a.to_le_bytes());
                out.extend(b.to_le_bytes());
            }
            Mutation::CopyPage { from, page, to, at } => {
                out.extend([7, from]);
                out.extend(page.to_le_bytes());
                out.push(to);
                out.extend(at.to_le_bytes());
            }
            Mutation::Remove { file } => out.extend([8, file]),
            Mutation::Reseal { file, page } => {
                out.extend([9, file]);
                out.extend(page.to_le_bytes());
            }
        }
    }
    out
}

/// Applies one mutation to the files of a store image (files picked by index, modulo count).
fn mutate(files: &mut BTreeMap<PathBuf, Vec<u8>>, mutation: &Mutation, geometry: &Geometry) {
    let paths: Vec<PathBuf> = files.keys().cloned().collect();
    if paths.is_empty() {
        return;
    }
    let pick = |file: u8| paths[usize::from(file) % paths.len()].clone();
    let at = |bytes: &[u8], offset: u32| (offset as usize).checked_rem(bytes.len());
    let page_range = |bytes: &[u8], page: u16| {
        let pages = bytes.len() / PAGE_BYTES;
        (pages > 0).then(|| {
            let start = usize::from(page) % pages * PAGE_BYTES;
            start..start + PAGE_BYTES
        })
    };
    match *mutation {
        Mutation::FlipBit { file, offset, bit } => {
            let bytes = files.get_mut(&pick(file)).expect("picked");
            if let Some(i) = at(bytes, offset) {
                bytes[i] ^= 1 << (bit % 8);
            }
        }
        Mutation::SetByte { file, offset, value } => {
            let bytes = files.get_mut(&pick(file)).expect("picked");
            if let Some(i) = at(bytes, offset) {
                bytes[i] = value;
            }
        }
        Mutation::SetU32 { file, offset, value } => {
            let bytes = files.get_mut(&pick(file)).expect("picked");
            if let Some(i) = at(bytes, offset) {
                let n = (bytes.len() - i).min(4);
                bytes[i..i + n].copy_from_slice(&value.to_le_bytes()[..n]);
            }
        }
        Mutation::SetU64 { file, offset, value } => {
            let bytes = files.get_mut(&pick(file)).expect("picked");
            if let Some(i) = at(bytes, offset) {
                let n = (bytes.len() - i).min(8);
                bytes[i..i + n].copy_from_slice(&value.to_le_bytes()[..n]);
            }
        }
        Mutation::Truncate { file, len } => {
            let bytes = files.get_mut(&pick(file)).expect("picked");
            let len = len as usize % (bytes.len() + 1);
            bytes.truncate(len);
        }
        Mutation::ZeroPage { file, page } => {
            let bytes = files.get_mut(&pick(file)).expect("picked");
            if let Some(range) = page_range(bytes, page) {
                bytes[range].fill(0);
            }
        }
        Mutation::SwapPages { file, a, b } => {
            let bytes = files.get_mut(&pick(file)).expect("picked");
            if let (Some(a), Some(b)) = (page_range(bytes, a), page_range(bytes, b))
                && a != b
            {
                let copy = bytes[a.clone()].to_vec();
                bytes.copy_within(b.clone(), a.start);
                bytes[b].copy_from_slice(&copy);
            }
        }
        Mutation::CopyPage { from, page, to, at } => {
            let source = &files[&pick(from)];
            let Some(range) = page_range(source, page) else { return };
            let copy = source[range].to_vec();
            let target = files.get_mut(&pick(to)).expect("picked");
            if let Some(range) = page_range(target, at) {
                target[range].copy_from_slice(&copy);
            }
        }
        Mutation::Remove { file } => {
            files.remove(&pick(file));
        }
        Mutation::Reseal { file, page } => {
            let path = pick(file);
            let bytes = files.get_mut(&path).expect("picked");
            reseal(&path, bytes, page, geometry);
        }
    }
}

/// Recomputes the checksums of the structure `path` holds (see [`Mutation::Reseal`]).
fn reseal(path: &Path, bytes: &mut [u8], page: u16, geometry: &Geometry) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let page_range = |len: usize| {
        let pages = len / PAGE_BYTES;
        (pages > 0).then(|| {
            let start = usize::from(page) % pages * PAGE_BYTES;
            start..start + PAGE_BYTES
        })
    };
    if name == crate::format::control::CONTROL_FILE_NAME {
        for slot in bytes.chunks_exact_mut(CONTROL_SLOT_BYTES).take(2) {
            let crc = crc32c::crc32c(&slot[..crate::format::control::CONTROL_CRC_OFFSET]);
            slot[crate::format::control::CONTROL_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        }
    } else if name == "EPOCH" {
        if bytes.len() >= 12 {
            let crc = crc32c::crc32c(&bytes[..8]);
            bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        }
    } else if let Some(segment_no) = crate::wal::segment::parse_segment_file_name(name) {
        let whole = bytes.len() / PAGE_BYTES * PAGE_BYTES;
        repair_log(&mut bytes[..whole], segment_no, geometry, Repair::ALL);
    } else if name == crate::format::doublewrite::DOUBLEWRITE_FILE_NAME && usize::from(page) % 64 == 0 {
        if bytes.len() >= crate::format::doublewrite::DOUBLEWRITE_HEADER_BYTES {
            let crc = crc32c::crc32c(&bytes[..60]);
            bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        }
    } else if let Some(range) = page_range(bytes.len()) {
        // Arena files, doublewrite images, spares: page checksums.
        page::seal(&mut bytes[range]);
    }
}

/// **recovery**: the first 8 bytes (little-endian, modulo [`RECOVERY_SEEDS`]) seed a real
/// store in SimStorage (4 KiB pages, 8-page segments; a few inserts, upserts and deletes in autocommit and multi-operation transactions,
/// some aborted, a checkpoint, more commits, maybe a transaction left running, then a crash);
/// the rest is a mutation program over its files (bit flips, bytes, integers, truncation,
/// zeroed, swapped and copied pages, removed files, checksums recomputed; see [`Mutation`]).
///
/// Invariants, in every `RecoveryMode`:
/// - `Store::open` returns `Ok` or an error, never panics nor hangs;
/// - on `Ok`, `get` of every id returns a vector of the store's dimension with readable
///   metadata, `None`, or an error; a further commit and a close return `Ok` or an error;
/// - with an empty program, the open succeeds in every mode and the store holds exactly the
///   last committed state (every commit was acknowledged as durable).
pub fn recovery(data: &[u8]) {
    let (seed_bytes, program) = data.split_at(data.len().min(8));
    let mut seed = [0u8; 8];
    seed[..seed_bytes.len()].copy_from_slice(seed_bytes);
    let base = recovery_base(u64::from_le_bytes(seed) % RECOVERY_SEEDS);
    let program = decode_mutations(program);
    let geometry = Geometry::new(PAGE, PAGE as u64 * 8).expect("valid geometry");
    let disk = if program.is_empty() {
        base.disk.clone()
    } else {
        let mut image = base.image.clone();
        for mutation in &program {
            mutate(&mut image.files, mutation, &geometry);
        }
        image.boot_disk()
    };
    for mode in MODES {
        let sim = disk.reboot_with_seed(0x5eed);
        let opened = Store::open(STORE_DIR, store_options(&sim, mode, SyncMode::Always));
        let store = match opened {
            Ok(store) => store,
            // Strict may refuse an undamaged crash image: unsynced sectors of the last
            // transaction can leave valid records after a torn one (an ambiguous tail).
            Err(Error::Corrupted { .. }) if mode == RecoveryMode::Strict => continue,
            Err(e) => {
                assert!(
                    !program.is_empty(),
                    "an undamaged crashed store fails to open in {mode:?}: {e}"
                );
                continue;
            }
        };
        let mut state = State::new();
        for i in 0..RECOVERY_IDS {
            let id = format!("id-{i}");
            if let Some((version, meta)) = probe(&store, &id)
                && let (Some(version), [(key, value)]) = (version, meta.as_slice())
                && key == "m"
            {
                state.insert(id, (version, value.clone()));
            }
        }
        if program.is_empty() {
            assert_eq!(
                state, base.state,
                "recovery in {mode:?} did not restore the last committed state"
            );
            assert_eq!(store.len(), base.state.len(), "len after recovery in {mode:?}");
        }
        let _ = store.upsert("id-after", &vector_of(5), &[("m", "after")]);
        let _ = store.delete("id-1");
        probe(&store, "id-after");
        let _ = store.close();
    }
}

// ---------------------------------------------------------------------------------------------
// ops
// ---------------------------------------------------------------------------------------------

/// One write inside a transaction (or autocommit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Insert { id: u8, meta: u8 },
    Upsert { id: u8, meta: u8 },
    Delete { id: u8 },
}

/// One step of the ops target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// An autocommit write.
    Single(Write),
    /// A transaction of writes, committed or aborted.
    Txn {
        writes: Vec<Write>,
        commit: bool,
    },
    Checkpoint,
    Sync,
    /// Power cut now: reboot the disk and recover.
    Crash,
    /// Close cleanly and reopen (Strict).
    Reopen,
    /// Arm a crash at the `n`-th storage operation from now.
    CrashAfterOps(u8),
    /// Look a vector up and hold it (a reader that stays).
    Hold(u8),
    /// Let a held reader go.
    Release(u8),
}

/// A decoded ops input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsInput {
    pub sync: SyncMode,
    pub ops: Vec<Op>,
}

const OPS_IDS: u8 = 12;
const OPS_MAX: usize = 64;

fn decode_write(input: &mut Bytes<'_>) -> Write {
    match input.u8() % 3 {
        0 => Write::Insert {
            id: input.u8() % OPS_IDS,
            meta: input.u8(),
        },
        1 => Write::Upsert {
            id: input.u8() % OPS_IDS,
            meta: input.u8(),
        },
        _ => Write::Delete {
            id: input.u8() % OPS_IDS,
        },
    }
}

fn encode_write(out: &mut Vec<u8>, write: Write) {
    match write {
        Write::Insert { id, meta } => out.extend([0, id, meta]),
        Write::Upsert { id, meta } => out.extend([1, id, meta]),
        Write::Delete { id } => out.extend([2, id]),
    }
}

/// Decodes an ops input: byte 0 bit 0 = `SyncMode::Never` (else `Always`); then up to 64 ops,
/// each a tag byte (modulo 9: single write, transaction, checkpoint, sync, crash, reopen,
/// crash-after-ops, hold, release) and its arguments.
pub fn decode_ops(data: &[u8]) -> OpsInput {
    let mut input = Bytes(data);
    let sync = if input.u8() & 1 == 0 {
        SyncMode::Always
    } else {
        SyncMode::Never
    };
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < OPS_MAX {
        let op = match input.u8() % 9 {
            0 => Op::Single(decode_write(&mut input)),
            1 => {
                let header = input.u8();
                let count = 1 + usize::from(header & 7);
                let writes = (0..count).map(|_| decode_write(&mut input)).collect();
                Op::Txn {
                    writes,
                    commit: header & 8 == 0,
                }
            }
            2 => Op::Checkpoint,
            3 => Op::Sync,
            4 => Op::Crash,
            5 => Op::Reopen,
            6 => Op::CrashAfterOps(input.u8()),
            7 => Op::Hold(input.u8() % OPS_IDS),
            _ => Op::Release(input.u8()),
        };
        ops.push(op);
    }
    OpsInput { sync, ops }
}

/// Encodes an ops input as [`decode_ops`] reads it (for seeds).
pub fn encode_ops(input: &OpsInput) -> Vec<u8> {
    let mut out = vec![u8::from(input.sync != SyncMode::Always)];
    for op in &input.ops {
        match op {
            Op::Single(write) => {
                out.push(0);
                encode_write(&mut out, *write);
            }
            Op::Txn { writes, commit } => {
                assert!((1..=8).contains(&writes.len()));
                out.push(1);
                out.push((writes.len() - 1) as u8 | if *commit { 0 } else { 8 });
                for write in writes {
                    encode_write(&mut out, *write);
                }
            }
            Op::Checkpoint => out.push(2),
            Op::Sync => out.push(3),
            Op::Crash => out.push(4),
            Op::Reopen => out.push(5),
            Op::CrashAfterOps(n) => out.extend([6, *n]),
            Op::Hold(id) => out.extend([7, *id]),
            Op::Release(i) => out.extend([8, *i]),
        }
    }
    out
}

/// The committed states in commit order and the last one acknowledged as durable: recovery may
/// return no earlier state (as in `tests/simulation.rs`).
struct Model {
    states: Vec<State>,
    durable: usize,
}

impl Model {
    fn latest(&self) -> &State {
        self.states.last().expect("the model has a state")
    }

    fn commit(&mut self, state: State, sync: SyncMode) {
        self.states.push(state);
        if sync == SyncMode::Always {
            self.durable = self.states.len() - 1;
        }
    }

    fn all_durable(&mut self) {
        self.durable = self.states.len() - 1;
    }
}

fn ops_id(id: u8) -> String {
    format!("id-{id}")
}

/// A store just created and closed, on a crashed disk to boot a copy of per input (creating
/// a store for every input made the target several times slower).
fn ops_fresh_disk() -> &'static SimStorage {
    static DISK: OnceLock<SimStorage> = OnceLock::new();
    DISK.get_or_init(|| {
        let sim = SimStorage::new(0);
        let options = ops_options(&sim, RecoveryMode::Strict, SyncMode::Always);
        Store::create(STORE_DIR, DIMENSION as u32, options)
            .and_then(Store::close)
            .expect("creating the ops base store");
        StoreImage::of(&sim).boot_disk()
    })
}

/// What ended the life of one open store.
enum Next {
    Crashed,
    Reopen,
    Done,
}

struct OpsRun {
    sim: SimStorage,
    sync: SyncMode,
    model: Model,
    version: u32,
}

fn ops_options(sim: &SimStorage, mode: RecoveryMode, sync: SyncMode) -> Options {
    Options {
        checkpoint_interval_bytes: 24 * 1024,
        ..store_options(sim, mode, sync)
    }
}

/// **ops**: a sequence of API calls (see [`decode_ops`]) against a store in SimStorage with
/// background I/O off (4 KiB pages, 8-page segments, automatic checkpoints every 24 KiB of log),
/// checked against an in-memory model.
///
/// Invariants:
/// - with no crash, every call succeeds (an insert of a present id fails with `AlreadyExists`
///   and changes nothing; a delete reports whether the id existed), a transaction sees its own
///   writes, and after every step the store holds exactly the model's last committed state;
/// - a held vector never changes under its reader;
/// - after a crash (now, or at an armed storage operation, inside commits, checkpoints, closes
///   and recovery too) the store reopens, and its state equals the model's state after some
///   prefix of the commits that includes every commit acknowledged as durable
///   (`SyncMode::Always`, or made durable by `sync`, a checkpoint or a close);
/// - after a clean close the store reopens in Strict mode with exactly the last state.
pub fn ops(data: &[u8]) {
    let input = decode_ops(data);
    let sim = ops_fresh_disk().reboot_with_seed(u64::from(data.len() as u32));
    let store = Store::open(STORE_DIR, ops_options(&sim, RecoveryMode::Strict, input.sync))
        .expect("opening a fresh store in SimStorage");
    let mut run = OpsRun {
        sim,
        sync: input.sync,
        model: Model {
            states: vec![State::new()],
            durable: 0,
        },
        version: 0,
    };
    let mut ops = input.ops.iter();
    let mut store = Some(store);
    loop {
        let current = store.take().expect("a store is open");
        let next = run.life(&current, &mut ops);
        match next {
            Next::Reopen => match current.close() {
                Ok(()) => {
                    run.model.all_durable();
                    store = Some(run.open_strict());
                }
                Err(e) => {
                    assert!(run.sim.is_crashed(), "close failed without a crash: {e}");
                    store = Some(run.recover());
                }
            },
            Next::Crashed => {
                run.sim.crash_now();
                drop(current);
                store = Some(run.recover());
            }
            Next::Done => {
                run.sim.crash_now();
                drop(current);
                run.recover();
                return;
            }
        }
    }
}

impl OpsRun {
    /// Runs ops on `store` until one needs a new store (crash, reopen) or the ops run out.
    fn life<'s>(&mut self, store: &'s Store, ops: &mut std::slice::Iter<'_, Op>) -> Next {
        let mut held: Vec<(crate::VectorRef<'s>, u32)> = Vec::new();
        for op in ops.by_ref() {
            for (vector, version) in &held {
                assert_eq!(
                    version_of(vector),
                    Some(*version),
                    "a held vector changed under its reader"
                );
            }
            let result = match op {
                Op::Single(write) => self.single(store, *write),
                Op::Txn { writes, commit } => self.transaction(store, writes, *commit),
                Op::Checkpoint => store.checkpoint().map(|_| self.model.all_durable()),
                Op::Sync => store.sync().map(|()| self.model.all_durable()),
                Op::Crash => return Next::Crashed,
                Op::Reopen => return Next::Reopen,
                Op::CrashAfterOps(n) => {
                    self.sim.crash_after_ops(1 + u64::from(*n));
                    Ok(())
                }
                Op::Hold(id) => {
                    match store.get(&ops_id(*id)) {
                        Ok(Some(vector)) => {
                            let version = version_of(&vector).expect("a reader sees whole committed vectors");
                            held.push((vector, version));
                        }
                        Ok(None) => {}
                        Err(e) => assert!(self.sim.is_crashed(), "get failed without a crash: {e}"),
                    }
                    Ok(())
                }
                Op::Release(i) => {
                    if !held.is_empty() {
                        held.swap_remove(usize::from(*i) % held.len());
                    }
                    Ok(())
                }
            };
            if let Err(e) = result {
                assert!(self.sim.is_crashed(), "{op:?} failed without a crash: {e}");
                return Next::Crashed;
            }
            if self.sim.is_crashed() {
                return Next::Crashed;
            }
            let state = read_ops_state(store).unwrap_or_else(|e| panic!("reading the store after {op:?}: {e}"));
            assert_eq!(
                &state,
                self.model.latest(),
                "after {op:?} the store differs from the model"
            );
        }
        Next::Done
    }

    fn next_write(&mut self, tx: &mut crate::Transaction<'_>, write: Write, state: &mut State) -> crate::Result<()> {
        match write {
            Write::Insert { id, meta } | Write::Upsert { id, meta } => {
                let id = ops_id(id);
                self.version += 1;
                let value = meta_of(self.version, meta);
                let vector = vector_of(self.version);
                if matches!(write, Write::Insert { .. }) {
                    match tx.insert(&id, &vector, &[("m", &value)]) {
                        Ok(_) => assert!(!state.contains_key(&id), "insert of present {id} succeeded"),
                        Err(Error::AlreadyExists) => {
                            assert!(state.contains_key(&id), "insert of absent {id} refused");
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    tx.upsert(&id, &vector, &[("m", &value)])?;
                }
                state.insert(id.clone(), (self.version, value));
                assert_eq!(tx.get(&id), Some(vector), "a transaction does not see its own write");
            }
            Write::Delete { id } => {
                let id = ops_id(id);
                let existed = tx.delete(&id)?;
                assert_eq!(
                    existed,
                    state.remove(&id).is_some(),
                    "delete of {id} misreports existence"
                );
                assert_eq!(tx.get(&id), None, "a transaction sees what it deleted");
            }
        }
        Ok(())
    }

    fn single(&mut self, store: &Store, write: Write) -> crate::Result<()> {
        let mut state = self.model.latest().clone();
        let result = (|| {
            let mut tx = store.begin()?;
            self.next_write(&mut tx, write, &mut state)?;
            tx.commit().map(|_| ())
        })();
        match result {
            Ok(()) => self.model.commit(state, self.sync),
            // The crash hit this operation: if it was committing, it may have landed.
            Err(_) => self.model.states.push(state),
        }
        result
    }

    fn transaction(&mut self, store: &Store, writes: &[Write], commit: bool) -> crate::Result<()> {
        let mut state = self.model.latest().clone();
        let result = (|| {
            let mut tx = store.begin()?;
            for &write in writes {
                self.next_write(&mut tx, write, &mut state)?;
            }
            if commit { tx.commit().map(|_| ()) } else { tx.abort() }
        })();
        match (result.is_ok(), commit) {
            (true, true) => self.model.commit(state, self.sync),
            (true, false) => {}
            (false, true) => self.model.states.push(state),
            (false, false) => {}
        }
        result
    }

    /// Reboots the disk and recovers (again if a crash is armed inside recovery); checks the
    /// recovered state against the model and makes it the model's durable state.
    fn recover(&mut self) -> Store {
        for _ in 0..4 {
            self.sim = self.sim.reboot();
            match Store::open(
                STORE_DIR,
                ops_options(&self.sim, RecoveryMode::TolerateTornTail, self.sync),
            ) {
                Ok(store) => {
                    let state = read_ops_state(&store).unwrap_or_else(|e| panic!("reading a recovered store: {e}"));
                    let model = &mut self.model;
                    let matched = (model.durable..model.states.len())
                        .rev()
                        .find(|&p| model.states[p] == state)
                        .unwrap_or_else(|| {
                            panic!(
                                "recovered state matches no commit prefix from {} (durable) to {}: {state:?}",
                                model.durable,
                                model.states.len() - 1
                            )
                        });
                    model.states.truncate(matched + 1);
                    model.durable = matched;
                    return store;
                }
                Err(e) => assert!(self.sim.is_crashed(), "recovery failed without a crash: {e}"),
            }
        }
        panic!("recovery crashed four times in a row");
    }

    fn open_strict(&mut self) -> Store {
        match Store::open(STORE_DIR, ops_options(&self.sim, RecoveryMode::Strict, self.sync)) {
            Ok(store) => {
                let state = read_ops_state(&store).unwrap_or_else(|e| panic!("reading a reopened store: {e}"));
                assert_eq!(
                    &state,
                    self.model.latest(),
                    "after a clean close the state is not the last commit"
                );
                store
            }
            Err(e) => {
                assert!(self.sim.is_crashed(), "a clean reopen failed without a crash: {e}");
                self.recover()
            }
        }
    }
}

fn read_ops_state(store: &Store) -> Result<State, String> {
    let mut state = State::new();
    for i in 0..OPS_IDS {
        let id = ops_id(i);
        if let Some(vector) = store.get(&id).map_err(|e| e.to_string())? {
            let version = version_of(&vector).ok_or_else(|| format!("{id}: a vector that was never written"))?;
            let meta: Vec<_> = vector.metadata().collect();
            let [("m", value)] = meta.as_slice() else {
                return Err(format!("{id}: metadata {meta:?}"));
            };
            state.insert(id, (version, value.to_string()));
        }
    }
    if state.len() != store.len() {
        return Err(format!("len {} but {} ids readable", store.len(), state.len()));
    }
    Ok(state)
}
