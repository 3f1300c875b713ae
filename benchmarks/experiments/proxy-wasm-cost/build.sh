#!/bin/bash
# Builds the test modules into its own directory (run it from a copy, see README.md).
set -e; cd "$(dirname "$0")"; export CARGO_TARGET_DIR="$PWD/target"
(cd noop; for f in min: all:all allh:all,hdr none:none; do n=${f%%:*}; feat=${f#*:}
   cargo build -q --offline --release --target wasm32-wasip1 ${feat:+--features $feat}; cp ../target/wasm32-wasip1/release/noop.wasm ../$n.wasm; done)
(cd sdknoop; cargo build -q --offline --release --target wasm32-wasip1; cp ../target/wasm32-wasip1/release/sdknoop.wasm ../sdk.wasm)
python3 gen.py; python3 exports.py *.wasm | cut -c1-120
