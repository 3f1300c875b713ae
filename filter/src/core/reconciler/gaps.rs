//! Gap filling: drone numbers each repository's builds in sequence, so a number evidence or
//! drone shows tells which lower numbers produced no webhook that reached us. This module
//! keeps the watermarks (highest and lowest number seen) and tracks the builds drone's
//! numbering says exist ([`Reconciler::track_inferred`], the one way such a build enters the
//! ledger, whichever call found it).

use super::{clamp_u32, Reconciler};
use crate::core::ledger::{Class, Entry};
use crate::core::model::BuildKey;

/// A build number evidence or drone's own numbering showed: the one input of gap filling and
/// the watermarks ([`Reconciler::note_number`]). Built only by [`Shown::by_evidence`] (a
/// verified webhook) and [`Shown::by_drone`] (drone's answer to a call no hint asked for), so
/// a number a hint brought, or drone's answer to a lookup a hint asked for, cannot reach gap
/// filling: the compiler refuses it (issue 20, finding 1).
#[derive(Clone, Copy, Debug)]
pub(super) struct Shown {
    key: BuildKey,
    /// Numbers arrive in lookup order, not in the order drone allocated them (`off`): a
    /// lower one may fill down to the lowest seen.
    unordered: bool,
}

impl Shown {
    pub(super) fn by_evidence(evidence: &super::vouch::Evidence) -> Self {
        let key = evidence.key();
        Shown {
            key,
            unordered: false,
        }
    }

    /// Drone answered about `key`; `None` when a hint asked for the call (where evidence
    /// exists: in `off` drone's answers are the best there is).
    pub(super) fn by_drone(key: BuildKey, asked_by: super::vouch::Asker) -> Option<Self> {
        use super::vouch::Asker;
        match asked_by {
            Asker::Evidence => Some(Shown {
                key,
                unordered: false,
            }),
            Asker::Unsigned => Some(Shown {
                key,
                unordered: true,
            }),
            Asker::Hint => None,
        }
    }
}

impl Reconciler {
    /// Evidence or drone showed build `key.number` of its repository: raise the watermarks and
    /// look up the numbers above the highest seen that produced no webhook.
    ///
    /// Drone numbers builds per repository in sequence. Build n when the highest number seen
    /// is m < n-1 means builds m+1..n-1 produced no webhook that reached us (all lost, or
    /// declined, which drone never reports): track up to `max_gap_fill` of them so the next
    /// ticks look them up and deliver their state.
    ///
    /// Rule: gap filling never goes below the lowest number seen as evidence (no downward
    /// fill). A late lower number (a long build finishing after newer ones started, a restart
    /// that lost the snapshot, a number an unverified webhook had drone confirm) says nothing
    /// of the builds between: they finished before this reconciler watched them, or their own
    /// webhooks come. The one exception is `off`, where no number is evidence and drone's
    /// answers arrive in lookup order (`tests/hints.rs`: `a_long_build_finishing_after_a_restart_fills_no_gap_below`,
    /// `a_hint_naming_an_old_finished_build_reaches_that_build_alone`). Only names in the
    /// evidence pool ([`crate::core::repos::Vouch`]) have watermarks.
    pub(super) fn note_number(&mut self, shown: Shown, now_ms: u64) {
        let Shown { key, unordered } = shown;
        let number = key.number;
        let Some((seen_max, seen_min)) = self.idents.show_number(key.repo_id, number) else {
            return;
        };
        if number > seen_max {
            self.note_activity(key.repo_id, now_ms);
        }
        let fill = self.cfg.max_gap_fill;
        if seen_max == 0 || fill == 0 {
            return;
        }
        // Newer than anything seen: the numbers just below it were missed (the range is
        // empty for any other number; written without a test, which could only repeat it).
        let from = (seen_max + 1).max(number.saturating_sub(fill));
        self.track_missing(key.repo_id, from..number, now_ms);
        if unordered {
            // `off`: numbers come in the order of their (jittered) lookups, so the lowest seen
            // is any of a repository's first builds; the numbers between a lower one and it
            // were missed too (an empty range unless it is below the lowest seen, which it is
            // not when it is above the highest). The time rule keeps old finished builds
            // among them from being re-delivered.
            let below = number.saturating_add(1);
            let to = seen_min.min(below.saturating_add(fill));
            self.track_missing(key.repo_id, below..to, now_ms);
        }
    }

    fn track_missing(&mut self, repo_id: u64, numbers: std::ops::Range<u64>, now_ms: u64) {
        for number in numbers {
            // Not due at once: webhooks of concurrent builds often arrive out of order, and a
            // build's own webhook settles it; only a build nothing arrived for is stale.
            if self.track_inferred(BuildKey { repo_id, number }, false, now_ms) {
                self.counters.builds_gap_filled += 1;
            }
        }
    }

    /// Tracks build `key`, which drone's numbering (or drone's list) says exists, unless it
    /// is tracked or finished already.
    ///
    /// Rule: a finished (tombstoned) build is never tracked again by gap filling or
    /// discovery (`tests/hints.rs`: `gap_filling_never_tracks_a_finished_build_again`); only a
    /// live webhook newer than the version it finished at brings it back: due at once, or after `stale_after_ms` (jittered).
    /// Returns whether it was added (the caller counts it under what found it); a build given
    /// up to make room is counted by [`Reconciler::insert`].
    pub(super) fn track_inferred(&mut self, key: BuildKey, at_once: bool, now_ms: u64) -> bool {
        if self.ledger.contains(&key) || self.ledger.tombstone(&key).is_some() {
            return false;
        }
        let stale_after = self.cfg.stale_after_ms;
        let mut entry = Entry::new(now_ms, Class::Inferred);
        entry.interval_ms = clamp_u32(stale_after);
        entry.next_due_ms = if at_once {
            now_ms
        } else {
            now_ms.saturating_add(self.rng.jitter(stale_after))
        };
        self.insert(key, entry);
        true
    }
}
