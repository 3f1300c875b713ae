#!/usr/bin/env python3
"""Benchmark summaries: collect them from the benchmarks' output, check them against targets.

    check.py collect DIR   # every `BENCH_SUMMARY {json}` line of DIR/*.log -> DIR/<name>.json
    check.py check DIR     # exit 1 if a benchmark is missing, missed a target or lacks a REQUIRED one
    check.py table DIR     # the targets as a Markdown table (for BENCHMARKS.md)

`make bench` runs `collect`, `make bench-check` runs `check`. Each target is re-evaluated from
its `value`, `op` and `limit`, so a summary cannot claim a pass it did not earn.
"""

import json
import math
import sys
from pathlib import Path

# Every benchmark `make bench` runs, by summary name.
EXPECTED = [
    "soak_host",
    "soak_envoy",
    "tick_cost",
    "memory_per_build",
    "webhook_cost",
    "request_overhead",
    "drone_efficiency",
    "binary_size",
]

# Targets check.py requires of a summary, whatever the benchmark itself declared: a summary
# without one (from an older benchmark), or with another operator or limit, fails.
REQUIRED = {
    "request_overhead": [
        # Envoy CPU per webhook above no filter: status-sync's over the floor's (a no-op module
        # reading the webhook's headers and body, benchmarks/floor), measured in the same run.
        ("Envoy CPU per webhook, status-sync over the floor (each minus no filter)", "<=", 1.3),
    ],
}

OPS = {
    "<": lambda v, l: v < l,
    "<=": lambda v, l: v <= l,
    ">=": lambda v, l: v >= l,
    ">": lambda v, l: v > l,
    "==": lambda v, l: v == l,
}


def collect(d: Path) -> int:
    found = 0
    for log in sorted(d.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("BENCH_SUMMARY "):
                continue
            summary = json.loads(line[len("BENCH_SUMMARY "):])
            (d / f"{summary['name']}.json").write_text(json.dumps(summary, indent=2) + "\n")
            found += 1
    print(f"collected {found} summaries into {d}")
    return 0


def load(d: Path):
    out = {}
    for name in EXPECTED:
        p = d / f"{name}.json"
        out[name] = json.loads(p.read_text()) if p.exists() else None
    return out


def evaluate(t) -> bool:
    v, l, op = t.get("value"), t.get("limit"), t.get("op")
    if not isinstance(v, (int, float)) or not isinstance(l, (int, float)) or op not in OPS:
        return False
    if isinstance(v, float) and not math.isfinite(v):
        return False
    return OPS[op](v, l)


def check(d: Path) -> int:
    failed = 0
    for name, s in load(d).items():
        if s is None:
            print(f"FAIL {name}: no summary in {d} (run `make bench`)")
            failed += 1
            continue
        targets = s.get("targets", [])
        for want, op, limit in REQUIRED.get(name, []):
            if not any(t.get("name") == want and t.get("op") == op and t.get("limit") == limit for t in targets):
                print(f"FAIL {name}: no target `{want}` {op} {limit} in its summary (re-run it)")
                failed += 1
        if not targets:
            print(f"ok   {name}: figures only, no target")
        for t in targets:
            ok = evaluate(t)
            if ok != bool(t.get("pass")):
                print(f"     {name}: the summary's own verdict disagrees; using the re-evaluated one")
            mark = "ok  " if ok else "FAIL"
            print(f"{mark} {name}: {t['name']}: {t['value']} {t['op']} {t['limit']} {t.get('unit', '')}")
            failed += 0 if ok else 1
    print(f"{failed} target(s) missed" if failed else "every target met")
    return 1 if failed else 0


def table(d: Path) -> int:
    print("| benchmark | target | figure | limit | met |")
    print("|---|---|---|---|---|")
    for name, s in load(d).items():
        if s is None:
            print(f"| {name} | (no summary) | | | no |")
            continue
        for t in s.get("targets", []):
            met = "yes" if evaluate(t) else "**no**"
            print(f"| {name} | {t['name']} | {t['value']} {t.get('unit', '')} | {t['op']} {t['limit']} | {met} |")
    return 0


def main(argv) -> int:
    if len(argv) != 3 or argv[1] not in ("collect", "check", "table"):
        print(__doc__)
        return 2
    d = Path(argv[2])
    if not d.is_dir():
        print(f"{d} does not exist: run `make bench` first")
        return 1
    return {"collect": collect, "check": check, "table": table}[argv[1]](d)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
