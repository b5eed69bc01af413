//! An open that only reads starts no background thread: the log's threads start with the
//! first append, the checkpointer with the first transaction (spawning them was a third of a
//! warm open). Alone in its binary: it counts the process's threads by name.

use vellum::{Options, Store};

/// The names of this process's threads that are Vellum's.
fn vellum_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let comm = task.unwrap().path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm)
            && name.starts_with("vellum-")
        {
            names.push(name.trim().to_string());
        }
    }
    names.sort();
    names
}

#[test]
fn an_open_that_only_reads_starts_no_thread_and_the_first_write_starts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::create(&path, 4, Options::default()).unwrap();
    store.insert("a", &[1.0, 2.0, 3.0, 4.0], &[]).unwrap();
    store.close().unwrap();
    assert!(
        vellum_threads().is_empty(),
        "a closed store leaves no thread: {:?}",
        vellum_threads()
    );

    let store = Store::open(&path, Options::default()).unwrap();
    assert!(store.get("a").unwrap().is_some(), "the committed vector is there");
    let hits = store.search(&[1.0, 2.0, 3.0, 4.0], 1, vellum::Metric::L2).unwrap();
    assert_eq!(hits.len(), 1, "a search finds it");
    assert!(
        vellum_threads().is_empty(),
        "opening, reading and searching start no thread: {:?}",
        vellum_threads()
    );

    store.insert("b", &[4.0, 3.0, 2.0, 1.0], &[]).unwrap();
    // A spawned thread names itself once it runs: on a busy machine it may not have run yet
    // when the insert returns, so its name is waited for (its absence for seconds is a failure).
    let has_both = |names: &[String]| {
        names.iter().any(|n| n.starts_with("vellum-wal")) && names.iter().any(|n| n.starts_with("vellum-checkpoi"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut started = vellum_threads();
    while !has_both(&started) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
        started = vellum_threads();
    }
    assert!(
        has_both(&started),
        "the first write starts the log's threads and the checkpointer: {started:?}"
    );
    store.close().unwrap();
    assert!(
        vellum_threads().is_empty(),
        "the close stops them all: {:?}",
        vellum_threads()
    );
}
