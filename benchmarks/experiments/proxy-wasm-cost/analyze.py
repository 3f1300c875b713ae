# Summarise bench output: median req/s and Envoy CPU us/request per variant, and
# per-round ratios vs NOF (same round), with their medians.
import sys, statistics as st, collections
rows = collections.defaultdict(dict)
for f in sys.argv[1:]:
    for line in open(f):
        p = line.split()
        if len(p) >= 5 and p[0] == "round":
            rows[(f, int(p[1]))][p[2]] = (float(p[3]), float(p[4]))
vs = ["NOF", "NONE", "MIN", "ALL", "ALLH", "SDK", "DIS"]
print(f"{len(rows)} rounds")
print("variant  med_rps  med_cpu_us/req  med(rps/NOF)  [min..max]   med(cpu-NOF)us")
for v in vs:
    r = [x[v][0] for x in rows.values() if v in x]
    if not r: continue
    c = [x[v][1] for x in rows.values() if v in x]
    ratio = [x[v][0] / x["NOF"][0] for x in rows.values() if v in x]
    dcpu = [x[v][1] - x["NOF"][1] for x in rows.values() if v in x]
    print(f"{v:6} {st.median(r):9.0f} {st.median(c):10.2f} {st.median(ratio):12.3f}   [{min(ratio):.2f}..{max(ratio):.2f}]  {st.median(dcpu):8.2f}")
for a, b in [(a, b) for a, b in [("MIN", "NONE"), ("ALL", "MIN"), ("ALLH", "ALL"), ("SDK", "ALLH"), ("SDK", "MIN"), ("DIS", "NOF")] if all(a in x and b in x for x in rows.values())]:
    ratio = [x[a][0] / x[b][0] for x in rows.values()]
    dcpu = [x[a][1] - x[b][1] for x in rows.values()]
    print(f"{a}/{b}: med rps ratio {st.median(ratio):.3f}, med cpu diff {st.median(dcpu):+.2f} us/req, "
          f"{sum(d > 0 for d in dcpu)}/{len(dcpu)} rounds {a} costlier")
