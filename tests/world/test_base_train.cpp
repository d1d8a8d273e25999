// The world base-model trainer on a tiny world: the stages run end to end and save a llava-hf
// model; a run stopped mid-way and resumed ends with the same weights as an uninterrupted one.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>

#include "io/atomic_file.h"
#include "io/json_io.h"
#include "image/decode.h"
#include "models/llava.h"
#include "text/prompt.h"
#include "train/conversations.h"
#include "test_paths.h"
#include "test_util.h"
#include "world/base_train.h"
#include "world/make_world.h"
#include "world/scene_io.h"

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

// Does `img` hold a pixel of exactly this colour? (Objects are filled with their exact jittered colour;
// only their anti-aliased rims blend with the background.)
bool has_colour(const image::ImageU8& img, const world::Rgb& c) {
  for (size_t i = 0; i + 2 < img.rgb.size(); i += 3)
    if (img.rgb[i] == c[0] && img.rgb[i + 1] == c[1] && img.rgb[i + 2] == c[2]) return true;
  return false;
}

TEST(WorldBaseTrain, ZoomCopiesShowTheAskedObjectInASecondSlot) {
  const std::string w = tiny_world();
  const auto convs = train::load_llava_conversations(w + "/train/conversations.json", w);
  const auto vocab = world::vocabulary_from_world_json(w + "/world.json");
  std::map<std::string, world::Scene> scene_of;
  for (auto& sc : world::read_scenes(w, vocab)) scene_of[(fs::path(w) / world::image_rel_path(sc)).lexically_normal().string()] = sc;

  const auto all_dir = test::scratch_dir("zoom_all"), half_dir = test::scratch_dir("zoom_half");
  const auto all = world::zoom_conversations(convs, w, 1.0, 96, 7, all_dir);
  size_t with_image = 0;
  for (const auto& c : convs) with_image += c.images.size() == 1;
  ASSERT_EQ(all.size(), with_image);  // every scene of the world has an object

  std::map<std::string, const train::Conversation*> original;
  for (const auto& c : convs) original[c.id] = &c;
  int named_checked = 0;
  for (const auto& z : all) {
    ASSERT_EQ(z.id.substr(z.id.size() - 5), "-zoom");
    const auto& o = *original.at(z.id.substr(0, z.id.size() - 5));
    ASSERT_EQ(z.images.size(), 2u);
    EXPECT_EQ(z.images[0], o.images[0]);
    EXPECT_EQ(text::count_image_markers(z.turns[0].human), 2) << z.turns[0].human;
    EXPECT_NE(z.turns[0].human.find("<image><image>"), std::string::npos);
    EXPECT_EQ(z.turns.back().gpt, o.turns.back().gpt);  // the answer is about the whole image, unchanged
    const auto crop = image::decode_image_file(z.images[1]);
    const auto& scene = scene_of.at(o.images[0]);
    // A square of the input side times 1.0..2.0, unless the image is smaller.
    EXPECT_EQ(crop.width, crop.height);
    const int limit = std::min(scene.width, scene.height);
    EXPECT_TRUE(crop.width == limit || (crop.width >= 96 && crop.width <= 192)) << crop.width;
    // A question naming a present object by colour and shape gets a crop that shows it.
    for (const auto& ob : scene.objects) {
      const std::string name = vocab.colors[static_cast<size_t>(ob.color)] + " " + vocab.shapes[static_cast<size_t>(ob.shape)];
      if (o.turns[0].human.find(name) == std::string::npos) continue;
      EXPECT_TRUE(has_colour(crop, ob.rgb)) << z.id << " " << name;
      ++named_checked;
      break;
    }
  }
  EXPECT_GT(named_checked, 5);

  // Half the conversations: a seeded coin per id, so the half is a subset with the very same crops.
  const auto half = world::zoom_conversations(convs, w, 0.5, 96, 7, half_dir);
  EXPECT_GT(half.size(), all.size() / 4);
  EXPECT_LT(half.size(), all.size() * 3 / 4);
  std::map<std::string, std::string> crop_of;
  for (const auto& z : all) crop_of[z.id] = z.images[1];
  for (const auto& z : half) {
    ASSERT_TRUE(crop_of.count(z.id)) << z.id;
    EXPECT_EQ(io::read_file(z.images[1]), io::read_file(crop_of.at(z.id))) << z.id;
  }
  EXPECT_NE(test::error_of([&] { world::zoom_conversations(convs, w, 0.0, 96, 7, half_dir); }).find("zoom_share"),
            std::string::npos);
}

TEST(WorldBaseTrain, AZoomStageTrainsOnTwoSlotCopies) {
  torch::set_num_threads(1);
  const auto out = test::scratch_dir("base_train_zoom");
  auto o = tiny_options(out);
  o.stages = {{"zoom", "projector+lm", "all", 0, 2, 1e-3, 4, 2, 1.0}};
  auto r = world::train_world_base(o);
  ASSERT_EQ(r.model_dir, out + "/model");
  EXPECT_EQ(io::read_jsonl_file(out + "/stages/zoom/metrics.jsonl").size(), 2u);
  EXPECT_FALSE(fs::is_empty(out + "/stages/zoom/zoom"));
  EXPECT_EQ(io::read_json_file(out + "/config.json")["stages"][0]["zoom_share"].get<double>(), 1.0);
}

}  // namespace
