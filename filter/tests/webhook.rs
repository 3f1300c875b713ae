//! The one-pass webhook parser against its oracle, the serde-based reference parser
//! (`test_support::reference`): the same verdict on drone's payloads, on every prefix of them,
//! on near-misses, at and beyond the input limits and the nesting limit. (The parser's own
//! cases are its unit tests, `core/webhook/parse.rs`.)

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use status_sync::core::backoff::Rng;
use status_sync::core::limits;
use status_sync::core::model::{ParseError, ParsedWebhook};
use status_sync::core::webhook::parse_webhook;
use test_support::reference;

fn fixture(name: &str) -> String {
    drone_model::fixtures::text(name).to_string()
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

/// Bodies outside the input limits of [`limits`], each with the field it names; every one
/// is also checked against the reference parser.
fn out_of_limits() -> Vec<(String, &'static str)> {
    let repo =
        |id: &str, ns: &str, name: &str| format!(r#"{{"id":{id},"namespace":{ns},"name":{name}}}"#);
    let ok_repo = repo("42", r#""octocat""#, r#""hello-world""#);
    let long = format!("\"{}\"", "x".repeat(limits::MAX_NAME_CHARS + 1));
    let wide = format!("\"{}\"", "€".repeat(200));
    let mut v = vec![];
    for (ns, name, field) in [
        (r#"".""#, r#""n""#, "repo.namespace"),
        (r#""..""#, r#""n""#, "repo.namespace"),
        (r#""o""#, r#"".""#, "repo.name"),
        (r#""o""#, r#""..""#, "repo.name"),
        (r#""a/b""#, r#""n""#, "repo.namespace"),
        (r#""o""#, r#""a/b""#, "repo.name"),
        (r#""o""#, r#""\/""#, "repo.name"),
        (r#""o""#, r#""a\nb""#, "repo.name"),
        (r#""o\u0000""#, r#""n""#, "repo.namespace"),
        (r#""o""#, r#""\u007f""#, "repo.name"),
        (&long, r#""n""#, "repo.namespace"),
        (r#""o""#, &long, "repo.name"),
        (r#""o""#, &wide, "repo.name"),
    ] {
        v.push((updated(&repo("42", ns, name), BUILD), field));
    }
    for id in ["0", "9223372036854775808", "18446744073709551615"] {
        v.push((updated(&repo(id, r#""o""#, r#""n""#), BUILD), "repo.id"));
    }
    for n in ["0", "9223372036854775808", "18446744073709551615"] {
        let build = format!(r#"{{"number":{n},"status":"running","version":1}}"#);
        v.push((updated(&ok_repo, &build), "build.number"));
        let build = format!(r#"{{"number":1,"status":"running","version":{n}}}"#);
        if n != "0" {
            v.push((updated(&ok_repo, &build), "build.version"));
        }
    }
    let pad = "p".repeat(limits::MAX_REPO_JSON_BYTES);
    let big_repo = format!(r#"{{"id":42,"namespace":"o","name":"n","x":"{pad}"}}"#);
    v.push((updated(&big_repo, BUILD), "repo"));
    let pad = "p".repeat(limits::MAX_SYSTEM_JSON_BYTES);
    v.push((
        format!(
            r#"{{"event":"build","action":"created","repo":{REPO},"build":{BUILD},"system":{{"x":"{pad}"}}}}"#
        ),
        "system",
    ));
    v
}

#[test]
fn fields_outside_the_input_limits_are_refused() {
    for (b, field) in out_of_limits() {
        let got = parse_webhook(b.as_bytes());
        assert_eq!(
            got,
            Err(ParseError::Limit(field)),
            "{}",
            &b[..b.len().min(300)]
        );
        same_as_reference(b.as_bytes());
    }
}

#[test]
fn largest_accepted_fields() {
    let name = "x".repeat(limits::MAX_NAME_CHARS);
    // repo.build is not kept, so it does not count against the repository's limit.
    let inner_build = format!(
        r#"{{"pad":"{}"}}"#,
        "b".repeat(4 * limits::MAX_REPO_JSON_BYTES)
    );
    let head = format!(r#"{{"id":9223372036854775807,"namespace":"{name}","name":"{name}","x":""#);
    let tail = format!(r#"","build":{inner_build}}}"#);
    let fill = limits::MAX_REPO_JSON_BYTES + inner_build.len() - head.len() - tail.len();
    let repo = format!("{head}{}{tail}", "p".repeat(fill));
    let system = format!(
        r#"{{"x":"{}"}}"#,
        "s".repeat(limits::MAX_SYSTEM_JSON_BYTES - 8)
    );
    let b = format!(
        r#"{{"event":"build","action":"updated","repo":{repo},"build":{{"number":9223372036854775807,"status":"running","version":9223372036854775807}},"system":{system}}}"#
    );
    let w = parse_webhook(b.as_bytes()).unwrap();
    assert_eq!(w.repo.name, name);
    assert!(w.repo_json.as_ref().unwrap().len() <= limits::MAX_REPO_JSON_BYTES);
    assert_eq!(
        w.system_json.as_ref().unwrap().len(),
        limits::MAX_SYSTEM_JSON_BYTES
    );
    same_as_reference(b.as_bytes());
    // One more byte of the repository (outside `build`) is too many.
    let over = b.replacen(r#""x":"p"#, r#""x":"pp"#, 1);
    assert_eq!(
        parse_webhook(over.as_bytes()),
        Err(ParseError::Limit("repo"))
    );
    same_as_reference(over.as_bytes());
}

/// `scan_webhook` must give the reference parser's verdict on every input (JSON error
/// messages aside: both say it is not JSON, in their own words).
fn same_as_reference(b: &[u8]) {
    let norm = |r: Result<ParsedWebhook, ParseError>| match r {
        Err(ParseError::Json(_)) => Err(ParseError::Json(String::new())),
        other => other,
    };
    assert_eq!(
        norm(parse_webhook(b)),
        norm(reference::parse_webhook(b)),
        "{:?}",
        String::from_utf8_lossy(b)
    );
}

#[test]
fn single_pass_matches_reference_on_fixtures_and_cases() {
    for f in [
        "webhook-build-created.json",
        "webhook-build-updated-running.json",
        "webhook-build-updated-success.json",
    ] {
        let text = fixture(f);
        same_as_reference(text.as_bytes());
        for cut in 0..text.len() {
            same_as_reference(&text.as_bytes()[..cut]);
        }
    }
    let dup_nested = [
        r#"{"id":1,"id":1,"namespace":"o","name":"n"}"#,
        r#"{"id":1,"namespace":"o","name":"n","build":{},"build":{}}"#,
        r#"{"id":1,"namespace":"o","n\u0061me":"n"}"#,
        r#"{"id":1,"namespace":"o","name":"n","\ud800":1}"#,
        r#"{"id":-0,"namespace":"o","name":"n"}"#,
        r#"{"id":1e2,"namespace":"o","name":"n"}"#,
        r#"{"id":0,"namespace":"\u006f","name":"n\"x"}"#,
    ];
    for repo in dup_nested {
        same_as_reference(updated(repo, BUILD).as_bytes());
        same_as_reference(body(r#""repo""#, r#""updated""#, repo, BUILD).as_bytes());
    }
    for top in [
        r#"{"event":"build","action":"updated","repo":[1],"build":null}"#,
        r#"{"event":"build","action":"updated","repo":null,"repo":{}}"#,
        r#"{"event":"build","action":"updated","repo":{"id":1,"namespace":"o","name":"n"},"build":{"number":1,"status":"x","version":1},"system":null,"system":{}}"#,
        r#"{"ev\u0065nt":"build","action":"updated"}"#,
        r#"{"\ud800":1}"#,
        r#"{"event":"build","action":"upd\u0061ted","repo":{"id":1,"namespace":"o","name":"n"},"build":{"number":1,"status":"running","version":1}}"#,
        " \n{\"event\" : \"repo\" } \n",
        "[]",
        "\"x\"",
        "{}}",
        "{\"a\":1,}",
    ] {
        same_as_reference(top.as_bytes());
    }
}

/// Drone sends the build twice, as `repo.build` and `build`; the parser compares the second
/// with the first instead of scanning it again. Whatever the shared value is (a build, a
/// duplicate or escaped key, not an object, nested to the limit), the verdict is the reference
/// parser's and the one given when the two differ.
#[test]
fn a_build_sent_twice_has_the_verdict_of_one_sent_once() {
    let deep = |levels: usize| {
        format!(
            r#"{{"number":1,"status":"running","version":2,"stages":{}{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    // `repo.build`'s arrays: inside the webhook, `repo` and `build`.
    let limit = reference::MAX_DEPTH - 3;
    let builds = [
        BUILD.to_string(),
        r#"{"number":1,"number":2,"status":"running","version":2}"#.to_string(),
        r#"{"n\u0075mber":7,"status":"success","version":3}"#.to_string(),
        r#"{"\ud800":1,"number":1,"status":"running","version":2}"#.to_string(),
        r#"{"number":1,"status":"running"}"#.to_string(),
        r#"{"number":1,"status":"x\"y","version":2}"#.to_string(),
        r#"{ "number" : 1 , "status" : "running" , "version" : 2 }"#.to_string(),
        "null".to_string(),
        "[1]".to_string(),
        "{}".to_string(),
        deep(limit - 1),
        deep(limit),
    ];
    let repo_with = |build: &str| {
        format!(r#"{{"id":42,"namespace":"octocat","name":"hello-world","build":{build}}}"#)
    };
    let verdict = |r: Result<ParsedWebhook, ParseError>| {
        r.map(|w| (w.repo, w.number, w.status, w.version))
            .map_err(|e| match e {
                ParseError::Json(_) => ParseError::Json(String::new()),
                e => e,
            })
    };
    for build in &builds {
        let twice = updated(&repo_with(build), build);
        let once = updated(&repo_with(r#"{"number":0}"#), build);
        same_as_reference(twice.as_bytes());
        same_as_reference(once.as_bytes());
        assert_eq!(
            verdict(parse_webhook(twice.as_bytes())),
            verdict(parse_webhook(once.as_bytes())),
            "{build}"
        );
        // A copy that differs by one byte, or by whitespace around it, is scanned.
        let edited = twice.replacen("running", r"runnin\u0067", 2);
        same_as_reference(edited.as_bytes());
        let spaced = updated(&repo_with(build), &format!(" {build} "));
        same_as_reference(spaced.as_bytes());
    }
    // One level more is too deep for `repo.build` alone: the webhook is refused by both.
    let twice = updated(&repo_with(&deep(limit + 1)), &deep(limit + 1));
    same_as_reference(twice.as_bytes());
    assert!(parse_webhook(twice.as_bytes()).is_err());
}

#[test]
fn single_pass_matches_reference_on_mutations() {
    let mut rng = Rng::new(11);
    let alphabet = b"{}[]\":,\\ 0123456789-.eutrflsn\x00\x80";
    let seeds = [
        fixture("webhook-build-updated-running.json"),
        updated(REPO, BUILD),
        format!(
            r#"{{"event":"build","action":"created","repo":{REPO},"build":{BUILD},"system":{{"a":1}}}}"#
        ),
    ];
    for seed in &seeds {
        for _ in 0..10_000 {
            let mut b = seed.clone().into_bytes();
            test_support::mutate(&mut rng, &mut b, alphabet);
            same_as_reference(&b);
        }
    }
}

/// Nesting up to the scanner's limit is a webhook for both parsers, one level more is
/// refused by both (serde alone would take it: it skips raw values without recursing).
#[test]
fn nesting_at_the_limit_is_accepted_and_beyond_it_refused_by_both_parsers() {
    let nested = |levels: usize| {
        format!(
            r#"{{"event":"build","action":"updated","repo":{REPO},"build":{BUILD},"user":{}{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    // The webhook's own object is the first level.
    let limit = reference::MAX_DEPTH - 1;
    for levels in [limit - 1, limit, limit + 1, limit + 2] {
        let text = nested(levels);
        same_as_reference(text.as_bytes());
        assert_eq!(
            parse_webhook(text.as_bytes()).is_ok(),
            levels <= limit,
            "{levels} levels"
        );
    }
}
