//! Benchmark 1b: a real Envoy (1.40, `--concurrency 2`) with status-sync under continuous
//! webhook load for `SOAK_SECS` (default 600), sampling its RSS and CPU from `/proc/<pid>`
//! every second, like a service's monitoring chart.
//!
//! drone-sim creates builds without pause (`SOAK_BUILDS_PER_S`, default 40, random outcomes
//! over 6 repositories, 1-4 steps of 1.5-4.5 s) and sends drone's webhooks for them through
//! Envoy (about 175 a second reach it), losing 20% of them; the pipeline-sim answers. With the e2e configuration
//! (`tick_ms` 200, `stale_after_ms` 1500, `max_poll_interval_ms` 4000, 50 drone calls/s), every
//! running build is looked up in drone-sim while it runs and every lost transition is
//! re-delivered, so the reconciler is busy throughout.
//!
//! Targets, over the samples after a warm-up of the first 20% of the run:
//! - RSS is flat: the least-squares slope of RSS over time, projected over one hour, is under
//!   5% of the median RSS (about 5 MiB/h, some 8 bytes per webhook). RSS moves in steps (a
//!   wasm VM grows its memory 64 KiB at a time, Envoy's allocator takes spans), and over a
//!   window of 8 minutes one 256 KiB step projects to about 3% an hour: this is the finest
//!   limit the run's length supports. The wasmtime soak (benchmark 1a) bounds a leak in the
//!   filter itself far more tightly;
//! - CPU is flat: mean CPU over the last quarter of the run is at most 1.25x that of the
//!   second quarter, plus 2 percentage points (a tick whose cost grows with time shows here);
//! - when the load stops, every build at least one of whose webhooks arrived converges (the
//!   pipeline agrees with drone) within 120 s.

mod common;

use anyhow::{Context as _, Result};
use common::report::{self, chart, env_u64, mean, median, slope, Op, Panel, Series, Summary};
use common::*;
use envoy_e2e::drone_sim::{BuildPlan, DroneSimConfig, LossPolicy};
use envoy_e2e::envoy::Tools;
use envoy_e2e::scenario::{observed, wait_for, Stack};
use envoy_e2e::util::Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARMUP_SHARE: f64 = 0.2;
const RSS_SLOPE_LIMIT: f64 = 0.05;

/// What the run collected: per-second samples, builds scheduled, (t, builds tracked).
type Run = (Vec<Sample>, u64, Vec<(f64, f64)>);

struct Sample {
    t: f64,
    rss_mib: f64,
    cpu_pct: f64,
}

/// Drone's webhook secret, known to drone-sim and the filter.
const SECRET: &str = "soak-webhook-secret";

fn main() -> Result<()> {
    report::process_start();
    let secs = env_u64("SOAK_SECS", 600);
    let builds_per_s = env_u64("SOAK_BUILDS_PER_S", 40).max(1);
    let tools = Tools::from_env()?;
    let stack = Stack::start(
        &tools,
        DroneSimConfig {
            loss: LossPolicy {
                share: 0.2,
                spare_first: false,
                all_finals: false,
            },
            seed: 5,
            repos: 6,
            // Signed, as in production: each live webhook is evidence. Unsigned, every one
            // is a hint that drone must confirm in the hints' lane (half the 50 calls/s), and
            // 40 new builds a second are more than that lane can confirm: the hints' quarter
            // of the ledger fills and builds are given up (counted), by design.
            webhook_secret: SECRET.into(),
            ..Default::default()
        },
        |spec| {
            spec.concurrency = 2;
            spec.plugin["webhook_secret"] = SECRET.into();
        },
    )?;
    let pids = children_named("envoy");
    anyhow::ensure!(pids.len() == 1, "expected one Envoy child, found {pids:?}");
    let pid = pids[0];

    // The load: builds scheduled at a steady rate by a thread of ours.
    let stop = Arc::new(AtomicBool::new(false));
    let scheduled = std::thread::scope(|scope| -> Result<Run> {
        let s = stop.clone();
        let drone = &stack.drone;
        let loader = scope.spawn(move || {
            let mut rng = Rng::new(11);
            let every = Duration::from_secs_f64(1.0 / builds_per_s as f64);
            let start = Instant::now();
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                drone.schedule(BuildPlan::random(&mut rng, 6, 3_000), Duration::ZERO);
                n += 1;
                let next = start + every * n as u32;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            n
        });
        let mut samples = Vec::new();
        let mut tracked = Vec::new();
        let t0 = Instant::now();
        let mut last = (t0, proc_sample(pid).context("read /proc of Envoy")?);
        let mut i = 0u64;
        while t0.elapsed() < Duration::from_secs(secs) {
            i += 1;
            let next = t0 + Duration::from_secs(i);
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            let now = Instant::now();
            let Some(p) = proc_sample(pid) else {
                anyhow::bail!("Envoy is gone:\n{}", stack.diagnostics());
            };
            let dt = (now - last.0).as_secs_f64();
            samples.push(Sample {
                t: (now - t0).as_secs_f64(),
                rss_mib: p.rss_bytes as f64 / (1024.0 * 1024.0),
                cpu_pct: 100.0 * (p.cpu_s - last.1.cpu_s) / dt,
            });
            last = (now, p);
            if i % 10 == 0 {
                let b = stack.envoy.metric("builds_tracked").unwrap_or(0);
                tracked.push(((now - t0).as_secs_f64(), b as f64));
                if i % 60 == 0 {
                    let s = samples.last().expect("a sample");
                    eprintln!(
                        "{:>4} s: RSS {:.1} MiB, CPU {:.0}%, tracked {b}",
                        i, s.rss_mib, s.cpu_pct
                    );
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        let n = loader
            .join()
            .map_err(|_| anyhow::anyhow!("loader panicked"))?;
        Ok((samples, n, tracked))
    })?;
    let (samples, builds, tracked) = scheduled;
    let run_s = samples.last().map_or(0.0, |s| s.t);
    let m = |name: &str| stack.envoy.metric(name).unwrap_or(0);
    let (observed_n, delivered, redelivered, polls_ok, polls_failed, queue_dropped) = (
        m("webhooks_observed"),
        m("webhooks_delivered"),
        m("redeliveries_ok"),
        m("drone_polls_ok"),
        m("drone_polls_failed"),
        m("queue_dropped"),
    );
    let stats = stack.drone.stats();

    // Convergence once the load stops.
    let conv_start = Instant::now();
    let converged = wait_for(
        "drone-sim idle and the pipeline converged",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            if !stack.drone.idle() {
                return Ok(Err("builds still running".into()));
            }
            let seen = observed(&stack.drone.webhooks());
            let m = stack.mismatches(|k| seen.contains(k));
            Ok(if m.is_empty() {
                Ok(0usize)
            } else {
                Err(format!("{} builds differ", m.len()))
            })
        },
    );
    let seen = observed(&stack.drone.webhooks());
    let not_converged = stack.mismatches(|k| seen.contains(k)).len();
    let converge_s = conv_start.elapsed().as_secs_f64();
    if let Err(e) = &converged {
        eprintln!("{e:#}");
    }

    // ---- verdicts over the samples after warm-up
    let warm_t = run_s * WARMUP_SHARE;
    let post: Vec<&Sample> = samples.iter().filter(|s| s.t >= warm_t).collect();
    let rss_pts: Vec<(f64, f64)> = post.iter().map(|s| (s.t, s.rss_mib)).collect();
    let rss_median = median(&post.iter().map(|s| s.rss_mib).collect::<Vec<_>>());
    let rss_slope_h = slope(&rss_pts) * 3600.0; // MiB per hour
    let rss_max = post.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let rss_warm = post.first().map_or(0.0, |s| s.rss_mib);
    let rss_end = post.last().map_or(0.0, |s| s.rss_mib);
    let quarter = |q: usize| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| {
                let f = s.t / run_s.max(1.0);
                f >= q as f64 * 0.25 && f < (q + 1) as f64 * 0.25 + f64::EPSILON
            })
            .map(|s| s.cpu_pct)
            .collect()
    };
    let cpu_q2 = mean(&quarter(1));
    let cpu_q4 = mean(&quarter(3));
    let cpu_mean = mean(&post.iter().map(|s| s.cpu_pct).collect::<Vec<_>>());

    let plot = chart(
        "soak_envoy.svg",
        &format!(
            "Envoy 1.40 + status-sync, 2 workers, {} s of drone webhooks (20% lost), reconciler busy",
            run_s.round()
        ),
        "seconds",
        &[
            Panel::new(
                "RSS (MiB)",
                vec![Series::new(
                    "Envoy RSS",
                    samples.iter().map(|s| (s.t, s.rss_mib)).collect(),
                )],
            ),
            Panel::new(
                "CPU (% of one core)",
                vec![Series::new(
                    "Envoy CPU",
                    samples.iter().map(|s| (s.t, s.cpu_pct)).collect(),
                )],
            ),
            Panel::new(
                "builds tracked",
                vec![Series::new("status_sync.builds_tracked", tracked.clone())],
            ),
        ],
    )?;

    let mut s = Summary::new(
        "soak_envoy",
        "make bench SOAK_SECS=600 (cargo bench -p envoy-e2e --bench envoy_soak)",
    );
    s.figure("seconds", report::round(run_s))
        .figure("builds_scheduled", builds)
        .figure("webhooks_sent_by_drone", stats.webhooks_sent)
        .figure("webhooks_lost", stats.webhooks_lost)
        .figure("drone_api_calls", stats.api_calls)
        .figure("filter_webhooks_observed", observed_n)
        .figure("filter_webhooks_delivered", delivered)
        .figure("filter_redeliveries_ok", redelivered)
        .figure("filter_drone_polls_ok", polls_ok)
        .figure("filter_drone_polls_failed", polls_failed)
        .figure("filter_queue_dropped", queue_dropped)
        .figure(
            "webhooks_per_s",
            report::round(observed_n as f64 / run_s.max(1.0)),
        )
        .figure("rss_mib_after_warmup", report::round(rss_warm))
        .figure("rss_mib_end", report::round(rss_end))
        .figure("rss_mib_max_after_warmup", report::round(rss_max))
        .figure("rss_mib_median_after_warmup", report::round(rss_median))
        .figure("rss_slope_mib_per_hour", report::round(rss_slope_h))
        .figure("cpu_pct_mean_after_warmup", report::round(cpu_mean))
        .figure("cpu_pct_mean_q2", report::round(cpu_q2))
        .figure("cpu_pct_mean_q4", report::round(cpu_q4))
        .figure("converge_s", report::round(converge_s))
        .figure("observed_builds_not_converged", not_converged as u64);
    s.target(
        "RSS slope after warm-up, projected over 1 h / median RSS",
        rss_slope_h / rss_median.max(1e-9),
        Op::Lt,
        RSS_SLOPE_LIMIT,
        "x per hour",
    );
    s.target(
        "CPU mean, last quarter - 1.25 x second quarter",
        cpu_q4 - 1.25 * cpu_q2,
        Op::Le,
        2.0,
        "percentage points",
    );
    s.target(
        "observed builds not converged 120 s after the load stopped",
        not_converged as f64,
        Op::Eq,
        0.0,
        "builds",
    );
    s.plot(&plot);
    s.note("RSS and CPU of the Envoy process from /proc/<pid>/status (VmRSS) and /proc/<pid>/stat (utime+stime), every second");
    s.emit();
    Ok(())
}
