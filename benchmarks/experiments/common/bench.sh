#!/bin/bash
# Alternating benchmark of the variants of an experiment, order rotating each round.
# Usage (from an experiment's bench.sh): ENVOY_PID=<pid> ROUNDS=8 SECS=5 VARIANTS="NOF ..." \
#   URL_PATH=/hook ../common/bench.sh <experiment dir>
# The listener port of each variant is read from <experiment dir>/envoy.json (gen.py wrote it).
# Prints per run: req/s (wrk) and Envoy CPU time per request (utime+stime of the Envoy process,
# /proc/<pid>/stat, over the run / requests wrk completed), in microseconds.
DIR=${1:?the experiment directory}
ROUNDS=${ROUNDS:-6}; SECS=${SECS:-5}; PID=${ENVOY_PID:?}; URL_PATH=${URL_PATH:?}
declare -A PORT
while read -r name port; do PORT[$name]=$port; done < <(python3 -c '
import json, sys
for l in json.load(open(sys.argv[1]))["static_resources"]["listeners"]:
    print(l["name"], l["address"]["socket_address"]["port_value"])' "$DIR/envoy.json")
V=(${VARIANTS:?})
TCK=$(getconf CLK_TCK)
LUA="$(dirname "$0")/post.lua"
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
run() {
  local c0=$(cpu)
  local out=$(wrk -t2 -c16 -d${2}s -s "$LUA" "http://127.0.0.1:${PORT[$1]:?no listener $1 in envoy.json}$URL_PATH")
  local c1=$(cpu)
  local rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  local n=$(awk '/requests in/{print $1}' <<<"$out")
  local bad=$(awk '/Non-2xx/{print $NF}' <<<"$out")
  awk -v r=$rps -v n=$n -v c=$((c1-c0)) -v t=$TCK -v b=${bad:-0} 'BEGIN{printf "%s %.2f non2xx=%s", r, c/t*1e6/n, b}'
}
for v in "${V[@]}"; do run $v 3 >/dev/null; done   # warm-up
for ((r=0; r<ROUNDS; r++)); do
  for ((i=0; i<${#V[@]}; i++)); do
    v=${V[$(( (i + r) % ${#V[@]} ))]}
    echo "round $r $v $(run $v $SECS)"
  done
done
