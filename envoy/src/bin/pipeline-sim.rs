//! `pipeline-sim`: the demo pipeline on its own. Accepts webhooks on any path, keeps its view
//! at `GET /_sim/view` and every request at `GET /_sim/received`; `POST /_sim/rules` with
//! `{"build":"octocat/hello-world#3","code":500,"times":2}` (or `"build":null` for every
//! request, `"for_ms"` for a while, `"only_done":true` for final transitions) injects
//! failures, `DELETE /_sim/rules` clears them. Runs until Ctrl-C.

use anyhow::Result;
use envoy_e2e::args::Args;
use envoy_e2e::pipeline_sim::PipelineSim;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() -> Result<()> {
    let a = Args::parse("pipeline-sim [--port 8080]", &[("port", true)])?;
    let sim = PipelineSim::start(a.get("port", 8080)?)?;
    println!("pipeline-sim listening on 127.0.0.1:{}", sim.port());
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))?;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("{}", serde_json::to_string_pretty(&sim.view())?);
    Ok(())
}
