//! The filter's two upstreams as every scenario answers them (the scenario tests, the chaos
//! runs and their minimised cases): drone (`drone_model`'s builds and store answering its
//! API) on the `drone` cluster, and the pipeline taking the re-deliveries on the `pipeline`
//! cluster, each behind the faults a run injects ([`Faults`]).

use crate::{CallReply, CallRequest, Host};
use drone_model::store::{Answer, Store};
use drone_model::workload::Builds;
use drone_model::Rng;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

/// Drone's answer as the host's reply to the call, `delay_ms` late.
pub fn reply(answer: Answer, delay_ms: u64) -> CallReply {
    CallReply::Reply {
        status: answer.status,
        headers: vec![("content-type".into(), answer.content_type.into())],
        body: answer.body,
        delay_ms,
    }
}

/// Drone's store answering a call the filter made.
pub fn drone_answer(store: &mut Store, req: &CallRequest) -> Answer {
    store.answer(req.method(), req.path(), req.header("authorization"))
}

/// What a run injects into an upstream: an outage (every call fails) and, while `on`,
/// random faults drawn from `rng` (which ones: [`Drone::answer`], [`Pipeline::answer`]).
pub struct Faults {
    pub rng: Rng,
    pub on: bool,
    pub outage: bool,
    /// Calls answered with a fault.
    pub injected: u64,
}

/// No fault ever (until told otherwise).
impl Default for Faults {
    fn default() -> Self {
        Faults {
            on: false,
            ..Faults::random(Rng::new(0))
        }
    }
}

impl Faults {
    /// Random faults from `rng`, on.
    pub fn random(rng: Rng) -> Faults {
        Faults {
            rng,
            on: true,
            outage: false,
            injected: 0,
        }
    }
}

/// Drone on the `drone` cluster: its builds (`drone_model::workload`, whose store answers
/// the API; the store is reached through `Deref`), the calls it received, and its faults.
pub struct Drone {
    pub d: Builds,
    /// (time, path) of every call received.
    pub calls: Vec<(u64, String)>,
    /// Nobody listening: every call is a connect failure.
    pub down: bool,
    /// Every answer arrives this late.
    pub delay_ms: u64,
    pub faults: Faults,
}

pub type SharedDrone = Rc<RefCell<Drone>>;

impl Deref for Drone {
    type Target = Builds;
    fn deref(&self) -> &Builds {
        &self.d
    }
}

impl DerefMut for Drone {
    fn deref_mut(&mut self) -> &mut Builds {
        &mut self.d
    }
}

impl Default for Drone {
    fn default() -> Self {
        Drone::new(Store::new())
    }
}

impl Drone {
    pub fn new(store: Store) -> Drone {
        Drone {
            d: Builds::new(store),
            calls: Vec::new(),
            down: false,
            delay_ms: 0,
            faults: Faults::default(),
        }
    }

    /// Answers the host's `drone` cluster from now on.
    pub fn install(drone: &SharedDrone, host: &mut Host) {
        let d = drone.clone();
        host.set_responder("drone", move |req: &CallRequest, now: u64| {
            d.borrow_mut().answer(req, now)
        });
    }

    /// Drone writes build `repo/number`'s row.
    pub fn set(&mut self, repo: u64, number: u64, status: &str, version: u64) {
        self.d.store.write(repo, number, status, version);
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

    /// The store's answer, `delay_ms` late; while down a connect failure; in an outage a
    /// connect failure or a 503; with faults on, 3% 5xx (`database is locked`), 2% timeouts,
    /// 2% connect failures and 5% slow answers (0.1–3 s, beyond a 2 s call timeout sometimes).
    pub fn answer(&mut self, req: &CallRequest, now: u64) -> CallReply {
        self.calls.push((now, req.path().to_string()));
        if self.down {
            return CallReply::ConnectFailure;
        }
        let f = &mut self.faults;
        if f.outage {
            f.injected += 1;
            return if f.rng.chance(0.5) {
                CallReply::ConnectFailure
            } else {
                CallReply::status(503, "upstream unavailable")
            };
        }
        let mut delay_ms = self.delay_ms;
        if f.on {
            let r = f.rng.unit();
            if r < 0.12 {
                f.injected += 1;
            }
            if r < 0.03 {
                let status = f.rng.pick(&[500u16, 502, 503]);
                return CallReply::status(status, r#"{"message":"database is locked"}"#);
            } else if r < 0.05 {
                return CallReply::Timeout;
            } else if r < 0.07 {
                return CallReply::ConnectFailure;
            } else if r < 0.12 {
                delay_ms = f.rng.range(100, 3000);
            }
        }
        reply(drone_answer(&mut self.d.store, req), delay_ms)
    }
}

/// One delivery the pipeline received, live or re-delivered.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub at: u64,
    pub version: u64,
    pub acked: bool,
    pub redelivery: bool,
}

/// The pipeline: per build the highest version it acknowledged, every delivery it received,
/// and what went wrong: a re-delivery below a version it acknowledged (`violations`, or
/// `races` within `race_ms` of a live acknowledgement), a refused version re-delivered.
#[derive(Default)]
pub struct Pipeline {
    /// (repo id, number) → (status, version), the highest acknowledged.
    pub view: BTreeMap<(u64, u64), (String, u64)>,
    pub log: BTreeMap<(u64, u64), Vec<Delivery>>,
    /// The bodies of the acknowledged deliveries, in order.
    pub received: Vec<Value>,
    /// The `webhook-id` of every re-delivery.
    pub webhook_ids: Vec<String>,
    /// What re-deliveries are answered when no fault decides.
    pub answer: u16,
    /// With faults on, 5% of the re-deliveries fail (500, 503, connect failure, timeout)
    /// and 2% are refused (422); in an outage all are connect failures.
    pub faults: Faults,
    /// A re-delivery below what the pipeline acknowledged within this long after a live
    /// acknowledgement is a race (filter issue 1), not a violation.
    pub race_ms: u64,
    pub violations: Vec<String>,
    pub races: Vec<String>,
    pub redeliveries: u64,
    pub redeliveries_acked: u64,
    pub redeliveries_faulted: u64,
    /// (repo id, number) → versions the pipeline refused (4xx) when re-delivered.
    pub refused: BTreeMap<(u64, u64), Vec<u64>>,
    pub redeliveries_refused: u64,
    /// Re-deliveries of a version the pipeline had refused before.
    pub refused_again: Vec<String>,
    /// Re-deliveries carrying what they must not (the harness's own check: the attacker's
    /// bytes, no signature under a secret).
    pub tainted: Vec<String>,
}

pub type SharedPipeline = Rc<RefCell<Pipeline>>;

/// (repo id, number), status, version of a build webhook's body.
fn build_of(v: &Value) -> Option<((u64, u64), &str, u64)> {
    let key = (v["repo"]["id"].as_u64()?, v["build"]["number"].as_u64()?);
    Some((
        key,
        v["build"]["status"].as_str()?,
        v["build"]["version"].as_u64()?,
    ))
}

impl Pipeline {
    /// Answering 200, no faults.
    pub fn new() -> Pipeline {
        Pipeline {
            answer: 200,
            ..Default::default()
        }
    }

    /// Answers the host's `pipeline` cluster (the re-deliveries) from now on.
    pub fn install(pipeline: &SharedPipeline, host: &mut Host) {
        let p = pipeline.clone();
        host.set_responder("pipeline", move |req: &CallRequest, now: u64| {
            p.borrow_mut().answer(req, now)
        });
    }

    /// The pipeline's view of build `repo/number` (`octocat/repo-<repo>`).
    pub fn status_of(&self, repo: u64, number: u64) -> Option<(String, u64)> {
        self.view
            .get(&(drone_model::store::repo_id(repo), number))
            .cloned()
    }

    /// A live webhook's body reached the pipeline, `acked` (2xx) or not, at `at`.
    pub fn record(&mut self, body: &[u8], at: u64, acked: bool) {
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            self.record_value(v, at, acked, false);
        }
    }

    fn record_value(&mut self, v: Value, at: u64, acked: bool, redelivery: bool) {
        if let Some((key, status, version)) = build_of(&v) {
            let status = status.to_string();
            self.receive(key, &status, version, at, acked, redelivery);
        }
        if acked {
            self.received.push(v);
        }
    }

    /// Build `key` delivered at `at` with `status` and `version`, `acked` or not.
    pub fn receive(
        &mut self,
        key: (u64, u64),
        status: &str,
        version: u64,
        at: u64,
        acked: bool,
        redelivery: bool,
    ) {
        let had = self.view.get(&key).map_or(0, |(_, v)| *v);
        if redelivery && version < had {
            // When and how the pipeline acknowledged what it has.
            let ack = self.log.get(&key).and_then(|l| {
                l.iter()
                    .filter(|d| d.acked && d.version == had)
                    .min_by_key(|d| d.at)
                    .cloned()
            });
            let what = format!(
                "build {}/{}: re-delivery of v{version} ({status}) at {at} after the pipeline acknowledged v{had} ({ack:?})",
                key.0 - 100, key.1
            );
            // Filter issue 1: the live webhook's observation was still in the queue (drained
            // on the leader's next tick) when the reconciler acted on an older drone answer.
            if ack.is_some_and(|a| !a.redelivery && at - a.at <= self.race_ms) {
                self.races.push(what);
            } else {
                self.violations.push(what);
            }
        }
        self.log.entry(key).or_default().push(Delivery {
            at,
            version,
            acked,
            redelivery,
        });
        if acked && version > had {
            self.view.insert(key, (status.to_string(), version));
        }
    }

    /// A re-delivery: checked (a POST of a `build:updated` to `/hook` saying who sent it,
    /// with the `webhook-id` of its build and version), recorded, and answered.
    pub fn answer(&mut self, req: &CallRequest, now: u64) -> CallReply {
        assert_eq!(req.method(), "POST");
        assert_eq!(req.path(), "/hook");
        assert_eq!(req.header("x-drone-event"), Some("build"));
        assert!(
            req.header("user-agent")
                .is_some_and(|ua| ua.starts_with("status-sync/")),
            "re-deliveries say who sent them"
        );
        let v: Value = serde_json::from_slice(&req.body).expect("re-delivery is JSON");
        assert_eq!(v["event"], "build");
        assert_eq!(v["action"], "updated");
        let Some((key, status, version)) = build_of(&v) else {
            panic!("a re-delivery names its build: {v}");
        };
        let status = status.to_string();
        if let Some(id) = req.header("webhook-id") {
            self.webhook_ids.push(id.to_string());
        }
        let want_id = format!("drone-{}-{}-{}", key.0, key.1, version);
        if req.header("webhook-id") != Some(want_id.as_str()) {
            self.violations.push(format!(
                "re-delivery of {want_id} with webhook-id {:?}",
                req.header("webhook-id")
            ));
        }
        self.redeliveries += 1;
        if self.refused.get(&key).is_some_and(|v| v.contains(&version)) {
            self.refused_again.push(format!(
                "build {}/{}: v{version} ({status}) re-delivered at {now} after the pipeline refused it",
                key.0 - 100,
                key.1
            ));
        }
        let f = &mut self.faults;
        let reply = if f.outage {
            Some(CallReply::ConnectFailure)
        } else if f.on && f.rng.chance(0.05) {
            Some(match f.rng.range(0, 3) {
                0 => CallReply::status(500, "oops"),
                1 => CallReply::status(503, "overloaded"),
                2 => CallReply::ConnectFailure,
                _ => CallReply::Timeout,
            })
        } else if f.on && f.rng.chance(0.02) {
            self.redeliveries_refused += 1;
            self.refused.entry(key).or_default().push(version);
            // Refused (not acknowledged) and answered 4xx: the filter must not retry it.
            self.record_value(v, now, false, true);
            return CallReply::status(422, r#"{"error":"unprocessable"}"#);
        } else if !(200..300).contains(&self.answer) {
            Some(CallReply::status(self.answer, ""))
        } else {
            None
        };
        // A connect failure never reached the pipeline; a timeout or an error did,
        // unacknowledged.
        if !matches!(reply, Some(CallReply::ConnectFailure)) {
            self.record_value(v, now, reply.is_none(), true);
        }
        match reply {
            Some(r) => {
                self.redeliveries_faulted += 1;
                r
            }
            None => {
                self.redeliveries_acked += 1;
                CallReply::status(self.answer, "")
            }
        }
    }
}
