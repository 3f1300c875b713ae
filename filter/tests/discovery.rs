//! Discovery (`core/reconciler/discovery.rs`): drone's `counter` for a repository and its list of
//! incomplete builds (`GET /api/builds/incomplete`), what they track and when they are looked
//! at. Driven natively with a virtual clock.

mod common;

use common::*;
use status_sync::core::reconciler::{OutgoingCall, Reconciler};
use status_sync::core::snapshot::{self};

/// Tracked builds as (repository, number).
fn tracked_keys(r: &Reconciler) -> Vec<(u64, u64)> {
    let mut k: Vec<(u64, u64)> = r
        .ledger()
        .iter()
        .map(|(k, _)| (k.repo_id, k.number))
        .collect();
    k.sort();
    k
}

/// Ticks until the reconciler asks for `/api/builds/incomplete` and answers it with `body`.
fn incomplete(r: &mut Reconciler, body: &[u8]) {
    let mut now = T0;
    let asked = |c: &OutgoingCall| c.header(":path") == Some("/api/builds/incomplete");
    let call = tick_until(r, &mut now, &asked, &mut unanswered);
    r.on_response(call.id, ok(body.to_vec()), now);
}

/// discovery.rs (discovered, on_discover): drone's `counter` above the highest number known
/// tracks exactly the numbers between, counted; the answer is counted as drone's.
#[test]
fn discovery_tracks_exactly_the_numbers_above_the_highest_known() {
    let mut r = after_build_five("");
    discovery(&mut r, ok(repo_json_with_counter(7)));
    assert_eq!(tracked(&r), vec![6, 7]);
    let c = r.counters();
    assert_eq!((c.builds_discovered, c.drone_polls_ok), (2, 1));
}

/// discovery.rs (discovered): drone's counters are int64: the largest is drone's, one above
/// is not and tracks nothing.
#[test]
fn discovery_takes_counters_up_to_int64_only() {
    let max = i64::MAX as u64;
    for (counter, drones) in [(max, true), (max + 1, false)] {
        let mut r = after_build_five(r#","max_gap_fill":2"#);
        discovery(&mut r, ok(repo_json_with_counter(counter)));
        if drones {
            assert_eq!(tracked(&r), vec![max - 1, max]);
        } else {
            assert!(tracked(&r).is_empty(), "{:?}", tracked(&r));
        }
    }
}

/// discovery.rs (on_discover): drone answering the name with another repository is a failed
/// look: counted, nothing confirmed or tracked.
#[test]
fn discovery_answered_for_another_repository_is_a_failed_look() {
    let mut r = after_build_five("");
    let other = String::from_utf8(repo_json_with_counter(9))
        .unwrap()
        .replace(r#""id":42,"uid":"1""#, r#""id":43,"uid":"2""#);
    discovery(&mut r, ok(other.into_bytes()));
    assert_eq!(r.repo_confirmed(43), None);
    assert!(tracked(&r).is_empty());
    let c = r.counters();
    assert_eq!((c.drone_polls_failed, c.drone_polls_ok), (1, 0));
}

/// discovery.rs (on_discover): a 4xx to a look at `counter` is counted and does not feed the
/// circuit; a 5xx does.
#[test]
fn discovery_failures_feed_the_circuit_only_when_drone_is_unwell() {
    for (status, opens) in [(404, 0), (503, 1)] {
        let mut r = after_build_five(r#","circuit_failure_threshold":1"#);
        discovery(&mut r, http(status));
        let c = r.counters();
        assert_eq!(
            (c.drone_polls_failed, c.circuit_opens),
            (1, opens),
            "HTTP {status}"
        );
    }
}

/// discovery.rs (discover): a repository is looked at until it has been quiet for longer than
/// `max_build_age_ms`, at exactly that age still.
#[test]
fn discovery_stops_after_max_build_age_of_silence_not_at_it() {
    let r = after_build_five("");
    let age = r.config().max_build_age_ms;
    for (at, looks) in [(T0 + age, true), (T0 + age + 1, false)] {
        let mut r = after_build_five("");
        let calls = r.tick(at);
        assert_eq!(calls.iter().any(is_repo_call), looks, "{calls:?}");
    }
}

/// discovery.rs (discovered): after a leader change the highest number known comes from the
/// watermarks alone; drone's `counter` above it tracks the numbers above, not that one.
#[test]
fn discovery_after_a_leader_change_starts_above_the_watermark() {
    let mut r = leader_after(5, 1, "");
    discovery(&mut r, ok(repo_json_with_counter(7)));
    assert_eq!(tracked(&r), vec![6, 7]);
}

/// discovery.rs (on_incomplete): a build of drone's list is tracked when its number is above
/// the highest known of its repository, and counted; one at or below is not.
#[test]
fn incomplete_builds_above_the_highest_known_are_tracked() {
    let before = logged().len();
    let mut r = after_build_five("");
    let body = format!(
        "[{},{}]",
        incomplete_item(REPO_ID, 4),
        incomplete_item(7, 4)
    );
    incomplete(&mut r, body.as_bytes());
    assert_eq!(tracked_keys(&r), vec![(7, 4)]);
    let c = r.counters();
    assert_eq!((c.builds_discovered, c.drone_polls_ok), (1, 1));
    // A list without a bad entry says nothing about skipping (no warn line per poll).
    assert_eq!(c.drone_entries_skipped, 0);
    let lines = logged();
    assert!(
        !lines[before..].iter().any(|l| l.contains("skipped")),
        "{lines:?}"
    );
}

/// discovery.rs (on_incomplete): ids and numbers are drone's int64; 0 is no build number.
/// Only items within them are taken.
#[test]
fn incomplete_items_beyond_int64_or_numbered_zero_are_skipped() {
    let max = i64::MAX as u64;
    let items = [(max, 4), (7, max), (8, 0), (9, max + 1), (max + 1, 4)];
    let body: Vec<String> = items
        .iter()
        .map(|(id, n)| incomplete_item(*id, *n))
        .collect();
    let before = logged().len();
    let mut r = Reconciler::new(config(""), 1);
    incomplete(&mut r, format!("[{}]", body.join(",")).as_bytes());
    assert_eq!(tracked_keys(&r), vec![(7, max), (max, 4)]);
    assert!(r.repo_confirmed(max).is_some());
    assert!(r.repo_confirmed(8).is_none() && r.repo_confirmed(9).is_none());
    // Each item left out is counted (and logged), none silently: the poll itself answered.
    let c = r.counters();
    assert_eq!((c.drone_entries_skipped, c.drone_polls_ok), (3, 1));
    let lines = logged();
    let warned = logged_since(before, &|l| l.contains("entries unusable"));
    assert_eq!(warned.len(), 1, "{lines:?}");
    assert!(
        warned[0].starts_with("WARN ") && warned[0].contains("count=3"),
        "{warned:?}"
    );
}

/// discovery.rs (on_incomplete): an answer that is not drone's list is a failed call.
#[test]
fn an_unusable_incomplete_list_is_a_failed_call() {
    let mut r = Reconciler::new(config(""), 1);
    incomplete(&mut r, b"{}");
    let c = r.counters();
    assert_eq!((c.drone_polls_failed, c.drone_polls_ok), (1, 0));
    assert_eq!(c.drone_entries_skipped, 0);
}

/// discovery.rs (on_incomplete): a build at the watermark a previous leader left is that
/// leader's (its snapshot carries it if still open): drone's list does not track it again.
#[test]
fn incomplete_build_at_the_watermark_is_not_tracked_again() {
    let mut r = Reconciler::new(config(""), 1);
    assert!(r.load_watermarks(&snapshot::encode_watermarks(&[(repo(), 5, 1)])));
    let body = format!("[{}]", incomplete_item(REPO_ID, 5));
    incomplete(&mut r, body.as_bytes());
    assert_eq!(tracked_keys(&r), vec![]);
    assert_eq!(r.counters().builds_discovered, 0);
}

/// discovery.rs (discover): a look at a repository only hints named that waited because the
/// hints' lane was spent is due exactly one `tick_ms` later, and is made at that tick, not one
/// tick after it. Ten hint lookups spend the hints' lane (10 a second at 20 calls a second)
/// in the tick where repository 7's look is due; the next tick brings one token back.
#[test]
fn a_look_the_spent_hints_lane_put_off_is_made_at_the_next_tick() {
    use common::world::{hook_of, Sim};
    use status_sync::core::model::DeliveryOutcome::NotDelivered;
    let cfg = config(
        r#","webhook_secret":"s3cret","signature_mode":"monitor","max_drone_calls_per_sec":20,"max_inflight_calls":64"#,
    );
    let mut s = Sim::new(cfg);
    for n in 1..=10 {
        s.drone.set(7, n, "running", 2);
    }
    s.saw(hook_of(7, 1, "running", 2), NotDelivered, false);
    s.run(3_000);
    assert!(s.r.repo_confirmed(7).is_some(), "drone confirmed the name");
    let looks = |s: &Sim| {
        let path = "/api/repos/octocat/repo-7";
        s.drone.calls.iter().filter(|p| *p == path).count()
    };
    assert!(
        looks(&s) >= 2,
        "confirmed, then looked at: {:?}",
        s.drone.calls
    );
    // Ten quiet seconds without a tick: the look at the counter (every 8 s at most) and
    // build 1's lookup are due; nine new hints make ten lookups for the next tick.
    s.now += 10_000;
    for n in 2..=10 {
        s.saw(hook_of(7, n, "running", 2), NotDelivered, false);
    }
    let before = looks(&s);
    s.run(100);
    assert_eq!(
        looks(&s),
        before,
        "the hints' lane is spent: {:?}",
        s.drone.calls
    );
    s.run(100);
    assert_eq!(looks(&s), before + 1, "made at the next tick");
}

/// discovery.rs (on_incomplete): a 5xx to drone's list of incomplete builds means drone is
/// unwell, not that it lacks the list: the failure feeds the circuit and the list is asked
/// again later; a 501 (drone's OSS build) stops asking for good, and closes nothing.
#[test]
fn a_5xx_to_the_incomplete_list_is_an_outage_and_the_list_is_asked_again() {
    for (status, again) in [(503, true), (501, false)] {
        let mut r = Reconciler::new(config(r#","circuit_failure_threshold":1"#), 1);
        let asked = |c: &OutgoingCall| c.header(":path") == Some("/api/builds/incomplete");
        let mut now = T0;
        let call = tick_until(&mut r, &mut now, &asked, &mut unanswered);
        r.on_response(call.id, http(status), now);
        let opens = r.counters().circuit_opens;
        assert_eq!(opens, u64::from(again), "HTTP {status}");
        let mut later = 0;
        let end = now + 30_000;
        while now < end {
            now += 100;
            for call in r.tick(now) {
                if asked(&call) {
                    later += 1;
                    r.on_response(call.id, ok(b"[]".to_vec()), now);
                }
            }
        }
        assert_eq!(later > 0, again, "HTTP {status}: asked again {later} times");
    }
}
