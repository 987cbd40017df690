#!/usr/bin/env bash
# A/B of the CPU token log-prob kernel's two paths on an AVX-512 machine (native/cpu/simd.h):
# "generic" (SPO4J_CPU_PATH=generic: the per-ISA clones with the generic exp and the two-pass
# forward, i.e. the kernel as it was before the AVX-512 path) against "avx512" (the default
# there). REPS rounds, each running generic then avx512, each run a full JMH run of
# StreamBench (the memory floor, measured in that same run) and TokenLogProbsBench's native
# provider. Then bench/cpu_path_ab.py prints the per-point medians over the rounds, the A/B
# ratio and each path's native / floor ratio (floor as in BenchReport).
#   bench/cpu_path_ab.sh [REPS]      (default 3; THREADS default 1; JMH_EXTRA adds options;
#                                     PATHS="avx512" measures the default path alone: the
#                                     kernel's distance from its floor, without the A/B)
# Writes bench/results/jmh-<stamp>-exp-<path>-r<k>.json and bench/results/jmh-<stamp>-exp.md.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
threads=${THREADS:-1}
export OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=passive THP_MEM_ALLOC_ENABLE=1
if [[ ! -f target/test-classes/META-INF/BenchmarkList ]]; then mvn -o -q -B test-compile; fi
cp_file=$(mktemp)
mvn -o -q -B dependency:build-classpath -Dmdep.includeScope=test -Dmdep.outputFile="$cp_file"
CP="target/classes:target/test-classes:$(cat "$cp_file")"
rm -f "$cp_file"
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="bench/results/jmh-$stamp-exp"
files=()
for k in $(seq 1 "$reps"); do
  for path in ${PATHS:-generic avx512}; do
    f="$out-$path-r$k.json"
    env_path=$([[ $path == generic ]] && echo generic || echo auto)
    SPO4J_CPU_PATH=$env_path java -cp "$CP" org.openjdk.jmh.Main 'dev.spo4j.bench.(StreamBench|TokenLogProbsBench)' \
      -p threads="$threads" -p provider=native ${JMH_EXTRA:-} -rf json -rff "$f" > "$f.log" 2>&1
    files+=("$f")
    echo "done $f"
  done
done
python3 bench/cpu_path_ab.py "${files[@]}" | tee "$out.md"
