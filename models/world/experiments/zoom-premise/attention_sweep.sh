#!/bin/bash
# Which attention setting makes the adaptive crop find the asked object, and does any make the
# focus winner better than the model's own answer? One `p2dpo pairs` run per setting on the demo's
# 300 prompts, then `p2dpo world pairs-sanity` on all pairs (crop hits) and on the kept ones
# (faithfulness order, winners vs the own answer). Two runs at a time, one thread each.
#   usage: attention_sweep.sh WORLD OUT     (WORLD from `p2dpo world make --out WORLD --seed 0 --train 0`)
# Run from the repository root. The shipped setting (locate prompt, grad, layer 1) is the demo's own
# pairs stage; summarise with summarise_sweep.py OUT.
set -euo pipefail
world=$1 out=$2
exe=./build/p2dpo
mkdir -p "$out"
variant() {  # name attention-prompt method layers|-
  local name=$1 prompt=$2 method=$3 layers=$4
  python3 - "$name" "$prompt" "$method" "$layers" "$out" <<'PY'
import sys
name, prompt, method, layers, out = sys.argv[1:6]
src = open('configs/world-pairs.yaml').read()
assert '    layers: [1]\n' in src and '    enhanced: "{question}"\n' in src
src = src.replace('    enhanced: "{question}"\n', '    enhanced: "{question}"\n    attention: %s\n' % prompt)
src = src.replace('    layers: [1]\n', '    method: %s\n' % method + ('' if layers == '-' else '    layers: [%s]\n' % layers))
open('%s/%s.yaml' % (out, name), 'w').write(src)
PY
  OMP_NUM_THREADS=1 $exe pairs --model models/world/base --clip models/world/clip --config "$out/$name.yaml" \
    --data "$world/prompts/pairs.jsonl" --images "$world" --out "$out/$name" --limit 300 --quiet > "$out/$name.log" 2>&1
  $exe world pairs-sanity --pairs "$out/$name" --world "$world" --kept-only --out "$out/$name-kept.json" --json > /dev/null
  $exe world pairs-sanity --pairs "$out/$name" --world "$world" --out "$out/$name-all.json" --json > /dev/null
}
variant shipped locate grad 1 & variant locate-grad-2 locate grad 2; wait
variant plain-grad-0 plain grad 0 & variant plain-grad-1 plain grad 1; wait
variant plain-grad-2 plain grad 2 & variant plain-mean-1 plain mean 1; wait
variant plain-mean-2 plain mean 2 & variant plain-layermean plain layer_mean -; wait
variant plain-tokimg plain tok_img -
