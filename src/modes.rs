//! The two modes an opener chooses: when a commit is durable, and what recovery does with damage.

use std::time::Duration;

/// When a commit's log bytes become durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// A commit returns only after its bytes are durable (fdatasync). Concurrent committers
    /// share one flush.
    #[default]
    Always,
    /// A background flusher makes the log durable every interval: a crash loses at most the
    /// commits of the last interval, never a part of one.
    Interval(Duration),
    /// Durable only at checkpoints, `sync()` and close.
    Never,
}

/// What recovery does with damage it finds (see `format-spec/FORMAT.md`, "End of the log").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Any damage is an error, and so is an ambiguous tail: a torn tail is accepted only when no
    /// valid record follows the damage.
    Strict,
    /// A torn tail (damage not proven to lie before the last durable byte) is accepted and
    /// erased; damage proven to lie inside the durable log is an error.
    #[default]
    TolerateTornTail,
    /// Damage inside the log is skipped (resynchronising at the next valid page) and reported.
    SkipCorrupted,
}
