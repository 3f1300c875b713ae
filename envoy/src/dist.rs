//! The release artifact (`make dist`) as the tests see it: where it is, the tools that must be
//! there to check it (and what happens when they are not), and a throwaway OCI registry.
//!
//! The artifact is `dist/status_sync.wasm`, `dist/status_sync.wasm.sha256`, the OCI image
//! layout `dist/oci` (tag = the filter's version) and `dist/status_sync.image-digest` (the
//! image manifest's digest, the value users pin; README "Shipping the module").

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (the workspace this crate belongs to).
pub fn repo_root() -> PathBuf {
    crate::envoy::crate_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// What `make dist` wrote, read back.
#[derive(Clone, Debug)]
pub struct Dist {
    pub dir: PathBuf,
    pub module: Vec<u8>,
    /// `sha256:<hex>` of the image manifest.
    pub image_digest: String,
    /// The image's tag in `dist/oci` (the filter's version).
    pub tag: String,
}

impl Dist {
    /// Reads `<dir>` as written by `make dist`; an error says to run it.
    pub fn read(dir: &Path) -> Result<Dist> {
        let hint = || format!("{} incomplete: run `make dist` first", dir.display());
        let module = std::fs::read(dir.join("status_sync.wasm")).with_context(hint)?;
        let image_digest = std::fs::read_to_string(dir.join("status_sync.image-digest"))
            .with_context(hint)?
            .trim()
            .to_string();
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.join("oci/index.json")).with_context(hint)?)?;
        let tag = index
            .pointer("/manifests/0/annotations/org.opencontainers.image.ref.name")
            .and_then(Value::as_str)
            .context("dist/oci/index.json names no tag")?
            .to_string();
        Ok(Dist {
            dir: dir.to_path_buf(),
            module,
            image_digest,
            tag,
        })
    }

    /// The checkout's own `dist/`.
    pub fn of_checkout() -> Result<Dist> {
        Self::read(&repo_root().join("dist"))
    }
}

/// A tool (or part) a test needs is missing: under `CI=true` that is a failure; elsewhere the
/// test says loudly that it did not run and returns. Never a silent pass.
pub fn missing_part(test: &str, what: &str) -> Result<()> {
    let msg = format!(
        "{test}: {what} is not available (`make test` installs it from Debian: see the Makefile)"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        bail!("{msg}; CI=true, so this is a failure");
    }
    eprintln!("\n**********\n** SKIPPED {msg}\n**********\n");
    Ok(())
}

/// The absolute path of `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs a command to completion; Err with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            crate::envoy::tail(&text, 40)
        );
    }
    Ok(text)
}

/// Removes what a test's own cargo or make run put in the environment (target dir, flags,
/// jobserver, toolchain), so a nested `cargo`/`make` builds as a user's shell would.
pub fn clean_build_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || matches!(
                k.as_ref(),
                "RUSTUP_TOOLCHAIN"
                    | "RUSTFLAGS"
                    | "RUSTC"
                    | "RUSTC_WRAPPER"
                    | "MAKEFLAGS"
                    | "MFLAGS"
                    | "MAKELEVEL"
            )
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

/// Debian's `docker-registry` (distribution) on a loopback port, storing into a temp dir.
/// Dropping it kills the process.
pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    pub addr: String,
}

impl Registry {
    pub fn start(binary: &Path) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("status-sync-registry-")
            .tempdir()?;
        let port = crate::envoy::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = crate::process::spawn_logged(
            Command::new(binary).arg("serve").arg(&config),
            &dir.path().join("registry.log"),
        )?;
        let mut reg = Registry {
            child,
            _dir: dir,
            addr,
        };
        let agent = crate::util::agent(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = reg.child.try_wait()? {
                bail!("docker-registry exited at start ({s}):\n{}", reg.log());
            }
            if let Ok((200, _)) =
                crate::util::send(agent.get(&format!("http://{}/v2/", reg.addr)), None)
            {
                return Ok(reg);
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry not answering on {}:\n{}",
                    reg.addr,
                    reg.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
