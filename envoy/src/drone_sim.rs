//! `drone-sim`: a drone-server 2.25 stand-in, faithful where the filter can tell.
//!
//! It serves the REST API the filter polls (same shapes, same error bodies, bearer-token
//! auth on private repositories), and it runs builds through drone's real lifecycle, sending
//! the webhooks drone sends, when drone sends them (drone-server 2.25's `trigger/trigger.go`,
//! `operator/manager/`):
//!
//! - `build:created` (pending, version 1), which can arrive *after* the first step webhook
//!   (drone sends it after scheduling, from another goroutine);
//! - pending→running writes the build (version 2) but sends **no** webhook;
//! - every step start and step end sends `build:updated` with status `running` and the same
//!   build version (the build row is not written);
//! - teardown writes the final status (version 3) and sends a last `build:updated`;
//! - cancel → `killed`, auto-cancel → `skipped` (webhooks without `repo.build`);
//! - decline → `declined` with **no** webhook ever; a config error → `build:created` with
//!   status `error`.
//!
//! Like drone it POSTs each webhook once, never retries and ignores the response code. On top
//! of that it *loses* a configurable share of webhooks (the failure the filter exists for),
//! counts every API call it receives (per build, so tests can see duplicate polls from several
//! Envoy workers), and can be told to go down (503) for a while.

use crate::drone_model::{self as dm, Build, Repo, Stage, Step, System, User, WebhookPayload};
use crate::util::{self, Rng};
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a simulated build ends, and which drone code path gets it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step passes; teardown → `success`.
    Success,
    /// The last step exits 1; teardown → `failure`.
    Failure,
    /// The last step errors (e.g. image pull); teardown → `error`.
    Error,
    /// Cancelled through the API while the first step runs → `killed` (webhook #5).
    Killed,
    /// Auto-cancelled while pending (superseded push) → `skipped` (webhook #7).
    Skipped,
    /// A stage is blocked for approval and gets declined → `declined`, no webhook.
    Declined,
    /// The YAML does not parse → `build:created` with status `error` (webhook #2).
    ConfigError,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Error,
        Outcome::Killed,
        Outcome::Skipped,
        Outcome::Declined,
        Outcome::ConfigError,
    ];

    /// The build status drone ends with.
    pub fn final_status(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Error | Outcome::ConfigError => "error",
            Outcome::Killed => "killed",
            Outcome::Skipped => "skipped",
            Outcome::Declined => "declined",
        }
    }

    /// Picks an outcome with roughly the mix a busy drone sees: mostly successes.
    pub fn random(rng: &mut Rng) -> Outcome {
        match rng.range(0, 99) {
            0..=54 => Outcome::Success,
            55..=69 => Outcome::Failure,
            70..=76 => Outcome::Killed,
            77..=83 => Outcome::Skipped,
            84..=89 => Outcome::Declined,
            90..=94 => Outcome::Error,
            _ => Outcome::ConfigError,
        }
    }
}

/// What to simulate for one build.
#[derive(Clone, Debug)]
pub struct BuildPlan {
    /// Repository index into [`DroneSim::repos`] (wraps around).
    pub repo: usize,
    pub outcome: Outcome,
    /// Steps in the (single) stage; at least 1.
    pub steps: usize,
    /// How long each step runs.
    pub step_ms: u64,
    /// Send `build:created` after the first step-start webhook (drone's race).
    pub created_late: bool,
    /// Lose this build's webhooks that carry a done status, whatever the loss policy says.
    pub lose_final: bool,
    /// Lose every webhook of this build, `spare_first` notwithstanding.
    pub lose_all: bool,
    /// The race of two triggers at once (`trigger/trigger.go`): the number is taken
    /// (`repos.Increment`, the repository's `counter` moves) at the scheduled time, but the
    /// build row is written this much later, so a build scheduled after it can be created
    /// (and announced) first.
    pub row_delay_ms: u64,
}

impl BuildPlan {
    pub fn new(repo: usize, outcome: Outcome) -> Self {
        BuildPlan {
            repo,
            outcome,
            steps: 2,
            step_ms: 150,
            created_late: false,
            lose_final: false,
            lose_all: false,
            row_delay_ms: 0,
        }
    }

    /// A random plan: random outcome, 1–4 steps of `step_ms`±50%, 20% of them with a late
    /// `build:created`.
    pub fn random(rng: &mut Rng, repos: usize, step_ms: u64) -> Self {
        BuildPlan {
            repo: rng.range(0, repos.max(1) as u64 - 1) as usize,
            outcome: Outcome::random(rng),
            steps: rng.range(1, 4) as usize,
            step_ms: rng.range(step_ms / 2, step_ms + step_ms / 2).max(1),
            created_late: rng.chance(0.2),
            lose_final: false,
            lose_all: false,
            row_delay_ms: 0,
        }
    }
}

/// Which webhooks never arrive (drone's transport errors, receivers that were down, …).
#[derive(Clone, Debug, Default)]
pub struct LossPolicy {
    /// Probability that any one webhook is lost.
    pub share: f64,
    /// Never lose a build's first webhook, so the sidecar learns that the build exists.
    pub spare_first: bool,
    /// Lose every webhook that carries a done status.
    pub all_finals: bool,
}

/// Configuration of a [`DroneSim`].
#[derive(Clone, Debug)]
pub struct DroneSimConfig {
    /// Bearer token the API accepts (the admin machine user's token).
    pub token: String,
    /// Where webhooks go (drone's `DRONE_WEBHOOK_ENDPOINT`); `None` = nowhere, all are lost.
    pub webhook_url: Option<String>,
    /// Drone's `DRONE_WEBHOOK_SECRET` (drone signs even with an empty one).
    pub webhook_secret: String,
    pub loss: LossPolicy,
    pub seed: u64,
    /// Number of repositories (`octocat/hello-world`, `octocat/spoon-knife`, …).
    pub repos: usize,
    /// Built with `-tags oss`: `GET /api/builds/incomplete` answers 501.
    pub oss: bool,
}

impl Default for DroneSimConfig {
    fn default() -> Self {
        DroneSimConfig {
            token: "sim-token-0123456789abcdef".into(),
            webhook_url: None,
            webhook_secret: String::new(),
            loss: LossPolicy::default(),
            seed: 1,
            repos: 3,
            oss: false,
        }
    }
}

/// Identifies a build as the pipeline and the tests see it: `namespace/name#number`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BuildKey {
    pub slug: String,
    pub number: i64,
}

impl fmt::Display for BuildKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.slug, self.number)
    }
}

/// One webhook drone produced, and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct WebhookRecord {
    pub build: BuildKey,
    pub action: String,
    pub status: String,
    pub version: i64,
    /// Milliseconds since the simulator started.
    pub at_ms: u64,
    /// Dropped by the loss policy: never sent.
    pub lost: bool,
    /// The receiver's status code (ignored, as drone does).
    pub http_status: Option<u16>,
    /// A transport error (drone logs a warning and carries on).
    pub transport_error: Option<String>,
    /// The build's first webhook.
    pub first: bool,
    /// Carries a done status.
    pub done: bool,
}

/// What drone currently says about a build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuildState {
    pub key: BuildKey,
    pub status: String,
    pub version: i64,
}

/// Calls the API received; what the tests count.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApiStats {
    /// Every request under `/api/`, whatever its answer.
    pub api_calls: u64,
    /// `GET /api/repos/{o}/{n}/builds/{number}` per build (`slug#number`).
    pub build_calls: BTreeMap<String, u64>,
    /// `GET /api/repos/{o}/{n}` per repository.
    pub repo_calls: BTreeMap<String, u64>,
    /// `GET /api/repos/{o}/{n}/builds` (list) calls.
    pub list_calls: u64,
    /// `GET /api/builds/incomplete` calls answered (not in the OSS build).
    pub incomplete_calls: u64,
    /// Answered 401 (no or wrong token).
    pub unauthorized: u64,
    /// Answered 503 because the simulator was down.
    pub calls_while_down: u64,
    pub webhooks_sent: u64,
    pub webhooks_lost: u64,
    /// Sent but failed at the transport level (drone would log a warning).
    pub webhooks_failed: u64,
}

#[derive(Debug)]
enum Ev {
    /// `repos.Increment`: the number is taken, the counter moves (the row comes later).
    Reserve(usize, i64),
    Create(usize, i64, BuildPlan),
    Setup(usize, i64),
    StepStart(usize, i64, usize),
    StepEnd(usize, i64, usize),
    Teardown(usize, i64),
    Cancel(usize, i64),
    AutoCancel(usize, i64),
    Decline(usize, i64),
    /// A webhook body prepared earlier (the late `build:created`).
    Send(Box<Pending>),
}

#[derive(Debug)]
struct Pending {
    key: BuildKey,
    action: String,
    status: String,
    version: i64,
    body: Vec<u8>,
}

struct Timed {
    at: Instant,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    // Reversed: BinaryHeap is a max-heap and we want the earliest event first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct RepoState {
    repo: Repo,
    owner: User,
    builds: BTreeMap<i64, Build>,
    /// Numbers handed out by `schedule` (the repo counter moves at creation, like drone).
    reserved: i64,
    last_create: Instant,
}

struct State {
    repos: Vec<RepoState>,
    queue: BinaryHeap<Timed>,
    seq: u64,
    next_build_id: i64,
    next_stage_id: i64,
    next_step_id: i64,
    rng: Rng,
    webhooks: Vec<WebhookRecord>,
    /// Builds that already produced a webhook (for `spare_first`).
    announced: std::collections::HashSet<BuildKey>,
    plans: BTreeMap<BuildKey, BuildPlan>,
    stats: ApiStats,
    down: bool,
    webhook_url: Option<String>,
    /// Events being processed right now (so `idle()` is not fooled by an empty queue).
    busy: bool,
}

struct Inner {
    cfg: DroneSimConfig,
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
    started: Instant,
    system: System,
    agent: ureq::Agent,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler thread must not wedge the simulator for the test reading it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running drone simulator. Dropping it stops its threads.
pub struct DroneSim {
    inner: Arc<Inner>,
    server: Arc<tiny_http::Server>,
    port: u16,
    threads: Vec<JoinHandle<()>>,
}

const REPO_NAMES: [(&str, &str); 6] = [
    ("octocat", "hello-world"),
    ("octocat", "spoon-knife"),
    ("drone", "drone-sim"),
    ("acme", "api"),
    ("acme", "web"),
    ("acme", "infra"),
];

impl DroneSim {
    /// Starts the API on `127.0.0.1:port` (0 = any free port) and the build runner.
    pub fn start(cfg: DroneSimConfig, port: u16) -> Result<DroneSim> {
        let server = Arc::new(
            tiny_http::Server::http(("127.0.0.1", port))
                .map_err(|e| anyhow::anyhow!("drone-sim: cannot listen on port {port}: {e}"))?,
        );
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .context("drone-sim: no TCP address")?;
        let now = util::unix_now();
        let repos = (0..cfg.repos.clamp(1, REPO_NAMES.len()))
            .map(|i| {
                let (ns, name) = REPO_NAMES[i];
                let owner = User {
                    id: 2 + i as i64,
                    login: ns.into(),
                    email: format!("{ns}@example.com"),
                    active: true,
                    avatar: format!("https://avatars.example.com/u/{}", 2 + i),
                    synced: now - 600,
                    created: now - 86_400,
                    updated: now - 600,
                    last_login: now - 600,
                    ..Default::default()
                };
                let repo = Repo {
                    id: 42 + i as i64,
                    uid: format!("{}", 16_607_898 + i),
                    user_id: owner.id,
                    namespace: ns.into(),
                    name: name.into(),
                    slug: format!("{ns}/{name}"),
                    git_http_url: format!("https://github.com/{ns}/{name}.git"),
                    git_ssh_url: format!("git@github.com:{ns}/{name}.git"),
                    link: format!("https://github.com/{ns}/{name}"),
                    default_branch: "main".into(),
                    // Private: the API answers 401 without the token, as drone does.
                    private: true,
                    visibility: "private".into(),
                    active: true,
                    config_path: ".drone.yml".into(),
                    timeout: 60,
                    synced: now - 600,
                    created: now - 86_400,
                    updated: now - 600,
                    version: 1,
                    ..Default::default()
                };
                RepoState {
                    repo,
                    owner,
                    builds: BTreeMap::new(),
                    reserved: 0,
                    last_create: Instant::now(),
                }
            })
            .collect();
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                repos,
                queue: BinaryHeap::new(),
                seq: 0,
                next_build_id: 5001,
                next_stage_id: 7001,
                next_step_id: 9001,
                rng: Rng::new(cfg.seed),
                webhooks: Vec::new(),
                announced: Default::default(),
                plans: BTreeMap::new(),
                stats: ApiStats::default(),
                down: false,
                webhook_url: cfg.webhook_url.clone(),
                busy: false,
            }),
            cfg,
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            started: Instant::now(),
            system: System {
                proto: "https".into(),
                host: "drone.example.com".into(),
                link: "https://drone.example.com".into(),
                version: "2.25.0".into(),
            },
            agent: util::agent(Duration::from_secs(10)),
        });
        let mut threads = Vec::new();
        for i in 0..4 {
            let (inner, server) = (inner.clone(), server.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("drone-sim-http-{i}"))
                    .spawn(move || serve(&inner, &server))
                    .context("spawn drone-sim thread")?,
            );
        }
        let runner = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name("drone-sim-runner".into())
                .spawn(move || run(&runner))
                .context("spawn drone-sim runner")?,
        );
        Ok(DroneSim {
            inner,
            server,
            port,
            threads,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn token(&self) -> &str {
        &self.inner.cfg.token
    }

    /// `namespace/name` of every simulated repository.
    pub fn repos(&self) -> Vec<String> {
        self.inner
            .lock()
            .repos
            .iter()
            .map(|r| r.repo.slug.clone())
            .collect()
    }

    /// Where webhooks go from now on (drone's endpoint; here usually Envoy's listener).
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.inner.lock().webhook_url = url;
    }

    /// Schedules a build to be created `after` from now; returns the number it will get.
    /// Creations in one repository keep their scheduling order, as build numbers do.
    pub fn schedule(&self, plan: BuildPlan, after: Duration) -> BuildKey {
        let mut st = self.inner.lock();
        let idx = plan.repo % st.repos.len();
        let r = &mut st.repos[idx];
        r.reserved = r.reserved.max(r.repo.counter) + 1;
        let number = r.reserved;
        let at = (Instant::now() + after).max(r.last_create);
        r.last_create = at;
        let key = BuildKey {
            slug: r.repo.slug.clone(),
            number,
        };
        st.plans.insert(key.clone(), plan.clone());
        if plan.row_delay_ms > 0 {
            push(&mut st, at, Ev::Reserve(idx, number));
            let row_at = at + Duration::from_millis(plan.row_delay_ms);
            push(&mut st, row_at, Ev::Create(idx, number, plan));
        } else {
            push(&mut st, at, Ev::Create(idx, number, plan));
        }
        drop(st);
        self.inner.wake.notify_all();
        key
    }

    /// Drone's view of every build (what the pipeline should converge to).
    pub fn builds(&self) -> Vec<BuildState> {
        let st = self.inner.lock();
        st.repos
            .iter()
            .flat_map(|r| {
                r.builds.values().map(|b| BuildState {
                    key: BuildKey {
                        slug: r.repo.slug.clone(),
                        number: b.number,
                    },
                    status: b.status.clone(),
                    version: b.version,
                })
            })
            .collect()
    }

    /// Every webhook drone produced so far, in order.
    pub fn webhooks(&self) -> Vec<WebhookRecord> {
        self.inner.lock().webhooks.clone()
    }

    /// The plan a build was scheduled with.
    pub fn plan(&self, key: &BuildKey) -> Option<BuildPlan> {
        self.inner.lock().plans.get(key).cloned()
    }

    pub fn stats(&self) -> ApiStats {
        self.inner.lock().stats.clone()
    }

    /// While down, every API call is answered 503 (and counted in `calls_while_down`).
    pub fn set_down(&self, down: bool) {
        self.inner.lock().down = down;
    }

    /// True when every scheduled event has run and every build is done.
    pub fn idle(&self) -> bool {
        let st = self.inner.lock();
        st.queue.is_empty()
            && !st.busy
            && st
                .repos
                .iter()
                .all(|r| r.builds.values().all(|b| dm::is_done(&b.status)))
    }
}

impl Drop for DroneSim {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.wake.notify_all();
        self.server.unblock();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn push(st: &mut State, at: Instant, ev: Ev) {
    st.seq += 1;
    let seq = st.seq;
    st.queue.push(Timed { at, seq, ev });
}

/// The runner: pops due events in time order, applies them to the "database" and sends the
/// webhooks they produce, synchronously and one at a time, as drone's runner RPC does.
fn run(inner: &Inner) {
    while !inner.stop.load(Ordering::SeqCst) {
        let mut st = inner.lock();
        let now = Instant::now();
        let due = match st.queue.peek() {
            Some(t) if t.at <= now => true,
            Some(t) => {
                let wait = t.at - now;
                let _ = inner
                    .wake
                    .wait_timeout(st, wait.min(Duration::from_millis(200)));
                continue;
            }
            None => {
                let _ = inner.wake.wait_timeout(st, Duration::from_millis(200));
                continue;
            }
        };
        if !due {
            continue;
        }
        let Some(Timed { at, ev, .. }) = st.queue.pop() else {
            continue;
        };
        st.busy = true;
        let sends = apply(inner, &mut st, at, ev);
        let url = st.webhook_url.clone();
        drop(st);
        for p in sends {
            deliver(inner, url.as_deref(), p);
        }
        inner.lock().busy = false;
    }
}

fn build_mut(st: &mut State, repo: usize, number: i64) -> Option<&mut Build> {
    st.repos.get_mut(repo)?.builds.get_mut(&number)
}

/// Applies one event; returns the webhooks to send now.
fn apply(inner: &Inner, st: &mut State, at: Instant, ev: Ev) -> Vec<Pending> {
    let now = util::unix_now();
    let mut out = Vec::new();
    match ev {
        Ev::Reserve(ri, number) => {
            let r = &mut st.repos[ri];
            r.repo.counter = r.repo.counter.max(number);
            r.repo.version += 1;
        }
        Ev::Create(ri, number, plan) => {
            let (bid, sid) = (st.next_build_id, st.next_stage_id);
            st.next_build_id += 1;
            st.next_stage_id += 1;
            let step_ids: Vec<i64> = (0..plan.steps.max(1))
                .map(|_| {
                    st.next_step_id += 1;
                    st.next_step_id - 1
                })
                .collect();
            let r = &mut st.repos[ri];
            if r.repo.counter < number {
                // Increment and insert in one go (no race planned).
                r.repo.counter = number;
                r.repo.version += 1;
            }
            let sha = format!("{:040x}", (bid as u128) * 0x9e37_79b9_7f4a_7c15_u128);
            let mut b = Build {
                id: bid,
                repo_id: r.repo.id,
                trigger: "@hook".into(),
                number,
                status: "pending".into(),
                event: "push".into(),
                link: format!("{}/commit/{sha}", r.repo.link),
                message: format!("Change #{number}"),
                before: format!("{:040x}", bid as u128 * 31),
                after: sha,
                git_ref: "refs/heads/main".into(),
                source: "main".into(),
                target: "main".into(),
                author_login: r.owner.login.clone(),
                author_name: format!("The {}", r.owner.login),
                author_email: r.owner.email.clone(),
                author_avatar: r.owner.avatar.clone(),
                sender: r.owner.login.clone(),
                created: now,
                updated: now,
                version: 1,
                ..Default::default()
            };
            if plan.outcome == Outcome::ConfigError {
                // trigger.go createBuildError: terminal at creation, no stages.
                b.status = "error".into();
                b.error = "yaml: line 3: did not find expected key".into();
                b.started = now;
                b.finished = now;
            } else {
                let names = ["clone", "build", "test", "deploy", "publish", "notify"];
                b.stages = vec![Stage {
                    id: sid,
                    repo_id: r.repo.id,
                    build_id: bid,
                    number: 1,
                    name: "default".into(),
                    kind: "pipeline".into(),
                    kind_type: "docker".into(),
                    status: if plan.outcome == Outcome::Declined {
                        "blocked".into()
                    } else {
                        "pending".into()
                    },
                    os: "linux".into(),
                    arch: "amd64".into(),
                    created: now,
                    updated: now,
                    version: 1,
                    on_success: true,
                    steps: step_ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| Step {
                            id: *id,
                            step_id: sid,
                            number: i as i64 + 1,
                            name: names[i % names.len()].into(),
                            status: "pending".into(),
                            version: 1,
                            image: if i == 0 {
                                "drone/git:latest".into()
                            } else {
                                "golang:1.22".into()
                            },
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }];
            }
            r.builds.insert(number, b.clone());
            let key = BuildKey {
                slug: r.repo.slug.clone(),
                number,
            };
            // build:created carries the repo owner, the repo without .build, no stages.
            let mut created = b;
            created.stages.clear();
            let payload = WebhookPayload {
                event: "build".into(),
                action: "created".into(),
                user: Some(r.owner.clone()),
                repo: Some(r.repo.clone()),
                build: Some(created),
                system: Some(inner.system.clone()),
            };
            let p = pending(&key, payload);
            let d = Duration::from_millis(plan.step_ms);
            let t = |f: f64| at + d.mul_f64(f);
            let first_step = t(0.5);
            match plan.outcome {
                Outcome::ConfigError => out.push(p),
                Outcome::Skipped => {
                    out.push(p);
                    push(st, t(0.5), Ev::AutoCancel(ri, number));
                }
                Outcome::Declined => {
                    out.push(p);
                    push(st, t(1.0), Ev::Decline(ri, number));
                }
                _ => {
                    if plan.created_late {
                        // Arrives just after the first step-start webhook.
                        push(st, first_step + d.mul_f64(0.1), Ev::Send(Box::new(p)));
                    } else {
                        out.push(p);
                    }
                    push(st, t(0.25), Ev::Setup(ri, number));
                    let steps = plan.steps.max(1);
                    let last = if plan.outcome == Outcome::Killed {
                        1
                    } else {
                        steps
                    };
                    for i in 0..last {
                        let s = first_step + d * i as u32;
                        push(st, s, Ev::StepStart(ri, number, i));
                        if plan.outcome == Outcome::Killed {
                            push(st, s + d.mul_f64(0.5), Ev::Cancel(ri, number));
                        } else {
                            push(st, s + d.mul_f64(0.9), Ev::StepEnd(ri, number, i));
                        }
                    }
                    if plan.outcome != Outcome::Killed {
                        push(st, first_step + d * steps as u32, Ev::Teardown(ri, number));
                    }
                }
            }
        }
        Ev::Setup(ri, n) => {
            // manager/setup.go: pending→running, a build write (version+1), no webhook.
            if let Some(b) = build_mut(st, ri, n) {
                if b.status == "pending" {
                    b.status = "running".into();
                    b.started = now;
                    b.version += 1;
                    for s in &mut b.stages {
                        s.status = "running".into();
                        s.started = now;
                        s.machine = "runner-01".into();
                        s.version += 1;
                    }
                }
            }
        }
        Ev::StepStart(ri, n, i) | Ev::StepEnd(ri, n, i) => {
            let start = matches!(ev, Ev::StepStart(..));
            let plan_outcome = st
                .plans
                .get(&BuildKey {
                    slug: st.repos[ri].repo.slug.clone(),
                    number: n,
                })
                .map(|p| p.outcome);
            let Some(b) = build_mut(st, ri, n) else {
                return out;
            };
            if dm::is_done(&b.status) {
                return out;
            }
            let nsteps = b.stages.first().map(|s| s.steps.len()).unwrap_or(0);
            if let Some(step) = b.stages.first_mut().and_then(|s| s.steps.get_mut(i)) {
                step.version += 1;
                if start {
                    step.status = "running".into();
                    step.started = now;
                } else {
                    step.stopped = now.max(step.started);
                    let last = i + 1 == nsteps;
                    match plan_outcome {
                        Some(Outcome::Failure) if last => {
                            step.status = "failure".into();
                            step.exit_code = 1;
                        }
                        Some(Outcome::Error) if last => {
                            step.status = "error".into();
                            step.error = "Error response from daemon: pull access denied".into();
                            step.exit_code = 2;
                        }
                        _ => step.status = "success".into(),
                    }
                }
            }
            // manager/updater.go: the step write sends build:updated with whatever the build
            // row says (running, same version): repo.build is the same object, with stages.
            out.push(updated(inner, st, ri, n, true));
        }
        Ev::Teardown(ri, n) => {
            let Some(b) = build_mut(st, ri, n) else {
                return out;
            };
            if dm::is_done(&b.status) {
                return out;
            }
            for s in &mut b.stages {
                let worst = s
                    .steps
                    .iter()
                    .find(|x| matches!(x.status.as_str(), "failure" | "error" | "killed"));
                s.status = worst
                    .map(|x| x.status.clone())
                    .unwrap_or_else(|| "success".into());
                s.exit_code = worst.map(|x| x.exit_code).unwrap_or(0);
                s.stopped = now;
                s.updated = now;
                s.version += 1;
            }
            // teardown.go: the first killed/failure/error stage decides, else success.
            b.status = b
                .stages
                .iter()
                .find(|s| matches!(s.status.as_str(), "killed" | "failure" | "error"))
                .map(|s| s.status.clone())
                .unwrap_or_else(|| "success".into());
            b.finished = now;
            if b.started == 0 {
                b.started = b.finished;
            }
            b.version += 1;
            out.push(updated(inner, st, ri, n, true));
        }
        Ev::Cancel(ri, n) | Ev::AutoCancel(ri, n) => {
            let auto = matches!(ev, Ev::AutoCancel(..));
            let Some(b) = build_mut(st, ri, n) else {
                return out;
            };
            if dm::is_done(&b.status) {
                return out;
            }
            // cancel.go / canceler.CancelPending: started steps and stages → killed, the
            // rest → skipped, exit code 130; the build → killed (or skipped when superseded).
            for s in &mut b.stages {
                for x in &mut s.steps {
                    if !dm::is_done(&x.status) {
                        x.status = if x.started > 0 { "killed" } else { "skipped" }.into();
                        x.exit_code = 130;
                        x.stopped = now;
                        x.version += 1;
                    }
                }
                s.status = if s.started > 0 { "killed" } else { "skipped" }.into();
                s.exit_code = 130;
                s.stopped = now;
                s.version += 1;
            }
            b.status = if auto { "skipped" } else { "killed" }.into();
            b.finished = now;
            b.version += 1;
            out.push(updated(inner, st, ri, n, false));
        }
        Ev::Decline(ri, n) => {
            // stages/decline.go: build → declined, finished stays 0, and no webhook at all.
            if let Some(b) = build_mut(st, ri, n) {
                if b.status == "pending" {
                    b.status = "declined".into();
                    b.version += 1;
                    for s in &mut b.stages {
                        s.status = "declined".into();
                        s.version += 1;
                    }
                }
            }
        }
        Ev::Send(p) => out.push(*p),
    }
    out
}

/// A `build:updated` for the current state; `with_repo_build` for the updater/teardown shape
/// (repo.build set), without it for the cancel shapes.
fn updated(inner: &Inner, st: &State, ri: usize, n: i64, with_repo_build: bool) -> Pending {
    let r = &st.repos[ri];
    let b = r.builds.get(&n).cloned().unwrap_or_default();
    let mut repo = r.repo.clone();
    if with_repo_build {
        repo.build = Some(Box::new(b.clone()));
    }
    let key = BuildKey {
        slug: r.repo.slug.clone(),
        number: n,
    };
    pending(
        &key,
        WebhookPayload {
            event: "build".into(),
            action: "updated".into(),
            user: None,
            repo: Some(repo),
            build: Some(b),
            system: Some(inner.system.clone()),
        },
    )
}

fn pending(key: &BuildKey, p: WebhookPayload) -> Pending {
    let (status, version) = p
        .build
        .as_ref()
        .map(|b| (b.status.clone(), b.version))
        .unwrap_or_default();
    Pending {
        key: key.clone(),
        action: p.action.clone(),
        status,
        version,
        // Compact, no trailing newline: Go's json.Marshal.
        body: serde_json::to_vec(&p).unwrap_or_default(),
    }
}

/// Sends one webhook the way drone's `plugin/webhook` does: once, synchronously, ignoring the
/// status code. Lost webhooks are decided here.
fn deliver(inner: &Inner, url: Option<&str>, p: Pending) {
    let (lost, first) = {
        let mut st = inner.lock();
        let first = st.announced.insert(p.key.clone());
        let done = dm::is_done(&p.status);
        let lose_final = st.plans.get(&p.key).map(|x| x.lose_final).unwrap_or(false);
        let lose_all = st.plans.get(&p.key).map(|x| x.lose_all).unwrap_or(false);
        let loss = &inner.cfg.loss;
        let random = st.rng.chance(loss.share);
        // spare_first wins over everything: the sidecar must learn that the build exists.
        let lost = url.is_none()
            || lose_all
            || (!(first && loss.spare_first)
                && ((done && (loss.all_finals || lose_final)) || random));
        (lost, first)
    };
    let mut rec = WebhookRecord {
        build: p.key.clone(),
        action: p.action.clone(),
        status: p.status.clone(),
        version: p.version,
        at_ms: inner.started.elapsed().as_millis() as u64,
        lost,
        http_status: None,
        transport_error: None,
        first,
        done: dm::is_done(&p.status),
    };
    if let (false, Some(url)) = (lost, url) {
        let date = util::http_date(util::unix_now());
        let digest = util::digest_header(&p.body);
        let sig = util::signature_header(&inner.cfg.webhook_secret, &date, &digest);
        let req = inner
            .agent
            .post(url)
            .set("X-Drone-Event", "build")
            .set("Content-Type", "application/json")
            .set("Digest", &digest)
            .set("Date", &date)
            .set("Signature", &sig)
            .set("User-Agent", "Go-http-client/1.1");
        match util::send(req, Some(&p.body)) {
            Ok((code, _)) => rec.http_status = Some(code),
            Err(e) => rec.transport_error = Some(e),
        }
    }
    let mut st = inner.lock();
    if rec.lost {
        st.stats.webhooks_lost += 1;
    } else if rec.transport_error.is_some() {
        st.stats.webhooks_failed += 1;
    } else {
        st.stats.webhooks_sent += 1;
    }
    st.webhooks.push(rec);
}

fn serve(inner: &Inner, server: &tiny_http::Server) {
    while !inner.stop.load(Ordering::SeqCst) {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(req)) => handle(inner, req),
            Ok(None) => {}
            Err(_) => break,
        }
    }
}

fn json_ok(req: tiny_http::Request, v: &impl Serialize) {
    // json.Encoder output: compact with a trailing newline.
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    util::respond(req, 200, "application/json", body);
}

fn json_err(req: tiny_http::Request, code: u16, message: &str) {
    util::respond(req, code, "application/json", dm::error_body(message));
}

fn handle(inner: &Inner, req: tiny_http::Request) {
    let (path, query) = util::split_url(req.url());
    let method = req.method().clone();
    if let Some(ctl) = path.strip_prefix("/_sim/") {
        return control(inner, req, &method, ctl);
    }
    if !path.starts_with("/api/") {
        return util::respond(
            req,
            404,
            "text/plain; charset=utf-8",
            "404 page not found\n",
        );
    }
    let mut st = inner.lock();
    st.stats.api_calls += 1;
    if st.down {
        st.stats.calls_while_down += 1;
        drop(st);
        return util::respond(req, 503, "text/plain", "upstream unavailable\n");
    }
    // session.go: "Bearer " is stripped, a bare token works too, and ?access_token= as well.
    let token = util::req_header(&req, "Authorization")
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(&v).to_string())
        .or_else(|| {
            query
                .iter()
                .find(|(k, _)| k == "access_token")
                .map(|(_, v)| v.clone())
        });
    let authed = token.as_deref() == Some(inner.cfg.token.as_str());
    let segs: Vec<String> = path
        .trim_start_matches("/api/")
        .split('/')
        .map(util::percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if method != tiny_http::Method::Get {
        drop(st);
        return util::respond(req, 405, "text/plain", "");
    }
    match segs.as_slice() {
        ["builds", "incomplete"] => {
            // handler/api/api.go: under acl.AuthorizeAdmin (the sim's token is an admin's).
            if !authed {
                drop(st);
                return json_err(req, 401, "Unauthorized");
            }
            if inner.cfg.oss {
                // builds_oss.go: render.NotImplemented.
                drop(st);
                return json_err(req, 501, "Not Implemented");
            }
            // store/repos/repos.go queryRepoWithBuildIncomplete: one repository per build
            // with a pending or running stage, ORDER BY build_id DESC LIMIT 50, the build
            // without stages.
            let mut rows: Vec<Repo> = st
                .repos
                .iter()
                .flat_map(|r| {
                    r.builds
                        .values()
                        .filter(|b| {
                            b.stages
                                .iter()
                                .any(|s| s.status == "pending" || s.status == "running")
                        })
                        .map(|b| {
                            let mut repo = r.repo.clone();
                            let mut build = b.clone();
                            build.stages.clear();
                            repo.build = Some(Box::new(build));
                            repo
                        })
                })
                .collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.build.as_ref().map_or(0, |b| b.id)));
            rows.truncate(50);
            st.stats.incomplete_calls += 1;
            drop(st);
            json_ok(req, &rows)
        }
        ["repos", owner, name, rest @ ..] => {
            let slug = format!("{owner}/{name}");
            let Some(ri) = st.repos.iter().position(|r| r.repo.slug == slug) else {
                drop(st);
                // acl/repo.go: an unknown repo is 401 for guests and 404 for users.
                return if authed {
                    json_err(req, 404, "Not Found")
                } else {
                    json_err(req, 401, "Unauthorized")
                };
            };
            if !authed && st.repos[ri].repo.private {
                st.stats.unauthorized += 1;
                drop(st);
                return json_err(req, 401, "Unauthorized");
            }
            match rest {
                [] => {
                    *st.stats.repo_calls.entry(slug).or_default() += 1;
                    let repo = st.repos[ri].repo.clone();
                    drop(st);
                    json_ok(req, &repo)
                }
                ["builds"] => {
                    st.stats.list_calls += 1;
                    let param = |k: &str| {
                        query
                            .iter()
                            .find(|(q, _)| q == k)
                            .and_then(|(_, v)| v.parse::<i64>().ok())
                    };
                    let page = param("page").unwrap_or(1).max(1);
                    let mut per = param("per_page").unwrap_or(25);
                    if !(1..=100).contains(&per) {
                        per = 25;
                    }
                    // list.go: ORDER BY build_id DESC, no stages.
                    let mut list: Vec<Build> = st.repos[ri].builds.values().cloned().collect();
                    list.sort_by_key(|b| std::cmp::Reverse(b.id));
                    let page: Vec<Build> = list
                        .into_iter()
                        .skip(((page - 1) * per) as usize)
                        .take(per as usize)
                        .map(|mut b| {
                            b.stages.clear();
                            b
                        })
                        .collect();
                    drop(st);
                    json_ok(req, &page)
                }
                ["builds", "latest"] => {
                    let b = st.repos[ri].builds.values().next_back().cloned();
                    drop(st);
                    match b {
                        Some(b) => json_ok(req, &b),
                        None => json_err(req, 404, "sql: no rows in result set"),
                    }
                }
                ["builds", num] => {
                    let Ok(n) = num.parse::<i64>() else {
                        drop(st);
                        let msg = format!("strconv.ParseInt: parsing \"{num}\": invalid syntax");
                        return json_err(req, 400, &msg);
                    };
                    *st.stats
                        .build_calls
                        .entry(format!("{slug}#{n}"))
                        .or_default() += 1;
                    let b = st.repos[ri].builds.get(&n).cloned();
                    drop(st);
                    match b {
                        Some(b) => json_ok(req, &b),
                        None => json_err(req, 404, "sql: no rows in result set"),
                    }
                }
                _ => {
                    drop(st);
                    util::respond(
                        req,
                        404,
                        "text/plain; charset=utf-8",
                        "404 page not found\n",
                    )
                }
            }
        }
        _ => {
            drop(st);
            util::respond(
                req,
                404,
                "text/plain; charset=utf-8",
                "404 page not found\n",
            )
        }
    }
}

/// `/_sim/*`: the simulator's own control surface (not drone's), for the standalone binary.
fn control(inner: &Inner, req: tiny_http::Request, method: &tiny_http::Method, ctl: &str) {
    use tiny_http::Method::*;
    let mut st = inner.lock();
    match (method, ctl) {
        (Get, "stats") => {
            let s = st.stats.clone();
            drop(st);
            json_ok(req, &s)
        }
        (Get, "webhooks") => {
            let w = st.webhooks.clone();
            drop(st);
            json_ok(req, &w)
        }
        (Get, "builds") => {
            let b: Vec<BuildState> = st
                .repos
                .iter()
                .flat_map(|r| {
                    r.builds.values().map(|b| BuildState {
                        key: BuildKey {
                            slug: r.repo.slug.clone(),
                            number: b.number,
                        },
                        status: b.status.clone(),
                        version: b.version,
                    })
                })
                .collect();
            drop(st);
            json_ok(req, &b)
        }
        (Post, "down") => {
            st.down = true;
            drop(st);
            json_ok(req, &serde_json::json!({"down": true}))
        }
        (Post, "up") => {
            st.down = false;
            drop(st);
            json_ok(req, &serde_json::json!({"down": false}))
        }
        _ => {
            drop(st);
            json_err(req, 404, "Not Found")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_idle(sim: &DroneSim) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sim.idle() {
            assert!(Instant::now() < deadline, "simulator never went idle");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A receiver that records every webhook body it gets.
    /// (X-Drone-Event, body) of every webhook received.
    type Got = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

    fn receiver() -> (Arc<tiny_http::Server>, Got, JoinHandle<()>) {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let (s, g) = (server.clone(), got.clone());
        let h = std::thread::spawn(move || {
            while let Ok(Some(mut r)) = s.recv_timeout(Duration::from_secs(30)) {
                let ev = util::req_header(&r, "X-Drone-Event").unwrap_or_default();
                let body = util::read_body(&mut r, 1 << 20).unwrap();
                g.lock().unwrap().push((ev, body));
                // Drone ignores the answer; prove it by answering 500.
                util::respond(r, 500, "text/plain", "nope");
            }
        });
        (server, got, h)
    }

    fn field(body: &[u8], ptr: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v.pointer(ptr).cloned().unwrap_or(serde_json::Value::Null)
    }

    #[test]
    fn lifecycle_is_faithful_to_drone() {
        let (server, got, h) = receiver();
        let url = format!(
            "http://127.0.0.1:{}/hook",
            server.server_addr().to_ip().unwrap().port()
        );
        let sim = DroneSim::start(
            DroneSimConfig {
                webhook_url: Some(url),
                ..Default::default()
            },
            0,
        )
        .unwrap();
        let mut plan = BuildPlan::new(0, Outcome::Success);
        plan.steps = 2;
        plan.step_ms = 40;
        let key = sim.schedule(plan, Duration::ZERO);
        wait_idle(&sim);
        let got = got.lock().unwrap().clone();
        server.unblock();
        h.join().unwrap();
        // created, 2 × (start, end), teardown; pending→running sent nothing.
        let seen: Vec<(String, String, i64)> = got
            .iter()
            .map(|(ev, b)| {
                assert_eq!(ev, "build");
                (
                    field(b, "/action").as_str().unwrap().to_string(),
                    field(b, "/build/status").as_str().unwrap().to_string(),
                    field(b, "/build/version").as_i64().unwrap(),
                )
            })
            .collect();
        let expect: Vec<(String, String, i64)> = [
            ("created", "pending", 1),
            ("updated", "running", 2),
            ("updated", "running", 2),
            ("updated", "running", 2),
            ("updated", "running", 2),
            ("updated", "success", 3),
        ]
        .iter()
        .map(|(a, s, v)| (a.to_string(), s.to_string(), *v))
        .collect();
        assert_eq!(seen, expect);
        // created: user present, no stages, no repo.build; final: repo.build == build.
        assert!(field(&got[0].1, "/user/login").is_string());
        assert!(field(&got[0].1, "/build/stages").is_null());
        assert!(field(&got[0].1, "/repo/build").is_null());
        assert_eq!(field(&got[5].1, "/repo/build"), field(&got[5].1, "/build"));
        assert!(field(&got[5].1, "/user").is_null());
        assert_eq!(field(&got[5].1, "/system/version"), "2.25.0");
        // Drone ignored our 500s: one POST each, no retries.
        assert_eq!(sim.stats().webhooks_sent, 6);
        let b = sim.builds();
        assert_eq!(
            b,
            vec![BuildState {
                key,
                status: "success".into(),
                version: 3
            }]
        );
    }

    #[test]
    fn every_outcome_ends_where_drone_ends() {
        let (server, got, h) = receiver();
        let url = format!(
            "http://127.0.0.1:{}/hook",
            server.server_addr().to_ip().unwrap().port()
        );
        let sim = DroneSim::start(
            DroneSimConfig {
                webhook_url: Some(url),
                ..Default::default()
            },
            0,
        )
        .unwrap();
        let keys: Vec<(BuildKey, Outcome)> = Outcome::ALL
            .iter()
            .map(|o| {
                let mut p = BuildPlan::new(0, *o);
                p.step_ms = 30;
                (sim.schedule(p, Duration::ZERO), *o)
            })
            .collect();
        wait_idle(&sim);
        let got = got.lock().unwrap().clone();
        server.unblock();
        h.join().unwrap();
        let builds = sim.builds();
        for (key, o) in &keys {
            let b = builds.iter().find(|b| &b.key == key).unwrap();
            assert_eq!(b.status, o.final_status(), "{key}");
            let hooks: Vec<(String, i64)> = got
                .iter()
                .filter(|(_, body)| field(body, "/build/number") == key.number)
                .map(|(_, body)| {
                    (
                        field(body, "/build/status").as_str().unwrap().to_string(),
                        field(body, "/build/version").as_i64().unwrap(),
                    )
                })
                .collect();
            let last = hooks.last().unwrap().clone();
            match o {
                // Declined: only the pending build:created, ever.
                Outcome::Declined => {
                    assert_eq!(hooks, vec![("pending".into(), 1)]);
                    assert_eq!(b.version, 2);
                }
                Outcome::ConfigError => assert_eq!(hooks, vec![("error".into(), 1)]),
                Outcome::Skipped => {
                    assert_eq!(hooks, vec![("pending".into(), 1), ("skipped".into(), 2)])
                }
                _ => assert_eq!(last, (o.final_status().to_string(), b.version), "{key}"),
            }
        }
    }

    #[test]
    fn loss_policy_and_late_created() {
        let (server, got, h) = receiver();
        let url = format!(
            "http://127.0.0.1:{}/hook",
            server.server_addr().to_ip().unwrap().port()
        );
        let sim = DroneSim::start(
            DroneSimConfig {
                webhook_url: Some(url),
                loss: LossPolicy {
                    share: 0.0,
                    spare_first: true,
                    all_finals: true,
                },
                ..Default::default()
            },
            0,
        )
        .unwrap();
        let mut p = BuildPlan::new(1, Outcome::Failure);
        p.step_ms = 40;
        p.created_late = true;
        sim.schedule(p, Duration::ZERO);
        wait_idle(&sim);
        let got = got.lock().unwrap().clone();
        server.unblock();
        h.join().unwrap();
        let statuses: Vec<String> = got
            .iter()
            .map(|(_, b)| field(b, "/build/status").as_str().unwrap().to_string())
            .collect();
        // The running step webhook overtook build:created; the failure was lost.
        assert_eq!(
            statuses,
            vec!["running", "pending", "running", "running", "running"]
        );
        let recs = sim.webhooks();
        assert_eq!(recs.len(), 6);
        assert!(recs.last().unwrap().lost && recs.last().unwrap().done);
        assert_eq!(sim.stats().webhooks_lost, 1);
    }

    /// `repos.Increment` before `builds.Create`: with `row_delay_ms` the counter moves first
    /// and a build scheduled later is written first; `/api/builds/incomplete` lists open
    /// builds newest first (admin only; 501 in the OSS build).
    #[test]
    fn counter_race_and_incomplete_builds() {
        let sim = DroneSim::start(DroneSimConfig::default(), 0).unwrap();
        let a = util::agent(Duration::from_secs(5));
        let base = format!("http://127.0.0.1:{}", sim.port());
        let get = |path: &str, auth: bool| {
            let mut r = a.get(&format!("{base}{path}"));
            if auth {
                r = r.set("Authorization", &format!("Bearer {}", sim.token()));
            }
            let (c, b) = util::send(r, None).unwrap();
            (c, String::from_utf8(b).unwrap())
        };
        let wait = |what: &str, cond: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !cond() {
                assert!(Instant::now() < deadline, "never: {what}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let mut slow = BuildPlan::new(0, Outcome::Success);
        slow.row_delay_ms = 4_000;
        slow.step_ms = 3_000;
        let first = sim.schedule(slow, Duration::ZERO);
        let mut next = BuildPlan::new(0, Outcome::Success);
        next.step_ms = 3_000;
        let second = sim.schedule(next, Duration::from_millis(50));
        assert_eq!(second.number, first.number + 1);
        let build =
            |k: &BuildKey| get(&format!("/api/repos/{}/builds/{}", k.slug, k.number), true).0;
        wait("n written", &|| build(&second) == 200);
        assert_eq!(build(&first), 404, "n before n-1");
        let (_, repo) = get(&format!("/api/repos/{}", first.slug), true);
        assert!(
            repo.contains(&format!("\"counter\":{},", second.number)),
            "{repo}"
        );
        wait("n-1 written", &|| build(&first) == 200);
        let (c, list) = get("/api/builds/incomplete", true);
        assert_eq!(c, 200);
        let rows: Vec<Repo> = serde_json::from_str(&list).unwrap();
        let numbers: Vec<i64> = rows
            .iter()
            .map(|r| r.build.as_ref().unwrap().number)
            .collect();
        assert_eq!(
            numbers,
            vec![first.number, second.number],
            "newest build id first"
        );
        assert!(rows
            .iter()
            .all(|r| r.build.as_ref().unwrap().stages.is_empty()));
        assert_eq!(get("/api/builds/incomplete", false).0, 401);
        wait_idle(&sim);
        assert_eq!(get("/api/builds/incomplete", true).1, "[]\n");

        let oss = DroneSim::start(
            DroneSimConfig {
                oss: true,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        let r = a.get(&format!(
            "http://127.0.0.1:{}/api/builds/incomplete",
            oss.port()
        ));
        let r = r.set("Authorization", &format!("Bearer {}", oss.token()));
        assert_eq!(util::send(r, None).unwrap().0, 501);
    }

    #[test]
    fn api_shapes_auth_and_errors() {
        let sim = DroneSim::start(DroneSimConfig::default(), 0).unwrap();
        let mut p = BuildPlan::new(0, Outcome::Success);
        p.step_ms = 20;
        let key = sim.schedule(p, Duration::ZERO);
        wait_idle(&sim);
        let a = util::agent(Duration::from_secs(5));
        let base = format!("http://127.0.0.1:{}", sim.port());
        let get = |path: &str, auth: bool| {
            let mut r = a.get(&format!("{base}{path}"));
            if auth {
                r = r.set("Authorization", &format!("Bearer {}", sim.token()));
            }
            let (c, b) = util::send(r, None).unwrap();
            (c, String::from_utf8(b).unwrap())
        };
        let path = format!("/api/repos/{}/builds/{}", key.slug, key.number);
        assert_eq!(
            get(&path, false),
            (401, "{\"message\":\"Unauthorized\"}\n".into())
        );
        let (c, body) = get(&path, true);
        assert_eq!(c, 200);
        assert!(body.ends_with("]}\n"));
        let b: Build = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (b.status.as_str(), b.version, b.stages[0].steps.len()),
            ("success", 3, 2)
        );
        // Byte-identical re-serialisation: the body has drone's exact key order.
        assert_eq!(serde_json::to_string(&b).unwrap(), body.trim_end());
        assert_eq!(
            get(&format!("/api/repos/{}/builds/999", key.slug), true),
            (404, "{\"message\":\"sql: no rows in result set\"}\n".into())
        );
        assert_eq!(
            get(&format!("/api/repos/{}/builds/abc", key.slug), true),
            (
                400,
                "{\"message\":\"strconv.ParseInt: parsing \\\"abc\\\": invalid syntax\"}\n".into()
            )
        );
        assert_eq!(get("/api/repos/no/such/builds/1", true).0, 404);
        let (c, repo) = get(&format!("/api/repos/{}", key.slug), true);
        assert_eq!(c, 200);
        assert!(repo.contains("\"counter\":1,"));
        let (c, list) = get(&format!("/api/repos/{}/builds?page=1", key.slug), true);
        assert_eq!(c, 200);
        assert!(list.starts_with("[{\"id\":5001,") && !list.contains("stages"));
        sim.set_down(true);
        assert_eq!(get(&path, true).0, 503);
        sim.set_down(false);
        let s = sim.stats();
        assert_eq!(s.build_calls[&key.to_string()], 1);
        assert_eq!(
            (s.calls_while_down, s.unauthorized, s.list_calls),
            (1, 1, 1)
        );
    }
}
