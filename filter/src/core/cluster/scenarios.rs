//! The election scenarios, written once and run against both [`super::memory::MemoryEtcd`]
//! (native tests, virtual time: `filter/tests/cluster.rs`) and a real 3-member etcd cluster
//! (`envoy/tests/etcd.rs`), so the model is pinned to what etcd does. A scenario drives
//! candidates through a [`World`] and returns what it saw go wrong, never panicking.

use super::election::Election;
use super::etcd::Etcd;
use super::{ClusterStore, Request};
use crate::core::object::RawObject;

/// Where the scenarios run: a store reachable at one or more members, and a clock.
pub trait World {
    /// Sends `request` to the store, to member `preferred` first and, like an Envoy cluster,
    /// to the next live member when that one is unreachable. `None` when none answered.
    fn send(&mut self, preferred: usize, request: &Request) -> Option<(u32, Vec<u8>)>;
    /// Milliseconds on a monotonic clock.
    fn now_ms(&mut self) -> u64;
    /// Lets `ms` pass (virtual in the model, real against etcd).
    fn wait_ms(&mut self, ms: u64);
    /// Members of the store.
    fn members(&self) -> usize;
    /// Stops member `i` for good (the model has one member that never fails: a no-op).
    fn kill(&mut self, i: usize);
}

/// A scenario: the world and the key prefix it may use; `Err` says what went wrong.
pub type Scenario = fn(&mut dyn World, &[u8]) -> Result<(), String>;

/// Every scenario, by name.
pub const ALL: &[(&str, Scenario)] = &[
    (
        "revisions_count_writes_and_a_read_since_a_revision_sees_only_later_changes",
        incremental_reads,
    ),
    (
        "keys_bound_to_a_lease_vanish_with_it_a_put_on_a_dead_lease_is_refused_and_its_time_to_live_is_gone",
        lease_expiry,
    ),
    (
        "records_written_in_one_transaction_share_a_revision_and_pages_resume_after_the_last_key",
        batch_and_pages,
    ),
    (
        "answers_carry_the_members_etcd_3_4_sends_and_leave_zero_values_out",
        answer_shapes,
    ),
    (
        "three_candidates_elect_exactly_one_leader_who_keeps_it",
        one_leader,
    ),
    (
        "a_leader_that_stops_keeping_alive_is_replaced_within_the_ttl_and_never_overlaps",
        takeover,
    ),
    (
        "one_member_of_three_killed_does_not_interrupt_the_leader",
        member_killed,
    ),
];

/// How often a candidate is polled.
const STEP_MS: u64 = 100;
/// How long etcd may take past a TTL to expire a lease (it checks every 500 ms, then
/// revokes through raft).
const EXPIRY_SLACK_MS: u64 = 1500;

fn call<T>(
    world: &mut dyn World,
    request: Request,
    decode: impl FnOnce(u32, &[u8]) -> Result<T, super::ClusterError>,
) -> Result<T, String> {
    let what = request.path.clone();
    let (status, body) = world
        .send(0, &request)
        .ok_or_else(|| format!("{what}: no member answered"))?;
    decode(status, &body).map_err(|e| format!("{what}: {e:?}: {}", String::from_utf8_lossy(&body)))
}

fn key(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn incremental_reads(world: &mut dyn World, prefix: &[u8]) -> Result<(), String> {
    let e = Etcd;
    let rows = key(prefix, "rows/");
    let first = call(world, e.put(&key(&rows, "a"), b"1", 0), |s, b| {
        e.decode_put(s, b)
    })?;
    let second = call(world, e.put(&key(&rows, "b"), b"2", 0), |s, b| {
        e.decode_put(s, b)
    })?;
    if second != first + 1 {
        return Err(format!("two puts gave revisions {first} and {second}"));
    }
    let all = call(world, e.range_since(&rows, first, 10), |s, b| {
        e.decode_range(10, s, b)
    })?;
    if all.kvs.len() != 2 || all.revision != second {
        return Err(format!("a read since {first}: {all:?}"));
    }
    let one = call(world, e.range_since(&rows, first, 1), |s, b| {
        e.decode_range(1, s, b)
    })?;
    if one.kvs.len() != 1 || !one.more {
        return Err(format!("a read limited to 1 of 2: {one:?}"));
    }
    let third = call(world, e.put(&key(&rows, "a"), b"3", 0), |s, b| {
        e.decode_put(s, b)
    })?;
    let since = call(world, e.range_since(&rows, all.revision + 1, 10), |s, b| {
        e.decode_range(10, s, b)
    })?;
    match since.kvs.as_slice() {
        [kv] if kv.value == b"3" && kv.mod_revision == third && kv.create_revision == first => {}
        other => return Err(format!("a read since {}: {other:?}", all.revision + 1)),
    }
    // etcd counts every key of the range, before `min_mod_revision` filters them.
    let request = e.range_since(&rows, all.revision + 1, 10);
    let (_, body) = world
        .send(0, &request)
        .ok_or_else(|| "range: no member answered".to_string())?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let count = RawObject::parse(&text)
        .ok()
        .and_then(|o| o.get("count", "count").ok().flatten().map(str::to_string));
    if count.as_deref() != Some("\"2\"") {
        return Err(format!("count of a filtered read of 2 keys: {text}"));
    }
    let nothing = call(world, e.range_since(&rows, third + 1, 10), |s, b| {
        e.decode_range(10, s, b)
    })?;
    if !nothing.kvs.is_empty() || nothing.more {
        return Err(format!("a read past the last write: {nothing:?}"));
    }
    Ok(())
}

/// Cluster mode's records: a batch is one transaction (one revision for all its keys); a scan
/// reads them a page at a time in key order, the next page from the last key plus a zero
/// byte, all with the scan's `min_mod_revision`.
fn batch_and_pages(world: &mut dyn World, prefix: &[u8]) -> Result<(), String> {
    let e = Etcd;
    let rows = key(prefix, "d/");
    let grant = call(world, e.grant(60), |s, b| e.decode_grant(s, b))?;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..5u8)
        .map(|i| (key(&rows, &format!("s/{i:02}")), vec![b'v', i]))
        .collect();
    let revision = call(world, e.put_all(&pairs, grant.lease), |s, b| {
        e.decode_put(s, b)
    })?;
    let mut seen = Vec::new();
    let mut from = rows.clone();
    for _ in 0..10 {
        let page = call(world, e.range_from(&rows, &from, revision, 2), |s, b| {
            e.decode_range(2, s, b)
        })?;
        for kv in &page.kvs {
            if kv.mod_revision != revision || kv.lease != grant.lease {
                return Err(format!("a key of the batch: {kv:?}"));
            }
            seen.push(kv.key.clone());
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                from = last.key.clone();
                from.push(0);
            }
            _ => break,
        }
    }
    let wanted: Vec<Vec<u8>> = pairs.into_iter().map(|(k, _)| k).collect();
    if seen != wanted {
        return Err(format!("pages read {seen:?}"));
    }
    let keys = call(
        world,
        e.range_keys_from(&rows, &rows, revision, 10),
        |s, b| e.decode_range(10, s, b),
    )?;
    let names: Vec<Vec<u8>> = keys.kvs.iter().map(|kv| kv.key.clone()).collect();
    if names != wanted || keys.kvs.iter().any(|kv| !kv.value.is_empty()) {
        return Err(format!("a read of the keys alone: {keys:?}"));
    }
    let later = call(world, e.range_since(&rows, revision + 1, 10), |s, b| {
        e.decode_range(10, s, b)
    })?;
    if !later.kvs.is_empty() {
        return Err(format!("a read after the batch: {later:?}"));
    }
    Ok(())
}

fn lease_expiry(world: &mut dyn World, prefix: &[u8]) -> Result<(), String> {
    let e = Etcd;
    let grant = call(world, e.grant(2), |s, b| e.decode_grant(s, b))?;
    let k = key(prefix, "leased");
    let put = call(world, e.put(&k, b"v", grant.lease), |s, b| {
        e.decode_put(s, b)
    })?;
    let read = call(world, e.range_since(&k, 0, 1), |s, b| {
        e.decode_range(1, s, b)
    })?;
    if !matches!(read.kvs.as_slice(), [kv] if kv.lease == grant.lease) {
        return Err(format!("the leased key right after its put: {read:?}"));
    }
    // A watcher's question: the whole seconds left, below the TTL, without renewing it.
    let left = call(world, e.time_to_live(grant.lease), |s, b| {
        e.decode_time_to_live(s, b)
    })?;
    if !matches!(left, super::KeepAlive::Alive { ttl_s } if ttl_s <= grant.ttl_s) {
        return Err(format!("time to live of a fresh lease: {left:?}"));
    }
    let deadline = world.now_ms() + grant.ttl_s * 1000 + EXPIRY_SLACK_MS + 1000;
    loop {
        let read = call(world, e.range_since(&k, 0, 1), |s, b| {
            e.decode_range(1, s, b)
        })?;
        if read.kvs.is_empty() {
            if read.revision <= put {
                return Err(format!(
                    "the lease's expiry did not raise the revision: {read:?}"
                ));
            }
            break;
        }
        if world.now_ms() > deadline {
            return Err("the leased key outlived its TTL".to_string());
        }
        world.wait_ms(STEP_MS);
    }
    let gone = call(world, e.keep_alive(grant.lease), |s, b| {
        e.decode_keep_alive(s, b)
    })?;
    if gone != super::KeepAlive::Gone {
        return Err(format!("a keep-alive of an expired lease: {gone:?}"));
    }
    for lease in [grant.lease, 12345] {
        let gone = call(world, e.time_to_live(lease), |s, b| {
            e.decode_time_to_live(s, b)
        })?;
        if gone != super::KeepAlive::Gone {
            return Err(format!(
                "time to live of an expired or unknown lease: {gone:?}"
            ));
        }
    }
    match world.send(0, &e.put(&k, b"v", grant.lease)) {
        Some((status, body)) => match e.decode_put(status, &body) {
            Err(super::ClusterError::Status {
                status: 404,
                code: Some(5),
            }) => Ok(()),
            other => Err(format!("a put on an expired lease: {other:?}")),
        },
        None => Err("no member answered".to_string()),
    }
}

/// Candidates of one election, each polled in turn; stopped ones send nothing.
struct Field {
    candidates: Vec<Election>,
    stopped: Vec<bool>,
}

impl Field {
    fn new(world: &dyn World, prefix: &[u8], n: usize, ttl_s: u64) -> Self {
        let election_key = key(prefix, "leader");
        let candidates = (0..n)
            .map(|i| {
                Election::new(
                    &election_key,
                    format!("candidate-{i}").as_bytes(),
                    ttl_s,
                    300,
                )
            })
            .collect();
        let _ = world.members();
        Self {
            candidates,
            stopped: vec![false; n],
        }
    }

    /// One round: every running candidate sends what it has to and reads the answer.
    fn step(&mut self, world: &mut dyn World) {
        let members = world.members().max(1);
        for (i, (c, stopped)) in self.candidates.iter_mut().zip(&self.stopped).enumerate() {
            if *stopped {
                continue;
            }
            let now = world.now_ms();
            if let Some(request) = c.poll(&Etcd, now) {
                match world.send(i % members, &request) {
                    Some((status, body)) => {
                        let now = world.now_ms();
                        c.answer(&Etcd, now, status, &body);
                    }
                    None => {
                        let now = world.now_ms();
                        c.failed(now);
                    }
                }
            }
        }
        world.wait_ms(STEP_MS);
    }

    /// The candidates that lead now, by their own account (stopped ones included: a stopped
    /// candidate still believes until its `until`, which is what must never overlap).
    fn leaders(&self, world: &mut dyn World) -> Vec<usize> {
        let now = world.now_ms();
        (0..self.candidates.len())
            .filter(|i| self.candidates.get(*i).is_some_and(|c| c.is_leader(now)))
            .collect()
    }

    /// Runs until exactly one candidate leads; fails on two at once or after `within_ms`.
    /// A candidate `not` (a stopped leader) may go on believing alone until its `until`.
    fn until_one_leader(
        &mut self,
        world: &mut dyn World,
        within_ms: u64,
        not: Option<usize>,
    ) -> Result<usize, String> {
        let deadline = world.now_ms() + within_ms;
        loop {
            self.step(world);
            match self.leaders(world).as_slice() {
                [one] if Some(*one) != not => return Ok(*one),
                [] | [_] => {}
                many => return Err(format!("two leaders at once: {many:?}")),
            }
            if world.now_ms() > deadline {
                let errors: Vec<_> = self
                    .candidates
                    .iter()
                    .map(|c| (c.role(), c.last_error()))
                    .collect();
                return Err(format!("no leader within {within_ms} ms: {errors:?}"));
            }
        }
    }

    /// Runs for `ms`, requiring `leader` to lead alone at every step.
    fn hold(&mut self, world: &mut dyn World, leader: usize, ms: u64) -> Result<(), String> {
        let end = world.now_ms() + ms;
        while world.now_ms() < end {
            self.step(world);
            let leaders = self.leaders(world);
            if leaders != [leader] {
                let errors: Vec<_> = self
                    .candidates
                    .iter()
                    .map(|c| (c.role(), c.last_error()))
                    .collect();
                return Err(format!(
                    "leaders {leaders:?} instead of [{leader}]: {errors:?}"
                ));
            }
        }
        Ok(())
    }
}

/// The election key's value in the store now.
fn holder(world: &mut dyn World, prefix: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let e = Etcd;
    let k = key(prefix, "leader");
    let read = call(world, e.range_since(&k, 0, 1), |s, b| {
        e.decode_range(1, s, b)
    })?;
    Ok(read
        .kvs
        .into_iter()
        .find(|kv| kv.key == k)
        .map(|kv| kv.value))
}

fn one_leader(world: &mut dyn World, prefix: &[u8]) -> Result<(), String> {
    let ttl_s = 3;
    let mut field = Field::new(world, prefix, 3, ttl_s);
    let leader = field.until_one_leader(world, 5000, None)?;
    field.hold(world, leader, 2 * ttl_s * 1000)?;
    let expected = format!("candidate-{leader}").into_bytes();
    match holder(world, prefix)? {
        Some(v) if v == expected => Ok(()),
        other => Err(format!("the key holds {other:?}, the leader is {leader}")),
    }
}

fn takeover(world: &mut dyn World, prefix: &[u8]) -> Result<(), String> {
    let ttl_s = 3;
    let mut field = Field::new(world, prefix, 3, ttl_s);
    let first = field.until_one_leader(world, 5000, None)?;
    if let Some(s) = field.stopped.get_mut(first) {
        *s = true;
    }
    let stopped_at = world.now_ms();
    // Free within the TTL after its last renewal (before it stopped), then a campaign.
    let next = field.until_one_leader(world, ttl_s * 1000 + EXPIRY_SLACK_MS + 1000, Some(first))?;
    if next == first {
        return Err("the stopped leader still leads".to_string());
    }
    let took = world.now_ms() - stopped_at;
    if took > ttl_s * 1000 + EXPIRY_SLACK_MS + 300 {
        return Err(format!("takeover took {took} ms"));
    }
    field.hold(world, next, 1000)?;
    let expected = format!("candidate-{next}").into_bytes();
    match holder(world, prefix)? {
        Some(v) if v == expected => Ok(()),
        other => Err(format!("the key holds {other:?}, the new leader is {next}")),
    }
}

fn member_killed(world: &mut dyn World, prefix: &[u8]) -> Result<(), String> {
    let ttl_s = 5;
    let mut field = Field::new(world, prefix, 3, ttl_s);
    let leader = field.until_one_leader(world, 5000, None)?;
    field.hold(world, leader, 1000)?;
    // The member the leader talks to first.
    let members = world.members().max(1);
    world.kill(leader % members);
    field.hold(world, leader, 2 * ttl_s * 1000)?;
    if field.candidates.iter().any(|c| c.lost() > 0) {
        return Err("a candidate lost leadership".to_string());
    }
    Ok(())
}

/// The member names of the object at `path` (a chain of member names) in `body`, sorted.
fn member_names(body: &[u8], path: &[&str]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
    let mut obj = RawObject::parse(text).map_err(|e| format!("{e}: {text}"))?;
    for name in path {
        let raw = obj
            .get(name, "member")
            .ok()
            .flatten()
            .ok_or_else(|| format!("no `{name}` in {text}"))?;
        obj = RawObject::parse_nested(raw).map_err(|e| format!("{e}: {text}"))?;
    }
    let mut names: Vec<String> = obj.entries.iter().map(|(k, _)| k.to_string()).collect();
    names.sort();
    Ok(names)
}

/// Sends `request`, requires `status` and the members `want` (sorted) at `path`.
fn shape(
    world: &mut dyn World,
    request: &Request,
    status: u32,
    path: &[&str],
    want: &[&str],
) -> Result<Vec<u8>, String> {
    let (got_status, body) = world
        .send(0, request)
        .ok_or_else(|| format!("{}: no member answered", request.path))?;
    let names = member_names(&body, path)?;
    if got_status != status || names != want {
        return Err(format!(
            "{} {}: {got_status} with {names:?} at {path:?}, expected {status} with {want:?}",
            request.path, request.body
        ));
    }
    Ok(body)
}

fn answer_shapes(world: &mut dyn World, prefix: &[u8]) -> Result<(), String> {
    let e = Etcd;
    let header = ["cluster_id", "member_id", "raft_term", "revision"];
    let body = shape(world, &e.grant(5), 200, &[], &["ID", "TTL", "header"])?;
    shape(world, &e.grant(5), 200, &["header"], &header)?;
    let grant = e
        .decode_grant(200, &body)
        .map_err(|err| format!("{err:?}"))?;
    shape(
        world,
        &e.keep_alive(grant.lease),
        200,
        &["result"],
        &["ID", "TTL", "header"],
    )?;
    // An unknown lease: no TTL (zero, left out).
    shape(world, &e.keep_alive(1), 200, &["result"], &["ID", "header"])?;
    // Nothing under the prefix: no kvs, no count, no more.
    let empty = key(prefix, "empty/");
    shape(world, &e.range_since(&empty, 0, 10), 200, &[], &["header"])?;
    let k = key(prefix, "leader");
    let won = e.campaign(&k, b"a", grant.lease);
    shape(world, &won, 200, &[], &["header", "responses", "succeeded"])?;
    // A failed compare: no `succeeded` at all; the failure branch's range.
    shape(
        world,
        &e.campaign(&k, b"b", grant.lease),
        200,
        &[],
        &["header", "responses"],
    )?;
    let read = e.range_since(&k, 0, 1);
    shape(world, &read, 200, &[], &["count", "header", "kvs"])?;
    let kv_members = [
        "create_revision",
        "key",
        "lease",
        "mod_revision",
        "value",
        "version",
    ];
    let body = shape(world, &read, 200, &[], &["count", "header", "kvs"])?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let kvs = RawObject::parse(&text)
        .ok()
        .and_then(|o| o.get("kvs", "kvs").ok().flatten())
        .and_then(|raw| crate::core::json::Scanner::array_items(raw).ok())
        .and_then(|items| items.first().map(|s| s.as_bytes().to_vec()))
        .ok_or_else(|| format!("no kvs in {text}"))?;
    let names = member_names(&kvs, &[])?;
    if names != kv_members {
        return Err(format!(
            "a leased pair has {names:?}, expected {kv_members:?}"
        ));
    }
    let dead = e.put(&key(prefix, "x"), b"v", 1);
    shape(world, &dead, 404, &[], &["code", "error", "message"])?;
    Ok(())
}
