//! A proxy-wasm module that does nothing. Without the `all` feature it exports only what is
//! needed: the ABI marker, the allocator, context create, vm start, configure, request headers.
//! With `all`, it also exports every other callback the Rust SDK 0.2.5 exports, all no-ops.

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(size);
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

#[cfg(not(feature = "none"))]
#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _root_context_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_context_id: u32, _size: usize) -> u32 {
    1
}

// The one host call of `hdr` (ABI 0.2.1): map type, key, where to put the value.
#[cfg(feature = "hdr")]
extern "C" {
    fn proxy_get_header_map_value(map: u32, key: *const u8, key_len: usize, value: *mut *mut u8, value_len: *mut usize) -> u32;
}

#[cfg(not(feature = "none"))]
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _n: usize, _eos: u32) -> u32 {
    // With `hdr`: read :method (one host call + one proxy_on_memory_allocate), like status-sync.
    #[cfg(feature = "hdr")]
    unsafe {
        let key = b":method";
        let mut p: *mut u8 = std::ptr::null_mut();
        let mut n: usize = 0;
        if proxy_get_header_map_value(0, key.as_ptr(), key.len(), &mut p, &mut n) == 0 && !p.is_null() {
            drop(Vec::from_raw_parts(p, n, n));
        }
    }
    0
}

#[cfg(feature = "all")]
mod all {
    #[no_mangle]
    pub extern "C" fn proxy_on_request_body(_c: u32, _n: usize, _eos: u32) -> u32 { 0 }
    #[no_mangle]
    pub extern "C" fn proxy_on_request_trailers(_c: u32, _n: usize) -> u32 { 0 }
    #[no_mangle]
    pub extern "C" fn proxy_on_response_headers(_c: u32, _n: usize, _eos: u32) -> u32 { 0 }
    #[no_mangle]
    pub extern "C" fn proxy_on_response_body(_c: u32, _n: usize, _eos: u32) -> u32 { 0 }
    #[no_mangle]
    pub extern "C" fn proxy_on_response_trailers(_c: u32, _n: usize) -> u32 { 0 }
    #[no_mangle]
    pub extern "C" fn proxy_on_done(_c: u32) -> u32 { 1 }
    #[no_mangle]
    pub extern "C" fn proxy_on_log(_c: u32) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_delete(_c: u32) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_tick(_c: u32) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_queue_ready(_c: u32, _q: u32) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_new_connection(_c: u32) -> u32 { 0 }
    #[no_mangle]
    pub extern "C" fn proxy_on_downstream_data(_c: u32, _n: usize, _eos: u32) -> u32 { 0 }
    #[no_mangle]
    pub extern "C" fn proxy_on_downstream_connection_close(_c: u32, _p: u32) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_upstream_data(_c: u32, _n: usize, _eos: u32) -> u32 { 0 }
    #[no_mangle]
    pub extern "C" fn proxy_on_upstream_connection_close(_c: u32, _p: u32) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_http_call_response(_c: u32, _t: u32, _h: usize, _b: usize, _tr: usize) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_grpc_receive_initial_metadata(_c: u32, _t: u32, _h: usize) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_grpc_receive(_c: u32, _t: u32, _s: usize) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(_c: u32, _t: u32, _tr: usize) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_grpc_close(_c: u32, _t: u32, _s: u32) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_foreign_function(_c: u32, _f: u32, _s: usize) {}
}
