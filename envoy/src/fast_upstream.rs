//! A keep-alive HTTP/1.1 upstream on loopback that answers 200 at once: what the real-Envoy
//! benchmarks forward to, and (as the `fast-upstream` binary) the upstream of the side
//! experiments in `benchmarks/experiments/`.

use anyhow::{Context as _, Result};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
    /// Starts on a free loopback port.
    pub fn start() -> Result<FastUpstream> {
        Self::start_on(0)
    }

    /// Starts on loopback port `port` (0: a free one).
    pub fn start_on(port: u16) -> Result<FastUpstream> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("bind 127.0.0.1:{port}"))?;
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
