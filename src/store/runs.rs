//! How a bulk record logs its edits: in runs.
//!
//! Edits of one page that change disjoint bytes commute (FORMAT.md, "Edits": edits are applied
//! in record order, and two that touch no byte in common give the same page in either order).
//! So a bulk record (op `batch`) takes each page's edits in **clusters** of overlapping
//! extents, in offset order:
//!
//! - a cluster of writes all of the same bytes is one write: the first's before-image (what the
//!   page held before any of them: no other edit touches those bytes) and the last's
//!   after-image; an insert at the end of its range shifts nothing and writes free bytes: a
//!   write without before-image;
//! - such writes that cover adjacent bytes and agree on having a before-image are one **run**,
//!   logged as one write edit (`record::encode_update_runs_into`): a vector page's slots and
//!   owner entries, a catalog page's entries and directory, a leaf's cells and directory, the
//!   header counts every row rewrote;
//! - a stored write (FORMAT.md 15: its bytes are in the page's file, not the log) is one too,
//!   and stored writes of adjacent bytes are one run, a stored write (a page's vector slots);
//! - any other cluster (partly overlapping writes, an insert that shifts, a remove, a stored
//!   write with other edits of its bytes) is **kept**: its edits, in their order.
//!
//! Runs and kept clusters are logged in the order of their earliest edit (so where nothing
//! merges, a bulk record's rows stay in order), pages in the order of their first edit. A
//! 1 KiB row of a bulk load logs 123–185 bytes beside its vector this way, 318 edit by edit.
//! The edits are applied to the pages, and kept for a rollback, as they were built: only the
//! log holds the runs.

use std::ops::Range;

use crate::format::record::{Edit, EditKind};

/// `edits` as a bulk record logs them and the runs each logged as one write (`ordered[run]`,
/// covering `ordered` in order). `pages` lists each page's edits (indices into `edits`, in
/// order), pages in the order of their first edit.
pub(crate) fn log_runs<'a>(edits: &[Edit<'a>], pages: &[&[usize]]) -> (Vec<Edit<'a>>, Vec<Range<usize>>) {
    let mut page_runs = PageRuns::default();
    let (mut ordered, mut runs) = (Vec::with_capacity(edits.len()), Vec::with_capacity(edits.len()));
    for indices in pages {
        page_runs.group(edits, indices);
        page_runs.emit(edits, &mut ordered, &mut runs);
    }
    (ordered, runs)
}

/// Part of a page's edits as logged.
enum Group {
    /// A run of writes (a range of the page's `writes`) logged as one write.
    Run(Range<usize>),
    /// A cluster of edits (a range of the page's edits in offset order) logged as they are.
    Kept(Range<usize>),
}

/// One page's edits in groups; the buffers are reused from page to page.
#[derive(Default)]
struct PageRuns<'a> {
    /// Each edit's offset (high half) and index (low half): one integer compare a pair.
    keys: Vec<u64>,
    /// The page's edits in offset order (earliest first among equal offsets).
    sorted: Vec<usize>,
    /// The clusters that are one write, in offset order.
    writes: Vec<Edit<'a>>,
    /// Each group with its earliest edit.
    groups: Vec<(usize, Group)>,
}

impl<'a> PageRuns<'a> {
    /// Takes the edits `indices` of one page into groups, in offset order: each cluster either
    /// as one write (extending the last group if that is a run the write adjoins) or kept.
    fn group(&mut self, edits: &[Edit<'a>], indices: &[usize]) {
        self.keys.clear();
        self.keys.extend(indices.iter().map(|&i| {
            let index = u32::try_from(i).expect("a record holds fewer than 2^32 edits");
            (u64::from(edits[i].extent().start) << 32) | u64::from(index)
        }));
        if !self.keys.is_sorted() {
            self.keys.sort_unstable();
        }
        self.sorted.clear();
        self.sorted.extend(self.keys.iter().map(|&key| (key & u64::from(u32::MAX)) as usize));
        self.writes.clear();
        self.groups.clear();
        let mut at = 0;
        while at < self.sorted.len() {
            let (mut end, mut cluster_end) = (at + 1, edits[self.sorted[at]].extent().end);
            while end < self.sorted.len() && edits[self.sorted[end]].extent().start < cluster_end {
                cluster_end = cluster_end.max(edits[self.sorted[end]].extent().end);
                end += 1;
            }
            let cluster = &self.sorted[at..end];
            let earliest = *cluster.iter().min().expect("a cluster holds an edit");
            match as_one_write(edits, cluster) {
                Some(write) => self.push_write(earliest, write),
                None => self.groups.push((earliest, Group::Kept(at..end))),
            }
            at = end;
        }
    }

    /// Adds `write` (a cluster whose earliest edit is `earliest`) to the last group if that is
    /// a run it adjoins with the same before-ness, else as a run of its own.
    fn push_write(&mut self, earliest: usize, write: Edit<'a>) {
        let writes = &self.writes;
        let adjoins = matches!(self.groups.last(), Some((_, Group::Run(run)))
            if run.end == writes.len() && {
                let previous = &writes[run.end - 1];
                previous.extent().end == write.offset
                    && previous.before.is_some() == write.before.is_some()
                    && matches!(previous.kind, EditKind::Stored { .. }) == matches!(write.kind, EditKind::Stored { .. })
            });
        match self.groups.last_mut() {
            Some((first, Group::Run(run))) if adjoins => {
                *first = (*first).min(earliest);
                run.end += 1;
            }
            _ => self.groups.push((earliest, Group::Run(self.writes.len()..self.writes.len() + 1))),
        }
        self.writes.push(write);
    }

    /// Appends the page's groups to `ordered` and their runs to `runs`, in the order of each
    /// group's earliest edit (a kept cluster's edits in their order, each a run of one).
    fn emit(&mut self, edits: &[Edit<'a>], ordered: &mut Vec<Edit<'a>>, runs: &mut Vec<Range<usize>>) {
        self.groups.sort_unstable_by_key(|(earliest, _)| *earliest);
        for (_, group) in self.groups.drain(..) {
            match group {
                Group::Run(run) => {
                    runs.push(ordered.len()..ordered.len() + run.len());
                    ordered.extend_from_slice(&self.writes[run]);
                }
                Group::Kept(range) => {
                    let mut in_order = self.sorted[range].to_vec();
                    in_order.sort_unstable();
                    for i in in_order {
                        runs.push(ordered.len()..ordered.len() + 1);
                        ordered.push(edits[i].clone());
                    }
                }
            }
        }
    }
}

/// The edits `cluster` of one page (in offset order, earliest first among equal offsets) as
/// one write, if they are writes all of the same bytes: the first's before-image, the last's
/// after-image. An insert at the end of its range (it shifts nothing) is a write of free bytes.
fn as_one_write<'a>(edits: &[Edit<'a>], cluster: &[usize]) -> Option<Edit<'a>> {
    let (first, last) = (&edits[cluster[0]], &edits[*cluster.iter().max()?]);
    if matches!(first.kind, EditKind::Stored { .. }) {
        // A stored write alone is one (it joins adjacent stored writes in a run); with other
        // edits of its bytes it is kept as it is.
        return (cluster.len() == 1).then(|| first.clone());
    }
    let extent = first.extent();
    let writes = cluster.iter().all(|&i| {
        let edit = &edits[i];
        let write = match edit.kind {
            EditKind::Write => true,
            EditKind::Insert { end } => end == edit.offset,
            EditKind::Remove { .. } | EditKind::Stored { .. } => false,
        };
        write && edit.extent() == extent
    });
    let before = match first.kind {
        EditKind::Write => first.before,
        _ => None,
    };
    writes.then_some(Edit {
        page: first.page,
        offset: extent.start,
        after: last.after,
        before,
        kind: EditKind::Write,
    })
}
