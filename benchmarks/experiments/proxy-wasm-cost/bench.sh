#!/bin/bash
# This experiment's variants, driven on a path no filter watches; the rounds: ../common/bench.sh.
# Usage: ENVOY_PID=<pid> ROUNDS=8 SECS=5 ./bench.sh
cd "$(dirname "$0")"
VARIANTS=${VARIANTS:-NOF NONE MIN ALL ALLH SDK DIS} URL_PATH=/other exec ../common/bench.sh .
