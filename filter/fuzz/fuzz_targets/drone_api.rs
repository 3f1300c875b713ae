//! Drone API answers must parse without panicking, whatever parses must be within the input
//! limits (`core::limits`: names, ids, numbers, versions, counter, repository JSON), and it
//! must give a valid re-delivered webhook.
//!
//! Input: the whole input is tried as a build answer, a build list, a repo answer (with and
//! without the counter) and a list of incomplete builds. It is also split at
//! its first and second NUL bytes (never present in JSON text) into `repo \0 build \0 system`;
//! when the repo and build parts parse, `redelivery_body` must be JSON (and, with a system
//! part that is not an object, either JSON or empty).
//!
//! "JSON" here is the RFC 8259 grammar (checked with `RawValue`), not `serde_json::Value`:
//! drone's values are passed through byte for byte by design, and the grammar allows numbers
//! such as `1e999999` that `Value` (and Go's `float64`) refuse as out of range. When the
//! build does load as a `Value`, the body must carry that same value as `build` and as
//! `repo.build`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::Value;
use status_sync::core::drone_api::{
    parse_build, parse_build_list, parse_incomplete, parse_repo, parse_repo_counter,
    redelivery_body,
};
use status_sync::core::limits::{self, MAX_INT};
use status_sync::core::model::RepoRef;

/// A repository as the decoders hand it on: within every limit, so the reconciler can address
/// drone's API with it and cache and copy its JSON.
fn check_repo(repo: &RepoRef, json: &str) {
    assert!((1..=MAX_INT).contains(&repo.id), "repo.id {}", repo.id);
    assert_eq!(limits::check_slug_part(&repo.namespace, "ns"), Ok(()));
    assert_eq!(limits::check_slug_part(&repo.name, "name"), Ok(()));
    assert_eq!(limits::check_repo_json_len(json.len()), Ok(()));
}

fn check_body(repo_json: &str, build_raw: &str, system: Option<&str>) {
    let body = redelivery_body(repo_json, build_raw, system);
    if body.is_empty() {
        assert!(
            system.is_some(),
            "redelivery_body refused inputs that parse_repo and parse_build accepted"
        );
        return;
    }
    if let Err(e) = serde_json::from_str::<&RawValue>(&body) {
        panic!("redelivery_body produced invalid JSON ({e}): {body}");
    }
    let Ok(build) = serde_json::from_str::<Value>(build_raw) else {
        return;
    };
    let Ok(out) = serde_json::from_str::<Value>(&body) else {
        return; // some other member holds a number out of f64 range
    };
    assert_eq!(out["event"], "build", "{body}");
    assert_eq!(out["action"], "updated", "{body}");
    assert_eq!(out["build"], build, "build changed: {body}");
    assert_eq!(out["repo"]["build"], build, "repo.build changed: {body}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = parse_build_list(data) {
        for b in list {
            assert!((1..=MAX_INT).contains(&b.repo_id()) && (1..=MAX_INT).contains(&b.number()));
            assert!(b.version() <= MAX_INT);
        }
    }
    if let Ok((repo, json, counter)) = parse_repo_counter(data) {
        check_repo(&repo, &json);
        assert!(counter <= MAX_INT);
    }
    if let Ok(list) = parse_incomplete(data) {
        for (repo, json, number) in list {
            check_repo(&repo, &json);
            assert!((1..=MAX_INT).contains(&number));
        }
    }
    let whole_build = parse_build(data);
    if let Ok(b) = &whole_build {
        assert!((1..=MAX_INT).contains(&b.repo_id()) && (1..=MAX_INT).contains(&b.number()));
        assert!(b.version() <= MAX_INT);
    }
    let whole_repo = parse_repo(data);
    if let Ok((repo, json)) = &whole_repo {
        check_repo(repo, json);
    }
    if let (Ok(build), Ok((_, repo_json))) = (&whole_build, &whole_repo) {
        check_body(repo_json, build.raw(), None);
    }

    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(repo_part), Some(build_part)) = (parts.next(), parts.next()) else {
        return;
    };
    let system = parts.next().and_then(|s| std::str::from_utf8(s).ok());
    let (Ok((_, repo_json)), Ok(build)) = (parse_repo(repo_part), parse_build(build_part)) else {
        return;
    };
    check_body(&repo_json, build.raw(), None);
    if let Some(system) = system {
        check_body(&repo_json, build.raw(), Some(system));
    }
});
