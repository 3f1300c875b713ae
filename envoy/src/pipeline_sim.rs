//! `pipeline-sim`: the demo "pipeline" service behind the sidecar.
//!
//! It believes what webhooks tell it, the way a careful consumer would: per build, the highest
//! `build.version` wins (drone's optimistic-lock counter is the only reliable order), and a
//! delivery whose `webhook-id` it has already accepted is acknowledged and dropped. It can be
//! told to fail (500, 400, …) for specific builds or for everything, which is how the tests
//! check that the filter retries what was not accepted and leaves alone what was refused. It
//! keeps every request it received (headers, a hash of the body, and the body itself within a
//! memory budget) so tests can check that bodies pass through the sidecar unchanged.
//!
//! [`PipelineSim::check_signatures`] makes it check drone's signature on every request it
//! gets (recorded in [`Received::signed`]) and, if told to, refuse the ones that fail with a
//! 401, as a pipeline that verifies `DRONE_WEBHOOK_SECRET` does.
//!
//! [`PipelineSim::replica`] starts another replica of the same pipeline: its own port, the
//! same store (belief, accepted ids, what was received, failure rules), as replicas of a
//! real pipeline share their database. Each request records which replica took it.

use crate::sim_server::SimServer;
use crate::util;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the pipeline believes about one build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewEntry {
    pub status: String,
    pub version: i64,
    /// `live` (drone, through the sidecar) or `redelivery` (sent by status-sync itself).
    pub via: String,
}

/// One request the pipeline received.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Received {
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// The `Host` header (HTTP/1.1 authority) the request arrived with.
    #[serde(default)]
    pub host: Option<String>,
    /// Which replica took it: 0 for the first [`PipelineSim`], then in [`PipelineSim::replica`] order.
    #[serde(default)]
    pub replica: usize,
    pub drone_event: Option<String>,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub webhook_id: Option<String>,
    /// Whether drone's signature (`Date`, `Digest` of this body, `Signature` over both with
    /// the secret) checked; `None` until [`PipelineSim::check_signatures`] gave a secret.
    #[serde(default)]
    pub signed: Option<bool>,
    pub len: usize,
    pub sha256: String,
    /// `slug#number` when the body is a parsable build webhook.
    pub build: Option<String>,
    pub status: Option<String>,
    pub version: Option<i64>,
    /// The status code we answered.
    pub answered: u16,
    /// `applied`, `stale` (older than what we have), `duplicate` (webhook-id seen),
    /// `failed` (we answered 5xx), `refused` (4xx), `unsigned` (401: the signature did not
    /// check and the pipeline refuses those), or `unparsable`.
    pub outcome: String,
}

impl Received {
    /// Sent by the sidecar's reconciler rather than passed through from drone.
    pub fn is_redelivery(&self) -> bool {
        self.user_agent
            .as_deref()
            .is_some_and(|u| u.starts_with("status-sync/"))
    }
}

/// A failure to inject: answer `code` to matching webhooks instead of accepting them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FailRule {
    /// `slug#number`; `None` matches every request.
    pub build: Option<String>,
    pub code: u16,
    /// Only webhooks whose build status is done (the final transitions).
    #[serde(default)]
    pub only_done: bool,
    /// Apply to this many requests, then expire; `None` = until removed.
    #[serde(default)]
    pub times: Option<u32>,
    /// Expire after this many milliseconds from when the rule was added.
    #[serde(default)]
    pub for_ms: Option<u64>,
    /// Only on this replica (see [`Received::replica`]); `None` = on every replica.
    #[serde(default)]
    pub replica: Option<usize>,
    /// Only requests to this exact path (as received); `None` = any path.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(skip)]
    added: Option<Instant>,
}

impl FailRule {
    /// Fail every request for `build` with `code`, forever.
    pub fn build(build: &str, code: u16) -> Self {
        FailRule {
            build: Some(build.to_string()),
            code,
            ..Default::default()
        }
    }

    /// Answer `code` to every request to `path` (exactly, as received): a path the pipeline
    /// has no route for, with 404.
    pub fn path(path: &str, code: u16) -> Self {
        FailRule {
            path: Some(path.to_string()),
            code,
            ..Default::default()
        }
    }

    /// Fail every request, for every build, with `code`.
    pub fn all(code: u16) -> Self {
        FailRule {
            code,
            ..Default::default()
        }
    }

    /// Only the final transitions (done statuses).
    pub fn only_done(mut self) -> Self {
        self.only_done = true;
        self
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Only for the next `ms` milliseconds.
    pub fn for_ms(mut self, ms: u64) -> Self {
        self.for_ms = Some(ms);
        self
    }

    /// Only on replica `i` (the others answer as usual).
    pub fn on_replica(mut self, i: usize) -> Self {
        self.replica = Some(i);
        self
    }
}

#[derive(Default)]
struct State {
    view: BTreeMap<String, ViewEntry>,
    seen_ids: HashSet<String>,
    received: Vec<Received>,
    bodies: BTreeMap<u64, Vec<u8>>,
    body_bytes: usize,
    rules: Vec<FailRule>,
    seq: u64,
    /// Replicas started so far (the next one's index).
    replicas: usize,
    /// Drone's webhook secret to check signatures with, and whether to refuse (401) a
    /// request whose signature does not check.
    signatures: Option<(String, bool)>,
}

struct Inner {
    state: Mutex<State>,
    body_budget: usize,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running pipeline simulator. Dropping it stops its threads.
pub struct PipelineSim {
    inner: Arc<Inner>,
    server: SimServer,
    replica: usize,
}

/// Largest body accepted at all (bigger than any test sends).
const MAX_BODY: u64 = 64 << 20;

impl PipelineSim {
    /// Listens on `127.0.0.1:port` (0 = any free port).
    pub fn start(port: u16) -> Result<PipelineSim> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                replicas: 1,
                ..State::default()
            }),
            body_budget: 32 << 20,
        });
        Self::serve(inner, port, 0)
    }

    fn serve(inner: Arc<Inner>, port: u16, replica: usize) -> Result<PipelineSim> {
        let http = inner.clone();
        let server =
            SimServer::start("pipeline-sim", port, move |req| handle(&http, req, replica))?;
        Ok(PipelineSim {
            inner,
            server,
            replica,
        })
    }

    /// Another replica of this pipeline on its own free port, sharing this one's store: what
    /// either believes, received or was told to fail is the other's too.
    pub fn replica(&self) -> Result<PipelineSim> {
        let index = {
            let mut st = self.inner.lock();
            st.replicas += 1;
            st.replicas - 1
        };
        Self::serve(self.inner.clone(), 0, index)
    }

    /// This replica's index ([`Received::replica`]).
    pub fn index(&self) -> usize {
        self.replica
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The pipeline's belief per build (`slug#number`).
    pub fn view(&self) -> BTreeMap<String, ViewEntry> {
        self.inner.lock().view.clone()
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().received.clone()
    }

    /// The body of request `seq`, if it was kept (bodies are kept within a memory budget).
    pub fn body(&self, seq: u64) -> Option<Vec<u8>> {
        self.inner.lock().bodies.get(&seq).cloned()
    }

    pub fn add_rule(&self, mut rule: FailRule) {
        rule.added = Some(Instant::now());
        self.inner.lock().rules.push(rule);
    }

    /// From now on, checks drone's signature on every request with `secret` (recorded in
    /// [`Received::signed`]); with `refuse`, answers 401 to a request whose signature does not
    /// check, before any rule, as a pipeline that verifies drone's signature does.
    pub fn check_signatures(&self, secret: &str, refuse: bool) {
        self.inner.lock().signatures = Some((secret.to_string(), refuse));
    }

    pub fn clear_rules(&self) {
        self.inner.lock().rules.clear();
    }
}

/// What a body says, if it is a build webhook: (`slug#number`, status, version).
fn parse(body: &[u8]) -> Option<(String, String, i64)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let b = v.get("build")?;
    let slug = v.pointer("/repo/slug")?.as_str()?;
    Some((
        format!("{slug}#{}", b.get("number")?.as_i64()?),
        b.get("status")?.as_str()?.to_string(),
        b.get("version")?.as_i64()?,
    ))
}

fn handle(inner: &Inner, mut req: tiny_http::Request, replica: usize) {
    let (path, _) = util::split_url(req.url());
    let method = req.method().to_string();
    if let Some(ctl) = path.strip_prefix("/_sim/") {
        return control(inner, req, &method, ctl);
    }
    let body = match util::read_body(&mut req, MAX_BODY) {
        Ok(b) => b,
        Err(e) => return util::respond(req, 400, "text/plain", format!("read error: {e}")),
    };
    let h = |n: &str| util::req_header(&req, n);
    let signature = (h("Date"), h("Digest"), h("Signature"));
    let mut rec = Received {
        seq: 0,
        method,
        path,
        host: h("Host"),
        replica,
        drone_event: h("X-Drone-Event"),
        content_type: h("Content-Type"),
        user_agent: h("User-Agent"),
        webhook_id: h("webhook-id"),
        signed: None,
        len: body.len(),
        sha256: util::sha256_hex(&body),
        build: None,
        status: None,
        version: None,
        answered: 200,
        outcome: String::new(),
    };
    let parsed = parse(&body);
    let mut st = inner.lock();
    st.seq += 1;
    rec.seq = st.seq;
    let refuse_unsigned = st.signatures.as_ref().is_some_and(|(secret, refuse)| {
        let ok = match &signature {
            (Some(date), Some(digest), Some(sig)) => {
                *digest == util::digest_header(&body)
                    && *sig == util::signature_header(secret, date, digest)
            }
            _ => false,
        };
        rec.signed = Some(ok);
        *refuse && !ok
    });
    if st.body_bytes + body.len() <= inner.body_budget {
        st.body_bytes += body.len();
        st.bodies.insert(rec.seq, body);
    }
    if let Some((key, status, version)) = &parsed {
        rec.build = Some(key.clone());
        rec.status = Some(status.clone());
        rec.version = Some(*version);
    }
    let (code, msg) = match parsed {
        _ if refuse_unsigned => {
            rec.outcome = "unsigned".into();
            (401, "signature does not check")
        }
        None => {
            rec.outcome = "unparsable".into();
            (400, "not a build webhook")
        }
        Some((key, status, version)) => {
            let done = crate::drone_model::is_done(&status);
            let now = Instant::now();
            st.rules.retain(|r| {
                r.times != Some(0)
                    && !matches!((r.for_ms, r.added), (Some(ms), Some(a)) if now.duration_since(a) >= Duration::from_millis(ms))
            });
            let rule = st.rules.iter_mut().find(|r| {
                r.build.as_ref().is_none_or(|b| b == &key)
                    && (!r.only_done || done)
                    && r.replica.is_none_or(|i| i == replica)
                    && r.path.as_ref().is_none_or(|p| *p == rec.path)
            });
            if let Some(rule) = rule {
                if let Some(t) = rule.times.as_mut() {
                    *t -= 1;
                }
                let code = rule.code;
                rec.outcome = if code >= 500 { "failed" } else { "refused" }.into();
                (code, "injected failure")
            } else if rec
                .webhook_id
                .as_ref()
                .is_some_and(|id| st.seen_ids.contains(id))
            {
                rec.outcome = "duplicate".into();
                (200, "duplicate")
            } else {
                if let Some(id) = &rec.webhook_id {
                    st.seen_ids.insert(id.clone());
                }
                let via = if rec.is_redelivery() {
                    "redelivery"
                } else {
                    "live"
                };
                let newer = st.view.get(&key).is_none_or(|e| version > e.version);
                if newer {
                    st.view.insert(
                        key,
                        ViewEntry {
                            status,
                            version,
                            via: via.into(),
                        },
                    );
                    rec.outcome = "applied".into();
                } else {
                    rec.outcome = "stale".into();
                }
                (200, "ok")
            }
        }
    };
    rec.answered = code;
    st.received.push(rec);
    drop(st);
    util::respond(
        req,
        code,
        "application/json",
        serde_json::json!({ "message": msg }).to_string(),
    );
}

fn control(inner: &Inner, mut req: tiny_http::Request, method: &str, ctl: &str) {
    let json = |req: tiny_http::Request, v: serde_json::Value| {
        util::respond(req, 200, "application/json", v.to_string())
    };
    match (method, ctl) {
        ("GET", "view") => {
            let v = serde_json::to_value(inner.lock().view.clone()).unwrap_or_default();
            json(req, v)
        }
        ("GET", "received") => {
            let v = serde_json::to_value(inner.lock().received.clone()).unwrap_or_default();
            json(req, v)
        }
        ("POST", "rules") => {
            let body = util::read_body(&mut req, 1 << 20).unwrap_or_default();
            match serde_json::from_slice::<FailRule>(&body) {
                Ok(mut r) => {
                    r.added = Some(Instant::now());
                    inner.lock().rules.push(r);
                    json(req, serde_json::json!({"ok": true}))
                }
                Err(e) => util::respond(req, 400, "text/plain", e.to_string()),
            }
        }
        ("DELETE", "rules") => {
            inner.lock().rules.clear();
            json(req, serde_json::json!({"ok": true}))
        }
        _ => util::respond(req, 404, "text/plain", "not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(port: u16, body: &str, id: Option<&str>, ua: &str) -> u16 {
        let a = util::agent(Duration::from_secs(5));
        let mut r = a
            .post(&format!("http://127.0.0.1:{port}/hook"))
            .set("X-Drone-Event", "build")
            .set("User-Agent", ua);
        if let Some(id) = id {
            r = r.set("webhook-id", id);
        }
        util::send(r, Some(body.as_bytes())).unwrap().0
    }

    fn hook(n: i64, status: &str, version: i64) -> String {
        format!(
            r#"{{"event":"build","action":"updated","repo":{{"slug":"o/r"}},"build":{{"number":{n},"status":"{status}","version":{version}}}}}"#
        )
    }

    #[test]
    fn highest_version_wins_and_ids_dedupe() {
        let p = PipelineSim::start(0).unwrap();
        assert_eq!(
            post(p.port(), &hook(1, "running", 2), None, "Go-http-client/1.1"),
            200
        );
        assert_eq!(
            post(p.port(), &hook(1, "pending", 1), None, "Go-http-client/1.1"),
            200
        );
        assert_eq!(p.view()["o/r#1"].status, "running");
        // A re-delivery, then the same one again (same webhook-id): applied once.
        for _ in 0..2 {
            let code = post(
                p.port(),
                &hook(1, "success", 3),
                Some("x"),
                "status-sync/0.1.0",
            );
            assert_eq!(code, 200);
        }
        let v = &p.view()["o/r#1"];
        assert_eq!(
            (v.status.as_str(), v.version, v.via.as_str()),
            ("success", 3, "redelivery")
        );
        let outcomes: Vec<String> = p.received().into_iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, ["applied", "stale", "applied", "duplicate"]);
        assert_eq!(post(p.port(), "{garbage", None, "x"), 400);
    }

    #[test]
    fn replicas_share_one_store_and_a_rule_can_target_one_replica() {
        let p = PipelineSim::start(0).unwrap();
        let r = p.replica().unwrap();
        assert_eq!((p.index(), r.index()), (0, 1));
        p.add_rule(FailRule::all(500).on_replica(1));
        assert_eq!(post(r.port(), &hook(1, "success", 3), Some("a"), "ua"), 500);
        assert_eq!(post(p.port(), &hook(1, "success", 3), Some("a"), "ua"), 200);
        p.clear_rules();
        // The id accepted by replica 0 is known to replica 1.
        assert_eq!(post(r.port(), &hook(1, "success", 3), Some("a"), "ua"), 200);
        let seen: Vec<(usize, String)> = r
            .received()
            .into_iter()
            .map(|x| (x.replica, x.outcome))
            .collect();
        assert_eq!(
            seen,
            [
                (1, "failed".to_string()),
                (0, "applied".to_string()),
                (1, "duplicate".to_string())
            ]
        );
        assert_eq!(r.view()["o/r#1"].status, "success");
        let host = p.received()[1].host.clone();
        assert_eq!(host, Some(format!("127.0.0.1:{}", p.port())));
    }

    /// Checking signatures: each request is recorded as signed or not; refusing, a request
    /// whose signature does not check (none, another secret, another body) gets a 401 and is
    /// not applied. A path rule answers for its exact path alone.
    #[test]
    fn signatures_are_recorded_and_refused_and_path_rules_match_one_path() {
        let p = PipelineSim::start(0).unwrap();
        p.check_signatures("s3cret", true);
        p.add_rule(FailRule::path("/hook/x", 404));
        let send = |path: &str, secret: Option<&str>, body: &str, signed_body: &str| {
            let a = util::agent(Duration::from_secs(5));
            let mut r = a.post(&format!("http://127.0.0.1:{}{path}", p.port()));
            if let Some(secret) = secret {
                let date = util::http_date(util::unix_now());
                let digest = util::digest_header(signed_body.as_bytes());
                let sig = util::signature_header(secret, &date, &digest);
                r = r.set("Date", &date).set("Digest", &digest);
                r = r.set("Signature", &sig);
            }
            util::send(r, Some(body.as_bytes())).unwrap().0
        };
        let (b1, b2) = (hook(1, "running", 2), hook(1, "success", 3));
        assert_eq!(send("/hook", Some("s3cret"), &b1, &b1), 200);
        assert_eq!(send("/hook", None, &b2, &b2), 401);
        assert_eq!(send("/hook", Some("guess"), &b2, &b2), 401);
        assert_eq!(send("/hook", Some("s3cret"), &b2, &b1), 401, "other body");
        assert_eq!(send("/hook/x", Some("s3cret"), &b2, &b2), 404);
        let seen: Vec<(Option<bool>, u16, String)> = p
            .received()
            .into_iter()
            .map(|r| (r.signed, r.answered, r.outcome))
            .collect();
        let want = [
            (Some(true), 200, "applied"),
            (Some(false), 401, "unsigned"),
            (Some(false), 401, "unsigned"),
            (Some(false), 401, "unsigned"),
            (Some(true), 404, "refused"),
        ];
        let want: Vec<(Option<bool>, u16, String)> = want
            .iter()
            .map(|(s, c, o)| (*s, *c, o.to_string()))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(p.view()["o/r#1"].status, "running");
        // Recording without refusing: the pipeline takes whatever comes, and says which.
        p.check_signatures("s3cret", false);
        assert_eq!(send("/hook", None, &b2, &b2), 200);
        assert_eq!(p.received().last().unwrap().signed, Some(false));
        assert_eq!(p.view()["o/r#1"].status, "success");
    }

    #[test]
    fn injected_failures_do_not_apply() {
        let p = PipelineSim::start(0).unwrap();
        p.add_rule(FailRule::build("o/r#1", 500).times(1));
        p.add_rule(FailRule::build("o/r#2", 400));
        assert_eq!(post(p.port(), &hook(1, "success", 3), Some("a"), "ua"), 500);
        // The failed id was not remembered: the retry is applied.
        assert_eq!(post(p.port(), &hook(1, "success", 3), Some("a"), "ua"), 200);
        assert_eq!(post(p.port(), &hook(2, "success", 3), Some("b"), "ua"), 400);
        let view = p.view();
        assert_eq!(view["o/r#1"].status, "success");
        assert!(!view.contains_key("o/r#2"));
    }
}
