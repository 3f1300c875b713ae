//! Gap filling (`core/reconciler/gaps.rs`): builds whose every webhook was lost, found by
//! number between the highest seen and a new one, never below the lowest, capped by
//! `max_gap_fill`, within the inferred builds' share of the ledger; the watermarks that follow
//! the numbers seen. Driven natively with a virtual clock.

mod common;

use common::*;
use status_sync::core::ledger::{Class, Entry};
use status_sync::core::model::BuildStatus;
use status_sync::core::model::DeliveryOutcome::Delivered;
use status_sync::core::snapshot;

/// Gap filling upward also takes only the `max_gap_fill` numbers just below the new one.
#[test]
fn upward_gap_fill_is_capped_and_not_due_at_once() {
    let mut r = gap_fill_capped(2, &[(10, "success", 3), (40, "running", 2)]);
    assert_eq!(tracked(&r), vec![38, 39, 40]);
    assert!(r.tick(T0 + 700).is_empty(), "not stale yet");
    assert_eq!(r.ledger().due_count(T0 + 1200), 3);
}

/// gaps.rs (note_number): another webhook of a build already seen changes no watermark: none
/// is written again.
#[test]
fn the_same_build_number_again_writes_no_watermark() {
    let mut r = after_build_five("");
    assert!(r.take_watermarks().is_some());
    r.observe(obs(5, "success", 3, Delivered), T0 + 10);
    assert_eq!(r.take_watermarks(), None);
}

/// gaps.rs (note_number): only a new highest number makes the repository active again; another
/// webhook of the newest build leaves the growing interval between looks at `counter` alone.
#[test]
fn the_same_build_number_again_does_not_hasten_discovery() {
    let mut r = after_build_five("");
    let first = discovery(&mut r, ok(repo_json_with_counter(5)));
    r.observe(obs(5, "success", 3, Delivered), first);
    let mut next = first;
    let call = tick_until(&mut r, &mut next, &is_repo_call, &mut unanswered);
    r.on_response(call.id, ok(repo_json_with_counter(5)), next);
    assert!(
        next - first >= 1600,
        "interval grown to 2 s (±20%): {}",
        next - first
    );
}

#[test]
fn watermarks_follow_the_highest_and_lowest_numbers_seen() {
    let mut r = seen_live(r#","max_gap_fill":3"#, &[(50, "running", 2)]);
    assert_eq!(marks(&mut r), Some((50, 50)));
    r.observe(obs(45, "running", 2, Delivered), T0);
    assert_eq!(marks(&mut r), Some((50, 45)), "lower: the minimum moves");
    r.observe(obs(47, "running", 2, Delivered), T0);
    assert_eq!(marks(&mut r), None, "between: nothing changed");
    r.observe(obs(50, "running", 3, Delivered), T0);
    r.observe(obs(45, "running", 3, Delivered), T0);
    assert_eq!(
        marks(&mut r),
        None,
        "the same numbers again: nothing changed"
    );
    r.observe(obs(51, "running", 2, Delivered), T0);
    assert_eq!(marks(&mut r), Some((51, 45)));
}

/// Upward, the numbers strictly between the highest seen and the new one, no more than
/// `max_gap_fill` of them, and not one the new leader learnt from the watermarks.
#[test]
fn upward_gap_is_exactly_the_numbers_between() {
    let mut r = leader_after(10, 10, r#","max_gap_fill":20"#);
    r.observe(obs(13, "running", 2, Delivered), T0);
    assert_eq!(tracked(&r), vec![11, 12, 13]);
    assert_eq!(r.counters().builds_gap_filled, 2);
    // The next number: no gap.
    r.observe(obs(14, "running", 2, Delivered), T0);
    assert_eq!(r.counters().builds_gap_filled, 2);
    assert_eq!(tracked(&r), vec![11, 12, 13, 14]);
}

/// Downward, nothing: a late build below the lowest number seen fills no gap (issue 20,
/// finding 1: the numbers between finished before the watch, or their own webhooks come).
#[test]
fn a_late_lower_number_fills_no_gap_below() {
    let mut r = leader_after(30, 30, r#","max_gap_fill":20"#);
    r.observe(obs(26, "running", 2, Delivered), T0);
    assert_eq!(tracked(&r), vec![26]);
    r.observe(obs(25, "running", 2, Delivered), T0);
    assert_eq!(tracked(&r), vec![25, 26]);
    assert_eq!(r.counters().builds_gap_filled, 0);
    assert_eq!(marks(&mut r), Some((30, 25)), "the lowest still moves");
}

/// Builds already tracked (here from a previous leader's snapshot) are not counted or tracked
/// twice by gap filling.
#[test]
fn gap_fill_skips_builds_already_tracked() {
    let mut r = leader_after(5, 5, r#","max_gap_fill":20"#);
    let mut e = Entry::new(T0, Class::Backed);
    e = settled(e, 2, BuildStatus::Running);
    e.next_due_ms = T0 + 50_000;
    let shard = snapshot::encode_shard(&[record(8, e)]);
    assert!(r.load_shard(&shard, T0));
    r.observe(obs(10, "running", 2, Delivered), T0);
    assert_eq!(tracked(&r), vec![6, 7, 8, 9, 10]);
    assert_eq!(r.counters().builds_gap_filled, 3, "6, 7 and 9");
    let eight = key(8);
    assert_eq!(r.ledger().get(&eight).unwrap().settled_version(), 2);
}

/// Gap-filled builds are inferred (drone may not have them): they go through the bounded
/// ledger within their quarter of it, the oldest evicted first and each eviction counted as a
/// give-up; they never evict a build backed by evidence, which takes the room that is left.
#[test]
fn gap_fill_into_a_full_ledger_counts_evictions() {
    // 8 builds, 2 of them inferred at most.
    let mut r = leader_after(10, 10, r#","max_gap_fill":20,"max_tracked_builds":8"#);
    r.observe(obs(15, "running", 2, Delivered), T0);
    // 11..=14 gap-filled through a share of two, then 15 (a verified webhook).
    assert_eq!(r.counters().builds_gap_filled, 4);
    assert_eq!(r.ledger().len(), 3);
    assert_eq!(r.counters().builds_evicted, 2);
    assert_eq!(r.counters().giveups, 2);
    assert_eq!(tracked(&r), vec![13, 14, 15]);
    // Backed builds fill the ledger: the inferred ones go first, then the oldest backed one.
    for n in 16..=22 {
        r.observe(obs(n, "running", 2, Delivered), T0);
    }
    assert_eq!(r.ledger().len(), 8);
    assert_eq!(tracked(&r), vec![15, 16, 17, 18, 19, 20, 21, 22]);
    assert_eq!(r.counters().builds_evicted, 4);
    r.observe(obs(23, "running", 2, Delivered), T0);
    assert_eq!(tracked(&r), vec![16, 17, 18, 19, 20, 21, 22, 23]);
    assert_eq!(r.counters().builds_evicted, 5);
    assert_eq!(r.counters().giveups, 5);
    // A late lower build fills no gap below; 7 itself evicts the oldest backed build.
    r.observe(obs(7, "running", 2, Delivered), T0);
    assert_eq!(tracked(&r), vec![7, 17, 18, 19, 20, 21, 22, 23]);
    assert_eq!(r.counters().builds_gap_filled, 4, "none below");
    assert_eq!(r.counters().builds_evicted, 6, "16");
    assert_eq!(r.counters().giveups, 6);
}

/// Builds below the lowest number seen, however many arrive late, fill no gap.
#[test]
fn lower_numbers_never_fill_downward() {
    let mut r = gap_fill_capped(20, &[(50, "success", 3), (45, "success", 3)]);
    assert_eq!(r.counters().builds_gap_filled, 0);
    assert_eq!(r.ledger().len(), 0, "both finished and delivered");
    r.observe(obs(40, "running", 2, Delivered), T0);
    assert_eq!(tracked(&r), vec![40]);
    assert_eq!(r.counters().builds_gap_filled, 0);
}
