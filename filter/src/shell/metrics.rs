//! Host metrics (Envoy stats). Defined per root context; counters with the same name in every
//! VM add up to one Envoy stat.

use crate::core::metrics::{names, Counters};
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
    pub fn define() -> Metrics {
        let mut ids = HashMap::new();
        let zero = Counters::default();
        let core_counters = zero.counters();
        let counters = Filter::ALL
            .iter()
            .map(|c| c.name())
            .chain(core_counters.iter().map(|(n, _)| *n))
            .chain(std::iter::once(names::LEADER_CHANGES));
        for name in counters {
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, name) {
                ids.insert(name, id);
            }
        }
        for (name, _) in zero.gauges() {
            if let Ok(id) = hostcalls::define_metric(MetricType::Gauge, name) {
                ids.insert(name, id);
            }
        }
        let filter = Filter::ALL.map(|c| ids.get(c.name()).copied());
        Metrics { ids, filter }
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
