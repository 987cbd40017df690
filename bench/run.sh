#!/usr/bin/env bash
# Kernel benchmarks (JMH) + summary table.
#   bench/run.sh --quick    ~5 minutes on 2 cores: every provider/mode/dtype/size, fewer samples
#   bench/run.sh            the full run (more warm-up and samples)
# Writes bench/results/jmh-<stamp>-{kernels,loss}.json (JMH's format) and the summary table
# as bench/results/jmh-<stamp>-kernels.md.
# JMH_EXTRA passes more JMH options (e.g. JMH_EXTRA='-p vocab=32768').
# Environment: THREADS (default 2) sets the kernel threads, LibTorch's threads and
# OMP_NUM_THREADS; OMP_WAIT_POLICY=passive stops OpenMP spinning on small machines.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
export OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=passive THP_MEM_ALLOC_ENABLE=1
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

mvn -q -B test-compile
cp_file=$(mktemp)
mvn -q -B dependency:build-classpath -Dmdep.includeScope=test -Dmdep.outputFile="$cp_file"
CP="target/classes:target/test-classes:$(cat "$cp_file")"
rm -f "$cp_file"

mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="bench/results/jmh-$stamp"
if [[ $quick == 1 ]]; then
  # One warm-up and three samples per point, each point in its own JVM (-f 1): in one shared
  # JVM the pages freed by a previous point's multi-GB LibTorch outputs were reclaimed while
  # the next point ran, and skewed it (2 cores).
  jmh_args=(-f 1 -wi 1 -i 3 -p threads="$threads")
  loss_args=(-wi 1 -w 1s -i 3 -r 1s)
else
  jmh_args=(-p threads="$threads")
  loss_args=()
fi
java -cp "$CP" org.openjdk.jmh.Main 'dev.spo4j.bench.(StreamBench|TokenLogProbsBench|TrainStepBench)' \
  "${jmh_args[@]}" ${JMH_EXTRA:-} -rf json -rff "$out-kernels.json"
java -cp "$CP" org.openjdk.jmh.Main 'dev.spo4j.bench.PreferenceLossBench' -f 1 \
  "${loss_args[@]}" -rf json -rff "$out-loss.json"
java -Xmx2g -cp "$CP" dev.spo4j.bench.BenchReport "$out-kernels.json" "$out-loss.json"
