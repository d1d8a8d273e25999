// Contrastive Amplification (method spec §5) on hand-made logits: the amplified scores, V_head
// (VCD's adaptive plausibility cutoff on the expert's raw logits) per row, and an end-to-end decode
// on the tiny LLaVA where expert and amateur see the same input, so CA must reproduce plain greedy.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <stdexcept>

#include "image/decode.h"
#include "infer/generate.h"
#include "models/load.h"
#include "pairs/contrastive.h"
#include "test_paths.h"

using namespace p2dpo;

namespace {

bool is_neg_inf(float v) { return std::isinf(v) && v < 0; }

TEST(Contrastive, AmplifiesExpertAgainstAmateurInsideVHead) {
  // Row 0: EP max 2, cutoff 2 + log(0.1) = -0.303: token 2 (EP -1) leaves V_head.
  //   kept: 1.1*2 - 0.1*1 = 2.1; 1.1*0 - 0.1*3 = -0.3; 1.1*1 - 0.1*(-2) = 1.3.
  // Row 1: EP max 10, cutoff 7.697: only tokens 2 (EP 10) and 3 (EP 8) stay, although row 0's cutoff
  //   would keep all of them (the cutoff is per row).
  //   kept: 1.1*10 - 0.1*4 = 10.6; 1.1*8 - 0.1*20 = 6.8.
  const auto logits = torch::tensor({2.0f, 0.0f, -1.0f, 1.0f,    // row 0 expert
                                     1.0f, 3.0f, 0.0f, -2.0f,    // row 0 amateur
                                     7.0f, 0.0f, 10.0f, 8.0f,    // row 1 expert
                                     0.0f, 0.0f, 4.0f, 20.0f})   // row 1 amateur
                          .view({2, 2, 4});
  const auto s = pairs::contrastive_amplification(logits, {});
  ASSERT_EQ(s.sizes(), (std::vector<int64_t>{2, 4}));
  ASSERT_EQ(s.scalar_type(), torch::kFloat);
  EXPECT_NEAR(s[0][0].item<float>(), 2.1f, 1e-6);
  EXPECT_NEAR(s[0][1].item<float>(), -0.3f, 1e-6);
  EXPECT_TRUE(is_neg_inf(s[0][2].item<float>()));
  EXPECT_NEAR(s[0][3].item<float>(), 1.3f, 1e-6);
  EXPECT_TRUE(is_neg_inf(s[1][0].item<float>()));
  EXPECT_TRUE(is_neg_inf(s[1][1].item<float>()));
  EXPECT_NEAR(s[1][2].item<float>(), 10.6f, 1e-5);
  EXPECT_NEAR(s[1][3].item<float>(), 6.8f, 1e-5);
  // Row 1: the amateur's strong vote for token 3 is what amplification pushes against.
  EXPECT_EQ(s.argmax(-1)[1].item<int64_t>(), 2);
}

TEST(Contrastive, VHeadIsTheExpertProbabilityRatio) {
  // EP < log(beta) + max EP  <=>  p_EP < beta * max p_EP, for random rows away from the boundary.
  torch::manual_seed(5);
  const auto logits = torch::randn({6, 2, 50}) * 3.0;
  for (double beta : {0.05, 0.1, 0.5}) {
    const auto s = pairs::contrastive_amplification(logits, {0.1, beta});
    const auto p = logits.select(1, 0).softmax(-1);
    const auto in_head = p >= beta * std::get<0>(p.max(-1, true));
    EXPECT_TRUE(torch::equal(torch::isfinite(s), in_head)) << "beta " << beta;
    EXPECT_TRUE((in_head.sum(-1) >= 1).all().item<bool>());
  }
  // beta 1: only the expert's maxima stay, ties included (the cutoff is not strict).
  const auto tie = torch::tensor({3.0f, 1.0f, 3.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}).view({1, 2, 4});
  const auto s1 = pairs::contrastive_amplification(tie, {0.1, 1.0});
  EXPECT_TRUE(std::isfinite(s1[0][0].item<float>()));
  EXPECT_TRUE(is_neg_inf(s1[0][1].item<float>()));
  EXPECT_TRUE(std::isfinite(s1[0][2].item<float>()));
  // beta 0: no cutoff; lambda 0: the expert's logits unchanged.
  const auto s0 = pairs::contrastive_amplification(logits, {0.0, 0.0});
  EXPECT_TRUE(torch::equal(s0, logits.select(1, 0)));
}

TEST(Contrastive, RejectsBadShapesAndSettings) {
  EXPECT_THROW(pairs::contrastive_amplification(torch::zeros({2, 3, 4}), {}), std::invalid_argument);
  EXPECT_THROW(pairs::contrastive_amplification(torch::zeros({2, 4}), {}), std::invalid_argument);
  EXPECT_THROW(pairs::contrastive_amplification(torch::zeros({1, 2, 4}), {0.1, 1.5}), std::invalid_argument);
  EXPECT_THROW(pairs::contrastive_combiner({0.1, -0.1}), std::invalid_argument);
  EXPECT_THROW(pairs::contrastive_combiner({std::nan(""), 0.1}), std::invalid_argument);
  // bf16 logits are combined in float32.
  const auto bf = torch::tensor({1.0f, 2.0f, 0.5f, 0.5f}).view({1, 2, 2}).to(torch::kBFloat16);
  EXPECT_EQ(pairs::contrastive_amplification(bf, {}).scalar_type(), torch::kFloat);
}

TEST(Contrastive, IdenticalContextsReproducePlainGreedyOnTinyLlava) {
  torch::set_num_threads(1);
  torch::NoGradGuard no_grad;
  auto model = models::load_model(test::data_path("llava-tiny-s0"));
  std::vector<infer::GenerationRequest> requests;
  for (const char* name : {"image0.png", "image1.png"}) {
    std::vector<models::PreparedImage> images = {
        model->prepare_image(image::decode_image_file(test::data_path(std::string("llava-tiny-s0/") + name)))};
    requests.push_back({model->tokenize_prompt("USER: <image>\nWhat shapes are in the picture? ASSISTANT:", images),
                        model->encode_images(images), std::nullopt});
  }
  infer::SamplingConfig cfg;
  cfg.max_new_tokens = 12;
  cfg.stop_on_eos = false;
  const auto plain = infer::generate(*model, requests, cfg);
  // CA of identical logits is 1.1 EP - 0.1 EP = EP on V_head, which holds the argmax.
  const auto ca = infer::generate_multi_context(*model, {{requests[0], requests[0]}, {requests[1], requests[1]}},
                                                pairs::contrastive_combiner({}), cfg);
  ASSERT_EQ(ca.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_EQ(plain[i].token_ids.size(), 12u);
    EXPECT_EQ(ca[i].token_ids, plain[i].token_ids) << "sequence " << i;
    // Dropping the tokens outside V_head only raises the chosen token's log-probability.
    for (size_t t = 0; t < ca[i].logprobs.size(); ++t) EXPECT_GE(ca[i].logprobs[t], plain[i].logprobs[t] - 1e-4);
  }
}

}  // namespace
