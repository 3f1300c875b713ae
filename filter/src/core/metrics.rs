//! Counters kept by the core. The shell mirrors them into host metrics (Envoy stats) by
//! adding the difference since it last looked, so the core never calls the host.
//!
//! Every metric carries the plugin's `instance` as a tag inside its Envoy name
//! ([`tagged`]), so that two plugins in one proxy never add into one series. Envoy's
//! `stats_config.stats_tags` (and Istio's `extraStatTags`) turn it into a Prometheus label.

/// Names of every metric, as they appear in Envoy's stats (README documents each).
pub mod names {
    pub const WEBHOOKS_OBSERVED: &str = "status_sync.webhooks_observed";
    pub const WEBHOOKS_DELIVERED: &str = "status_sync.webhooks_delivered";
    pub const WEBHOOKS_NOT_DELIVERED: &str = "status_sync.webhooks_not_delivered";
    pub const WEBHOOKS_REFUSED: &str = "status_sync.webhooks_refused";
    pub const WEBHOOKS_UNPARSABLE: &str = "status_sync.webhooks_unparsable";
    pub const WEBHOOKS_OVERSIZED: &str = "status_sync.webhooks_oversized";
    pub const WEBHOOKS_OUT_OF_LIMITS: &str = "status_sync.webhooks_out_of_limits";
    pub const WEBHOOKS_SIGNATURE_INVALID: &str = "status_sync.webhooks_signature_invalid";
    pub const WEBHOOKS_REJECTED: &str = "status_sync.webhooks_rejected";
    pub const QUEUE_DROPPED: &str = "status_sync.queue_dropped";
    pub const REDELIVERIES_OK: &str = "status_sync.redeliveries_ok";
    pub const REDELIVERIES_FAILED: &str = "status_sync.redeliveries_failed";
    pub const REDELIVERIES_REFUSED: &str = "status_sync.redeliveries_refused";
    pub const DRONE_POLLS_OK: &str = "status_sync.drone_polls_ok";
    pub const DRONE_POLLS_FAILED: &str = "status_sync.drone_polls_failed";
    pub const BUILDS_TRACKED: &str = "status_sync.builds_tracked";
    pub const BUILDS_EVICTED: &str = "status_sync.builds_evicted";
    pub const BUILDS_EXPIRED: &str = "status_sync.builds_expired";
    pub const BUILDS_NOT_FOUND: &str = "status_sync.builds_not_found";
    pub const GIVEUPS: &str = "status_sync.giveups";
    pub const LEADER_CHANGES: &str = "status_sync.leader_changes";
    pub const CIRCUIT_OPEN: &str = "status_sync.circuit_open";
    /// Times the circuit opened (was `circuit_opens`, one letter from the gauge).
    pub const CIRCUIT_TRIPS: &str = "status_sync.circuit_trips";
    pub const CALLS_INFLIGHT: &str = "status_sync.calls_inflight";
    pub const CALLS_EXPIRED: &str = "status_sync.calls_expired";
    pub const OBSERVATIONS_INVALID: &str = "status_sync.observations_invalid";
    pub const SNAPSHOT_ERRORS: &str = "status_sync.snapshot_errors";
    pub const BUILDS_GAP_FILLED: &str = "status_sync.builds_gap_filled";
    pub const BUILDS_SCAN_FOUND: &str = "status_sync.builds_scan_found";
    /// Gauge: age of the oldest transition the reconciler knows the pipeline lacks (0 when
    /// caught up). The SLO metric.
    pub const OLDEST_UNDELIVERED_SECONDS: &str = "status_sync.oldest_undelivered_seconds";
    /// Gauge: transitions the reconciler knows the pipeline lacks.
    pub const TRANSITIONS_MISSING: &str = "status_sync.transitions_missing";
    /// Counter: transitions found missing (a live webhook not accepted, or drone ahead).
    pub const TRANSITIONS_LOST: &str = "status_sync.transitions_lost";
    /// Counter: known-missing transitions the pipeline accepted later.
    pub const TRANSITIONS_RECOVERED: &str = "status_sync.transitions_recovered";
    /// Histogram: from when a transition was known missing to the pipeline accepting it.
    pub const RECOVERY_DELAY_MS: &str = "status_sync.recovery_delay_ms";
    /// Gauge: 1, tagged with the module version (`sync_version`).
    pub const BUILD_INFO: &str = "status_sync.build_info";
    /// Gauge: lease epoch of the current reconciler (its identity; changes with the leader).
    pub const RECONCILER_EPOCH: &str = "status_sync.reconciler_epoch";
    pub const HINTS_REFUTED: &str = "status_sync.hints_refuted";
    pub const BUILDS_DISCOVERED: &str = "status_sync.builds_discovered";
    pub const REPOS_EVICTED: &str = "status_sync.repos_evicted";
    pub const BUILDS_HINT_ONLY: &str = "status_sync.builds_hint_only";
}

/// Tag names, as Prometheus labels (Envoy's `stats_tags`, Istio's `extraStatTags`).
pub const INSTANCE_TAG: &str = "sync_instance";
pub const VERSION_TAG: &str = "sync_version";

/// The Envoy name of metric `name` for plugin `instance`: the tag in Istio's
/// `<tag>=.=<value>;.;` encoding, right after `status_sync.`. The tag regex
/// `(sync_instance=\.=(.*?);\.;)` removes it again and keeps the value as a label; the
/// encoding allows every character `instance` may hold (dots included).
pub fn tagged(name: &str, instance: &str) -> String {
    tagged_with(name, &[(INSTANCE_TAG, instance)])
}

/// [`tagged`] with several tags, in order.
pub fn tagged_with(name: &str, tags: &[(&str, &str)]) -> String {
    let (head, tail) = name.split_once('.').unwrap_or(("", name));
    let mut out = String::with_capacity(name.len() + 32);
    if !head.is_empty() {
        out.push_str(head);
        out.push('.');
    }
    for (k, v) in tags {
        out.push_str(k);
        out.push_str("=.=");
        out.push_str(v);
        out.push_str(";.;");
    }
    out.push_str(tail);
    out
}

/// The reconciler's counters (monotonic) and gauges (current values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub redeliveries_ok: u64,
    pub redeliveries_failed: u64,
    pub redeliveries_refused: u64,
    pub drone_polls_ok: u64,
    pub drone_polls_failed: u64,
    pub builds_evicted: u64,
    pub builds_expired: u64,
    pub builds_not_found: u64,
    pub giveups: u64,
    pub circuit_opens: u64,
    pub calls_expired: u64,
    pub observations_invalid: u64,
    pub snapshot_errors: u64,
    pub builds_gap_filled: u64,
    pub builds_scan_found: u64,
    pub transitions_lost: u64,
    pub transitions_recovered: u64,
    /// Drone contradicted something only unverified webhooks said (no such build, a claim
    /// drone is behind, a name that is another repository's): forgotten, nothing real lost.
    pub hints_refuted: u64,
    /// Builds found by a repository's `counter` or by drone's list of incomplete builds.
    pub builds_discovered: u64,
    /// Repository identities dropped to stay within `max_repos` (confirmed or candidates).
    pub repos_evicted: u64,
    // gauges
    pub builds_tracked: u64,
    pub circuit_open: u64,
    pub calls_inflight: u64,
    pub oldest_undelivered_seconds: u64,
    pub transitions_missing: u64,
    /// Tracked builds only unverified webhooks vouch for so far.
    pub builds_hint_only: u64,
}

impl Counters {
    /// The counters as (name, value) pairs, for mirroring into host metrics.
    pub fn counters(&self) -> [(&'static str, u64); 20] {
        use names::*;
        [
            (REDELIVERIES_OK, self.redeliveries_ok),
            (REDELIVERIES_FAILED, self.redeliveries_failed),
            (REDELIVERIES_REFUSED, self.redeliveries_refused),
            (DRONE_POLLS_OK, self.drone_polls_ok),
            (DRONE_POLLS_FAILED, self.drone_polls_failed),
            (BUILDS_EVICTED, self.builds_evicted),
            (BUILDS_EXPIRED, self.builds_expired),
            (BUILDS_NOT_FOUND, self.builds_not_found),
            (GIVEUPS, self.giveups),
            (CIRCUIT_TRIPS, self.circuit_opens),
            (CALLS_EXPIRED, self.calls_expired),
            (OBSERVATIONS_INVALID, self.observations_invalid),
            (SNAPSHOT_ERRORS, self.snapshot_errors),
            (BUILDS_GAP_FILLED, self.builds_gap_filled),
            (BUILDS_SCAN_FOUND, self.builds_scan_found),
            (TRANSITIONS_LOST, self.transitions_lost),
            (TRANSITIONS_RECOVERED, self.transitions_recovered),
            (HINTS_REFUTED, self.hints_refuted),
            (BUILDS_DISCOVERED, self.builds_discovered),
            (REPOS_EVICTED, self.repos_evicted),
        ]
    }

    pub fn gauges(&self) -> [(&'static str, u64); 6] {
        use names::*;
        [
            (BUILDS_TRACKED, self.builds_tracked),
            (CIRCUIT_OPEN, self.circuit_open),
            (CALLS_INFLIGHT, self.calls_inflight),
            (OLDEST_UNDELIVERED_SECONDS, self.oldest_undelivered_seconds),
            (TRANSITIONS_MISSING, self.transitions_missing),
            (BUILDS_HINT_ONLY, self.builds_hint_only),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_goes_after_the_prefix_in_istio_encoding() {
        assert_eq!(
            tagged(names::WEBHOOKS_OBSERVED, "ci.prod"),
            "status_sync.sync_instance=.=ci.prod;.;webhooks_observed"
        );
        assert_eq!(
            tagged_with(
                names::BUILD_INFO,
                &[(VERSION_TAG, "1.2.3"), (INSTANCE_TAG, "a")]
            ),
            "status_sync.sync_version=.=1.2.3;.;sync_instance=.=a;.;build_info"
        );
    }
}
