//! End-to-end: status-sync in a real Envoy (V8), between drone-sim and pipeline-sim.
//!
//! Each test starts its own simulators (port 0) and its own Envoy (free ports, own temp dir,
//! `--disable-hot-restart`), and every process is killed by a drop guard even when the test
//! fails. Tests assert behaviour (views, counts, metrics), never durations; every wait is a
//! bounded polling loop. ENVOY_BIN and STATUS_SYNC_WASM must be set (`make test` does it):
//! without them the tests fail and say so, they are never skipped.

use anyhow::{bail, Context as _, Result};
use envoy_e2e::drone_sim::{BuildKey, BuildPlan, DroneSimConfig, Outcome};
use envoy_e2e::drone_tls;
use envoy_e2e::envoy::{self, DroneTls, Envoy, EnvoySpec, Tools};
use envoy_e2e::pipeline_sim::{FailRule, Received};
use envoy_e2e::scenario::{slot, wait_for, Stack};
use envoy_e2e::setup::{done_if, losing, tools};
use envoy_e2e::util;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The template with `plugin`, for `envoy --mode validate` (which connects to nothing: the
/// clusters point at ports 1 and 2, but reads the `drone` cluster's CA file, `tls`'s).
fn to_validate(tools: &Tools, plugin: &Value, tls: &DroneTls) -> Result<String> {
    let listen = envoy::free_port()?;
    let drone = envoy::DroneUpstream {
        port: 2,
        host: envoy::DRONE_HOST,
        ca_file: tls.ca_file(),
    };
    envoy::render_template(envoy::TEMPLATE, 0, listen, 1, &drone, &tools.wasm, plugin)
}

const CONVERGE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

fn plan(repo: usize, outcome: Outcome, step_ms: u64) -> BuildPlan {
    let mut p = BuildPlan::new(repo, outcome);
    p.step_ms = step_ms;
    p
}

fn redeliveries_for<'a>(received: &'a [Received], key: &BuildKey) -> Vec<&'a Received> {
    let k = key.to_string();
    received
        .iter()
        .filter(|r| r.is_redelivery() && r.build.as_deref() == Some(k.as_str()))
        .collect()
}

/// Drone loses every final webhook (and a fifth of the rest, never a build's first): the
/// filter must find each of those builds in drone's API and re-deliver, until the pipeline's
/// view equals drone's for every build — including declined builds, which never get a
/// webhook for their last transition at all.
#[test]
fn lost_final_webhooks_are_recovered_and_views_match() -> Result<()> {
    let _slot = slot();
    let stack = Stack::start(
        &tools(),
        DroneSimConfig {
            seed: 11,
            ..losing(0.2, true)
        },
        |_| {},
    )?;
    let mut keys = Vec::new();
    for (i, o) in Outcome::ENDING
        .iter()
        .chain(Outcome::ENDING.iter())
        .enumerate()
    {
        let mut p = plan(i % 3, *o, 100);
        p.created_late = i % 3 == 0;
        p.steps = 1 + i % 3;
        let key = stack
            .drone
            .schedule(p, Duration::from_millis(80 * i as u64));
        keys.push((key, *o));
    }
    stack.wait_converged(CONVERGE, |_| true)?;

    let hooks = stack.drone.webhooks();
    let received = stack.pipeline.received();
    let truth = stack.drone.builds();
    let mut recovered = 0;
    for (key, outcome) in &keys {
        let lost_final = hooks.iter().any(|w| &w.build == key && w.lost && w.done);
        let redelivered = redeliveries_for(&received, key);
        // Declined builds have no final webhook to lose; drone never reports them.
        if lost_final || *outcome == Outcome::Declined {
            let b = truth.iter().find(|b| &b.key == key).context("build")?;
            let ok: Vec<_> = redelivered
                .iter()
                .filter(|r| r.outcome == "applied")
                .collect();
            assert_eq!(
                ok.len(),
                1,
                "{key}: one accepted re-delivery expected, got {redelivered:?}"
            );
            assert_eq!(ok[0].status.as_deref(), Some(b.status.as_str()), "{key}");
            recovered += 1;
        }
    }
    assert!(
        recovered >= 10,
        "only {recovered} builds needed recovery: the test is too weak"
    );
    eprintln!("{recovered} of {} builds needed recovery", keys.len());
    // Re-deliveries are drone-shaped webhooks with a stable id, each taken by the pipeline (a
    // retry after a slow answer would show as a duplicate, which is fine: the id makes it
    // harmless).
    for r in received.iter().filter(|r| r.is_redelivery()) {
        assert!(
            matches!(r.outcome.as_str(), "applied" | "duplicate"),
            "{r:?}"
        );
        assert_eq!(r.path, "/hook");
        assert_eq!(r.drone_event.as_deref(), Some("build"));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert!(
            r.webhook_id.as_deref().is_some_and(|id| !id.is_empty()),
            "{r:?}"
        );
        let body = stack.pipeline.body(r.seq).context("body kept")?;
        let v: Value = serde_json::from_slice(&body)?;
        assert_eq!(
            (v["event"].as_str(), v["action"].as_str()),
            (Some("build"), Some("updated"))
        );
        assert!(
            v["repo"]["slug"].is_string() && v["build"]["stages"].is_array(),
            "{v}"
        );
    }
    assert!(stack.envoy.metric("redeliveries_ok")? >= recovered as i64);
    assert!(stack.envoy.metric("drone_polls_ok")? >= recovered as i64);
    Ok(())
}

/// Issue 12 in a real Envoy, default settings but the e2e timings (no `scan_repos`): after a
/// build whose webhooks arrive, a repository's newest builds lose every webhook: a declined
/// one (its only webhook, `build:created`, lost) and one that runs and succeeds. Nothing later
/// comes in that repository; discovery (the repository's `counter`) finds both, and the
/// pipeline gets their final states. Also the race of two triggers at once: build n is
/// written and announced before n-1's row exists, and n-1's webhooks are lost.
#[test]
fn newest_builds_whose_every_webhook_was_lost_are_discovered() -> Result<()> {
    let _slot = slot();
    let stack = Stack::start(&tools(), losing(0.0, false), |_| {})?;
    let at = |p: BuildPlan, ms: u64| stack.drone.schedule(p, Duration::from_millis(ms));
    let lose_all = |mut p: BuildPlan| {
        p.lose_all = true;
        p
    };
    let seen = at(plan(0, Outcome::Success, 80), 0);
    stack.wait_converged(CONVERGE, |k| *k == seen)?;
    let declined = at(lose_all(plan(0, Outcome::Declined, 80)), 200);
    let newest = at(lose_all(plan(0, Outcome::Success, 300)), 400);
    // Repository 1: build n-1's row is written after n's, and only n's webhooks arrive.
    let first = at(plan(1, Outcome::Success, 80), 0);
    stack.wait_converged(CONVERGE, |k| *k == first)?;
    let mut late_row = lose_all(plan(1, Outcome::Failure, 80));
    late_row.row_delay_ms = 2_500;
    let late_row = at(late_row, 0);
    at(plan(1, Outcome::Success, 80), 100); // build n, announced
    let started = std::time::Instant::now();
    stack.wait_converged(CONVERGE, |_| true)?;
    eprintln!(
        "converged {:.1} s after drone's last write",
        started.elapsed().as_secs_f64()
    );
    let received = stack.pipeline.received();
    for key in [&declined, &newest, &late_row] {
        assert!(
            stack
                .drone
                .webhooks()
                .iter()
                .all(|w| &w.build != key || w.lost),
            "{key}: every webhook lost"
        );
        assert!(
            redeliveries_for(&received, key)
                .iter()
                .any(|r| r.outcome == "applied"),
            "{key}: delivered by the filter"
        );
    }
    assert!(
        stack.envoy.metric("builds_discovered")? + stack.envoy.metric("builds_gap_filled")? >= 3
    );
    assert_eq!(stack.envoy.metric("builds_not_found")?, 0);
    Ok(())
}

/// A 500 from the pipeline means "not delivered": the transition comes again (same
/// webhook-id) until it is accepted. A 400 to drone's signed webhook means "refused": it is
/// never sent again. (Signed, `monitor`: without a secret a refused webhook is a hint the
/// filter cannot tell from a refused forgery, no claim at all, so drone's state is
/// re-delivered once and that answer is final; issue 20, finding 2.)
#[test]
fn pipeline_500_gets_the_transition_again_400_does_not() -> Result<()> {
    const SECRET: &str = "e2e-webhook-secret-refusals";
    let _slot = slot();
    let drone = DroneSimConfig {
        webhook_secret: SECRET.into(),
        ..DroneSimConfig::default()
    };
    let stack = Stack::start(&tools(), drone, |spec| {
        spec.plugin["webhook_secret"] = json!(SECRET);
        spec.plugin["signature_mode"] = json!("monitor");
    })?;
    let first_of = |repo: usize| BuildKey {
        slug: stack.drone.repos()[repo].clone(),
        number: 1,
    };
    let (a, b) = (first_of(0), first_of(1));
    // The live final webhook and the first re-delivery of A fail with 500.
    stack
        .pipeline
        .add_rule(FailRule::build(&a.to_string(), 500).only_done().times(2));
    stack
        .pipeline
        .add_rule(FailRule::build(&b.to_string(), 400).only_done());
    let now = |repo, outcome| {
        stack
            .drone
            .schedule(plan(repo, outcome, 100), Duration::ZERO)
    };
    assert_eq!(now(0, Outcome::Success), a);
    assert_eq!(now(1, Outcome::Failure), b);
    stack.wait_converged(CONVERGE, |k| k == &a)?;
    let refused = stack.wait_metric("webhooks_refused", 1, CONVERGE)?;
    assert_eq!(refused, 1);

    // Nothing is left to poll or re-deliver once the reconciler tracks no build and has no
    // call in flight: A was delivered, B's refused final settled it. Wait for that state (not
    // for a time), then check what the pipeline got.
    stack.wait_reconciler_idle(CONVERGE)?;
    let received = stack.pipeline.received();
    let finals_a: Vec<&Received> = received
        .iter()
        .filter(|r| {
            r.build.as_deref() == Some(a.to_string().as_str())
                && r.status.as_deref() == Some("success")
        })
        .collect();
    let outcomes: Vec<&str> = finals_a.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "failed", "applied"], "{finals_a:?}");
    assert!(finals_a[1].is_redelivery() && finals_a[2].is_redelivery());
    assert_eq!(
        finals_a[1].webhook_id, finals_a[2].webhook_id,
        "the id is stable across attempts"
    );

    assert!(
        redeliveries_for(&received, &b).is_empty(),
        "a 400 was retried: {:?}",
        redeliveries_for(&received, &b)
    );
    let view = stack.pipeline.view();
    assert_eq!(
        view[&b.to_string()].status,
        "running",
        "B's failure was refused, so it stays running"
    );
    assert_eq!(
        stack.envoy.metric("builds_tracked")?,
        0,
        "nothing left to poll after A was delivered and B refused"
    );
    Ok(())
}

/// With 4 workers there are 5 root contexts ticking (workers + main); the leader lease makes
/// exactly one of them poll, so drone sees one GET per build that needs one, not five.
#[test]
fn concurrency_4_polls_drone_once_per_due_build() -> Result<()> {
    let _slot = slot();
    let stack = Stack::start(&tools(), losing(0.0, true), |spec| spec.concurrency = 4)?;
    let keys: Vec<BuildKey> = (0..8)
        .map(|i| {
            stack.drone.schedule(
                plan(i % 3, Outcome::Success, 60),
                Duration::from_millis(50 * i as u64),
            )
        })
        .collect();
    stack.wait_converged(CONVERGE, |_| true)?;
    // Every build delivered and forgotten, no call in flight: no poll can follow.
    stack.wait_reconciler_idle(CONVERGE)?;
    let stats = stack.drone.stats();
    let calls = |k: String| (k.clone(), stats.build_calls.get(&k).copied().unwrap_or(0));
    let per_build: Vec<(String, u64)> = keys.iter().map(|k| calls(k.to_string())).collect();
    let m = stack.envoy.stats("status_sync")?;
    eprintln!("polls per build with 4 workers: {per_build:?}; filter metrics: {m:?}");
    // One poll per build, give or take a rare second one (a poll retried after a slow answer
    // under load, or a leader handover): five would mean every root context polls.
    for (k, n) in &per_build {
        assert!(
            (1..=2).contains(n),
            "{k} polled {n} times (per build: {per_build:?})"
        );
    }
    let total: u64 = per_build.iter().map(|(_, n)| n).sum();
    assert!(
        total <= keys.len() as u64 + 1,
        "{total} polls for {} builds: {per_build:?}",
        keys.len()
    );
    assert_eq!(stack.envoy.metric("redeliveries_ok")?, keys.len() as i64);
    Ok(())
}

/// A new plugin configuration pushed while running (LDS from a file, replaced atomically)
/// must not lose tracked builds: a build whose final webhook was lost before the change is
/// still recovered after it. The change moves `webhook_path`, so the path re-deliveries are
/// POSTed to also proves that the recovery ran under the new configuration.
#[test]
fn hot_config_change_keeps_tracked_builds() -> Result<()> {
    let _slot = slot();
    // Long enough that the build is still waiting when the new configuration lands.
    let stale_ms = 5000;
    let stack = Stack::start(&tools(), DroneSimConfig::default(), |spec| {
        spec.lds = true;
        spec.plugin["stale_after_ms"] = stale_ms.into();
        spec.plugin["max_poll_interval_ms"] = 8000.into();
    })?;
    let mut p = plan(0, Outcome::Success, 100);
    p.lose_final = true;
    let before = stack.drone.schedule(p.clone(), Duration::ZERO);
    stack.wait_drone_idle(CONVERGE)?;
    wait_for("the filter to track the build", CONVERGE, POLL, || {
        let v = stack.pipeline.view();
        let tracked = stack.envoy.metric("builds_tracked")?;
        Ok(match v.get(&before.to_string()) {
            Some(e) if e.status == "running" && tracked >= 1 => Ok(()),
            other => Err(format!("pipeline has {other:?}, builds_tracked {tracked}")),
        })
    })?;
    let lds_ok = |s: &BTreeMap<String, i64>| {
        s.get("listener_manager.lds.update_success")
            .copied()
            .unwrap_or(0)
    };
    let updates = lds_ok(&stack.envoy.stats("listener_manager.lds")?);
    let seen_before_push = stack.pipeline.received().len() as u64;

    let mut stack = stack;
    let mut plugin = envoy::base_plugin_config();
    plugin["stale_after_ms"] = stale_ms.into();
    plugin["max_poll_interval_ms"] = 8000.into();
    plugin["webhook_path"] = "/hook2".into();
    stack.envoy.push_plugin_config(&plugin)?;
    wait_for("Envoy to accept the new listener", CONVERGE, POLL, || {
        let s = stack.envoy.stats("listener_manager")?;
        let rejected = s
            .get("listener_manager.lds.update_rejected")
            .copied()
            .unwrap_or(0);
        if rejected > 0 {
            bail!("Envoy rejected the LDS update:\n{}", stack.diagnostics());
        }
        Ok(done_if(lds_ok(&s) > updates, || format!("{s:?}")))
    })?;
    stack.drone.set_webhook_url(Some(stack.envoy.url("/hook2")));
    let after = stack.drone.schedule(p, Duration::ZERO);
    stack.wait_converged(CONVERGE, |k| k == &before || k == &after)?;
    let received = stack.pipeline.received();
    for k in [&before, &after] {
        let r = redeliveries_for(&received, k);
        assert_eq!(r.len(), 1, "{k}: {r:?}");
        assert_eq!(
            r[0].path, "/hook2",
            "{k}: re-delivered under the old configuration"
        );
        assert!(r[0].seq > seen_before_push, "{k}");
    }
    Ok(())
}

/// drone answers 503 for a while: the circuit opens after `circuit_failure_threshold`
/// failures and then lets one probe through per open period, so the calls drone sees during
/// the outage stay bounded; when drone is back, everything converges.
#[test]
fn drone_outage_causes_no_call_storm_and_converges_after() -> Result<()> {
    let _slot = slot();
    let threshold = 3u64;
    let open_ms = 2000u64;
    let inflight = 4u64;
    let stack = Stack::start(&tools(), losing(0.0, true), |spec| {
        spec.plugin["circuit_failure_threshold"] = threshold.into();
        spec.plugin["circuit_open_ms"] = open_ms.into();
        spec.plugin["max_inflight_calls"] = inflight.into();
    })?;
    stack.drone.set_down(true);
    let down_at = Instant::now();
    let outcomes = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Killed,
        Outcome::Skipped,
        Outcome::Declined,
    ];
    for i in 0..10 {
        stack.drone.schedule(
            plan(i % 3, outcomes[i % outcomes.len()], 80),
            Duration::from_millis(40 * i as u64),
        );
    }
    stack.wait_drone_idle(CONVERGE)?;
    // Stay down until the filter has failed enough to open the circuit, then a while more.
    stack.wait_metric("circuit_open", 1, CONVERGE)?;
    let open_seen = Instant::now();
    let mut saw_open = 0;
    while open_seen.elapsed() < Duration::from_millis(4 * open_ms) {
        saw_open = saw_open.max(stack.envoy.metric("circuit_open")?);
        std::thread::sleep(POLL);
    }
    stack.drone.set_down(false);
    let outage_ms = down_at.elapsed().as_millis() as u64;
    let during = stack.drone.stats().calls_while_down;
    // Before the circuit opens: the threshold, plus calls already in flight; after: at most
    // one probe per open period (periods double, so this is generous).
    let bound = threshold + inflight + outage_ms.div_ceil(open_ms) + 1;
    eprintln!("outage: {during} calls to drone in {outage_ms} ms (bound {bound})");
    assert!(
        during >= threshold,
        "only {during} calls during the outage: the test is too weak"
    );
    assert!(
        during <= bound,
        "{during} calls to a down drone in {outage_ms} ms (bound {bound})"
    );
    assert_eq!(saw_open, 1);
    assert!(stack.envoy.metric("drone_polls_failed")? >= threshold as i64);
    stack.wait_converged(CONVERGE, |_| true)?;
    wait_for("the circuit to close", CONVERGE, POLL, || {
        let v = stack.envoy.metric("circuit_open")?;
        Ok(done_if(v == 0, || format!("circuit_open {v}")))
    })?;
    Ok(())
}

/// A bad plugin configuration is refused (validation and startup both fail) with one log
/// line naming the key; the token never appears in the log.
#[test]
fn bad_plugin_configuration_is_refused_naming_the_key() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    let dir = tempfile::tempdir()?;
    let secret = "tok-DO-NOT-LOG-8c1f";
    let tls = DroneTls::generate(envoy::DRONE_HOST)?;
    // (the key the error must name, the change that breaks it; null removes a key)
    let cases = [
        ("tick_ms", json!({"tick_ms": "fast"})),
        ("tick_msec", json!({"tick_msec": 100})),
        ("drone_cluster", json!({"drone_cluster": null})),
        ("lease_ms", json!({"lease_ms": 100})),
        ("signature_mode", json!({"signature_mode": "sometimes"})),
    ];
    for (i, (key, change)) in cases.iter().enumerate() {
        let mut plugin = envoy::base_plugin_config();
        let obj = plugin
            .as_object_mut()
            .context("plugin config is an object")?;
        obj.remove("drone_token_env");
        obj.insert("drone_token".into(), json!(secret));
        for (k, v) in change.as_object().context("change")? {
            match v {
                Value::Null => obj.remove(k),
                v => obj.insert(k.clone(), v.clone()),
            };
        }
        let yaml = to_validate(&tools, &plugin, &tls)?;
        let path = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&path, yaml)?;
        let err = match envoy::validate(&tools, &path, &[]) {
            Ok(out) => panic!(
                "{key}: Envoy accepted the configuration:\n{}",
                envoy::tail(&out, 20)
            ),
            Err(e) => format!("{e:#}"),
        };
        let line = format!("status-sync: invalid configuration: key `{key}`");
        assert!(
            err.contains(&line),
            "{key}: no line naming the key in:\n{err}"
        );
        assert!(!err.contains(secret), "the token was logged:\n{err}");
    }
    // And a real start fails too, with the same line.
    let mut spec = EnvoySpec::new(tools.clone(), 1, 2, "t")?;
    spec.plugin["tick_ms"] = json!(-5);
    let mut e = Envoy::spawn(&spec)?;
    let status = e.wait_exit(Duration::from_secs(90))?;
    let log = e.log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "Envoy started with a bad configuration"
    );
    assert!(
        log.contains("status-sync: invalid configuration: key `tick_ms`"),
        "{}",
        envoy::tail(&log, 30)
    );
    Ok(())
}

/// Bodies the filter cannot or will not parse pass through byte for byte: a 5 MB webhook
/// (over `max_body_bytes`, under the listener's buffer limit) and malformed ones.
#[test]
fn large_and_malformed_webhooks_pass_through_unchanged() -> Result<()> {
    let _slot = slot();
    let stack = Stack::start(&tools(), DroneSimConfig::default(), |_| {})?;
    let padding = "x".repeat(5 << 20);
    let big = format!(
        r#"{{"event":"build","action":"updated","repo":{{"id":42,"namespace":"octocat","name":"hello-world","slug":"octocat/hello-world"}},"build":{{"id":1,"repo_id":42,"number":77,"status":"running","message":"{padding}","version":2}}}}"#
    );
    let mut malformed = br#"{"event":"build","action":"updated","build":{"number":"#.to_vec();
    malformed.extend_from_slice(&[0xff, 0xfe, 0x00, b'}', b'\n']);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("5 MB", big.into_bytes()),
        ("malformed", malformed),
        ("empty", Vec::new()),
        ("not json", b"<html>hello</html>".to_vec()),
    ];
    let agent = util::agent(Duration::from_secs(30));
    for (what, body) in &bodies {
        let req = agent
            .post(&stack.envoy.url("/hook"))
            .set("X-Drone-Event", "build")
            .set("Content-Type", "application/json");
        let (code, answer) =
            util::send(req, Some(body)).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        // The pipeline's own answer comes back: 200 for the parsable one, 400 otherwise.
        assert!(
            code == 200 || code == 400,
            "{what}: {code} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let received = stack.pipeline.received();
    assert_eq!(received.len(), bodies.len(), "{received:?}");
    for ((what, body), r) in bodies.iter().zip(&received) {
        assert_eq!(r.len, body.len(), "{what}");
        assert_eq!(
            r.sha256,
            util::sha256_hex(body),
            "{what}: body changed on the way"
        );
        assert_eq!(r.drone_event.as_deref(), Some("build"), "{what}");
        assert_eq!(
            stack.pipeline.body(r.seq).as_deref(),
            Some(&body[..]),
            "{what}"
        );
    }
    stack.wait_metric("webhooks_oversized", 1, CONVERGE)?;
    stack.wait_metric("webhooks_unparsable", 2, CONVERGE)?;
    Ok(())
}

/// Finds `spec.pluginConfig`, `vmConfig.env` and friends in the WasmPlugin manifest.
fn wasmplugin() -> Result<Value> {
    let path = envoy::crate_dir().join("istio/wasmplugin.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    envoy::yaml_to_json(&text)
}

/// Every YAML in envoy/ passes `envoy --mode validate` with the real filter loaded (which
/// runs its `on_configure`): the template, the example, and the Istio WasmPlugin's
/// pluginConfig (fed to Envoy as a plain plugin configuration, with Istio-style cluster
/// names and the token from the environment as `vmConfig.env` would provide it).
#[test]
fn every_yaml_in_envoy_dir_validates() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    let dir = tempfile::tempdir()?;
    let root = envoy::crate_dir();
    let mut files: Vec<String> = Vec::new();
    for sub in ["", "istio/"] {
        for e in std::fs::read_dir(root.join(sub))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if [".yaml", ".yaml.tmpl", ".yml"]
                .iter()
                .any(|x| name.ends_with(x))
            {
                files.push(format!("{sub}{name}"));
            }
        }
    }
    files.sort();
    // The drone-side files are validated (and run) by tests/drone_side.rs, the cluster-mode
    // ones by tests/cluster_mode.rs.
    assert_eq!(
        files,
        [
            "cluster-mode.yaml",
            "drone-side.yaml",
            "envoy.yaml",
            "envoy.yaml.tmpl",
            "istio/wasmplugin-cluster-mode.yaml",
            "istio/wasmplugin-drone-side.yaml",
            "istio/wasmplugin.yaml"
        ],
        "cover new YAML files here"
    );
    let env = envoy::VALIDATE_ENV;

    // The template, rendered.
    let t = dir.path().join("template.yaml");
    let plugin = envoy::base_plugin_config();
    let tls = DroneTls::generate(envoy::DRONE_HOST)?;
    std::fs::write(&t, to_validate(&tools, &plugin, &tls)?)?;
    envoy::validate(&tools, &t, &env)?;

    // The example, with the module path pointed at the built filter.
    let example = std::fs::read_to_string(root.join("envoy.yaml"))?;
    let mut v = envoy::yaml_to_json(&example)?;
    let n = envoy::use_module(&mut v, &tools.wasm);
    assert_eq!(n, 1, "the example has one status-sync filter");
    // drone's CA bundle is the deploying machine's (Envoy's images have the system one), not
    // necessarily this one's: validate against the test CA.
    let ca = drone_tls::static_cluster(&mut v, "drone")
        .and_then(|c| c.pointer_mut(drone_tls::TRUSTED_CA_FILE))
        .context("the example's drone cluster has no trusted_ca file")?;
    assert_eq!(ca.as_str(), Some("/etc/ssl/certs/ca-certificates.crt"));
    *ca = json!(tls.ca_file().display().to_string());
    envoy::validate_json(&tools, dir.path(), "example.json", &v, &env)?;

    // The Istio pluginConfig, as Envoy would get it from istiod.
    let wp = wasmplugin()?;
    assert_eq!(wp["kind"], "WasmPlugin");
    let spec = &wp["spec"];
    assert!(
        matches!(
            spec["failStrategy"].as_str(),
            Some("FAIL_RELOAD" | "FAIL_OPEN")
        ),
        "{spec}"
    );
    assert_eq!(spec["match"][0]["mode"], "SERVER");
    let plugin = &spec["pluginConfig"];
    assert!(
        plugin["instance"].as_str().is_some_and(|s| !s.is_empty()),
        "Istio needs `instance`"
    );
    // Istio-style cluster names, and vmConfig.env mapped like istiod does.
    let mut v = envoy::yaml_to_json(&to_validate(&tools, plugin, &tls)?)?;
    envoy::as_istiod_delivers(&mut v, spec, &tools.wasm)?;
    let token_env = plugin["drone_token_env"]
        .as_str()
        .context("pluginConfig.drone_token_env")?;
    let p = dir.path().join("istio.json");
    std::fs::write(&p, serde_json::to_vec(&v)?)?;
    let secret_env = plugin["webhook_secret_env"]
        .as_str()
        .context("pluginConfig.webhook_secret_env: the Istio example deploys in `enforce`")?;
    assert_eq!(plugin["signature_mode"], "enforce");
    envoy::validate(
        &tools,
        &p,
        &[
            (token_env, "validate-token"),
            (secret_env, "validate-secret"),
        ],
    )?;
    // Without the token in the environment the filter must refuse, naming the key.
    let err = envoy::validate(&tools, &p, &[(secret_env, "validate-secret")])
        .err()
        .context("accepted without a token")?;
    assert!(
        format!("{err:#}").contains("invalid configuration: key `drone_token_env`"),
        "{err:#}"
    );
    Ok(())
}
