//! The bulk path: `insert_many` / `upsert_many` store many rows to a log record, with the
//! same answers, the same checks and the same all-or-nothing transactions as one by one.

mod support;

use support::{Rng, seed_from_env};
use vellum::{Error, Options, Row, Store};

fn options() -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 20,
        ..Options::default()
    }
}

struct Rows {
    ids: Vec<String>,
    vectors: Vec<Vec<f32>>,
    metadata: Vec<Vec<(String, String)>>,
}

impl Rows {
    fn random(rng: &mut Rng, n: usize, dimension: usize, ids_max: u64) -> Rows {
        let ids = (0..n).map(|_| format!("id-{:05}", rng.below(ids_max))).collect();
        let vectors = (0..n)
            .map(|_| {
                (0..dimension)
                    .map(|_| rng.below(1 << 20) as f32 / 1024.0 - 512.0)
                    .collect()
            })
            .collect();
        let metadata = (0..n)
            .map(|i| {
                let long = if rng.chance(5) {
                    "x".repeat(5000)
                } else {
                    format!("row {i}")
                };
                vec![("tag".to_string(), long)]
            })
            .collect();
        Rows { ids, vectors, metadata }
    }

    fn pairs(&self) -> Vec<Vec<(&str, &str)>> {
        self.metadata
            .iter()
            .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
            .collect()
    }
}

fn as_rows<'a>(rows: &'a Rows, pairs: &'a [Vec<(&'a str, &'a str)>]) -> Vec<Row<'a>> {
    (0..rows.ids.len())
        .map(|i| (rows.ids[i].as_str(), rows.vectors[i].as_slice(), pairs[i].as_slice()))
        .collect()
}

#[test]
fn upsert_many_stores_what_upserts_one_by_one_store() {
    let seed = seed_from_env("VELLUM_BULK_SEED", 17);
    println!("seed {seed} (replay with VELLUM_BULK_SEED={seed})");
    let mut rng = Rng::new(seed);
    let (one, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::create(one.path(), 24, options()).unwrap();
    let b = Store::create(many.path(), 24, options()).unwrap();
    for _ in 0..4 {
        // Ids repeat within and across batches: the last row of an id wins.
        let rows = Rows::random(&mut rng, 700, 24, 1500);
        let pairs = rows.pairs();
        let batch = as_rows(&rows, &pairs);
        let mut tx = a.begin().unwrap();
        for (id, vector, meta) in &batch {
            tx.upsert(id, vector, meta).unwrap();
        }
        tx.commit().unwrap();
        b.upsert_many(&batch).unwrap();
    }
    assert_eq!(a.len(), b.len(), "the same ids");
    b.close().unwrap();
    let b = Store::open(many.path(), options()).unwrap();
    for i in 0..1500 {
        let id = format!("id-{i:05}");
        let (x, y) = (a.get(&id).unwrap(), b.get(&id).unwrap());
        assert_eq!(x.is_some(), y.is_some(), "{id} present in both or neither");
        if let (Some(x), Some(y)) = (x, y) {
            assert_eq!(x.to_vec(), y.to_vec(), "{id}: the same vector, bit for bit");
            assert!(x.metadata().eq(y.metadata()), "{id}: the same metadata");
        }
    }
    drop(b);
    let report = vellum::inspect::verify_store(many.path(), &()).unwrap();
    assert!(report.clean(), "{:?}", report.problems);
}

#[test]
fn a_bad_row_anywhere_is_named_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, options()).unwrap();
    store.insert("kept", &[1.0; 4], &[]).unwrap();
    let ids: Vec<String> = (0..3000).map(|i| format!("n{i}")).collect();
    let mut vectors = vec![vec![0.5f32; 4]; 3000];
    vectors[2500][2] = f32::NAN;
    let rows: Vec<Row<'_>> = ids
        .iter()
        .zip(&vectors)
        .map(|(id, v)| (id.as_str(), v.as_slice(), &[][..]))
        .collect();
    let error = store.upsert_many(&rows).unwrap_err();
    assert!(
        matches!(&error, Error::InvalidArgument(why) if why.contains("row 2500") && why.contains("NaN")),
        "the row and the reason are named: {error}"
    );
    assert_eq!(store.len(), 1, "nothing of the batch was stored");
    assert!(
        store.get("n0").unwrap().is_none(),
        "not even the rows before the bad one"
    );
    let short = [("x", &[1.0f32; 3][..], &[][..])];
    assert!(
        matches!(store.upsert_many(&short), Err(Error::InvalidArgument(_))),
        "a wrong dimension is refused"
    );
    // Store::check_rows refuses as the bulk path does, with the same message, before any
    // transaction; good rows pass.
    let checked = store.check_rows(&rows).unwrap_err();
    assert!(
        checked.to_string() == error.to_string(),
        "check_rows names the row as upsert_many does: {checked} / {error}"
    );
    assert!(
        matches!(store.check_rows(&short), Err(Error::InvalidArgument(_))),
        "check_rows refuses a wrong dimension"
    );
    store
        .check_rows(&rows[..2500])
        .expect("the rows before the bad one pass");
    assert_eq!(store.len(), 1, "checking writes nothing");
}

#[test]
fn insert_many_refuses_present_and_repeated_ids_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 2, options()).unwrap();
    store.insert("b", &[1.0, 1.0], &[]).unwrap();
    let v = [0.0f32, 2.0];
    let present = [("a", &v[..], &[][..]), ("b", &v[..], &[][..])];
    assert!(
        matches!(store.insert_many(&present), Err(Error::AlreadyExists)),
        "a present id is refused"
    );
    let repeated = [("c", &v[..], &[][..]), ("c", &v[..], &[][..])];
    assert!(
        matches!(store.insert_many(&repeated), Err(Error::AlreadyExists)),
        "an id given twice is refused"
    );
    assert_eq!(store.len(), 1, "nothing changed");
    assert_eq!(store.get("b").unwrap().unwrap().to_vec(), [1.0, 1.0]);
}

#[test]
fn insert_many_finds_a_present_id_after_ids_above_every_key_and_in_a_later_call() {
    // A run of lookups takes ids above every key the index holds as absent without a search:
    // an id below them, present, must still be found, in the same call and in the next, after
    // the index has grown past the key the run remembered.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 2, options()).unwrap();
    let v = [0.0f32, 2.0];
    let ids: Vec<String> = (0..3000).map(|i| format!("k{i:05}")).collect();
    let rows: Vec<vellum::Row<'_>> = ids.iter().map(|id| (id.as_str(), &v[..], &[][..])).collect();
    store.insert_many(&rows[..2000]).unwrap();
    let above_then_present = [rows[2500], rows[2600], rows[10]];
    assert!(
        matches!(store.insert_many(&above_then_present), Err(Error::AlreadyExists)),
        "an id below the ids above every key, present, is refused"
    );
    // An id between two present ones may land past the last key of a leaf that is not the
    // rightmost: it proves nothing about the keys of the leaves to its right.
    let last_present = rows[1999];
    for j in 0..1999 {
        let between = format!("k{j:05}x");
        let batch = [(between.as_str(), &v[..], &[][..]), last_present];
        assert!(
            matches!(store.insert_many(&batch), Err(Error::AlreadyExists)),
            "{between}, then the last present id: refused"
        );
    }
    store.insert_many(&rows[2000..2900]).unwrap();
    let later = [rows[2950], rows[2899]];
    assert!(
        matches!(store.insert_many(&later), Err(Error::AlreadyExists)),
        "the next call finds the ids the last one added"
    );
    assert_eq!(store.len(), 2900, "nothing else changed");
}

#[test]
fn an_aborted_bulk_transaction_leaves_nothing_and_a_reopen_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 8, options()).unwrap();
    store.insert("before", &[3.0; 8], &[]).unwrap();
    let mut rng = Rng::new(5);
    let rows = Rows::random(&mut rng, 5000, 8, 100_000);
    let pairs = rows.pairs();
    let mut tx = store.begin().unwrap();
    tx.upsert_many(&as_rows(&rows, &pairs)).unwrap();
    tx.upsert("before", &[4.0; 8], &[]).unwrap();
    tx.abort().unwrap();
    assert_eq!(store.len(), 1);
    assert_eq!(store.get("before").unwrap().unwrap().to_vec(), [3.0; 8]);
    store.close().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.len(), 1, "the abort is durable");
    assert!(store.get(&rows.ids[0]).unwrap().is_none());
}

#[test]
fn runs_of_neighbouring_ids_in_one_record_each_land_where_a_lookup_finds_them() {
    // A bulk record's rows in id order go to the leaf the row before went to, without a
    // descent, until a split: runs of neighbouring ids with jumps between them (and back)
    // make rows that fall inside, just past and far from that leaf, and splits within a run.
    let seed = seed_from_env("VELLUM_BULK_SEED", 23);
    println!("seed {seed} (replay with VELLUM_BULK_SEED={seed})");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, options()).unwrap();
    let mut model = std::collections::BTreeMap::new();
    for batch in 0..3 {
        let mut ids = Vec::new();
        for _ in 0..30 {
            let start = rng.below(20_000);
            let run = 1 + rng.below(150);
            let width = if rng.chance(2) { 5 } else { 7 };
            ids.extend((start..start + run).map(|n| format!("key-{n:0width$}")));
        }
        let vectors: Vec<Vec<f32>> = (0..ids.len()).map(|i| vec![batch as f32, i as f32, 1.0, 2.0]).collect();
        let rows: Vec<Row<'_>> = ids
            .iter()
            .zip(&vectors)
            .map(|(id, v)| (id.as_str(), v.as_slice(), &[][..]))
            .collect();
        store.upsert_many(&rows).unwrap();
        for (id, v) in ids.iter().zip(&vectors) {
            model.insert(id.clone(), v.clone());
        }
    }
    assert_eq!(store.len(), model.len(), "every distinct id once");
    // Each present id, in a run of its neighbours that are absent: the check before an
    // insert_many looks them up one leaf after another.
    for present in model.keys().step_by(97).take(20) {
        let width = present.len() - "key-".len();
        let n: u64 = present["key-".len()..].parse().unwrap();
        let run: Vec<String> = (n.saturating_sub(40)..n + 40)
            .map(|m| format!("key-{m:0width$}"))
            .filter(|id| id == present || !model.contains_key(id))
            .collect();
        let v = [0.0f32; 4];
        let rows: Vec<Row<'_>> = run.iter().map(|id| (id.as_str(), &v[..], &[][..])).collect();
        let refused = store.insert_many(&rows);
        assert!(
            matches!(refused, Err(Error::AlreadyExists)),
            "{present} is present: {refused:?}"
        );
    }
    for (id, v) in &model {
        let found = store.get(id).unwrap();
        assert_eq!(
            found.map(|r| r.to_vec()).as_ref(),
            Some(v),
            "{id}: its last row's vector"
        );
    }
    let listed: Vec<String> = store
        .ids(vellum::ListOptions::default())
        .collect::<vellum::Result<_>>()
        .unwrap();
    assert_eq!(
        listed,
        model.keys().cloned().collect::<Vec<_>>(),
        "the index walks in id order"
    );
    store.close().unwrap();
    let report = vellum::inspect::verify_store(dir.path(), &()).unwrap();
    assert!(report.clean(), "{:?}", report.problems);
}

/// A dimension whose slots are padded (23 floats in a 96-byte stride): a bulk record logs the
/// vectors of adjacent slots as one write (FORMAT.md, section 15, "batch"), so only where
/// slots are not adjacent does the log keep one vector write a row, in row order, for
/// [`vector_slots_logged`] to list.
const DIM_PADDED: u32 = 23;

/// The vector slots the log's update records write, in log order: (page, offset) of every
/// edit of a vector page that writes a whole vector (one a row in a store of padded slots:
/// [`DIM_PADDED`]).
fn vector_slots_logged(dir: &std::path::Path, vector_bytes: usize) -> Vec<(u64, u32)> {
    use vellum::format::page::Space;
    use vellum::format::record::{EditKind, Payload, decode};
    let dump = vellum::inspect::LogDump::open(dir).unwrap();
    let page_size = dump.page_size_bytes();
    let mut reader = dump.reader();
    let mut slots = Vec::new();
    while let Some(rec) = reader.next_record().unwrap() {
        if let Ok(Payload::Update { edits, .. }) = decode(rec.header.kind, rec.payload, rec.lsn, page_size) {
            // A write of the vector, or a stored write of it (FORMAT.md 15: without a
            // before-image, of free bytes: its bytes are in the page's file).
            let vectors = edits.iter().filter(|e| {
                e.page.space() == Space::Vector
                    && matches!(e.kind, EditKind::Write | EditKind::Stored { .. })
                    && e.extent().len() == vector_bytes
            });
            slots.extend(vectors.map(|e| (e.page.page_no(), e.offset)));
        }
    }
    slots
}

#[test]
fn a_bulk_insert_takes_the_slots_one_insert_at_a_time_would_take() {
    // A bulk insert fills the page it formats slot after slot without searching it (the fill
    // cursor); the search itself still runs for partly used pages, freed slots and every
    // transaction's first row. Either way each row must land where a row inserted on its own
    // would: the same free slot, freed slots first, quarantined ones skipped.
    let seed = seed_from_env("VELLUM_BULK_SEED", 29);
    println!("seed {seed} (replay with VELLUM_BULK_SEED={seed})");
    let mut rng = Rng::new(seed);
    let (one, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts = || Options {
        archive: false,
        checkpoint_interval_bytes: 0,
        ..options()
    };
    let a = Store::create(one.path(), DIM_PADDED, opts()).unwrap();
    let b = Store::create(many.path(), DIM_PADDED, opts()).unwrap();
    let mut next = 0u64;
    let mut present: Vec<String> = Vec::new();
    for round in 0..12 {
        let n = 1 + rng.below(200) as usize;
        let ids: Vec<String> = (0..n).map(|i| format!("r{round}-{:05}", next + i as u64)).collect();
        next += n as u64;
        let v: Vec<f32> = (0..DIM_PADDED).map(|j| (round * 24 + j) as f32).collect();
        let rows: Vec<Row<'_>> = ids.iter().map(|id| (id.as_str(), v.as_slice(), &[][..])).collect();
        for row in &rows {
            a.insert(row.0, row.1, row.2).unwrap();
        }
        b.insert_many(&rows).unwrap();
        present.extend(ids);
        // Free some slots, in both, for the next rounds to find. A freed slot is reusable once
        // no reader can hold it, which the writer learns at a transaction's begin: empty
        // transactions make both stores learn it before the next round (one per row made the
        // per-row store learn it sooner).
        let k = rng.below(present.len() as u64 / 3 + 1) as usize;
        for _ in 0..k {
            let id = present.swap_remove(rng.below(present.len() as u64) as usize);
            assert!(a.delete(&id).unwrap() && b.delete(&id).unwrap(), "{id} was present");
        }
        for store in [&a, &b] {
            for _ in 0..3 {
                store.begin().unwrap().commit().unwrap();
            }
        }
    }
    a.close().unwrap();
    b.close().unwrap();
    let (slots_one, slots_many) = (
        vector_slots_logged(one.path(), DIM_PADDED as usize * 4),
        vector_slots_logged(many.path(), DIM_PADDED as usize * 4),
    );
    assert!(
        slots_one.len() > 1000,
        "the rounds wrote many rows ({})",
        slots_one.len()
    );
    let first_difference = slots_one.iter().zip(&slots_many).position(|(x, y)| x != y);
    if let Some(at) = first_difference {
        eprintln!(
            "one  {:?}",
            &slots_one[at.saturating_sub(8)..(at + 40).min(slots_one.len())]
        );
        eprintln!(
            "many {:?}",
            &slots_many[at.saturating_sub(8)..(at + 40).min(slots_many.len())]
        );
    }
    assert!(
        first_difference.is_none() && slots_one.len() == slots_many.len(),
        "each row in the slot an insert on its own takes: {} and {} rows logged, first difference at {first_difference:?}: {:?}",
        slots_one.len(),
        slots_many.len(),
        first_difference.map(|at| (
            &slots_one[at.saturating_sub(2)..(at + 3).min(slots_one.len())],
            &slots_many[at.saturating_sub(2)..(at + 3).min(slots_many.len())]
        ))
    );
    for dir in [one.path(), many.path()] {
        let report = vellum::inspect::verify_store(dir, &()).unwrap();
        assert!(report.clean(), "{:?}", report.problems);
    }
}

#[test]
fn a_slot_freed_in_the_page_a_bulk_insert_fills_is_reused_after_the_commit() {
    // 23-dim vectors in 4 KiB pages: 38 slots a page. One upsert_many fills page 0, replacing
    // one of its own rows on the way (the replaced row's slot is freed, quarantined until the
    // commit): page 0 must stay on the list of pages with a free slot when its last slot is
    // taken, so the slot is found again once no reader can hold it.
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        archive: false,
        checkpoint_interval_bytes: 0,
        ..options()
    };
    let store = Store::create(dir.path(), DIM_PADDED, opts).unwrap();
    let mut ids: Vec<String> = (0..38).map(|i| format!("a{i:02}")).collect();
    ids.insert(20, "a05".to_string());
    let v = [1.0f32; DIM_PADDED as usize];
    let rows: Vec<Row<'_>> = ids.iter().map(|id| (id.as_str(), &v[..], &[][..])).collect();
    store.upsert_many(&rows).unwrap();
    for _ in 0..3 {
        store.begin().unwrap().commit().unwrap();
    }
    store.insert("z", &v, &[]).unwrap();
    store.close().unwrap();
    let slots = vector_slots_logged(dir.path(), DIM_PADDED as usize * 4);
    let layout = vellum::format::page::VectorLayout::new(4096, DIM_PADDED);
    assert_eq!(layout.slots_per_page, 38, "the page the test means to fill");
    assert_eq!(slots.len(), 40, "39 rows and one insert: {slots:?}");
    assert_eq!(slots[5], (0, layout.slot_offset(5) as u32), "a05 first went to slot 5");
    assert_eq!(slots[39], slots[5], "z takes the slot a05's first row freed");
    let report = vellum::inspect::verify_store(dir.path(), &()).unwrap();
    assert!(report.clean(), "{:?}", report.problems);
}
