//! Build lookups (`core/reconciler/lookup.rs`): drone's answers to a lookup and what they
//! settle, name confirmations, give-ups (age, 404/400), polling intervals and their backoff, the
//! watch on a cancelled build, and live webhooks that overtake a lookup. Driven natively with a
//! virtual clock.
//!
//! Tests marked "live settles" rely on a live webhook the pipeline acknowledged settling a
//! build (the verified kind, built in `common::obs`).

#![allow(clippy::expect_used)]

mod common;

use common::*;
use status_sync::core::ledger::{Class, Entry};
use status_sync::core::model::DeliveryOutcome::{Delivered, NotDelivered};
use status_sync::core::model::{BuildStatus, RepoRef};
use status_sync::core::reconciler::{CallResult, OutgoingCall, Reconciler};
use status_sync::core::snapshot::{self, Record};

/// Build 7 (running v2, acknowledged) is looked up at T0 + 2 s; before drone answers, a live
/// webhook of (`status`, `version`) passes and the pipeline acknowledges it. Returns the
/// reconciler and the lookup still in flight.
fn lookup_overtaken_by_live(status: &str, version: u64) -> (Reconciler, OutgoingCall) {
    let mut r = seen_live("", &[(7, "running", 2)]);
    let lookup = tick_one(&mut r, T0 + 2000);
    r.observe(obs(7, status, version, Delivered), T0 + 2010);
    (r, lookup)
}

/// A reconciler that heard of build 1 only from an unverified webhook the pipeline did not
/// take, and the call of its first tick asking drone whether that name is the repository's.
fn hinted() -> (Reconciler, OutgoingCall) {
    let mut r = Reconciler::new(config(""), 1);
    r.observe(hint(1, "running", 1, NotDelivered), T0);
    let confirm = r.tick(T0).into_iter().find(is_repo_call);
    (r, confirm.expect("the name is confirmed first"))
}

/// A reconciler that loaded build `number` of class `class`, first seen at `T0`, due at
/// `due` (a new leader's snapshot).
fn loaded(extra: &str, number: u64, class: Class, due: u64) -> Reconciler {
    let mut r = Reconciler::new(config(extra), 1);
    let mut e = Entry::new(T0, class);
    e.interval_ms = 1000;
    e.next_due_ms = due;
    assert!(r.load_shard(&snapshot::encode_shard(&[record(number, e)]), due - 500));
    r
}

/// Drone calls answered, failed, and hints drone refuted.
fn polls(r: &Reconciler) -> (u64, u64, u64) {
    let c = r.counters();
    (c.drone_polls_ok, c.drone_polls_failed, c.hints_refuted)
}

/// Consecutive failed lookups of a build back off exponentially from `stale_after_ms` (1 s)
/// up to `max_poll_interval_ms` (8 s), each delay within the ±20 % jitter.
#[test]
fn failure_backoff_grows_to_the_cap() {
    let cfg = r#","circuit_failure_threshold":1000"#;
    let mut r = missed(cfg, [5]);
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
    let mut r = missed(r#","max_inflight_calls":8"#, [3]);
    let lookup = tick_one(&mut r, T0);
    r.observe(obs(3, "running", 2, NotDelivered), T0 + 10);
    r.observe(obs(3, "running", 2, Delivered), T0 + 20);
    for t in [T0 + 100, T0 + 5000] {
        let calls = tick_others(&mut r, t);
        assert!(calls.is_empty(), "second lookup at {t}: {calls:?}");
    }
    assert_eq!(r.inflight(), 1);
    let deliver = one(r.on_response(lookup.id, ok(api_build(3, "running", 3)), T0 + 5000));
    assert_eq!(redelivered(&deliver), (3, "running".to_string(), 3));
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

/// Every drone answer is counted: a 404 and a readable build as `drone_polls_ok`, anything
/// else as `drone_polls_failed`.
#[test]
fn drone_answers_are_counted() {
    let mut r = missed("", [1, 2, 3]);
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

/// lookup.rs (serve_one): a build only hints named that outlives `max_build_age_ms` is
/// forgotten as refuted, once, and is no give-up.
#[test]
fn hint_only_build_past_the_age_limit_is_refuted_not_given_up() {
    let mut r = loaded(r#","max_build_age_ms":60000"#, 1, Class::Hint, T0 + 60_001);
    let calls = r.tick(T0 + 61_000);
    assert!(calls.iter().all(|c| looked_up(c).is_none()), "{calls:?}");
    assert_eq!(r.ledger().len(), 0);
    let c = r.counters();
    assert_eq!((c.hints_refuted, c.builds_expired, c.giveups), (1, 0, 0));
}

/// mod.rs (set_identity, build_field): a give-up's log line names the build as operators know
/// it and ends with the reconciler's identity (docs/metrics.md, "Logs").
#[test]
fn give_up_lines_name_the_build_and_the_reconciler() {
    logged();
    let mut r = loaded(
        r#","max_build_age_ms":60000"#,
        7,
        Class::Backed,
        T0 + 60_001,
    );
    r.set_identity("instance=ci reconciler=0000abcd epoch=4".into());
    r.tick(T0 + 61_000);
    assert_eq!(r.counters().builds_expired, 1);
    let lines = logged();
    assert!(
        lines.iter().any(|l| l
            == "WARN gave up: build open longer than max_build_age_ms build=octocat/hello-world#7 instance=ci reconciler=0000abcd epoch=4"),
        "{lines:?}"
    );
}

/// lookup.rs (serve_one): a build of evidence whose repository's name was dropped to stay
/// within `max_repos` waits for the name (the next webhook gives it again); it is not taken
/// for a hint drone refuted.
#[test]
fn build_whose_repository_name_was_dropped_waits_for_it() {
    let mut r = Reconciler::new(config(r#","max_repos":1"#), 1);
    let records: Vec<Record> = (0..3)
        .map(|i| {
            let mut e = Entry::new(T0, Class::Backed);
            e.interval_ms = 1000;
            e.next_due_ms = T0 + 1000;
            Record {
                repo: RepoRef {
                    id: REPO_ID + i,
                    namespace: "octocat".into(),
                    name: format!("repo-{i}"),
                },
                number: 1,
                entry: e,
            }
        })
        .collect();
    assert!(r.load_shard(&snapshot::encode_shard(&records), T0));
    assert_eq!(
        r.repo_confirmed(REPO_ID),
        None,
        "two names kept, the oldest dropped"
    );
    assert_eq!(r.counters().repos_evicted, 1);
    r.tick(T0 + 1000);
    let waiting = key(1);
    let entry = r.ledger().get(&waiting).copied();
    assert!(entry.is_some(), "still tracked");
    assert!(entry.unwrap().next_due_ms > T0 + 1000, "and waiting");
    assert_eq!(r.counters().hints_refuted, 0);
}

/// lookup.rs (on_build): drone answering 404 for a build its numbering showed is looked at 3
/// more times (drone takes the number before it writes the build); a 400 gives it up at once.
#[test]
fn inferred_build_drone_does_not_have_is_given_up_after_three_more_looks() {
    // A snapshot's inferred build, its repository named by evidence since (a finished build).
    let inferred = |number| {
        let mut r = loaded("", number, Class::Inferred, T0 + 1000);
        r.observe(obs(50, "success", 3, Delivered), T0);
        assert!(r.repo_confirmed(REPO_ID).is_some());
        r
    };
    let mut r = inferred(1);
    for look in 1..=3 {
        answer_when_due(&mut r, 1, http(404));
        assert_eq!(r.ledger().len(), 1, "look {look}: looked at again");
        assert_eq!(r.counters().builds_not_found, 0);
    }
    answer_when_due(&mut r, 1, http(404));
    assert_eq!(r.ledger().len(), 0);
    assert_eq!(
        (r.counters().builds_not_found, r.counters().giveups),
        (1, 1)
    );

    let mut r = inferred(2);
    answer_when_due(&mut r, 2, http(400));
    assert_eq!(r.ledger().len(), 0, "drone cannot have a build numbered so");
    assert_eq!(r.counters().builds_not_found, 1);
}

/// lookup.rs (serve_one): once drone refuted the only name hints gave for a repository, a
/// build only hints named is forgotten at its next turn, not kept until the age limit.
#[test]
fn hint_only_build_of_a_refuted_repository_is_forgotten_at_once() {
    let (mut r, confirm) = hinted();
    r.on_response(confirm.id, http(404), T0);
    assert_eq!(r.counters().hints_refuted, 1, "the name");
    assert_eq!(r.ledger().len(), 1);
    let key = key(1);
    let due = r.ledger().get(&key).unwrap().next_due_ms;
    let calls = r.tick(due);
    assert!(calls.iter().all(|c| looked_up(c).is_none()), "{calls:?}");
    assert_eq!(r.ledger().len(), 0);
    assert_eq!(r.counters().hints_refuted, 2, "and the build");
    assert_eq!(r.counters().giveups, 0);
}

/// lookup.rs (on_build): drone's versions are int64: the largest is delivered, one above is
/// not drone's and is not delivered.
#[test]
fn drone_versions_up_to_int64_are_delivered_and_none_above() {
    let max = i64::MAX as u64;
    for (version, delivered) in [(max, true), (max + 1, false)] {
        let mut r = Reconciler::new(config(""), 1);
        r.observe(obs(1, "running", 1, NotDelivered), T0);
        let calls = r.tick(T0);
        let lookup = calls.iter().find(|c| looked_up(c) == Some(1)).unwrap();
        let out = r.on_response(lookup.id, ok(api_build(1, "running", version)), T0);
        assert_eq!(out.len(), usize::from(delivered), "v{version}: {out:?}");
        if delivered {
            assert_eq!(redelivered(&out[0]).2, max);
        } else {
            assert_eq!(r.counters().drone_polls_failed, 1);
        }
    }
}

/// lookup.rs (on_build): a hint's claim settles a build only when drone shows the very version
/// and status claimed; a claim of an older version with the same status does not, and drone's
/// newer version is delivered.
#[test]
fn a_claim_of_an_older_version_with_the_same_status_settles_nothing() {
    let mut r = Reconciler::new(config(""), 1);
    r.observe(obs(1, "running", 1, NotDelivered), T0);
    r.observe(hint(1, "running", 1, Delivered), T0);
    let calls = r.tick(T0);
    let lookup = calls.iter().find(|c| looked_up(c) == Some(1)).unwrap();
    let out = r.on_response(lookup.id, ok(api_build(1, "running", 2)), T0);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(redelivered(&out[0]), (1, "running".into(), 2));
}

/// lookup.rs (on_confirm): drone failing (5xx) to answer whether a name is a repository's
/// refutes nothing: the name is asked about again and, once drone confirms it, the build is
/// looked up under it.
#[test]
fn a_failed_confirmation_refutes_nothing() {
    let (mut r, confirm) = hinted();
    r.on_response(confirm.id, http(503), T0);
    assert_eq!(r.counters().hints_refuted, 0);
    assert_eq!(r.repo_confirmed(REPO_ID), None);
    let mut now = T0;
    let call = tick_until(&mut r, &mut now, &is_repo_call, &mut unanswered);
    r.on_response(call.id, ok(REPO_JSON.as_bytes().to_vec()), now);
    assert_eq!(r.repo_confirmed(REPO_ID), Some(("octocat", "hello-world")));
    assert_eq!(polls(&r), (1, 1, 0));
}

/// lookup.rs (on_confirm): drone naming another repository under the name a hint gave refutes
/// the name; it confirms neither.
#[test]
fn a_name_drone_gives_another_repository_is_refuted() {
    let (mut r, confirm) = hinted();
    let other = REPO_JSON.replace(r#""id":42,"uid":"1""#, r#""id":43,"uid":"2""#);
    r.on_response(confirm.id, ok(other.into_bytes()), T0);
    assert_eq!(r.repo_confirmed(REPO_ID), None);
    assert_eq!(r.repo_confirmed(43), None);
    assert_eq!(polls(&r), (1, 0, 1));
}

/// lookup.rs (on_confirm): nonsense from drone about a name is no answer: counted as a failed
/// call, the name neither confirmed nor refuted.
#[test]
fn an_unusable_confirmation_is_a_failed_call() {
    let (mut r, confirm) = hinted();
    r.on_response(confirm.id, ok(b"<html>".to_vec()), T0);
    assert_eq!(polls(&r), (0, 1, 0));
    assert_eq!(r.repo_confirmed(REPO_ID), None);
}

/// A build is given up when it has been open longer than `max_build_age_ms`, not at exactly
/// that age; the give-up is counted twice over (its kind, and all give-ups).
#[test]
fn build_age_limit_is_exclusive_and_counted() {
    let cfg = r#","max_build_age_ms":60000"#;
    let mut r = Reconciler::new(config(cfg), 1);
    let mut e = Entry::new(T0, Class::Backed);
    e = settled(e, 2, BuildStatus::Running);
    e.interval_ms = 1000;
    e.next_due_ms = T0 + 60_000;
    let record = |number| record(number, e);
    let shard = snapshot::encode_shard(&[record(1)]);
    assert!(r.load_shard(&shard, T0 + 59_500));
    let calls = r.tick(T0 + 60_000);
    assert_eq!(
        calls.len(),
        1,
        "exactly max_build_age_ms old: still looked up"
    );
    assert_eq!(r.counters().builds_expired, 0);
    r.on_response(calls[0].id, ok(api_build(1, "running", 2)), T0 + 60_000);
    let next = r.ledger().iter().next().unwrap().1.next_due_ms;
    let c = r.tick(next);
    assert!(
        c.iter().all(|c| looked_up(c).is_none()),
        "older: given up {c:?}"
    );
    assert_eq!(r.counters().builds_expired, 1);
    assert_eq!(r.counters().giveups, 1);
    assert_eq!(r.ledger().len(), 0);
}

/// A cancelled build unchanged for exactly twice `max_poll_interval_ms` is forgotten (the
/// window is open below that).
#[test]
fn cancel_watch_window_ends_at_twice_the_max_poll_interval() {
    let mut r = Reconciler::new(config(""), 1);
    let shard = snapshot::encode_shard(&[killed_record(8, T0, T0 + 16_000)]);
    assert!(r.load_shard(&shard, T0 + 15_500));
    let calls = r.tick(T0 + 16_000);
    assert_eq!(calls.len(), 1);
    assert!(r
        .on_response(calls[0].id, ok(api_build(8, "killed", 3)), T0 + 16_000)
        .is_empty());
    assert_eq!(r.ledger().len(), 0, "forgotten at 16 s unchanged");
    assert_eq!(r.ledger().tombstone(&key(8)), Some(3));
}
