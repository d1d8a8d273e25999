#!/usr/bin/env bash
# The README's main command (for now): installs, builds, then generates and scores with the tiny
# LLaVA checkpoint shipped in tests/data (random weights, so the text is nonsense: the point is
# the path from an HF checkpoint folder to tokens and log-probs).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
MODEL=tests/data/llava-tiny-s0
PROMPT=$'USER: <image>\nWhat shapes are in the picture? ASSISTANT:'
echo "== p2dpo generate (greedy, 16 tokens)"
./build/p2dpo generate --model "$MODEL" --image "$MODEL/image0.png" --prompt "$PROMPT" --max-new-tokens 16 --json
echo "== p2dpo score"
./build/p2dpo score --model "$MODEL" --image "$MODEL/image0.png" --prompt "$PROMPT" \
  --answer "A yellow square and a green circle." --json
