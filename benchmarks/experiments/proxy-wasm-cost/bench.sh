#!/bin/bash
# Alternating benchmark of the variants, order rotating each round.
# Usage: ENVOY_PID=<pid> ROUNDS=8 SECS=5 ./bench.sh
# Prints per run: req/s (wrk) and Envoy CPU time per request (utime+stime of the Envoy process,
# /proc/<pid>/stat, over the run / requests wrk completed), in microseconds.
ROUNDS=${ROUNDS:-6}; SECS=${SECS:-5}; PID=${ENVOY_PID:?}
declare -A PORT=([NOF]=10001 [ALL]=10002 [MIN]=10003 [SDK]=10004 [DIS]=10005 [NONE]=10006 [ALLH]=10007)
V=(${VARIANTS:-NOF NONE MIN ALL ALLH SDK DIS})
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
run() {
  local c0=$(cpu)
  local out=$(wrk -t2 -c16 -d${2}s -s "$(dirname "$0")/post.lua" http://127.0.0.1:${PORT[$1]}/other)
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
