//! The `control_file` target.

use std::collections::BTreeMap;
use std::path::Path;

use zerocopy::IntoBytes;

use crate::Error;
use crate::format::control::{CONTROL_FILE_BYTES, CONTROL_SLOT_BYTES, Control};
use crate::format::wal::Geometry;
use crate::store::control_file::ControlFile;
use crate::testing::materialize;

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
