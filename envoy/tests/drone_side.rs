//! Drone's side (issue 21, section 1): drone-sim → one Envoy on drone's outbound path →
//! three pipeline replicas sharing one store, in a real Envoy.
//!
//! Every Envoy here runs the shipped `envoy/drone-side.yaml` itself (`cluster::drone_side_bootstrap`), with only what a
//! loopback test must change: ports and addresses (simulators on free ports, admin on port 0),
//! the module path, the pipeline's TLS socket (dropped where the simulators speak plain HTTP;
//! kept, trusting a test CA, where TLS listeners front the replicas), and the plugin's
//! timings (the e2e timings of `envoy::base_plugin_config`, so builds settle in seconds). The
//! route, its retry policy and host rewrite, the filter, `enforce` with the secret from the
//! environment, the outlier detection and the stats tags are the shipped ones.
//!
//! Each scenario runs the same builds (same seed, same loss) against one replica and against
//! three, and compares what drone paid (build lookups; all API calls are reported) and what
//! the pipeline got (re-deliveries, duplicates). Waits are bounded conditions, never sleeps. ENVOY_BIN and STATUS_SYNC_WASM
//! must be set (`make test` does it): without them the tests fail and say so.

use anyhow::{Context as _, Result};
use drone_model::rng::Rng;
use envoy_e2e::cluster;
use envoy_e2e::drone_sim::{BuildPlan, DroneSim, DroneSimConfig, LossPolicy};
use envoy_e2e::envoy::{self, Envoy, Tools};
use envoy_e2e::pipeline_sim::{FailRule, PipelineSim, Received};
use envoy_e2e::scenario::{self, slot, wait_for, Stack};
use envoy_e2e::util;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// drone's `DRONE_WEBHOOK_SECRET` in these tests; Envoy reads it from its environment as the
/// shipped file says (`webhook_secret_env: DRONE_WEBHOOK_SECRET`).
const SECRET: &str = "drone-side-e2e-secret";
const CONVERGE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);
/// The name the shipped route and plugin give the pipeline (`host_rewrite_literal`,
/// `pipeline_authority`).
const PIPELINE_AUTHORITY: &str = "pipeline.ci.example.com";

fn tools() -> Tools {
    Tools::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

fn shipped() -> Result<Value> {
    cluster::shipped_file("drone-side.yaml")
}

/// The shipped plugin configuration.
fn shipped_plugin() -> Result<Value> {
    cluster::plugin_of(shipped()?)
}

/// Envoy inherits the test's environment: the secret is there as it would be in drone's pod.
fn secret_in_environment() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("DRONE_WEBHOOK_SECRET", SECRET));
}

/// The same builds for every run of a scenario: 45 builds over 3 repositories, a random
/// outcome mix (declined and killed included), scheduled over ~6 s.
fn builds(seed: u64) -> Vec<(BuildPlan, Duration)> {
    let mut rng = Rng::new(seed);
    (0..45u64)
        .map(|i| {
            (
                BuildPlan::random(&mut rng, 3, 100),
                Duration::from_millis(130 * i),
            )
        })
        .collect()
}

/// What one run cost and delivered.
#[derive(Debug, Default)]
struct Figures {
    replicas: usize,
    builds: usize,
    /// Every call drone's API received.
    drone_calls: u64,
    /// Of which build lookups (`GET .../builds/{number}`): what a reconciler spends per build.
    /// The rest is discovery (each repository's `counter`), which an Envoy keeps reading on
    /// its own schedule (doubling to `max_poll_interval_ms`) while the repository is recent:
    /// per Envoy and per second, whatever the replicas, and so it grows with the time a run
    /// takes to settle, not with the builds.
    lookups: u64,
    redeliveries: usize,
    /// Re-deliveries of a (build, status, version) some replica had already answered 2xx for,
    /// plus deliveries the pipeline dropped by `webhook-id`.
    duplicates: usize,
    /// Requests each replica received.
    per_replica: Vec<usize>,
    /// Requests a replica answered 5xx.
    failed: usize,
    /// Live webhooks the filter saw answered other than 2xx/4xx
    /// (`status_sync.webhooks_not_delivered`).
    not_delivered: i64,
    /// Every request the pipeline received, all replicas, in order.
    received: Vec<Received>,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} replica(s), {} builds: {} drone calls ({} build lookups), {} re-deliveries, {} duplicates, {} answered 5xx ({} seen by the filter), per replica {:?}",
            self.replicas,
            self.builds,
            self.drone_calls,
            self.lookups,
            self.redeliveries,
            self.duplicates,
            self.failed,
            self.not_delivered,
            self.per_replica
        )
    }
}

/// drone-sim (seeded, signing with [`SECRET`], losing `loss` of its webhooks but never a
/// build's first) and a pipeline of `replicas` replicas sharing one store, with their ports.
fn drone_and_pipeline(
    seed: u64,
    loss: f64,
    replicas: usize,
) -> Result<(DroneSim, PipelineSim, Vec<PipelineSim>, Vec<u16>)> {
    let loss = LossPolicy {
        share: loss,
        spare_first: true,
        all_finals: false,
    };
    let cfg = DroneSimConfig {
        seed,
        webhook_secret: SECRET.into(),
        loss,
        ..Default::default()
    };
    let drone = DroneSim::start(cfg, 0)?;
    let pipeline = PipelineSim::start(0)?;
    let others = (1..replicas)
        .map(|_| pipeline.replica())
        .collect::<Result<Vec<_>>>()?;
    let ports = std::iter::once(pipeline.port())
        .chain(others.iter().map(PipelineSim::port))
        .collect();
    Ok((drone, pipeline, others, ports))
}

/// drone-sim → drone-side Envoy → `replicas` pipeline replicas sharing one store; runs
/// `plans`, waits until every build converged and the reconciler is idle (it makes no call
/// after that until a new webhook arrives), and checks what every run must show.
fn run(
    tools: &Tools,
    replicas: usize,
    loss: f64,
    seed: u64,
    plans: &[(BuildPlan, Duration)],
    rule: Option<FailRule>,
    tls: Option<&TestCert>,
) -> Result<Figures> {
    secret_in_environment();
    let (drone, pipeline, _others, mut ports) = drone_and_pipeline(seed, loss, replicas)?;
    if let Some(rule) = rule {
        pipeline.add_rule(rule);
    }
    // With TLS, each replica is behind its own TLS-terminating listener (the replicas' own
    // TLS, as in production): the drone-side Envoy's endpoints are those listeners.
    // Declared before the stack, so dropped after it.
    let _terminator = match tls {
        Some(cert) => {
            let (bootstrap, fronts) = cert.terminator(&ports)?;
            ports = fronts;
            Some(Envoy::start_bootstrap(tools, &bootstrap, 1, "")?)
        }
        None => None,
    };
    let envoy = Envoy::start_bootstrap(
        tools,
        &cluster::drone_side_bootstrap(tools, &ports, drone.port(), tls.map(|c| c.cert.as_path()))?,
        2,
        drone.token(),
    )?;
    let plugin = shipped_plugin()?;
    let path = plugin["webhook_path"].as_str().context("webhook_path")?;
    drone.set_webhook_url(Some(envoy.url(path)));
    // Field order drops Envoy first; `others` outlive the stack (declared before it).
    let stack = Stack {
        envoy,
        pipeline,
        drone,
    };
    for (p, after) in plans {
        stack.drone.schedule(p.clone(), *after);
    }
    stack.wait_converged(CONVERGE, |_| true)?;
    stack.wait_reconciler_idle(CONVERGE)?;

    if tls.is_some() {
        let handshakes = stack.envoy.stats("cluster.pipeline.ssl.handshake")?;
        assert!(
            handshakes.values().sum::<i64>() > 0,
            "no TLS handshake toward the pipeline: {handshakes:?}"
        );
    }
    let received = stack.pipeline.received();
    let mut per_replica = vec![0; replicas];
    for r in &received {
        if let Some(n) = per_replica.get_mut(r.replica) {
            *n += 1;
        }
    }
    // drone signs what it sends, so `enforce` let every live webhook through.
    assert_eq!(
        stack.envoy.metric("webhooks_rejected")?,
        0,
        "a genuine webhook was rejected"
    );
    assert_eq!(stack.envoy.metric("webhooks_signature_invalid")?, 0);
    assert!(stack.envoy.metric("webhooks_observed")? > 0);
    // One authority for the pipeline: live webhooks (host_rewrite_literal) and
    // re-deliveries (pipeline_authority) alike.
    assert_eq!(plugin["pipeline_authority"], PIPELINE_AUTHORITY);
    for r in &received {
        assert_eq!(r.host.as_deref(), Some(PIPELINE_AUTHORITY), "{r:?}");
    }
    Ok(Figures {
        replicas,
        builds: plans.len(),
        drone_calls: stack.drone.stats().api_calls,
        lookups: stack.drone.stats().build_calls.values().sum(),
        redeliveries: received.iter().filter(|r| r.is_redelivery()).count(),
        duplicates: cluster::duplicates(&received),
        per_replica,
        failed: received.iter().filter(|r| r.answered >= 500).count(),
        not_delivered: stack.envoy.metric("webhooks_not_delivered")?,
        received,
    })
}

/// `three` is within 10% of `one` (and never more than 2 apart at small counts, where one
/// call is already 10%).
fn within_10_percent(what: &str, one: u64, three: u64) {
    let slack = (one / 10).max(2);
    assert!(
        three.abs_diff(one) <= slack,
        "{what}: {three} with three replicas vs {one} with one (allowed ±{slack})"
    );
}

/// With 30% of drone's webhooks lost (never a build's first), every build converges with three
/// replicas as with one, and drone's side costs the same: one reconciler sees every webhook
/// and the answer of whichever replica took it, so drone's build lookups and the
/// re-deliveries stay within 10% of the one-replica run of the same builds, and no replica
/// gets a transition another one already accepted. (Discovery, the rest of drone's calls,
/// runs per Envoy on a clock: one Envoy either way; see [`Figures::lookups`].)
#[test]
fn three_replicas_behind_drone_side_cost_what_one_does_under_30_percent_loss() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    let plans = builds(21);
    let one = run(&tools, 1, 0.3, 21, &plans, None, None)?;
    eprintln!("30% loss: {one}");
    let three = run(&tools, 3, 0.3, 21, &plans, None, None)?;
    eprintln!("30% loss: {three}");
    assert!(
        one.redeliveries >= 10,
        "only {} re-deliveries: the loss did not bite, the test is too weak",
        one.redeliveries
    );
    within_10_percent("build lookups", one.lookups, three.lookups);
    within_10_percent(
        "re-deliveries",
        one.redeliveries as u64,
        three.redeliveries as u64,
    );
    assert_eq!(three.duplicates, 0, "{three}");
    assert!(
        three.per_replica.iter().all(|&n| n > 0),
        "webhooks were not spread over the replicas: {three}"
    );
    Ok(())
}

/// At 0% loss, with one of three replicas answering 500 to everything: Envoy's route tries
/// another replica at once, the filter sees that replica's 2xx, and nothing is re-delivered
/// beyond what the one-replica run re-delivers (the transitions drone never sends), with the
/// same build lookups. No duplicate reaches the pipeline (the 5xx replica applied nothing).
#[test]
fn a_failing_replica_is_retried_on_another_and_causes_no_duplicate_at_0_percent_loss() -> Result<()>
{
    let _slot = slot();
    let tools = tools();
    let plans = builds(33);
    let one = run(&tools, 1, 0.0, 33, &plans, None, None)?;
    eprintln!("0% loss: {one}");
    let three = run(
        &tools,
        3,
        0.0,
        33,
        &plans,
        Some(FailRule::all(500).on_replica(1)),
        None,
    )?;
    eprintln!("0% loss, replica 1 answers 500: {three}");
    assert_eq!(one.duplicates, 0, "{one}");
    assert_eq!(three.duplicates, 0, "{three}");
    assert!(three.failed > 0, "the failing replica was never tried");
    // The route retried each 5xx at once on another replica, which took it: the next request
    // for that transition is drone's own (not a re-delivery) and was applied elsewhere, and
    // the filter, which sees only the route's final answer, never counted a failed delivery.
    let received = &three.received;
    for (i, failed) in received
        .iter()
        .enumerate()
        .filter(|(_, r)| r.answered >= 500)
    {
        let retry = received[i + 1..]
            .iter()
            .find(|r| {
                (&r.build, &r.status, r.version) == (&failed.build, &failed.status, failed.version)
            })
            .with_context(|| format!("5xx never retried: {failed:?}"))?;
        assert!(
            !retry.is_redelivery() && retry.replica != failed.replica && retry.answered == 200,
            "{failed:?} then {retry:?}"
        );
    }
    assert_eq!(three.not_delivered, 0, "{three}");
    within_10_percent("build lookups", one.lookups, three.lookups);
    within_10_percent(
        "re-deliveries",
        one.redeliveries as u64,
        three.redeliveries as u64,
    );
    Ok(())
}

/// `enforce` as shipped: on drone's listener a webhook without drone's signature gets 401 and
/// never reaches a replica (drone's own signed webhooks pass: checked in every run above),
/// and the rejection shows in Prometheus under the shipped `sync_instance` label.
#[test]
fn unsigned_webhook_on_drone_side_listener_is_refused() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    secret_in_environment();
    let drone = DroneSim::start(DroneSimConfig::default(), 0)?;
    let pipeline = PipelineSim::start(0)?;
    let envoy = Envoy::start_bootstrap(
        &tools,
        &cluster::drone_side_bootstrap(&tools, &[pipeline.port()], drone.port(), None)?,
        1,
        drone.token(),
    )?;
    let body = br#"{"event":"build","action":"updated","repo":{"id":1,"slug":"octocat/hello-world","namespace":"octocat","name":"hello-world"},"build":{"id":1,"number":1,"status":"success","version":3}}"#;
    let agent = util::agent(Duration::from_secs(10));
    let req = agent
        .post(&envoy.url("/hook"))
        .set("X-Drone-Event", "build")
        .set("Content-Type", "application/json");
    let (code, _) = util::send(req, Some(body)).map_err(anyhow::Error::msg)?;
    assert_eq!(code, 401);
    assert!(pipeline.received().is_empty());
    // The shipped stats tags: Prometheus sees the plugin's instance as a label.
    wait_for(
        "the rejection in /stats/prometheus with the sync_instance label",
        CONVERGE,
        POLL,
        || {
            let (_, text) = envoy.admin_get("/stats/prometheus")?;
            Ok(
                match text
                    .lines()
                    .find(|l| l.starts_with("status_sync_webhooks_rejected{"))
                {
                    Some(l) if l.contains("sync_instance=\"drone-side\"") && l.ends_with(" 1") => {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                },
            )
        },
    )?;
    Ok(())
}

/// The shipped files pass `envoy --mode validate` with the real filter loaded (its
/// `on_configure` runs): drone-side.yaml as is (TLS toward the pipeline included; only the
/// module path is changed), refused without the webhook secret; the drone-side WasmPlugin is
/// outbound, on drone's workload, FAIL_OPEN, gives the VM both variables, has the same keys as
/// the Envoy file, and its pluginConfig validates as istiod would deliver it.
#[test]
fn drone_side_files_validate_and_agree() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    let dir = tempfile::tempdir()?;
    let mut v = shipped()?;
    for f in envoy::wasm_filters(&mut v["static_resources"]["listeners"][0]) {
        f["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] =
            json!(tools.wasm.display().to_string());
    }
    let p = dir.path().join("drone-side.json");
    std::fs::write(&p, serde_json::to_vec(&v)?)?;
    let env = [
        ("DRONE_TOKEN", "validate-token"),
        ("DRONE_WEBHOOK_SECRET", "validate-secret"),
    ];
    envoy::validate(&tools, &p, &env)?;
    // Without the secret, enforce cannot hold: the filter refuses the configuration. (The
    // variable is renamed to one nobody sets: the other tests put DRONE_WEBHOOK_SECRET in
    // this process's environment, which Envoy inherits.)
    for f in envoy::wasm_filters(&mut v["static_resources"]["listeners"][0]) {
        let config = &mut f["typed_config"]["config"];
        let slot = &mut config["configuration"]["value"];
        let text = slot.as_str().context("plugin configuration")?;
        *slot = json!(text.replace("DRONE_WEBHOOK_SECRET", "NO_SUCH_SECRET_VARIABLE"));
    }
    std::fs::write(&p, serde_json::to_vec(&v)?)?;
    let err = envoy::validate(&tools, &p, &env)
        .err()
        .context("accepted enforce without a secret")?;
    assert!(
        format!("{err:#}").contains("invalid configuration: key `webhook_secret_env`"),
        "{err:#}"
    );

    let path = envoy::crate_dir().join("istio/wasmplugin-drone-side.yaml");
    let wp = envoy::yaml_to_json(&std::fs::read_to_string(&path)?)?;
    assert_eq!(wp["kind"], "WasmPlugin");
    let spec = &wp["spec"];
    assert_eq!(spec["match"][0]["mode"], "CLIENT", "drone's outbound path");
    assert_eq!(spec["selector"]["matchLabels"]["app"], "drone");
    assert_eq!(spec["failStrategy"], "FAIL_OPEN");
    let plugin = &spec["pluginConfig"];
    assert_eq!(plugin["signature_mode"], "enforce");
    let hosts: Vec<&str> = spec["vmConfig"]["env"]
        .as_array()
        .context("vmConfig.env")?
        .iter()
        .filter(|e| e["valueFrom"] == "HOST")
        .filter_map(|e| e["name"].as_str())
        .collect();
    for k in ["drone_token_env", "webhook_secret_env"] {
        let var = plugin[k].as_str().context(k)?;
        assert!(hosts.contains(&var), "{k}={var} not given to the VM");
    }
    // Same keys on both sides (values differ: cluster names, authorities, instance).
    let envoy_plugin = shipped_plugin()?;
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(plugin), keys(&envoy_plugin));

    // The pluginConfig as istiod would hand it to drone's sidecar: the StringValue JSON,
    // `vm_id: ""`, `vmConfig.env` as host_env_keys, FAIL_OPEN, Istio's cluster names. The
    // real filter's on_configure accepts it (and so `enforce` with the secret's variable).
    let cluster = |k: &str| {
        plugin[k]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("pluginConfig.{k}"))
    };
    let (pipeline_cluster, drone_cluster) =
        (cluster("pipeline_cluster")?, cluster("drone_cluster")?);
    assert!(pipeline_cluster.starts_with("outbound|") && drone_cluster.starts_with("outbound|"));
    let mut v = shipped()?;
    for c in v["static_resources"]["clusters"]
        .as_array_mut()
        .context("clusters")?
    {
        let name = if c["name"] == "drone" {
            &drone_cluster
        } else {
            &pipeline_cluster
        };
        c["name"] = json!(name);
        c["load_assignment"]["cluster_name"] = json!(name);
    }
    let listener = &mut v["static_resources"]["listeners"][0];
    for f in envoy::wasm_filters(listener) {
        let config = &mut f["typed_config"]["config"];
        config["vm_config"]["code"]["local"]["filename"] = json!(tools.wasm.display().to_string());
        config["vm_config"]["vm_id"] = json!("");
        config["vm_config"]["environment_variables"] = json!({ "host_env_keys": hosts });
        config["failure_policy"] = spec["failStrategy"].clone();
        config["configuration"]["value"] = json!(plugin.to_string());
    }
    for r in listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["routes"]
        .as_array_mut()
        .context("routes")?
    {
        r["route"]["cluster"] = json!(pipeline_cluster);
    }
    let p = dir.path().join("istio-drone-side.json");
    std::fs::write(&p, serde_json::to_vec(&v)?)?;
    envoy::validate(&tools, &p, &env)?;
    Ok(())
}

/// The other topology, for the figures README compares (`make`-free, measured on demand):
/// drone-sim → a round-robin "Service" (a plain Envoy) → `replicas` pipeline-side sidecars
/// (`envoy.yaml.tmpl`, one each, enforce) → their replica, all replicas sharing one store.
fn run_pipeline_side(
    tools: &Tools,
    replicas: usize,
    loss: f64,
    seed: u64,
    plans: &[(BuildPlan, Duration)],
) -> Result<Figures> {
    let (drone, pipeline, _others, ports) = drone_and_pipeline(seed, loss, replicas)?;
    let mut sidecars = Vec::new();
    for port in &ports {
        let mut spec = envoy::EnvoySpec::new(tools.clone(), *port, drone.port(), drone.token())?;
        spec.concurrency = 1;
        spec.plugin["webhook_secret"] = json!(SECRET);
        spec.plugin["signature_mode"] = json!("enforce");
        sidecars.push(Envoy::start(&spec)?);
    }
    let listen: Vec<u16> = sidecars.iter().map(Envoy::listen_port).collect();
    let service = cluster::service_bootstrap(&listen)?;
    let front = Envoy::start_bootstrap(tools, &service, 1, drone.token())?;
    drone.set_webhook_url(Some(front.url("/hook")));
    for (p, after) in plans {
        drone.schedule(p.clone(), *after);
    }
    scenario::wait_drone_idle(&drone, CONVERGE)?;
    scenario::wait_agrees(&drone, &pipeline, CONVERGE, |_| true)?;
    wait_for("every sidecar idle", CONVERGE, POLL, || {
        let mut busy = 0;
        for s in &sidecars {
            busy += s.metric("builds_tracked")? + s.metric("calls_inflight")?;
        }
        Ok(if busy == 0 {
            Ok(())
        } else {
            Err(format!("{busy} tracked or in flight"))
        })
    })?;
    let received = pipeline.received();
    let mut per_replica = vec![0; replicas];
    for r in &received {
        if let Some(n) = per_replica.get_mut(r.replica) {
            *n += 1;
        }
    }
    let figures = Figures {
        replicas,
        builds: plans.len(),
        drone_calls: drone.stats().api_calls,
        lookups: drone.stats().build_calls.values().sum(),
        redeliveries: received.iter().filter(|r| r.is_redelivery()).count(),
        duplicates: cluster::duplicates(&received),
        per_replica,
        failed: received.iter().filter(|r| r.answered >= 500).count(),
        not_delivered: sidecars
            .iter()
            .map(|s| s.metric("webhooks_not_delivered"))
            .sum::<Result<i64>>()?,
        received,
    };
    drop(front);
    drop(sidecars);
    Ok(figures)
}

/// The figures of README's "Which side" table: the same 45 builds at 0% and 30% loss, one and
/// three replicas, drone's side and the pipeline's. Measures, asserts only convergence (the
/// other tests pin drone's side). Four Envoys at once: run it alone,
/// `cargo test -p envoy-e2e --test drone_side -- --ignored --nocapture`.
#[test]
#[ignore = "measurement for README and BENCHMARKS.md; run alone with --ignored"]
fn figures_for_both_sides_one_and_three_replicas() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    secret_in_environment();
    for loss in [0.0, 0.3] {
        let plans = builds(21);
        for replicas in [1, 3] {
            let d = run(&tools, replicas, loss, 21, &plans, None, None)?;
            eprintln!("FIGURES drone side, {:.0}% loss: {d}", loss * 100.0);
            let p = run_pipeline_side(&tools, replicas, loss, 21, &plans)?;
            eprintln!("FIGURES pipeline side, {:.0}% loss: {p}", loss * 100.0);
        }
    }
    Ok(())
}

/// A self-signed certificate for the pipeline's name (`openssl req -x509`), trusted by the
/// drone-side Envoy as its CA, served by TLS-terminating listeners in front of the replicas.
struct TestCert {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCert {
    /// `Ok(None)` (after saying so loudly) when openssl is missing, except under `CI=true`,
    /// where that is a failure.
    fn make(test: &str) -> Result<Option<TestCert>> {
        let Some(openssl) = envoy_e2e::prometheus::find("openssl") else {
            let how = "install Debian's `openssl` package";
            anyhow::ensure!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "{test}: `openssl` not found on PATH and CI=true: {how}"
            );
            eprintln!("\n!! SKIPPED {test}: `openssl` not found on PATH; {how}. (A failure under CI=true.)\n");
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let out = Command::new(openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", &format!("/CN={PIPELINE_AUTHORITY}")])
            .args([
                "-addext",
                &format!("subjectAltName=DNS:{PIPELINE_AUTHORITY}"),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Some(TestCert {
            _dir: dir,
            cert,
            key,
        }))
    }

    /// A bootstrap with one TLS listener per replica port (TCP proxied to it, so the HTTP
    /// request, Host included, reaches the replica as sent), and those listeners' ports.
    fn terminator(&self, replicas: &[u16]) -> Result<(Value, Vec<u16>)> {
        let mut listeners = Vec::new();
        let mut clusters = Vec::new();
        let mut fronts = Vec::new();
        for (i, port) in replicas.iter().enumerate() {
            let front = envoy::free_port()?;
            fronts.push(front);
            listeners.push(json!({
                "name": format!("tls-{i}"),
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": front}},
                "filter_chains": [{
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "common_tls_context": {"tls_certificates": [{
                                "certificate_chain": {"filename": self.cert.display().to_string()},
                                "private_key": {"filename": self.key.display().to_string()}
                            }]}
                        }
                    },
                    "filters": [{
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                            "stat_prefix": format!("tls_{i}"),
                            "cluster": format!("replica-{i}")
                        }
                    }]
                }]
            }));
            clusters.push(json!({
                "name": format!("replica-{i}"), "type": "STATIC", "connect_timeout": "2s",
                "load_assignment": {"cluster_name": format!("replica-{i}"), "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                ]}]}
            }));
        }
        Ok((
            json!({
                "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
                "static_resources": {"listeners": listeners, "clusters": clusters}
            }),
            fronts,
        ))
    }
}

/// The shipped TLS toward the pipeline, for real: the drone-side Envoy originates TLS to
/// each replica (SNI and the SAN check as shipped, trusting a test CA), drone still talks
/// plain HTTP to it, and the filter reads every body: under 30% loss every build converges
/// and the re-deliveries travel the same TLS.
#[test]
fn drone_side_originates_tls_toward_the_replicas_and_still_reads_every_webhook() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    let Some(cert) = TestCert::make("drone_side_originates_tls_toward_the_replicas")? else {
        return Ok(());
    };
    let plans: Vec<_> = builds(5).into_iter().take(15).collect();
    let three = run(&tools, 3, 0.3, 5, &plans, None, Some(&cert))?;
    eprintln!("TLS, 30% loss: {three}");
    assert!(three.redeliveries > 0, "nothing was re-delivered: {three}");
    assert_eq!(three.duplicates, 0, "{three}");
    assert!(three.per_replica.iter().all(|&n| n > 0), "{three}");
    Ok(())
}
