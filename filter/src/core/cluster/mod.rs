//! Cluster mode (issue 21, `etcd_cluster`): one reconciler across the sidecars of a pipeline's
//! replicas, elected in a store they share. The leader's turn ([`super::turn`]) drives a
//! [`node::Node`] when the plugin configures an `etcd_cluster`; the shell sends its requests
//! and hands back the answers, as for drone's.
//!
//! Sans-IO like the rest of the core: a backend ([`ClusterStore`]) builds the HTTP requests
//! and decodes their answers, the [`election::Election`] decides which request is next from
//! the answers and the time it is given. etcd's v3 JSON gateway ([`etcd::Etcd`]) comes first;
//! a backend on Kubernetes' own `Lease` objects can follow behind the same trait.
//! With the `testing` feature (tests only, never in the shipped module): `memory::MemoryEtcd`,
//! an in-memory model of etcd's lease, transaction and revision rules answering the same JSON,
//! and `scenarios`, the election scenarios that run against both the model and a real etcd
//! cluster, so the model is pinned to the real thing.

pub mod election;
pub mod etcd;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod node;
#[cfg(any(test, feature = "testing"))]
pub mod scenarios;

/// One HTTP request to the cluster store: the shell sends it with `dispatch_http_call`
/// (`:method`, `:path`, a JSON body) to the store's Envoy cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: String,
}

/// A lease the store granted: its id (never 0) and TTL in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub lease: u64,
    pub ttl_s: u64,
}

/// What a keep-alive found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// The lease lives on for `ttl_s` seconds from the store's receipt of the request.
    Alive { ttl_s: u64 },
    /// The lease is unknown or expired: whatever it held is gone.
    Gone,
}

/// The answer to a compare-and-create of the election key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Campaign {
    /// The key is ours: created now, or already bound to our lease (a retried request).
    Won,
    /// Another lease holds the key (0: a key with no lease, which never expires by itself).
    Held { lease: u64 },
}

/// One key-value pair of a range read, held to [`etcd::limits`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    /// 0 when the key has no lease.
    pub lease: u64,
}

/// A range read: the pairs changed at or after the revision asked for, and the store's
/// revision when it answered (the next incremental read asks from `revision + 1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub revision: u64,
    pub kvs: Vec<Kv>,
    /// More pairs matched than the limit let through.
    pub more: bool,
}

/// Why an answer of the store is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterError {
    /// An HTTP status other than 200, with the store's error code when its body had one
    /// (etcd: a gRPC status code, 5 = not found, e.g. the lease of a put).
    Status { status: u32, code: Option<u64> },
    /// Not the JSON the store sends, or a field outside the input limits: named.
    Malformed(&'static str),
}

/// A cluster store's protocol as pure request builders and answer decoders. Every decoder
/// holds the answer to input limits and never panics: what the store returns is input like
/// drone's answers, not authority.
pub trait ClusterStore {
    /// Grants a lease of `ttl_s` seconds.
    fn grant(&self, ttl_s: u64) -> Request;
    fn decode_grant(&self, status: u32, body: &[u8]) -> Result<Grant, ClusterError>;

    /// Renews `lease` for its TTL.
    fn keep_alive(&self, lease: u64) -> Request;
    fn decode_keep_alive(&self, status: u32, body: &[u8]) -> Result<KeepAlive, ClusterError>;

    /// How long `lease` (another sidecar's) has left, without renewing it: what a follower
    /// watches instead of campaigning, so it campaigns only once the leader's lease is gone.
    fn time_to_live(&self, lease: u64) -> Request;
    /// [`KeepAlive::Alive`] with the whole seconds left (0: under one), or [`KeepAlive::Gone`].
    fn decode_time_to_live(&self, status: u32, body: &[u8]) -> Result<KeepAlive, ClusterError>;

    /// Creates `key` = `value` bound to `lease` if no such key exists; otherwise reads who
    /// holds it.
    fn campaign(&self, key: &[u8], value: &[u8], lease: u64) -> Request;
    /// `lease` is the one the campaign was made with: a key already bound to it is [`Campaign::Won`].
    fn decode_campaign(
        &self,
        lease: u64,
        status: u32,
        body: &[u8],
    ) -> Result<Campaign, ClusterError>;

    /// Reads at most `limit` pairs under `prefix` changed at or after `min_revision`.
    fn range_since(&self, prefix: &[u8], min_revision: u64, limit: usize) -> Request {
        self.range_from(prefix, prefix, min_revision, limit)
    }
    /// [`ClusterStore::range_since`] from key `from` on (a page after the first: the last key
    /// read, plus a zero byte), in key order.
    fn range_from(&self, prefix: &[u8], from: &[u8], min_revision: u64, limit: usize) -> Request;
    /// [`ClusterStore::range_from`] of the keys alone (no values), decoded by
    /// [`ClusterStore::decode_range`].
    fn range_keys_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        min_revision: u64,
        limit: usize,
    ) -> Request;
    fn decode_range(&self, limit: usize, status: u32, body: &[u8]) -> Result<Range, ClusterError>;

    /// Writes `key` = `value` bound to `lease` (0: no lease).
    fn put(&self, key: &[u8], value: &[u8], lease: u64) -> Request;
    /// The store's revision after the write.
    fn decode_put(&self, status: u32, body: &[u8]) -> Result<u64, ClusterError>;

    /// Writes every pair, bound to `lease`, in one request (one revision); decoded by
    /// [`ClusterStore::decode_put`].
    fn put_all(&self, pairs: &[(Vec<u8>, Vec<u8>)], lease: u64) -> Request;
}
