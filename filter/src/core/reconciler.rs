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

use super::backoff::{failure_backoff, grow_interval, Circuit, Rng, TokenBucket};
use super::config::Config;
use super::drone_api::{self, ApiBuild};
use super::ledger::{Entry, Ledger, NOT_SCHEDULED};
use super::metrics::Counters;
use super::model::{BuildKey, BuildStatus, DeliveryOutcome, ParseError, RepoRef};
use super::observation::Observation;
use super::ratelog::{suppressed_note, LogLimiter};
use super::signature;
use super::snapshot::{self, Record};
use std::collections::{HashMap, VecDeque};

/// Identifies a call the reconciler asked for; the shell maps host tokens to it.
pub type CallId = u64;

/// Version string sent as `user-agent`.
pub const USER_AGENT: &str = concat!("status-sync/", env!("CARGO_PKG_VERSION"));

/// A call for the shell to dispatch with `dispatch_http_call`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingCall {
    pub id: CallId,
    pub cluster: String,
    /// Includes the `:method`, `:path` and `:authority` pseudo-headers.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
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
    /// `GET .../builds/{n}`.
    FetchBuild { key: BuildKey },
    /// `GET /api/repos/{o}/{n}`, needed before a re-delivery when no webhook showed us the
    /// repository yet (e.g. after a leader change). Holds the build answer to deliver.
    FetchRepo { key: BuildKey, build: Vec<u8> },
    /// `GET .../builds?page=1` of `scan_repos[index]`.
    Scan { index: usize },
    /// POST of a re-delivery to the pipeline.
    Deliver {
        key: BuildKey,
        version: u64,
        status: BuildStatus,
    },
}

/// Repository identity (to address the API) and, bounded separately, its JSON for payloads.
#[derive(Clone, Debug)]
struct RepoIdent {
    namespace: Box<str>,
    name: Box<str>,
    /// Highest build number a live webhook showed for this repository (0 = none yet), for
    /// finding builds whose every webhook was lost.
    max_number: u64,
    /// Lowest build number seen since this reconciler started (0 = none): a lower one that
    /// arrives late shows the numbers between were missed too.
    min_number: u64,
}

/// Bounded FIFO cache of `repo` objects (the big part: about 1.2 KB each).
#[derive(Debug, Default)]
struct RepoJsonCache {
    map: HashMap<u64, Box<str>>,
    order: VecDeque<u64>,
    cap: usize,
}

impl RepoJsonCache {
    fn insert(&mut self, id: u64, json: String) {
        if self.map.insert(id, json.into_boxed_str()).is_none() {
            self.order.push_back(id);
        }
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }
}

pub struct Reconciler {
    cfg: Config,
    ledger: Ledger,
    idents: HashMap<u64, RepoIdent>,
    repo_json: RepoJsonCache,
    system_json: Option<String>,
    rng: Rng,
    bucket: TokenBucket,
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
}

impl Reconciler {
    pub fn new(cfg: Config, seed: u64) -> Self {
        let ledger = Ledger::new(
            cfg.max_tracked_builds,
            (cfg.max_tracked_builds / 8).clamp(64, 16_384),
        );
        Reconciler {
            bucket: TokenBucket::new(cfg.max_drone_calls_per_sec),
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
            idents: HashMap::new(),
            system_json: None,
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
            cfg,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
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

    /// Records a live webhook and how the pipeline answered it.
    pub fn observe(&mut self, obs: Observation, now_ms: u64) {
        let hook = obs.webhook;
        let key = hook.key();
        self.remember_repo(&hook.repo);
        self.fill_gap(&hook.repo, hook.number, now_ms);
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
                let mut entry = Entry::new(now_ms);
                if settled {
                    entry.settled_version = hook.version;
                    entry.settled_status = hook.status;
                }
                entry.interval_ms = clamp_u32(stale_after);
                entry.next_due_ms = due;
                if let Some(evicted) = self.ledger.insert(key, entry) {
                    self.counters.builds_evicted += 1;
                    self.counters.giveups += 1;
                    log::warn!(
                        "status-sync: ledger full ({} builds): gave up on build {}/{}",
                        self.ledger.cap(),
                        evicted.repo_id,
                        evicted.number
                    );
                }
            }
            Some(entry) => {
                let newer = settled && hook.version > entry.settled_version;
                if newer && settles_for_good(hook.status) {
                    self.ledger.finish(&key, hook.version);
                    return;
                }
                let in_flight = entry.next_due_ms == NOT_SCHEDULED;
                self.ledger.update(&key, |e| {
                    if newer {
                        e.settled_version = hook.version;
                        e.settled_status = hook.status;
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
        self.sync_gauges();
    }

    /// Drone numbers builds per repository in sequence. A webhook for build n when the highest
    /// number seen is m < n-1 means builds m+1..n-1 produced no webhook that reached us (all
    /// lost, or declined, which drone never reports): track up to `max_gap_fill` of them so
    /// the next ticks look them up and deliver their state.
    fn fill_gap(&mut self, repo: &RepoRef, number: u64, now_ms: u64) {
        let Some(ident) = self.idents.get_mut(&repo.id) else {
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
        let fill = self.cfg.max_gap_fill;
        if seen_max == 0 || fill == 0 {
            return;
        }
        if number > seen_max.saturating_add(1) {
            // Newer than anything seen: the numbers just below it were missed.
            let from = (seen_max + 1).max(number.saturating_sub(fill));
            self.track_missing(repo.id, from..number, now_ms);
        } else if seen_min > 0 && number.saturating_add(1) < seen_min {
            // Older than anything this reconciler saw (webhooks arrive out of order): the
            // numbers between it and the lowest seen were missed.
            let to = seen_min.min(number.saturating_add(1).saturating_add(fill));
            self.track_missing(repo.id, number + 1..to, now_ms);
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
            let mut entry = Entry::new(now_ms);
            entry.interval_ms = clamp_u32(self.cfg.stale_after_ms);
            entry.next_due_ms = now_ms.saturating_add(self.rng.jitter(self.cfg.stale_after_ms));
            self.counters.builds_gap_filled += 1;
            if self.ledger.insert(key, entry).is_some() {
                self.counters.builds_evicted += 1;
                self.counters.giveups += 1;
            }
        }
    }

    fn remember_repo(&mut self, repo: &RepoRef) {
        let known = self
            .idents
            .get(&repo.id)
            .is_some_and(|i| *i.namespace == *repo.namespace && *i.name == *repo.name);
        if !known {
            let (max_number, min_number) = self
                .idents
                .get(&repo.id)
                .map_or((0, 0), |i| (i.max_number, i.min_number));
            self.idents.insert(
                repo.id,
                RepoIdent {
                    namespace: repo.namespace.clone().into_boxed_str(),
                    name: repo.name.clone().into_boxed_str(),
                    max_number,
                    min_number,
                },
            );
        }
        // Identities are small, but must not outlive their builds forever: prune the ones no
        // tracked build refers to when they clearly outnumber the builds (amortised O(1)).
        if self.idents.len() > 2 * self.ledger.len() + 1024 {
            let ledger = &self.ledger;
            let mut used = std::collections::HashSet::new();
            for (k, _) in ledger.iter() {
                used.insert(k.repo_id);
            }
            used.insert(repo.id);
            self.idents.retain(|id, _| used.contains(id));
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
    /// budget, the rate limit and the circuit. Touches only due builds.
    pub fn tick(&mut self, now_ms: u64) -> Vec<OutgoingCall> {
        self.expire_calls(now_ms);
        let mut calls = Vec::new();
        self.scan(now_ms, &mut calls);
        while self.inflight.len() < self.cfg.max_inflight_calls {
            match self.ledger.next_due() {
                Some(t) if t <= now_ms => {}
                _ => break,
            }
            if !self.circuit.try_acquire(now_ms) {
                break;
            }
            if !self.bucket.try_take(now_ms) {
                self.circuit.release();
                break;
            }
            let Some((key, entry)) = self.ledger.pop_due(now_ms) else {
                self.circuit.release();
                break;
            };
            if now_ms.saturating_sub(entry.first_seen_ms) > self.cfg.max_build_age_ms {
                self.ledger.remove(&key);
                self.counters.builds_expired += 1;
                self.counters.giveups += 1;
                self.circuit.release();
                log::warn!(
                    "status-sync: build {}/{} still open after max_build_age_ms: gave up",
                    key.repo_id,
                    key.number
                );
                continue;
            }
            let Some(repo) = self.repo_ref(key.repo_id) else {
                // Cannot happen (identities outlive their builds); never loop on it.
                self.ledger.remove(&key);
                self.counters.giveups += 1;
                self.circuit.release();
                continue;
            };
            let path = drone_api::build_path(&repo, key.number);
            calls.push(self.drone_get(path, Pending::FetchBuild { key }, now_ms));
        }
        self.sync_gauges();
        calls
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
            CallResult::Response { status, .. } => Err(ParseError::Json(format!("HTTP {status}"))),
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
                    log::warn!(
                        "status-sync: listing scan_repos[{index}] failed: {e}{}",
                        suppressed_note(n)
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
        let repo = RepoRef {
            id: first.repo_id,
            namespace: owner,
            name,
        };
        self.remember_repo(&repo);
        let newest = builds.iter().map(|b| b.number).max().unwrap_or(0);
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
            .filter(|b| b.repo_id == repo.id && b.number > known)
        {
            let key = BuildKey {
                repo_id: repo.id,
                number: b.number,
            };
            if self.ledger.contains(&key) || self.ledger.tombstone(&key).is_some() {
                continue;
            }
            let mut entry = Entry::new(now_ms);
            entry.interval_ms = clamp_u32(self.cfg.stale_after_ms);
            entry.next_due_ms = now_ms;
            self.counters.builds_scan_found += 1;
            if self.ledger.insert(key, entry).is_some() {
                self.counters.builds_evicted += 1;
                self.counters.giveups += 1;
            }
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
            Pending::FetchBuild { key } => self.on_build(key, result, now_ms),
            Pending::FetchRepo { key, build } => self.on_repo(key, build, result, now_ms),
            Pending::Scan { index } => {
                self.on_scan(index, result, now_ms);
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

    /// A drone call failed: count it, feed the circuit, back the build off. `garbage` marks an
    /// answer drone should never give (unreadable, another build), logged at warn; transient
    /// failures (5xx, timeouts, resets) at info. Both rate-limited.
    fn drone_failed(&mut self, key: BuildKey, why: &str, garbage: bool, now_ms: u64) {
        self.counters.drone_polls_failed += 1;
        if self.circuit.on_failure(now_ms) {
            self.counters.circuit_opens += 1;
            log::warn!(
                "status-sync: drone API failing ({why}): circuit open, calls paused for at least {} ms",
                self.cfg.circuit_open_ms
            );
        } else if let Some(n) = self.drone_log.allow(now_ms) {
            let note = suppressed_note(n);
            if garbage {
                log::warn!(
                    "status-sync: drone API answer for build {}/{} unusable: {why}; will retry{note}",
                    key.repo_id,
                    key.number
                );
            } else {
                log::info!(
                    "status-sync: drone API call for build {}/{} failed: {why}; will retry{note}",
                    key.repo_id,
                    key.number
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

    fn on_build(&mut self, key: BuildKey, result: CallResult, now_ms: u64) -> Vec<OutgoingCall> {
        let body = match result {
            CallResult::Response { status: 200, body } => body,
            CallResult::Response { status: 404, .. } => {
                self.circuit.on_success();
                self.counters.drone_polls_ok += 1;
                self.counters.builds_not_found += 1;
                self.counters.giveups += 1;
                self.ledger.remove(&key);
                log::warn!(
                    "status-sync: drone has no build {}/{} (404): dropped",
                    key.repo_id,
                    key.number
                );
                return Vec::new();
            }
            CallResult::Response {
                status: status @ (401 | 403),
                ..
            } => {
                let why =
                    format!("HTTP {status}: check drone_token (an admin machine user's token)");
                self.drone_failed(key, &why, true, now_ms);
                return Vec::new();
            }
            CallResult::Response { status, .. } => {
                self.drone_failed(key, &format!("HTTP {status}"), false, now_ms);
                return Vec::new();
            }
            CallResult::Failed => {
                self.drone_failed(key, "no answer", false, now_ms);
                return Vec::new();
            }
        };
        let api = match drone_api::parse_build(&body) {
            Ok(api) if api.number == key.number => api,
            Ok(_) => {
                self.drone_failed(key, "answer for another build", true, now_ms);
                return Vec::new();
            }
            Err(e) => {
                self.drone_failed(key, &format!("bad build answer: {e}"), true, now_ms);
                return Vec::new();
            }
        };
        self.circuit.on_success();
        self.counters.drone_polls_ok += 1;
        let Some(entry) = self.ledger.get(&key).copied() else {
            return Vec::new(); // evicted or finished meanwhile
        };
        if api.version > entry.settled_version {
            return self.deliver_or_fetch_repo(key, &api, now_ms);
        }
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

    fn deliver_or_fetch_repo(
        &mut self,
        key: BuildKey,
        api: &ApiBuild<'_>,
        now_ms: u64,
    ) -> Vec<OutgoingCall> {
        let Some(repo_json) = self.repo_json.map.get(&key.repo_id).cloned() else {
            let Some(repo) = self.repo_ref(key.repo_id) else {
                self.ledger.remove(&key);
                self.counters.giveups += 1;
                return Vec::new();
            };
            let pending = Pending::FetchRepo {
                key,
                build: api.raw.as_bytes().to_vec(),
            };
            return vec![self.drone_get(drone_api::repo_path(&repo), pending, now_ms)];
        };
        let body = drone_api::redelivery_body(&repo_json, api.raw, self.system_json.as_deref());
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
                self.drone_failed(key, &format!("repository: HTTP {status}"), false, now_ms);
                return Vec::new();
            }
            CallResult::Failed => {
                self.drone_failed(key, "repository: no answer", false, now_ms);
                return Vec::new();
            }
        };
        let (repo, json) = match drone_api::parse_repo(&body) {
            Ok(r) if r.0.id == key.repo_id => r,
            Ok(_) | Err(_) => {
                self.drone_failed(key, "bad repository answer", true, now_ms);
                return Vec::new();
            }
        };
        self.circuit.on_success();
        self.counters.drone_polls_ok += 1;
        self.remember_repo(&repo);
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
        match DeliveryOutcome::from_status(http) {
            DeliveryOutcome::NotDelivered => {
                self.counters.redeliveries_failed += 1;
                log::debug!(
                    "status-sync: re-delivery of {}/{} v{version} failed ({http:?})",
                    key.repo_id,
                    key.number
                );
                let base = self.cfg.tick_ms.max(1000);
                self.retry_later(key, now_ms, base);
                return;
            }
            DeliveryOutcome::Refused => {
                self.counters.redeliveries_refused += 1;
                log::info!(
                    "status-sync: pipeline refused re-delivery of {}/{} v{version} ({http:?}): not retried",
                    key.repo_id,
                    key.number
                );
            }
            DeliveryOutcome::Delivered => {
                self.counters.redeliveries_ok += 1;
            }
        }
        let Some(entry) = self.ledger.get(&key).copied() else {
            return;
        };
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
            e.failures = 0;
            e.last_change_ms = now_ms;
            e.interval_ms = clamp_u32(stale_after);
            e.next_due_ms = now_ms.saturating_add(rng.jitter(stale_after));
        });
    }

    fn sync_gauges(&mut self) {
        self.counters.builds_tracked = self.ledger.len() as u64;
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
            self.remember_repo(&r.repo);
            let key = r.key();
            if self.ledger.insert(key, r.entry).is_some() {
                self.counters.builds_evicted += 1;
                self.counters.giveups += 1;
            }
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
            .filter(|(_, i)| i.max_number > 0)
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
            self.remember_repo(&repo);
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

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}
