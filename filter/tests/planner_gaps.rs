//! Gap filling (builds whose every webhook was lost, found by number), the watermarks that
//! carry it across a leader change, and the bounded repository cache: pinned where the mutation
//! run of reconciler.rs found them unpinned (benchmarks/results/mutants/).

// Helpers outside #[test] functions unwrap (clippy.toml allows it only inside them).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use status_sync::core::ledger::{Class, Entry};
use status_sync::core::model::{BuildKey, BuildStatus, DeliveryOutcome, RepoRef};
use status_sync::core::reconciler::Reconciler;
use status_sync::core::snapshot::{self, Record};

fn repo() -> RepoRef {
    RepoRef {
        id: REPO_ID,
        namespace: "octocat".into(),
        name: "hello-world".into(),
    }
}

/// (max, min) build numbers the watermarks carry for the repository.
fn marks(r: &mut Reconciler) -> Option<(u64, u64)> {
    let bytes = r.take_watermarks()?;
    let m = snapshot::decode_watermarks(&bytes).unwrap();
    m.iter()
        .find(|(repo, _, _)| repo.id == REPO_ID)
        .map(|(_, max, min)| (*max, *min))
}

/// A new leader that knows (from the watermarks) builds up to 10, and nothing else.
fn leader_after(max: u64, min: u64, extra: &str) -> Reconciler {
    let mut r = Reconciler::new(config(extra), 1);
    let bytes = snapshot::encode_watermarks(&[(repo(), max, min)]);
    assert!(r.load_watermarks(&bytes));
    r
}

#[test]
fn watermarks_follow_the_highest_and_lowest_numbers_seen() {
    let mut r = Reconciler::new(config(r#","max_gap_fill":3"#), 1);
    r.observe(obs(50, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(marks(&mut r), Some((50, 50)));
    r.observe(obs(45, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(marks(&mut r), Some((50, 45)), "lower: the minimum moves");
    r.observe(obs(47, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(marks(&mut r), None, "between: nothing changed");
    r.observe(obs(50, "running", 3, DeliveryOutcome::Delivered), T0);
    r.observe(obs(45, "running", 3, DeliveryOutcome::Delivered), T0);
    assert_eq!(
        marks(&mut r),
        None,
        "the same numbers again: nothing changed"
    );
    r.observe(obs(51, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(marks(&mut r), Some((51, 45)));
}

/// Upward, the numbers strictly between the highest seen and the new one, no more than
/// `max_gap_fill` of them, and not one the new leader learnt from the watermarks.
#[test]
fn upward_gap_is_exactly_the_numbers_between() {
    let mut r = leader_after(10, 10, r#","max_gap_fill":20"#);
    r.observe(obs(13, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(tracked(&r), vec![11, 12, 13]);
    assert_eq!(r.counters().builds_gap_filled, 2);
    // The next number: no gap.
    r.observe(obs(14, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(r.counters().builds_gap_filled, 2);
    assert_eq!(tracked(&r), vec![11, 12, 13, 14]);
}

/// Downward, nothing: a late build below the lowest number seen fills no gap (issue 20,
/// finding 1: the numbers between finished before the watch, or their own webhooks come).
#[test]
fn a_late_lower_number_fills_no_gap_below() {
    let mut r = leader_after(30, 30, r#","max_gap_fill":20"#);
    r.observe(obs(26, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(tracked(&r), vec![26]);
    r.observe(obs(25, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(tracked(&r), vec![25, 26]);
    assert_eq!(r.counters().builds_gap_filled, 0);
    assert_eq!(marks(&mut r), Some((30, 25)), "the lowest still moves");
}

/// Builds already tracked (here from a previous leader's snapshot) are not counted or tracked
/// twice by gap filling.
#[test]
fn gap_fill_skips_builds_already_tracked() {
    let mut r = leader_after(5, 5, r#","max_gap_fill":20"#);
    let mut e = Entry::new(T0, Class::Backed);
    e.settled_version = 2;
    e.settled_status = BuildStatus::Running;
    e.next_due_ms = T0 + 50_000;
    let shard = snapshot::encode_shard(&[Record {
        repo: repo(),
        number: 8,
        entry: e,
    }]);
    assert!(r.load_shard(&shard, T0));
    r.observe(obs(10, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(tracked(&r), vec![6, 7, 8, 9, 10]);
    assert_eq!(r.counters().builds_gap_filled, 3, "6, 7 and 9");
    let eight = BuildKey {
        repo_id: REPO_ID,
        number: 8,
    };
    assert_eq!(r.ledger().get(&eight).unwrap().settled_version, 2);
}

/// Gap-filled builds are inferred (drone may not have them): they go through the bounded
/// ledger within their quarter of it, the oldest evicted first and each eviction counted as a
/// give-up; they never evict a build backed by evidence, which takes the room that is left.
#[test]
fn gap_fill_into_a_full_ledger_counts_evictions() {
    // 8 builds, 2 of them inferred at most.
    let mut r = leader_after(10, 10, r#","max_gap_fill":20,"max_tracked_builds":8"#);
    r.observe(obs(15, "running", 2, DeliveryOutcome::Delivered), T0);
    // 11..=14 gap-filled through a share of two, then 15 (a verified webhook).
    assert_eq!(r.counters().builds_gap_filled, 4);
    assert_eq!(r.ledger().len(), 3);
    assert_eq!(r.counters().builds_evicted, 2);
    assert_eq!(r.counters().giveups, 2);
    assert_eq!(tracked(&r), vec![13, 14, 15]);
    // Backed builds fill the ledger: the inferred ones go first, then the oldest backed one.
    for n in 16..=22 {
        r.observe(obs(n, "running", 2, DeliveryOutcome::Delivered), T0);
    }
    assert_eq!(r.ledger().len(), 8);
    assert_eq!(tracked(&r), vec![15, 16, 17, 18, 19, 20, 21, 22]);
    assert_eq!(r.counters().builds_evicted, 4);
    r.observe(obs(23, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(tracked(&r), vec![16, 17, 18, 19, 20, 21, 22, 23]);
    assert_eq!(r.counters().builds_evicted, 5);
    assert_eq!(r.counters().giveups, 5);
    // A late lower build fills no gap below; 7 itself evicts the oldest backed build.
    r.observe(obs(7, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(tracked(&r), vec![7, 17, 18, 19, 20, 21, 22, 23]);
    assert_eq!(r.counters().builds_gap_filled, 4, "none below");
    assert_eq!(r.counters().builds_evicted, 6, "16");
    assert_eq!(r.counters().giveups, 6);
}

/// Builds below the lowest number seen, however many arrive late, fill no gap.
#[test]
fn lower_numbers_never_fill_downward() {
    let mut r = gap_fill_capped(20, &[(50, "success", 3), (45, "success", 3)]);
    assert_eq!(r.counters().builds_gap_filled, 0);
    assert_eq!(r.ledger().len(), 0, "both finished and delivered");
    r.observe(obs(40, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(tracked(&r), vec![40]);
    assert_eq!(r.counters().builds_gap_filled, 0);
}

/// The repository cache holds `max_repos` repositories' JSON: a re-delivery of any of them
/// needs no repository lookup; one more evicts the oldest, which is then fetched again.
#[test]
fn repository_cache_holds_max_repos() {
    let mut r = Reconciler::new(config(r#","max_repos":2,"max_inflight_calls":1"#), 1);
    for (id, number) in [(42u64, 1u64), (43, 1)] {
        // Drone's names are unique: 43 is octocat/repo-43.
        let mut o = obs(number, "running", 2, DeliveryOutcome::NotDelivered);
        o.webhook.repo.id = id;
        if id != REPO_ID {
            o.webhook.repo.name = format!("repo-{id}");
        }
        o.webhook.repo_json = Some(REPO_JSON.replace("\"id\":42", &format!("\"id\":{id}")));
        r.observe(o, T0);
    }
    for i in 0..2 {
        let calls = r.tick(T0 + i);
        assert_eq!(calls.len(), 1);
        assert!(r.is_inflight(calls[0].id));
        let path = calls[0].header(":path").unwrap().to_string();
        assert!(path.contains("/builds/"), "{path}");
        let id = if path.contains("/octocat/hello-world/") {
            REPO_ID
        } else {
            43
        };
        let follow = r.on_response(calls[0].id, ok(api_build_of(id, 1, "running", 3)), T0 + i);
        assert!(!r.is_inflight(calls[0].id));
        assert_eq!(follow.len(), 1);
        assert_eq!(follow[0].cluster, "pipeline", "no repository lookup needed");
        assert!(r.is_inflight(follow[0].id));
        r.on_response(follow[0].id, http(200), T0 + i);
    }
    // A third repository evicts the first one's JSON.
    let mut o = obs(1, "running", 2, DeliveryOutcome::Delivered);
    o.webhook.repo.id = 44;
    o.webhook.repo.name = "repo-44".into();
    o.webhook.repo_json = Some(REPO_JSON.replace("\"id\":42", "\"id\":44"));
    r.observe(o, T0 + 10);
    let mut o = obs(1, "running", 3, DeliveryOutcome::NotDelivered);
    o.webhook.repo_json = None;
    r.observe(o, T0 + 20);
    let calls = r.tick(T0 + 20);
    assert_eq!(calls.len(), 1);
    let follow = r.on_response(calls[0].id, ok(api_build(1, "running", 4)), T0 + 20);
    assert_eq!(follow.len(), 1);
    assert_eq!(
        follow[0].header(":path"),
        Some("/api/repos/octocat/hello-world"),
        "repository 42's JSON was evicted: looked up"
    );
}

/// A repository renamed or moved in drone (same id) is addressed by its new name from the next
/// webhook on.
#[test]
fn renamed_repository_is_looked_up_under_its_new_name() {
    for (namespace, name) in [("octocat", "renamed"), ("new-owner", "hello-world")] {
        let mut r = Reconciler::new(config(""), 1);
        r.observe(obs(1, "running", 2, DeliveryOutcome::Delivered), T0);
        let mut o = obs(2, "running", 2, DeliveryOutcome::NotDelivered);
        o.webhook.repo.namespace = namespace.into();
        o.webhook.repo.name = name.into();
        r.observe(o, T0);
        let calls = r.tick(T0);
        assert_eq!(calls.len(), 1);
        assert_eq!(
            calls[0].header(":path"),
            Some(format!("/api/repos/{namespace}/{name}/builds/2").as_str())
        );
    }
}

/// Repository identities are bounded: at most twice `max_repos` named by evidence or drone, and
/// `max_repos` named only by unverified webhooks, the oldest of a kind going first, each
/// counted in `repos_evicted`; the watermarks keep `max_repos` of those left, the highest
/// numbers first. Hints never push out a confirmed name.
#[test]
fn repository_identities_are_bounded() {
    let mut r = Reconciler::new(config(r#","max_repos":10"#), 1);
    let of = |id: u64, verified: bool| {
        let mut o = obs(id, "success", 3, DeliveryOutcome::Delivered);
        o.webhook.repo.id = id;
        o.webhook.repo.name = format!("repo-{id}");
        o.webhook.repo_json = None;
        o.verified = verified;
        o
    };
    for id in 1..=25u64 {
        r.observe(of(id, true), T0);
    }
    assert_eq!(r.ledger().len(), 0);
    assert_eq!(r.counters().repos_evicted, 5);
    let marks = snapshot::decode_watermarks(&r.take_watermarks().unwrap()).unwrap();
    let mut ids: Vec<u64> = marks.iter().map(|m| m.0.id).collect();
    ids.sort();
    assert_eq!(ids, (16..=25).collect::<Vec<u64>>(), "the highest numbers");
    assert_eq!(r.repo_confirmed(5), None);
    assert!(r.repo_confirmed(6).is_some());
    // Thirteen repositories only hints name: ten candidates kept, three evicted.
    for id in 100..=112u64 {
        r.observe(of(id, false), T0);
    }
    assert_eq!(r.counters().repos_evicted, 8);
    assert!((6..=25).all(|id| r.repo_confirmed(id).is_some()));
}

/// A tick with nothing due spends no token: the build due next is looked up at the first tick
/// at or after its due time even at 1 call per second.
#[test]
fn ticks_with_nothing_due_spend_no_token() {
    let mut r = Reconciler::new(config(r#","max_drone_calls_per_sec":1"#), 1);
    r.observe(obs(1, "running", 2, DeliveryOutcome::Delivered), T0);
    let key = BuildKey {
        repo_id: REPO_ID,
        number: 1,
    };
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

/// A build is given up when it has been open longer than `max_build_age_ms`, not at exactly
/// that age; the give-up is counted twice over (its kind, and all give-ups).
#[test]
fn build_age_limit_is_exclusive_and_counted() {
    let cfg = r#","max_build_age_ms":60000"#;
    let mut r = Reconciler::new(config(cfg), 1);
    let mut e = Entry::new(T0, Class::Backed);
    e.settled_version = 2;
    e.settled_status = BuildStatus::Running;
    e.interval_ms = 1000;
    e.next_due_ms = T0 + 60_000;
    let record = |number| Record {
        repo: repo(),
        number,
        entry: e,
    };
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

/// Ticks every 100 ms from `from` until the reconciler lists the repository; returns the time
/// and the call. Drone's other answers on the way: the repository with `counter` (the newest
/// build drone has), and 501 for `/api/builds/incomplete` (drone's OSS build).
fn next_scan(
    r: &mut Reconciler,
    from: u64,
    counter: u64,
) -> (u64, status_sync::core::reconciler::OutgoingCall) {
    next_scan_with(r, from, counter, &|n| Some(ok(api_build(n, "running", 2))))
}

/// [`next_scan`], drone answering build lookups with `lookup(number)` (None: no answer yet).
fn next_scan_with(
    r: &mut Reconciler,
    from: u64,
    counter: u64,
    lookup: &dyn Fn(u64) -> Option<status_sync::core::reconciler::CallResult>,
) -> (u64, status_sync::core::reconciler::OutgoingCall) {
    let mut t = from;
    loop {
        let mut calls = r.tick(t);
        while let Some(call) = calls.pop() {
            // Lookups of tracked builds on the way: drone has them running, the pipeline
            // takes them.
            if let Some(n) = looked_up(&call) {
                if let Some(answer) = lookup(n) {
                    calls.extend(r.on_response(call.id, answer, t));
                }
                continue;
            }
            if call.cluster == "pipeline" {
                r.on_response(call.id, http(200), t);
                continue;
            }
            if call.header(":path") == Some("/api/repos/octocat/hello-world") {
                calls.extend(r.on_response(call.id, ok(repo_json_with_counter(counter)), t));
                continue;
            }
            if call.header(":path") == Some("/api/builds/incomplete") {
                calls.extend(r.on_response(call.id, http(501), t));
                continue;
            }
            assert!(calls.is_empty());
            let path = call.header(":path").unwrap();
            assert!(
                path.starts_with("/api/repos/octocat/hello-world/builds?"),
                "{path}"
            );
            return (t, call);
        }
        t += 100;
        assert!(t < from + 60_000, "no scan");
    }
}

/// Listing the configured repositories: the first listing is due at a tenth of the interval
/// (inclusive), failures count, 5xx ones feed the circuit (4xx do not), successes count and
/// close it, and only a newer build number changes the watermarks.
#[test]
fn scans_are_counted_and_feed_the_circuit() {
    let cfg = r#","scan_repos":["octocat/hello-world"],"scan_interval_ms":10000,"circuit_failure_threshold":1"#;
    let mut r = Reconciler::new(config(cfg), 1);
    assert!(r.tick(999).is_empty());
    let (at, call) = next_scan(&mut r, 1000, 20);
    assert_eq!(at, 1000, "due at scan_interval_ms / 10");
    r.on_response(call.id, http(503), at);
    assert_eq!(r.counters().drone_polls_failed, 1);
    assert_eq!(r.counters().circuit_opens, 1);
    assert_eq!(r.counters().circuit_open, 1);
    let (at, call) = next_scan(&mut r, at + 100, 20);
    assert!((9000..=13_100).contains(&at), "{at}");
    r.on_response(call.id, ok(build_list(&[(20, "success", 3)])), at);
    assert_eq!(r.counters().drone_polls_ok, 1);
    assert_eq!(r.counters().circuit_open, 0);
    let marks = snapshot::decode_watermarks(&r.take_watermarks().unwrap()).unwrap();
    assert_eq!(marks[0].1, 20, "the baseline");
    assert_eq!(
        r.counters().builds_scan_found,
        0,
        "the first listing only sets it"
    );
    // The same newest build again: nothing changed.
    let (at, call) = next_scan(&mut r, at + 100, 20);
    r.on_response(call.id, ok(build_list(&[(20, "success", 3)])), at);
    assert_eq!(r.counters().drone_polls_ok, 2);
    assert!(r.take_watermarks().is_none());
    // A newer one: tracked, due at once.
    let (at, call) = next_scan(&mut r, at + 100, 21);
    r.on_response(
        call.id,
        ok(build_list(&[(21, "running", 2), (20, "success", 3)])),
        at,
    );
    assert_eq!(r.counters().builds_scan_found, 1);
    assert_eq!(tracked(&r), vec![21]);
    assert!(r.take_watermarks().is_some());
    // A 4xx is drone's answer, not an outage: counted as failed, the circuit stays closed
    // (only 5xx, timeouts and resets open it).
    let (at, call) = next_scan(&mut r, at + 100, 21);
    let failed = r.counters().drone_polls_failed;
    r.on_response(call.id, http(404), at);
    assert_eq!(r.counters().drone_polls_failed, failed + 1);
    assert_eq!(r.counters().circuit_opens, 1);
    assert_eq!(r.counters().circuit_open, 0);
}

/// A listed build that is already tracked is not found twice. Here 21 was found by the
/// previous listing and drone has not answered its lookup yet (so the highest number known is
/// still 20) when the next listing shows it again.
#[test]
fn scan_skips_builds_already_tracked() {
    let cfg =
        r#","scan_repos":["octocat/hello-world"],"scan_interval_ms":10000,"call_timeout_ms":60000"#;
    let mut r = Reconciler::new(config(cfg), 1);
    let slow = |_| None;
    let (at, call) = next_scan_with(&mut r, 1000, 20, &slow);
    r.on_response(call.id, ok(build_list(&[(20, "success", 3)])), at);
    let (at, call) = next_scan_with(&mut r, at + 100, 21, &slow);
    r.on_response(call.id, ok(build_list(&[(21, "running", 2)])), at);
    assert_eq!(r.counters().builds_scan_found, 1);
    let (at, call) = next_scan_with(&mut r, at + 100, 22, &slow);
    assert_eq!(tracked(&r), vec![21], "its lookup is on its way");
    r.on_response(
        call.id,
        ok(build_list(&[(22, "running", 2), (21, "running", 2)])),
        at,
    );
    assert_eq!(r.counters().builds_scan_found, 2, "22 only");
    assert_eq!(tracked(&r), vec![21, 22]);
}

/// Builds found by a listing go through the same bounded ledger: evictions are counted.
#[test]
fn scan_into_a_full_ledger_counts_evictions() {
    let cfg =
        r#","scan_repos":["octocat/hello-world"],"scan_interval_ms":10000,"max_tracked_builds":1"#;
    let mut r = Reconciler::new(config(cfg), 1);
    let (at, call) = next_scan(&mut r, 1000, 20);
    r.on_response(call.id, ok(build_list(&[(20, "success", 3)])), at);
    let (at, call) = next_scan(&mut r, at + 100, 23);
    r.on_response(
        call.id,
        ok(build_list(&[
            (23, "running", 2),
            (22, "running", 2),
            (21, "success", 3),
        ])),
        at,
    );
    assert_eq!(r.counters().builds_scan_found, 3);
    assert_eq!(r.ledger().len(), 1);
    assert_eq!(r.counters().builds_evicted, 2);
    assert_eq!(r.counters().giveups, 2);
}

fn killed_record(number: u64, last_change: u64, due: u64) -> Record {
    let mut e = Entry::new(last_change, Class::Backed);
    e.settled_version = 3;
    e.settled_status = BuildStatus::Killed;
    e.interval_ms = 8000;
    e.next_due_ms = due;
    Record {
        repo: repo(),
        number,
        entry: e,
    }
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
    let eight = BuildKey {
        repo_id: REPO_ID,
        number: 8,
    };
    assert_eq!(r.ledger().tombstone(&eight), Some(3));
}

/// A snapshot larger than this ledger: the overflow is evicted and counted as give-ups.
#[test]
fn loading_a_snapshot_into_a_smaller_ledger_counts_evictions() {
    let mut r = Reconciler::new(config(r#","max_tracked_builds":2"#), 1);
    let records: Vec<Record> = (1..=5).map(|n| killed_record(n, T0, T0 + 1000)).collect();
    assert!(r.load_shard(&snapshot::encode_shard(&records), T0));
    assert_eq!(r.ledger().len(), 2);
    let c = r.counters();
    // (evicted, give-ups, tracked)
    assert_eq!((c.builds_evicted, c.giveups, c.builds_tracked), (3, 3, 2));
}

/// Watermarks list only repositories a webhook or listing showed a build number for (a
/// repository known from a snapshot alone has none).
#[test]
fn watermarks_leave_out_repositories_without_numbers() {
    let mut r = Reconciler::new(config(""), 1);
    let mut other = killed_record(8, T0, T0 + 1000);
    other.repo = RepoRef {
        id: 7,
        namespace: "o".into(),
        name: "n".into(),
    };
    assert!(r.load_shard(&snapshot::encode_shard(&[other]), T0));
    r.observe(obs(3, "running", 2, DeliveryOutcome::Delivered), T0);
    let marks = snapshot::decode_watermarks(&r.take_watermarks().unwrap()).unwrap();
    let ids: Vec<u64> = marks.iter().map(|m| m.0.id).collect();
    assert_eq!(ids, vec![REPO_ID]);
}

/// A repository answer for another repository is unusable: counted as a failed call, the
/// build retried, nothing delivered. A good one counts as a successful call.
#[test]
fn repository_answer_must_be_the_repository_asked_for() {
    let mut r = Reconciler::new(config(""), 1);
    let mut o = obs(2, "running", 2, DeliveryOutcome::NotDelivered);
    o.webhook.repo_json = None;
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

/// The shell reports undecodable queue messages and snapshot errors through these counters.
#[test]
fn shell_reported_errors_are_counted() {
    let mut r = Reconciler::new(config(""), 1);
    r.invalid_observation();
    r.invalid_observation();
    r.snapshot_error();
    assert_eq!(r.counters().observations_invalid, 2);
    assert_eq!(r.counters().snapshot_errors, 1);
}

/// Loaded watermarks give a new leader the lowest number too (a later, lower webhook moves it,
/// and fills no gap below: issue 20, finding 1); a loaded minimum of 0 (none) never replaces a
/// known one.
#[test]
fn loaded_watermarks_carry_the_lowest_number() {
    let mut r = leader_after(30, 20, r#","max_gap_fill":20"#);
    r.observe(obs(31, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(marks(&mut r), Some((31, 20)));
    r.observe(obs(17, "running", 2, DeliveryOutcome::Delivered), T0);
    assert_eq!(tracked(&r), vec![17, 31]);
    // A minimum of 0 (none) and a higher one change nothing; a lower one lowers it.
    for (next, min, want) in [(41, 0, 17), (42, 25, 17), (43, 5, 5)] {
        let bytes = snapshot::encode_watermarks(&[(repo(), 40, min)]);
        assert!(r.load_watermarks(&bytes));
        // The next number above the highest: no gap, but the watermarks change.
        r.observe(obs(next, "running", 2, DeliveryOutcome::Delivered), T0);
        assert_eq!(marks(&mut r), Some((next, want)), "loaded minimum {min}");
    }
    assert!(!r.load_watermarks(b"garbage"));
}

/// The snapshot layout: shards of 64 builds, all rewritten on request (after loading a
/// snapshot written with another layout).
#[test]
fn all_shards_are_rewritten_on_request() {
    let mut r = Reconciler::new(config(r#","max_tracked_builds":10000"#), 1);
    assert_eq!(r.shard_count(), 157);
    assert!(r.take_dirty_shards().is_empty());
    r.mark_all_dirty();
    let shards = r.take_dirty_shards();
    assert_eq!(shards.len(), 157);
    assert!(shards.iter().enumerate().all(|(i, (s, _))| *s == i as u32));
    assert!(r.take_dirty_shards().is_empty());
}

/// Over `max_repos`, ties at the cut-off number fill the cap exactly.
#[test]
fn watermarks_cut_ties_at_the_cap() {
    let mut r = Reconciler::new(config(r#","max_repos":3"#), 1);
    for (id, number) in [(1u64, 50u64), (2, 30), (3, 30), (4, 30), (5, 10)] {
        let mut o = obs(number, "running", 2, DeliveryOutcome::Delivered);
        o.webhook.repo.id = id;
        o.webhook.repo_json = None;
        r.observe(o, T0);
    }
    let m = snapshot::decode_watermarks(&r.take_watermarks().unwrap()).unwrap();
    let mut numbers: Vec<u64> = m.iter().map(|m| m.1).collect();
    numbers.sort();
    assert_eq!(numbers, vec![30, 30, 50]);
}

/// A repository only a hint named, then confirmed by a verified webhook, leaves the
/// candidates' room; a confirmed one named again and again takes one place. Counted wrongly,
/// either would evict names that fit (repos.rs survivors: the kinds' counters).
#[test]
fn repository_identities_are_counted_once_per_kind() {
    let mut r = Reconciler::new(config(r#","max_repos":2"#), 1);
    let of = |id: u64, verified: bool| {
        let mut o = obs(1, "success", 3, DeliveryOutcome::Delivered);
        o.webhook.repo.id = id;
        o.webhook.repo.name = format!("repo-{id}");
        o.webhook.repo_json = None;
        o.verified = verified;
        o
    };
    // 1 a candidate, then confirmed: two more candidates fit (max_repos 2).
    r.observe(of(1, false), T0);
    r.observe(of(1, true), T0);
    r.observe(of(2, false), T0);
    r.observe(of(3, false), T0);
    assert_eq!(r.counters().repos_evicted, 0);
    // 1 and 4 confirmed (room for 2 × max_repos = 4), named again and again: still room for
    // two more confirmed names.
    r.observe(of(4, true), T0);
    for _ in 0..5 {
        r.observe(of(1, true), T0);
        r.observe(of(4, true), T0);
    }
    r.observe(of(5, true), T0);
    r.observe(of(6, true), T0);
    assert_eq!(r.counters().repos_evicted, 0);
    assert!([1, 4, 5, 6]
        .iter()
        .all(|id| r.repo_confirmed(*id).is_some()));
    // One more evicts the oldest confirmed name.
    r.observe(of(7, true), T0);
    assert_eq!(r.counters().repos_evicted, 1);
    assert_eq!(r.repo_confirmed(1), None);
}

/// A build whose lookup was in flight when the old leader wrote the snapshot is looked up at
/// once by the new one (snapshot::reschedule_in_flight).
#[test]
fn build_in_flight_in_a_snapshot_is_due_at_once() {
    let mut e = Entry::new(T0, Class::Backed);
    e.settled_version = 2;
    e.settled_status = BuildStatus::Running;
    e.next_due_ms = status_sync::core::ledger::NOT_SCHEDULED;
    let shard = snapshot::encode_shard(&[Record {
        repo: repo(),
        number: 4,
        entry: e,
    }]);
    let mut r = Reconciler::new(config(""), 1);
    assert!(r.load_shard(&shard, T0));
    let calls = r.tick(T0);
    assert_eq!(calls.len(), 1);
    assert_eq!(looked_up(&calls[0]), Some(4));
}
