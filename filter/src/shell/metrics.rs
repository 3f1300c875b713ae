//! Host metrics (Envoy stats). Defined per root context; counters with the same name in every
//! VM add up to one Envoy stat.

use crate::core::metrics::{names, Counters};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

pub struct Metrics {
    ids: HashMap<&'static str, u32>,
    /// The HTTP filter's counters by [`Filter`], so the request path does not hash names.
    filter: [Option<u32>; FILTER_COUNTERS.len()],
}

/// The counters the HTTP filter bumps per request, in the order of [`FILTER_COUNTERS`].
#[derive(Clone, Copy)]
pub enum Filter {
    Observed,
    Delivered,
    NotDelivered,
    Refused,
    Unparsable,
    Oversized,
    SignatureInvalid,
    Rejected,
    QueueDropped,
}

const FILTER_COUNTERS: [&str; 9] = [
    names::WEBHOOKS_OBSERVED,
    names::WEBHOOKS_DELIVERED,
    names::WEBHOOKS_NOT_DELIVERED,
    names::WEBHOOKS_REFUSED,
    names::WEBHOOKS_UNPARSABLE,
    names::WEBHOOKS_OVERSIZED,
    names::WEBHOOKS_SIGNATURE_INVALID,
    names::WEBHOOKS_REJECTED,
    names::QUEUE_DROPPED,
];

impl Metrics {
    pub fn define() -> Metrics {
        let mut ids = HashMap::new();
        let zero = Counters::default();
        let core_counters = zero.counters();
        let counters = FILTER_COUNTERS
            .iter()
            .copied()
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
        let filter = FILTER_COUNTERS.map(|name| ids.get(name).copied());
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
