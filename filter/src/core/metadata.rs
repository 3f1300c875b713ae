//! Which repository and system objects a worker has already handed to the reconciler.
//!
//! The reconciler needs drone's `repo` and `system` objects to shape a re-delivered webhook,
//! but they change rarely, while every webhook carries them (about 0.8 KB without
//! `repo.build`). Copying them into every queue message made the message ~15 times larger than
//! the transition it reports, on the request path of every worker and again in the leader. So
//! each worker remembers, per repository, a hash of what it last sent and when, and sends the
//! objects again only when they changed or [`REFRESH_MS`] has passed.
//!
//! The refresh bounds how long a new leader (which starts with no cached objects) goes without
//! them for a busy repository. Until then a re-delivery it needs fetches the repository from
//! drone (`GET /api/repos/{owner}/{name}`, one call per repository, then cached) and carries no
//! `system` object.

/// Metadata is sent again after this long even when unchanged.
pub const REFRESH_MS: u64 = 60_000;

/// Most repositories a worker remembers. Forgetting one only means sending its objects again.
pub const MAX_ENTRIES: usize = 256;

use super::fifo_map::FifoMap;

/// What was sent for one repository, and when.
#[derive(Clone, Copy, Debug)]
struct Sent {
    hash: u64,
    at_ms: u64,
}

/// A worker's bounded record of sent metadata (first in, first out beyond its cap).
#[derive(Debug)]
pub struct SentMetadata {
    /// By repository id.
    entries: FifoMap<u64, Sent>,
}

impl SentMetadata {
    /// `cap` is clamped to `1..=MAX_ENTRIES` (the filter passes `max_repos`).
    pub fn new(cap: usize) -> Self {
        SentMetadata {
            entries: FifoMap::new(cap.clamp(1, MAX_ENTRIES)),
        }
    }

    /// Whether a webhook of `repo_id` whose metadata hashes to `hash` must carry it.
    pub fn needs(&self, repo_id: u64, hash: u64, now_ms: u64) -> bool {
        match self.entries.get(&repo_id) {
            Some(e) => e.hash != hash || now_ms.saturating_sub(e.at_ms) >= REFRESH_MS,
            None => true,
        }
    }

    /// Records that the metadata was handed over (call only once the queue accepted it).
    /// Forgetting the oldest repository is harmless (its objects are just sent again), so the
    /// eviction is not counted.
    pub fn sent(&mut self, repo_id: u64, hash: u64, now_ms: u64) {
        let _forgotten = self.entries.insert(
            repo_id,
            Sent {
                hash,
                at_ms: now_ms,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_once_per_change_and_refresh() {
        let mut m = SentMetadata::new(4);
        assert!(m.is_empty());
        assert!(m.needs(1, 10, 0));
        m.sent(1, 10, 0);
        assert!(!m.is_empty());
        assert!(!m.needs(1, 10, 1));
        assert!(!m.needs(1, 10, REFRESH_MS - 1));
        assert!(m.needs(1, 11, 1), "changed metadata goes again at once");
        assert!(
            m.needs(1, 10, REFRESH_MS),
            "and unchanged after the refresh"
        );
        assert!(m.needs(2, 10, 1), "per repository");
        m.sent(1, 11, 5);
        assert!(!m.needs(1, 11, 6));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn bounded_first_in_first_out() {
        let mut m = SentMetadata::new(3);
        for id in 1..=3 {
            m.sent(id, 0, 0);
        }
        m.sent(4, 0, 0);
        assert_eq!(m.len(), 3);
        assert!(m.needs(1, 0, 1), "the oldest was forgotten");
        assert!(!m.needs(2, 0, 1) && !m.needs(3, 0, 1) && !m.needs(4, 0, 1));
        m.sent(5, 0, 0);
        assert!(m.needs(2, 0, 1));
        assert_eq!(SentMetadata::new(0).entries.cap(), 1);
        assert_eq!(SentMetadata::new(1 << 20).entries.cap(), MAX_ENTRIES);
        let mut one = SentMetadata::new(1);
        one.sent(1, 0, 0);
        one.sent(2, 0, 0);
        assert!(one.needs(1, 0, 1) && !one.needs(2, 0, 1));
    }
}
