#!/bin/bash
# This experiment's variants, driven on the path status-sync watches; the rounds: ../common/bench.sh.
# Usage: ENVOY_PID=<pid> ROUNDS=8 SECS=5 ./bench.sh
cd "$(dirname "$0")"
VARIANTS=${VARIANTS:-NOF V0 V1 V2 V3} URL_PATH=/hook exec ../common/bench.sh .
