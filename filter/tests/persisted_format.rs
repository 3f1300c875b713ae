//! What the module persists in Envoy's shared data is a format: a new version of the module (an
//! ECDS upgrade, a new VM while the old one's data is still in Envoy) reads what the old one
//! wrote, and two instances of the filter in one Envoy (`instance`) must never read each other's.
//! These tests pin the key and queue names, their separation, and which shard layouts are read.

use status_sync::core::snapshot::{
    decode_shard, lease_key, meta_key, queue_name, shard_key, watermarks_key,
};

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

/// A shard is read only under a magic the module knows (`SSL2`, or `SSL1` from the version
/// before); anything else is not a shard, however well its body would decode.
#[test]
fn shards_are_read_only_under_a_known_magic() {
    let empty = |magic: &[u8; 4]| [&magic[..], &0u32.to_le_bytes()[..]].concat();
    assert_eq!(decode_shard(&empty(b"SSL2")), Some(vec![]));
    assert_eq!(decode_shard(&empty(b"SSL1")), Some(vec![]));
    for magic in [b"SSL3", b"SSL0", b"SSR3", b"\0\0\0\0"] {
        assert_eq!(decode_shard(&empty(magic)), None, "{magic:?}");
    }
}
