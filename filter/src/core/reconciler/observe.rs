//! Live webhooks, as the HTTP filters saw them and how the pipeline answered: evidence (its
//! drone signature verified) moves the SLO, names repositories and settles builds; a hint
//! only ever brings a lookup in drone closer (see the policy in the parent module).

use super::gaps::Shown;
use super::vouch::{Evidence, Hint, Proof, Seen};
use super::{clamp_u32, settles_for_good, Reconciler, MAX_DRONE_INT};
use crate::core::ledger::{Class, Entry, NOT_SCHEDULED};
use crate::core::model::DeliveryOutcome;
use crate::core::observation::Observation;

impl Reconciler {
    /// Records a live webhook and how the pipeline answered it: evidence when its signature
    /// verified, a hint otherwise.
    pub fn observe(&mut self, obs: Observation, now_ms: u64) {
        let hook = obs.webhook();
        if hook.repo.id > MAX_DRONE_INT
            || hook.number > MAX_DRONE_INT
            || hook.version > MAX_DRONE_INT
        {
            // The parser refuses these already; a queue message from elsewhere is not drone's.
            self.counters.observations_invalid += 1;
            return;
        }
        match Seen::sort(obs) {
            Seen::Evidence(evidence) => self.observe_evidence(evidence, now_ms),
            Seen::Hint(hint) => self.observe_hint(hint, now_ms),
        }
        self.sync_gauges();
    }

    fn observe_evidence(&mut self, evidence: Evidence, now_ms: u64) {
        self.slo_saw(&evidence, now_ms);
        let key = evidence.key();
        let outcome = evidence.outcome();
        self.counters.repos_evicted += self.idents.confirm(&evidence.webhook().repo, now_ms);
        self.note_number(Shown::by_evidence(&evidence), now_ms);
        let proof = Proof::evidence(&evidence);
        let mut hook = evidence.into_webhook();
        self.objects.keep_webhooks(&mut hook);
        if let Some(finished_at) = self.ledger.tombstone(&key) {
            if hook.version <= finished_at {
                // A late step webhook of a build that finished and was delivered.
                return;
            }
        }
        let settled = matches!(
            outcome,
            DeliveryOutcome::Delivered | DeliveryOutcome::Refused
        );
        let stale_after = self.cfg.stale_after_ms;
        let due = match outcome {
            // The pipeline does not have it: look drone up at once and re-deliver.
            DeliveryOutcome::NotDelivered => now_ms,
            _ => now_ms.saturating_add(self.rng.jitter(stale_after)),
        };
        match self.ledger.get(&key).copied() {
            None => {
                if settled && settles_for_good(hook.status) {
                    // Everything the pipeline needs of this build has arrived.
                    self.ledger.finish(&key, hook.version, &proof);
                    return;
                }
                let mut entry = Entry::new(now_ms, Class::Backed);
                entry.interval_ms = clamp_u32(stale_after);
                entry.next_due_ms = due;
                self.insert(key, entry);
                if settled {
                    (self.ledger).settle(&key, hook.version, hook.status, &proof);
                }
            }
            Some(entry) => {
                let newer = settled && hook.version > entry.settled_version();
                if newer && settles_for_good(hook.status) {
                    self.ledger.finish(&key, hook.version, &proof);
                    return;
                }
                let in_flight = entry.next_due_ms == NOT_SCHEDULED;
                if newer {
                    (self.ledger).settle(&key, hook.version, hook.status, &proof);
                }
                self.ledger.update(&key, |e| {
                    e.class = Class::Backed;
                    if newer && e.claimed_version <= hook.version {
                        e.claimed_version = 0;
                    }
                    e.last_change_ms = now_ms;
                    e.interval_ms = clamp_u32(stale_after);
                    if !in_flight {
                        // Fresh news: the build is not stale, unless the pipeline missed it
                        // (then `due` is now).
                        e.next_due_ms = due;
                    }
                });
            }
        }
    }

    /// A hint: remember the candidate name and the claim (if the pipeline answered it 2xx),
    /// and make sure drone is asked. Never settles, finishes or delays anything: a hint can only bring a hint-only build's lookup
    /// closer, never push any lookup later, and builds backed by evidence or drone keep their
    /// own schedule.
    fn observe_hint(&mut self, hint: Hint, now_ms: u64) {
        let outcome = hint.outcome();
        let (key, version, status) = (hint.key(), hint.version(), hint.status());
        self.counters.repos_evicted += self.idents.candidate(&hint.candidate());
        if self
            .ledger
            .tombstone(&key)
            .is_some_and(|finished_at| version <= finished_at)
        {
            return;
        }
        // A claim is what an unverified webhook says the pipeline *took*: only a 2xx counts.
        // A refused one (4xx: a pipeline that verifies drone's signature answers a forgery
        // 401) is no claim at all, so it can never settle or tombstone anything (issue 20,
        // finding 2): the forgery guessing a lost final state would otherwise suppress its
        // re-delivery. A claim never settles on its own either: only drone's answer showing
        // the same version *and* status does (see `on_build`), or it defers one look.
        let claim = (outcome == DeliveryOutcome::Delivered).then_some((version, status));
        let due = match outcome {
            DeliveryOutcome::NotDelivered => now_ms,
            _ => now_ms.saturating_add(self.rng.jitter(self.cfg.stale_after_ms)),
        };
        match self.ledger.get(&key).copied() {
            None => {
                let mut entry = Entry::new(now_ms, Class::Hint);
                if let Some((version, status)) = claim {
                    entry.claimed_version = version;
                    entry.claimed_status = status;
                }
                entry.interval_ms = clamp_u32(self.cfg.stale_after_ms);
                entry.next_due_ms = due;
                // Finished and delivered before: unless drone wrote it since, a hint about it
                // costs a lookup, never a re-delivery.
                let entry = self.ledger.resumed(&key, entry);
                self.insert(key, entry);
            }
            Some(entry) => {
                self.ledger.update(&key, |e| {
                    if let Some((version, status)) = claim {
                        if version > e.settled_version() {
                            // The latest claim stands: a forged one is replaced by the next
                            // genuine webhook, and refuted by drone in any case.
                            e.claimed_version = version;
                            e.claimed_status = status;
                        }
                    }
                    if entry.class == Class::Hint && e.next_due_ms != NOT_SCHEDULED {
                        e.next_due_ms = e.next_due_ms.min(due);
                    }
                });
            }
        }
    }
}
