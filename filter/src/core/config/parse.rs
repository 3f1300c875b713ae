//! [`Config::parse`]: each key read through its row and checked on its own, then the rules
//! across keys, in a fixed order so the same bad configuration always gives the same message.

use super::keys::{key, DEFAULT_BODY_BYTES_IN_FLIGHT, DEFAULT_LEASE_MIN_MS, KEYS};
use super::reader::{defaulted, first_value_type, truncate, Reader};
use super::{Config, ConfigError, SignatureMode};
use crate::core::json::decode_string;
use crate::core::object::RawObject;

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

        let etcd_cluster = match r.get("etcd_cluster").map(decode_string) {
            None => None,
            Some(Some(s)) if s.is_empty() => None,
            Some(Some(s)) if !s.chars().any(char::is_control) => Some(s.to_string()),
            Some(_) => {
                return Err(r.bad(
                    "etcd_cluster",
                    "must be a string (an Envoy cluster name, or empty for the embedded mode)",
                ))
            }
        };
        if etcd_cluster.is_some() && webhook_secret.is_none() {
            return Err(ConfigError::new(
                "etcd_cluster",
                "cluster mode needs `webhook_secret_env` or `webhook_secret`: the records of what \
                 each replica took are tagged with it, and a sidecar that follows records nothing \
                 else",
            ));
        }
        let etcd_authority = r
            .authority("etcd_authority")?
            .map_or_else(|| "etcd".to_string(), |a| a.to_string());
        let etcd_prefix = match r.string("etcd_prefix")? {
            None => format!("status-sync/{instance}/"),
            Some(p) if p.len() <= 128 && p.bytes().all(|b| b.is_ascii_graphic()) => p.to_string(),
            Some(_) => {
                return Err(r.bad("etcd_prefix", "must be 1 to 128 visible ASCII characters"))
            }
        };

        let etcd_lease_ttl_ms = r.int_or("etcd_lease_ttl_ms", 10_000u64.max(3 * tick_ms))?;

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
            etcd_cluster,
            etcd_authority,
            etcd_prefix,
            etcd_lease_ttl_ms,
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

        if cfg.etcd_lease_ttl_ms < 3 * cfg.tick_ms {
            return Err(ConfigError::new(
                "etcd_lease_ttl_ms",
                &format!(
                    "must be at least 3 * tick_ms ({}), got {}",
                    3 * cfg.tick_ms,
                    cfg.etcd_lease_ttl_ms
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

#[cfg(test)]
mod tests {
    use crate::core::config::tests::*;
    use crate::core::config::*;
    use serde_json::json;

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
                etcd_cluster: None,
                etcd_authority: "etcd".into(),
                etcd_prefix: "status-sync/default/".into(),
                etcd_lease_ttl_ms: 10_000,
            }
        );
    }

    #[test]
    fn cluster_mode_is_off_unless_etcd_cluster_names_a_cluster_and_its_prefix_follows_instance() {
        let c = parse(&minimal()).unwrap();
        assert_eq!(c.etcd_cluster, None);
        let c = parse(&with("etcd_cluster", Some(json!("")))).unwrap();
        assert_eq!(c.etcd_cluster, None, "empty is the embedded mode");
        let mut v = with("etcd_cluster", Some(json!("etcd")));
        assert_eq!(
            err(&v).key,
            "etcd_cluster",
            "cluster mode needs the webhook secret"
        );
        v["webhook_secret"] = json!("s3cret");
        v["instance"] = json!("ci");
        let c = parse(&v).unwrap();
        assert_eq!(c.etcd_cluster.as_deref(), Some("etcd"));
        assert_eq!(c.etcd_prefix, "status-sync/ci/");
        assert_eq!(c.etcd_authority, "etcd");
        v["etcd_prefix"] = json!("a/b/");
        v["etcd_authority"] = json!("etcd.example:2379");
        v["etcd_lease_ttl_ms"] = json!(4000);
        let c = parse(&v).unwrap();
        assert_eq!(
            (
                c.etcd_prefix.as_str(),
                c.etcd_authority.as_str(),
                c.etcd_lease_ttl_ms
            ),
            ("a/b/", "etcd.example:2379", 4000)
        );
        for (key, bad) in [
            ("etcd_cluster", json!(3)),
            // A control character in the cluster name would reach Envoy's logs and the
            // `dispatch_http_call` as is (cargo-mutants: the guard → true went unseen).
            ("etcd_cluster", json!("etcd\n")),
            ("etcd_prefix", json!("a b")),
            ("etcd_authority", json!("a b")),
        ] {
            let mut w = v.clone();
            w[key] = bad;
            assert_eq!(err(&w).key, key);
        }
        let mut w = v.clone();
        w["tick_ms"] = json!(2000);
        w["etcd_lease_ttl_ms"] = json!(5000);
        assert_eq!(err(&w).key, "etcd_lease_ttl_ms");
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
}
