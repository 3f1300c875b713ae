//! The root context: configuration, the single tick, leader election, and (on the leader only)
//! the reconciler with its calls and snapshot.

use super::host;
use super::http::Observer;
use super::metrics::Metrics;
use crate::core::config::Config;
use crate::core::lease::{self, Decision, Lease};
use crate::core::logfmt::{self, Every, Summary, Val};
use crate::core::metrics::{Counters, Id};
use crate::core::observation::Observation;
use crate::core::reconciler::{CallId, CallResult, OutgoingCall, Reconciler};
use crate::core::snapshot;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType};
use std::collections::HashMap;
use std::rc::Rc;

/// Queue messages the leader takes per tick: bounds a tick's work after a backlog.
const MAX_DRAIN_PER_TICK: usize = 10_000;

/// What the HTTP contexts of this root share with it.
pub struct Shared {
    pub cfg: Config,
    pub metrics: Metrics,
    pub queue: Option<u32>,
    /// Rate limits of the HTTP filter's per-request log lines.
    pub log_limits: std::cell::RefCell<[crate::core::ratelog::LogLimiter; 4]>,
    /// Repository and system objects this VM already sent to the reconciler.
    pub sent_metadata: std::cell::RefCell<crate::core::metadata::SentMetadata>,
    /// Host time at this root's last tick (or configuration), in Unix milliseconds.
    pub tick_ms: std::cell::Cell<u64>,
}

struct Leader {
    reconciler: Reconciler,
    /// Host call tokens of our calls in flight.
    tokens: HashMap<u32, CallId>,
    mirrored: Counters,
    /// `instance=… reconciler=… epoch=…`, for this root's log lines.
    who: String,
    /// When the next summary line is due.
    summary: Every,
}

pub struct Root {
    context_id: u32,
    /// Random id in the lease; distinct for every root context in the process.
    me: u64,
    shared: Option<Rc<Shared>>,
    leader: Option<Leader>,
    keys: Keys,
}

#[derive(Default)]
struct Keys {
    lease: String,
    meta: String,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            me: host::random_u64() ^ u64::from(context_id).rotate_left(32),
            shared: None,
            leader: None,
            keys: Keys::default(),
        }
    }

    /// Takes, keeps or gives up the lease. Returns true if this root is the leader now.
    fn elect(&mut self, shared: &Shared, now_ms: u64) -> bool {
        let (value, cas) = host::shared_get(&self.keys.lease);
        match lease::decide(value.as_deref(), self.me, now_ms, shared.cfg.lease_ms) {
            Decision::Follow => {
                self.step_down("another root holds the lease");
                false
            }
            Decision::Renew(l) => {
                if host::shared_set(&self.keys.lease, &l.encode(), cas).is_ok() {
                    true
                } else {
                    self.step_down("lease renewal lost a race");
                    false
                }
            }
            Decision::Acquire(l) => {
                if host::shared_set(&self.keys.lease, &l.encode(), cas).is_err() {
                    return false;
                }
                if cas.is_none() {
                    // Envoy checks CAS only for existing keys: two roots may both "insert".
                    // Read back; the last writer wins, the other steps aside.
                    let (now_value, _) = host::shared_get(&self.keys.lease);
                    let owner = now_value
                        .as_deref()
                        .and_then(Lease::decode)
                        .map(|l| l.owner);
                    if owner != Some(self.me) {
                        return false;
                    }
                }
                self.become_leader(shared, now_ms, l.epoch);
                true
            }
        }
    }

    fn step_down(&mut self, why: &str) {
        if let Some(leader) = self.leader.take() {
            log::info!("reconciler stepped down why={} {}", Val(why), leader.who);
        }
    }

    fn become_leader(&mut self, shared: &Shared, now_ms: u64, epoch: u64) {
        let mut reconciler = Reconciler::new(shared.cfg.clone(), self.me ^ now_ms);
        let who = logfmt::identity(&shared.cfg.instance, self.me, epoch);
        reconciler.set_identity(who.clone());
        let stored = host::shared_get(&self.keys.meta)
            .0
            .as_deref()
            .and_then(snapshot::decode_meta);
        let mut loaded = 0usize;
        if let Some(shards) = stored {
            for shard in 0..shards {
                let key = snapshot::shard_key(&shared.cfg.instance, shard);
                if let (Some(v), _) = host::shared_get(&key) {
                    if v.is_empty() {
                        continue;
                    }
                    if !reconciler.load_shard(&v, now_ms) {
                        reconciler.snapshot_error();
                        log::warn!("snapshot shard unreadable, skipped shard={shard} {who}");
                    }
                }
            }
            loaded = reconciler.ledger().len();
            let marks_key = snapshot::watermarks_key(&shared.cfg.instance);
            if let (Some(v), _) = host::shared_get(&marks_key) {
                if !v.is_empty() && !reconciler.load_watermarks(&v) {
                    reconciler.snapshot_error();
                    log::warn!("snapshot watermarks unreadable, skipped {who}");
                }
            }
            if shards != reconciler.shard_count() {
                // Another layout (max_tracked_builds changed): rewrite every shard, and empty
                // the old keys beyond the new count (keys cannot be deleted).
                reconciler.mark_all_dirty();
                for shard in reconciler.shard_count()..shards {
                    let key = snapshot::shard_key(&shared.cfg.instance, shard);
                    let _ = host::shared_set(&key, b"", None);
                }
            }
        }
        let _ = host::shared_set(
            &self.keys.meta,
            &snapshot::encode_meta(reconciler.shard_count()),
            None,
        );
        shared.metrics.inc(Id::LeaderChanges, 1);
        shared.metrics.set(Id::ReconcilerEpoch, epoch);
        log::info!(
            "reconciler elected version={} loaded_builds={loaded} {who}",
            env!("CARGO_PKG_VERSION")
        );
        self.leader = Some(Leader {
            reconciler,
            tokens: HashMap::new(),
            mirrored: Counters::default(),
            who,
            summary: Every::new(logfmt::SUMMARY_EVERY_MS),
        });
    }

    fn drain_queue(leader: &mut Leader, shared: &Shared, now_ms: u64) {
        let Some(queue) = shared.queue else { return };
        for _ in 0..MAX_DRAIN_PER_TICK {
            let Some(msg) = host::dequeue(queue) else {
                break;
            };
            match Observation::decode(&msg) {
                Ok(obs) => leader.reconciler.observe(obs, now_ms),
                Err(e) => {
                    leader.reconciler.invalid_observation();
                    log::warn!(
                        "dropped an unreadable queue message why={} {}",
                        Val(&e.to_string()),
                        leader.who
                    );
                }
            }
        }
    }

    fn dispatch_all(leader: &mut Leader, calls: Vec<OutgoingCall>, now_ms: u64) {
        let mut pending = calls;
        // A refused dispatch is answered at once as a failure, which may schedule nothing
        // more; the loop is bounded by the in-flight budget.
        let mut rounds = 0;
        while !pending.is_empty() && rounds < 64 {
            rounds += 1;
            let mut next = Vec::new();
            for call in pending {
                match host::dispatch(&call.cluster, &call.headers, &call.body, call.timeout_ms) {
                    Ok(token) => {
                        leader.tokens.insert(token, call.id);
                    }
                    Err(status) => {
                        log::warn!(
                            "cannot call cluster (is it defined?) cluster={} status={status:?} {}",
                            Val(&call.cluster),
                            leader.who
                        );
                        next.extend(leader.reconciler.on_response(
                            call.id,
                            CallResult::Failed,
                            now_ms,
                        ));
                    }
                }
            }
            pending = next;
        }
    }

    /// Writes the changed snapshot shards so the next leader continues from here.
    fn checkpoint(leader: &mut Leader, shared: &Shared) {
        if let Some(bytes) = leader.reconciler.take_watermarks() {
            let key = snapshot::watermarks_key(&shared.cfg.instance);
            if host::shared_set(&key, &bytes, None).is_err() {
                leader.reconciler.snapshot_error();
            }
        }
        for (shard, bytes) in leader.reconciler.take_dirty_shards() {
            let key = snapshot::shard_key(&shared.cfg.instance, shard);
            if host::shared_set(&key, &bytes, None).is_err() {
                leader.reconciler.snapshot_error();
            }
        }
    }

    fn finish_callback(leader: &mut Leader, shared: &Shared) {
        Self::checkpoint(leader, shared);
        for delay_ms in leader.reconciler.take_recovery_delays() {
            shared.metrics.record(Id::RecoveryDelayMs, delay_ms);
        }
        let now = leader.reconciler.counters().clone();
        shared.metrics.mirror(&now, &mut leader.mirrored);
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (Some(shared), Some(leader)) = (self.shared.clone(), self.leader.as_mut()) else {
            return;
        };
        let Some(id) = leader.tokens.remove(&token) else {
            return;
        };
        let now_ms = host::now_ms();
        let result = if num_headers == 0 {
            CallResult::Failed
        } else {
            let headers = host::header_pairs(MapType::HttpCallResponseHeaders);
            let status = host::first(&headers, ":status")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u16>().ok());
            match status {
                None => CallResult::Failed,
                Some(_) if body_size > shared.cfg.max_body_bytes => CallResult::Failed,
                Some(status) => CallResult::Response {
                    status,
                    body: if body_size == 0 {
                        Vec::new()
                    } else {
                        host::buffer(BufferType::HttpCallResponseBody, 0, body_size)
                            .unwrap_or_default()
                    },
                },
            }
        };
        // Live webhooks that reached the pipeline since the last tick may be newer than this
        // answer: take them in first, so an older state is never re-delivered after them.
        Self::drain_queue(leader, &shared, now_ms);
        let follow_up = leader.reconciler.on_response(id, result, now_ms);
        Self::dispatch_all(leader, follow_up, now_ms);
        Self::finish_callback(leader, &shared);
    }

    fn on_done(&mut self) -> bool {
        // A root being replaced (config change) stops reconciling; its lease expires and the
        // new root loads the snapshot.
        self.leader = None;
        true
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        // One line per VM (every worker and the main thread): debug. The one that becomes the
        // reconciler says so at info, with the same `root` id as `reconciler=`.
        log::debug!(
            "VM started version={} root={} context={}",
            env!("CARGO_PKG_VERSION"),
            logfmt::root_id(self.me),
            self.context_id
        );
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = host::plugin_configuration().unwrap_or_default();
        let cfg = match Config::parse(&raw, &|name| std::env::var(name).ok()) {
            Ok(cfg) => cfg,
            Err(e) => {
                // Envoy already names the plugin at the start of the line.
                let msg = e.to_string();
                log::error!("{}", msg.strip_prefix("status-sync: ").unwrap_or(&msg));
                return false;
            }
        };
        if !host::set_tick_period_ms(cfg.tick_ms) {
            log::error!("the host refused set_tick_period tick_ms={}", cfg.tick_ms);
            return false;
        }
        self.keys = Keys {
            lease: snapshot::lease_key(&cfg.instance),
            meta: snapshot::meta_key(&cfg.instance),
        };
        let queue = host::register_queue(&snapshot::queue_name(&cfg.instance));
        if queue.is_none() {
            log::error!(
                "cannot register the shared queue instance={}",
                Val(&cfg.instance)
            );
            return false;
        }
        // The settings that decide whether webhooks are seen and calls reach anything: the
        // first-hour problems (docs/runbook.md). One line per root (VM).
        log::info!(
            "configured instance={} webhook_path={} drone_cluster={} pipeline_cluster={} version={} root={}",
            Val(&cfg.instance),
            Val(&cfg.webhook_path),
            Val(&cfg.drone_cluster),
            Val(&cfg.pipeline_cluster),
            env!("CARGO_PKG_VERSION"),
            logfmt::root_id(self.me)
        );
        // A new configuration means a new reconciler: the next tick re-elects and reloads.
        self.leader = None;
        self.shared = Some(Rc::new(Shared {
            metrics: Metrics::define(&cfg.instance),
            queue,
            log_limits: super::http::new_limits(),
            sent_metadata: std::cell::RefCell::new(crate::core::metadata::SentMetadata::new(
                cfg.max_repos,
            )),
            tick_ms: std::cell::Cell::new(host::now_ms()),
            cfg,
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now_ms = host::now_ms();
        shared.tick_ms.set(now_ms);
        if !self.elect(&shared, now_ms) {
            return;
        }
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        Self::drain_queue(leader, &shared, now_ms);
        let calls = leader.reconciler.tick(now_ms);
        Self::dispatch_all(leader, calls, now_ms);
        // Tokens of calls the reconciler expired (the host never answered) are dropped, so the
        // map stays bounded even if answers are lost.
        if leader.tokens.len() > shared.cfg.max_inflight_calls * 4 + 16 {
            let reconciler = &leader.reconciler;
            leader.tokens.retain(|_, id| reconciler.is_inflight(*id));
        }
        Self::finish_callback(leader, &shared);
        if leader.summary.due(now_ms) {
            let c = leader.reconciler.counters();
            let line = Summary {
                tracked: c.builds_tracked,
                due: leader.reconciler.ledger().due_count(now_ms) as u64,
                missing: c.transitions_missing,
                oldest_undelivered_s: c.oldest_undelivered_seconds,
                circuit_open: c.circuit_open != 0,
                inflight: c.calls_inflight,
                recovered: c.transitions_recovered,
                giveups: c.giveups,
            };
            log::info!("{line} {}", leader.who);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Observer::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
