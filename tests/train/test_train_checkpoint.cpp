// Checkpoint round trip, retention, and THE resume test: a run stopped after k steps (state
// dropped as by a kill) and resumed in fresh objects ends bit-identical to an uninterrupted run.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>
#include <fstream>

#include "io/atomic_file.h"
#include "image/decode.h"
#include "io/json_io.h"
#include "models/load.h"
#include "test_paths.h"
#include "test_util.h"
#include "train/causal_lm_loop.h"
#include "train/checkpoint.h"
#include "train/conversations.h"
#include "train/optimizer.h"
#include "train/params.h"
#include "train/rng.h"

using namespace p2dpo;
using namespace p2dpo::train;
namespace fs = std::filesystem;

namespace {
std::map<std::string, torch::Tensor> small_params() {
  torch::manual_seed(11);
  return {{"a.weight", torch::randn({3, 2}).requires_grad_(true)},
          {"a.bias", torch::randn({3}).requires_grad_(true)},
          {"h.weight", torch::randn({2}, torch::kFloat64).requires_grad_(true)}};
}

void fake_step(std::map<std::string, torch::Tensor>& params, AdamW& opt, double lr) {
  for (auto& [k, p] : params) {
    if (k != "h.weight") p.mutable_grad() = torch::randn(p.sizes(), p.options().requires_grad(false));
  }
  opt.step(lr);
  opt.zero_grad();
}
}  // namespace

TEST(TrainCheckpoint, RoundTripRestoresEverything) {
  const std::string dir = test::scratch_dir("train_ckpt_roundtrip");
  auto params = small_params();
  AdamWConfig c;
  c.weight_decay = 0.1;
  AdamW opt(params, c);
  fake_step(params, opt, 0.01);
  fake_step(params, opt, 0.02);
  TrainState st;
  st.step = 2;
  st.data = {1, 5};
  st.data_seed = 18446744073709551615ULL;  // the full uint64 range survives JSON
  st.rng.seed(99);
  st.rng.discard(7);
  st.elapsed_s = 12.5;
  st.extra = {{"stage", 2}};
  torch::manual_seed(1234);
  torch::rand({3});
  const std::string written = save_checkpoint(dir, params, opt, st, 3);
  EXPECT_EQ(fs::path(written).filename().string(), "ckpt-00000002");
  const auto expected_rand = torch::rand({5});
  auto expected_rng = st.rng;

  // Perturb everything, then load.
  std::map<std::string, torch::Tensor> saved_params;
  for (const auto& [k, p] : params) saved_params[k] = p.detach().clone();
  std::map<std::string, torch::Tensor> saved_state;
  for (const auto& [k, t] : opt.state_tensors()) saved_state[k] = t.clone();  // live tensors: copy
  fake_step(params, opt, 0.5);
  torch::manual_seed(777);
  const TrainState back = load_checkpoint(written, params, opt);
  for (const auto& [k, p] : params) EXPECT_TRUE(torch::equal(p, saved_params[k])) << k;
  const auto state_back = opt.state_tensors();
  ASSERT_EQ(state_back.size(), saved_state.size());
  for (const auto& [k, t] : saved_state) EXPECT_TRUE(torch::equal(state_back.at(k), t)) << k;
  EXPECT_EQ(state_back.at("step.a.weight").item<int64_t>(), 2);
  EXPECT_FALSE(state_back.count("step.h.weight"));  // never had a gradient
  EXPECT_TRUE(torch::equal(torch::rand({5}), expected_rand));
  EXPECT_EQ(back.step, 2);
  EXPECT_EQ(back.data, (SamplerPosition{1, 5}));
  EXPECT_EQ(back.data_seed, 18446744073709551615ULL);
  auto rng_back = back.rng;
  EXPECT_EQ(rng_back(), expected_rng());
  EXPECT_EQ(back.elapsed_s, 12.5);
  EXPECT_EQ(back.extra["stage"], 2);
  const auto manifest = read_checkpoint_manifest(written);
  EXPECT_EQ(manifest["optimizer"]["no_decay"], nlohmann::json({"a.bias"}));
  EXPECT_TRUE(params.at("a.weight").requires_grad());  // still a trainable leaf after the in-place copy
}

TEST(TrainCheckpoint, LatestKeepLastAndPartialSaves) {
  const std::string dir = test::scratch_dir("train_ckpt_latest");
  EXPECT_FALSE(latest_checkpoint(dir + "/none").has_value());
  auto params = small_params();
  AdamW opt(params, AdamWConfig{});
  TrainState st;
  for (int64_t s : {1, 2, 3}) {
    st.step = s;
    save_checkpoint(dir, params, opt, st, 2);
  }
  EXPECT_FALSE(fs::exists(dir + "/ckpt-00000001"));
  EXPECT_TRUE(fs::exists(dir + "/ckpt-00000002"));
  EXPECT_EQ(*latest_checkpoint(dir), dir + "/ckpt-00000003");
  // A crash mid-save leaves a .tmp directory; an incomplete one has no manifest. Neither counts.
  fs::create_directories(dir + "/ckpt-00000009.tmp");
  fs::create_directories(dir + "/ckpt-00000008");
  EXPECT_EQ(*latest_checkpoint(dir), dir + "/ckpt-00000003");
  st.step = 4;
  save_checkpoint(dir, params, opt, st, 2);
  EXPECT_FALSE(fs::exists(dir + "/ckpt-00000009.tmp"));  // stale partial save cleaned
  EXPECT_EQ(*latest_checkpoint(dir), dir + "/ckpt-00000004");
  st.step = 4;  // saving the same step again replaces it
  st.elapsed_s = 3.0;
  save_checkpoint(dir, params, opt, st, 2);
  EXPECT_EQ(read_checkpoint_manifest(dir + "/ckpt-00000004")["elapsed_s"], 3.0);
}

TEST(TrainCheckpoint, LoadRejectsADifferentParameterSet) {
  const std::string dir = test::scratch_dir("train_ckpt_mismatch");
  auto params = small_params();
  AdamW opt(params, AdamWConfig{});
  TrainState st;
  const std::string written = save_checkpoint(dir, params, opt, st, 1);
  auto fewer = params;
  fewer.erase("a.bias");
  AdamW opt2(fewer, AdamWConfig{});
  std::string msg = test::error_of([&] { load_checkpoint(written, fewer, opt2); });
  EXPECT_NE(msg.find("parameter 'a.bias' is not trainable in this run"), std::string::npos) << msg;
  auto other = params;
  other["a.bias"] = torch::zeros({4}).requires_grad_(true);
  AdamW opt3(other, AdamWConfig{});
  msg = test::error_of([&] { load_checkpoint(written, other, opt3); });
  EXPECT_NE(msg.find("'a.bias' has shape [3]"), std::string::npos) << msg;
  io::write_file_atomic(written + "/state.json", R"({"format": "something-else", "version": 1})");
  msg = test::error_of([&] { load_checkpoint(written, params, opt); });
  EXPECT_NE(msg.find("field 'format'"), std::string::npos) << msg;
}

namespace {
CausalLMTrainConfig resume_config() {
  CausalLMTrainConfig cfg;
  cfg.max_steps = 7;  // 6 conversations, batch 4: crosses an epoch boundary at step 2
  cfg.micro_batch_size = 2;
  cfg.effective_batch = 4;
  cfg.peak_lr = 5e-3;
  cfg.warmup_steps = 2;
  cfg.min_lr_ratio = 0.1;
  cfg.adamw.weight_decay = 0.1;
  cfg.adamw.beta2 = 0.95;
  cfg.max_grad_norm = 0.5;
  cfg.seed = 123;
  cfg.save_every = 2;
  cfg.keep_last = 2;
  cfg.progress = false;
  return cfg;
}

std::map<std::string, torch::Tensor> trained_weights(models::VisionLanguageModel& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [k, v] : m.named_parameters()) out[k] = v.detach().clone();
  return out;
}

// Metrics lines without the wall-clock fields.
std::vector<nlohmann::json> deterministic_metrics(const std::string& path) {
  auto lines = io::read_jsonl_file(path);
  for (auto& l : lines) {
    l.erase("tokens_per_s");
    l.erase("elapsed_s");
  }
  return lines;
}
}  // namespace

TEST(TrainResume, KilledAndResumedRunIsBitIdentical) {
  const auto data = load_llava_conversations(test::data_path("train/conversations.json"), test::data_path("llava-tiny-s0"));
  const auto trainable = name_prefix_predicate({"multi_modal_projector.", "language_model."});
  const std::string model_dir = test::data_path("llava-tiny-s0");

  // Uninterrupted.
  const std::string dir_a = test::scratch_dir("train_resume_a");
  auto model_a = models::load_model(model_dir);
  const auto initial = trained_weights(*model_a);
  const auto res_a = train_causal_lm(*model_a, data, trainable, resume_config(), dir_a);
  EXPECT_EQ(res_a.steps_done, 7);
  EXPECT_FALSE(res_a.resumed_from.has_value());

  // Killed after step 5: the last checkpoint is step 4, and step 5's metrics line is on disk.
  const std::string dir_b = test::scratch_dir("train_resume_b");
  {
    auto model_b = models::load_model(model_dir);
    auto cfg = resume_config();
    cfg.stop_after_steps = 5;
    cfg.save_on_stop = false;
    const auto part = train_causal_lm(*model_b, data, trainable, cfg, dir_b);
    EXPECT_EQ(part.steps_done, 5);
    EXPECT_EQ(io::read_jsonl_file(dir_b + "/metrics.jsonl").size(), 5u);
  }
  EXPECT_EQ(*latest_checkpoint(dir_b + "/checkpoints"), dir_b + "/checkpoints/ckpt-00000004");
  // Fresh process state: new model from disk, new optimizer/sampler inside, scrambled torch RNG.
  torch::manual_seed(987654321);
  auto model_c = models::load_model(model_dir);
  auto cfg = resume_config();
  cfg.resume = true;
  const auto res_c = train_causal_lm(*model_c, data, trainable, cfg, dir_b);
  ASSERT_TRUE(res_c.resumed_from.has_value());
  EXPECT_EQ(*res_c.resumed_from, 4);
  EXPECT_EQ(res_c.steps_done, 7);

  const auto wa = trained_weights(*model_a), wc = trained_weights(*model_c);
  int moved = 0;
  for (const auto& [k, v] : wa) {
    EXPECT_TRUE(torch::equal(v, wc.at(k))) << k;
    if (!torch::equal(v, initial.at(k))) ++moved;
    if (k.rfind("vision_tower.", 0) == 0) EXPECT_TRUE(torch::equal(v, initial.at(k))) << k << " is frozen";
  }
  EXPECT_GT(moved, 20);  // projector + LM weights trained
  EXPECT_EQ(deterministic_metrics(dir_a + "/metrics.jsonl"), deterministic_metrics(dir_b + "/metrics.jsonl"));
  // The final checkpoints are byte-identical, optimizer moments included.
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    EXPECT_EQ(io::read_file(dir_a + "/checkpoints/ckpt-00000007/" + f), io::read_file(dir_b + "/checkpoints/ckpt-00000007/" + f)) << f;
  }
  // Training did something: the loss went down from the first step.
  const auto lines = io::read_jsonl_file(dir_a + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 7u);
  EXPECT_LT(lines.back()["loss"].get<double>(), lines.front()["loss"].get<double>());
  EXPECT_EQ(lines.front()["lr"].get<double>(), 0.0);  // HF warm-up: the first update at lr 0
}

TEST(TrainResume, RefusesToContinueADifferentRun) {
  const auto data = load_llava_conversations(test::data_path("train/conversations.json"), test::data_path("llava-tiny-s0"));
  const auto trainable = name_prefix_predicate({"multi_modal_projector."});
  const std::string dir = test::scratch_dir("train_resume_mismatch");
  auto model = models::load_model(test::data_path("llava-tiny-s0"));
  auto cfg = resume_config();
  cfg.max_steps = 2;
  train_causal_lm(*model, data, trainable, cfg, dir);
  cfg.resume = true;
  cfg.seed = 124;
  EXPECT_NE(test::error_of([&] { train_causal_lm(*model, data, trainable, cfg, dir); }).find("--seed"), std::string::npos);
  cfg.seed = 123;
  cfg.max_steps = 3;
  EXPECT_NE(test::error_of([&] { train_causal_lm(*model, data, trainable, cfg, dir); }).find("not a continuation"),
            std::string::npos);
}

// The frozen-vision cache (encode each image once per run) changes where the tower runs, not what
// is learned: a run with it matches a run that encodes every image on every step, to float
// rounding (batched vs one-at-a-time tower calls round differently).
TEST(TrainVisionCache, CachedRunMatchesPerStepEncoding) {
  const auto data = load_llava_conversations(test::data_path("train/conversations.json"), test::data_path("llava-tiny-s0"));
  const auto trainable = name_prefix_predicate({"multi_modal_projector.", "language_model."});
  const std::string model_dir = test::data_path("llava-tiny-s0");
  auto cfg = resume_config();
  cfg.max_steps = 4;

  auto cached = models::load_model(model_dir);
  {
    const auto px = cached->prepare_image(image::decode_image_file(data.front().images.at(0)));
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(cached->encode_images({px}), cached->project_vision_features(cached->vision_features({px}))));
  }
  const std::string dir_on = test::scratch_dir("train_cache_on"), dir_off = test::scratch_dir("train_cache_off");
  train_causal_lm(*cached, data, trainable, cfg, dir_on);
  auto plain = models::load_model(model_dir);
  cfg.cache_frozen_vision = false;
  train_causal_lm(*plain, data, trainable, cfg, dir_off);

  const auto wa = trained_weights(*cached), wb = trained_weights(*plain);
  for (const auto& [k, v] : wa) EXPECT_TRUE(torch::allclose(v, wb.at(k), 1e-4, 1e-5)) << k;
  const auto la = io::read_jsonl_file(dir_on + "/metrics.jsonl");
  const auto lb = io::read_jsonl_file(dir_off + "/metrics.jsonl");
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>(), 1e-5);
}
