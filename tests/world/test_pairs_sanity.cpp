#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "test_paths.h"
#include "test_util.h"
#include "world/pairs_sanity.h"

namespace p2dpo::world {
namespace {

TEST(WorldPairsSanity, NamedClassesAndOrder) {
  const std::vector<std::string> classes = {"red circle", "blue square", "green star", "red star"};
  const std::vector<std::string> present = {"red circle", "green star"};
  auto n = named_classes("There are two Red circles and a blue square.", classes, present);
  EXPECT_EQ(n.present, 1);
  EXPECT_EQ(n.absent, 1);
  n = named_classes("A green star, a red star and a red starfish? No: red circle.", classes, present);
  EXPECT_EQ(n.present, 2);  // green star, red circle ("red starfish" is not a word match for "red star"... but "red star" is)
  EXPECT_EQ(n.absent, 1);   // red star
  EXPECT_EQ(named_classes("nothing here", classes, present).present, 0);

  EXPECT_EQ(faithfulness_order({2, 0}, {2, 1}), 1);   // fewer absent
  EXPECT_EQ(faithfulness_order({1, 1}, {2, 0}), -1);  // more absent loses first
  EXPECT_EQ(faithfulness_order({2, 0}, {1, 0}), 1);   // same absent, more present
  EXPECT_EQ(faithfulness_order({1, 0}, {1, 0}), 0);
}

TEST(WorldPairsSanity, RandomBoxHitRateIsExact) {
  // A 2x2 box in a 4x4 image: 9 top-left positions; the point (0.5, 0.5) lies only in the box at (0, 0).
  EXPECT_DOUBLE_EQ(random_box_hit_rate(2, 2, 4, 4, {{0.5, 0.5}}), 1.0 / 9.0);
  // The centre point (2, 2) is inside boxes with x in {1, 2} and y in {1, 2}: 4 of 9.
  EXPECT_DOUBLE_EQ(random_box_hit_rate(2, 2, 4, 4, {{2.0, 2.0}}), 4.0 / 9.0);
  // A box as large as the image always hits.
  EXPECT_DOUBLE_EQ(random_box_hit_rate(9, 9, 4, 4, {{3.5, 0.0}}), 1.0);
  EXPECT_DOUBLE_EQ(random_box_hit_rate(2, 2, 4, 4, {}), 0.0);
}

// A hand-made world (2 colours x 2 shapes, one prompt scene holding a red circle and a blue
// square) and three pair records with known faithfulness orders, two of them with the model's
// own plain-view answer recorded.
TEST(WorldPairsSanity, CountsOrdersAndWinnersAgainstTheOwnAnswer) {
  using nlohmann::json;
  const std::string dir = test::scratch_dir("pairs_sanity_world");
  std::filesystem::create_directories(dir + "/world/prompts");
  std::filesystem::create_directories(dir + "/pairs");
  io::write_file_atomic(dir + "/world/world.json",
                        json{{"vocabulary", {{"colors", {{{"name", "red"}}, {{"name", "blue"}}}}, {"shapes", {"circle", "square"}}}}}
                            .dump());
  io::write_file_atomic(dir + "/world/scenes.jsonl",
                        json{{"id", "s0"}, {"objects", {{{"class", "red circle"}}, {{"class", "blue square"}}}}}.dump() + "\n");
  std::string truth;
  for (const char* id : {"p0", "p1", "p2"})
    truth += json{{"id", id}, {"scene", "s0"}, {"type", "description"},
                  {"objects", {{{"bbox", {0, 0, 10, 10}}}}}}.dump() + "\n";
  io::write_file_atomic(dir + "/world/prompts/pairs_truth.jsonl", truth);
  auto rec = [](const char* id, bool keep, json focus, const char* robust_chosen) {
    return json{{"id", id},       {"filter", {{"keep", keep}}},
                {"focus", focus}, {"robust", {{"chosen", robust_chosen}, {"rejected", "a red square"}}},
                {"bbox", {0, 0, 5, 5}}, {"width", 20}, {"height", 20}}.dump() + "\n";
  };
  io::write_file_atomic(
      dir + "/pairs/pairs.jsonl",
      // p0: focus right (rejected names the absent red square), winner = own answer; robust right,
      //     its winner names one present object fewer than the own answer (own answer better).
      rec("p0", true, {{"chosen", "a red circle and a blue square"}, {"rejected", "a red square"},
                       {"original", "a red circle and a blue square"}}, "a red circle") +
      // p1: focus wrong (chosen names the absent blue circle); own answer names it too and fewer
      //     present ones, so the winner is more faithful; robust winner better (no absent).
      rec("p1", true, {{"chosen", "a blue circle and a red circle"}, {"rejected", "a red circle"},
                       {"original", "a blue circle"}}, "a blue square") +
      // p2: dropped by the filter, counted only without --kept-only; no own answer recorded.
      rec("p2", false, {{"chosen", "a red circle"}, {"rejected", "a red circle"}}, "a red circle"));

  const json kept = pairs_sanity(dir + "/pairs", dir + "/world", true);
  EXPECT_EQ(kept["pairs"], 2);
  EXPECT_EQ(kept["focus"]["counts"]["chosen"], 1);
  EXPECT_EQ(kept["focus"]["counts"]["rejected"], 1);
  EXPECT_EQ(kept["robust"]["counts"]["chosen"], 2);
  const json& vs = kept["winners_vs_original"];
  EXPECT_EQ(vs["pairs"], 2);
  EXPECT_EQ(vs["focus"]["counts"]["winner"], 1);    // p1
  EXPECT_EQ(vs["focus"]["counts"]["neither"], 1);   // p0: the same text
  EXPECT_EQ(vs["focus"]["counts"]["original"], 0);
  EXPECT_EQ(vs["robust"]["counts"]["original"], 1);  // p0
  EXPECT_EQ(vs["robust"]["counts"]["winner"], 1);    // p1
  EXPECT_DOUBLE_EQ(vs["robust"]["winner_more_faithful"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(kept["crop_contains_asked_object"]["attention_crop"].get<double>(), 0.0);  // centre (5, 5) is outside [0, 5)

  const json all = pairs_sanity(dir + "/pairs", dir + "/world", false);
  EXPECT_EQ(all["pairs"], 3);
  EXPECT_EQ(all["focus"]["counts"]["neither"], 1);           // p2: identical
  EXPECT_EQ(all["winners_vs_original"]["pairs"], 2);         // p2 has no own answer
  // Without any own answer recorded (runs before focus.original_answer), the section is absent.
  io::write_file_atomic(dir + "/pairs/pairs.jsonl",
                        rec("p2", true, {{"chosen", "a red circle"}, {"rejected", "a red square"}}, "a red circle"));
  EXPECT_FALSE(pairs_sanity(dir + "/pairs", dir + "/world", true).contains("winners_vs_original"));
  // A record the truth does not know is named.
  io::write_file_atomic(dir + "/pairs/pairs.jsonl", rec("p9", true, {{"chosen", "x"}, {"rejected", "y"}}, "z"));
  EXPECT_NE(test::error_of([&] { pairs_sanity(dir + "/pairs", dir + "/world", true); }).find("p9"), std::string::npos);
}

}  // namespace
}  // namespace p2dpo::world
