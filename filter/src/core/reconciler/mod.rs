//! The reconciler: the one state machine the leader drives from its tick.
//!
//! Inputs: observations of live webhooks ([`Reconciler::observe`]), the tick
//! ([`Reconciler::tick`]) and the answers to calls it asked for ([`Reconciler::on_response`]).
//! Output: [`OutgoingCall`]s for the shell to dispatch. Time is always a parameter, randomness
//! comes from a seed, so every decision can be replayed in a test.
//!
//! Level-driven, like a Kubernetes controller: webhooks are the edge (fast path), the drone API
//! is the level. A build whose delivered state is stale is looked up; if drone is ahead of what
//! the pipeline has, drone's current state is delivered. Older versions are never delivered
//! after newer ones, because delivery always carries drone's newest state and is only attempted
//! when that is newer than what the pipeline acknowledged.
//!
//! Evidence and hints: an observation whose drone signature verified is evidence; any other
//! is a hint, since anyone who can reach the pipeline can send one. A hint only ever makes the
//! reconciler *ask drone*: it may add a build to look up (in its own share of the ledger and
//! its own lane of the rate limit) and records what it claims the pipeline answered, but that
//! claim settles nothing until drone's answer for the same build shows the same version and
//! status. Hints never finish or forget a build, never raise the gap-filling watermarks, never
//! name a repository drone has not confirmed (`GET /api/repos/{o}/{n}` answering the same id)
//! and never supply the `repo` or `system` object of a re-delivery.
//!
//! This file holds the state, the public API and the tick; each concern has its module:
//! [`observe`] (live webhooks: evidence and hints), [`lookup`] (due builds looked up in drone,
//! and drone's answers about them), [`redeliver`] (re-deliveries and their answers),
//! [`gaps`] (builds drone's numbering shows exist), [`discovery`] (repositories' `counter` and
//! `/api/builds/incomplete`), [`scan`] (listing `scan_repos`), [`calls`] (calls in flight and
//! their requests), [`budget`] (the circuit and the rate limit every drone call needs),
//! [`persist`] (snapshot shards and watermarks), [`vouch`] (evidence and hints as types).

mod budget;
mod calls;
mod discovery;
mod gaps;
mod lookup;
mod observe;
mod persist;
mod redeliver;
mod scan;
mod vouch;

pub use calls::{CallId, CallResult, OutgoingCall};

use super::backoff::{Circuit, Rng};
use super::config::Config;
use super::ledger::{Class, Entry, Lane, Ledger};
use super::logfmt;
use super::metrics::Counters;
use super::model::{BuildKey, BuildStatus, RepoRef};
use super::ratelog::LogLimiter;
use super::repos::{Idents, Vouch};
use super::slo::Slo;
use budget::Budget;
use calls::Calls;
use discovery::Sweeps;
use redeliver::Objects;

/// Version string sent as `user-agent`.
pub const USER_AGENT: &str = concat!("status-sync/", env!("CARGO_PKG_VERSION"));

/// Drone's ids, numbers and versions are int64: anything above is not drone's. The decoders
/// (webhook, queue, drone's answers, snapshot) refuse it; observations are checked again here
/// because `observe` is public.
const MAX_DRONE_INT: u64 = super::limits::MAX_INT;

pub struct Reconciler {
    cfg: Config,
    ledger: Ledger,
    idents: Idents,
    /// The `repo` and `system` objects re-deliveries carry.
    objects: Objects,
    rng: Rng,
    /// The circuit toward drone and the rate limits of the two lanes.
    budget: Budget,
    /// The calls on their way.
    calls: Calls,
    counters: Counters,
    /// Failing drone calls are logged at most once per 10 s.
    drone_log: LogLimiter,
    /// When each of `scan_repos` is listed next, and drone's list of incomplete builds.
    sweeps: Sweeps,
    /// The hint lane goes first in this tick.
    hint_first: bool,
    /// Transitions known missing and their recovery delays (the SLO metrics).
    slo: Slo,
    /// Appended to every log line: `instance=… reconciler=… epoch=…` ([`logfmt::identity`]).
    who: String,
}

impl Reconciler {
    pub fn new(cfg: Config, seed: u64) -> Self {
        let ledger = Ledger::new(
            cfg.max_tracked_builds,
            (cfg.max_tracked_builds / 8).clamp(64, 16_384),
        );
        let circuit = Circuit::new(
            cfg.circuit_failure_threshold,
            cfg.circuit_open_ms,
            cfg.max_poll_interval_ms,
        );
        Reconciler {
            budget: Budget::new(cfg.max_drone_calls_per_sec, circuit),
            objects: Objects::new(cfg.max_repos, cfg.drone_server_url.as_deref()),
            ledger,
            idents: Idents::new(cfg.max_repos),
            rng: Rng::new(seed),
            calls: Calls::new(cfg.max_inflight_calls),
            counters: Counters::default(),
            drone_log: LogLimiter::new(10_000),
            sweeps: Sweeps::new(cfg.scan_repos.len(), cfg.scan_interval_ms),
            slo: Slo::new(cfg.max_tracked_builds),
            who: String::new(),
            hint_first: false,
            cfg,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The fields that name this reconciler in its log lines.
    pub fn set_identity(&mut self, who: String) {
        self.who = who;
    }

    /// A build as logged: `build=acme/api#12` (the name only once drone confirmed it).
    #[inline(never)] // one copy in the module, not one per call site (BENCHMARKS.md, 7)
    fn build_field(&self, key: BuildKey) -> String {
        logfmt::build(self.repo_confirmed(key.repo_id), key.repo_id, key.number)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn inflight(&self) -> usize {
        self.calls.len()
    }

    pub fn is_inflight(&self, id: CallId) -> bool {
        self.calls.contains(id)
    }

    /// Whether drone (or evidence) confirmed `namespace/name` as repository `repo_id`'s name.
    pub fn repo_confirmed(&self, repo_id: u64) -> Option<(&str, &str)> {
        self.idents.confirmed_name(repo_id)
    }

    /// One tick: expire lost calls, then look up the builds that are due, within the in-flight
    /// budget, the rate limit and the circuit. Touches only due builds. The two lanes take
    /// turns, and lookups only hints asked for have half the rate at most: a flood of forged
    /// webhooks costs the other builds at most half the rate, and only when drone's rate is
    /// short anyway.
    pub fn tick(&mut self, now_ms: u64) -> Vec<OutgoingCall> {
        self.expire_calls(now_ms);
        let mut calls = Vec::new();
        self.scan(now_ms, &mut calls);
        // Which lane goes first alternates, so that under a short rate each gets its turn.
        self.hint_first = !self.hint_first;
        let lanes = if self.hint_first {
            [Lane::Hint, Lane::Main]
        } else {
            [Lane::Main, Lane::Hint]
        };
        let mut open = [true, true];
        while open.iter().any(|o| *o) {
            for (lane, more) in lanes.into_iter().zip(open.iter_mut()) {
                if *more {
                    *more = self.serve_one(lane, now_ms, &mut calls);
                }
            }
        }
        self.discover(now_ms, &mut calls);
        self.incomplete(now_ms, &mut calls);
        self.sync_gauges();
        self.sample_slo(now_ms);
        calls
    }

    /// Whether another call fits within `max_inflight_calls`.
    fn call_room(&self) -> bool {
        self.calls.has_room()
    }

    /// Updates the SLO gauges; builds no longer tracked (given up, finished) leave them here.
    pub fn sample_slo(&mut self, now_ms: u64) {
        let ledger = &self.ledger;
        let age_ms = self.slo.oldest_age_ms(now_ms, |k| ledger.contains(k));
        self.counters.oldest_undelivered_seconds = age_ms / 1000;
        self.counters.transitions_missing = self.slo.len() as u64;
        self.counters.transitions_lost = self.slo.lost;
        self.counters.transitions_recovered = self.slo.recovered;
        self.counters.slo_dropped = self.slo.delays_dropped;
    }

    /// Recovery delays (ms) measured since the last call, for the histogram.
    pub fn take_recovery_delays(&mut self) -> Vec<u64> {
        self.slo.take_delays()
    }

    /// Inserts a build; one given up to make room (or this one, refused) is counted.
    fn insert(&mut self, key: BuildKey, entry: Entry) {
        if let Some(gone) = self.ledger.insert(key, entry) {
            self.counters.builds_evicted += 1;
            log::warn!(
                "gave up: ledger full build={} max_tracked_builds={} unconfirmed_share={} {}",
                self.build_field(gone),
                self.ledger.cap(),
                self.ledger.share(),
                self.who
            );
        }
    }

    /// The gauges, and `giveups`: the sum of its causes, each counted where it happens.
    fn sync_gauges(&mut self) {
        let c = &mut self.counters;
        c.giveups = c.builds_evicted + c.builds_expired + c.builds_not_found;
        c.builds_tracked = self.ledger.len() as u64;
        c.builds_hint_only = self.ledger.count(Class::Hint) as u64;
        c.calls_inflight = self.calls.len() as u64;
        c.circuit_open = u64::from(self.budget.is_open());
    }

    /// Drone answered (whatever it said about the thing asked): the circuit closes.
    fn drone_answered(&mut self) {
        self.budget.on_success();
        self.counters.drone_polls_ok += 1;
    }

    /// A drone call failed for drone's sake (5xx, timeout, reset): counted, and fed to the
    /// circuit. True when this failure opened it.
    #[inline(never)] // one copy in the module, not one per call site (BENCHMARKS.md, 7)
    fn drone_down(&mut self, now_ms: u64) -> bool {
        self.counters.drone_polls_failed += 1;
        let opened = self.budget.on_failure(now_ms);
        if opened {
            self.counters.circuit_opens += 1;
        }
        opened
    }

    /// Drone itself named repository `repo.id` and gave its `repo` object: the name is
    /// confirmed in pool `vouch` (a call a hint asked for keeps it in the hints' pool), the
    /// object kept for re-deliveries.
    fn drone_named(&mut self, repo: &RepoRef, json: String, vouch: Vouch, now_ms: u64) {
        self.counters.repos_evicted += self.idents.confirm_as(repo, vouch, now_ms);
        self.objects.keep_repo(repo.id, json);
    }

    /// Whether drone says build `key` finished before this reconciler could have seen it:
    /// before it began watching the build's repository (or, for a repository inherited from
    /// a previous leader, `max_build_age_ms` ago), or before the build itself was first
    /// tracked (a snapshot's), with `max_clock_skew_ms` of slack between drone's clock and
    /// ours. Unknown times (`finished` 0 or absent) decide nothing.
    fn finished_unwatched(
        &self,
        key: BuildKey,
        first_seen_ms: u64,
        finished_s: u64,
        now_ms: u64,
    ) -> bool {
        if finished_s == 0 {
            return false;
        }
        let repo_since = self.idents.watch_since(key.repo_id);
        let since = match repo_since {
            Some(0) | None => now_ms.saturating_sub(self.cfg.max_build_age_ms),
            Some(t) => t,
        };
        let cutoff = since.min(first_seen_ms);
        let finished_ms = finished_s.saturating_mul(1000);
        finished_ms.saturating_add(self.cfg.max_clock_skew_ms) < cutoff
    }

    /// Counts a queue message that could not be decoded.
    pub fn invalid_observation(&mut self) {
        self.counters.observations_invalid += 1;
    }

    /// Counts a queue message that claimed a verified webhook without a valid tag (it is
    /// observed as a hint).
    pub fn unauthenticated_observation(&mut self) {
        self.counters.observations_unauthenticated += 1;
    }

    /// Counts a snapshot shard that could not be read or written.
    pub fn snapshot_error(&mut self) {
        self.counters.snapshot_errors += 1;
    }
}

/// Whether a delivered terminal status ends our interest in a build at once. `killed` does
/// not: after a cancel, drone's teardown may still rewrite the build (`killed` again, with a
/// higher version, drone's `operator/manager/teardown.go`) when the runner stops, and that webhook can be lost too. So a
/// cancelled build is looked at a few more times, at intervals growing from `stale_after_ms`,
/// and forgotten once drone reported no change for twice `max_poll_interval_ms`.
fn settles_for_good(status: BuildStatus) -> bool {
    status.is_done() && status != BuildStatus::Killed
}

/// A failure of drone or of the way to it (5xx; Envoy reports connect failures and timeouts as
/// 503/504), as opposed to an answer about the one thing asked (4xx).
fn is_transient(status: u16) -> bool {
    !(400..500).contains(&status) || status == 408 || status == 429
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}
