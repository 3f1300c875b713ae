//! The proxy-wasm shell: translates host events into core calls and core decisions into host
//! calls. The module's own dispatcher (this file): the ABI 0.2.1 callbacks it exports, each
//! handed to its context, root ([`root::Root`]) or HTTP ([`http::Observer`]), found by the
//! host's context id; the host calls go through [`abi`], whose wrappers never panic on an
//! unexpected host status. No SDK: only the callbacks the filter implements are exported, so
//! the host calls no other (a missing callback is a no-op to Envoy: `Continue` for streams).

mod abi;
mod host;
mod http;
mod metrics;
mod root;
mod shared;

use abi::Action;
use http::Observer;
use root::Root;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// The contexts of this VM: its roots (one per plugin sharing the VM: a few) and their HTTP
/// contexts (one per request in flight).
struct Contexts {
    roots: Vec<Root>,
    http: HashMap<u32, Observer, Ids>,
}

/// Hashing of context ids: the host numbers contexts itself, so a multiply spreads them over
/// the table, without the keyed hash std uses against chosen keys.
#[derive(Clone, Copy, Default)]
struct Ids;

struct IdHasher(u64);

impl BuildHasher for Ids {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = const {
        RefCell::new(Contexts { roots: Vec::new(), http: HashMap::with_hasher(Ids) })
    };
}

/// Runs `f` on this VM's contexts; `None` if they are in use (a callback from within a
/// callback, which Envoy does not make).
fn with<R>(f: impl FnOnce(&mut Contexts) -> R) -> Option<R> {
    CONTEXTS
        .try_with(|c| c.try_borrow_mut().ok().map(|mut c| f(&mut c)))
        .ok()
        .flatten()
}

fn root<R>(id: u32, f: impl FnOnce(&mut Root) -> R) -> Option<R> {
    with(|c| c.roots.iter_mut().find(|r| r.id() == id).map(f)).flatten()
}

fn http<R>(id: u32, f: impl FnOnce(&mut Observer) -> R) -> Option<R> {
    with(|c| c.http.get_mut(&id).map(f)).flatten()
}

/// Log lines go to the host (`proxy_log`), at info and above; a panic (which the filter's
/// rules keep out of its code) is logged at critical before the VM traps.
struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        let level = match record.level() {
            log::Level::Error => abi::LOG_ERROR,
            log::Level::Warn => abi::LOG_WARN,
            _ => abi::LOG_INFO,
        };
        abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Once per VM, before its first context: the logger, the panic hook, and the secret of the
/// core's hash maps (`core::keyed`: on this target std has no randomness of its own).
fn init_vm() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
        let (k0, k1) = match (abi::random_u64(), abi::random_u64()) {
            (Some(k0), Some(k1)) => (k0, k1),
            _ => {
                log::warn!("the host gave no random bytes: hash maps keyed by the clock");
                (host::now_ms(), host::now_ms().rotate_left(29))
            }
        };
        crate::core::keyed::seed(k0, k1);
        std::panic::set_hook(Box::new(|panic| {
            abi::log(abi::LOG_CRITICAL, &panic.to_string());
        }));
    }
}

// The exports: ABI 0.2.1's callbacks, as the host calls them. Booleans the host passes
// (`end_of_stream`) are taken as integers, any non-zero value true.

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    abi::allocate(size)
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    if root_context_id == 0 {
        init_vm();
        with(|c| {
            c.roots.retain(|r| r.id() != context_id);
            c.roots.push(Root::new(context_id));
        });
    } else {
        with(|c| {
            let observer = c
                .roots
                .iter()
                .find(|r| r.id() == root_context_id)
                .map_or_else(|| Observer::new(None), Root::new_http);
            c.http.insert(context_id, observer);
        });
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(context_id: u32, _vm_configuration_size: usize) -> bool {
    root(context_id, Root::on_vm_start).unwrap_or(false)
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> bool {
    root(context_id, Root::on_configure).unwrap_or(false)
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    root(context_id, Root::on_tick);
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    root(context_id, |r| {
        r.on_http_call_response(token, num_headers, body_size)
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    end_of_stream: u32,
) -> Action {
    http(context_id, |h| h.on_request_headers(end_of_stream != 0)).unwrap_or(Action::Continue)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(
    context_id: u32,
    body_size: usize,
    end_of_stream: u32,
) -> Action {
    http(context_id, |h| {
        h.on_request_body(body_size, end_of_stream != 0)
    })
    .unwrap_or(Action::Continue)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, _num_trailers: usize) -> Action {
    http(context_id, Observer::on_request_trailers).unwrap_or(Action::Continue)
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    http(context_id, Observer::on_log);
}

#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> bool {
    root(context_id, Root::on_done).unwrap_or(true)
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with(|c| {
        if c.http.remove(&context_id).is_none() {
            c.roots.retain(|r| r.id() != context_id);
        }
    });
}
