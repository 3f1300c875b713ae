//! Benchmark 1a: leak-freedom soak of the real `out/status_sync.wasm` in the host (2 workers +
//! main, fuel metering on): 10^6 tick periods (100 ms each, about 28 hours of virtual time)
//! and 10^6 live webhooks with build churn, sampling every VM's linear memory, the builds the
//! reconciler tracks and the fuel of every tick.
//!
//! The workload is a day-and-a-bit of drone: builds arrive at random (about 2.1 per second over
//! 50 repositories) and live from 5 s to an hour (log-uniform) plus a queue wait; drone's
//! lifecycle (`drone_model::lifecycle::Row`) decides their webhooks (`build:created` pending,
//! then a `running` update at every step start and end, then the final one; pending→running
//! and declines send none); 1% of builds get stuck running forever, config errors end at
//! creation.
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
use drone_model::outcome::SOAK;
use drone_model::{Outcome, Rng, Row};
use host_tests::Host;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;

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

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    /// `build:created`, pending v1 (or error v1 for a config error).
    Created,
    /// pending→running, v2, no webhook.
    Running,
    /// A step started or ended: `build:updated` running v2.
    Step,
    /// The final status, v3; declined sends no webhook.
    Final,
}

struct Build {
    repo: u64,
    number: u64,
    /// Status at the end (None: stuck).
    end: Option<&'static str>,
    config_error: bool,
    /// Drone's row.
    row: Row,
}

type Event = Reverse<(u64, u64, Kind, u32)>;

struct World {
    rng: Rng,
    builds: Vec<Build>,
    events: BinaryHeap<Event>,
    seq: u64,
    numbers: Vec<u64>,
    next_arrival_ms: u64,
    webhooks_made: u64,
    webhooks_lost: u64,
    webhooks_sent: u64,
    webhooks_503: u64,
}

impl World {
    fn push(&mut self, at: u64, kind: Kind, build: u32) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, kind, build)));
    }

    /// Creates the builds that arrive before `until` and schedules their events.
    fn arrivals(&mut self, until: u64) {
        while self.next_arrival_ms < until {
            let at = self.next_arrival_ms;
            self.next_arrival_ms += self.rng.exp(1000.0 / ARRIVALS_PER_S).max(1.0) as u64;
            let repo = self.rng.range(0, REPOS - 1);
            self.numbers[repo as usize] += 1;
            let number = self.numbers[repo as usize];
            let roll = self.rng.range(0, 99);
            let outcome = Outcome::draw(&SOAK, roll).unwrap_or(Outcome::ConfigError);
            let config_error = outcome == Outcome::ConfigError;
            let end = (outcome != Outcome::Stuck).then(|| outcome.final_status());
            let idx = self.builds.len() as u32;
            self.builds.push(Build {
                repo,
                number,
                end,
                config_error,
                row: Row::new(),
            });
            self.push(at, Kind::Created, idx);
            if config_error {
                continue;
            }
            let duration = self.rng.log_uniform(5_000.0, 3_600_000.0) as u64;
            if end == Some("declined") {
                // Blocked for approval, then declined: drone sends nothing.
                self.push(at + duration, Kind::Final, idx);
                continue;
            }
            let start = at + self.rng.range(1_000, 10_000);
            self.push(start, Kind::Running, idx);
            let steps = self.rng.range(1, 4);
            let step = duration / steps;
            let last = if end == Some("killed") { 1 } else { steps };
            for i in 0..last {
                let s = start + i * step;
                self.push(s + 200, Kind::Step, idx);
                if end != Some("killed") {
                    self.push(s + step * 9 / 10, Kind::Step, idx);
                }
            }
            match end {
                Some("killed") => self.push(start + step / 2, Kind::Final, idx),
                Some(_) => self.push(start + duration + 500, Kind::Final, idx),
                None => {}
            }
        }
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
    let bodies = Rc::new(Bodies::new());
    let mut host = Host::start(host_config(2, &extra())).expect("host starts");
    let drone = install_drone(&mut host);
    let pipeline = install_pipeline(&mut host);
    let start_ms = host.now_ms();
    let mut w = World {
        rng: Rng::new(42),
        builds: Vec::new(),
        events: BinaryHeap::new(),
        seq: 0,
        numbers: vec![0; REPOS as usize],
        next_arrival_ms: start_ms,
        webhooks_made: 0,
        webhooks_lost: 0,
        webhooks_sent: 0,
        webhooks_503: 0,
    };
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
        w.arrivals(until);
        // Everything drone does before the end of this tick period.
        while let Some(Reverse((at, _, kind, idx))) = w.events.peek().copied() {
            if at >= until {
                break;
            }
            w.events.pop();
            let b = &mut w.builds[idx as usize];
            let key = (b.repo, b.number);
            let row = &mut b.row;
            let hook = match kind {
                Kind::Created => Some(row.create(b.config_error)),
                Kind::Running => {
                    row.setup();
                    None
                }
                Kind::Step => row.step(),
                Kind::Final => match b.end {
                    Some("killed") => row.cancel(),
                    Some("declined") => {
                        row.decline();
                        None
                    }
                    Some(end) => row.teardown(end),
                    None => None,
                },
            };
            drone
                .borrow_mut()
                .write(key.0, key.1, row.status, row.version);
            let Some(hook) = hook else {
                continue;
            };
            w.webhooks_made += 1;
            if w.rng.unit() < LOSS || w.webhooks_sent >= total_webhooks {
                w.webhooks_lost += 1;
                continue;
            }
            let answer = if w.rng.unit() < PIPELINE_5XX {
                w.webhooks_503 += 1;
                503
            } else {
                200
            };
            w.webhooks_sent += 1;
            // Streams run on the workers only (VMs 0 and 1); the main thread's VM just ticks.
            vm_rr = (vm_rr + 1) % 2;
            let body = bodies.hook(hook.shape, key, hook.status, hook.version);
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
                    w.webhooks_sent,
                    drone.borrow().calls.build,
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
            total_ticks, w.webhooks_sent
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
        .figure("webhooks_sent", w.webhooks_sent)
        .figure("webhooks_lost", w.webhooks_lost)
        .figure("webhooks_503", w.webhooks_503)
        .figure("builds", w.builds.len() as u64)
        .figure("drone_build_calls", d.calls.build)
        .figure("drone_repo_calls", d.calls.repo)
        .figure("drone_404", d.calls.not_found)
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
