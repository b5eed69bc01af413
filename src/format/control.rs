//! The control file (`CONTROL`): the store's fixed parameters and where its last complete
//! checkpoint is, like PostgreSQL's pg_control.
//!
//! Two 512-byte copies (slots) at offsets 0 and 512, each with its own CRC32C and sequence
//! number. An update writes the slot the older copy is in and syncs, so a torn write (a sector
//! is the unit of atomicity) can only damage that one slot: the other remains valid. The valid
//! slot with the highest sequence number is the control data.

use std::path::Path;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::wal::Geometry;
use super::{FORMAT_VERSION_MAJOR, FORMAT_VERSION_MINOR};
use crate::error::Result;
use crate::{Error, Lsn};

/// Name of the control file in the store directory.
pub const CONTROL_FILE_NAME: &str = "CONTROL";
/// The magic bytes that open each control slot.
pub const CONTROL_MAGIC: [u8; 8] = *b"VLMCTRL\n";
/// Size of one copy ([`ControlSlot`]) in bytes.
pub const CONTROL_SLOT_BYTES: usize = 512;
/// Size of the control file in bytes: two slots.
pub const CONTROL_FILE_BYTES: u64 = 2 * CONTROL_SLOT_BYTES as u64;

/// One copy of the control data.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `VLMCTRL\n` |
/// | 8 | 2 | format version major |
/// | 10 | 2 | format version minor |
/// | 12 | 4 | page size in bytes |
/// | 16 | 8 | segment size in bytes (WAL segments and arena files) |
/// | 24 | 4 | dimension |
/// | 28 | 4 | timeline |
/// | 32 | 8 | store id |
/// | 40 | 8 | sequence number of this copy |
/// | 48 | 8 | LSN of the last complete checkpoint's begin record (0: none) |
/// | 56 | 8 | LSN of that checkpoint's end record |
/// | 64 | 8 | redo LSN: recovery starts its analysis here |
/// | 72 | 8 | next transaction id at that checkpoint |
/// | 80 | 8 | store creation time, µs since the Unix epoch |
/// | 88 | 8 | checkpoint time, µs since the Unix epoch |
/// | 96 | 8 | log truncation LSN: segments wholly below it may be released |
/// | 104 | 8 | minor ≥ 1: catalog pages initialised at that checkpoint (every one below it) |
/// | 112 | 8 | minor ≥ 1: vector pages initialised at that checkpoint |
/// | 120 | 4 | minor ≥ 1: arena files of the catalog space at that checkpoint |
/// | 124 | 4 | minor ≥ 1: arena files of the vector space at that checkpoint |
/// | 128 | 380 | reserved, zero |
/// | 508 | 4 | CRC32C of bytes 0..508 |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ControlSlot {
    /// [`CONTROL_MAGIC`].
    pub magic: [u8; 8],
    /// Format version major.
    pub version_major: U16,
    /// Format version minor.
    pub version_minor: U16,
    /// Page size in bytes (log pages and arena pages).
    pub page_size_bytes: U32,
    /// Segment size in bytes (WAL segments and arena files).
    pub segment_size_bytes: U64,
    /// Components of every vector.
    pub dimension: U32,
    /// Timeline of the log: 1 for a new store, the source's plus 1 for a restored copy.
    pub timeline: U32,
    /// Random id of the store, chosen at creation (a restored copy keeps its source's).
    pub store_id: U64,
    /// Sequence number of this copy: the valid slot with the highest one is in force.
    pub sequence: U64,
    /// LSN of the last complete checkpoint's begin record (0: none).
    pub checkpoint_lsn: U64,
    /// LSN of that checkpoint's end record.
    pub checkpoint_end_lsn: U64,
    /// Redo LSN: recovery starts its analysis here.
    pub redo_lsn: U64,
    /// Next transaction id at that checkpoint.
    pub next_txn_id: U64,
    /// Store creation time, µs since the Unix epoch.
    pub created_us: U64,
    /// Checkpoint time, µs since the Unix epoch.
    pub checkpoint_us: U64,
    /// Log truncation LSN: segments wholly below it may be released.
    pub truncate_lsn: U64,
    /// Minor ≥ 1: catalog pages initialised at that checkpoint (every one below it).
    pub catalog_pages: U64,
    /// Minor ≥ 1: vector pages initialised at that checkpoint.
    pub vector_pages: U64,
    /// Minor ≥ 1: arena files of the catalog space at that checkpoint.
    pub catalog_files: U32,
    /// Minor ≥ 1: arena files of the vector space at that checkpoint.
    pub vector_files: U32,
    /// Reserved, zero.
    pub reserved: [u8; 380],
    /// CRC32C of bytes 0..508.
    pub crc: U32,
}

/// Offset of the checksum in a slot.
pub const CONTROL_CRC_OFFSET: usize = CONTROL_SLOT_BYTES - 4;
const _: () = assert!(size_of::<ControlSlot>() == CONTROL_SLOT_BYTES);
const _: () = assert!(std::mem::offset_of!(ControlSlot, crc) == CONTROL_CRC_OFFSET);
const _: () = assert!(std::mem::offset_of!(ControlSlot, truncate_lsn) == 96);
const _: () = assert!(std::mem::offset_of!(ControlSlot, catalog_pages) == 104);
const _: () = assert!(std::mem::offset_of!(ControlSlot, vector_files) == 124);

/// What the arena held at a checkpoint: how many files each page space had, and how many of its
/// pages had been initialised (pages are initialised in page-number order, so every page below
/// the count is in use). A store must hold at least these files, and these pages must never
/// read as zero: a missing, short or emptied file is damage, not an empty store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaExtent {
    /// By [`crate::format::page::Space::index`]: catalog, vector.
    pub pages: [u64; 2],
    /// Arena files of each space, by [`crate::format::page::Space::index`]: catalog, vector.
    pub files: [u32; 2],
}

/// The control data in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    /// Page size in bytes (log pages and arena pages).
    pub page_size_bytes: u32,
    /// Segment size in bytes (WAL segments and arena files).
    pub segment_size_bytes: u64,
    /// Components of every vector.
    pub dimension: u32,
    /// Timeline of the log: 1 for a new store, the source's plus 1 for a restored copy.
    pub timeline: u32,
    /// Random id of the store, chosen at creation (a restored copy keeps its source's).
    pub store_id: u64,
    /// Sequence number of this copy: the valid slot with the highest one is in force.
    pub sequence: u64,
    /// LSN of the last complete checkpoint's begin record (0: none).
    pub checkpoint_lsn: Lsn,
    /// LSN of that checkpoint's end record.
    pub checkpoint_end_lsn: Lsn,
    /// Redo LSN: recovery starts its analysis here.
    pub redo_lsn: Lsn,
    /// Next transaction id at that checkpoint.
    pub next_txn_id: u64,
    /// Store creation time, µs since the Unix epoch.
    pub created_us: u64,
    /// Checkpoint time, µs since the Unix epoch.
    pub checkpoint_us: u64,
    /// Log truncation LSN: segments wholly below it may be released.
    pub truncate_lsn: Lsn,
    /// The arena at the checkpoint in force; `None` in a control file of minor version 0,
    /// which did not record it.
    pub extent: Option<ArenaExtent>,
}

impl Control {
    /// Encodes one slot.
    pub fn to_slot(&self) -> ControlSlot {
        let mut slot = ControlSlot {
            magic: CONTROL_MAGIC,
            version_major: U16::new(FORMAT_VERSION_MAJOR),
            version_minor: U16::new(FORMAT_VERSION_MINOR),
            page_size_bytes: U32::new(self.page_size_bytes),
            segment_size_bytes: U64::new(self.segment_size_bytes),
            dimension: U32::new(self.dimension),
            timeline: U32::new(self.timeline),
            store_id: U64::new(self.store_id),
            sequence: U64::new(self.sequence),
            checkpoint_lsn: U64::new(self.checkpoint_lsn.0),
            checkpoint_end_lsn: U64::new(self.checkpoint_end_lsn.0),
            redo_lsn: U64::new(self.redo_lsn.0),
            next_txn_id: U64::new(self.next_txn_id),
            created_us: U64::new(self.created_us),
            checkpoint_us: U64::new(self.checkpoint_us),
            truncate_lsn: U64::new(self.truncate_lsn.0),
            catalog_pages: U64::ZERO,
            vector_pages: U64::ZERO,
            catalog_files: U32::ZERO,
            vector_files: U32::ZERO,
            reserved: [0; 380],
            crc: U32::ZERO,
        };
        match self.extent {
            Some(extent) => {
                slot.catalog_pages = U64::new(extent.pages[0]);
                slot.vector_pages = U64::new(extent.pages[1]);
                slot.catalog_files = U32::new(extent.files[0]);
                slot.vector_files = U32::new(extent.files[1]);
            }
            // A control file without the extent is what a writer of minor version 0 wrote
            // (tests and the golden vectors rebuild such copies byte for byte).
            None => slot.version_minor = U16::ZERO,
        }
        slot.crc = U32::new(crc32c::crc32c(&slot.as_bytes()[..CONTROL_CRC_OFFSET]));
        slot
    }

    /// Decodes one slot: `Err(reason)` if it is not a valid copy.
    pub fn from_slot(bytes: &[u8]) -> std::result::Result<Control, String> {
        let slot = ControlSlot::read_from_bytes(bytes).map_err(|_| "control slot has the wrong size".to_string())?;
        if slot.magic != CONTROL_MAGIC {
            return Err("bad control magic".into());
        }
        if crc32c::crc32c(&slot.as_bytes()[..CONTROL_CRC_OFFSET]) != slot.crc.get() {
            return Err("control checksum mismatch".into());
        }
        if slot.version_major.get() != FORMAT_VERSION_MAJOR {
            return Err(version_reason(slot.version_major.get()));
        }
        Ok(Control {
            page_size_bytes: slot.page_size_bytes.get(),
            segment_size_bytes: slot.segment_size_bytes.get(),
            dimension: slot.dimension.get(),
            timeline: slot.timeline.get(),
            store_id: slot.store_id.get(),
            sequence: slot.sequence.get(),
            checkpoint_lsn: Lsn(slot.checkpoint_lsn.get()),
            checkpoint_end_lsn: Lsn(slot.checkpoint_end_lsn.get()),
            redo_lsn: Lsn(slot.redo_lsn.get()),
            next_txn_id: slot.next_txn_id.get(),
            created_us: slot.created_us.get(),
            checkpoint_us: slot.checkpoint_us.get(),
            truncate_lsn: Lsn(slot.truncate_lsn.get()),
            extent: (slot.version_minor.get() >= 1).then(|| ArenaExtent {
                pages: [slot.catalog_pages.get(), slot.vector_pages.get()],
                files: [slot.catalog_files.get(), slot.vector_files.get()],
            }),
        })
    }

    /// The newest valid copy among the two slots in `bytes`.
    pub fn newest(path: &Path, bytes: &[u8]) -> Result<Control> {
        let slots = [
            Control::from_slot(&bytes[..CONTROL_SLOT_BYTES]),
            Control::from_slot(&bytes[CONTROL_SLOT_BYTES..2 * CONTROL_SLOT_BYTES]),
        ];
        // A well-formed copy of a newer major version: this build must neither read the store
        // from the older copy beside it nor change it.
        if let Some(Err(reason)) = slots
            .iter()
            .find(|s| matches!(s, Err(r) if r.starts_with("format version")))
        {
            return Err(Error::Incompatible(format!("{}: {reason}", path.display())));
        }
        let control = match slots {
            [Ok(a), Ok(b)] => {
                if a.sequence >= b.sequence {
                    a
                } else {
                    b
                }
            }
            [Ok(a), Err(_)] => a,
            [Err(_), Ok(b)] => b,
            [Err(a), Err(b)] => {
                return Err(Error::corrupted_file(
                    path,
                    format!("both control copies are invalid ({a}; {b})"),
                ));
            }
        };
        // An intact copy whose geometry breaks the format's rules (a buggy or foreign writer)
        // describes no store this build can read: damage, refused before anything is sized
        // from it.
        Geometry::new(control.page_size_bytes, control.segment_size_bytes)
            .map_err(|reason| Error::corrupted_file(path, format!("control data in force: {reason}")))?;
        Ok(control)
    }
}

/// Why a control slot of format `major` is refused, and what to do (starts "format version").
fn version_reason(major: u16) -> String {
    if major > FORMAT_VERSION_MAJOR {
        return format!(
            "format version {major} (this build reads {FORMAT_VERSION_MAJOR}): a newer Vellum wrote it; open it with that release or a later one"
        );
    }
    if major == 3 {
        return format!(
            "format version 3 (this build reads {FORMAT_VERSION_MAJOR}): its log has no stored \
             writes and this build does not change a store's format in place; with the release \
             that wrote it, `vellum export <DIR> > records.jsonl`, then with this build \
             `vellum create` a store and `vellum import` the file into it (bit for bit)"
        );
    }
    if major == 2 {
        return format!(
            "format version 2 (this build reads {FORMAT_VERSION_MAJOR}): the store's id index has \
             the node layout of format 2.x and this build does not change it in place; with the \
             release that wrote it, `vellum export <DIR> > records.jsonl`, then with this build \
             `vellum create` a store and `vellum import` the file into it (bit for bit)"
        );
    }
    format!(
        "format version {major} (this build reads {FORMAT_VERSION_MAJOR}): the store predates the \
         paged id index and this build does not change it in place; with the release that wrote \
         it, read every vector out (`Store::get`, `vellum get`) and import them into a store \
         this build creates (`vellum create`, `vellum import`); `vellum export` of later \
         releases does this in one step"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Control {
        Control {
            page_size_bytes: 16384,
            segment_size_bytes: 1 << 26,
            dimension: 384,
            timeline: 1,
            store_id: 99,
            sequence: 4,
            checkpoint_lsn: Lsn(1000),
            checkpoint_end_lsn: Lsn(1100),
            redo_lsn: Lsn(1000),
            next_txn_id: 7,
            created_us: 1,
            checkpoint_us: 2,
            truncate_lsn: Lsn(900),
            extent: Some(ArenaExtent {
                pages: [3, 70],
                files: [1, 2],
            }),
        }
    }

    #[test]
    fn an_intact_copy_with_an_impossible_geometry_is_damage() {
        let mut control = sample();
        control.page_size_bytes = 4100;
        let mut bytes = vec![0u8; CONTROL_FILE_BYTES as usize];
        bytes[..512].copy_from_slice(control.to_slot().as_bytes());
        let error = Control::newest(Path::new("c"), &bytes).unwrap_err();
        assert!(
            matches!(error, Error::Corrupted { .. }),
            "a page size that is not a power of two is damage, not an argument error: {error}"
        );
    }

    #[test]
    fn torn_newer_slot_leaves_the_older_copy_in_force() {
        let older = sample();
        let mut newer = sample();
        newer.sequence = 5;
        newer.checkpoint_lsn = Lsn(2000);
        let mut bytes = vec![0u8; CONTROL_FILE_BYTES as usize];
        bytes[..512].copy_from_slice(older.to_slot().as_bytes());
        bytes[512..].copy_from_slice(newer.to_slot().as_bytes());
        assert_eq!(
            Control::newest(Path::new("c"), &bytes).unwrap(),
            newer,
            "the newest valid copy wins"
        );
        bytes[700] ^= 0xff;
        assert_eq!(
            Control::newest(Path::new("c"), &bytes).unwrap(),
            older,
            "a torn newer copy falls back"
        );
        let mut newer_version = bytes.clone();
        let mut future = newer.to_slot();
        future.version_major = U16::new(FORMAT_VERSION_MAJOR + 1);
        future.crc = U32::new(crc32c::crc32c(&future.as_bytes()[..CONTROL_CRC_OFFSET]));
        newer_version[512..].copy_from_slice(future.as_bytes());
        let error = Control::newest(Path::new("c"), &newer_version).unwrap_err();
        assert!(
            matches!(error, Error::Incompatible(_)),
            "a newer major version is refused, not skipped: {error}"
        );
        let mut older_version = vec![0u8; CONTROL_FILE_BYTES as usize];
        let mut past = newer.to_slot();
        past.version_major = U16::new(FORMAT_VERSION_MAJOR - 1);
        past.crc = U32::new(crc32c::crc32c(&past.as_bytes()[..CONTROL_CRC_OFFSET]));
        older_version[..512].copy_from_slice(past.as_bytes());
        older_version[512..].copy_from_slice(past.as_bytes());
        let error = Control::newest(Path::new("c"), &older_version).unwrap_err();
        assert!(
            matches!(&error, Error::Incompatible(why) if why.contains("import")),
            "a store of the previous major version is refused, saying what to do: {error}"
        );
        bytes[100] ^= 0xff;
        let error = Control::newest(Path::new("c"), &bytes).unwrap_err();
        assert!(
            matches!(error, Error::Corrupted { .. }),
            "both copies bad is damage: {error}"
        );
    }
}

#[cfg(test)]
mod extent_tests {
    use super::*;

    #[test]
    fn the_arena_extent_round_trips_and_a_minor_0_copy_has_none() {
        let mut control = tests_sample();
        let decoded = Control::from_slot(control.to_slot().as_bytes()).unwrap();
        assert_eq!(decoded, control, "minor 1 keeps the extent");
        control.extent = None;
        let slot = control.to_slot();
        assert_eq!(slot.version_minor.get(), 0, "no extent is what minor 0 wrote");
        assert_eq!(Control::from_slot(slot.as_bytes()).unwrap().extent, None);
    }

    fn tests_sample() -> Control {
        Control {
            page_size_bytes: 4096,
            segment_size_bytes: 1 << 20,
            dimension: 8,
            timeline: 2,
            store_id: 5,
            sequence: 9,
            checkpoint_lsn: Lsn(8192),
            checkpoint_end_lsn: Lsn(8300),
            redo_lsn: Lsn(8192),
            next_txn_id: 3,
            created_us: 1,
            checkpoint_us: 2,
            truncate_lsn: Lsn(4096),
            extent: Some(ArenaExtent {
                pages: [7, 9000],
                files: [1, 3],
            }),
        }
    }
}
