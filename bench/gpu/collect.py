#!/usr/bin/env python3
"""Merges the stages of one bench/gpu/run.sh run into ONE JSON file and a Markdown summary.

Reads RUN_DIR/env.json, RUN_DIR/stages/<stage>.json (status, seconds, detail of every stage,
whatever the others did) and the artifacts the stages wrote (harness-bench.json,
train-step-f32.json, train-step-bf16.json, lm-head-*.json, compare-eager.json, compare-compile.json), and
writes --out (JSON) and --markdown. Needs only the standard library (no torch, no GPU), so it
runs after every stage, also on a machine where every GPU stage was skipped.
"""
import argparse
import glob
import json
import os
import sys

STAGES = ["env", "build", "train_build", "lm_head_build", "check", "bench", "train_step", "fused_lm_head", "torch_eager",
          "torch_compile"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def goals(rows):
    """torch_compare.goals over the merged rows (imported: one definition of the targets)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import torch_compare
        return torch_compare.goals(rows)
    except SystemExit:
        return []


def summarize_rows(rows):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import torch_compare
        return torch_compare.summarize(rows)
    except SystemExit:
        return ""


def collect(run_dir, stamp):
    out = {"schema": "spo4j-gpu-run/2", "stamp": stamp, "environment": load(os.path.join(run_dir, "env.json")),
           "stages": [], "harness_bench": load(os.path.join(run_dir, "harness-bench.json")), "train_step": [],
           "torch_compare": {"copy_gbps": None, "rows": [], "skipped": [], "errors": [], "versions": {}},
           "fused_lm_head": None}
    for name in STAGES:
        rec = load(os.path.join(run_dir, "stages", name + ".json"))
        out["stages"].append(rec if rec else {"stage": name, "status": "not_reached", "seconds": 0,
                                              "detail": "the run ended before this stage"})
    for dt in ("f32", "bf16"):
        t = load(os.path.join(run_dir, "train-step-%s.json" % dt))
        if t:
            out["train_step"].append(t)
    for part in ("eager", "compile"):
        c = load(os.path.join(run_dir, "compare-%s.json" % part))
        if not c:
            continue
        tc = out["torch_compare"]
        tc["copy_gbps"] = tc["copy_gbps"] or c.get("copy_gbps")
        tc["rows"] += c.get("rows", [])
        tc["skipped"] += c.get("skipped", [])
        tc["errors"] += c.get("errors", [])
        tc["versions"].update(c.get("versions", {}))
        tc.setdefault("device", c.get("device"))
    out["goals"] = goals(out["torch_compare"]["rows"])
    fl = next((s for s in out["stages"] if s["stage"] == "fused_lm_head"), None)
    out["fused_lm_head"] = {"status": fl["status"], "detail": fl.get("detail"), "results": []} if fl else None
    if out["fused_lm_head"] is not None:
        for path in sorted(glob.glob(os.path.join(run_dir, "lm-head-*.json"))):
            r = load(path)
            if r:
                out["fused_lm_head"]["results"].append(r)
    return out


def markdown(res):
    env = res.get("environment") or {}
    lines = ["# spo4j GPU run %s" % res["stamp"], "",
             "GPU: %s (%s); nvcc: %s; torch: %s" % (env.get("gpu"), env.get("cuda_arch"),
                                                  " ".join(env.get("nvcc") or []), env.get("torch")), "",
             "| stage | status | seconds | detail |", "| --- | --- | --- | --- |"]
    for s in res["stages"]:
        detail = (s.get("detail") or "").replace("|", "/").replace("\n", " ")[:160]
        lines.append("| %s | %s | %s | %s |" % (s["stage"], s["status"], s.get("seconds"), detail))
    hb = res.get("harness_bench")
    if hb:
        lines += ["", "## Kernel timings (spo4j_harness bench; copy %.0f GB/s)" % hb.get("copy_gbps", 0), "",
                  "| mode | path | dtype | rows x V | threads | ms | GB/s | % of copy |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in hb.get("rows", []):
            lines.append("| %s | %s | %s | %d x %d | %s | %.3f | %.0f | %.1f%s |" % (
                r["mode"], r.get("path", "checked"), r["dtype"], r["rows"], r["vocab"], r.get("row_threads") or "auto",
                r["median_ms"], r["gbps"], 100 * r["copy_fraction"], "" if r.get("validated", True) else " NOT VALIDATED"))
    if res["train_step"]:
        lines += ["", "## LibTorch C++ training step (fused spo4j kernels vs composite torch ops)", "",
                  "| device | dtype | loss | loss rel err | dL/dlogits rel err | param grad max rel err | unchecked == checked | ok | step ms fused / unchecked / composite |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        def e2(x):  # train_step writes a non-finite error as null
            return "non-finite" if x is None else "%.2e" % x
        for t in res["train_step"]:
            for r in t.get("results", []):
                lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %.2f / %.2f / %.2f |" % (
                    t["device"], t["dtype"], r["loss"], e2(r["loss_rel_err"]), e2(r["grad_logits_rel_err"]),
                    e2(r["param_grad_max_rel_err"]), r["unchecked_bit_identical"], r["ok"], r["step_ms_fused"],
                    r["step_ms_fused_unchecked"], r["step_ms_composite"]))
    fl = res.get("fused_lm_head") or {}
    if fl.get("results"):
        lines += ["", "## Fused LM head (lm_head_bench; median ms of one forward + backward with dL/dh and dL/dW)", "",
                  "pairs: the single pass over chunks of whole pairs of T tokens, each chunk's g from its SPO loss "
                  "(spo4j's loss kernel), as the Java objective trains.", "",
                  "| device | dtype | H x V x N | chunk MiB | fused (recompute) | single pass | pairs (T) | materialised "
                  "| composite | recompute / materialised | single / materialised | pairs / materialised "
                  "| peak extra MiB recompute / single / pairs / materialised / composite |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in fl["results"]:
            by = {x["provider"]: x for x in r.get("results", [])}
            def ms(p):
                return by[p]["median_ms"] if p in by else float("nan")
            def mib(p):
                b = by.get(p, {}).get("peak_extra_bytes", -1)
                return "-" if b is None or b < 0 else "%.0f" % (b / 1048576.0)
            pairs = "%.2f (%d)" % (ms("pairs"), by["pairs"].get("seq_len", 0)) if "pairs" in by else "-"
            lines.append("| %s | %s | %d x %d x %d | %d | %.2f | %.2f | %s | %.2f | %.2f | %.2fx | %.2fx | %.2fx "
                         "| %s / %s / %s / %s / %s |" % (
                r["device"], r["dtype"], r["hidden"], r["vocab"], r["rows"], r["chunk_mb"], ms("fused"), ms("single"),
                pairs, ms("materialised"), ms("composite"), ms("fused") / ms("materialised"),
                ms("single") / ms("materialised"), ms("pairs") / ms("materialised"), mib("fused"), mib("single"),
                mib("pairs"), mib("materialised"), mib("composite")))
    rows = res["torch_compare"]["rows"]
    if rows:
        lines += ["", "## Against PyTorch (copy %s GB/s)" % res["torch_compare"].get("copy_gbps"), "", "```",
                  summarize_rows(rows), "```"]
    if res.get("goals"):
        lines += ["", "## Goals", ""]
        for g in res["goals"]:
            lines.append("- %s, %s V=%d: %s (%s)" % (g["goal"], g["dtype"], g["vocab"], g["value"],
                                                     "met" if g["met"] else "NOT MET"))
    return "\n".join(lines) + "\n"


def write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--stamp", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--markdown")
    p.add_argument("--quiet", action="store_true", help="write the files, print nothing")
    a = p.parse_args(argv)
    res = collect(a.run_dir, a.stamp)
    write(a.out, json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    if a.markdown:
        write(a.markdown, md)
    if not a.quiet:
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
