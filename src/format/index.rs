//! The id index (format-spec/FORMAT.md, "The id index"): the meta page, catalog page 0, and
//! the nodes of a B+tree over the bytes of the ids, in catalog-space pages.
//!
//! A node is a slotted page: after the 64-byte page header, a directory of 8-byte entries in key
//! order, each a `u32` cell offset and the cell key's **head** (its 4 bytes after the node's key
//! prefix); cells are packed from the end of the page down. The gap between the end of the
//! directory and the lowest cell (`b`, the start of cell data) is free; a removed cell's bytes
//! stay where they were until the node is rewritten. The header's bytes 48..64 hold the node's
//! **key prefix** (its length, then up to 15 bytes), which every key of the node begins with.
//!
//! A search compares heads, which lie in the directory, and reads a cell only where a head ties:
//! a descent through a node the CPU's caches do not hold waits for a few directory lines and
//! one cell, not for a cell per probe.
//!
//! | cell | layout |
//! |---|---|
//! | leaf | `key_len u16`, [`LeafValue`] (24 bytes), key |
//! | branch | `key_len u16`, child page id `u64`, key |
//!
//! A branch with `n` cells has `n + 1` children: the leftmost (header field `c`) holds the keys
//! below the first cell's key; the child of cell `i` holds the keys from cell `i`'s key up to
//! the next cell's key. Keys are 1 to [`KEY_MAX_BYTES`] bytes and strictly increasing in a node.
//!
//! Everything here is pure and never panics on page bytes: a reader checks each offset and
//! length it follows, and [`Node::check`] checks a whole node.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::format::meta::ID_MAX_BYTES;
use crate::format::page::{PAGE_HEADER_BYTES, PageHeader, PageKind};
use crate::format::wal::PAGE_SIZE_MIN_BYTES;

/// The meta page is catalog page 0.
pub const META_PAGE_NO: u64 = 0;

/// The meta page's fields, at [`META_FIELDS_OFFSET`].
///
/// | offset | size | field |
/// |---|---|---|
/// | 64 | 8 | root: page id of the index's root node (0 = the index is empty) |
/// | 72 | 4 | height: levels of the index (0 = empty, 1 = the root is a leaf) |
/// | 76 | 4 | graph: catalog page number of the approximate-search index's meta page (0 = no index; format/graph.rs) |
/// | 80 | 8 | count: entries in the index |
/// | 88 | 8 | vector pages: pages `0..n` of the vector space are formatted |
/// | 96 | 8 | catalog pages: pages `0..n` of the catalog space are in use or free |
/// | 104 | 8 | hot catalog page: id of the catalog page new entries go to first (0 = none) |
/// | 112 | 16 | vector list: head and tail page ids of the vector pages with a free slot |
/// | 128 | 16 | roomy list: catalog pages that gained free space since they were last full |
/// | 144 | 16 | free list: free catalog-space pages (kind free) |
///
/// A list's head and tail are 0 when it is empty. The rest of the page is zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct MetaFields {
    /// Page id of the root node, 0 when the index is empty.
    pub root: U64,
    /// Levels of the index.
    pub height: U32,
    /// The catalog page number of the graph meta page of the approximate-search index (0: the
    /// store has none).
    pub graph: U32,
    /// Entries in the index.
    pub count: U64,
    /// Vector pages formatted.
    pub vector_pages: U64,
    /// Catalog-space pages handed out (the meta page included).
    pub catalog_pages: U64,
    /// The catalog page new entries go to first (a page id, 0 = none).
    pub hot_catalog: U64,
    /// Vector pages with a free slot.
    pub vector_list: ListEnds,
    /// Catalog pages with freed space.
    pub roomy_list: ListEnds,
    /// Free catalog-space pages.
    pub free_list: ListEnds,
}

/// The two ends of a list of pages linked through header field `c` (page ids, 0 = empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ListEnds {
    /// The first page, popped first.
    pub head: U64,
    /// The last page, pushed after.
    pub tail: U64,
}

/// Where the meta fields start.
pub const META_FIELDS_OFFSET: usize = PAGE_HEADER_BYTES;
/// Bytes of the meta fields.
pub const META_FIELDS_BYTES: usize = 96;
const _: () = assert!(size_of::<MetaFields>() == META_FIELDS_BYTES);
const _: () = assert!(size_of::<ListEnds>() == 16);
/// Offsets of the meta fields in the page.
pub const META_ROOT_OFFSET: usize = META_FIELDS_OFFSET + std::mem::offset_of!(MetaFields, root);
/// See [`MetaFields::height`].
pub const META_HEIGHT_OFFSET: usize = META_FIELDS_OFFSET + std::mem::offset_of!(MetaFields, height);
/// See [`MetaFields::count`].
pub const META_COUNT_OFFSET: usize = META_FIELDS_OFFSET + std::mem::offset_of!(MetaFields, count);
const _: () = assert!(META_ROOT_OFFSET == 64 && META_HEIGHT_OFFSET == 72 && META_COUNT_OFFSET == 80);
const _: () = assert!(META_FIELDS_OFFSET + std::mem::offset_of!(MetaFields, free_list) == 144);

impl MetaFields {
    /// Reads the meta fields of a meta page image.
    pub fn read(image: &[u8]) -> Option<MetaFields> {
        let bytes = image.get(META_FIELDS_OFFSET..META_FIELDS_OFFSET + META_FIELDS_BYTES)?;
        MetaFields::read_from_bytes(bytes).ok()
    }

    /// Why the fields of a meta page of a store with `page_size_bytes` pages are not valid,
    /// or `None`: the rules that need nothing but the page (FORMAT.md, "The meta page").
    pub fn check(&self, image: &[u8]) -> Option<String> {
        let header = PageHeader::read_from_prefix(image).ok()?.0;
        if header.kind != PageKind::Meta as u8 {
            return Some(format!("page kind {} is not the meta page", header.kind));
        }
        if header.a.get() != 0 || header.b.get() != 0 || header.c.get() != 0 {
            return Some("meta page: reserved fields are not zero".into());
        }
        if (self.root.get() == 0) != (self.height.get() == 0) {
            return Some("meta page: an index of no root has no height, and only it".into());
        }
        if self.root.get() == 0 && self.count.get() != 0 {
            return Some(format!("meta page: {} entries in an empty index", self.count.get()));
        }
        if self.height.get() > HEIGHT_MAX {
            return Some(format!("meta page: index height {} out of range", self.height.get()));
        }
        for (name, list) in [
            ("vector", self.vector_list),
            ("roomy", self.roomy_list),
            ("free", self.free_list),
        ] {
            if (list.head.get() == 0) != (list.tail.get() == 0) {
                return Some(format!("meta page: the {name} list has one end only"));
            }
        }
        if !crate::zeros::all_zero(&image[META_FIELDS_OFFSET + META_FIELDS_BYTES..]) {
            return Some("meta page: bytes after the fields are not zero".into());
        }
        None
    }
}

/// The most levels an index may have: far more than ids can fill (each level multiplies the
/// entries by at least two), so a larger height is damage.
pub const HEIGHT_MAX: u32 = 64;

/// The largest key: an id.
pub const KEY_MAX_BYTES: usize = ID_MAX_BYTES;
/// The directory of a node starts right after the header.
pub const NODE_DIR_OFFSET: usize = PAGE_HEADER_BYTES;
/// Bytes of one directory entry: the cell offset (`u32`), then the key's head.
pub const NODE_DIR_ENTRY_BYTES: usize = 8;
/// Bytes of a key head: the key's bytes after the node's prefix, zero-padded.
pub const KEY_HEAD_BYTES: usize = 4;
/// Where a directory entry's head starts, from the entry's start.
pub const DIR_HEAD_OFFSET: usize = 4;
const _: () = assert!(DIR_HEAD_OFFSET + KEY_HEAD_BYTES == NODE_DIR_ENTRY_BYTES);
/// Where the key prefix field starts in the node's header: its length `p` (one byte), then the
/// prefix's `p` bytes, then zeros to the header's end.
pub const NODE_PREFIX_OFFSET: usize = crate::format::page::PAGE_D_OFFSET;
/// Bytes of the key prefix field.
pub const NODE_PREFIX_FIELD_BYTES: usize = 16;
/// The longest key prefix a node records.
pub const NODE_PREFIX_MAX_BYTES: usize = NODE_PREFIX_FIELD_BYTES - 1;
const _: () = assert!(NODE_PREFIX_OFFSET + NODE_PREFIX_FIELD_BYTES == PAGE_HEADER_BYTES);
/// Bytes of the key length in front of every cell.
pub const CELL_KEY_LEN_BYTES: usize = 2;
/// Bytes of a leaf cell's value.
pub const LEAF_VALUE_BYTES: usize = 24;
/// Bytes of a branch cell's child page id.
pub const BRANCH_CHILD_BYTES: usize = 8;

/// What a leaf maps an id to: where its vector and its catalog entry are.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | vector page number |
/// | 4 | 4 | vector slot |
/// | 8 | 4 | catalog page number |
/// | 12 | 4 | catalog slot (directory entry of the catalog page) |
/// | 16 | 4 | entry offset in the catalog page |
/// | 20 | 4 | entry length in bytes |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct LeafValue {
    /// The vector's page number in the vector space.
    pub vector_page: U32,
    /// Its slot in that page.
    pub vector_slot: U32,
    /// The catalog page of the id's entry.
    pub catalog_page: U32,
    /// The entry's directory slot in that page.
    pub catalog_slot: U32,
    /// Where the entry starts in that page.
    pub entry_offset: U32,
    /// The entry's length in bytes.
    pub entry_len: U32,
}
const _: () = assert!(size_of::<LeafValue>() == LEAF_VALUE_BYTES);

/// The two kinds of node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Cells map keys to [`LeafValue`]s.
    Leaf,
    /// Cells map separator keys to children.
    Branch,
}

impl NodeKind {
    /// The page kind of a node of this kind.
    pub fn page_kind(self) -> PageKind {
        match self {
            NodeKind::Leaf => PageKind::IndexLeaf,
            NodeKind::Branch => PageKind::IndexBranch,
        }
    }

    /// Bytes between the key length and the key: the value or the child.
    pub fn payload_bytes(self) -> usize {
        match self {
            NodeKind::Leaf => LEAF_VALUE_BYTES,
            NodeKind::Branch => BRANCH_CHILD_BYTES,
        }
    }

    /// Bytes of a cell with a key of `key_len` bytes.
    pub fn cell_bytes(self, key_len: usize) -> usize {
        CELL_KEY_LEN_BYTES + self.payload_bytes() + key_len
    }
}

/// A node read from a page image. Construction checks the header; each accessor checks what it
/// follows, so a damaged node yields `Err(reason)`, never a panic or a read out of the page.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    image: &'a [u8],
    /// Leaf or branch.
    pub kind: NodeKind,
    /// Cells in the node.
    pub count: usize,
    /// The lowest byte of cell data.
    pub data_start: usize,
    /// Branches: the leftmost child's page id.
    pub leftmost: u64,
    /// The key prefix: every key of the node begins with it.
    pub prefix: &'a [u8],
}

impl<'a> Node<'a> {
    /// Reads the header of the node in `image` (a whole page): its kind, cell count and start
    /// of cell data, which must leave room for the directory.
    pub fn parse(image: &'a [u8]) -> Result<Node<'a>, String> {
        let Ok((header, _)) = PageHeader::read_from_prefix(image) else {
            return Err(format!("a page of {} bytes holds no header", image.len()));
        };
        let kind = match PageKind::from_u8(header.kind) {
            Some(PageKind::IndexLeaf) => NodeKind::Leaf,
            Some(PageKind::IndexBranch) => NodeKind::Branch,
            _ => return Err(format!("page kind {} is not an index node", header.kind)),
        };
        let count = header.a.get() as usize;
        let data_start = header.b.get() as usize;
        let directory_end = NODE_DIR_OFFSET as u64 + count as u64 * NODE_DIR_ENTRY_BYTES as u64;
        if directory_end > data_start as u64 || data_start > image.len() {
            return Err(format!(
                "node of {count} cells: directory overlaps cell data at {data_start}"
            ));
        }
        let leftmost = header.c.get();
        match kind {
            NodeKind::Leaf if leftmost != 0 => return Err("leaf: header field c is not zero".into()),
            NodeKind::Branch if leftmost == 0 => return Err("branch without a leftmost child".into()),
            _ => {}
        }
        let prefix_len = image[NODE_PREFIX_OFFSET] as usize;
        if prefix_len > NODE_PREFIX_MAX_BYTES {
            return Err(format!("key prefix length {prefix_len} out of range"));
        }
        let prefix = &image[NODE_PREFIX_OFFSET + 1..NODE_PREFIX_OFFSET + 1 + prefix_len];
        Ok(Node {
            image,
            kind,
            count,
            data_start,
            leftmost,
            prefix,
        })
    }

    /// The end of the directory: free space runs from here to `data_start`.
    pub fn directory_end(&self) -> usize {
        NODE_DIR_OFFSET + self.count * NODE_DIR_ENTRY_BYTES
    }

    /// Free bytes between the directory and the cells.
    pub fn gap_bytes(&self) -> usize {
        self.data_start - self.directory_end()
    }

    /// Where cell `i` starts, checked to lie in the cell data with room for its fixed part.
    pub fn cell_offset(&self, i: usize) -> Result<usize, String> {
        assert!(i < self.count, "cell {i} of a node of {}", self.count);
        let at = NODE_DIR_OFFSET + i * NODE_DIR_ENTRY_BYTES;
        let offset = u32::from_le_bytes(self.image[at..at + 4].try_into().expect("4 bytes")) as usize;
        let fixed = CELL_KEY_LEN_BYTES + self.kind.payload_bytes();
        if offset < self.data_start || offset + fixed > self.image.len() {
            return Err(format!("cell {i} at {offset} lies outside the cell data"));
        }
        Ok(offset)
    }

    /// Cell `i`'s key.
    pub fn key(&self, i: usize) -> Result<&'a [u8], String> {
        let offset = self.cell_offset(i)?;
        let key_len = u16::from_le_bytes([self.image[offset], self.image[offset + 1]]) as usize;
        let start = offset + CELL_KEY_LEN_BYTES + self.kind.payload_bytes();
        if key_len == 0 || key_len > KEY_MAX_BYTES || start + key_len > self.image.len() {
            return Err(format!("cell {i}: key length {key_len} out of range"));
        }
        Ok(&self.image[start..start + key_len])
    }

    /// The whole of cell `i`, key length to key.
    pub fn cell(&self, i: usize) -> Result<&'a [u8], String> {
        let offset = self.cell_offset(i)?;
        let key = self.key(i)?;
        Ok(&self.image[offset..offset + self.kind.cell_bytes(key.len())])
    }

    /// Where cell `i`'s payload (value or child) starts.
    pub fn payload_offset(&self, i: usize) -> Result<usize, String> {
        Ok(self.cell_offset(i)? + CELL_KEY_LEN_BYTES)
    }

    /// A leaf's value of cell `i`.
    pub fn value(&self, i: usize) -> Result<LeafValue, String> {
        assert_eq!(self.kind, NodeKind::Leaf, "values are in leaves");
        let at = self.payload_offset(i)?;
        Ok(LeafValue::read_from_bytes(&self.image[at..at + LEAF_VALUE_BYTES]).expect("24 bytes"))
    }

    /// A branch's child `j` (0 = the leftmost, `j` = cell `j - 1`'s), a page id.
    pub fn child(&self, j: usize) -> Result<u64, String> {
        assert_eq!(self.kind, NodeKind::Branch, "children are in branches");
        if j == 0 {
            return Ok(self.leftmost);
        }
        let at = self.payload_offset(j - 1)?;
        Ok(u64::from_le_bytes(self.image[at..at + 8].try_into().expect("8 bytes")))
    }

    /// The head of cell `i`'s key, as its directory entry holds it (a big-endian `u32`, so that
    /// heads compare as the bytes do).
    pub fn head(&self, i: usize) -> u32 {
        assert!(i < self.count, "cell {i} of a node of {}", self.count);
        let at = NODE_DIR_OFFSET + i * NODE_DIR_ENTRY_BYTES + DIR_HEAD_OFFSET;
        // In the page: `parse` checked that the directory ends before the cell data.
        u32::from_be_bytes(self.image[at..at + KEY_HEAD_BYTES].try_into().expect("4 bytes"))
    }

    /// Binary search for `key`: `Ok(i)` if cell `i` holds it, else `Err(i)`, the position it
    /// would take.
    ///
    /// Every key of the node begins with its prefix: a key that does not lies before or after
    /// them all. Otherwise the probes compare heads, which the directory holds, and read a cell
    /// only where its head equals the key's: a descent through a node the CPU's caches do not
    /// hold waits for a few directory lines and about one cell, not a cell per probe (1.05 cell
    /// reads a lookup at 1,048,000 ids, the found one included). A point read there, format 2
    /// (a cell per probe, the next probes' cells fetched ahead) against this, interleaved runs:
    /// 997–1,057 ns → 801–906 ns.
    pub fn search(&self, key: &[u8]) -> Result<Result<usize, usize>, String> {
        let p = self.prefix.len();
        let shares_prefix = key.len() >= p && compare_keys(&key[..p], self.prefix) == std::cmp::Ordering::Equal;
        if !shares_prefix {
            let below = compare_keys(key, self.prefix) == std::cmp::Ordering::Less;
            return Ok(Err(if below { 0 } else { self.count }));
        }
        let wanted = key_head(key, p);
        // A branchy search, not `partition_point`'s branch-free one: in a node the caches do
        // not hold, each probe's load waits for the one before it unless the CPU runs ahead on
        // a predicted branch (which fetches the next probe's line half the time). Measured at
        // 262,144 ids: branch-free, fewer instructions and 5-10% slower point reads.
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let mid = low + (high - low) / 2;
            let order = match self.head(mid).cmp(&wanted) {
                std::cmp::Ordering::Equal => compare_keys(self.key(mid)?, key),
                unequal => unequal,
            };
            match order {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Ok(Ok(mid)),
            }
        }
        Ok(Err(low))
    }

    /// A branch's child for `key`: its index (the number of cells whose key is at most `key`)
    /// and page id.
    pub fn child_for(&self, key: &[u8]) -> Result<(usize, u64), String> {
        let j = match self.search(key)? {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        Ok((j, self.child(j)?))
    }

    /// Bytes the live cells and the directory take.
    pub fn used_bytes(&self) -> Result<usize, String> {
        let mut used = self.count * NODE_DIR_ENTRY_BYTES;
        for i in 0..self.count {
            used += self.kind.cell_bytes(self.key(i)?.len());
        }
        Ok(used)
    }

    /// Checks the whole node: every cell inside the cell data, no two overlapping, keys of 1 to
    /// [`KEY_MAX_BYTES`] bytes strictly increasing, each beginning with the node's prefix and
    /// headed by its head, the prefix field zero after the prefix, and (branches) no child
    /// page id of 0.
    pub fn check(&self) -> Result<(), String> {
        let field_end = NODE_PREFIX_OFFSET + 1 + self.prefix.len();
        if !crate::zeros::all_zero(&self.image[field_end..PAGE_HEADER_BYTES]) {
            return Err("key prefix field: bytes after the prefix are not zero".into());
        }
        let mut extents = Vec::with_capacity(self.count);
        for i in 0..self.count {
            let cell = self.cell(i)?;
            let offset = self.cell_offset(i)?;
            extents.push((offset, cell.len()));
            let key = self.key(i)?;
            if i > 0 && self.key(i - 1)? >= key {
                return Err(format!("cell {i}: keys out of order"));
            }
            if !key.starts_with(self.prefix) {
                return Err(format!("cell {i}: key does not begin with the node's key prefix"));
            }
            if self.head(i) != key_head(key, self.prefix.len()) {
                return Err(format!("cell {i}: directory head does not match the key"));
            }
            if self.kind == NodeKind::Branch && self.child(i + 1)? == 0 {
                return Err(format!("cell {i}: child page id 0"));
            }
        }
        extents.sort_unstable();
        if let Some(pair) = extents.windows(2).find(|p| p[0].0 + p[0].1 > p[1].0) {
            return Err(format!("cells overlap at offset {}", pair[1].0));
        }
        Ok(())
    }
}

/// A node laid out afresh (see [`layout_node`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLayout {
    /// Header field `a`: the cell count.
    pub count: u32,
    /// Header field `b`: the start of cell data.
    pub data_start: u32,
    /// The header's key prefix field (bytes 48..64).
    pub prefix_field: [u8; NODE_PREFIX_FIELD_BYTES],
    /// The bytes from [`NODE_DIR_OFFSET`] to the end of the page: directory, gap of zeros, cells.
    pub body: Vec<u8>,
}

/// Lays out a node of `kind` holding `cells` (each a whole encoded cell, in key order) in a
/// page of `page_size_bytes`, with the key prefix its first and last keys share (at most
/// [`NODE_PREFIX_MAX_BYTES`]). `None` if the cells do not fit.
pub fn layout_node(page_size_bytes: usize, kind: NodeKind, cells: &[&[u8]]) -> Option<NodeLayout> {
    let count = cells.len();
    let prefix = match (cells.first(), cells.last()) {
        (Some(first), Some(last)) => common_prefix(cell_key(kind, first), cell_key(kind, last)),
        _ => &[][..],
    };
    let mut body = vec![0u8; page_size_bytes - NODE_DIR_OFFSET];
    let mut data_start = page_size_bytes;
    let directory_end = NODE_DIR_OFFSET + count * NODE_DIR_ENTRY_BYTES;
    for (i, cell) in cells.iter().enumerate() {
        if data_start < directory_end + cell.len() {
            return None;
        }
        data_start -= cell.len();
        body[data_start - NODE_DIR_OFFSET..data_start - NODE_DIR_OFFSET + cell.len()].copy_from_slice(cell);
        let entry = directory_entry(data_start, cell_key(kind, cell), prefix.len());
        let at = i * NODE_DIR_ENTRY_BYTES;
        body[at..at + NODE_DIR_ENTRY_BYTES].copy_from_slice(&entry);
    }
    Some(NodeLayout {
        count: count as u32,
        data_start: data_start as u32,
        prefix_field: prefix_field(prefix),
        body,
    })
}

/// The key prefix a node records for keys from `first` to `last`: the bytes they share, at most
/// [`NODE_PREFIX_MAX_BYTES`] of them.
pub fn common_prefix<'k>(first: &'k [u8], last: &[u8]) -> &'k [u8] {
    let shared = first.iter().zip(last).take_while(|(a, b)| a == b).count();
    &first[..shared.min(NODE_PREFIX_MAX_BYTES)]
}

/// The header's key prefix field for `prefix`: its length, the prefix, zeros.
pub fn prefix_field(prefix: &[u8]) -> [u8; NODE_PREFIX_FIELD_BYTES] {
    assert!(
        prefix.len() <= NODE_PREFIX_MAX_BYTES,
        "a key prefix of at most 15 bytes"
    );
    let mut field = [0u8; NODE_PREFIX_FIELD_BYTES];
    field[0] = prefix.len() as u8;
    field[1..1 + prefix.len()].copy_from_slice(prefix);
    field
}

/// The head of `key` in a node of key prefix length `prefix_len`: its bytes `prefix_len..+4`,
/// zero-padded, as a big-endian `u32` (heads of keys in order are in order).
pub fn key_head(key: &[u8], prefix_len: usize) -> u32 {
    let mut head = [0u8; KEY_HEAD_BYTES];
    let rest = key.get(prefix_len..).unwrap_or(&[]);
    let take = rest.len().min(KEY_HEAD_BYTES);
    head[..take].copy_from_slice(&rest[..take]);
    u32::from_be_bytes(head)
}

/// The directory entry of a cell at `offset` with `key`, in a node of key prefix length
/// `prefix_len`.
pub fn directory_entry(offset: usize, key: &[u8], prefix_len: usize) -> [u8; NODE_DIR_ENTRY_BYTES] {
    let mut entry = [0u8; NODE_DIR_ENTRY_BYTES];
    entry[..DIR_HEAD_OFFSET].copy_from_slice(&(offset as u32).to_le_bytes());
    entry[DIR_HEAD_OFFSET..].copy_from_slice(&key_head(key, prefix_len).to_be_bytes());
    entry
}

/// Encodes a leaf cell.
pub fn leaf_cell(key: &[u8], value: &LeafValue) -> Vec<u8> {
    encode_cell(key, value.as_bytes())
}

/// Encodes a leaf cell into `out` (at least [`CELL_KEY_LEN_BYTES`] + [`LEAF_VALUE_BYTES`] +
/// the key's length); returns the cell. The writer's allocation-free [`leaf_cell`].
pub fn encode_leaf_cell_into<'o>(out: &'o mut [u8], key: &[u8], value: &LeafValue) -> &'o [u8] {
    assert!(!key.is_empty() && key.len() <= KEY_MAX_BYTES, "a key of 1..=1024 bytes");
    let len = CELL_KEY_LEN_BYTES + LEAF_VALUE_BYTES + key.len();
    out[..CELL_KEY_LEN_BYTES].copy_from_slice(&(key.len() as u16).to_le_bytes());
    out[CELL_KEY_LEN_BYTES..CELL_KEY_LEN_BYTES + LEAF_VALUE_BYTES].copy_from_slice(value.as_bytes());
    out[CELL_KEY_LEN_BYTES + LEAF_VALUE_BYTES..len].copy_from_slice(key);
    &out[..len]
}

/// Encodes a branch cell.
pub fn branch_cell(key: &[u8], child: u64) -> Vec<u8> {
    encode_cell(key, &child.to_le_bytes())
}

fn encode_cell(key: &[u8], payload: &[u8]) -> Vec<u8> {
    assert!(!key.is_empty() && key.len() <= KEY_MAX_BYTES, "a key of 1..=1024 bytes");
    let mut cell = Vec::with_capacity(CELL_KEY_LEN_BYTES + payload.len() + key.len());
    cell.extend_from_slice(&(key.len() as u16).to_le_bytes());
    cell.extend_from_slice(payload);
    cell.extend_from_slice(key);
    cell
}

/// The key of an encoded cell of `kind`.
pub fn cell_key(kind: NodeKind, cell: &[u8]) -> &[u8] {
    &cell[CELL_KEY_LEN_BYTES + kind.payload_bytes()..]
}

/// The shortest separator between a left node whose last key is `left` and a right node whose
/// first key is `right` (`left < right`): the shortest prefix of `right` above `left`.
pub fn separator(left: &[u8], right: &[u8]) -> Vec<u8> {
    assert!(left < right, "separator of keys in order");
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    right[..(common + 1).min(right.len())].to_vec()
}

/// The smallest page a node can live in: three cells of the largest key fit, so that when a
/// full node and one more cell are split where the bytes pass half their total, both halves fit
/// (the half that takes the middle cell holds at most half the total plus one cell).
pub const NODE_PAGE_MIN_BYTES: usize =
    NODE_DIR_OFFSET + 3 * (NODE_DIR_ENTRY_BYTES + CELL_KEY_LEN_BYTES + LEAF_VALUE_BYTES + KEY_MAX_BYTES);
const _: () = assert!(NODE_PAGE_MIN_BYTES <= PAGE_SIZE_MIN_BYTES as usize);

/// `a.cmp(b)` (byte order, a prefix first), eight bytes at a time: ids are short, and a call
/// of the C library's `memcmp` per probe of a node's binary search cost more than the compare.
pub fn compare_keys(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let common = a.len().min(b.len());
    let mut at = 0;
    while at + 8 <= common {
        let x = u64::from_be_bytes(a[at..at + 8].try_into().expect("8 bytes"));
        let y = u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        if x != y {
            return x.cmp(&y);
        }
        at += 8;
    }
    while at < common {
        if a[at] != b[at] {
            return a[at].cmp(&b[at]);
        }
        at += 1;
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_compare_in_byte_order_eight_bytes_at_a_time_as_slices_do() {
        let keys: [&[u8]; 9] = [
            b"",
            b"a",
            b"ab",
            b"stream:1",
            b"stream:10",
            b"stream:100000000",
            b"stream:2",
            b"\xff",
            b"stream:100000001",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(super::compare_keys(a, b), a.cmp(b), "{a:?} against {b:?}");
            }
        }
    }

    use super::*;
    use crate::format::page::{PageId, Space, new_header};

    #[test]
    fn a_leaf_cell_encoded_into_a_buffer_is_the_allocated_encoding() {
        let value = LeafValue {
            vector_page: 7.into(),
            entry_len: 99.into(),
            ..Default::default()
        };
        for key in [&b"a"[..], b"stream:42", &[0xffu8; KEY_MAX_BYTES]] {
            let mut buf = [0u8; CELL_KEY_LEN_BYTES + LEAF_VALUE_BYTES + KEY_MAX_BYTES];
            let cell = encode_leaf_cell_into(&mut buf, key, &value);
            assert_eq!(cell, &leaf_cell(key, &value)[..], "one cell layout for both encoders");
            assert_eq!(cell_key(NodeKind::Leaf, cell), key, "the key reads back");
        }
    }

    fn node_page(kind: NodeKind, leftmost: u64, cells: &[Vec<u8>]) -> Vec<u8> {
        let cells: Vec<&[u8]> = cells.iter().map(Vec::as_slice).collect();
        let layout = layout_node(4096, kind, &cells).expect("cells fit");
        let mut page = vec![0u8; 4096];
        let mut header = new_header(
            kind.page_kind(),
            PageId::new(Space::Catalog, 3),
            layout.count,
            layout.data_start,
        );
        header.c = U64::new(leftmost);
        page[..PAGE_HEADER_BYTES].copy_from_slice(header.as_bytes());
        page[NODE_PREFIX_OFFSET..PAGE_HEADER_BYTES].copy_from_slice(&layout.prefix_field);
        page[NODE_DIR_OFFSET..].copy_from_slice(&layout.body);
        page
    }

    fn value(n: u32) -> LeafValue {
        LeafValue {
            vector_page: U32::new(n),
            vector_slot: U32::new(n + 1),
            catalog_page: U32::new(1),
            catalog_slot: U32::new(n),
            entry_offset: U32::new(4000 - n),
            entry_len: U32::new(40),
        }
    }

    /// A leaf of `keys` (in order), cell `i` valued `value(i)`, checked well-formed.
    fn leaf_page<K: AsRef<[u8]>>(keys: &[K]) -> Vec<u8> {
        let cells: Vec<Vec<u8>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| leaf_cell(k.as_ref(), &value(i as u32)))
            .collect();
        let page = node_page(NodeKind::Leaf, 0, &cells);
        Node::parse(&page)
            .and_then(|node| node.check())
            .expect("a well-formed leaf");
        page
    }

    #[test]
    fn a_leaf_finds_its_keys_and_the_place_of_others() {
        let keys = ["apple", "banana", "cherry", "date"];
        let page = leaf_page(&keys);
        let node = Node::parse(&page).expect("a leaf");
        assert_eq!(node.count, 4);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(node.search(k.as_bytes()), Ok(Ok(i)), "{k} is cell {i}");
            assert_eq!(node.value(i), Ok(value(i as u32)));
        }
        assert_eq!(node.search(b"a"), Ok(Err(0)));
        assert_eq!(node.search(b"blueberry"), Ok(Err(2)));
        assert_eq!(node.search(b"zzz"), Ok(Err(4)));
        assert_eq!(
            node.used_bytes(),
            Ok(4 * 8 + keys.iter().map(|k| 26 + k.len()).sum::<usize>())
        );
    }

    #[test]
    fn keys_sharing_a_prefix_are_found_by_their_heads_and_others_fall_outside() {
        let keys: Vec<String> = (0..60).map(|i| format!("stream:{:07}", 1_234_000 + i * 3)).collect();
        let page = leaf_page(&keys);
        let node = Node::parse(&page).expect("a leaf");
        assert_eq!(
            node.prefix, b"stream:1234",
            "the first and last keys share eleven bytes"
        );
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(node.search(k.as_bytes()), Ok(Ok(i)), "{k} is cell {i}");
            let above = format!("stream:{:07}", 1_234_000 + i * 3 + 1);
            assert_eq!(
                node.search(above.as_bytes()),
                Ok(Err(i + 1)),
                "{above} goes after cell {i}"
            );
            let longer = format!("{k}0");
            assert_eq!(
                node.search(longer.as_bytes()),
                Ok(Err(i + 1)),
                "{longer}: a key and one more byte"
            );
        }
        for (outside, at) in [
            ("stream:0", 0),
            ("stream:12", 0),
            ("stream:2", 60),
            ("a", 0),
            ("t", 60),
            ("stream:123", 0),
        ] {
            assert_eq!(
                node.search(outside.as_bytes()),
                Ok(Err(at)),
                "{outside} lies outside the node's keys"
            );
        }
    }

    #[test]
    fn a_search_agrees_with_a_search_of_the_sorted_keys_however_many_keys_share_a_head() {
        // Runs of 1 to 12 keys with the same first four bytes after the prefix, keys that are
        // a head and no more, and keys shorter than a head: every key is found, and every
        // other key goes where the sorted keys put it.
        let seed = crate::rng::seed_from_env("VELLUM_INDEX_SEED", 0x5EA2C4);
        println!("VELLUM_INDEX_SEED={seed}");
        let mut rng = crate::rng::SplitMix64::new(seed);
        let mut keys = std::collections::BTreeSet::new();
        while keys.len() < 60 {
            let head = format!("{:04}", rng.below(30) * 100);
            for _ in 0..1 + rng.below(12) {
                let tail = match rng.below(4) {
                    0 => String::new(),
                    _ => format!("{}", rng.below(1000)),
                };
                keys.insert(format!("k{head}{tail}").into_bytes());
            }
            keys.insert(format!("k{}", &head[..1 + rng.below(3) as usize]).into_bytes());
        }
        let keys: Vec<Vec<u8>> = keys.into_iter().take(60).collect();
        let page = leaf_page(&keys);
        let node = Node::parse(&page).expect("a leaf");
        let p = node.prefix.len();
        let longest_tie = keys
            .chunk_by(|a, b| key_head(a, p) == key_head(b, p))
            .map(<[_]>::len)
            .max();
        assert!(longest_tie > Some(4), "the keys have long runs of one head");
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                node.search(k),
                Ok(Ok(i)),
                "{:?} is cell {i}",
                String::from_utf8_lossy(k)
            );
        }
        for _ in 0..2000 {
            let probe = format!("k{}", rng.below(100_000_000)).into_bytes();
            let probe = &probe[..1 + rng.below(probe.len() as u64) as usize];
            let expected = keys.binary_search_by(|k| k.as_slice().cmp(probe));
            assert_eq!(node.search(probe), Ok(expected), "{:?}", String::from_utf8_lossy(probe));
        }
    }

    #[test]
    fn heads_order_keys_as_their_bytes_do() {
        let keys: [&[u8]; 8] = [
            b"ab",
            b"ab\0",
            b"ab\0\0\0\0",
            b"ab\x01",
            b"abc",
            b"abcdefg",
            b"abcdefh",
            b"abd",
        ];
        for p in 0..=2 {
            for pair in keys.windows(2) {
                assert!(key_head(pair[0], p) <= key_head(pair[1], p), "{pair:?} at prefix {p}");
            }
        }
    }

    #[test]
    fn a_branch_routes_each_key_to_the_child_that_holds_it() {
        let cells = vec![
            branch_cell(b"m", 0x0100_0000_0000_0020),
            branch_cell(b"t", 0x0100_0000_0000_0030),
        ];
        let page = node_page(NodeKind::Branch, 0x0100_0000_0000_0010, &cells);
        let node = Node::parse(&page).expect("a branch");
        node.check().expect("well formed");
        assert_eq!(node.child_for(b"a"), Ok((0, 0x0100_0000_0000_0010)));
        assert_eq!(
            node.child_for(b"m"),
            Ok((1, 0x0100_0000_0000_0020)),
            "a separator's key goes right"
        );
        assert_eq!(node.child_for(b"s"), Ok((1, 0x0100_0000_0000_0020)));
        assert_eq!(node.child_for(b"zz"), Ok((2, 0x0100_0000_0000_0030)));
    }

    #[test]
    fn a_damaged_node_is_refused_with_a_reason_never_a_panic() {
        let cells = vec![leaf_cell(b"a", &value(0)), leaf_cell(b"b", &value(1))];
        let page = node_page(NodeKind::Leaf, 0, &cells);
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Damage)> = vec![
            (
                "directory overlaps",
                Box::new(|p| p[24..28].copy_from_slice(&2000u32.to_le_bytes())),
            ),
            (
                "directory overlaps",
                Box::new(|p| p[28..32].copy_from_slice(&5000u32.to_le_bytes())),
            ),
            (
                "outside the cell data",
                Box::new(|p| p[64..68].copy_from_slice(&8u32.to_le_bytes())),
            ),
            (
                "outside the cell data",
                Box::new(|p| p[64..68].copy_from_slice(&4090u32.to_le_bytes())),
            ),
            (
                "key length",
                Box::new(|p| {
                    let at = u32::from_le_bytes(p[64..68].try_into().unwrap()) as usize;
                    p[at..at + 2].copy_from_slice(&0u16.to_le_bytes());
                }),
            ),
            (
                "key length",
                Box::new(|p| {
                    let at = u32::from_le_bytes(p[64..68].try_into().unwrap()) as usize;
                    p[at..at + 2].copy_from_slice(&2000u16.to_le_bytes());
                }),
            ),
            (
                "out of order",
                Box::new(|p| {
                    let (a, b) = (p[64..72].to_vec(), p[72..80].to_vec());
                    p[64..72].copy_from_slice(&b);
                    p[72..80].copy_from_slice(&a);
                }),
            ),
            ("not an index node", Box::new(|p| p[4] = 2)),
            ("field c", Box::new(|p| p[32] = 1)),
            ("head does not match", Box::new(|p| p[68] ^= 1)),
            ("prefix length", Box::new(|p| p[NODE_PREFIX_OFFSET] = 16)),
            (
                "does not begin with",
                Box::new(|p| {
                    p[NODE_PREFIX_OFFSET] = 1;
                    p[NODE_PREFIX_OFFSET + 1] = b'z';
                }),
            ),
            ("after the prefix", Box::new(|p| p[63] = 1)),
        ];
        for (reason, damage) in cases {
            let mut damaged = page.clone();
            damage(&mut damaged);
            let outcome = Node::parse(&damaged).and_then(|n| n.check());
            assert!(
                outcome.as_ref().is_err_and(|e| e.contains(reason)),
                "expected {reason:?}, got {outcome:?}"
            );
        }
        assert!(Node::parse(&page[..40]).is_err(), "no header");
    }

    #[test]
    fn separators_are_the_shortest_prefix_above_the_left_key() {
        assert_eq!(separator(b"apple", b"banana"), b"b");
        assert_eq!(separator(b"doc:0099", b"doc:0100"), b"doc:01");
        assert_eq!(separator(b"ab", b"abc"), b"abc");
        assert_eq!(separator(b"a", b"b"), b"b");
    }

    #[test]
    fn the_smallest_node_page_holds_three_largest_cells() {
        let big = vec![b'x'; KEY_MAX_BYTES];
        let cells: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                let mut key = big.clone();
                key[0] = b'a' + i;
                leaf_cell(&key, &value(0))
            })
            .collect();
        let cells: Vec<&[u8]> = cells.iter().map(Vec::as_slice).collect();
        assert!(layout_node(NODE_PAGE_MIN_BYTES, NodeKind::Leaf, &cells).is_some());
        assert!(layout_node(NODE_PAGE_MIN_BYTES - 1, NodeKind::Leaf, &cells).is_none());
        const { assert!(NODE_PAGE_MIN_BYTES <= 4096, "pages of 4 KiB and up hold nodes") };
    }

    #[test]
    fn meta_fields_of_a_fresh_meta_page_are_an_empty_index() {
        let mut page = vec![0u8; 4096];
        let header = new_header(PageKind::Meta, PageId::new(Space::Catalog, 0), 0, 0);
        page[..PAGE_HEADER_BYTES].copy_from_slice(header.as_bytes());
        let fields = MetaFields::read(&page).expect("fields");
        assert_eq!(fields, MetaFields::default());
        assert_eq!(fields.check(&page), None);
        let mut bad = fields;
        bad.root = U64::new(PageId::new(Space::Catalog, 5).0);
        assert!(bad.check(&page).is_some_and(|e| e.contains("height")));
        let mut bad = fields;
        bad.free_list.head = U64::new(PageId::new(Space::Catalog, 5).0);
        assert!(bad.check(&page).is_some_and(|e| e.contains("one end")));
    }
}
