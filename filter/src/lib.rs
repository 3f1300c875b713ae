//! status-sync: a proxy-wasm filter that makes sure every Drone CI build transition reaches the
//! pipeline service it sits in front of.
//!
//! The crate has two halves:
//! - [`core`]: a sans-IO core (configuration, parsing, the ledger of builds, scheduling and the
//!   reconciler). It never calls the host; time and randomness are parameters. It
//!   is unit-tested natively.
//! - `shell` (wasm32 only): the proxy-wasm root and HTTP contexts, which translate host events
//!   into core calls and core decisions into host calls.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod shell;
