//! A map with a capacity that forgets its oldest key first: the one shape of bounded cache the
//! core needs (repositories' objects, what a worker already sent, recent tombstones).
//!
//! "Oldest" is insertion order: replacing the value of a key already present keeps its place,
//! so a key written often still leaves once `cap` newer keys arrived. [`FifoMap::insert`]
//! returns what it evicted, so the caller can count it (every drop has a metric).
//!
//! Removal is O(1): the order queue keeps a stale slot, recognised by its sequence number and
//! skipped when it reaches the front; the queue is compacted once stale slots outnumber live
//! ones, so it never holds more than about twice `cap` keys whatever the mix of inserts and
//! removals.

use std::collections::VecDeque;
use std::hash::Hash;

use super::keyed::Map;

/// A bounded first-in, first-out map.
#[derive(Clone, Debug)]
pub struct FifoMap<K, V> {
    /// Each value with the sequence number of its slot in `order`.
    map: Map<K, (V, u64)>,
    /// Keys in insertion order; a slot whose sequence number differs from the map's is stale.
    order: VecDeque<(K, u64)>,
    cap: usize,
    next_seq: u64,
}

impl<K: Clone + Eq + Hash, V> FifoMap<K, V> {
    /// A map holding at most `cap` keys (0: holds nothing).
    pub fn new(cap: usize) -> Self {
        FifoMap {
            map: Map::default(),
            order: VecDeque::new(),
            cap,
            next_seq: 0,
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Sets `key` to `value`. A key already present keeps its place in the order; a new key
    /// beyond the capacity evicts the oldest, which is returned (with `cap` 0, the new entry
    /// itself).
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(slot) = self.map.get_mut(&key) {
            slot.0 = value;
            return None;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.map.insert(key.clone(), (value, seq));
        self.order.push_back((key, seq));
        let evicted = if self.map.len() > self.cap {
            self.pop_oldest()
        } else {
            None
        };
        self.compact();
        evicted
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (value, _) = self.map.remove(key)?;
        self.compact();
        Some(value)
    }

    /// Forgets everything (and the memory the order queue held).
    pub fn clear(&mut self) {
        self.map = Map::default();
        self.order = VecDeque::new();
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, (v, _))| (k, v))
    }

    /// Removes the oldest live entry.
    fn pop_oldest(&mut self) -> Option<(K, V)> {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|(_, s)| *s == seq) {
                return self.map.remove(&key).map(|(v, _)| (key, v));
            }
        }
        None
    }

    /// Drops stale slots once they outnumber live ones (amortised O(1) per operation).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, seq)| map.get(k).is_some_and(|(_, s)| s == seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removal stays O(1) amortised: the order queue keeps its stale slots until they outnumber
    /// the live keys (more than twice the live keys plus 16 slots), and is compacted at the
    /// first removal past that, not before (cargo-mutants: the bound's `>` → `>=` or `<`
    /// compacted at every removal, O(n) each).
    #[test]
    fn stale_slots_stay_until_the_queue_passes_twice_the_live_keys_plus_16() {
        let mut m = FifoMap::new(200);
        for k in 0..100u64 {
            m.insert(k, k);
        }
        for k in 0..58u64 {
            m.remove(&k);
        }
        assert_eq!(
            (m.len(), m.order.len()),
            (42, 100),
            "100 slots = 2 x 42 + 16: kept"
        );
        m.remove(&58);
        assert_eq!(
            (m.len(), m.order.len()),
            (41, 41),
            "100 > 2 x 41 + 16: compacted"
        );
    }

    /// The order queue's memory bound holds after every operation, whatever the mix of inserts
    /// and removals (removals lower the bound without touching the queue).
    #[test]
    fn the_order_queue_stays_within_twice_the_keys_plus_16() {
        let mut m = FifoMap::new(1000);
        let within = |m: &FifoMap<u64, u64>| m.order.len() <= 2 * m.len() + 16;
        for k in 0..500 {
            m.insert(k, k);
            assert!(within(&m));
        }
        for k in 0..500 {
            m.remove(&k);
            assert!(within(&m), "{k}: {}", m.order.len());
        }
        for k in 500..5000 {
            m.insert(k, k);
            m.remove(&k);
            assert!(within(&m), "{k}: {}", m.order.len());
        }
    }

    /// Compaction keeps the live keys in order: eviction still takes the oldest afterwards.
    #[test]
    fn compaction_keeps_the_live_keys_in_order() {
        let mut m = FifoMap::new(20);
        for k in 0..10 {
            m.insert(k, k);
        }
        for k in 10..100 {
            m.insert(k, k);
            m.remove(&k);
        }
        for k in 100..110 {
            assert_eq!(m.insert(k, k), None);
        }
        assert_eq!(m.insert(110, 110), Some((0, 0)));
        assert_eq!(m.len(), 20);
        let mut all: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable();
        let want: Vec<_> = (1..10).chain(100..111).map(|k| (k, k)).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn evicts_the_first_inserted_and_returns_it() {
        let mut m = FifoMap::new(3);
        for k in 1..=3 {
            assert_eq!(m.insert(k, k * 10), None);
        }
        assert_eq!(m.insert(1, 11), None, "replacing keeps the place");
        assert_eq!(m.insert(4, 40), Some((1, 11)));
        assert_eq!(m.insert(5, 50), Some((2, 20)));
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&3), Some(&30));
        assert!(!m.contains_key(&1) && m.contains_key(&5));
    }

    #[test]
    fn removed_keys_do_not_cost_a_newer_entry_its_place() {
        let mut m = FifoMap::new(2);
        m.insert(1, ());
        m.insert(2, ());
        assert_eq!(m.remove(&1), Some(()));
        m.insert(1, ()); // now the newest
        assert_eq!(m.insert(3, ()), Some((2, ())));
        assert_eq!(m.insert(4, ()), Some((1, ())));
        assert_eq!(m.remove(&9), None);
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let mut m = FifoMap::new(0);
        assert_eq!(m.insert(1, 'a'), Some((1, 'a')));
        assert!(m.is_empty());
        assert_eq!(m.cap(), 0);
    }

    /// Inserting and removing the same keys forever must not grow the order queue.
    #[test]
    fn memory_stays_bounded_under_churn() {
        let mut m = FifoMap::new(4);
        for i in 0..100_000u64 {
            m.insert(i % 7, i);
            if i % 3 == 0 {
                m.remove(&(i % 5));
            }
            assert!(m.len() <= 4);
            assert!(m.order.len() <= 2 * m.len() + 17, "{}", m.order.len());
        }
        m.clear();
        assert!(m.is_empty() && m.order.is_empty());
        assert_eq!(m.iter().count(), 0);
    }
}
