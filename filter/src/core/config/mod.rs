//! Plugin configuration: the JSON given to `on_configure`.
//!
//! Every key is validated on its own so that a bad configuration is refused with one log line
//! naming the key and why (Envoy then refuses to start, or NACKs the update and keeps the old
//! configuration). The drone token is never part of any message.
//!
//! Every key is declared once, in [`KEYS`]: its name, default, range and help. Integer keys
//! are parsed from their row (bounds and default); docs/configuration.md's table is generated
//! from the rows (`make docs`, checked by `filter/tests/tables.rs`). Adding a key is a row, a
//! [`Config`] field, and the line of [`Config::parse`] that reads it (a test fails until the
//! parser reads every row).
//!
//! The module's files, by what they own:
//! - this file: [`Config`] (with its redacting `Debug`), [`SignatureMode`], [`ConfigError`];
//! - `keys`: [`KEYS`], the one row per key ([`Key`], [`Spec`], [`Unit`]);
//! - `parse`: [`Config::parse`], each key's checks and the rules across keys;
//! - `reader`: typed, range-checked access to the JSON object, and the messages' words.

mod keys;
mod parse;
mod reader;

use super::redact::{OptRedacted, Redacted};
pub(crate) use keys::help;
pub use keys::{key, Key, Spec, Unit, KEYS};

/// How live webhooks' drone signatures are checked (issue: signed webhooks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureMode {
    /// No verification (default when no `webhook_secret` is set).
    Off,
    /// Verify and count failures, but pass every request through.
    Monitor,
    /// Reject forged or unsigned webhooks with 401 before they reach the pipeline.
    Enforce,
}

/// Declares [`Config`] and its `Debug` from one list of fields, so that no field can be left
/// out of `Debug` and none is listed twice. A field marked `=> Wrapper` shows through that
/// wrapper: the token and the secret, redacted.
macro_rules! config_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident: $ty:ty $(=> $show:ident)?, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    $( .field(stringify!($field), &$($show)?(&self.$field)) )*
                    .finish()
            }
        }
    };
}

config_struct! {
    /// Validated configuration. Each field's doc names its key: [`KEYS`] says what it means, its
    /// default and range. `Debug` shows every field, the token and the secret redacted.
    #[derive(Clone, PartialEq)]
    pub struct Config {
        /// `webhook_path`.
        pub webhook_path: String,
        /// `pipeline_cluster`.
        pub pipeline_cluster: String,
        /// `pipeline_authority`.
        pub pipeline_authority: String,
        /// `drone_cluster`.
        pub drone_cluster: String,
        /// `drone_authority`.
        pub drone_authority: String,
        /// `drone_token_env` or `drone_token`. Never logged.
        pub drone_token: String => Redacted,
        /// `tick_ms`.
        pub tick_ms: u64,
        /// `stale_after_ms`.
        pub stale_after_ms: u64,
        /// `max_poll_interval_ms`.
        pub max_poll_interval_ms: u64,
        /// `max_tracked_builds`.
        pub max_tracked_builds: usize,
        /// `max_inflight_calls`.
        pub max_inflight_calls: usize,
        /// `max_drone_calls_per_sec`.
        pub max_drone_calls_per_sec: u64,
        /// `call_timeout_ms`.
        pub call_timeout_ms: u64,
        /// `max_body_bytes`.
        pub max_body_bytes: usize,
        /// `max_body_bytes_in_flight`.
        pub max_body_bytes_in_flight: usize,
        /// `max_build_age_ms`.
        pub max_build_age_ms: u64,
        /// `max_repos`.
        pub max_repos: usize,
        /// `circuit_failure_threshold`.
        pub circuit_failure_threshold: u32,
        /// `circuit_open_ms`.
        pub circuit_open_ms: u64,
        /// `lease_ms`.
        pub lease_ms: u64,
        /// `instance`.
        pub instance: String,
        /// `webhook_secret_env` or `webhook_secret`. Never logged.
        pub webhook_secret: Option<String> => OptRedacted,
        /// `signature_mode`.
        pub signature_mode: SignatureMode,
        /// `max_clock_skew_ms`.
        pub max_clock_skew_ms: u64,
        /// `max_gap_fill`.
        pub max_gap_fill: u64,
        /// `scan_repos`, as (owner, name).
        pub scan_repos: Vec<(String, String)>,
        /// `scan_interval_ms`.
        pub scan_interval_ms: u64,
        /// `drone_server_url`, kept as `proto://host`.
        pub drone_server_url: Option<String>,
        /// `etcd_cluster`: `None` (absent or empty) is the embedded mode.
        pub etcd_cluster: Option<String>,
        /// `etcd_authority`.
        pub etcd_authority: String,
        /// `etcd_prefix`, defaulted from `instance`.
        pub etcd_prefix: String,
        /// `etcd_lease_ttl_ms`.
        pub etcd_lease_ttl_ms: u64,
    }
}

/// A configuration error: which key, and why. `Display` gives the one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &str, reason: &str) -> Self {
        ConfigError {
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "status-sync: invalid configuration: {}", self.reason)
        } else {
            write!(
                f,
                "status-sync: invalid configuration: key `{}`: {}",
                self.key, self.reason
            )
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    // The shared configurations of the module's tests: a minimal valid one, one key changed,
    // and an environment holding the token and the secret (which no message may ever show).
    pub(super) const TOKEN: &str = "tok3n-S3CRET-0123456789abcdef";
    pub(super) const SECRET: &str = "hmac-S3CRET-GMEuUHQfmrMRsseWxi9YlIeBtn9lm6im";

    pub(super) fn env(name: &str) -> Option<String> {
        match name {
            "DRONE_TOKEN" => Some(TOKEN.to_string()),
            "DRONE_WEBHOOK_SECRET" => Some(SECRET.to_string()),
            "EMPTY" => Some(String::new()),
            "TOKEN_WITH_NEWLINE" => Some(format!("{TOKEN}\n")),
            _ => None,
        }
    }

    pub(super) fn minimal() -> Value {
        json!({"pipeline_cluster": "pipeline", "drone_cluster": "drone", "drone_token_env": "DRONE_TOKEN"})
    }

    /// `minimal()` with `key` set to `value` (or removed when `value` is `None`).
    pub(super) fn with(key: &str, value: Option<Value>) -> Value {
        let mut v = minimal();
        let m = v.as_object_mut().unwrap();
        match value {
            Some(x) => m.insert(key.to_string(), x),
            None => m.remove(key),
        };
        v
    }

    pub(super) fn parse(v: &Value) -> Result<Config, ConfigError> {
        Config::parse(v.to_string().as_bytes(), &env)
    }

    pub(super) fn err(v: &Value) -> ConfigError {
        let e = parse(v).unwrap_err();
        assert_no_secret(&e);
        e
    }

    pub(super) fn assert_no_secret(e: &ConfigError) {
        let line = e.to_string();
        for s in [TOKEN, SECRET, "tok3n", "S3CRET"] {
            assert!(!line.contains(s), "secret leaked: {line}");
        }
    }

    /// Issue 11, attack 8: `Config` derived `Debug` with the token and the secret inside.
    #[test]
    fn debug_shows_neither_token_nor_secret() {
        let mut v = with("webhook_secret", Some(json!(SECRET)));
        v["drone_token"] = json!(TOKEN);
        v.as_object_mut().unwrap().remove("drone_token_env");
        let c = parse(&v).unwrap();
        assert_eq!(c.drone_token, TOKEN);
        for shown in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(!shown.contains(TOKEN), "token shown: {shown}");
            assert!(!shown.contains(SECRET), "secret shown: {shown}");
            assert!(shown.contains("drone_token") && shown.contains("webhook_secret"));
            assert!(shown.starts_with("Config {") && shown.contains("drone_server_url"));
            assert!(shown.contains("<redacted>"));
        }
    }
}
