//! Self-test of the harness: Envoy semantics the host must reproduce, checked with the small
//! probe filter in `host-tests/probe/` (built here on demand).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use host_tests::{
    workspace_root, CallReply, FailurePolicy, Host, HostConfig, StreamOutcome, TestRequest,
    UpstreamReply, CANARY,
};

/// Builds the probe once per test process (cargo is incremental, so this is quick when fresh).
fn probe_wasm() -> PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip1",
                "--manifest-path",
                "host-tests/probe/Cargo.toml",
                "--target-dir",
                "target/probe",
            ])
            .status()
            .expect("running cargo to build the probe");
        assert!(status.success(), "building host-tests/probe failed");
        root.join("target/probe/wasm32-wasip1/release/probe.wasm")
    })
    .clone()
}

fn cfg(plugin_config: &str) -> HostConfig {
    HostConfig::new(probe_wasm(), plugin_config)
}

fn host(plugin_config: &str) -> Host {
    Host::start(cfg(plugin_config)).expect("host starts")
}

fn op(name: &str) -> TestRequest {
    TestRequest::get("/probe").header("x-probe-op", name)
}

/// Runs a probe operation that answers with a local reply and returns its body.
fn ask(h: &mut Host, vm: usize, req: TestRequest) -> String {
    let out = h
        .request(vm, req, |_| panic!("the probe answers locally"))
        .expect("request");
    let (status, body) = out.local_reply.expect("a local reply");
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

fn pass(h: &mut Host, vm: usize, req: TestRequest) -> StreamOutcome {
    h.request(vm, req, |_| UpstreamReply::ok("upstream-body"))
        .expect("request")
}

/// A request the upstream must never see (answered locally, or failed).
fn unforwarded(h: &mut Host, vm: usize, req: TestRequest) -> StreamOutcome {
    h.request(vm, req, |_| panic!("the upstream must not be called"))
        .expect("request")
}

fn logs_with(h: &Host, needle: &str) -> Vec<(usize, String)> {
    h.logs()
        .iter()
        .filter(|l| l.message.contains(needle))
        .map(|l| (l.vm, l.message.clone()))
        .collect()
}

#[test]
fn start_runs_canary_then_every_vm() {
    let h = host("count_configures;tick=1000");
    assert_eq!(h.vm_count(), 3, "2 workers + main");
    // canary + 3 VMs each ran on_configure once.
    assert_eq!(h.shared_data("configures"), Some(b"4".to_vec()));
    let starts: Vec<usize> = logs_with(&h, "vm_start root=1")
        .iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(starts, vec![CANARY, 0, 1, 2]);
    // The canary's timer is not kept; every VM's root asked once.
    assert_eq!(h.tick_period_calls(), vec![(0, 1, 1), (1, 1, 1), (2, 1, 1)]);
    assert!(h.unknown_imports().is_empty(), "{:?}", h.unknown_imports());
    assert!(h.memory_bytes(0) > 0);
}

#[test]
fn configure_false_refuses_start_and_nacks_updates() {
    let err = Host::start(cfg("fail"))
        .err()
        .expect("must refuse to start");
    assert!(format!("{err:#}").contains("proxy_on_configure"), "{err:#}");

    let mut h = host("tick=1000");
    assert!(h.reconfigure("fail").is_err());
    // The old config stays: the old roots keep ticking.
    h.advance(1000).unwrap();
    assert_eq!(h.metric("probe.ticks"), Some(3));
    assert_eq!(h.root_context_id(0), Some(1));
}

#[test]
fn ticks_rearm_per_root_and_stop_at_zero() {
    let mut h = host("tick=1000;ticks_max=3");
    h.advance(999).unwrap();
    assert_eq!(h.metric("probe.ticks"), Some(0));
    h.advance(1).unwrap();
    assert_eq!(h.metric("probe.ticks"), Some(3), "one tick per VM");
    h.advance(10_000).unwrap();
    assert_eq!(
        h.metric("probe.ticks"),
        Some(9),
        "ticks_max=3 then period 0"
    );
    let vm0: Vec<u64> = h
        .logs()
        .iter()
        .filter(|l| l.vm == 0 && l.message.starts_with("tick "))
        .map(|l| l.at_ms - h.config().start_time_ms)
        .collect();
    assert_eq!(vm0, vec![1000, 2000, 3000]);
    assert_eq!(h.tick_period_calls(), vec![(0, 1, 2), (1, 1, 2), (2, 1, 2)]);
}

#[test]
fn reconfigure_creates_new_roots_and_retires_old_ones() {
    let mut h = host("tick=1000");
    h.advance(1000).unwrap();
    assert_eq!(h.metric("probe.ticks"), Some(3));
    h.reconfigure("tick=500").unwrap();
    for vm in 0..3 {
        assert_eq!(h.root_context_id(vm), Some(2));
    }
    assert_eq!(logs_with(&h, "done root=1").len(), 3);
    h.advance(1000).unwrap();
    // Only the new roots tick (2 each); the old ones stopped.
    assert_eq!(h.metric("probe.ticks"), Some(3 + 6));
    let roots: std::collections::BTreeSet<String> = h
        .logs()
        .iter()
        .filter(|l| l.message.starts_with("tick ") && l.at_ms > h.config().start_time_ms + 1000)
        .map(|l| l.message.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(roots.into_iter().collect::<Vec<_>>(), vec!["root=2"]);
    // New streams use the new root.
    pass(&mut h, 0, op("noop"));
    let line = &logs_with(&h, "op=noop")[0].1;
    assert!(line.contains(" root=2 "), "{line}");
}

#[test]
fn tick_period_from_a_stream_attaches_to_its_root() {
    let mut h = host("");
    let body = ask(&mut h, 0, op("tick").header("x-ms", "200"));
    assert_eq!(body, "ok");
    assert_eq!(h.tick_period_calls(), vec![(0, 1, 1)]);
    h.advance(1000).unwrap();
    assert_eq!(h.metric("probe.ticks"), Some(5));
}

#[test]
fn shared_data_cas_rules() {
    let mut h = host("");
    let set = |h: &mut Host, vm, key: &str, value: Option<&str>, cas: Option<&str>| {
        let mut r = op("set").header("x-key", key);
        if let Some(v) = value {
            r = r.header("x-value", v);
        }
        if let Some(c) = cas {
            r = r.header("x-cas", c);
        }
        ask(h, vm, r)
    };
    let get = |h: &mut Host, vm, key: &str| ask(h, vm, op("get").header("x-key", key));

    assert_eq!(
        get(&mut h, 0, "k"),
        "value=none cas=none",
        "missing key = NotFound"
    );
    assert_eq!(set(&mut h, 0, "k", Some("v1"), None), "ok");
    let got = get(&mut h, 1, "k");
    let cas: u32 = got.strip_prefix("value=v1 cas=").unwrap().parse().unwrap();
    assert_ne!(cas, 0);
    assert_eq!(
        set(&mut h, 1, "k", Some("v2"), Some(&(cas + 100).to_string())),
        "err=CasMismatch"
    );
    assert_eq!(
        set(&mut h, 2, "k", Some("v2"), Some(&cas.to_string())),
        "ok"
    );
    assert_eq!(
        set(&mut h, 0, "k", Some("v3"), Some(&cas.to_string())),
        "err=CasMismatch",
        "the CAS changed on the last write"
    );
    assert_eq!(
        set(&mut h, 0, "k", Some("v3"), Some("0")),
        "ok",
        "cas 0 is unconditional"
    );
    // The CAS is ignored for a key that does not exist yet.
    assert_eq!(set(&mut h, 0, "fresh", Some("x"), Some("999999")), "ok");
    assert_eq!(h.shared_data("fresh"), Some(b"x".to_vec()));
    // "remove" stores an empty value; the key stays.
    assert_eq!(set(&mut h, 0, "k", None, None), "ok");
    assert_eq!(h.shared_data("k"), Some(Vec::new()));
    let got = get(&mut h, 0, "k");
    assert!(got.starts_with("value=none cas="), "{got}");
    assert_ne!(got, "value=none cas=none");
    assert_eq!(h.shared_data_len(), 2);
}

#[test]
fn queue_last_registrant_gets_on_queue_ready() {
    // Every root registers "jobs" in on_configure: canary, VM 0, 1, 2 — main (2) is last.
    let mut h = host("qreg=jobs");
    let qids: std::collections::BTreeSet<String> = logs_with(&h, "qreg ")
        .iter()
        .map(|l| l.1.split(' ').next_back().unwrap().to_string())
        .collect();
    assert_eq!(qids.len(), 1, "same id for the same name");
    let resolve = |h: &mut Host, name: &str| {
        let vm_id = op("qresolve").header("x-vm-id", "status-sync");
        ask(h, 0, vm_id.header("x-name", name))
    };
    let qid = resolve(&mut h, "jobs");
    let qid = qid.strip_prefix("qid=").unwrap().to_string();
    assert_eq!(resolve(&mut h, "nope"), "none");

    let enq_to = |h: &mut Host, vm, qid: &str, v: &str| {
        ask(h, vm, op("qenq").header("x-qid", qid).header("x-value", v))
    };
    let enq = |h: &mut Host, vm, v: &str| enq_to(h, vm, &qid, v);
    assert_eq!(enq(&mut h, 0, "a"), "ok");
    assert!(
        logs_with(&h, "queue-ready").is_empty(),
        "posted, not run inline"
    );
    h.advance(0).unwrap();
    assert_eq!(
        logs_with(&h, "queue-ready"),
        vec![(2, format!("queue-ready root=1 qid={qid} items=a"))]
    );

    // A stream on VM 1 registers: its root becomes the consumer.
    assert_eq!(
        ask(&mut h, 1, op("qreg").header("x-name", "jobs")),
        format!("qid={qid}")
    );
    assert_eq!(enq(&mut h, 0, "b"), "ok");
    h.advance(0).unwrap();
    assert_eq!(logs_with(&h, "queue-ready").last().unwrap().0, 1);

    // Consumer dead: the post is dropped, the data stays for anyone to dequeue.
    h.kill_vm(1);
    assert_eq!(enq(&mut h, 0, "c"), "ok");
    h.advance(10).unwrap();
    assert_eq!(logs_with(&h, "queue-ready").len(), 2);
    assert_eq!(h.queue_len("jobs"), Some(1));
    assert_eq!(ask(&mut h, 0, op("qdeq").header("x-qid", &qid)), "value=c");
    assert_eq!(ask(&mut h, 0, op("qdeq").header("x-qid", &qid)), "empty");
    assert_eq!(
        ask(&mut h, 0, op("qdeq").header("x-qid", "999")),
        "err=NotFound"
    );
    assert_eq!(enq_to(&mut h, 0, "999", "x"), "err=NotFound");
}

#[test]
fn header_maps_outside_their_window() {
    let mut h = host("");
    let late = TestRequest::post("/late", "body").header("x-probe-op", "late");
    let out = pass(&mut h, 0, late);
    assert_eq!(out.status, 200);
    // After on_request_headers returned Continue: value -> BadArgument, pairs -> empty.
    assert_eq!(
        logs_with(&h, "late-body"),
        vec![(
            0,
            "late-body value-status=2 pairs-status=0 pairs-len=0".to_string()
        )]
    );
    assert_eq!(logs_with(&h, "late-resp")[0].1, "late-resp value-status=2");
    // on_log sees the request headers again.
    assert_eq!(
        logs_with(&h, "log ctx=")[0].1,
        "log ctx=2 path-status=0 path=/late"
    );
}

#[test]
fn stream_callbacks_run_in_envoy_order() {
    let mut h = host("");
    let out = pass(
        &mut h,
        1,
        TestRequest::post("/hook", "0123456789").header("X-Probe-Op", "noop"),
    );
    let up = out.upstream.clone().expect("forwarded");
    assert_eq!(up.header(":method"), Some("POST"));
    assert_eq!(up.header(":path"), Some("/hook"));
    assert_eq!(up.header("x-probe-op"), Some("noop"));
    assert_eq!(up.body, b"0123456789");
    assert_eq!(out.status, 200);
    assert_eq!(out.body, b"upstream-body");
    assert_eq!(out.header("x-probe-seen"), Some("1"));
    let order: Vec<String> = h
        .logs()
        .iter()
        .filter(|l| l.vm == 1)
        .map(|l| l.message.split(' ').next().unwrap().to_string())
        .filter(|m| !matches!(m.as_str(), "vm_start" | "configure"))
        .collect();
    assert_eq!(
        order,
        [
            "req-headers",
            "req-body",
            "resp-headers",
            "resp-body",
            "log",
            "stream-done"
        ]
    );
}

#[test]
fn local_reply_is_deferred_and_goes_through_the_response_path() {
    let mut h = host("");
    let out = unforwarded(&mut h, 0, op("local"));
    assert!(out.upstream.is_none());
    assert_eq!(out.status, 418);
    assert_eq!(out.local_reply, Some((418, b"teapot".to_vec())));
    assert_eq!(out.body, b"teapot");
    assert_eq!(out.header("x-probe"), Some("local"));
    assert_eq!(
        out.header("x-probe-seen"),
        Some("1"),
        "filter saw its own reply"
    );
    assert!(!logs_with(&h, "resp-headers ctx=2 n=").is_empty());

    // From the response path the local reply replaces the response directly.
    let out = pass(&mut h, 0, op("resp-local"));
    assert_eq!(out.status, 299);
    assert_eq!(out.body, b"replaced");
    assert!(out.upstream.is_some());
}

#[test]
fn upstream_failures_are_envoy_replies_through_the_filter() {
    let mut h = host("");
    let out = h.request(0, op("noop"), |_| UpstreamReply::Reset).unwrap();
    assert_eq!(out.status, 503);
    assert!(out
        .body_str()
        .contains("reset reason: connection termination"));
    let out = h
        .request(0, op("noop"), |_| UpstreamReply::Timeout)
        .unwrap();
    assert_eq!(out.status, 504);
    assert_eq!(out.body_str(), "upstream request timeout");
    assert_eq!(logs_with(&h, "status=504").len(), 1, "filter saw the 504");
}

#[test]
fn body_chunks_accumulate_while_paused() {
    let mut h = host("");
    let req = TestRequest::post("/b", "abcdefghij")
        .header("x-probe-op", "buffer")
        .chunked(3);
    let out = pass(&mut h, 0, req);
    let sizes: Vec<String> = logs_with(&h, "req-body ctx")
        .into_iter()
        .map(|l| l.1)
        .collect();
    assert_eq!(
        sizes,
        [
            "req-body ctx=2 size=3 eos=false",
            "req-body ctx=2 size=6 eos=false",
            "req-body ctx=2 size=9 eos=false",
            "req-body ctx=2 size=10 eos=true"
        ]
    );
    assert_eq!(out.upstream.unwrap().body, b"ABCDEFGHIJ");
}

#[test]
fn paused_request_resumes_from_call_reply() {
    let mut h = host("");
    h.set_responder("pipeline", |req, _| {
        assert_eq!(req.method(), "POST");
        assert_eq!(req.header("content-length"), Some("7"));
        CallReply::after(50, 200, "pong")
    });
    let t0 = h.now_ms();
    let out = pass(&mut h, 0, op("pause-call").header("x-cluster", "pipeline"));
    let up = out.upstream.expect("resumed and forwarded");
    assert_eq!(up.header("x-probe-resumed"), Some("pause-call"));
    assert_eq!(h.now_ms() - t0, 50, "the stream waited for the reply");
    assert!(!logs_with(&h, "stream-call-response ctx=2 token=1 headers=1 body=pong").is_empty());
}

/// One tick-driven call with the given reply and timeout; returns the module's log lines about
/// it (dispatch + response) and the virtual time (ms after the tick) of the response.
fn one_call(reply: CallReply, timeout_ms: u64, wait_ms: u64) -> (Vec<String>, Option<u64>) {
    let mut c = cfg(&format!(
        "tick=1000;ticks_max=1;call=pipeline;timeout={timeout_ms}"
    ));
    c.workers = 0;
    let mut h = Host::start(c).unwrap();
    h.set_responder("pipeline", move |_, _| reply.clone());
    h.advance(1000 + wait_ms).unwrap();
    let tick_at = h.config().start_time_ms + 1000;
    let lines: Vec<String> = h
        .logs()
        .iter()
        .filter(|l| l.message.starts_with("dispatch") || l.message.starts_with("call-"))
        .map(|l| l.message.clone())
        .collect();
    let at = h
        .logs()
        .iter()
        .find(|l| l.message.starts_with("call-"))
        .map(|l| l.at_ms - tick_at);
    (lines, at)
}

#[test]
fn http_call_outcomes_match_envoy() {
    let (l, at) = one_call(CallReply::Timeout, 500, 2000);
    assert_eq!(
        l[1],
        "call-response root=1 token=1 headers=3 status=504 body=upstream request timeout"
    );
    assert_eq!(at, Some(500));

    let (l, at) = one_call(CallReply::after(800, 200, "late"), 500, 2000);
    assert!(l[1].contains("status=504"), "{l:?}");
    assert_eq!(at, Some(500));

    let quick = CallReply::Reply {
        status: 201,
        headers: vec![("X-A".into(), "b".into())],
        body: b"ok".to_vec(),
        delay_ms: 100,
    };
    let (l, at) = one_call(quick, 500, 2000);
    assert_eq!(
        l[1],
        "call-response root=1 token=1 headers=2 status=201 body=ok"
    );
    assert_eq!(at, Some(100));

    let (l, _) = one_call(CallReply::Timeout, 0, 100_000);
    assert_eq!(l.len(), 1, "timeout 0 never answers: {l:?}");

    let (l, at) = one_call(CallReply::ConnectFailure, 500, 10);
    assert!(
        l[1].contains("status=503 body=upstream connect error"),
        "{l:?}"
    );
    assert_eq!(at, Some(0));

    let (l, _) = one_call(CallReply::ResetAfterHeaders, 500, 10);
    assert_eq!(l[1], "call-failed root=1 token=1 status=11:reset");

    let (l, _) = one_call(CallReply::InlineFailure, 500, 10);
    assert_eq!(l, ["dispatch root=1 err=InternalFailure"]);

    let (l, _) = one_call(CallReply::Hang, 500, 100_000);
    assert_eq!(l.len(), 1);
}

#[test]
fn http_call_validation() {
    let mut h = host("");
    h.set_responder("pipeline", |_, _| CallReply::Hang);
    let call = |h: &mut Host, r: TestRequest| ask(h, 0, r.header("x-probe-op", "call"));
    let base = || TestRequest::get("/c").header("x-cluster", "pipeline");
    assert_eq!(call(&mut h, base()), "token=1");
    assert_eq!(call(&mut h, base()), "token=2", "tokens unique per VM");
    // An unknown cluster, each required header missing, too many headers: refused.
    let mut refused = vec![TestRequest::get("/c").header("x-cluster", "nope")];
    refused.extend([":path", ":method", ":authority"].map(|o| base().header("x-omit", o)));
    refused.push(base().header("x-count", "1100"));
    for r in refused {
        assert_eq!(call(&mut h, r), "err=BadArgument");
    }
    assert_eq!(call(&mut h, base().header("x-count", "1000")), "token=3");
    let calls = h.calls();
    assert_eq!(calls.len(), 8);
    assert_eq!(calls[0].cluster, "pipeline");
    assert_eq!(calls[0].body, b"payload");
    assert_eq!(calls[2].result, 2);
}

#[test]
fn trap_kills_only_that_vm_and_reload_recovers() {
    let mut h = host("tick=1000");
    let out = unforwarded(&mut h, 1, op("panic"));
    assert_eq!(out.status, 503);
    assert_eq!(h.dead_vms(), vec![1]);
    assert_eq!(h.live_vms(), vec![0, 2]);
    assert!(h.deaths()[0].reason.contains("unreachable") || !h.deaths()[0].reason.is_empty());
    assert!(
        !logs_with(&h, "probe panics on request").is_empty(),
        "stderr captured"
    );
    // FAIL_CLOSED: 503 without running the filter.
    let before = h.logs().len();
    let out = unforwarded(&mut h, 1, op("noop"));
    assert_eq!(out.status, 503);
    assert_eq!(h.logs().len(), before);
    h.advance(1000).unwrap();
    assert_eq!(h.metric("probe.ticks"), Some(2), "dead VM does not tick");

    h.reload_vm(1).unwrap();
    assert_eq!(h.live_vms(), vec![0, 1, 2]);
    h.advance(1000).unwrap();
    assert_eq!(h.metric("probe.ticks"), Some(5));
    assert_eq!(pass(&mut h, 1, op("noop")).status, 200);
}

#[test]
fn trap_in_tick_is_recorded_and_the_clock_goes_on() {
    let mut h = host("tick=100;panic_tick=2");
    h.advance(1000).unwrap();
    assert_eq!(h.dead_vms(), vec![0, 1, 2]);
    assert_eq!(h.deaths().len(), 3);
    assert_eq!(h.deaths()[0].at_ms, h.config().start_time_ms + 200);
    assert_eq!(h.now_ms(), h.config().start_time_ms + 1000);
}

#[test]
fn fail_open_and_fail_reload_policies() {
    // A host under `policy` whose VM 0 trapped.
    let killed = |policy| {
        let mut c = cfg("");
        c.failure_policy = policy;
        let mut h = Host::start(c).unwrap();
        h.kill_vm(0);
        h
    };
    let mut h = killed(FailurePolicy::FailOpen);
    let out = pass(&mut h, 0, op("local"));
    assert_eq!(out.status, 200, "filter skipped");

    let mut h = killed(FailurePolicy::FailReload);
    let out = unforwarded(&mut h, 0, op("local"));
    assert_eq!(out.status, 418, "a fresh VM ran the filter");
    assert!(h.dead_vms().is_empty());
}

#[test]
fn metrics_follow_envoy_stats() {
    let mut h = host("");
    let r = ask(&mut h, 0, op("metric").header("x-value", "10"));
    assert_eq!(
        r,
        "inc=Ok(()) inc0=Err(BadArgument) rec=Ok(()) grec=Ok(()) ginc=Ok(()) get=Ok(6)"
    );
    ask(&mut h, 1, op("metric").header("x-value", "3"));
    // Counter: 1 + 5 (record adds) per request, summed over VMs.
    assert_eq!(h.metric("probe.requests"), Some(12));
    // Gauge: one process-wide value, last writer wins (3, then -1).
    assert_eq!(h.metric("probe.gauge"), Some(2));
    assert!(h.metrics().iter().any(|(n, _)| n == "probe.ticks"));
}

#[test]
fn properties_env_and_virtual_time() {
    let mut c = cfg("");
    c.env = vec![("PROBE_ENV".into(), "hello".into())];
    let mut h = Host::start(c).unwrap();
    let prop = |h: &mut Host, p: &str| ask(h, 0, op("property").header("x-path", p));
    assert_eq!(prop(&mut h, "plugin_root_id"), "value=status_sync");
    assert_eq!(prop(&mut h, "plugin_vm_id"), "value=status-sync");
    assert_eq!(prop(&mut h, "plugin_name"), "value=status_sync");
    assert_eq!(prop(&mut h, "request.path"), "none");
    assert_eq!(ask(&mut h, 0, op("env")), "value=hello");
    h.advance(1234).unwrap();
    assert_eq!(
        ask(&mut h, 0, op("time")),
        format!("now={}", 1_700_000_001_234u64)
    );
}

#[test]
fn many_ticks_are_cheap() {
    let mut c = cfg("tick=10");
    c.workers = 2;
    let mut h = Host::start(c).unwrap();
    let t = std::time::Instant::now();
    h.advance(10 * 20_000).unwrap();
    assert_eq!(h.metric("probe.ticks"), Some(60_000));
    eprintln!("60k ticks in {:?}", t.elapsed());
}
