//! Drone's HTTP signatures through the real wasm: enforce rejects forged and unsigned webhooks
//! before they reach the pipeline, monitor only counts, re-deliveries are signed, and the
//! secret never appears in logs or replies.

mod common;

use common::*;
use host_tests::{Host, HostConfig, TestRequest, UpstreamReply};
use status_sync::core::signature;

const SECRET: &str = "GMEuUHQfmrMRsseWxi9YlIeBtn9lm6im";

/// A host whose filter checks drone's signatures in `mode` (`extra`: more configuration), with
/// a drone answering its lookups.
fn signed_host(mode: &str, extra: &str) -> (Host, SharedDrone) {
    let mut cfg: HostConfig = host_config(
        1,
        &format!(r#","webhook_secret_env":"HOOK_SECRET","signature_mode":"{mode}"{extra}"#),
    );
    cfg.env.push(("HOOK_SECRET".into(), SECRET.into()));
    let mut host = Host::start(cfg).unwrap();
    let drone = install_drone(&mut host);
    (host, drone)
}

fn signed(host: &Host, body: Vec<u8>, secret: &str) -> TestRequest {
    signed_by(hook_request(body.clone()), &body, secret, host.now_ms())
}

/// Sends a request; returns (status the client got, whether the pipeline saw it).
fn send(host: &mut Host, req: TestRequest) -> (u16, bool) {
    let out = through(host, req);
    (out.status, out.upstream.is_some())
}

/// In `monitor`, each of the `requests` (made for the host, in order) passes: answered 200 by
/// the pipeline it reached. Then each metric of `expect` has its value.
fn monitor_passes(requests: impl FnOnce(&Host) -> Vec<TestRequest>, expect: &[(&str, i64)]) {
    let (mut host, _drone) = signed_host("monitor", "");
    for req in requests(&host) {
        assert_eq!(send(&mut host, req), (200, true));
    }
    host.advance(100).unwrap(); // the worker's tick flushes the filter's counters
    for (name, value) in expect {
        assert_eq!(metric(&host, name), *value, "{name}");
    }
}

#[test]
fn enforce_rejects_forged_and_unsigned_and_passes_genuine() {
    let (mut host, _drone) = signed_host("enforce", "");
    let body = webhook(1, 1, "running", 2);

    let genuine = signed(&host, body.clone(), SECRET);
    assert_eq!(send(&mut host, genuine), (200, true));

    let forged = signed(&host, body.clone(), "not-the-secret");
    assert_eq!(send(&mut host, forged), (401, false));

    assert_eq!(
        send(&mut host, hook_request(body.clone())),
        (401, false),
        "unsigned"
    );

    let mut tampered = signed(&host, body.clone(), SECRET);
    tampered.body = webhook(1, 1, "success", 3);
    assert_eq!(
        send(&mut host, tampered),
        (401, false),
        "body changed after signing"
    );

    let an_hour_ago = host.now_ms() - 3_600_000;
    let stale = signed_by(hook_request(body.clone()), &body, SECRET, an_hour_ago);
    assert_eq!(
        send(&mut host, stale),
        (401, false),
        "Date outside max_clock_skew_ms"
    );

    host.advance(100).unwrap(); // the worker's tick flushes the filter's counters
    assert_eq!(metric(&host, "webhooks_rejected"), 4);
    assert_eq!(metric(&host, "webhooks_signature_invalid"), 4);
    assert_eq!(
        metric(&host, "webhooks_delivered"),
        1,
        "rejected ones record nothing"
    );
    assert!(host.logs().iter().all(|l| !l.message.contains(SECRET)));
}

#[test]
fn monitor_counts_but_passes() {
    monitor_passes(
        |host| vec![signed(host, webhook(1, 1, "running", 2), "wrong")],
        &[("webhooks_signature_invalid", 1), ("webhooks_rejected", 0)],
    );
}

#[test]
fn redeliveries_are_signed_like_drone_and_carry_a_stable_id() {
    let (mut host, drone) = signed_host("enforce", "");
    let bodies = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let b = bodies.clone();
    host.set_responder("pipeline", move |req, now| {
        let ok = signature::verify(
            SECRET.as_bytes(),
            req.header("date"),
            req.header("digest"),
            req.header("signature"),
            &req.body,
            now,
            300_000,
        );
        b.borrow_mut()
            .push((ok.is_ok(), req.header("webhook-id").map(str::to_string)));
        host_tests::CallReply::status(if ok.is_ok() { 200 } else { 401 }, "")
    });
    // The live webhook passes unchanged (signature headers included); the pipeline answers 503.
    let req = signed(&host, webhook(1, 7, "success", 3), SECRET);
    let sent = req.clone();
    let out = host
        .request(0, req, move |up| {
            assert_eq!(up.body, sent.body);
            for name in ["date", "digest", "signature"] {
                let ours = sent
                    .headers
                    .iter()
                    .find(|h| h.0 == name)
                    .map(|h| h.1.as_str());
                assert_eq!(up.header(name), ours, "{name} unchanged");
            }
            UpstreamReply::status(503)
        })
        .unwrap();
    assert_eq!(out.status, 503);
    drone.borrow_mut().set(1, 7, "success", 3);
    host.advance(5_000).unwrap();
    let got = bodies.borrow().clone();
    assert_eq!(got, vec![(true, Some(format!("drone-{}-7-3", repo_id(1))))]);
    assert_eq!(metric(&host, "redeliveries_ok"), 1);
}

/// A request to `webhook_path` built the way `signed` builds a webhook, with another method
/// and event header (`None` = no header).
fn variant(host: &Host, method: &str, event: Option<&str>, secret: Option<&str>) -> TestRequest {
    let body = webhook(1, 1, "running", 2);
    let mut req =
        TestRequest::post("/hook", body.clone()).header("content-type", "application/json");
    req.method = method.to_string();
    if let Some(e) = event {
        req = req.header("x-drone-event", e);
    }
    if let Some(secret) = secret {
        req = signed_by(req, &body, secret, host.now_ms());
    }
    req
}

/// Issue 11, attack 2: `enforce` once checked only `POST` + `X-Drone-Event: build`; a `PUT`, a
/// `POST` without the header or with `build.x` reached the pipeline unchecked. Now every request
/// to the webhook path is verified or answered 401; verified non-build requests pass and are not
/// observed.
#[test]
fn attack_2_enforce_covers_every_method_and_event_header() {
    let (mut host, _drone) = signed_host("enforce", "");
    let cases = [
        ("PUT", Some("build")),
        ("POST", None),
        ("POST", Some("build.x")),
        ("POST", Some("repo")),
        ("GET", None),
        ("DELETE", Some("build")),
    ];
    for (method, event) in cases {
        let unsigned = variant(&host, method, event, None);
        assert_eq!(
            send(&mut host, unsigned),
            (401, false),
            "unsigned {method} {event:?}"
        );
        let forged = variant(&host, method, event, Some("not-the-secret"));
        assert_eq!(
            send(&mut host, forged),
            (401, false),
            "forged {method} {event:?}"
        );
        let mut tampered = variant(&host, method, event, Some(SECRET));
        tampered.body = webhook(1, 1, "success", 3);
        assert_eq!(
            send(&mut host, tampered),
            (401, false),
            "digest mismatch {method} {event:?}"
        );
        let genuine = variant(&host, method, event, Some(SECRET));
        assert_eq!(
            send(&mut host, genuine),
            (200, true),
            "signed {method} {event:?}"
        );
    }
    host.advance(100).unwrap(); // the worker's tick flushes the filter's counters
    assert_eq!(metric(&host, "webhooks_rejected"), 3 * cases.len() as i64);
    assert_eq!(
        metric(&host, "webhooks_observed"),
        0,
        "none is a build webhook"
    );
    // Outside the webhook path nothing is checked.
    let other = TestRequest::get("/healthz");
    assert_eq!(send(&mut host, other), (200, true));
}

/// In `monitor` (and `off`) non-build requests stay untouched: not checked, not counted.
#[test]
fn attack_2_monitor_leaves_non_build_requests_alone() {
    monitor_passes(
        |host| {
            let cases = [("PUT", Some("build")), ("POST", None)];
            cases
                .map(|(method, event)| variant(host, method, event, None))
                .to_vec()
        },
        &[("webhooks_signature_invalid", 0), ("webhooks_observed", 0)],
    );
}

/// `monitor`: a body that does not match its signed digest is counted and passed, like a genuine
/// one (both are observed; only the genuine one is marked verified for the reconciler).
#[test]
fn monitor_passes_forged_and_genuine_alike() {
    monitor_passes(
        |host| {
            let genuine = signed(host, webhook(1, 2, "running", 2), SECRET);
            let mut tampered = signed(host, webhook(1, 3, "running", 2), SECRET);
            tampered.body = webhook(1, 3, "success", 3);
            vec![genuine, tampered]
        },
        &[("webhooks_signature_invalid", 1), ("webhooks_observed", 2)],
    );
}

/// The module reads its environment itself (`wasi_snapshot_preview1.environ_get`): the secret
/// is the value of the variable named exactly, not of one whose name it prefixes, listed
/// first; a value may hold `=`.
#[test]
fn the_secret_is_read_from_the_variable_named_exactly() {
    let secret = "a=b=c-GMEuUHQfmrMRsseWxi9YlIeBtn9l";
    let mut cfg: HostConfig = host_config(
        1,
        r#","webhook_secret_env":"HOOK_SECRET","signature_mode":"enforce""#,
    );
    cfg.env.insert(0, ("HOOK_SECRET_OLD".into(), SECRET.into()));
    cfg.env.push(("HOOK_SECRET".into(), secret.into()));
    let mut host = Host::start(cfg).unwrap();
    let _drone = install_drone(&mut host);
    let body = webhook(1, 1, "running", 2);

    let genuine = signed(&host, body.clone(), secret);
    assert_eq!(send(&mut host, genuine), (200, true));
    let old = signed(&host, body, SECRET);
    assert_eq!(
        send(&mut host, old),
        (401, false),
        "signed with the other variable's"
    );
}
