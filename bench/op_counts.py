#!/usr/bin/env python3
"""Host ops per decoding step and per training step, counted with `--profile` on the CPU.

A GPU step that dispatches N small ops costs at least N times the host's per-op cost, whatever
the GPU does; these counts (on the world model, 4 decoder layers) say how large N is and how the
decoding modes and the training micro-batch change it. Per decoding step the count is split into
the part outside the decoder layers and the part per layer (from the trace: ops between the
first linear of consecutive layers), so it scales to a 7B's 32 layers.

    python3 bench/op_counts.py --p2dpo build/p2dpo --out bench/results/op_counts_cpu.json

Needs only the Python standard library and the built p2dpo (no torch).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def top_level_ops(trace_path):
    """The trace's host ops that no other host op encloses, in time order, with the phase ends."""
    trace = json.load(open(trace_path))
    ops = [e for e in trace["traceEvents"] if e.get("ph") == "X" and e.get("cat") == "op"]
    marks = sorted((e["ts"], e["name"][len("end of "):]) for e in trace["traceEvents"] if e.get("ph") == "i")
    ops.sort(key=lambda e: (e["tid"], e["ts"], -e["dur"]))
    stack, tops = [], []
    for e in ops:
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
            stack.pop()
        if not stack:
            tops.append(e)
        stack.append(e)
    tops.sort(key=lambda e: e["ts"])
    return tops, marks


def decoding_step(trace_path, phase, layers, linears_per_layer=7):
    """One complete decoding step of `phase` (the second; the first follows the prompt's forward)."""
    tops, marks = top_level_ops(trace_path)
    end = next(t for t, name in marks if name == phase)
    start = max([t for t, _ in marks if t < end], default=float("-inf"))
    seq = [e for e in tops if start < e["ts"] <= end]
    # Each step ends with its log-softmax over the vocabulary.
    ends = [i for i, e in enumerate(seq) if e["name"] == "aten::log_softmax"]
    if len(ends) < 2:
        raise SystemExit(f"{trace_path}: fewer than two steps of {phase} in the trace")
    step = seq[ends[0] + 1:ends[1] + 1]
    lin = [i for i, e in enumerate(step) if e["name"] == "aten::linear"]
    firsts = [lin[k] for k in range(0, layers * linears_per_layer, linears_per_layer)]
    per_layer = [firsts[k + 1] - firsts[k] for k in range(len(firsts) - 1)]
    mean_layer = sum(per_layer) / len(per_layer)
    outside = len(step) - mean_layer * layers
    return {"ops": len(step), "per_layer": per_layer, "outside_layers": round(outside, 1),
            "for_32_layers": round(outside + 32 * mean_layer)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--p2dpo", default=os.path.join(REPO, "build", "p2dpo"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model = os.path.join(REPO, "models/world/base")
    layers = json.load(open(os.path.join(model, "config.json")))["text_config"]["num_hidden_layers"]
    res = {"command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]), "model": "models/world/base",
           "decoder_layers": layers, "decoding": {}, "training": {}}
    with tempfile.TemporaryDirectory() as work:
        world = os.path.join(work, "world")
        run([args.p2dpo, "world", "make", "--out", world, "--train", "10", "--prompts", "40", "--eval", "10", "--quiet"])
        base_cfg = open(os.path.join(REPO, "configs/world-pairs.yaml")).read()
        for mode, extra in (("growing_cache", ""), ("frozen_cache", "  decoding:\n    fixed_cache: true\n")):
            cfg = os.path.join(work, f"{mode}.yaml")
            open(cfg, "w").write(base_cfg.rstrip("\n") + "\n" + extra)
            prof = os.path.join(work, f"profile-{mode}")
            run([args.p2dpo, "pairs", "--model", model, "--config", cfg, "--data", os.path.join(world, "prompts/pairs.jsonl"),
                 "--images", world, "--out", os.path.join(work, f"pairs-{mode}"), "--limit", "16", "--quiet",
                 "--profile", prof])
            trace = next(os.path.join(prof, f) for f in os.listdir(prof) if f.endswith(".trace.json"))
            res["decoding"][mode] = {phase: decoding_step(trace, phase, layers)
                                     for phase in ("focus_generation", "contrastive_generation")}
        for mb in (1, 4):
            over = os.path.join(work, f"mb{mb}.yaml")
            open(over, "w").write(f"train:\n  optim:\n    micro_batch_size: {mb}\n    effective_batch: 4\n    max_steps: 2\n")
            prof = os.path.join(work, f"profile-train-mb{mb}")
            run([args.p2dpo, "train", "--config", os.path.join(REPO, "configs/world-train.yaml"), "--config", over,
                 "--model", model, "--pairs", os.path.join(REPO, "tests/data/train/world-pairs"), "--images",
                 os.path.join(REPO, "tests/data/pairs"), "--out", os.path.join(work, f"train-mb{mb}"), "--quiet",
                 "--profile", prof, "--profile-step", "2"])
            summary = json.load(open(os.path.join(prof, "train-step-2.summary.json")))
            res["training"][f"pairs_per_forward_{mb}"] = {
                "step_pairs": 4, "host_ops_by_phase": {p["phase"]: p["host_ops"] for p in summary["phases"]},
                "host_ops_total": summary["total"]["host_ops"]}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    json.dump(res, open(args.out, "w"), indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
