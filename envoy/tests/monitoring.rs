//! The monitoring kit (`envoy/monitoring/`) against the real thing: promtool checks and
//! unit-tests the alert rules; Debian's Prometheus scrapes a real Envoy running status-sync
//! through a lossy run with a drone outage, and every dashboard query and alert expression
//! must return data, the behind-drone alert must fire during the outage and resolve after it;
//! then the scraped Envoy is replaced by one without the filter, and the filter-missing alert
//! must fire.
//!
//! Without `prometheus`/`promtool` on PATH these tests fail under `CI=true` and otherwise
//! print loudly that they skipped (`make test` installs Debian's `prometheus` package).
//!
//! The end-to-end test loads alerts.yaml with its `# test: <value>` marks applied (the
//! behind-drone alert fires after 2 s behind for 2 s instead of 10 minutes for 5, the
//! filter-missing alert after 2 s instead of 10 minutes): see
//! `envoy_e2e::prometheus::rules_for_tests`. With `STATUS_SYNC_MONITORING_SVG=<path>` it also
//! draws the main panels from Prometheus's data (the picture in README.md).

use anyhow::{bail, Context as _, Result};
use envoy_e2e::drone_sim::{BuildPlan, DroneSimConfig, Outcome};
use envoy_e2e::envoy::Envoy;
use envoy_e2e::pipeline_sim::FailRule;
use envoy_e2e::prometheus::{self as prom, Prometheus, Series};
use envoy_e2e::scenario::{wait_for, Stack};
use envoy_e2e::setup::{done_if, losing, tools};
use serde_json::Value;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

/// The first line of Envoy's log that contains `what`.
fn line_with<'a>(log: &'a str, what: &str) -> Result<&'a str> {
    log.lines()
        .find(|l| l.contains(what))
        .with_context(|| format!("no line with `{what}` in Envoy's log"))
}

fn read(name: &str) -> Result<String> {
    let p = prom::monitoring_dir().join(name);
    std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))
}

fn alert_rules() -> Result<Vec<serde_yaml::Value>> {
    let doc: serde_yaml::Value = serde_yaml::from_str(&read("alerts.yaml")?)?;
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().context("groups")? {
        out.extend(g["rules"].as_sequence().context("rules")?.iter().cloned());
    }
    Ok(out)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() -> Result<()> {
    let Some(promtool) = prom::require("promtool", "alert_rules_pass_promtool_check")? else {
        return Ok(());
    };
    let dir = prom::monitoring_dir();
    let out = prom::promtool(&promtool, &dir, &["check", "rules", "alerts.yaml"])?;
    assert!(out.contains("SUCCESS"), "{out}");
    let out = prom::promtool(&promtool, &dir, &["test", "rules", "alerts_test.yaml"])?;
    assert!(out.contains("SUCCESS"), "{out}");
    // The test variant (lower thresholds) must stay a valid rule file too.
    let tmp = tempfile::tempdir()?;
    std::fs::write(
        tmp.path().join("alerts.yaml"),
        prom::rules_for_tests(&read("alerts.yaml")?)?,
    )?;
    prom::promtool(&promtool, tmp.path(), &["check", "rules", "alerts.yaml"])?;
    Ok(())
}

/// Where every alert's `runbook_url` points: docs/runbook.md on the project's GitHub,
/// followed by `#<alert name in lower case>`.
const RUNBOOK_BASE: &str = "https://github.com/status-sync/status-sync/blob/main/docs/runbook.md";

/// GitHub's anchor of a markdown heading: lower case, spaces to '-', other punctuation gone.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_links_to_a_runbook_section_and_the_dashboard_is_complete() -> Result<()> {
    let runbook_path = envoy_e2e::envoy::crate_dir().join("../docs/runbook.md");
    let runbook = std::fs::read_to_string(&runbook_path)
        .with_context(|| format!("read {}", runbook_path.display()))?;
    let anchors: Vec<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let rules = alert_rules()?;
    assert!(rules.len() >= 12, "{} alert rules", rules.len());
    // One base for every link, the one alerts.yaml's header names (and README's sed replaces).
    let header = read("alerts.yaml")?;
    for r in &rules {
        let name = r["alert"].as_str().context("alert name")?;
        let url = r["annotations"]["runbook_url"]
            .as_str()
            .with_context(|| format!("{name} has no runbook_url"))?;
        let (base, frag) = url.split_once('#').context("runbook_url without #anchor")?;
        assert_eq!(
            base, RUNBOOK_BASE,
            "{name}: runbook_url not built from the one base"
        );
        assert_eq!(frag, name.to_lowercase(), "{name}: anchor");
        assert!(
            anchors.iter().any(|a| a == frag),
            "{name}: docs/runbook.md has no section #{frag}"
        );
    }
    assert!(
        header.contains(&format!("#   {RUNBOOK_BASE}\n")),
        "alerts.yaml's header does not name the runbook base {RUNBOOK_BASE}"
    );
    // The dashboard shows what the issue asked for, each panel with queries.
    let dash: Value = serde_json::from_str(&read("dashboard.json")?)?;
    let queries = prom::dashboard_queries(&dash, "1m");
    for needed in [
        "status_sync_webhooks_observed",
        "status_sync_webhooks_delivered",
        "status_sync_transitions_lost",
        "status_sync_transitions_recovered",
        "status_sync_oldest_undelivered_seconds",
        "status_sync_recovery_delay_ms_bucket",
        "status_sync_drone_polls_failed",
        "status_sync_circuit_open",
        "status_sync_builds_tracked",
        "status_sync_leader_changes",
    ] {
        assert!(
            queries.iter().any(|(_, q)| q.contains(needed)),
            "no dashboard query uses {needed}"
        );
    }
    dashboard_picks_one_sidecar_keeps_units_apart_and_shows_the_slo(&dash)?;
    Ok(())
}

/// The template variables that pick one sidecar of many, and the matcher every selector of
/// every query carries for each (`sync_instance` only on status-sync's own series).
const PROXY_VARIABLES: [&str; 4] = ["job", "namespace", "pod", "instance"];

/// Units of time: only a query of a time (`_seconds`, `_ms`) may be drawn on such an axis.
const TIME_UNITS: [&str; 7] = ["ns", "µs", "ms", "s", "m", "h", "d"];

/// The dashboard's rules: the variables job/namespace/pod/instance/sync_instance exist and
/// every selector of every query uses them; a panel axis has one unit, and only times are
/// drawn in units of time; stat panels show the SLO with the behind-drone alert's threshold.
fn dashboard_picks_one_sidecar_keeps_units_apart_and_shows_the_slo(dash: &Value) -> Result<()> {
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .context("templating")?
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut problems = Vec::new();
    for v in PROXY_VARIABLES.iter().chain(&["sync_instance"]) {
        if !vars.contains(v) {
            problems.push(format!("no template variable {v}: {vars:?}"));
        }
    }
    let panels = dash["panels"].as_array().context("panels")?;
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        let defaults = &panel["fieldConfig"]["defaults"];
        let unit = defaults["unit"].as_str().unwrap_or("");
        if unit.is_empty() {
            problems.push(format!("{title}: no unit"));
        }
        // Overrides that change the unit move the series to the right axis, one unit there.
        let mut right_units = Vec::new();
        let mut unit_of_ref = std::collections::BTreeMap::new();
        for o in panel["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let props = o["properties"].as_array().context("override properties")?;
            let prop = |id: &str| props.iter().find(|p| p["id"] == id).map(|p| &p["value"]);
            if let Some(u) = prop("unit").and_then(Value::as_str) {
                if prop("custom.axisPlacement").and_then(Value::as_str) != Some("right") {
                    problems.push(format!("{title}: a second unit {u} on the left axis"));
                }
                if !right_units.contains(&u) {
                    right_units.push(u);
                }
                if o["matcher"]["id"] == "byFrameRefID" {
                    if let Some(r) = o["matcher"]["options"].as_str() {
                        unit_of_ref.insert(r.to_string(), u.to_string());
                    }
                }
            }
        }
        if right_units.len() > 1 {
            problems.push(format!("{title}: units {right_units:?} on the right axis"));
        }
        // What each axis shows: one kind of quantity (a level, a per-second rate, a count per
        // interval, a quantile), besides one unit.
        let mut kinds: std::collections::BTreeMap<bool, &str> = std::collections::BTreeMap::new();
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().context("expr")?;
            let refid = t["refId"].as_str().unwrap_or("");
            let u = unit_of_ref.get(refid).map_or(unit, String::as_str);
            let kind = if expr.contains("histogram_quantile(") {
                "quantile"
            } else if expr.contains("rate(") {
                "per second"
            } else if expr.contains("increase(") {
                "per interval"
            } else {
                "level"
            };
            let right = unit_of_ref.contains_key(refid);
            if *kinds.entry(right).or_insert(kind) != kind {
                problems.push(format!(
                    "{title}: `{expr}` ({kind}) shares an axis with another kind"
                ));
            }
            let is_time = expr.contains("_seconds") || expr.contains("_ms_bucket");
            if is_time != TIME_UNITS.contains(&u) {
                problems.push(format!("{title}: `{expr}` drawn in unit {u}"));
            }
            for (at, set) in matcher_sets(expr) {
                for v in PROXY_VARIABLES {
                    if !set.contains(&format!("{v}=~\"${v}\"")) {
                        problems.push(format!("{title}: `{expr}`: selector {set} without ${v}"));
                    }
                }
                let before = &expr[..at];
                let name_at = before
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map_or(0, |i| i + 1);
                if before[name_at..].starts_with("status_sync_")
                    && !set.contains("sync_instance=~\"$sync_instance\"")
                {
                    problems.push(format!(
                        "{title}: `{expr}`: selector {set} without $sync_instance"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "dashboard:\n{}", problems.join("\n"));
    // The SLO as stat panels: the oldest undelivered age turns red at the alert's threshold.
    let slo = alert_rules()?
        .into_iter()
        .find(|r| r["alert"] == "StatusSyncBehindDrone")
        .context("StatusSyncBehindDrone")?;
    let threshold: f64 = slo["expr"]
        .as_str()
        .and_then(|e| e.split('>').nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .context("StatusSyncBehindDrone's threshold")?;
    let stats: Vec<&Value> = panels.iter().filter(|p| p["type"] == "stat").collect();
    let slo_stat = stats
        .iter()
        .find(|p| {
            p["targets"][0]["expr"]
                .as_str()
                .is_some_and(|e| e.contains("status_sync_oldest_undelivered_seconds"))
        })
        .context("no stat panel of status_sync_oldest_undelivered_seconds")?;
    let steps = slo_stat["fieldConfig"]["defaults"]["thresholds"]["steps"]
        .as_array()
        .context("SLO stat without thresholds")?;
    assert!(
        steps
            .iter()
            .any(|s| s["color"] == "red" && s["value"].as_f64() == Some(threshold)),
        "the SLO stat does not turn red at the alert's {threshold} s: {steps:?}"
    );
    for p in &stats {
        assert!(
            p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .is_some_and(|s| s.len() >= 2),
            "stat panel {} without thresholds",
            p["title"]
        );
    }
    Ok(())
}

/// The label matcher sets (`{...}`) of a PromQL expression, with where each starts.
fn matcher_sets(expr: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = expr[from..].find('{') {
        let at = from + open;
        let Some(close) = expr[at..].find('}') else {
            break;
        };
        out.push((at, &expr[at..=at + close]));
        from = at + close + 1;
    }
    out
}

/// The metric selectors of a PromQL expression: `status_sync_*` and `envoy_*` names, and
/// `{__name__=~"..."}` selectors. Each must match series for the expression to mean anything.
fn selectors(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("{__name__=~\"") {
        let tail = &rest[i..];
        let Some(end) = tail.find("\"}") else { break };
        out.push(tail[..end + 2].to_string());
        rest = &tail[end + 2..];
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut start = None;
    for (i, c) in expr
        .char_indices()
        .chain(std::iter::once((expr.len(), ' ')))
    {
        match (word(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let w = &expr[s..i];
                let prev = expr[..s].chars().last();
                if (w.starts_with("status_sync_") || w.starts_with("envoy_"))
                    && prev != Some('"')
                    && !out.iter().any(|o| o == w)
                {
                    out.push(w.to_string());
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

#[test]
fn selectors_finds_names_and_name_regexes() {
    let e = "sum(increase({__name__=~\"envoy_wasm_.+_x\"}[5m])) > 0 unless status_sync_a{l=\"status_sync_no\"} # c";
    assert_eq!(
        selectors(e),
        vec![
            "{__name__=~\"envoy_wasm_.+_x\"}".to_string(),
            "status_sync_a".to_string()
        ]
    );
}

const SECRET: &str = "monitoring-webhook-secret";

#[test]
fn prometheus_scrapes_envoy_alerts_fire_and_resolve_across_a_drone_outage() -> Result<()> {
    const NAME: &str = "prometheus_scrapes_envoy_alerts_fire_and_resolve_across_a_drone_outage";
    let Some(prom_bin) = prom::require("prometheus", NAME)? else {
        return Ok(());
    };
    let tools = tools();
    let started = Instant::now();
    let stack = Stack::start(
        &tools,
        DroneSimConfig {
            seed: 15,
            // Signed, as in production: a live webhook the pipeline failed is evidence of a
            // missing transition (an unsigned one is only a hint and moves no SLO figure).
            webhook_secret: SECRET.into(),
            ..losing(0.3, false)
        },
        |spec| {
            spec.plugin["webhook_secret"] = SECRET.into();
            spec.plugin["instance"] = "monitoring".into();
            spec.plugin["stale_after_ms"] = 1000.into();
            spec.plugin["circuit_open_ms"] = 1000.into();
            spec.plugin["scan_repos"] = serde_json::json!(["octocat/hello-world"]);
            spec.plugin["scan_interval_ms"] = 10000.into();
        },
    )?;
    let rules = prom::rules_for_tests(&read("alerts.yaml")?)?;
    let p = Prometheus::start(
        &prom_bin,
        stack.envoy.admin_address(),
        "/stats/prometheus",
        &rules,
    )?;
    let diag = |p: &Prometheus| format!("{}\nprometheus log:\n{}", stack.diagnostics(), p.log());
    wait_for("Prometheus to scrape Envoy", LONG, POLL, || {
        Ok(done_if(p.target_up()?, || "target not up".into()))
    })
    .with_context(|| diag(&p))?;

    let outcomes = [Outcome::Success, Outcome::Failure, Outcome::Killed];
    let schedule = |n: usize, offset: usize| {
        for i in 0..n {
            let mut plan = BuildPlan::new(i % 2, outcomes[(i + offset) % outcomes.len()]);
            plan.step_ms = 150;
            stack
                .drone
                .schedule(plan, Duration::from_millis(300 * i as u64));
        }
    };

    // 1. A lossy run with drone up: status-sync recovers what was lost.
    schedule(6, 0);
    stack
        .wait_converged(LONG, |_| true)
        .with_context(|| diag(&p))?;

    // 2. Drone's API goes down, and the pipeline fails the final webhooks: status-sync knows
    //    the pipeline lacks them but cannot look them up. The behind-drone alert fires.
    stack.drone.set_down(true);
    stack.pipeline.add_rule(FailRule::all(503).only_done());
    schedule(4, 1);
    p.wait_firing("StatusSyncBehindDrone", LONG)
        .with_context(|| diag(&p))?;
    let behind = p.query("max(status_sync_oldest_undelivered_seconds)")?;
    let age = behind.first().and_then(|s| s.samples.first()).map(|s| s.1);
    assert!(
        age.is_some_and(|a| a > 2.0),
        "age during the outage: {age:?}"
    );

    // 3. Drone and the pipeline recover: everything is delivered, the gauge returns to 0 and
    //    the alert resolves.
    stack.drone.set_down(false);
    stack.pipeline.clear_rules();
    stack
        .wait_converged(LONG, |_| true)
        .with_context(|| diag(&p))?;
    wait_for("StatusSyncBehindDrone to resolve", LONG, POLL, || {
        let age = stack.envoy.metric("oldest_undelivered_seconds")?;
        Ok(match p.alert_state("StatusSyncBehindDrone")? {
            None if age == 0 => Ok(()),
            state => Err(format!("alert {state:?}, oldest undelivered {age} s")),
        })
    })
    .with_context(|| diag(&p))?;
    // Wait for one more scrape so that Prometheus holds the final state too.
    std::thread::sleep(Duration::from_secs(2));

    // 4. Every dashboard query and every metric an alert reads returns data, and every rule
    //    evaluates without error. The instance is a label, the version too.
    let dash: Value = serde_json::from_str(&read("dashboard.json")?)?;
    let mut empty = Vec::new();
    for (title, q) in prom::dashboard_queries(&dash, "30s") {
        if p.query(&q)
            .with_context(|| format!("dashboard panel {title:?}: {q}"))?
            .is_empty()
        {
            empty.push(format!("panel {title:?}: {q}"));
        }
    }
    for r in alert_rules()? {
        let name = r["alert"].as_str().unwrap_or("?").to_string();
        let expr = r["expr"].as_str().context("expr")?;
        p.query(expr).with_context(|| format!("alert {name}"))?;
        for sel in selectors(expr) {
            // Istio's agent is not part of this test (plain Envoy): its series cannot exist.
            if sel.contains("istio_agent_") {
                continue;
            }
            if p.query(&sel)?.is_empty() {
                empty.push(format!("alert {name}: {sel}"));
            }
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
    for (name, health, err) in p.rule_health()? {
        assert_eq!(health, "ok", "rule {name}: {err}");
    }
    let info = p.query("status_sync_build_info")?;
    assert_eq!(info.len(), 1, "{info:?}");
    let labels = &info[0].labels;
    assert_eq!(
        labels.get("sync_instance").map(String::as_str),
        Some("monitoring")
    );
    assert!(labels.get("sync_version").is_some_and(|v| !v.is_empty()));
    let recovered = p.query("sum(status_sync_recovery_delay_ms_count)")?;
    let n = recovered
        .first()
        .and_then(|s| s.samples.first())
        .map_or(0.0, |s| s.1);
    assert!(n >= 1.0, "no recovery delay recorded: {recovered:?}");

    // The log: one prefix (Envoy's `wasm log <plugin> <root id>:`), key=value fields, the
    // reconciler naming itself.
    let log = stack.envoy.log();
    assert!(
        !log.contains("status-sync: status-sync:"),
        "doubled prefix in the log"
    );
    let elected = line_with(&log, "reconciler elected")?;
    assert!(
        elected.contains("instance=monitoring reconciler=") && elected.contains(" epoch="),
        "{elected}"
    );
    let circuit = line_with(&log, "drone API failing, circuit open")?;
    assert!(
        circuit.contains(" build=")
            && circuit.contains(" why=")
            && circuit.contains(" reconciler="),
        "{circuit}"
    );

    if let Ok(path) = std::env::var("STATUS_SYNC_MONITORING_SVG") {
        let secs = started.elapsed().as_secs() + 5;
        plot(&p, secs, std::path::Path::new(&path))?;
        eprintln!("wrote {path}");
    }

    // 5. The filter goes missing: the job's one target is replaced by an Envoy without it,
    //    as a rollout replaces a pod by one whose module fetch failed under FAIL_OPEN (no
    //    filter, no error, no status-sync series). Nothing fired while the filter was there;
    //    now StatusSyncFilterMissing fires for the job.
    assert_eq!(p.alert_state("StatusSyncFilterMissing")?, None);
    let bare = Envoy::start_bootstrap(
        &tools,
        &serde_json::json!({"admin": {"address": {"socket_address":
            {"address": "127.0.0.1", "port_value": 0}}}}),
        1,
        "",
    )?;
    p.set_targets(&[bare.admin_address()])?;
    p.wait_firing("StatusSyncFilterMissing", LONG)
        .with_context(|| diag(&p))?;
    let alerts = p.alerts_labels("StatusSyncFilterMissing")?;
    assert_eq!(
        alerts,
        vec![std::collections::BTreeMap::from([
            (
                "alertname".to_string(),
                "StatusSyncFilterMissing".to_string()
            ),
            ("job".to_string(), "envoy".to_string()),
            ("severity".to_string(), "page".to_string()),
            ("sync_instance".to_string(), "monitoring".to_string()),
        ])],
        "the job, not the new target, lacks the filter"
    );
    Ok(())
}

/// Draws the main dashboard panels from Prometheus's data (range queries, 1 s steps).
fn plot(p: &Prometheus, secs: u64, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    type Panel<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let panels: [Panel; 6] = [
        (
            "Behind drone (SLO): oldest undelivered transition",
            "seconds",
            &[(
                "oldest undelivered (s)",
                "max(status_sync_oldest_undelivered_seconds)",
            )],
        ),
        (
            "Transitions known missing",
            "transitions",
            &[(
                "transitions missing",
                "sum(status_sync_transitions_missing)",
            )],
        ),
        (
            "Webhooks in and delivered",
            "per second",
            &[
                ("observed", "sum(rate(status_sync_webhooks_observed[5s]))"),
                ("delivered", "sum(rate(status_sync_webhooks_delivered[5s]))"),
                (
                    "not delivered",
                    "sum(rate(status_sync_webhooks_not_delivered[5s]))",
                ),
            ],
        ),
        (
            "Lost and recovered (cumulative)",
            "transitions",
            &[
                ("found missing", "sum(status_sync_transitions_lost)"),
                ("recovered", "sum(status_sync_transitions_recovered)"),
                ("re-deliveries accepted", "sum(status_sync_redeliveries_ok)"),
            ],
        ),
        (
            "Drone API calls (cumulative)",
            "calls",
            &[
                ("calls ok", "sum(status_sync_drone_polls_ok)"),
                ("calls failed", "sum(status_sync_drone_polls_failed)"),
            ],
        ),
        (
            "Circuit toward drone",
            "open (1) / closed (0)",
            &[("circuit open", "max(status_sync_circuit_open)")],
        ),
    ];
    let root = SVGBackend::new(path, (1200, 1200)).into_drawing_area();
    let e = |x: &dyn std::fmt::Debug| anyhow::anyhow!("plotting {}: {x:?}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let areas = root.split_evenly((3, 2));
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for ((title, unit, queries), area) in panels.iter().zip(areas.iter()) {
        let mut lines: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
        let mut t0 = f64::MAX;
        for (label, q) in queries.iter() {
            let series: Vec<Series> = p.query_range(q, secs, 1)?;
            let pts: Vec<(f64, f64)> = series
                .into_iter()
                .flat_map(|s| s.samples)
                .filter(|(_, v)| v.is_finite())
                .collect();
            if let Some((t, _)) = pts.first() {
                t0 = t0.min(*t);
            }
            lines.push((label, pts));
        }
        if t0 == f64::MAX {
            bail!("no data for panel {title}");
        }
        let xmax = lines
            .iter()
            .flat_map(|(_, pts)| pts.iter().map(|(t, _)| t - t0))
            .fold(1.0f64, f64::max);
        let ymax = lines
            .iter()
            .flat_map(|(_, pts)| pts.iter().map(|(_, v)| *v))
            .fold(1.0f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("seconds into the run")
            .y_desc(*unit)
            .draw()
            .map_err(|x| e(&x))?;
        for (i, (label, pts)) in lines.into_iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    pts.into_iter().map(|(t, v)| (t - t0, v)),
                    color.stroke_width(2),
                ))
                .map_err(|x| e(&x))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
