#!/usr/bin/env python3
"""Summary of bench/cpu_path_ab.sh: JMH json files named ...-exp-<path>-r<k>.json.

For each run: the memory bandwidth from its StreamBench (best of copy / scaleInPlace / sum,
bytes as in BenchReport) and, per TokenLogProbsBench point, the median single-shot time and
native / floor (floor = BenchData.floorBytes / that run's bandwidth). Per point and path:
the median over runs of both. A/B = median generic ms / median avx512 ms.
With --cpu-ab FILE: the summary of `spo4j_harness cpu-ab` runs instead (cpu_ab_summary)."""
import json, re, statistics, sys
from collections import defaultdict


def cpu_ab_summary(path):
    """`cpu_path_ab.py --cpu-ab FILE`: medians over the runs in a file of concatenated
    `spo4j_harness cpu-ab` tables (each run's figures are already medians of 7 calls)."""
    rows = defaultdict(list)
    for line in open(path):
        if line.startswith("| forward") or line.startswith("| backward"):
            c = [x.strip() for x in line.strip().strip("|").split("|")]
            rows[tuple(c[:4])].append((float(c[4]), float(c[5]), float(c[6].rstrip("x"))))
    print("| mode | dtype | rows x V | threads | generic ms | avx512 ms | A/B generic/avx512 per run | median A/B |")
    print("|---|---|---|---|---:|---:|---|---:|")
    for k, v in rows.items():
        med = lambda i: statistics.median(x[i] for x in v)
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {med(0):.1f} | {med(1):.1f} | "
              + ", ".join(f"{x[2]:.2f}" for x in v) + f" | {med(2):.2f}x |")


if len(sys.argv) == 3 and sys.argv[1] == "--cpu-ab":
    cpu_ab_summary(sys.argv[2])
    sys.exit(0)

ELEMENTS = 1 << 28  # StreamBench.ELEMENTS

def floor_bytes(mode, rows, vocab, es):
    big, small = rows * vocab * es, rows * 16.0
    return {"forward": big + small, "backward": 2 * big + small, "forwardBackward": 3 * big + 2 * small}[mode]

def pattern_floor_s(mode, rows, vocab, es, bw):
    """The floor per access pattern: the forward's bytes at the read-only rate (StreamBench
    sum), the backward's at the in-place read+write rate (scaleInPlace), in seconds."""
    big, small = rows * vocab * es, rows * 16.0
    fwd = (big + small) / (bw["sum"] * 1e9)
    bwd = (2 * big + small) / (bw["scaleInPlace"] * 1e9)
    return {"forward": fwd, "backward": bwd, "forwardBackward": fwd + bwd}[mode]

ms = defaultdict(list)     # (path, mode, dtype, rows, vocab, threads) -> [median ms per run]
ratio = defaultdict(list)  # same key -> [native / floor per run]
pratio = defaultdict(list) # same key -> [native / pattern floor per run]
bw_ops = defaultdict(list) # (path, op) -> [GB/s per run]
bws = defaultdict(list)
for f in sys.argv[1:]:
    path = re.search(r"-exp-(\w+)-r\d+\.json$", f).group(1)
    data = json.load(open(f))
    bw = {}
    for r in data:
        if ".StreamBench." in r["benchmark"]:
            op = r["benchmark"].rsplit(".", 1)[1]
            raw = [x for fork in r["primaryMetric"]["rawData"] for x in fork]
            bytes_ = (1.0 if op == "sum" else 2.0) * ELEMENTS * 4
            bw[op] = bytes_ / (statistics.median(raw) / 1e3) / 1e9
    best = max(bw.values())
    bws[path].append(best)
    for op, v in bw.items():
        bw_ops[(path, op)].append(v)
    for r in data:
        if r["benchmark"].endswith("TokenLogProbsBench.run"):
            p = r["params"]
            raw = [x for fork in r["primaryMetric"]["rawData"] for x in fork]
            med = statistics.median(raw)
            es = 4 if p["dtype"] == "fp32" else 2
            floor_ms = floor_bytes(p["mode"], int(p["rows"]), int(p["vocab"]), es) / (best * 1e9) * 1e3
            key = (p["mode"], p["dtype"], p["rows"], p["vocab"], p["threads"])
            ms[(path,) + key].append(med)
            ratio[(path,) + key].append(med / floor_ms)
            pf_ms = pattern_floor_s(p["mode"], int(p["rows"]), int(p["vocab"]), es, bw) * 1e3
            pratio[(path,) + key].append(med / pf_ms)

print("Memory bandwidth per run (best of StreamBench copy/scaleInPlace/sum, GB/s): "
      + "; ".join(f"{k}: " + ", ".join(f"{v:.1f}" for v in vs) for k, vs in bws.items()))
print("StreamBench per run (GB/s): " + "; ".join(
    f"{path} {op}: " + ", ".join(f"{v:.1f}" for v in vs) for (path, op), vs in sorted(bw_ops.items())))
print()
print("floor = minimum bytes / the best of the three rates; pattern floor = the forward's bytes at the "
      "read-only rate (sum) plus the backward's at the in-place rate (scaleInPlace), same run.")
print()
print("| mode | dtype | rows x V | threads | generic ms | avx512 ms | A/B (generic/avx512) | generic / floor | avx512 / floor "
      "| generic / pattern floor | avx512 / pattern floor | runs |")
print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
keys = sorted({k[1:] for k in ms}, key=lambda k: (k[1], int(k[3]), ["forward", "backward", "forwardBackward"].index(k[0])))
for k in keys:
    g, a = ms.get(("generic",) + k, []), ms.get(("avx512",) + k, [])
    gm = statistics.median(g) if g else float("nan")
    am = statistics.median(a) if a else float("nan")
    gr = statistics.median(ratio[("generic",) + k]) if g else float("nan")
    ar = statistics.median(ratio[("avx512",) + k]) if a else float("nan")
    gp = statistics.median(pratio[("generic",) + k]) if g else float("nan")
    ap = statistics.median(pratio[("avx512",) + k]) if a else float("nan")
    print(f"| {k[0]} | {k[1]} | {k[2]} x {k[3]} | {k[4]} | {gm:.1f} | {am:.1f} | {gm / am:.2f}x | {gr:.2f} | {ar:.2f} "
          f"| {gp:.2f} | {ap:.2f} | {len(g)}+{len(a)} |")
