#include "models/fused_ops.h"

#include <atomic>

namespace p2dpo::models {

namespace {
std::atomic<bool> fused_ops{true};
}  // namespace

void set_cuda_fused_ops(bool on) { fused_ops.store(on); }
bool cuda_fused_ops() { return fused_ops.load(std::memory_order_relaxed); }

}  // namespace p2dpo::models
