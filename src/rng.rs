//! SplitMix64: the one deterministic, seeded generator of the project.
//!
//! The crash simulator draws its torn sectors and faults from it, the HNSW index its node
//! levels ([`mix64`]), `vellum demo` its embeddings, and the tests, benchmarks and fuzz bodies
//! their workloads: the same seed gives the same numbers everywhere, on every platform, and a
//! failure printed with its seed replays exactly.
//!
//! No part of the API: public only so that the command-line tool, the tests and the benchmarks
//! reach it, hidden from the documentation, and free to change. It is not a cryptographic
//! generator, and [`SplitMix64::below`] takes a plain remainder (a bias of at most `n / 2^64`).

/// The SplitMix64 increment, 2^64 divided by the golden ratio (odd): also a good multiplier to
/// spread consecutive integers into unrelated seeds.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function of the state after one step from `x`: a bijective mix of the
/// 64 bits, so `mix64` of distinct inputs are distinct and look independent. Equal to the first
/// [`SplitMix64::next_u64`] of a generator seeded with `x`.
pub const fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of a randomised test: `$var` if it holds a number, else `default`; printed, so
/// that a failure replays with `var=<seed>`.
pub fn seed_from_env(var: &str, default: u64) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default);
    eprintln!("seed = {seed} (replay with {var}={seed})");
    seed
}

/// A SplitMix64 generator (Steele, Lea and Flood, 2014): 64 bits of state, a period of 2^64.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed` (every seed is fine, 0 included).
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let x = self.state;
        self.state = x.wrapping_add(GOLDEN_GAMMA);
        mix64(x)
    }

    /// Uniform in `0..n` (up to the remainder's bias). Panics if `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SplitMix64::below(0): an empty range");
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Uniform in `[0, 1)`, with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, 1)`, with 24 random bits (every value exact in an `f32`).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// `len` random bytes (the low byte of one draw each).
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_zero_gives_the_published_splitmix64_sequence() {
        // The first outputs of the reference implementation (Vigna, splitmix64.c) from state 0.
        let mut rng = SplitMix64::new(0);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F],
            "the sequence every seeded test, benchmark and simulation replays from"
        );
    }

    #[test]
    fn mix64_is_the_first_draw_of_a_generator_seeded_with_its_input() {
        for x in [0, 1, GOLDEN_GAMMA, u64::MAX, 0x5EED] {
            assert_eq!(mix64(x), SplitMix64::new(x).next_u64(), "mix64({x:#x})");
        }
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut rng = SplitMix64::new(0x5EED);
        for n in [1, 2, 3, 100, u64::MAX] {
            for _ in 0..200 {
                assert!(rng.below(n) < n, "below({n})");
            }
        }
        for _ in 0..1000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x), "next_f64 gave {x}");
            let y = rng.next_f32();
            assert!((0.0..1.0).contains(&y), "next_f32 gave {y}");
        }
        assert!(!(0..1000).any(|_| rng.chance(0)), "chance(0) came true");
        assert!((0..1000).all(|_| rng.chance(100)), "chance(100) came false");
        assert_eq!(rng.bytes(37).len(), 37);
    }

    #[test]
    #[should_panic(expected = "empty range")]
    fn below_zero_is_a_broken_invariant() {
        SplitMix64::new(1).below(0);
    }
}
