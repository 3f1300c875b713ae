//! What the real-Envoy benchmarks share: the summary and plot helpers of the host-tests
//! benchmarks (the same file), reading a process's RSS and CPU time from `/proc`, removing the
//! filter from a bootstrap (`envoy_e2e::envoy::Envoy::start_bootstrap` runs it), and a minimal
//! keep-alive HTTP/1.1 upstream that answers 200 at once.

#![allow(dead_code)]

#[path = "../../../host-tests/benches/common/report.rs"]
pub mod report;

use anyhow::{bail, Context as _, Result};
use envoy_e2e::envoy as ee;
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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

/// A keep-alive HTTP/1.1 server on loopback that reads each request (Content-Length bodies)
/// and answers `200` with an empty body: the fastest pipeline we can offer Envoy, so the
/// benchmark measures the proxy, not the upstream.
pub struct FastUpstream {
    port: u16,
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl FastUpstream {
    pub fn start() -> Result<FastUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), requests.clone());
        let accept = std::thread::Builder::new()
            .name("fast-upstream".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (s, r) = (s.clone(), r.clone());
                    let _ = std::thread::Builder::new()
                        .name("fast-upstream-conn".into())
                        .spawn(move || serve(conn, &s, &r));
                }
            })?;
        Ok(FastUpstream {
            port,
            stop,
            requests,
            accept: Some(accept),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn serve(conn: TcpStream, stop: &AtomicBool, requests: &AtomicU64) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::with_capacity(64 * 1024, conn);
    let mut line = String::new();
    let mut body = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        // Request line and headers.
        let mut len = 0usize;
        let mut first = true;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if first
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            }
            first = false;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        body.resize(len, 0);
        if r.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
        if out
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

impl Drop for FastUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A drone fixture's file (`testdata/drone/<name>`).
pub fn fixture_path(name: &str) -> PathBuf {
    ::drone_model::fixtures::path(name)
}
