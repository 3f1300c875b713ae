#!/bin/bash
# A full run of an experiment: the upstream, one Envoy on the experiment's envoy.json (one
# listener per variant) and the experiment's bench.sh (alternating wrk rounds), tee'd to a
# results file in the experiment's directory.
# Usage (from an experiment's run.sh): ENVOY_BASE_ID=<n> ../common/run.sh <experiment dir> [results.txt]
set -u
cd "${1:?the experiment directory}"
"${UPSTREAM_BIN:?the fast-upstream binary: cargo build --release -p envoy-e2e --bin fast-upstream}" --port 18080 > upstream.log 2>&1 & UP=$!
"${ENVOY_BIN:?set ENVOY_BIN to the envoy of the Makefile (.venv/bin/envoy)}" -c envoy.json --concurrency 2 -l warn --base-id "${ENVOY_BASE_ID:?}" > envoy_bench.log 2>&1 & EP=$!
sleep 3
ENVOY_PID=$EP ./bench.sh | tee "${2:-results.txt}"
kill $EP; wait $EP 2>/dev/null; kill $UP
