//! The leader's whole turn (`core::turn`), driven natively against the in-memory host: the
//! order within a turn (live webhooks before drone's answer, the checkpoint after it), calls
//! the host refuses, answers the leader did not ask for, and the metrics the turn writes.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{api_build, config, is_drone, looked_up, obs, REPO_ID};
use status_sync::core::config::Config;
use status_sync::core::host::MemoryHost;
use status_sync::core::metrics::{Id, Kind};
use status_sync::core::model::{BuildKey, DeliveryOutcome};
use status_sync::core::observation::QueueKey;
use status_sync::core::reconciler::OutgoingCall;
use status_sync::core::turn::Turn;

const T0: u64 = 1_700_000_000_000;
const LEASE_MS: u64 = 1000;
const SECRET: &str = "turn-test-webhook-secret";
const BUILD: BuildKey = BuildKey {
    repo_id: REPO_ID,
    number: 1,
};

/// A root that led from T0, with its host and configuration.
struct Rig {
    cfg: Config,
    host: MemoryHost,
    turn: Turn,
}

impl Rig {
    /// Root 1, elected on its first tick at T0.
    fn leading() -> Rig {
        Rig::leading_with("")
    }

    /// [`Rig::leading`] with more configuration (JSON members, each after a comma).
    fn leading_with(extra: &str) -> Rig {
        let cfg = config(&format!(
            r#","lease_ms":{LEASE_MS},"webhook_secret":"{SECRET}","signature_mode":"monitor"{extra}"#
        ));
        let mut turn = Turn::new(1);
        turn.configure(&cfg.instance);
        let mut host = MemoryHost::new(T0);
        turn.on_tick(&mut host, &cfg);
        assert!(turn.leader().is_some(), "root 1 leads");
        Rig { cfg, host, turn }
    }

    /// [`Rig::leading_with`] `extra`, build 1 running (v2) and looked up: the lookup's token.
    fn looking_up(extra: &str) -> (Rig, u32) {
        let mut rig = Rig::leading_with(extra);
        rig.live("running", 2);
        let token = rig.tick_until_lookup();
        (rig, token)
    }

    /// A signed webhook for build 1 the pipeline took, as a worker queues it.
    fn live(&mut self, status: &str, version: u64) {
        self.live_build(1, status, version);
    }

    fn live_build(&mut self, number: u64, status: &str, version: u64) {
        let o = obs(number, status, version, DeliveryOutcome::Delivered);
        let key = QueueKey::derive(SECRET.as_bytes());
        self.host.store.enqueue(o.encode(Some(&key)));
    }

    fn tick(&mut self) {
        self.host.now_ms += 100;
        self.turn.on_tick(&mut self.host, &self.cfg);
    }

    /// Ticks (100 ms each, 30 s at most) until the leader asks drone for build 1, and returns
    /// that call's token.
    fn tick_until_lookup(&mut self) -> u32 {
        for _ in 0..300 {
            self.tick();
            let calls = self.host.take_dispatched();
            if let Some((token, _)) = calls.iter().find(|(_, c)| looked_up(c) == Some(1)) {
                return *token;
            }
        }
        panic!("build 1 was never looked up");
    }

    /// The host hands the leader the answer to `token`: `status` with `body`.
    fn answer(&mut self, token: u32, status: u16, body: Vec<u8>) {
        let size = body.len();
        self.hand(token, Some(status), body, (1, size));
        self.host.answer = None;
    }

    /// The host hands the leader an answer to `token` of `sizes` (headers, body bytes).
    fn hand(&mut self, token: u32, status: Option<u16>, body: Vec<u8>, sizes: (usize, usize)) {
        self.host.answer = Some((status, body));
        let (host, cfg) = (&mut self.host, &self.cfg);
        self.turn.on_call_answer(host, cfg, token, sizes.0, sizes.1);
    }

    /// Every counter and gauge the reconciler keeps reads the same in the host's metrics:
    /// counters added up by their differences, never twice.
    fn assert_mirrored(&mut self) {
        let counters = self.turn.leader().unwrap().reconciler.counters().clone();
        for &id in Id::ALL {
            if let Some(value) = counters.get(id) {
                if id.kind() != Kind::Histogram {
                    assert_eq!(self.host.metric(id), value, "{}", id.name());
                }
            }
        }
    }

    fn redeliveries(&self) -> Vec<&OutgoingCall> {
        self.host
            .dispatched
            .iter()
            .map(|(_, c)| c)
            .filter(|c| !is_drone(c))
            .collect()
    }
}

#[test]
fn live_webhooks_are_taken_in_before_a_drone_answer_of_the_same_turn() {
    let mut rig = Rig::leading();
    assert_eq!(rig.host.metric(Id::LeaderChanges), 1);
    assert_eq!(rig.host.metric(Id::ReconcilerEpoch), 1);
    rig.live("running", 2);
    let token = rig.tick_until_lookup();
    // While drone is asked, the build finishes and its webhook reaches the pipeline; drone
    // answers with that same final state. The webhook is in the queue, not yet drained.
    rig.live("success", 3);
    rig.answer(token, 200, api_build(1, "success", 3));
    assert_eq!(rig.host.store.queued(), 0, "the queue was drained");
    // Applied after the webhook, drone's answer tells nothing new: no re-delivery. Applied
    // before it, the reconciler would re-deliver a state the pipeline already has.
    assert!(
        rig.redeliveries().is_empty(),
        "re-delivered {:?}",
        rig.redeliveries()
    );
    let leader = rig.turn.leader().unwrap();
    assert!(
        !leader.reconciler.ledger().contains(&BUILD),
        "build 1 is done"
    );
}

#[test]
fn a_call_the_host_refuses_is_counted_failed_at_once_and_retried_later() {
    let mut rig = Rig::leading();
    rig.live("running", 2);
    rig.host.refuse = Some("BadArgument".into());
    for _ in 0..300 {
        rig.tick();
        if !rig.host.refused.is_empty() {
            break;
        }
    }
    let refused = rig.host.refused.len() as u64;
    assert!(refused > 0, "the leader tried to call drone");
    assert_eq!(rig.host.metric(Id::CallsRefused), refused);
    assert_eq!(rig.host.metric(Id::DronePollsFailed), refused);
    // The refused call holds nothing: no token, nothing in flight.
    assert_eq!(rig.host.metric(Id::CallsInflight), 0);
    let leader = rig.turn.leader().unwrap();
    assert_eq!(leader.host.tokens(), 0);
    assert_eq!(leader.reconciler.inflight(), 0);
    assert!(leader.reconciler.ledger().contains(&BUILD), "still tracked");
    // The cluster is defined now: the same build is looked up again, after a backoff.
    rig.host.refuse = None;
    let token = rig.tick_until_lookup();
    assert_eq!(rig.turn.leader().unwrap().host.tokens(), 1);
    assert_eq!(rig.host.metric(Id::CallsInflight), 1);
    rig.answer(token, 200, api_build(1, "running", 2));
    assert_eq!(rig.turn.leader().unwrap().host.tokens(), 0);
    assert_eq!(rig.host.metric(Id::CallsRefused), refused);
    rig.assert_mirrored();
}

#[test]
fn an_answer_to_a_call_this_leader_did_not_make_is_ignored_unread() {
    let (mut rig, token) = Rig::looking_up("");
    let awaited = rig.turn.leader().unwrap().host.tokens();
    rig.live("success", 3);
    let stranger = token.wrapping_add(1000);
    rig.hand(stranger, Some(200), api_build(1, "failure", 9), (1, 10));
    assert_eq!(rig.host.answer_reads.get(), 0, "the answer was not read");
    assert_eq!(rig.host.store.queued(), 1, "nothing was drained");
    assert!(rig.host.dispatched.is_empty());
    let leader = rig.turn.leader().unwrap();
    assert_eq!(
        leader.host.tokens(),
        awaited,
        "the real calls are still awaited"
    );
    // A root that does not lead ignores every answer.
    let mut follower = Turn::new(2);
    follower.configure(&rig.cfg.instance);
    follower.on_tick(&mut rig.host, &rig.cfg);
    assert!(follower.leader().is_none());
    follower.on_call_answer(&mut rig.host, &rig.cfg, token, 1, 10);
    assert_eq!(rig.host.answer_reads.get(), 0);
    assert_eq!(rig.host.store.queued(), 1);
}

/// `recovery_delay_ms` runs from the drone answer that showed a transition missing to the
/// pipeline's 2xx for its re-delivery: the figure the SLO panel shows users.
#[test]
fn the_recovery_delay_runs_from_the_answer_that_showed_the_gap_to_the_pipelines_2xx() {
    let (mut rig, token) = Rig::looking_up("");
    rig.answer(token, 200, api_build(1, "success", 3));
    let (token, call) = rig.host.take_dispatched().into_iter().next().unwrap();
    assert_eq!(call.cluster, "pipeline");
    rig.host.now_ms += 250;
    rig.answer(token, 200, Vec::new());
    assert_eq!(rig.host.samples(Id::RecoveryDelayMs), vec![250]);
}

#[test]
fn the_snapshot_written_after_an_answer_holds_what_the_answer_did() {
    let (mut rig, token) = Rig::looking_up("");
    // Drone says the build succeeded; the pipeline never heard: a re-delivery, answered 200.
    rig.answer(token, 200, api_build(1, "success", 3));
    let (token, call) = rig.host.take_dispatched().into_iter().next().unwrap();
    assert_eq!(call.cluster, "pipeline");
    rig.answer(token, 200, Vec::new());
    assert_eq!(rig.host.metric(Id::RedeliveriesOk), 1);
    assert_eq!(rig.host.samples(Id::RecoveryDelayMs).len(), 1);
    // Root 1 stops ticking right after that answer; root 2 takes over from the snapshot.
    let mut next = Turn::new(2);
    next.configure(&rig.cfg.instance);
    rig.host.now_ms += LEASE_MS;
    next.on_tick(&mut rig.host, &rig.cfg);
    let leader = next.leader().expect("root 2 took over");
    // Without a checkpoint after the answers, root 2 would load build 1 as still running
    // (the last tick's snapshot) and re-deliver it.
    assert!(
        !leader.reconciler.ledger().contains(&BUILD),
        "build 1 is done"
    );
    assert_eq!(rig.host.metric(Id::LeaderChanges), 2);
}

#[test]
fn an_answer_without_headers_or_over_max_body_bytes_fails_the_call_unread() {
    let mut rig = Rig::leading_with(r#","max_body_bytes":1024"#);
    rig.live("running", 2);
    // Reset before any header: nothing is read.
    let token = rig.tick_until_lookup();
    rig.hand(token, Some(200), api_build(1, "success", 3), (0, 100));
    assert_eq!(rig.host.answer_reads.get(), 0);
    assert_eq!(rig.host.metric(Id::DronePollsFailed), 1);
    // A body larger than max_body_bytes: its status is read, its body never.
    let token = rig.tick_until_lookup();
    rig.hand(token, Some(200), api_build(1, "success", 3), (1, 1025));
    assert_eq!(rig.host.answer_reads.get(), 1);
    assert_eq!(rig.host.metric(Id::DronePollsFailed), 2);
    // No readable status: failed.
    let token = rig.tick_until_lookup();
    rig.hand(token, None, api_build(1, "success", 3), (1, 100));
    assert_eq!(rig.host.metric(Id::DronePollsFailed), 3);
    // Within the limit, the same answer is taken: the build is re-delivered.
    let token = rig.tick_until_lookup();
    rig.answer(token, 200, api_build(1, "success", 3));
    assert_eq!(rig.host.metric(Id::DronePollsFailed), 3);
    assert_eq!(rig.redeliveries().len(), 1);
    rig.assert_mirrored();
}

#[test]
fn tokens_of_calls_the_host_never_answers_are_forgotten() {
    let mut rig = Rig::leading_with(r#","call_timeout_ms":100"#);
    for number in 1..=20 {
        rig.live_build(number, "running", 2);
    }
    let bound = rig.cfg.max_inflight_calls * 5 + 16;
    let mut sent = 0;
    // Ten minutes: the circuit opens, and its probes go unanswered too.
    for _ in 0..6000 {
        rig.tick();
        sent += rig.host.take_dispatched().len();
        assert!(rig.turn.leader().unwrap().host.tokens() <= bound);
    }
    assert!(sent > 2 * bound, "only {sent} calls were made");
    assert!(rig.host.metric(Id::CallsExpired) > 0);
    rig.assert_mirrored();
}

#[test]
fn an_answer_of_exactly_max_body_bytes_is_read_and_taken() {
    let (mut rig, token) = Rig::looking_up(r#","max_body_bytes":1024"#);
    // Drone's answer padded (JSON allows trailing white space) to the limit itself.
    let mut body = api_build(1, "success", 3);
    body.resize(1024, b' ');
    rig.answer(token, 200, body);
    assert_eq!(rig.host.answer_reads.get(), 2, "status and body read");
    assert_eq!(rig.host.metric(Id::DronePollsFailed), 0);
    assert_eq!(rig.redeliveries().len(), 1, "the answer was taken");
    rig.assert_mirrored();
}

/// The shell's log lines name the root a turn belongs to (`root=` from [`Turn::me`]).
#[test]
fn a_turn_names_the_root_it_was_made_for() {
    for me in [7, 1 << 40] {
        let mut turn = Turn::new(me);
        assert_eq!(turn.me(), me);
        turn.configure("instance-a");
        assert_eq!(turn.me(), me, "a new configuration keeps the root");
    }
}

/// After every tick the token map holds the calls in flight and no more (at most
/// `max_inflight_calls`), however many the host never answered.
#[test]
fn after_every_tick_the_token_map_holds_only_calls_in_flight() {
    let mut rig = Rig::leading_with(
        r#","call_timeout_ms":100,"max_inflight_calls":3,"circuit_failure_threshold":1000,"max_drone_calls_per_sec":1000"#,
    );
    for number in 1..=60 {
        rig.live_build(number, "running", 2);
    }
    let mut sent = 0;
    for _ in 0..300 {
        rig.tick();
        sent += rig.host.take_dispatched().len();
        let leader = rig.turn.leader().unwrap();
        assert_eq!(leader.host.tokens(), leader.reconciler.inflight());
        assert!(leader.host.tokens() <= 3);
    }
    assert!(sent > 60, "only {sent} calls were made");
}

/// A root going away stops leading at once: it holds no reconciler, and answers to the calls
/// it made are ignored, unread.
#[test]
fn a_turn_that_leaves_stops_leading_at_once() {
    let (mut rig, token) = Rig::looking_up("");
    rig.turn.leave();
    assert!(rig.turn.leader().is_none());
    rig.hand(token, Some(200), api_build(1, "success", 3), (1, 10));
    assert_eq!(rig.host.answer_reads.get(), 0);
}

/// A call the reconciler gave up on (no answer within twice `call_timeout_ms`) is forgotten
/// by the next tick: its late answer is ignored, unread, like another leader's.
#[test]
fn a_late_answer_to_a_call_the_leader_gave_up_on_is_ignored_unread() {
    let (mut rig, token) = Rig::looking_up(r#","call_timeout_ms":100"#);
    // Twice call_timeout_ms is under a second: the call is given up on after one.
    let asked = rig.host.now_ms;
    while rig.host.now_ms <= asked + 1000 {
        rig.tick();
    }
    assert!(rig.host.metric(Id::CallsExpired) > 0);
    rig.live("success", 3);
    rig.hand(token, Some(200), api_build(1, "failure", 9), (1, 10));
    assert_eq!(rig.host.answer_reads.get(), 0, "the answer was not read");
    assert_eq!(rig.host.store.queued(), 1, "nothing was drained");
}
