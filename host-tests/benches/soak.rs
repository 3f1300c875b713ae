//! Benchmark 1a: leak-freedom soak of the real `out/status_sync.wasm` in the host (2 workers +
//! main, fuel metering on): 10^6 tick periods (100 ms each, about 28 hours of virtual time)
//! and 10^6 live webhooks with build churn, sampling every VM's linear memory, the builds the
//! reconciler tracks and the fuel of every tick.
//!
//! The workload is a day-and-a-bit of drone: builds arrive at random (about 2.1 per second over
//! 50 repositories) and live from 5 s to an hour (log-uniform) plus a queue wait; drone
//! (`drone_model::workload`, its lifecycle `lifecycle::Row`) decides their webhooks
//! (`build:created` pending, then a `running` update at every step start and end, then the
//! final one; pending→running and declines send none); 1% of builds get stuck running
//! forever, config errors end at creation.
//! 20% of the webhooks are lost on the way, the pipeline answers 3% of the rest with 503. The
//! ledger is capped at 1000 builds while about 1000 are open plus the stuck ones, so it stays
//! full and evicts the oldest (stuck builds are evicted this way before `max_build_age_ms`,
//! 2 h, expires them); drone answers every poll from its state, so the reconciler is busy at
//! its rate limit (10 calls/s).
//!
//! Targets, after a warm-up of the first 20% of the ticks: no VM's linear memory grows by more
//! than one 64 KiB page, and none grows at all over the second half of the run; every root
//! context registered its tick exactly once; the number of shared-data keys stays the same
//! (and within `3 + ceil(max_tracked_builds / 64)`); no VM dies.
//!
//! Why one page: linear memory never shrinks, so it is the high-water mark of live data plus
//! allocator fragmentation, and under a random workload a rarer peak can always come later.
//! A leak is growth that goes on: even 0.1 byte per webhook would be 80 KiB over the 800k
//! webhooks after warm-up, more than the page allowed, and would keep growing in the second
//! half.
//!
//! `SOAK_TICKS` and `SOAK_WEBHOOKS` change the size (default 10^6 each).

mod common;

use common::report::{self, chart, env_u64, median, quantile, Op, Panel, Series, Summary};
use common::*;
use drone_model::lifecycle::Act;
use drone_model::outcome::SOAK;
use drone_model::workload::Builds;
use drone_model::{Outcome, Rng};
use host_tests::Host;

const TICK_MS: u64 = 100;
const CAP: u64 = 1_000;
const REPOS: u64 = 50;
const LOSS: f64 = 0.2;
const PIPELINE_5XX: f64 = 0.03;
const WARMUP_SHARE: f64 = 0.2;
const SAMPLES: u64 = 200;
/// Builds per second: about 1.0 webhook reaches the filter per 100 ms tick.
const ARRIVALS_PER_S: f64 = 2.12;
/// One wasm page: the allowance for a new high-water mark after warm-up (see the targets).
const PAGE: f64 = 65_536.0;

fn extra() -> String {
    format!(r#","max_tracked_builds":{CAP},"max_build_age_ms":7200000"#)
}

/// Schedules the builds created before `until` (one every `1 / ARRIVALS_PER_S` on average,
/// from `next`): queued 1-10 s, then 1-4 equal steps over 5 s to an hour (killed half-way
/// through its first); declined after that long blocked; stuck: never torn down.
fn arrivals(d: &mut Builds, rng: &mut Rng, next: &mut u64, until: u64) {
    while *next < until {
        let at = *next;
        *next += rng.exp(1000.0 / ARRIVALS_PER_S).max(1.0) as u64;
        let repo = rng.range(0, REPOS - 1);
        let outcome = Outcome::draw(&SOAK, rng.range(0, 99)).unwrap_or(Outcome::ConfigError);
        let mut acts = vec![(at, Act::Create)];
        if outcome != Outcome::ConfigError {
            let duration = rng.log_uniform(5_000.0, 3_600_000.0) as u64;
            if outcome == Outcome::Declined {
                acts.push((at + duration, Act::Decline));
            } else {
                let start = at + rng.range(1_000, 10_000);
                acts.push((start, Act::Setup));
                let steps = rng.range(1, 4);
                let step = duration / steps;
                let killed = outcome == Outcome::Killed;
                for i in 0..if killed { 1 } else { steps } {
                    let s = start + i * step;
                    acts.push((s + 200, Act::Step));
                    if !killed {
                        acts.push((s + step * 9 / 10, Act::Step));
                    }
                }
                match outcome {
                    Outcome::Killed => acts.push((start + step / 2, Act::Cancel)),
                    Outcome::Stuck => {}
                    o => acts.push((start + duration + 500, Act::Teardown(o.final_status()))),
                }
            }
        }
        d.plan(repo, outcome, acts);
    }
}

struct Sample {
    tick: u64,
    mem: Vec<usize>,
    tracked: i64,
    leader_median: f64,
    leader_p99: f64,
    follower_median: f64,
    keys: usize,
}

fn main() {
    report::process_start();
    let total_ticks = env_u64("SOAK_TICKS", 1_000_000);
    let total_webhooks = env_u64("SOAK_WEBHOOKS", 1_000_000);
    let mut host = Host::start(host_config(2, &extra())).expect("host starts");
    let drone = install_drone(&mut host);
    let pipeline = install_pipeline(&mut host);
    let start_ms = host.now_ms();
    let mut rng = Rng::new(42);
    let mut next_arrival_ms = start_ms;
    let (mut webhooks_lost, mut webhooks_sent, mut webhooks_503) = (0u64, 0u64, 0u64);
    let every = (total_ticks / SAMPLES).max(1);
    let warmup_tick = (total_ticks as f64 * WARMUP_SHARE) as u64;
    let mut samples: Vec<Sample> = Vec::new();
    let mut window: Vec<host_tests::TickFuel> = Vec::new();
    // on_tick calls per VM (each VM has one root context).
    let mut ticks_per_vm = vec![0u64; host.vm_count()];
    let mut leader = None;
    let mut all_leader_fuel: Vec<f64> = Vec::new();
    let mut vm_rr = 0usize;
    let wall = std::time::Instant::now();

    for tick in 1..=total_ticks {
        let until = start_ms + tick * TICK_MS;
        // Everything drone does before the end of this tick period, then its webhooks.
        let mut sends = Vec::new();
        {
            let d = &mut *drone.borrow_mut();
            arrivals(d, &mut rng, &mut next_arrival_ms, until);
            while let Some((b, _, hook)) = d.run_next(until, &mut rng) {
                let Some(hook) = hook else {
                    continue;
                };
                if rng.unit() < LOSS || webhooks_sent >= total_webhooks {
                    webhooks_lost += 1;
                    continue;
                }
                let answer = if rng.unit() < PIPELINE_5XX {
                    webhooks_503 += 1;
                    503
                } else {
                    200
                };
                webhooks_sent += 1;
                let body =
                    d.store
                        .bodies
                        .hook(hook.shape, d.builds[b].key(), hook.status, hook.version);
                sends.push((body, answer));
            }
        }
        for (body, answer) in sends {
            // Streams run on the workers only (VMs 0 and 1); the main thread's VM just ticks.
            vm_rr = (vm_rr + 1) % 2;
            send(&mut host, vm_rr, body, answer);
        }
        host.advance(TICK_MS).expect("advance");
        let fuel = host.take_tick_fuel();
        for t in &fuel {
            ticks_per_vm[t.vm] += 1;
        }
        window.extend(fuel);

        if tick % every == 0 || tick == total_ticks {
            if let Some(l) = leader_vm(&host) {
                leader = Some(l);
            }
            host.clear_records();
            let lead = leader.expect("a leader");
            let lf: Vec<f64> = window
                .iter()
                .filter(|t| t.vm == lead)
                .map(|t| t.fuel as f64)
                .collect();
            let ff: Vec<f64> = window
                .iter()
                .filter(|t| t.vm != lead)
                .map(|t| t.fuel as f64)
                .collect();
            if tick > warmup_tick {
                all_leader_fuel.extend(&lf);
            }
            window.clear();
            let s = Sample {
                tick,
                mem: (0..host.vm_count())
                    .map(|vm| host.memory_bytes(vm))
                    .collect(),
                tracked: metric(&host, "builds_tracked"),
                leader_median: median(&lf),
                leader_p99: quantile(&lf, 0.99),
                follower_median: median(&ff),
                keys: host.shared_data_len(),
            };
            if samples.len() % 20 == 0 {
                eprintln!(
                    "tick {tick}: mem {:?}, tracked {}, leader fuel median {} p99 {}, follower {}, keys {}, webhooks sent {}, drone calls {}, {:.0} s",
                    s.mem,
                    s.tracked,
                    s.leader_median,
                    s.leader_p99,
                    s.follower_median,
                    s.keys,
                    webhooks_sent,
                    drone.borrow().store.calls.build,
                    wall.elapsed().as_secs_f64()
                );
            }
            samples.push(s);
        }
    }

    // ---- verdicts
    let warm = samples
        .iter()
        .find(|s| s.tick >= warmup_tick)
        .expect("a sample after warm-up");
    let end = samples.last().expect("samples");
    let growth: Vec<i64> = warm
        .mem
        .iter()
        .zip(&end.mem)
        .map(|(a, b)| *b as i64 - *a as i64)
        .collect();
    let max_growth = growth.iter().copied().max().unwrap_or(0);
    let half = samples
        .iter()
        .find(|s| s.tick >= total_ticks / 2)
        .expect("a sample at half time");
    let late_growth = half
        .mem
        .iter()
        .zip(&end.mem)
        .map(|(a, b)| *b as i64 - *a as i64)
        .max()
        .unwrap_or(0);
    // When each VM's memory last grew (for the report).
    let last_growth_tick: Vec<u64> = (0..end.mem.len())
        .map(|vm| {
            samples
                .windows(2)
                .filter(|w| w[1].mem[vm] > w[0].mem[vm])
                .map(|w| w[1].tick)
                .next_back()
                .unwrap_or(0)
        })
        .collect();
    let tick_calls = host.tick_period_calls();
    let roots = tick_calls.len();
    let max_registrations = tick_calls.iter().map(|t| t.2).max().unwrap_or(0);
    let min_registrations = tick_calls.iter().map(|t| t.2).min().unwrap_or(0);
    let keys_bound = 3 + CAP.div_ceil(64) as usize;
    let keys_after_warmup: Vec<usize> = samples
        .iter()
        .filter(|s| s.tick >= warm.tick)
        .map(|s| s.keys)
        .collect();
    let keys_min = *keys_after_warmup.iter().min().unwrap_or(&0);
    let keys_max = *keys_after_warmup.iter().max().unwrap_or(&0);
    let post: Vec<&Sample> = samples.iter().filter(|s| s.tick > warm.tick).collect();
    let q = post.len() / 4;
    let first_q: Vec<f64> = post[..q.max(1)].iter().map(|s| s.leader_median).collect();
    let last_q: Vec<f64> = post[post.len() - q.max(1)..]
        .iter()
        .map(|s| s.leader_median)
        .collect();
    let fuel_drift = median(&last_q) / median(&first_q).max(1.0);
    let d = drone.borrow();

    // ---- plot
    let x = |s: &Sample| s.tick as f64;
    let mut mem_series = Vec::new();
    for vm in 0..host.vm_count() {
        let name = if vm + 1 == host.vm_count() {
            format!("VM {vm} (main)")
        } else if Some(vm) == leader {
            format!("VM {vm} (worker, leader)")
        } else {
            format!("VM {vm} (worker)")
        };
        mem_series.push(Series::new(
            name,
            samples
                .iter()
                .map(|s| (x(s), s.mem[vm] as f64 / (1024.0 * 1024.0)))
                .collect(),
        ));
    }
    let plot = chart(
        "soak_host.svg",
        &format!(
            "Soak in wasmtime: {} ticks, {} webhooks (20% lost), ledger cap {CAP}",
            total_ticks, webhooks_sent
        ),
        "tick (100 ms each)",
        &[
            Panel::new("linear memory (MiB)", mem_series),
            Panel::new(
                "builds tracked",
                vec![Series::new(
                    "status_sync.builds_tracked",
                    samples.iter().map(|s| (x(s), s.tracked as f64)).collect(),
                )],
            )
            .limit(CAP as f64, "max_tracked_builds"),
            Panel::new(
                "fuel per on_tick",
                vec![
                    Series::new(
                        "leader median",
                        samples.iter().map(|s| (x(s), s.leader_median)).collect(),
                    ),
                    Series::new(
                        "leader p99",
                        samples.iter().map(|s| (x(s), s.leader_p99)).collect(),
                    ),
                    Series::new(
                        "followers median",
                        samples.iter().map(|s| (x(s), s.follower_median)).collect(),
                    ),
                ],
            ),
        ],
    )
    .expect("plot");

    let mut s = Summary::new(
        "soak_host",
        "make bench (cargo bench -p host-tests --bench soak)",
    );
    s.figure("ticks", total_ticks)
        .figure(
            "virtual_hours",
            report::round(total_ticks as f64 * TICK_MS as f64 / 3.6e6),
        )
        .figure("on_tick_calls_per_vm", ticks_per_vm.clone())
        .figure("webhooks_sent", webhooks_sent)
        .figure("webhooks_lost", webhooks_lost)
        .figure("webhooks_503", webhooks_503)
        .figure("builds", d.builds.len() as u64)
        .figure("drone_build_calls", d.store.calls.build)
        .figure("drone_repo_calls", d.store.calls.repo)
        .figure("drone_404", d.store.calls.not_found)
        .figure("redeliveries", pipeline.borrow().redeliveries)
        .figure("builds_evicted", metric(&host, "builds_evicted"))
        .figure("builds_expired", metric(&host, "builds_expired"))
        .figure("builds_gap_filled", metric(&host, "builds_gap_filled"))
        .figure("vm_deaths", host.deaths().len() as u64)
        .figure("warmup_ticks", warm.tick)
        .figure(
            "memory_bytes_after_warmup",
            warm.mem.iter().map(|m| *m as u64).collect::<Vec<_>>(),
        )
        .figure(
            "memory_bytes_end",
            end.mem.iter().map(|m| *m as u64).collect::<Vec<_>>(),
        )
        .figure("memory_growth_after_warmup_bytes", growth.clone())
        .figure("memory_last_growth_tick", last_growth_tick)
        .figure("tick_registrations_roots", roots as u64)
        .figure("shared_data_keys", keys_max as u64)
        .figure("leader_fuel_per_tick_median", median(&all_leader_fuel))
        .figure("leader_fuel_per_tick_p99", quantile(&all_leader_fuel, 0.99))
        .figure("leader_fuel_per_tick_max", quantile(&all_leader_fuel, 1.0))
        .figure(
            "leader_fuel_median_last_quarter_over_first",
            report::round(fuel_drift),
        )
        .figure("wall_s", report::round(wall.elapsed().as_secs_f64()));
    s.target(
        "largest linear-memory growth of any VM after warm-up (20%)",
        max_growth as f64,
        Op::Le,
        PAGE,
        "bytes",
    );
    s.target(
        "largest linear-memory growth of any VM over the second half",
        late_growth as f64,
        Op::Le,
        0.0,
        "bytes",
    );
    s.target(
        "most set_tick_period calls of a root context",
        max_registrations as f64,
        Op::Eq,
        1.0,
        "calls",
    );
    s.target(
        "fewest set_tick_period calls of a root context",
        min_registrations as f64,
        Op::Eq,
        1.0,
        "calls",
    );
    s.target(
        "shared-data key count change after warm-up",
        (keys_max - keys_min) as f64,
        Op::Eq,
        0.0,
        "keys",
    );
    s.target(
        "shared-data keys (bound 3 + ceil(cap/64))",
        keys_max as f64,
        Op::Le,
        keys_bound as f64,
        "keys",
    );
    s.target(
        "VMs that died",
        host.deaths().len() as f64,
        Op::Eq,
        0.0,
        "VMs",
    );
    s.plot(&plot);
    s.emit();
}
