#!/bin/bash
# Full run: upstream + one Envoy (one listener per variant, status-sync watching /hook) +
# alternating wrk rounds (../common/run.sh).
# Usage: ROUNDS=8 SECS=5 ./run.sh results.txt
cd "$(dirname "$0")"
ENVOY_BASE_ID=73 exec ../common/run.sh . "$@"
