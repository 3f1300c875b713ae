//! Looking up due builds: each tick takes the builds whose time has come, lane by lane, and
//! asks drone for each (or first confirms a name only unverified webhooks gave); drone's
//! answers settle, finish, refute, back off or give up a build, or ask for a re-delivery.

use super::calls::{CallResult, OutgoingCall, Pending};
use super::gaps::Shown;
use super::vouch::{Asker, Proof};
use super::{clamp_u32, is_transient, Reconciler};
use crate::core::backoff::{failure_backoff, grow_interval};
use crate::core::drone_api;
use crate::core::ledger::{Class, Entry, Lane};
use crate::core::logfmt::Val;
use crate::core::model::{BuildKey, BuildStatus, RepoRef};
use crate::core::ratelog::suppressed_note;
use crate::core::repos::{Address, Vouch};

/// What a due build needs ([`Reconciler::lookup_step`]): a drone call, or work without one.
enum Step {
    /// A drone call: its path and what it is for.
    Call(String, Pending),
    Chore(Chore),
}

/// What a due build needs that takes no drone call (and so no permit).
enum Chore {
    /// Open longer than `max_build_age_ms`: given up.
    Expire,
    /// Its repository has no name to look it up under yet.
    WaitForName,
    /// Only hints named it, and drone refuted every name they gave.
    Refuted,
}

/// Times drone may answer 404 for a build the reconciler inferred (drone takes a build number
/// before it writes the build row) before it is given up.
const NOT_FOUND_RETRIES: u8 = 3;

impl Reconciler {
    /// What the due build `key` needs now: decided before anything is paid for.
    fn lookup_step(&self, key: BuildKey, entry: &Entry, now_ms: u64) -> Step {
        if now_ms.saturating_sub(entry.first_seen_ms) > self.cfg.max_build_age_ms {
            return Step::Chore(Chore::Expire);
        }
        match self.idents.address(key.repo_id) {
            Some(Address::Confirmed(repo)) => {
                let path = drone_api::build_path(&repo, key.number);
                let asked_by = Asker::of(entry.class, self.cfg.signature_mode);
                let pending = Pending::FetchBuild {
                    key,
                    claim: entry.claimed_version,
                    asked_by,
                };
                Step::Call(path, pending)
            }
            // Only unverified webhooks named this repository: ask drone whether the name is
            // this id's before looking anything up under it; the build is looked up a moment
            // later.
            Some(Address::Candidate(repo)) => {
                Step::Call(drone_api::repo_path(&repo), Pending::ConfirmRepo { repo })
            }
            // A confirmation is on its way: wait for its answer.
            Some(Address::Confirming) => Step::Chore(Chore::WaitForName),
            // Drone refuted every name hints gave for this repository.
            None if entry.class == Class::Hint => Step::Chore(Chore::Refuted),
            // The name was dropped to stay within max_repos: the next webhook of the
            // repository gives one again (or max_build_age_ms ends the wait).
            None => Step::Chore(Chore::WaitForName),
        }
    }

    /// Serves the next due build of `lane`: decides what it needs, and only a drone call takes
    /// a permit (budget, rate and circuit), so no permit is ever handed back. False when the
    /// lane is done for this tick.
    pub(super) fn serve_one(
        &mut self,
        lane: Lane,
        now_ms: u64,
        calls: &mut Vec<OutgoingCall>,
    ) -> bool {
        if !self.call_room() {
            return false;
        }
        let Some((key, entry)) = self.ledger.peek_due(now_ms, lane) else {
            return false;
        };
        let chore = match self.lookup_step(key, &entry, now_ms) {
            Step::Call(path, pending) => {
                let Some(permit) = self.budget.acquire(lane, now_ms) else {
                    return false;
                };
                let _ = self.ledger.pop_due(now_ms, lane);
                let confirming = matches!(pending, Pending::ConfirmRepo { .. });
                calls.push(self.drone_get(permit, path, pending, now_ms));
                if confirming {
                    self.idents.confirming(key.repo_id);
                    self.wait_for_name(key, now_ms);
                }
                return true;
            }
            Step::Chore(chore) => chore,
        };
        let _ = self.ledger.pop_due(now_ms, lane);
        match chore {
            Chore::Expire => {
                self.ledger.remove(&key);
                if entry.class == Class::Hint {
                    // Drone never confirmed it: nothing real is given up.
                    self.counters.hints_refuted += 1;
                    return true;
                }
                self.counters.builds_expired += 1;
                log::warn!(
                    "gave up: build open longer than max_build_age_ms build={} {}",
                    self.build_field(key),
                    self.who
                );
            }
            Chore::Refuted => self.refuted(key),
            Chore::WaitForName => self.wait_for_name(key, now_ms),
        }
        true
    }

    /// Reschedules a build whose repository name is not confirmed yet.
    pub(super) fn wait_for_name(&mut self, key: BuildKey, now_ms: u64) {
        self.retry_later(key, now_ms, self.cfg.tick_ms.max(1000));
    }

    /// A drone call for one build failed: count it, back the build off. Only `transient`
    /// failures (5xx, timeouts, resets: drone or the way to it is unwell) feed the circuit;
    /// an answer about this build alone (a 4xx, an unusable body) backs off this build alone.
    pub(super) fn drone_failed(&mut self, key: BuildKey, why: &str, transient: bool, now_ms: u64) {
        let opened = if transient {
            self.drone_down(now_ms)
        } else {
            self.counters.drone_polls_failed += 1;
            self.budget.on_success();
            false
        };
        if opened {
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

    #[inline(never)] // one copy in the module, not one per call site (BENCHMARKS.md, 7)
    pub(super) fn retry_later(&mut self, key: BuildKey, now_ms: u64, base_ms: u64) {
        let max = self.cfg.max_poll_interval_ms;
        let rng = &mut self.rng;
        self.ledger.update(&key, |e| {
            e.failures = e.failures.saturating_add(1);
            let delay = rng.jitter(failure_backoff(u32::from(e.failures), base_ms, max));
            e.next_due_ms = now_ms.saturating_add(delay);
        });
    }

    /// A claim (an unverified webhook the pipeline took, 2xx) above drone's answer came while
    /// the call was on its way: drone may have written the build since it answered. Asks again
    /// before delivering anything older, once: `deferred` stays set until an answer is acted
    /// on, so claims racing every later lookup cannot defer the same re-delivery again, and a
    /// forged claim delays a real transition by one look at most (pinned by
    /// `forged_claims_racing_every_lookup_defer_a_redelivery_once`). True when deferred.
    pub(super) fn defer_for_claim(&mut self, key: BuildKey, entry: &Entry, now_ms: u64) -> bool {
        if entry.deferred {
            return false;
        }
        let soon = now_ms.saturating_add(self.cfg.tick_ms.max(1000));
        self.ledger.update(&key, |e| {
            e.deferred = true;
            e.next_due_ms = soon;
        });
        true
    }

    /// Drone contradicted a build only hints vouched for: forget it, nothing real is lost.
    fn refuted(&mut self, key: BuildKey) {
        self.ledger.remove(&key);
        self.counters.hints_refuted += 1;
    }

    pub(super) fn on_build(
        &mut self,
        key: BuildKey,
        claim_at_call: u64,
        asked_by: Asker,
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
                self.drone_answered();
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
            // Rule: a build answer counts only for the repository and number asked about. A
            // name can move to another repository (renamed, deleted and created again): an
            // answer with another `repo_id` is refused, counted in `drone_polls_failed`, and
            // the build backs off (`tests/hints.rs`:
            // `a_build_answer_for_another_repository_is_refused`).
            Ok(api) if api.number() == key.number && api.repo_id() == key.repo_id => api,
            Ok(_) => {
                self.drone_failed(key, "answer for another build", false, now_ms);
                return Vec::new();
            }
            Err(e) => {
                self.drone_failed(key, &format!("bad build answer: {e}"), false, now_ms);
                return Vec::new();
            }
        };
        self.drone_answered();
        let Some(entry) = self.ledger.get(&key).copied() else {
            return Vec::new(); // evicted or finished meanwhile
        };
        // Drone has this build: its number is drone's word, and it is backed from now on,
        // unless only hints asked. Rule: hints get at most their share of drone calls and of
        // the ledger, never discovery's or evidence's: a build only unverified webhooks named
        // stays hint-only after drone's answer (drone says the build exists, not that anyone
        // genuine follows it), so its later lookups stay in the hints' lane and a flood of
        // hints naming real running builds cannot spend the main lane (`tests/hints.rs`:
        // `a_flood_of_hint_lookups_never_starves_the_discovery_of_an_evidence_repository`).
        if asked_by != Asker::Hint {
            self.ledger.update(&key, |e| e.class = Class::Backed);
        }
        // Rule: a lookup a hint asked for answers for that build alone: no gap filling, no
        // watermark moves, no name enters the evidence pool (so none is pushed out of it);
        // `Shown::by_drone` refuses it (in `off` nothing can be evidence: see `Asker::of`).
        // For a repository only hints named it may wake discovery (drone's `counter`,
        // drone's word), which then runs in the hints' lane (`tests/hints.rs`:
        // `a_hint_naming_an_old_finished_build_reaches_that_build_alone`).
        match Shown::by_drone(key, asked_by) {
            Some(shown) => self.note_number(shown, now_ms),
            None if self.idents.vouch(key.repo_id) == Some(Vouch::Hint) => {
                self.note_activity(key.repo_id, now_ms);
            }
            None => {}
        }

        let mut settled = (entry.settled_version(), entry.settled_status());
        if entry.claimed_version > api.version() {
            let raced = entry.claimed_version != claim_at_call;
            if raced && self.defer_for_claim(key, &entry, now_ms) {
                return Vec::new();
            }
            // Drone, asked after the claim was made, is behind it: the claim is not drone's.
            self.counters.hints_refuted += 1;
        } else if entry.claimed_version == api.version()
            && entry.claimed_status == api.status()
            && api.version() > settled.0
        {
            // Drone confirms what the unverified webhook said the pipeline took: the same
            // version *and* status, never the version alone (a forged `success v5` must not
            // settle drone's `failure v5`; pinned by
            // `a_claim_with_drones_version_but_another_status_settles_nothing`).
            settled = (api.version(), api.status());
        }
        self.ledger.update(&key, |e| {
            e.deferred = false;
            e.claimed_version = 0;
            e.claimed_status = BuildStatus::Unknown;
        });
        if (self.ledger).settle(&key, settled.0, settled.1, &Proof::drone(&api)) {
            self.ledger.update(&key, |e| {
                e.last_change_ms = now_ms;
                e.interval_ms = 0;
            });
        }
        if api.version() > settled.0 {
            // Rule: nothing is re-delivered for a build drone says finished before this
            // reconciler could have seen it, whatever asked for the lookup (a hint naming an
            // old build, gap filling or discovery after a restart that lost the snapshot): it
            // is counted (`builds_finished_unwatched`) and forgotten, tombstoned at drone's
            // version (`tests/hints.rs`:
            // `builds_that_finished_before_the_watch_began_are_never_redelivered`).
            if api.status().is_done()
                && self.finished_unwatched(key, entry.first_seen_ms, api.finished_s(), now_ms)
            {
                self.counters.builds_finished_unwatched += 1;
                self.ledger.finish(&key, api.version(), &Proof::drone(&api));
                log::debug!(
                    "not re-delivered: drone says it finished before this reconciler watched it build={} {}",
                    self.build_field(key),
                    self.who
                );
                return Vec::new();
            }
            (self.slo).missing(key, api.version(), now_ms, &Proof::drone(&api));
            return self.deliver_or_fetch_repo(key, &api, now_ms);
        }
        let Some(entry) = self.ledger.get(&key).copied() else {
            return Vec::new();
        };
        // Drone has nothing the pipeline lacks. A cancelled build is watched a while longer
        // (see settles_for_good).
        let watching_cancel = entry.settled_status() == BuildStatus::Killed
            && now_ms.saturating_sub(entry.last_change_ms)
                < self.cfg.max_poll_interval_ms.saturating_mul(2);
        if entry.settled_is_terminal() && !watching_cancel {
            self.ledger
                .finish(&key, entry.settled_version(), &Proof::drone(&api));
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
    pub(super) fn on_confirm(&mut self, asked: RepoRef, result: CallResult, now_ms: u64) {
        let (repo_id, namespace, name) = (asked.id, &*asked.namespace, &*asked.name);
        let body = match result {
            CallResult::Response { status: 200, body } => body,
            CallResult::Response { status, .. } if !is_transient(status) => {
                // 404 (no such repository) or another 4xx: not this name.
                self.drone_answered();
                self.counters.hints_refuted += 1;
                self.idents.refute(repo_id, namespace, name);
                return;
            }
            CallResult::Response { .. } | CallResult::Failed => {
                self.drone_down(now_ms);
                self.idents.unconfirmed(repo_id);
                return;
            }
        };
        self.budget.on_success();
        match drone_api::parse_repo(&body) {
            Ok((repo, json)) if repo.id == repo_id => {
                // Asked because a hint named it: the name stays in the hints' pool (in `off`,
                // where nothing can be evidence, drone's word is the best there is).
                self.counters.drone_polls_ok += 1;
                let vouch = Asker::of(Class::Hint, self.cfg.signature_mode).vouch();
                self.drone_named(&repo, json, vouch, now_ms);
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
                self.idents.unconfirmed(repo_id);
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
}
