//! Drone as every harness sees it (chaos, the scenario tests, soak, the benchmarks, and the
//! Envoy simulator through [`crate::server`], with named repositories and builds kept whole:
//! [`Store::with_repos`], [`Store::put`]): a store of repositories `octocat/repo-<r>` (id
//! `100 + r`, [`repo_id`]) and
//! their builds, each with drone's current row (status, version), numbered per repository as
//! drone numbers them (`repos.Increment`: the counter moves when the number is taken, the row
//! is written later), and drone's REST API answered from it: a build, the builds list, a
//! repository, the OSS build's `incomplete`, and drone's 404s ([`Answer::not_found`],
//! [`Answer::no_rows`]).
//!
//! The harness owns time and its workload: it writes rows when drone would (through
//! [`crate::lifecycle::Row`]) and makes webhook bodies with [`Bodies`] (templates filled by
//! string replacement, fast enough for the benchmarks' millions of webhooks). It puts the
//! store behind its host's responder with an adapter of a few lines (faults, delays and
//! outages are the harness's own).

use crate::lifecycle::Shape;
use crate::shapes::{error_body, Build, Repo};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Repository `octocat/repo-<r>` has id `100 + r`.
pub fn repo_id(repo: u64) -> u64 {
    100 + repo
}

/// A body with placeholders, filled by plain string replacement.
#[derive(Clone, Debug)]
struct Template(String);

const RID: &str = "\"@@RID@@\"";
const RNAME: &str = "@@RNAME@@";
const BID: &str = "\"@@BID@@\"";
const NUM: &str = "\"@@NUM@@\"";
const STATUS: &str = "@@STATUS@@";
const VER: &str = "\"@@VER@@\"";
const CTR: &str = "\"@@CTR@@\"";

impl Template {
    fn new(v: &Value, newline: bool) -> Template {
        let mut s = serde_json::to_string(v).unwrap_or_default();
        if newline {
            // `render.JSON`: json.Encoder's trailing newline.
            s.push('\n');
        }
        Template(s)
    }

    /// The body of build `number` of `repo` with `status` and `version`, the repository's
    /// counter at `counter`.
    fn fill(
        &self,
        (repo, number): (u64, u64),
        status: &str,
        version: u64,
        counter: u64,
    ) -> Vec<u8> {
        self.0
            .replace(RID, &repo_id(repo).to_string())
            .replace(RNAME, &format!("repo-{repo}"))
            .replace(BID, &(repo * 1_000_000 + number).to_string())
            .replace(NUM, &number.to_string())
            .replace(STATUS, status)
            .replace(VER, &version.to_string())
            .replace(CTR, &counter.to_string())
            .into_bytes()
    }
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(crate::fixtures::text(name)).unwrap_or_default()
}

fn mark_repo(repo: &mut Value) {
    repo["id"] = "@@RID@@".into();
    repo["name"] = RNAME.into();
    repo["slug"] = format!("octocat/{RNAME}").into();
    repo["counter"] = "@@CTR@@".into();
}

fn mark_build(build: &mut Value) {
    build["id"] = "@@BID@@".into();
    build["repo_id"] = "@@RID@@".into();
    build["number"] = "@@NUM@@".into();
    build["status"] = STATUS.into();
    build["version"] = "@@VER@@".into();
}

/// Drone's webhook and API bodies for any repository, build, status and version, made from
/// the fixtures (`webhook-build-created.json`, `webhook-build-updated-running.json`,
/// `api-build-success.json`).
#[derive(Clone, Debug)]
pub struct Bodies {
    created: Template,
    config_error: Template,
    updated: Template,
    cancel: Template,
    api_build: Template,
    api_repo: Template,
    counter: u64,
}

impl Default for Bodies {
    fn default() -> Self {
        Bodies::new()
    }
}

impl Bodies {
    pub fn new() -> Bodies {
        let mut created = fixture("webhook-build-created.json");
        let counter = created["repo"]["counter"].as_u64().unwrap_or(0);
        mark_repo(&mut created["repo"]);
        mark_build(&mut created["build"]);
        if let Some(repo) = created["repo"].as_object_mut() {
            repo.remove("build");
        }
        let mut config_error = created.clone();
        config_error["build"]["error"] = "yaml: line 3: did not find expected key".into();
        let mut updated = fixture("webhook-build-updated-running.json");
        mark_repo(&mut updated["repo"]);
        mark_build(&mut updated["build"]);
        let mut cancel = updated.clone();
        updated["repo"]["build"] = updated["build"].clone();
        if let Some(repo) = cancel["repo"].as_object_mut() {
            repo.remove("build");
        }
        let mut api = fixture("api-build-success.json");
        mark_build(&mut api);
        let mut repo = fixture("webhook-build-created.json")["repo"].clone();
        mark_repo(&mut repo);
        Bodies {
            created: Template::new(&created, false),
            config_error: Template::new(&config_error, false),
            updated: Template::new(&updated, false),
            cancel: Template::new(&cancel, false),
            api_build: Template::new(&api, true),
            api_repo: Template::new(&repo, true),
            counter,
        }
    }

    /// A live webhook: `build:created` for `pending`, else a `build:updated` like drone's
    /// step webhooks (the 3.5 KB fixture's shape, with `repo.build`).
    pub fn webhook(&self, repo: u64, number: u64, status: &str, version: u64) -> Vec<u8> {
        let shape = if status == "pending" {
            Shape::Created
        } else {
            Shape::Updated
        };
        self.hook(shape, (repo, number), status, version)
    }

    /// The webhook of `shape` ([`crate::lifecycle::Hook`]) carrying `status` and `version`:
    /// `build:created` (with the parser's error when created `error`: a config error),
    /// `build:updated` with `repo.build`, or the cancel's `build:updated` without it.
    pub fn hook(
        &self,
        shape: Shape,
        (repo, number): (u64, u64),
        status: &str,
        version: u64,
    ) -> Vec<u8> {
        let template = match shape {
            Shape::Created if status == "error" => &self.config_error,
            Shape::Created => &self.created,
            Shape::Updated => &self.updated,
            Shape::Cancel => &self.cancel,
        };
        template.fill((repo, number), status, version, number)
    }

    /// `GET /api/repos/octocat/repo-<r>/builds/<n>`'s body.
    pub fn api_build(&self, repo: u64, number: u64, status: &str, version: u64) -> Vec<u8> {
        self.api_build.fill((repo, number), status, version, number)
    }

    /// `GET /api/repos/octocat/repo-<r>`'s body with `counter`, the last number taken.
    pub fn api_repo(&self, repo: u64, counter: u64) -> Vec<u8> {
        self.api_repo.fill((repo, 0), "", 0, counter)
    }

    /// The fixture repository's `counter`.
    pub fn fixture_counter(&self) -> u64 {
        self.counter
    }
}

/// The API calls the store answered.
#[derive(Clone, Debug, Default)]
pub struct Calls {
    /// `GET /api/repos/{o}/{n}/builds/{number}`.
    pub build: u64,
    /// The same, per build (repository, number).
    pub per_build: BTreeMap<(u64, u64), u64>,
    /// `GET /api/repos/{o}/{n}`.
    pub repo: u64,
    /// `GET /api/repos/{o}/{n}/builds` (the list).
    pub list: u64,
    /// `GET /api/builds/incomplete` answered with the list (not in the OSS build).
    pub incomplete: u64,
    /// Build lookups answered 404 (no such build in a repository drone has).
    pub not_found: u64,
    /// Build lookups under a repository name drone does not have.
    pub steered: Vec<String>,
    /// Answered 401 (no or wrong token).
    pub unauthorized: u64,
    /// Paths drone's router has no route for (`404 page not found`).
    pub unrouted: Vec<String>,
}

/// A build as drone stores it: its row (status, version), its body made from the templates;
/// or the whole `core.Build` (stages, steps, times) when the harness keeps one
/// ([`crate::server`]), answered as it is.
#[derive(Clone, Debug)]
enum Entry {
    Row(String, u64),
    Build(Box<Build>),
}

impl Entry {
    fn row(&self) -> (&str, u64) {
        match self {
            Entry::Row(s, v) => (s, *v),
            Entry::Build(b) => (&b.status, b.version as u64),
        }
    }
}

/// Drone's repositories and builds (see the module doc).
#[derive(Clone, Debug)]
pub struct Store {
    pub bodies: Bodies,
    /// (repository, number) → drone's build row.
    rows: BTreeMap<(u64, u64), Entry>,
    /// The numbers taken per repository (`repos.Increment`), rows written or not.
    counters: BTreeMap<u64, u64>,
    /// Repositories `1..=n` exist; `None`: every `octocat/repo-<r>` does (`repo-0` too: the
    /// benchmarks number from 0).
    pub repos: Option<u64>,
    /// Named repositories (`octocat/hello-world`, …): repository `r` is `named[r]`, answered
    /// as that row (its `counter` the store's); empty: `octocat/repo-<r>` from the templates.
    named: Vec<Repo>,
    /// The bearer token the API wants; `None`: not checked.
    pub token: Option<String>,
    /// Built without `-tags oss`: `GET /api/builds/incomplete` lists the open builds (those
    /// kept whole); else it answers 501.
    pub incomplete: bool,
    pub calls: Calls,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// Every `octocat/repo-<r>`, no token checked, no builds.
    pub fn new() -> Store {
        Store {
            bodies: Bodies::new(),
            rows: BTreeMap::new(),
            counters: BTreeMap::new(),
            repos: None,
            named: Vec::new(),
            token: None,
            incomplete: false,
            calls: Calls::default(),
        }
    }

    /// The repositories `named` (repository `r` is `named[r]`), and no others.
    pub fn with_repos(named: Vec<Repo>) -> Store {
        Store {
            named,
            ..Store::new()
        }
    }

    /// `namespace/name` of repository `r`.
    pub fn slug(&self, repo: u64) -> String {
        match self.named.get(repo as usize) {
            Some(r) => r.slug.clone(),
            None => format!("octocat/repo-{repo}"),
        }
    }

    /// Named repository `r`'s row as the API shows it now (its counter, its version moved
    /// with it).
    pub fn repo_row(&self, repo: u64) -> Option<Repo> {
        let mut r = self.named.get(repo as usize)?.clone();
        r.counter = self.counter(repo) as i64;
        r.version += r.counter;
        Some(r)
    }

    /// The named repository `namespace/name`.
    pub fn find_repo(&self, slug: &str) -> Option<u64> {
        self.named
            .iter()
            .position(|r| r.slug == slug)
            .map(|i| i as u64)
    }

    /// Drone takes the next number of `repo` (`repos.Increment`); its row comes later.
    pub fn take_number(&mut self, repo: u64) -> u64 {
        let c = self.counters.entry(repo).or_insert(0);
        *c += 1;
        *c
    }

    /// The repository's counter is at least `number` (numbers taken by builds not written).
    pub fn taken(&mut self, repo: u64, number: u64) {
        let c = self.counters.entry(repo).or_insert(0);
        *c = (*c).max(number);
    }

    /// Drone writes build `repo/number`'s row (of a build kept whole: its status and
    /// version); the API answers it from now on.
    pub fn write(&mut self, repo: u64, number: u64, status: &str, version: u64) {
        self.taken(repo, number);
        match self.rows.get_mut(&(repo, number)) {
            Some(Entry::Build(b)) => (b.status, b.version) = (status.to_string(), version as i64),
            _ => {
                let row = Entry::Row(status.to_string(), version);
                self.rows.insert((repo, number), row);
            }
        }
    }

    /// Drone writes build `repo/number` whole; the API answers it as it is from now on.
    pub fn put(&mut self, repo: u64, number: u64, build: Build) {
        self.taken(repo, number);
        self.rows
            .insert((repo, number), Entry::Build(Box::new(build)));
    }

    /// Build `repo/number`, when kept whole ([`Store::put`]).
    pub fn build_mut(&mut self, repo: u64, number: u64) -> Option<&mut Build> {
        match self.rows.get_mut(&(repo, number))? {
            Entry::Build(b) => Some(b),
            Entry::Row(..) => None,
        }
    }

    /// Build `repo/number`, when kept whole.
    pub fn build(&self, repo: u64, number: u64) -> Option<&Build> {
        match self.rows.get(&(repo, number))? {
            Entry::Build(b) => Some(b),
            Entry::Row(..) => None,
        }
    }

    /// Build `repo/number`'s row.
    pub fn row(&self, repo: u64, number: u64) -> Option<(&str, u64)> {
        self.rows.get(&(repo, number)).map(Entry::row)
    }

    /// Every row: ((repository, number), (status, version)).
    pub fn rows(&self) -> impl Iterator<Item = ((u64, u64), (&str, u64))> {
        self.rows.iter().map(|(k, e)| (*k, e.row()))
    }

    /// The last number taken in `repo`.
    pub fn counter(&self, repo: u64) -> u64 {
        self.counters.get(&repo).copied().unwrap_or(0)
    }

    fn repo_of(&self, owner: &str, name: &str) -> Option<u64> {
        if !self.named.is_empty() {
            return self.find_repo(&format!("{owner}/{name}"));
        }
        let r = name.strip_prefix("repo-")?.parse::<u64>().ok()?;
        (owner == "octocat" && self.repos.is_none_or(|n| (1..=n).contains(&r))).then_some(r)
    }

    fn unauthorized(&mut self) -> Answer {
        self.calls.unauthorized += 1;
        Answer::error(401, "Unauthorized")
    }

    /// Answers `method path` (the query string, if any, after `?`) as drone's router does.
    pub fn answer(&mut self, method: &str, url: &str, authorization: Option<&str>) -> Answer {
        if method != "GET" {
            return Answer::text(405, "");
        }
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let param = |k: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(q, _)| *q == k)
                .map(|(_, v)| percent_decode(v))
        };
        // session.go: "Bearer " is stripped, a bare token works too, and ?access_token= as
        // well.
        let authed = self.token.as_ref().is_none_or(|t| {
            authorization
                .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_string())
                .or_else(|| param("access_token"))
                .as_ref()
                == Some(t)
        });
        let segs: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match segs.as_slice() {
            ["api", "builds", "incomplete"] => self.open_builds(authed),
            ["api", "repos", owner, name, rest @ ..] => {
                let page = |k: &str| param(k).and_then(|v| v.parse::<usize>().ok());
                let (page, per) = (page("page"), page("per_page"));
                self.repo_api(path, (owner, name), rest, (page, per), authed)
            }
            _ => {
                self.calls.unrouted.push(path.to_string());
                Answer::no_route()
            }
        }
    }

    /// `GET /api/repos/{owner}/{name}/…`.
    fn repo_api(
        &mut self,
        path: &str,
        (owner, name): (&str, &str),
        rest: &[&str],
        (page, per): (Option<usize>, Option<usize>),
        authed: bool,
    ) -> Answer {
        let Some(repo) = self.repo_of(owner, name) else {
            // acl/repo.go: an unknown repository is 401 for guests and 404 for users.
            if !authed {
                return self.unauthorized();
            }
            if let ["builds", _] = rest {
                self.calls.steered.push(path.to_string());
            }
            return Answer::not_found();
        };
        if !authed && self.named.get(repo as usize).is_none_or(|r| r.private) {
            return self.unauthorized();
        }
        match rest {
            [] => {
                self.calls.repo += 1;
                match self.repo_row(repo) {
                    Some(r) => Answer::json(&r),
                    None => Answer::json_bytes(self.bodies.api_repo(repo, self.counter(repo))),
                }
            }
            ["builds"] => {
                self.calls.list += 1;
                self.list(repo, page.unwrap_or(1).max(1), per)
            }
            ["builds", "latest"] => match self.rows.range((repo, 0)..=(repo, u64::MAX)).next_back()
            {
                Some(((_, n), e)) => self.render(repo, *n, e),
                None => Answer::no_rows(),
            },
            ["builds", num] => {
                let Ok(number) = num.parse::<u64>() else {
                    let msg = format!("strconv.ParseInt: parsing \"{num}\": invalid syntax");
                    return Answer::error(400, &msg);
                };
                self.calls.build += 1;
                *self.calls.per_build.entry((repo, number)).or_default() += 1;
                match self.rows.get(&(repo, number)) {
                    Some(e) => self.render(repo, number, e),
                    None => {
                        self.calls.not_found += 1;
                        Answer::no_rows()
                    }
                }
            }
            _ => {
                self.calls.unrouted.push(path.to_string());
                Answer::no_route()
            }
        }
    }

    fn render(&self, repo: u64, number: u64, e: &Entry) -> Answer {
        match e {
            Entry::Row(s, v) => Answer::json_bytes(self.bodies.api_build(repo, number, s, *v)),
            Entry::Build(b) => Answer::json(b),
        }
    }

    /// `GET /api/repos/{o}/{n}/builds?page=&per_page=`: newest build id first, without
    /// stages (`list.go`).
    fn list(&self, repo: u64, page: usize, per: Option<usize>) -> Answer {
        let per = per.filter(|p| (1..=100).contains(p)).unwrap_or(25);
        let mut rows: Vec<(i64, u64, &Entry)> = self
            .rows
            .range((repo, 0)..=(repo, u64::MAX))
            .rev()
            .map(|((r, n), e)| match e {
                Entry::Build(b) => (b.id, *n, e),
                Entry::Row(..) => ((r * 1_000_000 + n) as i64, *n, e),
            })
            .collect();
        rows.sort_by_key(|(id, ..)| std::cmp::Reverse(*id));
        let items: Vec<Vec<u8>> = rows
            .into_iter()
            .skip((page - 1) * per)
            .take(per)
            .map(|(_, n, e)| match e {
                Entry::Row(s, v) => {
                    let mut b = self.bodies.api_build(repo, n, s, *v);
                    b.pop();
                    b
                }
                Entry::Build(b) => {
                    let mut b = (**b).clone();
                    b.stages.clear();
                    serde_json::to_vec(&b).unwrap_or_default()
                }
            })
            .collect();
        let mut body = b"[".to_vec();
        body.extend(items.join(&b","[..]));
        body.extend(b"]\n");
        Answer::json_bytes(body)
    }

    /// `GET /api/builds/incomplete` (admins only): one repository per build kept whole with
    /// a pending or running stage, newest build id first, at most 50, the build without
    /// stages (store/repos/repos.go `queryRepoWithBuildIncomplete`); 501 in the OSS build
    /// (`builds_oss.go`).
    fn open_builds(&mut self, authed: bool) -> Answer {
        if !authed {
            return self.unauthorized();
        }
        if !self.incomplete {
            return Answer::error(501, "Not Implemented");
        }
        let mut open: Vec<Repo> = self
            .rows
            .iter()
            .filter_map(|((r, _), e)| match e {
                Entry::Build(b)
                    if b.stages
                        .iter()
                        .any(|s| s.status == "pending" || s.status == "running") =>
                {
                    let mut repo = self.repo_row(*r)?;
                    let mut build = (**b).clone();
                    build.stages.clear();
                    repo.build = Some(Box::new(build));
                    Some(repo)
                }
                _ => None,
            })
            .collect();
        open.sort_by_key(|r| std::cmp::Reverse(r.build.as_ref().map_or(0, |b| b.id)));
        open.truncate(50);
        self.calls.incomplete += 1;
        Answer::json(&open)
    }
}

/// Drone's answer to an HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    /// `render.JSON`: json.Encoder output, compact with a trailing newline.
    pub fn json(v: &impl Serialize) -> Answer {
        let mut body = serde_json::to_vec(v).unwrap_or_default();
        body.push(b'\n');
        Answer::json_bytes(body)
    }

    /// `handler/api/errors`: `{"message": …}`.
    pub fn error(status: u16, message: &str) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: error_body(message).into_bytes(),
        }
    }

    /// A body already rendered as `render.JSON` does (the store's templates).
    pub fn json_bytes(body: Vec<u8>) -> Answer {
        Answer {
            status: 200,
            content_type: "application/json",
            body,
        }
    }

    /// Drone's 404 for a repository it does not have (`render.NotFound`), the one place of it.
    pub fn not_found() -> Answer {
        Answer::error(404, "Not Found")
    }

    /// Drone's 404 for a build row that does not exist (the store's `sql.ErrNoRows`).
    pub fn no_rows() -> Answer {
        Answer::error(404, "sql: no rows in result set")
    }

    pub fn text(status: u16, body: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain",
            body: body.as_bytes().to_vec(),
        }
    }

    /// The router's answer to a path it has no route for.
    pub fn no_route() -> Answer {
        Answer {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: b"404 page not found\n".to_vec(),
        }
    }
}

/// Decodes `%XX` escapes (and leaves malformed ones as they are), as drone's router does with
/// path segments.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(a: &Answer) -> Value {
        serde_json::from_slice(&a.body).unwrap()
    }

    #[test]
    fn builds_are_answered_from_their_rows_and_unknown_ones_with_drones_404() {
        let mut s = Store::new();
        let n = s.take_number(3);
        s.write(3, n, "running", 2);
        let a = s.answer("GET", "/api/repos/octocat/repo-3/builds/1", None);
        assert_eq!(a.status, 200);
        let b = json(&a);
        assert_eq!(
            (b["number"].as_u64(), b["status"].as_str()),
            (Some(1), Some("running"))
        );
        assert_eq!(
            (b["version"].as_u64(), b["repo_id"].as_u64()),
            (Some(2), Some(103))
        );
        assert_eq!(
            s.answer("GET", "/api/repos/octocat/repo-3/builds/2", None),
            Answer::no_rows()
        );
        assert_eq!(s.calls.not_found, 1);
        assert_eq!(
            Answer::no_rows().body,
            b"{\"message\":\"sql: no rows in result set\"}\n"
        );
        assert_eq!(Answer::not_found().body, b"{\"message\":\"Not Found\"}\n");
    }

    #[test]
    fn the_repository_counter_counts_numbers_taken_before_their_rows() {
        let mut s = Store::new();
        s.write(1, 1, "success", 3);
        assert_eq!(s.take_number(1), 2);
        let repo = json(&s.answer("GET", "/api/repos/octocat/repo-1", None));
        assert_eq!(repo["counter"].as_u64(), Some(2));
        assert_eq!(repo["slug"].as_str(), Some("octocat/repo-1"));
        assert_eq!(repo["id"].as_u64(), Some(101));
    }

    #[test]
    fn unknown_repositories_and_names_are_404_and_lookups_under_them_are_counted() {
        let mut s = Store::new();
        s.repos = Some(2);
        assert_eq!(
            s.answer("GET", "/api/repos/octocat/repo-3", None),
            Answer::not_found()
        );
        assert_eq!(
            s.answer("GET", "/api/repos/evil/x/builds/1", None),
            Answer::not_found()
        );
        assert_eq!(s.calls.steered, ["/api/repos/evil/x/builds/1"]);
        assert_eq!(s.answer("GET", "/api/nope", None), Answer::no_route());
        assert_eq!(s.answer("GET", "/api/builds/incomplete", None).status, 501);
    }

    #[test]
    fn a_token_is_required_when_set() {
        let mut s = Store::new();
        s.token = Some("t".into());
        assert_eq!(
            s.answer("GET", "/api/repos/octocat/repo-1", None).status,
            401
        );
        assert_eq!(
            s.answer("GET", "/api/repos/octocat/repo-1", Some("Bearer t"))
                .status,
            200
        );
        assert_eq!(s.calls.unauthorized, 1);
    }

    #[test]
    fn the_list_is_newest_first_and_paged() {
        let mut s = Store::new();
        for n in 1..=30 {
            s.write(1, n, "success", 3);
        }
        s.write(2, 1, "success", 3);
        let page = json(&s.answer(
            "GET",
            "/api/repos/octocat/repo-1/builds?page=2&per_page=10",
            None,
        ));
        let numbers: Vec<u64> = page
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["number"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, (11..=20).rev().collect::<Vec<_>>());
        let first = json(&s.answer("GET", "/api/repos/octocat/repo-1/builds", None));
        assert_eq!(first.as_array().unwrap().len(), 25);
    }

    #[test]
    fn webhooks_have_drones_shapes() {
        let b = Bodies::new();
        let v = |body: Vec<u8>| serde_json::from_slice::<Value>(&body).unwrap();
        let created = v(b.hook(Shape::Created, (2, 7), "pending", 1));
        assert_eq!(created["action"], "created");
        assert!(created["repo"].get("build").is_none());
        assert_eq!(created["repo"]["counter"].as_u64(), Some(7));
        let error = v(b.hook(Shape::Created, (2, 7), "error", 1));
        assert!(error["build"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()));
        let updated = v(b.hook(Shape::Updated, (2, 7), "running", 2));
        assert_eq!(updated["action"], "updated");
        assert_eq!(updated["repo"]["build"], updated["build"]);
        assert_eq!(updated["build"]["id"].as_u64(), Some(2_000_007));
        let cancel = v(b.hook(Shape::Cancel, (2, 7), "killed", 3));
        assert!(cancel["repo"].get("build").is_none());
        assert_eq!(cancel["build"]["status"], "killed");
    }
}
