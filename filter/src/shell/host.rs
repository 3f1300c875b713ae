//! The hostcalls as the shell uses them, over [`abi`]'s safe imports (which turn every
//! status the host may answer into `None`/`Err`, never a panic).

use super::abi::{self, Status};
use super::metrics::Metrics;
use crate::core::host::Host;
use crate::core::metrics::Id;
use crate::core::reconciler::OutgoingCall;
use crate::core::store::{SetError, SharedStore};

/// Host wall clock in Unix milliseconds (0 if unavailable).
pub fn now_ms() -> u64 {
    abi::now_ns().map_or(0, |ns| ns / 1_000_000)
}

/// One header's (first) value, read inside its map's window: cheaper than all pairs, which
/// Envoy serializes whole. Only call where the map is readable (request headers in
/// `on_http_request_headers`, both maps in `on_log`, the access-log phase; call response
/// headers in `on_http_call_response`), where Envoy answers Ok or NotFound.
pub fn header(map: u32, name: &str) -> Option<Vec<u8>> {
    abi::header(map, name)
}

pub fn buffer(kind: u32, start: usize, len: usize) -> Option<Vec<u8>> {
    abi::buffer(kind, start, len)
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
        let (value, cas) = abi::get_shared_data(key)?;
        (cas != 0).then(|| (value.unwrap_or_default(), cas))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        abi::set_shared_data(key, value, cas.unwrap_or(0)).map_err(|status| match status {
            abi::CAS_MISMATCH => SetError::CasMismatch,
            _ => SetError::Refused,
        })
    }

    fn dequeue(&mut self) -> Option<Vec<u8>> {
        abi::dequeue_shared_queue(self.queue?)
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
        let timeout_ms = u32::try_from(call.timeout_ms).unwrap_or(u32::MAX);
        abi::http_call(&call.cluster, &hdrs, &call.body, timeout_ms)
            .map_err(|status| abi::status_name(status).to_string())
    }

    fn answer_status(&self) -> Option<u16> {
        header(abi::HTTP_CALL_RESPONSE_HEADERS, ":status")
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u16>().ok())
    }

    fn answer_body(&self, len: usize) -> Option<Vec<u8>> {
        buffer(abi::HTTP_CALL_RESPONSE_BODY, 0, len)
    }

    fn add_metric(&mut self, id: Id, by: u64) {
        self.metrics.inc(id, by);
    }

    fn set_metric(&mut self, id: Id, value: u64) {
        self.metrics.set(id, value);
    }
}

pub fn register_queue(name: &str) -> Option<u32> {
    abi::register_shared_queue(name)
}

pub fn enqueue(queue: u32, value: &[u8]) -> Result<(), Status> {
    abi::enqueue_shared_queue(queue, value)
}

pub fn set_tick_period_ms(ms: u64) -> bool {
    abi::set_tick_period_ms(u32::try_from(ms).unwrap_or(u32::MAX))
}

pub fn plugin_configuration() -> Option<Vec<u8>> {
    abi::buffer(abi::PLUGIN_CONFIGURATION, 0, usize::MAX)
}

pub fn send_local_response(status: u32, body: &[u8]) -> bool {
    abi::send_local_response(status, &[("content-type", "text/plain")], body)
}

/// A random 64-bit id (WASI `random_get`, mixed with the clock; the clock alone if the host
/// has no randomness), to tell root contexts apart in the lease.
pub fn random_u64() -> u64 {
    abi::random_u64().unwrap_or(0) ^ now_ms()
}
