//! The time-based policies toward drone (`core/backoff.rs`): token bucket, circuit breaker,
//! failure backoff, poll intervals, jitter and its seeded generator.

use status_sync::core::backoff::{failure_backoff, grow_interval, Circuit, Rng, TokenBucket};

/// After an idle period the bucket holds one second's burst, never the idle time's worth.
#[test]
fn token_bucket_burst_is_capped_after_idle() {
    let mut b = TokenBucket::new(5);
    assert_eq!((0..100).filter(|_| b.try_take(0)).count(), 5);
    let after_idle = (0..100).filter(|_| b.try_take(100_000)).count();
    assert_eq!(after_idle, 5, "burst of one second after 100 s idle");
    assert!(!b.try_take(100_000));
    // Sub-token refills add up: 200 ms at 5/s is one token.
    assert!(!b.try_take(100_100));
    assert!(b.try_take(100_200));
    assert!(!b.try_take(100_200));
}

/// A clock that goes back (callers pass `now_ms`) neither refills nor breaks the bucket.
#[test]
fn token_bucket_ignores_time_going_back() {
    let mut b = TokenBucket::new(1);
    assert!(b.try_take(10_000));
    assert!(!b.try_take(5_000));
    assert!(!b.try_take(10_500), "only half a token since 10 000");
    assert!(b.try_take(11_000));
}

/// A rate of 0 is read as 1 per second (config keeps it at 1 or more anyway).
#[test]
fn token_bucket_rate_is_at_least_one() {
    let mut b = TokenBucket::new(0);
    assert!(b.try_take(0));
    assert!(!b.try_take(999));
    assert!(b.try_take(1000));
}

#[test]
fn success_resets_the_failure_count() {
    let mut c = Circuit::new(3, 1000, 8000);
    for _ in 0..2 {
        assert!(!c.on_failure(0));
    }
    c.on_success();
    assert!(!c.on_failure(0));
    assert!(!c.on_failure(0), "the count started again");
    assert!(!c.is_open());
    assert!(c.on_failure(0));
    assert!(c.is_open());
}

/// A probe handed out and given back (the call was never made) is handed out again.
#[test]
fn released_probe_is_handed_out_again() {
    let mut c = Circuit::new(1, 1000, 8000);
    assert!(c.on_failure(0));
    assert!(!c.try_acquire(999));
    assert!(c.try_acquire(1000));
    assert!(!c.try_acquire(1000));
    c.release();
    assert!(c.try_acquire(1000), "given back");
    assert!(!c.try_acquire(1000));
    // A failed probe re-opens for twice as long, then hands out the next probe.
    assert!(c.on_failure(1000));
    assert!(!c.try_acquire(2999));
    assert!(c.try_acquire(3000));
    // Releasing when closed changes nothing.
    c.on_success();
    c.release();
    assert!(c.try_acquire(3000) && c.try_acquire(3000));
}

/// Failures while open (calls that were in flight when it opened) do not extend the period.
#[test]
fn failures_while_open_do_not_extend_it() {
    let mut c = Circuit::new(1, 1000, 8000);
    assert!(c.on_failure(0));
    assert!(!c.on_failure(500), "already open");
    assert!(c.try_acquire(1000));
}

/// The open period starts at `base_open_ms` (at least 1) and never exceeds the cap, which is
/// at least the base.
#[test]
fn circuit_open_period_bounds() {
    let mut c = Circuit::new(0, 0, 0);
    assert!(c.on_failure(0), "threshold 0 means 1");
    assert!(!c.try_acquire(0));
    assert!(c.try_acquire(1));
    let mut c = Circuit::new(1, 5000, 1000);
    assert!(c.on_failure(0));
    assert!(c.try_acquire(5000));
    assert!(c.on_failure(5000));
    assert!(!c.try_acquire(9999), "cap raised to the base");
    assert!(c.try_acquire(10_000));
}

#[test]
fn failure_backoff_doubles_from_the_base_to_the_cap() {
    let got: Vec<u64> = (0..=6).map(|f| failure_backoff(f, 500, 10_000)).collect();
    assert_eq!(got, vec![500, 500, 1000, 2000, 4000, 8000, 10_000]);
    assert_eq!(failure_backoff(u32::MAX, 500, u64::MAX), 500 << 20);
}

#[test]
fn grow_interval_starts_at_stale_after_within_the_cap() {
    assert_eq!(grow_interval(0, 1000, 500), 500);
    assert_eq!(grow_interval(999, 1000, 8000), 1000);
    assert_eq!(grow_interval(1000, 1000, 8000), 2000);
    assert_eq!(grow_interval(u64::MAX, 1000, u64::MAX), u64::MAX);
}

/// Jitter spreads over exactly ±20 % (both ends reachable over many draws) and is seeded.
#[test]
fn jitter_covers_its_range_and_replays_from_the_seed() {
    let mut a = Rng::new(11);
    let draws: Vec<u64> = (0..5000).map(|_| a.jitter(10)).collect();
    assert_eq!(draws.iter().min(), Some(&8));
    assert_eq!(draws.iter().max(), Some(&12));
    let mut b = Rng::new(11);
    assert!(draws.iter().all(|d| *d == b.jitter(10)));
    assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    assert_eq!(Rng::new(0).jitter(4), 4, "below 5 there is no spread");
}

/// The generator is splitmix64 (reference outputs for seed 0): the same seed replays the same
/// jitter on every platform and version.
#[test]
fn rng_is_splitmix64() {
    let mut r = Rng::new(0);
    assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
}

/// Jitter of a large base reaches both ends of ±20 % and spreads evenly enough.
#[test]
fn jitter_spreads_over_the_whole_range() {
    let mut r = Rng::new(3);
    let draws: Vec<u64> = (0..5000).map(|_| r.jitter(10_000)).collect();
    assert!(draws.iter().all(|d| (8_000..=12_000).contains(d)));
    assert!(*draws.iter().min().unwrap() < 8_100);
    assert!(*draws.iter().max().unwrap() > 11_900);
    let above = draws.iter().filter(|d| **d > 10_000).count();
    assert!((2_200..=2_800).contains(&above), "{above}");
}
