// Parity of the LLaVA engine with HF transformers 4.45.1 on the tiny random fixtures
// (tests/data/llava-tiny-*). Tolerances are the issue's: pixels 1e-6, vision features and
// projector 1e-5, attention probabilities 1e-5, logits and log-prob sums 1e-4, greedy ids equal.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <fstream>

#include "image/decode.h"
#include "infer/attention.h"
#include "infer/generate.h"
#include "infer/scoring.h"
#include "io/json_io.h"
#include "models/fixture_util.h"
#include "models/llava.h"
#include "test_paths.h"

using namespace p2dpo;

namespace {

struct Example {
  std::string image, prompt, answer;
};

std::vector<Example> examples_of(const std::string& fixture) {
  auto j = io::read_json_file(test::data_path(fixture + "/reference.json"));
  std::vector<Example> out;
  for (const auto& e : j["examples"]) {
    out.push_back({e["image"].get<std::string>(), e["prompt"].get<std::string>(), e["answer"].get<std::string>()});
  }
  return out;
}

std::vector<int64_t> to_vec(const torch::Tensor& t) {
  auto c = t.reshape({-1}).to(torch::kCPU, torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

class LlavaParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    fixture_ = GetParam();
    ref_ = std::make_unique<test::Reference>(fixture_);
    model_ = models::LlavaModel::load(test::data_path(fixture_), {test::test_device()});
    examples_ = examples_of(fixture_);
  }
  std::vector<models::PreparedImage> images(int ex) {
    return {model_->prepare_image(image::decode_image_file(test::data_path(fixture_ + "/" + examples_[ex].image)))};
  }
  std::string key(int ex, const std::string& name) { return "ex" + std::to_string(ex) + "." + name; }

  std::string fixture_;
  std::unique_ptr<test::Reference> ref_;
  std::unique_ptr<models::LlavaModel> model_;
  std::vector<Example> examples_;
};

TEST_P(LlavaParity, PixelValuesAndInputIds) {
  for (int ex = 0; ex < 3; ++ex) {
    auto imgs = images(ex);
    EXPECT_LE(test::max_abs_diff(imgs[0].pixel_values.unsqueeze(0), ref_->get(key(ex, "pixel_values"))), 1e-6);
    auto [p, a] = model_->tokenize_prompt_answer(examples_[ex].prompt, examples_[ex].answer, imgs);
    EXPECT_EQ(p, to_vec(ref_->get(key(ex, "prompt_input_ids"))));
    EXPECT_EQ(a, to_vec(ref_->get(key(ex, "answer_ids"))));
    EXPECT_EQ(model_->tokenize_prompt(examples_[ex].prompt, imgs), p);
  }
}

TEST_P(LlavaParity, VisionTowerAndProjector) {
  torch::NoGradGuard ng;
  for (int ex = 0; ex < 3; ++ex) {
    auto px = test::on_test_device(ref_->get(key(ex, "pixel_values")));  // isolate the tower from preprocessing
    std::vector<torch::Tensor> attn;
    auto hs = model_->vision_tower().hidden_states(px, -1, &attn);
    auto ref_hs = ref_->get(key(ex, "vision_hidden_states"));
    ASSERT_EQ(static_cast<int64_t>(hs.size()), ref_hs.size(0));
    for (size_t i = 0; i < hs.size(); ++i) {
      EXPECT_LE(test::max_abs_diff(hs[i].squeeze(0), ref_hs[i]), 1e-5) << "hidden state " << i;
    }
    if (ref_->has(key(ex, "vision_attn.layer0"))) {
      for (size_t l = 0; l < attn.size(); ++l) {
        EXPECT_LE(test::max_abs_diff(attn[l].squeeze(0), ref_->get(key(ex, "vision_attn.layer" + std::to_string(l)))), 1e-5);
      }
    }
    auto selected = model_->select_image_features(px);
    EXPECT_LE(test::max_abs_diff(selected.squeeze(0), ref_->get(key(ex, "image_features"))), 1e-5);
    EXPECT_LE(test::max_abs_diff(model_->project(selected).squeeze(0), ref_->get(key(ex, "projector_output"))), 1e-5);
  }
}

TEST_P(LlavaParity, LogitsHiddenStatesAndAttention) {
  torch::NoGradGuard ng;
  for (int ex = 0; ex < 3; ++ex) {
    auto ids = ref_->get(key(ex, "input_ids"));
    auto feats = model_->project(model_->select_image_features(ref_->get(key(ex, "pixel_values"))));
    auto embeds = model_->merged_embeddings(ids, feats);
    std::vector<torch::Tensor> hs, attn;
    auto h = model_->language_model().forward(embeds, {}, nullptr, nullptr, &hs, &attn);
    auto logits = model_->language_model().lm_head(h);
    EXPECT_LE(test::max_abs_diff(logits, ref_->get(key(ex, "logits"))), 1e-4);
    auto ref_hs = ref_->get(key(ex, "llm_hidden_states"));
    for (size_t i = 0; i < hs.size(); ++i) {
      EXPECT_LE(test::max_abs_diff(hs[i].squeeze(0), ref_hs[i]), 1e-4) << "llm hidden state " << i;
    }
    if (ref_->has(key(ex, "llm_attn.layer0"))) {
      for (size_t l = 0; l < attn.size(); ++l) {
        EXPECT_LE(test::max_abs_diff(attn[l].squeeze(0), ref_->get(key(ex, "llm_attn.layer" + std::to_string(l)))), 1e-5);
      }
      // The row capture (what pairs use) must give the same rows without full maps.
      models::AttentionCapture cap;
      cap.layers = {0, 1};
      const int64_t L = ids.size(1);
      cap.query_rows = {0, L / 2, L - 1};
      models::ForwardInput in;
      in.input_ids = ids;
      in.image_features = feats;
      in.capture = &cap;
      auto out = model_->forward(in);
      EXPECT_LE(test::max_abs_diff(out.logits, ref_->get(key(ex, "logits"))), 1e-4);
      for (int l : {0, 1}) {
        auto full = ref_->get(key(ex, "llm_attn.layer" + std::to_string(l)));
        auto rows = full.index_select(1, torch::tensor(cap.query_rows, torch::kLong));
        EXPECT_LE(test::max_abs_diff(cap.probs.at(l).squeeze(0), rows), 1e-5);
      }
    }
  }
}

TEST_P(LlavaParity, AnswerLogProbs) {
  for (int ex = 0; ex < 3; ++ex) {
    auto imgs = images(ex);
    auto r = infer::score_text(*model_, imgs, examples_[ex].prompt, examples_[ex].answer);
    auto ref_lp = ref_->get(key(ex, "answer_logprobs"));
    ASSERT_EQ(static_cast<int64_t>(r.logprobs.size()), ref_lp.size(0));
    EXPECT_LE(test::max_abs_diff(torch::tensor(r.logprobs), ref_lp), 1e-4);
    EXPECT_NEAR(r.sum, ref_->get(key(ex, "answer_logprob_sum")).item<double>(), 1e-4);
    EXPECT_NEAR(r.mean, r.sum / static_cast<double>(r.logprobs.size()), 1e-12);
    EXPECT_NEAR(r.ppl, std::exp(-r.mean), 1e-9);
  }
}

TEST_P(LlavaParity, GreedyGenerationWithAndWithoutCache) {
  infer::SamplingConfig cfg;
  cfg.max_new_tokens = 8;
  cfg.stop_on_eos = false;  // the reference ran with EOS stopping off
  std::vector<infer::GenerationRequest> reqs;
  for (int ex = 0; ex < 3; ++ex) {
    auto imgs = images(ex);
    infer::GenerationRequest req;
    req.prompt_ids = model_->tokenize_prompt(examples_[ex].prompt, imgs);
    req.image_features = model_->encode_images(imgs).detach();
    auto want = to_vec(ref_->get(key(ex, "greedy_ids")));
    EXPECT_EQ(infer::generate(*model_, {req}, cfg)[0].token_ids, want) << "cached, example " << ex;
    auto nocache = cfg;
    nocache.use_cache = false;
    EXPECT_EQ(infer::generate(*model_, {req}, nocache)[0].token_ids, want) << "no cache, example " << ex;
    reqs.push_back(req);
  }
  // Batched over prompts of different lengths (left padding) gives the same tokens.
  auto batched = infer::generate(*model_, reqs, cfg);
  for (int ex = 0; ex < 3; ++ex) {
    EXPECT_EQ(batched[ex].token_ids, to_vec(ref_->get(key(ex, "greedy_ids")))) << "batched, example " << ex;
  }
}

TEST_P(LlavaParity, StepLogitsMatchReference) {
  torch::NoGradGuard ng;
  for (int ex = 0; ex < 3; ++ex) {
    auto imgs = images(ex);
    auto ids = model_->tokenize_prompt(examples_[ex].prompt, imgs);
    auto greedy = to_vec(ref_->get(key(ex, "greedy_ids")));
    auto ref_steps = ref_->get(key(ex, "greedy_step_logits"));
    models::KVCache cache;
    models::ForwardInput in;
    in.input_ids = torch::tensor(ids, torch::kLong).view({1, -1});
    in.image_features = model_->encode_images(imgs);
    in.cache = &cache;
    in.logits_last_only = true;
    for (size_t s = 0; s < greedy.size(); ++s) {
      auto out = model_->forward(in);
      EXPECT_LE(test::max_abs_diff(out.logits.view({-1}), ref_steps[s]), 1e-4) << "step " << s;
      in = {};
      in.input_ids = torch::tensor({greedy[s]}, torch::kLong).view({1, 1});
      in.cache = &cache;
      in.logits_last_only = true;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LlavaParity,
                         ::testing::Values("llava-tiny-s0", "llava-tiny-sharp-s0", "llava-tiny-gqa-s0"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n) if (c == '-') c = '_';
                           return n;
                         });

}  // namespace

namespace {

TEST(LlavaMultiImage, EachImageSlotReceivesItsImageInOrder) {
  // Two <image> slots in one prompt: each expands to the tower's token count and the k-th slot's
  // embeddings are exactly the k-th image's projected features (HF masked_scatter order).
  torch::NoGradGuard ng;
  auto model = models::LlavaModel::load(test::data_path("llava-tiny-s0"), {test::test_device()});
  auto a = model->prepare_image(image::decode_image_file(test::data_path("llava-tiny-s0/image0.png")));
  auto b = model->prepare_image(image::decode_image_file(test::data_path("llava-tiny-s0/image1.png")));
  const std::string prompt = "USER: <image>\n<image>\nCompare the pictures. ASSISTANT:";
  auto ids = model->tokenize_prompt(prompt, {a, b});
  std::vector<int64_t> pos;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] == model->info().image_token_id) pos.push_back(static_cast<int64_t>(i));
  ASSERT_EQ(pos.size(), 32u);
  auto feats = model->encode_images({a, b});
  ASSERT_EQ(feats.size(0), 2);
  auto embeds = model->merged_embeddings(torch::tensor(ids, torch::kLong).view({1, -1}), feats);
  auto rows = embeds.squeeze(0).index_select(0, test::on_test_device(torch::tensor(pos, torch::kLong)));
  EXPECT_TRUE(torch::equal(rows.slice(0, 0, 16), feats[0]));
  EXPECT_TRUE(torch::equal(rows.slice(0, 16, 32), feats[1]));
  // Swapping the images changes the answer distribution (the slots are not interchangeable).
  models::ForwardInput in;
  in.input_ids = torch::tensor(ids, torch::kLong).view({1, -1});
  in.image_features = feats;
  in.logits_last_only = true;
  auto ab = model->forward(in).logits;
  in.image_features = model->encode_images({b, a});
  auto ba = model->forward(in).logits;
  EXPECT_GT((ab - ba).abs().max().item<double>(), 1e-6);
}

}  // namespace
