//! The filter's previous webhook parser, built on serde_json raw values: several passes and an
//! allocation per key, but little code of our own. Kept, with its own serde-based object type,
//! as the oracle that `status_sync::core::webhook::parse_webhook` is tested and fuzzed against.
//! Nothing in the filter calls it: it lives here so the shipped module depends on neither serde
//! nor serde_json.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use status_sync::core::limits;
use status_sync::core::model::{BuildStatus, ParseError, ParsedWebhook, RepoRef};
use std::borrow::Cow;

/// Deepest nesting accepted: serde_json's own recursion limit, which the one-pass scanner
/// keeps too (serde_json skips raw values without recursing, so this parser checks it first).
pub const MAX_DEPTH: usize = 128;

/// Parses a webhook body. Only `event == "build"` with action `created` or `updated` is a
/// transition; anything else is `Err(NotABuildEvent)`. Never panics, on any input.
///
/// The event and action are checked before the repo and build, so a `repo:enabled` or
/// `user:created` webhook is reported as not a build event rather than as malformed.
pub fn parse_webhook(body: &[u8]) -> Result<ParsedWebhook, ParseError> {
    let top = RawObject::parse(utf8(body)?)?;

    let event = top.string("event", "event")?;
    if event != "build" {
        return Err(ParseError::NotABuildEvent);
    }
    let action = top.string("action", "action")?;
    if action != "created" && action != "updated" {
        return Err(ParseError::NotABuildEvent);
    }

    let repo_raw = top
        .get_non_null("repo", "repo")?
        .ok_or(ParseError::Missing("repo"))?;
    let repo_obj = RawObject::parse_nested(repo_raw.get())?;
    let (repo, repo_json) = parse_repo_object(&repo_obj)?;
    // The limit is on the raw text without the values of `build` members (not kept).
    let build_bytes: usize = repo_obj
        .entries
        .iter()
        .filter(|(k, _)| k == "build")
        .map(|(_, v)| v.get().len())
        .sum();
    limits::check_repo_json_len(repo_raw.get().len().saturating_sub(build_bytes))?;

    let build_raw = top
        .get_non_null("build", "build")?
        .ok_or(ParseError::Missing("build"))?;
    let (number, status, version) = build_fields(&RawObject::parse_nested(build_raw.get())?)?;

    let system_json = match top.get_non_null("system", "system")? {
        Some(raw) => {
            limits::check_system_json(raw.get())?;
            Some(raw.get().to_string())
        }
        None => None,
    };

    Ok(ParsedWebhook {
        repo,
        number,
        status,
        version,
        action,
        repo_json: Some(repo_json),
        system_json,
    })
}

/// The repository and its JSON without `build`, written out member by member: an oracle
/// for `drone_api::parse_repo_object` (keys re-encoded by serde_json).
fn parse_repo_object(obj: &RawObject<'_>) -> Result<(RepoRef, String), ParseError> {
    let repo = RepoRef {
        id: limits::check_positive(obj.u64_field("id", "repo.id")?, "repo.id")?,
        namespace: obj.slug_part("namespace", "repo.namespace")?,
        name: obj.slug_part("name", "repo.name")?,
    };
    let members: Vec<String> = obj
        .entries
        .iter()
        .filter(|(k, _)| k != "build")
        .map(|(k, v)| format!("{}:{}", serde_json::Value::String(k.to_string()), v.get()))
        .collect();
    Ok((repo, format!("{{{}}}", members.join(","))))
}

fn build_fields(obj: &RawObject<'_>) -> Result<(u64, BuildStatus, u64), ParseError> {
    let number = limits::check_positive(obj.u64_field("number", "build.number")?, "build.number")?;
    let status = BuildStatus::parse(&obj.string("status", "build.status")?);
    let version =
        limits::check_version(obj.u64_field("version", "build.version")?, "build.version")?;
    Ok((number, status, version))
}

/// A JSON object's members in document order, each value as its raw (validated) text.
///
/// Order matters for re-deliveries, and raw values let us copy drone's objects without
/// re-encoding them. serde_json skips raw values iteratively, so deeply nested input is
/// refused by its depth limit instead of overflowing the stack.
#[derive(Debug)]
struct RawObject<'a> {
    entries: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    /// Parses `text`, which must be exactly one JSON object (surrounding whitespace allowed).
    fn parse(text: &'a str) -> Result<Self, ParseError> {
        if nesting_depth(text) > MAX_DEPTH {
            return Err(ParseError::Json(format!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Self::parse_nested(text)
    }

    /// Parses a member of an object [`RawObject::parse`] already accepted: its nesting was
    /// checked with the whole, so the (linear) depth scan is not repeated on the request path.
    fn parse_nested(text: &'a str) -> Result<Self, ParseError> {
        serde_json::from_str::<RawObject<'a>>(text).map_err(|e| ParseError::Json(e.to_string()))
    }

    /// The raw value of `key` (see [`unique_member`]).
    fn get(&self, key: &str, name: &'static str) -> Result<Option<&'a RawValue>, ParseError> {
        unique_member(&self.entries, key, name)
    }

    /// The raw value of `key`, `None` when absent or JSON `null` (Go's `omitempty` pointers).
    fn get_non_null(
        &self,
        key: &str,
        name: &'static str,
    ) -> Result<Option<&'a RawValue>, ParseError> {
        Ok(self.get(key, name)?.filter(|v| v.get() != "null"))
    }

    /// A required unsigned integer. Negative numbers, floats, strings and values beyond
    /// `u64` are all invalid: drone's ids, numbers and versions are non-negative integers.
    fn u64_field(&self, key: &str, name: &'static str) -> Result<u64, ParseError> {
        let raw = self.get(key, name)?.ok_or(ParseError::Missing(name))?;
        serde_json::from_str::<u64>(raw.get()).map_err(|_| ParseError::Invalid(name))
    }

    /// A required string.
    fn string(&self, key: &str, name: &'static str) -> Result<String, ParseError> {
        let raw = self.get(key, name)?.ok_or(ParseError::Missing(name))?;
        serde_json::from_str::<String>(raw.get()).map_err(|_| ParseError::Invalid(name))
    }

    /// A required namespace or name (non-empty, within the input limits).
    fn slug_part(&self, key: &str, name: &'static str) -> Result<String, ParseError> {
        let s = self.string(key, name)?;
        limits::check_slug_part(&s, name)?;
        Ok(s)
    }
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawObjectVisitor)
    }
}

/// Accepts only a JSON object (no arrays, unlike derived struct deserializers).
struct RawObjectVisitor;

impl<'de> Visitor<'de> for RawObjectVisitor {
    type Value = RawObject<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
        // Keys are decoded into owned strings (serde's `Cow<str>` always allocates): the
        // oracle's speed does not matter, only its verdicts.
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            entries.push((key, value));
        }
        Ok(RawObject { entries })
    }
}

/// Bodies arrive as bytes; anything that is not UTF-8 cannot be drone's JSON.
fn utf8(body: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(body).map_err(|_| ParseError::Json("not UTF-8".to_string()))
}

/// The value of the member named `key` among an object's `entries`, `None` when it has none.
/// A key present more than once is ambiguous, so it is an error (`Invalid(name)`).
fn unique_member<V: Copy>(
    entries: &[(Cow<'_, str>, V)],
    key: &str,
    name: &'static str,
) -> Result<Option<V>, ParseError> {
    let mut found = None;
    for (k, v) in entries {
        if k == key {
            if found.is_some() {
                return Err(ParseError::Invalid(name));
            }
            found = Some(*v);
        }
    }
    Ok(found)
}

/// Maximum bracket nesting of `json`, ignoring brackets inside strings. Runs on unvalidated
/// input: it only counts, the parser that follows reports any syntax error.
pub fn nesting_depth(json: &str) -> usize {
    let (mut in_string, mut escaped) = (false, false);
    let (mut depth, mut max) = (0usize, 0usize);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => {
                depth += 1;
                max = max.max(depth);
            }
            '}' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}
