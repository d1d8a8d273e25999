// POPE scoring: the official parsing rules, metrics, LLaVA-1.5-13B's published numbers from its
// recorded answers, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "eval/pope.h"
#include "io/atomic_file.h"
#include "test_paths.h"
#include "test_util.h"

using namespace p2dpo::eval;
using p2dpo::test::data_path;
using p2dpo::test::error_of;
using p2dpo::test::scratch_dir;

namespace {

std::string write(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  p2dpo::io::write_file_atomic(path, text);
  return path;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST(PopeParse, OfficialRules) {
  // Plain answers.
  EXPECT_TRUE(pope_answer_is_yes("Yes"));
  EXPECT_FALSE(pope_answer_is_yes("No"));
  EXPECT_FALSE(pope_answer_is_yes("no"));
  EXPECT_FALSE(pope_answer_is_yes("No."));
  EXPECT_FALSE(pope_answer_is_yes("no."));
  // Case-sensitive exact tokens: "NO", "Not", "Nope" are yes.
  EXPECT_TRUE(pope_answer_is_yes("NO"));
  EXPECT_TRUE(pope_answer_is_yes("Not"));
  EXPECT_TRUE(pope_answer_is_yes("Nope"));
  EXPECT_FALSE(pope_answer_is_yes("I do not see one"));
  // Empty output is yes.
  EXPECT_TRUE(pope_answer_is_yes(""));
  // Only U+0020 splits: a newline glues "No" to the next word.
  EXPECT_TRUE(pope_answer_is_yes("No\nThere is a dog"));
  EXPECT_FALSE(pope_answer_is_yes("No\nThere is no dog.")) << "'no' is a token of the first sentence";
  EXPECT_TRUE(pope_answer_is_yes("No\tthere"));
  // Commas are deleted before splitting: "No," is "No"; "No,there" becomes "Nothere".
  EXPECT_FALSE(pope_answer_is_yes("No, there is not."));
  EXPECT_TRUE(pope_answer_is_yes("No,there"));
  EXPECT_FALSE(pope_answer_is_yes("There is a dog, no"));
  // Only the first sentence counts.
  EXPECT_TRUE(pope_answer_is_yes("Yes. No."));
  EXPECT_FALSE(pope_answer_is_yes("Yes there is no doubt. Yes."));
  EXPECT_TRUE(pope_answer_is_yes("3.5 no")) << "text before the first '.' is \"3\"";
  EXPECT_TRUE(pope_answer_is_yes(".no"));
  // Consecutive and leading spaces give empty tokens, which are harmless.
  EXPECT_FALSE(pope_answer_is_yes(" No"));
  EXPECT_FALSE(pope_answer_is_yes("Yes  no"));
  // Non-ASCII text is split bytewise the same way Python splits code points on ' '.
  EXPECT_FALSE(pope_answer_is_yes("Non, no"));
  EXPECT_TRUE(pope_answer_is_yes("Nö"));
}

TEST(PopeMetrics, HandCounts) {
  PopeCounts c;
  for (int i = 0; i < 3; ++i) c.add(true, true);    // tp
  c.add(false, true);                               // fp
  for (int i = 0; i < 4; ++i) c.add(false, false);  // tn
  for (int i = 0; i < 2; ++i) c.add(true, false);   // fn
  EXPECT_EQ(c.tp, 3);
  EXPECT_EQ(c.fp, 1);
  EXPECT_EQ(c.tn, 4);
  EXPECT_EQ(c.fn, 2);
  EXPECT_EQ(c.n(), 10);
  auto m = pope_metrics(c);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.7);
  EXPECT_DOUBLE_EQ(m.precision, 0.75);
  EXPECT_DOUBLE_EQ(m.recall, 0.6);
  EXPECT_DOUBLE_EQ(m.f1, 2 * 0.75 * 0.6 / 1.35);
  EXPECT_DOUBLE_EQ(m.yes_ratio, 0.4);
}

TEST(PopeMetrics, ZeroDenominatorsAreNaN) {
  PopeCounts all_no;
  all_no.tn = 5;
  all_no.fn = 5;
  auto m = pope_metrics(all_no);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.5);
  EXPECT_TRUE(std::isnan(m.precision));
  EXPECT_DOUBLE_EQ(m.recall, 0.0);
  EXPECT_TRUE(std::isnan(m.f1));
  EXPECT_DOUBLE_EQ(m.yes_ratio, 0.0);
  auto j = pope_metrics_json(m);
  EXPECT_TRUE(j["precision"].is_null());
  EXPECT_TRUE(j["f1"].is_null());
  EXPECT_EQ(j["n"], 10);
  auto empty = pope_metrics(PopeCounts{});
  EXPECT_TRUE(std::isnan(empty.accuracy));
  EXPECT_TRUE(std::isnan(empty.yes_ratio));
}

TEST(PopeFiles, SplitFromFileName) {
  EXPECT_EQ(pope_split_from_filename("/x/coco_pope_random.json"), "random");
  EXPECT_EQ(pope_split_from_filename("world_pope_adversarial.json"), "adversarial");
  EXPECT_EQ(pope_split_from_filename("a/popular.jsonl"), "popular");
  EXPECT_EQ(pope_split_from_filename("mine.json"), "mine");
  EXPECT_EQ(pope_split_from_filename("random_vs_popular.json"), "random_vs_popular");
}

// The must-show check: LLaVA-1.5-13B's recorded answers, scored against LLaVA's question file and
// the POPE label files it was evaluated on, give the published numbers (evaluation spec §2.4).
TEST(PopeGolden, LlavaV15_13bReproducesPublishedNumbers) {
  auto questions = read_pope_questions(data_path("pope/llava/llava_pope_test.jsonl"));
  ASSERT_EQ(questions.size(), 8910u);
  attach_pope_labels(questions, {data_path("pope/e3e3926/coco_pope_adversarial.json"),
                                 data_path("pope/e3e3926/coco_pope_popular.json"),
                                 data_path("pope/e3e3926/coco_pope_random.json")});
  auto answers = read_pope_answers(data_path("pope/llava/answers-llava-v1.5-13b.jsonl"));
  ASSERT_EQ(answers.size(), 8910u);
  std::vector<std::string> warnings;
  auto scores = score_pope(answers, questions, warnings);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  ASSERT_EQ(scores.size(), 1u);
  const auto& s = scores[0];
  EXPECT_EQ(s.noise, "none");
  EXPECT_EQ(s.sigma, 0.0);
  ASSERT_EQ(s.splits.size(), 3u);

  struct Expected {
    const char* split;
    int64_t n, tp, fp, tn, fn;
    double acc, prec, rec, f1, yes;
  };
  // evaluation spec §2.4 golden table (official eval_pope.py on the same files).
  const Expected expected[] = {
      {"random", 2910, 1182, 31, 1379, 318, 0.880069, 0.974444, 0.788, 0.871360, 0.416838},
      {"popular", 3000, 1182, 59, 1441, 318, 0.874333, 0.952458, 0.788, 0.862459, 0.413667},
      {"adversarial", 3000, 1182, 117, 1383, 318, 0.855, 0.909931, 0.788, 0.844587, 0.433},
  };
  for (size_t i = 0; i < 3; ++i) {
    const auto& e = expected[i];
    const auto& got = s.splits[i];
    SCOPED_TRACE(e.split);
    EXPECT_EQ(got.split, e.split);
    EXPECT_EQ(got.metrics.counts.n(), e.n);
    EXPECT_EQ(got.metrics.counts.tp, e.tp);
    EXPECT_EQ(got.metrics.counts.fp, e.fp);
    EXPECT_EQ(got.metrics.counts.tn, e.tn);
    EXPECT_EQ(got.metrics.counts.fn, e.fn);
    EXPECT_NEAR(got.metrics.accuracy, e.acc, 5e-7);
    EXPECT_NEAR(got.metrics.precision, e.prec, 5e-7);
    EXPECT_NEAR(got.metrics.recall, e.rec, 5e-7);
    EXPECT_NEAR(got.metrics.f1, e.f1, 5e-7);
    EXPECT_NEAR(got.metrics.yes_ratio, e.yes, 5e-7);
    EXPECT_EQ(got.unanswered, 0);
    ASSERT_TRUE(got.positional_pairing_agrees.has_value());
    EXPECT_TRUE(*got.positional_pairing_agrees);
  }
  EXPECT_NEAR(s.average.f1, 0.859469, 5e-7);
  EXPECT_EQ(std::round(s.average.f1 * 1000) / 10, 85.9) << "LLaVA-1.5 paper: POPE 85.9";
  EXPECT_EQ(s.average.counts.n(), 8910);

  auto table = format_pope_table(scores);
  EXPECT_TRUE(contains(table, "85.95")) << table;  // average F1 x100
  auto j = pope_scores_json(scores);
  EXPECT_EQ(j[0]["splits"]["random"]["tp"], 1182);
  EXPECT_EQ(j[0]["split_order"], (nlohmann::json{"random", "popular", "adversarial"}));
}

TEST(PopeGolden, LlavaQuestionFileWithoutLabelsIsRefused) {
  auto questions = read_pope_questions(data_path("pope/llava/llava_pope_test.jsonl"));
  auto answers = read_pope_answers(data_path("pope/llava/answers-llava-v1.5-13b.jsonl"));
  std::vector<std::string> warnings;
  auto msg = error_of([&] { score_pope(answers, questions, warnings); });
  EXPECT_TRUE(contains(msg, "llava_pope_test.jsonl")) << msg;
  EXPECT_TRUE(contains(msg, "has no label")) << msg;
  EXPECT_TRUE(contains(msg, "--labels")) << msg;
}

TEST(PopeGolden, LabelFileOfAnotherVersionIsRefused) {
  // POPE HEAD's random split has 3000 lines, LLaVA's 2910: positional pairing must not go ahead.
  auto dir = scratch_dir("pope_label_mismatch");
  auto questions = read_pope_questions(data_path("pope/llava/llava_pope_test.jsonl"));
  // A label file whose 2nd line names another image than the question file does.
  std::ifstream in(data_path("pope/e3e3926/coco_pope_adversarial.json"));
  std::string line, text;
  int n = 0;
  while (std::getline(in, line)) {
    if (++n == 2) line.replace(line.find("COCO_val2014_"), 13, "COCO_val2099_");
    text += line + "\n";
  }
  auto bad = write(dir, "coco_pope_adversarial.json", text);
  auto msg = error_of([&] { attach_pope_labels(questions, {bad}); });
  EXPECT_TRUE(contains(msg, bad)) << msg;
  EXPECT_TRUE(contains(msg, "line 2: image differs from")) << msg;
  EXPECT_TRUE(contains(msg, "llava_pope_test.jsonl line 2")) << msg;

  auto short_file = write(dir, "coco_pope_random.json", "{\"question_id\": 1, \"image\": \"a.jpg\", \"text\": \"Is there a cat in the image?\", \"label\": \"no\"}\n");
  msg = error_of([&] { attach_pope_labels(questions, {short_file}); });
  EXPECT_TRUE(contains(msg, "1 labels for split 'random'")) << msg;
  EXPECT_TRUE(contains(msg, "2910")) << msg;
}

TEST(PopeScore, SelfContainedAnswersBySizeAndSigma) {
  auto dir = scratch_dir("pope_self_contained");
  // Clean: random split 4 answers (2 small positives, 1 large positive, 1 negative); sigma 0.2: 2.
  auto path = write(dir, "answers.jsonl",
                    R"({"question_id": 1, "text": "Yes", "split": "random", "label": "yes", "size": "small"}
{"question_id": 2, "text": "No", "split": "random", "label": "yes", "size": "small"}
{"question_id": 3, "text": "Yes, there is.", "split": "random", "label": "yes", "size": "large"}
{"question_id": 4, "text": "No, there is not.", "split": "random", "label": "no"}
{"question_id": 1, "text": "No", "split": "random", "label": "yes", "size": "small", "sigma": 0.2, "noise": "pixel"}

{"question_id": 4, "text": "Yes", "split": "random", "label": "no", "sigma": 0.2, "noise": "pixel"}
)");
  auto answers = read_pope_answers(path);
  ASSERT_EQ(answers.size(), 6u);
  EXPECT_EQ(answers[4].line, 5u);
  EXPECT_EQ(answers[5].line, 7u) << "blank lines keep the numbering";
  std::vector<std::string> warnings;
  auto scores = score_pope(answers, {}, warnings);
  ASSERT_EQ(scores.size(), 2u);
  EXPECT_EQ(scores[0].noise, "none");
  EXPECT_EQ(scores[1].noise, "pixel");
  EXPECT_DOUBLE_EQ(scores[1].sigma, 0.2);
  const auto& clean = scores[0].splits.at(0);
  EXPECT_EQ(clean.metrics.counts.tp, 2);
  EXPECT_EQ(clean.metrics.counts.fn, 1);
  EXPECT_EQ(clean.metrics.counts.tn, 1);
  EXPECT_EQ(clean.by_size.at("small").tp, 1);
  EXPECT_EQ(clean.by_size.at("small").fn, 1);
  EXPECT_EQ(clean.by_size.at("large").tp, 1);
  EXPECT_FALSE(clean.positional_pairing_agrees.has_value());
  const auto& noisy = scores[1].splits.at(0);
  EXPECT_EQ(noisy.metrics.counts.fn, 1);
  EXPECT_EQ(noisy.metrics.counts.fp, 1);
  ASSERT_EQ(warnings.size(), 1u) << "noisy F1 is 0/0";
  EXPECT_TRUE(contains(warnings[0], "F1 undefined")) << warnings[0];
  auto j = pope_scores_json(scores);
  EXPECT_DOUBLE_EQ(j[0]["splits"]["random"]["recall_by_size"]["small"]["recall"].get<double>(), 0.5);
  EXPECT_TRUE(j[1]["average"]["f1"].is_null());
  auto table = format_pope_table(scores);
  EXPECT_TRUE(contains(table, "recall by object size, random: large  100.00 (n=1) small   50.00 (n=2)")) << table;
  EXPECT_TRUE(contains(table, "average F1 by noise level:")) << table;
}

TEST(PopeScore, WorldQuestionsCarryLabelsAndSizes) {
  auto questions = read_pope_questions(data_path("pope/tiny/tiny_pope_random.json"));
  ASSERT_EQ(questions.size(), 7u);
  EXPECT_EQ(questions[0].split, "random");
  EXPECT_EQ(questions[0].object_size, "large");
  EXPECT_EQ(questions[1].object_size, "");
  EXPECT_TRUE(*questions[0].label_yes);
  EXPECT_FALSE(*questions[1].label_yes);

  // Other spellings of the object size.
  auto dir = scratch_dir("pope_sizes");
  auto path = write(dir, "w_pope_popular.json",
                    R"({"question_id": 1, "image": "a.png", "text": "q", "label": "yes", "objects": {"size": "small", "name": "x"}}
{"question_id": 2, "image": "a.png", "text": "q", "label": "yes", "objects": [{"size": "large"}]}
{"question_id": 3, "image": "a.png", "text": "q", "label": "yes", "objects": ["small"]}
{"question_id": 4, "image": "a.png", "text": "q", "label": "yes", "size": "large"}
)");
  auto q = read_pope_questions(path);
  EXPECT_EQ(q[0].object_size, "small");
  EXPECT_EQ(q[1].object_size, "large");
  EXPECT_EQ(q[2].object_size, "small");
  EXPECT_EQ(q[3].object_size, "large");
  EXPECT_EQ(q[3].split, "popular");

  // A JSON array file reads the same.
  auto arr = write(dir, "arr_pope_random.json", R"([{"question_id": 1, "image": "a.png", "text": "q", "label": "no"}])");
  auto qa = read_pope_questions(arr);
  ASSERT_EQ(qa.size(), 1u);
  EXPECT_EQ(qa[0].split, "random");
}

TEST(PopeScore, OrderAndCoverageWarnings) {
  auto questions = read_pope_questions(data_path("pope/tiny/tiny_pope_random.json"));
  auto dir = scratch_dir("pope_order");
  // Answers 2 and 1 swapped, 3..7 missing except 4.
  auto path = write(dir, "a.jsonl",
                    "{\"question_id\": 2, \"text\": \"No\"}\n{\"question_id\": 1, \"text\": \"Yes\"}\n"
                    "{\"question_id\": 4, \"text\": \"Yes\"}\n");
  std::vector<std::string> warnings;
  auto scores = score_pope(read_pope_answers(path), questions, warnings);
  const auto& s = scores.at(0).splits.at(0);
  EXPECT_EQ(s.metrics.counts.tp, 2);
  EXPECT_EQ(s.metrics.counts.tn, 1);
  EXPECT_EQ(s.unanswered, 4);
  EXPECT_FALSE(*s.positional_pairing_agrees);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_TRUE(contains(warnings[0], "4 of 7 questions have no answer")) << warnings[0];
  EXPECT_TRUE(contains(warnings[1], "not in question-file order")) << warnings[1];
}

TEST(PopeBadInput, MalformedLineNamesFileAndLine) {
  auto dir = scratch_dir("pope_bad_jsonl");
  auto path = write(dir, "a.jsonl", "{\"question_id\": 1, \"text\": \"No\"}\n{\"question_id\": 2, \"text\": \n");
  auto msg = error_of([&] { read_pope_answers(path); });
  EXPECT_TRUE(contains(msg, path + ": line 2: malformed JSON")) << msg;

  auto wrong_type = write(dir, "b.jsonl", "{\"question_id\": \"1\", \"text\": \"No\"}\n");
  msg = error_of([&] { read_pope_answers(wrong_type); });
  EXPECT_TRUE(contains(msg, wrong_type + ": line 1: field 'question_id': expected integer, got string")) << msg;

  auto no_text = write(dir, "c.jsonl", "\n{\"question_id\": 1}\n");
  msg = error_of([&] { read_pope_answers(no_text); });
  EXPECT_TRUE(contains(msg, no_text + ": line 2: missing required field 'text'")) << msg;

  auto not_object = write(dir, "d.jsonl", "{\"question_id\": 1, \"text\": \"No\"}\n[1, 2]\n");
  msg = error_of([&] { read_pope_answers(not_object); });
  EXPECT_TRUE(contains(msg, not_object + ": line 2: expected a JSON object, got array")) << msg;

  auto bad_label = write(dir, "q_pope_random.json", "{\"question_id\": 1, \"image\": \"a.png\", \"text\": \"q\", \"label\": \"Yes\"}\n");
  msg = error_of([&] { read_pope_questions(bad_label); });
  EXPECT_TRUE(contains(msg, bad_label + ": line 1: field 'label': expected \"yes\" or \"no\", got \"Yes\"")) << msg;

  auto no_image = write(dir, "q2_pope_random.json", "{\"question_id\": 1, \"text\": \"q\", \"label\": \"no\"}\n");
  msg = error_of([&] { read_pope_questions(no_image); });
  EXPECT_TRUE(contains(msg, "line 1: missing required field 'image'")) << msg;

  auto dup = write(dir, "q3_pope_random.json",
                   "{\"question_id\": 1, \"image\": \"a\", \"text\": \"q\", \"label\": \"no\"}\n"
                   "{\"question_id\": 1, \"image\": \"a\", \"text\": \"q\", \"label\": \"no\"}\n");
  msg = error_of([&] { read_pope_questions(dup); });
  EXPECT_TRUE(contains(msg, "line 2: question_id 1 of split 'random' appears twice (first at line 1)")) << msg;

  auto empty = write(dir, "q4_pope_random.json", "\n");
  msg = error_of([&] { read_pope_questions(empty); });
  EXPECT_TRUE(contains(msg, "no questions")) << msg;

  msg = error_of([&] { read_pope_answers(dir + "/missing.jsonl"); });
  EXPECT_TRUE(contains(msg, dir + "/missing.jsonl")) << msg;
}

TEST(PopeBadInput, AnswersThatDoNotMatchTheQuestions) {
  auto questions = read_pope_questions(data_path("pope/tiny/tiny_pope_random.json"));
  auto dir = scratch_dir("pope_bad_answers");
  std::vector<std::string> warnings;

  auto unknown = write(dir, "unknown.jsonl", "{\"question_id\": 1, \"text\": \"No\"}\n{\"question_id\": 99, \"text\": \"No\"}\n");
  auto msg = error_of([&] { score_pope(read_pope_answers(unknown), questions, warnings); });
  EXPECT_TRUE(contains(msg, unknown + ": line 2: question_id 99 is not in the question files")) << msg;

  auto wrong_split = write(dir, "split.jsonl", "{\"question_id\": 1, \"text\": \"No\", \"split\": \"popular\"}\n");
  msg = error_of([&] { score_pope(read_pope_answers(wrong_split), questions, warnings); });
  EXPECT_TRUE(contains(msg, "question_id 1 of split 'popular' is not in the question files")) << msg;

  auto twice = write(dir, "twice.jsonl", "{\"question_id\": 3, \"text\": \"No\"}\n{\"question_id\": 3, \"text\": \"Yes\"}\n");
  msg = error_of([&] { score_pope(read_pope_answers(twice), questions, warnings); });
  EXPECT_TRUE(contains(msg, twice + ": line 2: question_id 3 of split 'random' answered twice (clean: first at " + twice + " line 1)")) << msg;

  auto conflict = write(dir, "conflict.jsonl", "{\"question_id\": 2, \"text\": \"No\", \"label\": \"yes\"}\n");
  msg = error_of([&] { score_pope(read_pope_answers(conflict), questions, warnings); });
  EXPECT_TRUE(contains(msg, "line 1: label 'yes' differs from")) << msg;
  EXPECT_TRUE(contains(msg, "tiny_pope_random.json line 2")) << msg;

  auto bare = write(dir, "bare.jsonl", "{\"question_id\": 2, \"text\": \"No\"}\n");
  msg = error_of([&] { score_pope(read_pope_answers(bare), {}, warnings); });
  EXPECT_TRUE(contains(msg, "line 1: no 'split' field; give the question files (--questions)")) << msg;

  // Ids shared by two question files and an answer that names no split: ambiguous.
  auto both = questions;
  auto adv = read_pope_questions(data_path("pope/tiny/tiny_pope_adversarial.json"));
  both.insert(both.end(), adv.begin(), adv.end());
  msg = error_of([&] { score_pope(read_pope_answers(bare), both, warnings); });
  EXPECT_TRUE(contains(msg, "question_id 2 is in several question files")) << msg;

  auto bad_sigma = write(dir, "sigma.jsonl", "{\"question_id\": 2, \"text\": \"No\", \"sigma\": -1}\n");
  msg = error_of([&] { read_pope_answers(bad_sigma); });
  EXPECT_TRUE(contains(msg, "line 1: field 'sigma': must be finite and >= 0")) << msg;
}
