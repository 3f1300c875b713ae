//! Envoy stats behind `proxy_define_metric` & co (envoy `context.cc` `defineMetric`,
//! `incrementMetric`, `recordMetric`, `getMetric`).
//!
//! Every define returns a fresh id in the calling VM, but the same name maps to one
//! process-wide stat: counters aggregate over all VMs, gauges are clobbered by the last writer.

use std::collections::HashMap;

use crate::stat_name::untagged;

/// Status codes returned to the module.
pub(crate) enum MetricError {
    NotFound,
    BadArgument,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

struct Stat {
    name: String,
    kind: Kind,
    value: i64,
    samples: Vec<u64>,
}

#[derive(Default)]
pub(crate) struct Metrics {
    stats: Vec<Stat>,
    by_name: HashMap<String, usize>,
    /// (VM instance, metric id) -> stat index.
    ids: HashMap<(u64, u32), usize>,
    next_id: HashMap<u64, u32>,
    /// `increment_metric` and `record_metric` calls that reached a stat, every VM together.
    writes: u64,
}

impl Metrics {
    /// Envoy encodes the type in the low 2 bits of the id and steps by 4.
    pub fn define(&mut self, instance: u64, kind: u32, name: &str) -> Result<u32, MetricError> {
        let kind = match kind {
            0 => Kind::Counter,
            1 => Kind::Gauge,
            2 => Kind::Histogram,
            _ => return Err(MetricError::BadArgument),
        };
        let idx = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                self.stats.push(Stat {
                    name: name.to_string(),
                    kind,
                    value: 0,
                    samples: Vec::new(),
                });
                self.by_name.insert(name.to_string(), self.stats.len() - 1);
                self.stats.len() - 1
            }
        };
        let seq = self.next_id.entry(instance).or_insert(0);
        *seq += 1;
        let id = (*seq << 2) | kind as u32;
        self.ids.insert((instance, id), idx);
        Ok(id)
    }

    fn stat(&mut self, instance: u64, id: u32) -> Result<&mut Stat, MetricError> {
        let idx = *self.ids.get(&(instance, id)).ok_or(MetricError::NotFound)?;
        Ok(&mut self.stats[idx])
    }

    /// Counter: offset must be > 0 (else BadArgument); gauge: ±; histogram: BadArgument.
    pub fn increment(&mut self, instance: u64, id: u32, offset: i64) -> Result<(), MetricError> {
        self.writes += 1;
        let s = self.stat(instance, id)?;
        match s.kind {
            Kind::Counter if offset > 0 => s.value = s.value.wrapping_add(offset),
            Kind::Counter => return Err(MetricError::BadArgument),
            Kind::Gauge => s.value = s.value.wrapping_add(offset),
            Kind::Histogram => return Err(MetricError::BadArgument),
        }
        Ok(())
    }

    /// Counter: **adds**; gauge: sets; histogram: records a sample.
    pub fn record(&mut self, instance: u64, id: u32, value: u64) -> Result<(), MetricError> {
        self.writes += 1;
        let s = self.stat(instance, id)?;
        match s.kind {
            Kind::Counter => s.value = s.value.wrapping_add(value as i64),
            Kind::Gauge => s.value = value as i64,
            Kind::Histogram => s.samples.push(value),
        }
        Ok(())
    }

    /// How many `increment_metric` and `record_metric` calls the VMs made.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    pub fn get(&mut self, instance: u64, id: u32) -> Result<u64, MetricError> {
        let s = self.stat(instance, id)?;
        match s.kind {
            Kind::Histogram => Err(MetricError::BadArgument),
            _ => Ok(s.value as u64),
        }
    }

    /// Value of a counter or gauge by name, as a Prometheus series name would read after tag
    /// extraction: `status_sync.x` matches `status_sync.sync_instance=.=<i>;.;x` of every
    /// instance. Counters add up; for gauges the last defined wins.
    pub fn value(&self, name: &str) -> Option<i64> {
        let mut found = None;
        for s in self.stats.iter().filter(|s| untagged(&s.name) == name) {
            if s.kind == Kind::Histogram {
                return None;
            }
            found = Some(match (s.kind, found) {
                (Kind::Counter, Some(v)) => s.value.wrapping_add(v),
                _ => s.value,
            });
        }
        found
    }

    /// A histogram's samples by name (tags ignored, as in [`Metrics::value`]).
    pub fn samples(&self, name: &str) -> Option<Vec<u64>> {
        let mut found: Option<Vec<u64>> = None;
        for s in self.stats.iter().filter(|s| untagged(&s.name) == name) {
            if s.kind != Kind::Histogram {
                return None;
            }
            found.get_or_insert_with(Vec::new).extend(&s.samples);
        }
        found
    }

    /// All counters and gauges, sorted by name, tags removed (counters of several instances
    /// add up).
    pub fn all(&self) -> Vec<(String, i64)> {
        let mut names: Vec<String> = self
            .stats
            .iter()
            .filter(|s| s.kind != Kind::Histogram)
            .map(|s| untagged(&s.name))
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|n| Some((n.clone(), self.value(&n)?)))
            .collect()
    }
}
