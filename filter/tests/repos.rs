//! Repository identities and objects (`core/repos.rs`, the reconciler's `Idents`): names from
//! evidence, drone and hints, their bounds and evictions, renames, and the bounded cache of
//! repository objects. Driven natively with a virtual clock.

mod common;

use common::*;
use status_sync::core::model::DeliveryOutcome::{Delivered, NotDelivered};
use status_sync::core::reconciler::Reconciler;
use status_sync::core::snapshot::{self};

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

/// The repository cache holds `max_repos` repositories' JSON: a re-delivery of any of them
/// needs no repository lookup; one more evicts the oldest, which is then fetched again.
#[test]
fn repository_cache_holds_max_repos() {
    let mut r = Reconciler::new(config(r#","max_repos":2,"max_inflight_calls":1"#), 1);
    for (id, number) in [(42u64, 1u64), (43, 1)] {
        // Drone's names are unique: 43 is octocat/repo-43.
        let mut o = obs(number, "running", 2, NotDelivered);
        o.webhook_mut().repo.id = id;
        if id != REPO_ID {
            o.webhook_mut().repo.name = format!("repo-{id}");
        }
        o.webhook_mut().repo_json = Some(REPO_JSON.replace("\"id\":42", &format!("\"id\":{id}")));
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
    let mut o = obs(1, "running", 2, Delivered);
    o.webhook_mut().repo.id = 44;
    o.webhook_mut().repo.name = "repo-44".into();
    o.webhook_mut().repo_json = Some(REPO_JSON.replace("\"id\":42", "\"id\":44"));
    r.observe(o, T0 + 10);
    let mut o = obs(1, "running", 3, NotDelivered);
    o.webhook_mut().repo_json = None;
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
        let mut r = seen_live("", &[(1, "running", 2)]);
        let mut o = obs(2, "running", 2, NotDelivered);
        o.webhook_mut().repo.namespace = namespace.into();
        o.webhook_mut().repo.name = name.into();
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
        let mut o = obs(id, "success", 3, Delivered);
        o.webhook_mut().repo.id = id;
        o.webhook_mut().repo.name = format!("repo-{id}");
        o.webhook_mut().repo_json = None;
        o.set_verified(verified);
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

/// A repository only a hint named, then confirmed by a verified webhook, leaves the
/// candidates' room; a confirmed one named again and again takes one place. Counted wrongly,
/// either would evict names that fit (repos.rs survivors: the kinds' counters).
#[test]
fn repository_identities_are_counted_once_per_kind() {
    let mut r = Reconciler::new(config(r#","max_repos":2"#), 1);
    let of = |id: u64, verified: bool| {
        let mut o = obs(1, "success", 3, Delivered);
        o.webhook_mut().repo.id = id;
        o.webhook_mut().repo.name = format!("repo-{id}");
        o.webhook_mut().repo_json = None;
        o.set_verified(verified);
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
