#include "models/synced_lap.h"

#include <torch/cuda.h>

namespace p2dpo::models {

double SyncedLap::next() {
  if (sync_cuda_) torch::cuda::synchronize();
  const auto now = std::chrono::steady_clock::now();
  const double s = std::chrono::duration<double>(now - t_).count();
  t_ = now;
  return s;
}

}  // namespace p2dpo::models
