//! `drone-sim`: the drone simulator on its own, for poking at the filter by hand.
//!
//! Serves drone's REST API on `--port`, runs `--builds` random builds sending webhooks to
//! `--webhook` (losing `--loss` of them), then keeps serving until Ctrl-C. Simulator stats are
//! at `GET /_sim/stats`, drone's truth at `GET /_sim/builds`, every webhook at
//! `GET /_sim/webhooks`; `POST /_sim/down` and `POST /_sim/up` toggle an outage (503s).

use anyhow::Result;
use envoy_e2e::args::{self, Args};
use envoy_e2e::drone_sim::{BuildPlan, DroneSim, DroneSimConfig, LossPolicy};
use envoy_e2e::util::Rng;
use std::time::Duration;

const USAGE: &str = "drone-sim [--port 8081] [--token T] [--webhook http://127.0.0.1:10000/hook] \
[--builds 20] [--loss 0.3] [--spare-first] [--step-ms 500] [--every-ms 300] [--seed 1]";

fn main() -> Result<()> {
    let a = Args::parse(USAGE)?;
    let mut cfg = DroneSimConfig {
        webhook_url: a.opt("webhook"),
        loss: LossPolicy {
            share: a.get("loss", 0.0)?,
            spare_first: a.flag("spare-first"),
            all_finals: false,
        },
        seed: a.get("seed", 1)?,
        ..Default::default()
    };
    if let Some(t) = a.opt("token") {
        cfg.token = t;
    }
    let sim = DroneSim::start(cfg, a.get("port", 8081)?)?;
    println!(
        "drone-sim listening on 127.0.0.1:{} (token {})",
        sim.port(),
        sim.token()
    );
    let mut rng = Rng::new(a.get("seed", 1u64)? ^ 0x5eed);
    let (every, step): (u64, u64) = (a.get("every-ms", 300)?, a.get("step-ms", 500)?);
    for i in 0..a.get("builds", 0usize)? {
        let key = sim.schedule(
            BuildPlan::random(&mut rng, sim.repos().len(), step),
            Duration::from_millis(every * i as u64),
        );
        println!("scheduled {key}");
    }
    args::until_ctrl_c()?;
    println!("{}", serde_json::to_string_pretty(&sim.stats())?);
    Ok(())
}
