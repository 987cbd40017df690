#!/usr/bin/env bash
# bench/gpu/run.sh: build, check and time spo4j's CUDA code on one GPU, in one run that fits a
# short GPU lease. For a bare Linux GPU machine with nvcc, CMake, python3 and PyTorch (CUDA);
# no Java, no network. From the repository root:
#
#   bash bench/gpu/run.sh                 # fresh run
#   RESUME=1 bash bench/gpu/run.sh        # rerun: stages already "ok" in $RUN_DIR are skipped
#
# Stages, in order (each logged to $RUN_DIR/<stage>.log, each recording its status in
# $RUN_DIR/stages/<stage>.json, whatever the others did):
#   env            GPU (nvidia-smi: name, compute capability; else torch.cuda's), nvcc, cmake,
#                  python, torch
#   build          cmake -DSPO4J_CUDA=ON of native/ for the GPU found (sm_XY from nvidia-smi's
#                  compute capability; sm_90 when there is none), libspo4j + spo4j_harness
#   train_build    (in the background, beside check) bench/gpu/train_step against the LibTorch
#                  of python3's torch (torch.utils.cmake_prefix_path; else a direct compiler
#                  call with torch.utils.cpp_extension's paths)
#   check          spo4j_harness check: CPU against float64, CUDA against CPU (every kernel
#                  path, checked and unchecked launches, graph capture)
#   bench          spo4j_harness bench: kernel timings (checked / unchecked / graph replay),
#                  GB/s against the device-to-device copy; each shape validated first
#   train_step     the LibTorch C++ training step (SPO, DPO; f32 and bf16): loss and every
#                  parameter gradient, fused spo4j kernels vs composite torch ops
#   lm_head_build  (in the background, with train_build) bench/gpu/lm_head, the same way
#   fused_lm_head  lm_head_bench: the fused LM head (recompute, single pass, and the
#                  objective's pass over chunks of pairs with its per-chunk loss) against the
#                  materialised path and LibTorch's composite at Qwen2.5-0.5B's head (896 x
#                  151936, N 8192) and Llama-3-8B's (4096 x 128256, N 2048), f32 and bf16, each
#                  validated against a float64 composite first
#   torch_eager    torch_compare.py: spo4j (checked, unchecked) vs PyTorch eager, validated first
#   torch_compile  torch_compare.py --compile-only: torch.compile, last, skipped when the
#                  budget left is under COMPILE_MIN_S
# A failed stage does not stop the others: each timing stage validates its own results. After
# every stage bench/gpu/collect.py rewrites ONE JSON, $RESULTS/gpu-<stamp>.json (stages,
# harness timings, training step, comparison rows, goals), and a Markdown summary beside it;
# both are copied to $OUT when that is set (the device tool's output folder), and at the end
# every log and stage record in one $OUT/gpu-<stamp>.logs.tar.gz.
#
# Environment: BUDGET_S (whole run, default 290: under 5 minutes), RUN_DIR (default
# build/gpu-run: state, logs, build trees; ignored by git), RESULTS (default bench/results/gpu),
# RESUME=1, PYTHON (default python3), CUDA_ARCHS (override the architecture, e.g. 90),
# COMPILE_MIN_S (default 60), REPS (torch_compare repetitions, default 10), CHECK_ARGS (extra
# spo4j_harness check arguments, e.g. --quick), TORCH_CMAKE_PREFIX (a LibTorch's CMake prefix
# instead of python's torch: how the script is rehearsed on a machine without a GPU).
# Exit status: 0 every stage ok; 1 a stage failed or timed out;
# 2 no usable GPU (the CPU stages ran: build, check's CPU part, the training step on the CPU
# when a LibTorch was found); 3 not run from the repository root.
set -u -o pipefail
set -a  # every variable below is exported: the stages run as functions in child shells

T0=$(date +%s)
if [ ! -f native/include/spo4j.h ] || [ ! -f bench/gpu/collect.py ]; then
    echo "run.sh: run me from the spo4j repository root (bash bench/gpu/run.sh)" >&2
    exit 3
fi
BUDGET_S=${BUDGET_S:-290}
RUN_DIR=${RUN_DIR:-build/gpu-run}
RESULTS=${RESULTS:-bench/results/gpu}
PYTHON=${PYTHON:-python3}
COMPILE_MIN_S=${COMPILE_MIN_S:-60}
REPS=${REPS:-10}
if [ "${RESUME:-0}" != "1" ]; then  # a fresh run: no stage's status or results from an earlier one
    rm -rf "$RUN_DIR/stages"
    rm -f "$RUN_DIR"/harness-bench.json "$RUN_DIR"/train-step-*.json "$RUN_DIR"/lm-head-*.json \
        "$RUN_DIR"/compare-*.json
fi
mkdir -p "$RUN_DIR/stages" "$RESULTS"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
if [ "${RESUME:-0}" = "1" ] && [ -f "$RUN_DIR/stamp" ]; then
    STAMP=$(cat "$RUN_DIR/stamp")
else
    STAMP=$(date -u +%Y%m%dT%H%M%SZ)
    echo "$STAMP" >"$RUN_DIR/stamp"
fi
exec > >(tee -a "$RUN_DIR/run.log") 2>&1
NPROC=$(nproc 2>/dev/null || echo 4)

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET_S - $(date +%s) + T0 )); }
say() { echo "== [$(elapsed)s] $*"; }

# record NAME STATUS SECONDS DETAIL [ARTIFACT]: one stage's status file (JSON).
record() {
    "$PYTHON" - "$RUN_DIR/stages/$1.json" "$1" "$2" "$3" "$4" "${5:-}" <<'PY'
import json, sys, time
path, name, status, seconds, detail, artifact = sys.argv[1:7]
rec = {"stage": name, "status": status, "seconds": float(seconds), "detail": detail,
       "artifact": artifact or None, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
with open(path + ".tmp", "w") as f:
    json.dump(rec, f, indent=1)
import os
os.replace(path + ".tmp", path)
PY
}

stage_status() { "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$RUN_DIR/stages/$1.json" 2>/dev/null; }

collect() {
    "$PYTHON" bench/gpu/collect.py --run-dir "$RUN_DIR" --stamp "$STAMP" \
        --out "$RESULTS/gpu-$STAMP.json" --markdown "$RESULTS/gpu-$STAMP.md" ${QUIET_COLLECT:+--quiet} \
        || echo "run.sh: collect.py failed (the stage files in $RUN_DIR/stages are intact)"
    if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
        cp -f "$RESULTS/gpu-$STAMP.json" "$RESULTS/gpu-$STAMP.md" "$OUT/" 2>/dev/null || true
    fi
}

# already_ok NAME: on a RESUME run, true when the stage finished "ok" before.
already_ok() {
    [ "${RESUME:-0}" = "1" ] && [ "$(stage_status "$1")" = "ok" ] && { say "$1: ok in an earlier run, skipped"; return 0; }
    return 1
}

# clear_artifacts ARTIFACT: a rerun (RESUME=1) must not show an earlier run's results for a
# stage that fails or is skipped now, so its artifacts (comma-separated names or globs under
# $RUN_DIR) go before it runs or is skipped.
clear_artifacts() {
    local a names=()
    IFS=, read -ra names <<<"$1"  # split on commas only: no glob expanded outside $RUN_DIR
    for a in "${names[@]}"; do rm -f -- "$RUN_DIR"/$a; done
}

# run_stage NAME CAP_S ARTIFACT COMMAND...: runs COMMAND with a timeout of min(CAP_S, budget
# left - 5 s), logs to $RUN_DIR/NAME.log; status ok (0), failed, timeout (124/137), no_gpu (42).
run_stage() {
    local name=$1 cap=$2 artifact=$3
    shift 3
    already_ok "$name" && return 0
    clear_artifacts "$artifact"
    local budget=$(( $(left) - 5 ))
    [ "$budget" -lt "$cap" ] && cap=$budget
    if [ "$cap" -lt 5 ]; then
        record "$name" skipped 0 "time budget spent ($(left)s left of ${BUDGET_S}s)"
        say "$name: skipped (time budget)"
        QUIET_COLLECT=1 collect
        return 0
    fi
    say "$name (up to ${cap}s)"
    local t1=$(date +%s) rc
    # the stage functions are exported (export -f), so a child bash under timeout can run them
    STAGE_CAP=$cap timeout --kill-after=5 "$cap" bash -c '"$@"' stage "$@" >"$RUN_DIR/$name.log" 2>&1
    rc=$?
    local secs=$(( $(date +%s) - t1 )) status=failed
    case $rc in
        0) status=ok ;;
        124|137) status=timeout ;;
        42) status=no_gpu ;;
    esac
    local detail
    detail=$(grep -v '^ok ' "$RUN_DIR/$name.log" | tail -n 3 | tr '\n' ' ' | cut -c1-600)
    record "$name" "$status" "$secs" "exit $rc: $detail" "$artifact"
    say "$name: $status in ${secs}s"
    [ "$status" = ok ] || grep -v '^ok ' "$RUN_DIR/$name.log" | tail -n 15
    QUIET_COLLECT=1 collect
    return 0
}

# ---- env --------------------------------------------------------------------------------
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
fi
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
# not CC: every variable here is exported (set -a), and CMake and Triton read CC as the C compiler
GPU_CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
if [ -z "$GPU_NAME" ] && [ -z "${TORCH_CMAKE_PREFIX:-}" ]; then  # no nvidia-smi here: ask torch
    GPU_INFO=$("$PYTHON" -c 'import torch
if torch.cuda.is_available():
    c = torch.cuda.get_device_capability(0)
    print("%d%d|%s" % (c[0], c[1], torch.cuda.get_device_name(0)))' 2>/dev/null | tail -n 1)
    if [ -n "$GPU_INFO" ]; then
        GPU_CC=${GPU_INFO%%|*}
        GPU_NAME=${GPU_INFO#*|}
    fi
fi
GPU=0
[ -n "$GPU_NAME" ] && GPU=1
ARCH=${CUDA_ARCHS:-${GPU_CC:-90}}
case $ARCH in ''|*[!0-9]*) ARCH=90 ;; esac
say "spo4j GPU run $STAMP: budget ${BUDGET_S}s, gpu: ${GPU_NAME:-none}, sm_$ARCH, $NPROC cores"
"$PYTHON" - "$RUN_DIR/env.json" "$GPU_NAME" "$ARCH" "$GPU" <<'PY'
import json, platform, subprocess, sys
path, gpu_name, arch, gpu = sys.argv[1:5]
def cmd(*a):
    try:
        r = subprocess.run(a, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip()
    except Exception as e:
        return "unavailable: %s" % e
env = {"gpu": gpu_name or None, "cuda_arch": "sm_" + arch, "gpu_visible": gpu == "1",
       "nvidia_smi": cmd("nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.max.mem", "--format=csv,noheader"),
       "nvcc": cmd("nvcc", "--version").splitlines()[-1:] , "cmake": cmd("cmake", "--version").splitlines()[:1],
       "python": platform.python_version(), "host": platform.node(), "cpu_count": __import__("os").cpu_count()}
try:
    import torch
    env["torch"] = torch.__version__
    env["torch_cuda"] = torch.version.cuda
    env["torch_cuda_available"] = bool(torch.cuda.is_available())
except Exception as e:
    env["torch"] = "not importable: %r" % (e,)
json.dump(env, open(path, "w"), indent=1)
print(json.dumps(env))
PY
record env ok "$(elapsed)" "gpu=${GPU_NAME:-none} arch=sm_$ARCH"

# ---- build ------------------------------------------------------------------------------
NATIVE_BUILD=$RUN_DIR/native
HARNESS=$NATIVE_BUILD/tests/spo4j_harness
build_native() {
    cmake -S native -B "$NATIVE_BUILD" -DCMAKE_BUILD_TYPE=Release -DSPO4J_CUDA=ON \
        "-DCMAKE_CUDA_ARCHITECTURES=$ARCH" && cmake --build "$NATIVE_BUILD" -j "$NPROC" &&
        [ -x "$HARNESS" ] && [ -f "$NATIVE_BUILD/libspo4j.so" ]
}
export -f left elapsed say build_native
run_stage build 240 "" build_native
if [ "$(stage_status build)" != ok ]; then
    for s in "check:" "bench:harness-bench.json" "train_build:" "lm_head_build:" \
        "train_step:train-step-f32.json,train-step-bf16.json" "fused_lm_head:lm-head-*.json" \
        "torch_eager:compare-eager.json" "torch_compile:compare-compile.json"; do  # stage:artifacts
        [ "$(stage_status "${s%%:*}")" = ok ] && continue
        clear_artifacts "${s#*:}"
        record "${s%%:*}" skipped 0 "the native build failed"
    done
    collect
    exit 1
fi

# ---- train_build (background) -------------------------------------------------------------
TRAIN_BUILD=$RUN_DIR/train-step
TRAIN_BIN=$TRAIN_BUILD/train_step
LM_HEAD_BUILD=$RUN_DIR/lm-head
LM_HEAD_BIN=$LM_HEAD_BUILD/lm_head_bench
# build_torch_tool DIR BUILD BIN SOURCE: one of bench/gpu's LibTorch C++ tools, against python's
# torch (or TORCH_CMAKE_PREFIX) and the native build.
build_torch_tool() {
    local dir=$1 build=$2 bin=$3 source=$4
    local prefix=${TORCH_CMAKE_PREFIX:-}
    if [ -z "$prefix" ]; then
        prefix=$("$PYTHON" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null) || {
            echo "no LibTorch: python's torch is not importable and TORCH_CMAKE_PREFIX is not set"
            return 42
        }
    fi
    echo "LibTorch CMake prefix: $prefix"
    if cmake -S "$dir" -B "$build" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$prefix" \
            "-DSPO4J_BUILD_DIR=$NATIVE_BUILD" "-DCMAKE_CUDA_ARCHITECTURES=$ARCH" "-DTORCH_CUDA_ARCH_LIST=${ARCH%?}.${ARCH: -1}" &&
        cmake --build "$build" -j "$NPROC"; then
        echo "built with find_package(Torch)"
        return 0
    fi
    # find_package(Torch) can fail on a wheel (CUDA toolkit / cuDNN lookups); the wheel's
    # include and library folders are enough for one translation unit.
    echo "find_package(Torch) failed: direct build from torch.utils.cpp_extension's paths"
    local flags
    flags=$("$PYTHON" - <<'PY'
import torch, torch.utils.cpp_extension as ce
def paths(f):
    try:
        return f(device_type="cuda" if torch.cuda.is_available() else "cpu")
    except TypeError:
        return f(cuda=torch.cuda.is_available())
inc = paths(ce.include_paths)
lib = paths(ce.library_paths)
libs = ["-ltorch", "-ltorch_cpu", "-lc10"]
defs = ["-D_GLIBCXX_USE_CXX11_ABI=%d" % int(torch._C._GLIBCXX_USE_CXX11_ABI)]
if torch.cuda.is_available():
    # libtorch_cuda registers the CUDA backend from static initialisers only: --as-needed (the
    # default on Ubuntu) would drop it, and torch::cuda::is_available() would be false
    libs = ["-Wl,--no-as-needed", "-ltorch_cuda", "-lc10_cuda"] + libs + ["-Wl,--as-needed"]
    defs.append("-DSPO4J_TORCH_CUDA=1")
print(" ".join(defs + ["-I" + p for p in inc] + ["-L" + p for p in lib] + ["-Wl,-rpath," + p for p in lib] + libs))
PY
) || return 1
    mkdir -p "$build"
    # shellcheck disable=SC2086
    g++ -std=c++17 -O2 -Inative/include "$dir/$source" -o "$bin" $flags \
        -L"$NATIVE_BUILD" -lspo4j "-Wl,-rpath,$NATIVE_BUILD"
}
build_train_step() { build_torch_tool bench/gpu/train_step "$TRAIN_BUILD" "$TRAIN_BIN" train_step.cpp; }
build_lm_head() { build_torch_tool bench/gpu/lm_head "$LM_HEAD_BUILD" "$LM_HEAD_BIN" lm_head_bench.cpp; }
export -f build_torch_tool build_train_step build_lm_head
BUILD_PIDS=()
if ! already_ok train_build; then
    ( run_stage train_build 240 "" build_train_step ) &
    BUILD_PIDS+=($!)
fi
if ! already_ok lm_head_build; then
    ( run_stage lm_head_build 240 "" build_lm_head ) &
    BUILD_PIDS+=($!)
fi

# ---- check --------------------------------------------------------------------------------
harness_check() {
    # shellcheck disable=SC2086
    "$HARNESS" check ${CHECK_ARGS:-}
    local rc=$?
    if grep -q "CUDA part skipped" "$RUN_DIR/check.log"; then
        [ "$rc" -eq 0 ] && return 42  # the CPU part passed; no GPU for the rest
    fi
    return $rc
}
export -f harness_check
run_stage check 170 "" harness_check
[ "$(stage_status check)" = no_gpu ] && GPU=0

# ---- bench --------------------------------------------------------------------------------
harness_bench() {
    [ "$GPU" = 1 ] || { echo "no GPU: skipped"; return 42; }
    "$HARNESS" bench --json "$RUN_DIR/harness-bench.json" --vocab 32768,128256 --rows 16384 --reps 10
}
export -f harness_bench
run_stage bench 90 "harness-bench.json" harness_bench

# ---- train_step -----------------------------------------------------------------------------
if [ ${#BUILD_PIDS[@]} -gt 0 ]; then
    say "waiting for train_build and lm_head_build"
    wait "${BUILD_PIDS[@]}"
fi
train_step() {
    [ -x "$TRAIN_BIN" ] || { echo "train_step was not built (see train_build.log)"; return 1; }
    local dev=cpu rc=0
    [ "$GPU" = 1 ] && dev=cuda
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
    "$TRAIN_BIN" --device $dev --dtype f32 --json "$RUN_DIR/train-step-f32.json" || rc=1
    "$TRAIN_BIN" --device $dev --dtype bf16 --json "$RUN_DIR/train-step-bf16.json" || rc=1
    [ "$rc" = 0 ] && [ "$dev" = cpu ] && { echo "no GPU: the step ran on the CPU only"; return 42; }
    return $rc
}
export -f train_step
# run_built BUILD_STAGE NAME CAP_S ARTIFACT COMMAND: run_stage when BUILD_STAGE succeeded, else
# record NAME as skipped with the reason.
run_built() {
    local build=$1 name=$2 status
    status=$(stage_status "$build")
    if [ "$status" = ok ]; then shift 1; run_stage "$@"; return; fi
    clear_artifacts "$4"
    if [ "$status" = no_gpu ]; then
        record "$name" skipped 0 "no LibTorch to build against (see $build)"
    else
        record "$name" skipped 0 "$build did not succeed: $status"
    fi
}
run_built train_build train_step 90 "train-step-f32.json,train-step-bf16.json" train_step

# ---- fused_lm_head ------------------------------------------------------------------------
fused_lm_head() {
    [ -x "$LM_HEAD_BIN" ] || { echo "lm_head_bench was not built (see lm_head_build.log)"; return 1; }
    local rc=0 dt
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
    if [ "$GPU" != 1 ]; then  # the check and timings at a small shape on the CPU, then "no GPU"
        "$LM_HEAD_BIN" --device cpu --dtype f32 --hidden 64 --vocab 4099 --rows 512 --chunk-mb 1 --reps 2 \
            --json "$RUN_DIR/lm-head-cpu-f32.json" || return 1
        echo "no GPU: the head ran on the CPU only"
        return 42
    fi
    for dt in f32 bf16; do
        "$LM_HEAD_BIN" --device cuda --dtype $dt --hidden 896 --vocab 151936 --rows 8192 \
            --json "$RUN_DIR/lm-head-qwen2.5-$dt.json" || rc=1
        "$LM_HEAD_BIN" --device cuda --dtype $dt --hidden 4096 --vocab 128256 --rows 2048 \
            --json "$RUN_DIR/lm-head-llama3-8b-$dt.json" || rc=1
    done
    return $rc
}
export -f fused_lm_head
run_built lm_head_build fused_lm_head 90 "lm-head-*.json" fused_lm_head

# ---- torch_eager, torch_compile ----------------------------------------------------------------
torch_compare() {  # $1 = eager | compile
    [ "$GPU" = 1 ] || { echo "no GPU: skipped"; return 42; }
    local extra=(--no-compile) out=$RUN_DIR/compare-eager.json
    if [ "$1" = compile ]; then extra=(--compile-only); out=$RUN_DIR/compare-compile.json; fi
    # exec: python is then the process timeout waits on, so its SIGTERM (JSON written, exit 124)
    # and its kill reach the comparison itself, not a shell that dies first
    exec "$PYTHON" bench/gpu/torch_compare.py --lib "$NATIVE_BUILD/libspo4j.so" --out "$out" --reps "$REPS" \
        --vocab 32768,128256,151936 --budget-s "$(( ${STAGE_CAP:-$(left)} - 15 ))" "${extra[@]}"
}
export -f torch_compare
run_stage torch_eager 110 "compare-eager.json" torch_compare eager
if [ "$(left)" -ge "$COMPILE_MIN_S" ] || [ "$(stage_status torch_compile)" = ok ]; then
    run_stage torch_compile 200 "compare-compile.json" torch_compare compile
else
    clear_artifacts compare-compile.json
    record torch_compile skipped 0 "time budget: $(left)s left, torch.compile needs ${COMPILE_MIN_S}s (rerun with RESUME=1)"
fi

# ---- result ---------------------------------------------------------------------------------
collect
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then  # the device tool returns few files: the logs in one
    tar -czf "$OUT/gpu-$STAMP.logs.tar.gz" -C "$RUN_DIR" $(cd "$RUN_DIR" && ls -d -- *.log *.json stages 2>/dev/null) \
        2>/dev/null || echo "run.sh: packing the logs into \$OUT failed"
fi
say "done in $(elapsed)s: $RESULTS/gpu-$STAMP.json"
worst=0
for f in "$RUN_DIR"/stages/*.json; do
    case $("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$f") in
        failed|timeout) worst=1 ;;
    esac
done
[ "$worst" = 1 ] && exit 1
[ "$GPU" = 1 ] || exit 2
exit 0
