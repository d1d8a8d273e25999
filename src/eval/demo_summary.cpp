#include "eval/demo_summary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>

#include "io/json_io.h"

namespace p2dpo::eval {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::optional<json> read_results(const fs::path& file) {
  if (!fs::exists(file)) return std::nullopt;
  return io::read_json_file(file.string());  // malformed -> InputError naming the file
}

json number_or_null(const json* v) {
  if (v == nullptr || !v->is_number()) return nullptr;
  return *v;
}

// The POPE result block for one sigma (0 = clean), or nullptr.
const json* pope_at_sigma(const json& pope, double sigma) {
  if (!pope.contains("results")) return nullptr;
  for (const auto& r : pope["results"]) {
    if (r.contains("sigma") && std::fabs(r["sigma"].get<double>() - sigma) < 1e-9) return &r;
  }
  return nullptr;
}

const json* at_path(const json& doc, const std::vector<std::string>& path) {
  const json* cur = &doc;
  for (const auto& key : path) {
    if (!cur->is_object() || !cur->contains(key)) return nullptr;
    cur = &(*cur)[key];
  }
  return cur;
}

struct MetricDef {
  std::string key, label, better, benchmark;
  std::string unit;  // fraction (shown x100), percent (shown as is) or raw
  // Extracts the value (a fraction for rates) from the benchmark's results document.
  std::function<json(const json&)> get;
};

std::vector<MetricDef> metric_defs() {
  auto pope = [](double sigma, std::vector<std::string> path) {
    return [sigma, path](const json& doc) -> json {
      const json* r = pope_at_sigma(doc, sigma);
      return r ? number_or_null(at_path(*r, path)) : json(nullptr);
    };
  };
  auto field = [](std::vector<std::string> path) {
    return [path](const json& doc) -> json { return number_or_null(at_path(doc, path)); };
  };
  return {
      {"pope_adversarial_f1", "POPE adversarial F1", "higher", "pope", "fraction", pope(0.0, {"splits", "adversarial", "f1"})},
      {"pope_adversarial_acc", "POPE adversarial acc", "higher", "pope", "fraction", pope(0.0, {"splits", "adversarial", "accuracy"})},
      {"pope_random_acc", "POPE random acc", "higher", "pope", "fraction", pope(0.0, {"splits", "random", "accuracy"})},
      {"pope_avg_f1", "POPE avg F1", "higher", "pope", "fraction", pope(0.0, {"average", "f1"})},
      {"pope_avg_acc", "POPE avg acc", "higher", "pope", "fraction", pope(0.0, {"average", "accuracy"})},
      {"pope_avg_yes", "POPE avg yes %", "closer_to_50", "pope", "fraction", pope(0.0, {"average", "yes_ratio"})},
      {"pope_f1_sigma0.1", "POPE avg F1, sigma 0.1", "higher", "pope", "fraction", pope(0.1, {"average", "f1"})},
      {"pope_f1_sigma0.2", "POPE avg F1, sigma 0.2", "higher", "pope", "fraction", pope(0.2, {"average", "f1"})},
      {"pope_f1_sigma0.3", "POPE avg F1, sigma 0.3", "higher", "pope", "fraction", pope(0.3, {"average", "f1"})},
      {"chair_i", "CHAIR_i", "lower", "chair", "fraction", field({"metrics", "chair_i"})},
      {"chair_s", "CHAIR_s", "lower", "chair", "fraction", field({"metrics", "chair_s"})},
      {"chair_recall", "CHAIR recall", "higher", "chair", "fraction", field({"metrics", "recall"})},
      {"afr", "AFR (mean of layers)", "higher", "afr", "raw", field({"afr_mean_over_layers"})},
      {"afr_pacc_layer", "AFR at the P-Acc layer", "higher", "afr", "raw", field({"afr_pacc_layer"})},
      {"p_acc", "P-Acc (%)", "higher", "afr", "percent", field({"pacc"})},
      {"image_attention", "attention to image", "higher", "afr", "fraction", field({"mean_image_ratio"})},
      {"ips_focus", "IPS focus (mean)", "higher", "ips", "raw", field({"focus", "mean"})},
      {"ips_robust", "IPS robust (mean)", "higher", "ips", "raw", field({"robust", "mean"})},
  };
}

std::optional<double> value_of(const json& metrics, const std::string& key, const std::string& variant) {
  for (const auto& m : metrics) {
    if (m["key"] == key) {
      const auto& v = m["values"];
      if (v.contains(variant) && v[variant].is_number()) return v[variant].get<double>();
    }
  }
  return std::nullopt;
}

json claim(const std::string& text, std::optional<bool> holds, const std::string& detail) {
  return {{"claim", text}, {"holds", holds ? json(*holds) : json(nullptr)}, {"detail", detail}};
}

std::string pts(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.2f", 100.0 * fraction);
  return buf;
}

}  // namespace

json summarize_demo(const std::string& demo_dir, const std::vector<std::string>& variants) {
  const auto defs = metric_defs();
  json sources = json::object();
  std::map<std::string, std::map<std::string, json>> docs;  // variant -> benchmark -> doc
  for (const auto& v : variants) {
    for (const char* bench : {"pope", "chair", "afr", "ips"}) {
      const fs::path file = fs::path(demo_dir) / "eval" / v / bench / "results.json";
      if (auto doc = read_results(file)) {
        docs[v][bench] = std::move(*doc);
        sources[v][bench] = fs::relative(file, demo_dir).string();
      }
    }
  }
  json metrics = json::array();
  for (const auto& d : defs) {
    json values = json::object();
    for (const auto& v : variants) {
      const auto it = docs[v].find(d.benchmark);
      values[v] = it == docs[v].end() ? json(nullptr) : d.get(it->second);
    }
    metrics.push_back({{"key", d.key}, {"label", d.label}, {"better", d.better}, {"benchmark", d.benchmark},
                       {"unit", d.unit}, {"values", values}});
  }

  // The paper's claims, as the issue states them, on p2dpo vs base.
  json claims = json::array();
  auto delta = [&](const std::string& key, const std::string& a, const std::string& b) -> std::optional<double> {
    auto x = value_of(metrics, key, a), y = value_of(metrics, key, b);
    if (!x || !y) return std::nullopt;
    return *x - *y;
  };
  auto has = [&](const std::string& v) { return std::find(variants.begin(), variants.end(), v) != variants.end(); };
  if (has("p2dpo") && has("base")) {
    auto d = delta("pope_adversarial_f1", "p2dpo", "base");
    claims.push_back(claim(">= +3 adversarial POPE F1 over base", d ? std::optional<bool>(*d >= 0.03) : std::nullopt,
                           d ? pts(*d) + " points" : "missing"));
    auto a = delta("pope_avg_acc", "p2dpo", "base");
    claims.push_back(claim("higher POPE accuracy than base", a ? std::optional<bool>(*a > 0) : std::nullopt,
                           a ? pts(*a) + " points" : "missing"));
    auto yp = value_of(metrics, "pope_avg_yes", "p2dpo"), yb = value_of(metrics, "pope_avg_yes", "base");
    std::optional<bool> yes_ok;
    std::string yes_detail = "missing";
    if (yp && yb) {
      yes_ok = std::fabs(*yp - 0.5) <= std::fabs(*yb - 0.5) + 1e-12;
      yes_detail = "yes ratio " + pts(*yb).substr(1) + "% -> " + pts(*yp).substr(1) + "%";
    }
    claims.push_back(claim("yes-ratio no further from 50 %", yes_ok, yes_detail));
    auto s = delta("pope_f1_sigma0.2", "p2dpo", "base");
    claims.push_back(claim(">= +4 POPE F1 at sigma 0.2 over base", s ? std::optional<bool>(*s >= 0.04) : std::nullopt,
                           s ? pts(*s) + " points" : "missing"));
    auto c = delta("chair_i", "p2dpo", "base");
    claims.push_back(claim("lower CHAIR_i than base", c ? std::optional<bool>(*c < 0) : std::nullopt,
                           c ? pts(*c) + " points" : "missing"));
  }
  for (const auto& v : variants) {
    if (v == "base" || v == "p2dpo" || !has("p2dpo")) continue;
    const bool ablation = v.rfind("ablate-", 0) == 0;
    auto d = delta("pope_adversarial_f1", "p2dpo", v);
    claims.push_back(claim(std::string(ablation ? "full P2-DPO above ablation " : "P2-DPO above baseline ") + v +
                               " (adversarial POPE F1)",
                           d ? std::optional<bool>(*d > 0) : std::nullopt, d ? pts(*d) + " points" : "missing"));
  }
  json out = {{"demo_dir", demo_dir}, {"variants", variants}, {"metrics", metrics}, {"claims", claims}, {"sources", sources}};
  // Pair correctness against the world's truth (`p2dpo world pairs-sanity --kept-only`), if run.
  if (auto sanity = read_results(fs::path(demo_dir) / "pairs" / "sanity.json")) out["pairs"] = *sanity;
  return out;
}

std::string format_demo_table(const json& summary) {
  const auto variants = summary["variants"].get<std::vector<std::string>>();
  const bool has_base = std::find(variants.begin(), variants.end(), "base") != variants.end();
  std::string out;
  char buf[128];
  std::snprintf(buf, sizeof buf, "%-24s", "metric");
  out += buf;
  for (const auto& v : variants) {
    std::snprintf(buf, sizeof buf, " %17s", v.substr(0, 17).c_str());
    out += buf;
  }
  out += "\n";
  for (const auto& m : summary["metrics"]) {
    bool any = false;
    for (const auto& v : variants) any = any || m["values"][v].is_number();
    if (!any) continue;
    std::snprintf(buf, sizeof buf, "%-24s", m["label"].get<std::string>().substr(0, 24).c_str());
    out += buf;
    const double scale = m["unit"] == "fraction" ? 100.0 : 1.0;
    const json& base = has_base ? m["values"]["base"] : json(nullptr);
    for (const auto& v : variants) {
      const json& x = m["values"][v];
      if (!x.is_number()) {
        std::snprintf(buf, sizeof buf, " %17s", "-");
      } else if (v != "base" && base.is_number()) {
        std::snprintf(buf, sizeof buf, " %8.2f [%+6.2f]", scale * x.get<double>(),
                      scale * (x.get<double>() - base.get<double>()));
      } else {
        std::snprintf(buf, sizeof buf, " %17.2f", scale * x.get<double>());
      }
      out += buf;
    }
    out += "\n";
  }
  if (summary.contains("pairs")) {
    // Shares of kept pairs (the world's truth): which side names fewer absent objects, or as many
    // and more present ones.
    const json& p = summary["pairs"];
    auto pct = [](const json& tally, const char* key) {
      const json* v = tally.contains(key) ? &tally[key] : nullptr;
      return v && v->is_number() ? 100.0 * v->get<double>() : std::nan("");
    };
    out += "\npairs kept: " + std::to_string(p.value("pairs", 0)) + "; more faithful to the truth (%):\n";
    for (const char* type : {"focus", "robust"}) {
      if (!p.contains(type)) continue;
      std::snprintf(buf, sizeof buf, "  %-6s chosen %5.1f  rejected %5.1f  neither %5.1f\n", type,
                    pct(p[type], "chosen_more_faithful"), pct(p[type], "rejected_more_faithful"), pct(p[type], "neither"));
      out += buf;
    }
    if (p.contains("winners_vs_original")) {
      out += "the winner against the model's own greedy answer on the plain view (%):\n";
      for (const char* type : {"focus", "robust"}) {
        const json t = p["winners_vs_original"].value(type, json::object());
        std::snprintf(buf, sizeof buf, "  %-6s winner %5.1f  own answer %5.1f  neither %5.1f\n", type,
                      pct(t, "winner_more_faithful"), pct(t, "original_more_faithful"), pct(t, "neither"));
        out += buf;
      }
    }
  }
  if (!summary["claims"].empty()) {
    out += "\nclaims (P2-DPO paper, on this world):\n";
    for (const auto& c : summary["claims"]) {
      const char* mark = c["holds"].is_null() ? "n/a " : (c["holds"].get<bool>() ? "yes " : "NO  ");
      out += std::string("  ") + mark + c["claim"].get<std::string>() + ": " + c["detail"].get<std::string>() + "\n";
    }
  }
  return out;
}

}  // namespace p2dpo::eval
