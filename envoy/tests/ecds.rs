//! status-sync loaded the way Istio loads a WasmPlugin, then upgraded and rolled back.
//!
//! Envoy gets the filter through ECDS (an extension config discovered from a file, shaped as
//! istiod + istio-agent shape it: `vm_id: ""`, `root_id` = pluginName, the StringValue JSON
//! configuration, Istio's cluster names, `failure_policy: FAIL_OPEN` as `wasmplugin.yaml`
//! recommends; see envoy/src/ecds.rs). Then, while drone's builds are running, the module is
//! replaced by a build that differs only in its version string (`STATUS_SYNC_VERSION`, read by
//! filter/build.rs), and later by the first module again (a rollback).
//!
//! Drone delivers only each build's first webhook (everything after is lost), so a build
//! created before a module swap and finished after it can only reach the pipeline if the new
//! module's reconciler took over the old one's ledger from shared data. The test asserts that
//! every build converges (no transition lost, within the stated bound CONVERGE), that every
//! webhook drone sent was answered 2xx (the swaps never block a webhook), that the new module
//! loaded tracked builds, and that no snapshot failed to decode and no VM trapped.

use anyhow::{ensure, Context as _, Result};
use envoy_e2e::dist::{clean_build_env, repo_root, run};
use envoy_e2e::drone_sim::{BuildKey, BuildPlan, DroneSimConfig, Outcome};
use envoy_e2e::ecds;
use envoy_e2e::envoy::base_plugin_config;
use envoy_e2e::scenario::{wait_for, Stack};
use envoy_e2e::setup::{done_if, losing, tools};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Every wait's bound; convergence after the last swap included.
const CONVERGE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);
const NEXT_VERSION: &str = "0.0.0-upgrade-test";

/// The module again, built with another version string (its own target directory, so the
/// regular build is not disturbed), copied next to the test's files.
fn build_next_module(into: &Path) -> Result<PathBuf> {
    let root = repo_root();
    let target = root.join("target/upgrade-test");
    let mut cmd = Command::new("cargo");
    clean_build_env(&mut cmd)
        .current_dir(&root)
        .args(["build", "-q", "-p", "status-sync", "--release"])
        .args(["--target", "wasm32-unknown-unknown"])
        .env("CARGO_TARGET_DIR", &target)
        .env("STATUS_SYNC_VERSION", NEXT_VERSION);
    run(&mut cmd).context("build the upgrade module")?;
    let out = into.join("status_sync_next.wasm");
    std::fs::copy(
        target.join("wasm32-unknown-unknown/release/status_sync.wasm"),
        &out,
    )?;
    Ok(out)
}

/// Lines of Envoy's log saying a module version started, in order.
fn started_versions(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            // `configured instance=… version=<v> root=…`: one line per root context.
            let rest = &l[l.find("configured instance=")?..];
            let v = &rest[rest.find(" version=")? + " version=".len()..];
            Some(v.split_whitespace().next()?.to_string())
        })
        .collect()
}

fn ecds_stats(stack: &Stack) -> Result<BTreeMap<String, i64>> {
    let s = stack.envoy.stats("extension_config_discovery")?;
    Ok(s.into_iter()
        .filter(|(k, _)| k.contains("ci.status-sync"))
        .map(|(k, v)| (k.rsplit('.').next().unwrap_or("").to_string(), v))
        .collect())
}

/// Pushes a module through ECDS and waits until Envoy applied it (config_reload grew).
fn push_module(stack: &mut Stack, module: &Path, plugin: &Value) -> Result<()> {
    let before = ecds_stats(stack)?
        .get("config_reload")
        .copied()
        .unwrap_or(0);
    stack.envoy.ecds_mut()?.push(module, plugin)?;
    wait_for("Envoy to apply the ECDS push", CONVERGE, POLL, || {
        let s = ecds_stats(stack)?;
        ensure!(
            s.get("config_fail").copied().unwrap_or(0) == 0,
            "ECDS update rejected: {s:?}\n{}",
            stack.diagnostics()
        );
        Ok(done_if(
            s.get("config_reload").copied().unwrap_or(0) > before,
            || format!("{s:?}"),
        ))
    })
}

/// Schedules `n` builds of a few seconds each, staggered.
fn wave(stack: &Stack, n: usize, offset: usize) -> Vec<BuildKey> {
    (0..n)
        .map(|i| {
            let o = [Outcome::Success, Outcome::Failure][i % 2];
            let mut p = BuildPlan::new((i + offset) % 3, o);
            p.step_ms = 400;
            p.steps = 3;
            stack
                .drone
                .schedule(p, Duration::from_millis(300 * i as u64))
        })
        .collect()
}

/// Waits until the pipeline has seen the first webhook of `keys` while drone is still
/// running them: the moment to swap modules.
fn wait_in_flight(stack: &Stack, keys: &[BuildKey]) -> Result<()> {
    wait_for(
        "builds in flight, known to the filter",
        CONVERGE,
        POLL,
        || {
            let view = stack.pipeline.view();
            let seen = keys
                .iter()
                .filter(|k| view.contains_key(&k.to_string()))
                .count();
            let running = !stack.drone.idle();
            Ok(done_if(seen >= 2 && running, || {
                format!("{seen} seen, drone running: {running}")
            }))
        },
    )
}

#[test]
fn ecds_delivery_upgrade_and_rollback_lose_no_transition() -> Result<()> {
    let tools = tools();
    let files = tempfile::tempdir()?;
    let next = build_next_module(files.path())?;
    let old = tools.wasm.clone();

    let mut plugin = ecds::istio_plugin_config(&base_plugin_config());
    // A swap hands the lease over when the old one expires: keep it short for the test.
    plugin["lease_ms"] = 2000.into();
    plugin["stale_after_ms"] = 2500.into();
    // Only each build's first webhook arrives: the rest must come from the ledger.
    let drone = DroneSimConfig {
        seed: 14,
        ..losing(1.0, true)
    };
    let p = plugin.clone();
    let mut stack = Stack::start(&tools, drone, move |spec| {
        spec.plugin = p;
        spec.ecds = Some("FAIL_OPEN".into());
        spec.concurrency = 2;
    })?;
    let first_version = wait_for("the module to start", CONVERGE, POLL, || {
        Ok(started_versions(&stack.envoy.log())
            .first()
            .cloned()
            .ok_or_else(|| "no start line yet".to_string()))
    })?;
    assert_ne!(first_version, NEXT_VERSION);

    // Upgrade while the first wave runs.
    let mut keys = wave(&stack, 6, 0);
    wait_in_flight(&stack, &keys)?;
    push_module(&mut stack, &next, &plugin)?;
    let upgraded_at = wait_for("the new module to start", CONVERGE, POLL, || {
        let log = stack.envoy.log();
        Ok(log
            .find(&format!("version={NEXT_VERSION} root="))
            .ok_or_else(|| format!("started so far: {:?}", started_versions(&log))))
    })?;

    // The new module's reconciler is elected once the old lease expires (lease_ms).
    wait_for("a reconciler in the new module", CONVERGE, POLL, || {
        let log = stack.envoy.log();
        Ok(done_if(
            log[upgraded_at..].contains("reconciler elected"),
            || "none yet".to_string(),
        ))
    })?;

    // Rollback while the second wave runs.
    let second = wave(&stack, 6, 1);
    wait_in_flight(&stack, &second)?;
    keys.extend(second);
    push_module(&mut stack, &old, &plugin)?;
    keys.extend(wave(&stack, 4, 2));

    stack.wait_converged(CONVERGE, |k| keys.contains(k))?;

    // Every webhook drone sent was answered 2xx: no swap blocked one.
    for w in stack.drone.webhooks().iter().filter(|w| !w.lost) {
        ensure!(
            w.transport_error.is_none() && w.http_status.is_some_and(|s| (200..300).contains(&s)),
            "webhook for {} answered {:?} / {:?}",
            w.build,
            w.http_status,
            w.transport_error
        );
    }
    let log = stack.envoy.log();
    // The upgraded module's reconciler took the ledger over, and so did the rolled-back
    // module's: the number of tracked builds each new leader loaded from shared data.
    let loads = |text: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once("reconciler elected")?;
                let (_, n) = rest.split_once("loaded_builds=")?;
                n.split_whitespace().next()?.parse().ok()
            })
            .collect()
    };
    // Envoy's log is buffered: split it at the rolled-back module's start line, not at the
    // moment of the push.
    let rolled_back_at = log[upgraded_at..]
        .find(&format!("version={first_version} root="))
        .map_or(log.len(), |i| upgraded_at + i);
    let after_upgrade = loads(&log[upgraded_at..rolled_back_at]);
    let after_rollback = loads(&log[rolled_back_at..]);
    eprintln!(
        "ledger loads: after the upgrade {after_upgrade:?}, after the rollback {after_rollback:?}"
    );
    ensure!(
        after_upgrade.iter().any(|&n| n > 0) && after_rollback.iter().any(|&n| n > 0),
        "a new module's reconciler did not load the tracked builds: after the upgrade \
         {after_upgrade:?}, after the rollback {after_rollback:?}\n{}",
        stack.diagnostics()
    );
    assert_eq!(stack.envoy.metric("snapshot_errors")?, 0);
    for bad in [
        "panicked",
        "wasm trap",
        "Function: proxy_on",
        "Plugin configured to fail",
    ] {
        ensure!(
            !log.contains(bad),
            "Envoy logged {bad:?}:\n{}",
            stack.diagnostics()
        );
    }
    let s = ecds_stats(&stack)?;
    assert_eq!(s.get("config_fail").copied().unwrap_or(0), 0, "{s:?}");
    eprintln!(
        "{} builds converged across upgrade {first_version} -> {NEXT_VERSION} and rollback; \
         started: {:?}; ECDS {s:?}",
        keys.len(),
        started_versions(&log)
    );
    Ok(())
}
