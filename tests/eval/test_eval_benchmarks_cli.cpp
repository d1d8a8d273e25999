// `p2dpo eval hallusionbench` and `p2dpo eval amber` as a user calls them: scoring answer files
// (the official HallusionBench sample result; a hand-made AMBER file) and the exit status of bad input.
#include <gtest/gtest.h>

#include "cli_run.h"
#include "test_paths.h"

namespace p2dpo::test {
namespace {

TEST(EvalBenchmarksCli, HallusionBenchSampleResultIsScored) {
  const auto r = run_cli({"eval", "hallusionbench", "--benchmark", data_path("eval/hallusionbench/HallusionBench.json"),
                          "--answers", data_path("eval/hallusionbench/HallusionBench_result_sample.json")});
  ASSERT_EQ(r.status, 0) << r.out;
  // The rule-based values of the sample (see HallusionBench tests): vlmevalkit aAcc 115/211, official 155/254.
  EXPECT_NE(r.out.find("54.50 (115/211)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("61.02 (155/254)"), std::string::npos) << r.out;
  const auto bad = run_cli({"eval", "hallusionbench", "--benchmark", data_path("eval/hallusionbench/none.json"),
                            "--answers", data_path("eval/hallusionbench/HallusionBench_result_sample.json")});
  EXPECT_EQ(bad.status, 2) << bad.out;
  EXPECT_NE(bad.out.find("none.json"), std::string::npos) << bad.out;
}

TEST(EvalBenchmarksCli, AmberDiscriminativeAnswersAreScored) {
  const auto r = run_cli({"eval", "amber", "--data", data_path("eval/amber/data"), "--mode", "discriminative",
                          "--answers", data_path("eval/amber/hand_discriminative.json"), "--json"});
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("\"existence\""), std::string::npos) << r.out;
  const auto bad = run_cli({"eval", "amber", "--data", data_path("eval/amber/none"), "--answers",
                            data_path("eval/amber/hand_discriminative.json")});
  EXPECT_EQ(bad.status, 2) << bad.out;
}

}  // namespace
}  // namespace p2dpo::test
