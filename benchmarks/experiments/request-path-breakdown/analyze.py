"""Per-round medians of each variant against NOF (no filter), from bench.sh output files.

Usage: python3 analyze.py results-*.txt
Rounds alternate the variants in rotating order, so a variant is compared with the NOF run of
the same round: the machine's speed drifts between rounds by more than the differences here.
"""
import collections
import statistics as st
import sys

for path in sys.argv[1:]:
    by = collections.defaultdict(dict)
    for line in open(path):
        f = line.split()
        if len(f) < 5 or f[0] != "round":
            continue
        by[int(f[1])][f[2]] = (float(f[3]), float(f[4]))
    print(path)
    for v in sorted({v for r in by.values() for v in r}):
        if v == "NOF":
            continue
        rounds = [r for r in by.values() if v in r and "NOF" in r]
        ratio = st.median(r[v][0] / r["NOF"][0] for r in rounds)
        cpu = st.median(r[v][1] - r["NOF"][1] for r in rounds)
        print(f"  {v}: req/s vs NOF {ratio:.3f}, Envoy CPU per request +{cpu:.1f} us ({len(rounds)} rounds)")
