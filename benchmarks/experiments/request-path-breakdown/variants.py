"""Builds the variant modules /tmp/v0.wasm .. /tmp/v6.wasm from git worktrees.

Usage (from the repository): python3 benchmarks/experiments/request-path-breakdown/variants.py
Each variant is a commit, optionally with one edit of filter/src/shell/http.rs that removes a
step of the request path; the module is built and wasm-opt'ed as `make build` does.
"""
import os
import subprocess

OPT = ("-Oz --converge --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext "
       "--enable-mutable-globals --enable-nontrapping-float-to-int --enable-multivalue "
       "--enable-reference-types").split()

NO_HANDOFF = [  # counters, clock and enqueue of a webhook left out
    ("shared.metrics.inc(names::WEBHOOKS_OBSERVED, 1);", ""),
    ("        let now = host::now_ms();\n        let (repo_id", "        let now = 0;\n        let (repo_id"),
    ("        shared.metrics.inc(\n            match outcome {", "        let _ = (\n            match outcome {"),
    (".map(|q| host::enqueue(q, &msg).is_ok())", ".map(|_q| !msg.is_empty())"),
]
NO_PARSE = NO_HANDOFF + [  # ... and the parse
    ("        let view = match webhook::scan_webhook(&body) {",
     "        if !body.is_empty() { return; }\n        let view = match webhook::scan_webhook(&body) {"),
]
NO_BODY = NO_PARSE + [  # ... and the body copy
    ("        if !self.watching || self.saw_body_end {\n            return Action::Continue;",
     "        if !self.watching || self.saw_body_end || true {\n            return Action::Continue;"),
]
NO_ENQUEUE = [(".map(|q| host::enqueue(q, &msg).is_ok())", ".map(|_q| !msg.is_empty())")]

VARIANTS = {  # name: (commit, edits)
    "v0": ("72545e8", []),          # before this work: one-pass parser, opt-level s
    "v1": ("72545e8", NO_HANDOFF),
    "v2": ("72545e8", NO_PARSE),
    "v3": ("72545e8", NO_BODY),
    "v4": ("a77066c", []),          # faster scanner
    "v5": ("064a379", []),          # + counters by index, clock of the last tick
    "v6": ("064a379", NO_ENQUEUE),
}

for name, (commit, edits) in VARIANTS.items():
    tree = f"/tmp/variant-{name}"
    if not os.path.exists(tree):
        subprocess.run(["git", "worktree", "add", "-f", "--detach", tree, commit], check=True)
    path = os.path.join(tree, "filter/src/shell/http.rs")
    src = subprocess.run(["git", "-C", tree, "show", f"{commit}:filter/src/shell/http.rs"],
                         check=True, capture_output=True, text=True).stdout
    for old, new in edits:
        assert old in src, (name, old)
        src = src.replace(old, new)
    open(path, "w").write(src)
    subprocess.run(["cargo", "build", "-q", "-p", "status-sync", "--target", "wasm32-wasip1",
                    "--release"], cwd=tree, check=True)
    subprocess.run(["wasm-opt", *OPT, "target/wasm32-wasip1/release/status_sync.wasm",
                    "-o", f"/tmp/{name}.wasm"], cwd=tree, check=True)
    print(name, os.path.getsize(f"/tmp/{name}.wasm"), "bytes")
