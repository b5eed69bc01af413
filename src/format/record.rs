//! Log record kinds and their payloads (format-spec/FORMAT.md, "Record kinds and payloads").
//!
//! Changes to arena pages are logged physically: a list of byte-range edits, each with its
//! after-image and, where the bytes were in use, its before-image. With one writer at a time
//! no other transaction can touch those bytes before an undo, so restoring the before-images is
//! an exact undo.
//!
//! Decoding never trusts a length: every count and size is checked against the bytes that are
//! left before anything is allocated or indexed.

use crate::format::page::{PageId, PageKind};
use crate::{Error, Lsn, Result};

/// Record kinds (the header's `kind` byte).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One operation's changes to arena pages: op, id, and edits with before-images where bytes
    /// were in use.
    Update = 1,
    /// A compensation record: undoes one update (redo-only edits) and says where undo goes next.
    Clr = 2,
    /// The transaction committed.
    Commit = 3,
    /// The transaction's user rolled it back; its clrs and an end follow.
    Abort = 4,
    /// A rolled-back transaction is finished.
    End = 5,
    /// A checkpoint began.
    CheckpointBegin = 6,
    /// A checkpoint ended: its transaction and dirty-page tables.
    CheckpointEnd = 7,
    /// An arena page was formatted (outside any transaction, never undone).
    PageInit = 8,
}

impl Kind {
    /// The kind stored as `value` in a record header; `None` if unknown.
    pub fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Update,
            2 => Kind::Clr,
            3 => Kind::Commit,
            4 => Kind::Abort,
            5 => Kind::End,
            6 => Kind::CheckpointBegin,
            7 => Kind::CheckpointEnd,
            8 => Kind::PageInit,
            _ => return None,
        })
    }

    /// The kind's name as `vellum wal-dump` prints it (`"checkpoint-end"`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Update => "update",
            Kind::Clr => "clr",
            Kind::Commit => "commit",
            Kind::Abort => "abort",
            Kind::End => "end",
            Kind::CheckpointBegin => "checkpoint-begin",
            Kind::CheckpointEnd => "checkpoint-end",
            Kind::PageInit => "page-init",
        }
    }
}

/// What an update did, for people reading the log.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// A new id.
    Insert = 1,
    /// An id inserted or replaced.
    Upsert = 2,
    /// An id removed.
    Delete = 3,
    /// Several ids inserted or replaced in one record (a bulk load); the record's id field
    /// holds the first of them, for inspection only.
    Batch = 4,
    /// A change to the approximate-search index alone (its build, a vacuum, its drop): no id
    /// changes; the record's id is empty.
    Index = 5,
}

impl Op {
    /// The op stored as `value` in an update payload; `None` if unknown.
    pub fn from_u8(value: u8) -> Option<Op> {
        Some(match value {
            1 => Op::Insert,
            2 => Op::Upsert,
            3 => Op::Delete,
            4 => Op::Batch,
            5 => Op::Index,
            _ => return None,
        })
    }

    /// The op's name as `vellum wal-dump` prints it (`"upsert"`).
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Upsert => "upsert",
            Op::Delete => "delete",
            Op::Batch => "batch",
            Op::Index => "index",
        }
    }
}

/// One change to an arena page: bytes written over a range, or inserted into or removed from
/// a range whose tail shifts (a sorted directory of an index node: FORMAT.md, "Edits").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit<'a> {
    /// The page changed.
    pub page: PageId,
    /// Offset of the range in the page, in bytes.
    pub offset: u32,
    /// The bytes written (a write) or inserted (an insert) at `offset`; empty for a remove.
    pub after: &'a [u8],
    /// A write: the bytes it replaced (`None`: they were free space, an undo need not restore
    /// them). A remove: the bytes it removed. An insert: `None`.
    pub before: Option<&'a [u8]>,
    /// What the edit does.
    pub kind: EditKind,
}

/// What an [`Edit`] does to its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditKind {
    /// `after` is written at `offset`.
    Write,
    /// The bytes `[offset, end)` move up by `after.len()` (overwriting the free bytes above
    /// `end`), and `after` is written at `offset`.
    Insert {
        /// The end of the range that shifts.
        end: u32,
    },
    /// The `len` bytes at `offset` are removed: `[offset + len, end)` moves down by `len`, and
    /// the `len` bytes left at the top of the range become zero.
    Remove {
        /// The end of the range that shifts.
        end: u32,
        /// Bytes removed.
        len: u32,
    },
    /// A **stored write** (FORMAT.md 15): `len` bytes at `offset` whose after-image the
    /// record does not hold, because the writer writes the page to its file, durably, before
    /// the transaction commits. Built by the writer, `after` holds the bytes (applied to the
    /// page in memory); decoded from a record, `after` is empty and redo changes no byte.
    Stored {
        /// Bytes written.
        len: u32,
    },
}

impl<'a> Edit<'a> {
    /// A write of `after` over bytes in use, which `before` held.
    pub fn write(page: PageId, offset: u32, after: &'a [u8], before: Option<&'a [u8]>) -> Edit<'a> {
        Edit {
            page,
            offset,
            after,
            before,
            kind: EditKind::Write,
        }
    }

    /// The bytes of the page the edit changes: `[offset, end)`.
    pub fn extent(&self) -> std::ops::Range<u32> {
        match self.kind {
            EditKind::Write => self.offset..self.offset + self.after.len() as u32,
            EditKind::Insert { end } => self.offset..end + self.after.len() as u32,
            EditKind::Remove { end, .. } => self.offset..end,
            EditKind::Stored { len } => self.offset..self.offset + len,
        }
    }

    /// Bytes the edit's images take in a record.
    fn image_bytes(&self) -> usize {
        match self.kind {
            EditKind::Stored { .. } => 0,
            _ => self.after.len() + self.before.map_or(0, <[u8]>::len),
        }
    }
}

const EDIT_FLAG_BEFORE: u8 = 1;
const EDIT_FLAG_INSERT: u8 = 2;
const EDIT_FLAG_REMOVE: u8 = 4;
/// A stored write: no images in the record (FORMAT.md 15). Its flags are exactly this.
const EDIT_FLAG_STORED: u8 = 8;
/// Bytes of an edit before its images: page id, offset, length, flags.
pub const EDIT_HEADER_BYTES: usize = 8 + 4 + 4 + 1;
/// Bytes an insert or a remove adds after the flags: the end of the shifting range.
pub const EDIT_END_BYTES: usize = 4;

/// A transaction-table entry in a checkpoint.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TxnEntry {
    /// Transaction id.
    pub txn_id: u64,
    /// LSN of the transaction's last record.
    pub last_lsn: Lsn,
    /// Where the transaction's undo would start.
    pub undo_next: Lsn,
    /// 0 = running, 1 = rolling back.
    pub state: u8,
}

/// A dirty-page-table entry in a checkpoint.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DirtyPage {
    /// The dirty page.
    pub page: PageId,
    /// LSN of the first record that changed the page since it was last written.
    pub rec_lsn: Lsn,
}

/// A decoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// An update: `op` and `id` are informational, recovery uses only the `edits`.
    Update {
        /// What the operation was.
        op: Op,
        /// The id it changed.
        id: &'a str,
        /// Its changes to arena pages, with before-images where bytes were in use.
        edits: Vec<Edit<'a>>,
    },
    /// A compensation record: `undo_next` is where undo goes next (the compensated update's
    /// `prev_lsn`), `edits` carry no before-image.
    Clr {
        /// The next record of the transaction to undo (0: none left).
        undo_next: Lsn,
        /// The compensated update's before-images, in reverse order, as after-images.
        edits: Vec<Edit<'a>>,
    },
    /// A commit (empty payload).
    Commit,
    /// An abort (empty payload).
    Abort,
    /// An end (empty payload).
    End,
    /// A checkpoint-begin (empty payload).
    CheckpointBegin,
    /// A checkpoint-end and its tables.
    CheckpointEnd(Checkpoint),
    /// A page-init: `page` becomes all zero but its header, as `init` says.
    PageInit {
        /// The page formatted.
        page: PageId,
        /// Its kind and header fields.
        init: PageInit,
    },
}

/// What a page-init record makes of its page: the page kind and its header fields `a` and `b`
/// (FORMAT.md 14.2), named per kind. Fields the format writes zero but does not check are kept
/// as found, so a record decodes and encodes back byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageInit {
    /// An all-zero page (kind 0).
    Zero {
        /// Header field `a` as the record holds it (not used).
        a_unused: u32,
        /// Header field `b` as the record holds it (not used).
        b_unused: u32,
    },
    /// A vector page.
    Vector {
        /// The vectors' dimension.
        dimension: u32,
        /// The slot stride in bytes.
        stride_bytes: u32,
    },
    /// A catalog page.
    Catalog {
        /// Its slot count.
        slot_count: u32,
        /// Where its entry data starts.
        data_start: u32,
    },
    /// An overflow page.
    Overflow {
        /// The metadata bytes it holds.
        used_bytes: u32,
        /// Header field `b` as the record holds it (not used).
        b_unused: u32,
    },
    /// The meta page.
    Meta {
        /// Header field `a` as the record holds it (zero).
        a_unused: u32,
        /// Header field `b` as the record holds it (zero).
        b_unused: u32,
    },
    /// An index leaf.
    IndexLeaf {
        /// Its cell count.
        cell_count: u32,
        /// Where its cell data starts.
        data_start: u32,
    },
    /// An index branch (its leftmost child is set by the edits that follow).
    IndexBranch {
        /// Its cell count.
        cell_count: u32,
        /// Where its cell data starts.
        data_start: u32,
    },
    /// A free page.
    Free {
        /// Header field `a` as the record holds it (zero).
        a_unused: u32,
        /// Header field `b` as the record holds it (zero).
        b_unused: u32,
    },
    /// The graph meta page of the approximate-search index (its fields are set by the edits
    /// that follow).
    GraphMeta {
        /// Header field `a` as the record holds it (zero).
        a_unused: u32,
        /// Header field `b` as the record holds it (zero).
        b_unused: u32,
    },
    /// A node page of the approximate-search index (its records all free).
    GraphNodes {
        /// The node page's index.
        page_index: u32,
        /// Bytes of one node record.
        record_bytes: u32,
    },
    /// An upper page of the approximate-search index.
    GraphUpper {
        /// The upper page's index.
        page_index: u32,
        /// Bytes of one upper slot.
        slot_bytes: u32,
    },
}

impl PageInit {
    /// The page-init of `kind` with header fields `a` and `b`.
    pub fn new(kind: PageKind, a: u32, b: u32) -> PageInit {
        match kind {
            PageKind::Zero => PageInit::Zero {
                a_unused: a,
                b_unused: b,
            },
            PageKind::Vector => PageInit::Vector {
                dimension: a,
                stride_bytes: b,
            },
            PageKind::Catalog => PageInit::Catalog {
                slot_count: a,
                data_start: b,
            },
            PageKind::Overflow => PageInit::Overflow {
                used_bytes: a,
                b_unused: b,
            },
            PageKind::Meta => PageInit::Meta {
                a_unused: a,
                b_unused: b,
            },
            PageKind::IndexLeaf => PageInit::IndexLeaf {
                cell_count: a,
                data_start: b,
            },
            PageKind::IndexBranch => PageInit::IndexBranch {
                cell_count: a,
                data_start: b,
            },
            PageKind::Free => PageInit::Free {
                a_unused: a,
                b_unused: b,
            },
            PageKind::GraphMeta => PageInit::GraphMeta {
                a_unused: a,
                b_unused: b,
            },
            PageKind::GraphNodes => PageInit::GraphNodes {
                page_index: a,
                record_bytes: b,
            },
            PageKind::GraphUpper => PageInit::GraphUpper {
                page_index: a,
                slot_bytes: b,
            },
        }
    }

    /// The page kind.
    pub fn kind(self) -> PageKind {
        match self {
            PageInit::Zero { .. } => PageKind::Zero,
            PageInit::Vector { .. } => PageKind::Vector,
            PageInit::Catalog { .. } => PageKind::Catalog,
            PageInit::Overflow { .. } => PageKind::Overflow,
            PageInit::Meta { .. } => PageKind::Meta,
            PageInit::IndexLeaf { .. } => PageKind::IndexLeaf,
            PageInit::IndexBranch { .. } => PageKind::IndexBranch,
            PageInit::Free { .. } => PageKind::Free,
            PageInit::GraphMeta { .. } => PageKind::GraphMeta,
            PageInit::GraphNodes { .. } => PageKind::GraphNodes,
            PageInit::GraphUpper { .. } => PageKind::GraphUpper,
        }
    }

    /// The header fields `a` and `b` as the page and the record hold them.
    pub fn fields(self) -> (u32, u32) {
        match self {
            PageInit::Zero { a_unused, b_unused } => (a_unused, b_unused),
            PageInit::Vector {
                dimension,
                stride_bytes,
            } => (dimension, stride_bytes),
            PageInit::Catalog { slot_count, data_start } => (slot_count, data_start),
            PageInit::Overflow { used_bytes, b_unused } => (used_bytes, b_unused),
            PageInit::Meta { a_unused, b_unused }
            | PageInit::Free { a_unused, b_unused }
            | PageInit::GraphMeta { a_unused, b_unused } => (a_unused, b_unused),
            PageInit::GraphNodes {
                page_index,
                record_bytes,
            } => (page_index, record_bytes),
            PageInit::GraphUpper { page_index, slot_bytes } => (page_index, slot_bytes),
            PageInit::IndexLeaf { cell_count, data_start } | PageInit::IndexBranch { cell_count, data_start } => {
                (cell_count, data_start)
            }
        }
    }
}

/// The tables a checkpoint-end record carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// LSN of the matching checkpoint-begin record.
    pub begin_lsn: Lsn,
    /// Next transaction id.
    pub next_txn_id: u64,
    /// The transaction table: transactions running at the checkpoint.
    pub txns: Vec<TxnEntry>,
    /// The dirty-page table.
    pub dirty: Vec<DirtyPage>,
}

/// Appends `edits` as `count u16, edits…` to `out` (FORMAT.md, "Edits").
pub fn encode_edits(out: &mut Vec<u8>, edits: &[Edit<'_>]) {
    assert!(edits.len() <= u16::MAX as usize, "too many edits in one record");
    out.extend_from_slice(&(edits.len() as u16).to_le_bytes());
    for edit in edits {
        encode_edit(out, edit);
    }
}

fn encode_edit<'a>(out: &mut impl Sink<'a>, edit: &Edit<'a>) {
    out.extend_from_slice(&edit.page.0.to_le_bytes());
    out.extend_from_slice(&edit.offset.to_le_bytes());
    let (len, mut flags, end) = match edit.kind {
        EditKind::Write => (edit.after.len() as u32, 0, None),
        EditKind::Insert { end } => {
            assert!(edit.before.is_none(), "an insert has no before-image");
            (edit.after.len() as u32, EDIT_FLAG_INSERT, Some(end))
        }
        EditKind::Remove { end, len } => {
            assert!(edit.after.is_empty(), "a remove writes nothing");
            (len, EDIT_FLAG_REMOVE, Some(end))
        }
        EditKind::Stored { len } => {
            assert!(edit.before.is_none(), "a stored write writes free bytes");
            assert!(
                edit.after.is_empty() || edit.after.len() == len as usize,
                "a stored write's bytes span it"
            );
            out.extend_from_slice(&len.to_le_bytes());
            out.push(EDIT_FLAG_STORED);
            return;
        }
    };
    if let Some(before) = edit.before {
        assert_eq!(before.len(), len as usize, "a before-image spans the edit");
        flags |= EDIT_FLAG_BEFORE;
    }
    out.extend_from_slice(&len.to_le_bytes());
    out.push(flags);
    if let Some(end) = end {
        out.extend_from_slice(&end.to_le_bytes());
    }
    out.image(edit.before.unwrap_or(&[]));
    out.image(edit.after);
}

/// Appends writes `run` of one page, which cover adjacent bytes in offset order and all have
/// a before-image or none, as one write edit: their before-images one after the other, then
/// their after-images. (The run's writes must commute with the rest of the page's edits: the
/// caller's to know.)
fn encode_run<'a>(out: &mut impl Sink<'a>, run: &[Edit<'a>]) {
    let [first, ..] = run else {
        panic!("a run holds at least one edit");
    };
    let stored = matches!(first.kind, EditKind::Stored { .. });
    let mut end = first.offset;
    for edit in run {
        assert!(
            matches!(edit.kind, EditKind::Stored { .. }) == stored
                && (stored || edit.kind == EditKind::Write)
                && edit.page == first.page
                && edit.offset == end,
            "a run is writes (or stored writes) of one page covering adjacent bytes in order"
        );
        end = edit.extent().end;
        if stored {
            continue;
        }
        assert_eq!(
            edit.before.is_some(),
            first.before.is_some(),
            "a run's writes agree on before-images"
        );
    }
    out.extend_from_slice(&first.page.0.to_le_bytes());
    out.extend_from_slice(&first.offset.to_le_bytes());
    out.extend_from_slice(&(end - first.offset).to_le_bytes());
    if stored {
        out.push(EDIT_FLAG_STORED);
        return;
    }
    out.push(if first.before.is_some() { EDIT_FLAG_BEFORE } else { 0 });
    for edit in run {
        if let Some(before) = edit.before {
            assert_eq!(before.len(), edit.after.len(), "a before-image spans the edit");
            out.image(before);
        }
    }
    for edit in run {
        out.image(edit.after);
    }
}

/// At most the bytes `edits` take as a record's edit list, each edit encoded alone (with its
/// count): what bounds their compensation's (see `undo_log_bytes` in src/store/apply.rs),
/// whether or not the record logged them in runs.
pub fn edits_bytes_max(edits: &[Edit<'_>]) -> usize {
    2 + edits
        .iter()
        .map(|e| EDIT_HEADER_BYTES + EDIT_END_BYTES + e.image_bytes())
        .sum::<usize>()
}

/// The payload of an update record.
pub fn encode_update(op: Op, id: &str, edits: &[Edit<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_update_into(&mut out, op, id, edits);
    out
}

/// The payload of an update record, written over `out` (a buffer the caller reuses).
pub fn encode_update_into(out: &mut Vec<u8>, op: Op, id: &str, edits: &[Edit<'_>]) {
    start_update(out, op, id, edits_bytes_max(edits));
    encode_edits(out, edits);
}

/// Starts an update record's payload over `out`: op, id length, id; room for `edits_bytes`
/// of edit list after them.
fn start_update(out: &mut Vec<u8>, op: Op, id: &str, edits_bytes: usize) {
    out.clear();
    out.reserve(3 + id.len() + edits_bytes);
    out.push(op as u8);
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
}

/// The payload of an update record whose edits `edits[run]` are each logged as one write
/// (`runs` cover `edits` in order; see `encode_run`), written over `out`.
pub fn encode_update_runs_into(
    out: &mut Vec<u8>,
    op: Op,
    id: &str,
    edits: &[Edit<'_>],
    runs: &[std::ops::Range<usize>],
) {
    start_update(out, op, id, edits_bytes_max(edits));
    encode_runs(out, edits, runs);
}

/// [`encode_update_runs_into`] with every image of at least [`GATHER_IMAGE_MIN_BYTES`] left
/// where it is: `out` holds the other bytes, and the parts returned name the payload in order
/// (see [`gathered`]). A bulk record's vectors then go once into the log's buffer, not first
/// into `out` as well; the payload's bytes are the same.
pub fn encode_update_runs_gathered<'a>(
    out: &mut Vec<u8>,
    op: Op,
    id: &str,
    edits: &[Edit<'a>],
    runs: &[std::ops::Range<usize>],
) -> Vec<Part<'a>> {
    let small_bytes = edits.len() * (EDIT_HEADER_BYTES + EDIT_END_BYTES) + 64;
    start_update(out, op, id, small_bytes);
    let mut gather = Gather {
        out,
        parts: Vec::new(),
        from: 0,
    };
    encode_runs(&mut gather, edits, runs);
    let Gather { out, mut parts, from } = gather;
    if from < out.len() {
        parts.push(Part::Own(from..out.len()));
    }
    parts
}

/// The slices of a payload [`encode_update_runs_gathered`] encoded over `out` as `parts`.
pub fn gathered<'p>(out: &'p [u8], parts: &[Part<'p>]) -> Vec<&'p [u8]> {
    parts
        .iter()
        .map(|part| match part {
            Part::Own(range) => &out[range.clone()],
            Part::Borrowed(bytes) => *bytes,
        })
        .collect()
}

fn encode_runs<'a>(out: &mut impl Sink<'a>, edits: &[Edit<'a>], runs: &[std::ops::Range<usize>]) {
    assert!(runs.len() <= u16::MAX as usize, "too many edits in one record");
    out.extend_from_slice(&(runs.len() as u16).to_le_bytes());
    let mut next = 0;
    for run in runs {
        assert_eq!(run.start, next, "the runs cover the edits in order");
        next = run.end;
        match &edits[run.clone()] {
            [edit] => encode_edit(out, edit),
            run => encode_run(out, run),
        }
    }
    assert_eq!(next, edits.len(), "the runs cover every edit");
}

/// The smallest image [`encode_update_runs_gathered`] leaves borrowed: a vector of 64
/// dimensions; shorter ones cost more as a part of their own than as a copy.
pub const GATHER_IMAGE_MIN_BYTES: usize = 256;

/// A part of a gathered payload: a range of the encoder's buffer, or an image as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    /// Bytes of the encoder's buffer.
    Own(std::ops::Range<usize>),
    /// An edit's image, not copied.
    Borrowed(&'a [u8]),
}

/// Where an encoder writes a payload's bytes; an edit's images (which live as long as its
/// edits) through [`Sink::image`].
trait Sink<'a> {
    fn extend_from_slice(&mut self, bytes: &[u8]);
    fn push(&mut self, byte: u8) {
        self.extend_from_slice(&[byte]);
    }
    fn image(&mut self, bytes: &'a [u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink<'_> for Vec<u8> {
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
    fn push(&mut self, byte: u8) {
        Vec::push(self, byte);
    }
}

/// A buffer that leaves large images borrowed, each a part of its own.
struct Gather<'o, 'a> {
    out: &'o mut Vec<u8>,
    parts: Vec<Part<'a>>,
    /// Where the buffer's bytes not yet in `parts` start.
    from: usize,
}

impl<'a> Sink<'a> for Gather<'_, 'a> {
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
    fn push(&mut self, byte: u8) {
        self.out.push(byte);
    }
    fn image(&mut self, bytes: &'a [u8]) {
        if bytes.len() < GATHER_IMAGE_MIN_BYTES {
            self.out.extend_from_slice(bytes);
            return;
        }
        if self.from < self.out.len() {
            self.parts.push(Part::Own(self.from..self.out.len()));
        }
        self.parts.push(Part::Borrowed(bytes));
        self.from = self.out.len();
    }
}

/// The edits that undo `edits`, newest first: a write's before-image written back (a write of
/// free space needs none), an insert removed, a remove's bytes inserted back. The edits of a
/// compensation record.
pub fn compensation<'a>(edits: &[Edit<'a>]) -> Vec<Edit<'a>> {
    compensation_iter(edits).collect()
}

/// [`compensation`] without collecting.
pub fn compensation_iter<'e, 'a>(edits: &'e [Edit<'a>]) -> impl Iterator<Item = Edit<'a>> + 'e {
    edits.iter().rev().filter_map(|e| match e.kind {
        EditKind::Write => e.before.map(|before| Edit::write(e.page, e.offset, before, None)),
        // Free bytes, as a write without before-image: nothing references them after the undo.
        EditKind::Stored { .. } => None,
        EditKind::Insert { end } => Some(Edit {
            page: e.page,
            offset: e.offset,
            after: &[],
            before: None,
            kind: EditKind::Remove {
                end: end + e.after.len() as u32,
                len: e.after.len() as u32,
            },
        }),
        EditKind::Remove { end, len } => Some(Edit {
            page: e.page,
            offset: e.offset,
            after: e
                .before
                .expect("a remove of an update record carries the removed bytes"),
            before: None,
            kind: EditKind::Insert { end: end - len },
        }),
    })
}

/// The payload of a compensation record.
pub fn encode_clr(undo_next: Lsn, edits: &[Edit<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&undo_next.0.to_le_bytes());
    encode_edits(&mut out, edits);
    out
}

/// The payload of a page-init record.
pub fn encode_page_init(page: PageId, init: PageInit) -> Vec<u8> {
    let (a, b) = init.fields();
    let mut out = Vec::with_capacity(17);
    out.extend_from_slice(&page.0.to_le_bytes());
    out.push(init.kind() as u8);
    out.extend_from_slice(&a.to_le_bytes());
    out.extend_from_slice(&b.to_le_bytes());
    out
}

/// The payload of a checkpoint-end record.
pub fn encode_checkpoint(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&checkpoint.begin_lsn.0.to_le_bytes());
    out.extend_from_slice(&checkpoint.next_txn_id.to_le_bytes());
    out.extend_from_slice(&(checkpoint.txns.len() as u32).to_le_bytes());
    for txn in &checkpoint.txns {
        out.extend_from_slice(&txn.txn_id.to_le_bytes());
        out.extend_from_slice(&txn.last_lsn.0.to_le_bytes());
        out.extend_from_slice(&txn.undo_next.0.to_le_bytes());
        out.push(txn.state);
    }
    out.extend_from_slice(&(checkpoint.dirty.len() as u32).to_le_bytes());
    for page in &checkpoint.dirty {
        out.extend_from_slice(&page.page.0.to_le_bytes());
        out.extend_from_slice(&page.rec_lsn.0.to_le_bytes());
    }
    out
}

/// A cursor over payload bytes that fails, never panics, on short input.
struct Cursor<'a> {
    bytes: &'a [u8],
    lsn: Lsn,
}

// The readers here run for every edit of every record recovery reads, twice (analysis, then
// redo): inlined, with their failures kept out of line, since a call that returns an `Error`-
// sized `Result` through memory for each field was a fifth of a long recovery's time.
impl<'a> Cursor<'a> {
    #[cold]
    #[inline(never)]
    fn fail(&self, what: &str) -> Error {
        Error::corrupted_at(self.lsn, format!("record payload: {what}"))
    }

    #[cold]
    #[inline(never)]
    fn short(&self, len: usize, what: &str) -> Error {
        self.fail(&format!("{what} needs {len} bytes, {} left", self.bytes.len()))
    }

    #[inline]
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        let Some((head, rest)) = self.bytes.split_at_checked(len) else {
            return Err(self.short(len, what));
        };
        self.bytes = rest;
        Ok(head)
    }

    /// The next `N` bytes, as an array.
    #[inline]
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<N>() else {
            return Err(self.short(N, what));
        };
        self.bytes = rest;
        Ok(*head)
    }

    #[inline]
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    #[inline]
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    #[inline]
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    #[inline]
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    #[inline]
    fn page(&mut self) -> Result<PageId> {
        let raw = self.u64("page id")?;
        PageId::from_raw(raw).ok_or_else(|| self.fail(&format!("page id {raw:#x} names no space")))
    }

    fn finish(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.fail(&format!("{} trailing bytes", self.bytes.len())))
        }
    }

    fn edits(&mut self, page_size_bytes: u32) -> Result<Vec<Edit<'a>>> {
        let count = self.u16("edit count")? as usize;
        if count * EDIT_HEADER_BYTES > self.bytes.len() {
            return Err(self.fail("edit count exceeds the payload"));
        }
        let mut edits = Vec::with_capacity(count);
        for _ in 0..count {
            edits.push(self.edit(page_size_bytes)?);
        }
        Ok(edits)
    }

    /// One edit, its ranges checked to lie in a page of `page_size_bytes`.
    #[inline]
    fn edit(&mut self, page_size_bytes: u32) -> Result<Edit<'a>> {
        let page = self.page()?;
        let offset = self.u32("edit offset")?;
        let len = self.u32("edit length")?;
        let flags = self.u8("edit flags")?;
        let page_size = u64::from(page_size_bytes);
        let (offset_wide, len_wide) = (u64::from(offset), u64::from(len));
        let kind = match flags & !EDIT_FLAG_BEFORE {
            0 => EditKind::Write,
            EDIT_FLAG_INSERT if flags & EDIT_FLAG_BEFORE == 0 => EditKind::Insert {
                end: self.u32("insert end")?,
            },
            EDIT_FLAG_REMOVE => EditKind::Remove {
                end: self.u32("remove end")?,
                len,
            },
            EDIT_FLAG_STORED if flags & EDIT_FLAG_BEFORE == 0 => EditKind::Stored { len },
            _ => return Err(self.fail(&format!("unknown edit flags {flags:#x}"))),
        };
        let fits = match kind {
            EditKind::Write => offset_wide + len_wide <= page_size,
            EditKind::Insert { end } => offset <= end && u64::from(end) + len_wide <= page_size,
            EditKind::Remove { end, .. } => offset_wide + len_wide <= u64::from(end) && u64::from(end) <= page_size,
            EditKind::Stored { .. } => offset_wide + len_wide <= page_size,
        };
        if !fits {
            return Err(self.fail(&format!("edit {offset}+{len} ({kind:?}) runs past the page")));
        }
        let before = if flags & EDIT_FLAG_BEFORE != 0 {
            Some(self.take(len as usize, "before-image")?)
        } else {
            None
        };
        let after = match kind {
            EditKind::Remove { .. } | EditKind::Stored { .. } => &[][..],
            EditKind::Write | EditKind::Insert { .. } => self.take(len as usize, "after-image")?,
        };
        Ok(Edit {
            page,
            offset,
            after,
            before,
            kind,
        })
    }
}

/// Decodes the payload of a record of `kind` at `lsn`; `page_size_bytes` bounds edits.
pub fn decode(kind: u8, payload: &[u8], lsn: Lsn, page_size_bytes: u32) -> Result<Payload<'_>> {
    let mut cursor = Cursor { bytes: payload, lsn };
    let Some(kind) = Kind::from_u8(kind) else {
        return Err(Error::corrupted_at(lsn, format!("unknown record kind {kind}")));
    };
    let decoded = match kind {
        Kind::Update => {
            let op = cursor.u8("op")?;
            let op = Op::from_u8(op).ok_or_else(|| cursor.fail(&format!("unknown op {op}")))?;
            let id_len = cursor.u16("id length")? as usize;
            let id = std::str::from_utf8(cursor.take(id_len, "id")?).map_err(|_| cursor.fail("id is not UTF-8"))?;
            let edits = cursor.edits(page_size_bytes)?;
            if edits
                .iter()
                .any(|e| matches!(e.kind, EditKind::Remove { .. }) && e.before.is_none())
            {
                return Err(cursor.fail("a remove of an update carries no removed bytes"));
            }
            Payload::Update { op, id, edits }
        }
        Kind::Clr => {
            let undo_next = Lsn(cursor.u64("undo-next LSN")?);
            let edits = cursor.edits(page_size_bytes)?;
            if edits.iter().any(|e| e.before.is_some()) {
                return Err(cursor.fail("a CLR carries no before-images"));
            }
            if edits.iter().any(|e| matches!(e.kind, EditKind::Stored { .. })) {
                return Err(cursor.fail("a CLR holds no stored write"));
            }
            Payload::Clr { undo_next, edits }
        }
        Kind::Commit => Payload::Commit,
        Kind::Abort => Payload::Abort,
        Kind::End => Payload::End,
        Kind::CheckpointBegin => Payload::CheckpointBegin,
        Kind::CheckpointEnd => Payload::CheckpointEnd(decode_checkpoint(&mut cursor)?),
        Kind::PageInit => {
            let page = cursor.page()?;
            let kind = cursor.u8("page kind")?;
            let Some(kind) = PageKind::from_u8(kind) else {
                return Err(cursor.fail(&format!("unknown page kind {kind}")));
            };
            let (a, b) = (cursor.u32("page field a")?, cursor.u32("page field b")?);
            Payload::PageInit {
                page,
                init: PageInit::new(kind, a, b),
            }
        }
    };
    cursor.finish()?;
    Ok(decoded)
}

fn decode_checkpoint(cursor: &mut Cursor<'_>) -> Result<Checkpoint> {
    const TXN_ENTRY_BYTES: usize = 25;
    const DIRTY_ENTRY_BYTES: usize = 16;
    let begin_lsn = Lsn(cursor.u64("checkpoint begin LSN")?);
    let next_txn_id = cursor.u64("next transaction id")?;
    let txn_count = cursor.u32("transaction count")? as usize;
    if txn_count.saturating_mul(TXN_ENTRY_BYTES) > cursor.bytes.len() {
        return Err(cursor.fail("transaction count exceeds the payload"));
    }
    let mut txns = Vec::with_capacity(txn_count);
    for _ in 0..txn_count {
        txns.push(TxnEntry {
            txn_id: cursor.u64("transaction id")?,
            last_lsn: Lsn(cursor.u64("last LSN")?),
            undo_next: Lsn(cursor.u64("undo-next LSN")?),
            state: cursor.u8("transaction state")?,
        });
    }
    let page_count = cursor.u32("dirty page count")? as usize;
    if page_count.saturating_mul(DIRTY_ENTRY_BYTES) > cursor.bytes.len() {
        return Err(cursor.fail("dirty page count exceeds the payload"));
    }
    let mut dirty = Vec::with_capacity(page_count);
    for _ in 0..page_count {
        dirty.push(DirtyPage {
            page: cursor.page()?,
            rec_lsn: Lsn(cursor.u64("recovery LSN")?),
        });
    }
    Ok(Checkpoint {
        begin_lsn,
        next_txn_id,
        txns,
        dirty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::page::Space;

    #[test]
    fn a_gathered_payload_is_the_same_bytes_as_the_copied_one() {
        let seed = crate::rng::seed_from_env("VELLUM_RECORD_SEED", 0x6A7E);
        println!("seed {seed} (VELLUM_RECORD_SEED replays)");
        let mut rng = crate::rng::SplitMix64::new(seed);
        let mut borrowed_parts = 0;
        for round in 0..200 {
            // Writes of images either side of the gather threshold, some with before-images,
            // on a few pages; runs of adjacent writes (a vector page's slots) and lone edits.
            let images: Vec<(Vec<u8>, Vec<u8>)> = (0..1 + rng.below(12))
                .map(|_| {
                    let len = [8, GATHER_IMAGE_MIN_BYTES - 1, GATHER_IMAGE_MIN_BYTES, 1024][rng.below(4) as usize];
                    (rng.bytes(len), rng.bytes(len))
                })
                .collect();
            let with_before = rng.chance(50);
            let page = PageId::new(Space::Vector, 1 + rng.below(3));
            let mut offset = 64 + rng.below(64) as u32;
            let edits: Vec<Edit<'_>> = images
                .iter()
                .map(|(after, before)| {
                    let edit = Edit::write(page, offset, after, with_before.then_some(&before[..]));
                    offset += after.len() as u32;
                    edit
                })
                .collect();
            let mut runs = Vec::new();
            let mut at = 0;
            while at < edits.len() {
                let len = 1 + rng.below((edits.len() - at) as u64) as usize;
                runs.push(at..at + len);
                at += len;
            }
            let mut copied = Vec::new();
            encode_update_runs_into(&mut copied, Op::Batch, "id", &edits, &runs);
            let mut buffer = vec![0xEE; rng.below(100) as usize];
            let parts = encode_update_runs_gathered(&mut buffer, Op::Batch, "id", &edits, &runs);
            borrowed_parts += parts.iter().filter(|p| matches!(p, Part::Borrowed(_))).count();
            assert_eq!(
                gathered(&buffer, &parts).concat(),
                copied,
                "round {round}: the same payload"
            );
            assert!(
                parts
                    .iter()
                    .all(|p| !matches!(p, Part::Borrowed(b) if b.len() < GATHER_IMAGE_MIN_BYTES)),
                "round {round}: only long images are left borrowed"
            );
        }
        assert!(
            borrowed_parts > 100,
            "long images were left borrowed ({borrowed_parts})"
        );
    }

    #[test]
    fn page_init_of_an_unknown_page_kind_is_invalid() {
        let page = PageId::new(Space::Catalog, 0);
        for kind in PageKind::ALL {
            let init = PageInit::new(kind, 7, 4096);
            let payload = encode_page_init(page, init);
            assert!(
                matches!(decode(8, &payload, Lsn(4128), 4096), Ok(Payload::PageInit { init: back, .. }) if back == init),
                "page kind {kind:?} is known and round-trips with its fields"
            );
        }
        let mut payload = encode_page_init(page, PageInit::new(PageKind::Catalog, 0, 4096));
        payload[8] = PageKind::ALL.len() as u8;
        assert!(
            matches!(decode(8, &payload, Lsn(4128), 4096), Err(Error::Corrupted { .. })),
            "FORMAT.md §15: an unknown page kind makes the payload invalid"
        );
    }

    #[test]
    fn update_round_trips() {
        let page = PageId::new(Space::Catalog, 9);
        let edits = [
            Edit {
                page,
                offset: 64,
                after: b"abcd",
                before: Some(b"wxyz"),
                kind: EditKind::Write,
            },
            Edit {
                page: PageId::new(Space::Vector, 1),
                offset: 128,
                after: b"12",
                before: None,
                kind: EditKind::Write,
            },
        ];
        let payload = encode_update(Op::Upsert, "doc-1", &edits);
        let decoded = decode(Kind::Update as u8, &payload, Lsn(100), 4096).unwrap();
        assert_eq!(
            decoded,
            Payload::Update {
                op: Op::Upsert,
                id: "doc-1",
                edits: edits.to_vec()
            }
        );
    }

    #[test]
    fn checkpoint_round_trips() {
        let checkpoint = Checkpoint {
            begin_lsn: Lsn(500),
            next_txn_id: 12,
            txns: vec![TxnEntry {
                txn_id: 11,
                last_lsn: Lsn(480),
                undo_next: Lsn(470),
                state: 0,
            }],
            dirty: vec![DirtyPage {
                page: PageId::new(Space::Vector, 4),
                rec_lsn: Lsn(300),
            }],
        };
        let payload = encode_checkpoint(&checkpoint);
        let decoded = decode(Kind::CheckpointEnd as u8, &payload, Lsn(600), 4096).unwrap();
        assert_eq!(decoded, Payload::CheckpointEnd(checkpoint));
    }

    #[test]
    fn every_truncation_of_a_payload_is_an_error_not_a_panic() {
        let page = PageId::new(Space::Catalog, 2);
        let payload = encode_update(
            Op::Insert,
            "id",
            &[Edit {
                page,
                offset: 0,
                after: b"xyz",
                before: Some(b"abc"),
                kind: EditKind::Write,
            }],
        );
        for len in 0..payload.len() {
            let error = decode(Kind::Update as u8, &payload[..len], Lsn(8), 4096).unwrap_err();
            assert!(matches!(error, Error::Corrupted { .. }), "truncated at {len}: {error}");
        }
    }

    #[test]
    fn edits_past_the_page_and_huge_counts_are_refused() {
        let page = PageId::new(Space::Catalog, 2);
        let payload = encode_update(
            Op::Insert,
            "id",
            &[Edit {
                page,
                offset: 4094,
                after: b"xyz",
                before: None,
                kind: EditKind::Write,
            }],
        );
        assert!(
            decode(Kind::Update as u8, &payload, Lsn(8), 4096).is_err(),
            "edit runs past the page"
        );
        let mut lying = encode_checkpoint(&Checkpoint::default());
        lying[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            decode(Kind::CheckpointEnd as u8, &lying, Lsn(8), 4096).is_err(),
            "count beyond the payload"
        );
    }
}
