// `p2dpo demo --size ci`: the README's main command at CI size, through every stage (world, pairs,
// P2-DPO training, POPE with a noise sweep, CHAIR, AFR, IPS, report), on the shipped world model.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_run.h"
#include "io/atomic_file.h"
#include "io/json_io.h"
#include "test_paths.h"

namespace fs = std::filesystem;

namespace {

TEST(DemoCli, CiSizeRunsEveryStageAndResumes) {
  const std::string out = p2dpo::test::scratch_dir("demo-ci") + "/run";
  const auto r = p2dpo::test::run_cli({"demo", "--size", "ci", "--out", out, "--quiet"});
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* f : {"results.json", "report.html", "table.txt", "demo-config.json", "pairs/stats.json",
                        "train/adapter/adapter_config.json", "eval/base/pope/results.json",
                        "eval/p2dpo/chair/results.json", "eval/p2dpo/afr/results.json", "eval/p2dpo/ips/results.json"}) {
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  }
  const auto results = p2dpo::io::read_json_file(out + "/results.json");
  EXPECT_EQ(results["variants"], nlohmann::json({"base", "p2dpo"}));
  for (const auto& m : results["metrics"]) {
    for (const char* v : {"base", "p2dpo"}) {
      // The ci size sweeps sigma 0 and 0.2 only.
      if (m["key"] == "pope_f1_sigma0.1" || m["key"] == "pope_f1_sigma0.3") continue;
      EXPECT_TRUE(m["values"][v].is_number()) << m["key"] << " " << v;
    }
  }
  EXPECT_EQ(results["claims"].size(), 5u);
  EXPECT_EQ(results["commands"].size(), 13u);
  // The pairs-sanity stage: pair correctness against the world's truth, winners against the own answer.
  EXPECT_TRUE(results["pairs"]["focus"].contains("chosen_more_faithful"));
  EXPECT_GT(results["pairs"]["winners_vs_original"]["pairs"].get<int>(), 0);
  EXPECT_NE(r.out.find("pairs kept:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("POPE adversarial F1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("claims"), std::string::npos) << r.out;
  const std::string html = p2dpo::io::read_file(out + "/report.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("eval/p2dpo"), std::string::npos);

  // A rerun skips every finished stage but the report and writes the same table.
  const std::string table = p2dpo::io::read_file(out + "/table.txt");
  const auto again = p2dpo::test::run_cli({"demo", "--size", "ci", "--out", out, "--quiet"});
  ASSERT_EQ(again.status, 0) << again.out;
  size_t skipped = 0;
  for (size_t p = again.out.find("done earlier"); p != std::string::npos; p = again.out.find("done earlier", p + 1)) ++skipped;
  EXPECT_EQ(skipped, 12u) << again.out;  // all but the report, which is rebuilt from the others' outputs
  EXPECT_EQ(p2dpo::io::read_file(out + "/table.txt"), table);

  // By default the stages run side by side (one per core, one thread each); one after another
  // with one thread they give the same adapter and the same table: the schedule changes nothing.
  const std::string serial = p2dpo::test::scratch_dir("demo-ci-serial") + "/run";
  const auto one = p2dpo::test::run_cli({"demo", "--size", "ci", "--out", serial, "--quiet", "--jobs", "1", "--threads", "1"});
  ASSERT_EQ(one.status, 0) << one.out;
  EXPECT_EQ(p2dpo::io::read_file(serial + "/table.txt"), table);
  EXPECT_EQ(p2dpo::io::read_file(serial + "/train/adapter/adapter_model.safetensors"),
            p2dpo::io::read_file(out + "/train/adapter/adapter_model.safetensors"));
  EXPECT_EQ(p2dpo::io::read_json_file(serial + "/demo-config.json")["jobs"], 1);
}

// When an earlier stage's output cannot be used (here: a filter that keeps no pair, so neither
// the trainer nor the DPO baseline's pair count has anything to go on), the demo starts nothing
// new, lets the stages already running finish, exits non-zero naming the stage and the file, and
// writes neither a trained adapter nor a report.
TEST(DemoCli, AnUnusableEarlierOutputStopsTheDemoNamingTheStage) {
  const std::string repo = std::string(P2DPO_TEST_DATA) + "/../..";
  const std::string dir = p2dpo::test::scratch_dir("demo-keeps-nothing");
  const std::string config = dir + "/keep-nothing.yaml";
  // The world's pairs config with a PPL ceiling below 1, which no response can meet.
  p2dpo::io::write_file_atomic(config, p2dpo::io::read_file(repo + "/configs/world-pairs.yaml") +
                                           "  filter:\n    max_ppl: 0.5\n");
  const std::string out = dir + "/run";
  const auto r = p2dpo::test::run_cli({"demo", "--size", "ci", "--out", out, "--quiet", "--baseline", "dpo",
                                       "--pairs-config", config, "--prompts", "8"});
  EXPECT_NE(r.status, 0) << r.out;
  ASSERT_TRUE(fs::exists(out + "/pairs/stats.json")) << r.out;
  EXPECT_EQ(p2dpo::io::read_json_file(out + "/pairs/stats.json")["kept"], 0) << r.out;
  // Either the trainer fails (no pairs to train on) or the baseline cannot match a count of 0:
  // whichever comes first is named, with its file.
  const bool train_failed = r.out.find("train") != std::string::npos && r.out.find("exit status") != std::string::npos;
  const bool truth_unprepared = r.out.find("truth-pairs") != std::string::npos &&
                                r.out.find("no P2-DPO pairs kept") != std::string::npos;
  EXPECT_TRUE(train_failed || truth_unprepared) << r.out;
  EXPECT_FALSE(fs::exists(out + "/train/adapter/adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(out + "/train-dpo-offpolicy/adapter"));
  EXPECT_FALSE(fs::exists(out + "/report.html"));
  EXPECT_FALSE(fs::exists(out + "/results.json"));
}

TEST(DemoCli, BadFlagsExitWithStatus2) {
  const std::string out = p2dpo::test::scratch_dir("demo-bad") + "/run";
  auto r = p2dpo::test::run_cli({"demo", "--size", "huge", "--out", out});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("--size"), std::string::npos) << r.out;
  r = p2dpo::test::run_cli({"demo", "--ablate", "everything", "--out", out});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("--ablate"), std::string::npos) << r.out;
  r = p2dpo::test::run_cli({"demo", "--model", out + "/nope", "--out", out, "--size", "ci"});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("nope"), std::string::npos) << r.out;
  r = p2dpo::test::run_cli({"demo", "--jobs", "-1", "--out", out, "--size", "ci"});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("--jobs"), std::string::npos) << r.out;
}

}  // namespace
