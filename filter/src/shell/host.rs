//! Thin, non-panicking wrappers over the hostcalls the filter uses.
//!
//! The SDK panics on host statuses it does not expect (e.g. `BadArgument` from a header map
//! outside its window), and a panic kills the VM. These wrappers call
//! `proxy_wasm::hostcalls` directly and turn every failure into `None`/`Err`.

use super::metrics::Metrics;
use crate::core::host::Host;
use crate::core::metrics::Id;
use crate::core::reconciler::OutgoingCall;
use crate::core::store::{SetError, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use std::time::{Duration, UNIX_EPOCH};

/// Host wall clock in Unix milliseconds (0 if unavailable).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One header's (first) value, read inside its map's window: cheaper than all pairs, which
/// Envoy serializes whole. Only call from the callback that owns the map (request headers in
/// `on_http_request_headers`, response headers in `on_http_response_headers`, call response
/// headers in `on_http_call_response`), where Envoy answers Ok or NotFound.
pub fn header(map: MapType, name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(map, name).ok().flatten()
}

pub fn buffer(kind: BufferType, start: usize, len: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(kind, start, len).ok().flatten()
}

/// The host as the leader's turn sees it ([`Host`]), through hostcalls: shared data, the
/// observation queue (`queue`, this root's registered one; none: nothing to dequeue), calls,
/// the answer being handled, and this root's metrics.
pub struct WasmHost<'a> {
    pub queue: Option<u32>,
    pub metrics: &'a Metrics,
}

impl SharedStore for WasmHost<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        // Envoy hands an emptied value over as no bytes, with its CAS.
        let (value, cas) = hostcalls::get_shared_data(key).ok()?;
        Some((value.unwrap_or_default(), cas?))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|status| match status {
            Status::CasMismatch => SetError::CasMismatch,
            _ => SetError::Refused,
        })
    }

    fn dequeue(&mut self) -> Option<Vec<u8>> {
        hostcalls::dequeue_shared_queue(self.queue?).ok().flatten()
    }
}

impl Host for WasmHost<'_> {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn dispatch(&mut self, call: &OutgoingCall) -> Result<u32, String> {
        let hdrs: Vec<(&str, &str)> = call
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = if call.body.is_empty() {
            None
        } else {
            Some(call.body.as_slice())
        };
        hostcalls::dispatch_http_call(
            &call.cluster,
            hdrs,
            body,
            vec![],
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(|status| format!("{status:?}"))
    }

    fn answer_status(&self) -> Option<u16> {
        header(MapType::HttpCallResponseHeaders, ":status")
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u16>().ok())
    }

    fn answer_body(&self, len: usize) -> Option<Vec<u8>> {
        buffer(BufferType::HttpCallResponseBody, 0, len)
    }

    fn add_metric(&mut self, id: Id, by: u64) {
        self.metrics.inc(id, by);
    }

    fn set_metric(&mut self, id: Id, value: u64) {
        self.metrics.set(id, value);
    }
}

pub fn register_queue(name: &str) -> Option<u32> {
    hostcalls::register_shared_queue(name).ok()
}

pub fn enqueue(queue: u32, value: &[u8]) -> Result<(), Status> {
    hostcalls::enqueue_shared_queue(queue, Some(value))
}

pub fn set_tick_period_ms(ms: u64) -> bool {
    hostcalls::set_tick_period(Duration::from_millis(ms)).is_ok()
}

pub fn plugin_configuration() -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
}

pub fn send_local_response(status: u32, body: &[u8]) -> bool {
    hostcalls::send_http_response(status, vec![("content-type", "text/plain")], Some(body)).is_ok()
}

/// A random 64-bit id (WASI `random_get`, mixed with the clock; the clock alone if the host
/// has no randomness), to tell root contexts apart in the lease.
pub fn random_u64() -> u64 {
    super::abi::random_u64().unwrap_or(0) ^ now_ms()
}
