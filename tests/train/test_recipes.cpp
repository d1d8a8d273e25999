// The shipped recipes (configs/*.yaml) load, and each states its preset's values: a released-code
// recipe that silently kept a paper value (or the reverse) would run another experiment than its name.
#include <gtest/gtest.h>

#include <filesystem>

#include "pairs/config.h"
#include "test_paths.h"
#include "train/p2dpo_config.h"

namespace p2dpo {
namespace {

std::string recipe(const std::string& name) { return test::data_path("../../configs/" + name); }

TEST(Recipes, LlavaPairsRecipesMatchTheirPresets) {
  const auto paper = pairs::load_pairs_config(recipe("llava-1.5-7b-pairs.yaml"));
  const auto released = pairs::load_pairs_config(recipe("llava-1.5-7b-released-code-pairs.yaml"));
  const auto released_preset = pairs::preset_config("released-code");
  EXPECT_EQ(paper.preset, "paper");
  EXPECT_EQ(paper.prompt.attention, "locate");
  EXPECT_EQ(paper.filter.margin_rule, "percentile");
  EXPECT_EQ(released.preset, "released-code");
  EXPECT_EQ(released.prompt.attention, released_preset.prompt.attention);
  EXPECT_EQ(released.filter.margin_rule, released_preset.filter.margin_rule);
  EXPECT_EQ(released.robust.prompt, released_preset.robust.prompt);
  EXPECT_EQ(released.robust.loser_prompt, released_preset.robust.loser_prompt);
  EXPECT_EQ(released.erase.pil_inclusive_end, true);
  // The 7B recipes leave the decoding switches to the device (frozen caches and fused loops on CUDA).
  for (const auto* c : {&paper, &released}) {
    EXPECT_EQ(c->attention.batch, 8);  // a batch's maps in one pass (only the query row is differentiated)
    EXPECT_FALSE(c->decoding.fixed_cache.has_value());
    EXPECT_FALSE(c->decoding.fuse_stages.has_value());
  }
}

TEST(Recipes, LlavaTrainRecipesMatchTheirPresets) {
  const auto paper = train::load_train_config(recipe("llava-1.5-7b-train.yaml"));
  const auto released = train::load_train_config(recipe("llava-1.5-7b-released-code-train.yaml"));
  const auto preset = train::train_preset("released-code");
  EXPECT_EQ(paper.lora.r, 64);
  EXPECT_DOUBLE_EQ(paper.lr, 2e-5);
  // Four pairs per forward with recomputed layers: the measured 7B setting (bench/README.md).
  EXPECT_EQ(paper.micro_batch_size, 4);
  EXPECT_EQ(paper.recompute_layers, -1);  // every layer
  EXPECT_EQ(released.micro_batch_size, 4);
  EXPECT_EQ(released.recompute_layers, -1);
  EXPECT_EQ(released.preset, "released-code");
  EXPECT_EQ(released.lora.r, preset.lora.r);
  EXPECT_DOUBLE_EQ(released.lora.alpha, preset.lora.alpha);
  EXPECT_DOUBLE_EQ(released.lora.dropout, preset.lora.dropout);
  EXPECT_EQ(released.lora.target_modules, preset.lora.target_modules);
  EXPECT_DOUBLE_EQ(released.lr, preset.lr);
  EXPECT_EQ(released.warmup_steps, preset.warmup_steps);
  EXPECT_DOUBLE_EQ(released.warmup_ratio, preset.warmup_ratio);
  EXPECT_DOUBLE_EQ(released.adamw.beta2, preset.adamw.beta2);
  EXPECT_DOUBLE_EQ(released.adamw.weight_decay, preset.adamw.weight_decay);
}

TEST(Recipes, WorldRecipesLoad) {
  EXPECT_EQ(pairs::load_pairs_config(recipe("world-pairs.yaml")).preset, "paper");
  EXPECT_DOUBLE_EQ(train::load_train_config(recipe("world-train.yaml")).lr, 1e-3);
}

}  // namespace
}  // namespace p2dpo
