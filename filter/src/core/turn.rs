//! The leader's whole turn, on every root context: the election on each tick and, while this
//! root leads, draining the queue, the reconciler's calls (dispatched, refused, answered),
//! checkpoints and metrics. It talks to the host only through [`Host`], so all of it runs
//! natively against [`super::host::MemoryHost`]; the shell only translates proxy-wasm
//! callbacks into the three events below.
//!
//! The order within a turn is the rule that keeps re-deliveries from going backwards: live
//! webhooks that reached the pipeline since the last turn are taken in (the queue drained)
//! before a drone answer is applied, because they may be newer than the answer; the snapshot
//! is written after the answers, so the next leader continues from what they did.

use super::config::Config;
use super::host::Host;
use super::leader::{Leader, Role, Seat};
use super::logfmt::Val;
use super::metrics::{Counters, Id, Kind};
use super::reconciler::{CallId, CallResult, OutgoingCall};
use std::collections::HashMap;

/// Rounds of dispatch in one event: a refused call is answered at once as a failure, which
/// may ask for another call; the in-flight budget bounds them, this bounds the loop.
const MAX_DISPATCH_ROUNDS: usize = 64;

/// What the turn keeps beside a leader's reconciler: made new with each leader, dropped
/// with it.
#[derive(Default)]
pub struct Calls {
    /// Host tokens of the reconciler's calls in flight.
    tokens: HashMap<u32, CallId>,
    /// The reconciler's counters as last mirrored into the host's metrics.
    mirrored: Counters,
}

impl Calls {
    /// Calls whose answers this leader still expects.
    pub fn tokens(&self) -> usize {
        self.tokens.len()
    }
}

/// One root context's part: the election, and the leader's turn while it leads.
pub struct Turn {
    seat: Seat<Calls>,
}

impl Turn {
    /// A root context with id `me` and no configuration: it follows until [`Turn::configure`].
    pub fn new(me: u64) -> Self {
        Turn {
            seat: Seat::new(me),
        }
    }

    pub fn me(&self) -> u64 {
        self.seat.me()
    }

    /// A new configuration means a new reconciler: the next tick re-elects and reloads.
    pub fn configure(&mut self, instance: &str) {
        self.seat.configure(instance);
    }

    /// Stops reconciling (the root is going away); the lease expires.
    pub fn leave(&mut self) {
        self.seat.leave();
    }

    /// The leader, while this root leads.
    pub fn leader(&mut self) -> Option<&mut Leader<Calls>> {
        self.seat.leader()
    }

    /// The tick: elect; on the leader, drain the queue, dispatch the reconciler's calls,
    /// forget tokens of calls it gave up on, checkpoint, mirror metrics, log the summary.
    /// Returns the tick's time.
    pub fn on_tick(&mut self, host: &mut impl Host, cfg: &Config) -> u64 {
        let now_ms = host.now_ms();
        let role = self.seat.elect(host, cfg, now_ms);
        if let Role::Elected { epoch } = role {
            host.add_metric(Id::LeaderChanges, 1);
            host.set_metric(Id::ReconcilerEpoch, epoch);
        }
        let (Role::Leader | Role::Elected { .. }, Some(leader)) = (role, self.seat.leader()) else {
            return now_ms;
        };
        leader.drain(host, now_ms);
        let calls = leader.reconciler.tick(now_ms);
        dispatch_all(leader, host, calls, now_ms);
        // Tokens of calls the reconciler expired (the host never answered) are dropped: the
        // map holds only calls in flight (at most `max_inflight_calls`) even if answers are
        // lost, and a late answer to an expired call is ignored unread.
        let reconciler = &leader.reconciler;
        leader
            .host
            .tokens
            .retain(|_, id| reconciler.is_inflight(*id));
        finish(leader, host);
        leader.log_summary(now_ms);
        now_ms
    }

    /// The answer to the call the host knows by `token`: `num_headers` 0 means no answer
    /// (reset); a body over `max_body_bytes` is not read, and the call failed. A token this
    /// leader does not know (another leader's call, or one it expired) is ignored, unread.
    /// Live webhooks are taken in before the answer is applied.
    pub fn on_call_answer(
        &mut self,
        host: &mut impl Host,
        cfg: &Config,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let Some(leader) = self.seat.leader() else {
            return;
        };
        let Some(id) = leader.host.tokens.remove(&token) else {
            return;
        };
        let now_ms = host.now_ms();
        let result = if num_headers == 0 {
            CallResult::Failed
        } else {
            match host.answer_status() {
                None => CallResult::Failed,
                Some(_) if body_size > cfg.max_body_bytes => CallResult::Failed,
                Some(status) => CallResult::Response {
                    status,
                    body: if body_size == 0 {
                        Vec::new()
                    } else {
                        host.answer_body(body_size).unwrap_or_default()
                    },
                },
            }
        };
        // Live webhooks that reached the pipeline since the last tick may be newer than this
        // answer: take them in first, so an older state is never re-delivered after them.
        leader.drain(host, now_ms);
        let follow_up = leader.reconciler.on_response(id, result, now_ms);
        dispatch_all(leader, host, follow_up, now_ms);
        finish(leader, host);
    }
}

/// Dispatches `calls`. A call the host refuses is counted, logged and answered at once as a
/// failure (its permit was spent; the reconciler retries it with backoff), which may ask for
/// more calls: those go out in the next round.
fn dispatch_all(
    leader: &mut Leader<Calls>,
    host: &mut impl Host,
    calls: Vec<OutgoingCall>,
    now_ms: u64,
) {
    let mut pending = calls;
    for _ in 0..MAX_DISPATCH_ROUNDS {
        if pending.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for call in pending {
            match host.dispatch(&call) {
                Ok(token) => {
                    leader.host.tokens.insert(token, call.id);
                }
                Err(why) => {
                    host.add_metric(Id::CallsRefused, 1);
                    log::warn!(
                        "cannot call cluster (is it defined?) cluster={} status={why} {}",
                        Val(&call.cluster),
                        leader.who
                    );
                    next.extend(
                        leader
                            .reconciler
                            .on_response(call.id, CallResult::Failed, now_ms),
                    );
                }
            }
        }
        pending = next;
    }
}

/// After every event of a leader: the checkpoint (after the answers, so the next leader
/// continues from them), the recovery delays measured, and the counters mirrored.
fn finish(leader: &mut Leader<Calls>, host: &mut impl Host) {
    leader.checkpoint(host);
    for delay_ms in leader.reconciler.take_recovery_delays() {
        host.set_metric(Id::RecoveryDelayMs, delay_ms);
    }
    let now = leader.reconciler.counters();
    mirror(host, now, &mut leader.host.mirrored);
}

/// Adds what the core counted since `last`, sets the gauges, and remembers `now`.
fn mirror(host: &mut impl Host, now: &Counters, last: &mut Counters) {
    for &id in Id::ALL {
        let Some(value) = now.get(id) else { continue };
        match id.kind() {
            Kind::Counter => {
                let old = last.get(id).unwrap_or_default();
                let by = value.saturating_sub(old);
                if by != 0 {
                    host.add_metric(id, by);
                }
            }
            Kind::Gauge | Kind::Histogram => host.set_metric(id, value),
        }
    }
    last.clone_from(now);
}
