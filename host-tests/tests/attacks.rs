//! Issue 11's memory bound, through the real wasm: forged webhooks of the largest size the input
//! limits accept grow the reconciler's (leader's) linear memory and Envoy's shared data by at
//! most the documented worst case per tracked build (docs/security.md, "Memory and limits").

mod common;

use common::*;
use host_tests::Host;
use status_sync::core::limits::{MAX_NAME_BYTES, MAX_REPO_JSON_BYTES, MAX_SYSTEM_JSON_BYTES};

/// docs/security.md ("Memory and limits"): worst case per tracked build in the leader's linear memory
/// (ledger entry, repository identity, checkpoint buffer), names at their limits.
const PER_BUILD_LINEAR: usize = 2 * 1024;
/// ... and in shared data (the build's checkpoint record), which Envoy holds.
const PER_BUILD_SHARED: usize = 1024;
/// Per repository whose `repo` object is cached (at most `max_repos`): 8 KiB by the input
/// limits, plus the map's and allocator's overhead.
const PER_REPO_JSON: usize = MAX_REPO_JSON_BYTES + 1024;
/// Per repository in shared data: its identity (id, namespace, name, watermark) in the
/// checkpoint.
const PER_REPO_SHARED: usize = 1024;

/// A forged `build:updated` at the input limits: 250-byte namespace and name,
/// a `repo` object of 8 KiB and a `system` object of 4 KiB, id and number near 2^63-1.
fn max_size_forged(i: u64) -> Vec<u8> {
    let wide = "é".repeat(MAX_NAME_BYTES / 2);
    let id = i64::MAX as u64 - i;
    let head = format!(r#"{{"id":{id},"namespace":"{wide}","name":"{wide}","pad":""#);
    let repo = format!(
        "{head}{}\"}}",
        "r".repeat(MAX_REPO_JSON_BYTES - head.len() - 2)
    );
    assert_eq!(repo.len(), MAX_REPO_JSON_BYTES);
    let head = r#"{"proto":"https","host":""#;
    let system = format!(
        "{head}{}\"}}",
        "s".repeat(MAX_SYSTEM_JSON_BYTES - head.len() - 2)
    );
    assert_eq!(system.len(), MAX_SYSTEM_JSON_BYTES);
    format!(
        r#"{{"event":"build","action":"updated","repo":{repo},"build":{{"id":1,"repo_id":{id},"number":{id},"status":"running","version":{id}}},"system":{system}}}"#
    )
    .into_bytes()
}

/// Bytes of every shared-data value (the ledger checkpoint, the lease, ...).
fn shared_bytes(host: &Host) -> usize {
    host.shared_data_keys()
        .iter()
        .filter_map(|k| host.shared_data(k))
        .map(|v| v.len())
        .sum()
}

/// Growth after `N` max-size forged webhooks: (builds tracked, leader linear memory, shared
/// data), from a warmed-up baseline.
fn forged_growth(extra: &str) -> (usize, usize, usize) {
    // `off` (the default without a secret): every webhook is unverified. No poll happens
    // during the test (stale_after_ms), so nothing is dropped before it is measured.
    let quiet = format!(r#","stale_after_ms":600000,"max_poll_interval_ms":600000{extra}"#);
    let (mut host, _drone, pipeline) = start_host(host_config(2, &quiet));
    // Forged webhook i, on worker i % 2.
    let send = |host: &mut Host, i: u64| {
        send_live(host, &pipeline, (i % 2) as usize, max_size_forged(i), 200);
    };
    // Warm up: the leader's first allocations, the workers' caches, one checkpoint.
    for i in 0..20 {
        send(&mut host, i);
    }
    host.advance(3_000).unwrap();
    let leader = host
        .logs_containing("reconciler elected")
        .last()
        .map(|l| l.vm)
        .expect("a leader");
    let tracked0 = metric(&host, "builds_tracked");
    let mem0 = host.memory_bytes(leader);
    let shared0 = shared_bytes(&host);
    for i in 20..20 + N {
        send(&mut host, i);
        if i % 50 == 0 {
            host.advance(100).unwrap();
        }
    }
    host.advance(3_000).unwrap();
    assert_eq!(
        metric(&host, "webhooks_out_of_limits"),
        0,
        "all within the limits"
    );
    assert_eq!(metric(&host, "leader_changes"), 1, "one leader throughout");
    let tracked = (metric(&host, "builds_tracked") - tracked0) as usize;
    let mem = host.memory_bytes(leader) - mem0;
    let shared = shared_bytes(&host).saturating_sub(shared0);
    println!(
        "{N} max-size forged webhooks{extra}: {tracked} more tracked, leader linear memory \
         +{mem} B ({} B per tracked build), shared data +{shared} B ({} B per tracked build)",
        mem / tracked.max(1),
        shared / tracked.max(1),
    );
    assert!(
        tracked <= N as usize,
        "one entry per webhook at most: {tracked}"
    );
    (tracked, mem, shared)
}

const N: u64 = 1000;

/// Per tracked build, with the repository JSON cache held to one entry: the ledger entry, the
/// repository's identity and its checkpoint record, names at their 250-byte limit.
#[test]
fn thousand_max_size_forged_webhooks_cost_at_most_the_bound_per_tracked_build() {
    let (tracked, mem, shared) = forged_growth(r#","max_repos":1"#);
    assert!(
        mem <= tracked * PER_BUILD_LINEAR,
        "leader linear memory grew {mem} B for {tracked} builds (bound {PER_BUILD_LINEAR} B each)"
    );
    assert!(
        shared <= tracked * PER_BUILD_SHARED,
        "shared data grew {shared} B for {tracked} builds (bound {PER_BUILD_SHARED} B each)"
    );
}

/// The same with the default `max_repos` (1024): each forged repository may also have its
/// `repo` object cached (at most 8 KiB by the input limits), at most `max_repos` of them.
#[test]
fn thousand_max_size_forged_webhooks_in_their_own_repositories_stay_within_the_bound() {
    let (tracked, mem, shared) = forged_growth("");
    let repos = tracked.min(1024);
    let bound = tracked * PER_BUILD_LINEAR + repos * PER_REPO_JSON;
    assert!(
        mem <= bound,
        "leader linear memory grew {mem} B for {tracked} builds (bound {bound} B)"
    );
    let bound = tracked * PER_BUILD_SHARED + repos * PER_REPO_SHARED;
    assert!(
        shared <= bound,
        "shared data grew {shared} B for {tracked} builds (bound {bound} B)"
    );
}
