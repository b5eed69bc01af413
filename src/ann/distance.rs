//! The f32 distances the graph is traversed with, and the exact f64 scores results are ranked by.
//!
//! Traversal compares millions of vector pairs per second, and the exact kernels of
//! [`crate::search`] widen every component to f64 (half the lanes per instruction, and a query
//! widened per pair, which a neighbour-selection step would have to do for every candidate).
//! The graph only needs to tell near from far, so it uses f32 kernels here (AVX2/FMA when the
//! CPU has them, a portable loop otherwise); the candidates a search returns are then rescored
//! with the exact kernels, so the scores and the order of results are exactly those of
//! `Store::search` for the same vectors. `benches/ann.rs` measures the difference.
//!
//! Every distance is "lower is closer" and never NaN: squared L2, the negated dot product, and
//! `1 - cosine` (a zero vector is at distance 1 from everything, as its cosine is 0). f32 sums
//! of components near ±3.4e38 overflow to ±inf; such a vector is still found, just not ranked
//! well during traversal, and the exact rescoring ranks it correctly among the candidates.

use crate::Metric;
use crate::search::{Kernels, Query, score_key, score_of};

/// The f32 kernels of one implementation (AVX2/FMA or portable).
#[derive(Clone, Copy)]
struct F32Kernels {
    /// Σ a·b.
    dot: fn(&[f32], &[f32]) -> f32,
    /// (Σ a·b, Σ b·b) in one pass.
    dot_and_norm: fn(&[f32], &[f32]) -> (f32, f32),
    /// Σ (a − b)².
    l2_squared: fn(&[f32], &[f32]) -> f32,
}

impl F32Kernels {
    fn detect() -> F32Kernels {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return F32Kernels {
                dot: x86::checked_dot,
                dot_and_norm: x86::checked_dot_and_norm,
                l2_squared: x86::checked_l2_squared,
            };
        }
        F32Kernels::portable()
    }

    fn portable() -> F32Kernels {
        F32Kernels {
            dot: portable::dot,
            dot_and_norm: portable::dot_and_norm,
            l2_squared: portable::l2_squared,
        }
    }
}

/// A vector prepared as the fixed side of many comparisons (a query, or a node whose
/// neighbours are being chosen): for cosine, its norm computed once.
#[derive(Clone, Copy)]
pub struct Prepared<'a> {
    vector: &'a [f32],
    norm: f32,
}

/// The distance function of one metric, with the kernels chosen once.
#[derive(Clone, Copy)]
pub struct Space {
    metric: Metric,
    fast: F32Kernels,
    exact: Kernels,
}

impl Space {
    /// The fastest kernels this CPU runs, for `metric`.
    pub fn new(metric: Metric) -> Space {
        Space {
            metric,
            fast: F32Kernels::detect(),
            exact: Kernels::detect(),
        }
    }

    /// The portable kernels only (to check that both implementations agree).
    #[cfg(test)]
    fn portable(metric: Metric) -> Space {
        Space {
            metric,
            fast: F32Kernels::portable(),
            exact: Kernels::portable(),
        }
    }

    pub fn prepare<'a>(&self, vector: &'a [f32]) -> Prepared<'a> {
        let norm = match self.metric {
            Metric::Cosine => (self.fast.dot)(vector, vector).sqrt(),
            Metric::L2 | Metric::Dot => 0.0,
        };
        Prepared { vector, norm }
    }

    /// The traversal distance from `from` to `to`: lower is closer, never NaN.
    #[inline]
    pub fn distance(&self, from: &Prepared<'_>, to: &[f32]) -> f32 {
        let d = match self.metric {
            Metric::L2 => (self.fast.l2_squared)(from.vector, to),
            Metric::Dot => -(self.fast.dot)(from.vector, to),
            Metric::Cosine => {
                let (dot, norm_squared) = (self.fast.dot_and_norm)(from.vector, to);
                let norms = from.norm * norm_squared.sqrt();
                if norms == 0.0 {
                    1.0
                } else {
                    1.0 - (dot / norms).clamp(-1.0, 1.0)
                }
            }
        };
        if d.is_nan() { f32::INFINITY } else { d }
    }

    /// A query prepared for exact scoring (widened to f64 once).
    pub fn exact_query(&self, query: &[f32]) -> ExactQuery {
        ExactQuery(Query::new(&self.exact, query))
    }

    /// The exact ranking key of `vector` (lower is better; the key `Store::search` ranks by).
    pub fn exact_key(&self, query: &ExactQuery, vector: &[f32]) -> f64 {
        score_key(&self.exact, self.metric, &query.0, vector)
    }

    /// The score reported for an exact key: cosine similarity, L2 distance or dot product.
    pub fn score(&self, key: f64) -> f32 {
        score_of(self.metric, key)
    }
}

/// A query widened for the exact kernels.
pub struct ExactQuery(Query);

mod portable {
    const LANES: usize = 8;

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
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
        assert_eq!(a.len(), b.len());
        let (mut d, mut n) = ([0f32; LANES], [0f32; LANES]);
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (mut tail_d, mut tail_n) = (0f32, 0f32);
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            tail_d += x * y;
            tail_n += y * y;
        }
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                d[i] += x[i] * y[i];
                n[i] += y[i] * y[i];
            }
        }
        (d.iter().sum::<f32>() + tail_d, n.iter().sum::<f32>() + tail_n)
    }

    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
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

    // The safe entry points stored in `F32Kernels`, reachable only through
    // `F32Kernels::detect`, which returns them only after detecting AVX2 and FMA. Each asserts
    // the equal lengths the kernels rely on.

    pub fn checked_dot(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: the CPU has AVX2 and FMA (see above); the lengths are equal (asserted).
        unsafe { dot(a, b) }
    }

    pub fn checked_dot_and_norm(a: &[f32], b: &[f32]) -> (f32, f32) {
        assert_eq!(a.len(), b.len());
        // SAFETY: as for `checked_dot`.
        unsafe { dot_and_norm(a, b) }
    }

    pub fn checked_l2_squared(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: as for `checked_dot`.
        unsafe { l2_squared(a, b) }
    }

    /// Sums the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
        _mm_cvtss_f32(_mm_add_ss(sum, _mm_shuffle_ps(sum, sum, 1)))
    }

    /// Eight components of `a` and of `b` from `at`.
    ///
    /// # Safety
    /// The CPU supports AVX2; `at + 8 <= a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load8(a: &[f32], b: &[f32], at: usize) -> (__m256, __m256) {
        // SAFETY: `at + 8` is within both slices (the caller's contract).
        unsafe { (_mm256_loadu_ps(a.as_ptr().add(at)), _mm256_loadu_ps(b.as_ptr().add(at))) }
    }

    /// Sums the lanes of two accumulators.
    #[target_feature(enable = "avx2,fma")]
    fn fold(s: [__m256; 2]) -> f32 {
        hsum(_mm256_add_ps(s[0], s[1]))
    }

    /// # Safety
    /// The CPU supports AVX2 and FMA; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let mut s = [_mm256_setzero_ps(); 2];
        let mut i = 0;
        while i + 16 <= n {
            for (lane, s) in s.iter_mut().enumerate() {
                // SAFETY: `i + 16 <= n`, so `i + 8 * lane + 8 <= n`.
                let (x, y) = unsafe { load8(a, b, i + 8 * lane) };
                *s = _mm256_fmadd_ps(x, y, *s);
            }
            i += 16;
        }
        if i + 8 <= n {
            // SAFETY: `i + 8 <= n`.
            let (x, y) = unsafe { load8(a, b, i) };
            s[0] = _mm256_fmadd_ps(x, y, s[0]);
            i += 8;
        }
        let mut total = fold(s);
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
        let (mut d, mut m) = ([_mm256_setzero_ps(); 2], [_mm256_setzero_ps(); 2]);
        let mut i = 0;
        while i + 16 <= n {
            for lane in 0..2 {
                // SAFETY: `i + 16 <= n`, so `i + 8 * lane + 8 <= n`.
                let (x, y) = unsafe { load8(a, b, i + 8 * lane) };
                d[lane] = _mm256_fmadd_ps(x, y, d[lane]);
                m[lane] = _mm256_fmadd_ps(y, y, m[lane]);
            }
            i += 16;
        }
        if i + 8 <= n {
            // SAFETY: `i + 8 <= n`.
            let (x, y) = unsafe { load8(a, b, i) };
            d[0] = _mm256_fmadd_ps(x, y, d[0]);
            m[0] = _mm256_fmadd_ps(y, y, m[0]);
            i += 8;
        }
        let (mut dot, mut norm) = (fold(d), fold(m));
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
        let mut s = [_mm256_setzero_ps(); 2];
        let mut i = 0;
        while i + 16 <= n {
            for (lane, s) in s.iter_mut().enumerate() {
                // SAFETY: `i + 16 <= n`, so `i + 8 * lane + 8 <= n`.
                let (x, y) = unsafe { load8(a, b, i + 8 * lane) };
                let d = _mm256_sub_ps(x, y);
                *s = _mm256_fmadd_ps(d, d, *s);
            }
            i += 16;
        }
        if i + 8 <= n {
            // SAFETY: `i + 8 <= n`.
            let (x, y) = unsafe { load8(a, b, i) };
            let d = _mm256_sub_ps(x, y);
            s[0] = _mm256_fmadd_ps(d, d, s[0]);
            i += 8;
        }
        let mut total = fold(s);
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

    fn pair(n: usize) -> (Vec<f32>, Vec<f32>) {
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        (a, b)
    }

    #[test]
    fn fast_distances_agree_with_the_exact_keys_for_every_length_and_metric() {
        for n in [1usize, 3, 7, 8, 9, 15, 16, 17, 31, 33, 128, 384, 385] {
            let (a, b) = pair(n);
            for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
                for space in [Space::new(metric), Space::portable(metric)] {
                    let fast = space.distance(&space.prepare(&a), &b);
                    let key = space.exact_key(&space.exact_query(&a), &b);
                    // Cosine's key is -cos; the traversal distance is 1 - cos.
                    let expected = if metric == Metric::Cosine { 1.0 + key } else { key };
                    let tolerance = 1e-4 * (1.0 + expected.abs());
                    assert!(
                        (f64::from(fast) - expected).abs() <= tolerance,
                        "{metric:?}, n = {n}: fast {fast}, exact {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_zero_vector_is_at_cosine_distance_one_and_no_distance_is_nan() {
        let space = Space::new(Metric::Cosine);
        let zero = [0.0f32; 20];
        let (a, _) = pair(20);
        assert_eq!(space.distance(&space.prepare(&zero), &a), 1.0, "zero query");
        assert_eq!(space.distance(&space.prepare(&a), &zero), 1.0, "zero vector");
        let huge = [f32::MAX; 20];
        let negated: Vec<f32> = huge.iter().map(|x| -x).collect();
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            let space = Space::new(metric);
            let d = space.distance(&space.prepare(&huge), &negated);
            assert!(!d.is_nan(), "{metric:?} of overflowing vectors is {d}, not NaN");
        }
    }
}
