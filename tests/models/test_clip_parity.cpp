// Parity of CLIPModel (both towers, projections, CLIPScore) with HF transformers 4.45.1 on the
// tiny random fixture tests/data/clip-tiny-s0 (weights N(0, 0.2): peaked attention).
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>

#include "image/clip_processor.h"
#include "io/atomic_file.h"
#include "io/errors.h"
#include "image/decode.h"
#include "models/clip.h"
#include "models/fixture_util.h"
#include "models/weights.h"
#include "test_paths.h"
#include "text/clip_tokenizer.h"

using namespace p2dpo;

namespace {

class ClipParity : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    ref_ = std::make_unique<test::Reference>("clip-tiny-s0");
    model_ = models::ClipModel::load(test::data_path("clip-tiny-s0"), test::test_device());
  }
  std::unique_ptr<test::Reference> ref_;
  std::unique_ptr<models::ClipModel> model_;
};

TEST_F(ClipParity, ImageAndTextEmbeddings) {
  torch::NoGradGuard ng;
  auto img = model_->image_features(test::on_test_device(ref_->get("pixel_values")));
  EXPECT_LE(test::max_abs_diff(img, ref_->get("image_embeds_unnormalized")), 1e-5);
  auto txt = model_->text_features(test::on_test_device(ref_->get("input_ids")),
                                   test::on_test_device(ref_->get("attention_mask")));
  EXPECT_LE(test::max_abs_diff(txt, ref_->get("text_embeds_unnormalized")), 1e-5);
  auto score = model_->clip_score(txt, img);
  EXPECT_LE(test::max_abs_diff(score, ref_->get("clip_score")), 1e-4);
  // Three cosines are negative in this fixture: the clamp must give exact zeros there.
  EXPECT_EQ((score == 0).sum().item<int64_t>(), (ref_->get("clip_score") == 0).sum().item<int64_t>());
  EXPECT_NEAR(model_->logit_scale(), ref_->get("logit_scale").item<double>(), 1e-7);
}

TEST_F(ClipParity, EndToEndFromFilesAndTexts) {
  torch::NoGradGuard ng;
  auto dir = test::data_path("clip-tiny-s0");
  auto proc = image::load_clip_processor_config(dir + "/preprocessor_config.json");
  std::vector<torch::Tensor> px;
  for (int i = 0; i < 3; ++i) {
    px.push_back(models::pixels_to_tensor(
        image::preprocess_clip(image::decode_image_file(dir + "/image" + std::to_string(i) + ".png"), proc)));
  }
  auto pixel_values = torch::stack(px);
  EXPECT_LE(test::max_abs_diff(pixel_values, ref_->get("pixel_values")), 1e-6);
  auto tok = text::ClipTokenizer::load(dir);
  std::vector<std::string> texts = {"is there a red circle in the image?",
                                    "a photo of a yellow square and a green circle.",
                                    "A tall picture with white diagonal stripes, fading from blue to purple",
                                    "two zebras? no, 3 black dots!!"};
  auto batch = tok.encode_batch(texts, 77);
  auto ids = torch::tensor(batch.input_ids, torch::kLong).view({batch.batch, batch.length});
  auto mask = torch::tensor(batch.attention_mask, torch::kLong).view({batch.batch, batch.length});
  EXPECT_TRUE(torch::equal(ids, ref_->get("input_ids")));
  auto score = model_->clip_score(model_->text_features(test::on_test_device(ids), test::on_test_device(mask)),
                                  model_->image_features(test::on_test_device(pixel_values)));
  EXPECT_LE(test::max_abs_diff(score, ref_->get("clip_score")), 1e-4);
}

TEST_F(ClipParity, PaddingDoesNotLeakIntoPooledText) {
  torch::NoGradGuard ng;
  auto ids = test::on_test_device(ref_->get("input_ids"));
  auto mask = test::on_test_device(ref_->get("attention_mask"));
  auto batched = model_->text_features(ids, mask);
  for (int64_t t = 0; t < ids.size(0); ++t) {
    const int64_t len = mask[t].sum().item<int64_t>();
    auto alone = model_->text_features(ids[t].slice(0, 0, len).unsqueeze(0), torch::ones({1, len}, ids.options()));
    EXPECT_LE(test::max_abs_diff(alone.squeeze(0), batched[t]), 1e-5);
  }
}

TEST(ClipLoad, ShapeMismatchNamesFileKeyAndField) {
  // A config that disagrees with the weights (hidden size) must fail with the tensor and field.
  namespace fs = std::filesystem;
  auto dir = test::scratch_dir("clip_mismatch");
  for (const auto& f : fs::directory_iterator(test::data_path("clip-tiny-s0"))) fs::copy(f.path(), dir + "/" + f.path().filename().string());
  auto cfg = io::read_file(dir + "/config.json");
  auto pos = cfg.find("\"projection_dim\": 16");
  ASSERT_NE(pos, std::string::npos);
  cfg.replace(pos, std::string("\"projection_dim\": 16").size(), "\"projection_dim\": 24");
  io::write_file_atomic(dir + "/config.json", cfg);
  try {
    models::ClipModel::load(dir);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("projection"), std::string::npos) << msg;
  }
}

}  // namespace
