#!/usr/bin/env bash
# Mutation testing of the sans-IO core, one shard per file (`make mutants`; never in `make test`).
#
# usage: [MUTANTS_SHARD=k/n] scripts/mutants.sh OUT_DIR TMP_DIR FILE... (FILE: a path under
# filter/src/core, no .rs)
#
# Two passes per file, so a shard takes minutes, not hours, on a shared 2-core machine:
#   1. fast: each mutant against the filter's unit tests only (one test binary to link), without
#      the parsers' randomised comparisons against serde (for the parsers' own files, without
#      the two largest of them; for turn.rs, which no unit test reaches, tests/turn.rs instead);
#   2. full: every mutant pass 1 did not catch, again against all of the filter's own tests
#      (unit tests and filter/tests/*.rs; `cargo mutants --iterate`).
# Files the unit tests do not reach (reconciler/*, host) skip pass 1: all their mutants go to pass 2.
# A mutant is missed only if the full suite misses it, so the fast pass changes the time, never
# the result. Each file's result is one text file, OUT_DIR/<file with / as _>.txt: the commit it
# ran on, each pass's summary, then every mutant on a line prefixed with its verdict (missed,
# timeout, unviable, caught; no empty lists). OUT_DIR/survivors.txt is rewritten after each file:
# every missed mutant of every file, one list. No debug info in the builds: less to build and link.
set -uo pipefail

out=$1 tmp=$2
shift 2

# MUTANTS_SHARD=k/n: only the k-th of n groups of the files given, so that n machines (or n
# evenings) share a whole run. The groups are balanced by each file's mutant count (from
# `cargo mutants --list`, which only parses) plus a baseline build's worth; a reconciler module
# counts twice, since the unit tests do not reach it and every mutant runs the full suite.
if [[ -n ${MUTANTS_SHARD:-} ]]; then
  k=${MUTANTS_SHARD%/*} n=${MUTANTS_SHARD#*/}
  if ! [[ $k =~ ^[0-9]+$ && $n =~ ^[0-9]+$ && $k -ge 1 && $k -le $n ]]; then
    echo "MUTANTS_SHARD=$MUTANTS_SHARD: want k/n with 1 <= k <= n" >&2
    exit 2
  fi
  list_args=()
  for f in "$@"; do list_args+=(-f "filter/src/core/$f.rs"); done
  counts=$(cargo mutants --list "${list_args[@]}" 2>/dev/null | cut -d: -f1 | sort | uniq -c) || {
    echo "cargo mutants --list failed" >&2
    exit 1
  }
  mapfile -t picked < <(
    for f in "$@"; do
      c=$(awk -v p="filter/src/core/$f.rs" '$2 == p { print $1 }' <<<"$counts")
      w=$((${c:-0} + 15))
      [[ $f == reconciler/* ]] && w=$((w * 2))
      echo "$w $f"
    done | sort -k1,1nr -k2,2 | awk -v n="$n" -v k="$k" '
      { best = 1; for (i = 2; i <= n; i++) if (load[i] < load[best]) best = i
        load[best] += $1; if (best == k) print $2 }'
  )
  echo "== shard $k/$n: ${picked[*]}"
  set -- "${picked[@]}"
fi
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
# One proptest seed per run, and no regression files written: a failure a mutant provokes must
# not be saved into the tree (with --in-place it would make every later mutant "caught").
export PROPTEST_RNG_SEED=${PROPTEST_RNG_SEED:-$RANDOM} PROPTEST_DISABLE_FAILURE_PERSISTENCE=1
# Parser tests that compare against serde for thousands of inputs: a third of the unit tests'
# time, reaching only these files.
parsers=" json/scan json/decode json/text webhook/parse webhook/path drone_api "
# One mutant at a time is cargo-mutants' default (no -j: it refuses -j with MUTANTS_EXTRA=--in-place,
# which tests in the work tree itself, its target directory warm, instead of a fresh copy per file).
args=(--timeout 60 --build-timeout 600 ${MUTANTS_EXTRA:-})

for f in "$@"; do
  name=${f//\//_}
  dest=$out/$name.txt work=$tmp/$name
  rm -rf "$work"
  mkdir -p "$work" "$out"
  commit=$(git rev-parse HEAD)
  git diff --quiet HEAD -- filter || commit="$commit +uncommitted changes"
  echo "commit $commit" >"$work/result.txt"
  echo "== mutants of filter/src/core/$f.rs at $commit"
  skip=(-- --skip core::json:: --skip core::webhook::)
  # The parsers' own files: all their tests but the two randomised comparisons with the most
  # cases (seconds each; the full pass runs them on whatever the rest did not catch).
  [[ $parsers == *" $f "* ]] &&
    skip=(-- --skip mutations_of_a_drone_payload_match_serde --skip single_pass_matches_reference_on_mutations)
  # The reconciler's modules and host.rs are reached by filter/tests only (the unit tests do not
  # construct a reconciler or a host): for them the fast pass would build and run the unit tests
  # for nothing, so every mutant goes straight to the full pass.
  # No unit test reaches turn.rs either: its fast pass is the one test binary that does.
  # The fast pass selects its test binary with --cargo-arg (build and test), not
  # --cargo-test-arg (test only): otherwise every mutant builds and links all ~30 test binaries
  # of filter/tests for the one it runs, which took most of a fast pass's time.
  fast=1 iterate=(--iterate) lib=(--cargo-arg=--lib) what="unit tests"
  # cluster/node and cluster/election: four unit tests of node.rs reach them (3 of node's first
  # 17 mutants caught); their tests are filter/tests/cluster.rs and cluster_mode.rs.
  [[ $f == reconciler/* || $f == host || $f == cluster/node || $f == cluster/election ]] && fast=0 iterate=()
  [[ $f == turn ]] && lib=(--cargo-arg=--test=turn) what="tests/turn.rs"
  if [[ $fast == 1 ]]; then
    cargo mutants -f "filter/src/core/$f.rs" "${args[@]}" -o "$work" "${lib[@]}" -- "${skip[@]}" \
      >"$work/fast.log" 2>&1
    tail -1 "$work/fast.log" | sed "s|^|fast pass ($what): |" | tee -a "$work/result.txt"
  else
    echo "fast pass (unit tests): skipped, they do not reach this file" | tee -a "$work/result.txt"
  fi
  for l in caught unviable; do cp "$work/mutants.out/$l.txt" "$work/fast-$l.txt" 2>/dev/null || : >"$work/fast-$l.txt"; done
  full=0
  if [[ $fast == 0 || -s $work/mutants.out/missed.txt || -s $work/mutants.out/timeout.txt ]]; then
    full=1
    # MUTANTS_FULL_ARGS (e.g. "--test reconciler --test trust"): the full pass builds and runs
    # only these test binaries, those that reach the file (each word a --cargo-arg, so the
    # build skips the others too); what it misses must be re-run against the whole suite
    # (cargo mutants -F) before it counts as missed (results README says which did).
    narrow=()
    for a in ${MUTANTS_FULL_ARGS:-}; do narrow+=("--cargo-arg=$a"); done
    cargo mutants -f "filter/src/core/$f.rs" "${args[@]}" -o "$work" "${iterate[@]}" "${narrow[@]}" \
      >"$work/full.log" 2>&1
    tail -1 "$work/full.log" | sed "s/^/full pass (${MUTANTS_FULL_ARGS:-all filter tests}) of the rest: /" |
      tee -a "$work/result.txt"
  fi
  # Missed and timed-out mutants are those of the full pass (none without one); caught and
  # unviable are over both passes (--iterate's own lists hold only what it ran).
  for l in missed timeout; do
    [[ $full == 1 ]] && sed "s/^/$l /" "$work/mutants.out/$l.txt" 2>/dev/null >>"$work/result.txt"
  done
  for l in unviable caught; do
    cat "$work/fast-$l.txt" "$work/mutants.out/$l.txt" 2>/dev/null | sort -u | sed "s/^/$l /" >>"$work/result.txt"
  done
  mv "$work/result.txt" "$dest"
  {
    echo "# Every mutant a shard's full pass did not catch (missed), one line each, from the <file>.txt beside this file; README.md says what became of each."
    cat "$out"/*.txt 2>/dev/null | grep '^missed ' | sed 's/^missed //' | sort
  } >"$work/survivors.txt"
  mv "$work/survivors.txt" "$out/survivors.txt"
done
