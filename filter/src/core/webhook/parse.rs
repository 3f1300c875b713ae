//! Parsing a live webhook's body in one pass ([`scan_webhook`]): the fields we act on,
//! decoded and held to the input limits, and where the `repo` and `system` objects are.

use crate::core::drone_api::parse_repo_object;
use crate::core::json::{self, Scanner};
use crate::core::limits;
use crate::core::model::{BuildStatus, ParseError, ParsedWebhook, RepoRef};
use crate::core::object::{begin_object, utf8, RawObject};
use std::borrow::Cow;

/// Parses a webhook body into an owned [`ParsedWebhook`], with the `repo` (without its nested
/// `build`) and `system` JSON. Only `event == "build"` with action `created` or `updated` is a
/// transition; anything else is `Err(NotABuildEvent)`. Never panics, on any input.
///
/// The event and action are checked before the repo and build, so a `repo:enabled` or
/// `user:created` webhook is reported as not a build event rather than as malformed.
pub fn parse_webhook(body: &[u8]) -> Result<ParsedWebhook, ParseError> {
    scan_webhook(body)?.into_parsed(true)
}

/// A webhook parsed in one pass over the body: the fields we act on, decoded, and where the
/// `repo` and `system` objects are in the body (nothing copied).
///
/// The request path parses every webhook; most of the body (the stages and steps of the
/// build, and `repo.build`, a second copy of it) is only scanned for validity. The repository
/// and system JSON are turned into owned strings only when they must be sent to the leader
/// ([`WebhookView::into_parsed`] with `true`), which the HTTP filter does once per repository
/// and change (see [`super::metadata`]).
#[derive(Debug)]
pub struct WebhookView<'a> {
    pub repo: RepoRef,
    pub number: u64,
    pub status: BuildStatus,
    pub version: u64,
    /// `created` or `updated`.
    pub action: &'static str,
    /// The `repo` object exactly as in the body.
    repo_raw: &'a str,
    /// Where the member `repo.build` is in `repo_raw` (with the comma before it), if it has
    /// exactly one.
    repo_build: Option<(usize, usize)>,
    /// The `system` object exactly as in the body.
    system_raw: Option<&'a str>,
}

impl WebhookView<'_> {
    /// A hash of what the leader caches from this webhook: the repository object without the
    /// value of its nested `build` (which changes with every webhook), and the system object.
    /// Equal hashes mean there is nothing new to send.
    pub fn metadata_hash(&self) -> u64 {
        let repo = self.repo_raw.as_bytes();
        let (a, b) = match self.repo_build {
            Some((start, end)) => (
                repo.get(..start).unwrap_or_default(),
                repo.get(end..).unwrap_or_default(),
            ),
            None => (repo, &[][..]),
        };
        let system = self.system_raw.unwrap_or_default().as_bytes();
        // The repository without `build` (one part, so a missing `build` hashes the same),
        // then the system.
        let mut h = WordHash::default();
        h.add(a);
        h.add(b);
        h.end_part();
        h.add(system);
        h.end_part();
        h.h
    }

    /// The owned webhook the reconciler records. `with_metadata` adds the repository JSON
    /// (nested `build` removed, every other member byte for byte) and the system JSON.
    pub fn into_parsed(self, with_metadata: bool) -> Result<ParsedWebhook, ParseError> {
        let (repo_json, system_json) = if with_metadata {
            let (_, json) = parse_repo_object(&RawObject::parse_nested(self.repo_raw)?)?;
            (Some(json), self.system_raw.map(str::to_string))
        } else {
            (None, None)
        };
        Ok(ParsedWebhook {
            repo: self.repo,
            number: self.number,
            status: self.status,
            version: self.version,
            action: self.action.to_string(),
            repo_json,
            system_json,
        })
    }
}

/// A change detector, not a checksum: it runs on every webhook over ~2 KB of repository JSON,
/// so it takes eight bytes per step (FxHash's rotate-xor-multiply) where FNV-1a took one. A
/// collision would only delay a changed repository's JSON until the refresh of
/// [`super::metadata`]. Streaming: a part given in pieces hashes as if given whole.
#[derive(Default)]
struct WordHash {
    h: u64,
    /// Bytes of the current part not yet hashed (fewer than eight).
    pending: [u8; 8],
    pending_len: usize,
    part_len: u64,
}

impl WordHash {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn word(&mut self, w: u64) {
        self.h = (self.h.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }

    /// Appends bytes to the current part.
    fn add(&mut self, mut bytes: &[u8]) {
        self.part_len = self.part_len.wrapping_add(bytes.len() as u64);
        while self.pending_len != 0 {
            let Some((&first, rest)) = bytes.split_first() else {
                return;
            };
            if let Some(slot) = self.pending.get_mut(self.pending_len) {
                *slot = first;
            }
            self.pending_len += 1;
            bytes = rest;
            if self.pending_len == 8 {
                self.pending_len = 0;
                self.word(u64::from_le_bytes(self.pending));
            }
        }
        let (words, tail) = json::le_words(bytes);
        for w in words {
            self.word(w);
        }
        for (d, s) in self.pending.iter_mut().zip(tail) {
            *d = *s;
        }
        self.pending_len = tail.len();
    }

    /// Ends the current part: its last bytes and its length go into the hash.
    fn end_part(&mut self) {
        let mut last = [0u8; 8];
        for (d, s) in last
            .iter_mut()
            .zip(self.pending.iter().take(self.pending_len))
        {
            *d = *s;
        }
        self.word(u64::from_le_bytes(last));
        self.word(self.part_len);
        self.pending_len = 0;
        self.part_len = 0;
    }
}

/// A member of an object we read: how often its key occurred and its first value.
#[derive(Clone, Copy, Default)]
struct Field<'a> {
    count: u32,
    raw: &'a str,
}

impl<'a> Field<'a> {
    fn add(&mut self, raw: &'a str) {
        if self.count == 0 {
            self.raw = raw;
        }
        self.count = self.count.saturating_add(1);
    }

    /// The value; a key present more than once is ambiguous (decoders disagree on which one
    /// wins), so it is an error rather than a guess.
    fn get(&self, name: &'static str) -> Result<Option<&'a str>, ParseError> {
        match self.count {
            0 => Ok(None),
            1 => Ok(Some(self.raw)),
            _ => Err(ParseError::Invalid(name)),
        }
    }

    /// Absent and JSON `null` are the same (Go's `omitempty` pointers).
    fn get_non_null(&self, name: &'static str) -> Result<Option<&'a str>, ParseError> {
        Ok(self.get(name)?.filter(|v| *v != "null"))
    }

    fn required(&self, name: &'static str) -> Result<&'a str, ParseError> {
        self.get(name)?.ok_or(ParseError::Missing(name))
    }

    fn string(&self, name: &'static str) -> Result<Cow<'a, str>, ParseError> {
        json::decode_string(self.required(name)?).ok_or(ParseError::Invalid(name))
    }

    fn u64(&self, name: &'static str) -> Result<u64, ParseError> {
        json::decode_u64(self.required(name)?).ok_or(ParseError::Invalid(name))
    }
}

/// The members of the build object we read.
const BUILD_KEYS: [&str; 3] = ["number", "status", "version"];

/// The members of a nested object (`repo` or `build`) we read, up to three, plus `build`
/// inside `repo`.
#[derive(Default)]
struct Nested<'a> {
    /// The whole value as in the body.
    raw: &'a str,
    /// It was a JSON object (else using it is a JSON error).
    is_object: bool,
    /// A key of it could not be decoded (a JSON error, if we use the object).
    bad_key: bool,
    fields: [Field<'a>; 3],
    /// `repo.build`: where the member is, relative to `raw`.
    inner_build: Field<'a>,
    inner_build_at: (usize, usize),
    /// Bytes of the values of every `build` member (not kept, so not counted against the
    /// repository JSON limit).
    inner_build_bytes: usize,
    /// The last `repo.build`, read as the top-level `build` is ([`BUILD_KEYS`]). Drone sends
    /// the build twice, as `repo.build` and `build`, byte for byte the same: the second is then
    /// compared with the first instead of scanned again.
    inner_build_read: Option<Members<'a>>,
}

/// What [`nested`] read of an object without a `build` of its own to watch.
#[derive(Clone, Copy)]
struct Members<'a> {
    raw: &'a str,
    is_object: bool,
    bad_key: bool,
    fields: [Field<'a>; 3],
}

impl<'a> Members<'a> {
    fn of(n: &Nested<'a>) -> Self {
        Members {
            raw: n.raw,
            is_object: n.is_object,
            bad_key: n.bad_key,
            fields: n.fields,
        }
    }

    fn nested(self) -> Nested<'a> {
        Nested {
            raw: self.raw,
            is_object: self.is_object,
            bad_key: self.bad_key,
            fields: self.fields,
            ..Nested::default()
        }
    }
}

/// Scans the value at the scanner's position (a member of an object at nesting `depth`, 1 for
/// the top-level object): an object's members named in `keys` are recorded, everything else is
/// only checked.
fn nested<'a>(
    s: &mut Scanner<'a>,
    keys: [&str; 3],
    watch_build: bool,
    depth: usize,
) -> Result<Nested<'a>, ParseError> {
    let mut n = Nested::default();
    s.ws();
    let start = s.pos();
    if !s.begin_object() {
        n.raw = s.value(depth)?;
        return Ok(n);
    }
    n.is_object = true;
    let mut first = true;
    // End of the previous member's value: `repo.build` is cut from there (its comma included)
    // when hashing, so a repository hashes the same with and without it.
    let mut prev_end = s.pos();
    let [a, b, c] = keys;
    let wanted = [a, b, c, if watch_build { "build" } else { a }];
    while let Some(key) = s.next_key_among(first, &wanted, depth + 1, &mut prev_end)? {
        first = false;
        let name = key.decode();
        // One decision per member, and every read depends on it: the repository's `build` is
        // read as the top-level `build` is (the bytes, where they are, and the members for
        // `scan_webhook`'s comparison); any other value is only checked, and recorded if its
        // key is one of `keys`.
        let value = if watch_build && name.as_deref() == Ok("build") {
            let read = Members::of(&nested(s, BUILD_KEYS, false, depth + 1)?);
            n.inner_build.add(read.raw);
            n.inner_build_bytes = n.inner_build_bytes.saturating_add(read.raw.len());
            n.inner_build_at = (prev_end - start, s.pos() - start);
            // The last one read: a copy equal to it byte for byte has its verdict, whichever
            // of several it is.
            n.inner_build_read = Some(read);
            read.raw
        } else {
            s.value(depth + 1)?
        };
        match name {
            Ok(name) => {
                if let Some(i) = keys.iter().position(|k| *k == name) {
                    if let Some(f) = n.fields.get_mut(i) {
                        f.add(value);
                    }
                }
            }
            Err(_) => n.bad_key = true,
        }
        prev_end = s.pos();
    }
    n.raw = s.text_since(start);
    Ok(n)
}

/// The nested object's members, once the webhook is known to be a build event.
fn object_fields<'a, 'n>(n: &'n Nested<'a>) -> Result<&'n [Field<'a>; 3], ParseError> {
    if !n.is_object {
        return Err(ParseError::Json("expected a JSON object".to_string()));
    }
    if n.bad_key {
        return Err(ParseError::Json("invalid escape in key".to_string()));
    }
    Ok(&n.fields)
}

/// Parses a webhook body in one forward pass (see [`WebhookView`]), with exactly the
/// verdicts of the serde-based reference parser (`test_support::reference`) on every input
/// (differentially tested in `filter/tests/webhook.rs` and fuzzed). Never panics.
pub fn scan_webhook(body: &[u8]) -> Result<WebhookView<'_>, ParseError> {
    let text = utf8(body)?;
    let mut s = Scanner::new(text);
    begin_object(&mut s)?;
    let (mut event, mut action, mut system) =
        (Field::default(), Field::default(), Field::default());
    let (mut repo, mut build) = (Field::default(), Field::default());
    let (mut repo_obj, mut build_obj) = (Nested::default(), Nested::default());
    let mut first = true;
    while let Some(key) = s.next_key(first)? {
        first = false;
        let key = key.decode()?;
        match &*key {
            "repo" => {
                let n = nested(&mut s, ["id", "namespace", "name"], true, 1)?;
                repo.add(n.raw);
                if repo.count == 1 {
                    repo_obj = n;
                }
            }
            "build" => {
                // The same bytes as the `repo.build` read (at a deeper nesting): the same
                // verdict and members, without a second scan.
                let copy = repo_obj
                    .inner_build_read
                    .filter(|read| s.skip_copy(read.raw));
                let n = match copy {
                    Some(read) => read.nested(),
                    None => nested(&mut s, BUILD_KEYS, false, 1)?,
                };
                build.add(n.raw);
                if build.count == 1 {
                    build_obj = n;
                }
            }
            other => {
                let value = s.value(1)?;
                match other {
                    "event" => event.add(value),
                    "action" => action.add(value),
                    "system" => system.add(value),
                    _ => {}
                }
            }
        }
    }
    s.end()?;

    if event.string("event")? != "build" {
        return Err(ParseError::NotABuildEvent);
    }
    let action = match &*action.string("action")? {
        "created" => "created",
        "updated" => "updated",
        _ => return Err(ParseError::NotABuildEvent),
    };

    let repo_raw = repo
        .get_non_null("repo")?
        .ok_or(ParseError::Missing("repo"))?;
    let [id, namespace, name] = object_fields(&repo_obj)?;
    let repo_ref = RepoRef {
        id: limits::check_positive(id.u64("repo.id")?, "repo.id")?,
        namespace: slug_part(namespace.string("repo.namespace")?, "repo.namespace")?,
        name: slug_part(name.string("repo.name")?, "repo.name")?,
    };
    limits::check_repo_json_len(repo_raw.len().saturating_sub(repo_obj.inner_build_bytes))?;

    build
        .get_non_null("build")?
        .ok_or(ParseError::Missing("build"))?;
    let [number, status, version] = object_fields(&build_obj)?;
    let number = limits::check_positive(number.u64("build.number")?, "build.number")?;
    let status = BuildStatus::parse(&status.string("build.status")?);
    let version = limits::check_version(version.u64("build.version")?, "build.version")?;

    let system_raw = system.get_non_null("system")?;
    if let Some(raw) = system_raw {
        limits::check_system_json(raw)?;
    }

    Ok(WebhookView {
        repo: repo_ref,
        number,
        status,
        version,
        action,
        repo_raw,
        repo_build: (repo_obj.inner_build.count == 1).then_some(repo_obj.inner_build_at),
        system_raw,
    })
}

/// A namespace or name within [`limits::check_slug_part`].
fn slug_part(s: Cow<'_, str>, name: &'static str) -> Result<String, ParseError> {
    limits::check_slug_part(&s, name)?;
    Ok(s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{BuildStatus, RepoRef};
    use serde_json::Value;

    fn fixture(name: &str) -> String {
        drone_model::fixtures::text(name).to_string()
    }

    const SYSTEM: &str = r#"{"proto":"https","host":"drone.example.com","link":"https://drone.example.com","version":"2.25.0"}"#;

    fn octocat() -> RepoRef {
        RepoRef {
            id: 42,
            namespace: "octocat".to_string(),
            name: "hello-world".to_string(),
        }
    }

    /// A minimal webhook with the given event, action, repo and build members.
    fn body(event: &str, action: &str, repo: &str, build: &str) -> String {
        format!(r#"{{"event":{event},"action":{action},"repo":{repo},"build":{build}}}"#)
    }

    /// A `build:updated` webhook with the given repo and build members.
    fn updated(repo: &str, build: &str) -> String {
        body(r#""build""#, r#""updated""#, repo, build)
    }

    const REPO: &str =
        r#"{"id":42,"namespace":"octocat","name":"hello-world","version":1,"archived":false}"#;
    const BUILD: &str = r#"{"number":101,"status":"running","version":2}"#;

    #[test]
    fn created_fixture() {
        let text = fixture("webhook-build-created.json");
        let w = parse_webhook(text.as_bytes()).unwrap();
        assert_eq!(w.repo, octocat());
        assert_eq!(w.number, 101);
        assert_eq!(w.status, BuildStatus::Pending);
        assert_eq!(w.version, 1);
        assert_eq!(w.action, "created");
        assert_eq!(w.system_json.as_deref(), Some(SYSTEM));
        let repo_json = w.repo_json.unwrap();
        // build:created has no repo.build: the repo object is copied verbatim.
        let start = text.find(r#""repo":"#).unwrap() + 7;
        assert_eq!(&text[start..start + repo_json.len()], repo_json);
        assert!(repo_json.ends_with(r#""version":105,"archived":false}"#));
    }

    #[test]
    fn running_fixture_strips_repo_build() {
        let text = fixture("webhook-build-updated-running.json");
        let w = parse_webhook(text.as_bytes()).unwrap();
        assert_eq!(w.repo, octocat());
        assert_eq!(
            (w.number, w.status, w.version),
            (101, BuildStatus::Running, 2)
        );
        assert_eq!(w.action, "updated");
        assert_eq!(w.system_json.as_deref(), Some(SYSTEM));
        let repo_json = w.repo_json.unwrap();
        assert!(!repo_json.contains("\"build\""));
        assert!(!repo_json.contains("stages"));
        // Same repo as in build:created, byte for byte.
        let created = parse_webhook(fixture("webhook-build-created.json").as_bytes()).unwrap();
        assert_eq!(Some(repo_json), created.repo_json);
    }

    #[test]
    fn success_fixture() {
        let text = fixture("webhook-build-updated-success.json");
        let w = parse_webhook(text.as_bytes()).unwrap();
        assert_eq!(w.key().repo_id, 42);
        assert_eq!(w.key().number, 101);
        assert_eq!((w.status, w.version), (BuildStatus::Success, 3));
        let repo: Value = serde_json::from_str(w.repo_json.as_deref().unwrap()).unwrap();
        let mut want: Value = serde_json::from_str::<Value>(&text).unwrap()["repo"].clone();
        want.as_object_mut().unwrap().remove("build");
        assert_eq!(repo, want);
    }

    #[test]
    fn non_build_events() {
        let not_build = [
            body(r#""repo""#, r#""enabled""#, REPO, BUILD),
            body(r#""user""#, r#""created""#, REPO, BUILD),
            body(r#""Build""#, r#""updated""#, REPO, BUILD),
            body(r#""build""#, r#""deleted""#, REPO, BUILD),
            body(r#""build""#, r#""completed""#, REPO, BUILD),
            body(r#""build""#, r#""""#, REPO, BUILD),
            // Not a build event, so a missing build does not matter.
            r#"{"event":"repo","action":"enabled","repo":{"id":1}}"#.to_string(),
            // drone's own user:created test body.
            serde_json::from_str::<Value>(&fixture("signature-vectors.json")).unwrap()[0]["body"]
                .as_str()
                .unwrap()
                .to_string(),
        ];
        for b in &not_build {
            assert_eq!(
                parse_webhook(b.as_bytes()).unwrap_err(),
                ParseError::NotABuildEvent,
                "{b}"
            );
        }
    }

    #[test]
    fn field_errors_are_typed() {
        use ParseError::{Invalid, Missing};
        let system = |v: &str| {
            format!(
                r#"{{"event":"build","action":"updated","repo":{REPO},"build":{BUILD},"system":{v}}}"#
            )
        };
        let mut cases: Vec<(String, ParseError)> = vec![
            (r#"{"action":"updated"}"#.into(), Missing("event")),
            (r#"{"event":"build"}"#.into(), Missing("action")),
            (r#"{"event":1,"action":"updated"}"#.into(), Invalid("event")),
            (
                r#"{"event":"build","action":null}"#.into(),
                Invalid("action"),
            ),
            (
                r#"{"event":"build","event":"build","action":"updated"}"#.into(),
                Invalid("event"),
            ),
            (
                r#"{"event":"build","action":"updated","build":{}}"#.into(),
                Missing("repo"),
            ),
            (
                r#"{"event":"build","action":"updated","repo":null}"#.into(),
                Missing("repo"),
            ),
            (
                format!(r#"{{"event":"build","action":"updated","repo":{REPO}}}"#),
                Missing("build"),
            ),
            (updated(REPO, "null"), Missing("build")),
            (system(r#""x""#), Invalid("system")),
            (system("[1]"), Invalid("system")),
            // Valid JSON, but a key re-deliveries cannot decode: they would have no body.
            (system(r#"{"\ud800":1}"#), Invalid("system")),
        ];
        for (repo, want) in [
            (r#"{"namespace":"o","name":"n"}"#, Missing("repo.id")),
            (r#"{"id":1,"name":"n"}"#, Missing("repo.namespace")),
            (r#"{"id":1,"namespace":"o"}"#, Missing("repo.name")),
            (
                r#"{"id":1,"namespace":"o","name":""}"#,
                Invalid("repo.name"),
            ),
            (
                r#"{"id":1,"namespace":"","name":"n"}"#,
                Invalid("repo.namespace"),
            ),
            (
                r#"{"id":1.0,"namespace":"o","name":"n"}"#,
                Invalid("repo.id"),
            ),
            (
                r#"{"id":1,"namespace":["o"],"name":"n"}"#,
                Invalid("repo.namespace"),
            ),
        ] {
            cases.push((updated(repo, BUILD), want));
        }
        for (build, want) in [
            (
                r#"{"status":"running","version":2}"#,
                Missing("build.number"),
            ),
            (r#"{"number":1,"version":2}"#, Missing("build.status")),
            (
                r#"{"number":1,"status":"running"}"#,
                Missing("build.version"),
            ),
            (
                r#"{"number":1,"status":"running","version":-2}"#,
                Invalid("build.version"),
            ),
            (
                r#"{"number":1,"status":"running","version":2.5}"#,
                Invalid("build.version"),
            ),
            (
                r#"{"number":1,"status":"running","version":"2"}"#,
                Invalid("build.version"),
            ),
            (
                r#"{"number":1,"status":"running","version":99999999999999999999}"#,
                Invalid("build.version"),
            ),
            (
                r#"{"number":"1","status":"running","version":2}"#,
                Invalid("build.number"),
            ),
            (
                r#"{"number":1,"status":true,"version":2}"#,
                Invalid("build.status"),
            ),
        ] {
            cases.push((updated(REPO, build), want));
        }
        for (b, want) in &cases {
            assert_eq!(parse_webhook(b.as_bytes()).unwrap_err(), *want, "{b}");
        }
        // The wrong shape for repo/build objects is a JSON error.
        for (repo, build) in [
            ("[1]", BUILD),
            ("\"r\"", BUILD),
            (REPO, "[101,\"running\",2]"),
            (REPO, "7"),
        ] {
            let b = updated(repo, build);
            assert!(
                matches!(parse_webhook(b.as_bytes()), Err(ParseError::Json(_))),
                "{b}"
            );
        }
    }

    #[test]
    fn unknown_status_is_not_an_error() {
        let b = updated(REPO, r#"{"number":1,"status":"exploded","version":9}"#);
        let w = parse_webhook(b.as_bytes()).unwrap();
        assert_eq!(w.status, BuildStatus::Unknown);
        assert_eq!(w.version, 9);
        assert_eq!(w.system_json, None);
        let max = body(
            r#""build""#,
            r#""updated""#,
            REPO,
            &format!(
                r#"{{"number":{0},"status":"success","version":{0}}}"#,
                i64::MAX
            ),
        );
        let w = parse_webhook(max.as_bytes()).unwrap();
        let max = i64::MAX as u64;
        assert_eq!((w.number, w.version), (max, max));
    }

    #[test]
    fn system_null_is_absent() {
        let b = format!(
            r#"{{"event":"build","action":"created","repo":{REPO},"build":{BUILD},"system":null}}"#
        );
        assert_eq!(parse_webhook(b.as_bytes()).unwrap().system_json, None);
        let b = format!(
            r#"{{"system":{{}},"build":{BUILD},"repo":{REPO},"action":"created","event":"build"}}"#
        );
        assert_eq!(
            parse_webhook(b.as_bytes()).unwrap().system_json.as_deref(),
            Some("{}")
        );
    }

    #[test]
    fn repo_json_is_byte_exact_without_build() {
        let repo = r#"{"id":42,"namespace":"octocat","name":"hello-world","f":1.50,"s":"\u00e9\"","version":105,"build":{"number":100,"status":"running"},"permissions":{"read":true},"archived":false}"#;
        let b = updated(repo, BUILD);
        let w = parse_webhook(b.as_bytes()).unwrap();
        assert_eq!(
            w.repo_json.as_deref(),
            Some(
                r#"{"id":42,"namespace":"octocat","name":"hello-world","f":1.50,"s":"\u00e9\"","version":105,"permissions":{"read":true},"archived":false}"#
            )
        );
        // The top-level build wins over the stale nested one.
        assert_eq!((w.number, w.status), (101, BuildStatus::Running));
    }

    #[test]
    fn garbage_never_panics() {
        let text = fixture("webhook-build-updated-success.json");
        for cut in 0..text.len() - 1 {
            assert!(
                parse_webhook(&text.as_bytes()[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad: Vec<Vec<u8>> = vec![
            vec![],
            b"null".to_vec(),
            b"[]".to_vec(),
            br#"["build","updated"]"#.to_vec(),
            b"{}".to_vec(),
            b"{\"event\":\"build\"".to_vec(),
            vec![0xff; 64],
            [b"{\"event\":\"bu".as_slice(), &[0xe2, 0x82], b"ild\"}"].concat(),
            format!("{text}x").into_bytes(),
            format!("{text}{text}").into_bytes(),
            format!(
                r#"{{"event":"build","action":"updated","user":{}{},"repo":{REPO},"build":{BUILD}}}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
            format!(
                r#"{{"event":"build","action":"updated","repo":{REPO},"build":{{"number":1,"status":"running","version":2,"stages":{}{}}}}}"#,
                "{\"a\":".repeat(50_000),
                "}".repeat(50_000)
            )
            .into_bytes(),
            "{\"event\":\"build\",\"action\":\"updated\",\"repo\":{\"id\":1,\"namespace\":\"\\ud800\",\"name\":\"n\"}}"
                .as_bytes()
                .to_vec(),
        ];
        // Flip every byte of a valid body once.
        let small = updated(REPO, BUILD);
        for i in 0..small.len() {
            for v in [0u8, b'"', b'{', b'}', b'\\', 0x80] {
                let mut b = small.clone().into_bytes();
                b[i] = v;
                bad.push(b);
            }
        }
        for b in &bad {
            // Only must not panic; some flips still give valid JSON.
            let _ = parse_webhook(b);
        }
        for b in bad.iter().take(13) {
            assert!(
                parse_webhook(b).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn metadata_hash_ignores_repo_build_only() {
        let running = fixture("webhook-build-updated-running.json");
        let success = fixture("webhook-build-updated-success.json");
        let created = fixture("webhook-build-created.json");
        let h = |t: &str| scan_webhook(t.as_bytes()).unwrap().metadata_hash();
        // The three webhooks of one build differ in repo.build, not in the repository.
        assert_eq!(h(&running), h(&success));
        assert_eq!(h(&running), h(&created));
        let renamed = running.replace(r#""name":"hello-world""#, r#""name":"hello-there""#);
        assert_ne!(h(&running), h(&renamed));
        let system = running.replace(r#""version":"2.25.0""#, r#""version":"2.26.0""#);
        assert_ne!(h(&running), h(&system));
        // Without metadata the message carries only the transition.
        let w = scan_webhook(running.as_bytes())
            .unwrap()
            .into_parsed(false)
            .unwrap();
        assert_eq!((w.repo_json, w.system_json), (None, None));
        assert_eq!(
            (w.number, w.version, w.action.as_str()),
            (101, 2, "updated")
        );
    }

    /// The repository's own `build` is cut out of its hash, and only it: a key of the
    /// repository written with an escape (which the parser decodes, as it cannot compare it
    /// unread) stays in, and the repository still hashes the same whatever its build.
    #[test]
    fn metadata_hash_cuts_out_the_repositorys_build_and_not_an_escaped_key() {
        let h = |t: &str| scan_webhook(t.as_bytes()).unwrap().metadata_hash();
        let repo = |build: &str| {
            format!(
                r#"{{"id":42,"namespace":"octocat","name":"hello-world","l\u0069nk":"x","build":{build}}}"#
            )
        };
        let running = updated(&repo(BUILD), BUILD);
        let success = r#"{"number":101,"status":"success","version":3}"#;
        assert_eq!(h(&running), h(&updated(&repo(success), success)));
        let relinked = running.replace(r#""x""#, r#""y""#);
        assert_ne!(h(&running), h(&relinked));
    }

    /// The nesting limit holds in the members the parser reads as in any other value: one
    /// level beyond it is not JSON (counted and logged as unparsable) whatever the event; at
    /// it the value is read, and refused for its type where it has one.
    #[test]
    fn members_read_are_held_to_the_nesting_limit() {
        let deep = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        // The webhook is the first level, `repo` and `build` the second.
        let limit = json::MAX_DEPTH - 2;
        for levels in [limit, limit + 1] {
            let v = deep(levels);
            let too_deep = levels > limit;
            let verdict = |text: String, at_limit: ParseError| {
                let got = parse_webhook(text.as_bytes());
                match got {
                    Err(ParseError::Json(_)) => assert!(too_deep, "{levels}: {text}"),
                    other => assert_eq!(other, Err(at_limit), "{levels}: {text}"),
                }
            };
            let repo_with = |key: &str| {
                format!(r#"{{"id":42,"namespace":"octocat","name":"hello-world","{key}":{v}}}"#)
            };
            let build_with = |key: &str| {
                format!(r#"{{"number":101,"status":"running","version":2,"{key}":{v}}}"#)
            };
            for (key, field) in [("id", "repo.id"), ("name", "repo.name")] {
                let repo = repo_with(key).replacen(&format!(r#""{key}":"#), r#""_":"#, 1);
                verdict(updated(&repo, BUILD), ParseError::Invalid(field));
                let event = body(r#""repo""#, r#""updated""#, &repo, BUILD);
                verdict(event, ParseError::NotABuildEvent);
            }
            for (key, field) in [("number", "build.number"), ("version", "build.version")] {
                let build = build_with(key).replacen(&format!(r#""{key}":"#), r#""_":"#, 1);
                verdict(updated(REPO, &build), ParseError::Invalid(field));
            }
            // A key with an escape is decoded before its value is read: the same limit.
            let escaped = build_with(r"\u005f");
            match parse_webhook(updated(REPO, &escaped).as_bytes()) {
                Err(ParseError::Json(_)) => assert!(too_deep),
                other => assert!(!too_deep && other.is_ok(), "{levels}: {other:?}"),
            }
        }
    }

    #[test]
    fn word_hash_of_a_part_does_not_depend_on_its_pieces() {
        let text: Vec<u8> = (0u8..=200).collect();
        let whole = {
            let mut h = WordHash::default();
            h.add(&text);
            h.end_part();
            h.h
        };
        for cut in [0, 1, 7, 8, 9, 100, 200, 201] {
            for cut2 in [cut, (cut + 3).min(201), 201] {
                let mut h = WordHash::default();
                h.add(&text[..cut]);
                h.add(&text[cut..cut2]);
                h.add(&text[cut2..]);
                h.end_part();
                assert_eq!(h.h, whole, "cut at {cut}, {cut2}");
            }
        }
        // A byte moved from one part to the next changes it.
        let parts = |a: &[u8], b: &[u8]| {
            let mut h = WordHash::default();
            h.add(a);
            h.end_part();
            h.add(b);
            h.end_part();
            h.h
        };
        assert_ne!(parts(b"ab", b"c"), parts(b"a", b"bc"));
        assert_ne!(parts(b"", b""), parts(b"\0", b""));
    }

    /// The change detector sees every one-bit change of a repository's JSON: each step,
    /// `(h.rotate_left(5) ^ w) * K` with `K` odd, is a bijection of `h` for a fixed word and of
    /// the word for a fixed `h`, so two parts of one length that differ anywhere hash apart
    /// when they differ in one word. (A collision of larger changes only delays a refresh.)
    #[test]
    fn word_hash_sees_every_one_bit_change() {
        let mut rng = crate::core::backoff::Rng::new(7);
        let text: Vec<u8> = (0..37).map(|_| rng.next_u64() as u8).collect();
        let hash = |t: &[u8]| {
            let mut h = WordHash::default();
            h.add(t);
            h.end_part();
            h.h
        };
        let original = hash(&text);
        for bit in 0..text.len() * 8 {
            let mut flipped = text.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(hash(&flipped), original, "bit {bit}");
        }
    }
}
