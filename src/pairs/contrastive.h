#pragma once
// Contrastive Amplification (paper eq. 3; method spec §5): the robustness winner y_w is decoded from
// (1 + lambda) * logits_EP - lambda * logits_AT, where the expert sees the clean image I and the
// amateur the noisy I_noise, restricted to V_head, VCD's adaptive plausibility set.
#include <torch/types.h>

#include "infer/generate.h"

namespace p2dpo::pairs {

struct ContrastiveConfig {
  double lambda = 0.1;  // cd_alpha: amplification strength
  double beta = 0.1;    // cd_beta: V_head = {v : p_EP(v) >= beta * max p_EP}, in [0, 1]
};

// logits [N, 2, V] (context 0 = expert, context 1 = amateur) -> scores [N, V] float32:
//   (1 + lambda) * EP - lambda * AT, set to -inf where EP < log(beta) + max(EP),
// the cutoff taken on the expert's raw logits per row (vcd_sample.py's "version 2"; equal to
// p_EP(v) >= beta * max p_EP). Computed in float32 whatever the input dtype (VCD computes in the
// model's dtype, fp16 for LLaVA, which only rounds more). Returned on the input's device.
// A wrong shape, beta outside [0, 1] or a non-finite lambda throws std::invalid_argument.
torch::Tensor contrastive_amplification(const torch::Tensor& logits, const ContrastiveConfig& cfg);

// The combiner for infer::generate_multi_context with contexts {expert, amateur}.
infer::LogitsCombiner contrastive_combiner(const ContrastiveConfig& cfg);

}  // namespace p2dpo::pairs
