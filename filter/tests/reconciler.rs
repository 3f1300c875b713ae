//! Deterministic scenarios for the reconciler, driven natively: observations, ticks
//! and call answers in, calls out, with a virtual clock.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::world::{lookup, Sim};
use common::*;
use status_sync::core::model::DeliveryOutcome::{self, Delivered, NotDelivered, Refused};
use status_sync::core::reconciler::Reconciler;

/// A simulation (configured with `extra`, seed 1) whose drone holds calls to the token.
fn sim(extra: &str) -> Sim {
    let mut s = Sim::new(config(extra));
    s.r = Reconciler::new(config(extra), 1);
    s.drone.token = Some("t0k3n");
    s
}

/// A simulation (configured with `extra`) in which `webhooks` (number, status, version, the
/// pipeline's answer) passed live, in order, at the start.
fn seen(extra: &str, webhooks: &[(u64, &str, u64, DeliveryOutcome)]) -> Sim {
    let mut s = sim(extra);
    for (number, status, version, outcome) in webhooks {
        s.live(*number, status, *version, *outcome);
    }
    s
}

/// A simulation in which build `number`'s webhooks `transitions` (status, version, the
/// pipeline's answer) passed live, in order, at the start.
fn build(number: u64, transitions: &[(&str, u64, DeliveryOutcome)]) -> Sim {
    let webhooks: Vec<_> = transitions
        .iter()
        .map(|(s, v, o)| (number, *s, *v, *o))
        .collect();
    seen("", &webhooks)
}

/// A simulation (configured with `extra`) in which builds 1..=`count` passed live, running
/// (version 2), and the pipeline answered each `outcome`.
fn running(extra: &str, count: u64, outcome: DeliveryOutcome) -> Sim {
    let webhooks: Vec<_> = (1..=count).map(|n| (n, "running", 2, outcome)).collect();
    seen(extra, &webhooks)
}

/// [`running`] with at most `inflight` drone calls in flight and `rate` a second.
fn limited(inflight: u32, rate: u32, count: u64, outcome: DeliveryOutcome) -> Sim {
    let extra = format!(r#","max_inflight_calls":{inflight},"max_drone_calls_per_sec":{rate}"#);
    running(&extra, count, outcome)
}

#[test]
fn all_webhooks_arrive_no_drone_calls() {
    let mut s = build(1, &[("pending", 1, Delivered)]);
    s.run_unasked(500, "no drone call while fresh");
    s.live(1, "running", 2, Delivered);
    s.run_unasked(500, "no drone call while fresh");
    s.live(1, "success", 3, Delivered);
    assert_eq!(s.r.ledger().len(), 0, "terminal and delivered: forgotten");
    s.run_unasked(60_000, "no drone call after terminal");
    // A late step webhook with an older version does not resurrect it.
    s.live(1, "running", 2, Delivered);
    assert_eq!(s.r.ledger().len(), 0);
    assert_eq!(s.lookups(), 0);
}

#[test]
fn lost_final_webhook_is_recovered_after_stale_after() {
    let mut s = build(7, &[("running", 2, Delivered)]);
    s.run_unasked(600, "fresh");
    assert_eq!(s.lookups(), 0);
    s.run_steady(2000, "success", 3);
    assert_eq!(s.lookups(), 1);
    assert_eq!(
        s.delivered
            .iter()
            .map(|d| (d.number, d.status.as_str(), d.version, d.id.as_str()))
            .collect::<Vec<_>>(),
        vec![(7, "success", 3, "drone-42-7-3")]
    );
    assert_eq!(s.r.ledger().len(), 0);
    assert_eq!(s.r.counters().redeliveries_ok, 1);
    s.run_unasked(30_000, "done");
}

#[test]
fn redelivered_body_is_drone_shaped() {
    let mut s = build(7, &[("running", 2, Delivered)]);
    s.now += 2000;
    let calls = s.r.tick(s.now);
    let lookups: Vec<_> = calls
        .iter()
        .filter(|c| c.header(":path").unwrap().contains("/builds/"))
        .collect();
    assert_eq!(lookups.len(), 1);
    let deliver =
        s.r.on_response(lookups[0].id, ok(api_build(7, "failure", 3)), s.now);
    assert_eq!(deliver.len(), 1);
    let d = &deliver[0];
    let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(body["event"], "build");
    assert_eq!(body["action"], "updated");
    assert_eq!(body["repo"]["slug"], "octocat/hello-world");
    assert_eq!(body["repo"]["build"]["status"], "failure");
    assert_eq!(body["build"]["status"], "failure");
    assert_eq!(body["build"]["version"], 3);
    assert_eq!(body["system"]["host"], "drone.example.com");
    assert_eq!(d.header("content-type"), Some("application/json"));
    assert_eq!(d.header("webhook-id"), Some("drone-42-7-3"));
    assert!(d.header("signature").is_none(), "no secret configured");
}

#[test]
fn redeliveries_are_signed_when_a_secret_is_set() {
    let mut s = sim(r#","webhook_secret":"s3cret","signature_mode":"monitor""#);
    s.live(7, "running", 2, Delivered);
    s.now += 2000;
    let calls = s.r.tick(s.now);
    let deliver =
        s.r.on_response(calls[0].id, ok(api_build(7, "success", 3)), s.now);
    let d = &deliver[0];
    status_sync::core::signature::verify(
        b"s3cret",
        d.header("date"),
        d.header("digest"),
        d.header("signature"),
        &d.body,
        s.now,
        1000,
    )
    .unwrap();
}

#[test]
fn pipeline_500_on_live_webhook_is_redelivered_at_once() {
    let mut s = build(
        3,
        &[("running", 2, Delivered), ("success", 3, NotDelivered)],
    );
    s.run_steady(200, "success", 3);
    assert_eq!(s.delivered.len(), 1, "re-delivered on the next tick");
    assert_eq!(s.delivered[0].status, "success");
    assert_eq!(s.r.ledger().len(), 0);
}

#[test]
fn pipeline_400_is_not_retried() {
    let mut s = build(3, &[("running", 2, Delivered), ("success", 3, Refused)]);
    assert_eq!(s.r.ledger().len(), 0, "refused final: settled");
    s.run_unasked(60_000, "no poll");
    // A refused running transition is not re-sent either; only newer drone states are.
    s.live(4, "running", 2, Refused);
    s.run_steady(1500, "running", 2);
    assert!(s.delivered.is_empty());
}

/// A re-delivery the pipeline answered 5xx is retried (a fresh lookup, then the delivery) after
/// a backoff that grows from max(tick_ms, 1 s): the second wait is about twice the first, each
/// within the ±20 % jitter. Asserted for many seeds, not one lucky one.
#[test]
fn failed_redelivery_is_retried_with_backoff() {
    for seed in 1..=200 {
        let mut s = sim("");
        s.r = Reconciler::new(config(""), seed);
        s.live(3, "success", 3, NotDelivered);
        let start = s.now;
        let mut times = vec![];
        while s.delivered.is_empty() && s.now < start + 30_000 {
            let drone = &mut |n| ok(api_build(n, "success", 3));
            s.run_with(100, &mut lookup(drone), &mut |now| {
                times.push(now);
                http(if times.len() < 3 { 503 } else { 200 })
            });
        }
        assert_eq!(times.len(), 3, "seed {seed}: {times:?}");
        let (first, second) = (times[1] - times[0], times[2] - times[1]);
        // 1 s then 2 s, each ±20 %, rounded up to the next 100 ms tick.
        assert!((800..=1300).contains(&first), "seed {seed}: {times:?}");
        assert!((1600..=2500).contains(&second), "seed {seed}: {times:?}");
        assert_eq!(s.delivered.len(), 1, "seed {seed}");
        assert_eq!(s.r.counters().redeliveries_failed, 2, "seed {seed}");
        assert_eq!(s.r.counters().redeliveries_ok, 1, "seed {seed}");
        assert_eq!(s.r.ledger().len(), 0, "seed {seed}");
    }
}

#[test]
fn unchanged_build_is_polled_at_growing_intervals() {
    let mut s = build(5, &[("running", 2, Delivered)]);
    let mut times = vec![];
    let start = s.now;
    while s.now < start + 40_000 {
        let before = s.lookups();
        s.run_steady(100, "running", 2);
        if s.lookups() > before {
            times.push(s.now - start);
        }
    }
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(times[0] >= 800 && times[0] <= 1300, "{times:?}");
    // 1 s, 2 s, 4 s, 8 s (cap), 8 s ... each within jitter.
    assert!(gaps[0] >= 1500 && gaps[0] <= 2500, "{gaps:?}");
    assert!(gaps[1] >= 3100 && gaps[1] <= 4900, "{gaps:?}");
    for g in &gaps[3..] {
        assert!(
            *g >= 6300 && *g <= 9700,
            "capped at max_poll_interval_ms: {gaps:?}"
        );
    }
    assert!(s.delivered.is_empty());
}

#[test]
fn older_drone_versions_are_never_delivered() {
    let mut s = build(5, &[("running", 4, Delivered)]);
    s.run_steady(5000, "running", 3);
    assert!(s.delivered.is_empty());
}

#[test]
fn drone_outage_costs_a_trickle_then_recovers() {
    let mut s = limited(16, 100, 50, Delivered);
    // Drone down for 10 minutes.
    s.answering(600_000, &mut |_| http(503));
    let outage_calls = s.lookups();
    // threshold (5) + up to inflight-1 racing + one probe per open period (2 s doubling to 8 s).
    // The first tick's 16 calls (all in flight before the circuit opens), then one probe per
    // open period (2 s, 4 s, then 8 s): 16 + 2 + (600 - 14) / 8 = 91, give or take a tick.
    assert!((88..=94).contains(&outage_calls), "{outage_calls}");
    assert!(s.r.counters().circuit_opens >= 1);
    assert_eq!(s.r.counters().circuit_open, 1);
    // Drone back: everything converges.
    s.run_steady(120_000, "success", 3);
    assert_eq!(s.delivered.len(), 50);
    assert_eq!(s.r.ledger().len(), 0);
    assert_eq!(s.r.counters().circuit_open, 0);
}

#[test]
fn not_found_builds_are_dropped_and_counted() {
    let mut s = build(9, &[("running", 2, Delivered)]);
    s.answering(3000, &mut |_| no_rows());
    assert_eq!(s.r.ledger().len(), 0);
    assert_eq!(s.r.counters().builds_not_found, 1);
    assert_eq!(
        s.r.counters().giveups,
        1,
        "a build drone does not have is given up"
    );
}

#[test]
fn full_ledger_evicts_and_counts() {
    let s = running(r#","max_tracked_builds":10"#, 15, Delivered);
    assert_eq!(s.r.ledger().len(), 10);
    assert_eq!(s.r.counters().builds_evicted, 5, "the oldest five");
    assert_eq!(s.r.counters().builds_tracked, 10);
}

/// Drone answers every lookup (the circuit stays closed) and a hundred builds are due: the
/// in-flight budget bounds the calls of a tick, the token bucket the calls over time (a burst
/// of one second, then the rate), and the bucket is what binds: the calls reach the rate.
#[test]
fn budget_and_rate_limit_bound_calls_per_tick() {
    let mut s = limited(3, 5, 100, NotDelivered);
    let calls = s.r.tick(s.now);
    assert_eq!(calls.len(), 3, "in-flight budget");
    assert!(
        s.r.tick(s.now).is_empty(),
        "the budget is held by the calls"
    );
    for c in calls {
        let deliver = s.r.on_response(c.id, ok(api_build(0, "running", 2)), s.now);
        assert!(deliver.is_empty(), "answer for another build: a failure");
    }
    // The burst of one second had 5 tokens: 2 left.
    assert_eq!(s.r.tick(s.now).len(), 2);
    assert!(s.r.tick(s.now).is_empty());
    // Now every answer is good (and re-delivered at once): for 10 s, calls at 5/s.
    let start = s.now;
    let mut drone_at = vec![];
    while s.now < start + 10_000 {
        s.now += 100;
        let calls = s.r.tick(s.now);
        assert!(calls.len() <= 3, "in-flight budget");
        let (drone, delivered) = (&mut s.drone, &mut s.delivered);
        answer_all(&mut s.r, s.now, calls, &mut |_, call, now| {
            if call.cluster == "drone" {
                drone_at.push(now);
            }
            let running = &mut |n| ok(api_build(n, "running", 3));
            let builds = &mut lookup(running);
            Some(Sim::answer(
                drone,
                delivered,
                call,
                now,
                builds,
                &mut |_| http(200),
            ))
        });
    }
    assert_eq!(
        s.r.counters().circuit_opens,
        0,
        "the bucket limits, not the circuit"
    );
    // At most rate x window + 1 in any window of whole seconds; 10 s make 50 calls, the
    // bucket being empty at the start.
    for (i, t) in drone_at.iter().enumerate() {
        let in_window = drone_at[i..].iter().take_while(|u| **u < t + 1000).count();
        assert!(in_window <= 6, "{in_window} calls in the second from {t}");
    }
    assert!(
        (49..=51).contains(&drone_at.len()),
        "{} calls in 10 s",
        drone_at.len()
    );
    assert_eq!(
        s.delivered.len(),
        drone_at.len(),
        "each lookup re-delivered v3"
    );
}

#[test]
fn lost_answers_expire_and_free_the_budget() {
    let mut s = seen(
        r#","max_inflight_calls":1,"call_timeout_ms":1000"#,
        &[
            (1, "running", 2, NotDelivered),
            (2, "running", 2, NotDelivered),
        ],
    );
    let first = s.r.tick(s.now);
    assert_eq!(first.len(), 1);
    assert!(s.r.tick(s.now + 500).is_empty(), "budget held by the call");
    let later = s.r.tick(s.now + 2500);
    assert_eq!(later.len(), 1, "expired after 2x timeout");
    assert_eq!(s.r.counters().calls_expired, 1);
    // The late answer of the expired call is ignored.
    assert!(s
        .r
        .on_response(first[0].id, ok(api_build(1, "success", 3)), s.now + 2600)
        .is_empty());
}

#[test]
fn unknown_repository_is_fetched_before_redelivery() {
    let mut s = sim("");
    let mut o = obs(7, "running", 2, Delivered);
    o.webhook_mut().repo_json = None;
    s.r.observe(o, s.now);
    s.run_steady(3000, "success", 3);
    assert_eq!(s.lookups(), 1, "the build");
    let repo_calls = s.drone.calls_to(|p| p == "/api/repos/octocat/hello-world");
    assert!(repo_calls >= 1, "and the repository, for its JSON");
    assert_eq!(s.delivered.len(), 1);
}

#[test]
fn snapshot_lets_a_new_leader_continue() {
    let mut s = sim("");
    for n in 1..=40 {
        s.live(n, "running", 2, Delivered);
    }
    let shards = s.r.take_dirty_shards();
    assert!(!shards.is_empty());
    assert!(s.r.take_dirty_shards().is_empty(), "nothing changed since");
    let mut next = Reconciler::new(config(""), 2);
    for (_, bytes) in &shards {
        assert!(next.load_shard(bytes, s.now));
    }
    assert_eq!(next.ledger().len(), 40);
    let mut s2 = sim("");
    (s2.r, s2.now) = (next, s.now);
    s2.run_steady(5000, "success", 3);
    assert_eq!(s2.delivered.len(), 40);
    assert_eq!(s2.r.ledger().len(), 0);
}

#[test]
fn created_after_running_does_not_regress() {
    let mut s = build(2, &[("running", 2, Delivered), ("pending", 1, Delivered)]);
    s.run_steady(1500, "running", 2);
    assert!(
        s.delivered.is_empty(),
        "drone's v2 is what the pipeline has"
    );
}

#[test]
fn builds_whose_every_webhook_was_lost_are_found_by_number() {
    let mut s = seen(r#","max_gap_fill":3"#, &[(10, "success", 3, Delivered)]);
    assert_eq!(s.r.ledger().len(), 0);
    // Builds 11..=15 never reached us; 16 does. Only the 3 newest missing are looked up.
    s.live(16, "running", 2, Delivered);
    assert_eq!(s.r.counters().builds_gap_filled, 3);
    s.answering(1500, &mut |n| match n {
        16 => ok(api_build(n, "running", 2)),
        14 => ok(api_build(n, "declined", 4)),
        _ => ok(api_build(n, "success", 4)),
    });
    let mut got: Vec<(u64, String)> = s
        .delivered
        .iter()
        .map(|d| (d.number, d.status.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (13, "success".into()),
            (14, "declined".into()),
            (15, "success".into())
        ]
    );
    // No gap below the first build ever seen, and none for consecutive numbers.
    s.live(17, "running", 2, Delivered);
    assert_eq!(s.r.counters().builds_gap_filled, 3);
}

#[test]
fn a_snapshot_from_slower_settings_is_rescheduled_to_the_new_ones() {
    let slow = r#","stale_after_ms":600000,"max_poll_interval_ms":900000"#;
    let mut old = sim(slow);
    old.r.observe(obs(1, "running", 2, Delivered), old.now);
    let shards = old.r.take_dirty_shards();
    let mut s = sim("");
    for (_, bytes) in &shards {
        assert!(s.r.load_shard(bytes, s.now));
    }
    s.run_steady(2000, "success", 3);
    assert_eq!(s.delivered.len(), 1, "polled within the new stale_after_ms");
}

#[test]
fn scanned_repositories_reveal_builds_that_never_sent_a_webhook() {
    let mut s = sim(r#","scan_repos":["octocat/hello-world"],"scan_interval_ms":10000"#);
    s.drone.list = vec![(20u64, "success", 3u64)];
    let scans = |s: &Sim| {
        s.drone
            .calls_to(|p| p.starts_with("/api/repos/octocat/hello-world/builds?"))
    };
    // First listing: the baseline (build 20 happened before we watched).
    let run = |s: &mut Sim, ms: u64| {
        let list = s.drone.list.clone();
        s.answering(ms, &mut |n| {
            let (_, st, v) = list.iter().find(|b| b.0 == n).unwrap();
            ok(api_build(n, st, *v))
        });
    };
    run(&mut s, 2000);
    assert_eq!(scans(&s), 1);
    assert!(s.delivered.is_empty(), "the baseline delivers nothing");
    // Builds 21 and 22 run and finish; not one of their webhooks reaches us.
    s.drone.list.insert(0, (21, "failure", 3));
    s.drone.list.insert(0, (22, "declined", 2));
    run(&mut s, 12_000);
    assert_eq!(scans(&s), 2);
    let mut got: Vec<(u64, String)> = s
        .delivered
        .iter()
        .map(|d| (d.number, d.status.clone()))
        .collect();
    got.sort();
    assert_eq!(got, vec![(21, "failure".into()), (22, "declined".into())]);
    assert_eq!(s.r.counters().builds_scan_found, 2);
    assert_eq!(s.r.ledger().len(), 0);
}

#[test]
fn a_cancelled_build_is_watched_for_teardowns_rewrite() {
    let mut s = build(8, &[("running", 2, Delivered), ("killed", 3, Delivered)]);
    assert_eq!(s.r.ledger().len(), 1, "kept a while");
    // Teardown rewrote it (killed v4) and that webhook was lost.
    s.run_steady(3000, "killed", 4);
    let got: Vec<(&str, u64)> = s
        .delivered
        .iter()
        .map(|d| (d.status.as_str(), d.version))
        .collect();
    assert_eq!(got, vec![("killed", 4)]);
    s.run_steady(60_000, "killed", 4);
    assert_eq!(
        s.r.ledger().len(),
        0,
        "forgotten after 2 x max_poll_interval_ms unchanged"
    );
    // Looks at 1, 2, 4, 8, 8 s... after the change until 16 s unchanged: about five.
    assert!(
        (3..=8).contains(&s.lookups()),
        "a handful of looks: {}",
        s.lookups()
    );
}

#[test]
fn watermarks_survive_a_leader_change() {
    let mut s = build(1, &[("success", 3, Delivered)]);
    let marks = s.r.take_watermarks().expect("changed");
    assert!(s.r.take_watermarks().is_none(), "only when changed");
    let mut next = sim("");
    assert!(next.r.load_watermarks(&marks));
    // Build 2's only webhook was lost before the change; build 3 arrives after it.
    next.r.observe(obs(3, "pending", 1, Delivered), next.now);
    next.answering(1500, &mut |n| {
        ok(api_build(n, if n == 2 { "declined" } else { "pending" }, 2))
    });
    assert!(
        next.delivered
            .iter()
            .any(|d| d.number == 2 && d.status == "declined"),
        "{:?}",
        next.delivered
    );
}
