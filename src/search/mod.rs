//! Similarity: the metrics, their scoring kernels and a top-k of candidates, independent of the
//! store (whose exact scan, over its committed vectors, is `store::scan`).
//!
//! The kernels use AVX2 and FMA when the CPU has them (detected at run time) and a portable
//! loop with several accumulators (which the compiler vectorises) otherwise. Both widen the
//! components to f64 and multiply and sum there, so no finite input overflows or underflows
//! (see [`Metric`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;



/// How similarity is measured.
///
/// Products and sums are computed in f64, whatever the magnitude of the components, and the
/// ranking uses those f64 values; the score returned is rounded to f32 once, at the end. Ties
/// go to the vector in the lower slot, so a search is deterministic.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Cosine similarity, higher is closer: always finite, in [-1, 1]. A zero vector (every
    /// component 0) has no direction: its similarity to any query, and that of a zero query to
    /// any vector, is 0.
    Cosine,
    /// Euclidean distance, lower is closer. A distance beyond f32::MAX (vectors with
    /// components near ±3.4e38) is returned as +inf and ranks after every finite one, and
    /// among such vectors by their exact distance.
    L2,
    /// Dot product, higher is closer. A product beyond the f32 range is returned as +inf or
    /// -inf; vectors still rank by the exact value, so the closest +inf comes first and -inf
    /// ones come last.
    Dot,
}

/// A candidate in the top-k heap, ordered so the heap's top is the worst kept.
pub(crate) struct Candidate {
    pub(crate) key: f64,
    pub(crate) global_slot: usize,
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

pub(crate) fn push(heap: &mut BinaryHeap<Candidate>, k: usize, candidate: Candidate) {
    if heap.len() < k {
        heap.push(candidate);
    } else if heap.peek().is_some_and(|worst| candidate < *worst) {
        heap.pop();
        heap.push(candidate);
    }
}

/// The heap key (lower is better) of `vector` for `metric`: never NaN, and never -0.
pub(crate) fn score_key(kernels: &Kernels, metric: Metric, query: &Query, vector: &[f32]) -> f64 {
    let key = match metric {
        Metric::Dot => -(kernels.dot)(&query.wide, vector),
        Metric::L2 => (kernels.l2_squared)(&query.wide, vector),
        Metric::Cosine => {
            let (qv, vv) = (kernels.dot_and_norm)(&query.wide, vector);
            -cosine(qv, query.norm_squared, vv)
        }
    };
    // Finite components give finite keys (see `Kernels`); should a NaN arise all the same, it
    // ranks last rather than first (`total_cmp` puts -NaN before every number). Adding 0 turns
    // -0 into +0, so a zero vector and an orthogonal one tie (and the lower slot wins).
    if key.is_nan() { f64::INFINITY } else { key + 0.0 }
}

/// The score reported for a heap key: rounded to f32 once (±inf beyond its range).
pub(crate) fn score_of(metric: Metric, key: f64) -> f32 {
    match metric {
        // 0 - key, not -key: a key of +0 is a score of +0, not -0.
        Metric::Dot | Metric::Cosine => (0.0 - key) as f32,
        Metric::L2 => key.sqrt() as f32,
    }
}

/// A query prepared for a scan: its components widened to f64 once, and its squared norm.
pub(crate) struct Query {
    wide: Vec<f64>,
    norm_squared: f64,
}

impl Query {
    pub(crate) fn new(kernels: &Kernels, query: &[f32]) -> Query {
        let wide: Vec<f64> = query.iter().map(|&x| f64::from(x)).collect();
        let norm_squared = (kernels.dot)(&wide, query);
        Query { wide, norm_squared }
    }
}

/// The scoring kernels of one implementation (AVX2/FMA or portable), chosen once per search.
///
/// Every kernel multiplies and sums in f64: a product of two finite f32s, and a sum of up to
/// 2^20 of them, can neither overflow nor underflow to zero in f64 (|x·y| < 2^256, and the
/// smallest nonzero product is 2^-298), so scores are finite and accurate for every finite
/// input, where f32 sums gave NaN for components near f32::MAX and 0 below about 1e-19.
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    /// Σ q·v.
    dot: fn(&[f64], &[f32]) -> f64,
    /// (Σ q·v, Σ v·v) in one pass.
    dot_and_norm: fn(&[f64], &[f32]) -> (f64, f64),
    /// Σ (q − v)².
    l2_squared: fn(&[f64], &[f32]) -> f64,
}

impl Kernels {
    /// The fastest kernels this CPU runs.
    pub(crate) fn detect() -> Kernels {
        #[cfg(target_arch = "x86_64")]
        if let Some(kernels) = Kernels::avx2() {
            return kernels;
        }
        Kernels::portable()
    }

    /// The portable kernels (several accumulators, which the compiler vectorises).
    pub(crate) fn portable() -> Kernels {
        Kernels {
            dot: portable::dot,
            dot_and_norm: portable::dot_and_norm,
            l2_squared: portable::l2_squared,
        }
    }

    /// The AVX2/FMA kernels, if the CPU has both.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn avx2() -> Option<Kernels> {
        let supported = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        supported.then_some(Kernels {
            dot: x86::checked_dot,
            dot_and_norm: x86::checked_dot_and_norm,
            l2_squared: x86::checked_l2_squared,
        })
    }
}

/// The cosine of the angle between q and v from Σ q·v, Σ q² and Σ v², in [-1, 1]; 0 when
/// either vector is zero (it has no direction).
fn cosine(qv: f64, qq: f64, vv: f64) -> f64 {
    if qq == 0.0 || vv == 0.0 {
        return 0.0;
    }
    // Each root lies in [2^-149, 2^137] (at most 2^18 components below 2^128): their product
    // neither overflows nor underflows.
    (qv / (qq.sqrt() * vv.sqrt())).clamp(-1.0, 1.0)
}

mod portable {
    const LANES: usize = 8;

    pub fn dot(q: &[f64], v: &[f32]) -> f64 {
        assert_eq!(q.len(), v.len());
        let mut acc = [0f64; LANES];
        let (cq, cv) = (q.chunks_exact(LANES), v.chunks_exact(LANES));
        let tail: f64 = cq
            .remainder()
            .iter()
            .zip(cv.remainder())
            .map(|(x, &y)| x * f64::from(y))
            .sum();
        for (x, y) in cq.zip(cv) {
            for i in 0..LANES {
                acc[i] += x[i] * f64::from(y[i]);
            }
        }
        acc.iter().sum::<f64>() + tail
    }

    pub fn dot_and_norm(q: &[f64], v: &[f32]) -> (f64, f64) {
        assert_eq!(q.len(), v.len());
        let (mut d, mut n) = ([0f64; LANES], [0f64; LANES]);
        let (cq, cv) = (q.chunks_exact(LANES), v.chunks_exact(LANES));
        let (mut tail_d, mut tail_n) = (0f64, 0f64);
        for (x, &y) in cq.remainder().iter().zip(cv.remainder()) {
            let y = f64::from(y);
            tail_d += x * y;
            tail_n += y * y;
        }
        for (x, y) in cq.zip(cv) {
            for i in 0..LANES {
                let y = f64::from(y[i]);
                d[i] += x[i] * y;
                n[i] += y * y;
            }
        }
        (d.iter().sum::<f64>() + tail_d, n.iter().sum::<f64>() + tail_n)
    }

    pub fn l2_squared(q: &[f64], v: &[f32]) -> f64 {
        assert_eq!(q.len(), v.len());
        let mut acc = [0f64; LANES];
        let (cq, cv) = (q.chunks_exact(LANES), v.chunks_exact(LANES));
        let tail: f64 = cq
            .remainder()
            .iter()
            .zip(cv.remainder())
            .map(|(x, &y)| (x - f64::from(y)) * (x - f64::from(y)))
            .sum();
        for (x, y) in cq.zip(cv) {
            for i in 0..LANES {
                let d = x[i] - f64::from(y[i]);
                acc[i] += d * d;
            }
        }
        acc.iter().sum::<f64>() + tail
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    // The safe entry points stored in `Kernels`: they are private to this module's parent and
    // reachable only through `Kernels::avx2`, which returns them only after detecting AVX2 and
    // FMA. Each asserts the equal lengths the kernels rely on.

    pub fn checked_dot(q: &[f64], v: &[f32]) -> f64 {
        assert_eq!(q.len(), v.len());
        // SAFETY: the CPU has AVX2 and FMA (see above); the lengths are equal (asserted).
        unsafe { dot(q, v) }
    }

    pub fn checked_dot_and_norm(q: &[f64], v: &[f32]) -> (f64, f64) {
        assert_eq!(q.len(), v.len());
        // SAFETY: as for `checked_dot`.
        unsafe { dot_and_norm(q, v) }
    }

    pub fn checked_l2_squared(q: &[f64], v: &[f32]) -> f64 {
        assert_eq!(q.len(), v.len());
        // SAFETY: as for `checked_dot`.
        unsafe { l2_squared(q, v) }
    }

    /// Sums the 4 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256d) -> f64 {
        let sum = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
        _mm_cvtsd_f64(_mm_add_sd(sum, _mm_unpackhi_pd(sum, sum)))
    }

    /// Four components of `v` from `at`, widened to f64, and the matching four of `q`.
    ///
    /// # Safety
    /// The CPU supports AVX2; `at + 4 <= q.len() == v.len()`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load4(q: &[f64], v: &[f32], at: usize) -> (__m256d, __m256d) {
        // SAFETY: `at + 4` is within both slices (the caller's contract): 4 f64s and 4 f32s.
        unsafe {
            (
                _mm256_loadu_pd(q.as_ptr().add(at)),
                _mm256_cvtps_pd(_mm_loadu_ps(v.as_ptr().add(at))),
            )
        }
    }

    /// # Safety
    /// The CPU supports AVX2 and FMA; `q.len() == v.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(q: &[f64], v: &[f32]) -> f64 {
        let n = v.len();
        let mut s = [_mm256_setzero_pd(); 4];
        let mut i = 0;
        while i + 16 <= n {
            for (lane, s) in s.iter_mut().enumerate() {
                // SAFETY: `i + 16 <= n`, so `i + 4 * lane + 4 <= n`.
                let (x, y) = unsafe { load4(q, v, i + 4 * lane) };
                *s = _mm256_fmadd_pd(x, y, *s);
            }
            i += 16;
        }
        while i + 4 <= n {
            // SAFETY: `i + 4 <= n`.
            let (x, y) = unsafe { load4(q, v, i) };
            s[0] = _mm256_fmadd_pd(x, y, s[0]);
            i += 4;
        }
        let mut total = hsum(_mm256_add_pd(_mm256_add_pd(s[0], s[1]), _mm256_add_pd(s[2], s[3])));
        while i < n {
            total += q[i] * f64::from(v[i]);
            i += 1;
        }
        total
    }

    /// # Safety
    /// As for [`dot`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_and_norm(q: &[f64], v: &[f32]) -> (f64, f64) {
        let n = v.len();
        let (mut d, mut m) = ([_mm256_setzero_pd(); 4], [_mm256_setzero_pd(); 4]);
        let mut i = 0;
        while i + 16 <= n {
            for lane in 0..4 {
                // SAFETY: `i + 16 <= n`, so `i + 4 * lane + 4 <= n`.
                let (x, y) = unsafe { load4(q, v, i + 4 * lane) };
                d[lane] = _mm256_fmadd_pd(x, y, d[lane]);
                m[lane] = _mm256_fmadd_pd(y, y, m[lane]);
            }
            i += 16;
        }
        while i + 4 <= n {
            // SAFETY: `i + 4 <= n`.
            let (x, y) = unsafe { load4(q, v, i) };
            d[0] = _mm256_fmadd_pd(x, y, d[0]);
            m[0] = _mm256_fmadd_pd(y, y, m[0]);
            i += 4;
        }
        let fold = |s: [__m256d; 4]| hsum(_mm256_add_pd(_mm256_add_pd(s[0], s[1]), _mm256_add_pd(s[2], s[3])));
        let (mut dot, mut norm) = (fold(d), fold(m));
        while i < n {
            let y = f64::from(v[i]);
            dot += q[i] * y;
            norm += y * y;
            i += 1;
        }
        (dot, norm)
    }

    /// # Safety
    /// As for [`dot`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_squared(q: &[f64], v: &[f32]) -> f64 {
        let n = v.len();
        let mut s = [_mm256_setzero_pd(); 4];
        let mut i = 0;
        while i + 16 <= n {
            for (lane, s) in s.iter_mut().enumerate() {
                // SAFETY: `i + 16 <= n`, so `i + 4 * lane + 4 <= n`.
                let (x, y) = unsafe { load4(q, v, i + 4 * lane) };
                let d = _mm256_sub_pd(x, y);
                *s = _mm256_fmadd_pd(d, d, *s);
            }
            i += 16;
        }
        while i + 4 <= n {
            // SAFETY: `i + 4 <= n`.
            let (x, y) = unsafe { load4(q, v, i) };
            let d = _mm256_sub_pd(x, y);
            s[0] = _mm256_fmadd_pd(d, d, s[0]);
            i += 4;
        }
        let mut total = hsum(_mm256_add_pd(_mm256_add_pd(s[0], s[1]), _mm256_add_pd(s[2], s[3])));
        while i < n {
            let d = q[i] - f64::from(v[i]);
            total += d * d;
            i += 1;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::rng::SplitMix64 as Rng;
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
        let kernels = Kernels::detect();
        let prepared = Query::new(&kernels, query);
        let mut scored: Vec<(f64, &String)> = live
            .iter()
            .map(|(id, v)| (score_key(&kernels, metric, &prepared, v), id))
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

    /// Every kernel set this CPU runs: the portable one always, AVX2/FMA when present (Miri
    /// reports no AVX2 unless `-C target-feature=+avx2,+fma`: `fuzz/miri.sh` runs both).
    fn kernel_sets() -> Vec<(&'static str, Kernels)> {
        let mut sets = vec![("portable", Kernels::portable())];
        #[cfg(target_arch = "x86_64")]
        match Kernels::avx2() {
            Some(kernels) => sets.push(("avx2", kernels)),
            None => eprintln!("this CPU has no AVX2/FMA: only the portable kernels are checked"),
        }
        sets
    }

    /// A vector whose components have magnitudes around 10^e, e uniform in [-38, 38.5]
    /// (1e-38 to 3e38), either all of one scale or each of its own; sometimes zero, and
    /// sometimes with zero and subnormal components mixed in.
    fn random_vector(rng: &mut Rng, dimension: usize) -> Vec<f32> {
        let shape = rng.next_u64() % 8;
        if shape == 0 {
            return vec![0.0; dimension];
        }
        let exponent = -38.0 + 76.5 * rng.next_f64();
        (0..dimension)
            .map(|_| {
                let e = if shape == 1 {
                    -38.0 + 76.5 * rng.next_f64()
                } else {
                    exponent
                };
                let magnitude = match (shape, rng.next_u64() % 16) {
                    (2, 0) => 0.0,
                    (2, 1) => 1e-42 * rng.next_f64(),
                    _ => 10f64.powf(e) * (0.5 + rng.next_f64() / 2.0),
                };
                let sign = if rng.next_u64().is_multiple_of(2) { 1.0 } else { -1.0 };
                (sign * magnitude).clamp(-f64::from(f32::MAX), f64::from(f32::MAX)) as f32
            })
            .collect()
    }

    /// The exact-enough f64 reference of one metric: (key, scale), the key in the heap's
    /// orientation (lower is better) and the scale of its rounding error (Σ |terms|).
    fn reference(metric: Metric, q: &[f32], v: &[f32]) -> (f64, f64) {
        let pairs = || q.iter().zip(v).map(|(&a, &b)| (f64::from(a), f64::from(b)));
        let dot: f64 = pairs().map(|(a, b)| a * b).sum();
        let dot_scale: f64 = pairs().map(|(a, b)| (a * b).abs()).sum();
        match metric {
            Metric::Dot => (-dot, dot_scale),
            Metric::L2 => {
                let l2: f64 = pairs().map(|(a, b)| (a - b) * (a - b)).sum();
                (l2, l2)
            }
            Metric::Cosine => {
                let qq: f64 = pairs().map(|(a, _)| a * a).sum();
                let vv: f64 = pairs().map(|(_, b)| b * b).sum();
                if qq == 0.0 || vv == 0.0 {
                    (0.0, 0.0)
                } else {
                    let norms = qq.sqrt() * vv.sqrt();
                    (-dot / norms, dot_scale / norms)
                }
            }
        }
    }

    /// True if the f32 score reported for `reference_key` is it, rounded (±inf beyond range).
    fn score_matches(metric: Metric, score: f32, reference_key: f64, scale: f64) -> bool {
        let exact = match metric {
            Metric::Dot | Metric::Cosine => -reference_key,
            Metric::L2 => reference_key.sqrt(),
        };
        let max = f64::from(f32::MAX);
        if score.is_infinite() {
            return score.is_sign_positive() == (exact > 0.0) && exact.abs() >= max * (1.0 - 1e-9);
        }
        let scale = if metric == Metric::L2 { exact } else { scale };
        // The f64 sums' error, the rounding to f32 (relative, and absolute below its normals).
        let tolerance = 1e-12 * scale + exact.abs() * f64::from(f32::EPSILON) + 1e-45;
        (f64::from(score) - exact).abs() <= tolerance && exact.abs() < max * (1.0 + 1e-9)
    }

    /// Property: for random vectors of components from 1e-38 to 3e38 (and zeros, and
    /// subnormals), every kernel's keys are never NaN, agree with an f64 reference, rank in the
    /// reference's order, and report scores that are the reference rounded to f32; cosine
    /// scores are finite and in [-1, 1]. `VELLUM_SEARCH_SEED=<n>` replays a failure.
    #[test]
    fn scores_of_any_finite_magnitude_match_an_f64_reference_in_every_kernel() {
        let seed = crate::rng::seed_from_env("VELLUM_SEARCH_SEED", 0x5EA2_C4ED);
        let mut rng = Rng::new(seed);
        let rounds = if cfg!(miri) { 3 } else { 150 };
        for round in 0..rounds {
            let dimension = match rng.next_u64() % 4 {
                0 => 384,
                1 => 385,
                _ => 1 + (rng.next_u64() % 40) as usize,
            };
            let query = random_vector(&mut rng, dimension);
            let vectors: Vec<Vec<f32>> = (0..24).map(|_| random_vector(&mut rng, dimension)).collect();
            for (name, kernels) in kernel_sets() {
                let prepared = Query::new(&kernels, &query);
                for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
                    let context = format!("{name} {metric:?}, round {round}, seed {seed}, dimension {dimension}");
                    check_metric(&kernels, metric, &prepared, &query, &vectors, &context);
                }
            }
        }
    }

    fn check_metric(
        kernels: &Kernels,
        metric: Metric,
        prepared: &Query,
        query: &[f32],
        vectors: &[Vec<f32>],
        context: &str,
    ) {
        let mut ranked: Vec<(f64, usize)> = Vec::new();
        for (n, v) in vectors.iter().enumerate() {
            let key = score_key(kernels, metric, prepared, v);
            let (exact, scale) = reference(metric, query, v);
            assert!(!key.is_nan(), "{context}: vector {n} has a NaN key");
            assert!(
                (key - exact).abs() <= 1e-12 * scale.max(exact.abs()),
                "{context}: vector {n}: key {key:e}, reference {exact:e}"
            );
            let score = score_of(metric, key);
            assert!(
                score_matches(metric, score, exact, scale),
                "{context}: vector {n}: score {score:e}, reference key {exact:e}"
            );
            if metric == Metric::Cosine {
                assert!((-1.0..=1.0).contains(&score), "{context}: cosine {score}");
            }
            ranked.push((key, n));
        }
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for pair in ranked.windows(2) {
            let (a, scale_a) = reference(metric, query, &vectors[pair[0].1]);
            let (b, scale_b) = reference(metric, query, &vectors[pair[1].1]);
            let slack = 2e-12 * (scale_a.max(a.abs()) + scale_b.max(b.abs()));
            assert!(
                a <= b + slack,
                "{context}: vector {} ({a:e}) ranks before {} ({b:e})",
                pair[0].1,
                pair[1].1
            );
        }
    }

    #[test]
    fn kernels_agree_on_the_tails_of_every_length() {
        let sets = kernel_sets();
        for n in [1usize, 3, 4, 5, 7, 8, 15, 16, 17, 20, 33, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let wide: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
            for (name, kernels) in &sets {
                for metric in [Metric::Dot, Metric::L2] {
                    let got = match metric {
                        Metric::Dot => (kernels.dot)(&wide, &b),
                        _ => (kernels.l2_squared)(&wide, &b),
                    };
                    let (exact, scale) = reference(metric, &a, &b);
                    let exact = if metric == Metric::Dot { -exact } else { exact };
                    assert!(
                        (got - exact).abs() <= 1e-13 * scale.max(1.0),
                        "{name} {metric:?}, n = {n}"
                    );
                }
                let (d, m) = (kernels.dot_and_norm)(&wide, &b);
                let norm: f64 = b.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
                assert!(
                    (d - (kernels.dot)(&wide, &b)).abs() <= 1e-13 && (m - norm).abs() <= 1e-13 * norm,
                    "{name} dot and norm, n = {n}"
                );
            }
        }
    }
}
