#!/usr/bin/env bash
# The steps of .github/workflows/release.yml after `make dist`, one subcommand each. The
# workflow only calls this script, and `make release-check` (envoy/tests/registry.rs, part of
# `make test`) runs the same subcommands against a real registry on loopback and a stand-in
# `gh`, so what a tag runs on GitHub is what the tests ran.
#
#   scripts/release.sh check-tag TAG
#       TAG must be v<version of filter/Cargo.toml>: the tag, the image tag and the version the
#       module reports (status_sync_build_info) are one.
#   scripts/release.sh push IMAGE TAG
#       Pushes the image of dist/oci to docker://IMAGE:TAG unchanged (skopeo
#       --preserve-digests), then reads the manifest back from the registry by tag and by
#       digest: both must be dist/status_sync.image-digest. IMAGE is lowercased (registries
#       refuse upper case; a GitHub owner may have it). Prints `image=` and `digest=` lines,
#       also appended to $GITHUB_OUTPUT when set.
#   scripts/release.sh github-release TAG IMAGE
#       Creates the GitHub release TAG (gh) with dist/status_sync.wasm, its .sha256 and
#       dist/status_sync.image-digest attached, and notes that give the WasmPlugin `url`.
#
# Environment: REGISTRY_USER and REGISTRY_PASSWORD log skopeo in (an auth file in a temporary
# directory, never a command-line argument); RELEASE_TLS_VERIFY=false talks plain HTTP to the
# registry (the loopback registry of the tests only); DIST (default dist) is the artifact.
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${DIST:-dist}
TLS_VERIFY=${RELEASE_TLS_VERIFY:-true}

die() { echo "release: $*" >&2; exit 1; }

version() { sed -n 's/^version = "\(.*\)"/\1/p' filter/Cargo.toml | head -n1; }

need_dist() {
  for f in status_sync.wasm status_sync.wasm.sha256 status_sync.image-digest oci/index.json; do
    [ -f "$DIST/$f" ] || die "$DIST/$f is missing: run \`make dist\` first"
  done
  (cd "$DIST" && sha256sum --quiet -c status_sync.wasm.sha256) || die "$DIST/status_sync.wasm does not match its .sha256"
}

check_tag() {
  local tag=$1 v
  v=$(version)
  [ "$tag" = "v$v" ] || die "tag $tag does not match the filter's version $v (filter/Cargo.toml): tag v$v, or bump the version (docs/release.md)"
  echo "release: tag $tag = version $v"
}

push() {
  local image=${1,,} tag=$2 v digest served auth tmp
  command -v skopeo >/dev/null || die "skopeo is missing (\`make dist-tools\` installs it)"
  need_dist
  check_tag "$tag"
  v=$(version)
  digest=$(tr -d '[:space:]' < "$DIST/status_sync.image-digest")
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || die "$DIST/status_sync.image-digest is not sha256:<64 hex>: $digest"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  auth=()
  if [ -n "${REGISTRY_USER:-}" ]; then
    [ -n "${REGISTRY_PASSWORD:-}" ] || die "REGISTRY_USER set without REGISTRY_PASSWORD"
    skopeo login --authfile "$tmp/auth.json" --tls-verify="$TLS_VERIFY" \
      --username "$REGISTRY_USER" --password-stdin "${image%%/*}" <<<"$REGISTRY_PASSWORD" >/dev/null
    auth=(--authfile "$tmp/auth.json")
  fi
  echo "release: pushing $DIST/oci:$v to $image:$tag"
  # The layout's manifest as it is: no conversion, no recompression, so the registry serves
  # the digest `make dist` computed (and anyone can recompute from the same commit).
  skopeo --insecure-policy copy --quiet --preserve-digests "${auth[@]}" --dest-tls-verify="$TLS_VERIFY" \
    "oci:$DIST/oci:$v" "docker://$image:$tag"
  for ref in "$image:$tag" "$image@$digest"; do
    served=sha256:$(skopeo inspect --raw "${auth[@]}" --tls-verify="$TLS_VERIFY" "docker://$ref" | sha256sum | cut -d' ' -f1)
    [ "$served" = "$digest" ] || die "the registry serves $served for $ref, not $digest"
  done
  echo "release: $image:$tag is $digest"
  echo "image=$image"
  echo "digest=$digest"
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    printf 'image=%s\ndigest=%s\n' "$image" "$digest" >> "$GITHUB_OUTPUT"
  fi
}

github_release() {
  local tag=$1 image=${2,,} digest notes
  need_dist
  check_tag "$tag"
  digest=$(tr -d '[:space:]' < "$DIST/status_sync.image-digest")
  notes=$(mktemp)
  trap 'rm -f "$notes"' RETURN
  cat > "$notes" <<EOF
Module: \`status_sync.wasm\` ($(cut -d' ' -f1 "$DIST/status_sync.wasm.sha256"), see \`status_sync.wasm.sha256\`).
Image: \`$image:$tag\`, manifest digest \`$digest\` (\`status_sync.image-digest\`).

Istio WasmPlugin (pin the manifest digest, leave \`sha256\` unset; envoy/istio/README.md):

    url: oci://$image@$digest

Anyone can rebuild it: \`make dist\` on this tag gives the same module and image digest.
Provenance: \`gh attestation verify status_sync.wasm --repo ${GITHUB_REPOSITORY:-<owner>/<repo>}\`, or
\`gh attestation verify oci://$image@$digest --repo ${GITHUB_REPOSITORY:-<owner>/<repo>}\`.
EOF
  echo "release: creating the GitHub release $tag"
  gh release create "$tag" --verify-tag --title "status-sync $tag" --notes-file "$notes" \
    "$DIST/status_sync.wasm" "$DIST/status_sync.wasm.sha256" "$DIST/status_sync.image-digest"
}

case "${1:-}" in
  check-tag) [ $# -eq 2 ] || die "usage: $0 check-tag TAG"; check_tag "$2" ;;
  push) [ $# -eq 3 ] || die "usage: $0 push IMAGE TAG"; push "$2" "$3" ;;
  github-release) [ $# -eq 3 ] || die "usage: $0 github-release TAG IMAGE"; github_release "$2" "$3" ;;
  *) die "usage: $0 check-tag TAG | push IMAGE TAG | github-release TAG IMAGE" ;;
esac
