#!/usr/bin/env bash
# CPU training benchmark on the world: `p2dpo train` with configs/world-train.yaml on a pairs run,
# prefix sharing on (the default) and off (the baseline), and sharing with activation
# recomputation, same machine, same script. Reports wall time, optimizer steps/s, pairs/s,
# tokens/s and peak RSS of each, and the ratios against the unshared baseline.
#
#   bench/train_world.sh PAIRS_DIR OUT.json [THREADS]
set -euo pipefail
pairs=${1:?pairs dir}; out=${2:?output json}; threads=${3:-1}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() {  # name share_prefixes recompute_layers
  printf '{"train": {"runtime": {"share_prefixes": %s, "recompute_layers": %s}}}\n' "$2" "$3" > "$tmp/$1.json"
  OMP_NUM_THREADS=$threads /usr/bin/time -f '%e %M' -o "$tmp/$1.time" ./build/p2dpo train --config configs/world-train.yaml \
    --config "$tmp/$1.json" --model models/world/base --pairs "$pairs" --out "$tmp/$1" --quiet --json > "$tmp/$1.out"
}
run shared true false
run unshared false false
run recompute true true
python3 - "$tmp" "$out" "$pairs" "$threads" <<'PY'
import json, sys, os, datetime, platform
tmp, out, pairs, threads = sys.argv[1:5]
res = {}
for name in ("shared", "unshared", "recompute"):
    wall, rss_kb = open(f"{tmp}/{name}.time").read().split()
    m = [json.loads(l) for l in open(f"{tmp}/{name}/metrics.jsonl")]
    steps, pairs_n, tokens = len(m), sum(r["pairs"] for r in m), sum(r["tokens"] for r in m)
    train_s = m[-1]["elapsed_s"]
    res[name] = {"wall_s": float(wall), "train_s": train_s, "steps": steps, "steps_per_s": steps / train_s,
                 "pairs_per_s": pairs_n / train_s, "tokens_per_s": tokens / train_s, "peak_rss_mb": int(rss_kb) / 1024,
                 "first_loss": m[0]["loss"], "last_loss": m[-1]["loss"]}
for name in ("shared", "recompute"):
    res[f"ratio_{name}_over_unshared"] = {"pairs_per_s": res[name]["pairs_per_s"] / res["unshared"]["pairs_per_s"],
                                          "peak_rss": res[name]["peak_rss_mb"] / res["unshared"]["peak_rss_mb"]}
res["command"] = f"bench/train_world.sh {pairs} {out} {threads}"
res["threads"] = int(threads)
res["date"] = datetime.date.today().isoformat()
res["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at the end"
with open(out + ".tmp", "w") as f:
    json.dump(res, f, indent=2)
os.replace(out + ".tmp", out)
print(json.dumps(res, indent=2))
PY
