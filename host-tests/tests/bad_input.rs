//! The bad-input table of docs/security.md, row by row, through the real wasm: each bad input gets a log
//! line at the stated level, a metric, pass-through of the live request, and no state
//! corruption (the filter still recovers a lost transition afterwards).

mod common;

use common::*;
use host_tests::{CallReply, Host, UpstreamReply};

const INFO: u32 = 2;
const WARN: u32 = 3;

fn has_log(host: &Host, level: u32, needle: &str) -> bool {
    host.logs()
        .iter()
        .any(|l| l.level == level && l.message.contains(needle))
}

/// Sends `req` and checks the upstream got the body byte for byte and the client its answer.
fn pass_through(host: &mut Host, req: host_tests::TestRequest) {
    let sent = req.body.clone();
    let out = host
        .request(0, req, move |up| {
            assert_eq!(up.body, sent, "body unchanged");
            UpstreamReply::status(200)
        })
        .unwrap();
    assert_eq!(out.status, 200);
    assert!(out.local_reply.is_none());
}

/// After the bad inputs, the filter still does its job: a lost final webhook is recovered.
fn still_recovers(host: &mut Host, drone: &SharedDrone, pipeline: &SharedPipeline, number: u64) {
    send_live(host, pipeline, 0, webhook(9, number, "running", 2), 200);
    drone.borrow_mut().set(9, number, "success", 3);
    host.advance(20_000).unwrap();
    assert_succeeded(pipeline, 9, [number]);
}

#[test]
fn bad_live_webhooks() {
    let (mut host, drone, pipeline) = start_host(host_config(1, r#","max_body_bytes":8192"#));
    let good = webhook(9, 1, "running", 2);
    let unparsable: Vec<(&str, Vec<u8>)> = vec![
        ("malformed JSON", br#"{"event":"build","#.to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "wrong types",
            String::from_utf8(good.clone())
                .unwrap()
                .replace("\"number\":1,", "\"number\":\"1\",")
                .into_bytes(),
        ),
        (
            "huge number",
            String::from_utf8(good.clone())
                .unwrap()
                .replace("\"version\":2", "\"version\":184467440737095516160")
                .into_bytes(),
        ),
        ("non-UTF-8", vec![b'{', 0xff, 0xfe, b'}']),
        ("empty body", Vec::new()),
        (
            "not a build event",
            br#"{"event":"user","action":"created"}"#.to_vec(),
        ),
    ];
    let n = unparsable.len() as i64;
    for (name, body) in unparsable {
        let before = metric(&host, "webhooks_unparsable");
        pass_through(&mut host, hook_request(body).chunked(512));
        assert_eq!(
            metric_after_tick(&mut host, "webhooks_unparsable"),
            before + 1,
            "{name}"
        );
    }
    assert!(has_log(&host, INFO, "drone webhook not understood"));

    // Over max_body_bytes: passed through unparsed, counted apart.
    let mut big = webhook(9, 2, "running", 2);
    big.extend(std::iter::repeat_n(b' ', 20_000));
    pass_through(&mut host, hook_request(big).chunked(4096));
    assert_eq!(metric_after_tick(&mut host, "webhooks_oversized"), 1);
    assert!(has_log(&host, INFO, "larger than max_body_bytes"));

    // Not drone's webhooks at all: not observed, untouched.
    let observed = metric(&host, "webhooks_observed");
    pass_through(
        &mut host,
        host_tests::TestRequest::post("/hook", good.clone()), // no X-Drone-Event
    );
    pass_through(
        &mut host,
        host_tests::TestRequest::get("/hook").header("x-drone-event", "build"),
    );
    pass_through(
        &mut host,
        host_tests::TestRequest::post("/elsewhere", good.clone()).header("x-drone-event", "build"),
    );
    assert_eq!(metric_after_tick(&mut host, "webhooks_observed"), observed);

    // Repeated headers: the first value counts (Envoy's lookup).
    pass_through(
        &mut host,
        hook_request(webhook(9, 3, "success", 3)).header("x-drone-event", "repo"),
    );
    assert_eq!(
        metric_after_tick(&mut host, "webhooks_observed"),
        observed + 1
    );

    // Unknown status: accepted, and terminal like drone's IsDone().
    send_live(&mut host, &pipeline, 0, webhook(9, 4, "exploded", 3), 200);
    host.advance(10_000).unwrap();
    assert_eq!(metric(&host, "builds_tracked"), 0);
    // Unsigned (`off`): the two build webhooks are hints. Drone is asked about their
    // repository and their builds only, has neither build, and nothing is kept.
    let calls: Vec<String> = drone.borrow().calls.iter().map(|c| c.1.clone()).collect();
    assert!(
        calls.iter().all(|p| p == "/api/repos/octocat/repo-9"
            || p == "/api/builds/incomplete"
            || p == "/api/repos/octocat/repo-9/builds/3"
            || p == "/api/repos/octocat/repo-9/builds/4"),
        "no state from bad input: {calls:?}"
    );
    assert_eq!(metric(&host, "hints_refuted"), 2);
    assert_eq!(metric(&host, "webhooks_unparsable"), n);

    still_recovers(&mut host, &drone, &pipeline, 10);
    assert!(host.dead_vms().is_empty());
}

/// Issue 11: fields outside the input limits (drone's slug rules, int64, JSON sizes) pass
/// through byte for byte, are counted apart from unparsable bodies, and leave no state.
#[test]
fn webhooks_outside_the_input_limits() {
    let (mut host, drone, pipeline) = start_host(host_config(1, ""));
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&webhook(9, 1, "running", 2)).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("name ..", edit(&|v| v["repo"]["name"] = "..".into())),
        (
            "namespace .",
            edit(&|v| v["repo"]["namespace"] = ".".into()),
        ),
        ("name with /", edit(&|v| v["repo"]["name"] = "a/b".into())),
        (
            "control character",
            edit(&|v| v["repo"]["name"] = "a\u{1b}[2J".into()),
        ),
        (
            "251-byte name",
            edit(&|v| v["repo"]["name"] = "n".repeat(251).into()),
        ),
        (
            "125 KB namespace",
            edit(&|v| v["repo"]["namespace"] = "n".repeat(125_000).into()),
        ),
        ("repo id 0", edit(&|v| v["repo"]["id"] = 0.into())),
        (
            "number 2^63",
            edit(&|v| v["build"]["number"] = (1u64 << 63).into()),
        ),
        (
            "version 2^64-1",
            edit(&|v| v["build"]["version"] = u64::MAX.into()),
        ),
        (
            "9 KiB repo",
            edit(&|v| v["repo"]["pad"] = "p".repeat(9 * 1024).into()),
        ),
        (
            "5 KiB system",
            edit(&|v| v["system"]["pad"] = "s".repeat(5 * 1024).into()),
        ),
    ];
    for (i, (name, body)) in cases.iter().enumerate() {
        pass_through(&mut host, hook_request(body.clone()));
        assert_eq!(
            metric_after_tick(&mut host, "webhooks_out_of_limits"),
            i as i64 + 1,
            "{name}"
        );
    }
    assert!(has_log(&host, INFO, "outside the input limits"));
    assert_eq!(metric(&host, "webhooks_unparsable"), 0);
    host.advance(10_000).unwrap();
    assert_eq!(metric(&host, "builds_tracked"), 0);
    assert_eq!(
        // The leader's one look at drone's incomplete builds is not about this input.
        drone
            .borrow()
            .calls
            .iter()
            .filter(|(_, p)| p != "/api/builds/incomplete")
            .count(),
        0,
        "no drone call for out-of-limit input"
    );
    still_recovers(&mut host, &drone, &pipeline, 10);
}

#[test]
fn bad_drone_answers() {
    let mut host = Host::start(host_config(
        1,
        r#","max_body_bytes":8192,"call_timeout_ms":500,"circuit_failure_threshold":100"#,
    ))
    .unwrap();
    let pipeline = install_pipeline(&mut host);
    let answers: Vec<(&str, CallReply, u32, &str)> = vec![
        (
            "garbage",
            CallReply::ok("<html>oops</html>"),
            WARN,
            "unusable",
        ),
        ("empty", CallReply::ok(""), WARN, "unusable"),
        (
            "huge",
            CallReply::ok(vec![b' '; 100_000]),
            INFO,
            "no answer",
        ),
        (
            "slow",
            CallReply::after(5_000, 200, api_build(9, 1, "success", 3)),
            INFO,
            "HTTP 504",
        ),
        (
            "unauthorized",
            CallReply::status(401, r#"{"message":"Unauthorized"}"#),
            WARN,
            "check drone_token",
        ),
        ("server error", CallReply::status(500, ""), INFO, "HTTP 500"),
        (
            "another build",
            CallReply::ok(api_build(9, 999, "success", 3)),
            WARN,
            "another build",
        ),
    ];
    for (i, (name, answer, level, needle)) in answers.into_iter().enumerate() {
        let number = 100 + i as u64;
        let failed_before = metric(&host, "drone_polls_failed");
        let answer = std::cell::RefCell::new(Some(answer));
        host.set_responder("drone", move |req, _| {
            if req.path() == "/api/builds/incomplete" {
                return CallReply::status(501, r#"{"message":"Not Implemented"}"#);
            }
            if !req.path().contains("/builds/") {
                // The repository's confirmation (the webhooks are unsigned: hints).
                return CallReply::ok(api_repo_counter(9, 0));
            }
            match answer.borrow_mut().take() {
                Some(a) => a,
                None => CallReply::ok(api_build(
                    9,
                    req.path().rsplit('/').next().unwrap().parse().unwrap(),
                    "success",
                    3,
                )),
            }
        });
        send_live(
            &mut host,
            &pipeline,
            0,
            webhook(9, number, "running", 2),
            200,
        );
        host.advance(60_000).unwrap();
        assert!(
            metric(&host, "drone_polls_failed") > failed_before,
            "{name}: counted"
        );
        assert!(
            has_log(&host, level, needle),
            "{name}: log line at level {level} with {needle:?}"
        );
        assert_eq!(
            pipeline.borrow().status_of(9, number),
            Some(("success".into(), 3)),
            "{name}: retried and recovered once drone answers properly"
        );
    }
    assert_eq!(metric(&host, "builds_tracked"), 0);
    assert!(host.dead_vms().is_empty());
}

/// docs/runbook.md, *Nothing observed*: the request the runbook tells a new user to send
/// (`curl -X POST -H 'X-Drone-Event: build' -H 'Content-Type: application/json' -d '{}'` to
/// drone's endpoint path) shows in the counters and log lines the runbook names, in every
/// `signature_mode`; a bare `POST` (no event header, no body) shows nothing outside
/// `enforce`, which is why the check needs the header.
#[test]
fn the_runbooks_first_hour_request_shows_in_the_counters_it_names_in_every_mode() {
    let check = || {
        host_tests::TestRequest::post("/hook", b"{}".to_vec())
            .header("x-drone-event", "build")
            .header("content-type", "application/json")
    };
    let modes = [
        ("off", host_config(1, "")),
        (
            "monitor",
            signed_host_config(1, r#","signature_mode":"monitor""#),
        ),
        ("enforce", signed_host_config(1, "")),
    ];
    for (mode, cfg) in modes {
        let mut host = Host::start(cfg).unwrap();
        let bare = through(
            &mut host,
            host_tests::TestRequest::post("/hook", Vec::new()),
        );
        let counted = |host: &mut Host| {
            host.advance(100).unwrap();
            [
                "webhooks_observed",
                "webhooks_unparsable",
                "webhooks_rejected",
            ]
            .map(|m| metric(host, m))
        };
        if mode == "enforce" {
            assert_eq!(bare.local_reply.map(|r| r.0), Some(401), "{mode}");
            assert_eq!(counted(&mut host), [0, 0, 1], "{mode}: bare POST");
        } else {
            assert_eq!(bare.status, 200, "{mode}");
            assert_eq!(counted(&mut host), [0, 0, 0], "{mode}: bare POST seen");
        }
        let before = counted(&mut host);
        let out = through(&mut host, check());
        let moved = {
            let after = counted(&mut host);
            [0, 1, 2].map(|i| after[i] - before[i])
        };
        if mode == "enforce" {
            assert_eq!(
                out.local_reply,
                Some((401, b"invalid webhook signature\n".to_vec())),
                "{mode}"
            );
            assert_eq!(moved, [1, 0, 1], "{mode}: observed, unparsable, rejected");
            assert!(has_log(
                &host,
                WARN,
                "webhook rejected with 401 (enforce mode) why="
            ));
        } else {
            assert_eq!((out.status, out.local_reply), (200, None), "{mode}");
            assert_eq!(moved, [1, 1, 0], "{mode}: observed, unparsable, rejected");
            assert!(has_log(
                &host,
                INFO,
                "drone webhook not understood, passed through unchanged why="
            ));
            let invalid = metric(&host, "webhooks_signature_invalid");
            assert_eq!(invalid, i64::from(mode == "monitor"), "{mode}");
        }
    }
}
