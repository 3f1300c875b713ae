//! What the host-tests benchmarks share: drone-shaped bodies made fast from the fixtures, a
//! drone that answers the REST API from its own state, a pipeline that accepts everything, and
//! the plugin configuration.

#![allow(dead_code)]

pub mod report;
#[path = "../../tests/common/setup.rs"]
mod setup;

pub use setup::*;

use host_tests::{CallReply, CallRequest, Host, HostConfig, UpstreamReply};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A drone fixture (`testdata/drone/<name>`).
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    drone_model::fixtures::bytes(name).to_vec()
}

fn fixture(name: &str) -> Value {
    fixture_json(name)
}

/// Workers + main, fuel metering on.
pub fn host_config(workers: usize, extra: &str) -> HostConfig {
    let mut cfg = setup::host_config(workers, extra);
    // Envoy's default: info. The benchmarks do not read debug lines.
    cfg.log_level = 2;
    cfg.fuel = true;
    cfg
}

/// A body with placeholders, filled by plain string replacement (fast enough to make a
/// million webhooks).
struct Template(String);

const RID: &str = "\"@@RID@@\"";
const RNAME: &str = "@@RNAME@@";
const NUM: &str = "\"@@NUM@@\"";
const STATUS: &str = "@@STATUS@@";
const VER: &str = "\"@@VER@@\"";

impl Template {
    fn fill(&self, repo: u64, number: u64, status: &str, version: u64) -> Vec<u8> {
        self.0
            .replace(RID, &repo_id(repo).to_string())
            .replace(RNAME, &format!("repo-{repo}"))
            .replace(NUM, &number.to_string())
            .replace(STATUS, status)
            .replace(VER, &version.to_string())
            .into_bytes()
    }
}

fn mark_repo(repo: &mut Value) {
    repo["id"] = "@@RID@@".into();
    repo["name"] = RNAME.into();
    repo["slug"] = format!("octocat/{RNAME}").into();
}

fn mark_build(build: &mut Value) {
    build["repo_id"] = "@@RID@@".into();
    build["number"] = "@@NUM@@".into();
    build["status"] = STATUS.into();
    build["version"] = "@@VER@@".into();
}

/// Drone's webhook and API bodies for any repository, build, status and version.
pub struct Bodies {
    created: Template,
    updated: Template,
    api_build: Template,
    api_repo: Template,
}

impl Bodies {
    pub fn new() -> Self {
        let mut created = fixture("webhook-build-created.json");
        mark_repo(&mut created["repo"]);
        mark_build(&mut created["build"]);
        let mut updated = fixture("webhook-build-updated-running.json");
        mark_repo(&mut updated["repo"]);
        mark_build(&mut updated["build"]);
        if updated["repo"].get("build").is_some() {
            updated["repo"]["build"] = updated["build"].clone();
        }
        let mut api = fixture("api-build-success.json");
        mark_build(&mut api);
        let mut repo = fixture("webhook-build-created.json")["repo"].clone();
        mark_repo(&mut repo);
        let s = |v: &Value| Template(serde_json::to_string(v).expect("serialize"));
        Bodies {
            created: s(&created),
            updated: s(&updated),
            api_build: Template(format!("{}\n", s(&api).0)),
            api_repo: Template(format!("{}\n", s(&repo).0)),
        }
    }

    /// A live webhook: `build:created` for `pending`, else a `build:updated` like drone's
    /// step webhooks (the 3.5 KB fixture's shape).
    pub fn webhook(&self, repo: u64, number: u64, status: &str, version: u64) -> Vec<u8> {
        if status == "pending" {
            self.created.fill(repo, number, status, version)
        } else {
            self.updated.fill(repo, number, status, version)
        }
    }

    /// The webhook drone sends for `hook` (`drone_model::lifecycle`): `build:created` or a
    /// `build:updated` by its shape, with the row it carries.
    pub fn hook(&self, (repo, number): (u64, u64), hook: &drone_model::Hook) -> Vec<u8> {
        let template = match hook.shape {
            drone_model::Shape::Created => &self.created,
            drone_model::Shape::Updated | drone_model::Shape::Cancel => &self.updated,
        };
        template.fill(repo, number, hook.status, hook.version)
    }

    pub fn api_build(&self, repo: u64, number: u64, status: &str, version: u64) -> Vec<u8> {
        self.api_build.fill(repo, number, status, version)
    }

    pub fn api_repo(&self, repo: u64) -> Vec<u8> {
        self.api_repo.fill(repo, 0, "", 0)
    }
}

/// Drone's current state of every build, and how many API calls it answered.
#[derive(Default)]
pub struct Drone {
    pub builds: HashMap<(u64, u64), (&'static str, u64)>,
    pub build_calls: u64,
    pub repo_calls: u64,
    pub not_found: u64,
}

pub type SharedDrone = Rc<RefCell<Drone>>;

/// Answers `GET /api/repos/octocat/repo-<r>[/builds/<n>]` from the state, 404 otherwise.
pub fn install_drone(host: &mut Host, bodies: Rc<Bodies>) -> SharedDrone {
    let drone: SharedDrone = Rc::new(RefCell::new(Drone::default()));
    let d = drone.clone();
    host.set_responder("drone", move |req: &CallRequest, _now: u64| {
        let mut d = d.borrow_mut();
        let mut parts = req.path().trim_start_matches('/').split('/');
        let (Some("api"), Some("repos"), Some("octocat"), Some(name)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return CallReply::status(404, r#"{"message":"Not Found"}"#);
        };
        let repo: u64 = name.trim_start_matches("repo-").parse().unwrap_or(0);
        match (parts.next(), parts.next()) {
            (None, _) => {
                d.repo_calls += 1;
                CallReply::ok(bodies.api_repo(repo))
            }
            (Some("builds"), Some(n)) => {
                d.build_calls += 1;
                let number: u64 = n.parse().unwrap_or(0);
                match d.builds.get(&(repo, number)).copied() {
                    Some((status, version)) => {
                        CallReply::ok(bodies.api_build(repo, number, status, version))
                    }
                    None => {
                        d.not_found += 1;
                        CallReply::status(404, r#"{"message":"sql: no rows in result set"}"#)
                    }
                }
            }
            _ => CallReply::status(404, r#"{"message":"Not Found"}"#),
        }
    });
    drone
}

/// Re-deliveries the pipeline received (it answers 200 to all of them).
#[derive(Default)]
pub struct Pipeline {
    pub redeliveries: u64,
    /// (repo id, number) → highest version received by re-delivery.
    pub versions: HashMap<(u64, u64), u64>,
}

pub type SharedPipeline = Rc<RefCell<Pipeline>>;

pub fn install_pipeline(host: &mut Host) -> SharedPipeline {
    let pipeline: SharedPipeline = Rc::new(RefCell::new(Pipeline::default()));
    let p = pipeline.clone();
    host.set_responder("pipeline", move |req: &CallRequest, _now: u64| {
        let mut p = p.borrow_mut();
        p.redeliveries += 1;
        if let Ok(v) = serde_json::from_slice::<Value>(&req.body) {
            let key = (
                v["repo"]["id"].as_u64().unwrap_or(0),
                v["build"]["number"].as_u64().unwrap_or(0),
            );
            let version = v["build"]["version"].as_u64().unwrap_or(0);
            let e = p.versions.entry(key).or_insert(0);
            *e = (*e).max(version);
        }
        CallReply::status(200, "")
    });
    pipeline
}

/// Sends a live webhook through VM `vm`; the pipeline answers `status`.
pub fn send(host: &mut Host, vm: usize, body: Vec<u8>, status: u16) {
    host.request(vm, hook_request(body), move |_| {
        UpstreamReply::status(status)
    })
    .expect("request");
}

/// The VM whose root holds the lease now (the last one that logged taking it).
pub fn leader_vm(host: &Host) -> Option<usize> {
    host.logs_containing("reconciler elected")
        .last()
        .map(|l| l.vm)
}
