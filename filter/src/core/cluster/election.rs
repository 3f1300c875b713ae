//! The election of one reconciler across the cluster, as a state machine driven by the
//! store's answers and the time it is given: `Candidate` (no lease) → a lease granted →
//! `Follower` (holds a lease, campaigns for the key) → `Leader { lease, until }` → lost; or,
//! the key held by another lease, `Watching { holder }` → the holder's lease gone → `Candidate`.
//!
//! - A lease is granted, then the election key is created bound to it (compare-and-create,
//!   `create_revision == 0`): the one whose create succeeds leads. The key goes with the
//!   lease, so a leader that stops keeping alive frees it within the TTL on its own.
//! - Every lease is kept alive a third of its TTL after the last renewal was *sent*, and is
//!   counted valid until the TTL after that send (`until`): the store started its TTL at
//!   receipt, later, so a leader always gives up before its key can expire and another take it.
//! - A keep-alive answering "gone", or no successful renewal by `until`, gives up leadership
//!   (counted in [`Election::lost`]) and starts over with a new lease.
//! - A candidate that lost the campaign keeps no lease (no keep-alives): it watches the
//!   holder's lease (`time_to_live`, which does not renew it), next when the whole seconds it
//!   had left and `retry_ms` have passed, and campaigns anew (a grant, then the transaction) as
//!   soon as that lease is gone: it takes over within `retry_ms` of the old key's expiry, at
//!   about one request per two thirds of the TTL while the leader lives.
//! - A leader whose renewals went unanswered until `until` stops leading (`Lapsed`) but keeps
//!   renewing the same lease: alive, the key bound to it never expired, and it leads again.
//! - One request in flight at a time; one without an answer after `retry_ms` counts as failed.

use super::{Campaign, ClusterError, ClusterStore, KeepAlive, Request};

/// Where this candidate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No lease: the next step is a grant.
    Candidate,
    /// Holds `lease` (valid until `until`) but not the key: campaigns.
    Follower { lease: u64, until: u64 },
    /// Another lease, `holder`, holds the key: watched, no lease of its own.
    Watching { holder: u64 },
    /// Holds the key through `lease`, valid until `until` (ms, the caller's clock).
    Leader { lease: u64, until: u64 },
    /// Led through `lease` but no renewal answered in time (etcd slow, electing its own
    /// leader): not leading, it keeps renewing `lease`; if etcd says it is alive, the key bound
    /// to it never expired, so no one else led meanwhile, and it leads again.
    Lapsed { lease: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Grant,
    KeepAlive(u64),
    Campaign(u64),
    Watch(u64),
}

/// One candidate's election. `now_ms` is any monotonic clock of the caller's.
#[derive(Clone, Debug)]
pub struct Election {
    key: Vec<u8>,
    value: Vec<u8>,
    ttl_s: u64,
    retry_ms: u64,
    role: Role,
    /// When the current lease's next renewal is due.
    renew_at: u64,
    /// When a follower campaigns next.
    campaign_at: u64,
    /// When a watcher asks for the holder's lease next.
    watch_at: u64,
    /// When a candidate may ask for a grant again (after a failed one).
    grant_at: u64,
    in_flight: Option<(Pending, u64)>,
    lost: u64,
    last_error: Option<ClusterError>,
}

impl Election {
    /// A candidate for `key`, writing `value` (who it is) there when it wins, with leases of
    /// `ttl_s` seconds (at least 2: etcd's minimum) and retries every `retry_ms` (at least 1,
    /// at most a third of the TTL).
    pub fn new(key: &[u8], value: &[u8], ttl_s: u64, retry_ms: u64) -> Self {
        let ttl_s = ttl_s.max(2);
        Self {
            key: key.to_vec(),
            value: value.to_vec(),
            ttl_s,
            retry_ms: retry_ms.clamp(1, ttl_s * 1000 / 3),
            role: Role::Candidate,
            renew_at: 0,
            campaign_at: 0,
            watch_at: 0,
            grant_at: 0,
            in_flight: None,
            lost: 0,
            last_error: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether this candidate leads at `now_ms`: only with a key whose lease is surely alive.
    pub fn is_leader(&self, now_ms: u64) -> bool {
        matches!(self.role, Role::Leader { until, .. } if now_ms < until)
    }

    /// Times leadership was given up (a lease gone or not renewed in time).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The last answer that could not be used, for a log line.
    pub fn last_error(&self) -> Option<ClusterError> {
        self.last_error
    }

    /// When a watcher asks the store next (`None` unless watching).
    pub fn next_watch(&self) -> Option<u64> {
        match self.role {
            Role::Watching { .. } => Some(self.watch_at),
            _ => None,
        }
    }

    /// The lease held, if any.
    pub fn lease(&self) -> Option<u64> {
        match self.role {
            Role::Candidate | Role::Watching { .. } => None,
            Role::Follower { lease, .. } | Role::Leader { lease, .. } | Role::Lapsed { lease } => {
                Some(lease)
            }
        }
    }

    /// Gives up a lease that may have expired by `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        match self.role {
            Role::Leader { lease, until } if now_ms >= until => {
                self.lost += 1;
                self.role = Role::Lapsed { lease };
                self.renew_at = now_ms;
            }
            Role::Follower { until, .. } if now_ms >= until => self.role = Role::Candidate,
            _ => {}
        }
    }

    /// The request to send now, if any. Call on every tick.
    pub fn poll<S: ClusterStore>(&mut self, store: &S, now_ms: u64) -> Option<Request> {
        self.expire(now_ms);
        if let Some((_, sent)) = self.in_flight {
            if now_ms < sent.saturating_add(self.retry_ms) {
                return None;
            }
            self.failed(now_ms);
        }
        let (pending, request) = match self.role {
            Role::Candidate if now_ms >= self.grant_at => (Pending::Grant, store.grant(self.ttl_s)),
            Role::Candidate => return None,
            Role::Watching { holder } if now_ms >= self.watch_at => {
                (Pending::Watch(holder), store.time_to_live(holder))
            }
            Role::Watching { .. } => return None,
            Role::Follower { lease, .. } | Role::Leader { lease, .. } | Role::Lapsed { lease }
                if now_ms >= self.renew_at =>
            {
                (Pending::KeepAlive(lease), store.keep_alive(lease))
            }
            Role::Follower { lease, .. } if now_ms >= self.campaign_at => (
                Pending::Campaign(lease),
                store.campaign(&self.key, &self.value, lease),
            ),
            Role::Follower { .. } | Role::Leader { .. } | Role::Lapsed { .. } => return None,
        };
        self.in_flight = Some((pending, now_ms));
        Some(request)
    }

    /// A request got no usable answer (refused, timed out, unreachable store).
    pub fn failed(&mut self, now_ms: u64) {
        let Some((pending, _)) = self.in_flight.take() else {
            return;
        };
        let retry = now_ms.saturating_add(self.retry_ms);
        match pending {
            Pending::Grant => self.grant_at = retry,
            // Renewal is retried sooner than a campaign: there is a TTL to beat.
            Pending::KeepAlive(_) => self.renew_at = now_ms.saturating_add(self.retry_ms / 3),
            Pending::Campaign(_) => self.campaign_at = retry,
            Pending::Watch(_) => self.watch_at = retry,
        }
    }

    /// The answer (HTTP status and body) to the request [`Election::poll`] returned last.
    pub fn answer<S: ClusterStore>(&mut self, store: &S, now_ms: u64, status: u32, body: &[u8]) {
        let Some((pending, sent)) = self.in_flight else {
            return;
        };
        let outcome = match pending {
            Pending::Grant => store.decode_grant(status, body).map(|g| {
                self.role = Role::Follower {
                    lease: g.lease,
                    until: sent.saturating_add(g.ttl_s.saturating_mul(1000)),
                };
                self.renew_at = sent.saturating_add(g.ttl_s.saturating_mul(1000) / 3);
                self.campaign_at = now_ms;
            }),
            Pending::KeepAlive(lease) => store.decode_keep_alive(status, body).map(|k| {
                if self.lease() != Some(lease) {
                    return;
                }
                match k {
                    KeepAlive::Alive { ttl_s } => {
                        let until = sent.saturating_add(ttl_s.saturating_mul(1000));
                        self.renew_at = sent.saturating_add(ttl_s.saturating_mul(1000) / 3);
                        match &mut self.role {
                            Role::Leader { until: u, .. } | Role::Follower { until: u, .. } => {
                                *u = until
                            }
                            Role::Lapsed { lease } => {
                                self.role = Role::Leader {
                                    lease: *lease,
                                    until,
                                }
                            }
                            Role::Candidate | Role::Watching { .. } => {}
                        }
                    }
                    KeepAlive::Gone => self.give_up(now_ms),
                }
            }),
            Pending::Watch(holder) => store.decode_time_to_live(status, body).map(|k| {
                if self.role != (Role::Watching { holder }) {
                    return;
                }
                match k {
                    // Next when the seconds it had left have passed (etcd rounds them down,
                    // so `retry_ms` later): at most `retry_ms` after it expires.
                    KeepAlive::Alive { ttl_s } => {
                        let left = ttl_s.saturating_mul(1000).saturating_add(self.retry_ms);
                        self.watch_at = now_ms.saturating_add(left);
                    }
                    // The key went with it: campaign now.
                    KeepAlive::Gone => {
                        self.role = Role::Candidate;
                        self.grant_at = now_ms;
                    }
                }
            }),
            Pending::Campaign(lease) => store.decode_campaign(lease, status, body).map(|c| {
                if let Role::Follower { lease: held, until } = self.role {
                    if held == lease {
                        match c {
                            Campaign::Won => self.role = Role::Leader { lease, until },
                            // Our lease is left to expire; the holder's is watched. A key
                            // with no lease (never expires) is campaigned for once a TTL.
                            Campaign::Held { lease: 0 } => {
                                self.role = Role::Candidate;
                                self.grant_at =
                                    now_ms.saturating_add(self.ttl_s.saturating_mul(1000));
                            }
                            Campaign::Held { lease: holder } => {
                                self.role = Role::Watching { holder };
                                self.watch_at = now_ms;
                            }
                        }
                    }
                }
            }),
        };
        match outcome {
            Ok(()) => {
                self.in_flight = None;
                self.last_error = None;
                self.expire(now_ms);
            }
            // A campaign refused because the lease is gone (etcd: not found) starts over.
            Err(ClusterError::Status { code: Some(5), .. })
                if matches!(pending, Pending::Campaign(_)) =>
            {
                self.in_flight = None;
                self.last_error = outcome.err();
                self.give_up(now_ms);
            }
            Err(e) => {
                self.last_error = Some(e);
                self.failed(now_ms);
            }
        }
    }

    fn give_up(&mut self, now_ms: u64) {
        if matches!(self.role, Role::Leader { .. }) {
            self.lost += 1;
        }
        self.role = Role::Candidate;
        self.grant_at = now_ms;
    }
}
