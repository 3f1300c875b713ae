#!/bin/bash
# Full run: upstream + one Envoy (one listener per variant, status-sync watching /hook) + alternating wrk rounds.
# Usage: ROUNDS=8 SECS=5 ./run.sh results.txt
set -u
cd "$(dirname "$0")"
"${UPSTREAM_BIN:?the fast-upstream binary: cargo build --release -p envoy-e2e --bin fast-upstream}" --port 18080 > upstream.log 2>&1 & UP=$!
"${ENVOY_BIN:?set ENVOY_BIN to the envoy of the Makefile (.venv/bin/envoy)}" -c envoy.json --concurrency 2 -l warn --base-id 73 > envoy_bench.log 2>&1 & EP=$!
sleep 3
ENVOY_PID=$EP ./bench.sh | tee "${1:-results.txt}"
kill $EP; wait $EP 2>/dev/null; kill $UP
