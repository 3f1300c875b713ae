//! `pipeline-sim`: the demo pipeline on its own. Accepts webhooks on any path, keeps its view
//! at `GET /_sim/view` and every request at `GET /_sim/received`; `POST /_sim/rules` with
//! `{"build":"octocat/hello-world#3","code":500,"times":2}` (or `"build":null` for every
//! request, `"for_ms"` for a while, `"only_done":true` for final transitions) injects
//! failures, `DELETE /_sim/rules` clears them. Runs until Ctrl-C.

use anyhow::Result;
use envoy_e2e::args::{self, Args};
use envoy_e2e::pipeline_sim::PipelineSim;

fn main() -> Result<()> {
    let a = Args::parse("pipeline-sim [--port 8080]")?;
    let sim = PipelineSim::start(a.get("port", 8080)?)?;
    println!("pipeline-sim listening on 127.0.0.1:{}", sim.port());
    args::until_ctrl_c()?;
    println!("{}", serde_json::to_string_pretty(&sim.view())?);
    Ok(())
}
