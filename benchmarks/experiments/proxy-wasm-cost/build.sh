#!/bin/bash
# Builds the test modules and the upstream into /tmp/wasmcost (never touches /work/main).
set -e; cd /tmp/wasmcost; export CARGO_TARGET_DIR=/tmp/wasmcost/target
(cd noop; for f in min: all:all allh:all,hdr none:none; do n=${f%%:*}; feat=${f#*:}
   cargo build -q --offline --release --target wasm32-wasip1 ${feat:+--features $feat}; cp ../target/wasm32-wasip1/release/noop.wasm ../$n.wasm; done)
(cd sdknoop; cargo build -q --offline --release --target wasm32-wasip1; cp ../target/wasm32-wasip1/release/sdknoop.wasm ../sdk.wasm)
(cd upstream; cargo build -q --offline --release)
python3 gen.py; python3 exports.py *.wasm | cut -c1-120
