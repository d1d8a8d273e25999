// The demo's results.json and terminal table from hand-made evaluator results.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "eval/demo_summary.h"
#include "io/atomic_file.h"
#include "io/json_io.h"
#include "test_paths.h"
#include "test_util.h"

namespace p2dpo::eval {
namespace {
using nlohmann::json;

json pope_doc(double adv_f1, double avg_acc, double yes, double f1_02) {
  auto block = [](double sigma, double adv, double acc, double yes_ratio, double avg_f1) {
    return json{{"sigma", sigma},
                {"splits", {{"adversarial", {{"f1", adv}, {"accuracy", acc}}}, {"random", {{"accuracy", acc}}}}},
                {"average", {{"f1", avg_f1}, {"accuracy", acc}, {"yes_ratio", yes_ratio}}}};
  };
  return {{"benchmark", "pope"}, {"results", {block(0.0, adv_f1, avg_acc, yes, adv_f1 + 0.01), block(0.2, 0, 0, 0, f1_02)}}};
}

TEST(DemoSummary, MetricsDeltasAndClaims) {
  const std::string dir = test::scratch_dir("demo-summary");
  io::write_json_atomic(dir + "/eval/base/pope/results.json", pope_doc(0.60, 0.62, 0.70, 0.55));
  io::write_json_atomic(dir + "/eval/p2dpo/pope/results.json", pope_doc(0.65, 0.66, 0.58, 0.58));
  io::write_json_atomic(dir + "/eval/ablate-focus/pope/results.json", pope_doc(0.66, 0.60, 0.60, 0.50));
  io::write_json_atomic(dir + "/eval/base/chair/results.json", {{"benchmark", "chair"}, {"metrics", {{"chair_i", 0.30}}}});
  io::write_json_atomic(dir + "/eval/p2dpo/chair/results.json", {{"benchmark", "chair"}, {"metrics", {{"chair_i", 0.25}}}});
  const auto s = summarize_demo(dir, {"base", "p2dpo", "ablate-focus"});
  auto value = [&](const std::string& key, const std::string& v) {
    for (const auto& m : s["metrics"]) {
      if (m["key"] == key) return m["values"][v];
    }
    return json("missing metric");
  };
  EXPECT_DOUBLE_EQ(value("pope_adversarial_f1", "p2dpo").get<double>(), 0.65);
  EXPECT_DOUBLE_EQ(value("pope_f1_sigma0.2", "base").get<double>(), 0.55);
  EXPECT_TRUE(value("pope_f1_sigma0.3", "base").is_null());  // no sigma 0.3 block
  EXPECT_TRUE(value("chair_i", "ablate-focus").is_null());     // no file
  EXPECT_EQ(s["sources"]["p2dpo"]["pope"], "eval/p2dpo/pope/results.json");

  std::map<std::string, json> claims;
  for (const auto& c : s["claims"]) claims[c["claim"]] = c["holds"];
  EXPECT_EQ(claims.at(">= +3 adversarial POPE F1 over base"), true);       // +5
  EXPECT_EQ(claims.at("higher POPE accuracy than base"), true);
  EXPECT_EQ(claims.at("yes-ratio no further from 50 %"), true);            // 70 -> 58
  EXPECT_EQ(claims.at(">= +4 POPE F1 at sigma 0.2 over base"), false);     // +3
  EXPECT_EQ(claims.at("lower CHAIR_i than base"), true);
  EXPECT_EQ(claims.at("full P2-DPO above ablation ablate-focus (adversarial POPE F1)"), false);  // 65 < 66

  const std::string table = format_demo_table(s);
  EXPECT_NE(table.find("POPE adversarial F1"), std::string::npos) << table;
  EXPECT_NE(table.find("[ +5.00]"), std::string::npos) << table;
  EXPECT_NE(table.find("NO  >= +4 POPE F1 at sigma 0.2"), std::string::npos) << table;
  EXPECT_EQ(table.find("AFR"), std::string::npos) << "rows without any value are left out";
  EXPECT_FALSE(s.contains("pairs"));  // no pairs-sanity file
  EXPECT_EQ(table.find("pairs kept"), std::string::npos);

  // The pairs-sanity stage's file joins results.json and the table, shares in per cent.
  auto tally = [](double first, double second, const char* a, const char* b) {
    return json{{std::string(a) + "_more_faithful", first}, {std::string(b) + "_more_faithful", second},
                {"neither", 1.0 - first - second}};
  };
  io::write_json_atomic(dir + "/pairs/sanity.json",
                        {{"pairs", 196},
                         {"focus", tally(0.291, 0.219, "chosen", "rejected")},
                         {"robust", tally(0.663, 0.036, "chosen", "rejected")},
                         {"winners_vs_original",
                          {{"pairs", 196},
                           {"focus", tally(0.173, 0.235, "winner", "original")},
                           {"robust", tally(0.082, 0.102, "winner", "original")}}}});
  const auto with_pairs = summarize_demo(dir, {"base", "p2dpo"});
  EXPECT_EQ(with_pairs["pairs"]["pairs"], 196);
  const std::string t2 = format_demo_table(with_pairs);
  EXPECT_NE(t2.find("pairs kept: 196"), std::string::npos) << t2;
  EXPECT_NE(t2.find("focus  chosen  29.1  rejected  21.9  neither  49.0"), std::string::npos) << t2;
  EXPECT_NE(t2.find("robust winner   8.2  own answer  10.2  neither  81.6"), std::string::npos) << t2;
}

TEST(DemoSummary, MalformedResultNamesTheFile) {
  const std::string dir = test::scratch_dir("demo-summary-bad");
  std::filesystem::create_directories(dir + "/eval/base/pope");
  io::write_file_atomic(dir + "/eval/base/pope/results.json", "{not json");
  const auto err = test::error_of([&] { summarize_demo(dir, {"base"}); });
  EXPECT_NE(err.find("eval/base/pope/results.json"), std::string::npos) << err;
}

}  // namespace
}  // namespace p2dpo::eval
