//! Recognising and parsing drone's live `build` webhooks, by what each file owns:
//! - `path`: which requests are build webhooks, and the one path policy `enforce` and the
//!   Envoy route share;
//! - `parse`: the one-pass parser of a webhook's body ([`scan_webhook`], [`parse_webhook`]).
//!
//! The serde-based parser the one-pass one is tested and fuzzed against is a test oracle outside
//! the filter (`test_support::reference`), so the shipped module has no serde.

mod parse;
mod path;

pub use parse::{parse_webhook, scan_webhook, WebhookView};
pub use path::{
    is_build_event, is_build_webhook, is_delivery_path, is_webhook_path, webhook_route_regex,
};
