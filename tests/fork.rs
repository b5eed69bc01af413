//! A store is not carried across `fork()` (src/fork.rs): in a forked child, a store opened for
//! writing refuses every call and its close and drop leave the files alone; one opened
//! read-only reads on. Before the check, a child's commit was acknowledged and then lost, or
//! damaged the parent's log (a Python `os.fork()` child that upserted and closed left a store
//! that no longer opened: "record checksum mismatch").
//!
//! Each test forks the test process. The child runs only the store's calls, then leaves with
//! `_exit` (no destructors, no test harness): its exit code says which claim failed. The tests
//! take turns: a child inherits every descriptor of the process, the `LOCK` of another test's
//! store too, and holds it until it exits (that test's reopen would find it locked).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vellum::{Error, ListOptions, Metric, Options, Store};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn vector(i: usize) -> Vec<f32> {
    vec![i as f32, 1.0, -(i as f32), 0.5]
}

/// A new store in a temporary directory, holding rows `p0`, `p1`, … up to `rows`.
fn store_of(rows: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, Options::default()).unwrap();
    insert_rows(&store, 0..rows, "p");
    (dir, store)
}

fn insert_rows(store: &Store, ids: std::ops::Range<usize>, prefix: &str) {
    for i in ids {
        store
            .insert(&format!("{prefix}{i}"), &vector(i), &[("n", "x")])
            .unwrap();
    }
}

/// Forks; the child runs `child` and exits with its code (`_exit`, so nothing else of the test
/// process runs there). Returns the child's exit code, failing the test if it does not exit
/// within 60 s (a child that hangs in a join of a thread it does not have).
fn in_child(child: impl FnOnce() -> i32) -> i32 {
    wait_for(fork_running(child))
}

/// Forks; the child runs `child` and exits with its code. Returns the child's pid.
fn fork_running(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork has no memory-safety preconditions; the child only runs `child` (store calls
    // that allocate, which glibc's fork handlers make safe) and then `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        // SAFETY: _exit ends the child at once; nothing of it is used after.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// The exit code of the child `pid`, failing the test if it does not exit within 60 s.
fn wait_for(pid: libc::pid_t) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the child's status into `status`, a local i32.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(done >= 0, "waitpid failed: {}", std::io::Error::last_os_error());
        if done == pid {
            assert!(libc::WIFEXITED(status), "the child ended by a signal (status {status})");
            return libc::WEXITSTATUS(status);
        }
        if Instant::now() > deadline {
            // SAFETY: kill sends a signal to our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child did not finish within 60 s (a hang in the store's calls or drop)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn is_fork_refusal<T>(result: vellum::Result<T>) -> bool {
    matches!(result, Err(Error::Closed(why)) if why.contains("fork"))
}

/// What the child of a writer tries; the first refusal that is missing is its exit code.
fn child_of_a_writer(store: Store) -> i32 {
    let claims = [
        is_fork_refusal(store.insert("child", &vector(7), &[])),
        is_fork_refusal(store.upsert("p1", &vector(7), &[])),
        is_fork_refusal(store.insert_many(&[("child-many", &vector(7)[..], &[][..])])),
        is_fork_refusal(store.delete("p2")),
        is_fork_refusal(store.begin()),
        is_fork_refusal(store.get("p1")),
        is_fork_refusal(store.search(&vector(3), 3, Metric::L2)),
        matches!(store.ids(ListOptions::default()).next(), Some(Err(Error::Closed(_)))),
        is_fork_refusal(store.checkpoint()),
        is_fork_refusal(store.sync()),
        store.close().is_ok(),
    ];
    match claims.iter().position(|held| !held) {
        Some(failed) => 10 + failed as i32,
        None => 0,
    }
}

#[test]
fn a_forked_child_of_a_writer_is_refused_every_call_and_the_parent_loses_nothing() {
    let _turn = turn();
    let (_dir, store) = store_of(200);
    // (In the parent the closure, and the store with it, is dropped unrun.)
    let code = in_child(move || child_of_a_writer(store));
    assert_eq!(
        code,
        0,
        "claim {} of child_of_a_writer did not hold in the child",
        code - 10
    );
}

#[test]
fn the_parent_writes_on_after_its_child_tried_and_the_store_reopens_whole() {
    let _turn = turn();
    let (dir, store) = store_of(200);
    let code = in_child(|| {
        let refused = is_fork_refusal(store.upsert("child", &vector(1), &[]));
        // Its drop (end of the process's use of it) must neither hang nor write.
        if refused { 0 } else { 1 }
    });
    assert_eq!(code, 0, "the child's upsert was not refused as a fork's");
    insert_rows(&store, 200..400, "p");
    store.close().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.len(), 400, "every row the parent committed, none of the child's");
    assert!(
        store.get("child").unwrap().is_none(),
        "the child's refused row is nowhere"
    );
    assert_eq!(
        &*store.get("p399").unwrap().expect("the parent's last row"),
        &vector(399)[..]
    );
    drop(store);
    let report = vellum::inspect::verify_store(dir.path(), &()).unwrap();
    assert!(report.clean(), "the store verifies clean: {:?}", report.problems);
}

#[test]
fn a_forked_child_reads_a_store_opened_read_only() {
    let _turn = turn();
    let (dir, store) = store_of(300);
    store.close().unwrap();
    let store = Store::open_read_only(dir.path(), Options::default()).unwrap();
    let code = in_child(|| {
        let found = store.get("p17").ok().flatten().is_some_and(|v| *v == vector(17)[..]);
        let hits = store.search(&vector(42), 1, Metric::L2).map(|h| h[0].0.clone());
        let listed = store.ids(ListOptions::default()).count();
        let claims = [found, hits.is_ok_and(|id| id == "p42"), listed == 300];
        claims
            .iter()
            .position(|held| !held)
            .map_or(0, |failed| 10 + failed as i32)
    });
    assert_eq!(code, 0, "claim {} of the read-only child did not hold", code - 10);
    assert!(store.get("p17").unwrap().is_some(), "the parent reads on");
}

#[test]
fn a_transaction_carried_across_fork_is_refused_there_and_stays_the_parents() {
    let _turn = turn();
    let (dir, store) = store_of(100);
    let mut tx = store.begin().unwrap();
    tx.insert("in-tx", &vector(1), &[]).unwrap();
    // The child gets the open transaction; its commit (or its drop's rollback) would log into
    // the parent's log. In the parent the closure, and the transaction, is dropped unrun: an
    // abort.
    let code = in_child(move || {
        let claims = [
            is_fork_refusal(tx.insert("child-tx", &vector(2), &[])),
            is_fork_refusal(tx.delete("p3")),
            is_fork_refusal(tx.commit()),
        ];
        claims
            .iter()
            .position(|held| !held)
            .map_or(0, |failed| 10 + failed as i32)
    });
    assert_eq!(code, 0, "claim {} of the child's transaction did not hold", code - 10);
    insert_rows(&store, 100..200, "p");
    store.close().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        store.len(),
        200,
        "the parent's rows; the transaction it dropped is gone"
    );
    assert!(
        store.get("in-tx").unwrap().is_none(),
        "the aborted transaction's row is gone"
    );
    assert!(
        store.get("child-tx").unwrap().is_none(),
        "the child's refused row is nowhere"
    );
    drop(store);
    let report = vellum::inspect::verify_store(dir.path(), &()).unwrap();
    assert!(report.clean(), "the store verifies clean: {:?}", report.problems);
}

#[test]
fn a_forked_child_does_not_keep_the_parents_store_locked() {
    let _turn = turn();
    let (dir, store) = store_of(10);
    // A child that lives on (a worker of a pool) and never touches the store.
    let pid = fork_running(|| {
        std::thread::sleep(Duration::from_secs(2));
        0
    });
    assert!(
        matches!(Store::open(dir.path(), Options::default()), Err(Error::Locked(_))),
        "while the parent has the store open, it stays locked"
    );
    store.close().unwrap();
    // SAFETY: waitpid with WNOHANG reads the status of our own child into a local.
    let alive = unsafe { libc::waitpid(pid, &mut 0, libc::WNOHANG) } == 0;
    let reopened = Store::open(dir.path(), Options::default());
    assert!(alive, "the child still lives (the test checks the lock while it does)");
    let reopened = reopened.unwrap_or_else(|e| panic!("the parent reopens its store while the child lives: {e}"));
    insert_rows(&reopened, 10..20, "p");
    reopened.close().unwrap();
    assert_eq!(wait_for(pid), 0);
}
