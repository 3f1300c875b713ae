//! Helpers shared by the reconciler's integration tests: a configuration with short timings,
//! live observations, drone's build answers and the pipeline's answers, and the one drive loop
//! ([`answer_all`], [`run_for`]) every file ticks and answers through; [`world`] is a small drone
//! and pipeline for the scenarios of `hints.rs` and `trust.rs`.
//!
//! Every observation is built by [`obs`], so a change to what an observation carries is made
//! here once.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod repo;
pub mod world;

use status_sync::core::config::Config;
use status_sync::core::drone_api::parse_build;
use status_sync::core::ledger::{Class, Entry, Ledger};
use status_sync::core::model::{BuildKey, BuildStatus, DeliveryOutcome, ParsedWebhook, RepoRef};
use status_sync::core::observation::Observation;
use status_sync::core::proof::Proof;
use status_sync::core::reconciler::{CallResult, OutgoingCall, Reconciler};
use status_sync::core::snapshot::{self, Record};

/// Where the tests' virtual clock starts.
pub const T0: u64 = 1_000_000;

pub const REPO_ID: u64 = 42;
pub const REPO_JSON: &str = r#"{"id":42,"uid":"1","namespace":"octocat","name":"hello-world","slug":"octocat/hello-world","counter":101,"version":105,"archived":false}"#;

/// tick 100 ms, stale after 1 s, polls at most every 8 s, circuit open 2 s; `extra` is more
/// JSON members, each starting with a comma.
pub fn config(extra: &str) -> Config {
    let json = format!(
        r#"{{"pipeline_cluster":"pipeline","drone_cluster":"drone","drone_token":"t0k3n","tick_ms":100,"stale_after_ms":1000,"max_poll_interval_ms":8000,"circuit_open_ms":2000{extra}}}"#
    );
    Config::parse(json.as_bytes(), &|_| None).unwrap()
}

/// Drone's webhook of build `number` of the tests' repository ([`REPO_ID`], its object
/// [`REPO_JSON`]) at (`status`, `version`).
pub fn hook(number: u64, status: &str, version: u64) -> ParsedWebhook {
    let mut h = world::hook_of(REPO_ID, number, status, version);
    h.repo_json = Some(REPO_JSON.into());
    h
}

/// A live webhook that passed the filter (signed by drone where that distinction exists), and
/// how the pipeline answered it.
pub fn obs(number: u64, status: &str, version: u64, outcome: DeliveryOutcome) -> Observation {
    Observation::for_tests(hook(number, status, version), outcome, true)
}

/// [`obs`], but unverified: a hint (an unsigned webhook, or any in `signature_mode` off).
pub fn hint(number: u64, status: &str, version: u64, outcome: DeliveryOutcome) -> Observation {
    Observation::for_tests(hook(number, status, version), outcome, false)
}

/// `entry` with the pipeline holding `version` in `status`, settled the one way there is: the
/// ledger's `settle` with a proof, here drone's answer about the build (for snapshot records
/// a previous leader wrote).
pub fn settled(entry: Entry, version: u64, status: BuildStatus) -> Entry {
    let key = BuildKey {
        repo_id: REPO_ID,
        number: 1,
    };
    let answer = format!(
        r#"{{"id":1,"repo_id":{REPO_ID},"number":1,"status":"{}","version":{version}}}"#,
        status.as_str()
    );
    let mut ledger = Ledger::new(1, 1);
    ledger.insert(key, entry);
    let proof = Proof::drone(&parse_build(answer.as_bytes()).unwrap());
    assert!(ledger.settle(&key, version, status, &proof));
    *ledger.get(&key).unwrap()
}

/// A reconciler configured with `extra` (see [`config`]) that saw `builds` (number, status,
/// version) pass live at [`T0`], each acknowledged by the pipeline.
pub fn seen_live(
    extra: &str,
    builds: &[(u64, &str, u64)],
) -> status_sync::core::reconciler::Reconciler {
    let mut r = status_sync::core::reconciler::Reconciler::new(config(extra), 1);
    for (number, status, version) in builds {
        r.observe(
            obs(*number, status, *version, DeliveryOutcome::Delivered),
            T0,
        );
    }
    r
}

/// A reconciler configured with `extra` that saw builds `numbers` pass live at [`T0`], running
/// (v2), each missed by the pipeline.
pub fn missed(extra: &str, numbers: impl IntoIterator<Item = u64>) -> Reconciler {
    let mut r = Reconciler::new(config(extra), 1);
    for n in numbers {
        r.observe(obs(n, "running", 2, DeliveryOutcome::NotDelivered), T0);
    }
    r
}

/// [`seen_live`] with at most `cap` builds filled into a gap (`max_gap_fill`).
pub fn gap_fill_capped(
    cap: u64,
    builds: &[(u64, &str, u64)],
) -> status_sync::core::reconciler::Reconciler {
    seen_live(&format!(r#","max_gap_fill":{cap}"#), builds)
}

/// Drone's `GET .../builds/{number}` answer body.
pub fn api_build(number: u64, status: &str, version: u64) -> Vec<u8> {
    api_build_of(REPO_ID, number, status, version)
}

/// Drone's `GET .../builds/{number}` answer body for a build of repository `repo_id`.
pub fn api_build_of(repo_id: u64, number: u64, status: &str, version: u64) -> Vec<u8> {
    format!(
        "{{\"id\":{},\"repo_id\":{repo_id},\"number\":{number},\"status\":\"{status}\",\"event\":\"push\",\"version\":{version},\"stages\":[]}}\n",
        5000 + number
    )
    .into_bytes()
}

/// Drone's list of the repository's builds (`GET .../builds`), newest first as given:
/// (number, status, version) each.
pub fn build_list(builds: &[(u64, &str, u64)]) -> Vec<u8> {
    let items: Vec<String> = builds
        .iter()
        .map(|(n, st, v)| {
            format!(
                r#"{{"id":{n},"repo_id":{REPO_ID},"number":{n},"status":"{st}","version":{v}}}"#
            )
        })
        .collect();
    format!("[{}]\n", items.join(",")).into_bytes()
}

pub fn ok(body: Vec<u8>) -> CallResult {
    CallResult::Response { status: 200, body }
}

/// Drone's 404 for a repository it does not have (`drone_model::server::Answer::not_found`).
pub fn not_found() -> CallResult {
    drone(drone_model::server::Answer::not_found())
}

/// Drone's 404 for a build it does not have (`drone_model::server::Answer::no_rows`).
pub fn no_rows() -> CallResult {
    drone(drone_model::server::Answer::no_rows())
}

/// Drone's answer as the reconciler receives it.
pub fn drone(answer: drone_model::server::Answer) -> CallResult {
    CallResult::Response {
        status: answer.status,
        body: answer.body,
    }
}

pub fn http(status: u16) -> CallResult {
    CallResult::Response {
        status,
        body: Vec::new(),
    }
}

pub fn is_drone(call: &OutgoingCall) -> bool {
    call.cluster == "drone"
}

/// The build number a drone build lookup asks for (None for other calls).
pub fn looked_up(call: &OutgoingCall) -> Option<u64> {
    let path = call.header(":path")?;
    let rest = path.strip_prefix("/api/repos/octocat/hello-world/builds/")?;
    rest.parse().ok()
}

/// (number, status, version) of a re-delivery's body.
pub fn redelivered(call: &OutgoingCall) -> (u64, String, u64) {
    assert_eq!(call.cluster, "pipeline", "a re-delivery");
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    (
        body["build"]["number"].as_u64().unwrap(),
        body["build"]["status"].as_str().unwrap().to_string(),
        body["build"]["version"].as_u64().unwrap(),
    )
}

/// The numbers of the builds the ledger tracks, in order.
pub fn tracked(r: &status_sync::core::reconciler::Reconciler) -> Vec<u64> {
    let mut n: Vec<u64> = r.ledger().iter().map(|(k, _)| k.number).collect();
    n.sort();
    n
}

/// Every call the reconciler made while [`drive`] ran it, with the time it was made.
#[derive(Default)]
pub struct Log {
    pub calls: Vec<(u64, OutgoingCall)>,
    /// Drone's `counter` for the repository: the highest build number drone has allocated,
    /// here the highest any test made known (tracked or looked up). Never goes down.
    pub counter: u64,
}

impl Log {
    /// Times of the lookups of build `number`.
    pub fn lookups_of(&self, number: u64) -> Vec<u64> {
        self.calls
            .iter()
            .filter(|(_, c)| looked_up(c) == Some(number))
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn drone_calls(&self) -> usize {
        self.calls.iter().filter(|(_, c)| is_drone(c)).count()
    }

    /// (number, status, version) of every re-delivery, in order.
    pub fn redeliveries(&self) -> Vec<(u64, String, u64)> {
        self.calls
            .iter()
            .filter(|(_, c)| !is_drone(c))
            .map(|(_, c)| redelivered(c))
            .collect()
    }
}

/// The one drive loop of these tests ("tick, answer, repeat"): answers each of `calls`, and
/// every follow-up call an answer brings, at once with `answer` (`None` leaves a call
/// unanswered: lost, or still in flight); `answer` is given the time. Returns the calls left
/// unanswered.
pub fn answer_all(
    r: &mut Reconciler,
    now: u64,
    mut calls: Vec<OutgoingCall>,
    answer: &mut dyn FnMut(&Reconciler, &OutgoingCall, u64) -> Option<CallResult>,
) -> Vec<OutgoingCall> {
    let mut left = Vec::new();
    let mut answered = 0;
    while let Some(call) = calls.pop() {
        // A reconciler that answers every answer with another call would loop here forever.
        answered += 1;
        assert!(
            answered < 1000,
            "endless follow-up calls at {now}: {call:?}"
        );
        match answer(r, &call, now) {
            Some(a) => calls.extend(r.on_response(call.id, a, now)),
            None => left.push(call),
        }
    }
    left
}

/// Ticks every 100 ms for `ms` from `*now` (exclusive; the last tick at or just past
/// `*now + ms`), each tick's calls answered by [`answer_all`].
pub fn run_for(
    r: &mut Reconciler,
    now: &mut u64,
    ms: u64,
    answer: &mut dyn FnMut(&Reconciler, &OutgoingCall, u64) -> Option<CallResult>,
) {
    let end = *now + ms;
    while *now < end {
        *now += 100;
        let calls = r.tick(*now);
        answer_all(r, *now, calls, answer);
    }
}

/// Ticks every 100 ms after `*now` (for at most a minute) until the reconciler makes a call
/// `wanted` picks, and returns it unanswered, `*now` its time; every other call on the way is
/// answered by `others` (see [`answer_all`]).
pub fn tick_until(
    r: &mut Reconciler,
    now: &mut u64,
    wanted: &dyn Fn(&OutgoingCall) -> bool,
    others: &mut dyn FnMut(&Reconciler, &OutgoingCall, u64) -> Option<CallResult>,
) -> OutgoingCall {
    let end = *now + 60_000;
    loop {
        *now += 100;
        assert!(*now < end, "no such call within a minute");
        let calls = r.tick(*now);
        let mut found = None;
        answer_all(r, *now, calls, &mut |r, call, at| {
            if found.is_none() && wanted(call) {
                found = Some(call.clone());
                return None;
            }
            others(r, call, at)
        });
        if let Some(call) = found {
            return call;
        }
    }
}

/// Leaves a call unanswered (for [`tick_until`] and [`answer_all`]).
pub fn unanswered(_: &Reconciler, _: &OutgoingCall, _: u64) -> Option<CallResult> {
    None
}

/// Ticks every 100 ms from `*now` (exclusive) to `until` (inclusive), answering each call at
/// once: drone's build lookups with `drone(number)`, its repository lookups with the repository,
/// the pipeline with `pipeline(call)`; every call is logged.
pub fn drive(
    r: &mut Reconciler,
    now: &mut u64,
    until: u64,
    log: &mut Log,
    drone: &mut dyn FnMut(u64) -> CallResult,
    pipeline: &mut dyn FnMut(&OutgoingCall) -> CallResult,
) {
    let ms = until.saturating_sub(*now) / 100 * 100;
    run_for(r, now, ms, &mut |r, call, at| {
        let answer = if is_drone(call) {
            match looked_up(call) {
                Some(n) => {
                    log.counter = log.counter.max(n);
                    drone(n)
                }
                None => other_drone_call(r, call, log, drone),
            }
        } else {
            pipeline(call)
        };
        log.calls.push((at, call.clone()));
        Some(answer)
    });
}

/// [`drive`] with drone answering every build lookup with (`status`, `version`) and the
/// pipeline taking every re-delivery (200).
pub fn drive_steady(
    r: &mut status_sync::core::reconciler::Reconciler,
    now: &mut u64,
    until: u64,
    log: &mut Log,
    status: &str,
    version: u64,
) {
    let drone = &mut |n| ok(api_build(n, status, version));
    drive(r, now, until, log, drone, &mut |_| http(200));
}

/// Drone's answer to a call that is not a build lookup: the repository (a name confirmation
/// or a discovery of its `counter`), or the admin list of incomplete builds. Drone is one
/// server: when `drone` answers a lookup of the newest build with anything but 200, these
/// calls get that answer too (an outage); otherwise the repository carries the highest number
/// drone has, and the list of incomplete builds answers 501 (drone's OSS build).
pub fn other_drone_call(
    r: &status_sync::core::reconciler::Reconciler,
    call: &OutgoingCall,
    log: &mut Log,
    drone: &mut dyn FnMut(u64) -> CallResult,
) -> CallResult {
    let tracked = r
        .ledger()
        .iter()
        .filter(|(k, _)| k.repo_id == REPO_ID)
        .map(|(k, _)| k.number)
        .max()
        .unwrap_or(0);
    log.counter = log.counter.max(tracked);
    let health = drone(log.counter.max(1));
    if !matches!(health, CallResult::Response { status: 200, .. }) {
        return health;
    }
    match call.header(":path") {
        Some("/api/repos/octocat/hello-world") => ok(repo_json_with_counter(log.counter)),
        _ => http(501),
    }
}

/// [`REPO_JSON`] with drone's `counter` set to `counter`.
pub fn repo_json_with_counter(counter: u64) -> Vec<u8> {
    REPO_JSON
        .replace("\"counter\":101", &format!("\"counter\":{counter}"))
        .into_bytes()
}

thread_local! {
    /// Log lines this test thread wrote (tests run on threads of their own).
    static LINES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps every log line in its thread's [`LINES`].
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        LINES.with(|l| l.borrow_mut().push(line));
    }
    fn flush(&self) {}
}

/// The log lines written on this thread so far; installs the capture on first use.
pub fn logged() -> Vec<String> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
    LINES.with(|l| l.borrow().clone())
}

/// The log lines of this thread since the `before`th that `wanted` picks (see [`logged`]).
pub fn logged_since(before: usize, wanted: &dyn Fn(&str) -> bool) -> Vec<String> {
    let lines = logged().split_off(before);
    lines.into_iter().filter(|l| wanted(l)).collect()
}

// Helpers of more than one subject file.

/// Build `number` of the tests' repository ([`REPO_ID`]).
pub fn key(number: u64) -> BuildKey {
    world::key_of(REPO_ID, number)
}

/// The pipeline takes a re-delivery.
pub fn pipeline_ok(_: &OutgoingCall) -> CallResult {
    http(200)
}

/// The one call of `calls`.
pub fn one(calls: Vec<OutgoingCall>) -> OutgoingCall {
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls.into_iter().next().unwrap()
}

/// Ticks at `now`, answers drone's calls other than build lookups as drone would (see
/// [`other_drone_call`]: repository discovery finds nothing new), and returns the one call
/// left.
pub fn tick_one(r: &mut Reconciler, now: u64) -> OutgoingCall {
    one(tick_others(r, now))
}

/// Ticks at `now`, answers drone's calls other than build lookups as drone would, and returns
/// the build lookups and re-deliveries.
pub fn tick_others(r: &mut Reconciler, now: u64) -> Vec<OutgoingCall> {
    let calls = r.tick(now);
    let mut log = Log::default();
    let running = &mut |n| ok(api_build(n, "running", 1));
    answer_all(r, now, calls, &mut |r, c, _| {
        let other = is_drone(c) && looked_up(c).is_none();
        other.then(|| other_drone_call(r, c, &mut log, running))
    })
}

/// The tests' repository, `octocat/hello-world` ([`REPO_ID`]).
pub fn repo() -> RepoRef {
    hook(1, "running", 1).repo
}

/// An element of drone's `GET /api/builds/incomplete`: repository `id`, its build `number`.
pub fn incomplete_item(id: u64, number: u64) -> String {
    format!(
        r#"{{"id":{id},"uid":"{id}","namespace":"octocat","name":"repo-{id}","slug":"octocat/repo-{id}","counter":{number},"version":1,"archived":false,"build":{{"id":{id}{number},"repo_id":{id},"number":{number},"status":"running","version":2}}}}"#
    )
}

/// A reconciler that saw evidence of build 5 (finished and delivered) at `T0`: its repository
/// is confirmed, its highest number 5, and a look at its `counter` is scheduled.
pub fn after_build_five(extra: &str) -> Reconciler {
    let mut r = Reconciler::new(config(extra), 1);
    r.observe(obs(5, "success", 3, DeliveryOutcome::Delivered), T0);
    r
}

/// A look at the tests' repository (a name confirmation, or discovery of its `counter`).
pub fn is_repo_call(c: &OutgoingCall) -> bool {
    c.header(":path") == Some("/api/repos/octocat/hello-world")
}

/// Ticks every 100 ms from `T0` until the reconciler looks at the repository's `counter`, and
/// answers that call with `answer`; returns when it happened.
pub fn discovery(r: &mut Reconciler, answer: CallResult) -> u64 {
    let mut now = T0;
    let call = tick_until(r, &mut now, &is_repo_call, &mut unanswered);
    r.on_response(call.id, answer, now);
    now
}

/// Ticks at build `number`'s due time and answers its lookup with `answer`: what follows.
pub fn answer_when_due(r: &mut Reconciler, number: u64, answer: CallResult) -> Vec<OutgoingCall> {
    let due = r.ledger().get(&key(number)).unwrap().next_due_ms;
    let calls = r.tick(due);
    let lookup = calls.iter().find(|c| looked_up(c) == Some(number));
    let lookup = lookup.unwrap_or_else(|| panic!("no lookup of {number} at {due}: {calls:?}"));
    r.on_response(lookup.id, answer, due)
}

/// (max, min) build numbers the watermarks carry for the repository.
pub fn marks(r: &mut Reconciler) -> Option<(u64, u64)> {
    let bytes = r.take_watermarks()?;
    let m = snapshot::decode_watermarks(&bytes).unwrap();
    m.iter()
        .find(|(repo, _, _)| repo.id == REPO_ID)
        .map(|(_, max, min)| (*max, *min))
}

/// A new leader that knows (from the watermarks) the repository's builds from `min` up to
/// `max`, and nothing else.
pub fn leader_after(max: u64, min: u64, extra: &str) -> Reconciler {
    let mut r = Reconciler::new(config(extra), 1);
    let bytes = snapshot::encode_watermarks(&[(repo(), max, min)]);
    assert!(r.load_watermarks(&bytes));
    r
}

/// A snapshot record of build `number`, killed (v3) and unchanged since `last_change`, due at
/// `due`.
pub fn killed_record(number: u64, last_change: u64, due: u64) -> Record {
    let mut e = Entry::new(last_change, Class::Backed);
    e = settled(e, 3, BuildStatus::Killed);
    e.interval_ms = 8000;
    e.next_due_ms = due;
    record(number, e)
}

/// A snapshot record of build `number` of the tests' repository.
pub fn record(number: u64, entry: Entry) -> Record {
    Record {
        repo: repo(),
        number,
        entry,
    }
}
