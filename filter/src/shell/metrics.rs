//! Host metrics (Envoy stats), defined from [`crate::core::metrics::METRICS`]. Defined per
//! root context; counters with the same name in every VM add up to one Envoy stat. Names carry
//! the plugin's `instance` as a tag ([`crate::core::metrics::tagged`]): plugins of different
//! instances never share a stat.
//!
//! The HTTP filter's counters are batched: a request adds to this VM's own count, and the
//! root's tick adds the counts to Envoy's stats ([`Metrics::flush`]). Each `increment_metric`
//! is a call out of the VM (about a microsecond in V8), and two of them ran on every webhook
//! (`webhooks_observed`, `webhooks_delivered`); now a worker makes at most one per counter a
//! tick. The price: a request's counters reach Envoy's stats up to `tick_ms` later (1 s by
//! default, far below any scrape interval), and a VM that dies without its root's `on_done`
//! loses at most one tick's counts.

use super::abi;
use crate::core::metrics::{self, Id, Kind};
use std::cell::Cell;

pub struct Metrics {
    /// Host metric ids, indexed by [`Id`]: no name is hashed on the request path.
    ids: [Option<u32>; Id::COUNT],
    /// The HTTP filter's counts since the last flush, indexed by [`Filter`].
    pending: [Cell<u64>; Filter::COUNT],
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
    const ALL: [Filter; 11] = [
        Filter::Observed,
        Filter::Delivered,
        Filter::NotDelivered,
        Filter::Refused,
        Filter::Unparsable,
        Filter::Oversized,
        Filter::OverBudget,
        Filter::OutOfLimits,
        Filter::SignatureInvalid,
        Filter::Rejected,
        Filter::QueueDropped,
    ];
    const COUNT: usize = Filter::ALL.len();
}

// `ALL` lists every counter once, in declaration order (a count's index is its variant). A
// compile-time check: it cannot panic at run time.
#[allow(clippy::indexing_slicing)]
const _: () = {
    let mut i = 0;
    while i < Filter::COUNT {
        assert!(Filter::ALL[i] as usize == i);
        i += 1;
    }
    assert!(Filter::QueueDropped as usize + 1 == Filter::COUNT);
};

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
        let m = Metrics {
            ids,
            pending: [const { Cell::new(0) }; Filter::COUNT],
        };
        m.set(Id::BuildInfo, 1);
        m
    }

    fn host_id(&self, id: Id) -> Option<u32> {
        self.ids.get(id as usize).copied().flatten()
    }

    /// Adds one to a counter of the HTTP filter: to this VM's count, which the next
    /// [`Metrics::flush`] adds to Envoy's stat.
    pub fn count(&self, counter: Filter) {
        if let Some(n) = self.pending.get(counter as usize) {
            n.set(n.get().saturating_add(1));
        }
    }

    /// Adds the HTTP filter's counts since the last flush to Envoy's stats: on every tick of
    /// the root, and when the root is done.
    pub fn flush(&self) {
        for (counter, n) in Filter::ALL.iter().zip(&self.pending) {
            self.inc(counter.id(), n.replace(0));
        }
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
