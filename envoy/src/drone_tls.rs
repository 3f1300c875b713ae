//! drone over TLS in the tests and the demo: a throwaway CA and a server certificate made at
//! run time, and a TLS listener in the same Envoy in front of drone-sim, so the template's
//! `drone` cluster (the shipped one: SNI, the chain checked against `trusted_ca`, the name
//! against the SAN matcher) is what every test talks to drone through.
//!
//! The certificates come from the `openssl` command line tool, not a crate: the workspace has
//! no TLS stack (ureq is built without one), and a certificate crate needs `ring` or
//! `aws-lc-rs`, C code that takes minutes to compile on the 2-core machines the tests run on.
//! `openssl` is on every Debian/Ubuntu system (and in Envoy's images); without it the tests
//! that start Envoy fail and say what to install, like a missing Envoy.
//!
//! drone-sim itself stays plain HTTP (`sim_server.rs`, tiny_http without TLS): the listener
//! terminates TLS with `tcp_proxy`, so no TLS server crate is needed either.

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The name the template's `drone` cluster expects on drone's certificate (SNI and SAN) in
/// the tests and the demo; also the plugin's `drone_authority` there.
pub const DRONE_HOST: &str = "drone.local";

/// The cluster behind the TLS listener: drone-sim's plain HTTP port.
pub const SIM_CLUSTER: &str = "drone-sim-plain";

/// A CA (its certificate in a file, for the cluster's `trusted_ca`) and a server
/// certificate and key it signed (for the TLS listener in front of drone-sim). The files live
/// as long as any clone, so keep one beside every Envoy that uses them.
#[derive(Clone)]
pub struct DroneTls {
    dir: Arc<tempfile::TempDir>,
    ca_file: PathBuf,
    /// The server certificate (PEM), for `server_name`.
    pub cert_pem: String,
    /// Its private key (PEM). Throwaway, but kept out of `Debug` all the same.
    pub key_pem: String,
    pub server_name: String,
}

impl std::fmt::Debug for DroneTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DroneTls")
            .field("ca_file", &self.ca_file)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl DroneTls {
    /// A new CA and a certificate it signed for the DNS name `server_name`.
    pub fn generate(server_name: &str) -> Result<DroneTls> {
        let dir = tempfile::Builder::new()
            .prefix("status-sync-drone-tls-")
            .tempdir()
            .context("create a temp dir for drone's certificates")?;
        let d = dir.path();
        std::fs::write(
            d.join("ca.cnf"),
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
             [dn]\nCN = status-sync test CA\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
        )?;
        std::fs::write(
            d.join("server.cnf"),
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\n\
                 [dn]\nCN = {server_name}\n\
                 [v3_server]\nsubjectAltName = DNS:{server_name}\n\
                 basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n"
            ),
        )?;
        // P-256 keys: generated in milliseconds, unlike RSA.
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            d,
            &[
                &["req", "-x509", "-new", "-config", "ca.cnf"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            ],
        )?;
        openssl(
            d,
            &[
                &["req", "-new", "-config", "server.cnf"],
                &ec[..],
                &["-keyout", "server.key", "-out", "server.csr"],
            ],
        )?;
        let serial = format!(
            "0x{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        openssl(
            d,
            &[&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                "server.cnf",
                "-extensions",
                "v3_server",
                "-out",
                "server.pem",
            ]],
        )?;
        let read =
            |f: &str| std::fs::read_to_string(d.join(f)).with_context(|| format!("read {f}"));
        Ok(DroneTls {
            cert_pem: read("server.pem")?,
            key_pem: read("server.key")?,
            ca_file: d.join("ca.pem"),
            server_name: server_name.to_string(),
            dir: Arc::new(dir),
        })
    }

    /// This server certificate, but the CA (`trusted_ca`) of `other`: a chain the cluster
    /// cannot verify.
    pub fn trusting(&self, other: &DroneTls) -> DroneTls {
        DroneTls {
            dir: other.dir.clone(),
            ca_file: other.ca_file.clone(),
            ..self.clone()
        }
    }

    /// The CA certificate (PEM file) the `drone` cluster trusts.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Adds to a bootstrap the TLS listener on `front_port` (serving the server certificate)
    /// and the cluster to drone-sim's plain port behind it. The listener is appended after
    /// the others, so the first static listener stays the webhook one.
    pub fn add_front(&self, bootstrap: &mut Value, front_port: u16, sim_port: u16) -> Result<()> {
        self.add_tls_listener(
            bootstrap,
            "drone-tls-front",
            SIM_CLUSTER,
            front_port,
            sim_port,
        )
    }

    /// A bootstrap of TLS listeners only, one on a free port in front of each of `backends`
    /// (TCP proxied to it, so the HTTP request, Host included, reaches it as sent), serving
    /// the server certificate; and those listeners' ports.
    pub fn fronts(&self, backends: &[u16]) -> Result<(Value, Vec<u16>)> {
        let mut bootstrap = json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": [], "clusters": []}
        });
        let mut fronts = Vec::new();
        for (i, port) in backends.iter().enumerate() {
            let front = crate::envoy::free_port()?;
            let (name, cluster) = (format!("tls-{i}"), format!("backend-{i}"));
            self.add_tls_listener(&mut bootstrap, &name, &cluster, front, *port)?;
            fronts.push(front);
        }
        Ok((bootstrap, fronts))
    }

    /// Appends listener `name` on `front_port`, terminating TLS, and `cluster`, the plain
    /// `backend_port` behind it.
    fn add_tls_listener(
        &self,
        bootstrap: &mut Value,
        name: &str,
        cluster: &str,
        front_port: u16,
        backend_port: u16,
    ) -> Result<()> {
        let listener = json!({
            "name": name,
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": front_port } },
            "filter_chains": [{
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "common_tls_context": { "tls_certificates": [{
                            "certificate_chain": { "inline_string": self.cert_pem },
                            "private_key": { "inline_string": self.key_pem },
                        }] },
                    },
                },
                "filters": [{
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": name.replace('-', "_"),
                        "cluster": cluster,
                    },
                }],
            }],
        });
        let cluster = json!({
            "name": cluster,
            "type": "STATIC",
            "connect_timeout": "2s",
            "load_assignment": {
                "cluster_name": cluster,
                "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                    "socket_address": { "address": "127.0.0.1", "port_value": backend_port }
                } } }] }],
            },
        });
        let sr = bootstrap
            .get_mut("static_resources")
            .and_then(Value::as_object_mut)
            .context("bootstrap has no static_resources")?;
        for (key, item) in [("listeners", listener), ("clusters", cluster)] {
            match sr.entry(key).or_insert_with(|| json!([])).as_array_mut() {
                Some(a) => a.push(item),
                None => bail!("static_resources.{key} is not a list"),
            }
        }
        Ok(())
    }
}

/// Where a cluster's `UpstreamTlsContext` names the CA file it trusts (a JSON pointer).
pub const TRUSTED_CA_FILE: &str =
    "/transport_socket/typed_config/common_tls_context/validation_context/trusted_ca/filename";

/// The static cluster `name` of a bootstrap.
pub fn static_cluster<'a>(bootstrap: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    bootstrap
        .pointer_mut("/static_resources/clusters")?
        .as_array_mut()?
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

/// Runs `openssl` in `dir` with the arguments (given in pieces); an error names the command
/// and what it printed, or says to install it.
fn openssl(dir: &Path, args: &[&[&str]]) -> Result<()> {
    let args: Vec<&str> = args.iter().flat_map(|a| a.iter().copied()).collect();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run `openssl` ({e}): the tests make drone's TLS certificates with it; \
                 install it (Debian/Ubuntu: apt-get install openssl)"
            )
        })?;
    if !out.status.success() {
        bail!(
            "openssl {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
