//! A small drone and pipeline around one reconciler, for the scenarios of `hints.rs`,
//! `trust.rs` and `reconciler.rs`: drone holds repositories (`octocat/hello-world` is 42, `octocat/repo-<id>` any
//! other id) and builds, and answers like drone 2.25 does (404 for unknown repositories and
//! builds, 400 for a build number that is not an int64, 501 for the list of incomplete builds
//! in its OSS build); the pipeline takes every re-delivery, and each is recorded.

use super::run_for;
use status_sync::core::config::Config;
use status_sync::core::model::{BuildKey, BuildStatus, DeliveryOutcome, ParsedWebhook, RepoRef};
use status_sync::core::observation::Observation;
use status_sync::core::reconciler::{CallResult, OutgoingCall, Reconciler};
use std::collections::BTreeMap;

/// Repository `id`: `octocat/hello-world` for 42, `octocat/repo-<id>` for any other.
pub fn repo_of(id: u64) -> RepoRef {
    let name = if id == 42 {
        "hello-world".to_string()
    } else {
        format!("repo-{id}")
    };
    RepoRef {
        id,
        namespace: "octocat".into(),
        name,
    }
}

/// Build `number` of repository `id`.
pub fn key_of(id: u64, number: u64) -> BuildKey {
    BuildKey {
        repo_id: id,
        number,
    }
}

/// The id of repository `ns/name` (see [`repo_of`]).
fn id_of(ns: &str, name: &str) -> Option<u64> {
    (ns == "octocat").then_some(())?;
    if name == "hello-world" {
        return Some(42);
    }
    name.strip_prefix("repo-")?.parse().ok()
}

/// Drone's repository object for [`repo_of`]`(id)` with its `counter`.
pub fn repo_json_of(id: u64, counter: u64) -> String {
    let r = repo_of(id);
    let (ns, name) = (r.namespace, r.name);
    format!(
        r#"{{"id":{id},"uid":"{id}","namespace":"{ns}","name":"{name}","slug":"{ns}/{name}","counter":{counter},"version":3,"archived":false}}"#
    )
}

/// Drone's webhook of build `number` of repository `id` at (`status`, `version`).
pub fn hook_of(id: u64, number: u64, status: &str, version: u64) -> ParsedWebhook {
    ParsedWebhook {
        repo: repo_of(id),
        number,
        status: BuildStatus::parse(status),
        version,
        action: "updated".into(),
        repo_json: Some(repo_json_of(id, 0)),
        system_json: Some(r#"{"proto":"https","host":"drone.example.com"}"#.into()),
    }
}

/// One build in drone: status, version, `finished` (Unix s, 0 while open or unknown).
#[derive(Clone)]
pub struct Build {
    pub status: String,
    pub version: u64,
    pub finished: u64,
}

/// Drone: builds by (repo id, number), and the ways it can misbehave.
#[derive(Default)]
pub struct Drone {
    pub builds: BTreeMap<(u64, u64), Build>,
    /// Answer every build lookup of this repository id with this status (e.g. 503, 403).
    pub fail: BTreeMap<u64, u16>,
    /// Numbers allocated beyond the builds written (`repos.Increment` before the row).
    pub allocated: BTreeMap<u64, u64>,
    /// `GET /api/builds/incomplete`: `None` answers 501 (drone's OSS build).
    pub incomplete: Option<Vec<(u64, u64)>>,
    /// Answer build lookups of this repository id as if they were another's (a name that
    /// moved to another repository).
    pub renamed: BTreeMap<u64, u64>,
    /// Every call answered 503.
    pub down: bool,
    /// The bearer token every call must carry, when set.
    pub token: Option<&'static str>,
    /// `updated` (Unix s) of a build not finished.
    pub open_updated: u64,
    /// The path of every call, in order.
    pub calls: Vec<String>,
    /// `octocat/hello-world`'s list of builds (`GET .../builds?...`), newest first: (number,
    /// status, version) each.
    pub list: Vec<(u64, &'static str, u64)>,
}

impl Drone {
    pub fn set(&mut self, id: u64, number: u64, status: &str, version: u64) {
        self.set_finished(id, number, status, version, 0);
    }

    /// [`Drone::set`], the build finished at `finished` (Unix s).
    pub fn set_finished(
        &mut self,
        id: u64,
        number: u64,
        status: &str,
        version: u64,
        finished: u64,
    ) {
        let b = Build {
            status: status.into(),
            version,
            finished,
        };
        self.builds.insert((id, number), b);
    }

    /// The repository's `counter`: the last number allocated.
    pub fn counter(&self, id: u64) -> u64 {
        // Builds are ordered by (repository, number): the last of the repository's range.
        let written = self.builds.range((id, 0)..=(id, u64::MAX)).next_back();
        written
            .map_or(0, |((_, n), _)| *n)
            .max(self.allocated.get(&id).copied().unwrap_or(0))
    }

    pub fn answer(&mut self, call: &OutgoingCall) -> CallResult {
        self.answer_with(call, &mut |_, _| None)
    }

    /// [`Drone::answer`], a build lookup answered by `builds(repo id, number)` where it says.
    pub fn answer_with(
        &mut self,
        call: &OutgoingCall,
        builds: &mut dyn FnMut(u64, u64) -> Option<CallResult>,
    ) -> CallResult {
        let path = call.header(":path").unwrap().to_string();
        assert_eq!(call.header(":method"), Some("GET"));
        if let Some(token) = self.token {
            let bearer = format!("Bearer {token}");
            assert_eq!(call.header("authorization"), Some(bearer.as_str()));
        }
        self.calls.push(path.clone());
        let status = |code: u16, body: &str| CallResult::Response {
            status: code,
            body: body.as_bytes().to_vec(),
        };
        if self.down {
            return status(503, "upstream unavailable");
        }
        let not_found = super::not_found();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["api", "repos", "octocat", "hello-world", list] if list.starts_with("builds?") => {
                CallResult::Response {
                    status: 200,
                    body: super::build_list(&self.list),
                }
            }
            ["api", "repos", ns, name] => match id_of(ns, name) {
                Some(id) => status(200, &repo_json_of(id, self.counter(id))),
                None => not_found,
            },
            ["api", "builds", "incomplete"] => match &self.incomplete {
                None => status(501, r#"{"message":"Not Implemented"}"#),
                Some(list) => {
                    let items: Vec<String> = list
                        .iter()
                        .map(|(id, n)| {
                            let repo = repo_json_of(*id, self.counter(*id));
                            let b = &self.builds[&(*id, *n)];
                            format!(
                                "{},\"build\":{{\"id\":1,\"repo_id\":{id},\"number\":{n},\"status\":\"{}\",\"version\":{}}}}}",
                                repo.trim_end_matches('}'),
                                b.status,
                                b.version
                            )
                        })
                        .collect();
                    status(200, &format!("[{}]\n", items.join(",")))
                }
            },
            ["api", "repos", ns, name, "builds", n] => {
                let Some(id) = id_of(ns, name) else {
                    return not_found;
                };
                if let Some(code) = self.fail.get(&id) {
                    return status(*code, r#"{"message":"nope"}"#);
                }
                let Ok(n) = n.parse::<i64>() else {
                    return status(400, r#"{"message":"strconv.ParseInt: invalid syntax"}"#);
                };
                let n = n as u64;
                if let Some(answer) = builds(id, n) {
                    return answer;
                }
                let Some(b) = self.builds.get(&(id, n)) else {
                    return super::no_rows();
                };
                let repo_id = self.renamed.get(&id).copied().unwrap_or(id);
                let updated = if b.finished > 0 {
                    b.finished
                } else {
                    self.open_updated
                };
                status(
                    200,
                    &format!(
                        "{{\"id\":{},\"repo_id\":{repo_id},\"number\":{n},\"status\":\"{}\",\"event\":\"push\",\"started\":1,\"finished\":{},\"created\":1,\"updated\":{updated},\"version\":{},\"stages\":[]}}\n",
                        id * 10_000 + n,
                        b.status,
                        b.finished,
                        b.version
                    ),
                )
            }
            _ => panic!("unexpected drone call {path}"),
        }
    }

    /// How many times build `number` of repository `id` was looked up.
    pub fn build_lookups(&self, id: u64, number: u64) -> usize {
        let path = format!("/api/repos/octocat/{}/builds/{number}", repo_of(id).name);
        self.calls_to(|p| p == path)
    }

    /// How many calls drone took whose path `wanted` picks.
    pub fn calls_to(&self, wanted: impl Fn(&str) -> bool) -> usize {
        self.calls.iter().filter(|p| wanted(p)).count()
    }

    /// The paths of every build lookup, in order.
    pub fn build_calls(&self) -> Vec<&String> {
        let builds = |p: &&String| p.starts_with("/api/repos/") && p.contains("/builds/");
        self.calls.iter().filter(builds).collect()
    }
}

/// Drone answers a lookup (of `octocat/hello-world`'s builds only) with `drone(number)`.
pub fn lookup(
    drone: &mut dyn FnMut(u64) -> CallResult,
) -> impl FnMut(u64, u64) -> Option<CallResult> + '_ {
    |id, number| {
        assert_eq!(id, super::REPO_ID);
        Some(drone(number))
    }
}

/// A delivery the pipeline received from the reconciler.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub repo: u64,
    pub number: u64,
    pub status: String,
    pub version: u64,
    pub body: String,
    pub signed: bool,
    /// Its `webhook-id`.
    pub id: String,
}

/// The reconciler (seed 7), drone, and what the pipeline received.
pub struct Sim {
    pub r: Reconciler,
    pub now: u64,
    pub drone: Drone,
    pub delivered: Vec<Delivery>,
    /// Leave every call unanswered (drone and pipeline unreachable).
    pub silent: bool,
}

impl Sim {
    /// Starts at 1 000 s (ms 1 000 000).
    pub fn new(cfg: Config) -> Self {
        Sim::starting_at(cfg, 1_000_000, 0)
    }

    /// Starts at `now` (ms); drone says an open build was `updated` at `open_updated` (Unix s).
    pub fn starting_at(cfg: Config, now: u64, open_updated: u64) -> Self {
        let drone = Drone {
            open_updated,
            ..Drone::default()
        };
        Sim {
            r: Reconciler::new(cfg, 7),
            now,
            drone,
            delivered: vec![],
            silent: false,
        }
    }

    /// Webhook `h` passed the filter now, `verified` by drone's signature or not, and the
    /// pipeline answered it with `outcome`.
    pub fn saw(&mut self, h: ParsedWebhook, outcome: DeliveryOutcome, verified: bool) {
        self.observe(Observation::for_tests(h, outcome, verified));
    }

    /// Webhook `h` passed the filter now unverified (a hint); the pipeline answered `outcome`.
    pub fn unsigned(&mut self, h: ParsedWebhook, outcome: DeliveryOutcome) {
        self.saw(h, outcome, false);
    }

    pub fn observe(&mut self, o: Observation) {
        self.r.observe(o, self.now);
    }

    /// Ticks every 100 ms for `ms`, drone and the pipeline answering at once (unless
    /// [`Sim::silent`]).
    pub fn run(&mut self, ms: u64) {
        self.run_with(ms, &mut |_, _| None, &mut |_| super::http(200));
    }

    /// [`Sim::run`], build lookups answered by `builds(repo id, number)` where it says, the pipeline
    /// by `pipeline(now)`.
    pub fn run_with(
        &mut self,
        ms: u64,
        builds: &mut dyn FnMut(u64, u64) -> Option<CallResult>,
        pipeline: &mut dyn FnMut(u64) -> CallResult,
    ) {
        let (drone, delivered, silent) = (&mut self.drone, &mut self.delivered, self.silent);
        run_for(&mut self.r, &mut self.now, ms, &mut |_, call, at| {
            (!silent).then(|| Sim::answer(drone, delivered, call, at, builds, pipeline))
        });
    }

    /// Build `number` of `octocat/hello-world` at (`status`, `version`) passed live now,
    /// verified; the pipeline answered `outcome`.
    pub fn live(&mut self, number: u64, status: &str, version: u64, outcome: DeliveryOutcome) {
        self.observe(super::obs(number, status, version, outcome));
    }

    /// Runs ticks for `ms`, drone answering every lookup with `drone(number)` (see [`lookup`]),
    /// the pipeline taking every re-delivery.
    pub fn answering(&mut self, ms: u64, drone: &mut dyn FnMut(u64) -> CallResult) {
        self.run_with(ms, &mut lookup(drone), &mut |_| super::http(200));
    }

    /// [`Sim::answering`] with drone at (`status`, `version`) for every build.
    pub fn run_steady(&mut self, ms: u64, status: &str, version: u64) {
        self.answering(ms, &mut |n| super::ok(super::api_build(n, status, version)));
    }

    /// Runs ticks for `ms`, drone not to be asked (`why` not).
    pub fn run_unasked(&mut self, ms: u64, why: &str) {
        self.answering(ms, &mut |_| panic!("{why}"));
    }

    /// How many builds drone was asked about.
    pub fn lookups(&self) -> usize {
        self.drone.build_calls().len()
    }

    /// Drone (see [`Drone::answer_with`]) or the pipeline answers `call` at `at`; what the
    /// pipeline took (2xx) is recorded in `delivered`.
    pub fn answer(
        drone: &mut Drone,
        delivered: &mut Vec<Delivery>,
        call: &OutgoingCall,
        at: u64,
        builds: &mut dyn FnMut(u64, u64) -> Option<CallResult>,
        pipeline: &mut dyn FnMut(u64) -> CallResult,
    ) -> CallResult {
        if call.cluster == "drone" {
            return drone.answer_with(call, builds);
        }
        assert_eq!(call.cluster, "pipeline");
        assert_eq!(call.header(":method"), Some("POST"));
        assert_eq!(call.header(":path"), Some("/hook"));
        assert_eq!(call.header("x-drone-event"), Some("build"));
        let answer = pipeline(at);
        if let CallResult::Response {
            status: 200..=299, ..
        } = answer
        {
            let v: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
            delivered.push(Delivery {
                repo: v["repo"]["id"].as_u64().unwrap(),
                number: v["build"]["number"].as_u64().unwrap(),
                status: v["build"]["status"].as_str().unwrap().into(),
                version: v["build"]["version"].as_u64().unwrap(),
                body: String::from_utf8(call.body.clone()).unwrap(),
                signed: call.header("signature").is_some(),
                id: call.header("webhook-id").unwrap().into(),
            });
        }
        answer
    }

    /// Advances `ms` and ticks once: the one call the reconciler makes.
    pub fn next_call(&mut self, ms: u64) -> OutgoingCall {
        self.now += ms;
        self.r.tick(self.now).pop().expect("a call")
    }

    /// Advances `ms`, ticks once and returns the call made to `path`.
    pub fn call_to(&mut self, ms: u64, path: &str) -> OutgoingCall {
        self.now += ms;
        let calls = self.r.tick(self.now);
        let call = calls.into_iter().find(|c| c.header(":path") == Some(path));
        call.unwrap_or_else(|| panic!("no call to {path}"))
    }

    /// Drone answers `call`; the answer asks for no further call.
    pub fn answer_from_drone(&mut self, call: &OutgoingCall) {
        let answer = self.drone.answer(call);
        assert!(self.r.on_response(call.id, answer, self.now).is_empty());
    }

    /// (status, version) of every delivery to the pipeline, in order.
    pub fn states(&self) -> Vec<(String, u64)> {
        let states = self.delivered.iter().map(|d| (d.status.clone(), d.version));
        states.collect()
    }

    /// (repository, number, status, version) of every delivery to the pipeline, in order.
    pub fn transitions(&self) -> Vec<(u64, u64, String, u64)> {
        let t = self.delivered.iter();
        t.map(|d| (d.repo, d.number, d.status.clone(), d.version))
            .collect()
    }

    /// The numbers of repository `id`'s builds delivered, in order.
    pub fn numbers_delivered(&self, id: u64) -> Vec<u64> {
        let of_repo = self.delivered.iter().filter(|d| d.repo == id);
        of_repo.map(|d| d.number).collect()
    }
}
