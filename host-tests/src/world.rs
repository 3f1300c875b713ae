//! The state of one simulated Envoy process that every VM's hostcalls see: clock, shared
//! data, queues, stats, upstream clusters, captured logs and calls.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::clock::Clock;
use crate::config::HostConfig;
use crate::metrics::Metrics;
use crate::shared::{Queues, SharedData};
use crate::types::{CallRecord, CallReply, CallRequest, LogLine};

pub(crate) type Responder = Box<dyn FnMut(&CallRequest, u64) -> CallReply>;

/// The answer of an in-flight `proxy_http_call`, fixed when the call was made.
#[derive(Clone, Debug)]
pub(crate) enum Resolved {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// `num_headers = 0`, `proxy_get_status` = (11, "reset").
    Reset,
}

/// A response as its receiver sees it: status, headers (names lowercased, `:status` first
/// unless the headers carry one) and body.
pub(crate) type Parts = (u16, Vec<(String, String)>, Vec<u8>);

impl Resolved {
    /// The response as its receiver sees it; None for a reset.
    pub(crate) fn into_parts(self) -> Option<Parts> {
        let Resolved::Response {
            status,
            headers,
            body,
        } = self
        else {
            return None;
        };
        let mut h = Vec::with_capacity(headers.len() + 1);
        if !headers.iter().any(|(k, _)| k == ":status") {
            h.push((":status".to_string(), status.to_string()));
        }
        h.extend(
            headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v)),
        );
        Some((status, h, body))
    }
}

/// A call waiting for its reply event; removing it cancels the call (root deleted, VM died).
pub(crate) struct Inflight {
    pub gen: u32,
    pub root: u32,
    pub reply: Resolved,
}

pub(crate) struct World {
    pub vm_id: String,
    pub root_id: String,
    pub plugin_name: String,
    pub clusters: HashSet<String>,
    pub env: Vec<(String, String)>,
    pub log_level: u32,
    pub clock: Clock,
    /// Virtual time at host start (base of the WASI monotonic clock).
    pub clock_start: u64,
    pub shared: SharedData,
    pub queues: Queues,
    pub metrics: Metrics,
    /// New log lines not yet moved to the `Host` (see `Host::sync`).
    pub logs: Vec<LogLine>,
    /// New call records not yet moved to the `Host`.
    pub calls: Vec<CallRecord>,
    pub responders: HashMap<String, Responder>,
    /// (vm, token) -> call.
    pub inflight: HashMap<(usize, u32), Inflight>,
    /// (vm, root) -> number of `proxy_set_tick_period_milliseconds` calls.
    pub tick_calls: BTreeMap<(usize, u32), usize>,
    pub unknown_imports: BTreeSet<String>,
}

impl World {
    pub fn new(cfg: &HostConfig) -> Self {
        World {
            vm_id: cfg.vm_id.clone(),
            root_id: cfg.root_id.clone(),
            plugin_name: if cfg.plugin_name.is_empty() {
                cfg.root_id.clone()
            } else {
                cfg.plugin_name.clone()
            },
            clusters: cfg.clusters.iter().cloned().collect(),
            env: cfg.env.clone(),
            log_level: cfg.log_level,
            clock: Clock::new(cfg.start_time_ms),
            clock_start: cfg.start_time_ms,
            shared: SharedData::default(),
            queues: Queues::default(),
            metrics: Metrics::default(),
            logs: Vec::new(),
            calls: Vec::new(),
            responders: HashMap::new(),
            inflight: HashMap::new(),
            tick_calls: BTreeMap::new(),
            unknown_imports: BTreeSet::new(),
        }
    }

    pub fn now(&self) -> u64 {
        self.clock.now_ms
    }

    pub fn log(&mut self, vm: usize, level: u32, message: String) {
        if level >= self.log_level {
            let at_ms = self.now();
            self.logs.push(LogLine {
                vm,
                level,
                message,
                at_ms,
            });
        }
    }

    /// Drops every in-flight call of `vm` (optionally only those owned by `root`).
    pub fn cancel_calls(&mut self, vm: usize, root: Option<u32>) {
        self.inflight
            .retain(|(v, _), c| *v != vm || root.is_some_and(|r| r != c.root));
    }
}
