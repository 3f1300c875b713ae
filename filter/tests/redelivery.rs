//! Re-deliveries to the pipeline (`core/reconciler/redeliver.rs`): the pipeline's answers
//! (refused, retried), the repository fetched before a re-delivery and what passes live
//! meanwhile, claims, bodies and their log lines. Driven natively with a virtual clock.

mod common;

use common::*;
use status_sync::core::model::DeliveryOutcome::{self, Delivered, NotDelivered};
use status_sync::core::observation::Observation;
use status_sync::core::reconciler::{OutgoingCall, Reconciler};

/// A re-delivery the pipeline refused with 4xx is final: counted in `redeliveries_refused`, not
/// retried while drone reports the same version; a newer version is still delivered.
#[test]
fn refused_redelivery_is_final_and_counted() {
    let mut r = missed("", [3]);
    let lookup = tick_one(&mut r, T0);
    let deliver = one(r.on_response(lookup.id, ok(api_build(3, "running", 2)), T0));
    assert!(r.on_response(deliver.id, http(422), T0).is_empty());
    assert_eq!(r.counters().redeliveries_refused, 1);
    assert_eq!(r.counters().redeliveries_failed, 0);
    assert_eq!(r.ledger().get(&key(3)).unwrap().settled_version(), 2);
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
        r.observe(obs(3, "success", 3, NotDelivered), T0);
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
    let mut r = missed("", [9]);
    let lookup = tick_one(&mut r, T0);
    let deliver = one(r.on_response(lookup.id, ok(api_build(9, "running", 3)), T0 + 10));
    assert_eq!(redelivered(&deliver).2, 3);
    r.observe(obs(9, "running", 4, Delivered), T0 + 20);
    assert!(r.on_response(deliver.id, http(200), T0 + 30).is_empty());
    assert_eq!(r.ledger().get(&key(9)).unwrap().settled_version(), 4);
    let (mut now, mut log) = (T0 + 30, Log::default());
    drive_steady(&mut r, &mut now, T0 + 20_000, &mut log, "running", 4);
    assert!(log.drone_calls() >= 2);
    assert!(log.redeliveries().is_empty(), "{:?}", log.redeliveries());
}

/// The repository is fetched before a re-delivery (no webhook brought its JSON); meanwhile
/// the same or a newer version passes live and the pipeline acknowledges it: the held drone
/// answer is not delivered, and the build is looked at again later (live settles). Found by
/// `reconciler_props`.
#[test]
fn answer_held_for_a_repository_fetch_is_not_delivered_after_a_newer_live_webhook() {
    for live in [2, 3] {
        let mut r = Reconciler::new(config(""), 1);
        let mut o = obs(2, "pending", 1, Delivered);
        o.webhook_mut().repo_json = None;
        r.observe(o, T0);
        let lookup = tick_one(&mut r, T0 + 2000);
        let fetch = one(r.on_response(lookup.id, ok(api_build(2, "running", 2)), T0 + 2000));
        assert_eq!(looked_up(&fetch), None, "the repository");
        let mut o = obs(2, "running", live, Delivered);
        o.webhook_mut().repo_json = None;
        r.observe(o, T0 + 2010);
        let out = r.on_response(fetch.id, ok(REPO_JSON.as_bytes().to_vec()), T0 + 2020);
        assert!(out.is_empty(), "live v{live}: {out:?}");
        let (mut now, mut log) = (T0 + 2020, Log::default());
        drive_steady(&mut r, &mut now, T0 + 6000, &mut log, "success", 4);
        assert_eq!(log.redeliveries(), vec![(2, "success".to_string(), 4)]);
        assert_eq!(r.ledger().len(), 0);
    }
}

/// redeliver.rs (on_repo): the pipeline taking drone's version live while the repository was
/// fetched for its re-delivery: nothing is re-delivered.
#[test]
fn no_redelivery_of_what_the_pipeline_took_while_the_repository_was_fetched() {
    let mut r = Reconciler::new(config(""), 1);
    let mut o = obs(1, "running", 1, NotDelivered);
    o.webhook_mut().repo_json = None;
    r.observe(o, T0);
    let calls = r.tick(T0);
    let lookup = calls.iter().find(|c| looked_up(c) == Some(1)).unwrap();
    let fetch = r.on_response(lookup.id, ok(api_build(1, "running", 2)), T0);
    assert_eq!(fetch.len(), 1, "the repository first: {fetch:?}");
    assert!(is_repo_call(&fetch[0]));
    let mut live = obs(1, "running", 2, Delivered);
    live.webhook_mut().repo_json = None;
    r.observe(live, T0 + 10);
    let out = r.on_response(fetch[0].id, ok(REPO_JSON.as_bytes().to_vec()), T0 + 20);
    assert!(out.is_empty(), "{out:?}");
}

/// redeliver.rs (on_delivered): a failed re-delivery is logged (debug) with the build, status,
/// version and answer; an accepted one is not.
#[test]
fn failed_redeliveries_are_logged_accepted_ones_not() {
    logged();
    for (answer, line) in [
        (503, Some("DEBUG re-delivery failed, will retry build=octocat/hello-world#1 status=running version=2 http=503 ")),
        (200, None),
    ] {
        let before = logged().len();
        let mut r = Reconciler::new(config(""), 1);
        r.observe(obs(1, "running", 1, NotDelivered), T0);
        let calls = r.tick(T0);
        let lookup = calls.iter().find(|c| looked_up(c) == Some(1)).unwrap();
        let out = r.on_response(lookup.id, ok(api_build(1, "running", 2)), T0);
        r.on_response(out[0].id, http(answer), T0);
        let lines: Vec<String> = logged().split_off(before);
        let redelivery: Vec<&String> = lines.iter().filter(|l| l.contains("re-delivery")).collect();
        match line {
            Some(l) => assert_eq!(redelivery, vec![l], "HTTP {answer}"),
            None => assert!(redelivery.is_empty(), "HTTP {answer}: {redelivery:?}"),
        }
    }
}

/// redeliver.rs (on_delivered): the pipeline taking a re-delivery clears a hint's claim at or
/// below its version, not one above it: drone then confirming the claim above settles the
/// build, and nothing more is re-delivered.
#[test]
fn an_accepted_redelivery_keeps_a_claim_above_it() {
    let mut r = Reconciler::new(config(""), 1);
    r.observe(obs(1, "running", 1, NotDelivered), T0);
    let calls = r.tick(T0);
    let lookup = calls.iter().find(|c| looked_up(c) == Some(1)).unwrap();
    let out = r.on_response(lookup.id, ok(api_build(1, "running", 2)), T0);
    r.observe(hint(1, "running", 3, Delivered), T0);
    r.on_response(out[0].id, http(200), T0);
    let out = answer_when_due(&mut r, 1, ok(api_build(1, "running", 3)));
    assert!(out.is_empty(), "the pipeline has v3: {out:?}");
}

/// redeliver.rs: a re-delivery whose body cannot be built (here a stored `system` that is not a
/// JSON object, which the decoders would have refused) is never sent empty: counted, the bad
/// object dropped, and the build re-delivered with a good body once it is looked at again.
#[test]
fn a_redelivery_without_a_body_is_never_sent() {
    let mut r = Reconciler::new(config(""), 1);
    let mut o = obs(1, "running", 1, NotDelivered);
    o.webhook_mut().system_json = Some("[]".into());
    r.observe(o, T0);
    let (mut now, mut log) = (T0, Log::default());
    let mut sent = Vec::new();
    drive(
        &mut r,
        &mut now,
        T0 + 600_000,
        &mut log,
        &mut |n| ok(api_build(n, "success", 3)),
        &mut |call| {
            sent.push(call.body.clone());
            http(200)
        },
    );
    assert_eq!(r.counters().redeliveries_invalid, 1);
    assert!(!sent.is_empty(), "re-delivered once the bad object is gone");
    assert!(sent.iter().all(|b| !b.is_empty()), "an empty body was sent");
}

/// Build 2 at (`status`, `version`) from a hint without its `repo` and `system` objects.
fn bare_hint(status: &str, version: u64, outcome: DeliveryOutcome) -> Observation {
    let mut o = hint(2, status, version, outcome);
    o.webhook_mut().repo_json = None;
    o.webhook_mut().system_json = None;
    o
}

/// Evidence names the repository (without its `repo` object, so none is at hand) and a hint
/// build 2 pending (v1); ticks until drone is asked about build 2, nothing delivered before:
/// the reconciler, the time and the lookup.
fn hinted_build_looked_up() -> (Reconciler, u64, OutgoingCall) {
    let mut r = Reconciler::new(config(""), 1);
    let mut named = obs(1, "success", 3, Delivered);
    named.webhook_mut().repo_json = None;
    r.observe(named, T0);
    r.observe(bare_hint("pending", 1, NotDelivered), T0);
    let mut now = T0;
    let lookup = |c: &OutgoingCall| looked_up(c) == Some(2);
    let call = tick_until(&mut r, &mut now, &lookup, &mut |_, c, _| {
        assert!(is_drone(c), "nothing delivered before drone's answer");
        Some(ok(REPO_JSON.into()))
    });
    (r, now, call)
}

/// redeliver.rs (on_repo): drone answered v1 of a build only a hint named, and the repository
/// `repo` object had to be fetched first; meanwhile the pipeline took v2 from an unverified
/// webhook. The older state is not delivered on the fetch's answer: drone is asked again
/// first (found by `reconciler_props`: "re-delivery of 2 v1 after the pipeline had v2").
#[test]
fn a_claim_arriving_during_the_repository_fetch_defers_the_older_redelivery() {
    let (mut r, mut now, call) = hinted_build_looked_up();
    // The repository fetch the re-delivery of v1 waits for.
    let held = r.on_response(call.id, ok(api_build(2, "pending", 1)), now);
    assert_eq!(held.len(), 1, "a repository fetch follows drone's answer");
    assert!(
        is_drone(&held[0]) && looked_up(&held[0]).is_none(),
        "{held:?}"
    );
    r.observe(bare_hint("success", 2, Delivered), now);
    let after = r.on_response(held[0].id, ok(REPO_JSON.into()), now);
    assert!(
        after.iter().all(is_drone),
        "v1 re-delivered after the pipeline took v2: {after:?}"
    );
    // Drone, asked again, has v2: what the pipeline took. Nothing older ever goes out.
    let mut log = Log::default();
    let until = now + 30_000;
    drive_steady(&mut r, &mut now, until, &mut log, "success", 2);
    assert!(
        log.redeliveries().iter().all(|(_, _, v)| *v >= 2),
        "{:?}",
        log.redeliveries()
    );
}

/// redeliver.rs (on_repo): only a claim *above* drone's version defers a re-delivery held for
/// the repository fetch. A claim of drone's own version arriving meanwhile (an unverified
/// webhook the pipeline took) does not hold it up: a claim settles nothing, so drone's state
/// goes out on the fetch's answer.
#[test]
fn a_claim_at_drones_own_version_during_the_repository_fetch_does_not_defer_the_redelivery() {
    let (mut r, now, call) = hinted_build_looked_up();
    let held = r.on_response(call.id, ok(api_build(2, "running", 2)), now);
    assert_eq!(held.len(), 1, "a repository fetch follows drone's answer");
    let mut claim = hint(2, "running", 2, Delivered);
    claim.webhook_mut().repo_json = None;
    r.observe(claim, now);
    let after = r.on_response(held[0].id, ok(REPO_JSON.into()), now);
    let sent: Vec<_> = after
        .iter()
        .filter(|c| !is_drone(c))
        .map(redelivered)
        .collect();
    assert_eq!(sent, vec![(2, "running".to_string(), 2)], "{after:?}");
}

/// A repository answer for another repository is unusable: counted as a failed call, the
/// build retried, nothing delivered. A good one counts as a successful call.
#[test]
fn repository_answer_must_be_the_repository_asked_for() {
    let mut r = Reconciler::new(config(""), 1);
    let mut o = obs(2, "running", 2, NotDelivered);
    o.webhook_mut().repo_json = None;
    r.observe(o, T0);
    let lookup = r.tick(T0).remove(0);
    let fetch = r
        .on_response(lookup.id, ok(api_build(2, "running", 2)), T0)
        .remove(0);
    assert_eq!(
        fetch.header(":path"),
        Some("/api/repos/octocat/hello-world")
    );
    let wrong = REPO_JSON.replace("\"id\":42", "\"id\":43");
    assert!(r
        .on_response(fetch.id, ok(wrong.into_bytes()), T0)
        .is_empty());
    assert_eq!(
        (r.counters().drone_polls_ok, r.counters().drone_polls_failed),
        (1, 1)
    );
    // Retried after the backoff (1 s ± 20 %).
    let lookup = r.tick(T0 + 1300).remove(0);
    let fetch = r
        .on_response(lookup.id, ok(api_build(2, "running", 2)), T0 + 1300)
        .remove(0);
    let deliver = r
        .on_response(fetch.id, ok(REPO_JSON.as_bytes().to_vec()), T0 + 1300)
        .remove(0);
    assert_eq!(redelivered(&deliver), (2, "running".to_string(), 2));
    assert_eq!(
        (r.counters().drone_polls_ok, r.counters().drone_polls_failed),
        (3, 1),
        "the build, then the repository"
    );
}

/// A re-delivery the shell held before sending (cluster mode, until the records vouch for it)
/// has its whole deadline once it leaves: `sending` restarts its clock, so the hold does not
/// make the reconciler give up on a call the pipeline is still answering.
#[test]
fn a_held_redelivery_gets_its_whole_deadline_from_when_it_leaves() {
    let cfg = config(r#","call_timeout_ms":1000"#);
    let mut r = Reconciler::new(cfg, 1);
    r.observe(obs(3, "success", 3, NotDelivered), T0);
    let lookup = tick_one(&mut r, T0);
    let deliver = one(r.on_response(lookup.id, ok(api_build(3, "success", 3)), T0));
    // Held 1.5 s, then sent: the deadline (2 × call_timeout_ms) runs from the send.
    r.sending(deliver.id, T0 + 1_500);
    let _ = r.tick(T0 + 3_000);
    assert!(r.is_inflight(deliver.id), "given up 1.5 s after it left");
    assert_eq!(r.counters().calls_expired, 0);
    let _ = r.tick(T0 + 3_600);
    assert!(!r.is_inflight(deliver.id), "given up 2 s after it left");
    assert_eq!(r.counters().calls_expired, 1);
}
