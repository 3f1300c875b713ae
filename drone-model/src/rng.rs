//! The one seeded PRNG of the test side (simulator, chaos, benchmarks): splitmix64.
//!
//! A seed reproduces a whole simulated run (which builds fail, which webhooks are lost), so the
//! generator is part of each test's input: it lives here once rather than in every driver.
//! The filter ships its own splitmix64 (`status_sync::core::backoff::Rng`, for jitter); the
//! test side does not borrow it, so that tuning the filter's jitter can never shift the
//! workload a seed stands for. Both are checked against the same reference outputs (here
//! and in `filter/tests/backoff.rs`).

/// SplitMix64 (Steele, Lea and Flood's `SplittableRandom` step): tiny, seedable, portable.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// One independent stream of a seed (the chaos suite keeps one per concern, so that the
    /// workload of a seed stays the same whatever the fault rates draw).
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (one draw, whatever `p`: a rate of 0 does not shift the
    /// stream).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `lo..=hi` (one draw); `lo` when the range is empty.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        let x = self.next_u64();
        if hi <= lo {
            return lo;
        }
        match (hi - lo).checked_add(1) {
            Some(span) => lo + x % span,
            None => x,
        }
    }

    /// Exponentially distributed with this mean (times between arrivals).
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// Log-uniform in [lo, hi): as many short durations as long ones.
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }

    /// Log-uniform in `lo..=hi`, whole numbers.
    pub fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let x = (lo as f64) * ((hi as f64) / (lo as f64)).powf(self.unit());
        (x as u64).clamp(lo, hi)
    }

    /// One of `items`, uniformly (`items` must not be empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference outputs of splitmix64 for seed 0; `filter/tests/backoff.rs`
    /// (`rng_is_splitmix64`) holds the filter's copy to the same three values.
    #[test]
    fn rng_is_splitmix64() {
        let mut r = Rng::new(0);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let reference = [
            0xe220_a839_7b1d_cdaf,
            0x6e78_9e6a_a1b9_65f4,
            0x06c4_5d18_8009_454f,
        ];
        assert_eq!(first, reference);
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            let x = a.range(3, 9);
            assert_eq!(x, b.range(3, 9));
            assert!((3..=9).contains(&x));
        }
        assert_eq!(a.range(5, 5), 5);
        assert_eq!(a.range(5, 1), 5);
        let _ = a.range(0, u64::MAX);
        for _ in 0..100 {
            let d = a.log_range(5, 500);
            assert!((5..=500).contains(&d));
            assert!(a.exp(10.0) >= 0.0);
            let u = a.log_uniform(2.0, 8.0);
            assert!((2.0..8.0).contains(&u), "{u}");
        }
        assert!(!a.chance(0.0) && a.chance(1.0));
    }

    /// Streams of one seed differ, and each replays.
    #[test]
    fn streams_are_distinct_and_replay() {
        let draws = |s| {
            let mut r = Rng::stream(42, s);
            (0..4).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draws(1), draws(1));
        assert_ne!(draws(1), draws(2));
    }
}
