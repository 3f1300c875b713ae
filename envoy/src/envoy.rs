//! Running a real Envoy with status-sync: rendering `envoy.yaml.tmpl`, starting and stopping
//! the process, reading its stats, and pushing new plugin configurations at runtime.
//!
//! Every Envoy started here is a child process owned by an [`Envoy`] value whose `Drop` kills
//! it, so a failing test (a panic unwinding through it) still leaves nothing running. Admin
//! binds port 0 and reports its address through `--admin-address-path`, so parallel runs never
//! collide on the admin port.

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::drone_tls::{DroneTls, DRONE_HOST};

#[path = "../../host-tests/src/stat_name.rs"]
mod stat_name;
pub use stat_name::untagged;

/// The static configuration template, compiled in so binaries work from any directory.
pub const TEMPLATE: &str = include_str!("../envoy.yaml.tmpl");

/// Where this crate lives (for the YAML files next to it).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Envoy binary and the filter, from `ENVOY_BIN` and `STATUS_SYNC_WASM` (set by the
/// Makefile). Missing either is an error that says how to get them, never a silent skip.
#[derive(Clone, Debug)]
pub struct Tools {
    pub envoy: PathBuf,
    pub wasm: PathBuf,
}

impl Tools {
    pub fn from_env() -> Result<Tools> {
        let get = |var: &str, what: &str| -> Result<PathBuf> {
            let p = std::env::var_os(var).map(PathBuf::from).with_context(|| {
                format!("{var} is not set: run the end-to-end tests with `make test` (it builds {what} and sets {var})")
            })?;
            if !p.is_file() {
                bail!(
                    "{var}={} does not exist: run `make test` (it builds {what})",
                    p.display()
                );
            }
            Ok(p)
        };
        let envoy = get("ENVOY_BIN", "Envoy into .venv/ via `make envoy`")?;
        let wasm = get("STATUS_SYNC_WASM", "out/status_sync.wasm via `make build`")?;
        Ok(Tools {
            envoy: absolute(&envoy)?,
            wasm: absolute(&wasm)?,
        })
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("canonicalize {}", p.display()))
}

/// A free loopback port for Envoy's listener. The port is released before Envoy binds it, so
/// another process could grab it in between; ports come from the kernel's ephemeral range
/// (random per call), so in practice two runs do not collide.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(l.local_addr()?.port())
}

/// Substitutes `{{NAME}}` placeholders. A placeholder alone on its line takes a multi-line
/// value, indented like the placeholder. Unknown or leftover placeholders are errors, so a
/// template and its code cannot drift apart silently.
pub fn render(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 1024);
    for line in template.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let mut l = line.to_string();
        for (name, value) in vars {
            let ph = format!("{{{{{name}}}}}");
            if trimmed == ph {
                l = value
                    .lines()
                    .map(|v| format!("{indent}{v}"))
                    .collect::<Vec<_>>()
                    .join("\n");
            } else {
                l = l.replace(&ph, value);
            }
        }
        if let Some(i) = l.find("{{") {
            bail!("template placeholder left unfilled: {}", &l[i..]);
        }
        out.push_str(&l);
        out.push('\n');
    }
    Ok(out)
}

/// The plugin configuration the demo and the tests start from: short timings so that things
/// happen within seconds, and the token taken from the environment.
pub fn base_plugin_config() -> Value {
    json!({
        "webhook_path": "/hook",
        "pipeline_cluster": "pipeline",
        "pipeline_authority": "pipeline.local",
        "drone_cluster": "drone",
        "drone_authority": DRONE_HOST,
        "drone_token_env": "DRONE_TOKEN",
        "tick_ms": 200,
        "stale_after_ms": 1500,
        "max_poll_interval_ms": 4000,
        "call_timeout_ms": 5000,
        "circuit_failure_threshold": 3,
        "circuit_open_ms": 2000,
        "max_drone_calls_per_sec": 50,
        "instance": "e2e"
    })
}

/// A secret value that `Debug` does not show (a spec printed in a failing test stays clean).
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything needed to start one Envoy.
#[derive(Clone, Debug)]
pub struct EnvoySpec {
    pub tools: Tools,
    pub listen_port: u16,
    pub pipeline_port: u16,
    /// drone-sim's plain HTTP port, behind the TLS listener on `drone_front_port`.
    pub drone_port: u16,
    /// The TLS listener in front of drone-sim (same Envoy), where the `drone` cluster
    /// connects.
    pub drone_front_port: u16,
    /// The certificates of that listener and the CA the `drone` cluster trusts; by default
    /// a certificate for [`DRONE_HOST`], the name the cluster expects.
    pub drone_tls: DroneTls,
    /// The plugin configuration (JSON); serialised into the StringValue.
    pub plugin: Value,
    pub concurrency: u32,
    /// Serve the listener from a file via LDS (so the plugin configuration can be changed
    /// while running) instead of `static_resources`.
    pub lds: bool,
    /// The value Envoy gets as `DRONE_TOKEN`.
    pub drone_token: String,
    /// The value Envoy gets as `DRONE_WEBHOOK_SECRET`, which the template hands to the VM as
    /// `envoy.yaml` does (the plugin reads it with `webhook_secret_env`). `None`: Envoy
    /// inherits whatever the caller's environment has.
    pub webhook_secret: Option<Secret>,
    /// Keep Envoy's files (`envoy.json`, `envoy.log`, `admin.txt`) in this directory, created
    /// if missing and left in place afterwards (the demo: `out/demo/`). `None`: a temporary
    /// directory, removed when the [`Envoy`] is dropped.
    pub dir: Option<PathBuf>,
    /// Deliver the filter as Istio does, through ECDS from a file, with this
    /// `failure_policy` (see [`crate::ecds`]); the plugin configuration should then use
    /// Istio's cluster names ([`crate::ecds::istio_plugin_config`]).
    pub ecds: Option<String>,
}

impl EnvoySpec {
    pub fn new(
        tools: Tools,
        pipeline_port: u16,
        drone_port: u16,
        drone_token: &str,
    ) -> Result<Self> {
        Ok(EnvoySpec {
            tools,
            listen_port: free_port()?,
            pipeline_port,
            drone_port,
            drone_front_port: free_port()?,
            drone_tls: DroneTls::generate(DRONE_HOST)?,
            plugin: base_plugin_config(),
            concurrency: 2,
            lds: false,
            drone_token: drone_token.to_string(),
            webhook_secret: None,
            dir: None,
            ecds: None,
        })
    }

    /// The YAML of `envoy.yaml.tmpl` for this spec (admin on port 0); its `drone` cluster
    /// connects to the TLS listener [`EnvoySpec::bootstrap`] adds.
    pub fn render(&self) -> Result<String> {
        render_template(
            TEMPLATE,
            0,
            self.listen_port,
            self.pipeline_port,
            &DroneUpstream {
                port: self.drone_front_port,
                host: DRONE_HOST,
                ca_file: self.drone_tls.ca_file(),
            },
            &self.tools.wasm,
            &self.plugin,
        )
    }

    /// The bootstrap Envoy runs: the rendered template plus the TLS listener in front of
    /// drone-sim (and its cluster).
    pub fn bootstrap(&self) -> Result<Value> {
        let mut b = yaml_to_json(&self.render()?)?;
        self.drone_tls
            .add_front(&mut b, self.drone_front_port, self.drone_port)?;
        Ok(b)
    }
}

/// Where the template's `drone` cluster connects, the name it expects on drone's
/// certificate (SNI and SAN), and the CA file it verifies the chain against.
#[derive(Clone, Copy, Debug)]
pub struct DroneUpstream<'a> {
    pub port: u16,
    pub host: &'a str,
    pub ca_file: &'a Path,
}

/// Fills `envoy.yaml.tmpl`.
pub fn render_template(
    template: &str,
    admin_port: u16,
    listen_port: u16,
    pipeline_port: u16,
    drone: &DroneUpstream<'_>,
    wasm: &Path,
    plugin: &Value,
) -> Result<String> {
    render(
        template,
        &[
            ("ADMIN_PORT", admin_port.to_string()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("PIPELINE_PORT", pipeline_port.to_string()),
            ("DRONE_PORT", drone.port.to_string()),
            // JSON strings are valid YAML double-quoted scalars.
            (
                "DRONE_HOST",
                Value::String(drone.host.to_string()).to_string(),
            ),
            (
                "DRONE_CA_FILE",
                Value::String(drone.ca_file.display().to_string()).to_string(),
            ),
            // A JSON string is a valid YAML double-quoted scalar.
            (
                "WASM_PATH",
                Value::String(wasm.display().to_string()).to_string(),
            ),
            ("PLUGIN_CONFIG", serde_json::to_string_pretty(plugin)?),
            // A JSON object is a valid YAML flow mapping.
            (
                "WEBHOOK_ROUTE_MATCH",
                webhook_route_match(plugin).to_string(),
            ),
        ],
    )
}

/// The route match of drone's webhooks, for the plugin's `webhook_path` (default `/hook`): a
/// case-insensitive `safe_regex` over every spelling `enforce` covers (`/HOOK`,
/// `/hook;jsessionid=1`, `/hook.json`, `/hook%20`, `/hook/x`), from the filter's own path
/// policy (`status_sync::core::webhook::webhook_route_regex`), so the route and the filter
/// never disagree on what is checked.
pub fn webhook_route_match(plugin: &Value) -> Value {
    let path = plugin
        .get("webhook_path")
        .and_then(Value::as_str)
        .unwrap_or("/hook");
    json!({ "safe_regex": { "regex": status_sync::core::webhook::webhook_route_regex(path) } })
}

/// Parses an Envoy YAML configuration into JSON (Envoy accepts either), for programmatic edits.
pub fn yaml_to_json(yaml: &str) -> Result<Value> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).context("parse YAML")?;
    serde_json::to_value(v).context("YAML to JSON")
}

/// The Envoy name of our HTTP filter (also its key in routes' `typed_per_filter_config`).
pub const WASM_FILTER: &str = "envoy.filters.http.wasm";

/// The `typed_config` of every HTTP connection manager of a listener.
pub fn connection_managers(listener: &mut Value) -> Vec<&mut Value> {
    listener
        .get_mut("filter_chains")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|chain| chain.get_mut("filters").and_then(Value::as_array_mut))
        .flatten()
        .filter_map(|f| f.get_mut("typed_config"))
        .filter(|tc| tc.get("http_filters").is_some())
        .collect()
}

/// The wasm filter entries of every HTTP connection manager of a listener.
pub fn wasm_filters(listener: &mut Value) -> Vec<&mut Value> {
    connection_managers(listener)
        .into_iter()
        .filter_map(|hcm| hcm.get_mut("http_filters").and_then(Value::as_array_mut))
        .flatten()
        .filter(|h| h.get("name").and_then(Value::as_str) == Some(WASM_FILTER))
        .collect()
}

/// The routes of a listener that turn the wasm filter on (`typed_per_filter_config`).
pub fn webhook_routes(listener: &mut Value) -> Vec<&mut Value> {
    connection_managers(listener)
        .into_iter()
        .filter_map(|hcm| {
            hcm.pointer_mut("/route_config/virtual_hosts")
                .and_then(Value::as_array_mut)
        })
        .flatten()
        .filter_map(|vh| vh.get_mut("routes").and_then(Value::as_array_mut))
        .flatten()
        .filter(|r| {
            r.get("typed_per_filter_config")
                .and_then(|p| p.get(WASM_FILTER))
                .is_some()
        })
        .collect()
}

/// Replaces the plugin configuration (the StringValue) of every wasm filter in a listener.
pub fn set_plugin_config(listener: &mut Value, plugin: &Value) -> Result<()> {
    let s = plugin.to_string();
    let filters = wasm_filters(listener);
    if filters.is_empty() {
        bail!("no envoy.filters.http.wasm filter in the listener");
    }
    for f in filters {
        let slot = f
            .pointer_mut("/typed_config/config/configuration/value")
            .context("wasm filter without configuration.value")?;
        *slot = Value::String(s.clone());
    }
    // The route that enables the filter follows `webhook_path`.
    let m = webhook_route_match(plugin);
    for r in webhook_routes(listener) {
        r["match"] = m.clone();
    }
    Ok(())
}

/// Turns a static bootstrap into one whose listeners come from `lds_path` (watched in its
/// directory, so an atomic rename of the file is a configuration push). Returns the listeners.
pub fn to_lds(bootstrap: &mut Value, lds_path: &Path) -> Result<Vec<Value>> {
    let listeners = bootstrap
        .pointer_mut("/static_resources/listeners")
        .map(Value::take)
        .and_then(|v| v.as_array().cloned())
        .context("bootstrap has no static listeners")?;
    if let Some(sr) = bootstrap
        .get_mut("static_resources")
        .and_then(Value::as_object_mut)
    {
        sr.remove("listeners");
    }
    let dir = lds_path.parent().context("LDS path has no directory")?;
    // LDS needs a node identity, even from a file.
    bootstrap["node"] = json!({ "id": "status-sync-e2e", "cluster": "status-sync-e2e" });
    bootstrap["dynamic_resources"] = json!({
        "lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": lds_path.display().to_string(),
                "watched_directory": { "path": dir.display().to_string() }
            }
        }
    });
    Ok(listeners)
}

/// Writes an LDS file (a DiscoveryResponse) atomically: write beside it, then rename, which
/// is what Envoy's watched_directory reacts to.
pub fn write_lds(lds_path: &Path, listeners: &[Value]) -> Result<()> {
    let resources: Vec<Value> = listeners
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if let Some(o) = l.as_object_mut() {
                o.insert(
                    "@type".into(),
                    json!("type.googleapis.com/envoy.config.listener.v3.Listener"),
                );
            }
            l
        })
        .collect();
    let tmp = lds_path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&json!({ "resources": resources }))?,
    )
    .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, lds_path).with_context(|| format!("rename to {}", lds_path.display()))
}

/// `envoy --mode validate -c <config>`: Ok with the output on success, Err with it otherwise.
pub fn validate(tools: &Tools, config: &Path, env: &[(&str, &str)]) -> Result<String> {
    let mut cmd = Command::new(&tools.envoy);
    cmd.args(["--mode", "validate", "--log-level", "info", "-c"])
        .arg(config)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .with_context(|| format!("run {}", tools.envoy.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        bail!(
            "envoy --mode validate {} failed ({}):\n{}",
            config.display(),
            out.status,
            tail(&text, 60)
        )
    }
}

/// The environment `envoy --mode validate` gives the shipped files: the token and the secret
/// under the variables they name.
pub const VALIDATE_ENV: [(&str, &str); 2] = [
    ("DRONE_TOKEN", "validate-token"),
    ("DRONE_WEBHOOK_SECRET", "validate-secret"),
];

/// [`validate`] of `bootstrap`, written to `dir/name` as JSON.
pub fn validate_json(
    tools: &Tools,
    dir: &Path,
    name: &str,
    bootstrap: &Value,
    env: &[(&str, &str)],
) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec(bootstrap)?)?;
    validate(tools, &p, env)
}

/// Points every status-sync filter of a bootstrap's static listeners at the module under
/// test; how many there are.
pub fn use_module(bootstrap: &mut Value, wasm: &Path) -> usize {
    let mut n = 0;
    for l in bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        for f in wasm_filters(l) {
            f["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] =
                json!(wasm.display().to_string());
            n += 1;
        }
    }
    n
}

/// The keys of a JSON object (none for anything else).
pub fn keys(v: &Value) -> std::collections::BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Rewrites a bootstrap (its clusters `drone` and the pipeline's, its status-sync filters and
/// routes) as istiod delivers a WasmPlugin's `spec` to a sidecar: Istio's cluster names from
/// `pluginConfig` (both `outbound|...`), `pluginConfig` as the StringValue JSON, `vm_id: ""`
/// (Istio never sets it), `vmConfig.env` as `host_env_keys` (`valueFrom: HOST`) and
/// `key_values`, `failStrategy` as the failure policy, the module under test.
pub fn as_istiod_delivers(bootstrap: &mut Value, spec: &Value, wasm: &Path) -> Result<()> {
    let plugin = &spec["pluginConfig"];
    let cluster = |k: &str| {
        plugin[k]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("pluginConfig.{k}"))
    };
    let (pipeline_cluster, drone_cluster) =
        (cluster("pipeline_cluster")?, cluster("drone_cluster")?);
    assert!(
        drone_cluster.starts_with("outbound|") && pipeline_cluster.starts_with("outbound|"),
        "Istio's cluster names: {drone_cluster}, {pipeline_cluster}"
    );
    for c in bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .context("clusters")?
    {
        let name = if c["name"] == "drone" {
            &drone_cluster
        } else {
            &pipeline_cluster
        };
        c["name"] = json!(name);
        c["load_assignment"]["cluster_name"] = json!(name);
    }
    let mut host_keys = Vec::new();
    let mut inline = serde_json::Map::new();
    for e in spec["vmConfig"]["env"].as_array().context("vmConfig.env")? {
        let name = e["name"].as_str().context("env name")?.to_string();
        if e["valueFrom"] == "HOST" {
            host_keys.push(json!(name));
        } else {
            inline.insert(name, e["value"].clone());
        }
    }
    use_module(bootstrap, wasm);
    for l in bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .context("listeners")?
    {
        for f in wasm_filters(l) {
            let config = &mut f["typed_config"]["config"];
            config["vm_config"]["vm_id"] = json!("");
            config["vm_config"]["environment_variables"] =
                json!({ "host_env_keys": host_keys, "key_values": inline });
            config["failure_policy"] = spec["failStrategy"].clone();
            config["configuration"]["value"] = json!(plugin.to_string());
        }
        for r in l["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
            ["virtual_hosts"][0]["routes"]
            .as_array_mut()
            .context("routes")?
        {
            r["route"]["cluster"] = json!(pipeline_cluster);
        }
    }
    Ok(())
}

/// One HTTP/1.1 `POST` of a build webhook (`x-drone-event: build`, JSON) written byte for
/// byte to loopback `port` (no client library: they resolve `..` and re-encode paths before
/// sending), with `headers`; reads until the whole answer (its head and `content-length`
/// body), without waiting for Envoy to close a connection it answered early (a 401 before the
/// body: it holds it for its `delayed_close_timeout`). The status code and the `Location`
/// header.
pub fn raw_post(
    port: u16,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, Option<String>)> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: pipeline\r\nx-drone-event: build\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    // Envoy may answer (401, redirect) and close before it has read the body: a failed write
    // of the body, or a reset after the answer, is not the test's business.
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let head = loop {
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length = header(head, "content-length").and_then(|v| v.parse().ok());
            if rest.len() >= length.unwrap_or(0) {
                break head.to_string();
            }
        }
        match s.read(&mut buf) {
            Ok(n) if n > 0 => answer.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Ok(_) | Err(_) if !answer.is_empty() => break text,
            Ok(_) => bail!("{path}: closed without an answer"),
            Err(e) => return Err(e).with_context(|| format!("reading the answer to {path}")),
        }
    };
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line for {path}: {head:?}"))?;
    Ok((code, header(&head, "location")))
}

/// The value of header `name` in an HTTP answer's head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        })
        .map(|(_, v)| v.trim().to_string())
}

/// Writes `bootstrap` to `dir/envoy.json` and starts Envoy on it, logging to `dir/envoy.log`
/// and writing its admin address to `dir/admin.txt`.
fn launch(
    tools: &Tools,
    dir: &Path,
    bootstrap: &Value,
    concurrency: u32,
    drone_token: &str,
    webhook_secret: Option<&str>,
) -> Result<Child> {
    let config = dir.join("envoy.json");
    std::fs::write(&config, serde_json::to_vec_pretty(bootstrap)?)?;
    let mut cmd = Command::new(&tools.envoy);
    crate::process::die_with_parent(&mut cmd);
    // Its own process group: a Ctrl-C meant for the demo does not reach Envoy directly;
    // the demo prints its summary (reading Envoy's stats) and then kills it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.arg("-c")
        .arg(&config)
        .args(["--concurrency", &concurrency.to_string()])
        // Several Envoys run side by side in the tests: no shared-memory hot restart.
        .arg("--disable-hot-restart")
        .arg("--admin-address-path")
        .arg(dir.join("admin.txt"))
        // A replaced listener drains for this long; keep config pushes quick.
        .args(["--drain-time-s", "1", "--drain-strategy", "immediate"])
        // The filter logs through the `wasm` component; `main` at info would list every
        // extension Envoy has, which buries the interesting lines.
        .args([
            "--log-level",
            "info",
            "--component-log-level",
            "main:warning,wasm:debug",
        ])
        .env("DRONE_TOKEN", drone_token);
    if let Some(secret) = webhook_secret {
        cmd.env("DRONE_WEBHOOK_SECRET", secret);
    }
    crate::process::spawn_logged(&mut cmd, &dir.join("envoy.log"))
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running Envoy. Dropping it kills the process (and prints its log tail when dropped
/// during a panic, so a failing test shows what Envoy said).
pub struct Envoy {
    child: Option<Child>,
    dir: EnvoyDir,
    admin: String,
    listen_port: u16,
    lds: Option<(PathBuf, Vec<Value>)>,
    ecds: Option<crate::ecds::EcdsFile>,
    agent: ureq::Agent,
    /// Keeps the CA file the `drone` cluster reads for as long as Envoy runs.
    _drone_tls: Option<DroneTls>,
}

/// Where an [`Envoy`] keeps its files: a temporary directory (removed on drop) or one the
/// caller named (kept).
enum EnvoyDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl EnvoyDir {
    fn new(kept: Option<&Path>) -> Result<EnvoyDir> {
        match kept {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
                // A previous run's admin address would be read as this Envoy's.
                let admin = d.join("admin.txt");
                if admin.exists() {
                    std::fs::remove_file(&admin)
                        .with_context(|| format!("remove {}", admin.display()))?;
                }
                Ok(EnvoyDir::Kept(d.to_path_buf()))
            }
            None => tempfile::Builder::new()
                .prefix("status-sync-envoy-")
                .tempdir()
                .map(EnvoyDir::Temp)
                .context("create a temp dir for Envoy"),
        }
    }

    fn path(&self) -> &Path {
        match self {
            EnvoyDir::Temp(t) => t.path(),
            EnvoyDir::Kept(p) => p,
        }
    }
}

impl Envoy {
    /// Starts Envoy and waits (bounded) until its admin says it is ready.
    pub fn start(spec: &EnvoySpec) -> Result<Envoy> {
        let mut envoy = Self::spawn(spec)?;
        envoy.wait_ready(Duration::from_secs(90))?;
        Ok(envoy)
    }

    /// Starts Envoy without waiting; for tests that expect it to refuse a configuration.
    pub fn spawn(spec: &EnvoySpec) -> Result<Envoy> {
        let dir = EnvoyDir::new(spec.dir.as_deref())?;
        let mut bootstrap = yaml_to_json(&spec.render()?)?;
        let mut lds = None;
        if spec.lds {
            let lds_dir = dir.path().join("lds");
            std::fs::create_dir_all(&lds_dir)?;
            let path = lds_dir.join("listeners.json");
            let listeners = to_lds(&mut bootstrap, &path)?;
            write_lds(&path, &listeners)?;
            lds = Some((path, listeners));
        }
        let mut ecds = None;
        if let Some(policy) = &spec.ecds {
            let ecds_dir = dir.path().join("ecds");
            std::fs::create_dir_all(&ecds_dir)?;
            ecds = Some(crate::ecds::to_ecds(&mut bootstrap, &ecds_dir, policy)?);
        }
        // After LDS/ECDS: the TLS listener in front of drone-sim stays static and plain.
        spec.drone_tls
            .add_front(&mut bootstrap, spec.drone_front_port, spec.drone_port)?;
        let child = launch(
            &spec.tools,
            dir.path(),
            &bootstrap,
            spec.concurrency,
            &spec.drone_token,
            spec.webhook_secret.as_ref().map(|s| s.0.as_str()),
        )?;
        Ok(Envoy {
            child: Some(child),
            dir,
            admin: String::new(),
            listen_port: spec.listen_port,
            lds,
            ecds,
            agent: crate::util::agent(Duration::from_secs(5)),
            _drone_tls: Some(spec.drone_tls.clone()),
        })
    }

    /// Starts Envoy from a bootstrap (JSON) the template cannot express, e.g. the same Envoy
    /// without the filter, and waits until it is ready. [`Envoy::listen_port`] is the first
    /// static listener's.
    pub fn start_bootstrap(
        tools: &Tools,
        bootstrap: &Value,
        concurrency: u32,
        drone_token: &str,
    ) -> Result<Envoy> {
        let dir = EnvoyDir::new(None)?;
        let child = launch(tools, dir.path(), bootstrap, concurrency, drone_token, None)?;
        let listen_port = bootstrap
            .pointer("/static_resources/listeners/0/address/socket_address/port_value")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0);
        let mut envoy = Envoy {
            child: Some(child),
            dir,
            admin: String::new(),
            listen_port,
            lds: None,
            ecds: None,
            agent: crate::util::agent(Duration::from_secs(5)),
            _drone_tls: None,
        };
        envoy.wait_ready(Duration::from_secs(90))?;
        Ok(envoy)
    }

    /// The process id (0 once it was killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn admin_file(&self) -> PathBuf {
        self.dir.path().join("admin.txt")
    }

    /// Waits until admin `/ready` answers 200, or fails with the log tail if Envoy exits or
    /// the deadline passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                bail!(
                    "Envoy exited during startup ({status}):\n{}",
                    tail(&self.log(), 40)
                );
            }
            if self.admin.is_empty() {
                if let Ok(a) = std::fs::read_to_string(self.admin_file()) {
                    if !a.trim().is_empty() {
                        self.admin = a.trim().to_string();
                    }
                }
            }
            if !self.admin.is_empty() {
                if let Ok((200, _)) = self.admin_get("/ready") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "Envoy not ready within {timeout:?}:\n{}",
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Some(exit status) once the process has exited.
    pub fn try_exit(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("Envoy already reaped"),
        }
    }

    /// Waits (bounded) for the process to exit by itself; None if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_exit()? {
                return Ok(Some(s));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(None)
    }

    /// The file Envoy logs to (`envoy.log` in its directory).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("envoy.log")
    }

    /// Everything Envoy logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Envoy's resident set size in KiB (`VmRSS` of `/proc/<pid>/status`), for memory bounds.
    pub fn rss_kib(&self) -> Result<u64> {
        let pid = self.child.as_ref().context("Envoy is not running")?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// `http://127.0.0.1:<listener><path>`: where drone sends webhooks.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen_port)
    }

    /// The admin interface's `host:port` (known once [`Envoy::wait_ready`] returned).
    pub fn admin_address(&self) -> &str {
        &self.admin
    }

    /// GET on the admin interface.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        if self.admin.is_empty() {
            bail!("admin address not known yet");
        }
        let (code, body) = crate::util::send(
            self.agent.get(&format!("http://{}{path}", self.admin)),
            None,
        )
        .map_err(|e| anyhow::anyhow!("admin {path}: {e}"))?;
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }

    /// All counters and gauges whose name contains `filter`, with Envoy's `wasmcustom.` prefix
    /// for wasm-defined metrics stripped (so `status_sync.x` is found either way) and the
    /// `sync_instance=.=<i>;.;` tags removed, as Prometheus names read: values of several
    /// instances add up (use [`Envoy::stats_tagged`] to tell them apart).
    pub fn stats(&self, filter: &str) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for (k, v) in self.stats_tagged(filter)? {
            *out.entry(untagged(&k)).or_insert(0) += v;
        }
        Ok(out)
    }

    /// Like [`Envoy::stats`], names with their tags.
    pub fn stats_tagged(&self, filter: &str) -> Result<BTreeMap<String, i64>> {
        let (code, body) = self.admin_get(&format!("/stats?filter={filter}"))?;
        if code != 200 {
            bail!("admin /stats answered {code}");
        }
        Ok(body
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                let k = k.strip_prefix("wasmcustom.").unwrap_or(k);
                Some((k.to_string(), v.trim().parse::<i64>().ok()?))
            })
            .collect())
    }

    /// Cumulative quantiles of a histogram from admin `/stats` (`P50(interval,cumulative)`),
    /// e.g. `[("P50", 1200.0), ...]`; empty until Envoy merged samples (stats flush).
    pub fn histogram_quantiles(&self, name: &str) -> Result<Vec<(String, f64)>> {
        // The admin filter is a regex on the full name, where tags sit inside the name:
        // filter by the last part, then compare untagged names.
        let last = name.rsplit('.').next().unwrap_or(name);
        let (code, body) = self.admin_get(&format!("/stats?filter={last}"))?;
        if code != 200 {
            bail!("admin /stats answered {code}");
        }
        let mut out = Vec::new();
        for line in body.lines() {
            let Some((k, v)) = line.split_once(": ") else {
                continue;
            };
            if untagged(k.strip_prefix("wasmcustom.").unwrap_or(k)) != name {
                continue;
            }
            for part in v.split_whitespace() {
                let Some((q, rest)) = part.split_once('(') else {
                    continue;
                };
                let cumulative = rest.trim_end_matches(')').split(',').nth(1);
                if let Some(x) = cumulative.and_then(|c| c.parse::<f64>().ok()) {
                    out.push((q.to_string(), x));
                }
            }
        }
        Ok(out)
    }

    /// One `status_sync.<name>` metric; 0 when not (yet) defined. A name the filter does not
    /// declare (`status_sync::core::metrics::METRICS`) is an error: a typo would read 0.
    pub fn metric(&self, name: &str) -> Result<i64> {
        let full = format!("status_sync.{name}");
        anyhow::ensure!(
            status_sync::core::metrics::by_name(&full).is_some(),
            "the filter defines no metric {full}"
        );
        Ok(self.stats("status_sync")?.get(&full).copied().unwrap_or(0))
    }

    /// Pushes a new plugin configuration through LDS (the listener is replaced; Envoy drains
    /// the old one). Only for Envoys started with `lds: true`.
    pub fn push_plugin_config(&mut self, plugin: &Value) -> Result<()> {
        let (path, listeners) = self
            .lds
            .as_mut()
            .context("this Envoy was not started with LDS")?;
        for l in listeners.iter_mut() {
            set_plugin_config(l, plugin)?;
        }
        write_lds(path, listeners)
    }

    /// The ECDS file of an Envoy started with `ecds` set: push a module or configuration.
    pub fn ecds_mut(&mut self) -> Result<&mut crate::ecds::EcdsFile> {
        self.ecds
            .as_mut()
            .context("this Envoy was not started with ECDS")
    }

    /// Kills Envoy now (also done on drop).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- Envoy log tail ({}) ----\n{}",
                self.dir.path().display(),
                tail(&self.log(), 80)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_and_indents_and_refuses_leftovers() {
        let t = "a: {{X}}\n  b: |\n    {{Y}}\n";
        let out = render(t, &[("X", "1".into()), ("Y", "l1\nl2".into())]).unwrap();
        assert_eq!(out, "a: 1\n  b: |\n    l1\n    l2\n");
        assert!(render(t, &[("X", "1".into())]).is_err());
    }

    #[test]
    fn webhook_route_matches_what_the_filter_watches() {
        let re = |v: Value| webhook_route_match(&v)["safe_regex"]["regex"].clone();
        assert_eq!(re(json!({})), json!("(?i)/hook.*"));
        assert_eq!(
            re(json!({"webhook_path": "/drone/events"})),
            json!("(?i)/drone[^/]*/events.*")
        );
        assert_eq!(re(json!({"webhook_path": "/ci/"})), json!("(?i)/ci.*"));
    }

    /// The shipped example routes drone's webhooks with the regex its own `webhook_path`
    /// gives: the one path policy of the filter.
    #[test]
    fn the_shipped_example_routes_webhooks_by_the_filters_path_policy() {
        let example = include_str!("../envoy.yaml");
        let mut v = yaml_to_json(example).unwrap();
        let plugin = crate::cluster::plugin_of(v.clone()).unwrap();
        let mut l = v["static_resources"]["listeners"][0].take();
        let routes = webhook_routes(&mut l);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0]["match"], webhook_route_match(&plugin));
    }

    #[test]
    fn template_renders_to_yaml_with_the_plugin_config_as_a_string() {
        let y = render_template(
            TEMPLATE,
            0,
            1,
            2,
            &DroneUpstream {
                port: 3,
                host: DRONE_HOST,
                ca_file: Path::new("/tmp/ca.pem"),
            },
            Path::new("/tmp/x.wasm"),
            &base_plugin_config(),
        )
        .unwrap();
        let mut v = yaml_to_json(&y).unwrap();
        let mut l = v["static_resources"]["listeners"][0].clone();
        let f = wasm_filters(&mut l);
        assert_eq!(f.len(), 1);
        let cfg = &f[0]["typed_config"]["config"];
        assert_eq!(cfg["failure_policy"], "FAIL_RELOAD");
        assert_eq!(cfg["vm_config"]["vm_id"], "status-sync");
        assert_eq!(
            cfg["vm_config"]["environment_variables"]["host_env_keys"][0],
            "DRONE_TOKEN"
        );
        let plugin: Value =
            serde_json::from_str(cfg["configuration"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(plugin, base_plugin_config());
        assert!(!y.contains("sim-token"), "no token in the YAML");
        // The filter is off in the chain and on for the webhook route only.
        assert_eq!(f[0]["disabled"], true);
        let routes = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(routes[0]["match"]["safe_regex"]["regex"], "(?i)/hook.*");
        assert_eq!(
            routes[0]["typed_per_filter_config"]["envoy.filters.http.wasm"]["@type"],
            "type.googleapis.com/envoy.config.route.v3.FilterConfig"
        );
        assert_eq!(routes[1]["match"]["prefix"], "/");
        assert!(routes[1].get("typed_per_filter_config").is_none());
        // A pushed configuration moves the webhook route with `webhook_path`.
        let mut l2 = v["static_resources"]["listeners"][0].clone();
        let mut moved = base_plugin_config();
        moved["webhook_path"] = json!("/hook2");
        set_plugin_config(&mut l2, &moved).unwrap();
        let r2 = &l2["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
            ["virtual_hosts"][0]["routes"];
        assert_eq!(
            r2[0]["match"],
            json!({"safe_regex": {"regex": "(?i)/hook2.*"}})
        );
        assert_eq!(r2[1]["match"], json!({"prefix": "/"}));
        let ls = to_lds(&mut v, Path::new("/tmp/d/l.json")).unwrap();
        assert_eq!(ls.len(), 1);
        assert!(v["static_resources"].get("listeners").is_none());
        assert_eq!(
            v["dynamic_resources"]["lds_config"]["path_config_source"]["watched_directory"]["path"],
            "/tmp/d"
        );
    }
}
