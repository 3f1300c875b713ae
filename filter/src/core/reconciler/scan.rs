//! Listing `scan_repos`: drone's list of a configured repository's newest builds names builds
//! whose every webhook was lost, even in a repository no webhook ever showed (drone's OSS
//! build has no `/api/builds/incomplete`).

use super::calls::{CallResult, OutgoingCall, Pending};
use super::{is_transient, Reconciler};
use crate::core::drone_api;
use crate::core::ledger::Lane;
use crate::core::logfmt::Val;
use crate::core::model::{BuildKey, RepoRef};
use crate::core::ratelog::suppressed_note;

impl Reconciler {
    /// Lists the configured repositories that are due, within the same budget, rate limit and
    /// circuit as build lookups.
    pub(super) fn scan(&mut self, now_ms: u64, calls: &mut Vec<OutgoingCall>) {
        for index in 0..self.sweeps.scans() {
            if !self.call_room() {
                return;
            }
            if !self.sweeps.scan_is_due(index, now_ms) {
                continue;
            }
            let Some((owner, name)) = self.cfg.scan_repos.get(index) else {
                continue;
            };
            let path = drone_api::list_path(owner, name);
            let Some(permit) = self.budget.acquire(Lane::Main, now_ms) else {
                return;
            };
            let next = now_ms.saturating_add(self.rng.jitter(self.cfg.scan_interval_ms));
            self.sweeps.scan_next(index, next);
            calls.push(self.drone_get(permit, path, Pending::Scan { index }, now_ms));
        }
    }

    /// A build list: builds newer than any we know of for that repository never produced a
    /// webhook that reached us; track them so they are looked up and delivered. The first
    /// listing only sets the baseline (what happened before we watched is not ours).
    pub(super) fn on_scan(&mut self, index: usize, result: CallResult, now_ms: u64) {
        let failed = match result {
            CallResult::Response { status: 200, body } => {
                match drone_api::parse_build_list(&body) {
                    Ok(builds) => Ok(builds),
                    Err(e) => {
                        // Drone answered: an unusable body is not drone being down, and does
                        // not feed the circuit (docs/security.md, Bad input).
                        self.budget.on_success();
                        self.counters.drone_polls_failed += 1;
                        Err(e.to_string())
                    }
                }
            }
            CallResult::Response { status, .. } if !is_transient(status) => {
                // Drone answered: no reason to stop other calls.
                self.budget.on_success();
                self.counters.drone_polls_failed += 1;
                return;
            }
            CallResult::Response { status, .. } => {
                self.drone_down(now_ms);
                Err(format!("HTTP {status}"))
            }
            CallResult::Failed => {
                self.drone_down(now_ms);
                Err("no answer".into())
            }
        };
        let builds = match failed {
            Ok(b) => b,
            Err(why) => {
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
                        Val(&why),
                        suppressed_note(n),
                        self.who
                    );
                }
                return;
            }
        };
        self.drone_answered();
        let Some(((owner, name), first)) = self
            .cfg
            .scan_repos
            .get(index)
            .cloned()
            .zip(builds.first().copied())
        else {
            return;
        };
        // Drone listed these builds under the configured name: drone confirms the identity.
        let repo = RepoRef {
            id: first.repo_id,
            namespace: owner,
            name,
        };
        self.counters.repos_evicted += self.idents.confirm(&repo, now_ms);
        let newest = builds
            .iter()
            .filter(|b| b.repo_id == repo.id)
            .map(|b| b.number)
            .max()
            .unwrap_or(0);
        let Some(known) = self.idents.raise_max(repo.id, newest) else {
            return;
        };
        if known == 0 {
            return;
        }
        for b in builds
            .iter()
            .filter(|b| b.repo_id == repo.id && b.number > known)
        {
            // Due at once: drone listed it.
            let key = BuildKey {
                repo_id: repo.id,
                number: b.number,
            };
            if self.track_inferred(key, true, now_ms) {
                self.counters.builds_scan_found += 1;
            }
        }
    }
}
