//! status-sync delivered the way Istio delivers a WasmPlugin: the HTTP filter in the listener
//! names an extension config that Envoy discovers (ECDS), here from a file instead of istiod.
//!
//! What istiod and istio-agent produce for `envoy/istio/wasmplugin.yaml` (istio/istio
//! `pilot/pkg/model/extensions.go`, `pilot/pkg/networking/core/extension/`, `pkg/wasm/convert.go`)
//! and what is copied here:
//! - the HTTP filter's name is the ECDS resource name `extensions.istio.io/wasmplugin/<ns>.<name>`,
//!   with `config_discovery` (no `typed_config`, no default config, `initial_fetch_timeout: 0s`,
//!   type URLs Wasm and RBAC, the RBAC one for istio-agent's fallback filter);
//! - the Wasm `PluginConfig`: `name` `<ns>.<name>`, `root_id` = `pluginName`, `vm_id` empty,
//!   runtime V8, the code as a local file (istio-agent has already fetched it), the
//!   configuration as `StringValue` JSON, `failure_policy` from `failStrategy`;
//! - clusters named as Istio names them (`outbound|8080||pipeline.ci.svc.cluster.local`);
//! - the filter runs on every request of the port (a WasmPlugin selects by port, not route).
//!
//! Not copied: ADS (a file source instead: Envoy reloads it when the file is moved into place),
//! istio-agent's fetch (the module is a local file), mTLS.

use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The ECDS resource name istiod gives the WasmPlugin `ci/status-sync` (Istio <= 1.29).
pub const FILTER_NAME: &str = "extensions.istio.io/wasmplugin/ci.status-sync";
/// The Wasm plugin name istiod sets: `<namespace>.<name>`.
pub const PLUGIN_NAME: &str = "ci.status-sync";
/// Istio's name of the pipeline service's cluster (port 8080).
pub const PIPELINE_CLUSTER: &str = "outbound|8080||pipeline.ci.svc.cluster.local";
/// Istio's name of drone's cluster (port 80).
pub const DRONE_CLUSTER: &str = "outbound|80||drone.ci.svc.cluster.local";

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// The plugin configuration `wasmplugin.yaml` gives, with the test's timings: Istio's cluster
/// names and authorities, and an `instance` (the shared-data prefix Istio's empty vm_id needs).
pub fn istio_plugin_config(base: &Value) -> Value {
    let mut p = base.clone();
    p["pipeline_cluster"] = json!(PIPELINE_CLUSTER);
    p["pipeline_authority"] = json!("pipeline.ci.svc.cluster.local");
    p["drone_cluster"] = json!(DRONE_CLUSTER);
    p["drone_authority"] = json!("drone.ci.svc.cluster.local");
    p["instance"] = json!("ci-pipeline");
    p
}

/// The extension config file of one Envoy, and what it currently holds.
#[derive(Clone, Debug)]
pub struct EcdsFile {
    pub path: PathBuf,
    /// The Wasm filter config as istio-agent forwards it (module as a local file).
    pub wasm: Value,
    pub version: u64,
}

impl EcdsFile {
    /// Points the Wasm filter at another module and/or configuration and writes the file
    /// (atomically: Envoy reloads a file source when it is moved into place).
    pub fn push(&mut self, module: &Path, plugin: &Value) -> Result<()> {
        self.wasm["config"]["vm_config"]["code"] =
            json!({ "local": { "filename": module.display().to_string() } });
        self.wasm["config"]["configuration"]["value"] = json!(plugin.to_string());
        self.version += 1;
        self.write()
    }

    fn write(&self) -> Result<()> {
        let doc = json!({
            "version_info": self.version.to_string(),
            "resources": [{
                "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": FILTER_NAME,
                "typed_config": self.wasm,
            }],
        });
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("rename to {}", self.path.display()))
    }
}

/// Rewrites a bootstrap rendered from `envoy.yaml.tmpl` into the shape Istio gives a sidecar:
/// the Wasm filter comes from ECDS (`dir/extension.json`), clusters carry Istio's names. The
/// Wasm config is taken from the template's filter and given Istio's fields, with
/// `failure_policy` set to `failure_policy`.
pub fn to_ecds(bootstrap: &mut Value, dir: &Path, failure_policy: &str) -> Result<EcdsFile> {
    let path = dir.join("extension.json");
    let source = json!({
        "resource_api_version": "V3",
        "initial_fetch_timeout": "0s",
        "path_config_source": {
            "path": path.display().to_string(),
            "watched_directory": { "path": dir.display().to_string() },
        },
    });
    let mut wasm = None;
    let listeners = bootstrap
        .pointer_mut("/static_resources/listeners")
        .and_then(Value::as_array_mut)
        .context("bootstrap has no static listeners")?;
    for l in listeners.iter_mut() {
        for hcm in crate::envoy::connection_managers(l) {
            for f in hcm
                .get_mut("http_filters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if f.get("name").and_then(Value::as_str) == Some(crate::envoy::WASM_FILTER) {
                    wasm = f.get("typed_config").cloned();
                    *f = json!({
                        "name": FILTER_NAME,
                        "config_discovery": {
                            "config_source": source,
                            "type_urls": [WASM_TYPE, RBAC_TYPE],
                        },
                    });
                }
            }
        }
        // The filter runs on every request of the port: no per-route switch.
        for r in crate::envoy::webhook_routes(l) {
            if let Some(o) = r.as_object_mut() {
                o.remove("typed_per_filter_config");
            }
        }
        rename_route_clusters(l);
    }
    if let Some(clusters) = bootstrap
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
    {
        for c in clusters {
            if let Some(new) = istio_cluster(c["name"].as_str().unwrap_or("")) {
                c["name"] = json!(new);
                c["load_assignment"]["cluster_name"] = json!(new);
            }
        }
    }
    if bootstrap.get("node").is_none() {
        bootstrap["node"] = json!({ "id": "sidecar~127.0.0.1~pipeline-0.ci~ci.svc.cluster.local", "cluster": "pipeline.ci" });
    }
    let mut wasm = wasm.context("no envoy.filters.http.wasm filter in the bootstrap")?;
    let cfg = &mut wasm["config"];
    cfg["name"] = json!(PLUGIN_NAME);
    cfg["root_id"] = json!("status-sync");
    cfg["vm_config"]["vm_id"] = json!("");
    cfg["failure_policy"] = json!(failure_policy);
    let file = EcdsFile {
        path,
        wasm,
        version: 1,
    };
    file.write()?;
    Ok(file)
}

fn istio_cluster(name: &str) -> Option<&'static str> {
    match name {
        "pipeline" => Some(PIPELINE_CLUSTER),
        "drone" => Some(DRONE_CLUSTER),
        _ => None,
    }
}

fn rename_route_clusters(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(c)) = o.get("cluster") {
                if let Some(new) = istio_cluster(c) {
                    o.insert("cluster".into(), json!(new));
                }
            }
            o.values_mut().for_each(rename_route_clusters);
        }
        Value::Array(a) => a.iter_mut().for_each(rename_route_clusters),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_becomes_istio_shaped() {
        let y = crate::envoy::render_template(
            crate::envoy::TEMPLATE,
            0,
            1,
            2,
            &crate::envoy::DroneUpstream {
                port: 3,
                host: crate::envoy::DRONE_HOST,
                ca_file: Path::new("/tmp/ca.pem"),
            },
            Path::new("/tmp/x.wasm"),
            &istio_plugin_config(&crate::envoy::base_plugin_config()),
        )
        .unwrap();
        let mut b = crate::envoy::yaml_to_json(&y).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = to_ecds(&mut b, dir.path(), "FAIL_OPEN").unwrap();
        let s = b.to_string();
        assert!(!s.contains(crate::envoy::WASM_FILTER), "{s}");
        assert!(
            s.contains(FILTER_NAME) && s.contains(PIPELINE_CLUSTER) && s.contains(DRONE_CLUSTER)
        );
        assert!(!s.contains("\"cluster\":\"pipeline\""), "{s}");
        let written: Value = serde_json::from_slice(&std::fs::read(&f.path).unwrap()).unwrap();
        let cfg = &written["resources"][0]["typed_config"]["config"];
        assert_eq!(written["resources"][0]["name"], FILTER_NAME);
        assert_eq!(cfg["vm_config"]["vm_id"], "");
        assert_eq!(cfg["failure_policy"], "FAIL_OPEN");
        assert_eq!(
            cfg["configuration"]["@type"],
            "type.googleapis.com/google.protobuf.StringValue"
        );
        let plugin: Value =
            serde_json::from_str(cfg["configuration"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(plugin["pipeline_cluster"], PIPELINE_CLUSTER);
    }
}
