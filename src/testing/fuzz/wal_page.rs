//! The `wal_page` target.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use zerocopy::{FromBytes, IntoBytes};

use super::record_decode::decode_payload_checked;
use super::repair::{Repair, repair_log};
use super::{FUZZ_TIMELINE, PAGE, PAGE_BYTES, fuzz_identity};
use crate::Lsn;
use crate::format::wal::{Geometry, PAGE_HEADER_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::storage::Storage;
use crate::testing::materialize;
use crate::wal::segment::{SegmentDir, segment_file_name};
use crate::wal::view::{Decoded, LogView, Step};

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

/// Panics unless `check` (the scan's, which copies nothing) judged the record at `at` as
/// `decode` (the readers', which gathers a spanning payload) did: the same header and end, or
/// the same verdict against it.
fn assert_same_verdict(decoded: &Decoded, checked: &Decoded, at: u64) {
    let same = match (decoded, checked) {
        (Decoded::Record { header: a, end: x, .. }, Decoded::Record { header: b, end: y, .. }) => {
            a.as_bytes() == b.as_bytes() && x == y
        }
        (Decoded::End(x), Decoded::End(y)) => x == y,
        (Decoded::Invalid(x, a), Decoded::Invalid(y, b)) => x == y && a == b,
        _ => false,
    };
    assert!(same, "at {at}: decode found {decoded:?}, check found {checked:?}");
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
        let decoded = view.decode(at, floor, &mut scratch);
        assert_same_verdict(&decoded, &view.check(at, floor), at);
        match decoded {
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
