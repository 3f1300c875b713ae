//! Scans of the configured repositories (`scan_repos`, `core/reconciler/scan.rs`): when listings
//! are due, what they count, confirm and track, and the watermarks they raise. Driven natively
//! with a virtual clock.

#![allow(clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use status_sync::core::model::DeliveryOutcome;
use status_sync::core::reconciler::{CallResult, OutgoingCall, Reconciler};
use status_sync::core::snapshot::{self};

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

/// Ticks every 100 ms from `from` (inclusive) until the reconciler lists the repository;
/// returns the time and the call. Drone's other answers on the way: build lookups with
/// `lookup(number)` (None: no answer yet), the repository with `counter` (the newest build drone
/// has), and 501 for `/api/builds/incomplete` (drone's OSS build); the pipeline takes everything.
fn next_scan_with(
    r: &mut Reconciler,
    from: u64,
    counter: u64,
    lookup: &dyn Fn(u64) -> Option<CallResult>,
) -> (u64, OutgoingCall) {
    let mut t = from - 100;
    let listing = |c: &OutgoingCall| c.header(":path").is_some_and(|p| p.contains("/builds?"));
    let call = tick_until(r, &mut t, &listing, &mut |_, call, _| {
        if let Some(n) = looked_up(call) {
            return lookup(n);
        }
        Some(match call.header(":path") {
            _ if !is_drone(call) => http(200),
            Some("/api/repos/octocat/hello-world") => ok(repo_json_with_counter(counter)),
            Some("/api/builds/incomplete") => http(501),
            path => panic!("unexpected call {path:?}"),
        })
    });
    (t, call)
}

/// [`next_scan_with`], drone answering build lookups with the build running.
fn next_scan(r: &mut Reconciler, from: u64, counter: u64) -> (u64, OutgoingCall) {
    next_scan_with(r, from, counter, &|n| Some(ok(api_build(n, "running", 2))))
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
            o.webhook_mut().repo.id = id;
            o.webhook_mut().repo.name = format!("repo-{id}");
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
