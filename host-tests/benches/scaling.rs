//! Benchmarks 2 and 3: what a tick costs, and how much linear memory the reconciler holds, as
//! the ledger grows from 10^2 to 10^5 tracked builds with nothing due.
//!
//! The real `out/status_sync.wasm` runs in the host (2 workers + main) with wasmtime fuel
//! metering: a tick's cost is the fuel the leader's `proxy_on_tick` consumes (about one unit
//! per wasm operator; independent of this machine's speed and load). The same is timed
//! natively on the sans-IO core (`Reconciler::tick`, median of many batches).
//!
//! Builds are fed as live webhooks (`running`, answered 200) at 100 per 100 ms tick, so the
//! leader drains, records and checkpoints them the way it would in Envoy; `stale_after_ms` is a
//! day, so while ticks are measured none of them is due.
//!
//! Targets: tick fuel at 10^5 tracked under 2x of 10^2; leader linear memory at 10^5 tracked
//! minus empty, per build, under 200 bytes.

mod common;

use common::report::{self, chart, median, quantile, Op, Panel, Series, Summary};
use common::*;
use host_tests::{Host, UpstreamReply};
use status_sync::core::model::{BuildStatus, DeliveryOutcome, ParsedWebhook};
use status_sync::core::observation::Observation;
use status_sync::core::reconciler::Reconciler;
use std::rc::Rc;
use std::time::Instant;

const TICK_MS: u64 = 100;
const CAP: u64 = 100_000;
const SIZES: [u64; 4] = [100, 1_000, 10_000, 100_000];
const REPOS: u64 = 10;
/// Ticks measured at each size.
const MEASURED_TICKS: u64 = 1_000;
/// Live webhooks per tick while filling.
const FILL_PER_TICK: u64 = 100;

// The fed webhooks are signed with drone's secret (`HOOK_SECRET`), so each is evidence and
// tracked in the ledger's evidence class (hints may hold only a quarter of it), as the native
// reconciler below is fed verified observations.
fn extra() -> String {
    format!(
        r#","stale_after_ms":86400000,"max_poll_interval_ms":86400000,"max_tracked_builds":{CAP},"max_gap_fill":0,"webhook_secret_env":"HOOK_SECRET""#
    )
}

/// Sends a webhook signed as drone signs it through VM `vm`; the pipeline answers `status`.
fn send_signed(host: &mut Host, vm: usize, body: Vec<u8>, status: u16) {
    let req = signed_hook_request(body, host.now_ms());
    host.request(vm, req, move |_| UpstreamReply::status(status))
        .expect("request");
}

/// Build `i` (0-based): spread over `REPOS` repositories, numbers consecutive per repository.
fn build_of(i: u64) -> (u64, u64) {
    (i % REPOS, i / REPOS + 1)
}

struct Point {
    tracked: u64,
    fuel_median: f64,
    fuel_p99: f64,
    leader_mem: usize,
    all_mem: usize,
    shared_bytes: usize,
    native_ns: f64,
}

fn leader_tick_fuel(host: &mut Host, leader: usize, ticks: u64) -> Vec<f64> {
    host.take_tick_fuel();
    host.advance(ticks * TICK_MS).expect("advance");
    host.take_tick_fuel()
        .into_iter()
        .filter(|t| t.vm == leader)
        .map(|t| t.fuel as f64)
        .collect()
}

fn shared_bytes(host: &Host) -> usize {
    host.shared_data_keys()
        .iter()
        .map(|k| host.shared_data(k).map_or(0, |v| v.len()))
        .sum()
}

fn all_mem(host: &Host) -> usize {
    (0..host.vm_count()).map(|vm| host.memory_bytes(vm)).sum()
}

fn native_hook(i: u64) -> ParsedWebhook {
    let (repo, number) = build_of(i);
    ParsedWebhook {
        repo: repo_ref(repo),
        number,
        status: BuildStatus::Running,
        version: 2,
        action: "updated".into(),
        repo_json: Some(format!(
            r#"{{"id":{},"name":"repo-{repo}"}}"#,
            repo_id(repo)
        )),
        system_json: None,
    }
}

/// Median nanoseconds of `Reconciler::tick` with `r` as it is (nothing due).
fn native_tick_ns(r: &mut Reconciler, now: &mut u64) -> f64 {
    const BATCH: u64 = 1_000;
    let mut per_tick = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        for _ in 0..BATCH {
            *now += 1;
            let calls = r.tick(*now);
            assert!(calls.is_empty(), "nothing is due");
        }
        per_tick.push(t.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    median(&per_tick)
}

fn main() {
    let started = *report::process_start();
    let bodies = Rc::new(Bodies::new());
    let mut cfg = host_config(2, &extra());
    cfg.env.push(("HOOK_SECRET".into(), HOOK_SECRET.into()));
    let mut host = Host::start(cfg).expect("host starts");
    let drone = install_drone(&mut host);
    let _pipeline = install_pipeline(&mut host);
    host.advance(2_000).expect("advance");
    let leader = leader_vm(&host).expect("a leader was elected");

    // Empty: the baseline for memory and the tick.
    let empty_fuel = leader_tick_fuel(&mut host, leader, MEASURED_TICKS);
    let empty_mem = host.memory_bytes(leader);
    let empty_all = all_mem(&host);
    eprintln!(
        "empty: leader VM {leader}, tick fuel median {}, memory {empty_mem}",
        median(&empty_fuel)
    );

    let mut native = Reconciler::new(
        native_config(&format!(",\"tick_ms\":{TICK_MS}{}", extra())),
        7,
    );
    let mut native_now = 1_700_000_000_000u64;
    let mut native_fed = 0u64;

    let mut points = Vec::new();
    let mut fed = 0u64;
    for &n in &SIZES {
        let t = Instant::now();
        while fed < n {
            let batch = FILL_PER_TICK.min(n - fed);
            for _ in 0..batch {
                let (repo, number) = build_of(fed);
                let vm = (fed % 2) as usize;
                send_signed(
                    &mut host,
                    vm,
                    bodies.webhook(repo, number, "running", 2),
                    200,
                );
                fed += 1;
            }
            host.advance(TICK_MS).expect("advance");
        }
        // Drain what is queued and checkpoint it.
        host.advance(20 * TICK_MS).expect("advance");
        host.clear_records();
        let tracked = metric(&host, "builds_tracked") as u64;
        assert_eq!(tracked, n, "every fed build is tracked");
        assert_eq!(metric(&host, "leader_changes"), 1, "same leader throughout");
        let fuel = leader_tick_fuel(&mut host, leader, MEASURED_TICKS);
        assert!(
            fuel.len() as u64 >= MEASURED_TICKS - 1,
            "leader ticked: {}",
            fuel.len()
        );

        while native_fed < n {
            native.observe(
                Observation::for_tests(native_hook(native_fed), DeliveryOutcome::Delivered, true),
                native_now,
            );
            native_fed += 1;
        }
        assert_eq!(native.ledger().len() as u64, n);
        let native_ns = native_tick_ns(&mut native, &mut native_now);

        let p = Point {
            tracked: n,
            fuel_median: median(&fuel),
            fuel_p99: quantile(&fuel, 0.99),
            leader_mem: host.memory_bytes(leader),
            all_mem: all_mem(&host),
            shared_bytes: shared_bytes(&host),
            native_ns,
        };
        eprintln!(
            "{n:>6} tracked: tick fuel median {} p99 {}, leader memory {} B, native tick {:.1} ns ({:.1} s)",
            p.fuel_median,
            p.fuel_p99,
            p.leader_mem,
            p.native_ns,
            t.elapsed().as_secs_f64()
        );
        points.push(p);
    }
    assert_eq!(drone.borrow().store.calls.build, 0, "nothing was due");

    let first = &points[0];
    let last = &points[points.len() - 1];
    let per_build = (last.leader_mem as f64 - empty_mem as f64) / last.tracked as f64;
    let per_build_all = (last.all_mem as f64 - empty_all as f64) / last.tracked as f64;
    let prev = &points[points.len() - 2];
    let marginal =
        (last.leader_mem as f64 - prev.leader_mem as f64) / (last.tracked - prev.tracked) as f64;

    // Plots.
    let x = |p: &Point| (p.tracked as f64).log10();
    let fuel_plot = chart(
        "tick_cost.svg",
        "Leader tick cost vs tracked builds (nothing due), status_sync.wasm in wasmtime",
        "tracked builds (log10)",
        &[
            Panel::new(
                "fuel per on_tick",
                vec![
                    Series::new(
                        "median",
                        points.iter().map(|p| (x(p), p.fuel_median)).collect(),
                    ),
                    Series::new("p99", points.iter().map(|p| (x(p), p.fuel_p99)).collect()),
                ],
            )
            .limit(2.0 * first.fuel_median, "target: 2x median at 10^2"),
            Panel::new(
                "native Reconciler::tick (ns)",
                vec![Series::new(
                    "median",
                    points.iter().map(|p| (x(p), p.native_ns)).collect(),
                )],
            ),
        ],
    )
    .expect("plot");
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let mem_plot = chart(
        "memory_per_build.svg",
        "Leader linear memory vs tracked builds, status_sync.wasm in wasmtime",
        "tracked builds (log10)",
        &[Panel::new(
            "linear memory (MiB)",
            vec![
                Series::new(
                    "leader VM",
                    points
                        .iter()
                        .map(|p| (x(p), mib(p.leader_mem as f64)))
                        .collect(),
                ),
                Series::new(
                    "limit: empty + 200 B per build",
                    points
                        .iter()
                        .map(|p| (x(p), mib(empty_mem as f64 + 200.0 * p.tracked as f64)))
                        .collect(),
                ),
            ],
        )],
    )
    .expect("plot");

    let cmd = "make bench (cargo bench -p host-tests --bench scaling)";
    let mut s = Summary::new("tick_cost", cmd);
    for p in &points {
        s.figure(
            &format!("fuel_per_tick_median_{}", p.tracked),
            p.fuel_median,
        );
        s.figure(&format!("fuel_per_tick_p99_{}", p.tracked), p.fuel_p99);
        s.figure(
            &format!("native_tick_ns_median_{}", p.tracked),
            report::round(p.native_ns),
        );
    }
    s.figure("fuel_per_tick_median_empty", median(&empty_fuel));
    s.figure("leader_vm", leader as u64);
    s.figure("measured_ticks_per_size", MEASURED_TICKS);
    let ratio = last.fuel_median / first.fuel_median;
    s.figure("fuel_ratio_1e5_over_1e2", report::round(ratio));
    s.figure(
        "native_ratio_1e5_over_1e2",
        report::round(last.native_ns / first.native_ns),
    );
    s.target(
        "leader tick fuel (median) at 10^5 / at 10^2",
        ratio,
        Op::Lt,
        2.0,
        "x",
    );
    s.plot(&fuel_plot);
    s.note("fuel = wasmtime fuel consumed by the leader's proxy_on_tick (lease renewal, queue drain, due builds, checkpoint, metrics), median over 1000 ticks per size");
    s.emit();

    let mut m = Summary::new("memory_per_build", cmd);
    m.figure("leader_memory_empty_bytes", empty_mem as u64);
    for p in &points {
        m.figure(
            &format!("leader_memory_bytes_{}", p.tracked),
            p.leader_mem as u64,
        );
        m.figure(
            &format!("shared_data_bytes_{}", p.tracked),
            p.shared_bytes as u64,
        );
    }
    m.figure("bytes_per_build", report::round(per_build));
    m.figure("bytes_per_build_all_vms", report::round(per_build_all));
    m.figure(
        "bytes_per_build_marginal_1e4_to_1e5",
        report::round(marginal),
    );
    m.figure(
        "shared_data_bytes_per_build",
        report::round(last.shared_bytes as f64 / last.tracked as f64),
    );
    m.target(
        "leader linear memory (10^5 tracked - empty) / 10^5",
        per_build,
        Op::Lt,
        200.0,
        "bytes/build",
    );
    m.plot(&mem_plot);
    m.note("linear memory = the leader VM's wasm memory size (64 KiB pages; it never shrinks, so transient peaks count); shared data (the checkpoint) lives in the host, reported apart");
    m.emit();
    eprintln!("scaling done in {:.1} s", started.elapsed().as_secs_f64());
}
