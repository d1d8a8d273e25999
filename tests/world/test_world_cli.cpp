// The world's command chain as a user runs it: make -> train-tokenizer -> train-clip ->
// clip-sanity -> train-base -> eval pope, a few steps each (CI's short version of the full run).
#include <gtest/gtest.h>

#include <filesystem>

#include "cli_run.h"
#include "io/json_io.h"
#include "test_paths.h"

using p2dpo::test::run_cli;

namespace {

nlohmann::json json_of(const p2dpo::test::CliRun& r) {
  EXPECT_EQ(r.status, 0) << r.out;
  return nlohmann::json::parse(r.out);
}

TEST(WorldCli, TheWholeChainRunsAndWritesAnHfModelThatPopeEvaluates) {
  const std::string d = p2dpo::test::scratch_dir("world_cli");
  auto made = json_of(run_cli({"world", "make", "--out", d + "/w", "--seed", "2", "--train", "32", "--prompts", "4",
                               "--eval", "8", "--quiet", "--json"}, false));
  EXPECT_EQ(made["images"], 44);
  auto tok = json_of(run_cli({"world", "train-tokenizer", "--world", d + "/w", "--out", d + "/tok", "--json"}, false));
  EXPECT_EQ(tok["image_token_id"].get<int64_t>() + 1, tok["pad_token_id"].get<int64_t>());
  auto clip = json_of(run_cli({"world", "train-clip", "--world", d + "/w", "--out", d + "/clip", "--steps", "3",
                               "--batch", "8", "--quiet", "--json"}, false));
  EXPECT_EQ(clip["steps_done"], 3);
  // The CLIP takes the world's input geometry (world.json), and hard negatives are on by default.
  const auto world_json = p2dpo::io::read_json_file(d + "/w/world.json");
  const auto clip_config = p2dpo::io::read_json_file(d + "/clip/config.json");
  EXPECT_EQ(clip_config["vision_config"]["patch_size"], world_json["model_input"]["patch_size"]);
  EXPECT_EQ(clip_config["vision_config"]["image_size"], world_json["model_input"]["input_side"]);
  EXPECT_EQ(p2dpo::io::read_json_file(d + "/clip/train_args.json")["options"]["hard_negatives"], true);
  // ... and so is the dense per-patch class loss (the world has 16 classes at most, + background).
  EXPECT_EQ(p2dpo::io::read_json_file(d + "/clip/train_args.json")["options"]["dense_aux_weight"], 1.0);
  EXPECT_GT(clip["dense_classes"].get<int64_t>(), 1);
  EXPECT_LE(clip["dense_classes"].get<int64_t>(), 17);
  auto sanity = json_of(run_cli({"world", "clip-sanity", "--clip", d + "/clip", "--world", d + "/w",
                                 "--max-questions", "10", "--out", d + "/sanity.json", "--json"}, false));
  EXPECT_GT(sanity["all"]["questions"].get<int64_t>(), 0);
  EXPECT_TRUE(std::filesystem::exists(d + "/sanity.json"));
  auto base = json_of(run_cli({"world", "train-base", "--world", d + "/w", "--clip", d + "/clip", "--tokenizer",
                               d + "/tok", "--out", d + "/base", "--hidden", "32", "--intermediate", "64", "--layers",
                               "2", "--heads", "4", "--kv-heads", "4", "--steps", "1,1,1,1,0,1", "--zoom-share",
                               "0.5", "--quiet", "--json"}, false));
  EXPECT_EQ(base["steps_done"], 5);  // the vision stage skipped, the zoom stage run
  EXPECT_FALSE(std::filesystem::is_empty(d + "/base/stages/zoom/zoom"));
  EXPECT_EQ(p2dpo::io::read_json_file(d + "/base/config.json")["stages"][5]["zoom_share"], 0.5);
  auto pope = run_cli({"eval", "pope", "--model", d + "/base/model", "--questions",
                       d + "/w/eval/pope/world_pope_adversarial.json", "--images", d + "/w/images/eval",
                       "--prompt-template", "USER: {question}\n<image> ASSISTANT:", "--no-answer-suffix",
                       "--max-new-tokens", "4", "--limit", "6", "--out", d + "/pope", "--json"}, false);
  ASSERT_EQ(pope.status, 0) << pope.out;
  EXPECT_TRUE(std::filesystem::exists(d + "/pope/results.json"));
  // Bad input names the flag: train-base without a tokenizer.
  auto bad = run_cli({"world", "train-base", "--world", d + "/w", "--clip", d + "/clip", "--out", d + "/b2"});
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("--tokenizer"), std::string::npos) << bad.out;
  auto bad_share = run_cli({"world", "train-base", "--world", d + "/w", "--clip", d + "/clip", "--tokenizer",
                            d + "/tok", "--out", d + "/b3", "--zoom-share", "1.5"});
  EXPECT_NE(bad_share.status, 0);
  EXPECT_NE(bad_share.out.find("--zoom-share"), std::string::npos) << bad_share.out;
  EXPECT_FALSE(std::filesystem::exists(d + "/b3/config.json"));
  // A world.json without model_input (an older world): train-clip names the file and the field,
  // and the explicit geometry flags still work.
  auto world = p2dpo::io::read_json_file(d + "/w/world.json");
  world.erase("model_input");
  p2dpo::io::write_json_atomic(d + "/w/world.json", world);
  auto no_geometry = run_cli({"world", "train-clip", "--world", d + "/w", "--out", d + "/clip2", "--steps", "1",
                              "--batch", "8", "--quiet"});
  EXPECT_NE(no_geometry.status, 0);
  EXPECT_NE(no_geometry.out.find("world.json"), std::string::npos) << no_geometry.out;
  EXPECT_NE(no_geometry.out.find("model_input.input_side"), std::string::npos) << no_geometry.out;
  EXPECT_FALSE(std::filesystem::exists(d + "/clip2/model.safetensors"));
  auto explicit_geometry = json_of(run_cli({"world", "train-clip", "--world", d + "/w", "--out", d + "/clip2", "--steps",
                                            "1", "--batch", "8", "--image-size", "32", "--patch-size", "8", "--quiet",
                                            "--json"}, false));
  EXPECT_EQ(explicit_geometry["steps_done"], 1);
  EXPECT_EQ(p2dpo::io::read_json_file(d + "/clip2/config.json")["vision_config"]["image_size"], 32);
}

}  // namespace
