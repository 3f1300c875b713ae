//! Edges of the planner's behaviour the mutation run of the reconciler's modules
//! (core/reconciler/*.rs) found unpinned: each test names the module whose surviving mutant it
//! kills (benchmarks/results/mutants/README.md lists them).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use status_sync::core::ledger::{Class, Entry};
use status_sync::core::model::{BuildKey, DeliveryOutcome, RepoRef};
use status_sync::core::reconciler::{CallResult, OutgoingCall, Reconciler};
use status_sync::core::snapshot::{self, Record};

const T0: u64 = 1_000_000;

fn repo() -> RepoRef {
    hook(1, "running", 1).repo
}

/// A reconciler that heard of build 1 only from an unverified webhook the pipeline did not
/// take, and the call of its first tick asking drone whether that name is the repository's.
fn hinted() -> (Reconciler, OutgoingCall) {
    let mut r = Reconciler::new(config(""), 1);
    let mut o = obs(1, "running", 1, DeliveryOutcome::NotDelivered);
    o.verified = false;
    r.observe(o, T0);
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
    let record = Record {
        repo: repo(),
        number,
        entry: e,
    };
    assert!(r.load_shard(&snapshot::encode_shard(&[record]), due - 500));
    r
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
    let waiting = BuildKey {
        repo_id: REPO_ID,
        number: 1,
    };
    let entry = r.ledger().get(&waiting).copied();
    assert!(entry.is_some(), "still tracked");
    assert!(entry.unwrap().next_due_ms > T0 + 1000, "and waiting");
    assert_eq!(r.counters().hints_refuted, 0);
}

/// Ticks at the build's next due time and answers the lookup of build `number` with `answer`.
fn look_up_once(r: &mut Reconciler, number: u64, answer: CallResult) {
    let key = BuildKey {
        repo_id: REPO_ID,
        number,
    };
    let due = r.ledger().get(&key).unwrap().next_due_ms;
    let calls = r.tick(due);
    let call = calls
        .iter()
        .find(|c| looked_up(c) == Some(number))
        .unwrap_or_else(|| panic!("no lookup of {number} at {due}: {calls:?}"));
    r.on_response(call.id, answer, due);
}

/// lookup.rs (on_build): drone answering 404 for a build its numbering showed is looked at 3
/// more times (drone takes the number before it writes the build); a 400 gives it up at once.
#[test]
fn inferred_build_drone_does_not_have_is_given_up_after_three_more_looks() {
    // A snapshot's inferred build, its repository named by evidence since (a finished build).
    let inferred = |number| {
        let mut r = loaded("", number, Class::Inferred, T0 + 1000);
        r.observe(obs(50, "success", 3, DeliveryOutcome::Delivered), T0);
        assert!(r.repo_confirmed(REPO_ID).is_some());
        r
    };
    let mut r = inferred(1);
    for look in 1..=3 {
        look_up_once(&mut r, 1, http(404));
        assert_eq!(r.ledger().len(), 1, "look {look}: looked at again");
        assert_eq!(r.counters().builds_not_found, 0);
    }
    look_up_once(&mut r, 1, http(404));
    assert_eq!(r.ledger().len(), 0);
    assert_eq!(
        (r.counters().builds_not_found, r.counters().giveups),
        (1, 1)
    );

    let mut r = inferred(2);
    look_up_once(&mut r, 2, http(400));
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
    let key = BuildKey {
        repo_id: REPO_ID,
        number: 1,
    };
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
        r.observe(obs(1, "running", 1, DeliveryOutcome::NotDelivered), T0);
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
    r.observe(obs(1, "running", 1, DeliveryOutcome::NotDelivered), T0);
    let mut claim = obs(1, "running", 1, DeliveryOutcome::Delivered);
    claim.verified = false;
    r.observe(claim, T0);
    let calls = r.tick(T0);
    let lookup = calls.iter().find(|c| looked_up(c) == Some(1)).unwrap();
    let out = r.on_response(lookup.id, ok(api_build(1, "running", 2)), T0);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(redelivered(&out[0]), (1, "running".into(), 2));
}

/// An element of drone's `GET /api/builds/incomplete`: repository `id`, its build `number`.
fn incomplete_item(id: u64, number: u64) -> String {
    format!(
        r#"{{"id":{id},"uid":"{id}","namespace":"octocat","name":"repo-{id}","slug":"octocat/repo-{id}","counter":{number},"version":1,"archived":false,"build":{{"id":{id}{number},"repo_id":{id},"number":{number},"status":"running","version":2}}}}"#
    )
}

/// mod.rs (drone_named): names drone gives beyond the bound on identities drop the oldest,
/// counted in `repos_evicted`.
#[test]
fn names_drone_gives_beyond_the_bound_are_counted() {
    let mut r = Reconciler::new(config(r#","max_repos":1"#), 1);
    assert!(r.tick(T0).is_empty());
    let calls = r.tick(T0 + 1000);
    let call = calls
        .iter()
        .find(|c| c.header(":path") == Some("/api/builds/incomplete"))
        .unwrap_or_else(|| panic!("{calls:?}"));
    let items: Vec<String> = (7..10).map(|id| incomplete_item(id, 4)).collect();
    let body = format!("[{}]", items.join(","));
    r.on_response(call.id, ok(body.into_bytes()), T0 + 1000);
    assert_eq!(r.counters().drone_polls_ok, 1);
    assert_eq!(r.counters().repos_evicted, 1, "2 × max_repos names kept");
    assert_eq!(r.repo_confirmed(7), None);
    assert!(r.repo_confirmed(9).is_some());
}

/// mod.rs (is_transient): 5xx, 408 and 429 are drone (or the way to it) being unwell and feed
/// the circuit; another 4xx is an answer about the one build and does not.
#[test]
fn which_drone_answers_feed_the_circuit() {
    for (status, opens) in [(503, 1), (500, 1), (408, 1), (429, 1), (403, 0), (409, 0)] {
        let mut r = Reconciler::new(config(r#","circuit_failure_threshold":1"#), 1);
        r.observe(obs(1, "running", 1, DeliveryOutcome::NotDelivered), T0);
        let calls = r.tick(T0);
        let lookup = calls.iter().find(|c| looked_up(c) == Some(1)).unwrap();
        r.on_response(lookup.id, http(status), T0);
        assert_eq!(r.counters().circuit_opens, opens, "HTTP {status}");
        assert_eq!(r.counters().drone_polls_failed, 1, "HTTP {status}");
    }
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
    let mut confirmed = false;
    while now < T0 + 30_000 && !confirmed {
        now += 100;
        for call in r.tick(now) {
            if is_repo_call(&call) {
                r.on_response(call.id, ok(REPO_JSON.as_bytes().to_vec()), now);
                confirmed = true;
            }
        }
    }
    assert!(confirmed, "asked again");
    assert_eq!(r.repo_confirmed(REPO_ID), Some(("octocat", "hello-world")));
    assert_eq!(polls(&r), (1, 1, 0));
}

/// Drone calls answered, failed, and hints drone refuted.
fn polls(r: &Reconciler) -> (u64, u64, u64) {
    let c = r.counters();
    (c.drone_polls_ok, c.drone_polls_failed, c.hints_refuted)
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

/// A reconciler that saw evidence of build 5 (finished and delivered) at `T0`: its repository
/// is confirmed, its highest number 5, and a look at its `counter` is scheduled.
fn after_build_five(extra: &str) -> Reconciler {
    let mut r = Reconciler::new(config(extra), 1);
    r.observe(obs(5, "success", 3, DeliveryOutcome::Delivered), T0);
    r
}

fn is_repo_call(c: &OutgoingCall) -> bool {
    c.header(":path") == Some("/api/repos/octocat/hello-world")
}

/// Ticks every 100 ms from `T0` until the reconciler looks at the repository's `counter`, and
/// answers that call with `answer`; returns when it happened.
fn discovery(r: &mut Reconciler, answer: CallResult) -> u64 {
    let mut now = T0;
    loop {
        now += 100;
        assert!(now < T0 + 60_000, "no discovery");
        let calls = r.tick(now);
        if let Some(call) = calls.iter().find(|c| is_repo_call(c)) {
            r.on_response(call.id, answer, now);
            return now;
        }
    }
}

fn tracked(r: &Reconciler) -> Vec<u64> {
    let mut n: Vec<u64> = r.ledger().iter().map(|(k, _)| k.number).collect();
    n.sort();
    n
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
    let mut r = Reconciler::new(config(""), 1);
    assert!(r.load_watermarks(&snapshot::encode_watermarks(&[(repo(), 5, 1)])));
    discovery(&mut r, ok(repo_json_with_counter(7)));
    assert_eq!(tracked(&r), vec![6, 7]);
}

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
    loop {
        now += 100;
        assert!(now < T0 + 60_000, "never asked");
        let calls = r.tick(now);
        if let Some(c) = calls
            .iter()
            .find(|c| c.header(":path") == Some("/api/builds/incomplete"))
        {
            r.on_response(c.id, ok(body.to_vec()), now);
            return;
        }
    }
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
    let warned: Vec<_> = lines[before..]
        .iter()
        .filter(|l| l.contains("entries unusable"))
        .collect();
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

/// persist.rs (load_watermarks): ids and numbers are drone's int64: marks at the bound are
/// taken, a value holding one beyond it is not a snapshot (the decoder's limits) and loads
/// nothing; identities beyond `max_repos` drop the oldest, counted.
#[test]
fn loaded_watermarks_beyond_int64_are_refused_and_evictions_counted() {
    let max = i64::MAX as u64;
    let mark = |id: u64, n: u64| {
        (
            RepoRef {
                id,
                namespace: "octocat".into(),
                name: format!("repo-{id}"),
            },
            n,
            1,
        )
    };
    let mut r = Reconciler::new(config(""), 1);
    assert!(r.load_watermarks(&snapshot::encode_watermarks(&[mark(max, 5), mark(7, max)])));
    assert!(r.repo_confirmed(max).is_some() && r.repo_confirmed(7).is_some());
    for beyond in [mark(max + 1, 5), mark(9, max + 1)] {
        let mut r = Reconciler::new(config(""), 1);
        let value = snapshot::encode_watermarks(&[mark(8, 5), beyond]);
        assert!(!r.load_watermarks(&value));
        assert!(r.repo_confirmed(8).is_none());
    }

    let mut r = Reconciler::new(config(r#","max_repos":1"#), 1);
    let marks = [mark(1, 5), mark(2, 5), mark(3, 5)];
    assert!(r.load_watermarks(&snapshot::encode_watermarks(&marks)));
    assert_eq!(r.counters().repos_evicted, 1);
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

/// observe.rs (observe): an observation (a queue message) is drone's only within int64: at
/// the largest id, number and version it is taken, above any of them it is counted invalid.
#[test]
fn observations_beyond_int64_are_invalid() {
    let max = i64::MAX as u64;
    let cases: [(u64, u64, u64, bool); 6] = [
        (max, 1, 1, true),
        (max + 1, 1, 1, false),
        (REPO_ID, max, 1, true),
        (REPO_ID, max + 1, 1, false),
        (REPO_ID, 1, max, true),
        (REPO_ID, 1, max + 1, false),
    ];
    for (id, number, version, taken) in cases {
        let mut r = Reconciler::new(config(""), 1);
        let mut o = obs(number, "running", version, DeliveryOutcome::NotDelivered);
        o.webhook.repo.id = id;
        r.observe(o, T0);
        let c = r.counters();
        assert_eq!(
            c.observations_invalid,
            u64::from(!taken),
            "{id} {number} {version}"
        );
        assert_eq!(
            r.ledger().len(),
            usize::from(taken),
            "{id} {number} {version}"
        );
    }
}

/// A reconciler listing `scan_repos` (octocat/hello-world), after `before` ran on it, and the
/// call of its first listing (due at a tenth of `scan_interval_ms`).
fn first_listing(extra: &str, before: &dyn Fn(&mut Reconciler)) -> (Reconciler, OutgoingCall) {
    let cfg = format!(r#","scan_repos":["octocat/hello-world"],"scan_interval_ms":10000{extra}"#);
    let mut r = Reconciler::new(config(&cfg), 1);
    before(&mut r);
    let listing = r
        .tick(1000)
        .into_iter()
        .find(|c| c.header(":path").is_some_and(|p| p.contains("/builds?")));
    (r, listing.expect("listed at scan_interval_ms / 10"))
}

/// Drone's build list: one build of repository `repo_id`.
fn listed(repo_id: u64) -> CallResult {
    let item =
        format!(r#"[{{"id":1,"repo_id":{repo_id},"number":5,"status":"running","version":2}}]"#);
    ok(item.into_bytes())
}

/// scan.rs (on_scan): drone's listing names the configured repository's id, taken within
/// int64 only.
#[test]
fn listings_name_repositories_within_int64_only() {
    let max = i64::MAX as u64;
    for (id, taken) in [(max, true), (max + 1, false)] {
        let (mut r, call) = first_listing("", &|_| {});
        r.on_response(call.id, listed(id), 1000);
        assert_eq!(r.repo_confirmed(id).is_some(), taken, "{id}");
    }
}

/// scan.rs (on_scan): names a listing confirms beyond the bound drop the oldest, counted.
#[test]
fn names_listings_confirm_beyond_the_bound_are_counted() {
    let (mut r, call) = first_listing(r#","max_repos":1"#, &|r| {
        for id in [1, 2] {
            let mut o = obs(9, "success", 3, DeliveryOutcome::Delivered);
            o.webhook.repo.id = id;
            o.webhook.repo.name = format!("repo-{id}");
            r.observe(o, 0);
        }
    });
    assert_eq!(r.counters().repos_evicted, 0);
    r.on_response(call.id, listed(REPO_ID), 1000);
    assert_eq!(r.counters().repos_evicted, 1);
    assert!(r.repo_confirmed(REPO_ID).is_some());
}

/// scan.rs (on_scan): the watermark a listing raises is the newest build of that repository;
/// another repository's builds in the list do not count. A list with a number beyond int64 is
/// not drone's (the decoder's limits): a failed call that raises nothing.
#[test]
fn a_listing_raises_the_watermark_to_its_own_newest_build() {
    let item = |id: u64, repo: u64, number: u64| {
        format!(
            r#"{{"id":{id},"repo_id":{repo},"number":{number},"status":"running","version":2}}"#
        )
    };
    let (mut r, call) = first_listing("", &|_| {});
    let items = format!("[{},{}]", item(1, 42, 5), item(2, 99, 50));
    r.on_response(call.id, ok(items.into_bytes()), 1000);
    let marks = snapshot::decode_watermarks(&r.take_watermarks().unwrap()).unwrap();
    let max: Vec<(u64, u64)> = marks.iter().map(|(repo, max, _)| (repo.id, *max)).collect();
    assert_eq!(max, vec![(REPO_ID, 5)]);

    let (mut r, call) = first_listing("", &|_| {});
    let beyond = i64::MAX as u64 + 1;
    let items = format!("[{},{}]", item(1, 42, 5), item(3, 42, beyond));
    r.on_response(call.id, ok(items.into_bytes()), 1000);
    assert_eq!(r.counters().drone_polls_failed, 1);
    assert!(r.take_watermarks().is_none());
}

/// observe.rs (observe_evidence): evidence of a newer version clears a hint's claim at or
/// below it, not one above it: drone then confirming the claim above settles the build, and
/// nothing is re-delivered.
#[test]
fn evidence_keeps_a_claim_above_it() {
    let mut r = Reconciler::new(config(""), 1);
    r.observe(obs(1, "running", 1, DeliveryOutcome::Delivered), T0);
    let mut claim = obs(1, "running", 3, DeliveryOutcome::Delivered);
    claim.verified = false;
    r.observe(claim, T0);
    r.observe(obs(1, "running", 2, DeliveryOutcome::Delivered), T0);
    let out = answer_when_due(&mut r, 1, api_build(1, "running", 3));
    assert!(out.is_empty(), "the pipeline has v3: {out:?}");
    let key = BuildKey {
        repo_id: REPO_ID,
        number: 1,
    };
    assert_eq!(r.ledger().get(&key).unwrap().settled_version, 3);
}

/// Ticks at build `number`'s due time and answers its lookup with `body`: what follows.
fn answer_when_due(r: &mut Reconciler, number: u64, body: Vec<u8>) -> Vec<OutgoingCall> {
    let key = BuildKey {
        repo_id: REPO_ID,
        number,
    };
    let due = r.ledger().get(&key).unwrap().next_due_ms;
    let calls = r.tick(due);
    let lookup = calls.iter().find(|c| looked_up(c) == Some(number)).unwrap();
    r.on_response(lookup.id, ok(body), due)
}

/// observe.rs (observe_hint): a hint brings the lookup of a build only hints named closer, and
/// never moves a build evidence backs.
#[test]
fn hints_bring_only_hint_only_lookups_closer() {
    let key = BuildKey {
        repo_id: REPO_ID,
        number: 1,
    };
    let hint = |outcome| {
        let mut o = obs(1, "running", 1, outcome);
        o.verified = false;
        o
    };
    // Backed by evidence: due after stale_after_ms (jittered), whatever hints say.
    let mut r = Reconciler::new(config(""), 1);
    r.observe(obs(1, "running", 1, DeliveryOutcome::Delivered), T0);
    let due = r.ledger().get(&key).unwrap().next_due_ms;
    assert!(due > T0);
    r.observe(hint(DeliveryOutcome::NotDelivered), T0);
    assert_eq!(r.ledger().get(&key).unwrap().next_due_ms, due);
    // Only hints: a later one saying the pipeline lacks it brings the lookup to now.
    let mut r = Reconciler::new(config(""), 1);
    r.observe(hint(DeliveryOutcome::Delivered), T0);
    assert!(r.ledger().get(&key).unwrap().next_due_ms > T0);
    r.observe(hint(DeliveryOutcome::NotDelivered), T0);
    assert_eq!(r.ledger().get(&key).unwrap().next_due_ms, T0);
}

/// redeliver.rs (on_repo): the pipeline taking drone's version live while the repository was
/// fetched for its re-delivery: nothing is re-delivered.
#[test]
fn no_redelivery_of_what_the_pipeline_took_while_the_repository_was_fetched() {
    let mut r = Reconciler::new(config(""), 1);
    let mut o = obs(1, "running", 1, DeliveryOutcome::NotDelivered);
    o.webhook.repo_json = None;
    r.observe(o, T0);
    let calls = r.tick(T0);
    let lookup = calls.iter().find(|c| looked_up(c) == Some(1)).unwrap();
    let fetch = r.on_response(lookup.id, ok(api_build(1, "running", 2)), T0);
    assert_eq!(fetch.len(), 1, "the repository first: {fetch:?}");
    assert!(is_repo_call(&fetch[0]));
    let mut live = obs(1, "running", 2, DeliveryOutcome::Delivered);
    live.webhook.repo_json = None;
    r.observe(live, T0 + 10);
    let out = r.on_response(fetch[0].id, ok(REPO_JSON.as_bytes().to_vec()), T0 + 20);
    assert!(out.is_empty(), "{out:?}");
}

/// gaps.rs (note_number): another webhook of a build already seen changes no watermark: none
/// is written again.
#[test]
fn the_same_build_number_again_writes_no_watermark() {
    let mut r = after_build_five("");
    assert!(r.take_watermarks().is_some());
    r.observe(obs(5, "success", 3, DeliveryOutcome::Delivered), T0 + 10);
    assert_eq!(r.take_watermarks(), None);
}

/// gaps.rs (note_number): only a new highest number makes the repository active again; another
/// webhook of the newest build leaves the growing interval between looks at `counter` alone.
#[test]
fn the_same_build_number_again_does_not_hasten_discovery() {
    let mut r = after_build_five("");
    let first = discovery(&mut r, ok(repo_json_with_counter(5)));
    r.observe(obs(5, "success", 3, DeliveryOutcome::Delivered), first);
    let mut now = first;
    let next = loop {
        now += 100;
        assert!(now < first + 60_000, "no second look");
        let calls = r.tick(now);
        if let Some(call) = calls.iter().find(|c| is_repo_call(c)) {
            r.on_response(call.id, ok(repo_json_with_counter(5)), now);
            break now;
        }
    };
    assert!(
        next - first >= 1600,
        "interval grown to 2 s (±20%): {}",
        next - first
    );
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
        r.observe(obs(1, "running", 1, DeliveryOutcome::NotDelivered), T0);
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
    r.observe(obs(1, "running", 1, DeliveryOutcome::NotDelivered), T0);
    let calls = r.tick(T0);
    let lookup = calls.iter().find(|c| looked_up(c) == Some(1)).unwrap();
    let out = r.on_response(lookup.id, ok(api_build(1, "running", 2)), T0);
    let mut claim = obs(1, "running", 3, DeliveryOutcome::Delivered);
    claim.verified = false;
    r.observe(claim, T0);
    r.on_response(out[0].id, http(200), T0);
    let out = answer_when_due(&mut r, 1, api_build(1, "running", 3));
    assert!(out.is_empty(), "the pipeline has v3: {out:?}");
}

/// redeliver.rs: a re-delivery whose body cannot be built (here a stored `system` that is not a
/// JSON object, which the decoders would have refused) is never sent empty: counted, the bad
/// object dropped, and the build re-delivered with a good body once it is looked at again.
#[test]
fn a_redelivery_without_a_body_is_never_sent() {
    let mut r = Reconciler::new(config(""), 1);
    let mut o = obs(1, "running", 1, DeliveryOutcome::NotDelivered);
    o.webhook.system_json = Some("[]".into());
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

/// redeliver.rs (on_repo): drone answered v1 of a build only a hint named, and the repository
/// `repo` object had to be fetched first; meanwhile the pipeline took v2 from an unverified
/// webhook. The older state is not delivered on the fetch's answer: drone is asked again
/// first (found by `planner_props`: "re-delivery of 2 v1 after the pipeline had v2").
#[test]
fn a_claim_arriving_during_the_repository_fetch_defers_the_older_redelivery() {
    let mut r = Reconciler::new(config(""), 1);
    let hint = |status: &str, version: u64, outcome| {
        let mut o = obs(2, status, version, outcome);
        o.verified = false;
        o.webhook.repo_json = None;
        o.webhook.system_json = None;
        o
    };
    // Evidence names the repository (without its `repo` object, so none is at hand).
    let mut named = obs(1, "success", 3, DeliveryOutcome::Delivered);
    named.webhook.repo_json = None;
    r.observe(named, T0);
    r.observe(hint("pending", 1, DeliveryOutcome::NotDelivered), T0);
    let mut now = T0;
    let mut held = Vec::new();
    while held.is_empty() && now < T0 + 60_000 {
        now += 100;
        let mut calls = r.tick(now);
        while let Some(call) = calls.pop() {
            assert!(is_drone(&call), "nothing delivered before drone's answer");
            let lookup = looked_up(&call) == Some(2);
            let answer = if lookup {
                ok(api_build(2, "pending", 1))
            } else {
                ok(REPO_JSON.into())
            };
            let more = r.on_response(call.id, answer, now);
            if lookup {
                held = more; // the repository fetch the re-delivery of v1 waits for
            } else {
                calls.extend(more);
            }
        }
    }
    assert_eq!(held.len(), 1, "a repository fetch follows drone's answer");
    assert!(
        is_drone(&held[0]) && looked_up(&held[0]).is_none(),
        "{held:?}"
    );
    r.observe(hint("success", 2, DeliveryOutcome::Delivered), now);
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
        Record {
            repo: repo(),
            number,
            entry: e,
        }
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
