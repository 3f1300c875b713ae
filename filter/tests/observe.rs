//! Observations in (`core/observation.rs`, `core/reconciler/observe.rs`): the queue message's
//! decoder and its limits, and what evidence and hints move. Driven natively with a virtual
//! clock.

mod common;

use common::*;
use status_sync::core::model::DeliveryOutcome::{Delivered, NotDelivered};
use status_sync::core::model::{BuildStatus, ParsedWebhook, RepoRef};
use status_sync::core::observation::{Observation, QueueKey};
use status_sync::core::reconciler::Reconciler;

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
        let mut o = obs(number, "running", version, NotDelivered);
        o.webhook_mut().repo.id = id;
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

/// observe.rs (observe_evidence): evidence of a newer version clears a hint's claim at or
/// below it, not one above it: drone then confirming the claim above settles the build, and
/// nothing is re-delivered.
#[test]
fn evidence_keeps_a_claim_above_it() {
    let mut r = seen_live("", &[(1, "running", 1)]);
    r.observe(hint(1, "running", 3, Delivered), T0);
    r.observe(obs(1, "running", 2, Delivered), T0);
    let out = answer_when_due(&mut r, 1, ok(api_build(1, "running", 3)));
    assert!(out.is_empty(), "the pipeline has v3: {out:?}");
    let key = common::key(1);
    assert_eq!(r.ledger().get(&key).unwrap().settled_version(), 3);
}

/// observe.rs (observe_hint): a hint brings the lookup of a build only hints named closer, and
/// never moves a build evidence backs.
#[test]
fn hints_bring_only_hint_only_lookups_closer() {
    let key = common::key(1);
    let hint = |outcome| hint(1, "running", 1, outcome);
    // Backed by evidence: due after stale_after_ms (jittered), whatever hints say.
    let mut r = seen_live("", &[(1, "running", 1)]);
    let due = r.ledger().get(&key).unwrap().next_due_ms;
    assert!(due > T0);
    r.observe(hint(NotDelivered), T0);
    assert_eq!(r.ledger().get(&key).unwrap().next_due_ms, due);
    // Only hints: a later one saying the pipeline lacks it brings the lookup to now.
    let mut r = Reconciler::new(config(""), 1);
    r.observe(hint(Delivered), T0);
    assert!(r.ledger().get(&key).unwrap().next_due_ms > T0);
    r.observe(hint(NotDelivered), T0);
    assert_eq!(r.ledger().get(&key).unwrap().next_due_ms, T0);
}

/// A status this filter does not know (a newer drone) survives the queue: the reconciler must
/// see the build to look it up.
#[test]
fn unknown_status_survives_the_queue_decoder() {
    let o = Observation::for_tests(
        ParsedWebhook {
            repo: RepoRef {
                id: 42,
                namespace: "octocat".into(),
                name: "hello-world".into(),
            },
            number: 9,
            status: BuildStatus::parse("paused-by-a-newer-drone"),
            version: 4,
            action: "updated".into(),
            repo_json: None,
            system_json: None,
        },
        Delivered,
        true,
    );
    assert_eq!(o.webhook().status, BuildStatus::Unknown);
    let key = QueueKey::derive(b"policies-test-secret");
    let bytes = o.encode(Some(&key));
    assert_eq!(Observation::decode(&bytes, Some(&key)), Ok(o.clone()));
    // Every known code too; one above the last is garbage. The status byte follows the magic
    // and three u64s.
    let at = 4 + 3 * 8;
    assert_eq!(bytes[at], BuildStatus::Unknown.code());
    for code in 0..=BuildStatus::Unknown.code() {
        let mut b = bytes.clone();
        b[at] = code;
        let got = Observation::decode(&b, Some(&key)).unwrap();
        assert_eq!(got.webhook().status, BuildStatus::from_code(code));
    }
    let mut b = bytes;
    b[at] = BuildStatus::Unknown.code() + 1;
    assert!(Observation::decode(&b, Some(&key)).is_err());
}
