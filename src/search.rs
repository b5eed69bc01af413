//! Exact similarity search: a sequential scan of the vector pages, in place and zero-copy,
//! over committed vectors only, keeping the best `k`.
//!
//! The kernels use AVX2 and FMA when the CPU has them (detected at run time) and a portable
//! loop with several accumulators (which the compiler vectorises) otherwise.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::page::{self, PageId, Space};
use crate::store::state::Meta;
use crate::store::{Inner, meta};
use crate::{Error, Result};

/// How similarity is measured.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Cosine similarity, higher is closer (a zero vector has similarity 0).
    Cosine,
    /// Euclidean distance, lower is closer.
    L2,
    /// Dot product, higher is closer.
    Dot,
}

/// The committed owner of a vector slot: its id and metadata.
#[derive(Clone, Debug)]
pub struct SlotOwner {
    pub id: Arc<str>,
    pub meta: Meta,
}

/// Who owns each committed vector slot, by global slot number (page × slots per page + slot).
#[derive(Debug, Default)]
pub struct SlotRegistry {
    pub owners: Vec<Option<SlotOwner>>,
}

impl SlotRegistry {
    pub fn set(&mut self, global_slot: usize, owner: Option<SlotOwner>) {
        if global_slot >= self.owners.len() {
            self.owners.resize(global_slot + 1, None);
        }
        self.owners[global_slot] = owner;
    }
}

/// A candidate in the top-k heap, ordered so the heap's top is the worst kept.
struct Candidate {
    key: f32,
    global_slot: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Lower key = better; the max-heap keeps the worst on top. Ties: the lower slot wins.
        self.key
            .total_cmp(&other.key)
            .then(self.global_slot.cmp(&other.global_slot))
    }
}

/// Pages scanned per hold of the registry's read lock.
const PAGES_PER_LOCK: u64 = 64;

/// Searches `inner` for the `k` vectors closest to `query`.
pub(crate) fn search(
    inner: &Inner,
    query: &[f32],
    k: usize,
    metric: Metric,
    filter: Option<(&str, &str)>,
) -> Result<Vec<(String, f32)>> {
    check_query(inner, query, k)?;
    let _pin = inner.epochs.pin();
    let dimension = inner.dimension as usize;
    let stride = page::vector_stride_bytes(inner.dimension);
    let slots_per_page = page::vector_slots_per_page(inner.arena.page_size_bytes(), inner.dimension);
    let query_norm = dot(query, query).sqrt();
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k + 1);
    let pages = inner.arena.page_count(Space::Vector);
    let mut first = 0;
    while first < pages {
        let registry = inner.slots.read();
        for page_no in first..(first + PAGES_PER_LOCK).min(pages) {
            let base = page_no as usize * slots_per_page;
            if base >= registry.owners.len() {
                break;
            }
            let page = PageId::new(Space::Vector, page_no);
            let live = &registry.owners[base..(base + slots_per_page).min(registry.owners.len())];
            if live.iter().all(Option::is_none) {
                continue;
            }
            inner.arena.verify(page)?;
            let start = inner.arena.page_ptr(page, page::VECTOR_SLOTS_OFFSET) as *const f32;
            for (slot, owner) in live.iter().enumerate() {
                let Some(owner) = owner else { continue };
                if filter.is_some_and(|(k, v)| !has_pair(owner, k, v)) {
                    continue;
                }
                // SAFETY: slot `slot` of a vector page holds `dimension` f32s at a 16-byte-aligned
                // offset inside the arena mapping, which lives as long as `inner`. Its owner is
                // committed, so no writer touches it, and the epoch pin keeps it from reuse.
                let vector = unsafe { std::slice::from_raw_parts(start.byte_add(slot * stride), dimension) };
                let key = score_key(metric, query, query_norm, vector);
                push(
                    &mut heap,
                    k,
                    Candidate {
                        key,
                        global_slot: base + slot,
                    },
                );
            }
        }
        drop(registry);
        first += PAGES_PER_LOCK;
    }
    Ok(resolve(inner, heap, metric))
}

fn check_query(inner: &Inner, query: &[f32], k: usize) -> Result<()> {
    if query.len() != inner.dimension as usize {
        return Err(Error::InvalidArgument(format!(
            "query has {} components, the store holds {}",
            query.len(),
            inner.dimension
        )));
    }
    if let Some(at) = query.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidArgument(format!("query component {at} is not finite")));
    }
    if k == 0 {
        return Err(Error::InvalidArgument("k must be at least 1".into()));
    }
    Ok(())
}

fn has_pair(owner: &SlotOwner, key: &str, value: &str) -> bool {
    let bytes: &[u8] = match &owner.meta {
        // SAFETY: inline metadata of a committed entry, immutable while the search's epoch pin
        // holds, inside a mapping that outlives the store.
        Meta::Inline { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len as usize) },
        Meta::Owned(bytes) => bytes,
    };
    meta::Pairs::new(bytes).is_some_and(|mut pairs| pairs.any(|(k, v)| k == key && v == value))
}

fn push(heap: &mut BinaryHeap<Candidate>, k: usize, candidate: Candidate) {
    if heap.len() < k {
        heap.push(candidate);
    } else if heap.peek().is_some_and(|worst| candidate < *worst) {
        heap.pop();
        heap.push(candidate);
    }
}

/// The heap key (lower is better) of `vector` for `metric`.
fn score_key(metric: Metric, query: &[f32], query_norm: f32, vector: &[f32]) -> f32 {
    match metric {
        Metric::Dot => -dot(query, vector),
        Metric::L2 => l2_squared(query, vector),
        Metric::Cosine => {
            let (qv, vv) = dot_and_norm(query, vector);
            let denominator = query_norm * vv.sqrt();
            if denominator == 0.0 { 0.0 } else { -(qv / denominator) }
        }
    }
}

/// Turns heap keys back into scores, best first, with the owners' ids.
fn resolve(inner: &Inner, heap: BinaryHeap<Candidate>, metric: Metric) -> Vec<(String, f32)> {
    let registry = inner.slots.read();
    let mut found: Vec<Candidate> = heap.into_vec();
    found.sort();
    found
        .into_iter()
        .filter_map(|c| {
            let owner = registry.owners.get(c.global_slot)?.as_ref()?;
            let score = match metric {
                Metric::Dot | Metric::Cosine => -c.key,
                Metric::L2 => c.key.sqrt(),
            };
            Some((owner.id.to_string(), score))
        })
        .collect()
}

/// Dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked above); lengths are equal (asserted).
        return unsafe { x86::dot(a, b) };
    }
    portable::dot(a, b)
}

/// Dot product and the squared norm of `b`, in one pass.
pub fn dot_and_norm(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: as for `dot`.
        return unsafe { x86::dot_and_norm(a, b) };
    }
    portable::dot_and_norm(a, b)
}

/// Squared Euclidean distance.
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: as for `dot`.
        return unsafe { x86::l2_squared(a, b) };
    }
    portable::l2_squared(a, b)
}

mod portable {
    const LANES: usize = 8;

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    pub fn dot_and_norm(a: &[f32], b: &[f32]) -> (f32, f32) {
        (dot(a, b), dot(b, b))
    }

    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| (x - y) * (x - y))
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Sums the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let high = _mm256_extractf128_ps(v, 1);
        let low = _mm256_castps256_ps128(v);
        let sum = _mm_add_ps(high, low);
        let shuffled = _mm_movehdup_ps(sum);
        let sums = _mm_add_ps(sum, shuffled);
        let high64 = _mm_movehl_ps(shuffled, sums);
        _mm_cvtss_f32(_mm_add_ss(sums, high64))
    }

    /// # Safety
    /// The CPU supports AVX2 and FMA; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads): `i + 16 <= n` (or `i + 8 <= n`) keeps every unaligned load inside
        // both slices, whose lengths are equal.
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(
                unsafe { _mm256_loadu_ps(pa.add(i)) },
                unsafe { _mm256_loadu_ps(pb.add(i)) },
                s0,
            );
            s1 = _mm256_fmadd_ps(
                unsafe { _mm256_loadu_ps(pa.add(i + 8)) },
                unsafe { _mm256_loadu_ps(pb.add(i + 8)) },
                s1,
            );
            i += 16;
        }
        if i + 8 <= n {
            s0 = _mm256_fmadd_ps(
                unsafe { _mm256_loadu_ps(pa.add(i)) },
                unsafe { _mm256_loadu_ps(pb.add(i)) },
                s0,
            );
            i += 8;
        }
        let mut total = hsum(_mm256_add_ps(s0, s1));
        while i < n {
            total += a[i] * b[i];
            i += 1;
        }
        total
    }

    /// # Safety
    /// As for [`dot`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_and_norm(a: &[f32], b: &[f32]) -> (f32, f32) {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut d, mut q) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n` keeps both loads inside the equal-length slices.
            let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
            d = _mm256_fmadd_ps(x, y, d);
            q = _mm256_fmadd_ps(y, y, q);
            i += 8;
        }
        let (mut dot, mut norm) = (hsum(d), hsum(q));
        while i < n {
            dot += a[i] * b[i];
            norm += b[i] * b[i];
            i += 1;
        }
        (dot, norm)
    }

    /// # Safety
    /// As for [`dot`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n` keeps all four loads inside the equal-length slices.
            let (x0, y0, x1, y1) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                )
            };
            let (d0, d1) = (_mm256_sub_ps(x0, y0), _mm256_sub_ps(x1, y1));
            s0 = _mm256_fmadd_ps(d0, d0, s0);
            s1 = _mm256_fmadd_ps(d1, d1, s1);
            i += 16;
        }
        let mut total = hsum(_mm256_add_ps(s0, s1));
        while i < n {
            let d = a[i] - b[i];
            total += d * d;
            i += 1;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;
    use crate::{Options, Store, SyncMode};

    /// A store in the crash simulator (no syscalls: Miri runs it), 4 KiB pages; `dimension`
    /// 200 makes five slots a page, so a dozen vectors span three vector pages.
    fn sim_store(sim: &SimStorage, create: bool) -> Store {
        let options = Options {
            storage: Arc::new(sim.clone()),
            background_io: false,
            sync: SyncMode::Always,
            page_size_bytes: 4096,
            segment_size_bytes: 4096 * 8,
            checkpoint_interval_bytes: 0,
            ..Options::default()
        };
        if create {
            Store::create("/db", 200, options).unwrap()
        } else {
            Store::open("/db", options).unwrap()
        }
    }

    fn vector(n: usize) -> Vec<f32> {
        (0..200).map(|i| ((n * 7 + i) as f32 * 0.13).sin()).collect()
    }

    /// The best `k` of `live` by `metric`, by brute force.
    fn brute_force(live: &[(String, Vec<f32>)], query: &[f32], k: usize, metric: Metric) -> Vec<String> {
        let mut scored: Vec<(f32, &String)> = live
            .iter()
            .map(|(id, v)| (score_key(metric, query, dot(query, query).sqrt(), v), id))
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
        scored.into_iter().take(k).map(|(_, id)| id.clone()).collect()
    }

    #[test]
    fn exact_search_reads_vectors_and_inline_metadata_in_place_in_the_simulator() {
        let sim = SimStorage::new(5);
        let store = sim_store(&sim, true);
        let long = "x".repeat(3000);
        let mut live = Vec::new();
        for n in 0..12 {
            let id = format!("v{n}");
            let parity = if n % 2 == 0 { "even" } else { "odd" };
            let meta: Vec<(&str, &str)> = if n == 3 {
                vec![("p", parity), ("long", &long)]
            } else {
                vec![("p", parity)]
            };
            // Computed once: Miri makes `sin` differ in the last bits from call to call.
            let v = vector(n);
            store.insert(&id, &v, &meta).unwrap();
            live.push((id, v));
        }
        assert!(store.delete("v4").unwrap());
        live.retain(|(id, _)| id != "v4");
        check_store(&store, &live);
        store.close().unwrap();
        let store = sim_store(&sim, false);
        check_store(&store, &live);
        store.close().unwrap();
    }

    fn check_store(store: &Store, live: &[(String, Vec<f32>)]) {
        for (id, v) in live {
            let got = store.get(id).unwrap().expect("a stored vector");
            assert_eq!(&got[..], &v[..], "{id} reads back bit for bit");
            assert!(got.metadata().any(|(k, _)| k == "p"), "{id} keeps its metadata");
        }
        let query = vector(100);
        for metric in [Metric::Dot, Metric::L2, Metric::Cosine] {
            let found: Vec<String> = store
                .search(&query, 5, metric)
                .unwrap()
                .into_iter()
                .map(|r| r.0)
                .collect();
            assert_eq!(found, brute_force(live, &query, 5, metric), "{metric:?}");
        }
        let odd: Vec<(String, Vec<f32>)> = live
            .iter()
            .filter(|(id, _)| id[1..].parse::<usize>().unwrap() % 2 == 1)
            .cloned()
            .collect();
        let found: Vec<String> = store
            .search_filtered(&query, 20, Metric::L2, Some(("p", "odd")))
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(
            found,
            brute_force(&odd, &query, 20, Metric::L2),
            "filtered by inline metadata"
        );
    }

    #[test]
    fn simd_kernels_agree_with_the_portable_ones() {
        for n in [1usize, 7, 8, 15, 16, 17, 33, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let close = |x: f32, y: f32| (x - y).abs() <= 1e-4 * (1.0 + x.abs());
            assert!(close(dot(&a, &b), portable::dot(&a, &b)), "dot, n = {n}");
            assert!(close(l2_squared(&a, &b), portable::l2_squared(&a, &b)), "l2, n = {n}");
            let (d, q) = dot_and_norm(&a, &b);
            assert!(
                close(d, portable::dot(&a, &b)) && close(q, portable::dot(&b, &b)),
                "dot+norm, n = {n}"
            );
        }
    }
}
