//! Arena pages: the common header, and the layouts of vector, catalog and overflow pages
//! (format-spec/FORMAT.md, "Arena pages").
//!
//! Every arena page starts with a 64-byte [`PageHeader`]. An all-zero page is a valid page that
//! was never written. Offsets inside a page are `u32`, pages are at most 1 MiB.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::wal::format::FORMAT_VERSION_MAJOR;

/// Identifies an arena page: the space in the top 8 bits, the page number below. Spaces are
/// numbered from 1, so no page id is 0 and 0 can mean "no page".
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageId(pub u64);

/// The two page spaces: catalog pages (ids and metadata) and vector pages.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    Catalog = 1,
    Vector = 2,
}

impl Space {
    /// 0 for the catalog space, 1 for the vector space (for arrays indexed by space).
    pub fn index(self) -> usize {
        self as usize - 1
    }
}

const SPACE_SHIFT: u32 = 56;
/// The largest page number in a space.
pub const PAGE_NO_MAX: u64 = (1 << SPACE_SHIFT) - 1;

impl PageId {
    pub fn new(space: Space, page_no: u64) -> PageId {
        assert!(page_no <= PAGE_NO_MAX, "page number {page_no} out of range");
        PageId(((space as u64) << SPACE_SHIFT) | page_no)
    }

    /// Decodes a page id read from disk; `None` if the space is unknown.
    pub fn from_raw(raw: u64) -> Option<PageId> {
        match raw >> SPACE_SHIFT {
            1 | 2 => Some(PageId(raw)),
            _ => None,
        }
    }

    pub fn space(self) -> Space {
        match self.0 >> SPACE_SHIFT {
            1 => Space::Catalog,
            2 => Space::Vector,
            other => unreachable!("PageId constructed with space {other}"),
        }
    }

    pub fn page_no(self) -> u64 {
        self.0 & PAGE_NO_MAX
    }
}

impl std::fmt::Display for PageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let space = match self.space() {
            Space::Catalog => "catalog",
            Space::Vector => "vector",
        };
        write!(f, "{space} page {}", self.page_no())
    }
}

/// Page kinds (byte 4 of the header).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageKind {
    Zero = 0,
    Vector = 1,
    Catalog = 2,
    Overflow = 3,
}

impl PageKind {
    pub fn from_u8(value: u8) -> Option<PageKind> {
        match value {
            0 => Some(PageKind::Zero),
            1 => Some(PageKind::Vector),
            2 => Some(PageKind::Catalog),
            3 => Some(PageKind::Overflow),
            _ => None,
        }
    }
}

/// The header of every arena page.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | CRC32C of bytes 4..page_size (set when the page is written to its file) |
/// | 4 | 1 | kind |
/// | 5 | 1 | reserved, zero |
/// | 6 | 2 | format version major |
/// | 8 | 8 | page id (space << 56 \| page number) |
/// | 16 | 8 | page LSN: the last log record applied to the page |
/// | 24 | 4 | a: vector pages: dimension; catalog pages: slot count; overflow pages: bytes used |
/// | 28 | 4 | b: vector pages: slot stride in bytes; catalog pages: start of entry data |
/// | 32 | 8 | c: overflow pages: next page id of the chain (0 = last) |
/// | 40 | 24 | reserved, zero |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PageHeader {
    pub crc: U32,
    pub kind: u8,
    pub reserved0: u8,
    pub version_major: U16,
    pub page_id: U64,
    pub page_lsn: U64,
    pub a: U32,
    pub b: U32,
    pub c: U64,
    pub reserved1: [u8; 24],
}

pub const PAGE_HEADER_BYTES: usize = 64;
pub const PAGE_CRC_START: usize = 4;
pub const PAGE_KIND_OFFSET: usize = 4;
pub const PAGE_ID_OFFSET: usize = 8;
pub const PAGE_LSN_OFFSET: usize = 16;
pub const PAGE_A_OFFSET: usize = 24;
pub const PAGE_B_OFFSET: usize = 28;
pub const PAGE_C_OFFSET: usize = 32;
const _: () = assert!(size_of::<PageHeader>() == PAGE_HEADER_BYTES);
const _: () = assert!(std::mem::offset_of!(PageHeader, page_lsn) == PAGE_LSN_OFFSET);
const _: () = assert!(std::mem::offset_of!(PageHeader, page_id) == PAGE_ID_OFFSET);
const _: () = assert!(std::mem::offset_of!(PageHeader, a) == PAGE_A_OFFSET);
const _: () = assert!(std::mem::offset_of!(PageHeader, b) == PAGE_B_OFFSET);
const _: () = assert!(std::mem::offset_of!(PageHeader, c) == PAGE_C_OFFSET);

/// Vector slots start at this offset; slot `i` is at `VECTOR_SLOTS_OFFSET + i * stride`.
pub const VECTOR_SLOTS_OFFSET: usize = PAGE_HEADER_BYTES;
/// Slot strides are multiples of this, so every vector is 16-byte aligned for SIMD loads.
pub const VECTOR_STRIDE_ALIGN_BYTES: usize = 16;

/// The stride of a vector slot for `dimension` components.
pub fn vector_stride_bytes(dimension: u32) -> usize {
    (dimension as usize * 4).div_ceil(VECTOR_STRIDE_ALIGN_BYTES) * VECTOR_STRIDE_ALIGN_BYTES
}

/// How many vectors of `dimension` a page holds.
pub fn vector_slots_per_page(page_size_bytes: u32, dimension: u32) -> usize {
    (page_size_bytes as usize - VECTOR_SLOTS_OFFSET) / vector_stride_bytes(dimension)
}

/// The largest dimension whose vectors fit a page of `page_size_bytes`.
pub fn vector_slots_max_dimension(page_size_bytes: u32) -> u32 {
    ((page_size_bytes as usize - VECTOR_SLOTS_OFFSET) / VECTOR_STRIDE_ALIGN_BYTES * VECTOR_STRIDE_ALIGN_BYTES / 4)
        as u32
}

/// The header of a fresh page of `kind`.
pub fn new_header(kind: PageKind, id: PageId, a: u32, b: u32) -> PageHeader {
    PageHeader {
        crc: U32::ZERO,
        kind: kind as u8,
        reserved0: 0,
        version_major: U16::new(FORMAT_VERSION_MAJOR),
        page_id: U64::new(id.0),
        page_lsn: U64::ZERO,
        a: U32::new(a),
        b: U32::new(b),
        c: U64::ZERO,
        reserved1: [0; 24],
    }
}

/// The page checksum: CRC32C of bytes 4..page_size.
pub fn page_crc(page: &[u8]) -> u32 {
    crc32c::crc32c(&page[PAGE_CRC_START..])
}

/// Stamps the checksum into a page image about to be written.
pub fn seal(page: &mut [u8]) {
    let crc = page_crc(page);
    page[..4].copy_from_slice(&crc.to_le_bytes());
}

/// Why a page image read from disk is not a valid page `id`, or `None`. An all-zero page is
/// valid (never written).
pub fn check_page(page: &[u8], id: PageId) -> Option<String> {
    let header = PageHeader::read_from_prefix(page)
        .expect("pages are larger than the header")
        .0;
    if header.crc.get() == 0 && page.iter().all(|&b| b == 0) {
        return None;
    }
    if page_crc(page) != header.crc.get() {
        return Some(format!("{id}: checksum mismatch (torn or damaged page)"));
    }
    if header.page_id.get() != id.0 {
        return Some(format!("{id}: header names page id {:#x}", header.page_id.get()));
    }
    if header.version_major.get() != FORMAT_VERSION_MAJOR {
        return Some(format!(
            "{id}: page format version {} unsupported",
            header.version_major.get()
        ));
    }
    let kind_ok = matches!(
        (id.space(), PageKind::from_u8(header.kind)),
        (Space::Vector, Some(PageKind::Vector))
            | (Space::Catalog, Some(PageKind::Catalog | PageKind::Overflow))
            | (_, Some(PageKind::Zero))
    );
    if !kind_ok {
        return Some(format!("{id}: page kind {} does not belong in its space", header.kind));
    }
    None
}

/// A catalog slot: where an entry lies in its page (`len_bytes == 0`: the slot is free).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | entry offset in the page |
/// | 4 | 4 | entry length in bytes (0 = free slot) |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CatalogSlot {
    pub offset: U32,
    pub len_bytes: U32,
}

pub const CATALOG_SLOT_BYTES: usize = 8;
/// The slot directory starts right after the header; entry data grows down from the page end.
pub const CATALOG_SLOTS_OFFSET: usize = PAGE_HEADER_BYTES;
const _: () = assert!(size_of::<CatalogSlot>() == CATALOG_SLOT_BYTES);

/// The fixed part of a catalog entry; the id and the metadata follow it.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | vector page id |
/// | 8 | 4 | vector slot |
/// | 12 | 2 | flags (bit 0: metadata lives in an overflow chain) |
/// | 14 | 2 | id length in bytes (1..=1024, UTF-8) |
/// | 16 | 4 | encoded metadata length in bytes |
/// | 20 | 4 | reserved, zero |
/// | 24 | 8 | first overflow page id (flag bit 0 set), else 0 |
/// | 32 | … | id bytes, then the encoded metadata when inline |
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EntryHeader {
    pub vector_page: U64,
    pub vector_slot: U32,
    pub flags: U16,
    pub id_len: U16,
    pub meta_len: U32,
    pub reserved: U32,
    pub overflow_page: U64,
}

pub const ENTRY_HEADER_BYTES: usize = 32;
pub const ENTRY_FLAG_OVERFLOW: u16 = 1;
const _: () = assert!(size_of::<EntryHeader>() == ENTRY_HEADER_BYTES);

/// Overflow pages hold metadata bytes from this offset on.
pub const OVERFLOW_DATA_OFFSET: usize = PAGE_HEADER_BYTES;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ids_keep_space_and_number_apart() {
        let id = PageId::new(Space::Vector, 12345);
        assert_eq!(id.space(), Space::Vector);
        assert_eq!(id.page_no(), 12345);
        assert_eq!(PageId::from_raw(id.0), Some(id));
        assert_eq!(PageId::from_raw(7 << 56), None, "unknown spaces are rejected");
        assert_eq!(PageId::from_raw(0), None, "0 is never a page: it means none");
        assert_ne!(PageId::new(Space::Catalog, 0).0, 0);
    }

    #[test]
    fn sealed_page_checks_and_a_flipped_bit_does_not() {
        let id = PageId::new(Space::Catalog, 3);
        let mut page = vec![0u8; 4096];
        assert_eq!(
            check_page(&page, id),
            None,
            "an all-zero page is a valid unwritten page"
        );
        page[..PAGE_HEADER_BYTES].copy_from_slice(new_header(PageKind::Catalog, id, 0, 4096).as_bytes());
        page[1000] = 7;
        seal(&mut page);
        assert_eq!(check_page(&page, id), None);
        assert!(
            check_page(&page, PageId::new(Space::Catalog, 4)).is_some(),
            "a page names itself"
        );
        page[2000] ^= 1;
        assert!(check_page(&page, id).is_some(), "a flipped bit fails the checksum");
    }

    #[test]
    fn vector_strides_are_aligned() {
        assert_eq!(vector_stride_bytes(384), 1536);
        assert_eq!(vector_stride_bytes(3), 16);
        assert_eq!(vector_slots_per_page(16384, 384), (16384 - 64) / 1536);
    }
}
