#!/usr/bin/env bash
# Data-parallel throughput on this machine: the embedded default (tiny Llama, SPO) for STEPS
# optimiser steps with the same global batch (GLOBAL pairs per step) on
#   1 process x 2 LibTorch threads, 1 process x 1 thread, and 2 processes x 1 thread
# (train --nproc-per-node 2, Gloo over loopback). Reads tokens_per_second and allreduce_ms per
# step from each run's metrics.jsonl and reports medians over the steps after WARMUP.
#   bench/dist.sh            STEPS=40 GLOBAL=16 WARMUP=5
# Writes bench/results/dist-<stamp>.json and .md. Needs the jar (mvn -B -q package -DskipTests).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-40}
global=${GLOBAL:-16}
warmup=${WARMUP:-5}
export OMP_WAIT_POLICY=passive THP_MEM_ALLOC_ENABLE=1
[[ -f target/spo4j.jar ]] || mvn -B -q package -DskipTests
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="bench/results/dist-$stamp"
common=(train --max-steps "$steps" --eval-every 100000 --checkpoint-every 0 --keep-checkpoints 1)

run() {  # name procs threads
  local name=$1 procs=$2 threads=$3
  local args=("${common[@]}" --threads "$threads" --out "$work/$name" --batch-size $((global / procs)))
  [[ $procs -gt 1 ]] && args+=(--nproc-per-node "$procs")
  echo "== $name: $procs process(es) x $threads thread(s), $((global / procs)) pairs per process" >&2
  OMP_NUM_THREADS=$threads java -jar target/spo4j.jar "${args[@]}" > "$work/$name.log" 2>&1
}
run p1t2 1 2
run p1t1 1 1
run p2t1 2 1
load=$(cut -d' ' -f1-3 /proc/loadavg)
params=$(stat -c %s "$work/p1t2/final-model/model.safetensors")
python3 - "$work" "$out" "$warmup" "$steps" "$global" "$load" "$params" <<'PY'
import json, statistics, sys, platform, os
work, out, warmup, steps, glob, load, params = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7])
rows = []
for name, procs, threads in [("p1t2", 1, 2), ("p1t1", 1, 1), ("p2t1", 2, 1)]:
    m = [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl") if '"loss"' in l][warmup:]
    tps = statistics.median(r["tokens_per_second"] for r in m)
    ar = [r["allreduce_ms"] for r in m if "allreduce_ms" in r]
    rows.append({"processes": procs, "threads_per_process": threads, "global_batch_pairs": int(glob),
                 "steps_measured": len(m), "tokens_per_second_median": round(tps, 1),
                 "allreduce_ms_median": round(statistics.median(ar), 2) if ar else None,
                 "allreduce_ms_max": round(max(ar), 2) if ar else None,
                 "final_loss": m[-1]["loss"]})
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
meta = {"machine": f"{cpu[0]}, {os.cpu_count()} cores (shared), loopback Gloo",
        "model": "embedded tiny Llama (4 layers, hidden 128), fp32", "parameter_bytes": params,
        "steps": int(steps), "warmup_steps_skipped": warmup, "loadavg_after": load,
        "env": "OMP_WAIT_POLICY=passive, OMP_NUM_THREADS = threads per process"}
json.dump({"meta": meta, "rows": rows}, open(out + ".json", "w"), indent=2)
base = rows[0]["tokens_per_second_median"]
with open(out + ".md", "w") as f:
    f.write(f"Data parallel, {meta['machine']}; {meta['model']}, {params/1e6:.1f} MB of fp32 gradients per all-reduce "
            f"(one bucket); global batch {glob} pairs; medians over steps {warmup+1}..{steps}; load average after: {load}.\n\n")
    f.write("| processes | threads each | pairs per process | tokens/s | vs 1 x 2 threads | all-reduce ms/step (median / max) |\n|---:|---:|---:|---:|---:|---|\n")
    for r in rows:
        ar = "-" if r["allreduce_ms_median"] is None else f"{r['allreduce_ms_median']} / {r['allreduce_ms_max']}"
        f.write(f"| {r['processes']} | {r['threads_per_process']} | {int(glob)//r['processes']} | {r['tokens_per_second_median']:.0f} | "
                f"{r['tokens_per_second_median']/base:.2f}x | {ar} |\n")
print(open(out + ".md").read())
PY
