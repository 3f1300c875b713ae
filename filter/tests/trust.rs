//! The trust boundary of the reconciler (the trust-boundary issue, attacks 3 to 6 and 8):
//! unverified webhooks are hints, drone's API is the authority. Driven natively with a
//! virtual clock against a small drone that answers like drone 2.25 does (404 for unknown
//! repositories and builds, 400 for a build number that is not an int64).

#![allow(clippy::unwrap_used)]

use status_sync::core::ledger::Class;
use status_sync::core::model::DeliveryOutcome::{self, Delivered, NotDelivered, Refused};
use status_sync::core::model::ParsedWebhook;
use status_sync::core::observation::Observation;
mod common;

use common::tick_until;
use common::world::*;

/// The drone token of `common::config`.
const TOKEN: &str = "t0k3n";
const SECRET: &str = "s3cret-webhook-key";

fn seen(webhook: ParsedWebhook, outcome: DeliveryOutcome, verified: bool) -> Observation {
    Observation::for_tests(webhook, outcome, verified)
}

/// [`forged`], naming the repository `namespace/name`.
fn forged_as(
    namespace: &str,
    name: &str,
    number: u64,
    status: &str,
    version: u64,
) -> ParsedWebhook {
    let mut h = forged(42, number, status, version);
    h.repo.namespace = namespace.into();
    h.repo.name = name.into();
    h
}

/// What an attacker who can reach the pipeline sends: its own names, labels and `system`.
fn forged(id: u64, number: u64, status: &str, version: u64) -> ParsedWebhook {
    let mut h = hook_of(id, number, status, version);
    h.repo.namespace = "..".into();
    h.repo.name = "..".into();
    h.repo_json = Some(format!(
        r#"{{"id":{id},"namespace":"..","name":"..","slug":"evil/labels","counter":0}}"#
    ));
    h.system_json =
        Some(r#"{"proto":"https","host":"evil.example","link":"https://evil.example"}"#.into());
    h
}

/// A reconciler configured with `extra` (see `common::config`), and drone holding it to the
/// token.
fn sim(extra: &str) -> Sim {
    let mut s = Sim::new(common::config(extra));
    s.drone.token = Some(TOKEN);
    s
}

/// Configuration of a webhook secret and `signature_mode` `mode` (see [`sim`]).
fn signed(mode: &str) -> String {
    format!(r#","webhook_secret":"{SECRET}","signature_mode":"{mode}""#)
}

/// Drone has build `number` of repository `id` at (`status`, `version`), and its webhook
/// reached the pipeline (`verified` by drone's signature or not).
fn announced(s: &mut Sim, id: u64, number: u64, status: &str, version: u64, verified: bool) {
    s.drone.set(id, number, status, version);
    s.saw(hook_of(id, number, status, version), Delivered, verified);
}

/// Attack 3: an unsigned webhook with a real `repo.id` and the names `..`/`..` and its own
/// `system`. Drone is never asked about builds under the attacker's name, the identity is not
/// taken, and re-deliveries (signed, here) carry drone's repository and no attacker bytes.
#[test]
fn attack3_forged_names_never_steer_lookups_or_redeliveries() {
    for attacker_first in [true, false] {
        let mut s = sim(&signed("monitor"));
        s.drone.set(42, 5, "running", 2);
        let genuine = seen(hook_of(42, 5, "running", 2), Delivered, false);
        let evil = seen(forged(42, 5, "success", 9), Delivered, false);
        if attacker_first {
            s.observe(evil.clone());
            s.run(3000);
            s.observe(genuine);
        } else {
            s.observe(genuine);
            s.run(3000);
            s.observe(evil.clone());
        }
        s.run(3000);
        // Drone's build moves on; the final webhook is lost; the attacker keeps trying.
        s.drone.set(42, 5, "success", 3);
        for _ in 0..20 {
            s.observe(evil.clone());
            s.run(500);
        }
        s.run(20_000);
        assert!(
            s.drone
                .build_calls()
                .iter()
                .all(|p| p.starts_with("/api/repos/octocat/hello-world/builds/")),
            "build lookups only under drone's name: {:?}",
            s.drone.calls
        );
        assert!(
            s.drone
                .calls
                .iter()
                .all(|p| !p.contains("/../") && !p.ends_with("/..")),
            "{:?}",
            s.drone.calls
        );
        assert_eq!(s.r.repo_confirmed(42), Some(("octocat", "hello-world")));
        let last = s.delivered.last().expect("the lost final was re-delivered");
        assert_eq!((last.status.as_str(), last.version), ("success", 3));
        for d in &s.delivered {
            assert!(d.signed);
            assert!(!d.body.contains("evil"), "attacker bytes in {}", d.body);
            assert!(!d.body.contains(".."), "attacker names in {}", d.body);
            assert!(d.body.contains(r#""slug":"octocat/hello-world""#));
            assert!(
                !d.body.contains("\"system\""),
                "no evidence, no system: {}",
                d.body
            );
        }
        assert!(s.r.counters().hints_refuted >= 1);
    }
}

/// Attack 3, evidence side: a verified webhook names the repository and supplies `repo` and
/// `system`; a later unverified one cannot rename it or replace either object.
#[test]
fn attack3_hints_never_rename_or_replace_evidence() {
    let mut s = sim(&signed("monitor"));
    announced(&mut s, 42, 5, "running", 2, true);
    s.saw(forged(42, 5, "running", 2), NotDelivered, false);
    s.drone.set(42, 5, "failure", 3);
    s.run(20_000);
    assert_eq!(s.r.repo_confirmed(42), Some(("octocat", "hello-world")));
    assert_eq!(s.delivered.len(), 1, "{:?}", s.delivered);
    let body = &s.delivered[0].body;
    assert!(body.contains(r#""system":{"proto":"https","host":"drone.example.com"}"#));
    assert!(!body.contains("evil") && !body.contains(".."), "{body}");
    assert!(s
        .drone
        .build_calls()
        .iter()
        .all(|p| p.starts_with("/api/repos/octocat/hello-world/")));
}

/// Attack 4: a forged `success` at the highest int64 version, which the pipeline refused (401),
/// and a forged `running` at that version on a tracked build. Neither settles or forgets the
/// build: drone's real final state is re-delivered.
#[test]
fn attack4_forged_terminal_or_huge_version_never_settles() {
    let max = i64::MAX as u64;
    // (a) forged final first, on a build the filter did not track yet.
    let mut s = sim("");
    s.drone.set(42, 7, "running", 2);
    s.saw(hook_of(42, 7, "success", max), Refused, false);
    assert_eq!(s.r.ledger().len(), 1, "a hint never tombstones");
    s.run(3000);
    s.drone.set(42, 7, "success", 6);
    s.run(30_000);
    let got = s.states();
    assert_eq!(got.last(), Some(&("success".to_string(), 6)), "{got:?}");
    assert_eq!(
        s.r.ledger().len(),
        0,
        "forgotten once drone's final is delivered"
    );

    // (b) forged `running` at the top version on a build drone already backs.
    let mut s = sim("");
    announced(&mut s, 42, 8, "running", 2, true);
    s.saw(hook_of(42, 8, "running", max), Delivered, false);
    s.drone.set(42, 8, "success", 6);
    s.run(30_000);
    let got = s.states();
    assert_eq!(got, vec![("success".to_string(), 6)]);
    assert!(s.r.counters().hints_refuted >= 1);

    // (c) beyond int64: not drone's, not even a hint.
    let mut s = sim("");
    s.saw(hook_of(42, 9, "success", u64::MAX), Delivered, false);
    assert_eq!(s.r.ledger().len(), 0);
    assert_eq!(s.r.counters().observations_invalid, 1);
}

/// Attack 5: build numbers drone answers 400 or 404 for, and a 403 for one build, never open
/// the circuit: other builds are still looked up and delivered. 5xx still open it.
#[test]
fn attack5_answers_about_one_build_never_open_the_circuit() {
    let mut s = sim(r#","circuit_failure_threshold":3"#);
    announced(&mut s, 42, 1, "running", 2, true);
    // Numbers beyond int64 are refused before they reach the ledger; numbers drone does not
    // have are looked up once and forgotten.
    for i in 0..5u64 {
        s.unsigned(hook_of(42, (1 << 63) + i, "running", 1), NotDelivered);
        s.unsigned(hook_of(42, 1_000_000 + i, "running", 1), NotDelivered);
    }
    // A repository whose builds drone refuses to show (403) backs off alone.
    s.drone.set(7, 1, "running", 2);
    s.drone.fail.insert(7, 403);
    s.saw(hook_of(7, 1, "running", 2), NotDelivered, true);
    s.run(5000);
    s.drone.set(42, 1, "success", 3);
    s.run(10_000);
    assert_eq!(s.r.counters().circuit_opens, 0, "{:?}", s.r.counters());
    assert_eq!(s.r.counters().observations_invalid, 5);
    assert_eq!(s.r.counters().hints_refuted, 5);
    assert!(s
        .delivered
        .iter()
        .any(|d| d.repo == 42 && d.number == 1 && d.version == 3));
    assert!(
        s.r.ledger().get(&key_of(7, 1)).is_some(),
        "backed off, not dropped"
    );

    // 5xx: drone is unwell, the circuit opens.
    s.drone.down = true;
    s.run(60_000);
    assert!(s.r.counters().circuit_opens >= 1);
}

/// Attack 6: forged webhooks with numbers far apart (`101 + 1000 i`) and one near 2^63. They
/// fill only the hint share of the ledger, never evict builds backed by evidence, never fill
/// gaps and never raise the watermarks; real gaps are still filled afterwards.
#[test]
fn attack6_hints_have_their_own_share_and_never_move_watermarks() {
    let mut s = sim(r#","max_tracked_builds":1000"#);
    for n in 1..=600 {
        announced(&mut s, 42, n, "running", 2, true);
    }
    let marks_before = s.r.take_watermarks();
    assert!(marks_before.is_some());
    for i in 0..600u64 {
        s.unsigned(hook_of(42, 101 + 1000 * (i + 1), "running", 1), Delivered);
    }
    s.saw(hook_of(42, (1 << 63) - 1, "running", 1), Delivered, false);
    let ledger = s.r.ledger();
    assert_eq!(
        ledger.count(Class::Backed),
        600,
        "no evidence-backed build evicted"
    );
    assert_eq!(ledger.count(Class::Hint), ledger.share());
    assert_eq!(s.r.counters().builds_gap_filled, 0, "hints never fill gaps");
    assert!(
        s.r.take_watermarks().is_none(),
        "hints never raise watermarks"
    );
    // Drone refutes the forged builds; a real gap (603 after 600) is still filled.
    s.drone.set(42, 601, "declined", 2);
    s.drone.set(42, 602, "success", 3);
    announced(&mut s, 42, 603, "pending", 1, true);
    assert_eq!(s.r.counters().builds_gap_filled, 2);
    s.run(120_000);
    assert!(s.r.counters().hints_refuted >= 250, "{:?}", s.r.counters());
    for n in [601, 602] {
        assert!(
            s.delivered.iter().any(|d| d.number == n),
            "gap {n} filled: {:?}",
            s.delivered.len()
        );
    }
    let marks = s.r.take_watermarks().unwrap();
    let kept = status_sync::core::snapshot::decode_watermarks(&marks).unwrap();
    assert_eq!(kept[0].1, 603, "watermark from evidence and drone only");
}

/// Gap-filled (inferred) builds have their own share too and cannot evict backed builds.
#[test]
fn inferred_builds_cannot_evict_backed_ones() {
    let mut s = sim(r#","max_tracked_builds":40,"max_gap_fill":1000"#);
    s.saw(hook_of(42, 1, "running", 2), Delivered, true);
    for n in 2..=30 {
        s.saw(hook_of(42, n * 100, "running", 2), Delivered, true);
    }
    let ledger = s.r.ledger();
    assert_eq!(ledger.count(Class::Backed), 30);
    assert_eq!(
        ledger.count(Class::Inferred),
        10,
        "the rest of the ledger, below its share"
    );
    assert!(s.r.counters().builds_gap_filled > 1000);
}

/// In `off` mode every webhook is a hint: each build costs drone lookups, yet every build
/// converges to drone's state without a single re-delivery of what the pipeline had.
#[test]
fn off_mode_settles_on_drones_confirmation() {
    let mut s = sim("");
    for n in 1..=20u64 {
        announced(&mut s, 42, n, "pending", 1, false);
    }
    s.run(3000);
    for n in 1..=20u64 {
        s.drone.set(42, n, "success", 3);
        // Every other final webhook is lost.
        if n % 2 == 0 {
            s.saw(hook_of(42, n, "success", 3), Delivered, false);
        }
    }
    s.run(60_000);
    let mut got: Vec<u64> = s.delivered.iter().map(|d| d.number).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=20).filter(|n| n % 2 == 1).collect::<Vec<_>>());
    assert!(s
        .delivered
        .iter()
        .all(|d| d.status == "success" && d.version == 3));
    assert_eq!(s.r.ledger().len(), 0, "confirmed by drone, then forgotten");
    let per_build = s.drone.calls.len() as f64 / 20.0;
    assert!(per_build <= 3.0, "{per_build} drone calls per build");
}

/// A claim that raced the lookup (drone answered before it wrote what the webhook says) is
/// not contradicted at once: the build is asked about again, and nothing older is delivered.
#[test]
fn a_claim_racing_the_lookup_is_asked_about_again() {
    let mut s = sim("");
    s.drone.set(42, 3, "running", 2);
    s.saw(hook_of(42, 3, "running", 1), Delivered, false);
    // The repository's confirmation first.
    let confirm = s.call_to(1500, "/api/repos/octocat/hello-world");
    s.answer_from_drone(&confirm);
    let call = s.call_to(1500, "/api/repos/octocat/hello-world/builds/3");
    let stale = s.drone.answer(&call); // running v2
    announced(&mut s, 42, 3, "success", 3, false);
    assert!(
        s.r.on_response(call.id, stale, s.now).is_empty(),
        "v2 not delivered over the claim"
    );
    s.run(10_000);
    assert!(s.delivered.is_empty(), "{:?}", s.delivered);
    assert_eq!(s.r.ledger().len(), 0);
}

/// Issue 20, finding 2: a forged webhook the pipeline refused (401: it verifies drone's
/// signature) is no claim at all. Drone's real final state, whose webhook was lost, is
/// re-delivered even though the forgery guessed it (version and status) exactly.
#[test]
fn a_refused_forgery_is_no_claim_and_settles_nothing() {
    let mut s = sim("");
    announced(&mut s, 42, 7, "running", 2, true);
    // The genuine `failure v5` is lost; a forged one, unsigned, is answered 401.
    s.drone.set(42, 7, "failure", 5);
    s.saw(hook_of(42, 7, "failure", 5), Refused, false);
    s.run(60_000);
    assert_eq!(s.states(), vec![("failure".to_string(), 5)]);
    assert_eq!(s.r.ledger().len(), 0, "delivered, then finished");
}

/// A claim settles only when drone shows its version *and* its status: a forged `success v5`
/// the pipeline took does not settle drone's `failure v5` (pins the status half of the match).
#[test]
fn a_claim_with_drones_version_but_another_status_settles_nothing() {
    let mut s = sim("");
    announced(&mut s, 42, 8, "running", 2, true);
    s.drone.set(42, 8, "failure", 5);
    s.saw(hook_of(42, 8, "success", 5), Delivered, false);
    s.run(60_000);
    assert_eq!(s.states(), vec![("failure".to_string(), 5)]);
}

/// "One look at most": a forged claim racing every lookup of a build defers its re-delivery
/// once; at the second lookup drone's state is delivered, however many claims keep racing.
#[test]
fn forged_claims_racing_every_lookup_defer_a_redelivery_once() {
    let mut s = sim("");
    announced(&mut s, 42, 3, "running", 1, true);
    s.drone.set(42, 3, "success", 4); // its webhook lost
    let path = "/api/repos/octocat/hello-world/builds/3";
    let mut lookups = 0;
    let mut delivered = None;
    'looks: for forged_version in 10.. {
        // The next lookup of build 3 (other calls are answered as drone would).
        let drone = &mut s.drone;
        let call = tick_until(
            &mut s.r,
            &mut s.now,
            &|c| c.header(":path") == Some(path),
            &mut |_, c, _| Some(drone.answer(c)),
        );
        lookups += 1;
        // A forged claim above drone's state arrives while the lookup is on its way.
        s.saw(hook_of(42, 3, "success", forged_version), Delivered, false);
        let answer = s.drone.answer(&call);
        for c in s.r.on_response(call.id, answer, s.now) {
            if c.cluster == "pipeline" {
                let v: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
                delivered = Some((
                    v["build"]["status"].as_str().unwrap().to_string(),
                    v["build"]["version"].as_u64().unwrap(),
                ));
                break 'looks;
            }
        }
        assert!(lookups < 5, "still deferred after {lookups} lookups");
    }
    assert_eq!(lookups, 2, "one deferral, then drone's state");
    assert_eq!(delivered, Some(("success".to_string(), 4)));
}

/// Attack 8: the bearer token and the webhook signature never appear in `Debug`.
#[test]
fn outgoing_call_debug_redacts_secrets() {
    let mut s = sim(&signed("enforce"));
    s.saw(hook_of(42, 5, "running", 2), NotDelivered, true);
    let lookup = s.r.tick(s.now).pop().unwrap();
    let shown = format!("{lookup:?} {lookup:#?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(
        shown.contains("<redacted>") && shown.contains("/api/repos/octocat/hello-world/builds/5")
    );
    let answer = br#"{"id":1,"repo_id":42,"number":5,"status":"success","version":3}"#;
    let answer = common::ok(answer.to_vec());
    let deliver = s.r.on_response(lookup.id, answer, s.now).pop().unwrap();
    let signature = deliver.header("signature").unwrap().to_string();
    let shown = format!("{deliver:?}");
    assert!(
        !shown.contains(&signature) && !shown.contains(SECRET),
        "{shown}"
    );
    assert!(shown.contains("webhook-id"));
}

/// Attack 3, racing: a forged webhook naming repository 42 `namespace/name` arrives first and
/// is being confirmed (drone is asked `path`) when the genuine webhook comes; drone refutes the
/// forged name, the genuine one is confirmed next, and drone's final state is delivered.
fn forged_name_first_then_the_real_one(namespace: &str, name: &str, path: &str) -> Sim {
    let mut s = sim("");
    s.drone.set(42, 5, "running", 2);
    s.unsigned(forged_as(namespace, name, 5, "running", 2), NotDelivered);
    let confirm = s.next_call(100);
    assert_eq!(confirm.header(":path"), Some(path));
    s.saw(hook_of(42, 5, "running", 2), Delivered, false);
    s.answer_from_drone(&confirm);
    s.drone.set(42, 5, "success", 3);
    s.run(20_000);
    let confirmed = s.r.repo_confirmed(42);
    assert_eq!(confirmed, Some(("octocat", "hello-world")), "{path}");
    assert_eq!(s.states(), vec![("success".to_string(), 3)], "{path}");
    s
}

/// Attack 3, racing: the forged name arrives first and is being confirmed when the genuine
/// webhook comes; drone refutes the forged name and the genuine one is confirmed next.
#[test]
fn attack3_a_forged_name_sent_first_cannot_shut_out_the_real_one() {
    let s = forged_name_first_then_the_real_one("..", "..", "/api/repos/%2E%2E/%2E%2E");
    assert_eq!(s.r.ledger().len(), 0);
}

// ------------------------------------------------------------------ discovery (issue 12)

/// The newest build of a repository loses every webhook, and a declined build's only
/// webhook (`build:created`) is lost: drone's `counter` shows both; they are delivered
/// within two discovery intervals of the last activity, in every mode.
#[test]
fn discovery_finds_the_newest_builds_whose_every_webhook_was_lost() {
    for verified in [true, false] {
        let mut s = sim("");
        announced(&mut s, 42, 1, "success", 3, verified);
        s.run(5000);
        let t = s.now;
        s.drone.set(42, 2, "declined", 2);
        s.drone.set(42, 3, "success", 3);
        // Discovery intervals: stale_after_ms (1 s) doubling to max_poll_interval_ms (8 s).
        s.run(20_000);
        let got: Vec<(u64, String)> = s
            .delivered
            .iter()
            .map(|d| (d.number, d.status.clone()))
            .collect();
        assert!(got.contains(&(2, "declined".into())), "{verified}: {got:?}");
        assert!(got.contains(&(3, "success".into())), "{verified}: {got:?}");
        assert!(s.r.counters().builds_discovered >= 2);
        let _ = t;
        assert_eq!(s.r.ledger().len(), 0);
    }
}

/// Build n is created and announced before n-1 exists in drone (two triggers at once: the
/// number is taken before the row is written). The lookup of n-1 gets 404, which is not
/// final for an inferred build: it is looked up again and delivered.
#[test]
fn build_announced_before_the_one_below_exists_is_not_lost() {
    let mut s = sim("");
    announced(&mut s, 42, 1, "success", 3, true);
    s.drone.allocated.insert(42, 3);
    announced(&mut s, 42, 3, "pending", 1, true);
    s.run(2500);
    assert!(
        s.drone.calls.iter().any(|p| p.ends_with("/builds/2")),
        "{:?}",
        s.drone.calls
    );
    assert!(s.delivered.is_empty());
    // Build 2's row appears, and its one webhook is lost (declined).
    s.drone.set(42, 2, "declined", 2);
    s.run(10_000);
    assert!(
        s.delivered
            .iter()
            .any(|d| d.number == 2 && d.status == "declined"),
        "{:?}",
        s.delivered
    );
    assert_eq!(s.r.counters().builds_not_found, 0);
}

/// A quiet repository's `counter` is looked at less and less often, and not at all after
/// `max_build_age_ms` of silence.
#[test]
fn discovery_follows_activity_and_stops_when_quiet() {
    let mut s = sim(r#","max_build_age_ms":120000"#);
    announced(&mut s, 42, 1, "success", 3, true);
    let repo_calls = |s: &Sim| s.drone.calls_to(|p| p == "/api/repos/octocat/hello-world");
    s.run(60_000);
    let first_minute = repo_calls(&s);
    s.run(60_000);
    let second_minute = repo_calls(&s) - first_minute;
    // 1, 2, 4, 8, 8, ... s: about 10 in the first minute, 7-8 in the second.
    assert!((6..=14).contains(&first_minute), "{first_minute}");
    assert!(second_minute <= 9, "{second_minute}");
    s.run(30_000);
    let before = repo_calls(&s);
    s.run(600_000);
    assert_eq!(
        repo_calls(&s),
        before,
        "silent longer than max_build_age_ms: no more looks"
    );
    // A new build wakes it up.
    announced(&mut s, 42, 2, "running", 2, true);
    s.drone.set(42, 3, "success", 3);
    s.run(5_000);
    assert!(
        s.delivered.iter().any(|d| d.number == 3),
        "{:?}",
        s.delivered
    );
}

/// `GET /api/builds/incomplete` shows a running build of a repository no webhook ever
/// showed: it is tracked and its final state delivered. Drone's OSS build answers 501: asked
/// once, then never again.
#[test]
fn incomplete_builds_reveal_repositories_never_seen() {
    let mut s = sim("");
    s.drone.set(7, 4, "running", 2);
    s.drone.incomplete = Some(vec![(7, 4)]);
    s.run(3000);
    s.drone.set(7, 4, "success", 3);
    s.run(20_000);
    assert!(
        s.delivered
            .iter()
            .any(|d| d.repo == 7 && d.number == 4 && d.status == "success"),
        "{:?}",
        s.delivered
    );
    assert_eq!(s.r.repo_confirmed(7), Some(("octocat", "repo-7")));

    let mut s = sim("");
    s.run(60_000);
    let asked = |s: &Sim| s.drone.calls_to(|p| p.contains("incomplete"));
    assert_eq!(asked(&s), 1);
    assert_eq!(s.r.counters().circuit_opens, 0);
}

/// In `off` no verified webhook supplies `system`: with `drone_server_url` re-deliveries carry
/// the one drone would send (proto, host, link); a verified webhook's own takes precedence.
#[test]
fn system_object_from_evidence_or_the_configured_server() {
    let mut s = sim(r#","drone_server_url":"https://Drone.Example.com""#);
    s.drone.set(42, 5, "running", 2);
    s.saw(forged(42, 5, "running", 2), Delivered, false);
    s.saw(hook_of(42, 5, "running", 2), Delivered, false);
    s.drone.set(42, 5, "success", 3);
    s.run(20_000);
    assert_eq!(s.delivered.len(), 1, "{:?}", s.delivered);
    let v: serde_json::Value = serde_json::from_str(&s.delivered[0].body).unwrap();
    assert_eq!(
        v["system"],
        serde_json::json!({"proto":"https","host":"drone.example.com","link":"https://drone.example.com"})
    );
    announced(&mut s, 42, 6, "running", 2, true);
    s.drone.set(42, 6, "failure", 3);
    s.run(20_000);
    let v: serde_json::Value = serde_json::from_str(&s.delivered.last().unwrap().body).unwrap();
    assert_eq!(v["system"]["host"], "drone.example.com");
    assert!(
        v["system"].get("link").is_none(),
        "the verified webhook's own object"
    );
}

/// A forged webhook for a build that finished and was delivered, with a higher version than
/// it finished at: drone is asked once, and nothing is re-delivered (drone has no newer state).
#[test]
fn a_hint_about_a_finished_build_costs_a_lookup_never_a_redelivery() {
    let mut s = sim("");
    announced(&mut s, 42, 5, "success", 3, true);
    assert_eq!(s.r.ledger().len(), 0, "finished");
    s.saw(hook_of(42, 5, "running", 9), Delivered, false);
    s.run(10_000);
    assert!(s.delivered.is_empty(), "{:?}", s.delivered);
    assert_eq!(s.r.ledger().len(), 0);
    assert_eq!(s.drone.calls_to(|p| p.ends_with("/builds/5")), 1);
    assert_eq!(s.r.counters().hints_refuted, 1);
}

/// Attack 3, racing, with a forged name that shares a part with the real one
/// (`octocat/evil`, `evil/hello-world`): the genuine name that arrives during the
/// confirmation is still the next candidate (a name differing in one part is another name)
/// (repos.rs survivor).
#[test]
fn attack3_a_forged_name_sharing_a_part_cannot_shut_out_the_real_one() {
    for (namespace, name) in [("octocat", "evil"), ("evil", "hello-world")] {
        let path = format!("/api/repos/{namespace}/{name}");
        forged_name_first_then_the_real_one(namespace, name, &path);
    }
}

/// A refutation only drops the name it was asked about, and never a confirmed one: drone's
/// 404 for a hint's name arrives after a verified webhook confirmed that name, or after the
/// repository was evicted and named again (another name of the same owner) (repos.rs
/// survivors).
#[test]
fn late_refutations_drop_only_the_unconfirmed_name_they_were_about() {
    let not_found = common::not_found;
    // Confirmed meanwhile by evidence.
    let mut s = sim("");
    s.saw(hook_of(42, 5, "running", 2), NotDelivered, false);
    let confirm = s.next_call(100);
    assert_eq!(
        confirm.header(":path"),
        Some("/api/repos/octocat/hello-world")
    );
    s.saw(hook_of(42, 5, "running", 3), Delivered, true);
    assert!(s.r.on_response(confirm.id, not_found(), s.now).is_empty());
    assert_eq!(s.r.repo_confirmed(42), Some(("octocat", "hello-world")));

    // Evicted (max_repos 1) and named again while the old name's confirmation was on its way.
    let mut s = sim(r#","max_repos":1"#);
    s.drone.set(42, 5, "running", 2);
    s.unsigned(forged_as("octocat", "evil", 5, "running", 2), NotDelivered);
    let confirm = s.next_call(100);
    assert_eq!(confirm.header(":path"), Some("/api/repos/octocat/evil"));
    s.saw(hook_of(7, 1, "running", 2), NotDelivered, false);
    s.saw(hook_of(42, 5, "running", 2), NotDelivered, false);
    assert!(s.r.on_response(confirm.id, not_found(), s.now).is_empty());
    s.run(10_000);
    let confirmations = s.drone.calls_to(|p| p == "/api/repos/octocat/hello-world");
    assert!(confirmations > 0, "{:?}", s.drone.calls);
    assert_eq!(s.r.repo_confirmed(42), Some(("octocat", "hello-world")));
}
