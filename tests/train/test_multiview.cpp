// Multi-view answer scoring (train/multiview.h): shared-prefix log-prob sums and their gradients
// against separate full forward passes, on the tiny LLaVA fixture in fp32.
#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>

#include "image/decode.h"
#include "infer/scoring.h"
#include "models/llava.h"
#include "pairs/responses.h"
#include "test_paths.h"
#include "test_util.h"
#include "train/multiview.h"

using namespace p2dpo;

namespace {

const std::string kPrompt = "USER: <image>\nWhat is in the picture? ASSISTANT:";
const std::string kLongPrompt = "USER: <image>\nDescribe every shape you can see in this picture, please. ASSISTANT:";
const std::string kTwoImagePrompt = "USER: <image>\n<image>\nWhat is in the picture? ASSISTANT:";

class MultiViewTiny : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    model_ = models::LlavaModel::load(test::data_path("llava-tiny-s0"));
    for (const char* f : {"image0.png", "image1.png", "image2.png"}) {
      images_.push_back(model_->prepare_image(image::decode_image_file(test::data_path(std::string("llava-tiny-s0/") + f))));
    }
    // Views of image0 as a P2-DPO pair has them: degraded (dimmed) and noised.
    torch::manual_seed(0);
    models::PreparedImage deg = images_[0], noise = images_[0];
    deg.pixel_values = images_[0].pixel_values * 0.5;
    noise.pixel_values = images_[0].pixel_values + 0.3 * torch::randn_like(images_[0].pixel_values);
    images_.push_back(deg);    // 3
    images_.push_back(noise);  // 4
    torch::NoGradGuard ng;
    std::vector<torch::Tensor> feats;
    for (const auto& im : images_) feats.push_back(model_->encode_images({im}));
    features_ = torch::cat(feats, 0);  // [5, 16, 64]
  }

  train::ScoredSequence seq(const std::string& prompt, std::vector<int64_t> image_indices, const std::string& answer) {
    std::vector<models::PreparedImage> ims;
    for (int64_t i : image_indices) ims.push_back(images_[static_cast<size_t>(i)]);
    auto t = pairs::response_tokens(*model_, prompt, answer, ims);
    return {t.prompt_ids, std::move(image_indices), t.answer_ids};
  }

  // The 6 scored sequences of one P2-DPO pair on image `base` (crop = `crop`): 4 distinct prefixes.
  std::vector<train::ScoredSequence> p2dpo_pair(int64_t base, int64_t crop) {
    return {seq(kPrompt, {base}, "a red circle and a blue square"),
            seq(kPrompt, {base}, "a green triangle"),
            seq(kTwoImagePrompt, {base, crop}, "a red circle and a blue square"),
            seq(kPrompt, {3}, "a red circle and a blue square"),
            seq(kLongPrompt, {4}, "two shapes: a small red circle on the left and a large blue square on the right"),
            seq(kLongPrompt, {4}, "three shapes")};
  }

  double reference_sum(const train::ScoredSequence& s) {
    std::vector<models::PreparedImage> ims;
    for (int64_t i : s.image_indices) ims.push_back(images_[static_cast<size_t>(i)]);
    return infer::score_ids(*model_, ims, s.prompt_ids, s.answer_ids).sum;
  }

  std::unique_ptr<models::LlavaModel> model_;
  std::vector<models::PreparedImage> images_;
  torch::Tensor features_;
};

// A mix: shared prefixes with 2-3 answers, different prompt lengths, two-image prompts, one-token
// answers (EOS only), and an exact duplicate.
TEST_F(MultiViewTiny, SumsEqualSeparateFullForwards) {
  auto seqs = p2dpo_pair(0, 1);
  seqs.push_back(seq(kPrompt, {0}, ""));  // one token: EOS after the shared (I, P) prefix
  seqs.push_back(seq(kPrompt, {2}, "a blue square"));
  seqs.push_back(seq(kLongPrompt, {1}, ""));  // one-token answer on a prefix of its own
  seqs.push_back(seqs[1]);                     // duplicate
  seqs.push_back(seq(kTwoImagePrompt, {2, 0}, "a blue square and a red circle, both large"));
  std::vector<double> ref;
  for (const auto& s : seqs) ref.push_back(reference_sum(s));
  ASSERT_EQ(seqs[6].answer_ids.size(), 1u);

  // Split costs: -1 = one padded forward per stage; 0 = a forward per distinct length (the
  // continuations then attend to keys/values padded from several prefix forwards); 64 = default.
  for (const auto& [share, split] : std::vector<std::pair<bool, int64_t>>{{true, 64}, {true, -1}, {true, 0},
                                                                          {false, 64}, {false, -1}, {false, 0}}) {
    SCOPED_TRACE(std::string(share ? "shared prefixes" : "no sharing") + ", split cost " + std::to_string(split));
    train::MultiViewOptions opt;
    opt.share_prefixes = share;
    opt.split_cost_positions = split;
    train::MultiViewStats st;
    auto out = train::answer_logprob_sums(*model_, seqs, features_, opt, &st);
    ASSERT_EQ(out.sizes(), torch::IntArrayRef({static_cast<int64_t>(seqs.size())}));
    EXPECT_EQ(out.scalar_type(), torch::kFloat32);
    for (size_t i = 0; i < seqs.size(); ++i) {
      // 1e-5, widened by the float32 output's own rounding: the 60-token answer sums to about
      // -311, where half a float32 ulp is 1.5e-5 (measured: at most 7e-6 off, on the two-image one).
      const double tol = 1e-5 + 1e-7 * std::abs(ref[i]);
      EXPECT_NEAR(out[static_cast<int64_t>(i)].item<double>(), ref[i], tol) << "sequence " << i;
    }
    EXPECT_EQ(st.sequences, static_cast<int64_t>(seqs.size()));
    // Prefixes: (0,P) (0+1,P2) (3,P) (4,Plong) (2,P) (1,Plong) (2+0,P2).
    EXPECT_EQ(st.prefixes, share ? 7 : static_cast<int64_t>(seqs.size()));
    EXPECT_EQ(st.distinct_sequences, share ? static_cast<int64_t>(seqs.size()) - 1 : static_cast<int64_t>(seqs.size()));
    if (split < 0) EXPECT_EQ(st.forwards, share ? 2 : 1);
    if (split == 0) EXPECT_GT(st.forwards, share ? 4 : 3);
  }
  // The sums are different numbers (not a constant that happens to match).
  EXPECT_GT(std::abs(ref[0] - ref[1]), 1e-3);
  EXPECT_GT(std::abs(ref[0] - ref[3]), 1e-6);
}

TEST_F(MultiViewTiny, OneP2dpoPairCostsFourPrefixes) {
  train::MultiViewStats st;
  auto seqs = p2dpo_pair(0, 1);
  train::answer_logprob_sums(*model_, seqs, features_, {}, &st);
  EXPECT_EQ(st.sequences, 6);
  EXPECT_EQ(st.prefixes, 4);
  EXPECT_EQ(st.distinct_sequences, 6);
  int64_t prefix_tokens = 0, continuation = 0;
  for (size_t i : {0u, 2u, 3u, 4u}) prefix_tokens += static_cast<int64_t>(seqs[i].prompt_ids.size());
  for (const auto& s : seqs) continuation += static_cast<int64_t>(s.answer_ids.size()) - 1;
  EXPECT_EQ(st.prefix_tokens, prefix_tokens);
  EXPECT_EQ(st.continuation_tokens, continuation);
  EXPECT_GE(st.padded_positions, st.prefix_tokens + st.continuation_tokens);

  // Two pairs on images 0 and 2 that (in this fixture) share the degraded and noised views: those
  // prefixes and their three sequences are computed once.
  auto two = p2dpo_pair(0, 1);
  for (auto& s : p2dpo_pair(2, 1)) two.push_back(s);
  train::answer_logprob_sums(*model_, two, features_, {}, &st);
  EXPECT_EQ(st.sequences, 12);
  EXPECT_EQ(st.prefixes, 6);  // (0,P) (0+1,P2) (3,P) (4,Plong) (2,P) (2+1,P2)
  EXPECT_EQ(st.distinct_sequences, 9);

  train::MultiViewOptions off;
  off.share_prefixes = false;
  train::answer_logprob_sums(*model_, seqs, features_, off, &st);
  EXPECT_EQ(st.prefixes, 6);
  EXPECT_EQ(st.continuation_tokens, continuation);
}

// d(Σ_i w_i out_i)/d(params) through the shared path equals the unshared path's. k_proj of layer 0
// reaches the answers only through the reused prefix keys, so it checks the cache inside autograd.
TEST_F(MultiViewTiny, GradientsEqualUnsharedPath) {
  auto params = model_->named_parameters();
  std::vector<torch::Tensor> wrt = {params.at("language_model.model.layers.0.self_attn.k_proj.weight"),
                                    params.at("language_model.model.layers.1.self_attn.o_proj.weight"),
                                    params.at("language_model.model.layers.0.mlp.down_proj.weight")};
  for (auto& p : wrt) p.requires_grad_(true);
  // LoRA adapters through the engine's hook: v of layer 0 (reaches the answers through the reused
  // prefix values too) and q of layer 1.
  torch::manual_seed(1);
  for (models::Linear* lin : {&model_->language_model().layers()[0].v_proj, &model_->language_model().layers()[1].q_proj}) {
    auto lora = std::make_shared<models::LoraWeights>();
    lora->A = (torch::randn({4, lin->weight.size(1)}) * 0.05).requires_grad_(true);
    lora->B = (torch::randn({lin->weight.size(0), 4}) * 0.05).requires_grad_(true);
    lora->scaling = 2.0;
    lin->lora = lora;
    wrt.push_back(lora->A);
    wrt.push_back(lora->B);
  }
  auto feats = features_.clone().requires_grad_(true);
  wrt.push_back(feats);

  auto seqs = p2dpo_pair(0, 1);
  seqs.push_back(seq(kPrompt, {0}, ""));
  seqs.push_back(seqs[0]);
  const auto weights = torch::linspace(0.5, 1.5, static_cast<int64_t>(seqs.size()));

  // Reference last: unshared, one padded forward.
  std::vector<std::vector<torch::Tensor>> grads;
  for (const auto& [share, split] : std::vector<std::pair<bool, int64_t>>{{true, 64}, {true, 0}, {false, -1}}) {
    train::MultiViewOptions opt;
    opt.share_prefixes = share;
    opt.split_cost_positions = split;
    auto out = train::answer_logprob_sums(*model_, seqs, feats, opt);
    ASSERT_TRUE(out.requires_grad());
    grads.push_back(torch::autograd::grad({(out * weights).sum()}, wrt));
  }
  for (size_t run = 0; run + 1 < grads.size(); ++run) {
    for (size_t k = 0; k < wrt.size(); ++k) {
      const double norm = grads.back()[k].norm().item<double>();
      const double diff = (grads[run][k] - grads.back()[k]).norm().item<double>();
      EXPECT_GT(norm, 0.0) << "tensor " << k;
      EXPECT_LE(diff, 1e-5 * norm) << "run " << run << ", tensor " << k << ": |diff| " << diff << " |grad| " << norm;
    }
  }
  // Every image the sequences use gets a gradient, the unused one (image 2) none.
  const auto& g_feats = grads[0].back();
  EXPECT_GT(g_feats[0].abs().sum().item<double>(), 0.0);
  EXPECT_GT(g_feats[1].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(g_feats[2].abs().sum().item<double>(), 0.0);
  for (size_t k = 0; k < 3; ++k) wrt[k].requires_grad_(false);
}

TEST_F(MultiViewTiny, AutogradOffGivesTheSameSums) {
  auto seqs = p2dpo_pair(0, 1);
  seqs.push_back(seq(kPrompt, {2}, ""));
  auto feats = features_.clone().requires_grad_(true);
  auto with_grad = train::answer_logprob_sums(*model_, seqs, feats);
  EXPECT_TRUE(with_grad.requires_grad());
  torch::NoGradGuard ng;
  auto without = train::answer_logprob_sums(*model_, seqs, feats);
  EXPECT_FALSE(without.requires_grad());
  EXPECT_LE((with_grad.detach() - without).abs().max().item<double>(), 1e-5);
  // Scoring the same batch twice without autograd reuses nothing between calls.
  auto again = train::answer_logprob_sums(*model_, seqs, feats);
  EXPECT_TRUE(torch::equal(without, again));
}

TEST_F(MultiViewTiny, PaddingDoesNotChangeAResult) {
  // The same short sequence alone and next to much longer prompts and answers (left padding in
  // the prefix batch, right padding in the continuation batch).
  auto short_seq = seq(kPrompt, {1}, "a");
  auto alone = train::answer_logprob_sums(*model_, {short_seq}, features_);
  std::vector<train::ScoredSequence> batch = {
      seq(kTwoImagePrompt, {0, 2}, "a long answer about many shapes: circles, squares and triangles in every colour"),
      short_seq, seq(kLongPrompt, {2}, "")};
  auto together = train::answer_logprob_sums(*model_, batch, features_);
  EXPECT_NEAR(together[1].item<double>(), alone[0].item<double>(), 1e-5);
}

TEST_F(MultiViewTiny, OneTokenAnswersNeedNoContinuationForward) {
  std::vector<train::ScoredSequence> seqs = {seq(kPrompt, {0}, ""), seq(kLongPrompt, {1}, "")};
  train::MultiViewOptions opt;
  opt.split_cost_positions = -1;
  train::MultiViewStats st;
  auto out = train::answer_logprob_sums(*model_, seqs, features_, opt, &st);
  EXPECT_EQ(st.forwards, 1);
  EXPECT_EQ(st.continuation_tokens, 0);
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_NEAR(out[static_cast<int64_t>(i)].item<double>(), reference_sum(seqs[i]), 1e-5);
}

TEST_F(MultiViewTiny, EmptyInputGivesEmptyOutput) {
  train::MultiViewStats st;
  st.prefixes = 99;
  auto out = train::answer_logprob_sums(*model_, {}, features_, {}, &st);
  EXPECT_EQ(out.numel(), 0);
  EXPECT_EQ(st.prefixes, 0);
  EXPECT_EQ(st.sequences, 0);
}

TEST_F(MultiViewTiny, RejectsBadSequences) {
  auto good = seq(kPrompt, {0}, "a red circle");
  auto no_answer = good;
  no_answer.answer_ids.clear();
  EXPECT_NE(test::error_of([&] { train::answer_logprob_sums(*model_, {good, no_answer}, features_); })
                .find("answer_logprob_sums: sequence 1: the answer has no tokens"),
            std::string::npos);
  auto bad_index = good;
  bad_index.image_indices = {5};
  EXPECT_NE(test::error_of([&] { train::answer_logprob_sums(*model_, {bad_index}, features_); })
                .find("image index 5 is outside the 5 image feature rows"),
            std::string::npos);
  auto two_slots_one_image = seq(kTwoImagePrompt, {0, 1}, "x");
  two_slots_one_image.image_indices = {0};
  EXPECT_NE(test::error_of([&] { train::answer_logprob_sums(*model_, {two_slots_one_image}, features_); })
                .find("the prompt has 32 image tokens but its 1 image(s) give 16"),
            std::string::npos);
  auto image_in_answer = good;
  image_in_answer.answer_ids.insert(image_in_answer.answer_ids.begin(), model_->info().image_token_id);
  EXPECT_NE(test::error_of([&] { train::answer_logprob_sums(*model_, {image_in_answer}, features_); })
                .find("the answer holds an image token"),
            std::string::npos);
}

}  // namespace
