//! Drone REST API answers and the drone-shaped webhooks we re-deliver.
//!
//! Drone's JSON is parsed member by member with every value kept as its raw text
//! ([`RawObject`]): re-delivered webhooks must carry drone's objects exactly as drone wrote
//! them (same keys, same order, same number formatting), so the pipeline cannot tell a
//! re-delivery from a live webhook. Only the few fields we act on are decoded, each held to
//! the input limits of [`limits`] as a webhook's are: drone is the authority on builds, but
//! its names address its API and its repository objects are cached, so an answer outside the
//! limits (nothing drone itself can hold) is an unusable answer, [`ParseError::Limit`].

/// Re-exported for the configuration's log lines, which compact what they quote.
pub(crate) use super::json::compact;
use super::json::{self, Scanner};
use super::limits;
use super::model::{BuildStatus, ParseError, RepoRef};
use super::object::{utf8, RawObject};
use std::borrow::Cow;

/// The fields of `GET /api/repos/{owner}/{name}/builds/{number}` we act on, and the whole
/// object (trimmed) to splice into a re-delivered webhook.
///
/// Drone's word about a build, so it makes a [`super::proof::Proof`]: its fields are private
/// and [`parse_build`] is the only way to make one, so no other code can dress a hint's bytes
/// up as drone's answer (the compiler refuses):
///
/// ```compile_fail,E0451
/// use status_sync::core::drone_api::ApiBuild;
/// use status_sync::core::model::BuildStatus;
/// use status_sync::core::proof::Proof;
///
/// fn drone_said_so() -> Proof {
///     // error[E0451]: field `repo_id` of struct `ApiBuild` is private
///     Proof::drone(&ApiBuild {
///         repo_id: 1,
///         number: 50,
///         status: BuildStatus::Success,
///         version: 5,
///         finished_s: 0,
///         raw: "{}",
///     })
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiBuild<'a> {
    repo_id: u64,
    number: u64,
    status: BuildStatus,
    version: u64,
    finished_s: u64,
    raw: &'a str,
}

impl<'a> ApiBuild<'a> {
    /// `repo_id`: an answer is taken only for the repository the reconciler asked about.
    pub fn repo_id(&self) -> u64 {
        self.repo_id
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn status(&self) -> BuildStatus {
        self.status
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// When drone says the build finished, in Unix seconds: its `finished`, else (a done
    /// build without one) its `updated`; 0 while open, or when drone gave neither as an
    /// unsigned integer (then the time is unknown, and nothing is decided by it).
    pub fn finished_s(&self) -> u64 {
        self.finished_s
    }

    /// The complete build object, validated JSON, surrounding whitespace trimmed.
    pub fn raw(&self) -> &'a str {
        self.raw
    }
}

/// Parses a build answer. Never panics.
pub fn parse_build(body: &[u8]) -> Result<ApiBuild<'_>, ParseError> {
    let text = utf8(body)?;
    let obj = RawObject::parse(text)?;
    let (number, status, version) = build_fields(&obj)?;
    let repo_id = obj.positive("repo_id", "build.repo_id")?;
    let time = |key: &str| -> Result<u64, ParseError> {
        let raw = obj.get(key, "build.finished")?;
        Ok(raw.and_then(json::decode_u64).unwrap_or(0))
    };
    let finished_s = match time("finished")? {
        0 if status.is_done() => time("updated")?,
        t => t,
    };
    Ok(ApiBuild {
        repo_id,
        number,
        status,
        version,
        finished_s,
        // The object parsed, so everything around it is JSON whitespace (drone's encoder
        // appends a newline).
        raw: text.trim(),
    })
}

/// Parses `GET /api/repos/{owner}/{name}`: the repository and its JSON without `build`.
pub fn parse_repo(body: &[u8]) -> Result<(RepoRef, String), ParseError> {
    parse_repo_object(&RawObject::parse(utf8(body)?)?)
}

/// Parses `GET /api/repos/{owner}/{name}` with its `counter`: the last build number drone
/// allocated in the repository (`repos.Increment`, before the build row is written; gaps are
/// possible where a creation failed).
pub fn parse_repo_counter(body: &[u8]) -> Result<(RepoRef, String, u64), ParseError> {
    let obj = RawObject::parse(utf8(body)?)?;
    let counter = obj.int64("counter", "repo.counter")?;
    let (repo, json) = parse_repo_object(&obj)?;
    Ok((repo, json, counter))
}

/// `GET /api/builds/incomplete` (drone's `ListIncomplete`: one repository per build with a
/// pending or running stage, newest build first, at most 50), as [`parse_incomplete`] reads
/// it. Iterates over its usable entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Incomplete {
    /// Each usable entry: the repository, its JSON without `build`, and the build's number.
    pub entries: Vec<(RepoRef, String, u64)>,
    /// Entries left out: not an object, a field missing or mistyped, or outside the limits.
    pub skipped: usize,
}

impl IntoIterator for Incomplete {
    type Item = (RepoRef, String, u64);
    type IntoIter = std::vec::IntoIter<(RepoRef, String, u64)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Parses `GET /api/builds/incomplete`. An answer that is not one JSON array is an error; an
/// entry we cannot use (see [`Incomplete::skipped`]) is left out and counted, the others kept.
///
/// Unlike [`parse_build_list`], one bad entry does not spoil the list: each entry is a
/// different build, mostly of a different repository, and only adds a build to track and
/// raises its repository's watermark to that build's number, so leaving one out hides nothing
/// from the others (the repository's `counter` still finds a build left out). Refusing the
/// whole list would let one entry drone could not have written blind the reconciler to every
/// repository in it, on every poll.
pub fn parse_incomplete(body: &[u8]) -> Result<Incomplete, ParseError> {
    let items = Scanner::array_items(utf8(body)?)?;
    let mut list = Incomplete::default();
    for item in items {
        match incomplete_entry(item) {
            Ok(entry) => list.entries.push(entry),
            Err(_) => list.skipped += 1,
        }
    }
    Ok(list)
}

/// One entry of `GET /api/builds/incomplete`: a repository object with its newest incomplete
/// build nested.
fn incomplete_entry(item: &str) -> Result<(RepoRef, String, u64), ParseError> {
    let obj = RawObject::parse(item)?;
    let build = obj
        .get("build", "repo.build")?
        .ok_or(ParseError::Missing("repo.build"))?;
    let number = RawObject::parse_nested(build)?.positive("number", "build.number")?;
    let (repo, json) = parse_repo_object(&obj)?;
    Ok((repo, json, number))
}

/// Path of the build endpoint, with owner and name percent-encoded as path segments.
pub fn build_path(repo: &RepoRef, number: u64) -> String {
    format!("{}/builds/{number}", repo_path(repo))
}

/// Path of the repository endpoint.
pub fn repo_path(repo: &RepoRef) -> String {
    format!(
        "/api/repos/{}/{}",
        encode_segment(&repo.namespace),
        encode_segment(&repo.name)
    )
}

/// Path of the build list (newest first, one page of 25, drone's default).
pub fn list_path(namespace: &str, name: &str) -> String {
    format!(
        "/api/repos/{}/{}/builds?page=1&per_page=25",
        encode_segment(namespace),
        encode_segment(name)
    )
}

/// One build of `GET /api/repos/{owner}/{name}/builds` (drone lists them without stages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedBuild {
    pub repo_id: u64,
    pub number: u64,
    pub status: BuildStatus,
    pub version: u64,
}

/// Parses a build list. Entries lacking a field we need, or outside the limits, make the whole
/// answer an error: a partial list could hide exactly the build we are looking for (the
/// newest number listed becomes the repository's watermark, and a build below it that was
/// left out would never be looked for again).
pub fn parse_build_list(body: &[u8]) -> Result<Vec<ListedBuild>, ParseError> {
    let items = Scanner::array_items(utf8(body)?)?;
    items
        .into_iter()
        .map(|item| {
            let b = RawObject::parse(item)?;
            Ok(ListedBuild {
                repo_id: b.positive("repo_id", "repo_id")?,
                number: b.positive("number", "number")?,
                version: b.int64("version", "version")?,
                status: BuildStatus::parse(&b.string("status", "status")?),
            })
        })
        .collect()
}

/// The body of a re-delivered webhook, shaped like drone's final `build:updated` (teardown):
/// `{"event":"build","action":"updated","repo":{...repo, "build":<build>},"build":<build>,"system":...}`.
///
/// The inputs are expected to be what this crate parsed and validated ([`parse_repo`],
/// [`parse_build`], the webhook parser, the queue decoder: `limits::check_repo_json` and
/// `limits::check_system_json`). Should one of them not be a JSON object anyway, the result
/// is an empty string rather than invalid JSON. Never send that as a re-delivery: whatever
/// delivers calls [`try_redelivery_body`], refuses the error and counts it
/// (`redeliveries_invalid`).
pub fn redelivery_body(repo_json: &str, build_raw: &str, system_json: Option<&str>) -> String {
    try_redelivery_body(repo_json, build_raw, system_json).unwrap_or_default()
}

/// [`redelivery_body`], reporting inputs that are not JSON objects instead of hiding them.
///
/// The output is compact (JSON whitespace outside strings removed, nothing else changed) and
/// follows drone's Go field order: top level `event, action, repo, build, system`; inside
/// `repo`, `build` goes right after `version` (drone's `Repository` struct order), replacing
/// any `build` the repo object already had.
pub fn try_redelivery_body(
    repo_json: &str,
    build_raw: &str,
    system_json: Option<&str>,
) -> Result<String, ParseError> {
    let repo = RawObject::parse(repo_json)?;
    // Validate the build and system objects: a bad one must not produce a broken body.
    RawObject::parse(build_raw)?;
    if let Some(system) = system_json {
        RawObject::parse(system)?;
    }
    let build = compact(build_raw.trim());

    let members: Vec<&(Cow<str>, &str)> =
        repo.entries.iter().filter(|(k, _)| k != "build").collect();
    // Go order of `Repository`: ..., version, build?, permissions?, archived.
    let insert_at = members
        .iter()
        .position(|(k, _)| k == "version")
        .map(|i| i + 1)
        .or_else(|| {
            members
                .iter()
                .position(|(k, _)| k == "permissions" || k == "archived")
        })
        .unwrap_or(members.len());

    let mut out = String::with_capacity(repo_json.len() + 2 * build.len() + 128);
    out.push_str(r#"{"event":"build","action":"updated","repo":{"#);
    let mut first = true;
    let mut push_member = |out: &mut String, key_json: &str, value: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(key_json);
        out.push(':');
        out.push_str(value);
    };
    for (i, (key, value)) in members.iter().enumerate() {
        if i == insert_at {
            push_member(&mut out, r#""build""#, &build);
        }
        push_member(&mut out, &json_string(key), &compact(value));
    }
    if insert_at >= members.len() {
        push_member(&mut out, r#""build""#, &build);
    }
    out.push_str(r#"},"build":"#);
    out.push_str(&build);
    if let Some(system) = system_json {
        out.push_str(r#","system":"#);
        out.push_str(&compact(system.trim()));
    }
    out.push('}');
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Shared with the webhook parser.

/// Parses a drone repository object: the [`RepoRef`] we address the API with, and the
/// object's JSON without its nested `build` (step webhooks and `/builds/incomplete` carry
/// one), every other member kept in order with its value byte-for-byte. The id, the names and
/// the JSON's size are held to [`limits`].
pub(crate) fn parse_repo_object(obj: &RawObject<'_>) -> Result<(RepoRef, String), ParseError> {
    let raw_len: usize = obj.entries.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let id = obj.positive("id", "repo.id")?;
    let namespace = obj.slug_part("namespace", "repo.namespace")?;
    let name = obj.slug_part("name", "repo.name")?;

    let mut json = String::with_capacity(raw_len + 2);
    json.push('{');
    let mut first = true;
    for (key, value) in obj.entries.iter().filter(|(k, _)| k != "build") {
        if !first {
            json.push(',');
        }
        first = false;
        json.push_str(&json_string(key));
        json.push(':');
        json.push_str(value);
    }
    json.push('}');
    // What is kept and copied into re-deliveries (a key is never longer re-encoded than as
    // sent, so a webhook's repository, which the parser measured, always passes).
    limits::check_repo_json_len(json.len())?;
    Ok((
        RepoRef {
            id,
            namespace,
            name,
        },
        json,
    ))
}

/// `number`, `status` and `version` of a drone build object, the numbers within [`limits`].
/// An unknown status string is kept as [`BuildStatus::Unknown`] (drone may add statuses;
/// like `IsDone()` they count as done), but a status that is not a string is malformed.
pub(crate) fn build_fields(obj: &RawObject<'_>) -> Result<(u64, BuildStatus, u64), ParseError> {
    let number = obj.positive("number", "build.number")?;
    let status = BuildStatus::parse(&obj.string("status", "build.status")?);
    let version = obj.int64("version", "build.version")?;
    Ok((number, status, version))
}

/// `s` as a JSON string literal (keys are decoded when parsed, so they are re-encoded),
/// escaped as serde_json (and Go's encoder, for what drone sends) would.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                out.push_str("\\u00");
                out.push(hex_lower(u32::from(c) >> 4));
                out.push(hex_lower(u32::from(c) & 0xf));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex_lower(n: u32) -> char {
    char::from_digit(n, 16).unwrap_or('0')
}

/// Percent-encodes one path segment: RFC 3986 unreserved characters stay, every other byte
/// (including `/`, so a name can never add a segment) becomes `%XX`. A segment of dots only
/// (`.`, `..`) is encoded whole, so no proxy or server can take it for a relative step.
fn encode_segment(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b == b'.') {
        return "%2E".repeat(s.len());
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
    }
    out
}

/// Upper-case hex digit of the low nibble of `n` (RFC 3986 recommends upper case).
fn hex_digit(n: u8) -> char {
    let n = n & 0x0f;
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::json::MAX_DEPTH;
    use crate::core::limits::{MAX_INT, MAX_NAME_BYTES, MAX_REPO_JSON_BYTES};
    use proptest::prelude::*;
    use serde_json::Value;

    #[test]
    fn keys_are_escaped_like_serde() {
        let mut keys: Vec<String> = (0u32..0x80)
            .filter_map(char::from_u32)
            .map(|c| format!("k{c}"))
            .collect();
        keys.extend([
            "é日本".to_string(),
            "\u{7f}\u{2028}".to_string(),
            String::new(),
        ]);
        for k in keys {
            assert_eq!(json_string(&k), Value::String(k.clone()).to_string());
        }
    }

    /// A repository object as drone writes it, `pad` bytes of padding in member `x`.
    fn repo_text(id: u64, namespace: &str, name: &str, pad: usize) -> String {
        format!(
            r#"{{"id":{id},"namespace":{},"name":{},"x":"{}","version":3}}"#,
            json_string(namespace),
            json_string(name),
            "p".repeat(pad)
        )
    }

    /// Drone's repository answers (`/api/repos/{o}/{n}` with and without the counter we read,
    /// and an entry of `/api/builds/incomplete`) all give `want` for `repo`.
    fn assert_repo_verdict(repo: &str, want: &Result<(), ParseError>) {
        let got = parse_repo(repo.as_bytes()).map(|(_, json)| {
            assert!(json.len() <= MAX_REPO_JSON_BYTES);
        });
        assert_eq!(&got, want, "parse_repo {repo:.300}");
        // As long as `"version":3`: the counter is kept in the JSON.
        let with_counter = repo.replacen(r#""version":3"#, r#""counter":7"#, 1);
        let got = parse_repo_counter(with_counter.as_bytes()).map(drop);
        assert_eq!(&got, want, "parse_repo_counter {repo:.300}");
        let entry = format!(
            r#"[{}]"#,
            repo.replacen('{', r#"{"build":{"number":2,"status":"running"},"#, 1)
        );
        let got = parse_incomplete(entry.as_bytes()).unwrap();
        assert_eq!(
            (got.entries.len(), got.skipped),
            if want.is_ok() { (1, 0) } else { (0, 1) },
            "parse_incomplete {repo:.300}"
        );
    }

    /// The boundaries of every limit, in every decoder of drone's answers: 250 against 251
    /// bytes, 2^63-1 against 2^63, the names drone's syncer cannot hold, 8 KiB of repository.
    #[test]
    fn answers_are_held_to_the_input_limits() {
        use ParseError::{Invalid, Limit};
        // The repository object's size, without `x`'s padding.
        let base = repo_text(1, "o", "n", 0).len();
        let name_cases: Vec<(String, Result<(), ParseError>)> = vec![
            ("x".repeat(MAX_NAME_BYTES), Ok(())),
            ("x".repeat(MAX_NAME_BYTES + 1), Err(Limit("repo.name"))),
            ("é".repeat(MAX_NAME_BYTES / 2), Ok(())),
            ("é".repeat(MAX_NAME_BYTES / 2 + 1), Err(Limit("repo.name"))),
            ("...".into(), Ok(())),
            (".github".into(), Ok(())),
            ("a..b".into(), Ok(())),
            (".".into(), Err(Limit("repo.name"))),
            ("..".into(), Err(Limit("repo.name"))),
            ("/".into(), Err(Limit("repo.name"))),
            ("a/b".into(), Err(Limit("repo.name"))),
            ("../..".into(), Err(Limit("repo.name"))),
            ("a\u{0}".into(), Err(Limit("repo.name"))),
            ("a\nb".into(), Err(Limit("repo.name"))),
            ("\u{1b}[31m".into(), Err(Limit("repo.name"))),
            ("a\u{7f}".into(), Err(Limit("repo.name"))),
            ("a\u{85}".into(), Err(Limit("repo.name"))),
            (String::new(), Err(Invalid("repo.name"))),
        ];
        for (name, want) in &name_cases {
            assert_repo_verdict(&repo_text(1, "o", name, 0), want);
            let want_ns = want.clone().map_err(|e| match e {
                Limit(_) => Limit("repo.namespace"),
                _ => Invalid("repo.namespace"),
            });
            assert_repo_verdict(&repo_text(1, name, "n", 0), &want_ns);
        }
        for (id, want) in [
            (1, Ok(())),
            (MAX_INT, Ok(())),
            (0, Err(Limit("repo.id"))),
            (MAX_INT + 1, Err(Limit("repo.id"))),
            (u64::MAX, Err(Limit("repo.id"))),
        ] {
            let pad = 20 - id.to_string().len();
            assert_repo_verdict(&repo_text(id, "o", "n", pad), &want);
        }
        // 8 KiB of repository JSON (as kept: without the nested build), not a byte more.
        for (size, want) in [
            (MAX_REPO_JSON_BYTES - 1, Ok(())),
            (MAX_REPO_JSON_BYTES, Ok(())),
            (MAX_REPO_JSON_BYTES + 1, Err(Limit("repo"))),
            (4 * MAX_REPO_JSON_BYTES, Err(Limit("repo"))),
        ] {
            let repo = repo_text(1, "o", "n", size - base);
            assert_eq!(repo.len(), size);
            assert_repo_verdict(&repo, &want);
        }
        // A large nested build is not kept, so it does not count.
        let with_build = repo_text(1, "o", "n", MAX_REPO_JSON_BYTES - base).replacen(
            '{',
            &format!(r#"{{"build":{{"message":"{}"}},"#, "m".repeat(20_000)),
            1,
        );
        assert!(parse_repo(with_build.as_bytes()).is_ok());

        // The counter: 0 (no build yet) up to int64.
        for (counter, want) in [
            (0, Ok(0)),
            (MAX_INT, Ok(MAX_INT)),
            (MAX_INT + 1, Err(Limit("repo.counter"))),
            (u64::MAX, Err(Limit("repo.counter"))),
        ] {
            let body = format!(r#"{{"id":1,"namespace":"o","name":"n","counter":{counter}}}"#);
            let got = parse_repo_counter(body.as_bytes()).map(|(_, _, c)| c);
            assert_eq!(got, want, "{counter}");
        }

        // Builds and build lists: repo_id and number 1..=2^63-1, version 0..=2^63-1.
        let build = |repo_id: u64, number: u64, version: u64| {
            format!(
                r#"{{"id":5,"repo_id":{repo_id},"number":{number},"status":"success","version":{version}}}"#
            )
        };
        for ((repo_id, number, version), want) in [
            ((1, 1, 0), Ok(())),
            ((MAX_INT, MAX_INT, MAX_INT), Ok(())),
            ((0, 1, 1), Err("repo_id")),
            ((MAX_INT + 1, 1, 1), Err("repo_id")),
            ((1, 0, 1), Err("number")),
            ((1, MAX_INT + 1, 1), Err("number")),
            ((1, u64::MAX, 1), Err("number")),
            ((1, 1, MAX_INT + 1), Err("version")),
            ((1, 1, u64::MAX), Err("version")),
        ] {
            let one = build(repo_id, number, version);
            let got = parse_build(one.as_bytes()).map(|b| (b.repo_id(), b.number(), b.version()));
            let want_build = want.map(|()| (repo_id, number, version)).map_err(|f| {
                Limit(match f {
                    "repo_id" => "build.repo_id",
                    "number" => "build.number",
                    _ => "build.version",
                })
            });
            assert_eq!(got, want_build, "{one}");
            // In a list, a bad entry spoils the whole answer (see parse_build_list).
            let list = format!("[{},{one}]", build(1, 2, 1));
            let got = parse_build_list(list.as_bytes()).map(|l| l.len());
            assert_eq!(got, want.map(|()| 2).map_err(Limit), "{list}");
        }
    }

    /// A namespace or name drone's syncer could hold: the limits restated independently of
    /// `limits::check_slug_part`.
    fn drone_could_hold(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 250
            && s != "."
            && s != ".."
            && !s.chars().any(|c| c == '/' || c.is_control())
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            4 => prop::char::range('a', 'z'),
            2 => Just('.'),
            1 => Just('/'),
            1 => Just('é'),
            1 => prop::char::range('\u{0}', '\u{9f}'),
            1 => any::<char>(),
        ];
        prop_oneof![
            prop::collection::vec(c.clone(), 0..4),
            prop::collection::vec(c, 240..260),
        ]
        .prop_map(|v| v.into_iter().collect())
    }

    fn int_strategy() -> impl Strategy<Value = u64> {
        prop_oneof![0..3u64, (MAX_INT - 2)..=(MAX_INT + 2), any::<u64>(),]
    }

    proptest! {
        /// Whatever drone answers, a repository is kept only within the limits: the verdict of
        /// every repository decoder is the independent statement of them.
        #[test]
        fn repository_answers_follow_the_limits(
            namespace in name_strategy(),
            name in name_strategy(),
            id in int_strategy(),
            counter in int_strategy(),
        ) {
            let ok = drone_could_hold(&namespace) && drone_could_hold(&name)
                && (1..=MAX_INT).contains(&id);
            let repo = repo_text(id, &namespace, &name, 0);
            prop_assert_eq!(parse_repo(repo.as_bytes()).is_ok(), ok, "{}", repo);
            let entry = format!(
                "[{}]",
                repo.replacen('{', r#"{"build":{"number":3},"#, 1)
            );
            let list = parse_incomplete(entry.as_bytes()).unwrap();
            prop_assert_eq!(list.skipped, usize::from(!ok));
            let with_counter = repo.replacen('{', &format!(r#"{{"counter":{counter},"#), 1);
            prop_assert_eq!(
                parse_repo_counter(with_counter.as_bytes()).is_ok(),
                ok && counter <= MAX_INT
            );
        }

        /// A build answer is taken only with drone's int64 ids, numbers and versions.
        #[test]
        fn build_answers_follow_the_limits(
            repo_id in int_strategy(),
            number in int_strategy(),
            version in int_strategy(),
        ) {
            let body = format!(
                r#"{{"repo_id":{repo_id},"number":{number},"status":"running","version":{version}}}"#
            );
            let ok = (1..=MAX_INT).contains(&repo_id)
                && (1..=MAX_INT).contains(&number)
                && version <= MAX_INT;
            prop_assert_eq!(parse_build(body.as_bytes()).is_ok(), ok);
            prop_assert_eq!(parse_build_list(format!("[{body}]").as_bytes()).is_ok(), ok);
        }
    }

    #[test]
    fn build_lists() {
        let body = br#"[{"id":2,"repo_id":42,"number":102,"status":"running","version":2},{"id":1,"repo_id":42,"number":101,"status":"success","version":3}]
"#;
        let list = parse_build_list(body).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0],
            ListedBuild {
                repo_id: 42,
                number: 102,
                status: BuildStatus::Running,
                version: 2
            }
        );
        assert_eq!(parse_build_list(b"[]").unwrap(), vec![]);
        for bad in [&b"{}"[..], b"[{\"number\":1}]", b"[1]", b"nope", b"\xff"] {
            assert!(parse_build_list(bad).is_err());
        }
        assert_eq!(
            list_path("octo cat", "hello"),
            "/api/repos/octo%20cat/hello/builds?page=1&per_page=25"
        );
    }

    fn fixture(name: &str) -> String {
        drone_model::fixtures::text(name).to_string()
    }

    fn repo(ns: &str, name: &str) -> RepoRef {
        RepoRef {
            id: 42,
            namespace: ns.to_string(),
            name: name.to_string(),
        }
    }

    /// The raw text of a top-level member of a webhook fixture, exactly as drone wrote it.
    fn member(body: &str, key: &str) -> String {
        let top = RawObject::parse(body).unwrap();
        top.get(key, "member").unwrap().unwrap().to_string()
    }

    /// The repo object of a webhook fixture, as the webhook parser hands it on.
    fn webhook_repo_json(name: &str) -> String {
        let repo = member(&fixture(name), "repo");
        parse_repo_object(&RawObject::parse(&repo).unwrap())
            .unwrap()
            .1
    }

    #[test]
    fn api_build_fixture_parses() {
        let body = fixture("api-build-success.json");
        let b = parse_build(body.as_bytes()).unwrap();
        assert_eq!(b.number(), 101);
        assert_eq!(b.status(), BuildStatus::Success);
        assert_eq!(b.version(), 3);
        assert_eq!(b.raw(), body.trim());
        assert!(b.raw().starts_with("{\"id\":5001,") && b.raw().ends_with("}]}]}"));
    }

    #[test]
    fn api_build_raw_is_trimmed_of_drones_newline() {
        let body = format!("  \n{}\n", fixture("api-build-success.json"));
        let b = parse_build(body.as_bytes()).unwrap();
        assert_eq!(b.raw(), fixture("api-build-success.json").trim());
        let v: Value = serde_json::from_str(b.raw()).unwrap();
        assert_eq!(v["number"], 101);
    }

    #[test]
    fn pretty_printed_api_answer_parses() {
        let v: Value = serde_json::from_str(&fixture("api-build-success.json")).unwrap();
        let pretty = serde_json::to_string_pretty(&v).unwrap() + "\n";
        let b = parse_build(pretty.as_bytes()).unwrap();
        assert_eq!(
            (b.number(), b.status(), b.version()),
            (101, BuildStatus::Success, 3)
        );
        assert_eq!(b.raw(), pretty.trim());
    }

    #[test]
    fn build_statuses_including_unknown() {
        for (s, want) in [
            ("pending", BuildStatus::Pending),
            ("running", BuildStatus::Running),
            ("killed", BuildStatus::Killed),
            ("declined", BuildStatus::Declined),
            (
                "waiting_on_dependencies",
                BuildStatus::WaitingOnDependencies,
            ),
            ("completed", BuildStatus::Unknown),
            ("", BuildStatus::Unknown),
            ("SUCCESS", BuildStatus::Unknown),
        ] {
            let body = format!(r#"{{"repo_id":9,"number":7,"status":"{s}","version":2}}"#);
            assert_eq!(parse_build(body.as_bytes()).unwrap().status, want, "{s}");
        }
    }

    #[test]
    fn build_field_errors_are_typed() {
        let cases: &[(&str, ParseError)] = &[
            (
                r#"{"status":"success","version":3}"#,
                ParseError::Missing("build.number"),
            ),
            (
                r#"{"repo_id":9,"number":1,"version":3}"#,
                ParseError::Missing("build.status"),
            ),
            (
                r#"{"repo_id":9,"number":1,"status":"success"}"#,
                ParseError::Missing("build.version"),
            ),
            (
                r#"{"repo_id":9,"number":"1","status":"success","version":3}"#,
                ParseError::Invalid("build.number"),
            ),
            (
                r#"{"repo_id":9,"number":-1,"status":"success","version":3}"#,
                ParseError::Invalid("build.number"),
            ),
            (
                r#"{"repo_id":9,"number":1.5,"status":"success","version":3}"#,
                ParseError::Invalid("build.number"),
            ),
            (
                r#"{"repo_id":9,"number":1,"status":5,"version":3}"#,
                ParseError::Invalid("build.status"),
            ),
            (
                r#"{"repo_id":9,"number":1,"status":null,"version":3}"#,
                ParseError::Invalid("build.status"),
            ),
            (
                r#"{"repo_id":9,"number":1,"status":"success","version":-3}"#,
                ParseError::Invalid("build.version"),
            ),
            (
                r#"{"repo_id":9,"number":1,"status":"success","version":3.0}"#,
                ParseError::Invalid("build.version"),
            ),
            (
                r#"{"repo_id":9,"number":1,"status":"success","version":1e3}"#,
                ParseError::Invalid("build.version"),
            ),
            (
                r#"{"repo_id":9,"number":1,"status":"success","version":"3"}"#,
                ParseError::Invalid("build.version"),
            ),
            (
                r#"{"repo_id":9,"number":1,"status":"success","version":null}"#,
                ParseError::Invalid("build.version"),
            ),
            (
                r#"{"repo_id":9,"number":1,"status":"success","version":18446744073709551616}"#,
                ParseError::Invalid("build.version"),
            ),
            (
                r#"{"repo_id":9,"number":1,"status":"success","version":3,"version":4}"#,
                ParseError::Invalid("build.version"),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse_build(body.as_bytes()).unwrap_err(), *want, "{body}");
        }
        // Beyond drone's int64 (but within u64): outside the limits.
        let max = format!(
            r#"{{"repo_id":9,"number":1,"status":"success","version":{}}}"#,
            u64::MAX
        );
        assert_eq!(
            parse_build(max.as_bytes()).unwrap_err(),
            ParseError::Limit("build.version")
        );
    }

    #[test]
    fn malformed_api_answers_are_json_errors() {
        let full = fixture("api-build-success.json");
        let bad: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"   ".to_vec(),
            b"null".to_vec(),
            b"[]".to_vec(),
            b"[101,\"success\",3]".to_vec(),
            b"\"x\"".to_vec(),
            b"{".to_vec(),
            b"{\"number\":1,\"status\":\"success\",\"version\":3} {}".to_vec(),
            b"{\"number\":1,\"status\":\"success\",\"version\":3,}".to_vec(),
            b"{\"message\":\"sql: no rows in result set\"".to_vec(),
            vec![0xff, 0xfe, b'{', b'}'],
            [
                b"{\"number\":1,\"status\":\"succ".as_slice(),
                &[0xc3, 0x28],
                b"\",\"version\":3}",
            ]
            .concat(),
            "\u{feff}{}".as_bytes().to_vec(),
        ];
        for body in &bad {
            assert!(
                matches!(parse_build(body), Err(ParseError::Json(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // Every truncation of a real answer is refused, none panics.
        for cut in 0..full.len() - 1 {
            assert!(
                parse_build(&full.as_bytes()[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn error_answers_are_missing_fields() {
        for body in [
            r#"{"message":"sql: no rows in result set"}"#,
            r#"{"message":"Unauthorized"}"#,
            "{}",
        ] {
            assert_eq!(
                parse_build(body.as_bytes()).unwrap_err(),
                ParseError::Missing("build.number")
            );
        }
    }

    #[test]
    fn nesting_limit_is_exact() {
        let at = |n: usize| format!("{}{}", "[".repeat(n - 1), "]".repeat(n - 1));
        let body = |n: usize| {
            format!(
                r#"{{"repo_id":9,"number":1,"status":"success","version":3,"s":{}}}"#,
                at(n)
            )
        };
        assert!(parse_build(body(MAX_DEPTH).as_bytes()).is_ok());
        assert!(matches!(
            parse_build(body(MAX_DEPTH + 1).as_bytes()),
            Err(ParseError::Json(_))
        ));
        // Brackets inside strings do not count.
        let quoted = format!(
            r#"{{"repo_id":9,"number":1,"status":"success","version":3,"s":"{}\"{}"}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(parse_build(quoted.as_bytes()).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = format!(
            r#"{{"repo_id":9,"number":1,"status":"success","version":3,"stages":{}{}}}"#,
            "[".repeat(200_000),
            "]".repeat(200_000)
        );
        assert!(parse_build(deep.as_bytes()).is_err());
        let deep_repo = format!(
            r#"{{"id":1,"namespace":"a","name":"b","x":{}1{}}}"#,
            "{\"a\":".repeat(100_000),
            "}".repeat(100_000)
        );
        assert!(parse_repo(deep_repo.as_bytes()).is_err());
        // Nesting within serde_json's limit is fine.
        let ok = format!(
            r#"{{"repo_id":9,"number":1,"status":"success","version":3,"stages":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(parse_build(ok.as_bytes()).is_ok());
    }

    #[test]
    fn repo_answer_parses_and_drops_build() {
        let body = fixture("webhook-build-updated-success.json");
        let top: Value = serde_json::from_str(&body).unwrap();
        let repo_text = member(&body, "repo") + "\n";
        let (r, json) = parse_repo(repo_text.as_bytes()).unwrap();
        assert_eq!(r, repo("octocat", "hello-world"));
        let mut want = top["repo"].clone();
        want.as_object_mut().unwrap().remove("build");
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), want);
        assert!(!json.contains("\"build\""));
        assert!(
            json.contains(r#""version":105,"archived":false}"#),
            "{json}"
        );
    }

    #[test]
    fn repo_json_keeps_order_and_bytes() {
        let body = r#"{"id":7,"namespace":"o","name":"n","x":1.50,"build":{"number":1},"y":"\u00e9\n","z":[1,  2],"archived":false}"#;
        let (r, json) = parse_repo(body.as_bytes()).unwrap();
        assert_eq!(r.id, 7);
        assert_eq!(
            json,
            r#"{"id":7,"namespace":"o","name":"n","x":1.50,"y":"\u00e9\n","z":[1,  2],"archived":false}"#
        );
        // A repo without `build` comes back unchanged.
        let plain = r#"{"id":7,"namespace":"o","name":"n","archived":false}"#;
        assert_eq!(parse_repo(plain.as_bytes()).unwrap().1, plain);
    }

    #[test]
    fn repo_errors() {
        let cases: &[(&str, ParseError)] = &[
            (
                r#"{"namespace":"o","name":"n"}"#,
                ParseError::Missing("repo.id"),
            ),
            (
                r#"{"id":1,"name":"n"}"#,
                ParseError::Missing("repo.namespace"),
            ),
            (
                r#"{"id":1,"namespace":"o"}"#,
                ParseError::Missing("repo.name"),
            ),
            (
                r#"{"id":1,"namespace":"","name":"n"}"#,
                ParseError::Invalid("repo.namespace"),
            ),
            (
                r#"{"id":1,"namespace":"o","name":""}"#,
                ParseError::Invalid("repo.name"),
            ),
            (
                r#"{"id":1,"namespace":"o","name":7}"#,
                ParseError::Invalid("repo.name"),
            ),
            (
                r#"{"id":-1,"namespace":"o","name":"n"}"#,
                ParseError::Invalid("repo.id"),
            ),
            (
                r#"{"id":"1","namespace":"o","name":"n"}"#,
                ParseError::Invalid("repo.id"),
            ),
            (
                r#"{"id":1e30,"namespace":"o","name":"n"}"#,
                ParseError::Invalid("repo.id"),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse_repo(body.as_bytes()).unwrap_err(), *want, "{body}");
        }
        assert!(matches!(parse_repo(b"[1]"), Err(ParseError::Json(_))));
        assert!(matches!(parse_repo(&[0x80]), Err(ParseError::Json(_))));
    }

    #[test]
    fn repo_counter_and_incomplete_list_parse() {
        let repo = r#"{"id":7,"namespace":"o","name":"n","counter":41,"version":3}"#;
        let (r, json, counter) = parse_repo_counter(repo.as_bytes()).unwrap();
        assert_eq!((r.id, counter), (7, 41));
        assert!(json.contains(r#""counter":41"#));
        assert_eq!(
            parse_repo_counter(br#"{"id":7,"namespace":"o","name":"n"}"#).unwrap_err(),
            ParseError::Missing("repo.counter")
        );
        let list = r#"[{"id":7,"namespace":"o","name":"n","counter":41,"build":{"id":9,"repo_id":7,"number":40,"status":"running","version":2}},
            {"id":8,"namespace":"p","name":"q","counter":2,"build":{"number":2,"status":"pending","version":1}}]"#;
        let got = parse_incomplete(list.as_bytes()).unwrap();
        assert_eq!(got.skipped, 0);
        let got = got.entries;
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].0.id, got[0].2, got[1].0.name.as_str(), got[1].2),
            (7, 40, "q", 2)
        );
        assert!(!got[0].1.contains("build"), "{}", got[0].1);
        assert_eq!(parse_incomplete(b"[]").unwrap(), Incomplete::default());
        // An entry without its build is left out, not the answer.
        let no_build = parse_incomplete(br#"[{"id":7,"namespace":"o","name":"n"}]"#).unwrap();
        assert_eq!((no_build.entries.len(), no_build.skipped), (0, 1));
        // An answer that is not one JSON array is an error.
        for bad in [
            &br#"{"message":"Not Implemented"}"#[..],
            b"[{\"id\":7}",
            b"[1] [2]",
            b"\xff",
        ] {
            assert!(parse_incomplete(bad).is_err(), "{bad:?}");
        }
    }

    /// One entry drone could not have written (outside the limits, malformed) is skipped and
    /// counted; every good entry of the same answer is kept, in order.
    #[test]
    fn incomplete_list_skips_bad_entries() {
        let good = |id: u64, number: u64| {
            format!(r#"{{"id":{id},"namespace":"o{id}","name":"n","build":{{"number":{number}}}}}"#)
        };
        let bad = [
            r#"{"id":0,"namespace":"o","name":"n","build":{"number":1}}"#.to_string(),
            format!(
                r#"{{"id":{},"namespace":"o","name":"n","build":{{"number":1}}}}"#,
                MAX_INT + 1
            ),
            format!(
                r#"{{"id":1,"namespace":"o","name":"n","build":{{"number":{}}}}}"#,
                MAX_INT + 1
            ),
            r#"{"id":1,"namespace":"o","name":"n","build":{"number":0}}"#.to_string(),
            r#"{"id":1,"namespace":"..","name":"n","build":{"number":1}}"#.to_string(),
            r#"{"id":1,"namespace":"o","name":"a/b","build":{"number":1}}"#.to_string(),
            r#"{"id":1,"namespace":"o","name":"a\u001b[31m","build":{"number":1}}"#.to_string(),
            format!(
                r#"{{"id":1,"namespace":"{}","name":"n","build":{{"number":1}}}}"#,
                "x".repeat(MAX_NAME_BYTES + 1)
            ),
            format!(
                r#"{{"id":1,"namespace":"o","name":"n","x":"{}","build":{{"number":1}}}}"#,
                "p".repeat(MAX_REPO_JSON_BYTES)
            ),
            r#"{"id":1,"namespace":"o","name":"n","build":{"number":"1"}}"#.to_string(),
            r#"{"id":1,"namespace":"o","name":"n","build":7}"#.to_string(),
            r#"{"id":1,"namespace":"o","name":"n"}"#.to_string(),
            "[]".to_string(),
            "null".to_string(),
        ];
        for b in &bad {
            let body = format!("[{},{b},{}]", good(1, 5), good(2, 9));
            let got = parse_incomplete(body.as_bytes()).unwrap();
            assert_eq!(got.skipped, 1, "{b}");
            let kept: Vec<(u64, u64)> = got.into_iter().map(|(r, _, n)| (r.id, n)).collect();
            assert_eq!(kept, [(1, 5), (2, 9)], "{b}");
        }
        let all_bad = format!("[{}]", bad.join(","));
        let got = parse_incomplete(all_bad.as_bytes()).unwrap();
        assert_eq!((got.entries.len(), got.skipped), (0, bad.len()));
    }

    #[test]
    fn paths_encode_segments() {
        let max = format!("/api/repos/o/n/builds/{}", u64::MAX);
        // (namespace, name, build number or None for the repository's path, path)
        for (ns, name, number, want) in [
            (
                "octocat",
                "hello-world",
                None,
                "/api/repos/octocat/hello-world",
            ),
            (
                "octocat",
                "hello-world",
                Some(101),
                "/api/repos/octocat/hello-world/builds/101",
            ),
            (
                "my org",
                "a/b?c#d%e",
                Some(1),
                "/api/repos/my%20org/a%2Fb%3Fc%23d%25e/builds/1",
            ),
            (
                "A-Za-z0-9-._~",
                "a..b",
                None,
                "/api/repos/A-Za-z0-9-._~/a..b",
            ),
            // Attack 3 of the trust-boundary issue: `..` names never step out of the route.
            ("..", ".", Some(5), "/api/repos/%2E%2E/%2E/builds/5"),
            ("é", "+:@", None, "/api/repos/%C3%A9/%2B%3A%40"),
            ("o", "n", Some(u64::MAX), &max),
        ] {
            let r = repo(ns, name);
            let got = number.map_or_else(|| repo_path(&r), |n| build_path(&r, n));
            assert_eq!(got, want, "{ns} {name} {number:?}");
        }
    }

    #[test]
    fn redelivery_reproduces_drones_final_webhook() {
        let want = fixture("webhook-build-updated-success.json");
        let repo_json = webhook_repo_json("webhook-build-updated-success.json");
        let api = fixture("api-build-success.json");
        let build = parse_build(api.as_bytes()).unwrap();
        let want_value: Value = serde_json::from_str(&want).unwrap();
        let system = member(&want, "system");

        let body = redelivery_body(&repo_json, build.raw(), Some(&system));
        let got: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(got, want_value);
        // Go field order and compact encoding: byte-identical to what drone sent.
        assert_eq!(body, want.trim());
    }

    #[test]
    fn redelivery_from_running_and_created_repos() {
        // The repo of a step webhook (with a stale nested build) and of build:created
        // (without one) give the same re-delivery.
        let api = fixture("api-build-success.json");
        let a = redelivery_body(
            &webhook_repo_json("webhook-build-updated-running.json"),
            api.trim(),
            None,
        );
        let b = redelivery_body(
            &webhook_repo_json("webhook-build-created.json"),
            api.trim(),
            None,
        );
        assert_eq!(a, b);
        let v: Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["repo"]["build"]["status"], "success");
        assert_eq!(v["repo"]["build"], v["build"]);
        assert!(v.get("system").is_none());
        assert!(v.get("user").is_none());
        assert!(a.starts_with(r#"{"event":"build","action":"updated","repo":{"id":42,"#));
        assert!(a.contains(r#""version":105,"build":{"id":5001,"#));
        assert!(a.ends_with(r#""golang:1.22"}]}]}}"#), "{a}");
    }

    #[test]
    fn redelivery_build_placement() {
        let b = r#"{"number":1}"#;
        // Right after version, replacing an existing build wherever it was.
        assert_eq!(
            redelivery_body(
                r#"{"build":{"old":1},"id":1,"version":2,"archived":false}"#,
                b,
                None
            ),
            r#"{"event":"build","action":"updated","repo":{"id":1,"version":2,"build":{"number":1},"archived":false},"build":{"number":1}}"#
        );
        // version last.
        assert_eq!(
            redelivery_body(r#"{"id":1,"version":2}"#, b, Some(r#"{"host":"h"}"#)),
            r#"{"event":"build","action":"updated","repo":{"id":1,"version":2,"build":{"number":1}},"build":{"number":1},"system":{"host":"h"}}"#
        );
        // No version: before permissions/archived, else at the end.
        assert_eq!(
            redelivery_body(r#"{"id":1,"permissions":{},"archived":false}"#, b, None),
            r#"{"event":"build","action":"updated","repo":{"id":1,"build":{"number":1},"permissions":{},"archived":false},"build":{"number":1}}"#
        );
        assert_eq!(
            redelivery_body(r#"{"id":1,"archived":true}"#, b, None),
            r#"{"event":"build","action":"updated","repo":{"id":1,"build":{"number":1},"archived":true},"build":{"number":1}}"#
        );
        assert_eq!(
            redelivery_body(r#"{"id":1}"#, b, None),
            r#"{"event":"build","action":"updated","repo":{"id":1,"build":{"number":1}},"build":{"number":1}}"#
        );
        assert_eq!(
            redelivery_body("{}", b, None),
            r#"{"event":"build","action":"updated","repo":{"build":{"number":1}},"build":{"number":1}}"#
        );
    }

    #[test]
    fn redelivery_is_compact_but_keeps_string_bytes() {
        let repo = "{ \"id\" : 1 ,\n \"name\":\"a  b\\\" c\", \"version\": 2 }";
        let build =
            "\n{\n  \"number\": 1,\n  \"message\": \"x \\\\\\\" y\\n\",\n  \"f\": 1.50E+2\n}\n";
        let body = redelivery_body(repo, build, Some(" { \"link\" : \"h t\" } "));
        assert_eq!(
            body,
            r#"{"event":"build","action":"updated","repo":{"id":1,"name":"a  b\" c","version":2,"build":{"number":1,"message":"x \\\" y\n","f":1.50E+2}},"build":{"number":1,"message":"x \\\" y\n","f":1.50E+2},"system":{"link":"h t"}}"#
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["build"]["message"], "x \\\" y\n");
        assert_eq!(v["repo"]["name"], "a  b\" c");
    }

    #[test]
    fn redelivery_refuses_non_objects() {
        let b = r#"{"repo_id":9,"number":1}"#;
        for (repo, build, system) in [
            ("[]", b, None),
            ("{", b, None),
            ("{}", "[1]", None),
            ("{}", "", None),
            ("{}", "{\"a\":1} x", None),
            ("{}", b, Some("null")),
            ("{}", b, Some("\"s\"")),
            ("{}", b, Some("")),
        ] {
            assert!(
                try_redelivery_body(repo, build, system).is_err(),
                "{repo} {build} {system:?}"
            );
            assert_eq!(redelivery_body(repo, build, system), "");
        }
    }

    #[test]
    fn encoding_helpers() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(hex_digit(0), '0');
        assert_eq!(hex_digit(15), 'F');
    }
}
