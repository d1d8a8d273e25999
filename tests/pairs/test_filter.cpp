// Pair filter, percentiles, DDW and the stats.json tables against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "pairs/filter.h"

namespace p2dpo::pairs {
namespace {

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

TEST(PairFilterStats, PercentileMatchesNumpyLinear) {
  // numpy: index (n-1)*q/100 = 3*0.025 = 0.075 -> 1 + 0.075; 3*0.975 = 2.925 -> 3.925.
  EXPECT_NEAR(percentile_linear({1, 2, 3, 4}, 2.5), 1.075, 1e-12);
  EXPECT_NEAR(percentile_linear({4, 1, 3, 2}, 97.5), 3.925, 1e-12);  // sorts first
  EXPECT_DOUBLE_EQ(percentile_linear({1, 2, 3, 4}, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile_linear({1, 2, 3, 4}, 0), 1);
  EXPECT_DOUBLE_EQ(percentile_linear({1, 2, 3, 4}, 100), 4);
  EXPECT_DOUBLE_EQ(percentile_linear({7}, 33), 7);
  // 5 values, q = 10: index 0.4 -> 10 + 0.4*(20-10) = 14.
  EXPECT_NEAR(percentile_linear({50, 10, 40, 20, 30}, 10), 14, 1e-12);
  EXPECT_THROW(percentile_linear({}, 50), std::invalid_argument);
  EXPECT_THROW(percentile_linear({1, 2}, -1), std::invalid_argument);
  EXPECT_THROW(percentile_linear({1, 2}, 100.5), std::invalid_argument);
  EXPECT_THROW(percentile_linear({1, kNan}, 50), std::invalid_argument);
}

TEST(PairFilterStats, DescribeGivesPopulationStdAndPercentiles) {
  const Distribution d = describe({4, 1, 3, 2});
  EXPECT_EQ(d.n, 4);
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_NEAR(d.std, std::sqrt(1.25), 1e-12);  // (2.25+0.25+0.25+2.25)/4
  EXPECT_DOUBLE_EQ(d.min, 1);
  EXPECT_NEAR(d.p2_5, 1.075, 1e-12);
  EXPECT_NEAR(d.p25, 1.75, 1e-12);
  EXPECT_NEAR(d.median, 2.5, 1e-12);
  EXPECT_NEAR(d.p75, 3.25, 1e-12);
  EXPECT_NEAR(d.p97_5, 3.925, 1e-12);
  EXPECT_DOUBLE_EQ(d.max, 4);
  const auto j = d.to_json();
  for (const char* key : {"n", "mean", "std", "min", "p2_5", "p25", "median", "p75", "p97_5", "max"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["n"], 4);
  EXPECT_DOUBLE_EQ(j["p25"].get<double>(), 1.75);

  const Distribution empty = describe({});
  EXPECT_EQ(empty.n, 0);
  EXPECT_EQ(empty.mean, 0);
  EXPECT_EQ(empty.max, 0);
  EXPECT_THROW(describe({1, kNan}), std::invalid_argument);
}

PairCandidate candidate(double logp_w, double logp_l, double ppl_w, double ppl_l) {
  PairCandidate c{};
  c.chosen_logp_mean = logp_w;
  c.rejected_logp_mean = logp_l;
  c.chosen_ppl = ppl_w;
  c.rejected_ppl = ppl_l;
  return c;
}

FilterConfig fixed_config() {
  FilterConfig cfg;
  cfg.margin_rule = "fixed";
  return cfg;
}

TEST(PairFilterDecide, EachReason) {
  const FilterConfig cfg = fixed_config();
  const MarginThresholds t = resolve_margin_thresholds(cfg, {});
  EXPECT_DOUBLE_EQ(t.low, -0.174);
  EXPECT_DOUBLE_EQ(t.high, 0.208);
  EXPECT_EQ(t.rule, "fixed");

  auto kept = decide(candidate(-0.50, -0.55, 1.6, 1.7), cfg, t);
  EXPECT_TRUE(kept.keep);
  EXPECT_EQ(kept.reason, "kept");
  EXPECT_NEAR(kept.margin, 0.05, 1e-12);

  auto empty = candidate(kNan, -0.5, kNan, 1.6);
  empty.empty_response = true;
  EXPECT_EQ(decide(empty, cfg, t).reason, "empty");

  auto same = candidate(-0.5, -0.5, 1.6, 1.6);
  same.identical_texts = true;
  EXPECT_EQ(decide(same, cfg, t).reason, "identical");
  FilterConfig keep_identical = cfg;
  keep_identical.drop_identical = false;
  EXPECT_TRUE(decide(same, keep_identical, t).keep);

  auto wide = candidate(-0.5, -0.5, 1.6, 1.6);
  wide.erased_share = 0.6;
  EXPECT_TRUE(decide(wide, cfg, t).keep);  // max_erased_share 0: check off (the paper's preset)
  FilterConfig erased = cfg;
  erased.max_erased_share = 0.5;
  EXPECT_EQ(decide(wide, erased, t).reason, "erased_share");
  wide.erased_share = 0.5;  // "more than" the share
  EXPECT_TRUE(decide(wide, erased, t).keep);

  auto uneven = candidate(-0.5, -0.5, 1.6, 1.6);
  uneven.length_ratio = 2.5;
  EXPECT_TRUE(decide(uneven, cfg, t).keep);  // max_length_ratio 0: check off (both presets)
  FilterConfig matched = cfg;
  matched.max_length_ratio = 2.0;
  EXPECT_EQ(decide(uneven, matched, t).reason, "length_ratio");
  uneven.length_ratio = 2.0;  // "more than" the ratio
  EXPECT_TRUE(decide(uneven, matched, t).keep);

  EXPECT_EQ(decide(candidate(-0.5, -0.5, 2.5, 1.0), cfg, t).reason, "ppl");  // strict <
  EXPECT_EQ(decide(candidate(-0.5, -0.5, 1.0, 2.7), cfg, t).reason, "ppl");
  EXPECT_EQ(decide(candidate(-0.5, -0.5, kNan, 1.0), cfg, t).reason, "ppl");
  EXPECT_TRUE(decide(candidate(-0.5, -0.5, 2.49, 2.49), cfg, t).keep);

  auto low = decide(candidate(-0.70, -0.50, 1.5, 1.5), cfg, t);
  EXPECT_FALSE(low.keep);
  EXPECT_EQ(low.reason, "margin_low");
  EXPECT_NEAR(low.margin, -0.2, 1e-12);
  EXPECT_EQ(decide(candidate(-0.20, -0.60, 1.5, 1.5), cfg, t).reason, "margin_high");
  // Bounds are inclusive.
  const MarginThresholds exact{-0.25, 0.5, "fixed"};
  EXPECT_TRUE(decide(candidate(-0.75, -0.5, 1.5, 1.5), cfg, exact).keep);
  EXPECT_TRUE(decide(candidate(-0.25, -0.75, 1.5, 1.5), cfg, exact).keep);
}

TEST(PairFilterDecide, PercentileThresholdsComeFromTheRunsMargins) {
  FilterConfig cfg;  // percentile rule, 2.5 / 97.5
  const std::vector<double> margins = {-0.3, -0.1, 0.0, 0.1, 0.4};
  const MarginThresholds t = resolve_margin_thresholds(cfg, margins);
  // index 4*0.025 = 0.1 -> -0.3 + 0.1*0.2 = -0.28; index 3.9 -> 0.4 - 0.1*0.3 = 0.37.
  EXPECT_NEAR(t.low, -0.28, 1e-12);
  EXPECT_NEAR(t.high, 0.37, 1e-12);
  EXPECT_EQ(t.rule, "percentile");
  EXPECT_DOUBLE_EQ(t.max_ppl, 2.5);
  EXPECT_EQ(decide(candidate(-0.8, -0.5, 1.5, 1.5), cfg, t).reason, "margin_low");   // -0.3
  EXPECT_EQ(decide(candidate(-0.1, -0.5, 1.5, 1.5), cfg, t).reason, "margin_high");  // 0.4
  EXPECT_TRUE(decide(candidate(-0.5, -0.5, 1.5, 1.5), cfg, t).keep);

  FilterConfig narrow = cfg;
  narrow.percentile_low = 25;
  narrow.percentile_high = 75;
  const MarginThresholds q = resolve_margin_thresholds(narrow, margins);
  EXPECT_NEAR(q.low, -0.1, 1e-12);
  EXPECT_NEAR(q.high, 0.1, 1e-12);

  EXPECT_THROW(resolve_margin_thresholds(cfg, {}), std::invalid_argument);
  FilterConfig bad = cfg;
  bad.margin_rule = "quantile";
  EXPECT_THROW(resolve_margin_thresholds(bad, margins), std::invalid_argument);
  bad = cfg;
  bad.percentile_low = 98;
  EXPECT_THROW(resolve_margin_thresholds(bad, margins), std::invalid_argument);
}

TEST(PairFilterDecide, ThresholdMarginsSkipEmptyResponsesOnly) {
  std::vector<PairCandidate> cs = {candidate(-0.5, -0.6, 1.6, 1.8), candidate(-0.4, -0.4, 1.5, 1.5),
                                   candidate(kNan, -0.3, kNan, 1.3), candidate(-1.2, -0.2, 3.3, 1.2)};
  cs[1].identical_texts = true;  // counted: part of the raw generated set
  cs[2].empty_response = true;   // no tokens, no margin
  const auto m = margins_for_thresholds(cs);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_NEAR(m[0], 0.1, 1e-12);
  EXPECT_NEAR(m[1], 0.0, 1e-12);
  EXPECT_NEAR(m[2], -1.0, 1e-12);
}

TEST(DdwWeights, PaperWorkedValues) {
  const DdwConfig cfg;
  // r = 1.22 (Table 6 mean): 0.5 + 0.2*tanh(2.2) = 0.69515, w_robust 0.30485.
  const DdwWeights up = ddw_weights(20.0, 24.4, cfg);
  EXPECT_NEAR(up.ratio, 1.22, 1e-12);
  EXPECT_NEAR(up.w_focus, 0.5 + 0.2 * std::tanh(2.2), 1e-9);
  EXPECT_NEAR(up.w_focus, 0.695, 1e-3);
  EXPECT_NEAR(up.w_robust, 0.305, 1e-3);
  EXPECT_NEAR(up.alpha, 0.195149, 1e-6);
  EXPECT_NEAR(up.w_focus + up.w_robust, 1.0, 1e-12);
  // r = 0.93 (inverse crop): 0.5 + 0.2*tanh(-0.7) = 0.37913.
  const DdwWeights down = ddw_weights(20.0, 18.6, cfg);
  EXPECT_NEAR(down.ratio, 0.93, 1e-12);
  EXPECT_NEAR(down.w_focus, 0.379126, 1e-6);
  EXPECT_NEAR(down.w_focus, 0.380, 1e-3);
  EXPECT_NEAR(down.w_robust, 0.620874, 1e-6);
  // Saturation keeps the weights within [0.3, 0.7].
  const DdwWeights big = ddw_weights(10.0, 40.0, cfg);
  EXPECT_NEAR(big.w_focus, 0.7, 1e-9);
  EXPECT_NEAR(big.w_robust, 0.3, 1e-9);
}

TEST(DdwWeights, DisabledGivesTheBaseWeight) {
  DdwConfig cfg;
  cfg.enabled = false;
  const DdwWeights w = ddw_weights(20.0, 24.4, cfg);
  EXPECT_NEAR(w.ratio, 1.22, 1e-12);  // still reported
  EXPECT_EQ(w.alpha, 0.0);
  EXPECT_EQ(w.w_focus, 0.5);
  EXPECT_EQ(w.w_robust, 0.5);
  cfg.w_base = 0.6;
  EXPECT_EQ(ddw_weights(20.0, 10.0, cfg).w_focus, 0.6);
  EXPECT_EQ(ddw_weights(20.0, 10.0, cfg).w_robust, 0.6);
}

TEST(DdwWeights, ZeroGuards) {
  const DdwConfig cfg;
  const DdwWeights none = ddw_weights(0.0, 0.0, cfg);  // no evidence either way
  EXPECT_EQ(none.ratio, 1.0);
  EXPECT_EQ(none.alpha, 0.0);
  EXPECT_EQ(none.w_focus, 0.5);
  EXPECT_EQ(none.w_robust, 0.5);
  const DdwWeights crop_only = ddw_weights(0.0, 5.0, cfg);  // clamp_min(eps) as the released code
  EXPECT_NEAR(crop_only.ratio, 5.0 / 1e-8, 1.0);
  EXPECT_NEAR(crop_only.w_focus, 0.7, 1e-12);
  const DdwWeights image_only = ddw_weights(5.0, 0.0, cfg);  // r = 0 -> 0.2*tanh(-10)
  EXPECT_EQ(image_only.ratio, 0.0);
  EXPECT_NEAR(image_only.w_focus, 0.5 + 0.2 * std::tanh(-10.0), 1e-12);
  EXPECT_THROW(ddw_weights(kNan, 1.0, cfg), std::invalid_argument);
  DdwConfig bad_tau;
  bad_tau.tau = 0;
  EXPECT_THROW(ddw_weights(1.0, 1.0, bad_tau), std::invalid_argument);
}

TEST(DdwWeights, ClipScoreFromCosine) {
  EXPECT_DOUBLE_EQ(clip_score_from_cosine(0.25), 25.0);
  EXPECT_DOUBLE_EQ(clip_score_from_cosine(-0.1), 0.0);
  EXPECT_DOUBLE_EQ(clip_score_from_cosine(1.0), 100.0);
  EXPECT_TRUE(std::isnan(clip_score_from_cosine(kNan)));
}

TEST(PairFilterTables, FilterTableCountsAndDistributions) {
  std::vector<PairCandidate> cs = {
      candidate(-0.50, -0.55, 1.6, 1.7),  // kept, margin 0.05
      candidate(-0.40, -0.40, 1.5, 1.5),  // identical, margin 0
      candidate(kNan, -0.30, kNan, 1.3),  // empty: left out of the distributions
      candidate(-0.95, -0.40, 2.6, 1.5),  // ppl, margin -0.55
      candidate(-0.20, -0.60, 1.2, 1.8),  // margin_high, margin 0.4
  };
  cs[1].identical_texts = true;
  cs[2].empty_response = true;
  const FilterConfig cfg = fixed_config();
  const MarginThresholds t = resolve_margin_thresholds(cfg, margins_for_thresholds(cs));
  std::vector<FilterDecision> ds;
  for (const auto& c : cs) ds.push_back(decide(c, cfg, t));
  const auto j = filter_table(cs, ds, t);

  EXPECT_EQ(j["n_candidates"], 5);
  EXPECT_EQ(j["n_kept"], 1);
  EXPECT_DOUBLE_EQ(j["retained_share"].get<double>(), 0.2);
  const auto& counts = j["counts"];
  EXPECT_EQ(counts["kept"], 1);
  EXPECT_EQ(counts["identical"], 1);
  EXPECT_EQ(counts["empty"], 1);
  EXPECT_EQ(counts["ppl"], 1);
  EXPECT_EQ(counts["margin_high"], 1);
  EXPECT_EQ(counts["margin_low"], 0);
  EXPECT_EQ(counts["erased_share"], 0);
  EXPECT_EQ(j["thresholds"]["rule"], "fixed");
  EXPECT_DOUBLE_EQ(j["thresholds"]["margin_low"].get<double>(), -0.174);
  EXPECT_DOUBLE_EQ(j["thresholds"]["margin_high"].get<double>(), 0.208);
  EXPECT_DOUBLE_EQ(j["thresholds"]["max_ppl"].get<double>(), 2.5);
  // ppl_chosen over [1.6, 1.5, 2.6, 1.2]; ppl_max over [1.7, 1.5, 2.6, 1.8];
  // margin over [0.05, 0, -0.55, 0.4].
  EXPECT_EQ(j["ppl_chosen"]["n"], 4);
  EXPECT_NEAR(j["ppl_chosen"]["mean"].get<double>(), 1.725, 1e-12);
  EXPECT_NEAR(j["ppl_rejected"]["mean"].get<double>(), (1.7 + 1.5 + 1.5 + 1.8) / 4, 1e-12);
  EXPECT_NEAR(j["ppl_max"]["mean"].get<double>(), 1.9, 1e-12);
  EXPECT_NEAR(j["ppl_max"]["max"].get<double>(), 2.6, 1e-12);
  EXPECT_NEAR(j["margin"]["mean"].get<double>(), -0.025, 1e-12);
  EXPECT_NEAR(j["margin"]["median"].get<double>(), 0.025, 1e-12);
  EXPECT_NEAR(j["margin"]["min"].get<double>(), -0.55, 1e-12);
  EXPECT_EQ(j["margin_kept"]["n"], 1);
  EXPECT_NEAR(j["margin_kept"]["mean"].get<double>(), 0.05, 1e-12);
  EXPECT_EQ(j["n_nonfinite"]["margin"], 0);

  ds.pop_back();
  EXPECT_THROW(filter_table(cs, ds, t), std::invalid_argument);
}

TEST(PairFilterTables, IpsTable) {
  // Finite values [2, -1, 3, 0.5]: mean 1.125; squared deviations 0.765625 + 4.515625 + 3.515625
  // + 0.390625 = 9.1875 -> population std sqrt(2.296875).
  const auto j = ips_table({2, -1, 3, 0.5, kNan});
  EXPECT_EQ(j["n"], 4);
  EXPECT_NEAR(j["mean"].get<double>(), 1.125, 1e-12);
  EXPECT_NEAR(j["std"].get<double>(), std::sqrt(2.296875), 1e-12);
  EXPECT_DOUBLE_EQ(j["share_negative"].get<double>(), 0.25);
  EXPECT_EQ(j["n_nonfinite"], 1);
  EXPECT_NEAR(j["distribution"]["median"].get<double>(), 1.25, 1e-12);
  EXPECT_EQ(ips_table({})["n"], 0);
}

TEST(PairFilterTables, CropClipTable) {
  // crop/image: 24/20 = 1.2, 12/10 = 1.2, third undefined (image score 0); diffs 4, 2, 5.
  // inverse/image: 0.9, 1.1; diffs -2, 1, 0.
  const auto j = crop_clip_table({20, 10, 0}, {24, 12, 5}, {18, 11, 0});
  EXPECT_EQ(j["n"], 3);
  const auto& cr = j["att_crop"]["improvement_ratio"];
  EXPECT_EQ(cr["n"], 2);
  EXPECT_NEAR(cr["mean"].get<double>(), 1.2, 1e-12);
  EXPECT_NEAR(cr["median"].get<double>(), 1.2, 1e-12);
  EXPECT_DOUBLE_EQ(cr["share_gt_1"].get<double>(), 1.0);
  EXPECT_EQ(j["att_crop"]["n_ratio_undefined"], 1);
  const auto& cd = j["att_crop"]["improvement_diff"];
  EXPECT_EQ(cd["n"], 3);
  EXPECT_NEAR(cd["mean"].get<double>(), 11.0 / 3, 1e-12);
  EXPECT_NEAR(cd["median"].get<double>(), 4.0, 1e-12);
  EXPECT_DOUBLE_EQ(cd["share_gt_0"].get<double>(), 1.0);
  const auto& ir = j["att_inverse"]["improvement_ratio"];
  EXPECT_NEAR(ir["mean"].get<double>(), 1.0, 1e-12);
  EXPECT_NEAR(ir["min"].get<double>(), 0.9, 1e-12);
  EXPECT_DOUBLE_EQ(ir["share_gt_1"].get<double>(), 0.5);
  const auto& id = j["att_inverse"]["improvement_diff"];
  EXPECT_NEAR(id["mean"].get<double>(), -1.0 / 3, 1e-12);
  EXPECT_NEAR(id["median"].get<double>(), 0.0, 1e-12);
  EXPECT_NEAR(id["share_gt_0"].get<double>(), 1.0 / 3, 1e-12);
  EXPECT_NEAR(j["clip_image"]["mean"].get<double>(), 10.0, 1e-12);

  const auto no_inverse = crop_clip_table({20}, {24}, {});
  EXPECT_TRUE(no_inverse.contains("att_crop"));
  EXPECT_FALSE(no_inverse.contains("att_inverse"));
  EXPECT_THROW(crop_clip_table({20, 10}, {24}, {}), std::invalid_argument);
  EXPECT_THROW(crop_clip_table({20, 10}, {24, 12}, {1}), std::invalid_argument);
}

}  // namespace
}  // namespace p2dpo::pairs
