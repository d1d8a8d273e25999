#include "pairs/filter.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

namespace p2dpo::pairs {
namespace {

const char* const kReasons[] = {"kept",        "identical",  "empty",       "ppl",
                                "margin_low",  "margin_high", "erased_share", "length_ratio"};

// Percentile of values already sorted ascending (numpy's 'linear' method).
double percentile_sorted(const std::vector<double>& v, double q) {
  const double virtual_index = static_cast<double>(v.size() - 1) * (q / 100.0);
  const double below = std::floor(virtual_index);
  const size_t lo = static_cast<size_t>(below);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double t = virtual_index - below;
  const double a = v[lo], b = v[hi];
  const double diff = b - a;
  return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;  // numpy's _lerp
}

std::vector<double> finite_only(const std::vector<double>& values) {
  std::vector<double> out;
  out.reserve(values.size());
  for (double v : values)
    if (std::isfinite(v)) out.push_back(v);
  return out;
}

double share_where(const std::vector<double>& values, bool (*pred)(double)) {
  if (values.empty()) return 0.0;
  int64_t n = 0;
  for (double v : values) n += pred(v) ? 1 : 0;
  return static_cast<double>(n) / static_cast<double>(values.size());
}

constexpr double kClipEps = 1e-8;

}  // namespace

double percentile_linear(std::vector<double> values, double q) {
  if (values.empty()) throw std::invalid_argument("percentile_linear: no values");
  if (!(q >= 0.0 && q <= 100.0))
    throw std::invalid_argument("percentile_linear: q = " + std::to_string(q) +
                                " is outside [0, 100]");
  for (double v : values)
    if (!std::isfinite(v)) throw std::invalid_argument("percentile_linear: non-finite value");
  std::sort(values.begin(), values.end());
  return percentile_sorted(values, q);
}

nlohmann::json Distribution::to_json() const {
  return {{"n", n},         {"mean", mean},     {"std", std},       {"min", min},
          {"p2_5", p2_5},   {"p25", p25},       {"median", median}, {"p75", p75},
          {"p97_5", p97_5}, {"max", max}};
}

Distribution describe(const std::vector<double>& values) {
  Distribution d;
  if (values.empty()) return d;
  for (double v : values)
    if (!std::isfinite(v)) throw std::invalid_argument("describe: non-finite value");
  std::vector<double> v = values;
  std::sort(v.begin(), v.end());
  d.n = static_cast<int64_t>(v.size());
  double sum = 0;
  for (double x : values) sum += x;
  d.mean = sum / static_cast<double>(d.n);
  double ss = 0;
  for (double x : values) ss += (x - d.mean) * (x - d.mean);
  d.std = std::sqrt(ss / static_cast<double>(d.n));
  d.min = v.front();
  d.max = v.back();
  d.p2_5 = percentile_sorted(v, 2.5);
  d.p25 = percentile_sorted(v, 25);
  d.median = percentile_sorted(v, 50);
  d.p75 = percentile_sorted(v, 75);
  d.p97_5 = percentile_sorted(v, 97.5);
  return d;
}

MarginThresholds resolve_margin_thresholds(const FilterConfig& cfg,
                                           const std::vector<double>& margins) {
  MarginThresholds t{cfg.margin_low, cfg.margin_high, cfg.margin_rule, cfg.max_ppl};
  if (cfg.margin_rule == "fixed") {
    if (!(cfg.margin_low <= cfg.margin_high))
      throw std::invalid_argument("filter: margin_low must be <= margin_high");
    return t;
  }
  if (cfg.margin_rule != "percentile")
    throw std::invalid_argument("filter: unknown margin_rule '" + cfg.margin_rule +
                                "' (expected \"percentile\" or \"fixed\")");
  if (!(cfg.percentile_low >= 0 && cfg.percentile_low <= cfg.percentile_high &&
        cfg.percentile_high <= 100))
    throw std::invalid_argument(
        "filter: percentile bounds must satisfy 0 <= percentile_low <= percentile_high <= 100");
  if (margins.empty())
    throw std::invalid_argument("filter: the percentile margin rule needs at least one margin");
  std::vector<double> v = margins;
  for (double m : v)
    if (!std::isfinite(m)) throw std::invalid_argument("filter: non-finite margin");
  std::sort(v.begin(), v.end());
  t.low = percentile_sorted(v, cfg.percentile_low);
  t.high = percentile_sorted(v, cfg.percentile_high);
  return t;
}

std::vector<double> margins_for_thresholds(const std::vector<PairCandidate>& candidates) {
  std::vector<double> out;
  out.reserve(candidates.size());
  for (const auto& c : candidates) {
    if (c.empty_response) continue;
    const double m = c.margin();
    if (std::isfinite(m)) out.push_back(m);
  }
  return out;
}

FilterDecision decide(const PairCandidate& c, const FilterConfig& cfg, const MarginThresholds& t) {
  FilterDecision d;
  d.margin = c.margin();
  auto drop = [&](const char* reason) {
    d.keep = false;
    d.reason = reason;
    return d;
  };
  if (c.empty_response) return drop("empty");
  if (cfg.drop_identical && c.identical_texts) return drop("identical");
  if (cfg.max_erased_share > 0 && c.erased_share > cfg.max_erased_share) return drop("erased_share");
  if (cfg.max_length_ratio > 0 && !(c.length_ratio <= cfg.max_length_ratio)) return drop("length_ratio");
  // Written so that NaN fails each test (a comparison with NaN is false).
  if (!(c.chosen_ppl < cfg.max_ppl && c.rejected_ppl < cfg.max_ppl)) return drop("ppl");
  if (!(d.margin >= t.low)) return drop("margin_low");
  if (!(d.margin <= t.high)) return drop("margin_high");
  d.keep = true;
  d.reason = "kept";
  return d;
}

DdwWeights ddw_weights(double clip_image, double clip_crop, const DdwConfig& cfg) {
  if (!std::isfinite(clip_image) || !std::isfinite(clip_crop))
    throw std::invalid_argument("ddw_weights: non-finite CLIPScore");
  if (!(cfg.tau > 0)) throw std::invalid_argument("ddw_weights: tau must be > 0");
  DdwWeights w;
  if (clip_image <= cfg.eps && clip_crop <= cfg.eps)
    w.ratio = 1.0;
  else
    w.ratio = clip_crop / std::max(clip_image, cfg.eps);
  w.alpha = cfg.enabled ? cfg.alpha_max * std::tanh((w.ratio - 1.0) / cfg.tau) : 0.0;
  w.w_focus = cfg.w_base + w.alpha;
  w.w_robust = cfg.w_base - w.alpha;
  return w;
}

double clip_score_from_cosine(double cos) {
  if (std::isnan(cos)) return cos;
  return 100.0 * std::max(cos, 0.0);
}

nlohmann::json filter_table(const std::vector<PairCandidate>& candidates,
                            const std::vector<FilterDecision>& decisions,
                            const MarginThresholds& thresholds) {
  if (candidates.size() != decisions.size())
    throw std::invalid_argument("filter_table: " + std::to_string(candidates.size()) +
                                " candidates but " + std::to_string(decisions.size()) +
                                " decisions");
  std::map<std::string, int64_t> counts;
  for (const char* r : kReasons) counts[r] = 0;
  std::vector<double> ppl_w, ppl_l, ppl_max, margin, margin_kept;
  int64_t bad_w = 0, bad_l = 0, bad_max = 0, bad_margin = 0;
  auto add = [](std::vector<double>& to, int64_t& bad, double v) {
    if (std::isfinite(v))
      to.push_back(v);
    else
      ++bad;
  };
  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto& c = candidates[i];
    const auto& d = decisions[i];
    auto it = counts.find(d.reason);
    if (it == counts.end())
      throw std::invalid_argument("filter_table: unknown reason '" + d.reason + "'");
    ++it->second;
    if (d.keep && std::isfinite(d.margin)) margin_kept.push_back(d.margin);
    if (c.empty_response) continue;
    add(ppl_w, bad_w, c.chosen_ppl);
    add(ppl_l, bad_l, c.rejected_ppl);
    add(ppl_max, bad_max, std::max(c.chosen_ppl, c.rejected_ppl));
    add(margin, bad_margin, c.margin());
  }
  const int64_t n = static_cast<int64_t>(candidates.size());
  const int64_t kept = counts["kept"];
  nlohmann::json thr = {{"rule", thresholds.rule},
                        {"margin_low", thresholds.low},
                        {"margin_high", thresholds.high}};
  thr["max_ppl"] = std::isfinite(thresholds.max_ppl) ? nlohmann::json(thresholds.max_ppl)
                                                      : nlohmann::json(nullptr);
  return {{"n_candidates", n},
          {"n_kept", kept},
          {"retained_share", n > 0 ? static_cast<double>(kept) / static_cast<double>(n) : 0.0},
          {"counts", counts},
          {"thresholds", thr},
          {"ppl_chosen", describe(ppl_w).to_json()},
          {"ppl_rejected", describe(ppl_l).to_json()},
          {"ppl_max", describe(ppl_max).to_json()},
          {"margin", describe(margin).to_json()},
          {"margin_kept", describe(margin_kept).to_json()},
          {"n_nonfinite",
           {{"ppl_chosen", bad_w}, {"ppl_rejected", bad_l}, {"ppl_max", bad_max},
            {"margin", bad_margin}}}};
}

nlohmann::json ips_table(const std::vector<double>& ips) {
  const std::vector<double> v = finite_only(ips);
  const Distribution d = describe(v);
  return {{"n", d.n},
          {"mean", d.mean},
          {"std", d.std},
          {"share_negative", share_where(v, [](double x) { return x < 0; })},
          {"distribution", d.to_json()},
          {"n_nonfinite", static_cast<int64_t>(ips.size() - v.size())}};
}

namespace {

// One Table 6 group: ratio and difference of a crop's CLIPScore against the whole image's.
nlohmann::json clip_group(const std::vector<double>& image, const std::vector<double>& crop) {
  std::vector<double> ratio, diff;
  int64_t undefined = 0;
  for (size_t i = 0; i < image.size(); ++i) {
    if (!std::isfinite(image[i]) || !std::isfinite(crop[i])) {
      ++undefined;
      continue;
    }
    diff.push_back(crop[i] - image[i]);
    if (image[i] > kClipEps)
      ratio.push_back(crop[i] / image[i]);
    else
      ++undefined;
  }
  nlohmann::json r = describe(ratio).to_json();
  r["share_gt_1"] = share_where(ratio, [](double x) { return x > 1; });
  nlohmann::json d = describe(diff).to_json();
  d["share_gt_0"] = share_where(diff, [](double x) { return x > 0; });
  return {{"improvement_ratio", r}, {"improvement_diff", d}, {"n_ratio_undefined", undefined}};
}

}  // namespace

nlohmann::json crop_clip_table(const std::vector<double>& clip_image,
                               const std::vector<double>& clip_crop,
                               const std::vector<double>& clip_inverse_crop) {
  if (clip_crop.size() != clip_image.size())
    throw std::invalid_argument("crop_clip_table: clip_crop has " +
                                std::to_string(clip_crop.size()) + " values, clip_image " +
                                std::to_string(clip_image.size()));
  if (!clip_inverse_crop.empty() && clip_inverse_crop.size() != clip_image.size())
    throw std::invalid_argument("crop_clip_table: clip_inverse_crop has " +
                                std::to_string(clip_inverse_crop.size()) + " values, clip_image " +
                                std::to_string(clip_image.size()));
  nlohmann::json out = {{"n", static_cast<int64_t>(clip_image.size())},
                        {"att_crop", clip_group(clip_image, clip_crop)},
                        {"clip_image", describe(finite_only(clip_image)).to_json()}};
  if (!clip_inverse_crop.empty()) out["att_inverse"] = clip_group(clip_image, clip_inverse_crop);
  return out;
}

}  // namespace p2dpo::pairs
