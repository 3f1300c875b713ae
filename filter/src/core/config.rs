//! Plugin configuration: the JSON given to `on_configure`.
//!
//! Every key is validated on its own so that a bad configuration is refused with one log line
//! naming the key and why (Envoy then refuses to start, or NACKs the update and keeps the old
//! configuration). The drone token is never part of any message.

/// How live webhooks' drone signatures are checked (issue: signed webhooks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureMode {
    /// No verification (default when no `webhook_secret` is set).
    Off,
    /// Verify and count failures, but pass every request through.
    Monitor,
    /// Reject forged or unsigned webhooks with 401 before they reach the pipeline.
    Enforce,
}

/// Validated configuration. Field docs give the JSON key, default and range.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `webhook_path` (default `/hook`): path prefix of drone's webhooks on the pipeline; also
    /// the path re-deliveries are POSTed to. Must start with `/`.
    pub webhook_path: String,
    /// `pipeline_cluster` (required): Envoy cluster of the pipeline service.
    pub pipeline_cluster: String,
    /// `pipeline_authority` (default: the cluster name): `:authority` of re-deliveries.
    pub pipeline_authority: String,
    /// `drone_cluster` (required): Envoy cluster of drone-server.
    pub drone_cluster: String,
    /// `drone_authority` (default: the cluster name): `:authority` of drone API calls.
    pub drone_authority: String,
    /// `drone_token` or, preferably, `drone_token_env` (name of an environment variable given
    /// to the VM): bearer token for drone's API. One of the two is required. Never logged.
    pub drone_token: String,
    /// `tick_ms` (default 1000, 10..=60000): the one periodic tick.
    pub tick_ms: u64,
    /// `stale_after_ms` (default 30000): a build with no news for this long is looked up in drone.
    pub stale_after_ms: u64,
    /// `max_poll_interval_ms` (default 300000, >= stale_after_ms): cap of the growing interval
    /// between looks at an unchanged build, and of backoff after errors.
    pub max_poll_interval_ms: u64,
    /// `max_tracked_builds` (default 10000, 1..=1000000): ledger capacity.
    pub max_tracked_builds: usize,
    /// `max_inflight_calls` (default 4, 1..=256): concurrent drone + pipeline calls.
    pub max_inflight_calls: usize,
    /// `max_drone_calls_per_sec` (default 10, 1..=10000): rate limit toward drone.
    pub max_drone_calls_per_sec: u64,
    /// `call_timeout_ms` (default 5000, 100..=60000): timeout of every outgoing call.
    pub call_timeout_ms: u64,
    /// `max_body_bytes` (default 262144, 1024..=16777216): largest webhook body (and drone API
    /// answer) we copy and parse; larger ones pass through untouched and are counted.
    pub max_body_bytes: usize,
    /// `max_build_age_ms` (default 90000000 = 25 h, drone's reaper deadline plus margin): a build
    /// still open after this long is dropped and counted.
    pub max_build_age_ms: u64,
    /// `max_repos` (default 1024, 1..=100000): repositories whose `repo` object is cached for
    /// re-deliveries.
    pub max_repos: usize,
    /// `circuit_failure_threshold` (default 5, 1..=1000): consecutive drone failures that open
    /// the circuit.
    pub circuit_failure_threshold: u32,
    /// `circuit_open_ms` (default 10000): first open period; doubles per failed probe up to
    /// `max_poll_interval_ms`.
    pub circuit_open_ms: u64,
    /// `lease_ms` (default max(10000, 3 * tick_ms)): leader lease; must be >= 2 * tick_ms.
    pub lease_ms: u64,
    /// `instance` (default `default`): namespaces shared-data keys and the queue, so two
    /// plugins in one vm_id (Istio uses an empty vm_id for all) do not collide.
    pub instance: String,
    /// `webhook_secret` / `webhook_secret_env` (optional): drone's `DRONE_WEBHOOK_SECRET`.
    pub webhook_secret: Option<String>,
    /// `signature_mode` (`off` | `monitor` | `enforce`; default `enforce` when a secret is set,
    /// else `off`).
    pub signature_mode: SignatureMode,
    /// `max_clock_skew_ms` (default 300000): allowed distance between a signed `Date` and now.
    pub max_clock_skew_ms: u64,
    /// `live_webhook_id` (default false): add a `webhook-id` header to live webhooks too.
    pub live_webhook_id: bool,
}

impl Config {
    /// Parses and validates the plugin configuration. `env` looks up environment variables
    /// (for `*_env` keys); it is a parameter so the core never reads the process environment.
    pub fn parse(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let _ = (json, env);
        Err(ConfigError::new("", "not implemented"))
    }
}

/// A configuration error: which key, and why. `Display` gives the one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &str, reason: &str) -> Self {
        ConfigError {
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "status-sync: invalid configuration: {}", self.reason)
        } else {
            write!(
                f,
                "status-sync: invalid configuration: key `{}`: {}",
                self.key, self.reason
            )
        }
    }
}

impl std::error::Error for ConfigError {}
