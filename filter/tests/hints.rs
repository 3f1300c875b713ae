//! What a hint (an unverified webhook) may and may not move (issue 20, findings 1 and 7, and
//! four behaviours no test pinned): a lookup a hint asked for answers for that build alone;
//! nothing drone says finished before the reconciler watched its repository is re-delivered;
//! gap filling only goes up; a build answer for another repository is refused; a hint-only
//! snapshot record names nothing; only evidence moves the SLO; a finished build is never
//! tracked again by gap filling. Driven natively with a virtual clock on the wall-clock scale
//! (drone's `finished` is in Unix seconds).

#![allow(clippy::unwrap_used)]

use status_sync::core::config::Config;
use status_sync::core::ledger::{Class, Entry};
use status_sync::core::model::DeliveryOutcome::{Delivered, NotDelivered};
use status_sync::core::reconciler::Reconciler;
use status_sync::core::snapshot::{self, Record};
mod common;

use common::config;
use common::world::*;

/// 2026-01-01T00:00:00Z in ms: where the reconciler starts watching.
const START: u64 = 1_767_225_600_000;
const DAY_S: u64 = 86_400;

/// `signature_mode: monitor`: signed webhooks are evidence, unsigned ones pass as hints.
fn monitor(extra: &str) -> Config {
    config(&format!(
        r#","webhook_secret":"s3cret","signature_mode":"monitor"{extra}"#
    ))
}

/// A reconciler that starts watching at [`START`], and drone on the same clock.
fn sim(cfg: Config) -> Sim {
    Sim::starting_at(cfg, START, START / 1000)
}

/// Drone's Unix seconds `ago_s` before the reconciler started.
fn before_start(ago_s: u64) -> u64 {
    START / 1000 - ago_s
}

/// Drone has build `number` of `octocat/hello-world` at (`status`, 3), finished `ago_s`
/// before the reconciler started.
fn finished_before(s: &mut Sim, number: u64, status: &str, ago_s: u64) {
    s.drone
        .set_finished(42, number, status, 3, before_start(ago_s));
}

/// Drone's Unix seconds at `s`'s now.
fn now_s(s: &Sim) -> u64 {
    s.now / 1000
}

// ------------------------------------------------------------------ finding 1

/// Finding 1: `monitor`; a genuine signed `running v2` for build 101, then one unsigned POST
/// naming the repository's old, finished build 50. Drone confirms 50 exists, yet nothing
/// below 101 is re-delivered, no number is filled in as missed, and drone is asked about 50
/// alone.
#[test]
fn a_hint_naming_an_old_finished_build_reaches_that_build_alone() {
    let mut s = sim(monitor(""));
    for n in 1..=100 {
        finished_before(&mut s, n, "success", DAY_S - n * 60);
    }
    s.drone.set_finished(42, 101, "running", 2, 0);
    s.saw(hook_of(42, 101, "running", 2), Delivered, true);
    s.saw(hook_of(42, 50, "success", 3), Delivered, false);
    s.run(60_000);
    assert_eq!(s.r.counters().builds_gap_filled, 0, "{:?}", s.r.counters());
    assert!(s.delivered.is_empty(), "re-delivered {:?}", s.delivered);
    assert_eq!(s.drone.build_lookups(42, 50), 1, "{:?}", s.drone.calls);
    for n in (1..50).chain(51..=100) {
        assert_eq!(s.drone.build_lookups(42, n), 0, "{n}: {:?}", s.drone.calls);
    }
    // 101 is still followed: its lost final state is re-delivered.
    s.drone.set_finished(42, 101, "failure", 5, now_s(&s));
    s.run(20_000);
    assert_eq!(s.transitions(), vec![(42, 101, "failure".to_string(), 5)]);
}

/// Finding 1, natively at 10 hints a second for a minute, each naming one of 100 old finished
/// builds: a real lost `success` of build 101 is re-delivered as soon as without them, each
/// old build costs drone one lookup at most, and nothing old is re-delivered or filled in.
#[test]
fn a_flood_of_hints_for_old_builds_delays_no_real_transition() {
    let delay = |flood: bool| {
        let mut s = sim(monitor(""));
        for n in 1..=100 {
            finished_before(&mut s, n, "success", DAY_S);
        }
        s.drone.set_finished(42, 101, "running", 2, 0);
        s.saw(hook_of(42, 101, "running", 2), Delivered, true);
        let mut lost_at = None;
        for i in 0..600u64 {
            if flood {
                s.saw(hook_of(42, 1 + i % 100, "success", 3), Delivered, false);
            }
            if i == 100 {
                s.drone.set_finished(42, 101, "success", 3, now_s(&s));
                lost_at = Some(s.now);
            }
            s.run(100);
            if s.transitions()
                .contains(&(42, 101, "success".to_string(), 3))
            {
                break;
            }
        }
        assert_eq!(s.numbers_delivered(42), vec![101], "{:?}", s.delivered);
        assert_eq!(s.r.counters().builds_gap_filled, 0);
        for n in 1..=100 {
            assert!(
                s.drone.build_lookups(42, n) <= 1,
                "{n}: {:?}",
                s.drone.calls
            );
        }
        s.now - lost_at.unwrap()
    };
    let (quiet, flooded) = (delay(false), delay(true));
    assert!(
        flooded <= quiet + 1_000,
        "{flooded} ms with hints, {quiet} ms without"
    );
}

/// Finding 1 without an attacker: a restart lost the snapshot; the first webhook after it is
/// build 61's, then long build 50 finishes (signed, delivered live). Builds 51-60 finished
/// before the restart and reached the pipeline then: none is looked up or re-delivered (gap
/// filling never goes below the lowest number seen as evidence).
#[test]
fn a_long_build_finishing_after_a_restart_fills_no_gap_below() {
    let mut s = sim(monitor(""));
    for n in 51..=60 {
        finished_before(&mut s, n, "success", 3600);
    }
    s.drone.set_finished(42, 50, "running", 2, 0);
    s.drone.set_finished(42, 61, "running", 2, 0);
    s.saw(hook_of(42, 61, "running", 2), Delivered, true);
    s.run(5_000);
    s.drone.set_finished(42, 50, "success", 5, now_s(&s));
    s.saw(hook_of(42, 50, "success", 5), Delivered, true);
    s.run(60_000);
    assert_eq!(s.r.counters().builds_gap_filled, 0);
    assert!(s.delivered.is_empty(), "re-delivered {:?}", s.delivered);
    for n in 51..=60 {
        assert_eq!(s.drone.build_lookups(42, n), 0, "{n}");
    }
}

/// The time rule, whatever found the build: after a restart, builds found above evidence 61
/// (by discovery or gap filling) hold builds that finished before the reconciler watched the repository (62,
/// 63: the pipeline had them) and one that finished after with every webhook lost (64): only
/// 64 is re-delivered; 62 and 63 are counted and forgotten.
#[test]
fn builds_that_finished_before_the_watch_began_are_never_redelivered() {
    let mut s = sim(monitor(""));
    s.drone.set_finished(42, 61, "running", 2, 0);
    s.saw(hook_of(42, 61, "running", 2), Delivered, true);
    finished_before(&mut s, 62, "success", 3600);
    finished_before(&mut s, 63, "failure", 600);
    s.run(2_000);
    s.drone.set_finished(42, 64, "success", 3, now_s(&s));
    s.drone.set_finished(42, 65, "running", 2, 0);
    s.saw(hook_of(42, 65, "running", 2), Delivered, true);
    s.run(30_000);
    let c = s.r.counters();
    assert_eq!(c.builds_gap_filled + c.builds_discovered, 3, "{c:?}");
    assert_eq!(s.numbers_delivered(42), vec![64], "{:?}", s.delivered);
    assert_eq!(s.r.counters().builds_finished_unwatched, 2);
    assert!(!s.r.ledger().contains(&key_of(42, 62)));
    assert!(!s.r.ledger().contains(&key_of(42, 63)));
}

/// The same rule in `off`, where every webhook is a hint: an old finished build a hint names
/// is looked up and forgotten, a build that finished while watched is re-delivered.
#[test]
fn in_off_mode_a_hint_redelivers_only_what_finished_while_watched() {
    let mut s = sim(config(""));
    finished_before(&mut s, 10, "success", 2 * DAY_S);
    s.drone.set_finished(42, 11, "running", 2, 0);
    s.saw(hook_of(42, 11, "running", 2), Delivered, false);
    s.run(3_000);
    s.saw(hook_of(42, 10, "success", 3), NotDelivered, false);
    s.drone.set_finished(42, 11, "success", 3, now_s(&s));
    s.run(30_000);
    assert_eq!(s.numbers_delivered(42), vec![11], "{:?}", s.delivered);
    assert_eq!(s.r.counters().builds_finished_unwatched, 1);
    assert_eq!(s.r.ledger().len(), 0);
}

/// In `off` nothing can be evidence: drone's answers to the lookups hints asked for are the
/// best there is, and they come in lookup order. Builds 1 and 3 are announced, 2 (declined,
/// its one webhook lost) is not, and drone's `counter` already shows 3 (discovery's first look
/// is only a baseline): 2 is found by number, whichever of 1 and 3 drone answers first.
#[test]
fn in_off_mode_drones_answers_to_hints_fill_the_gap_in_either_order() {
    for first in [1u64, 3] {
        let mut s = sim(config(""));
        s.drone.set_finished(42, 1, "running", 2, 0);
        s.drone.set_finished(42, 2, "declined", 2, now_s(&s));
        s.drone.set_finished(42, 3, "running", 2, 0);
        for n in [1u64, 3] {
            // NotDelivered: looked up at once; Delivered: after `stale_after_ms`.
            let outcome = if n == first { NotDelivered } else { Delivered };
            s.saw(hook_of(42, n, "running", 2), outcome, false);
        }
        s.run(30_000);
        assert!(
            s.transitions()
                .contains(&(42, 2, "declined".to_string(), 2)),
            "{first} first: {:?}",
            s.delivered
        );
    }
}

// ------------------------------------------------------------------ finding 7

/// Finding 7: `max_repos: 2`; unsigned hints naming four other real repositories get their
/// names confirmed by drone, yet the name of repository 42, whose build 5 is open, stays:
/// its lost final state is re-delivered.
#[test]
fn hints_never_push_out_the_confirmed_name_of_a_repository_with_an_open_build() {
    let mut s = sim(monitor(r#","max_repos":2"#));
    s.drone.set_finished(42, 5, "running", 2, 0);
    s.saw(hook_of(42, 5, "running", 2), Delivered, true);
    s.run(1_000);
    for id in 100..110 {
        s.drone.set_finished(id, 1, "running", 2, 0);
        s.saw(hook_of(id, 1, "running", 2), Delivered, false);
        s.run(3_000);
    }
    assert!(
        (100..110).any(|id| s.r.repo_confirmed(id).is_some()),
        "drone confirmed the hints' names"
    );
    assert_eq!(s.r.repo_confirmed(42), Some(("octocat", "hello-world")));
    s.drone.set_finished(42, 5, "success", 3, now_s(&s));
    s.run(20_000);
    assert!(
        s.transitions().contains(&(42, 5, "success".to_string(), 3)),
        "{:?}",
        s.delivered
    );
}

// ------------------------------------------------------------------ unpinned behaviours

/// A build answer whose `repo_id` is not the tracked build's (the name moved to another
/// repository) is refused: nothing is delivered, the build stays tracked, the answer is
/// counted as a failed call.
#[test]
fn a_build_answer_for_another_repository_is_refused() {
    let mut s = sim(monitor(""));
    s.drone.set_finished(42, 5, "success", 3, 0);
    s.drone.renamed.insert(42, 43);
    s.saw(hook_of(42, 5, "running", 2), NotDelivered, true);
    s.run(5_000);
    assert!(s.delivered.is_empty(), "{:?}", s.delivered);
    assert!(s.r.ledger().contains(&key_of(42, 5)));
    assert!(s.drone.build_lookups(42, 5) >= 1);
    assert!(s.r.counters().drone_polls_failed >= 1);
    assert_eq!(s.r.counters().builds_gap_filled, 0);
}

/// A hint-only record of a previous leader's snapshot never confirms its repository's name
/// (the next leader asks drone first); a backed record does.
#[test]
fn a_hint_only_snapshot_record_never_confirms_a_name() {
    let record = |id: u64, name: &str, class: Class| {
        let mut e = Entry::new(START - 10_000, class);
        e.next_due_ms = START;
        let mut repo = repo_of(id);
        repo.name = name.into();
        Record {
            repo,
            number: 5,
            entry: e,
        }
    };
    let shard = snapshot::encode_shard(&[
        record(42, "evil", Class::Hint),
        record(7, "repo-7", Class::Backed),
    ]);
    let mut r = Reconciler::new(monitor(""), 1);
    assert!(r.load_shard(&shard, START));
    assert_eq!(r.repo_confirmed(42), None);
    assert_eq!(r.repo_confirmed(7), Some(("octocat", "repo-7")));
    let paths: Vec<String> = r
        .tick(START + 100)
        .iter()
        .map(|c| c.header(":path").unwrap().to_string())
        .collect();
    assert!(
        paths.contains(&"/api/repos/octocat/evil".to_string()),
        "{paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("/api/repos/octocat/evil/")),
        "{paths:?}"
    );
}

/// Only evidence moves the SLO gauges: an unverified webhook the pipeline did not take is no
/// known-missing transition, and an unverified one it took recovers none.
#[test]
fn unverified_webhooks_never_move_the_slo_gauges() {
    let mut s = sim(monitor(""));
    s.silent = true;
    s.saw(hook_of(42, 5, "running", 2), NotDelivered, false);
    s.run(10_000);
    s.r.sample_slo(s.now);
    assert_eq!(s.r.counters().transitions_lost, 0);
    assert_eq!(s.r.counters().oldest_undelivered_seconds, 0);

    let mut s = sim(monitor(""));
    s.silent = true;
    s.saw(hook_of(42, 6, "running", 2), NotDelivered, true);
    s.run(1_000);
    s.saw(hook_of(42, 6, "success", 3), Delivered, false);
    s.run(10_000);
    s.r.sample_slo(s.now);
    assert_eq!(s.r.counters().transitions_lost, 1);
    assert_eq!(s.r.counters().transitions_recovered, 0);
    assert!(s.r.counters().oldest_undelivered_seconds >= 10);
}

/// A build that finished (tombstoned) is never tracked again by gap filling: build 5, which a
/// hint named and drone's final state finished, falls in the numbers 2-6 that discovery and
/// evidence show later; it is not looked up again nor re-delivered twice.
#[test]
fn gap_filling_never_tracks_a_finished_build_again() {
    let mut s = sim(monitor(""));
    s.drone.set_finished(42, 1, "running", 2, 0);
    s.saw(hook_of(42, 1, "running", 2), Delivered, true);
    s.drone.set_finished(42, 5, "success", 3, now_s(&s));
    s.saw(hook_of(42, 5, "running", 2), NotDelivered, false);
    s.run(5_000);
    assert_eq!(s.numbers_delivered(42), vec![5]);
    let lookups = s.drone.build_lookups(42, 5);
    for n in 2..=4 {
        s.drone.set_finished(42, n, "running", 2, 0);
    }
    s.drone.set_finished(42, 7, "running", 2, 0);
    s.saw(hook_of(42, 7, "running", 2), Delivered, true);
    let c = s.r.counters();
    assert_eq!(
        c.builds_gap_filled + c.builds_discovered,
        4,
        "2, 3, 4, 6: {c:?}"
    );
    assert!(!s.r.ledger().contains(&key_of(42, 5)));
    s.run(20_000);
    assert_eq!(s.drone.build_lookups(42, 5), lookups, "{:?}", s.drone.calls);
    let fives = s.numbers_delivered(42).iter().filter(|n| **n == 5).count();
    assert_eq!(fives, 1, "{:?}", s.delivered);
}

/// The time rule's slack is inclusive: drone's clock may be `max_clock_skew_ms` (300 s by
/// default) behind ours, so a build drone says finished exactly that long before the watch
/// began may have finished while watched, and is re-delivered; one a second earlier is not.
#[test]
fn a_build_finished_within_the_clock_skew_before_the_watch_is_still_redelivered() {
    let mut s = sim(monitor(""));
    s.drone.set(42, 61, "running", 2);
    s.saw(hook_of(42, 61, "running", 2), Delivered, true);
    finished_before(&mut s, 62, "success", 300);
    finished_before(&mut s, 63, "failure", 301);
    s.drone.set(42, 64, "running", 2);
    s.run(2_000);
    s.saw(hook_of(42, 64, "running", 2), Delivered, true);
    s.run(30_000);
    let found: Vec<u64> = s
        .numbers_delivered(42)
        .into_iter()
        .filter(|n| *n < 64)
        .collect();
    assert_eq!(found, vec![62], "{:?}", s.delivered);
    assert_eq!(s.r.counters().builds_finished_unwatched, 1);
}

/// `monitor` with drone's `counter` looked at every 2 minutes at most once a repository is
/// quiet, so a look that comes sooner was asked for.
fn monitor_patient() -> Config {
    let json = r#"{"pipeline_cluster":"pipeline","drone_cluster":"drone","drone_token":"t","tick_ms":100,"stale_after_ms":1000,"max_poll_interval_ms":120000,"circuit_open_ms":2000,"webhook_secret":"s3cret","signature_mode":"monitor"}"#;
    Config::parse(json.as_bytes(), &|_| None).unwrap()
}

/// Times drone's `counter` of repository `octocat/<name>` was looked at (or its name asked).
fn repo_looks(s: &Sim, name: &str) -> usize {
    let path = format!("/api/repos/octocat/{name}");
    s.drone.calls.iter().filter(|p| **p == path).count()
}

/// A repository only hints named is followed through drone's `counter` (in the hints' lane):
/// a hint for a new build wakes that look at once, so a build of it whose every webhook was
/// lost is re-delivered within seconds, not at the quiet repository's next look (minutes).
#[test]
fn a_hint_for_a_repository_only_hints_named_wakes_its_discovery() {
    let mut s = sim(monitor_patient());
    s.drone.set(7, 1, "running", 2);
    s.saw(hook_of(7, 1, "running", 2), NotDelivered, false);
    s.run(600_000);
    assert!(s.r.repo_confirmed(7).is_some(), "drone confirmed the name");
    s.drone.set(7, 2, "running", 2);
    s.drone.set(7, 3, "running", 2);
    s.saw(hook_of(7, 2, "running", 2), NotDelivered, false);
    s.run(4_000);
    assert!(
        s.numbers_delivered(7).contains(&3),
        "build 3 found by its counter: {:?}",
        s.delivered
    );
}

/// Hints never hasten the discovery of a repository evidence named: its looks at drone's
/// `counter` run in the main lane, which hints must not spend. Ten hints naming old builds of
/// a quiet repository bring no look at its counter closer.
#[test]
fn hints_for_old_builds_do_not_hasten_the_discovery_of_an_evidence_repository() {
    let mut s = sim(monitor_patient());
    for n in 1..=10 {
        finished_before(&mut s, n, "success", DAY_S);
    }
    s.drone.set(42, 101, "running", 2);
    s.saw(hook_of(42, 101, "running", 2), Delivered, true);
    s.run(600_000);
    let before = repo_looks(&s, "hello-world");
    for n in 1..=10 {
        s.saw(hook_of(42, n, "success", 3), Delivered, false);
        s.run(1_000);
    }
    s.run(2_000);
    for n in 1..=10 {
        assert_eq!(s.drone.build_lookups(42, n), 1, "{n}");
    }
    let during = repo_looks(&s, "hello-world") - before;
    assert!(during <= 1, "{during} looks at the counter in 12 s");
    assert!(s.delivered.is_empty(), "{:?}", s.delivered);
}

/// Hints get at most their share of drone calls, never discovery's: under a flood of unsigned
/// webhooks naming many builds of another repository (ten a second, keeping the hints' lane
/// spent), drone's `counter` of a repository genuine evidence named is still looked at within
/// seconds, so its builds whose every webhook was lost are found.
#[test]
fn a_flood_of_hint_lookups_never_starves_the_discovery_of_an_evidence_repository() {
    let mut s = sim(monitor(r#","max_drone_calls_per_sec":4"#));
    for n in 1..=400 {
        s.drone.set(7, n, "running", 2);
    }
    s.drone.set(42, 101, "running", 2);
    // Builds 102 and 103 exist only in drone: every webhook of theirs was lost.
    s.drone.set(42, 102, "running", 2);
    s.drone.set(42, 103, "running", 2);
    let mut flood = 1..=400u64;
    for _ in 0..30 {
        let n = flood.next().unwrap();
        s.unsigned(hook_of(7, n, "running", 2), NotDelivered);
        s.run(100);
    }
    let before = repo_looks(&s, "hello-world");
    let hint_calls = |s: &Sim| s.drone.calls_to(|p| p.contains("/repo-7/"));
    let hinted_before = hint_calls(&s);
    s.saw(hook_of(42, 101, "running", 2), Delivered, true);
    let start = s.now;
    let mut looked = None;
    for _ in 0..100 {
        let n = flood.next().unwrap();
        s.unsigned(hook_of(7, n, "running", 2), NotDelivered);
        s.run(100);
        if looked.is_none() && repo_looks(&s, "hello-world") > before {
            looked = Some(s.now - start);
        }
    }
    assert!(looked.is_some_and(|ms| ms <= 10_000), "{looked:?}");
    assert!(
        s.r.ledger().contains(&key_of(42, 103)),
        "found by the counter"
    );
    // The hints' share: half of 4 calls a second (and the bucket's burst of 2), even for the
    // builds drone said exist, which stay hint-only.
    let hinted = hint_calls(&s) - hinted_before;
    assert!(hinted <= 2 * 10 + 2, "{hinted} calls for hints in 10 s");
    assert!(s.r.counters().builds_hint_only > 0);
}
