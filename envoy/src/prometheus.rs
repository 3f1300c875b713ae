//! Running Debian's real Prometheus (and promtool) against a real Envoy: the alert rules and
//! the dashboard of `envoy/monitoring/` are tested with what users run, not a lookalike.
//!
//! The package is installed by the Makefile (`make test`). A test that cannot find it fails
//! when `CI=true` and otherwise says loudly that it skipped ([`require`]): never a silent pass.

use crate::dist::missing_part;
use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `envoy/monitoring/`, where the alert rules, their unit tests and the dashboard live.
pub fn monitoring_dir() -> PathBuf {
    crate::envoy::crate_dir().join("monitoring")
}

/// `Ok(Some(path))` when `tool` is on PATH. Otherwise an error under `CI=true`, and
/// elsewhere `Ok(None)` after printing that the test is skipped and how to get the tool
/// ([`crate::dist::missing_part`]).
pub fn require(tool: &str, test: &str) -> Result<Option<PathBuf>> {
    let found = crate::dist::which(tool);
    if found.is_none() {
        missing_part(test, &format!("`{tool}` (Debian's `prometheus` package)"))?;
    }
    Ok(found)
}

/// Runs `promtool` with `args` in `dir`; returns its combined output, or fails with it.
pub fn promtool(bin: &Path, dir: &Path, args: &[&str]) -> Result<String> {
    crate::dist::run(Command::new(bin).args(args).current_dir(dir))
}

/// `alerts.yaml` with the test values of the lines marked `# test: <value>`: the token before
/// the mark becomes `<value>` (so the behind-drone alert fires within seconds in a test).
/// Lines without a mark are unchanged; the result is what the end-to-end test loads.
pub fn rules_for_tests(rules: &str) -> Result<String> {
    let mut out = String::with_capacity(rules.len());
    for line in rules.lines() {
        // Comment lines may mention the mark; only code lines carry one.
        let mark = (!line.trim_start().starts_with('#'))
            .then(|| line.split_once("# test:"))
            .flatten();
        match mark {
            Some((code, value)) => {
                let code = code.trim_end();
                let Some(cut) = code.rfind(char::is_whitespace) else {
                    bail!("`# test:` mark without a value before it: {line}");
                };
                out.push_str(&code[..=cut]);
                out.push_str(value.trim());
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

/// Every `expr` of a Grafana dashboard's panels, with Grafana's variables replaced by values
/// Prometheus understands: `$__rate_interval` → `rate_interval`, and each template variable
/// (`$job`, `${pod}`, ...) → its "All" value (`allValue`, `.*`), as Grafana sends them.
pub fn dashboard_queries(dashboard: &Value, rate_interval: &str) -> Vec<(String, String)> {
    let mut vars: Vec<(&str, &str)> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v["allValue"].as_str()?)))
        .collect();
    // `$pod` must not eat the start of a longer name.
    vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                let mut q = expr.replace("$__rate_interval", rate_interval);
                for (name, all) in &vars {
                    q = q
                        .replace(&format!("${{{name}}}"), all)
                        .replace(&format!("${name}"), all);
                }
                out.push((title.to_string(), q));
            }
        }
    }
    out
}

/// One series of a query answer: its labels and samples (unix seconds, value).
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(f64, f64)>,
}

/// A Prometheus server on a free loopback port, scraping its targets (job `envoy`) every
/// second and evaluating `rules` every second; killed on drop. The targets come from a file
/// (file-based discovery), so a test can replace them as a rollout replaces pods.
pub struct Prometheus {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    agent: ureq::Agent,
}

impl Prometheus {
    /// Starts `bin` scraping `metrics_path` of `target` (host:port).
    pub fn start(bin: &Path, target: &str, metrics_path: &str, rules: &str) -> Result<Prometheus> {
        let dir = tempfile::Builder::new()
            .prefix("status-sync-prometheus-")
            .tempdir()?;
        std::fs::write(dir.path().join("rules.yaml"), rules)?;
        write_targets(dir.path(), &[target])?;
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files: [rules.yaml]\n\
             scrape_configs:\n- job_name: envoy\n  metrics_path: {metrics_path}\n  \
             file_sd_configs:\n  - files: [{TARGETS}]\n    refresh_interval: 1s\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = crate::envoy::free_port()?;
        let mut cmd = Command::new(bin);
        crate::process::die_with_parent(&mut cmd)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(dir.path());
        let child = crate::process::spawn_logged(&mut cmd, &dir.path().join("prometheus.log"))?;
        let mut p = Prometheus {
            child: Some(child),
            dir,
            port,
            agent: crate::util::agent(Duration::from_secs(10)),
        };
        p.wait_ready(Duration::from_secs(60))?;
        Ok(p)
    }

    /// Replaces the scraped targets (host:port); Prometheus picks the file up within
    /// seconds, and marks the series of a target it no longer scrapes stale.
    pub fn set_targets(&self, targets: &[&str]) -> Result<()> {
        write_targets(self.dir.path(), targets)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("prometheus exited ({status}):\n{}", self.log());
                }
            }
            if let Ok((200, _)) = self.get("/-/ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready after {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        crate::envoy::tail(&text, 40)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn get(&self, path_and_query: &str) -> Result<(u16, Vec<u8>)> {
        crate::util::send(
            self.agent.get(&format!("{}{path_and_query}", self.url())),
            None,
        )
        .map_err(|e| anyhow::anyhow!("prometheus {path_and_query}: {e}"))
    }

    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let mut req = self.agent.get(&format!("{}{path}", self.url()));
        for (k, v) in params {
            req = req.query(k, v);
        }
        let (code, body) =
            crate::util::send(req, None).map_err(|e| anyhow::anyhow!("prometheus {path}: {e}"))?;
        let v: Value = serde_json::from_slice(&body)
            .with_context(|| format!("prometheus {path} answered {code}"))?;
        if v["status"] != "success" {
            bail!(
                "prometheus {path} {params:?}: {} {}",
                v["errorType"],
                v["error"]
            );
        }
        Ok(v["data"].clone())
    }

    /// An instant query: each series with its one sample (NaN values included).
    pub fn query(&self, q: &str) -> Result<Vec<Series>> {
        let data = self.api("/api/v1/query", &[("query", q)])?;
        Ok(parse_series(&data["result"], "value"))
    }

    /// A range query over the last `secs` seconds, one point per `step` seconds.
    pub fn query_range(&self, q: &str, secs: u64, step: u64) -> Result<Vec<Series>> {
        let end = crate::util::unix_now();
        let start = end - i64::try_from(secs).unwrap_or(i64::MAX);
        let (s, e, st) = (start.to_string(), end.to_string(), step.to_string());
        let data = self.api(
            "/api/v1/query_range",
            &[("query", q), ("start", &s), ("end", &e), ("step", &st)],
        )?;
        Ok(parse_series(&data["result"], "values"))
    }

    /// The state of alert `alert` (`pending`, `firing`), `None` while it is inactive.
    pub fn alert_state(&self, alert: &str) -> Result<Option<String>> {
        let data = self.api("/api/v1/alerts", &[])?;
        let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
        Ok(alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == alert)
            .map(|a| a["state"].as_str().unwrap_or("").to_string()))
    }

    /// Waits (at most `within`) until alert `alert` fires.
    pub fn wait_firing(&self, alert: &str, within: Duration) -> Result<()> {
        let what = format!("{alert} to fire");
        crate::scenario::wait_for(&what, within, Duration::from_millis(250), || {
            Ok(match self.alert_state(alert)?.as_deref() {
                Some("firing") => Ok(()),
                other => Err(format!("alert state {other:?}")),
            })
        })
    }

    /// The labels of each active (pending or firing) alert named `alert`.
    pub fn alerts_labels(&self, alert: &str) -> Result<Vec<BTreeMap<String, String>>> {
        let data = self.api("/api/v1/alerts", &[])?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == alert)
            .map(|a| {
                a["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .collect())
    }

    /// The state of the rule group's rules: (name, health, last error).
    pub fn rule_health(&self) -> Result<Vec<(String, String, String)>> {
        let data = self.api("/api/v1/rules", &[])?;
        let mut out = Vec::new();
        for g in data["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                out.push((
                    r["name"].as_str().unwrap_or("").to_string(),
                    r["health"].as_str().unwrap_or("").to_string(),
                    r["lastError"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        Ok(out)
    }

    /// Healthy scrapes of the target so far (`up == 1`).
    pub fn target_up(&self) -> Result<bool> {
        Ok(self
            .query("up")?
            .iter()
            .any(|s| s.samples.first().is_some_and(|(_, v)| *v == 1.0)))
    }
}

/// The file of scrape targets, in Prometheus's directory.
const TARGETS: &str = "targets.json";

/// Writes the targets file whole (a rename), so Prometheus never reads half of it.
fn write_targets(dir: &Path, targets: &[&str]) -> Result<()> {
    let body = serde_json::json!([{ "targets": targets }]);
    let tmp = dir.join(format!("{TARGETS}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&body)?)?;
    std::fs::rename(&tmp, dir.join(TARGETS))?;
    Ok(())
}

fn parse_series(result: &Value, key: &str) -> Vec<Series> {
    let sample = |p: &Value| -> Option<(f64, f64)> {
        let t = p.get(0)?.as_f64()?;
        let v = p.get(1)?.as_str()?.parse::<f64>().ok()?;
        Some((t, v))
    };
    result
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Series {
            labels: s["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect(),
            samples: if key == "value" {
                sample(&s["value"]).into_iter().collect()
            } else {
                s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(sample)
                    .collect()
            },
        })
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_marks_replace_the_value_before_them_only() {
        let rules = "    expr: |\n      x\n        > 600 # test: 2\n    for: 5m # test: 2s\n    keep: 10m\n";
        let got = rules_for_tests(rules).unwrap_or_default();
        assert_eq!(
            got,
            "    expr: |\n      x\n        > 2\n    for: 2s\n    keep: 10m\n"
        );
        assert_eq!(
            rules_for_tests("# lines marked `# test: <value>`\n").unwrap_or_default(),
            "# lines marked `# test: <value>`\n"
        );
        assert!(rules_for_tests("x:# test: 3\n").is_err());
    }

    #[test]
    fn dashboard_variables_are_replaced() {
        let d = serde_json::json!({
            "templating": {"list": [
                {"name": "datasource", "type": "datasource"},
                {"name": "instance", "allValue": ".*"},
                {"name": "sync_instance", "allValue": ".+"},
                {"name": "pod", "allValue": "p.*"}]},
            "panels": [{"title": "t", "targets": [{"expr":
                "rate(x{sync_instance=~\"$sync_instance\", instance=~\"$instance\", pod=~\"${pod}\"}[$__rate_interval])"}]}]});
        assert_eq!(
            dashboard_queries(&d, "30s"),
            vec![(
                "t".to_string(),
                "rate(x{sync_instance=~\".+\", instance=~\".*\", pod=~\"p.*\"}[30s])".to_string()
            )]
        );
    }
}
