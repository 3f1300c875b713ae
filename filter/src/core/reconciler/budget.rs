//! What every drone call costs: the circuit breaker and the rate limit, in one place.
//!
//! A call toward drone needs the circuit's consent (in half-open state: the single probe), a
//! token of the main bucket (`max_drone_calls_per_sec`) and, for a lookup only unverified
//! webhooks asked for, a token of the hint bucket too. Taking them by hand in order, and
//! handing back what was taken when a later step refuses, is easy to get wrong: a half-open
//! probe never handed back stops every drone call for good. [`Budget::acquire`] does the whole
//! sequence and gives back what it took when it refuses; what it grants is a [`Permit`], which
//! must be spent on a call ([`Permit::spend`], by the function that registers the call).
//!
//! Rule: decide first, then take a permit. The reconciler decides that a drone call is needed
//! (and builds its request) before it asks for a permit, so a permit is never handed back:
//! there is no API for it. Work that takes no call (giving up a build open longer than
//! `max_build_age_ms`, waiting for a name, forgetting a refuted hint, dropping a quiet
//! repository from discovery) takes no permit, no token and not the half-open probe. Debug
//! builds (every native test) check that no permit is dropped unspent.

use crate::core::backoff::{Circuit, TokenBucket};
use crate::core::ledger::Lane;

/// The right to make one drone call now, spent by the call's registration (never handed
/// back: take one only once the call is decided).
#[must_use = "a permit is spent on a call (Permit::spend): take one only once the call is decided"]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Permit {
    _private: (),
}

impl Permit {
    /// The call was registered: the circuit's consent (a half-open probe) ends with its answer.
    pub(super) fn spend(self) {
        std::mem::forget(self);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Only `spend` ends a permit (it forgets it).
        debug_assert!(
            false,
            "a drone call permit was dropped, not spent on a call"
        );
    }
}

/// The circuit toward drone and the token buckets of the two lanes.
#[derive(Debug)]
pub(crate) struct Budget {
    circuit: Circuit,
    /// Rate limit of every drone call (`max_drone_calls_per_sec`).
    bucket: TokenBucket,
    /// Second limit of lookups only unverified webhooks asked for: half the rate (`None`, so
    /// none at all, when the rate is 1/s).
    hint_bucket: Option<TokenBucket>,
}

impl Budget {
    /// `rate_per_sec` calls a second (`max_drone_calls_per_sec`), within `circuit`.
    pub(crate) fn new(rate_per_sec: u64, circuit: Circuit) -> Self {
        // Lookups hints asked for take a token of both buckets, so they stay within
        // `max_drone_calls_per_sec` and at most half of it; the main lane goes first in every
        // tick and keeps at least the other half under any flood of hints.
        let hint_rate = rate_per_sec / 2;
        Budget {
            circuit,
            bucket: TokenBucket::new(rate_per_sec),
            hint_bucket: (hint_rate > 0).then(|| TokenBucket::new(hint_rate)),
        }
    }

    /// A permit for one call of `lane` now, if the circuit and the buckets allow it. When
    /// they do not, nothing stays taken.
    pub(crate) fn acquire(&mut self, lane: Lane, now_ms: u64) -> Option<Permit> {
        if !self.circuit.try_acquire(now_ms) {
            return None;
        }
        if !self.bucket.try_take(now_ms) {
            self.circuit.release();
            return None;
        }
        let hint = lane == Lane::Hint;
        if hint
            && !self
                .hint_bucket
                .as_mut()
                .is_some_and(|bucket| bucket.try_take(now_ms))
        {
            self.bucket.give_back();
            self.circuit.release();
            return None;
        }
        Some(Permit { _private: () })
    }

    /// A permit for a call that follows an answer of drone (the repository a re-delivery
    /// needs): the answered call paid for it, so it takes nothing.
    pub(crate) fn follow_up(&self) -> Permit {
        Permit { _private: () }
    }

    /// Drone answered (whatever the answer): the circuit closes.
    pub(crate) fn on_success(&mut self) {
        self.circuit.on_success();
    }

    /// Drone or the way to it failed; true when this failure opened the circuit.
    pub(crate) fn on_failure(&mut self, now_ms: u64) -> bool {
        self.circuit.on_failure(now_ms)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.circuit.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rate` calls a second; the first failure opens the circuit for 1 s.
    fn budget(rate: u64) -> Budget {
        Budget::new(rate, Circuit::new(1, 1000, 60_000))
    }

    /// Opens the circuit and lets its open period pass: the next acquire takes the probe.
    fn half_open(b: &mut Budget) -> u64 {
        let p = b.acquire(Lane::Main, 0).unwrap();
        p.spend();
        assert!(b.on_failure(0), "threshold 1: the first failure opens");
        assert!(b.is_open());
        assert_eq!(b.acquire(Lane::Main, 999), None, "open");
        1000
    }

    /// Permits of `lane` granted at time 0, each spent, until the first refusal.
    fn drain(b: &mut Budget, lane: Lane) -> usize {
        std::iter::from_fn(|| b.acquire(lane, 0))
            .map(Permit::spend)
            .count()
    }

    #[test]
    fn the_main_lane_has_the_whole_rate_and_the_hint_lane_half() {
        assert_eq!(drain(&mut budget(4), Lane::Main), 4);
        let mut b = budget(4);
        assert_eq!(drain(&mut b, Lane::Hint), 2);
        // Hints took tokens of the main bucket too: two left for the main lane.
        assert_eq!(drain(&mut b, Lane::Main), 2);
    }

    #[test]
    fn at_one_call_a_second_hints_get_nothing_and_cost_nothing() {
        let mut b = budget(1);
        assert_eq!(b.acquire(Lane::Hint, 0), None);
        b.acquire(Lane::Main, 0).unwrap().spend();
        assert_eq!(b.acquire(Lane::Main, 0), None);
    }

    #[test]
    fn a_refusal_of_the_hint_bucket_gives_the_main_token_back() {
        let mut b = budget(2);
        b.acquire(Lane::Hint, 0).unwrap().spend();
        assert_eq!(b.acquire(Lane::Hint, 0), None, "hint bucket (1/s) empty");
        b.acquire(Lane::Main, 0).unwrap().spend();
        assert_eq!(b.acquire(Lane::Main, 0), None);
    }

    #[test]
    fn a_follow_up_takes_nothing() {
        let mut b = budget(1);
        b.follow_up().spend();
        b.acquire(Lane::Main, 0).unwrap().spend();
        b.follow_up().spend();
        assert_eq!(b.acquire(Lane::Main, 0), None, "no token made up");
    }

    /// Takes `n` tokens of the main bucket (and of the hint bucket with `hint`) at `now`
    /// without the circuit: what spent permits of other calls would have taken.
    fn drain_tokens(b: &mut Budget, n: usize, hint: bool, now: u64) {
        for _ in 0..n {
            assert!(b.bucket.try_take(now));
            if hint {
                assert!(b.hint_bucket.as_mut().unwrap().try_take(now));
            }
        }
    }

    #[test]
    fn the_half_open_probe_is_single() {
        let mut b = budget(100);
        let now = half_open(&mut b);
        let probe = b.acquire(Lane::Main, now).unwrap();
        assert_eq!(b.acquire(Lane::Main, now), None, "one probe");
        probe.spend();
        assert_eq!(b.acquire(Lane::Main, now), None, "the probe is out");
        b.on_success();
        assert!(!b.is_open());
        b.acquire(Lane::Main, now).unwrap().spend();
        b.acquire(Lane::Main, now).unwrap().spend();
    }

    /// Refused by a bucket while half-open: acquire hands the probe back itself, so the next
    /// call with a token is the probe.
    #[test]
    fn a_bucket_refusal_releases_the_probe() {
        let mut b = budget(2);
        let now = half_open(&mut b);
        // Empty both buckets at `now`.
        drain_tokens(&mut b, 2, false, now);
        assert_eq!(b.acquire(Lane::Main, now), None, "no token");
        assert_eq!(b.acquire(Lane::Hint, now), None, "no token");
        let probe = b.acquire(Lane::Main, now + 500);
        assert!(probe.is_some(), "the probe was not kept by the refusals");
        probe.unwrap().spend();
        assert_eq!(b.acquire(Lane::Main, now + 1000), None, "one probe");
    }

    /// The hint bucket refusing while half-open hands the probe and the main token back.
    #[test]
    fn a_hint_bucket_refusal_releases_the_probe_and_the_main_token() {
        let mut b = budget(2);
        let now = half_open(&mut b);
        drain_tokens(&mut b, 1, true, now);
        assert_eq!(b.acquire(Lane::Hint, now), None, "hint bucket empty");
        let p = b.acquire(Lane::Main, now).unwrap();
        assert_eq!(
            b.acquire(Lane::Main, now),
            None,
            "main bucket empty, the probe out"
        );
        p.spend();
        b.on_success();
        assert_eq!(b.acquire(Lane::Main, now), None, "main bucket empty");
    }

    #[test]
    #[should_panic(expected = "dropped")]
    fn a_dropped_permit_is_caught_in_tests() {
        let mut b = budget(1);
        let p = b.acquire(Lane::Main, 0);
        drop(p);
    }
}
