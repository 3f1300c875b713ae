//! Cluster mode end to end (issue 21, section 2): drone-sim → a round-robin "Service" (a plain
//! Envoy) → N pipeline-side sidecars, each the shipped `envoy/cluster-mode.yaml` in front of
//! its own pipeline replica (all replicas sharing one store, as one pipeline), and one real
//! 3-member etcd ([`crate::etcd`]) the sidecars share. The same harness without etcd (the
//! `etcd_*` keys and the `etcd` cluster removed) is today's embedded mode: N sidecars that
//! each reconcile what their replica saw. `envoy/tests/cluster_mode.rs` and the demo
//! (`make run REPLICAS=3`) run it.
//!
//! Each sidecar runs `cluster-mode.yaml` with only what a loopback test must change: ports
//! and addresses (simulators and etcd on free ports, admin on port 0), the module path, the
//! TLS sockets toward drone and etcd (plain HTTP on loopback), and the plugin's timings (the
//! e2e timings of [`crate::envoy::base_plugin_config`], a short election lease). The routes,
//! the filter, `enforce` with the secret from the environment, the `etcd` cluster's health
//! check and outlier detection are the shipped ones.

use crate::drone_sim::{BuildPlan, DroneSim, DroneSimConfig};
use crate::drone_tls::DroneTls;
use crate::envoy::{self, Envoy, Tools};
use crate::etcd::EtcdCluster;
use crate::pipeline_sim::{PipelineSim, Received};
use crate::scenario::{wait_agrees, wait_drone_idle, wait_for};
use crate::setup::done_if;
use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// drone's `DRONE_WEBHOOK_SECRET` in these runs; every sidecar reads it from its environment
/// as the shipped file says (`webhook_secret_env: DRONE_WEBHOOK_SECRET`).
pub const SECRET: &str = "cluster-mode-e2e-secret";
/// The election lease of the runs (`etcd_lease_ttl_ms`): a leader that dies is replaced
/// within this. Cluster mode's rule (README, "Cluster mode (etcd)"): at least 5 × etcd's
/// `--election-timeout`, so that etcd electing a new raft leader (one to two election
/// timeouts, answering nothing meanwhile) and a retry fit in the two thirds of the lease a
/// leader has left at worst; at 3 s the raft leader's death lapsed it on this machine.
pub const LEASE_TTL_MS: u64 = 5 * crate::etcd::ELECTION_TIMEOUT_MS;
const POLL: Duration = Duration::from_millis(100);

/// `n` builds over 3 repositories, a random outcome mix (declined and killed included) seeded
/// by `seed`, one every `every_ms`: the same builds for every run of a comparison.
pub fn random_builds(seed: u64, n: u64, every_ms: u64) -> Vec<(BuildPlan, Duration)> {
    let mut rng = drone_model::rng::Rng::new(seed);
    (0..n)
        .map(|i| {
            (
                BuildPlan::random(&mut rng, 3, 100),
                Duration::from_millis(every_ms * i),
            )
        })
        .collect()
}

/// The plugin keys a run may change: timings only (and the lease's).
const TIMINGS: [&str; 7] = [
    "tick_ms",
    "stale_after_ms",
    "max_poll_interval_ms",
    "call_timeout_ms",
    "circuit_failure_threshold",
    "circuit_open_ms",
    "max_drone_calls_per_sec",
];

/// A shipped bootstrap (`envoy/<file>`) as JSON.
pub fn shipped_file(file: &str) -> Result<Value> {
    let path = envoy::crate_dir().join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    envoy::yaml_to_json(&text)
}

/// The shipped `envoy/cluster-mode.yaml` as JSON.
pub fn shipped() -> Result<Value> {
    shipped_file("cluster-mode.yaml")
}

/// The plugin configuration of a bootstrap's (first) status-sync filter.
pub fn plugin_of(mut v: Value) -> Result<Value> {
    let listener = &mut v["static_resources"]["listeners"][0];
    let f = envoy::wasm_filters(listener);
    let s = f
        .first()
        .and_then(|f| f["typed_config"]["config"]["configuration"]["value"].as_str())
        .context("plugin configuration")?;
    Ok(serde_json::from_str(s)?)
}

/// The shipped plugin configuration.
pub fn shipped_plugin() -> Result<Value> {
    plugin_of(shipped()?)
}

/// Envoy inherits the test's environment: the secret is there as it would be in the pod.
pub fn secret_in_environment() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("DRONE_WEBHOOK_SECRET", SECRET));
}

fn endpoints(ports: &[u16]) -> Value {
    json!([{
        "lb_endpoints": ports
            .iter()
            .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}))
            .collect::<Vec<_>>()
    }])
}

/// A shipped bootstrap (`envoy/<file>`) on loopback, changed only where a loopback run must:
/// admin on port 0, stats flushed every second, the listener on a free loopback port, the
/// module under test with the e2e timings (`TIMINGS` of `envoy::base_plugin_config`, then
/// `plugin` edits the configuration), each cluster's endpoints on the loopback `ports(name)`
/// gives (`None`: the cluster goes; an error for a cluster it does not expect), plain (its
/// transport socket dropped) unless `tls_ca`: then the pipeline's shipped TLS socket stays,
/// trusting that CA file instead of the system's.
pub fn loopback_bootstrap(
    tools: &Tools,
    file: &str,
    ports: impl Fn(&str) -> Result<Option<Vec<u16>>>,
    tls_ca: Option<&Path>,
    plugin: impl Fn(&mut Value),
) -> Result<Value> {
    let mut v = shipped_file(file)?;
    v["admin"]["address"]["socket_address"]["port_value"] = json!(0);
    // Histograms and gauges are read soon after the fact.
    v["stats_flush_interval"] = json!("1s");
    let listener = &mut v["static_resources"]["listeners"][0];
    listener["address"]["socket_address"] =
        json!({"address": "127.0.0.1", "port_value": envoy::free_port()?});
    let filters = envoy::wasm_filters(listener);
    anyhow::ensure!(filters.len() == 1, "{file} has one status-sync filter");
    for f in filters {
        let config = &mut f["typed_config"]["config"];
        config["vm_config"]["code"]["local"]["filename"] = json!(tools.wasm.display().to_string());
        let slot = &mut config["configuration"]["value"];
        let mut p: Value = serde_json::from_str(slot.as_str().context("plugin configuration")?)?;
        let base = envoy::base_plugin_config();
        for k in TIMINGS {
            p[k] = base[k].clone();
        }
        plugin(&mut p);
        *slot = json!(p.to_string());
    }
    let clusters = v["static_resources"]["clusters"]
        .as_array_mut()
        .context("clusters")?;
    let mut kept = Vec::new();
    for mut c in clusters.drain(..) {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let Some(ports) = ports(&name)? else {
            continue;
        };
        c["type"] = json!("STATIC");
        match tls_ca {
            Some(ca) if name == "pipeline" => {
                let v = c
                    .pointer_mut("/transport_socket/typed_config/common_tls_context/validation_context/trusted_ca/filename")
                    .context("the shipped pipeline cluster originates TLS")?;
                *v = json!(ca.display().to_string());
            }
            _ => {
                if let Some(o) = c.as_object_mut() {
                    o.remove("transport_socket");
                }
            }
        }
        c["load_assignment"]["endpoints"] = endpoints(&ports);
        kept.push(c);
    }
    *clusters = kept;
    Ok(v)
}

/// `cluster-mode.yaml` for one sidecar on loopback: its replica's port, drone-sim's, etcd's
/// members' (`None`: embedded mode, no `etcd_*` keys and no `etcd` cluster). See the module
/// comment for what changes.
pub fn sidecar_bootstrap(
    tools: &Tools,
    replica_port: u16,
    drone_port: u16,
    etcd_ports: Option<&[u16]>,
) -> Result<Value> {
    let ports = |name: &str| {
        Ok(match name {
            "pipeline" => Some(vec![replica_port]),
            "drone" => Some(vec![drone_port]),
            "etcd" => etcd_ports.map(<[u16]>::to_vec),
            other => anyhow::bail!("unexpected cluster {other:?}"),
        })
    };
    loopback_bootstrap(
        tools,
        "cluster-mode.yaml",
        ports,
        None,
        |plugin| match etcd_ports {
            Some(_) => plugin["etcd_lease_ttl_ms"] = json!(LEASE_TTL_MS),
            None => {
                if let Some(o) = plugin.as_object_mut() {
                    o.retain(|k, _| !k.starts_with("etcd_"));
                }
            }
        },
    )
}

/// The shipped `envoy/drone-side.yaml` on loopback (as `envoy/tests/drone_side.rs` runs it):
/// the replicas as the `pipeline` cluster's endpoints (over TLS trusting `tls_ca`, if given),
/// drone-sim plain, the e2e timings.
pub fn drone_side_bootstrap(
    tools: &Tools,
    replicas: &[u16],
    drone_port: u16,
    tls_ca: Option<&Path>,
) -> Result<Value> {
    let ports = |name: &str| {
        Ok(Some(match name {
            "pipeline" => replicas.to_vec(),
            "drone" => vec![drone_port],
            other => anyhow::bail!("unexpected cluster {other:?}"),
        }))
    };
    loopback_bootstrap(tools, "drone-side.yaml", ports, tls_ca, |_| {})
}

/// The "Service" in front of the replicas: a plain Envoy balancing drone's webhooks round
/// robin over the sidecars' listeners, trying another one when a sidecar refuses the
/// connection (as a Service's endpoints drop a dead pod).
pub fn service_bootstrap(sidecars: &[u16]) -> Result<Value> {
    Ok(json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "service",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": envoy::free_port()?}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "service",
                        "route_config": {"virtual_hosts": [{"name": "service", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {
                                "cluster": "sidecars", "timeout": "60s",
                                "retry_policy": {
                                    "retry_on": "connect-failure,refused-stream,reset-before-request",
                                    "num_retries": 2,
                                    "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]
                                }}}]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                    }
                }]}]
            }],
            "clusters": [{
                "name": "sidecars", "type": "STATIC", "connect_timeout": "1s",
                "outlier_detection": {"consecutive_local_origin_failure": 1, "split_external_local_origin_errors": true,
                    "interval": "1s", "base_ejection_time": "30s", "max_ejection_percent": 67},
                "load_assignment": {"cluster_name": "sidecars", "endpoints": endpoints(sidecars)}
            }]
        }
    }))
}

/// Where status-sync runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// A sidecar per replica, each reconciling alone (no `etcd_cluster`): today's default.
    Embedded,
    /// A sidecar per replica, sharing etcd: one reconciler.
    Cluster,
    /// One Envoy on drone's outbound path (`envoy/drone-side.yaml`), the replicas as its
    /// `pipeline` endpoints; no Service, no etcd.
    DroneSide,
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Topology::Embedded => "embedded",
            Topology::Cluster => "cluster mode",
            Topology::DroneSide => "drone side",
        })
    }
}

/// What a run is given.
#[derive(Clone, Debug)]
pub struct Setup {
    pub replicas: usize,
    pub topology: Topology,
    pub loss: f64,
    pub seed: u64,
}

impl Setup {
    /// `replicas` replicas behind `topology`, drone (seeded by `seed`) losing `loss` of its
    /// webhooks.
    pub fn new(topology: Topology, replicas: usize, loss: f64, seed: u64) -> Setup {
        Setup {
            replicas,
            topology,
            loss,
            seed,
        }
    }
}

/// drone-sim → Service → `replicas` sidecars → their replica, and etcd. Field order is drop
/// order: the Envoys go first, then the simulators, etcd last.
pub struct ClusterStack {
    /// The Service (`None` on drone's side, where drone posts to the one Envoy).
    pub front: Option<Envoy>,
    /// `None` once killed ([`ClusterStack::kill_sidecar`]).
    pub sidecars: Vec<Option<Envoy>>,
    /// On drone's side with TLS toward the pipeline: the replicas' TLS-terminating listeners.
    pub tls_fronts: Option<Envoy>,
    /// Replicas 1.. (replica 0 is `pipeline`).
    pub others: Vec<PipelineSim>,
    pub pipeline: PipelineSim,
    pub drone: DroneSim,
    pub etcd: Option<EtcdCluster>,
    pub setup: Setup,
}

impl ClusterStack {
    /// Starts everything; `etcd` must be `Some` for cluster mode.
    pub fn start(tools: &Tools, setup: Setup, etcd: Option<EtcdCluster>) -> Result<ClusterStack> {
        ClusterStack::start_with(tools, setup, etcd, None)
    }

    /// [`ClusterStack::start`]; on drone's side with `pipeline_tls`, each replica is behind its
    /// own TLS-terminating listener serving that certificate (the replicas' own TLS, as in
    /// production), and the drone-side Envoy keeps the shipped TLS toward the pipeline,
    /// trusting its CA.
    pub fn start_with(
        tools: &Tools,
        setup: Setup,
        etcd: Option<EtcdCluster>,
        pipeline_tls: Option<&DroneTls>,
    ) -> Result<ClusterStack> {
        anyhow::ensure!(
            (setup.topology == Topology::Cluster) == etcd.is_some(),
            "cluster mode needs etcd, the others none"
        );
        secret_in_environment();
        let drone = DroneSimConfig {
            seed: setup.seed,
            webhook_secret: SECRET.into(),
            ..crate::setup::losing(setup.loss, false)
        };
        let drone = DroneSim::start(drone, 0)?;
        let pipeline = PipelineSim::start(0)?;
        let others = (1..setup.replicas)
            .map(|_| pipeline.replica())
            .collect::<Result<Vec<_>>>()?;
        let mut replica_ports: Vec<u16> = std::iter::once(pipeline.port())
            .chain(others.iter().map(PipelineSim::port))
            .collect();
        let etcd_ports = etcd.as_ref().map(EtcdCluster::client_ports);
        let mut sidecars = Vec::new();
        let plugin = shipped_plugin()?;
        let path = plugin["webhook_path"].as_str().context("webhook_path")?;
        let mut tls_fronts = None;
        if let Some(tls) = pipeline_tls {
            anyhow::ensure!(
                setup.topology == Topology::DroneSide,
                "TLS on drone's side only"
            );
            let (bootstrap, ports) = tls.fronts(&replica_ports)?;
            tls_fronts = Some(Envoy::start_bootstrap(tools, &bootstrap, 1, "")?);
            replica_ports = ports;
        }
        let front = if setup.topology == Topology::DroneSide {
            let ca = pipeline_tls.map(DroneTls::ca_file);
            let b = drone_side_bootstrap(tools, &replica_ports, drone.port(), ca)?;
            let envoy = Envoy::start_bootstrap(tools, &b, 2, drone.token())?;
            drone.set_webhook_url(Some(envoy.url(path)));
            sidecars.push(Some(envoy));
            None
        } else {
            for port in &replica_ports {
                let b = sidecar_bootstrap(tools, *port, drone.port(), etcd_ports.as_deref())?;
                sidecars.push(Some(Envoy::start_bootstrap(tools, &b, 2, drone.token())?));
            }
            let listen: Vec<u16> = sidecars.iter().flatten().map(Envoy::listen_port).collect();
            let front = Envoy::start_bootstrap(tools, &service_bootstrap(&listen)?, 1, "")?;
            drone.set_webhook_url(Some(front.url(path)));
            Some(front)
        };
        Ok(ClusterStack {
            front,
            sidecars,
            tls_fronts,
            others,
            pipeline,
            drone,
            etcd,
            setup,
        })
    }

    /// The sidecars still running, with their index.
    pub fn live(&self) -> impl Iterator<Item = (usize, &Envoy)> {
        self.sidecars
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// `status_sync.<name>` summed over the running sidecars.
    pub fn sum(&self, name: &str) -> Result<i64> {
        self.live().map(|(_, s)| s.metric(name)).sum()
    }

    /// Each running sidecar's `cluster_mode` gauge.
    pub fn modes(&self) -> Result<Vec<(usize, i64)>> {
        self.live()
            .map(|(i, s)| Ok((i, s.metric("cluster_mode")?)))
            .collect()
    }

    /// Waits until exactly one running sidecar leads the cluster (`cluster_mode` 1) and every
    /// other one follows (2); the leader's index.
    pub fn wait_one_leader(&self, within: Duration) -> Result<usize> {
        wait_for(
            "one cluster leader, the others following",
            within,
            POLL,
            || {
                let modes = self.modes()?;
                let leaders: Vec<usize> = modes
                    .iter()
                    .filter(|(_, m)| *m == 1)
                    .map(|(i, _)| *i)
                    .collect();
                let following = modes.iter().filter(|(_, m)| *m == 2).count();
                Ok(match leaders.as_slice() {
                    [one] if following + 1 == modes.len() => Ok(*one),
                    _ => Err(format!("modes (sidecar, cluster_mode): {modes:?}")),
                })
            },
        )
        .with_context(|| self.diagnostics())
    }

    /// Kills sidecar `i` (SIGKILL): its replica's pod is gone.
    pub fn kill_sidecar(&mut self, i: usize) -> Result<()> {
        let s = self.sidecars.get_mut(i).context("no such sidecar")?;
        if let Some(mut e) = s.take() {
            e.kill();
        }
        Ok(())
    }

    /// Schedules the builds.
    pub fn schedule(&self, plans: &[(BuildPlan, Duration)]) {
        for (p, after) in plans {
            self.drone.schedule(p.clone(), *after);
        }
    }

    /// Waits until drone ran every build, the pipeline agrees with drone on every one, and
    /// every running sidecar that reconciles (all but the followers of cluster mode, which
    /// keep what their replica saw for a takeover and never call drone) tracks nothing and
    /// waits for no answer.
    pub fn wait_settled(&self, within: Duration) -> Result<()> {
        wait_drone_idle(&self.drone, within)?;
        wait_agrees(&self.drone, &self.pipeline, within, |_| true)
            .with_context(|| self.diagnostics())?;
        wait_for("every sidecar idle", within, POLL, || {
            let mut busy = 0;
            for (_, s) in self.live() {
                if s.metric("cluster_mode")? != 2 {
                    busy += s.metric("builds_tracked")? + s.metric("calls_inflight")?;
                }
            }
            Ok(done_if(busy == 0, || {
                format!("{busy} tracked or in flight")
            }))
        })
        .with_context(|| self.diagnostics())
    }

    /// What the run cost and delivered so far.
    pub fn figures(&self) -> Result<Figures> {
        let received = self.pipeline.received();
        let stats = self.drone.stats();
        let mut per_replica = vec![0; self.setup.replicas];
        for r in &received {
            if let Some(n) = per_replica.get_mut(r.replica) {
                *n += 1;
            }
        }
        Ok(Figures {
            replicas: self.setup.replicas,
            topology: Some(self.setup.topology),
            builds: self.drone.builds().len(),
            drone_calls: stats.api_calls,
            lookups: stats.build_calls.values().sum(),
            redeliveries: received.iter().filter(|r| r.is_redelivery()).count(),
            duplicates: duplicates(&received),
            webhooks: self.sum("webhooks_observed")?,
            etcd_requests: self.sum("etcd_requests")?,
            fallbacks: self.sum("cluster_fallbacks")?,
            recovery_ms: self.recovery_quantiles()?,
            per_replica,
            failed: received.iter().filter(|r| r.answered >= 500).count(),
            not_delivered: self.sum("webhooks_not_delivered")?,
        })
    }

    /// The recovery delay's P50 and P99 (ms), the highest of the sidecars' (each keeps its
    /// own histogram; in cluster mode and on drone's side one sidecar recovers nearly
    /// everything). Waits (bounded) for Envoy's stats flush when a sidecar recovered
    /// something; `None` when none did.
    pub fn recovery_quantiles(&self) -> Result<Option<(f64, f64)>> {
        if self.sum("transitions_recovered")? == 0 {
            return Ok(None);
        }
        wait_for(
            "recovery delays flushed",
            Duration::from_secs(5),
            POLL,
            || {
                let mut best: Option<(f64, f64)> = None;
                for (_, s) in self.live() {
                    let q = s.histogram_quantiles("status_sync.recovery_delay_ms")?;
                    let get = |name: &str| q.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
                    if let (Some(p50), Some(p99)) = (get("P50"), get("P99")) {
                        if !p50.is_nan() && best.is_none_or(|(_, b)| p99 > b) {
                            best = Some((p50, p99));
                        }
                    }
                }
                Ok(best.map(Some).ok_or_else(|| "no quantiles yet".to_string()))
            },
        )
    }

    /// The sidecars' filter lines and warnings, last ones, for a failed wait.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.live() {
            let log = s.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("wasm log") || l.contains("][warning][") || l.contains("][error][")
                })
                .collect();
            out.push_str(&format!(
                "---- sidecar {i} (filter lines, last 25 of {}) ----\n{}\n",
                lines.len(),
                lines[lines.len().saturating_sub(25)..].join("\n")
            ));
        }
        out
    }
}

/// What one run cost and delivered.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub replicas: usize,
    pub topology: Option<Topology>,
    pub builds: usize,
    /// Every call drone's API received.
    pub drone_calls: u64,
    /// Of which build lookups (`GET .../builds/{number}`).
    pub lookups: u64,
    pub redeliveries: usize,
    /// Re-deliveries of a (build, status, version) some replica had already answered 2xx
    /// for, plus deliveries the pipeline dropped by `webhook-id`.
    pub duplicates: usize,
    /// Live webhooks the sidecars observed (`webhooks_observed`, all sidecars).
    pub webhooks: i64,
    /// Requests the sidecars sent etcd (`etcd_requests`, all sidecars).
    pub etcd_requests: i64,
    /// Entries into fallback (`cluster_fallbacks`, all sidecars).
    pub fallbacks: i64,
    /// Recovery delay P50 and P99 in ms ([`ClusterStack::recovery_quantiles`]).
    pub recovery_ms: Option<(f64, f64)>,
    /// Requests each replica received.
    pub per_replica: Vec<usize>,
    /// Requests a replica answered 5xx.
    pub failed: usize,
    /// Live webhooks the sidecars saw answered other than 2xx/4xx (`webhooks_not_delivered`,
    /// all sidecars).
    pub not_delivered: i64,
}

impl Figures {
    /// etcd requests per live webhook observed.
    pub fn etcd_per_webhook(&self) -> f64 {
        if self.webhooks == 0 {
            return 0.0;
        }
        self.etcd_requests as f64 / self.webhooks as f64
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} replica(s), {}, {} builds: {} drone calls ({} build lookups), {} re-deliveries, {} duplicates, {} webhooks observed, {} etcd requests ({:.2} a webhook), {} fallbacks, recovery delay p50/p99 {}",
            self.replicas,
            self.topology.map(|t| t.to_string()).unwrap_or_default(),
            self.builds,
            self.drone_calls,
            self.lookups,
            self.redeliveries,
            self.duplicates,
            self.webhooks,
            self.etcd_requests,
            self.etcd_per_webhook(),
            self.fallbacks,
            self.recovery_ms
                .map(|(a, b)| format!("{a:.0}/{b:.0} ms"))
                .unwrap_or_else(|| "-".into()),
        )
    }
}

/// Re-deliveries of what a replica already accepted, and deliveries the pipeline dropped as
/// duplicates by `webhook-id`.
pub fn duplicates(received: &[Received]) -> usize {
    let mut accepted = BTreeSet::new();
    let mut dup = 0;
    for r in received {
        let key = (r.build.clone(), r.status.clone(), r.version);
        if r.outcome == "duplicate" || (r.is_redelivery() && accepted.contains(&key)) {
            dup += 1;
        }
        if (200..300).contains(&r.answered) {
            accepted.insert(key);
        }
    }
    dup
}
