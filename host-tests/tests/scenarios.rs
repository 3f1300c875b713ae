//! The real `status_sync.wasm` in our Envoy-faithful wasmtime host: whole scenarios with
//! several VMs (workers + main), the canary, ticks, shared data, queues and HTTP calls.

mod common;

use common::*;
use host_tests::{Host, HostConfig, UpstreamReply};

/// Builds `numbers` of repository `repo` run (their `running` webhooks reach the pipeline
/// through worker `vm`) and finish in drone (`success`, version 3) with the final webhook lost.
fn finals_lost(
    host: &mut Host,
    drone: &SharedDrone,
    pipeline: &SharedPipeline,
    vm: usize,
    repo: u64,
    numbers: impl IntoIterator<Item = u64>,
) {
    for n in numbers {
        send_live(host, pipeline, vm, webhook(repo, n, "running", 2), 200);
        drone.borrow_mut().set(repo, n, "success", 3);
    }
}

fn drone_calls_by_vm(host: &Host) -> Vec<usize> {
    let mut vms: Vec<usize> = host
        .calls()
        .iter()
        .filter(|c| c.cluster == "drone")
        .map(|c| c.vm)
        .collect();
    vms.sort();
    vms.dedup();
    vms
}

#[test]
fn all_webhooks_arrive_no_drone_calls_while_fresh_or_after_terminal() {
    let (mut host, drone, pipeline) = start_host(signed_host_config(2, ""));
    for (vm, status, version) in [(0, "pending", 1), (1, "running", 2), (2, "running", 2)] {
        send_live(
            &mut host,
            &pipeline,
            vm,
            webhook(1, 5, status, version),
            200,
        );
        host.advance(1000).unwrap();
    }
    send_live(&mut host, &pipeline, 0, webhook(1, 5, "success", 3), 200);
    host.advance(120_000).unwrap();
    assert_eq!(
        drone.borrow().build_calls(),
        0,
        "no build lookup while fresh, none after terminal"
    );
    // Discovery looks at the repository's `counter` at growing intervals (2 s doubling to
    // 16 s here) after its last new build; drone's OSS build refuses the incomplete list once.
    let others = drone.borrow().calls.len();
    assert!(
        (4..=14).contains(&others),
        "{others} discovery calls in 2 minutes"
    );
    assert_eq!(metric(&host, "webhooks_observed"), 4);
    assert_eq!(metric(&host, "webhooks_delivered"), 4);
    assert_eq!(metric(&host, "builds_tracked"), 0);
    // A late step webhook of the finished build does not bring it back.
    send_live(&mut host, &pipeline, 1, webhook(1, 5, "running", 2), 200);
    host.advance(60_000).unwrap();
    assert_eq!(drone.borrow().build_calls(), 0);
}

#[test]
fn lost_final_webhook_is_polled_after_stale_after_and_redelivered() {
    let (mut host, drone, pipeline) = start_host(signed_host_config(2, ""));
    send_live(&mut host, &pipeline, 0, webhook(1, 7, "running", 2), 200);
    drone.borrow_mut().set(1, 7, "success", 3); // its final webhook is lost
    host.advance(1000).unwrap();
    assert_eq!(drone.borrow().build_calls(), 0, "still fresh");
    host.advance(5000).unwrap();
    assert_eq!(
        drone
            .borrow()
            .calls_for("/api/repos/octocat/repo-1/builds/7"),
        1
    );
    assert_succeeded(&pipeline, 1, [7]);
    let p = pipeline.borrow();
    let last = p.received.last().unwrap();
    assert_eq!(last["event"], "build");
    assert_eq!(last["action"], "updated");
    assert_eq!(last["repo"]["slug"], "octocat/repo-1");
    assert!(
        last["build"]["stages"].is_array(),
        "build with stages from the API"
    );
    assert_eq!(p.webhook_ids, vec![format!("drone-{}-7-3", repo_id(1))]);
    drop(p);
    assert_eq!(metric(&host, "redeliveries_ok"), 1);
    host.advance(120_000).unwrap();
    assert_eq!(drone.borrow().build_calls(), 1, "forgotten once delivered");
}

#[test]
fn pipeline_500_is_redelivered_and_400_is_not() {
    let (mut host, drone, pipeline) = start_host(signed_host_config(2, ""));
    send_live(&mut host, &pipeline, 0, webhook(1, 1, "running", 2), 200);
    send_live(&mut host, &pipeline, 1, webhook(1, 2, "running", 2), 200);
    drone.borrow_mut().set(1, 1, "success", 3);
    drone.borrow_mut().set(1, 2, "failure", 3);
    let out = send_live(&mut host, &pipeline, 0, webhook(1, 1, "success", 3), 500);
    assert_eq!(
        out.status, 500,
        "the pipeline's answer reaches drone unchanged"
    );
    send_live(&mut host, &pipeline, 1, webhook(1, 2, "failure", 3), 400);
    host.advance(1000).unwrap();
    assert_eq!(
        pipeline.borrow().status_of(1, 1),
        Some(("success".into(), 3)),
        "500: re-delivered at once"
    );
    host.advance(120_000).unwrap();
    assert_eq!(
        pipeline.borrow().status_of(1, 2),
        Some(("running".into(), 2)),
        "400: not re-delivered"
    );
    assert_eq!(metric(&host, "webhooks_not_delivered"), 1);
    assert_eq!(metric(&host, "webhooks_refused"), 1);
    assert_eq!(drone.borrow().calls_for("/builds/2"), 0);
}

#[test]
fn four_workers_one_leader_one_poll_per_due_build_and_takeover_loses_nothing() {
    let (mut host, drone, pipeline) = start_host(signed_host_config(4, ""));
    assert_eq!(host.vm_count(), 5, "4 workers + main");
    for n in 1..=20u64 {
        let vm = (n as usize) % 5;
        send_live(&mut host, &pipeline, vm, webhook(1, n, "running", 2), 200);
        drone.borrow_mut().set(1, n, "running", 2);
    }
    // One stale period (2 s ± 20%) and a bit, but less than the next interval (4 s ± 20%):
    // each build polled exactly once, by one VM.
    host.advance(4000).unwrap();
    for n in 1..=20u64 {
        assert_eq!(
            drone.borrow().calls_for(&format!("/builds/{n}")),
            1,
            "build {n}"
        );
    }
    let leaders = drone_calls_by_vm(&host);
    assert_eq!(leaders.len(), 1, "one reconciler: {leaders:?}");
    assert_eq!(metric(&host, "leader_changes"), 1);
    let leader = leaders[0];

    // The leader dies; its builds' final webhooks are lost meanwhile.
    host.kill_vm(leader);
    for n in 1..=20u64 {
        drone.borrow_mut().set(1, n, "success", 3);
    }
    host.advance(40_000).unwrap();
    assert_eq!(metric(&host, "leader_changes"), 2, "another root took over");
    assert_succeeded(&pipeline, 1, 1..=20);
    let after: Vec<usize> = host
        .calls()
        .iter()
        .filter(|c| c.cluster == "drone" && c.vm != leader)
        .map(|c| c.vm)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|vm| *vm == after[0]),
        "still one reconciler"
    );
}

#[test]
fn drone_down_for_long_costs_a_trickle_then_everything_converges() {
    let (mut host, drone, pipeline) = start_host(host_config(
        2,
        r#","max_inflight_calls":8,"max_drone_calls_per_sec":50"#,
    ));
    finals_lost(&mut host, &drone, &pipeline, 0, 2, 1..=30);
    drone.borrow_mut().down = true;
    host.advance(600_000).unwrap(); // 10 minutes
    let during = drone.borrow().calls.len();
    // 5 to open the circuit (+ calls already in flight), then one probe per open period:
    // 2 s doubling to 16 s, so about 40 in 10 minutes.
    // At least the threshold and one probe per longest open period: the circuit keeps probing.
    assert!(
        (5 + 600 / 16..=5 + 8 + 45).contains(&during),
        "calls during the outage: {during}"
    );
    assert_eq!(metric(&host, "circuit_open"), 1);
    drone.borrow_mut().down = false;
    host.advance(60_000).unwrap();
    assert_succeeded(&pipeline, 2, 1..=30);
    assert_eq!(metric(&host, "circuit_open"), 0);
}

#[test]
fn one_tick_registration_per_root_and_memory_flat_once_the_ledger_is_full() {
    let (mut host, drone, pipeline) = start_host(host_config(
        1,
        r#","max_tracked_builds":500,"max_poll_interval_ms":4000"#,
    ));
    let mut number = 0u64;
    let mut mem_after_warmup = None;
    let memory = |host: &Host| -> Vec<usize> {
        (0..host.vm_count())
            .map(|vm| host.memory_bytes(vm))
            .collect()
    };
    // 10^5 ticks of 100 ms; a new build every 5 ticks (churn past the ledger's cap), drone
    // keeps them all running, so the ledger fills and evicts.
    for i in 0..20_000u64 {
        number += 1;
        drone.borrow_mut().set(3, number, "running", 2);
        send_live(
            &mut host,
            &pipeline,
            (i % 2) as usize,
            webhook(3, number, "running", 2),
            200,
        );
        host.advance(500).unwrap();
        if i == 5_000 {
            mem_after_warmup = Some(memory(&host));
        }
    }
    assert_eq!(
        Some(memory(&host)),
        mem_after_warmup,
        "linear memory stops growing"
    );
    assert_eq!(metric(&host, "builds_tracked"), 500);
    assert!(
        metric(&host, "builds_evicted") > 10_000,
        "churn went through the cap"
    );
    for (vm, root, calls) in host.tick_period_calls() {
        assert_eq!(
            calls, 1,
            "set_tick_period once per root (vm {vm}, root {root})"
        );
    }
    let keys = host.shared_data_len();
    assert!(keys <= 3 + 500 / 64 + 1, "fixed key set: {keys}");
    assert!(drone.borrow().calls.len() > 1000);
}

#[test]
fn config_reload_keeps_tracked_builds() {
    let (mut host, drone, pipeline) = start_host(host_config(2, ""));
    finals_lost(&mut host, &drone, &pipeline, 0, 4, 1..=5);
    host.advance(500).unwrap();
    host.reconfigure(&plugin_config(r#","max_inflight_calls":2"#))
        .unwrap();
    host.advance(30_000).unwrap();
    assert_succeeded(&pipeline, 4, 1..=5);
    assert!(metric(&host, "leader_changes") >= 2);
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let mut cfg = host_config(1, "");
    cfg.plugin_config = plugin_config(r#","tick_ms":"fast""#);
    let text = format!("{:#}", Host::start(cfg).err().expect("refused"));
    assert!(
        text.contains("invalid configuration: key `tick_ms`"),
        "{text}"
    );

    let mut cfg = host_config(1, "");
    cfg.plugin_config = r#"{"pipeline_cluster":"pipeline","drone_cluster":"drone","drone_token":"sekrit-value","bogus":1}"#.into();
    let text = format!("{:#}", Host::start(cfg).err().expect("unknown key refused"));
    assert!(text.contains("key `bogus`"), "{text}");
    assert!(
        !text.contains("sekrit-value"),
        "the token is never logged: {text}"
    );
}

#[test]
fn unparsable_and_oversized_webhooks_pass_through_unchanged() {
    let (mut host, _drone, pipeline) = start_host(host_config(1, r#","max_body_bytes":4096"#));
    let cases: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        br#"{"event":"build","action":"updated","repo":{"id":"x"},"build":{"number":-1}}"#.to_vec(),
        {
            let mut big = webhook(5, 1, "running", 2);
            big.extend(std::iter::repeat_n(b' ', 10_000));
            big
        },
        Vec::new(),
    ];
    for body in cases {
        let sent = body.clone();
        let out = host
            .request(0, hook_request(body).chunked(1000), move |up| {
                assert_eq!(up.body, sent, "body unchanged");
                UpstreamReply::status(202)
            })
            .unwrap();
        assert_eq!(out.status, 202);
        assert!(out.upstream.is_some());
    }
    host.advance(100).unwrap(); // the worker's tick flushes the filter's counters
    assert_eq!(metric(&host, "webhooks_unparsable"), 4);
    assert_eq!(metric(&host, "webhooks_oversized"), 1);
    assert_eq!(metric(&host, "builds_tracked"), 0);
    assert!(host.dead_vms().is_empty(), "no trap");
    let _ = pipeline;
}

#[test]
fn repository_json_goes_to_the_reconciler_once_and_a_new_leader_fetches_it() {
    let (mut host, drone, pipeline) = start_host(signed_host_config(2, ""));
    // Many webhooks of one repository through one worker: the queue messages after the first
    // carry only the transition, yet re-deliveries are drone-shaped with the repository.
    finals_lost(&mut host, &drone, &pipeline, 0, 1, 1..=10);
    host.advance(6000).unwrap();
    assert_succeeded(&pipeline, 1, 1..=10);
    // The leader had the repository from the first webhook: the only lookups of it are
    // discovery's (at 2 s and 4 s after the last new build).
    assert!(
        drone.borrow().calls_for("/api/repos/octocat/repo-1") <= 3,
        "the leader had the repository from the first webhook"
    );
    let last = pipeline.borrow().received.last().unwrap().clone();
    assert_eq!(last["repo"]["slug"], "octocat/repo-1");
    assert_eq!(last["system"]["host"], "drone.example.com");

    // The leader dies. Workers do not send the repository again (unchanged, within the
    // refresh), so the new leader asks drone for it once, then re-delivers.
    let leader = drone_calls_by_vm(&host)[0];
    host.kill_vm(leader);
    let worker = if leader == 0 { 1 } else { 0 };
    for n in 11..=15u64 {
        send_live(
            &mut host,
            &pipeline,
            worker,
            webhook(1, n, "running", 2),
            200,
        );
        drone.borrow_mut().set(1, n, "success", 3);
    }
    host.advance(40_000).unwrap();
    assert_succeeded(&pipeline, 1, 11..=15);
    assert!(
        drone.borrow().calls_for("/api/repos/octocat/repo-1") <= 3 + 8,
        "discovery's lookups of the repository (at most 8 in 40 s) serve the new leader too"
    );
    let last = pipeline.borrow().received.last().unwrap().clone();
    assert_eq!(last["repo"]["slug"], "octocat/repo-1");
}

/// The default configuration (only clusters, token and secret): discovery works without
/// any setting.
fn default_signed_config(workers: usize) -> HostConfig {
    let mut cfg = HostConfig::new(
        wasm(),
        r#"{"pipeline_cluster":"pipeline","drone_cluster":"drone","drone_token_env":"DRONE_TOKEN","webhook_secret_env":"HOOK_SECRET"}"#,
    );
    cfg.workers = workers;
    cfg.env = vec![
        ("DRONE_TOKEN".into(), TOKEN.into()),
        ("HOOK_SECRET".into(), HOOK_SECRET.into()),
    ];
    cfg
}

/// Advances in steps of 1 s until `done` or `limit_ms`; returns the time it took.
fn advance_until(host: &mut Host, limit_ms: u64, mut done: impl FnMut() -> bool) -> Option<u64> {
    let start = host.now_ms();
    while host.now_ms() - start < limit_ms {
        if done() {
            return Some(host.now_ms() - start);
        }
        host.advance(1000).unwrap();
    }
    done().then(|| host.now_ms() - start)
}

/// Issue 12: the newest builds of a repository lose every webhook (a declined build whose
/// only webhook, `build:created`, is lost, then a build that runs and finishes); no later
/// build comes. With the default configuration the pipeline gets both final states within
/// 2 × `max_poll_interval_ms` (docs/reliability.md: Convergence) of drone writing them.
#[test]
fn newest_builds_whose_every_webhook_was_lost_are_discovered() {
    let (mut host, drone, pipeline) = start_host(default_signed_config(2));
    for (status, version) in [("pending", 1), ("running", 2), ("success", 3)] {
        drone_writes_and_sends(&mut host, (&drone, &pipeline), (1, 1), (status, version));
        host.advance(5_000).unwrap();
    }
    // Build 2: created and declined, nothing sent (drone never reports declines, and the
    // `build:created` is lost). Build 3: runs for 90 s, every webhook lost.
    host.advance(200_000).unwrap();
    drone.borrow_mut().set(1, 2, "declined", 2);
    drone.borrow_mut().set(1, 3, "pending", 1);
    host.advance(20_000).unwrap();
    drone.borrow_mut().set(1, 3, "running", 2);
    host.advance(90_000).unwrap();
    drone.borrow_mut().set(1, 3, "success", 3);
    let bound = 2 * 300_000;
    let took = advance_until(&mut host, bound, || {
        let p = pipeline.borrow();
        p.status_of(1, 2) == Some(("declined".into(), 2))
            && p.status_of(1, 3) == Some(("success".into(), 3))
    });
    assert!(
        took.is_some(),
        "not delivered within {bound} ms: {:?} {:?}; drone calls {:?}",
        pipeline.borrow().status_of(1, 2),
        pipeline.borrow().status_of(1, 3),
        drone.borrow().calls
    );
    eprintln!(
        "final states delivered {} s after drone wrote the last",
        took.unwrap_or(0) / 1000
    );
    assert!(metric(&host, "builds_discovered") >= 2);
    assert_eq!(metric(&host, "giveups"), 0);
}

/// Issue 12: drone takes build number n-1, then n, and writes n's row (and sends its
/// webhook) before n-1's (two triggers at once). Gap filling looks n-1 up, gets 404, looks
/// again, and delivers it once it exists (its only webhook lost: declined).
#[test]
fn a_build_announced_before_the_one_below_exists_is_delivered() {
    let (mut host, drone, pipeline) = start_host(default_signed_config(1));
    drone_writes_and_sends(&mut host, (&drone, &pipeline), (1, 1), ("success", 3));
    host.advance(2_000).unwrap();
    drone.borrow_mut().store.taken(1, 3);
    drone_writes_and_sends(&mut host, (&drone, &pipeline), (1, 3), ("pending", 1));
    let looked = advance_until(&mut host, 120_000, || {
        drone
            .borrow()
            .calls_for("/api/repos/octocat/repo-1/builds/2")
            > 0
    });
    assert!(looked.is_some(), "build 2 looked up");
    assert_eq!(
        pipeline.borrow().status_of(1, 2),
        None,
        "404: not there yet"
    );
    host.advance(10_000).unwrap();
    drone.borrow_mut().set(1, 2, "declined", 2);
    let took = advance_until(&mut host, 600_000, || {
        pipeline.borrow().status_of(1, 2) == Some(("declined".into(), 2))
    });
    assert!(took.is_some(), "{:?}", drone.borrow().calls);
    assert_eq!(metric(&host, "builds_not_found"), 0);
}
