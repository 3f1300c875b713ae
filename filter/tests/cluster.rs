//! Cluster mode's election (issue 21, section 2) against `MemoryEtcd`, the in-memory model of
//! etcd's lease, transaction and revision rules, in virtual time: the same scenarios
//! `envoy/tests/etcd.rs` runs against a real 3-member etcd, plus the election's own timing.

#![allow(clippy::unwrap_used)]

use status_sync::core::cluster::election::{Election, Role};
use status_sync::core::cluster::etcd::Etcd;
use status_sync::core::cluster::memory::MemoryEtcd;
use status_sync::core::cluster::scenarios::{World, ALL};
use status_sync::core::cluster::{ClusterStore, Request};

/// The model behind a virtual clock; `down` makes every request unanswered.
struct Model {
    etcd: MemoryEtcd,
    now: u64,
    down: bool,
}

impl World for Model {
    fn send(&mut self, _preferred: usize, request: &Request) -> Option<(u32, Vec<u8>)> {
        if self.down {
            return None;
        }
        let (status, body) = self
            .etcd
            .handle(self.now, &request.path, request.body.as_bytes());
        // Every request takes a little time, as over loopback.
        self.now += 5;
        Some((status, body.into_bytes()))
    }
    fn now_ms(&mut self) -> u64 {
        self.now
    }
    fn wait_ms(&mut self, ms: u64) {
        self.now += ms;
    }
    fn members(&self) -> usize {
        1
    }
    fn kill(&mut self, _i: usize) {}
}

fn model() -> Model {
    Model {
        etcd: MemoryEtcd::new(),
        now: 1_000_000,
        down: false,
    }
}

/// The model and one election on it: key `k`, value `me`, a TTL of 3 s, retries after 300 ms.
fn model_and_election() -> (Model, Election) {
    (model(), Election::new(b"k", b"me", 3, 300))
}

/// Sends `request` to the model and hands its answer to the election.
fn answer(e: &mut Election, w: &mut Model, request: &Request) {
    let (s, b) = w.send(0, request).unwrap();
    e.answer(&Etcd, w.now, s, &b);
}

#[test]
fn every_shared_scenario_holds_against_the_model() {
    for (name, scenario) in ALL {
        let mut world = model();
        if let Err(e) = scenario(&mut world, b"status-sync/test/") {
            panic!("{name}: {e}");
        }
    }
}

/// Drives one election against the model until `until_ms`, answering every request.
fn run(e: &mut Election, w: &mut Model, until_ms: u64) {
    while w.now < until_ms {
        if let Some(r) = e.poll(&Etcd, w.now) {
            match w.send(0, &r) {
                Some((s, b)) => e.answer(&Etcd, w.now, s, &b),
                None => e.failed(w.now),
            }
        }
        w.now += 10;
    }
}

#[test]
fn a_lone_candidate_leads_after_a_grant_and_one_campaign() {
    let (mut w, mut e) = model_and_election();
    let grant = e.poll(&Etcd, w.now).unwrap();
    assert_eq!(grant.path, "/v3/lease/grant");
    assert!(
        e.poll(&Etcd, w.now).is_none(),
        "one request in flight at a time"
    );
    answer(&mut e, &mut w, &grant);
    assert!(matches!(e.role(), Role::Follower { .. }));
    let campaign = e.poll(&Etcd, w.now).unwrap();
    assert_eq!(campaign.path, "/v3/kv/txn");
    answer(&mut e, &mut w, &campaign);
    assert!(e.is_leader(w.now));
    assert_eq!(w.etcd.value(w.now, b"k"), Some(b"me".to_vec()));
}

#[test]
fn a_leader_keeps_alive_a_third_of_the_ttl_after_its_last_renewal_was_sent() {
    let (mut w, mut e) = model_and_election();
    let start = w.now;
    run(&mut e, &mut w, start + 100);
    assert!(e.is_leader(w.now));
    // The grant was sent at `start`: the first keep-alive is due at start + 1000.
    w.now = start + 990;
    assert!(e.poll(&Etcd, w.now).is_none());
    w.now = start + 1000;
    assert_eq!(e.poll(&Etcd, w.now).unwrap().path, "/v3/lease/keepalive");
}

#[test]
fn a_leader_whose_keep_alives_fail_gives_up_at_the_ttl_after_its_last_renewal_was_sent() {
    let (mut w, mut e) = model_and_election();
    let start = w.now;
    run(&mut e, &mut w, start + 100);
    let Role::Leader { until, .. } = e.role() else {
        panic!("{:?}", e.role())
    };
    assert_eq!(
        until,
        start + 3000,
        "the TTL counts from when the grant was sent"
    );
    w.down = true;
    run(&mut e, &mut w, until - 10);
    assert!(e.is_leader(w.now), "still within the TTL");
    assert_eq!(e.lost(), 0);
    run(&mut e, &mut w, until + 10);
    assert!(!e.is_leader(w.now));
    assert!(matches!(e.role(), Role::Lapsed { .. }), "{:?}", e.role());
    assert_eq!(e.lost(), 1);
    // Back: a new lease, and leadership again once the old key has expired with its lease.
    w.down = false;
    run(&mut e, &mut w, until + 1500);
    assert!(e.is_leader(w.now), "{:?} {:?}", e.role(), e.last_error());
}

#[test]
fn a_keep_alive_that_finds_the_lease_gone_gives_up_leadership_at_once() {
    let (mut w, mut e) = model_and_election();
    let start = w.now;
    run(&mut e, &mut w, start + 100);
    let lease = e.lease().unwrap();
    // The store lost the lease (expired while we were paused, or revoked).
    let gone = format!("{{\"result\":{{\"header\":{{\"revision\":\"5\"}},\"ID\":\"{lease}\"}}}}");
    w.now = start + 1000;
    assert_eq!(e.poll(&Etcd, w.now).unwrap().path, "/v3/lease/keepalive");
    e.answer(&Etcd, w.now, 200, gone.as_bytes());
    assert!(!e.is_leader(w.now));
    assert_eq!(e.lost(), 1);
    assert_eq!(e.poll(&Etcd, w.now).unwrap().path, "/v3/lease/grant");
}

#[test]
fn a_request_without_an_answer_counts_as_failed_after_the_retry_interval() {
    let (mut w, mut e) = model_and_election();
    assert!(e.poll(&Etcd, w.now).is_some());
    w.now += 299;
    assert!(e.poll(&Etcd, w.now).is_none());
    w.now += 1;
    assert!(
        e.poll(&Etcd, w.now).is_none(),
        "a failed grant waits its retry"
    );
    w.now += 300;
    assert_eq!(e.poll(&Etcd, w.now).unwrap().path, "/v3/lease/grant");
}

#[test]
fn a_stale_or_unusable_answer_changes_nothing_but_the_retry() {
    let (mut w, mut e) = model_and_election();
    e.answer(&Etcd, w.now, 200, br#"{"ID":"1","TTL":"3"}"#);
    assert_eq!(
        e.role(),
        Role::Candidate,
        "an answer to no request is ignored"
    );
    e.poll(&Etcd, w.now).unwrap();
    e.answer(&Etcd, w.now, 200, b"{not json");
    assert_eq!(e.role(), Role::Candidate);
    assert!(e.last_error().is_some());
    w.now += 300;
    assert!(e.poll(&Etcd, w.now).is_some());
}

#[test]
fn a_retried_campaign_whose_first_answer_was_lost_still_wins() {
    let (mut w, mut e) = model_and_election();
    let t = w.now + 30;
    run(&mut e, &mut w, t);
    assert!(e.is_leader(w.now));
    // The same campaign again (its answer lost on the way): the key is bound to our lease.
    let lease = e.lease().unwrap();
    let (s, b) = w.etcd.handle(
        w.now,
        "/v3/kv/txn",
        Etcd.campaign(b"k", b"me", lease).body.as_bytes(),
    );
    assert_eq!(
        Etcd.decode_campaign(lease, s, b.as_bytes()),
        Ok(status_sync::core::cluster::Campaign::Won)
    );
}

/// etcd electing its own raft leader answers late or not at all: the renewals reach it (the
/// lease lives on there) but their answers come after the leader's `until`. The leader stops
/// at `until`, keeps renewing the same lease, and leads again as soon as one renewal answers
/// that it is alive: the key bound to it never expired, so no one else led meanwhile, and no
/// new lease, campaign or takeover is needed.
#[test]
fn a_leader_whose_renewals_answer_too_late_leads_again_with_the_same_lease() {
    let (mut w, mut e) = model_and_election();
    let start = w.now;
    run(&mut e, &mut w, start + 100);
    let Role::Leader { lease, until } = e.role() else {
        panic!("{:?}", e.role())
    };
    // Renewals processed by etcd, their answers lost.
    while w.now < until + 500 {
        if let Some(r) = e.poll(&Etcd, w.now) {
            let _ = w.send(0, &r);
            e.failed(w.now);
        }
        w.now += 10;
    }
    assert!(!e.is_leader(w.now), "no answer by until: stopped");
    assert_eq!(e.role(), Role::Lapsed { lease });
    run(&mut e, &mut w, until + 1000);
    assert!(e.is_leader(w.now), "{:?}", e.role());
    assert!(matches!(e.role(), Role::Leader { lease: l, .. } if l == lease));
    assert_eq!(w.etcd.value(w.now, b"k"), Some(b"me".to_vec()));
}

/// A follower (a lease, no key yet) whose renewals and campaigns go unanswered until its
/// lease may have expired gives that lease up: the next request is a new grant, not a renewal
/// or a campaign bound to a lease etcd may have dropped (cargo-mutants: `expire`'s follower
/// guard → false kept it a follower of a dead lease).
#[test]
fn a_follower_whose_lease_may_have_expired_asks_for_a_new_grant() {
    let (mut w, mut e) = model_and_election();
    let start = w.now;
    let grant = e.poll(&Etcd, w.now).unwrap();
    answer(&mut e, &mut w, &grant);
    let Role::Follower { until, .. } = e.role() else {
        panic!("{:?}", e.role())
    };
    assert_eq!(until, start + 3000);
    w.down = true;
    run(&mut e, &mut w, until - 10);
    assert!(matches!(e.role(), Role::Follower { .. }), "{:?}", e.role());
    w.now = until;
    let next = e.poll(&Etcd, w.now);
    assert_eq!(e.role(), Role::Candidate);
    assert_eq!(e.lease(), None);
    assert_eq!(next.map(|r| r.path), Some("/v3/lease/grant".to_string()));
}

/// A renewal that etcd refuses (an error answer, even "not found") is no proof that the lease
/// is gone: the leader keeps leading until its `until` and renews again a third of the retry
/// interval later, sooner than any other retry, since it has a TTL to beat. Only a keep-alive
/// answered without a TTL, or no renewal by `until`, gives leadership up (cargo-mutants: the
/// "lease not found" start-over applied to any request → true, and `retry_ms / 3` → `* 3`).
#[test]
fn a_refused_renewal_keeps_the_leader_and_is_retried_a_third_of_the_retry_interval_later() {
    let (mut w, mut e) = model_and_election();
    let start = w.now;
    run(&mut e, &mut w, start + 100);
    assert!(e.is_leader(w.now));
    w.now = start + 1000;
    assert_eq!(e.poll(&Etcd, w.now).unwrap().path, "/v3/lease/keepalive");
    let refused = br#"{"error":"etcdserver: requested lease not found","code":5,"message":"x"}"#;
    e.answer(&Etcd, w.now, 404, refused);
    assert!(e.is_leader(w.now), "{:?}", e.role());
    assert_eq!(e.lost(), 0);
    assert!(e.last_error().is_some());
    assert!(e.poll(&Etcd, w.now + 99).is_none());
    assert_eq!(
        e.poll(&Etcd, w.now + 100).unwrap().path,
        "/v3/lease/keepalive"
    );
}

/// A follower whose campaign got no answer campaigns again after the retry interval, not at
/// the next tick (cargo-mutants: the campaign's due-time guard → true).
#[test]
fn a_failed_campaign_is_retried_after_the_retry_interval() {
    let (mut w, mut e) = model_and_election();
    let grant = e.poll(&Etcd, w.now).unwrap();
    answer(&mut e, &mut w, &grant);
    let campaign = e.poll(&Etcd, w.now).unwrap();
    assert_eq!(campaign.path, "/v3/kv/txn");
    let failed_at = w.now;
    e.failed(failed_at);
    assert!(e.poll(&Etcd, failed_at + 10).is_none());
    assert!(e.poll(&Etcd, failed_at + 299).is_none());
    assert_eq!(e.poll(&Etcd, failed_at + 300).unwrap().path, "/v3/kv/txn");
}

/// A campaign etcd refuses because its lease is gone ("requested lease not found", code 5)
/// starts over at once with a new grant: the lease cannot come back, so retrying the campaign
/// with it would only be refused again until the TTL ran out (cargo-mutants: the start-over's
/// guard → false).
#[test]
fn a_campaign_refused_for_a_lease_gone_asks_for_a_new_grant_at_once() {
    let (mut w, mut e) = model_and_election();
    let grant = e.poll(&Etcd, w.now).unwrap();
    answer(&mut e, &mut w, &grant);
    assert_eq!(e.poll(&Etcd, w.now).unwrap().path, "/v3/kv/txn");
    let gone = br#"{"error":"etcdserver: requested lease not found","code":5,"message":"x"}"#;
    e.answer(&Etcd, w.now, 404, gone);
    assert_eq!(e.role(), Role::Candidate);
    assert_eq!(e.lost(), 0, "it never led");
    assert_eq!(
        e.poll(&Etcd, w.now).unwrap().path,
        "/v3/lease/grant",
        "a new lease at once"
    );
}
