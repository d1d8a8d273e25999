#include "train/grad.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <set>

#include "io/errors.h"

namespace p2dpo::train {

namespace {
// Gradients in sorted-name order, each tensor once.
std::vector<torch::Tensor> unique_grads(const std::map<std::string, torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  std::set<const void*> seen;
  for (const auto& [name, p] : params) {
    if (!p.grad().defined() || !seen.insert(p.unsafeGetTensorImpl()).second) continue;
    grads.push_back(p.grad());
  }
  return grads;
}

double total_norm_of(const std::vector<torch::Tensor>& grads) {
  if (grads.empty()) return 0.0;
  std::vector<torch::Tensor> norms;
  norms.reserve(grads.size());
  for (const auto& g : grads) {
    const bool low_precision = g.scalar_type() == torch::kBFloat16 || g.scalar_type() == torch::kHalf;
    norms.push_back((low_precision ? g.to(torch::kFloat32) : g).norm(2).to(grads[0].device(), torch::kFloat32));
  }
  return torch::stack(norms).norm(2).item<double>();
}
}  // namespace

double grad_norm(const std::map<std::string, torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  return total_norm_of(unique_grads(params));
}

double clip_grad_norm(const std::map<std::string, torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  const auto grads = unique_grads(params);
  const double total = total_norm_of(grads);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1.0) {  // torch multiplies by min(coef, 1); multiplying by 1 changes nothing
    for (const auto& g : grads) g.mul_(coef);
  }
  return total;
}

AccumulationPlan AccumulationPlan::for_effective_batch(int64_t effective_batch, int64_t micro_batch_size,
                                                       int64_t world_size, const std::string& flag) {
  if (micro_batch_size < 1) throw InputError(flag, "micro-batch size must be >= 1, got " + std::to_string(micro_batch_size));
  if (world_size < 1) throw InputError(flag, "world size must be >= 1, got " + std::to_string(world_size));
  const int64_t per_step = micro_batch_size * world_size;
  if (effective_batch < per_step || effective_batch % per_step != 0) {
    throw InputError(flag, "effective batch " + std::to_string(effective_batch) +
                               " is not a positive multiple of micro-batch size x world size (" +
                               std::to_string(micro_batch_size) + " x " + std::to_string(world_size) + ")");
  }
  AccumulationPlan plan;
  plan.micro_batch_size = micro_batch_size;
  plan.world_size = world_size;
  plan.accumulation_steps = effective_batch / per_step;
  return plan;
}

std::vector<std::vector<int64_t>> split_micro_batches(const std::vector<int64_t>& step_indices,
                                                      int64_t micro_batch_size) {
  TORCH_CHECK(micro_batch_size >= 1, "micro_batch_size must be >= 1");
  std::vector<std::vector<int64_t>> out;
  for (size_t i = 0; i < step_indices.size(); i += static_cast<size_t>(micro_batch_size)) {
    const size_t end = std::min(step_indices.size(), i + static_cast<size_t>(micro_batch_size));
    out.emplace_back(step_indices.begin() + static_cast<std::ptrdiff_t>(i),
                     step_indices.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return out;
}

torch::Tensor scale_for_accumulation(const torch::Tensor& loss_sum, int64_t items_in_step) {
  // No items at all (every answer truncated away): the loss is 0 and so is its gradient.
  if (items_in_step <= 0) return loss_sum * 0.0;
  return loss_sum / static_cast<double>(items_in_step);
}

}  // namespace p2dpo::train
