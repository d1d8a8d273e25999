// The P2-DPO trainer end to end on the shipped world model and 15 of its own pairs
// (tests/data/train/world-pairs): learning, resume, reference modes, data parallel, configs, errors.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "cli_run.h"
#include "io/json_io.h"
#include "models/fixture_util.h"
#include "models/load.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/p2dpo_config.h"
#include "train/p2dpo_trainer.h"
#include "train/grad.h"
#include "train/pair_data.h"
#include "train/rng.h"
#include "train/sampler.h"
#include "test_paths.h"
#include "test_util.h"

namespace p2dpo::train {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

std::string repo_path(const std::string& rel) { return std::string(P2DPO_TEST_DATA) + "/../../" + rel; }
std::string world_model() { return repo_path("models/world/base"); }
std::string world_pairs() { return test::data_path("train/world-pairs"); }
std::string world_images() { return test::data_path("pairs"); }

// Small and fast: rank 8 on q, k, v, o; a learning rate that moves a tiny model in a few steps.
P2DpoTrainConfig small_config() {
  P2DpoTrainConfig c = train_preset("paper");
  c.lora.r = 8;
  c.lora.alpha = 16;
  c.lr = 2e-3;
  c.warmup_steps = 0;
  c.adamw.weight_decay = 0.0;
  c.micro_batch_size = 4;
  c.effective_batch = 8;
  c.max_steps = 6;
  c.save_every = 2;
  return c;
}

P2DpoRunOptions options(const std::string& out) {
  P2DpoRunOptions o;
  o.model_dir = world_model();
  o.pairs_path = world_pairs();
  o.images_dir = world_images();
  o.out_dir = out;
  o.progress = false;
  return o;
}

std::vector<json> metrics_of(const std::string& out) { return io::read_jsonl_file((fs::path(out) / "metrics.jsonl").string()); }

std::map<std::string, torch::Tensor> adapter_of(const std::string& out) {
  return read_tensor_file((fs::path(out) / "adapter" / "adapter_model.safetensors").string());
}

double max_abs_diff(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (const auto& [k, t] : a) m = std::max(m, (t - b.at(k)).abs().max().item<double>());
  return m;
}

TEST(PairData, LoadsWorldRecordsAndNamesBadFields) {
  PairDataOptions po;
  po.images_dir = world_images();
  const auto pairs = load_p2dpo_pairs(world_pairs(), po);
  ASSERT_EQ(pairs.size(), io::read_jsonl_file(world_pairs() + "/filtered.jsonl").size());  // every record
  ASSERT_EQ(pairs.size(), 16u);  // the shipped fixture (tests/data/train/world-pairs/README.md)
  const TrainingPair& p = pairs.front();
  EXPECT_TRUE(p.has_focus && p.has_robust && p.reference && p.clip_image && p.clip_crop);
  EXPECT_NE(p.prompt_aug.find("<image><image>"), std::string::npos);
  EXPECT_GT(p.bbox.width(), 0);

  const std::string dir = test::scratch_dir("pair_data_errors");
  std::ifstream in(world_pairs() + "/filtered.jsonl");
  std::string line;
  std::getline(in, line);
  json rec = json::parse(line);
  rec["reference"].erase("calib_rejected_deg");
  { std::ofstream(dir + "/bad.jsonl") << json::parse(line).dump() << "\n" << rec.dump() << "\n"; }
  std::string err = test::error_of([&] { load_p2dpo_pairs(dir + "/bad.jsonl", po); });
  EXPECT_NE(err.find("bad.jsonl:2"), std::string::npos) << err;
  EXPECT_NE(err.find("reference.calib_rejected_deg"), std::string::npos) << err;
  rec = json::parse(line);
  rec["image"] = "images/none.png";
  { std::ofstream(dir + "/img.jsonl") << rec.dump() << "\n"; }
  err = test::error_of([&] { load_p2dpo_pairs(dir + "/img.jsonl", po); });
  EXPECT_NE(err.find("none.png"), std::string::npos) << err;
  err = test::error_of([&] { load_p2dpo_pairs(dir, po); });
  EXPECT_NE(err.find("filtered.jsonl"), std::string::npos) << err;

  // External pairs in the three accepted shapes.
  { std::ofstream(dir + "/ext.jsonl") << json{{"image", p.image_path}, {"question", "<image>\nWhat is here?"}, {"chosen", "a"}, {"rejected", "b"}}.dump() << "\n"
                                      << json{{"image", p.image_path}, {"text", json{{"question", "q"}, {"chosen", "c"}, {"rejected", "d"}}.dump()}}.dump() << "\n"
                                      << json{{"image", p.image_path}, {"conversations", {{{"from", "human"}, {"value", "q2"}}, {{"from", "gpt"}, {"value", "e"}}}},
                                              {"contrastive_conversations", {{{"from", "human"}, {"value", "q2"}}, {{"from", "gpt"}, {"value", "f"}}}}}.dump() << "\n"; }
  const auto ext = load_external_pairs(dir + "/ext.jsonl", "", "USER: <image>\n{question} ASSISTANT:");
  ASSERT_EQ(ext.size(), 3u);
  EXPECT_EQ(ext[0].prompt, "USER: <image>\nWhat is here? ASSISTANT:");
  EXPECT_EQ(ext[1].focus_rejected, "d");
  EXPECT_EQ(ext[2].focus_chosen, "e");
  EXPECT_FALSE(ext[0].reference.has_value());
}

TEST(TrainConfig, PresetsFilesAndErrors) {
  const auto paper = train_preset("paper");
  EXPECT_EQ(paper.lora.r, 64);
  EXPECT_DOUBLE_EQ(paper.lr, 2e-5);
  EXPECT_EQ(paper.warmup_steps, 100);
  EXPECT_DOUBLE_EQ(paper.adamw.weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(paper.loss.lambda_calib, 0.3);
  const auto released = train_preset("released-code");
  EXPECT_EQ(released.lora.r, 32);
  EXPECT_EQ(released.lora.target_modules, std::vector<std::string>{"all-linear"});
  EXPECT_DOUBLE_EQ(released.adamw.beta2, 0.95);
  EXPECT_DOUBLE_EQ(released.lr, 1e-5);

  const std::string dir = test::scratch_dir("train_config");
  { std::ofstream(dir + "/t.json") << R"({"train": {"preset": "released-code", "lora": {"r": 4}, "optim": {"lr": 0.001}}})"; }
  const auto c = load_train_config(dir + "/t.json");
  EXPECT_EQ(c.lora.r, 4);
  EXPECT_DOUBLE_EQ(c.lr, 1e-3);
  EXPECT_DOUBLE_EQ(c.adamw.beta2, 0.95);  // from the preset
  // Files overlay in order; the later one wins and the preset comes from the file that names one.
  { std::ofstream(dir + "/over.json") << R"({"optim": {"lr": 0.5}, "loss": {"beta": 0.2}})"; }
  const auto two = load_train_config(std::vector<std::string>{dir + "/t.json", dir + "/over.json"});
  EXPECT_DOUBLE_EQ(two.lr, 0.5);
  EXPECT_DOUBLE_EQ(two.loss.beta, 0.2);
  EXPECT_EQ(two.lora.r, 4);
  EXPECT_EQ(two.preset, "released-code");
  { std::ofstream(dir + "/u.json") << R"({"optim": {"learning_rate": 1}})"; }
  std::string err = test::error_of([&] { load_train_config(dir + "/u.json"); });
  EXPECT_NE(err.find("optim.learning_rate"), std::string::npos) << err;
  { std::ofstream(dir + "/v.json") << R"({"reference": "frozen"})"; }
  err = test::error_of([&] { load_train_config(dir + "/v.json"); });
  EXPECT_NE(err.find("recompute"), std::string::npos) << err;
  { std::ofstream(dir + "/w.json") << R"({"lora": {"target_modules": [1]}})"; }
  err = test::error_of([&] { load_train_config(dir + "/w.json"); });
  EXPECT_NE(err.find("lora.target_modules"), std::string::npos) << err;
  EXPECT_EQ(paper.grad_backend, "auto");
  { std::ofstream(dir + "/g.json") << R"({"runtime": {"grad_backend": "mpi"}})"; }
  err = test::error_of([&] { load_train_config(dir + "/g.json"); });
  EXPECT_NE(err.find("runtime.grad_backend"), std::string::npos) << err;
  { std::ofstream(dir + "/g2.json") << R"({"runtime": {"grad_backend": "gloo", "split_cost_positions": 1024}})"; }
  EXPECT_EQ(load_train_config(dir + "/g2.json").grad_backend, "gloo");
  EXPECT_EQ(load_train_config(dir + "/g2.json").split_cost_positions, 1024);
  EXPECT_EQ(paper.split_cost_positions, 64);
  EXPECT_EQ(paper.lora_precision, "autocast");
  EXPECT_EQ(paper.to_json()["runtime"]["lora_precision"], "autocast");
  { std::ofstream(dir + "/lp.json") << R"({"runtime": {"lora_precision": "float32"}})"; }
  EXPECT_EQ(load_train_config(dir + "/lp.json").lora_precision, "float32");
  { std::ofstream(dir + "/lp.json") << R"({"runtime": {"lora_precision": "fp16"}})"; }
  err = test::error_of([&] { load_train_config(dir + "/lp.json"); });
  EXPECT_NE(err.find("runtime.lora_precision"), std::string::npos) << err;
  // runtime.recompute_layers: true (every layer), false (none) or how many layers from the first.
  EXPECT_EQ(paper.recompute_layers, 0);
  for (const auto& [text, layers] : std::vector<std::pair<std::string, int64_t>>{{"true", -1}, {"false", 0}, {"3", 3}}) {
    { std::ofstream(dir + "/rl.json") << R"({"runtime": {"recompute_layers": )" << text << "}}"; }
    const auto c = load_train_config(dir + "/rl.json");
    EXPECT_EQ(c.recompute_layers, layers) << text;
    EXPECT_EQ(c.to_json()["runtime"]["recompute_layers"].dump(), text);  // written back as given
  }
  for (const char* bad : {"-2", "1.5", "\"all\""}) {
    { std::ofstream(dir + "/rl.json") << R"({"runtime": {"recompute_layers": )" << bad << "}}"; }
    err = test::error_of([&] { load_train_config(dir + "/rl.json"); });
    EXPECT_NE(err.find("runtime.recompute_layers"), std::string::npos) << bad << ": " << err;
  }

  P2DpoTrainConfig a = paper;
  apply_ablation(a, "ddw");
  apply_ablation(a, "calib");
  EXPECT_FALSE(a.ddw.enabled);
  EXPECT_FALSE(a.loss.use_calib);
  apply_ablation(a, "focus");
  EXPECT_THROW(apply_ablation(a, "robust"), InputError);
  EXPECT_THROW(apply_ablation(a, "nothing"), InputError);
}

TEST(TrainConfig, ResumeComparesWhatMakesARun) {
  const nlohmann::json now = train_preset("paper").to_json();
  EXPECT_TRUE(same_run_config(now, now, false));
  EXPECT_FALSE(same_run_config(nlohmann::json(), now, false));  // a checkpoint without its config
  auto changed = now;
  changed["optim"]["lr"] = 1.0;
  EXPECT_FALSE(same_run_config(changed, now, false));
  changed = now;
  changed["runtime"]["grad_backend"] = "gloo";  // float rounding only
  changed["runtime"]["prefetch_images"] = false;
  EXPECT_TRUE(same_run_config(changed, now, false));
  // A key added since a run started is compared as this run has it ...
  auto older = now;
  older["runtime"].erase("split_cost_positions");
  EXPECT_TRUE(same_run_config(older, now, false));
  // ... except lora_precision: runs from before it trained their adapters in fp32. That matters
  // next to a bf16 model, not next to an fp32 one.
  older["runtime"].erase("lora_precision");
  EXPECT_FALSE(same_run_config(older, now, false));
  EXPECT_TRUE(same_run_config(older, now, true));
  auto fp32_now = now;
  fp32_now["runtime"]["lora_precision"] = "float32";
  EXPECT_TRUE(same_run_config(older, fp32_now, false));
}

TEST(TrainP2Dpo, WorldPairsLossFallsRewardsRise) {
  auto model = models::load_model(world_model());
  const std::string out = test::scratch_dir("train_world");
  P2DpoTrainConfig cfg = small_config();
  cfg.max_steps = 10;
  const auto r = train_p2dpo(*model, cfg, options(out));
  EXPECT_EQ(r.steps_done, 10);
  const auto m = metrics_of(out);
  ASSERT_EQ(m.size(), 10u);
  // At step 1 the adapter is zero: the policy reproduces the recorded references.
  EXPECT_LT(m[0].at("reference_check_max_rel_diff").get<double>(), 1e-4);
  EXPECT_NEAR(m[0].at("focus/rewards/margins").get<double>(), 0.0, 1e-3);
  EXPECT_NEAR(m[0].at("loss").get<double>(), std::log(2.0) * (1.0 + 0.3 * 0.5 * 2), 0.2);  // every term ~log 2
  auto mean = [&](const char* key, size_t from, size_t to) {
    double s = 0;
    for (size_t i = from; i < to; ++i) s += m[i].at(key).get<double>();
    return s / static_cast<double>(to - from);
  };
  EXPECT_LT(mean("loss", 7, 10), mean("loss", 0, 3));
  EXPECT_GT(mean("focus/rewards/margins", 7, 10), 0.0);
  EXPECT_GT(mean("robust/rewards/margins", 7, 10), 0.0);
  EXPECT_GT(mean("focus/rewards/accuracies", 7, 10), 0.5);
  for (const auto& rec : m)
    for (const char* key : {"loss/dpo_focus", "loss/calib", "loss/dpo_robust", "calib/margin", "weights/w_focus",
                            "grad_norm", "lr", "tokens_per_s", "robust/rewards/accuracies"})
      EXPECT_TRUE(rec.contains(key)) << key;
  // The adapter is a PEFT directory; the model is the base again after training.
  EXPECT_TRUE(fs::exists(out + "/adapter/adapter_config.json"));
  ASSERT_TRUE(fs::exists(out + "/config.json"));
  // Beside the resolved config: how the model computed (device, dtype, PyTorch).
  const auto run_config = io::read_json_file(out + "/config.json");
  EXPECT_EQ(run_config.at("config").at("runtime").at("lora_precision"), "autocast");
  EXPECT_EQ(run_config.at("model_runtime").at("device"), "cpu");
  EXPECT_EQ(run_config.at("model_runtime").at("dtype"), "float32");
  EXPECT_FALSE(run_config.at("model_runtime").at("torch").get<std::string>().empty());
  const auto adapter = adapter_of(out);
  EXPECT_EQ(adapter.size(), 2u * 4u * static_cast<size_t>(model->info().num_layers));
  for (const auto& l : model->linear_layers()) EXPECT_FALSE(l.layer->lora) << l.name;
}

TEST(TrainP2Dpo, KilledRunResumesToTheSameAdapter) {
  auto model = models::load_model(world_model());
  P2DpoTrainConfig cfg = small_config();
  cfg.lora.dropout = 0.1;  // the torch RNG must be restored too
  const std::string full = test::scratch_dir("train_resume_full"), part = test::scratch_dir("train_resume_part");
  // The uninterrupted run also records an op profile of step 2 (--profile), which must change nothing.
  auto profiled = options(full);
  profiled.profile_dir = test::scratch_dir("train_profile");
  profiled.profile_step = 2;
  const auto full_run = train_p2dpo(*model, cfg, profiled);
  ASSERT_FALSE(full_run.profile.is_null());
  EXPECT_EQ(full_run.profile.at("step"), 2);
  std::set<std::string> phases;
  for (const auto& p : full_run.profile.at("phases")) phases.insert(p.at("phase").get<std::string>());
  for (const char* phase : {"time/data_and_reference_s", "time/forward_s", "time/loss_s", "time/backward_s", "time/optimizer_s"})
    EXPECT_TRUE(phases.count(phase)) << phase;
  EXPECT_GT(full_run.profile.at("total").at("host_ops").get<int64_t>(), 100);
  EXPECT_TRUE(fs::exists(profiled.profile_dir + "/train-step-2.summary.json"));
  auto o = options(part);
  o.stop_after_steps = 3;  // a checkpoint exists at step 2 only: step 3 is lost, as in a kill
  train_p2dpo(*model, cfg, o);
  EXPECT_FALSE(fs::exists(part + "/adapter"));
  o.stop_after_steps = 0;
  o.resume = true;
  P2DpoTrainConfig other_backend = cfg;  // how ranks sum gradients is not part of a run's identity
  other_backend.grad_backend = "gloo";
  other_backend.lora_precision = "float32";  // the world model is fp32: the same ops either way
  const auto r = train_p2dpo(*model, other_backend, o);
  ASSERT_TRUE(r.resumed_from.has_value());
  EXPECT_EQ(*r.resumed_from, 2);
  EXPECT_EQ(max_abs_diff(adapter_of(full), adapter_of(part)), 0.0);
  const auto a = metrics_of(full), b = metrics_of(part);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].at("loss"), b[i].at("loss")) << i;
  // A resumed run with another config is refused.
  cfg.lr *= 2;
  const std::string err = test::error_of([&] { train_p2dpo(*model, cfg, o); });
  EXPECT_NE(err.find("another config"), std::string::npos) << err;
}

TEST(TrainP2Dpo, RecomputedReferencesAndAblations) {
  auto model = models::load_model(world_model());
  P2DpoTrainConfig cfg = small_config();
  cfg.max_steps = 2;
  const std::string rec = test::scratch_dir("train_ref_recorded"), re = test::scratch_dir("train_ref_recompute");
  train_p2dpo(*model, cfg, options(rec));
  cfg.reference = "recompute";
  train_p2dpo(*model, cfg, options(re));
  const auto a = metrics_of(rec), b = metrics_of(re);
  for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(a[i].at("loss").get<double>(), b[i].at("loss").get<double>(), 1e-4);
  EXPECT_LT(max_abs_diff(adapter_of(rec), adapter_of(re)), 1e-4);
  {
    // One padded forward per stage instead of forwards split by length: the same training
    // (without dropout) to float rounding.
    P2DpoTrainConfig one_forward = small_config();
    one_forward.max_steps = 2;
    one_forward.split_cost_positions = -1;
    const std::string out = test::scratch_dir("train_one_forward");
    train_p2dpo(*model, one_forward, options(out));
    const auto c = metrics_of(out);
    for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(a[i].at("loss").get<double>(), c[i].at("loss").get<double>(), 1e-5);
    EXPECT_LT(max_abs_diff(adapter_of(rec), adapter_of(out)), 1e-4);  // as above: Adam scales float noise up
  }

  // The optional SFT term adds sft_weight x the focus winner's per-token NLL (positive) at step 1.
  {
    P2DpoTrainConfig c = small_config();
    c.max_steps = 1;
    c.sft_weight = 1.0;
    const std::string out = test::scratch_dir("train_sft");
    train_p2dpo(*model, c, options(out));
    EXPECT_GT(metrics_of(out).at(0).at("loss").get<double>(), a[0].at("loss").get<double>() + 1e-3);
  }
  for (const char* ab : {"focus", "robust", "calib", "ddw"}) {
    P2DpoTrainConfig c = small_config();
    c.max_steps = 1;
    apply_ablation(c, ab);
    const std::string out = test::scratch_dir(std::string("train_ablate_") + ab);
    train_p2dpo(*model, c, options(out));
    const json m = metrics_of(out).at(0);
    EXPECT_EQ(m.contains("loss/dpo_focus"), std::string(ab) != "focus") << ab;
    EXPECT_EQ(m.contains("loss/dpo_robust"), std::string(ab) != "robust") << ab;
    EXPECT_EQ(m.contains("loss/calib"), std::string(ab) != "calib" && std::string(ab) != "focus") << ab;
    if (std::string(ab) == "ddw") EXPECT_DOUBLE_EQ(m.at("weights/w_focus").get<double>(), 0.5);
  }
}

// Recomputing each decoder layer in the backward pass (through the multi-view prefix caches, with
// LoRA dropout replayed from the saved generator state) gives the same training as keeping the
// activations.
TEST(TrainP2Dpo, ActivationRecomputationTrainsIdentically) {
  // On the test device: the GPU run (bench/gpu/run_p2dpo.sh) checks the CUDA generator's replay too.
  models::LoadOptions on_device;
  on_device.device = test::test_device();
  auto model = models::load_model(world_model(), on_device);
  P2DpoTrainConfig cfg = small_config();
  cfg.max_steps = 3;
  cfg.lora.dropout = 0.1;
  cfg.adamw.eps = 1e-3;  // gradients agree to float order (sums accumulate in another order); see the Gloo test
  const std::string kept = test::scratch_dir("train_keep_activations"), again = test::scratch_dir("train_recompute");
  train_p2dpo(*model, cfg, options(kept));
  // Every layer recomputed, then only the first two of the world model's four.
  for (int64_t layers : {-1, 2}) {
    SCOPED_TRACE("recompute_layers " + std::to_string(layers));
    cfg.recompute_layers = layers;
    std::filesystem::remove_all(again);
    train_p2dpo(*model, cfg, options(again));
    EXPECT_LT(max_abs_diff(adapter_of(kept), adapter_of(again)), 1e-6);
    const auto a = metrics_of(kept), b = metrics_of(again);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_NEAR(a[i].at("loss").get<double>(), b[i].at("loss").get<double>(), 1e-6) << i;
      EXPECT_NEAR(a[i].at("grad_norm").get<double>(), b[i].at("grad_norm").get<double>(), 1e-6) << i;
    }
  }
}

TEST(TrainP2Dpo, FeatureCacheBudgetAndPrefetchChangeNothing) {
  // Four pairs per forward with no room for cached features (every pair's inputs built for its
  // step), and with the next micro-batch's images prepared on a worker thread or not: the same
  // adapter as the default, to the bit. (Pairs beyond the budget once shared one scratch slot, so a
  // micro-batch past it trained four copies of its last pair.)
  auto model = models::load_model(world_model());
  P2DpoTrainConfig cfg = small_config();
  cfg.max_steps = 2;
  const std::string cached = test::scratch_dir("train_cache_default"), uncached = test::scratch_dir("train_cache_none"),
                    serial = test::scratch_dir("train_no_prefetch");
  train_p2dpo(*model, cfg, options(cached));
  cfg.feature_cache_mb = 0;
  train_p2dpo(*model, cfg, options(uncached));
  EXPECT_EQ(max_abs_diff(adapter_of(cached), adapter_of(uncached)), 0.0);
  cfg.prefetch_images = false;
  train_p2dpo(*model, cfg, options(serial));
  EXPECT_EQ(max_abs_diff(adapter_of(cached), adapter_of(serial)), 0.0);
  EXPECT_EQ(metrics_of(cached).back().at("loss"), metrics_of(serial).back().at("loss"));
}

TEST(TrainP2Dpo, ACorruptImageInAPrefetchedMicroBatchNamesTheFile) {
  // The second micro-batch's inputs are built on the worker thread while the first trains; a
  // corrupt image there must fail the run as it does without the worker: same error, naming it.
  PairDataOptions po;
  po.images_dir = world_images();
  const auto pairs = load_p2dpo_pairs(world_pairs(), po);
  P2DpoTrainConfig cfg = small_config();
  cfg.max_steps = 1;
  EpochSampler sampler(static_cast<int64_t>(pairs.size()), derive_seed(cfg.seed, 3));  // the trainer's
  const auto micros = split_micro_batches(sampler.next_batch(cfg.effective_batch), cfg.micro_batch_size);
  ASSERT_EQ(micros.size(), 2u);
  std::set<std::string> first_images;
  for (int64_t i : micros[0]) first_images.insert(fs::path(pairs[static_cast<size_t>(i)].image_path).filename().string());
  std::string victim;
  for (int64_t i : micros[1]) {
    const std::string name = fs::path(pairs[static_cast<size_t>(i)].image_path).filename().string();
    if (!first_images.count(name)) victim = name;
  }
  ASSERT_FALSE(victim.empty()) << "every second-micro-batch image is also in the first";

  const std::string dir = test::scratch_dir("train_corrupt_prefetch");
  fs::copy(world_images(), dir + "/data", fs::copy_options::recursive);
  for (const auto& e : fs::recursive_directory_iterator(dir + "/data"))
    if (e.path().filename() == victim) std::ofstream(e.path(), std::ios::binary | std::ios::trunc) << "not a png";
  auto model = models::load_model(world_model());
  std::string errors[2];
  for (const bool prefetch : {true, false}) {
    cfg.prefetch_images = prefetch;
    auto o = options(dir + (prefetch ? "/run-prefetch" : "/run-serial"));
    o.images_dir = dir + "/data";
    errors[prefetch] = test::error_of([&] { train_p2dpo(*model, cfg, o); });
    EXPECT_NE(errors[prefetch].find(victim), std::string::npos) << errors[prefetch];
  }
  EXPECT_EQ(errors[0], errors[1]);
  // The failed runs left the model as it came: it trains again (no adapter left attached).
  cfg.max_steps = 1;
  EXPECT_EQ(train_p2dpo(*model, cfg, options(dir + "/run-clean")).steps_done, 1);
}

TEST(TrainP2Dpo, PlainDpoOnExternalPairs) {
  auto model = models::load_model(world_model());
  PairDataOptions po;
  po.images_dir = world_images();
  const auto pairs = load_p2dpo_pairs(world_pairs(), po);
  const std::string dir = test::scratch_dir("train_dpo");
  {
    std::ofstream f(dir + "/ext.jsonl");
    for (size_t i = 0; i < 8; ++i)
      f << json{{"id", i}, {"image", pairs[i].image_path}, {"question", "Describe the image."},
                {"chosen", pairs[i].focus_chosen}, {"rejected", pairs[i].focus_rejected}}.dump() << "\n";
  }
  P2DpoTrainConfig cfg = small_config();
  cfg.objective = "dpo";
  cfg.max_steps = 3;
  auto o = options(dir + "/run");
  o.pairs_path = dir + "/ext.jsonl";
  o.images_dir = "";
  const auto r = train_p2dpo(*model, cfg, o);
  EXPECT_EQ(r.steps_done, 3);
  const auto m = metrics_of(dir + "/run");
  EXPECT_NEAR(m[0].at("loss").get<double>(), std::log(2.0), 1e-4);  // references = policy at step 1
  EXPECT_FALSE(m[0].contains("loss/dpo_robust"));
  EXPECT_LT(m[2].at("loss").get<double>(), m[0].at("loss").get<double>());
}

TEST(TrainP2Dpo, PairsFromAnotherModelAreRefused) {
  auto model = models::load_model(test::data_path("llava-tiny-s0"));
  const std::string err = test::error_of([&] { train_p2dpo(*model, small_config(), options(test::scratch_dir("train_wrong_model"))); });
  EXPECT_NE(err.find("reference log-probs"), std::string::npos) << err;
}

// torchrun's contract: same program, RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in the environment.
pid_t spawn_rank(const std::vector<std::string>& args, int rank, int world, int port) {
  const pid_t pid = fork();
  if (pid == 0) {
    setenv("RANK", std::to_string(rank).c_str(), 1);
    setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
    setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    std::vector<std::string> copy = args;
    std::string exe = P2DPO_EXE;
    std::vector<char*> argv{exe.data()};
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

// Adam's eps is raised to 1e-3 here: with 1e-8, gradient entries near 1e-8 turn float-order noise
// (a sum over ranks vs over micro-batches) into visible update differences, hiding what is compared.
TEST(TrainCli, TwoGlooRanksMatchOneProcess) {
  const std::string dir = test::scratch_dir("train_gloo");
  { std::ofstream(dir + "/cfg.json") << json{{"lora", {{"r", 8}, {"alpha", 16.0}}},
                                             {"optim", {{"lr", 2e-3}, {"warmup_steps", 0}, {"weight_decay", 0.0}, {"eps", 1e-3},
                                                        {"micro_batch_size", 2}, {"effective_batch", 8}, {"max_steps", 3}}}}.dump(); }
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{"train", "--model", world_model(), "--pairs", world_pairs(), "--images", world_images(),
                                    "--config", dir + "/cfg.json", "--out", out, "--quiet", "--json"};
  };
  const auto one = test::run_cli(args(dir + "/one"));
  ASSERT_EQ(one.status, 0) << one.out;
  const int port = 20000 + static_cast<int>(getpid() % 20000);
  const pid_t r0 = spawn_rank(args(dir + "/two"), 0, 2, port), r1 = spawn_rank(args(dir + "/two"), 1, 2, port);
  int s0 = 0, s1 = 0;
  waitpid(r0, &s0, 0);
  waitpid(r1, &s1, 0);
  ASSERT_TRUE(WIFEXITED(s0) && WEXITSTATUS(s0) == 0);
  ASSERT_TRUE(WIFEXITED(s1) && WEXITSTATUS(s1) == 0);
  EXPECT_LT(max_abs_diff(adapter_of(dir + "/one"), adapter_of(dir + "/two")), 1e-5);
  const auto a = metrics_of(dir + "/one"), b = metrics_of(dir + "/two");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i].at("loss").get<double>(), b[i].at("loss").get<double>(), 1e-5) << i;
    EXPECT_NEAR(a[i].at("grad_norm").get<double>(), b[i].at("grad_norm").get<double>(), 1e-5 * a[i].at("grad_norm").get<double>()) << i;
    EXPECT_EQ(a[i].at("pairs"), b[i].at("pairs"));
  }
}

TEST(TrainCli, BadInputsExitTwoWithTheirNames) {
  const std::string dir = test::scratch_dir("train_cli_errors");
  auto r = test::run_cli({"train", "--model", world_model(), "--pairs", dir + "/none", "--out", dir + "/o"});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find(dir + "/none"), std::string::npos) << r.out;
  r = test::run_cli({"train", "--model", world_model(), "--pairs", world_pairs(), "--images", world_images(),
                     "--out", dir + "/o", "--ablate", "everything"});
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("--ablate"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace p2dpo::train

namespace p2dpo::train {
namespace {

// A group of one sums to the input, with the backend for the tensors' device: NCCL for CUDA
// tensors where the build has it (the GPU run checks that path), Gloo otherwise and whenever NCCL
// is turned off (runtime.grad_backend: gloo). Metrics always go through Gloo.
TEST(Distributed, AGroupOfOneSumsWithTheBackendOfTheDevice) {
  const torch::Device device = test::test_device();
  // On a GPU, NCCL must really be there (CMake turns it off if it cannot build against it).
  if (device.is_cuda()) EXPECT_TRUE(nccl_available()) << "this CUDA build has no NCCL";
  const int base_port = 40000 + static_cast<int>(getpid() % 20000);
  for (const bool use_nccl : {true, false}) {
    DistributedEnv env;
    env.master_port = base_port + (use_nccl ? 0 : 1);
    ProcessGroup group(env, use_nccl);
    EXPECT_EQ(group.last_backend(), "");
    const auto a = torch::arange(6, torch::kFloat32).view({2, 3}).to(device);
    const auto b = torch::full({4}, 0.25, torch::kFloat32).to(device);
    std::vector<torch::Tensor> tensors{a.clone(), b.clone()};
    group.all_reduce_sum(tensors);
    EXPECT_TRUE(torch::equal(tensors[0], a));
    EXPECT_TRUE(torch::equal(tensors[1], b));
    EXPECT_EQ(tensors[0].device().type(), device.type());  // "cuda:0" vs "cuda"
    EXPECT_EQ(group.last_backend(), use_nccl && device.is_cuda() && nccl_available() ? "nccl" : "gloo");
    EXPECT_EQ(group.all_reduce_sum(std::vector<double>{1.5, -2.0}), (std::vector<double>{1.5, -2.0}));
  }
}

}  // namespace
}  // namespace p2dpo::train
