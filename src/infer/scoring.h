#pragma once
// Scoring: log-probabilities of given answer tokens under a model, in one forward pass over
// prompt + answer (no cache), in fp32 over every logit column, as HF computes them.
#include <torch/types.h>

#include <string>
#include <vector>

#include "models/vlm.h"

namespace p2dpo::infer {

struct ScoreResult {
  std::vector<int64_t> prompt_ids, answer_ids;
  std::vector<float> logprobs;  // one per answer token
  double sum = 0, mean = 0, ppl = 0;  // ppl = exp(-mean)
};

// Scores `answer_ids` after `prompt_ids` (image tokens already expanded) with the given images.
ScoreResult score_ids(models::VisionLanguageModel& model, const std::vector<models::PreparedImage>& images,
                      const std::vector<int64_t>& prompt_ids, const std::vector<int64_t>& answer_ids);

// Tokenizes prompt + answer under the documented convention (text/prompt.h), then scores.
ScoreResult score_text(models::VisionLanguageModel& model, const std::vector<models::PreparedImage>& images,
                       const std::string& prompt, const std::string& answer);

// Per-token log-probs of `targets` from logits: logits [B, T, V] predicting targets [B, T]
// (logits row t predicts targets[t]). Returns [B, T] fp32, differentiable.
torch::Tensor token_logprobs(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace p2dpo::infer
