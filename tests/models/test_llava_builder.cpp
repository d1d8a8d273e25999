// A new LLaVA from a CLIP vision tower + tokenizer (how the world's base model starts), and saving
// a model back in the llava-hf layout.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <filesystem>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/safetensors.h"
#include "models/llava.h"
#include "models/llava_builder.h"
#include "models/weights.h"
#include "test_paths.h"
#include "test_util.h"

using namespace p2dpo;

namespace {

models::LlavaBuildSpec tiny_spec() {
  models::LlavaBuildSpec s;
  s.vision_from = test::data_path("clip-tiny-s0");
  s.tokenizer_from = test::data_path("llava-tiny-s0");
  s.hidden_size = 32;
  s.intermediate_size = 64;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.seed = 7;
  return s;
}

TEST(LlavaBuilder, BuildsALoadableModelWithTheClipTowerAndIsDeterministic) {
  const auto a = test::scratch_dir("builder_a"), b = test::scratch_dir("builder_b");
  models::build_llava_checkpoint(tiny_spec(), a);
  models::build_llava_checkpoint(tiny_spec(), b);
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.model", "preprocessor_config.json"})
    EXPECT_EQ(io::read_file(a + "/" + f), io::read_file(b + "/" + f)) << f;
  auto other = tiny_spec();
  other.seed = 8;
  const auto c = test::scratch_dir("builder_c");
  models::build_llava_checkpoint(other, c);
  EXPECT_NE(io::read_file(a + "/model.safetensors"), io::read_file(c + "/model.safetensors"));

  auto model = models::LlavaModel::load(a);
  auto params = model->named_parameters();
  // The tower is the CLIP's, bit for bit.
  auto clip = io::Checkpoint::open_dir(test::data_path("clip-tiny-s0"));
  auto want = models::tensor_from_view(clip.tensor("vision_model.encoder.layers.0.mlp.fc1.weight"));
  EXPECT_TRUE(torch::equal(params.at("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"), want));
  // Fan-in initialisation: std of a 32-input linear close to 1/sqrt(32).
  auto q = params.at("language_model.model.layers.0.self_attn.q_proj.weight");
  EXPECT_NEAR(q.std().item<double>(), 1.0 / std::sqrt(32.0), 0.03);
  EXPECT_EQ(model->info().image_token_id, 384);
  // It runs: one image, one prompt, finite logits.
  torch::NoGradGuard ng;
  image::ImageU8 img(40, 30);
  std::fill(img.rgb.begin(), img.rgb.end(), uint8_t{120});
  auto prepared = model->prepare_image(img);
  models::ForwardInput in;
  in.input_ids = torch::tensor(model->tokenize_prompt("USER: <image>\nWhat? ASSISTANT:", {prepared})).view({1, -1});
  in.image_features = model->encode_images({prepared});
  auto out = model->forward(in);
  EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>());
}

TEST(LlavaBuilder, SaveRoundTripsTrainedWeights) {
  const auto src = test::scratch_dir("builder_src"), dst = test::scratch_dir("builder_dst");
  models::build_llava_checkpoint(tiny_spec(), src);
  auto model = models::LlavaModel::load(src);
  {
    torch::NoGradGuard ng;  // stand-in for training: change the projector in place
    model->named_parameters().at("multi_modal_projector.linear_1.bias").add_(0.5);
  }
  models::save_llava_checkpoint(*model, src, dst);
  auto reloaded = models::LlavaModel::load(dst);
  auto before = model->named_parameters(), after = reloaded->named_parameters();
  ASSERT_EQ(before.size(), after.size());
  for (const auto& [name, t] : before) EXPECT_TRUE(torch::equal(t, after.at(name))) << name;
  EXPECT_EQ(io::read_file(src + "/tokenizer.model"), io::read_file(dst + "/tokenizer.model"));
}

TEST(LlavaBuilder, BadSpecsNameTheField) {
  auto s = tiny_spec();
  s.num_heads = 5;
  EXPECT_EQ(test::error_of([&] { models::build_llava_checkpoint(s, test::scratch_dir("builder_bad")); }),
            "num_heads: must divide hidden_size 32");
  s = tiny_spec();
  s.vision_from = test::data_path("llava-tiny-s0/nothere");
  EXPECT_NE(test::error_of([&] { models::build_llava_checkpoint(s, test::scratch_dir("builder_bad2")); }).find("nothere"),
            std::string::npos);
}

}  // namespace
