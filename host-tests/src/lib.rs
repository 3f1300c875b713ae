//! Our own proxy-wasm (ABI 0.2.1) host on wasmtime, faithful to Envoy 1.40, for driving
//! `status_sync.wasm` through scenarios with a virtual clock.
//!
//! What it models (as Envoy's `source/extensions/common/wasm/` and proxy-wasm-cpp-host's `src/shared_data.cc`,
//! `src/shared_queue.cc` behave):
//! - one VM per worker thread plus one for the main thread, each its own wasmtime `Store` +
//!   `Instance`, after a config-time *canary* VM that runs the whole start sequence and is
//!   thrown away (its shared-data writes and queue registrations stay);
//! - ticks per root context, re-armed only after `on_tick` returns;
//! - process-wide shared data (CAS rules of cpp-host) and queues (last registrant consumes,
//!   `on_queue_ready` posted asynchronously);
//! - `proxy_http_call` owned by the root context, answered later by a per-cluster responder,
//!   with Envoy's failure shapes (504/503 responses, reset = no headers + status 11);
//! - HTTP streams with Envoy's callback order, header-map windows (BadArgument outside),
//!   deferred local replies and continues;
//! - Envoy stats semantics (counters aggregate, `record` on a counter adds, gauges clobber);
//! - VM failure (trap → dead VM, 503 for its streams), FAIL_RELOAD and config updates (a new
//!   root context in the same VM, statics persist).
//!
//! Hostcalls never call into the module (other than its allocator): everything that would
//! is queued and runs after the current callback returns, as in Envoy.
//!
//! Beside the host: [`setup`] (the wasm, configuration, token and webhook requests every test,
//! chaos run and benchmark starts from), [`upstreams`] (drone and the pipeline they answer
//! from) and [`chaos`] (the chaos runs' simulator).

mod abi;
mod cache;
pub mod chaos;
mod clock;
mod config;
mod host;
mod http;
mod link;
mod memory;
mod metrics;
mod pairs;
pub mod setup;
mod shared;
mod stat_name;
mod types;
pub mod upstreams;
mod vm;
mod wasi;
mod world;

pub use config::{default_wasm_path, workspace_root, HostConfig, DEFAULT_BUFFER_LIMIT};
pub use host::Host;
pub use http::STREAM_IDLE_TIMEOUT_MS;
pub use types::{
    CallRecord, CallReply, CallRequest, FailurePolicy, LogLine, Partial, StreamOutcome,
    TestRequest, TickFuel, UpstreamReply, UpstreamRequest, VmDeath, CANARY,
};
