// The P2-DPO objective against hand-computed values (method.md §7.1: eqs. 4–8, DDW worked values).
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>

#include "pairs/filter.h"
#include "train/dpo_loss.h"

namespace p2dpo::train {
namespace {

torch::Tensor t1(double v, bool grad = false) {
  return torch::tensor({v}, torch::kFloat64).requires_grad_(grad);
}

// One sample with known terms: L_dpo_focus = -logsigmoid(0.2), L_calib = -logsigmoid(0.5),
// L_dpo_rob = -logsigmoid(0.2) at beta 0.1 (values from Python's math.log1p(math.exp(-z))).
constexpr double kLf = 0.5981388693815918, kLc = 0.4740769841801067, kLr = 0.5981388693815918;

P2DpoLogps sample(double w_focus) {
  P2DpoLogps in;
  in.focus_chosen = t1(-10, true);
  in.focus_rejected = t1(-12, true);
  in.ref_focus_chosen = t1(-11);
  in.ref_focus_rejected = t1(-11);  // 0.1 * ((1) - (-1)) = 0.2
  in.calib_chosen_aug = t1(-5, true);
  in.calib_chosen_deg = t1(-8, true);
  in.ref_calib_rejected_aug = t1(-9);
  in.ref_calib_rejected_deg = t1(-7);  // 0.1 * ((3) - (-2)) = 0.5
  in.robust_chosen = t1(-20, true);
  in.robust_rejected = t1(-25, true);
  in.ref_robust_chosen = t1(-21);
  in.ref_robust_rejected = t1(-24);  // 0.1 * ((1) - (-1)) = 0.2
  in.w_focus = t1(w_focus);
  in.w_robust = t1(1.0 - w_focus);
  return in;
}

TEST(P2DpoLoss, EachTermMatchesHandValues) {
  EXPECT_NEAR(dpo_loss(t1(-10), t1(-12), t1(-11), t1(-11), 0.1).item<double>(), kLf, 1e-12);
  EXPECT_NEAR(calibration_loss(t1(-5), t1(-8), t1(-9), t1(-7), 0.1).item<double>(), kLc, 1e-12);
  // beta scales the implicit reward difference: at beta 1 the logit is 2.
  EXPECT_NEAR(dpo_loss(t1(-10), t1(-12), t1(-11), t1(-11), 1.0).item<double>(), std::log1p(std::exp(-2.0)), 1e-12);
}

TEST(P2DpoLoss, CompositeWithDdwAtTable6Mean) {
  // r = 1.22: w_focus = 0.5 + 0.2 tanh(2.2) = 0.69514862600629 (method.md's worked value ~0.695).
  const pairs::DdwWeights w = pairs::ddw_weights(100.0, 122.0, pairs::DdwConfig{});
  EXPECT_NEAR(w.w_focus, 0.6951486260062903, 1e-12);
  EXPECT_NEAR(pairs::ddw_weights(100.0, 93.0, pairs::DdwConfig{}).w_focus, 0.380, 1e-3);
  P2DpoLogps in = sample(w.w_focus);
  const P2DpoLossTerms out = p2dpo_loss(in, P2DpoLossConfig{});
  EXPECT_NEAR(out.loss.item<double>(), 0.6970050586337939, 1e-12);
  EXPECT_NEAR(out.dpo_focus.item<double>(), kLf, 1e-12);
  EXPECT_NEAR(out.calib.item<double>(), kLc, 1e-12);
  EXPECT_NEAR(out.dpo_robust.item<double>(), kLr, 1e-12);
  EXPECT_NEAR(out.calib_margin.item<double>(), 5.0, 1e-12);
  EXPECT_NEAR(out.focus_rewards_chosen.item<double>(), 0.1, 1e-12);
  EXPECT_NEAR(out.focus_rewards_rejected.item<double>(), -0.1, 1e-12);
  EXPECT_NEAR(out.robust_rewards_chosen.item<double>(), 0.1, 1e-12);

  // Gradients: d/d calib_chosen_aug = -w_f * 0.3 * 0.1 * sigmoid(-0.5); d/d focus_chosen = -w_f * 0.1 * sigmoid(-0.2).
  out.loss.backward();
  EXPECT_NEAR(in.calib_chosen_aug.grad().item<double>(), -0.007873406315295801, 1e-12);
  EXPECT_NEAR(in.calib_chosen_deg.grad().item<double>(), 0.007873406315295801, 1e-12);
  EXPECT_NEAR(in.focus_chosen.grad().item<double>(), -0.031293227824297505, 1e-12);
  EXPECT_NEAR(in.focus_rejected.grad().item<double>(), 0.031293227824297505, 1e-12);
}

TEST(P2DpoLoss, Ablations) {
  P2DpoLossConfig c;
  c.use_calib = false;  // w/o L_calib
  EXPECT_NEAR(p2dpo_loss(sample(0.7), c).loss.item<double>(), 0.7 * kLf + 0.3 * kLr, 1e-12);
  c = P2DpoLossConfig{};
  c.use_robust = false;  // w/o robustness pairs: the focus term alone, weight 1
  EXPECT_NEAR(p2dpo_loss(sample(0.7), c).loss.item<double>(), kLf + 0.3 * kLc, 1e-12);
  EXPECT_FALSE(p2dpo_loss(sample(0.7), c).dpo_robust.defined());
  c = P2DpoLossConfig{};
  c.use_focus = false;  // w/o focus pairs: the robustness term alone
  EXPECT_NEAR(p2dpo_loss(sample(0.7), c).loss.item<double>(), kLr, 1e-12);
  // w/o DDW is w_focus = w_robust = 0.5 from the caller.
  EXPECT_NEAR(p2dpo_loss(sample(0.5), P2DpoLossConfig{}).loss.item<double>(), 0.5 * (kLf + 0.3 * kLc) + 0.5 * kLr, 1e-12);
  c.use_robust = false;
  EXPECT_THROW(p2dpo_loss(sample(0.5), c), std::invalid_argument);
  // lambda_calib scales the calibration term.
  c = P2DpoLossConfig{};
  c.lambda_calib = 1.0;
  c.use_robust = false;
  EXPECT_NEAR(p2dpo_loss(sample(0.5), c).loss.item<double>(), kLf + kLc, 1e-12);
}

TEST(P2DpoLoss, BatchIsTheMeanOfSamples) {
  P2DpoLogps a = sample(0.7);
  P2DpoLogps b;
  auto two = [](const torch::Tensor& x, double second) { return torch::cat({x.detach(), t1(second)}); };
  b.focus_chosen = two(a.focus_chosen, -10);
  b.focus_rejected = two(a.focus_rejected, -10);
  b.ref_focus_chosen = two(a.ref_focus_chosen, -10);
  b.ref_focus_rejected = two(a.ref_focus_rejected, -10);  // logit 0: log 2
  b.calib_chosen_aug = two(a.calib_chosen_aug, 0);
  b.calib_chosen_deg = two(a.calib_chosen_deg, 0);
  b.ref_calib_rejected_aug = two(a.ref_calib_rejected_aug, 0);
  b.ref_calib_rejected_deg = two(a.ref_calib_rejected_deg, 0);
  b.robust_chosen = two(a.robust_chosen, 0);
  b.robust_rejected = two(a.robust_rejected, 0);
  b.ref_robust_chosen = two(a.ref_robust_chosen, 0);
  b.ref_robust_rejected = two(a.ref_robust_rejected, 0);
  b.w_focus = two(a.w_focus, 0.5);
  b.w_robust = two(a.w_robust, 0.5);
  const auto out = p2dpo_loss(b, P2DpoLossConfig{});
  const double second = 0.5 * (std::log(2.0) * 1.3) + 0.5 * std::log(2.0);
  const double first = 0.7 * (kLf + 0.3 * kLc) + 0.3 * kLr;
  EXPECT_NEAR(out.per_sample[1].item<double>(), second, 1e-12);
  EXPECT_NEAR(out.loss.item<double>(), 0.5 * (first + second), 1e-12);
}

}  // namespace
}  // namespace p2dpo::train
