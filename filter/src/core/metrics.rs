//! Every metric status-sync defines, declared once (the `metrics!` table below: name, kind,
//! help), and the counters the core keeps. The shell defines the table's metrics in Envoy;
//! the leader's turn ([`super::turn`]) mirrors the core's counters into them through its
//! [`super::host::Host`] by adding the difference since it last looked.
//!
//! Every metric carries the plugin's `instance` as a tag inside its Envoy name
//! ([`tagged`]), so that two plugins in one proxy never add into one series. Envoy's
//! `stats_config.stats_tags` (and Istio's `extraStatTags`) turn it into a Prometheus label.

use super::config::help;

/// How Envoy keeps a metric (and how Prometheus sees it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; the shell adds what the core counted since it last looked.
    Counter,
    /// A current value, set each time.
    Gauge,
    /// Samples recorded one by one (Envoy's default buckets).
    Histogram,
}

impl Kind {
    /// As docs/metrics.md's table names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric as operators know it: its Envoy name (`status_sync.` + the Prometheus name's
/// tail), its kind, and what it counts (docs/metrics.md's table is generated from [`METRICS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// Empty in the wasm module (see [`help`]).
    pub help: &'static str,
}

/// Declares every metric once, one row each, in the table's order:
/// `Variant(counters_field): Kind "status_sync.name" "help";`. A row with a field is kept by
/// the core in [`Counters`] (the shell mirrors it each tick); one without is written by the
/// shell itself. From the rows come [`Id`], [`METRICS`], [`Counters`] and [`Counters::get`].
macro_rules! metrics {
    ($( $id:ident $(($field:ident))? : $kind:ident $name:literal $help:literal; )*) => {
        /// Every metric, in [`METRICS`]' order (`METRICS[id as usize]` is `id.metric()`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Id {
            $( $id, )*
        }

        impl Id {
            pub const ALL: &'static [Id] = &[ $( Id::$id, )* ];
            pub const COUNT: usize = Id::ALL.len();

            /// Its Envoy name, `status_sync.…`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Id::$id => $name, )*
                }
            }

            pub const fn kind(self) -> Kind {
                match self {
                    $( Id::$id => Kind::$kind, )*
                }
            }

            /// Its name, kind and help.
            pub const fn metric(self) -> Metric {
                let help = match self {
                    $( Id::$id => help($help), )*
                };
                Metric { name: self.name(), kind: self.kind(), help }
            }
        }

        /// Every metric status-sync defines.
        pub const METRICS: &[Metric] = &[ $( Id::$id.metric(), )* ];

        /// The reconciler's counters (monotonic) and gauges (current values): the rows of
        /// [`METRICS`] the core keeps.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $( $( pub $field: u64, )? )*
        }

        impl Counters {
            /// The value of `id`, when the core keeps it.
            pub fn get(&self, id: Id) -> Option<u64> {
                match id {
                    $( $( Id::$id => Some(self.$field), )? )*
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }
    };
}

metrics! {
    OldestUndeliveredSeconds(oldest_undelivered_seconds): Gauge
        "status_sync.oldest_undelivered_seconds"
        "**the SLO**: age of the oldest transition the reconciler knows the pipeline lacks (a \
         live webhook the pipeline did not take, or drone's API ahead of what the pipeline \
         accepted); 0 when caught up";
    RecoveryDelayMs: Histogram
        "status_sync.recovery_delay_ms"
        "from when the reconciler learnt a transition was missing to the pipeline accepting it \
         (a re-delivery or a late live webhook); Envoy's default buckets, 0.5 ms to 1 h";
    TransitionsMissing(transitions_missing): Gauge
        "status_sync.transitions_missing"
        "transitions known missing now";
    TransitionsLost(transitions_lost): Counter
        "status_sync.transitions_lost"
        "transitions found missing (a live webhook the pipeline did not accept, or drone ahead)";
    TransitionsRecovered(transitions_recovered): Counter
        "status_sync.transitions_recovered"
        "known-missing transitions the pipeline accepted later";
    SloDropped(slo_dropped): Counter
        "status_sync.slo_dropped"
        "SLO bookkeeping dropped to stay bounded: recovery delays beyond 4096 between two \
         callbacks (not in the histogram), or the oldest missing transition forgotten past \
         `max_tracked_builds`";
    BuildInfo: Gauge
        "status_sync.build_info"
        "1, labelled `sync_version` (the module's version)";
    ReconcilerEpoch: Gauge
        "status_sync.reconciler_epoch"
        "lease epoch of the current reconciler: its identity (logs name it `epoch=`), changes \
         with every leader change";
    WebhooksObserved: Counter
        "status_sync.webhooks_observed"
        "drone build webhooks seen";
    WebhooksDelivered: Counter
        "status_sync.webhooks_delivered"
        "… the pipeline answered 2xx";
    WebhooksNotDelivered: Counter
        "status_sync.webhooks_not_delivered"
        "… 5xx, 408, 429, 3xx, reset or timeout (will be re-delivered)";
    WebhooksRefused: Counter
        "status_sync.webhooks_refused"
        "… 4xx (not retried)";
    WebhooksUnparsable: Counter
        "status_sync.webhooks_unparsable"
        "… body not understood (passed through)";
    WebhooksOversized: Counter
        "status_sync.webhooks_oversized"
        "… body over `max_body_bytes` (passed through, not parsed)";
    WebhooksOverBudget: Counter
        "status_sync.webhooks_over_budget"
        "… not observed because the worker already held `max_body_bytes_in_flight` body bytes \
         (passed through unobserved; in enforce, a body held for its digest check that did not \
         fit was answered 503)";
    WebhooksOutOfLimits: Counter
        "status_sync.webhooks_out_of_limits"
        "… a field outside the input limits (see Bad input; passed through, not tracked)";
    WebhooksSignatureInvalid: Counter
        "status_sync.webhooks_signature_invalid"
        "signature check failed (monitor: build webhooks; enforce: any request to \
         `webhook_path`)";
    WebhooksRejected: Counter
        "status_sync.webhooks_rejected"
        "answered 401 in enforce mode";
    QueueDropped: Counter
        "status_sync.queue_dropped"
        "observations that could not be queued";
    RedeliveriesOk(redeliveries_ok): Counter
        "status_sync.redeliveries_ok"
        "re-deliveries the pipeline accepted";
    RedeliveriesFailed(redeliveries_failed): Counter
        "status_sync.redeliveries_failed"
        "re-delivery attempts that failed (retried with backoff)";
    RedeliveriesRefused(redeliveries_refused): Counter
        "status_sync.redeliveries_refused"
        "re-deliveries answered 4xx (not retried)";
    RedeliveriesInvalid(redeliveries_invalid): Counter
        "status_sync.redeliveries_invalid"
        "re-deliveries not sent because their body could not be built (a stored `repo` or \
         `system` that is not a JSON object): never sent empty; the object is dropped and the \
         build looked up again";
    DronePollsOk(drone_polls_ok): Counter
        "status_sync.drone_polls_ok"
        "drone API calls answered";
    DronePollsFailed(drone_polls_failed): Counter
        "status_sync.drone_polls_failed"
        "drone API calls that failed (retried with backoff; 5xx, timeouts and resets feed the \
         circuit, a 4xx backs off that build alone)";
    DroneEntriesSkipped(drone_entries_skipped): Counter
        "status_sync.drone_entries_skipped"
        "entries of drone's `/api/builds/incomplete` left out (malformed or outside the input \
         limits); the rest of the list is used, and a repository's `counter` still finds such a \
         build";
    BuildsTracked(builds_tracked): Gauge
        "status_sync.builds_tracked"
        "builds in the ledger";
    BuildsEvicted(builds_evicted): Counter
        "status_sync.builds_evicted"
        "give-up: ledger full, oldest evicted";
    BuildsExpired(builds_expired): Counter
        "status_sync.builds_expired"
        "give-up: open longer than `max_build_age_ms`";
    BuildsNotFound(builds_not_found): Counter
        "status_sync.builds_not_found"
        "give-up: drone answered 404 (or 400) for a build evidence named (an inferred one after \
         3 more looks)";
    Giveups(giveups): Counter
        "status_sync.giveups"
        "all give-ups: the sum of the three above, its causes (a build whose repository's name \
         was dropped to stay within `max_repos` waits for a name, then counts as expired)";
    LeaderChanges: Counter
        "status_sync.leader_changes"
        "times a root became the reconciler";
    CircuitOpen(circuit_open): Gauge
        "status_sync.circuit_open"
        "1 while the circuit toward drone is open";
    // The field keeps its old name; the metric was `circuit_opens`, one letter from the gauge.
    CircuitTrips(circuit_opens): Counter
        "status_sync.circuit_trips"
        "times the circuit opened";
    CallsInflight(calls_inflight): Gauge
        "status_sync.calls_inflight"
        "calls in flight";
    CallsExpired(calls_expired): Counter
        "status_sync.calls_expired"
        "calls the host never answered (given up after 2× timeout)";
    CallsRefused: Counter
        "status_sync.calls_refused"
        "calls the host refused to send (a cluster Envoy does not define: see the log line \
         `cannot call cluster`): each failed at once, and retried as a failed call is";
    ObservationsInvalid(observations_invalid): Counter
        "status_sync.observations_invalid"
        "unreadable queue messages";
    ObservationsUnauthenticated(observations_unauthenticated): Counter
        "status_sync.observations_unauthenticated"
        "queue messages claiming a verified webhook without a tag made with this \
         configuration's webhook secret: taken as hints (another wasm plugin of the same Envoy \
         writing the queue, workers with another `webhook_secret`, or, during a rolling \
         upgrade, workers of a version before this tag)";
    SnapshotErrors(snapshot_errors): Counter
        "status_sync.snapshot_errors"
        "ledger snapshot values (shards, shard count, watermarks) that could not be read or written";
    BuildsGapFilled(builds_gap_filled): Counter
        "status_sync.builds_gap_filled"
        "builds found missing by their number and looked up";
    BuildsScanFound(builds_scan_found): Counter
        "status_sync.builds_scan_found"
        "builds found by listing `scan_repos`";
    BuildsDiscovered(builds_discovered): Counter
        "status_sync.builds_discovered"
        "builds found by a repository's `counter` or drone's list of incomplete builds";
    BuildsFinishedUnwatched(builds_finished_unwatched): Counter
        "status_sync.builds_finished_unwatched"
        "builds not re-delivered because drone says they finished before the reconciler \
         watched their repository (one a previous leader handed over: `max_build_age_ms` \
         ago; `max_clock_skew_ms` of slack): forgotten, not this reconciler's to re-deliver";
    BuildsHintOnly(builds_hint_only): Gauge
        "status_sync.builds_hint_only"
        "tracked builds only unverified webhooks vouch for so far (at most a quarter of \
         `max_tracked_builds`)";
    HintsRefuted(hints_refuted): Counter
        "status_sync.hints_refuted"
        "drone contradicted an unverified webhook (no such build or repository, a version \
         drone is behind, a name that is another repository's, or never confirmed within \
         `max_build_age_ms`): forgotten, nothing real given up";
    ReposEvicted(repos_evicted): Counter
        "status_sync.repos_evicted"
        "repository names dropped to stay within `max_repos` (see the configuration reference)";
    ClusterMode: Gauge
        "status_sync.cluster_mode"
        "0: embedded (no `etcd_cluster`); 1: cluster mode, this sidecar leads; 2: cluster mode, \
         another sidecar leads; 3: fallback to local reconciliation (etcd unreachable, without \
         quorum, or the lease lost and not renewable)";
    ClusterFallbacks: Counter
        "status_sync.cluster_fallbacks"
        "entries into the fallback to local reconciliation (`cluster_mode` 3)";
    EtcdRequests: Counter
        "status_sync.etcd_requests"
        "requests sent to etcd (election, keep-alives, records written and read)";
    EtcdRecordsWritten: Counter
        "status_sync.etcd_records_written"
        "delivery records (transitions this sidecar's replica accepted) written to etcd";
    EtcdRecordsDropped: Counter
        "status_sync.etcd_records_dropped"
        "delivery records not written to etcd: more than 4096 waiting (etcd unreachable), the \
         oldest dropped first, or one too large even without its repository objects; the \
         transition is still in this sidecar's own reconciler";
    RedeliveriesHeldDropped: Counter
        "status_sync.redeliveries_held_dropped"
        "cluster mode: re-deliveries the cluster leader held until the records vouched for them, \
         withdrawn to keep the held list within `max_inflight_calls` (looked at again after \
         `stale_after_ms`); it holds only calls in flight, so this stays 0 unless that breaks";
    EtcdAnswersInvalid: Counter
        "status_sync.etcd_answers_invalid"
        "etcd answers or records refused: outside the input limits, malformed, or a record \
         without a valid tag made with the webhook secret (forged)";
}

/// The metric named `name` (`status_sync.…`), if status-sync defines it.
pub fn by_name(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        assert_eq!(METRICS.len(), Id::COUNT);
        let mut seen = std::collections::HashSet::new();
        for (i, &id) in Id::ALL.iter().enumerate() {
            let m = &METRICS[i];
            assert_eq!(id as usize, i);
            assert_eq!(id.metric(), *m);
            assert_eq!((id.name(), id.kind()), (m.name, m.kind));
            assert!(seen.insert(m.name), "{} declared twice", m.name);
            let tail = m.name.strip_prefix("status_sync.").unwrap_or_default();
            assert!(
                !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty(), "{}", m.name);
            assert_eq!(by_name(m.name), Some(m));
            // The shell mirrors core values as counters or gauges; a histogram takes samples.
            if Counters::default().get(id).is_some() {
                assert_ne!(m.kind, Kind::Histogram, "{}", m.name);
            }
        }
        assert_eq!(by_name("status_sync.nope"), None);
    }

    #[test]
    fn tag_goes_after_the_prefix_in_istio_encoding() {
        assert_eq!(
            tagged(Id::WebhooksObserved.name(), "ci.prod"),
            "status_sync.sync_instance=.=ci.prod;.;webhooks_observed"
        );
        assert_eq!(
            tagged_with(
                Id::BuildInfo.name(),
                &[(VERSION_TAG, "1.2.3"), (INSTANCE_TAG, "a")]
            ),
            "status_sync.sync_version=.=1.2.3;.;sync_instance=.=a;.;build_info"
        );
    }
}
