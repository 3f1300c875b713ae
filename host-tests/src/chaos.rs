//! The chaos runs' simulator: thousands of drone builds with drone-faithful lifecycles
//! (drone-server 2.25's `trigger/trigger.go`, `operator/manager/`, `plugin/webhook/`), driven
//! through the real `status_sync.wasm` in the host, with faults everywhere; `tests/chaos.rs`
//! holds the cases and checks docs/reliability.md's guarantees on the [`Report`] of each.
//! Seeded and deterministic: the same seed gives the same run.
//!
//! The drone model is `drone_model`'s: the lifecycle (`lifecycle::Row::act`: which event
//! writes the build row, which sends a webhook of which shape), the endings and their shares
//! (`outcome::CHAOS`, `TEARDOWN`), the rows, numbering and API answers (`store::Store`) and
//! the bodies (`store::Bodies`). Drone and the pipeline answer the filter's calls as in every
//! scenario ([`crate::upstreams`]: its `Drone` and `Pipeline`, with its fault model). [`Sim`] drives it in virtual time
//! with a workload of its own (one seeded `drone_model::Rng` stream per concern, so the
//! workload of a seed is the same whatever the loss rate):
//! - a handful of repositories, builds numbered per repository in creation order;
//! - every ending of `outcome::CHAOS` (cancels, their teardown rewrites, skips, declines,
//!   config errors, teardowns without running), each act as `drone_model::lifecycle` does it;
//! - `build:created` sometimes reaches the sidecar only after the first step webhook (the
//!   trigger/runner race of §1.4);
//! - durations log-uniform from seconds to tens of minutes, pending from < 1 s to minutes.
//!
//! Faults (during the fault phase only): webhook loss (a parameter, 0–50 %), duplicated and
//! reordered webhooks, webhooks hitting a dead worker VM (Envoy answers 503: lost too), pipeline
//! 5xx/reset/timeout on live webhooks and 5xx/connect failure/timeout on re-deliveries, a long
//! pipeline outage, drone API 5xx/timeouts/slow answers/connect failures and a drone outage,
//! leader VM crashes (killed, reloaded seconds later as FAIL_RELOAD does) and config reloads
//! with a changed but equivalent configuration.
//!
//! The attacker (cases with `attack`): beside drone's webhooks, forged ones (unsigned) at random
//! times during the fault phase, with random versions (up to 2^63-1), numbers (real ones,
//! scattered ones, up to 2^63-1), statuses, repository ids (real and invented) and names
//! (`evil-ns/evil-repo`, `../..`, another real repository's), with the attacker's own repository
//! labels and `system` object. The pipeline answers them 2xx, 401 or 500 and does not take
//! them into its view. Each case runs in one `signature_mode` (`off`: no secret, every webhook
//! a hint; `monitor`/`enforce`: drone's webhooks signed).
//!
//! After the fault phase one last build per repository is delivered without loss, so every
//! build whose webhooks were all lost has a later build of its repository (the filter finds
//! those by their number, `max_gap_fill`); then the run goes on until everything settled.
//!
//! `CHAOS_SCALE=<n>` multiplies the builds and the length of the fault phase (same rate) for
//! benchmarks ([`scale`]). Every run prints its figures ([`summarize`]).

use crate::setup::*;
use crate::upstreams::{Drone, Faults, Pipeline, SharedDrone, SharedPipeline};
use crate::{CallRequest, Host, UpstreamReply, CANARY};
use drone_model::lifecycle::Act;
use drone_model::outcome::{CHAOS, TEARDOWN};
use drone_model::store::Store;
use drone_model::workload::{acts, gap_filled, Timeline};
use drone_model::{Hook, Outcome, Rng, Shape};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

// ------------------------------------------------------------------------------ the knobs

/// Repositories (`octocat/repo-1` … `repo-6`).
const REPOS: u64 = 6;
/// Worker VMs (webhooks land on those); the host adds the main-thread VM.
const WORKERS: usize = 2;
/// Default ledger capacity: far above the builds open at once (a few hundred).
pub const LEDGER_CAP: usize = 10_000;
/// Bound on every VM's linear memory. The ledger is under 200 B per tracked build (a few
/// hundred here: < 0.1 MiB), the repository cache ~1.2 KB per repository, the queue backlog
/// of a leaderless second a few hundred small messages, webhook bodies are copied up to
/// `max_body_bytes` per stream (one stream at a time per VM here), and the allocator keeps its
/// high-water mark: a few MiB is what the filter needs; 16 MiB means something grows without
/// bound.
pub const MEMORY_BOUND: usize = 16 << 20;
/// Live webhooks the pipeline answers 5xx/reset/timeout outside its outage (re-deliveries:
/// 5% 5xx/connect failure/timeout, 2% refused with 422, final: `upstreams::Pipeline`).
const LIVE_PIPELINE_FAULT: f64 = 0.03;
const DUPLICATE: f64 = 0.03;
const REORDER: f64 = 0.05;
/// Share of normal builds whose `build:created` reaches the sidecar after the first step.
const CREATED_LATE: f64 = 0.10;
/// The plugin's `tick_ms`.
const TICK_MS: u64 = 100;

/// The plugin configuration of every run: short timings (tick 100 ms, stale after 2 s, polls
/// every 16 s at most, lease 1 s, circuit open 2 s), call timeout 2 s so slow drone answers
/// sometimes become Envoy's 504; the keys of `mode` (the secret comes from `HOOK_SECRET`, see
/// `Sim::new`). `equivalent`: changed but equivalent (defaults spelled out), a config update
/// that must not lose anything.
fn chaos_config(max_tracked: usize, mode: &str, equivalent: bool) -> String {
    let same = r#","max_repos":1024,"max_gap_fill":20,"instance":"default""#;
    let mode = match mode {
        "off" => String::new(),
        m => format!(r#","webhook_secret_env":"HOOK_SECRET","signature_mode":"{m}""#),
    };
    plugin_config(&format!(
        r#","max_inflight_calls":12,"max_drone_calls_per_sec":200,"call_timeout_ms":2000,"max_tracked_builds":{max_tracked}{}{mode}"#,
        if equivalent { same } else { "" }
    ))
}

/// Marks every byte the attacker chooses: no re-delivery may carry it.
const EVIL: &str = "evil";

pub fn scale() -> u64 {
    std::env::var("CHAOS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v >= 1)
        .unwrap_or(1)
}

// ------------------------------------------------------------------------------ the run

/// One run: its name and seed, how many builds, the webhook loss, the ledger's cap, the
/// `signature_mode`, and whether an attacker forges webhooks.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub seed: u64,
    pub builds: u64,
    pub loss: f64,
    pub max_tracked: usize,
    /// `signature_mode`: `off`, `monitor` or `enforce`.
    pub mode: &'static str,
    /// Forged webhooks beside drone's.
    pub attack: bool,
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Drone { build: usize, act: Act },
    Arrive { hook: usize },
    KillLeader,
    Reload { vm: usize },
    Reconfigure { equivalent: bool },
    DroneOutage(bool),
    PipelineOutage(bool),
    EndOfFaults,
    Forge,
}

/// Everything the run observed, for assertions and the summary.
#[derive(Default)]
pub struct Report {
    /// The pipeline as the run left it: its view, re-deliveries and what went wrong
    /// (`violations`, `races` of filter issue 1, `refused_again`, `tainted`).
    pub pipeline: Pipeline,
    /// Drone as the run left it: its builds, the calls it received and faulted, the lookups
    /// under a name it does not have (`store.calls.steered`).
    pub drone: Drone,
    pub webhooks_sent: u64,
    pub webhooks_lost: u64,
    pub webhooks_duplicated: u64,
    pub webhooks_reordered: u64,
    pub webhooks_to_dead_vm: u64,
    pub webhooks_arrived: u64,
    pub live_pipeline_faults: u64,
    pub recovered: u64,
    pub recovery_ms: Vec<u64>,
    pub converged: u64,
    pub unconverged: Vec<String>,
    pub legit_unknowable: Vec<String>,
    pub terminal_rewrites_missed: Vec<String>,
    pub missed_below_baseline: Vec<String>,
    pub forged_sent: u64,
    pub forged_rejected: u64,
    /// Forged webhooks the filter let through to the pipeline (not `enforce`).
    pub forged_passed: u64,
    /// Builds whose final version the pipeline refused: its decision, not a loss.
    pub refused_final: u64,
    pub kills: Vec<usize>,
    pub reconfigures: u64,
    pub max_memory: usize,
    pub virtual_ms: u64,
    pub metrics: BTreeMap<String, i64>,
    pub kinds: BTreeMap<String, u64>,
    pub wall_ms: u128,
}

/// One run in progress ([`Sim::new`], [`Sim::run`]).
pub struct Sim {
    case: Case,
    host: Host,
    drone: SharedDrone,
    pipeline: SharedPipeline,
    /// Every webhook drone sent (its build's index, and the webhook frozen at send time).
    hooks: Vec<(usize, Hook)>,
    events: Timeline<Ev>,
    /// Builds whose `build:created` arrives after their first step webhook: when that is.
    late: BTreeMap<usize, u64>,
    /// Workload (what drone does), deliveries (loss/dup/reorder/VM), live pipeline answers.
    work: Rng,
    net: Rng,
    live: Rng,
    attacker: Rng,
    faults: bool,
    /// (time, repo, number) of every webhook that reached a live filter, and the times a new
    /// reconciler took over (start, leader kills, config reloads): to tell which builds the
    /// filter could find by number.
    arrivals: Vec<(u64, u64, u64)>,
    epochs: Vec<u64>,
    report: Report,
}

impl Sim {
    pub fn new(case: Case) -> Self {
        let mut cfg = signed_host_config(WORKERS, "");
        cfg.plugin_config = chaos_config(case.max_tracked, case.mode, false);
        cfg.seed = case.seed;
        cfg.log_level = 2; // info and up: the run makes millions of debug lines otherwise
        let mut host = Host::start(cfg).expect("host starts");
        let mut store = Store::new();
        store.repos = Some(REPOS);
        // Drone (`drone_model::workload`: its builds, their rows in the store the API answers
        // from) and the pipeline, behind the faults and the outages of the run.
        let drone = Rc::new(RefCell::new(Drone::new(store)));
        drone.borrow_mut().faults = Faults::random(Rng::stream(case.seed, 3));
        let d = drone.clone();
        host.set_responder("drone", move |req: &CallRequest, now: u64| {
            assert_eq!(
                req.header("authorization"),
                Some(format!("Bearer {TOKEN}").as_str()),
                "drone is called with the token"
            );
            let mut d = d.borrow_mut();
            let answer = d.answer(req, now);
            assert!(
                d.store.calls.unrouted.is_empty(),
                "unexpected drone call {}",
                req.path()
            );
            answer
        });
        let pipeline = Rc::new(RefCell::new(Pipeline {
            faults: Faults::random(Rng::stream(case.seed, 4)),
            race_ms: TICK_MS,
            ..Pipeline::new()
        }));
        let (p, signed) = (pipeline.clone(), case.mode != "off");
        host.set_responder("pipeline", move |req: &CallRequest, now: u64| {
            let mut p = p.borrow_mut();
            // No re-delivery carries the attacker's bytes, and with a secret each is signed.
            if String::from_utf8_lossy(&req.body).contains(EVIL)
                || (signed && req.header("signature").is_none())
            {
                p.tainted.push(format!(
                    "signed {:?}: {}",
                    req.header("signature").is_some(),
                    String::from_utf8_lossy(&req.body)
                ));
            }
            let v: Value = serde_json::from_slice(&req.body).expect("re-delivery is JSON");
            let rid = v["repo"]["id"].as_u64().expect("repo.id");
            assert_eq!(v["repo"]["slug"], format!("octocat/repo-{}", rid - 100));
            p.answer(req, now)
        });
        Sim {
            work: Rng::stream(case.seed, 1),
            net: Rng::stream(case.seed, 2),
            live: Rng::stream(case.seed, 5),
            attacker: Rng::stream(case.seed, 6),
            case,
            host,
            drone,
            pipeline,
            hooks: Vec::new(),
            events: Timeline::default(),
            late: BTreeMap::new(),
            faults: true,
            arrivals: Vec::new(),
            epochs: Vec::new(),
            report: Report::default(),
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.events.at(t, ev);
    }

    fn now(&self) -> u64 {
        self.host.now_ms()
    }

    /// Creates a build of `repo` at `t` with a lifecycle of the given kind (or a random one).
    fn plan_build(&mut self, t: u64, repo: u64, kind: Option<Outcome>) {
        let w = &mut self.work;
        let kind = kind.unwrap_or_else(|| {
            let roll = (w.unit() * 100.0) as u64;
            Outcome::draw(&CHAOS, roll).unwrap_or(Outcome::ConfigError)
        });
        *self
            .report
            .kinds
            .entry(format!("{kind:?}").to_lowercase())
            .or_default() += 1;
        // Time in pending: mostly short, sometimes minutes (busy runners, blocked stages).
        let pending = {
            let r = w.unit();
            if r < 0.70 {
                w.range(300, 10_000)
            } else if r < 0.95 {
                w.range(10_000, 120_000)
            } else {
                w.range(120_000, 480_000)
            }
        };
        let duration = w.log_range(5_000, 20 * 60_000);
        let final_status = w.pick(&TEARDOWN);
        let acts = acts(kind, t, (pending, duration), final_status, w);
        let idx = self.drone.borrow_mut().d.add(repo, kind, t);
        if kind == Outcome::Success && w.chance(CREATED_LATE) {
            let first_step = acts.iter().find(|(_, a)| *a == Act::Step);
            self.late.extend(first_step.map(|(at, _)| (idx, *at)));
        }
        for (at, act) in acts {
            self.at(at, Ev::Drone { build: idx, act });
        }
    }

    /// What drone does to a build (`Row` decides; the workload's stream draws drone's races).
    fn drone_act(&mut self, b: usize, act: Act) {
        let (now, w) = (self.now(), &mut self.work);
        let hook = self
            .drone
            .borrow_mut()
            .act(b, act, now, &mut |p| w.chance(p));
        if let Some(hook) = hook {
            self.send(b, hook);
        }
    }

    /// Drone sends a webhook once: it may be lost, duplicated or delayed on the way.
    fn send(&mut self, b: usize, hook: Hook) {
        let now = self.now();
        self.report.webhooks_sent += 1;
        let late_created = (self.late.get(&b).copied()).filter(|_| hook.shape == Shape::Created);
        if self.faults && self.net.chance(self.case.loss) {
            self.report.webhooks_lost += 1;
            return;
        }
        let id = self.hooks.len();
        self.hooks.push((b, hook));
        let mut delay = 0;
        if let Some(first) = late_created {
            // The runner's first step webhook overtakes `build:created` (§1.4).
            delay = first.saturating_sub(now) + self.net.range(20, 500);
        } else if self.faults && self.net.chance(REORDER) {
            self.report.webhooks_reordered += 1;
            delay = self.net.range(200, 15_000);
        }
        self.at(now + delay, Ev::Arrive { hook: id });
        if self.faults && self.net.chance(DUPLICATE) {
            self.report.webhooks_duplicated += 1;
            let again = now + delay + self.net.range(0, 5_000);
            self.at(again, Ev::Arrive { hook: id });
        }
    }

    /// A webhook reaches Envoy on a random worker and goes through the filter to the pipeline.
    fn arrive(&mut self, id: usize) {
        let (b, hook) = self.hooks[id];
        let d = self.drone.borrow();
        let (repo, number) = d.builds[b].key();
        let body = (d.store.bodies).hook(hook.shape, (repo, number), hook.status, hook.version);
        drop(d);
        let vm = self.net.range(0, WORKERS as u64 - 1) as usize;
        let answer = if self.pipeline.borrow().faults.outage {
            UpstreamReply::status(503)
        } else if self.faults && self.live.chance(LIVE_PIPELINE_FAULT) {
            match self.live.range(0, 4) {
                0 => UpstreamReply::status(500),
                1 => UpstreamReply::status(502),
                2 => UpstreamReply::status(503),
                3 => UpstreamReply::Reset,
                _ => UpstreamReply::Timeout,
            }
        } else {
            UpstreamReply::status(200)
        };
        let acked = matches!(answer, UpstreamReply::Response { status: 200, .. });
        let reached = !matches!(answer, UpstreamReply::Reset);
        let (p, sent, now) = (self.pipeline.clone(), body.clone(), self.now());
        let key = (repo_id(repo), number);
        let expect = match &answer {
            UpstreamReply::Response { status, .. } => *status,
            UpstreamReply::Reset => 503,
            UpstreamReply::Timeout => 504,
        };
        let req = if self.case.mode == "off" {
            hook_request(body)
        } else {
            signed_hook_request(body, now)
        };
        let out = self
            .host
            .request(vm, req, move |up| {
                assert_eq!(
                    up.body, sent,
                    "the filter passes webhooks through unchanged"
                );
                if reached {
                    p.borrow_mut()
                        .receive(key, hook.status, hook.version, now, acked, false);
                }
                answer
            })
            .expect("request");
        if out.upstream.is_none() {
            // A dead worker VM: Envoy answers 503 itself (fail closed); drone does not retry.
            assert!(
                self.host.dead_vms().contains(&vm),
                "only a dead VM stops a webhook"
            );
            assert_eq!(out.status, 503);
            self.report.webhooks_to_dead_vm += 1;
            return;
        }
        assert_eq!(out.status, expect, "the pipeline's answer reaches drone");
        if !acked {
            self.report.live_pipeline_faults += 1;
        }
        self.report.webhooks_arrived += 1;
        self.drone.borrow_mut().builds[b].arrived += 1;
        self.arrivals.push((self.now(), repo, number));
    }

    /// The attacker: one forged webhook (see the module doc), unsigned, through a random
    /// worker. The pipeline answers it as it likes but keeps none of it.
    fn forge(&mut self) {
        let a = &mut self.attacker;
        let repo = a.range(1, REPOS);
        let real_max = self.drone.borrow().last_number(repo);
        let top = i64::MAX as u64;
        let number = match a.range(0, 2) {
            0 => a.range(1, real_max + 3),
            1 => 101 + 1000 * a.range(1, 1000),
            _ => a.range(1, top),
        };
        let version = if a.chance(0.5) {
            a.range(1, 8)
        } else {
            a.range(1, top)
        };
        let status = a.pick(&[
            "pending", "running", "success", "failure", "killed", "error",
        ]);
        let forged = (self.drone.borrow().store.bodies).hook(
            Shape::Updated,
            (repo, number),
            status,
            version,
        );
        let mut v: Value = serde_json::from_slice(&forged).unwrap();
        let (ns, name) = match a.range(0, 2) {
            0 => ("evil-ns".to_string(), "evil-repo".to_string()),
            1 => ("..".to_string(), "..".to_string()),
            // Another real repository's name with this id.
            _ => ("octocat".to_string(), format!("repo-{}", a.range(1, REPOS))),
        };
        if a.chance(0.2) {
            // A repository drone does not have at all.
            v["repo"]["id"] = (1_000 + a.range(0, 50)).into();
        }
        v["repo"]["namespace"] = ns.into();
        v["repo"]["name"] = name.into();
        v["repo"]["slug"] = format!("{EVIL}/slug").into();
        v["repo"]["link"] = format!("https://{EVIL}.example/repo").into();
        v["repo"]["build"] = v["build"].clone();
        v["system"] = json!({"proto":"https","host":format!("{EVIL}.example"),"link":format!("https://{EVIL}.example"),"version":"6.6.6"});
        let body = serde_json::to_vec(&v).unwrap();
        let answer = match a.range(0, 2) {
            0 => UpstreamReply::status(200),
            1 => UpstreamReply::status(401),
            _ => UpstreamReply::status(500),
        };
        let vm = a.range(0, WORKERS as u64 - 1) as usize;
        self.report.forged_sent += 1;
        let out = self
            .host
            .request(vm, hook_request(body), move |_| answer)
            .expect("request");
        if self.case.mode == "enforce" && !self.host.dead_vms().contains(&vm) {
            assert_eq!(out.status, 401, "enforce: forged webhooks get 401");
            assert!(out.upstream.is_none(), "and never reach the pipeline");
        }
        if out.upstream.is_some() {
            self.report.forged_passed += 1;
        } else if out.status == 401 {
            self.report.forged_rejected += 1;
        }
    }

    /// The reconciler is whichever VM made the latest call.
    fn leader(&self) -> Option<usize> {
        let live = self.host.live_vms();
        self.host
            .calls()
            .iter()
            .rev()
            .find(|c| c.vm != CANARY)
            .map(|c| c.vm)
            .filter(|vm| live.contains(vm))
    }

    fn sample_memory(&mut self) {
        for vm in 0..self.host.vm_count() {
            self.report.max_memory = self.report.max_memory.max(self.host.memory_bytes(vm));
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Drone { build, act } => self.drone_act(build, act),
            Ev::Arrive { hook } => self.arrive(hook),
            Ev::KillLeader => {
                if let Some(vm) = self.leader() {
                    self.host.kill_vm(vm);
                    self.report.kills.push(vm);
                    self.epochs.push(self.now());
                    let back = self.now() + self.work.range(5_000, 20_000);
                    self.at(back, Ev::Reload { vm });
                }
            }
            Ev::Reload { vm } => self.host.reload_vm(vm).expect("reload"),
            Ev::Reconfigure { equivalent } => {
                let cfg = chaos_config(self.case.max_tracked, self.case.mode, equivalent);
                self.host.reconfigure(&cfg).expect("config accepted");
                self.report.reconfigures += 1;
                self.epochs.push(self.now());
            }
            Ev::Forge => {
                if self.faults {
                    self.forge();
                }
            }
            Ev::DroneOutage(on) => self.drone.borrow_mut().faults.outage = on,
            Ev::PipelineOutage(on) => self.pipeline.borrow_mut().faults.outage = on,
            Ev::EndOfFaults => {
                self.faults = false;
                for f in [
                    &mut self.drone.borrow_mut().faults,
                    &mut self.pipeline.borrow_mut().faults,
                ] {
                    (f.on, f.outage) = (false, false);
                }
                // One last build per repository, delivered without loss: every earlier build
                // now has a later one (that is how the filter finds builds it never saw).
                let t = self.now() + 1_000;
                for repo in 1..=REPOS {
                    self.plan_build(t + repo * 100, repo, Some(Outcome::Success));
                }
            }
        }
    }

    fn run_events(&mut self) {
        let mut handled = 0u64;
        while let Some((t, ev)) = self.events.next_before(u64::MAX) {
            let now = self.now();
            if t > now {
                self.host.advance(t - now).expect("advance");
            }
            self.handle(ev);
            handled += 1;
            if handled % 1024 == 0 {
                self.sample_memory();
            }
        }
    }

    /// The whole run: the workload, the fault schedule, the drain; what it observed, and the
    /// host as it ended.
    pub fn run(mut self) -> (Report, Host) {
        let started = std::time::Instant::now();
        let t0 = self.now();
        self.epochs.push(t0);
        let sc = scale();
        let fault_ms = 20 * 60_000 * sc;
        let n = self.case.builds * sc;
        // Builds at random times over the fault phase, in every repository.
        let mut times: Vec<u64> = (0..n)
            .map(|_| t0 + 1_000 + self.work.range(0, fault_ms - 2_000))
            .collect();
        times.sort_unstable();
        for t in times {
            let repo = self.work.range(1, REPOS);
            self.plan_build(t, repo, None);
        }
        // The fault schedule (fractions of the fault phase).
        let f = |x: f64| t0 + (fault_ms as f64 * x) as u64;
        let mut kill_at = 0.17;
        while kill_at < 1.0 {
            self.at(f(kill_at), Ev::KillLeader);
            kill_at += 0.33;
        }
        self.at(f(0.30), Ev::DroneOutage(true));
        self.at(f(0.30) + 90_000, Ev::DroneOutage(false));
        self.at(f(0.45), Ev::Reconfigure { equivalent: true });
        self.at(f(0.60), Ev::PipelineOutage(true));
        self.at(f(0.60) + 120_000, Ev::PipelineOutage(false));
        self.at(f(0.80), Ev::Reconfigure { equivalent: false });
        self.at(t0 + fault_ms, Ev::EndOfFaults);
        if self.case.attack {
            // About one forged webhook every 3 s of the fault phase.
            for _ in 0..fault_ms / 3_000 {
                let t = t0 + 1_000 + self.attacker.range(0, fault_ms - 2_000);
                self.at(t, Ev::Forge);
            }
        }
        self.run_events();

        // Everything drone does is done; give the filter time until it has nothing left to
        // do (at most 10 minutes), then some more to see nothing moves backwards.
        let deadline = self.now() + 10 * 60_000;
        while self.now() < deadline {
            self.host.advance(5_000).expect("advance");
            if metric(&self.host, "builds_tracked") == 0
                && metric(&self.host, "calls_inflight") == 0
            {
                break;
            }
        }
        self.host.advance(60_000).expect("advance");
        self.sample_memory();
        self.report.virtual_ms = self.now() - t0;
        self.finish();
        self.report.wall_ms = started.elapsed().as_millis();
        (self.report, self.host)
    }

    fn finish(&mut self) {
        let r = &mut self.report;
        let d = std::mem::take(&mut *self.drone.borrow_mut());
        let builds = &d.builds;
        let p = std::mem::take(&mut *self.pipeline.borrow_mut());
        // Newest build number of each repository the filter saw a webhook of.
        let mut newest_seen: BTreeMap<u64, u64> = BTreeMap::new();
        for b in builds.iter().filter(|b| b.arrived > 0) {
            let e = newest_seen.entry(b.repo).or_insert(0);
            *e = (*e).max(b.number);
        }
        let gap_filled = gap_filled(&self.arrivals, &self.epochs, 20);
        for b in builds {
            let key = (repo_id(b.repo), b.number);
            let have = p.view.get(&key);
            if have == Some(&(b.row.status.to_string(), b.row.version)) {
                r.converged += 1;
                // How the final state got there: live (2xx) or re-delivered, and how long
                // after drone wrote it.
                let first = p.log.get(&key).and_then(|l| {
                    l.iter()
                        .filter(|d| d.acked && d.version >= b.row.version)
                        .min_by_key(|d| d.at)
                });
                if let Some(d) = first.filter(|d| d.redelivery) {
                    r.recovered += 1;
                    r.recovery_ms.push(d.at.saturating_sub(b.last_write_ms()));
                }
                continue;
            }
            if p.refused
                .get(&key)
                .is_some_and(|v| v.contains(&b.row.version))
            {
                r.refused_final += 1;
                continue;
            }
            let what = format!(
                "build {}/{} ({:?}): drone {} v{}, pipeline {:?}, {} webhooks sent, {} reached the filter",
                b.repo, b.number, b.outcome, b.row.status, b.row.version, have, b.sent, b.arrived
            );
            let rewrite_missed = have.is_some_and(|(status, version)| {
                status == b.row.status && b.row.first_done_version.is_some_and(|v| *version >= v)
            });
            if rewrite_missed {
                // Terminal and delivered, then drone wrote the same terminal status again (a
                // teardown after a cancel) and that webhook was lost: the filter forgets a
                // build once its terminal state is delivered, so it cannot see this write.
                r.terminal_rewrites_missed.push(what);
            } else if b.arrived == 0 && newest_seen.get(&b.repo).is_none_or(|n| *n < b.number) {
                r.legit_unknowable.push(what);
            } else if b.arrived == 0 && !gap_filled.contains(&(b.repo, b.number)) {
                // A later build arrived, but only below a reconciler's first sight of the
                // repository (`drone_model::workload::gap_filled`): a filter issue, counted on its own.
                r.missed_below_baseline.push(what);
            } else {
                r.unconverged.push(what);
            }
        }
        (r.pipeline, r.drone) = (p, d);
        r.recovery_ms.sort_unstable();
        r.metrics = self
            .host
            .metrics()
            .into_iter()
            .filter(|(k, _)| k.starts_with("status_sync."))
            .map(|(k, v)| (k.trim_start_matches("status_sync.").to_string(), v))
            .collect();
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn summarize(case: &Case, r: &Report) {
    let m = |k: &str| r.metrics.get(k).copied().unwrap_or(0);
    let p50 = percentile(&r.recovery_ms, 0.50);
    let p99 = percentile(&r.recovery_ms, 0.99);
    let max = r.recovery_ms.last().copied().unwrap_or(0);
    println!(
        "chaos {} (seed {:#x}, loss {:.0}%, signature_mode {}, attacker {}, scale {}, ledger {}): {} builds {:?}",
        case.name,
        case.seed,
        case.loss * 100.0,
        case.mode,
        case.attack,
        scale(),
        case.max_tracked,
        r.drone.builds.len(),
        r.kinds
    );
    println!(
        "  webhooks: {} sent, {} lost, {} duplicated, {} reordered, {} hit a dead VM, {} reached the filter, {} answered 5xx/reset/timeout by the pipeline",
        r.webhooks_sent,
        r.webhooks_lost,
        r.webhooks_duplicated,
        r.webhooks_reordered,
        r.webhooks_to_dead_vm,
        r.webhooks_arrived,
        r.live_pipeline_faults
    );
    println!(
        "  drone: {} API calls ({} faulted); re-deliveries: {} reached the pipeline, {} acknowledged, {} faulted, {} refused (4xx; counted by the filter: {}); {} builds' final version refused",
        r.drone.calls.len(),
        r.drone.faults.injected,
        r.pipeline.redeliveries,
        r.pipeline.redeliveries_acked,
        r.pipeline.redeliveries_faulted,
        r.pipeline.redeliveries_refused,
        m("redeliveries_refused"),
        r.refused_final
    );
    println!(
        "  converged {}/{}; final state recovered by re-delivery {} (delay p50 {} ms, p99 {} ms, max {} ms)",
        r.converged,
        r.drone.builds.len(),
        r.recovered, p50, p99, max
    );
    println!(
        "  not converged: unknowable {}, terminal rewrites missed {}, missed below a new reconciler's baseline {}, other {}; re-deliveries older than acknowledged: {} racing a live webhook, {} other",
        r.legit_unknowable.len(),
        r.terminal_rewrites_missed.len(),
        r.missed_below_baseline.len(),
        r.unconverged.len(),
        r.pipeline.races.len(),
        r.pipeline.violations.len()
    );
    println!(
        "  leader kills {:?}, config reloads {}, leader changes {}, gap-filled {}, giveups {} (evicted {}, expired {}, not found {}), max memory {} KiB, virtual {} s, wall {} ms",
        r.kills,
        r.reconfigures,
        m("leader_changes"),
        m("builds_gap_filled"),
        m("giveups"),
        m("builds_evicted"),
        m("builds_expired"),
        m("builds_not_found"),
        r.max_memory / 1024,
        r.virtual_ms / 1000,
        r.wall_ms
    );
    println!(
        "  attacker: {} forged webhooks, {} reached the pipeline; hints refuted {}; build lookups under an attacker's name {}; re-deliveries with attacker bytes {}",
        r.forged_sent,
        r.forged_passed,
        m("hints_refuted"),
        r.drone.store.calls.steered.len(),
        r.pipeline.tainted.len()
    );
}
