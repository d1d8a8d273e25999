#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace p2dpo::train {

double CosineSchedule::lr_at(int64_t step) const {
  if (step < warmup_steps) {
    // Same operation order as HF (lambda first, then base_lr * lambda) so values match to the bit.
    return peak_lr * (static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps)));
  }
  const double progress = static_cast<double>(step - warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  double factor = 0.5 * (1.0 + std::cos(M_PI * num_cycles * 2.0 * progress));
  factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio;
  return peak_lr * std::max(0.0, factor);
}

int64_t warmup_steps_from_ratio(double ratio, int64_t total_steps) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * ratio));
}

}  // namespace p2dpo::train
