//! Plugin configuration: the JSON given to `on_configure`.
//!
//! Every key is validated on its own so that a bad configuration is refused with one log line
//! naming the key and why (Envoy then refuses to start, or NACKs the update and keeps the old
//! configuration). The drone token is never part of any message.
//!
//! Every key is declared once, in [`KEYS`]: its name, default, range and help. Integer keys
//! are parsed from their row (bounds and default); README's configuration table is generated
//! from the rows (`make docs`, checked by `filter/tests/tables.rs`). Adding a key is a row, a
//! [`Config`] field, and the line of [`Config::parse`] that reads it (a test fails until the
//! parser reads every row).

use super::json::compact;
use super::json::{decode_string, decode_u64, Scanner};
use super::object::RawObject;
use super::redact::{OptRedacted, Redacted};
use std::borrow::Cow;

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
    }
}

impl Config {
    /// Parses and validates the plugin configuration. `env` looks up environment variables
    /// (for `*_env` keys); it is a parameter so the core never reads the process environment.
    ///
    /// Keys are checked in a fixed order (unknown keys first, then the struct's field order,
    /// then cross-field rules), so the same bad configuration always gives the same message.
    pub fn parse(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(json)
            .map_err(|_| ConfigError::new("", "the configuration is not UTF-8 text"))?;
        if text.trim().is_empty() {
            return Err(ConfigError::new(
                "",
                "the configuration is empty; expected a JSON object with at least \
                 `pipeline_cluster`, `drone_cluster` and `drone_token_env`",
            ));
        }
        // The scanner's messages give a position, never the input text, so no secret leaks.
        let map = match RawObject::parse(text) {
            Ok(map) => map,
            Err(e) => {
                let reason = match first_value_type(text) {
                    Some(t) if t != "an object" => {
                        format!("the configuration must be a JSON object, got {t}")
                    }
                    _ => format!("the configuration is not valid JSON: {e}"),
                };
                return Err(ConfigError::new("", &reason));
            }
        };
        if let Some((unknown, _)) = map.entries.iter().find(|(k, _)| key(k).is_none()) {
            let mut why = String::from("unknown key (known keys:");
            for k in KEYS {
                why.push(' ');
                why.push_str(k.name);
            }
            why.push(')');
            return Err(ConfigError::new(&truncate(unknown), &why));
        }
        let map = &map;
        let r = Reader { map };

        let webhook_path = r.string_or_default("webhook_path")?;
        if !webhook_path.starts_with('/') {
            return Err(r.bad("webhook_path", "must start with `/`"));
        }
        if webhook_path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(r.bad(
                "webhook_path",
                "must not contain spaces or control characters",
            ));
        }

        let pipeline_cluster = r.required_name(
            "pipeline_cluster",
            "the Envoy cluster of the pipeline service",
        )?;
        let pipeline_authority = r
            .authority("pipeline_authority")?
            .unwrap_or_else(|| pipeline_cluster.clone());
        let drone_cluster =
            r.required_name("drone_cluster", "the Envoy cluster of drone-server")?;
        let drone_authority = r
            .authority("drone_authority")?
            .unwrap_or_else(|| drone_cluster.clone());

        let drone_token = r
            .secret("drone_token", "drone_token_env", env)?
            .ok_or_else(|| {
                ConfigError::new(
                    "drone_token",
                    "is required: set `drone_token_env` (name of an environment variable holding \
                     drone's API token) or `drone_token`",
                )
            })?;
        // It goes into `Authorization: Bearer ...`; a stray newline (common when the variable
        // is filled from a file) would break or inject headers.
        if !drone_token.bytes().all(|b| b.is_ascii_graphic()) {
            let key = if r.get("drone_token").is_some() {
                "drone_token"
            } else {
                "drone_token_env"
            };
            return Err(ConfigError::new(
                key,
                "the token must be visible ASCII only (no spaces, newlines or control characters)",
            ));
        }

        let tick_ms = r.int("tick_ms")?;
        let max_body_bytes: usize = r.int("max_body_bytes")?;
        let max_body_bytes_in_flight: usize = r.int_or(
            "max_body_bytes_in_flight",
            DEFAULT_BODY_BYTES_IN_FLIGHT.max(max_body_bytes as u64),
        )?;
        let lease_ms = r.int_or("lease_ms", DEFAULT_LEASE_MIN_MS.max(3 * tick_ms))?;

        let instance = r.string_or_default("instance")?;
        if instance.len() > 64
            || !instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(r.bad(
                "instance",
                "must be 1 to 64 characters from A-Z a-z 0-9 _ . -",
            ));
        }

        let webhook_secret = r.secret("webhook_secret", "webhook_secret_env", env)?;
        let signature_mode = match r.string("signature_mode")?.as_deref() {
            None if webhook_secret.is_some() => SignatureMode::Enforce,
            None => SignatureMode::Off,
            Some("off") => SignatureMode::Off,
            Some("monitor") => SignatureMode::Monitor,
            Some("enforce") => SignatureMode::Enforce,
            Some(_) => {
                return Err(r.bad(
                    "signature_mode",
                    "must be one of \"off\", \"monitor\", \"enforce\"",
                ))
            }
        };
        if signature_mode != SignatureMode::Off && webhook_secret.is_none() {
            return Err(ConfigError::new(
                "signature_mode",
                "`monitor` and `enforce` need `webhook_secret_env` or `webhook_secret`",
            ));
        }
        let scan_repos = r.repos("scan_repos")?;
        let drone_server_url = match r.string("drone_server_url")? {
            None => None,
            Some(url) => Some(server_url(&url).ok_or_else(|| {
                r.bad(
                    "drone_server_url",
                    "must be http:// or https:// and a host (drone's DRONE_SERVER_PROTO://DRONE_SERVER_HOST)",
                )
            })?),
        };

        // The integer keys, each read and range-checked under its own name (`KEYS`).
        macro_rules! with_ints {
            ($($int:ident),+; $($rest:tt)*) => {
                Config { $($int: r.int(stringify!($int))?,)+ $($rest)* }
            };
        }
        let cfg = with_ints!(
            stale_after_ms, max_poll_interval_ms, max_tracked_builds, max_inflight_calls,
            max_drone_calls_per_sec, call_timeout_ms, max_build_age_ms, max_repos,
            circuit_failure_threshold, circuit_open_ms, max_clock_skew_ms, max_gap_fill,
            scan_interval_ms;
            webhook_path: webhook_path.to_string(),
            pipeline_cluster: pipeline_cluster.to_string(),
            pipeline_authority: pipeline_authority.to_string(),
            drone_cluster: drone_cluster.to_string(),
            drone_authority: drone_authority.to_string(),
            drone_token,
            tick_ms,
            max_body_bytes,
            max_body_bytes_in_flight,
            lease_ms,
            instance: instance.to_string(),
            webhook_secret,
            signature_mode,
            scan_repos,
            drone_server_url,
        );
        if cfg.max_poll_interval_ms < cfg.stale_after_ms {
            return Err(ConfigError::new(
                "max_poll_interval_ms",
                &format!(
                    "must be at least stale_after_ms ({}), got {}{}",
                    cfg.stale_after_ms,
                    cfg.max_poll_interval_ms,
                    defaulted(map, "max_poll_interval_ms")
                ),
            ));
        }
        if cfg.max_body_bytes_in_flight < cfg.max_body_bytes {
            return Err(ConfigError::new(
                "max_body_bytes_in_flight",
                &format!(
                    "must be at least max_body_bytes ({}), got {}",
                    cfg.max_body_bytes, cfg.max_body_bytes_in_flight
                ),
            ));
        }
        if cfg.lease_ms < 2 * cfg.tick_ms {
            return Err(ConfigError::new(
                "lease_ms",
                &format!(
                    "must be at least 2 * tick_ms ({}), got {}",
                    2 * cfg.tick_ms,
                    cfg.lease_ms
                ),
            ));
        }

        Ok(cfg)
    }
}

/// `proto://host` of a drone server URL, the host lower-cased (drone's `cleanHostname`); a
/// trailing `/` is allowed, a path is not. The host is visible ASCII without `"` or `\`: it
/// goes into the `system` JSON as is.
fn server_url(url: &str) -> Option<String> {
    let (proto, rest) = url.split_once("://")?;
    if proto != "http" && proto != "https" {
        return None;
    }
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'"' | b'\\' | b'?' | b'#'));
    ok.then(|| format!("{proto}://{}", host.to_ascii_lowercase()))
}

const MIN_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// `max_body_bytes_in_flight` defaults to the larger of this (4 MiB) and `max_body_bytes`.
const DEFAULT_BODY_BYTES_IN_FLIGHT: u64 = 4 * 1_048_576;

/// `lease_ms` defaults to the larger of this and three ticks.
const DEFAULT_LEASE_MIN_MS: u64 = 10_000;

/// One configuration key, declared once in [`KEYS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub spec: Spec,
    /// What it does, as README says it (empty in the wasm module: see [`help`]).
    pub help: &'static str,
}

/// A key's values: what the parser applies and README shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spec {
    /// An integer in `min..=max`, `default` when absent (`None`: computed, see `shown`).
    Int {
        default: Option<u64>,
        min: u64,
        max: u64,
        unit: Unit,
        /// README's default when computed from other keys, else empty.
        shown: &'static str,
        /// A rule across keys, or what a special value means (README's range), else empty.
        rule: &'static str,
    },
    /// A non-empty string, `default` when absent; `range`: README's words for its checks.
    Str {
        default: &'static str,
        range: &'static str,
    },
    /// Checked by its own code in [`Config::parse`]; README's default and range.
    Other {
        default: &'static str,
        range: &'static str,
    },
    /// Like `Other`, and its value is a secret, or may be one pasted into the wrong key:
    /// never echoed in a message.
    Secret {
        default: &'static str,
        range: &'static str,
    },
}

impl Spec {
    /// A string, `default` when absent; `range`: README's words for its checks.
    const fn text(default: &'static str, range: &'static str) -> Spec {
        Spec::Str { default, range }
    }

    /// Checked by its own code; README's default and range.
    const fn other(default: &'static str, range: &'static str) -> Spec {
        Spec::Other { default, range }
    }

    /// A secret, or the name of a variable holding one; README's default and range.
    const fn secret(default: &'static str, range: &'static str) -> Spec {
        Spec::Secret { default, range }
    }

    /// Milliseconds in `min..=max`, `default` when absent.
    const fn ms(default: u64, min: u64, max: u64) -> Spec {
        Spec::int(default, min, max, Unit::Ms)
    }

    /// A count in `min..=max`, `default` when absent.
    const fn count(default: u64, min: u64, max: u64) -> Spec {
        Spec::int(default, min, max, Unit::Count)
    }

    /// Bytes in `min..=max`, `default` when absent.
    const fn bytes(default: u64, min: u64, max: u64) -> Spec {
        Spec::int(default, min, max, Unit::Bytes)
    }

    const fn int(default: u64, min: u64, max: u64, unit: Unit) -> Spec {
        Spec::Int {
            default: Some(default),
            min,
            max,
            unit,
            shown: "",
            rule: "",
        }
    }

    /// With a rule across keys, or the meaning of a special value (README's range).
    const fn rule(mut self, rule: &'static str) -> Spec {
        if let Spec::Int { rule: r, .. } = &mut self {
            *r = rule;
        }
        self
    }
}

/// What an integer counts, for README (`30000` ms reads `30 s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Ms,
    Bytes,
}

/// Every accepted key, in the order [`Config::parse`] checks them.
pub const KEYS: &[Key] = &[
    Key {
        name: "webhook_path",
        spec: Spec::text("/hook", "starts with `/`"),
        help: help(
            "path (and query) of drone's webhooks on the pipeline, exactly: only a request to \
               it is observed, and re-deliveries are POSTed to it. `enforce` also checks every \
               spelling a framework may route to it (case, `;` parameters, suffixes, \
               sub-paths). In `envoy.yaml` the webhook route must be the one \
               `webhook_route_match` gives for it",
        ),
    },
    Key {
        name: "pipeline_cluster",
        spec: Spec::other("(required)", "cluster name"),
        help: help("Envoy cluster of the pipeline; re-deliveries go there"),
    },
    Key {
        name: "pipeline_authority",
        spec: Spec::other("the cluster name", ""),
        help: help("`:authority` of re-deliveries"),
    },
    Key {
        name: "drone_cluster",
        spec: Spec::other("(required)", "cluster name"),
        help: help(
            "Envoy cluster of drone-server (Istio: `outbound|80||drone.ci.svc.cluster.local`)",
        ),
    },
    Key {
        name: "drone_authority",
        spec: Spec::other("the cluster name", ""),
        help: help("`:authority` of API calls"),
    },
    Key {
        name: "drone_token_env",
        spec: Spec::secret("this or `drone_token` required", "variable name"),
        help: help(
            "name of an environment variable of the VM holding drone's API token (preferred \
               over `drone_token`). Use an admin machine user's token: drone answers 404 for \
               repositories a user may not read",
        ),
    },
    Key {
        name: "drone_token",
        spec: Spec::secret("this or `drone_token_env` required", "visible ASCII"),
        help: help("drone's API token itself"),
    },
    Key {
        name: "tick_ms",
        spec: Spec::ms(1_000, 10, MIN_MS),
        help: help("the single periodic tick (`set_tick_period`, once per root context)"),
    },
    Key {
        name: "stale_after_ms",
        spec: Spec::ms(30_000, 1_000, DAY_MS),
        help: help("a build with no news for this long is looked up in drone"),
    },
    Key {
        name: "max_poll_interval_ms",
        spec: Spec::ms(300_000, 1_000, DAY_MS).rule("≥ `stale_after_ms`"),
        help: help(
            "cap of the growing interval between looks at an unchanged build, and of backoff",
        ),
    },
    Key {
        name: "max_tracked_builds",
        spec: Spec::count(10_000, 1, 1_000_000),
        help: help(
            "ledger capacity (memory bound). Builds only unverified webhooks vouch for, and \
               builds inferred from numbers, may use a quarter of it each and never evict a \
               build backed by a verified webhook or by drone's answer",
        ),
    },
    Key {
        name: "max_inflight_calls",
        spec: Spec::count(4, 1, 256),
        help: help("concurrent drone + pipeline calls"),
    },
    Key {
        name: "max_drone_calls_per_sec",
        spec: Spec::count(10, 1, 10_000),
        help: help(
            "rate limit toward drone (token bucket, 1 s burst); lookups only unverified \
               webhooks asked for take at most half of it",
        ),
    },
    Key {
        name: "call_timeout_ms",
        spec: Spec::ms(5_000, 100, MIN_MS),
        help: help("timeout of every call"),
    },
    Key {
        name: "max_body_bytes",
        spec: Spec::bytes(262_144, 1_024, 16_777_216),
        help: help(
            "largest webhook body (and drone answer) copied and parsed; larger ones pass \
               through and are counted",
        ),
    },
    Key {
        name: "max_body_bytes_in_flight",
        spec: Spec::Int {
            default: None,
            min: 1_024,
            max: 1_073_741_824,
            unit: Unit::Bytes,
            shown: "max(4 MiB, `max_body_bytes`)",
            rule: "≥ `max_body_bytes`",
        },
        help: help(
            "body bytes one worker holds for all requests at once: its copies of webhook \
               bodies, and in `enforce` the bodies Envoy buffers while their digest is checked. \
               A webhook that does not fit passes through unobserved and is counted \
               (`webhooks_over_budget`); in `enforce` a held body that does not fit is answered \
               503, never let through unchecked",
        ),
    },
    Key {
        name: "max_build_age_ms",
        spec: Spec::ms(25 * HOUR_MS, MIN_MS, 30 * DAY_MS),
        help: help(
            "a build still open after this long is dropped and counted (drone's reaper kills \
               builds after 24 h)",
        ),
    },
    Key {
        name: "max_repos",
        spec: Spec::count(1_024, 1, 100_000),
        help: help(
            "repositories whose `repo` object the reconciler caches for re-deliveries; it \
               also keeps up to 2 × `max_repos` repository names drone or evidence confirmed \
               (with their gap-filling watermarks) and `max_repos` names only unverified \
               webhooks gave; each worker also remembers up to min(`max_repos`, 256) \
               repositories whose objects it already handed over",
        ),
    },
    Key {
        name: "circuit_failure_threshold",
        spec: Spec::count(5, 1, 1_000),
        help: help("consecutive drone failures that open the circuit"),
    },
    Key {
        name: "circuit_open_ms",
        spec: Spec::ms(10_000, 100, DAY_MS),
        help: help("first open period; doubles per failed probe up to `max_poll_interval_ms`"),
    },
    Key {
        name: "lease_ms",
        spec: Spec::Int {
            default: None,
            min: 20,
            max: HOUR_MS,
            unit: Unit::Ms,
            shown: "max(10000, 3 × `tick_ms`)",
            rule: "≥ 2 × `tick_ms`",
        },
        help: help("leader lease; a dead leader is replaced after at most this long"),
    },
    Key {
        name: "instance",
        spec: Spec::text("default", "`[A-Za-z0-9_.-]{1,64}`"),
        help: help(
            "namespaces shared-data keys and the queue (needed when several plugins share a \
               vm_id, as under Istio), and is the `sync_instance` label of the metrics; renaming \
               it orphans the ledger ([runbook](docs/runbook.md#instance-renamed-orphaned-ledger))",
        ),
    },
    Key {
        name: "webhook_secret_env",
        spec: Spec::secret("none", "variable name"),
        help: help(
            "name of an environment variable of the VM holding drone's \
               `DRONE_WEBHOOK_SECRET` (preferred over `webhook_secret`): verify live webhooks, \
               sign re-deliveries",
        ),
    },
    Key {
        name: "webhook_secret",
        spec: Spec::secret("none", ""),
        help: help("drone's `DRONE_WEBHOOK_SECRET` itself (used as is)"),
    },
    Key {
        name: "signature_mode",
        spec: Spec::other(
            "`enforce` with a secret, else `off`",
            "`off`, `monitor`, `enforce`",
        ),
        help: help(
            "`enforce`: forged or unsigned webhooks get 401 and never reach the pipeline; \
               `monitor`: counted only (see Signed webhooks)",
        ),
    },
    Key {
        name: "max_clock_skew_ms",
        spec: Spec::ms(300_000, 1_000, DAY_MS),
        help: help("allowed distance between a signed `Date` and now"),
    },
    Key {
        name: "max_gap_fill",
        spec: Spec::count(20, 0, 1_000).rule("0 = off"),
        help: help(
            "drone numbers builds per repository in sequence: when build n of a repository \
               arrives and the highest number seen is below n-1, \
               look up this many of the missing builds (all their webhooks were lost, or drone \
               never sent one); also the most builds one discovery of a repository's `counter` \
               adds",
        ),
    },
    Key {
        name: "scan_repos",
        spec: Spec::other("none", "up to 100 `\"owner/name\"`"),
        help: help(
            "repositories whose newest builds are listed (`GET \
               /api/repos/{owner}/{name}/builds?page=1`) every `scan_interval_ms`: builds newer \
               than any seen are looked up and delivered, even if none of their webhooks \
               arrived; the first listing only sets the baseline. Discovery (How it works, 5) \
               covers every repository the filter has seen without it; `scan_repos` only adds \
               repositories no webhook has shown yet, for drones whose \
               `/api/builds/incomplete` answers 501 (the OSS build)",
        ),
    },
    Key {
        name: "scan_interval_ms",
        spec: Spec::ms(300_000, 10_000, DAY_MS),
        help: help("interval between listings of each of `scan_repos`"),
    },
    Key {
        name: "drone_server_url",
        spec: Spec::other("none", "`http(s)://host[:port]`"),
        help: help(
            "drone's `DRONE_SERVER_PROTO://DRONE_SERVER_HOST`: re-deliveries carry `system` \
               `{proto, host, link}` built from it (as drone's `provideSystem` does; no drone \
               API returns `system`) when no verified webhook supplied one, e.g. in `off`",
        ),
    },
];

/// README's words for a key or a metric, in native builds only: the shipped module never
/// shows them, and leaving them out keeps about 5 KB of text out of its size budget.
pub(crate) const fn help(text: &'static str) -> &'static str {
    if cfg!(target_arch = "wasm32") {
        ""
    } else {
        text
    }
}

/// The row of `name`.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

fn key_is_secret(name: &str) -> bool {
    key(name).is_some_and(|k| matches!(k.spec, Spec::Secret { .. }))
}

/// The parser read a key its row does not describe (a bug, caught by the tests).
fn undeclared(name: &str) -> ConfigError {
    ConfigError::new(name, "is read differently than `KEYS` declares it (a bug)")
}

/// Typed access to the configuration object; every error names its key.
struct Reader<'m, 'a> {
    map: &'m RawObject<'a>,
}

impl<'a> Reader<'_, 'a> {
    /// The raw value of `key`. A key given twice takes its last value, as with serde_json's
    /// map and Go's decoder (configurations are often built by appending overrides).
    fn get(&self, key: &str) -> Option<&'a str> {
        self.map
            .entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// An error for `key` that quotes the offending value, except for secret keys.
    fn bad(&self, key: &str, why: &str) -> ConfigError {
        match self.get(key) {
            Some(v) if !key_is_secret(key) => {
                ConfigError::new(key, &format!("{why}, got {}", shown(v)))
            }
            Some(v) => ConfigError::new(key, &format!("{why}, got {}", type_name(v))),
            None => ConfigError::new(key, why),
        }
    }

    /// A list of `"owner/name"` repositories (at most 100).
    fn repos(&self, key: &str) -> Result<Vec<(String, String)>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let why = "must be a list of at most 100 \"owner/name\" strings";
        let Ok(items) = Scanner::array_items(v) else {
            return Err(self.bad(key, why));
        };
        if items.len() > 100 {
            return Err(self.bad(key, why));
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let item = decode_string(item);
            let parsed = item
                .as_deref()
                .and_then(|s| s.split_once('/'))
                .filter(|(o, n)| {
                    !o.is_empty()
                        && !n.is_empty()
                        && !n.contains('/')
                        && !o
                            .chars()
                            .chain(n.chars())
                            .any(|c| c.is_whitespace() || c.is_control())
                });
            match parsed {
                Some((o, n)) => out.push((o.to_string(), n.to_string())),
                None => return Err(self.bad(key, why)),
            }
        }
        Ok(out)
    }

    /// An optional non-empty string.
    fn string(&self, key: &str) -> Result<Option<Cow<'a, str>>, ConfigError> {
        match self.get(key).map(decode_string) {
            None => Ok(None),
            Some(Some(s)) if !s.is_empty() => Ok(Some(s)),
            Some(_) => Err(self.bad(key, "must be a non-empty string")),
        }
    }

    /// A required Envoy cluster name.
    fn required_name(&self, key: &str, what: &str) -> Result<Cow<'a, str>, ConfigError> {
        let name = self
            .string(key)?
            .ok_or_else(|| ConfigError::new(key, &format!("is required: {what}")))?;
        if name.chars().any(char::is_control) {
            return Err(self.bad(key, "must not contain control characters"));
        }
        Ok(name)
    }

    /// An optional `:authority` value: it goes into a header, so no whitespace or controls.
    fn authority(&self, key: &str) -> Result<Option<Cow<'a, str>>, ConfigError> {
        let value = self.string(key)?;
        if value
            .as_deref()
            .is_some_and(|a| a.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(self.bad(key, "must not contain spaces or control characters"));
        }
        Ok(value)
    }

    /// The non-empty string `key`, or its row's default when absent.
    fn string_or_default(&self, key: &str) -> Result<Cow<'a, str>, ConfigError> {
        let default = match self::key(key).map(|k| k.spec) {
            Some(Spec::Str { default, .. }) => default,
            _ => return Err(undeclared(key)),
        };
        Ok(self.string(key)?.unwrap_or(Cow::Borrowed(default)))
    }

    /// The integer `key`, within its row's bounds, its row's default when absent.
    fn int<T: TryFrom<u64>>(&self, key: &str) -> Result<T, ConfigError> {
        self.int_with(key, None)
    }

    /// [`Reader::int`] for a key whose default is computed from other keys.
    fn int_or<T: TryFrom<u64>>(&self, key: &str, default: u64) -> Result<T, ConfigError> {
        self.int_with(key, Some(default))
    }

    /// Floats, strings, negative numbers and `null` are refused rather than coerced: a typo
    /// should stop the rollout, not guess.
    fn int_with<T: TryFrom<u64>>(
        &self,
        key: &str,
        computed: Option<u64>,
    ) -> Result<T, ConfigError> {
        let Some(Spec::Int {
            default, min, max, ..
        }) = self::key(key).map(|k| k.spec)
        else {
            return Err(undeclared(key));
        };
        let range = || format!("must be an integer from {min} to {max}");
        let n = match self.get(key) {
            None => computed.or(default).ok_or_else(|| undeclared(key))?,
            Some(v) => match decode_u64(v) {
                Some(n) if (min..=max).contains(&n) => n,
                _ => return Err(self.bad(key, &range())),
            },
        };
        // Every row's bounds fit its field's type (a test parses each bound), so this only
        // guards a wrong row.
        T::try_from(n).map_err(|_| self.bad(key, &range()))
    }

    /// A secret given inline (`value_key`) or, preferably, through the environment variable
    /// named by `env_key`. At most one of the two; `None` when neither. Never quotes either
    /// value: the variable's name is not secret, but a token pasted into `*_env` by mistake
    /// would be.
    fn secret(
        &self,
        value_key: &str,
        env_key: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, ConfigError> {
        match (self.string(value_key)?, self.string(env_key)?) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                value_key,
                &format!("set only one of `{value_key}` and `{env_key}`"),
            )),
            (Some(value), None) => Ok(Some(value.into_owned())),
            (None, Some(name)) => match env(&name) {
                Some(value) if !value.is_empty() => Ok(Some(value)),
                _ => Err(ConfigError::new(
                    env_key,
                    "the environment variable it names is not set or is empty in the Wasm VM \
                     (pass it with vm_config.environment_variables.host_env_keys)",
                )),
            },
            (None, None) => Ok(None),
        }
    }
}

/// A value as JSON (compact), shortened so one bad value cannot flood the log line.
fn shown(v: &str) -> String {
    truncate(&compact(v))
}

/// At most 64 characters, cut on a character boundary.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", s.get(..i).unwrap_or_default()),
        None => s.to_string(),
    }
}

/// The kind of a (valid) JSON value, from its first character.
fn type_name(v: &str) -> &'static str {
    match v.trim_start().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// The kind of `text` when it is one valid JSON value, else `None`.
fn first_value_type(text: &str) -> Option<&'static str> {
    let mut s = Scanner::new(text);
    let v = s.value(0).ok()?;
    s.end().ok()?;
    Some(type_name(v))
}

/// Explains that a value in a cross-field message is the default, not something the user set.
fn defaulted(map: &RawObject<'_>, key: &str) -> &'static str {
    if map.entries.iter().any(|(k, _)| k == key) {
        ""
    } else {
        " (the default)"
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

    const TOKEN: &str = "tok3n-S3CRET-0123456789abcdef";
    const SECRET: &str = "hmac-S3CRET-GMEuUHQfmrMRsseWxi9YlIeBtn9lm6im";

    fn env(name: &str) -> Option<String> {
        match name {
            "DRONE_TOKEN" => Some(TOKEN.to_string()),
            "DRONE_WEBHOOK_SECRET" => Some(SECRET.to_string()),
            "EMPTY" => Some(String::new()),
            "TOKEN_WITH_NEWLINE" => Some(format!("{TOKEN}\n")),
            _ => None,
        }
    }

    fn minimal() -> Value {
        json!({"pipeline_cluster": "pipeline", "drone_cluster": "drone", "drone_token_env": "DRONE_TOKEN"})
    }

    /// `minimal()` with `key` set to `value` (or removed when `value` is `None`).
    fn with(key: &str, value: Option<Value>) -> Value {
        let mut v = minimal();
        let m = v.as_object_mut().unwrap();
        match value {
            Some(x) => m.insert(key.to_string(), x),
            None => m.remove(key),
        };
        v
    }

    fn parse(v: &Value) -> Result<Config, ConfigError> {
        Config::parse(v.to_string().as_bytes(), &env)
    }

    fn err(v: &Value) -> ConfigError {
        let e = parse(v).unwrap_err();
        assert_no_secret(&e);
        e
    }

    fn assert_no_secret(e: &ConfigError) {
        let line = e.to_string();
        for s in [TOKEN, SECRET, "tok3n", "S3CRET"] {
            assert!(!line.contains(s), "secret leaked: {line}");
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&minimal()).unwrap();
        assert_eq!(
            c,
            Config {
                webhook_path: "/hook".into(),
                pipeline_cluster: "pipeline".into(),
                pipeline_authority: "pipeline".into(),
                drone_cluster: "drone".into(),
                drone_authority: "drone".into(),
                drone_token: TOKEN.into(),
                tick_ms: 1000,
                stale_after_ms: 30_000,
                max_poll_interval_ms: 300_000,
                max_tracked_builds: 10_000,
                max_inflight_calls: 4,
                max_drone_calls_per_sec: 10,
                call_timeout_ms: 5000,
                max_body_bytes: 262_144,
                max_body_bytes_in_flight: 4_194_304,
                max_build_age_ms: 90_000_000,
                max_repos: 1024,
                circuit_failure_threshold: 5,
                circuit_open_ms: 10_000,
                lease_ms: 10_000,
                instance: "default".into(),
                webhook_secret: None,
                signature_mode: SignatureMode::Off,
                max_clock_skew_ms: 300_000,
                max_gap_fill: 20,
                scan_repos: vec![],
                scan_interval_ms: 300_000,
                drone_server_url: None,
            }
        );
    }

    #[test]
    fn every_key_can_be_set() {
        let v = json!({
            "webhook_path": "/drone/hook/",
            "pipeline_cluster": "p",
            "pipeline_authority": "pipeline.example.com:8080",
            "drone_cluster": "d",
            "drone_authority": "drone.example.com",
            "drone_token": TOKEN,
            "tick_ms": 500,
            "stale_after_ms": 5000,
            "max_poll_interval_ms": 5000,
            "max_tracked_builds": 1,
            "max_inflight_calls": 256,
            "max_drone_calls_per_sec": 10000,
            "call_timeout_ms": 100,
            "max_body_bytes": 16_777_216,
            "max_build_age_ms": 60_000,
            "max_repos": 100_000,
            "circuit_failure_threshold": 1000,
            "circuit_open_ms": 100,
            "lease_ms": 1000,
            "instance": "A-z_0.9",
            "webhook_secret_env": "DRONE_WEBHOOK_SECRET",
            "signature_mode": "monitor",
            "max_clock_skew_ms": 1000,
            "drone_server_url": "https://Drone.Example.com/"
        });
        let c = parse(&v).unwrap();
        assert_eq!(c.webhook_path, "/drone/hook/");
        assert_eq!(c.pipeline_authority, "pipeline.example.com:8080");
        assert_eq!(c.drone_authority, "drone.example.com");
        assert_eq!(c.drone_token, TOKEN);
        assert_eq!(
            (c.tick_ms, c.stale_after_ms, c.max_poll_interval_ms),
            (500, 5000, 5000)
        );
        assert_eq!(
            (c.max_tracked_builds, c.max_inflight_calls, c.max_repos),
            (1, 256, 100_000)
        );
        assert_eq!(
            (
                c.max_drone_calls_per_sec,
                c.call_timeout_ms,
                c.max_body_bytes
            ),
            (10_000, 100, 16_777_216)
        );
        assert_eq!(
            (
                c.max_build_age_ms,
                c.circuit_failure_threshold,
                c.circuit_open_ms
            ),
            (60_000, 1000, 100)
        );
        assert_eq!((c.lease_ms, c.max_clock_skew_ms), (1000, 1000));
        assert_eq!(c.instance, "A-z_0.9");
        assert_eq!(c.webhook_secret.as_deref(), Some(SECRET));
        assert_eq!(c.signature_mode, SignatureMode::Monitor);
        assert_eq!(
            c.drone_server_url.as_deref(),
            Some("https://drone.example.com")
        );
    }

    #[test]
    fn drone_server_url_is_a_proto_and_a_host() {
        for bad in [
            "drone.example.com",
            "ftp://drone.example.com",
            "https://",
            "https://drone.example.com/api",
            "https://drone.example.com?x",
            "https://dro ne",
            "https://dr\"one",
        ] {
            let e = err(&with("drone_server_url", Some(json!(bad))));
            assert_eq!(e.key, "drone_server_url", "{bad}");
        }
        let ok = parse(&with(
            "drone_server_url",
            Some(json!("http://localhost:8080")),
        ))
        .unwrap();
        assert_eq!(
            ok.drone_server_url.as_deref(),
            Some("http://localhost:8080")
        );
    }

    #[test]
    fn lease_default_follows_tick() {
        assert_eq!(
            parse(&with("tick_ms", Some(json!(10)))).unwrap().lease_ms,
            10_000
        );
        assert_eq!(
            parse(&with("tick_ms", Some(json!(3334)))).unwrap().lease_ms,
            10_002
        );
        assert_eq!(
            parse(&with("tick_ms", Some(json!(60_000))))
                .unwrap()
                .lease_ms,
            180_000
        );
    }

    #[test]
    fn signature_mode_defaults_and_rules() {
        let mut v = with("webhook_secret", Some(json!(SECRET)));
        let c = parse(&v).unwrap();
        assert_eq!(c.signature_mode, SignatureMode::Enforce);
        assert_eq!(c.webhook_secret.as_deref(), Some(SECRET));
        v["signature_mode"] = json!("off");
        assert_eq!(parse(&v).unwrap().signature_mode, SignatureMode::Off);
        v["signature_mode"] = json!("enforce");
        assert_eq!(parse(&v).unwrap().signature_mode, SignatureMode::Enforce);
        for mode in ["monitor", "enforce"] {
            let e = err(&with("signature_mode", Some(json!(mode))));
            assert_eq!(e.key, "signature_mode");
            assert!(e.reason.contains("webhook_secret"), "{e}");
        }
        assert_eq!(
            parse(&with("signature_mode", Some(json!("off"))))
                .unwrap()
                .signature_mode,
            SignatureMode::Off
        );
        for bad in [
            json!("Enforce"),
            json!(""),
            json!("on"),
            json!(true),
            json!(null),
        ] {
            assert_eq!(
                err(&with("signature_mode", Some(bad))).key,
                "signature_mode"
            );
        }
    }

    /// Every numeric key: its bounds are accepted, one past them and every wrong type refused
    /// with a message naming the key, the range and the value.
    #[test]
    fn numeric_ranges() {
        let ranges: Vec<(&str, u64, u64)> = KEYS
            .iter()
            .filter_map(|k| match k.spec {
                Spec::Int { min, max, .. } => Some((k.name, min, max)),
                _ => None,
            })
            .collect();
        assert_eq!(ranges.len(), 17);
        // Keep cross-field rules out of the way of single-key bounds.
        let base = |key: &str, n: u64| {
            let mut v = with(key, Some(json!(n)));
            if key == "stale_after_ms" {
                v["max_poll_interval_ms"] = json!(86_400_000u64);
            }
            if key == "max_poll_interval_ms" {
                v["stale_after_ms"] = json!(1_000);
            }
            if key == "max_body_bytes_in_flight" {
                v["max_body_bytes"] = json!(1_024);
            }
            if key == "lease_ms" || key == "tick_ms" {
                v["tick_ms"] = json!(if key == "tick_ms" { n } else { 10 });
                if key == "tick_ms" {
                    v["lease_ms"] = json!(3_600_000);
                }
            }
            v
        };
        for (key, min, max) in ranges {
            assert!(parse(&base(key, min)).is_ok(), "{key}={min}");
            assert!(parse(&base(key, max)).is_ok(), "{key}={max}");
            let range = format!("must be an integer from {min} to {max}");
            let below = match min.checked_sub(1) {
                Some(n) => json!(n),
                None => json!(-1),
            };
            for bad in [
                below,
                json!(max + 1),
                json!(-1),
                json!(1.5),
                json!(100.0),
                json!(1e300),
                json!(u64::MAX),
                json!("abc"),
                json!("100"),
                json!(null),
                json!(true),
                json!([100]),
                json!({"ms": 100}),
            ] {
                let mut v = base(key, min);
                v[key] = bad.clone();
                let e = err(&v);
                assert_eq!(e.key, key, "{bad}");
                assert!(e.reason.starts_with(&range), "{e}");
                assert!(e.reason.ends_with(&format!("got {bad}")), "{e}");
            }
        }
        let e = err(&with("tick_ms", Some(json!("abc"))));
        assert_eq!(
            e.to_string(),
            "status-sync: invalid configuration: key `tick_ms`: must be an integer from 10 to 60000, got \"abc\""
        );
    }

    /// The parser reads every row of `KEYS`, under its own name: a value no key accepts is
    /// refused naming that key (a row the parser never reads would be accepted silently).
    #[test]
    fn every_declared_key_is_read() {
        for k in KEYS {
            let e = err(&with(k.name, Some(json!({ "x": 1 }))));
            assert_eq!(e.key, k.name, "{e}");
            assert_ne!(e, undeclared(k.name));
        }
        // Defaults come from the rows.
        let c = parse(&minimal()).unwrap();
        let default = |name: &str| match key(name).unwrap().spec {
            Spec::Int {
                default: Some(d), ..
            } => d,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(c.tick_ms, default("tick_ms"));
        assert_eq!(c.max_body_bytes as u64, default("max_body_bytes"));
        assert_eq!(
            c.circuit_failure_threshold as u64,
            default("circuit_failure_threshold")
        );
        assert_eq!(c.webhook_path, "/hook");
        assert_eq!(c.instance, "default");
        // The computed default is what README says it is.
        assert_eq!(c.lease_ms, DEFAULT_LEASE_MIN_MS.max(3 * c.tick_ms));
        let Spec::Int { shown, .. } = key("lease_ms").unwrap().spec else {
            panic!("lease_ms")
        };
        assert!(shown.contains(&DEFAULT_LEASE_MIN_MS.to_string()), "{shown}");
        for name in [
            "drone_token",
            "drone_token_env",
            "webhook_secret",
            "webhook_secret_env",
        ] {
            assert!(key_is_secret(name), "{name}");
        }
        assert!(!key_is_secret("tick_ms") && !key_is_secret("nope"));
    }

    #[test]
    fn cross_field_rules() {
        let mut v = with("stale_after_ms", Some(json!(60_000)));
        v["max_poll_interval_ms"] = json!(59_999);
        let e = err(&v);
        assert_eq!(e.key, "max_poll_interval_ms");
        assert!(
            e.reason.contains("60000") && e.reason.contains("59999"),
            "{e}"
        );
        v["max_poll_interval_ms"] = json!(60_000);
        assert!(parse(&v).is_ok());
        // The default poll cap is below a large stale_after_ms: say it is the default.
        let e = err(&with("stale_after_ms", Some(json!(600_000))));
        assert_eq!(e.key, "max_poll_interval_ms");
        assert!(e.reason.contains("(the default)"), "{e}");

        let mut v = with("tick_ms", Some(json!(5_000)));
        v["lease_ms"] = json!(9_999);
        let e = err(&v);
        assert_eq!(e.key, "lease_ms");
        assert!(e.reason.contains("10000"), "{e}");
        v["lease_ms"] = json!(10_000);
        assert!(parse(&v).is_ok());

        // A worker must be able to hold one body of `max_body_bytes`; by default it holds
        // 4 MiB, or one such body when that is larger.
        let mut v = with("max_body_bytes", Some(json!(65_536)));
        v["max_body_bytes_in_flight"] = json!(65_535);
        let e = err(&v);
        assert_eq!(e.key, "max_body_bytes_in_flight");
        assert!(
            e.reason.contains("65536") && e.reason.contains("65535"),
            "{e}"
        );
        v["max_body_bytes_in_flight"] = json!(65_536);
        assert_eq!(parse(&v).unwrap().max_body_bytes_in_flight, 65_536);
        let big = parse(&with("max_body_bytes", Some(json!(16_777_216)))).unwrap();
        assert_eq!(big.max_body_bytes_in_flight, 16_777_216);
    }

    #[test]
    fn scan_repos() {
        let c = parse(&with(
            "scan_repos",
            Some(json!(["octocat/hello-world", "a/b"])),
        ))
        .unwrap();
        assert_eq!(
            c.scan_repos,
            vec![
                ("octocat".to_string(), "hello-world".to_string()),
                ("a".to_string(), "b".to_string())
            ]
        );
        for bad in [
            json!("a/b"),
            json!(["a"]),
            json!(["a/"]),
            json!(["/b"]),
            json!(["a/b/c"]),
            json!([1]),
            json!(["a b/c"]),
        ] {
            assert_eq!(err(&with("scan_repos", Some(bad))).key, "scan_repos");
        }
        let many: Vec<String> = (0..101).map(|i| format!("o/r{i}")).collect();
        assert_eq!(
            err(&with("scan_repos", Some(json!(many)))).key,
            "scan_repos"
        );
        assert_eq!(
            err(&with("scan_interval_ms", Some(json!(5)))).key,
            "scan_interval_ms"
        );
    }

    #[test]
    fn string_keys() {
        for key in ["pipeline_cluster", "drone_cluster"] {
            let e = err(&with(key, None));
            assert_eq!(e.key, key);
            assert!(e.reason.starts_with("is required"), "{e}");
            for bad in [
                json!(""),
                json!(1),
                json!(null),
                json!(["x"]),
                json!("a\nb"),
            ] {
                assert_eq!(err(&with(key, Some(bad))).key, key);
            }
        }
        for key in [
            "pipeline_authority",
            "drone_authority",
            "webhook_path",
            "instance",
        ] {
            for bad in [
                json!(""),
                json!(1),
                json!(null),
                json!(false),
                json!("a b"),
                json!("/a\tb"),
            ] {
                let e = err(&with(key, Some(bad.clone())));
                assert_eq!(e.key, key, "{bad}");
            }
        }
        let e = err(&with("webhook_path", Some(json!("hook"))));
        assert_eq!(e.reason, "must start with `/`, got \"hook\"");
        assert_eq!(
            err(&with("webhook_path", Some(json!("/a b")))).key,
            "webhook_path"
        );
        assert!(parse(&with("webhook_path", Some(json!("/")))).is_ok());
        assert!(parse(&with("webhook_path", Some(json!("/a?token=x")))).is_ok());

        for bad in ["a/b", "a b", "ü", "a:b", &"x".repeat(65)] {
            assert_eq!(
                err(&with("instance", Some(json!(bad)))).key,
                "instance",
                "{bad}"
            );
        }
        assert_eq!(
            parse(&with("instance", Some(json!("x".repeat(64)))))
                .unwrap()
                .instance
                .len(),
            64
        );
    }

    #[test]
    fn token_sources() {
        let inline = with("drone_token_env", None);
        let mut inline = inline;
        inline["drone_token"] = json!(TOKEN);
        assert_eq!(parse(&inline).unwrap().drone_token, TOKEN);

        let e = err(&with("drone_token_env", None));
        assert_eq!(e.key, "drone_token");
        assert!(e.reason.contains("drone_token_env"), "{e}");

        let e = err(&with("drone_token", Some(json!(TOKEN))));
        assert_eq!(e.key, "drone_token");
        assert!(e.reason.contains("only one"), "{e}");

        for name in ["MISSING", "EMPTY"] {
            let e = err(&with("drone_token_env", Some(json!(name))));
            assert_eq!(e.key, "drone_token_env");
            assert!(e.reason.contains("not set or is empty"), "{e}");
        }
        let e = err(&with("drone_token_env", Some(json!("TOKEN_WITH_NEWLINE"))));
        assert_eq!(e.key, "drone_token_env");
        assert!(e.reason.contains("visible ASCII"), "{e}");
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

    #[test]
    fn secret_sources() {
        let c = parse(&with(
            "webhook_secret_env",
            Some(json!("DRONE_WEBHOOK_SECRET")),
        ))
        .unwrap();
        assert_eq!(c.webhook_secret.as_deref(), Some(SECRET));
        assert_eq!(c.signature_mode, SignatureMode::Enforce);
        let mut v = with("webhook_secret_env", Some(json!("DRONE_WEBHOOK_SECRET")));
        v["webhook_secret"] = json!(SECRET);
        let e = err(&v);
        assert_eq!(e.key, "webhook_secret");
        for name in ["MISSING", "EMPTY"] {
            assert_eq!(
                err(&with("webhook_secret_env", Some(json!(name)))).key,
                "webhook_secret_env"
            );
        }
        // Drone uses the raw bytes as the HMAC key: any non-empty string is kept as is.
        let c = parse(&with("webhook_secret", Some(json!(" a b\n")))).unwrap();
        assert_eq!(c.webhook_secret.as_deref(), Some(" a b\n"));
        assert_eq!(
            err(&with("webhook_secret", Some(json!("")))).key,
            "webhook_secret"
        );
    }

    /// No error message ever contains the token or the webhook secret, whatever went wrong.
    #[test]
    fn secrets_never_in_messages() {
        let leaky: Vec<Value> = vec![
            // Wrong-looking values in the secret keys themselves.
            {
                let mut v = with("drone_token_env", None);
                v["drone_token"] = json!(format!("{TOKEN} with space"));
                v
            },
            {
                let mut v = with("drone_token_env", None);
                v["drone_token"] = json!(format!("{TOKEN}\r\nX-Injected: 1"));
                v
            },
            with("drone_token", Some(json!(TOKEN))),
            with("drone_token_env", Some(json!(TOKEN))),
            with("drone_token_env", Some(json!([TOKEN]))),
            with("drone_token_env", Some(json!({ "v": TOKEN }))),
            with("webhook_secret_env", Some(json!(SECRET))),
            with("webhook_secret", Some(json!([SECRET]))),
            with("webhook_secret", Some(json!(7))),
            {
                let mut v = with("webhook_secret", Some(json!(SECRET)));
                v["webhook_secret_env"] = json!("DRONE_WEBHOOK_SECRET");
                v
            },
            // Errors elsewhere while secrets are set.
            {
                let mut v = with("webhook_secret", Some(json!(SECRET)));
                v["tick_ms"] = json!("fast");
                v["signature_mode"] = json!("strict");
                v
            },
            {
                let mut v = with("drone_token_env", None);
                v["drone_token"] = json!(TOKEN);
                v["lease_ms"] = json!(1);
                v
            },
            {
                let mut v = with("drone_token_env", None);
                v["drone_token"] = json!(TOKEN);
                v["unknown"] = json!(TOKEN);
                v
            },
        ];
        for v in &leaky {
            err(v);
        }
        // Broken JSON around a secret.
        for text in [
            format!(r#"{{"drone_token":"{TOKEN}""#),
            format!(r#"{{"drone_token":"{TOKEN}",}}"#),
            format!(r#"{{"drone_token":{TOKEN}}}"#),
            format!(r#"["{TOKEN}"]"#),
            format!(r#""{TOKEN}""#),
        ] {
            let e = Config::parse(text.as_bytes(), &env).unwrap_err();
            assert_eq!(e.key, "");
            assert_no_secret(&e);
        }
    }

    #[test]
    fn a_key_given_twice_takes_its_last_value() {
        let text = minimal().to_string();
        let text = format!(
            r#"{{"tick_ms":100,{},"tick_ms":200}}"#,
            text.trim_start_matches('{').trim_end_matches('}')
        );
        let c = Config::parse(text.as_bytes(), &env).unwrap();
        assert_eq!(c.tick_ms, 200);
    }

    #[test]
    fn top_level_errors() {
        let e = Config::parse(b"{}", &env).unwrap_err();
        assert_eq!(e.key, "pipeline_cluster");
        assert!(e.to_string().contains("`pipeline_cluster`"), "{e}");

        for (text, want) in [
            (b"".as_slice(), "empty"),
            (b"  \n".as_slice(), "empty"),
            (b"{".as_slice(), "not valid JSON"),
            (b"pipeline_cluster: p".as_slice(), "not valid JSON"),
            (b"{} {}".as_slice(), "not valid JSON"),
            (b"[]".as_slice(), "must be a JSON object, got an array"),
            (b"null".as_slice(), "must be a JSON object, got null"),
            (b"\"x\"".as_slice(), "must be a JSON object, got a string"),
            (b"42".as_slice(), "must be a JSON object, got a number"),
            (&[0xff, b'{', b'}'], "not UTF-8"),
        ] {
            let e = Config::parse(text, &env).unwrap_err();
            assert_eq!(e.key, "", "{text:?}");
            assert!(e.reason.contains(want), "{e}");
            assert!(
                e.to_string()
                    .starts_with("status-sync: invalid configuration: "),
                "{e}"
            );
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(Config::parse(deep.as_bytes(), &env).unwrap_err().key, "");
    }

    /// What an operator reads when a value has the wrong kind: a secret's value is never
    /// quoted, only its kind; the top level says whether it was JSON at all; `scan_repos`
    /// takes up to 100 names.
    #[test]
    fn errors_name_the_kind_of_value_and_the_list_limit() {
        for (value, kind) in [(json!(true), "a boolean"), (json!({"a": 1}), "an object")] {
            let e = err(&with("drone_token", Some(value)));
            assert!(e.reason.ends_with(&format!("got {kind}")), "{e}");
        }
        let e = Config::parse(b"true", &env).unwrap_err();
        assert!(
            e.reason.contains("must be a JSON object, got a boolean"),
            "{e}"
        );
        // A JSON object whose key does not decode is an object, but not a configuration.
        let e = Config::parse(br#"{"\ud800":1}"#, &env).unwrap_err();
        assert!(e.reason.contains("not valid JSON"), "{e}");
        let names = |n: usize| json!((0..n).map(|i| format!("o/r{i}")).collect::<Vec<_>>());
        assert!(parse(&with("scan_repos", Some(names(100)))).is_ok());
        assert_eq!(err(&with("scan_repos", Some(names(101)))).key, "scan_repos");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(&with("tick", Some(json!(100))));
        assert_eq!(e.key, "tick");
        assert!(e.reason.starts_with("unknown key"), "{e}");
        assert!(e.reason.contains("tick_ms"), "{e}");
        let long = "k".repeat(1000);
        let e = err(&with(&long, Some(json!(1))));
        assert!(e.key.len() < 100, "{}", e.key);
        // Unknown keys are reported before missing required ones.
        let e = Config::parse(br#"{"Pipeline_Cluster":"p"}"#, &env).unwrap_err();
        assert_eq!(e.key, "Pipeline_Cluster");
    }

    #[test]
    fn long_values_are_shortened() {
        let e = err(&with("instance", Some(json!("é".repeat(500)))));
        assert!(e.reason.chars().count() < 150, "{e}");
        assert!(e.reason.ends_with("..."), "{e}");
    }
}
