//! Drone's sample payloads, from `testdata/drone/` at the workspace root.
//!
//! They are compiled in (`include_str!`): a clone of the repository alone is enough, and a
//! missing fixture is a build error, not a test failure at run time.

use std::path::PathBuf;

/// `build:created`, status `pending`, with `user`, without stages.
pub const WEBHOOK_BUILD_CREATED: &str = "webhook-build-created.json";
/// A step-level `build:updated`, status `running`, version 2.
pub const WEBHOOK_BUILD_UPDATED_RUNNING: &str = "webhook-build-updated-running.json";
/// The final `build:updated` from teardown, status `success`, version 3.
pub const WEBHOOK_BUILD_UPDATED_SUCCESS: &str = "webhook-build-updated-success.json";
/// `GET /api/repos/octocat/hello-world/builds/101`.
pub const API_BUILD_SUCCESS: &str = "api-build-success.json";
/// Drone's HTTP-signature vectors.
pub const SIGNATURE_VECTORS: &str = "signature-vectors.json";

const ALL: [(&str, &str); 5] = [
    (
        WEBHOOK_BUILD_CREATED,
        include_str!("../../testdata/drone/webhook-build-created.json"),
    ),
    (
        WEBHOOK_BUILD_UPDATED_RUNNING,
        include_str!("../../testdata/drone/webhook-build-updated-running.json"),
    ),
    (
        WEBHOOK_BUILD_UPDATED_SUCCESS,
        include_str!("../../testdata/drone/webhook-build-updated-success.json"),
    ),
    (
        API_BUILD_SUCCESS,
        include_str!("../../testdata/drone/api-build-success.json"),
    ),
    (
        SIGNATURE_VECTORS,
        include_str!("../../testdata/drone/signature-vectors.json"),
    ),
];

/// The text of a fixture. Panics (a test bug) on a name that is not in `testdata/drone/`.
pub fn text(name: &str) -> &'static str {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no drone fixture named {name:?} in testdata/drone/"))
}

/// The bytes of a fixture.
pub fn bytes(name: &str) -> &'static [u8] {
    text(name).as_bytes()
}

/// The fixture's file, for tools that take a path (benchmarks hand it to wrk).
pub fn path(name: &str) -> PathBuf {
    let _ = text(name);
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/drone")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_is_on_disk_and_matches_the_compiled_copy() {
        for (name, compiled) in ALL {
            let on_disk = std::fs::read_to_string(path(name)).unwrap();
            assert_eq!(on_disk, compiled, "{name}");
        }
    }

    #[test]
    #[should_panic(expected = "no drone fixture")]
    fn an_unknown_name_is_a_test_bug() {
        text("nope.json");
    }
}
