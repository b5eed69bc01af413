//! Batched point reads (`Store::get_many`): the lookups of a window of ids made before their
//! entries are read, so that the waits for their memory (or their disk pages) overlap.

use super::readers::Pin;
use super::{Store, VectorRef, catalog, tree};
use crate::error::Result;
use crate::format::index::LeafValue;

/// How many ids [`Store::get_many`] looks up before it reads their entries, while its reads
/// find their pages in memory: enough lookups to cover the wait for the first one's lines (a
/// lookup is ~0.5 us warm), few enough that the lines fetched are still in the caches when
/// they are read. Measured at 262,144 ids (1 KiB vectors, random ids, warm), the median ratio
/// to a `get` per id over 20 interleaved rounds: 4 ids 0.91, 8 0.90-0.93, 16 0.90-0.91, 32 0.91: level within the noise. Bringing each id's
/// leaf in as well before the lookups made it slower: walking each path first and prefetching
/// the leaf's first probes, 1.08 (the branches walked twice, the leaf's header still read one
/// id at a time); walking the branches only, to prefetch each leaf's header and then its first
/// probes, 1.03-1.05 against 0.91-0.92 without.
pub const GET_MANY_WINDOW: usize = 8;

/// How many ids [`Store::get_many`] looks up together while its reads meet pages not read
/// since the open: the pages of a window are asked for together, and its lookups and reads
/// wait for the disk once each, so a larger window waits fewer times for the same reads.
/// Measured, 1,000 random reads of the 262,144-id store from a cold cache: 16 ids 66-72 ms,
/// 64 ids 57-58 ms (a `get` per id: 146-170 ms).
pub const GET_MANY_COLD_WINDOW: usize = 64;

/// What a window's lookup of one id found, and the pin taken before it: what the lookup found
/// is not reused while the pin holds (as in `Store::get`, which pins before it looks up).
struct LookedUp<'s> {
    pin: Pin<'s>,
    /// As `Mask::visible_since` says: `None` if the lookup must be made again.
    visible: Option<Option<LeafValue>>,
}

impl Store {
    /// Reads many ids in one call: `each(i, found)` for each `ids[i]` in order, `found` as
    /// [`Store::get`] would return it (the same retries and errors; an error ends the call,
    /// after the ids before it were handed over).
    ///
    /// Faster than a `get` per id: the ids are taken a window at a time, each window's ids
    /// looked up first, and their entries and vectors are on their way (into the CPU's caches,
    /// or from the disk for pages not read since the open) while the next ones are looked up,
    /// where a `get` waits for each in turn. Once a window meets pages not read since the open
    /// (a cold cache), each next window also asks for the index pages its lookups will read
    /// before it makes them, so it waits for the disk twice, not twice an id. Measured at 262,144 ids of 1 KiB vectors, random ids: warm,
    /// about 10% less time a read; 1,000 reads from a cold cache, 55-58 ms against 146-170.
    /// Each `VectorRef` keeps its slot as `get`'s does.
    pub fn get_many<'s>(&'s self, ids: &[&str], mut each: impl FnMut(usize, Option<VectorRef<'s>>)) -> Result<()> {
        self.inner.check_process()?;
        let mut window: Vec<LookedUp<'s>> = Vec::with_capacity(GET_MANY_COLD_WINDOW);
        // The first window takes the cache for warm: asking for every id's path first made a
        // warm batch of 16 ids slower than a get per id (1.07-1.08 of its time, against
        // 0.90-0.92 without), and costs a cold batch only the first window's waits, one an id
        // (1,000 cold reads 55-57 ms either way).
        let (mut start, mut cold) = (0, false);
        while start < ids.len() {
            let size = if cold { GET_MANY_COLD_WINDOW } else { GET_MANY_WINDOW };
            let chunk = &ids[start..ids.len().min(start + size)];
            cold = self.look_up_window(chunk, &mut window, cold)?;
            #[cfg(test)]
            tests::between_lookups_and_reads(self);
            for (k, (id, looked_up)) in chunk.iter().zip(window.drain(..)).enumerate() {
                each(start + k, self.read_looked_up(id, looked_up)?);
            }
            start += chunk.len();
        }
        Ok(())
    }

    /// Looks up each of `ids` (a window of [`Store::get_many`]) into `window`, each under a pin
    /// taken before it, first asking for the index pages they read if `cold`, and starts
    /// fetching each one's entry and vector. True if a page of those was not in memory: the
    /// next window is cold.
    fn look_up_window<'s>(&'s self, ids: &[&str], window: &mut Vec<LookedUp<'s>>, cold: bool) -> Result<bool> {
        let inner = &*self.inner;
        if cold {
            for id in ids {
                tree::ask_ahead_path(inner, id.as_bytes());
            }
        }
        let mut unread = false;
        for id in ids {
            let pin = inner.epochs.pin();
            let token = inner.mask.token();
            let found = tree::lookup(inner, id.as_bytes())?;
            let visible = inner.mask.visible_since(token, id.as_bytes(), found);
            if let Some(Some(value)) = &visible {
                unread |= catalog::prefetch_entry(&inner.arena, &inner.layout, value);
            }
            window.push(LookedUp { pin, visible });
        }
        Ok(unread)
    }

    /// The vector a window's lookup found for `id`, as `get` returns it: read from the entry
    /// the lookup found, or by `get` where the lookup must be made again (the mask was cleared
    /// meanwhile) or the read failed (damage, or an undo between the lookup and the read:
    /// `get` tells the two apart).
    fn read_looked_up<'s>(&'s self, id: &str, looked_up: LookedUp<'s>) -> Result<Option<VectorRef<'s>>> {
        let inner = &*self.inner;
        match looked_up.visible {
            Some(None) => Ok(None),
            Some(Some(value)) => {
                let read = catalog::read_entry(&inner.arena, &inner.layout, &value)
                    .and_then(|entry| inner.vector_ref(&entry, looked_up.pin));
                match read {
                    Ok(found) => Ok(Some(found)),
                    Err(_) => self.get(id),
                }
            }
            None => self.get(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::{Options, SyncMode};

    /// Writes a test makes between a window's lookups and its reads.
    type Hook = Box<dyn FnOnce(&Store)>;

    thread_local! {
        /// Run once between a window's lookups and its reads, on the reading thread.
        static BETWEEN: RefCell<Option<Hook>> = RefCell::new(None);
    }

    pub(super) fn between_lookups_and_reads(store: &Store) {
        if let Some(hook) = BETWEEN.with(|hook| hook.borrow_mut().take()) {
            hook(store);
        }
    }

    fn own(n: usize) -> Vec<f32> {
        vec![n as f32; 4]
    }

    #[test]
    fn what_a_window_looked_up_is_not_reused_before_it_is_read() {
        // Between the lookups and the reads, the ids are deleted and many new ids inserted,
        // each its own commit (each commit moves the epoch on and reuses what is free). What
        // the lookups found must not be given to the new ids meanwhile: each read returns its
        // id's vector as it was, or none, never a new id's. (With the pin taken after the
        // lookup, the freed slots and entries went to the new ids and the reads returned
        // their vectors.)
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            sync: SyncMode::Never,
            page_size_bytes: 4096,
            segment_size_bytes: 1 << 20,
            ..Options::default()
        };
        let store = Store::create(dir.path(), 4, options).unwrap();
        // One window's worth: the store was just written, so its first window is a warm one.
        let ids: Vec<String> = (0..GET_MANY_WINDOW).map(|n| format!("id-{n}")).collect();
        for (n, id) in ids.iter().enumerate() {
            store.insert(id, &own(n), &[]).unwrap();
        }
        store.checkpoint().unwrap();
        let doomed = ids.clone();
        BETWEEN.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move |store: &Store| {
                for id in &doomed {
                    assert!(store.delete(id).unwrap(), "{id} was there");
                }
                for n in 0..32 * GET_MANY_WINDOW {
                    store.insert(&format!("new-{n}"), &own(1_000_000 + n), &[]).unwrap();
                }
            }));
        });
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut read = 0;
        store
            .get_many(&refs, |i, found| {
                if let Some(vector) = found {
                    assert_eq!(&vector[..], &own(i)[..], "{}: its own vector, not a new id's", refs[i]);
                    read += 1;
                }
            })
            .unwrap();
        assert!(BETWEEN.with(|hook| hook.borrow().is_none()), "the writes ran between the lookups and the reads");
        assert_eq!(read, ids.len(), "each looked-up id read as it was (its slot kept for the reader)");
        assert_eq!(store.get("id-0").unwrap().map(|v| v.to_vec()), None, "deleted since");
    }
}
