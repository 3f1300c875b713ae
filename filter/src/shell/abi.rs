//! The module's imports that are not proxy-wasm's: the two WASI facilities the filter needs
//! from a module built for `wasm32-unknown-unknown` (whose std has neither). Envoy (and
//! Istio's) hosts give every module `wasi_snapshot_preview1`, whatever its target: the VM's
//! `environment_variables` are what `environ_get` answers. The only `unsafe` of the filter.

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn environ_sizes_get(count: *mut usize, buf_size: *mut usize) -> u16;
    fn environ_get(environ: *mut *mut u8, environ_buf: *mut u8) -> u16;
    fn random_get(buf: *mut u8, buf_len: usize) -> u16;
}

/// The value of environment variable `name` of the VM (Envoy: the plugin's
/// `vm_config.environment_variables`); `None` if unset, not UTF-8, or the host has none.
pub fn env_var(name: &str) -> Option<String> {
    let (mut count, mut size) = (0usize, 0usize);
    // SAFETY: the host writes one `usize` through each pointer, both to live locals.
    if unsafe { environ_sizes_get(&mut count, &mut size) } != 0 {
        return None;
    }
    let mut pointers: Vec<*mut u8> = vec![std::ptr::null_mut(); count];
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
