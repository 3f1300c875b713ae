//! Host metrics (Envoy stats). Defined per root context; counters with the same name in every
//! VM add up to one Envoy stat. Names carry the plugin's `instance` as a tag
//! ([`crate::core::metrics::tagged`]): plugins of different instances never share a stat.

use crate::core::metrics::{self, names, Counters};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

pub struct Metrics {
    ids: HashMap<&'static str, u32>,
    /// The HTTP filter's counters, indexed by [`Filter`], so the request path does not hash
    /// names.
    filter: [Option<u32>; Filter::ALL.len()],
}

/// The counters the HTTP filter bumps per request.
#[derive(Clone, Copy)]
pub enum Filter {
    Observed,
    Delivered,
    NotDelivered,
    Refused,
    Unparsable,
    Oversized,
    OutOfLimits,
    SignatureInvalid,
    Rejected,
    QueueDropped,
}

impl Filter {
    /// Every counter, in declaration order (`ALL[c as usize]` is `c`, checked below).
    const ALL: [Filter; 10] = [
        Filter::Observed,
        Filter::Delivered,
        Filter::NotDelivered,
        Filter::Refused,
        Filter::Unparsable,
        Filter::Oversized,
        Filter::OutOfLimits,
        Filter::SignatureInvalid,
        Filter::Rejected,
        Filter::QueueDropped,
    ];

    fn name(self) -> &'static str {
        match self {
            Filter::Observed => names::WEBHOOKS_OBSERVED,
            Filter::Delivered => names::WEBHOOKS_DELIVERED,
            Filter::NotDelivered => names::WEBHOOKS_NOT_DELIVERED,
            Filter::Refused => names::WEBHOOKS_REFUSED,
            Filter::Unparsable => names::WEBHOOKS_UNPARSABLE,
            Filter::Oversized => names::WEBHOOKS_OVERSIZED,
            Filter::OutOfLimits => names::WEBHOOKS_OUT_OF_LIMITS,
            Filter::SignatureInvalid => names::WEBHOOKS_SIGNATURE_INVALID,
            Filter::Rejected => names::WEBHOOKS_REJECTED,
            Filter::QueueDropped => names::QUEUE_DROPPED,
        }
    }
}

// `ALL` lists the variants in declaration order, so a counter's index is its discriminant.
// Evaluated at compile time: a wrong order fails the build, never the VM.
#[allow(clippy::indexing_slicing, clippy::panic)]
const _: () = {
    let mut i = 0;
    while i < Filter::ALL.len() {
        assert!(Filter::ALL[i] as usize == i, "Filter::ALL out of order");
        i += 1;
    }
};

impl Metrics {
    pub fn define(instance: &str) -> Metrics {
        let mut ids = HashMap::new();
        let mut define = |kind: MetricType, name: &'static str, full: String| {
            if let Ok(id) = hostcalls::define_metric(kind, &full) {
                ids.insert(name, id);
            }
        };
        let zero = Counters::default();
        let core_counters = zero.counters();
        let counters = Filter::ALL
            .iter()
            .map(|c| c.name())
            .chain(core_counters.iter().map(|(n, _)| *n))
            .chain(std::iter::once(names::LEADER_CHANGES));
        for name in counters {
            define(MetricType::Counter, name, metrics::tagged(name, instance));
        }
        let gauges = zero.gauges().map(|(n, _)| n);
        for name in gauges.into_iter().chain([names::RECONCILER_EPOCH]) {
            define(MetricType::Gauge, name, metrics::tagged(name, instance));
        }
        let version = [
            (metrics::VERSION_TAG, env!("CARGO_PKG_VERSION")),
            (metrics::INSTANCE_TAG, instance),
        ];
        let build_info = metrics::tagged_with(names::BUILD_INFO, &version);
        define(MetricType::Gauge, names::BUILD_INFO, build_info);
        let delay = metrics::tagged(names::RECOVERY_DELAY_MS, instance);
        define(MetricType::Histogram, names::RECOVERY_DELAY_MS, delay);
        let filter = Filter::ALL.map(|c| ids.get(c.name()).copied());
        let m = Metrics { ids, filter };
        m.set(names::BUILD_INFO, 1);
        m
    }

    /// Adds one to a counter of the HTTP filter.
    pub fn count(&self, counter: Filter) {
        if let Some(Some(id)) = self.filter.get(counter as usize) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }

    pub fn inc(&self, name: &'static str, by: u64) {
        if by == 0 {
            return;
        }
        if let Some(id) = self.ids.get(name) {
            let _ = hostcalls::increment_metric(*id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    pub fn set(&self, name: &'static str, value: u64) {
        if let Some(id) = self.ids.get(name) {
            let _ = hostcalls::record_metric(*id, value);
        }
    }

    /// Records one sample into a histogram.
    pub fn record(&self, name: &'static str, value: u64) {
        if let Some(id) = self.ids.get(name) {
            let _ = hostcalls::record_metric(*id, value);
        }
    }

    /// Adds what the core counted since `last`, sets the gauges, and remembers `now`.
    pub fn mirror(&self, now: &Counters, last: &mut Counters) {
        for ((name, v), (_, old)) in now.counters().iter().zip(last.counters().iter()) {
            self.inc(name, v.saturating_sub(*old));
        }
        for (name, v) in now.gauges() {
            self.set(name, v);
        }
        *last = now.clone();
    }
}
