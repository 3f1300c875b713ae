//! `demo` (`make run`): drone-sim → Envoy with status-sync → pipeline-sim, with drone losing
//! ~30% of its webhooks. Webhooks are signed and the filter runs in `enforce`, as in
//! production. Prints what it is doing while it starts, the mode, Envoy's admin address and
//! where its log is kept, each build whose state the pipeline lost and, later, when
//! status-sync recovered it, a progress line every few seconds; ends (when everything
//! converged, at the deadline, or on Ctrl-C) with a summary, every line of which says what it
//! counts. Envoy and the simulators are stopped on every exit path (drop guards); Envoy's
//! log, its configuration and this output stay in `--out-dir` (`out/demo/`).
//!
//! README's and envoy/README.md's samples of this output are checked against a real run by
//! `envoy/tests/demo.rs`: change a line here, and update them from `out/demo/output.txt`.

use anyhow::{Context as _, Result};
use envoy_e2e::args::{self, Args};
use envoy_e2e::drone_model::is_done;
use envoy_e2e::drone_sim::{BuildKey, BuildPlan, DroneSimConfig, LossPolicy};
use envoy_e2e::envoy::{Secret, Tools};
use envoy_e2e::scenario::{self, Stack};
use envoy_e2e::util::Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const USAGE: &str = "demo [--builds 40] [--loss 0.3] [--lose-any] [--seed 7] [--step-ms 1000] \
[--every-ms 1000] [--timeout-s 240] [--concurrency 2] [--signature-mode enforce] \
[--progress-s 5] [--out-dir DIR] [--replicas 1]

--signature-mode: enforce (default: drone-sim signs every webhook with a secret made for this
run, Envoy gets it as DRONE_WEBHOOK_SECRET, unsigned or forged webhooks get 401), monitor
(counted, not refused) or off (not checked).
--out-dir: where Envoy's log and configuration and this output (output.txt) are kept
(default: out/demo, next to STATUS_SYNC_WASM).
--replicas N (N > 1, `make run REPLICAS=3`): instead, the same builds against N pipeline
replicas, each with its own sidecar, twice: the embedded default (each sidecar reconciles
alone) and cluster mode (the sidecars share a real 3-member etcd, Debian's etcd-server);
prints the duplicates and drone calls of both side by side (output-replicas.txt).

Needs ENVOY_BIN and STATUS_SYNC_WASM (`make run` sets both).";

/// The environment variable Envoy hands to the VM and the plugin reads the secret from
/// (`webhook_secret_env`), as in `envoy/envoy.yaml`.
const SECRET_ENV: &str = "DRONE_WEBHOOK_SECRET";

/// What the demo prints, also kept for `output.txt`; step lines carry the demo's clock.
struct Out {
    started: Instant,
    lines: Vec<String>,
}

impl Out {
    fn new() -> Out {
        Out {
            started: Instant::now(),
            lines: Vec::new(),
        }
    }

    fn line(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("{s}");
        self.lines.push(s);
    }

    fn at(&mut self, what: &str) {
        let at = self.started.elapsed().as_secs_f64();
        self.line(format!("[{at:>5.1}s] {what}"));
    }

    /// A summary row: label, value, and one clause saying what it counts.
    fn row(&mut self, label: &str, value: String, why: &str) {
        self.line(format!("  {label:<46} {value:<14} {why}"));
    }
}

/// `p` relative to the working directory when it is below it (`out/demo`), else as is.
fn shown(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| p.to_path_buf())
        .display()
        .to_string()
}

/// `--out-dir`, made if missing (default: `demo` next to the module, `out/demo`).
fn out_dir(a: &Args, tools: &Tools) -> Result<PathBuf> {
    let dir = match a.opt("out-dir") {
        Some(d) => PathBuf::from(d),
        None => (tools.wasm.parent())
            .context("STATUS_SYNC_WASM has no directory")?
            .join("demo"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// A webhook secret for this run: 16 random bytes, hex.
fn fresh_secret() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("read /dev/urandom for the webhook secret")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// drone-sim's count of API requests and the filter's of its drone calls (answered, failed),
/// read at one moment when no call is under way: the filter's counters are read before and
/// after drone-sim's, and must not have moved. `settled` is false when no such moment came
/// within a few seconds (then the figures may differ by the calls in flight).
struct DroneCalls {
    sim: u64,
    ok: i64,
    failed: i64,
    settled: bool,
}

fn drone_calls(stack: &Stack) -> DroneCalls {
    let filter = || {
        let m = stack.envoy.stats("status_sync").unwrap_or_default();
        let g = |k: &str| m.get(&format!("status_sync.{k}")).copied().unwrap_or(0);
        (
            g("drone_polls_ok"),
            g("drone_polls_failed"),
            g("calls_inflight"),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let before = filter();
        let sim = stack.drone.stats().api_calls;
        let after = filter();
        let settled = before == after
            && after.2 == 0
            && u64::try_from(after.0 + after.1).is_ok_and(|n| n == sim);
        if settled || Instant::now() >= deadline {
            return DroneCalls {
                sim,
                ok: after.0,
                failed: after.1,
                settled,
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() -> Result<()> {
    let a = Args::parse(USAGE)?;
    let replicas: usize = a.get("replicas", 1)?;
    if replicas > 1 {
        return side_by_side(&a, replicas);
    }
    let builds: usize = a.get("builds", 40)?;
    let loss: f64 = a.get("loss", 0.3)?;
    let seed: u64 = a.get("seed", 7)?;
    let step_ms: u64 = a.get("step-ms", 1000)?;
    let every_ms: u64 = a.get("every-ms", 1000)?;
    let timeout = Duration::from_secs(a.get("timeout-s", 240)?);
    let concurrency: u32 = a.get("concurrency", 2)?;
    let mode: String = a.get("signature-mode", "enforce".to_string())?;
    let progress_every = Duration::from_secs(a.get("progress-s", 5)?);
    anyhow::ensure!(
        ["enforce", "monitor", "off"].contains(&mode.as_str()),
        "--signature-mode {mode:?}: one of enforce, monitor, off"
    );
    let tools = Tools::from_env().context("the demo runs via `make run`")?;
    let out_dir = out_dir(&a, &tools)?;
    let out_dir = std::fs::canonicalize(&out_dir)?;
    let dir = shown(&out_dir);
    let secret = fresh_secret()?;

    let stop = args::ctrl_c()?;
    let mut out = Out::new();
    out.line(format!(
        "status-sync demo: {builds} builds on drone-sim, losing {:.0}% of its webhooks{}; \
         Envoy ({concurrency} workers) with status-sync in front of the pipeline",
        loss * 100.0,
        if a.flag("lose-any") {
            ""
        } else {
            " (never a build's first)"
        }
    ));
    out.line(match mode.as_str() {
        "enforce" => "mode: signature_mode enforce: unsigned or forged webhooks get 401",
        "monitor" => "mode: signature_mode monitor: bad signatures are counted, not refused",
        _ => "mode: signature_mode off: signatures are not checked (never in production)",
    });
    if mode != "off" {
        out.line(format!(
            "  drone-sim signs with a secret made for this run; Envoy has it as {SECRET_ENV} \
             (webhook_secret_env, as in envoy/envoy.yaml)"
        ));
    }
    out.line(format!(
        "kept in {dir}/: envoy.log (Envoy's log, also after the demo), envoy.json (its \
         configuration), output.txt (this output)"
    ));

    let stack = Stack::start_saying(
        &tools,
        DroneSimConfig {
            loss: LossPolicy {
                share: loss,
                // A build none of whose webhooks arrives is invisible to status-sync (it learns
                // of builds from webhooks), so by default each build's first one gets through;
                // --lose-any lifts that.
                spare_first: !a.flag("lose-any"),
                all_finals: false,
            },
            seed,
            webhook_secret: secret.clone(),
            ..Default::default()
        },
        |spec| {
            spec.concurrency = concurrency;
            spec.dir = Some(out_dir.clone());
            spec.plugin["tick_ms"] = 200.into();
            spec.plugin["stale_after_ms"] = 2000.into();
            spec.plugin["max_poll_interval_ms"] = 8000.into();
            spec.plugin["instance"] = "demo".into();
            spec.plugin["signature_mode"] = json!(mode);
            if mode != "off" {
                spec.webhook_secret = Some(Secret(secret.clone()));
                spec.plugin["webhook_secret_env"] = json!(SECRET_ENV);
            }
        },
        |step| out.at(step),
    )?;
    out.at("waiting for the filter to load (status_sync.build_info)");
    stack.wait_metric("build_info", 1, Duration::from_secs(60))?;
    if mode == "enforce" {
        // Show that the filter enforces: an unsigned build webhook must be refused.
        let agent = envoy_e2e::util::agent(Duration::from_secs(10));
        let req = agent
            .post(&stack.envoy.url("/hook"))
            .set("content-type", "application/json")
            .set("x-drone-event", "build");
        let code = envoy_e2e::util::send(req, Some(b"{}"))
            .map_err(|e| anyhow::anyhow!("the unsigned probe webhook: {e}"))?
            .0;
        anyhow::ensure!(
            code == 401,
            "an unsigned webhook was answered {code}, not 401: the filter does not enforce"
        );
        out.at(&format!(
            "checking enforce: an unsigned webhook to /hook was answered {code}"
        ));
    }
    let admin = stack.envoy.admin_address().to_string();
    out.line(format!(
        "Envoy: webhooks on http://127.0.0.1:{}/hook, admin on http://{admin}, log in {dir}/envoy.log",
        stack.envoy.listen_port()
    ));
    out.line(format!(
        "  status-sync's metrics while the demo runs: curl -s 'http://{admin}/stats?filter=status_sync'"
    ));
    out.line(format!(
        "drone-sim: API on 127.0.0.1:{} (status-sync reaches it over TLS, through Envoy); \
         pipeline-sim on 127.0.0.1:{}",
        stack.drone.port(),
        stack.pipeline.port()
    ));
    out.line(
        "status-sync: tick 200 ms; looks a build up 2 s after its last news (stale_after_ms), \
         then at most every 8 s",
    );

    let mut rng = Rng::new(seed);
    let repos = stack.drone.repos().len();
    for i in 0..builds {
        stack.drone.schedule(
            BuildPlan::random(&mut rng, repos, step_ms),
            Duration::from_millis(every_ms * i as u64),
        );
    }
    out.at(&format!(
        "drone runs {builds} builds, one starting every {:.1} s",
        every_ms as f64 / 1000.0
    ));
    out.line(format!(
        "  LOST: the pipeline lacks a build's final state; RECOVERED: status-sync re-delivered \
         it; progress every {} s",
        progress_every.as_secs()
    ));

    let started = Instant::now();
    let mut next_progress = started + progress_every;
    // Builds whose pipeline state fell behind a done drone build, and since when.
    let mut behind: BTreeMap<BuildKey, Instant> = BTreeMap::new();
    let mut recovered = 0usize;
    // How long each recovered build's pipeline state lagged drone's, as the demo saw it.
    let mut lag_s: Vec<f64> = Vec::new();
    let mut ended = "converged";
    loop {
        if stop.load(Ordering::SeqCst) {
            ended = "interrupted (Ctrl-C)";
            break;
        }
        if started.elapsed() > timeout {
            ended = "deadline reached";
            break;
        }
        let truth = stack.drone.builds();
        let view = stack.pipeline.view();
        let hooks = stack.drone.webhooks();
        for b in truth.iter().filter(|b| is_done(&b.status)) {
            let got = view.get(&b.key.to_string());
            let same = got.is_some_and(|e| e.status == b.status && e.version == b.version);
            match (same, behind.get(&b.key)) {
                (false, None) => {
                    // Only report once drone has sent (or lost) the webhook of that state.
                    let final_hook = hooks.iter().rev().find(|w| {
                        w.build == b.key && w.status == b.status && w.version == b.version
                    });
                    let why = match final_hook {
                        Some(w) if w.lost => {
                            format!(
                                "its build:{} {} v{} webhook was lost",
                                w.action, w.status, w.version
                            )
                        }
                        Some(_) => continue, // delivered: the pipeline has it
                        None if b.status == "declined" => {
                            "drone sends no webhook for a decline".into()
                        }
                        None => continue, // not sent yet
                    };
                    let has = got
                        .map(|e| format!("{} v{}", e.status, e.version))
                        .unwrap_or_else(|| "nothing".into());
                    let (status, version) = (&b.status, b.version);
                    out.at(&format!(
                        "LOST      {:<26} drone: {status:<8} v{version}  pipeline: {has:<12} ({why})",
                        b.key.to_string()
                    ));
                    behind.insert(b.key.clone(), Instant::now());
                }
                (true, Some(since)) => {
                    let later = since.elapsed().as_secs_f64();
                    out.at(&format!(
                        "RECOVERED {:<26} pipeline now: {} v{} (re-delivered by status-sync {later:.1}s later)",
                        b.key.to_string(),
                        b.status,
                        b.version
                    ));
                    lag_s.push(later);
                    behind.remove(&b.key);
                    recovered += 1;
                }
                _ => {}
            }
        }
        if stack.drone.idle() && behind.is_empty() && stack.mismatches(|_| true).is_empty() {
            break;
        }
        if Instant::now() >= next_progress {
            next_progress += progress_every;
            let done: Vec<_> = truth.iter().filter(|b| is_done(&b.status)).collect();
            let agree = done
                .iter()
                .filter(|b| {
                    view.get(&b.key.to_string())
                        .is_some_and(|e| e.status == b.status && e.version == b.version)
                })
                .count();
            let redelivered = stack
                .pipeline
                .received()
                .iter()
                .filter(|r| r.is_redelivery())
                .count();
            out.at(&format!(
                "progress  {}/{builds} builds finished, the pipeline agrees on {agree}; so far {} \
                 lost, {recovered} recovered, {redelivered} re-delivered",
                done.len(),
                recovered + behind.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Envoy merges histogram samples when it flushes stats (every second in this
    // configuration): wait for one flush so the recovery delays include the last recoveries.
    std::thread::sleep(Duration::from_millis(1500));
    // Everything below is read now, once the filter is idle: drone-sim's and the filter's
    // counts of drone calls at the same moment.
    let calls = drone_calls(&stack);
    let truth = stack.drone.builds();
    let stats = stack.drone.stats();
    let received = stack.pipeline.received();
    let redeliveries: Vec<_> = received.iter().filter(|r| r.is_redelivery()).collect();
    let outcome = |o: &str| redeliveries.iter().filter(|r| r.outcome == o).count();
    let hooks = stack.drone.webhooks();
    let observed = scenario::observed(&hooks);
    let differing = stack.mismatches(|_| true);
    let total_hooks = stats.webhooks_sent + stats.webhooks_lost + stats.webhooks_failed;
    let metrics = stack.envoy.stats("status_sync").unwrap_or_default();
    let metric = |k: &str| {
        metrics
            .get(&format!("status_sync.{k}"))
            .copied()
            .unwrap_or(0)
    };
    // On a loaded machine a flush can come late: wait (bounded) for the quantiles when there
    // were recoveries.
    let quantiles = || {
        stack
            .envoy
            .histogram_quantiles("status_sync.recovery_delay_ms")
            .unwrap_or_default()
    };
    let mut delay = quantiles();
    let flush_deadline = Instant::now() + Duration::from_secs(10);
    while delay.is_empty() && metric("transitions_recovered") > 0 && Instant::now() < flush_deadline
    {
        std::thread::sleep(Duration::from_millis(250));
        delay = quantiles();
    }

    out.line("");
    out.line(format!(
        "== summary ({ended} {elapsed:.1}s after drone started the builds) =="
    ));
    out.row(
        "builds",
        truth.len().to_string(),
        "run by drone-sim (--builds)",
    );
    out.row(
        "webhooks drone produced",
        total_hooks.to_string(),
        "one per build event drone sends a webhook for",
    );
    out.row(
        "webhooks lost",
        format!(
            "{} ({:.0}%)",
            stats.webhooks_lost,
            100.0 * stats.webhooks_lost as f64 / total_hooks.max(1) as f64
        ),
        "dropped by drone-sim (--loss); drone never retries a webhook",
    );
    out.row(
        "webhooks refused by the filter (401)",
        metric("webhooks_rejected").to_string(),
        if mode == "enforce" {
            "unsigned or forged: the demo's unsigned one at start; drone-sim signs the others"
        } else {
            "unsigned or forged webhooks are refused in enforce only"
        },
    );
    out.row(
        "builds whose final state was lost",
        (recovered + behind.len()).to_string(),
        "their last webhook was lost, or drone sends none (a decline)",
    );
    out.row(
        "  ... recovered by status-sync",
        recovered.to_string(),
        "the pipeline now has drone's final state",
    );
    out.row(
        "transitions re-delivered / accepted",
        format!("{} / {}", redeliveries.len(), outcome("applied")),
        &format!(
            "pipeline got / applied; not applied: {} it already had, {} repeats, {} server errors",
            outcome("stale"),
            outcome("duplicate"),
            outcome("failed")
        ),
    );
    out.row(
        "drone API calls",
        calls.sim.to_string(),
        &format!(
            "drone-sim's count = drone_polls_ok + _failed ({} + {}){}, read together at the end",
            calls.ok,
            calls.failed,
            if calls.settled {
                ""
            } else {
                " NOT EQUAL: a call was in flight"
            }
        ),
    );
    out.row(
        "builds no webhook of which arrived",
        (truth.len() - truth.iter().filter(|b| observed.contains(&b.key)).count()).to_string(),
        "unseen until a later build's number shows them (--lose-any)",
    );
    out.row(
        "builds where pipeline != drone",
        differing.len().to_string(),
        "0: the pipeline believes what drone says about every build",
    );
    for m in &differing {
        out.line(format!("    {m}"));
    }
    out.line("");
    out.line("  SLO (status-sync's metrics; see docs/runbook.md):");
    out.row(
        "oldest undelivered transition now",
        format!("{} s", metric("oldest_undelivered_seconds")),
        "oldest transition status-sync knows the pipeline lacks; 0: caught up",
    );
    let q = |name: &str| {
        delay
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| "-".to_string(), |(_, v)| format!("{v:.0} ms"))
    };
    out.row(
        "recovery delay p50 / p99 (known -> accepted)",
        format!("{} / {}", q("P50"), q("P99")),
        &format!(
            "from drone's API showing it to the pipeline accepting it; {} transitions",
            metric("transitions_recovered")
        ),
    );
    lag_s.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((lag_s.len() as f64 - 1.0) * p).round() as usize;
        lag_s
            .get(i)
            .map_or_else(|| "-".to_string(), |v| format!("{v:.1} s"))
    };
    out.row(
        "pipeline behind drone p50 / p99 (demo's view)",
        format!("{} / {}", pct(0.5), pct(0.99)),
        "from LOST to RECOVERED above; includes stale_after_ms",
    );
    out.line("");
    out.line(
        "  status-sync metrics at the end (a few of Envoy admin's /stats?filter=status_sync):",
    );
    for (name, why) in [
        ("webhooks_observed", "drone build webhooks the filter saw"),
        ("webhooks_delivered", "... that the pipeline answered 2xx"),
        ("webhooks_signature_invalid", "signature check failed"),
        (
            "transitions_lost",
            "transitions found missing in the pipeline",
        ),
        (
            "transitions_recovered",
            "... that the pipeline accepted later",
        ),
        ("redeliveries_ok", "re-deliveries the pipeline accepted"),
        ("redeliveries_failed", "re-delivery attempts that failed"),
        ("drone_polls_ok", "drone API calls answered"),
        ("drone_polls_failed", "drone API calls that failed"),
        ("builds_tracked", "builds status-sync still watches"),
    ] {
        out.line(format!(
            "    {:<42} {:<7} {why}",
            format!("status_sync.{name}"),
            metric(name)
        ));
    }
    drop(stack); // Envoy is killed, then the simulators stop; Envoy's log stays.
    let mut text = out.lines.join("\n");
    text.push('\n');
    let file = out_dir.join("output.txt");
    std::fs::write(&file, text).with_context(|| format!("write {}", file.display()))?;
    Ok(())
}

/// `--replicas N`: the same builds through the embedded default and through cluster mode, N
/// replicas each with its sidecar (`envoy_e2e::cluster`), and what each cost side by side.
fn side_by_side(a: &Args, replicas: usize) -> Result<()> {
    use envoy_e2e::cluster::{ClusterStack, Figures, Setup, Topology};
    let builds: u64 = a.get("builds", 40)?;
    let loss: f64 = a.get("loss", 0.0)?;
    let seed: u64 = a.get("seed", 7)?;
    let every_ms: u64 = a.get("every-ms", 150)?;
    let timeout = Duration::from_secs(a.get("timeout-s", 240)?);
    let tools = Tools::from_env().context("the demo runs via `make run`")?;
    let out_dir = out_dir(a, &tools)?;
    let etcd_bin = envoy_e2e::etcd::find()
        .context("cluster mode needs etcd on PATH: `make etcd` installs Debian's etcd-server")?;
    let mut out = Out::new();
    out.line(format!(
        "status-sync demo: {builds} builds on drone-sim, losing {:.0}% of its webhooks{}, \
         spread over {replicas} pipeline replicas, each behind its own sidecar",
        loss * 100.0,
        if loss > 0.0 {
            " (never a build's first)"
        } else {
            ""
        }
    ));
    let mut rng = Rng::new(seed);
    let plans: Vec<(BuildPlan, Duration)> = (0..builds)
        .map(|i| {
            (
                BuildPlan::random(&mut rng, 3, 100),
                Duration::from_millis(every_ms * i),
            )
        })
        .collect();
    let run = |cluster: bool, out: &mut Out| -> Result<Figures> {
        let etcd = if cluster {
            out.at("starting a 3-member etcd (Debian's etcd-server) on loopback");
            Some(envoy_e2e::etcd::EtcdCluster::start(&etcd_bin, 3)?)
        } else {
            None
        };
        out.at(&format!(
            "{}: starting drone-sim, {replicas} replicas, {replicas} sidecars and a round-robin Service",
            if cluster { "cluster mode" } else { "embedded default" }
        ));
        let setup = Setup {
            replicas,
            topology: if cluster {
                Topology::Cluster
            } else {
                Topology::Embedded
            },
            loss,
            seed,
        };
        let stack = ClusterStack::start(&tools, setup, etcd)?;
        if cluster {
            let leader = stack.wait_one_leader(Duration::from_secs(60))?;
            out.at(&format!(
                "sidecar {leader} leads the cluster (cluster_mode 1), the others follow (2)"
            ));
        }
        stack.schedule(&plans);
        out.at("drone runs the builds; waiting until the pipeline agrees with drone and the sidecars are idle");
        stack.wait_settled(timeout)?;
        let f = stack.figures()?;
        out.at(&format!("{f}"));
        Ok(f)
    };
    let embedded = run(false, &mut out)?;
    let cluster = run(true, &mut out)?;
    out.line(String::new());
    out.line(format!(
        "  {:<40} {:>16} {:>16}",
        "", "embedded", "cluster mode"
    ));
    let both = |f: fn(&Figures) -> String| (f(&embedded), f(&cluster));
    let rows = [
        (
            "duplicates in the pipeline",
            both(|f| f.duplicates.to_string()),
        ),
        ("drone API calls", both(|f| f.drone_calls.to_string())),
        ("  of which build lookups", both(|f| f.lookups.to_string())),
        ("re-deliveries", both(|f| f.redeliveries.to_string())),
        (
            "etcd requests per webhook",
            ("-".into(), format!("{:.2}", cluster.etcd_per_webhook())),
        ),
    ];
    for (label, (e, c)) in rows {
        out.line(format!("  {label:<40} {e:>16} {c:>16}"));
    }
    let file = out_dir.join("output-replicas.txt");
    std::fs::write(&file, out.lines.join("\n") + "\n")
        .with_context(|| format!("write {}", file.display()))?;
    Ok(())
}
