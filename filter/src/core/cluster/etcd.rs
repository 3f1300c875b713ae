//! etcd v3's JSON gateway (3.4: paths under `/v3/`) as pure request builders and answer
//! decoders, checked against Debian's `etcd-server` 3.4: every request is a `POST` of a JSON
//! body; keys and values are base64 strings; 64-bit integers (ids, revisions, TTLs) are JSON
//! strings; zero values (a `false`, a 0, an empty list) are left out of every answer; an
//! error is a non-200 status with `{"error":…,"code":N,"message":…}`, N a gRPC status code.

use super::{Campaign, ClusterError, ClusterStore, Grant, KeepAlive, Kv, Range, Request};
use crate::core::b64;
use crate::core::json::{decode_string, decode_u64, Scanner};
use crate::core::object::RawObject;

/// What an answer of etcd may hold before it is refused: etcd itself could hold more, but
/// nothing status-sync writes comes near these.
pub mod limits {
    /// A whole answer (etcd's own request limit is 1.5 MiB).
    pub const MAX_ANSWER_BYTES: usize = 2 << 20;
    /// A key, decoded.
    pub const MAX_KEY_BYTES: usize = 1024;
    /// A value, decoded.
    pub const MAX_VALUE_BYTES: usize = 4096;
    /// A lease's TTL in seconds (a year; etcd allows more, nothing here asks for it).
    pub const MAX_TTL_S: u64 = 365 * 24 * 3600;
    /// ids and revisions are etcd's int64s, never negative.
    pub const MAX_INT64: u64 = i64::MAX as u64;
    /// Pairs one range may ask for (and so return).
    pub const MAX_RANGE_LIMIT: usize = 1000;
}

/// etcd's JSON gateway. Stateless: requests carry everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Etcd;

/// The request a prefix read needs as its `range_end`: the prefix with its last byte plus one,
/// trailing `0xff` bytes dropped first; `[0]` (every key) when nothing is left, as etcd's
/// clients do.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn post(path: &str, body: String) -> Request {
    Request {
        method: "POST",
        path: path.to_string(),
        body,
    }
}

fn put_op(key: &[u8], value: &[u8], lease: u64) -> String {
    let lease = if lease == 0 {
        String::new()
    } else {
        format!(",\"lease\":\"{lease}\"")
    };
    format!(
        "{{\"key\":\"{}\",\"value\":\"{}\"{lease}}}",
        b64::encode(key),
        b64::encode(value)
    )
}

const MALFORMED_JSON: ClusterError = ClusterError::Malformed("json");

/// The answer's top-level object, once the status is 200 and the size within limits.
fn answer(status: u32, body: &[u8]) -> Result<RawObject<'_>, ClusterError> {
    if body.len() > limits::MAX_ANSWER_BYTES {
        return Err(ClusterError::Malformed("size"));
    }
    let text = std::str::from_utf8(body).map_err(|_| MALFORMED_JSON)?;
    if status != 200 {
        let code = RawObject::parse(text)
            .ok()
            .and_then(|o| o.get("code", "code").ok().flatten())
            .and_then(decode_u64);
        return Err(ClusterError::Status { status, code });
    }
    let obj = RawObject::parse(text).map_err(|_| MALFORMED_JSON)?;
    if obj
        .get("error", "error")
        .map_err(|_| MALFORMED_JSON)?
        .is_some()
    {
        // The gateway reports a failure inside a 200 this way (a stream's error).
        return Err(ClusterError::Status { status, code: None });
    }
    Ok(obj)
}

fn member<'a>(
    obj: &RawObject<'a>,
    key: &str,
    name: &'static str,
) -> Result<Option<&'a str>, ClusterError> {
    obj.get(key, name)
        .map_err(|_| ClusterError::Malformed(name))
}

fn nested<'a>(
    obj: &RawObject<'a>,
    key: &str,
    name: &'static str,
) -> Result<Option<RawObject<'a>>, ClusterError> {
    match member(obj, key, name)? {
        None => Ok(None),
        Some(raw) => RawObject::parse_nested(raw)
            .map(Some)
            .map_err(|_| ClusterError::Malformed(name)),
    }
}

/// An int64 etcd sends as a JSON string of digits: 0 when absent (etcd leaves zeros out),
/// else canonical digits within [`limits::MAX_INT64`].
fn int64(obj: &RawObject<'_>, key: &str, name: &'static str) -> Result<u64, ClusterError> {
    let Some(raw) = member(obj, key, name)? else {
        return Ok(0);
    };
    let text = decode_string(raw).ok_or(ClusterError::Malformed(name))?;
    decode_u64(&text)
        .filter(|n| *n <= limits::MAX_INT64)
        .ok_or(ClusterError::Malformed(name))
}

/// A boolean etcd leaves out when false.
fn flag(obj: &RawObject<'_>, key: &str, name: &'static str) -> Result<bool, ClusterError> {
    match member(obj, key, name)? {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ClusterError::Malformed(name)),
    }
}

/// The store's revision from the answer's `header` (required, positive: etcd starts at 1).
fn header_revision(obj: &RawObject<'_>) -> Result<u64, ClusterError> {
    let header = nested(obj, "header", "header")?.ok_or(ClusterError::Malformed("header"))?;
    match int64(&header, "revision", "header.revision")? {
        0 => Err(ClusterError::Malformed("header.revision")),
        r => Ok(r),
    }
}

fn bytes(
    obj: &RawObject<'_>,
    key: &str,
    name: &'static str,
    max: usize,
) -> Result<Vec<u8>, ClusterError> {
    let Some(raw) = member(obj, key, name)? else {
        return Ok(Vec::new());
    };
    // Refuse an oversized text before decoding it: the base64 of `max` bytes is
    // 4 * ceil(max / 3) characters, and the raw string has its two quotes. etcd escapes none of
    // base64's characters, so a text longer than that (escapes included) is not etcd's.
    if raw.len() > 4 * max.div_ceil(3) + 2 {
        return Err(ClusterError::Malformed(name));
    }
    let text = decode_string(raw).ok_or(ClusterError::Malformed(name))?;
    b64::decode(&text)
        .filter(|b| b.len() <= max)
        .ok_or(ClusterError::Malformed(name))
}

fn ttl(obj: &RawObject<'_>) -> Result<u64, ClusterError> {
    let ttl = int64(obj, "TTL", "TTL")?;
    if ttl > limits::MAX_TTL_S {
        return Err(ClusterError::Malformed("TTL"));
    }
    Ok(ttl)
}

/// The pairs of a range answer (`kvs`), at most `limit`, none changed after `revision`.
fn kvs(obj: &RawObject<'_>, limit: usize, revision: u64) -> Result<Vec<Kv>, ClusterError> {
    let Some(raw) = member(obj, "kvs", "kvs")? else {
        return Ok(Vec::new());
    };
    let items = Scanner::array_items(raw).map_err(|_| ClusterError::Malformed("kvs"))?;
    if items.len() > limit {
        return Err(ClusterError::Malformed("kvs.count"));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let kv = RawObject::parse_nested(item).map_err(|_| ClusterError::Malformed("kv"))?;
        let key = bytes(&kv, "key", "kv.key", limits::MAX_KEY_BYTES)?;
        if key.is_empty() {
            return Err(ClusterError::Malformed("kv.key"));
        }
        let create_revision = int64(&kv, "create_revision", "kv.create_revision")?;
        let mod_revision = int64(&kv, "mod_revision", "kv.mod_revision")?;
        if create_revision == 0 || mod_revision < create_revision || mod_revision > revision {
            return Err(ClusterError::Malformed("kv.mod_revision"));
        }
        out.push(Kv {
            key,
            value: bytes(&kv, "value", "kv.value", limits::MAX_VALUE_BYTES)?,
            create_revision,
            mod_revision,
            lease: int64(&kv, "lease", "kv.lease")?,
        });
    }
    Ok(out)
}

/// The store's revision an election answer carries (`header`, or a keep-alive's
/// `result.header`), if it is a usable one: how a leader knows, without reading, whether
/// anything was written since its last records scan.
pub fn answer_revision(status: u32, body: &[u8]) -> Option<u64> {
    let obj = answer(status, body).ok()?;
    match nested(&obj, "result", "result").ok()? {
        Some(result) => header_revision(&result).ok(),
        None => header_revision(&obj).ok(),
    }
}

impl ClusterStore for Etcd {
    fn grant(&self, ttl_s: u64) -> Request {
        post("/v3/lease/grant", format!("{{\"TTL\":\"{ttl_s}\"}}"))
    }

    fn decode_grant(&self, status: u32, body: &[u8]) -> Result<Grant, ClusterError> {
        let obj = answer(status, body)?;
        let lease = int64(&obj, "ID", "ID")?;
        let ttl_s = ttl(&obj)?;
        if lease == 0 || ttl_s == 0 {
            return Err(ClusterError::Malformed("grant"));
        }
        Ok(Grant { lease, ttl_s })
    }

    fn keep_alive(&self, lease: u64) -> Request {
        post("/v3/lease/keepalive", format!("{{\"ID\":\"{lease}\"}}"))
    }

    fn decode_keep_alive(&self, status: u32, body: &[u8]) -> Result<KeepAlive, ClusterError> {
        let obj = answer(status, body)?;
        let result = nested(&obj, "result", "result")?.ok_or(ClusterError::Malformed("result"))?;
        // An unknown or expired lease answers with no TTL (a zero, left out).
        Ok(match ttl(&result)? {
            0 => KeepAlive::Gone,
            ttl_s => KeepAlive::Alive { ttl_s },
        })
    }

    fn time_to_live(&self, lease: u64) -> Request {
        post("/v3/lease/timetolive", format!("{{\"ID\":\"{lease}\"}}"))
    }

    fn decode_time_to_live(&self, status: u32, body: &[u8]) -> Result<KeepAlive, ClusterError> {
        let obj = answer(status, body)?;
        // etcd 3.4: `"TTL":"-1"` for a lease unknown or expired; the whole seconds left
        // otherwise, left out when 0 (under a second).
        if member(&obj, "TTL", "TTL")?
            .and_then(decode_string)
            .as_deref()
            == Some("-1")
        {
            return Ok(KeepAlive::Gone);
        }
        Ok(KeepAlive::Alive { ttl_s: ttl(&obj)? })
    }

    fn campaign(&self, key: &[u8], value: &[u8], lease: u64) -> Request {
        let key64 = b64::encode(key);
        post(
            "/v3/kv/txn",
            format!(
                "{{\"compare\":[{{\"key\":\"{key64}\",\"target\":\"CREATE\",\"create_revision\":\"0\"}}],\
                 \"success\":[{{\"request_put\":{}}}],\
                 \"failure\":[{{\"request_range\":{{\"key\":\"{key64}\"}}}}]}}",
                put_op(key, value, lease)
            ),
        )
    }

    fn decode_campaign(
        &self,
        lease: u64,
        status: u32,
        body: &[u8],
    ) -> Result<Campaign, ClusterError> {
        let obj = answer(status, body)?;
        let revision = header_revision(&obj)?;
        if flag(&obj, "succeeded", "succeeded")? {
            return Ok(Campaign::Won);
        }
        // The failure branch read the key: one response, a range of one pair.
        let raw =
            member(&obj, "responses", "responses")?.ok_or(ClusterError::Malformed("responses"))?;
        let items = Scanner::array_items(raw).map_err(|_| ClusterError::Malformed("responses"))?;
        let [only] = items.as_slice() else {
            return Err(ClusterError::Malformed("responses"));
        };
        let response =
            RawObject::parse_nested(only).map_err(|_| ClusterError::Malformed("responses"))?;
        let range = nested(&response, "response_range", "response_range")?
            .ok_or(ClusterError::Malformed("response_range"))?;
        let found = kvs(&range, 1, revision)?;
        let [holder] = found.as_slice() else {
            return Err(ClusterError::Malformed("response_range.kvs"));
        };
        Ok(if lease != 0 && holder.lease == lease {
            Campaign::Won
        } else {
            Campaign::Held {
                lease: holder.lease,
            }
        })
    }

    fn range_keys_from(
        &self,
        prefix: &[u8],
        from: &[u8],
        min_revision: u64,
        limit: usize,
    ) -> Request {
        let mut r = self.range_from(prefix, from, min_revision, limit);
        r.body.pop();
        r.body.push_str(",\"keys_only\":true}");
        r
    }

    fn range_from(&self, prefix: &[u8], from: &[u8], min_revision: u64, limit: usize) -> Request {
        let limit = limit.clamp(1, limits::MAX_RANGE_LIMIT);
        post(
            "/v3/kv/range",
            format!(
                "{{\"key\":\"{}\",\"range_end\":\"{}\",\"min_mod_revision\":\"{min_revision}\",\"limit\":\"{limit}\"}}",
                b64::encode(from),
                b64::encode(&prefix_end(prefix))
            ),
        )
    }

    fn decode_range(&self, limit: usize, status: u32, body: &[u8]) -> Result<Range, ClusterError> {
        let obj = answer(status, body)?;
        let revision = header_revision(&obj)?;
        let limit = limit.clamp(1, limits::MAX_RANGE_LIMIT);
        let kvs = kvs(&obj, limit, revision)?;
        let count = int64(&obj, "count", "count")?;
        if count < kvs.len() as u64 {
            return Err(ClusterError::Malformed("count"));
        }
        Ok(Range {
            revision,
            kvs,
            more: flag(&obj, "more", "more")?,
        })
    }

    fn put(&self, key: &[u8], value: &[u8], lease: u64) -> Request {
        post("/v3/kv/put", put_op(key, value, lease))
    }

    fn decode_put(&self, status: u32, body: &[u8]) -> Result<u64, ClusterError> {
        let obj = answer(status, body)?;
        header_revision(&obj)
    }

    fn put_all(&self, pairs: &[(Vec<u8>, Vec<u8>)], lease: u64) -> Request {
        let ops: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{{\"request_put\":{}}}", put_op(k, v, lease)))
            .collect();
        post("/v3/kv/txn", format!("{{\"success\":[{}]}}", ops.join(",")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: Etcd = Etcd;

    #[test]
    fn a_grant_is_read_from_etcd_3_4s_own_answer() {
        let body = br#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"1","raft_term":"2"},"ID":"2324035874904745221","TTL":"2"}"#;
        assert_eq!(
            E.decode_grant(200, body),
            Ok(Grant {
                lease: 2324035874904745221,
                ttl_s: 2
            })
        );
        assert_eq!(E.grant(10).body, r#"{"TTL":"10"}"#);
    }

    #[test]
    fn a_keep_alive_of_an_unknown_lease_is_gone_and_a_live_one_gives_its_ttl() {
        let gone = b"{\"result\":{\"header\":{\"revision\":\"1\"},\"ID\":\"12345\"}}\n";
        assert_eq!(E.decode_keep_alive(200, gone), Ok(KeepAlive::Gone));
        let alive = br#"{"result":{"header":{"revision":"1"},"ID":"12345","TTL":"7"}}"#;
        assert_eq!(
            E.decode_keep_alive(200, alive),
            Ok(KeepAlive::Alive { ttl_s: 7 })
        );
    }

    #[test]
    fn a_campaign_is_won_when_created_or_already_ours_and_held_otherwise() {
        let won = br#"{"header":{"revision":"2"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"2"}}}]}"#;
        assert_eq!(E.decode_campaign(7, 200, won), Ok(Campaign::Won));
        let held = br#"{"header":{"revision":"2"},"responses":[{"response_range":{"header":{"revision":"2"},"kvs":[{"key":"ZWxlY3Q=","create_revision":"2","mod_revision":"2","version":"1","value":"bWU=","lease":"9"}],"count":"1"}}]}"#;
        assert_eq!(
            E.decode_campaign(7, 200, held),
            Ok(Campaign::Held { lease: 9 })
        );
        assert_eq!(E.decode_campaign(9, 200, held), Ok(Campaign::Won));
    }

    #[test]
    fn the_campaign_request_compares_create_revision_zero_and_binds_the_lease() {
        let r = E.campaign(b"elect", b"me", 12345);
        assert_eq!(r.path, "/v3/kv/txn");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["compare"][0]["target"], "CREATE");
        assert_eq!(v["compare"][0]["create_revision"], "0");
        assert_eq!(v["success"][0]["request_put"]["lease"], "12345");
        assert_eq!(v["success"][0]["request_put"]["key"], "ZWxlY3Q=");
        assert_eq!(v["failure"][0]["request_range"]["key"], "ZWxlY3Q=");
    }

    #[test]
    fn a_prefix_read_ends_at_the_prefix_plus_one() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        let r = E.range_since(b"p/", 5, 100);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["min_mod_revision"], "5");
        assert_eq!(v["limit"], "100");
        assert_eq!(v["range_end"], b64::encode(b"p0"));
    }

    #[test]
    fn a_range_answer_is_held_to_its_limit_and_revisions() {
        let ok = br#"{"header":{"revision":"4"},"kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"3","value":"dg==","lease":"5"}],"count":"2","more":true}"#;
        let r = E.decode_range(1, 200, ok).unwrap();
        assert_eq!(r.revision, 4);
        assert!(r.more);
        assert_eq!(
            r.kvs,
            vec![Kv {
                key: b"a".to_vec(),
                value: b"v".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                lease: 5
            }]
        );
        let empty = br#"{"header":{"revision":"4"}}"#;
        assert_eq!(E.decode_range(1, 200, empty).unwrap().kvs, vec![]);
        let two = br#"{"header":{"revision":"4"},"kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"3"},{"key":"Yg==","create_revision":"2","mod_revision":"3"}],"count":"2"}"#;
        assert_eq!(
            E.decode_range(1, 200, two),
            Err(ClusterError::Malformed("kvs.count"))
        );
        let future = br#"{"header":{"revision":"4"},"kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"9"}],"count":"1"}"#;
        assert_eq!(
            E.decode_range(5, 200, future),
            Err(ClusterError::Malformed("kv.mod_revision"))
        );
    }

    #[test]
    fn int64s_must_be_canonical_strings_within_int64() {
        let number = br#"{"header":{"revision":4}}"#;
        assert_eq!(
            E.decode_put(200, number),
            Err(ClusterError::Malformed("header.revision"))
        );
        let big = br#"{"header":{"revision":"9223372036854775808"}}"#;
        assert_eq!(
            E.decode_put(200, big),
            Err(ClusterError::Malformed("header.revision"))
        );
        let max = br#"{"header":{"revision":"9223372036854775807"}}"#;
        assert_eq!(E.decode_put(200, max), Ok(i64::MAX as u64));
        let lead = br#"{"header":{"revision":"04"}}"#;
        assert!(E.decode_put(200, lead).is_err());
        let ttl = br#"{"ID":"1","TTL":"99999999999"}"#;
        assert_eq!(
            E.decode_grant(200, ttl),
            Err(ClusterError::Malformed("TTL"))
        );
    }

    /// A lease's TTL is read up to a year (31,536,000 s; a records lease lives two build ages)
    /// and refused one second beyond (cargo-mutants: `MAX_TTL_S`'s products, e.g. 365 × 24 +
    /// 3600, refused a records lease of two days).
    #[test]
    fn a_ttl_of_up_to_a_year_is_read_and_one_second_more_is_refused() {
        let year = 365 * 24 * 3600;
        let grant = |ttl: u64| format!(r#"{{"header":{{"revision":"1"}},"ID":"7","TTL":"{ttl}"}}"#);
        assert_eq!(
            E.decode_grant(200, grant(2 * 24 * 3600).as_bytes()),
            Ok(Grant {
                lease: 7,
                ttl_s: 2 * 24 * 3600
            })
        );
        assert_eq!(
            E.decode_grant(200, grant(year).as_bytes()),
            Ok(Grant {
                lease: 7,
                ttl_s: year
            })
        );
        assert_eq!(
            E.decode_grant(200, grant(year + 1).as_bytes()),
            Err(ClusterError::Malformed("TTL"))
        );
    }

    #[test]
    fn errors_carry_the_status_and_etcds_code() {
        let body = br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;
        assert_eq!(
            E.decode_put(404, body),
            Err(ClusterError::Status {
                status: 404,
                code: Some(5)
            })
        );
        assert_eq!(
            E.decode_put(503, b"no healthy upstream"),
            Err(ClusterError::Status {
                status: 503,
                code: None
            })
        );
        let stream_error = br#"{"error":{"grpc_code":14,"http_code":503,"message":"x"}}"#;
        assert_eq!(
            E.decode_keep_alive(200, stream_error),
            Err(ClusterError::Status {
                status: 200,
                code: None
            })
        );
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let key = b64::encode(&[b'k'; limits::MAX_KEY_BYTES + 1]);
        let body = format!(
            r#"{{"header":{{"revision":"4"}},"kvs":[{{"key":"{key}","create_revision":"2","mod_revision":"3"}}]}}"#
        );
        assert_eq!(
            E.decode_range(5, 200, body.as_bytes()),
            Err(ClusterError::Malformed("kv.key"))
        );
        let value = b64::encode(&vec![b'v'; limits::MAX_VALUE_BYTES + 1]);
        let body = format!(
            r#"{{"header":{{"revision":"4"}},"kvs":[{{"key":"YQ==","value":"{value}","create_revision":"2","mod_revision":"3"}}]}}"#
        );
        assert_eq!(
            E.decode_range(5, 200, body.as_bytes()),
            Err(ClusterError::Malformed("kv.value"))
        );
        let huge = vec![b' '; limits::MAX_ANSWER_BYTES + 1];
        assert_eq!(
            E.decode_put(200, &huge),
            Err(ClusterError::Malformed("size"))
        );
    }

    /// An answer of exactly `MAX_ANSWER_BYTES` is read, one byte more is refused before it is
    /// parsed (cargo-mutants: `>`→`>=` refused the largest answer allowed).
    #[test]
    fn an_answer_of_exactly_the_size_limit_is_read_and_one_byte_more_is_refused() {
        let padded = |len: usize| {
            let head = r#"{"header":{"revision":"4"},"pad":""#;
            let pad = "x".repeat(len - head.len() - 2);
            format!("{head}{pad}\"}}")
        };
        let exact = padded(limits::MAX_ANSWER_BYTES);
        assert_eq!(exact.len(), limits::MAX_ANSWER_BYTES);
        assert_eq!(E.decode_put(200, exact.as_bytes()), Ok(4));
        let over = padded(limits::MAX_ANSWER_BYTES + 1);
        assert_eq!(
            E.decode_put(200, over.as_bytes()),
            Err(ClusterError::Malformed("size"))
        );
    }

    /// A key of exactly `MAX_KEY_BYTES` and a value of exactly `MAX_VALUE_BYTES` (a record as
    /// large as a sidecar writes) are read back whole; one byte more of either is refused
    /// (cargo-mutants: the base64 text's pre-check, `max / 3 * 4 + 8`, made tighter than the
    /// largest pair refused records a sidecar had written).
    #[test]
    fn a_pair_at_the_key_and_value_limits_is_read_and_one_byte_more_is_refused() {
        let range = |key: &[u8], value: &[u8]| {
            format!(
                r#"{{"header":{{"revision":"4"}},"kvs":[{{"key":"{}","value":"{}","create_revision":"2","mod_revision":"3"}}],"count":"1"}}"#,
                b64::encode(key),
                b64::encode(value)
            )
        };
        let key = vec![b'k'; limits::MAX_KEY_BYTES];
        let value = vec![b'v'; limits::MAX_VALUE_BYTES];
        let r = E
            .decode_range(5, 200, range(&key, &value).as_bytes())
            .unwrap();
        assert_eq!(r.kvs.len(), 1);
        assert_eq!(
            r.kvs.first().map(|kv| (&kv.key, &kv.value)),
            Some((&key, &value))
        );
        let mut long_key = key.clone();
        long_key.push(b'k');
        assert_eq!(
            E.decode_range(5, 200, range(&long_key, &value).as_bytes()),
            Err(ClusterError::Malformed("kv.key"))
        );
        let mut long_value = value.clone();
        long_value.push(b'v');
        assert_eq!(
            E.decode_range(5, 200, range(&key, &long_value).as_bytes()),
            Err(ClusterError::Malformed("kv.value"))
        );
    }

    /// The text of a value is held to the exact length of the limit's base64 before it is
    /// decoded: the same value at the limit with one character written as a JSON escape (which
    /// etcd never writes) is refused, although it would decode within the limit (cargo-mutants:
    /// the bound loosened, `+` → `*`).
    #[test]
    fn a_value_text_longer_than_the_limits_base64_is_refused_before_decoding() {
        let value = vec![b'v'; limits::MAX_VALUE_BYTES];
        let text = b64::encode(&value);
        let escaped = format!("\\u{:04x}{}", text.as_bytes()[0], &text[1..]);
        let body = format!(
            r#"{{"header":{{"revision":"4"}},"kvs":[{{"key":"a2V5","value":"{escaped}","create_revision":"2","mod_revision":"3"}}],"count":"1"}}"#
        );
        assert_eq!(
            E.decode_range(5, 200, body.as_bytes()),
            Err(ClusterError::Malformed("kv.value"))
        );
        let plain = body.replace(&escaped, &text);
        assert_eq!(
            E.decode_range(5, 200, plain.as_bytes())
                .map(|r| r.kvs.len()),
            Ok(1)
        );
    }

    /// What the fuzz target `etcd` checks, on near-misses of etcd's real answers.
    fn within_limits(limit: usize, body: &[u8]) {
        if let Ok(g) = E.decode_grant(200, body) {
            assert!(
                g.lease > 0
                    && g.lease <= limits::MAX_INT64
                    && g.ttl_s > 0
                    && g.ttl_s <= limits::MAX_TTL_S
            );
        }
        if let Ok(KeepAlive::Alive { ttl_s }) = E.decode_keep_alive(200, body) {
            assert!(ttl_s > 0 && ttl_s <= limits::MAX_TTL_S);
        }
        if let Ok(Campaign::Held { lease }) = E.decode_campaign(7, 200, body) {
            assert!(lease != 7 && lease <= limits::MAX_INT64);
        }
        if let Ok(r) = E.decode_range(limit, 200, body) {
            assert!(r.revision > 0 && r.kvs.len() <= limit);
            for kv in &r.kvs {
                assert!(!kv.key.is_empty() && kv.key.len() <= limits::MAX_KEY_BYTES);
                assert!(
                    0 < kv.create_revision
                        && kv.create_revision <= kv.mod_revision
                        && kv.mod_revision <= r.revision
                );
            }
        }
        if let Ok(revision) = E.decode_put(200, body) {
            assert!(revision > 0 && revision <= limits::MAX_INT64);
        }
    }

    #[test]
    fn near_misses_of_etcds_answers_decode_within_limits_or_not_at_all() {
        let mut rng = crate::core::backoff::Rng::new(21);
        let alphabet = b"{}[]\":,\\ 0123456789-=+/AYZaz.eutrflsn\x00\x80";
        let seeds: [&str; 4] = [
            r#"{"header":{"revision":"1"},"ID":"2324035874904745221","TTL":"2"}"#,
            r#"{"result":{"header":{"revision":"1"},"ID":"12345","TTL":"7"}}"#,
            r#"{"header":{"revision":"2"},"responses":[{"response_range":{"header":{"revision":"2"},"kvs":[{"key":"ZWxlY3Q=","create_revision":"2","mod_revision":"2","value":"bWU=","lease":"9"}],"count":"1"}}]}"#,
            r#"{"header":{"revision":"4"},"kvs":[{"key":"YQ==","create_revision":"2","mod_revision":"3"},{"key":"Yg==","create_revision":"3","mod_revision":"4"}],"count":"2"}"#,
        ];
        for seed in seeds {
            within_limits(2, seed.as_bytes());
            for _ in 0..5_000 {
                let mut b = seed.as_bytes().to_vec();
                crate::core::json::mutate(&mut rng, &mut b, alphabet);
                within_limits(1, &b);
                within_limits(2, &b);
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let samples: [&[u8]; 8] = [
            b"",
            b"{",
            b"[]",
            b"\xff",
            b"{\"header\":[]}",
            b"{\"kvs\":{}}",
            b"{\"result\":1}",
            b"{\"responses\":[1,2]}",
        ];
        for s in samples {
            assert!(E.decode_grant(200, s).is_err());
            assert!(E.decode_keep_alive(200, s).is_err());
            assert!(E.decode_campaign(1, 200, s).is_err());
            assert!(E.decode_range(5, 200, s).is_err());
            assert!(E.decode_put(200, s).is_err());
        }
    }
}
