//! Property tests of the reconciler: random interleavings of drone's writes, live webhooks (lost,
//! late, duplicated, answered 2xx/4xx/5xx by the pipeline), ticks, and answers to the calls the
//! reconciler made (good, stale, 5xx, reset, never), against a model of drone and the pipeline.
//!
//! Invariants, checked after every step:
//! - never older after newer: a re-delivery carries a version newer than every version the
//!   reconciler was told the pipeline has (acknowledged or refused, by a verified webhook or its
//!   own re-delivery), and never older than one an unverified webhook said the pipeline has
//!   (a hint cannot suppress a re-delivery: at least once);
//! - calls within budget and rate: in-flight calls within `max_inflight_calls`; build lookups
//!   within the token bucket (`max_drone_calls_per_sec`, one second's burst) over every window;
//! - bounded memory: tracked builds within `max_tracked_builds`, every drop counted;
//!
//! and once faults stop (drone truthful and prompt, the pipeline answering 2xx), convergence:
//! every build the reconciler heard of reaches drone's final version in the pipeline, and the
//! ledger empties.
//!
//! Seeds vary with every run (proptest's default). A failure prints the minimal failing input
//! (the reconciler's seed and the list of steps), and proptest stores its seed in
//! `reconciler_props.proptest-regressions` beside this file, replayed first on the next run; set
//! `PROPTEST_RNG_SEED` to replay a whole run, `PROPTEST_CASES` for more cases (default 64 here,
//! to keep CI quick).

#![allow(clippy::indexing_slicing)]

mod common;

use common::*;
use proptest::prelude::*;
use status_sync::core::model::{BuildStatus, DeliveryOutcome};
use status_sync::core::observation::Observation;
use status_sync::core::reconciler::{CallResult, OutgoingCall, Reconciler};
use std::collections::BTreeMap;

/// Builds per case (numbers 1..=BUILDS of one repository).
const BUILDS: u64 = 6;
const RATE: u64 = 3;
const INFLIGHT: usize = 2;

fn settings(max_tracked: usize) -> String {
    format!(
        r#","max_inflight_calls":{INFLIGHT},"max_drone_calls_per_sec":{RATE},"call_timeout_ms":1000,"circuit_failure_threshold":3,"max_tracked_builds":{max_tracked},"max_gap_fill":0"#
    )
}

/// One step of a run. Indexes are taken modulo the current list's length.
#[derive(Clone, Debug)]
enum Step {
    /// Drone writes build `build` (created pending v1, then running, then a final status);
    /// `webhook` whether the write sends one (setup sends none).
    Drone {
        build: u64,
        finish: Option<u8>,
        webhook: bool,
    },
    /// A sent webhook reaches the filter; the pipeline answers it `outcome` (0 2xx, 1 4xx, 2
    /// 5xx); `again` keeps it for a duplicate; `repo` whether it carries the repository JSON;
    /// `verified` whether its signature verified (drone's genuine webhook either way: false
    /// stands for `signature_mode` off, where every webhook is a hint).
    Arrive {
        hook: usize,
        outcome: u8,
        again: bool,
        repo: bool,
        verified: bool,
    },
    /// A sent webhook is lost.
    Lose {
        hook: usize,
    },
    Tick {
        ms: u64,
    },
    /// Answers a pending call: drone 0 truth now, 1 what drone had when called (slow), 2 503,
    /// 3 reset; the pipeline 0 2xx, 1 422, 2 503, 3 reset.
    Answer {
        call: usize,
        how: u8,
    },
    /// A call's answer never comes (the reconciler expires it).
    Drop {
        call: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1..=BUILDS, prop::option::weighted(0.3, 0..4u8), prop::bool::weighted(0.8))
            .prop_map(|(build, finish, webhook)| Step::Drone { build, finish, webhook }),
        3 => (any::<usize>(), prop::sample::select(vec![0u8, 0, 0, 1, 2]), prop::bool::weighted(0.1), prop::bool::weighted(0.8), prop::bool::weighted(0.7))
            .prop_map(|(hook, outcome, again, repo, verified)| Step::Arrive { hook, outcome, again, repo, verified }),
        1 => any::<usize>().prop_map(|hook| Step::Lose { hook }),
        3 => prop_oneof![0..300u64, 300..3000u64].prop_map(|ms| Step::Tick { ms }),
        4 => (any::<usize>(), prop::sample::select(vec![0u8, 0, 1, 2, 3]))
            .prop_map(|(call, how)| Step::Answer { call, how }),
        1 => any::<usize>().prop_map(|call| Step::Drop { call }),
    ]
}

#[derive(Clone, Debug)]
struct Hook {
    number: u64,
    status: &'static str,
    version: u64,
}

const FINALS: [&str; 4] = ["success", "failure", "killed", "error"];

/// Drone, the pipeline and what the reconciler was told, as the test sees them.
struct Model {
    r: Reconciler,
    now: u64,
    max_tracked: usize,
    /// Check "never older after newer" (off when evictions make the reconciler forget).
    strict_order: bool,
    /// number → (status, version): drone's database.
    drone: BTreeMap<u64, (&'static str, u64)>,
    /// Webhooks sent and not yet arrived or lost.
    sent: Vec<Hook>,
    /// Calls made and not answered: (call, drone's state of the build when it was made).
    pending: Vec<(OutgoingCall, Option<(&'static str, u64)>)>,
    /// number → highest version the pipeline acknowledged or refused, as the reconciler was told
    /// by evidence (a verified webhook, or the pipeline's answer to its own re-delivery).
    told: BTreeMap<u64, u64>,
    /// number → highest version the pipeline acknowledged or refused, as only unverified
    /// webhooks told the reconciler (a hint, never evidence: it cannot suppress a re-delivery,
    /// so an equal version may go again, but never an older one).
    hinted: BTreeMap<u64, u64>,
    /// number → highest version the pipeline acknowledged or refused.
    pipeline: BTreeMap<u64, u64>,
    /// Builds the reconciler heard of (a webhook arrived).
    heard: std::collections::BTreeSet<u64>,
    /// When each build lookup was made.
    lookups: Vec<u64>,
}

impl Model {
    fn new(seed: u64, max_tracked: usize) -> Self {
        Model {
            r: Reconciler::new(config(&settings(max_tracked)), seed),
            now: 1_000_000,
            max_tracked,
            strict_order: true,
            drone: BTreeMap::new(),
            sent: Vec::new(),
            pending: Vec::new(),
            told: BTreeMap::new(),
            hinted: BTreeMap::new(),
            pipeline: BTreeMap::new(),
            heard: Default::default(),
            lookups: Vec::new(),
        }
    }

    /// The pipeline acknowledged or refused `version`; `heard` whether the reconciler hears of
    /// it (not when the answer comes after the reconciler gave the call up).
    fn tell(&mut self, number: u64, version: u64, heard: bool) {
        if heard {
            let v = self.told.entry(number).or_insert(0);
            *v = (*v).max(version);
        }
        let p = self.pipeline.entry(number).or_insert(0);
        *p = (*p).max(version);
    }

    /// Takes in calls the reconciler made, checking each.
    fn took(&mut self, calls: Vec<OutgoingCall>) -> Result<(), TestCaseError> {
        for call in calls {
            let state = looked_up(&call).and_then(|n| self.drone.get(&n).copied());
            if is_drone(&call) {
                if let Some(n) = looked_up(&call) {
                    prop_assert!(self.drone.contains_key(&n), "lookup of unknown build {n}");
                    self.lookups.push(self.now);
                }
            } else {
                let (number, _, version) = redelivered(&call);
                let told = self.told.get(&number).copied().unwrap_or(0);
                prop_assert!(
                    version > told || !self.strict_order,
                    "re-delivery of {number} v{version} after the pipeline had v{told}"
                );
                let hinted = self.hinted.get(&number).copied().unwrap_or(0);
                prop_assert!(
                    version >= hinted || !self.strict_order,
                    "re-delivery of {number} v{version} after the pipeline had v{hinted} (hint)"
                );
                let (_, truth) = self.drone[&number];
                prop_assert!(version <= truth, "a version drone never wrote");
            }
            self.pending.push((call, state));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert!(
            self.r.inflight() <= INFLIGHT,
            "in flight {}",
            self.r.inflight()
        );
        prop_assert!(self.r.ledger().len() <= self.max_tracked);
        let c = self.r.counters();
        prop_assert_eq!(
            c.giveups,
            c.builds_evicted + c.builds_expired + c.builds_not_found
        );
        // The token bucket: any run of lookups from i to j fits one second's burst plus the
        // rate over the time between them.
        let l = &self.lookups;
        for i in 0..l.len() {
            for j in i..l.len() {
                let allowed = RATE + RATE * (l[j] - l[i]) / 1000;
                prop_assert!(
                    (j - i + 1) as u64 <= allowed,
                    "{} lookups between {} and {}",
                    j - i + 1,
                    l[i],
                    l[j]
                );
            }
        }
        Ok(())
    }

    fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Drone {
                build,
                finish,
                webhook,
            } => {
                // Drone numbers a repository's builds in sequence: the numbers below a new
                // one exist too (created without a webhook reaching anyone).
                for below in 1..build {
                    self.drone.entry(below).or_insert(("pending", 1));
                }
                let next = match self.drone.get(&build) {
                    None => Some(("pending", 1)),
                    Some((s, _)) if BuildStatus::parse(s).is_done() => None,
                    Some((_, v)) => Some(match finish {
                        Some(f) => (FINALS[usize::from(f)], v + 1),
                        None => ("running", v + 1),
                    }),
                };
                if let Some((status, version)) = next {
                    self.drone.insert(build, (status, version));
                    if webhook {
                        self.sent.push(Hook {
                            number: build,
                            status,
                            version,
                        });
                    }
                }
            }
            Step::Arrive {
                hook,
                outcome,
                again,
                repo,
                verified,
            } => {
                if self.sent.is_empty() {
                    return Ok(());
                }
                let i = hook % self.sent.len();
                let h = if again {
                    self.sent[i].clone()
                } else {
                    self.sent.remove(i)
                };
                let outcome = match outcome {
                    0 => DeliveryOutcome::Delivered,
                    1 => DeliveryOutcome::Refused,
                    _ => DeliveryOutcome::NotDelivered,
                };
                if outcome != DeliveryOutcome::NotDelivered {
                    self.tell(h.number, h.version, verified);
                    if !verified {
                        let v = self.hinted.entry(h.number).or_insert(0);
                        *v = (*v).max(h.version);
                    }
                }
                self.heard.insert(h.number);
                self.r
                    .observe(observation(&h, outcome, repo, verified), self.now);
            }
            Step::Lose { hook } => {
                if !self.sent.is_empty() {
                    let i = hook % self.sent.len();
                    self.sent.remove(i);
                }
            }
            Step::Tick { ms } => {
                self.now += ms;
                let calls = self.r.tick(self.now);
                prop_assert!(calls.len() <= INFLIGHT);
                // Gauges are brought up to date by the tick (the shell exports them after it).
                prop_assert_eq!(
                    self.r.counters().builds_tracked,
                    self.r.ledger().len() as u64
                );
                self.took(calls)?;
            }
            Step::Answer { call, how } => {
                if self.pending.is_empty() {
                    return Ok(());
                }
                let (call, then) = self.pending.remove(call % self.pending.len());
                let answer = self.answer(&call, how, then);
                let more = self.r.on_response(call.id, answer, self.now);
                self.took(more)?;
            }
            Step::Drop { call } => {
                if !self.pending.is_empty() {
                    let i = call % self.pending.len();
                    self.pending.remove(i);
                }
            }
        }
        self.check()
    }

    fn answer(
        &mut self,
        call: &OutgoingCall,
        how: u8,
        then: Option<(&'static str, u64)>,
    ) -> CallResult {
        let live = self.r.is_inflight(call.id);
        if is_drone(call) {
            let Some(number) = looked_up(call) else {
                // The repository (its `counter`: the highest number drone allocated), or
                // the admin list of incomplete builds (drone's OSS build: 501).
                let counter = self.drone.keys().next_back().copied().unwrap_or(0);
                return match (how, call.header(":path")) {
                    (2, _) => http(503),
                    (3, _) => CallResult::Failed,
                    (_, Some("/api/repos/octocat/hello-world")) => {
                        ok(repo_json_with_counter(counter))
                    }
                    _ => http(501),
                };
            };
            let now = self.drone.get(&number).copied();
            match (how, then, now) {
                (1, Some((s, v)), _) | (0, _, Some((s, v))) => ok(api_build(number, s, v)),
                (2, _, _) => http(503),
                _ => CallResult::Failed,
            }
        } else {
            let (number, _, version) = redelivered(call);
            match how {
                0 => {
                    self.tell(number, version, live);
                    http(200)
                }
                1 => {
                    self.tell(number, version, live);
                    http(422)
                }
                2 => http(503),
                _ => CallResult::Failed,
            }
        }
    }

    /// Faults stop: every webhook still on its way is lost, drone finishes every build without
    /// a webhook, answers truthfully and at once, the pipeline acknowledges everything.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        self.sent.clear();
        self.pending.clear();
        let numbers: Vec<u64> = self.drone.keys().copied().collect();
        for n in numbers {
            let (s, v) = self.drone[&n];
            if !BuildStatus::parse(s).is_done() {
                self.drone.insert(n, ("success", v + 1));
            }
        }
        let end = self.now + 30 * 60_000;
        while self.now < end {
            self.now += 100;
            let calls = self.r.tick(self.now);
            self.took(calls)?;
            let mut answered = 0;
            while let Some((call, _)) = self.pending.pop() {
                answered += 1;
                prop_assert!(answered < 1000, "endless follow-up calls: {:?}", call);
                let answer = self.answer(&call, 0, None);
                let more = self.r.on_response(call.id, answer, self.now);
                self.took(more)?;
            }
            self.check()?;
        }
        Ok(())
    }
}

fn observation(h: &Hook, outcome: DeliveryOutcome, repo: bool, verified: bool) -> Observation {
    let mut o = obs(h.number, h.status, h.version, outcome);
    o.set_verified(verified);
    if !repo {
        o.webhook_mut().repo_json = None;
    }
    o
}

fn config_cases() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 64;
    }
    c
}

proptest! {
    #![proptest_config(config_cases())]

    /// With room for every build: the ordering, budget and rate invariants hold throughout,
    /// and once faults stop every build the reconciler heard of converges and is forgotten.
    #[test]
    fn reconciler_keeps_order_budget_and_converges(
        seed in any::<u64>(),
        steps in prop::collection::vec(step(), 1..120),
    ) {
        let mut m = Model::new(seed, 10_000);
        for s in &steps {
            m.apply(s)?;
        }
        m.settle()?;
        for n in &m.heard {
            let (_, truth) = m.drone[n];
            let has = m.pipeline.get(n).copied().unwrap_or(0);
            prop_assert_eq!(has, truth, "build {} did not converge", n);
        }
        prop_assert_eq!(m.r.ledger().len(), 0, "everything settled is forgotten");
        prop_assert_eq!(m.r.inflight(), 0);
        prop_assert_eq!(m.r.counters().giveups, 0);
        prop_assert_eq!(m.r.counters().circuit_open, 0);
    }

    /// A ledger far smaller than the builds: memory stays within the cap, every build not
    /// converged is a counted give-up, and re-deliveries stay within what drone wrote.
    #[test]
    fn reconciler_memory_is_bounded_and_drops_are_counted(
        seed in any::<u64>(),
        steps in prop::collection::vec(step(), 1..120),
    ) {
        let mut m = Model::new(seed, 2);
        // Evicted builds are forgotten: a later webhook may make the reconciler deliver again
        // what the pipeline has (at least once), so only "never beyond drone" is checked.
        m.strict_order = false;
        for s in &steps {
            m.apply(s)?;
        }
        m.settle()?;
        let unconverged = m
            .heard
            .iter()
            .filter(|n| m.pipeline.get(n).copied().unwrap_or(0) != m.drone[n].1)
            .count() as u64;
        prop_assert!(unconverged <= m.r.counters().giveups, "{} unconverged, {:?}", unconverged, m.r.counters());
        prop_assert!(m.r.ledger().len() <= 2);
    }
}
