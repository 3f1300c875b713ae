//! What the demo and the end-to-end tests share: starting drone-sim, pipeline-sim and Envoy
//! wired together, waiting (bounded) for conditions, and comparing drone's truth with what the
//! pipeline believes.

use crate::drone_sim::{BuildKey, BuildState, DroneSim, DroneSimConfig, WebhookRecord};
use crate::envoy::{Envoy, EnvoySpec, Tools};
use crate::pipeline_sim::{PipelineSim, ViewEntry};
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// At most this many Envoys at once in one test binary: each compiles the module per worker in
/// V8, and CI machines are small. Tests still run in parallel, just not all at the same time.
const PARALLEL_ENVOYS: usize = 2;
static SLOTS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static FREED: std::sync::Condvar = std::sync::Condvar::new();

/// A turn to run an Envoy ([`slot`]); given back when dropped.
pub struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        *SLOTS.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        FREED.notify_all();
    }
}

/// Waits for a turn to run an Envoy (at most [`PARALLEL_ENVOYS`] at once); hold it for the
/// test's duration.
pub fn slot() -> Slot {
    let mut n = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
    while *n >= PARALLEL_ENVOYS {
        n = FREED.wait(n).unwrap_or_else(|p| p.into_inner());
    }
    *n += 1;
    Slot
}

/// How often the shared waits look.
const POLL: Duration = Duration::from_millis(100);

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
        Self::start_saying(tools, drone_cfg, tune, |_| {})
    }

    /// [`Stack::start`], with `history` run on drone before Envoy starts (drone sends its
    /// webhooks nowhere until then: they are lost): builds that happened before the filter.
    pub fn start_after(
        tools: &Tools,
        drone_cfg: DroneSimConfig,
        history: impl FnOnce(&DroneSim) -> Result<()>,
        tune: impl FnOnce(&mut EnvoySpec),
    ) -> Result<Stack> {
        Self::start_full(tools, drone_cfg, history, tune, |_| {})
    }

    /// [`Stack::start`], telling `say` what it is doing before each step that can take a
    /// while (the demo prints them, so its first seconds are not silent).
    pub fn start_saying(
        tools: &Tools,
        drone_cfg: DroneSimConfig,
        tune: impl FnOnce(&mut EnvoySpec),
        say: impl FnMut(&str),
    ) -> Result<Stack> {
        Self::start_full(tools, drone_cfg, |_| Ok(()), tune, say)
    }

    fn start_full(
        tools: &Tools,
        drone_cfg: DroneSimConfig,
        history: impl FnOnce(&DroneSim) -> Result<()>,
        tune: impl FnOnce(&mut EnvoySpec),
        mut say: impl FnMut(&str),
    ) -> Result<Stack> {
        say("starting drone-sim (drone's REST API and build runner) and pipeline-sim");
        let drone = DroneSim::start(drone_cfg, 0)?;
        history(&drone)?;
        let pipeline = PipelineSim::start(0)?;
        say("making a throwaway CA and drone's certificate (openssl), for Envoy's TLS drone cluster");
        let mut spec = EnvoySpec::new(tools.clone(), pipeline.port(), drone.port(), drone.token())?;
        tune(&mut spec);
        say(&format!(
            "starting Envoy ({} workers) and waiting until it is ready",
            spec.concurrency
        ));
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

    /// Waits (at most `within`) until status_sync metric `name` reaches `at_least`; its value.
    pub fn wait_metric(&self, name: &str, at_least: i64, within: Duration) -> Result<i64> {
        wait_for(
            &format!("status_sync.{name} >= {at_least}"),
            within,
            POLL,
            || {
                let v = self.envoy.metric(name)?;
                Ok((v >= at_least).then_some(v).ok_or(format!("it is {v}")))
            },
        )
        .map_err(|e| e.context(self.diagnostics()))
    }

    /// Waits (at most `within`) until drone-sim has run every build it was given.
    pub fn wait_drone_idle(&self, within: Duration) -> Result<()> {
        wait_drone_idle(&self.drone, within)
    }

    /// Waits (at most `within`) until the leader's reconciler tracks no build and waits for no
    /// answer: from then on it calls and re-delivers nothing until a new webhook arrives, so
    /// "nothing else happened" can be asserted without sleeping (both gauges are exported after
    /// the tick that emptied the ledger); a failure carries the filter's log lines.
    pub fn wait_reconciler_idle(&self, within: Duration) -> Result<()> {
        wait_for("the reconciler to track nothing", within, POLL, || {
            let tracked = self.envoy.metric("builds_tracked")?;
            let inflight = self.envoy.metric("calls_inflight")?;
            let why = format!("{tracked} tracked, {inflight} in flight");
            Ok((tracked == 0 && inflight == 0).then_some(()).ok_or(why))
        })
        .map_err(|e| e.context(self.diagnostics()))
    }

    /// Waits (at most `within` each) until drone is idle and the pipeline agrees with drone on
    /// every build `include` selects; a failure carries the filter's log lines.
    pub fn wait_converged(
        &self,
        within: Duration,
        include: impl Fn(&BuildKey) -> bool,
    ) -> Result<()> {
        self.wait_drone_idle(within)?;
        wait_agrees(&self.drone, &self.pipeline, within, include)
            .map_err(|e| e.context(self.diagnostics()))
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

/// Waits (at most `within`) until drone-sim has run every build it was given.
pub fn wait_drone_idle(drone: &DroneSim, within: Duration) -> Result<()> {
    wait_for("drone-sim to finish its builds", within, POLL, || {
        Ok(drone
            .idle()
            .then_some(())
            .ok_or("builds still running".into()))
    })
}

/// Waits (at most `within`) until the pipeline agrees with drone on every build `include`
/// selects; a failure names the first ten that differ.
pub fn wait_agrees(
    drone: &DroneSim,
    pipeline: &PipelineSim,
    within: Duration,
    include: impl Fn(&BuildKey) -> bool,
) -> Result<()> {
    wait_for("the pipeline to agree with drone", within, POLL, || {
        let m = compare(&drone.builds(), &pipeline.view(), &include);
        Ok(if m.is_empty() {
            Ok(())
        } else {
            let first: Vec<String> = m.iter().take(10).map(ToString::to_string).collect();
            Err(format!("{} differ: {}", m.len(), first.join("; ")))
        })
    })
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
