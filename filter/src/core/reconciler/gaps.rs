//! Gap filling: drone numbers each repository's builds in sequence, so a number evidence or
//! drone shows tells which lower numbers produced no webhook that reached us. This module
//! keeps the watermarks (highest and lowest number seen) and tracks the builds drone's
//! numbering says exist ([`Reconciler::track_inferred`], the one way such a build enters the
//! ledger, whichever call found it).

use super::{clamp_u32, Reconciler};
use crate::core::ledger::{Class, Entry};
use crate::core::model::BuildKey;

impl Reconciler {
    /// Evidence or drone showed build `key.number` of its repository: raise the watermarks and
    /// look up the numbers that produced no webhook.
    ///
    /// Drone numbers builds per repository in sequence. Build n when the highest number seen
    /// is m < n-1 means builds m+1..n-1 produced no webhook that reached us (all lost, or
    /// declined, which drone never reports): track up to `max_gap_fill` of them so the next
    /// ticks look them up and deliver their state.
    pub(super) fn note_number(&mut self, key: BuildKey, now_ms: u64) {
        let number = key.number;
        let Some(ident) = self.idents.get_mut(&key.repo_id).filter(|i| i.confirmed) else {
            return;
        };
        let (seen_max, seen_min) = (ident.max_number, ident.min_number);
        if number > seen_max {
            ident.max_number = number;
            self.watermarks_dirty = true;
        }
        if seen_min == 0 || number < seen_min {
            ident.min_number = number;
            self.watermarks_dirty = true;
        }
        if number > seen_max {
            self.note_activity(key.repo_id, now_ms);
        }
        let fill = self.cfg.max_gap_fill;
        if seen_max == 0 || fill == 0 {
            return;
        }
        if number > seen_max.saturating_add(1) {
            // Newer than anything seen: the numbers just below it were missed.
            let from = (seen_max + 1).max(number.saturating_sub(fill));
            self.track_missing(key.repo_id, from..number, now_ms);
        } else if seen_min > 0 && number.saturating_add(1) < seen_min {
            // Older than anything this reconciler saw (webhooks arrive out of order): the
            // numbers between it and the lowest seen were missed.
            let to = seen_min.min(number.saturating_add(1).saturating_add(fill));
            self.track_missing(key.repo_id, number + 1..to, now_ms);
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
    /// is tracked or finished already: due at once, or after `stale_after_ms` (jittered).
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
