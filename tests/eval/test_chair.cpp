// CHAIR on world descriptions (src/eval/chair.h): the mention parser (sizes, plurals, repeated and
// unknown words), hand-made answer files with hand-computed CHAIR_i / CHAIR_s / Recall, the error
// paths, and a real greedy run of the shipped world model on three world records.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "eval/chair.h"
#include "io/json_io.h"
#include "models/load.h"
#include "test_paths.h"
#include "test_util.h"

namespace p2dpo::eval {
namespace {

namespace fs = std::filesystem;

std::string world_mini(const std::string& rel) { return test::data_path("eval/world-mini/" + rel); }
ChairVocabulary mini_vocab() { return read_world_vocabulary(world_mini("world.json")); }

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

TEST(Chair, VocabularyComesFromWorldJson) {
  const auto v = mini_vocab();
  EXPECT_EQ(v.shapes, (std::vector<std::string>{"circle", "square", "triangle", "star"}));
  EXPECT_EQ(v.colors, (std::vector<std::string>{"red", "green", "blue", "yellow"}));
  EXPECT_EQ(v.sizes, (std::vector<std::string>{"large", "small"}));
  EXPECT_EQ(v.partner.at("red circle"), "green square");
  EXPECT_EQ(world_prompt_template(world_mini("world.json")), "USER: {question}\n<image> ASSISTANT:");
  const auto missing = test::error_of([] { read_world_vocabulary(world_mini("nope.json")); });
  EXPECT_NE(missing.find("nope.json"), std::string::npos) << missing;
}

TEST(Chair, PluralsAndWords) {
  EXPECT_EQ(plural_of("star"), "stars");
  EXPECT_EQ(plural_of("cross"), "crosses");
  EXPECT_EQ(plural_of("box"), "boxes");
  EXPECT_EQ(plural_of("patch"), "patches");
  EXPECT_EQ(chair_words("There are TWO red-circles, a Large blue star."),
            (std::vector<std::string>{"there", "are", "two", "red", "circles", "a", "large", "blue", "star"}));
}

TEST(Chair, ParserFindsSizedPluralAndShapeOnlyMentions) {
  const auto p = parse_description(
      "There are three objects: a large red circle at the top left and two small blue stars. A circle is near a "
      "green thing. The yellow square is red, a purple triangle.",
      mini_vocab());
  ASSERT_EQ(p.mentions.size(), 3u);
  EXPECT_EQ(p.mentions[0].cls, "red circle");
  EXPECT_EQ(p.mentions[0].size, "large");
  EXPECT_FALSE(p.mentions[0].plural);
  EXPECT_EQ(p.mentions[1].cls, "blue star");
  EXPECT_EQ(p.mentions[1].size, "small");
  EXPECT_TRUE(p.mentions[1].plural);
  EXPECT_EQ(p.mentions[2].cls, "yellow square");
  EXPECT_EQ(p.mentions[2].size, "");
  // "A circle" and "purple triangle" (purple is no world colour) are shape-only; "green thing" and
  // "is red" name no shape.
  EXPECT_EQ(p.shape_only, (std::vector<std::string>{"circle", "triangle"}));
  // A size word with no colour after it is not a mention; a colour right before "large" breaks it.
  EXPECT_TRUE(parse_description("a large circle", mini_vocab()).mentions.empty());
  EXPECT_TRUE(parse_description("a red large circle", mini_vocab()).mentions.empty());
}

// Three answered captions and one unanswered record; the expected values are counted by hand.
//   1 truth {red circle (large), blue star (small)}
//     "There is a large red circle, a small blue star and a green square. The red circle is big."
//     mentions: red circle, blue star, green square (hallucinated: no square, no green -> absent; the
//     partner of red circle), red circle again -> 4 mentions, 1 hallucinated; distinct 3 / 1.
//   2 truth {yellow triangle (small), green circle (large), green circle (small)}
//     "A large yellow triangle, a yellow star, a blue circle, a red unicorn and a circle."
//     mentions: yellow triangle (right class, wrong size), yellow star (no star, yellow present ->
//     wrong_shape), blue circle (circle present -> wrong_color); unicorn ignored; "a circle"
//     shape-only (present) -> 3 mentions, 2 hallucinated; distinct 3 / 2.
//   3 truth {blue square} "Nothing here but a star." -> no mention; one shape-only, absent.
//   4 truth {red star}: no answer.
// CHAIR_i = 3/7, distinct 3/6, CHAIR_s = 2/3, Recall = (2 + 1 + 0) / (2 + 2 + 1) = 3/5,
// Cover = (1 + 1/2 + 0) / 3 = 1/2, mentions per caption 7/3.
TEST(Chair, HandMadeAnswersGiveHandCountedMetrics) {
  const std::string dir = test::scratch_dir("chair-hand");
  const std::string items_path = dir + "/descriptions.jsonl";
  write_text(items_path,
             R"({"question_id": 1, "image": "a.png", "text": "Describe the image.", "objects": ["red circle", "blue star"], "object_details": [{"class": "red circle", "size": "large"}, {"class": "blue star", "size": "small"}]}
{"question_id": 2, "image": "b.png", "text": "Describe the image.", "objects": ["yellow triangle", "green circle", "green circle"], "object_details": [{"class": "yellow triangle", "size": "small"}, {"class": "green circle", "size": "large"}, {"class": "green circle", "size": "small"}]}
{"question_id": 3, "image": "c.png", "text": "Describe the image.", "objects": ["blue square"]}
{"question_id": 4, "image": "d.png", "text": "Describe the image.", "objects": ["red star"]}
)");
  const std::string answers_path = dir + "/answers.jsonl";
  write_text(answers_path,
             R"({"question_id": 2, "text": "A large yellow triangle, a yellow star, a blue circle, a red unicorn and a circle."}
{"question_id": 1, "text": "There is a large red circle, a small blue star and a green square. The red circle is big."}
{"question_id": 3, "text": "Nothing here but a star."}
)");
  const auto items = read_chair_items(items_path);
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items[2].objects.size(), 1u);
  EXPECT_EQ(items[2].objects[0].size, "");
  std::vector<std::string> warnings;
  const auto s = score_chair(items, read_chair_answers(answers_path), mini_vocab(), answers_path, warnings);
  EXPECT_EQ(s.captions, 3);
  EXPECT_EQ(s.unanswered, 1);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(s.mentions, 7);
  EXPECT_EQ(s.hallucinated_mentions, 3);
  EXPECT_DOUBLE_EQ(s.chair_i, 3.0 / 7.0);
  EXPECT_DOUBLE_EQ(s.chair_i_distinct, 0.5);
  EXPECT_DOUBLE_EQ(s.chair_s, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(s.recall, 0.6);
  EXPECT_DOUBLE_EQ(s.cover, 0.5);
  EXPECT_DOUBLE_EQ(s.mentions_per_caption, 7.0 / 3.0);
  EXPECT_EQ(s.wrong_color, 1);
  EXPECT_EQ(s.wrong_shape, 1);
  EXPECT_EQ(s.absent, 1);
  EXPECT_EQ(s.partner, 1);
  EXPECT_EQ(s.size_mentions, 3);
  EXPECT_EQ(s.size_errors, 1);
  EXPECT_EQ(s.shape_only_mentions, 2);
  EXPECT_EQ(s.shape_only_hallucinated, 1);
  // Per-caption rows keep item order, not answer order.
  ASSERT_EQ(s.per_caption.size(), 3u);
  EXPECT_EQ(s.per_caption[0].question_id, 1);
  EXPECT_EQ(s.per_caption[0].hallucinated_classes, (std::set<std::string>{"green square"}));

  const auto doc = chair_results_document(s, {{"mode", "test"}}, warnings);
  EXPECT_EQ(doc["benchmark"], "chair");
  EXPECT_EQ(doc["n"], 3);
  EXPECT_DOUBLE_EQ(doc["metrics"]["chair_i"].get<double>(), 3.0 / 7.0);
  const auto row = chair_caption_json(s.per_caption[1]);
  EXPECT_EQ(row["mentions"].size(), 3u);
  EXPECT_EQ(row["kinds"]["wrong_shape"], 1);
  EXPECT_NE(format_chair_table(s).find("CHAIR_i"), std::string::npos);
}

TEST(Chair, TruthDescriptionsScoreClean) {
  // The world's own description of each scene (sizes from object_details) hallucinates nothing.
  const auto items = read_chair_items(world_mini("eval/descriptions.jsonl"));
  ASSERT_EQ(items.size(), 3u);
  std::vector<ChairAnswer> answers;
  for (const auto& it : items) {
    std::string text = "There are objects:";
    for (const auto& o : it.objects) text += " a " + o.size + " " + o.cls + ",";
    answers.push_back({it.question_id, text, 0});
  }
  std::vector<std::string> warnings;
  const auto s = score_chair(items, answers, mini_vocab(), "answers", warnings);
  EXPECT_EQ(s.captions, 3);
  EXPECT_EQ(s.hallucinated_mentions, 0);
  EXPECT_DOUBLE_EQ(s.chair_s, 0.0);
  EXPECT_DOUBLE_EQ(s.recall, 1.0);
  EXPECT_EQ(s.size_errors, 0);
  EXPECT_EQ(s.size_mentions, 9);  // 1 + 2 + 6 objects
}

TEST(Chair, BadAnswersAreRefused) {
  const auto items = read_chair_items(world_mini("eval/descriptions.jsonl"));
  std::vector<std::string> warnings;
  const auto unknown = test::error_of([&] {
    score_chair(items, {{99, "a red circle", 1}}, mini_vocab(), "ans.jsonl", warnings);
  });
  EXPECT_NE(unknown.find("question_id 99"), std::string::npos) << unknown;
  const auto twice = test::error_of([&] {
    score_chair(items, {{1, "x", 1}, {1, "y", 2}}, mini_vocab(), "ans.jsonl", warnings);
  });
  EXPECT_NE(twice.find("answered twice"), std::string::npos) << twice;
  const std::string dir = test::scratch_dir("chair-bad");
  write_text(dir + "/d.jsonl", "{\"question_id\": 1, \"image\": \"a.png\", \"objects\": []}\n");
  const auto missing = test::error_of([&] { read_chair_items(dir + "/d.jsonl"); });
  EXPECT_NE(missing.find("text"), std::string::npos) << missing;
  EXPECT_NE(missing.find("line 1"), std::string::npos) << missing;
}

TEST(Chair, WorldModelDescribesThreeScenes) {
  const std::string model_dir = std::string(P2DPO_TEST_DATA) + "/../../models/world/base";
  auto model = models::load_model(model_dir);
  ChairRunOptions opts;
  opts.descriptions_path = world_mini("eval/descriptions.jsonl");
  opts.images_dir = world_mini("images/eval");
  opts.out_dir = test::scratch_dir("chair-run");
  opts.vocab = mini_vocab();
  opts.vocab_source = world_mini("world.json");
  opts.prompt_template = world_prompt_template(world_mini("world.json"));
  opts.max_new_tokens = 64;
  opts.batch_size = 2;  // two batches: the second one is short
  opts.model_id = "base";
  opts.progress = false;
  const auto r = run_chair(*model, opts);
  EXPECT_EQ(r.generated, 3);
  EXPECT_EQ(r.score.captions, 3);
  EXPECT_GT(r.score.mentions, 0);  // the model describes scenes in the world's words
  EXPECT_GE(r.score.chair_i, 0.0);
  EXPECT_LE(r.score.chair_i, 1.0);
  EXPECT_GE(r.score.recall, 0.0);
  EXPECT_LE(r.score.recall, 1.0);
  EXPECT_EQ(r.results["benchmark"], "chair");
  EXPECT_TRUE(fs::exists(opts.out_dir + "/results.json"));
  EXPECT_EQ(io::read_jsonl_file(opts.out_dir + "/chair_captions.jsonl").size(), 3u);
  // Resuming generates nothing and scores the same answers.
  const auto again = run_chair(*model, opts);
  EXPECT_EQ(again.generated, 0);
  EXPECT_EQ(again.results["metrics"], r.results["metrics"]);
  // Scoring the answers file alone gives the same numbers.
  std::vector<std::string> warnings;
  const auto scored = score_chair(read_chair_items(opts.descriptions_path), read_chair_answers(r.answers_path), opts.vocab,
                                  r.answers_path, warnings);
  EXPECT_EQ(scored.hallucinated_mentions, r.score.hallucinated_mentions);
  EXPECT_EQ(scored.mentions, r.score.mentions);
}

}  // namespace
}  // namespace p2dpo::eval
