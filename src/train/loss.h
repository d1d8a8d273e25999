#pragma once
// Causal-LM losses on answer tokens, with HF's label convention: labels[b, i] is the token at
// position i (or -100 = ignored), and logits at position i predict labels at i + 1 (the shift is
// done here, as LlamaForCausalLM does). Computed in float32 whatever the logits' dtype.
#include <torch/types.h>

#include <cstdint>

namespace p2dpo::train {

inline constexpr int64_t kIgnoreIndex = -100;

// Sum over non-ignored positions of -log softmax(logits[b, i])[labels[b, i + 1]], and the count.
struct TokenLossSum {
  torch::Tensor sum;  // scalar float32, differentiable
  int64_t count = 0;  // tokens counted (labels != -100 after the shift)
};
TokenLossSum masked_token_nll_sum(const torch::Tensor& logits, const torch::Tensor& labels);

// HF's loss: mean over counted tokens (CrossEntropyLoss(ignore_index=-100) on the shifted tensors).
// A batch with no counted token gives 0 (HF would give NaN).
torch::Tensor masked_token_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels);

// Per-example sums of answer-token log-probs, [B] float32 (the DPO policy/reference quantities).
torch::Tensor answer_log_prob_sums(const torch::Tensor& logits, const torch::Tensor& labels);

// Number of counted positions after the shift (labels[:, 1:] != -100).
int64_t count_target_tokens(const torch::Tensor& labels);

}  // namespace p2dpo::train
