#pragma once
// `p2dpo train`: LoRA fine-tuning with the P2-DPO objective over multi-view batches.
//
// One optimizer step, as train_causal_lm's (causal_lm_loop.h) but over pairs:
//   global batch of pair indices (sampler) -> this rank's share -> micro-batches -> per pair the
//   frozen views' image features (I, I_crop, I_deg, I_noise; cached) and token ids -> [reference
//   sums: recorded, or adapter off] -> policy sums of the 6 sequences per pair in one multi-view
//   call (shared prefixes) -> p2dpo_loss -> sum / pairs in the WHOLE step -> backward -> (all-reduce
//   LoRA grads over ranks) -> clip -> lr(step) -> AdamW -> metrics (reduced over ranks) -> checkpoint
//
// Files in out_dir: config.json (resolved), metrics.jsonl, checkpoints/ckpt-N (adapter tensors by
// PEFT key, optimizer, RNG, data position), adapter/ (the final PEFT adapter), summary.json.
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "models/vlm.h"
#include "train/p2dpo_config.h"

namespace p2dpo::train {

class ProcessGroup;

struct P2DpoRunOptions {
  std::string model_dir;   // recorded in the adapter config (base_model_name_or_path)
  std::string pairs_path;  // a `p2dpo pairs` directory / JSONL, or external pairs (objective dpo)
  std::string images_dir;  // "" = the pairs run's own
  std::string out_dir;
  bool resume = false;
  bool progress = true;
  // Test hook standing in for a kill: leave once this many steps are done (no checkpoint is written
  // there unless one is due anyway).
  int64_t stop_after_steps = 0;
  ProcessGroup* group = nullptr;  // data parallel when set (rank, world size from it)
  // Non-empty: record an op profile (models/op_profile.h) of optimizer step `profile_step`
  // (1-based; the first step pays one-time costs) into PROFILE_DIR/train-step-N[-rank-R].*.json,
  // its phases the time/* metrics' phases.
  std::string profile_dir;
  int64_t profile_step = 2;
};

struct P2DpoRunResult {
  int64_t steps_done = 0, total_steps = 0;
  std::optional<int64_t> resumed_from;
  double first_loss = 0, last_loss = 0;
  nlohmann::json last_metrics;
  std::string adapter_dir;  // "" until the run finishes
  nlohmann::json profile;   // the op profile's summary when one was recorded
};

P2DpoRunResult train_p2dpo(models::VisionLanguageModel& model, const P2DpoTrainConfig& cfg, const P2DpoRunOptions& opt);

}  // namespace p2dpo::train
