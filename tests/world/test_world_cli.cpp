// The world's command chain as a user runs it: make -> train-tokenizer -> train-clip ->
// clip-sanity -> train-base -> eval pope, a few steps each (CI's short version of the full run).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

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
  // ... and so is the dense per-patch class loss (the default world has 32 classes, 4 shapes x 8 colours, + background).
  EXPECT_EQ(p2dpo::io::read_json_file(d + "/clip/train_args.json")["options"]["dense_aux_weight"], 1.0);
  EXPECT_GT(clip["dense_classes"].get<int64_t>(), 1);
  EXPECT_LE(clip["dense_classes"].get<int64_t>(), 33);
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

// Object sizes are options of `world make` (per mille of the central square's side); the world
// records them and every object respects them. Bad ranges are refused by flag, before anything is written.
TEST(WorldCli, MakeTakesObjectSizeRanges) {
  const std::string d = p2dpo::test::scratch_dir("world_cli_sizes");
  auto made = run_cli({"world", "make", "--out", d + "/w", "--seed", "1", "--train", "12", "--prompts", "2", "--eval",
                       "4", "--small-size", "40,80", "--large-size", "300,400", "--quiet", "--json"});
  ASSERT_EQ(made.status, 0) << made.out;
  const auto world = p2dpo::io::read_json_file(d + "/w/world.json");
  EXPECT_EQ(world["vocabulary"]["sizes"]["small"]["min_permille"], 40);
  EXPECT_EQ(world["vocabulary"]["sizes"]["small"]["max_permille"], 80);
  EXPECT_EQ(world["vocabulary"]["sizes"]["large"]["min_permille"], 300);
  EXPECT_EQ(world["vocabulary"]["sizes"]["large"]["max_permille"], 400);
  std::ifstream scenes(d + "/w/scenes.jsonl");
  int objects = 0;
  for (std::string line; std::getline(scenes, line);) {
    const auto scene = nlohmann::json::parse(line);
    const int square = scene["central_square"][3].get<int>() - scene["central_square"][1].get<int>();
    for (const auto& o : scene["objects"]) {
      const int side = o["bbox"][2].get<int>() - o["bbox"][0].get<int>();
      const bool large = o["size"] == "large";
      // The generator draws the side in [ceil(S * min / 1000), floor(S * max / 1000)] pixels.
      EXPECT_GE(side * 1000, (large ? 300 : 40) * square) << line;
      EXPECT_LE(side * 1000, (large ? 400 : 80) * square) << line;
      ++objects;
    }
  }
  EXPECT_GT(objects, 18);
  // Small objects must stay below one patch (12 px of 96): 130 per mille is 12.5 px.
  auto too_big = run_cli({"world", "make", "--out", d + "/w2", "--small-size", "40,130", "--quiet"});
  EXPECT_NE(too_big.status, 0);
  EXPECT_NE(too_big.out.find("--small-size"), std::string::npos) << too_big.out;
  auto overlapping = run_cli({"world", "make", "--out", d + "/w3", "--large-size", "50,300", "--quiet"});
  EXPECT_NE(overlapping.status, 0);
  EXPECT_NE(overlapping.out.find("--large-size"), std::string::npos) << overlapping.out;
  auto one_value = run_cli({"world", "make", "--out", d + "/w4", "--large-size", "300", "--quiet"});
  EXPECT_NE(one_value.status, 0);
  EXPECT_NE(one_value.out.find("--large-size"), std::string::npos) << one_value.out;
  for (const char* w : {"/w2", "/w3", "/w4"}) EXPECT_FALSE(std::filesystem::exists(d + w + "/world.json")) << w;
}

}  // namespace
