//! The module's imports, behind safe functions: the proxy-wasm ABI 0.2.1 hostcalls the filter
//! uses (module `env`), and the two WASI facilities a `wasm32-unknown-unknown` module still
//! needs (module `wasi_snapshot_preview1`, which Envoy's hosts give every module, whatever its
//! target: the VM's `environment_variables` are what `environ_get` answers). The only
//! `unsafe` of the filter; every status the host may answer becomes `None`/`Err`, never a
//! panic.
//!
//! The host hands data back in memory it allocated through the module's
//! `proxy_on_memory_allocate` ([`allocate`]): a `Box<[MaybeUninit<u8>]>` of exactly the size
//! asked for, so [`take`] may own it as a `Vec<u8>` of that length and capacity.

use std::mem::MaybeUninit;
use std::ptr::{null, null_mut};

/// A hostcall's status (ABI 0.2.1 `WasmResult`).
pub type Status = u32;
pub const OK: Status = 0;
pub const CAS_MISMATCH: Status = 8;

/// The host's name of a status, as Envoy's logs and the runbook spell it.
pub fn status_name(status: Status) -> &'static str {
    match status {
        0 => "Ok",
        1 => "NotFound",
        2 => "BadArgument",
        3 => "SerializationFailure",
        4 => "ParseFailure",
        7 => "Empty",
        8 => "CasMismatch",
        10 => "InternalFailure",
        _ => "Unknown",
    }
}

/// What a stream callback tells the host: go on, or hold the stream.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

/// Log levels (`proxy_log`).
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;
pub const LOG_CRITICAL: u32 = 5;

/// Buffers (`proxy_get_buffer_bytes`).
pub const HTTP_REQUEST_BODY: u32 = 0;
pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
pub const PLUGIN_CONFIGURATION: u32 = 7;

/// Header maps (`proxy_get_header_map_value`).
pub const HTTP_REQUEST_HEADERS: u32 = 0;
pub const HTTP_RESPONSE_HEADERS: u32 = 2;
pub const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;

/// Metric types (`proxy_define_metric`).
pub const COUNTER: u32 = 0;
pub const GAUGE: u32 = 1;
pub const HISTOGRAM: u32 = 2;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message: *const u8, message_size: usize) -> Status;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> Status;
    fn proxy_set_tick_period_milliseconds(period: u32) -> Status;
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> Status;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
        cas: *mut u32,
    ) -> Status;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> Status;
    fn proxy_register_shared_queue(name: *const u8, name_size: usize, id: *mut u32) -> Status;
    fn proxy_enqueue_shared_queue(queue: u32, value: *const u8, value_size: usize) -> Status;
    fn proxy_dequeue_shared_queue(
        queue: u32,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> Status;
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> Status;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> Status;
    fn proxy_increment_metric(id: u32, offset: i64) -> Status;
    fn proxy_record_metric(id: u32, value: u64) -> Status;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn environ_sizes_get(count: *mut usize, buf_size: *mut usize) -> u16;
    fn environ_get(environ: *mut *mut u8, environ_buf: *mut u8) -> u16;
    fn random_get(buf: *mut u8, buf_len: usize) -> u16;
}

/// Memory for the host to write into (`proxy_on_memory_allocate`): `size` bytes, owned by
/// the module again once handed back ([`take`]). No `unsafe`: the bytes stay uninitialised
/// until the host writes them.
pub fn allocate(size: usize) -> *mut u8 {
    Box::into_raw(Box::<[MaybeUninit<u8>]>::new_uninit_slice(size)).cast::<u8>()
}

/// The bytes the host returned at `data` (`size` of them; null: none).
fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: a non-null pointer the host returns was allocated by `allocate(size)` (a boxed
    // slice of exactly `size` bytes, alignment 1, the layout of a `Vec<u8>` of capacity
    // `size`) and written by the host; ownership passes to the module with the call's return.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

pub fn log(level: u32, message: &str) {
    // SAFETY: the host reads `message.len()` bytes of a live `str`.
    unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// The host's wall clock in Unix nanoseconds.
pub fn now_ns() -> Option<u64> {
    let mut ns = 0u64;
    // SAFETY: the host writes one `u64` into the live local.
    (unsafe { proxy_get_current_time_nanoseconds(&mut ns) } == OK).then_some(ns)
}

pub fn set_tick_period_ms(ms: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { proxy_set_tick_period_milliseconds(ms) == OK }
}

/// Up to `max` bytes of buffer `kind` from `start`; `None` if it has none (or no such buffer).
pub fn buffer(kind: u32, start: usize, max: usize) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host writes a pointer and a size into the live locals.
    let status = unsafe { proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) };
    (status == OK).then(|| take(data, size)).flatten()
}

/// The value of header `name` in `map` (an empty one if the host gives no bytes); `None`:
/// not there, or the map is not readable now.
pub fn header(map: u32, name: &str) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host reads the live `name` and writes a pointer and a size into the locals.
    let status =
        unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size) };
    (status == OK).then(|| take(data, size).unwrap_or_default())
}

/// Headers (or trailers) serialized as the ABI wants them: the count, each name's and
/// value's length, then each NUL-terminated name and value.
fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let len = |s: &str| u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes();
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(0).to_le_bytes());
    for (k, v) in pairs {
        bytes.extend_from_slice(&len(k));
        bytes.extend_from_slice(&len(v));
    }
    for (k, v) in pairs {
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0);
    }
    bytes
}

pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> bool {
    let headers = serialize(headers);
    // SAFETY: the host reads the live `body` and `headers`; no details (null, 0).
    unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        ) == OK
    }
}

/// A shared-data value and its CAS; `None`: no such key (or the host refused).
pub fn get_shared_data(key: &str) -> Option<(Option<Vec<u8>>, u32)> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: the host reads the live `key` and writes a pointer, a size and the CAS into
    // the locals.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    (status == OK).then(|| (take(data, size), cas))
}

pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: the host reads the live `key` and `value`.
    match unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    } {
        OK => Ok(()),
        status => Err(status),
    }
}

pub fn register_shared_queue(name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: the host reads the live `name` and writes the id into the local.
    (unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) } == OK).then_some(id)
}

pub fn enqueue_shared_queue(queue: u32, value: &[u8]) -> Result<(), Status> {
    // SAFETY: the host reads the live `value`.
    match unsafe { proxy_enqueue_shared_queue(queue, value.as_ptr(), value.len()) } {
        OK => Ok(()),
        status => Err(status),
    }
}

/// The next message of `queue`; `None`: empty (or no such queue).
pub fn dequeue_shared_queue(queue: u32) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host writes a pointer and a size into the live locals.
    let status = unsafe { proxy_dequeue_shared_queue(queue, &mut data, &mut size) };
    (status == OK).then(|| take(data, size)).flatten()
}

/// Dispatches an HTTP call to `cluster`; its token, or the host's refusal.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u32,
) -> Result<u32, Status> {
    let headers = serialize(headers);
    let trailers = serialize(&[]);
    let mut token = 0u32;
    // SAFETY: the host reads the live `cluster`, `headers`, `body` and `trailers` and writes
    // the token into the local. An empty body is passed as none (null, 0).
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    };
    match status {
        OK => Ok(token),
        status => Err(status),
    }
}

pub fn define_metric(kind: u32, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: the host reads the live `name` and writes the id into the local.
    (unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) } == OK).then_some(id)
}

pub fn increment_metric(id: u32, offset: i64) {
    // SAFETY: no pointers.
    unsafe { proxy_increment_metric(id, offset) };
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers.
    unsafe { proxy_record_metric(id, value) };
}

/// The value of environment variable `name` of the VM (Envoy: the plugin's
/// `vm_config.environment_variables`); `None` if unset, not UTF-8, or the host has none.
pub fn env_var(name: &str) -> Option<String> {
    let (mut count, mut size) = (0usize, 0usize);
    // SAFETY: the host writes one `usize` through each pointer, both to live locals.
    if unsafe { environ_sizes_get(&mut count, &mut size) } != 0 {
        return None;
    }
    let mut pointers: Vec<*mut u8> = vec![null_mut(); count];
    let mut buf = vec![0u8; size];
    // SAFETY: `pointers` has room for the `count` pointers and `buf` for the `size` bytes the
    // host just reported; it writes no more. Only `buf` is read afterwards.
    if unsafe { environ_get(pointers.as_mut_ptr(), buf.as_mut_ptr()) } != 0 {
        return None;
    }
    // `buf` holds the variables as NUL-terminated `NAME=value` strings.
    buf.split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
        .and_then(|value| String::from_utf8(value.to_vec()).ok())
}

/// Eight random bytes from the host; `None` if it has none to give.
pub fn random_u64() -> Option<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: the host writes exactly `bytes.len()` bytes into the live local array.
    if unsafe { random_get(bytes.as_mut_ptr(), bytes.len()) } != 0 {
        return None;
    }
    Some(u64::from_le_bytes(bytes))
}
