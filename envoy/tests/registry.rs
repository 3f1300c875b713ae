//! The image `make dist` writes, pushed to a real registry (Debian's `docker-registry`, i.e.
//! distribution, on loopback) with `skopeo`, and read back the way istio-agent reads it
//! (istio/istio pkg/wasm/imagefetcher.go): the manifest digest the registry serves must be
//! the one README tells users to pin (`dist/status_sync.image-digest`), and `plugin.wasm` in
//! the image's last layer must be byte-identical to `dist/status_sync.wasm`.
//!
//! Needs `make dist` (run by `make test`). Without skopeo or docker-registry the test fails
//! under CI=true and says loudly that it skipped elsewhere.

use anyhow::{bail, ensure, Context as _, Result};
use envoy_e2e::dist::{missing_part, run, which, Dist, Registry};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// `plugin.wasm` of an OCI image layout's image, found as istio-agent finds it: the last
/// layer, of the OCI tar+gzip type, the first entry whose base name is `plugin.wasm`.
fn plugin_of_layout(layout: &Path, manifest_digest: &str) -> Result<Vec<u8>> {
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob(manifest_digest))?)?;
    let layer = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .context("manifest without layers")?;
    ensure!(layer["mediaType"] == OCI_LAYER, "last layer is {layer}");
    let digest = layer["digest"].as_str().context("layer digest")?;
    let out = tempfile::tempdir()?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(blob(digest))
        .arg("-C")
        .arg(out.path()))?;
    let listing = run(Command::new("tar").arg("-tzf").arg(blob(digest)))?;
    let name = listing
        .lines()
        .find(|n| Path::new(n).file_name().is_some_and(|b| b == "plugin.wasm"))
        .with_context(|| format!("no plugin.wasm in the layer: {listing}"))?;
    Ok(std::fs::read(out.path().join(name))?)
}

/// The shipped WasmPlugin pins the image the way istio-agent checks it: an oci:// URL with
/// `@sha256:<64 hex>` (the manifest digest) and no `sha256` field that could contradict it
/// (the field would win, pkg/wasm/cache.go).
#[test]
fn wasmplugin_pins_an_oci_manifest_digest() -> Result<()> {
    let path = envoy_e2e::envoy::crate_dir().join("istio/wasmplugin.yaml");
    let wp: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
    let spec = &wp["spec"];
    let url = spec["url"].as_str().context("spec.url")?;
    let (repo, digest) = url
        .split_once("@sha256:")
        .with_context(|| format!("{url}: not pinned by digest"))?;
    ensure!(repo.starts_with("oci://"), "{url}");
    ensure!(
        digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{url}: the digest is not 64 lowercase hex digits"
    );
    ensure!(
        spec.get("sha256").is_none(),
        "spec.sha256 set beside the URL digest"
    );
    assert_eq!(spec["failStrategy"].as_str(), Some("FAIL_OPEN"));
    Ok(())
}

#[test]
fn image_round_trips_through_a_real_registry_with_the_pinned_digest() -> Result<()> {
    let test = "image_round_trips_through_a_real_registry_with_the_pinned_digest";
    let dist = Dist::of_checkout()?;
    let (Some(skopeo), Some(registry_bin)) = (which("skopeo"), which("docker-registry")) else {
        return missing_part(test, "skopeo or docker-registry");
    };
    // The digest file is the manifest's own digest (what Istio compares), not the module's.
    let local_manifest = std::fs::read(
        dist.dir
            .join("oci/blobs/sha256")
            .join(dist.image_digest.trim_start_matches("sha256:")),
    )
    .context("the pinned digest names no blob in dist/oci")?;
    assert_eq!(sha256(&local_manifest), dist.image_digest);
    assert_ne!(sha256(&dist.module), dist.image_digest);
    assert_eq!(
        plugin_of_layout(&dist.dir.join("oci"), &dist.image_digest)?,
        dist.module
    );

    let registry = Registry::start(&registry_bin)?;
    let repo = format!("{}/ci/status-sync", registry.addr);
    let tag_ref = format!("docker://{repo}:{}", dist.tag);
    // Push: the layout's manifest as it is (no conversion, no recompression).
    run(Command::new(&skopeo)
        .args(["--insecure-policy", "copy", "--quiet", "--preserve-digests"])
        .args(["--dest-tls-verify=false"])
        .arg(format!(
            "oci:{}:{}",
            dist.dir.join("oci").display(),
            dist.tag
        ))
        .arg(&tag_ref))
    .with_context(|| registry.log())?;

    // The manifest as istio-agent's go-containerregistry asks for it: by tag, accepting both
    // OCI and Docker manifests. Its digest is what `sha256:` / `@sha256:` is compared with.
    let agent = envoy_e2e::util::agent(Duration::from_secs(10));
    let resp = agent
        .get(&format!(
            "http://{}/v2/ci/status-sync/manifests/{}",
            registry.addr, dist.tag
        ))
        .set("Accept", &format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}"))
        .call()
        .context("GET the manifest by tag")?;
    let served_digest = resp
        .header("Docker-Content-Digest")
        .map(str::to_string)
        .context("no Docker-Content-Digest")?;
    let content_type = resp.header("Content-Type").unwrap_or("").to_string();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body)?;
    assert_eq!(
        sha256(&body),
        served_digest,
        "registry digest of its own body"
    );
    assert_eq!(
        served_digest, dist.image_digest,
        "the digest README tells users to pin is not the one the registry serves"
    );
    // Not a Docker manifest, so istio-agent takes the OCI "compat" path.
    assert_eq!(content_type, OCI_MANIFEST);
    assert_eq!(body, local_manifest);

    // Pull back by digest, as `url: oci://…@sha256:<digest>` does, and unpack like istio-agent.
    let pulled = tempfile::tempdir()?;
    let layout = pulled.path().join("layout");
    run(Command::new(&skopeo)
        .args(["--insecure-policy", "copy", "--quiet", "--preserve-digests"])
        .args(["--src-tls-verify=false"])
        .arg(format!("docker://{repo}@{}", dist.image_digest))
        .arg(format!("oci:{}:pulled", layout.display())))
    .with_context(|| registry.log())?;
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let pulled_digest = index
        .pointer("/manifests/0/digest")
        .and_then(Value::as_str)
        .context("pulled index.json")?;
    assert_eq!(pulled_digest, dist.image_digest);
    let plugin = plugin_of_layout(&layout, pulled_digest)?;
    if plugin != dist.module {
        bail!(
            "plugin.wasm from the registry ({} bytes, {}) differs from dist/status_sync.wasm ({} bytes, {})",
            plugin.len(),
            sha256(&plugin),
            dist.module.len(),
            sha256(&dist.module)
        );
    }
    // And by the wrong digest, the registry has nothing: a pin cannot silently match another
    // image.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let missing = agent
        .get(&format!(
            "http://{}/v2/ci/status-sync/manifests/{wrong}",
            registry.addr
        ))
        .set("Accept", OCI_MANIFEST)
        .call();
    assert!(
        matches!(missing, Err(ureq::Error::Status(404, _))),
        "{missing:?}"
    );
    eprintln!(
        "pushed and pulled {repo}:{} = {} ({} bytes of module)",
        dist.tag,
        dist.image_digest,
        dist.module.len()
    );
    Ok(())
}
