#!/usr/bin/env python3
"""spo4j CUDA token log-probs against PyTorch, on one GPU.

Loads libspo4j.so with ctypes and times, for rows x V logits in bf16 and fp32:
  spo4j          spo4j_token_logprobs_fwd_cuda / _bwd_cuda (backward in place over the logits;
                 the checked entry points, which synchronise the stream to read their error flag)
  spo4j-unchecked  the _cuda_unchecked entry points (no host synchronisation), which spo4j's
                 trainer uses once it has checked its targets against V
  torch-eager    log_softmax(logits.float(), -1).gather(-1, t) + autograd backward
  torch-compile  the same function under torch.compile (dynamic=False)
in three modes: forward, backward, forwardBackward. Every provider is checked against
float32 PyTorch on a slice of rows before it is timed. Timing: torch.cuda.Event around
each repetition, an L2 flush (a 256 MB+ write) before each, median of the repetitions.
GB/s uses the minimal byte count of the operation for every provider (so it is an
"effective" bandwidth):
  forward          rows*V*elem + rows*16      (logits read; targets, logp, lse)
  backward         2*rows*V*elem + rows*16    (logits read, gradient written; targets, lse, g)
  forwardBackward  3*rows*V*elem + rows*32
and is compared with the device-to-device copy bandwidth measured here (x.copy_(y),
bytes read + written). Peak extra memory: torch.cuda.max_memory_allocated() during the
timed work minus what was allocated before it (inputs included in the baseline).

Writes one JSON file (--out) that also carries the harness check status and the harness
bench results when given (--harness-json, --check-*). Runs without torch only far enough to
write that file with the reason. Driven by bench/gpu/run.sh.

The ABI constants (dtype codes, SPO4J_IGNORE_INDEX, ...) are read at run time from the enum
blocks of native/include/spo4j.h, found relative to this script (../../native/include), so
they are defined once. --print-abi prints them as one JSON object and exits; it needs
neither torch nor a GPU.
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback

HEADER = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                                      "native", "include", "spo4j.h"))


def read_abi(path=HEADER):
    """The enumerators of every enum block of spo4j.h, in header order: {"SPO4J_F32": 0, ...}.

    C's rules: an enumerator without a value is the previous one plus 1 (the first is 0); a
    value is an integer literal or the name of an enumerator before it. Anything else (an
    expression) is an error, not a guess."""
    with open(path) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    abi = {}
    for body in re.findall(r"\benum\s*\w*\s*\{(.*?)\}", text, flags=re.S):
        value = -1
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            m = re.fullmatch(r"([A-Za-z_]\w*)\s*(?:=\s*(.+))?", item, flags=re.S)
            if not m:
                raise ValueError("cannot read the enumerator %r" % item)
            name, init = m.group(1), m.group(2)
            if init is None:
                value += 1
            elif init.strip() in abi:
                value = abi[init.strip()]
            else:
                try:
                    value = int(init.strip().rstrip("uUlL"), 0)
                except ValueError:
                    raise ValueError("%s = %r is not an integer literal" % (name, init.strip())) from None
            abi[name] = value
    return abi


try:
    ABI = read_abi()
    SPO4J_F32, SPO4J_BF16, SPO4J_F16 = ABI["SPO4J_F32"], ABI["SPO4J_BF16"], ABI["SPO4J_F16"]
    IGNORE_INDEX = ABI["SPO4J_IGNORE_INDEX"]
except (OSError, ValueError, KeyError) as _e:
    sys.exit("torch_compare.py: cannot read the ABI constants from %s: %r" % (HEADER, _e))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lib", help="path to libspo4j.so (built with CUDA)")
    p.add_argument("--out", required=False, help="result JSON file to write")
    p.add_argument("--rows", type=int, default=16384)
    p.add_argument("--vocab", default="32768,128256,151936", help="comma-separated V list")
    p.add_argument("--dtypes", default="bf16,f32", help="comma-separated: bf16,f32,f16")
    p.add_argument("--reps", type=int, default=10, help="timed repetitions per case (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--check-rows", type=int, default=256,
                   help="rows compared against float32 PyTorch before timing")
    p.add_argument("--budget-s", type=float, default=240.0,
                   help="wall-clock budget; remaining cases are skipped and recorded")
    p.add_argument("--compile-reserve-s", type=float, default=45.0,
                   help="skip torch.compile for a case when less than this budget is left")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile-only", action="store_true",
                   help="time only torch.compile (run.sh's last stage; the other providers ran before)")
    p.add_argument("--harness-json", help="spo4j_harness bench --json output to embed")
    p.add_argument("--check-status", type=int, help="exit status of spo4j_harness check")
    p.add_argument("--check-summary", help="last line of spo4j_harness check")
    p.add_argument("--note", action="append", default=[], help="free text recorded in the JSON")
    p.add_argument("--record-only", action="store_true",
                   help="write the JSON (check status, harness results, notes) and time nothing")
    p.add_argument("--print-abi", action="store_true",
                   help="print the ABI constants read from native/include/spo4j.h as one JSON object "
                        "and exit (needs neither torch nor a GPU)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="exercise this script without a GPU: torch CPU tensors and the *_cpu kernels, "
                        "wall-clock timing, no memory statistics (use small --rows/--vocab)")
    return p.parse_args(argv)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def nvidia_smi():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                              "clocks.max.mem", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or out.stderr.strip()
    except Exception as e:  # no nvidia-smi: recorded, not fatal
        return "nvidia-smi unavailable: %s" % e


def write_json(path, result):
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def bytes_moved(mode, rows, vocab, elem):
    """Minimal bytes of an operation (see the module docstring)."""
    z = rows * vocab * elem
    if mode == "forward":
        return z + rows * 16
    if mode == "backward":
        return 2 * z + rows * 16
    return 3 * z + rows * 32


def load_lib(path):
    lib = ctypes.CDLL(path)
    vp, i32, i64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
    lib.spo4j_token_logprobs_fwd_cuda.argtypes = [vp, i32, i64, i64, i64, vp, i64, vp, vp, vp, vp]
    lib.spo4j_token_logprobs_fwd_cuda.restype = ctypes.c_int
    lib.spo4j_token_logprobs_bwd_cuda.argtypes = [vp, i32, i64, i64, i64, vp, i64, vp, vp, vp, i64, vp]
    lib.spo4j_token_logprobs_bwd_cuda.restype = ctypes.c_int
    lib.spo4j_token_logprobs_fwd_cuda_unchecked.argtypes = lib.spo4j_token_logprobs_fwd_cuda.argtypes
    lib.spo4j_token_logprobs_fwd_cuda_unchecked.restype = ctypes.c_int
    lib.spo4j_token_logprobs_bwd_cuda_unchecked.argtypes = lib.spo4j_token_logprobs_bwd_cuda.argtypes
    lib.spo4j_token_logprobs_bwd_cuda_unchecked.restype = ctypes.c_int
    lib.spo4j_token_logprobs_fwd_cpu.argtypes = [vp, i32, i64, i64, i64, vp, i64, vp, vp, vp, i32]
    lib.spo4j_token_logprobs_fwd_cpu.restype = ctypes.c_int
    lib.spo4j_token_logprobs_bwd_cpu.argtypes = [vp, i32, i64, i64, i64, vp, i64, vp, vp, vp, i64, i32]
    lib.spo4j_token_logprobs_bwd_cpu.restype = ctypes.c_int
    lib.spo4j_last_error.restype = ctypes.c_char_p
    lib.spo4j_cuda_built.restype = ctypes.c_int
    lib.spo4j_cuda_device_count.restype = ctypes.c_int
    return lib


def summarize(rows):
    """Compact table: one line per dtype x V x mode, providers side by side."""
    keyed = {}
    for r in rows:
        keyed.setdefault((r["dtype"], r["vocab"], r["mode"]), {})[r["provider"]] = r
    lines = ["%-5s %7s %-15s %10s %7s %7s %11s %11s %12s %8s %8s" % (
        "dtype", "V", "mode", "spo4j ms", "GB/s", "%copy", "unchkd ms", "eager ms", "compile ms", "x eager", "x comp")]
    for (dt, v, mode), prov in sorted(keyed.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        s, e, c = prov.get("spo4j"), prov.get("torch-eager"), prov.get("torch-compile")
        su = prov.get("spo4j-unchecked")

        def ms(r):
            return "%.3f" % r["median_ms"] if r and r.get("median_ms") is not None else "-"
        lines.append("%-5s %7d %-15s %10s %7s %7s %11s %11s %12s %8s %8s" % (
            dt, v, mode, ms(s),
            "%.0f" % s["gbps"] if s and s.get("gbps") else "-",
            "%.1f" % (100 * s["copy_fraction"]) if s and s.get("copy_fraction") else "-",
            ms(su), ms(e), ms(c),
            "%.2f" % (e["median_ms"] / s["median_ms"]) if s and e and s.get("median_ms") and e.get("median_ms") else "-",
            "%.2f" % (c["median_ms"] / s["median_ms"]) if s and c and s.get("median_ms") and c.get("median_ms") else "-"))
    return "\n".join(lines)


def goals(rows):
    """The issue's targets, evaluated on what was measured."""
    out = []
    keyed = {}
    for r in rows:
        keyed[(r["dtype"], r["vocab"], r["mode"], r["provider"])] = r
    for (dt, v, mode, prov), r in sorted(keyed.items()):
        if prov != "spo4j" or r.get("median_ms") is None:
            continue
        if mode in ("forward", "backward"):
            frac = r.get("copy_fraction") or 0
            out.append({"goal": "%s >= 0.85 of copy bandwidth" % mode, "dtype": dt, "vocab": v,
                        "value": round(frac, 4), "met": frac >= 0.85})
        else:
            e = keyed.get((dt, v, mode, "torch-eager"))
            c = keyed.get((dt, v, mode, "torch-compile"))
            if e and e.get("median_ms"):
                x = e["median_ms"] / r["median_ms"]
                out.append({"goal": "forwardBackward >= 2x faster than eager", "dtype": dt, "vocab": v,
                            "value": round(x, 3), "met": x >= 2.0})
            if c and c.get("median_ms"):
                x = c["median_ms"] / r["median_ms"]
                out.append({"goal": "forwardBackward no slower than torch.compile", "dtype": dt,
                            "vocab": v, "value": round(x, 3), "met": x >= 1.0})
    return out


class Backend:
    """Where the work runs: CUDA (the real benchmark) or the CPU dry run of this script."""

    def __init__(self, torch, lib, cuda):
        self.torch, self.lib, self.cuda = torch, lib, cuda
        self.device = torch.device("cuda" if cuda else "cpu")

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def time_ms(self, body):
        """Milliseconds of body(): CUDA events on the current stream, else the wall clock."""
        if self.cuda:
            a = self.torch.cuda.Event(enable_timing=True)
            b = self.torch.cuda.Event(enable_timing=True)
            a.record()
            body()
            b.record()
            b.synchronize()
            return a.elapsed_time(b)
        t0 = time.perf_counter()
        body()
        return (time.perf_counter() - t0) * 1e3

    def reset_peak(self):
        if self.cuda:
            self.sync()
            self.torch.cuda.reset_peak_memory_stats()

    def allocated(self):
        return self.torch.cuda.memory_allocated() if self.cuda else 0

    def peak(self):
        return self.torch.cuda.max_memory_allocated() if self.cuda else 0

    def empty_cache(self):
        if self.cuda:
            self.torch.cuda.empty_cache()

    def _check(self, st, what):
        if st != 0:
            raise RuntimeError("spo4j %s status %d: %s" % (what, st, self.lib.spo4j_last_error().decode()))

    def fwd(self, z, code, rows, vocab, t, logp, lse, unchecked=False):
        if self.cuda:
            stream = ctypes.c_void_p(self.torch.cuda.current_stream().cuda_stream)
            f = self.lib.spo4j_token_logprobs_fwd_cuda_unchecked if unchecked else self.lib.spo4j_token_logprobs_fwd_cuda
            st = f(z.data_ptr(), code, rows, vocab, z.stride(0),
                                                        t.data_ptr(), IGNORE_INDEX, logp.data_ptr(),
                                                        lse.data_ptr(), None, stream)
        else:
            st = self.lib.spo4j_token_logprobs_fwd_cpu(z.data_ptr(), code, rows, vocab, z.stride(0),
                                                       t.data_ptr(), IGNORE_INDEX, logp.data_ptr(),
                                                       lse.data_ptr(), None, 2)
        self._check(st, "fwd")

    def bwd_inplace(self, z, code, rows, vocab, t, lse, g, unchecked=False):
        if self.cuda:
            stream = ctypes.c_void_p(self.torch.cuda.current_stream().cuda_stream)
            f = self.lib.spo4j_token_logprobs_bwd_cuda_unchecked if unchecked else self.lib.spo4j_token_logprobs_bwd_cuda
            st = f(z.data_ptr(), code, rows, vocab, z.stride(0),
                                                        t.data_ptr(), IGNORE_INDEX, lse.data_ptr(),
                                                        g.data_ptr(), z.data_ptr(), z.stride(0), stream)
        else:
            st = self.lib.spo4j_token_logprobs_bwd_cpu(z.data_ptr(), code, rows, vocab, z.stride(0),
                                                       t.data_ptr(), IGNORE_INDEX, lse.data_ptr(),
                                                       g.data_ptr(), z.data_ptr(), z.stride(0), 2)
        self._check(st, "bwd")


def run(args, result):
    t_start = time.monotonic()

    def left():
        return args.budget_s - (time.monotonic() - t_start)

    try:
        import torch
    except Exception as e:  # torch missing: record why, still write the file
        result["errors"].append("torch not importable: %r" % (e,))
        return 2
    result["versions"]["torch"] = torch.__version__
    result["versions"]["torch_cuda"] = torch.version.cuda
    cuda = not args.cpu_dry_run
    if cuda and not torch.cuda.is_available():
        result["errors"].append("torch.cuda.is_available() is False")
        return 2
    if not args.lib or not os.path.exists(args.lib):
        result["errors"].append("libspo4j.so not found: %s" % args.lib)
        return 2
    lib = load_lib(args.lib)
    if cuda and (not lib.spo4j_cuda_built() or lib.spo4j_cuda_device_count() < 1):
        result["errors"].append("libspo4j reports cuda_built=%d devices=%d" % (
            lib.spo4j_cuda_built(), lib.spo4j_cuda_device_count()))
        return 2
    be = Backend(torch, lib, cuda)
    dev = be.device
    if cuda:
        result["device"]["torch_name"] = torch.cuda.get_device_name(0)
        props = torch.cuda.get_device_properties(0)
        result["device"]["total_memory_bytes"] = props.total_memory
        result["device"]["sm_count"] = props.multi_processor_count
        l2 = getattr(props, "L2_cache_size", 64 << 20)
        flush = torch.empty(max(256 << 20, 4 * l2), dtype=torch.uint8, device=dev)
    else:
        result["device"]["torch_name"] = "cpu (dry run of the script, timings meaningless)"
        flush = torch.empty(1 << 20, dtype=torch.uint8)

    def timed(prepare, body, reps=None):
        """Median and min ms of body() over reps, each after prepare() and an L2 flush (untimed)."""
        reps = reps or args.reps
        ms = []
        for i in range(args.warmup + reps):
            if prepare:
                prepare()
            flush.fill_(i & 0xff)
            t = be.time_ms(body)
            if i >= args.warmup:
                ms.append(t)
        return statistics.median(ms), min(ms)

    # device-to-device copy bandwidth
    n = (1 << 30) if cuda else (64 << 20)
    x = torch.empty(n, dtype=torch.uint8, device=dev).fill_(1)
    y = torch.empty_like(x)
    copy_ms, _ = timed(None, lambda: y.copy_(x), reps=max(args.reps, 10))
    copy_gbps = 2 * n / (copy_ms * 1e-3) / 1e9
    result["copy_gbps"] = round(copy_gbps, 2)
    del x, y
    print("torch_compare: device-to-device copy %.1f GB/s" % copy_gbps, flush=True)

    def ref_logp(z, t):
        return torch.log_softmax(z.float(), dim=-1).gather(-1, t.unsqueeze(-1)).squeeze(-1)

    compiled = torch.compile(ref_logp, dynamic=False) if not args.no_compile else None
    try:
        import torch._dynamo
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    except Exception:
        pass

    dtypes = {"bf16": (torch.bfloat16, SPO4J_BF16, 2), "f32": (torch.float32, SPO4J_F32, 4),
              "f16": (torch.float16, SPO4J_F16, 2)}
    rows = args.rows
    cases = [(d, int(v)) for d in args.dtypes.split(",") if d for v in args.vocab.split(",") if v]

    class Case:
        """Inputs of one dtype x V case and the float32 truth on a slice of its rows."""

        def __init__(self, dname, vocab):
            self.dname, self.vocab = dname, vocab
            self.tdt, self.code, self.elem = dtypes[dname]
            self.name = "%s %dx%d" % (dname, rows, vocab)
            self.gen = torch.Generator(device=dev).manual_seed(vocab * 7 + self.code)
            self.t = torch.randint(0, vocab, (rows,), device=dev, generator=self.gen)
            self.t[::97] = IGNORE_INDEX  # about 1% ignored rows, as in padded batches
            self.g = torch.rand(rows, device=dev, generator=self.gen) * 2e-3 - 1e-3
            k = min(args.check_rows, rows)
            self.idx = torch.cat([torch.arange(k // 2, device=dev),
                                  torch.arange(rows - (k - k // 2), rows, device=dev)])
            self.logits = None
            self.gtol = 2.0 ** -7 if self.tdt == torch.bfloat16 else 2.0 ** -10 if self.tdt == torch.float16 else 2e-6
            self.gatol = 2.0 ** -24 if self.tdt == torch.float16 else 0.0  # fp16 subnormal gradients

        def fresh_logits(self):
            """New random logits (N(0, 2^2)) and their float32 truth on the slice of rows."""
            self.logits = None
            self.logits = torch.randn(rows, self.vocab, device=dev, dtype=self.tdt, generator=self.gen).mul_(2.0)
            zs = self.logits[self.idx].float().requires_grad_(True)
            ts = self.t[self.idx]
            lp = torch.log_softmax(zs, -1).gather(-1, ts.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            lp = torch.where(ts != IGNORE_INDEX, lp, torch.zeros_like(lp))
            lp.backward(self.g[self.idx])
            self.grad_ref = zs.grad.detach()
            self.lp_ref = lp.detach()

        def logp_err(self, logp_all):
            return float((logp_all.detach()[self.idx] - self.lp_ref).abs().max())

        def grad_err(self, grad_all):
            """Largest error beyond the dtype's rounding, in units of max |g| (1e-3)."""
            gr = grad_all.detach()[self.idx].float()
            err = (gr - self.grad_ref).abs() - self.gtol * self.grad_ref.abs() - self.gatol
            return float(err.max()) / 1e-3

    def run_spo4j(c, unchecked=False):
        c.fresh_logits()
        z, code, vocab, t, g = c.logits, c.code, c.vocab, c.t, c.g
        logp = torch.empty(rows, device=dev)
        lse = torch.empty(rows, device=dev)
        u = unchecked and cuda  # the CPU dry run has no unchecked kernels: same calls there
        be.fwd(z, code, rows, vocab, t, logp, lse, u)
        lp_err = c.logp_err(logp)
        be.bwd_inplace(z, code, rows, vocab, t, lse, g, u)  # in place: z now holds the gradient
        gerr = c.grad_err(z)
        ok = lp_err <= 2e-4 and gerr <= 1e-5
        be.reset_peak()
        base = be.allocated() - 2 * rows * 4  # logp and lse count as extra
        # The in-place backward repeats on its own output: values stay finite and the timing
        # does not depend on them; "backward" recomputes the matching lse first (untimed).
        f_ms = timed(None, lambda: be.fwd(z, code, rows, vocab, t, logp, lse, u))
        b_ms = timed(lambda: be.fwd(z, code, rows, vocab, t, logp, lse, u),
                     lambda: be.bwd_inplace(z, code, rows, vocab, t, lse, g, u))
        fb_ms = timed(None, lambda: (be.fwd(z, code, rows, vocab, t, logp, lse, u),
                                     be.bwd_inplace(z, code, rows, vocab, t, lse, g, u)))
        peak = be.peak() - base
        record(c, "spo4j-unchecked" if unchecked else "spo4j", f_ms, b_ms, fb_ms, peak, ok, lp_err, gerr)

    def run_torch(c, name, fn):
        c.fresh_logits()
        leaf = c.logits.detach().requires_grad_(True)
        mask = c.t != IGNORE_INDEX
        tc = c.t.clamp_min(0)
        g = c.g

        def fwd_only():
            return torch.where(mask, fn(leaf, tc), 0.0)
        out = fwd_only()  # also the compile / warm-up run
        lp_err = c.logp_err(out)
        out.backward(g)
        gerr = c.grad_err(leaf.grad)
        ok = lp_err <= 2e-4 and gerr <= 1e-5
        leaf.grad = None
        del out
        be.reset_peak()
        base = be.allocated()
        holder = {}

        def prep_bwd():
            leaf.grad = None
            holder["out"] = fwd_only()

        def do_fb():
            leaf.grad = None
            fwd_only().backward(g)
        # forward with autograd recording (what training runs); the previous repetition's
        # graph is dropped before the next one starts
        f_ms = timed(holder.clear, lambda: holder.__setitem__("out", fwd_only()))
        holder.clear()
        b_ms = timed(prep_bwd, lambda: holder.pop("out").backward(g))
        fb_ms = timed(None, do_fb)
        peak = be.peak() - base
        leaf.grad = None
        record(c, name, f_ms, b_ms, fb_ms, peak, ok, lp_err, gerr)

    def record(c, provider, f_ms, b_ms, fb_ms, peak, ok, lp_err, gerr):
        for mode, (med, mn) in (("forward", f_ms), ("backward", b_ms), ("forwardBackward", fb_ms)):
            add_row(result, provider, mode, c.dname, rows, c.vocab, c.elem, med, mn, copy_gbps, peak, ok,
                    {"logp_max_abs_err": lp_err, "grad_excess_err_over_g": gerr})
        print("torch_compare: %-16s %-13s fwd %8.3f  bwd %8.3f  fwd+bwd %8.3f ms  peak extra %8.1f MB  check %s" % (
            c.name, provider, f_ms[0], b_ms[0], fb_ms[0], peak / 1e6, "ok" if ok else "FAILED"), flush=True)

    def attempt(cname, provider, fn, reserve):
        """Runs one provider on one case unless the budget is spent; failures are recorded."""
        if left() < reserve:
            result["skipped"].append({"case": cname, "provider": provider,
                                      "reason": "time budget: %.0f s left" % left()})
            return
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:
            oom = type(e).__name__ == "OutOfMemoryError"
            result["errors" if not oom else "skipped"].append(
                {"case": cname, "provider": provider,
                 "reason": ("OOM: %s" % e) if oom else traceback.format_exc(limit=4)})
            print("torch_compare: %s %s failed: %s" % (cname, provider, str(e).splitlines()[0] if str(e) else e),
                  flush=True)
        finally:
            result["case_seconds"]["%s %s" % (cname, provider)] = round(time.monotonic() - t0, 1)
            be.empty_cache()

    result["case_seconds"] = {}
    # Pass 1: spo4j and eager PyTorch on every case; pass 2: torch.compile (compiling is the
    # slow part) while the budget lasts, so that a short budget still gives the first two.
    for dname, vocab in ([] if args.compile_only else cases):
        c = Case(dname, vocab)
        attempt(c.name, "spo4j", lambda: run_spo4j(c), 10)
        if cuda:
            attempt(c.name, "spo4j-unchecked", lambda: run_spo4j(c, True), 10)
        attempt(c.name, "torch-eager", lambda: run_torch(c, "torch-eager", ref_logp), 10)
        c.logits = None
        del c
        be.empty_cache()
    if compiled is not None:
        for dname, vocab in cases:
            c = Case(dname, vocab)
            attempt(c.name, "torch-compile", lambda: run_torch(c, "torch-compile", compiled),
                    args.compile_reserve_s)
            c.logits = None
            del c
            be.empty_cache()
    else:
        result["skipped"].append({"provider": "torch-compile", "reason": "--no-compile"})
    return 0


def add_row(result, provider, mode, dname, rows, vocab, elem, med, mn, copy_gbps, peak, ok, extra):
    b = bytes_moved(mode, rows, vocab, elem)
    gbps = b / (med * 1e-3) / 1e9
    row = {"kernel": "token_logprobs", "provider": provider, "mode": mode, "dtype": dname, "rows": rows,
           "vocab": vocab, "median_ms": round(med, 4), "min_ms": round(mn, 4), "bytes": b,
           "gbps": round(gbps, 1), "copy_fraction": round(gbps / copy_gbps, 4),
           "peak_extra_bytes": int(peak), "correct": bool(ok)}
    row.update(extra)
    result["rows"].append(row)


def main(argv=None):
    args = parse_args(argv)
    if args.print_abi:
        print(json.dumps(ABI))
        return 0
    out = args.out or os.path.join("bench", "results",
                                   "gpu-%s.json" % datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    result = {
        "schema": "spo4j-gpu-bench/1",
        "date": now_iso(),
        "host": platform.node(),
        "device": {"nvidia_smi": nvidia_smi()},
        "versions": {"python": platform.python_version()},
        "config": {"rows": args.rows, "vocab": args.vocab, "dtypes": args.dtypes, "reps": args.reps,
                   "warmup": args.warmup, "budget_s": args.budget_s, "compile": not args.no_compile,
                   "ignore_index": IGNORE_INDEX,
                   "gbps_definition": "minimal bytes of the operation / median time (module docstring)"},
        "notes": args.note,
        "check": {"status": args.check_status, "summary": args.check_summary},
        "harness_bench": None,
        "copy_gbps": None,
        "rows": [],
        "skipped": [],
        "errors": [],
    }
    if args.harness_json and os.path.exists(args.harness_json):
        try:
            with open(args.harness_json) as f:
                result["harness_bench"] = json.load(f)
        except Exception as e:
            result["errors"].append("harness json unreadable: %r" % (e,))
    status = 0

    def terminated(signum, frame):  # a stage timeout: leave through finally, so the JSON is written
        raise SystemExit(124)
    signal.signal(signal.SIGTERM, terminated)
    try:
        if not args.record_only:
            status = run(args, result)
    except Exception:
        result["errors"].append(traceback.format_exc(limit=5))
        status = 1
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
        if status == 124:
            result["errors"].append("terminated (SIGTERM) before every case ran")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the JSON short
        result["goals"] = goals(result["rows"])
        write_json(out, result)
    print("torch_compare: wrote %s" % out)
    if result["rows"]:
        print(summarize(result["rows"]))
    for g in result["goals"]:
        print("goal %-46s %-4s V=%-7d %8s  %s" % (g["goal"], g["dtype"], g["vocab"], g["value"],
                                                 "met" if g["met"] else "NOT MET"))
    for s in result["skipped"]:
        print("skipped:", s)
    for e in result["errors"]:
        text = e if isinstance(e, str) else "%s %s: %s" % (e.get("case"), e.get("provider"), e.get("reason"))
        print("error:", text.strip().splitlines()[-1] if text.strip() else text)
    wrong = [r for r in result["rows"] if not r["correct"]]
    for r in wrong:
        print("check FAILED: %s %s %s V=%d" % (r["provider"], r["mode"], r["dtype"], r["vocab"]))
    if status == 0 and (result["errors"] or wrong):
        status = 1  # a case that failed or computed wrong values is a failed stage, not an "ok" one
    return status


if __name__ == "__main__":
    sys.exit(main())
