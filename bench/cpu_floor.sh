#!/usr/bin/env bash
# The CPU token log-prob kernel against its same-buffer floor: ROUNDS runs of
# `spo4j_harness cpu-ab` (bench/native/token_logprobs_cpu_ab.cpp: the generic and AVX-512 paths
# and the floor passes, interleaved call by call on the same 64-byte aligned buffer, with the
# same threads), then the medians over the rounds of each point's avx512 / floor ratio, with
# their range, over all runs and over the quiet ones (a floor within 1.25x of the point's
# fastest: a neighbour's memory traffic slows the floor more than the kernel). The harness is
# built by `mvn package` (target/native); this script builds it with CMake when it is missing.
#   bench/cpu_floor.sh --from FILE   re-tabulates the runs of an earlier results file
#   bench/cpu_floor.sh [ROUNDS]   (default 3; THREADS default 2; REPS per run default 7;
#                                  ROWS, VOCAB, DTYPE passed on when set; HUGEPAGES=1 puts the
#                                  buffers in 2 MiB pages, as the JMH runs' LibTorch buffers
#                                  are: the floor is then lower, the kernel about as fast)
# Writes bench/results/cpu-floor-<stamp>.md (the per-run tables and the medians).
set -euo pipefail
cd "$(dirname "$0")/.."
summarise() {
  python3 - "$1" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    c = [x.strip() for x in line.strip().strip('|').split('|')]
    if len(c) != 11 or not re.match(r'^\d', c[4]):
        continue
    key = (c[0], c[1], c[2], c[3])
    rows.setdefault(key, []).append((float(c[5]), float(c[9]), float(c[10].rstrip('x'))))
# A run whose floor took more than 1.25x the point's fastest floor ran beside another tenant's
# memory traffic, which slows the streaming floor more than the compute-bound kernel (its
# ratio flatters the kernel): the quiet columns leave such runs out.
print('| mode | dtype | rows x V | threads | avx512 ms (median) | floor ms (median) | avx512 / floor, median of runs | range | quiet runs | avx512 / floor, median of quiet runs | quiet range |')
print('|---|---|---|---|---:|---:|---:|---|---:|---:|---|')
for key, v in rows.items():
    r = [x[2] for x in v]
    best = min(x[1] for x in v)
    q = [x[2] for x in v if x[1] <= 1.25 * best]
    print('| %s | %s | %s | %s | %.1f | %.1f | %.2fx | %.2f-%.2fx | %d of %d | %.2fx | %.2f-%.2fx |' % (
        *key, statistics.median(x[0] for x in v), statistics.median(x[1] for x in v),
        statistics.median(r), min(r), max(r), len(q), len(v), statistics.median(q), min(q), max(q)))
PY
}
if [[ ${1:-} == --from ]]; then
  runs=$(mktemp)
  trap 'rm -f "$runs"' EXIT
  sed -n '/^The runs:/,$p' "$2" > "$runs"
  summarise "$runs"
  exit 0
fi
rounds=${1:-3}
threads=${THREADS:-2}
h=target/native/tests/spo4j_harness
if [[ ! -x $h ]]; then
  cmake -S native -B target/native -DCMAKE_BUILD_TYPE=Release -DSPO4J_CUDA=OFF > /dev/null
  cmake --build target/native -j"$(nproc)" --target spo4j_harness > /dev/null
fi
args=(--threads "$threads" --reps "${REPS:-7}")
[[ -n ${ROWS:-} ]] && args+=(--rows "$ROWS")
[[ -n ${VOCAB:-} ]] && args+=(--vocab "$VOCAB")
[[ -n ${DTYPE:-} ]] && args+=(--dtype "$DTYPE")
pages="4 KiB pages"
if [[ ${HUGEPAGES:-0} == 1 ]]; then
  args+=(--hugepages)
  pages="2 MiB pages (madvise)"
fi
mkdir -p bench/results
out="bench/results/cpu-floor-$(date -u +%Y%m%dT%H%M%SZ).md"
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for k in $(seq 1 "$rounds"); do
  echo "## run $k of $rounds: $h cpu-ab ${args[*]}" >> "$runs"
  OMP_NUM_THREADS=$threads "$h" cpu-ab "${args[@]}" >> "$runs"
  echo >> "$runs"
  echo "done run $k" >&2
done
{
  echo "# CPU token log-probs against the same-buffer floor ($rounds runs, $threads threads, $pages, $(date -u +%F))"
  echo
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores."
  echo
  summarise "$runs"
  echo
  echo "The runs:"
  echo
  cat "$runs"
} > "$out"
cat "$out"
