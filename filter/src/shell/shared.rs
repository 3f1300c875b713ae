//! What a root context shares with its HTTP contexts: the configuration, metrics, the queue,
//! and the worker's per-request state (log limits, metadata sent, body budget). Its own
//! module so that the root and the HTTP filter both use it without importing each other.

use super::metrics::Metrics;
use crate::core::body_budget::BodyBudget;
use crate::core::config::Config;
use crate::core::metadata::SentMetadata;
use crate::core::observation::QueueKey;
use crate::core::ratelog::LogLimiter;
use std::cell::{Cell, RefCell};

/// Kinds of per-request log lines the HTTP filter rate-limits, each on its own.
pub const LOG_KINDS: usize = 5;

/// What the HTTP contexts of a root share with it.
pub struct Shared {
    pub cfg: Config,
    pub metrics: Metrics,
    pub queue: Option<u32>,
    /// Rate limits of the HTTP filter's per-request log lines (one per 10 s per VM each).
    pub log_limits: RefCell<[LogLimiter; LOG_KINDS]>,
    /// Repository and system objects this VM already sent to the reconciler.
    pub sent_metadata: RefCell<SentMetadata>,
    /// Host time at this root's last tick (or configuration), in Unix milliseconds.
    pub tick_ms: Cell<u64>,
    /// The key this VM's verified webhooks are tagged with in the queue.
    pub queue_key: Option<QueueKey>,
    /// The body bytes this VM's requests hold, within `max_body_bytes_in_flight`.
    pub body_budget: BodyBudget,
}

impl Shared {
    /// The state of a root configured with `cfg`, its queue and metrics, at `now_ms`.
    pub fn new(cfg: Config, metrics: Metrics, queue: Option<u32>, now_ms: u64) -> Self {
        Shared {
            metrics,
            queue,
            log_limits: RefCell::new([const { LogLimiter::new(10_000) }; LOG_KINDS]),
            sent_metadata: RefCell::new(SentMetadata::new(cfg.max_repos)),
            tick_ms: Cell::new(now_ms),
            body_budget: BodyBudget::new(cfg.max_body_bytes_in_flight),
            queue_key: QueueKey::of(&cfg),
            cfg,
        }
    }
}
