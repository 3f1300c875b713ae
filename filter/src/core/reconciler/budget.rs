//! What every drone call costs: the circuit breaker and the rate limit, in one place.
//!
//! A call toward drone needs the circuit's consent (in half-open state: the single probe), a
//! token of the main bucket (`max_drone_calls_per_sec`) and, for a lookup only unverified
//! webhooks asked for, a token of the hint bucket too. Taking them by hand in order, and
//! handing back what was taken when a later step refuses, is easy to get wrong: a half-open
//! probe never handed back stops every drone call for good. [`Budget::acquire`] does the whole
//! sequence and gives back what it took when it refuses; what it grants is a [`Permit`], which
//! must be spent on a call ([`Permit::spend`], by the function that registers the call) or
//! handed back ([`Budget::refund`], [`Budget::forgo`]). Debug builds (every native test) check
//! that no permit is dropped otherwise.

use crate::core::backoff::{Circuit, TokenBucket};
use crate::core::ledger::Lane;

/// The right to make one drone call now. Spent by the call's registration, or handed back.
#[must_use = "a permit is spent on a call or handed back (Budget::refund, Budget::forgo)"]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Permit {
    /// Tokens taken: of the main bucket, and of the hint bucket.
    main: bool,
    hint: bool,
}

impl Permit {
    /// The call was registered: the circuit's consent (a half-open probe) ends with its answer.
    pub(super) fn spend(self) {
        std::mem::forget(self);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Only `spend` and the hand-back functions end a permit (they forget it).
        debug_assert!(
            false,
            "a drone call permit was dropped, not spent or handed back"
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
        Some(Permit { main: true, hint })
    }

    /// A permit for a call that follows an answer of drone (the repository a re-delivery
    /// needs): the answered call paid for it, so it takes nothing.
    pub(crate) fn follow_up(&self) -> Permit {
        Permit {
            main: false,
            hint: false,
        }
    }

    /// No call was made after all, and none was due: the probe and the tokens come back.
    pub(crate) fn refund(&mut self, permit: Permit) {
        if permit.main {
            self.bucket.give_back();
        }
        if permit.hint {
            if let Some(bucket) = self.hint_bucket.as_mut() {
                bucket.give_back();
            }
        }
        self.forgo(permit);
    }

    /// No call was made, but the work the permit was taken for was done (a build given up,
    /// a lookup postponed): the probe comes back, the tokens stay spent.
    pub(crate) fn forgo(&mut self, permit: Permit) {
        std::mem::forget(permit);
        self.circuit.release();
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
    fn refund_gives_tokens_back_and_forgo_keeps_them_spent() {
        let mut b = budget(2);
        let p = b.acquire(Lane::Hint, 0).unwrap();
        b.refund(p);
        let p = b.acquire(Lane::Hint, 0).unwrap();
        b.forgo(p);
        assert_eq!(
            b.acquire(Lane::Hint, 0),
            None,
            "the forgone permit's hint token"
        );
        b.acquire(Lane::Main, 0).unwrap().spend();
        assert_eq!(b.acquire(Lane::Main, 0), None);
    }

    #[test]
    fn a_follow_up_takes_nothing_and_its_refund_gives_nothing() {
        let mut b = budget(1);
        let p = b.follow_up();
        b.refund(p);
        b.acquire(Lane::Main, 0).unwrap().spend();
        let p = b.follow_up();
        b.refund(p);
        assert_eq!(b.acquire(Lane::Main, 0), None, "no token made up");
    }

    #[test]
    fn the_half_open_probe_is_single_and_comes_back_when_handed_back() {
        let mut b = budget(100);
        let now = half_open(&mut b);
        let probe = b.acquire(Lane::Main, now).unwrap();
        assert_eq!(b.acquire(Lane::Main, now), None, "one probe");
        b.forgo(probe);
        let probe = b.acquire(Lane::Main, now).unwrap();
        b.refund(probe);
        let probe = b.acquire(Lane::Main, now).unwrap();
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
        // Empty both buckets at `now` (the probe is handed back each time).
        for _ in 0..2 {
            let p = b.acquire(Lane::Main, now).unwrap();
            b.forgo(p);
        }
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
        let p = b.acquire(Lane::Hint, now).unwrap();
        b.forgo(p);
        assert_eq!(b.acquire(Lane::Hint, now), None, "hint bucket empty");
        let p = b.acquire(Lane::Main, now).unwrap();
        b.forgo(p);
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
