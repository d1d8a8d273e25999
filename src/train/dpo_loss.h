#pragma once
// The P2-DPO objective (paper eqs. 4–8; released p2_dpo_loss.py; method.md §7.1–7.2) on per-sample
// sequence log-prob SUMS over answer tokens. Policy terms carry gradients; reference terms are
// constants (recorded with the pairs, or recomputed with the adapter off).
//
//   L_dpo(pw, pl, rw, rl) = -logsigmoid(beta * ((pw - rw) - (pl - rl)))
//   L_calib               = -logsigmoid(beta * ((pw_aug - pw_deg) - (rl_aug - rl_deg)))   (eq. 5)
//   per sample            = w_f * (L_dpo_focus + lambda_calib * L_calib) + w_r * L_dpo_rob
//   loss                  = mean over the batch
// Ablations: without focus pairs or without robustness pairs the remaining term has weight 1 (as
// the released code does when only one kind of input is present); without L_calib, lambda is 0 in
// effect; without DDW both weights are w_base (the caller passes them).
#include <torch/types.h>

namespace p2dpo::train {

struct P2DpoLossConfig {
  double beta = 0.1;
  double lambda_calib = 0.3;
  bool use_focus = true;   // "w/o focus pairs" = false
  bool use_robust = true;  // "w/o robustness pairs" = false
  bool use_calib = true;   // "w/o L_calib" = false
};

// Per-sample inputs, each [B] float32 (policy tensors differentiable). Tensors a disabled term
// does not use may be undefined.
struct P2DpoLogps {
  torch::Tensor focus_chosen, focus_rejected;          // policy, y_w and y_l | (I, P)
  torch::Tensor ref_focus_chosen, ref_focus_rejected;  // reference, same contexts
  torch::Tensor calib_chosen_aug, calib_chosen_deg;    // policy, y_w | (I + I_crop, P) and (I_deg, P)
  torch::Tensor ref_calib_rejected_aug, ref_calib_rejected_deg;  // reference, y_l | same two
  torch::Tensor robust_chosen, robust_rejected;        // policy, | (I_noise, P)
  torch::Tensor ref_robust_chosen, ref_robust_rejected;
  torch::Tensor w_focus, w_robust;  // DDW weights (or w_base)
};

struct P2DpoLossTerms {
  torch::Tensor per_sample;  // [B], differentiable
  torch::Tensor loss;        // scalar mean of per_sample
  // Detached per-sample diagnostics ([B]; undefined when the term is off). Rewards as TRL names them:
  // chosen = beta (pw - rw), rejected = beta (pl - rl).
  torch::Tensor dpo_focus, calib, dpo_robust;
  torch::Tensor focus_rewards_chosen, focus_rewards_rejected;
  torch::Tensor robust_rewards_chosen, robust_rewards_rejected;
  torch::Tensor calib_margin;  // (pw_aug - pw_deg) - (rl_aug - rl_deg), before beta
};

// The standard DPO loss per sample (TRL's sigmoid loss, label smoothing 0).
torch::Tensor dpo_loss(const torch::Tensor& policy_chosen, const torch::Tensor& policy_rejected,
                       const torch::Tensor& ref_chosen, const torch::Tensor& ref_rejected, double beta);
// Eq. 5: gradients flow only through the two policy terms of y_w.
torch::Tensor calibration_loss(const torch::Tensor& policy_chosen_aug, const torch::Tensor& policy_chosen_deg,
                               const torch::Tensor& ref_rejected_aug, const torch::Tensor& ref_rejected_deg,
                               double beta);

// Throws std::invalid_argument when neither pair type is enabled or a needed tensor is missing.
P2DpoLossTerms p2dpo_loss(const P2DpoLogps& in, const P2DpoLossConfig& cfg);

}  // namespace p2dpo::train
