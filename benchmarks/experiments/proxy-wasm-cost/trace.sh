#!/bin/bash
# Which proxy_on_* callbacks Envoy calls per request, per variant: V8 host->vm trace lines
# (wasm component at trace level) for 1 s of wrk -c1 on each listener.
cd "$(dirname "$0")"
"${UPSTREAM_BIN:?the fast-upstream binary: cargo build --release -p envoy-e2e --bin fast-upstream}" --port 18080 > upstream.log 2>&1 & UP=$!
"${ENVOY_BIN:?set ENVOY_BIN to the envoy of the Makefile (.venv/bin/envoy)}" -c envoy.json --concurrency 2 -l info --component-log-level wasm:trace --base-id 73 > trace3.log 2>&1 & EP=$!
sleep 3
for v in NONE:10006 MIN:10003 ALL:10002 ALLH:10007 SDK:10004 DIS:10005; do
  n0=$(wc -l < trace3.log)
  n=$(wrk -t1 -c1 -d1s -s ../common/post.lua http://127.0.0.1:${v#*:}/other | awk '/requests in/{print $1}')
  sleep 0.3
  echo "== ${v%%:*}: $n requests; calls per request:"
  tail -n +$((n0+1)) trace3.log | grep -o '\[host->vm\] proxy_on_[a-z_]*\|\[vm->host\] [a-z_.]*' | sort | uniq -c | awk -v n=$n '{printf "   %-45s %.2f\n", $2" "$3, $1/n}'
done
kill $EP; wait $EP 2>/dev/null; kill $UP
