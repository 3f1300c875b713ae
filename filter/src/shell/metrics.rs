//! Host metrics (Envoy stats), defined from [`crate::core::metrics::METRICS`]. Defined per
//! root context; counters with the same name in every VM add up to one Envoy stat. Names carry
//! the plugin's `instance` as a tag ([`crate::core::metrics::tagged`]): plugins of different
//! instances never share a stat.

use super::abi;
use crate::core::metrics::{self, Id, Kind};

pub struct Metrics {
    /// Host metric ids, indexed by [`Id`]: no name is hashed on the request path.
    ids: [Option<u32>; Id::COUNT],
}

/// The counters the HTTP filter bumps per request (the request path's names for them).
#[derive(Clone, Copy)]
pub enum Filter {
    Observed,
    Delivered,
    NotDelivered,
    Refused,
    Unparsable,
    Oversized,
    OverBudget,
    OutOfLimits,
    SignatureInvalid,
    Rejected,
    QueueDropped,
}

impl Filter {
    fn id(self) -> Id {
        match self {
            Filter::Observed => Id::WebhooksObserved,
            Filter::Delivered => Id::WebhooksDelivered,
            Filter::NotDelivered => Id::WebhooksNotDelivered,
            Filter::Refused => Id::WebhooksRefused,
            Filter::Unparsable => Id::WebhooksUnparsable,
            Filter::Oversized => Id::WebhooksOversized,
            Filter::OverBudget => Id::WebhooksOverBudget,
            Filter::OutOfLimits => Id::WebhooksOutOfLimits,
            Filter::SignatureInvalid => Id::WebhooksSignatureInvalid,
            Filter::Rejected => Id::WebhooksRejected,
            Filter::QueueDropped => Id::QueueDropped,
        }
    }
}

impl Metrics {
    /// Defines every metric of the table for plugin `instance`; `build_info` also carries the
    /// module's version as a tag, and is set to 1.
    pub fn define(instance: &str) -> Metrics {
        let mut ids = [None; Id::COUNT];
        for (&id, slot) in Id::ALL.iter().zip(ids.iter_mut()) {
            let full = if id == Id::BuildInfo {
                let tags = [
                    (metrics::VERSION_TAG, env!("CARGO_PKG_VERSION")),
                    (metrics::INSTANCE_TAG, instance),
                ];
                metrics::tagged_with(id.name(), &tags)
            } else {
                metrics::tagged(id.name(), instance)
            };
            let kind = match id.kind() {
                Kind::Counter => abi::COUNTER,
                Kind::Gauge => abi::GAUGE,
                Kind::Histogram => abi::HISTOGRAM,
            };
            *slot = abi::define_metric(kind, &full);
        }
        let m = Metrics { ids };
        m.set(Id::BuildInfo, 1);
        m
    }

    fn host_id(&self, id: Id) -> Option<u32> {
        self.ids.get(id as usize).copied().flatten()
    }

    /// Adds one to a counter of the HTTP filter.
    pub fn count(&self, counter: Filter) {
        self.inc(counter.id(), 1);
    }

    pub fn inc(&self, id: Id, by: u64) {
        if by == 0 {
            return;
        }
        if let Some(h) = self.host_id(id) {
            abi::increment_metric(h, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    pub fn set(&self, id: Id, value: u64) {
        if let Some(h) = self.host_id(id) {
            abi::record_metric(h, value);
        }
    }
}
