//! The sans-IO core. Nothing in here calls the proxy-wasm host; callers pass `now_ms` and seeds.

pub mod b64;
pub mod backoff;
pub mod config;
pub mod drone_api;
pub mod fifo_map;
pub(crate) mod json;
pub mod leader;
pub mod lease;
pub mod ledger;
pub mod limits;
pub mod logfmt;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod observation;
pub mod ratelog;
pub mod reconciler;
pub mod redact;
pub(crate) mod repos;
pub mod request;
pub mod signature;
pub mod slo;
pub mod snapshot;
pub mod store;
pub mod webhook;
pub mod wire;
