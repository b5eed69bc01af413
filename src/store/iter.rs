//! Ordered iteration: the store's ids (and entries) in byte order of the id, leaf by leaf.
//!
//! A walk holds one leaf's worth of results at a time. Each step pins an epoch, reads the
//! entries of one leaf from a position on (`tree::scan_leaf`), merges in what the running
//! transaction hides exactly as [`Store::get`] does (`store::mask`: the index first, then the
//! mask, both again if a clear of the mask fell between them; an id the transaction inserted
//! is hidden, one it replaced or deleted shows its committed value), converts what it keeps
//! while still pinned, and unpins. The next step starts where this one ended, from the root
//! again, so a leaf split, merged or freed between two steps costs nothing but the descent:
//! readers never wait for the writer.
//!
//! What a walk guarantees: ids come out in strictly increasing byte order, each at most once;
//! every id committed before the walk began and not deleted while it runs is returned (read
//! committed, per leaf: with the version committed when its leaf was read); a commit that
//! lands during the walk is seen by the steps that start after it.
//!
//! The position after a step is the first key of the next leaf, as the descent saw it
//! (`scan_leaf`'s bound), unless that bound lies at or below the last key the step returned:
//! a leaf can grow in place to the right (its right neighbour emptied and unlinked) after its
//! parent was read, and a reader that restarted may keep a bound of an older tree. Then the
//! walk goes on right after the last key returned instead. A bound that lies above the keys
//! returned skips nothing that existed when the leaf was read: keys between them would have
//! been in that leaf (a leaf's range shrinks in place only when a new, empty right sibling is
//! linked in for a key inserted then).

use std::collections::VecDeque;
use std::iter::FusedIterator;

use super::catalog::read_entry;
use super::{Inner, MetaRef, Store, tree};
use crate::format::index::LeafValue;
use crate::format::meta;
use crate::format::page::{PageId, Space};
use crate::{Error, Result};

/// How many times a step reads its leaf again because the mask was cleared meanwhile before
/// it calls the mask stuck (as `Store::get`). Each try takes at most half the entries of the
/// one before, so a step soon takes less time than a writer's transaction.
const STEP_TRIES_MAX: u32 = 64 * 1024;

/// How many times a step whose conversion failed after a clear of the mask tries again before
/// it reports the error (as `Store::get`).
const STEP_ERRORS_MAX: u32 = 64;

/// The most index entries one step takes from a leaf (more than a leaf of the largest page
/// holds; a bound, so that `start + max` cannot overflow).
const LEAF_ENTRIES_MAX: usize = 1 << 16;

/// Which ids an iteration ([`Store::ids`], [`Store::entries`]) visits, in byte order of the id.
///
/// The default visits every id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only ids that start with these bytes (empty: every id).
    pub prefix: String,
    /// Only ids that sort after this one (exclusive): where the previous page of a listing
    /// ended. `None`: from the first id.
    pub after: Option<String>,
    /// At most this many ids. `None`: no limit.
    pub limit: Option<usize>,
}

/// One vector as [`Store::entries`] yields it: owned copies, so holding it holds back nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The id.
    pub id: String,
    /// The vector, `dimension` components, bit for bit as stored.
    pub vector: Vec<f32>,
    /// The metadata pairs, in insertion order.
    pub metadata: Vec<(String, String)>,
}

/// The ids of a store in byte order ([`Store::ids`]). Each item is an id or the error that
/// ended the iteration (then `None` follows).
pub struct Ids<'a> {
    walk: Walk<'a>,
    ready: VecDeque<Result<String>>,
}

/// The entries of a store in byte order of their ids ([`Store::entries`]). Each item is an
/// entry or the error that ended the iteration (then `None` follows).
pub struct Entries<'a> {
    walk: Walk<'a>,
    ready: VecDeque<Result<Entry>>,
}

impl Store {
    /// The ids of the store in byte order (which for UTF-8 is the order of code points),
    /// filtered and bounded by `options`: read committed and never blocking the writer, like
    /// [`Store::get`].
    ///
    /// The iterator reads the index one leaf at a time, so its memory is bounded by a leaf
    /// (plus the ids a running transaction deleted in the range of that leaf), whatever the
    /// size of the store. It sees committed state only: an id the running transaction
    /// inserted is not returned, one it deleted or replaced still is. It tolerates writers:
    /// every id committed before the iteration began and not deleted during it is returned
    /// exactly once, in order; ids committed meanwhile may or may not be.
    ///
    /// ```rust
    /// use vellum::{ListOptions, Options, Store};
    ///
    /// # fn main() -> vellum::Result<()> {
    /// # let dir = tempfile::tempdir().expect("a scratch directory");
    /// let store = Store::create(dir.path().join("store"), 2, Options::default())?;
    /// for id in ["doc-10", "doc-2", "doc-1", "img-1"] {
    ///     store.insert(id, &[1.0, 0.0], &[])?;
    /// }
    /// let all = store.ids(ListOptions::default()).collect::<vellum::Result<Vec<String>>>()?;
    /// assert_eq!(all, ["doc-1", "doc-10", "doc-2", "img-1"], "byte order, not numeric order");
    ///
    /// // Pages of two documents: each page starts after the last id of the one before.
    /// let page = |after: Option<String>| ListOptions { prefix: "doc-".into(), after, limit: Some(2) };
    /// let first = store.ids(page(None)).collect::<vellum::Result<Vec<_>>>()?;
    /// assert_eq!(first, ["doc-1", "doc-10"]);
    /// let second = store.ids(page(first.last().cloned())).collect::<vellum::Result<Vec<_>>>()?;
    /// assert_eq!(second, ["doc-2"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn ids(&self, options: ListOptions) -> Ids<'_> {
        Ids {
            walk: Walk::new(&self.inner, &options, false),
            ready: VecDeque::new(),
        }
    }

    /// Like [`Store::ids`], with each id's vector and metadata: what a dump of the store needs.
    /// Each entry is copied out while the iterator reads its leaf.
    ///
    /// ```rust
    /// use vellum::{Entry, ListOptions, Options, Store};
    ///
    /// # fn main() -> vellum::Result<()> {
    /// # let dir = tempfile::tempdir().expect("a scratch directory");
    /// let store = Store::create(dir.path().join("store"), 2, Options::default())?;
    /// store.insert("b", &[0.0, 1.0], &[("lang", "fr")])?;
    /// store.insert("a", &[1.0, -0.0], &[])?;
    /// let entries = store.entries(ListOptions::default()).collect::<vellum::Result<Vec<Entry>>>()?;
    /// assert_eq!(entries[0].id, "a");
    /// assert_eq!(entries[1].vector, [0.0, 1.0]);
    /// assert_eq!(entries[1].metadata, [("lang".to_string(), "fr".to_string())]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn entries(&self, options: ListOptions) -> Entries<'_> {
        Entries {
            walk: Walk::new(&self.inner, &options, true),
            ready: VecDeque::new(),
        }
    }
}

impl Iterator for Ids<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        self.walk.pull(&mut self.ready, |_, key, _| id_text(key))
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        self.walk.pull(&mut self.ready, read_whole_entry)
    }
}

impl FusedIterator for Ids<'_> {}
impl FusedIterator for Entries<'_> {}

impl std::fmt::Debug for Ids<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ids").field("walk", &self.walk).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Entries<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").field("walk", &self.walk).finish_non_exhaustive()
    }
}

/// Where a walk stands.
struct Walk<'a> {
    inner: &'a Inner,
    /// The smallest key the next step may return; `None`: the walk is over.
    from: Option<Vec<u8>>,
    /// The first key past the prefix (`None`: no key is).
    end: Option<Vec<u8>>,
    /// How many more items the limit allows.
    remaining: usize,
    /// The walk reads each entry (`Store::entries`), not only the index.
    reads_entries: bool,
}

impl std::fmt::Debug for Walk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walk")
            .field("from", &self.from)
            .field("end", &self.end)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<'a> Walk<'a> {
    fn new(inner: &'a Inner, options: &ListOptions, reads_entries: bool) -> Walk<'a> {
        let prefix = options.prefix.as_bytes();
        let mut from = prefix.to_vec();
        if let Some(after) = &options.after {
            let past_after = successor(after.as_bytes());
            if past_after > from {
                from = past_after;
            }
        }
        Walk {
            inner,
            from: Some(from),
            end: prefix_end(prefix),
            remaining: options.limit.unwrap_or(usize::MAX),
            reads_entries,
        }
    }

    /// The next item: from `ready`, or from the steps it takes to refill it. An error ends
    /// the walk, after the items converted before it.
    fn pull<T>(
        &mut self,
        ready: &mut VecDeque<Result<T>>,
        mut convert: impl FnMut(&Inner, &[u8], &LeafValue) -> Result<T>,
    ) -> Option<Result<T>> {
        loop {
            if let Some(item) = ready.pop_front() {
                return Some(item);
            }
            self.from.as_ref()?;
            if let Err(error) = self.step(ready, &mut convert) {
                self.from = None;
                ready.push_back(Err(error));
            }
        }
    }

    /// Reads the entries of one leaf from `from` on, merged with what the mask shows, and
    /// appends the converted items (within the prefix and the limit) to `out`.
    fn step<T>(
        &mut self,
        out: &mut VecDeque<Result<T>>,
        convert: &mut impl FnMut(&Inner, &[u8], &LeafValue) -> Result<T>,
    ) -> Result<()> {
        let Some(from) = self.from.take() else { return Ok(()) };
        self.inner.check_process()?;
        if self.remaining == 0 || self.end.as_ref().is_some_and(|end| from >= *end) {
            return Ok(());
        }
        let mut max = self.remaining.min(LEAF_ENTRIES_MAX);
        let mut errors = 0;
        for _ in 0..STEP_TRIES_MAX {
            // Held until the items are converted: nothing the leaf names is reused before
            // (store::readers).
            let _pin = self.inner.epochs.pin();
            let token = self.inner.mask.token();
            match self.try_step(&from, max, token, convert) {
                Ok(Some((items, next))) => {
                    self.remaining -= items.len();
                    out.extend(items.into_iter().map(Ok));
                    self.from = next;
                    return Ok(());
                }
                Ok(None) => max = (max / 2).max(1),
                // As `Store::get`: a commit between the read of the index and that of an entry
                // freed what the entry named, and cleared the mask. Without a clear: damage.
                Err(error) => {
                    errors += 1;
                    if self.inner.mask.token() == token || errors == STEP_ERRORS_MAX {
                        return Err(error);
                    }
                }
            }
        }
        panic!("a walk read the leaf of {from:?} again {STEP_TRIES_MAX} times: the mask never held still");
    }

    /// One try of a step, under the caller's pin and mask `token`: `None` if the mask was
    /// cleared while it read (the index may have been read amid an undo), else the items and
    /// where the walk goes on (`None`: the walk is over).
    fn try_step<T>(
        &self,
        from: &[u8],
        max: usize,
        token: u64,
        convert: &mut impl FnMut(&Inner, &[u8], &LeafValue) -> Result<T>,
    ) -> Result<Option<StepItems<T>>> {
        let inner = self.inner;
        let (in_index, bound) = tree::scan_leaf(inner, from, false, max)?;
        let mut next = next_from(from, in_index.last().map(|(key, _)| key.as_slice()), bound)?;
        let masked = inner.mask.visible_in(from, false, next.as_deref());
        let Some(visible) = merge(inner, token, in_index, masked) else { return Ok(None) };
        if inner.mask.token() != token {
            // An id an undo put back after the index was read (and the mask no longer shows).
            return Ok(None);
        }
        if self.reads_entries {
            ask_for_entries(inner, &visible);
        }
        let mut items = Vec::with_capacity(visible.len().min(self.remaining));
        for (key, value) in visible {
            if items.len() == self.remaining || self.end.as_ref().is_some_and(|end| key >= *end) {
                next = None;
                break;
            }
            items.push(convert(inner, &key, &value)?);
        }
        Ok(Some((items, next)))
    }
}

/// Asks for the catalog and vector pages of the entries `visible` names, each once, before
/// they are read: after a cold start, one wait on the disk for a leaf's entries rather than
/// one for each of their pages.
fn ask_for_entries(inner: &Inner, visible: &[(Vec<u8>, LeafValue)]) {
    let mut asked = [u64::MAX; 2];
    for (_, value) in visible {
        let pages = [
            PageId::new(Space::Catalog, u64::from(value.catalog_page.get())),
            PageId::new(Space::Vector, u64::from(value.vector_page.get())),
        ];
        for (last, page) in asked.iter_mut().zip(pages) {
            if *last != page.page_no() {
                *last = page.page_no();
                inner.arena.ask_ahead(page);
            }
        }
    }
}

/// What a step yields: its items, and where the walk goes on.
type StepItems<T> = (Vec<T>, Option<Vec<u8>>);

/// Where the walk goes on after a step from `from` whose leaf's last key returned is `last`
/// and whose descent bounded the leaf by `bound` (see the module's documentation).
fn next_from(from: &[u8], last: Option<&[u8]>, bound: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
    let Some(bound) = bound else { return Ok(None) };
    match last {
        Some(last) if bound.as_slice() <= last => Ok(Some(successor(last))),
        _ if bound.as_slice() <= from => {
            // A separator at or below the key that chose the child: the branch's keys are
            // out of order, which `Node::parse` does not check for.
            Err(Error::corrupted_file(
                "arena",
                format!("an index branch bounds the leaf of {from:?} by {bound:?}, not above it"),
            ))
        }
        _ => Ok(Some(bound)),
    }
}

/// The index's entries of one leaf (in key order) with the mask applied, merged with the ids
/// the mask shows in the same range that the index no longer holds (deleted by the running
/// transaction), in key order, each key once. `None` if the mask was cleared since `token` was
/// taken in a way that may hide an undo (`Mask::visible_since`).
fn merge(
    inner: &Inner,
    token: u64,
    in_index: Vec<(Vec<u8>, LeafValue)>,
    masked: Vec<(Vec<u8>, LeafValue)>,
) -> Option<Vec<(Vec<u8>, LeafValue)>> {
    let mut out = Vec::with_capacity(in_index.len() + masked.len());
    let mut masked = masked.into_iter().peekable();
    for (key, value) in in_index {
        while let Some((shown, _)) = masked.peek()
            && *shown < key
        {
            out.extend(masked.next());
        }
        if masked.peek().is_some_and(|(shown, _)| *shown == key) {
            out.extend(masked.next());
            continue;
        }
        // As `Store::get`: the index first, then the mask.
        if let Some(value) = inner.mask.visible_since(token, &key, Some(value))? {
            out.push((key, value));
        }
    }
    out.extend(masked);
    Some(out)
}

/// The smallest key above `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// The smallest key above every key that starts with `prefix`; `None` if there is none (an
/// empty prefix, or one of 0xFF bytes only).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let keep = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut end = prefix[..=keep].to_vec();
    end[keep] += 1;
    Some(end)
}

/// An index key as an id.
fn id_text(key: &[u8]) -> Result<String> {
    String::from_utf8(key.to_vec())
        .map_err(|_| Error::corrupted_file("arena", format!("an index key is not UTF-8: {key:?}")))
}

/// The entry `value` names, copied out (the caller holds a pin).
fn read_whole_entry(inner: &Inner, key: &[u8], value: &LeafValue) -> Result<Entry> {
    let id = id_text(key)?;
    let entry = read_entry(&inner.arena, &inner.layout, value)?;
    // A pin of its own, taken while the step's pin holds what `value` names.
    let found = inner.vector_ref(&entry, inner.epochs.pin())?;
    let bytes: &[u8] = match &found.meta {
        MetaRef::Inline(bytes) => bytes,
        MetaRef::Owned(bytes) => bytes,
    };
    if let Err(reason) = meta::validate(bytes) {
        let page = PageId::new(Space::Catalog, u64::from(value.catalog_page.get()));
        return Err(inner.arena.corrupted(page, format!("the metadata of id {id:?}: {reason}")));
    }
    let metadata = found.metadata().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Ok(Entry {
        vector: found.to_vec(),
        id,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_last_byte_below_0xff_plus_one() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()), "0xFF bytes carry");
        assert_eq!(prefix_end(b"\xff"), None, "no key lies above every key starting 0xFF");
        assert_eq!(prefix_end(b""), None, "the empty prefix bounds nothing");
        assert_eq!(successor(b"a"), b"a\0".to_vec());
    }

    #[test]
    fn a_walk_goes_on_from_the_leaf_bound_unless_it_lies_at_or_below_the_last_key() {
        let go_on = |from: &[u8], last: Option<&[u8]>, bound: Option<&[u8]>| {
            next_from(from, last, bound.map(<[u8]>::to_vec)).map_err(|e| e.to_string())
        };
        assert_eq!(go_on(b"a", Some(b"c"), None), Ok(None), "the last leaf ends the walk");
        assert_eq!(go_on(b"a", Some(b"c"), Some(b"d")), Ok(Some(b"d".to_vec())), "the next leaf");
        assert_eq!(
            go_on(b"a", Some(b"e"), Some(b"d")),
            Ok(Some(b"e\0".to_vec())),
            "a leaf that grew past its parent's old separator: on after its last key"
        );
        assert_eq!(go_on(b"a", Some(b"d"), Some(b"d")), Ok(Some(b"d\0".to_vec())));
        assert_eq!(go_on(b"a", None, Some(b"b")), Ok(Some(b"b".to_vec())), "nothing here: the next leaf");
        let stuck = go_on(b"b", None, Some(b"b"));
        assert!(
            matches!(&stuck, Err(e) if e.contains("not above")),
            "a bound that does not move the walk on is damage: {stuck:?}"
        );
    }
}
