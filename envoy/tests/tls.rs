//! TLS toward drone: every call to drone's API carries the admin token, so the shipped `drone`
//! cluster (`envoy/envoy.yaml`) is TLS with drone's certificate verified: SNI, the chain
//! against `trusted_ca`, the name against `match_typed_subject_alt_names`.
//!
//! The tests run that cluster as it is in `envoy.yaml.tmpl` (the same definition with the
//! host, port and CA file as placeholders; the first test checks the two agree). drone-sim
//! sits behind a TLS listener of the same Envoy (`envoy_e2e::drone_tls`) whose certificate
//! comes from a CA made at run time. With a certificate that verifies, the filter's calls
//! succeed; with one for another name, or from a CA the cluster does not trust, the handshake
//! fails: Envoy counts it, every call fails (`drone_polls_failed`), and no request, so no
//! token, reaches drone-sim.
//!
//! ENVOY_BIN and STATUS_SYNC_WASM must be set (`make test` does it), and `openssl` installed:
//! without them the Envoy tests fail and say so, they are never skipped.

use anyhow::{Context as _, Result};
use envoy_e2e::drone_sim::{BuildPlan, DroneSimConfig, Outcome};
use envoy_e2e::drone_tls::{self, DroneTls};
use envoy_e2e::envoy::{self, DRONE_HOST};
use envoy_e2e::scenario::{slot, wait_for, Stack};
use envoy_e2e::setup::{done_if, losing, tools};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

/// Only each build's first webhook arrives: every later transition needs drone's API.
fn drone_losing_all_but_first() -> DroneSimConfig {
    DroneSimConfig {
        seed: 23,
        ..losing(1.0, true)
    }
}

fn schedule_builds(stack: &Stack, n: usize) {
    for i in 0..n {
        let outcome = [Outcome::Success, Outcome::Failure][i % 2];
        let mut p = BuildPlan::new(i % 3, outcome);
        p.step_ms = 100;
        stack
            .drone
            .schedule(p, Duration::from_millis(60 * i as u64));
    }
}

/// Envoy's TLS counters of the `drone` cluster (`ssl.handshake`, `ssl.fail_verify_san`, ...).
fn drone_ssl(stack: &Stack) -> Result<BTreeMap<String, i64>> {
    Ok(stack
        .envoy
        .stats("cluster.drone.ssl.")?
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("cluster.drone.ssl.")?.to_string(), v)))
        .collect())
}

fn stat(stats: &BTreeMap<String, i64>, name: &str) -> i64 {
    stats.get(name).copied().unwrap_or(0)
}

/// The `drone` cluster of a bootstrap (YAML).
fn drone_cluster(yaml: &str) -> Result<Value> {
    let mut v = envoy::yaml_to_json(yaml)?;
    drone_tls::static_cluster(&mut v, "drone")
        .cloned()
        .context("no `drone` cluster")
}

/// The template's `drone` cluster, filled with the example's host, port and CA file, is the
/// example's: what the tests below run is what users copy.
#[test]
fn the_tests_run_the_shipped_drone_cluster_which_verifies_drone() -> Result<()> {
    let example = std::fs::read_to_string(envoy::crate_dir().join("envoy.yaml"))?;
    let shipped = drone_cluster(&example)?;
    let host = "drone.example.com";
    let ca = "/etc/ssl/certs/ca-certificates.crt";
    let rendered = envoy::render_template(
        envoy::TEMPLATE,
        0,
        1,
        2,
        &envoy::DroneUpstream {
            port: 443,
            host,
            ca_file: Path::new(ca),
        },
        Path::new("/tmp/x.wasm"),
        &envoy::base_plugin_config(),
    )?;
    let tested = drone_cluster(&rendered)?;
    assert_eq!(tested["transport_socket"], shipped["transport_socket"]);
    assert_eq!(tested["connect_timeout"], shipped["connect_timeout"]);

    // What that cluster does: TLS on 443, SNI, chain and name checked.
    let tls = &shipped["transport_socket"];
    assert_eq!(tls["name"], "envoy.transport_sockets.tls");
    let ctx = &tls["typed_config"];
    assert_eq!(
        ctx["@type"],
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    );
    assert_eq!(ctx["sni"], host);
    assert_eq!(
        ctx["common_tls_context"]["tls_params"]["tls_maximum_protocol_version"],
        "TLSv1_3"
    );
    let validation = &ctx["common_tls_context"]["validation_context"];
    assert_eq!(validation["trusted_ca"], json!({ "filename": ca }));
    assert_eq!(
        validation["match_typed_subject_alt_names"],
        json!([{ "san_type": "DNS", "matcher": { "exact": host } }])
    );
    let address = shipped
        .pointer("/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address")
        .context("the example's drone address")?;
    assert_eq!(address, &json!({ "address": host, "port_value": 443 }));
    // The plugin's authority (the Host header of its calls) names the same host.
    let plugin = envoy_e2e::cluster::plugin_of(envoy::yaml_to_json(&example)?)?;
    assert_eq!(plugin["drone_authority"], host);
    Ok(())
}

/// With drone's certificate from the trusted CA and for the expected name, the filter's
/// calls go over TLS and succeed, and lost transitions are recovered.
#[test]
fn drone_api_calls_succeed_over_tls_with_the_certificate_verified() -> Result<()> {
    let _slot = slot();
    let stack = Stack::start(&tools(), drone_losing_all_but_first(), |spec| {
        assert_eq!(spec.drone_tls.server_name, DRONE_HOST);
    })?;
    schedule_builds(&stack, 4);
    stack.wait_converged(CONVERGE, |_| true)?;

    let ok = stack.envoy.metric("drone_polls_ok")?;
    assert!(
        ok >= 4,
        "only {ok} drone calls answered: the test is too weak"
    );
    assert!(stack.envoy.metric("redeliveries_ok")? >= 4);
    // Every answered call reached drone-sim through the TLS listener (the cluster's only
    // endpoint), over connections whose certificate verified.
    assert!(stack.drone.stats().api_calls >= ok as u64);
    let ssl = drone_ssl(&stack)?;
    assert!(stat(&ssl, "handshake") >= 1, "{ssl:?}");
    assert_eq!(
        stat(&ssl, "versions.TLSv1.3"),
        stat(&ssl, "handshake"),
        "{ssl:?}"
    );
    for failure in [
        "fail_verify_san",
        "fail_verify_error",
        "fail_verify_no_cert",
    ] {
        assert_eq!(stat(&ssl, failure), 0, "{failure}: {ssl:?}");
    }
    Ok(())
}

/// A certificate that does not verify (for another name, or from a CA the cluster does not
/// trust) fails the handshake: Envoy counts why, every call fails, nothing is recovered, and
/// no request (so no token) reaches drone.
#[test]
fn drone_api_calls_fail_and_are_counted_when_the_certificate_does_not_verify() -> Result<()> {
    let _slot = slot();
    let tools = tools();
    let unknown_ca = DroneTls::generate(DRONE_HOST)?;
    let cases = [
        (
            "a certificate for another name",
            DroneTls::generate("drone.elsewhere.example")?,
            "fail_verify_san",
        ),
        (
            "a certificate from a CA the cluster does not trust",
            unknown_ca.trusting(&DroneTls::generate(DRONE_HOST)?),
            "fail_verify_error",
        ),
    ];
    for (case, tls, counted) in cases {
        let threshold = 3;
        let stack = Stack::start(&tools, drone_losing_all_but_first(), |spec| {
            spec.drone_tls = tls;
            spec.plugin["circuit_failure_threshold"] = threshold.into();
        })?;
        schedule_builds(&stack, 3);
        wait_for(
            &format!("{case}: {threshold} failed drone calls and {counted}"),
            CONVERGE,
            POLL,
            || {
                let failed = stack.envoy.metric("drone_polls_failed")?;
                let ssl = drone_ssl(&stack)?;
                Ok(done_if(
                    failed >= threshold && stat(&ssl, counted) >= 1,
                    || format!("drone_polls_failed {failed}, {ssl:?}"),
                ))
            },
        )
        .with_context(|| stack.diagnostics())?;
        assert_eq!(stack.envoy.metric("drone_polls_ok")?, 0, "{case}");
        assert_eq!(stack.envoy.metric("redeliveries_ok")?, 0, "{case}");
        let ssl = drone_ssl(&stack)?;
        assert_eq!(stat(&ssl, "handshake"), 0, "{case}: {ssl:?}");
        assert_eq!(
            stack.drone.stats().api_calls,
            0,
            "{case}: a request reached drone over a connection that did not verify"
        );
    }
    Ok(())
}
