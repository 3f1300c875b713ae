//! The root context: configuration, the single tick, leader election, and (on the leader only)
//! the reconciler with its calls and snapshot.

use super::host::{self, HostStore};
use super::http::Observer;
use super::metrics::Metrics;
use crate::core::config::Config;
use crate::core::leader::{Leader, Role, Seat};
use crate::core::logfmt::{self, Val};
use crate::core::metrics::{Counters, Id};
use crate::core::reconciler::{CallId, CallResult, OutgoingCall};
use crate::core::snapshot;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType};
use std::collections::HashMap;
use std::rc::Rc;

/// What the HTTP contexts of this root share with it.
pub struct Shared {
    pub cfg: Config,
    pub metrics: Metrics,
    pub queue: Option<u32>,
    /// Rate limits of the HTTP filter's per-request log lines.
    pub log_limits: std::cell::RefCell<[crate::core::ratelog::LogLimiter; 5]>,
    /// Repository and system objects this VM already sent to the reconciler.
    pub sent_metadata: std::cell::RefCell<crate::core::metadata::SentMetadata>,
    /// Host time at this root's last tick (or configuration), in Unix milliseconds.
    pub tick_ms: std::cell::Cell<u64>,
    /// The key this VM's verified webhooks are tagged with in the queue.
    pub queue_key: Option<crate::core::observation::QueueKey>,
    /// The body bytes this VM's requests hold, within `max_body_bytes_in_flight`.
    pub body_budget: crate::core::body_budget::BodyBudget,
}

pub struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    /// The election, and the reconciler while this root leads.
    seat: Seat<Calls>,
}

/// What the shell keeps beside the leader's reconciler.
#[derive(Default)]
struct Calls {
    /// Host call tokens of the reconciler's calls in flight.
    tokens: HashMap<u32, CallId>,
    /// The reconciler's counters as last mirrored into the host's metrics.
    mirrored: Counters,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            shared: None,
            seat: Seat::new(host::random_u64() ^ u64::from(context_id).rotate_left(32)),
        }
    }

    fn dispatch_all(leader: &mut Leader<Calls>, calls: Vec<OutgoingCall>, now_ms: u64) {
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
                        leader.host.tokens.insert(token, call.id);
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

    fn finish_callback(leader: &mut Leader<Calls>, store: &mut HostStore, shared: &Shared) {
        leader.checkpoint(store);
        for delay_ms in leader.reconciler.take_recovery_delays() {
            shared.metrics.record(Id::RecoveryDelayMs, delay_ms);
        }
        let now = leader.reconciler.counters().clone();
        shared.metrics.mirror(&now, &mut leader.host.mirrored);
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
        let (Some(shared), Some(leader)) = (self.shared.clone(), self.seat.leader()) else {
            return;
        };
        let Some(id) = leader.host.tokens.remove(&token) else {
            return;
        };
        let now_ms = host::now_ms();
        let result = if num_headers == 0 {
            CallResult::Failed
        } else {
            let status = host::header(MapType::HttpCallResponseHeaders, ":status")
                .and_then(|v| String::from_utf8(v).ok())
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
        let mut store = HostStore {
            queue: shared.queue,
        };
        leader.drain(&mut store, now_ms);
        let follow_up = leader.reconciler.on_response(id, result, now_ms);
        Self::dispatch_all(leader, follow_up, now_ms);
        Self::finish_callback(leader, &mut store, &shared);
    }

    fn on_done(&mut self) -> bool {
        // A root being replaced (config change) stops reconciling; its lease expires and the
        // new root loads the snapshot.
        self.seat.leave();
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
            logfmt::root_id(self.seat.me()),
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
            logfmt::root_id(self.seat.me())
        );
        // A new configuration means a new reconciler: the next tick re-elects and reloads.
        self.seat.configure(&cfg.instance);
        self.shared = Some(Rc::new(Shared {
            metrics: Metrics::define(&cfg.instance),
            queue,
            log_limits: super::http::new_limits(),
            sent_metadata: std::cell::RefCell::new(crate::core::metadata::SentMetadata::new(
                cfg.max_repos,
            )),
            tick_ms: std::cell::Cell::new(host::now_ms()),
            body_budget: crate::core::body_budget::BodyBudget::new(cfg.max_body_bytes_in_flight),
            queue_key: crate::core::observation::QueueKey::of(&cfg),
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
        let mut store = HostStore {
            queue: shared.queue,
        };
        let role = self.seat.elect(&mut store, &shared.cfg, now_ms);
        if let Role::Elected { epoch } = role {
            shared.metrics.inc(Id::LeaderChanges, 1);
            shared.metrics.set(Id::ReconcilerEpoch, epoch);
        }
        let (Role::Leader | Role::Elected { .. }, Some(leader)) = (role, self.seat.leader()) else {
            return;
        };
        leader.drain(&mut store, now_ms);
        let calls = leader.reconciler.tick(now_ms);
        Self::dispatch_all(leader, calls, now_ms);
        // Tokens of calls the reconciler expired (the host never answered) are dropped, so the
        // map stays bounded even if answers are lost.
        let tokens = &mut leader.host.tokens;
        if tokens.len() > shared.cfg.max_inflight_calls * 4 + 16 {
            let reconciler = &leader.reconciler;
            tokens.retain(|_, id| reconciler.is_inflight(*id));
        }
        Self::finish_callback(leader, &mut store, &shared);
        leader.log_summary(now_ms);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Observer::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
