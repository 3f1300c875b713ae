//! `drone-sim`: a drone-server 2.25 stand-in on loopback, faithful where the filter can tell.
//!
//! The drone it stands for is `drone_model::server::Drone`, a sans-IO model of drone-server
//! (its build lifecycle, the webhooks it sends and when, the REST API the filter polls, which
//! webhooks get lost): see that module for what drone does. This module only puts it on the
//! wire, in real time:
//!
//! - a runner thread runs the model's events when they are due (virtual time here is the
//!   milliseconds since the simulator started) and sends each webhook the way drone's
//!   `plugin/webhook` does: once, synchronously, signed, ignoring the response code, never
//!   retried;
//! - HTTP threads answer the API from the model, and `/_sim/*`, the simulator's own control
//!   surface (stats, webhooks, builds, outage) for the standalone binary.

use crate::sim_server::SimServer;
use crate::util;
use anyhow::Result;
use drone_model::server::{self, Answer, Drone, Outgoing};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use drone_model::server::{
    ApiStats, BuildKey, BuildPlan, BuildState, LossPolicy, WebhookRecord,
};
pub use drone_model::Outcome;

/// Configuration of a [`DroneSim`].
#[derive(Clone, Debug)]
pub struct DroneSimConfig {
    /// Bearer token the API accepts (the admin machine user's token).
    pub token: String,
    /// Where webhooks go (drone's `DRONE_WEBHOOK_ENDPOINT`); `None` = nowhere, all are lost.
    pub webhook_url: Option<String>,
    /// Drone's `DRONE_WEBHOOK_SECRET` (drone signs even with an empty one).
    pub webhook_secret: String,
    pub loss: LossPolicy,
    pub seed: u64,
    /// Number of repositories (`octocat/hello-world`, `octocat/spoon-knife`, …).
    pub repos: usize,
    /// Built with `-tags oss`: `GET /api/builds/incomplete` answers 501.
    pub oss: bool,
}

impl Default for DroneSimConfig {
    fn default() -> Self {
        DroneSimConfig {
            token: "sim-token-0123456789abcdef".into(),
            webhook_url: None,
            webhook_secret: String::new(),
            loss: LossPolicy::default(),
            seed: 1,
            repos: 3,
            oss: false,
        }
    }
}

struct State {
    drone: Drone,
    webhook_url: Option<String>,
    /// Events being processed right now (so `idle()` is not fooled by an empty queue).
    busy: bool,
}

struct Inner {
    token: String,
    webhook_secret: String,
    state: Mutex<State>,
    wake: Condvar,
    started: Instant,
    agent: ureq::Agent,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler thread must not wedge the simulator for the test reading it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model's virtual time: milliseconds since the simulator started.
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// A running drone simulator. Dropping it stops its threads.
pub struct DroneSim {
    inner: Arc<Inner>,
    server: SimServer,
}

impl DroneSim {
    /// Starts the API on `127.0.0.1:port` (0 = any free port) and the build runner.
    pub fn start(cfg: DroneSimConfig, port: u16) -> Result<DroneSim> {
        let drone = Drone::new(server::Config {
            token: cfg.token.clone(),
            loss: cfg.loss.clone(),
            seed: cfg.seed,
            repos: cfg.repos,
            oss: cfg.oss,
            epoch_unix: util::unix_now(),
        });
        let inner = Arc::new(Inner {
            token: cfg.token,
            webhook_secret: cfg.webhook_secret,
            state: Mutex::new(State {
                drone,
                webhook_url: cfg.webhook_url,
                busy: false,
            }),
            wake: Condvar::new(),
            started: Instant::now(),
            agent: util::agent(Duration::from_secs(10)),
        });
        let http = inner.clone();
        let mut server = SimServer::start("drone-sim", port, move |req| handle(&http, req))?;
        let runner = inner.clone();
        server.spawn("drone-sim-runner", move |stop| run(&runner, stop))?;
        Ok(DroneSim { inner, server })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// `namespace/name` of every simulated repository.
    pub fn repos(&self) -> Vec<String> {
        self.inner.lock().drone.repos()
    }

    /// Where webhooks go from now on (drone's endpoint; here usually Envoy's listener).
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.inner.lock().webhook_url = url;
    }

    /// Schedules a build to be created `after` from now; returns the number it will get.
    /// Creations in one repository keep their scheduling order, as build numbers do.
    pub fn schedule(&self, plan: BuildPlan, after: Duration) -> BuildKey {
        let at = self.inner.now_ms() + after.as_millis() as u64;
        let key = self.inner.lock().drone.schedule(plan, at);
        self.inner.wake.notify_all();
        key
    }

    /// Drone's view of every build (what the pipeline should converge to).
    pub fn builds(&self) -> Vec<BuildState> {
        self.inner.lock().drone.builds()
    }

    /// Every webhook drone produced so far, in order.
    pub fn webhooks(&self) -> Vec<WebhookRecord> {
        self.inner.lock().drone.webhooks().to_vec()
    }

    /// The plan a build was scheduled with.
    pub fn plan(&self, key: &BuildKey) -> Option<BuildPlan> {
        self.inner.lock().drone.plan(key).cloned()
    }

    pub fn stats(&self) -> ApiStats {
        self.inner.lock().drone.stats()
    }

    /// Moves build `key`'s timestamps `by` into the past (see `Drone::backdate`); false if
    /// there is no such build.
    pub fn backdate(&self, key: &BuildKey, by: Duration) -> bool {
        self.inner.lock().drone.backdate(key, by.as_secs() as i64)
    }

    /// While down, every API call is answered 503 (and counted in `calls_while_down`).
    pub fn set_down(&self, down: bool) {
        self.inner.lock().drone.set_down(down);
    }

    /// True when every scheduled event has run and every build is done.
    pub fn idle(&self) -> bool {
        let st = self.inner.lock();
        !st.busy && st.drone.idle()
    }
}

impl Drop for DroneSim {
    fn drop(&mut self) {
        self.server.stop();
        self.inner.wake.notify_all();
    }
}

/// The runner: runs the model's events when they are due, in time order, and sends the
/// webhooks they produce, synchronously and one at a time, as drone's runner RPC does.
fn run(inner: &Inner, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut st = inner.lock();
        let now = inner.now_ms();
        let receiving = st.webhook_url.is_some();
        let wait = match st.drone.next_due() {
            Some(at) if at <= now => None,
            Some(at) => Some(Duration::from_millis(at - now).min(Duration::from_millis(200))),
            None => Some(Duration::from_millis(200)),
        };
        if let Some(wait) = wait {
            let _ = inner.wake.wait_timeout(st, wait);
            continue;
        }
        let Some(sends) = st.drone.run_next(now, receiving) else {
            continue;
        };
        st.busy = true;
        let url = st.webhook_url.clone();
        drop(st);
        for p in sends {
            deliver(inner, url.as_deref(), p);
        }
        inner.lock().busy = false;
    }
}

/// Sends one webhook the way drone's `plugin/webhook` does: once, synchronously, ignoring the
/// status code (the model decided whether it is lost).
fn deliver(inner: &Inner, url: Option<&str>, p: Outgoing) {
    let at_ms = inner.now_ms();
    let (mut http_status, mut transport_error) = (None, None);
    if let (false, Some(url)) = (p.lost, url) {
        let date = util::http_date(util::unix_now());
        let digest = util::digest_header(&p.body);
        let sig = util::signature_header(&inner.webhook_secret, &date, &digest);
        let req = inner
            .agent
            .post(url)
            .set("X-Drone-Event", "build")
            .set("Content-Type", "application/json")
            .set("Digest", &digest)
            .set("Date", &date)
            .set("Signature", &sig)
            .set("User-Agent", "Go-http-client/1.1");
        match util::send(req, Some(&p.body)) {
            Ok((code, _)) => http_status = Some(code),
            Err(e) => transport_error = Some(e),
        }
    }
    let rec = p.record(at_ms, http_status, transport_error);
    inner.lock().drone.record(rec);
}

fn handle(inner: &Inner, req: tiny_http::Request) {
    let (path, _) = util::split_url(req.url());
    if let Some(ctl) = path.strip_prefix("/_sim/") {
        return control(inner, req, ctl);
    }
    let auth = util::req_header(&req, "Authorization");
    let method = req.method().as_str().to_ascii_uppercase();
    let a = inner.lock().drone.api(&method, req.url(), auth.as_deref());
    util::respond(req, a.status, a.content_type, a.body);
}

/// `/_sim/*`: the simulator's own control surface (not drone's), for the standalone binary.
fn control(inner: &Inner, req: tiny_http::Request, ctl: &str) {
    use tiny_http::Method::*;
    let mut st = inner.lock();
    let a = match (req.method(), ctl) {
        (Get, "stats") => Answer::json(&st.drone.stats()),
        (Get, "webhooks") => Answer::json(&st.drone.webhooks()),
        (Get, "builds") => Answer::json(&st.drone.builds()),
        (Post, "down") => {
            st.drone.set_down(true);
            Answer::json(&serde_json::json!({"down": true}))
        }
        (Post, "up") => {
            st.drone.set_down(false);
            Answer::json(&serde_json::json!({"down": false}))
        }
        _ => Answer::not_found(),
    };
    drop(st);
    util::respond(req, a.status, a.content_type, a.body);
}
#[cfg(test)]
mod tests {
    use super::*;
    use drone_model::shapes::{Build, Repo};

    fn wait(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (X-Drone-Event, body) of every webhook received.
    type Got = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

    /// A simulator sending its webhooks to a receiver that records them and answers 500
    /// (drone ignores the answer: the tests prove it).
    fn with_receiver(cfg: DroneSimConfig) -> (DroneSim, Got, SimServer) {
        let got: Got = Arc::default();
        let g = got.clone();
        let receiver = SimServer::start("receiver", 0, move |mut r| {
            let ev = util::req_header(&r, "X-Drone-Event").unwrap_or_default();
            let body = util::read_body(&mut r, 1 << 20).unwrap();
            g.lock().unwrap().push((ev, body));
            util::respond(r, 500, "text/plain", "nope");
        })
        .unwrap();
        let url = format!("http://127.0.0.1:{}/hook", receiver.port());
        let cfg = DroneSimConfig {
            webhook_url: Some(url),
            ..cfg
        };
        (DroneSim::start(cfg, 0).unwrap(), got, receiver)
    }

    /// Once the simulator is idle (every webhook sent and answered): what the receiver got.
    fn received(sim: &DroneSim, got: &Got) -> Vec<(String, Vec<u8>)> {
        wait("idle", || sim.idle());
        got.lock().unwrap().clone()
    }

    fn field(body: &[u8], ptr: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v.pointer(ptr).cloned().unwrap_or(serde_json::Value::Null)
    }

    /// `GET` on the simulator's API, with the token or without: (status, body).
    fn get(sim: &DroneSim, path: &str, auth: bool) -> (u16, String) {
        let a = util::agent(Duration::from_secs(5));
        let mut r = a.get(&format!("http://127.0.0.1:{}{path}", sim.port()));
        if auth {
            r = r.set("Authorization", &format!("Bearer {}", sim.token()));
        }
        let (c, b) = util::send(r, None).unwrap();
        (c, String::from_utf8(b).unwrap())
    }

    #[test]
    fn lifecycle_is_faithful_to_drone() {
        let (sim, got, _receiver) = with_receiver(DroneSimConfig::default());
        let mut plan = BuildPlan::new(0, Outcome::Success);
        plan.steps = 2;
        plan.step_ms = 40;
        let key = sim.schedule(plan, Duration::ZERO);
        let got = received(&sim, &got);
        // What the model sent (its tests pin drone's sequence: created, 2 × (start, end),
        // teardown) is what reached the receiver, in order, each POSTed once.
        let seen: Vec<(String, String, i64)> = got
            .iter()
            .map(|(ev, b)| {
                assert_eq!(ev, "build");
                let s = |p: &str| field(b, p).as_str().unwrap().to_string();
                (
                    s("/action"),
                    s("/build/status"),
                    field(b, "/build/version").as_i64().unwrap(),
                )
            })
            .collect();
        let sent: Vec<(String, String, i64)> = sim
            .webhooks()
            .into_iter()
            .map(|w| (w.action, w.status, w.version))
            .collect();
        assert_eq!(seen, sent);
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[5], ("updated".into(), "success".into(), 3));
        // created: user present, no stages, no repo.build; final: repo.build == build.
        assert!(field(&got[0].1, "/user/login").is_string());
        assert!(field(&got[0].1, "/build/stages").is_null());
        assert!(field(&got[0].1, "/repo/build").is_null());
        assert_eq!(field(&got[5].1, "/repo/build"), field(&got[5].1, "/build"));
        assert!(field(&got[5].1, "/user").is_null());
        assert_eq!(field(&got[5].1, "/system/version"), "2.25.0");
        // Drone ignored our 500s: one POST each, no retries.
        assert_eq!(sim.stats().webhooks_sent, 6);
        assert!(sim.webhooks().iter().all(|w| w.http_status == Some(500)));
        let b = sim.builds();
        assert_eq!(
            b,
            vec![BuildState {
                key,
                status: "success".into(),
                version: 3
            }]
        );
    }

    #[test]
    fn loss_policy_and_late_created() {
        let (sim, got, _receiver) = with_receiver(DroneSimConfig {
            loss: LossPolicy {
                share: 0.0,
                spare_first: true,
                all_finals: true,
            },
            ..Default::default()
        });
        let mut p = BuildPlan::new(1, Outcome::Failure);
        p.step_ms = 40;
        p.created_late = true;
        sim.schedule(p, Duration::ZERO);
        let statuses: Vec<String> = received(&sim, &got)
            .iter()
            .map(|(_, b)| field(b, "/build/status").as_str().unwrap().to_string())
            .collect();
        // The running step webhook overtook build:created; the failure was lost.
        assert_eq!(
            statuses,
            vec!["running", "pending", "running", "running", "running"]
        );
        let recs = sim.webhooks();
        assert_eq!(recs.len(), 6);
        assert!(recs.last().unwrap().lost && recs.last().unwrap().done);
        assert_eq!(sim.stats().webhooks_lost, 1);
    }

    /// `repos.Increment` before `builds.Create`: with `row_delay_ms` the counter moves first
    /// and a build scheduled later is written first; `/api/builds/incomplete` lists open
    /// builds newest first (admin only; 501 in the OSS build).
    #[test]
    fn counter_race_and_incomplete_builds() {
        let sim = DroneSim::start(DroneSimConfig::default(), 0).unwrap();
        let mut slow = BuildPlan::new(0, Outcome::Success);
        slow.row_delay_ms = 4_000;
        slow.step_ms = 3_000;
        let first = sim.schedule(slow, Duration::ZERO);
        let mut next = BuildPlan::new(0, Outcome::Success);
        next.step_ms = 3_000;
        let second = sim.schedule(next, Duration::from_millis(50));
        assert_eq!(second.number, first.number + 1);
        let build = |k: &BuildKey| {
            get(
                &sim,
                &format!("/api/repos/{}/builds/{}", k.slug, k.number),
                true,
            )
            .0
        };
        wait("n written", || build(&second) == 200);
        assert_eq!(build(&first), 404, "n before n-1");
        let (_, repo) = get(&sim, &format!("/api/repos/{}", first.slug), true);
        assert!(
            repo.contains(&format!("\"counter\":{},", second.number)),
            "{repo}"
        );
        wait("n-1 written", || build(&first) == 200);
        let (c, list) = get(&sim, "/api/builds/incomplete", true);
        assert_eq!(c, 200);
        let rows: Vec<Repo> = serde_json::from_str(&list).unwrap();
        let numbers: Vec<i64> = rows
            .iter()
            .map(|r| r.build.as_ref().unwrap().number)
            .collect();
        assert_eq!(
            numbers,
            vec![first.number, second.number],
            "newest build id first"
        );
        assert!(rows
            .iter()
            .all(|r| r.build.as_ref().unwrap().stages.is_empty()));
        assert_eq!(get(&sim, "/api/builds/incomplete", false).0, 401);
        wait("idle", || sim.idle());
        assert_eq!(get(&sim, "/api/builds/incomplete", true).1, "[]\n");

        let oss = DroneSim::start(
            DroneSimConfig {
                oss: true,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        assert_eq!(get(&oss, "/api/builds/incomplete", true).0, 501);
    }

    #[test]
    fn api_shapes_auth_and_errors() {
        let sim = DroneSim::start(DroneSimConfig::default(), 0).unwrap();
        let mut p = BuildPlan::new(0, Outcome::Success);
        p.step_ms = 20;
        let key = sim.schedule(p, Duration::ZERO);
        wait("idle", || sim.idle());
        let path = format!("/api/repos/{}/builds/{}", key.slug, key.number);
        assert_eq!(
            get(&sim, &path, false),
            (401, "{\"message\":\"Unauthorized\"}\n".into())
        );
        let (c, body) = get(&sim, &path, true);
        assert_eq!(c, 200);
        assert!(body.ends_with("]}\n"));
        let b: Build = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (b.status.as_str(), b.version, b.stages[0].steps.len()),
            ("success", 3, 2)
        );
        // Byte-identical re-serialisation: the body has drone's exact key order.
        assert_eq!(serde_json::to_string(&b).unwrap(), body.trim_end());
        assert_eq!(
            get(&sim, &format!("/api/repos/{}/builds/999", key.slug), true),
            (404, String::from_utf8(Answer::no_rows().body).unwrap())
        );
        assert_eq!(
            get(&sim, &format!("/api/repos/{}/builds/abc", key.slug), true),
            (
                400,
                "{\"message\":\"strconv.ParseInt: parsing \\\"abc\\\": invalid syntax\"}\n".into()
            )
        );
        assert_eq!(get(&sim, "/api/repos/no/such/builds/1", true).0, 404);
        let (c, repo) = get(&sim, &format!("/api/repos/{}", key.slug), true);
        assert_eq!(c, 200);
        assert!(repo.contains("\"counter\":1,"));
        let (c, list) = get(
            &sim,
            &format!("/api/repos/{}/builds?page=1", key.slug),
            true,
        );
        assert_eq!(c, 200);
        assert!(list.starts_with("[{\"id\":5001,") && !list.contains("stages"));
        sim.set_down(true);
        assert_eq!(get(&sim, &path, true).0, 503);
        sim.set_down(false);
        let s = sim.stats();
        assert_eq!(s.build_calls[&key.to_string()], 1);
        assert_eq!(
            (s.calls_while_down, s.unauthorized, s.list_calls),
            (1, 1, 1)
        );
        // The control surface.
        assert_eq!(get(&sim, "/_sim/builds", false).0, 200);
        assert_eq!(get(&sim, "/_sim/nothing", false).0, 404);
    }
}
