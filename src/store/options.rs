//! How a store is opened or created, and what its archive keeps.

use std::sync::Arc;

use crate::storage::{RealStorage, Storage};
use crate::{RecoveryMode, SyncMode};

/// How to open or create a store.
#[derive(Clone, Debug)]
pub struct Options {
    /// When a commit is durable. Default: `Always`.
    pub sync: SyncMode,
    /// What recovery does with damage. Default: `TolerateTornTail`.
    pub recovery: RecoveryMode,
    /// Page size of the log and the arena (creation only; a store keeps its own). Default 16 KiB.
    pub page_size_bytes: u32,
    /// Size of each log segment and arena file (creation only). Default 16 MiB: the granule in
    /// which the log and each page space take disk (a store of 256 MiB of vectors takes 1.44x
    /// that live with 16 MiB, 2.2x with 64 MiB).
    pub segment_size_bytes: u64,
    /// A checkpoint runs in the background after this much log; 0 turns them off (and with
    /// them the memory budget: nothing is written back before an explicit checkpoint or the
    /// close). Default 256 MiB.
    pub checkpoint_interval_bytes: u64,
    /// The memory budget of writing: the anonymous memory that arena pages changed in memory
    /// take until a checkpoint has written them back and given their memory back (each a whole
    /// page of private memory), plus the log's tail not yet handed to its files. Past 1/16 of
    /// it the background checkpointer writes pages back, so the dirty set stays small while a
    /// store is written and a close has little left to write; at the whole of it, a commit
    /// waits for the checkpointer before it returns, so a writer that outruns the checkpointer
    /// is slowed rather than let memory grow (without background I/O, the commit runs the
    /// checkpoint itself). A writer is held back only when it commits, so one transaction
    /// larger than the budget takes what it needs. Not covered: recovery's redo at open, and
    /// the heap beside the pages (the transaction being built, a log segment's compressed copy
    /// while it is archived, a base image's rounds of 8 MiB per compressing thread). 0 turns
    /// the writeback and the waiting off (pages that checkpoints write are still given back),
    /// as does `checkpoint_interval_bytes` 0. Default 256 MiB.
    pub memory_budget_bytes: u64,
    /// Where the bytes go: the real file system, or a crash simulator in tests.
    pub storage: Arc<dyn Storage>,
    /// Run segment preparation and automatic checkpoints on background threads (default).
    /// Off, every storage operation happens on a caller's thread in a reproducible order, as
    /// deterministic crash simulation needs; automatic checkpoints then run inline after the
    /// commit that crosses the interval.
    pub background_io: bool,
    /// Write small durable log flushes and archive files past the page cache (`O_DIRECT`)
    /// where the file system allows it (default): a commit's flush is then one durable write
    /// instead of a `pwrite` and an `fdatasync`, and archive files do not crowd the cache. Off,
    /// every write goes through the page cache, for a file system whose direct I/O is slow or
    /// unreliable. (Where the file system refuses direct I/O, writes go through the cache
    /// either way.)
    pub direct_io: bool,
    /// Keep retired log segments, LZ4-compressed, in `archive/` (default). Off, they are
    /// recycled at once and point-in-time restore reaches back only to the live log; the
    /// first checkpoint of a later session with the archive on stores a base image, so that
    /// the archive restores again from there (to any point before the session without it, as
    /// before; to none inside it).
    pub archive: bool,
    /// With `archive` off: a bulk insert (`insert_many`, `upsert_many`, `vellum import`) logs
    /// the vectors it writes into fresh vector pages as stored writes, without their bytes
    /// (FORMAT.md 16.5), and writes those pages to their files itself, durably, before it
    /// returns: each byte of a bulk load reaches the disk once instead of twice (log, then a
    /// checkpoint). A load writes ~1.5 bytes a byte instead of ~2.5, but waits for its pages'
    /// sync instead of leaving their write to the background checkpointer: measured slower on
    /// the reference machine (see the README), so off by default; for media whose writes are
    /// worn or metered more than they are waited for. Changes nothing with the archive on (its
    /// log must hold every byte a restore replays).
    pub stored_writes: bool,
    /// Store a compressed image of the arena in `archive/` at every Nth checkpoint of a session
    /// (the first checkpoint, at creation, always makes one, as does the first after a session
    /// with `archive` off); 0 makes none after that. Default 4. Only
    /// the interval checkpoints and explicit ones (`Store::checkpoint`) count: those that write
    /// pages back for the memory budget, and the close's, store none, so that a close stays
    /// cheap.
    pub base_image_every: u32,
    /// What the archive keeps. Default `Stored`: the store's own setting (`SETTINGS`, set at
    /// creation or with [`Store::set_retention`](crate::Store::set_retention)), `KeepLast(2)` where none is set. Another
    /// value applies to this open only (at creation, it is stored).
    pub retention: Retention,
    /// Ship the archive to object storage (`s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `file:///…`; feature `object-store`). `None` (default): the store's own setting
    /// (`SETTINGS`, set at creation or with `Store::set_archive_url`); `Some("")`: do not ship
    /// in this open; another value ships there in this open only (at creation, it is stored).
    pub archive_url: Option<String>,
    /// With an archive URL: the remote copy of the durable log is never more than about this
    /// far behind (the live log is shipped in pieces after it). `None`: the stored setting,
    /// else 10 s; another value applies to this open (at creation, it is stored).
    pub archive_timeout: Option<std::time::Duration>,
}

/// What the archive keeps. Nothing a retained base image needs is ever deleted.
///
/// Written and parsed (`FromStr`, `Display`) as `keep-all`, `keep-last:N`, `max-bytes:N` and
/// `stored`, as the command line and the `SETTINGS` file take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Whatever the store's settings say (`KeepLast(2)` where they say nothing).
    Stored,
    /// Every base image and every archived segment: every LSN since creation stays restorable.
    KeepAll,
    /// The newest `n` base images (at least 1) and the log they need.
    KeepLast(u32),
    /// The newest base images whose archive (with the log they need) fits in this many bytes;
    /// always at least the newest one.
    MaxBytes(u64),
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sync: SyncMode::Always,
            recovery: RecoveryMode::TolerateTornTail,
            page_size_bytes: 16 * 1024,
            segment_size_bytes: 16 << 20,
            checkpoint_interval_bytes: 256 << 20,
            memory_budget_bytes: 256 << 20,
            storage: Arc::new(RealStorage::new()),
            background_io: true,
            direct_io: true,
            archive: true,
            stored_writes: false,
            base_image_every: 4,
            retention: Retention::Stored,
            archive_url: None,
            archive_timeout: None,
        }
    }
}

impl Options {
    /// These options with `direct_io` applied to the storage: off, the storage's files refuse
    /// direct writes ([`crate::storage::Adapted::buffered_only`]).
    pub(crate) fn resolve_direct_io(self) -> Options {
        if self.direct_io {
            return self;
        }
        Options {
            storage: Arc::new(crate::storage::Adapted::buffered_only(self.storage.clone())),
            ..self
        }
    }
}

impl Retention {
    /// The policy of a store whose settings name none.
    pub const DEFAULT: Retention = Retention::KeepLast(2);
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retention::Stored => f.write_str("stored"),
            Retention::KeepAll => f.write_str("keep-all"),
            Retention::KeepLast(n) => write!(f, "keep-last:{n}"),
            Retention::MaxBytes(n) => write!(f, "max-bytes:{n}"),
        }
    }
}

impl std::str::FromStr for Retention {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Retention, String> {
        let number = |n: &str| n.parse::<u64>().map_err(|_| format!("{n:?} is not a number"));
        match text.split_once(':') {
            None if text == "keep-all" => Ok(Retention::KeepAll),
            None if text == "stored" => Ok(Retention::Stored),
            Some(("keep-last", n)) => {
                let n = u32::try_from(number(n)?).map_err(|_| format!("keep-last:{n} is too many"))?;
                if n == 0 {
                    return Err("keep-last needs at least 1 base image".into());
                }
                Ok(Retention::KeepLast(n))
            }
            Some(("max-bytes", n)) => Ok(Retention::MaxBytes(number(n)?)),
            _ => Err(format!("{text:?}: expected keep-all, keep-last:N or max-bytes:N")),
        }
    }
}

