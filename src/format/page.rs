//! Arena pages: the common header, and the layouts of vector, catalog and overflow pages
//! (format-spec/FORMAT.md, "Arena pages").
//!
//! Every arena page starts with a 64-byte [`PageHeader`]. An all-zero page is a valid page that
//! was never written. Offsets inside a page are `u32`, pages are at most 1 MiB.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::format::wal::FORMAT_VERSION_MAJOR;

/// Identifies an arena page: the space in the top 8 bits, the page number below. Spaces are
/// numbered from 1, so no page id is 0 and 0 can mean "no page".
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageId(pub u64);

/// The two page spaces: catalog pages (ids and metadata) and vector pages.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// Catalog pages: the slot directory and entries mapping ids to vector slots and metadata, and
    /// overflow pages.
    Catalog = 1,
    /// Vector pages: fixed-stride slots of float32 vectors.
    Vector = 2,
}

impl Space {
    /// 0 for the catalog space, 1 for the vector space (for arrays indexed by space).
    pub fn index(self) -> usize {
        self as usize - 1
    }

    /// "catalog" or "vector".
    pub fn name(self) -> &'static str {
        match self {
            Space::Catalog => "catalog",
            Space::Vector => "vector",
        }
    }
}

const SPACE_SHIFT: u32 = 56;
/// The largest page number in a space.
pub const PAGE_NO_MAX: u64 = (1 << SPACE_SHIFT) - 1;

impl PageId {
    /// Page `page_no` of `space`. Panics if `page_no` exceeds [`PAGE_NO_MAX`] (ids read from
    /// disk go through [`PageId::from_raw`]).
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

    /// The space this page belongs to.
    pub fn space(self) -> Space {
        match self.0 >> SPACE_SHIFT {
            1 => Space::Catalog,
            2 => Space::Vector,
            other => unreachable!("PageId constructed with space {other}"),
        }
    }

    /// The page number within its space (0-based).
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
    /// Never written (all zero).
    Zero = 0,
    /// Vector slots and their owner table (vector space).
    Vector = 1,
    /// Catalog entries: ids and metadata (catalog space).
    Catalog = 2,
    /// A piece of an overflow chain of metadata (catalog space).
    Overflow = 3,
    /// The meta page: catalog page 0, the roots of the index and of the free lists.
    Meta = 4,
    /// A leaf of the id index (catalog space).
    IndexLeaf = 5,
    /// A branch of the id index (catalog space).
    IndexBranch = 6,
    /// A free catalog-space page, on the free list (catalog space).
    Free = 7,
    /// The approximate-search index's meta page (catalog space; format/graph.rs).
    GraphMeta = 8,
    /// Node records of the approximate-search index (catalog space).
    GraphNodes = 9,
    /// Upper-layer neighbour lists of the approximate-search index (catalog space).
    GraphUpper = 10,
}

impl PageKind {
    /// Every kind, in byte order.
    pub const ALL: [PageKind; 11] = [
        PageKind::Zero,
        PageKind::Vector,
        PageKind::Catalog,
        PageKind::Overflow,
        PageKind::Meta,
        PageKind::IndexLeaf,
        PageKind::IndexBranch,
        PageKind::Free,
        PageKind::GraphMeta,
        PageKind::GraphNodes,
        PageKind::GraphUpper,
    ];

    /// True if a page of this kind may lie in `space` (FORMAT.md 14.2).
    pub fn allowed_in(self, space: Space) -> bool {
        match self {
            PageKind::Zero => true,
            PageKind::Vector => space == Space::Vector,
            PageKind::Catalog
            | PageKind::Overflow
            | PageKind::Meta
            | PageKind::IndexLeaf
            | PageKind::IndexBranch
            | PageKind::Free
            | PageKind::GraphMeta
            | PageKind::GraphNodes
            | PageKind::GraphUpper => space == Space::Catalog,
        }
    }

    /// The kind's name, as tools print it.
    pub fn name(self) -> &'static str {
        match self {
            PageKind::Zero => "zero",
            PageKind::Vector => "vector",
            PageKind::Catalog => "catalog",
            PageKind::Overflow => "overflow",
            PageKind::Meta => "meta",
            PageKind::IndexLeaf => "index-leaf",
            PageKind::IndexBranch => "index-branch",
            PageKind::Free => "free",
            PageKind::GraphMeta => "graph-meta",
            PageKind::GraphNodes => "graph-nodes",
            PageKind::GraphUpper => "graph-upper",
        }
    }

    /// The kind stored as `value` in a header; `None` if unknown.
    pub fn from_u8(value: u8) -> Option<PageKind> {
        PageKind::ALL.get(usize::from(value)).copied()
    }
}

const _: () = {
    let mut i = 0;
    while i < PageKind::ALL.len() {
        assert!(
            PageKind::ALL[i] as usize == i,
            "PageKind::ALL lists the kinds in byte order"
        );
        i += 1;
    }
};

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
/// | 24 | 4 | a (by kind, see below) |
/// | 28 | 4 | b (by kind) |
/// | 32 | 8 | c (by kind) |
/// | 40 | 8 | store id of the store that formatted the page |
/// | 48 | 16 | d: index nodes' key prefix (format/index.rs); a free page's is left from its last use; zero in every other kind |
///
/// | kind | a | b | c |
/// |---|---|---|---|
/// | vector | dimension | slot stride in bytes | free-slot list link |
/// | catalog | slot count | start of entry data | roomy list link |
/// | overflow | bytes used | 0 | next page id of the chain (0 = last) |
/// | meta | 0 | 0 | 0 |
/// | index leaf | cell count | start of cell data | 0 |
/// | index branch | cell count | start of cell data | leftmost child page id |
/// | free | 0 | 0 | free list link |
/// | graph meta | 0 | 0 | 0 |
/// | graph nodes | node page index | node record bytes | 0 |
/// | graph upper | upper page index | upper slot bytes | 0 |
///
/// A list link is 0 when the page is on no list, [`LIST_END`] when it is the last of its list,
/// else the next page's id.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PageHeader {
    /// CRC32C of bytes 4..page_size.
    pub crc: U32,
    /// The [`PageKind`] as a byte.
    pub kind: u8,
    /// Reserved, zero.
    pub reserved0: u8,
    /// Format version major of the page.
    pub version_major: U16,
    /// The raw [`PageId`] of the page (space << 56 | page number).
    pub page_id: U64,
    /// LSN of the last log record applied to the page.
    pub page_lsn: U64,
    /// Vector pages: dimension; catalog pages: slot count; overflow pages: bytes used.
    pub a: U32,
    /// Vector pages: slot stride in bytes; catalog pages: offset of the start of entry data.
    pub b: U32,
    /// Overflow pages: raw id of the next page of the chain (0 = last).
    pub c: U64,
    /// Id of the store that formatted the page (0 for format minor 0).
    pub store_id: U64,
    /// Index nodes: the key prefix field (format/index.rs); a free page: left from its last use;
    /// zero in every other kind.
    pub d: [u8; 16],
}

/// Size of [`PageHeader`] in bytes.
pub const PAGE_HEADER_BYTES: usize = 64;
/// Offset of the first byte the page checksum covers (it runs to the page end).
pub const PAGE_CRC_START: usize = 4;
/// Offset of the kind byte in the header.
pub const PAGE_KIND_OFFSET: usize = 4;
/// Offset of the page id in the header.
pub const PAGE_ID_OFFSET: usize = 8;
/// Offset of the page LSN in the header.
pub const PAGE_LSN_OFFSET: usize = 16;
/// Offset of field `a` in the header.
pub const PAGE_A_OFFSET: usize = 24;
/// Offset of field `b` in the header.
pub const PAGE_B_OFFSET: usize = 28;
/// Offset of field `c` in the header.
pub const PAGE_C_OFFSET: usize = 32;
/// Offset of the store id in the header.
pub const PAGE_STORE_ID_OFFSET: usize = 40;
/// Offset of field `d` in the header (16 bytes to the header's end).
pub const PAGE_D_OFFSET: usize = 48;
/// Bytes of field `d`.
pub const PAGE_D_BYTES: usize = 16;
const _: () = assert!(PAGE_D_OFFSET + PAGE_D_BYTES == PAGE_HEADER_BYTES);
/// A list link (header field `c`) naming no next page: the page is the last of its list.
/// (Page ids name a space in their top byte, so no page id is 1.)
pub const LIST_END: u64 = 1;
const _: () = assert!(size_of::<PageHeader>() == PAGE_HEADER_BYTES);
const _: () = assert!(std::mem::offset_of!(PageHeader, page_lsn) == PAGE_LSN_OFFSET);
const _: () = assert!(std::mem::offset_of!(PageHeader, page_id) == PAGE_ID_OFFSET);
const _: () = assert!(std::mem::offset_of!(PageHeader, a) == PAGE_A_OFFSET);
const _: () = assert!(std::mem::offset_of!(PageHeader, b) == PAGE_B_OFFSET);
const _: () = assert!(std::mem::offset_of!(PageHeader, c) == PAGE_C_OFFSET);
const _: () = assert!(std::mem::offset_of!(PageHeader, store_id) == PAGE_STORE_ID_OFFSET);

/// The page LSN of the page image `page` (0 for an image shorter than the header).
pub fn page_lsn_of(page: &[u8]) -> u64 {
    page.get(PAGE_LSN_OFFSET..PAGE_LSN_OFFSET + 8)
        .map_or(0, |bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
}

/// The owner table of a vector page starts right after the header: one [`VECTOR_OWNER_BYTES`]
/// entry per slot, `catalog page number << 32 | entry offset` of the entry that owns the slot,
/// 0 for a free slot (catalog page 0 is the meta page, which holds no entries).
pub const VECTOR_OWNERS_OFFSET: usize = PAGE_HEADER_BYTES;
/// Bytes of one owner-table entry.
pub const VECTOR_OWNER_BYTES: usize = 8;
/// Slot strides are multiples of this, so every vector is 16-byte aligned for SIMD loads.
pub const VECTOR_STRIDE_ALIGN_BYTES: usize = 16;

/// The stride of a vector slot for `dimension` components.
pub fn vector_stride_bytes(dimension: u32) -> usize {
    (dimension as usize * 4).div_ceil(VECTOR_STRIDE_ALIGN_BYTES) * VECTOR_STRIDE_ALIGN_BYTES
}

/// Where the slots of a vector page with `slots` slots start: after the owner table, aligned.
pub fn vector_slots_offset(slots: usize) -> usize {
    (VECTOR_OWNERS_OFFSET + slots * VECTOR_OWNER_BYTES).div_ceil(VECTOR_STRIDE_ALIGN_BYTES) * VECTOR_STRIDE_ALIGN_BYTES
}

/// How many vectors of `dimension` a page holds: the most slots whose owner table and vectors
/// fit the page.
pub fn vector_slots_per_page(page_size_bytes: u32, dimension: u32) -> usize {
    let stride = vector_stride_bytes(dimension);
    let room = (page_size_bytes as usize).saturating_sub(VECTOR_OWNERS_OFFSET);
    let mut slots = room / (stride + VECTOR_OWNER_BYTES);
    while slots > 0 && vector_slots_offset(slots) + slots * stride > page_size_bytes as usize {
        slots -= 1;
    }
    slots
}

/// The largest dimension whose vectors fit a page of `page_size_bytes` (one slot a page).
pub fn vector_slots_max_dimension(page_size_bytes: u32) -> u32 {
    let room = (page_size_bytes as usize).saturating_sub(vector_slots_offset(1));
    (room / VECTOR_STRIDE_ALIGN_BYTES * VECTOR_STRIDE_ALIGN_BYTES / 4) as u32
}

/// The layout of the vector pages of one store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorLayout {
    /// Components per vector.
    pub dimension: u32,
    /// Bytes from one slot to the next.
    pub stride_bytes: usize,
    /// Slots per page.
    pub slots_per_page: u32,
    /// Where slot 0 starts.
    pub slots_offset: usize,
}

impl VectorLayout {
    /// The layout for `dimension` in pages of `page_size_bytes`.
    pub fn new(page_size_bytes: u32, dimension: u32) -> VectorLayout {
        let slots = vector_slots_per_page(page_size_bytes, dimension);
        VectorLayout {
            dimension,
            stride_bytes: vector_stride_bytes(dimension),
            slots_per_page: slots as u32,
            slots_offset: vector_slots_offset(slots),
        }
    }

    /// Where slot `slot`'s vector starts in its page.
    pub fn slot_offset(&self, slot: u32) -> usize {
        assert!(
            slot < self.slots_per_page,
            "slot {slot} of a page of {}",
            self.slots_per_page
        );
        self.slots_offset + slot as usize * self.stride_bytes
    }

    /// Where slot `slot`'s owner-table entry is in its page.
    pub fn owner_offset(&self, slot: u32) -> usize {
        assert!(
            slot < self.slots_per_page,
            "slot {slot} of a page of {}",
            self.slots_per_page
        );
        VECTOR_OWNERS_OFFSET + slot as usize * VECTOR_OWNER_BYTES
    }
}

/// An owner-table entry: the catalog entry at `entry_offset` of catalog page `catalog_page_no`.
pub fn encode_owner(catalog_page_no: u64, entry_offset: u32) -> u64 {
    assert!(
        catalog_page_no > 0 && catalog_page_no <= u64::from(u32::MAX),
        "an owner names a catalog page other than the meta page"
    );
    (catalog_page_no << 32) | u64::from(entry_offset)
}

/// The catalog page number and entry offset an owner-table entry names (`None`: free slot).
pub fn decode_owner(raw: u64) -> Option<(u64, u32)> {
    (raw != 0).then_some((raw >> 32, raw as u32))
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
        store_id: U64::ZERO,
        d: [0; 16],
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

/// Whether every byte is zero. ORs 64-byte blocks together with one test per block, which
/// compilers vectorise, instead of testing byte by byte (most arena pages are never-written
/// zero pages, and every open checks them all).
pub fn is_all_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Why a page image read from disk is not a valid page `id`, or `None`. An all-zero page is
/// valid (never written).
pub fn check_page(page: &[u8], id: PageId) -> Option<String> {
    let header = PageHeader::read_from_prefix(page)
        .expect("pages are larger than the header")
        .0;
    if header.crc.get() == 0 && is_all_zero(page) {
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
    let kind_ok = PageKind::from_u8(header.kind).is_some_and(|kind| kind.allowed_in(id.space()));
    if !kind_ok {
        return Some(format!("{id}: page kind {} does not belong in its space", header.kind));
    }
    None
}

/// Why the page image `page` of page `id` cannot belong with a log that ends at `log_end_lsn`
/// (0: not known), or `None`: its page LSN is at or past that end, which the WAL rule rules out
/// (a page reaches its file only once the log is durable past its page LSN, FORMAT.md 17.1),
/// so the page and the log come from different moments (a copy of a store taken file by file
/// while it ran, or a log that lost its tail).
pub fn check_page_lsn_below(page: &[u8], id: PageId, log_end_lsn: u64) -> Option<String> {
    let page_lsn = page_lsn_of(page);
    (log_end_lsn != 0 && page_lsn >= log_end_lsn).then(|| {
        format!(
            "{id} has page LSN {page_lsn}, at or past the end of the log ({log_end_lsn}): the page and the log \
             come from different moments"
        )
    })
}

/// Why the page image `page` (valid by [`check_page`]) does not belong to store `store_id`, or
/// `None`: a page formatted by another store (a file swapped in from elsewhere) names that
/// store. Pages of format minor 0 carry no store id (0) and pass; so do never-written pages.
pub fn check_owner(page: &[u8], id: PageId, store_id: u64) -> Option<String> {
    let header = PageHeader::read_from_prefix(page)
        .expect("pages are larger than the header")
        .0;
    let owner = header.store_id.get();
    (owner != 0 && owner != store_id)
        .then(|| format!("{id}: formatted by store {owner:016x}, not this store ({store_id:016x})"))
}

/// Why a page header read alone (the first 64 bytes of page `id`, its checksum not checked:
/// the rest of the page was not read) shows a page other than `id` of store `store_id`, or
/// `None`. An all-zero header (a page never written) passes. For the cheap checks at open.
pub fn check_header_identity(header: &[u8], id: PageId, store_id: u64) -> Option<String> {
    let header = PageHeader::read_from_prefix(header).ok()?.0;
    if header.crc.get() == 0 && header.as_bytes().iter().all(|&b| b == 0) {
        return None;
    }
    if header.page_id.get() != id.0 {
        return Some(format!(
            "{id}: header names page id {:#x} (a file renamed or swapped?)",
            header.page_id.get()
        ));
    }
    let owner = header.store_id.get();
    (owner != 0 && owner != store_id)
        .then(|| format!("{id}: formatted by store {owner:016x}, not this store ({store_id:016x})"))
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
    /// Offset of the entry in the page, in bytes.
    pub offset: U32,
    /// Length of the entry in bytes (0: the slot is free).
    pub len_bytes: U32,
}

/// Size of a [`CatalogSlot`] in bytes.
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
    /// Raw id of the vector page holding the entry's vector.
    pub vector_page: U64,
    /// Slot of the vector in that page.
    pub vector_slot: U32,
    /// Flags: [`ENTRY_FLAG_OVERFLOW`] or 0.
    pub flags: U16,
    /// Length of the id in bytes (1..=1024, UTF-8).
    pub id_len: U16,
    /// Length of the encoded metadata in bytes.
    pub meta_len: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// Raw id of the first overflow page when the flag is set, else 0.
    pub overflow_page: U64,
}

/// Size of an [`EntryHeader`] in bytes.
pub const ENTRY_HEADER_BYTES: usize = 32;
/// Entry flag: the metadata lives in an overflow chain starting at `overflow_page`.
pub const ENTRY_FLAG_OVERFLOW: u16 = 1;
const _: () = assert!(size_of::<EntryHeader>() == ENTRY_HEADER_BYTES);

/// Overflow pages hold metadata bytes from this offset on.
pub const OVERFLOW_DATA_OFFSET: usize = PAGE_HEADER_BYTES;

/// One used slot of a catalog page, as [`decode_catalog_page`] reads it.
#[derive(Clone, Copy, Debug)]
pub struct CatalogEntry<'a> {
    /// The slot number.
    pub slot: u32,
    /// Where the entry lies in the page.
    pub offset: u32,
    /// The entry's length in bytes.
    pub len_bytes: u32,
    /// The entry's fixed part.
    pub header: EntryHeader,
    /// The entry's id.
    pub id: &'a str,
    /// The encoded metadata when it is inline (`None`: it lives in an overflow chain).
    pub inline_meta: Option<&'a [u8]>,
}

/// Decodes the entries of the catalog page `image` (a whole page of kind catalog, any page size) by the rules
/// that need nothing but the page itself: the slot directory ends before the entry data, each
/// used slot points at an entry inside the page, entries do not overlap, each entry header is
/// whole with a 1..=1024-byte UTF-8 id, zero reserved bytes, known flags, a metadata length in
/// range that matches its inline bytes (which must be valid encoded metadata) or, for an
/// overflow entry, no inline bytes, and no id appears twice. The checksum, the page id and
/// the rules that need other pages (vector slots, overflow chains) are the caller's.
///
/// Pure: it allocates only the result and never panics, whatever the bytes; the error says
/// what is wrong. The store's loader (`store::state`) decodes catalog pages with it and adds the
/// rules that need the arena and the other pages.
pub fn decode_catalog_page(image: &[u8]) -> Result<Vec<CatalogEntry<'_>>, String> {
    let (slot_count, data_start) = decode_catalog_directory(image)?;
    let mut entries = Vec::new();
    for slot in 0..slot_count {
        let at = CATALOG_SLOTS_OFFSET + slot as usize * CATALOG_SLOT_BYTES;
        let Ok(entry) = CatalogSlot::read_from_bytes(&image[at..at + CATALOG_SLOT_BYTES]) else {
            return Err(format!("slot {slot}: the directory runs past the page"));
        };
        let (offset, len) = (entry.offset.get(), entry.len_bytes.get());
        if len == 0 {
            continue;
        }
        entries.push(decode_catalog_entry(image, slot, offset, len, data_start)?);
    }
    check_catalog_entries_disjoint(&entries)?;
    check_catalog_ids_unique(&entries)?;
    Ok(entries)
}

/// Checks the header of the catalog page `image` and that its slot directory ends before the
/// entry data, which ends inside the page; returns the slot count and where the entry data
/// starts.
fn decode_catalog_directory(image: &[u8]) -> Result<(u32, u32), String> {
    let Ok((header, _)) = PageHeader::read_from_prefix(image) else {
        return Err(format!("a page of {} bytes holds no header", image.len()));
    };
    if header.kind != PageKind::Catalog as u8 {
        return Err(format!("page kind {} is not a catalog page", header.kind));
    }
    let page_size = image.len() as u64;
    let slot_count = header.a.get();
    let data_start = header.b.get();
    let directory_end = CATALOG_SLOTS_OFFSET as u64 + u64::from(slot_count) * CATALOG_SLOT_BYTES as u64;
    if directory_end > u64::from(data_start) || u64::from(data_start) > page_size {
        return Err(format!(
            "slot directory ({slot_count} slots) overlaps entry data at {data_start}"
        ));
    }
    Ok((slot_count, data_start))
}

/// Decodes the entry of used slot `slot`, `len` bytes at `offset` of `image`: it must lie in
/// the entry data (from `data_start` to the page end) and hold a whole header, a valid id and
/// its metadata or none.
fn decode_catalog_entry(
    image: &[u8],
    slot: u32,
    offset: u32,
    len: u32,
    data_start: u32,
) -> Result<CatalogEntry<'_>, String> {
    use crate::format::meta;

    let page_size = image.len() as u64;
    if offset < data_start || u64::from(offset) + u64::from(len) > page_size {
        return Err(format!("slot {slot} points outside the entry data"));
    }
    let bytes = &image[offset as usize..offset as usize + len as usize];
    let Ok((entry_header, rest)) = EntryHeader::read_from_prefix(bytes) else {
        return Err(format!("slot {slot}: entry shorter than its header"));
    };
    let id_len = entry_header.id_len.get() as usize;
    if id_len == 0 || id_len > meta::ID_MAX_BYTES || id_len > rest.len() {
        return Err(format!("slot {slot}: id length {id_len} out of range"));
    }
    let id = std::str::from_utf8(&rest[..id_len]).map_err(|_| format!("slot {slot}: id is not UTF-8"))?;
    let meta_len = entry_header.meta_len.get();
    if meta_len as usize > meta::METADATA_MAX_BYTES {
        return Err(format!("slot {slot}: metadata length {meta_len} out of range"));
    }
    if entry_header.reserved.get() != 0 {
        return Err(format!("slot {slot}: reserved entry bytes are not zero"));
    }
    let inline_meta = decode_entry_inline_meta(&entry_header, &rest[id_len..], slot)?;
    Ok(CatalogEntry {
        slot,
        offset,
        len_bytes: len,
        header: entry_header,
        id,
        inline_meta,
    })
}

/// The inline metadata of an entry whose bytes after the id are `inline` (slot `slot`):
/// exactly the header's `meta_len` bytes of valid encoded metadata, or none at all for an
/// overflow entry (`None`).
fn decode_entry_inline_meta<'a>(
    entry_header: &EntryHeader,
    inline: &'a [u8],
    slot: u32,
) -> Result<Option<&'a [u8]>, String> {
    let meta_len = entry_header.meta_len.get();
    match entry_header.flags.get() {
        0 => {
            if inline.len() != meta_len as usize {
                return Err(format!("slot {slot}: metadata length disagrees with the entry"));
            }
            crate::format::meta::validate(inline).map_err(|r| format!("slot {slot}: {r}"))?;
            Ok(Some(inline))
        }
        ENTRY_FLAG_OVERFLOW => {
            if !inline.is_empty() {
                return Err(format!("slot {slot}: overflow entry has inline bytes"));
            }
            Ok(None)
        }
        flags => Err(format!("slot {slot}: unknown entry flags {flags}")),
    }
}

/// Checks that no two of the decoded `entries` overlap in the page.
fn check_catalog_entries_disjoint(entries: &[CatalogEntry<'_>]) -> Result<(), String> {
    let mut extents: Vec<(u32, u32)> = entries.iter().map(|e| (e.offset, e.len_bytes)).collect();
    extents.sort_unstable();
    for pair in extents.windows(2) {
        if u64::from(pair[1].0) < u64::from(pair[0].0) + u64::from(pair[0].1) {
            return Err(format!("entries overlap at offset {}", pair[1].0));
        }
    }
    Ok(())
}

/// Checks that no id appears twice among the decoded `entries`.
fn check_catalog_ids_unique(entries: &[CatalogEntry<'_>]) -> Result<(), String> {
    let mut ids: Vec<&str> = entries.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(format!("id {:?} appears twice in the page", pair[0]));
    }
    Ok(())
}

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

    /// A catalog page of 4 KiB holding `entries` (id, inline metadata or `None` for an
    /// overflow entry), packed down from the page end, with `spare` free slots after them.
    fn catalog_page(entries: &[(&str, Option<&[u8]>)], spare: u32) -> Vec<u8> {
        let mut page = vec![0u8; 4096];
        let slots = entries.len() as u32 + spare;
        let mut data_start = 4096u32;
        for (slot, (id, meta)) in entries.iter().enumerate() {
            let mut entry = EntryHeader {
                vector_page: U64::new(PageId::new(Space::Vector, 0).0),
                vector_slot: U32::new(slot as u32),
                flags: U16::new(if meta.is_some() { 0 } else { ENTRY_FLAG_OVERFLOW }),
                id_len: U16::new(id.len() as u16),
                meta_len: U32::new(meta.map_or(3000, |m| m.len() as u32)),
                reserved: U32::ZERO,
                overflow_page: U64::new(if meta.is_some() {
                    0
                } else {
                    PageId::new(Space::Catalog, 1).0
                }),
            }
            .as_bytes()
            .to_vec();
            entry.extend_from_slice(id.as_bytes());
            entry.extend_from_slice(meta.unwrap_or(&[]));
            data_start -= entry.len() as u32;
            page[data_start as usize..data_start as usize + entry.len()].copy_from_slice(&entry);
            let at = CATALOG_SLOTS_OFFSET + slot * CATALOG_SLOT_BYTES;
            page[at..at + 4].copy_from_slice(&data_start.to_le_bytes());
            page[at + 4..at + 8].copy_from_slice(&(entry.len() as u32).to_le_bytes());
        }
        let header = new_header(PageKind::Catalog, PageId::new(Space::Catalog, 0), slots, data_start);
        page[..PAGE_HEADER_BYTES].copy_from_slice(header.as_bytes());
        seal(&mut page);
        page
    }

    fn encoded_meta(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::format::meta::encode(pairs, &mut out);
        out
    }

    #[test]
    fn a_well_formed_catalog_page_decodes_to_its_entries() {
        let meta = encoded_meta(&[("k", "v")]);
        let page = catalog_page(
            &[("a", Some(&meta)), ("long", None), ("é", Some(&encoded_meta(&[])))],
            2,
        );
        let entries = decode_catalog_page(&page).expect("a well-formed page decodes");
        let seen: Vec<(u32, &str, Option<&[u8]>)> = entries.iter().map(|e| (e.slot, e.id, e.inline_meta)).collect();
        assert_eq!(
            seen,
            [
                (0, "a", Some(&meta[..])),
                (1, "long", None),
                (2, "é", Some(&[0u8, 0][..]))
            ]
        );
        assert_eq!(entries[1].header.meta_len.get(), 3000);
        assert_eq!(
            decode_catalog_page(&catalog_page(&[], 0)).map(|e| e.len()),
            Ok(0),
            "an empty catalog page has no entries"
        );
        assert!(
            decode_catalog_page(&vec![0u8; 4096]).is_err_and(|e| e.contains("kind 0")),
            "a zero page is no catalog page"
        );
    }

    #[test]
    fn a_damaged_catalog_page_is_refused_with_a_reason() {
        let meta = encoded_meta(&[("k", "v")]);
        let page = catalog_page(&[("a", Some(&meta)), ("bb", Some(&meta))], 0);
        let first = u32::from_le_bytes(page[64..68].try_into().unwrap()) as usize;
        let at = |p: &mut Vec<u8>, offset: usize, bytes: &[u8]| p[offset..offset + bytes.len()].copy_from_slice(bytes);
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Damage)> = vec![
            (
                "overlaps entry data",
                Box::new(move |p| at(p, 24, &600u32.to_le_bytes())),
            ),
            (
                "overlaps entry data",
                Box::new(move |p| at(p, 28, &5000u32.to_le_bytes())),
            ),
            ("points outside", Box::new(move |p| at(p, 68, &u32::MAX.to_le_bytes()))),
            (
                "shorter than its header",
                Box::new(move |p| at(p, 68, &8u32.to_le_bytes())),
            ),
            ("id length 0", Box::new(move |p| at(p, first + 14, &[0, 0]))),
            (
                "id length 2000",
                Box::new(move |p| at(p, first + 14, &2000u16.to_le_bytes())),
            ),
            ("not UTF-8", Box::new(move |p| p[first + 32] = 0xff)),
            (
                "metadata length 4294967295",
                Box::new(move |p| at(p, first + 16, &u32::MAX.to_le_bytes())),
            ),
            ("reserved", Box::new(move |p| p[first + 20] = 1)),
            ("unknown entry flags 4", Box::new(move |p| p[first + 12] = 4)),
            ("overflow entry has inline bytes", Box::new(move |p| p[first + 12] = 1)),
            ("slot 0: metadata", Box::new(move |p| p[first + 33] = 9)),
            (
                "overlap",
                Box::new(move |p| {
                    let slot0 = p[64..72].to_vec();
                    at(p, 72, &slot0);
                }),
            ),
        ];
        for (reason, damage) in cases {
            let mut damaged = page.clone();
            damage(&mut damaged);
            match decode_catalog_page(&damaged) {
                Err(error) => assert!(error.contains(reason), "expected {reason:?}, got {error:?}"),
                Ok(entries) => panic!("expected {reason:?}, accepted {entries:?}"),
            }
        }
        let twice = catalog_page(&[("a", Some(&meta)), ("a", None)], 0);
        assert!(decode_catalog_page(&twice).is_err_and(|e| e.contains("twice")));
        assert!(decode_catalog_page(&page[..63]).is_err(), "no header");
    }

    #[test]
    fn is_all_zero_finds_any_non_zero_byte() {
        for len in [0usize, 1, 63, 64, 65, 4096] {
            let mut bytes = vec![0u8; len];
            assert!(is_all_zero(&bytes), "{len} zeros");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if at < len {
                    bytes[at] = 0x80;
                    assert!(!is_all_zero(&bytes), "{len} bytes, non-zero at {at}");
                    bytes[at] = 0;
                }
            }
        }
    }

    #[test]
    fn vector_strides_are_aligned_and_slots_follow_the_owner_table() {
        assert_eq!(vector_stride_bytes(384), 1536);
        assert_eq!(vector_stride_bytes(3), 16);
        for (page, dimension) in [(16384u32, 384u32), (4096, 3), (4096, 1000), (65536, 1), (16384, 256)] {
            let layout = VectorLayout::new(page, dimension);
            let n = layout.slots_per_page as usize;
            assert!(n >= 1, "{page}/{dimension}: a slot fits");
            assert!(
                layout.slots_offset >= VECTOR_OWNERS_OFFSET + n * VECTOR_OWNER_BYTES,
                "slots after the owners"
            );
            assert_eq!(layout.slots_offset % VECTOR_STRIDE_ALIGN_BYTES, 0, "aligned slots");
            assert!(
                layout.slot_offset(n as u32 - 1) + layout.stride_bytes <= page as usize,
                "the last slot fits"
            );
            let more = n + 1;
            assert!(
                vector_slots_offset(more) + more * layout.stride_bytes > page as usize,
                "{page}/{dimension}: no room for one slot more"
            );
        }
        assert_eq!(vector_slots_per_page(16384, 384), 10);
        let max = vector_slots_max_dimension(4096);
        assert_eq!(
            vector_slots_per_page(4096, max),
            1,
            "the largest dimension fits one slot"
        );
        assert_eq!(vector_slots_per_page(4096, max + 4), 0, "and no larger one does");
        assert_eq!(decode_owner(encode_owner(7, 4000)), Some((7, 4000)));
        assert_eq!(decode_owner(0), None, "0 is a free slot");
    }
}
