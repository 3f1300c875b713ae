//! The leader's work in shared data: the lease election, loading the previous leader's
//! snapshot (in any shard layout), draining the observation queue, and checkpoints.
//!
//! Envoy ticks every root context separately, on every worker and on the main thread, so
//! every root runs [`Seat::elect`] on every tick and the lease (see [`super::lease`]) lets one
//! of them lead. Envoy checks CAS only for existing keys, so two roots that both find no
//! lease both write one; each reads it back, and the first may do so before the second write
//! lands: both lead for that tick, and the next tick leaves the last writer
//! (`filter/tests/leader.rs` drives these races).
//! Everything goes through a [`SharedStore`], so the whole of it runs natively against
//! [`super::store::MemoryStore`]; [`super::turn`] drives it on every tick and answer.

use super::config::Config;
use super::lease::{self, Decision, Lease};
use super::logfmt::{self, Every, Summary, Val};
use super::observation::{Observation, QueueKey, Vouch};
use super::reconciler::Reconciler;
use super::snapshot;
use super::store::SharedStore;

/// Queue messages the leader takes per drain: bounds a tick's work after a backlog.
pub const MAX_DRAIN_PER_TICK: usize = 10_000;

/// What this tick's election made of a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Another root holds the lease, or this one lost a race for it: do not reconcile.
    Follower,
    /// This root holds the lease, as on its last tick.
    Leader,
    /// This root took the lease on this tick, with this epoch: its reconciler is new, loaded
    /// from the snapshot.
    Elected { epoch: u64 },
}

/// One root context's part in the election, and its reconciler while it leads. `H` is what
/// the turn ([`super::turn::Calls`]) keeps beside a reconciler (its host call tokens): made
/// new with each leader, dropped with it.
pub struct Seat<H = ()> {
    /// Random id in the lease; distinct for every root context in the process.
    me: u64,
    lease_key: String,
    meta_key: String,
    leader: Option<Leader<H>>,
}

/// The reconciler of the root that holds the lease, and what it keeps beside it.
pub struct Leader<H = ()> {
    pub reconciler: Reconciler,
    /// The turn's own state for this reconciler.
    pub host: H,
    /// `instance=… reconciler=… epoch=…`, for this root's log lines.
    pub who: String,
    instance: String,
    /// The key of the queue's tags: only messages tagged with it are evidence.
    queue_key: Option<QueueKey>,
    /// When the next summary line is due.
    summary: Every,
}

impl<H: Default> Seat<H> {
    /// A root context with id `me` and no configuration: it follows until [`Seat::configure`].
    pub fn new(me: u64) -> Self {
        Seat {
            me,
            lease_key: String::new(),
            meta_key: String::new(),
            leader: None,
        }
    }

    pub fn me(&self) -> u64 {
        self.me
    }

    /// A new configuration means a new reconciler: the next election reloads the snapshot.
    pub fn configure(&mut self, instance: &str) {
        self.lease_key = snapshot::lease_key(instance);
        self.meta_key = snapshot::meta_key(instance);
        self.leader = None;
    }

    /// Stops reconciling without a word (the root is going away); the lease expires.
    pub fn leave(&mut self) {
        self.leader = None;
    }

    pub fn leader(&mut self) -> Option<&mut Leader<H>> {
        self.leader.as_mut()
    }

    /// Takes, keeps or gives up the lease. A root that takes it loads the snapshot.
    pub fn elect(&mut self, store: &mut impl SharedStore, cfg: &Config, now_ms: u64) -> Role {
        let stored = store.get(&self.lease_key);
        let cas = stored.as_ref().map(|(_, cas)| *cas);
        let current = stored.as_ref().map(|(v, _)| v.as_slice());
        match lease::decide(current, self.me, now_ms, cfg.lease_ms) {
            Decision::Follow => {
                self.step_down("another root holds the lease");
                Role::Follower
            }
            Decision::Renew(l) => {
                if store.set(&self.lease_key, &l.encode(), cas).is_ok() {
                    Role::Leader
                } else {
                    self.step_down("lease renewal lost a race");
                    Role::Follower
                }
            }
            Decision::Acquire(l) => {
                if store.set(&self.lease_key, &l.encode(), cas).is_err() {
                    return Role::Follower;
                }
                if cas.is_none() {
                    // Envoy checks CAS only for existing keys: two roots may both "insert".
                    // Read back; the last writer wins, the other steps aside.
                    let owner = store
                        .get(&self.lease_key)
                        .and_then(|(v, _)| Lease::decode(&v))
                        .map(|l| l.owner);
                    if owner != Some(self.me) {
                        return Role::Follower;
                    }
                }
                let leader = Leader::load(store, cfg, self.me, &self.meta_key, now_ms, l.epoch);
                self.leader = Some(leader);
                Role::Elected { epoch: l.epoch }
            }
        }
    }

    fn step_down(&mut self, why: &str) {
        if let Some(leader) = self.leader.take() {
            log::info!("reconciler stepped down why={} {}", Val(why), leader.who);
        }
    }
}

impl<H: Default> Leader<H> {
    /// A new reconciler, loaded from the snapshot the previous leader left under `meta_key`
    /// and the keys it names. A snapshot of another layout (`max_tracked_builds` changed) is
    /// loaded whole and rewritten in this one at the next checkpoint.
    fn load(
        store: &mut impl SharedStore,
        cfg: &Config,
        me: u64,
        meta_key: &str,
        now_ms: u64,
        epoch: u64,
    ) -> Self {
        let mut reconciler = Reconciler::new(cfg.clone(), me ^ now_ms);
        let who = logfmt::identity(&cfg.instance, me, epoch);
        reconciler.set_identity(who.clone());
        let instance = cfg.instance.as_str();
        let mut loaded = 0usize;
        let stored = match store.get(meta_key) {
            // An emptied value is how a key is "removed": nothing to load, nothing wrong.
            Some((v, _)) if !v.is_empty() => {
                let shards = snapshot::decode_meta(&v);
                if shards.is_none() {
                    unreadable(&mut reconciler, "meta", "", &who);
                }
                shards
            }
            _ => None,
        };
        if let Some(shards) = stored {
            for shard in 0..shards {
                let key = snapshot::shard_key(instance, shard);
                let Some((v, _)) = store.get(&key) else {
                    continue;
                };
                if !v.is_empty() && !reconciler.load_shard(&v, now_ms) {
                    unreadable(&mut reconciler, "shard", &format!("shard={shard} "), &who);
                }
            }
            loaded = reconciler.ledger().len();
            let marks_key = snapshot::watermarks_key(instance);
            if let Some((v, _)) = store.get(&marks_key) {
                if !v.is_empty() && !reconciler.load_watermarks(&v) {
                    unreadable(&mut reconciler, "watermarks", "", &who);
                }
            }
            if shards != reconciler.shard_count() {
                // Another layout: rewrite every shard, and empty the old keys beyond the new
                // count (keys cannot be deleted).
                reconciler.mark_all_dirty();
                for shard in reconciler.shard_count()..shards {
                    let _ = store.set(&snapshot::shard_key(instance, shard), b"", None);
                }
            }
        }
        let meta = snapshot::encode_meta(reconciler.shard_count());
        let _ = store.set(meta_key, &meta, None);
        log::info!(
            "reconciler elected version={} loaded_builds={loaded} {who}",
            env!("CARGO_PKG_VERSION")
        );
        Leader {
            reconciler,
            host: H::default(),
            who,
            instance: cfg.instance.clone(),
            queue_key: QueueKey::of(cfg),
            summary: Every::new(logfmt::SUMMARY_EVERY_MS),
        }
    }

    /// Takes the queued observations (at most [`MAX_DRAIN_PER_TICK`]) into the reconciler;
    /// an unreadable message is counted and skipped.
    pub fn drain(&mut self, store: &mut impl SharedStore, now_ms: u64) {
        self.drain_with(store, now_ms, true, |_, _| {});
    }

    /// [`Leader::drain`], showing `sink` every readable observation first (cluster mode records
    /// the evidence in etcd); the reconciler takes them only if `observe` (a sidecar that
    /// follows the cluster's leader keeps nothing it would never act on).
    pub fn drain_with(
        &mut self,
        store: &mut impl SharedStore,
        now_ms: u64,
        observe: bool,
        mut sink: impl FnMut(&Observation, Vouch),
    ) {
        for _ in 0..MAX_DRAIN_PER_TICK {
            let Some(msg) = store.dequeue() else {
                break;
            };
            match Observation::decode_vouched(&msg, self.queue_key.as_ref()) {
                Ok((obs, vouch)) => {
                    sink(&obs, vouch);
                    if !observe {
                        continue;
                    }
                    if vouch == Vouch::Unauthenticated {
                        // Taken as the hint it may be; counted, not logged per message (any
                        // plugin of this Envoy can write the queue as fast as it likes).
                        self.reconciler.unauthenticated_observation();
                    }
                    self.reconciler.observe(obs, now_ms)
                }
                Err(e) => {
                    self.reconciler.invalid_observation();
                    log::warn!(
                        "dropped an unreadable queue message why={} {}",
                        Val(&e.to_string()),
                        self.who
                    );
                }
            }
        }
    }

    /// Writes the changed snapshot values so the next leader continues from here; a write
    /// the host refuses is counted.
    pub fn checkpoint(&mut self, store: &mut impl SharedStore) {
        if let Some(bytes) = self.reconciler.take_watermarks() {
            let key = snapshot::watermarks_key(&self.instance);
            if store.set(&key, &bytes, None).is_err() {
                self.reconciler.snapshot_error();
            }
        }
        for (shard, bytes) in self.reconciler.take_dirty_shards() {
            let key = snapshot::shard_key(&self.instance, shard);
            if store.set(&key, &bytes, None).is_err() {
                self.reconciler.snapshot_error();
            }
        }
    }

    /// The summary line, once a minute.
    pub fn log_summary(&mut self, now_ms: u64) {
        if !self.summary.due(now_ms) {
            return;
        }
        let r = &self.reconciler;
        let c = r.counters();
        let line = Summary {
            tracked: c.builds_tracked,
            due: r.ledger().due_count(now_ms) as u64,
            missing: c.transitions_missing,
            oldest_undelivered_s: c.oldest_undelivered_seconds,
            circuit_open: c.circuit_open != 0,
            inflight: c.calls_inflight,
            recovered: c.transitions_recovered,
            giveups: c.giveups,
        };
        log::info!("{line} {}", self.who);
    }
}

/// Counts and logs a snapshot value that is there but cannot be read (`where_` names which
/// shard, or is empty); the leader goes on without it.
#[cold]
#[inline(never)]
fn unreadable(reconciler: &mut Reconciler, what: &str, where_: &str, who: &str) {
    reconciler.snapshot_error();
    log::warn!("snapshot {what} unreadable, skipped {where_}{who}");
}
