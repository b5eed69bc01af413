//! The `recovery` target, and the encoding of its mutation programs (for seeds).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::repair::{Repair, repair_log};
use super::{DIMENSION, MODES, PAGE, PAGE_BYTES, STORE_DIR, long_id, meta_of, probe, store_options, vector_of};
use crate::format::control::CONTROL_SLOT_BYTES;
use crate::format::page;
use crate::format::wal::Geometry;
use crate::inspect::{check_index, index_report};
use crate::rng::SplitMix64;
use crate::storage::SimStorage;
use crate::testing::model::State;
use crate::testing::{Bytes, StoreImage};
use crate::{Error, RecoveryMode, Store, SyncMode};

/// How many ids the recovery workload uses ([`long_id`] 0 to 7: long, so that they fill
/// several leaves).
const RECOVERY_IDS: u64 = 8;
/// How many different base stores the recovery target builds (its seeds, modulo this).
pub const RECOVERY_SEEDS: u64 = 256;

/// A crashed store built from a seed, and the state it must recover to.
struct RecoveryBase {
    image: StoreImage,
    /// The image on a crashed disk, booted as it is by inputs without mutations.
    disk: SimStorage,
    state: State,
}

/// Builds the store of `seed`: some autocommit operations and transactions (some aborted), a
/// checkpoint, more of them, maybe a transaction left running, then a crash. Commits are
/// durable (`SyncMode::Always`), so recovery must return exactly the last committed state.
/// Built once per process and seed, and [`RECOVERY_SEEDS`] seeds at most: the input's seed
/// is reduced modulo that, so after a warm-up every input finds its store in the cache.
fn recovery_base(seed: u64) -> Arc<RecoveryBase> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Arc<RecoveryBase>>>> = OnceLock::new();
    assert!(
        seed < RECOVERY_SEEDS,
        "recovery seeds are reduced modulo RECOVERY_SEEDS"
    );
    let cache = CACHE.get_or_init(Default::default);
    if let Some(base) = cache.lock().expect("cache lock").get(&seed) {
        return base.clone();
    }
    let mut rng = SplitMix64::new(seed);
    let sim = SimStorage::new(seed);
    let options = store_options(&sim, RecoveryMode::TolerateTornTail, SyncMode::Always);
    let store = Store::create(STORE_DIR, DIMENSION as u32, options).expect("creating the recovery base store");
    let mut state = State::new();
    let mut version = 0u32;
    let mut phase = |store: &Store, state: &mut State, rng: &mut SplitMix64, steps: u64| {
        for _ in 0..steps {
            let mut tx = store.begin().expect("begin");
            let mut scratch = state.clone();
            for _ in 0..1 + rng.below(3) {
                let id = long_id(rng.below(RECOVERY_IDS));
                if rng.below(4) == 0 {
                    tx.delete(&id).expect("delete");
                    scratch.remove(&id);
                } else {
                    version += 1;
                    let meta = meta_of(version, if rng.below(6) == 0 { 0x80 } else { 0 });
                    tx.upsert(&id, &vector_of(version), &[("m", &meta)]).expect("upsert");
                    scratch.insert(id, (version, meta));
                }
            }
            if rng.below(5) == 0 {
                tx.abort().expect("abort");
            } else {
                tx.commit().expect("commit");
                *state = scratch;
            }
        }
    };
    let steps = 2 + rng.below(5);
    phase(&store, &mut state, &mut rng, steps);
    store.checkpoint().expect("checkpoint");
    let steps = 1 + rng.below(4);
    phase(&store, &mut state, &mut rng, steps);
    if rng.below(2) == 0 {
        // A transaction running at the crash: recovery must undo it.
        let mut tx = store.begin().expect("begin");
        tx.upsert(&long_id(0), &vector_of(999_999), &[("m", "loser")])
            .expect("upsert");
        tx.delete(&long_id(1)).expect("delete");
        sim.crash_now();
        drop(tx);
    }
    sim.crash_now();
    drop(store);
    let disk = sim.reboot();
    let image = StoreImage::of(&disk, Path::new(STORE_DIR));
    let base = Arc::new(RecoveryBase {
        disk: image.boot_disk(),
        image,
        state,
    });
    cache.lock().expect("cache lock").insert(seed, base.clone());
    base
}

/// One step of a recovery mutation program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    FlipBit {
        file: u8,
        offset: u32,
        bit: u8,
    },
    SetByte {
        file: u8,
        offset: u32,
        value: u8,
    },
    SetU32 {
        file: u8,
        offset: u32,
        value: u32,
    },
    SetU64 {
        file: u8,
        offset: u32,
        value: u64,
    },
    Truncate {
        file: u8,
        len: u32,
    },
    ZeroPage {
        file: u8,
        page: u16,
    },
    SwapPages {
        file: u8,
        a: u16,
        b: u16,
    },
    CopyPage {
        from: u8,
        page: u16,
        to: u8,
        at: u16,
    },
    Remove {
        file: u8,
    },
    /// Recomputes the checksums of the file's structure (page `page` for page files).
    Reseal {
        file: u8,
        page: u16,
    },
}

/// Decodes a recovery mutation program: at most 16 steps, each a tag byte and its arguments.
pub fn decode_mutations(data: &[u8]) -> Vec<Mutation> {
    let mut input = Bytes(data);
    let mut out = Vec::new();
    while !input.is_empty() && out.len() < 16 {
        let mutation = match input.u8() % 10 {
            0 => Mutation::FlipBit {
                file: input.u8(),
                offset: input.u32(),
                bit: input.u8(),
            },
            1 => Mutation::SetByte {
                file: input.u8(),
                offset: input.u32(),
                value: input.u8(),
            },
            2 => Mutation::SetU32 {
                file: input.u8(),
                offset: input.u32(),
                value: input.u32(),
            },
            3 => Mutation::SetU64 {
                file: input.u8(),
                offset: input.u32(),
                value: input.u64(),
            },
            4 => Mutation::Truncate {
                file: input.u8(),
                len: input.u32(),
            },
            5 => Mutation::ZeroPage {
                file: input.u8(),
                page: input.u16(),
            },
            6 => Mutation::SwapPages {
                file: input.u8(),
                a: input.u16(),
                b: input.u16(),
            },
            7 => Mutation::CopyPage {
                from: input.u8(),
                page: input.u16(),
                to: input.u8(),
                at: input.u16(),
            },
            8 => Mutation::Remove { file: input.u8() },
            _ => Mutation::Reseal {
                file: input.u8(),
                page: input.u16(),
            },
        };
        out.push(mutation);
    }
    out
}

/// Encodes a mutation program as [`decode_mutations`] reads it (for seeds).
pub fn encode_mutations(program: &[Mutation]) -> Vec<u8> {
    let mut out = Vec::new();
    for mutation in program {
        match *mutation {
            Mutation::FlipBit { file, offset, bit } => {
                out.extend([0, file]);
                out.extend(offset.to_le_bytes());
                out.push(bit);
            }
            Mutation::SetByte { file, offset, value } => {
                out.extend([1, file]);
                out.extend(offset.to_le_bytes());
                out.push(value);
            }
            Mutation::SetU32 { file, offset, value } => {
                out.extend([2, file]);
                out.extend(offset.to_le_bytes());
                out.extend(value.to_le_bytes());
            }
            Mutation::SetU64 { file, offset, value } => {
                out.extend([3, file]);
                out.extend(offset.to_le_bytes());
                out.extend(value.to_le_bytes());
            }
            Mutation::Truncate { file, len } => {
                out.extend([4, file]);
                out.extend(len.to_le_bytes());
            }
            Mutation::ZeroPage { file, page } => {
                out.extend([5, file]);
                out.extend(page.to_le_bytes());
            }
            Mutation::SwapPages { file, a, b } => {
                out.extend([6, file]);
                out.extend(a.to_le_bytes());
                out.extend(b.to_le_bytes());
            }
            Mutation::CopyPage { from, page, to, at } => {
                out.extend([7, from]);
                out.extend(page.to_le_bytes());
                out.push(to);
                out.extend(at.to_le_bytes());
            }
            Mutation::Remove { file } => out.extend([8, file]),
            Mutation::Reseal { file, page } => {
                out.extend([9, file]);
                out.extend(page.to_le_bytes());
            }
        }
    }
    out
}

/// Applies one mutation to the files of a store image (files picked by index, modulo count).
fn mutate(files: &mut BTreeMap<PathBuf, Vec<u8>>, mutation: &Mutation, geometry: &Geometry) {
    let paths: Vec<PathBuf> = files.keys().cloned().collect();
    if paths.is_empty() {
        return;
    }
    let pick = |file: u8| paths[usize::from(file) % paths.len()].clone();
    match *mutation {
        Mutation::FlipBit { file, .. }
        | Mutation::SetByte { file, .. }
        | Mutation::SetU32 { file, .. }
        | Mutation::SetU64 { file, .. }
        | Mutation::Truncate { file, .. }
        | Mutation::ZeroPage { file, .. }
        | Mutation::SwapPages { file, .. } => {
            let bytes = files.get_mut(&pick(file)).expect("picked");
            mutate_file(bytes, mutation);
        }
        Mutation::CopyPage { from, page, to, at } => {
            let source = &files[&pick(from)];
            let Some(range) = page_range(source, page) else { return };
            let copy = source[range].to_vec();
            let target = files.get_mut(&pick(to)).expect("picked");
            if let Some(range) = page_range(target, at) {
                target[range].copy_from_slice(&copy);
            }
        }
        Mutation::Remove { file } => {
            files.remove(&pick(file));
        }
        Mutation::Reseal { file, page } => {
            let path = pick(file);
            let bytes = files.get_mut(&path).expect("picked");
            reseal(&path, bytes, page, geometry);
        }
    }
}

/// Applies a mutation of one file's bytes to `bytes`, the file it picked.
fn mutate_file(bytes: &mut Vec<u8>, mutation: &Mutation) {
    match *mutation {
        Mutation::FlipBit { offset, bit, .. } => {
            if let Some(i) = byte_index(bytes, offset) {
                bytes[i] ^= 1 << (bit % 8);
            }
        }
        Mutation::SetByte { offset, value, .. } => {
            if let Some(i) = byte_index(bytes, offset) {
                bytes[i] = value;
            }
        }
        Mutation::SetU32 { offset, value, .. } => {
            if let Some(i) = byte_index(bytes, offset) {
                let n = (bytes.len() - i).min(4);
                bytes[i..i + n].copy_from_slice(&value.to_le_bytes()[..n]);
            }
        }
        Mutation::SetU64 { offset, value, .. } => {
            if let Some(i) = byte_index(bytes, offset) {
                let n = (bytes.len() - i).min(8);
                bytes[i..i + n].copy_from_slice(&value.to_le_bytes()[..n]);
            }
        }
        Mutation::Truncate { len, .. } => {
            let len = len as usize % (bytes.len() + 1);
            bytes.truncate(len);
        }
        Mutation::ZeroPage { page, .. } => {
            if let Some(range) = page_range(bytes, page) {
                bytes[range].fill(0);
            }
        }
        Mutation::SwapPages { a, b, .. } => {
            if let (Some(a), Some(b)) = (page_range(bytes, a), page_range(bytes, b))
                && a != b
            {
                let copy = bytes[a.clone()].to_vec();
                bytes.copy_within(b.clone(), a.start);
                bytes[b].copy_from_slice(&copy);
            }
        }
        Mutation::CopyPage { .. } | Mutation::Remove { .. } | Mutation::Reseal { .. } => {
            unreachable!("{mutation:?} is not a mutation of one file's bytes")
        }
    }
}

/// The index of byte `offset` of `bytes`, modulo its length; `None` if it is empty.
fn byte_index(bytes: &[u8], offset: u32) -> Option<usize> {
    (offset as usize).checked_rem(bytes.len())
}

/// The bytes of page `page` (modulo the whole pages `bytes` holds); `None` if it holds none.
fn page_range(bytes: &[u8], page: u16) -> Option<std::ops::Range<usize>> {
    let pages = bytes.len() / PAGE_BYTES;
    (pages > 0).then(|| {
        let start = usize::from(page) % pages * PAGE_BYTES;
        start..start + PAGE_BYTES
    })
}

/// Recomputes the checksums of the structure `path` holds (see [`Mutation::Reseal`]).
fn reseal(path: &Path, bytes: &mut [u8], page: u16, geometry: &Geometry) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let page_range = |len: usize| {
        let pages = len / PAGE_BYTES;
        (pages > 0).then(|| {
            let start = usize::from(page) % pages * PAGE_BYTES;
            start..start + PAGE_BYTES
        })
    };
    if name == crate::format::control::CONTROL_FILE_NAME {
        for slot in bytes.chunks_exact_mut(CONTROL_SLOT_BYTES).take(2) {
            let crc = crc32c::crc32c(&slot[..crate::format::control::CONTROL_CRC_OFFSET]);
            slot[crate::format::control::CONTROL_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        }
    } else if name == "EPOCH" {
        if bytes.len() >= 12 {
            let crc = crc32c::crc32c(&bytes[..8]);
            bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        }
    } else if let Some(segment_no) = crate::wal::segment::parse_segment_file_name(name) {
        let whole = bytes.len() / PAGE_BYTES * PAGE_BYTES;
        repair_log(&mut bytes[..whole], segment_no, geometry, Repair::ALL);
    } else if name == crate::format::doublewrite::DOUBLEWRITE_FILE_NAME && usize::from(page) % 64 == 0 {
        if bytes.len() >= crate::format::doublewrite::DOUBLEWRITE_HEADER_BYTES {
            let crc = crc32c::crc32c(&bytes[..60]);
            bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        }
    } else if let Some(range) = page_range(bytes.len()) {
        // Arena files, doublewrite images, spares: page checksums.
        page::seal(&mut bytes[range]);
    }
}

/// **recovery**: the first 8 bytes (little-endian, modulo [`RECOVERY_SEEDS`]) seed a real
/// store in SimStorage (4 KiB pages, 8-page segments; a few inserts, upserts and deletes in autocommit and multi-operation transactions,
/// some aborted, a checkpoint, more commits, maybe a transaction left running, then a crash);
/// the rest is a mutation program over its files (bit flips, bytes, integers, truncation,
/// zeroed, swapped and copied pages, removed files, checksums recomputed; see [`Mutation`]).
///
/// Invariants, in every `RecoveryMode`:
/// - `Store::open` returns `Ok` or an error, never panics nor hangs;
/// - on `Ok`, `get` of every id returns a vector of the store's dimension with readable
///   metadata, `None`, or an error; a further commit and a close return `Ok` or an error;
/// - `inspect::index_report` (the full check of the index) never panics; when it finds
///   nothing wrong, `get` of every id returns a vector for exactly the ids the index holds and
///   never an error, the length is the index's count, and writes that succeed leave the index
///   clean;
/// - with an empty program, the open succeeds in every mode, the index checks clean and the
///   store holds exactly the last committed state (every commit was acknowledged as durable).
pub fn recovery(data: &[u8]) {
    let (seed_bytes, program) = data.split_at(data.len().min(8));
    let mut seed = [0u8; 8];
    seed[..seed_bytes.len()].copy_from_slice(seed_bytes);
    let base = recovery_base(u64::from_le_bytes(seed) % RECOVERY_SEEDS);
    let program = decode_mutations(program);
    let geometry = Geometry::new(PAGE, PAGE as u64 * 8).expect("valid geometry");
    let disk = if program.is_empty() {
        base.disk.clone()
    } else {
        let mut image = base.image.clone();
        for mutation in &program {
            mutate(&mut image.files, mutation, &geometry);
        }
        image.boot_disk()
    };
    for mode in MODES {
        let sim = disk.reboot_with_seed(0x5eed);
        let opened = Store::open(STORE_DIR, store_options(&sim, mode, SyncMode::Always));
        let store = match opened {
            Ok(store) => store,
            // Strict may refuse an undamaged crash image: unsynced sectors of the last
            // transaction can leave valid records after a torn one (an ambiguous tail).
            Err(Error::Corrupted { .. }) if mode == RecoveryMode::Strict => continue,
            Err(e) => {
                assert!(
                    !program.is_empty(),
                    "an undamaged crashed store fails to open in {mode:?}: {e}"
                );
                continue;
            }
        };
        check_recovered(&store, mode, &base, program.is_empty());
        let _ = store.close();
    }
}

/// The checks of a store recovered in `mode` from `base` (`undamaged`: with no mutation):
/// the full check of the index, the reads against it, a write and the check again.
fn check_recovered(store: &Store, mode: RecoveryMode, base: &RecoveryBase, undamaged: bool) {
    let mut visited = Vec::new();
    let check = index_report(store, &mut |id| visited.push(id.to_vec()));
    let mut state = State::new();
    for i in 0..RECOVERY_IDS {
        let id = long_id(i);
        if check.clean() {
            // A reader never finds damage the full check of the index does not.
            let held = visited.iter().any(|v| v.as_slice() == id.as_bytes());
            match store.get(&id) {
                Ok(found) => assert_eq!(found.is_some(), held, "get of id {i} disagrees with a clean index"),
                Err(e) => panic!("get of id {i} failed on a store whose index checks clean ({mode:?}): {e}"),
            }
        }
        if let Some((version, meta)) = probe(store, &id)
            && let (Some(version), [(key, value)]) = (version, meta.as_slice())
            && key == "m"
        {
            state.insert(id, (version, value.clone()));
        }
    }
    if check.clean() {
        assert_eq!(
            store.len() as u64,
            check.summary.entries,
            "len is not the index's count"
        );
    }
    if undamaged {
        assert!(
            check.clean(),
            "the index of an undamaged crashed store, recovered in {mode:?}: {:#?}",
            check.damage
        );
        let ids: Vec<&[u8]> = visited.iter().map(Vec::as_slice).collect();
        let expected: Vec<&[u8]> = base.state.keys().map(|k| k.as_bytes()).collect();
        assert_eq!(ids, expected, "the index after recovery in {mode:?} holds other ids");
        assert_eq!(
            state, base.state,
            "recovery in {mode:?} did not restore the last committed state"
        );
        assert_eq!(store.len(), base.state.len(), "len after recovery in {mode:?}");
    }
    let upserted = store.upsert("id-after", &vector_of(5), &[("m", "after")]);
    let deleted = store.delete(&long_id(1));
    probe(store, "id-after");
    if check.clean()
        && upserted.is_ok()
        && deleted.is_ok()
        && let Err(e) = check_index(store)
    {
        panic!("writes left a clean index damaged ({mode:?}): {e}");
    }
}
