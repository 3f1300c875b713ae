//! Shared pieces of the scenario tests: drone's payloads, and drone and the pipeline
//! (`host_tests::upstreams`) behind the host's `drone` and `pipeline` clusters.
//! The host setup itself (wasm, configuration, token, metrics) is `host_tests::setup`, which
//! the chaos runs and the benchmarks share.

#![allow(dead_code)]

pub use host_tests::setup::*;

use drone_model::store::{Bodies, Store};
pub use host_tests::upstreams::{Drone, Pipeline, SharedDrone, SharedPipeline};
use host_tests::{Host, HostConfig, TestRequest, UpstreamReply};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::OnceLock;

/// Drone's bodies from the fixtures (`drone_model::store::Bodies`), made once.
pub fn bodies() -> &'static Bodies {
    static BODIES: OnceLock<Bodies> = OnceLock::new();
    BODIES.get_or_init(Bodies::new)
}

/// A drone webhook body for one build transition (drone's step/teardown `build:updated`, or
/// `build:created` for `pending`).
pub fn webhook(repo: u64, number: u64, status: &str, version: u64) -> Vec<u8> {
    bodies().webhook(repo, number, status, version)
}

/// The drone API answer for a build.
pub fn api_build(repo: u64, number: u64, status: &str, version: u64) -> Vec<u8> {
    bodies().api_build(repo, number, status, version)
}

/// The drone API answer for a repository (`GET /api/repos/{owner}/{name}`), with the
/// fixture's `counter`.
pub fn api_repo(repo: u64) -> Vec<u8> {
    api_repo_counter(repo, bodies().fixture_counter())
}

/// [`api_repo`] with `counter`: the last build number drone allocated in the repository.
pub fn api_repo_counter(repo: u64, counter: u64) -> Vec<u8> {
    bodies().api_repo(repo, counter)
}

/// Installs drone behind the `drone` cluster: the store's answers (401 without the token),
/// a connect failure while down.
pub fn install_drone(host: &mut Host) -> SharedDrone {
    let drone: SharedDrone = Rc::new(RefCell::new(Drone::new(Store::new())));
    drone.borrow_mut().store.token = Some(TOKEN.into());
    Drone::install(&drone, host);
    drone
}

/// Installs the pipeline responder for re-deliveries (the `pipeline` cluster).
pub fn install_pipeline(host: &mut Host) -> SharedPipeline {
    let pipeline: SharedPipeline = Rc::new(RefCell::new(Pipeline::new()));
    Pipeline::install(&pipeline, host);
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
    let (p, now) = (pipeline.clone(), host.now_ms());
    let req = signed_hook_request(body, now);
    host.request(vm, req, move |up| {
        p.borrow_mut()
            .record(&up.body, now, (200..300).contains(&status));
        UpstreamReply::status(status)
    })
    .expect("request")
}

/// Each of builds `numbers` of repository `repo` reached the pipeline as drone's `success`, version 3.
pub fn assert_succeeded(
    pipeline: &SharedPipeline,
    repo: u64,
    numbers: impl IntoIterator<Item = u64>,
) {
    for n in numbers {
        assert_eq!(
            pipeline.borrow().status_of(repo, n),
            Some(("success".into(), 3)),
            "build {n}"
        );
    }
}

/// Sends `req` through VM 0 to an upstream that answers 200; what came back.
pub fn through(host: &mut Host, req: TestRequest) -> host_tests::StreamOutcome {
    host.request(0, req, |_| UpstreamReply::status(200))
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
