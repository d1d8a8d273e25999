// The POPE runner end to end on the tiny random LLaVA (its answers are garbage; the pipeline must
// still produce answers files and results), resume after an interruption, and bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "eval/pope_runner.h"
#include "io/atomic_file.h"
#include "io/json_io.h"
#include "models/load.h"
#include "test_paths.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace p2dpo::eval;
using p2dpo::test::data_path;
using p2dpo::test::error_of;
using p2dpo::test::scratch_dir;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

p2dpo::models::VisionLanguageModel& tiny_model() {
  static auto model = p2dpo::models::load_model(data_path("llava-tiny-s0"));
  return *model;
}

PopeRunOptions tiny_options(const std::string& out) {
  PopeRunOptions o;
  o.question_files = {data_path("pope/tiny/tiny_pope_random.json"), data_path("pope/tiny/tiny_pope_adversarial.json")};
  o.images_dir = data_path("llava-tiny-s0");
  o.out_dir = out;
  o.conv_mode = "hf";
  o.max_new_tokens = 6;
  o.batch_size = 3;
  o.model_id = "llava-tiny-s0";
  o.progress = false;
  return o;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEST(PopePrompt, TemplatesAndSuffix) {
  const std::string q = pope_question_text("Is there a snowboard in the image?", kPopeAnswerSuffix);
  EXPECT_EQ(q, "Is there a snowboard in the image?\nAnswer the question using a single word or phrase.");
  EXPECT_EQ(pope_question_text(q, kPopeAnswerSuffix), q) << "LLaVA's question file already has the suffix";
  EXPECT_EQ(pope_question_text("Is there a cat?", ""), "Is there a cat?");
  // The exact prompt of evaluation spec §1.1 (vicuna_v1, POPE example).
  EXPECT_EQ(pope_fill_template(pope_conv_template("vicuna_v1"), q),
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the user's questions. USER: <image>\nIs there a snowboard in the "
            "image?\nAnswer the question using a single word or phrase. ASSISTANT:");
  EXPECT_EQ(pope_conv_template("llava_v1").rfind("A chat between a curious human", 0), 0u);
  EXPECT_EQ(pope_fill_template("USER: {question}\n<image> ASSISTANT:", "Q?"), "USER: Q?\n<image> ASSISTANT:");
  auto msg = error_of([] { pope_conv_template("vicuna_v2"); });
  EXPECT_TRUE(contains(msg, "--conv-mode: unknown mode 'vicuna_v2'")) << msg;
  msg = error_of([] { check_pope_template("USER: <image> ASSISTANT:", "--prompt-template"); });
  EXPECT_TRUE(contains(msg, "--prompt-template: the template needs exactly one {question} and one <image>, found 0 and 1"))
      << msg;
  msg = error_of([] { check_pope_template("{question} <image><image>", "--prompt-template"); });
  EXPECT_TRUE(contains(msg, "found 1 and 2")) << msg;
  EXPECT_EQ(parse_noise_mode("tensor", "--noise-mode"), NoiseMode::Tensor);
  msg = error_of([] { parse_noise_mode("gauss", "--noise-mode"); });
  EXPECT_TRUE(contains(msg, "--noise-mode: unknown noise mode 'gauss'")) << msg;
}

TEST(PopeRunner, TinyModelEndToEnd) {
  auto out = scratch_dir("pope_run_e2e");
  auto opts = tiny_options(out);
  opts.sigmas = {0.0, 0.2};
  auto result = run_pope(tiny_model(), opts);

  ASSERT_EQ(result.answer_files.size(), 4u);  // 2 question files x 2 levels
  EXPECT_EQ(result.answer_files[0], out + "/answers/tiny_pope_random.clean.jsonl");
  EXPECT_EQ(result.answer_files[1], out + "/answers/tiny_pope_random.pixel-sigma0.2.jsonl");
  EXPECT_TRUE(fs::exists(out + "/answers/tiny_pope_random.clean.jsonl.run.json"));
  const auto rows = p2dpo::io::read_jsonl_file(result.answer_files[1]);
  ASSERT_EQ(rows.size(), 7u);
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i]["question_id"], static_cast<int64_t>(i + 1)) << "question order";
    EXPECT_TRUE(rows[i]["text"].is_string());
    EXPECT_EQ(rows[i]["split"], "random");
    EXPECT_EQ(rows[i]["sigma"], 0.2);
    EXPECT_EQ(rows[i]["noise"], "pixel");
    EXPECT_EQ(rows[i]["model_id"], "llava-tiny-s0");
  }
  EXPECT_EQ(rows[0]["label"], "yes");
  EXPECT_EQ(rows[0]["size"], "large");
  EXPECT_EQ(rows[0]["prompt"], "Is there a yellow square in the image?\nAnswer the question using a single word or phrase.");
  EXPECT_FALSE(rows[1].contains("size"));

  // Scores: two levels, each with both splits, every question answered.
  ASSERT_EQ(result.scores.size(), 2u);
  for (const auto& s : result.scores) {
    ASSERT_EQ(s.splits.size(), 2u);
    EXPECT_EQ(s.splits[0].split, "random");
    EXPECT_EQ(s.splits[0].metrics.counts.n(), 7);
    EXPECT_EQ(s.splits[1].split, "adversarial");
    EXPECT_EQ(s.splits[1].metrics.counts.n(), 4);
    EXPECT_EQ(s.splits[0].unanswered, 0);
    EXPECT_TRUE(*s.splits[0].positional_pairing_agrees);
    EXPECT_EQ(s.splits[0].by_size.at("small").tp + s.splits[0].by_size.at("small").fn, 2);
  }
  auto doc = p2dpo::io::read_json_file(out + "/results.json");
  EXPECT_EQ(doc, result.results);
  EXPECT_EQ(doc["benchmark"], "pope");
  EXPECT_EQ(doc["protocol"]["prompt_template"], "USER: <image>\n{question} ASSISTANT:");
  EXPECT_EQ(doc["protocol"]["conv_mode"], "hf");
  EXPECT_EQ(doc["protocol"]["noise"], "pixel");
  EXPECT_EQ(doc["protocol"]["sigmas"], (nlohmann::json{0.0, 0.2}));
  ASSERT_EQ(doc["results"].size(), 2u);
  EXPECT_EQ(doc["results"][1]["sigma"], 0.2);
  EXPECT_EQ(doc["results"][0]["splits"]["random"]["n"], 7);
  EXPECT_TRUE(doc["results"][0]["splits"]["random"].contains("recall_by_size"));

  // The answers file alone scores to the same numbers (it carries split, label, size and sigma).
  std::vector<std::string> warnings;
  auto alone = score_pope(read_pope_answers(result.answer_files[1]), {}, warnings);
  ASSERT_EQ(alone.size(), 1u);
  const auto alone_json = pope_scores_json(alone)[0]["splits"]["random"];
  const auto run_json = doc["results"][1]["splits"]["random"];
  for (const char* key : {"n", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "yes_ratio", "recall_by_size"})
    EXPECT_EQ(alone_json[key], run_json[key]) << key;
}

TEST(PopeRunner, SameSeedSameAnswersAndTensorNoiseRuns) {
  auto a = scratch_dir("pope_run_seed_a");
  auto b = scratch_dir("pope_run_seed_b");
  auto opts = tiny_options(a);
  opts.question_files = {data_path("pope/tiny/tiny_pope_adversarial.json")};
  opts.sigmas = {0.3};
  run_pope(tiny_model(), opts);
  opts.out_dir = b;
  run_pope(tiny_model(), opts);
  const std::string name = "/answers/tiny_pope_adversarial.pixel-sigma0.3.jsonl";
  EXPECT_EQ(p2dpo::io::read_file(a + name), p2dpo::io::read_file(b + name));

  auto t = scratch_dir("pope_run_tensor");
  opts.out_dir = t;
  opts.noise_mode = NoiseMode::Tensor;
  auto result = run_pope(tiny_model(), opts);
  ASSERT_EQ(result.answer_files.size(), 1u);
  EXPECT_EQ(result.answer_files[0], t + "/answers/tiny_pope_adversarial.tensor-sigma0.3.jsonl");
  EXPECT_EQ(lines_of(result.answer_files[0]).size(), 4u);
  EXPECT_EQ(result.results["results"][0]["noise"], "tensor");
}

// An interrupted run (some answers written, the last line torn mid-write) resumes to the very
// bytes of an uninterrupted one, for cuts inside a batch and at a batch boundary.
TEST(PopeRunner, ResumeGivesTheSameFileAsAnUninterruptedRun) {
  auto full_dir = scratch_dir("pope_resume_full");
  auto opts = tiny_options(full_dir);
  opts.question_files = {data_path("pope/tiny/tiny_pope_random.json")};
  opts.sigmas = {0.1};
  auto full = run_pope(tiny_model(), opts);
  const std::string rel = "/answers/tiny_pope_random.pixel-sigma0.1.jsonl";
  const std::string expected = p2dpo::io::read_file(full_dir + rel);
  const auto lines = lines_of(full_dir + rel);
  ASSERT_EQ(lines.size(), 7u);

  for (size_t keep : {size_t{0}, size_t{2}, size_t{3}, size_t{6}}) {
    SCOPED_TRACE(keep);
    auto dir = scratch_dir("pope_resume_" + std::to_string(keep));
    std::string partial;
    for (size_t i = 0; i < keep; ++i) partial += lines[i] + "\n";
    partial += lines[keep].substr(0, lines[keep].size() / 2);  // torn line, no newline
    p2dpo::io::write_file_atomic(dir + rel, partial);
    fs::copy_file(full_dir + rel + ".run.json", dir + rel + ".run.json");
    opts.out_dir = dir;
    auto resumed = run_pope(tiny_model(), opts);
    EXPECT_EQ(p2dpo::io::read_file(dir + rel), expected);
    EXPECT_EQ(resumed.results["results"][0]["splits"], full.results["results"][0]["splits"]);
  }

  // A complete file: nothing to run, nothing appended.
  opts.out_dir = full_dir;
  run_pope(tiny_model(), opts);
  EXPECT_EQ(p2dpo::io::read_file(full_dir + rel), expected);

  // --limit on top of a longer run: the extra answers stay in the file but are not scored.
  opts.limit = 3;
  auto limited = run_pope(tiny_model(), opts);
  EXPECT_EQ(p2dpo::io::read_file(full_dir + rel), expected);
  EXPECT_EQ(limited.scores.at(0).splits.at(0).metrics.counts.n(), 3);
  EXPECT_TRUE(limited.warnings.empty());
}

TEST(PopeRunner, RefusesToResumeUnderAnotherProtocol) {
  auto dir = scratch_dir("pope_resume_protocol");
  auto opts = tiny_options(dir);
  opts.question_files = {data_path("pope/tiny/tiny_pope_adversarial.json")};
  opts.limit = 1;
  run_pope(tiny_model(), opts);
  opts.prompt_template = "USER: {question}\n<image> ASSISTANT:";
  auto msg = error_of([&] { run_pope(tiny_model(), opts); });
  EXPECT_TRUE(contains(msg, "tiny_pope_adversarial.clean.jsonl.run.json: the answers beside it were written with "
                            "prompt_template = ")) << msg;
  EXPECT_TRUE(contains(msg, "use another --out")) << msg;

  // An answers file without its run record.
  auto bare = scratch_dir("pope_resume_bare");
  p2dpo::io::write_file_atomic(bare + "/answers/tiny_pope_adversarial.clean.jsonl", "{\"question_id\": 1, \"text\": \"No\"}\n");
  opts.out_dir = bare;
  msg = error_of([&] { run_pope(tiny_model(), opts); });
  EXPECT_TRUE(contains(msg, "exists without its run record")) << msg;
}

TEST(PopeRunner, BadInput) {
  auto dir = scratch_dir("pope_run_bad");
  auto opts = tiny_options(dir);

  // A question whose image is missing: named with the question and its file, before any model work.
  const std::string qfile = dir + "/q_pope_random.json";
  p2dpo::io::write_file_atomic(qfile,
                               "{\"question_id\": 1, \"image\": \"image0.png\", \"text\": \"Is there a cat?\", \"label\": \"no\"}\n"
                               "{\"question_id\": 2, \"image\": \"nope.png\", \"text\": \"Is there a dog?\", \"label\": \"no\"}\n");
  opts.question_files = {qfile};
  auto msg = error_of([&] { run_pope(tiny_model(), opts); });
  EXPECT_TRUE(contains(msg, data_path("llava-tiny-s0") + "/nope.png: image not found (question_id 2, " + qfile + " line 2"))
      << msg;
  EXPECT_FALSE(fs::exists(dir + "/answers")) << "nothing written before the inputs are checked";

  // An answers file holding a question of another question file.
  opts.question_files = {data_path("pope/tiny/tiny_pope_adversarial.json")};
  run_pope(tiny_model(), opts);
  const std::string answers = dir + "/answers/tiny_pope_adversarial.clean.jsonl";
  {
    std::ofstream app(answers, std::ios::app);
    app << "{\"question_id\": 77, \"text\": \"No\", \"split\": \"adversarial\"}\n";
  }
  msg = error_of([&] { run_pope(tiny_model(), opts); });
  EXPECT_TRUE(contains(msg, answers + ": line 5: question_id 77 (split 'adversarial') is not in")) << msg;

  // A malformed line in the middle of an answers file.
  p2dpo::io::write_file_atomic(answers, "{\"question_id\": 1, \"text\": \"No\", \"split\": \"adversarial\"}\n{oops\n"
                                        "{\"question_id\": 2, \"text\": \"No\", \"split\": \"adversarial\"}\n");
  msg = error_of([&] { run_pope(tiny_model(), opts); });
  EXPECT_TRUE(contains(msg, answers + ": line 2: malformed JSON")) << msg;

  // Flags.
  opts.out_dir = scratch_dir("pope_run_bad_flags");
  opts.question_files = {data_path("pope/tiny/tiny_pope_random.json"), dir + "/tiny_pope_random.json"};
  msg = error_of([&] { run_pope(tiny_model(), opts); });
  EXPECT_TRUE(contains(msg, "--questions: two question files are named tiny_pope_random.*")) << msg;
  opts.question_files = {data_path("pope/tiny/tiny_pope_adversarial.json")};
  opts.sigmas = {-0.1};
  msg = error_of([&] { run_pope(tiny_model(), opts); });
  EXPECT_TRUE(contains(msg, "--noise-sigma: -0.1 is not a finite sigma >= 0")) << msg;
  opts.sigmas = {0.0};
  opts.batch_size = 0;
  msg = error_of([&] { run_pope(tiny_model(), opts); });
  EXPECT_TRUE(contains(msg, "--batch-size: must be >= 1")) << msg;
  opts.batch_size = 2;
  opts.prompt_template = "{question} ASSISTANT:";
  msg = error_of([&] { run_pope(tiny_model(), opts); });
  EXPECT_TRUE(contains(msg, "--prompt-template: the template needs exactly one {question} and one <image>")) << msg;
}

TEST(PopeRunner, LlavaStyleQuestionsTakeLabelsFromLabelFiles) {
  // LLaVA's layout in miniature: one question file with "category" and the suffix already in the
  // text, labels in per-split files paired by position.
  auto dir = scratch_dir("pope_run_llava_style");
  const std::string suffix = "\\nAnswer the question using a single word or phrase.";
  p2dpo::io::write_file_atomic(
      dir + "/llava_pope_test.jsonl",
      "{\"question_id\": 1, \"image\": \"image0.png\", \"text\": \"Is there a yellow square in the image?" + suffix +
          "\", \"category\": \"adversarial\"}\n"
          "{\"question_id\": 10000001, \"image\": \"image1.png\", \"text\": \"Is there a blue circle in the image?" +
          suffix + "\", \"category\": \"random\"}\n");
  p2dpo::io::write_file_atomic(dir + "/coco_pope_adversarial.json",
                               "{\"question_id\": 1, \"image\": \"image0.png\", \"text\": \"Is there a yellow square in the image?\", \"label\": \"yes\"}\n");
  p2dpo::io::write_file_atomic(dir + "/coco_pope_random.json",
                               "{\"question_id\": 1, \"image\": \"image1.png\", \"text\": \"Is there a blue circle in the image?\", \"label\": \"no\"}\n");
  auto opts = tiny_options(dir + "/out");
  opts.question_files = {dir + "/llava_pope_test.jsonl"};
  auto msg = error_of([&] { run_pope(tiny_model(), opts); });
  EXPECT_TRUE(contains(msg, "has no label; give the split's label file with --labels")) << msg;
  opts.label_files = {dir + "/coco_pope_adversarial.json", dir + "/coco_pope_random.json"};
  auto result = run_pope(tiny_model(), opts);
  auto rows = p2dpo::io::read_jsonl_file(result.answer_files.at(0));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["label"], "yes");
  EXPECT_EQ(rows[1]["label"], "no");
  EXPECT_EQ(rows[1]["split"], "random");
  EXPECT_EQ(rows[1]["prompt"], "Is there a blue circle in the image?\nAnswer the question using a single word or phrase.")
      << "the suffix is not doubled";
  ASSERT_EQ(result.scores.at(0).splits.size(), 2u);
}
