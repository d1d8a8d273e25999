#!/usr/bin/env bash
# The adapter's precision next to a bf16 model (runtime.lora_precision), on the CPU with the world:
# `p2dpo train --dtype bfloat16` on a pairs run, with the default (autocast: the adapter in bf16
# from fp32 masters, as torch.autocast and DeepSpeed bf16 compute it) and with float32 (PEFT's
# forward without autocast), same seed, same steps. Reports each step's loss and reward accuracies
# both ways and their largest differences: whether the cheaper precision trains the same.
# (Speed is a GPU question: on a GPU it saves activation-sized casts and runs tensor cores;
# bench/gpu's optional train_mb4_lora_fp32 stage times it.)
#
#   bench/lora_precision_world.sh PAIRS_DIR OUT.json [STEPS]
set -euo pipefail
pairs=${1:?pairs dir}; out=${2:?output json}; steps=${3:-24}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'train:\n  runtime:\n    lora_precision: float32\n' > "$tmp/fp32.yaml"
for v in autocast float32; do
  extra=(); [ "$v" = float32 ] && extra=(--config "$tmp/fp32.yaml")
  ./build/p2dpo train --config configs/world-train.yaml "${extra[@]}" --model models/world/base --pairs "$pairs" \
    --out "$tmp/$v" --dtype bfloat16 --max-steps "$steps" --quiet --json > "$tmp/$v.out"
done
python3 - "$tmp" "$out" "$pairs" "$steps" <<'PY'
import datetime, json, os, platform, sys
tmp, out, pairs, steps = sys.argv[1:5]
keys = ("loss", "focus/rewards/accuracies", "robust/rewards/accuracies", "focus/rewards/margins", "grad_norm")
runs = {}
for v in ("autocast", "float32"):
    m = [json.loads(l) for l in open(f"{tmp}/{v}/metrics.jsonl") if l.strip()]
    cfg = json.load(open(f"{tmp}/{v}/config.json"))
    runs[v] = {"lora_precision": cfg.get("config", cfg)["runtime"]["lora_precision"],
               "per_step": {k: [r[k] for r in m] for k in keys}, "train_s": m[-1]["elapsed_s"]}
a, b = runs["autocast"]["per_step"], runs["float32"]["per_step"]
res = {"command": f"bench/lora_precision_world.sh {pairs} {out} {steps}", "date": datetime.date.today().isoformat(),
       "machine": f"{platform.machine()}, {os.cpu_count()} cores", "model": "models/world/base, --dtype bfloat16",
       "runs": runs,
       "max_abs_diff": {k: max(abs(x - y) for x, y in zip(a[k], b[k])) for k in keys},
       "loss_first_last": {v: [runs[v]["per_step"]["loss"][0], runs[v]["per_step"]["loss"][-1]] for v in runs}}
with open(out + ".tmp", "w") as f:
    json.dump(res, f, indent=1)
os.replace(out + ".tmp", out)
print(json.dumps({k: res[k] for k in ("max_abs_diff", "loss_first_last")}, indent=1))
PY
