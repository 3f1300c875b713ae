//! A drone-server 2.25 as a sans-IO state machine: builds are scheduled, events run in virtual
//! time (the caller says what time it is), webhooks come out as bodies to send, and API
//! requests go in as method, path and token and come out as drone's answers.
//!
//! Its builds are [`Builds`] (`crate::workload`): numbered per repository, planned as timed
//! acts on the one schedule, each applied to its lifecycle row ([`crate::lifecycle`]) and
//! written to drone's [`Store`], which answers the REST API the filter polls (same shapes,
//! same error bodies, bearer-token auth on private repositories). The server keeps each build
//! whole there (stages, steps, times: the payloads drone writes, [`crate::shapes`], byte for
//! byte) and adds what a server does: `build:created` racing the first step webhook (drone
//! sends it from another goroutine), which webhooks are *lost* (the failure the filter exists
//! for), every API call counted (per build, so tests can see duplicate polls), and outages
//! (503). `envoy-e2e`'s `drone_sim` puts it behind threads and HTTP.

use crate::lifecycle::{is_done, Act};
use crate::outcome::Outcome;
use crate::rng::Rng;
use crate::shapes::{Build, Repo, Stage, Step, System, User, WebhookPayload};
use crate::store::Store;
pub use crate::store::{percent_decode, Answer};
use crate::workload::Builds;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
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

/// A webhook body made as drone sends it, for build `b` (an index into the [`Builds`]).
#[derive(Debug)]
struct Pending {
    b: usize,
    action: String,
    status: String,
    version: i64,
    body: Vec<u8>,
}

/// What the server adds to one of its [`Builds`]: how it was planned, how many of its step
/// acts ran (the k-th is step k / 2's start or end), its `build:created` held back to race
/// the first step.
struct Extra {
    plan: BuildPlan,
    steps_run: usize,
    late: Option<Pending>,
}

const REPO_NAMES: [(&str, &str); 6] = [
    ("octocat", "hello-world"),
    ("octocat", "spoon-knife"),
    ("drone", "drone-sim"),
    ("acme", "api"),
    ("acme", "web"),
    ("acme", "infra"),
];

/// The drone-server model: its builds are [`Builds`] (numbering, lifecycle rows, the one
/// schedule of timed acts, the [`Store`] that answers the API), kept whole in the store;
/// beside them what a server adds: owners, the loss policy, webhooks, counters, outages.
pub struct Drone {
    cfg: Config,
    d: Builds,
    owners: Vec<User>,
    /// Per repository, when its last build is created (creations keep scheduling order).
    last_create_ms: Vec<u64>,
    extra: Vec<Extra>,
    system: System,
    next_build_id: i64,
    next_stage_id: i64,
    next_step_id: i64,
    rng: Rng,
    webhooks: Vec<WebhookRecord>,
    /// Builds that already produced a webhook (for `spare_first`).
    announced: HashSet<usize>,
    stats: ApiStats,
    down: bool,
}

impl Drone {
    pub fn new(cfg: Config) -> Drone {
        let now = cfg.epoch_unix;
        let (named, owners): (Vec<Repo>, Vec<User>) = (0..cfg.repos.clamp(1, REPO_NAMES.len()))
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
                (repo, owner)
            })
            .unzip();
        let mut store = Store::with_repos(named);
        store.token = Some(cfg.token.clone());
        store.incomplete = !cfg.oss;
        Drone {
            d: Builds::new(store),
            last_create_ms: vec![0; owners.len()],
            owners,
            extra: Vec::new(),
            rng: Rng::new(cfg.seed),
            cfg,
            system: System {
                proto: "https".into(),
                host: "drone.example.com".into(),
                link: "https://drone.example.com".into(),
                version: "2.25.0".into(),
            },
            next_build_id: 5001,
            next_stage_id: 7001,
            next_step_id: 9001,
            webhooks: Vec::new(),
            announced: HashSet::new(),
            stats: ApiStats::default(),
            down: false,
        }
    }

    pub fn token(&self) -> &str {
        &self.cfg.token
    }

    /// `namespace/name` of every repository.
    pub fn repos(&self) -> Vec<String> {
        (0..self.owners.len() as u64)
            .map(|r| self.d.store.slug(r))
            .collect()
    }

    /// Schedules a build to be created at virtual time `at_ms`; returns the number it will
    /// get. Creations in one repository keep their scheduling order, as build numbers do.
    pub fn schedule(&mut self, plan: BuildPlan, at_ms: u64) -> BuildKey {
        let ri = plan.repo % self.owners.len();
        let at = at_ms.max(self.last_create_ms[ri]);
        self.last_create_ms[ri] = at;
        let mut acts = server_acts(&plan, at + plan.row_delay_ms);
        if plan.row_delay_ms > 0 {
            acts.push((at, Act::Reserve));
        }
        let b = self.d.plan(ri as u64, plan.outcome, acts);
        self.extra.push(Extra {
            plan,
            steps_run: 0,
            late: None,
        });
        self.key_of(b)
    }

    /// Drone's view of every build (what the pipeline should converge to).
    pub fn builds(&self) -> Vec<BuildState> {
        self.d
            .store
            .rows()
            .map(|((r, n), (status, version))| BuildState {
                key: self.key(r, n),
                status: status.into(),
                version: version as i64,
            })
            .collect()
    }

    fn key(&self, repo: u64, number: u64) -> BuildKey {
        BuildKey {
            slug: self.d.store.slug(repo),
            number: number as i64,
        }
    }

    fn key_of(&self, b: usize) -> BuildKey {
        let build = &self.d.builds[b];
        self.key(build.repo, build.number)
    }

    /// Every webhook drone produced so far, in order (as [`Drone::record`]ed).
    pub fn webhooks(&self) -> &[WebhookRecord] {
        &self.webhooks
    }

    /// The plan a build was scheduled with.
    pub fn plan(&self, key: &BuildKey) -> Option<&BuildPlan> {
        let r = self.d.store.find_repo(&key.slug)?;
        let b =
            (self.d.builds.iter()).position(|b| b.repo == r && b.number as i64 == key.number)?;
        self.extra.get(b).map(|e| &e.plan)
    }

    /// The API calls (the store's counts, by build) and webhooks so far.
    pub fn stats(&self) -> ApiStats {
        let c = &self.d.store.calls;
        ApiStats {
            build_calls: c
                .per_build
                .iter()
                .map(|((r, n), k)| (self.key(*r, *n).to_string(), *k))
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
        let Some(b) = (self.d.store.find_repo(&key.slug))
            .and_then(|r| self.d.store.build_mut(r, key.number as u64))
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
        self.d.due.first_at()
    }

    /// True when every scheduled event has run and every build is done (or stuck for good).
    pub fn idle(&self) -> bool {
        self.d.due.is_empty()
            && (self.d.builds.iter()).all(|b| b.row.is_done() || b.outcome == Outcome::Stuck)
    }

    /// Runs the next event due at `now_ms`, if any, and returns the webhooks it sends, in
    /// order, with the loss policy applied (`receiving`: drone has an endpoint to send to).
    /// The caller sends them and [`Drone::record`]s each.
    pub fn run_next(&mut self, now_ms: u64, receiving: bool) -> Option<Vec<Outgoing>> {
        let (at, (b, act)) = self.d.due.next_before(now_ms.saturating_add(1))?;
        let sends = self.apply(b, act, at);
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

    /// Which webhooks are lost is decided here, as each is sent.
    fn outgoing(&mut self, p: Pending, receiving: bool) -> Outgoing {
        let first = self.announced.insert(p.b);
        let done = is_done(&p.status);
        let plan = self.extra.get(p.b).map(|e| &e.plan);
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
            key: self.key_of(p.b),
            action: p.action,
            status: p.status,
            version: p.version,
            body: p.body,
            lost,
            first,
        }
    }

    /// Drone does `act` to build `b` at virtual time `at` (the row and its write by
    /// [`Builds::act`]), and the server writes the rest of the build (stages, steps, times);
    /// returns the webhooks to send now.
    fn apply(&mut self, b: usize, act: Act, at: u64) -> Vec<Pending> {
        let now = self.cfg.epoch_unix + (at / 1000) as i64;
        let before = self.d.builds[b].row.version;
        // The server's schedule has no late reports or teardowns after a cancel: no races.
        let hook = self.d.act(b, act, at, &mut |_| false);
        if act == Act::Create {
            return self.create(b, now);
        }
        let wrote = self.d.builds[b].row.version != before;
        let (ri, n) = (self.d.builds[b].repo, self.d.builds[b].number);
        let mut out = Vec::new();
        if !matches!(act, Act::Create | Act::Setup | Act::Reserve) {
            // The held-back build:created goes with (or just after) the first step's webhook.
            out.extend(self.extra[b].late.take());
        }
        let step = match act {
            Act::Step => {
                self.extra[b].steps_run += 1;
                Some(self.extra[b].steps_run - 1)
            }
            _ => None,
        };
        let outcome = self.d.builds[b].outcome;
        let Some(build) = self.d.store.build_mut(ri, n) else {
            return out;
        };
        match act {
            Act::Setup if wrote => {
                // manager/setup.go: pending→running, a build write (version+1), no webhook.
                build.started = now;
                for s in &mut build.stages {
                    s.status = "running".into();
                    s.started = now;
                    s.machine = "runner-01".into();
                    s.version += 1;
                }
            }
            Act::Step if hook.is_some() => {
                let k = step.unwrap_or(0);
                let (i, start) = (k / 2, k % 2 == 0);
                let nsteps = build.stages.first().map(|s| s.steps.len()).unwrap_or(0);
                if let Some(step) = build.stages.first_mut().and_then(|s| s.steps.get_mut(i)) {
                    step.version += 1;
                    if start {
                        step.status = "running".into();
                        step.started = now;
                    } else {
                        step.stopped = now.max(step.started);
                        let last = i + 1 == nsteps;
                        match outcome {
                            Outcome::Failure if last => {
                                step.status = "failure".into();
                                step.exit_code = 1;
                            }
                            Outcome::Error if last => {
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
                out.insert(0, self.updated(b, true));
            }
            Act::Teardown(_) if hook.is_some() => {
                // teardown.go: each stage ends as its worst step (the build's status, the
                // first killed/failure/error stage's, was planned as the outcome's).
                for s in &mut build.stages {
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
                build.finished = now;
                if build.started == 0 {
                    build.started = build.finished;
                }
                out.push(self.updated(b, true));
            }
            Act::Cancel | Act::Skip if hook.is_some() => {
                // cancel.go / canceler.CancelPending: started steps and stages → killed, the
                // rest → skipped, exit code 130; the build → killed (or skipped when
                // superseded).
                for s in &mut build.stages {
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
                build.finished = now;
                out.push(self.updated(b, false));
            }
            Act::Decline if wrote => {
                // stages/decline.go: build → declined, finished stays 0, and no webhook at all.
                for s in &mut build.stages {
                    s.status = "declined".into();
                    s.version += 1;
                }
            }
            _ => {}
        }
        out
    }

    /// `trigger.go`: the build row (with its stage and steps) is written whole and announced
    /// (`build:created`, held back when the plan races it with the first step).
    fn create(&mut self, b: usize, now: i64) -> Vec<Pending> {
        let (ri, number) = (self.d.builds[b].repo, self.d.builds[b].number as i64);
        let plan = self.extra[b].plan.clone();
        let (bid, sid) = (self.next_build_id, self.next_stage_id);
        self.next_build_id += 1;
        self.next_stage_id += 1;
        let step_ids: Vec<i64> = (0..plan.steps.max(1))
            .map(|_| {
                self.next_step_id += 1;
                self.next_step_id - 1
            })
            .collect();
        let repo = self.d.store.repo_row(ri).unwrap_or_default();
        let owner = &self.owners[ri as usize];
        let row = &self.d.builds[b].row;
        let sha = format!("{:040x}", (bid as u128) * 0x9e37_79b9_7f4a_7c15_u128);
        let mut build = Build {
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
            build.error = "yaml: line 3: did not find expected key".into();
            build.started = now;
            build.finished = now;
        } else {
            let names = ["clone", "build", "test", "deploy", "publish", "notify"];
            build.stages = vec![Stage {
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
        self.d.store.put(ri, number as u64, build.clone());
        // build:created carries the repo owner, the repo without .build, no stages.
        build.stages.clear();
        let user = Some(self.owners[ri as usize].clone());
        let p = self.payload(b, "created", user, repo, build);
        let runs = !matches!(
            plan.outcome,
            Outcome::ConfigError | Outcome::Skipped | Outcome::Declined | Outcome::NoRun
        );
        if runs && plan.created_late {
            // Arrives just after the first step-start webhook.
            self.extra[b].late = Some(p);
            return Vec::new();
        }
        vec![p]
    }

    /// A `build:updated` for the current state; `with_repo_build` for the updater/teardown
    /// shape (repo.build set), without it for the cancel shapes.
    fn updated(&self, b: usize, with_repo_build: bool) -> Pending {
        let (ri, n) = (self.d.builds[b].repo, self.d.builds[b].number);
        let build = self.d.store.build(ri, n).cloned().unwrap_or_default();
        let mut repo = self.d.store.repo_row(ri).unwrap_or_default();
        if with_repo_build {
            repo.build = Some(Box::new(build.clone()));
        }
        self.payload(b, "updated", None, repo, build)
    }

    /// A `build:<action>` webhook of build `b`: its body as Go's `json.Marshal` writes it
    /// (compact, no trailing newline).
    fn payload(
        &self,
        b: usize,
        action: &str,
        user: Option<User>,
        repo: Repo,
        build: Build,
    ) -> Pending {
        let (status, version) = (build.status.clone(), build.version);
        let body = serde_json::to_vec(&WebhookPayload {
            event: "build".into(),
            action: action.into(),
            user,
            repo: Some(repo),
            build: Some(build),
            system: Some(self.system.clone()),
        });
        Pending {
            b,
            action: action.into(),
            status,
            version,
            body: body.unwrap_or_default(),
        }
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
        self.d.store.answer(method, url, authorization)
    }
}

/// The acts of `plan`'s build created at `at`, timed by its steps: set up a quarter step
/// in, each step from half a step in, one step long (its end at nine tenths), torn down a
/// step after the last (a killed build: cancelled half into its first step, no teardown; a
/// stuck one: none); skipped half a step in, declined or torn down without running a step in.
fn server_acts(plan: &BuildPlan, at: u64) -> Vec<(u64, Act)> {
    let d = plan.step_ms;
    // A share of one step's length.
    let f = |share: f64| (d as f64 * share) as u64;
    let first_step = at + f(0.5);
    let mut acts = vec![(at, Act::Create)];
    match plan.outcome {
        Outcome::ConfigError => {}
        Outcome::Skipped => acts.push((at + f(0.5), Act::Skip)),
        Outcome::Declined => acts.push((at + d, Act::Decline)),
        // teardown.go on a build no runner set up: its stages end `success`.
        Outcome::NoRun => acts.push((at + d, Act::Teardown(plan.outcome.final_status()))),
        _ => {
            acts.push((at + f(0.25), Act::Setup));
            let steps = plan.steps.max(1);
            let killed = plan.outcome == Outcome::Killed;
            for i in 0..if killed { 1 } else { steps } {
                let s = first_step + d * i as u64;
                acts.push((s, Act::Step));
                acts.push(if killed {
                    (s + f(0.5), Act::Cancel)
                } else {
                    (s + f(0.9), Act::Step)
                });
            }
            if !killed && plan.outcome != Outcome::Stuck {
                let status = plan.outcome.final_status();
                acts.push((first_step + d * steps as u64, Act::Teardown(status)));
            }
        }
    }
    acts
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
