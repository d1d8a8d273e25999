// The world base-model trainer on a tiny world: the stages run end to end and save a llava-hf
// model; a run stopped mid-way and resumed ends with the same weights as an uninterrupted one.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "io/json_io.h"
#include "models/llava.h"
#include "test_paths.h"
#include "test_util.h"
#include "world/base_train.h"
#include "world/make_world.h"

using namespace p2dpo;
namespace fs = std::filesystem;

namespace {

const std::string& tiny_world() {
  static const std::string dir = [] {
    world::WorldOptions w;
    w.out_dir = test::scratch_dir("base_train_world") + "/world";
    w.seed = 3;
    w.train_count = 12;
    w.prompt_count = 2;
    w.eval_count = 4;
    world::make_world(w);
    return w.out_dir;
  }();
  return dir;
}

world::BaseTrainOptions tiny_options(const std::string& out) {
  world::BaseTrainOptions o;
  o.world_dir = tiny_world();
  o.clip_dir = test::data_path("clip-tiny-s0");
  o.tokenizer_dir = test::data_path("llava-tiny-s0");
  o.out_dir = out;
  o.model.hidden_size = 32;
  o.model.intermediate_size = 64;
  o.model.num_layers = 2;
  o.model.num_heads = 4;
  o.model.num_kv_heads = 4;
  o.stages = {{"text", "lm", "all", 0, 2, 1e-3, 4, 2},
              {"projector", "projector", "descriptions", 0, 2, 1e-3, 4, 2},
              {"full", "projector+lm", "all", 0, 2, 1e-3, 4, 2}};
  o.save_every = 1;
  o.seed = 5;
  o.progress = false;
  return o;
}

TEST(WorldBaseTrain, StagesRunAndSaveALoadableModel) {
  torch::set_num_threads(1);
  const auto out = test::scratch_dir("base_train_full");
  auto r = world::train_world_base(tiny_options(out));
  ASSERT_EQ(r.model_dir, out + "/model");
  EXPECT_EQ(r.finished_stages, (std::vector<std::string>{"text", "projector", "full"}));
  EXPECT_EQ(r.total_steps_done, 6);
  auto model = models::LlavaModel::load(r.model_dir);
  auto init = models::LlavaModel::load(out + "/init");
  auto trained = model->named_parameters(), before = init->named_parameters();
  // The projector and the LM changed; the CLIP tower (never trainable) did not.
  EXPECT_FALSE(torch::equal(trained.at("multi_modal_projector.linear_1.weight"), before.at("multi_modal_projector.linear_1.weight")));
  EXPECT_FALSE(torch::equal(trained.at("language_model.model.layers.0.mlp.up_proj.weight"),
                            before.at("language_model.model.layers.0.mlp.up_proj.weight")));
  EXPECT_TRUE(torch::equal(trained.at("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"),
                           before.at("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight")));
  for (const char* s : {"text", "projector", "full"}) {
    EXPECT_TRUE(fs::exists(out + "/stages/" + s + "/done.json")) << s;
    EXPECT_EQ(io::read_jsonl_file(out + "/stages/" + s + "/metrics.jsonl").size(), 2u) << s;
  }
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  // Finished: a rerun does nothing and returns the same model.
  auto again = world::train_world_base(tiny_options(out));
  EXPECT_EQ(again.total_steps_done, 6);
}

TEST(WorldBaseTrain, AVisionStageTrainsTheTowerBelowTheFeatureLayer) {
  torch::set_num_threads(1);
  const auto out = test::scratch_dir("base_train_vision");
  auto o = tiny_options(out);
  o.stages = {{"full", "projector+lm+vision", "all", 0, 2, 1e-3, 4, 2}};
  auto r = world::train_world_base(o);
  ASSERT_EQ(r.model_dir, out + "/model");
  auto trained = models::LlavaModel::load(r.model_dir)->named_parameters();
  auto before = models::LlavaModel::load(out + "/init")->named_parameters();
  const auto changed = [&](const std::string& name) { return !torch::equal(trained.at(name), before.at(name)); };
  EXPECT_TRUE(changed("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"));
  EXPECT_TRUE(changed("vision_tower.vision_model.embeddings.patch_embedding.weight"));
  EXPECT_TRUE(changed("language_model.model.layers.0.mlp.up_proj.weight"));
  // The tiny CLIP has 3 layers and the model reads the second-to-last hidden state: layer 2 feeds
  // nothing, gets no gradient and no update (AdamW skips parameters without a gradient).
  EXPECT_FALSE(changed("vision_tower.vision_model.encoder.layers.2.mlp.fc1.weight"));
  o.stages[0].trainable = "vision";
  o.out_dir = test::scratch_dir("base_train_vision_bad");
  EXPECT_NE(test::error_of([&] { world::train_world_base(o); }).find("projector+lm+vision"), std::string::npos);
}

TEST(WorldBaseTrain, StoppedAndResumedEqualsUninterrupted) {
  torch::set_num_threads(1);
  const auto full = test::scratch_dir("base_train_ref"), split = test::scratch_dir("base_train_split");
  world::train_world_base(tiny_options(full));
  auto first = tiny_options(split);
  first.stop_after_total_steps = 3;  // inside the projector stage
  auto r1 = world::train_world_base(first);
  EXPECT_TRUE(r1.model_dir.empty());
  EXPECT_EQ(r1.total_steps_done, 3);
  auto r2 = world::train_world_base(tiny_options(split));
  ASSERT_EQ(r2.model_dir, split + "/model");
  auto a = models::LlavaModel::load(full + "/model")->named_parameters();
  auto b = models::LlavaModel::load(split + "/model")->named_parameters();
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
}

}  // namespace
