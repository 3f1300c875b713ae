//! Live webhook recognition and parsing must never panic, on any body or request line.
//!
//! Input: the whole input is the webhook body for `parse_webhook`; the same bytes split on
//! `\n` give `method`, `path`, `X-Drone-Event` (absent when there is no third line) and the
//! configured `webhook_path` for `is_build_webhook`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use status_sync::core::webhook::{is_build_webhook, parse_webhook};

fuzz_target!(|data: &[u8]| {
    let _ = parse_webhook(data);

    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(4, '\n');
    let method = lines.next().unwrap_or("");
    let path = lines.next().unwrap_or("");
    let event = lines.next();
    let webhook_path = lines.next().unwrap_or("/hook");
    let _ = is_build_webhook(method, path, event, webhook_path);
});
