#include "train/dpo_loss.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <stdexcept>
#include <string>

namespace p2dpo::train {
namespace {

void require(const torch::Tensor& t, const char* name) {
  if (!t.defined()) throw std::invalid_argument(std::string("p2dpo_loss: input '") + name + "' is missing");
}

}  // namespace

torch::Tensor dpo_loss(const torch::Tensor& pw, const torch::Tensor& pl, const torch::Tensor& rw,
                       const torch::Tensor& rl, double beta) {
  return -torch::log_sigmoid(beta * ((pw - rw) - (pl - rl)));
}

torch::Tensor calibration_loss(const torch::Tensor& pw_aug, const torch::Tensor& pw_deg, const torch::Tensor& rl_aug,
                               const torch::Tensor& rl_deg, double beta) {
  return -torch::log_sigmoid(beta * ((pw_aug - pw_deg) - (rl_aug - rl_deg)));
}

P2DpoLossTerms p2dpo_loss(const P2DpoLogps& in, const P2DpoLossConfig& cfg) {
  if (!cfg.use_focus && !cfg.use_robust) throw std::invalid_argument("p2dpo_loss: focus and robustness pairs are both off");
  P2DpoLossTerms out;
  torch::Tensor focus_term, robust_term;
  if (cfg.use_focus) {
    require(in.focus_chosen, "focus_chosen");
    require(in.focus_rejected, "focus_rejected");
    require(in.ref_focus_chosen, "ref_focus_chosen");
    require(in.ref_focus_rejected, "ref_focus_rejected");
    focus_term = dpo_loss(in.focus_chosen, in.focus_rejected, in.ref_focus_chosen, in.ref_focus_rejected, cfg.beta);
    out.dpo_focus = focus_term.detach();
    out.focus_rewards_chosen = (cfg.beta * (in.focus_chosen - in.ref_focus_chosen)).detach();
    out.focus_rewards_rejected = (cfg.beta * (in.focus_rejected - in.ref_focus_rejected)).detach();
    if (cfg.use_calib) {
      require(in.calib_chosen_aug, "calib_chosen_aug");
      require(in.calib_chosen_deg, "calib_chosen_deg");
      require(in.ref_calib_rejected_aug, "ref_calib_rejected_aug");
      require(in.ref_calib_rejected_deg, "ref_calib_rejected_deg");
      const torch::Tensor calib = calibration_loss(in.calib_chosen_aug, in.calib_chosen_deg, in.ref_calib_rejected_aug,
                                                   in.ref_calib_rejected_deg, cfg.beta);
      out.calib = calib.detach();
      out.calib_margin = ((in.calib_chosen_aug - in.calib_chosen_deg) -
                          (in.ref_calib_rejected_aug - in.ref_calib_rejected_deg)).detach();
      focus_term = focus_term + cfg.lambda_calib * calib;
    }
  }
  if (cfg.use_robust) {
    require(in.robust_chosen, "robust_chosen");
    require(in.robust_rejected, "robust_rejected");
    require(in.ref_robust_chosen, "ref_robust_chosen");
    require(in.ref_robust_rejected, "ref_robust_rejected");
    robust_term = dpo_loss(in.robust_chosen, in.robust_rejected, in.ref_robust_chosen, in.ref_robust_rejected, cfg.beta);
    out.dpo_robust = robust_term.detach();
    out.robust_rewards_chosen = (cfg.beta * (in.robust_chosen - in.ref_robust_chosen)).detach();
    out.robust_rewards_rejected = (cfg.beta * (in.robust_rejected - in.ref_robust_rejected)).detach();
  }
  if (focus_term.defined() && robust_term.defined()) {
    require(in.w_focus, "w_focus");
    require(in.w_robust, "w_robust");
    out.per_sample = in.w_focus * focus_term + in.w_robust * robust_term;
  } else {
    out.per_sample = focus_term.defined() ? focus_term : robust_term;  // the one term, weight 1
  }
  out.loss = out.per_sample.mean();
  return out;
}

}  // namespace p2dpo::train
