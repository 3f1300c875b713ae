//! What the host-tests benchmarks share: drone (`drone_model::store`, its bodies made fast
//! from the fixtures) behind the `drone` cluster, a pipeline that accepts everything, and the
//! plugin configuration.

#![allow(dead_code)]

pub mod report;
pub use host_tests::setup::*;

#[allow(unused_imports)] // not every benchmark makes bodies
pub use drone_model::store::Bodies;
use drone_model::store::Store;
use drone_model::workload::Builds;
use host_tests::{CallReply, CallRequest, Host, HostConfig, UpstreamReply};
use status_sync::core::config::Config;
use status_sync::core::model::RepoRef;
use std::cell::RefCell;
use std::rc::Rc;

/// A drone fixture (`testdata/drone/<name>`).
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    drone_model::fixtures::bytes(name).to_vec()
}

/// Repository `octocat/repo-<r>` as a webhook names it (for the native reconciler).
pub fn repo_ref(repo: u64) -> RepoRef {
    RepoRef {
        id: repo_id(repo),
        namespace: "octocat".into(),
        name: format!("repo-{repo}"),
    }
}

/// The configuration a native reconciler runs with: the defaults and the keys `extra`
/// (`,"key":value…`), `HOOK_SECRET` in its environment.
pub fn native_config(extra: &str) -> Config {
    let json = format!(
        r#"{{"pipeline_cluster":"pipeline","drone_cluster":"drone","drone_token":"t"{extra}}}"#
    );
    let env = |k: &str| (k == "HOOK_SECRET").then(|| HOOK_SECRET.to_string());
    Config::parse(json.as_bytes(), &env).expect("config")
}

/// Workers + main, fuel metering on.
pub fn host_config(workers: usize, extra: &str) -> HostConfig {
    let mut cfg = host_tests::setup::host_config(workers, extra);
    // Envoy's default: info. The benchmarks do not read debug lines.
    cfg.log_level = 2;
    cfg.fuel = true;
    cfg
}

/// Drone (`drone_model::workload`: its builds, and the store that answers its API and
/// counts the calls, `store.calls`).
pub type SharedDrone = Rc<RefCell<Builds>>;

/// Installs drone behind the `drone` cluster.
pub fn install_drone(host: &mut Host) -> SharedDrone {
    let drone: SharedDrone = Rc::new(RefCell::new(Builds::new(Store::new())));
    let d = drone.clone();
    host.set_responder("drone", move |req: &CallRequest, _now: u64| {
        reply(drone_answer(&mut d.borrow_mut().store, req), 0)
    });
    drone
}

/// Re-deliveries the pipeline received (it answers 200 to all of them).
#[derive(Default)]
pub struct Pipeline {
    pub redeliveries: u64,
}

pub type SharedPipeline = Rc<RefCell<Pipeline>>;

pub fn install_pipeline(host: &mut Host) -> SharedPipeline {
    let pipeline: SharedPipeline = Rc::new(RefCell::new(Pipeline::default()));
    let p = pipeline.clone();
    host.set_responder("pipeline", move |_req: &CallRequest, _now: u64| {
        p.borrow_mut().redeliveries += 1;
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
