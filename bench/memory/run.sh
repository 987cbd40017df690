#!/usr/bin/env bash
# Peak memory and speed of one training step on a Qwen2.5-0.5B-shaped model (random bf16
# weights at the real shapes, the real Qwen tokenizer), for the precision / LoRA /
# checkpointing / LM-head options, against train --dry-run's estimate of the same step.
#
# Usage: bench/memory/run.sh [LENGTH=1024] [THREADS=2] [CASES="a b c d e"]
#   needs target/spo4j.jar (mvn -B package -DskipTests), python3 + numpy, and the tokenizer
#   cache (scripts/fetch-tokenizers.sh). Work files go to ${WORK:-/tmp/spo4j-memory}; the
#   results to bench/results/memory/memory-<stamp>.{csv,md}.
# Cases (4 pairs x LENGTH tokens, one optimiser step, spo):
#   a  fp32 full fine-tune, materialised LM head (the path before LoRA/bf16/checkpointing)
#   b  bf16 full (fp32 master weights and AdamW state), materialised head
#   c  bf16 + LoRA r 16, materialised head
#   d  c + activation checkpointing
#   e  d + the fused LM head (spo4j's default head, 256 MiB chunks: the single pass over chunks
#      of pairs while a pair's logits fit, else the recompute regime)
#   f  e with 640 MiB chunks: one pair of 2 x 1024 bf16 rows (622 MB of logits) fits, so
#      LENGTH = 1024 takes the single pass (3 head GEMMs against the recompute's 4)
# A case whose estimate exceeds 85% of this machine's memory is not run (it would be killed
# by the OOM killer, taking the measurement with it); the table reports its estimate.
# Peak = the process's maximum resident set (GNU time %M): loading, the reference pass and
# the step. tokens/s = the step's tokens_per_second from metrics.jsonl.
#   bench/memory/run.sh --reestimate CSV   recomputes a results file's estimate_gib and
#   peak_vs_estimate columns with the current jar's train --dry-run (the measurements stay).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ ${1:-} == --reestimate ]]; then
  CSV="$2"
  MODEL="${WORK:-/tmp/spo4j-memory}/qwen2.5-0.5b"
  [[ -f $MODEL/config.json ]] || MODEL=bench/configs/qwen2.5-0.5b
  python3 - "$CSV" "$MODEL" <<'PY'
import csv, subprocess, sys
path, model = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(path)))
for r in rows:
    cmd = ["java", "-jar", "target/spo4j.jar", "train", "--dry-run", "--model", model, "--batch-size", r["pairs"],
           "--max-length", r["length"], "--max-prompt-length", str(int(r["length"]) // 2), "--threads", r["threads"]]
    cmd += r["options"].split()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    est = next(float(l.split()[1]) for l in out.splitlines() if l.split()[:1] == ["total"])
    r["estimate_gib"] = f"{est:.2f}"
    if r["peak_gib"]:
        r["peak_vs_estimate"] = f"{float(r['peak_gib']) / est:.2f}"
    print(r["case"], r["length"], "estimate", r["estimate_gib"], "peak", r["peak_gib"] or "-", "ratio", r["peak_vs_estimate"] or "-")
with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
PY
  exit 0
fi
LENGTH="${1:-1024}"
THREADS="${2:-2}"
CASES="${3:-a b c d e}"
WORK="${WORK:-/tmp/spo4j-memory}"
JAR=target/spo4j.jar
[[ -f $JAR ]] || { echo "run.sh: $JAR missing: mvn -B package -DskipTests" >&2; exit 1; }
TOK="${SPO4J_TOKENIZER_CACHE:-$HOME/.cache/spo4j/tokenizers}/qwen3"
[[ -f $TOK/tokenizer.json ]] || scripts/fetch-tokenizers.sh
mkdir -p "$WORK"
MODEL="$WORK/qwen2.5-0.5b"
[[ -f $MODEL/model.safetensors ]] || python3 bench/memory/make_model.py bench/configs/qwen2.5-0.5b "$MODEL" "$TOK"
python3 bench/memory/make_data.py "$WORK/prefs.jsonl" 4 900
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT=bench/results/memory
mkdir -p "$OUT"
CSV="$OUT/memory-$STAMP.csv"
MEM_KB=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
echo "case,options,pairs,length,threads,estimate_gib,peak_gib,peak_vs_estimate,tokens_per_second,step_s,wall_s,status" > "$CSV"
export OMP_NUM_THREADS="$THREADS" OMP_WAIT_POLICY=passive THP_MEM_ALLOC_ENABLE=1
for c in $CASES; do
  case $c in
    a) opts="--dtype fp32 --lm-head materialised" ;;
    b) opts="--dtype bf16 --lm-head materialised" ;;
    c) opts="--dtype bf16 --lora-r 16 --lm-head materialised" ;;
    d) opts="--dtype bf16 --lora-r 16 --gradient-checkpointing --lm-head materialised" ;;
    e) opts="--dtype bf16 --lora-r 16 --gradient-checkpointing --lm-head fused" ;;
    f) opts="--dtype bf16 --lora-r 16 --gradient-checkpointing --lm-head fused --lm-head-chunk-mb 640" ;;
    *) echo "run.sh: unknown case $c" >&2; exit 1 ;;
  esac
  common=(--model "$MODEL" --data "$WORK/prefs.jsonl" --batch-size 4 --max-length "$LENGTH"
          --max-prompt-length $((LENGTH / 2)) --threads "$THREADS")
  # shellcheck disable=SC2086
  est=$(java -jar $JAR train --dry-run "${common[@]}" $opts | awk '$1 == "total" {print $2}')
  if awk -v e="$est" -v m="$MEM_KB" 'BEGIN {exit !(e * 1048576 > 0.85 * m)}'; then
    echo "$c,$opts,4,$LENGTH,$THREADS,$est,,,,,,does not fit: estimate above 85% of $((MEM_KB / 1048576)) GiB" >> "$CSV"
    echo "case $c: estimate $est GiB: not run"
    continue
  fi
  run="$WORK/run-$c-$LENGTH"
  start=$(date +%s)
  # shellcheck disable=SC2086
  if /usr/bin/time -f "%M" -o "$WORK/time-$c" java -jar $JAR train "${common[@]}" $opts --max-steps 1 \
      --out "$run" --overwrite > "$WORK/log-$c-$LENGTH.txt" 2>&1; then status=ok; else status="failed (see $WORK/log-$c-$LENGTH.txt)"; fi
  wall=$(( $(date +%s) - start ))
  peak_kb=$(tail -1 "$WORK/time-$c" | tr -dc 0-9)
  read -r tps step_s < <(python3 -c "
import json, sys
rows = [json.loads(l) for l in open('$run/metrics.jsonl')] if '$status' == 'ok' else []
r = rows[-1] if rows else {}
t = r.get('tokens_per_second', float('nan'))
print(t, 4 * 2 * $LENGTH / t if t == t and t > 0 else float('nan'))" 2>/dev/null || echo "nan nan")
  peak=$(awk -v k="$peak_kb" 'BEGIN {printf "%.2f", k / 1048576}')
  ratio=$(awk -v p="$peak" -v e="$est" 'BEGIN {printf "%.2f", p / e}')
  echo "$c,$opts,4,$LENGTH,$THREADS,$est,$peak,$ratio,$tps,$step_s,$wall,$status" >> "$CSV"
  echo "case $c: estimate $est GiB, peak $peak GiB ($ratio x), $tps tokens/s, $status"
done
echo "results: $CSV"
