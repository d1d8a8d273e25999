// The inference hooks later stages rely on: sampling warpers against hand-computed values,
// contrastive stepping of two contexts, and the gradient-weighted attention map against a
// finite-difference estimate of d log p / d attention.
#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <limits>
#include <set>

#include "image/decode.h"
#include "infer/attention.h"
#include "infer/decode_graph.h"
#include "infer/generate.h"
#include "infer/scoring.h"
#include "models/device_memory.h"
#include "models/fixture_util.h"
#include "models/fused_ops.h"
#include "models/llava.h"
#include "test_paths.h"

using namespace p2dpo;

namespace {

const std::string kPrompt = "USER: <image>\nWhat shapes are in the picture? ASSISTANT:";

TEST(Warpers, TopKKeepsTiesAndTopPKeepsSmallestSetAboveP) {
  infer::SamplingConfig cfg;
  cfg.temperature = 1.0;
  cfg.top_k = 2;
  auto s = torch::tensor({{1.0f, 3.0f, 3.0f, 2.0f}});
  auto w = infer::warp_scores(s, cfg);
  // threshold = 2nd largest (3.0): both 3.0s survive, 1.0 and 2.0 are removed
  EXPECT_TRUE(std::isinf(w[0][0].item<float>()));
  EXPECT_EQ(w[0][1].item<float>(), 3.0f);
  EXPECT_EQ(w[0][2].item<float>(), 3.0f);
  EXPECT_TRUE(std::isinf(w[0][3].item<float>()));

  infer::SamplingConfig p;
  p.temperature = 1.0;
  p.top_p = 0.7;
  // probs of log([0.5, 0.3, 0.15, 0.05]): ascending cumsum 0.05, 0.2, 0.5, 1.0; remove <= 0.3
  auto probs = torch::tensor({{0.5f, 0.3f, 0.15f, 0.05f}}).log();
  auto wp = infer::warp_scores(probs, p);
  EXPECT_FALSE(std::isinf(wp[0][0].item<float>()));
  EXPECT_FALSE(std::isinf(wp[0][1].item<float>()));
  EXPECT_TRUE(std::isinf(wp[0][2].item<float>()));
  EXPECT_TRUE(std::isinf(wp[0][3].item<float>()));

  infer::SamplingConfig t;
  t.temperature = 0.5;
  auto wt = infer::warp_scores(torch::tensor({{1.0f, -2.0f}}), t);
  EXPECT_FLOAT_EQ(wt[0][0].item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(wt[0][1].item<float>(), -4.0f);
}

// Two decodings of the same rows agree: tokens and how they stopped exactly, log-probs to float
// rounding (frozen vs growing caches, fused vs separate loops pad to other shapes).
void expect_same_generations(const std::vector<infer::GenerationResult>& a, const std::vector<infer::GenerationResult>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t r = 0; r < a.size(); ++r) {
    EXPECT_EQ(a[r].token_ids, b[r].token_ids) << "row " << r;
    EXPECT_EQ(a[r].stopped_on_eos, b[r].stopped_on_eos) << "row " << r;
    ASSERT_EQ(a[r].logprobs.size(), b[r].logprobs.size());
    for (size_t i = 0; i < a[r].logprobs.size(); ++i) EXPECT_NEAR(a[r].logprobs[i], b[r].logprobs[i], 1e-4) << r << " " << i;
  }
}

class TinyLlava : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    model_ = models::LlavaModel::load(test::data_path("llava-tiny-sharp-s0"), {test::test_device()});
    images_ = {model_->prepare_image(image::decode_image_file(test::data_path("llava-tiny-sharp-s0/image0.png")))};
    ids_ = model_->tokenize_prompt(kPrompt, images_);
  }
  // A cache the prompt (ids_ with these image features) has filled.
  models::KVCache prompt_cache(const torch::Tensor& features, int64_t room_after = 0) {
    models::KVCache cache = model_->new_cache();
    cache.room_after = room_after;
    models::ForwardInput prompt;
    prompt.input_ids = torch::tensor(ids_, torch::kLong).view({1, -1});
    prompt.image_features = features;
    prompt.cache = &cache;
    model_->forward(prompt);
    return cache;
  }
  std::unique_ptr<models::LlavaModel> model_;
  std::vector<models::PreparedImage> images_;
  std::vector<int64_t> ids_;
};

TEST_F(TinyLlava, ContrastiveStepsTwoContextsTogether) {
  // Expert: the real image; amateur: a blacked-out copy. The combiner sees both contexts'
  // logits; with (1+a)*E - a*A it must equal stepping each context alone and combining.
  torch::NoGradGuard ng;
  auto dark = images_[0];
  dark.pixel_values = torch::zeros_like(dark.pixel_values);
  infer::GenerationRequest expert{ids_, model_->encode_images(images_), std::nullopt};
  infer::GenerationRequest amateur{ids_, model_->encode_images({dark}), std::nullopt};
  const double alpha = 0.5;
  std::vector<torch::Tensor> seen;
  auto combine = [&](const torch::Tensor& logits) {
    seen.push_back(logits.cpu().clone());  // the combiner gets the device's logits
    return (1 + alpha) * logits.select(1, 0) - alpha * logits.select(1, 1);
  };
  infer::SamplingConfig cfg;
  cfg.max_new_tokens = 5;
  cfg.stop_on_eos = false;
  auto res = infer::generate_multi_context(*model_, {{expert, amateur}}, combine, cfg)[0];
  ASSERT_EQ(res.token_ids.size(), 5u);
  // Replay by hand with two separate caches.
  std::vector<int64_t> e_ids = ids_, a_ids = ids_;
  for (size_t s = 0; s < 5; ++s) {
    models::ForwardInput ei, ai;
    ei.input_ids = torch::tensor(e_ids, torch::kLong).view({1, -1});
    ei.image_features = expert.image_features;
    ai.input_ids = torch::tensor(a_ids, torch::kLong).view({1, -1});
    ai.image_features = amateur.image_features;
    auto le = model_->forward(ei).logits.select(1, -1).cpu();
    auto la = model_->forward(ai).logits.select(1, -1).cpu();
    EXPECT_LE((seen[s].select(1, 0) - le).abs().max().item<double>(), 1e-4);
    EXPECT_LE((seen[s].select(1, 1) - la).abs().max().item<double>(), 1e-4);
    auto tok = ((1 + alpha) * le - alpha * la).argmax(-1).item<int64_t>();
    EXPECT_EQ(tok, res.token_ids[s]) << "step " << s;
    e_ids.push_back(tok);
    a_ids.push_back(tok);
  }
}

TEST_F(TinyLlava, GradientWeightedAttentionEqualsFullEagerGradient) {
  // Independent route: run the eager path that returns full probability maps, differentiate
  // log p(first greedy token) w.r.t. the whole map of the layer, take the last row, and form
  // mean_h A * relu(dA) over the image keys. The row-capture implementation must agree.
  const int layer = 1;
  auto g = infer::gradient_weighted_attention(*model_, images_, ids_, layer);
  ASSERT_EQ(g.map.numel(), 16);
  EXPECT_TRUE((g.map >= 0).all().item<bool>());
  EXPECT_GT(g.map.sum().item<double>(), 0.0);

  torch::AutoGradMode on(true);
  torch::Tensor feats;
  {
    torch::NoGradGuard ng;
    feats = model_->encode_images(images_);
  }
  auto ids = torch::tensor(ids_, torch::kLong).view({1, -1});
  // Base weights are frozen: make the input require grad so the eager maps join the graph.
  auto embeds = model_->merged_embeddings(ids, feats).detach().requires_grad_(true);
  std::vector<torch::Tensor> attn;
  auto h = model_->language_model().forward(embeds, {}, nullptr, nullptr, nullptr, &attn);
  auto last = model_->language_model().lm_head(h).select(1, -1).view({-1});
  const int64_t target = last.argmax().item<int64_t>();
  EXPECT_EQ(target, g.first_token);
  auto logp = torch::log_softmax(last, -1)[target];
  auto grad = torch::autograd::grad({logp}, {attn[layer]})[0];  // [1, heads, L, L]
  const int64_t L = ids.size(1);
  auto rowA = attn[layer].detach().select(0, 0).select(1, L - 1);  // [heads, L]
  auto rowG = grad.select(0, 0).select(1, L - 1);
  auto full = (rowA * torch::relu(rowG)).mean(0).cpu();
  std::vector<int64_t> pos;
  for (int64_t i = 0; i < L; ++i) if (ids_[i] == model_->info().image_token_id) pos.push_back(i);
  auto want = full.index_select(0, torch::tensor(pos, torch::kLong));
  EXPECT_LE((want - g.map).abs().max().item<double>(), 1e-6 + 1e-4 * want.abs().max().item<double>());
}

TEST_F(TinyLlava, BatchedGradientAttentionEqualsOnePromptAtATime) {
  // Prompts of different lengths share one left-padded forward and backward; each row's map and
  // first token are the single-prompt call's (the rows' log-probs do not mix).
  const auto dark = [&] {
    auto img = images_[0];
    img.pixel_values = img.pixel_values * 0.5;
    return img;
  }();
  const std::vector<std::vector<models::PreparedImage>> images = {images_, {dark}, images_};
  const std::vector<std::vector<int64_t>> ids = {
      ids_, model_->tokenize_prompt("USER: <image>\nIs there a red circle in the top left corner? ASSISTANT:", {dark}),
      model_->tokenize_prompt("USER: <image>\nColour? ASSISTANT:", images_)};
  ASSERT_NE(ids[0].size(), ids[1].size());
  for (int layer : {0, 1}) {
    const auto batched = infer::gradient_weighted_attention_batch(*model_, images, ids, layer);
    ASSERT_EQ(batched.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      const auto one = infer::gradient_weighted_attention(*model_, images[i], ids[i], layer);
      EXPECT_EQ(batched[i].first_token, one.first_token) << i;
      ASSERT_EQ(batched[i].map.sizes(), one.map.sizes());
      const double scale = one.map.abs().max().item<double>();
      EXPECT_GT(scale, 0.0);
      EXPECT_LE((batched[i].map - one.map).abs().max().item<double>(), 1e-4 * scale) << "prompt " << i << " layer " << layer;
    }
  }
}

TEST_F(TinyLlava, CaptureDoesNotChangeTheOutput) {
  torch::AutoGradMode on(true);
  models::AttentionCapture cap;
  cap.layers = {0};
  cap.query_rows = {static_cast<int64_t>(ids_.size()) - 1};
  cap.keep_graph = true;
  models::ForwardInput in;
  in.input_ids = torch::tensor(ids_, torch::kLong).view({1, -1});
  {
    torch::NoGradGuard ng;
    in.image_features = model_->encode_images(images_);
  }
  in.capture = &cap;
  in.logits_last_only = true;
  auto last = model_->forward(in).logits.view({-1});
  torch::NoGradGuard ng;
  models::ForwardInput plain = in;
  plain.capture = nullptr;
  auto ref = model_->forward(plain).logits.view({-1});
  EXPECT_LE((ref - last.detach()).abs().max().item<double>(), 1e-5);
}

TEST_F(TinyLlava, ScoreOfGreedyAnswerEqualsGenerationLogprobs) {
  torch::NoGradGuard ng;
  infer::SamplingConfig cfg;
  cfg.max_new_tokens = 6;
  cfg.stop_on_eos = false;
  infer::GenerationRequest req{ids_, model_->encode_images(images_), std::nullopt};
  auto gen = infer::generate(*model_, {req}, cfg)[0];
  auto sc = infer::score_ids(*model_, images_, ids_, gen.token_ids);
  ASSERT_EQ(sc.logprobs.size(), gen.logprobs.size());
  for (size_t i = 0; i < sc.logprobs.size(); ++i) EXPECT_NEAR(sc.logprobs[i], gen.logprobs[i], 1e-4);
}

TEST_F(TinyLlava, MinNewTokensKeepsEosOutUntilTheMinimum) {
  // Make the greedy first token the end token: without a minimum the answer stops at once; with
  // min_new_tokens 3 (HF's MinNewTokensLengthLogitsProcessor) it cannot appear in the first 3.
  torch::NoGradGuard ng;
  infer::GenerationRequest req{ids_, model_->encode_images(images_), std::nullopt};
  infer::SamplingConfig cfg;
  cfg.max_new_tokens = 5;
  cfg.stop_on_eos = false;
  const int64_t first = infer::generate(*model_, {req}, cfg)[0].token_ids.at(0);
  cfg.stop_on_eos = true;
  cfg.eos_token_ids = {first};
  const auto stopped = infer::generate(*model_, {req}, cfg)[0];
  ASSERT_EQ(stopped.token_ids.size(), 1u);
  EXPECT_TRUE(stopped.stopped_on_eos);
  cfg.min_new_tokens = 3;
  const auto held = infer::generate(*model_, {req}, cfg)[0];
  ASSERT_GE(held.token_ids.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NE(held.token_ids[i], first) << "token " << i;
  EXPECT_TRUE(std::isfinite(held.logprobs[0]));
}

TEST_F(TinyLlava, CacheGrowingPastItsBufferMatchesRecomputation) {
  // The KV cache grows inside buffers in steps of 128 rows; 150 new tokens after a ~60-token
  // prompt cross a reallocation. Cached, batched-with-padding and uncached runs must agree token for token.
  torch::NoGradGuard ng;
  infer::SamplingConfig cfg;
  cfg.max_new_tokens = 150;
  cfg.stop_on_eos = false;
  infer::GenerationRequest req{ids_, model_->encode_images(images_), std::nullopt};
  ASSERT_LT(ids_.size(), 128u);
  ASSERT_GT(ids_.size() + 150, 128u);
  auto cached = infer::generate(*model_, {req}, cfg)[0];
  auto nocache_cfg = cfg;
  nocache_cfg.use_cache = false;
  auto recomputed = infer::generate(*model_, {req}, nocache_cfg)[0];
  ASSERT_EQ(cached.token_ids.size(), 150u);
  EXPECT_EQ(cached.token_ids, recomputed.token_ids);
  for (size_t i = 0; i < cached.logprobs.size(); ++i) EXPECT_NEAR(cached.logprobs[i], recomputed.logprobs[i], 1e-4);
  // A second, shorter prompt in the same batch: left padding plus growth.
  infer::GenerationRequest shorter{std::vector<int64_t>(ids_.begin(), ids_.end() - 3), req.image_features, std::nullopt};
  auto batched = infer::generate(*model_, {req, shorter}, cfg);
  EXPECT_EQ(batched[0].token_ids, cached.token_ids);
  EXPECT_EQ(batched[1].token_ids, infer::generate(*model_, {shorter}, cfg)[0].token_ids);
}

TEST_F(TinyLlava, FrozenCacheAndCudaGraphsDecodeLikeTheGrowingCache) {
  // Freezing the cache after the prompt (fixed shapes; write column, positions and key mask on the
  // device) and, on a CUDA device, replaying each step as one CUDA graph give the growing cache's
  // tokens, with left padding in the batch; log-probs agree to float rounding (a frozen step
  // attends over the whole buffer, its unused columns masked to exactly zero weight).
  torch::NoGradGuard ng;
  infer::SamplingConfig cfg;
  cfg.max_new_tokens = 40;
  cfg.stop_on_eos = false;
  cfg.fixed_cache = false;  // the reference: a growing cache (CUDA models freeze theirs by default)
  infer::GenerationRequest req{ids_, model_->encode_images(images_), std::nullopt};
  infer::GenerationRequest shorter{std::vector<int64_t>(ids_.begin(), ids_.end() - 3), req.image_features, std::nullopt};
  // On a GPU the graphs must really be there (CMake turns them off if it cannot build them).
  if (model_->device().is_cuda()) EXPECT_TRUE(infer::decode_graphs_available()) << "this CUDA build has no CUDA graphs";
  const auto growing = infer::generate(*model_, {req, shorter}, cfg);
  ASSERT_EQ(growing[0].token_ids.size(), 40u);
  for (bool graphs : {false, true}) {
    SCOPED_TRACE(graphs ? "cuda_graphs (a frozen cache alone on the CPU)" : "fixed_cache");
    auto c = cfg;
    c.fixed_cache = !graphs;
    c.cuda_graphs = graphs;
    expect_same_generations(growing, infer::generate(*model_, {req, shorter}, c));
  }

  // Sampling draws the same tokens (the host generators see the same probabilities).
  auto sampled = cfg;
  sampled.temperature = 1.0;
  sampled.top_k = 20;
  sampled.seed = 11;
  auto sampled_fixed = sampled;
  sampled_fixed.fixed_cache = true;
  expect_same_generations(infer::generate(*model_, {req, shorter}, sampled), infer::generate(*model_, {req, shorter}, sampled_fixed));

  // Two contexts per sequence (contrastive decoding) step through one frozen cache.
  auto dark = images_[0];
  dark.pixel_values = torch::zeros_like(dark.pixel_values);
  infer::GenerationRequest amateur{ids_, model_->encode_images({dark}), std::nullopt};
  auto combine = [](const torch::Tensor& l) { return 1.5 * l.select(1, 0) - 0.5 * l.select(1, 1); };
  auto cd_fixed = cfg;
  cd_fixed.cuda_graphs = true;
  cd_fixed.fixed_cache = true;
  expect_same_generations(infer::generate_multi_context(*model_, {{req, amateur}}, combine, cfg),
          infer::generate_multi_context(*model_, {{req, amateur}}, combine, cd_fixed));

  // A frozen cache takes one token per row, and freezes once.
  models::KVCache cache = prompt_cache(req.image_features);
  EXPECT_THROW(model_->freeze_cache(cache, cache.length()), c10::Error);  // no room
  model_->freeze_cache(cache, cache.length() + 4);
  EXPECT_THROW(model_->freeze_cache(cache, 100), c10::Error);
  models::ForwardInput two;
  two.input_ids = torch::ones({1, 2}, torch::kLong).to(model_->device());
  two.cache = &cache;
  EXPECT_THROW(model_->forward(two), c10::Error);

  // A cache whose prompt left room for the new tokens (KVCache::room_after, as generate() asks when
  // it freezes) is frozen in place: the same buffers, its tail zeroed, and the same decoding steps
  // as a frozen copy of a cache that grew in chunks.
  models::KVCache roomy = prompt_cache(req.image_features, 4);
  models::KVCache chunked = prompt_cache(req.image_features);
  const int64_t T = roomy.length();
  ASSERT_EQ(chunked.length(), T);
  ASSERT_EQ(roomy.key_buffers[0].size(2), T + 4);
  ASSERT_NE(chunked.key_buffers[0].size(2), T + 4);
  const void* roomy_keys = roomy.key_buffers[0].data_ptr();
  const void* chunked_keys = chunked.key_buffers[0].data_ptr();
  // Garbage past the prompt, as torch::empty may leave it: freezing must clear it.
  roomy.key_buffers[0].narrow(2, T, 4).fill_(std::numeric_limits<float>::quiet_NaN());
  roomy.value_buffers[0].narrow(2, T, 4).fill_(std::numeric_limits<float>::quiet_NaN());
  model_->freeze_cache(roomy, T + 4);
  model_->freeze_cache(chunked, T + 4);
  EXPECT_EQ(roomy.key_buffers[0].data_ptr(), roomy_keys);
  EXPECT_NE(chunked.key_buffers[0].data_ptr(), chunked_keys);
  EXPECT_EQ(roomy.key_buffers[0].narrow(2, T, 4).abs().sum().item<double>(), 0.0);
  for (int64_t token : {5, 9, 2}) {
    models::ForwardInput step;
    step.input_ids = torch::full({1, 1}, token, torch::kLong).to(model_->device());
    step.cache = &roomy;
    const auto a = model_->forward(step).logits;
    step.cache = &chunked;
    const auto b = model_->forward(step).logits;
    EXPECT_TRUE(torch::equal(a, b)) << "token " << token;
  }
}

TEST(TinyLlavaLoad, CudaFusedOpsSwitchDecidesTheFusedProjectionsAtLoad) {
  // models/fused_ops.h: on CUDA the decoder fuses q/k/v at load unless the switch is off; the CPU
  // keeps HF's three projections either way. Off also restores HF's RMSNorm order, bit for bit.
  const bool cuda = test::test_device().is_cuda();
  for (const bool on : {true, false}) {
    models::set_cuda_fused_ops(on);
    auto model = models::LlavaModel::load(test::data_path("llava-tiny-sharp-s0"), {test::test_device()});
    for (auto& layer : model->language_model().layers()) EXPECT_EQ(layer.qkv_weight.defined(), cuda && on) << on;
    const auto& norm = model->language_model().layers()[0].input_layernorm;
    const auto x = torch::randn({2, 3, norm.weight.size(0)}, norm.weight.options());
    const auto x32 = x.to(torch::kFloat32);
    const auto hf = norm.weight * (x32 * torch::rsqrt(x32.pow(2).mean(-1, true) + norm.eps)).to(x.scalar_type());
    if (!on || !cuda) EXPECT_TRUE(torch::equal(norm(x), hf)) << on;
    EXPECT_LE((norm(x) - hf).abs().max().item<double>(), 1e-5) << on;
  }
  models::set_cuda_fused_ops(true);
}

TEST_F(TinyLlava, FusedQkvProjectionsComputeTheSameLayers) {
  // LlamaDecoder::fuse_qkv_projections (done at load on CUDA): the three weights become rows of one
  // tensor, one GEMM projects them and one RoPE pass turns q and k; the same logits to float
  // rounding. An enabled LoRA on q sends a layer back to the three projections (a zero B adds
  // nothing there, so the values stay; a nonzero one must show).
  torch::NoGradGuard ng;
  auto& lm = model_->language_model();
  lm.fuse_qkv_projections();
  auto& layer = lm.layers()[0];
  ASSERT_TRUE(layer.qkv_weight.defined());
  EXPECT_EQ(layer.q_proj.weight.data_ptr(), layer.qkv_weight.data_ptr());
  const auto features = model_->encode_images(images_);
  auto logits = [&] {
    models::ForwardInput in;
    in.input_ids = torch::tensor(ids_, torch::kLong).view({1, -1});
    in.image_features = features;
    return model_->forward(in).logits.to(torch::kCPU);
  };
  const auto fused = logits();
  torch::manual_seed(5);
  std::vector<std::shared_ptr<models::LoraWeights>> loras;
  for (auto& l : lm.layers()) {
    auto lora = std::make_shared<models::LoraWeights>();
    lora->A = torch::randn({2, l.q_proj.weight.size(1)}, l.q_proj.weight.options());
    lora->B = torch::zeros({l.q_proj.weight.size(0), 2}, l.q_proj.weight.options());
    l.q_proj.lora = lora;
    loras.push_back(lora);
  }
  const auto separate = logits();
  EXPECT_LE((fused - separate).abs().max().item<double>(), 1e-4);  // the HF-parity logit tolerance
  for (auto& lora : loras) lora->B.normal_();
  EXPECT_GT((logits() - separate).abs().max().item<double>(), 1e-3) << "the LoRA on q was not applied";
  for (auto& l : lm.layers()) l.q_proj.lora = nullptr;
  EXPECT_TRUE(torch::equal(logits(), fused));
  {
    // Weights being trained (full fine-tuning) take the three projections, so their gradients reach them.
    torch::AutoGradMode grad(true);
    layer.v_proj.weight.requires_grad_(true);
    models::ForwardInput in;
    in.input_ids = torch::tensor(ids_, torch::kLong).view({1, -1});
    in.image_features = features;
    model_->forward(in).logits.sum().backward();
    ASSERT_TRUE(layer.v_proj.weight.grad().defined());
    EXPECT_GT(layer.v_proj.weight.grad().abs().sum().item<double>(), 0.0);
    layer.v_proj.weight.requires_grad_(false);
  }
  // A weight replaced after fusing (no longer the fused tensor's rows) is used as it is.
  layer.k_proj.weight = layer.k_proj.weight * 2.0;
  EXPECT_GT((logits() - fused).abs().max().item<double>(), 1e-4) << "the replaced k weight was not used";
}

TEST_F(TinyLlava, DeviceMemoryPeakSeesAnAllocation) {
  // The pairs stages' memory (models/device_memory.h): on a CUDA device the allocator's peak since
  // the last reading covers a 64 MiB tensor, and the next reading, after it is freed, does not; a
  // CUDA build must have it. On the CPU there is nothing to read.
  const auto device = model_->device();
  if (!device.is_cuda()) {
    if (!models::device_memory_stats_available()) EXPECT_FALSE(models::take_device_memory_peak(0).has_value());
    return;
  }
  ASSERT_TRUE(models::device_memory_stats_available()) << "this CUDA build reads no allocator statistics";
  const int index = device.has_index() ? device.index() : 0;
  models::take_device_memory_peak(index);
  int64_t before = 0;
  {
    auto big = torch::empty({64 << 20}, torch::TensorOptions().dtype(torch::kUInt8).device(device));
    before = models::take_device_memory_peak(index).value().allocated_bytes;
    EXPECT_GE(before, int64_t{64} << 20);
  }
  const auto after = models::take_device_memory_peak(index).value();  // the peak reset at the last reading
  EXPECT_GE(after.reserved_bytes, after.allocated_bytes);
  EXPECT_LT(models::take_device_memory_peak(index).value().allocated_bytes, before);
}

TEST_F(TinyLlava, RecomputationCheckpointsTheRequestedLayers) {
  // set_activation_recomputation(N): the first N decoder layers become LayerCheckpoint nodes of the
  // graph (0 none, < 0 all); the logits and the gradient w.r.t. the embeddings stay the same.
  const int64_t n_layers = model_->info().num_layers;
  ASSERT_GE(n_layers, 2);
  auto count_checkpoints = [](const torch::Tensor& out) {
    std::vector<torch::autograd::Node*> pending{out.grad_fn().get()};
    std::set<torch::autograd::Node*> seen;
    int64_t n = 0;
    while (!pending.empty()) {
      auto* node = pending.back();
      pending.pop_back();
      if (!node || !seen.insert(node).second) continue;
      if (node->name().find("LayerCheckpoint") != std::string::npos) ++n;
      for (const auto& edge : node->next_edges()) pending.push_back(edge.function.get());
    }
    return n;
  };
  auto features = model_->encode_images(images_).detach();
  torch::Tensor reference_logits, reference_grad;
  for (int64_t layers : {int64_t{0}, int64_t{1}, n_layers - 1, int64_t{-1}}) {
    SCOPED_TRACE("recomputed layers " + std::to_string(layers));
    model_->set_activation_recomputation(layers);
    auto f = features.clone().requires_grad_(true);
    models::ForwardInput in;
    in.input_ids = torch::tensor(ids_, torch::kLong).view({1, -1}).to(model_->device());
    in.image_features = f;
    auto logits = model_->forward(in).logits;
    EXPECT_EQ(count_checkpoints(logits), layers < 0 ? n_layers : layers);
    logits.logsumexp(-1).sum().backward();
    if (!reference_logits.defined()) {
      reference_logits = logits.detach();
      reference_grad = f.grad();
      continue;
    }
    EXPECT_LE((logits.detach() - reference_logits).abs().max().item<double>(), 1e-5);
    EXPECT_LE((f.grad() - reference_grad).abs().max().item<double>(), 1e-5);
  }
  model_->set_activation_recomputation(0);
}

TEST_F(TinyLlava, FusedDecodingGroupsEqualTheirSeparateCalls) {
  // The pairs pipeline's greedy, sampled and contrastive stages in one loop (generate_groups): each
  // group gets what its own call gives (tokens, and log-probs to float rounding, since the padded
  // shapes differ), with its own limits, EOS, seeds and combiner, also when one group stops early
  // and keeps stepping on padding while the others go on; growing and frozen caches alike.
  torch::NoGradGuard ng;
  infer::GenerationRequest req{ids_, model_->encode_images(images_), std::nullopt};
  infer::GenerationRequest shorter{std::vector<int64_t>(ids_.begin(), ids_.end() - 3), req.image_features, std::nullopt};
  auto dark = images_[0];
  dark.pixel_values = torch::zeros_like(dark.pixel_values);
  infer::GenerationRequest amateur{ids_, model_->encode_images({dark}), std::nullopt};
  auto combine = [](const torch::Tensor& l) { return 1.5 * l.select(1, 0) - 0.5 * l.select(1, 1); };
  for (bool fixed : {false, true}) {
    SCOPED_TRACE(fixed ? "frozen cache" : "growing cache");
    infer::SamplingConfig base;
    base.fixed_cache = fixed;
    base.stop_on_eos = false;
    // Greedy, stopping on a token it makes at step 5 (so it finishes long before the others).
    infer::DecodeGroup greedy{{{req}, {shorter}}, nullptr, base};
    greedy.cfg.max_new_tokens = 30;
    greedy.cfg.min_new_tokens = 2;
    const auto free_run = infer::generate(*model_, {req, shorter}, greedy.cfg);
    greedy.cfg.stop_on_eos = true;
    greedy.cfg.eos_token_ids = {free_run[0].token_ids.at(5)};
    // Sampled: default seeds count within the group; one request brings its own.
    infer::DecodeGroup sampled{{{shorter}, {req}, {req}}, nullptr, base};
    sampled.contexts[2][0].seed = 77;
    sampled.cfg.max_new_tokens = 20;
    sampled.cfg.temperature = 1.0;
    sampled.cfg.top_k = 20;
    sampled.cfg.seed = 11;
    // Contrastive, two contexts per sequence, sampled with top-p.
    infer::DecodeGroup contrastive{{{req, amateur}, {shorter, amateur}}, combine, base};
    contrastive.cfg.max_new_tokens = 24;
    contrastive.cfg.temperature = 0.8;
    contrastive.cfg.top_p = 0.9;
    contrastive.cfg.seed = 5;
    infer::DecodeGroup empty{{}, nullptr, base};
    infer::DecodeGroup no_tokens{{{req}}, nullptr, base};
    no_tokens.cfg.max_new_tokens = 0;

    const auto fused = infer::generate_groups(*model_, {greedy, empty, sampled, no_tokens, contrastive});
    ASSERT_EQ(fused.size(), 5u);
    EXPECT_TRUE(fused[1].empty());
    ASSERT_EQ(fused[3].size(), 1u);
    EXPECT_TRUE(fused[3][0].token_ids.empty());
    const auto greedy_alone = infer::generate(*model_, {req, shorter}, greedy.cfg);
    EXPECT_TRUE(greedy_alone[0].stopped_on_eos);
    EXPECT_LE(greedy_alone[0].token_ids.size(), 6u);
    expect_same_generations(fused[0], greedy_alone);
    expect_same_generations(fused[2], infer::generate(*model_, {shorter, sampled.contexts[1][0], sampled.contexts[2][0]}, sampled.cfg));
    EXPECT_EQ(fused[2][0].token_ids.size(), 20u);
    expect_same_generations(fused[4], infer::generate_multi_context(*model_, contrastive.contexts, combine, contrastive.cfg));
    EXPECT_EQ(fused[4][0].token_ids.size(), 24u);
  }
  // A generated token that happens to be the image token (random models draw it) continues a
  // cached sequence like any other token, as in HF: embedded, not taken for an image slot.
  for (bool fixed : {false, true}) {
    models::KVCache cache = prompt_cache(req.image_features);
    if (fixed) model_->freeze_cache(cache, cache.length() + 2);
    models::ForwardInput step;
    step.input_ids = torch::full({1, 1}, model_->info().image_token_id, torch::kLong).to(model_->device());
    step.cache = &cache;
    EXPECT_NO_THROW(model_->forward(step)) << (fixed ? "frozen" : "growing");
  }
  // One loop, one cache: the groups must agree on how it is kept.
  infer::DecodeGroup a{{{req}}, nullptr, {}}, b{{{req}}, nullptr, {}};
  b.cfg.fixed_cache = true;
  EXPECT_THROW(infer::generate_groups(*model_, {a, b}), std::invalid_argument);
}

}  // namespace

namespace {

TEST(ReducedPrecision, Bfloat16WeightsTrackFloat32) {
  // The dtype plumbing used on GPUs (weights in bf16, RMSNorm/softmax/RoPE in fp32, logits cast
  // to fp32), exercised on CPU: judged statistically as hf-port.md §I.5 says, not elementwise.
  torch::NoGradGuard ng;
  models::LoadOptions bf16;
  bf16.dtype = torch::kBFloat16;
  auto m32 = models::LlavaModel::load(test::data_path("llava-tiny-sharp-s0"));
  auto m16 = models::LlavaModel::load(test::data_path("llava-tiny-sharp-s0"), bf16);
  auto img = image::decode_image_file(test::data_path("llava-tiny-sharp-s0/image0.png"));
  std::vector<models::PreparedImage> images = {m32->prepare_image(img)};
  auto ids = m32->tokenize_prompt(kPrompt, images);
  models::ForwardInput in;
  in.input_ids = torch::tensor(ids, torch::kLong).view({1, -1});
  in.image_features = m32->encode_images(images);
  auto l32 = m32->forward(in).logits;
  in.image_features = m16->encode_images(images);
  auto l16 = m16->forward(in).logits;
  EXPECT_EQ(l16.scalar_type(), torch::kFloat32);
  auto cos = torch::cosine_similarity(l32.view({-1, l32.size(-1)}), l16.view({-1, l16.size(-1)}), 1);
  EXPECT_GT(cos.min().item<double>(), 0.99);
  auto agree = (l32.argmax(-1) == l16.argmax(-1)).to(torch::kFloat32).mean().item<double>();
  EXPECT_GT(agree, 0.9);
}

}  // namespace

