// AMBER: the official data files (a cut), the official inference.py discriminative formulas on a
// hand-made response file, the generative CHAIR/Cover/Hal/Cog on hand-made descriptions (with the
// documented noun-extraction replacements), malformed input, and a run on the tiny LLaVA.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "eval/amber.h"
#include "io/json_io.h"
#include "models/load.h"
#include "test_paths.h"
#include "test_util.h"

using namespace p2dpo::eval;
using p2dpo::test::data_path;
using p2dpo::test::error_of;
using p2dpo::test::scratch_dir;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

const AmberData& cut_data() {
  static const AmberData d = read_amber_data(data_path("eval/amber/data"));
  return d;
}

void expect_qa(const AmberQaMetrics& m, double acc, double p, double r, double f1, const char* what) {
  EXPECT_DOUBLE_EQ(m.accuracy, acc) << what;
  EXPECT_DOUBLE_EQ(m.precision, p) << what;
  EXPECT_DOUBLE_EQ(m.recall, r) << what;
  EXPECT_DOUBLE_EQ(m.f1, f1) << what;
}

}  // namespace

TEST(AmberData, ReadsTheOfficialFiles) {
  const auto& d = cut_data();
  EXPECT_EQ(d.annotations.size(), 55u);
  EXPECT_EQ(d.vocabulary.size(), 418u) << "keys and values of relation.json (spec §5.1)";
  EXPECT_TRUE(d.vocabulary.count("TV"));
  EXPECT_TRUE(d.vocabulary.count("air-conditioning"));
  ASSERT_EQ(d.safe_words.size(), 9u);
  EXPECT_EQ(d.safe_words.front(), "orange");
  EXPECT_EQ(d.safe_words.back(), "individual");
  const auto& a1 = d.annotation(1, "x", 1);
  EXPECT_TRUE(a1.generative());
  EXPECT_EQ(a1.truth.size(), 7u);
  EXPECT_EQ(d.annotation(13558, "x", 1).type, "relation");
  EXPECT_EQ(d.annotation(8633, "x", 1).truth_answer, "no");
  EXPECT_EQ(read_amber_queries(data_path("eval/amber/data/query/query_all.json")).size(), 55u);
}

TEST(AmberDiscriminative, HandMadeFileMatchesOfficialFormula) {
  // 13 responses (hand_discriminative.json). Prefix rule: 1005 Yes (truth yes) ok, 1006 No (no) ok,
  // 1007 No (yes) wrong, 1008 Yes (no) wrong, 1013 Yes (yes) ok, 1014 "No, there are three." -> No
  // (no) ok, 1017 "yes" -> Yes (yes) ok, 1018 "Maybe" (no) wrong, 8633 No ok, 8634 Yes wrong,
  // 8635 No ok, 13557 Yes (yes) ok, 13558 No (no, type "relation") ok.
  // Overall counters: correct 9 of 13.001; truth-no 8.001 of which answered No 5; answered No
  // 6.001 of which truth no 5:
  //   Accuracy = round(9/13.001*100, 1) = 69.2; P = round(5/6.001*100, 1) = 83.3;
  //   R = round(5/8.001*100, 1) = 62.5; F1 = round(2*.833*.625/(.833+.625+.0001)*100, 1) = 71.4.
  // Existence (8633-8635): acc 2/3.001 -> 66.6; P 2/2.001 -> 100.0; R 2/3.001 -> 66.6;
  //   F1 = 2*1*.666/(1+.666+.001) = 79.9 (eps 0.001 for existence).
  // Attribute = state+number+action counters (denominators +0.003): acc 5/8.003 -> 62.5,
  //   P 2/3.003 -> 66.6, R 2/4.003 -> 50.0, F1 = 2*.666*.5/(1.166+.0001) -> 57.1.
  // Relation (13557 discriminative-relation, 13558 relation): acc 2/2.001 -> 100.0, P 1/1.001 ->
  //   99.9, R 99.9, F1 99.9.
  // The same numbers come out of a Python transcription of inference.py's discriminative branch.
  const auto responses = read_amber_responses(data_path("eval/amber/hand_discriminative.json"));
  ASSERT_EQ(responses.size(), 13u);
  AmberNlp nlp;
  const auto s = score_amber(cut_data(), responses, AmberAnswerRule::Prefix, nlp);
  ASSERT_TRUE(s.discriminative.has_value());
  EXPECT_FALSE(s.generative.has_value());
  const auto& d = *s.discriminative;
  expect_qa(d.overall, 69.2, 83.3, 62.5, 71.4, "overall");
  EXPECT_DOUBLE_EQ(d.overall.counters.correct_num, 13.001);
  EXPECT_DOUBLE_EQ(d.overall.counters.ans_no_score, 5);
  expect_qa(d.existence, 66.6, 100.0, 66.6, 79.9, "existence");
  expect_qa(d.attribute, 62.5, 66.6, 50.0, 57.1, "attribute");
  EXPECT_DOUBLE_EQ(d.attribute.counters.correct_num, 8.003);
  expect_qa(d.state, 50.0, 50.0, 50.0, 50.0, "state");
  expect_qa(d.number, 100.0, 99.9, 99.9, 99.9, "number");
  expect_qa(d.action, 50.0, 0.0, 0.0, 0.0, "action");
  expect_qa(d.relation, 100.0, 99.9, 99.9, 99.9, "relation");
  EXPECT_EQ(d.relation.items, 2);
  EXPECT_EQ(d.answers.at("other"), 1);

  // The official exact comparison: "yes" and "No, there are three." are neither Yes nor No.
  const auto e = score_amber(cut_data(), responses, AmberAnswerRule::Exact, nlp);
  expect_qa(e.discriminative->overall, 53.8, 80.0, 50.0, 61.5, "overall exact");
  expect_qa(e.discriminative->attribute, 37.5, 49.9, 25.0, 33.3, "attribute exact");
  EXPECT_EQ(e.discriminative->answers.at("other"), 3);
}

TEST(AmberDiscriminative, AnswerRulesAndRounding) {
  EXPECT_EQ(amber_normalise_answer("  yes, there is.", AmberAnswerRule::Prefix), "Yes");
  EXPECT_EQ(amber_normalise_answer("No", AmberAnswerRule::Prefix), "No");
  EXPECT_EQ(amber_normalise_answer("Nothing", AmberAnswerRule::Prefix), "No") << "the documented prefix rule";
  EXPECT_EQ(amber_normalise_answer("There is a dog.", AmberAnswerRule::Prefix), "There is a dog.");
  EXPECT_EQ(amber_normalise_answer("yes", AmberAnswerRule::Exact), "yes");
  EXPECT_EQ(amber_normalise_answer("There is not a dog.", AmberAnswerRule::Pope), "No");
  EXPECT_EQ(amber_normalise_answer("NO", AmberAnswerRule::Pope), "Yes") << "POPE's case-sensitive rule";
  EXPECT_DOUBLE_EQ(python_round1(0.25), 0.2) << "ties to even on the exact binary value";
  EXPECT_DOUBLE_EQ(python_round1(0.35), 0.3) << "0.35 is 0.34999... in binary";
  EXPECT_DOUBLE_EQ(python_round1(99.950025), 100.0);
  // inference.py with nothing answered: num counters stay 0.001 -> every metric 0.
  AmberQaCounters empty;
  const auto m = amber_qa_metrics(empty, 0, 0.0001);
  EXPECT_DOUBLE_EQ(m.f1, 0.0);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.0);
}

TEST(AmberGenerative, NounExtractionReplacement) {
  const auto& d = cut_data();
  AmberNlp nlp;
  EXPECT_EQ(amber_tokenize("An air-conditioning unit, a dog's bowl; e-book."),
            (std::vector<std::string>{"An", "air-conditioning", "unit", "a", "dog", "'s", "bowl", "e-book"}));
  EXPECT_EQ(amber_lemmatize("trees", nlp, d.vocabulary), "tree");
  EXPECT_EQ(amber_lemmatize("men", nlp, d.vocabulary), "man") << "men -> man rule";
  EXPECT_EQ(amber_lemmatize("glasses", nlp, d.vocabulary), "glass") << "ses -> s";
  EXPECT_EQ(amber_lemmatize("shelves", nlp, d.vocabulary), "shelf") << "ves -> f";
  EXPECT_EQ(amber_lemmatize("children", nlp, d.vocabulary), "child") << "built-in irregular plural";
  EXPECT_EQ(amber_lemmatize("leaves", nlp, d.vocabulary), "leave") << "\"leaf\" (ves -> f) is not an AMBER word";
  EXPECT_EQ(amber_lemmatize("Dogs", nlp, d.vocabulary), "Dogs") << "case-sensitive, as WordNet's lookup";
  EXPECT_EQ(amber_lemmatize("TV", nlp, d.vocabulary), "TV");
  // Tagger stand-in: modal "can", "hot", be + V-ing and pronoun/modal + verb are not nouns.
  EXPECT_EQ(amber_vocabulary_nouns("A can of soda and a hot dog. They can watch TV, it is sailing.", nlp, d.vocabulary),
            (std::vector<std::string>{"can", "dog", "TV"}));

  // With a WordNet dictionary (a three-line stand-in here), the filter is WordNet's: "sunglasses"
  // then lemmatizes to "sunglass", which is not an AMBER word.
  const std::string dir = scratch_dir("amber_wordnet");
  write(dir + "/index.noun", "  1 This software and database is being provided\nsunglass n 1 0\nsunglasses n 1 0\ndog n 1 0\n");
  write(dir + "/noun.exc", "mice mouse\n");
  AmberNlp wn;
  load_wordnet(wn, dir);
  EXPECT_EQ(amber_lemmatize("sunglasses", nlp, d.vocabulary), "sunglasses");
  EXPECT_EQ(amber_lemmatize("sunglasses", wn, d.vocabulary), "sunglass");
  EXPECT_EQ(amber_lemmatize("mice", wn, d.vocabulary), "mice") << "exception forms are filtered by index.noun too";
}

TEST(AmberGenerative, HandMadeDescriptions) {
  // hand_generative.json, exact-equality similarity (no spaCy table):
  //  id 1 (truth sky forest grass person lake mountain road): nouns person, road, tree (-> forest's
  //    association), sky, lake; none hallucinated; Cover 5/7; Cog 0/5.
  //  id 2 (truth sky man ship ship forest bridge mountain cloud lake building; hallu plane bird sun
  //    paddle ground): "Boats" stays capitalised (dropped, as nltk), "flies" not a vocabulary word;
  //    nouns bridge, bird (hallucinated, covers hallu "bird"), water (-> lake), building, light (safe
  //    word: skipped but counted); Cover 3/10; Cog 1/5.
  //  id 3 (truth child grass flower; hallu sky cloud tree house bench): "sitting" after "are" is a
  //    verb; nouns child, man (-> child's association), grass, tree (hallucinated, Cog), dog
  //    (hallucinated); Cover 2/3; Cog 1/5.
  // chair 3 / (0.001 + 15) -> CHAIR 20.0; Cover (5+3+2) / 20.001 -> 50.0;
  // Hal 100 - 1/3.001*100 = 66.68 -> 66.7; Cog 2/15.001 -> 13.3.
  const auto responses = read_amber_responses(data_path("eval/amber/hand_generative.json"));
  AmberNlp nlp;
  const auto s = score_amber(cut_data(), responses, AmberAnswerRule::Prefix, nlp);
  ASSERT_TRUE(s.generative.has_value());
  const auto& g = *s.generative;
  EXPECT_DOUBLE_EQ(g.chair_score, 3);
  EXPECT_DOUBLE_EQ(g.chair_num, 15.001);
  EXPECT_DOUBLE_EQ(g.safe_cover_score, 10);
  EXPECT_DOUBLE_EQ(g.safe_cover_num, 20.001);
  EXPECT_DOUBLE_EQ(g.hallu_cover_score, 2);
  EXPECT_DOUBLE_EQ(g.non_hallu_score, 1);
  EXPECT_DOUBLE_EQ(g.chair, 20.0);
  EXPECT_DOUBLE_EQ(g.cover, 50.0);
  EXPECT_DOUBLE_EQ(g.hal, 66.7);
  EXPECT_DOUBLE_EQ(g.cog, 13.3);

  // One item alone, to see which nouns are flagged.
  AmberGenerative acc;
  const auto flagged = amber_score_generative_item(responses[2].response, cut_data().annotation(3, "x", 1), cut_data(),
                                                   nlp, acc);
  EXPECT_EQ(flagged, (std::vector<std::string>{"tree", "dog"}));

  // A similarity table (a made-up pair, to exercise the mechanism): "dog" is now similar to "kid",
  // an association of the truth "child", so it is no longer a hallucination: CHAIR 2/15.001 -> 13.3.
  AmberNlp table;
  load_similar_pairs(table, data_path("eval/amber/similar_pairs_test.tsv"), cut_data().vocabulary);
  const auto t = score_amber(cut_data(), responses, AmberAnswerRule::Prefix, table);
  EXPECT_DOUBLE_EQ(t.generative->chair_score, 2);
  EXPECT_DOUBLE_EQ(t.generative->chair, 13.3);
  const auto doc = amber_results_document(t, AmberAnswerRule::Prefix, table, nlohmann::json::object());
  EXPECT_EQ(doc["generative"]["noun_extraction"]["exact"], false);
  EXPECT_TRUE(contains(doc["generative"]["noun_extraction"]["similarity"].get<std::string>(), "2 ordered pairs"));
}

TEST(AmberErrors, MalformedInput) {
  const std::string dir = scratch_dir("amber_errors");
  AmberNlp nlp;
  auto msg = error_of([&] {
    write(dir + "/a.json", R"([{"id": 1005, "response": "Yes"}, {"id": 1006}])");
    read_amber_responses(dir + "/a.json");
  });
  EXPECT_TRUE(contains(msg, dir + "/a.json: missing required field 'element 2.response'")) << msg;
  msg = error_of([&] {
    write(dir + "/b.jsonl", "{\"id\": 1005, \"response\": \"Yes\"}\n{\"id\": 1006, \"response\": \n");
    read_amber_responses(dir + "/b.jsonl");
  });
  EXPECT_TRUE(contains(msg, dir + "/b.jsonl")) << msg;
  EXPECT_TRUE(contains(msg, "line 2")) << msg;
  msg = error_of([&] {
    write(dir + "/c.json", R"([{"id": "1005", "response": "Yes"}])");
    read_amber_responses(dir + "/c.json");
  });
  EXPECT_TRUE(contains(msg, "field 'element 1.id': expected integer, got string")) << msg;
  msg = error_of([&] {
    write(dir + "/d.json", R"([{"id": 99999, "response": "Yes"}])");
    score_amber(cut_data(), read_amber_responses(dir + "/d.json"), AmberAnswerRule::Prefix, nlp);
  });
  EXPECT_TRUE(contains(msg, dir + "/d.json: row 1: field 'id': 99999 is not an id of")) << msg;
  msg = error_of([&] {
    write(dir + "/e.json", R"([{"id": 1005, "response": "Yes"}, {"id": 1005, "response": "No"}])");
    score_amber(cut_data(), read_amber_responses(dir + "/e.json"), AmberAnswerRule::Prefix, nlp);
  });
  EXPECT_TRUE(contains(msg, "row 2: id 1005 answered twice (also row 1")) << msg;
  msg = error_of([&] {
    write(dir + "/pairs.tsv", "dog\tunicorn\n");
    load_similar_pairs(nlp, dir + "/pairs.tsv", cut_data().vocabulary);
  });
  EXPECT_TRUE(contains(msg, "pairs.tsv: line 1: 'unicorn' is not an AMBER vocabulary word")) << msg;
  msg = error_of([] { read_amber_data(data_path("eval/amber")); });
  EXPECT_TRUE(contains(msg, "annotations.json")) << msg;
  msg = error_of([&] {
    amber_select_queries(cut_data(), data_path("eval/amber/data/query/query_all.json"), AmberMode::Generative, 0, dir);
  });
  EXPECT_TRUE(contains(msg, dir + "/AMBER_1.jpg: image not found (query id 1 of")) << msg;
  EXPECT_EQ(amber_select_queries(cut_data(), data_path("eval/amber/data/query/query_all.json"), AmberMode::Generative, 0, "")
                .size(),
            3u);
  msg = error_of([] { parse_amber_mode("both", "--mode"); });
  EXPECT_TRUE(contains(msg, "--mode: unknown mode 'both'")) << msg;
}

TEST(AmberRunner, TinyModelEndToEnd) {
  static auto model = p2dpo::models::load_model(data_path("llava-tiny-s0"));
  const std::string out = scratch_dir("amber_run");
  AmberRunOptions o;
  o.data_dir = data_path("eval/amber/data");
  o.queries_path = data_path("eval/amber/tiny_queries.json");  // the official queries, images as PNG stand-ins
  o.images_dir = data_path("eval/amber/images");
  o.out_dir = out;
  o.mode = AmberMode::All;
  o.conv_mode = "hf";
  o.max_new_tokens = 4;
  o.batch_size = 3;
  o.model_id = "llava-tiny-s0";
  o.progress = false;
  AmberNlp nlp;
  const auto r = run_amber(*model, o, nlp);
  EXPECT_EQ(r.generated, 8);
  EXPECT_EQ(r.score.answered, 8);
  ASSERT_TRUE(r.score.generative.has_value());
  EXPECT_EQ(r.score.generative->items, 2);
  ASSERT_TRUE(r.score.discriminative.has_value());
  EXPECT_EQ(r.score.discriminative->overall.items, 6);
  const auto official = p2dpo::io::read_json_file(out + "/AMBER_responses.json");
  ASSERT_EQ(official.size(), 8u);
  EXPECT_EQ(official[0]["id"], 1);
  EXPECT_TRUE(official[0]["response"].is_string());
  EXPECT_EQ(p2dpo::io::read_json_file(out + "/results.json")["answered"], 8);
  // Only the discriminative queries: already answered, nothing generated.
  o.mode = AmberMode::Discriminative;
  const auto again = run_amber(*model, o, nlp);
  EXPECT_EQ(again.generated, 0);
  EXPECT_FALSE(again.score.generative.has_value());
}
