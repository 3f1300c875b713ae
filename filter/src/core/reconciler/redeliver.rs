//! Re-deliveries: drone's newest state of a build the pipeline lacks, sent to the pipeline as
//! the webhook drone would have sent (with the `repo` object drone gave, fetched first when
//! none is at hand), and the pipeline's answer, which settles the build like a live one.

use super::calls::{CallResult, OutgoingCall, Pending};
use super::{clamp_u32, is_transient, settles_for_good, Reconciler};
use crate::core::drone_api::{self, ApiBuild};
use crate::core::limits;
use crate::core::logfmt::Val;
use crate::core::model::{BuildKey, DeliveryOutcome, ParsedWebhook};
use crate::core::proof::{Proof, Redelivery};
use crate::core::repos::RepoJsonCache;
use crate::core::repos::Vouch;

/// The objects a re-delivery carries besides drone's build: each repository's `repo` object
/// (from evidence or drone's answers only; at most `max_repos`) and the `system` object (the
/// latest verified webhook's, else rebuilt from `drone_server_url`: drone's `provideSystem`
/// gives proto, host and link; no API returns the version). Owned by the reconciler.
pub(super) struct Objects {
    repos: RepoJsonCache,
    system: Option<String>,
    configured_system: Option<String>,
}

impl Objects {
    pub(super) fn new(max_repos: usize, drone_server_url: Option<&str>) -> Self {
        Objects {
            repos: RepoJsonCache::new(max_repos),
            system: None,
            configured_system: drone_server_url.and_then(|url| {
                let (proto, host) = url.split_once("://")?;
                Some(format!(
                    r#"{{"proto":"{proto}","host":"{host}","link":"{url}"}}"#
                ))
            }),
        }
    }

    /// Takes the `repo` and `system` objects of a verified webhook (a hint gives no
    /// [`ParsedWebhook`], so none of its objects can be re-delivered).
    pub(super) fn keep_webhooks(&mut self, hook: &mut ParsedWebhook) {
        if let Some(json) = hook.repo_json.take() {
            self.repos.insert(hook.repo.id, json.into_boxed_str());
        }
        if let Some(system) = hook.system_json.take() {
            self.system = Some(system);
        }
    }

    /// Drone's `repo` object for repository `id`.
    pub(super) fn keep_repo(&mut self, id: u64, json: String) {
        self.repos.insert(id, json.into_boxed_str());
    }

    fn repo(&self, id: u64) -> Option<Box<str>> {
        self.repos.get(&id).cloned()
    }

    fn system(&self) -> Option<&str> {
        self.system.as_deref().or(self.configured_system.as_deref())
    }

    /// A re-delivery body could not be built: the stored objects that are not JSON objects go
    /// (drone's `repo` is fetched again).
    fn drop_invalid(&mut self, id: u64, repo_json: &str) {
        if limits::check_repo_json(repo_json).is_err() {
            self.repos.remove(&id);
        }
        if (self.system.as_deref()).is_some_and(|s| limits::check_system_json(s).is_err()) {
            self.system = None;
        }
    }
}

impl Reconciler {
    pub(super) fn deliver_or_fetch_repo(
        &mut self,
        key: BuildKey,
        api: &ApiBuild<'_>,
        now_ms: u64,
    ) -> Vec<OutgoingCall> {
        let Some(repo_json) = self.objects.repo(key.repo_id) else {
            let Some(repo) = self.idents.confirmed_repo(key.repo_id) else {
                self.wait_for_name(key, now_ms);
                return Vec::new();
            };
            let pending = Pending::FetchRepo {
                key,
                build: api.raw().as_bytes().to_vec(),
            };
            let permit = self.budget.follow_up();
            let path = drone_api::repo_path(&repo);
            return vec![self.drone_get(permit, path, pending, now_ms)];
        };
        let body =
            match drone_api::try_redelivery_body(&repo_json, api.raw(), self.objects.system()) {
                Ok(body) => body,
                Err(e) => {
                    // Never a signed re-delivery without a body. The decoders refuse what causes
                    // this (a stored `repo` or `system` that is not a JSON object): last line of
                    // defence. The bad object goes (drone's `repo` is fetched again) and the build
                    // is looked at again later.
                    self.counters.redeliveries_invalid += 1;
                    self.objects.drop_invalid(key.repo_id, &repo_json);
                    log::warn!(
                        "re-delivery body could not be built, not sent build={} why={} {}",
                        self.build_field(key),
                        Val(&e.to_string()),
                        self.who
                    );
                    let delay = self.rng.jitter(self.cfg.stale_after_ms);
                    self.ledger
                        .update(&key, |e| e.next_due_ms = now_ms.saturating_add(delay));
                    return Vec::new();
                }
            };
        vec![self.deliver(key, Redelivery::of(api), body.into_bytes(), now_ms)]
    }

    pub(super) fn on_repo(
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
        self.drone_answered();
        // A refresh of a name already confirmed: it stays in its pool.
        let vouch = self.idents.vouch(repo.id).unwrap_or(Vouch::Hint);
        self.drone_named(&repo, json, vouch, now_ms);
        // The pipeline may have acknowledged a newer (or the same) version live while the
        // repository was fetched: deliver only what it still lacks, else look again later.
        let Some(entry) = self.ledger.get(&key).copied() else {
            return Vec::new();
        };
        match drone_api::parse_build(&build) {
            Ok(api) if api.version() > entry.settled_version() => {
                // A claim can only be here if it came after drone's answer (the answer cleared
                // any older one): the build may have moved while the repository was fetched.
                if entry.claimed_version > api.version()
                    && self.defer_for_claim(key, &entry, now_ms)
                {
                    return Vec::new();
                }
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

    pub(super) fn on_delivered(
        &mut self,
        key: BuildKey,
        what: Redelivery,
        result: CallResult,
        now_ms: u64,
    ) {
        let (version, status) = (what.version(), what.status());
        let http = match result {
            CallResult::Response { status, .. } => Some(status),
            CallResult::Failed => None,
        };
        let outcome = DeliveryOutcome::from_status(http);
        let proof = Proof::redelivery(&what);
        self.slo.outcome(key, version, outcome, now_ms, &proof);
        let (level, what) = match outcome {
            DeliveryOutcome::Delivered => {
                self.counters.redeliveries_ok += 1;
                (log::Level::Trace, "")
            }
            DeliveryOutcome::NotDelivered => {
                self.counters.redeliveries_failed += 1;
                (log::Level::Debug, "failed, will retry")
            }
            DeliveryOutcome::Refused => {
                self.counters.redeliveries_refused += 1;
                (log::Level::Info, "refused by the pipeline, not retried")
            }
        };
        if outcome != DeliveryOutcome::Delivered {
            log::log!(
                level,
                "re-delivery {what} build={} status={} version={version} http={} {}",
                self.build_field(key),
                status.as_str(),
                http.map_or_else(|| "none".to_string(), |h| h.to_string()),
                self.who
            );
        }
        if outcome == DeliveryOutcome::NotDelivered {
            let base = self.cfg.tick_ms.max(1000);
            self.retry_later(key, now_ms, base);
            return;
        }
        let Some(entry) = self.ledger.get(&key).copied() else {
            return;
        };
        // What we re-delivered is drone's own answer: the pipeline's answer to it settles.
        let newer = version > entry.settled_version();
        let (v, s) = if newer {
            (version, status)
        } else {
            (entry.settled_version(), entry.settled_status())
        };
        if settles_for_good(s) && v > 0 {
            self.ledger.finish(&key, v, &proof);
            return;
        }
        (self.ledger).settle(&key, version, status, &proof);
        let stale_after = self.cfg.stale_after_ms;
        let rng = &mut self.rng;
        self.ledger.update(&key, |e| {
            if e.claimed_version <= v {
                e.claimed_version = 0;
            }
            e.failures = 0;
            e.last_change_ms = now_ms;
            e.interval_ms = clamp_u32(stale_after);
            e.next_due_ms = now_ms.saturating_add(rng.jitter(stale_after));
        });
    }
}
