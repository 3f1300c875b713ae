//! Persistence: what a new leader needs of this one, written to shared data by the shell.
//! The ledger as snapshot shards (only the shards that changed), and the repositories'
//! gap-filling watermarks; loading either keeps this configuration's bounds and timings.

use super::{clamp_u32, Reconciler};
use crate::core::ledger::Class;
use crate::core::model::RepoRef;
use crate::core::proof::Candidate;
use crate::core::snapshot::{self, Record};

impl Reconciler {
    fn repo_ref(&self, repo_id: u64) -> Option<RepoRef> {
        self.idents.repo(repo_id)
    }

    /// Snapshot values of the shards changed since the last call: (shard, bytes).
    pub fn take_dirty_shards(&mut self) -> Vec<(u32, Vec<u8>)> {
        let dirty = self.ledger.take_dirty();
        let mut out = Vec::with_capacity(dirty.len());
        for shard in dirty {
            let records: Vec<Record> = self
                .ledger
                .shard_entries(shard)
                .filter_map(|(k, e)| {
                    let repo = self.repo_ref(k.repo_id)?;
                    Some(Record {
                        repo,
                        number: k.number,
                        entry: *e,
                    })
                })
                .collect();
            out.push((shard, snapshot::encode_shard(&records)));
        }
        out
    }

    /// Loads one shard of a snapshot (written by a previous leader, maybe with another shard
    /// count). Returns false when the value is not a valid shard.
    pub fn load_shard(&mut self, bytes: &[u8], now_ms: u64) -> bool {
        let Some(records) = snapshot::decode_shard(bytes) else {
            return false;
        };
        for mut r in records {
            snapshot::reschedule_in_flight(&mut r.entry, now_ms);
            // The snapshot may come from a reconciler with other timings (a config change):
            // nothing waits longer than this configuration would make it wait.
            let latest = now_ms.saturating_add(self.rng.jitter(self.cfg.stale_after_ms));
            r.entry.next_due_ms = r.entry.next_due_ms.min(latest);
            r.entry.interval_ms = r
                .entry
                .interval_ms
                .min(clamp_u32(self.cfg.max_poll_interval_ms));
            // A build backed by evidence or drone was looked up under a confirmed name, which
            // a previous leader watched; any other record's name is only a candidate again.
            // Rule: a hint-only record never confirms a name (`tests/hints.rs`:
            // `a_hint_only_snapshot_record_never_confirms_a_name`).
            self.counters.repos_evicted += match r.entry.class {
                Class::Backed => self.idents.inherit(&r.repo),
                Class::Hint | Class::Inferred => {
                    self.idents.candidate(&Candidate::new(r.repo.clone()))
                }
            };
            let key = r.key();
            self.insert(key, r.entry);
        }
        self.sync_gauges();
        true
    }

    /// The repositories' highest build numbers (the gap-filling watermarks), when they changed
    /// since the last call: at most `max_repos` of them, the highest numbers first. Without
    /// them a new leader would take its first webhook of each repository as a fresh start and
    /// miss builds lost just before.
    pub fn take_watermarks(&mut self) -> Option<Vec<u8>> {
        if !self.idents.take_marks_moved() {
            return None;
        }
        let mut marks: Vec<(RepoRef, u64, u64)> = self.idents.watermarks();
        // Over the cap, keep the repositories with the highest numbers (the most active). The
        // cut-off number is found by bisection (64 linear passes at most) rather than by
        // sorting: the module has a size budget.
        let cap = self.cfg.max_repos;
        if marks.len() > cap {
            let at_least = |t: u64| marks.iter().filter(|m| m.1 >= t).count();
            let (mut lo, mut hi) = (0u64, u64::MAX);
            while lo < hi {
                let mid = lo + (hi - lo) / 2 + 1;
                if at_least(mid) >= cap {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            // Everything above the cut-off, then entries at it until the cap is reached.
            let mut room = cap.saturating_sub(at_least(lo.saturating_add(1)));
            marks.retain(|m| {
                m.1 > lo
                    || (m.1 == lo && room > 0 && {
                        room -= 1;
                        true
                    })
            });
        }
        Some(snapshot::encode_watermarks(&marks))
    }

    /// Loads the watermarks a previous leader stored. False when the value is not valid.
    pub fn load_watermarks(&mut self, bytes: &[u8]) -> bool {
        let Some(marks) = snapshot::decode_watermarks(bytes) else {
            return false;
        };
        for (repo, max_number, min_number) in marks {
            // Written by a leader from confirmed identities only (SSR3); the decoder applied
            // the input limits (ids and numbers within int64).
            self.counters.repos_evicted += self.idents.inherit_marks(&repo, max_number, min_number);
        }
        true
    }

    /// Marks every shard for rewriting (after loading a snapshot with another layout).
    pub fn mark_all_dirty(&mut self) {
        self.ledger.mark_all_dirty();
    }

    pub fn shard_count(&self) -> u32 {
        self.ledger.shards()
    }
}
