//! Durable single-row writes from many threads, combined: one thread runs everyone's insert
//! and leads the flush that makes them durable.
//!
//! With `SyncMode::Always`, each of `Store::insert` and `Store::upsert` is a transaction of its
//! own that waits for its log flush. When several threads do them at once, the flush is shared
//! (group commit, src/wal/flush.rs), but each transaction still takes the single writer's lock
//! in turn: after every flush, each waiting thread must be woken, get a core, take the lock and
//! hand it on, one after the other (measured with four writers on two cores: 117 µs a cycle of
//! four commits, of which the flush 79; a raw group commit with no engine work: 81).
//!
//! Here a thread queues its row and the first thread that finds no combiner running becomes the
//! combiner: it takes the queue, runs each row as its own transaction (its own commit record,
//! published at once, as `Transaction::commit` does), waits briefly for the rows the last round
//! had and this one has not yet, then makes the last commit durable — which makes every earlier
//! one durable — and hands each thread its result. A row that fails fails alone (its
//! transaction is rolled back as any other); a flush that fails fails every commit it carried,
//! each with the same error. The rows are copied into the queue: a thread waits for its result,
//! but the combiner never reads another thread's memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::{Error, Lsn, Result, Store};

/// How long a combiner waits for the rows it expects (it yields meanwhile).
const GATHER_MAX: Duration = Duration::from_micros(60);
/// How long a waiting thread yields before it sleeps until its result comes.
const WAIT_SPIN: Duration = Duration::from_micros(200);

/// Which single-row write a queued row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RowOp {
    Insert,
    Upsert,
}

/// A row waiting for the combiner, copied from its caller.
struct Queued {
    ticket: u64,
    op: RowOp,
    id: String,
    vector: Vec<f32>,
    metadata: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    queue: Vec<Queued>,
    results: HashMap<u64, Result<Lsn>>,
    next_ticket: u64,
    /// A thread is combining.
    combining: bool,
    /// Rows the last round ran: how many the next combiner waits for.
    expected: usize,
}

/// The queue of single-row writes and its combiner's state.
#[derive(Default)]
pub(crate) struct Combiner {
    state: Mutex<State>,
    finished: Condvar,
}

impl Combiner {
    /// Runs one durable single-row write through the combiner; returns its commit LSN.
    pub(crate) fn write(&self, store: &Store, op: RowOp, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<Lsn> {
        let mut state = self.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push(Queued {
            ticket,
            op,
            id: id.to_owned(),
            vector: vector.to_vec(),
            metadata: metadata.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect(),
        });
        let mut since = Instant::now();
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result;
            }
            if !state.combining {
                state.combining = true;
                let expected = state.expected.max(1);
                drop(state);
                self.combine(store, expected);
                state = self.state.lock();
                since = Instant::now();
            } else if since.elapsed() < WAIT_SPIN {
                MutexGuard::unlocked(&mut state, std::thread::yield_now);
            } else {
                self.finished.wait(&mut state);
            }
        }
    }

    /// One round: runs the queued rows (and those that arrive while fewer than `expected` ran,
    /// for `GATHER_MAX` at most), makes them durable, posts every result.
    fn combine(&self, store: &Store, expected: usize) {
        let mut round = Round { combiner: self, ran: Vec::new(), posted: false };
        let started = Instant::now();
        loop {
            let queued = std::mem::take(&mut self.state.lock().queue);
            for row in queued {
                let result = run_row(store, &row);
                round.ran.push((row.ticket, result));
            }
            if round.ran.len() >= expected || started.elapsed() >= GATHER_MAX {
                break;
            }
            std::thread::yield_now();
        }
        let durable = make_durable(store, &round.ran);
        // As after a `Transaction::commit`: only once a commit is durable (a round of refused
        // rows, on a read-only store say, committed nothing).
        let committed = durable.is_ok() && round.ran.iter().any(|(_, result)| result.is_ok());
        // A file of the store deleted meanwhile is back before any of them returns.
        let durable = match committed {
            true => super::deletions::put_back_after_commit(store.inner()),
            false => durable,
        };
        round.post(durable);
        if committed {
            super::txn::after_durable(store);
        }
    }
}

/// The rows one combiner ran, posted when it ends — with an error for each, if it ends by a
/// panic, so that no waiting thread waits for ever.
struct Round<'c> {
    combiner: &'c Combiner,
    ran: Vec<(u64, Result<Lsn>)>,
    posted: bool,
}

impl Round<'_> {
    /// Posts every row's result (a committed row's is the flush's, if the flush failed) and
    /// ends the round.
    fn post(&mut self, durable: Result<()>) {
        let mut state = self.combiner.state.lock();
        state.expected = self.ran.len();
        for (ticket, result) in self.ran.drain(..) {
            let result = match (result, &durable) {
                (Ok(lsn), Ok(())) => Ok(lsn),
                (Ok(_), Err(error)) => Err(error.duplicate()),
                (Err(error), _) => Err(error),
            };
            state.results.insert(ticket, result);
        }
        state.combining = false;
        self.posted = true;
        self.combiner.finished.notify_all();
    }
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        if !self.posted {
            self.post(Err(Error::Closed("a concurrent commit's combiner panicked".into())));
        }
    }
}

/// One row as its own transaction, committed and published but not yet durable.
fn run_row(store: &Store, row: &Queued) -> Result<Lsn> {
    let metadata: Vec<(&str, &str)> = row.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut tx = store.begin()?;
    match row.op {
        RowOp::Insert => tx.insert(&row.id, &row.vector, &metadata)?,
        RowOp::Upsert => tx.upsert(&row.id, &row.vector, &metadata)?,
    };
    tx.publish()
}

/// Makes every committed row of the round durable: the first commit's wait flushes the log
/// through all of them (they were appended before it), the rest find themselves durable and
/// are counted.
fn make_durable(store: &Store, ran: &[(u64, Result<Lsn>)]) -> Result<()> {
    let wal = &store.inner().wal;
    for lsn in ran.iter().filter_map(|(_, result)| result.as_ref().ok()) {
        wal.commit(*lsn)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::panic::AssertUnwindSafe;

    use super::*;

    fn round_of(combiner: &Combiner, ran: Vec<(u64, Result<Lsn>)>) -> Round<'_> {
        combiner.state.lock().combining = true;
        Round { combiner, ran, posted: false }
    }

    #[test]
    fn a_failed_flush_fails_every_commit_it_carried_and_a_failed_row_keeps_its_own_error() {
        let combiner = Combiner::default();
        let ran = vec![(0, Ok(Lsn(100))), (1, Err(Error::AlreadyExists)), (2, Ok(Lsn(200)))];
        round_of(&combiner, ran).post(Err(Error::DiskFull { context: "syncing the log".into() }));
        let mut state = combiner.state.lock();
        for ticket in [0, 2] {
            let result = state.results.remove(&ticket);
            assert!(
                matches!(&result, Some(Err(Error::DiskFull { context })) if context == "syncing the log"),
                "row {ticket} committed but its flush failed: the flush's error, kind and text ({result:?})"
            );
        }
        let refused = state.results.remove(&1);
        assert!(matches!(refused, Some(Err(Error::AlreadyExists))), "a refused row keeps its own error ({refused:?})");
        assert!(!state.combining, "the round ended: the next writer may combine");
        assert_eq!(state.expected, 3, "the next combiner waits for as many rows as this one ran");
    }

    #[test]
    fn a_durable_round_hands_each_row_its_commit_lsn() {
        let combiner = Combiner::default();
        round_of(&combiner, vec![(4, Ok(Lsn(40))), (5, Ok(Lsn(50)))]).post(Ok(()));
        let mut state = combiner.state.lock();
        assert!(matches!(state.results.remove(&4), Some(Ok(lsn)) if lsn == Lsn(40)), "row 4's own LSN");
        assert!(matches!(state.results.remove(&5), Some(Ok(lsn)) if lsn == Lsn(50)), "row 5's own LSN");
    }

    #[test]
    fn a_round_that_ends_in_a_panic_posts_an_error_for_every_row_it_ran() {
        let combiner = Combiner::default();
        let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _round = round_of(&combiner, vec![(7, Ok(Lsn(70)))]);
            panic!("a broken invariant while running a row");
        }));
        assert!(unwound.is_err(), "the panic reaches the combiner's caller");
        let state = combiner.state.lock();
        assert!(
            matches!(state.results.get(&7), Some(Err(Error::Closed(_)))),
            "the waiting writer gets an error instead of waiting for ever"
        );
        assert!(!state.combining, "and another writer may combine");
    }
}
