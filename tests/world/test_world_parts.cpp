// The world generator's parts: randomness, vocabulary and priors, geometry, rendering, text and
// POPE sampling, on hand-made scenes and on many drawn scenes (no files written).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "test_util.h"
#include "world/pope.h"
#include "world/random.h"
#include "world/render.h"
#include "world/scene.h"
#include "world/text.h"
#include "world/vocabulary.h"
#include "world_test_util.h"

using namespace p2dpo::world;
using p2dpo::test::error_of;
using p2dpo::world::test::make_object;
using p2dpo::world::test::make_scene;

namespace {

Vocabulary default_vocab() {
  WorldOptions o;
  return build_vocabulary(o.shapes, o.colors, o.popularity_decay_permille);
}

// The hand-made scene of the text and geometry tests (240 x 200, central square x 20..220):
// large red circle top left, small blue star on the right, large green square at the bottom.
Scene three_object_scene(const Vocabulary& v) {
  return make_scene({make_object(v, "red circle", SizeClass::Large, 30, 10, 40),
                     make_object(v, "blue star", SizeClass::Small, 180, 90, 10),
                     make_object(v, "green square", SizeClass::Large, 100, 140, 36)});
}

}  // namespace

TEST(WorldRandom, SplitmixMatchesReferenceVector) {
  uint64_t state = 1234567;
  const uint64_t expected[] = {6457827717110365317ULL, 3203168211198807973ULL, 9817491932198370423ULL,
                               4593380528125082431ULL, 16408922859458223821ULL};
  for (uint64_t e : expected) EXPECT_EQ(splitmix64_next(state), e);
}

TEST(WorldRandom, UniformCoversItsRangeAndWeightsOfZeroAreNeverDrawn) {
  Rng rng(42);
  std::set<int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const int64_t v = rng.uniform(-3, 4);
    ASSERT_GE(v, -3);
    ASSERT_LE(v, 4);
    seen.insert(v);
  }
  EXPECT_EQ(seen.size(), 8u);
  std::vector<int> hits(4, 0);
  for (int i = 0; i < 4000; ++i) ++hits[rng.weighted({3, 0, 1, 0})];
  EXPECT_EQ(hits[1] + hits[3], 0);
  EXPECT_GT(hits[0], 2 * hits[2]);  // expected 3 : 1
  Rng a(7), b(7), c(8);
  EXPECT_EQ(a.next(), b.next());
  EXPECT_NE(Rng(7).next(), c.next());
}

TEST(WorldVocabulary, PartnersAreSymmetricLookAlikes) {
  const Vocabulary v = default_vocab();
  const int N = v.num_classes();
  ASSERT_EQ(N, 32);  // 4 shapes x 8 colours
  for (int c = 0; c < N; ++c) {
    const int p = v.partner[c];
    ASSERT_GE(p, 0) << v.class_name(c);
    EXPECT_EQ(v.partner[p], c);
    EXPECT_NE(v.shape_of(p), v.shape_of(c));
    EXPECT_EQ(v.color_of(p), v.color_of(c)) << v.class_name(c) << " / " << v.class_name(p);
  }
  EXPECT_EQ(v.class_name(v.partner[v.class_index("red circle")]), "red star");  // the most popular pair
  // Popularity: a permutation, strictly decreasing weights, the top 4 span every shape and four colours.
  std::set<int> ranks(v.popularity_rank.begin(), v.popularity_rank.end());
  EXPECT_EQ(ranks.size(), static_cast<size_t>(N));
  for (int r = 1; r < N; ++r) EXPECT_LT(v.base_weight[v.by_popularity[r]], v.base_weight[v.by_popularity[r - 1]]);
  std::set<int> shapes, colors;
  for (int r = 0; r < 4; ++r) {
    shapes.insert(v.shape_of(v.by_popularity[r]));
    colors.insert(v.color_of(v.by_popularity[r]));
  }
  EXPECT_EQ(shapes.size(), 4u);
  EXPECT_EQ(colors.size(), 4u);
  EXPECT_EQ(v.class_name(v.class_index("blue star")), "blue star");
  EXPECT_EQ(v.class_index("blue"), -1);
}

TEST(WorldVocabulary, GrowsToTheWholeCatalog) {
  std::vector<std::string> shapes, colors;
  for (const auto& s : known_shapes()) shapes.push_back(s.name);
  for (const auto& c : known_colors()) colors.push_back(c.name);
  const Vocabulary v = build_vocabulary(shapes, colors, 950);
  EXPECT_EQ(v.num_classes(), 70);
  std::set<int> ranks(v.popularity_rank.begin(), v.popularity_rank.end());
  EXPECT_EQ(ranks.size(), 70u);
  int paired = 0, same_color = 0;
  for (int c = 0; c < v.num_classes(); ++c)
    if (v.partner[c] >= 0) {
      ++paired;
      same_color += v.color_of(v.partner[c]) == v.color_of(c);
      EXPECT_EQ(v.partner[v.partner[c]], c);
      EXPECT_NE(v.shape_of(v.partner[c]), v.shape_of(c));
    }
  EXPECT_GT(same_color, paired / 2);  // look-alikes first; the rest pair across colours
  // Greedy pairing can strand a few classes at the end of the ranking (they get no partner).
  EXPECT_GE(paired, 64);
}

TEST(WorldVocabulary, RejectsUnknownRepeatedOrTooFewNames) {
  EXPECT_NE(error_of([] { build_vocabulary({"circle", "blob"}, {"red", "blue"}, 900); }).find("--shapes: unknown name 'blob'"),
            std::string::npos);
  EXPECT_NE(error_of([] { build_vocabulary({"circle", "star"}, {"red", "red"}, 900); }).find("--colors: 'red' is listed twice"),
            std::string::npos);
  EXPECT_NE(error_of([] { build_vocabulary({"circle"}, {"red", "blue"}, 900); }).find("at least 2"), std::string::npos);
}

TEST(WorldGeometry, RegionsAndRelationsOfAHandMadeScene) {
  const Vocabulary v = default_vocab();
  const Scene s = three_object_scene(v);
  EXPECT_EQ(s.square_side(), 200);
  EXPECT_EQ(s.square_x0(), 20);
  EXPECT_EQ(s.square_y0(), 0);
  EXPECT_EQ(std::string(kRegionNames[region_of(s, s.objects[0])]), "top left");
  EXPECT_EQ(std::string(kRegionNames[region_of(s, s.objects[1])]), "right");
  EXPECT_EQ(std::string(kRegionNames[region_of(s, s.objects[2])]), "bottom");
  const auto box = region_box(s, 4);
  EXPECT_EQ(box, (std::array<int, 4>{86, 66, 153, 133}));

  std::set<std::tuple<int, std::string, int>> got;
  for (const auto& r : s.relations) got.insert({r.subject, relation_name(r.kind), r.object});
  const std::set<std::tuple<int, std::string, int>> want = {{0, "left of", 1}, {0, "left of", 2}, {2, "left of", 1},
                                                            {0, "above", 1},   {0, "above", 2},   {1, "above", 2}};
  EXPECT_EQ(got, want);
  // Within the margin there is no relation either way.
  const Scene close = make_scene({make_object(v, "red circle", SizeClass::Small, 100, 20, 10),
                                  make_object(v, "blue star", SizeClass::Small, 108, 150, 10)},
                                 12);
  ASSERT_EQ(close.relations.size(), 1u);
  EXPECT_EQ(close.relations[0].kind, RelationKind::Above);
  EXPECT_TRUE(holds(close, 1, Direction::Below, 0));
  EXPECT_FALSE(holds(close, 0, Direction::LeftOf, 1));
  EXPECT_FALSE(holds(close, 1, Direction::LeftOf, 0));
}

TEST(WorldText, AnswersOfAHandMadeScene) {
  const Vocabulary v = default_vocab();
  const Scene s = three_object_scene(v);
  EXPECT_EQ(describe_scene(s, v),
            "There are three objects: a large red circle at the top left, a small blue star on the right and a large "
            "green square at the bottom.");
  EXPECT_EQ(caption_scene(s, v), "a large red circle, a small blue star and a large green square");
  auto yes = existence_qa(s, v, v.class_index("red circle"));
  EXPECT_EQ(yes.question, "Is there a red circle in the image?");
  EXPECT_EQ(yes.answer, "Yes, there is a large red circle at the top left.");
  auto no = existence_qa(s, v, v.class_index("yellow star"), "Do you see {} in the image?");
  EXPECT_EQ(no.question, "Do you see a yellow star in the image?");
  EXPECT_EQ(no.answer, "No, I see a red circle, a blue star and a green square, but no yellow star.");
  auto color = color_qa(s, v, 1);
  EXPECT_EQ(color.question, "What color is the star?");
  EXPECT_EQ(color.answer, "The star is blue.");
  EXPECT_EQ(shape_qa(s, v, 2).answer, "The green object is a square.");
  EXPECT_EQ(size_qa(s, v, 1).answer, "The blue star is small.");
  EXPECT_EQ(where_qa(s, v, v.class_index("green square")).answer, "The green square is at the bottom.");
  EXPECT_EQ(where_qa(s, v, v.class_index("yellow star")).answer, "There is no yellow star in the image.");
  EXPECT_EQ(count_qa(s).answer, "There are three objects.");
  EXPECT_EQ(region_qa(s, v, 0).question, "What is at the top left of the image?");
  EXPECT_EQ(region_qa(s, v, 0).answer, "There is a large red circle at the top left.");
  EXPECT_EQ(region_qa(s, v, 4).answer, "There is nothing in the center.");
  auto rel = relation_qa(s, v, 1, Direction::LeftOf);
  EXPECT_EQ(rel.question, "What is to the left of the blue star?");
  EXPECT_EQ(rel.answer, "The large red circle and the large green square are to the left of the blue star.");
  EXPECT_EQ(relation_qa(s, v, 0, Direction::LeftOf).answer, "Nothing is to the left of the red circle.");
  EXPECT_EQ(relation_qa(s, v, 2, Direction::Below).answer, "Nothing is below the green square.");
  EXPECT_EQ(relation_qa(s, v, 0, Direction::Below).answer,
            "The small blue star and the large green square are below the red circle.");
  EXPECT_EQ(relation_yesno_qa(s, v, 1, 0, Direction::LeftOf).answer, "No, the blue star is to the right of the red circle.");
  EXPECT_EQ(relation_yesno_qa(s, v, 0, 2, Direction::Above).answer, "Yes, the red circle is above the green square.");
  // One object: "There is ...", and "an" before a vowel.
  const Scene one = make_scene({make_object(v, "yellow triangle", SizeClass::Small, 110, 90, 8)});
  EXPECT_EQ(describe_scene(one, v), "There is a small yellow triangle in the center.");
  EXPECT_EQ(with_article("orange star"), "an orange star");
  EXPECT_EQ(join_list({"a", "b"}), "a and b");
}

TEST(WorldText, AmbiguousReferencesAreAvoided) {
  const Vocabulary v = default_vocab();
  // Two stars of different sizes: "the small star"; two red objects: no shape question.
  const Scene s = make_scene({make_object(v, "red star", SizeClass::Large, 30, 10, 40),
                              make_object(v, "blue star", SizeClass::Small, 180, 90, 10),
                              make_object(v, "red square", SizeClass::Large, 100, 140, 36)});
  EXPECT_EQ(color_qa(s, v, 1).question, "What color is the small star?");
  EXPECT_EQ(color_qa(s, v, 1).answer, "The small star is blue.");
  EXPECT_TRUE(shape_qa(s, v, 0).question.empty());
  EXPECT_EQ(shape_qa(s, v, 1).answer, "The blue object is a star.");
}

TEST(WorldRender, ShapesFillTheirBoxesWithTheExpectedArea) {
  const std::map<ShapeKind, double> area = {{ShapeKind::Circle, 0.7854},  {ShapeKind::Square, 1.0},
                                            {ShapeKind::Triangle, 0.5},   {ShapeKind::Star, 0.3261},
                                            {ShapeKind::Diamond, 0.5},    {ShapeKind::Cross, 0.5558},
                                            {ShapeKind::Hexagon, 0.75}};
  for (const auto& [kind, fraction] : area) {
    const int side = 48;
    const auto cov = shape_coverage(kind, side);
    double sum = 0;
    for (uint8_t c : cov) {
      ASSERT_LE(c, 16);
      sum += c;
    }
    EXPECT_NEAR(sum / (16.0 * side * side), fraction, 0.01) << static_cast<int>(kind);
    EXPECT_EQ(cov[(side / 2) * side + side / 2], 16) << "centre pixel of shape " << static_cast<int>(kind);
    // Touches the box: some coverage in the first and last row and column.
    int top = 0, bottom = 0, left = 0, right = 0;
    for (int i = 0; i < side; ++i) {
      top += cov[i];
      bottom += cov[(side - 1) * side + i];
      left += cov[i * side];
      right += cov[i * side + side - 1];
    }
    EXPECT_GT(top, 0) << static_cast<int>(kind);
    EXPECT_GT(bottom, 0) << static_cast<int>(kind);
    EXPECT_GT(left, 0) << static_cast<int>(kind);
    EXPECT_GT(right, 0) << static_cast<int>(kind);
  }
  const auto circle = shape_coverage(ShapeKind::Circle, 20);
  EXPECT_EQ(circle[0], 0);  // corners of a circle's box are background
  EXPECT_EQ(circle[20 * 20 - 1], 0);
}

TEST(WorldRender, HandMadeScenePixels) {
  const Vocabulary v = default_vocab();
  Scene s = three_object_scene(v);
  s.background.color0 = {100, 110, 120};
  s.background.color1 = {140, 130, 120};
  s.background.gradient = Gradient::Horizontal;
  const auto img = render_scene(s, v);
  ASSERT_EQ(img.width, 240);
  ASSERT_EQ(img.height, 200);
  for (const auto& o : s.objects) {
    const uint8_t* p = img.at((o.x0 + o.x1) / 2, (o.y0 + o.y1) / 2);
    EXPECT_EQ((Rgb{p[0], p[1], p[2]}), o.rgb) << v.class_name(o.cls);
  }
  // Background: color0 + (color1 - color0) * (x * 1024 / (W - 1)) / 1024, here at x = 0, 239 and 120.
  EXPECT_EQ(img.at(0, 199)[0], 100);
  EXPECT_EQ(img.at(239, 199)[0], 140);
  EXPECT_EQ(img.at(120, 199)[1], 110 + 20 * (120 * 1024 / 239) / 1024);
  // A circle's box corner shows the background, the square fills its box.
  EXPECT_EQ(img.at(30, 10)[0], render_background(s).at(30, 10)[0]);
  EXPECT_EQ(img.at(100, 140)[1], 160);
  EXPECT_EQ(pixel_hash(img), pixel_hash(render_scene(s, v)));
}

TEST(WorldScene, DrawnScenesRespectTheGeometryContract) {
  WorldOptions opt;
  opt.seed = 3;
  const Vocabulary v = default_vocab();
  int small = 0, large = 0, non_square = 0;
  for (Split split : {Split::Train, Split::Prompts, Split::Eval})
    for (int64_t i = 0; i < 300; ++i) {
      const Scene s = sample_scene(opt, v, split, i);
      ASSERT_GE(s.width, 192);
      ASSERT_LE(s.width, 288);
      ASSERT_GE(s.height, 192);
      ASSERT_LE(s.height, 288);
      non_square += s.width != s.height;
      ASSERT_GE(s.objects.size(), 1u);
      ASSERT_LE(s.objects.size(), 6u);
      const int S = s.square_side();
      const auto crop = p2dpo::world::test::hf_crop_box(s.width, s.height, 96);
      std::set<int> classes;
      for (size_t a = 0; a < s.objects.size(); ++a) {
        const Object& o = s.objects[a];
        ASSERT_TRUE(classes.insert(o.cls).second) << s.id << ": a class twice";
        ASSERT_EQ(o.x1 - o.x0, o.y1 - o.y0);
        // Inside the central square, and inside what the HF processor keeps.
        ASSERT_GE(o.x0, s.square_x0());
        ASSERT_GE(o.y0, s.square_y0());
        ASSERT_LE(o.x1, s.square_x0() + S);
        ASSERT_LE(o.y1, s.square_y0() + S);
        ASSERT_GE(o.x0, crop[0]) << s.id;
        ASSERT_GE(o.y0, crop[1]) << s.id;
        ASSERT_LE(o.x1, crop[2]) << s.id;
        ASSERT_LE(o.y1, crop[3]) << s.id;
        const double side_at_input = (o.x1 - o.x0) * double(opt.model_input_side) / S;
        if (o.size == SizeClass::Small) {
          ++small;
          ASSERT_LT(side_at_input, double(opt.patch_size)) << s.id << ": a small object must stay below one patch";
          ASSERT_GE(o.side() * 1000, opt.small_min_permille * S - 999);
          ASSERT_LE(o.side() * 1000, opt.small_max_permille * S);
        } else {
          ++large;
          ASSERT_GE(o.side() * 1000, opt.large_min_permille * S - 999);
          ASSERT_LE(o.side() * 1000, opt.large_max_permille * S);
          // Large objects span at least one and a half patches a side at the model's input.
          ASSERT_GE(side_at_input, 1.5 * opt.patch_size) << s.id;
        }
        for (size_t b = a + 1; b < s.objects.size(); ++b) {
          const Object& p = s.objects[b];
          const bool apart = o.x1 <= p.x0 || p.x1 <= o.x0 || o.y1 <= p.y0 || p.y1 <= o.y0;
          ASSERT_TRUE(apart) << s.id << ": objects " << a << " and " << b << " overlap";
        }
      }
      // Reading order: rows of the position grid from the top.
      for (size_t a = 1; a < s.objects.size(); ++a)
        ASSERT_LE(region_of(s, s.objects[a - 1]) / 3, region_of(s, s.objects[a]) / 3);
    }
  EXPECT_GT(small, 300);
  EXPECT_GT(large, 300);
  EXPECT_GT(non_square, 450);
  // The same index of the same split is the same scene; another seed gives another.
  const Scene a = sample_scene(opt, v, Split::Eval, 17), b = sample_scene(opt, v, Split::Eval, 17);
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.objects.size(), b.objects.size());
  EXPECT_EQ(a.objects[0].x0, b.objects[0].x0);
  WorldOptions other = opt;
  other.seed = 4;
  int differ = 0;
  for (int64_t i = 0; i < 20; ++i) {
    const Scene x = sample_scene(opt, v, Split::Train, i), y = sample_scene(other, v, Split::Train, i);
    differ += x.width != y.width || x.height != y.height || x.objects.size() != y.objects.size() ||
              x.objects[0].x0 != y.objects[0].x0;
  }
  EXPECT_GE(differ, 15);
}

TEST(WorldScene, TrainingScenesCarryTheLanguagePriors) {
  WorldOptions opt;
  const Vocabulary v = default_vocab();
  const int N = v.num_classes();
  std::vector<int64_t> count(N, 0), with_partner(N, 0), eval_count(N, 0), eval_with_partner(N, 0);
  for (int64_t i = 0; i < 3000; ++i) {
    const Scene s = sample_scene(opt, v, Split::Train, i);
    for (const auto& o : s.objects) {
      ++count[o.cls];
      with_partner[o.cls] += s.find_class(v.partner[o.cls]) >= 0;
    }
    const Scene e = sample_scene(opt, v, Split::Eval, i);
    for (const auto& o : e.objects) {
      ++eval_count[o.cls];
      eval_with_partner[o.cls] += e.find_class(v.partner[o.cls]) >= 0;
    }
  }
  int64_t total = 0, together = 0, eval_total = 0, eval_together = 0;
  for (int c = 0; c < N; ++c) {
    total += count[c];
    together += with_partner[c];
    eval_total += eval_count[c];
    eval_together += eval_with_partner[c];
    // Every class's partner is with it in most training scenes that contain it.
    EXPECT_GT(with_partner[c] * 100, 65 * count[c]) << v.class_name(c);
  }
  const double rate = static_cast<double>(together) / total, eval_rate = static_cast<double>(eval_together) / eval_total;
  EXPECT_GT(rate, 0.75);
  EXPECT_LT(rate, 0.9);
  EXPECT_LT(eval_rate, 0.45);  // eval scenes have no co-occurrence rule: absent partners are common
  // Frequency imbalance: the most popular class is at least twice as frequent as the least (the
  // look-alike partners pair ranks far apart, e.g. 0 with 7, which flattens it).
  EXPECT_GT(count[v.by_popularity[0]], 2 * count[v.by_popularity[N - 1]]);
  EXPECT_GT(count[v.by_popularity[0]] + count[v.by_popularity[1]], count[v.by_popularity[6]] + count[v.by_popularity[7]]);
}

TEST(WorldPope, NegativesFollowTheSplitRules) {
  WorldOptions opt;
  opt.seed = 11;
  const Vocabulary v = default_vocab();
  int random_differs_from_popular = 0, adversarial_differs_from_popular = 0, partner_negatives = 0, images = 0;
  for (int64_t i = 0; i < 400; ++i) {
    const Scene s = sample_scene(opt, v, Split::Eval, i);
    Rng rng(i);
    const PopeSample p = sample_pope(s, v, 3, rng);
    ++images;
    const size_t k = std::min<size_t>(3, s.objects.size());
    ASSERT_EQ(p.positives.size(), k);
    ASSERT_EQ(p.random.size(), k);
    ASSERT_EQ(p.popular.size(), k);
    ASSERT_EQ(p.adversarial.size(), k);
    std::set<int> positives(p.positives.begin(), p.positives.end());
    ASSERT_EQ(positives.size(), k);
    for (const auto* neg : {&p.random, &p.popular, &p.adversarial}) {
      std::set<int> distinct(neg->begin(), neg->end());
      ASSERT_EQ(distinct.size(), k);
      for (int cls : *neg) ASSERT_LT(s.find_class(cls), 0) << "a negative must be absent";
    }
    // popular = the k absent classes of best popularity rank.
    std::vector<int> absent;
    for (int cls : v.by_popularity)
      if (s.find_class(cls) < 0) absent.push_back(cls);
    EXPECT_EQ(p.popular, std::vector<int>(absent.begin(), absent.begin() + k));
    // adversarial: every absent partner of a present object comes before any other class.
    std::set<int> absent_partners;
    for (const auto& o : s.objects)
      if (s.find_class(v.partner[o.cls]) < 0) absent_partners.insert(v.partner[o.cls]);
    const size_t expected_partners = std::min(k, absent_partners.size());
    for (size_t j = 0; j < k; ++j) EXPECT_EQ(absent_partners.count(p.adversarial[j]) == 1, j < expected_partners) << s.id;
    partner_negatives += static_cast<int>(expected_partners);
    random_differs_from_popular += std::set<int>(p.random.begin(), p.random.end()) != std::set<int>(p.popular.begin(), p.popular.end());
    adversarial_differs_from_popular +=
        std::set<int>(p.adversarial.begin(), p.adversarial.end()) != std::set<int>(p.popular.begin(), p.popular.end());
  }
  EXPECT_GT(random_differs_from_popular, images / 2);
  EXPECT_GT(adversarial_differs_from_popular, images / 3);
  EXPECT_GT(partner_negatives, images);  // most adversarial negatives are partners
}

TEST(WorldText, DrawnQuestionsAgreeWithTheScene) {
  WorldOptions opt;
  const Vocabulary v = default_vocab();
  std::map<std::string, int> types;
  int yes = 0, no = 0;
  for (int64_t i = 0; i < 300; ++i) {
    const Scene s = sample_scene(opt, v, Split::Train, i);
    Rng rng(i);
    for (const QA& qa : training_questions(s, v, 3, rng)) {
      ++types[qa.type];
      ASSERT_FALSE(qa.question.empty());
      ASSERT_FALSE(qa.answer.empty());
      if (qa.type == "existence") {
        const bool present = s.find_class(qa.asked_class) >= 0;
        ASSERT_EQ(qa.answer.rfind(present ? "Yes, there is " : "No, ", 0), 0u) << qa.question << " -> " << qa.answer;
        ASSERT_NE(qa.question.find(v.class_name(qa.asked_class)), std::string::npos);
        (present ? yes : no) += 1;
      }
      if (qa.type == "existence_short") {
        ASSERT_EQ(qa.answer, s.find_class(qa.asked_class) >= 0 ? "Yes" : "No");
        ASSERT_EQ(qa.question, existence_question(v, qa.asked_class) + "\n" + kShortAnswerSuffix);
      }
      if (qa.type == "color") {
        ASSERT_EQ(qa.objects.size(), 1u);
        const std::string color = v.colors[s.objects[qa.objects[0]].color];
        ASSERT_EQ(qa.answer.substr(qa.answer.size() - color.size() - 1), color + ".") << qa.answer;
      }
    }
    for (const QA& qa : open_prompts(s, v, 1, rng)) {
      ASSERT_NE(qa.type, "existence");
      ASSERT_NE(qa.question.rfind("Is ", 0), 0u) << "prompts are open-ended: " << qa.question;
    }
  }
  EXPECT_GT(types["existence"], 300);
  EXPECT_GT(types["relation"] + types["relation_yesno"], 40);
  EXPECT_GT(types["region"], 30);
  EXPECT_NEAR(static_cast<double>(yes) / (yes + no), 0.5, 0.06);
}
