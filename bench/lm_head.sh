#!/usr/bin/env bash
# The fused LM head at the head shapes real users have, as ratios in one run:
#   LmHeadLogProbsBench (GEMM + token log-probs, forward and backward with dL/dh and dL/dW):
#     fusedHead (recompute, the preference objective's regime), fusedHeadSinglePass (SFT's),
#     materialised (full logits, the fused kernel in place) at Qwen2.5-0.5B's head (896 x 151936,
#     N = 2048 and 8192 rows) and Llama-3-8B's (4096 x 128256, N = 2048), fp32 and bf16; LibTorch's
#     composite only where it fits this machine (N = 2048: at N = 8192 it needs ~3 x 4.6 GiB of
#     fp32 logits, softmax and gradient on top of the inputs)
#   TrainStepBench: one SPO step of a 2-layer Qwen2.5-0.5B-shaped model (V = 151936, tied head,
#     full fine-tuning in fp32), 4 pairs x 512 tokens, fused head (chunk budgets of 256 and 1024
#     MiB: recompute and single pass) vs materialised logits; the report adds each path's peak
#     resident memory
# One call per point and round (no warm-up: every call is 1-20 GEMMs of 0.5-2 TFLOP), ROUNDS
# rounds of the fused/materialised matrix, each a pass over every point, so that the providers
# alternate in time; the table gives each point's median and the median of its per-round ratios
# to the same round's materialised call, with their range. Run it on a quiet machine.
# Usage: bench/lm_head.sh [THREADS=2] [ROUNDS=3]. Writes bench/results/jmh-<stamp>-lmhead-*.{json,md}
# and jmh-<stamp>-trainstep.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
rounds=${2:-3}
export OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=passive THP_MEM_ALLOC_ENABLE=1
mvn -o -q -B test-compile -Dspo4j.cuda=OFF
cp_file=$(mktemp)
mvn -o -q -B dependency:build-classpath -Dmdep.includeScope=test -Dmdep.outputFile="$cp_file"
CP="target/classes:target/test-classes:$(cat "$cp_file")"
rm -f "$cp_file"
mkdir -p bench/results
out="bench/results/jmh-$(date -u +%Y%m%dT%H%M%SZ)"
jmh=(java -cp "$CP" org.openjdk.jmh.Main -f 1 -wi 0 -i 1 -p threads="$threads")
fused=()
for round in $(seq 1 "$rounds"); do
  "${jmh[@]}" LmHeadLogProbsBench -p provider=fusedHead,fusedHeadSinglePass,materialised -p dtype=fp32,bf16 \
    -p shape=896x151936x2048,896x151936x8192,4096x128256x2048 -rf json -rff "$out-lmhead-fused-r$round.json" \
    > "$out-lmhead-fused-r$round.log" 2>&1
  fused+=("$out-lmhead-fused-r$round.json")
done
"${jmh[@]}" LmHeadLogProbsBench -p provider=composite -p dtype=fp32,bf16 -p shape=896x151936x2048,4096x128256x2048 \
  -rf json -rff "$out-lmhead-composite.json" > "$out-lmhead-composite.log" 2>&1
java -cp "$CP" dev.spo4j.bench.BenchReport "${fused[@]}" "$out-lmhead-composite.json" --no-memory
step=(java -cp "$CP" org.openjdk.jmh.Main -f 1 -wi 1 -i 3 -p threads="$threads" TrainStepBench -p impl=fused
  -p model=qwen2.5-2l -p vocab=151936 -p seqLen=512)
# the fused head at the default 256 MiB (recompute: a pair's 622 MB of logits do not fit) and at
# 1024 MiB (the single pass over chunks of one pair), then the materialised logits
"${step[@]}" -p lmHead=fused -p headMb=256,1024 -rf json -rff "$out-trainstep-fused.json" > "$out-trainstep.log" 2>&1
"${step[@]}" -p lmHead=materialised -rf json -rff "$out-trainstep.json" >> "$out-trainstep.log" 2>&1
java -cp "$CP" dev.spo4j.bench.BenchReport "$out-trainstep-fused.json" "$out-trainstep.json"
echo "results: $out-*"
