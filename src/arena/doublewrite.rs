//! The doublewrite area (`DOUBLEWRITE`): a checkpoint writes a batch of page images here and
//! syncs before it overwrites those pages in place, so a page torn by a crash mid-write can be
//! restored from its intact copy before redo touches it.
//!
//! Pages initialised inside the redo range of the checkpoint in force skip the area: a torn
//! copy of such a page is rebuilt from zero by redo, which replays every record since its
//! initialisation (format-spec, "Checkpoints and the doublewrite area").
//!
//! Layout: page 0 holds the header; images follow at `(1 + i) * page_size`. Each image carries
//! its own page id and checksum, so an image is usable if and only if it passes
//! [`page::check_page`] for the id in its header and is not all zero.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use crate::Error;
use crate::error::{IoContext, Result};
use crate::format::FORMAT_VERSION_MAJOR;
use crate::format::doublewrite::{
    DOUBLEWRITE_BATCH_PAGES, DOUBLEWRITE_FILE_NAME, DOUBLEWRITE_FILE_PAGES, DOUBLEWRITE_HEADER_BYTES,
    DOUBLEWRITE_MAGIC, DoublewriteHeader,
};
use crate::format::page::{self, PageId};
use crate::storage::{Storage, StorageFile};

/// How the doublewrite file is opened.
#[derive(Clone, Copy, Debug)]
pub struct DoublewriteOpen {
    pub store_id: u64,
    /// The store's files were written by format minor ≥ 1, which creates the file with its
    /// header page: a missing or truncated file is damage. Otherwise (minor 0, or a store
    /// whose first checkpoint has not run) a missing file is made, and an empty one is normal.
    pub required: bool,
    /// Change nothing: a missing file is not made (there are then no images to offer).
    pub read_only: bool,
}

/// The doublewrite file of a store.
#[derive(Debug)]
pub struct Doublewrite {
    path: PathBuf,
    /// `None`: a read-only open of a store that has none yet.
    file: Option<Arc<dyn StorageFile>>,
    page_size_bytes: u32,
    store_id: u64,
    batch_seq: u64,
    /// The file holds its header page (and, from minor 1 on, its whole length).
    has_header: bool,
    /// The file has its whole length ([`DOUBLEWRITE_FILE_PAGES`]).
    whole: bool,
}

/// A doublewrite file opened, its header asked for, not yet checked ([`Doublewrite::prepare`]).
#[derive(Debug)]
pub struct PreparedDoublewrite {
    path: PathBuf,
    opened: std::io::Result<Arc<dyn StorageFile>>,
    /// The header's bytes, if the page cache held them at the prepare.
    header: Option<[u8; DOUBLEWRITE_HEADER_BYTES]>,
    how: DoublewriteOpen,
}

impl PreparedDoublewrite {
    /// The second half of [`Doublewrite::open`]: makes a missing file where one may be made,
    /// and checks the file (see [`DoublewriteOpen`]).
    pub fn finish(self, storage: &dyn Storage, page_size_bytes: u32) -> Result<Doublewrite> {
        let PreparedDoublewrite {
            path,
            opened,
            header,
            how,
        } = self;
        let file = match opened {
            Ok(file) => Some(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && how.required => {
                return Err(Error::corrupted_file(&path, "the doublewrite file is missing"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && how.read_only => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = storage
                    .open(&path, true)
                    .context(|| format!("creating {}", path.display()))?;
                let dir = path.parent().expect("the doublewrite file lies in the store's directory");
                storage
                    .sync_dir(dir)
                    .context(|| format!("syncing directory {}", dir.display()))?;
                Some(file)
            }
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        let mut doublewrite = Doublewrite {
            path,
            file,
            page_size_bytes,
            store_id: how.store_id,
            batch_seq: 0,
            has_header: false,
            whole: false,
        };
        doublewrite.check(how.required, header)?;
        Ok(doublewrite)
    }
}

impl Doublewrite {
    /// Opens the doublewrite file in `dir` (see [`DoublewriteOpen`] for what may be missing).
    pub fn open(storage: &dyn Storage, dir: &Path, page_size_bytes: u32, how: DoublewriteOpen) -> Result<Doublewrite> {
        Doublewrite::prepare(storage, dir, how).finish(storage, page_size_bytes)
    }

    /// The first half of [`Doublewrite::open`]: opens the file if it is there and reads its
    /// header where the page cache holds it, else asks for it ([`StorageFile::will_need`]), so
    /// that after a cold start its read waits for the disk together with the log's rather than
    /// after them. Nothing is decided, reported or made here: [`PreparedDoublewrite::finish`]
    /// does all of that, in the order an open without this step would.
    pub fn prepare(storage: &dyn Storage, dir: &Path, how: DoublewriteOpen) -> PreparedDoublewrite {
        let path = dir.join(DOUBLEWRITE_FILE_NAME);
        let opened = if how.read_only {
            storage.open_read_only(&path)
        } else {
            storage.open(&path, false)
        };
        let mut header = None;
        if let Ok(file) = &opened {
            let mut bytes = [0u8; DOUBLEWRITE_HEADER_BYTES];
            // An error here is met again, and reported, by the header's own read.
            if file.read_cached(&mut bytes, 0).unwrap_or(false) {
                header = Some(bytes);
            } else {
                file.will_need(0, DOUBLEWRITE_HEADER_BYTES as u64);
            }
        }
        PreparedDoublewrite {
            path,
            opened,
            header,
            how,
        }
    }

    /// Checks what must hold of the file as a whole: a header page where one is required, no
    /// header of another store, and every image its header counts. A damaged header is no
    /// error (its images are simply not offered for repair).
    /// `cached` holds the header's bytes if they were read already.
    fn check(&mut self, required: bool, cached: Option<[u8; DOUBLEWRITE_HEADER_BYTES]>) -> Result<()> {
        let Some(file) = &self.file else { return Ok(()) };
        let len_bytes = file
            .len()
            .context(|| format!("reading the length of {}", self.path.display()))?;
        let page_size = u64::from(self.page_size_bytes);
        let whole_bytes = DOUBLEWRITE_FILE_PAGES * page_size;
        self.whole = len_bytes >= whole_bytes;
        if required && !self.whole {
            return Err(Error::corrupted_file(
                &self.path,
                format!("the doublewrite file is {len_bytes} bytes, not {whole_bytes}: it was truncated"),
            ));
        }
        if len_bytes < page_size {
            return Ok(());
        }
        self.has_header = true;
        let Some(header) = self.read_header(cached)? else {
            return Ok(());
        };
        let owner = header.store_id.get();
        if owner != 0 && owner != self.store_id {
            return Err(Error::corrupted_file(
                &self.path,
                format!(
                    "the doublewrite file belongs to store {owner:016x}, not this one ({:016x})",
                    self.store_id
                ),
            ));
        }
        self.batch_seq = header.batch_seq.get();
        Ok(())
    }

    /// The header, if it is intact and of this page size; read from the file unless `cached`
    /// holds its bytes.
    fn read_header(&self, cached: Option<[u8; DOUBLEWRITE_HEADER_BYTES]>) -> Result<Option<DoublewriteHeader>> {
        let Some(file) = self.file.as_ref().filter(|_| self.has_header) else {
            return Ok(None);
        };
        let header_bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let mut bytes = [0u8; DOUBLEWRITE_HEADER_BYTES];
                file.read_at(&mut bytes, 0)
                    .context(|| format!("reading {}", self.path.display()))?;
                bytes
            }
        };
        let header = DoublewriteHeader::read_from_bytes(&header_bytes).expect("exact size");
        let crc_ok = crc32c::crc32c(&header_bytes[..DOUBLEWRITE_HEADER_BYTES - 4]) == header.crc.get();
        let ok = header.magic == DOUBLEWRITE_MAGIC && crc_ok && header.page_size_bytes.get() == self.page_size_bytes;
        Ok(ok.then_some(header))
    }

    /// Gives a file that is not whole yet (a new store's, or one of format minor 0) its whole
    /// length of zeros, synced, and a header if it has none: from then on a missing or short
    /// file is damage. A full disk is `DiskFull` here, before the store depends on the file.
    pub fn ensure_whole(&mut self) -> Result<()> {
        if self.whole {
            return Ok(());
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| Error::ReadOnly("the store was opened read-only".into()))?;
        let page_size = u64::from(self.page_size_bytes);
        let len_bytes = file
            .len()
            .context(|| format!("reading the length of {}", self.path.display()))?;
        let zeros = vec![0u8; self.page_size_bytes as usize];
        let first_page = len_bytes.div_ceil(page_size).max(1);
        for page in first_page..DOUBLEWRITE_FILE_PAGES {
            file.write_at(&zeros, page * page_size)
                .context(|| format!("writing {}", self.path.display()))?;
        }
        if !self.has_header {
            self.write_batch(&[])?;
        } else {
            file.sync_data()
                .context(|| format!("syncing {}", self.path.display()))?;
        }
        self.whole = true;
        Ok(())
    }

    /// Makes the doublewrite file again, whole and with an empty batch, if it was deleted or
    /// replaced while the store is open: made beside it, renamed into place, the directory
    /// synced; this handle then writes the new file. Called before a batch is written, when
    /// the last batch's pages are already in place and synced: nothing it held is needed.
    /// Without it the next open would refuse the store ("the doublewrite file is missing").
    /// True if it was made again.
    pub fn relink_if_unlinked(&mut self, storage: &dyn Storage) -> Result<bool> {
        let Some(file) = &self.file else { return Ok(false) };
        let unlinked = file
            .is_unlinked()
            .context(|| format!("reading the status of {}", self.path.display()))?;
        if !unlinked {
            return Ok(false);
        }
        let fresh_path = self.path.with_extension("tmp");
        let _ = storage.remove_file(&fresh_path);
        let fresh = storage
            .open(&fresh_path, true)
            .context(|| format!("creating {}", fresh_path.display()))?;
        self.file = Some(fresh);
        self.has_header = false;
        self.whole = false;
        self.ensure_whole()?;
        crate::storage::rename_durably(storage, &fresh_path, &self.path)?;
        Ok(true)
    }

    /// The intact page images of the last batch, by page id. Damage here is never an error:
    /// an unusable image is simply not offered for repair.
    pub fn read_images(&self) -> Result<HashMap<PageId, Vec<u8>>> {
        let mut images = HashMap::new();
        let (Some(file), Some(header)) = (&self.file, self.read_header(None)?) else {
            return Ok(images);
        };
        let page_size = self.page_size_bytes as usize;
        let len_bytes = file
            .len()
            .context(|| format!("reading the length of {}", self.path.display()))?;
        let count = (header.count.get() as usize).min(DOUBLEWRITE_BATCH_PAGES);
        let available = (len_bytes / page_size as u64).saturating_sub(1) as usize;
        for i in 0..count.min(available) {
            let mut image = vec![0u8; page_size];
            file.read_at(&mut image, ((1 + i) * page_size) as u64)
                .context(|| format!("reading {}", self.path.display()))?;
            let raw = u64::from_le_bytes(
                image[page::PAGE_ID_OFFSET..page::PAGE_ID_OFFSET + 8]
                    .try_into()
                    .expect("8"),
            );
            let Some(id) = PageId::from_raw(raw) else { continue };
            let usable =
                page::check_page(&image, id).is_none() && page::check_owner(&image, id, self.store_id).is_none();
            if !crate::zeros::all_zero(&image) && usable {
                images.insert(id, image);
            }
        }
        Ok(images)
    }

    /// Writes a batch of sealed images and syncs it. Only then may they be written in place.
    pub fn write_batch(&mut self, images: &[(PageId, Vec<u8>)]) -> Result<()> {
        assert!(images.len() <= DOUBLEWRITE_BATCH_PAGES, "batch too large");
        let page_size = self.page_size_bytes as usize;
        let mut buffer = vec![0u8; (1 + images.len()) * page_size];
        self.batch_seq += 1;
        let mut header = DoublewriteHeader {
            magic: DOUBLEWRITE_MAGIC,
            version_major: U16::new(FORMAT_VERSION_MAJOR),
            reserved0: U16::ZERO,
            page_size_bytes: U32::new(self.page_size_bytes),
            count: U32::new(images.len() as u32),
            reserved1: U32::ZERO,
            batch_seq: U64::new(self.batch_seq),
            store_id: U64::new(self.store_id),
            reserved2: [0; 20],
            crc: U32::ZERO,
        };
        header.crc = U32::new(crc32c::crc32c(&header.as_bytes()[..DOUBLEWRITE_HEADER_BYTES - 4]));
        buffer[..DOUBLEWRITE_HEADER_BYTES].copy_from_slice(header.as_bytes());
        for (i, (id, image)) in images.iter().enumerate() {
            assert_eq!(
                page::check_page(image, *id),
                None,
                "only sealed pages go to the doublewrite area"
            );
            buffer[(1 + i) * page_size..(2 + i) * page_size].copy_from_slice(image);
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| Error::ReadOnly("the store was opened read-only".into()))?;
        file.write_at(&buffer, 0)
            .context(|| format!("writing {}", self.path.display()))?;
        file.sync_data()
            .context(|| format!("syncing {}", self.path.display()))?;
        self.has_header = true;
        Ok(())
    }
}
