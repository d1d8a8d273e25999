#!/usr/bin/env python3
"""P2-DPO on one GPU: p2dpo against HF transformers + PEFT, same weights, same inputs, same script.

Stages (each records its result in --out as soon as it ends; a failing stage is recorded and the
next one still runs; stages are skipped once --budget-s would be exceeded):
  models   a random LLaVA-1.5-7B in bf16 (CLIP ViT-L/14-336 + LLaMA-7B shapes, vocab 32064, the
           32k-piece tokenizer of bench/gpu/tokenizer-32k), a random CLIP ViT-L/14-336 CLIPModel for
           CLIPScore, and a small fp32 LLaVA (7B widths, 2 layers) for exact checks; N synthetic
           640x480 images with open-ended questions.
  decode   bench_decode on the 7B at 16 rows and at 1: ms per decoding step with the growing KV cache,
           a frozen one and CUDA graphs over it, each with and without PyTorch's cuDNN attention (same
           process), and whether their greedy tokens agree.
  pairs    `p2dpo pairs` on the 7B (bench/gpu/pairs-bench.yaml: every answer 64 tokens), with its time
           by stage and an op profile of its second batch (`--profile`: host ops and GPU busy share
           per stage); pairs_attn1 (optional) the same with the attention maps one sample at a time;
           pairs_fast with those and CUDA-graph decoding (bench/gpu/pairs-bench-fast.yaml);
           pairs_growing (optional) decoding on growing KV caches stage by stage, as run 6 (frozen
           caches and two fused decoding loops are CUDA's defaults); pairs_unfused (optional) frozen
           caches, stage by stage; pairs_ref4 (optional) reference scoring four samples per call; pairs_cudnn
           (optional) with PyTorch's own choice of attention kernels (cuDNN's on sm90; p2dpo turns
           cuDNN attention off on CUDA by default); pairs_hf_ops (optional) with HF's op order
           (--cuda-fused-ops off: q/k/v in three GEMMs, RMSNorm in eight ops).
  peft     a p2dpo adapter trained on the small model, loaded by `PeftModel.from_pretrained`:
           PEFT's log-probs vs p2dpo's (`score --adapter`), and `p2dpo merge` loaded by HF vs
           PEFT's merge_and_unload.
  train    `p2dpo train` on the 7B (bench/gpu/train-bench.yaml) against HF + PEFT with the same
           loss, batch and lengths (hf_p2dpo.py train): step time and peak GPU memory of each, and
           an op profile of p2dpo's step 2; train_mb4 p2dpo with four pairs per forward and layer
           recomputation (bench/gpu/train-bench-mb4.yaml, the 7B recipe's setting); train_mb4_serial
           the same without the worker thread that builds the next micro-batch's images;
           train_mb4_r26 (optional) recomputing only the first 26 of the 32 layers; train_mb4_cudnn
           (optional) with PyTorch's own choice of attention kernels; train_mb4_lora_fp32 (optional)
           with the adapter computed in fp32 (runtime.lora_precision: float32) instead of bf16 from
           fp32 masters. HF + PEFT's policy forward runs under torch.autocast when ours does.
  hf_pairs the same pair-generation steps with HF transformers (hf_p2dpo.py pairs), with a
           torch.profiler summary of its second batch by stage.
Profile summaries go to profiles.json beside --out (one file: the device tool returns few files).
  ddp      `torchrun --no-python --nproc-per-node 2 p2dpo train` on the small model (two ranks on one
           GPU, c10d Gloo over host copies) against one process with the same effective batch.
Peak GPU memory of each process is sampled with nvidia-smi (CUDA context and allocator cache
included, the same way for both sides); the HF processes also report torch's own peaks.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from run_gpu_bench import GpuMemorySampler, make_model  # noqa: E402


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def make_llava(out_dir, lm_layers, vision_layers, dtype, seed):
    # run_gpu_bench's random LLaVA-1.5 with the 32k tokenizer (<image> 32000, <pad> 32001).
    model = make_model(out_dir, REPO, seed, lm_layers, vision_layers, dtype,
                       tokenizer_dir=os.path.join(HERE, "tokenizer-32k"), image_token=32000, pad_token=32001)
    del model
    torch.cuda.empty_cache()


def make_clip(out_dir, seed):
    from transformers import CLIPConfig, CLIPModel

    world = os.path.join(REPO, "models/world/clip")
    vocab = json.load(open(os.path.join(world, "config.json")))["text_config"]["vocab_size"]
    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                         projection_dim=768, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=336, patch_size=14, hidden_act="quick_gelu", projection_dim=768),
        projection_dim=768)
    # The world CLIP's token ids for its specials, so its tokenizer files fit this random model.
    wcfg = json.load(open(os.path.join(world, "config.json")))
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if k in wcfg.get("text_config", {}):
            setattr(cfg.text_config, k, wcfg["text_config"][k])
    torch.manual_seed(seed)
    CLIPModel(cfg).eval().save_pretrained(out_dir)
    for f in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(world, f), os.path.join(out_dir, f))
    pre = json.load(open(os.path.join(world, "preprocessor_config.json")))
    pre["size"] = {"shortest_edge": 336}
    pre["crop_size"] = {"height": 336, "width": 336}
    json.dump(pre, open(os.path.join(out_dir, "preprocessor_config.json"), "w"), indent=2)


def make_data(work, n, seed):
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    img_dir = os.path.join(work, "images")
    os.makedirs(img_dir, exist_ok=True)
    questions = ["Describe this image in detail.", "What objects are in the picture, and where are they?",
                 "Is there a red circle in the image? Explain what you see.", "What is in the top left corner?",
                 "How many shapes can you see, and what colours are they?",
                 "What is the largest object in the image doing?"]
    with open(os.path.join(work, "data.jsonl"), "w") as f:
        for i in range(n):
            w, h = (640, 480) if i % 3 else (500, 375)
            im = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
            d = ImageDraw.Draw(im)
            for _ in range(rng.randint(3, 8)):
                x, y = rng.randrange(w - 40), rng.randrange(h - 40)
                box = (x, y, min(w, x + rng.randint(20, 200)), min(h, y + rng.randint(20, 200)))
                col = tuple(rng.randrange(256) for _ in range(3))
                (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=col)
            name = f"img{i:03d}.png"
            im.save(os.path.join(img_dir, name))
            f.write(json.dumps({"id": f"s{i:03d}", "image": name, "question": questions[i % len(questions)]}) + "\n")
    return os.path.join(work, "data.jsonl"), img_dir


def run(cmd, sample=True, env=None, timeout=None):
    """Runs a process; returns (exit status, stdout, seconds, peak MiB of that process)."""
    log("$", " ".join(cmd))
    sampler = GpuMemorySampler() if sample else None
    if sampler:
        sampler.start()
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        out += "\n[killed: timeout]"
    secs = time.time() - t0
    peak = None
    if sampler:
        sampler.stop()
        peak = sampler.peak_by_pid.get(str(p.pid))
    if p.returncode != 0:
        log(f"exit status {p.returncode}; stdout tail: {out[-2000:]}")
    return p.returncode, out, secs, peak


def last_json(text):
    # The JSON object printed by --json is the output's last top-level {...} block.
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start + 1
    return json.loads(text[start:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--p2dpo", required=True, help="the CUDA build's p2dpo binary")
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--work", default="/tmp/p2dpo_gpu_p2dpo")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=480, help="skip stages that would start after this")
    ap.add_argument("--bench-decode", help="the CUDA build's bench_decode binary (decode stage)")
    ap.add_argument("--hf-profile", action="store_true",
                    help="torch.profiler on HF's second pair batch (its Python summary takes minutes; off by default)")
    ap.add_argument("--stages", default="models,pairs,pairs_fast,hf_pairs,train,train_mb4,train_mb4_r26,decode")
    args = ap.parse_args()
    T0 = time.time()
    os.makedirs(args.work, exist_ok=True)
    import transformers

    try:
        import peft
        peft_version = peft.__version__
    except Exception as e:  # recorded, the PEFT stages will fail on their own
        peft_version = f"unavailable: {e}"
    res = {"command": " ".join(sys.argv), "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "transformers": transformers.__version__, "peft": peft_version, "stages": {}}

    profiles = {}
    profiles_path = os.path.join(os.path.dirname(os.path.abspath(args.out)), "profiles.json")

    def save():
        json.dump(res, open(args.out + ".tmp", "w"), indent=2)
        os.replace(args.out + ".tmp", args.out)
        if profiles:
            json.dump(profiles, open(profiles_path + ".tmp", "w"), indent=1)
            os.replace(profiles_path + ".tmp", profiles_path)

    def keep_profile(name, folder):
        # The summaries only: a trace of a 7B batch is far larger than the device tool returns.
        if os.path.isdir(folder):
            for f in sorted(os.listdir(folder)):
                if f.endswith(".summary.json"):
                    profiles[f"{name}/{f[:-len('.summary.json')]}"] = json.load(open(os.path.join(folder, f)))

    W = args.work
    M7, CLIP, SMALL = (os.path.join(W, d) for d in ("llava-1.5-7b-random", "clip-vit-l-336-random", "llava-small-fp32"))
    hf = [sys.executable, os.path.join(HERE, "hf_p2dpo.py")]
    p2 = args.p2dpo
    state = {}

    def stage(name, fn, min_left=30):
        if name not in args.stages.split(","):
            return
        left = args.budget_s - (time.time() - T0)
        if left < min_left:
            res["stages"][name] = {"skipped": f"{left:.0f} s of the budget left"}
            log(f"== {name}: skipped ({left:.0f} s left)")
            save()
            return
        log(f"== {name} ({time.time() - T0:.0f} s)")
        t = time.time()
        try:
            r = fn()
        except Exception as e:  # recorded; later stages may still run
            import traceback

            traceback.print_exc()
            r = {"error": f"{type(e).__name__}: {e}"}
        r["stage_wall_s"] = time.time() - t
        res["stages"][name] = r
        save()
        log(f"== {name} done in {r['stage_wall_s']:.1f} s: {json.dumps(r)[:1500]}")

    def models():
        # A second call on the same warm machine reuses the first call's models, data and pairs
        # (the device tool keeps a machine warm between calls; the marker is written last).
        marker = os.path.join(W, "models.done")
        if os.path.exists(marker):
            state["data"], state["images"] = os.path.join(W, "data.jsonl"), os.path.join(W, "images")
            if os.path.exists(os.path.join(W, "ours-pairs", "pairs.jsonl")):
                state["pairs"] = os.path.join(W, "ours-pairs")
            return {"reused": json.load(open(marker)), "pairs_reused": state.get("pairs")}
        t = time.time()
        make_llava(M7, 32, 24, torch.bfloat16, 0)
        t7 = time.time() - t
        make_clip(CLIP, 1)
        if {"peft", "ddp"} & set(args.stages.split(",")):
            make_llava(SMALL, 2, 3, torch.float32, 2)
        state["data"], state["images"] = make_data(W, args.samples, 0)
        made = {"make_7b_s": t7, "files_7b": sorted(os.listdir(M7)), "samples": args.samples}
        json.dump(made, open(marker, "w"))
        return made

    def run_pairs(config, out, profile=None, extra=()):
        return run([p2, "pairs", "--model", M7, "--clip", CLIP, "--config", os.path.join(HERE, config), "--data",
                    state["data"], "--images", state["images"], "--out", out, "--device", "cuda", "--dtype",
                    "bfloat16", "--json", "--quiet"] + (["--profile", profile] if profile else []) + list(extra))

    def decode():
        # At 16 rows (the pairs' batches) and at 1 row (the batch-1 decode that took 86.7 ms a token
        # on run 6 against 14 ms on the H100 before): growing cache with and without PyTorch's cuDNN
        # attention backend, frozen cache, CUDA graphs.
        if not args.bench_decode:
            return {"skipped": "no --bench-decode binary"}
        r = {}
        # Every mode at the pairs' 16 rows; at 1 row only what the batch-1 regression question needs.
        modes = {16: "growing,growing_nocudnn,fixed,fixed_nocudnn,graphs,graphs_nocudnn",
                 1: "growing,growing_nocudnn,fixed_nocudnn"}
        for rows in (16, 1):
            out = os.path.join(W, f"decode-{rows}.json")
            rc, so, secs, peak = run([args.bench_decode, "--model", M7, "--device", "cuda", "--dtype", "bf16",
                                      "--new-tokens", "32", "--repeats", "2", "--long-context", "0", "--rows", str(rows),
                                      "--modes", modes[rows], "--out", out])
            key = "decoding_modes" if rows == 16 else f"decoding_modes_{rows}_row"
            r[key] = {"exit_status": rc, "process_seconds": secs, "peak_gpu_mib_process": peak}
            if rc == 0:
                d = json.load(open(out))
                r[key].update({k: {kk: vv for kk, vv in v.items() if kk != "greedy_tokens"}
                               for k, v in d["decoding_modes"].items()})
                if rows == 16:
                    r["batch1_sdpa_decode_ms"] = d.get("short_sdpa", {}).get("decode_ms_per_token")
        return r

    def pairs():
        out = os.path.join(W, "ours-pairs")
        rc, so, secs, peak = run_pairs("pairs-bench.yaml", out, profile=os.path.join(W, "profile-pairs"))
        keep_profile("pairs", os.path.join(W, "profile-pairs"))
        r = {"exit_status": rc, "process_seconds": secs, "peak_gpu_mib_process": peak}
        if rc != 0:
            # The default settings (frozen caches, fused loops, one attention pass per batch) have
            # never run on a GPU before; run 6's settings still give the later stages their pairs.
            shutil.rmtree(out, ignore_errors=True)
            failed = r
            rc, so, secs, peak = run_pairs("pairs-bench-growing.yaml", out, extra=["--cudnn-attention", "on"])
            r = {"exit_status": rc, "process_seconds": secs, "peak_gpu_mib_process": peak,
                 "config": "pairs-bench-growing.yaml --cudnn-attention on (fallback)", "default_config_failed": failed}
        if rc == 0:
            j = last_json(so)
            r["run"] = j.get("run")
            r["kept"] = j.get("kept")
            first = json.loads(open(os.path.join(out, "pairs.jsonl")).readline())
            r["example"] = {k: first[k] for k in ("focus", "robust", "reference", "clip", "weights", "bbox")}
            state["pairs"] = out
        return r

    def pairs_variant(config, out, extra=()):
        """A pairs run with other cost settings, and how many crops and focus answers equal `pairs`'."""
        rc, so, secs, peak = run_pairs(config, out, extra=extra)
        r = {"exit_status": rc, "process_seconds": secs, "peak_gpu_mib_process": peak}
        if rc == 0:
            r["run"] = last_json(so).get("run")
            if state.get("pairs"):
                a = [json.loads(l) for l in open(os.path.join(state["pairs"], "pairs.jsonl"))]
                b = [json.loads(l) for l in open(os.path.join(out, "pairs.jsonl"))]
                r["same_bbox_as_pairs_stage"] = sum(x["bbox"] == y["bbox"] for x, y in zip(a, b))
                r["same_focus_texts_as_pairs_stage"] = sum(x["focus"] == y["focus"] for x, y in zip(a, b))
                base = (res["stages"].get("pairs", {}).get("run") or {}).get("pairs_per_hour")
                if base and (r["run"] or {}).get("pairs_per_hour"):
                    r["speedup_over_pairs_stage"] = r["run"]["pairs_per_hour"] / base
        return r

    def pairs_attn1():
        return pairs_variant("pairs-bench-attn1.yaml", os.path.join(W, "ours-pairs-attn1"))

    def pairs_growing():
        return pairs_variant("pairs-bench-growing.yaml", os.path.join(W, "ours-pairs-growing"))

    def pairs_ref4():
        return pairs_variant("pairs-bench-ref4.yaml", os.path.join(W, "ours-pairs-ref4"))

    def pairs_unfused():
        return pairs_variant("pairs-bench-unfused.yaml", os.path.join(W, "ours-pairs-unfused"))

    def pairs_cudnn():
        # PyTorch's own choice of attention kernels (cuDNN's on sm90) instead of p2dpo's default on CUDA,
        # which turns cuDNN attention off (its per-shape plans cost host time; models/attention_backend.h).
        return pairs_variant("pairs-bench.yaml", os.path.join(W, "ours-pairs-cudnn"), extra=["--cudnn-attention", "on"])

    def pairs_hf_ops():
        # HF's op order on CUDA (--cuda-fused-ops off: three q/k/v GEMMs, RMSNorm in eight ops): what
        # the fused ops save, and whether the crops and answers change (models/fused_ops.h).
        return pairs_variant("pairs-bench.yaml", os.path.join(W, "ours-pairs-hf-ops"), extra=["--cuda-fused-ops", "off"])

    def pairs_fast():
        # Not profiled: CUPTI and CUDA-graph capture are known to fail together (p2dpo turns graphs
        # off while a profile records), and this stage is here to time the graphs.
        return pairs_variant("pairs-bench-fast.yaml", os.path.join(W, "ours-pairs-fast"))

    def peft_check():
        out = os.path.join(W, "small-train")
        rc, so, secs, _ = run([p2, "train", "--config", os.path.join(HERE, "train-small.yaml"), "--model", SMALL,
                               "--pairs", state["pairs"], "--out", out, "--device", "cuda", "--json", "--quiet"],
                              sample=False)
        r = {"train_exit_status": rc}
        if rc != 0:
            return r
        adapter = os.path.join(out, "adapter")
        first = json.loads(open(os.path.join(state["pairs"], "pairs.jsonl")).readline())
        image = os.path.join(state["images"], first["image"])
        score = [p2, "score", "--model", SMALL, "--device", "cuda", "--image", image, "--prompt",
                 first["prompts"]["P"], "--answer", first["focus"]["chosen"], "--json"]
        scored = {}
        for key, extra in (("base", []), ("adapter", ["--adapter", adapter])):
            rc, so, _, _ = run(score + extra, sample=False)
            if rc != 0:
                r[f"score_{key}_exit_status"] = rc
                return r
            scored[key] = last_json(so)
        json.dump(scored, open(os.path.join(W, "scored.json"), "w"))
        merged = os.path.join(W, "small-merged")
        rc, _, _, _ = run([p2, "merge", "--model", SMALL, "--adapter", adapter, "--out", merged], sample=False)
        r["merge_exit_status"] = rc
        rc, so, _, _ = run(hf + ["peft-check", "--model", SMALL, "--adapter", adapter, "--merged", merged, "--scored",
                                 os.path.join(W, "scored.json"), "--image", image, "--prompt", first["prompts"]["P"], "--out",
                                 os.path.join(W, "peft.json")], sample=False)
        r["peft_check_exit_status"] = rc
        if rc == 0:
            r.update(json.load(open(os.path.join(W, "peft.json"))))
        r["adapter_config"] = json.load(open(os.path.join(adapter, "adapter_config.json")))
        return r

    def ours_train(config, out, profile, extra=()):
        rc, so, secs, peak = run([p2, "train", "--config", os.path.join(HERE, config), "--model", M7,
                                  "--pairs", state["pairs"], "--out", out, "--device", "cuda", "--json", "--quiet",
                                  "--max-steps", str(args.train_steps), "--profile", profile, "--profile-step", "2"] + list(extra))
        ours = {"exit_status": rc, "process_seconds": secs, "peak_gpu_mib_process": peak,
                "note": "step 2 is profiled (its time includes the profiler's overhead)"}
        if rc == 0:
            m = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if l.strip()]
            el = [x["elapsed_s"] for x in m]
            ours["step_seconds"] = [el[0]] + [b - a for a, b in zip(el, el[1:])]
            ours["loss"] = [x["loss"] for x in m]
            ours["tokens_per_step"] = [x["tokens"] for x in m]
            ours["phase_seconds"] = [{k: v for k, v in x.items() if k.startswith("time/")} for x in m]
        return ours

    def steady_median(v):  # steps 3.. (step 1 warms up, step 2 is profiled)
        rest = v[2:] or v[1:] or v
        return sorted(rest)[len(rest) // 2]

    def train():
        out = os.path.join(W, "ours-train")
        ours = ours_train("train-bench.yaml", out, os.path.join(W, "profile-train"))
        keep_profile("train", os.path.join(W, "profile-train"))
        rc, so, secs, peak = run(hf + ["train", "--model", M7, "--pairs", state["pairs"], "--images", state["images"],
                                       "--ours-run", out, "--steps", str(args.train_steps), "--out",
                                       os.path.join(W, "hf-train.json")])
        hfr = {"exit_status": rc, "process_seconds": secs, "peak_gpu_mib_process": peak}
        if rc == 0:
            hfr.update(json.load(open(os.path.join(W, "hf-train.json"))))
        r = {"ours": ours, "hf_peft": hfr}
        if ours.get("step_seconds") and hfr.get("step_seconds"):
            med = lambda v: sorted(v[1:] or v)[len(v[1:] or v) // 2]  # the first step warms up
            r["summary"] = {"ours_step_s": steady_median(ours["step_seconds"]), "hf_peft_step_s": med(hfr["step_seconds"]),
                            "step_rate_ratio": med(hfr["step_seconds"]) / steady_median(ours["step_seconds"]),
                            "ours_peak_gpu_mib": peak_or(ours), "hf_peft_peak_gpu_mib": peak_or(hfr),
                            "hf_peft_lora_precision": hfr.get("lora_precision")}
        return r

    def train_mb4():
        ours = ours_train("train-bench-mb4.yaml", os.path.join(W, "ours-train-mb4"), os.path.join(W, "profile-train-mb4"))
        keep_profile("train_mb4", os.path.join(W, "profile-train-mb4"))
        hf_step = ((res["stages"].get("train") or {}).get("summary") or {}).get("hf_peft_step_s")
        if ours.get("step_seconds") and hf_step:
            ours["summary"] = {"ours_step_s": steady_median(ours["step_seconds"]), "hf_peft_step_s_from_train_stage": hf_step,
                               "step_rate_ratio": hf_step / steady_median(ours["step_seconds"])}
        return ours

    def against_train_mb4(ours, mine, default, speedup):
        # A train_mb4 variant's median step against train_mb4's of this call: speedup = mine / default.
        base = (res["stages"].get("train_mb4") or {}).get("step_seconds")
        if ours.get("step_seconds") and base:
            a, b = steady_median(ours["step_seconds"]), steady_median(base)
            ours["summary"] = {mine: a, default: b, speedup: a / b}
        return ours

    def train_mb4_serial():
        # Without the worker thread that builds the next micro-batch's images: what the prefetch saves.
        ours = ours_train("train-bench-mb4-serial.yaml", os.path.join(W, "ours-train-mb4-serial"), os.path.join(W, "profile-train-mb4-serial"))
        return against_train_mb4(ours, "serial_step_s", "prefetch_step_s", "prefetch_speedup")

    def train_mb4_cudnn():
        # train_mb4 with PyTorch's own choice of attention kernels (cuDNN's on sm90), against p2dpo's
        # default on CUDA (cuDNN attention off).
        ours = ours_train("train-bench-mb4.yaml", os.path.join(W, "ours-train-mb4-cudnn"), os.path.join(W, "profile-train-mb4-cudnn"),
                          extra=["--cudnn-attention", "on"])
        return against_train_mb4(ours, "cudnn_step_s", "default_step_s", "default_speedup_over_cudnn")

    def train_mb4_lora_fp32():
        # train_mb4 with the adapter in fp32 (PEFT without autocast) instead of bf16 from fp32 masters.
        ours = ours_train("train-bench-mb4.yaml", os.path.join(W, "ours-train-mb4-lora-fp32"),
                          os.path.join(W, "profile-train-mb4-lora-fp32"),
                          extra=["--config", os.path.join(HERE, "train-lora-fp32.yaml")])
        return against_train_mb4(ours, "lora_fp32_step_s", "default_step_s", "default_speedup_over_lora_fp32")

    def train_mb4_r26():
        # Only the first 26 of 32 layers recomputed: the step time saved and the memory it costs.
        ours = ours_train("train-bench-mb4-r26.yaml", os.path.join(W, "ours-train-mb4-r26"), os.path.join(W, "profile-train-mb4-r26"))
        if not ours.get("step_seconds"):
            return ours
        mine = steady_median(ours["step_seconds"])
        ours["summary"] = {"ours_step_s": mine}
        all_layers = (res["stages"].get("train_mb4") or {}).get("step_seconds")
        if all_layers:  # the same setting with every layer recomputed, this call
            ours["summary"]["all_layers_step_s"] = steady_median(all_layers)
            ours["summary"]["speedup_over_all_layers"] = steady_median(all_layers) / mine
            ours["summary"]["all_layers_peak_gpu_mib"] = res["stages"]["train_mb4"].get("peak_gpu_mib_process")
        hf = (res["stages"].get("train") or {}).get("summary") or {}
        if hf.get("hf_peft_step_s"):
            ours["summary"].update({"hf_peft_step_s_from_train_stage": hf["hf_peft_step_s"],
                                    "step_rate_ratio": hf["hf_peft_step_s"] / mine,
                                    "hf_peft_peak_gpu_mib_from_train_stage": hf.get("hf_peft_peak_gpu_mib")})
        return ours

    def peak_or(d):
        return d.get("peak_gpu_mib_process")

    def hf_pairs():
        ours = res["stages"].get("pairs", {})
        hf_profile = os.path.join(W, "hf-pairs-profile.json")
        rc, so, secs, peak = run(hf + ["pairs", "--model", M7, "--clip", CLIP, "--data", state["data"], "--images",
                                       state["images"], "--prompts-from", os.path.join(state["pairs"], "pairs.jsonl"),
                                       "--config", os.path.join(state["pairs"], "config.json"), "--out",
                                       os.path.join(W, "hf-pairs.json")] + (["--profile-json", hf_profile] if args.hf_profile else []))
        if os.path.exists(hf_profile):
            profiles["hf_pairs"] = json.load(open(hf_profile))
        r = {"exit_status": rc, "process_seconds": secs, "peak_gpu_mib_process": peak}
        if rc == 0:
            r.update(json.load(open(os.path.join(W, "hf-pairs.json"))))
            o = (ours.get("run") or {})
            if o.get("pairs_per_hour"):
                r["summary"] = {"ours_pairs_per_hour": o["pairs_per_hour"], "hf_pairs_per_hour": r["pairs_per_hour"],
                                "speedup": o["pairs_per_hour"] / r["pairs_per_hour"],
                                "ours_peak_gpu_mib": ours.get("peak_gpu_mib_process"), "hf_peak_gpu_mib": peak,
                                "hours_for_5700_prompts_ours": 5700 / o["pairs_per_hour"]}
                # The CUDA allocator's peaks on both sides (torch.cuda.max_memory_* on HF's): p2dpo's
                # per stage, so the stage that sets the peak is named (by allocated memory: the
                # reserved pool only grows, so every later stage shows its peak too).
                stage_peaks = o.get("stage_peak_gpu_mib") or {}
                if stage_peaks:
                    top = max(stage_peaks, key=lambda k: stage_peaks[k]["allocated"])
                    r["summary"].update({"ours_torch_peak_reserved_mib": max(v["reserved"] for v in stage_peaks.values()),
                                         "ours_torch_peak_allocated_mib": stage_peaks[top]["allocated"],
                                         "ours_peak_stage": top,
                                         "hf_torch_peak_reserved_mib": r.get("peak_reserved_mib"),
                                         "hf_torch_peak_allocated_mib": r.get("peak_allocated_mib")})
                # p2dpo profiles its second batch (and HF too with --hf-profile): the rates without
                # it are the ones to compare; with it they carry the profiler's costs.
                def unprofiled_rate(batch_seconds, n, bsize):
                    if not batch_seconds or len(batch_seconds) < 2:
                        return None
                    rest = [t for i, t in enumerate(batch_seconds) if i != 1]
                    pairs_rest = n - min(bsize, n - bsize)
                    return 3600 * pairs_rest / sum(rest)
                n, bsize = r.get("samples", 0), r.get("batch_size", 8)
                ours_u = unprofiled_rate(o.get("batch_seconds"), n, bsize)
                hf_u = unprofiled_rate(r.get("batch_seconds"), n, bsize)
                if ours_u and hf_u:
                    r["summary"].update({"ours_pairs_per_hour_unprofiled": ours_u, "hf_pairs_per_hour_unprofiled": hf_u,
                                         "speedup_unprofiled": ours_u / hf_u})
                fast_run = res["stages"].get("pairs_fast", {}).get("run") or {}
                fast_u = unprofiled_rate(fast_run.get("batch_seconds"), n, bsize)
                if fast_u and hf_u:
                    r["summary"]["ours_fast_pairs_per_hour_unprofiled"] = fast_u
                    r["summary"]["speedup_fast_unprofiled"] = fast_u / hf_u
                # Steady state: batches 3 on (the first pays one-time costs, the second may be
                # profiled); what 5.7K prompts would see.
                def steady_rate(batch_seconds, bsize):
                    rest = (batch_seconds or [])[2:]
                    return 3600 * bsize * len(rest) / sum(rest) if rest else None
                steady = {k: steady_rate(v, bsize) for k, v in (("ours", o.get("batch_seconds")), ("ours_fast", fast_run.get("batch_seconds")),
                                                                  ("hf", r.get("batch_seconds")))}
                if steady["hf"]:
                    for k in ("ours", "ours_fast"):
                        if steady[k]:
                            r["summary"][f"{k}_pairs_per_hour_steady"] = steady[k]
                            r["summary"][f"speedup_{k}_steady"] = steady[k] / steady["hf"]
                    r["summary"]["hf_pairs_per_hour_steady"] = steady["hf"]
                fast = fast_run.get("pairs_per_hour")
                if fast:
                    r["summary"]["ours_fast_pairs_per_hour"] = fast
                    r["summary"]["speedup_fast"] = fast / r["pairs_per_hour"]
                    r["summary"]["ours_fast_peak_gpu_mib"] = res["stages"]["pairs_fast"].get("peak_gpu_mib_process")
        return r

    def ddp():
        env = dict(os.environ, OMP_NUM_THREADS="4")
        base = ["train", "--config", os.path.join(HERE, "train-small.yaml"), "--model", SMALL, "--pairs",
                state["pairs"], "--device", "cuda", "--json", "--quiet"]
        rc1, _, s1, _ = run([p2] + base + ["--out", os.path.join(W, "ddp1")], sample=False, env=env)
        torchrun = shutil.which("torchrun") or "torchrun"
        rc2, _, s2, _ = run([torchrun, "--no-python", "--nproc-per-node", "2", "--master-port", "29611", p2] + base +
                            ["--out", os.path.join(W, "ddp2")], sample=False, env=env, timeout=240)
        r = {"one_process_exit_status": rc1, "two_process_exit_status": rc2, "seconds": [s1, s2]}
        if rc1 == 0 and rc2 == 0:
            from safetensors.torch import load_file

            a = load_file(os.path.join(W, "ddp1", "adapter", "adapter_model.safetensors"))
            b = load_file(os.path.join(W, "ddp2", "adapter", "adapter_model.safetensors"))
            r["same_keys"] = sorted(a) == sorted(b)
            r["adapter_max_abs_diff"] = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
            r["adapter_max_abs"] = max(a[k].abs().max().item() for k in a)
            m1 = [json.loads(l) for l in open(os.path.join(W, "ddp1", "metrics.jsonl"))]
            m2 = [json.loads(l) for l in open(os.path.join(W, "ddp2", "metrics.jsonl"))]
            r["loss_one_process"] = [x["loss"] for x in m1]
            r["loss_two_processes"] = [x["loss"] for x in m2]
        return r

    # In order of what the open targets need most, so a short budget cuts the least needed.
    stage("models", models, min_left=60)
    stage("pairs", pairs, min_left=60)
    stage("pairs_fast", pairs_fast, min_left=60)
    stage("pairs_attn1", pairs_attn1, min_left=70)
    stage("hf_pairs", hf_pairs, min_left=60)
    stage("train", train, min_left=90)
    stage("train_mb4", train_mb4, min_left=50)
    stage("train_mb4_r26", train_mb4_r26, min_left=40)
    stage("decode", decode, min_left=40)
    stage("train_mb4_serial", train_mb4_serial, min_left=40)
    stage("train_mb4_cudnn", train_mb4_cudnn, min_left=40)
    stage("train_mb4_lora_fp32", train_mb4_lora_fp32, min_left=40)
    stage("pairs_cudnn", pairs_cudnn, min_left=70)
    stage("pairs_growing", pairs_growing, min_left=70)
    stage("pairs_unfused", pairs_unfused, min_left=70)
    stage("pairs_ref4", pairs_ref4, min_left=70)
    stage("pairs_hf_ops", pairs_hf_ops, min_left=70)
    stage("peft", peft_check, min_left=40)
    stage("ddp", ddp, min_left=30)
    res["total_seconds"] = time.time() - T0
    save()
    log("all stages:", json.dumps({k: list(v.keys())[:6] for k, v in res["stages"].items()}))


if __name__ == "__main__":
    main()
