//! A proxy-wasm host on wasmtime (TODO).
