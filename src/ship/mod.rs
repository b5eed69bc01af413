//! Shipping the archive to object storage, restoring from it and following it (feature
//! `object-store`; format-spec/FORMAT.md, "Remote archives").
//!
//! - `remote`: one bucket prefix behind the `object_store` crate, with blocking calls.
//! - the store's shipper (`store/shipper.rs`) uploads every archive file, and pieces of the live
//!   log after `archive_timeout`, never blocking a commit; `restore_remote` downloads what a
//!   restore or a replica needs, checking the chain of log for gaps.
//!
//! This module knows the remote layout and the settings keys, and nothing of a store.
//!
//! Remote layout, under the URL's prefix, one directory per history (a **generation**: the
//! store id and timeline, so a restored copy that ships never overwrites its source):
//!
//! ```text
//! <prefix>/<store_id:016x>-<timeline:08x>/LEASE         who ships here (host and directory)
//! <prefix>/<store_id:016x>-<timeline:08x>/CONTROL       the store's control file, as written
//! <prefix>/<store_id:016x>-<timeline:08x>/EPOCH         its wal/EPOCH, as written
//! <prefix>/<store_id:016x>-<timeline:08x>/base-<B>.lz4  base images, as in archive/
//! <prefix>/<store_id:016x>-<timeline:08x>/wal-<n>.lz4   archived segments, as in archive/
//! <prefix>/<store_id:016x>-<timeline:08x>/part-<n>-<from>-<to>.lz4   log bytes [from, to) of
//!                                                       segment n, still live when shipped
//! ```

// Without the feature only the settings keys and `is_url` are used (to refuse a shipping
// store this build cannot serve); the layout waits for the feature.
#![cfg_attr(not(feature = "object-store"), allow(dead_code))]

#[cfg(feature = "object-store")]
pub mod remote;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Error, Result};

#[cfg(feature = "object-store")]
pub use remote::Remote;

/// The settings key of the archive URL (`SETTINGS`).
pub const ARCHIVE_URL: &str = "archive_url";
/// The settings key of the archive timeout, in milliseconds.
pub const ARCHIVE_TIMEOUT: &str = "archive_timeout";
/// The settings key that marks a directory as a replica (its value: the URL it follows).
pub const REPLICA_OF: &str = "replica_of";
/// The archive timeout where none is set.
pub const ARCHIVE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// True if `text` looks like a URL of a remote archive (`scheme://…`), not a path.
pub fn is_url(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '+')
}

/// An archive timeout in whole milliseconds, at least 1.
pub fn timeout_ms(timeout: Duration) -> Result<u64> {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(Error::InvalidArgument(
            "the archive timeout must be at least 1 ms".into(),
        ));
    }
    Ok(ms)
}

/// Parses an archive timeout as the settings store it (milliseconds).
pub fn parse_timeout_ms(text: &str) -> Result<Duration> {
    text.parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            Error::corrupted_file(
                "SETTINGS",
                format!("{ARCHIVE_TIMEOUT}: {text:?} is not a positive number of milliseconds"),
            )
        })
}

/// The name of the lease object in a generation.
pub const LEASE: &str = "LEASE";
/// The store's control file, shipped as written.
pub const CONTROL: &str = "CONTROL";
/// The store's `wal/EPOCH`, shipped as written.
pub const EPOCH: &str = "EPOCH";

/// The directory of the history of store `store_id` on `timeline`.
pub fn generation_name(store_id: u64, timeline: u32) -> String {
    format!("{store_id:016x}-{timeline:08x}")
}

/// The name of a piece of live segment `segment_no`: its log bytes `[from, to)`.
pub fn piece_name(segment_no: u64, from: u64, to: u64) -> String {
    format!("part-{segment_no:016x}-{from:016x}-{to:016x}.lz4")
}

/// What an object of a generation is, by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Lease,
    Control,
    Epoch,
    Base(u64),
    Segment(u64),
    Piece { segment_no: u64, from: u64, to: u64 },
}

fn hex16(text: &str) -> Option<u64> {
    let canonical = text.len() == 16 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    canonical.then(|| u64::from_str_radix(text, 16).ok()).flatten()
}

/// Parses the name of an object inside a generation (`None`: not part of the remote archive).
pub fn parse_object_name(name: &str) -> Option<ObjectKind> {
    match name {
        LEASE => return Some(ObjectKind::Lease),
        CONTROL => return Some(ObjectKind::Control),
        EPOCH => return Some(ObjectKind::Epoch),
        _ => {}
    }
    let stem = name.strip_suffix(".lz4")?;
    if let Some(hex) = stem.strip_prefix("base-") {
        return hex16(hex).map(ObjectKind::Base);
    }
    if let Some(hex) = stem.strip_prefix("wal-") {
        return hex16(hex).map(ObjectKind::Segment);
    }
    let rest = stem.strip_prefix("part-")?;
    let mut parts = rest.split('-');
    let (segment_no, from, to) = (hex16(parts.next()?)?, hex16(parts.next()?)?, hex16(parts.next()?)?);
    (parts.next().is_none() && from < to).then_some(ObjectKind::Piece { segment_no, from, to })
}

/// The archive objects of one generation, by kind.
#[derive(Clone, Debug, Default)]
pub struct Generation {
    pub name: String,
    pub bases: BTreeMap<u64, String>,
    pub segments: BTreeMap<u64, String>,
    /// Pieces by segment: `(from, to, object name)`, sorted.
    pub pieces: BTreeMap<u64, Vec<(u64, u64, String)>>,
    pub has_control: bool,
    pub has_epoch: bool,
    pub newest_modified: Option<std::time::SystemTime>,
}

impl Generation {
    /// Sorts the objects `names` (relative to the generation) into a generation.
    pub fn from_names<'a>(name: &str, names: impl IntoIterator<Item = &'a str>) -> Generation {
        let mut generation = Generation {
            name: name.to_string(),
            ..Generation::default()
        };
        for object in names {
            match parse_object_name(object) {
                Some(ObjectKind::Base(lsn)) => {
                    generation.bases.insert(lsn, object.to_string());
                }
                Some(ObjectKind::Segment(n)) => {
                    generation.segments.insert(n, object.to_string());
                }
                Some(ObjectKind::Piece { segment_no, from, to }) => {
                    generation
                        .pieces
                        .entry(segment_no)
                        .or_default()
                        .push((from, to, object.to_string()));
                }
                Some(ObjectKind::Control) => generation.has_control = true,
                Some(ObjectKind::Epoch) => generation.has_epoch = true,
                Some(ObjectKind::Lease) | None => {}
            }
        }
        for pieces in generation.pieces.values_mut() {
            pieces.sort();
        }
        generation
    }

    /// The pieces that cover live segment `segment_no` from its start without a gap, in order
    /// (each starts at or before the end of the one before and reaches further), and the end of
    /// what they cover. Later pieces overwrite the bytes they share with earlier ones (at most
    /// the page a piece began in, which the writer may have rewritten).
    pub fn piece_chain(&self, segment_no: u64, segment_bytes: u64) -> (Vec<(u64, u64, String)>, u64) {
        let base = segment_no.saturating_mul(segment_bytes);
        let mut end = base;
        let mut chain = Vec::new();
        let pieces = self.pieces.get(&segment_no).map(Vec::as_slice).unwrap_or(&[]);
        loop {
            let next = pieces
                .iter()
                .filter(|(from, to, _)| *from <= end && *to > end)
                .max_by_key(|(_, to, _)| *to);
            match next {
                Some(piece) => {
                    end = piece.1;
                    chain.push(piece.clone());
                }
                None => return (chain, end),
            }
        }
    }

    /// How far the log is here without a gap from segment `first`: the end of the last segment
    /// (whole, or its piece chain) reached, and the segments in order. Stops at the first
    /// segment with neither a whole copy nor a piece starting at its beginning, or after a
    /// segment covered only in part.
    pub fn log_chain(&self, first: u64, segment_bytes: u64) -> (u64, Vec<u64>) {
        let mut end = first.saturating_mul(segment_bytes);
        let mut numbers = Vec::new();
        let mut n = first;
        loop {
            if self.segments.contains_key(&n) {
                numbers.push(n);
                end = (n + 1).saturating_mul(segment_bytes);
                n += 1;
                continue;
            }
            let (chain, chain_end) = self.piece_chain(n, segment_bytes);
            if !chain.is_empty() {
                numbers.push(n);
                end = chain_end;
                if chain_end == (n + 1).saturating_mul(segment_bytes) {
                    n += 1;
                    continue;
                }
            }
            return (end, numbers);
        }
    }

    /// The highest segment number any object of this generation holds log of.
    pub fn last_segment(&self) -> Option<u64> {
        let whole = self.segments.keys().next_back().copied();
        let pieces = self.pieces.keys().next_back().copied();
        whole.max(pieces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_round_trip_and_strangers_are_ignored() {
        assert_eq!(
            parse_object_name("wal-000000000000001a.lz4"),
            Some(ObjectKind::Segment(26))
        );
        assert_eq!(
            parse_object_name("base-0000000000003628.lz4"),
            Some(ObjectKind::Base(0x3628))
        );
        assert_eq!(
            parse_object_name(&piece_name(3, 0x30000, 0x34567)),
            Some(ObjectKind::Piece {
                segment_no: 3,
                from: 0x30000,
                to: 0x34567
            })
        );
        for stranger in [
            "wal-1a.lz4",
            "wal-000000000000001A.lz4",
            "part-x",
            "notes.txt",
            "base-.lz4",
        ] {
            assert_eq!(parse_object_name(stranger), None, "{stranger}");
        }
    }

    #[test]
    fn a_log_chain_stops_at_the_first_gap() {
        let s = 0x10000u64;
        let names = [
            "wal-0000000000000002.lz4".to_string(),
            "wal-0000000000000003.lz4".to_string(),
            piece_name(4, 4 * s, 4 * s + 0x5000),
            piece_name(4, 4 * s + 0x4000, 4 * s + 0x9000),
            piece_name(4, 4 * s + 0xa000, 4 * s + 0xb000),
        ];
        let generation = Generation::from_names("g", names.iter().map(String::as_str));
        assert_eq!(
            generation.log_chain(2, s),
            (4 * s + 0x9000, vec![2, 3, 4]),
            "pieces chain until a gap"
        );
        assert_eq!(generation.log_chain(1, s), (s, vec![]), "segment 1 is missing");
        assert_eq!(generation.piece_chain(4, s).0.len(), 2);
        assert_eq!(generation.last_segment(), Some(4));
    }
}
