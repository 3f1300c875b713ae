//! Live webhook recognition and parsing must never panic, on any body or request line, and
//! the single-pass parser must give the verdict of the reference parser (serde_json based)
//! on every body.
//!
//! Input: the whole input is the webhook body for `parse_webhook`; the same bytes split on
//! `\n` give `method`, `path`, `X-Drone-Event` (absent when there is no third line) and the
//! configured `webhook_path` for `is_build_webhook` and the enforce path policy
//! (`is_webhook_path`, `webhook_route_regex`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use status_sync::core::model::ParseError;
use status_sync::core::webhook::{
    is_build_webhook, is_webhook_path, parse_webhook, scan_webhook, webhook_route_regex,
};
use test_support::reference;

fuzz_target!(|data: &[u8]| {
    let ours = parse_webhook(data);
    let theirs = reference::parse_webhook(data);
    match (&ours, &theirs) {
        // Both say "not JSON", each in its own words.
        (Err(ParseError::Json(_)), Err(ParseError::Json(_))) => {}
        _ => assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(data)),
    }
    if let Ok(view) = scan_webhook(data) {
        let _ = view.metadata_hash();
        let _ = view.into_parsed(false);
    }

    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(4, '\n');
    let method = lines.next().unwrap_or("");
    let path = lines.next().unwrap_or("");
    let event = lines.next();
    let webhook_path = lines.next().unwrap_or("/hook");
    let _ = is_build_webhook(method, path, event, webhook_path);
    // The enforce path policy: the exact path is always covered by it.
    let covered = is_webhook_path(path, webhook_path);
    assert!(covered || path != webhook_path || webhook_path.is_empty());
    let _ = webhook_route_regex(webhook_path);
});
