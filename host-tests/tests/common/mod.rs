//! Shared pieces of the scenario tests: fixtures shaped like drone's payloads, a small drone
//! that answers the REST API from its own state, and a pipeline that records what it received.
//! The host setup itself (wasm, configuration, token, metrics) is in `setup.rs`, which the
//! benchmarks share.

#![allow(dead_code)]

mod setup;

pub use setup::*;

use host_tests::{CallReply, CallRequest, Host, HostConfig, UpstreamReply};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

fn fixture(name: &str) -> Value {
    fixture_json(name)
}

/// [`host_config`] with drone's webhook secret (`signature_mode` `enforce` unless `extra`
/// says otherwise): [`send_live`]'s webhooks verify and are evidence.
pub fn signed_host_config(workers: usize, extra: &str) -> HostConfig {
    let mut cfg = host_config(
        workers,
        &format!(r#","webhook_secret_env":"HOOK_SECRET"{extra}"#),
    );
    cfg.env.push(("HOOK_SECRET".into(), HOOK_SECRET.into()));
    cfg
}

/// A drone webhook body for one build transition (drone's step/teardown `build:updated`, or
/// `build:created`), built from the fixtures.
pub fn webhook(repo: u64, number: u64, status: &str, version: u64) -> Vec<u8> {
    let mut v = if status == "pending" {
        fixture("webhook-build-created.json")
    } else {
        fixture("webhook-build-updated-running.json")
    };
    v["repo"]["id"] = repo_id(repo).into();
    v["repo"]["name"] = format!("repo-{repo}").into();
    v["repo"]["slug"] = format!("octocat/repo-{repo}").into();
    v["build"]["number"] = number.into();
    v["build"]["status"] = status.into();
    v["build"]["version"] = version.into();
    v["build"]["repo_id"] = repo_id(repo).into();
    if v["repo"].get("build").is_some() {
        v["repo"]["build"] = v["build"].clone();
    }
    serde_json::to_vec(&v).expect("serialize")
}

/// The drone API answer for a build.
pub fn api_build(repo: u64, number: u64, status: &str, version: u64) -> Vec<u8> {
    let mut v = fixture("api-build-success.json");
    v["repo_id"] = repo_id(repo).into();
    v["number"] = number.into();
    v["status"] = status.into();
    v["version"] = version.into();
    let mut body = serde_json::to_vec(&v).expect("serialize");
    body.push(b'\n');
    body
}

/// The drone API answer for a repository (`GET /api/repos/{owner}/{name}`), with the
/// fixture's `counter`.
pub fn api_repo(repo: u64) -> Vec<u8> {
    let counter = fixture("webhook-build-created.json")["repo"]["counter"]
        .as_u64()
        .unwrap_or(0);
    api_repo_counter(repo, counter)
}

/// [`api_repo`] with `counter`: the last build number drone allocated in the repository.
pub fn api_repo_counter(repo: u64, counter: u64) -> Vec<u8> {
    let mut v = fixture("webhook-build-created.json")["repo"].clone();
    v["counter"] = counter.into();
    v["id"] = repo_id(repo).into();
    v["name"] = format!("repo-{repo}").into();
    v["slug"] = format!("octocat/repo-{repo}").into();
    let mut body = serde_json::to_vec(&v).expect("serialize");
    body.push(b'\n');
    body
}

/// Drone's current state of every build, and the API calls it received.
#[derive(Default)]
pub struct Drone {
    pub builds: BTreeMap<(u64, u64), (String, u64)>,
    /// Numbers taken (`repos.Increment`) beyond the builds written, per repository.
    pub allocated: BTreeMap<u64, u64>,
    pub calls: Vec<(u64, String)>,
    pub down: bool,
}

pub type SharedDrone = Rc<RefCell<Drone>>;

impl Drone {
    pub fn set(&mut self, repo: u64, number: u64, status: &str, version: u64) {
        self.builds
            .insert((repo, number), (status.to_string(), version));
    }
    /// Build lookups (`GET /api/repos/{o}/{n}/builds/{number}`), without the repository
    /// lookups of discovery and confirmation.
    pub fn build_calls(&self) -> usize {
        self.calls
            .iter()
            .filter(|(_, p)| p.starts_with("/api/repos/") && p.contains("/builds/"))
            .count()
    }
    pub fn calls_for(&self, path_suffix: &str) -> usize {
        self.calls
            .iter()
            .filter(|(_, p)| p.ends_with(path_suffix))
            .count()
    }
}

/// Installs a drone responder: answers `GET /api/repos/octocat/repo-<r>/builds/<n>` from the
/// state, 404 (drone's body) for unknown builds, 401 without the token, 503 while down.
pub fn install_drone(host: &mut Host) -> SharedDrone {
    let drone: SharedDrone = Rc::new(RefCell::new(Drone::default()));
    share_drone(host, &drone);
    drone
}

/// [`install_drone`] with a drone other hosts answer from too (several Envoys, one drone).
pub fn share_drone(host: &mut Host, drone: &SharedDrone) {
    let d = drone.clone();
    host.set_responder("drone", move |req: &CallRequest, now: u64| {
        let mut d = d.borrow_mut();
        d.calls.push((now, req.path().to_string()));
        if d.down {
            return CallReply::ConnectFailure;
        }
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return CallReply::status(401, r#"{"message":"Unauthorized"}"#);
        }
        let parts: Vec<&str> = req.path().trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["api", "repos", "octocat", name] => {
                let repo: u64 = name.trim_start_matches("repo-").parse().unwrap_or(0);
                let counter = d
                    .builds
                    .keys()
                    .filter(|(r, _)| *r == repo)
                    .map(|(_, n)| *n)
                    .max()
                    .unwrap_or(0)
                    .max(d.allocated.get(&repo).copied().unwrap_or(0));
                CallReply::ok(api_repo_counter(repo, counter))
            }
            // Drone's OSS build (admin-only and 501 there; see drone_sim for the other).
            ["api", "builds", "incomplete"] => {
                CallReply::status(501, r#"{"message":"Not Implemented"}"#)
            }
            ["api", "repos", "octocat", name, "builds", number] => {
                let repo: u64 = name.trim_start_matches("repo-").parse().unwrap_or(0);
                let number: u64 = number.parse().unwrap_or(0);
                match d.builds.get(&(repo, number)) {
                    Some((status, version)) => {
                        CallReply::ok(api_build(repo, number, status, *version))
                    }
                    None => CallReply::status(404, r#"{"message":"sql: no rows in result set"}"#),
                }
            }
            _ => CallReply::status(404, r#"{"message":"Not Found"}"#),
        }
    });
}

/// What the pipeline believes about each build, and every delivery it received.
#[derive(Default)]
pub struct Pipeline {
    /// (repo id, number) → (status, version), highest version wins.
    pub view: BTreeMap<(u64, u64), (String, u64)>,
    pub received: Vec<Value>,
    pub webhook_ids: Vec<String>,
    /// Status to answer re-deliveries with.
    pub answer: u16,
}

pub type SharedPipeline = Rc<RefCell<Pipeline>>;

impl Pipeline {
    pub fn record(&mut self, body: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            let key = (
                v["repo"]["id"].as_u64().unwrap_or(0),
                v["build"]["number"].as_u64().unwrap_or(0),
            );
            let status = v["build"]["status"].as_str().unwrap_or("").to_string();
            let version = v["build"]["version"].as_u64().unwrap_or(0);
            let entry = self.view.entry(key).or_insert((String::new(), 0));
            if version > entry.1 {
                *entry = (status, version);
            }
            self.received.push(v);
        }
    }
    pub fn status_of(&self, repo: u64, number: u64) -> Option<(String, u64)> {
        self.view.get(&(repo_id(repo), number)).cloned()
    }
}

/// Installs the pipeline responder for re-deliveries (the `pipeline` cluster).
pub fn install_pipeline(host: &mut Host) -> SharedPipeline {
    let pipeline: SharedPipeline = Rc::new(RefCell::new(Pipeline {
        answer: 200,
        ..Default::default()
    }));
    let p = pipeline.clone();
    host.set_responder("pipeline", move |req: &CallRequest, _now: u64| {
        let mut p = p.borrow_mut();
        assert_eq!(req.method(), "POST");
        assert_eq!(req.path(), "/hook");
        assert_eq!(req.header("x-drone-event"), Some("build"));
        if let Some(id) = req.header("webhook-id") {
            p.webhook_ids.push(id.to_string());
        }
        let answer = p.answer;
        if (200..300).contains(&answer) {
            p.record(&req.body);
        }
        CallReply::status(answer, "")
    });
    pipeline
}

/// Sends a live webhook through VM `vm`, signed with [`HOOK_SECRET`] as drone would sign it
/// (evidence under [`signed_host_config`]; without a secret the headers are not looked at);
/// the pipeline answers `status` (and records it on 2xx).
pub fn send_live(
    host: &mut Host,
    pipeline: &SharedPipeline,
    vm: usize,
    body: Vec<u8>,
    status: u16,
) -> host_tests::StreamOutcome {
    let p = pipeline.clone();
    let req = signed_hook_request(body, host.now_ms());
    host.request(vm, req, move |up| {
        if (200..300).contains(&status) {
            p.borrow_mut().record(&up.body);
        }
        UpstreamReply::status(status)
    })
    .expect("request")
}

/// A host started with `cfg`, with [`install_drone`] and [`install_pipeline`].
pub fn start_host(cfg: HostConfig) -> (Host, SharedDrone, SharedPipeline) {
    let mut host = Host::start(cfg).expect("host starts");
    let drone = install_drone(&mut host);
    let pipeline = install_pipeline(&mut host);
    (host, drone, pipeline)
}

/// Drone writes build `repo/number` and its webhook passes live through VM 0 (the pipeline
/// answers 200).
pub fn drone_writes_and_sends(
    host: &mut Host,
    (drone, pipeline): (&SharedDrone, &SharedPipeline),
    (repo, number): (u64, u64),
    (status, version): (&str, u64),
) {
    drone.borrow_mut().set(repo, number, status, version);
    send_live(
        host,
        pipeline,
        0,
        webhook(repo, number, status, version),
        200,
    );
}
