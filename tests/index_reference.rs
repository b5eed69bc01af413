//! The independent Python reader (format-spec/reference/read_store.py) on stores with an
//! approximate index: it decodes the graph pages, claims them, and checks the graph's
//! invariants (FORMAT.md 14.13) against the vectors, agreeing with the engine; and it
//! reports a graph whose lists were damaged.

mod support;

use std::path::Path;

use serde_json::Value;
use support::Rng;
use vellum::{IndexOptions, Metric, Options, Store};

const DIMENSION: usize = 8;

fn options() -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 20,
        ..Options::default()
    }
}

fn read(dir: &Path) -> Value {
    support::reference_reader(&[dir.as_os_str()]).1
}

/// A closed store with an index over 300 vectors after deletes, upserts and a vacuum, with
/// tombstones left.
fn store_with_index(dir: &Path) -> (usize, u64) {
    let mut rng = Rng::new(0x1DE);
    let store = Store::create(dir, DIMENSION as u32, options()).unwrap();
    let vector = |rng: &mut Rng| -> Vec<f32> { (0..DIMENSION).map(|_| rng.next_f32()).collect() };
    for i in 0..300 {
        store.insert(&format!("v{i}"), &vector(&mut rng), &[]).unwrap();
    }
    store
        .create_index(IndexOptions {
            metric: Metric::L2,
            m: 6,
            ef_construction: 32,
        })
        .unwrap();
    for i in 0..40 {
        store.delete(&format!("v{i}")).unwrap();
    }
    store.vacuum_index().unwrap();
    for i in 40..50 {
        store.delete(&format!("v{i}")).unwrap();
        store.upsert(&format!("v{}", i + 100), &vector(&mut rng), &[]).unwrap();
    }
    let info = store.index_info().unwrap().unwrap();
    let len = store.len();
    store.close().unwrap();
    (len, info.deleted)
}

#[test]
fn the_reference_reader_reads_and_checks_an_index_like_the_engine() {
    if !support::python_available("index_reference") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (len, tombstones) = store_with_index(dir.path());
    assert!(tombstones > 0, "the store keeps tombstones for the reader to check");
    let out = read(dir.path());
    assert!(
        out["errors"].as_array().unwrap().is_empty(),
        "errors: {}",
        out["errors"]
    );
    assert!(
        out["damage"].as_array().is_none_or(|d| d.is_empty()),
        "damage: {}",
        out["damage"]
    );
    let graph = &out["catalog"]["graph"];
    assert_eq!(graph["live"].as_u64(), Some(len as u64), "{graph}");
    assert_eq!(graph["tombstones"].as_u64(), Some(tombstones), "{graph}");
    assert_eq!(out["vectors"].as_object().unwrap().len(), len);
}

#[test]
fn the_reference_reader_reports_a_list_naming_a_free_node() {
    if !support::python_available("index_reference") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    store_with_index(dir.path());
    // Catalog page 0's graph field names the graph meta page; its node extent table the first
    // node page. Node 0's record starts at 64; its first neighbour at 72. Point it at a node
    // past every vector slot in use (free: its record is zero), and reseal the page.
    let path = dir.path().join("arena/catalog-00000000.pages");
    let mut file = std::fs::read(&path).unwrap();
    let page = |n: usize| n * 4096..(n + 1) * 4096;
    let graph = u32::from_le_bytes(file[76..80].try_into().unwrap()) as usize;
    let nodes = u32::from_le_bytes(file[page(graph)][192..196].try_into().unwrap()) as usize;
    let first = &mut file[page(nodes)];
    assert!(first[64] == 1 && first[66] > 0, "node 0 is live with neighbours");
    first[72..76].copy_from_slice(&1000u32.to_le_bytes());
    vellum::format::page::seal(first);
    std::fs::write(&path, &file).unwrap();
    let out = read(dir.path());
    let damage = out["damage"].to_string();
    assert!(
        damage.contains("no node with that layer"),
        "the reader reports the bad list: {damage}"
    );
    let store = Store::open_read_only(dir.path(), options()).unwrap();
    match store.check_index() {
        Err(vellum::Error::Corrupted { reason, .. }) => assert!(reason.contains("beyond"), "{reason}"),
        other => panic!("the engine's check calls the list damage: {other:?}"),
    }
}
