//! The sweeps that need no webhook (`Sweeps` in `core::reconciler::discovery`): the listing
//! of each repository of `scan_repos` and drone's admin list of incomplete builds, each asked
//! on a schedule of its own.

mod common;

use common::{config, ok, T0};
use status_sync::core::reconciler::Reconciler;

/// Every repository of `scan_repos` is listed, not only the first: the first listings come a
/// tenth of `scan_interval_ms` after the start, one second apart.
#[test]
fn every_repository_of_scan_repos_is_listed_each_at_its_own_time() {
    let cfg = r#","scan_repos":["octocat/hello-world","octocat/spoon-knife","octocat/linguist"],"scan_interval_ms":10000"#;
    let mut r = Reconciler::new(config(cfg), 1);
    let mut listed = Vec::new();
    for now in [1000, 2000, 3000] {
        for call in r.tick(now) {
            let path = call.header(":path").unwrap_or_default().to_string();
            if path.contains("/builds?") {
                listed.push((now, path));
            }
        }
    }
    let names: Vec<_> = listed
        .iter()
        .map(|(now, path)| (*now, path.split('/').nth(4).unwrap_or_default().to_string()))
        .collect();
    assert_eq!(
        names,
        [
            (1000, "hello-world".to_string()),
            (2000, "spoon-knife".to_string()),
            (3000, "linguist".to_string())
        ],
        "{listed:?}"
    );
}

/// Drone's list of incomplete builds is asked again every `max_poll_interval_ms` (8 s here,
/// jittered by a fifth) after each answer, for as long as drone offers it.
#[test]
fn the_list_of_incomplete_builds_is_asked_again_every_max_poll_interval() {
    let mut r = Reconciler::new(config(""), 1);
    let mut asked = Vec::new();
    let mut now = T0;
    while asked.len() < 4 {
        now += 100;
        assert!(now < T0 + 60_000, "asked at {asked:?} only");
        let calls = r.tick(now);
        for call in calls {
            if call.header(":path") == Some("/api/builds/incomplete") {
                asked.push(now);
                r.on_response(call.id, ok(b"[]".to_vec()), now);
            }
        }
    }
    for pair in asked.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((6_400..=9_700).contains(&gap), "asked at {asked:?}");
    }
}
