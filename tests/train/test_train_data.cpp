// Conversation loading, templates, tokenization, collation, and the gradient-accumulation and
// padding equivalences on the tiny LLaVA.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <fstream>

#include "image/decode.h"
#include "io/json_io.h"
#include "models/load.h"
#include "test_paths.h"
#include "test_util.h"
#include "text/llama_tokenizer.h"
#include "text/prompt.h"
#include "train/causal_lm_loop.h"
#include "train/collate.h"
#include "train/conversations.h"
#include "train/grad.h"
#include "train/loss.h"
#include "train/params.h"

using namespace p2dpo;
using namespace p2dpo::train;

namespace {
const std::string kV1System =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions.";

std::vector<Conversation> fixture_conversations() {
  return load_llava_conversations(test::data_path("train/conversations.json"), test::data_path("llava-tiny-s0"));
}

// The tokenizer path without a model: text/prompt.h's convention plus <image> expansion (16 per image).
PromptAnswerTokenizer text_tokenizer(const text::LlamaTokenizer& tok) {
  return [&tok](const std::string& prompt, const std::string& answer, int) {
    auto pa = text::tokenize_prompt_answer(tok, prompt, answer);
    return std::make_pair(text::expand_image_tokens(pa.prompt_ids, 384, 16),
                          text::expand_image_tokens(pa.answer_ids, 384, 16));
  };
}

std::string write_json(const std::string& name, const std::string& text) {
  const std::string path = test::scratch_dir("train_conv_" + name) + "/c.json";
  std::ofstream(path) << text;
  return path;
}
}  // namespace

TEST(TrainConversations, LoadsLlavaJson) {
  const auto convs = fixture_conversations();
  ASSERT_EQ(convs.size(), 6u);
  EXPECT_EQ(convs[0].id, "c0");
  EXPECT_EQ(convs[0].images, std::vector<std::string>{test::data_path("llava-tiny-s0") + "/image0.png"});
  EXPECT_EQ(convs[1].turns.size(), 2u);
  EXPECT_EQ(convs[1].turns[1].human, "Is there a red circle?");
  EXPECT_EQ(convs[1].turns[1].gpt, "No, there is no red circle.");
  EXPECT_EQ(convs[3].id, "3");  // integer ids, as in LLaVA's own files
  EXPECT_TRUE(convs[5].images.empty());
}

TEST(TrainConversations, RejectsMalformedConversations) {
  auto err = [](const std::string& name, const std::string& json) {
    const std::string path = write_json(name, json);
    return test::error_of([&] { load_llava_conversations(path, "."); });
  };
  std::string msg = err("order", R"([{"id":"a","conversations":[{"from":"gpt","value":"x"},{"from":"human","value":"y"}]}])");
  EXPECT_NE(msg.find("conversation 0 (id 'a'): message 0 is from 'gpt'"), std::string::npos) << msg;
  msg = err("odd", R"([{"id":"a","conversations":[{"from":"human","value":"x"}]}])");
  EXPECT_NE(msg.find("pairs"), std::string::npos) << msg;
  msg = err("twoimg", R"([{"id":"a","image":"i.png","conversations":[{"from":"human","value":"<image> <image>"},{"from":"gpt","value":"y"}]}])");
  EXPECT_NE(msg.find("<image> 2 times"), std::string::npos) << msg;
  msg = err("noimg", R"([{"id":"a","conversations":[{"from":"human","value":"<image> x"},{"from":"gpt","value":"y"}]}])");
  EXPECT_NE(msg.find("no 'image' field"), std::string::npos) << msg;
  msg = err("novalue", R"([{"id":"a","conversations":[{"from":"human"},{"from":"gpt","value":"y"}]}])");
  EXPECT_NE(msg.find("value"), std::string::npos) << msg;
  msg = err("notlist", R"({"id":"a"})");
  EXPECT_NE(msg.find("expected a JSON list"), std::string::npos) << msg;
  EXPECT_NE(test::error_of([] { conversation_template("v9", "--template"); }).find("--template: unknown"), std::string::npos);
}

TEST(TrainConversations, V1TemplateRendersLlavaSeparatorStyleTwo) {
  const auto convs = fixture_conversations();
  const auto tpl = conversation_template("v1");
  const auto turns = render_turns(convs[1], tpl);
  ASSERT_EQ(turns.size(), 2u);
  EXPECT_EQ(turns[0].prompt, kV1System + " USER: <image>\nDescribe the colors of this tall image. ASSISTANT:");
  EXPECT_EQ(turns[0].answer, "It fades from blue to purple.</s>");
  EXPECT_EQ(turns[0].images_in_prompt, 1);
  // LLaVA's get_prompt: system + sep + (role + ": " + msg + sep|sep2)*.
  const std::string llava_full = kV1System + " " + "USER: <image>\nDescribe the colors of this tall image." + " " +
                                 "ASSISTANT: It fades from blue to purple." + "</s>" + "USER: Is there a red circle?" +
                                 " " + "ASSISTANT: No, there is no red circle." + "</s>";
  EXPECT_EQ(turns[1].prompt + " " + turns[1].answer, llava_full);
  EXPECT_EQ(render_prompt(tpl, "<image>\nIs there a cat?"), kV1System + " USER: <image>\nIs there a cat? ASSISTANT:");
  // llava-hf generation format and LLaVA's image-to-front preprocessing.
  auto plain = conversation_template("no_system");
  EXPECT_EQ(render_turns(convs[0], plain)[0].prompt, "USER: What shapes are in the picture?\n<image> ASSISTANT:");
  plain.move_image_to_front = true;
  EXPECT_EQ(render_turns(convs[0], plain)[0].prompt, "USER: <image>\nWhat shapes are in the picture? ASSISTANT:");
  EXPECT_NE(conversation_template("llava_v1").system.find("curious human"), std::string::npos);
}

TEST(TrainConversations, EveryGptTurnIsATargetWithItsScoringTokens) {
  const auto tok = text::LlamaTokenizer::load(test::data_path("llava-tiny-s0"));
  const auto convs = fixture_conversations();
  const auto tpl = conversation_template("v1");
  const auto ex = tokenize_conversation(convs[1], tpl, text_tokenizer(tok));
  ASSERT_EQ(ex.input_ids.size(), ex.loss_mask.size());
  EXPECT_EQ(ex.images, convs[1].images);
  EXPECT_EQ(std::count(ex.input_ids.begin(), ex.input_ids.end(), 384), 16);
  // The whole conversation is one encode of its full text (with the image expanded).
  const auto turns = render_turns(convs[1], tpl);
  EXPECT_EQ(ex.input_ids, text::expand_image_tokens(tok.encode(turns[1].prompt + " " + turns[1].answer), 384, 16));
  // Masked spans = each turn's answer ids exactly as scoring tokenizes them, ending in </s>.
  std::vector<std::vector<int64_t>> spans;
  for (size_t i = 0; i < ex.input_ids.size(); ++i) {
    if (!ex.loss_mask[i]) continue;
    if (i == 0 || !ex.loss_mask[i - 1]) spans.emplace_back();
    spans.back().push_back(ex.input_ids[i]);
  }
  ASSERT_EQ(spans.size(), 2u);
  for (size_t t = 0; t < 2; ++t) {
    const auto pa = text::tokenize_prompt_answer(tok, turns[t].prompt, turns[t].answer);
    EXPECT_EQ(spans[t], pa.answer_ids) << "turn " << t;
    EXPECT_EQ(spans[t].back(), tok.eos_id());
  }
  EXPECT_EQ(tok.decode(spans[1], /*skip_special_tokens=*/true), "No, there is no red circle.");
  EXPECT_EQ(ex.loss_mask[0], 0);  // BOS and the prompt are never targets
}

TEST(TrainCollate, RightPaddingMasksAndImageIndex) {
  TokenizedExample a{"a", {1, 5, 6, 7}, {0, 0, 1, 1}, {"img-a"}};
  TokenizedExample b{"b", {1, 8}, {0, 1}, {"img-b", "img-a"}};
  CollateOptions opts;
  opts.pad_token_id = 99;
  const auto batch = collate_causal_lm({a, b}, opts);
  EXPECT_EQ(batch.batch_size, 2);
  EXPECT_EQ(batch.length, 4);
  EXPECT_EQ(batch.input_ids, (std::vector<int64_t>{1, 5, 6, 7, 1, 8, 99, 99}));
  EXPECT_EQ(batch.attention_mask, (std::vector<int64_t>{1, 1, 1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(batch.labels, (std::vector<int64_t>{-100, -100, 6, 7, -100, 8, -100, -100}));
  EXPECT_EQ(batch.target_tokens, 3);
  EXPECT_EQ(batch.real_tokens, 6);
  EXPECT_EQ(batch.images, (std::vector<std::string>{"img-a", "img-b"}));
  EXPECT_EQ(batch.image_index, (std::vector<std::vector<int64_t>>{{0}, {1, 0}}));
  EXPECT_EQ(image_feature_order(batch), (std::vector<int64_t>{0, 1, 0}));
  const auto t = to_tensors(batch, torch::kCPU);
  EXPECT_EQ(t.labels.sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(count_target_tokens(t.labels), 3);

  opts.max_length = 3;  // right truncation drops answer tail tokens
  const auto cut = collate_causal_lm({a, b}, opts);
  EXPECT_EQ(cut.length, 3);
  EXPECT_EQ(cut.labels, (std::vector<int64_t>{-100, -100, 6, -100, 8, -100}));
  opts.image_token_id = 7;  // ... but never image tokens
  EXPECT_NE(test::error_of([&] { collate_causal_lm({a, b}, opts); }).find("a: is 4 tokens"), std::string::npos);
  TokenizedExample bad{"bad", {1, 2}, {0}, {}};
  EXPECT_NE(test::error_of([&] { collate_causal_lm({bad}, CollateOptions{}); }).find("bad: input_ids (2)"), std::string::npos);
}

namespace {
struct TinyModel {
  std::unique_ptr<models::VisionLanguageModel> model = models::load_model(test::data_path("llava-tiny-s0"));
  std::map<std::string, models::PreparedImage> prepared;

  TokenizedExample tokenize(const Conversation& c) {
    std::vector<models::PreparedImage> imgs;
    for (const auto& path : c.images) {
      if (!prepared.count(path)) prepared.emplace(path, model->prepare_image(image::decode_image_file(path)));
      imgs.push_back(prepared.at(path));
    }
    return tokenize_for_model(*model, c, conversation_template("v1"), imgs);
  }
  CausalLMBatch collate(const std::vector<TokenizedExample>& ex) {
    CollateOptions o;
    o.pad_token_id = model->info().pad_token_id;
    return collate_causal_lm(ex, o);
  }
  std::vector<models::PreparedImage> images_of(const CausalLMBatch& b) {
    std::vector<models::PreparedImage> out;
    for (const auto& k : b.images) out.push_back(prepared.at(k));
    return out;
  }
  torch::Tensor nll_sum(const CausalLMBatch& b) {
    auto out = forward_batch(*model, b, images_of(b));
    return masked_token_nll_sum(out.logits, to_tensors(b, torch::kCPU).labels).sum;
  }
};
}  // namespace

// Right padding leaves every real position's logits as in the unpadded forward.
TEST(TrainCollate, RightPaddedRowsMatchUnpaddedForward) {
  TinyModel m;
  torch::NoGradGuard no_grad;
  const auto convs = fixture_conversations();
  const auto long_ex = m.tokenize(convs[3]), short_ex = m.tokenize(convs[2]);
  ASSERT_GT(long_ex.input_ids.size(), short_ex.input_ids.size());
  const auto both = m.collate({long_ex, short_ex});
  const auto alone = m.collate({short_ex});
  const auto logits_both = forward_batch(*m.model, both, m.images_of(both)).logits;
  const auto logits_alone = forward_batch(*m.model, alone, m.images_of(alone)).logits;
  const int64_t n = static_cast<int64_t>(short_ex.input_ids.size());
  const double diff = (logits_both[1].slice(0, 0, n) - logits_alone[0]).abs().max().item<double>();
  EXPECT_LE(diff, 1e-5);
}

// Two micro-batches of 2 with the step's token count as divisor give the one-batch-of-4 gradient.
TEST(TrainAccumulation, MicroBatchesEqualOneBatchGradient) {
  TinyModel m;
  const auto params = select_trainable(m.model->named_parameters(),
                                       name_prefix_predicate({"multi_modal_projector.", "language_model."}));
  const auto convs = fixture_conversations();
  std::vector<TokenizedExample> ex;
  for (int i : {0, 1, 3, 4}) ex.push_back(m.tokenize(convs[static_cast<size_t>(i)]));

  const auto full = m.collate(ex);
  masked_token_cross_entropy(forward_batch(*m.model, full, m.images_of(full)).logits,
                             to_tensors(full, torch::kCPU).labels)
      .backward();
  std::map<std::string, torch::Tensor> reference;
  for (const auto& [k, p] : params) reference[k] = p.grad().clone();
  for (const auto& [k, p] : params) p.mutable_grad() = torch::Tensor();

  const auto first = m.collate({ex[0], ex[1]}), second = m.collate({ex[2], ex[3]});
  const int64_t step_tokens = first.target_tokens + second.target_tokens;
  ASSERT_EQ(step_tokens, full.target_tokens);
  ASSERT_NE(first.target_tokens, second.target_tokens);  // so a per-micro mean would be wrong
  scale_for_accumulation(m.nll_sum(first), step_tokens).backward();
  scale_for_accumulation(m.nll_sum(second), step_tokens).backward();
  double max_diff = 0, max_ref = 0;
  for (const auto& [k, p] : params) {
    max_diff = std::max(max_diff, (p.grad() - reference[k]).abs().max().item<double>());
    max_ref = std::max(max_ref, reference[k].abs().max().item<double>());
  }
  EXPECT_LE(max_diff, 1e-6);
  EXPECT_GT(max_ref, 1e-3);  // the gradients are not trivially zero

  // The naive mean of per-micro-batch means differs: the divisor matters.
  for (const auto& [k, p] : params) p.mutable_grad() = torch::Tensor();
  (m.nll_sum(first) / static_cast<double>(first.target_tokens) / 2.0).backward();
  (m.nll_sum(second) / static_cast<double>(second.target_tokens) / 2.0).backward();
  double naive_diff = 0;
  for (const auto& [k, p] : params) naive_diff = std::max(naive_diff, (p.grad() - reference[k]).abs().max().item<double>());
  EXPECT_GT(naive_diff, 1e-5);
}
