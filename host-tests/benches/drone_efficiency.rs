//! Benchmark 6: how much the filter asks drone, against the per-second poller it replaces.
//!
//! A simulated day of builds goes through the native sans-IO core (`Reconciler` with a virtual
//! clock: observe, tick, on_response, as the shell drives them) with the configuration
//! defaults of docs/configuration.md. Drone is `drone_model::workload` (the lifecycle the drone
//! simulator runs, `lifecycle::Row`: `build:created` pending version 1; pending→running writes
//! version 2 and sends **no** webhook; every step start and end sends `build:updated` running
//! version 2; teardown writes the final status, version 3, and sends the last
//! `build:updated`), driven in virtual time, and its API is `drone_model::store`'s:
//!
//! - builds arrive at random (one every 45 s on average) over 20 repositories and run from
//!   10 s to an hour (log-uniform), in 2-7 steps, after 1-30 s in the queue;
//! - outcomes drawn from `drone_model::outcome::MIX`, as the simulator draws them (killed:
//!   cancelled while pending or running; skipped: auto-cancelled while pending; declined:
//!   after waiting for approval, no webhook at all; config error: created as error);
//! - 20% of all webhooks are lost; the pipeline accepts everything it gets; the REST API
//!   answers from drone's state at once.
//!
//! The baseline is a poller that asks drone about every open build once a second from its
//! creation until it sees it done (and never pays for discovering builds). After the day, the
//! simulation runs on (no new builds) until the filter has nothing left to do, then checks
//! that the pipeline's view equals drone's for every build the filter could know about, and
//! measures, for every transition the pipeline did not get live, the delay until it had that
//! version or a newer one.
//!
//! The same day runs twice: webhooks signed and verified (`enforce`: evidence) and unsigned
//! (`off`: every webhook a hint, so each build is confirmed with drone at least once).
//!
//! Discovery (each repository's `counter`, at an interval following its activity) is counted
//! with the filter's calls (`filter_repo_calls`).
//!
//! Target: build lookups under 1% of the poller's calls; all the filter's drone calls
//! (lookups and discovery) under 2%, in `enforce` and in `off`; 100% convergence in both.

mod common;

use common::report::{self, chart, median, quantile, Op, Panel, Series, Summary};
use common::{native_config, repo_ref};
use drone_model::lifecycle::Act;
use drone_model::store::Store;
use drone_model::workload::{gap_filled, Build, Builds};
use drone_model::{Hook, Outcome, Rng};
use status_sync::core::config::Config;
use status_sync::core::model::{BuildStatus, DeliveryOutcome, ParsedWebhook};
use status_sync::core::observation::Observation;
use status_sync::core::reconciler::{CallResult, OutgoingCall, Reconciler};
use std::collections::{BTreeSet, HashMap};

const DAY_MS: u64 = 86_400_000;
const TICK_MS: u64 = 1_000;
const REPOS: u64 = 20;
const MEAN_ARRIVAL_MS: f64 = 45_000.0;
const LOSS: f64 = 0.2;
/// How long the simulation may run on after the day to let the filter finish.
const DRAIN_MS: u64 = 6 * 3_600_000;

struct Sim {
    /// Webhooks are signed and verify (`enforce`/`monitor`: evidence), or not (`off`: hints).
    verified: bool,
    rng: Rng,
    /// Drone (`drone_model::workload`): its builds, and the store its API answers from.
    drone: Builds,
    /// Drone's repository object, as webhooks carry it.
    repo_json: Vec<String>,
    /// Pipeline's view: (repo, number) → (version, when it first had it).
    view: HashMap<(u64, u64), Vec<(u64, u64)>>,
    queue: Vec<Observation>,
    /// (when, repo, number) of every webhook that reached the filter, in order.
    arrivals: Vec<(u64, u64, u64)>,
    webhooks_made: u64,
    webhooks_lost: u64,
    redeliveries: u64,
    /// (virtual minute, cumulative filter calls, cumulative poller calls).
    timeline: Vec<(f64, f64, f64)>,
}

impl Sim {
    /// Drone's API calls the filter made: (build lookups, repository lookups, lists).
    fn calls(&self) -> (u64, u64, u64) {
        let c = &self.drone.store.calls;
        (c.build, c.repo, c.list)
    }

    fn filter_calls(&self) -> u64 {
        let (b, r, l) = self.calls();
        b + r + l
    }

    /// Schedules one build created at `t0`: queued 1-30 s, then 2-6 steps (random lengths
    /// adding up to 10 s to an hour); skipped within 30 s; declined after waiting 1 min to an
    /// hour for approval; killed in one of its steps.
    fn create(&mut self, t0: u64) {
        let repo = self.rng.range(0, REPOS - 1);
        let outcome = Outcome::random(&mut self.rng);
        let mut acts = vec![(t0, Act::Create)];
        let rng = &mut self.rng;
        match outcome {
            Outcome::ConfigError => {}
            Outcome::Skipped => acts.push((t0 + rng.range(1_000, 30_000), Act::Skip)),
            Outcome::Declined => {
                let at = t0 + rng.log_uniform(60_000.0, 3_600_000.0) as u64;
                acts.push((at, Act::Decline));
            }
            _ => {
                let start = t0 + rng.range(1_000, 30_000);
                acts.push((start, Act::Setup));
                let duration = rng.log_uniform(10_000.0, 3_600_000.0) as u64;
                let steps = rng.range(2, 6);
                let weights: Vec<f64> = (0..steps).map(|_| 0.5 + rng.unit()).collect();
                let total: f64 = weights.iter().sum();
                let killed_in = (outcome == Outcome::Killed).then(|| rng.range(0, steps - 1));
                let mut t = start;
                for (i, w) in weights.iter().enumerate() {
                    let len = ((duration as f64) * w / total) as u64;
                    acts.push((t + 300, Act::Step));
                    if killed_in == Some(i as u64) {
                        acts.push((t + len / 2, Act::Cancel));
                        break;
                    }
                    acts.push((t + len.saturating_sub(200).max(301), Act::Step));
                    t += len;
                }
                if killed_in.is_none() {
                    let end = t + rng.range(500, 2_000);
                    acts.push((end, Act::Teardown(outcome.final_status())));
                }
            }
        }
        self.drone.plan(repo, outcome, acts);
    }

    /// A webhook drone sends now: lost, or delivered to the pipeline and observed.
    fn webhook(&mut self, idx: usize, at: u64, hook: Hook) {
        self.webhooks_made += 1;
        if self.rng.unit() < LOSS {
            self.webhooks_lost += 1;
            return;
        }
        let b = &mut self.drone.builds[idx];
        b.arrived += 1;
        let (repo, number, status, version) = (b.repo, b.number, hook.status, hook.version);
        record(&mut self.view, (repo, number), version, at);
        self.arrivals.push((at, repo, number));
        self.queue.push(Observation::for_tests(
            ParsedWebhook {
                repo: repo_ref(repo),
                number,
                status: BuildStatus::parse(status),
                version,
                action: hook.shape.action().into(),
                repo_json: self.repo_json.get(repo as usize).cloned(),
                system_json: Some(r#"{"proto":"https","host":"drone.example.com"}"#.into()),
            },
            DeliveryOutcome::Delivered,
            self.verified,
        ));
    }

    /// Runs drone's events up to `until` (exclusive).
    fn run_events(&mut self, until: u64) {
        while let Some((b, at, hook)) = self.drone.run_next(until, &mut self.rng) {
            if let Some(hook) = hook {
                self.webhook(b, at, hook);
            }
        }
    }

    /// Drone's REST API (`drone_model::store`) and the pipeline.
    fn answer(&mut self, call: &OutgoingCall, now: u64) -> CallResult {
        if call.cluster == "pipeline" {
            // webhook-id: drone-<repo id>-<number>-<version>
            let id = call.header("webhook-id").unwrap_or("");
            let parts: Vec<u64> = id
                .trim_start_matches("drone-")
                .split('-')
                .filter_map(|p| p.parse().ok())
                .collect();
            if let [repo_id, number, version] = parts[..] {
                self.redeliveries += 1;
                record(&mut self.view, (repo_id - 100, number), version, now);
            }
            return CallResult::Response {
                status: 200,
                body: Vec::new(),
            };
        }
        let path = call.header(":path").unwrap_or("");
        let a = self.drone.store.answer("GET", path, None);
        CallResult::Response {
            status: a.status,
            body: a.body,
        }
    }
}

fn record(view: &mut HashMap<(u64, u64), Vec<(u64, u64)>>, key: (u64, u64), version: u64, at: u64) {
    let v = view.entry(key).or_default();
    if v.last().is_none_or(|(have, _)| version > *have) {
        v.push((version, at));
    }
}

/// Polls of a once-a-second poller for one build: from creation until the poll that sees it
/// done.
fn poller_calls(b: &Build) -> u64 {
    let done = b.done_ms().unwrap_or(b.created_ms);
    (done - b.created_ms).div_ceil(1000).max(1)
}

/// One simulated day and its drain: the drone model, the pipeline's view and the reconciler.
fn day(cfg: Config, verified: bool) -> (Sim, Reconciler, u64, u64) {
    let mut r = Reconciler::new(cfg, 11);
    let t0 = 1_700_000_000_000u64;
    let store = Store::new();
    let repo_json = (0..REPOS)
        .map(|r| {
            String::from_utf8_lossy(&store.bodies.api_repo(r, 0))
                .trim()
                .to_string()
        })
        .collect();
    let mut sim = Sim {
        verified,
        rng: Rng::new(2024),
        drone: Builds::new(store),
        repo_json,
        view: HashMap::new(),
        queue: Vec::new(),
        arrivals: Vec::new(),
        webhooks_made: 0,
        webhooks_lost: 0,
        redeliveries: 0,
        timeline: Vec::new(),
    };
    let mut next_arrival = t0 + sim.rng.exp(MEAN_ARRIVAL_MS) as u64;
    let mut now = t0;
    let mut idle_since: Option<u64> = None;
    loop {
        now += TICK_MS;
        while next_arrival < now && next_arrival < t0 + DAY_MS {
            sim.create(next_arrival);
            next_arrival += sim.rng.exp(MEAN_ARRIVAL_MS).max(1.0) as u64;
        }
        sim.run_events(now);
        // The leader's tick: drain the queue, then plan.
        for obs in std::mem::take(&mut sim.queue) {
            r.observe(obs, now);
        }
        let mut calls = r.tick(now);
        while let Some(call) = calls.pop() {
            let answer = sim.answer(&call, now);
            calls.extend(r.on_response(call.id, answer, now));
        }
        if (now - t0) % 600_000 == 0 {
            let poller: u64 = sim
                .drone
                .builds
                .iter()
                .map(|b| {
                    let end = b.done_ms().unwrap_or(now).min(now);
                    (end.saturating_sub(b.created_ms)).div_ceil(1000).max(1)
                })
                .sum();
            let filter = sim.filter_calls();
            sim.timeline
                .push(((now - t0) as f64 / 3.6e6, filter as f64, poller as f64));
        }
        let day_over = now >= t0 + DAY_MS && sim.drone.due.is_empty();
        if day_over && r.ledger().is_empty() && r.inflight() == 0 {
            idle_since.get_or_insert(now);
            break;
        }
        if now >= t0 + DAY_MS + DRAIN_MS {
            break;
        }
    }
    let end_ms = now;
    (sim, r, t0, end_ms)
}

/// What the filter can know (docs/reliability.md, "Only what it saw"): builds it saw a
/// webhook of, and builds that gap filling looks up (`drone_model::workload::gap_filled`;
/// one reconciler all day).
fn knowable_builds(sim: &Sim, max_gap_fill: u64) -> BTreeSet<(u64, u64)> {
    let mut can_know = gap_filled(&sim.arrivals, &[0], max_gap_fill);
    can_know.extend(sim.arrivals.iter().map(|(_, repo, n)| (*repo, *n)));
    can_know
}

/// (knowable builds, knowable builds where the pipeline has drone's final version).
fn convergence(sim: &Sim, max_gap_fill: u64) -> (u64, u64) {
    let can_know = knowable_builds(sim, max_gap_fill);
    let (mut knowable, mut converged) = (0, 0);
    for b in sim
        .drone
        .builds
        .iter()
        .filter(|b| can_know.contains(&(b.repo, b.number)))
    {
        knowable += 1;
        let have = sim
            .view
            .get(&(b.repo, b.number))
            .and_then(|v| v.last())
            .map_or(0, |v| v.0);
        if have == b.row.version {
            converged += 1;
        }
    }
    (knowable, converged)
}

fn main() {
    report::process_start();
    let cfg = native_config("");
    let (stale_after, max_interval) = (cfg.stale_after_ms, cfg.max_poll_interval_ms);
    let max_gap_fill = cfg.max_gap_fill;
    let (sim, r, t0, end_ms) = day(cfg.clone(), true);
    // The same day (same builds, same losses) with every webhook a hint (`off`).
    let (off_sim, off_r, _, _) = day(cfg, false);
    let (off_knowable, off_converged) = convergence(&off_sim, max_gap_fill);
    let off_calls = off_sim.filter_calls();
    let off_hints_refuted = off_r.counters().hints_refuted;

    // ---- convergence and recovery delays
    let (knowable, converged) = convergence(&sim, max_gap_fill);
    let unknowable = sim.drone.builds.len() as u64 - knowable;
    let mut mismatches = Vec::new();
    let can_know = knowable_builds(&sim, max_gap_fill);
    let mut final_delays = Vec::new();
    // Split by how the filter knew the build: from one of its own webhooks, or by gap filling.
    let mut final_delays_seen = Vec::new();
    let mut final_delays_gap = Vec::new();
    let mut all_delays = Vec::new();
    let mut final_live = 0u64;
    for b in &sim.drone.builds {
        let key = (b.repo, b.number);
        let got = sim.view.get(&key).cloned().unwrap_or_default();
        let have = got.last().map_or(0, |v| v.0);
        if !can_know.contains(&key) {
            continue;
        }
        if have != b.row.version {
            mismatches.push(format!(
                "{}#{}: drone {} v{}, pipeline v{have}",
                b.repo, b.number, b.row.status, b.row.version
            ));
        }
        for &(version, _status, at) in &b.writes {
            // When did the pipeline first have this version or a newer one, and was it live?
            let first = got.iter().find(|(v, _)| *v >= version).map(|(_, t)| *t);
            let live = got.iter().any(|(v, t)| *v == version && *t == at);
            let is_final = Some(at) == b.done_ms();
            if live {
                if is_final {
                    final_live += 1;
                }
                continue;
            }
            let delay = first.map_or(f64::INFINITY, |t| t.saturating_sub(at) as f64 / 1000.0);
            all_delays.push(delay);
            if is_final {
                final_delays.push(delay);
                if b.arrived > 0 {
                    final_delays_seen.push(delay);
                } else {
                    final_delays_gap.push(delay);
                }
            }
        }
    }
    let filter_calls = sim.filter_calls();
    let (build_calls, repo_calls, list_calls) = sim.calls();
    let poller: u64 = sim.drone.builds.iter().map(poller_calls).sum();
    let ratio = filter_calls as f64 / poller as f64;
    let counters = r.counters().clone();
    let build_secs: f64 = sim
        .drone
        .builds
        .iter()
        .map(|b| (b.done_ms().unwrap_or(end_ms) - b.created_ms) as f64 / 1000.0)
        .collect::<Vec<_>>()
        .iter()
        .sum();

    // ---- plot: cumulative calls over the day, log of both.
    let plot = chart(
        "drone_efficiency.svg",
        "Drone API calls over a simulated day: status-sync vs a per-second poller of open builds",
        "virtual hours",
        &[
            Panel::new(
                "cumulative drone API calls",
                vec![
                    Series::new(
                        "per-second poller",
                        sim.timeline.iter().map(|p| (p.0, p.2)).collect(),
                    ),
                    Series::new(
                        "status-sync",
                        sim.timeline.iter().map(|p| (p.0, p.1)).collect(),
                    ),
                ],
            ),
            Panel::new(
                "status-sync calls / poller calls (%)",
                vec![Series::new(
                    "ratio",
                    sim.timeline
                        .iter()
                        .filter(|p| p.2 > 0.0)
                        .map(|p| (p.0, 100.0 * p.1 / p.2))
                        .collect(),
                )],
            )
            .limit(1.0, "target: 1%"),
        ],
    )
    .expect("plot");

    let mut s = Summary::new(
        "drone_efficiency",
        "make bench (cargo bench -p host-tests --bench drone_efficiency)",
    );
    s.figure("builds", sim.drone.builds.len() as u64)
        .figure("build_hours_open", report::round(build_secs / 3600.0))
        .figure("webhooks", sim.webhooks_made)
        .figure("webhooks_lost", sim.webhooks_lost)
        .figure("filter_drone_calls", filter_calls)
        .figure("filter_build_calls", build_calls)
        .figure("filter_repo_calls", repo_calls)
        .figure("filter_list_calls", list_calls)
        .figure("poller_calls", poller)
        .figure(
            "enforce_calls_per_build",
            report::round(filter_calls as f64 / sim.drone.builds.len() as f64),
        )
        .figure("off_drone_calls", off_calls)
        .figure("off_build_calls", off_sim.calls().0)
        .figure("off_repo_calls", off_sim.calls().1)
        .figure(
            "off_calls_per_build",
            report::round(off_calls as f64 / off_sim.drone.builds.len() as f64),
        )
        .figure(
            "off_ratio_percent",
            report::round(100.0 * off_calls as f64 / poller as f64),
        )
        .figure("off_redeliveries", off_sim.redeliveries)
        .figure("off_knowable_builds", off_knowable)
        .figure("off_converged_builds", off_converged)
        .figure("off_hints_refuted", off_hints_refuted)
        .figure("ratio_percent", report::round(100.0 * ratio))
        .figure("redeliveries", sim.redeliveries)
        .figure("knowable_builds", knowable)
        .figure("unknowable_builds", unknowable)
        .figure("converged_builds", converged)
        .figure("final_states_live", final_live)
        .figure("final_states_recovered", final_delays.len() as u64)
        .figure(
            "final_recovered_seen_builds",
            final_delays_seen.len() as u64,
        )
        .figure(
            "final_recovered_gap_filled_builds",
            final_delays_gap.len() as u64,
        )
        .figure("missed_transitions", all_delays.len() as u64)
        .figure("poller_recovery_s_max", 1.0)
        .figure("builds_gap_filled", counters.builds_gap_filled)
        .figure("giveups", counters.giveups)
        .figure(
            "simulated_hours",
            report::round((end_ms - t0) as f64 / 3.6e6),
        )
        .figure("stale_after_ms", stale_after)
        .figure("max_poll_interval_ms", max_interval);
    // Recovery delays in seconds, one figure per statistic (`{}` in the name).
    for (name, delays, stats) in [
        ("final_recovery_s_{}", &final_delays, "median p99 max"),
        (
            "final_recovery_s_{}_seen_builds",
            &final_delays_seen,
            "p99 max",
        ),
        (
            "final_recovery_s_{}_gap_filled_builds",
            &final_delays_gap,
            "median max",
        ),
        ("transition_recovery_s_{}", &all_delays, "median p99"),
    ] {
        for stat in stats.split(' ') {
            let secs = match stat {
                "median" => median(delays),
                "p99" => quantile(delays, 0.99),
                _ => quantile(delays, 1.0),
            };
            s.figure(&name.replace("{}", stat), report::round(secs));
        }
    }
    s.target(
        "build lookups / per-second poller calls",
        100.0 * build_calls as f64 / poller as f64,
        Op::Lt,
        1.0,
        "%",
    );
    s.target(
        "all filter drone calls (lookups, discovery) / per-second poller calls",
        100.0 * ratio,
        Op::Lt,
        2.0,
        "%",
    );
    s.target(
        "off (every webhook a hint): all filter drone calls / per-second poller calls",
        100.0 * off_calls as f64 / poller as f64,
        Op::Lt,
        2.0,
        "%",
    );
    // 100% of the knowable builds converge, in `off` and in `enforce`.
    let share = |part: u64, whole: u64| match whole {
        0 => 0.0,
        _ => 100.0 * part as f64 / whole as f64,
    };
    for (name, part, whole) in [
        (
            "off: knowable builds where the pipeline equals drone",
            off_converged,
            off_knowable,
        ),
        (
            "knowable builds where the pipeline equals drone",
            converged,
            knowable,
        ),
    ] {
        s.target(name, share(part, whole), Op::Eq, 100.0, "%");
    }
    if !mismatches.is_empty() {
        s.note(format!(
            "not converged: {}",
            mismatches
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    s.note("knowable = at least one of its webhooks reached the filter, or gap filling looks it up (a later build of its repository arrived after an earlier one, within max_gap_fill); the others cannot be known to any sidecar");
    s.plot(&plot);
    s.emit();
}
