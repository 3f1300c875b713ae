//! Host configuration: what Envoy's bootstrap / WasmPlugin would say.

use std::path::PathBuf;

use crate::types::FailurePolicy;

/// Envoy's default `per_connection_buffer_limit_bytes`: a paused (buffered) body above it gets a
/// 413 local reply.
pub const DEFAULT_BUFFER_LIMIT: usize = 1024 * 1024;

/// One Envoy process running one filter config.
#[derive(Clone, Debug)]
pub struct HostConfig {
    pub wasm_path: PathBuf,
    /// Worker VMs; the host always adds one main-thread VM (index = `workers`), as Envoy creates
    /// a thread-local VM on every worker *and* main.
    pub workers: usize,
    /// Shared data / queue namespace.
    pub vm_id: String,
    pub root_id: String,
    /// Envoy's plugin `name` (property `plugin_name`); empty = same as `root_id`.
    pub plugin_name: String,
    /// Bytes for `on_configure` (BufferType 7).
    pub plugin_config: String,
    /// Bytes for `on_vm_start` (BufferType 6).
    pub vm_config: String,
    /// WASI environment of every VM (`vm_config.environment_variables`).
    pub env: Vec<(String, String)>,
    /// Known upstream clusters; `proxy_http_call` to others returns BadArgument.
    pub clusters: Vec<String>,
    /// Virtual wall-clock start (Unix ms).
    pub start_time_ms: u64,
    /// Seed of the deterministic WASI `random_get` and of `x-request-id`.
    pub seed: u64,
    /// Envoy's log level for the wasm component: `proxy_log` below it is dropped and
    /// `proxy_get_log_level` returns it. Default 0 (trace) so tests see everything.
    pub log_level: u32,
    pub failure_policy: FailurePolicy,
    /// `per_connection_buffer_limit_bytes`.
    pub buffer_limit_bytes: usize,
    /// Wasmtime fuel metering (not something Envoy does): every VM counts the wasm
    /// instructions it executes, read with [`crate::Host::fuel_consumed`] and, per `on_tick`,
    /// [`crate::Host::take_tick_fuel`]. For benchmarks: an instruction-like cost that does not
    /// depend on the machine's speed or load. Off by default (metering slows execution a bit
    /// and compiles the module a second time, with fuel checks).
    pub fuel: bool,
}

impl HostConfig {
    pub fn new(wasm_path: impl Into<PathBuf>, plugin_config: &str) -> Self {
        HostConfig {
            wasm_path: wasm_path.into(),
            workers: 2,
            vm_id: "status-sync".into(),
            root_id: "status_sync".into(),
            plugin_name: String::new(),
            plugin_config: plugin_config.into(),
            vm_config: String::new(),
            env: Vec::new(),
            clusters: vec!["pipeline".into(), "drone".into()],
            start_time_ms: 1_700_000_000_000,
            seed: 1,
            log_level: 0,
            failure_policy: FailurePolicy::FailClosed,
            buffer_limit_bytes: DEFAULT_BUFFER_LIMIT,
            fuel: false,
        }
    }
}

/// `$STATUS_SYNC_WASM`, else `<workspace>/out/status_sync.wasm`.
pub fn default_wasm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("STATUS_SYNC_WASM") {
        return PathBuf::from(p);
    }
    workspace_root().join("out").join("status_sync.wasm")
}

/// The workspace root (parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}
