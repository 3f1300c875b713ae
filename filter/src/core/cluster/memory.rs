//! `MemoryEtcd`: an in-memory model of etcd's lease, transaction and revision rules that
//! answers the same JSON as etcd 3.4's gateway, for native tests of the cluster protocol
//! (as [`crate::core::store::MemoryStore`] models Envoy's shared data). [`super::scenarios`]
//! runs against it and against a real etcd cluster, so what it answers is pinned.
//!
//! The rules kept: one global revision, starting at 1, raised by one for every write (a put,
//! a transaction that writes, the expiry of a lease that held keys); a key's
//! `create_revision`, `mod_revision` and `version`; a put bound to an unknown lease fails
//! with code 5 (HTTP 404) and writes nothing; a lease expires `TTL` after its grant or last
//! keep-alive, with every key bound to it; a keep-alive of an unknown lease answers without
//! `TTL`; a range's `count` is every key of the range, before `min_mod_revision` filters
//! them; zero values are left out of answers. Not modelled: auth, watches, compaction,
//! members (the model is one always-available store).

use crate::core::b64;
use crate::core::json::{decode_string, decode_u64, Scanner};
use crate::core::object::RawObject;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
struct Entry {
    value: Vec<u8>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    lease: u64,
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    ttl_s: u64,
    expires_at: u64,
}

/// etcd in memory. `now_ms` is passed to every request; leases expire by it.
#[derive(Clone, Debug)]
pub struct MemoryEtcd {
    revision: u64,
    kvs: BTreeMap<Vec<u8>, Entry>,
    leases: BTreeMap<u64, Lease>,
    next_lease: u64,
}

impl Default for MemoryEtcd {
    fn default() -> Self {
        Self::new()
    }
}

type Answer = (u32, String);

fn error(status: u32, code: u32, message: &str) -> Answer {
    (
        status,
        format!("{{\"error\":\"{message}\",\"message\":\"{message}\",\"code\":{code}}}"),
    )
}

fn bad_request() -> Answer {
    error(400, 3, "malformed request")
}

fn lease_not_found() -> Answer {
    error(404, 5, "etcdserver: requested lease not found")
}

/// An int64 field: absent is 0; etcd's gateway takes a string or a number.
fn int(obj: &RawObject<'_>, key: &str) -> Option<u64> {
    match obj.get(key, "int").ok()? {
        None => Some(0),
        Some(raw) => match decode_string(raw) {
            Some(s) => decode_u64(&s),
            None => decode_u64(raw),
        },
    }
}

fn bytes(obj: &RawObject<'_>, key: &str) -> Option<Vec<u8>> {
    match obj.get(key, "bytes").ok()? {
        None => Some(Vec::new()),
        Some(raw) => b64::decode(&decode_string(raw)?),
    }
}

fn header(revision: u64) -> String {
    format!("{{\"cluster_id\":\"1\",\"member_id\":\"1\",\"revision\":\"{revision}\",\"raft_term\":\"2\"}}")
}

fn opt(name: &str, n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(",\"{name}\":\"{n}\"")
    }
}

struct RangeOp {
    key: Vec<u8>,
    end: Vec<u8>,
    min_mod_revision: u64,
    limit: u64,
    keys_only: bool,
}

impl RangeOp {
    fn parse(obj: &RawObject<'_>) -> Option<Self> {
        Some(Self {
            key: bytes(obj, "key")?,
            end: bytes(obj, "range_end")?,
            min_mod_revision: int(obj, "min_mod_revision")?,
            limit: int(obj, "limit")?,
            keys_only: obj.get("keys_only", "keys_only").ok()? == Some("true"),
        })
    }
}

struct PutOp {
    key: Vec<u8>,
    value: Vec<u8>,
    lease: u64,
}

impl PutOp {
    fn parse(obj: &RawObject<'_>) -> Option<Self> {
        let key = bytes(obj, "key")?;
        (!key.is_empty()).then_some(())?;
        Some(Self {
            key,
            value: bytes(obj, "value")?,
            lease: int(obj, "lease")?,
        })
    }
}

enum Op {
    Put(PutOp),
    Range(RangeOp),
}

fn ops(raw: Option<&str>) -> Option<Vec<Op>> {
    let Some(raw) = raw else {
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    for item in Scanner::array_items(raw).ok()? {
        let obj = RawObject::parse_nested(item).ok()?;
        if let Some(put) = obj.get("request_put", "put").ok()? {
            out.push(Op::Put(PutOp::parse(&RawObject::parse_nested(put).ok()?)?));
        } else if let Some(range) = obj.get("request_range", "range").ok()? {
            out.push(Op::Range(RangeOp::parse(
                &RawObject::parse_nested(range).ok()?,
            )?));
        } else {
            return None;
        }
    }
    Some(out)
}

impl MemoryEtcd {
    pub fn new() -> Self {
        Self {
            revision: 1,
            kvs: BTreeMap::new(),
            leases: BTreeMap::new(),
            // etcd's ids look random; the model's are large too, so nothing assumes small ones.
            next_lease: 0x2000_0000_0000_0001,
        }
    }

    /// The store's revision now.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The value under `key` at `now_ms`, if any.
    pub fn value(&mut self, now_ms: u64, key: &[u8]) -> Option<Vec<u8>> {
        self.expire(now_ms);
        self.kvs.get(key).map(|e| e.value.clone())
    }

    fn expire(&mut self, now_ms: u64) {
        let gone: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| now_ms >= l.expires_at)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.leases.remove(&id);
            let before = self.kvs.len();
            self.kvs.retain(|_, e| e.lease != id);
            if self.kvs.len() != before {
                self.revision += 1;
            }
        }
    }

    /// Answers one gateway request (`POST path` with `body`) at `now_ms`: HTTP status and JSON.
    pub fn handle(&mut self, now_ms: u64, path: &str, body: &[u8]) -> (u32, String) {
        self.expire(now_ms);
        let Some(obj) = std::str::from_utf8(body)
            .ok()
            .and_then(|t| RawObject::parse(t).ok())
        else {
            return bad_request();
        };
        let answer = match path {
            "/v3/lease/grant" => self.grant(now_ms, &obj),
            "/v3/lease/keepalive" => self.keep_alive(now_ms, &obj),
            "/v3/lease/timetolive" => self.time_to_live(now_ms, &obj),
            "/v3/kv/put" => PutOp::parse(&obj).map(|p| self.put_answer(&p)),
            "/v3/kv/range" => RangeOp::parse(&obj)
                .map(|r| {
                    let inner = self.range(&r);
                    format!("{{\"header\":{}{inner}}}", header(self.revision))
                })
                .map(|s| (200, s)),
            "/v3/kv/txn" => self.txn(&obj),
            _ => return error(404, 5, "Not Found"),
        };
        answer.unwrap_or_else(bad_request)
    }

    fn grant(&mut self, now_ms: u64, obj: &RawObject<'_>) -> Option<Answer> {
        // etcd raises a TTL below its minimum (1.5 s with its default timing) to 2.
        let ttl_s = int(obj, "TTL")?.max(2);
        let id = self.next_lease;
        self.next_lease += 1;
        self.leases.insert(
            id,
            Lease {
                ttl_s,
                expires_at: now_ms + ttl_s * 1000,
            },
        );
        Some((
            200,
            format!(
                "{{\"header\":{},\"ID\":\"{id}\",\"TTL\":\"{ttl_s}\"}}",
                header(self.revision)
            ),
        ))
    }

    /// etcd 3.4: the whole seconds left (left out when 0) and the granted TTL, or `"-1"` for
    /// a lease unknown or expired; the lease is not renewed.
    fn time_to_live(&mut self, now_ms: u64, obj: &RawObject<'_>) -> Option<Answer> {
        let id = int(obj, "ID")?;
        let ttl = match self.leases.get(&id) {
            Some(l) => {
                let left = l.expires_at.saturating_sub(now_ms) / 1000;
                format!("{}{}", opt("TTL", left), opt("grantedTTL", l.ttl_s))
            }
            None => ",\"TTL\":\"-1\"".to_string(),
        };
        Some((
            200,
            format!(
                "{{\"header\":{}{}{ttl}}}",
                header(self.revision),
                opt("ID", id)
            ),
        ))
    }

    fn keep_alive(&mut self, now_ms: u64, obj: &RawObject<'_>) -> Option<Answer> {
        let id = int(obj, "ID")?;
        let ttl = match self.leases.get_mut(&id) {
            Some(l) => {
                l.expires_at = now_ms + l.ttl_s * 1000;
                opt("TTL", l.ttl_s)
            }
            None => String::new(),
        };
        Some((
            200,
            format!(
                "{{\"result\":{{\"header\":{},\"ID\":\"{id}\"{ttl}}}}}\n",
                header(self.revision)
            ),
        ))
    }

    fn put_answer(&mut self, put: &PutOp) -> Answer {
        if put.lease != 0 && !self.leases.contains_key(&put.lease) {
            return lease_not_found();
        }
        self.revision += 1;
        self.write(put);
        (200, format!("{{\"header\":{}}}", header(self.revision)))
    }

    /// Writes at the current revision (the caller raised it).
    fn write(&mut self, put: &PutOp) {
        let revision = self.revision;
        let entry = self.kvs.entry(put.key.clone()).or_insert(Entry {
            value: Vec::new(),
            create_revision: revision,
            mod_revision: revision,
            version: 0,
            lease: 0,
        });
        entry.value = put.value.clone();
        entry.mod_revision = revision;
        entry.version += 1;
        entry.lease = put.lease;
    }

    /// A range's members after the header: `,"kvs":[…],"count":"N"` and `,"more":true`.
    fn range(&self, r: &RangeOp) -> String {
        let in_range: Vec<(&Vec<u8>, &Entry)> = self
            .kvs
            .iter()
            .filter(|(k, _)| {
                if r.end.is_empty() {
                    **k == r.key
                } else if r.end == [0] {
                    k.as_slice() >= r.key.as_slice()
                } else {
                    k.as_slice() >= r.key.as_slice() && k.as_slice() < r.end.as_slice()
                }
            })
            .collect();
        // etcd counts every key of the range, before `min_mod_revision` filters them out.
        let count = in_range.len() as u64;
        let matches: Vec<(&Vec<u8>, &Entry)> = in_range
            .into_iter()
            .filter(|(_, e)| e.mod_revision >= r.min_mod_revision)
            .collect();
        let shown = if r.limit == 0 {
            matches.len()
        } else {
            matches.len().min(r.limit as usize)
        };
        let kvs: Vec<String> = matches
            .iter()
            .take(shown)
            .map(|(k, e)| {
                let value = if e.value.is_empty() || r.keys_only {
                    String::new()
                } else {
                    format!(",\"value\":\"{}\"", b64::encode(&e.value))
                };
                format!(
                    "{{\"key\":\"{}\",\"create_revision\":\"{}\",\"mod_revision\":\"{}\",\"version\":\"{}\"{value}{}}}",
                    b64::encode(k),
                    e.create_revision,
                    e.mod_revision,
                    e.version,
                    opt("lease", e.lease)
                )
            })
            .collect();
        let mut out = String::new();
        if !kvs.is_empty() {
            out.push_str(&format!(",\"kvs\":[{}]", kvs.join(",")));
        }
        if shown < matches.len() {
            out.push_str(",\"more\":true");
        }
        out.push_str(&opt("count", count));
        out
    }

    fn compare(&self, obj: &RawObject<'_>) -> Option<bool> {
        let key = bytes(obj, "key")?;
        let target = obj.get("target", "target").ok()?.and_then(decode_string);
        let entry = self.kvs.get(&key);
        let equal = match target.as_deref() {
            Some("CREATE") => {
                entry.map_or(0, |e| e.create_revision) == int(obj, "create_revision")?
            }
            Some("MOD") => entry.map_or(0, |e| e.mod_revision) == int(obj, "mod_revision")?,
            Some("VERSION") | None => entry.map_or(0, |e| e.version) == int(obj, "version")?,
            Some("VALUE") => entry.map(|e| e.value.clone()) == Some(bytes(obj, "value")?),
            Some(_) => return None,
        };
        match obj
            .get("result", "result")
            .ok()?
            .and_then(decode_string)
            .as_deref()
        {
            None | Some("EQUAL") => Some(equal),
            Some("NOT_EQUAL") => Some(!equal),
            Some(_) => None,
        }
    }

    fn txn(&mut self, obj: &RawObject<'_>) -> Option<Answer> {
        let mut ok = true;
        if let Some(raw) = obj.get("compare", "compare").ok()? {
            for item in Scanner::array_items(raw).ok()? {
                ok &= self.compare(&RawObject::parse_nested(item).ok()?)?;
            }
        }
        let success = ops(obj.get("success", "success").ok()?)?;
        let failure = ops(obj.get("failure", "failure").ok()?)?;
        let chosen = if ok { success } else { failure };
        let writes = chosen.iter().any(|op| matches!(op, Op::Put(_)));
        for op in &chosen {
            if let Op::Put(p) = op {
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                    return Some(lease_not_found());
                }
            }
        }
        if writes {
            self.revision += 1;
        }
        let mut responses = Vec::new();
        for op in &chosen {
            responses.push(match op {
                Op::Put(p) => {
                    self.write(p);
                    format!(
                        "{{\"response_put\":{{\"header\":{{\"revision\":\"{}\"}}}}}}",
                        self.revision
                    )
                }
                Op::Range(r) => format!(
                    "{{\"response_range\":{{\"header\":{{\"revision\":\"{}\"}}{}}}}}",
                    self.revision,
                    self.range(r)
                ),
            });
        }
        let succeeded = if ok { ",\"succeeded\":true" } else { "" };
        let responses = if responses.is_empty() {
            String::new()
        } else {
            format!(",\"responses\":[{}]", responses.join(","))
        };
        Some((
            200,
            format!(
                "{{\"header\":{}{succeeded}{responses}}}",
                header(self.revision)
            ),
        ))
    }
}
