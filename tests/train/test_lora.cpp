// LoRA adapters: attach/init, PEFT-layout save and load, enable/disable, merge (in memory and to a
// full checkpoint), load errors, and a finite-difference check of the LoRA gradient.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <regex>

#include "image/decode.h"
#include "infer/scoring.h"
#include "io/atomic_file.h"
#include "io/json_io.h"
#include "io/safetensors.h"
#include "models/layers.h"
#include "models/load.h"
#include "models/weights.h"
#include "test_paths.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/lora.h"

using namespace p2dpo;
using train::LoraAdapter;
using train::LoraConfig;
namespace fs = std::filesystem;

namespace {

const char* kFixture = "llava-tiny-s0";

std::unique_ptr<models::VisionLanguageModel> tiny(const std::string& dir = test::data_path(kFixture)) {
  torch::set_num_threads(1);
  return models::load_model(dir);
}

struct Example {
  std::string image, prompt, answer;
};

Example example(int i) {
  auto j = io::read_json_file(test::data_path(std::string(kFixture) + "/examples.json"));
  return {j[i]["image"].get<std::string>(), j[i]["prompt"].get<std::string>(), j[i]["answer"].get<std::string>()};
}

std::vector<models::PreparedImage> images_of(models::VisionLanguageModel& m, const Example& ex) {
  return {m.prepare_image(image::decode_image_file(test::data_path(std::string(kFixture) + "/" + ex.image)))};
}

// Full logits over prompt + answer for example i (no autograd).
torch::Tensor logits_of(models::VisionLanguageModel& m, int i = 0) {
  torch::NoGradGuard no_grad;
  const auto ex = example(i);
  auto imgs = images_of(m, ex);
  auto [p, a] = m.tokenize_prompt_answer(ex.prompt, ex.answer, imgs);
  p.insert(p.end(), a.begin(), a.end());
  models::ForwardInput in;
  in.input_ids = torch::tensor(p, torch::kLong).view({1, -1});
  in.image_features = m.encode_images(imgs);
  return m.forward(in).logits.clone();
}

std::vector<float> logprobs_of(models::VisionLanguageModel& m, int i = 0) {
  const auto ex = example(i);
  return infer::score_text(m, images_of(m, ex), ex.prompt, ex.answer).logprobs;
}

// Summed answer log-prob with autograd (what a DPO term differentiates).
torch::Tensor logp_sum_with_grad(models::VisionLanguageModel& m, int i = 0) {
  const auto ex = example(i);
  auto imgs = images_of(m, ex);
  auto [p, a] = m.tokenize_prompt_answer(ex.prompt, ex.answer, imgs);
  const int64_t P = static_cast<int64_t>(p.size()), A = static_cast<int64_t>(a.size());
  p.insert(p.end(), a.begin(), a.end());
  auto ids = torch::tensor(p, torch::kLong).view({1, -1});
  models::ForwardInput in;
  in.input_ids = ids;
  in.image_features = m.encode_images(imgs).detach();
  auto logits = m.forward(in).logits.slice(1, P - 1, P + A - 1);
  return infer::token_logprobs(logits, ids.slice(1, P, P + A)).sum();
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

LoraConfig small_config(std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj"}) {
  LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.target_modules = std::move(targets);
  return c;
}

// B is zero after attach; give it values so the adapter changes the model.
void randomize_b(const LoraAdapter& a, uint64_t seed, double std = 0.05) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  for (const auto& [key, t] : a.parameters()) {
    if (key.find(".lora_B.") != std::string::npos) t.copy_(torch::randn(t.sizes(), gen, torch::kFloat32) * std);
  }
}

std::vector<std::string> expected_keys(int layers, const std::vector<std::string>& projs) {
  std::vector<std::string> keys;
  for (int i = 0; i < layers; ++i) {
    for (const auto& p : projs) {
      const bool attn = p == "q_proj" || p == "k_proj" || p == "v_proj" || p == "o_proj";
      const std::string m = "language_model.model.layers." + std::to_string(i) + (attn ? ".self_attn." : ".mlp.") + p;
      keys.push_back("base_model.model." + m + ".lora_A.weight");
      keys.push_back("base_model.model." + m + ".lora_B.weight");
    }
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

template <typename M>
std::vector<std::string> keys_of(const M& map) {
  std::vector<std::string> out;
  for (const auto& kv : map) out.push_back(kv.first);
  return out;
}

// A saved adapter in a fresh scratch dir, plus the logits it gives.
struct SavedAdapter {
  std::string dir;
  torch::Tensor logits;
  std::vector<float> logprobs;
};

SavedAdapter save_adapter(const std::string& scratch_name, const LoraConfig& cfg = small_config()) {
  auto m = tiny();
  auto a = LoraAdapter::attach(*m, cfg, 11);
  randomize_b(a, 5);
  SavedAdapter s{test::scratch_dir(scratch_name) + "/adapter", logits_of(*m), logprobs_of(*m)};
  a.save(s.dir, test::data_path(kFixture));
  return s;
}

void edit_config(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  auto j = io::read_json_file(dir + "/adapter_config.json");
  edit(j);
  io::write_json_atomic(dir + "/adapter_config.json", j);
}

void edit_weights(const std::string& dir, const std::function<void(std::map<std::string, torch::Tensor>&)>& edit) {
  auto t = train::read_tensor_file(dir + "/adapter_model.safetensors");
  edit(t);
  train::write_tensor_file(dir + "/adapter_model.safetensors", t, {{"format", "pt"}});
}

bool any_lora(models::VisionLanguageModel& m) {
  for (const auto& l : m.linear_layers())
    if (l.layer->lora) return true;
  return false;
}

}  // namespace

// ---- config ----

TEST(LoraConfigJson, DefaultsRoundTripAndAllLinear) {
  auto c = train::lora_config_from_json(nlohmann::json::object(), "cfg.json");
  EXPECT_EQ(c.r, 64);
  EXPECT_EQ(c.alpha, 64.0);
  EXPECT_EQ(c.dropout, 0.0);
  EXPECT_EQ(c.target_modules, (std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"}));
  LoraConfig d;
  d.r = 32;
  d.alpha = 16;
  d.dropout = 0.05;
  d.target_modules = {"v_proj", "down_proj"};
  auto back = train::lora_config_from_json(train::lora_config_to_json(d), "cfg.json");
  EXPECT_EQ(back.r, 32);
  EXPECT_EQ(back.alpha, 16.0);
  EXPECT_EQ(back.dropout, 0.05);
  EXPECT_EQ(back.target_modules, d.target_modules);
  auto all = train::lora_config_from_json({{"target_modules", "all-linear"}}, "cfg.json");
  EXPECT_EQ(all.target_modules, std::vector<std::string>{"all-linear"});
  EXPECT_EQ(train::expand_target_modules(all.target_modules), train::lora_linear_names());
}

TEST(LoraConfigJson, RejectsUnknownKeysAndBadValues) {
  auto err = [](const nlohmann::json& j) {
    return test::error_of([&] { train::lora_config_from_json(j, "cfg.json"); });
  };
  EXPECT_NE(err({{"rank", 8}}).find("cfg.json: unknown key 'lora.rank'"), std::string::npos);
  EXPECT_NE(err({{"r", 0}}).find("lora.r"), std::string::npos);
  EXPECT_NE(err({{"alpha", "big"}}).find("lora.alpha"), std::string::npos);
  EXPECT_NE(err({{"dropout", 1.0}}).find("lora.dropout"), std::string::npos);
  EXPECT_NE(err({{"target_modules", {"qkv"}}}).find("unknown module 'qkv'"), std::string::npos);
  EXPECT_NE(err({{"target_modules", {"q_proj", "q_proj"}}}).find("twice"), std::string::npos);
  EXPECT_NE(err({{"target_modules", {"all-linear", "q_proj"}}}).find("unknown module 'all-linear'"),
            std::string::npos);
}

TEST(LoraConfigJson, TargetRegexSelectsLanguageModelLayersInBothLayouts) {
  // std::regex_match is a full match, like PEFT's re.fullmatch.
  const std::regex attn(train::lora_target_regex({"q_proj", "k_proj", "v_proj", "o_proj"}));
  const std::regex all(train::lora_target_regex(train::lora_linear_names()));
  EXPECT_EQ(train::lora_target_regex({"q_proj", "v_proj"}), ".*language_model\\..*\\.(q_proj|v_proj)");
  for (const char* yes : {"language_model.model.layers.0.self_attn.q_proj", "model.language_model.layers.31.self_attn.o_proj"})
    EXPECT_TRUE(std::regex_match(yes, attn)) << yes;
  for (const char* no : {"vision_tower.vision_model.encoder.layers.0.self_attn.q_proj",
                         "model.vision_tower.vision_model.encoder.layers.0.self_attn.k_proj",
                         "multi_modal_projector.linear_1", "language_model.lm_head", "lm_head",
                         "language_model.model.layers.0.mlp.up_proj", "language_model.model.layers.0.self_attn",
                         "language_model.model.layers.0.self_attn.q_proj.lora_A"})
    EXPECT_FALSE(std::regex_match(no, attn)) << no;
  EXPECT_TRUE(std::regex_match("language_model.model.layers.1.mlp.down_proj", all));
  EXPECT_TRUE(std::regex_match("model.language_model.layers.1.mlp.gate_proj", all));
  EXPECT_FALSE(std::regex_match("language_model.lm_head", all));
  EXPECT_FALSE(std::regex_match("vision_tower.vision_model.encoder.layers.0.mlp.fc1", all));
}

// ---- attach ----

TEST(LoraAttach, DefaultTargetsLanguageModelAttentionOnly) {
  auto m = tiny();
  auto a = LoraAdapter::attach(*m, small_config(), 1);
  EXPECT_EQ(keys_of(a.parameters()), expected_keys(2, {"q_proj", "k_proj", "v_proj", "o_proj"}));
  EXPECT_EQ(a.modules().size(), 8u);
  EXPECT_EQ(a.modules()[0], "language_model.model.layers.0.self_attn.q_proj");
  for (const auto& l : m->linear_layers()) {
    const bool attn = l.name.find(".self_attn.") != std::string::npos;
    EXPECT_EQ(static_cast<bool>(l.layer->lora), attn && l.part == models::NamedLinear::Part::kLanguageModel) << l.name;
  }
}

TEST(LoraAttach, AllLinearTargetsSevenPerLayer) {
  auto m = tiny();
  auto a = LoraAdapter::attach(*m, small_config({"all-linear"}), 1);
  EXPECT_EQ(keys_of(a.parameters()), expected_keys(2, train::lora_linear_names()));
  for (const auto& l : m->linear_layers())
    EXPECT_EQ(static_cast<bool>(l.layer->lora), l.part == models::NamedLinear::Part::kLanguageModel) << l.name;
}

TEST(LoraAttach, ZeroBLeavesLogitsBitIdentical) {
  auto m = tiny();
  auto base = logits_of(*m);
  auto a = LoraAdapter::attach(*m, small_config({"all-linear"}), 3);
  EXPECT_TRUE(torch::equal(base, logits_of(*m)));
}

TEST(LoraAttach, InitialisationMatchesPeftAndIsSeeded) {
  auto m = tiny();
  auto a = LoraAdapter::attach(*m, small_config({"all-linear"}), 42);
  for (const auto& [key, t] : a.parameters()) {
    EXPECT_EQ(t.scalar_type(), torch::kFloat32) << key;
    EXPECT_FALSE(t.requires_grad()) << key;
    if (key.find(".lora_B.") != std::string::npos) {
      EXPECT_EQ(t.abs().max().item<float>(), 0.0f) << key;
      continue;
    }
    const double bound = 1.0 / std::sqrt(static_cast<double>(t.size(1)));
    const double mx = t.abs().max().item<double>();
    EXPECT_LE(mx, bound) << key;
    EXPECT_GT(mx, 0.9 * bound) << key;  // spans the range (256+ uniform draws)
    EXPECT_LT(std::abs(t.mean().item<double>()), 0.2 * bound) << key;
  }
  for (const auto& l : m->linear_layers()) {
    if (l.layer->lora) EXPECT_DOUBLE_EQ(l.layer->lora->scaling, 2.0);  // alpha 8 / r 4
  }
  // Same seed, same tensors; a layer's A does not depend on which other layers are targeted.
  auto m2 = tiny();
  auto b = LoraAdapter::attach(*m2, small_config({"q_proj"}), 42);
  const std::string q0 = "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight";
  EXPECT_TRUE(torch::equal(a.parameters().at(q0), b.parameters().at(q0)));
  auto m3 = tiny();
  auto c = LoraAdapter::attach(*m3, small_config({"q_proj"}), 43);
  EXPECT_FALSE(torch::equal(a.parameters().at(q0), c.parameters().at(q0)));
  // Different layers get different draws.
  const std::string q1 = "base_model.model.language_model.model.layers.1.self_attn.q_proj.lora_A.weight";
  EXPECT_FALSE(torch::equal(a.parameters().at(q0), a.parameters().at(q1)));
}

TEST(LoraAttach, ErrorsAndDetach) {
  auto m = tiny();
  auto a = LoraAdapter::attach(*m, small_config(), 1);
  EXPECT_NE(test::error_of([&] { LoraAdapter::attach(*m, small_config({"q_proj"}), 1); })
                .find("already has a LoRA adapter"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { LoraAdapter::attach(*m, small_config({"foo_proj"}), 1); }).find("foo_proj"),
            std::string::npos);
  a.detach();
  EXPECT_FALSE(a.attached());
  EXPECT_FALSE(any_lora(*m));
  auto b = LoraAdapter::attach(*m, small_config({"q_proj"}), 1);
  EXPECT_EQ(b.parameters().size(), 4u);
}

// ---- enable / disable ----

TEST(LoraEnable, DisabledGivesBaseLogitsExactly) {
  auto m = tiny();
  auto base = logits_of(*m);
  auto a = LoraAdapter::attach(*m, small_config({"all-linear"}), 2);
  randomize_b(a, 9);
  auto on = logits_of(*m);
  EXPECT_GT(max_abs_diff(on, base), 1e-3);
  a.set_enabled(false);
  EXPECT_FALSE(a.enabled());
  EXPECT_TRUE(torch::equal(logits_of(*m), base));
  a.set_enabled(true);
  EXPECT_TRUE(torch::equal(logits_of(*m), on));
}

// ---- gradients ----

TEST(LoraGrad, OnlyAdapterTensorsReceiveGradients) {
  auto m = tiny();
  auto a = LoraAdapter::attach(*m, small_config(), 4);
  for (const auto& [k, t] : a.parameters()) t.set_requires_grad(true);
  logp_sum_with_grad(*m).backward();
  for (const auto& [k, t] : a.parameters()) {
    ASSERT_TRUE(t.grad().defined()) << k;
    // B = 0: dL/dA = B^T (...) = 0 exactly, dL/dB = (dL/dy)(A x)^T * s != 0.
    if (k.find(".lora_A.") != std::string::npos) EXPECT_EQ(t.grad().abs().max().item<float>(), 0.0f) << k;
    else EXPECT_GT(t.grad().abs().max().item<float>(), 0.0f) << k;
  }
  for (const auto& [name, t] : m->named_parameters()) EXPECT_FALSE(t.grad().defined()) << name;
}

// d(sum log p)/dA and dB of a two-layer LoRA network in float64 against central differences.
TEST(LoraGrad, FiniteDifferencesInDoublePrecision) {
  auto gen = at::detail::createCPUGenerator(123);
  const auto f64 = torch::kFloat64;
  models::Linear l1, l2;
  l1.weight = torch::randn({6, 5}, gen, f64);
  l1.bias = torch::randn({6}, gen, f64);
  l2.weight = torch::randn({7, 6}, gen, f64);
  l1.lora = std::make_shared<models::LoraWeights>();
  l1.lora->A = torch::randn({3, 5}, gen, f64) * 0.5;
  l1.lora->B = torch::randn({6, 3}, gen, f64) * 0.5;
  l1.lora->scaling = 2.0;
  l2.lora = std::make_shared<models::LoraWeights>();
  l2.lora->A = torch::randn({2, 6}, gen, f64) * 0.5;
  l2.lora->B = torch::randn({7, 2}, gen, f64) * 0.5;
  l2.lora->scaling = 0.5;
  const auto x = torch::randn({2, 4, 5}, gen, f64);
  const auto targets = torch::randint(0, 7, {2, 4}, gen, torch::kLong);
  auto f = [&] {
    auto logits = l2(torch::silu(l1(x)));
    return torch::log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).sum();
  };
  std::vector<std::pair<std::string, torch::Tensor>> params = {
      {"A1", l1.lora->A}, {"B1", l1.lora->B}, {"A2", l2.lora->A}, {"B2", l2.lora->B}};
  for (auto& [n, t] : params) t.set_requires_grad(true);
  f().backward();
  const double h = 1e-5;
  int checked = 0;
  for (auto& [n, t] : params) {
    // The three entries with the largest gradients, so a relative error is meaningful.
    const auto top = std::get<1>(t.grad().abs().view({-1}).topk(3));
    for (int64_t j = 0; j < 3; ++j) {
      const int64_t i = top[j].item<int64_t>();
      const double analytic = t.grad().view({-1})[i].item<double>();
      double plus, minus;
      {
        torch::NoGradGuard no_grad;
        auto e = t.view({-1})[i];
        const double orig = e.item<double>();
        e.fill_(orig + h);
        plus = f().item<double>();
        e.fill_(orig - h);
        minus = f().item<double>();
        e.fill_(orig);
      }
      const double numeric = (plus - minus) / (2 * h);
      ASSERT_GT(std::abs(analytic), 1e-2) << n << "[" << i << "] too small to compare relatively";
      EXPECT_LT(std::abs(numeric - analytic) / std::abs(analytic), 1e-6)
          << n << "[" << i << "] numeric " << numeric << " analytic " << analytic;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 12);
}

// ---- save / load ----

TEST(LoraSave, RoundTripGivesIdenticalLogProbs) {
  auto m = tiny();
  auto a = LoraAdapter::attach(*m, small_config(), 11);
  randomize_b(a, 5);
  const auto logits = logits_of(*m);
  const auto lp = logprobs_of(*m, 1);
  const std::string dir = test::scratch_dir("lora-roundtrip") + "/adapter";
  a.save(dir, "/models/llava-tiny");

  auto m2 = tiny();
  auto b = LoraAdapter::load(*m2, dir);
  EXPECT_TRUE(torch::equal(logits_of(*m2), logits));
  EXPECT_EQ(logprobs_of(*m2, 1), lp);
  EXPECT_EQ(b.modules(), a.modules());
  EXPECT_EQ(b.config().r, 4);
  EXPECT_EQ(b.config().alpha, 8.0);
  EXPECT_EQ(b.config().target_modules, a.config().target_modules);
  for (const auto& [k, t] : a.parameters()) EXPECT_TRUE(torch::equal(t, b.parameters().at(k))) << k;
}

TEST(LoraSave, PeftKeyNamesAndTensorLayout) {
  auto s = save_adapter("lora-keys");
  auto file = io::SafetensorsFile::open(s.dir + "/adapter_model.safetensors");
  EXPECT_EQ(file->names(), expected_keys(2, {"q_proj", "k_proj", "v_proj", "o_proj"}));
  EXPECT_EQ(file->metadata().at("format"), "pt");
  for (const auto& name : file->names()) {
    const auto v = file->tensor(name);
    EXPECT_EQ(v.dtype, io::DType::F32) << name;
    const bool is_a = name.find(".lora_A.") != std::string::npos;
    EXPECT_EQ(v.shape, (is_a ? std::vector<int64_t>{4, 64} : std::vector<int64_t>{64, 4})) << name;
  }
}

TEST(LoraSave, AdapterConfigMatchesPeftFieldByField) {
  auto s = save_adapter("lora-config");
  const auto j = io::read_json_file(s.dir + "/adapter_config.json");
  const nlohmann::json expected = {
      {"alpha_pattern", nlohmann::json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", test::data_path(kFixture)},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layer_replication", nullptr},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"loftq_config", nlohmann::json::object()},
      {"lora_alpha", 8},
      {"lora_dropout", 0.0},
      {"megatron_config", nullptr},
      {"megatron_core", "megatron.core"},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", 4},
      {"rank_pattern", nlohmann::json::object()},
      {"revision", nullptr},
      {"target_modules", ".*language_model\\..*\\.(q_proj|k_proj|v_proj|o_proj)"},
      {"task_type", "CAUSAL_LM"},
      {"use_dora", false},
      {"use_rslora", false},
  };
  auto json_keys = [](const nlohmann::json& o) {
    std::vector<std::string> k;
    for (const auto& [key, v] : o.items()) k.push_back(key);
    return k;
  };
  EXPECT_EQ(json_keys(j), json_keys(expected));
  for (const auto& [k, v] : expected.items()) {
    ASSERT_TRUE(j.contains(k)) << k;
    EXPECT_EQ(j[k], v) << k;
  }
  EXPECT_TRUE(j["lora_alpha"].is_number_integer());  // PEFT's lora_alpha is an int
  EXPECT_TRUE(j["r"].is_number_integer());
}

TEST(LoraLoad, AcceptsPlainListAndNewLayoutKeys) {
  auto s = save_adapter("lora-forms");
  edit_config(s.dir, [](nlohmann::json& j) { j["target_modules"] = {"q_proj", "k_proj", "v_proj", "o_proj"}; });
  {
    auto m = tiny();
    auto a = LoraAdapter::load(*m, s.dir);
    EXPECT_EQ(a.modules().size(), 8u);
    EXPECT_TRUE(torch::equal(logits_of(*m), s.logits));
  }
  // Keys as PEFT writes them under transformers >= 4.52 (model.language_model.layers...).
  edit_weights(s.dir, [](std::map<std::string, torch::Tensor>& t) {
    std::map<std::string, torch::Tensor> renamed;
    const std::string from = "base_model.model.language_model.model.", to = "base_model.model.model.language_model.";
    for (auto& [k, v] : t) renamed[to + k.substr(from.size())] = v;
    t = renamed;
  });
  auto m = tiny();
  auto a = LoraAdapter::load(*m, s.dir);
  EXPECT_TRUE(torch::equal(logits_of(*m), s.logits));
  EXPECT_EQ(a.parameters().begin()->first.rfind("base_model.model.language_model.model.", 0), 0u);
}

TEST(LoraLoad, PartialRegexRoundTripsExactly) {
  auto s = save_adapter("lora-partial");
  edit_config(s.dir, [](nlohmann::json& j) {
    j["target_modules"] = "language_model\\.model\\.layers\\.0\\.self_attn\\.(q_proj|v_proj)";
  });
  edit_weights(s.dir, [](std::map<std::string, torch::Tensor>& t) {
    for (auto it = t.begin(); it != t.end();) {
      const bool keep = it->first.find("layers.0.self_attn.q_proj") != std::string::npos ||
                        it->first.find("layers.0.self_attn.v_proj") != std::string::npos;
      it = keep ? std::next(it) : t.erase(it);
    }
  });
  auto m = tiny();
  auto a = LoraAdapter::load(*m, s.dir);
  EXPECT_EQ(a.modules(), (std::vector<std::string>{"language_model.model.layers.0.self_attn.q_proj",
                                                   "language_model.model.layers.0.self_attn.v_proj"}));
  // Re-saved, the config names exactly these two modules (not every layer's q/v).
  const std::string again = test::scratch_dir("lora-partial-again");
  a.save(again, "base");
  const auto target = io::read_json_file(again + "/adapter_config.json")["target_modules"].get<std::string>();
  const std::regex re(target);
  EXPECT_TRUE(std::regex_match("language_model.model.layers.0.self_attn.q_proj", re)) << target;
  EXPECT_TRUE(std::regex_match("model.language_model.layers.0.self_attn.v_proj", re)) << target;
  EXPECT_FALSE(std::regex_match("language_model.model.layers.1.self_attn.q_proj", re)) << target;
  auto m2 = tiny();
  EXPECT_EQ(LoraAdapter::load(*m2, again).modules(), a.modules());
  EXPECT_TRUE(torch::equal(logits_of(*m2), logits_of(*m)));
}

TEST(LoraLoad, ErrorsNameTheFileAndTheProblem) {
  auto s = save_adapter("lora-errors");
  const std::string cfg = s.dir + "/adapter_config.json", weights = s.dir + "/adapter_model.safetensors";
  const std::string pristine_cfg = io::read_file(cfg);
  auto pristine_weights = train::read_tensor_file(weights);
  auto restore = [&] {
    io::write_file_atomic(cfg, pristine_cfg);
    train::write_tensor_file(weights, pristine_weights, {{"format", "pt"}});
  };
  auto m = tiny();
  const auto base = logits_of(*m);
  auto load_error = [&] { return test::error_of([&] { LoraAdapter::load(*m, s.dir); }); };
  auto expect_error = [&](const std::string& file, const std::string& part) {
    const std::string e = load_error();
    EXPECT_EQ(e.rfind(file + ":", 0), 0u) << e;
    EXPECT_NE(e.find(part), std::string::npos) << e;
    EXPECT_FALSE(any_lora(*m)) << "a failed load must leave the model unchanged: " << e;
    restore();
  };

  EXPECT_NE(test::error_of([&] { LoraAdapter::load(*m, s.dir + "-absent"); }).find("not found"), std::string::npos);
  fs::remove(cfg);
  expect_error(cfg, "file not found");
  fs::remove(weights);
  expect_error(weights, "file not found");
  io::write_file_atomic(cfg, "{\"peft_type\": \"LORA\", ");
  expect_error(cfg, "malformed JSON");
  edit_config(s.dir, [](nlohmann::json& j) { j["peft_type"] = "PREFIX_TUNING"; });
  expect_error(cfg, "'peft_type'");
  edit_config(s.dir, [](nlohmann::json& j) { j["use_dora"] = true; });
  expect_error(cfg, "'use_dora'");
  edit_config(s.dir, [](nlohmann::json& j) { j["use_rslora"] = true; });
  expect_error(cfg, "'use_rslora'");
  edit_config(s.dir, [](nlohmann::json& j) { j["bias"] = "all"; });
  expect_error(cfg, "'bias'");
  edit_config(s.dir, [](nlohmann::json& j) { j["rank_pattern"] = {{"q_proj", 8}}; });
  expect_error(cfg, "'rank_pattern'");
  edit_config(s.dir, [](nlohmann::json& j) { j["modules_to_save"] = {"lm_head"}; });
  expect_error(cfg, "'modules_to_save'");
  edit_config(s.dir, [](nlohmann::json& j) { j["some_future_option"] = 3; });
  expect_error(cfg, "'some_future_option'");
  edit_config(s.dir, [](nlohmann::json& j) { j["target_modules"] = ".*q_proj"; });  // also the vision tower's
  expect_error(cfg, "also selects module 'vision_tower.vision_model.encoder.layers.0.self_attn.q_proj'");
  edit_config(s.dir, [](nlohmann::json& j) { j["target_modules"] = "all-linear"; });
  expect_error(cfg, "'target_modules'");
  edit_config(s.dir, [](nlohmann::json& j) { j["target_modules"] = {"gate_proj"}; });
  expect_error(weights, "unexpected tensor");
  edit_config(s.dir, [](nlohmann::json& j) { j["r"] = 8; });
  expect_error(weights, "shape [4, 64] does not fit the model, expected [8, 64]");
  edit_weights(s.dir, [](std::map<std::string, torch::Tensor>& t) {
    t.erase("base_model.model.language_model.model.layers.1.self_attn.v_proj.lora_B.weight");
  });
  expect_error(weights, "missing tensor 'base_model.model.language_model.model.layers.1.self_attn.v_proj.lora_B.weight'");
  edit_weights(s.dir, [](std::map<std::string, torch::Tensor>& t) {
    t["base_model.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] =
        torch::zeros({4, 32});
  });
  expect_error(weights, "unexpected tensor 'base_model.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight'");
  edit_weights(s.dir, [](std::map<std::string, torch::Tensor>& t) {
    t["base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight"] = torch::zeros({4, 63});
  });
  expect_error(weights, "tensor 'base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight': shape [4, 63]");

  EXPECT_TRUE(torch::equal(logits_of(*m), base));
  LoraAdapter::load(*m, s.dir);  // restored: loads
  EXPECT_TRUE(torch::equal(logits_of(*m), s.logits));
}

// ---- merge ----

TEST(LoraMerge, MergedModelMatchesAdapterModel) {
  auto m = tiny();
  const auto base = logits_of(*m);
  auto a = LoraAdapter::attach(*m, small_config({"all-linear"}), 21);
  randomize_b(a, 22);
  const auto with_adapter = logits_of(*m);
  a.merge_into_base();
  EXPECT_FALSE(a.attached());
  EXPECT_FALSE(any_lora(*m));
  const auto merged = logits_of(*m);
  EXPECT_LE(max_abs_diff(merged, with_adapter), 1e-5);
  EXPECT_GT(max_abs_diff(merged, base), 1e-3);
}

TEST(LoraMerge, CheckpointLoadsLikeTheBaseAndEqualsBasePlusAdapter) {
  auto s = save_adapter("lora-merge", small_config({"all-linear"}));
  const std::string out = test::scratch_dir("lora-merge-out") + "/merged";
  EXPECT_EQ(io::read_json_file(s.dir + "/adapter_config.json")["target_modules"],
            ".*language_model\\..*\\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)");
  EXPECT_EQ(train::merge_adapter_checkpoint(test::data_path(kFixture), s.dir, out), 14);

  auto merged = tiny(out);
  EXPECT_FALSE(any_lora(*merged));
  EXPECT_LE(max_abs_diff(logits_of(*merged), s.logits), 1e-5);
  EXPECT_LE(max_abs_diff(logits_of(*merged, 2), [&] {
              auto m = tiny();
              LoraAdapter::load(*m, s.dir);
              return logits_of(*m, 2);
            }()),
            1e-5);

  // Same files beside the weights, same key names and dtypes; untouched tensors byte for byte.
  for (const char* f : {"config.json", "tokenizer.model", "tokenizer_config.json", "preprocessor_config.json",
                        "special_tokens_map.json", "generation_config.json"})
    EXPECT_EQ(io::read_file(out + "/" + f), io::read_file(test::data_path(kFixture) + "/" + f)) << f;
  auto before = io::SafetensorsFile::open(test::data_path(kFixture) + "/model.safetensors");
  auto after = io::SafetensorsFile::open(out + "/model.safetensors");
  ASSERT_EQ(after->names(), before->names());
  int changed = 0;
  for (const auto& name : before->names()) {
    const auto b = before->tensor(name), a = after->tensor(name);
    EXPECT_EQ(a.dtype, b.dtype) << name;
    EXPECT_EQ(a.shape, b.shape) << name;
    const bool same = a.nbytes == b.nbytes && std::memcmp(a.data, b.data, a.nbytes) == 0;
    const bool adapted = name.find("language_model.model.layers.") != std::string::npos &&
                         (name.find("_proj.weight") != std::string::npos);
    EXPECT_EQ(same, !adapted) << name;
    changed += same ? 0 : 1;
  }
  EXPECT_EQ(changed, 14);
  EXPECT_NE(test::error_of([&] { train::merge_adapter_checkpoint(test::data_path(kFixture), s.dir, test::data_path(kFixture)); })
                .find("base model's directory"),
            std::string::npos);
}

// A sharded bf16 base in transformers >= 4.52's key layout: the merged file keeps those names and dtypes.
TEST(LoraMerge, KeepsTheBaseKeyLayoutAndDtype) {
  const std::string base = test::scratch_dir("lora-merge-bf16") + "/base";
  fs::create_directories(base);
  for (const auto& e : fs::directory_iterator(test::data_path(kFixture))) {
    const std::string n = e.path().filename().string();
    if (n != "model.safetensors" && n != "reference.safetensors") fs::copy_file(e.path(), base + "/" + n);
  }
  auto to_new = [](const std::string& k) {
    for (auto [from, to] : {std::pair<std::string, std::string>{"language_model.model.", "model.language_model."},
                            {"language_model.lm_head.", "lm_head."},
                            {"vision_tower.", "model.vision_tower."},
                            {"multi_modal_projector.", "model.multi_modal_projector."}})
      if (k.rfind(from, 0) == 0) return to + k.substr(from.size());
    return k;
  };
  std::map<std::string, torch::Tensor> renamed;
  for (auto& [k, v] : train::read_tensor_file(test::data_path(kFixture) + "/model.safetensors"))
    renamed[to_new(k)] = v.to(torch::kBFloat16);
  // Sharded, as large hub checkpoints are: two files and an index.
  std::map<std::string, torch::Tensor> shard[2];
  nlohmann::json weight_map = nlohmann::json::object();
  for (const auto& [k, v] : renamed) {
    const int i = k.find("vision_tower") != std::string::npos ? 0 : 1;
    shard[i][k] = v;
    weight_map[k] = "model-0000" + std::to_string(i + 1) + "-of-00002.safetensors";
  }
  for (int i = 0; i < 2; ++i)
    train::write_tensor_file(base + "/model-0000" + std::to_string(i + 1) + "-of-00002.safetensors", shard[i],
                             {{"format", "pt"}});
  io::write_json_atomic(base + "/model.safetensors.index.json", {{"metadata", nlohmann::json::object()},
                                                                 {"weight_map", weight_map}});

  auto s = save_adapter("lora-merge-bf16-adapter");
  const std::string out = test::scratch_dir("lora-merge-bf16-out");
  EXPECT_EQ(train::merge_adapter_checkpoint(base, s.dir, out), 8);
  EXPECT_FALSE(fs::exists(out + "/model.safetensors.index.json"));  // one file replaces the shards
  auto merged = train::read_tensor_file(out + "/model.safetensors");
  ASSERT_EQ(keys_of(merged), keys_of(renamed));
  for (const auto& [k, v] : merged) EXPECT_EQ(v.scalar_type(), torch::kBFloat16) << k;

  const std::string q = "model.language_model.layers.1.self_attn.q_proj.weight";
  auto adapter = train::read_tensor_file(s.dir + "/adapter_model.safetensors");
  const auto A = adapter.at("base_model.model.language_model.model.layers.1.self_attn.q_proj.lora_A.weight");
  const auto B = adapter.at("base_model.model.language_model.model.layers.1.self_attn.q_proj.lora_B.weight");
  const auto expected = (renamed.at(q).to(torch::kFloat32) + torch::matmul(B, A) * 2.0).to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(merged.at(q), expected));
  EXPECT_FALSE(torch::equal(merged.at(q), renamed.at(q)));
  EXPECT_TRUE(torch::equal(merged.at("model.language_model.layers.1.mlp.up_proj.weight"),
                           renamed.at("model.language_model.layers.1.mlp.up_proj.weight")));
  auto m = tiny(out);  // loads like the base
  EXPECT_EQ(logits_of(*m).size(-1), 400);
}
