//! The floor of `request_overhead` (benchmark 5): what any proxy-wasm filter that must see a
//! drone webhook's headers and body costs in Envoy, doing nothing with them.
//!
//! Same SDK, same release profile and the same pinned `wasm-opt` as status-sync (`make floor`),
//! and the same reads status-sync makes of an unsigned webhook on its path: the `:path`,
//! `:method` and `x-drone-event` request headers, then the body, copied into the VM as it
//! arrives. Nothing is parsed, counted, logged or handed off, and there is no tick. Not part of
//! the shipped module (its own crate; `make build` builds `-p status-sync` only).

#[cfg(target_arch = "wasm32")]
mod floor {
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| Box::new(Root));
    }}

    struct Root;
    impl Context for Root {}
    impl RootContext for Root {
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Reader { bytes: 0 }))
        }
    }

    /// Reads what status-sync reads of a webhook, through the same non-panicking hostcalls.
    struct Reader {
        bytes: usize,
    }
    impl Context for Reader {}
    impl HttpContext for Reader {
        fn on_http_request_headers(&mut self, _num_headers: usize, _eos: bool) -> Action {
            for name in [":path", ":method", "x-drone-event"] {
                let value = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name);
                self.bytes += value.ok().flatten().map_or(0, |v| v.len());
            }
            Action::Continue
        }

        // Like status-sync, no read when a callback brings no bytes (the end of a POST often
        // comes in a second call with none).
        fn on_http_request_body(&mut self, body_size: usize, _eos: bool) -> Action {
            if body_size > 0 {
                let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
                self.bytes += body.ok().flatten().map_or(0, |b| b.len());
            }
            Action::Continue
        }
    }
}
