//! Benchmark 6: how much the filter asks drone, against the per-second poller it replaces.
//!
//! A simulated day of builds goes through the native sans-IO core (`Reconciler` with a virtual
//! clock: observe, tick, on_response, as the shell drives them) with the configuration
//! defaults of docs/configuration.md. Drone is `drone_model::lifecycle::Row`, the lifecycle the drone
//! simulator runs (`build:created` pending version 1; pending→running writes version 2 and
//! sends **no** webhook; every step start and end sends `build:updated` running version 2;
//! teardown writes the final status, version 3, and sends the last `build:updated`), driven in
//! virtual time:
//!
//! - builds arrive at random (one every 45 s on average) over 20 repositories and run from
//!   10 s to an hour (log-uniform), in 2-6 steps, after 1-30 s in the queue;
//! - outcomes drawn from `drone_model::outcome::MIX`, as the simulator draws them (killed:
//!   cancelled while a step runs; skipped: auto-cancelled while pending; declined: after
//!   waiting for approval, no webhook at all; config error: created as error);
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
use drone_model::{Hook, Outcome, Rng, Row};
use status_sync::core::config::Config;
use status_sync::core::model::{BuildStatus, DeliveryOutcome, ParsedWebhook, RepoRef};
use status_sync::core::observation::Observation;
use status_sync::core::reconciler::{CallResult, OutgoingCall, Reconciler};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

const DAY_MS: u64 = 86_400_000;
const TICK_MS: u64 = 1_000;
const REPOS: u64 = 20;
const MEAN_ARRIVAL_MS: f64 = 45_000.0;
const LOSS: f64 = 0.2;
/// How long the simulation may run on after the day to let the filter finish.
const DRAIN_MS: u64 = 6 * 3_600_000;

fn repo_ref(repo: u64) -> RepoRef {
    RepoRef {
        id: 1000 + repo,
        namespace: "acme".into(),
        name: format!("service-{repo}"),
    }
}

fn repo_json(repo: u64) -> String {
    repo_json_counter(repo, 0)
}

/// Drone's repository object with its `counter` (the last build number allocated).
fn repo_json_counter(repo: u64, counter: u64) -> String {
    format!(
        r#"{{"id":{},"uid":"{}","namespace":"acme","name":"service-{repo}","slug":"acme/service-{repo}","private":true,"active":true,"counter":{counter},"version":1,"archived":false}}"#,
        1000 + repo,
        9000 + repo
    )
}

/// One drone build: the truth, with when each version was written.
#[derive(Clone, Debug)]
struct Build {
    repo: u64,
    number: u64,
    created_ms: u64,
    /// Drone's row.
    row: Row,
    /// (version, status, when drone wrote it).
    history: Vec<(u64, &'static str, u64)>,
    done_ms: Option<u64>,
    /// Webhooks that reached the pipeline (and the filter).
    delivered_live: u64,
}

impl Build {
    /// Drone wrote the row at `at`.
    fn wrote(&mut self, at: u64) {
        let (status, version) = (self.row.status, self.row.version);
        self.history.push((version, status, at));
        if self.row.is_done() && self.done_ms.is_none() {
            self.done_ms = Some(at);
        }
    }

    fn api(&self) -> Vec<u8> {
        format!(
            "{{\"id\":{},\"repo_id\":{},\"trigger\":\"@hook\",\"number\":{},\"status\":\"{}\",\"event\":\"push\",\"version\":{},\"stages\":[]}}\n",
            50_000 + self.number * 100 + self.repo,
            1000 + self.repo,
            self.number,
            self.row.status,
            self.row.version
        )
        .into_bytes()
    }
}

/// What drone does to a build (`Row` decides what it writes and sends).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Ev {
    Create {
        build: u32,
        config_error: bool,
    },
    Setup {
        build: u32,
    },
    /// A step start or end: whatever the build row says, if it is still running.
    Step {
        build: u32,
    },
    Teardown {
        build: u32,
        status: &'static str,
    },
    Cancel {
        build: u32,
    },
    AutoCancel {
        build: u32,
    },
    Decline {
        build: u32,
    },
}

impl Ev {
    fn build(self) -> u32 {
        match self {
            Ev::Create { build, .. }
            | Ev::Setup { build }
            | Ev::Step { build }
            | Ev::Teardown { build, .. }
            | Ev::Cancel { build }
            | Ev::AutoCancel { build }
            | Ev::Decline { build } => build,
        }
    }
}

struct Sim {
    /// Webhooks are signed and verify (`enforce`/`monitor`: evidence), or not (`off`: hints).
    verified: bool,
    rng: Rng,
    builds: Vec<Build>,
    by_key: HashMap<(u64, u64), u32>,
    numbers: Vec<u64>,
    events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    /// Pipeline's view: (repo, number) → (version, when it first had it).
    view: HashMap<(u64, u64), Vec<(u64, u64)>>,
    queue: Vec<Observation>,
    /// (repo, number) of every webhook that reached the filter, in order.
    observed_order: Vec<(u64, u64)>,
    webhooks_made: u64,
    webhooks_lost: u64,
    drone_build_calls: u64,
    drone_repo_calls: u64,
    drone_list_calls: u64,
    redeliveries: u64,
    /// (virtual minute, cumulative filter calls, cumulative poller calls).
    timeline: Vec<(f64, f64, f64)>,
}

impl Sim {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev)));
    }

    /// Schedules one build created at `t0`.
    fn create(&mut self, t0: u64) {
        let repo = self.rng.range(0, REPOS - 1);
        self.numbers[repo as usize] += 1;
        let number = self.numbers[repo as usize];
        let idx = self.builds.len() as u32;
        self.builds.push(Build {
            repo,
            number,
            created_ms: t0,
            row: Row::new(),
            history: Vec::new(),
            done_ms: None,
            delivered_live: 0,
        });
        self.by_key.insert((repo, number), idx);
        let outcome = Outcome::random(&mut self.rng);
        let config_error = outcome == Outcome::ConfigError;
        self.push(
            t0,
            Ev::Create {
                build: idx,
                config_error,
            },
        );
        match outcome {
            Outcome::ConfigError => return,
            Outcome::Skipped => {
                // Superseded while pending: auto-cancel → skipped, webhook (no repo.build).
                let at = t0 + self.rng.range(1_000, 30_000);
                self.push(at, Ev::AutoCancel { build: idx });
                return;
            }
            Outcome::Declined => {
                // Blocked for approval, then declined: a write, never a webhook.
                let at = t0 + self.rng.log_uniform(60_000.0, 3_600_000.0) as u64;
                self.push(at, Ev::Decline { build: idx });
                return;
            }
            _ => {}
        }
        let start = t0 + self.rng.range(1_000, 30_000);
        self.push(start, Ev::Setup { build: idx });
        let duration = self.rng.log_uniform(10_000.0, 3_600_000.0) as u64;
        let steps = self.rng.range(2, 6);
        // Random step lengths adding up to the duration.
        let weights: Vec<f64> = (0..steps).map(|_| 0.5 + self.rng.unit()).collect();
        let total: f64 = weights.iter().sum();
        let killed_in = (outcome == Outcome::Killed).then(|| self.rng.range(0, steps - 1));
        let mut t = start;
        for (i, w) in weights.iter().enumerate() {
            let len = ((duration as f64) * w / total) as u64;
            self.push(t + 300, Ev::Step { build: idx });
            if killed_in == Some(i as u64) {
                self.push(t + len / 2, Ev::Cancel { build: idx });
                return;
            }
            self.push(
                t + len.saturating_sub(200).max(301),
                Ev::Step { build: idx },
            );
            t += len;
        }
        let at = t + self.rng.range(500, 2_000);
        let status = outcome.final_status();
        self.push(at, Ev::Teardown { build: idx, status });
    }

    /// A webhook drone sends now: lost, or delivered to the pipeline and observed.
    fn webhook(&mut self, idx: u32, at: u64, hook: Hook) {
        self.webhooks_made += 1;
        if self.rng.unit() < LOSS {
            self.webhooks_lost += 1;
            return;
        }
        let b = &mut self.builds[idx as usize];
        b.delivered_live += 1;
        let (repo, number, status, version) = (b.repo, b.number, hook.status, hook.version);
        record(&mut self.view, (repo, number), version, at);
        self.observed_order.push((repo, number));
        self.queue.push(Observation::for_tests(
            ParsedWebhook {
                repo: repo_ref(repo),
                number,
                status: BuildStatus::parse(status),
                version,
                action: hook.shape.action().into(),
                repo_json: Some(repo_json(repo)),
                system_json: Some(r#"{"proto":"https","host":"drone.example.com"}"#.into()),
            },
            DeliveryOutcome::Delivered,
            self.verified,
        ));
    }

    /// Runs drone's events up to `until` (exclusive).
    fn run_events(&mut self, until: u64) {
        while let Some(Reverse((at, _, ev))) = self.events.peek().copied() {
            if at >= until {
                break;
            }
            self.events.pop();
            let b = &mut self.builds[ev.build() as usize];
            let version = b.row.version;
            let row = &mut b.row;
            let hook = match ev {
                Ev::Create { config_error, .. } => Some(row.create(config_error)),
                Ev::Setup { .. } => {
                    row.setup();
                    None
                }
                Ev::Step { .. } => row.step(),
                Ev::Teardown { status, .. } => row.teardown(status),
                Ev::Cancel { .. } => row.cancel(),
                Ev::AutoCancel { .. } => row.auto_cancel(),
                Ev::Decline { .. } => {
                    row.decline();
                    None
                }
            };
            if b.row.version != version {
                b.wrote(at);
            }
            if let Some(hook) = hook {
                self.webhook(ev.build(), at, hook);
            }
        }
    }

    /// Drone's REST API.
    fn answer(&mut self, call: &OutgoingCall, now: u64) -> CallResult {
        let path = call.header(":path").unwrap_or("").to_string();
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
                record(&mut self.view, (repo_id - 1000, number), version, now);
            }
            return CallResult::Response {
                status: 200,
                body: Vec::new(),
            };
        }
        let (route, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
        let seg: Vec<&str> = route.trim_start_matches('/').split('/').collect();
        let repo = |name: &str| name.trim_start_matches("service-").parse::<u64>().ok();
        match seg[..] {
            ["api", "repos", "acme", name] => {
                self.drone_repo_calls += 1;
                match repo(name) {
                    Some(r) => ok(repo_json_counter(
                        r,
                        self.numbers.get(r as usize).copied().unwrap_or(0),
                    )
                    .into_bytes()),
                    None => not_found(),
                }
            }
            ["api", "repos", "acme", name, "builds"] => {
                self.drone_list_calls += 1;
                let _ = query;
                let Some(r) = repo(name) else {
                    return not_found();
                };
                // Newest first, one page of 25, without stages.
                let mut list: Vec<&Build> = self.builds.iter().filter(|b| b.repo == r).collect();
                list.sort_by_key(|b| Reverse(b.number));
                let items: Vec<String> = list
                    .iter()
                    .take(25)
                    .map(|b| {
                        String::from_utf8_lossy(&b.api())
                            .trim()
                            .replace(",\"stages\":[]", "")
                    })
                    .collect();
                ok(format!("[{}]\n", items.join(",")).into_bytes())
            }
            ["api", "repos", "acme", name, "builds", n] => {
                self.drone_build_calls += 1;
                let key = (repo(name), n.parse::<u64>().ok());
                match key {
                    (Some(r), Some(n)) => match self.by_key.get(&(r, n)) {
                        Some(&i) if self.builds[i as usize].row.version > 0 => {
                            ok(self.builds[i as usize].api())
                        }
                        _ => not_found(),
                    },
                    _ => not_found(),
                }
            }
            _ => not_found(),
        }
    }
}

fn ok(body: Vec<u8>) -> CallResult {
    CallResult::Response { status: 200, body }
}

fn not_found() -> CallResult {
    CallResult::Response {
        status: 404,
        body: drone_model::server::Answer::no_rows().body,
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
    let done = b.done_ms.unwrap_or(b.created_ms);
    (done - b.created_ms).div_ceil(1000).max(1)
}

/// One simulated day and its drain: the drone model, the pipeline's view and the reconciler.
fn day(cfg: Config, verified: bool) -> (Sim, Reconciler, u64, u64) {
    let mut r = Reconciler::new(cfg, 11);
    let t0 = 1_700_000_000_000u64;
    let mut sim = Sim {
        verified,
        rng: Rng::new(2024),
        builds: Vec::new(),
        by_key: HashMap::new(),
        numbers: vec![0; REPOS as usize],
        events: BinaryHeap::new(),
        seq: 0,
        view: HashMap::new(),
        queue: Vec::new(),
        observed_order: Vec::new(),
        webhooks_made: 0,
        webhooks_lost: 0,
        drone_build_calls: 0,
        drone_repo_calls: 0,
        drone_list_calls: 0,
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
                .builds
                .iter()
                .map(|b| {
                    let end = b.done_ms.unwrap_or(now).min(now);
                    (end.saturating_sub(b.created_ms)).div_ceil(1000).max(1)
                })
                .sum();
            let filter = sim.drone_build_calls + sim.drone_repo_calls + sim.drone_list_calls;
            sim.timeline
                .push(((now - t0) as f64 / 3.6e6, filter as f64, poller as f64));
        }
        let day_over = now >= t0 + DAY_MS && sim.events.is_empty();
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

/// What the filter can know (docs/reliability.md, "Only what it saw"): builds it saw a webhook of, and builds that
/// gap filling looks up: when build n of a repository arrives and the highest number seen so
/// far is m with 0 < m < n-1, builds max(m+1, n-max_gap_fill)..n-1.
fn knowable_builds(sim: &Sim, max_gap_fill: u64) -> HashSet<(u64, u64)> {
    let mut can_know = HashSet::new();
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for &(repo, n) in &sim.observed_order {
        can_know.insert((repo, n));
        let m = seen.get(&repo).copied().unwrap_or(0);
        if m != 0 && n > m + 1 {
            for k in (m + 1).max(n.saturating_sub(max_gap_fill))..n {
                can_know.insert((repo, k));
            }
        }
        seen.insert(repo, m.max(n));
    }
    can_know
}

/// (knowable builds, knowable builds where the pipeline has drone's final version).
fn convergence(sim: &Sim, max_gap_fill: u64) -> (u64, u64) {
    let can_know = knowable_builds(sim, max_gap_fill);
    let (mut knowable, mut converged) = (0, 0);
    for b in sim
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
    let cfg = Config::parse(
        br#"{"pipeline_cluster":"pipeline","drone_cluster":"drone","drone_token":"t0k3n"}"#,
        &|_| None,
    )
    .expect("defaults");
    let (stale_after, max_interval) = (cfg.stale_after_ms, cfg.max_poll_interval_ms);
    let max_gap_fill = cfg.max_gap_fill;
    let (sim, r, t0, end_ms) = day(cfg.clone(), true);
    // The same day (same builds, same losses) with every webhook a hint (`off`).
    let (off_sim, off_r, _, _) = day(cfg, false);
    let (off_knowable, off_converged) = convergence(&off_sim, max_gap_fill);
    let off_calls = off_sim.drone_build_calls + off_sim.drone_repo_calls + off_sim.drone_list_calls;
    let off_hints_refuted = off_r.counters().hints_refuted;

    // ---- convergence and recovery delays
    let mut knowable = 0u64;
    let mut converged = 0u64;
    let mut unknowable = 0u64;
    let mut mismatches = Vec::new();
    let can_know = knowable_builds(&sim, max_gap_fill);
    let mut final_delays = Vec::new();
    // Split by how the filter knew the build: from one of its own webhooks, or by gap filling.
    let mut final_delays_seen = Vec::new();
    let mut final_delays_gap = Vec::new();
    let mut all_delays = Vec::new();
    let mut final_live = 0u64;
    for b in &sim.builds {
        let key = (b.repo, b.number);
        let got = sim.view.get(&key).cloned().unwrap_or_default();
        let have = got.last().map_or(0, |v| v.0);
        if !can_know.contains(&key) {
            unknowable += 1;
            continue;
        }
        knowable += 1;
        if have == b.row.version {
            converged += 1;
        } else {
            mismatches.push(format!(
                "{}#{}: drone {} v{}, pipeline v{have}",
                b.repo, b.number, b.row.status, b.row.version
            ));
        }
        for &(version, _status, at) in &b.history {
            // When did the pipeline first have this version or a newer one, and was it live?
            let first = got.iter().find(|(v, _)| *v >= version).map(|(_, t)| *t);
            let live = got.iter().any(|(v, t)| *v == version && *t == at);
            let is_final = Some(at) == b.done_ms;
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
                if b.delivered_live > 0 {
                    final_delays_seen.push(delay);
                } else {
                    final_delays_gap.push(delay);
                }
            }
        }
    }
    let filter_calls = sim.drone_build_calls + sim.drone_repo_calls + sim.drone_list_calls;
    let poller: u64 = sim.builds.iter().map(poller_calls).sum();
    let ratio = filter_calls as f64 / poller as f64;
    let counters = r.counters().clone();
    let build_secs: f64 = sim
        .builds
        .iter()
        .map(|b| (b.done_ms.unwrap_or(end_ms) - b.created_ms) as f64 / 1000.0)
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
    s.figure("builds", sim.builds.len() as u64)
        .figure("build_hours_open", report::round(build_secs / 3600.0))
        .figure("webhooks", sim.webhooks_made)
        .figure("webhooks_lost", sim.webhooks_lost)
        .figure("filter_drone_calls", filter_calls)
        .figure("filter_build_calls", sim.drone_build_calls)
        .figure("filter_repo_calls", sim.drone_repo_calls)
        .figure("filter_list_calls", sim.drone_list_calls)
        .figure("poller_calls", poller)
        .figure(
            "enforce_calls_per_build",
            report::round(filter_calls as f64 / sim.builds.len() as f64),
        )
        .figure("off_drone_calls", off_calls)
        .figure("off_build_calls", off_sim.drone_build_calls)
        .figure("off_repo_calls", off_sim.drone_repo_calls)
        .figure(
            "off_calls_per_build",
            report::round(off_calls as f64 / off_sim.builds.len() as f64),
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
        100.0 * sim.drone_build_calls as f64 / poller as f64,
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
