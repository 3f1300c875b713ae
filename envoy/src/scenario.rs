//! What the demo and the end-to-end tests share: starting drone-sim, pipeline-sim and Envoy
//! wired together, waiting (bounded) for conditions, and comparing drone's truth with what the
//! pipeline believes.

use crate::drone_sim::{BuildKey, BuildState, DroneSim, DroneSimConfig, WebhookRecord};
use crate::envoy::{Envoy, EnvoySpec, Tools};
use crate::pipeline_sim::{PipelineSim, ViewEntry};
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// drone-sim → Envoy (status-sync) → pipeline-sim, all on loopback.
///
/// Field order matters: Envoy is dropped (killed) first, then the simulators.
pub struct Stack {
    pub envoy: Envoy,
    pub pipeline: PipelineSim,
    pub drone: DroneSim,
}

impl Stack {
    /// Starts the simulators on free ports, then Envoy in front of the pipeline; `tune` may
    /// change the Envoy spec (plugin configuration, concurrency, LDS) before it starts.
    pub fn start(
        tools: &Tools,
        drone_cfg: DroneSimConfig,
        tune: impl FnOnce(&mut EnvoySpec),
    ) -> Result<Stack> {
        let drone = DroneSim::start(drone_cfg, 0)?;
        let pipeline = PipelineSim::start(0)?;
        let mut spec = EnvoySpec::new(tools.clone(), pipeline.port(), drone.port(), drone.token())?;
        tune(&mut spec);
        let envoy = Envoy::start(&spec)?;
        let path = spec
            .plugin
            .get("webhook_path")
            .and_then(|v| v.as_str())
            .unwrap_or("/hook")
            .to_string();
        drone.set_webhook_url(Some(envoy.url(&path)));
        Ok(Stack {
            envoy,
            pipeline,
            drone,
        })
    }

    /// What to show when a wait fails: the filter's own log lines and Envoy's warnings, last
    /// first-class lines only (Envoy's startup banner is noise).
    pub fn diagnostics(&self) -> String {
        let log = self.envoy.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("wasm") || l.contains("][warning][") || l.contains("][error]["))
            .collect();
        format!(
            "---- Envoy log (filter lines, last 40 of {}) ----\n{}",
            lines.len(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// Builds where the pipeline disagrees with drone, among those `include` selects.
    pub fn mismatches(&self, include: impl Fn(&BuildKey) -> bool) -> Vec<Mismatch> {
        compare(&self.drone.builds(), &self.pipeline.view(), include)
    }
}

/// A build whose pipeline state differs from drone's.
#[derive(Clone, Debug)]
pub struct Mismatch {
    pub key: BuildKey,
    pub drone: (String, i64),
    pub pipeline: Option<(String, i64)>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self
            .pipeline
            .as_ref()
            .map(|(s, v)| format!("{s} v{v}"))
            .unwrap_or_else(|| "nothing".into());
        write!(
            f,
            "{}: drone says {} v{}, pipeline has {p}",
            self.key, self.drone.0, self.drone.1
        )
    }
}

/// Compares status and version of every selected build.
pub fn compare(
    drone: &[BuildState],
    view: &BTreeMap<String, ViewEntry>,
    include: impl Fn(&BuildKey) -> bool,
) -> Vec<Mismatch> {
    drone
        .iter()
        .filter(|b| include(&b.key))
        .filter_map(|b| {
            let p = view.get(&b.key.to_string());
            let same = p.is_some_and(|e| e.status == b.status && e.version == b.version);
            (!same).then(|| Mismatch {
                key: b.key.clone(),
                drone: (b.status.clone(), b.version),
                pipeline: p.map(|e| (e.status.clone(), e.version)),
            })
        })
        .collect()
}

/// Builds at least one of whose webhooks was delivered: the sidecar knows they exist.
pub fn observed(webhooks: &[WebhookRecord]) -> BTreeSet<BuildKey> {
    webhooks
        .iter()
        .filter(|w| !w.lost && w.transport_error.is_none())
        .map(|w| w.build.clone())
        .collect()
}

/// Polls `check` every `every` until it returns `Some`, or fails after `timeout` with the
/// last reason `check` gave. Every wait in the tests goes through here, so none is unbounded.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<std::result::Result<T, String>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check()? {
            Ok(v) => return Ok(v),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(every);
    }
}
