#pragma once
// Wall time of consecutive phases of GPU work: each lap first waits for the CUDA queue to drain
// (when asked to), so a phase's time is its own and not that of kernels still queued from it.
// Used for the stage and phase timings of `p2dpo pairs` and `p2dpo train`. Torch-free header.
#include <chrono>

namespace p2dpo::models {

class SyncedLap {
 public:
  explicit SyncedLap(bool sync_cuda) : sync_cuda_(sync_cuda), t_(std::chrono::steady_clock::now()) {}
  // Seconds since construction or the previous call. A named lap also ends that phase in an
  // op profile being recorded (models/op_profile.h).
  double next(const char* phase = nullptr);

 private:
  bool sync_cuda_;
  std::chrono::steady_clock::time_point t_;
};

}  // namespace p2dpo::models
