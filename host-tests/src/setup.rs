//! The host setup the scenario tests (`tests/common`), the chaos runs ([`crate::chaos`]) and
//! the benchmarks (`benches/common`) share: the wasm under test, the plugin configuration, the
//! host, drone's token, secret and repositories, the webhook request and the metrics the
//! filter declares.

pub use crate::upstreams::{drone_answer, reply};
use crate::{default_wasm_path, Host, HostConfig, TestRequest};
use std::path::PathBuf;

/// The drone token the filter is configured with (`DRONE_TOKEN`).
pub const TOKEN: &str = "t0k3n-for-tests";

/// The wasm under test; fails with the command to run when it is missing.
pub fn wasm() -> PathBuf {
    let p = default_wasm_path();
    assert!(
        p.exists(),
        "{} not found: run `make build` (or `make test`) first",
        p.display()
    );
    p
}

/// A plugin configuration with short timings (100 ms ticks); `extra` is spliced into the
/// object.
pub fn plugin_config(extra: &str) -> String {
    format!(
        r#"{{"pipeline_cluster":"pipeline","drone_cluster":"drone","drone_token_env":"DRONE_TOKEN","webhook_path":"/hook","tick_ms":100,"stale_after_ms":2000,"max_poll_interval_ms":16000,"lease_ms":1000,"circuit_open_ms":2000{extra}}}"#
    )
}

/// `workers` worker VMs (and main), [`plugin_config`] with `extra`, the token in the
/// environment. No webhook secret: `signature_mode` `off`, every live webhook is a hint.
pub fn host_config(workers: usize, extra: &str) -> HostConfig {
    let mut cfg = HostConfig::new(wasm(), &plugin_config(extra));
    cfg.workers = workers;
    cfg.env = vec![("DRONE_TOKEN".into(), TOKEN.into())];
    cfg
}

/// [`host_config`] with drone's webhook secret (`signature_mode` `enforce` unless `extra`
/// says otherwise): webhooks signed with [`HOOK_SECRET`] verify and are evidence.
pub fn signed_host_config(workers: usize, extra: &str) -> HostConfig {
    let mut cfg = host_config(
        workers,
        &format!(r#","webhook_secret_env":"HOOK_SECRET"{extra}"#),
    );
    cfg.env.push(("HOOK_SECRET".into(), HOOK_SECRET.into()));
    cfg
}

/// Repository `octocat/repo-<n>` has id `100 + n` (`drone_model::store`).
pub fn repo_id(repo: u64) -> u64 {
    drone_model::store::repo_id(repo)
}

/// A live webhook as drone POSTs it to the listener.
pub fn hook_request(body: Vec<u8>) -> TestRequest {
    TestRequest::post("/hook", body)
        .header("x-drone-event", "build")
        .header("content-type", "application/json")
}

/// Drone's `DRONE_WEBHOOK_SECRET` in the scenarios that sign their webhooks.
pub const HOOK_SECRET: &str = "c2NlbmFyaW8tc2VjcmV0LWtleS0xMjM0NQ";

/// [`hook_request`] signed as drone signs it with [`HOOK_SECRET`] at `now_ms`.
pub fn signed_hook_request(body: Vec<u8>, now_ms: u64) -> TestRequest {
    signed_by(hook_request(body.clone()), &body, HOOK_SECRET, now_ms)
}

/// `req` with drone's signature headers (`Date`, `Digest`, `Signature`) over `body`, made
/// with `secret` at `now_ms`.
pub fn signed_by(req: TestRequest, body: &[u8], secret: &str, now_ms: u64) -> TestRequest {
    let s = status_sync::core::signature::sign(secret.as_bytes(), body, now_ms);
    req.header("date", &s.date)
        .header("digest", &s.digest)
        .header("signature", &s.signature)
}

/// `status_sync.<name>`; 0 until the filter first writes it. A name the filter does not declare
/// (`status_sync::core::metrics::METRICS`) fails the test: a typo would otherwise read 0.
pub fn metric(host: &Host, name: &str) -> i64 {
    let full = format!("status_sync.{name}");
    assert!(
        status_sync::core::metrics::by_name(&full).is_some(),
        "the filter defines no metric {full}"
    );
    host.metric(&full).unwrap_or(0)
}

/// [`metric`] after one tick (100 ms, [`plugin_config`]'s `tick_ms`): the HTTP filter's
/// counters are kept per worker and reach the host's stats on the worker's next tick.
pub fn metric_after_tick(host: &mut Host, name: &str) -> i64 {
    host.advance(100).expect("the clock moves on");
    metric(host, name)
}
