//! [`KEYS`]: every configuration key declared once, as a row (its name, default, range and
//! help). The parser reads integer keys from their rows; docs/configuration.md's table is generated from them.

const MIN_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// `max_body_bytes_in_flight` defaults to the larger of this (4 MiB) and `max_body_bytes`.
pub(super) const DEFAULT_BODY_BYTES_IN_FLIGHT: u64 = 4 * 1_048_576;

/// `lease_ms` defaults to the larger of this and three ticks.
pub(super) const DEFAULT_LEASE_MIN_MS: u64 = 10_000;

/// One configuration key, declared once in [`KEYS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub spec: Spec,
    /// What it does, as docs/configuration.md says it (empty in the wasm module: see [`help`]).
    pub help: &'static str,
}

/// A key's values: what the parser applies and docs/configuration.md shows. The table's words
/// (`shown`, `rule`, `range`, and the defaults the parser does not apply) are empty in the wasm
/// module, like [`Key::help`] (see [`help`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spec {
    /// An integer in `min..=max`, `default` when absent (`None`: computed, see `shown`).
    Int {
        default: Option<u64>,
        min: u64,
        max: u64,
        unit: Unit,
        /// The table's default when computed from other keys, else empty.
        shown: &'static str,
        /// A rule across keys, or what a special value means (the table's range), else empty.
        rule: &'static str,
    },
    /// A non-empty string, `default` when absent; `range`: the table's words for its checks.
    Str {
        default: &'static str,
        range: &'static str,
    },
    /// Checked by its own code in [`Config::parse`]; the table's default and range.
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
    /// A string, `default` when absent; `range`: the table's words for its checks.
    const fn text(default: &'static str, range: &'static str) -> Spec {
        Spec::Str {
            default,
            range: help(range),
        }
    }

    /// Checked by its own code; the table's default and range.
    const fn other(default: &'static str, range: &'static str) -> Spec {
        Spec::Other {
            default: help(default),
            range: help(range),
        }
    }

    /// A secret, or the name of a variable holding one; the table's default and range.
    const fn secret(default: &'static str, range: &'static str) -> Spec {
        Spec::Secret {
            default: help(default),
            range: help(range),
        }
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

    /// With a rule across keys, or the meaning of a special value (the table's range).
    const fn rule(mut self, rule: &'static str) -> Spec {
        if let Spec::Int { rule: r, .. } = &mut self {
            *r = help(rule);
        }
        self
    }
}

/// What an integer counts, for the docs (`30000` ms reads `30 s`).
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
            shown: help("max(4 MiB, `max_body_bytes`)"),
            rule: help("≥ `max_body_bytes`"),
        },
        help: help(
            "body bytes one worker holds for all requests at once: its copies of webhook \
               bodies, and in `enforce` the bodies Envoy buffers while their digest is checked. \
               A webhook that does not fit passes through unobserved and is counted \
               (`webhooks_over_budget`); in `enforce` a held body that does not fit is answered \
               503, never let through unchecked. With a secret, requests whose signature does \
               not verify share at most half of it, so they cannot crowd out genuine webhooks",
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
            shown: help("max(10000, 3 × `tick_ms`)"),
            rule: help("≥ 2 × `tick_ms`"),
        },
        help: help("leader lease; a dead leader is replaced after at most this long"),
    },
    Key {
        name: "instance",
        spec: Spec::text("default", "`[A-Za-z0-9_.-]{1,64}`"),
        help: help(
            "namespaces shared-data keys and the queue (needed when several plugins share a \
               vm_id, as under Istio), and is the `sync_instance` label of the metrics; renaming \
               it orphans the ledger ([runbook](runbook.md#instance-renamed-orphaned-ledger))",
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
    Key {
        name: "etcd_cluster",
        spec: Spec::other("none (embedded mode)", "cluster name, or empty"),
        help: help(
            "cluster mode (several replicas of the pipeline, each with its sidecar): the Envoy \
               cluster of etcd v3's client URLs (JSON gateway). The sidecars elect one \
               reconciler in etcd and record there what their replica accepted; absent or \
               empty: the embedded single-sidecar mode. Needs the webhook secret. See How it \
               works, cluster mode",
        ),
    },
    Key {
        name: "etcd_authority",
        spec: Spec::other("`etcd`", ""),
        help: help("`:authority` of the calls to etcd"),
    },
    Key {
        name: "etcd_prefix",
        spec: Spec::other("`status-sync/<instance>/`", "up to 128 visible ASCII"),
        help: help(
            "prefix of every etcd key status-sync writes: the election key `<prefix>leader` \
               and the delivery records `<prefix>d/…`. The records' lease is derived, not \
               configured: its TTL is 2 × `max_build_age_ms` and each sidecar takes a new one \
               every `max_build_age_ms`, so a record outlives every build it can settle and \
               expires on its own",
        ),
    },
    Key {
        name: "etcd_lease_ttl_ms",
        spec: Spec::Int {
            default: None,
            min: 2_000,
            max: 300_000,
            unit: Unit::Ms,
            shown: help("max(10000, 3 × `tick_ms`)"),
            rule: help("≥ 3 × `tick_ms`"),
        },
        help: help(
            "TTL of the cluster leader's etcd lease (whole seconds, rounded up): another \
               sidecar takes over within it and a sixth when the leader's Envoy dies; renewed every \
               third of it. Make it at least 5 × etcd's `--election-timeout` (1 s by default), so \
               that etcd electing a new raft leader, which answers nothing meanwhile, never \
               outlasts it (the filter cannot see etcd's flag)",
        ),
    },
];

/// The docs' words for a key or a metric, in native builds only: the shipped module never
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

pub(super) fn key_is_secret(name: &str) -> bool {
    key(name).is_some_and(|k| matches!(k.spec, Spec::Secret { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::reader::undeclared;
    use crate::core::config::tests::*;
    use serde_json::json;

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
        // The computed default is what docs/configuration.md says it is.
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
        assert_eq!(ranges.len(), 18);
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
            if key == "lease_ms" || key == "tick_ms" || key == "etcd_lease_ttl_ms" {
                v["tick_ms"] = json!(if key == "tick_ms" { n } else { 10 });
                if key == "tick_ms" {
                    v["lease_ms"] = json!(3_600_000);
                    v["etcd_lease_ttl_ms"] = json!(300_000);
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
}
