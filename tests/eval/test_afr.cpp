// Attention analysis (src/eval/afr.h): the official TextVQA answer normalisation and soft accuracy,
// the box -> image-token grid mapping (crop, pad, stretch; ties, fallback, dropped boxes), AFR of a
// hand-made map, the aggregation into per-layer AFR / P-Acc / image share, and a real run of the
// shipped world model on the records of three world scenes.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "eval/afr.h"
#include "eval/chair.h"
#include "image/decode.h"
#include "infer/attention.h"
#include "io/json_io.h"
#include "models/load.h"
#include "test_paths.h"
#include "test_util.h"

namespace p2dpo::eval {
namespace {

namespace fs = std::filesystem;

std::string world_mini(const std::string& rel) { return test::data_path("eval/world-mini/" + rel); }
std::string world_model_dir() { return std::string(P2DPO_TEST_DATA) + "/../../models/world/base"; }

// Expected strings worked through EvalAIAnswerProcessor by hand (m4c_evaluator.py).
TEST(VqaAccuracy, OfficialNormalisation) {
  EXPECT_EQ(vqa_normalize("The poster shows a 10% discount."), "poster shows 10% discount");  // articles, final period
  EXPECT_EQ(vqa_normalize("Two"), "2");
  EXPECT_EQ(vqa_normalize("none"), "0");
  EXPECT_EQ(vqa_normalize("ten dogs"), "10 dogs");
  EXPECT_EQ(vqa_normalize("eleven"), "eleven");  // the number map stops at ten
  EXPECT_EQ(vqa_normalize("dont"), "don't");
  EXPECT_EQ(vqa_normalize("Isnt it"), "isn't it");
  EXPECT_EQ(vqa_normalize("Im"), "im");  // the table's capitalised keys never match after lower-casing
  EXPECT_EQ(vqa_normalize("Coca-Cola"), "coca cola");  // '-' touching no space becomes a space
  EXPECT_EQ(vqa_normalize("yes - no"), "yes no");      // ... and touching one is deleted
  EXPECT_EQ(vqa_normalize("(a) cat"), "cat");           // '(' -> space, ')' before a space deleted, 'a' dropped
  EXPECT_EQ(vqa_normalize("3.5"), "3.5");               // a period before a digit stays
  EXPECT_EQ(vqa_normalize("e.g."), "eg");
  EXPECT_EQ(vqa_normalize("What's up?"), "what 's up");  // "'s" split off, '?' deleted
  EXPECT_EQ(vqa_normalize("Hello, World!"), "hello world");
  EXPECT_EQ(vqa_normalize("  a\tb\nc  "), "b c");
  // At most 32 periods go (re.sub's count is re.UNICODE = 32).
  EXPECT_EQ(vqa_normalize("x" + std::string(40, '.')), "x" + std::string(8, '.'));
}

TEST(VqaAccuracy, LeaveOneOutOverTenAnswers) {
  const auto gts = [](int k) {
    std::vector<std::string> g(10, "dog");
    for (int i = 0; i < k; ++i) g[static_cast<size_t>(i)] = i % 2 ? "the cat" : "Cat";
    return g;
  };
  EXPECT_DOUBLE_EQ(vqa_accuracy("cat", gts(0)), 0.0);
  EXPECT_NEAR(vqa_accuracy("cat", gts(1)), 0.3, 1e-12);
  EXPECT_NEAR(vqa_accuracy("The cat.", gts(2)), 0.6, 1e-12);
  EXPECT_NEAR(vqa_accuracy("cat", gts(3)), 0.9, 1e-12);
  EXPECT_DOUBLE_EQ(vqa_accuracy("CAT", gts(4)), 1.0);
  EXPECT_DOUBLE_EQ(vqa_accuracy("cat", gts(10)), 1.0);
}

image::ClipProcessorConfig world_processor() {
  image::ClipProcessorConfig c;
  c.shortest_edge = 96;
  c.crop_height = c.crop_width = 96;
  return c;
}

std::vector<int> cells_of(const GridCells& g, int grid_w) {
  std::vector<int> out;
  for (size_t i = 0; i < g.inside.size(); ++i)
    if (g.inside[i]) out.push_back(static_cast<int>(i / grid_w) * 10 + static_cast<int>(i % grid_w));  // row*10+col
  return out;
}

TEST(AfrGrid, CropMappingSelectsCellCentres) {
  const auto p = world_processor();
  // 288x192 -> resize 144x96, crop left 24; cell = 16 px of the frame = 32 px of the original.
  // x [120,168) -> frame [36,60) -> cells [2.25,3.75): cols 2, 3; y [48,96) -> [1.5,3.0): rows 1, 2.
  auto g = box_grid_cells({120, 48, 168, 96}, 288, 192, p, BoxMapping::Crop, 6, 6);
  EXPECT_EQ(cells_of(g, 6), (std::vector<int>{12, 13, 22, 23}));
  EXPECT_FALSE(g.centre_fallback);
  // A box ending exactly on a cell centre (y1 = 80 -> 2.5) leaves that row out (half-open).
  g = box_grid_cells({120, 48, 168, 80}, 288, 192, p, BoxMapping::Crop, 6, 6);
  EXPECT_EQ(cells_of(g, 6), (std::vector<int>{12, 13}));
  // A small box holding no centre: the cell of its centre (u 1.72, v 3.22 -> row 3, col 1).
  g = box_grid_cells({100, 100, 106, 106}, 288, 192, p, BoxMapping::Crop, 6, 6);
  EXPECT_TRUE(g.centre_fallback);
  EXPECT_EQ(cells_of(g, 6), (std::vector<int>{31}));
  // The crop cuts x < 48 away: a box there is dropped.
  g = box_grid_cells({0, 50, 40, 90}, 288, 192, p, BoxMapping::Crop, 6, 6);
  EXPECT_TRUE(g.dropped);
  EXPECT_EQ(g.count, 0);
}

TEST(AfrGrid, PadAndStretchMappings) {
  const auto p = world_processor();
  // Pad: 288x192 -> 288 square, image pasted 48 px down; cell = 48 px.
  auto g = box_grid_cells({0, 0, 48, 48}, 288, 192, p, BoxMapping::Pad, 6, 6);
  EXPECT_EQ(cells_of(g, 6), (std::vector<int>{10}));
  // Stretch: cells of 48 x 32 px over the original.
  g = box_grid_cells({0, 0, 48, 32}, 288, 192, p, BoxMapping::Stretch, 6, 6);
  EXPECT_EQ(cells_of(g, 6), (std::vector<int>{0}));
  g = box_grid_cells({96, 64, 240, 160}, 288, 192, p, BoxMapping::Stretch, 6, 6);
  EXPECT_EQ(cells_of(g, 6), (std::vector<int>{22, 23, 24, 32, 33, 34, 42, 43, 44}));
  EXPECT_EQ(parse_box_mapping("pad", "--box-mapping"), BoxMapping::Pad);
  EXPECT_NE(test::error_of([] { parse_box_mapping("squash", "--box-mapping"); }).find("--box-mapping"), std::string::npos);
}

TEST(AfrGrid, RatioOfHandMadeMap) {
  // 4 inside cells at 0.1, 32 outside cells sharing 0.6: AFR = 0.1 / (0.6 / 32) = 16/3.
  std::vector<float> map(36, 0.6f / 32.0f);
  std::vector<bool> inside(36, false);
  for (int i : {14, 15, 20, 21}) {
    map[static_cast<size_t>(i)] = 0.1f;
    inside[static_cast<size_t>(i)] = true;
  }
  EXPECT_NEAR(attention_focus_ratio(map, inside), 16.0 / 3.0, 1e-5);
  EXPECT_TRUE(std::isnan(attention_focus_ratio(map, std::vector<bool>(36, true))));   // no outside cell
  EXPECT_TRUE(std::isnan(attention_focus_ratio(map, std::vector<bool>(36, false))));  // no inside cell
  std::vector<float> only_inside(36, 0.0f);
  only_inside[14] = 1.0f;
  EXPECT_TRUE(std::isnan(attention_focus_ratio(only_inside, inside)));  // outside mean 0
}

TEST(AfrSummary, HandMadeSamples) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<AfrSample> s(3);
  s[0].afr = {2, 10};
  s[1].afr = {4, nan};
  s[2].afr = {6, 20};
  s[0].accuracy = 1.0;
  s[1].accuracy = 0.0;
  s[2].accuracy = 0.6;
  s[0].image_share = {0.2, 0.4};
  s[1].image_share = {0.1, 0.3};
  s[2].image_share = {0.3, 0.5};
  s[0].queries = 2;
  s[1].queries = 3;
  s[2].queries = 5;
  auto sum = summarize_afr(s, 2, 1, 12.0);
  EXPECT_DOUBLE_EQ(sum.afr_per_layer[0], 4.0);
  EXPECT_DOUBLE_EQ(sum.afr_per_layer[1], 15.0);
  EXPECT_EQ(sum.afr_n_per_layer, (std::vector<int64_t>{3, 2}));
  EXPECT_DOUBLE_EQ(sum.afr_mean_over_layers, 9.5);
  EXPECT_NEAR(sum.accuracy, 160.0 / 3.0, 1e-9);
  EXPECT_EQ(sum.pacc_n, 1);
  EXPECT_NEAR(sum.pacc, 60.0, 1e-9);
  EXPECT_EQ(sum.pacc_threshold_source, "fixed");
  EXPECT_NEAR(sum.image_share_per_layer[0], 0.22, 1e-12);
  EXPECT_NEAR(sum.image_share_per_layer[1], 0.42, 1e-12);
  EXPECT_NEAR(sum.global_image_ratio, 0.32, 1e-12);
  EXPECT_NEAR(sum.mean_image_ratio, 0.3, 1e-12);
  // Threshold 5: records 1 and 3 -> (1 + 0.6) / 2; "mean" = 15 at layer 1 -> record 3 only.
  EXPECT_NEAR(summarize_afr(s, 2, 1, 5.0).pacc, 80.0, 1e-9);
  const auto own = summarize_afr(s, 2, 1, std::nullopt);
  EXPECT_DOUBLE_EQ(own.pacc_threshold, 15.0);
  EXPECT_EQ(own.pacc_threshold_source, "mean");
  EXPECT_NEAR(own.pacc, 60.0, 1e-9);
  EXPECT_TRUE(std::isnan(summarize_afr(s, 2, 1, 100.0).pacc));  // empty subset
  EXPECT_EQ(afr_summary_json(sum)["benchmark"], "afr");
  EXPECT_EQ(default_pacc_layer(32), 14);
  EXPECT_EQ(default_pacc_layer(4), 2);
  EXPECT_EQ(default_pacc_layer(1), 0);
}

TEST(AfrRecords, WorldAndTextVqaRecords) {
  const auto recs = read_afr_records(world_mini("eval/afr.jsonl"), BboxFormat::Xyxy);
  ASSERT_EQ(recs.size(), 9u);
  EXPECT_EQ(recs[0].question, "Is there a yellow square in the image?");
  EXPECT_TRUE(recs[0].label_yes.value());
  EXPECT_EQ(recs[0].bbox, (std::array<double, 4>{88, 77, 127, 116}));
  EXPECT_DOUBLE_EQ(afr_answer_accuracy(recs[0], "Yes, there is a large yellow square in the center."), 1.0);
  EXPECT_DOUBLE_EQ(afr_answer_accuracy(recs[0], "No, I see a blue star, but no yellow square."), 0.0);

  const std::string dir = test::scratch_dir("afr-records");
  std::ofstream(dir + "/tv.jsonl")
      << R"({"question_id": 7, "image": "x.jpg", "question": "what brand?", "answers": ["coca cola", "coca-cola", "Coca Cola", "pepsi", "coke", "coca cola", "cola", "coca cola", "coke", "coke"], "bbox": [10, 20, 30, 40]})"
      << "\n";
  const auto tv = read_afr_records(dir + "/tv.jsonl", BboxFormat::Xywh);
  ASSERT_EQ(tv.size(), 1u);
  EXPECT_EQ(tv[0].bbox, (std::array<double, 4>{10, 20, 40, 60}));
  // 5 of 10 normalise to "coca cola" (the hyphen becomes a space): 1.0.
  EXPECT_DOUBLE_EQ(afr_answer_accuracy(tv[0], "Coca-Cola"), 1.0);
  EXPECT_NEAR(afr_answer_accuracy(tv[0], "coke"), 0.9, 1e-12);

  std::ofstream(dir + "/bad.jsonl") << R"({"question_id": 1, "image": "x.jpg", "text": "q", "bbox": [0, 0, 5, 5]})" << "\n";
  const auto no_truth = test::error_of([&] { read_afr_records(dir + "/bad.jsonl", BboxFormat::Xyxy); });
  EXPECT_NE(no_truth.find("answers"), std::string::npos) << no_truth;
  std::ofstream(dir + "/empty.jsonl") << R"({"question_id": 1, "image": "x.jpg", "text": "q", "label": "yes", "bbox": [5, 0, 5, 5]})" << "\n";
  const auto empty = test::error_of([&] { read_afr_records(dir + "/empty.jsonl", BboxFormat::Xyxy); });
  EXPECT_NE(empty.find("empty"), std::string::npos) << empty;
}

TEST(AfrRun, WorldModelOnThreeScenes) {
  auto model = models::load_model(world_model_dir());
  AfrRunOptions opts;
  opts.records_path = world_mini("eval/afr.jsonl");
  opts.images_dir = world_mini("images/eval");
  opts.out_dir = test::scratch_dir("afr-run");
  opts.processor = image::load_clip_processor_config(world_model_dir() + "/preprocessor_config.json");
  opts.prompt_template = world_prompt_template(world_mini("world.json"));
  opts.max_new_tokens = 24;
  opts.batch_size = 4;
  opts.keep_maps = 2;
  opts.pacc_threshold = std::nullopt;
  opts.model_id = "base";
  opts.progress = false;
  const auto r = run_afr(*model, opts);
  const int L = model->info().num_layers;
  ASSERT_EQ(r.samples.size(), 9u);
  EXPECT_EQ(r.summary.grid_h, 8);  // 96 px / 12 px patches
  EXPECT_EQ(r.summary.grid_w, 8);
  EXPECT_EQ(r.summary.pacc_layer, default_pacc_layer(L));
  EXPECT_EQ(r.summary.dropped, 0);  // world objects lie in the central square
  ASSERT_EQ(r.results["afr_per_layer"].size(), static_cast<size_t>(L));
  ASSERT_EQ(r.results["image_attention_share_per_layer"].size(), static_cast<size_t>(L));
  for (int l = 0; l < L; ++l) {
    EXPECT_GT(r.summary.afr_per_layer[static_cast<size_t>(l)], 0.0);
    const double share = r.summary.image_share_per_layer[static_cast<size_t>(l)];
    EXPECT_GT(share, 0.0);
    EXPECT_LT(share, 1.0);
  }
  EXPECT_GE(r.summary.accuracy, 0.0);
  EXPECT_LE(r.summary.accuracy, 100.0);
  EXPECT_GE(r.summary.pacc_n, 1);  // some record beats the mean
  for (const auto& s : r.samples) EXPECT_GE(s.queries, 2);  // the last prompt token + at least one answer token
  EXPECT_EQ(r.results["benchmark"], "afr");
  ASSERT_TRUE(r.results.contains("by_size"));
  const auto rows = io::read_jsonl_file(opts.out_dir + "/afr_samples.jsonl");
  ASSERT_EQ(rows.size(), 9u);
  ASSERT_TRUE(rows[0].contains("map_pacc_layer"));
  EXPECT_FALSE(rows[2].contains("map_pacc_layer"));

  // Row 0 of the prompt+answer pass is the prompt's last token: the same map as a prompt-only pass.
  const auto img = image::decode_image_file(opts.images_dir + "/" + rows[0]["image"].get<std::string>());
  const auto prepared = model->prepare_image(img);
  const std::string prompt = io::read_jsonl_file(r.answers_path)[0]["prompt"].get<std::string>();
  const auto alone = infer::attention_to_images(*model, {prepared}, model->tokenize_prompt(prompt, {prepared}),
                                                {r.summary.pacc_layer}, {-1});
  const auto expected = alone.maps.at(r.summary.pacc_layer).select(0, 0);
  const auto kept = rows[0]["map_pacc_layer"].get<std::vector<float>>();
  ASSERT_EQ(kept.size(), 64u);
  for (size_t i = 0; i < kept.size(); ++i) EXPECT_NEAR(kept[i], expected[static_cast<int64_t>(i)].item<float>(), 1e-5);

  // Accuracy alone from the answers file agrees with the run.
  std::vector<std::string> warnings;
  const auto acc = score_afr_answers(read_afr_records(opts.records_path, BboxFormat::Xyxy), r.answers_path, warnings);
  EXPECT_NEAR(acc["accuracy"].get<double>(), r.summary.accuracy, 1e-9);
  EXPECT_TRUE(warnings.empty());
}

}  // namespace
}  // namespace p2dpo::eval
