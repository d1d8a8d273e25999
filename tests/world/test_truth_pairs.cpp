// Off-policy ground-truth pairs (the demo's plain-DPO baseline): chosen is the true answer, rejected
// differs from it by exactly one injected hallucination, never an object of the scene.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/json_io.h"
#include "test_paths.h"
#include "test_util.h"
#include "world/truth_pairs.h"

namespace p2dpo::world {
namespace {
using nlohmann::json;

std::string tiny_world(const std::string& dir) {
  std::filesystem::create_directories(dir + "/prompts");
  const json world = {{"vocabulary",
                       {{"colors", {{{"name", "red"}}, {{"name", "blue"}}}},
                        {"classes",
                         {{{"name", "red circle"}, {"shape", "circle"}, {"color", "red"}, {"partner", "red star"}},
                          {{"name", "red star"}, {"shape", "star"}, {"color", "red"}, {"partner", "red circle"}},
                          {{"name", "blue circle"}, {"shape", "circle"}, {"color", "blue"}, {"partner", "blue star"}},
                          {{"name", "blue star"}, {"shape", "star"}, {"color", "blue"}, {"partner", "blue circle"}}}}}}};
  io::write_json_atomic(dir + "/world.json", world);
  auto obj = [](const char* cls) { return json{{"class", cls}, {"name", std::string("large ") + cls}}; };
  io::write_file_atomic(dir + "/scenes.jsonl",
                        json{{"id", "s1"}, {"objects", {obj("red circle"), obj("blue star")}}}.dump() + "\n" +
                            json{{"id", "s2"}, {"objects", {obj("red circle"), obj("red star")}}}.dump() + "\n" +
                            json{{"id", "s3"}, {"objects", {obj("blue circle")}}}.dump() + "\n");
  auto row = [](const char* id, const char* scene, const char* q, const char* a) {
    return json{{"id", id}, {"scene", scene}, {"image", std::string("images/") + scene + ".png"}, {"question", q}, {"answer", a}}
               .dump() +
           "\n";
  };
  io::write_file_atomic(dir + "/prompts/pairs_truth.jsonl",
                        row("p1", "s1", "Describe the image.", "There is a large red circle and a large blue star.") +
                            row("p2", "s2", "Describe the image.", "There is a large red circle and a large red star.") +
                            row("p3", "s3", "What color is the circle?", "The circle is blue.") +
                            row("p4", "s3", "Anything?", "Nothing to name."));
  return dir;
}

TEST(WorldTruthPairs, OneInjectedHallucinationPerPair) {
  const std::string dir = tiny_world(test::scratch_dir("truth-pairs") + "/world");
  TruthPairsOptions o;
  o.world_dir = dir;
  o.out_path = dir + "/pairs.jsonl";
  const auto r = write_truth_pairs(o);
  EXPECT_EQ(r.prompts, 4);
  EXPECT_EQ(r.pairs, 3);  // p4 names neither an object nor a colour
  const auto rows = io::read_jsonl_file(o.out_path);
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& rec : rows) {
    EXPECT_NE(rec["chosen"], rec["rejected"]);
    for (const char* k : {"id", "image", "question", "chosen", "rejected", "injected"}) EXPECT_TRUE(rec.contains(k)) << k;
  }
  // s1: red circle -> its partner red star (absent), or blue star -> blue circle (absent).
  const std::set<std::string> s1 = {"There is a large red star and a large blue star.",
                                    "There is a large red circle and a large blue circle."};
  EXPECT_TRUE(s1.count(rows[0]["rejected"].get<std::string>())) << rows[0]["rejected"];
  // s2 holds both red classes: the replacement is an absent class of any colour.
  const std::string r2 = rows[1]["rejected"];
  EXPECT_TRUE(r2.find("blue") != std::string::npos) << r2;
  // Colour question: the colour word changes.
  EXPECT_EQ(rows[2]["rejected"], "The circle is red.");
  EXPECT_EQ(rows[2]["injected"], "red");

  // Deterministic, and --limit counts pairs.
  const std::string first = io::read_file(o.out_path);
  write_truth_pairs(o);
  EXPECT_EQ(io::read_file(o.out_path), first);
  o.limit = 2;
  EXPECT_EQ(write_truth_pairs(o).pairs, 2);
}

TEST(WorldTruthPairs, BadWorldFilesNameTheFile) {
  const std::string dir = tiny_world(test::scratch_dir("truth-pairs-bad") + "/world");
  io::write_file_atomic(dir + "/prompts/pairs_truth.jsonl",
                        json{{"id", "p1"}, {"scene", "nope"}, {"image", "x.png"}, {"question", "q"}, {"answer", "a"}}.dump() + "\n");
  TruthPairsOptions o;
  o.world_dir = dir;
  o.out_path = dir + "/pairs.jsonl";
  const auto err = test::error_of([&] { write_truth_pairs(o); });
  EXPECT_NE(err.find("pairs_truth.jsonl"), std::string::npos) << err;
  EXPECT_NE(err.find("scene"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(o.out_path));
}

}  // namespace
}  // namespace p2dpo::world
