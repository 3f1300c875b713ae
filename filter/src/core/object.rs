//! A JSON object read member by member, every value kept as its raw (validated) text: how
//! drone's answers, webhooks and the configuration are read without a tree. Below both
//! [`super::limits`] (which checks that an object parses) and [`super::drone_api`] (whose
//! limit-checked accessors, `positive`, `int64`, `slug_part`, live with the limits).

use super::json::{self, Scanner};
use super::model::ParseError;
use std::borrow::Cow;

/// Bodies arrive as bytes; anything that is not UTF-8 cannot be drone's JSON.
pub(crate) fn utf8(body: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(body).map_err(|_| ParseError::Json("not UTF-8".to_string()))
}

/// Enters the object the text of `s` starts with. Any other text is a JSON error: the
/// scanner's own when it is not JSON, else "expected a JSON object" (an array, a string...).
pub(crate) fn begin_object(s: &mut Scanner<'_>) -> Result<(), ParseError> {
    if s.begin_object() {
        return Ok(());
    }
    s.value(0)?;
    s.end()?;
    Err(ParseError::Json("expected a JSON object".to_string()))
}

/// The value of the member named `key` among an object's `entries`, `None` when it has none.
/// A key present more than once is ambiguous (JSON decoders disagree on which one wins), so
/// it is an error (`Invalid(name)`) rather than a guess.
pub(crate) fn unique_member<V: Copy>(
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

/// A JSON object's members in document order, each value as its raw (validated) text.
///
/// Order matters for re-deliveries, and raw values let us copy drone's objects without
/// re-encoding them. Built on [`json`]: one pass, iterative, nesting limited.
#[derive(Debug)]
pub(crate) struct RawObject<'a> {
    pub(crate) entries: Vec<(Cow<'a, str>, &'a str)>,
}

impl<'a> RawObject<'a> {
    /// Parses `text`, which must be exactly one JSON object (surrounding whitespace allowed).
    pub(crate) fn parse(text: &'a str) -> Result<Self, ParseError> {
        let mut entries = Vec::with_capacity(16);
        Self::members(text, |key, value| entries.push((key, value)))?;
        Ok(RawObject { entries })
    }

    /// Whether [`RawObject::parse`] accepts `text`, without keeping its members: the same
    /// scan, so the same verdict (checked on every webhook's `system` object, where the
    /// members are not needed).
    pub(crate) fn check(text: &'a str) -> Result<(), ParseError> {
        Self::members(text, |_, _| {})
    }

    /// Scans `text` as exactly one JSON object, handing each member's decoded key and raw
    /// value to `each` in document order.
    fn members(
        text: &'a str,
        mut each: impl FnMut(Cow<'a, str>, &'a str),
    ) -> Result<(), ParseError> {
        let mut s = Scanner::new(text);
        begin_object(&mut s)?;
        let mut first = true;
        while let Some(key) = s.next_key(first)? {
            first = false;
            let key = key.decode()?;
            each(key, s.value(1)?);
        }
        s.end()?;
        Ok(())
    }

    /// Parses a member of an object [`RawObject::parse`] already accepted.
    pub(crate) fn parse_nested(text: &'a str) -> Result<Self, ParseError> {
        Self::parse(text)
    }

    /// The raw value of `key` (see [`unique_member`]).
    pub(crate) fn get(&self, key: &str, name: &'static str) -> Result<Option<&'a str>, ParseError> {
        unique_member(&self.entries, key, name)
    }

    /// A required unsigned integer. Negative numbers, floats, strings and values beyond
    /// `u64` are all invalid: drone's ids, numbers and versions are non-negative integers.
    pub(crate) fn u64_field(&self, key: &str, name: &'static str) -> Result<u64, ParseError> {
        let raw = self.get(key, name)?.ok_or(ParseError::Missing(name))?;
        json::decode_u64(raw).ok_or(ParseError::Invalid(name))
    }

    /// A required string.
    pub(crate) fn string(&self, key: &str, name: &'static str) -> Result<String, ParseError> {
        let raw = self.get(key, name)?.ok_or(ParseError::Missing(name))?;
        json::decode_string(raw)
            .map(Cow::into_owned)
            .ok_or(ParseError::Invalid(name))
    }
}
