#include "pairs/contrastive.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace p2dpo::pairs {

namespace {

void check_config(const ContrastiveConfig& cfg) {
  if (!std::isfinite(cfg.lambda)) throw std::invalid_argument("contrastive lambda must be finite");
  if (!(cfg.beta >= 0.0 && cfg.beta <= 1.0))
    throw std::invalid_argument("contrastive beta must lie in [0, 1], got " + std::to_string(cfg.beta));
}

}  // namespace

torch::Tensor contrastive_amplification(const torch::Tensor& logits, const ContrastiveConfig& cfg) {
  check_config(cfg);
  if (!logits.defined() || logits.dim() != 3 || logits.size(1) != 2 || logits.size(2) == 0)
    throw std::invalid_argument("contrastive amplification needs logits [N, 2, V] (expert, amateur)");
  const auto all = logits.to(torch::kFloat);
  const auto expert = all.select(1, 0);
  const auto amateur = all.select(1, 1);
  // beta = 0 gives log(0) = -inf: no cutoff, every token stays.
  const auto cutoff = std::get<0>(expert.max(-1, /*keepdim=*/true)) + std::log(cfg.beta);
  const auto amplified = (1.0 + cfg.lambda) * expert - cfg.lambda * amateur;
  return amplified.masked_fill(expert < cutoff, -std::numeric_limits<float>::infinity());
}

infer::LogitsCombiner contrastive_combiner(const ContrastiveConfig& cfg) {
  check_config(cfg);  // fail when the run is set up, not at its first decoding step
  return [cfg](const torch::Tensor& logits) { return contrastive_amplification(logits, cfg); };
}

}  // namespace p2dpo::pairs
