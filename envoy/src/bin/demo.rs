//! `demo` (`make run`): drone-sim → Envoy with status-sync → pipeline-sim, with drone losing
//! ~30% of its webhooks. Prints each build whose state the pipeline lost and, later, when
//! status-sync recovered it; ends (when everything converged, at the deadline, or on Ctrl-C)
//! with a summary. Envoy and the simulators are stopped on every exit path (drop guards).

use anyhow::{Context as _, Result};
use envoy_e2e::args::{self, Args};
use envoy_e2e::drone_model::is_done;
use envoy_e2e::drone_sim::{BuildKey, BuildPlan, DroneSimConfig, LossPolicy};
use envoy_e2e::envoy::Tools;
use envoy_e2e::scenario::{self, Stack};
use envoy_e2e::util::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const USAGE: &str = "demo [--builds 40] [--loss 0.3] [--lose-any] [--seed 7] [--step-ms 1000] \
[--every-ms 1000] [--timeout-s 240] [--concurrency 2]

Needs ENVOY_BIN and STATUS_SYNC_WASM (`make run` sets both).";

fn main() -> Result<()> {
    let a = Args::parse(USAGE)?;
    let builds: usize = a.get("builds", 40)?;
    let loss: f64 = a.get("loss", 0.3)?;
    let seed: u64 = a.get("seed", 7)?;
    let step_ms: u64 = a.get("step-ms", 1000)?;
    let every_ms: u64 = a.get("every-ms", 1000)?;
    let timeout = Duration::from_secs(a.get("timeout-s", 240)?);
    let concurrency: u32 = a.get("concurrency", 2)?;
    let tools = Tools::from_env().context("the demo runs via `make run`")?;

    let stop = args::ctrl_c()?;

    println!(
        "starting drone-sim, pipeline-sim and Envoy {concurrency} workers with {} ...",
        tools.wasm.display()
    );
    let stack = Stack::start(
        &tools,
        DroneSimConfig {
            loss: LossPolicy {
                share: loss,
                // A build none of whose webhooks arrives is invisible to status-sync (it learns
                // of builds from webhooks), so by default each build's first one gets through;
                // --lose-any lifts that.
                spare_first: !a.flag("lose-any"),
                all_finals: false,
            },
            seed,
            ..Default::default()
        },
        |spec| {
            spec.concurrency = concurrency;
            spec.plugin["tick_ms"] = 200.into();
            spec.plugin["stale_after_ms"] = 2000.into();
            spec.plugin["max_poll_interval_ms"] = 8000.into();
            spec.plugin["instance"] = "demo".into();
        },
    )?;
    println!(
        "drone API on 127.0.0.1:{}, pipeline on 127.0.0.1:{}, Envoy listener on 127.0.0.1:{}",
        stack.drone.port(),
        stack.pipeline.port(),
        stack.envoy.listen_port()
    );
    println!(
        "running {builds} builds; drone loses {:.0}% of its webhooks{}; status-sync: tick 200 ms, stale after 2 s\n",
        loss * 100.0,
        if a.flag("lose-any") { "" } else { " (never a build's first)" }
    );

    let mut rng = Rng::new(seed);
    let repos = stack.drone.repos().len();
    for i in 0..builds {
        stack.drone.schedule(
            BuildPlan::random(&mut rng, repos, step_ms),
            Duration::from_millis(every_ms * i as u64),
        );
    }

    let started = Instant::now();
    // One line per build that fell behind or caught up, stamped with the demo's clock.
    let event = |what: &str, key: &BuildKey, detail: String| {
        let at = started.elapsed().as_secs_f64();
        println!("[{at:>5.1}s] {what:<9} {:<26} {detail}", key.to_string());
    };
    // Builds whose pipeline state fell behind a done drone build, and since when.
    let mut behind: BTreeMap<BuildKey, Instant> = BTreeMap::new();
    let mut recovered = 0usize;
    // How long each recovered build's pipeline state lagged drone's, as the demo saw it.
    let mut lag_s: Vec<f64> = Vec::new();
    let mut ended = "converged";
    loop {
        if stop.load(Ordering::SeqCst) {
            ended = "interrupted (Ctrl-C)";
            break;
        }
        if started.elapsed() > timeout {
            ended = "deadline reached";
            break;
        }
        let truth = stack.drone.builds();
        let view = stack.pipeline.view();
        let hooks = stack.drone.webhooks();
        for b in truth.iter().filter(|b| is_done(&b.status)) {
            let got = view.get(&b.key.to_string());
            let same = got.is_some_and(|e| e.status == b.status && e.version == b.version);
            match (same, behind.get(&b.key)) {
                (false, None) => {
                    // Only report once drone has sent (or lost) the webhook of that state.
                    let final_hook = hooks.iter().rev().find(|w| {
                        w.build == b.key && w.status == b.status && w.version == b.version
                    });
                    let why = match final_hook {
                        Some(w) if w.lost => {
                            format!(
                                "its build:{} {} v{} webhook was lost",
                                w.action, w.status, w.version
                            )
                        }
                        Some(_) => continue, // delivered: the pipeline has it
                        None if b.status == "declined" => {
                            "drone sends no webhook for a decline".into()
                        }
                        None => continue, // not sent yet
                    };
                    let has = got
                        .map(|e| format!("{} v{}", e.status, e.version))
                        .unwrap_or_else(|| "nothing".into());
                    let (status, version) = (&b.status, b.version);
                    event(
                        "LOST",
                        &b.key,
                        format!("drone: {status:<8} v{version}  pipeline: {has:<12} ({why})"),
                    );
                    behind.insert(b.key.clone(), Instant::now());
                }
                (true, Some(since)) => {
                    let later = since.elapsed().as_secs_f64();
                    event(
                        "RECOVERED",
                        &b.key,
                        format!(
                            "pipeline now: {} v{} (re-delivered by status-sync {later:.1}s later)",
                            b.status, b.version
                        ),
                    );
                    lag_s.push(since.elapsed().as_secs_f64());
                    behind.remove(&b.key);
                    recovered += 1;
                }
                _ => {}
            }
        }
        if stack.drone.idle() && behind.is_empty() && stack.mismatches(|_| true).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // Summary.
    let truth = stack.drone.builds();
    let stats = stack.drone.stats();
    let received = stack.pipeline.received();
    let redelivered = received.iter().filter(|r| r.is_redelivery()).count();
    let accepted = received
        .iter()
        .filter(|r| r.is_redelivery() && r.outcome == "applied")
        .count();
    let hooks = stack.drone.webhooks();
    let observed = scenario::observed(&hooks);
    let differing = stack.mismatches(|_| true);
    let total_hooks = stats.webhooks_sent + stats.webhooks_lost + stats.webhooks_failed;
    // Envoy merges histogram samples when it flushes stats (every second in this
    // configuration): wait for one flush so the recovery delays include the last recoveries.
    std::thread::sleep(Duration::from_millis(1500));
    let metrics = stack.envoy.stats("status_sync").unwrap_or_default();
    let delay = stack
        .envoy
        .histogram_quantiles("status_sync.recovery_delay_ms")
        .unwrap_or_default();
    println!(
        "\n== summary ({ended} after {:.1}s) ==",
        started.elapsed().as_secs_f64()
    );
    let row = |k: &str, v: String| println!("  {k:<44} {v}");
    row("builds", truth.len().to_string());
    row("webhooks drone produced", total_hooks.to_string());
    row(
        "webhooks lost",
        format!(
            "{} ({:.0}%)",
            stats.webhooks_lost,
            100.0 * stats.webhooks_lost as f64 / total_hooks.max(1) as f64
        ),
    );
    row(
        "builds whose final state was lost",
        (recovered + behind.len()).to_string(),
    );
    row("  ... recovered by status-sync", recovered.to_string());
    row(
        "transitions re-delivered / accepted",
        format!("{redelivered} / {accepted}"),
    );
    row("drone API calls", stats.api_calls.to_string());
    row(
        "builds no webhook of which arrived",
        (truth.len() - truth.iter().filter(|b| observed.contains(&b.key)).count()).to_string(),
    );
    row(
        "builds where pipeline != drone",
        differing.len().to_string(),
    );
    for m in &differing {
        println!("    {m}");
    }
    println!("\n  SLO (status-sync's metrics; see docs/runbook.md):");
    let metric = |k: &str| metrics.get(k).copied().unwrap_or(0);
    row(
        "oldest undelivered transition now",
        format!("{} s", metric("status_sync.oldest_undelivered_seconds")),
    );
    let q = |name: &str| {
        delay.iter().find(|(n, _)| n == name).map_or_else(
            || "-".to_string(),
            |(_, v)| {
                if *v < 1000.0 {
                    format!("{v:.0} ms")
                } else {
                    format!("{:.1} s", v / 1000.0)
                }
            },
        )
    };
    row(
        "recovery delay p50 / p99 (known -> accepted)",
        format!(
            "{} / {} ({} transitions)",
            q("P50"),
            q("P99"),
            metric("status_sync.transitions_recovered")
        ),
    );
    lag_s.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((lag_s.len() as f64 - 1.0) * p).round() as usize;
        lag_s
            .get(i)
            .map_or_else(|| "-".to_string(), |v| format!("{v:.1} s"))
    };
    row(
        "pipeline behind drone p50 / p99 (demo's view)",
        format!("{} / {}", pct(0.5), pct(0.99)),
    );
    println!("\n  status-sync metrics (Envoy admin /stats):");
    for (k, v) in metrics.iter().filter(|(_, v)| **v != 0) {
        println!("    {k:<42} {v}");
    }
    // `stack` drops here: Envoy is killed, then the simulators stop.
    Ok(())
}
