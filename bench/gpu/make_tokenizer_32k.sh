#!/bin/bash
# Makes bench/gpu/tokenizer-32k: a LLaMA-style SentencePiece BPE tokenizer with LLaVA-1.5's sizes
# (32000 pieces incl. 3 specials and 256 byte pieces, <image> = 32000, <pad> = 32001), trained by
# `p2dpo world train-tokenizer` on a synthetic corpus of pseudo-words. The random LLaVA-1.5-7B of the
# GPU benchmarks needs one whose every id decodes to text: with a small tokenizer most generated
# ids would be LM padding rows, answers would decode to almost nothing and training lengths would be
# unrealistic. No real tokenizer can be fetched here (no model hub).
#   bench/gpu/make_tokenizer_32k.sh [P2DPO_BINARY]      (about a minute on an idle core; rerun on
#   2026-11-27, it rewrote the committed files byte for byte)
set -euo pipefail
cd "$(dirname "$0")/../.."
P2DPO=${1:-build/p2dpo}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/text" "$work/train"
echo '[]' > "$work/train/conversations.json"
python3 - "$work/text/corpus.txt" <<'PY'
import random, sys
random.seed(0)
syl = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "sh", "ch", "qu", "st", "tr", "pl", "gr",
                                                             "an", "en", "on", "er", "in", "ly", "ed", "ing"]
words = set()
while len(words) < 60000:
    words.add("".join(random.choice(syl) for _ in range(random.randint(1, 5))))
words = sorted(words)
random.shuffle(words)
weights = [1.0 / (i + 1) ** 0.8 for i in range(len(words))]
lines = []
for _ in range(120000):
    s = " ".join(random.choices(words, weights=weights, k=random.randint(5, 20)))
    s = s[0].upper() + s[1:] + random.choice([".", ",", "?", "!", ""])
    if random.random() < 0.2:
        s += " " + str(random.randint(0, 9999))
    lines.append(s)
for i in range(0, len(words), 15):
    lines.append(" ".join(words[i:i + 15]) + ".")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
"$P2DPO" world train-tokenizer --world "$work" --out "$work/tok" --vocab-size 32000
mkdir -p bench/gpu/tokenizer-32k
cp "$work"/tok/* bench/gpu/tokenizer-32k/
