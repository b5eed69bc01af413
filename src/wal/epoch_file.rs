//! The log epoch file (`wal/EPOCH`): the number of the current open of the log.
//!
//! Every page header and record carries the epoch of the open that wrote it, and epochs never
//! decrease along the log. Before an open appends its first byte it writes a new, higher epoch
//! here (and syncs it), so bytes a crashed run left beyond the end of the log (older epochs)
//! can never be read as live, however a later run's records happen to line up with them.
//!
//! Two copies (slots), at offsets 0 and 512 (two sectors), each written and synced in turn with
//! the same contents, so that neither a torn write nor one damaged sector can lose the epoch.
//! A slot (format minor 3; minor 1 wrote bytes 0..32, minor 0 bytes 0..16 of slot 0 only):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `VEPC` |
//! | 4 | 4 | epoch |
//! | 8 | 4 | CRC32C of bytes 0..8 |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | store id |
//! | 24 | 4 | CRC32C of bytes 0..24 |
//! | 28 | 4 | reserved, zero |
//! | 32 | 8 | horizon: no log page at or past it was written by this epoch (minor 3) |
//! | 40 | 4 | CRC32C of bytes 0..40 (minor 3) |
//! | 44 | 4 | reserved, zero (minor 3) |
//!
//! **The horizon.** An open writes no log byte at or past the horizon that `EPOCH` durably
//! holds for it: before a flush would, it writes a new horizon (the flush's end plus a step of
//! [`HORIZON_AHEAD_BYTES`] to 4 MiB, as the log's pace calls for: horizon.rs) into one slot,
//! the slots taken in turn, and syncs it. A scan after a
//! crash therefore ends its look-ahead at the horizon (FORMAT.md section 12) instead of reading
//! every page to the end of the last segment file (the next segment, preallocated: 16 MiB read
//! from the disk after a crash of a thousand commits). It is used only where both slots are
//! valid and hold one (the highest of the two): a damaged slot may have held a later one.
//!
//! Reading, top to bottom (the labels reappear in [`read`]):
//!
//! | label | slots | epoch possibly in use |
//! |---|---|---|
//! | `Missing` | no file, or shorter than one slot | damage (`Corrupted`): the store is missing a file |
//! | `Foreign` | a valid slot naming another store | damage: the file was swapped in from elsewhere |
//! | `Both` | both valid | the higher |
//! | `One` | one valid (or a minor-0 file: slot 0 alone) | that one, plus one if the other slot is damaged: it may have held the next |
//! | `None` | neither valid | damage; under `SkipCorrupted` the scan's highest epoch stands in |

use std::path::Path;
use std::sync::Arc;

use crate::error::{IoContext, Result};
use crate::storage::{Storage, StorageFile};
use crate::{Error, RecoveryMode};

pub const EPOCH_FILE_NAME: &str = "EPOCH";
const EPOCH_MAGIC: [u8; 4] = *b"VEPC";
/// The bytes of a slot as format minor 0 wrote it (slot 0 only, in a 16-byte file).
const SLOT_MINOR0_BYTES: usize = 16;
/// The bytes of a slot as format minor 1 wrote it.
const SLOT_MINOR1_BYTES: usize = 32;
const SLOT_BYTES: usize = 48;
const SLOT_OFFSETS: [usize; 2] = [0, 512];
/// The length of the file this version writes.
pub const EPOCH_FILE_BYTES: usize = SLOT_OFFSETS[1] + SLOT_BYTES;
/// The shortest file a store of format minor 1 or later has.
const EPOCH_FILE_MIN_BYTES: usize = SLOT_OFFSETS[1] + SLOT_MINOR1_BYTES;
/// How far past a flush's end a new horizon lies at least (rounded up to whole pages; the
/// step grows with the log's pace up to `horizon::HORIZON_AHEAD_MAX_BYTES`): one slot write and
/// sync per 256 KiB of log at most (one commit in 230 of 1 KiB records), and a look-ahead after
/// a crash of at most one step past the last flush, read cold by the open after the crash.
pub const HORIZON_AHEAD_BYTES: u64 = 256 << 10;
const _: () = assert!(SLOT_OFFSETS[0] + SLOT_BYTES <= SLOT_OFFSETS[1], "slots do not overlap");

/// What `EPOCH` says: the epoch possibly in use, and the horizon its writes stay below (see
/// the module documentation), if the file proves one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InUse {
    /// The highest epoch the log may have used.
    pub epoch: u32,
    /// No log page at or past it holds a record any open wrote.
    pub horizon: Option<u64>,
}

/// What one slot holds.
#[derive(Debug, PartialEq, Eq)]
enum Slot {
    Valid {
        epoch: u32,
        store_id: Option<u64>,
        horizon: Option<u64>,
    },
    Invalid,
}

fn decode_slot(bytes: &[u8]) -> Slot {
    let minor0_valid = bytes.len() >= SLOT_MINOR0_BYTES
        && bytes[..4] == EPOCH_MAGIC
        && crc32c::crc32c(&bytes[..8]).to_le_bytes() == bytes[8..12]
        && bytes[12..16] == [0; 4];
    if !minor0_valid {
        return Slot::Invalid;
    }
    let epoch = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let extension = bytes.get(SLOT_MINOR0_BYTES..SLOT_BYTES);
    let store_id = match extension {
        None => None,
        Some(ext) if ext.iter().all(|&b| b == 0) => None,
        Some(ext) => {
            let crc_ok = crc32c::crc32c(&bytes[..24]).to_le_bytes() == ext[8..12];
            if !crc_ok || ext[12..16] != [0; 4] {
                return Slot::Invalid;
            }
            Some(u64::from_le_bytes(ext[..8].try_into().expect("8 bytes")))
        }
    };
    let horizon = match bytes.get(SLOT_MINOR1_BYTES..SLOT_BYTES) {
        None => None,
        Some(ext) if ext.iter().all(|&b| b == 0) => None,
        Some(ext) => {
            let crc_ok = crc32c::crc32c(&bytes[..40]).to_le_bytes() == ext[8..12];
            if !crc_ok || ext[12..16] != [0; 4] || store_id.is_none() {
                return Slot::Invalid;
            }
            Some(u64::from_le_bytes(ext[..8].try_into().expect("8 bytes")))
        }
    };
    Slot::Valid {
        epoch,
        store_id,
        horizon,
    }
}

fn encode_slot(epoch: u32, store_id: u64, horizon: u64) -> [u8; SLOT_BYTES] {
    let mut bytes = [0u8; SLOT_BYTES];
    bytes[..4].copy_from_slice(&EPOCH_MAGIC);
    bytes[4..8].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..8]);
    bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    bytes[16..24].copy_from_slice(&store_id.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    bytes[32..40].copy_from_slice(&horizon.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..40]);
    bytes[40..44].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Opens `EPOCH` in `dir` for [`read`] and asks for its bytes now
/// ([`StorageFile::will_need`]): after a cold start its read then waits for the disk with the
/// log's segment headers rather than after them. Nothing is reported here: [`read`] does it.
///
/// [`StorageFile::will_need`]: crate::storage::StorageFile::will_need
pub fn open_ahead(storage: &dyn Storage, dir: &Path) -> std::io::Result<Arc<dyn StorageFile>> {
    let file = storage.open_read_only(&dir.join(EPOCH_FILE_NAME))?;
    file.will_need(0, EPOCH_FILE_BYTES as u64);
    Ok(file)
}

/// The highest epoch that the log of store `store_id` may have used, from `dir/EPOCH` (the
/// decision table of the module documentation), `opened` read-only by [`open_ahead`]: nothing
/// changes.
///
/// With `whole`, the store's files are of format minor ≥ 1, whose epoch file is never shorter
/// than both slots: a shorter one was truncated (`Missing`).
pub fn read(
    opened: std::io::Result<Arc<dyn StorageFile>>,
    dir: &Path,
    store_id: u64,
    mode: RecoveryMode,
    whole: bool,
) -> Result<InUse> {
    let path = dir.join(EPOCH_FILE_NAME);
    let missing = || Error::corrupted_file(&path, "the epoch file is missing or empty; the store is incomplete");
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let len_bytes = file
        .len()
        .context(|| format!("reading the length of {}", path.display()))?;
    let len_bytes = usize::try_from(len_bytes).unwrap_or(usize::MAX).min(EPOCH_FILE_BYTES);
    if len_bytes < SLOT_MINOR0_BYTES || (whole && len_bytes < EPOCH_FILE_MIN_BYTES) {
        return Err(missing()); // Missing
    }
    let mut bytes = vec![0u8; len_bytes];
    file.read_at(&mut bytes, 0)
        .context(|| format!("reading {}", path.display()))?;
    let minor0_file = len_bytes < SLOT_OFFSETS[1] + SLOT_MINOR0_BYTES;
    let slots: Vec<Slot> = SLOT_OFFSETS
        .iter()
        .filter(|&&at| at < len_bytes)
        .map(|&at| decode_slot(&bytes[at..len_bytes.min(at + SLOT_BYTES)]))
        .collect();
    if let Some(other) = slots.iter().find_map(|s| match s {
        Slot::Valid { store_id: Some(id), .. } if *id != store_id => Some(*id),
        _ => None,
    }) {
        // Foreign
        return Err(Error::corrupted_file(
            &path,
            format!("the epoch file belongs to store {other:016x}, not this one ({store_id:016x})"),
        ));
    }
    let valid: Vec<(u32, Option<u64>)> = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Valid { epoch, horizon, .. } => Some((*epoch, *horizon)),
            Slot::Invalid => None,
        })
        .collect();
    // Both slots valid, each with a horizon: the higher bounds every write.
    let horizon = match valid[..] {
        [(_, Some(a)), (_, Some(b))] => Some(a.max(b)),
        _ => None,
    };
    let highest = valid.iter().map(|&(epoch, _)| epoch).max();
    let epoch = match (highest, valid.len() == 2 || minor0_file) {
        (Some(epoch), true) => epoch,                    // Both (or a minor-0 file)
        (Some(epoch), false) => epoch.saturating_add(1), // One
        (None, _) if mode == RecoveryMode::SkipCorrupted => 0,
        (None, _) => return Err(Error::corrupted_file(&path, "both copies of the epoch are damaged")),
    };
    Ok(InUse { epoch, horizon })
}

/// Writes and syncs `epoch` and `horizon` into both slots, one after the other (creating the
/// file if it is missing: a new log).
pub fn write(storage: &dyn Storage, dir: &Path, epoch: u32, store_id: u64, horizon: u64) -> Result<()> {
    let path = dir.join(EPOCH_FILE_NAME);
    let (file, created) = match storage.open(&path, false) {
        Ok(file) => (file, false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            storage
                .open(&path, true)
                .context(|| format!("creating {}", path.display()))?,
            true,
        ),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let slot = encode_slot(epoch, store_id, horizon);
    for at in SLOT_OFFSETS {
        file.write_at(&slot, at as u64)
            .context(|| format!("writing {}", path.display()))?;
        file.sync_data().context(|| format!("syncing {}", path.display()))?;
    }
    if created {
        storage
            .sync_dir(dir)
            .context(|| format!("syncing directory {}", dir.display()))?;
    }
    Ok(())
}

/// Moves the horizon of `epoch` (already durable in both slots) to `horizon`: writes slot
/// `slot` (0 or 1; the caller takes them in turn, so the other keeps the last horizon) and
/// syncs it.
///
/// A file deleted while the log is open (a cleanup of files it did not know) is made again
/// with both slots at `horizon`, as an open makes it: without it the store would not open
/// again.
pub fn write_horizon(storage: &dyn Storage, dir: &Path, slot: usize, epoch: u32, store_id: u64, horizon: u64) -> Result<()> {
    let path = dir.join(EPOCH_FILE_NAME);
    let file = match storage.open(&path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return write(storage, dir, epoch, store_id, horizon),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    file.write_at(&encode_slot(epoch, store_id, horizon), SLOT_OFFSETS[slot] as u64)
        .context(|| format!("writing {}", path.display()))?;
    file.sync_data().context(|| format!("syncing {}", path.display()))
}

/// The bytes of an epoch file copied from elsewhere (a restore's staged log: a bucket's copy,
/// uploaded at some earlier time, or a live store's) with every horizon erased: the copied
/// segments may hold pages its writer wrote after that horizon, and a slot without one bounds
/// nothing (the scan reads to the limit, as for a file of format 2.2).
pub fn without_horizon(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for at in SLOT_OFFSETS {
        if let Some(extension) = out.get_mut(at + SLOT_MINOR1_BYTES..at + SLOT_BYTES) {
            extension.fill(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;

    const STORE: u64 = 0xABCD;

    fn setup(epoch: u32) -> (SimStorage, &'static Path) {
        let sim = SimStorage::new(3);
        let dir = Path::new("/wal");
        sim.create_dir_all(dir).unwrap();
        write(&sim, dir, epoch, STORE, 1 << 20).unwrap();
        (sim, dir)
    }

    #[test]
    fn one_damaged_slot_never_loses_the_epoch_and_counts_one_more() {
        let (sim, dir) = setup(41);
        assert_eq!(
            read(open_ahead(&sim, dir), dir, STORE, RecoveryMode::Strict, false).unwrap().epoch,
            41,
            "both copies agree"
        );
        for at in [5u64, 512 + 5, 512 + 20] {
            let (sim, dir) = setup(41);
            sim.damage(&dir.join(EPOCH_FILE_NAME), at, &[0xFF]).unwrap();
            assert_eq!(
                read(open_ahead(&sim, dir), dir, STORE, RecoveryMode::Strict, false).unwrap().epoch,
                42,
                "a flipped byte at {at}: the other copy holds, and the damaged one may have held the next epoch"
            );
        }
        sim.damage(&dir.join(EPOCH_FILE_NAME), 5, &[0xFF]).unwrap();
        sim.damage(&dir.join(EPOCH_FILE_NAME), 512 + 5, &[0xFF]).unwrap();
        let error = read(open_ahead(&sim, dir), dir, STORE, RecoveryMode::TolerateTornTail, false).unwrap_err();
        assert!(
            matches!(error, Error::Corrupted { .. }),
            "both copies gone is damage: {error}"
        );
        assert_eq!(read(open_ahead(&sim, dir), dir, STORE, RecoveryMode::SkipCorrupted, false).unwrap().epoch, 0);
    }

    #[test]
    fn a_missing_short_or_foreign_epoch_file_is_damage() {
        let (sim, dir) = setup(7);
        let error = read(open_ahead(&sim, dir), dir, STORE + 1, RecoveryMode::SkipCorrupted, false).unwrap_err();
        assert!(
            matches!(&error, Error::Corrupted { reason, .. } if reason.contains("belongs to store")),
            "another store's epoch file: {error}"
        );
        sim.truncate_durably(&dir.join(EPOCH_FILE_NAME), 300).unwrap();
        let error = read(open_ahead(&sim, dir), dir, STORE, RecoveryMode::SkipCorrupted, true).unwrap_err();
        assert!(
            matches!(error, Error::Corrupted { .. }),
            "a file of minor 1 cut short: {error}"
        );
        sim.truncate_durably(&dir.join(EPOCH_FILE_NAME), 10).unwrap();
        let error = read(open_ahead(&sim, dir), dir, STORE, RecoveryMode::SkipCorrupted, false).unwrap_err();
        assert!(matches!(error, Error::Corrupted { .. }), "a truncated file: {error}");
        sim.remove_file(&dir.join(EPOCH_FILE_NAME)).unwrap();
        let error = read(open_ahead(&sim, dir), dir, STORE, RecoveryMode::SkipCorrupted, false).unwrap_err();
        assert!(matches!(error, Error::Corrupted { .. }), "a missing file: {error}");
    }

    #[test]
    fn a_minor_0_file_of_one_short_slot_is_read() {
        let sim = SimStorage::new(3);
        let dir = Path::new("/wal");
        sim.create_dir_all(dir).unwrap();
        let slot = encode_slot(9, STORE, 0);
        sim.open(&dir.join(EPOCH_FILE_NAME), true)
            .unwrap()
            .write_at(&slot[..SLOT_MINOR0_BYTES], 0)
            .unwrap();
        assert_eq!(read(open_ahead(&sim, dir), dir, STORE, RecoveryMode::Strict, false).unwrap().epoch, 9);
    }

    #[test]
    fn the_horizon_is_the_higher_of_two_valid_slots_and_none_if_either_is_damaged() {
        let (sim, dir) = setup(5);
        let read_in_use = |sim: &SimStorage| read(open_ahead(sim, dir), dir, STORE, RecoveryMode::Strict, true).unwrap();
        assert_eq!(read_in_use(&sim), InUse { epoch: 5, horizon: Some(1 << 20) });
        write_horizon(&sim, dir, 0, 5, STORE, 3 << 20).unwrap();
        assert_eq!(read_in_use(&sim).horizon, Some(3 << 20), "the slot moved last holds the higher");
        write_horizon(&sim, dir, 1, 5, STORE, 5 << 20).unwrap();
        assert_eq!(read_in_use(&sim).horizon, Some(5 << 20));
        sim.damage(&dir.join(EPOCH_FILE_NAME), 512 + 33, &[0xFF]).unwrap();
        assert_eq!(
            read_in_use(&sim),
            InUse { epoch: 6, horizon: None },
            "a damaged slot may have held a later horizon: no bound, and the epoch counts one more"
        );
    }

    #[test]
    fn a_copied_file_keeps_its_epoch_and_loses_its_horizon() {
        let (sim, dir) = setup(8);
        let path = dir.join(EPOCH_FILE_NAME);
        let mut bytes = vec![0u8; EPOCH_FILE_BYTES];
        sim.open(&path, false).unwrap().read_at(&mut bytes, 0).unwrap();
        sim.open(&path, false).unwrap().write_at(&without_horizon(&bytes), 0).unwrap();
        assert_eq!(
            read(open_ahead(&sim, dir), dir, STORE, RecoveryMode::Strict, true).unwrap(),
            InUse { epoch: 8, horizon: None },
            "both slots valid, the same epoch, no bound"
        );
    }

    #[test]
    fn a_minor_1_file_of_32_byte_slots_has_no_horizon() {
        let sim = SimStorage::new(3);
        let dir = Path::new("/wal");
        sim.create_dir_all(dir).unwrap();
        let file = sim.open(&dir.join(EPOCH_FILE_NAME), true).unwrap();
        let slot = encode_slot(4, STORE, 0);
        for at in SLOT_OFFSETS {
            file.write_at(&slot[..SLOT_MINOR1_BYTES], at as u64).unwrap();
        }
        assert_eq!(
            read(open_ahead(&sim, dir), dir, STORE, RecoveryMode::Strict, true).unwrap(),
            InUse { epoch: 4, horizon: None },
            "a 544-byte file of format minor 1 is whole, and proves no horizon"
        );
    }
}
