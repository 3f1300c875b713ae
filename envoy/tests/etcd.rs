//! Cluster mode's election (issue 21, section 2) against a real 3-member etcd cluster
//! (Debian's `etcd-server`, 3.4) on loopback, through its v3 JSON gateway over plain HTTP:
//! the same scenarios `filter/tests/cluster.rs` runs against `MemoryEtcd`, the in-memory
//! model, so the model is pinned to the real thing. One leader; takeover within the TTL after
//! the leader stops keeping alive, never two at once; one member killed, no interruption.
//!
//! Without `etcd` on PATH this test fails under `CI=true` and otherwise prints loudly that it
//! skipped (`make etcd`, part of `make test`, installs Debian's `etcd-server`).

use anyhow::{bail, Result};
use envoy_e2e::dist::missing_part;
use envoy_e2e::envoy::tail;
use envoy_e2e::etcd::{self, EtcdCluster};
use status_sync::core::cluster::scenarios::{World, ALL};
use status_sync::core::cluster::Request;
use std::time::{Duration, Instant};

/// The real cluster behind the scenarios' `World`: requests go to the preferred member, then
/// to the next live one (as an Envoy cluster fails over); time is the wall clock.
struct Real {
    cluster: EtcdCluster,
    start: Instant,
}

impl World for Real {
    fn send(&mut self, preferred: usize, request: &Request) -> Option<(u32, Vec<u8>)> {
        let n = self.cluster.len();
        for k in 0..n {
            let Some(port) = self.cluster.client_port((preferred + k) % n) else {
                continue;
            };
            let body = request.body.as_bytes();
            match etcd::request(
                port,
                request.method,
                &request.path,
                body,
                Duration::from_secs(1),
            ) {
                Ok((status, body)) => return Some((u32::from(status), body)),
                Err(e) => eprintln!("etcd: 127.0.0.1:{port}{}: {e}", request.path),
            }
        }
        None
    }

    fn now_ms(&mut self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn wait_ms(&mut self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    fn members(&self) -> usize {
        self.cluster.len()
    }

    fn kill(&mut self, i: usize) {
        if let Err(e) = self.cluster.kill(i) {
            eprintln!("etcd: killing member m{i}: {e}");
        }
    }
}

#[test]
fn every_shared_scenario_holds_against_a_real_three_member_etcd() -> Result<()> {
    const TEST: &str = "every_shared_scenario_holds_against_a_real_three_member_etcd";
    let Some(bin) = etcd::find() else {
        return missing_part(TEST, "etcd (Debian's etcd-server)");
    };
    let cluster = EtcdCluster::start(&bin, 3)?;
    let mut world = Real {
        cluster,
        start: Instant::now(),
    };
    // One cluster for all: each scenario under its own prefix; the one that kills a member
    // comes last in `ALL`.
    for (name, scenario) in ALL {
        let prefix = format!("status-sync/test/{name}/");
        let began = Instant::now();
        if let Err(e) = scenario(&mut world, prefix.as_bytes()) {
            let logs: Vec<String> = (0..world.cluster.len())
                .map(|i| format!("--- m{i}:\n{}", tail(&world.cluster.log(i), 15)))
                .collect();
            bail!("{name}: {e}\n{}", logs.join("\n"));
        }
        eprintln!("{name}: ok in {:?}", began.elapsed());
    }
    Ok(())
}
