//! Typed access to the configuration object, every error naming its key; and the words the
//! messages use for a value (shortened, never a secret's text).

use super::keys::{key, key_is_secret, Spec};
use super::ConfigError;
use crate::core::json::{compact, decode_string, decode_u64, Scanner};
use crate::core::object::RawObject;
use std::borrow::Cow;

/// The parser read a key its row does not describe (a bug, caught by the tests).
pub(super) fn undeclared(name: &str) -> ConfigError {
    ConfigError::new(name, "is read differently than `KEYS` declares it (a bug)")
}

/// Typed access to the configuration object; every error names its key.
pub(super) struct Reader<'m, 'a> {
    pub(super) map: &'m RawObject<'a>,
}

impl<'a> Reader<'_, 'a> {
    /// The raw value of `key`. A key given twice takes its last value, as with serde_json's
    /// map and Go's decoder (configurations are often built by appending overrides).
    pub(super) fn get(&self, key: &str) -> Option<&'a str> {
        self.map
            .entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// An error for `key` that quotes the offending value, except for secret keys.
    pub(super) fn bad(&self, key: &str, why: &str) -> ConfigError {
        match self.get(key) {
            Some(v) if !key_is_secret(key) => {
                ConfigError::new(key, &format!("{why}, got {}", shown(v)))
            }
            Some(v) => ConfigError::new(key, &format!("{why}, got {}", type_name(v))),
            None => ConfigError::new(key, why),
        }
    }

    /// A list of `"owner/name"` repositories (at most 100).
    pub(super) fn repos(&self, key: &str) -> Result<Vec<(String, String)>, ConfigError> {
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
    pub(super) fn string(&self, key: &str) -> Result<Option<Cow<'a, str>>, ConfigError> {
        match self.get(key).map(decode_string) {
            None => Ok(None),
            Some(Some(s)) if !s.is_empty() => Ok(Some(s)),
            Some(_) => Err(self.bad(key, "must be a non-empty string")),
        }
    }

    /// A required Envoy cluster name.
    pub(super) fn required_name(&self, key: &str, what: &str) -> Result<Cow<'a, str>, ConfigError> {
        let name = self
            .string(key)?
            .ok_or_else(|| ConfigError::new(key, &format!("is required: {what}")))?;
        if name.chars().any(char::is_control) {
            return Err(self.bad(key, "must not contain control characters"));
        }
        Ok(name)
    }

    /// An optional `:authority` value: it goes into a header, so no whitespace or controls.
    pub(super) fn authority(&self, key: &str) -> Result<Option<Cow<'a, str>>, ConfigError> {
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
    pub(super) fn string_or_default(&self, key: &str) -> Result<Cow<'a, str>, ConfigError> {
        let default = match self::key(key).map(|k| k.spec) {
            Some(Spec::Str { default, .. }) => default,
            _ => return Err(undeclared(key)),
        };
        Ok(self.string(key)?.unwrap_or(Cow::Borrowed(default)))
    }

    /// The integer `key`, within its row's bounds, its row's default when absent.
    pub(super) fn int<T: TryFrom<u64>>(&self, key: &str) -> Result<T, ConfigError> {
        self.int_with(key, None)
    }

    /// [`Reader::int`] for a key whose default is computed from other keys.
    pub(super) fn int_or<T: TryFrom<u64>>(
        &self,
        key: &str,
        default: u64,
    ) -> Result<T, ConfigError> {
        self.int_with(key, Some(default))
    }

    /// Floats, strings, negative numbers and `null` are refused rather than coerced: a typo
    /// should stop the rollout, not guess.
    pub(super) fn int_with<T: TryFrom<u64>>(
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
    pub(super) fn secret(
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
pub(super) fn shown(v: &str) -> String {
    truncate(&compact(v))
}

/// At most 64 characters, cut on a character boundary.
pub(super) fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", s.get(..i).unwrap_or_default()),
        None => s.to_string(),
    }
}

/// The kind of a (valid) JSON value, from its first character.
pub(super) fn type_name(v: &str) -> &'static str {
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
pub(super) fn first_value_type(text: &str) -> Option<&'static str> {
    let mut s = Scanner::new(text);
    let v = s.value(0).ok()?;
    s.end().ok()?;
    Some(type_name(v))
}

/// Explains that a value in a cross-field message is the default, not something the user set.
pub(super) fn defaulted(map: &RawObject<'_>, key: &str) -> &'static str {
    if map.entries.iter().any(|(k, _)| k == key) {
        ""
    } else {
        " (the default)"
    }
}

#[cfg(test)]
mod tests {
    use crate::core::config::tests::*;
    use crate::core::config::*;
    use serde_json::{json, Value};

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
    fn long_values_are_shortened() {
        let e = err(&with("instance", Some(json!("é".repeat(500)))));
        assert!(e.reason.chars().count() < 150, "{e}");
        assert!(e.reason.ends_with("..."), "{e}");
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
}
