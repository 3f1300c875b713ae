//! The chaos suite: thousands of drone builds with drone-faithful lifecycles and faults
//! everywhere, driven through the real `status_sync.wasm` in the host by
//! `host_tests::chaos::Sim` (its workload, faults and attacker are described there), and the
//! guarantees of docs/reliability.md checked at the end. Seeded and deterministic: the same
//! seed gives the same run.
//!
//!
//! What is checked at the end (`broken`): every build's pipeline view equals drone's final
//! (status, version), except builds the filter cannot know (every webhook lost and newest of
//! its repository: none by design of the workload) and, with a tiny ledger, counted give-ups;
//! no re-delivery below a version the pipeline acknowledged, none carrying an attacker's bytes,
//! no build lookup under a name drone does not have; no VM death but the killed ones;
//! ledger within its cap, linear memory bounded; every webhook observed; nothing given up in
//! the default runs and nothing left tracked.
//!
//! Three cases are counted apart, each with a `repro_*` test: *terminal rewrites missed*
//! (drone wrote `killed` again with a newer version after a cancel, §4, and that webhook was
//! lost), *missed below a new reconciler's baseline* (builds lost just before a leader change)
//! and *older re-deliveries racing a live webhook*. The suite found all three in the filter;
//! they are fixed, and any occurrence fails the run (`CHAOS_STRICT=0` tolerates a few, for
//! investigating a new regression).
//!
//! `CHAOS_SCALE=<n>` multiplies the builds and the length of the fault phase (same rate) for
//! benchmarks; `chaos_seed_sweep` (ignored) runs many seeds. Every run prints its figures.

mod common;

use common::*;
use host_tests::chaos::{summarize, Case, Report, Sim, LEDGER_CAP, MEMORY_BOUND};
use host_tests::Host;

/// Strict unless `CHAOS_STRICT=0`: the filter issues this suite found (see the `repro_*` tests) fail
/// the run instead of being counted within a small bound.
fn strict() -> bool {
    // The issues this tolerance was for are fixed; `CHAOS_STRICT=0` relaxes it for
    // investigating a new one.
    !std::env::var("CHAOS_STRICT").is_ok_and(|v| v == "0")
}

/// How many cases of a known filter issue a run tolerates: none when strict.
fn known_issue_bound(share: u64) -> usize {
    if strict() {
        0
    } else {
        1 + share as usize
    }
}

/// The guarantees a run broke, as they are found.
struct Broken(Vec<String>);

impl Broken {
    fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.0.push(what);
        }
    }

    /// Each of `found` breaks a guarantee: "<how many> <what>:" and the list.
    fn none(&mut self, found: &[String], what: &str) {
        let list = found.join("\n    ");
        self.check(
            found.is_empty(),
            format!("{} {what}:\n    {list}", found.len()),
        );
    }
}

/// The guarantees a run broke (empty: all kept).
fn broken(case: &Case, r: &Report, host: &Host) -> Vec<String> {
    let mut b = Broken(Vec::new());
    let m = |k: &str| r.metrics.get(k).copied().unwrap_or(0);
    let list = |v: &[String]| v.join("\n    ");
    let default_ledger = case.max_tracked == LEDGER_CAP;

    // The attacker never steers a lookup or a re-delivery.
    b.none(
        &r.drone.store.calls.steered,
        "build lookups under a name drone does not have",
    );
    b.none(
        &r.pipeline.tainted,
        "re-deliveries carried attacker bytes (or were unsigned with a secret set)",
    );
    if case.attack {
        b.check(r.forged_sent > 100, "the attacker attacked".into());
        b.check(
            (case.mode == "enforce") == (r.forged_passed == 0),
            format!(
                "forged webhooks reached the pipeline: {} of {}",
                r.forged_passed, r.forged_sent
            ),
        );
    }
    if case.mode == "enforce" {
        b.check(
            m("webhooks_rejected") as u64 == r.forged_rejected
                && r.forged_rejected + 20 > r.forged_sent,
            format!(
                "enforce rejects every forged webhook and nothing else: {} rejected, {} forged, {} answered 401",
                m("webhooks_rejected"),
                r.forged_sent,
                r.forged_rejected
            ),
        );
    }

    // Never an older version re-delivered after a newer one was acknowledged.
    b.none(
        &r.pipeline.violations,
        "re-deliveries went below what the pipeline had acknowledged (or had a wrong webhook-id)",
    );
    // A re-delivery the pipeline refused (4xx) is final: counted in `redeliveries_refused`,
    // never retried. A reconciler that ends (leader killed, config reloaded) loses the answers
    // of its calls in flight (at most `max_inflight_calls`, 12), and its successor's checkpoint
    // may predate a refusal: both bounded per epoch.
    let epochs = r.kills.len() as u64 + r.reconfigures;
    let counted = m("redeliveries_refused") as u64;
    b.check(
        counted <= r.pipeline.redeliveries_refused
            && counted + 12 * epochs >= r.pipeline.redeliveries_refused,
        format!(
            "redeliveries_refused {counted}, the pipeline refused {} ({epochs} epochs ended)",
            r.pipeline.redeliveries_refused
        ),
    );
    // Counted per refused (build, version), not per attempt: one re-delivery retried through a
    // pipeline outage is one decision. A new reconciler also forgets finished builds (their
    // tombstones are not checkpointed): a webhook about one (late, or a forged hint in the
    // attacker cases) makes it look the build up and deliver drone's state once more, under
    // the same webhook-id. Bounded per epoch too.
    let refused_again: std::collections::BTreeSet<&str> = r
        .pipeline
        .refused_again
        .iter()
        .filter_map(|s| s.split(" re-delivered at").next())
        .collect();
    b.check(
        refused_again.len() as u64 <= epochs,
        format!(
            "{} refused versions re-delivered again ({} re-deliveries):\n    {}",
            refused_again.len(),
            r.pipeline.refused_again.len(),
            list(&r.pipeline.refused_again)
        ),
    );
    if case.loss > 0.0 {
        b.check(
            counted > 0,
            "the pipeline refused re-deliveries, and the filter counted them".into(),
        );
    }
    // Known issue 1 (`repro_slow_drone_answer_races_live_final`): rare by nature; a bound
    // catches it getting common.
    let race_bound = known_issue_bound(r.drone.builds.len() as u64 / 200);
    b.check(
        r.pipeline.races.len() <= race_bound,
        format!(
            "{} re-deliveries of an older version right after a live webhook acknowledged a newer one (bound {race_bound}):\n    {}",
            r.pipeline.races.len(),
            list(&r.pipeline.races)
        ),
    );

    // Convergence: every build, but those the filter cannot know (by design none) and the
    // counted give-ups.
    b.check(
        r.legit_unknowable.len() <= 2,
        format!(
            "the workload keeps unknowable builds (every webhook lost, newest of its repository) rare:\n    {}",
            list(&r.legit_unknowable)
        ),
    );
    // `repro_terminal_rewrite_after_cancel_is_not_delivered`; with a tiny ledger a watched
    // cancelled build may be evicted, which the give-up check below accounts for.
    b.check(
        !strict() || !default_ledger || r.terminal_rewrites_missed.is_empty(),
        format!(
            "{} terminal rewrites never delivered:\n    {}",
            r.terminal_rewrites_missed.len(),
            list(&r.terminal_rewrites_missed)
        ),
    );
    // Known issue 2 (`repro_gap_lost_across_leader_change`).
    let baseline_bound = known_issue_bound(r.drone.builds.len() as u64 / 100);
    b.check(
        !default_ledger || r.missed_below_baseline.len() <= baseline_bound,
        format!(
            "{} builds whose every webhook was lost were never looked up although a later build of their repository arrived (bound {baseline_bound}):\n    {}",
            r.missed_below_baseline.len(),
            list(&r.missed_below_baseline)
        ),
    );
    if default_ledger {
        b.check(
            m("giveups") == 0,
            format!("nothing needed giving up: {:?}", r.metrics),
        );
        b.none(
            &r.unconverged,
            "builds never reached drone's final state in the pipeline",
        );
        b.check(
            m("builds_tracked") == 0,
            format!(
                "everything settled and was forgotten: {} tracked",
                m("builds_tracked")
            ),
        );
    } else {
        b.check(m("builds_evicted") > 0, "the tiny ledger overflowed".into());
        // In `off` a build is noted (and the numbers below it filled) once drone confirms
        // it: one evicted before that hides the builds below it too, all counted give-ups.
        b.check(
            (r.unconverged.len() + r.terminal_rewrites_missed.len() + r.missed_below_baseline.len())
                as i64
                <= m("giveups"),
            format!(
                "every unconverged build is a counted give-up: {} unconverged, {} terminal rewrites missed, {} below a baseline, giveups {}:\n    {}",
                r.unconverged.len(),
                r.terminal_rewrites_missed.len(),
                r.missed_below_baseline.len(),
                m("giveups"),
                list(&r.unconverged)
            ),
        );
    }
    b.check(
        m("giveups") == m("builds_evicted") + m("builds_expired") + m("builds_not_found"),
        "giveups is the sum of its three kinds".into(),
    );

    // No VM died but the ones the test killed, and those were reloaded; one reconciler per
    // epoch (start, each kill, each config reload).
    let deaths = host.deaths();
    b.check(
        deaths.len() == r.kills.len()
            && deaths
                .iter()
                .zip(&r.kills)
                .all(|(d, vm)| d.vm == *vm && d.reason == "killed by test"),
        format!("VM deaths {deaths:?}, killed {:?}", r.kills),
    );
    b.check(
        host.dead_vms().is_empty(),
        format!("dead VMs {:?}", host.dead_vms()),
    );
    b.check(
        m("leader_changes") == 1 + r.kills.len() as i64 + r.reconfigures as i64,
        format!(
            "leader changes {} for {} kills and {} config reloads",
            m("leader_changes"),
            r.kills.len(),
            r.reconfigures
        ),
    );

    // Bounded.
    b.check(
        m("builds_tracked") <= case.max_tracked as i64,
        format!("ledger over its cap: {}", m("builds_tracked")),
    );
    b.check(
        r.max_memory < MEMORY_BOUND,
        format!("linear memory {} bytes", r.max_memory),
    );

    // Every webhook that reached a live filter was observed and queued, none unreadable (the
    // forged ones that passed were observed, or refused by the parser).
    b.check(
        (m("webhooks_observed") + m("webhooks_unparsable")) as u64
            == r.webhooks_arrived + r.forged_passed + r.forged_rejected
            && (r.forged_passed > 0 || m("webhooks_unparsable") == 0),
        format!(
            "observed {} (unparsable {}) of {} webhooks and {} + {} forged ones",
            m("webhooks_observed"),
            m("webhooks_unparsable"),
            r.webhooks_arrived,
            r.forged_passed,
            r.forged_rejected
        ),
    );
    for k in [
        "observations_invalid",
        "snapshot_errors",
        "queue_dropped",
        "calls_expired",
    ] {
        b.check(m(k) == 0, format!("{k} = {}", m(k)));
    }
    if case.loss > 0.0 {
        b.check(r.recovered > 0, "lost finals were recovered".into());
        b.check(
            m("builds_gap_filled") > 0,
            "builds whose webhooks were all lost were found by number".into(),
        );
    }
    // The run did what it says.
    b.check(
        r.kills.len() >= 2 && r.reconfigures >= 2 && r.webhooks_duplicated > 0,
        "the faults happened".into(),
    );
    b.0.into_iter()
        .map(|f| format!("case {} seed {:#x}: {f}", case.name, case.seed))
        .collect()
}

fn run_case(case: Case) {
    let (r, host) = Sim::new(case.clone()).run();
    summarize(&case, &r);
    let broken = broken(&case, &r, &host);
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

fn case(name: &'static str, seed: u64, loss: f64, mode: &'static str, attack: bool) -> Case {
    Case {
        name,
        seed,
        builds: 1500,
        loss,
        max_tracked: LEDGER_CAP,
        mode,
        attack,
    }
}

/// One `#[test]` per case: `test_name: "case", seed, loss, signature_mode, attacker;`.
macro_rules! chaos_cases {
    ($($(#[$doc:meta])* $test:ident: $name:literal, $seed:expr, $loss:expr, $mode:literal, $attack:expr;)*) => {
        $(
            $(#[$doc])*
            #[test]
            fn $test() {
                run_case(case($name, $seed, $loss, $mode, $attack));
            }
        )*
    };
}

chaos_cases! {
    chaos_no_loss: "loss-0", 0xC4A0_5001, 0.0, "off", false;
    /// `off`: every webhook, drone's and the attacker's, is a hint.
    chaos_loss_20_percent_off_under_attack: "loss-20", 0xC4A0_5002, 0.2, "off", true;
    /// `monitor`: drone's webhooks are signed (evidence), the attacker's pass as hints.
    chaos_loss_20_percent_monitor_under_attack: "loss-20", 0xC4A0_5012, 0.2, "monitor", true;
    /// `enforce`: the attacker's webhooks get 401.
    chaos_loss_50_percent_enforce_under_attack: "loss-50", 0xC4A0_5003, 0.5, "enforce", true;
    chaos_loss_50_percent_off_under_attack: "loss-50", 0xC4A0_5013, 0.5, "off", true;
}

/// A ledger far too small for the builds open at once: the oldest are evicted, and every
/// build that did not converge is one the filter gave up on (counted).
#[test]
fn chaos_tiny_ledger_evicts_and_counts_every_drop() {
    run_case(Case {
        builds: 400,
        max_tracked: 24,
        ..case("tiny-ledger", 0xC4A0_5004, 0.2, "off", false)
    });
}

/// Many seeds, for hunting bugs and for benchmarks:
/// `CHAOS_SEEDS=1-50 CHAOS_LOSS=0.5 CHAOS_BUILDS=1500 CHAOS_MODE=off CHAOS_ATTACK=1 cargo test -p host-tests --test chaos -- --ignored --nocapture`.
#[test]
#[ignore = "seed sweep: run on demand (CHAOS_SEEDS, CHAOS_LOSS, CHAOS_BUILDS, CHAOS_SCALE)"]
fn chaos_seed_sweep() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let seeds = env("CHAOS_SEEDS", "1-10");
    let (from, to) = seeds.split_once('-').unwrap_or((&seeds, &seeds));
    let (from, to): (u64, u64) = (from.parse().expect("seed"), to.parse().expect("seed"));
    let loss: f64 = env("CHAOS_LOSS", "0.5").parse().expect("CHAOS_LOSS");
    let builds: u64 = env("CHAOS_BUILDS", "1500").parse().expect("CHAOS_BUILDS");
    let mut failed = Vec::new();
    for seed in from..=to {
        let mode = Box::leak(env("CHAOS_MODE", "off").into_boxed_str());
        let case = Case {
            builds,
            ..case("sweep", seed, loss, mode, env("CHAOS_ATTACK", "1") == "1")
        };
        let (r, host) = Sim::new(case.clone()).run();
        summarize(&case, &r);
        failed.extend(broken(&case, &r, &host));
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

// ------------------------------------------------------------------------------ minimised
//
// The filter issues the chaos runs found, each minimised to a few webhooks. Ignored until
// the filter is fixed (the chaos runs count them within a bound meanwhile; `CHAOS_STRICT=1`
// makes them fail).

/// (status, version) of every delivery the pipeline received, in order.
fn received(pipeline: &SharedPipeline) -> Vec<(String, u64)> {
    pipeline
        .borrow()
        .received
        .iter()
        .map(|v| {
            (
                v["build"]["status"].as_str().unwrap_or("").to_string(),
                v["build"]["version"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Filter issue 1. A drone answer that is on its way while the build's final webhook passes
/// live: the reconciler decides on the answer before it drains the observation of the live
/// webhook (the queue is drained on the next tick only), so it re-delivers drone's older
/// state after the pipeline acknowledged the newer one.
///
/// tick 100 ms; build 1/1 created (v1) delivered live; drone sets it running (v2, no webhook);
/// the poll after `stale_after_ms` is answered `running v2` 1050 ms later; 1020 ms after the
/// poll the final `success v3` passes live and the pipeline answers 200; 30 ms later the poll
/// answer arrives, v2 > v1 (the settled version the reconciler knows), so `running v2` is
/// re-delivered: the pipeline gets [pending 1, success 3, running 2]. docs/reliability.md: "Newest state,
/// never older … made only when its version is newer than what the pipeline acknowledged".
#[test]
fn repro_slow_drone_answer_races_live_final() {
    // Signed: the live final is evidence (`off` has the same race with a claim instead:
    // `filter/tests/trust.rs` `a_claim_racing_the_lookup_is_asked_about_again`).
    let (mut host, drone, pipeline) = start_host(signed_host_config(1, ""));
    drone.borrow_mut().set(1, 1, "pending", 1);
    send_live(&mut host, &pipeline, 0, webhook(1, 1, "pending", 1), 200);
    drone.borrow_mut().set(1, 1, "running", 2); // setup: no webhook
    drone.borrow_mut().delay_ms = 1050; // drone answers late
    let before = host.calls().len();
    while host.calls().len() == before {
        host.advance(100).unwrap();
    }
    let polled_at = host.calls()[before].at_ms;
    let now = host.now_ms();
    host.advance(polled_at + 1020 - now).unwrap();
    drone.borrow_mut().set(1, 1, "success", 3);
    send_live(&mut host, &pipeline, 0, webhook(1, 1, "success", 3), 200);
    host.advance(5000).unwrap();
    assert_eq!(
        received(&pipeline),
        vec![("pending".to_string(), 1), ("success".to_string(), 3)],
        "nothing older than success v3 after the pipeline acknowledged it"
    );
}

/// Build 1 of repository 1 runs with every webhook delivered; build 2 is declined (its one
/// webhook, `build:created`, is lost: no webhook of it ever reaches the sidecar); build 3's
/// `build:created` arrives. `between` runs after build 1.
fn gap_case(between: impl FnOnce(&mut Host)) -> Option<(String, u64)> {
    let (mut host, drone, pipeline) = start_host(host_config(1, ""));
    let both = (&drone, &pipeline);
    for (status, version) in [
        ("pending", 1),
        ("running", 2),
        ("running", 2),
        ("success", 3),
    ] {
        drone_writes_and_sends(&mut host, both, (1, 1), (status, version));
        host.advance(500).unwrap();
    }
    between(&mut host);
    host.advance(3000).unwrap();
    drone.borrow_mut().set(1, 2, "declined", 2);
    drone_writes_and_sends(&mut host, both, (1, 3), ("pending", 1));
    host.advance(60_000).unwrap();
    assert!(host.deaths().iter().all(|d| d.reason == "killed by test"));
    let got = pipeline.borrow().status_of(1, 2);
    got
}

/// The mechanism of `max_gap_fill`, without a leader change: found and delivered.
#[test]
fn gap_fill_finds_a_declined_build_whose_only_webhook_was_lost() {
    assert_eq!(gap_case(|_| {}), Some(("declined".into(), 2)));
}

/// Filter issue 2. The highest build number seen per repository (`max_number`, what gap
/// filling compares against) lives only in the reconciler's memory, not in the checkpoint. A
/// new reconciler (config change, or the leader's VM crashing) treats its first webhook of a
/// repository as the baseline, so a build whose every webhook was lost between the old
/// reconciler's last webhook of that repository and the new one's first is never looked up,
/// although a later build of its repository arrived (docs/reliability.md: "A build whose every webhook was
/// lost is found when a later build of the same repository arrives with a higher number").
/// Declined builds (one webhook, `build:created`) are the most exposed.
#[test]
fn repro_gap_lost_across_leader_change() {
    let config_change = gap_case(|host| {
        host.reconfigure(&plugin_config(r#","max_gap_fill":20"#))
            .unwrap();
    });
    let leader_crash = gap_case(|host| {
        // Whichever VM leads, it dies (FAIL_RELOAD brings fresh VMs; shared data survives).
        for vm in 0..host.vm_count() {
            host.kill_vm(vm);
        }
        for vm in 0..host.vm_count() {
            host.reload_vm(vm).unwrap();
        }
    });
    assert_eq!(
        (config_change, leader_crash),
        (Some(("declined".into(), 2)), Some(("declined".into(), 2)))
    );
}

/// Not a bug by docs/reliability.md's rules, but a gap in "the pipeline gets the newest state": once a
/// build's terminal state is delivered the filter forgets it (tombstone), yet drone can write
/// the build again afterwards: a cancel writes `killed` (v3), then a teardown that read the
/// build after the cancel writes `killed` again (v4, drone's `operator/manager/teardown.go`) and sends webhook #4. If
/// that one webhook is lost, the pipeline keeps `killed` v3 forever (same status, older
/// version, `finished` of the cancel).
#[test]
fn repro_terminal_rewrite_after_cancel_is_not_delivered() {
    let (mut host, drone, pipeline) = start_host(host_config(1, ""));
    for (status, version) in [("pending", 1), ("running", 2), ("killed", 3)] {
        drone_writes_and_sends(&mut host, (&drone, &pipeline), (1, 1), (status, version));
        host.advance(500).unwrap();
    }
    drone.borrow_mut().set(1, 1, "killed", 4); // teardown after the cancel; webhook lost
    host.advance(120_000).unwrap();
    assert_eq!(
        pipeline.borrow().status_of(1, 1),
        Some(("killed".into(), 4))
    );
}
