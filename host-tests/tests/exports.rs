//! The module's exports: the callbacks the filter implements and no other. Envoy calls an
//! exported callback whether or not it does anything, and each call into the VM costs: no
//! `proxy_on_response_headers` (the pipeline's answer is read in `on_log`, from the
//! access-log phase's headers), no `proxy_on_queue_ready` (the leader drains the queue on its
//! tick), no body or trailer callbacks of the response.

mod common;

use common::wasm;

#[test]
fn the_module_exports_only_the_callbacks_it_implements() {
    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::from_file(&engine, wasm()).expect("the module compiles");
    let mut callbacks: Vec<&str> = module
        .exports()
        .map(|e| e.name())
        .filter(|n| n.starts_with("proxy_on_"))
        .collect();
    callbacks.sort_unstable();
    assert_eq!(
        callbacks,
        [
            "proxy_on_configure",
            "proxy_on_context_create",
            "proxy_on_delete",
            "proxy_on_done",
            "proxy_on_http_call_response",
            "proxy_on_log",
            "proxy_on_memory_allocate",
            "proxy_on_request_body",
            "proxy_on_request_headers",
            "proxy_on_request_trailers",
            "proxy_on_tick",
            "proxy_on_vm_start",
        ]
    );
}
