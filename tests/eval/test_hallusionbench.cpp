// HallusionBench: the official question file, VLMEvalKit's rule-based yes/no extraction, the official
// aggregation under both protocols (hand-made answers with hand-computed metrics, the official sample
// result), malformed input, and a run on the tiny LLaVA with resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "eval/bench_runner.h"
#include "eval/hallusionbench.h"
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

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void expect_acc(const HbAccuracy& a, int64_t correct, int64_t total, const char* what) {
  EXPECT_EQ(a.correct, correct) << what;
  EXPECT_EQ(a.total, total) << what;
}

const std::string kTiny = "eval/hallusionbench/tiny/HallusionBench_tiny.json";

}  // namespace

TEST(HallusionBenchExtraction, YesNoRule) {
  EXPECT_EQ(yorn_extract("Yes, they are the same."), YesNo::Yes);
  EXPECT_EQ(yorn_extract("No."), YesNo::No);
  EXPECT_EQ(yorn_extract("YES!"), YesNo::Yes) << "lower-cased; '!' without a space beside it becomes a space";
  EXPECT_EQ(yorn_extract("The answer is: No"), YesNo::No) << "':' is not in the punctuation list";
  EXPECT_EQ(yorn_extract("Yes and no"), YesNo::Unknown);
  EXPECT_EQ(yorn_extract("yes/no"), YesNo::Unknown) << "'/' becomes a space: both words";
  EXPECT_EQ(yorn_extract("Not sure"), YesNo::Unknown) << "'not' is not 'no'";
  EXPECT_EQ(yorn_extract("yes-no question"), YesNo::Unknown);
  EXPECT_EQ(yorn_extract("Yes\tthe\nline"), YesNo::Yes) << "split() splits on every whitespace run";
  EXPECT_EQ(yorn_extract(""), YesNo::Unknown);
  EXPECT_EQ(yorn_extract("no.5"), YesNo::Unknown) << "a period before a digit stays";
  // process_punctuation details (spec §4.3).
  EXPECT_EQ(hb_process_punctuation("yes, it is (a) cat."), "yes it is a cat") << "\", \", \" (\" and \") \" occur: removed";
  EXPECT_EQ(hb_process_punctuation("a,b"), "a b") << "no space beside ',': replaced by a space";
  EXPECT_EQ(hb_process_punctuation("1,000 (x)"), "1000 x") << "digit,digit anywhere: every mark removed";
  EXPECT_EQ(hb_process_punctuation("3. no"), "3. no") << "current rule: a period after a digit stays";
  EXPECT_EQ(hb_process_punctuation("3. no", true), "3 no") << "old rule: only a following digit protects it";
  EXPECT_EQ(hb_process_punctuation(std::string(33, '.')), ".") << "re.UNICODE as count: at most 32 removals";
}

TEST(HallusionBenchData, OfficialFileCounts) {
  const auto rows = read_hallusionbench(data_path("eval/hallusionbench/HallusionBench.json"));
  ASSERT_EQ(rows.size(), 1129u);
  // Spec §4.1: visual_input 0/1/2 = 178/447/504, VD 591, gt yes 484.
  int64_t no_image = 0, vd = 0, yes = 0;
  for (const auto& r : rows) {
    no_image += !hb_has_image(r);
    vd += r.category == "VD";
    yes += r.gt_answer == "1";
  }
  EXPECT_EQ(no_image, 178);
  EXPECT_EQ(vd, 591);
  EXPECT_EQ(yes, 484);
  EXPECT_EQ(rows[0].filename, std::nullopt);
  EXPECT_EQ(hb_row_key(rows[0]), "VS_chart_0_0_0");
  const auto with_image = hb_select_rows(rows, HbProtocol::VlmEvalKit, 0, "");
  EXPECT_EQ(with_image.size(), 951u);
  EXPECT_EQ(hb_select_rows(rows, HbProtocol::Official, 0, "").size(), 1129u);
  EXPECT_EQ(hb_select_rows(rows, HbProtocol::VlmEvalKit, 5, "").size(), 5u);
  for (const auto& r : with_image) {
    if (!r.filename) continue;
    EXPECT_EQ(hb_image_relpath(r), r.category + "/" + r.subcategory + "/" + r.set_id + "_" + r.figure_id + ".png");
  }

  // Answering every question correctly: the group and figure counts of both protocols (spec §4.4:
  // 455 question groups and 346 figures in both).
  std::vector<HbAnswer> perfect;
  for (const auto& r : rows) {
    HbAnswer a;
    a.category = r.category, a.subcategory = r.subcategory, a.set_id = r.set_id, a.figure_id = r.figure_id;
    a.question_id = r.question_id;
    a.model_prediction = r.gt_answer == "1" ? "Yes" : "No";
    a.file = "perfect";
    perfect.push_back(a);
  }
  const auto score = score_hallusionbench(rows, perfect);
  expect_acc(score.official.aacc, 1129, 1129, "official aAcc");
  expect_acc(score.official.qacc, 455, 455, "official qAcc");
  expect_acc(score.official.facc, 346, 346, "official fAcc");
  expect_acc(score.vlmevalkit.aacc, 951, 951, "vlmevalkit aAcc");
  expect_acc(score.vlmevalkit.qacc, 455, 455, "vlmevalkit qAcc");
  expect_acc(score.vlmevalkit.facc, 346, 346, "vlmevalkit fAcc");
  EXPECT_EQ(score.unanswered, 0);
  EXPECT_TRUE(score.warnings.empty());
}

TEST(HallusionBenchScore, HandMadeAnswers) {
  const auto bench = read_hallusionbench(data_path(kTiny));
  ASSERT_EQ(bench.size(), 4u);
  // Rows: (1) VD fig0 gt yes "Yes, they are the same." -> Yes, correct; (2) VD fig1 gt no "Yes." ->
  // wrong; (3) VS fig0 (no image) gt no "I cannot tell..." -> Unknown, code 2, correct because a VS
  // question without its figure may be unclear; (4) VS fig1 gt yes "No, it is not." -> wrong.
  const auto answers = read_hallusionbench_answers(data_path("eval/hallusionbench/tiny/hand_answers.json"));
  const auto s = score_hallusionbench(bench, answers);
  ASSERT_EQ(s.rows.size(), 4u);
  EXPECT_EQ(s.rows[2].code, '2');
  EXPECT_TRUE(s.rows[2].correct);
  // official (4 rows): aAcc 2/4; qAcc: VD group (1,0) and VS group (1,0) fail -> 0/2; fAcc over VD
  // fig0 (ok), VD fig1, VS fig1 (VS fig0 excluded) -> 1/3; easy = figure_id "0" rows (1, 3) -> 2/2
  // groups; hard (2, 4) -> 0/2.
  EXPECT_EQ(s.official.questions, 4);
  expect_acc(s.official.aacc, 2, 4, "aAcc");
  expect_acc(s.official.qacc, 0, 2, "qAcc");
  expect_acc(s.official.facc, 1, 3, "fAcc");
  expect_acc(s.official.easy_qacc, 2, 2, "easy");
  expect_acc(s.official.hard_qacc, 0, 2, "hard");
  expect_acc(s.official.aacc_by_category.at("VS"), 1, 2, "VS aAcc");
  EXPECT_DOUBLE_EQ(s.official.aacc.percent(), 50.0);
  // vlmevalkit (rows 1, 2, 4): aAcc 1/3; qAcc 0/2; fAcc 1/3; easy 1/1; hard 0/2.
  EXPECT_EQ(s.vlmevalkit.questions, 3);
  expect_acc(s.vlmevalkit.aacc, 1, 3, "aAcc");
  expect_acc(s.vlmevalkit.qacc, 0, 2, "qAcc");
  expect_acc(s.vlmevalkit.facc, 1, 3, "fAcc");
  expect_acc(s.vlmevalkit.easy_qacc, 1, 1, "easy");
  EXPECT_EQ(s.vlmevalkit.extracted_yes, 2);
  EXPECT_EQ(s.vlmevalkit.extracted_no, 1);
  EXPECT_EQ(s.vlmevalkit.extracted_unknown, 0);

  // JSONL with integer ids, row 4 now "YES!" (correct): official aAcc 3/4, qAcc 1/2 (the VS group:
  // row 3 unclear-but-correct and row 4), fAcc 2/3, hard 1/2; vlmevalkit aAcc 2/3, qAcc 1/2, fAcc 2/3.
  const auto s2 = score_hallusionbench(bench, read_hallusionbench_answers(data_path("eval/hallusionbench/tiny/hand_answers.jsonl")));
  expect_acc(s2.official.aacc, 3, 4, "aAcc");
  expect_acc(s2.official.qacc, 1, 2, "qAcc");
  expect_acc(s2.official.facc, 2, 3, "fAcc");
  expect_acc(s2.official.hard_qacc, 1, 2, "hard");
  expect_acc(s2.vlmevalkit.aacc, 2, 3, "aAcc");
  expect_acc(s2.vlmevalkit.qacc, 1, 2, "qAcc");
  expect_acc(s2.vlmevalkit.facc, 2, 3, "fAcc");

  // The results document carries both protocols, headline first, and the mode.
  const auto doc = hb_results_document(s2, HbProtocol::Official, {}, nlohmann::json::object());
  EXPECT_EQ(doc["results"].begin().key(), "official");
  EXPECT_EQ(doc["results"]["vlmevalkit"]["aAcc"]["correct"], 2);
  EXPECT_TRUE(contains(doc["correctness"].get<std::string>(), "rule-based"));
  EXPECT_TRUE(contains(format_hb_table(s2, HbProtocol::VlmEvalKit), "66.67 (2/3)"));
}

TEST(HallusionBenchScore, JudgeCodes) {
  const auto bench = read_hallusionbench(data_path(kTiny));
  const std::string dir = scratch_dir("hb_judge");
  const std::string path = dir + "/judged.json";
  // Codes 1, 0, 2, 2: the VS no-figure "2" counts as correct, the VS fig1 "2" does not.
  write(path, R"([{"category":"VD","subcategory":"illusion","set_id":"0","figure_id":"0","question_id":"0","model_prediction":"x","check":"1"},
{"category":"VD","subcategory":"illusion","set_id":"0","figure_id":"1","question_id":"0","model_prediction":"x","check":"0"},
{"category":"VS","subcategory":"chart","set_id":"0","figure_id":"0","question_id":"0","model_prediction":"x","check":"2"},
{"category":"VS","subcategory":"chart","set_id":"0","figure_id":"1","question_id":"0","model_prediction":"x","check":"2"}])");
  HbScoreOptions opts;
  opts.use_judge_codes = true;
  const auto s = score_hallusionbench(bench, read_hallusionbench_answers(path, "model_prediction", "check"), opts);
  expect_acc(s.official.aacc, 2, 4, "aAcc");
  expect_acc(s.vlmevalkit.aacc, 1, 3, "aAcc");
  EXPECT_EQ(s.official.extracted_unknown, 0) << "no extraction in judge mode";
}

TEST(HallusionBenchScore, OfficialSampleResult) {
  // The repository's HallusionBench_result_sample.json: 254 rows of an older release, without
  // gt_answer (taken from HallusionBench.json by key; 14 questions differ by a trailing space only).
  // Expected values: an independent Python transcription of VLMEvalKit's YOrN_Extraction and the
  // official utils.py aggregation run on the same two files (no published rule-based numbers exist
  // for the sample: the official script scores it with a GPT-4 judge).
  const auto bench = read_hallusionbench(data_path("eval/hallusionbench/HallusionBench.json"));
  const auto answers = read_hallusionbench_answers(data_path("eval/hallusionbench/HallusionBench_result_sample.json"));
  ASSERT_EQ(answers.size(), 254u);
  const auto s = score_hallusionbench(bench, answers);
  EXPECT_EQ(s.official.questions, 254);
  expect_acc(s.official.aacc, 155, 254, "official aAcc");
  expect_acc(s.official.qacc, 40, 117, "official qAcc");
  expect_acc(s.official.facc, 14, 69, "official fAcc");
  expect_acc(s.official.easy_qacc, 90, 117, "official easy");
  expect_acc(s.official.hard_qacc, 48, 117, "official hard");
  EXPECT_EQ(s.vlmevalkit.questions, 211);
  expect_acc(s.vlmevalkit.aacc, 115, 211, "vlmevalkit aAcc");
  expect_acc(s.vlmevalkit.qacc, 41, 117, "vlmevalkit qAcc");
  expect_acc(s.vlmevalkit.facc, 14, 69, "vlmevalkit fAcc");
  EXPECT_EQ(s.official.extracted_yes, 116);
  EXPECT_EQ(s.official.extracted_no, 89);
  EXPECT_EQ(s.official.extracted_unknown, 49);
  EXPECT_EQ(s.unanswered, 1129 - 254);
  // The 14 trailing-space differences vanish after strip(): the only warning is the unanswered rest.
  ASSERT_EQ(s.warnings.size(), 1u);
  EXPECT_TRUE(contains(s.warnings[0], "875 of 1129 benchmark questions have no answer (740 of them with an image)"))
      << s.warnings[0];
}

TEST(HallusionBenchErrors, MalformedInput) {
  const std::string dir = scratch_dir("hb_errors");
  const auto bench = read_hallusionbench(data_path(kTiny));
  auto msg = error_of([&] {
    write(dir + "/a.jsonl", "{\"category\":\"VD\",\"subcategory\":\"illusion\",\"set_id\":\"0\",\"figure_id\":\"0\","
                            "\"question_id\":\"0\",\"model_prediction\":\"Yes\"}\n{\"category\": \n");
    read_hallusionbench_answers(dir + "/a.jsonl");
  });
  EXPECT_TRUE(contains(msg, dir + "/a.jsonl")) << msg;
  EXPECT_TRUE(contains(msg, "line 2")) << msg;
  msg = error_of([&] {
    write(dir + "/b.json", R"([{"category":"VD","subcategory":"illusion","set_id":"0","question_id":"0","model_prediction":"Yes"}])");
    read_hallusionbench_answers(dir + "/b.json");
  });
  EXPECT_TRUE(contains(msg, dir + "/b.json: element 1: missing required field 'figure_id'")) << msg;
  msg = error_of([&] {
    write(dir + "/c.json", R"([{"category":"VD","subcategory":"illusion","set_id":"0","figure_id":"0","question_id":"0","model_prediction":7}])");
    read_hallusionbench_answers(dir + "/c.json");
  });
  EXPECT_TRUE(contains(msg, "element 1: field 'model_prediction': expected string, got integer")) << msg;
  msg = error_of([&] {
    write(dir + "/d.json", R"([{"category":"VD","subcategory":"illusion","set_id":"9","figure_id":"0","question_id":"0","model_prediction":"Yes"}])");
    score_hallusionbench(bench, read_hallusionbench_answers(dir + "/d.json"));
  });
  EXPECT_TRUE(contains(msg, dir + "/d.json: row 1: no HallusionBench question has the key VD_illusion_9_0_0")) << msg;
  msg = error_of([&] {
    const std::string row = R"({"category":"VD","subcategory":"illusion","set_id":"0","figure_id":"0","question_id":"0","model_prediction":"Yes"})";
    write(dir + "/e.json", "[" + row + "," + row + "]");
    score_hallusionbench(bench, read_hallusionbench_answers(dir + "/e.json"));
  });
  EXPECT_TRUE(contains(msg, "row 2: question VD_illusion_0_0_0 answered twice (also row 1")) << msg;
  msg = error_of([&] {
    write(dir + "/f.json", R"([{"category":"VD","subcategory":"illusion","set_id":"0","figure_id":"0","question_id":"0","model_prediction":"Yes","gt_answer":"0"}])");
    score_hallusionbench(bench, read_hallusionbench_answers(dir + "/f.json"));
  });
  EXPECT_TRUE(contains(msg, "field 'gt_answer' is \"0\" but the benchmark says \"1\"")) << msg;
  msg = error_of([&] {
    write(dir + "/bench.json", R"([{"category":"VD","subcategory":"illusion","visual_input":"1","set_id":"0","figure_id":"0","question_id":"0","question":"Q?","gt_answer":"yes"}])");
    read_hallusionbench(dir + "/bench.json");
  });
  EXPECT_TRUE(contains(msg, dir + "/bench.json: element 1: field 'gt_answer': expected \"0\" or \"1\", got \"yes\"")) << msg;
  msg = error_of([&] {
    write(dir + "/bench2.json", R"([{"category":"VD","subcategory":"illusion","visual_input":"1","set_id":"0","figure_id":"0","question_id":"0","gt_answer":"1"}])");
    read_hallusionbench(dir + "/bench2.json");
  });
  EXPECT_TRUE(contains(msg, "element 1: missing required field 'question'")) << msg;
  msg = error_of([&] { hb_select_rows(bench, HbProtocol::Official, 0, dir); });
  EXPECT_TRUE(contains(msg, "image not found (question VD_illusion_0_0_0")) << msg;
  msg = error_of([] { parse_hb_protocol("lmms", "--protocol"); });
  EXPECT_TRUE(contains(msg, "--protocol: unknown protocol 'lmms'")) << msg;
}

TEST(HallusionBenchPrompt, Templates) {
  const std::string t = bench_conv_template("llava_v1");
  EXPECT_EQ(bench_prompt(t, "Is it red?", true),
            "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the human's questions. USER: <image>\nIs it red? ASSISTANT:");
  EXPECT_EQ(bench_prompt(t, "Is it red?", false),
            "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the human's questions. USER: Is it red? ASSISTANT:");
  // VLMEvalKit's LLaVA wrapper (spec §4.2): two spaces after "USER:", trailing space.
  EXPECT_TRUE(contains(bench_prompt(bench_conv_template("vlmevalkit"), "Q?", true), "questions. USER:  <image> Q? ASSISTANT: "));
  auto msg = error_of([] { bench_conv_template("chatml"); });
  EXPECT_TRUE(contains(msg, "--conv-mode: unknown mode 'chatml'")) << msg;
  msg = error_of([] { check_bench_template("USER: {question} ASSISTANT:", "--prompt-template"); });
  EXPECT_TRUE(contains(msg, "found 1 and 0")) << msg;
}

TEST(HallusionBenchRunner, TinyModelEndToEndAndResume) {
  static auto model = p2dpo::models::load_model(data_path("llava-tiny-s0"));
  const std::string out = scratch_dir("hb_run");
  HbRunOptions o;
  o.benchmark_path = data_path(kTiny);
  o.images_dir = data_path("eval/hallusionbench/tiny/images");
  o.out_dir = out;
  o.protocol = HbProtocol::Official;  // all four rows, one without an image
  o.conv_mode = "hf";
  o.max_new_tokens = 4;
  o.batch_size = 2;
  o.model_id = "llava-tiny-s0";
  o.progress = false;
  const auto first = run_hallusionbench(*model, o);
  EXPECT_EQ(first.generated, 4);
  const auto lines = lines_of(first.answers_path);
  ASSERT_EQ(lines.size(), 4u);
  const auto rec = nlohmann::json::parse(lines[2]);
  EXPECT_EQ(rec["visual_input"], "0");
  EXPECT_EQ(rec["prompt"], "USER: Did the shop sell more than ten books in 2020? ASSISTANT:") << "asked without an image";
  EXPECT_TRUE(rec["model_prediction"].is_string());
  EXPECT_EQ(nlohmann::json::parse(lines[0])["prompt"], "USER: <image>\nIs the square yellow? ASSISTANT:");
  EXPECT_EQ(first.score.official.questions, 4);
  EXPECT_EQ(first.score.vlmevalkit.questions, 3);
  const auto official = p2dpo::io::read_json_file(out + "/HallusionBench_result.json");
  ASSERT_EQ(official.size(), 4u);
  EXPECT_EQ(official[3]["model_prediction"], nlohmann::json::parse(lines[3])["model_prediction"]);
  const auto results = p2dpo::io::read_json_file(out + "/results.json");
  EXPECT_EQ(results["results"]["official"]["aAcc"]["total"], 4);

  // Resume: cut the file after the first record (and leave a torn line): the rerun answers the rest
  // and the file ends up byte-identical.
  const std::string full = [&] {
    std::ifstream in(first.answers_path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  write(first.answers_path, lines[0] + "\n" + lines[1].substr(0, 10));
  const auto second = run_hallusionbench(*model, o);
  EXPECT_EQ(second.generated, 3);
  std::ifstream in(first.answers_path, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), full);
  EXPECT_EQ(run_hallusionbench(*model, o).generated, 0) << "nothing left to answer";

  // The image-only selection reuses the same answers (no new generation) and scores 3 rows.
  o.protocol = HbProtocol::VlmEvalKit;
  const auto image_only = run_hallusionbench(*model, o);
  EXPECT_EQ(image_only.generated, 0);
  EXPECT_EQ(image_only.score.official.questions, 3);

  // A different protocol is refused, naming the run record.
  o.max_new_tokens = 5;
  const auto msg = error_of([&] { run_hallusionbench(*model, o); });
  EXPECT_TRUE(contains(msg, "hallusionbench.jsonl.run.json: the answers beside it were written with max_new_tokens = 4"))
      << msg;
}
