//! Test scaffolding, compiled only with the `testing` feature: the bodies of the fuzz targets
//! ([`fuzz`]) and the model of committed state that the fuzz bodies and `tests/simulation.rs`
//! check recovered stores against ([`model`]). The crash simulator itself is
//! [`crate::storage::SimStorage`], gated by the same feature.
//!
//! No part of the API: nothing here is stable. Everything runs on the simulator; nothing
//! touches a real file system.

pub mod fuzz;
pub mod model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::storage::{SimStorage, Storage};

/// A little-endian reader of fuzz input that yields zeros once the input is exhausted, so every
/// input decodes to something.
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl<'a> Bytes<'a> {
    pub(crate) fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// The next `len` bytes, or fewer if the input ends first.
    pub(crate) fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Stops `store`'s background archiver for good: the segments its later checkpoints retire
/// wait in the log directory, and a session that then ends without a close (as a crash would
/// end it) leaves them for the next session's archiver. For tests of that state.
pub fn stop_archiver(store: &crate::Store) {
    crate::store::archiver::stop(store.inner());
}

/// Writes `files` (path → bytes) into a new simulated disk, every file and directory durable.
pub(crate) fn materialize(dirs: &[PathBuf], files: &BTreeMap<PathBuf, Vec<u8>>) -> SimStorage {
    let sim = SimStorage::new(0x5eed);
    for dir in dirs {
        sim.create_dir_all(dir)
            .expect("creating a directory in a fresh SimStorage");
    }
    for (path, bytes) in files {
        if let Some(parent) = path.parent() {
            sim.create_dir_all(parent)
                .expect("creating a directory in a fresh SimStorage");
        }
        let file = sim.open(path, true).expect("creating a file in a fresh SimStorage");
        if !bytes.is_empty() {
            file.write_at(bytes, 0).expect("writing a file in a fresh SimStorage");
        }
        file.sync_data().expect("syncing a file in a fresh SimStorage");
    }
    for dir in dirs {
        sim.sync_dir(dir).expect("syncing a directory in a fresh SimStorage");
    }
    sim
}

/// A store image: the directories and files under a directory of a simulated disk.
#[derive(Clone)]
pub(crate) struct StoreImage {
    pub(crate) dirs: Vec<PathBuf>,
    pub(crate) files: BTreeMap<PathBuf, Vec<u8>>,
}

impl StoreImage {
    /// The directories and files under `root` on `sim` (volatile contents), `root` included.
    pub(crate) fn of(sim: &SimStorage, root: &Path) -> StoreImage {
        let mut dirs = Vec::new();
        let mut files = BTreeMap::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let names = sim.list(&dir).expect("listing a directory of the snapshot");
            dirs.push(dir.clone());
            for name in names {
                let path = dir.join(name);
                if sim.list(&path).is_ok() {
                    pending.push(path);
                } else {
                    files.insert(
                        path.clone(),
                        sim.read_file(&path).expect("reading a file of the snapshot"),
                    );
                }
            }
        }
        dirs.sort();
        StoreImage { dirs, files }
    }

    /// The image written into a new simulated disk, every file and directory durable.
    pub(crate) fn materialize(&self) -> SimStorage {
        materialize(&self.dirs, &self.files)
    }

    /// The image on a crashed disk, ready for [`SimStorage::reboot_with_seed`] (every file was
    /// synced, so the crash keeps exactly the image).
    pub(crate) fn boot_disk(&self) -> SimStorage {
        let sim = self.materialize();
        sim.crash_now();
        sim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_input_reads_as_zeros() {
        let mut input = Bytes(&[1, 2, 3]);
        assert_eq!(input.u16(), 0x0201);
        assert_eq!(input.u32(), 3, "the missing high bytes read as zeros");
        assert!(input.is_empty());
        assert_eq!(input.u64(), 0);
        assert_eq!(input.take(5), &[] as &[u8]);
    }

    #[test]
    fn a_booted_image_holds_exactly_the_files_it_was_taken_from() {
        let files = BTreeMap::from([
            (PathBuf::from("/db/a"), b"alpha".to_vec()),
            (PathBuf::from("/db/sub/b"), Vec::new()),
        ]);
        let dirs = [PathBuf::from("/db"), PathBuf::from("/db/sub")];
        let written = materialize(&dirs, &files);
        let image = StoreImage::of(&written, Path::new("/db"));
        assert_eq!(image.files, files);
        assert_eq!(image.dirs, dirs);
        let booted = image.boot_disk().reboot_with_seed(9);
        assert_eq!(
            StoreImage::of(&booted, Path::new("/db")).files,
            files,
            "a crash kept other bytes"
        );
    }
}
