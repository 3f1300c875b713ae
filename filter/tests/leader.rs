//! The leader's shared-data work, driven natively against an in-memory store with Envoy's
//! rules: the election over a lease (CAS for existing keys only, no TTL, no delete), races
//! between roots, loading the previous leader's snapshot in another layout, checkpoints, the
//! observation queue, and values that cannot be read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{config, obs};
use status_sync::core::config::Config;
use status_sync::core::leader::{Role, Seat, MAX_DRAIN_PER_TICK};
use status_sync::core::lease::Lease;
use status_sync::core::ledger::{self, Class};
use status_sync::core::model::{BuildStatus, DeliveryOutcome};
use status_sync::core::observation::QueueKey;
use status_sync::core::snapshot;
use status_sync::core::store::{MemoryStore, SetError, SharedStore};
use status_sync::core::wire::{put_str16, put_u32, put_u64};
use std::cell::RefCell;

const T0: u64 = 1_700_000_000_000;
const LEASE_MS: u64 = 1000;

/// The webhook secret of these tests' configuration: the workers tag their verified
/// webhooks in the queue with its key.
const SECRET: &str = "leader-test-webhook-secret";

fn cfg(extra: &str) -> Config {
    config(&format!(
        r#","lease_ms":{LEASE_MS},"webhook_secret":"{SECRET}","signature_mode":"monitor"{extra}"#
    ))
}

fn queue_key() -> QueueKey {
    QueueKey::derive(SECRET.as_bytes())
}

fn seat(me: u64, cfg: &Config) -> Seat {
    let mut s = Seat::new(me);
    s.configure(&cfg.instance);
    s
}

fn lease(store: &MemoryStore) -> Lease {
    Lease::decode(store.value(&snapshot::lease_key("default")).unwrap()).unwrap()
}

/// Builds `numbers` running, as live webhooks the pipeline took, in the queue.
fn enqueue_running(store: &mut MemoryStore, numbers: std::ops::RangeInclusive<u64>) {
    for number in numbers {
        let o = obs(number, "running", 2, DeliveryOutcome::Delivered);
        store.enqueue(o.encode(Some(&queue_key())));
    }
}

/// Elected at T0, with builds 1..=`builds` drained from the queue and a checkpoint written:
/// the leader's first tick as far as shared data goes.
fn lead_with(store: &mut MemoryStore, s: &mut Seat, cfg: &Config, builds: u64) {
    assert_eq!(s.elect(store, cfg, T0), Role::Elected { epoch: 1 });
    enqueue_running(store, 1..=builds);
    let leader = s.leader().unwrap();
    leader.drain(store, T0);
    leader.checkpoint(store);
}

/// The default configuration, and root 1 leading in a new store with `builds` builds.
fn leading(builds: u64) -> (Config, MemoryStore, Seat) {
    let cfg = cfg("");
    let mut store = MemoryStore::new();
    let mut a = seat(1, &cfg);
    lead_with(&mut store, &mut a, &cfg, builds);
    (cfg, store, a)
}

fn tracked(s: &mut Seat) -> usize {
    s.leader().unwrap().reconciler.ledger().len()
}

fn snapshot_errors(s: &mut Seat) -> u64 {
    s.leader().unwrap().reconciler.counters().snapshot_errors
}

/// Root `me` elected in `store` at `at`: the snapshot errors it counted and the builds it
/// loaded.
fn loaded(store: &mut MemoryStore, cfg: &Config, me: u64, at: u64) -> (u64, usize) {
    let mut s = seat(me, cfg);
    s.elect(store, cfg, at);
    (snapshot_errors(&mut s), tracked(&mut s))
}

#[test]
fn one_root_leads_and_another_takes_over_once_the_lease_expires() {
    let cfg = cfg("");
    let mut store = MemoryStore::new();
    let (mut a, mut b) = (seat(1, &cfg), seat(2, &cfg));
    assert_eq!(a.elect(&mut store, &cfg, T0), Role::Elected { epoch: 1 });
    assert_eq!(b.elect(&mut store, &cfg, T0), Role::Follower);
    assert!(b.leader().is_none());
    // The holder renews on every tick: the other root stays out for as long as that goes on,
    // well past the first lease's expiry.
    let mut last = T0;
    for t in (1..=6).map(|i| T0 + i * LEASE_MS / 2) {
        assert_eq!(a.elect(&mut store, &cfg, t), Role::Leader);
        assert_eq!(b.elect(&mut store, &cfg, t + 1), Role::Follower);
        last = t;
    }
    assert_eq!(lease(&store).expires_ms, last + LEASE_MS);
    // The holder stops ticking (its thread is stuck, its VM gone): nothing deletes the lease,
    // it expires, and the other root takes it with the next epoch.
    assert_eq!(
        b.elect(&mut store, &cfg, last + LEASE_MS - 1),
        Role::Follower
    );
    assert_eq!(
        b.elect(&mut store, &cfg, last + LEASE_MS),
        Role::Elected { epoch: 2 }
    );
    assert_eq!((lease(&store).owner, lease(&store).epoch), (2, 2));
    // The old holder comes back: it steps down and stops reconciling.
    assert_eq!(
        a.elect(&mut store, &cfg, last + LEASE_MS + 1),
        Role::Follower
    );
    assert!(a.leader().is_none());
    assert_eq!(b.elect(&mut store, &cfg, last + LEASE_MS + 2), Role::Leader);
}

/// A reconfigured root starts a new reconciler: it stops leading until it is elected again.
#[test]
fn a_new_configuration_drops_the_reconciler() {
    let (cfg, _, mut a) = leading(0);
    a.configure(&cfg.instance);
    assert!(a.leader().is_none());
    a.leave();
    assert!(a.leader().is_none());
}

/// What another root does to the store, once.
type Act<'a> = Box<dyn FnOnce(&mut MemoryStore) + 'a>;

/// A store on which another root acts at one point of this root's election: after its first
/// read (`after_get`) or after its first write.
struct Racing<'a> {
    inner: RefCell<&'a mut MemoryStore>,
    after_get: bool,
    other: RefCell<Option<Act<'a>>>,
}

impl<'a> Racing<'a> {
    fn new(
        inner: &'a mut MemoryStore,
        after_get: bool,
        other: impl FnOnce(&mut MemoryStore) + 'a,
    ) -> Self {
        Racing {
            inner: RefCell::new(inner),
            after_get,
            other: RefCell::new(Some(Box::new(other))),
        }
    }

    fn other_acts(&self) {
        if let Some(f) = self.other.borrow_mut().take() {
            f(&mut self.inner.borrow_mut());
        }
    }
}

impl SharedStore for Racing<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let v = self.inner.borrow().get(key);
        if self.after_get {
            self.other_acts();
        }
        v
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let r = self.inner.borrow_mut().set(key, value, cas);
        if !self.after_get {
            self.other_acts();
        }
        r
    }

    fn dequeue(&mut self) -> Option<Vec<u8>> {
        self.inner.borrow_mut().dequeue()
    }
}

/// Envoy checks CAS only for existing keys: two roots that find no lease both "insert" it.
/// The one whose write the other overwrote reads the lease back and steps aside.
#[test]
fn of_two_roots_inserting_the_lease_the_last_writer_leads() {
    let cfg = cfg("");
    let mut store = MemoryStore::new();
    let mut a = seat(1, &cfg);
    let intruder = Lease {
        owner: 2,
        expires_ms: T0 + LEASE_MS,
        epoch: 1,
    };
    let key = snapshot::lease_key(&cfg.instance);
    let mut racing = Racing::new(&mut store, false, |s| {
        s.set(&key, &intruder.encode(), None).unwrap();
    });
    assert_eq!(a.elect(&mut racing, &cfg, T0), Role::Follower);
    drop(racing);
    assert!(a.leader().is_none());
    assert_eq!(lease(&store).owner, 2);
    assert!(
        store.value(&snapshot::meta_key("default")).is_none(),
        "the loser loads and writes nothing"
    );
}

/// When both writes land before either reads back, both lead for that tick; the next tick
/// leaves one.
#[test]
fn two_roots_that_both_inserted_are_one_leader_again_on_the_next_tick() {
    let cfg = cfg("");
    let mut store = MemoryStore::new();
    let (mut a, mut b) = (seat(1, &cfg), seat(2, &cfg));
    let mut racing = Racing::new(&mut store, true, |s| {
        assert_eq!(a.elect(s, &cfg, T0), Role::Elected { epoch: 1 });
    });
    assert_eq!(b.elect(&mut racing, &cfg, T0), Role::Elected { epoch: 1 });
    drop(racing);
    assert_eq!(lease(&store).owner, 2);
    assert_eq!(a.elect(&mut store, &cfg, T0 + 100), Role::Follower);
    assert!(a.leader().is_none());
    assert_eq!(b.elect(&mut store, &cfg, T0 + 100), Role::Leader);
}

/// An expired lease exists, so CAS applies: of two roots that read it, the first write wins
/// and the second is refused.
#[test]
fn of_two_roots_taking_an_expired_lease_only_one_wins_the_cas() {
    let (cfg, mut store, _old) = leading(0);
    let (mut a, mut b) = (seat(2, &cfg), seat(3, &cfg));
    let later = T0 + LEASE_MS;
    let mut racing = Racing::new(&mut store, true, |s| {
        assert_eq!(a.elect(s, &cfg, later), Role::Elected { epoch: 2 });
    });
    assert_eq!(b.elect(&mut racing, &cfg, later), Role::Follower);
    drop(racing);
    assert!(b.leader().is_none());
    assert_eq!((lease(&store).owner, lease(&store).epoch), (2, 2));
}

/// The holder's renewal is refused when the lease changed since it read it: it steps down.
#[test]
fn a_holder_whose_renewal_loses_a_race_steps_down() {
    let (cfg, mut store, mut a) = leading(0);
    let key = snapshot::lease_key(&cfg.instance);
    let mut racing = Racing::new(&mut store, true, |s| {
        s.set(&key, b"someone else's value", None).unwrap();
    });
    assert_eq!(a.elect(&mut racing, &cfg, T0 + 100), Role::Follower);
    assert!(a.leader().is_none());
}

#[test]
fn a_new_leader_continues_from_the_last_checkpoint() {
    let (cfg, mut store, mut a) = leading(5);
    let mut b = seat(2, &cfg);
    assert_eq!(tracked(&mut a), 5);
    assert_eq!(store.queued(), 0);
    let meta = store.value(&snapshot::meta_key("default")).unwrap();
    let shards = snapshot::decode_meta(meta).unwrap();
    assert_eq!(shards, a.leader().unwrap().reconciler.shard_count());
    let stored: usize = (0..shards)
        .filter_map(|s| store.value(&snapshot::shard_key("default", s)))
        .map(|v| snapshot::decode_shard(v).unwrap().len())
        .sum();
    assert_eq!(stored, 5);
    assert!(store.value(&snapshot::watermarks_key("default")).is_some());
    // The leader goes away; the next one loads all five builds.
    assert_eq!(
        b.elect(&mut store, &cfg, T0 + LEASE_MS),
        Role::Elected { epoch: 2 }
    );
    assert_eq!(tracked(&mut b), 5);
    assert_eq!(snapshot_errors(&mut b), 0);
}

/// `max_tracked_builds` changed between leaders: the snapshot of the old layout is loaded
/// whole, the keys beyond the new shard count are emptied (keys cannot be deleted), and the
/// next checkpoint writes every build in the new layout.
#[test]
fn a_snapshot_of_another_layout_is_loaded_and_rewritten() {
    let (old_cfg, new_cfg) = (
        cfg(r#","max_tracked_builds":256"#),
        cfg(r#","max_tracked_builds":128"#),
    );
    let mut store = MemoryStore::new();
    let mut a = seat(1, &old_cfg);
    lead_with(&mut store, &mut a, &old_cfg, 40);
    let meta_key = snapshot::meta_key("default");
    assert_eq!(
        snapshot::decode_meta(store.value(&meta_key).unwrap()),
        Some(4)
    );

    let mut b = seat(2, &new_cfg);
    assert_eq!(
        b.elect(&mut store, &new_cfg, T0 + LEASE_MS),
        Role::Elected { epoch: 2 }
    );
    assert_eq!(tracked(&mut b), 40);
    assert_eq!(
        snapshot::decode_meta(store.value(&meta_key).unwrap()),
        Some(2)
    );
    for shard in 2..4 {
        let key = snapshot::shard_key("default", shard);
        assert_eq!(store.value(&key), Some(&b""[..]), "{key} emptied");
    }
    b.leader().unwrap().checkpoint(&mut store);
    let stored: Vec<usize> = (0..2)
        .map(|s| {
            let v = store.value(&snapshot::shard_key("default", s)).unwrap();
            snapshot::decode_shard(v).unwrap().len()
        })
        .collect();
    assert_eq!(stored.iter().sum::<usize>(), 40, "{stored:?}");
    // And the leader after that finds the new layout as it is.
    let at = T0 + 2 * LEASE_MS;
    assert_eq!(loaded(&mut store, &new_cfg, 3, at), (0, 40));
}

/// A shard of the previous record layout (`SSL1`, written before claims were kept apart from
/// what drone confirmed) in a one-shard snapshot: the new leader loads its build as a hint
/// whose claim is the old settled state, and rewrites the snapshot in its own layout.
#[test]
fn a_previous_record_layout_loads_as_hints_and_is_rewritten() {
    let cfg = cfg("");
    let mut store = MemoryStore::new();
    let mut v1 = b"SSL1".to_vec();
    put_u32(&mut v1, 1);
    for v in [common::REPO_ID, 7, 5] {
        put_u64(&mut v1, v);
    }
    v1.extend_from_slice(&[BuildStatus::Success.code(), 0]);
    put_u32(&mut v1, 1000);
    for v in [T0 - 3, T0 - 2, T0 - 1] {
        put_u64(&mut v1, v);
    }
    put_str16(&mut v1, "octocat");
    put_str16(&mut v1, "hello-world");
    store
        .set(
            "status-sync/default/ledger/meta",
            &snapshot::encode_meta(1),
            None,
        )
        .unwrap();
    store
        .set("status-sync/default/ledger/0", &v1, None)
        .unwrap();

    let mut a = seat(1, &cfg);
    assert_eq!(a.elect(&mut store, &cfg, T0), Role::Elected { epoch: 1 });
    let key = common::key(7);
    let leader = a.leader().unwrap();
    let entry = *leader.reconciler.ledger().get(&key).unwrap();
    assert_eq!(entry.class, Class::Hint);
    assert_eq!((entry.settled_version(), entry.claimed_version), (0, 5));
    assert_eq!(entry.claimed_status, BuildStatus::Success);
    let shards = leader.reconciler.shard_count();
    assert!(shards > 1);
    leader.checkpoint(&mut store);
    let meta = store.value("status-sync/default/ledger/meta").unwrap();
    assert_eq!(snapshot::decode_meta(meta), Some(shards));
    let home = snapshot::shard_key("default", ledger::shard_of(&key, shards));
    let records = snapshot::decode_shard(store.value(&home).unwrap()).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].entry.class, Class::Hint);
    assert!(store.value(&home).unwrap().starts_with(b"SSL2"));
}

/// A store that refuses every write but the lease's and the meta's, as a host could.
struct Refusing(MemoryStore);

impl SharedStore for Refusing {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        if key.ends_with("/lease") || key.ends_with("/meta") {
            self.0.set(key, value, cas)
        } else {
            Err(SetError::Refused)
        }
    }

    fn dequeue(&mut self) -> Option<Vec<u8>> {
        self.0.dequeue()
    }
}

#[test]
fn checkpoints_write_what_changed_and_count_refused_writes() {
    let (_, mut store, mut a) = leading(3);
    let all = |s: &MemoryStore| -> Vec<_> { s.keys().map(|k| (k.to_string(), s.get(k))).collect() };
    let before = all(&store);
    // Nothing changed: nothing is written.
    a.leader().unwrap().checkpoint(&mut store);
    assert_eq!(before, all(&store));

    // Builds 4..=9 are new: their shards and the raised watermarks are written, and the
    // host refuses each write.
    let mut refusing = Refusing(store);
    enqueue_running(&mut refusing.0, 4..=9);
    let leader = a.leader().unwrap();
    leader.drain(&mut refusing, T0 + 1);
    leader.checkpoint(&mut refusing);
    let shards = leader.reconciler.shard_count();
    let mut touched: Vec<u32> = (4..=9)
        .map(|number| ledger::shard_of(&common::key(number), shards))
        .collect();
    touched.sort_unstable();
    touched.dedup();
    assert_eq!(snapshot_errors(&mut a), touched.len() as u64 + 1);
}

/// Values in shared data are input: a corrupt one is skipped and counted, whichever key it
/// is under, and the rest still loads. An emptied value (how a key is "removed") is not an
/// error.
#[test]
fn unreadable_snapshot_values_are_skipped_and_counted() {
    let key = |k: &str| format!("status-sync/default/{k}");
    let (cfg, base, mut a) = leading(30);
    let shards: Vec<u32> = (0..a.leader().unwrap().reconciler.shard_count())
        .filter(|s| base.value(&snapshot::shard_key("default", *s)).is_some())
        .collect();
    assert!(shards.len() >= 2, "{shards:?}");
    let first = snapshot::shard_key("default", shards[0]);
    let in_first = snapshot::decode_shard(base.value(&first).unwrap())
        .unwrap()
        .len();
    let then = T0 + LEASE_MS;

    // A corrupt shard: skipped and counted; the other shards load.
    let mut store = base.clone();
    store.set(&first, b"SSL2garbage", None).unwrap();
    assert_eq!(loaded(&mut store, &cfg, 2, then), (1, 30 - in_first));

    // An emptied shard and emptied watermarks: nothing to load there, nothing wrong.
    store.set(&first, b"", None).unwrap();
    store.set(&key("repos"), b"", None).unwrap();
    let at = then + LEASE_MS;
    assert_eq!(loaded(&mut store, &cfg, 3, at), (0, 30 - in_first));

    // Corrupt watermarks: counted; the builds still load.
    store.set(&key("repos"), b"SSR3\xff", None).unwrap();
    let at = then + 2 * LEASE_MS;
    assert_eq!(loaded(&mut store, &cfg, 4, at), (1, 30 - in_first));

    // A meta value that cannot be read: counted, nothing loaded (the shard count is unknown),
    // and this leader's layout written over it.
    for bad in [&b"v2 4"[..], b"v1 0", b"\xff"] {
        let mut s = base.clone();
        s.set(&key("ledger/meta"), bad, None).unwrap();
        let mut e = seat(5, &cfg);
        e.elect(&mut s, &cfg, then);
        assert_eq!(snapshot_errors(&mut e), 1, "{bad:?}");
        assert_eq!(tracked(&mut e), 0);
        let meta = s.value(&key("ledger/meta")).unwrap();
        assert_eq!(
            snapshot::decode_meta(meta),
            Some(e.leader().unwrap().reconciler.shard_count())
        );
    }

    // An emptied meta value: no snapshot, and not an error.
    let mut s = MemoryStore::new();
    s.set(&key("ledger/meta"), b"", None).unwrap();
    assert_eq!(loaded(&mut s, &cfg, 6, then).0, 0);
}

/// An unreadable queue message is counted and skipped; a drain takes a bounded number of
/// messages and leaves the rest for the next one.
#[test]
fn draining_the_queue_is_bounded_and_counts_unreadable_messages() {
    let (_, mut store, mut a) = leading(0);
    store.enqueue(b"not a queue message".to_vec());
    enqueue_running(&mut store, 1..=2);
    for _ in 0..MAX_DRAIN_PER_TICK {
        store.enqueue(Vec::new());
    }
    let leader = a.leader().unwrap();
    leader.drain(&mut store, T0);
    let c = leader.reconciler.counters();
    assert_eq!(c.observations_invalid, MAX_DRAIN_PER_TICK as u64 - 2);
    assert_eq!(leader.reconciler.ledger().len(), 2);
    assert_eq!(store.queued(), 3);
    leader.drain(&mut store, T0);
    assert_eq!(store.queued(), 0);
    assert_eq!(
        leader.reconciler.counters().observations_invalid,
        MAX_DRAIN_PER_TICK as u64 + 1
    );
}

/// Any wasm plugin of the same Envoy can write the queue, but not with the webhook secret:
/// its message claiming a verified webhook (with no tag, or a tag of another key) is taken as
/// a hint and counted. A hint names no repository, brings no `repo` object and settles
/// nothing: what it carries (here a phishing link for re-deliveries) goes nowhere. The
/// workers' own tagged messages are evidence.
#[test]
fn a_message_another_plugin_wrote_is_never_evidence() {
    let (_, mut store, mut a) = leading(0);
    let mut forged = obs(7, "success", 5, DeliveryOutcome::Delivered);
    let evil = r#"{"id":42,"namespace":"octocat","name":"hello-world","link":"https://evil.example/phish"}"#;
    forged.webhook_mut().repo_json = Some(evil.into());
    let foreign_key = QueueKey::derive(b"a plugin's own guess");
    let untagged = {
        // The previous layout's claim, which carried no tag.
        let mut m = forged.encode(None);
        m[..4].copy_from_slice(b"SSO2");
        m[30] = 1;
        m
    };
    store.enqueue(forged.encode(Some(&foreign_key)));
    store.enqueue(untagged);
    let leader = a.leader().unwrap();
    leader.drain(&mut store, T0);
    let r = &leader.reconciler;
    assert_eq!(r.counters().observations_unauthenticated, 2);
    assert_eq!(r.counters().observations_invalid, 0);
    let key = common::key(7);
    let entry = r.ledger().get(&key).expect("tracked as a hint");
    assert_eq!(entry.class, Class::Hint);
    assert_eq!(r.repo_confirmed(common::REPO_ID), None, "no name from it");
    // The genuine one, tagged by a worker: evidence.
    store.enqueue(forged.encode(Some(&queue_key())));
    leader.drain(&mut store, T0 + 1);
    let r = &leader.reconciler;
    assert_eq!(r.counters().observations_unauthenticated, 2);
    assert_ne!(r.ledger().get(&key).map(|e| e.class), Some(Class::Hint));
    assert!(r.repo_confirmed(common::REPO_ID).is_some());
}

#[test]
fn a_seat_knows_its_root_and_leaves_without_a_word() {
    let (cfg, mut store, mut a) = leading(1);
    assert_eq!(a.me(), 1);
    assert_eq!(seat(7, &cfg).me(), 7);
    a.leave();
    assert!(a.leader().is_none(), "a root that left reconciles no more");
    // It wrote nothing on leaving: the lease it held expires on its own.
    assert_eq!(lease(&store).owner, 1);
    let mut b = seat(2, &cfg);
    assert!(matches!(
        b.elect(&mut store, &cfg, T0 + LEASE_MS + 1),
        Role::Elected { .. }
    ));
}

/// The summary line (docs/metrics.md, "Logs"): once a minute, the first a minute after the leader
/// started, with the reconciler's figures.
#[test]
fn the_leader_writes_a_summary_line_once_a_minute() {
    common::logged();
    let (_, _, mut a) = leading(3);
    let summaries = || common::logged_since(0, &|l| l.contains("summary tracked="));
    let leader = a.leader().unwrap();
    leader.log_summary(T0);
    leader.log_summary(T0 + 59_999);
    assert_eq!(summaries(), Vec::<String>::new());
    leader.log_summary(T0 + 60_000);
    leader.log_summary(T0 + 60_001);
    let lines = summaries();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("INFO summary tracked=3 "),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(" circuit=closed "), "{}", lines[0]);
}
