//! Recognising and parsing drone's live `build` webhooks.

use super::drone_api::{build_fields, parse_repo_object, utf8, RawObject};
use super::model::{ParseError, ParsedWebhook};

/// True when a request is one of drone's build webhooks that we should observe: method `POST`,
/// path equal to `webhook_path` or below it (next char `/` or `?`), and `X-Drone-Event: build`.
///
/// The boundary check keeps `/hook` from matching `/hooks`; a `webhook_path` that ends with
/// `/` already marks the boundary, so it is a plain prefix. The method is compared
/// case-sensitively (HTTP methods are), the event header case-insensitively and trimmed, to
/// tolerate proxies that rewrite header values.
pub fn is_build_webhook(
    method: &str,
    path: &str,
    drone_event: Option<&str>,
    webhook_path: &str,
) -> bool {
    if method != "POST" {
        return false;
    }
    if !drone_event.is_some_and(|e| e.trim().eq_ignore_ascii_case("build")) {
        return false;
    }
    if webhook_path.is_empty() {
        return false;
    }
    if webhook_path.ends_with('/') {
        return path.starts_with(webhook_path);
    }
    match path.strip_prefix(webhook_path) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

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
    let (repo, repo_json) = parse_repo_object(&RawObject::parse_nested(repo_raw.get())?)?;

    let build_raw = top
        .get_non_null("build", "build")?
        .ok_or(ParseError::Missing("build"))?;
    let (number, status, version) = build_fields(&RawObject::parse_nested(build_raw.get())?)?;

    let system_json = match top.get_non_null("system", "system")? {
        Some(raw) => {
            // Re-deliveries splice it in as an object; anything else would break them.
            if !raw.get().starts_with('{') {
                return Err(ParseError::Invalid("system"));
            }
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::core::model::{BuildStatus, RepoRef};
    use serde_json::Value;

    fn fixture(name: &str) -> String {
        let path =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/drone/").to_string() + name;
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("drone fixture `{path}` is missing ({e}); the tests need the shared fixtures directory")
        })
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
        let cases: Vec<(String, ParseError)> = vec![
            (
                r#"{"action":"updated"}"#.into(),
                ParseError::Missing("event"),
            ),
            (r#"{"event":"build"}"#.into(), ParseError::Missing("action")),
            (
                r#"{"event":1,"action":"updated"}"#.into(),
                ParseError::Invalid("event"),
            ),
            (
                r#"{"event":"build","action":null}"#.into(),
                ParseError::Invalid("action"),
            ),
            (
                r#"{"event":"build","event":"build","action":"updated"}"#.into(),
                ParseError::Invalid("event"),
            ),
            (
                r#"{"event":"build","action":"updated","build":{}}"#.into(),
                ParseError::Missing("repo"),
            ),
            (
                r#"{"event":"build","action":"updated","repo":null}"#.into(),
                ParseError::Missing("repo"),
            ),
            (
                format!(r#"{{"event":"build","action":"updated","repo":{REPO}}}"#),
                ParseError::Missing("build"),
            ),
            (
                body(r#""build""#, r#""updated""#, REPO, "null"),
                ParseError::Missing("build"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    r#"{"namespace":"o","name":"n"}"#,
                    BUILD,
                ),
                ParseError::Missing("repo.id"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    r#"{"id":1,"name":"n"}"#,
                    BUILD,
                ),
                ParseError::Missing("repo.namespace"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    r#"{"id":1,"namespace":"o"}"#,
                    BUILD,
                ),
                ParseError::Missing("repo.name"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    r#"{"id":1,"namespace":"o","name":""}"#,
                    BUILD,
                ),
                ParseError::Invalid("repo.name"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    r#"{"id":1,"namespace":"","name":"n"}"#,
                    BUILD,
                ),
                ParseError::Invalid("repo.namespace"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    r#"{"id":1.0,"namespace":"o","name":"n"}"#,
                    BUILD,
                ),
                ParseError::Invalid("repo.id"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    r#"{"id":1,"namespace":["o"],"name":"n"}"#,
                    BUILD,
                ),
                ParseError::Invalid("repo.namespace"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    REPO,
                    r#"{"status":"running","version":2}"#,
                ),
                ParseError::Missing("build.number"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    REPO,
                    r#"{"number":1,"version":2}"#,
                ),
                ParseError::Missing("build.status"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    REPO,
                    r#"{"number":1,"status":"running"}"#,
                ),
                ParseError::Missing("build.version"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    REPO,
                    r#"{"number":1,"status":"running","version":-2}"#,
                ),
                ParseError::Invalid("build.version"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    REPO,
                    r#"{"number":1,"status":"running","version":2.5}"#,
                ),
                ParseError::Invalid("build.version"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    REPO,
                    r#"{"number":1,"status":"running","version":"2"}"#,
                ),
                ParseError::Invalid("build.version"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    REPO,
                    r#"{"number":1,"status":"running","version":99999999999999999999}"#,
                ),
                ParseError::Invalid("build.version"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    REPO,
                    r#"{"number":"1","status":"running","version":2}"#,
                ),
                ParseError::Invalid("build.number"),
            ),
            (
                body(
                    r#""build""#,
                    r#""updated""#,
                    REPO,
                    r#"{"number":1,"status":true,"version":2}"#,
                ),
                ParseError::Invalid("build.status"),
            ),
            (
                format!(
                    r#"{{"event":"build","action":"updated","repo":{REPO},"build":{BUILD},"system":"x"}}"#
                ),
                ParseError::Invalid("system"),
            ),
            (
                format!(
                    r#"{{"event":"build","action":"updated","repo":{REPO},"build":{BUILD},"system":[1]}}"#
                ),
                ParseError::Invalid("system"),
            ),
        ];
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
            let b = body(r#""build""#, r#""updated""#, repo, build);
            assert!(
                matches!(parse_webhook(b.as_bytes()), Err(ParseError::Json(_))),
                "{b}"
            );
        }
    }

    #[test]
    fn unknown_status_is_not_an_error() {
        let b = body(
            r#""build""#,
            r#""updated""#,
            REPO,
            r#"{"number":1,"status":"exploded","version":9}"#,
        );
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
                u64::MAX
            ),
        );
        let w = parse_webhook(max.as_bytes()).unwrap();
        assert_eq!((w.number, w.version), (u64::MAX, u64::MAX));
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
        let b = body(r#""build""#, r#""updated""#, repo, BUILD);
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
        let small = body(r#""build""#, r#""updated""#, REPO, BUILD);
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
    fn webhook_path_matching() {
        let hook = |method: &str, path: &str, ev: Option<&str>| {
            is_build_webhook(method, path, ev, "/hook")
        };
        assert!(hook("POST", "/hook", Some("build")));
        assert!(hook("POST", "/hook/", Some("build")));
        assert!(hook("POST", "/hook/drone", Some("build")));
        assert!(hook("POST", "/hook?x=1", Some("build")));
        assert!(hook("POST", "/hook", Some(" Build ")));
        assert!(hook("POST", "/hook", Some("BUILD")));
        assert!(!hook("POST", "/hooks", Some("build")));
        assert!(!hook("POST", "/hoo", Some("build")));
        assert!(!hook("POST", "/other/hook", Some("build")));
        assert!(!hook("POST", "", Some("build")));
        assert!(!hook("post", "/hook", Some("build")));
        assert!(!hook("PUT", "/hook", Some("build")));
        assert!(!hook("GET", "/hook", Some("build")));
        assert!(!hook("POST", "/hook", None));
        assert!(!hook("POST", "/hook", Some("repo")));
        assert!(!hook("POST", "/hook", Some("user")));
        assert!(!hook("POST", "/hook", Some("")));
        assert!(!hook("POST", "/hook", Some("builds")));

        // A trailing slash is the boundary itself.
        assert!(is_build_webhook(
            "POST",
            "/hooks/",
            Some("build"),
            "/hooks/"
        ));
        assert!(is_build_webhook(
            "POST",
            "/hooks/drone",
            Some("build"),
            "/hooks/"
        ));
        assert!(!is_build_webhook(
            "POST",
            "/hooks",
            Some("build"),
            "/hooks/"
        ));
        assert!(is_build_webhook("POST", "/anything?x", Some("build"), "/"));
        assert!(!is_build_webhook("POST", "/hook", Some("build"), ""));
    }
}
