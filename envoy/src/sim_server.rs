//! The HTTP scaffolding both simulators stand on: a tiny_http server on loopback, a few
//! threads handing it requests, and a clean stop when the simulator is dropped.

use anyhow::{Context as _, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Handler threads per server: the filter's worker threads call in parallel.
const THREADS: usize = 4;

/// A running server and its threads; dropping it stops and joins them all.
pub struct SimServer {
    server: Arc<tiny_http::Server>,
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl SimServer {
    /// Listens on `127.0.0.1:port` (0 = any free port) and hands each request to `handle`
    /// on one of a few threads named after `name`.
    pub fn start(
        name: &str,
        port: u16,
        handle: impl Fn(tiny_http::Request) + Send + Sync + 'static,
    ) -> Result<SimServer> {
        let server = Arc::new(
            tiny_http::Server::http(("127.0.0.1", port))
                .map_err(|e| anyhow::anyhow!("{name}: cannot listen on port {port}: {e}"))?,
        );
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .with_context(|| format!("{name}: no TCP address"))?;
        let mut s = SimServer {
            server,
            port,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let handle = Arc::new(handle);
        for i in 0..THREADS {
            let (server, handle) = (s.server.clone(), handle.clone());
            s.spawn(&format!("{name}-http-{i}"), move |stop| {
                while !stop.load(Ordering::SeqCst) {
                    match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(req)) => handle(req),
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            })?;
        }
        Ok(s)
    }

    /// Runs `f` on a thread of its own, stopped and joined with the server's: `f` returns
    /// once the flag it is given is set.
    pub fn spawn(
        &mut self,
        name: &str,
        f: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> Result<()> {
        let stop = self.stop.clone();
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(&stop))
            .with_context(|| format!("spawn {name}"))?;
        self.threads.push(t);
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Tells every thread to stop (they notice within 200 ms); `Drop` waits for them.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
