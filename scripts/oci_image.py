#!/usr/bin/env python3
"""Writes status-sync's Wasm module as an OCI image layout, byte for byte the same on every run.

Usage: oci_image.py MODULE.wasm OUT_DIR TAG DIGEST_FILE

The image is the "compat" variant that istio-agent reads (istio/istio pkg/wasm/imagefetcher.go,
extractOCIStandardImage): an OCI manifest whose last (here: only) layer has the media type
application/vnd.oci.image.layer.v1.tar+gzip and holds one file, plugin.wasm. No Docker daemon:
tar and gzip are written here with fixed metadata (mtime 0, uid/gid 0, mode 0644, no file name
in the gzip header) and the JSON with sorted keys, so the same module always gives the same
manifest digest. That digest (written to DIGEST_FILE as sha256:<hex>) is what istio-agent
compares with a WasmPlugin's `sha256` or the `@sha256:` of an oci:// URL (pkg/wasm/cache.go);
it is what users pin. `skopeo copy --preserve-digests oci:OUT_DIR:TAG docker://...` pushes it
unchanged.
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(module: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(module)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    module_path, out, tag, digest_file = sys.argv[1:]
    module = open(module_path, "rb").read()
    if module[:4] != b"\0asm":
        sys.exit(f"{module_path} is not a Wasm module")

    blobs = {}

    def blob(data: bytes, media_type: str, annotations=None) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        d = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if annotations:
            d["annotations"] = annotations
        return d

    tar = layer_tar(module)
    # mtime=0 and no file name: the gzip header carries nothing of this machine or moment.
    gz = gzip.compress(tar, compresslevel=9, mtime=0)
    layer = blob(gz, LAYER, {"org.opencontainers.image.title": "plugin.wasm"})
    config = blob(
        canonical(
            {
                "architecture": "wasm",
                "os": "wasip1",
                "config": {},
                "rootfs": {
                    "type": "layers",
                    "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()],
                },
            }
        ),
        CONFIG,
    )
    manifest_bytes = canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config,
            "layers": [layer],
            "annotations": {
                # solo-io/wasm spec-compat.md: optional, marks the compat variant.
                "module.wasm.image/variant": "compat",
                "org.opencontainers.image.title": "status-sync",
                "org.opencontainers.image.version": tag,
            },
        }
    )
    manifest = blob(
        manifest_bytes, MANIFEST, {"org.opencontainers.image.ref.name": tag}
    )

    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "blobs", "sha256"))
    for digest, data in blobs.items():
        with open(os.path.join(out, "blobs", "sha256", digest[len("sha256:"):]), "wb") as f:
            f.write(data)
    with open(os.path.join(out, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(canonical({"schemaVersion": 2, "manifests": [manifest]}))
    with open(digest_file, "w") as f:
        f.write(manifest["digest"] + "\n")
    print(f"image {out} (tag {tag}): manifest {manifest['digest']}")


if __name__ == "__main__":
    main()
