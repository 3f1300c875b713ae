//! Cluster mode (issue 21) in the real `status_sync.wasm`: two Envoys (two hosts, each with
//! its workers) in front of two replicas of one pipeline, sharing one etcd (the core's
//! `MemoryEtcd` behind the `etcd` cluster) and one drone. The shell's side of it: calls to
//! `etcd_cluster` with `etcd_authority`, their answers routed back, the metrics.

mod common;

use common::*;
use host_tests::{CallReply, CallRequest, Host};
use status_sync::core::cluster::memory::MemoryEtcd;
use std::cell::RefCell;
use std::rc::Rc;

/// One Envoy of the pair: its own pipeline replica, the shared drone and etcd.
fn envoy(seed: u64, drone: &SharedDrone, etcd: &Rc<RefCell<MemoryEtcd>>) -> Host {
    let mut cfg = signed_host_config(
        2,
        r#","etcd_cluster":"etcd","etcd_authority":"etcd.test","etcd_lease_ttl_ms":2000"#,
    );
    cfg.clusters.push("etcd".into());
    cfg.seed = seed;
    let mut host = Host::start(cfg).unwrap();
    Drone::install(drone, &mut host);
    let e = etcd.clone();
    host.set_responder("etcd", move |req: &CallRequest, now: u64| {
        assert_eq!(req.header(":authority"), Some("etcd.test"));
        assert_eq!(req.method(), "POST");
        let (status, body) = e.borrow_mut().handle(now, req.path(), &req.body);
        CallReply::status(status as u16, body)
    });
    host
}

#[test]
fn two_envoys_with_etcd_cluster_elect_one_reconciler_that_alone_calls_drone_and_recovers_both_replicas_losses(
) {
    let etcd = Rc::new(RefCell::new(MemoryEtcd::new()));
    let drone: SharedDrone = Default::default();
    let mut hosts = [envoy(1, &drone, &etcd), envoy(2, &drone, &etcd)];
    let pipelines: Vec<SharedPipeline> = hosts.iter_mut().map(install_pipeline).collect();
    let run = |hosts: &mut [Host], ticks: usize| {
        for _ in 0..ticks {
            for h in hosts.iter_mut() {
                h.advance(100).unwrap();
            }
        }
    };
    run(&mut hosts, 40);
    let mut modes: Vec<i64> = hosts.iter().map(|h| metric(h, "cluster_mode")).collect();
    modes.sort();
    assert_eq!(
        modes,
        vec![1, 2],
        "one Envoy leads the cluster, the other follows"
    );
    // Builds run through either replica; their final webhooks are lost.
    for n in 1..=6u64 {
        let i = (n % 2) as usize;
        let running = webhook(1, n, "running", 2);
        send_live(&mut hosts[i], &pipelines[i], 0, running, 200);
        drone.borrow_mut().set(1, n, "success", 3);
    }
    run(&mut hosts, 200);
    let calling: Vec<usize> = (0..2)
        .filter(|i| hosts[*i].calls().iter().any(|c| c.cluster == "drone"))
        .collect();
    assert_eq!(calling.len(), 1, "only the cluster's leader calls drone");
    for n in 1..=6u64 {
        let got = pipelines
            .iter()
            .filter_map(|p| p.borrow().status_of(1, n))
            .any(|s| s == ("success".into(), 3));
        assert!(got, "build {n}'s success reached the pipeline");
    }
    for h in &hosts {
        assert!(
            metric(h, "etcd_records_written") >= 3,
            "each recorded its replica's"
        );
        assert!(metric(h, "etcd_requests") > 0);
        assert_eq!(metric(h, "cluster_fallbacks"), 0);
        assert!(h.calls().iter().any(|c| c.cluster == "etcd"));
    }
}
