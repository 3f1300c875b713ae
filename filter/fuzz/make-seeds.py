#!/usr/bin/env python3
"""Regenerates seeds/<target>/ from the drone fixtures (testdata/drone at the workspace root).

The seeds are committed; rerun this only when the fixtures change:
    python3 make-seeds.py
Input layouts follow each target's doc comment (fuzz_targets/<target>.rs).
"""
import base64, hashlib, hmac, json, os, shutil

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.normpath(os.path.join(HERE, "..", "..", "testdata", "drone"))
SEEDS = os.path.join(HERE, "seeds")


def fixture(name):
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read()


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def drone_sign(secret, body, date):
    digest = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    ss = f"date: {date}\ndigest: {digest}".encode()
    mac = base64.b64encode(hmac.new(secret, ss, hashlib.sha256).digest()).decode()
    sig = f'keyId="hmac-key",algorithm="hmac-sha256",signature="{mac}",headers="date digest"'
    return digest, sig


shutil.rmtree(SEEDS, ignore_errors=True)
webhooks = ["webhook-build-created.json", "webhook-build-updated-running.json",
            "webhook-build-updated-success.json"]

# webhook: bodies, and request lines (method \n path \n X-Drone-Event \n webhook_path).
for name in webhooks:
    write("webhook", name, fixture(name))
write("webhook", "request-match", b"POST\n/hook\nbuild\n/hook")
write("webhook", "request-subpath", b"POST\n/hook/drone?x=1\nbuild\n/hook")
write("webhook", "request-other", b"GET\n/hooks\nrepo\n/hook")

# signature: secret \n date \n digest \n signature \n body.
for i, v in enumerate(json.loads(fixture("signature-vectors.json")), 1):
    body = (v["body"] or "").encode()
    write("signature", f"vector-{i}", b"\n".join(
        [v["secret"].encode(), v["date"].encode(), v["digest"].encode(),
         v["signature_header"].encode(), body]))
for name in webhooks:
    body, date, secret = fixture(name), "Sat, 01 Jun 2024 10:00:00 GMT", b"0123456789abcdef"
    digest, sig = drone_sign(secret, body, date)
    write("signature", "signed-" + name, b"\n".join(
        [secret, date.encode(), digest.encode(), sig.encode(), body]))

# drone_api: build answers, repo answers, and repo \0 build [\0 system].
build = fixture("api-build-success.json")
write("drone_api", "api-build-success.json", build)
hook = json.loads(fixture("webhook-build-updated-success.json"))
repo = {k: v for k, v in hook["repo"].items() if k != "build"}
write("drone_api", "api-repo.json", compact(repo) + b"\n")
write("drone_api", "repo-build", compact(repo) + b"\n\0" + build)
# A number in the JSON grammar but out of f64 range: passed through verbatim (found by fuzzing).
write("drone_api", "repo-build-huge-number",
      compact(repo) + b"\0" + build.replace(b'"timestamp":0', b'"timestamp":71e17236003'))
write("drone_api", "repo-build-system", compact(repo) + b"\0" + build + b"\0" + compact(hook["system"]))

# config: plugin configurations.
write("config", "minimal.json", compact(
    {"pipeline_cluster": "pipeline", "drone_cluster": "drone", "drone_token_env": "DRONE_TOKEN"}))
write("config", "full.json", json.dumps({
    "webhook_path": "/hook", "pipeline_cluster": "pipeline", "pipeline_authority": "pipeline.local",
    "drone_cluster": "drone", "drone_authority": "drone.example.com", "drone_token": "t0ken",
    "tick_ms": 1000, "stale_after_ms": 30000, "max_poll_interval_ms": 300000,
    "max_tracked_builds": 10000, "max_inflight_calls": 4, "max_drone_calls_per_sec": 10,
    "call_timeout_ms": 5000, "max_body_bytes": 262144, "max_build_age_ms": 90000000,
    "max_repos": 1024, "circuit_failure_threshold": 5, "circuit_open_ms": 10000,
    "lease_ms": 10000, "instance": "default", "webhook_secret_env": "DRONE_WEBHOOK_SECRET",
    "signature_mode": "monitor", "max_clock_skew_ms": 300000, "live_webhook_id": True,
}, indent=2).encode())
write("config", "bad-types.json", b'{"pipeline_cluster":1,"drone_cluster":"drone","tick_ms":"x"}')

# observation: queue messages, the binary `SSO3` layout of `Observation::encode`
# (filter/src/core/observation.rs, integers little-endian as in core/wire.rs): magic, repo.id,
# build.number, build.version (u64 each), status code, outcome code, verified (u8 each),
# namespace, name, action (u32 length + UTF-8 each), then repo_json and system_json, each
# 0 (absent) or 1 + u32 length + UTF-8; a verified message ends with its tag,
# HMAC-SHA256(key, all the bytes before it), key = HMAC-SHA256(webhook secret, KEY_LABEL).
# The fuzz target and the seeds use the webhook secret FUZZ_SECRET. Plus one `SSO2` (no tag)
# and one `SSO1` message (before `verified`), which the reconciler still decodes, as hints,
# during a rolling upgrade.
import struct
STATUS = ["skipped", "blocked", "declined", "waiting_on_dependencies", "pending", "running",
          "success", "failure", "killed", "error"]
OUTCOME = {"delivered": 0, "refused": 1, "not_delivered": 2}
FUZZ_SECRET = b"fuzz-webhook-secret"
KEY_LABEL = b"status-sync observation queue tag v1"
QUEUE_KEY = hmac.new(FUZZ_SECRET, KEY_LABEL, hashlib.sha256).digest()


def s32(text):
    b = text.encode()
    return struct.pack("<I", len(b)) + b


def opt(text):
    return b"\0" if text is None else b"\1" + s32(text)


def observation(repo_id, ns, name, number, status, version, action, outcome, verified,
                repo_json=None, system_json=None, magic=b"SSO3"):
    code = STATUS.index(status) if status in STATUS else 10
    out = magic + struct.pack("<QQQ", repo_id, number, version)
    out += bytes([code, OUTCOME[outcome]]) + (bytes([verified]) if magic != b"SSO1" else b"")
    out += s32(ns) + s32(name) + s32(action) + opt(repo_json) + opt(system_json)
    if verified and magic == b"SSO3":
        out += hmac.new(QUEUE_KEY, out, hashlib.sha256).digest()
    return out


b = hook["build"]
for outcome in OUTCOME:
    write("observation", outcome + ".bin", observation(
        repo["id"], repo["namespace"], repo["name"], b["number"], b["status"], b["version"],
        hook["action"], outcome, 1, compact(repo).decode(), compact(hook["system"]).decode()))
write("observation", "minimal.bin",
      observation(1, "o", "n", 1, "pending", 1, "created", "delivered", 0))
write("observation", "v2.bin",
      observation(1, "o", "n", 1, "running", 2, "updated", "delivered", 1, magic=b"SSO2"))
write("observation", "v1.bin",
      observation(1, "o", "n", 1, "running", 2, "updated", "refused", 0, magic=b"SSO1"))
