//! Discovery: builds that produced no webhook at all, found through drone itself. Each
//! repository's `counter` (drone's last allocated build number) is looked at on a schedule
//! that follows the repository's activity, and drone's admin `/api/builds/incomplete` names
//! running builds of repositories no webhook ever showed.

use super::calls::{CallResult, OutgoingCall, Pending};
use super::gaps::Shown;
use super::vouch::Asker;
use super::{is_transient, Reconciler};
use crate::core::drone_api;
use crate::core::ledger::{Lane, NOT_SCHEDULED};
use crate::core::model::BuildKey;
use crate::core::ratelog::suppressed_note;
use crate::core::repos::{Look, Vouch};

/// When the sweeps that need no webhook are due: the listing of each of `scan_repos`, and
/// drone's admin list of incomplete builds (and whether drone offers it). Owned by the
/// reconciler, which counts; this only keeps the schedule.
pub(super) struct Sweeps {
    scan_due: Vec<u64>,
    /// 0: at the first look after `stale_after_ms`; [`NOT_SCHEDULED`]: asked, not answered.
    incomplete_due: u64,
    /// Drone offers `/api/builds/incomplete` (not in its OSS build, 501).
    incomplete_enabled: bool,
}

impl Sweeps {
    /// The first listing of each of `scan_repos` repositories comes one tenth of
    /// `scan_interval_ms` after the start, spread by a second, so that many repositories are
    /// not listed in the same tick.
    pub(super) fn new(scan_repos: usize, scan_interval_ms: u64) -> Self {
        Sweeps {
            scan_due: (0..scan_repos as u64)
                .map(|i| scan_interval_ms / 10 + i * 1000)
                .collect(),
            incomplete_due: 0,
            incomplete_enabled: true,
        }
    }

    pub(super) fn scans(&self) -> usize {
        self.scan_due.len()
    }

    pub(super) fn scan_is_due(&self, index: usize, now_ms: u64) -> bool {
        self.scan_due.get(index).is_some_and(|due| *due <= now_ms)
    }

    pub(super) fn scan_next(&mut self, index: usize, due_ms: u64) {
        if let Some(due) = self.scan_due.get_mut(index) {
            *due = due_ms;
        }
    }

    /// Whether drone's list of incomplete builds is to be asked for at `now_ms` (the first
    /// time `stale_after_ms` after the first look).
    pub(super) fn incomplete_is_due(&mut self, now_ms: u64, stale_after_ms: u64) -> bool {
        if !self.incomplete_enabled {
            return false;
        }
        if self.incomplete_due == 0 {
            self.incomplete_due = now_ms.saturating_add(stale_after_ms);
        }
        now_ms >= self.incomplete_due
    }

    /// The list is asked for: not again before its answer.
    pub(super) fn incomplete_asked(&mut self) {
        self.incomplete_due = NOT_SCHEDULED;
    }

    pub(super) fn incomplete_next(&mut self, due_ms: u64) {
        self.incomplete_due = due_ms;
    }

    /// Drone does not offer the list: never asked again (until the next leader).
    pub(super) fn incomplete_unavailable(&mut self) {
        self.incomplete_enabled = false;
    }
}

impl Reconciler {
    /// A new build number showed (evidence or drone): its repository is active, so its
    /// `counter` is looked at often again (from `stale_after_ms`, doubling while nothing new
    /// shows, up to `max_poll_interval_ms`; never after `max_build_age_ms` of silence).
    pub(super) fn note_activity(&mut self, repo_id: u64, now_ms: u64) {
        let stale_after = self.cfg.stale_after_ms;
        (self.idents).note_activity(repo_id, now_ms, stale_after, &mut self.rng);
    }

    /// Looks at the `counter` of the repositories that are due: drone's last allocated build
    /// number shows builds that produced no webhook at all, the newest included. After the
    /// build lookups of the tick, within the same budget, rate limit and circuit.
    pub(super) fn discover(&mut self, now_ms: u64, calls: &mut Vec<OutgoingCall>) {
        while self.call_room() {
            let Some((t, next)) = self.idents.next_discovery() else {
                return;
            };
            if t > now_ms {
                return;
            }
            // Decide first, then pay: a repository quiet for longer than any build may run is
            // not looked at again until a webhook or drone shows a new build, and takes no
            // permit.
            let Look::Ask(repo) = self.idents.look(next, now_ms, self.cfg.max_build_age_ms) else {
                self.idents.pop_discovery(now_ms);
                continue;
            };
            // A repository only hints named is looked at within the hints' lane, so hints
            // waking discovery cost the other builds nothing; when that lane is spent, the
            // look waits a tick rather than holding up the others.
            let lane = match self.idents.vouch(next) {
                Some(Vouch::Evidence) => Lane::Main,
                _ => Lane::Hint,
            };
            let Some(permit) = self.budget.acquire(lane, now_ms) else {
                if lane == Lane::Main {
                    return;
                }
                let later = now_ms.saturating_add(self.cfg.tick_ms.max(1));
                self.idents.pop_discovery(now_ms);
                self.idents.schedule_discovery(next, later);
                continue;
            };
            self.idents.pop_discovery(now_ms);
            self.idents.begin_look(next, now_ms);
            let path = drone_api::repo_path(&repo);
            let pending = Pending::Discover { repo_id: next };
            calls.push(self.drone_get(permit, path, pending, now_ms));
        }
    }

    /// Drone's answer to a discovery: track the numbers above the highest one known (up to
    /// `max_gap_fill` of them, the newest), and schedule the next look.
    pub(super) fn on_discover(&mut self, repo_id: u64, result: CallResult, now_ms: u64) {
        let stale_after = self.cfg.stale_after_ms;
        let max = self.cfg.max_poll_interval_ms;
        let mut found = false;
        match result {
            CallResult::Response { status: 200, body } => {
                self.budget.on_success();
                match drone_api::parse_repo_counter(&body) {
                    Ok((repo, json, counter)) if repo.id == repo_id => {
                        self.counters.drone_polls_ok += 1;
                        // The repository keeps its pool: a look hints woke names nothing.
                        let vouch = self.idents.vouch(repo_id).unwrap_or(Vouch::Hint);
                        self.drone_named(&repo, json, vouch, now_ms);
                        found = self.discovered(repo_id, counter, now_ms);
                    }
                    Ok(_) | Err(_) => {
                        // Another repository has this name now (or drone answered nonsense).
                        self.counters.drone_polls_failed += 1;
                    }
                }
            }
            CallResult::Response { status, .. } if !is_transient(status) => {
                self.budget.on_success();
                self.counters.drone_polls_failed += 1;
            }
            CallResult::Response { .. } | CallResult::Failed => {
                self.drone_down(now_ms);
            }
        }
        let timing = (stale_after, max);
        (self.idents).end_look(repo_id, found, now_ms, timing, &mut self.rng);
    }

    /// Drone's `counter` for a repository: builds above the highest number known produced no
    /// webhook that reached us. Returns whether there were any.
    fn discovered(&mut self, repo_id: u64, counter: u64, now_ms: u64) -> bool {
        let Some(known) = self.idents.raise_counter(repo_id, counter, now_ms) else {
            return false;
        };
        if known == 0 {
            // The first number known of this repository: a baseline (what happened before
            // we watched is not ours).
            return false;
        }
        let from = (known + 1).max(counter.saturating_sub(self.cfg.max_gap_fill.max(1) - 1));
        for number in from..=counter {
            // Due at once: drone allocated the number; its build row may follow a moment
            // later (404 is not final for an inferred build).
            if self.track_inferred(BuildKey { repo_id, number }, true, now_ms) {
                self.counters.builds_discovered += 1;
            }
        }
        true
    }

    /// Asks drone's admin `GET /api/builds/incomplete` every `max_poll_interval_ms`: running
    /// builds across all repositories (the 50 newest), the only way to learn of a repository
    /// none of whose webhooks ever reached us. Drone's OSS build answers 501: then never again
    /// (until the next leader).
    pub(super) fn incomplete(&mut self, now_ms: u64, calls: &mut Vec<OutgoingCall>) {
        if !self.call_room()
            || !self
                .sweeps
                .incomplete_is_due(now_ms, self.cfg.stale_after_ms)
        {
            return;
        }
        let Some(permit) = self.budget.acquire(Lane::Main, now_ms) else {
            return;
        };
        self.sweeps.incomplete_asked();
        let path = "/api/builds/incomplete".to_string();
        calls.push(self.drone_get(permit, path, Pending::Incomplete, now_ms));
    }

    pub(super) fn on_incomplete(&mut self, result: CallResult, now_ms: u64) {
        let next = now_ms.saturating_add(self.rng.jitter(self.cfg.max_poll_interval_ms));
        self.sweeps.incomplete_next(next);
        let body = match result {
            CallResult::Response { status: 200, body } => body,
            CallResult::Response { status, .. } if !is_transient(status) || status == 501 => {
                // 501: drone's OSS build; 401/403: not an admin's token; 404: no such route.
                self.budget.on_success();
                self.sweeps.incomplete_unavailable();
                log::info!(
                    "drone offers no /api/builds/incomplete, builds of repositories no webhook showed are out of reach http={status} {}",
                    self.who
                );
                return;
            }
            CallResult::Response { .. } | CallResult::Failed => {
                self.drone_down(now_ms);
                return;
            }
        };
        self.budget.on_success();
        let Ok(list) = drone_api::parse_incomplete(&body) else {
            self.counters.drone_polls_failed += 1;
            return;
        };
        self.counters.drone_polls_ok += 1;
        if list.skipped > 0 {
            // Not a build we track, so no give-up; but an entry drone could not have written
            // is worth a look (a proxy in between, a drone version we do not know).
            self.counters.drone_entries_skipped += list.skipped as u64;
            if let Some(n) = self.drone_log.allow(now_ms) {
                log::warn!(
                    "drone incomplete-list entries unusable, skipped count={}{} {}",
                    list.skipped,
                    suppressed_note(n),
                    self.who
                );
            }
        }
        for (repo, json, number) in list {
            // Drone's own answer: the identity and the number are drone's word.
            self.drone_named(&repo, json, Vouch::Evidence, now_ms);
            let key = BuildKey {
                repo_id: repo.id,
                number,
            };
            let known = self.idents.max_number(repo.id);
            if number > known && self.track_inferred(key, false, now_ms) {
                self.counters.builds_discovered += 1;
            }
            if let Some(shown) = Shown::by_drone(key, Asker::Evidence) {
                self.note_number(shown, now_ms);
            }
        }
    }
}
