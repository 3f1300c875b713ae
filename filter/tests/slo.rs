//! The SLO metrics through the reconciler, driven natively with a virtual clock: the oldest
//! undelivered age grows while a transition the pipeline lacks cannot be re-delivered, returns
//! to 0 once it is, records the recovery delay, and never sticks on a build given up.

mod common;

use common::{answer_all, api_build as api_body, config, http, is_drone, obs, ok};
use status_sync::core::model::DeliveryOutcome::{Delivered, NotDelivered};
use status_sync::core::reconciler::{CallResult, Reconciler};

fn reconciler(extra: &str) -> Reconciler {
    Reconciler::new(config(extra), 1)
}

fn api_build(number: u64, status: &str, version: u64) -> CallResult {
    ok(api_body(number, status, version))
}

/// Ticks every 100 ms for `ms`, answering drone with `drone()` and the pipeline with
/// `pipeline`; returns the oldest undelivered age (s) seen at each tick.
fn run(
    r: &mut Reconciler,
    now: &mut u64,
    ms: u64,
    drone: &dyn Fn() -> CallResult,
    pipeline: u16,
) -> Vec<u64> {
    let mut ages = Vec::new();
    let end = *now + ms;
    while *now < end {
        *now += 100;
        let calls = r.tick(*now);
        ages.push(r.counters().oldest_undelivered_seconds);
        answer_all(r, *now, calls, &mut |_, call, _| {
            Some(if is_drone(call) {
                drone()
            } else {
                http(pipeline)
            })
        });
    }
    ages
}

fn down() -> CallResult {
    http(503)
}

#[test]
fn a_transition_the_pipeline_failed_ages_until_redelivered() {
    let mut r = reconciler("");
    let mut now = 1_000_000;
    // The pipeline answered 503 to the final webhook while drone's API is down.
    r.observe(obs(7, "success", 3, NotDelivered), now);
    let ages = run(&mut r, &mut now, 20_000, &down, 503);
    assert!(ages.windows(2).all(|w| w[0] <= w[1]), "{ages:?}");
    assert_eq!(ages.last(), Some(&20), "{ages:?}");
    assert_eq!(r.counters().transitions_missing, 1);
    assert_eq!(r.counters().transitions_lost, 1);
    assert!(r.take_recovery_delays().is_empty());
    // Drone and the pipeline are back: re-delivered, caught up, the delay recorded.
    let success = || api_build(7, "success", 3);
    let ages = run(&mut r, &mut now, 20_000, &success, 200);
    assert_eq!(ages.last(), Some(&0), "{ages:?}");
    assert_eq!(r.counters().transitions_missing, 0);
    assert_eq!(r.counters().transitions_recovered, 1);
    let delays = r.take_recovery_delays();
    assert_eq!(delays.len(), 1);
    assert!((20_000..=40_000).contains(&delays[0]), "{delays:?}");
}

#[test]
fn a_lost_webhook_is_missing_from_when_drone_shows_it() {
    let mut r = reconciler("");
    let mut now = 1_000_000;
    // The pipeline has running v2; drone's success v3 webhook was lost.
    r.observe(obs(8, "running", 2, Delivered), now);
    let success = || api_build(8, "success", 3);
    run(&mut r, &mut now, 10_000, &success, 200);
    assert_eq!(r.counters().transitions_lost, 1);
    assert_eq!(r.counters().transitions_recovered, 1);
    assert_eq!(r.counters().oldest_undelivered_seconds, 0);
    // Found and re-delivered in the same tick: the delay is the delivery's own.
    assert_eq!(r.take_recovery_delays(), vec![0]);
}

#[test]
fn a_build_given_up_leaves_the_gauge() {
    let mut r = reconciler(r#","max_build_age_ms":60000"#);
    let mut now = 1_000_000;
    r.observe(obs(9, "success", 3, NotDelivered), now);
    let ages = run(&mut r, &mut now, 30_000, &down, 503);
    assert!(ages.last().is_some_and(|a| *a >= 29), "{ages:?}");
    // Past max_build_age_ms the build is given up (and counted there): the gauge returns
    // to 0 instead of growing forever, and no recovery is recorded.
    let ages = run(&mut r, &mut now, 90_000, &down, 503);
    assert_eq!(r.counters().giveups, 1);
    assert_eq!(ages.last(), Some(&0), "{ages:?}");
    assert_eq!(r.counters().transitions_missing, 0);
    assert!(r.take_recovery_delays().is_empty());
}
