#pragma once
// Gradient clipping by global norm and the bookkeeping of gradient accumulation.
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace p2dpo::train {

// torch.nn.utils.clip_grad_norm_ (norm 2) over the gradients of `params` (parameters without a
// gradient are skipped; aliases of one tensor count once): total = ||(||g_i||)_i||, and when
// total > max_norm every gradient is multiplied by max_norm / (total + 1e-6). Returns the norm
// before clipping (non-finite when a gradient is; the caller decides whether to skip the step).
// Norms of bf16/f16 gradients are taken in float32.
double clip_grad_norm(const std::map<std::string, torch::Tensor>& params, double max_norm);

// The global gradient norm only (nothing is modified).
double grad_norm(const std::map<std::string, torch::Tensor>& params);

// How one optimizer step's examples are split: effective batch = micro_batch_size *
// accumulation_steps * world_size.
struct AccumulationPlan {
  int64_t micro_batch_size = 1;
  int64_t accumulation_steps = 1;  // micro-batches per optimizer step on each rank
  int64_t world_size = 1;
  int64_t effective_batch() const { return micro_batch_size * accumulation_steps * world_size; }

  // InputError(flag, ...) unless effective_batch is a positive multiple of micro_batch_size * world_size.
  static AccumulationPlan for_effective_batch(int64_t effective_batch, int64_t micro_batch_size,
                                              int64_t world_size, const std::string& flag);
};

// Consecutive chunks of at most micro_batch_size indices, order kept (the last may be shorter).
std::vector<std::vector<int64_t>> split_micro_batches(const std::vector<int64_t>& step_indices,
                                                      int64_t micro_batch_size);

// The loss to backpropagate for one micro-batch so the accumulated gradient equals the gradient
// of the whole step's mean: loss_sum (summed over this micro-batch's loss items: answer tokens for
// language modelling, examples for DPO) divided by the item count of the WHOLE step (all
// micro-batches, all ranks). Dividing each micro-batch by its own count instead would weight short
// micro-batches up (the bug transformers fixed in 4.46 with num_items_in_batch).
torch::Tensor scale_for_accumulation(const torch::Tensor& loss_sum, int64_t items_in_step);

}  // namespace p2dpo::train
