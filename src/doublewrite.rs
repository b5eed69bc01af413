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
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::{IoContext, Result};
use crate::page::{self, PageId};
use crate::storage::{Storage, StorageFile};
use crate::wal::format::FORMAT_VERSION_MAJOR;

pub const DOUBLEWRITE_FILE_NAME: &str = "DOUBLEWRITE";
pub const DOUBLEWRITE_MAGIC: [u8; 8] = *b"VLMDWBF\n";
/// Pages per batch.
pub const DOUBLEWRITE_BATCH_PAGES: usize = 64;

/// The header in page 0.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `VLMDWBF\n` |
/// | 8 | 2 | format version major |
/// | 10 | 2 | reserved, zero |
/// | 12 | 4 | page size in bytes |
/// | 16 | 4 | number of images in the batch |
/// | 20 | 4 | reserved, zero |
/// | 24 | 8 | batch sequence number |
/// | 32 | 28 | reserved, zero |
/// | 60 | 4 | CRC32C of bytes 0..60 |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DoublewriteHeader {
    pub magic: [u8; 8],
    pub version_major: U16,
    pub reserved0: U16,
    pub page_size_bytes: U32,
    pub count: U32,
    pub reserved1: U32,
    pub batch_seq: U64,
    pub reserved2: [u8; 28],
    pub crc: U32,
}

pub const DOUBLEWRITE_HEADER_BYTES: usize = 64;
const _: () = assert!(size_of::<DoublewriteHeader>() == DOUBLEWRITE_HEADER_BYTES);

/// The doublewrite file of a store.
#[derive(Debug)]
pub struct Doublewrite {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    page_size_bytes: u32,
    batch_seq: u64,
}

impl Doublewrite {
    /// Opens (creating if absent) the doublewrite file in `dir`.
    pub fn open(storage: &dyn Storage, dir: &Path, page_size_bytes: u32) -> Result<Doublewrite> {
        let path = dir.join(DOUBLEWRITE_FILE_NAME);
        let file = match storage.open(&path, false) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = storage
                    .open(&path, true)
                    .context(|| format!("creating {}", path.display()))?;
                storage
                    .sync_dir(dir)
                    .context(|| format!("syncing directory {}", dir.display()))?;
                file
            }
            Err(e) => return Err(crate::Error::io(format!("opening {}", path.display()), e)),
        };
        Ok(Doublewrite {
            path,
            file,
            page_size_bytes,
            batch_seq: 0,
        })
    }

    /// The intact page images of the last batch, by page id. Damage here is never an error:
    /// an unusable image is simply not offered for repair.
    pub fn read_images(&self) -> Result<HashMap<PageId, Vec<u8>>> {
        let mut images = HashMap::new();
        let page_size = self.page_size_bytes as usize;
        let len_bytes = self
            .file
            .len()
            .context(|| format!("reading the length of {}", self.path.display()))?;
        if len_bytes < page_size as u64 {
            return Ok(images);
        }
        let mut header_bytes = [0u8; DOUBLEWRITE_HEADER_BYTES];
        self.file
            .read_at(&mut header_bytes, 0)
            .context(|| format!("reading {}", self.path.display()))?;
        let header = DoublewriteHeader::read_from_bytes(&header_bytes).expect("exact size");
        let crc_ok = crc32c::crc32c(&header_bytes[..DOUBLEWRITE_HEADER_BYTES - 4]) == header.crc.get();
        if header.magic != DOUBLEWRITE_MAGIC || !crc_ok || header.page_size_bytes.get() != self.page_size_bytes {
            return Ok(images);
        }
        let count = (header.count.get() as usize).min(DOUBLEWRITE_BATCH_PAGES);
        let available = (len_bytes / page_size as u64).saturating_sub(1) as usize;
        for i in 0..count.min(available) {
            let mut image = vec![0u8; page_size];
            self.file
                .read_at(&mut image, ((1 + i) * page_size) as u64)
                .context(|| format!("reading {}", self.path.display()))?;
            let raw = u64::from_le_bytes(
                image[page::PAGE_ID_OFFSET..page::PAGE_ID_OFFSET + 8]
                    .try_into()
                    .expect("8"),
            );
            let Some(id) = PageId::from_raw(raw) else { continue };
            if image.iter().any(|&b| b != 0) && page::check_page(&image, id).is_none() {
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
            reserved2: [0; 28],
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
        self.file
            .write_at(&buffer, 0)
            .context(|| format!("writing {}", self.path.display()))?;
        self.file
            .sync_data()
            .context(|| format!("syncing {}", self.path.display()))
    }
}
