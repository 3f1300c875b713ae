//! One sidecar's part in cluster mode (`etcd_cluster` set), kept by the local leader (the one
//! VM of this Envoy that won the shared-data election) beside its reconciler: the etcd
//! election of one reconciler across the cluster, the records of what this replica's pipeline
//! answered (written for the others), and, while this sidecar leads the cluster, every
//! sidecar's records read incrementally by revision. Sans-IO: [`Node::poll`] says which etcd
//! requests to send, [`Node::answer`] takes their answers; [`super::super::turn`] dispatches
//! them next to the reconciler's calls and decides from [`Node::mode`] whether the reconciler
//! runs.
//!
//! - **Mode.** Leads while the election holds the key with a lease surely alive; follows
//!   while etcd answered within the lease TTL; otherwise falls back to local reconciliation
//!   (today's embedded behaviour), counted once per entry, until etcd answers again. A
//!   follower's reconciler takes nothing; falling back, it takes the records not yet written
//!   ([`Node::unwritten`]).
//! - **Records.** Every queue message that is evidence (its tag made with the webhook secret)
//!   is kept, bounded ([`MAX_PENDING`], the excess counted as dropped), and written at most
//!   [`MAX_BATCH`] at a time in one transaction, one request at a time: at most one request
//!   every [`WRITE_EVERY_TICKS`] ticks for records, never more than one per webhook. The value is the queue message itself
//!   without drone's repository object (a few hundred bytes), so it carries the same HMAC tag,
//!   and a writer without the secret cannot forge evidence. Keys are
//!   `<prefix>d/<sidecar>/<seq>`, bound to a records lease of 2 × `max_build_age_ms` taken anew
//!   every `max_build_age_ms`: a record outlives every build it can settle, then expires.
//! - **Reading.** The leader reads `<prefix>d/` from the last revision read + 1 (from 0 when it
//!   takes over: every live record), a page of [`Node::page_limit`] keys at a time, in key
//!   order; when a page is not the last, the next starts after its last key with the same
//!   revision, and the scan's first revision is where the next scan starts (a key rewritten
//!   mid-scan is read twice, never missed). A page refused for one bad value is read again a
//!   key at a time, and that key skipped. Records are decoded with the queue's input limits
//!   and its tag: a record that is not evidence under this configuration's key is refused and
//!   counted (`etcd_answers_invalid`); etcd is storage, not authority, and the reconciler still
//!   asks drone before it delivers.

use super::election::Election;
use super::etcd::{limits, Etcd};
use super::{ClusterError, ClusterStore, Request};
use crate::core::config::Config;
use crate::core::observation::{Observation, QueueKey, Vouch};
use crate::core::reconciler::OutgoingCall;
use std::collections::VecDeque;

/// Records kept for writing, at most; older ones are dropped first and counted.
pub const MAX_PENDING: usize = 4096;
/// Records one write (one etcd transaction) carries, at most (etcd's `--max-txn-ops` is 128).
pub const MAX_BATCH: usize = 64;
/// A sidecar writes its records at most every this many ticks, batched: a record reaches etcd
/// at most `WRITE_EVERY_TICKS` ticks (and a round trip) after its webhook was drained.
pub const WRITE_EVERY_TICKS: u64 = 2;
/// A held re-delivery waits for a records scan that starts this many ticks after it was
/// planned: every record of a transition taken before drone answered is written by then.
pub const VOUCH_TICKS: u64 = WRITE_EVERY_TICKS + 1;

/// What `cluster_mode` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No `etcd_cluster`: the single-sidecar mode.
    Embedded = 0,
    /// This sidecar leads the cluster: it reconciles.
    Leads = 1,
    /// Another sidecar leads: this one records, and neither calls drone nor re-delivers.
    Follows = 2,
    /// etcd unreachable, without quorum, or the lease lost and not renewable: this sidecar
    /// reconciles on its own, as in the embedded mode.
    Fallback = 3,
}

impl Mode {
    /// Whether the reconciler runs (calls drone, re-delivers) in this mode.
    pub fn reconciles(self) -> bool {
        self != Mode::Follows
    }
}

/// The etcd requests a node may have on their way: one of each at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Election,
    /// A records lease grant, or a batch of records.
    Write,
    Read,
}

/// What the node counted; the turn mirrors it into metrics.
/// How the next page of a scan is read: a page etcd's answer to which was refused (a value over
/// the limits) is read again one key at a time, and a key whose value cannot be read is
/// skipped after a read of its key alone, so one bad record never blocks the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Careful {
    No,
    OneKey,
    KeyOnly,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    pub requests: u64,
    pub records_written: u64,
    pub answers_invalid: u64,
    pub fallbacks: u64,
    pub records_dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Grant,
    Batch(usize),
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    token: u32,
    sent_ms: u64,
}

/// What an answer gave the turn.
#[derive(Debug, Default)]
pub struct Answered {
    /// Records of the other sidecars, evidence under this configuration's key.
    pub records: Vec<Observation>,
    /// A read scan ended (its last page read, or the read failed): the reconciler may tick.
    pub read_done: bool,
}

/// A record's value as evidence: a queue message within the queue's input limits whose tag
/// was made with `key` (the webhook secret's); anything else is `None` (no secret: nothing is
/// evidence).
pub fn decode_record(value: &[u8], key: Option<&QueueKey>) -> Option<Observation> {
    if value.len() > limits::MAX_VALUE_BYTES {
        return None;
    }
    match Observation::decode_vouched(value, key) {
        Ok((obs, Vouch::Evidence)) if obs.verified() => Some(obs),
        _ => None,
    }
}

pub struct Node {
    etcd: Etcd,
    election: Election,
    cluster: String,
    authority: String,
    timeout_ms: u64,
    ttl_ms: u64,
    /// `<prefix>d/`, and this sidecar's own `<prefix>d/<me>/`.
    records_prefix: Vec<u8>,
    own_prefix: Vec<u8>,
    key: Option<QueueKey>,
    pending: VecDeque<Vec<u8>>,
    seq: u64,
    /// The records lease and when it was granted.
    records_lease: Option<(u64, u64)>,
    records_ttl_s: u64,
    rotate_ms: u64,
    /// No records request before this: one per tick at most, and a pause after a failure.
    write_at: u64,
    tick_ms: u64,
    /// The highest store revision an answer showed: above the last scan's, something was
    /// written since.
    store_revision: u64,
    /// The next scan's `min_mod_revision`; the current scan's cursor and first revision.
    read_from: u64,
    cursor: Option<Vec<u8>>,
    scan_revision: u64,
    /// A scan has read its first page.
    scanning: bool,
    careful: Careful,
    last_scan_ms: u64,
    /// When the current (or last) scan's first page was sent.
    scan_started_ms: u64,
    /// When the last scan that read every page started: what it vouches for.
    scan_done_ms: u64,
    page_limit: usize,
    election_call: Option<InFlight>,
    write_call: Option<(InFlight, Write)>,
    read_call: Option<InFlight>,
    /// etcd answered usably within the TTL before this.
    healthy_until: u64,
    /// Usable answers so far, and when a request last failed (no answer, or not a usable one).
    usable_answers: u64,
    failed_ms: u64,
    mode: Mode,
    pub counters: NodeCounters,
}

impl Node {
    /// The node of sidecar `me` for `cfg` (with `etcd_cluster` set), at `now_ms`.
    pub fn new(cfg: &Config, me: u64, now_ms: u64) -> Self {
        let prefix = cfg.etcd_prefix.as_bytes();
        let mut election_key = prefix.to_vec();
        election_key.extend_from_slice(b"leader");
        let mut records_prefix = prefix.to_vec();
        records_prefix.extend_from_slice(b"d/");
        let mut own_prefix = records_prefix.clone();
        own_prefix.extend_from_slice(format!("{me:016x}/").as_bytes());
        let ttl_s = cfg.etcd_lease_ttl_ms.div_ceil(1000).max(2);
        // A follower campaigns every sixth of the TTL (at least every tick): it takes over
        // within that of the old key's expiry, at two requests a sixth of the TTL at most.
        let retry_ms = (ttl_s * 1000 / 6).max(cfg.tick_ms).max(200);
        Node {
            etcd: Etcd,
            election: Election::new(
                &election_key,
                format!("{me:016x}").as_bytes(),
                ttl_s,
                retry_ms,
            ),
            cluster: cfg.etcd_cluster.clone().unwrap_or_default(),
            authority: cfg.etcd_authority.clone(),
            // Every etcd request is answered or timed out by Envoy within a quarter of the
            // lease: one sent to a member without a raft leader (etcd electing one) is
            // retried, on another member, while the lease lasts; a records write waiting
            // `call_timeout_ms` there held the others' re-deliveries past what they vouch for.
            timeout_ms: cfg.call_timeout_ms.min(ttl_s * 1000 / 4).max(100),
            ttl_ms: ttl_s * 1000,
            records_prefix,
            own_prefix,
            key: QueueKey::of(cfg),
            pending: VecDeque::new(),
            seq: 0,
            records_lease: None,
            records_ttl_s: (cfg.max_build_age_ms.saturating_mul(2)).div_ceil(1000),
            rotate_ms: cfg.max_build_age_ms,
            write_at: 0,
            tick_ms: cfg.tick_ms,
            store_revision: 0,
            read_from: 0,
            cursor: None,
            scan_revision: 0,
            scanning: false,
            careful: Careful::No,
            last_scan_ms: 0,
            scan_started_ms: 0,
            scan_done_ms: 0,
            page_limit: Self::page_limit(cfg.max_body_bytes),
            election_call: None,
            write_call: None,
            read_call: None,
            healthy_until: now_ms.saturating_add(ttl_s * 1000),
            usable_answers: 0,
            failed_ms: 0,
            mode: Mode::Follows,
            counters: NodeCounters::default(),
        }
    }

    /// Keys one read asks for: as many of the largest records as fit `max_body_bytes` (the
    /// answers of etcd are held to the limit drone's are), 1 to 256.
    pub fn page_limit(max_body_bytes: usize) -> usize {
        // A value in base64, its key and revisions.
        let per_key = limits::MAX_VALUE_BYTES / 3 * 4 + 256;
        (max_body_bytes / per_key).clamp(1, 256)
    }

    /// The mode at `now_ms`; `Some(mode)` when it changed since the last call (entries into
    /// the fallback are counted; taking the lead restarts reading from revision 0).
    pub fn update_mode(&mut self, now_ms: u64) -> (Mode, Option<Mode>) {
        let mode = if self.election.is_leader(now_ms) {
            Mode::Leads
        } else if now_ms < self.healthy_until {
            Mode::Follows
        } else {
            Mode::Fallback
        };
        if mode == self.mode {
            return (mode, None);
        }
        if mode == Mode::Fallback {
            self.counters.fallbacks += 1;
        }
        if mode == Mode::Leads {
            // A new cluster leader reads every live record: what any replica accepted.
            self.read_from = 0;
            self.cursor = None;
            self.last_scan_ms = 0;
        }
        self.mode = mode;
        (mode, Some(mode))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Takes a queue message the local leader drained: a record to write when it is
    /// evidence under this configuration's key.
    pub fn record(&mut self, obs: &Observation, vouch: Vouch) {
        if vouch != Vouch::Evidence {
            return;
        }
        // Without drone's repository object (about 2 KB of a 2.3 KB message): the leader has
        // it from its own replica's webhooks, or asks drone once per repository.
        let mut value = obs.without_objects(false).encode(self.key.as_ref());
        if value.len() > limits::MAX_VALUE_BYTES {
            value = obs.without_objects(true).encode(self.key.as_ref());
        }
        if value.len() > limits::MAX_VALUE_BYTES {
            self.counters.records_dropped += 1;
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.counters.records_dropped += 1;
        }
        self.pending.push_back(value);
    }

    /// The records not written yet, as observations (for a reconciler taking over locally).
    pub fn unwritten(&self) -> Vec<Observation> {
        self.pending
            .iter()
            .filter_map(|v| decode_record(v, self.key.as_ref()))
            .collect()
    }

    /// Records waiting to be written.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// When the last records scan that read every page started (0: none yet). A scan that
    /// failed vouches for nothing: what it did not read may say a held re-delivery is needless.
    pub fn scan_done(&self) -> u64 {
        self.scan_done_ms
    }

    /// Whether a read is on its way.
    pub fn reading(&self) -> bool {
        self.read_call.is_some()
    }

    /// Whether a scan is half done: its next page is read at once.
    pub fn scan_continues(&self) -> bool {
        self.mode == Mode::Leads
            && self.read_call.is_none()
            && (self.cursor.is_some() || self.careful != Careful::No)
    }

    /// Whether the leader should read records before this tick's lookups: when `due`
    /// (builds are due, or re-deliveries held) or a scan is half done, at most once a tick;
    /// else every third of the TTL, and only when an answer showed a store revision past the
    /// last scan's (what only another replica saw, a transition it failed): an idle cluster's
    /// leader reads nothing.
    pub fn read_due(&self, due: bool, now_ms: u64) -> bool {
        self.mode == Mode::Leads
            && self.read_call.is_none()
            && (due
                || self.cursor.is_some()
                || self.careful != Careful::No
                || (now_ms >= self.last_scan_ms.saturating_add(self.ttl_ms / 3)
                    && self.store_revision >= self.read_from))
    }

    fn call(&self, request: Request) -> OutgoingCall {
        OutgoingCall {
            id: 0,
            cluster: self.cluster.clone(),
            headers: vec![
                (":method".into(), request.method.into()),
                (":path".into(), request.path),
                (":authority".into(), self.authority.clone()),
                ("content-type".into(), "application/json".into()),
            ],
            body: request.body.into_bytes(),
            timeout_ms: self.timeout_ms,
        }
    }

    /// Fails requests the host never answered (after twice their timeout).
    fn expire(&mut self, now_ms: u64) {
        let wait = self.timeout_ms.saturating_mul(2);
        let late = move |c: &InFlight| now_ms >= c.sent_ms.saturating_add(wait);
        if self.write_call.is_some_and(|(c, _)| late(&c)) {
            self.write_call = None;
            self.failed_ms = now_ms;
        }
        if self.read_call.is_some_and(|c| late(&c)) {
            self.read_failed();
            self.failed_ms = now_ms;
        }
        if self.election_call.is_some_and(|c| late(&c)) {
            self.election_call = None;
            self.election.failed(now_ms);
            self.failed_ms = now_ms;
        }
    }

    /// When an etcd request last failed: other sidecars' records of what their replicas took
    /// before then may still be on their way, so a scan vouches only for what was planned
    /// [`VOUCH_TICKS`] ticks before it, counted from here too.
    pub fn failed_at(&self) -> u64 {
        self.failed_ms
    }

    /// The requests to send now: the election's, a records write, and a read when `read` (see
    /// [`Node::read_due`]). Each goes with its slot to [`Node::sent`] or [`Node::refused`].
    pub fn poll(&mut self, now_ms: u64, read: bool) -> Vec<(Slot, OutgoingCall)> {
        self.expire(now_ms);
        let mut out = Vec::new();
        if self.election_call.is_none() {
            if let Some(r) = self.election.poll(&self.etcd, now_ms) {
                // Answered (or timed out by Envoy) well within the TTL, so a renewal that
                // hangs is retried before the lease runs out.
                out.push((Slot::Election, self.call(r)));
            }
        }
        if self.write_call.is_none() && !self.pending.is_empty() && now_ms >= self.write_at {
            let lease = match self.records_lease {
                Some((lease, at)) if now_ms < at.saturating_add(self.rotate_ms) => Some(lease),
                _ => None,
            };
            let request = match lease {
                None => self.etcd.grant(self.records_ttl_s),
                Some(lease) => {
                    let n = self.pending.len().min(MAX_BATCH);
                    let pairs: Vec<(Vec<u8>, Vec<u8>)> = self
                        .pending
                        .iter()
                        .take(n)
                        .enumerate()
                        .map(|(i, v)| {
                            let mut k = self.own_prefix.clone();
                            let seq = self.seq.wrapping_add(i as u64);
                            k.extend_from_slice(format!("{seq:016x}").as_bytes());
                            (k, v.clone())
                        })
                        .collect();
                    self.etcd.put_all(&pairs, lease)
                }
            };
            out.push((Slot::Write, self.call(request)));
        }
        if read && self.read_due(true, now_ms) {
            let from = self.cursor.as_deref().unwrap_or(&self.records_prefix);
            let (p, min) = (&self.records_prefix, self.read_from);
            let r = match self.careful {
                Careful::No => self.etcd.range_from(p, from, min, self.page_limit),
                Careful::OneKey => self.etcd.range_from(p, from, min, 1),
                Careful::KeyOnly => self.etcd.range_keys_from(p, from, min, 1),
            };
            out.push((Slot::Read, self.call(r)));
        }
        out
    }

    /// The host took the request of `slot` with `token`.
    pub fn sent(&mut self, slot: Slot, call: &OutgoingCall, token: u32, now_ms: u64) {
        self.counters.requests += 1;
        let f = InFlight {
            token,
            sent_ms: now_ms,
        };
        match slot {
            Slot::Election => self.election_call = Some(f),
            Slot::Read => {
                if !self.scanning && self.careful == Careful::No {
                    self.scan_started_ms = now_ms;
                }
                self.read_call = Some(f);
            }
            Slot::Write => {
                // The next write goes `WRITE_EVERY_TICKS` ticks later (half a tick early, so
                // a tick that comes a little early still takes it).
                let every = self.tick_ms.saturating_mul(WRITE_EVERY_TICKS);
                self.write_at = now_ms.saturating_add(every.saturating_sub(self.tick_ms / 2));
                let what = if call.header(":path") == Some("/v3/lease/grant") {
                    Write::Grant
                } else {
                    Write::Batch(self.pending.len().min(MAX_BATCH))
                };
                self.write_call = Some((f, what));
            }
        }
    }

    /// The host refused the request of `slot`: it failed at once.
    pub fn refused(&mut self, slot: Slot, now_ms: u64) {
        self.failed_ms = now_ms;
        match slot {
            Slot::Election => self.election.failed(now_ms),
            Slot::Write => self.write_at = now_ms.saturating_add(self.tick_ms.max(200)),
            Slot::Read => self.read_failed(),
        }
    }

    /// Whether `token` is one of this node's requests.
    pub fn owns(&self, token: u32) -> bool {
        self.election_call.is_some_and(|c| c.token == token)
            || self.write_call.is_some_and(|(c, _)| c.token == token)
            || self.read_call.is_some_and(|c| c.token == token)
    }

    fn read_failed(&mut self) {
        self.read_call = None;
        self.last_scan_ms = self.scan_started_ms;
        // The scan starts over from its first revision.
        self.cursor = None;
        self.scanning = false;
        self.careful = Careful::No;
    }

    /// etcd answered usably at `now_ms` (a watcher: as of its next question): not unusable
    /// before two TTLs after it (etcd electing a raft leader on a loaded machine answered
    /// nothing for more than a 3 s TTL; a fallback then would reconcile beside the leader).
    fn usable(&mut self, now_ms: u64) {
        let until = now_ms.saturating_add(self.ttl_ms.saturating_mul(2));
        self.healthy_until = self.healthy_until.max(until);
        self.usable_answers += 1;
    }

    fn refused_answer(&mut self, e: ClusterError) {
        if matches!(e, ClusterError::Malformed(_)) {
            self.counters.answers_invalid += 1;
        }
    }

    /// The answer to `token` (`None`: no answer, or one too large to read), at `now_ms`.
    pub fn answer(&mut self, token: u32, answer: Option<(u32, &[u8])>, now_ms: u64) -> Answered {
        let (ours, usable) = (self.owns(token), self.usable_answers);
        let out = self.take_answer(token, answer, now_ms);
        if ours && self.usable_answers == usable {
            self.failed_ms = now_ms;
        }
        out
    }

    fn take_answer(&mut self, token: u32, answer: Option<(u32, &[u8])>, now_ms: u64) -> Answered {
        let mut out = Answered::default();
        if self.election_call.is_some_and(|c| c.token == token) {
            self.election_call = None;
            match answer {
                None => self.election.failed(now_ms),
                Some((status, body)) => {
                    if let Some(r) = super::etcd::answer_revision(status, body) {
                        self.store_revision = self.store_revision.max(r);
                    }
                    self.election.answer(&self.etcd, now_ms, status, body);
                    // A watcher asks next at `next_watch`: it falls back two TTLs after that
                    // goes unanswered, when the leader it watched has surely given up.
                    let heard = self.election.next_watch().unwrap_or(now_ms).max(now_ms);
                    match self.election.last_error() {
                        None => self.usable(heard),
                        // A refusal etcd made (lease not found) is still etcd answering.
                        Some(ClusterError::Status { code: Some(5), .. }) => self.usable(now_ms),
                        Some(e) => self.refused_answer(e),
                    }
                }
            }
        } else if let Some((_, what)) = self.write_call.filter(|(c, _)| c.token == token) {
            self.write_call = None;
            let Some((status, body)) = answer else {
                self.write_at = now_ms.saturating_add(self.tick_ms.max(200));
                return out;
            };
            match what {
                Write::Grant => match self.etcd.decode_grant(status, body) {
                    Ok(g) => {
                        self.usable(now_ms);
                        self.records_lease = Some((g.lease, now_ms));
                    }
                    Err(e) => {
                        self.write_at = now_ms.saturating_add(self.tick_ms.max(200));
                        self.refused_answer(e);
                    }
                },
                Write::Batch(n) => match self.etcd.decode_put(status, body) {
                    Ok(revision) => {
                        self.store_revision = self.store_revision.max(revision);
                        self.usable(now_ms);
                        let n = n.min(self.pending.len());
                        self.pending.drain(..n);
                        self.seq = self.seq.wrapping_add(n as u64);
                        self.counters.records_written += n as u64;
                    }
                    Err(e) => {
                        self.write_at = now_ms.saturating_add(self.tick_ms.max(200));
                        if matches!(e, ClusterError::Status { code: Some(5), .. }) {
                            // The records lease is gone: take a new one.
                            self.usable(now_ms);
                            self.records_lease = None;
                        }
                        self.refused_answer(e);
                    }
                },
            }
        } else if self.read_call.is_some_and(|c| c.token == token) {
            self.read_call = None;
            let Some((status, body)) = answer else {
                self.read_failed();
                out.read_done = true;
                return out;
            };
            let limit = match self.careful {
                Careful::No => self.page_limit,
                Careful::OneKey | Careful::KeyOnly => 1,
            };
            match self.etcd.decode_range(limit, status, body) {
                Err(e) => {
                    self.refused_answer(e);
                    match (e, self.careful) {
                        (ClusterError::Malformed(_), Careful::No) => {
                            self.usable(now_ms);
                            self.careful = Careful::OneKey;
                        }
                        (ClusterError::Malformed(_), Careful::OneKey) => {
                            self.usable(now_ms);
                            self.careful = Careful::KeyOnly;
                        }
                        _ => {
                            self.read_failed();
                            out.read_done = true;
                        }
                    }
                }
                Ok(range) => {
                    self.usable(now_ms);
                    self.store_revision = self.store_revision.max(range.revision);
                    if !self.scanning {
                        self.scanning = true;
                        self.scan_revision = range.revision;
                    }
                    let last = range.kvs.last().map(|kv| kv.key.clone());
                    // A read of the key alone: the key whose value could not be read,
                    // refused (counted with its page) and skipped.
                    if self.careful != Careful::KeyOnly {
                        // This sidecar's own records too: while it followed, its reconciler
                        // did not take what its replica answered.
                        for kv in range.kvs {
                            match decode_record(&kv.value, self.key.as_ref()) {
                                Some(obs) => out.records.push(obs),
                                None => self.counters.answers_invalid += 1,
                            }
                        }
                    }
                    self.careful = Careful::No;
                    match last.filter(|_| range.more) {
                        Some(mut key) => {
                            key.push(0);
                            self.cursor = Some(key);
                        }
                        None => {
                            self.cursor = None;
                            self.scanning = false;
                            self.read_from = self.scan_revision.saturating_add(1);
                            self.last_scan_ms = now_ms;
                            self.scan_done_ms = self.scan_started_ms;
                            out.read_done = true;
                        }
                    }
                }
            }
        }
        out
    }

    pub fn role(&self) -> super::election::Role {
        self.election.role()
    }
    /// The last election error, for the fallback's log line.
    pub fn last_error(&self) -> Option<ClusterError> {
        self.election.last_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{BuildStatus, DeliveryOutcome, ParsedWebhook, RepoRef};

    fn key() -> QueueKey {
        QueueKey::derive(b"node-test-secret")
    }

    fn obs(repo_json: Option<String>) -> Observation {
        Observation::for_tests(
            ParsedWebhook {
                repo: RepoRef {
                    id: 42,
                    namespace: "octocat".into(),
                    name: "hello-world".into(),
                },
                number: 7,
                status: BuildStatus::Success,
                version: 3,
                action: "updated".into(),
                repo_json,
                system_json: None,
            },
            DeliveryOutcome::Delivered,
            true,
        )
    }

    fn node() -> Node {
        let cfg = Config::parse(
            br#"{"pipeline_cluster":"p","drone_cluster":"d","drone_token":"t","etcd_cluster":"etcd","webhook_secret":"node-test-secret","signature_mode":"monitor"}"#,
            &|_| None,
        )
        .unwrap();
        Node::new(&cfg, 1, 0)
    }

    #[test]
    fn a_record_is_evidence_only_under_the_webhook_secrets_key() {
        let o = obs(None);
        assert_eq!(
            decode_record(&o.encode(Some(&key())), Some(&key())),
            Some(o.clone())
        );
        let other = QueueKey::derive(b"another secret");
        assert_eq!(decode_record(&o.encode(Some(&other)), Some(&key())), None);
        assert_eq!(decode_record(&o.encode(None), Some(&key())), None);
        assert_eq!(decode_record(&o.encode(Some(&key())), None), None);
        let mut hint = o;
        hint.set_verified(false);
        assert_eq!(
            decode_record(&hint.encode(Some(&key())), Some(&key())),
            None
        );
    }

    #[test]
    fn only_evidence_is_recorded_and_without_the_repository_object() {
        let mut n = node();
        let small = obs(Some("{}".into()));
        n.record(&small, Vouch::Hint);
        n.record(&small, Vouch::Unauthenticated);
        assert_eq!(n.pending(), 0);
        n.record(&small, Vouch::Evidence);
        let big = obs(Some(format!(
            "{{\"x\":\"{}\"}}",
            "a".repeat(limits::MAX_VALUE_BYTES)
        )));
        n.record(&big, Vouch::Evidence);
        let got = n.unwritten();
        assert_eq!(got.len(), 2);
        let slim = small.without_objects(false);
        assert_eq!(got.first(), Some(&slim));
        assert_eq!(got.get(1), Some(&slim));
        assert!(
            n.pending.iter().all(|v| v.len() < 400),
            "a few hundred bytes"
        );
    }

    /// A record as large as etcd's value limit (what [`Node::record`] still writes) is read
    /// back as evidence, by a leader and by a sidecar falling back to its unwritten records;
    /// one byte more is no record (cargo-mutants: `decode_record`'s bound).
    #[test]
    fn a_record_of_exactly_the_value_limit_is_evidence_and_one_byte_more_is_not() {
        let with_system = |pad: usize| {
            let mut w = obs(None).webhook().clone();
            w.system_json = Some(format!("{{\"x\":\"{}\"}}", "a".repeat(pad)));
            Observation::for_tests(w, DeliveryOutcome::Delivered, true)
        };
        let base = with_system(0).encode(Some(&key())).len();
        let pad = limits::MAX_VALUE_BYTES - base;
        let exact = with_system(pad);
        let bytes = exact.encode(Some(&key()));
        assert_eq!(bytes.len(), limits::MAX_VALUE_BYTES);
        assert_eq!(decode_record(&bytes, Some(&key())), Some(exact.clone()));
        let mut n = node();
        n.record(&exact, Vouch::Evidence);
        assert_eq!(n.unwritten(), vec![exact]);
        let over = with_system(pad + 1).encode(Some(&key()));
        assert_eq!(over.len(), limits::MAX_VALUE_BYTES + 1);
        assert_eq!(decode_record(&over, Some(&key())), None);
    }

    /// A leader reads as many records a page as the largest of them fit `max_body_bytes`
    /// (a value in base64, its key and revisions: 5716 bytes each), 1 to 256: a scan of N
    /// records costs N / page reads, not N (cargo-mutants: `page_limit` → 1 still read
    /// everything, a key a request).
    #[test]
    fn a_page_of_records_is_as_many_as_fit_the_body_limit_from_1_to_256() {
        assert_eq!(Node::page_limit(1 << 20), 183);
        assert_eq!(Node::page_limit(10 * 5716), 10);
        assert_eq!(Node::page_limit(10 * 5716 - 1), 9);
        assert_eq!(Node::page_limit(0), 1);
        assert_eq!(Node::page_limit(usize::MAX), 256);
    }

    /// Every etcd request (the election's, a records write, a read) is answered or timed out by
    /// Envoy within a quarter of the lease, whatever `call_timeout_ms` says: one sent to a member
    /// electing a raft leader is retried while the lease lasts, and a record waits no longer
    /// than that for it.
    #[test]
    fn every_etcd_request_times_out_within_a_quarter_of_the_lease() {
        let cfg = Config::parse(
            br#"{"pipeline_cluster":"p","drone_cluster":"d","drone_token":"t","etcd_cluster":"etcd","webhook_secret":"node-test-secret","signature_mode":"monitor","call_timeout_ms":30000,"etcd_lease_ttl_ms":10000}"#,
            &|_| None,
        )
        .unwrap();
        let mut n = Node::new(&cfg, 1, 0);
        n.record(&obs(None), Vouch::Evidence);
        let calls = n.poll(0, false);
        assert_eq!(
            calls.len(),
            2,
            "the election's grant and the records lease's"
        );
        for (slot, call) in &calls {
            assert_eq!(call.timeout_ms, 2500, "{slot:?}");
        }
        // Not answered by twice that: failed, and asked again.
        for (token, (slot, call)) in (1..).zip(&calls) {
            n.sent(*slot, call, token, 0);
        }
        assert!(n.poll(4999, false).is_empty());
        assert_eq!(n.poll(5000, false).len(), 1, "the election retries at once");
    }

    /// A record drops drone's repository object and keeps its system object, which it drops
    /// too only when the record would not fit etcd's value limit otherwise (cargo-mutants:
    /// `>`→`<` dropped the system object from every record that fit).
    #[test]
    fn a_record_keeps_drones_system_object_unless_it_would_not_fit_otherwise() {
        let with_system = |system: String| {
            let mut w = obs(Some(r#"{"id":42}"#.into())).webhook().clone();
            w.system_json = Some(system);
            Observation::for_tests(w, DeliveryOutcome::Delivered, true)
        };
        let mut n = node();
        let small = with_system(r#"{"link":"https://drone.example"}"#.into());
        n.record(&small, Vouch::Evidence);
        let big = with_system(format!(
            "{{\"x\":\"{}\"}}",
            "a".repeat(limits::MAX_VALUE_BYTES)
        ));
        n.record(&big, Vouch::Evidence);
        assert_eq!(
            n.unwritten(),
            vec![small.without_objects(false), big.without_objects(true)]
        );
        assert_eq!(
            n.unwritten()
                .first()
                .and_then(|o| o.webhook().system_json.clone())
                .as_deref(),
            Some(r#"{"link":"https://drone.example"}"#)
        );
    }

    /// A sidecar etcd has not answered yet follows (records only) until one lease TTL after
    /// it started, and falls back to reconciling locally at that very millisecond, counted once
    /// (cargo-mutants: `<`→`<=` in `update_mode` fell back a millisecond later).
    #[test]
    fn a_sidecar_etcd_never_answered_falls_back_one_ttl_after_it_started() {
        let cfg = Config::parse(
            br#"{"pipeline_cluster":"p","drone_cluster":"d","drone_token":"t","etcd_cluster":"etcd","webhook_secret":"node-test-secret","signature_mode":"monitor","etcd_lease_ttl_ms":3000}"#,
            &|_| None,
        )
        .unwrap();
        let mut n = Node::new(&cfg, 1, 1_000);
        assert_eq!(n.update_mode(3_999), (Mode::Follows, None));
        assert_eq!(n.update_mode(4_000), (Mode::Fallback, Some(Mode::Fallback)));
        assert_eq!(n.counters.fallbacks, 1);
        assert_eq!(n.update_mode(4_001), (Mode::Fallback, None));
        assert_eq!(n.counters.fallbacks, 1);
    }

    /// A record that would not fit etcd's value limit even without drone's objects is not
    /// kept, and counted as dropped (cargo-mutants: `records_dropped += 1` → `*= 1`).
    #[test]
    fn a_record_too_large_even_without_drones_objects_is_dropped_and_counted() {
        let mut w = obs(None).webhook().clone();
        w.action = "a".repeat(limits::MAX_VALUE_BYTES);
        let huge = Observation::for_tests(w, DeliveryOutcome::Delivered, true);
        let mut n = node();
        n.record(&huge, Vouch::Evidence);
        assert_eq!(n.pending(), 0);
        assert_eq!(n.counters.records_dropped, 1);
    }

    /// The cluster leader reads records before a tick that decides something (`due`) and on
    /// through a half-done scan (a next page, a page read again key by key); otherwise only a
    /// third of the TTL after its last scan, and only once an answer showed a revision past
    /// that scan's (cargo-mutants: `read_due`'s `||` → `&&` stopped a half-done scan, and
    /// `ttl_ms / 3` → `%` read at every new revision).
    #[test]
    fn a_leader_reads_when_due_or_mid_scan_else_a_third_of_the_ttl_after_its_last_scan() {
        let mut n = node();
        assert!(!n.read_due(true, 0), "only a leader reads");
        n.mode = Mode::Leads;
        n.last_scan_ms = 1_000;
        n.read_from = 6;
        n.store_revision = 5;
        let third = 1_000 + 10_000 / 3;
        assert!(n.read_due(true, 1_001));
        assert!(
            !n.read_due(false, third),
            "nothing written since the last scan"
        );
        n.store_revision = 6;
        assert!(!n.read_due(false, third - 1));
        assert!(n.read_due(false, third));
        n.cursor = Some(b"k\0".to_vec());
        assert!(n.read_due(false, 1_001), "the next page");
        n.cursor = None;
        n.careful = Careful::OneKey;
        assert!(n.read_due(false, 1_001), "the page again, a key at a time");
        n.careful = Careful::KeyOnly;
        assert!(n.read_due(false, 1_001), "the bad key alone");
        n.read_call = Some(InFlight {
            token: 1,
            sent_ms: 1_000,
        });
        assert!(!n.read_due(true, 1_001), "one read at a time");
    }

    /// A sidecar taking the lead of the cluster reads every live record, from revision 0 and
    /// at once, whatever a read answered after it had stopped leading left behind
    /// (cargo-mutants: `==`→`!=` in `update_mode` reset the scan on leaving the lead instead).
    #[test]
    fn a_sidecar_taking_the_lead_reads_every_record_from_revision_zero() {
        let mut n = node();
        let grant = n.election.poll(&Etcd, 0).unwrap();
        assert_eq!(grant.path, "/v3/lease/grant");
        n.election.answer(
            &Etcd,
            0,
            200,
            br#"{"header":{"revision":"1"},"ID":"7","TTL":"10"}"#,
        );
        let campaign = n.election.poll(&Etcd, 0).unwrap();
        assert_eq!(campaign.path, "/v3/kv/txn");
        n.election.answer(
            &Etcd,
            0,
            200,
            br#"{"header":{"revision":"2"},"succeeded":true}"#,
        );
        // A read answered while it followed moved the scan on.
        n.read_from = 9;
        n.cursor = Some(b"k\0".to_vec());
        n.last_scan_ms = 5;
        assert_eq!(n.update_mode(10), (Mode::Leads, Some(Mode::Leads)));
        assert_eq!(
            (n.read_from, n.cursor.clone(), n.last_scan_ms),
            (0, None, 0)
        );
    }

    /// Records go on the current records lease until a build age after it was granted; from
    /// that millisecond on, the next write asks for a new lease first (its TTL is two build
    /// ages: a record written on it outlives a build age) (cargo-mutants: the rotation's
    /// guard → true, and `<`→`<=`).
    #[test]
    fn records_go_on_a_new_lease_from_a_build_age_after_the_last_was_granted() {
        let mut n = node();
        n.record(&obs(None), Vouch::Evidence);
        n.records_lease = Some((7, 1_000));
        let write_path = |n: &mut Node, now: u64| {
            n.poll(now, false)
                .into_iter()
                .find(|(slot, _)| *slot == Slot::Write)
                .and_then(|(_, c)| c.header(":path").map(str::to_string))
        };
        let rotate = 1_000 + n.rotate_ms;
        assert_eq!(
            write_path(&mut n, rotate - 1).as_deref(),
            Some("/v3/kv/txn")
        );
        assert_eq!(
            write_path(&mut n, rotate).as_deref(),
            Some("/v3/lease/grant")
        );
    }

    /// A records write goes at most every `WRITE_EVERY_TICKS` ticks, and a tick that comes a
    /// little early (up to half a tick) still takes it (cargo-mutants: `tick_ms / 2` → `%`).
    #[test]
    fn the_next_records_write_is_taken_by_a_tick_half_a_tick_early() {
        let mut n = node();
        n.record(&obs(None), Vouch::Evidence);
        n.records_lease = Some((7, 0));
        let write = |n: &mut Node, now: u64| {
            n.poll(now, false)
                .into_iter()
                .find(|(slot, _)| *slot == Slot::Write)
                .map(|(_, c)| c)
        };
        let call = write(&mut n, 1_000).unwrap();
        n.sent(Slot::Write, &call, 1, 1_000);
        n.answer(1, Some((200, br#"{"header":{"revision":"3"}}"#)), 1_000);
        assert_eq!(n.pending(), 0);
        n.record(&obs(None), Vouch::Evidence);
        let next = 1_000 + WRITE_EVERY_TICKS * n.tick_ms - n.tick_ms / 2;
        assert!(write(&mut n, next - 1).is_none());
        assert!(write(&mut n, next).is_some());
    }

    /// A request the host refused failed at once: counted as etcd's last failure (a scan
    /// vouches only from `VOUCH_TICKS` after it), and a refused write waits a tick (at least
    /// 200 ms) before it is tried again (cargo-mutants: `refused` → ()).
    #[test]
    fn a_request_the_host_refused_fails_at_once_and_a_refused_write_waits() {
        let mut n = node();
        n.record(&obs(None), Vouch::Evidence);
        n.records_lease = Some((7, 0));
        let writes = |n: &mut Node, now: u64| {
            n.poll(now, false)
                .into_iter()
                .filter(|(slot, _)| *slot == Slot::Write)
                .count()
        };
        assert_eq!(writes(&mut n, 1_000), 1);
        n.refused(Slot::Write, 1_000);
        assert_eq!(n.failed_at(), 1_000);
        let again = 1_000 + n.tick_ms.max(200);
        assert_eq!(writes(&mut n, again - 1), 0);
        assert_eq!(writes(&mut n, again), 1);
    }

    /// A scan vouches from when its first page was sent: later pages, and a page read again
    /// a key at a time, do not move its start (cargo-mutants: `&&`→`||` in `sent`).
    #[test]
    fn a_scan_starts_when_its_first_page_is_sent() {
        let mut n = node();
        n.mode = Mode::Leads;
        let read = n
            .poll(1_000, true)
            .into_iter()
            .find(|(s, _)| *s == Slot::Read);
        let (_, call) = read.unwrap();
        n.sent(Slot::Read, &call, 1, 1_000);
        assert_eq!(n.scan_started_ms, 1_000);
        n.read_call = None;
        n.scanning = true;
        n.sent(Slot::Read, &call, 2, 1_500);
        assert_eq!(n.scan_started_ms, 1_000, "a next page");
        n.read_call = None;
        n.scanning = false;
        n.careful = Careful::OneKey;
        n.sent(Slot::Read, &call, 3, 1_700);
        assert_eq!(n.scan_started_ms, 1_000, "a page read again key by key");
    }

    #[test]
    fn waiting_records_are_bounded_and_the_oldest_dropped_are_counted() {
        let mut n = node();
        let o = obs(None);
        for _ in 0..MAX_PENDING + 5 {
            n.record(&o, Vouch::Evidence);
        }
        assert_eq!(n.pending(), MAX_PENDING);
        assert_eq!(n.counters.records_dropped, 5);
    }

    #[test]
    fn near_misses_of_a_record_decode_as_evidence_within_limits_or_not_at_all() {
        let mut rng = crate::core::backoff::Rng::new(21);
        let seed = obs(Some(r#"{"id":42}"#.into())).encode(Some(&key()));
        for _ in 0..20_000 {
            let mut b = seed.clone();
            crate::core::json::mutate(&mut rng, &mut b, b"\x00\x01\x02\xff{}\"a7");
            if let Some(o) = decode_record(&b, Some(&key())) {
                assert!(o.verified());
                let max = crate::core::limits::MAX_INT;
                let w = o.webhook();
                assert!(w.repo.id <= max && w.number <= max && w.version <= max);
            }
        }
    }
}
