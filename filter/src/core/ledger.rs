//! The ledger: every build the reconciler is responsible for, what the pipeline has of it, and
//! when to look at it next.
//!
//! Bounded three ways: at most `cap` builds (the oldest is evicted, and the caller counts it), a
//! due index so a tick touches only builds that are due (cost proportional to due builds, not
//! tracked ones), and a bounded set of tombstones for builds that finished, so late step
//! webhooks carrying older versions cannot bring them back.

use super::model::{BuildKey, BuildStatus};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// `next_due_ms` value of a build that is not scheduled (a call for it is in flight).
pub const NOT_SCHEDULED: u64 = u64::MAX;

/// What the reconciler knows of one build. Kept small: the memory target is under 200 bytes per
/// tracked build, index overhead included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Newest version the pipeline has (answered 2xx) or refused (4xx); 0 = none yet (drone
    /// versions start at 1).
    pub settled_version: u64,
    pub settled_status: BuildStatus,
    /// Consecutive failed calls for this build (drone or pipeline).
    pub failures: u8,
    /// Current interval between looks while drone reports no change.
    pub interval_ms: u32,
    pub first_seen_ms: u64,
    /// Last time a webhook or drone told us something new about this build.
    pub last_change_ms: u64,
    pub next_due_ms: u64,
}

impl Entry {
    pub fn new(now_ms: u64) -> Self {
        Entry {
            settled_version: 0,
            settled_status: BuildStatus::Unknown,
            failures: 0,
            interval_ms: 0,
            first_seen_ms: now_ms,
            last_change_ms: now_ms,
            next_due_ms: NOT_SCHEDULED,
        }
    }

    pub fn settled_is_terminal(&self) -> bool {
        self.settled_version > 0 && self.settled_status.is_done()
    }
}

/// Builds that finished recently, with the version they finished at. FIFO-bounded.
#[derive(Debug, Default)]
struct Tombstones {
    map: HashMap<BuildKey, u64>,
    order: VecDeque<BuildKey>,
    cap: usize,
}

impl Tombstones {
    fn insert(&mut self, key: BuildKey, version: u64) {
        if self.cap == 0 {
            return;
        }
        if self.map.insert(key, version).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// Builds per snapshot shard: small enough that rewriting a dirty shard each tick is cheap.
pub const SHARD_SIZE: usize = 64;

/// Shard of a build: a fixed hash (not `RandomState`: every VM must agree).
pub fn shard_of(key: &BuildKey, shards: u32) -> u32 {
    let mut z = key
        .repo_id
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(key.number);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % u64::from(shards.max(1))) as u32
}

/// Number of snapshot shards for a ledger of `cap` builds.
pub fn shard_count(cap: usize) -> u32 {
    u32::try_from(cap.div_ceil(SHARD_SIZE).max(1)).unwrap_or(u32::MAX)
}

#[derive(Debug)]
pub struct Ledger {
    /// Keyed by (shard, build) so one shard's builds are a contiguous range for snapshots.
    entries: BTreeMap<(u32, BuildKey), Entry>,
    shards: u32,
    /// Shards changed since the last [`Ledger::take_dirty`].
    dirty: BTreeSet<u32>,
    due: BTreeSet<(u64, BuildKey)>,
    /// Insertion order, for evicting the oldest. Lazily cleaned: keys no longer tracked are
    /// skipped, and the deque is compacted when it grows past twice the ledger.
    age: VecDeque<BuildKey>,
    tombstones: Tombstones,
    cap: usize,
}

impl Ledger {
    pub fn new(cap: usize, tombstone_cap: usize) -> Self {
        Ledger {
            entries: BTreeMap::new(),
            shards: shard_count(cap),
            dirty: BTreeSet::new(),
            due: BTreeSet::new(),
            age: VecDeque::new(),
            tombstones: Tombstones {
                cap: tombstone_cap,
                ..Default::default()
            },
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    fn slot(&self, key: &BuildKey) -> (u32, BuildKey) {
        (shard_of(key, self.shards), *key)
    }

    fn touch(&mut self, key: &BuildKey) {
        self.dirty.insert(shard_of(key, self.shards));
    }

    pub fn get(&self, key: &BuildKey) -> Option<&Entry> {
        self.entries.get(&self.slot(key))
    }

    pub fn contains(&self, key: &BuildKey) -> bool {
        self.entries.contains_key(&self.slot(key))
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The builds of one shard, for its snapshot.
    pub fn shard_entries(&self, shard: u32) -> impl Iterator<Item = (&BuildKey, &Entry)> {
        let lo = (
            shard,
            BuildKey {
                repo_id: 0,
                number: 0,
            },
        );
        let hi = (shard, max_key());
        self.entries.range(lo..=hi).map(|((_, k), e)| (k, e))
    }

    /// Shards changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Marks every shard dirty (after loading a snapshot written with another shard count).
    pub fn mark_all_dirty(&mut self) {
        self.dirty = (0..self.shards).collect();
    }

    /// Version a finished build finished at, if it finished recently.
    pub fn tombstone(&self, key: &BuildKey) -> Option<u64> {
        self.tombstones.map.get(key).copied()
    }

    /// Number of builds due at `now_ms` (for tests and metrics; O(due)).
    pub fn due_count(&self, now_ms: u64) -> usize {
        self.due.range(..=(now_ms, max_key())).count()
    }

    /// Inserts a new build, evicting the oldest tracked build first when full. Returns the
    /// evicted key, if any. An existing entry is left as it is.
    pub fn insert(&mut self, key: BuildKey, entry: Entry) -> Option<BuildKey> {
        if self.contains(&key) {
            return None;
        }
        let mut evicted = None;
        if self.entries.len() >= self.cap {
            evicted = self.evict_oldest();
        }
        self.tombstones.map.remove(&key);
        if entry.next_due_ms != NOT_SCHEDULED {
            self.due.insert((entry.next_due_ms, key));
        }
        let slot = self.slot(&key);
        self.entries.insert(slot, entry);
        self.touch(&key);
        self.age.push_back(key);
        if self.age.len() > 2 * self.entries.len() + 64 {
            let shards = self.shards;
            let entries = &self.entries;
            self.age
                .retain(|k| entries.contains_key(&(shard_of(k, shards), *k)));
        }
        evicted
    }

    fn evict_oldest(&mut self) -> Option<BuildKey> {
        while let Some(key) = self.age.pop_front() {
            if self.contains(&key) {
                self.remove(&key);
                return Some(key);
            }
        }
        None
    }

    /// Changes an entry in place; the due index follows `next_due_ms`.
    pub fn update(&mut self, key: &BuildKey, f: impl FnOnce(&mut Entry)) -> bool {
        let slot = self.slot(key);
        let Some(entry) = self.entries.get_mut(&slot) else {
            return false;
        };
        let before = entry.next_due_ms;
        f(entry);
        let after = entry.next_due_ms;
        if before != after {
            if before != NOT_SCHEDULED {
                self.due.remove(&(before, *key));
            }
            if after != NOT_SCHEDULED {
                self.due.insert((after, *key));
            }
        }
        self.touch(key);
        true
    }

    /// Takes the earliest build due at `now_ms` out of the schedule (its `next_due_ms` becomes
    /// [`NOT_SCHEDULED`] until the caller reschedules it).
    pub fn pop_due(&mut self, now_ms: u64) -> Option<(BuildKey, Entry)> {
        let first = *self.due.first()?;
        if first.0 > now_ms {
            return None;
        }
        self.due.remove(&first);
        let slot = self.slot(&first.1);
        let entry = self.entries.get_mut(&slot)?;
        entry.next_due_ms = NOT_SCHEDULED;
        let copy = *entry;
        self.touch(&first.1);
        Some((first.1, copy))
    }

    /// Earliest scheduled time, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Stops tracking a build.
    pub fn remove(&mut self, key: &BuildKey) -> Option<Entry> {
        let slot = self.slot(key);
        let entry = self.entries.remove(&slot)?;
        self.touch(key);
        if entry.next_due_ms != NOT_SCHEDULED {
            self.due.remove(&(entry.next_due_ms, *key));
        }
        Some(entry)
    }

    /// Stops tracking a build that finished and was delivered, remembering the version so a
    /// late webhook with an older version does not resurrect it.
    pub fn finish(&mut self, key: &BuildKey, version: u64) {
        self.remove(key);
        self.tombstones.insert(*key, version);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&BuildKey, &Entry)> {
        self.entries.iter().map(|((_, k), e)| (k, e))
    }

    /// Drops everything (a leader that lost the lease forgets its copy; the next one loads the
    /// snapshot).
    pub fn clear(&mut self) {
        self.entries = BTreeMap::new();
        self.dirty = BTreeSet::new();
        self.due = BTreeSet::new();
        self.age = VecDeque::new();
        self.tombstones.map = HashMap::new();
        self.tombstones.order = VecDeque::new();
    }
}

fn max_key() -> BuildKey {
    BuildKey {
        repo_id: u64::MAX,
        number: u64::MAX,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn key(n: u64) -> BuildKey {
        BuildKey {
            repo_id: 1,
            number: n,
        }
    }

    fn scheduled(now: u64, due: u64) -> Entry {
        Entry {
            next_due_ms: due,
            ..Entry::new(now)
        }
    }

    #[test]
    fn pops_only_due_builds_in_order() {
        let mut l = Ledger::new(10, 10);
        l.insert(key(1), scheduled(0, 300));
        l.insert(key(2), scheduled(0, 100));
        l.insert(key(3), scheduled(0, 200));
        assert_eq!(l.due_count(150), 1);
        assert!(l.pop_due(50).is_none());
        assert_eq!(l.pop_due(250).unwrap().0, key(2));
        assert_eq!(l.pop_due(250).unwrap().0, key(3));
        assert!(l.pop_due(250).is_none());
        assert_eq!(l.get(&key(2)).unwrap().next_due_ms, NOT_SCHEDULED);
        assert_eq!(l.next_due(), Some(300));
    }

    #[test]
    fn update_moves_the_due_index() {
        let mut l = Ledger::new(10, 10);
        l.insert(key(1), scheduled(0, 100));
        l.update(&key(1), |e| e.next_due_ms = 500);
        assert!(l.pop_due(400).is_none());
        assert_eq!(l.pop_due(500).unwrap().0, key(1));
        l.update(&key(1), |e| e.next_due_ms = 600);
        assert_eq!(l.next_due(), Some(600));
        l.remove(&key(1));
        assert_eq!(l.next_due(), None);
    }

    #[test]
    fn full_ledger_evicts_the_oldest() {
        let mut l = Ledger::new(3, 10);
        for n in 1..=3 {
            assert_eq!(l.insert(key(n), scheduled(n, 100 + n)), None);
        }
        l.remove(&key(1));
        assert_eq!(
            l.insert(key(4), scheduled(4, 104)),
            None,
            "room after removal"
        );
        assert_eq!(l.insert(key(5), scheduled(5, 105)), Some(key(2)));
        assert_eq!(l.len(), 3);
        assert!(l.get(&key(2)).is_none());
        // The due index no longer holds the evicted build.
        let mut popped = vec![];
        while let Some((k, _)) = l.pop_due(1000) {
            popped.push(k.number);
        }
        assert_eq!(popped, vec![3, 4, 5]);
    }

    #[test]
    fn tombstones_are_bounded_and_cleared_on_reinsert() {
        let mut l = Ledger::new(10, 2);
        for n in 1..=3 {
            l.insert(key(n), Entry::new(0));
            l.finish(&key(n), 7);
        }
        assert_eq!(l.tombstone(&key(1)), None, "oldest tombstone dropped");
        assert_eq!(l.tombstone(&key(3)), Some(7));
        assert!(l.is_empty());
        l.insert(key(3), Entry::new(0));
        assert_eq!(l.tombstone(&key(3)), None);
    }

    #[test]
    fn age_queue_stays_bounded_under_churn() {
        let mut l = Ledger::new(100, 10);
        l.insert(key(0), Entry::new(0)); // a long-lived build at the front
        for n in 1..100_000 {
            l.insert(key(n), Entry::new(n));
            l.finish(&key(n), 3);
        }
        assert!(l.age.len() <= 2 * l.len() + 65, "{}", l.age.len());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn shards_partition_the_builds_and_track_changes() {
        let mut l = Ledger::new(1000, 10);
        assert_eq!(l.shards(), 16);
        for n in 0..500 {
            l.insert(key(n), Entry::new(0));
        }
        let total: usize = (0..l.shards()).map(|s| l.shard_entries(s).count()).sum();
        assert_eq!(total, 500);
        assert!(
            (0..l.shards()).all(|s| l.shard_entries(s).count() > 10),
            "spread"
        );
        assert_eq!(l.take_dirty().len(), 16);
        assert!(l.take_dirty().is_empty());
        l.update(&key(7), |e| e.failures = 1);
        assert_eq!(l.take_dirty(), vec![shard_of(&key(7), 16)]);
    }
}
