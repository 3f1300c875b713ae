//! One test per planner behaviour that a mutation of the core showed unpinned (issue 10): each
//! fails when the behaviour it names is weakened. Driven natively with a virtual clock.
//!
//! Tests marked "live settles" rely on a live webhook the pipeline acknowledged settling a
//! build; where webhooks are split into verified evidence and unverified hints, their
//! observations are the verified kind (built in `common::obs`).

// Helpers outside #[test] functions unwrap (clippy.toml allows it only inside them).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use status_sync::core::model::{BuildKey, DeliveryOutcome};
use status_sync::core::reconciler::{CallResult, OutgoingCall, Reconciler};

fn key(number: u64) -> BuildKey {
    BuildKey {
        repo_id: REPO_ID,
        number,
    }
}

fn pipeline_ok(_: &OutgoingCall) -> CallResult {
    http(200)
}

fn one(calls: Vec<OutgoingCall>) -> OutgoingCall {
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls.into_iter().next().unwrap()
}

/// Ticks at `now`, answers drone's calls other than build lookups as drone would (see
/// [`other_drone_call`]: repository discovery finds nothing new), and returns the one call
/// left.
fn tick_one(r: &mut Reconciler, now: u64) -> OutgoingCall {
    one(tick_others(r, now))
}

/// Ticks at `now`, answers drone's calls other than build lookups as drone would, and returns
/// the build lookups and re-deliveries.
fn tick_others(r: &mut Reconciler, now: u64) -> Vec<OutgoingCall> {
    let mut calls = r.tick(now);
    let mut log = Log::default();
    calls.retain(|c| {
        if !is_drone(c) || looked_up(c).is_some() {
            return true;
        }
        let answer = other_drone_call(r, c, &mut log, &mut |n| ok(api_build(n, "running", 1)));
        assert!(r.on_response(c.id, answer, now).is_empty());
        false
    });
    calls
}

/// The rate limit refuses the half-open probe's call: the probe is given back, and the next
/// tick with a token makes it. Otherwise one drone failure stops the reconciler for good.
#[test]
fn probe_refused_by_the_rate_limit_is_given_back() {
    let cfg = r#","circuit_failure_threshold":1,"circuit_open_ms":100,"max_drone_calls_per_sec":1,"max_inflight_calls":1"#;
    let mut r = Reconciler::new(config(cfg), 1);
    r.observe(obs(1, "running", 2, DeliveryOutcome::NotDelivered), T0);
    r.observe(obs(2, "running", 2, DeliveryOutcome::NotDelivered), T0);
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
    let mut r = Reconciler::new(config(cfg), 1);
    for n in 1..=3 {
        r.observe(obs(n, "running", 2, DeliveryOutcome::NotDelivered), T0);
    }
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
    let mut r = Reconciler::new(config(cfg), 1);
    r.observe(obs(1, "running", 2, DeliveryOutcome::Delivered), T0);
    // Build 1 is seen again just before it expires: due at about T0 + 60 500.
    r.observe(
        obs(1, "running", 2, DeliveryOutcome::Delivered),
        T0 + 59_500,
    );
    r.observe(
        obs(2, "running", 2, DeliveryOutcome::NotDelivered),
        T0 + 59_500,
    );
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
    let mut r = Reconciler::new(config(cfg), 1);
    r.observe(obs(1, "running", 2, DeliveryOutcome::Delivered), T0);
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

/// Consecutive failed lookups of a build back off exponentially from `stale_after_ms` (1 s)
/// up to `max_poll_interval_ms` (8 s), each delay within the ±20 % jitter.
#[test]
fn failure_backoff_grows_to_the_cap() {
    let cfg = r#","circuit_failure_threshold":1000"#;
    let mut r = Reconciler::new(config(cfg), 1);
    r.observe(obs(5, "running", 2, DeliveryOutcome::NotDelivered), T0);
    let (mut now, mut log) = (T0 - 100, Log::default());
    drive(
        &mut r,
        &mut now,
        T0 + 60_000,
        &mut log,
        &mut |_| CallResult::Failed,
        &mut pipeline_ok,
    );
    let times = log.lookups_of(5);
    assert_eq!(times[0], T0);
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 6, "{gaps:?}");
    for (i, gap) in gaps.iter().enumerate() {
        let base = (1000u64 << i.min(3)) as f64;
        // jitter ±20 %, plus up to one tick of rounding up
        assert!(
            (*gap as f64) >= base * 0.8 && (*gap as f64) <= base * 1.2 + 100.0,
            "gap {i}: {gaps:?}"
        );
    }
    assert_eq!(
        r.ledger().get(&key(5)).unwrap().failures as usize,
        times.len()
    );
}

/// Build 7 (running v2, acknowledged) is looked up at T0 + 2 s; before drone answers, a live
/// webhook of (`status`, `version`) passes and the pipeline acknowledges it. Returns the
/// reconciler and the lookup still in flight.
fn lookup_overtaken_by_live(status: &str, version: u64) -> (Reconciler, OutgoingCall) {
    let mut r = Reconciler::new(config(""), 1);
    r.observe(obs(7, "running", 2, DeliveryOutcome::Delivered), T0);
    let lookup = tick_one(&mut r, T0 + 2000);
    r.observe(
        obs(7, status, version, DeliveryOutcome::Delivered),
        T0 + 2010,
    );
    (r, lookup)
}

/// A drone answer that arrives after a live final webhook the pipeline acknowledged never
/// re-delivers drone's older state (live settles).
#[test]
fn drone_answer_after_a_live_final_webhook_delivers_nothing() {
    let (mut r, lookup) = lookup_overtaken_by_live("success", 3);
    assert_eq!(r.ledger().len(), 0, "finished");
    let out = r.on_response(lookup.id, ok(api_build(7, "running", 2)), T0 + 2050);
    assert!(out.is_empty(), "{out:?}");
    let later = tick_others(&mut r, T0 + 60_000);
    assert!(later.is_empty(), "{later:?}");
}

/// A drone answer older than a newer live webhook the pipeline acknowledged during the lookup
/// is not re-delivered; a newer one still is (live settles).
#[test]
fn drone_answer_after_a_newer_live_webhook_delivers_only_newer() {
    let (mut r, lookup) = lookup_overtaken_by_live("running", 4);
    let out = r.on_response(lookup.id, ok(api_build(7, "running", 3)), T0 + 2050);
    assert!(
        out.is_empty(),
        "v3 is older than the acknowledged v4: {out:?}"
    );
    // The next lookup finds v5: that one goes out.
    let (mut now, mut log) = (T0 + 2050, Log::default());
    drive_steady(&mut r, &mut now, T0 + 6000, &mut log, "running", 5);
    assert_eq!(log.redeliveries(), vec![(7, "running".to_string(), 5)]);
}

/// A webhook arriving while a build's lookup is in flight (even one the pipeline missed) does
/// not start a second lookup of the same build.
#[test]
fn no_second_concurrent_lookup_of_a_build() {
    let mut r = Reconciler::new(config(r#","max_inflight_calls":8"#), 1);
    r.observe(obs(3, "running", 2, DeliveryOutcome::NotDelivered), T0);
    let lookup = tick_one(&mut r, T0);
    r.observe(obs(3, "running", 2, DeliveryOutcome::NotDelivered), T0 + 10);
    r.observe(obs(3, "running", 2, DeliveryOutcome::Delivered), T0 + 20);
    for t in [T0 + 100, T0 + 5000] {
        let calls = tick_others(&mut r, t);
        assert!(calls.is_empty(), "second lookup at {t}: {calls:?}");
    }
    assert_eq!(r.inflight(), 1);
    let deliver = one(r.on_response(lookup.id, ok(api_build(3, "running", 3)), T0 + 5000));
    assert_eq!(redelivered(&deliver), (3, "running".to_string(), 3));
}

/// A re-delivery the pipeline refused with 4xx is final: counted in `redeliveries_refused`, not
/// retried while drone reports the same version; a newer version is still delivered.
#[test]
fn refused_redelivery_is_final_and_counted() {
    let mut r = Reconciler::new(config(""), 1);
    r.observe(obs(3, "running", 2, DeliveryOutcome::NotDelivered), T0);
    let lookup = tick_one(&mut r, T0);
    let deliver = one(r.on_response(lookup.id, ok(api_build(3, "running", 2)), T0));
    assert!(r.on_response(deliver.id, http(422), T0).is_empty());
    assert_eq!(r.counters().redeliveries_refused, 1);
    assert_eq!(r.counters().redeliveries_failed, 0);
    assert_eq!(r.ledger().get(&key(3)).unwrap().settled_version, 2);
    let (mut now, mut log) = (T0, Log::default());
    drive_steady(&mut r, &mut now, T0 + 30_000, &mut log, "running", 2);
    assert!(log.drone_calls() >= 3, "still watched");
    assert!(log.redeliveries().is_empty(), "{:?}", log.redeliveries());
    // The final state is newer: delivered, refused too, and then the build is done.
    drive(
        &mut r,
        &mut now,
        T0 + 60_000,
        &mut log,
        &mut |n| ok(api_build(n, "failure", 3)),
        &mut |_| http(400),
    );
    assert_eq!(log.redeliveries(), vec![(3, "failure".to_string(), 3)]);
    assert_eq!(r.counters().redeliveries_refused, 2);
    assert_eq!(r.ledger().len(), 0);
    assert_eq!(r.counters().redeliveries_ok, 0);
}

/// 408 and 429 are not refusals: the pipeline asks to be asked again.
#[test]
fn pipeline_408_and_429_are_retried() {
    for status in [408, 429] {
        let mut r = Reconciler::new(config(""), 1);
        r.observe(obs(3, "success", 3, DeliveryOutcome::NotDelivered), T0);
        let (mut now, mut log) = (T0 - 100, Log::default());
        let mut answers = vec![status, 200].into_iter();
        drive(
            &mut r,
            &mut now,
            T0 + 10_000,
            &mut log,
            &mut |n| ok(api_build(n, "success", 3)),
            &mut |_| http(answers.next().unwrap_or(200)),
        );
        assert_eq!(log.redeliveries().len(), 2, "{status}");
        assert_eq!(r.counters().redeliveries_failed, 1);
        assert_eq!(r.counters().redeliveries_refused, 0);
        assert_eq!(r.counters().redeliveries_ok, 1);
    }
}

/// An acknowledgement of an older re-delivery that arrives after a newer live webhook was
/// acknowledged never moves the settled version back (live settles).
#[test]
fn stale_ack_never_moves_the_settled_version_back() {
    let mut r = Reconciler::new(config(""), 1);
    r.observe(obs(9, "running", 2, DeliveryOutcome::NotDelivered), T0);
    let lookup = tick_one(&mut r, T0);
    let deliver = one(r.on_response(lookup.id, ok(api_build(9, "running", 3)), T0 + 10));
    assert_eq!(redelivered(&deliver).2, 3);
    r.observe(obs(9, "running", 4, DeliveryOutcome::Delivered), T0 + 20);
    assert!(r.on_response(deliver.id, http(200), T0 + 30).is_empty());
    assert_eq!(r.ledger().get(&key(9)).unwrap().settled_version, 4);
    let (mut now, mut log) = (T0 + 30, Log::default());
    drive_steady(&mut r, &mut now, T0 + 20_000, &mut log, "running", 4);
    assert!(log.drone_calls() >= 2);
    assert!(log.redeliveries().is_empty(), "{:?}", log.redeliveries());
}

/// A late, lower build number fills no gap to the lowest number seen (issue 20, finding 1).
#[test]
fn late_lower_number_fills_no_gap() {
    let mut r = gap_fill_capped(3, &[(50, "running", 2), (2, "success", 3)]);
    assert_eq!(r.counters().builds_gap_filled, 0);
    assert_eq!(tracked(&r), vec![50]);
    r.observe(obs(1, "success", 3, DeliveryOutcome::Delivered), T0);
    assert_eq!(r.counters().builds_gap_filled, 0);
}

/// Gap filling upward also takes only the `max_gap_fill` numbers just below the new one.
#[test]
fn upward_gap_fill_is_capped_and_not_due_at_once() {
    let mut r = gap_fill_capped(2, &[(10, "success", 3), (40, "running", 2)]);
    assert_eq!(tracked(&r), vec![38, 39, 40]);
    assert!(r.tick(T0 + 700).is_empty(), "not stale yet");
    assert_eq!(r.ledger().due_count(T0 + 1200), 3);
}

/// A cancelled build stays watched after unchanged polls (drone's teardown may still rewrite
/// it), and is forgotten only after twice `max_poll_interval_ms` without change.
#[test]
fn cancelled_build_is_watched_through_unchanged_polls() {
    let mut r = seen_live("", &[(8, "running", 2), (8, "killed", 3)]);
    let (mut now, mut log) = (T0, Log::default());
    drive_steady(&mut r, &mut now, T0 + 8000, &mut log, "killed", 3);
    assert!(log.lookups_of(8).len() >= 2, "{:?}", log.lookups_of(8));
    assert_eq!(r.ledger().len(), 1, "watched after unchanged polls");
    // Teardown rewrites it; that webhook is lost; the next look (within the longest interval,
    // 8 s + 20 % jitter) delivers it.
    let deadline = log.lookups_of(8).last().unwrap() + 9_700;
    while now < deadline && log.redeliveries().is_empty() {
        let until = now + 100;
        drive_steady(&mut r, &mut now, until, &mut log, "killed", 4);
    }
    assert_eq!(log.redeliveries(), vec![(8, "killed".to_string(), 4)]);
    // Then unchanged: forgotten 2 x 8 s after the last change, not before.
    let changed = *log.lookups_of(8).last().unwrap();
    let mut gone_at = None;
    while now < changed + 40_000 && gone_at.is_none() {
        let until = now + 100;
        drive_steady(&mut r, &mut now, until, &mut log, "killed", 4);
        if r.ledger().is_empty() {
            gone_at = Some(now);
        }
    }
    let gone_at = gone_at.expect("forgotten");
    assert!(gone_at - changed >= 16_000, "{}", gone_at - changed);
    assert!(r.ledger().tombstone(&key(8)) == Some(4));
}

/// The repository is fetched before a re-delivery (no webhook brought its JSON); meanwhile
/// the same or a newer version passes live and the pipeline acknowledges it: the held drone
/// answer is not delivered, and the build is looked at again later (live settles). Found by
/// `planner_props`.
#[test]
fn answer_held_for_a_repository_fetch_is_not_delivered_after_a_newer_live_webhook() {
    for live in [2, 3] {
        let mut r = Reconciler::new(config(""), 1);
        let mut o = obs(2, "pending", 1, DeliveryOutcome::Delivered);
        o.webhook.repo_json = None;
        r.observe(o, T0);
        let lookup = tick_one(&mut r, T0 + 2000);
        let fetch = one(r.on_response(lookup.id, ok(api_build(2, "running", 2)), T0 + 2000));
        assert_eq!(looked_up(&fetch), None, "the repository");
        let mut o = obs(2, "running", live, DeliveryOutcome::Delivered);
        o.webhook.repo_json = None;
        r.observe(o, T0 + 2010);
        let out = r.on_response(fetch.id, ok(REPO_JSON.as_bytes().to_vec()), T0 + 2020);
        assert!(out.is_empty(), "live v{live}: {out:?}");
        let (mut now, mut log) = (T0 + 2020, Log::default());
        drive_steady(&mut r, &mut now, T0 + 6000, &mut log, "success", 4);
        assert_eq!(log.redeliveries(), vec![(2, "success".to_string(), 4)]);
        assert_eq!(r.ledger().len(), 0);
    }
}

/// Every drone answer is counted: a 404 and a readable build as `drone_polls_ok`, anything
/// else as `drone_polls_failed`.
#[test]
fn drone_answers_are_counted() {
    let mut r = Reconciler::new(config(""), 1);
    r.observe(obs(1, "running", 2, DeliveryOutcome::NotDelivered), T0);
    r.observe(obs(2, "running", 2, DeliveryOutcome::NotDelivered), T0);
    r.observe(obs(3, "running", 2, DeliveryOutcome::NotDelivered), T0);
    let calls = r.tick(T0);
    assert_eq!(calls.len(), 3);
    for c in &calls {
        let answer = match looked_up(c).unwrap() {
            1 => ok(api_build(1, "running", 2)),
            2 => http(404),
            _ => http(500),
        };
        r.on_response(c.id, answer, T0);
    }
    let c = r.counters();
    assert_eq!((c.drone_polls_ok, c.drone_polls_failed), (2, 1));
    assert_eq!((c.builds_not_found, c.giveups), (1, 1));
}

/// A call is expired after twice its timeout (at least 1 s), not at exactly that age.
#[test]
fn calls_expire_after_twice_their_timeout() {
    let mut r = Reconciler::new(config(r#","call_timeout_ms":1000"#), 1);
    r.observe(obs(1, "running", 2, DeliveryOutcome::NotDelivered), T0);
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
        let mut r = Reconciler::new(config(cfg), 1);
        r.observe(obs(1, "running", 2, DeliveryOutcome::NotDelivered), T0);
        r.observe(obs(2, "running", 2, DeliveryOutcome::NotDelivered), T0);
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
