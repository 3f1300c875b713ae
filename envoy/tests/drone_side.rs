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
use envoy_e2e::cluster::{self, random_builds, ClusterStack, Figures, Setup, Topology};
use envoy_e2e::drone_sim::BuildPlan;
use envoy_e2e::drone_tls::DroneTls;
use envoy_e2e::envoy::{self, Tools};
use envoy_e2e::pipeline_sim::FailRule;
use envoy_e2e::scenario::{slot, wait_for};
use envoy_e2e::setup::tools;
use envoy_e2e::util;
use serde_json::{json, Value};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(120);
/// The name the shipped route and plugin give the pipeline (`host_rewrite_literal`,
/// `pipeline_authority`).
const PIPELINE_AUTHORITY: &str = "pipeline.ci.example.com";

fn shipped() -> Result<Value> {
    cluster::shipped_file("drone-side.yaml")
}

/// The same builds for every run of a scenario: 45 builds over 3 repositories, a random
/// outcome mix (declined and killed included), scheduled over ~6 s.
fn builds(seed: u64) -> Vec<(BuildPlan, Duration)> {
    random_builds(seed, 45, 130)
}

/// drone-sim (seeded, signing with `cluster::SECRET`, losing `loss` of its webhooks but never
/// a build's first) → drone-side Envoy → `replicas` pipeline replicas sharing one store
/// (behind TLS listeners with `tls`: the shipped TLS toward the pipeline, trusting a test CA);
/// runs `plans`, waits until every build converged and the reconciler is idle (it makes no
/// call after that until a new webhook arrives), and checks what every run must show.
fn run(
    tools: &Tools,
    (replicas, loss, seed): (usize, f64, u64),
    plans: &[(BuildPlan, Duration)],
    rule: Option<FailRule>,
    tls: Option<&DroneTls>,
) -> Result<(ClusterStack, Figures)> {
    let setup = Setup::new(Topology::DroneSide, replicas, loss, seed);
    let stack = ClusterStack::start_with(tools, setup, None, tls)?;
    if let Some(rule) = rule {
        stack.pipeline.add_rule(rule);
    }
    stack.schedule(plans);
    stack.wait_settled(CONVERGE)?;
    let (_, envoy) = stack.live().next().context("the drone-side Envoy")?;
    if tls.is_some() {
        let handshakes = envoy.stats("cluster.pipeline.ssl.handshake")?;
        assert!(
            handshakes.values().sum::<i64>() > 0,
            "no TLS handshake toward the pipeline: {handshakes:?}"
        );
    }
    // drone signs what it sends, so `enforce` let every live webhook through.
    assert_eq!(
        envoy.metric("webhooks_rejected")?,
        0,
        "a genuine webhook was rejected"
    );
    assert_eq!(envoy.metric("webhooks_signature_invalid")?, 0);
    assert!(envoy.metric("webhooks_observed")? > 0);
    // One authority for the pipeline: live webhooks (host_rewrite_literal) and
    // re-deliveries (pipeline_authority) alike.
    assert_eq!(
        cluster::plugin_of(shipped()?)?["pipeline_authority"],
        PIPELINE_AUTHORITY
    );
    for r in &stack.pipeline.received() {
        assert_eq!(r.host.as_deref(), Some(PIPELINE_AUTHORITY), "{r:?}");
    }
    let f = stack.figures()?;
    Ok((stack, f))
}

/// Three replicas' build lookups and re-deliveries are within 10% of one replica's (and never
/// more than 2 apart at small counts, where one call is already 10%).
fn cost_within_10_percent(one: &Figures, three: &Figures) {
    let of = |f: &Figures| {
        [
            ("build lookups", f.lookups),
            ("re-deliveries", f.redeliveries as u64),
        ]
    };
    for ((what, one), (_, three)) in of(one).into_iter().zip(of(three)) {
        let slack = (one / 10).max(2);
        assert!(
            three.abs_diff(one) <= slack,
            "{what}: {three} with three replicas vs {one} with one (allowed ±{slack})"
        );
    }
}

/// With 30% of drone's webhooks lost (never a build's first), every build converges with three
/// replicas as with one, and drone's side costs the same: one reconciler sees every webhook
/// and the answer of whichever replica took it, so drone's build lookups and the
/// re-deliveries stay within 10% of the one-replica run of the same builds, and no replica
/// gets a transition another one already accepted. (Discovery, the rest of drone's calls,
/// runs per Envoy on a clock: one Envoy either way; see `cluster::Figures::lookups`.)
#[test]
fn three_replicas_behind_drone_side_cost_what_one_does_under_30_percent_loss() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    let plans = builds(21);
    let (_, one) = run(&tools, (1, 0.3, 21), &plans, None, None)?;
    eprintln!("30% loss: {one}");
    let (_, three) = run(&tools, (3, 0.3, 21), &plans, None, None)?;
    eprintln!("30% loss: {three}, per replica {:?}", three.per_replica);
    assert!(
        one.redeliveries >= 10,
        "only {} re-deliveries: the loss did not bite, the test is too weak",
        one.redeliveries
    );
    cost_within_10_percent(&one, &three);
    assert_eq!(three.duplicates, 0, "{three}");
    assert!(
        three.per_replica.iter().all(|&n| n > 0),
        "webhooks were not spread over the replicas: {:?}",
        three.per_replica
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
    let (_, one) = run(&tools, (1, 0.0, 33), &plans, None, None)?;
    eprintln!("0% loss: {one}");
    let fail = FailRule::all(500).on_replica(1);
    let (stack, three) = run(&tools, (3, 0.0, 33), &plans, Some(fail), None)?;
    eprintln!("0% loss, replica 1 answers 500: {three}");
    assert_eq!(one.duplicates, 0, "{one}");
    assert_eq!(three.duplicates, 0, "{three}");
    assert!(three.failed > 0, "the failing replica was never tried");
    // The route retried each 5xx at once on another replica, which took it: the next request
    // for that transition is drone's own (not a re-delivery) and was applied elsewhere, and
    // the filter, which sees only the route's final answer, never counted a failed delivery.
    let received = stack.pipeline.received();
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
    cost_within_10_percent(&one, &three);
    Ok(())
}

/// `enforce` as shipped: on drone's listener a webhook without drone's signature gets 401 and
/// never reaches a replica (drone's own signed webhooks pass: checked in every run above),
/// and the rejection shows in Prometheus under the shipped `sync_instance` label.
#[test]
fn unsigned_webhook_on_drone_side_listener_is_refused() -> Result<()> {
    let _slot = slot();
    let setup = Setup::new(Topology::DroneSide, 1, 0.0, 1);
    let stack = ClusterStack::start(&tools(), setup, None)?;
    let (_, envoy) = stack.live().next().context("the drone-side Envoy")?;
    let body = br#"{"event":"build","action":"updated","repo":{"id":1,"slug":"octocat/hello-world","namespace":"octocat","name":"hello-world"},"build":{"id":1,"number":1,"status":"success","version":3}}"#;
    let agent = util::agent(Duration::from_secs(10));
    let req = agent
        .post(&envoy.url("/hook"))
        .set("X-Drone-Event", "build")
        .set("Content-Type", "application/json");
    let (code, _) = util::send(req, Some(body)).map_err(anyhow::Error::msg)?;
    assert_eq!(code, 401);
    assert!(stack.pipeline.received().is_empty());
    // The shipped stats tags: Prometheus sees the plugin's instance as a label.
    let what = "the rejection in /stats/prometheus with the sync_instance label";
    wait_for(what, CONVERGE, Duration::from_millis(100), || {
        let (_, text) = envoy.admin_get("/stats/prometheus")?;
        let prefix = "status_sync_webhooks_rejected{";
        Ok(match text.lines().find(|l| l.starts_with(prefix)) {
            Some(l) if l.contains("sync_instance=\"drone-side\"") && l.ends_with(" 1") => Ok(()),
            other => Err(format!("{other:?}")),
        })
    })?;
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
    let env = envoy::VALIDATE_ENV;
    let mut v = shipped()?;
    envoy::use_module(&mut v, &tools.wasm);
    envoy::validate_json(&tools, dir.path(), "drone-side.json", &v, &env)?;
    // Without the secret, enforce cannot hold: the filter refuses the configuration. (The
    // variable is renamed to one nobody sets: the other tests put DRONE_WEBHOOK_SECRET in
    // this process's environment, which Envoy inherits.)
    for f in envoy::wasm_filters(&mut v["static_resources"]["listeners"][0]) {
        let slot = &mut f["typed_config"]["config"]["configuration"]["value"];
        let text = slot.as_str().context("plugin configuration")?;
        *slot = json!(text.replace("DRONE_WEBHOOK_SECRET", "NO_SUCH_SECRET_VARIABLE"));
    }
    let err = envoy::validate_json(&tools, dir.path(), "drone-side.json", &v, &env)
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
    assert_eq!(
        envoy::keys(plugin),
        envoy::keys(&cluster::plugin_of(shipped()?)?)
    );
    // The pluginConfig as istiod would hand it to drone's sidecar: the real filter's
    // on_configure accepts it (and so `enforce` with the secret's variable).
    let mut v = shipped()?;
    envoy::as_istiod_delivers(&mut v, spec, &tools.wasm)?;
    envoy::validate_json(&tools, dir.path(), "istio-drone-side.json", &v, &env)?;
    Ok(())
}

/// The figures of README's "Which side" table: the same 45 builds at 0% and 30% loss, one and
/// three replicas, drone's side and the pipeline's (a sidecar per replica, `cluster-mode.yaml`
/// without etcd, behind a round-robin Service). Measures, asserts only convergence (the
/// other tests pin drone's side). Four Envoys at once: run it alone,
/// `cargo test -p envoy-e2e --test drone_side -- --ignored --nocapture`.
#[test]
#[ignore = "measurement for README and BENCHMARKS.md; run alone with --ignored"]
fn figures_for_both_sides_one_and_three_replicas() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    let plans = builds(21);
    for loss in [0.0, 0.3] {
        for replicas in [1, 3] {
            for topology in [Topology::DroneSide, Topology::Embedded] {
                let setup = Setup::new(topology, replicas, loss, 21);
                let stack = ClusterStack::start(&tools, setup, None)?;
                stack.schedule(&plans);
                stack.wait_settled(CONVERGE)?;
                let f = stack.figures()?;
                let side = match topology {
                    Topology::DroneSide => "drone side",
                    _ => "pipeline side",
                };
                eprintln!("FIGURES {side}, {:.0}% loss: {f}", loss * 100.0);
            }
        }
    }
    Ok(())
}

/// The shipped TLS toward the pipeline, for real: the drone-side Envoy originates TLS to
/// each replica (SNI and the SAN check as shipped, trusting a test CA; each replica behind a
/// TLS-terminating listener serving a certificate for the pipeline's name), drone still talks
/// plain HTTP to it, and the filter reads every body: under 30% loss every build converges
/// and the re-deliveries travel the same TLS.
#[test]
fn drone_side_originates_tls_toward_the_replicas_and_still_reads_every_webhook() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    let cert = DroneTls::generate(PIPELINE_AUTHORITY)?;
    let plans: Vec<_> = builds(5).into_iter().take(15).collect();
    let (_, three) = run(&tools, (3, 0.3, 5), &plans, None, Some(&cert))?;
    eprintln!("TLS, 30% loss: {three}");
    assert!(three.redeliveries > 0, "nothing was re-delivered: {three}");
    assert_eq!(three.duplicates, 0, "{three}");
    assert!(three.per_replica.iter().all(|&n| n > 0), "{three:?}");
    Ok(())
}
