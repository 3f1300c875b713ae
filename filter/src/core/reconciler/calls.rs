//! The calls the reconciler asks the shell to make, and the ones on their way: what each is
//! for ([`Pending`]), how its request is built, how its answer is routed back, and how a call
//! whose answer never came is failed. Every drone call is paid for by a [`Permit`].

use super::budget::Permit;
use super::{Reconciler, USER_AGENT};
use crate::core::keyed::Map;
use crate::core::model::{BuildKey, RepoRef};
use crate::core::proof::Redelivery;
use crate::core::signature;

/// Identifies a call the reconciler asked for; the shell maps host tokens to it.
pub type CallId = u64;

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

/// What a call in flight was made for.
pub(super) enum Pending {
    /// `GET .../builds/{n}`. `claim` is the build's claimed version when the call was made: a
    /// claim that arrived while the call was on its way may be newer than drone's answer.
    ///
    /// `asked_by`: whether only hints vouched for the build when the call was made; then the
    /// answer is for that build alone (see [`super::vouch::Asker`]).
    FetchBuild {
        key: BuildKey,
        claim: u64,
        asked_by: super::vouch::Asker,
    },
    /// `GET /api/repos/{o}/{n}` to confirm that a name only unverified webhooks gave belongs
    /// to `repo.id` before anything is looked up under it.
    ConfirmRepo { repo: RepoRef },
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
    /// POST of a re-delivery of drone's state to the pipeline.
    Deliver { key: BuildKey, what: Redelivery },
}

/// Headers as [`OutgoingCall`] holds them (one loop, rather than a copy of each string's
/// conversion inlined per header: the module has a size budget).
fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The calls on their way: what each is for and when it left, at most `max_inflight_calls`.
/// Owned by the reconciler, which counts; this only keeps the book.
pub(super) struct Calls {
    inflight: Map<CallId, (Pending, u64)>,
    next: CallId,
    max: usize,
}

impl Calls {
    /// At most `max` calls on their way at once (`max_inflight_calls`).
    pub(super) fn new(max: usize) -> Self {
        Calls {
            inflight: Map::default(),
            next: 1,
            max,
        }
    }

    /// Whether another call fits.
    pub(super) fn has_room(&self) -> bool {
        self.inflight.len() < self.max
    }

    pub(super) fn len(&self) -> usize {
        self.inflight.len()
    }

    pub(super) fn contains(&self, id: CallId) -> bool {
        self.inflight.contains_key(&id)
    }

    /// Records a call as in flight; returns its id.
    fn register(&mut self, pending: Pending, now_ms: u64) -> CallId {
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        self.inflight.insert(id, (pending, now_ms));
        id
    }

    /// The call `id` leaves only now (cluster mode held it): its deadline runs from `now_ms`.
    fn restart(&mut self, id: CallId, now_ms: u64) {
        if let Some((_, started)) = self.inflight.get_mut(&id) {
            *started = now_ms;
        }
    }

    /// The call `id` answered (or failed): what it was for, once.
    fn take(&mut self, id: CallId) -> Option<Pending> {
        self.inflight.remove(&id).map(|(pending, _)| pending)
    }

    /// Calls on their way for longer than `deadline_ms` at `now_ms`.
    fn overdue(&self, now_ms: u64, deadline_ms: u64) -> Vec<CallId> {
        self.inflight
            .iter()
            .filter(|(_, (_, started))| now_ms.saturating_sub(*started) > deadline_ms)
            .map(|(id, _)| *id)
            .collect()
    }
}

impl Reconciler {
    /// Records a call as in flight; returns its id.
    fn register(&mut self, pending: Pending, now_ms: u64) -> CallId {
        self.calls.register(pending, now_ms)
    }

    /// A `GET` of drone's API, paid for by `permit`.
    pub(super) fn drone_get(
        &mut self,
        permit: Permit,
        path: String,
        pending: Pending,
        now_ms: u64,
    ) -> OutgoingCall {
        permit.spend();
        let id = self.register(pending, now_ms);
        let bearer = format!("Bearer {}", self.cfg.drone_token);
        OutgoingCall {
            id,
            cluster: self.cfg.drone_cluster.clone(),
            headers: owned(&[
                (":method", "GET"),
                (":path", &path),
                (":authority", &self.cfg.drone_authority),
                ("authorization", &bearer),
                ("accept", "application/json"),
                ("user-agent", USER_AGENT),
            ]),
            body: Vec::new(),
            timeout_ms: self.cfg.call_timeout_ms,
        }
    }

    /// The re-delivery of drone's `version` of a build to the pipeline, as a drone-shaped
    /// webhook (signed when `webhook_secret` is set; `webhook-id` stable across attempts).
    pub(super) fn deliver(
        &mut self,
        key: BuildKey,
        what: Redelivery,
        body: Vec<u8>,
        now_ms: u64,
    ) -> OutgoingCall {
        let id = self.register(Pending::Deliver { key, what }, now_ms);
        let webhook_id = signature::webhook_id(key.repo_id, key.number, what.version());
        let mut headers = owned(&[
            (":method", "POST"),
            (":path", &self.cfg.webhook_path),
            (":authority", &self.cfg.pipeline_authority),
            ("content-type", "application/json"),
            ("x-drone-event", "build"),
            ("webhook-id", &webhook_id),
            ("user-agent", USER_AGENT),
        ]);
        if let Some(secret) = &self.cfg.webhook_secret {
            let signed = signature::sign(secret.as_bytes(), &body, now_ms);
            headers.extend(owned(&[
                ("date", &signed.date),
                ("digest", &signed.digest),
                ("signature", &signed.signature),
            ]));
        }
        OutgoingCall {
            id,
            cluster: self.cfg.pipeline_cluster.clone(),
            headers,
            body,
            timeout_ms: self.cfg.call_timeout_ms,
        }
    }

    /// Calls whose answer never came (the host should always answer, but a lost callback must
    /// not leak budget forever) are failed after twice their timeout.
    pub(super) fn expire_calls(&mut self, now_ms: u64) {
        let deadline = self.cfg.call_timeout_ms.saturating_mul(2).max(1000);
        for id in self.calls.overdue(now_ms, deadline) {
            self.counters.calls_expired += 1;
            let _ = self.on_response(id, CallResult::Failed, now_ms);
        }
    }

    /// Whether the re-delivery `id` on its way is no longer needed: evidence settled its
    /// version, or a newer one, since it was planned (cluster mode: another replica's record
    /// read after drone answered). Any other call is never superseded.
    pub fn superseded(&self, id: CallId) -> bool {
        let Some((Pending::Deliver { key, what }, _)) = self.calls.inflight.get(&id) else {
            return false;
        };
        match self.ledger.get(key) {
            Some(e) => e.settled_version() >= what.version(),
            None => self
                .ledger
                .tombstone(key)
                .is_some_and(|v| v >= what.version()),
        }
    }

    /// The call `id`, held by the shell since it was planned (cluster mode: a re-delivery
    /// waiting for the records to vouch for it), leaves now: the deadline after which it is
    /// given up runs from `now_ms`, so the hold does not eat the time its answer has.
    pub fn sending(&mut self, id: CallId, now_ms: u64) {
        self.calls.restart(id, now_ms);
    }

    /// Takes back a call that was never sent (a superseded re-delivery, or one a sidecar that
    /// stopped leading the cluster will not make): nothing is counted, and its build is
    /// looked at again after `stale_after_ms`, as after news.
    pub fn withdraw(&mut self, id: CallId, now_ms: u64) {
        let Some(pending) = self.calls.take(id) else {
            return;
        };
        let key = match pending {
            Pending::Deliver { key, .. }
            | Pending::FetchBuild { key, .. }
            | Pending::FetchRepo { key, .. } => key,
            _ => return,
        };
        let due = now_ms.saturating_add(self.rng.jitter(self.cfg.stale_after_ms));
        self.ledger.update(&key, |e| {
            if e.next_due_ms == crate::core::ledger::NOT_SCHEDULED {
                e.next_due_ms = due;
            }
        });
        self.sync_gauges();
    }

    /// The answer to a call. May ask for a follow-up call (a re-delivery).
    pub fn on_response(
        &mut self,
        id: CallId,
        result: CallResult,
        now_ms: u64,
    ) -> Vec<OutgoingCall> {
        let Some(pending) = self.calls.take(id) else {
            return Vec::new();
        };
        let out = match pending {
            Pending::FetchBuild {
                key,
                claim,
                asked_by,
            } => self.on_build(key, claim, asked_by, result, now_ms),
            Pending::ConfirmRepo { repo } => {
                self.on_confirm(repo, result, now_ms);
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
            Pending::Deliver { key, what } => {
                self.on_delivered(key, what, result, now_ms);
                Vec::new()
            }
        };
        self.sync_gauges();
        out
    }
}
