//! The proxy-wasm shell: translates host events into core calls and core decisions into host
//! calls. Every host call goes through [`host`], whose wrappers never panic on an unexpected
//! host status (the SDK's trait methods would).

mod abi;
mod host;
mod http;
mod metrics;
mod root;
mod shared;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    // The SDK's logger also installs a panic hook that logs the panic at critical level.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}
