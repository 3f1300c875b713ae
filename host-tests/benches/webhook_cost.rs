//! Benchmark 4: what one live webhook costs the filter, for drone's 3.5 KB
//! `webhook-build-updated-running.json` fixture.
//!
//! - Natively (the sans-IO core, this machine's clock): `parse_webhook`, the queue hand-off
//!   (`Observation::message` on the worker, `decode` at the leader) and `Reconciler::observe`
//!   (a new build each time, in a ledger of 10^4 that is full after the first 10^4), timed per
//!   iteration over 2*10^5 iterations: median and p99.
//! - In the real `status_sync.wasm` (wasmtime fuel, independent of the machine): the whole
//!   request path in a worker VM (context create, headers, body copy, response headers, log:
//!   parse and enqueue), per request; the same for a request the filter does not watch (same
//!   POST on another path) and for the smallest webhook it accepts (only the fields it reads),
//!   which split the cost into a fixed part and a part per body byte; and the leader's share
//!   (dequeue, decode, record, checkpoint of the changed ledger shard) as the fuel of a tick
//!   that drained one webhook minus an idle tick's, with 5000 builds tracked.
//!
//! No target is set for this one; the figures are reported.

mod common;

use common::report::{self, median, quantile, Summary};
use common::*;
use host_tests::Host;
use status_sync::core::model::DeliveryOutcome;
use status_sync::core::observation::{Observation, QueueKey};
use status_sync::core::reconciler::Reconciler;
use status_sync::core::webhook::parse_webhook;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Instant;

const FIXTURE: &str = "webhook-build-updated-running.json";
const NATIVE_ITERS: u64 = 200_000;
const NATIVE_WARMUP: u64 = 20_000;
const WASM_REQUESTS: u64 = 10_000;
/// The smallest body the filter records: only the fields it reads.
const MINIMAL: &str = r#"{"event":"build","action":"updated","repo":{"id":42,"namespace":"octocat","name":"hello-world"},"build":{"number":101,"status":"running","version":2}}"#;
const LEADER_TRACKED: u64 = 5_000;
const LEADER_SAMPLES: u64 = 2_000;

struct Native {
    parse: Vec<f64>,
    queue: Vec<f64>,
    observe: Vec<f64>,
    total: Vec<f64>,
}

fn native(body: &[u8]) -> Native {
    let mut r = Reconciler::new(native_config(""), 3);
    let mut now = 1_700_000_000_000u64;
    let mut out = Native {
        parse: Vec::new(),
        queue: Vec::new(),
        observe: Vec::new(),
        total: Vec::new(),
    };
    // Verified webhooks are tagged in the queue (HMAC-SHA256): part of the queue's cost.
    let key = QueueKey::derive(b"bench-webhook-secret");
    for i in 0..NATIVE_WARMUP + NATIVE_ITERS {
        now += 7;
        let t0 = Instant::now();
        let mut hook = parse_webhook(black_box(body)).expect("the fixture parses");
        let t1 = Instant::now();
        hook.number = i + 1;
        let msg = Observation::message(&hook, DeliveryOutcome::Delivered, Some(&key));
        let obs = Observation::decode(black_box(&msg), Some(&key)).expect("decodes");
        let t2 = Instant::now();
        r.observe(obs, now);
        let t3 = Instant::now();
        if i >= NATIVE_WARMUP {
            let ns = |a: Instant, b: Instant| (b - a).as_nanos() as f64;
            out.parse.push(ns(t0, t1));
            out.queue.push(ns(t1, t2));
            out.observe.push(ns(t2, t3));
            out.total.push(ns(t0, t3));
        }
    }
    assert_eq!(r.ledger().len(), 10_000, "the ledger filled up");
    out
}

/// Build `i` (1-based): 20 repositories, consecutive numbers in each (no gaps to fill).
fn build_body(bodies: &Bodies, i: u64) -> Vec<u8> {
    bodies.webhook(i % 20, i / 20 + 1, "running", 2)
}

fn main() {
    report::process_start();
    let body = fixture_bytes(FIXTURE);
    let n = native(&body);

    // ---- wasm: the request path in the workers.
    let bodies = Rc::new(Bodies::new());
    // Nothing becomes due while measuring: a tick's fuel is its drain, record and checkpoint.
    let mut host = Host::start(host_config(
        2,
        r#","stale_after_ms":86400000,"max_poll_interval_ms":86400000"#,
    ))
    .expect("host starts");
    let drone = install_drone(&mut host);
    let _pipeline = install_pipeline(&mut host);
    host.advance(2_000).expect("advance");
    let leader = leader_vm(&host).expect("a leader");
    let mut request_fuel = Vec::new();
    for i in 0..WASM_REQUESTS {
        let vm = (i % 2) as usize;
        let before = host.fuel_consumed(vm).expect("fuel is on");
        send(&mut host, vm, body.clone(), 200);
        request_fuel.push((host.fuel_consumed(vm).expect("fuel") - before) as f64);
        if i % 100 == 99 {
            host.advance(100).expect("advance");
        }
    }
    assert!(metric(&host, "webhooks_observed") as u64 >= WASM_REQUESTS);
    assert_eq!(metric(&host, "webhooks_unparsable"), 0);

    // What part of that is any request through the filter, and what part grows with the body:
    // the same POST on a path the filter does not watch, and the smallest webhook it accepts.
    let request_fuel_of = |host: &mut Host, req: &dyn Fn() -> host_tests::TestRequest| {
        let mut fuel = Vec::new();
        for i in 0..1_000u64 {
            let vm = (i % 2) as usize;
            let before = host.fuel_consumed(vm).expect("fuel is on");
            host.request(vm, req(), |_| host_tests::UpstreamReply::status(200))
                .expect("request");
            fuel.push((host.fuel_consumed(vm).expect("fuel") - before) as f64);
        }
        host.advance(1_000).expect("advance");
        fuel
    };
    let other_fuel = request_fuel_of(&mut host, &|| {
        host_tests::TestRequest::post("/other", body.clone())
            .header("x-drone-event", "build")
            .header("content-type", "application/json")
    });
    let observed_before = metric(&host, "webhooks_observed");
    let minimal_fuel = request_fuel_of(&mut host, &|| hook_request(MINIMAL.as_bytes().to_vec()));
    assert_eq!(
        metric(&host, "webhooks_observed") - observed_before,
        1_000,
        "the minimal webhook is observed"
    );
    assert_eq!(metric(&host, "webhooks_unparsable"), 0, "and parsed");

    // ---- wasm: the leader's share, one webhook per tick, LEADER_TRACKED builds tracked.
    let mut fed = 0u64;
    while fed < LEADER_TRACKED {
        for _ in 0..100 {
            fed += 1;
            let vm = (fed % 2) as usize;
            send(&mut host, vm, build_body(&bodies, fed), 200);
        }
        host.advance(100).expect("advance");
    }
    host.advance(1_000).expect("advance");
    host.clear_records();
    host.take_tick_fuel();
    host.advance(100 * 200).expect("advance");
    let idle: Vec<f64> = host
        .take_tick_fuel()
        .into_iter()
        .filter(|t| t.vm == leader)
        .map(|t| t.fuel as f64)
        .collect();
    let idle_median = median(&idle);
    let mut record = Vec::new();
    for _ in 0..LEADER_SAMPLES {
        fed += 1;
        let vm = (fed % 2) as usize;
        send(&mut host, vm, build_body(&bodies, fed), 200);
        host.take_tick_fuel();
        host.advance(100).expect("advance");
        for t in host.take_tick_fuel() {
            if t.vm == leader {
                record.push(t.fuel as f64 - idle_median);
            }
        }
    }
    assert_eq!(metric(&host, "leader_changes"), 1, "same leader throughout");
    assert_eq!(drone.borrow().store.calls.build, 0, "nothing was due");
    let tracked = metric(&host, "builds_tracked");

    let mut s = Summary::new(
        "webhook_cost",
        "make bench (cargo bench -p host-tests --bench webhook_cost)",
    );
    s.figure("fixture", FIXTURE)
        .figure("fixture_bytes", body.len() as u64)
        .figure("native_iterations", NATIVE_ITERS);
    for (name, v) in [
        ("native_total_ns", &n.total),
        ("native_parse_ns", &n.parse),
        ("native_queue_encode_decode_ns", &n.queue),
        ("native_observe_ns", &n.observe),
        ("wasm_request_path_fuel", &request_fuel),
        ("wasm_request_path_fuel_not_watched", &other_fuel),
        ("wasm_request_path_fuel_minimal_webhook", &minimal_fuel),
        ("wasm_leader_record_fuel", &record),
    ] {
        s.figure(&format!("{name}_median"), report::round(median(v)));
        s.figure(&format!("{name}_p99"), report::round(quantile(v, 0.99)));
    }
    let per_byte = (median(&request_fuel) - median(&minimal_fuel))
        / (body.len() as f64 - MINIMAL.len() as f64);
    s.figure("minimal_webhook_bytes", MINIMAL.len() as u64)
        .figure(
            "wasm_request_path_fuel_per_body_byte",
            report::round(per_byte),
        );
    s.figure("wasm_requests", WASM_REQUESTS)
        .figure("wasm_leader_idle_tick_fuel_median", idle_median)
        .figure("wasm_leader_tracked_builds", tracked);
    s.note("native: one thread, per-iteration Instant timing (about 20-30 ns of it is the clock itself); wasm: wasmtime fuel, about one unit per wasm operator");
    s.emit();
}
