//! Who holds a store: the Python `Store` object, the calls running on it, its transaction.
//!
//! A `Store` object keeps the library's store in an `Arc`. Every call takes a [`Lease`] (a clone
//! of the `Arc`) for as long as it runs, with the GIL released, so that threads share the store
//! as the library allows (`Store` is `Send + Sync`). An open transaction holds its own clone.
//! `close` takes the store out (later calls raise `ClosedError`), waits for the leases still
//! out, then closes it; it refuses while a transaction is open or waiting to begin, since that
//! would wait for as long as the transaction's owner pleases.

use std::ops::Deref;
use std::sync::Arc;
use std::thread::ThreadId;

use parking_lot::{Condvar, Mutex};
use vellum::Store;

use crate::errors::Failure;

pub struct Shared {
    state: Mutex<State>,
    /// Notified whenever a lease or a transaction lets go of the store.
    idle: Condvar,
    /// The process that opened the store. In a child of its `fork()` the leases other threads
    /// held at the fork are never given back (those threads do not exist there): `close`
    /// must not wait for them.
    opened_by: u32,
}

struct State {
    store: Option<Arc<Store>>,
    /// Transactions begun, or waiting in `begin` for the single writer lock.
    transactions: usize,
    /// The open transaction: its id and the thread that began it.
    open: Option<(u64, ThreadId)>,
    /// The threads inside a call that writes (one entry per write lease): a callback such a
    /// call makes on its thread (`create_index`'s `progress`) must not write, begin a
    /// transaction or close, which would wait for the call forever.
    writers: Vec<ThreadId>,
    /// The threads inside a copy of the store (`backup`, one entry per copy lease): its
    /// `progress` callback must not close the store (which waits for the copy), nor checkpoint
    /// it or copy it again (checkpoints wait for the copy to end).
    copiers: Vec<ThreadId>,
}

/// What a lease's thread is inside, for the calls its callbacks must not make.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Copy,
}

/// The store, held for the length of one call.
pub struct Lease<'a> {
    store: Option<Arc<Store>>,
    shared: &'a Shared,
    /// A write lease's thread is in [`State::writers`] until it drops, a copy lease's in
    /// [`State::copiers`].
    kind: Kind,
}

impl Deref for Lease<'_> {
    type Target = Store;

    fn deref(&self) -> &Store {
        self.store.as_ref().expect("a lease holds its store until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // Under the lock, so that `close` cannot check the count and then miss the wake-up.
        let mut state = self.shared.state.lock();
        let list = match self.kind {
            Kind::Read => None,
            Kind::Write => Some(&mut state.writers),
            Kind::Copy => Some(&mut state.copiers),
        };
        if let Some(list) = list {
            let me = std::thread::current().id();
            let at = list
                .iter()
                .position(|&t| t == me)
                .expect("a write or copy lease's thread is listed");
            list.swap_remove(at);
        }
        self.store = None;
        self.shared.idle.notify_all();
    }
}

impl Shared {
    pub fn new(store: Store) -> Shared {
        Shared {
            state: Mutex::new(State {
                store: Some(Arc::new(store)),
                transactions: 0,
                open: None,
                writers: Vec::new(),
                copiers: Vec::new(),
            }),
            idle: Condvar::new(),
            opened_by: std::process::id(),
        }
    }

    /// The store for a call that reads.
    pub fn lease(&self) -> Result<Lease<'_>, Failure> {
        let state = self.state.lock();
        let store = state.store.clone().ok_or(Failure::Closed("the store is closed"))?;
        Ok(Lease {
            store: Some(store),
            shared: self,
            kind: Kind::Read,
        })
    }

    /// The store for a call that checkpoints it (or copies it): refused on a thread inside a
    /// copy, whose end it would wait for.
    pub fn checkpoint_lease(&self) -> Result<Lease<'_>, Failure> {
        let state = self.state.lock();
        let store = state.store.clone().ok_or(Failure::Closed("the store is closed"))?;
        if state.copiers.contains(&std::thread::current().id()) {
            return Err(Failure::InsideCopy);
        }
        Ok(Lease {
            store: Some(store),
            shared: self,
            kind: Kind::Read,
        })
    }

    /// The store for a copy (`backup`): its thread may not close, checkpoint or copy the store
    /// until the lease drops.
    pub fn copy_lease(&self) -> Result<Lease<'_>, Failure> {
        let mut lease = self.checkpoint_lease()?;
        self.state.lock().copiers.push(std::thread::current().id());
        lease.kind = Kind::Copy;
        Ok(lease)
    }

    /// The store for a call that writes (begins a transaction of its own). Refused on the
    /// thread that holds the open transaction or is inside another write call: the call would
    /// wait for it forever.
    pub fn write_lease(&self) -> Result<Lease<'_>, Failure> {
        let mut state = self.state.lock();
        let store = state.store.clone().ok_or(Failure::Closed("the store is closed"))?;
        state.refuse_waiting_on_this_thread()?;
        state.writers.push(std::thread::current().id());
        Ok(Lease {
            store: Some(store),
            shared: self,
            kind: Kind::Write,
        })
    }

    /// The store for a transaction about to begin: counted until [`Shared::end_transaction`].
    pub fn transaction_owner(&self) -> Result<Arc<Store>, Failure> {
        let mut state = self.state.lock();
        let store = state.store.clone().ok_or(Failure::Closed("the store is closed"))?;
        state.refuse_waiting_on_this_thread()?;
        state.transactions += 1;
        Ok(store)
    }

    /// Transaction `id` began on this thread (it holds the writer lock now).
    pub fn transaction_began(&self, id: u64) {
        self.state.lock().open = Some((id, std::thread::current().id()));
    }

    /// A transaction counted by [`Shared::transaction_owner`] has let go of the store (it
    /// finished, or never began); `id` is its id if it began.
    pub fn end_transaction(&self, id: Option<u64>) {
        let mut state = self.state.lock();
        state.transactions -= 1;
        if id.is_some() && state.open.map(|(open, _)| open) == id {
            state.open = None;
        }
        self.idle.notify_all();
    }

    /// True once `close` has taken the store.
    pub fn is_closed(&self) -> bool {
        self.state.lock().store.is_none()
    }

    /// Closes the store (checkpoint, durable log); a closed store is left as it is.
    pub fn close(&self) -> Result<(), Failure> {
        let mut state = self.state.lock();
        if state.writers.contains(&std::thread::current().id()) {
            return Err(Failure::InsideWriteCall);
        }
        if state.copiers.contains(&std::thread::current().id()) {
            return Err(Failure::InsideCopy);
        }
        if state.transactions > 0 {
            return Err(Failure::TransactionOpen);
        }
        let Some(store) = state.store.take() else {
            return Ok(());
        };
        if std::process::id() != self.opened_by {
            // A forked child's copy (the library refuses every call on it and writes nothing
            // at its drop): closed here without waiting for leases no thread will return.
            return Ok(());
        }
        while Arc::strong_count(&store) > 1 {
            self.idle.wait(&mut state);
        }
        drop(state);
        let store = Arc::into_inner(store).expect("no lease is left once the count is 1 and the store is taken");
        Ok(store.close()?)
    }
}

impl State {
    /// `Err` if this thread holds the open transaction or is inside a write call: what would
    /// wait for the writer lock would wait for itself.
    fn refuse_waiting_on_this_thread(&self) -> Result<(), Failure> {
        let me = std::thread::current().id();
        if self.open.is_some_and(|(_, thread)| thread == me) {
            return Err(Failure::WouldDeadlock);
        }
        if self.writers.contains(&me) {
            return Err(Failure::InsideWriteCall);
        }
        Ok(())
    }
}
