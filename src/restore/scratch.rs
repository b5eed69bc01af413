//! Scratch directories beside a destination, where a restore (or a replica's download, build
//! or rebase) makes a store before it is renamed into place, and how the ones a killed process
//! left are found and removed.
//!
//! A scratch directory is named `.{destination name}.{what}-{pid}-{nonce}` and is held, while
//! its builder runs, by an exclusive lock on a file of the same name plus `.lock`, beside it.
//! A builder stopped by Ctrl-C, `kill -9` or a power loss leaves both behind (a hidden
//! directory as large as the store it was making); before each new one, every scratch
//! directory of the same destination whose lock can be taken is removed, so abandoned ones go
//! and a running builder's stays.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::storage::Storage;

/// What a scratch directory is for: the restore's staging, a replica's download, build and
/// rebase.
const KINDS: [&str; 4] = ["restoring", "download", "replica", "rebase"];

/// A scratch directory's path and the lock that marks its builder alive. Dropping it removes
/// the lock file (the directory is its user's to rename or remove first).
pub(crate) struct Scratch {
    path: PathBuf,
    lock_path: PathBuf,
    storage: std::sync::Arc<dyn Storage>,
    _lock: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Scratch {
    /// A new scratch directory's name beside `dest`, for `what` (one of [`KINDS`]), its lock
    /// taken; the abandoned scratch directories of `dest` are removed first. Nothing is created
    /// but the lock file (a file system that cannot make it leaves the scratch unlocked).
    pub(crate) fn beside(storage: &std::sync::Arc<dyn Storage>, dest: &Path, what: &str) -> Scratch {
        assert!(KINDS.contains(&what), "an unknown kind of scratch directory: {what}");
        remove_abandoned(storage.as_ref(), dest);
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = dest.with_file_name(format!(".{}.{what}-{}-{nonce}", name_of(dest), std::process::id()));
        let lock_path = lock_path_of(&path);
        let lock = storage.lock_exclusive(&lock_path).ok();
        Scratch {
            path,
            lock_path,
            storage: storage.clone(),
            _lock: lock,
        }
    }

    /// The scratch directory (not created yet).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.storage.remove_file(&self.lock_path);
    }
}

fn name_of(dest: &Path) -> String {
    dest.file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned())
}

fn lock_path_of(scratch: &Path) -> PathBuf {
    let mut name = scratch.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    scratch.with_file_name(name)
}

/// True if `entry` names a scratch directory of the destination named `dest_name` (or its lock
/// file): `.{dest_name}.{kind}-{digits}-{digits}`, optionally with `.lock`.
fn is_scratch_of(entry: &str, dest_name: &str) -> bool {
    let entry = entry.strip_suffix(".lock").unwrap_or(entry);
    let Some(rest) = entry
        .strip_prefix('.')
        .and_then(|e| e.strip_prefix(dest_name))
        .and_then(|e| e.strip_prefix('.'))
    else {
        return false;
    };
    let mut parts = rest.splitn(3, '-');
    let (Some(kind), Some(pid), Some(nonce)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    KINDS.contains(&kind) && digits(pid) && digits(nonce)
}

/// Removes every scratch directory of `dest` (and lock file) whose lock no process holds;
/// returns what it removed. A listing or a removal that fails is left for the next time.
pub(crate) fn remove_abandoned(storage: &dyn Storage, dest: &Path) -> Vec<PathBuf> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = storage.list(&parent) else {
        return Vec::new();
    };
    let dest_name = name_of(dest);
    let mut removed = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| is_scratch_of(e, &dest_name) && !e.ends_with(".lock"))
    {
        let scratch = parent.join(entry);
        let lock_path = lock_path_of(&scratch);
        // Taken only if no builder holds it (one that never made its lock file is gone too:
        // the file is made before the directory).
        let Ok(_held) = storage.lock_exclusive(&lock_path) else {
            continue;
        };
        remove_tree(storage, &scratch);
        let _ = storage.remove_file(&lock_path);
        removed.push(scratch);
    }
    // Lock files whose directory is gone (a builder killed between the two).
    for entry in entries
        .iter()
        .filter(|e| is_scratch_of(e, &dest_name) && e.ends_with(".lock"))
    {
        let lock_path = parent.join(entry);
        let scratch = lock_path.with_extension("");
        if !storage.exists(&scratch)
            && let Ok(_held) = storage.lock_exclusive(&lock_path)
        {
            let _ = storage.remove_file(&lock_path);
        }
    }
    removed
}

/// Removes `path` and everything under it, as far as it can.
pub(crate) fn remove_tree(storage: &dyn Storage, path: &Path) {
    if let Ok(names) = storage.list(path) {
        for name in names {
            let child = path.join(name);
            if storage.remove_file(&child).is_err() {
                remove_tree(storage, &child);
            }
        }
        let _ = storage.remove_dir(path);
    } else {
        let _ = storage.remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_scratch_names_of_the_destination_match() {
        for (entry, yes) in [
            (".store.restoring-12-345", true),
            (".store.download-1-2.lock", true),
            (".store.rebase-1-2", true),
            (".store.replica-9-0", true),
            (".store.x.restoring-1-2", false),
            (".stores.restoring-1-2", false),
            (".store.restoring-1-", false),
            (".store.restoring-a-2", false),
            (".store.other-1-2", false),
            ("store", false),
            (".store", false),
        ] {
            assert_eq!(is_scratch_of(entry, "store"), yes, "{entry}");
        }
    }
}
