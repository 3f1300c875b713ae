//! SLO bookkeeping: which transitions the reconciler knows the pipeline lacks, since when, and
//! how long their recovery took.
//!
//! The one number an on-call engineer needs is "how far behind drone is the pipeline right
//! now": the age of the oldest transition known missing, 0 when caught up. A transition
//! becomes *known missing* when the pipeline did not accept a live webhook, or when drone's
//! API shows a newer version than the pipeline accepted; it *recovers* when the pipeline
//! accepts that version or a newer one (a re-delivery or a late live webhook). The delay in
//! between goes to a histogram.
//!
//! Sans-IO and bounded: at most `cap` transitions (the ledger's cap: each one belongs to a
//! tracked build), at most [`MAX_PENDING_DELAYS`] delays waiting for the shell. A build the
//! reconciler stops tracking (finished, given up) leaves the set lazily: the caller says which
//! builds it still tracks when it asks for the oldest age, so give-ups need no extra hook and
//! the gauge never sticks on a build nobody will deliver (the give-up is counted elsewhere).

use super::keyed::Map;
use super::model::{BuildKey, DeliveryOutcome};
use super::proof::Proof;
use std::collections::BTreeSet;

/// Recovery delays kept until the shell records them (it does every callback).
pub const MAX_PENDING_DELAYS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Missing {
    since_ms: u64,
    version: u64,
}

#[derive(Debug)]
pub struct Slo {
    missing: Map<BuildKey, Missing>,
    /// (since, build): the oldest first.
    by_age: BTreeSet<(u64, BuildKey)>,
    cap: usize,
    delays: Vec<u64>,
    /// Transitions found missing and recovered since the start; `delays_dropped`: what was
    /// dropped to stay bounded (delays that did not fit `delays`, or the oldest missing
    /// transition forgotten at `cap`).
    pub lost: u64,
    pub recovered: u64,
    pub delays_dropped: u64,
}

impl Slo {
    pub fn new(cap: usize) -> Self {
        Slo {
            missing: Map::default(),
            by_age: BTreeSet::new(),
            cap: cap.max(1),
            delays: Vec::new(),
            lost: 0,
            recovered: 0,
            delays_dropped: 0,
        }
    }

    /// What the pipeline did with `version` of a build (a live webhook or a re-delivery).
    /// Not delivered: the transition is missing from now (or still, since earlier). Delivered:
    /// a missing transition at or below `version` recovered. Refused (4xx): the pipeline will
    /// never take it, so it is no longer "behind", but it did not recover either.
    ///
    /// Takes a [`Proof`] (evidence, drone's answer, a re-delivery's answer): nothing a hint
    /// brought moves the SLO.
    pub fn outcome(
        &mut self,
        key: BuildKey,
        version: u64,
        outcome: DeliveryOutcome,
        now_ms: u64,
        by: &Proof,
    ) {
        match outcome {
            DeliveryOutcome::NotDelivered => self.missing(key, version, now_ms, by),
            DeliveryOutcome::Delivered => self.settled(key, version, Some(now_ms)),
            DeliveryOutcome::Refused => self.settled(key, version, None),
        }
    }

    /// Drone shows `version`, newer than anything the pipeline accepted.
    pub fn missing(&mut self, key: BuildKey, version: u64, now_ms: u64, _by: &Proof) {
        if let Some(m) = self.missing.get_mut(&key) {
            // Still missing: the clock keeps running from when it was first known.
            m.version = m.version.max(version);
            return;
        }
        if self.missing.len() >= self.cap {
            // Cannot happen while callers respect the ledger's cap; never grow past it.
            if let Some(oldest) = self.by_age.pop_first() {
                self.missing.remove(&oldest.1);
                self.delays_dropped += 1;
            }
        }
        self.missing.insert(
            key,
            Missing {
                since_ms: now_ms,
                version,
            },
        );
        self.by_age.insert((now_ms, key));
        self.lost += 1;
    }

    fn settled(&mut self, key: BuildKey, version: u64, accepted_at: Option<u64>) {
        let Some(m) = self.missing.get(&key).copied() else {
            return;
        };
        if version < m.version {
            return; // an older state reached the pipeline; the newer one is still missing
        }
        self.missing.remove(&key);
        self.by_age.remove(&(m.since_ms, key));
        if let Some(now_ms) = accepted_at {
            self.recovered += 1;
            if self.delays.len() < MAX_PENDING_DELAYS {
                self.delays.push(now_ms.saturating_sub(m.since_ms));
            } else {
                self.delays_dropped += 1;
            }
        }
    }

    /// Age of the oldest missing transition of a build still tracked (0 when none). Drops the
    /// oldest entries of builds no longer tracked on the way (amortised: each leaves once).
    pub fn oldest_age_ms(&mut self, now_ms: u64, tracked: impl Fn(&BuildKey) -> bool) -> u64 {
        while let Some(&(since, key)) = self.by_age.first() {
            if tracked(&key) {
                return now_ms.saturating_sub(since);
            }
            self.by_age.pop_first();
            self.missing.remove(&key);
        }
        0
    }

    /// Transitions known missing (including builds dropped but not yet swept).
    pub fn len(&self) -> usize {
        self.missing.len()
    }

    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }

    /// Recovery delays (ms) since the last call, for the histogram.
    pub fn take_delays(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.delays)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryOutcome::*;

    fn k(n: u64) -> BuildKey {
        BuildKey {
            repo_id: 7,
            number: n,
        }
    }
    const ALL: fn(&BuildKey) -> bool = |_| true;

    /// Past its cap the oldest missing transition is forgotten, and counted.
    #[test]
    fn the_cap_forgets_the_oldest_and_counts_it() {
        let mut s = Slo::new(2);
        for n in 1..=3 {
            s.missing(k(n), 1, n * 1_000, &Proof::for_tests());
        }
        assert_eq!(s.len(), 2);
        assert!(!s.is_empty());
        assert_eq!(s.delays_dropped, 1);
        assert_eq!(s.oldest_age_ms(10_000, ALL), 8_000, "build 1 was forgotten");
    }

    #[test]
    fn caught_up_is_zero() {
        let mut s = Slo::new(10);
        assert!(s.is_empty());
        assert_eq!(s.oldest_age_ms(1_000, ALL), 0);
        s.outcome(k(1), 3, Delivered, 1_000, &Proof::for_tests());
        assert_eq!(s.oldest_age_ms(2_000, ALL), 0);
        assert!(s.take_delays().is_empty(), "nothing was missing");
    }

    #[test]
    fn age_runs_from_first_known_and_recovery_records_the_delay() {
        let mut s = Slo::new(10);
        s.outcome(k(1), 2, NotDelivered, 1_000, &Proof::for_tests());
        // A failed re-delivery and a newer drone version keep the original start.
        s.outcome(k(1), 2, NotDelivered, 3_000, &Proof::for_tests());
        s.missing(k(1), 4, 4_000, &Proof::for_tests());
        s.missing(k(2), 1, 5_000, &Proof::for_tests());
        assert_eq!(s.oldest_age_ms(6_000, ALL), 5_000);
        // The older version reaching the pipeline does not recover the newer one.
        s.outcome(k(1), 3, Delivered, 6_500, &Proof::for_tests());
        assert_eq!(s.oldest_age_ms(7_000, ALL), 6_000);
        s.outcome(k(1), 4, Delivered, 7_000, &Proof::for_tests());
        assert_eq!(s.take_delays(), vec![6_000]);
        assert_eq!(
            s.oldest_age_ms(7_000, ALL),
            2_000,
            "build 2 is now the oldest"
        );
        s.outcome(k(2), 9, Delivered, 8_000, &Proof::for_tests());
        assert_eq!(s.take_delays(), vec![3_000]);
        assert_eq!(s.oldest_age_ms(9_000, ALL), 0);
        assert_eq!((s.lost, s.recovered), (2, 2));
        assert!(s.is_empty());
    }

    #[test]
    fn refused_is_not_behind_and_not_recovered() {
        let mut s = Slo::new(10);
        s.missing(k(1), 2, 0, &Proof::for_tests());
        s.outcome(k(1), 2, Refused, 500, &Proof::for_tests());
        assert_eq!(s.oldest_age_ms(1_000, ALL), 0);
        assert!(s.take_delays().is_empty());
        assert_eq!(s.recovered, 0);
    }

    #[test]
    fn builds_no_longer_tracked_leave_the_gauge() {
        let mut s = Slo::new(10);
        s.missing(k(1), 1, 0, &Proof::for_tests());
        s.missing(k(2), 1, 100, &Proof::for_tests());
        // Build 1 was given up (e.g. expired): the gauge follows build 2 and never sticks.
        assert_eq!(s.oldest_age_ms(1_000, |b| b.number != 1), 900);
        assert_eq!(s.len(), 1);
        assert_eq!(s.oldest_age_ms(1_000, |_| false), 0);
        assert!(s.is_empty());
    }

    #[test]
    fn bounded_by_cap_and_pending_delays() {
        let mut s = Slo::new(3);
        for n in 0..10 {
            s.missing(k(n), 1, n, &Proof::for_tests());
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.oldest_age_ms(10, ALL), 3, "the oldest were dropped first");
        let mut s = Slo::new(MAX_PENDING_DELAYS + 10);
        for n in 0..(MAX_PENDING_DELAYS as u64 + 5) {
            s.missing(k(n), 1, 0, &Proof::for_tests());
            s.outcome(k(n), 1, Delivered, 10, &Proof::for_tests());
        }
        assert_eq!(s.take_delays().len(), MAX_PENDING_DELAYS);
        assert_eq!(s.delays_dropped, 5);
        assert_eq!(s.recovered, MAX_PENDING_DELAYS as u64 + 5);
    }
}
