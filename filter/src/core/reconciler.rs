//! The reconciliation planner: the one state machine the leader drives from its tick.
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

use super::backoff::{failure_backoff, grow_interval, Circuit, Rng, TokenBucket};
use super::config::Config;
use super::drone_api::{self, ApiBuild};
use super::ledger::{Class, Entry, Lane, Ledger, NOT_SCHEDULED};
use super::logfmt::{self, Val};
use super::metrics::Counters;
use super::model::{BuildKey, BuildStatus, DeliveryOutcome, ParseError, RepoRef};
use super::observation::Observation;
use super::ratelog::{suppressed_note, LogLimiter};
use super::repos::{Idents, RepoJsonCache};
use super::signature;
use super::slo::Slo;
use super::snapshot::{self, Record};
use std::collections::HashMap;

/// Identifies a call the reconciler asked for; the shell maps host tokens to it.
pub type CallId = u64;

/// Version string sent as `user-agent`.
pub const USER_AGENT: &str = concat!("status-sync/", env!("CARGO_PKG_VERSION"));

/// A call for the shell to dispatch with `dispatch_http_call`. Its `Debug` shows the bearer
/// token and the signature headers as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingCall {
    pub id: CallId,
    pub cluster: String,
    /// Includes the `:method`, `:path` and `:authority` pseudo-headers.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// Headers whose values are secrets or derived from one.
const SECRET_HEADERS: &[&str] = &["authorization", "signature"];

impl std::fmt::Debug for OutgoingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let secret = SECRET_HEADERS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("OutgoingCall")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl OutgoingCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a call ended, as the shell saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// An HTTP answer (Envoy reports connect failures and timeouts as 503/504 answers).
    Response { status: u16, body: Vec<u8> },
    /// No answer: reset after headers, refused dispatch, or an answer too large to read.
    Failed,
}

#[derive(Clone, Debug)]
enum Pending {
    /// `GET .../builds/{n}`. `claim` is the build's claimed version when the call was made: a
    /// claim that arrived while the call was on its way may be newer than drone's answer.
    FetchBuild { key: BuildKey, claim: u64 },
    /// `GET /api/repos/{o}/{n}` to confirm that a name only unverified webhooks gave belongs
    /// to `repo_id` before anything is looked up under it.
    ConfirmRepo {
        repo_id: u64,
        namespace: Box<str>,
        name: Box<str>,
    },
    /// `GET /api/repos/{o}/{n}`, needed before a re-delivery when neither evidence nor drone
    /// gave us the repository's JSON yet (e.g. after a leader change). Holds the build answer
    /// to deliver.
    FetchRepo { key: BuildKey, build: Vec<u8> },
    /// `GET .../builds?page=1` of `scan_repos[index]`.
    Scan { index: usize },
    /// `GET /api/repos/{o}/{n}` of a repository seen before, for its `counter`.
    Discover { repo_id: u64 },
    /// `GET /api/builds/incomplete` (admin; 501 in drone's OSS build).
    Incomplete,
    /// POST of a re-delivery to the pipeline.
    Deliver {
        key: BuildKey,
        version: u64,
        status: BuildStatus,
    },
}

/// Drone's ids, numbers and versions are int64: anything above is not drone's.
const MAX_DRONE_INT: u64 = i64::MAX as u64;

/// Times drone may answer 404 for a build the reconciler inferred (drone takes a build number
/// before it writes the build row) before it is given up.
const NOT_FOUND_RETRIES: u8 = 3;

pub struct Reconciler {
    cfg: Config,
    ledger: Ledger,
    idents: Idents,
    repo_json: RepoJsonCache,
    /// The `system` object of the latest verified webhook.
    system_json: Option<String>,
    /// The `system` object rebuilt from `drone_server_url` (drone's `provideSystem`: proto,
    /// host, link; no API returns the version), for when no verified webhook gave one.
    configured_system: Option<String>,
    rng: Rng,
    /// Rate limit of every drone call (`max_drone_calls_per_sec`).
    bucket: TokenBucket,
    /// Second limit of lookups only unverified webhooks asked for: half the rate (`None`, so
    /// none at all, when the rate is 1/s).
    hint_bucket: Option<TokenBucket>,
    circuit: Circuit,
    inflight: HashMap<CallId, (Pending, u64)>,
    next_call: CallId,
    counters: Counters,
    /// Failing drone calls are logged at most once per 10 s.
    drone_log: LogLimiter,
    /// When each of `scan_repos` is listed next.
    scan_due: Vec<u64>,
    /// A repository's highest build number changed since the last watermark snapshot.
    watermarks_dirty: bool,
    /// The hint lane goes first in this tick.
    hint_first: bool,
    /// When `GET /api/builds/incomplete` is asked next (0: at the first tick after
    /// `stale_after_ms`), and whether drone offers it (not in its OSS build, 501).
    incomplete_due: u64,
    incomplete_enabled: bool,
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
        // Lookups hints asked for take a token of both buckets, so they stay within
        // `max_drone_calls_per_sec` and at most half of it; the main lane goes first in every
        // tick and keeps at least the other half under any flood of hints.
        let hint_rate = cfg.max_drone_calls_per_sec / 2;
        Reconciler {
            bucket: TokenBucket::new(cfg.max_drone_calls_per_sec),
            hint_bucket: (hint_rate > 0).then(|| TokenBucket::new(hint_rate)),
            circuit: Circuit::new(
                cfg.circuit_failure_threshold,
                cfg.circuit_open_ms,
                cfg.max_poll_interval_ms,
            ),
            repo_json: RepoJsonCache {
                cap: cfg.max_repos,
                ..Default::default()
            },
            ledger,
            idents: Idents {
                cap: cfg.max_repos,
                ..Default::default()
            },
            system_json: None,
            configured_system: cfg.drone_server_url.as_deref().and_then(|url| {
                let (proto, host) = url.split_once("://")?;
                Some(format!(
                    r#"{{"proto":"{proto}","host":"{host}","link":"{url}"}}"#
                ))
            }),
            rng: Rng::new(seed),
            inflight: HashMap::new(),
            next_call: 1,
            counters: Counters::default(),
            drone_log: LogLimiter::new(10_000),
            // The first listing of each repository comes one interval after the start, spread
            // so that many repositories are not listed in the same tick.
            scan_due: (0..cfg.scan_repos.len() as u64)
                .map(|i| cfg.scan_interval_ms / 10 + i * 1000)
                .collect(),
            watermarks_dirty: false,
            slo: Slo::new(cfg.max_tracked_builds),
            who: String::new(),
            hint_first: false,
            incomplete_due: 0,
            incomplete_enabled: true,
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
        self.inflight.len()
    }

    pub fn is_inflight(&self, id: CallId) -> bool {
        self.inflight.contains_key(&id)
    }

    /// Whether drone (or evidence) confirmed `namespace/name` as repository `repo_id`'s name.
    pub fn repo_confirmed(&self, repo_id: u64) -> Option<(&str, &str)> {
        self.idents
            .confirmed(&repo_id)
            .map(|i| (&*i.namespace, &*i.name))
    }

    /// Records a live webhook and how the pipeline answered it: evidence when its signature
    /// verified, a hint otherwise.
    pub fn observe(&mut self, obs: Observation, now_ms: u64) {
        let hook = &obs.webhook;
        if hook.repo.id > MAX_DRONE_INT
            || hook.number > MAX_DRONE_INT
            || hook.version > MAX_DRONE_INT
        {
            // The parser refuses these already; a queue message from elsewhere is not drone's.
            self.counters.observations_invalid += 1;
            return;
        }
        if obs.verified {
            self.observe_evidence(obs, now_ms);
        } else {
            self.observe_hint(obs, now_ms);
        }
        self.sync_gauges();
    }

    fn observe_evidence(&mut self, obs: Observation, now_ms: u64) {
        let hook = obs.webhook;
        let key = hook.key();
        // Only evidence moves the SLO: a forged webhook the pipeline refused must not make
        // the pipeline look behind, nor a forged accepted one make it look caught up.
        self.slo.outcome(key, hook.version, obs.outcome, now_ms);
        self.counters.repos_evicted += self.idents.confirm(&hook.repo);
        self.note_number(key, now_ms);
        if let Some(json) = hook.repo_json {
            self.repo_json.insert(hook.repo.id, json);
        }
        if hook.system_json.is_some() {
            self.system_json = hook.system_json;
        }
        if let Some(finished_at) = self.ledger.tombstone(&key) {
            if hook.version <= finished_at {
                // A late step webhook of a build that finished and was delivered.
                return;
            }
        }
        let settled = matches!(
            obs.outcome,
            DeliveryOutcome::Delivered | DeliveryOutcome::Refused
        );
        let stale_after = self.cfg.stale_after_ms;
        let due = match obs.outcome {
            // The pipeline does not have it: look drone up at once and re-deliver.
            DeliveryOutcome::NotDelivered => now_ms,
            _ => now_ms.saturating_add(self.rng.jitter(stale_after)),
        };
        match self.ledger.get(&key).copied() {
            None => {
                if settled && settles_for_good(hook.status) {
                    // Everything the pipeline needs of this build has arrived.
                    self.ledger.finish(&key, hook.version);
                    return;
                }
                let mut entry = Entry::new(now_ms, Class::Backed);
                if settled {
                    entry.settled_version = hook.version;
                    entry.settled_status = hook.status;
                }
                entry.interval_ms = clamp_u32(stale_after);
                entry.next_due_ms = due;
                self.insert(key, entry);
            }
            Some(entry) => {
                let newer = settled && hook.version > entry.settled_version;
                if newer && settles_for_good(hook.status) {
                    self.ledger.finish(&key, hook.version);
                    return;
                }
                let in_flight = entry.next_due_ms == NOT_SCHEDULED;
                self.ledger.update(&key, |e| {
                    e.class = Class::Backed;
                    if newer {
                        e.settled_version = hook.version;
                        e.settled_status = hook.status;
                        if e.claimed_version <= hook.version {
                            e.claimed_version = 0;
                        }
                    }
                    e.last_change_ms = now_ms;
                    e.interval_ms = clamp_u32(stale_after);
                    if !in_flight {
                        // Fresh news: the build is not stale, unless the pipeline missed it
                        // (then `due` is now).
                        e.next_due_ms = due;
                    }
                });
            }
        }
    }

    /// A hint: remember the candidate name and the claim, and make sure drone is asked. Never
    /// settles, finishes or delays anything: a hint can only bring a hint-only build's lookup
    /// closer, never push any lookup later, and builds backed by evidence or drone keep their
    /// own schedule.
    fn observe_hint(&mut self, obs: Observation, now_ms: u64) {
        let hook = obs.webhook;
        let key = hook.key();
        self.counters.repos_evicted += self.idents.candidate(&hook.repo);
        if self
            .ledger
            .tombstone(&key)
            .is_some_and(|finished_at| hook.version <= finished_at)
        {
            return;
        }
        let claim = matches!(
            obs.outcome,
            DeliveryOutcome::Delivered | DeliveryOutcome::Refused
        )
        .then_some((hook.version, hook.status));
        let due = match obs.outcome {
            DeliveryOutcome::NotDelivered => now_ms,
            _ => now_ms.saturating_add(self.rng.jitter(self.cfg.stale_after_ms)),
        };
        let finished_at = self.ledger.tombstone(&key);
        match self.ledger.get(&key).copied() {
            None => {
                let mut entry = Entry::new(now_ms, Class::Hint);
                if let Some(version) = finished_at {
                    // Finished and delivered at `version`: unless drone wrote it since, a
                    // hint about it costs a lookup, never a re-delivery.
                    entry.settled_version = version;
                }
                if let Some((version, status)) = claim {
                    entry.claimed_version = version;
                    entry.claimed_status = status;
                }
                entry.interval_ms = clamp_u32(self.cfg.stale_after_ms);
                entry.next_due_ms = due;
                self.insert(key, entry);
            }
            Some(entry) => {
                self.ledger.update(&key, |e| {
                    if let Some((version, status)) = claim {
                        if version > e.settled_version {
                            // The latest claim stands: a forged one is replaced by the next
                            // genuine webhook, and refuted by drone in any case.
                            e.claimed_version = version;
                            e.claimed_status = status;
                        }
                    }
                    if entry.class == Class::Hint && e.next_due_ms != NOT_SCHEDULED {
                        e.next_due_ms = e.next_due_ms.min(due);
                    }
                });
            }
        }
    }

    /// Inserts a build; one given up to make room (or this one, refused) is counted.
    fn insert(&mut self, key: BuildKey, entry: Entry) {
        if let Some(gone) = self.ledger.insert(key, entry) {
            self.counters.builds_evicted += 1;
            self.counters.giveups += 1;
            log::warn!(
                "gave up: ledger full build={} max_tracked_builds={} unconfirmed_share={} {}",
                self.build_field(gone),
                self.ledger.cap(),
                self.ledger.share(),
                self.who
            );
        }
    }

    /// Evidence or drone showed build `key.number` of its repository: raise the watermarks and
    /// look up the numbers that produced no webhook.
    ///
    /// Drone numbers builds per repository in sequence. Build n when the highest number seen
    /// is m < n-1 means builds m+1..n-1 produced no webhook that reached us (all lost, or
    /// declined, which drone never reports): track up to `max_gap_fill` of them so the next
    /// ticks look them up and deliver their state.
    fn note_number(&mut self, key: BuildKey, now_ms: u64) {
        let number = key.number;
        let Some(ident) = self.idents.get_mut(&key.repo_id).filter(|i| i.confirmed) else {
            return;
        };
        let (seen_max, seen_min) = (ident.max_number, ident.min_number);
        if number > seen_max {
            ident.max_number = number;
            self.watermarks_dirty = true;
        }
        if seen_min == 0 || number < seen_min {
            ident.min_number = number;
            self.watermarks_dirty = true;
        }
        if number > seen_max {
            self.note_activity(key.repo_id, now_ms);
        }
        let fill = self.cfg.max_gap_fill;
        if seen_max == 0 || fill == 0 {
            return;
        }
        if number > seen_max.saturating_add(1) {
            // Newer than anything seen: the numbers just below it were missed.
            let from = (seen_max + 1).max(number.saturating_sub(fill));
            self.track_missing(key.repo_id, from..number, now_ms);
        } else if seen_min > 0 && number.saturating_add(1) < seen_min {
            // Older than anything this reconciler saw (webhooks arrive out of order): the
            // numbers between it and the lowest seen were missed.
            let to = seen_min.min(number.saturating_add(1).saturating_add(fill));
            self.track_missing(key.repo_id, number + 1..to, now_ms);
        }
    }

    fn track_missing(&mut self, repo_id: u64, numbers: std::ops::Range<u64>, now_ms: u64) {
        for missing in numbers {
            let key = BuildKey {
                repo_id,
                number: missing,
            };
            if self.ledger.contains(&key) || self.ledger.tombstone(&key).is_some() {
                continue;
            }
            // Not due at once: webhooks of concurrent builds often arrive out of order, and a
            // build's own webhook settles it; only a build nothing arrived for is stale.
            let mut entry = Entry::new(now_ms, Class::Inferred);
            entry.interval_ms = clamp_u32(self.cfg.stale_after_ms);
            entry.next_due_ms = now_ms.saturating_add(self.rng.jitter(self.cfg.stale_after_ms));
            self.counters.builds_gap_filled += 1;
            self.insert(key, entry);
        }
    }

    fn repo_ref(&self, repo_id: u64) -> Option<RepoRef> {
        self.idents.get(&repo_id).map(|i| RepoRef {
            id: repo_id,
            namespace: i.namespace.to_string(),
            name: i.name.to_string(),
        })
    }

    fn new_call_id(&mut self) -> CallId {
        let id = self.next_call;
        self.next_call = self.next_call.wrapping_add(1).max(1);
        id
    }

    fn drone_get(&mut self, path: String, pending: Pending, now_ms: u64) -> OutgoingCall {
        let id = self.new_call_id();
        self.inflight.insert(id, (pending, now_ms));
        OutgoingCall {
            id,
            cluster: self.cfg.drone_cluster.clone(),
            headers: vec![
                (":method".into(), "GET".into()),
                (":path".into(), path),
                (":authority".into(), self.cfg.drone_authority.clone()),
                (
                    "authorization".into(),
                    format!("Bearer {}", self.cfg.drone_token),
                ),
                ("accept".into(), "application/json".into()),
                ("user-agent".into(), USER_AGENT.into()),
            ],
            body: Vec::new(),
            timeout_ms: self.cfg.call_timeout_ms,
        }
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

    /// A new build number showed (evidence or drone): its repository is active, so its
    /// `counter` is looked at often again (from `stale_after_ms`, doubling while nothing new
    /// shows, up to `max_poll_interval_ms`; never after `max_build_age_ms` of silence).
    fn note_activity(&mut self, repo_id: u64, now_ms: u64) {
        let stale_after = self.cfg.stale_after_ms;
        let Some(i) = self.idents.get_mut(&repo_id).filter(|i| i.confirmed) else {
            return;
        };
        i.last_activity_ms = now_ms;
        i.discover_interval_ms = clamp_u32(stale_after);
        if i.discovering {
            return;
        }
        let current = i.discover_due_ms;
        let due = now_ms.saturating_add(self.rng.jitter(stale_after));
        if due < current {
            self.idents.schedule_discovery(repo_id, due);
        }
    }

    /// Looks at the `counter` of the repositories that are due: drone's last allocated build
    /// number shows builds that produced no webhook at all, the newest included. After the
    /// build lookups of the tick, within the same budget, rate limit and circuit.
    fn discover(&mut self, now_ms: u64, calls: &mut Vec<OutgoingCall>) {
        while self.inflight.len() < self.cfg.max_inflight_calls {
            match self.idents.next_discovery() {
                Some(t) if t <= now_ms => {}
                _ => return,
            }
            if !self.circuit.try_acquire(now_ms) {
                return;
            }
            if !self.bucket.try_take(now_ms) {
                self.circuit.release();
                return;
            }
            let Some(repo_id) = self.idents.pop_discovery(now_ms) else {
                self.circuit.release();
                return;
            };
            let max_age = self.cfg.max_build_age_ms;
            let Some(i) = self.idents.get_mut(&repo_id).filter(|i| i.confirmed) else {
                self.circuit.release();
                self.bucket.give_back();
                continue;
            };
            if i.last_activity_ms == 0 {
                // Loaded from a previous leader's watermarks: silence counts from now.
                i.last_activity_ms = now_ms;
            }
            if now_ms.saturating_sub(i.last_activity_ms) > max_age {
                // Quiet for longer than any build may run: not looked at again until a
                // webhook or drone shows a new build.
                self.circuit.release();
                self.bucket.give_back();
                continue;
            }
            i.discovering = true;
            let repo = RepoRef {
                id: repo_id,
                namespace: i.namespace.to_string(),
                name: i.name.to_string(),
            };
            let path = drone_api::repo_path(&repo);
            calls.push(self.drone_get(path, Pending::Discover { repo_id }, now_ms));
        }
    }

    /// Drone's answer to a discovery: track the numbers above the highest one known (up to
    /// `max_gap_fill` of them, the newest), and schedule the next look.
    fn on_discover(&mut self, repo_id: u64, result: CallResult, now_ms: u64) {
        let stale_after = self.cfg.stale_after_ms;
        let max = self.cfg.max_poll_interval_ms;
        let mut found = false;
        match result {
            CallResult::Response { status: 200, body } => {
                self.circuit.on_success();
                match drone_api::parse_repo_counter(&body) {
                    Ok((repo, json, counter)) if repo.id == repo_id => {
                        self.counters.drone_polls_ok += 1;
                        self.counters.repos_evicted += self.idents.confirm(&repo);
                        self.repo_json.insert(repo.id, json);
                        found = self.discovered(repo_id, counter, now_ms);
                    }
                    Ok(_) | Err(_) => {
                        // Another repository has this name now (or drone answered nonsense).
                        self.counters.drone_polls_failed += 1;
                    }
                }
            }
            CallResult::Response { status, .. } if !is_transient(status) => {
                self.circuit.on_success();
                self.counters.drone_polls_failed += 1;
            }
            CallResult::Response { .. } | CallResult::Failed => {
                self.counters.drone_polls_failed += 1;
                if self.circuit.on_failure(now_ms) {
                    self.counters.circuit_opens += 1;
                }
            }
        }
        let jitter = &mut self.rng;
        let Some(i) = self.idents.get_mut(&repo_id) else {
            return;
        };
        i.discovering = false;
        // Nothing new (or no usable answer): look less often.
        let interval = if found {
            stale_after
        } else {
            grow_interval(u64::from(i.discover_interval_ms), stale_after, max)
        };
        i.discover_interval_ms = clamp_u32(interval);
        let due = now_ms.saturating_add(jitter.jitter(interval));
        self.idents.schedule_discovery(repo_id, due);
    }

    /// Drone's `counter` for a repository: builds above the highest number known produced no
    /// webhook that reached us. Returns whether there were any.
    fn discovered(&mut self, repo_id: u64, counter: u64, now_ms: u64) -> bool {
        if counter > MAX_DRONE_INT {
            return false;
        }
        let Some(i) = self.idents.get_mut(&repo_id) else {
            return false;
        };
        let known = i.max_number;
        if counter <= known {
            return false;
        }
        i.max_number = counter;
        i.last_activity_ms = now_ms;
        self.watermarks_dirty = true;
        if known == 0 {
            // The first number known of this repository: a baseline (what happened before
            // we watched is not ours).
            return false;
        }
        let from = (known + 1).max(counter.saturating_sub(self.cfg.max_gap_fill.max(1) - 1));
        for number in from..=counter {
            let key = BuildKey { repo_id, number };
            if self.ledger.contains(&key) || self.ledger.tombstone(&key).is_some() {
                continue;
            }
            // Due at once: drone allocated the number; its build row may follow a moment
            // later (404 is not final for an inferred build).
            let mut entry = Entry::new(now_ms, Class::Inferred);
            entry.interval_ms = clamp_u32(self.cfg.stale_after_ms);
            entry.next_due_ms = now_ms;
            self.counters.builds_discovered += 1;
            self.insert(key, entry);
        }
        true
    }

    /// Asks drone's admin `GET /api/builds/incomplete` every `max_poll_interval_ms`: running
    /// builds across all repositories (the 50 newest), the only way to learn of a repository
    /// none of whose webhooks ever reached us. Drone's OSS build answers 501: then never again
    /// (until the next leader).
    fn incomplete(&mut self, now_ms: u64, calls: &mut Vec<OutgoingCall>) {
        if !self.incomplete_enabled || self.inflight.len() >= self.cfg.max_inflight_calls {
            return;
        }
        if self.incomplete_due == 0 {
            self.incomplete_due = now_ms.saturating_add(self.cfg.stale_after_ms);
        }
        if now_ms < self.incomplete_due {
            return;
        }
        if !self.circuit.try_acquire(now_ms) {
            return;
        }
        if !self.bucket.try_take(now_ms) {
            self.circuit.release();
            return;
        }
        self.incomplete_due = NOT_SCHEDULED;
        let path = "/api/builds/incomplete".to_string();
        calls.push(self.drone_get(path, Pending::Incomplete, now_ms));
    }

    fn on_incomplete(&mut self, result: CallResult, now_ms: u64) {
        let next = now_ms.saturating_add(self.rng.jitter(self.cfg.max_poll_interval_ms));
        self.incomplete_due = next;
        let body = match result {
            CallResult::Response { status: 200, body } => body,
            CallResult::Response { status, .. } if !is_transient(status) || status == 501 => {
                // 501: drone's OSS build; 401/403: not an admin's token; 404: no such route.
                self.circuit.on_success();
                self.incomplete_enabled = false;
                log::info!(
                    "drone offers no /api/builds/incomplete, builds of repositories no webhook showed are out of reach http={status} {}",
                    self.who
                );
                return;
            }
            CallResult::Response { .. } | CallResult::Failed => {
                self.counters.drone_polls_failed += 1;
                if self.circuit.on_failure(now_ms) {
                    self.counters.circuit_opens += 1;
                }
                return;
            }
        };
        self.circuit.on_success();
        let Ok(list) = drone_api::parse_incomplete(&body) else {
            self.counters.drone_polls_failed += 1;
            return;
        };
        self.counters.drone_polls_ok += 1;
        for (repo, json, number) in list {
            if repo.id > MAX_DRONE_INT || number > MAX_DRONE_INT || number == 0 {
                continue;
            }
            // Drone's own answer: the identity and the number are drone's word.
            self.counters.repos_evicted += self.idents.confirm(&repo);
            self.repo_json.insert(repo.id, json);
            let key = BuildKey {
                repo_id: repo.id,
                number,
            };
            let known = self.idents.get(&repo.id).map_or(0, |i| i.max_number);
            if number > known
                && !self.ledger.contains(&key)
                && self.ledger.tombstone(&key).is_none()
            {
                let mut entry = Entry::new(now_ms, Class::Inferred);
                entry.interval_ms = clamp_u32(self.cfg.stale_after_ms);
                entry.next_due_ms = now_ms.saturating_add(self.rng.jitter(self.cfg.stale_after_ms));
                self.counters.builds_discovered += 1;
                self.insert(key, entry);
            }
            self.note_number(key, now_ms);
        }
    }

    fn take_token(&mut self, lane: Lane, now_ms: u64) -> bool {
        if !self.bucket.try_take(now_ms) {
            return false;
        }
        if lane == Lane::Hint
            && !self
                .hint_bucket
                .as_mut()
                .is_some_and(|bucket| bucket.try_take(now_ms))
        {
            self.bucket.give_back();
            return false;
        }
        true
    }

    /// Looks up the next due build of `lane`, if budget, rate and circuit allow; false when
    /// the lane is done for this tick.
    fn serve_one(&mut self, lane: Lane, now_ms: u64, calls: &mut Vec<OutgoingCall>) -> bool {
        if self.inflight.len() >= self.cfg.max_inflight_calls {
            return false;
        }
        match self.ledger.next_due(lane) {
            Some(t) if t <= now_ms => {}
            _ => return false,
        }
        if !self.circuit.try_acquire(now_ms) {
            return false;
        }
        if !self.take_token(lane, now_ms) {
            self.circuit.release();
            return false;
        }
        let Some((key, entry)) = self.ledger.pop_due(now_ms, lane) else {
            self.circuit.release();
            return false;
        };
        if now_ms.saturating_sub(entry.first_seen_ms) > self.cfg.max_build_age_ms {
            self.circuit.release();
            self.ledger.remove(&key);
            if entry.class == Class::Hint {
                // Drone never confirmed it: nothing real is given up.
                self.counters.hints_refuted += 1;
                return true;
            }
            self.counters.builds_expired += 1;
            self.counters.giveups += 1;
            log::warn!(
                "gave up: build open longer than max_build_age_ms build={} {}",
                self.build_field(key),
                self.who
            );
            return true;
        }
        match self.idents.get(&key.repo_id).cloned() {
            Some(i) if i.confirmed => {
                let repo = RepoRef {
                    id: key.repo_id,
                    namespace: i.namespace.into(),
                    name: i.name.into(),
                };
                let path = drone_api::build_path(&repo, key.number);
                let pending = Pending::FetchBuild {
                    key,
                    claim: entry.claimed_version,
                };
                calls.push(self.drone_get(path, pending, now_ms));
            }
            Some(i) if !i.confirming => {
                // Only unverified webhooks named this repository: ask drone whether the name
                // is this id's before looking anything up under it; the build is looked up a
                // moment later.
                if let Some(ident) = self.idents.get_mut(&key.repo_id) {
                    ident.confirming = true;
                }
                let repo = RepoRef {
                    id: key.repo_id,
                    namespace: i.namespace.to_string(),
                    name: i.name.to_string(),
                };
                let pending = Pending::ConfirmRepo {
                    repo_id: key.repo_id,
                    namespace: i.namespace,
                    name: i.name,
                };
                calls.push(self.drone_get(drone_api::repo_path(&repo), pending, now_ms));
                self.wait_for_name(key, now_ms);
            }
            Some(_) => {
                // A confirmation is on its way: wait for its answer.
                self.circuit.release();
                self.wait_for_name(key, now_ms);
            }
            None if entry.class == Class::Hint => {
                // Drone refuted every name hints gave for this repository.
                self.circuit.release();
                self.refuted(key);
            }
            None => {
                // The name was dropped to stay within max_repos: the next webhook of the
                // repository gives one again (or max_build_age_ms ends the wait).
                self.circuit.release();
                self.wait_for_name(key, now_ms);
            }
        }
        true
    }

    /// Reschedules a build whose repository name is not confirmed yet.
    fn wait_for_name(&mut self, key: BuildKey, now_ms: u64) {
        let base = self.cfg.tick_ms.max(1000);
        let max = self.cfg.max_poll_interval_ms;
        let rng = &mut self.rng;
        self.ledger.update(&key, |e| {
            e.failures = e.failures.saturating_add(1);
            let delay = rng.jitter(failure_backoff(u32::from(e.failures), base, max));
            e.next_due_ms = now_ms.saturating_add(delay);
        });
    }

    /// Lists the configured repositories that are due, within the same budget, rate limit and
    /// circuit as build lookups.
    fn scan(&mut self, now_ms: u64, calls: &mut Vec<OutgoingCall>) {
        for index in 0..self.scan_due.len() {
            if self.inflight.len() >= self.cfg.max_inflight_calls {
                return;
            }
            if self.scan_due.get(index).is_none_or(|due| *due > now_ms) {
                continue;
            }
            if !self.circuit.try_acquire(now_ms) {
                return;
            }
            if !self.bucket.try_take(now_ms) {
                self.circuit.release();
                return;
            }
            let next = now_ms.saturating_add(self.rng.jitter(self.cfg.scan_interval_ms));
            if let Some(due) = self.scan_due.get_mut(index) {
                *due = next;
            }
            let Some((owner, name)) = self.cfg.scan_repos.get(index) else {
                continue;
            };
            let path = drone_api::list_path(owner, name);
            calls.push(self.drone_get(path, Pending::Scan { index }, now_ms));
        }
    }

    /// A build list: builds newer than any we know of for that repository never produced a
    /// webhook that reached us; track them so they are looked up and delivered. The first
    /// listing only sets the baseline (what happened before we watched is not ours).
    fn on_scan(&mut self, index: usize, result: CallResult, now_ms: u64) {
        let listed = match result {
            CallResult::Response { status: 200, body } => drone_api::parse_build_list(&body),
            CallResult::Response { status, .. } => {
                if !is_transient(status) {
                    // Drone answered: no reason to stop other calls.
                    self.circuit.on_success();
                    self.counters.drone_polls_failed += 1;
                    return;
                }
                Err(ParseError::Json(format!("HTTP {status}")))
            }
            CallResult::Failed => Err(ParseError::Json("no answer".into())),
        };
        let builds = match listed {
            Ok(b) => b,
            Err(e) => {
                self.counters.drone_polls_failed += 1;
                if self.circuit.on_failure(now_ms) {
                    self.counters.circuit_opens += 1;
                }
                if let Some(n) = self.drone_log.allow(now_ms) {
                    let repo = self
                        .cfg
                        .scan_repos
                        .get(index)
                        .map(|(o, n)| format!("{o}/{n}"))
                        .unwrap_or_default();
                    log::warn!(
                        "listing scan_repos failed repo={} why={}{} {}",
                        Val(&repo),
                        Val(&e.to_string()),
                        suppressed_note(n),
                        self.who
                    );
                }
                return;
            }
        };
        self.circuit.on_success();
        self.counters.drone_polls_ok += 1;
        let Some(((owner, name), first)) = self
            .cfg
            .scan_repos
            .get(index)
            .cloned()
            .zip(builds.first().copied())
        else {
            return;
        };
        if first.repo_id > MAX_DRONE_INT {
            return;
        }
        // Drone listed these builds under the configured name: drone confirms the identity.
        let repo = RepoRef {
            id: first.repo_id,
            namespace: owner,
            name,
        };
        self.counters.repos_evicted += self.idents.confirm(&repo);
        let newest = builds
            .iter()
            .filter(|b| b.repo_id == repo.id && b.number <= MAX_DRONE_INT)
            .map(|b| b.number)
            .max()
            .unwrap_or(0);
        let Some(known) = self.idents.get(&repo.id).map(|i| i.max_number) else {
            return;
        };
        if let Some(ident) = self.idents.get_mut(&repo.id) {
            if newest > known {
                ident.max_number = newest;
                self.watermarks_dirty = true;
            }
        }
        if known == 0 {
            return;
        }
        for b in builds
            .iter()
            .filter(|b| b.repo_id == repo.id && b.number > known && b.number <= MAX_DRONE_INT)
        {
            let key = BuildKey {
                repo_id: repo.id,
                number: b.number,
            };
            if self.ledger.contains(&key) || self.ledger.tombstone(&key).is_some() {
                continue;
            }
            let mut entry = Entry::new(now_ms, Class::Inferred);
            entry.interval_ms = clamp_u32(self.cfg.stale_after_ms);
            entry.next_due_ms = now_ms;
            self.counters.builds_scan_found += 1;
            self.insert(key, entry);
        }
    }

    /// Calls whose answer never came (the host should always answer, but a lost callback must
    /// not leak budget forever) are failed after twice their timeout.
    fn expire_calls(&mut self, now_ms: u64) {
        let deadline = self.cfg.call_timeout_ms.saturating_mul(2).max(1000);
        let expired: Vec<CallId> = self
            .inflight
            .iter()
            .filter(|(_, (_, started))| now_ms.saturating_sub(*started) > deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.counters.calls_expired += 1;
            let _ = self.on_response(id, CallResult::Failed, now_ms);
        }
    }

    /// The answer to a call. May ask for a follow-up call (a re-delivery).
    pub fn on_response(
        &mut self,
        id: CallId,
        result: CallResult,
        now_ms: u64,
    ) -> Vec<OutgoingCall> {
        let Some((pending, _)) = self.inflight.remove(&id) else {
            return Vec::new();
        };
        let out = match pending {
            Pending::FetchBuild { key, claim } => self.on_build(key, claim, result, now_ms),
            Pending::ConfirmRepo {
                repo_id,
                namespace,
                name,
            } => {
                self.on_confirm(repo_id, &namespace, &name, result, now_ms);
                Vec::new()
            }
            Pending::FetchRepo { key, build } => self.on_repo(key, build, result, now_ms),
            Pending::Scan { index } => {
                self.on_scan(index, result, now_ms);
                Vec::new()
            }
            Pending::Discover { repo_id } => {
                self.on_discover(repo_id, result, now_ms);
                Vec::new()
            }
            Pending::Incomplete => {
                self.on_incomplete(result, now_ms);
                Vec::new()
            }
            Pending::Deliver {
                key,
                version,
                status,
            } => {
                self.on_delivered(key, version, status, result, now_ms);
                Vec::new()
            }
        };
        self.sync_gauges();
        out
    }

    /// A drone call for one build failed: count it, back the build off. Only `transient`
    /// failures (5xx, timeouts, resets: drone or the way to it is unwell) feed the circuit;
    /// an answer about this build alone (a 4xx, an unusable body) backs off this build alone.
    fn drone_failed(&mut self, key: BuildKey, why: &str, transient: bool, now_ms: u64) {
        self.counters.drone_polls_failed += 1;
        if !transient {
            self.circuit.on_success();
        } else if self.circuit.on_failure(now_ms) {
            self.counters.circuit_opens += 1;
            log::warn!(
                "drone API failing, circuit open (calls paused) build={} why={} paused_ms={} {}",
                self.build_field(key),
                Val(why),
                self.cfg.circuit_open_ms,
                self.who
            );
            self.retry_later(key, now_ms, self.cfg.stale_after_ms);
            return;
        }
        if let Some(n) = self.drone_log.allow(now_ms) {
            let note = suppressed_note(n);
            let build = self.build_field(key);
            if transient {
                log::info!(
                    "drone API call failed, will retry build={build} why={}{note} {}",
                    Val(why),
                    self.who
                );
            } else {
                log::warn!(
                    "drone API answer unusable, will retry build={build} why={}{note} {}",
                    Val(why),
                    self.who
                );
            }
        }
        self.retry_later(key, now_ms, self.cfg.stale_after_ms);
    }

    fn retry_later(&mut self, key: BuildKey, now_ms: u64, base_ms: u64) {
        let max = self.cfg.max_poll_interval_ms;
        let rng = &mut self.rng;
        self.ledger.update(&key, |e| {
            e.failures = e.failures.saturating_add(1);
            let delay = rng.jitter(failure_backoff(u32::from(e.failures), base_ms, max));
            e.next_due_ms = now_ms.saturating_add(delay);
        });
    }

    /// Drone contradicted a build only hints vouched for: forget it, nothing real is lost.
    fn refuted(&mut self, key: BuildKey) {
        self.ledger.remove(&key);
        self.counters.hints_refuted += 1;
    }

    fn on_build(
        &mut self,
        key: BuildKey,
        claim_at_call: u64,
        result: CallResult,
        now_ms: u64,
    ) -> Vec<OutgoingCall> {
        let class = self.ledger.get(&key).map(|e| e.class);
        let body = match result {
            CallResult::Response { status: 200, body } => body,
            CallResult::Response {
                status: status @ (400 | 404),
                ..
            } => {
                // Drone has no such build (or no such number: drone parses it as int64).
                self.circuit.on_success();
                self.counters.drone_polls_ok += 1;
                match class {
                    Some(Class::Hint) => self.refuted(key),
                    Some(Class::Inferred)
                        if status == 404
                            && self
                                .ledger
                                .get(&key)
                                .is_some_and(|e| e.failures < NOT_FOUND_RETRIES) =>
                    {
                        // Drone takes a number before it writes the build: look again.
                        self.retry_later(key, now_ms, self.cfg.stale_after_ms);
                    }
                    Some(_) => {
                        self.counters.builds_not_found += 1;
                        self.counters.giveups += 1;
                        self.ledger.remove(&key);
                        log::warn!(
                            "gave up: drone has no such build build={} http={status} {}",
                            self.build_field(key),
                            self.who
                        );
                    }
                    None => {}
                }
                return Vec::new();
            }
            CallResult::Response {
                status: status @ (401 | 403),
                ..
            } => {
                let why =
                    format!("HTTP {status}: check drone_token (an admin machine user's token)");
                self.drone_failed(key, &why, false, now_ms);
                return Vec::new();
            }
            CallResult::Response { status, .. } => {
                self.drone_failed(key, &format!("HTTP {status}"), is_transient(status), now_ms);
                return Vec::new();
            }
            CallResult::Failed => {
                self.drone_failed(key, "no answer", true, now_ms);
                return Vec::new();
            }
        };
        let api = match drone_api::parse_build(&body) {
            Ok(api) if api.number == key.number && api.repo_id == key.repo_id => api,
            Ok(_) => {
                self.drone_failed(key, "answer for another build", false, now_ms);
                return Vec::new();
            }
            Err(e) => {
                self.drone_failed(key, &format!("bad build answer: {e}"), false, now_ms);
                return Vec::new();
            }
        };
        self.circuit.on_success();
        self.counters.drone_polls_ok += 1;
        if api.version > MAX_DRONE_INT {
            self.drone_failed(key, "version beyond int64", false, now_ms);
            return Vec::new();
        }
        let Some(entry) = self.ledger.get(&key).copied() else {
            return Vec::new(); // evicted or finished meanwhile
        };
        // Drone has this build: it is backed from now on, and its number is drone's word.
        self.ledger.update(&key, |e| e.class = Class::Backed);
        self.note_number(key, now_ms);

        let mut settled = (entry.settled_version, entry.settled_status);
        if entry.claimed_version > api.version {
            let raced = entry.claimed_version != claim_at_call;
            if raced && !entry.deferred {
                // The claim came while the call was on its way: drone may have written the
                // build since it answered. Ask again before delivering anything older.
                let soon = now_ms.saturating_add(self.cfg.tick_ms.max(1000));
                self.ledger.update(&key, |e| {
                    e.deferred = true;
                    e.next_due_ms = soon;
                });
                return Vec::new();
            }
            // Drone, asked after the claim was made, is behind it: the claim is not drone's.
            self.counters.hints_refuted += 1;
        } else if entry.claimed_version == api.version
            && entry.claimed_status == api.status
            && api.version > settled.0
        {
            // Drone confirms what the unverified webhook said the pipeline answered.
            settled = (api.version, api.status);
        }
        self.ledger.update(&key, |e| {
            e.deferred = false;
            e.claimed_version = 0;
            e.claimed_status = BuildStatus::Unknown;
            if settled.0 > e.settled_version {
                e.settled_version = settled.0;
                e.settled_status = settled.1;
                e.last_change_ms = now_ms;
                e.interval_ms = 0;
            }
        });
        if api.version > settled.0 {
            self.slo.missing(key, api.version, now_ms);
            return self.deliver_or_fetch_repo(key, &api, now_ms);
        }
        let Some(entry) = self.ledger.get(&key).copied() else {
            return Vec::new();
        };
        // Drone has nothing the pipeline lacks. A cancelled build is watched a while longer
        // (see settles_for_good).
        let watching_cancel = entry.settled_status == BuildStatus::Killed
            && now_ms.saturating_sub(entry.last_change_ms)
                < self.cfg.max_poll_interval_ms.saturating_mul(2);
        if entry.settled_is_terminal() && !watching_cancel {
            self.ledger.finish(&key, entry.settled_version);
            return Vec::new();
        }
        let stale_after = self.cfg.stale_after_ms;
        let max = self.cfg.max_poll_interval_ms;
        let rng = &mut self.rng;
        self.ledger.update(&key, |e| {
            e.failures = 0;
            let interval = grow_interval(u64::from(e.interval_ms), stale_after, max);
            e.interval_ms = clamp_u32(interval);
            e.next_due_ms = now_ms.saturating_add(rng.jitter(interval));
        });
        Vec::new()
    }

    /// Drone's answer about a name only unverified webhooks gave.
    fn on_confirm(
        &mut self,
        repo_id: u64,
        namespace: &str,
        name: &str,
        result: CallResult,
        now_ms: u64,
    ) {
        let body = match result {
            CallResult::Response { status: 200, body } => body,
            CallResult::Response { status, .. } if !is_transient(status) => {
                // 404 (no such repository) or another 4xx: not this name.
                self.circuit.on_success();
                self.counters.drone_polls_ok += 1;
                self.counters.hints_refuted += 1;
                self.idents.refute(repo_id, namespace, name);
                return;
            }
            CallResult::Response { .. } | CallResult::Failed => {
                self.counters.drone_polls_failed += 1;
                if self.circuit.on_failure(now_ms) {
                    self.counters.circuit_opens += 1;
                }
                if let Some(i) = self.idents.get_mut(&repo_id) {
                    i.confirming = false;
                }
                return;
            }
        };
        self.circuit.on_success();
        match drone_api::parse_repo(&body) {
            Ok((repo, json)) if repo.id == repo_id => {
                self.counters.drone_polls_ok += 1;
                self.counters.repos_evicted += self.idents.confirm(&repo);
                self.repo_json.insert(repo.id, json);
            }
            Ok(_) => {
                // Drone has this name for another repository.
                self.counters.drone_polls_ok += 1;
                self.counters.hints_refuted += 1;
                self.idents.refute(repo_id, namespace, name);
            }
            Err(e) => {
                // Nonsense from drone is no answer: ask again later.
                self.counters.drone_polls_failed += 1;
                if let Some(i) = self.idents.get_mut(&repo_id) {
                    i.confirming = false;
                }
                if let Some(n) = self.drone_log.allow(now_ms) {
                    log::warn!(
                        "drone API answer for a repository unusable repo_id={repo_id} why={}{} {}",
                        Val(&e.to_string()),
                        suppressed_note(n),
                        self.who
                    );
                }
            }
        }
    }

    fn deliver_or_fetch_repo(
        &mut self,
        key: BuildKey,
        api: &ApiBuild<'_>,
        now_ms: u64,
    ) -> Vec<OutgoingCall> {
        let Some(repo_json) = self.repo_json.map.get(&key.repo_id).cloned() else {
            let Some(repo) = self.idents.confirmed(&key.repo_id).map(|i| RepoRef {
                id: key.repo_id,
                namespace: i.namespace.to_string(),
                name: i.name.to_string(),
            }) else {
                self.wait_for_name(key, now_ms);
                return Vec::new();
            };
            let pending = Pending::FetchRepo {
                key,
                build: api.raw.as_bytes().to_vec(),
            };
            return vec![self.drone_get(drone_api::repo_path(&repo), pending, now_ms)];
        };
        let system = self
            .system_json
            .as_deref()
            .or(self.configured_system.as_deref());
        let body = drone_api::redelivery_body(&repo_json, api.raw, system);
        vec![self.deliver(key, api.version, api.status, body.into_bytes(), now_ms)]
    }

    fn on_repo(
        &mut self,
        key: BuildKey,
        build: Vec<u8>,
        result: CallResult,
        now_ms: u64,
    ) -> Vec<OutgoingCall> {
        let body = match result {
            CallResult::Response { status: 200, body } => body,
            CallResult::Response { status, .. } => {
                let why = format!("repository: HTTP {status}");
                self.drone_failed(key, &why, is_transient(status), now_ms);
                return Vec::new();
            }
            CallResult::Failed => {
                self.drone_failed(key, "repository: no answer", true, now_ms);
                return Vec::new();
            }
        };
        let (repo, json) = match drone_api::parse_repo(&body) {
            Ok(r) if r.0.id == key.repo_id => r,
            Ok(_) | Err(_) => {
                self.drone_failed(key, "bad repository answer", false, now_ms);
                return Vec::new();
            }
        };
        self.circuit.on_success();
        self.counters.drone_polls_ok += 1;
        self.counters.repos_evicted += self.idents.confirm(&repo);
        self.repo_json.insert(repo.id, json);
        // The pipeline may have acknowledged a newer (or the same) version live while the
        // repository was fetched: deliver only what it still lacks, else look again later.
        let Some(entry) = self.ledger.get(&key).copied() else {
            return Vec::new();
        };
        match drone_api::parse_build(&build) {
            Ok(api) if api.version > entry.settled_version => {
                self.deliver_or_fetch_repo(key, &api, now_ms)
            }
            _ => {
                let delay = self.rng.jitter(self.cfg.stale_after_ms);
                self.ledger
                    .update(&key, |e| e.next_due_ms = now_ms.saturating_add(delay));
                Vec::new()
            }
        }
    }

    fn deliver(
        &mut self,
        key: BuildKey,
        version: u64,
        status: BuildStatus,
        body: Vec<u8>,
        now_ms: u64,
    ) -> OutgoingCall {
        let id = self.new_call_id();
        self.inflight.insert(
            id,
            (
                Pending::Deliver {
                    key,
                    version,
                    status,
                },
                now_ms,
            ),
        );
        let mut headers = vec![
            (":method".into(), "POST".into()),
            (":path".into(), self.cfg.webhook_path.clone()),
            (":authority".into(), self.cfg.pipeline_authority.clone()),
            ("content-type".into(), "application/json".into()),
            ("x-drone-event".into(), "build".into()),
            (
                "webhook-id".into(),
                signature::webhook_id(key.repo_id, key.number, version),
            ),
            ("user-agent".into(), USER_AGENT.into()),
        ];
        if let Some(secret) = &self.cfg.webhook_secret {
            let signed = signature::sign(secret.as_bytes(), &body, now_ms);
            headers.push(("date".into(), signed.date));
            headers.push(("digest".into(), signed.digest));
            headers.push(("signature".into(), signed.signature));
        }
        OutgoingCall {
            id,
            cluster: self.cfg.pipeline_cluster.clone(),
            headers,
            body,
            timeout_ms: self.cfg.call_timeout_ms,
        }
    }

    fn on_delivered(
        &mut self,
        key: BuildKey,
        version: u64,
        status: BuildStatus,
        result: CallResult,
        now_ms: u64,
    ) {
        let http = match result {
            CallResult::Response { status, .. } => Some(status),
            CallResult::Failed => None,
        };
        let outcome = DeliveryOutcome::from_status(http);
        self.slo.outcome(key, version, outcome, now_ms);
        match outcome {
            DeliveryOutcome::NotDelivered => {
                self.counters.redeliveries_failed += 1;
                log::debug!(
                    "re-delivery failed, will retry build={} status={} version={version} http={} {}",
                    self.build_field(key),
                    status.as_str(),
                    http.map_or_else(|| "none".to_string(), |h| h.to_string()),
                    self.who
                );
                let base = self.cfg.tick_ms.max(1000);
                self.retry_later(key, now_ms, base);
                return;
            }
            DeliveryOutcome::Refused => {
                self.counters.redeliveries_refused += 1;
                log::info!(
                    "re-delivery refused by the pipeline, not retried build={} status={} version={version} http={} {}",
                    self.build_field(key),
                    status.as_str(),
                    http.map_or_else(|| "none".to_string(), |h| h.to_string()),
                    self.who
                );
            }
            DeliveryOutcome::Delivered => {
                self.counters.redeliveries_ok += 1;
            }
        }
        let Some(entry) = self.ledger.get(&key).copied() else {
            return;
        };
        // What we re-delivered is drone's own answer: the pipeline's answer to it settles.
        let newer = version > entry.settled_version;
        let (v, s) = if newer {
            (version, status)
        } else {
            (entry.settled_version, entry.settled_status)
        };
        if settles_for_good(s) && v > 0 {
            self.ledger.finish(&key, v);
            return;
        }
        let stale_after = self.cfg.stale_after_ms;
        let rng = &mut self.rng;
        self.ledger.update(&key, |e| {
            e.settled_version = v;
            e.settled_status = s;
            if e.claimed_version <= v {
                e.claimed_version = 0;
            }
            e.failures = 0;
            e.last_change_ms = now_ms;
            e.interval_ms = clamp_u32(stale_after);
            e.next_due_ms = now_ms.saturating_add(rng.jitter(stale_after));
        });
    }

    fn sync_gauges(&mut self) {
        self.counters.builds_tracked = self.ledger.len() as u64;
        self.counters.builds_hint_only = self.ledger.count(Class::Hint) as u64;
        self.counters.calls_inflight = self.inflight.len() as u64;
        self.counters.circuit_open = u64::from(self.circuit.is_open());
    }

    /// Counts a queue message that could not be decoded.
    pub fn invalid_observation(&mut self) {
        self.counters.observations_invalid += 1;
    }

    /// Counts a snapshot shard that could not be read or written.
    pub fn snapshot_error(&mut self) {
        self.counters.snapshot_errors += 1;
    }

    /// Snapshot values of the shards changed since the last call: (shard, bytes).
    pub fn take_dirty_shards(&mut self) -> Vec<(u32, Vec<u8>)> {
        let dirty = self.ledger.take_dirty();
        let mut out = Vec::with_capacity(dirty.len());
        for shard in dirty {
            let records: Vec<Record> = self
                .ledger
                .shard_entries(shard)
                .filter_map(|(k, e)| {
                    let repo = self.repo_ref(k.repo_id)?;
                    Some(Record {
                        repo,
                        number: k.number,
                        entry: *e,
                    })
                })
                .collect();
            out.push((shard, snapshot::encode_shard(&records)));
        }
        out
    }

    /// Loads one shard of a snapshot (written by a previous leader, maybe with another shard
    /// count). Returns false when the value is not a valid shard.
    pub fn load_shard(&mut self, bytes: &[u8], now_ms: u64) -> bool {
        let Some(records) = snapshot::decode_shard(bytes) else {
            return false;
        };
        for mut r in records {
            snapshot::reschedule_in_flight(&mut r.entry, now_ms);
            // The snapshot may come from a reconciler with other timings (a config change):
            // nothing waits longer than this configuration would make it wait.
            let latest = now_ms.saturating_add(self.rng.jitter(self.cfg.stale_after_ms));
            r.entry.next_due_ms = r.entry.next_due_ms.min(latest);
            r.entry.interval_ms = r
                .entry
                .interval_ms
                .min(clamp_u32(self.cfg.max_poll_interval_ms));
            // A build backed by evidence or drone was looked up under a confirmed name; any
            // other record's name is only a candidate again.
            self.counters.repos_evicted += if r.entry.class == Class::Backed {
                self.idents.confirm(&r.repo)
            } else {
                self.idents.candidate(&r.repo)
            };
            let key = r.key();
            self.insert(key, r.entry);
        }
        self.sync_gauges();
        true
    }

    /// The repositories' highest build numbers (the gap-filling watermarks), when they changed
    /// since the last call: at most `max_repos` of them, the highest numbers first. Without
    /// them a new leader would take its first webhook of each repository as a fresh start and
    /// miss builds lost just before.
    pub fn take_watermarks(&mut self) -> Option<Vec<u8>> {
        if !std::mem::take(&mut self.watermarks_dirty) {
            return None;
        }
        let mut marks: Vec<(RepoRef, u64, u64)> = self
            .idents
            .iter()
            .filter(|(_, i)| i.confirmed && i.max_number > 0)
            .map(|(id, i)| {
                (
                    RepoRef {
                        id: *id,
                        namespace: i.namespace.to_string(),
                        name: i.name.to_string(),
                    },
                    i.max_number,
                    i.min_number,
                )
            })
            .collect();
        // Over the cap, keep the repositories with the highest numbers (the most active). The
        // cut-off number is found by bisection (64 linear passes at most) rather than by
        // sorting: the module has a size budget.
        let cap = self.cfg.max_repos;
        if marks.len() > cap {
            let at_least = |t: u64| marks.iter().filter(|m| m.1 >= t).count();
            let (mut lo, mut hi) = (0u64, u64::MAX);
            while lo < hi {
                let mid = lo + (hi - lo) / 2 + 1;
                if at_least(mid) >= cap {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            // Everything above the cut-off, then entries at it until the cap is reached.
            let mut room = cap.saturating_sub(at_least(lo.saturating_add(1)));
            marks.retain(|m| {
                m.1 > lo
                    || (m.1 == lo && room > 0 && {
                        room -= 1;
                        true
                    })
            });
        }
        Some(snapshot::encode_watermarks(&marks))
    }

    /// Loads the watermarks a previous leader stored. False when the value is not valid.
    pub fn load_watermarks(&mut self, bytes: &[u8]) -> bool {
        let Some(marks) = snapshot::decode_watermarks(bytes) else {
            return false;
        };
        for (repo, max_number, min_number) in marks {
            // Written by a leader from confirmed identities only (SSR3).
            if repo.id > MAX_DRONE_INT || max_number > MAX_DRONE_INT {
                continue;
            }
            self.counters.repos_evicted += self.idents.confirm(&repo);
            self.idents.schedule_discovery(repo.id, 0);
            if let Some(ident) = self.idents.get_mut(&repo.id) {
                ident.max_number = ident.max_number.max(max_number);
                if ident.min_number == 0 || (min_number > 0 && min_number < ident.min_number) {
                    ident.min_number = min_number;
                }
            }
        }
        true
    }

    /// Marks every shard for rewriting (after loading a snapshot with another layout).
    pub fn mark_all_dirty(&mut self) {
        self.ledger.mark_all_dirty();
    }

    pub fn shard_count(&self) -> u32 {
        self.ledger.shards()
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
