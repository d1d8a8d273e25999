#!/usr/bin/env bash
# Why `p2dpo demo` runs its stages side by side with one thread each: POPE evaluation of the
# shipped world model (640 random-split questions) with OMP_NUM_THREADS=2, with 1, and two
# single-threaded runs at once. Prints JSON (seconds and questions/s; ratios against the
# two-thread run, the old default). Needs a world: ./build/p2dpo world make --out W --train 0
# Usage: bench/demo_threads.sh WORLD_DIR [OUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:?world directory}
OUT=${2:-/dev/stdout}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
N=640
pope() {  # $1 = threads, $2 = out dir
  OMP_NUM_THREADS=$1 ./build/p2dpo eval pope --model models/world/base --images "$W/images/eval" \
    --questions "$W/eval/pope/world_pope_random.json" --prompt-template $'USER: {question}\n<image> ASSISTANT:' \
    --no-answer-suffix --max-new-tokens 24 --batch-size 32 --limit $N --out "$2" --quiet >/dev/null
}
secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
two=$(secs pope 2 "$TMP/t2")
one=$(secs pope 1 "$TMP/t1")
t0=$(date +%s.%N); pope 1 "$TMP/pa" & pope 1 "$TMP/pb" & wait; t1=$(date +%s.%N)
pair=$(echo "$t1 - $t0" | bc -l)
same=$(cmp -s "$TMP/t1/answers/world_pope_random.clean.jsonl" "$TMP/t2/answers/world_pope_random.clean.jsonl" && echo true || echo false)
cat > "$OUT" <<JSON
{
  "benchmark": "POPE answers of models/world/base, $N questions, batch 32",
  "machine": "$(nproc) hardware threads, $(uname -m)",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)",
  "two_threads": {"seconds": $two, "questions_per_s": $(echo "$N / $two" | bc -l)},
  "one_thread": {"seconds": $one, "questions_per_s": $(echo "$N / $one" | bc -l)},
  "two_single_thread_runs_at_once": {"seconds": $pair, "questions_per_s": $(echo "2 * $N / $pair" | bc -l)},
  "throughput_ratio_one_thread_vs_two": $(echo "$two / $one" | bc -l),
  "throughput_ratio_two_runs_vs_one_two_thread_run": $(echo "2 * $two / $pair" | bc -l),
  "answers_identical_1_vs_2_threads": $same
}
JSON
