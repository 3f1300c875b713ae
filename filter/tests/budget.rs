//! The reconciler's budget toward drone (`core/reconciler/budget.rs`, `calls.rs`): the circuit
//! breaker and its half-open probe, the rate limit's tokens, which answers feed the circuit, and
//! calls in flight expiring. Driven natively with a virtual clock.

mod common;

use common::*;
use status_sync::core::ledger::{Class, Entry};
use status_sync::core::model::DeliveryOutcome::{Delivered, NotDelivered};
use status_sync::core::reconciler::Reconciler;
use status_sync::core::snapshot;

/// The rate limit refuses the half-open probe's call: the probe is given back, and the next
/// tick with a token makes it. Otherwise one drone failure stops the reconciler for good.
#[test]
fn probe_refused_by_the_rate_limit_is_given_back() {
    let cfg = r#","circuit_failure_threshold":1,"circuit_open_ms":100,"max_drone_calls_per_sec":1,"max_inflight_calls":1"#;
    let mut r = missed(cfg, [1, 2]);
    let first = tick_one(&mut r, T0);
    assert!(r.on_response(first.id, http(503), T0).is_empty());
    assert_eq!(r.counters().circuit_opens, 1);
    // Open for 100 ms; the bucket (1/s) is empty until T0 + 1000: each probe before that is
    // refused by the rate limit.
    let (mut now, mut log) = (T0, Log::default());
    drive_steady(&mut r, &mut now, T0 + 5000, &mut log, "running", 2);
    let first_probe = log.calls.first().map(|(t, _)| *t);
    assert!(
        first_probe.is_some_and(|t| (T0 + 1000..=T0 + 1100).contains(&t)),
        "the probe went out once the bucket had a token: {first_probe:?}"
    );
    assert_eq!(r.counters().circuit_open, 0, "the probe closed the circuit");
    assert_eq!(log.redeliveries().len(), 2, "both builds delivered");
}

/// A failed probe re-opens the circuit for twice as long, and the next probe is handed out
/// after that period: the reconciler keeps trying through an outage and recovers after it.
#[test]
fn failed_probe_reopens_and_the_next_probe_follows() {
    let cfg =
        r#","circuit_failure_threshold":1,"max_drone_calls_per_sec":100,"max_inflight_calls":1"#;
    let mut r = missed(cfg, 1..=3);
    let (mut now, mut log) = (T0 - 100, Log::default());
    // Drone down for 10 s: the first call opens the circuit for 2 s; the probe at +2 s fails
    // and opens it for 4 s, the one at +6 s for 8 s (the cap, max_poll_interval_ms).
    drive(
        &mut r,
        &mut now,
        T0 + 10_000,
        &mut log,
        &mut |_| http(503),
        &mut pipeline_ok,
    );
    let times: Vec<u64> = log.calls.iter().map(|(t, _)| *t - T0).collect();
    assert_eq!(
        times,
        vec![0, 2000, 6000],
        "one probe per open period, doubling"
    );
    assert_eq!(r.counters().circuit_opens, 3);
    drive_steady(&mut r, &mut now, T0 + 30_000, &mut log, "success", 3);
    let probe = log.calls.get(3).map(|(t, _)| *t - T0);
    assert_eq!(probe, Some(14_000), "the probe after the 8 s open period");
    assert_eq!(r.counters().circuit_open, 0);
    assert_eq!(log.redeliveries().len(), 3);
    assert_eq!(r.ledger().len(), 0);
}

/// A half-open probe taken by a build that turns out to be past `max_build_age_ms` is given
/// back for the next due build.
#[test]
fn probe_taken_by_an_expired_build_is_given_back() {
    let cfg =
        r#","circuit_failure_threshold":1,"max_build_age_ms":60000,"max_drone_calls_per_sec":100"#;
    let mut r = seen_live(cfg, &[(1, "running", 2)]);
    // Build 1 is seen again just before it expires: due at about T0 + 60 500.
    r.observe(obs(1, "running", 2, Delivered), T0 + 59_500);
    r.observe(obs(2, "running", 2, NotDelivered), T0 + 59_500);
    let call = tick_one(&mut r, T0 + 59_500);
    assert_eq!(looked_up(&call), Some(2));
    // Build 2's lookup fails late: the circuit opens until T0 + 61 900, build 2 retries at
    // about T0 + 60 900, after build 1.
    assert!(r.on_response(call.id, http(503), T0 + 59_900).is_empty());
    assert_eq!(r.counters().circuit_open, 1);
    assert!(r.ledger().get(&key(1)).unwrap().next_due_ms < T0 + 60_800);
    let (mut now, mut log) = (T0 + 59_900, Log::default());
    drive_steady(&mut r, &mut now, T0 + 63_000, &mut log, "running", 2);
    assert_eq!(r.counters().builds_expired, 1, "build 1 given up");
    assert_eq!(
        log.lookups_of(2).first(),
        Some(&(T0 + 61_900)),
        "the probe went to build 2"
    );
    assert_eq!(r.counters().circuit_open, 0);
}

/// A success resets the circuit's count of consecutive failures: failures separated by
/// successes never open it.
#[test]
fn success_resets_the_circuits_failure_count() {
    let cfg = r#","circuit_failure_threshold":2,"max_drone_calls_per_sec":100"#;
    let mut r = seen_live(cfg, &[(1, "running", 2)]);
    let (mut now, mut log) = (T0, Log::default());
    let mut answers = 0u32;
    drive(
        &mut r,
        &mut now,
        T0 + 60_000,
        &mut log,
        &mut |n| {
            answers += 1;
            if answers % 2 == 1 {
                http(503)
            } else {
                ok(api_build(n, "running", 2))
            }
        },
        &mut pipeline_ok,
    );
    assert!(answers >= 8, "{answers}");
    assert_eq!(r.counters().circuit_opens, 0);
    assert_eq!(
        r.counters().drone_polls_failed,
        u64::from(answers.div_ceil(2))
    );
}

/// A call is expired after twice its timeout (at least 1 s), not at exactly that age.
#[test]
fn calls_expire_after_twice_their_timeout() {
    let mut r = missed(r#","call_timeout_ms":1000"#, [1]);
    let call = tick_one(&mut r, T0);
    r.tick(T0 + 2000);
    assert!(
        r.is_inflight(call.id),
        "exactly 2 x call_timeout_ms: still waited for"
    );
    assert_eq!(r.counters().calls_expired, 0);
    r.tick(T0 + 2001);
    assert!(!r.is_inflight(call.id));
    assert_eq!(r.counters().calls_expired, 1);
    assert_eq!(r.counters().drone_polls_failed, 1, "expired = failed");
}

/// lookup.rs (on_build, 400/404): the half-open circuit's probe answered 404 or 400 (drone is
/// up, only this build is missing, or its number unreadable to drone) closes the circuit like
/// any other answer of drone. Otherwise, after an outage, one routine 404 leaves the circuit
/// half-open for good, and reconciliation stops without a word.
#[test]
fn a_probe_answered_404_or_400_closes_the_circuit() {
    for status in [404, 400] {
        let cfg = r#","circuit_failure_threshold":1,"circuit_open_ms":1000,"max_drone_calls_per_sec":100,"max_inflight_calls":1"#;
        let mut r = missed(cfg, [1, 2]);
        let first = tick_one(&mut r, T0);
        let down = looked_up(&first).unwrap();
        assert!(r.on_response(first.id, http(503), T0).is_empty());
        assert_eq!(r.counters().circuit_open, 1, "HTTP {status}");
        // The open period passes: the first call out is the probe; drone answers it `status`.
        let mut now = T0;
        let probe = loop {
            now += 100;
            assert!(now < T0 + 10_000, "no probe (HTTP {status})");
            let calls = tick_others(&mut r, now);
            if let Some(call) = calls.into_iter().next() {
                break call;
            }
        };
        let missing = looked_up(&probe).expect("the probe is a build lookup");
        assert!(r.on_response(probe.id, http(status), now).is_empty());
        assert_eq!(r.counters().circuit_open, 0, "HTTP {status} closed it");
        assert_eq!(r.counters().circuit_opens, 1, "HTTP {status}");
        // And calls go on: the other build is looked up and delivered.
        let other = if missing == 1 { 2 } else { 1 };
        assert!(other == down || missing == down, "two builds");
        let mut log = Log::default();
        drive_steady(&mut r, &mut now, T0 + 20_000, &mut log, "success", 3);
        assert!(!log.lookups_of(other).is_empty(), "HTTP {status}");
        assert_eq!(
            log.redeliveries(),
            vec![(other, "success".to_string(), 3)],
            "HTTP {status}"
        );
    }
}

/// mod.rs (is_transient): 5xx, 408 and 429 are drone (or the way to it) being unwell and feed
/// the circuit; another 4xx is an answer about the one build and does not.
#[test]
fn which_drone_answers_feed_the_circuit() {
    for (status, opens) in [(503, 1), (500, 1), (408, 1), (429, 1), (403, 0), (409, 0)] {
        let mut r = Reconciler::new(config(r#","circuit_failure_threshold":1"#), 1);
        r.observe(obs(1, "running", 1, NotDelivered), T0);
        let calls = r.tick(T0);
        let lookup = calls.iter().find(|c| looked_up(c) == Some(1)).unwrap();
        r.on_response(lookup.id, http(status), T0);
        assert_eq!(r.counters().circuit_opens, opens, "HTTP {status}");
        assert_eq!(r.counters().drone_polls_failed, 1, "HTTP {status}");
    }
}

/// lookup.rs (serve_one), budget.rs: decide first, then take a permit. Giving up a build open
/// longer than `max_build_age_ms` takes no drone call, so it takes no token of the rate
/// limit either: at one call a second, the next due build is looked up in the same tick.
#[test]
fn giving_up_a_build_takes_no_token_of_the_rate_limit() {
    let cfg = r#","max_build_age_ms":60000,"max_drone_calls_per_sec":1"#;
    let mut r = Reconciler::new(config(cfg), 1);
    let record = |number: u64, first_seen: u64, due: u64| {
        let mut e = Entry::new(first_seen, Class::Backed);
        e.interval_ms = 1000;
        e.next_due_ms = due;
        common::record(number, e)
    };
    let records = [
        record(1, T0, T0 + 60_001),
        record(2, T0 + 59_000, T0 + 60_002),
    ];
    assert!(r.load_shard(&snapshot::encode_shard(&records), T0 + 60_000));
    let calls = r.tick(T0 + 61_000);
    assert_eq!(r.counters().builds_expired, 1, "build 1 given up");
    let looked: Vec<u64> = calls.iter().filter_map(looked_up).collect();
    assert_eq!(
        looked,
        vec![2],
        "build 2 looked up in the same tick: {calls:?}"
    );
}

/// A tick with nothing due spends no token: the build due next is looked up at the first tick
/// at or after its due time even at 1 call per second.
#[test]
fn ticks_with_nothing_due_spend_no_token() {
    let mut r = seen_live(r#","max_drone_calls_per_sec":1"#, &[(1, "running", 2)]);
    let key = key(1);
    let due = r.ledger().get(&key).unwrap().next_due_ms;
    // Ticks from about half a second before: a token spent on the first of them would not be
    // back (1/s) by the tick after the due time.
    let (mut now, mut log) = (due - 550, Log::default());
    drive_steady(&mut r, &mut now, due + 3000, &mut log, "running", 2);
    let first = log.lookups_of(1)[0];
    assert!(
        first >= due && first < due + 100,
        "due {due}, looked up {first}"
    );
}
