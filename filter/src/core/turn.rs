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

use super::cluster::node::{Mode, Node, NodeCounters, VOUCH_TICKS};
use super::config::Config;
use super::host::Host;
use super::keyed::Map;
use super::leader::{Leader, Role, Seat};
use super::logfmt::Val;
use super::metrics::{Counters, Id, Kind};
use super::ratelog::{suppressed_note, LogLimiter};
use super::reconciler::{CallId, CallResult, OutgoingCall};
use std::collections::VecDeque;

/// Rounds of dispatch in one event: a refused call is answered at once as a failure, which
/// may ask for another call; the in-flight budget bounds them, this bounds the loop.
const MAX_DISPATCH_ROUNDS: usize = 64;

/// What the turn keeps beside a leader's reconciler: made new with each leader, dropped
/// with it.
#[derive(Default)]
pub struct Calls {
    /// Host tokens of the reconciler's calls in flight.
    tokens: Map<u32, CallId>,
    /// The reconciler's counters as last mirrored into the host's metrics.
    mirrored: Counters,
    /// Cluster mode (`etcd_cluster`): this sidecar's part, made on the leader's first tick.
    node: Option<Node>,
    /// The node's counters as last mirrored.
    node_mirrored: NodeCounters,
    /// The fallback's log line, at most one per minute.
    fallback_log: Option<LogLimiter>,
    /// etcd calls the host refused, logged at most once a minute.
    etcd_refused_log: Option<LogLimiter>,
    /// The cluster leader's re-deliveries, held until the records written after drone's
    /// answer have been read: only calls the reconciler still has in flight (one it gave up
    /// on leaves the list, counted in `calls_expired`), so at most `max_inflight_calls`;
    /// beyond that the oldest is withdrawn and counted (`redeliveries_held_dropped`).
    held: VecDeque<(OutgoingCall, u64)>,
}

impl Calls {
    /// Calls whose answers this leader still expects.
    pub fn tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Cluster mode's part, once the leader ticked with `etcd_cluster` set.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// Whether this leader's reconciler runs (calls drone, re-delivers): always, except
    /// while another sidecar leads the cluster.
    fn reconciles(&self) -> bool {
        self.node.as_ref().is_none_or(|n| n.mode().reconciles())
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
        let me = self.seat.me();
        let (Role::Leader | Role::Elected { .. }, Some(leader)) = (role, self.seat.leader()) else {
            return now_ms;
        };
        if cfg.etcd_cluster.is_none() {
            leader.drain(host, now_ms);
            reconcile(leader, host, now_ms);
        } else {
            let mut node = leader
                .host
                .node
                .take()
                .unwrap_or_else(|| Node::new(cfg, me, now_ms));
            let mode = update_mode(leader, &mut node, host, now_ms);
            leader.drain_with(host, now_ms, mode.reconciles(), |obs, vouch| {
                node.record(obs, vouch)
            });
            let mut read = false;
            match mode {
                Mode::Leads if node.reading() => {}
                Mode::Leads => {
                    let due =
                        leader.reconciler.ledger().any_due(now_ms) || !leader.host.held.is_empty();
                    read = node.read_due(due, now_ms);
                }
                Mode::Follows => {}
                Mode::Embedded | Mode::Fallback => {}
            }
            dispatch_node(leader, &mut node, host, now_ms, read);
            let reading = node.reading();
            let scan_done = node.scan_done();
            leader.host.node = Some(node);
            if mode != Mode::Leads {
                release(leader, host, cfg, now_ms, u64::MAX);
            } else if !reading {
                release(leader, host, cfg, now_ms, scan_done);
            }
            // The cluster leader looks builds up after the records are read: the tick waits
            // for the read's answer (see `on_call_answer`).
            if mode.reconciles() && !(mode == Mode::Leads && reading) {
                reconcile(leader, host, now_ms);
            }
        }
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
        if let Some(node) = leader.host.node.take() {
            if node.owns(token) {
                node_answer(leader, node, host, cfg, token, num_headers, body_size);
                return;
            }
            leader.host.node = Some(node);
        }
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
        drain(leader, host, now_ms);
        let follow_up = leader.reconciler.on_response(id, result, now_ms);
        // A leader that stopped leading the cluster makes no more calls: those it would make
        // now are withdrawn.
        if leader.host.reconciles() {
            dispatch_all(leader, host, follow_up, now_ms);
        } else {
            for call in follow_up {
                leader.reconciler.withdraw(call.id, now_ms);
            }
        }
        finish(leader, host);
    }
}

/// Drains the queue; in cluster mode, the evidence is also kept to be recorded in etcd.
fn drain(leader: &mut Leader<Calls>, host: &mut impl Host, now_ms: u64) {
    match leader.host.node.take() {
        None => leader.drain(host, now_ms),
        Some(mut node) => {
            let observe = node.mode().reconciles();
            leader.drain_with(host, now_ms, observe, |obs, vouch| node.record(obs, vouch));
            leader.host.node = Some(node);
        }
    }
}

/// The reconciler's tick: its calls dispatched, tokens of calls it expired forgotten.
fn reconcile(leader: &mut Leader<Calls>, host: &mut impl Host, now_ms: u64) {
    let calls = leader.reconciler.tick(now_ms);
    dispatch_all(leader, host, calls, now_ms);
    // Tokens of calls the reconciler expired (the host never answered) are dropped: the
    // map holds only calls in flight (at most `max_inflight_calls`) even if answers are
    // lost, and a late answer to an expired call is ignored unread. So are held
    // re-deliveries it gave up on: never sent, they would duplicate its retry.
    let reconciler = &leader.reconciler;
    leader
        .host
        .tokens
        .retain(|_, id| reconciler.is_inflight(*id));
    leader
        .host
        .held
        .retain(|(call, _)| reconciler.is_inflight(call.id));
}

/// The node's mode now, shown in `cluster_mode`; a change is logged (entering the fallback at
/// most once a minute).
fn update_mode(
    leader: &mut Leader<Calls>,
    node: &mut Node,
    host: &mut impl Host,
    now_ms: u64,
) -> Mode {
    let (mode, changed) = node.update_mode(now_ms);
    host.set_metric(Id::ClusterMode, mode as u64);
    match changed {
        Some(Mode::Fallback) => {
            // What this replica took and etcd has not stored yet is this reconciler's now.
            for obs in node.unwritten() {
                leader.reconciler.observe(obs, now_ms);
            }
            let limiter = leader
                .host
                .fallback_log
                .get_or_insert_with(|| LogLimiter::new(60_000));
            if let Some(n) = limiter.allow(now_ms) {
                let why = node
                    .last_error()
                    .map_or_else(|| "no answer".to_string(), |e| format!("{e:?}"));
                log::warn!(
                    "cluster mode: etcd unusable, reconciling locally why={}{} {}",
                    Val(&why),
                    suppressed_note(n),
                    leader.who
                );
            }
        }
        Some(Mode::Leads) => log::info!("cluster mode: this sidecar leads {}", leader.who),
        Some(Mode::Follows) => log::info!(
            "cluster mode: another sidecar leads, recording only {}",
            leader.who
        ),
        Some(Mode::Embedded) | None => {}
    }
    mode
}

/// Sends what the node asks for; a request the host refuses failed at once.
fn dispatch_node(
    leader: &mut Leader<Calls>,
    node: &mut Node,
    host: &mut impl Host,
    now_ms: u64,
    read: bool,
) {
    for (slot, call) in node.poll(now_ms, read) {
        match host.dispatch(&call) {
            Ok(token) => node.sent(slot, &call, token, now_ms),
            Err(why) => {
                host.add_metric(Id::CallsRefused, 1);
                let limiter = leader
                    .host
                    .etcd_refused_log
                    .get_or_insert_with(|| LogLimiter::new(60_000));
                if let Some(n) = limiter.allow(now_ms) {
                    log::warn!(
                        "cannot call cluster (is it defined?) cluster={} status={why}{} {}",
                        Val(&call.cluster),
                        suppressed_note(n),
                        leader.who
                    );
                }
                node.refused(slot, now_ms);
            }
        }
    }
}

/// The answer to one of the node's requests: records read are taken in as evidence and, once
/// a read scan is done, the cluster leader's reconciler ticks.
fn node_answer(
    leader: &mut Leader<Calls>,
    mut node: Node,
    host: &mut impl Host,
    cfg: &Config,
    token: u32,
    num_headers: usize,
    body_size: usize,
) {
    let now_ms = host.now_ms();
    let answer = if num_headers == 0 || body_size > cfg.max_body_bytes {
        None
    } else {
        host.answer_status().map(|status| {
            let body = if body_size == 0 {
                Vec::new()
            } else {
                host.answer_body(body_size).unwrap_or_default()
            };
            (u32::from(status), body)
        })
    };
    let answered = node.answer(
        token,
        answer.as_ref().map(|(s, b)| (*s, b.as_slice())),
        now_ms,
    );
    let mode = update_mode(leader, &mut node, host, now_ms);
    leader.drain_with(host, now_ms, mode.reconciles(), |obs, vouch| {
        node.record(obs, vouch)
    });
    for obs in answered.records {
        leader.reconciler.observe(obs, now_ms);
    }
    let more = node.scan_continues();
    dispatch_node(leader, &mut node, host, now_ms, more);
    let scan_done = node.scan_done();
    leader.host.node = Some(node);
    if mode == Mode::Leads && answered.read_done {
        release(leader, host, cfg, now_ms, scan_done);
        reconcile(leader, host, now_ms);
    }
    finish(leader, host);
}

/// Sends the held re-deliveries a records scan that read every page and started at
/// `scan_done` has vouched for: those held at least [`VOUCH_TICKS`] ticks before it (every
/// sidecar has written what its replica took before drone answered). One the reconciler no longer has in
/// flight (it gave up on it, and retries) is dropped, and one that evidence read since made
/// needless is withdrawn: neither is sent. Not leading the cluster any more (`scan_done` =
/// `u64::MAX`): a fallback sends them, a follower withdraws them. A call sent leaves now: its
/// deadline runs from here.
fn release(
    leader: &mut Leader<Calls>,
    host: &mut impl Host,
    cfg: &Config,
    now_ms: u64,
    scan_done: u64,
) {
    if leader.host.held.is_empty() {
        return;
    }
    let wait = cfg.tick_ms.saturating_mul(VOUCH_TICKS);
    // After an etcd failure, the others' records may be late: counted from it too, but for a
    // lease TTL at most (failures that never stop, a dead member Envoy still tries, must not
    // hold a re-delivery for ever; the others retry their writes every tick meanwhile).
    let failed = leader.host.node.as_ref().map_or(0, Node::failed_at);
    let ttl = cfg.etcd_lease_ttl_ms;
    let (ready, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut leader.host.held)
        .into_iter()
        .partition(|(_, at)| {
            let after_failure = failed.min(at.saturating_add(ttl)).max(*at);
            after_failure.saturating_add(wait) <= scan_done
        });
    leader.host.held = keep;
    let sends = leader.host.reconciles();
    let mut out = Vec::new();
    for (call, _) in ready {
        if !leader.reconciler.is_inflight(call.id) {
            continue;
        }
        if !sends || leader.reconciler.superseded(call.id) {
            leader.reconciler.withdraw(call.id, now_ms);
        } else {
            leader.reconciler.sending(call.id, now_ms);
            out.push(call);
        }
    }
    if leader
        .host
        .node
        .as_ref()
        .is_some_and(|n| n.mode() == Mode::Leads)
    {
        // Vouched for by the scan: sent now, not held again.
        send_now(leader, host, out, now_ms);
    } else {
        dispatch_all(leader, host, out, now_ms);
    }
}

/// Dispatches `calls` without holding re-deliveries.
fn send_now(
    leader: &mut Leader<Calls>,
    host: &mut impl Host,
    calls: Vec<OutgoingCall>,
    now_ms: u64,
) {
    let node = leader.host.node.take();
    dispatch_all(leader, host, calls, now_ms);
    leader.host.node = node;
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
            if leader
                .host
                .node
                .as_ref()
                .is_some_and(|n| n.mode() == Mode::Leads)
                && call.cluster == leader.reconciler.config().pipeline_cluster
            {
                hold(leader, host, call, now_ms);
                continue;
            }
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

/// Holds the cluster leader's re-delivery `call` until a records scan vouches for it. The list
/// keeps only calls the reconciler has in flight, so it stays within `max_inflight_calls`;
/// should it not, the oldest is withdrawn (looked at again after `stale_after_ms`) and counted.
fn hold(leader: &mut Leader<Calls>, host: &mut impl Host, call: OutgoingCall, now_ms: u64) {
    let reconciler = &leader.reconciler;
    let max = reconciler.config().max_inflight_calls;
    let held = &mut leader.host.held;
    held.retain(|(c, _)| reconciler.is_inflight(c.id));
    while held.len() >= max {
        let Some((old, _)) = held.pop_front() else {
            break;
        };
        leader.reconciler.withdraw(old.id, now_ms);
        host.add_metric(Id::RedeliveriesHeldDropped, 1);
    }
    leader.host.held.push_back((call, now_ms));
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
    if let Some(node) = &leader.host.node {
        let (now, last) = (node.counters, &mut leader.host.node_mirrored);
        for (id, value, old) in [
            (Id::EtcdRequests, now.requests, last.requests),
            (
                Id::EtcdRecordsWritten,
                now.records_written,
                last.records_written,
            ),
            (
                Id::EtcdAnswersInvalid,
                now.answers_invalid,
                last.answers_invalid,
            ),
            (Id::ClusterFallbacks, now.fallbacks, last.fallbacks),
            (
                Id::EtcdRecordsDropped,
                now.records_dropped,
                last.records_dropped,
            ),
        ] {
            if value > old {
                host.add_metric(id, value - old);
            }
        }
        *last = now;
    }
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
