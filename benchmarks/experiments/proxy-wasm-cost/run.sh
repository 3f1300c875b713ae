#!/bin/bash
# Full run: upstream + one Envoy (one listener per variant) + alternating wrk rounds
# (../common/run.sh).
# Usage: ROUNDS=8 SECS=5 ./run.sh results.txt
cd "$(dirname "$0")"
ENVOY_BASE_ID=72 exec ../common/run.sh . "$@"
