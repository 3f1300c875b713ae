//! The image `make dist` writes, pushed to a real registry (Debian's `docker-registry`, i.e.
//! distribution, on loopback) with `skopeo`, and read back the way istio-agent reads it
//! (istio/istio pkg/wasm/imagefetcher.go): the manifest digest the registry serves must be
//! the one README tells users to pin (`dist/status_sync.image-digest`), and `plugin.wasm` in
//! the image's last layer must be byte-identical to `dist/status_sync.wasm`. And the release
//! workflow (.github/workflows/release.yml) as it runs on a tag: its steps are
//! scripts/release.sh, driven here against the same kind of registry (`make release-check`).
//!
//! Needs `make dist` (run by `make test`). Without skopeo or docker-registry the test fails
//! under CI=true and says loudly that it skipped elsewhere.

use anyhow::{bail, ensure, Context as _, Result};
use envoy_e2e::dist::{missing_part, run, which, Dist, Registry};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::os::unix::fs::PermissionsExt as _;
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

/// The placeholder the shipped WasmPlugin carries where the release's digest goes (its comment
/// and README say what to put there).
const DIGEST_PLACEHOLDER: &str = "<digest>";

/// The shipped WasmPlugin points at the image the release workflow pushes
/// (`ghcr.io/<owner>/status-sync`) and pins it the way istio-agent checks it: an oci:// URL with
/// `@sha256:` and the manifest digest (64 hex, or the documented placeholder the user
/// replaces), and no `sha256` field that could contradict it (the field would win,
/// pkg/wasm/cache.go).
#[test]
fn wasmplugin_pins_the_released_image_by_its_manifest_digest() -> Result<()> {
    let path = envoy_e2e::envoy::crate_dir().join("istio/wasmplugin.yaml");
    let wp: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
    let spec = &wp["spec"];
    let url = spec["url"].as_str().context("spec.url")?;
    let (repo, digest) = url
        .split_once("@sha256:")
        .with_context(|| format!("{url}: not pinned by digest"))?;
    assert_eq!(
        repo,
        format!("oci://{}", released_image("<owner>")?),
        "the WasmPlugin does not point where the release workflow pushes"
    );
    ensure!(
        digest == DIGEST_PLACEHOLDER
            || (digest.len() == 64
                && digest
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())),
        "{url}: the digest is neither 64 lowercase hex digits nor the placeholder"
    );
    ensure!(
        spec.get("sha256").is_none(),
        "spec.sha256 set beside the URL digest"
    );
    assert_eq!(spec["failStrategy"].as_str(), Some("FAIL_OPEN"));
    Ok(())
}

fn workflow(name: &str) -> Result<serde_yaml::Value> {
    let path = envoy_e2e::dist::repo_root()
        .join(".github/workflows")
        .join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_yaml::from_str(&text)?)
}

/// Where release.yml pushes the image, for a repository owner.
fn released_image(owner: &str) -> Result<String> {
    let wf = workflow("release.yml")?;
    let image = wf["jobs"]["release"]["env"]["IMAGE"]
        .as_str()
        .context("release.yml: jobs.release.env.IMAGE")?;
    Ok(image.replace("${{ github.repository_owner }}", owner))
}

/// The `run:` lines and `uses:` of a workflow job's steps.
fn steps(wf: &serde_yaml::Value, job: &str) -> Result<Vec<serde_yaml::Value>> {
    Ok(wf["jobs"][job]["steps"]
        .as_sequence()
        .with_context(|| format!("jobs.{job}.steps"))?
        .clone())
}

/// What the workflows run is what the tests run: CI is `make test`; a release tag runs `make
/// dist` and then only scripts/release.sh (which the next test drives against a real
/// registry); every action is pinned by a full commit SHA and checks out without keeping the
/// token (actionlint and zizmor in `make lint` check the rest).
#[test]
fn workflows_run_make_test_and_the_tested_release_script() -> Result<()> {
    let ci = workflow("ci.yml")?;
    let runs = |wf: &serde_yaml::Value, job: &str| -> Result<Vec<String>> {
        Ok(steps(wf, job)?
            .iter()
            .filter_map(|s| s["run"].as_str().map(str::to_string))
            .collect())
    };
    assert_eq!(runs(&ci, "test")?, ["make test"]);
    let release = workflow("release.yml")?;
    assert_eq!(
        release["on"]["push"]["tags"][0].as_str(),
        Some("v*"),
        "release.yml runs on tags v*"
    );
    assert_eq!(
        runs(&release, "release")?,
        [
            r#"scripts/release.sh check-tag "$TAG""#,
            "make dist",
            "make dist-tools",
            r#"scripts/release.sh push "$IMAGE" "$TAG""#,
            r#"scripts/release.sh github-release "$TAG" "$IMAGE""#,
        ]
    );
    assert_eq!(
        released_image("octo")?,
        "ghcr.io/octo/status-sync",
        "release.yml pushes to GitHub's registry under the repository owner"
    );
    for (wf, job) in [(&ci, "test"), (&release, "release")] {
        for step in steps(wf, job)? {
            let Some(uses) = step["uses"].as_str() else {
                continue;
            };
            let (_, sha) = uses.split_once('@').with_context(|| uses.to_string())?;
            ensure!(
                sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{uses}: not pinned by a full commit SHA"
            );
            if uses.starts_with("actions/checkout@") {
                assert_eq!(
                    step["with"]["persist-credentials"].as_bool(),
                    Some(false),
                    "{job}: checkout keeps the token"
                );
            }
        }
    }
    let attested: Vec<_> = steps(&release, "release")?
        .into_iter()
        .filter(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/attest-build-provenance@"))
        })
        .map(|s| s["with"].clone())
        .collect();
    assert_eq!(attested.len(), 2, "provenance for the module and the image");
    assert_eq!(
        attested[0]["subject-path"].as_str(),
        Some("dist/status_sync.wasm")
    );
    assert_eq!(
        attested[1]["subject-digest"].as_str(),
        Some("${{ steps.push.outputs.digest }}")
    );
    Ok(())
}

/// The release workflow's steps (scripts/release.sh), run as the workflow runs them, against
/// a real registry and a stand-in `gh` that records what it was asked: the image lands under
/// the tag with the digest of `make dist` (the owner lowercased, as GitHub's registry needs),
/// the step outputs the attestation reads name that digest, a tag that is not the filter's
/// version stops the release, and the GitHub release carries the module, its .sha256 and the
/// image digest with notes giving the WasmPlugin `url`.
#[test]
fn release_workflow_pushes_the_image_and_publishes_module_and_digests() -> Result<()> {
    let test = "release_workflow_pushes_the_image_and_publishes_module_and_digests";
    let dist = Dist::of_checkout()?;
    let (Some(_), Some(registry_bin)) = (which("skopeo"), which("docker-registry")) else {
        return missing_part(test, "skopeo or docker-registry");
    };
    let registry = Registry::start(&registry_bin)?;
    let script = envoy_e2e::dist::repo_root().join("scripts/release.sh");
    let tag = format!("v{}", dist.tag);
    let image = format!("{}/Octo-Org/status-sync", registry.addr);
    let lower = image.to_lowercase();
    let tmp = tempfile::tempdir()?;
    let outputs = tmp.path().join("github-output");
    let release = |args: &[&str]| {
        let mut cmd = Command::new(&script);
        cmd.args(args)
            .env("DIST", &dist.dir)
            .env("RELEASE_TLS_VERIFY", "false")
            .env("GITHUB_OUTPUT", &outputs)
            .env_remove("REGISTRY_USER")
            .env_remove("REGISTRY_PASSWORD");
        cmd
    };

    // A tag that is not v<version> stops the release before anything is pushed.
    let wrong = release(&["push", &image, "v0.0.0-not-the-version"])
        .output()
        .context("run scripts/release.sh")?;
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        said.contains(&format!("does not match the filter's version {}", dist.tag)),
        "{said}"
    );

    run(&mut release(&["push", &image, &tag])).with_context(|| registry.log())?;
    let out = std::fs::read_to_string(&outputs)?;
    assert_eq!(
        out,
        format!("image={lower}\ndigest={}\n", dist.image_digest),
        "the step outputs the attestation step reads"
    );
    let path = lower
        .split_once('/')
        .map(|(_, p)| p)
        .context("image path")?;
    let agent = envoy_e2e::util::agent(Duration::from_secs(10));
    let resp = agent
        .get(&format!(
            "http://{}/v2/{path}/manifests/{tag}",
            registry.addr
        ))
        .set("Accept", OCI_MANIFEST)
        .call()
        .context("GET the pushed manifest by tag")?;
    assert_eq!(
        resp.header("Docker-Content-Digest"),
        Some(dist.image_digest.as_str()),
        "the registry serves another digest than dist/status_sync.image-digest under {tag}"
    );

    // The GitHub release, through a `gh` that records its arguments and the notes.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin)?;
    let gh = bin.join("gh");
    std::fs::write(
        &gh,
        "#!/bin/sh\nprev=\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> \"$GH_LOG\";\n\
         [ \"$prev\" = --notes-file ] && cp \"$a\" \"$GH_LOG.notes\"; prev=$a; done\n",
    )?;
    std::fs::set_permissions(&gh, std::fs::Permissions::from_mode(0o755))?;
    let gh_log = tmp.path().join("gh.log");
    let path_env = std::env::join_paths(std::iter::once(bin.clone()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    run(release(&["github-release", &tag, &image])
        .env("PATH", &path_env)
        .env("GH_LOG", &gh_log))?;
    let args: Vec<String> = std::fs::read_to_string(&gh_log)?
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        args[..4],
        ["release", "create", tag.as_str(), "--verify-tag"]
    );
    let files: Vec<&str> = args[args.len() - 3..].iter().map(String::as_str).collect();
    let in_dist = |f: &str| dist.dir.join(f).display().to_string();
    assert_eq!(
        files,
        [
            in_dist("status_sync.wasm"),
            in_dist("status_sync.wasm.sha256"),
            in_dist("status_sync.image-digest")
        ]
    );
    let notes = std::fs::read_to_string(tmp.path().join("gh.log.notes"))?;
    assert!(
        notes.contains(&format!("url: oci://{lower}@{}", dist.image_digest)),
        "{notes}"
    );
    eprintln!("release steps: {lower}:{tag} = {}", dist.image_digest);
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
