//! The ledger's bounds and its fixed shard hash, pinned where the mutation run of ledger.rs
//! found them unpinned (benchmarks/results/mutants/ledger.txt).

#![allow(clippy::unwrap_used)]

use status_sync::core::drone_api::parse_build;
use status_sync::core::ledger::{shard_count, shard_of, Class, Entry, Lane, Ledger};
use status_sync::core::model::BuildKey;
use status_sync::core::proof::Proof;

/// What finishing a build takes: here drone's answer about it.
fn proof() -> Proof {
    let answer = br#"{"id":1,"repo_id":1,"number":1,"status":"success","version":3}"#;
    Proof::drone(&parse_build(answer).unwrap())
}

fn key(repo_id: u64, number: u64) -> BuildKey {
    BuildKey { repo_id, number }
}

/// The tombstone set holds exactly its cap: the newest `cap` finished builds.
#[test]
fn tombstones_hold_exactly_their_cap() {
    let mut l = Ledger::new(10, 2);
    for n in 1..=2 {
        l.insert(key(1, n), Entry::new(0, Class::Backed));
        l.finish(&key(1, n), 3, &proof());
    }
    assert_eq!(l.tombstone(&key(1, 1)), Some(3));
    assert_eq!(l.tombstone(&key(1, 2)), Some(3));
    l.insert(key(1, 3), Entry::new(0, Class::Backed));
    l.finish(&key(1, 3), 4, &proof());
    assert_eq!(l.tombstone(&key(1, 1)), None);
    assert_eq!(l.tombstone(&key(1, 3)), Some(4));
    let mut none = Ledger::new(10, 0);
    none.insert(key(1, 1), Entry::new(0, Class::Backed));
    none.finish(&key(1, 1), 3, &proof());
    assert_eq!(none.tombstone(&key(1, 1)), None, "cap 0 keeps none");
}

/// A build tracked again after it finished loses its tombstone; when it finishes once more,
/// its new tombstone is the newest and must outlive older ones. (The old tombstone set left a
/// removed key in its order queue, so that stale slot evicted the new tombstone at once, and
/// the queue could grow past its bound under churn.)
#[test]
fn a_tombstone_removed_and_set_again_is_the_newest() {
    let mut l = Ledger::new(10, 2);
    l.insert(key(1, 1), Entry::new(0, Class::Backed));
    l.finish(&key(1, 1), 3, &proof());
    // A newer webhook of build 1 brings it back (its tombstone goes), then two others finish.
    l.insert(key(1, 1), Entry::new(0, Class::Backed));
    assert_eq!(l.tombstone(&key(1, 1)), None);
    for n in 2..=3 {
        l.insert(key(1, n), Entry::new(0, Class::Backed));
        l.finish(&key(1, n), 3, &proof());
    }
    // Build 1 finishes again: the newest tombstone; build 2's, the oldest, goes.
    l.finish(&key(1, 1), 5, &proof());
    assert_eq!(l.tombstone(&key(1, 1)), Some(5));
    assert_eq!(l.tombstone(&key(1, 3)), Some(3));
    assert_eq!(l.tombstone(&key(1, 2)), None);
}

#[test]
fn cap_is_the_configured_size_at_least_one() {
    assert_eq!(Ledger::new(10_000, 64).cap(), 10_000);
    assert_eq!(Ledger::new(0, 64).cap(), 1);
    assert_eq!(shard_count(10_000), 157);
    assert_eq!(shard_count(0), 1);
}

/// Every VM must put a build in the same snapshot shard: the hash is fixed (splitmix64 of the
/// key), reference values computed independently.
#[test]
fn shard_hash_is_fixed() {
    assert_eq!(shard_of(&key(1, 1), 1 << 31), 151_149_761);
    assert_eq!(shard_of(&key(42, 7), 1 << 31), 1_297_440_713);
    assert_eq!(
        shard_of(&key(123_456_789, 987_654_321), 1 << 31),
        921_595_936
    );
    assert_eq!(shard_of(&key(1, 1), 157), 83);
    assert_eq!(shard_of(&key(42, 7), 0), 0, "no shards: one");
}

/// A leader that loses the lease forgets everything it tracked (the next one loads the
/// snapshot): builds of every class, both lanes' schedules, class counts, tombstones.
#[test]
fn clear_forgets_everything() {
    let mut l = Ledger::new(10, 10);
    let mut e = Entry::new(0, Class::Backed);
    e.next_due_ms = 100;
    l.insert(key(1, 1), e);
    let mut h = Entry::new(0, Class::Hint);
    h.next_due_ms = 100;
    l.insert(key(1, 3), h);
    l.insert(key(1, 2), Entry::new(0, Class::Backed));
    l.finish(&key(1, 2), 3, &proof());
    l.clear();
    assert!(l.is_empty());
    for lane in [Lane::Main, Lane::Hint] {
        assert_eq!(l.next_due(lane), None);
        assert!(l.pop_due(1000, lane).is_none());
    }
    assert_eq!((l.count(Class::Backed), l.count(Class::Hint)), (0, 0));
    assert_eq!(l.tombstone(&key(1, 2)), None);
    assert!(l.take_dirty().is_empty());
    // Usable again.
    l.insert(key(1, 1), e);
    assert_eq!(l.pop_due(100, Lane::Main).map(|(k, _)| k), Some(key(1, 1)));
}
