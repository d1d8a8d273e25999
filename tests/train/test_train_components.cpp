// Optimizer, schedule, clipping, sampler, RNG helpers, loss and metrics of src/train.
#include <gtest/gtest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "io/json_io.h"
#include "test_paths.h"
#include "test_util.h"
#include "train/grad.h"
#include "train/loss.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/params.h"
#include "train/rng.h"
#include "train/sampler.h"
#include "train/schedule.h"

using namespace p2dpo;
using namespace p2dpo::train;

// ---------------- schedule ----------------

TEST(TrainSchedule, MatchesHfCosineWithWarmup) {
  CosineSchedule s;
  s.peak_lr = 1e-3;
  s.warmup_steps = 10;
  s.total_steps = 100;
  EXPECT_EQ(s.lr_at(0), 0.0);  // HF: the first update runs at lr 0 when there is a warm-up
  EXPECT_DOUBLE_EQ(s.lr_at(5), 5e-4);
  EXPECT_DOUBLE_EQ(s.lr_at(10), 1e-3);
  // Values from Python: 1e-3 * 0.5 * (1 + cos(pi * 0.5 * 2 * (step - 10) / 90)).
  EXPECT_DOUBLE_EQ(s.lr_at(32), 0.0008596699001693256);
  EXPECT_DOUBLE_EQ(s.lr_at(77), 0.00015267081477050133);
  EXPECT_NEAR(s.lr_at(55), 5e-4, 1e-18);
  EXPECT_NEAR(s.lr_at(100), 0.0, 1e-18);
  EXPECT_GE(s.lr_at(150), 0.0);  // past the end: clamped at 0, like HF's max(0, ...)
}

TEST(TrainSchedule, MinLrRatioMatchesHfCosineWithMinLr) {
  CosineSchedule s;
  s.peak_lr = 1e-3;
  s.warmup_steps = 10;
  s.total_steps = 100;
  s.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(s.lr_at(32), 0.000873702910152393);
  EXPECT_DOUBLE_EQ(s.lr_at(77), 0.00023740373329345118);
  EXPECT_NEAR(s.lr_at(100), 1e-4, 1e-18);
  EXPECT_DOUBLE_EQ(s.lr_at(5), 5e-4);  // warm-up is unaffected
}

TEST(TrainSchedule, NoWarmupAndWarmupRatio) {
  CosineSchedule s;
  s.peak_lr = 2.0;
  s.total_steps = 4;
  EXPECT_DOUBLE_EQ(s.lr_at(0), 2.0);
  EXPECT_NEAR(s.lr_at(2), 1.0, 1e-15);
  EXPECT_EQ(warmup_steps_from_ratio(0.03, 1000), 30);
  EXPECT_EQ(warmup_steps_from_ratio(0.03, 10), 1);  // ceil, as HF
  EXPECT_EQ(warmup_steps_from_ratio(0.0, 10), 0);
}

// ---------------- AdamW ----------------

TEST(TrainAdamW, OneStepMatchesHandComputation) {
  auto p = torch::tensor({1.0, -2.0}, torch::kFloat64).requires_grad_(true);
  p.mutable_grad() = torch::tensor({0.5, 0.1}, torch::kFloat64);
  AdamWConfig c;
  c.weight_decay = 0.01;
  AdamW opt({{"layer.weight", p}}, c);
  opt.step(0.1);
  // p *= 1 - lr*wd; m = 0.1 g; v = 0.001 g^2; m_hat = g; sqrt(v_hat) = |g|; p -= lr * g / (|g| + eps).
  const double p0 = 1.0 * (1 - 0.1 * 0.01) - 0.1 * 0.5 / (0.5 + 1e-8);
  const double p1 = -2.0 * (1 - 0.1 * 0.01) - 0.1 * 0.1 / (0.1 + 1e-8);
  EXPECT_NEAR(p[0].item<double>(), p0, 1e-12);
  EXPECT_NEAR(p[1].item<double>(), p1, 1e-12);
  auto st = opt.state_tensors();
  EXPECT_NEAR(st.at("exp_avg.layer.weight")[0].item<double>(), 0.05, 1e-15);
  EXPECT_NEAR(st.at("exp_avg_sq.layer.weight")[1].item<double>(), 0.001 * 0.01, 1e-15);
  EXPECT_EQ(st.at("step.layer.weight").item<int64_t>(), 1);
}

TEST(TrainAdamW, NoDecayRuleByName) {
  EXPECT_TRUE(is_no_decay_parameter("language_model.model.layers.0.input_layernorm.weight"));
  EXPECT_TRUE(is_no_decay_parameter("language_model.model.norm.weight"));
  EXPECT_TRUE(is_no_decay_parameter("multi_modal_projector.linear_1.bias"));
  EXPECT_TRUE(is_no_decay_parameter("vision_tower.vision_model.pre_layrnorm.weight"));
  EXPECT_TRUE(is_no_decay_parameter("vision_tower.vision_model.encoder.layers.0.layer_norm1.weight"));
  EXPECT_FALSE(is_no_decay_parameter("language_model.model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(is_no_decay_parameter("language_model.model.embed_tokens.weight"));
  EXPECT_FALSE(is_no_decay_parameter("multi_modal_projector.linear_1.weight"));
}

// Bit-identical to libtorch's own AdamW (two groups: decayed weights, undecayed norm/bias).
TEST(TrainAdamW, BitIdenticalToTorchOptimAdamW) {
  torch::manual_seed(3);
  const std::map<std::string, torch::Tensor> init = {
      {"a.weight", torch::randn({4, 3})}, {"a.bias", torch::randn({4})}, {"n.norm.weight", torch::randn({3})}};
  std::map<std::string, torch::Tensor> ours, theirs;
  for (const auto& [k, v] : init) {
    ours[k] = v.clone().requires_grad_(true);
    theirs[k] = v.clone().requires_grad_(true);
  }
  AdamWConfig c;
  c.beta1 = 0.9;
  c.beta2 = 0.95;
  c.eps = 1e-6;
  c.weight_decay = 0.1;
  AdamW opt(ours, c);
  EXPECT_TRUE(opt.decays("a.weight"));
  EXPECT_FALSE(opt.decays("a.bias"));
  EXPECT_FALSE(opt.decays("n.norm.weight"));
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(1.0).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(wd));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{theirs["a.weight"]}, options(0.1));
  groups.emplace_back(std::vector<torch::Tensor>{theirs["a.bias"], theirs["n.norm.weight"]}, options(0.0));
  torch::optim::AdamW reference(groups, torch::optim::AdamWOptions(1.0));
  const std::vector<double> lrs = {0.01, 0.02, 0.005, 0.03, 0.0};
  for (double lr : lrs) {
    for (const auto& [k, v] : init) {
      const auto g = torch::randn(v.sizes());
      ours[k].mutable_grad() = g.clone();
      theirs[k].mutable_grad() = g.clone();
    }
    opt.step(lr);
    for (auto& group : reference.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    reference.step();
  }
  for (const auto& [k, v] : init) {
    EXPECT_TRUE(torch::equal(ours[k], theirs[k])) << k;
    EXPECT_FALSE(torch::equal(ours[k], v)) << k << " did not move";
  }
}

TEST(TrainAdamW, SkipsParamsWithoutGradAndDedupesAliases) {
  auto w = torch::ones({2}).requires_grad_(true);
  auto u = torch::ones({2}).requires_grad_(true);
  AdamW opt({{"embed.weight", w}, {"head.weight", w}, {"u.weight", u}}, AdamWConfig{});
  EXPECT_EQ(opt.names(), (std::vector<std::string>{"embed.weight", "u.weight"}));
  w.mutable_grad() = torch::ones({2});
  opt.step(0.1);
  EXPECT_LT(w[0].item<float>(), 1.0f);
  EXPECT_EQ(u[0].item<float>(), 1.0f);
  auto st = opt.state_tensors();
  EXPECT_TRUE(st.count("step.embed.weight"));
  EXPECT_FALSE(st.count("step.u.weight"));
  opt.zero_grad();
  EXPECT_FALSE(w.grad().defined());
}

TEST(TrainAdamW, LoadStateRejectsMismatches) {
  auto w = torch::ones({2}).requires_grad_(true);
  AdamW opt({{"w.weight", w}}, AdamWConfig{});
  auto msg = test::error_of([&] { opt.load_state_tensors({{"exp_avg.other", torch::zeros({2})}}, "opt.safetensors"); });
  EXPECT_NE(msg.find("'exp_avg.other' names no trainable parameter"), std::string::npos) << msg;
  msg = test::error_of([&] { opt.load_state_tensors({{"exp_avg.w.weight", torch::zeros({2})}}, "opt.safetensors"); });
  EXPECT_NE(msg.find("incomplete"), std::string::npos) << msg;
  msg = test::error_of([&] {
    opt.load_state_tensors({{"exp_avg.w.weight", torch::zeros({3})},
                            {"exp_avg_sq.w.weight", torch::zeros({3})},
                            {"step.w.weight", torch::tensor(int64_t{1})}},
                           "opt.safetensors");
  });
  EXPECT_NE(msg.find("has shape"), std::string::npos) << msg;
}

// ---------------- clipping, accumulation plan ----------------

TEST(TrainGrad, ClipByGlobalNormMatchesTorch) {
  auto a = torch::zeros({2}).requires_grad_(true);
  auto b = torch::zeros({3}).requires_grad_(true);
  a.mutable_grad() = torch::tensor({3.0f, 4.0f});
  b.mutable_grad() = torch::tensor({0.0f, 0.0f, 12.0f});
  const std::map<std::string, torch::Tensor> params = {{"a", a}, {"b", b}};
  EXPECT_NEAR(grad_norm(params), 13.0, 1e-6);
  // Within the limit: untouched.
  EXPECT_NEAR(clip_grad_norm(params, 20.0), 13.0, 1e-6);
  EXPECT_EQ(a.grad()[1].item<float>(), 4.0f);
  // Over it: scaled by max / (norm + 1e-6), as torch.nn.utils.clip_grad_norm_.
  auto ra = a.grad().clone(), rb = b.grad().clone();
  const double norm = clip_grad_norm(params, 6.5);
  EXPECT_NEAR(norm, 13.0, 1e-6);
  auto x = torch::zeros({2}).requires_grad_(true), y = torch::zeros({3}).requires_grad_(true);
  x.mutable_grad() = ra;
  y.mutable_grad() = rb;
  const double ref = torch::nn::utils::clip_grad_norm_(std::vector<torch::Tensor>{x, y}, 6.5);
  EXPECT_NEAR(norm, ref, 1e-6);
  EXPECT_TRUE(torch::allclose(a.grad(), x.grad(), 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(b.grad(), y.grad(), 1e-6, 1e-7));
  EXPECT_NEAR(grad_norm(params), 6.5, 1e-5);
}

TEST(TrainGrad, AccumulationPlanAndSplits) {
  const auto plan = AccumulationPlan::for_effective_batch(32, 4, 2, "--batch");
  EXPECT_EQ(plan.accumulation_steps, 4);
  EXPECT_EQ(plan.effective_batch(), 32);
  auto msg = test::error_of([] { AccumulationPlan::for_effective_batch(30, 4, 1, "--batch"); });
  EXPECT_NE(msg.find("--batch: effective batch 30"), std::string::npos) << msg;
  const auto parts = split_micro_batches({5, 6, 7, 8, 9}, 2);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0], (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(parts[2], (std::vector<int64_t>{9}));
  EXPECT_NEAR(scale_for_accumulation(torch::tensor(6.0), 4).item<double>(), 1.5, 1e-12);
  EXPECT_EQ(scale_for_accumulation(torch::tensor(6.0), 0).item<double>(), 0.0);
}

TEST(TrainParams, SelectTrainableSetsRequiresGrad) {
  auto a = torch::zeros({2}), b = torch::zeros({2}), tied = torch::zeros({2});
  const std::map<std::string, torch::Tensor> all = {
      {"multi_modal_projector.linear_1.weight", a}, {"vision_tower.x.weight", b},
      {"language_model.model.embed_tokens.weight", tied}, {"language_model.lm_head.weight", tied}};
  const auto sel = select_trainable(all, name_prefix_predicate({"multi_modal_projector.", "language_model.model."}));
  EXPECT_EQ(sel.size(), 2u);
  EXPECT_TRUE(a.requires_grad());
  EXPECT_FALSE(b.requires_grad());
  EXPECT_TRUE(tied.requires_grad());  // trainable under one of its names
  EXPECT_EQ(count_elements(all), 6);
}

// ---------------- loss ----------------

TEST(TrainLoss, MaskedTokenCrossEntropyMatchesHandComputation) {
  // B=1, L=3, V=2. Position 0 predicts labels[1], position 1 predicts labels[2].
  auto logits = torch::tensor({0.0f, 0.0f, 1.0f, 3.0f, 5.0f, 5.0f}).view({1, 3, 2});
  auto labels = torch::tensor(std::vector<int64_t>{-100, 1, 0}).view({1, 3});
  const auto s = masked_token_nll_sum(logits, labels);
  const double nll0 = std::log(2.0);                             // uniform over 2
  const double nll1 = -(1.0 - std::log(std::exp(1.0) + std::exp(3.0)));  // log p(0) at [1, 3]
  EXPECT_EQ(s.count, 2);
  EXPECT_NEAR(s.sum.item<double>(), nll0 + nll1, 1e-6);
  EXPECT_NEAR(masked_token_cross_entropy(logits, labels).item<double>(), (nll0 + nll1) / 2, 1e-6);
  EXPECT_NEAR(answer_log_prob_sums(logits, labels)[0].item<double>(), -(nll0 + nll1), 1e-6);
  // Masking position 1 leaves only the first term; nothing counted gives 0, not NaN.
  auto only_first = torch::tensor(std::vector<int64_t>{-100, 1, -100}).view({1, 3});
  EXPECT_NEAR(masked_token_cross_entropy(logits, only_first).item<double>(), nll0, 1e-6);
  auto none = torch::full({1, 3}, int64_t{-100});
  EXPECT_EQ(masked_token_cross_entropy(logits, none).item<double>(), 0.0);
  EXPECT_EQ(count_target_tokens(labels), 2);
}

// ---------------- sampler and RNG ----------------

TEST(TrainSampler, DeterministicPermutationsPerEpoch) {
  EpochSampler a(10, 7), b(10, 7), c(10, 8);
  std::vector<int64_t> ea, eb, ec;
  for (int i = 0; i < 4; ++i) {
    auto x = a.next_batch(3), y = b.next_batch(3), z = c.next_batch(3);
    ea.insert(ea.end(), x.begin(), x.end());
    eb.insert(eb.end(), y.begin(), y.end());
    ec.insert(ec.end(), z.begin(), z.end());
  }
  EXPECT_EQ(ea, eb);
  EXPECT_NE(ea, ec);
  ASSERT_EQ(ea.size(), 10u);  // 3 + 3 + 3 + 1: batches stop at the epoch's end
  EXPECT_EQ(std::set<int64_t>(ea.begin(), ea.end()).size(), 10u);
  EXPECT_EQ(a.position(), (SamplerPosition{0, 10}));
  const auto next = a.next_batch(3);
  EXPECT_EQ(a.position(), (SamplerPosition{1, 3}));
  const auto epoch1 = a.epoch_order(1);
  EXPECT_NE(a.epoch_order(0), epoch1);
  EXPECT_EQ(std::vector<int64_t>(epoch1.begin(), epoch1.begin() + 3), next);
  // Golden order, computed by an independent Python model of mt19937_64 + splitmix64 + rejection:
  // the order is the same on every machine and standard library.
  EXPECT_EQ(EpochSampler(10, 0).epoch_order(0), (std::vector<int64_t>{6, 1, 2, 4, 7, 5, 3, 0, 9, 8}));
}

TEST(TrainSampler, ResumeFromPositionContinuesIdentically) {
  EpochSampler a(7, 1);
  for (int i = 0; i < 5; ++i) a.next_batch(2);  // crosses into epoch 1
  const SamplerPosition saved = a.position();
  EpochSampler b(7, 1);
  b.set_position(saved);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a.next_batch(2), b.next_batch(2));
  EpochSampler d(7, 1, /*shuffle=*/true, /*drop_last=*/true);
  EXPECT_EQ(d.batches_per_epoch(2), 3);
  EXPECT_EQ(d.next_batch(2).size(), 2u);
  d.next_batch(2);
  d.next_batch(2);
  EXPECT_EQ(d.next_batch(2).size(), 2u);  // the leftover single example was dropped
  EXPECT_EQ(d.position().epoch, 1);
  EXPECT_EQ(shard_batch({10, 11, 12, 13, 14}, 1, 2), (std::vector<int64_t>{11, 13}));
}

TEST(TrainRng, PortableDrawsAndStateRoundTrip) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_LT(uniform_below(rng, 7), 7u);
    const double u = uniform_unit(rng);
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
  const std::string s = rng_state_string(rng);
  auto copy = rng_from_state_string(s, "state.json");
  EXPECT_EQ(copy(), rng());
  EXPECT_NE(test::error_of([] { rng_from_state_string("nonsense", "state.json"); }).find("state.json"), std::string::npos);
  // The 10000th output of a default-seeded mt19937_64 is fixed by the C++ standard.
  std::mt19937_64 std_check;
  std_check.discard(9999);
  EXPECT_EQ(std_check(), 9981545732273789042ULL);

  torch::manual_seed(5);
  const std::string torch_state = torch_cpu_rng_state();
  const auto first = torch::rand({4});
  set_torch_cpu_rng_state(torch_state, "state.json");
  EXPECT_TRUE(torch::equal(torch::rand({4}), first));
  EXPECT_EQ(from_hex(to_hex(torch_state), "x"), torch_state);
  EXPECT_NE(test::error_of([] { set_torch_cpu_rng_state("abc", "state.json"); }).find("bytes"), std::string::npos);
}

// ---------------- metrics ----------------

TEST(TrainMetrics, ResumeDropsLinesAfterTheCheckpoint) {
  const std::string dir = test::scratch_dir("train_metrics");
  const std::string path = dir + "/metrics.jsonl";
  {
    MetricsLogger log(path, std::nullopt);
    for (int s = 1; s <= 5; ++s) log.log({{"step", s}, {"loss", 1.0 / s}});
  }
  {
    std::ofstream torn(path, std::ios::app);
    torn << "{\"step\": 6, \"lo";  // a crash mid-line
  }
  {
    MetricsLogger log(path, int64_t{3});
    log.log({{"step", 4}, {"loss", 0.5}});
  }
  auto lines = io::read_jsonl_file(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[2]["step"], 3);
  EXPECT_EQ(lines[3]["step"], 4);
  EXPECT_EQ(lines[3]["loss"], 0.5);
  {
    MetricsLogger fresh(path, std::nullopt);  // a fresh run starts an empty file
  }
  EXPECT_TRUE(io::read_jsonl_file(path).empty());
  EXPECT_EQ(ProgressLine::format_duration(578), "9m38s");
  EXPECT_EQ(ProgressLine::format_duration(7500), "2h05m");
  EXPECT_EQ(ProgressLine::format_duration(42), "42s");
}
