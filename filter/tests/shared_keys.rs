//! The names of the shared-data keys and the observation queue are a persistent format: a new
//! version of the module (an ECDS upgrade, a restart with the old VM's data still in Envoy) reads
//! what the old one wrote under them, and two instances of the filter in one Envoy (`instance`)
//! must never read each other's. These tests pin the names and their separation.

use status_sync::core::snapshot::{lease_key, meta_key, queue_name, shard_key, watermarks_key};

#[test]
fn names_are_the_ones_earlier_versions_wrote() {
    assert_eq!(meta_key("ci"), "status-sync/ci/ledger/meta");
    assert_eq!(shard_key("ci", 7), "status-sync/ci/ledger/7");
    assert_eq!(lease_key("ci"), "status-sync/ci/lease");
    assert_eq!(watermarks_key("ci"), "status-sync/ci/repos");
    assert_eq!(queue_name("ci"), "status-sync/ci/observations");
}

#[test]
fn names_are_distinct_per_kind_shard_and_instance() {
    let mut names = Vec::new();
    for instance in ["a", "b", "default"] {
        names.push(meta_key(instance));
        names.push(lease_key(instance));
        names.push(watermarks_key(instance));
        names.push(queue_name(instance));
        for shard in 0..64 {
            names.push(shard_key(instance, shard));
        }
    }
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        count,
        "two kinds, shards or instances share a name"
    );
}
