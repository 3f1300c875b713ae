//! What the reconciler persists (`core/reconciler/persist.rs`, `core/snapshot.rs`): snapshot
//! shards and watermarks written and loaded by the next leader, their bounds, and the key and
//! queue names in Envoy's shared data, which are a format: a new version of the module (an ECDS
//! upgrade, a new VM while the old one's data is still in Envoy) reads what the old one wrote,
//! and two instances of the filter in one Envoy (`instance`) never read each other's.

mod common;

use common::*;
use status_sync::core::ledger::{Class, Entry};
use status_sync::core::model::DeliveryOutcome::Delivered;
use status_sync::core::model::{BuildStatus, RepoRef};
use status_sync::core::reconciler::Reconciler;
use status_sync::core::snapshot::{self, Record};
use status_sync::core::snapshot::{
    decode_shard, lease_key, meta_key, queue_name, shard_key, watermarks_key,
};

/// persist.rs (load_watermarks): ids and numbers are drone's int64: marks at the bound are
/// taken, a value holding one beyond it is not a snapshot (the decoder's limits) and loads
/// nothing; identities beyond `max_repos` drop the oldest, counted.
#[test]
fn loaded_watermarks_beyond_int64_are_refused_and_evictions_counted() {
    let max = i64::MAX as u64;
    let mark = |id: u64, n: u64| {
        (
            RepoRef {
                id,
                namespace: "octocat".into(),
                name: format!("repo-{id}"),
            },
            n,
            1,
        )
    };
    let mut r = Reconciler::new(config(""), 1);
    assert!(r.load_watermarks(&snapshot::encode_watermarks(&[mark(max, 5), mark(7, max)])));
    assert!(r.repo_confirmed(max).is_some() && r.repo_confirmed(7).is_some());
    for beyond in [mark(max + 1, 5), mark(9, max + 1)] {
        let mut r = Reconciler::new(config(""), 1);
        let value = snapshot::encode_watermarks(&[mark(8, 5), beyond]);
        assert!(!r.load_watermarks(&value));
        assert!(r.repo_confirmed(8).is_none());
    }

    let mut r = Reconciler::new(config(r#","max_repos":1"#), 1);
    let marks = [mark(1, 5), mark(2, 5), mark(3, 5)];
    assert!(r.load_watermarks(&snapshot::encode_watermarks(&marks)));
    assert_eq!(r.counters().repos_evicted, 1);
}

/// A snapshot larger than this ledger: the overflow is evicted and counted as give-ups.
#[test]
fn loading_a_snapshot_into_a_smaller_ledger_counts_evictions() {
    let mut r = Reconciler::new(config(r#","max_tracked_builds":2"#), 1);
    let records: Vec<Record> = (1..=5).map(|n| killed_record(n, T0, T0 + 1000)).collect();
    assert!(r.load_shard(&snapshot::encode_shard(&records), T0));
    assert_eq!(r.ledger().len(), 2);
    let c = r.counters();
    // (evicted, give-ups, tracked)
    assert_eq!((c.builds_evicted, c.giveups, c.builds_tracked), (3, 3, 2));
}

/// Watermarks list only repositories a webhook or listing showed a build number for (a
/// repository known from a snapshot alone has none).
#[test]
fn watermarks_leave_out_repositories_without_numbers() {
    let mut r = Reconciler::new(config(""), 1);
    let mut other = killed_record(8, T0, T0 + 1000);
    other.repo = RepoRef {
        id: 7,
        namespace: "o".into(),
        name: "n".into(),
    };
    assert!(r.load_shard(&snapshot::encode_shard(&[other]), T0));
    r.observe(obs(3, "running", 2, Delivered), T0);
    let marks = snapshot::decode_watermarks(&r.take_watermarks().unwrap()).unwrap();
    let ids: Vec<u64> = marks.iter().map(|m| m.0.id).collect();
    assert_eq!(ids, vec![REPO_ID]);
}

/// The shell reports undecodable queue messages and snapshot errors through these counters.
#[test]
fn shell_reported_errors_are_counted() {
    let mut r = Reconciler::new(config(""), 1);
    r.invalid_observation();
    r.invalid_observation();
    r.snapshot_error();
    assert_eq!(r.counters().observations_invalid, 2);
    assert_eq!(r.counters().snapshot_errors, 1);
}

/// Loaded watermarks give a new leader the lowest number too (a later, lower webhook moves it,
/// and fills no gap below: issue 20, finding 1); a loaded minimum of 0 (none) never replaces a
/// known one.
#[test]
fn loaded_watermarks_carry_the_lowest_number() {
    let mut r = leader_after(30, 20, r#","max_gap_fill":20"#);
    r.observe(obs(31, "running", 2, Delivered), T0);
    assert_eq!(marks(&mut r), Some((31, 20)));
    r.observe(obs(17, "running", 2, Delivered), T0);
    assert_eq!(tracked(&r), vec![17, 31]);
    // A minimum of 0 (none) and a higher one change nothing; a lower one lowers it.
    for (next, min, want) in [(41, 0, 17), (42, 25, 17), (43, 5, 5)] {
        let bytes = snapshot::encode_watermarks(&[(repo(), 40, min)]);
        assert!(r.load_watermarks(&bytes));
        // The next number above the highest: no gap, but the watermarks change.
        r.observe(obs(next, "running", 2, Delivered), T0);
        assert_eq!(marks(&mut r), Some((next, want)), "loaded minimum {min}");
    }
    assert!(!r.load_watermarks(b"garbage"));
}

/// The snapshot layout: shards of 64 builds, all rewritten on request (after loading a
/// snapshot written with another layout).
#[test]
fn all_shards_are_rewritten_on_request() {
    let mut r = Reconciler::new(config(r#","max_tracked_builds":10000"#), 1);
    assert_eq!(r.shard_count(), 157);
    assert!(r.take_dirty_shards().is_empty());
    r.mark_all_dirty();
    let shards = r.take_dirty_shards();
    assert_eq!(shards.len(), 157);
    assert!(shards.iter().enumerate().all(|(i, (s, _))| *s == i as u32));
    assert!(r.take_dirty_shards().is_empty());
}

/// Over `max_repos`, ties at the cut-off number fill the cap exactly.
#[test]
fn watermarks_cut_ties_at_the_cap() {
    let mut r = Reconciler::new(config(r#","max_repos":3"#), 1);
    for (id, number) in [(1u64, 50u64), (2, 30), (3, 30), (4, 30), (5, 10)] {
        let mut o = obs(number, "running", 2, Delivered);
        o.webhook_mut().repo.id = id;
        o.webhook_mut().repo_json = None;
        r.observe(o, T0);
    }
    let m = snapshot::decode_watermarks(&r.take_watermarks().unwrap()).unwrap();
    let mut numbers: Vec<u64> = m.iter().map(|m| m.1).collect();
    numbers.sort();
    assert_eq!(numbers, vec![30, 30, 50]);
}

/// A build whose lookup was in flight when the old leader wrote the snapshot is looked up at
/// once by the new one (snapshot::reschedule_in_flight).
#[test]
fn build_in_flight_in_a_snapshot_is_due_at_once() {
    let mut e = Entry::new(T0, Class::Backed);
    e = settled(e, 2, BuildStatus::Running);
    e.next_due_ms = status_sync::core::ledger::NOT_SCHEDULED;
    let shard = snapshot::encode_shard(&[record(4, e)]);
    let mut r = Reconciler::new(config(""), 1);
    assert!(r.load_shard(&shard, T0));
    let calls = r.tick(T0);
    assert_eq!(calls.len(), 1);
    assert_eq!(looked_up(&calls[0]), Some(4));
}

#[test]
fn names_are_the_ones_earlier_versions_wrote() {
    assert_eq!(meta_key("ci"), "status-sync/ci/ledger/meta");
    assert_eq!(shard_key("ci", 7), "status-sync/ci/ledger/7");
    assert_eq!(lease_key("ci"), "status-sync/ci/lease");
    assert_eq!(watermarks_key("ci"), "status-sync/ci/repos");
    assert_eq!(queue_name("ci"), "status-sync/ci/observations");
}

#[test]
fn names_are_distinct_per_kind_shard_and_instance() {
    let mut names = Vec::new();
    for instance in ["a", "b", "default"] {
        names.push(meta_key(instance));
        names.push(lease_key(instance));
        names.push(watermarks_key(instance));
        names.push(queue_name(instance));
        for shard in 0..64 {
            names.push(shard_key(instance, shard));
        }
    }
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        count,
        "two kinds, shards or instances share a name"
    );
}

/// A shard is read only under a magic the module knows (`SSL2`, or `SSL1` from the version
/// before); anything else is not a shard, however well its body would decode.
#[test]
fn shards_are_read_only_under_a_known_magic() {
    let empty = |magic: &[u8; 4]| [&magic[..], &0u32.to_le_bytes()[..]].concat();
    assert_eq!(decode_shard(&empty(b"SSL2")), Some(vec![]));
    assert_eq!(decode_shard(&empty(b"SSL1")), Some(vec![]));
    for magic in [b"SSL3", b"SSL0", b"SSR3", b"\0\0\0\0"] {
        assert_eq!(decode_shard(&empty(magic)), None, "{magic:?}");
    }
}
