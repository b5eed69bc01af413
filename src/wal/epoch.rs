//! The log epoch file (`wal/EPOCH`): the number of the current open of the log.
//!
//! Every page header and record carries the epoch of the open that wrote it, and epochs never
//! decrease along the log. Each open writes a new, higher epoch here (and syncs it) before it
//! appends anything, so bytes a crashed run left beyond the end of the log (older epochs) can
//! never be read as live, however a later run's records happen to line up with them.
//!
//! 16 bytes, written in one piece (within one sector, so atomically):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `VEPC` |
//! | 4 | 4 | epoch |
//! | 8 | 4 | CRC32C of bytes 0..8 |
//! | 12 | 4 | reserved, zero |

use std::path::Path;

use crate::error::{IoContext, Result};
use crate::storage::Storage;
use crate::{Error, RecoveryMode};

pub const EPOCH_FILE_NAME: &str = "EPOCH";
const EPOCH_MAGIC: [u8; 4] = *b"VEPC";
const EPOCH_FILE_BYTES: usize = 16;

/// The stored epoch (0 if the file does not exist yet).
pub fn read(storage: &dyn Storage, dir: &Path, mode: RecoveryMode) -> Result<u32> {
    let path = dir.join(EPOCH_FILE_NAME);
    let file = match storage.open(&path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let mut bytes = [0u8; EPOCH_FILE_BYTES];
    let read = match file.read_at(&mut bytes, 0) {
        // A short file (a torn creation) is damage, judged below; a failed read is not.
        Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
            return Err(Error::io(format!("reading {}", path.display()), e));
        }
        read => read,
    };
    let valid = read.is_ok()
        && bytes[..4] == EPOCH_MAGIC
        && crc32c::crc32c(&bytes[..8]).to_le_bytes() == bytes[8..12]
        && bytes[12..] == [0; 4];
    if valid {
        return Ok(u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")));
    }
    if mode == RecoveryMode::SkipCorrupted {
        // The scan's highest epoch stands in; only a crashed run's unseen bytes could outrank it.
        return Ok(0);
    }
    Err(Error::corrupted_file(path, "the epoch file is damaged"))
}

/// Writes and syncs `epoch`.
pub fn write(storage: &dyn Storage, dir: &Path, epoch: u32) -> Result<()> {
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
    let mut bytes = [0u8; EPOCH_FILE_BYTES];
    bytes[..4].copy_from_slice(&EPOCH_MAGIC);
    bytes[4..8].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..8]);
    bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    file.write_at(&bytes, 0)
        .context(|| format!("writing {}", path.display()))?;
    file.sync_data().context(|| format!("syncing {}", path.display()))?;
    if created {
        storage
            .sync_dir(dir)
            .context(|| format!("syncing directory {}", dir.display()))?;
    }
    Ok(())
}
