#include "train/loss.h"

#include <torch/nn/functional/loss.h>
#include <torch/types.h>
#include <torch/utils.h>

namespace p2dpo::train {

namespace {
void check_shapes(const torch::Tensor& logits, const torch::Tensor& labels) {
  TORCH_CHECK(logits.dim() == 3, "logits must be [B, L, V], got ", logits.sizes());
  TORCH_CHECK(labels.dim() == 2 && labels.size(0) == logits.size(0) && labels.size(1) == logits.size(1),
              "labels must be [B, L] matching logits ", logits.sizes(), ", got ", labels.sizes());
}
}  // namespace

TokenLossSum masked_token_nll_sum(const torch::Tensor& logits, const torch::Tensor& labels) {
  check_shapes(logits, labels);
  const int64_t V = logits.size(2), L = logits.size(1);
  TokenLossSum out;
  if (L < 2) {
    out.sum = logits.sum().mul(0.0).to(torch::kFloat32);
    return out;
  }
  auto shift_logits = logits.slice(1, 0, L - 1).reshape({-1, V}).to(torch::kFloat32);
  auto shift_labels = labels.slice(1, 1).reshape({-1}).to(logits.device(), torch::kLong);
  out.count = (shift_labels != kIgnoreIndex).sum().item<int64_t>();
  out.sum = torch::nn::functional::cross_entropy(
      shift_logits, shift_labels,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex).reduction(torch::kSum));
  return out;
}

torch::Tensor masked_token_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  auto s = masked_token_nll_sum(logits, labels);
  if (s.count == 0) return s.sum * 0.0;
  return s.sum / static_cast<double>(s.count);
}

torch::Tensor answer_log_prob_sums(const torch::Tensor& logits, const torch::Tensor& labels) {
  check_shapes(logits, labels);
  const int64_t L = logits.size(1);
  if (L < 2) return torch::zeros({logits.size(0)}, logits.options().dtype(torch::kFloat32));
  auto logp = torch::log_softmax(logits.slice(1, 0, L - 1).to(torch::kFloat32), -1);
  auto target = labels.slice(1, 1).to(logits.device(), torch::kLong);
  auto counted = target != kIgnoreIndex;
  auto picked = logp.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1);
  return picked.masked_fill(counted.logical_not(), 0.0).sum(1);
}

int64_t count_target_tokens(const torch::Tensor& labels) {
  TORCH_CHECK(labels.dim() == 2, "labels must be [B, L]");
  if (labels.size(1) < 2) return 0;
  return (labels.slice(1, 1) != kIgnoreIndex).sum().item<int64_t>();
}

}  // namespace p2dpo::train
