#pragma once
// Everything `p2dpo train` can be told, as one config: a preset (paper | released-code, method.md's
// table) overlaid with the user's YAML/JSON file (optionally under a top-level "train:" key, so one
// file can hold the pairs and the train sections), then with command-line ablations. The resolved
// config is written to the run directory and into every checkpoint.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "pairs/filter.h"
#include "train/dpo_loss.h"
#include "train/lora.h"
#include "train/optimizer.h"

namespace p2dpo::train {

struct P2DpoTrainConfig {
  std::string preset = "paper";
  uint64_t seed = 0;
  // "p2dpo": records of `p2dpo pairs`; "dpo": plain DPO on external pairs (one image, chosen,
  // rejected; the baseline), references computed with the adapter off.
  std::string objective = "p2dpo";
  LoraConfig lora;
  P2DpoLossConfig loss;
  pairs::DdwConfig ddw;
  // "recorded": the reference sums the pair generator wrote (the frozen base, no extra forward);
  // "recompute": the same model with the adapter disabled, every step.
  std::string reference = "recorded";
  double sft_weight = 0.0;  // > 0: adds sft_weight * per-token NLL of the focus winner under (I, P)

  // Optimisation (method.md §7.4).
  int64_t epochs = 4;
  int64_t max_steps = 0;  // > 0 overrides epochs
  int64_t micro_batch_size = 4;
  int64_t effective_batch = 32;
  double lr = 2e-5;
  int64_t warmup_steps = 100;  // >= 0 used as is; < 0: ceil(warmup_ratio * total)
  double warmup_ratio = 0.03;
  double min_lr_ratio = 0.0;
  AdamWConfig adamw{0.9, 0.999, 1e-8, 0.1};
  double max_grad_norm = 1.0;
  int64_t save_every = 50;
  int keep_last = 2;

  // Data.
  bool kept_only = true;  // train on filtered.jsonl (false: every record of pairs.jsonl)
  int64_t limit = 0;
  std::string external_prompt = "USER: <image>\n{question} ASSISTANT:";  // objective dpo

  // Runtime.
  bool share_prefixes = true;       // one prefix per (prompt, images), continuations attend to its KV
  // Rows of very different lengths go to separate forwards where that saves more padded positions
  // than this per extra forward (train/multiview.h); < 0: one padded forward per stage. 64 was
  // measured on the CPU; on a GPU a forward's fixed (host) cost is likely far more positions.
  // Without dropout the results are the same to float rounding; LoRA dropout draws per forward.
  int64_t split_cost_positions = 64;
  int64_t feature_cache_mb = 1024;  // frozen image features kept between epochs (0 = recompute)
  // Decode, crop, erase, noise and tokenize the next micro-batch's pairs on a worker thread while
  // this one trains (the 7B step's GPU sat idle for ~0.35 s of 3.1 s doing it in line, H200).
  bool prefetch_images = true;
  std::string dtype = "auto";       // auto (fp32 on CPU, bf16 on CUDA) | float32 | bfloat16
  // How the adapter computes next to a bf16 model: "autocast" = in bf16 with fp32 master weights,
  // as torch.autocast (HF Trainer bf16=True) and DeepSpeed bf16 (the paper's released code) do;
  // "float32" = PEFT's forward without autocast (input cast up, output cast back). An fp32 model
  // computes the same either way.
  std::string lora_precision = "autocast";
  // Activation recomputation per decoder layer (less memory, ~1/3 more compute): how many layers,
  // from the first, keep only their inputs; 0 none (config: false), -1 all (config: true).
  int64_t recompute_layers = 0;
  double reference_check_tolerance = 0.1;  // relative; recorded references vs this model at step 1
  // How data-parallel ranks sum CUDA gradients: auto = NCCL where this build has it (a CUDA build of
  // PyTorch with NCCL), else Gloo through host copies; gloo = always Gloo. Host tensors: always Gloo.
  std::string grad_backend = "auto";

  nlohmann::json to_json() const;
};

P2DpoTrainConfig train_preset(const std::string& preset);
// Whether a checkpoint's resolved config (`saved`) describes the run `resolved` would continue.
// Keys added since that run started are compared as this run has them, except
// runtime.lora_precision, which such runs had as float32. Free to differ: how ranks sum gradients
// (float rounding only), where pairs' inputs are built and kept (nothing), and, on an fp32 model,
// lora_precision (the same ops). How rows split into forwards is part of a run: LoRA dropout draws
// its masks per forward.
bool same_run_config(nlohmann::json saved, const nlohmann::json& resolved, bool fp32_model);
// preset (preset_override, else the file's "preset", else "paper") + the file (may be empty).
P2DpoTrainConfig load_train_config(const std::string& path, const std::string& preset_override = "");
// Several files, each overlaid on the previous ones (a shared recipe, then a run's changes); the
// preset is the override's, else the last file's that names one. Errors name the file at fault.
P2DpoTrainConfig load_train_config(const std::vector<std::string>& paths, const std::string& preset_override = "");
// "focus" | "robust" | "calib" | "ddw": the paper's Table 4 ablations. InputError("--ablate", ...) otherwise.
void apply_ablation(P2DpoTrainConfig& cfg, const std::string& name);

}  // namespace p2dpo::train
