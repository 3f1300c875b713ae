//! `fast-upstream`: the benchmarks' minimal keep-alive upstream (answers 200 at once) on
//! `--port`, until Ctrl-C; the side experiments in `benchmarks/experiments/` run it.

use anyhow::Result;
use envoy_e2e::args::{self, Args};
use envoy_e2e::fast_upstream::FastUpstream;
use std::sync::atomic::Ordering;

fn main() -> Result<()> {
    let a = Args::parse("fast-upstream [--port 18080]")?;
    let upstream = FastUpstream::start_on(a.get("port", 18080)?)?;
    eprintln!("fast-upstream on 127.0.0.1:{}", upstream.port());
    args::until_ctrl_c()?;
    let requests = upstream.requests.load(Ordering::Relaxed);
    eprintln!("{requests} requests");
    Ok(())
}
