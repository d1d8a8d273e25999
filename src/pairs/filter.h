#pragma once
// Pair filtering (PPL and log-prob margin, paper App. D / method.md §6), CLIPScore, dynamic
// deficit weighting (DDW) and the aggregate tables that go into stats.json (the paper's Tables 3,
// 5 and 6). Torch-free. Bad arguments throw std::invalid_argument.
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace p2dpo::pairs {

// numpy.percentile(values, q) with its default method 'linear' (numpy >= 1.22 formula: virtual
// index (n-1)*(q/100), lerp a + (b-a)*t, or b - (b-a)*(1-t) for t >= 0.5). q in [0, 100];
// values must be non-empty and finite.
double percentile_linear(std::vector<double> values, double q);

// Summary of a sample. std is the population one (numpy's default ddof 0). Percentiles are
// percentile_linear. n = 0 gives all zeros; non-finite values throw.
struct Distribution {
  int64_t n = 0;
  double mean = 0, std = 0, min = 0, p2_5 = 0, p25 = 0, median = 0, p75 = 0, p97_5 = 0, max = 0;
  // {"n","mean","std","min","p2_5","p25","median","p75","p97_5","max"}
  nlohmann::json to_json() const;
};
Distribution describe(const std::vector<double>& values);

// Which pairs survive. Defaults: the paper's App. D (max PPL < 2.5; margin within the 2.5th and
// 97.5th percentiles of the run's own margins). "fixed" uses [margin_low, margin_high] (the paper's
// values for LLaVA-1.5-7B, the released filter_pairs.py defaults).
struct FilterConfig {
  double max_ppl = 2.5;
  std::string margin_rule = "percentile";  // or "fixed"
  double margin_low = -0.174, margin_high = 0.208;
  double percentile_low = 2.5, percentile_high = 97.5;
  bool drop_identical = true;
  double max_erased_share = 0.0;  // > 0: drop pairs whose erased box covers more than this share
  // > 0: drop pairs where, in the focus or the robustness pair, the longer response has more than
  // this many times the tokens of the shorter. Off in both presets (the paper has no such rule).
  // Why it exists: DPO's summed log-probs reward ending early, and on the world both pair types
  // prefer the shorter answer (focus 8 vs 15 words, robust 15 vs 25), so training learns "say less".
  double max_length_ratio = 0.0;
};

struct MarginThresholds {
  double low, high;
  std::string rule;
  // Copied from FilterConfig by resolve_margin_thresholds so filter_table can report it.
  double max_ppl = std::numeric_limits<double>::quiet_NaN();
};

// "fixed": cfg's bounds. "percentile": percentile_linear of `margins` at percentile_low/high.
// Which margins: App. D takes the percentiles over the raw generated set (Table 5 describes all
// 5,733 raw pairs, before any filtering), so pass the margins of every candidate that has one,
// i.e. margins_for_thresholds(candidates): identical and high-PPL pairs included, empty responses
// (no tokens, no mean log-prob) and non-finite margins excluded. The percentile rule with no
// margins, an unknown rule or percentile bounds outside 0 <= low <= high <= 100 throw.
MarginThresholds resolve_margin_thresholds(const FilterConfig& cfg,
                                           const std::vector<double>& margins);

struct PairCandidate {
  // Per-token mean log-probs, each under its own generation context (released code, method.md §6).
  double chosen_logp_mean, rejected_logp_mean;
  double chosen_ppl, rejected_ppl;
  bool identical_texts = false;
  double erased_share = 0.0;  // erased box area / image area
  double length_ratio = 1.0;  // max over both pair types of longer / shorter response (tokens)
  bool empty_response = false;
  double margin() const { return chosen_logp_mean - rejected_logp_mean; }
};

// The margins resolve_margin_thresholds should see (see there).
std::vector<double> margins_for_thresholds(const std::vector<PairCandidate>& candidates);

struct FilterDecision {
  bool keep = false;
  // "kept", "identical", "empty", "ppl", "margin_low", "margin_high", "erased_share", "length_ratio"
  std::string reason;
  double margin = 0.0;  // chosen_logp_mean - rejected_logp_mean (recorded for dropped pairs too)
};

// Checks in this order, the first failing one naming the reason: empty response; identical texts
// (if drop_identical); erased share > max_erased_share (if > 0); length ratio > max_length_ratio
// (if > 0); max(PPL_w, PPL_l) < max_ppl
// (strict, as the paper; a NaN PPL fails); low <= margin (inclusive, as filter_pairs.py; a NaN
// margin fails here); margin <= high.
FilterDecision decide(const PairCandidate& c, const FilterConfig& cfg, const MarginThresholds& t);

// DDW (released p2_dpo_loss.py::dynamic_deficit_weights): r = clip_crop / max(clip_image, eps),
// alpha = alpha_max * tanh((r - 1) / tau), w_focus = w_base + alpha, w_robust = w_base - alpha.
struct DdwConfig {
  bool enabled = true;
  double w_base = 0.5, alpha_max = 0.2, tau = 0.1, eps = 1e-8;
};
struct DdwWeights {
  double ratio = 1, alpha = 0, w_focus = 0.5, w_robust = 0.5;
};
// Guards: clip_image <= eps and clip_crop <= eps -> r = 1 (no evidence either way, alpha = 0);
// clip_image <= eps only -> r = clip_crop / eps as the released code's clamp_min does (alpha
// saturates at alpha_max). Disabled: the ratio is still reported, alpha = 0, both weights w_base.
// Non-finite scores or tau <= 0 throw.
DdwWeights ddw_weights(double clip_image, double clip_crop, const DdwConfig& cfg);

// CLIPScore on the torchmetrics scale: 100 * max(cos, 0) (NaN stays NaN).
double clip_score_from_cosine(double cos);

// stats.json tables.
// Table 5: {"n_candidates", "n_kept", "retained_share", "counts": {reason: n, every reason},
//   "thresholds": {"rule", "margin_low", "margin_high", "max_ppl"},
//   "ppl_chosen", "ppl_rejected", "ppl_max", "margin": describe() over the candidates with that
//   value finite and a non-empty response (the raw set, as Table 5), "margin_kept": over kept pairs,
//   "n_nonfinite": {"ppl_chosen", "ppl_rejected", "ppl_max", "margin"} (non-empty but not finite)}.
// Sizes of candidates and decisions must match.
nlohmann::json filter_table(const std::vector<PairCandidate>& candidates,
                            const std::vector<FilterDecision>& decisions,
                            const MarginThresholds& thresholds);
// Table 3: {"n", "mean", "std" (population), "share_negative", "distribution": describe(),
//   "n_nonfinite"} over the finite IPS values.
nlohmann::json ips_table(const std::vector<double>& ips);
// Table 6: {"n", "att_crop": {"improvement_ratio": describe() + "share_gt_1",
//   "improvement_diff": describe() + "share_gt_0", "n_ratio_undefined": samples with
//   clip_image <= 1e-8 (left out of the ratio stats, kept in the diff stats) or a non-finite score
//   (left out of both)}, "att_inverse": same (only when clip_inverse_crop is non-empty),
//   "clip_image": describe() of the finite image scores}.
// ratio = crop / image, diff = crop - image. clip_crop must match clip_image in size;
// clip_inverse_crop must match or be empty.
nlohmann::json crop_clip_table(const std::vector<double>& clip_image,
                               const std::vector<double>& clip_crop,
                               const std::vector<double>& clip_inverse_crop);

}  // namespace p2dpo::pairs
