//! Two clean clones of this repository (HEAD), at two different paths and with two different
//! cargo homes, each run `make dist`: the modules must be byte-identical and the OCI images
//! must have the same manifest digest, and neither module may name the clone's path or the
//! cargo home (rustc writes source paths into panic locations; `make dist` remaps them).
//!
//! What it proves is limited to what differs here: the path of the clone and of cargo's
//! registry, the time of the build, a cold target directory, a fresh `.tools/` (each clone's
//! `make dist` installs wasm-opt itself with `npm ci`). The toolchain and wasm-opt are pinned
//! (rust-toolchain.toml; binaryen in tools/binaryen/package-lock.json), not varied.
//!
//! Needs git, make, node and npm (nothing from apt-get: `make dist` installs the rest, and the
//! test fails if it runs apt-get, sudo or a wasm-opt from PATH); without them it fails under
//! CI=true and says loudly that it skipped elsewhere.

use anyhow::{ensure, Context as _, Result};
use envoy_e2e::dist::{clean_build_env, missing_part, repo_root, run, which, Dist};
use std::path::{Path, PathBuf};
use std::process::Command;

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
}

/// The commands `make dist` must never run: the machine's own wasm-opt (another version gives
/// other bytes) and the package managers of one distribution.
const FORBIDDEN: [&str; 3] = ["wasm-opt", "apt-get", "sudo"];

/// `make dist` in `clone`, with nothing of this test's own build leaking in (cargo's and
/// make's variables would point it at our target dir or jobserver), and with `stubs` first on
/// PATH: stand-ins for FORBIDDEN that record being called and fail.
fn make_dist(clone: &Path, cargo_home: &Path, stubs: &Path) -> Result<Dist> {
    let mut cmd = Command::new("make");
    cmd.arg("-s").arg("dist").current_dir(clone);
    clean_build_env(&mut cmd);
    cmd.env("CARGO_HOME", cargo_home);
    let path = std::env::var_os("PATH").unwrap_or_default();
    cmd.env(
        "PATH",
        std::env::join_paths(
            std::iter::once(stubs.to_path_buf()).chain(std::env::split_paths(&path)),
        )?,
    );
    run(&mut cmd).with_context(|| format!("make dist in {}", clone.display()))?;
    let called = stubs.join("called");
    ensure!(
        !called.exists(),
        "make dist in {} ran {}",
        clone.display(),
        std::fs::read_to_string(&called)?.trim()
    );
    Dist::read(&clone.join("dist"))
}

/// A directory of FORBIDDEN stand-ins that append their name and arguments to `called`.
fn forbidden_stubs(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    for name in FORBIDDEN {
        let stub = dir.join(name);
        std::fs::write(
            &stub,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 1\n",
                dir.join("called").display()
            ),
        )?;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn two_clean_clones_give_the_same_module_and_image_digest() -> Result<()> {
    let test = "two_clean_clones_give_the_same_module_and_image_digest";
    for tool in ["git", "make", "node", "npm"] {
        if which(tool).is_none() {
            return missing_part(test, tool);
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("status-sync-repro-")
        .tempdir()?;
    let a = tmp.path().join("a");
    let b = tmp.path().join("a-clone/at/another/depth");
    let home = cargo_home();
    // The second build's cargo home is another directory whose registry is the same one
    // (offline: nothing is downloaded), so its path differs in what rustc sees.
    let home_b = tmp.path().join("other-cargo-home");
    std::fs::create_dir_all(&home_b)?;
    std::os::unix::fs::symlink(home.join("registry"), home_b.join("registry"))?;
    let root = repo_root();
    for clone in [&a, &b] {
        run(Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(&root)
            .arg(clone))?;
    }
    // Neither build may take the machine's wasm-opt or install anything with apt-get: each
    // installs the pinned wasm-opt from npm into its own .tools/.
    let stubs = tmp.path().join("forbidden");
    forbidden_stubs(&stubs)?;
    let da = make_dist(&a, &home, &stubs)?;
    let db = make_dist(&b, &home_b, &stubs)?;
    for (d, clone, home) in [(&da, &a, &home), (&db, &b, &home_b)] {
        for path in [clone, home] {
            let p = path.display().to_string();
            ensure!(
                !contains(&d.module, p.as_bytes()),
                "the module built in {} names the path {p}",
                clone.display()
            );
        }
    }
    ensure!(
        da.module == db.module,
        "modules differ: {} bytes vs {} bytes",
        da.module.len(),
        db.module.len()
    );
    assert_eq!(da.image_digest, db.image_digest);
    assert_eq!(da.tag, db.tag);
    // The whole image layout, blob for blob.
    let listing = |d: &Dist| -> Result<Vec<(String, Vec<u8>)>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(d.dir.join("oci/blobs/sha256"))? {
            let e = e?;
            v.push((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path())?,
            ));
        }
        v.push((
            "index.json".into(),
            std::fs::read(d.dir.join("oci/index.json"))?,
        ));
        v.sort();
        Ok(v)
    };
    assert!(listing(&da)? == listing(&db)?, "OCI layouts differ");
    eprintln!(
        "two clones: module {} bytes, image {}",
        da.module.len(),
        da.image_digest
    );
    Ok(())
}
