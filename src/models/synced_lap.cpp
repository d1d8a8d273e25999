#include "models/synced_lap.h"

#include <torch/cuda.h>

#include "models/op_profile.h"

namespace p2dpo::models {

double SyncedLap::next(const char* phase) {
  if (sync_cuda_) torch::cuda::synchronize();
  if (phase) OpProfile::phase_end(phase);
  const auto now = std::chrono::steady_clock::now();
  const double s = std::chrono::duration<double>(now - t_).count();
  t_ = now;
  return s;
}

}  // namespace p2dpo::models
