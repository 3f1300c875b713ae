//! etcd's JSON gateway answers (cluster mode, `core::cluster::etcd`) must decode without
//! panicking, and whatever decodes must be within `core::cluster::etcd::limits`: ids and
//! revisions within int64, TTLs within their cap, a range no longer than its limit, keys and
//! values within their sizes, no pair changed after the answer's revision.
//!
//! Cluster mode's records (`core::cluster::node::decode_record`): a record taken as evidence is
//! a tagged queue message within the queue's input limits, whether it came as a whole input or
//! as a value of a decoded range.
//!
//! Input: the first byte picks the HTTP status (0: 200, else 400 + byte), the second the
//! range limit (1..=256); the rest is the body, tried with every decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use status_sync::core::cluster::etcd::{limits, Etcd};
use status_sync::core::cluster::node::decode_record;
use status_sync::core::cluster::{Campaign, ClusterStore, KeepAlive};
use status_sync::core::observation::QueueKey;

/// What a record taken as evidence must be.
fn record_within_limits(value: &[u8], key: &QueueKey) {
    if let Some(obs) = decode_record(value, Some(key)) {
        assert!(obs.verified && value.len() <= limits::MAX_VALUE_BYTES);
        let w = &obs.webhook;
        let max = status_sync::core::limits::MAX_INT;
        assert!(w.repo.id <= max && w.number <= max && w.version <= max);
        // Re-encoding gives a record that decodes to the same observation.
        let again = decode_record(&obs.encode(Some(key)), Some(key));
        assert_eq!(again.as_ref(), Some(&obs));
    }
    // Without the webhook secret nothing is evidence.
    assert!(decode_record(value, None).is_none());
}

fuzz_target!(|data: &[u8]| {
    let (status, limit, body) = match data {
        [s, l, rest @ ..] => (if *s == 0 { 200 } else { 400 + u32::from(*s) }, usize::from(*l) + 1, rest),
        _ => (200, 1, data),
    };
    let e = Etcd;
    if let Ok(g) = e.decode_grant(status, body) {
        assert!(g.lease > 0 && g.lease <= limits::MAX_INT64);
        assert!(g.ttl_s > 0 && g.ttl_s <= limits::MAX_TTL_S);
    }
    if let Ok(KeepAlive::Alive { ttl_s }) = e.decode_keep_alive(status, body) {
        assert!(ttl_s > 0 && ttl_s <= limits::MAX_TTL_S);
    }
    if let Ok(Campaign::Held { lease }) = e.decode_campaign(7, status, body) {
        assert!(lease != 7 && lease <= limits::MAX_INT64);
    }
    let key = QueueKey::derive(b"fuzz-webhook-secret");
    record_within_limits(body, &key);
    if let Ok(r) = e.decode_range(limit, status, body) {
        assert!(r.revision > 0 && r.revision <= limits::MAX_INT64);
        assert!(r.kvs.len() <= limit);
        for kv in &r.kvs {
            assert!(!kv.key.is_empty() && kv.key.len() <= limits::MAX_KEY_BYTES);
            assert!(kv.value.len() <= limits::MAX_VALUE_BYTES);
            assert!(0 < kv.create_revision && kv.create_revision <= kv.mod_revision);
            assert!(kv.mod_revision <= r.revision && kv.lease <= limits::MAX_INT64);
            record_within_limits(&kv.value, &key);
        }
    }
    if let Ok(revision) = e.decode_put(status, body) {
        assert!(revision > 0 && revision <= limits::MAX_INT64);
    }
});
