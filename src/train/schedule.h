#pragma once
// Learning-rate schedule: linear warm-up then cosine decay, as HF transformers'
// get_cosine_schedule_with_warmup (min_lr_ratio = 0) and get_cosine_with_min_lr_schedule_with_warmup
// (min_lr_ratio = min_lr_rate). A pure function of the optimizer step, so resuming needs only the
// step count. HF calls scheduler.step() after optimizer.step(), so the update that turns `step`
// completed steps into step+1 uses lr_at(step): the very first update uses lr 0 when there is a
// warm-up (HF's behaviour, kept so runs match).
#include <cstdint>

namespace p2dpo::train {

struct CosineSchedule {
  double peak_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.0;  // floor of the cosine as a fraction of peak_lr
  double num_cycles = 0.5;    // HF's default: half a cosine wave, peak -> floor

  // HF lr_lambda(step) * peak_lr:
  //   step < warmup: step / max(1, warmup)
  //   else: progress = (step - warmup) / max(1, total - warmup)
  //         f = 0.5 * (1 + cos(pi * num_cycles * 2 * progress)); f = f * (1 - min) + min; max(0, f)
  double lr_at(int64_t step) const;
};

// HF TrainingArguments.get_warmup_steps for a warm-up ratio: ceil(total_steps * ratio).
int64_t warmup_steps_from_ratio(double ratio, int64_t total_steps);

}  // namespace p2dpo::train
