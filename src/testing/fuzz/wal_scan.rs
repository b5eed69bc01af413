//! The `wal_scan` target, and the encoding of its input (for seeds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record_decode::decode_payload_checked;
use super::repair::{Repair, repair_log};
use super::{MODES, PAGE, PAGE_BYTES, fuzz_identity};
use crate::format::record::Kind;
use crate::format::wal::{Geometry, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::storage::Storage;
use crate::testing::{Bytes, materialize};
use crate::wal::segment::segment_file_name;
use crate::wal::{RecordSpec, Wal, WalConfig};
use crate::{Lsn, RecoveryMode, SyncMode};

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
