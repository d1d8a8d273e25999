#include <gtest/gtest.h>

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

}  // namespace
}  // namespace p2dpo::world
