//! The root context: configuration and the single tick. Everything the leader does on a tick
//! or a call's answer is [`Turn`]'s (core); this file translates the callbacks into its
//! events, with [`WasmHost`] as its host.

use super::abi;
use super::host::{self, WasmHost};
use super::http::Observer;
use super::metrics::Metrics;
use super::shared::Shared;
use crate::core::config::Config;
use crate::core::logfmt::{self, Val};
use crate::core::snapshot;
use crate::core::turn::Turn;
use std::rc::Rc;

pub struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    /// The election, and the leader's turn while this root leads.
    turn: Turn,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            shared: None,
            turn: Turn::new(host::random_u64() ^ u64::from(context_id).rotate_left(32)),
        }
    }

    /// The host's id of this root context.
    pub fn id(&self) -> u32 {
        self.context_id
    }

    /// A new HTTP context of this root: it shares the root's configuration and state.
    pub fn new_http(&self) -> Observer {
        Observer::new(self.shared.clone())
    }
}

/// The callbacks of a root context (`proxy_on_configure` and the rest, in `mod.rs`).
impl Root {
    pub fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let mut host = WasmHost {
            queue: shared.queue,
            metrics: &shared.metrics,
        };
        self.turn
            .on_call_answer(&mut host, &shared.cfg, token, num_headers, body_size);
    }

    pub fn on_done(&mut self) -> bool {
        // A root being replaced (config change) stops reconciling; its lease expires and the
        // new root loads the snapshot.
        self.turn.leave();
        if let Some(shared) = &self.shared {
            shared.metrics.flush();
        }
        true
    }

    pub fn on_vm_start(&mut self) -> bool {
        // One line per VM (every worker and the main thread): debug. The one that becomes the
        // reconciler says so at info, with the same `root` id as `reconciler=`.
        log::debug!(
            "VM started version={} root={} context={}",
            env!("CARGO_PKG_VERSION"),
            logfmt::root_id(self.turn.me()),
            self.context_id
        );
        true
    }

    pub fn on_configure(&mut self) -> bool {
        let raw = host::plugin_configuration().unwrap_or_default();
        let cfg = match Config::parse(&raw, &abi::env_var) {
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
            logfmt::root_id(self.turn.me())
        );
        if let Some(etcd) = &cfg.etcd_cluster {
            log::info!(
                "cluster mode etcd_cluster={} etcd_authority={} etcd_prefix={} root={}",
                Val(etcd),
                Val(&cfg.etcd_authority),
                Val(&cfg.etcd_prefix),
                logfmt::root_id(self.turn.me())
            );
        }
        // A new configuration means a new reconciler: the next tick re-elects and reloads.
        self.turn.configure(&cfg.instance);
        let metrics = Metrics::define(&cfg.instance);
        self.shared = Some(Rc::new(Shared::new(cfg, metrics, queue, host::now_ms())));
        true
    }

    pub fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        shared.metrics.flush();
        let mut host = WasmHost {
            queue: shared.queue,
            metrics: &shared.metrics,
        };
        let now_ms = self.turn.on_tick(&mut host, &shared.cfg);
        shared.tick_ms.set(now_ms);
    }
}
