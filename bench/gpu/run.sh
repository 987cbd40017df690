#!/usr/bin/env bash
# bench/gpu/run.sh: build, check and time spo4j's CUDA kernels on one GPU, and compare them
# with PyTorch (eager and torch.compile). For a bare Linux GPU machine with nvcc, CMake,
# python3 and PyTorch (CUDA); no Java, no network. Run from the repository root:
#
#   bash bench/gpu/run.sh
#
# Steps (each logged; the whole run aims to finish in under 6 minutes on an H100):
#   1. cmake -DSPO4J_CUDA=ON build of native/ into $BUILD_DIR
#   2. spo4j_harness check   (CUDA against CPU against float64; a failure skips the timings)
#   3. spo4j_harness bench   (bench/native/token_logprobs_bench.cu: cudaEvent timings,
#                             GB/s against the device-to-device copy)
#   4. bench/gpu/torch_compare.py (spo4j vs torch eager vs torch.compile, correctness first)
# Output: ONE JSON file, $OUT/gpu-<UTC date>.json (OUT defaults to bench/results), with the
# check status, the harness timings and the comparison rows; the console log goes beside it
# as gpu-<date>.log. A compact table is printed at the end.
#
# Environment: OUT, BUILD_DIR (default build/gpu-bench), BUDGET_S (whole run, default 340),
# REPS (torch_compare repetitions, default 10), NO_COMPILE=1 (skip torch.compile),
# PYTHON (default python3), CUDA_ARCHS (CMAKE_CUDA_ARCHITECTURES, default from CMake).
# Exit status: 0 all done and checks passed; 1 build or check failed; 2 no GPU / no torch.
set -u -o pipefail

T0=$(date +%s)
if [ ! -f native/include/spo4j.h ] || [ ! -f bench/gpu/torch_compare.py ]; then
    echo "run.sh: run me from the spo4j repository root (bash bench/gpu/run.sh)" >&2
    exit 2
fi
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUTDIR=${OUT:-bench/results}
mkdir -p "$OUTDIR"
RESULT="$OUTDIR/gpu-$STAMP.json"
LOG="$OUTDIR/gpu-$STAMP.log"
BUILD_DIR=${BUILD_DIR:-build/gpu-bench}
BUDGET_S=${BUDGET_S:-340}
REPS=${REPS:-10}
PYTHON=${PYTHON:-python3}
exec > >(tee -a "$LOG") 2>&1

elapsed() { echo $(( $(date +%s) - T0 )); }
say() { echo "== [$(elapsed)s] $*"; }

# Writes the result JSON without timings (build failure, check failure, no GPU).
record_only() {  # $1 = exit status to return, rest = notes
    local status=$1; shift
    local notes=()
    for n in "$@"; do notes+=(--note "$n"); done
    "$PYTHON" bench/gpu/torch_compare.py --record-only --out "$RESULT" \
        ${CHECK_STATUS:+--check-status "$CHECK_STATUS"} ${CHECK_SUMMARY:+--check-summary "$CHECK_SUMMARY"} \
        ${HARNESS_JSON:+--harness-json "$HARNESS_JSON"} "${notes[@]}" \
        || echo "run.sh: could not write $RESULT"
    say "result: $RESULT (log: $LOG)"
    exit "$status"
}

CHECK_STATUS=""; CHECK_SUMMARY=""; HARNESS_JSON=""
say "spo4j GPU benchmark, $(date -u)"
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
fi
echo "nvcc:   $(nvcc --version 2>/dev/null | tail -n 2 | head -n 1 || echo missing)"
echo "cmake:  $(cmake --version 2>/dev/null | head -n 1 || echo missing)"
echo "python: $("$PYTHON" --version 2>&1)"
echo "gpu:    $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi: none')"

# ---- 1. build ---------------------------------------------------------------------------
say "configure + build ($BUILD_DIR)"
CMAKE_ARGS=(-S native -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSPO4J_CUDA=ON)
[ -n "${CUDA_ARCHS:-}" ] && CMAKE_ARGS+=("-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHS")
mkdir -p "$BUILD_DIR"
if ! cmake "${CMAKE_ARGS[@]}" >"$BUILD_DIR/configure.log" 2>&1; then
    tail -n 30 "$BUILD_DIR/configure.log"
    record_only 1 "cmake configure failed"
fi
grep "spo4j:" "$BUILD_DIR/configure.log"
if ! cmake --build "$BUILD_DIR" -j "$(nproc)" 2>&1 | tail -n 25; then
    record_only 1 "build failed"
fi
LIB="$BUILD_DIR/libspo4j.so"
HARNESS="$BUILD_DIR/tests/spo4j_harness"
if [ ! -f "$LIB" ] || [ ! -x "$HARNESS" ]; then
    record_only 1 "build produced no $LIB or $HARNESS"
fi
say "built in $(elapsed)s"

# ---- 2. check ---------------------------------------------------------------------------
say "spo4j_harness check"
timeout 240 "$HARNESS" check >"$BUILD_DIR/check.log" 2>&1
CHECK_STATUS=$?
grep -v '^ok ' "$BUILD_DIR/check.log" | tail -n 40
CHECK_SUMMARY=$(tail -n 1 "$BUILD_DIR/check.log")
cp "$BUILD_DIR/check.log" "$OUTDIR/gpu-$STAMP.check.log" 2>/dev/null || true
say "check: status $CHECK_STATUS, $CHECK_SUMMARY"
if grep -q "CUDA part skipped" "$BUILD_DIR/check.log"; then
    echo "run.sh: no usable CUDA GPU here: $(grep -m1 'CUDA part skipped' "$BUILD_DIR/check.log")"
    record_only 2 "no usable CUDA GPU: the CUDA checks and all timings were skipped"
fi
if [ "$CHECK_STATUS" -ne 0 ]; then
    echo "run.sh: the harness check failed: timings skipped (see $OUTDIR/gpu-$STAMP.check.log)"
    record_only 1 "harness check failed: timings skipped"
fi

# ---- 3. harness bench -------------------------------------------------------------------
say "spo4j_harness bench"
HARNESS_JSON="$BUILD_DIR/harness-bench.json"
rm -f "$HARNESS_JSON"
if ! timeout 120 "$HARNESS" bench --json "$HARNESS_JSON"; then
    echo "run.sh: harness bench failed or timed out (continuing with the comparison)"
fi

# ---- 4. PyTorch comparison ----------------------------------------------------------------
LEFT=$(( BUDGET_S - $(elapsed) - 20 ))
if [ "$LEFT" -lt 30 ]; then
    record_only 0 "time budget spent before the PyTorch comparison"
fi
say "torch_compare.py (budget ${LEFT}s)"
TC_ARGS=(--lib "$LIB" --out "$RESULT" --reps "$REPS" --budget-s "$LEFT"
         --check-status "$CHECK_STATUS" --check-summary "$CHECK_SUMMARY" --harness-json "$HARNESS_JSON"
         --note "run.sh total budget ${BUDGET_S}s")
[ "${NO_COMPILE:-0}" = "1" ] && TC_ARGS+=(--no-compile)
"$PYTHON" bench/gpu/torch_compare.py "${TC_ARGS[@]}"
TC_STATUS=$?
if [ -f "$HARNESS_JSON" ]; then
    echo "harness bench (spo4j_harness, cudaEvents around each call, L2 flushed):"
    "$PYTHON" - "$HARNESS_JSON" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("  %s, copy %.0f GB/s" % (d.get("device"), d.get("copy_gbps", 0)))
for r in d.get("rows", []):
    print("  %-16s %-4s %6d x %-7d threads %-4s %8.3f ms %7.0f GB/s %6.1f%% of copy%s" % (
        r["mode"], r["dtype"], r["rows"], r["vocab"], r.get("row_threads") or "auto", r["median_ms"],
        r["gbps"], 100 * r["copy_fraction"], "" if r.get("validated", True) else "  NOT VALIDATED"))
PY
fi
say "done in $(elapsed)s; result: $RESULT (log: $LOG)"
if [ "$TC_STATUS" -ne 0 ]; then exit 2; fi
exit 0
