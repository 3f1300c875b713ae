//! A drone-server 2.25 as a sans-IO state machine: builds are scheduled, events run in virtual
//! time (the caller says what time it is), webhooks come out as bodies to send, and API
//! requests go in as method, path and token and come out as drone's answers.
//!
//! It runs builds through drone's lifecycle ([`crate::lifecycle`]) with the payloads drone
//! writes ([`crate::shapes`], byte for byte):
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
//! Its repositories and builds are drone's [`Store`], which serves the REST API the filter
//! polls (same shapes, same error bodies, bearer-token auth on private repositories). On top of drone it decides which webhooks are *lost* (the
//! failure the filter exists for), counts every API call (per build, so tests can see
//! duplicate polls), and can be told to go down (503). `envoy-e2e`'s `drone_sim` puts it
//! behind threads and HTTP.

use crate::lifecycle::{is_done, Row};
use crate::outcome::Outcome;
use crate::rng::Rng;
use crate::shapes::{Build, Repo, Stage, Step, System, User, WebhookPayload};
use crate::store::Store;
pub use crate::store::{percent_decode, Answer};
use serde::Serialize;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fmt;

/// What to simulate for one build.
#[derive(Clone, Debug)]
pub struct BuildPlan {
    /// Repository index into the model's repositories (wraps around).
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

    /// A random plan: an outcome from [`crate::outcome::MIX`], 1–4 steps of `step_ms`±50%,
    /// 20% of them with a late `build:created`.
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

/// Configuration of a [`Drone`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Bearer token the API accepts (the admin machine user's token).
    pub token: String,
    pub loss: LossPolicy,
    pub seed: u64,
    /// Number of repositories (`octocat/hello-world`, `octocat/spoon-knife`, …; at most 6).
    pub repos: usize,
    /// Built with `-tags oss`: `GET /api/builds/incomplete` answers 501.
    pub oss: bool,
    /// Unix seconds at virtual time 0 (drone's timestamps are Unix seconds).
    pub epoch_unix: i64,
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
    /// `GET /api/repos/{o}/{n}`.
    pub repo_calls: u64,
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

/// A webhook drone sends now: its body (Go's `json.Marshal`: compact, no trailing newline)
/// and whether the loss policy drops it on the way.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub key: BuildKey,
    pub action: String,
    pub status: String,
    pub version: i64,
    pub body: Vec<u8>,
    /// Never sent (the loss policy, or nowhere to send it).
    pub lost: bool,
    /// The build's first webhook.
    pub first: bool,
}

impl Outgoing {
    /// What became of it: `at_ms` when sent, the receiver's answer or the transport error.
    pub fn record(
        &self,
        at_ms: u64,
        http_status: Option<u16>,
        transport_error: Option<String>,
    ) -> WebhookRecord {
        WebhookRecord {
            build: self.key.clone(),
            action: self.action.clone(),
            status: self.status.clone(),
            version: self.version,
            at_ms,
            lost: self.lost,
            http_status,
            transport_error,
            first: self.first,
            done: is_done(&self.status),
        }
    }
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
    at: u64,
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

/// What the model keeps of a repository beside drone's store: its owner, its builds'
/// lifecycles, its schedule.
struct RepoState {
    owner: User,
    /// The lifecycle of each build (its status and version are copied into the store's).
    rows: BTreeMap<i64, Row>,
    /// Numbers handed out by `schedule` (the repo counter moves at creation, like drone).
    reserved: i64,
    last_create_ms: u64,
}

const REPO_NAMES: [(&str, &str); 6] = [
    ("octocat", "hello-world"),
    ("octocat", "spoon-knife"),
    ("drone", "drone-sim"),
    ("acme", "api"),
    ("acme", "web"),
    ("acme", "infra"),
];

/// The drone-server model: its scheduled events and counters; its repositories and builds
/// are drone's [`Store`], which answers the API.
pub struct Drone {
    cfg: Config,
    store: Store,
    system: System,
    repos: Vec<RepoState>,
    queue: BinaryHeap<Timed>,
    seq: u64,
    next_build_id: i64,
    next_stage_id: i64,
    next_step_id: i64,
    rng: Rng,
    webhooks: Vec<WebhookRecord>,
    /// Builds that already produced a webhook (for `spare_first`).
    announced: HashSet<BuildKey>,
    plans: BTreeMap<BuildKey, BuildPlan>,
    stats: ApiStats,
    down: bool,
}

impl Drone {
    pub fn new(cfg: Config) -> Drone {
        let now = cfg.epoch_unix;
        let (named, repos): (Vec<Repo>, Vec<RepoState>) = (0..cfg.repos.clamp(1, REPO_NAMES.len()))
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
                let state = RepoState {
                    owner,
                    rows: BTreeMap::new(),
                    reserved: 0,
                    last_create_ms: 0,
                };
                (repo, state)
            })
            .unzip();
        let mut store = Store::with_repos(named);
        store.token = Some(cfg.token.clone());
        store.incomplete = !cfg.oss;
        Drone {
            store,
            rng: Rng::new(cfg.seed),
            cfg,
            system: System {
                proto: "https".into(),
                host: "drone.example.com".into(),
                link: "https://drone.example.com".into(),
                version: "2.25.0".into(),
            },
            repos,
            queue: BinaryHeap::new(),
            seq: 0,
            next_build_id: 5001,
            next_stage_id: 7001,
            next_step_id: 9001,
            webhooks: Vec::new(),
            announced: HashSet::new(),
            plans: BTreeMap::new(),
            stats: ApiStats::default(),
            down: false,
        }
    }

    pub fn token(&self) -> &str {
        &self.cfg.token
    }

    /// `namespace/name` of every repository.
    pub fn repos(&self) -> Vec<String> {
        (0..self.repos.len() as u64)
            .map(|r| self.store.slug(r))
            .collect()
    }

    /// Schedules a build to be created at virtual time `at_ms`; returns the number it will
    /// get. Creations in one repository keep their scheduling order, as build numbers do.
    pub fn schedule(&mut self, plan: BuildPlan, at_ms: u64) -> BuildKey {
        let idx = plan.repo % self.repos.len();
        let counter = self.store.counter(idx as u64) as i64;
        let r = &mut self.repos[idx];
        r.reserved = r.reserved.max(counter) + 1;
        let number = r.reserved;
        let at = at_ms.max(r.last_create_ms);
        r.last_create_ms = at;
        let key = self.key(idx, number);
        self.plans.insert(key.clone(), plan.clone());
        if plan.row_delay_ms > 0 {
            self.push(at, Ev::Reserve(idx, number));
            self.push(at + plan.row_delay_ms, Ev::Create(idx, number, plan));
        } else {
            self.push(at, Ev::Create(idx, number, plan));
        }
        key
    }

    /// Drone's view of every build (what the pipeline should converge to).
    pub fn builds(&self) -> Vec<BuildState> {
        self.store
            .rows()
            .map(|((r, n), (status, version))| BuildState {
                key: self.key(r as usize, n as i64),
                status: status.into(),
                version: version as i64,
            })
            .collect()
    }

    fn key(&self, repo: usize, number: i64) -> BuildKey {
        BuildKey {
            slug: self.store.slug(repo as u64),
            number,
        }
    }

    /// Every webhook drone produced so far, in order (as [`Drone::record`]ed).
    pub fn webhooks(&self) -> &[WebhookRecord] {
        &self.webhooks
    }

    /// The plan a build was scheduled with.
    pub fn plan(&self, key: &BuildKey) -> Option<&BuildPlan> {
        self.plans.get(key)
    }

    /// The API calls (the store's counts, by build) and webhooks so far.
    pub fn stats(&self) -> ApiStats {
        let c = &self.store.calls;
        ApiStats {
            build_calls: c
                .per_build
                .iter()
                .map(|((r, n), k)| (self.key(*r as usize, *n as i64).to_string(), *k))
                .collect(),
            repo_calls: c.repo,
            list_calls: c.list,
            incomplete_calls: c.incomplete,
            unauthorized: c.unauthorized,
            ..self.stats.clone()
        }
    }

    /// Moves every timestamp of build `key` `secs` seconds into the past, as if it had run
    /// then: how a test gets builds that finished long before a watcher started. False if
    /// drone has no such build.
    pub fn backdate(&mut self, key: &BuildKey, secs: i64) -> bool {
        let Some(b) = (self.store.find_repo(&key.slug))
            .and_then(|r| self.store.build_mut(r, key.number as u64))
        else {
            return false;
        };
        let back = |t: &mut i64| {
            if *t != 0 {
                *t -= secs;
            }
        };
        for t in [
            &mut b.created,
            &mut b.updated,
            &mut b.started,
            &mut b.finished,
        ] {
            back(t);
        }
        for s in &mut b.stages {
            for t in [
                &mut s.created,
                &mut s.updated,
                &mut s.started,
                &mut s.stopped,
            ] {
                back(t);
            }
            for x in &mut s.steps {
                back(&mut x.started);
                back(&mut x.stopped);
            }
        }
        true
    }

    /// While down, every API call is answered 503 (and counted in `calls_while_down`).
    pub fn set_down(&mut self, down: bool) {
        self.down = down;
    }

    /// When the next event is due, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.queue.peek().map(|t| t.at)
    }

    /// True when every scheduled event has run and every build is done (or stuck for good).
    pub fn idle(&self) -> bool {
        self.queue.is_empty()
            && self.store.rows().all(|((r, n), (status, _))| {
                is_done(status)
                    || (self.plans.get(&self.key(r as usize, n as i64)))
                        .is_some_and(|p| p.outcome == Outcome::Stuck)
            })
    }

    /// Runs the next event due at `now_ms`, if any, and returns the webhooks it sends, in
    /// order, with the loss policy applied (`receiving`: drone has an endpoint to send to).
    /// The caller sends them and [`Drone::record`]s each.
    pub fn run_next(&mut self, now_ms: u64, receiving: bool) -> Option<Vec<Outgoing>> {
        if self.next_due()? > now_ms {
            return None;
        }
        let Timed { at, ev, .. } = self.queue.pop()?;
        let sends = self.apply(at, ev);
        Some(
            sends
                .into_iter()
                .map(|p| self.outgoing(p, receiving))
                .collect(),
        )
    }

    /// Runs every event due at `now_ms`; the webhooks, in order.
    pub fn run_until(&mut self, now_ms: u64, receiving: bool) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while let Some(sent) = self.run_next(now_ms, receiving) {
            out.extend(sent);
        }
        out
    }

    /// Notes what became of a webhook (sent, lost, failed).
    pub fn record(&mut self, rec: WebhookRecord) {
        if rec.lost {
            self.stats.webhooks_lost += 1;
        } else if rec.transport_error.is_some() {
            self.stats.webhooks_failed += 1;
        } else {
            self.stats.webhooks_sent += 1;
        }
        self.webhooks.push(rec);
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let seq = self.seq;
        self.queue.push(Timed { at, seq, ev });
    }

    /// Which webhooks are lost is decided here, as each is sent.
    fn outgoing(&mut self, p: Pending, receiving: bool) -> Outgoing {
        let first = self.announced.insert(p.key.clone());
        let done = is_done(&p.status);
        let plan = self.plans.get(&p.key);
        let lose_final = plan.is_some_and(|x| x.lose_final);
        let lose_all = plan.is_some_and(|x| x.lose_all);
        let loss = &self.cfg.loss;
        let random = self.rng.chance(loss.share);
        // spare_first wins over everything: the sidecar must learn that the build exists.
        let lost = !receiving
            || lose_all
            || (!(first && loss.spare_first)
                && ((done && (loss.all_finals || lose_final)) || random));
        Outgoing {
            key: p.key,
            action: p.action,
            status: p.status,
            version: p.version,
            body: p.body,
            lost,
            first,
        }
    }

    fn build_mut(&mut self, repo: usize, number: i64) -> Option<(&mut Build, &mut Row)> {
        let b = self.store.build_mut(repo as u64, number as u64)?;
        Some((b, self.repos.get_mut(repo)?.rows.get_mut(&number)?))
    }

    /// Applies one event at virtual time `at`; returns the webhooks to send now.
    fn apply(&mut self, at: u64, ev: Ev) -> Vec<Pending> {
        let now = self.cfg.epoch_unix + (at / 1000) as i64;
        let mut out = Vec::new();
        match ev {
            Ev::Reserve(ri, number) => {
                self.store.taken(ri as u64, number as u64);
            }
            Ev::Create(ri, number, plan) => self.create(at, now, ri, number, plan, &mut out),
            Ev::Setup(ri, n) => {
                // manager/setup.go: pending→running, a build write (version+1), no webhook.
                if let Some((b, row)) = self.build_mut(ri, n) {
                    if row.setup() {
                        b.status = row.status.into();
                        b.started = now;
                        b.version = row.version as i64;
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
                let plan_outcome = self.plans.get(&self.key(ri, n)).map(|p| p.outcome);
                let Some((b, row)) = self.build_mut(ri, n) else {
                    return out;
                };
                if row.step().is_none() {
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
                                step.error =
                                    "Error response from daemon: pull access denied".into();
                                step.exit_code = 2;
                            }
                            _ => step.status = "success".into(),
                        }
                    }
                }
                // manager/updater.go: the step write sends build:updated with whatever the
                // build row says (running, same version): repo.build is the same object, with
                // stages.
                out.push(self.updated(ri, n, true));
            }
            Ev::Teardown(ri, n) => {
                let Some((b, row)) = self.build_mut(ri, n) else {
                    return out;
                };
                if row.is_done() {
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
                let status = b
                    .stages
                    .iter()
                    .find_map(|s| match s.status.as_str() {
                        "killed" => Some("killed"),
                        "failure" => Some("failure"),
                        "error" => Some("error"),
                        _ => None,
                    })
                    .unwrap_or("success");
                if row.teardown(status).is_none() {
                    return out;
                }
                b.status = row.status.into();
                b.finished = now;
                if b.started == 0 {
                    b.started = b.finished;
                }
                b.version = row.version as i64;
                out.push(self.updated(ri, n, true));
            }
            Ev::Cancel(ri, n) | Ev::AutoCancel(ri, n) => {
                let auto = matches!(ev, Ev::AutoCancel(..));
                let Some((b, row)) = self.build_mut(ri, n) else {
                    return out;
                };
                let cancelled = if auto {
                    row.auto_cancel()
                } else {
                    row.cancel()
                };
                if cancelled.is_none() {
                    return out;
                }
                // cancel.go / canceler.CancelPending: started steps and stages → killed, the
                // rest → skipped, exit code 130; the build → killed (or skipped when
                // superseded).
                for s in &mut b.stages {
                    for x in &mut s.steps {
                        if !is_done(&x.status) {
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
                b.status = row.status.into();
                b.finished = now;
                b.version = row.version as i64;
                out.push(self.updated(ri, n, false));
            }
            Ev::Decline(ri, n) => {
                // stages/decline.go: build → declined, finished stays 0, and no webhook at all.
                if let Some((b, row)) = self.build_mut(ri, n) {
                    if row.decline() {
                        b.status = row.status.into();
                        b.version = row.version as i64;
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

    /// `trigger.go`: the build row (with its stage and steps) is written and announced, and
    /// the rest of its lifecycle scheduled after `at` by the plan.
    fn create(
        &mut self,
        at: u64,
        now: i64,
        ri: usize,
        number: i64,
        plan: BuildPlan,
        out: &mut Vec<Pending>,
    ) {
        let (bid, sid) = (self.next_build_id, self.next_stage_id);
        self.next_build_id += 1;
        self.next_stage_id += 1;
        let step_ids: Vec<i64> = (0..plan.steps.max(1))
            .map(|_| {
                self.next_step_id += 1;
                self.next_step_id - 1
            })
            .collect();
        // Increment and insert in one go (when no race was planned).
        self.store.taken(ri as u64, number as u64);
        let repo = self.store.repo_row(ri as u64).unwrap_or_default();
        let owner = &self.repos[ri].owner;
        let mut row = Row::new();
        row.create(plan.outcome == Outcome::ConfigError);
        let sha = format!("{:040x}", (bid as u128) * 0x9e37_79b9_7f4a_7c15_u128);
        let mut b = Build {
            id: bid,
            repo_id: repo.id,
            trigger: "@hook".into(),
            number,
            status: row.status.into(),
            event: "push".into(),
            link: format!("{}/commit/{sha}", repo.link),
            message: format!("Change #{number}"),
            before: format!("{:040x}", bid as u128 * 31),
            after: sha,
            git_ref: "refs/heads/main".into(),
            source: "main".into(),
            target: "main".into(),
            author_login: owner.login.clone(),
            author_name: format!("The {}", owner.login),
            author_email: owner.email.clone(),
            author_avatar: owner.avatar.clone(),
            sender: owner.login.clone(),
            created: now,
            updated: now,
            version: row.version as i64,
            ..Default::default()
        };
        if plan.outcome == Outcome::ConfigError {
            // trigger.go createBuildError: terminal at creation, no stages.
            b.error = "yaml: line 3: did not find expected key".into();
            b.started = now;
            b.finished = now;
        } else {
            let names = ["clone", "build", "test", "deploy", "publish", "notify"];
            b.stages = vec![Stage {
                id: sid,
                repo_id: repo.id,
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
        let key = self.key(ri, number);
        self.store.put(ri as u64, number as u64, b.clone());
        self.repos[ri].rows.insert(number, row);
        // build:created carries the repo owner, the repo without .build, no stages.
        let mut created = b;
        created.stages.clear();
        let payload = WebhookPayload {
            event: "build".into(),
            action: "created".into(),
            user: Some(self.repos[ri].owner.clone()),
            repo: Some(repo),
            build: Some(created),
            system: Some(self.system.clone()),
        };
        let p = pending(&key, payload);
        let d = plan.step_ms;
        // A share of one step's length.
        let f = |share: f64| (d as f64 * share) as u64;
        let first_step = at + f(0.5);
        match plan.outcome {
            Outcome::ConfigError => out.push(p),
            Outcome::Skipped => {
                out.push(p);
                self.push(at + f(0.5), Ev::AutoCancel(ri, number));
            }
            Outcome::Declined => {
                out.push(p);
                self.push(at + d, Ev::Decline(ri, number));
            }
            Outcome::NoRun => {
                // teardown.go on a build no runner set up: its stages end `success`.
                out.push(p);
                self.push(at + d, Ev::Teardown(ri, number));
            }
            _ => {
                if plan.created_late {
                    // Arrives just after the first step-start webhook.
                    self.push(first_step + f(0.1), Ev::Send(Box::new(p)));
                } else {
                    out.push(p);
                }
                self.push(at + f(0.25), Ev::Setup(ri, number));
                let steps = plan.steps.max(1);
                let killed = plan.outcome == Outcome::Killed;
                let last = if killed { 1 } else { steps };
                for i in 0..last {
                    let s = first_step + d * i as u64;
                    self.push(s, Ev::StepStart(ri, number, i));
                    if killed {
                        self.push(s + f(0.5), Ev::Cancel(ri, number));
                    } else {
                        self.push(s + f(0.9), Ev::StepEnd(ri, number, i));
                    }
                }
                if !killed && plan.outcome != Outcome::Stuck {
                    self.push(first_step + d * steps as u64, Ev::Teardown(ri, number));
                }
            }
        }
    }

    /// A `build:updated` for the current state; `with_repo_build` for the updater/teardown
    /// shape (repo.build set), without it for the cancel shapes.
    fn updated(&self, ri: usize, n: i64, with_repo_build: bool) -> Pending {
        let b = (self.store.build(ri as u64, n as u64))
            .cloned()
            .unwrap_or_default();
        let mut repo = self.store.repo_row(ri as u64).unwrap_or_default();
        if with_repo_build {
            repo.build = Some(Box::new(b.clone()));
        }
        let key = self.key(ri, n);
        pending(
            &key,
            WebhookPayload {
                event: "build".into(),
                action: "updated".into(),
                user: None,
                repo: Some(repo),
                build: Some(b),
                system: Some(self.system.clone()),
            },
        )
    }

    /// Answers one HTTP request (`url`: the path and query string) as drone's router does,
    /// from the store; 503 while down.
    pub fn api(&mut self, method: &str, url: &str, authorization: Option<&str>) -> Answer {
        if !url.starts_with("/api/") {
            return Answer::no_route();
        }
        self.stats.api_calls += 1;
        if self.down {
            self.stats.calls_while_down += 1;
            return Answer::text(503, "upstream unavailable\n");
        }
        self.store.answer(method, url, authorization)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn drone(loss: LossPolicy) -> Drone {
        Drone::new(Config {
            token: "t".into(),
            loss,
            seed: 1,
            repos: 3,
            oss: false,
            epoch_unix: 1_700_000_000,
        })
    }

    fn field(body: &[u8], ptr: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        v.pointer(ptr).cloned().unwrap_or(serde_json::Value::Null)
    }

    /// (action, status, version) of every webhook sent, in order, running to the end.
    fn run(d: &mut Drone) -> Vec<Outgoing> {
        let out = d.run_until(u64::MAX, true);
        assert!(d.idle());
        out
    }

    #[test]
    fn lifecycle_in_virtual_time() {
        let mut d = drone(LossPolicy::default());
        let mut plan = BuildPlan::new(0, Outcome::Success);
        plan.step_ms = 40;
        let key = d.schedule(plan, 1_000);
        assert_eq!(d.run_until(999, true).len(), 0, "nothing before its time");
        assert_eq!(d.next_due(), Some(1_000));
        let out = run(&mut d);
        let seen: Vec<(&str, &str, i64)> = out
            .iter()
            .map(|o| (o.action.as_str(), o.status.as_str(), o.version))
            .collect();
        assert_eq!(
            seen,
            [
                ("created", "pending", 1),
                ("updated", "running", 2),
                ("updated", "running", 2),
                ("updated", "running", 2),
                ("updated", "running", 2),
                ("updated", "success", 3),
            ]
        );
        assert!(out[0].first && !out[1].first && !out.iter().any(|o| o.lost));
        assert_eq!(
            field(&out[5].body, "/repo/build"),
            field(&out[5].body, "/build")
        );
        assert_eq!(
            d.builds(),
            [BuildState {
                key,
                status: "success".into(),
                version: 3
            }]
        );
    }

    /// A backdated build is the same build, run earlier: the API shows its times moved back,
    /// its status and version unchanged.
    #[test]
    fn a_backdated_build_reports_that_it_finished_earlier() {
        let mut d = drone(LossPolicy::default());
        let key = d.schedule(BuildPlan::new(0, Outcome::Failure), 5_000);
        run(&mut d);
        let get = |d: &mut Drone| {
            let path = format!("/api/repos/{}/builds/{}", key.slug, key.number);
            let a = d.api("GET", &path, Some("Bearer t"));
            let b: Build = serde_json::from_slice(&a.body).unwrap();
            (b.status, b.version, b.created, b.finished)
        };
        let (status, version, created, finished) = get(&mut d);
        assert!(finished >= 1_700_000_005);
        assert!(d.backdate(&key, 3_600));
        assert_eq!(
            get(&mut d),
            (status, version, created - 3_600, finished - 3_600)
        );
        let other = BuildKey {
            number: key.number + 1,
            ..key
        };
        assert!(!d.backdate(&other, 1), "no such build");
    }

    #[test]
    fn every_outcome_ends_where_drone_ends() {
        let mut d = drone(LossPolicy::default());
        let keys: Vec<(BuildKey, Outcome)> = Outcome::ALL
            .iter()
            .map(|o| (d.schedule(BuildPlan::new(1, *o), 0), *o))
            .collect();
        let out = run(&mut d);
        let builds = d.builds();
        for (key, o) in &keys {
            let b = builds.iter().find(|b| &b.key == key).unwrap();
            assert_eq!(b.status, o.final_status(), "{key}");
            let hooks: Vec<(&str, i64)> = out
                .iter()
                .filter(|w| &w.key == key)
                .map(|w| (w.status.as_str(), w.version))
                .collect();
            match o {
                Outcome::Declined => assert_eq!((hooks, b.version), (vec![("pending", 1)], 2)),
                Outcome::ConfigError => assert_eq!(hooks, [("error", 1)]),
                Outcome::Skipped => assert_eq!(hooks, [("pending", 1), ("skipped", 2)]),
                Outcome::NoRun => assert_eq!(hooks, [("pending", 1), ("success", 2)]),
                Outcome::Stuck => assert!(hooks.iter().all(|h| h.0 != "success"), "{hooks:?}"),
                _ => assert_eq!(hooks.last(), Some(&(o.final_status(), b.version))),
            }
        }
    }

    #[test]
    fn loss_policy_and_the_api() {
        let mut d = drone(LossPolicy {
            share: 0.0,
            spare_first: true,
            all_finals: true,
        });
        let mut p = BuildPlan::new(0, Outcome::Failure);
        p.created_late = true;
        let key = d.schedule(p, 0);
        let out = run(&mut d);
        let statuses: Vec<&str> = out.iter().map(|o| o.status.as_str()).collect();
        // The running step webhook overtook build:created; the failure is lost.
        assert_eq!(
            statuses,
            ["running", "pending", "running", "running", "running", "failure"]
        );
        assert!(out[0].first && !out[0].lost && out[5].lost);
        let path = format!("/api/repos/{}/builds/{}", key.slug, key.number);
        assert_eq!(d.api("GET", &path, None).status, 401);
        let ok = d.api("GET", &path, Some("Bearer t"));
        assert_eq!(
            (ok.status, field(&ok.body, "/status")),
            (200, "failure".into())
        );
        let q = format!("{path}?access_token=t");
        assert_eq!(d.api("GET", &q, None).status, 200);
        d.set_down(true);
        assert_eq!(d.api("GET", &path, Some("t")).status, 503);
        assert_eq!(d.api("GET", "/x", None), Answer::no_route());
        let s = d.stats();
        assert_eq!(
            (
                s.build_calls[&key.to_string()],
                s.unauthorized,
                s.calls_while_down
            ),
            (2, 1, 1)
        );
    }
}
