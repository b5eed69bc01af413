//! Replays the fuzz corpora through the fuzz targets' plain functions, on the stable toolchain.
//!
//! For every target of `fuzz/` (cargo-fuzz), every file in `fuzz/corpus/<target>/` and in
//! `fuzz/regressions/<target>/` (minimised inputs of crashes found so far) is passed to
//! `vellum::testing::fuzz::<target>`, which panics on a broken invariant. CI runs this; the
//! fuzzers themselves need nightly (`cargo +nightly fuzz run <target>`).
//!
//! `generate_fuzz_corpus` (ignored) writes the seed corpora from real structures:
//! `cargo test --release --test fuzz_corpus -- --ignored generate_fuzz_corpus`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vellum::format::control::Control;
use vellum::format::page::{PageId, PageKind, Space};
use vellum::format::record::{self, Checkpoint, DirtyPage, Edit, EditKind, Kind, TxnEntry};
use vellum::storage::{SimStorage, Storage};
use vellum::testing::fuzz::{self, FUZZ_STORE_ID, FUZZ_TIMELINE, Mutation, Op, OpsInput, Write};
use vellum::wal::{Geometry, LogIdentity, RecordSpec, Wal, WalConfig};
use vellum::{Lsn, Options, RecoveryMode, Store, SyncMode};
use zerocopy::IntoBytes;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Regression inputs of findings not fixed yet, as `<target>/<file>` lines of
/// `fuzz/regressions/KNOWN_FAILURES` (`#` starts a comment). Each must still fail; once it
/// passes, the finding is fixed and its line must go (the input stays as a regression test).
fn known_failures() -> Vec<String> {
    let list = std::fs::read_to_string(fuzz_dir().join("regressions").join("KNOWN_FAILURES")).unwrap_or_default();
    list.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

/// How many corpus inputs per target a Miri run replays (`fuzz/miri.sh`); all regressions run.
const MIRI_SAMPLE: usize = 12;

/// Runs `body` over every file of the target's corpus and regression directories (under Miri,
/// over a sample of the corpus).
fn replay(target: &str, body: fn(&[u8])) {
    let known = known_failures();
    let mut count = 0;
    let mut failures = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("a directory entry").path()).collect();
        paths.retain(|p| p.is_file());
        paths.sort();
        if cfg!(miri) && kind == "corpus" {
            // Miri is thousands of times slower: an evenly spread sample of each corpus.
            let step = paths.len().div_ceil(MIRI_SAMPLE).max(1);
            paths = paths.into_iter().step_by(step).collect();
        }
        for path in paths {
            let data = std::fs::read(&path).expect("reading a corpus file");
            let name = format!("{target}/{}", path.file_name().unwrap().to_string_lossy());
            let expected_to_fail = kind == "regressions" && known.contains(&name);
            let passed = std::panic::catch_unwind(|| body(&data)).is_ok();
            match (passed, expected_to_fail) {
                (true, false) => {}
                (false, true) => eprintln!("{name}: known failure (fuzz/regressions/KNOWN_FAILURES), still failing"),
                (false, false) => failures.push(format!("{}: fails", path.display())),
                (true, true) => failures.push(format!(
                    "{name}: passes now: remove it from fuzz/regressions/KNOWN_FAILURES"
                )),
            }
            count += 1;
        }
    }
    eprintln!("{target}: {count} inputs");
    assert!(failures.is_empty(), "{target}: {failures:#?}");
    assert!(count > 0, "{target}: no corpus (run generate_fuzz_corpus)");
}

macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target), fuzz::$target);
            }
        )*
    };
}

replay_tests!(
    record_decode,
    wal_page,
    control_file,
    arena_page,
    archive_decode,
    wal_scan,
    recovery,
    ops,
    graph_page
);

// ---------------------------------------------------------------------------------------------
// The seed generator
// ---------------------------------------------------------------------------------------------

const PAGE: u32 = 4096;

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("creating a corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("writing a seed");
}

fn vector(version: u32, dimension: usize) -> Vec<f32> {
    (0..dimension).map(|i| version as f32 + i as f32 * 0.25).collect()
}

fn sample_payloads() -> Vec<(Kind, Vec<u8>)> {
    let catalog = PageId::new(Space::Catalog, 0);
    let vectors = PageId::new(Space::Vector, 1);
    let edits = [
        Edit {
            page: catalog,
            offset: 64,
            after: b"\x01\x02\x03\x04",
            before: Some(b"\0\0\0\0"),
            kind: EditKind::Write,
        },
        Edit {
            page: vectors,
            offset: 4000,
            after: &[7; 96],
            before: None,
            kind: EditKind::Write,
        },
    ];
    let checkpoint = Checkpoint {
        begin_lsn: Lsn(4096 + 32),
        next_txn_id: 9,
        txns: vec![TxnEntry {
            txn_id: 8,
            last_lsn: Lsn(5000),
            undo_next: Lsn(4800),
            state: 0,
        }],
        dirty: vec![DirtyPage {
            page: vectors,
            rec_lsn: Lsn(4200),
        }],
    };
    vec![
        (Kind::Update, record::encode_update(record::Op::Insert, "id-1", &edits)),
        (Kind::Update, record::encode_update(record::Op::Delete, "x", &[])),
        (Kind::Clr, record::encode_clr(Lsn(4100), &edits[1..])),
        (Kind::Commit, Vec::new()),
        (Kind::Abort, Vec::new()),
        (Kind::End, Vec::new()),
        (Kind::CheckpointBegin, Vec::new()),
        (Kind::CheckpointEnd, record::encode_checkpoint(&checkpoint)),
        (
            Kind::PageInit,
            record::encode_page_init(
                vectors,
                record::PageInit::Vector {
                    dimension: 4,
                    stride_bytes: 16,
                },
            ),
        ),
    ]
}

fn wal_config(pages_per_segment: u64) -> WalConfig {
    let geometry = Geometry::new(PAGE, u64::from(PAGE) * pages_per_segment).unwrap();
    let identity = LogIdentity {
        store_id: FUZZ_STORE_ID,
        timeline: FUZZ_TIMELINE,
    };
    let mut config = WalConfig::new(geometry, identity, SyncMode::Never);
    config.background = false;
    config
}

/// A log of the fuzz identity with records of `sizes` (payload bytes; real payloads when the
/// size is 0), synced and closed (or only written, when `close` is false); its segment files.
fn make_log(pages_per_segment: u64, sizes: &[usize], close: bool, release: bool) -> (u64, Vec<Vec<u8>>) {
    let sim = SimStorage::new(1);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let dir = Path::new("/wal");
    let wal = Wal::create(storage, dir, wal_config(pages_per_segment)).unwrap();
    let payloads = sample_payloads();
    let mut prev = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let (kind, payload) = if size == 0 {
            payloads[i % payloads.len()].clone()
        } else {
            (Kind::Update, vec![i as u8; size])
        };
        let spec = RecordSpec {
            kind: kind as u8,
            flags: 0,
            txn_id: 1 + i as u64 / 3,
            prev_lsn: prev,
            timestamp_us: 1_700_000_000_000_000 + i as u64,
        };
        prev = wal.append(&spec, &[&payload]).unwrap().get();
        if i % 4 == 3 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    if release {
        let geometry = wal.geometry();
        let keep_from = geometry.segment_base(geometry.segment_of(wal.end_lsn().get()));
        wal.release_before(Lsn(keep_from)).unwrap();
    }
    let numbers = wal.segment_numbers();
    if close {
        wal.close().unwrap();
    } else {
        wal.write_out().unwrap();
        drop(wal);
    }
    let segments = numbers
        .iter()
        .map(|&n| sim.read_file(&dir.join(format!("{n:016x}.wal"))).unwrap())
        .collect();
    (numbers[0], segments)
}

/// A closed store in SimStorage after a few operations; returns the disk.
fn make_store(dimension: u32) -> SimStorage {
    let sim = SimStorage::new(3);
    let options = Options {
        sync: SyncMode::Always,
        recovery: RecoveryMode::TolerateTornTail,
        page_size_bytes: PAGE,
        segment_size_bytes: u64::from(PAGE) * 8,
        checkpoint_interval_bytes: 0,
        storage: Arc::new(sim.clone()),
        background_io: false,
        ..Options::default()
    };
    let store = Store::create("/db", dimension, options).unwrap();
    let d = dimension as usize;
    store.insert("a", &vector(1, d), &[("k", "v1")]).unwrap();
    store.insert("b", &vector(2, d), &[]).unwrap();
    store.insert("c", &vector(3, d), &[("m", &"L".repeat(6000))]).unwrap();
    store.insert("d", &vector(4, d), &[("k", "v4"), ("k2", "w")]).unwrap();
    store.delete("b").unwrap();
    store.upsert("a", &vector(5, d), &[("k", "v5")]).unwrap();
    store.close().unwrap();
    sim
}

/// A store that archived log segments and base images (many checkpoints); returns the disk.
fn make_archiving_store() -> SimStorage {
    let sim = SimStorage::new(4);
    let options = Options {
        page_size_bytes: PAGE,
        segment_size_bytes: u64::from(PAGE) * 5,
        checkpoint_interval_bytes: 0,
        storage: Arc::new(sim.clone()),
        background_io: false,
        ..Options::default()
    };
    let store = Store::create("/db", 4, options).unwrap();
    for i in 0..12u32 {
        store
            .upsert(&format!("id-{}", i % 5), &vector(i, 4), &[("m", &"x".repeat(300))])
            .unwrap();
        store.checkpoint().unwrap();
    }
    store.close().unwrap();
    sim
}

/// Pages per arena file of the stores above (8-page segments).
const PAGES_PER_FILE: u64 = 8;

/// The file and offset of arena page `id` of the stores above.
fn page_place(id: PageId) -> (PathBuf, usize) {
    let name = format!("{}-{:08x}.pages", id.space().name(), id.page_no() / PAGES_PER_FILE);
    let offset = (id.page_no() % PAGES_PER_FILE) as usize * PAGE as usize;
    (Path::new("/db/arena").join(name), offset)
}

/// A closed store whose index has two levels, with pages of every kind (free pages, overflow
/// chains, vector pages with free slots); returns the disk.
fn make_index_store() -> SimStorage {
    let sim = SimStorage::new(5);
    let options = Options {
        page_size_bytes: PAGE,
        segment_size_bytes: u64::from(PAGE) * PAGES_PER_FILE,
        checkpoint_interval_bytes: 0,
        storage: Arc::new(sim.clone()),
        background_io: false,
        ..Options::default()
    };
    let store = Store::create("/db", 4, options).unwrap();
    let id = |n: u32| format!("page-{n:03}-{}", "p".repeat(24));
    let mut tx = store.begin().unwrap();
    for n in 0..180u32 {
        let meta = if n % 40 == 0 { "L".repeat(5000) } else { format!("v{n}") };
        tx.insert(&id(n), &vector(n, 4), &[("m", &meta)]).unwrap();
    }
    tx.commit().unwrap();
    let mut tx = store.begin().unwrap();
    for n in (60..110).chain([3, 17, 150]) {
        tx.delete(&id(n)).unwrap();
    }
    tx.commit().unwrap();
    store.close().unwrap();
    sim
}

/// The first page of each kind of the store on `sim` (not all zero).
fn first_page_of_each_kind(sim: &SimStorage) -> Vec<(PageKind, PageId)> {
    let mut found: Vec<(PageKind, PageId)> = Vec::new();
    for space in [Space::Catalog, Space::Vector] {
        for page_no in 0.. {
            let id = PageId::new(space, page_no);
            let (path, offset) = page_place(id);
            let Ok(bytes) = sim.read_file(&path) else { break };
            let page = &bytes[offset..offset + PAGE as usize];
            let Some(kind) = PageKind::from_u8(page[4]) else {
                continue;
            };
            if kind != PageKind::Zero && !found.iter().any(|(k, _)| *k == kind) {
                found.push((kind, id));
            }
        }
    }
    assert_eq!(found.len(), PageKind::ALL.len() - 1, "a page of every kind: {found:?}");
    found
}

/// Mutation programs (for the recovery target) that damage the meta page, a node and an owner
/// table and recompute the checksums: only the index checks see them. File indices are those
/// of the files of `store` (a store like the recovery target's), in path order.
fn index_mutations(store: &SimStorage) -> Vec<(&'static str, Vec<Mutation>)> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::from("/db")];
    while let Some(dir) = pending.pop() {
        for name in store.list(&dir).unwrap() {
            let path = dir.join(name);
            if store.list(&path).is_ok() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let file = |path: &str| files.iter().position(|f| f == Path::new(path)).unwrap() as u8;
    let (catalog, vectors) = (
        file("/db/arena/catalog-00000000.pages"),
        file("/db/arena/vector-00000000.pages"),
    );
    let root = PageId::new(Space::Catalog, 2).0;
    vec![
        (
            "meta-count-resealed",
            vec![
                Mutation::SetU64 {
                    file: catalog,
                    offset: 80,
                    value: 99,
                },
                Mutation::Reseal { file: catalog, page: 0 },
            ],
        ),
        (
            "meta-root-resealed",
            vec![
                Mutation::SetU64 {
                    file: catalog,
                    offset: 64,
                    value: root,
                },
                Mutation::Reseal { file: catalog, page: 0 },
            ],
        ),
        (
            "node-cell-resealed",
            vec![
                Mutation::SetByte {
                    file: catalog,
                    offset: 4096 + 4000,
                    value: 0x2f,
                },
                Mutation::Reseal { file: catalog, page: 1 },
            ],
        ),
        (
            "owner-zeroed-resealed",
            vec![
                Mutation::SetU64 {
                    file: vectors,
                    offset: 64,
                    value: 0,
                },
                Mutation::Reseal { file: vectors, page: 0 },
            ],
        ),
    ]
}

fn page(bytes: &[u8], index: usize) -> &[u8] {
    &bytes[index * PAGE as usize..(index + 1) * PAGE as usize]
}

#[test]
#[ignore = "writes the seed corpora into fuzz/corpus; run once after a format change"]
fn generate_fuzz_corpus() {
    // record_decode: a kind byte and its payload, for every kind; whole records read from logs.
    for (i, (kind, payload)) in sample_payloads().into_iter().enumerate() {
        let mut bytes = vec![kind as u8];
        bytes.extend_from_slice(&payload);
        write_seed("record_decode", &format!("payload-{i}-{}", kind.name()), &bytes);
    }
    let (_, segments) = make_log(5, &[0, 0, 0, 0, 0, 0, 0, 0, 0], true, false);
    let data_page = page(&segments[0], 1);
    let mut pos = 32;
    let mut n = 0;
    while pos + 56 <= data_page.len() {
        let total_len = u32::from_le_bytes(data_page[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if total_len < 56 || pos + total_len > data_page.len() {
            break;
        }
        write_seed(
            "record_decode",
            &format!("record-{n}"),
            &data_page[pos..pos + total_len],
        );
        n += 1;
        pos = (pos + total_len).div_ceil(8) * 8;
    }

    // wal_page: page 1 of real logs (small records; a record spanning into page 2; a store's log).
    write_seed("wal_page", "records", data_page);
    let (_, spanning) = make_log(5, &[100, 3000, 2000], true, false);
    write_seed("wal_page", "spanning", page(&spanning[0], 1));
    let store = make_store(4);
    let store_wal = store.read_file(Path::new("/db/wal/0000000000000000.wal")).unwrap();
    write_seed("wal_page", "store", page(&store_wal, 1));

    // control_file: a store's CONTROL, one slot torn, a custom control with a checkpoint.
    let control = store.read_file(Path::new("/db/CONTROL")).unwrap();
    write_seed("control_file", "store", &control);
    let mut torn = control.clone();
    torn[700] ^= 0x40;
    write_seed("control_file", "torn-slot", &torn);
    let custom = Control {
        page_size_bytes: PAGE,
        segment_size_bytes: u64::from(PAGE) * 8,
        dimension: 4,
        timeline: 1,
        store_id: FUZZ_STORE_ID,
        sequence: 7,
        checkpoint_lsn: Lsn(4096 + 32),
        checkpoint_end_lsn: Lsn(4096 + 200),
        redo_lsn: Lsn(4096 + 32),
        next_txn_id: 5,
        created_us: 1,
        checkpoint_us: 2,
        truncate_lsn: Lsn(0),
        extent: None,
    };
    let mut slots = custom.to_slot().as_bytes().to_vec();
    let mut older = custom.clone();
    older.sequence = 6;
    slots.extend_from_slice(older.to_slot().as_bytes());
    write_seed("control_file", "custom", &slots);

    // arena_page: a page of every kind, from a store whose index has two levels.
    let index_store = make_index_store();
    for (kind, id) in first_page_of_each_kind(&index_store) {
        let (path, offset) = page_place(id);
        let bytes = index_store.read_file(&path).unwrap();
        write_seed("arena_page", kind.name(), &bytes[offset..offset + PAGE as usize]);
    }

    // graph_page: the approximate index's golden pages (graph meta, node, upper page), and the
    // pages of the target's own base store.
    for name in ["page-graph-meta", "page-graph-nodes", "page-graph-upper"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("format-spec/vectors/{name}.bin"));
        write_seed("graph_page", name, &std::fs::read(path).expect("a golden graph page"));
    }
    for (name, page) in fuzz::graph_page_seeds() {
        write_seed("graph_page", &name, &page);
    }

    // archive_decode: LZ4 blocks with a prepended size (floats, text, nothing).
    let floats: Vec<u8> = vector(3, 64).iter().flat_map(|f| f.to_le_bytes()).collect();
    write_seed(
        "archive_decode",
        "floats",
        &lz4_flex::block::compress_prepend_size(&floats),
    );
    write_seed(
        "archive_decode",
        "text",
        &lz4_flex::block::compress_prepend_size(b"id-1 id-2 id-3 metadata metadata metadata"),
    );
    write_seed("archive_decode", "empty", &lz4_flex::block::compress_prepend_size(b""));
    // ... and real archive files (archived WAL segments, base images) of a store.
    let archived = make_archiving_store();
    let archive_dir = Path::new("/db/archive");
    let mut names = archived.list(archive_dir).unwrap();
    names.sort_by_key(|name| archived.read_file(&archive_dir.join(name)).unwrap().len());
    for name in names.iter().filter(|n| !n.ends_with(".tmp")).take(4) {
        let bytes = archived.read_file(&archive_dir.join(name)).unwrap();
        write_seed("archive_decode", &format!("archive-{name}"), &bytes);
    }

    // wal_scan: real logs of the fuzz identity, as the target's input layout.
    // (name, pages per segment, record sizes, closed, first segment released, flags, epoch)
    type LogSeed<'a> = (&'a str, u64, &'a [usize], bool, bool, u8, u8);
    let logs: [LogSeed<'_>; 6] = [
        ("one-segment", 5, &[0, 0, 0, 0, 0, 0, 0, 0, 0], true, false, 0, 0),
        ("spanning-pages", 5, &[100, 3000, 5000, 20], true, false, 0, 3),
        (
            "two-segments",
            5,
            &[3000, 3000, 3000, 3000, 3000, 3000, 200],
            true,
            false,
            0x10,
            2,
        ),
        ("released-first", 6, &[3000; 12], true, true, 0x30, 4),
        ("unclosed", 8, &[0, 500, 0, 9000, 0], false, false, 0, 1),
        ("repair-all", 5, &[0, 0, 0, 700, 0], true, false, 0x0f, 0),
    ];
    for (name, pages, sizes, close, release, flags, epoch) in logs {
        let (first, segments) = make_log(pages, sizes, close, release);
        let segments = &segments[..segments.len().min(3)];
        write_seed(
            "wal_scan",
            name,
            &fuzz::encode_wal_scan(segments, pages, first, flags, epoch),
        );
    }

    // recovery: seeds with no damage, and a few mutation programs.
    for seed in 0u64..4 {
        write_seed("recovery", &format!("undamaged-{seed}"), &seed.to_le_bytes());
    }
    let programs: [(&str, Vec<Mutation>); 6] = [
        (
            "flip-wal",
            vec![Mutation::FlipBit {
                file: 6,
                offset: 4096 + 100,
                bit: 3,
            }],
        ),
        ("zero-wal-page", vec![Mutation::ZeroPage { file: 5, page: 3 }]),
        ("truncate", vec![Mutation::Truncate { file: 6, len: 9000 }]),
        ("swap-wal-pages", vec![Mutation::SwapPages { file: 6, a: 1, b: 2 }]),
        (
            "control-field-resealed",
            vec![
                Mutation::SetU64 {
                    file: 0,
                    offset: 48,
                    value: 4096 + 40,
                },
                Mutation::Reseal { file: 0, page: 0 },
            ],
        ),
        (
            "wal-byte-resealed",
            vec![
                Mutation::SetByte {
                    file: 6,
                    offset: 4096 + 200,
                    value: 0x55,
                },
                Mutation::Reseal { file: 6, page: 1 },
            ],
        ),
    ];
    for (i, (name, program)) in programs.into_iter().enumerate() {
        let mut bytes = (i as u64 + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(&fuzz::encode_mutations(&program));
        write_seed("recovery", name, &bytes);
    }
    // ... and damage to the index and its pages that keeps the checksums valid.
    for (i, (name, program)) in index_mutations(&store).into_iter().enumerate() {
        let mut bytes = (i as u64 + 11).to_le_bytes().to_vec();
        bytes.extend_from_slice(&fuzz::encode_mutations(&program));
        write_seed("recovery", name, &bytes);
    }

    // ops: call sequences with commits, aborts, checkpoints, crashes and reopens.
    use Write::{Delete, Insert, Upsert};
    let scenarios: [(&str, SyncMode, Vec<Op>); 6] = [
        (
            "basic",
            SyncMode::Always,
            vec![
                Op::Single(Insert { id: 1, meta: 0 }),
                Op::Single(Upsert { id: 2, meta: 0 }),
                Op::Single(Insert { id: 1, meta: 0 }),
                Op::Single(Delete { id: 2 }),
                Op::Checkpoint,
                Op::Single(Upsert { id: 3, meta: 0x85 }),
                Op::Crash,
                Op::Single(Upsert { id: 1, meta: 0 }),
            ],
        ),
        (
            "transactions",
            SyncMode::Always,
            vec![
                Op::Txn {
                    writes: vec![
                        Insert { id: 1, meta: 0 },
                        Upsert { id: 2, meta: 0x90 },
                        Delete { id: 1 },
                    ],
                    commit: true,
                },
                Op::Txn {
                    writes: vec![Upsert { id: 2, meta: 0 }, Insert { id: 4, meta: 0 }],
                    commit: false,
                },
                Op::Hold(2),
                Op::Reopen,
                Op::Single(Delete { id: 2 }),
            ],
        ),
        (
            "crash-after-ops",
            SyncMode::Always,
            vec![
                Op::Single(Insert { id: 5, meta: 0 }),
                Op::CrashAfterOps(3),
                Op::Single(Upsert { id: 6, meta: 0 }),
                Op::Single(Upsert { id: 7, meta: 0 }),
                Op::Single(Upsert { id: 8, meta: 0 }),
            ],
        ),
        (
            "sync-never",
            SyncMode::Never,
            vec![
                Op::Single(Upsert { id: 1, meta: 0 }),
                Op::Sync,
                Op::Single(Upsert { id: 2, meta: 0 }),
                Op::Crash,
                Op::Single(Upsert { id: 3, meta: 0 }),
            ],
        ),
        (
            "fill-and-empty",
            SyncMode::Always,
            (0..12)
                .map(|id| Op::Single(Upsert { id, meta: 0 }))
                .chain([Op::Checkpoint])
                .chain((0..12).map(|id| Op::Single(Delete { id })))
                .chain([Op::Reopen, Op::Single(Upsert { id: 5, meta: 0x88 }), Op::Crash])
                .collect(),
        ),
        (
            "checkpoints",
            SyncMode::Always,
            (0..24)
                .map(|i| {
                    Op::Single(Upsert {
                        id: i % 12,
                        meta: if i % 5 == 0 { 0xff } else { 0 },
                    })
                })
                .chain([Op::CrashAfterOps(20), Op::Checkpoint, Op::Single(Delete { id: 3 })])
                .collect(),
        ),
    ];
    for (name, sync, ops) in scenarios {
        write_seed("ops", name, &fuzz::encode_ops(&OpsInput { sync, ops }));
    }
}
