//! What the real-Envoy benchmarks share: the summary and plot helpers of the host-tests
//! benchmarks (the same file), reading a process's RSS and CPU time from `/proc`, removing the
//! filter from a bootstrap (`envoy_e2e::envoy::Envoy::start_bootstrap` runs it). The minimal
//! upstream they forward to is `envoy_e2e::fast_upstream`.

#![allow(dead_code)]

#[path = "../../../host-tests/benches/common/report.rs"]
pub mod report;

use anyhow::{bail, Context as _, Result};
use envoy_e2e::envoy as ee;
use serde_json::Value;
use std::path::PathBuf;

/// One reading of a process from `/proc/<pid>`.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub rss_bytes: u64,
    /// utime + stime, in seconds.
    pub cpu_s: f64,
}

pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ProcSample {
        rss_bytes: rss_kib * 1024,
        cpu_s: (utime + stime) / hz,
    })
}

/// Child processes of this process whose command name is `name`.
pub fn children_named(name: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid: Option<u32> = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok());
        if comm == name && ppid == Some(me) {
            out.push(pid);
        }
    }
    out
}

/// Removes the status-sync filter from every HTTP connection manager of a bootstrap, with the
/// per-route configuration that enables it on the webhook route.
pub fn without_filter(bootstrap: &mut Value) -> Result<()> {
    let listeners = bootstrap
        .pointer_mut("/static_resources/listeners")
        .and_then(Value::as_array_mut)
        .context("no static listeners")?;
    let mut removed = 0;
    for l in listeners {
        for r in ee::webhook_routes(l) {
            if let Some(Value::Object(per)) = r.get_mut("typed_per_filter_config") {
                per.remove(ee::WASM_FILTER);
            }
        }
        for hcm in ee::connection_managers(l) {
            if let Some(hf) = hcm.get_mut("http_filters").and_then(Value::as_array_mut) {
                let before = hf.len();
                hf.retain(|h| h.get("name").and_then(Value::as_str) != Some(ee::WASM_FILTER));
                removed += before - hf.len();
            }
        }
    }
    if removed == 0 {
        bail!("no wasm filter to remove");
    }
    Ok(())
}

/// A drone fixture's file (`testdata/drone/<name>`).
pub fn fixture_path(name: &str) -> PathBuf {
    ::drone_model::fixtures::path(name)
}

/// The floor module of benchmark 5 (`make floor`): `FLOOR_WASM`, or `floor.wasm` next to the
/// filter measured.
pub fn floor_wasm(tools: &ee::Tools) -> Result<PathBuf> {
    let p = std::env::var_os("FLOOR_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| tools.wasm.with_file_name("floor.wasm"));
    if !p.is_file() {
        bail!(
            "{} does not exist: run `make floor` (`make bench` does)",
            p.display()
        );
    }
    Ok(p)
}

/// Puts another module (`wasm`, in its own VM `vm_id`) in the status-sync filter's place in
/// every HTTP connection manager of a bootstrap; the routes that enable it stay as they are.
pub fn with_module(bootstrap: &mut Value, wasm: &std::path::Path, vm_id: &str) -> Result<()> {
    let listeners = bootstrap
        .pointer_mut("/static_resources/listeners")
        .and_then(Value::as_array_mut)
        .context("no static listeners")?;
    let mut replaced = 0;
    for l in listeners {
        for hcm in ee::connection_managers(l) {
            let Some(hf) = hcm.get_mut("http_filters").and_then(Value::as_array_mut) else {
                continue;
            };
            for h in hf {
                if h.get("name").and_then(Value::as_str) != Some(ee::WASM_FILTER) {
                    continue;
                }
                let vm = h
                    .pointer_mut("/typed_config/config/vm_config")
                    .context("the wasm filter has no vm_config")?;
                *vm.pointer_mut("/code/local/filename")
                    .context("the wasm filter's module is not a local file")? =
                    Value::from(wasm.display().to_string());
                *vm.get_mut("vm_id").context("no vm_id")? = Value::from(vm_id);
                replaced += 1;
            }
        }
    }
    if replaced == 0 {
        bail!("no wasm filter to replace");
    }
    Ok(())
}
