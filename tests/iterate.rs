//! Ordered iteration (`Store::ids`, `Store::entries`): byte order, the prefix, after and limit
//! window, a tree of several levels, read committed beside a running transaction, writers
//! beside the walk, read-only stores.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use support::{Rng, seed_from_env};
use vellum::{Entry, ListOptions, Options, Store, SyncMode};

const DIM: usize = 4;

fn small_options() -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 20,
        sync: SyncMode::Never,
        ..Options::default()
    }
}

/// The vector an id is stored with in these tests.
fn vector_of(id: &str) -> [f32; DIM] {
    let sum = id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    [sum as f32, id.len() as f32, -0.0, 1.0e-40]
}

fn ids(store: &Store, options: ListOptions) -> Vec<String> {
    store
        .ids(options)
        .collect::<vellum::Result<Vec<_>>>()
        .expect("the walk succeeds")
}

fn window(prefix: &str, after: Option<&str>, limit: Option<usize>) -> ListOptions {
    ListOptions {
        prefix: prefix.to_string(),
        after: after.map(str::to_string),
        limit,
    }
}

/// What a window of `all` (sorted) holds.
fn expected(all: &BTreeSet<String>, options: &ListOptions) -> Vec<String> {
    all.iter()
        .filter(|id| id.starts_with(&options.prefix))
        .filter(|id| options.after.as_ref().is_none_or(|after| id.as_str() > after.as_str()))
        .take(options.limit.unwrap_or(usize::MAX))
        .cloned()
        .collect()
}

fn insert_all<'a>(store: &Store, all: impl IntoIterator<Item = &'a String>) {
    let mut tx = store.begin().unwrap();
    for id in all {
        tx.insert(id, &vector_of(id), &[("id", id)]).unwrap();
    }
    tx.commit().unwrap();
}

/// Ids with every kind of byte the order must get right: shared prefixes, NUL, bytes at and
/// above 0x80 (two-, three- and four-byte UTF-8), and the largest code point.
fn awkward_ids() -> BTreeSet<String> {
    [
        "a",
        "a\0",
        "a\u{1}",
        "a\0\0",
        "ab",
        "abc",
        "abd",
        "b",
        "Z",
        "z",
        "~",
        "\u{7f}",
        "\u{80}",
        "\u{ff}",
        "é",
        "éa",
        "éé",
        "\u{7ff}",
        "\u{800}",
        "\u{ffff}",
        "\u{10000}",
        "\u{10ffff}",
        "😀",
        "😀x",
        "doc-1",
        "doc-10",
        "doc-2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn ids_come_in_byte_order_whatever_the_insertion_order() {
    let seed = seed_from_env("VELLUM_ITERATE_SEED", 17);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), DIM as u32, small_options()).unwrap();
    let mut all = awkward_ids();
    all.extend((0..600).map(|_| format!("k{:x}", rng.below(1 << 20))));
    let mut shuffled: Vec<&String> = all.iter().collect();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    insert_all(&store, shuffled);
    let listed = ids(&store, ListOptions::default());
    let bytes: Vec<&[u8]> = listed.iter().map(|s| s.as_bytes()).collect();
    assert!(bytes.windows(2).all(|w| w[0] < w[1]), "strictly increasing bytes");
    assert_eq!(
        listed,
        all.iter().cloned().collect::<Vec<_>>(),
        "every id once, in byte order"
    );
    let position = |id: &str| listed.iter().position(|x| x == id).unwrap();
    let rising = [
        "a",
        "a\0",
        "a\0\0",
        "a\u{1}",
        "ab",
        "z",
        "~",
        "\u{7f}",
        "\u{80}",
        "é",
        "\u{ffff}",
        "😀",
        "\u{10ffff}",
    ];
    assert!(
        rising.windows(2).all(|w| position(w[0]) < position(w[1])),
        "a shorter id before its extensions, NUL first, and bytes >= 0x80 after ASCII: {listed:?}"
    );
}

#[test]
fn prefix_after_and_limit_select_the_same_window_as_a_sorted_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), DIM as u32, small_options()).unwrap();
    let mut all = awkward_ids();
    all.extend((0..300).map(|i| format!("ab{i:03}")));
    insert_all(&store, &all);
    let prefixes = [
        "",
        "a",
        "a\0",
        "ab",
        "ab1",
        "abc",
        "b",
        "é",
        "\u{10ffff}",
        "😀",
        "doc-1",
        "none",
        "\u{7f}",
    ];
    let afters = [
        None,
        Some(""),
        Some("a"),
        Some("a\0"),
        Some("ab150"),
        Some("ab"),
        Some("aa"),
        Some("éa"),
        Some("zz"),
    ];
    let limits = [None, Some(0), Some(1), Some(2), Some(7), Some(1000)];
    let mut checked = 0;
    for prefix in prefixes {
        for after in afters {
            for limit in limits {
                let options = window(prefix, after, limit);
                assert_eq!(ids(&store, options.clone()), expected(&all, &options), "{options:?}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, prefixes.len() * afters.len() * limits.len());
    assert_eq!(
        ids(&store, window("", None, None)).len(),
        all.len(),
        "the empty prefix matches every id"
    );
    assert_eq!(
        ids(&store, window("a", Some("a"), Some(2))),
        ["a\0", "a\0\0"],
        "after is exclusive: the next id may be the one it is a prefix of"
    );
}

#[test]
fn pages_of_a_listing_chained_by_after_give_the_whole_listing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), DIM as u32, small_options()).unwrap();
    let all: BTreeSet<String> = (0..2000).map(|i| format!("page-{:05}", i * 7 % 2000)).collect();
    insert_all(&store, &all);
    for size in [1, 13, 500, 4000] {
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let page = ids(&store, window("page-", after.as_deref(), Some(size)));
            assert!(page.len() <= size, "a page holds at most the limit");
            let Some(last) = page.last().cloned() else { break };
            listed.extend(page);
            after = Some(last);
        }
        assert_eq!(listed, all.iter().cloned().collect::<Vec<_>>(), "pages of {size}");
    }
}

#[test]
fn an_empty_store_and_a_store_emptied_by_deletes_list_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), DIM as u32, small_options()).unwrap();
    assert!(ids(&store, ListOptions::default()).is_empty(), "a new store");
    assert_eq!(store.entries(ListOptions::default()).count(), 0);
    let all: BTreeSet<String> = (0..500).map(|i| format!("gone-{i}")).collect();
    insert_all(&store, &all);
    let mut tx = store.begin().unwrap();
    for id in &all {
        assert!(tx.delete(id).unwrap());
    }
    tx.commit().unwrap();
    assert!(ids(&store, ListOptions::default()).is_empty(), "every id deleted");
    let mut walk = store.ids(window("", Some("gone-1"), Some(5)));
    assert!(walk.next().is_none() && walk.next().is_none(), "fused: None stays None");
}

#[test]
fn entries_carry_each_vector_bit_for_bit_and_its_metadata_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), DIM as u32, small_options()).unwrap();
    let specials = [
        f32::MIN_POSITIVE / 3.0,
        -0.0,
        f32::MAX,
        -f32::MAX,
        1.0e-45,
        -1.0e-45,
        0.1,
        3.0e38,
    ];
    let long_value = "v".repeat(5000); // metadata in an overflow chain on 4 KiB pages
    let mut model = BTreeMap::new();
    for i in 0..200usize {
        let id = format!("e{i:03}");
        let vector: Vec<f32> = (0..DIM).map(|j| specials[(i + j) % specials.len()]).collect();
        let value = if i % 50 == 0 {
            long_value.clone()
        } else {
            format!("{i}")
        };
        let metadata = vec![("z".to_string(), value), ("a".to_string(), "first is z".to_string())];
        let pairs: Vec<(&str, &str)> = metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        store.insert(&id, &vector, &pairs).unwrap();
        model.insert(id.clone(), Entry { id, vector, metadata });
    }
    let entries = store
        .entries(ListOptions::default())
        .collect::<vellum::Result<Vec<_>>>()
        .unwrap();
    assert_eq!(entries.len(), model.len());
    for (entry, want) in entries.iter().zip(model.values()) {
        assert_eq!(entry.id, want.id);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&entry.vector), bits(&want.vector), "{}: the stored bits", entry.id);
        assert_eq!(entry.metadata, want.metadata, "{}: pairs in insertion order", entry.id);
    }
    let windowed: Vec<String> = store
        .entries(window("e1", Some("e150"), Some(3)))
        .map(|e| e.unwrap().id)
        .collect();
    assert_eq!(
        windowed,
        ["e151", "e152", "e153"],
        "entries take the same window as ids"
    );
}

/// The index's height as the meta page (catalog page 0) holds it, in a closed store.
fn index_height(dir: &std::path::Path) -> u32 {
    let catalog = std::fs::read(dir.join("arena/catalog-00000000.pages")).unwrap();
    let at = vellum::format::index::META_HEIGHT_OFFSET;
    u32::from_le_bytes(catalog[at..at + 4].try_into().unwrap())
}

#[test]
fn a_tree_of_several_levels_is_walked_in_order_leaf_by_leaf() {
    let seed = seed_from_env("VELLUM_ITERATE_SEED", 5);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::create(&path, DIM as u32, small_options()).unwrap();
    // Ids of ~190 bytes sharing a long prefix: ~18 to a 4 KiB leaf, and separators as long, so
    // ~19 to a branch: 6,000 ids make a tree of three levels or more.
    let filler = "x".repeat(180);
    let mut all = BTreeSet::new();
    while all.len() < 6000 {
        all.insert(format!("{filler}{:08}", rng.below(100_000_000)));
    }
    let mut shuffled: Vec<&String> = all.iter().collect();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for chunk in shuffled.chunks(500) {
        insert_all(&store, chunk.iter().copied());
    }
    store.close().unwrap();
    let height = index_height(&path);
    assert!(
        height >= 3,
        "the test needs a tree of three levels at least, not {height}"
    );
    let store = Store::open(&path, small_options()).unwrap();
    let sorted: Vec<String> = all.iter().cloned().collect();
    assert_eq!(ids(&store, ListOptions::default()), sorted);
    let prefix = format!("{filler}5");
    let options = window(&prefix, Some(&format!("{filler}52")), Some(150));
    assert_eq!(ids(&store, options.clone()), expected(&all, &options));
    let mut count = 0;
    for (entry, id) in store.entries(ListOptions::default()).zip(&sorted) {
        let entry = entry.unwrap();
        assert_eq!(&entry.id, id);
        assert_eq!(entry.vector, vector_of(id), "{id}'s own vector");
        count += 1;
    }
    assert_eq!(count, sorted.len());
}

#[test]
fn an_open_transaction_hides_its_inserts_and_not_its_deletes_or_replacements() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), DIM as u32, small_options()).unwrap();
    let committed: BTreeSet<String> = (0..400).map(|i| format!("c{i:03}")).collect();
    insert_all(&store, &committed);
    let before: Vec<Entry> = store.entries(ListOptions::default()).map(Result::unwrap).collect();
    let mut tx = store.begin().unwrap();
    for i in 0..400 {
        let id = format!("c{i:03}");
        match i % 4 {
            0 => assert!(tx.delete(&id).unwrap()),
            1 => {
                tx.upsert(&id, &[9.0; DIM], &[("new", "yes")]).unwrap();
            }
            _ => {}
        }
        // New ids between and around the committed ones, and whole new leaves of them.
        tx.insert(&format!("c{i:03}+"), &[7.0; DIM], &[]).unwrap();
        tx.insert(&format!("new-{i:03}"), &[7.0; DIM], &[]).unwrap();
    }
    assert_eq!(
        ids(&store, ListOptions::default()),
        committed.iter().cloned().collect::<Vec<_>>()
    );
    let during: Vec<Entry> = store.entries(ListOptions::default()).map(Result::unwrap).collect();
    assert_eq!(during, before, "deleted and replaced ids show their committed versions");
    for options in [
        window("c1", Some("c100"), Some(10)),
        window("c", Some("c199"), None),
        window("c00", None, Some(3)),
        window("", Some("c399"), None),
    ] {
        assert_eq!(
            ids(&store, options.clone()),
            expected(&committed, &options),
            "{options:?}"
        );
    }
    tx.commit().unwrap();
    let after = ids(&store, ListOptions::default());
    assert_eq!(
        after.len(),
        300 + 800,
        "the commit shows its inserts and hides its deletes"
    );
    assert!(after.contains(&"new-000".to_string()) && !after.contains(&"c000".to_string()));
}

#[test]
fn a_transaction_that_deletes_every_id_hides_nothing_until_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), DIM as u32, small_options()).unwrap();
    let committed: BTreeSet<String> = (0..300).map(|i| format!("d{i:03}")).collect();
    insert_all(&store, &committed);
    let mut tx = store.begin().unwrap();
    for id in &committed {
        assert!(tx.delete(id).unwrap());
    }
    let listed = ids(&store, ListOptions::default());
    assert_eq!(
        listed,
        committed.iter().cloned().collect::<Vec<_>>(),
        "the index is empty; the mask shows all"
    );
    assert_eq!(
        ids(&store, window("d2", Some("d250"), Some(5))),
        ["d251", "d252", "d253", "d254", "d255"]
    );
    tx.abort().unwrap();
    assert_eq!(
        ids(&store, ListOptions::default()).len(),
        300,
        "after the abort, as before"
    );
}

/// What the writer beside the walk does: ids it never touches (`stable`), stable ids it only
/// replaces with the same vector (`rewritten`) or deletes and replaces in transactions it
/// aborts, and ids it inserts and deletes in blocks.
fn writer(store: &Store, stop: &AtomicBool, seed: u64, rewritten: &[String]) -> u64 {
    let mut rng = Rng::new(seed);
    let mut live: Vec<String> = Vec::new();
    let mut commits = 0;
    while !stop.load(Ordering::SeqCst) {
        let mut tx = store.begin().unwrap();
        match rng.below(5) {
            0 | 1 => {
                // A block of neighbours: they fill leaves of their own, and split others.
                let base = rng.below(1_000_000);
                for j in 0..rng.below(60) + 1 {
                    let id = format!("s{base:06}-{j:02}");
                    if tx.upsert(&id, &[3.0; DIM], &[]).is_ok() {
                        live.push(id);
                    }
                }
            }
            2 => {
                // Delete a run of what it inserted: emptied leaves are unlinked.
                let start = if live.is_empty() {
                    0
                } else {
                    rng.below(live.len() as u64) as usize
                };
                let end = (start + 40).min(live.len());
                for id in live.drain(start..end) {
                    tx.delete(&id).unwrap();
                }
            }
            3 => {
                for _ in 0..20 {
                    let id = &rewritten[rng.below(rewritten.len() as u64) as usize];
                    tx.upsert(id, &vector_of(id), &[("id", id)]).unwrap();
                }
            }
            _ => {
                // Deletes and replacements of stable ids that are never committed.
                for _ in 0..20 {
                    let id = &rewritten[rng.below(rewritten.len() as u64) as usize];
                    if rng.below(2) == 0 {
                        tx.delete(id).unwrap();
                    } else {
                        tx.upsert(id, &[666.0; DIM], &[("aborted", "yes")]).unwrap();
                    }
                }
                tx.abort().unwrap();
                continue;
            }
        }
        if rng.below(8) == 0 {
            tx.abort().unwrap();
        } else {
            tx.commit().unwrap();
            commits += 1;
        }
    }
    commits
}

#[test]
fn a_walk_beside_a_writer_returns_every_untouched_id_once_in_order() {
    let seed = seed_from_env("VELLUM_ITERATE_SEED", 29);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), DIM as u32, small_options()).unwrap();
    // Stable ids interleave with what the writer inserts ("s<6 digits>-..."), so its blocks
    // land between them and split their leaves.
    let stable: BTreeSet<String> = (0..3000).map(|i| format!("s{:06}", i * 333)).collect();
    insert_all(&store, &stable);
    let rewritten: Vec<String> = stable.iter().step_by(3).cloned().collect();
    let stop = AtomicBool::new(false);
    let (walks, commits) = std::thread::scope(|scope| {
        let writing = scope.spawn(|| writer(&store, &stop, seed, &rewritten));
        let mut walks = 0;
        for round in 0..40 {
            check_walk(&store, &stable, round);
            walks += 1;
        }
        stop.store(true, Ordering::SeqCst);
        (walks, writing.join().unwrap())
    });
    assert!(commits > 0, "the writer committed beside the {walks} walks");
    eprintln!("{walks} walks beside {commits} commits");
}

/// One walk (ids on even rounds, entries on odd ones) checked against the stable ids.
fn check_walk(store: &Store, stable: &BTreeSet<String>, round: usize) {
    let mut last: Option<String> = None;
    let mut found = 0;
    let mut check = |id: &str| {
        if let Some(last) = &last {
            assert!(last.as_bytes() < id.as_bytes(), "round {round}: {last:?} then {id:?}");
        }
        if stable.contains(id) {
            found += 1;
        } else {
            assert!(
                id.len() == 10 && id.starts_with('s'),
                "round {round}: {id:?} is no id of the test"
            );
        }
        last = Some(id.to_string());
    };
    if round.is_multiple_of(2) {
        for id in store.ids(ListOptions::default()) {
            check(&id.unwrap());
        }
    } else {
        for entry in store.entries(ListOptions::default()) {
            let entry = entry.unwrap();
            check(&entry.id);
            if stable.contains(&entry.id) {
                assert_eq!(
                    entry.vector,
                    vector_of(&entry.id),
                    "round {round}: {}'s vector",
                    entry.id
                );
                assert_eq!(entry.metadata, [("id".to_string(), entry.id.clone())]);
            }
        }
    }
    assert_eq!(found, stable.len(), "round {round}: every stable id, each once");
}

#[test]
fn a_read_only_store_lists_what_was_committed_before_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::create(&path, DIM as u32, small_options()).unwrap();
    let all: BTreeSet<String> = (0..700).map(|i| format!("r{i:04}")).collect();
    insert_all(&store, &all);
    store.sync().unwrap();
    drop(store); // no close: no checkpoint, so a read-only open replays the log in memory
    let store = Store::open_read_only(&path, small_options()).unwrap();
    assert_eq!(
        ids(&store, ListOptions::default()),
        all.iter().cloned().collect::<Vec<_>>()
    );
    let options = window("r06", Some("r0650"), Some(20));
    assert_eq!(ids(&store, options.clone()), expected(&all, &options));
    let entries: Vec<Entry> = store.entries(window("r0001", None, None)).map(Result::unwrap).collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].vector, vector_of("r0001"));
}

#[test]
fn readers_never_see_a_change_of_a_transaction_that_aborts() {
    // An abort undoes its changes in the pages and then clears the mask: a reader that read
    // the index before the undo and the mask after the clear would see the aborted change
    // (a deleted id missing, a replaced id's new vector). It must read again instead. The
    // window is a few instructions wide; without the re-read, ~1 read in 10^5 hit it here.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), DIM as u32, small_options()).unwrap();
    let all: BTreeSet<String> = (0..20).map(|i| format!("x{i:02}")).collect();
    insert_all(&store, &all);
    let stop = AtomicBool::new(false);
    let (bad_walks, bad_gets, aborts) = std::thread::scope(|scope| {
        let aborting = scope.spawn(|| {
            let mut aborts = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let mut tx = store.begin().unwrap();
                tx.delete("x05").unwrap();
                tx.upsert("x07", &[666.0; DIM], &[]).unwrap();
                tx.abort().unwrap();
                aborts += 1;
            }
            aborts
        });
        let (mut bad_walks, mut bad_gets) = (Vec::new(), 0u64);
        for round in 0..100_000 {
            let entries: Vec<Entry> = store.entries(ListOptions::default()).map(Result::unwrap).collect();
            let wrong: Vec<&str> = entries
                .iter()
                .filter(|e| e.vector != vector_of(&e.id))
                .map(|e| e.id.as_str())
                .collect();
            if entries.len() != all.len() || !wrong.is_empty() {
                bad_walks.push(format!("round {round}: {} ids, wrong vectors {wrong:?}", entries.len()));
            }
            bad_gets += u64::from(store.get("x05").unwrap().is_none());
            bad_gets += u64::from(store.get("x07").unwrap().is_none_or(|v| v[0] == 666.0));
        }
        stop.store(true, Ordering::SeqCst);
        (bad_walks, bad_gets, aborting.join().unwrap())
    });
    assert!(aborts > 0, "the writer aborted beside the readers");
    assert!(
        bad_walks.is_empty(),
        "walks saw aborted changes: {:?}",
        &bad_walks[..bad_walks.len().min(3)]
    );
    assert_eq!(bad_gets, 0, "gets saw aborted changes ({aborts} aborts)");
}

#[test]
fn an_id_inserted_and_changed_by_an_open_transaction_stays_hidden_until_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("s"), DIM as u32, small_options()).unwrap();
    store.insert("old", &[1.0; DIM], &[]).unwrap();
    let mut tx = store.begin().unwrap();
    tx.insert("fresh", &[2.0; DIM], &[]).unwrap();
    tx.upsert("fresh", &[3.0; DIM], &[("k", "v")]).unwrap();
    tx.insert("gone", &[4.0; DIM], &[]).unwrap();
    assert!(tx.delete("gone").unwrap());
    tx.upsert("old", &[5.0; DIM], &[]).unwrap();
    for id in ["fresh", "gone"] {
        assert!(
            store.get(id).unwrap().is_none(),
            "{id}: inserted by the open transaction, changed again by it: hidden"
        );
    }
    assert_eq!(
        store.get("old").unwrap().unwrap().to_vec(),
        vec![1.0; DIM],
        "the committed version"
    );
    assert_eq!(
        ids(&store, ListOptions::default()),
        ["old"],
        "a scan shows only committed ids"
    );
    let hits = store.search(&[3.0; DIM], 5, vellum::Metric::L2).unwrap();
    assert!(
        hits.iter().all(|(id, _)| id == "old"),
        "a search scores only committed vectors: {hits:?}"
    );
    tx.commit().unwrap();
    assert_eq!(
        store.get("fresh").unwrap().unwrap().to_vec(),
        vec![3.0; DIM],
        "the last change"
    );
    assert!(store.get("gone").unwrap().is_none(), "deleted in the transaction");
    assert_eq!(ids(&store, ListOptions::default()), ["fresh", "old"]);
}
