//! Limits on every field we take from outside, checked by the webhook parser, again by the
//! queue decoder (a message on the shared queue is input too: any VM of the process can write
//! it), and by the decoders of drone's API answers ([`super::drone_api`]: drone is the
//! authority on what is true, not on how much we keep, and its repository objects are cached
//! per repository). One set of functions, so the three cannot drift apart.
//!
//! The limits follow what drone itself can hold (`drone-identity`: drone v2.25.0):
//! - `repo.namespace`, `repo.name`: the two halves of drone's slug `namespace + "/" + name`.
//!   Drone's syncer skips any repository whose slug has more than one `/`, so neither half has
//!   one; the columns are `VARCHAR(250)`, so at most 250 characters each, and 250 bytes
//!   ([`MAX_NAME_BYTES`]: real names are ASCII; memory is what we are protecting). `.` and `..` are
//!   refused (they would walk the API path even when percent-encoded: `.` is unreserved), as is
//!   any control character (no SCM allows one, and they would reach logs).
//! - `repo.id`, `build.number`: drone's `int64` primary key and per-repository counter, both
//!   start at 1: `1..=2^63-1`. `build.version` starts at 1 too, but 0 is kept harmless:
//!   `0..=2^63-1`, as is a repository's `counter` (0 before its first build). Anything above
//!   `i64::MAX` cannot be a drone value (drone's API answers 400).
//! - The `repo` object (without its nested `build`, which is not kept) and the `system` object
//!   are copied into re-deliveries: [`MAX_REPO_JSON_BYTES`] and [`MAX_SYSTEM_JSON_BYTES`]
//!   (drone's are about 1.2 KB and 100 B).
//!
//! A webhook outside these limits is passed through untouched, counted
//! (`webhooks_out_of_limits`), and never tracked. A drone answer outside them is an unusable
//! answer ([`ParseError::Limit`]), like one that is not JSON.

use super::model::{ParseError, ParsedWebhook};
use super::object::RawObject;

/// Drone's `repo_namespace`/`repo_name` columns: `VARCHAR(250)` (characters).
pub const MAX_NAME_CHARS: usize = 250;
/// Bytes of a namespace or name (UTF-8): the same 250. Every SCM drone supports restricts
/// names to ASCII (GitHub, Gitea/Gogs, GitLab paths, Bitbucket slugs and project keys), so for
/// every real name characters and bytes agree; the byte limit is what bounds memory.
pub const MAX_NAME_BYTES: usize = 250;
/// Drone's ids, numbers and versions are Go `int64`.
pub const MAX_INT: u64 = i64::MAX as u64;
/// The `repo` object without its nested `build`, as raw JSON text. Drone's is about 1.2 KB.
pub const MAX_REPO_JSON_BYTES: usize = 8 * 1024;
/// The `system` object as raw JSON text. Drone's (`proto`, `host`, `link`, `version`) is
/// about 100 B.
pub const MAX_SYSTEM_JSON_BYTES: usize = 4 * 1024;

/// A namespace or name: non-empty (else [`ParseError::Invalid`], an empty name cannot address
/// drone's API), and within the limits above (else [`ParseError::Limit`]).
pub fn check_slug_part(s: &str, field: &'static str) -> Result<(), ParseError> {
    if s.is_empty() {
        return Err(ParseError::Invalid(field));
    }
    if s.len() > MAX_NAME_BYTES
        || s.chars().count() > MAX_NAME_CHARS
        || s == "."
        || s == ".."
        || s.chars().any(|c| c == '/' || c.is_control())
    {
        return Err(ParseError::Limit(field));
    }
    Ok(())
}

/// A repository id or build number: `1..=2^63-1`.
pub fn check_positive(v: u64, field: &'static str) -> Result<u64, ParseError> {
    if v == 0 || v > MAX_INT {
        return Err(ParseError::Limit(field));
    }
    Ok(v)
}

/// A build version or a repository's counter: `0..=2^63-1`.
pub fn check_version(v: u64, field: &'static str) -> Result<u64, ParseError> {
    if v > MAX_INT {
        return Err(ParseError::Limit(field));
    }
    Ok(v)
}

/// Bytes of the `repo` object without its nested `build`.
pub fn check_repo_json_len(len: usize) -> Result<(), ParseError> {
    if len > MAX_REPO_JSON_BYTES {
        return Err(ParseError::Limit("repo"));
    }
    Ok(())
}

/// The `repo` object as kept (without its nested `build`): within [`MAX_REPO_JSON_BYTES`]
/// (else [`ParseError::Limit`]) and one JSON object whose keys decode (else
/// [`ParseError::Invalid`]), the shape the webhook parser requires of `repo` and re-deliveries
/// splice member by member ([`super::drone_api::try_redelivery_body`]).
pub fn check_repo_json(json: &str) -> Result<(), ParseError> {
    check_repo_json_len(json.len())?;
    check_object(json, "repo")
}

/// The `system` object: within [`MAX_SYSTEM_JSON_BYTES`] (else [`ParseError::Limit`]) and one
/// JSON object whose keys decode (else [`ParseError::Invalid`]): re-deliveries splice it in as
/// an object, and anything else would leave them without a body. The size is checked first,
/// so a decoder's work is bounded.
pub fn check_system_json(raw: &str) -> Result<(), ParseError> {
    if raw.len() > MAX_SYSTEM_JSON_BYTES {
        return Err(ParseError::Limit("system"));
    }
    check_object(raw, "system")
}

/// `raw` is exactly one JSON object (whitespace around it allowed) whose keys decode: what
/// [`RawObject::parse`], and so a re-delivery, accepts.
fn check_object(raw: &str, field: &'static str) -> Result<(), ParseError> {
    match RawObject::check(raw) {
        Ok(()) => Ok(()),
        Err(_) => Err(ParseError::Invalid(field)),
    }
}

/// Every limit, on a webhook as decoded from the queue (the parser checks the same fields one
/// by one as it meets them). The action must be one the parser produces, and the `repo` and
/// `system` JSON objects, as the parser requires (a message that is not the parser's output
/// could otherwise make a re-delivery's body empty).
pub fn check_webhook(w: &ParsedWebhook) -> Result<(), ParseError> {
    check_positive(w.repo.id, "repo.id")?;
    check_slug_part(&w.repo.namespace, "repo.namespace")?;
    check_slug_part(&w.repo.name, "repo.name")?;
    check_positive(w.number, "build.number")?;
    check_version(w.version, "build.version")?;
    if w.action != "created" && w.action != "updated" {
        return Err(ParseError::Invalid("action"));
    }
    if let Some(j) = &w.repo_json {
        check_repo_json(j)?;
    }
    if let Some(j) = &w.system_json {
        check_system_json(j)?;
    }
    Ok(())
}

/// The accessors of a drone object's fields that hold them to these limits, on the reader
/// ([`RawObject`]) every decoder of drone's JSON shares.
impl RawObject<'_> {
    /// A required drone id or build number, `1..=2^63-1` ([`check_positive`]).
    pub(crate) fn positive(&self, key: &str, name: &'static str) -> Result<u64, ParseError> {
        check_positive(self.u64_field(key, name)?, name)
    }

    /// A required version or counter, `0..=2^63-1` ([`check_version`]).
    pub(crate) fn int64(&self, key: &str, name: &'static str) -> Result<u64, ParseError> {
        check_version(self.u64_field(key, name)?, name)
    }

    /// A required namespace or name: non-empty (an empty name cannot address the API) and
    /// within [`check_slug_part`] (no `/`, `.`, `..` or control character to walk or
    /// pollute the API path and the logs; at most 250 bytes).
    pub(crate) fn slug_part(&self, key: &str, name: &'static str) -> Result<String, ParseError> {
        let s = self.string(key, name)?;
        check_slug_part(&s, name)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented sizes (docs/security.md: 8 KiB of `repo`, 4 KiB of `system`), written out rather
    /// than through the constants, so a changed constant fails here.
    #[test]
    fn json_size_limits_are_8_and_4_kib() {
        let object = |len: usize| format!(r#"{{"k":"{}"}}"#, "x".repeat(len - 8));
        assert_eq!(object(8192).len(), 8192);
        assert_eq!(check_repo_json(&object(8192)), Ok(()));
        assert_eq!(
            check_repo_json(&object(8193)),
            Err(ParseError::Limit("repo"))
        );
        assert_eq!(check_system_json(&object(4096)), Ok(()));
        assert_eq!(
            check_system_json(&object(4097)),
            Err(ParseError::Limit("system"))
        );
    }

    #[test]
    fn slug_parts_follow_drone() {
        for ok in [
            "octocat",
            "hello-world",
            "a.b_c",
            "...",
            ".github",
            "é",
            &"x".repeat(250),
            &"é".repeat(125),
        ] {
            assert_eq!(check_slug_part(ok, "repo.name"), Ok(()), "{ok:?}");
        }
        assert_eq!(
            check_slug_part("", "repo.name"),
            Err(ParseError::Invalid("repo.name"))
        );
        for bad in [
            ".",
            "..",
            "a/b",
            "/",
            "a\nb",
            "a\u{0}",
            "a\u{7f}",
            "a\u{85}",
            "\t",
            &"x".repeat(251),
            &"é".repeat(126), // 126 characters, 252 bytes
            &"€".repeat(200), // 200 characters, 600 bytes
        ] {
            assert_eq!(
                check_slug_part(bad, "repo.name"),
                Err(ParseError::Limit("repo.name")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn numbers_are_drone_int64() {
        assert_eq!(check_positive(1, "n"), Ok(1));
        assert_eq!(check_positive(MAX_INT, "n"), Ok(MAX_INT));
        assert_eq!(check_positive(0, "n"), Err(ParseError::Limit("n")));
        assert_eq!(
            check_positive(MAX_INT + 1, "n"),
            Err(ParseError::Limit("n"))
        );
        assert_eq!(check_positive(u64::MAX, "n"), Err(ParseError::Limit("n")));
        assert_eq!(check_version(0, "v"), Ok(0));
        assert_eq!(check_version(MAX_INT, "v"), Ok(MAX_INT));
        assert_eq!(check_version(1 << 63, "v"), Err(ParseError::Limit("v")));
    }

    #[test]
    fn json_sizes() {
        assert!(check_repo_json_len(MAX_REPO_JSON_BYTES).is_ok());
        assert!(check_repo_json_len(MAX_REPO_JSON_BYTES + 1).is_err());
        // `{"x":"…"}` of exactly `len` bytes.
        let object = |len: usize| format!(r#"{{"x":"{}"}}"#, "p".repeat(len - 8));
        assert_eq!(check_repo_json(&object(MAX_REPO_JSON_BYTES)), Ok(()));
        assert_eq!(
            check_repo_json(&object(MAX_REPO_JSON_BYTES + 1)),
            Err(ParseError::Limit("repo"))
        );
        assert_eq!(check_system_json(&object(MAX_SYSTEM_JSON_BYTES)), Ok(()));
        assert_eq!(
            check_system_json(&object(MAX_SYSTEM_JSON_BYTES + 1)),
            Err(ParseError::Limit("system"))
        );
        // Over the limit and not an object either: the size is what is reported.
        assert_eq!(
            check_system_json(&"x".repeat(MAX_SYSTEM_JSON_BYTES + 1)),
            Err(ParseError::Limit("system"))
        );
    }

    /// Shapes: exactly one JSON object whose keys decode, as re-deliveries need.
    #[test]
    fn json_objects() {
        for ok in ["{}", " {\"a\":[1,{\"b\":null}]}\n", r#"{"\u00e9":1}"#] {
            assert_eq!(check_repo_json(ok), Ok(()), "{ok}");
            assert_eq!(check_system_json(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            " ",
            "null",
            "[]",
            "\"s\"",
            "1",
            "{",
            "{} {}",
            "{}x",
            "{\"a\":1,}",
            r#"{"\ud800":1}"#,
            "\u{feff}{}",
        ] {
            assert_eq!(
                check_repo_json(bad),
                Err(ParseError::Invalid("repo")),
                "{bad:?}"
            );
            assert_eq!(
                check_system_json(bad),
                Err(ParseError::Invalid("system")),
                "{bad:?}"
            );
        }
    }
}
