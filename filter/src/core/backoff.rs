//! Time-based policies: jitter, per-build backoff, the rate limit toward drone and the circuit
//! breaker. All take `now_ms` as a parameter; randomness comes from a seeded [`Rng`], so tests
//! are deterministic.

/// A small deterministic PRNG (splitmix64). Jitter only needs spread, not secrecy.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `base` spread uniformly over ±20%, so builds that went stale together do not stay in
    /// lock-step (the resync-storm problem Kubernetes informers solve the same way).
    pub fn jitter(&mut self, base: u64) -> u64 {
        let spread = base / 5;
        if spread == 0 {
            return base;
        }
        let offset = self.next_u64() % (2 * spread + 1);
        base - spread + offset
    }
}

/// Next interval between looks at a build drone reports unchanged: doubles from
/// `stale_after_ms` up to `max_ms`.
pub fn grow_interval(previous_ms: u64, stale_after_ms: u64, max_ms: u64) -> u64 {
    if previous_ms < stale_after_ms {
        return stale_after_ms.min(max_ms);
    }
    previous_ms.saturating_mul(2).min(max_ms)
}

/// Delay before retrying a build after `failures` consecutive failed calls: exponential from
/// `base_ms`, capped.
pub fn failure_backoff(failures: u32, base_ms: u64, max_ms: u64) -> u64 {
    let shift = failures.saturating_sub(1).min(20);
    base_ms.saturating_mul(1u64 << shift).min(max_ms)
}

/// Token bucket limiting calls toward drone (`max_drone_calls_per_sec`, burst of one second).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_sec: u64,
    /// Tokens in thousandths, so sub-token refills between close ticks are not lost.
    milli_tokens: u64,
    last_ms: Option<u64>,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u64) -> Self {
        let rate_per_sec = rate_per_sec.max(1);
        TokenBucket {
            rate_per_sec,
            milli_tokens: rate_per_sec * 1000,
            last_ms: None,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let cap = self.rate_per_sec * 1000;
        if let Some(last) = self.last_ms {
            let elapsed = now_ms.saturating_sub(last);
            self.milli_tokens = self
                .milli_tokens
                .saturating_add(elapsed.saturating_mul(self.rate_per_sec))
                .min(cap);
        }
        self.last_ms = Some(now_ms.max(self.last_ms.unwrap_or(0)));
    }

    /// Returns a token taken for a call that was not made after all.
    pub fn give_back(&mut self) {
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(1000)
            .min(self.rate_per_sec * 1000);
    }

    /// Takes one token if available.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CircuitState {
    Closed,
    /// No calls until `until_ms`; `open_ms` is the current open period.
    Open {
        until_ms: u64,
        open_ms: u64,
    },
    /// One probe call is allowed; its result closes or re-opens the circuit.
    HalfOpen {
        probe_inflight: bool,
        open_ms: u64,
    },
}

/// Circuit breaker toward drone: after `threshold` consecutive failures no calls are made for
/// an open period; then a single probe decides. Each failed probe doubles the period up to
/// `max_open_ms`. A drone outage therefore costs `threshold` calls plus one per open period,
/// not one per tracked build per tick.
#[derive(Clone, Debug)]
pub struct Circuit {
    threshold: u32,
    base_open_ms: u64,
    max_open_ms: u64,
    consecutive_failures: u32,
    state: CircuitState,
}

impl Circuit {
    pub fn new(threshold: u32, base_open_ms: u64, max_open_ms: u64) -> Self {
        Circuit {
            threshold: threshold.max(1),
            base_open_ms: base_open_ms.max(1),
            max_open_ms: max_open_ms.max(base_open_ms.max(1)),
            consecutive_failures: 0,
            state: CircuitState::Closed,
        }
    }

    /// Whether a call may be made now. In half-open state this hands out the single probe, so
    /// callers must follow a `true` with a call and report its result.
    pub fn try_acquire(&mut self, now_ms: u64) -> bool {
        match self.state {
            CircuitState::Closed => true,
            CircuitState::Open { until_ms, open_ms } => {
                if now_ms >= until_ms {
                    self.state = CircuitState::HalfOpen {
                        probe_inflight: true,
                        open_ms,
                    };
                    true
                } else {
                    false
                }
            }
            CircuitState::HalfOpen {
                probe_inflight,
                open_ms,
            } => {
                if probe_inflight {
                    false
                } else {
                    self.state = CircuitState::HalfOpen {
                        probe_inflight: true,
                        open_ms,
                    };
                    true
                }
            }
        }
    }

    /// A call that was allowed could not be made after all (e.g. the host refused to dispatch
    /// it for local reasons): give the probe back.
    pub fn release(&mut self) {
        if let CircuitState::HalfOpen { open_ms, .. } = self.state {
            self.state = CircuitState::HalfOpen {
                probe_inflight: false,
                open_ms,
            };
        }
    }

    pub fn on_success(&mut self) {
        self.consecutive_failures = 0;
        self.state = CircuitState::Closed;
    }

    /// Records a failure; returns true when this failure opened the circuit.
    pub fn on_failure(&mut self, now_ms: u64) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            CircuitState::Closed => {
                if self.consecutive_failures >= self.threshold {
                    self.state = CircuitState::Open {
                        until_ms: now_ms.saturating_add(self.base_open_ms),
                        open_ms: self.base_open_ms,
                    };
                    true
                } else {
                    false
                }
            }
            CircuitState::HalfOpen { open_ms, .. } => {
                let next = open_ms.saturating_mul(2).min(self.max_open_ms);
                self.state = CircuitState::Open {
                    until_ms: now_ms.saturating_add(next),
                    open_ms: next,
                };
                true
            }
            CircuitState::Open { .. } => false,
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, CircuitState::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent_and_spreads() {
        let mut rng = Rng::new(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let v = rng.jitter(10_000);
            assert!((8_000..=12_000).contains(&v), "{v}");
            seen.insert(v);
        }
        assert!(seen.len() > 100);
        assert_eq!(rng.jitter(3), 3);
    }

    #[test]
    fn intervals_grow_to_the_cap() {
        let mut i = 0;
        let mut seen = vec![];
        for _ in 0..8 {
            i = grow_interval(i, 1000, 10_000);
            seen.push(i);
        }
        assert_eq!(
            seen,
            vec![1000, 2000, 4000, 8000, 10_000, 10_000, 10_000, 10_000]
        );
        assert_eq!(failure_backoff(1, 500, 60_000), 500);
        assert_eq!(failure_backoff(3, 500, 60_000), 2000);
        assert_eq!(failure_backoff(100, 500, 60_000), 60_000);
    }

    #[test]
    fn token_bucket_limits_rate() {
        let mut b = TokenBucket::new(5);
        let taken = (0..100).filter(|_| b.try_take(0)).count();
        assert_eq!(taken, 5, "burst of one second");
        assert!(!b.try_take(100));
        assert!(b.try_take(200), "one token per 200 ms at 5/s");
        // Over 10 s at most 5/s.
        let mut n = 0;
        for t in (300..10_300).step_by(10) {
            if b.try_take(t) {
                n += 1;
            }
        }
        assert!((49..=51).contains(&n), "{n}");
    }

    #[test]
    fn circuit_opens_probes_and_closes() {
        let mut c = Circuit::new(3, 1000, 8000);
        for _ in 0..2 {
            assert!(c.try_acquire(0));
            assert!(!c.on_failure(0));
        }
        assert!(c.try_acquire(0));
        assert!(c.on_failure(0), "third failure opens");
        assert!(!c.try_acquire(500));
        assert!(c.try_acquire(1000), "probe after the open period");
        assert!(!c.try_acquire(1000), "only one probe");
        assert!(c.on_failure(1000));
        assert!(!c.try_acquire(2999), "open period doubled");
        assert!(c.try_acquire(3000));
        c.on_success();
        assert!(!c.is_open());
        assert!(c.try_acquire(3000) && c.try_acquire(3000));
    }

    #[test]
    fn circuit_open_period_is_capped() {
        let mut c = Circuit::new(1, 1000, 4000);
        let mut now = 0;
        c.on_failure(now);
        let mut probes = 0;
        while now < 100_000 {
            now += 100;
            if c.try_acquire(now) {
                probes += 1;
                c.on_failure(now);
            }
        }
        // 1 s, 2 s, 4 s, then every 4 s: about 25 probes in 100 s.
        assert!((23..=27).contains(&probes), "{probes}");
    }
}
