// `p2dpo eval pope` through the executable: scoring recorded answers, a run on the tiny model, and
// bad input (status 2 and a message naming the file or flag).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>

#include "io/atomic_file.h"
#include "io/json_io.h"
#include "cli_run.h"
#include "test_paths.h"

namespace fs = std::filesystem;
using p2dpo::test::data_path;
using p2dpo::test::scratch_dir;

namespace {

using Run = p2dpo::test::CliRun;

Run run(std::vector<std::string> args, bool merge_stderr = true) {
  args.insert(args.begin(), {"eval", "pope"});
  return p2dpo::test::run_cli(args, merge_stderr);
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::vector<std::string> llava_args() {
  return {"--answers", data_path("pope/llava/answers-llava-v1.5-13b.jsonl"),
          "--questions", data_path("pope/llava/llava_pope_test.jsonl"),
          "--labels", data_path("pope/e3e3926/coco_pope_adversarial.json"),
          data_path("pope/e3e3926/coco_pope_popular.json"), data_path("pope/e3e3926/coco_pope_random.json")};
}

}  // namespace

TEST(PopeCli, ScoresLlavaAnswersToThePublishedNumbers) {
  auto out = scratch_dir("pope_cli_llava");
  auto args = llava_args();
  args.insert(args.end(), {"--json", "--out", out});
  auto r = run(args, /*merge_stderr=*/false);
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j, p2dpo::io::read_json_file(out + "/results.json"));
  ASSERT_EQ(j["results"].size(), 1u);
  EXPECT_NEAR(j["results"][0]["average"]["f1"].get<double>(), 0.859469, 5e-7);
  EXPECT_EQ(j["results"][0]["splits"]["random"]["n"], 2910);
  EXPECT_EQ(j["results"][0]["splits"]["adversarial"]["fp"], 117);
  EXPECT_TRUE(j["warnings"].empty());

  auto table = run(llava_args());
  ASSERT_EQ(table.status, 0) << table.out;
  EXPECT_TRUE(contains(table.out, "average        8910   86.98   94.56   78.80   85.95   42.12")) << table.out;
}

TEST(PopeCli, RunsTheTinyModelAndScoresItsAnswers) {
  auto out = scratch_dir("pope_cli_run");
  auto r = run({"--model", data_path("llava-tiny-s0"), "--questions", data_path("pope/tiny/tiny_pope_random.json"),
                "--images", data_path("llava-tiny-s0"), "--prompt-template", "USER: {question}\\n<image> ASSISTANT:",
                "--max-new-tokens", "4", "--noise-sigma", "0", "0.1", "--out", out, "--json", "--quiet"},
               /*merge_stderr=*/false);
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["protocol"]["prompt_template"], "USER: {question}\n<image> ASSISTANT:") << "\\n read as a newline";
  EXPECT_EQ(j["protocol"]["conv_mode"], "custom");
  EXPECT_EQ(j["protocol"]["model_id"], "llava-tiny-s0");
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][1]["sigma"], 0.1);
  EXPECT_EQ(j["results"][1]["splits"]["random"]["n"], 7);
  EXPECT_TRUE(fs::exists(out + "/answers/tiny_pope_random.pixel-sigma0.1.jsonl"));
  EXPECT_EQ(p2dpo::io::read_jsonl_file(out + "/answers/tiny_pope_random.clean.jsonl").size(), 7u);

  // The answers file alone scores again to the same numbers.
  auto again = run({"--answers", out + "/answers/tiny_pope_random.pixel-sigma0.1.jsonl", "--json"}, false);
  ASSERT_EQ(again.status, 0) << again.out;
  auto k = nlohmann::json::parse(again.out);
  EXPECT_EQ(k["results"][0]["splits"]["random"]["f1"], j["results"][1]["splits"]["random"]["f1"]);
  EXPECT_EQ(k["results"][0]["splits"]["random"]["tp"], j["results"][1]["splits"]["random"]["tp"]);
}

TEST(PopeCli, BadInputExitsWithStatus2AndNamesTheCulprit) {
  auto dir = scratch_dir("pope_cli_bad");
  auto r = run({"--model", data_path("llava-tiny-s0"), "--questions", data_path("pope/tiny/tiny_pope_random.json"),
                "--images", dir, "--out", dir + "/out"});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "error: " + dir + "/image0.png: image not found (question_id 1")) << r.out;

  const std::string bad = dir + "/answers.jsonl";
  p2dpo::io::write_file_atomic(bad, "{\"question_id\": 1, \"text\": \"No\"}\n{\"question_id\": 2, \"text\"\n");
  r = run({"--answers", bad, "--questions", data_path("pope/tiny/tiny_pope_random.json")});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "error: " + bad + ": line 2: malformed JSON")) << r.out;

  p2dpo::io::write_file_atomic(bad, "{\"question_id\": 12, \"text\": \"No\"}\n");
  r = run({"--answers", bad, "--questions", data_path("pope/tiny/tiny_pope_random.json")});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_TRUE(contains(r.out, bad + ": line 1: question_id 12 is not in the question files")) << r.out;

  r = run({"--questions", data_path("pope/tiny/tiny_pope_random.json")});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "error: --model: give --model")) << r.out;

  r = run({"--model", data_path("llava-tiny-s0"), "--questions", data_path("pope/tiny/tiny_pope_random.json"),
           "--images", data_path("llava-tiny-s0"), "--conv-mode", "vicuna_v9", "--out", dir + "/out"});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "error: --conv-mode: unknown mode 'vicuna_v9'")) << r.out;
}
