#!/usr/bin/env bash
# The README's main command (until `p2dpo demo` lands): installs, builds, then runs P2-DPO end to
# end on the embedded world with its shipped base model and CLIP, on the 20 world prompts in
# tests/data/pairs: the model makes its own preference pairs, a LoRA adapter is trained on them
# with the P2-DPO objective, and the pairs' implicit preference strength is measured before and
# after training. Output goes to quickstart-run/ (rerunning resumes / refreshes it).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
OUT=${OUT:-quickstart-run}
BASE=models/world/base
mkdir -p "$OUT"
echo "== 1. p2dpo pairs: attention crop, erased/noisy views, focus + robustness pairs, filter, CLIPScore weights"
./build/p2dpo pairs --model "$BASE" --clip models/world/clip --config configs/world-pairs.yaml \
  --data tests/data/pairs/prompts.jsonl --images tests/data/pairs --out "$OUT/pairs" --quiet > "$OUT/pairs-summary.txt"
grep -E '^(samples|kept|retention):' "$OUT/pairs-summary.txt"
echo "== 2. p2dpo train: LoRA with DPO + calibration + robustness DPO, dynamic deficit weights"
rm -rf "$OUT/train"
./build/p2dpo train --model "$BASE" --config configs/world-train.yaml --pairs "$OUT/pairs" \
  --images tests/data/pairs --out "$OUT/train" --quiet > "$OUT/train-summary.txt"
grep -E '^(steps_done|first_loss|last_loss):' "$OUT/train-summary.txt"
echo "== 3. p2dpo eval ips: preference strength of the pairs, base vs base + adapter (Table 3)"
./build/p2dpo eval ips --model "$BASE" --pairs "$OUT/pairs" --images tests/data/pairs --quiet
./build/p2dpo eval ips --model "$BASE" --adapter "$OUT/train/adapter" --pairs "$OUT/pairs" \
  --images tests/data/pairs --quiet
echo "Run folder: $OUT/ (pairs/stats.json, pairs/heatmaps/, train/metrics.jsonl, train/adapter/ in PEFT layout)"
