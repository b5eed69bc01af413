//! Files of a store deleted under its writer (a cleanup of files it does not know, a mistaken
//! `rm`), noticed by the checkpointer between checkpoints.
//!
//! A checkpoint puts back what was deleted (`CONTROL` and `DOUBLEWRITE` made again, arena files
//! copied from their open descriptors once their pages are synced), but an idle store may run
//! none until its close, and a writer killed before then leaves a store no open takes ("arena
//! file 0 of the vector space is missing"). The checkpointer looks every wake (250 ms) and runs
//! a checkpoint as soon as a file is missing. Log segments are the log's own concern (its
//! preallocator puts them back).
//!
//! The look costs two `stat`s while nothing changes: the store's directory and the arena's. Only
//! when one of them changed (or did within the last [`RECENT`], since a directory's time ticks
//! coarsely) are its files looked at, one `stat` each: `CONTROL` and `DOUBLEWRITE` after each
//! checkpoint (which renames `CONTROL` into place), the arena files only as files are made.

use std::time::{Duration, SystemTime};

use crate::format::control::CONTROL_FILE_NAME;
use crate::format::doublewrite::DOUBLEWRITE_FILE_NAME;

use super::inner::Inner;

/// A directory changed this recently is looked into again at each wake.
const RECENT: Duration = Duration::from_secs(2);

/// The directories' times the checkpointer saw last.
#[derive(Debug, Default)]
pub(super) struct DeletionWatch {
    seen: [Option<SystemTime>; 2],
}

impl DeletionWatch {
    /// True if `CONTROL`, `DOUBLEWRITE` or an arena file in use has no file at its path.
    pub(super) fn files_deleted(&mut self, inner: &Inner) -> bool {
        let storage = inner.options.storage.as_ref();
        let now = SystemTime::now();
        let mut changed = [false; 2];
        for (index, dir) in [inner.dir.as_path(), inner.arena.dir()].into_iter().enumerate() {
            // `None` (a storage that cannot tell, or a directory gone): no change to act on, so a
            // store whose directory was moved does not checkpoint at every wake in vain.
            let modified = storage.modified(dir);
            let recent = modified.is_some_and(|m| now.duration_since(m).map_or(true, |d| d < RECENT));
            changed[index] = recent || modified != self.seen[index];
            self.seen[index] = modified;
        }
        let [store_changed, arena_changed] = changed;
        let missing = |name: &str| !storage.exists(&inner.dir.join(name));
        let store_files = store_changed && (missing(CONTROL_FILE_NAME) || missing(DOUBLEWRITE_FILE_NAME));
        store_files || (arena_changed && inner.arena.any_file_missing())
    }
}
