//! Benchmark 5: what the filter adds to the webhook's request path in a real Envoy.
//!
//! Three Envoys (1.40, `--concurrency 2`) run side by side from the same rendered
//! `envoy.yaml.tmpl`: A with status-sync, F with the floor in its place (`out/floor.wasm`,
//! `benchmarks/floor`: a no-op module of the same SDK, profile and wasm-opt that reads the
//! webhook's headers and body and does nothing else, which any filter that must see a webhook's
//! body pays), and B with the wasm filter removed, nothing else changed. Both forward to the same minimal keep-alive upstream that answers 200 at once (the
//! fastest pipeline possible, so that the proxy is what is measured); A's drone cluster is a
//! drone-sim. `wrk` (2 threads, 16 connections, loopback) POSTs drone's 3.5 KB
//! `webhook-build-updated-running.json` with `X-Drone-Event: build` to `/hook`, the variants
//! taking turns within each round, in an order that rotates from round to round, after a
//! warm-up of each. Everything shares this machine's cores, so at saturation the comparison is
//! of CPU per request as much as of latency.
//!
//! A third variant, C, sends the same POST to `/other` on the Envoy with the filter: as shipped,
//! the filter is enabled on the webhook route only, so C is what the pipeline's other traffic
//! pays for status-sync being installed (the side experiments in `benchmarks/experiments/`
//! split the cost of a watched webhook further). After the saturated rounds,
//! the same rotation runs with one connection (`-t1 -c1`, half as long): every request alone in
//! the proxy, the latency a drone webhook sees in practice.
//!
//! Each Envoy's CPU time (`/proc/<pid>/stat`) is read around each of its runs. What a filter
//! costs per webhook is its Envoy's CPU per request minus B's, over the saturated rounds; the
//! target is status-sync's cost at most 1.3 times the floor's, both from the same run.
//!
//! `BENCH_ROUNDS` (default 8) and `BENCH_ROUND_SECS` (default 10) change the schedule. One
//! round's ratio moves by ±0.3 on a shared two-core machine (the floor's cost is a difference
//! of two Envoys' CPU); eight rounds in rotating order average more of that out than five.

mod common;

use anyhow::{bail, Context as _, Result};
use common::report::{self, chart, env_u64, median, Op, Panel, Series, Summary};
use common::*;
use envoy_e2e::drone_sim::{DroneSim, DroneSimConfig};
use envoy_e2e::envoy::{free_port, Envoy, EnvoySpec, Tools};
use envoy_e2e::fast_upstream::FastUpstream;
use serde_json::json;
use std::path::Path;
use std::process::Command;

const FIXTURE: &str = "webhook-build-updated-running.json";

#[derive(Clone, Debug, Default)]
struct Wrk {
    requests: f64,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    non_2xx: f64,
    socket_errors: f64,
}

fn to_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|x| x * mult)
}

fn parse_wrk(out: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse()?;
        } else if t.contains(" requests in ") {
            w.requests = t.split_whitespace().next().unwrap_or("0").parse()?;
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse()?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            w.socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<f64>().ok())
                .sum();
        } else {
            let mut parts = t.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("50%"), Some(v)) => w.p50_ms = to_ms(v).context("p50")?,
                (Some("90%"), Some(v)) => w.p90_ms = to_ms(v).context("p90")?,
                (Some("99%"), Some(v)) => w.p99_ms = to_ms(v).context("p99")?,
                _ => {}
            }
        }
    }
    if w.rps == 0.0 || w.p99_ms == 0.0 {
        bail!("could not read wrk's output:\n{out}");
    }
    Ok(w)
}

fn wrk(script: &Path, port: u16, path: &str, conns: u32, secs: u64) -> Result<Wrk> {
    let threads = conns.min(2);
    let out = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .context("run wrk (install it: apt-get install -y wrk; `make bench` does)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text)
}

/// The three ways a request is sent in each round.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// Envoy with status-sync, a drone webhook on `/hook`: observed and parsed.
    A,
    /// The same Envoy without the filter.
    B,
    /// Envoy with status-sync, the same POST on `/other`: a route the filter is not enabled on.
    C,
    /// Envoy with the floor in status-sync's place, a drone webhook on `/hook`: headers and
    /// body read, nothing else.
    F,
}

const VARIANTS: [Variant; 4] = [Variant::A, Variant::F, Variant::B, Variant::C];

/// Rotates the order of the variants from round to round.
fn order(round: u64) -> [Variant; 4] {
    let mut o = VARIANTS;
    o.rotate_left((round % 4) as usize);
    o
}

const ABCF: [&str; 4] = ["A", "B", "C", "F"];

/// A panel of the plot: one series per variant, `f` of each round.
fn panel(title: &str, names: [&str; 4], runs: [&[Wrk]; 4], f: fn(&Wrk) -> f64) -> Panel {
    let series = names.into_iter().zip(runs).map(|(name, runs)| {
        let points = runs.iter().enumerate();
        Series::new(name, points.map(|(i, w)| (i as f64 + 1.0, f(w))).collect())
    });
    Panel::new(title, series.collect())
}

fn main() -> Result<()> {
    report::process_start();
    let rounds = env_u64("BENCH_ROUNDS", 8);
    let secs = env_u64("BENCH_ROUND_SECS", 10);
    let tools = Tools::from_env()?;
    let upstream = FastUpstream::start()?;
    let drone = DroneSim::start(DroneSimConfig::default(), 0)?;
    let spec = EnvoySpec::new(tools.clone(), upstream.port(), drone.port(), drone.token())?;
    let with = spec.bootstrap()?;
    // Its own TLS listener in front of drone-sim: the two Envoys run side by side.
    let mut other = spec.clone();
    other.drone_front_port = free_port()?;
    let mut without = other.bootstrap()?;
    without_filter(&mut without)?;
    *without
        .pointer_mut("/static_resources/listeners/0/address/socket_address/port_value")
        .context("listener port")? = json!(free_port()?);
    let mut floor_spec = spec.clone();
    floor_spec.drone_front_port = free_port()?;
    let mut floor = floor_spec.bootstrap()?;
    with_module(&mut floor, &floor_wasm(&tools)?, "floor")?;
    *floor
        .pointer_mut("/static_resources/listeners/0/address/socket_address/port_value")
        .context("listener port")? = json!(free_port()?);
    let a = Envoy::start_bootstrap(&tools, &with, 2, drone.token())?;
    let b = Envoy::start_bootstrap(&tools, &without, 2, drone.token())?;
    let f = Envoy::start_bootstrap(&tools, &floor, 2, drone.token())?;
    let (port_a, port_b, port_f) = (a.listen_port(), b.listen_port(), f.listen_port());
    let pid = |v: Variant| match v {
        Variant::A | Variant::C => a.pid(),
        Variant::B => b.pid(),
        Variant::F => f.pid(),
    };

    let dir = tempfile::tempdir()?;
    let script = dir.path().join("post.lua");
    let fixture = fixture_path(FIXTURE);
    let body_len = std::fs::metadata(&fixture)
        .with_context(|| format!("fixture {}", fixture.display()))?
        .len();
    std::fs::write(
        &script,
        format!(
            "local f = assert(io.open({:?}, \"rb\"))\nwrk.method = \"POST\"\nwrk.body = f:read(\"*a\")\nf:close()\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"X-Drone-Event\"] = \"build\"\n",
            fixture.display().to_string()
        ),
    )?;

    let target = |v: Variant| match v {
        Variant::A => (port_a, "/hook"),
        Variant::B => (port_b, "/hook"),
        Variant::C => (port_a, "/other"),
        Variant::F => (port_f, "/hook"),
    };
    // Requests of A's warm-ups in the saturated rounds: A's Envoy observes them too.
    let warm_a = std::cell::Cell::new(0.0f64);
    // One run of `v`, with the CPU its Envoy used meanwhile. A second of the same load first,
    // not measured: every variant is measured from a running start. Without it, the rotation
    // (A F B C) made A's Envoy the only one that had just been busy (with C), and the same
    // module in A's and F's place measured 0.95 (one run of 8 rounds).
    let run = |v: Variant, conns: u32, secs: u64| -> Result<(Wrk, f64)> {
        let (port, path) = target(v);
        let cpu = || {
            proc_sample(pid(v))
                .map(|s| s.cpu_s)
                .context("Envoy's /proc/<pid>/stat")
        };
        let warm = wrk(&script, port, path, conns, 1)?;
        if v == Variant::A && conns > 1 {
            warm_a.set(warm_a.get() + warm.requests);
        }
        let before = cpu()?;
        let w = wrk(&script, port, path, conns, secs)?;
        Ok((w, cpu()? - before))
    };
    eprintln!(
        "warm-up: A (status-sync) on {port_a}, B (no filter) on {port_b}, F (floor) on {port_f}"
    );
    for v in VARIANTS {
        let (port, path) = target(v);
        wrk(&script, port, path, 16, 3)?;
    }
    let observed_before = a.metric("webhooks_observed")?;

    // Saturation: 16 connections, as fast as the machine goes.
    let mut runs: Vec<(Variant, Wrk)> = Vec::new();
    // Envoy CPU seconds and requests, per variant, over the saturated rounds.
    let mut cpu = [(0.0f64, 0.0f64); 4];
    // Each round's ratio, (A - B) / (F - B) from that round's CPU per request: how much one
    // round's figure moves (reported beside the run's ratio, which is over all rounds).
    let mut round_ratios: Vec<f64> = Vec::new();
    for r in 0..rounds {
        let mut us_round = [0.0f64; 4];
        for v in order(r) {
            let (w, used) = run(v, 16, secs)?;
            if let Some(u) = us_round.get_mut(v as usize) {
                *u = used * 1e6 / w.requests.max(1.0);
            }
            eprintln!(
                "round {r} {v:?}: {:.0} req/s, Envoy {:.2} us/request, p50 {:.3} ms, p99 {:.3} ms, non-2xx {}, socket errors {}",
                w.rps, used * 1e6 / w.requests.max(1.0), w.p50_ms, w.p99_ms, w.non_2xx, w.socket_errors
            );
            if let Some(c) = cpu.get_mut(v as usize) {
                c.0 += used;
                c.1 += w.requests;
            }
            runs.push((v, w));
        }
        let [ua, ub, _, uf] = us_round;
        if uf > ub {
            round_ratios.push((ua - ub) / (uf - ub));
        }
    }
    // The filter's counters reach Envoy's stats on each worker's tick (`tick_ms` 1000): wait
    // until every webhook A was sent is counted, or three ticks have passed (then the target
    // below reports what is missing).
    let sent_a: f64 = runs
        .iter()
        .filter(|(v, _)| *v == Variant::A)
        .map(|(_, w)| w.requests)
        .sum::<f64>()
        + warm_a.get();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut observed = a.metric("webhooks_observed")? - observed_before;
    while (observed as f64) < sent_a && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        observed = a.metric("webhooks_observed")? - observed_before;
    }
    // One connection: every request alone in the proxy (latency, not CPU contention).
    let mut single: Vec<(Variant, Wrk)> = Vec::new();
    for r in 0..rounds {
        for v in order(r) {
            let (w, _) = run(v, 1, (secs / 2).max(2))?;
            eprintln!(
                "single {r} {v:?}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
                w.rps, w.p50_ms, w.p99_ms
            );
            single.push((v, w));
        }
    }
    let unparsable = a.metric("webhooks_unparsable")?;
    let delivered = a.metric("webhooks_delivered")?;
    let dropped = a.metric("queue_dropped")?;

    let of = |set: &[(Variant, Wrk)], v: Variant| -> Vec<Wrk> {
        set.iter()
            .filter(|(x, _)| *x == v)
            .map(|(_, w)| w.clone())
            .collect()
    };
    let (ra, rb, rc) = (
        of(&runs, Variant::A),
        of(&runs, Variant::B),
        of(&runs, Variant::C),
    );
    let rf = of(&runs, Variant::F);
    let (sa, sb, sc, sf) = (
        of(&single, Variant::A),
        of(&single, Variant::B),
        of(&single, Variant::C),
        of(&single, Variant::F),
    );
    // Envoy CPU per request (us) over the saturated rounds, and what a filter adds to it.
    let us = |v: Variant| {
        cpu.get(v as usize)
            .map_or(0.0, |(s, n)| s * 1e6 / n.max(1.0))
    };
    let (us_a, us_b, us_c, us_f) = (
        us(Variant::A),
        us(Variant::B),
        us(Variant::C),
        us(Variant::F),
    );
    let (cost_a, cost_f) = (us_a - us_b, us_f - us_b);
    let floor_ratio = if cost_f > 0.0 {
        cost_a / cost_f
    } else {
        f64::INFINITY
    };
    let sum = |v: &[Wrk], f: fn(&Wrk) -> f64| v.iter().map(f).sum::<f64>();
    let total_a = sum(&ra, |w| w.requests);
    let total_b = sum(&rb, |w| w.requests);
    let total_c = sum(&rc, |w| w.requests);
    let total_f = sum(&rf, |w| w.requests);
    let ratio = total_a / total_b;
    let per_round: Vec<f64> = ra.iter().zip(&rb).map(|(x, y)| x.rps / y.rps).collect();
    let diff = |x: &[Wrk], y: &[Wrk], f: fn(&Wrk) -> f64| -> f64 {
        median(
            &x.iter()
                .zip(y)
                .map(|(p, q)| f(p) - f(q))
                .collect::<Vec<_>>(),
        )
    };
    let med = |v: &[Wrk], f: fn(&Wrk) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());

    let plot = chart(
        "request_overhead.svg",
        "Envoy 1.40, 2 workers, wrk POST of a 3.5 KB webhook: A status-sync, B none, C status-sync but other route, F floor",
        "round",
        &[
            panel(
                "requests/s (16 connections)",
                [
                    "A: with status-sync",
                    "B: without",
                    "C: filter installed, other route",
                    "F: the floor",
                ],
                [&ra, &rb, &rc, &rf],
                |w| w.rps,
            ),
            panel("p99 latency, 16 connections (ms)", ABCF, [&ra, &rb, &rc, &rf], |w| w.p99_ms),
            panel("p50 latency, 1 connection (ms)", ABCF, [&sa, &sb, &sc, &sf], |w| w.p50_ms),
        ],
    )?;

    let mut s = Summary::new(
        "request_overhead",
        "make bench (cargo bench -p envoy-e2e --bench request_overhead)",
    );
    s.figure("rounds", rounds)
        .figure("round_secs", secs)
        .figure(
            "wrk",
            "-t2 -c16 --latency (and -t1 -c1 for half as long), POST, X-Drone-Event: build",
        )
        .figure("body_bytes", body_len)
        .figure("a_requests", total_a)
        .figure("b_requests", total_b)
        .figure("c_requests", total_c)
        .figure("f_requests", total_f)
        .figure("a_envoy_us_per_request", report::round(us_a))
        .figure("b_envoy_us_per_request", report::round(us_b))
        .figure("c_envoy_us_per_request", report::round(us_c))
        .figure("f_envoy_us_per_request", report::round(us_f))
        .figure("status_sync_us_per_webhook", report::round(cost_a))
        .figure("floor_us_per_webhook", report::round(cost_f))
        .figure("f_rps_median", report::round(med(&rf, |w| w.rps)))
        .figure(
            "throughput_ratio_f_over_b",
            report::round(total_f / total_b),
        )
        .figure(
            "throughput_ratio_a_over_f",
            report::round(total_a / total_f),
        )
        .figure("a_rps_median", report::round(med(&ra, |w| w.rps)))
        .figure("b_rps_median", report::round(med(&rb, |w| w.rps)))
        .figure("c_rps_median", report::round(med(&rc, |w| w.rps)))
        .figure("throughput_ratio", report::round(ratio))
        .figure(
            "throughput_ratio_c_over_b",
            report::round(total_c / total_b),
        )
        .figure(
            "floor_ratio_per_round",
            round_ratios
                .iter()
                .map(|r| report::round(*r))
                .collect::<Vec<_>>(),
        )
        .figure(
            "floor_ratio_median_of_rounds",
            report::round(report::median(&round_ratios)),
        )
        .figure(
            "throughput_ratio_per_round",
            per_round
                .iter()
                .map(|r| report::round(*r))
                .collect::<Vec<_>>(),
        )
        .figure("a_p50_ms_median", report::round(med(&ra, |w| w.p50_ms)))
        .figure("b_p50_ms_median", report::round(med(&rb, |w| w.p50_ms)))
        .figure("a_p99_ms_median", report::round(med(&ra, |w| w.p99_ms)))
        .figure("b_p99_ms_median", report::round(med(&rb, |w| w.p99_ms)))
        .figure("p50_diff_ms", report::round(diff(&ra, &rb, |w| w.p50_ms)))
        .figure("p99_diff_ms", report::round(diff(&ra, &rb, |w| w.p99_ms)))
        .figure("single_a_p50_ms", report::round(med(&sa, |w| w.p50_ms)))
        .figure("single_b_p50_ms", report::round(med(&sb, |w| w.p50_ms)))
        .figure("single_c_p50_ms", report::round(med(&sc, |w| w.p50_ms)))
        .figure("single_f_p50_ms", report::round(med(&sf, |w| w.p50_ms)))
        .figure("single_a_p99_ms", report::round(med(&sa, |w| w.p99_ms)))
        .figure("single_b_p99_ms", report::round(med(&sb, |w| w.p99_ms)))
        .figure(
            "single_p50_diff_ms",
            report::round(diff(&sa, &sb, |w| w.p50_ms)),
        )
        .figure(
            "single_p99_diff_ms",
            report::round(diff(&sa, &sb, |w| w.p99_ms)),
        )
        .figure(
            "single_c_p50_diff_ms",
            report::round(diff(&sc, &sb, |w| w.p50_ms)),
        )
        .figure(
            "non_2xx",
            sum(&ra, |w| w.non_2xx)
                + sum(&rb, |w| w.non_2xx)
                + sum(&rc, |w| w.non_2xx)
                + sum(&rf, |w| w.non_2xx),
        )
        .figure(
            "socket_errors",
            sum(&ra, |w| w.socket_errors)
                + sum(&rb, |w| w.socket_errors)
                + sum(&rc, |w| w.socket_errors)
                + sum(&rf, |w| w.socket_errors),
        )
        .figure("filter_webhooks_observed", observed)
        .figure("filter_webhooks_delivered", delivered)
        .figure("filter_webhooks_unparsable", unparsable)
        .figure("filter_queue_dropped", dropped)
        .figure(
            "upstream_requests",
            upstream.requests.load(std::sync::atomic::Ordering::Relaxed),
        );
    s.target(
        "Envoy CPU per webhook, status-sync over the floor (each minus no filter)",
        floor_ratio,
        Op::Le,
        1.3,
        "x",
    );
    s.target(
        "webhooks the filter observed / requests A sent",
        observed as f64 / (total_a + warm_a.get()).max(1.0),
        Op::Ge,
        0.99,
        "x",
    );
    s.plot(&plot);
    s.note("A, B, C and F share the machine's 2 cores with wrk and the upstream; the order of A, F, B, C rotates from round to round. A filter's cost per webhook is its Envoy's CPU time per request (utime + stime of /proc/<pid>/stat around each saturated run) minus B's");
    s.emit();
    drop(a);
    drop(b);
    drop(f);
    Ok(())
}
