//! A real etcd cluster for the tests of cluster mode (issue 21, section 2): Debian's
//! `etcd-server` (binary `etcd`, 3.4), N members on loopback with free ports and a temp dir
//! each, every one logging to its own file and dying with the test. The filter talks to etcd
//! through its v3 JSON gateway (plain HTTP `POST /v3/...`), so the tests do the same.

use crate::envoy::free_port;
use crate::process::{die_with_parent, spawn_logged};
use anyhow::{bail, Context as _, Result};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// One member: its client port, process (`None` once killed), and the command that starts it
/// again on its data dir.
struct Member {
    client_port: u16,
    child: Option<Child>,
    log: PathBuf,
    args: Vec<std::ffi::OsString>,
    /// How many times it was started: each start logs to a file of its own.
    starts: u32,
}

/// A running etcd cluster; dropping it kills every member.
pub struct EtcdCluster {
    members: Vec<Member>,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// The members' `--election-timeout` (etcd's default, named here because cluster mode's rule
/// depends on it): a raft leader that dies is replaced one to two of these later, and
/// `etcd_lease_ttl_ms` must be at least 5 times it (`crate::cluster::LEASE_TTL_MS`).
pub const ELECTION_TIMEOUT_MS: u64 = 1000;
/// The members' `--heartbeat-interval` (etcd's default: a tenth of the election timeout).
pub const HEARTBEAT_MS: u64 = 100;

/// `etcd` on PATH, if installed.
pub fn find() -> Option<PathBuf> {
    crate::dist::which("etcd")
}

impl EtcdCluster {
    /// Starts `n` members of a new cluster and waits until every one reports healthy.
    pub fn start(bin: &std::path::Path, n: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let data = dir.path().join(format!("m{i}"));
            let log = dir.path().join(format!("m{i}.log"));
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut cmd = Command::new(bin);
            cmd.args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "status-sync-test"])
                .args(["--election-timeout", &ELECTION_TIMEOUT_MS.to_string()])
                .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()]);
            let args: Vec<std::ffi::OsString> = cmd.get_args().map(ToOwned::to_owned).collect();
            die_with_parent(&mut cmd);
            let child = spawn_logged(&mut cmd, &log)?;
            members.push(Member {
                client_port: *client,
                child: Some(child),
                log,
                args,
                starts: 1,
            });
        }
        let cluster = Self {
            members,
            bin: bin.to_path_buf(),
            dir,
        };
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn wait_healthy(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            loop {
                let timeout = Duration::from_secs(1);
                if let Ok((200, body)) = request(m.client_port, "GET", "/health", b"", timeout) {
                    if String::from_utf8_lossy(&body).contains("\"true\"") {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    bail!(
                        "etcd member m{i} not healthy within {within:?}:\n{}",
                        self.log(i)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`'s client port, while it runs.
    pub fn client_port(&self, i: usize) -> Option<u16> {
        self.members
            .get(i)
            .filter(|m| m.child.is_some())
            .map(|m| m.client_port)
    }

    /// The running member that is etcd's raft leader now (`/v3/maintenance/status`: each
    /// member names itself and the leader), if one is.
    pub fn leader(&self) -> Option<usize> {
        let status = |port: u16| -> Option<(String, String)> {
            let (code, body) = request(
                port,
                "POST",
                "/v3/maintenance/status",
                b"{}",
                Duration::from_secs(1),
            )
            .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            let me = v.pointer("/header/member_id")?.as_str()?.to_string();
            let leader = v.get("leader")?.as_str()?.to_string();
            (code == 200).then_some((me, leader))
        };
        let all: Vec<(usize, (String, String))> = (0..self.members.len())
            .filter_map(|i| Some((i, status(self.client_port(i)?)?)))
            .collect();
        all.iter()
            .find(|(_, (me, _))| all.iter().any(|(_, (_, leader))| leader == me))
            .map(|(i, _)| *i)
    }

    /// Every member's client port, running or not (an Envoy cluster lists them all).
    pub fn client_ports(&self) -> Vec<u16> {
        self.members.iter().map(|m| m.client_port).collect()
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let m = self.members.get_mut(i).context("no such member")?;
        if let Some(mut child) = m.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts member `i` again on its data dir (same name, ports and cluster), after
    /// [`EtcdCluster::kill`]; does not wait for it (see [`EtcdCluster::wait_healthy_within`]:
    /// a member alone has no quorum).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        let m = self.members.get_mut(i).context("no such member")?;
        if m.child.is_some() {
            return Ok(());
        }
        m.starts += 1;
        m.log = self.dir.path().join(format!("m{i}.{}.log", m.starts));
        let mut cmd = Command::new(&self.bin);
        cmd.args(&m.args);
        die_with_parent(&mut cmd);
        m.child = Some(spawn_logged(&mut cmd, &m.log)?);
        Ok(())
    }

    /// Waits until every running member reports healthy (it has a leader: a quorum answers).
    pub fn wait_healthy_within(&self, within: Duration) -> Result<()> {
        self.wait_healthy(within)
    }

    /// Member `i`'s log, for a failure message.
    pub fn log(&self, i: usize) -> String {
        self.members
            .get(i)
            .and_then(|m| std::fs::read_to_string(&m.log).ok())
            .unwrap_or_default()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One request to an etcd member's gateway with a tiny blocking HTTP/1.0 client: the status
/// and body. HTTP/1.0 because etcd's gateway answers an error over HTTP/1.1 as a chunked body
/// with a trailer (`Grpc-Trailer-Content-Type`) that ureq 2's chunk decoder refuses; to a 1.0
/// request it sends the plain body and closes. `None`-like failures (refused, timed out) are
/// `Err`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    use std::io::{Read as _, Write as _};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.take(8 << 20).read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in etcd's answer")?;
    let status_line = String::from_utf8_lossy(&answer[..split]);
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {status_line:?}"))?;
    Ok((status, answer[split + 4..].to_vec()))
}
