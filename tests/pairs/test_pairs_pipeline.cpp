// Pair generation as a whole: config presets and files, input formats, the records a run writes,
// resume after a stop and after SIGKILL, and a two-rank run that merges to the single-rank result.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "cli_run.h"
#include "image/decode.h"
#include "io/atomic_file.h"
#include "io/json_io.h"
#include "models/load.h"
#include "pairs/clip_scorer.h"
#include "pairs/config.h"
#include "pairs/pipeline.h"
#include "pairs/responses.h"
#include "test_paths.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace p2dpo::pairs {
namespace {

std::string write_text(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  io::write_file_atomic(path, text);
  return path;
}

TEST(PairsConfig, PresetsFilesAndErrors) {
  const auto paper = preset_config("paper");
  const auto code = preset_config("released-code");
  EXPECT_EQ(paper.prompt.attention, "locate");
  EXPECT_EQ(code.prompt.attention, "plain");
  EXPECT_EQ(paper.robust.lambda, 0.1);
  EXPECT_EQ(paper.noise.diffusion_step, 600);
  EXPECT_EQ(paper.filter.max_ppl, 2.5);
  EXPECT_EQ(paper.focus.temperature, 0.0);  // greedy
  EXPECT_NE(code.robust.prompt.find("Strictly answer"), std::string::npos);

  const std::string dir = test::scratch_dir("pairs_config");
  const auto yaml = write_text(dir, "c.yaml",
                               "pairs:\n  preset: released-code\n  seed: 7\n  focus:\n    max_new_tokens: 12\n"
                               "  crop:\n    ratios: [1.0, 1.5]\n  prompt:\n    template: \"USER: {question}\\n<image> ASSISTANT:\"\n");
  const auto c = load_pairs_config(yaml);
  EXPECT_EQ(c.preset, "released-code");
  EXPECT_EQ(c.prompt.attention, "plain");  // from the preset
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.focus.max_new_tokens, 12);
  EXPECT_EQ(c.crop.ratios, (std::vector<double>{1.0, 1.5}));
  EXPECT_EQ(c.prompt.template_, "USER: {question}\n<image> ASSISTANT:");
  EXPECT_EQ(load_pairs_config(yaml, "paper").prompt.attention, "locate");  // --preset wins
  EXPECT_TRUE(c.focus.original_answer);  // both presets record the own answer
  EXPECT_FALSE(load_pairs_config(write_text(dir, "o.yaml", "focus:\n  original_answer: false\n")).focus.original_answer);
  // The resolved config reads back to itself.
  const auto resolved = write_text(dir, "resolved.json", c.to_json().dump());
  EXPECT_EQ(load_pairs_config(resolved).to_json(), c.to_json());

  auto err = test::error_of([&] { load_pairs_config(write_text(dir, "u.yaml", "focus:\n  max_tokens: 3\n")); });
  EXPECT_NE(err.find("u.yaml"), std::string::npos) << err;
  EXPECT_NE(err.find("unknown key 'focus.max_tokens'"), std::string::npos) << err;
  err = test::error_of([&] { load_pairs_config(write_text(dir, "e.json", R"({"erase": {"mode": "smudge"}})")); });
  EXPECT_NE(err.find("erase.mode"), std::string::npos) << err;
  err = test::error_of([&] { load_pairs_config(write_text(dir, "t.json", R"({"focus": {"max_new_tokens": "many"}})")); });
  EXPECT_NE(err.find("must be a number"), std::string::npos) << err;
  err = test::error_of([&] { load_pairs_config(write_text(dir, "bad.yaml", "focus: [unclosed\n")); });
  EXPECT_NE(err.find("malformed YAML"), std::string::npos) << err;
  err = test::error_of([&] { load_pairs_config("", "nonsense"); });
  EXPECT_NE(err.find("--preset"), std::string::npos) << err;

  EXPECT_EQ(fill_question("Q: {question}?", "what"), "Q: what?");
  EXPECT_EQ(with_image_slots("USER: <image>\nq", "<image>", 2), "USER: <image><image>\nq");
  EXPECT_EQ(attention_layers(AttentionConfig{}, 32), std::vector<int>{14});
  EXPECT_EQ(attention_layers(AttentionConfig{}, 4), std::vector<int>{2});
}

TEST(PairsInput, ConversationJsonAndJsonl) {
  const std::string dir = test::scratch_dir("pairs_input");
  const auto conv = write_text(dir, "rlhfv.json", R"([
    {"idx": 5, "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat is here?"},
                                                   {"from": "gpt", "value": "ignored"}]},
    {"id": "x", "image": "b.png", "conversations": [{"from": "human", "value": "Describe it.\n<image>"}]}])");
  const auto s = load_prompt_samples(conv);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].id, "5");
  EXPECT_EQ(s[0].question, "What is here?");
  EXPECT_EQ(s[1].id, "x");
  EXPECT_EQ(s[1].question, "Describe it.");
  EXPECT_EQ(s[1].index, 1);
  const auto l = load_prompt_samples(test::data_path("pairs/prompts.jsonl"));
  EXPECT_EQ(l.size(), 20u);
  EXPECT_EQ(l[0].id, "prompts-000000-0");

  auto err = test::error_of([&] { load_prompt_samples(write_text(dir, "q.jsonl", "{\"id\": 1, \"image\": \"a.png\"}\n")); });
  EXPECT_NE(err.find("q.jsonl"), std::string::npos) << err;
  EXPECT_NE(err.find("record 0"), std::string::npos) << err;
  err = test::error_of([&] { load_prompt_samples(write_text(dir, "m.jsonl", "{\"image\": \"a.png\", \"question\": \"q\"}\n{oops\n")); });
  EXPECT_NE(err.find("m.jsonl"), std::string::npos) << err;
}

// A small run on the tiny random LLaVA: the mechanics, not the quality.
PairsConfig tiny_config() {
  PairsConfig c = preset_config("paper");
  c.focus.max_new_tokens = 6;
  c.robust.max_new_tokens = 6;
  c.robust.loser_max_new_tokens = 6;
  c.batch_size = 2;
  c.heatmaps = 2;
  c.filter.max_ppl = 1e9;  // a random model's PPL is near its vocabulary size
  return c;
}

PairsRunOptions tiny_options(const std::string& out, int64_t limit) {
  PairsRunOptions o;
  o.data_path = test::data_path("pairs/prompts.jsonl");
  o.images_dir = test::data_path("pairs");
  o.out_dir = out;
  o.model_dir = test::data_path("llava-tiny-s0");
  o.limit = limit;
  o.progress = false;
  return o;
}

// Two runs whose settings change cost, not results: the same answers (and crops, when
// `same_bbox`), answer log-probs within logp_tol and reference sums within ref_tol.
void expect_same_records_to_rounding(const std::string& dir_a, const std::string& dir_b, double logp_tol, double ref_tol,
                                     bool same_bbox) {
  const auto a = io::read_jsonl_file(dir_a + "/pairs.jsonl"), b = io::read_jsonl_file(dir_b + "/pairs.jsonl");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (same_bbox) EXPECT_EQ(a[i]["bbox"], b[i]["bbox"]) << i;
    for (const char* pair : {"focus", "robust"}) {
      for (const char* k : {"chosen", "rejected"}) EXPECT_EQ(a[i][pair][k], b[i][pair][k]) << i << " " << pair << " " << k;
      for (const char* k : {"chosen_logp", "rejected_logp"})
        EXPECT_NEAR(a[i][pair][k].get<double>(), b[i][pair][k].get<double>(), logp_tol) << i << " " << pair << " " << k;
    }
    EXPECT_EQ(a[i]["focus"].value("original", json()), b[i]["focus"].value("original", json())) << i;
    for (const auto& [k, v] : a[i]["reference"].items())
      EXPECT_NEAR(v.get<double>(), b[i]["reference"][k].get<double>(), ref_tol) << i << " " << k;
  }
}

// A decoding switch that takes true, false or "auto" (unset, decided per device): "auto" by
// default, false and true load and survive the resolved config's JSON, anything else names the key.
void expect_auto_switch(const std::string& dir, const std::string& key, std::optional<bool> DecodingConfig::*field) {
  EXPECT_FALSE((preset_config("paper").decoding.*field).has_value()) << key;
  EXPECT_EQ(preset_config("paper").to_json()["decoding"][key], "auto");
  EXPECT_FALSE((load_pairs_config(write_text(dir, key + "-a.yaml", "decoding:\n  " + key + ": auto\n")).decoding.*field).has_value());
  for (const bool v : {false, true}) {
    const auto c = load_pairs_config(write_text(dir, key + ".yaml", "decoding:\n  " + key + ": " + (v ? "true" : "false") + "\n"));
    EXPECT_EQ(c.decoding.*field, std::optional<bool>(v)) << key;
    EXPECT_EQ(load_pairs_config(write_text(dir, key + ".json", c.to_json().dump())).decoding.*field, std::optional<bool>(v)) << key;
  }
  for (const char* bad : {"sometimes", "2"}) {
    const auto err = test::error_of([&] { load_pairs_config(write_text(dir, key + "-x.yaml", "decoding:\n  " + key + ": " + bad + "\n")); });
    EXPECT_NE(err.find("decoding." + key), std::string::npos) << err;
  }
}

TEST(PairsPipeline, RecordsStatsAndResume) {
  auto model = models::load_model(test::data_path("llava-tiny-s0"));
  const auto cfg = tiny_config();
  const std::string full = test::scratch_dir("pairs_full");
  const auto summary = generate_pairs(*model, nullptr, cfg, tiny_options(full, 5));
  ASSERT_TRUE(summary.finalized);
  EXPECT_EQ(summary.generated_now, 5);
  for (const char* f : {"config.json", "manifest.json", "generated.jsonl", "pairs.jsonl", "filtered.jsonl", "stats.json"})
    EXPECT_TRUE(fs::exists(full + "/" + f)) << f;
  const auto runtime = io::read_json_file(full + "/manifest.json").at("model_runtime");  // how the model computed
  EXPECT_EQ(runtime.at("device"), "cpu");
  EXPECT_EQ(runtime.at("dtype"), "float32");
  EXPECT_FALSE(runtime.contains("cuda_fused_ops"));  // a CUDA switch: only where it applies
  const auto recs = io::read_jsonl_file(full + "/pairs.jsonl");
  ASSERT_EQ(recs.size(), 5u);
  for (size_t i = 0; i < recs.size(); ++i) {
    const auto& r = recs[i];
    EXPECT_EQ(r["index"].get<int64_t>(), static_cast<int64_t>(i));
    for (const char* k : {"id", "image", "question", "prompts", "attention", "bbox", "crop", "views", "focus", "robust",
                          "reference", "ips", "weights", "filter", "erased_share"})
      EXPECT_TRUE(r.contains(k)) << k;
    const auto box = r["bbox"].get<std::vector<int>>();
    EXPECT_LT(box[0], box[2]);
    EXPECT_LE(box[2], r["width"].get<int>());
    EXPECT_GT(r["focus"]["chosen_ppl"].get<double>(), 1.0);
    // IPS is the difference of the recorded reference sums.
    EXPECT_DOUBLE_EQ(r["ips"]["focus"].get<double>(),
                     r["reference"]["focus_chosen"].get<double>() - r["reference"]["focus_rejected"].get<double>());
    EXPECT_LT(r["reference"]["robust_rejected"].get<double>(), 0.0);
    EXPECT_EQ(r["prompts"]["enhanced"].get<std::string>().find("USER: <image><image>\nAnswer the question mainly"), 0u);
    EXPECT_EQ(r["weights"]["w_focus"].get<double>(), 0.5);  // no CLIP model: DDW off
    // The model's own plain-view answer (focus.original_answer, on by default), as the released code keeps it.
    EXPECT_TRUE(r["focus"].contains("original"));
    EXPECT_GE(r["focus"]["original_ppl"].get<double>(), 1.0);
  }
  EXPECT_TRUE(cfg.focus.original_answer);
  // The batched reference scoring (one multi-view call per batch) equals scoring each sequence alone.
  {
    const auto& r = recs[1];
    const auto img = model->prepare_image(image::decode_image_file(test::data_path("pairs/" + r["image"].get<std::string>())));
    const std::string P = r["prompts"]["P"];
    EXPECT_NEAR(r["reference"]["focus_chosen"].get<double>(), response_logprob_sum(*model, {img}, P, r["focus"]["chosen"]), 1e-3);
    EXPECT_NEAR(r["reference"]["focus_rejected"].get<double>(), response_logprob_sum(*model, {img}, P, r["focus"]["rejected"]), 1e-3);
  }
  EXPECT_TRUE(fs::exists(full + "/" + recs[0]["heatmap"].get<std::string>()));
  EXPECT_FALSE(recs[2].contains("heatmap"));
  const auto stats = io::read_json_file(full + "/stats.json");
  EXPECT_EQ(stats["samples"].get<int>(), 5);
  EXPECT_TRUE(stats.contains("table5_filter"));
  EXPECT_TRUE(stats.contains("table3_ips"));
  EXPECT_EQ(stats["kept"].get<int>(), static_cast<int>(io::read_jsonl_file(full + "/filtered.jsonl").size()));
  EXPECT_EQ(stats["winners_equal_original"]["samples"].get<int>(), 5);

  // Recording the own answer is a separate batch: turned off, the pairs are the same to the byte,
  // only the original fields (and the stats about them) are gone.
  {
    auto no_original = cfg;
    no_original.focus.original_answer = false;
    const std::string dir = test::scratch_dir("pairs_no_original");
    generate_pairs(*model, nullptr, no_original, tiny_options(dir, 5));
    const auto plain = io::read_jsonl_file(dir + "/pairs.jsonl");
    ASSERT_EQ(plain.size(), recs.size());
    for (size_t i = 0; i < plain.size(); ++i) {
      EXPECT_FALSE(plain[i]["focus"].contains("original"));
      auto stripped = recs[i];
      for (const char* k : {"original", "original_logp", "original_ppl", "original_tokens"}) stripped["focus"].erase(k);
      EXPECT_EQ(plain[i]["focus"], stripped["focus"]) << i;
      EXPECT_EQ(plain[i]["robust"], recs[i]["robust"]) << i;
      EXPECT_EQ(plain[i]["reference"], recs[i]["reference"]) << i;
    }
    EXPECT_FALSE(io::read_json_file(dir + "/stats.json").contains("winners_equal_original"));
  }

  // The optional length-ratio filter (off in the preset): a pair whose longer response has more
  // than max_length_ratio times the tokens of the shorter is dropped with reason "length_ratio".
  {
    const std::string lr = test::scratch_dir("pairs_length_ratio");
    fs::copy_file(full + "/manifest.json", lr + "/manifest.json");
    auto generated = io::read_jsonl_file(full + "/generated.jsonl");
    ASSERT_EQ(generated.size(), 5u);
    generated[0]["focus"]["rejected_tokens"] = 3 * generated[0]["focus"]["chosen_tokens"].get<int64_t>();
    generated[1]["robust"]["chosen_tokens"] = 3 * generated[1]["robust"]["rejected_tokens"].get<int64_t>();
    std::string lines;
    for (const auto& g : generated) lines += g.dump() + "\n";
    io::write_file_atomic(lr + "/generated.jsonl", lines);
    auto strict = cfg;
    strict.filter.max_length_ratio = 2.0;
    finalize_pairs(lr, strict);
    const auto filtered = io::read_jsonl_file(lr + "/pairs.jsonl");
    ASSERT_EQ(filtered.size(), 5u);
    for (size_t i = 0; i < filtered.size(); ++i) {
      const std::string before = recs[i]["filter"]["reason"], after = filtered[i]["filter"]["reason"];
      const bool earlier_reason = before == "empty" || before == "identical";
      const bool edited = i < 2;
      if (edited && !earlier_reason) {
        EXPECT_EQ(after, "length_ratio") << i;
      } else if (!edited) {
        // The others' lengths are as generated: their decision only changes if they are that uneven.
        const auto& f = filtered[i]["focus"];
        const double a = f["chosen_tokens"].get<double>(), b = f["rejected_tokens"].get<double>();
        if (std::max(a, b) <= 2 * std::max(1.0, std::min(a, b))) EXPECT_EQ(after, before) << i;
      }
    }
    EXPECT_EQ(io::read_json_file(lr + "/stats.json")["table5_filter"]["counts"].contains("length_ratio"), true);
    const auto bad = write_text(lr, "bad.json", json{{"filter", {{"max_length_ratio", 0.5}}}}.dump());
    EXPECT_NE(test::error_of([&] { load_pairs_config(bad); }).find("max_length_ratio"), std::string::npos);
    const auto good = write_text(lr, "good.json", json{{"filter", {{"max_length_ratio", 1.5}}}}.dump());
    EXPECT_EQ(load_pairs_config(good).filter.max_length_ratio, 1.5);
    EXPECT_EQ(preset_config("paper").filter.max_length_ratio, 0.0);
  }

  // Stopped after one batch (2 samples), then resumed: the same files.
  const std::string part = test::scratch_dir("pairs_part");
  auto opt = tiny_options(part, 5);
  opt.stop_after_batches = 1;
  const auto first = generate_pairs(*model, nullptr, cfg, opt);
  EXPECT_FALSE(first.finalized);
  EXPECT_EQ(io::read_jsonl_file(part + "/generated.jsonl").size(), 2u);
  const auto second = generate_pairs(*model, nullptr, cfg, tiny_options(part, 5));
  EXPECT_EQ(second.already_done, 2);
  EXPECT_EQ(second.generated_now, 3);
  EXPECT_EQ(io::read_file(part + "/pairs.jsonl"), io::read_file(full + "/pairs.jsonl"));
  EXPECT_EQ(io::read_file(part + "/stats.json"), io::read_file(full + "/stats.json"));

  // Sampled focus answers (the method.md alternative): seeded, so a rerun repeats them, and not
  // the greedy ones.
  auto sampled = cfg;
  sampled.focus.temperature = 1.5;
  const std::string s1 = test::scratch_dir("pairs_sampled_1"), s2 = test::scratch_dir("pairs_sampled_2");
  generate_pairs(*model, nullptr, sampled, tiny_options(s1, 4));
  generate_pairs(*model, nullptr, sampled, tiny_options(s2, 4));
  EXPECT_EQ(io::read_file(s1 + "/pairs.jsonl"), io::read_file(s2 + "/pairs.jsonl"));
  const auto srecs = io::read_jsonl_file(s1 + "/pairs.jsonl");
  int changed = 0;
  for (size_t i = 0; i < srecs.size(); ++i) changed += srecs[i]["focus"]["chosen"] != recs[i]["focus"]["chosen"];
  EXPECT_GT(changed, 0);

  // A different config in the same folder is refused, not mixed in.
  auto other = cfg;
  other.seed = 99;
  const auto err = test::error_of([&] { generate_pairs(*model, nullptr, other, tiny_options(part, 5)); });
  EXPECT_NE(err.find("not a continuation"), std::string::npos) << err;
}

// Reference scoring in calls of `reference_batch` samples gives the same sums as one call for the
// batch; `min_new_tokens` fixes every answer's length (the GPU benchmark's setting); the run reports
// its time by stage; and a folder started before these keys existed still resumes.
TEST(PairsPipeline, ReferenceBatchFixedLengthsStageTimesAndOlderManifests) {
  auto model = models::load_model(test::data_path("llava-tiny-s0"));
  const auto cfg = tiny_config();  // batch_size 2, reference_batch 0: both samples in one call
  const std::string whole = test::scratch_dir("pairs_ref_whole"), single = test::scratch_dir("pairs_ref_single");
  const auto summary = generate_pairs(*model, nullptr, cfg, tiny_options(whole, 4));
  EXPECT_GT(summary.generation_seconds, 0.0);
  for (const char* stage : {"attention", "attention.forward", "attention.backward", "views", "encode_views", "focus_generation", "robust_loser_generation",
                            "contrastive_generation", "reference_scoring", "clip_scores_and_records"})
    EXPECT_TRUE(summary.stage_seconds.count(stage)) << stage;
  EXPECT_EQ(summary.batch_seconds.size(), 2u);

  // An op profile of the second batch (--profile) has the stages as phases and changes no record.
  auto profiled = tiny_options(test::scratch_dir("pairs_profiled"), 4);
  profiled.profile_dir = test::scratch_dir("pairs_profile");
  const auto prof = generate_pairs(*model, nullptr, cfg, profiled);
  ASSERT_FALSE(prof.profile.is_null());
  EXPECT_EQ(prof.profile.at("label"), "pairs-batch-1");
  EXPECT_EQ(prof.profile.at("batch"), 1);
  std::set<std::string> phases;
  for (const auto& p : prof.profile.at("phases")) {
    phases.insert(p.at("phase").get<std::string>());
    EXPECT_GT(p.at("wall_s").get<double>(), 0.0) << p.at("phase");
  }
  for (const char* stage : {"attention.forward", "attention.backward", "focus_generation", "contrastive_generation", "reference_scoring"})
    EXPECT_TRUE(phases.count(stage)) << stage;
  EXPECT_TRUE(fs::exists(profiled.profile_dir + "/pairs-batch-1.trace.json"));
  {
    const auto plain = io::read_jsonl_file(whole + "/pairs.jsonl"), with = io::read_jsonl_file(profiled.out_dir + "/pairs.jsonl");
    ASSERT_EQ(plain.size(), with.size());
    for (size_t i = 0; i < plain.size(); ++i)
      for (const char* k : {"bbox", "focus", "robust", "reference"}) EXPECT_EQ(plain[i][k], with[i][k]) << i << " " << k;
  }

  // Decoding through frozen caches (decoding.fixed_cache; cuda_graphs on a GPU) gives the same
  // answers, and a run may resume with other decoding settings (they change no record).
  auto frozen = cfg;
  frozen.decoding.fixed_cache = true;
  const std::string fz = test::scratch_dir("pairs_fixed_cache");
  generate_pairs(*model, nullptr, frozen, tiny_options(fz, 4));
  {
    const auto plain = io::read_jsonl_file(whole + "/pairs.jsonl"), with = io::read_jsonl_file(fz + "/pairs.jsonl");
    ASSERT_EQ(plain.size(), with.size());
    for (size_t i = 0; i < plain.size(); ++i)
      for (const char* pair : {"focus", "robust"})
        for (const char* k : {"chosen", "rejected"}) EXPECT_EQ(plain[i][pair][k], with[i][pair][k]) << i << " " << pair << " " << k;
  }
  // Decoding fused into two loops (decoding.fuse_stages, the default on a GPU): the same answers,
  // their log-probs and the reference sums to float rounding (the padded shapes differ), and the
  // two loops' stage times in place of the four stages'.
  auto fused = cfg;
  fused.decoding.fuse_stages = true;
  fused.focus.original_answer = true;
  auto unfused = fused;
  unfused.decoding.fuse_stages = false;
  const std::string fu = test::scratch_dir("pairs_fused"), un = test::scratch_dir("pairs_unfused");
  const auto fused_run = generate_pairs(*model, nullptr, fused, tiny_options(fu, 4));
  generate_pairs(*model, nullptr, unfused, tiny_options(un, 4));
  EXPECT_TRUE(fused_run.stage_seconds.count("focus_chosen_generation"));
  EXPECT_TRUE(fused_run.stage_seconds.count("one_image_generation"));
  EXPECT_FALSE(fused_run.stage_seconds.count("contrastive_generation"));
  expect_same_records_to_rounding(un, fu, 1e-5, 1e-4, /*same_bbox=*/true);
  // The batch's images encoded in one vision-tower call (decoding.encode_together, the default on a
  // GPU), the attention pass batched too: the same crops and answers, log-probs to float rounding.
  auto together = cfg;
  together.attention.batch = 2;
  together.decoding.encode_together = true;
  auto apart = together;
  apart.decoding.encode_together = false;
  const std::string tg = test::scratch_dir("pairs_encode_together"), ap = test::scratch_dir("pairs_encode_apart");
  generate_pairs(*model, nullptr, together, tiny_options(tg, 4));
  generate_pairs(*model, nullptr, apart, tiny_options(ap, 4));
  expect_same_records_to_rounding(ap, tg, 1e-4, 1e-3, /*same_bbox=*/true);
  // ... and a run may resume with the other setting.
  EXPECT_EQ(generate_pairs(*model, nullptr, apart, tiny_options(tg, 4)).already_done, 4);

  auto graphs = cfg;
  graphs.decoding.cuda_graphs = true;
  EXPECT_EQ(generate_pairs(*model, nullptr, graphs, tiny_options(whole, 4)).already_done, 4);

  auto per_sample = cfg;
  per_sample.reference_batch = 1;
  generate_pairs(*model, nullptr, per_sample, tiny_options(single, 4));
  const auto a = io::read_jsonl_file(whole + "/pairs.jsonl"), b = io::read_jsonl_file(single + "/pairs.jsonl");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["focus"], b[i]["focus"]) << i;
    for (const auto& [k, v] : a[i]["reference"].items()) EXPECT_NEAR(v.get<double>(), b[i]["reference"][k].get<double>(), 1e-4) << k;
  }

  auto fixed = cfg;
  fixed.min_new_tokens = 6;  // = every max_new_tokens of tiny_config
  const std::string fx = test::scratch_dir("pairs_fixed_lengths");
  generate_pairs(*model, nullptr, fixed, tiny_options(fx, 4));
  for (const auto& r : io::read_jsonl_file(fx + "/pairs.jsonl")) {
    for (const char* pair : {"focus", "robust"})
      for (const char* k : {"chosen_tokens", "rejected_tokens"}) EXPECT_EQ(r[pair][k].get<int>(), 6) << pair << " " << k;
    EXPECT_FALSE(r["focus"]["chosen_eos"].get<bool>());
  }

  // A manifest written before min_new_tokens and reference_batch existed: the same run resumes.
  auto manifest = io::read_json_file(whole + "/manifest.json");
  manifest["config"].erase("min_new_tokens");
  manifest["config"].erase("reference_batch");
  io::write_json_atomic(whole + "/manifest.json", manifest);
  const auto again = generate_pairs(*model, nullptr, cfg, tiny_options(whole, 4));
  EXPECT_EQ(again.already_done, 4);
  EXPECT_EQ(again.generated_now, 0);
  // ... but not with a value the old run did not have.
  EXPECT_NE(test::error_of([&] { generate_pairs(*model, nullptr, fixed, tiny_options(whole, 4)); }).find("not a continuation"),
            std::string::npos);

  const std::string dir = test::scratch_dir("pairs_new_keys");
  auto err = test::error_of([&] { load_pairs_config(write_text(dir, "r.yaml", "reference_batch: -1\n")); });
  EXPECT_NE(err.find("reference_batch"), std::string::npos) << err;
  err = test::error_of([&] { load_pairs_config(write_text(dir, "m.yaml", "min_new_tokens: -2\n")); });
  EXPECT_NE(err.find("min_new_tokens"), std::string::npos) << err;
  EXPECT_EQ(load_pairs_config(write_text(dir, "ok.yaml", "reference_batch: 2\nmin_new_tokens: 5\n")).reference_batch, 2);
  err = test::error_of([&] { load_pairs_config(write_text(dir, "a.yaml", "attention:\n  batch: 0\n")); });
  EXPECT_NE(err.find("attention.batch"), std::string::npos) << err;
  // The decoding switches: true, false or "auto" (the default: on for CUDA devices only).
  expect_auto_switch(dir, "fixed_cache", &DecodingConfig::fixed_cache);  // "auto": generate() decides by device
  expect_auto_switch(dir, "fuse_stages", &DecodingConfig::fuse_stages);
  expect_auto_switch(dir, "encode_together", &DecodingConfig::encode_together);
  for (const bool cuda : {false, true}) {
    EXPECT_EQ(preset_config("paper").decoding.fused_on(cuda), cuda);
    EXPECT_EQ(preset_config("paper").decoding.encoded_together_on(cuda), cuda);
  }
  DecodingConfig set;
  set.fuse_stages = false;
  set.encode_together = true;
  EXPECT_FALSE(set.fused_on(true));
  EXPECT_TRUE(set.encoded_together_on(false));

  // Gradient attention for both samples of a batch in one forward: the same crops (maps agree to
  // float rounding; the tiny model's are far from ties).
  auto batched = cfg;
  batched.attention.batch = 2;
  const std::string ab = test::scratch_dir("pairs_attention_batch");
  generate_pairs(*model, nullptr, batched, tiny_options(ab, 4));
  const auto c = io::read_jsonl_file(ab + "/pairs.jsonl");
  ASSERT_EQ(c.size(), a.size());
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_EQ(c[i]["bbox"], a[i]["bbox"]) << i;
    EXPECT_EQ(c[i]["attention"]["first_token"], a[i]["attention"]["first_token"]) << i;
    const auto ma = a[i]["attention"]["map"].get<std::vector<double>>(), mc = c[i]["attention"]["map"].get<std::vector<double>>();
    ASSERT_EQ(ma.size(), mc.size());
    double scale = 0, diff = 0;
    for (size_t k = 0; k < ma.size(); ++k) scale = std::max(scale, std::abs(ma[k])), diff = std::max(diff, std::abs(ma[k] - mc[k]));
    EXPECT_LE(diff, 1e-4 * scale) << i;
  }
}

// A run whose every answer came back empty has no margins: the percentile rule says so, naming
// the run, instead of failing inside the statistics.
// The attention methods side by side on one prompt: tok_img (the paper's A_tok ⊗ A_img) averages
// per-layer maps that are each a distribution over the image, so it sums to 1; layer_mean averages
// raw attention (which also goes to text tokens), so it sums to less; both cover every layer.
TEST(PairsPipeline, TokImgAttentionIsAMeanOfPerLayerDistributions) {
  auto model = models::load_model(test::data_path("llava-tiny-s0"));
  auto map_of = [&](const std::string& method) {
    PairsConfig c = tiny_config();
    c.attention.method = method;
    c.heatmaps = 0;
    const std::string out = test::scratch_dir("pairs_att_" + method);
    generate_pairs(*model, nullptr, c, tiny_options(out, 1));
    const auto rec = io::read_jsonl_file(out + "/pairs.jsonl").at(0);
    EXPECT_EQ(rec["attention"]["method"], method);
    return rec["attention"]["map"].get<std::vector<double>>();
  };
  const auto tok_img = map_of("tok_img"), layer_mean = map_of("layer_mean");
  ASSERT_EQ(tok_img.size(), layer_mean.size());
  double s_tok = 0, s_mean = 0;
  for (size_t i = 0; i < tok_img.size(); ++i) s_tok += tok_img[i], s_mean += layer_mean[i];
  EXPECT_NEAR(s_tok, 1.0, 1e-5);
  EXPECT_LT(s_mean, 1.0 - 1e-3);
  EXPECT_NE(tok_img, layer_mean);
}

TEST(PairsPipeline, EmptyAnswersGiveAClearFilterError) {
  const std::string dir = test::scratch_dir("pairs_empty");
  const auto cfg = tiny_config();
  io::write_json_atomic(dir + "/manifest.json", {{"samples", 1}, {"world_size", 1}});
  json rec = {{"index", 0}, {"id", "a"}, {"erased_share", 0.1},
              {"focus", {{"chosen", ""}, {"rejected", ""}, {"chosen_logp", 0.0}, {"rejected_logp", 0.0},
                         {"chosen_ppl", 1.0}, {"rejected_ppl", 1.0}}},
              {"robust", {{"chosen", ""}, {"rejected", ""}, {"chosen_logp", 0.0}, {"rejected_logp", 0.0},
                          {"chosen_ppl", 1.0}, {"rejected_ppl", 1.0}}}};
  io::write_file_atomic(dir + "/generated.jsonl", rec.dump() + "\n");
  const auto err = test::error_of([&] { finalize_pairs(dir, cfg); });
  EXPECT_NE(err.find(dir), std::string::npos) << err;
  EXPECT_NE(err.find("margin_rule: fixed"), std::string::npos) << err;
}

// The CLI run used by the kill and rank tests.
std::vector<std::string> cli_args(const std::string& out, const std::string& config) {
  return {"pairs", "--model", test::data_path("llava-tiny-s0"), "--data", test::data_path("pairs/prompts.jsonl"),
          "--images", test::data_path("pairs"), "--out", out, "--config", config, "--quiet", "--json"};
}

std::string cli_config(const std::string& dir, int batch) {
  return write_text(dir, "pairs.json",
                    json{{"focus", {{"max_new_tokens", 12}}},
                         {"robust", {{"max_new_tokens", 12}, {"loser_max_new_tokens", 12}}},
                         {"filter", {{"max_ppl", 1e9}}},
                         {"batch_size", batch},
                         {"heatmaps", 0}}
                        .dump());
}

pid_t spawn(const std::vector<std::string>& args, const std::vector<std::string>& env_extra) {
  const pid_t pid = fork();
  if (pid == 0) {
    for (const auto& e : env_extra) putenv(const_cast<char*>(e.c_str()));
    const int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    std::vector<char*> argv;
    std::string exe = P2DPO_EXE;
    argv.push_back(exe.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

size_t line_count(const std::string& path) {
  std::ifstream f(path);
  size_t n = 0;
  for (std::string l; std::getline(f, l);) n += !l.empty();
  return n;
}

TEST(PairsCli, KilledRunResumesToTheSameRecords) {
  const std::string dir = test::scratch_dir("pairs_kill");
  const std::string cfg = cli_config(dir, 1);
  const auto clean = test::run_cli(cli_args(dir + "/clean", cfg));
  ASSERT_EQ(clean.status, 0) << clean.out;

  const pid_t pid = spawn(cli_args(dir + "/killed", cfg), {});
  const std::string gen = dir + "/killed/generated.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (line_count(gen) < 3 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  wait_exit(pid);
  const size_t at_kill = line_count(gen);
  EXPECT_GE(at_kill, 3u);
  EXPECT_LT(at_kill, 20u) << "the run finished before it could be killed";
  EXPECT_FALSE(fs::exists(dir + "/killed/pairs.jsonl"));

  const auto resumed = test::run_cli(cli_args(dir + "/killed", cfg));
  ASSERT_EQ(resumed.status, 0) << resumed.out;
  EXPECT_EQ(io::read_file(dir + "/killed/pairs.jsonl"), io::read_file(dir + "/clean/pairs.jsonl"));
  EXPECT_EQ(io::read_file(dir + "/killed/filtered.jsonl"), io::read_file(dir + "/clean/filtered.jsonl"));
}

TEST(PairsCli, TwoRanksMergeToTheSingleProcessRecords) {
  const std::string dir = test::scratch_dir("pairs_ranks");
  const std::string cfg = cli_config(dir, 3);
  const auto single = test::run_cli(cli_args(dir + "/single", cfg));
  ASSERT_EQ(single.status, 0) << single.out;

  const pid_t r0 = spawn(cli_args(dir + "/ranks", cfg), {"RANK=0", "WORLD_SIZE=2"});
  const pid_t r1 = spawn(cli_args(dir + "/ranks", cfg), {"RANK=1", "WORLD_SIZE=2"});
  EXPECT_EQ(wait_exit(r1), 0);
  EXPECT_EQ(wait_exit(r0), 0);
  // Each rank wrote its own shard of whole batches (batch 3: rank 0 has batches 0, 2, 4, 6).
  EXPECT_EQ(line_count(dir + "/ranks/shards/rank-0/generated.jsonl"), 11u);
  EXPECT_EQ(line_count(dir + "/ranks/shards/rank-1/generated.jsonl"), 9u);
  EXPECT_EQ(io::read_file(dir + "/ranks/pairs.jsonl"), io::read_file(dir + "/single/pairs.jsonl"));
  EXPECT_EQ(io::read_file(dir + "/ranks/stats.json"), io::read_file(dir + "/single/stats.json"));

  // --merge alone rewrites the same files.
  const auto merged = test::run_cli({"pairs", "--out", dir + "/ranks", "--merge", "--json"});
  ASSERT_EQ(merged.status, 0) << merged.out;
  EXPECT_EQ(io::read_file(dir + "/ranks/pairs.jsonl"), io::read_file(dir + "/single/pairs.jsonl"));
}

}  // namespace
}  // namespace p2dpo::pairs

namespace p2dpo::pairs {
namespace {

// The world's shipped base model and CLIP on 20 of the world's open-ended prompts, with the
// world config: every field, plausible statistics, heat-maps.
TEST(PairsWorld, ShippedModelMakesCompletePairs) {
  const std::string repo = std::string(P2DPO_TEST_DATA) + "/../..";
  const std::string out = test::scratch_dir("pairs_world");
  const auto r = test::run_cli({"pairs", "--model", repo + "/models/world/base", "--clip", repo + "/models/world/clip",
                                "--config", repo + "/configs/world-pairs.yaml", "--data", test::data_path("pairs/prompts.jsonl"),
                                "--images", test::data_path("pairs"), "--out", out, "--quiet", "--json"});
  ASSERT_EQ(r.status, 0) << r.out;
  const auto recs = io::read_jsonl_file(out + "/pairs.jsonl");
  ASSERT_EQ(recs.size(), 20u);
  int differ = 0, heatmaps = 0, positive_crop_scores = 0;
  for (const auto& rec : recs) {
    EXPECT_EQ(rec["prompts"]["P"].get<std::string>().find("USER: "), 0u);
    EXPECT_NE(rec["prompts"]["P"].get<std::string>().find("\n<image> ASSISTANT:"), std::string::npos);
    const auto box = rec["bbox"].get<std::vector<int>>();
    EXPECT_GE(box[0], 0);
    EXPECT_LE(box[2], rec["width"].get<int>());
    EXPECT_LE(box[3], rec["height"].get<int>());
    EXPECT_EQ(rec["attention"]["grid"], json::array({8, 8}));  // 96 px / 12 px patches
    for (const char* pair : {"focus", "robust"}) {
      EXPECT_FALSE(rec[pair]["chosen"].get<std::string>().empty()) << pair;
      EXPECT_GE(rec[pair]["chosen_ppl"].get<double>(), 1.0);
      EXPECT_LT(rec[pair]["chosen_ppl"].get<double>(), 10.0);  // a trained model: its own answers are likely
    }
    differ += rec["focus"]["chosen"] != rec["focus"]["rejected"];
    EXPECT_FALSE(rec["focus"]["original"].get<std::string>().empty());
    // CLIPScore is 100 * max(cos, 0): a crop the prompt does not describe may score exactly 0.
    EXPECT_GT(rec["clip"]["image"].get<double>(), 0.0);
    for (const char* k : {"crop", "inverse_crop"}) {
      EXPECT_GE(rec["clip"][k].get<double>(), 0.0) << k;
      EXPECT_LE(rec["clip"][k].get<double>(), 100.0) << k;
      positive_crop_scores += rec["clip"][k].get<double>() > 0.0;
    }
    const double wf = rec["weights"]["w_focus"], wr = rec["weights"]["w_robust"];
    EXPECT_GE(wf, 0.3 - 1e-12);
    EXPECT_LE(wf, 0.7 + 1e-12);
    EXPECT_NEAR(wf + wr, 1.0, 1e-12);
    if (rec.contains("heatmap")) {
      ++heatmaps;
      EXPECT_TRUE(fs::exists(out + "/" + rec["heatmap"].get<std::string>()));
    }
  }
  EXPECT_GE(positive_crop_scores, 30) << "of 40 crop scores";  // measured: 38 with the shipped CLIP
  EXPECT_GE(differ, 10);
  EXPECT_EQ(heatmaps, 8);
  const auto stats = io::read_json_file(out + "/stats.json");
  EXPECT_GT(stats["retention"].get<double>(), 0.5);
  EXPECT_LE(stats["retention"].get<double>(), 1.0);
  EXPECT_TRUE(stats.contains("table6_crop_clip"));
  EXPECT_EQ(stats["table3_ips"]["focus"]["n"].get<int>(), stats["kept"].get<int>());
  EXPECT_EQ(io::read_json_file(out + "/config.json")["focus"]["max_new_tokens"].get<int>(), 48);
  EXPECT_EQ(stats["winners_equal_original"]["samples"].get<int>(), 20);
  EXPECT_LE(stats["winners_equal_original"]["focus_chosen"].get<int>(), 20);
}

}  // namespace
}  // namespace p2dpo::pairs

namespace p2dpo::pairs {
namespace {

// One text-tower and one image-tower call for several texts, each with its own images (texts of
// different lengths, so padded): the same scores as one call per text, to float rounding.
TEST(ClipScorer, ScoresEachEqualsOneCallPerText) {
  const std::string repo = std::string(P2DPO_TEST_DATA) + "/../..";
  const auto scorer = ClipScorer::load(repo + "/models/world/clip");
  std::vector<image::ImageU8> imgs;
  for (const auto& e : fs::recursive_directory_iterator(test::data_path("pairs/images"))) {
    if (e.path().extension() != ".png") continue;
    imgs.push_back(image::decode_image_file(e.path().string()));
    if (imgs.size() == 4) break;
  }
  ASSERT_EQ(imgs.size(), 4u);
  const std::vector<std::string> texts = {"What is on the left of the red square?", "a circle"};
  const std::vector<std::vector<image::ImageU8>> lists = {{imgs[0], imgs[1], imgs[2]}, {imgs[3]}};
  const auto each = scorer->scores_each(texts, lists);
  ASSERT_EQ(each.size(), 2u);
  for (size_t t = 0; t < texts.size(); ++t) {
    const auto one = scorer->scores(texts[t], lists[t]);
    ASSERT_EQ(each[t].size(), one.size());
    for (size_t k = 0; k < one.size(); ++k) EXPECT_NEAR(each[t][k], one[k], 1e-3) << t << " " << k;
  }
  EXPECT_THROW(scorer->scores_each(texts, {{imgs[0]}}), std::invalid_argument);
}

}  // namespace
}  // namespace p2dpo::pairs
