#!/usr/bin/env python3
"""The HF side of the P2-DPO GPU benchmarks: the same steps as `p2dpo pairs` and `p2dpo train`,
written the way a transformers + PEFT user would write them (ViCrop's gradient attention through
`output_attentions`, `generate` for the greedy and sampled answers, a hand-written loop for
contrastive amplification, padded batches for scoring, a TRL-style concatenated forward with the
reference computed under `disable_adapter()` every step for training).

Run as a separate process by bench/gpu/bench_p2dpo_gpu.py, so each side's GPU memory is sampled
alone:
    hf_p2dpo.py pairs --model DIR --clip DIR --data FILE --images DIR --prompts-from OURS/pairs.jsonl --out FILE.json
    hf_p2dpo.py train --model DIR --pairs OURS_PAIRS_DIR --images DIR --out FILE.json
    hf_p2dpo.py peft-check --model DIR --adapter DIR --merged DIR --scored FILE.json --image FILE --out FILE.json

Prompt strings are read from p2dpo's own records (same text on both sides); everything that costs
GPU time (attention, crops, views, generation, scoring, CLIP, loss) is computed here.
Reads no network.
"""
import argparse
import json
import math
import os
import sys
import time
import zlib

import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_TOKENS = 576  # LLaVA-1.5: (336 / 14)^2


def log(*a):
    print(time.strftime("%H:%M:%S"), "[hf]", *a, flush=True)


def sync():
    torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------
# Loading


def load_llava(model_dir, dtype):
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    return model.to("cuda").eval()


def load_side(model_dir, dtype):
    """The HF model with its tokenizer, image processor and pad id, as both benchmarks use them."""
    model = load_llava(model_dir, dtype)
    tok = Tokenizer(model_dir, image_token_id(model))
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    return model, tok, image_processor(model_dir), pad


def image_token_id(model):
    cfg = model.config
    for name in ("image_token_id", "image_token_index"):
        v = getattr(cfg, name, None)
        if v is not None:
            return int(v)
    raise RuntimeError("config has no image token id")


class Tokenizer:
    """HF's tokenizer for the checkpoint; image placeholders expanded to 576 ids each."""

    def __init__(self, model_dir, image_id):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.image_id = image_id
        self.eos = self.tok.eos_token_id if self.tok.eos_token_id is not None else 2

    def prompt(self, text):
        ids = self.tok(text, add_special_tokens=True)["input_ids"]
        out = []
        for t in ids:
            out.extend([self.image_id] * IMAGE_TOKENS if t == self.image_id else [t])
        return out

    def answer(self, prompt_text, answer_text):
        # As p2dpo's response_tokens: the answer's ids after the prompt's, then EOS.
        full = self.tok(prompt_text + " " + answer_text, add_special_tokens=True)["input_ids"]
        head = self.tok(prompt_text, add_special_tokens=True)["input_ids"]
        return full[len(head):] + [self.eos]

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=True).strip()


def image_processor(model_dir):
    from transformers import AutoImageProcessor

    # transformers 5: the PIL backend is the one that matches CLIP's original preprocessing.
    try:
        return AutoImageProcessor.from_pretrained(model_dir, backend="pil")
    except TypeError:
        return AutoImageProcessor.from_pretrained(model_dir)


def features(out):
    # transformers 5 returns BaseModelOutputWithPooling from get_*_features; 4.x a tensor.
    return out if torch.is_tensor(out) else out.pooler_output


def pixels(proc, images):
    return proc(images=images, return_tensors="pt")["pixel_values"]


# --------------------------------------------------------------------------------------------
# Views (method.md §2-4): crop, erase with the mean colour, diffusion noise at step 600


def adaptive_crop(att, width, height, base=336.0, ratios=(1.0, 1.2, 1.4, 1.6, 1.8, 2.0)):
    """ViCrop / P2-DPO Algorithm 1 on a [rows, cols] map (CPU float64)."""
    rows, cols = att.shape
    bw, bh = width / cols, height / rows
    best = None
    for ratio in ratios:
        nw = max(min(int(base * ratio / bw), cols), 1)
        nh = max(min(int(base * ratio / bh), rows), 1)
        if nw >= cols and nh >= rows:
            if ratio == 1.0:
                return (0, 0, width, height)
            continue
        slide = F.avg_pool2d(att[None, None], (nh, nw), stride=1)[0, 0] * (nw * nh)
        sy, sx = slide.shape
        flat = slide.t().reshape(-1)  # x outer, y inner
        k = int(torch.argmax(flat))
        px, py = k // sy, k % sy
        m = slide[py, px].item()
        adj = [slide[py, px - 1].item()] if px > 0 else []
        adj += [slide[py, px + 1].item()] if px < sx - 1 else []
        adj += [slide[py - 1, px].item()] if py > 0 else []
        adj += [slide[py + 1, px].item()] if py < sy - 1 else []
        d = (m - (sum(adj) / len(adj) if adj else 0.0)) / (nw * nh)
        if best is None or d > best[0]:
            best = (d, ratio, px, py, nw, nh)
    if best is None:
        return (0, 0, width, height)
    _, ratio, px, py, nw, nh = best
    half_w, half_h = (base * ratio) // 2, (base * ratio) // 2
    xc = min(max(int(px * bw + bw * nw / 2), half_w), width - half_w)
    yc = min(max(int(py * bh + bh * nh / 2), half_h), height - half_h)
    x1, y1 = max(0, xc - half_w), max(0, yc - half_h)
    x2, y2 = min(width, xc + half_w), min(height, yc + half_h)
    return (int(round(x1)), int(round(y1)), max(int(round(x2)), int(round(x1)) + 1), max(int(round(y2)), int(round(y1)) + 1))


def erase(img, box):
    out = img.copy()
    stat = img.resize((1, 1), Image.BOX).getpixel((0, 0))
    out.paste(tuple(int(c) for c in stat), box)
    return out


def alpha_bar(step):
    t = torch.linspace(-6, 6, 1000, dtype=torch.float64)
    betas = torch.sigmoid(t) * (0.5e-2 - 1e-5) + 1e-5
    return torch.cumprod(1 - betas, 0)[step].item()


def diffusion_noise(px, step, seed):
    ab = alpha_bar(step)
    g = torch.Generator().manual_seed(seed % (2**63))
    eps = torch.randn(px.shape, generator=g, dtype=torch.float32)
    return math.sqrt(ab) * px + math.sqrt(1 - ab) * eps


# --------------------------------------------------------------------------------------------
# Model steps


def left_pad(seqs, pad):
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, L - len(s):] = torch.tensor(s)
        mask[i, L - len(s):] = 1
    return ids.cuda(), mask.cuda()


def grad_attention(model, ids, px, layer, image_id):
    """ViCrop grad_att: attention at `layer` from the last prompt token, weighted by relu(d logp / d att)."""
    model.set_attn_implementation("eager")
    try:
        ids_t = torch.tensor([ids], device="cuda")
        with torch.enable_grad():
            out = model(input_ids=ids_t, pixel_values=px, output_attentions=True, use_cache=False)
            last = out.logits[0, -1].float()
            target = int(last.argmax())
            logp = torch.log_softmax(last, -1)[target]
            att = out.attentions[layer]
            grads = torch.autograd.grad(logp, att)[0]
        pos = [i for i, t in enumerate(ids) if t == image_id]
        m = (att.detach() * torch.relu(grads))[0, :, -1, pos].float().mean(0)
        side = int(round(math.sqrt(len(pos))))
        return m.reshape(side, side).double().cpu()
    finally:
        model.set_attn_implementation("sdpa")


def generate(model, seqs, px, pad, new_tokens, sample=False, temperature=1.0, top_p=1.0, seed=0):
    ids, mask = left_pad(seqs, pad)
    kw = dict(do_sample=sample)
    if sample:
        torch.manual_seed(seed)
        kw.update(temperature=temperature, top_p=top_p, top_k=0)
    out = model.generate(input_ids=ids, attention_mask=mask, pixel_values=px, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, output_scores=True, return_dict_in_generate=True,
                         pad_token_id=pad, **kw)
    # Per-token log-probs of the chosen tokens, for PPL (p2dpo records them during generation).
    logp = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    return out.sequences[:, ids.shape[1]:].tolist(), logp.float().mean(-1).tolist()


@torch.no_grad()
def contrastive_generate(model, expert, amateur, px_expert, px_amateur, pad, new_tokens, lam, beta, temperature,
                         top_p, seed):
    """Contrastive amplification: expert and amateur contexts stepped together in one batch;
    (1+lam)*E - lam*A over V_head = {p_E >= beta * max p_E}, sampled, the token fed to both."""
    n = len(expert)
    ids, mask = left_pad(expert + amateur, pad)
    px = torch.cat([px_expert, px_amateur])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    out = model(input_ids=ids, attention_mask=mask, pixel_values=px, position_ids=pos, use_cache=True,
                logits_to_keep=1)
    cache, tokens, logps = out.past_key_values, [], []
    logits = out.logits[:, -1].float()
    for step in range(new_tokens):
        e, a = logits[:n], logits[n:]
        cutoff = e.max(-1, keepdim=True).values + math.log(beta)
        scores = ((1 + lam) * e - lam * a).masked_fill(e < cutoff, float("-inf"))
        logps.append(torch.log_softmax(scores, -1))
        w = scores / temperature
        sorted_w, idx = torch.sort(w, descending=False)
        cum = sorted_w.softmax(-1).cumsum(-1)
        remove = cum <= (1 - top_p)
        remove[:, -1] = False
        w = w.masked_fill(remove.scatter(1, idx, remove), float("-inf"))
        nxt = torch.multinomial(w.softmax(-1), 1, generator=gen)  # [n, 1]
        logps[-1] = logps[-1].gather(1, nxt)
        tokens.append(nxt)
        if step + 1 == new_tokens:
            break
        both = torch.cat([nxt, nxt])
        mask = torch.cat([mask, torch.ones_like(both)], 1)
        pos = mask.sum(-1, keepdim=True) - 1
        out = model(input_ids=both, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits = out.logits[:, -1].float()
    toks = torch.cat(tokens, 1).tolist()
    return toks, torch.cat(logps, 1).mean(-1).tolist()


def answer_logprob_sums(model, seqs, px_list, pad, dtype, grad=False):
    """Sum of answer-token log-probs for (prompt_ids, answer_ids) pairs, one right-padded forward
    (TRL's concatenated forward), pixel_values of every sequence's images in order."""
    L = max(len(p) + len(a) for p, a in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)
    for i, (p, a) in enumerate(seqs):
        ids[i, :len(p) + len(a)] = torch.tensor(p + a)
        mask[i, :len(p) + len(a)] = 1
        labels[i, len(p):len(p) + len(a)] = torch.tensor(a)
    ids, mask, labels = ids.cuda(), mask.cuda(), labels.cuda()
    px = torch.cat(px_list).cuda().to(dtype)
    with torch.set_grad_enabled(grad):
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=px, use_cache=False).logits
        logits, tgt = logits[:, :-1], labels[:, 1:]
        keep = tgt != -100
        lp = torch.log_softmax(logits.float(), -1).gather(-1, tgt.clamp(min=0)[..., None])[..., 0]
        return (lp * keep).sum(-1), int(keep.sum())


# --------------------------------------------------------------------------------------------
# Pairs


def write_profile_summary(prof, path, batch):
    """Per stage, what p2dpo's op profile reports (models/op_profile.h): wall time, top-level ATen
    ops the host dispatched, kernels launched and their GPU time; plus the top ops by self CPU time."""
    def device_us(e):
        return getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)

    def kernels(e):
        return len(getattr(e, "kernels", []) or []) + sum(kernels(c) for c in e.cpu_children)

    def on_host(e):  # record_function also leaves a GPU-side annotation of the same name
        return str(getattr(e, "device_type", "CPU")).upper().endswith("CPU")

    stages = {}
    for e in prof.events():
        if e.name.startswith("stage:") and e.cpu_parent is None and on_host(e):
            st = stages.setdefault(e.name[len("stage:"):], {"wall_s": 0.0, "host_ops": 0, "device_s": 0.0, "kernels": 0})
            st["wall_s"] += e.cpu_time_total / 1e6
            st["host_ops"] += sum(1 for c in e.cpu_children if c.name.startswith("aten::"))
            st["device_s"] += device_us(e) / 1e6
            st["kernels"] += kernels(e)
    for st in stages.values():
        st["device_busy_share"] = st["device_s"] / st["wall_s"] if st["wall_s"] else 0.0
    top = []
    for a in sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total)[:15]:
        top.append({"name": a.key, "count": a.count, "self_cpu_s": a.self_cpu_time_total / 1e6})
    json.dump({"batch": batch, "stages": stages, "top_ops_by_self_cpu": top,
               "how_to_read": "host_ops: top-level ATen ops per stage (aten:: children of the stage scope); "
                              "device_busy_share: GPU kernel time / wall time"}, open(path, "w"), indent=1)


def run_pairs(args):
    from transformers import CLIPModel, CLIPTokenizer

    dtype = torch.bfloat16
    t_load = time.time()
    model, tok, proc, pad = load_side(args.model, dtype)
    img_id = tok.image_id
    clip = CLIPModel.from_pretrained(args.clip, dtype=torch.float32).cuda().eval()
    clip_tok = CLIPTokenizer.from_pretrained(args.clip)
    clip_proc = image_processor(args.clip)
    cfg = json.load(open(args.config))
    G = cfg["min_new_tokens"]
    layer = cfg["attention"]["layers"][0]
    samples = [json.loads(l) for l in open(args.data) if l.strip()][: args.limit]
    prompts = {r["index"]: r["prompts"] for r in map(json.loads, open(args.prompts_from)) if r}
    load_s = time.time() - t_load
    log(f"loaded in {load_s:.1f} s; {len(samples)} samples, {G} new tokens per answer")

    torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.time()
    records, B = [], cfg["batch_size"]
    stage_s = {k: 0.0 for k in ("attention", "views", "focus", "original", "loser", "contrastive", "reference", "clip")}

    def timed(name, fn):
        sync()
        s = time.time()
        with torch.profiler.record_function("stage:" + name):
            r = fn()
            sync()
        stage_s[name] += time.time() - s
        return r

    # The second batch is profiled, as p2dpo's `--profile` does (the first pays one-time costs).
    profiled_b0 = B if len(samples) > B else 0
    profiled = None
    prof = None
    batch_s = []
    for b0 in range(0, len(samples), B):
        sync()
        tb = time.time()
        if args.profile_json and b0 == profiled_b0:
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                      torch.profiler.ProfilerActivity.CUDA])
            prof.__enter__()
        batch = samples[b0:b0 + B]
        work = []
        for j, s in enumerate(batch):
            P = prompts[b0 + j]
            img = Image.open(os.path.join(args.images, s["image"])).convert("RGB")
            px_I = pixels(proc, [img])
            att = timed("attention", lambda: grad_attention(model, tok.prompt(P["attention"]),
                                                             px_I.cuda().to(dtype), layer, img_id))

            def views():
                box = adaptive_crop(att, img.width, img.height)
                inv = adaptive_crop(att.max() - att, img.width, img.height)
                crop, deg = img.crop(box), erase(img, box)
                px = pixels(proc, [crop, deg])
                noise = diffusion_noise(px_I, cfg["noise"]["diffusion_step"], zlib.crc32(s["id"].encode()))
                return dict(img=img, box=box, crop=crop, inv=img.crop(inv), px_I=px_I, px_crop=px[0:1],
                            px_deg=px[1:2], px_noise=noise, P=P)

            work.append(timed("views", views))
        cu = lambda t: t.cuda().to(dtype)
        fc = timed("focus", lambda: generate(
            model, [tok.prompt(w["P"]["enhanced"]) for w in work] + [tok.prompt(w["P"]["P"]) for w in work],
            cu(torch.cat([torch.cat([w["px_I"], w["px_crop"]]) for w in work] + [w["px_deg"] for w in work])),
            pad, G))
        if cfg["focus"]["original_answer"]:
            timed("original", lambda: generate(model, [tok.prompt(w["P"]["P"]) for w in work],
                                               cu(torch.cat([w["px_I"] for w in work])), pad, G))
        rb = cfg["robust"]
        lo = timed("loser", lambda: generate(model, [tok.prompt(w["P"]["robust_loser"]) for w in work],
                                             cu(torch.cat([w["px_noise"] for w in work])), pad, G, sample=True,
                                             temperature=rb["loser_temperature"], top_p=rb["loser_top_p"], seed=b0))
        ca = timed("contrastive", lambda: contrastive_generate(
            model, [tok.prompt(w["P"]["robust"]) for w in work], [tok.prompt(w["P"]["robust"]) for w in work],
            cu(torch.cat([w["px_I"] for w in work])), cu(torch.cat([w["px_noise"] for w in work])), pad, G,
            rb["lambda"], rb["beta"], rb["temperature"], rb["top_p"], seed=b0))
        n = len(work)
        texts = [(tok.decode(fc[0][i]), tok.decode(fc[0][n + i]), tok.decode(ca[0][i]), tok.decode(lo[0][i]))
                 for i in range(n)]

        def reference():
            # Six sums per sample, one padded forward per term over the batch (method.md §7.2).
            out = []
            terms = [("P", 0, "I"), ("P", 1, "I"), ("P_aug", 1, "I+crop"), ("P", 1, "deg"), ("P", 2, "noise"),
                     ("P", 3, "noise")]
            for pkey, t, view in terms:
                seqs, pxs = [], []
                for w, tx in zip(work, texts):
                    prompt = w["P"][pkey]
                    seqs.append((tok.prompt(prompt), tok.answer(prompt, tx[t])))
                    pxs.append({"I": w["px_I"], "I+crop": torch.cat([w["px_I"], w["px_crop"]]), "deg": w["px_deg"],
                                "noise": w["px_noise"]}[view])
                out.append(answer_logprob_sums(model, seqs, pxs, pad, dtype)[0].tolist())
            return out

        with torch.no_grad():
            refs = timed("reference", reference)

            def clip_scores():
                res = []
                for w in work:
                    t = clip_tok([w["P"]["P"]], truncation=True, max_length=77, padding=True, return_tensors="pt").to("cuda")
                    im = pixels(clip_proc, [w["img"], w["crop"], w["inv"]]).cuda()
                    te = F.normalize(features(clip.get_text_features(**t)), dim=-1)
                    ie = F.normalize(features(clip.get_image_features(pixel_values=im)), dim=-1)
                    res.append((100 * (ie @ te.t()).clamp(min=0)[:, 0]).tolist())
                return res

            scores = timed("clip", clip_scores)
        for i in range(n):
            records.append({"index": b0 + i, "texts": texts[i], "reference": [r[i] for r in refs],
                            "clip": scores[i], "ppl": [math.exp(-fc[1][i]), math.exp(-fc[1][n + i]),
                                                       math.exp(-ca[1][i]), math.exp(-lo[1][i])]})
        sync()
        batch_s.append(time.time() - tb)
        if prof is not None and b0 == profiled_b0:
            prof.__exit__(None, None, None)
            profiled = prof
        log(f"{len(records)}/{len(samples)} samples, {time.time() - t0:.1f} s")
    sync()
    secs = time.time() - t0
    # Summarised after the timed loop: walking torch.profiler's event tree in Python took minutes
    # for one 7B batch (H200, 2026-11-28), time that must not count as generation.
    if profiled is not None:
        try:  # the profile is a side result: the benchmark's numbers must not depend on it
            write_profile_summary(profiled, args.profile_json, profiled_b0 // B)
        except Exception as e:
            log(f"profile summary failed: {type(e).__name__}: {e}")
    res = {"samples": len(samples), "new_tokens": G, "load_s": load_s, "generation_seconds": secs,
           "pairs_per_hour": 3600 * len(samples) / secs, "stage_seconds": stage_s, "batch_seconds": batch_s,
           "batch_size": B,
           "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
           "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
           "answer_tokens": [len(fc[0][0]), len(ca[0][0])], "example": records[0]}
    json.dump(res, open(args.out, "w"), indent=2)
    log(json.dumps({k: v for k, v in res.items() if k != "example"}))


# --------------------------------------------------------------------------------------------
# Training step: HF + PEFT, TRL-style


def dpo(pw, pl, rw, rl, beta):
    return -F.logsigmoid(beta * ((pw - rw) - (pl - rl)))


def run_train(args):
    from peft import LoraConfig, get_peft_model

    cfg = json.load(open(os.path.join(args.ours_run, "config.json")))
    tc = cfg.get("config", cfg.get("train", cfg))
    lora, opt_cfg, loss_cfg = tc["lora"], tc["optim"], tc["loss"]
    # p2dpo's runtime.lora_precision: "autocast" computes the adapter in bf16 from fp32 masters, which
    # is what PEFT does under torch.autocast (HF Trainer's bf16=True); "float32" (and runs from before
    # the key) is PEFT's forward without autocast. The policy forward here does the same as ours.
    lora_precision = tc.get("runtime", {}).get("lora_precision", "float32")
    autocast_error = None
    dtype = torch.bfloat16
    t_load = time.time()
    base, tok, proc, pad = load_side(args.model, dtype)
    targets = r".*language_model\..*\.(" + "|".join(lora["target_modules"]) + ")"
    model = get_peft_model(base, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                            target_modules=targets, bias="none"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    lora_dtypes = sorted({str(p.dtype) for p in trainable})
    decay = [p for n_, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    nodecay = [p for n_, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": opt_cfg["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}], lr=opt_cfg["lr"],
                            betas=(opt_cfg["beta1"], opt_cfg["beta2"]))

    # Pairs and their views, prepared on the CPU before timing (a DataLoader with workers hides this).
    recs = [json.loads(l) for l in open(os.path.join(args.pairs, "pairs.jsonl")) if l.strip()]
    mb, eff, steps = opt_cfg["micro_batch_size"], opt_cfg["effective_batch"], args.steps
    need = eff * steps
    recs = (recs * ((need + len(recs) - 1) // len(recs)))[:need]
    items = []
    for r in recs:
        img = Image.open(os.path.join(args.images, r["image"])).convert("RGB")
        box = tuple(r["bbox"])
        px = pixels(proc, [img, img.crop(box), erase(img, box)])
        noise = diffusion_noise(px[0:1], 600, int(r["views"]["noise"]["seed"]))
        P, Pa = r["prompts"]["P"], r["prompts"]["P_aug"]
        fw, fl, rw, rl = r["focus"]["chosen"], r["focus"]["rejected"], r["robust"]["chosen"], r["robust"]["rejected"]
        pI, pA = tok.prompt(P), tok.prompt(Pa)
        a = {k: tok.answer(P, t) for k, t in (("fw", fw), ("fl", fl), ("rw", rw), ("rl", rl))}
        a_aug = {k: tok.answer(Pa, t) for k, t in (("fw", fw), ("fl", fl))}
        I, C, D = px[0:1], px[1:2], px[2:3]
        policy = [((pI, a["fw"]), [I]), ((pI, a["fl"]), [I]), ((pA, a_aug["fw"]), [I, C]), ((pI, a["fw"]), [D]),
                  ((pI, a["rw"]), [noise]), ((pI, a["rl"]), [noise])]
        ref = [((pI, a["fw"]), [I]), ((pI, a["fl"]), [I]), ((pA, a_aug["fl"]), [I, C]), ((pI, a["fl"]), [D]),
               ((pI, a["rw"]), [noise]), ((pI, a["rl"]), [noise])]
        w = r.get("weights") or {}
        items.append((policy, ref, float(w.get("w_focus", 0.5)), float(w.get("w_robust", 0.5))))
    load_s = time.time() - t_load
    log(f"loaded and prepared {len(items)} pairs in {load_s:.1f} s; trainable {n_trainable} ({lora_dtypes})")

    beta, lam = loss_cfg["beta"], loss_cfg["lambda_calib"]
    model.train()
    torch.cuda.reset_peak_memory_stats()
    step_s, losses, tokens = [], [], []
    k = 0
    for step in range(steps):
        sync()
        t0 = time.time()
        total, ntok = 0.0, 0
        for _ in range(eff // mb):
            chunk = items[k:k + mb]
            k += mb
            flat = lambda which: [s for it in chunk for s in it[which]]
            with torch.no_grad(), model.disable_adapter():
                refs, _ = answer_logprob_sums(model, [s for s, _ in flat(1)], [p for _, ps in flat(1) for p in ps], pad,
                                              dtype)
            def policy():
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=lora_precision == "autocast"):
                    return answer_logprob_sums(model, [s for s, _ in flat(0)], [p for _, ps in flat(0) for p in ps],
                                               pad, dtype, grad=True)
            try:
                pol, nt = policy()
            except Exception as e:  # keep the baseline: PEFT's forward without autocast, recorded as such
                if lora_precision != "autocast" or step > 0:
                    raise
                autocast_error = f"{type(e).__name__}: {e}"[:300]
                log(f"autocast policy forward failed ({autocast_error}); running it without autocast")
                lora_precision = "float32 (autocast failed)"
                torch.cuda.empty_cache()
                pol, nt = policy()
            pol, refs = pol.view(len(chunk), 6), refs.view(len(chunk), 6)
            wf = torch.tensor([it[2] for it in chunk], device="cuda")
            wr = torch.tensor([it[3] for it in chunk], device="cuda")
            l_focus = dpo(pol[:, 0], pol[:, 1], refs[:, 0], refs[:, 1], beta)
            l_calib = -F.logsigmoid(beta * ((pol[:, 2] - pol[:, 3]) - (refs[:, 2] - refs[:, 3])))
            l_rob = dpo(pol[:, 4], pol[:, 5], refs[:, 4], refs[:, 5], beta)
            loss = (wf * (l_focus + lam * l_calib) + wr * l_rob).mean() * (mb / eff)
            loss.backward()
            total += loss.item()
            ntok += nt
        torch.nn.utils.clip_grad_norm_(trainable, opt_cfg["max_grad_norm"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        step_s.append(time.time() - t0)
        losses.append(total)
        tokens.append(ntok)
        log(f"step {step + 1}/{steps}: {step_s[-1]:.2f} s, loss {total:.4f}, {ntok} answer tokens")
    res = {"steps": steps, "micro_batch_size": mb, "effective_batch": eff, "step_seconds": step_s,
           "loss": losses, "answer_tokens_per_step": tokens, "trainable_parameters": n_trainable,
           "lora_dtypes": lora_dtypes, "lora_precision": lora_precision, "autocast_error": autocast_error, "load_s": load_s,
           "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
           "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20}
    json.dump(res, open(args.out, "w"), indent=2)
    log(json.dumps(res))


# --------------------------------------------------------------------------------------------
# PEFT: load p2dpo's adapter, compare with p2dpo's own scores; compare p2dpo merge with PEFT's


def run_peft_check(args):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import LlavaForConditionalGeneration

    scored = json.load(open(args.scored))  # {"base": score json, "adapter": score json}
    res = {}
    base = load_llava(args.model, torch.float32)
    proc = image_processor(args.model)
    px = pixels(proc, [Image.open(args.image).convert("RGB")]).cuda()

    def logprobs(m, s):
        ids = torch.tensor([s["prompt_ids"] + s["answer_ids"]], device="cuda")
        with torch.no_grad():
            logits = m(input_ids=ids, pixel_values=px, use_cache=False).logits[0].float()
        n = len(s["prompt_ids"])
        lp = torch.log_softmax(logits[n - 1:-1], -1).gather(-1, ids[0, n:, None])[:, 0]
        return lp.double().cpu()

    ours_base = torch.tensor(scored["base"]["logprobs"], dtype=torch.float64)
    ours_ad = torch.tensor(scored["adapter"]["logprobs"], dtype=torch.float64)
    hf_base = logprobs(base, scored["base"])
    try:
        hf_tok = Tokenizer(args.model, image_token_id(base))
        hf_ids = hf_tok.prompt(args.prompt)
        ours_ids = scored["base"]["prompt_ids"]
        res["hf_tokenizer_prompt_ids_equal_p2dpo"] = hf_ids == ours_ids
        if hf_ids != ours_ids:  # the ids around the first difference, image runs left out
            squeeze = lambda v: [t for i, t in enumerate(v) if t != image_token_id(base) or i == 0 or v[i - 1] != t]
            a, b = squeeze(hf_ids), squeeze(ours_ids)
            k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            res["hf_tokenizer_difference"] = {"at": k, "hf": a[max(0, k - 3):k + 8], "p2dpo": b[max(0, k - 3):k + 8],
                                              "hf_tokens": hf_tok.tok.convert_ids_to_tokens(a[max(0, k - 3):k + 8]),
                                              "lengths": [len(hf_ids), len(ours_ids)]}
    except Exception as e:  # informative only
        res["hf_tokenizer_prompt_ids_equal_p2dpo"] = f"error: {e}"

    res["hf_vs_p2dpo_base_max_abs_diff"] = (hf_base - ours_base).abs().max().item()

    with safe_open(os.path.join(args.adapter, "adapter_model.safetensors"), "pt") as f:
        saved_keys = sorted(f.keys())
    res["adapter_keys"] = len(saved_keys)
    res["adapter_key_example"] = saved_keys[0]
    from safetensors.torch import load_file

    saved = load_file(os.path.join(args.adapter, "adapter_model.safetensors"))

    def tail(key):
        # "...language_model.model.layers.3.self_attn.q_proj.lora_A.weight" and PEFT's parameter
        # "...model.language_model.layers.3.self_attn.q_proj.lora_A.default.weight" end alike.
        key = key.replace(".default.", ".")
        i = key.find("layers.")
        return key[i:] if i >= 0 else key

    def loaded_share(pm):
        # Each saved tensor must have reached its LoRA parameter (a mis-keyed LoRA silently stays at B = 0).
        params = {tail(n): p for n, p in pm.named_parameters() if "lora_" in n}
        hit = sum(1 for k, v in saved.items() if tail(k) in params and params[tail(k)].shape == v.shape and
                  torch.equal(params[tail(k)].detach().float().cpu(), v.float()))
        return hit, len(params)

    peft_model = PeftModel.from_pretrained(base, args.adapter)
    hit, n_params = loaded_share(peft_model)
    res["peft_plain_load"] = {"saved_tensors": len(saved), "lora_parameters": n_params, "loaded_equal": hit}
    if hit < len(saved):
        # PEFT without a conversion for this transformers: map the legacy llava-hf names ourselves.
        base = peft_model.unload() if hasattr(peft_model, "unload") else load_llava(args.model, torch.float32)
        try:
            peft_model = PeftModel.from_pretrained(base, args.adapter, key_mapping={
                r"^language_model\.model\.": "model.language_model.", r"^language_model\.lm_head\.": "lm_head.",
                r"^vision_tower\.": "model.vision_tower.", r"^multi_modal_projector\.": "model.multi_modal_projector."})
            hit, n_params = loaded_share(peft_model)
            res["peft_key_mapping_load"] = {"saved_tensors": len(saved), "lora_parameters": n_params,
                                            "loaded_equal": hit}
        except Exception as e:
            res["peft_key_mapping_load"] = {"error": f"{type(e).__name__}: {e}"}
            json.dump(res, open(args.out, "w"), indent=2)
            raise
    lora_params = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    res["peft_lora_tensors"] = len(lora_params)
    res["peft_lora_nonzero_B"] = sum(int(p.abs().max() > 0) for n, p in lora_params.items() if "lora_B" in n)
    res["peft_module_example"] = next(iter(lora_params))
    hf_ad = logprobs(peft_model, scored["adapter"])
    res["peft_vs_p2dpo_adapter_max_abs_diff"] = (hf_ad - ours_ad).abs().max().item()
    res["adapter_effect_max_abs"] = (ours_ad - ours_base).abs().max().item()
    res["p2dpo_sum_base"], res["p2dpo_sum_adapter"] = ours_base.sum().item(), ours_ad.sum().item()
    res["peft_sum_adapter"] = hf_ad.sum().item()

    merged_peft = peft_model.merge_and_unload()
    lp_peft_merged = logprobs(merged_peft, scored["adapter"])
    del merged_peft, peft_model, base
    torch.cuda.empty_cache()
    ours_merged = LlavaForConditionalGeneration.from_pretrained(args.merged, dtype=torch.float32).cuda().eval()
    lp_ours_merged = logprobs(ours_merged, scored["adapter"])
    res["p2dpo_merge_loaded_by_hf_vs_peft_merge_max_abs_diff"] = (lp_ours_merged - lp_peft_merged).abs().max().item()
    res["p2dpo_merge_loaded_by_hf_vs_p2dpo_adapter_max_abs_diff"] = (lp_ours_merged - ours_ad).abs().max().item()
    json.dump(res, open(args.out, "w"), indent=2)
    log(json.dumps(res))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("pairs")
    for a in ("--model", "--clip", "--data", "--images", "--prompts-from", "--config", "--out"):
        p.add_argument(a, required=True)
    p.add_argument("--limit", type=int, default=10**9)
    p.add_argument("--profile-json", help="torch.profiler summary of the second batch, by stage")
    t = sub.add_parser("train")
    for a in ("--model", "--pairs", "--images", "--ours-run", "--out"):
        t.add_argument(a, required=True)
    t.add_argument("--steps", type=int, required=True)
    c = sub.add_parser("peft-check")
    for a in ("--model", "--adapter", "--merged", "--scored", "--image", "--prompt", "--out"):
        c.add_argument(a, required=True)
    args = ap.parse_args()
    {"pairs": run_pairs, "train": run_train, "peft-check": run_peft_check}[args.mode](args)


if __name__ == "__main__":
    main()
